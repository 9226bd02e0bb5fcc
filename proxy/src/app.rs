//! The application: one value that answers requests, built from the
//! configuration (`App::new`). It wraps every request in the same envelope
//! (request id, CORS preflight, time limit, security headers, metrics, log
//! line), authenticates the caller once, and hands the request to its
//! service's room. `server.rs` feeds it from sockets; tests call
//! `App::handle` directly, without a socket.
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode};

use serde_json::json;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{info, Instrument};

use crate::auth::AuthService;
use crate::config::Config;
use crate::error::{ApiError, Surface};
use crate::http::{error_response, json_response, query_param, read_body, Body, RequestContext, Response};
use crate::metrics::PoolState;
use crate::realtime::RealtimeService;
use crate::state::AppState;
use crate::storage::StorageService;
use crate::{auth, rest};

/// Where a request goes: decided by its path's first segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Health,
    Ready,
    Metrics,
    Rest,
    Auth,
    Realtime,
    Storage,
    /// A service prefix of ARCHITECTURE.md that this release does not serve.
    Unbuilt(&'static str),
    NotFound,
}

impl Route {
    /// The label of the route in metrics.
    fn label(self) -> &'static str {
        match self {
            Route::Health => "health",
            Route::Ready => "ready",
            Route::Metrics => "metrics",
            Route::Rest => "rest",
            Route::Auth => "auth",
            Route::Realtime => "realtime",
            Route::Storage => "storage",
            Route::Unbuilt(name) => name,
            Route::NotFound => "not_found",
        }
    }

    /// Which error shape the route's service answers in.
    fn surface(self) -> Surface {
        match self {
            Route::Rest => Surface::Rest,
            Route::Auth => Surface::Auth,
            Route::Storage => Surface::Storage,
            _ => Surface::Fluxbase,
        }
    }
}

/// The service prefixes, matched on whole path segments.
const PREFIXES: &[(&str, Route)] = &[
    ("/rest/v1", Route::Rest),
    ("/auth/v1", Route::Auth),
    ("/storage/v1", Route::Storage),
    ("/realtime/v1", Route::Realtime),
    ("/functions/v1", Route::Unbuilt("functions")),
    ("/graphql/v1", Route::Unbuilt("graphql")),
    ("/jobs/v1", Route::Unbuilt("jobs")),
    ("/ai/v1", Route::Unbuilt("ai")),
    ("/branches/v1", Route::Unbuilt("branches")),
    ("/admin/v1", Route::Unbuilt("admin")),
    ("/mcp", Route::Unbuilt("mcp")),
];

fn route_of(path: &str) -> Route {
    match path {
        "/health" => return Route::Health,
        "/ready" => return Route::Ready,
        "/metrics" => return Route::Metrics,
        _ => {}
    }
    PREFIXES
        .iter()
        .find(|(prefix, _)| path.strip_prefix(prefix).is_some_and(|rest| rest.is_empty() || rest.starts_with('/')))
        .map_or(Route::NotFound, |(_, route)| *route)
}

pub struct App {
    state: Arc<AppState>,
    auth: AuthService,
    realtime: RealtimeService,
    storage: StorageService,
}

impl App {
    /// Builds the shared state and every service. Nothing connects yet: the
    /// pool opens connections when the first request needs one, so this is
    /// also how `check-config` judges a configuration.
    pub fn new(config: Config) -> Result<App, String> {
        let auth = AuthService::new(&config)?;
        let storage = StorageService::new(&config)?;
        let state = Arc::new(AppState::new(config, auth.verifying_keys()?)?);
        Ok(App { state, auth, realtime: RealtimeService::default(), storage })
    }

    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// Answers one request from `peer`. Never fails: every error becomes the
    /// response its service's clients expect.
    pub async fn handle<B>(&self, req: Request<B>, peer: SocketAddr) -> Response
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let started = Instant::now();
        let route = route_of(req.uri().path());
        let headers = req.headers();
        let ctx = RequestContext {
            request_id: request_id(headers),
            surface: route.surface(),
            ip: client_ip(&self.state.config.server.trusted_proxies, peer.ip(), headers).to_string(),
            user_agent: headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("").to_string(),
        };
        let span = tracing::info_span!("request", request_id = %ctx.request_id, method = %req.method(), path = %req.uri().path(), peer = %peer);
        let origin = headers.get(header::ORIGIN).cloned();
        let is_preflight = req.method() == Method::OPTIONS && origin.is_some();

