//! Request plumbing every service shares: the context of one request, the
//! response type and its builders, reading a body within the limit, and the
//! one percent-decoder and form-encoder of the proxy.
use bytes::Bytes;
use http::header::{self, HeaderMap};
use http::StatusCode;
use http_body_util::{BodyExt, Limited};
use hyper::body::{Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::error::{ApiError, Surface};

pub type Response = http::Response<Body>;

/// What went wrong while a streamed body was being produced; hyper then
/// cuts the connection, so the client sees a short body, never a wrong one.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// A response body: whole, or streamed in chunks from a producer task with
/// its length known up front (so `Content-Length` is still sent).
pub enum Body {
    Full(Option<Bytes>),
    Stream { chunks: tokio::sync::mpsc::Receiver<Result<Bytes, BodyError>>, remaining: u64 },
}

impl Body {
    pub fn full(bytes: impl Into<Bytes>) -> Body {
        let bytes = bytes.into();
        Body::Full((!bytes.is_empty()).then_some(bytes))
    }

    pub fn empty() -> Body {
        Body::Full(None)
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            Body::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Body::Stream { chunks, remaining } => match chunks.poll_recv(cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    *remaining = remaining.saturating_sub(chunk.len() as u64);
                    Poll::Ready(Some(Ok(Frame::data(chunk))))
                }
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
                Poll::Ready(None) if *remaining > 0 => {
                    Poll::Ready(Some(Err(format!("the body ended {remaining} bytes short").into())))
                }
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Body::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Body::Stream { remaining, .. } => SizeHint::with_exact(*remaining),
        }
    }
}

/// What one request carries through the handlers besides its parts.
pub struct RequestContext {
    pub request_id: String,
    /// Which error shape the service answers in.
    pub surface: Surface,
    /// The client's address (the TCP peer, or the trusted proxies' `X-Forwarded-For`).
    pub ip: String,
    /// `User-Agent`, empty when absent or not text.
    pub user_agent: String,
}

pub fn json_response(status: StatusCode, body: &serde_json::Value) -> Response {
    http::Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json; charset=utf-8")
        .body(Body::full(body.to_string()))
        .expect("static response parts")
}

/// A response with a status and no body (204, or a redirect with `location`).
pub fn empty_response(status: StatusCode, location: Option<&str>) -> Response {
    let mut builder = http::Response::builder().status(status);
    if let Some(location) = location {
        builder = builder.header(header::LOCATION, location);
    }
    builder
        .body(Body::empty())
        .unwrap_or_else(|_| json_response(StatusCode::BAD_REQUEST, &serde_json::json!({ "error": "bad redirect" })))
}

/// The error as the request's service renders it, logged with its internals.
pub fn error_response(err: &ApiError, ctx: &RequestContext) -> Response {
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

/// Reads the whole body within `limit` bytes; a declared length over the
/// limit is refused before a byte is read.
pub async fn read_body<B>(headers: &HeaderMap, body: B, limit: usize) -> Result<Bytes, ApiError>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
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
        Err(e) => Err(ApiError::Request {
            status: StatusCode::BAD_REQUEST,
            code: "FB004",
            message: format!("reading the request body failed: {e}"),
        }),
    }
}

/// `%xx` and `+` decoding of one query parameter value (malformed escapes stay as they are).
pub fn percent_decode(s: &str) -> String {
    decode(s, true)
}

/// `%xx` decoding of a URL path: `/a%20b/c+d` → `/a b/c+d` (`+` stays a plus).
pub fn path_decode(s: &str) -> String {
    decode(s, false)
}

fn decode(s: &str, plus_is_space: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b'+', _) if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The `k=v` pairs of a query string or form body, decoded.
pub fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// `?a=b` form-encoding of a value.
pub fn form_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The decoded value of parameter `name` in a query string.
pub fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').filter_map(|p| p.split_once('=')).find(|(k, _)| *k == name).map(|(_, v)| percent_decode(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_decode_without_turning_plus_into_space() {
        assert_eq!(path_decode("/object/b/a%20b+c.png"), "/object/b/a b+c.png");
        assert_eq!(path_decode("/object/b/%C3%BC%zz"), "/object/b/ü%zz");
    }

    #[test]
    fn percent_coding_round_trips() {
        assert_eq!(percent_decode("a%20b+c%2Fd%zz"), "a b c/d%zz");
        assert_eq!(form_encode("a b/c~"), "a%20b%2Fc~");
        assert_eq!(percent_decode(&form_encode("ünï & =")), "ünï & =");
        assert_eq!(
            query_pairs("a=1&b=x%20y&&c"),
            vec![("a".into(), "1".into()), ("b".into(), "x y".into()), ("c".into(), "".into())]
        );
        assert_eq!(query_param("grant_type=password&x=1", "grant_type").as_deref(), Some("password"));
        assert_eq!(query_param("x=1", "grant_type"), None);
    }
}
