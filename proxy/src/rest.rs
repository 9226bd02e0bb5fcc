//! `/rest/v1`: authenticate, hand the request to `fluxbase.rest()` in one
//! round trip, write back the status, headers and body Postgres built.
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, AUTHORIZATION};
use http::StatusCode;
use http_body_util::Full;
use serde_json::{json, Map, Value};
use tokio_postgres::types::Type;

use crate::db;
use crate::error::ApiError;
use crate::server::{AppState, Ctx, Response};

const REST_SQL: &str = "SELECT status, headers::text, body FROM fluxbase.rest($1::json, $2::json)";

/// Headers never copied into `request.headers`: credentials stay out of
/// settings that policies, functions and logs can read.
const PRIVATE_HEADERS: [&str; 3] = ["authorization", "apikey", "cookie"];

pub async fn handle(
    state: &AppState,
    parts: http::request::Parts,
    body: Bytes,
    ctx: &Ctx,
) -> Result<Response, ApiError> {
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let auth = state.verifier.authenticate(header(AUTHORIZATION.as_str()), header("apikey"))?;
    tracing::debug!(role = auth.role(), "authenticated");

    let relation = parts.uri.path().strip_prefix("/rest/v1").unwrap_or("").trim_start_matches('/');
    let mut headers = Map::new();
    for (name, value) in &parts.headers {
        if PRIVATE_HEADERS.contains(&name.as_str()) {
            continue;
        }
        if let Ok(v) = value.to_str() {
            headers.insert(name.as_str().to_string(), Value::String(v.to_string()));
        }
    }
    let body = if body.is_empty() {
        Value::Null
    } else {
        match std::str::from_utf8(&body) {
            Ok(text) => Value::String(text.to_string()),
            Err(_) => {
                return Err(ApiError::Database {
                    status: StatusCode::BAD_REQUEST,
                    code: "PGRST102".into(),
                    message: "Request body is not valid UTF-8".into(),
                    details: None,
                    hint: None,
                })
            }
        }
    };
    let request = json!({
        "method": parts.method.as_str(),
        "path": relation,
        "query": parts.uri.query().unwrap_or(""),
        "headers": headers,
        "body": body,
        "request_id": ctx.request_id,
    });
    let request = request.to_string();
    let claims = auth.claims.to_string();

    // One retry, on a fresh connection, when the connection itself failed
    // (for example after a Postgres restart); never when the statement did,
    // and only for reads: a write may have committed before the loss.
    let retryable = matches!(parts.method, http::Method::GET | http::Method::HEAD);
    let mut attempt = 0;
    let row = loop {
        attempt += 1;
        let client = state.pool.get().await.map_err(db::pool_error)?;
        let stmt = client.prepare_typed_cached(REST_SQL, &[Type::TEXT, Type::TEXT]).await;
        let result = match stmt {
            Ok(stmt) => client.query_one(&stmt, &[&request, &claims]).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(row) => break row,
            Err(e) if retryable && attempt == 1 && db::is_connection_failure(&e) => {
                tracing::warn!(error = %e, "database connection lost; retrying once");
                drop(deadpool_postgres::Object::take(client));
            }
            Err(e) => return Err(db::query_error(e, !auth.anonymous)),
        }
    };

    let status: i32 = row.get(0);
    let headers: String = row.get(1);
    let body: String = row.get(2);
    let mut response = http::Response::builder()
        .status(StatusCode::from_u16(status as u16).map_err(|_| ApiError::Internal(format!("bad status {status}")))?)
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(&headers) {
        for (name, value) in map {
            if let (Ok(n), Some(Ok(v))) =
                (HeaderName::from_bytes(name.as_bytes()), value.as_str().map(HeaderValue::from_str))
            {
                response.headers_mut().insert(n, v);
            }
        }
    }
    Ok(response)
}