        let mut response = async {
            if is_preflight {
                return preflight();
            }
            // Storage moves large bodies: its own, longer limit.
            let limit_ms = match route {
                Route::Storage => self.state.config.storage.request_timeout_ms,
                _ => self.state.config.server.request_timeout_ms,
            };
            match tokio::time::timeout(Duration::from_millis(limit_ms), self.dispatch(route, req, &ctx)).await {
                Ok(Ok(response)) => response,
                Ok(Err(err)) => error_response(&err, &ctx),
                Err(_) => error_response(&ApiError::Timeout { ms: limit_ms }, &ctx),
            }
        }
        .instrument(span.clone())
        .await;

        finish_headers(&self.state.config, response.headers_mut(), &ctx.request_id, origin.as_ref());
        let status = response.status();
        let elapsed = started.elapsed();
        self.state.metrics.observe(route.label(), status.as_u16(), elapsed);
        span.in_scope(|| {
            info!(
                status = status.as_u16(),
                route = route.label(),
                latency_ms = elapsed.as_secs_f64() * 1000.0,
                "request finished"
            )
        });
        response
    }

    async fn dispatch<B>(&self, route: Route, req: Request<B>, ctx: &RequestContext) -> Result<Response, ApiError>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let state = &*self.state;
        match route {
            Route::Health => Ok(json_response(StatusCode::OK, &json!({ "status": "ok" }))),
            Route::Ready => ready(state).await,
            Route::Metrics => {
                let s = state.pool.status();
                let pool = PoolState { size: s.size, available: s.available, waiting: s.waiting, max_size: s.max_size };
                Ok(http::Response::builder()
                    .header(header::CONTENT_TYPE, "text/plain; version=0.0.4")
                    .body(Body::full(state.metrics.render(&pool)))
                    .expect("static response parts"))
            }
            Route::Rest | Route::Auth => {
                // The caller, once, for every service: credentials first,
                // so a refused caller costs no body read.
                let headers = req.headers();
                let (mut authorization, apikey) =
                    (credential(headers, "authorization")?, credential(headers, "apikey")?);
                // An OAuth client authenticates itself at the token endpoint
                // with `Basic` (client_secret_basic): that is no caller token.
                if route == Route::Auth
                    && req.uri().path() == "/auth/v1/oauth/token"
                    && authorization.is_some_and(|a| a.starts_with("Basic "))
                {
                    authorization = None;
                }
                let caller = state.verifier.authenticate(authorization, apikey).map_err(|e| match route {
                    Route::Auth => auth::gotrue_jwt_error(e),
                    _ => e,
                })?;
                tracing::debug!(role = caller.role(), "authenticated");
                let (parts, body) = req.into_parts();
                let body = read_body(&parts.headers, body, state.config.server.body_limit_bytes).await?;
                match route {
                    Route::Rest => rest::handle(&self.state, parts, body, ctx, &caller).await,
                    _ => auth::handle(state, &self.auth, parts, body, ctx, caller).await,
                }
            }
            // The S3 protocol signs its own requests (SigV4), no bearer token.
            Route::Storage if crate::storage::is_s3_path(req.uri().path()) => {
                Ok(self.storage.handle_s3(&self.state, req, ctx).await)
            }
            Route::Storage => {
                let headers = req.headers();
                let caller = state
                    .verifier
                    .authenticate(credential(headers, "authorization")?, credential(headers, "apikey")?)?;
                self.storage.handle(&self.state, req, ctx, &caller).await
            }
            Route::Realtime => {
                // A WebSocket: no body is read, and the upgrade needs the
                // request itself. Browsers cannot set headers on a
                // WebSocket, so the key comes in the query (`apikey`).
                let mut req = req;
                let in_query = query_param(req.uri().query().unwrap_or(""), "apikey");
                let headers = req.headers();
                let apikey = match in_query {
                    Some(key) => Some(key),
                    None => credential(headers, "apikey")?.map(str::to_string),
                };
                let caller = state.verifier.authenticate(credential(headers, "authorization")?, apikey.as_deref())?;
                if req.uri().path().starts_with("/realtime/v1/api/broadcast") {
                    if req.method() != Method::POST {
                        return Err(ApiError::NotFound);
                    }
                    let (parts, body) = req.into_parts();
                    let body = read_body(&parts.headers, body, state.config.server.body_limit_bytes).await?;
                    return self.realtime.http_broadcast(state, &caller, &parts, &body).await;
                }
                self.realtime.handle(&self.state, &mut req, caller, apikey, &ctx.ip)
            }
            Route::Unbuilt(name) => Err(ApiError::NotImplemented(name)),
            Route::NotFound => Err(ApiError::NotFound),
        }
    }
}

