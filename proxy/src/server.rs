//! The HTTP server: accept loop, graceful shutdown, and the per-request
//! envelope (request id, limits, CORS, security headers, metrics, logs).
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use serde_json::json;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};

use crate::config::Config;
use crate::error::{ApiError, Surface};
use crate::jwt::Verifier;
use crate::metrics::{Metrics, PoolState};
use crate::{auth, db, rest};

pub type Response = http::Response<Full<Bytes>>;

pub struct AppState {
    pub config: Config,
    pub pool: deadpool_postgres::Pool,
    pub verifier: Verifier,
    pub metrics: Metrics,
    pub hasher: crate::password::Hasher,
    /// ES256 keys that sign `/auth/v1` sessions, when configured.
    pub signing: Option<crate::signing::SigningKeys>,
    /// SMTP for `/auth/v1` e-mail, when configured.
    pub mailer: Option<crate::mailer::Mailer>,
    /// SAML identity providers, when configured.
    pub saml: Option<crate::saml::Saml>,
    /// Leaked-password check, when configured.
    pub breach: Option<crate::breach::BreachCheck>,
    /// SMS for phone sign-in, when configured.
    pub sms: Option<crate::sms::Sms>,
    /// OAuth/OIDC providers of `/auth/v1/authorize`.
    pub providers: crate::oauth::Providers,
    /// `auth.mfa_encryption_key`, parsed once.
    pub mfa_key: Option<[u8; 32]>,
    /// Connections opened before this instant predate a `reload config`.
    config_epoch: std::sync::RwLock<Option<std::time::Instant>>,
}

impl AppState {
    pub fn new(config: Config) -> Result<AppState, String> {
        let pool = db::pool(&config.database)?;
        let signing = config
            .jwt
            .signing_jwks_file
            .as_deref()
            .map(crate::signing::SigningKeys::load)
            .transpose()
            .map_err(|e| format!("jwt.signing_jwks_file: {e}"))?;
        let verifier = Verifier::new(&config.jwt, &config.api_keys, signing.as_ref())?;
        let hasher = crate::password::Hasher::new(&config.auth)?;
        let mailer = crate::mailer::Mailer::new(&config.auth)?;
        let mfa_key = config
            .auth
            .mfa_encryption_key
            .as_deref()
            .map(crate::totp::parse_key)
            .transpose()
            .map_err(|e| format!("auth.mfa_encryption_key: {e}"))?;
        let providers = crate::oauth::Providers::new(&config.auth, &config.public_url())?;
        let sms = crate::sms::Sms::new(&config.auth)?;
        let breach = crate::breach::BreachCheck::new(&config.auth)?;
        let saml = crate::saml::Saml::new(&config.auth, &config.public_url())?;
        Ok(AppState {
            saml,
            breach,
            sms,
            providers,
            mailer,
            mfa_key,
            config,
            pool,
            verifier,
            metrics: Metrics::default(),
            hasher,
            signing,
            config_epoch: Default::default(),
        })
    }

    /// A pooled connection opened since the last `reload config`: older
    /// ones still run with the settings their session started with.
    pub async fn client(&self) -> Result<deadpool_postgres::Object, ApiError> {
        let epoch = *self.config_epoch.read().unwrap_or_else(|e| e.into_inner());
        loop {
            let client = self.pool.get().await.map_err(db::pool_error)?;
            match epoch {
                Some(at) if deadpool_postgres::Object::metrics(&client).created < at => {
                    drop(deadpool_postgres::Object::take(client));
                }
                _ => return Ok(client),
            }
        }
    }

    /// Retire every connection: idle ones now, busy ones when next taken.
    pub fn reload_config(&self) {
        let now = std::time::Instant::now();
        *self.config_epoch.write().unwrap_or_else(|e| e.into_inner()) = Some(now);
        self.pool.retain(|_, metrics| metrics.created >= now);
    }
}

/// What one request carries through the handlers.
pub struct Ctx {
    pub request_id: String,
    pub surface: Surface,
    /// The client's address (the peer of the TCP connection).
    pub ip: String,
}

