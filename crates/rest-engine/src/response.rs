//! Response stage: the status, headers and body PostgREST would answer
//! with, from the request, its plan and what running the plan's statement
//! gave. Pure.
use serde_json::{json, Map, Value};

use crate::error::RestError;
use crate::plan::WritePlan;
use crate::prefer::Return;
use crate::request::{ApiRequest, Explain, HttpRequest, MediaType, Method};

/// The engine's answer to one HTTP request.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Value,
    pub body: String,
}

impl Response {
    pub fn error(err: &RestError) -> Self {
        Response {
            status: err.status(),
            headers: json!({ "Content-Type": "application/json; charset=utf-8" }),
            body: err.body().to_string(),
        }
    }
}

/// PostgREST's response GUCs, as the request's SQL set them:
/// `response.status` replaces the status, `response.headers` (a JSON array
/// of one-key objects, `[{"Cache-Control": "max-age=60"}]`) adds headers and
/// replaces those of the same name; a name given twice (`Set-Cookie`) is
/// sent twice. Malformed: PostgREST's `500 PGRST111` / `PGRST112`.
pub fn apply_settings(response: &mut Response, status: Option<&str>, headers: Option<&str>) -> Result<(), RestError> {
    let status = match status {
        Some(s) => Some(s.trim().parse::<u16>().ok().filter(|s| (100..=599).contains(s)).ok_or(RestError::GucStatus)?),
        None => None,
    };
    if let Some(headers) = headers {
        let Ok(Value::Array(items)) = serde_json::from_str::<Value>(headers) else {
            return Err(RestError::GucHeaders);
        };
        let mut set: Vec<(String, Value)> = Vec::with_capacity(items.len());
        for item in items {
            let pair = match item {
                Value::Object(map) if map.len() == 1 => map.into_iter().next(),
                _ => None,
            };
            let Some((name, Value::String(value))) = pair else {
                return Err(RestError::GucHeaders);
            };
            if !is_token(&name) || value.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
                return Err(RestError::GucHeaders);
            }
            match set.iter_mut().find(|(n, _)| n.eq_ignore_ascii_case(&name)) {
                Some((_, Value::Array(values))) => values.push(Value::String(value)),
                Some((_, first)) => *first = Value::Array(vec![first.take(), Value::String(value)]),
                None => set.push((name, Value::String(value))),
            }
        }
        if let Some(map) = response.headers.as_object_mut() {
            for (name, value) in set {
                map.retain(|n, _| !n.eq_ignore_ascii_case(&name));
                map.insert(name, value);
            }
        }
    }
    if let Some(status) = status {
        response.status = status;
    }
    Ok(())
}