/// A credential header as text. One that is present but not text is
/// refused (401), never taken as absent: absent means the anon role.
fn credential<'h>(headers: &'h HeaderMap, name: &str) -> Result<Option<&'h str>, ApiError> {
    match headers.get(name).map(HeaderValue::to_str) {
        None => Ok(None),
        Some(Ok(text)) => Ok(Some(text)),
        Some(Err(_)) if name == "apikey" => Err(ApiError::InvalidApiKey),
        Some(Err(_)) => {
            Err(ApiError::Jwt { code: "PGRST301", message: format!("The {name} header is not valid text") })
        }
    }
}

/// The client's address: the TCP peer, unless the peer is a trusted proxy;
/// then the rightmost `X-Forwarded-For` entry that is not a trusted proxy
/// (entries to its left could have been written by the client).
fn client_ip(trusted: &[IpAddr], peer: IpAddr, headers: &HeaderMap) -> IpAddr {
    if !trusted.contains(&peer) {
        return peer;
    }
    let forwarded =
        headers.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok()).collect::<Vec<_>>().join(",");
    forwarded
        .split(',')
        .rev()
        .filter_map(|entry| entry.trim().parse::<IpAddr>().ok())
        .find(|ip| !trusted.contains(ip))
        .unwrap_or(peer)
}

fn request_id(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        // From the thread's generator: `new_v4` asks the kernel (a getrandom
        // syscall per request), and a request id needs no secrecy.
        .unwrap_or_else(|| uuid::Builder::from_random_bytes(rand::random()).into_uuid().to_string())
}

async fn ready(state: &AppState) -> Result<Response, ApiError> {
    let client = state.client().await?;
    let row = client
        .query_one("SELECT fluxbase.version()", &[])
        .await
        .map_err(|e| ApiError::DatabaseUnavailable(format!("extension check: {e}")))?;
    let version: String = row.get(0);
    let ours = env!("CARGO_PKG_VERSION");
    if version != ours {
        return Ok(json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({ "status": "version_mismatch", "proxy": ours, "extension": version }),
        ));
    }
    Ok(json_response(StatusCode::OK, &json!({ "status": "ready", "version": ours })))
}

const CORS_ALLOW_HEADERS: &str =
    "authorization, x-client-info, apikey, content-type, accept, accept-profile, content-profile, prefer, range, \
     range-unit, x-upsert, x-request-id, if-match, if-none-match, idempotency-key, cache-control, x-supabase-api-version";

fn preflight() -> Response {
    http::Response::builder()
        .status(StatusCode::NO_CONTENT)
        .header("access-control-allow-methods", "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS")
        .header("access-control-allow-headers", CORS_ALLOW_HEADERS)
        .header("access-control-max-age", "86400")
        .body(Body::empty())
        .expect("static response parts")
}

fn finish_headers(config: &Config, headers: &mut HeaderMap, request_id: &str, origin: Option<&HeaderValue>) {
    if let Ok(v) = HeaderValue::from_str(request_id) {
        headers.insert(HeaderName::from_static("x-request-id"), v);
    }
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if config.server.behind_tls {
        headers
            .insert(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static("max-age=63072000; includeSubDomains"));
    }
    let allowed = &config.server.cors_allowed_origins;
    if allowed.iter().any(|o| o == "*") {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    } else if let Some(origin) = origin.filter(|o| allowed.iter().any(|a| a.as_bytes() == o.as_bytes())) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
    // A service that exposes its own headers (storage's TUS) keeps its list.
    headers.entry(header::ACCESS_CONTROL_EXPOSE_HEADERS).or_insert(
        HeaderValue::from_static("content-range, content-location, location, x-request-id, preference-applied, etag, warning, idempotent-replayed, link, fluxbase-next-cursor"),
    );
}

#[cfg(test)]
mod tests;
