//! Fuzzes the REST request parser (query string, select/embedding grammar,
//! filters and logic trees, Prefer/Accept/Range headers, JSON and CSV
//! bodies) of the `fluxbase-rest` crate; no Postgres involved.
//! Input: NUL-separated fields `method, path, query, body, range, accept, prefer, content-type`.
#![no_main]

use fluxbase_rest::{csv, filter, request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut parts = text.split('\0');
    let mut next = || parts.next().unwrap_or("").to_string();
    let (method, path, query, body) = (next(), next(), next(), next());
    let (range, accept, prefer, content_type) = (next(), next(), next(), next());
    let input = serde_json::json!({
        "method": method, "path": path, "query": query, "body": body,
        "headers": { "range": range, "accept": accept, "prefer": prefer, "content-type": content_type },
    });
    let text = input.to_string();
    let http = request::HttpRequest::from_json(&text).expect("a JSON object of strings is a request");
    let _ = request::parse(&http);
    let _ = filter::parse_logic(filter::LogicOp::And, false, &query);
    let _ = filter::parse_condition(&query);
    let _ = csv::to_rows(&body);
});
