//! `/rest/v1`: authenticate, hand the request to `fluxbase.rest()` in one
//! round trip, write back the status, headers and body Postgres built.
use bytes::Bytes;
use futures_util::StreamExt;
use http::header::{HeaderName, HeaderValue};
use http::StatusCode;
use serde::ser::SerializeMap;
use serde::Serialize;
use serde_json::Value;
use std::sync::Arc;
use tokio_postgres::types::Type;

use crate::db;
use crate::error::ApiError;
use crate::http::{Body, BodyError, RequestContext, Response};
use crate::jwt::Caller;
use crate::state::AppState;

/// `status \n headers \n body` in one text value: the cheapest shape to return.
const REST_SQL: &str = "SELECT fluxbase.rest_raw($1, $2)";

/// A body `rest_raw` left behind, a chunk per row (in the select list, so
/// rows are sent as they are made).
const BODY_SQL: &str = "SELECT fluxbase.rest_body()";

/// Headers never copied into `request.headers`: credentials stay out of
/// settings that policies, functions and logs can read.
const PRIVATE_HEADERS: [&str; 3] = ["authorization", "apikey", "cookie"];

/// The request as `fluxbase.rest_raw()` reads it.
#[derive(Serialize)]
struct EngineRequest<'a> {
    method: &'a str,
    path: &'a str,
    query: &'a str,
    headers: PublicHeaders<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<&'a str>,
    request_id: &'a str,
    /// Who an `Idempotency-Key` belongs to (`idempotency_scope`); only sent
    /// with that header.
    #[serde(skip_serializing_if = "Option::is_none")]
    idempotency_scope: Option<String>,
}

/// A fingerprint of the caller an `Idempotency-Key` is scoped to, so a
/// stored response is never replayed to someone else: for the anonymous
/// role, whose key every client holds, the API key and the client address;
/// for a user, role, `sub` and `session_id`; for a token without `sub`, the
/// credential itself. SHA-256, hex. Nothing is computed without the header.
fn idempotency_scope(headers: &http::HeaderMap, ctx: &RequestContext, caller: &Caller) -> Option<String> {
    use sha2::{Digest, Sha256};
    headers.get("idempotency-key")?;
    let header = |name: &str| headers.get(name).map(|v| v.as_bytes()).unwrap_or_default();
    let claim = |name: &str| caller.claims.get(name).and_then(Value::as_str);
    let credential = if headers.contains_key("apikey") { header("apikey") } else { header("authorization") };
    let mut hash = Sha256::new();
    let mut part = |bytes: &[u8]| {
        hash.update(bytes);
        hash.update([0]);
    };
    match (caller.anonymous, claim("sub")) {
        (true, _) => {
            part(b"anon");
            part(credential);
            part(ctx.ip.as_bytes());
        }
        (false, Some(sub)) => {
            part(b"user");
            part(caller.role().as_bytes());
            part(sub.as_bytes());
            part(claim("session_id").unwrap_or("").as_bytes());
        }
        (false, None) => {
            part(b"token");
            part(header("authorization"));
            part(header("apikey"));
        }
    }
    Some(hash.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// `\\x0aff…`: bytea's text input form of `bytes`.
fn bytea_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(2 + bytes.len() * 2);
    out.push_str("\\x");
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 15) as usize] as char);
    }
    out
}

/// The request headers as a JSON object (lower-case names), without the
/// private ones and without values that are not text.
struct PublicHeaders<'a>(&'a http::HeaderMap);

impl Serialize for PublicHeaders<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        for name in self.0.keys() {
            if PRIVATE_HEADERS.contains(&name.as_str()) {
                continue;
            }
            // A repeated header: its first value.
            if let Some(Ok(value)) = self.0.get(name).map(|v| v.to_str()) {
                map.serialize_entry(name.as_str(), value)?;
            }
        }
        map.end()
    }
}