/// An HTTP header name (RFC 9110 token).
fn is_token(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// What running one statement of the engine gave.
#[derive(Debug, Default)]
pub struct Outcome {
    pub body: Option<String>,
    /// Rows in the body (reads) or rows written (writes).
    pub rows: i64,
    /// `count=exact` total, when asked for; for an upsert that merges
    /// duplicates, the rows it inserted.
    pub total: Option<i64>,
    /// The body is already in the negotiated media type (CSV built by the
    /// statement); otherwise it is JSON rows.
    pub rendered: bool,
}

/// `GET /rest/v1/`: the OpenAPI description (no body for HEAD).
pub fn openapi(api: &ApiRequest, description: &Value) -> Response {
    Response {
        status: 200,
        headers: json!({ "Content-Type": "application/openapi+json; charset=utf-8" }),
        body: if api.method == Method::Head { String::new() } else { description.to_string() },
    }
}

/// A call of a function that returns `void`.
pub fn void_call() -> Response {
    Response { status: 204, headers: json!({}), body: String::new() }
}

/// PATCH with `{}`: nothing to change, nothing ran.
pub fn empty_update() -> Response {
    Response { status: 204, headers: json!({ "Content-Range": "*/0" }), body: String::new() }
}

/// A call of a function that returns one scalar or composite value: its
/// JSON (`null` when it returned no row), one row in `Content-Range` (its
/// total with `count=exact`), as PostgREST answers.
pub fn scalar_call(api: &ApiRequest, body: Option<String>, counted: bool) -> Response {
    let csv = api.accept == MediaType::Csv;
    let body = body.unwrap_or_else(|| if csv { String::new() } else { "null".into() });
    let mut headers = content_type(if csv { MediaType::Csv } else { MediaType::Json });
    headers.insert("Content-Range".into(), Value::String(if counted { "0-0/1" } else { "0-0/*" }.into()));
    applied(api, &mut headers);
    Response { status: 200, headers: Value::Object(headers), body: head_aware(api, body) }
}

/// `Accept: application/vnd.pgrst.plan`: the lines `EXPLAIN` printed.
pub fn explained(api: &ApiRequest, explain: &Explain, lines: &[String]) -> Response {
    Response {
        status: 200,
        headers: json!({ "Content-Type": explain.content_type() }),
        body: head_aware(api, lines.join("\n")),
    }
}

/// Keyset pagination: a full page links to the next one (`Link` and
/// `Fluxbase-Next-Cursor`), the request's parameters kept but its cursor.
pub fn link_next_page(response: &mut Response, request: &HttpRequest<'_>, cursor: String) {
    let Some(headers) = response.headers.as_object_mut() else { return };
    let kept: Vec<&str> = request.query.split('&').filter(|p| !p.is_empty() && !p.starts_with("cursor=")).collect();
    let path = &request.path;
    let link = format!("</rest/v1/{path}?{}&cursor={cursor}>; rel=\"next\"", kept.join("&"));
    headers.insert("Link".into(), Value::String(link));
    headers.insert("Fluxbase-Next-Cursor".into(), Value::String(cursor));
}

/// `If-Match` on a write: whether the rows the write would change (`current`,
/// their read as a JSON array) still have the ETag the client gave, as an
/// array or, for one row, as the singular object.
pub fn precondition_holds(if_match: &str, current: Outcome) -> bool {
    let array = current.body.unwrap_or_else(|| "[]".into());
    let mut tags = vec![etag(&array)];
    if current.rows == 1 {
        // The singular form of the same read: the one element, as Postgres printed it.
        if let Some(object) = array.strip_prefix('[').and_then(|a| a.strip_suffix(']')) {
            tags.push(etag(object));
        }
    }
    tags.iter().any(|t| etag_matches(Some(if_match), t))
}

/// `Prefer: tx=commit|rollback` that was honoured: added to `Preference-Applied`.
pub fn echo_transaction_end(response: &mut Response, rollback: bool) {
    let echo = if rollback { "tx=rollback" } else { "tx=commit" };
    if let Some(headers) = response.headers.as_object_mut() {
        let applied = match headers.get("Preference-Applied").and_then(Value::as_str) {
            Some(others) => format!("{others}, {echo}"),
            None => echo.to_string(),
        };
        headers.insert("Preference-Applied".into(), Value::String(applied));
    }
}

/// `{"Content-Type": …}` of a response body in `media`.
fn content_type(media: MediaType) -> Map<String, Value> {
    let value = match media {
        MediaType::Object => "application/vnd.pgrst.object+json; charset=utf-8",
        MediaType::Csv => "text/csv; charset=utf-8",
        MediaType::GeoJson => "application/geo+json; charset=utf-8",
        _ => "application/json; charset=utf-8",
    };
    let mut headers = Map::with_capacity(4);
    headers.insert("Content-Type".into(), Value::String(value.into()));
    headers
}

/// The body in the negotiated media type (CSV is converted from JSON rows
/// the statement did not already render).
fn render(media: MediaType, body: String, rendered: bool) -> String {
    if media == MediaType::Csv && !rendered {
        crate::csv::from_rows(&body)
    } else {
        body
    }
}

/// A weak validator of a read's body: equal bodies, equal ETags (XXH3, a
/// frozen specification, so the tag never changes between releases, over
/// the body, and its length). FNV-1a, byte at a time, cost a 1 MB body
/// about a millisecond.
fn etag(body: &str) -> String {
    let hash = xxhash_rust::xxh3::xxh3_64(body.as_bytes());
    format!("W/\"{hash:016x}{:08x}\"", body.len())
}

fn etag_matches(if_none_match: Option<&str>, tag: &str) -> bool {
    if_none_match.is_some_and(|h| {
        h.split(',')
            .map(str::trim)
            .any(|t| t == "*" || t == tag || t.trim_start_matches("W/") == tag.trim_start_matches("W/"))
    })
}

fn head_aware(api: &ApiRequest, body: String) -> String {
    if api.method == Method::Head {
        String::new()
    } else {
        body
    }
}

fn applied(api: &ApiRequest, headers: &mut Map<String, Value>) {
    let applied = &api.prefer.applied;
    if !applied.is_empty() {
        headers.insert("Preference-Applied".into(), Value::String(applied.join(", ")));
    }
}

pub fn read_response(
    api: &ApiRequest,
    outcome: Outcome,
    offset: i64,
    singular: bool,
    capped: Option<i64>,
) -> Result<Response, RestError> {
    if singular && outcome.rows != 1 {
        return Err(RestError::Singular { rows: outcome.rows });
    }
    let total = outcome.total.map(|t| t.to_string()).unwrap_or_else(|| "*".into());
    let range = if outcome.rows == 0 {
        format!("*/{total}")
    } else {
        format!("{}-{}/{}", offset, offset + outcome.rows - 1, total)
    };
    if let Some(t) = outcome.total {
        if offset > 0 && offset >= t && t > 0 {
            return Err(RestError::Range(format!("offset {offset} is past the {t} rows")));
        }
    }
    let partial = outcome.total.is_some_and(|t| outcome.rows < t);
    let mut headers = content_type(api.accept);
    headers.insert("Content-Range".into(), Value::String(range));
    applied(api, &mut headers);
    if let Some(max) = capped.filter(|m| outcome.rows >= *m) {
        // Never truncate silently: say that the server's row limit cut the page.
        headers.insert(
            "Warning".into(),
            Value::String(format!("299 fluxbase \"result limited to fluxbase.max_rows = {max} rows\"")),
        );
    }
    let rendered = outcome.rendered;
    let body = render(api.accept, outcome.body.unwrap_or_else(|| "[]".into()), rendered);
    let tag = etag(&body);
    let not_modified = etag_matches(api.if_none_match.as_deref(), &tag);
    headers.insert("ETag".into(), Value::String(tag));
    if not_modified {
        return Ok(Response { status: 304, headers: Value::Object(headers), body: String::new() });
    }
    Ok(Response {
        status: if partial { 206 } else { 200 },
        headers: Value::Object(headers),
        body: head_aware(api, body),
    })
}

pub fn write_response(api: &ApiRequest, write: &WritePlan, outcome: Outcome) -> Result<Response, RestError> {
    let n = outcome.rows;
    let mut headers = Map::new();
    let representation = write.returning == Return::Representation;
    headers.insert(
        "Content-Range".into(),
        Value::String(if representation && n > 0 { format!("0-{}/{}", n - 1, n) } else { format!("*/{n}") }),
    );
    applied(api, &mut headers);
    if write.returning == Return::HeadersOnly && api.method == Method::Post {
        if let Some(location) = location(write, outcome.body.as_deref()) {
            headers.insert("Location".into(), Value::String(location));
        }
    }
    // An upsert that merges duplicates answers 201 only when it inserted a
    // row, 200 when it only updated (PostgREST's Response.hs); PUT with a
    // representation likewise, 204 without one.
    let inserted = crate::sql::counts_inserted(write).then(|| outcome.total.unwrap_or(0));
    let status = match (api.method, representation, inserted) {
        (Method::Post, _, Some(n)) if n <= 0 => 200,
        (Method::Post, _, _) => 201,
        (Method::Put, true, Some(n)) if n > 0 => 201,
        (_, true, _) => 200,
        (_, false, _) => 204,
    };
    if !representation {
        return Ok(Response { status, headers: Value::Object(headers), body: String::new() });
    }
    headers.extend(content_type(api.accept));
    let rendered = outcome.rendered;
    let body = render(api.accept, outcome.body.unwrap_or_else(|| "[]".into()), rendered);
    Ok(Response { status, headers: Value::Object(headers), body })
}

/// `/table?pk=eq.value` of the first written row.
fn location(write: &WritePlan, body: Option<&str>) -> Option<String> {
    let rows: Value = serde_json::from_str(body?).ok()?;
    let row = rows.get(0)?.as_object()?;
    let parts: Vec<String> = write
        .primary_key
        .iter()
        .map(|k| {
            let v = match row.get(k) {
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
                None => String::new(),
            };
            format!("{}=eq.{}", encode(k), encode(&v))
        })
        .collect();
    (!parts.is_empty()).then(|| format!("/{}?{}", write.table, parts.join("&")))
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::parse;

    #[test]
    fn response_settings_replace_the_status_and_headers() {
        let mut r = Response { status: 200, headers: json!({"Content-Type": "application/json"}), body: "[]".into() };
        let headers = r#"[{"content-type": "text/plain"}, {"Set-Cookie": "a=1"}, {"Set-Cookie": "b=2"}]"#;
        apply_settings(&mut r, Some(" 201"), Some(headers)).unwrap();
        assert_eq!(r.status, 201);
        assert_eq!(r.headers, json!({"content-type": "text/plain", "Set-Cookie": ["a=1", "b=2"]}));
        for bad in [r#"{"a": "b"}"#, r#"[{"a": 1}]"#, r#"[{"a": "b", "c": "d"}]"#, r#"[{"a b": "c"}]"#, "nope"] {
            assert_eq!(apply_settings(&mut r, None, Some(bad)), Err(RestError::GucHeaders), "{bad}");
        }
        for bad in ["abc", "99", "600", ""] {
            assert_eq!(apply_settings(&mut r, Some(bad), None), Err(RestError::GucStatus), "{bad}");
        }
        assert_eq!(r.status, 201);
    }

    fn api(request: Value) -> ApiRequest {
        let text = request.to_string();
        parse(&HttpRequest::from_json(&text).unwrap()).unwrap()
    }

    fn rows(body: &str, rows: i64, total: Option<i64>) -> Outcome {
        Outcome { body: Some(body.into()), rows, total, rendered: false }
    }

    #[test]
    fn a_read_says_its_range_and_its_etag() {
        let get = api(json!({"path": "t", "query": "offset=2"}));
        let r = read_response(&get, rows(r#"[{"id":3},{"id":4}]"#, 2, Some(5)), 2, false, None).unwrap();
        assert_eq!((r.status, &r.headers["Content-Range"]), (206, &json!("2-3/5")));
        let tag = r.headers["ETag"].as_str().unwrap().to_string();
        assert!(tag.starts_with("W/\""), "{tag}");
        // The same body again, with its ETag in If-None-Match: not modified.
        let again = api(json!({"path": "t", "headers": {"if-none-match": tag}}));
        let r = read_response(&again, rows(r#"[{"id":3},{"id":4}]"#, 2, None), 0, false, None).unwrap();
        assert_eq!((r.status, r.body.as_str()), (304, ""));
        // Past the end, with a known total: 416.
        let past = read_response(&get, rows("[]", 0, Some(1)), 2, false, None).unwrap_err();
        assert_eq!(past.status(), 416);
    }

    #[test]
    fn a_capped_page_warns_and_a_singular_read_needs_one_row() {
        let get = api(json!({"path": "t"}));
        let r = read_response(&get, rows("[1,2]", 2, None), 0, false, Some(2)).unwrap();
        assert!(r.headers["Warning"].as_str().unwrap().contains("fluxbase.max_rows = 2"));
        let object = api(json!({"path": "t", "headers": {"accept": "application/vnd.pgrst.object+json"}}));
        let err = read_response(&object, rows("[1,2]", 2, None), 0, true, None).unwrap_err();
        assert_eq!(err, RestError::Singular { rows: 2 });
    }

    #[test]
    fn if_match_takes_the_etag_of_the_array_or_of_its_one_object() {
        let array = r#"[{"id":1}]"#;
        let current = || rows(array, 1, None);
        assert!(precondition_holds(&etag(array), current()));
        assert!(precondition_holds(&etag(r#"{"id":1}"#), current()));
        assert!(precondition_holds("*", current()));
        assert!(!precondition_holds(&etag(r#"[{"id":2}]"#), current()));
    }

    #[test]
    fn a_full_keyset_page_links_to_the_next() {
        let text = json!({"path": "t", "query": "select=id&cursor=abc&order=id"}).to_string();
        let request = HttpRequest::from_json(&text).unwrap();
        let mut response = void_call();
        link_next_page(&mut response, &request, "next1".into());
        assert_eq!(response.headers["Link"], json!("</rest/v1/t?select=id&order=id&cursor=next1>; rel=\"next\""));
        assert_eq!(response.headers["Fluxbase-Next-Cursor"], json!("next1"));
    }
}