/// The service prefixes of ARCHITECTURE.md, with the route label used in
/// metrics and whether this release serves them.
const ROUTES: &[(&str, &str, Surface)] = &[
    ("/rest/v1", "rest", Surface::Rest),
    ("/auth/v1", "auth", Surface::Auth),
    ("/storage/v1", "storage", Surface::Fluxbase),
    ("/realtime/v1", "realtime", Surface::Fluxbase),
    ("/functions/v1", "functions", Surface::Fluxbase),
    ("/graphql/v1", "graphql", Surface::Fluxbase),
    ("/jobs/v1", "jobs", Surface::Fluxbase),
    ("/ai/v1", "ai", Surface::Fluxbase),
    ("/branches/v1", "branches", Surface::Fluxbase),
    ("/admin/v1", "admin", Surface::Fluxbase),
    ("/mcp", "mcp", Surface::Fluxbase),
];

fn route_of(path: &str) -> (&'static str, Surface) {
    match path {
        "/health" => return ("health", Surface::Fluxbase),
        "/ready" => return ("ready", Surface::Fluxbase),
        "/metrics" => return ("metrics", Surface::Fluxbase),
        _ => {}
    }
    for (prefix, name, surface) in ROUTES {
        if path == *prefix || path.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('/')) {
            return (name, *surface);
        }
    }
    ("not_found", Surface::Fluxbase)
}

pub async fn serve(state: Arc<AppState>, listener: TcpListener, shutdown: CancellationToken) {
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .max_buf_size(state.config.server.header_limit_bytes)
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30));
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let state = state.clone();
                let service = service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(handle(state, req, peer).await) }
                });
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection closed with error");
                    }
                });
            }
            _ = shutdown.cancelled() => break,
        }
    }
    drop(listener);
    let grace = Duration::from_millis(state.config.server.shutdown_grace_ms);
    info!(grace_ms = grace.as_millis() as u64, "shutting down: draining in-flight requests");
    tokio::select! {
        _ = graceful.shutdown() => info!("all connections drained"),
        _ = tokio::time::sleep(grace) => warn!("grace period over; closing remaining connections"),
    }
}

/// The client's address: the TCP peer, unless the peer is a trusted proxy;
/// then the rightmost `X-Forwarded-For` entry that is not a trusted proxy
/// (entries to its left could have been written by the client).
fn client_ip(trusted: &[std::net::IpAddr], peer: std::net::IpAddr, headers: &HeaderMap) -> std::net::IpAddr {
    if !trusted.contains(&peer) {
        return peer;
    }
    let forwarded =
        headers.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok()).collect::<Vec<_>>().join(",");
    forwarded
        .split(',')
        .rev()
        .filter_map(|entry| entry.trim().parse::<std::net::IpAddr>().ok())
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

async fn handle(state: Arc<AppState>, req: Request<Incoming>, peer: SocketAddr) -> Response {
    let started = Instant::now();
    let (route, surface) = route_of(req.uri().path());
    let ip = client_ip(&state.config.server.trusted_proxies, peer.ip(), req.headers()).to_string();
    let ctx = Ctx { request_id: request_id(req.headers()), surface, ip };
    let span = tracing::info_span!("request", request_id = %ctx.request_id, method = %req.method(), path = %req.uri().path(), peer = %peer);
    let origin = req.headers().get(header::ORIGIN).cloned();
    let is_preflight = req.method() == Method::OPTIONS && origin.is_some();

    let mut response = async {
        if is_preflight {
            return preflight();
        }
        let timeout = Duration::from_millis(state.config.server.request_timeout_ms);
        match tokio::time::timeout(timeout, dispatch(&state, route, req, &ctx)).await {
            Ok(Ok(response)) => response,
            Ok(Err(err)) => error_response(&err, &ctx),
            Err(_) => error_response(&ApiError::Timeout { ms: state.config.server.request_timeout_ms }, &ctx),
        }
    }
    .instrument(span.clone())
    .await;

    finish_headers(&state.config, response.headers_mut(), &ctx.request_id, origin.as_ref());
    let status = response.status();
    let elapsed = started.elapsed();
    state.metrics.observe(route, status.as_u16(), elapsed);
    span.in_scope(|| {
        info!(status = status.as_u16(), route, latency_ms = elapsed.as_secs_f64() * 1000.0, "request finished")
    });
    response
}