/// Serves one `/rest/v1` request as `caller`, verified by the dispatcher.
pub async fn handle(
    state: &Arc<AppState>,
    parts: http::request::Parts,
    body: Bytes,
    ctx: &RequestContext,
    caller: &Caller,
) -> Result<Response, ApiError> {
    let relation = parts.uri.path().strip_prefix("/rest/v1").unwrap_or("").trim_start_matches('/');
    let octets =
        parts.headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|ct| {
            ct.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case("application/octet-stream")
        });
    // A binary body (a function's one unnamed bytea argument) travels in
    // bytea's hex text form.
    let hex;
    let body = if body.is_empty() {
        None
    } else if octets {
        hex = bytea_hex(&body);
        Some(hex.as_str())
    } else {
        match std::str::from_utf8(&body) {
            Ok(text) => Some(text),
            Err(_) => {
                return Err(ApiError::Request {
                    status: StatusCode::BAD_REQUEST,
                    code: "PGRST102",
                    message: "Request body is not valid UTF-8".into(),
                })
            }
        }
    };
    // Serialised straight from the borrowed parts: no JSON tree in between.
    let request = serde_json::to_string(&EngineRequest {
        method: parts.method.as_str(),
        path: relation,
        query: parts.uri.query().unwrap_or(""),
        headers: PublicHeaders(&parts.headers),
        body,
        request_id: &ctx.request_id,
        idempotency_scope: idempotency_scope(&parts.headers, ctx, caller),
    })
    .map_err(|e| ApiError::Internal(format!("encoding the request: {e}")))?;
    let claims = caller.claims.to_string();

    // One retry, on a fresh connection, when the connection itself failed
    // (for example after a Postgres restart); never when the statement did,
    // and only for reads: a write may have committed before the loss.
    let retryable = matches!(parts.method, http::Method::GET | http::Method::HEAD);
    let mut attempt = 0;
    let (row, client) = loop {
        attempt += 1;
        let running = db::InFlight::new(state.client().await?, &state.metrics);
        let client = running.client();
        let stmt = client.prepare_typed_cached(REST_SQL, &[Type::TEXT, Type::TEXT]).await;
        let result = match stmt {
            Ok(stmt) => client.query_one(&stmt, &[&request, &claims]).await,
            Err(e) => Err(e),
        };
        let client = running.finish();
        match result {
            Ok(row) => break (row, client),
            Err(e) if retryable && attempt == 1 && db::is_connection_failure(&e) => {
                tracing::warn!(error = %e, "database connection lost; retrying once");
                drop(deadpool_postgres::Object::take(client));
            }
            Err(e) => return Err(db::query_error(e, !caller.anonymous)),
        }
    };

    let raw: String = row.get(0);
    let malformed = || ApiError::Internal("malformed response from fluxbase.rest_raw()".into());
    let (status_line, rest) = raw.split_once('\n').ok_or_else(malformed)?;
    let (headers, body) = rest.split_once('\n').ok_or_else(malformed)?;
    // `status` alone, or `status length` when the body waits in the backend.
    let (status, streamed) = match status_line.split_once(' ') {
        Some((status, length)) => (status, Some(length.parse::<u64>().map_err(|_| malformed())?)),
        None => (status_line, None),
    };
    let status = status.parse::<u16>().ok().and_then(|s| StatusCode::from_u16(s).ok()).ok_or_else(malformed)?;
    let headers: Result<Value, _> = serde_json::from_str(headers);
    let body = match streamed {
        Some(length) => stream_body(state.clone(), client, length),
        None => {
            drop(client);
            // The body is handed to hyper without a copy.
            let body_start = raw.len() - body.len();
            Body::full(Bytes::from(raw).slice(body_start..))
        }
    };
    let mut response =
        http::Response::builder().status(status).body(body).map_err(|e| ApiError::Internal(e.to_string()))?;
    if let Ok(Value::Object(map)) = headers {
        for (name, value) in map {
            let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else { continue };
            // An array is a header sent once per value (`Set-Cookie` from
            // `response.headers`).
            let values = match &value {
                Value::Array(values) => values.iter().filter_map(Value::as_str).collect(),
                other => other.as_str().into_iter().collect::<Vec<_>>(),
            };
            for v in values.into_iter().filter_map(|v| HeaderValue::from_str(v).ok()) {
                response.headers_mut().append(name.clone(), v);
            }
        }
    }
    Ok(response)
}

/// Chunks of a streamed body in flight between Postgres and the client.
const CHUNKS_IN_FLIGHT: usize = 2;

