//! `/rest/v1`: authenticate, hand the request to `fluxbase.rest()` in one
//! round trip, write back the status, headers and body Postgres built.
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::StatusCode;
use http_body_util::Full;
use serde::ser::SerializeMap;
use serde::Serialize;
use serde_json::Value;
use tokio_postgres::types::Type;

use crate::db;
use crate::error::ApiError;
use crate::http::{RequestContext, Response};
use crate::jwt::Caller;
use crate::state::AppState;

/// `status \n headers \n body` in one text value: the cheapest shape to return.
const REST_SQL: &str = "SELECT fluxbase.rest_raw($1, $2)";

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
    state: &AppState,
    parts: http::request::Parts,
    body: Bytes,
    ctx: &RequestContext,
    caller: &Caller,
) -> Result<Response, ApiError> {
    let relation = parts.uri.path().strip_prefix("/rest/v1").unwrap_or("").trim_start_matches('/');
    let body = if body.is_empty() {
        None
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
    })
    .map_err(|e| ApiError::Internal(format!("encoding the request: {e}")))?;
    let claims = caller.claims.to_string();

    // One retry, on a fresh connection, when the connection itself failed
    // (for example after a Postgres restart); never when the statement did,
    // and only for reads: a write may have committed before the loss.
    let retryable = matches!(parts.method, http::Method::GET | http::Method::HEAD);
    let mut attempt = 0;
    let row = loop {
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
            Ok(row) => break row,
            Err(e) if retryable && attempt == 1 && db::is_connection_failure(&e) => {
                tracing::warn!(error = %e, "database connection lost; retrying once");
                drop(deadpool_postgres::Object::take(client));
            }
            Err(e) => return Err(db::query_error(e, !caller.anonymous)),
        }
    };

    let raw: String = row.get(0);
    let malformed = || ApiError::Internal("malformed response from fluxbase.rest_raw()".into());
    let (status, rest) = raw.split_once('\n').ok_or_else(malformed)?;
    let (headers, body) = rest.split_once('\n').ok_or_else(malformed)?;
    let status = status.parse::<u16>().ok().and_then(|s| StatusCode::from_u16(s).ok()).ok_or_else(malformed)?;
    let headers: Result<Value, _> = serde_json::from_str(headers);
    let body_start = raw.len() - body.len();
    // The body is handed to hyper without a copy.
    let body = Bytes::from(raw).slice(body_start..);
    let mut response = http::Response::builder()
        .status(status)
        .body(Full::new(body))
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    if let Ok(Value::Object(map)) = headers {
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