async fn dispatch(
    state: &AppState,
    route: &'static str,
    req: Request<Incoming>,
    ctx: &Ctx,
) -> Result<Response, ApiError> {
    match route {
        "health" => Ok(json_response(StatusCode::OK, &json!({ "status": "ok" }))),
        "ready" => ready(state).await,
        "metrics" => {
            let s = state.pool.status();
            let pool = PoolState { size: s.size, available: s.available, waiting: s.waiting, max_size: s.max_size };
            Ok(http::Response::builder()
                .header(header::CONTENT_TYPE, "text/plain; version=0.0.4")
                .body(Full::new(Bytes::from(state.metrics.render(&pool))))
                .expect("static response parts"))
        }
        "rest" => {
            let (parts, body) = req.into_parts();
            let body = read_body(state, &parts.headers, body).await?;
            rest::handle(state, parts, body, ctx).await
        }
        "auth" => {
            let (parts, body) = req.into_parts();
            let body = read_body(state, &parts.headers, body).await?;
            auth::handle(state, parts, body, ctx).await
        }
        "not_found" => Err(ApiError::NotFound),
        other => Err(ApiError::NotImplemented(other)),
    }
}

/// Reads the whole body within `server.body_limit_bytes`; a declared length
/// over the limit is refused before a byte is read.
async fn read_body(state: &AppState, headers: &HeaderMap, body: Incoming) -> Result<Bytes, ApiError> {
    let limit = state.config.server.body_limit_bytes;
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::BodyTooLarge { limit });
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            Err(ApiError::BodyTooLarge { limit })
        }
        Err(e) => Err(ApiError::Internal(format!("reading request body: {e}"))),
    }
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
        .body(Full::new(Bytes::new()))
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
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("content-range, content-location, location, x-request-id, preference-applied, etag, warning, idempotent-replayed, link, fluxbase-next-cursor"),
    );
}

pub fn json_response(status: StatusCode, body: &serde_json::Value) -> Response {
    http::Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json; charset=utf-8")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("static response parts")
}

pub fn error_response(err: &ApiError, ctx: &Ctx) -> Response {
    let status = err.status();
    if status.is_server_error() && status != StatusCode::NOT_IMPLEMENTED {
        tracing::error!(error = %err, code = err.code(), "request failed");
    } else {
        tracing::info!(error = %err, code = err.code(), "request refused");
    }
    let mut response = json_response(status, &err.body(ctx.surface, &ctx.request_id));
    if let Some(v) = err.www_authenticate() {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    if let Some(v) = err.retry_after() {
        response.headers_mut().insert(header::RETRY_AFTER, v);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_match_whole_segments() {
        assert_eq!(route_of("/rest/v1/todos").0, "rest");
        assert_eq!(route_of("/rest/v1").0, "rest");
        assert_eq!(route_of("/rest/v10").0, "not_found");
        assert_eq!(route_of("/auth/v1/token").0, "auth");
        assert_eq!(route_of("/nope").0, "not_found");
        assert_eq!(route_of("/health").0, "health");
    }

    #[test]
    fn forwarded_addresses_are_believed_only_from_trusted_proxies() {
        let lb: std::net::IpAddr = "10.0.0.2".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("6.6.6.6, 203.0.113.7, 10.0.0.3"));
        let trusted = ["10.0.0.2".parse().unwrap(), "10.0.0.3".parse().unwrap()];
        assert_eq!(client_ip(&trusted, lb, &h).to_string(), "203.0.113.7");
        assert_eq!(client_ip(&[], lb, &h), lb, "untrusted peer: the header is ignored");
        assert_eq!(client_ip(&trusted, lb, &HeaderMap::new()), lb);
    }

    #[test]
    fn request_ids_are_taken_only_when_sane() {
        let mut h = HeaderMap::new();
        h.insert("x-request-id", HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&h), "abc-123");
        h.insert("x-request-id", HeaderValue::from_static("has space"));
        assert_ne!(request_id(&h), "has space");
    }
}