/// Streams the body `fluxbase.rest_raw()` left in the backend of `client`:
/// `SELECT fluxbase.rest_body()` yields it 256 KiB a row, and each row goes
/// to the client as it arrives, so the proxy holds a few chunks, not the
/// body. The connection is busy until the client has taken the last chunk;
/// a client that goes away cancels the statement and closes the connection
/// (`db::InFlight`), and hyper cuts a body that ends short.
fn stream_body(state: Arc<AppState>, client: deadpool_postgres::Object, length: u64) -> Body {
    let (sender, chunks) = tokio::sync::mpsc::channel(CHUNKS_IN_FLIGHT);
    tokio::spawn(async move {
        let running = db::InFlight::new(client, &state.metrics);
        let rows = match running.client().prepare_cached(BODY_SQL).await {
            Ok(stmt) => running.client().query_raw(&stmt, std::iter::empty::<&str>()).await,
            Err(e) => Err(e),
        };
        let mut rows = match rows {
            Ok(rows) => std::pin::pin!(rows),
            Err(e) => {
                tracing::error!(error = %e, "reading a streamed body failed");
                let _ = sender.send(Err(e.into())).await;
                return;
            }
        };
        while let Some(row) = rows.next().await {
            let chunk = row.and_then(|row| row.try_get::<_, &[u8]>(0).map(Bytes::copy_from_slice));
            let failed = chunk.is_err();
            if let Err(e) = &chunk {
                tracing::error!(error = %e, "reading a streamed body failed");
            }
            if sender.send(chunk.map_err(BodyError::from)).await.is_err() || failed {
                return; // the client is gone, or the body is cut: `running` cancels
            }
        }
        drop(running.finish()); // back to the pool
    });
    Body::Stream { chunks, remaining: length }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Surface;
    use std::sync::Arc;

    fn ctx(ip: &str) -> RequestContext {
        RequestContext { request_id: "r".into(), surface: Surface::Rest, ip: ip.into(), user_agent: String::new() }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> http::HeaderMap {
        pairs.iter().map(|(n, v)| (HeaderName::from_static(n), HeaderValue::from_str(v).unwrap())).collect()
    }

    #[test]
    fn a_binary_body_travels_as_bytea_hex() {
        assert_eq!(bytea_hex(&[0, 0xff, 0x10]), "\\x00ff10");
    }

    /// Hardening: every anonymous client shared one Idempotency-Key scope.
    #[test]
    fn an_idempotency_key_is_scoped_to_the_caller() {
        let anon = Caller { claims: Arc::new(serde_json::json!({"role": "anon"})), anonymous: true };
        let keyed = headers(&[("apikey", "anon-key"), ("idempotency-key", "k")]);
        let a = idempotency_scope(&keyed, &ctx("203.0.113.1"), &anon).unwrap();
        assert_eq!(a.len(), 64);
        assert_eq!(Some(&a), idempotency_scope(&keyed, &ctx("203.0.113.1"), &anon).as_ref());
        assert_ne!(Some(&a), idempotency_scope(&keyed, &ctx("203.0.113.2"), &anon).as_ref());
        let other_key = headers(&[("apikey", "publishable-key"), ("idempotency-key", "k")]);
        assert_ne!(Some(&a), idempotency_scope(&other_key, &ctx("203.0.113.1"), &anon).as_ref());
        // Users: per sub and session, wherever they connect from.
        let user = |sub: &str, session: &str| Caller {
            claims: Arc::new(serde_json::json!({"role": "authenticated", "sub": sub, "session_id": session})),
            anonymous: false,
        };
        let ada = idempotency_scope(&keyed, &ctx("203.0.113.1"), &user("ada", "s1"));
        assert_eq!(ada, idempotency_scope(&keyed, &ctx("198.51.100.7"), &user("ada", "s1")));
        assert_ne!(ada, idempotency_scope(&keyed, &ctx("203.0.113.1"), &user("grace", "s1")));
        assert_ne!(ada, idempotency_scope(&keyed, &ctx("203.0.113.1"), &user("ada", "s2")));
        // Nothing is computed for a request without the header.
        assert_eq!(idempotency_scope(&headers(&[("apikey", "anon-key")]), &ctx("203.0.113.1"), &anon), None);
    }
}
