//! Fuzzes the REST request parser (query string, select/embedding grammar,
//! filters and logic trees, Prefer/Accept/Range headers, JSON and CSV
//! bodies) with the extension's own source files; no Postgres involved.
//! Input: NUL-separated fields `method, path, query, body, range, accept, prefer, content-type`.
#![no_main]
#![allow(dead_code)]

use libfuzzer_sys::fuzz_target;

#[path = "../../extension/src/borrowed.rs"]
mod borrowed;
#[path = "../../extension/src/error.rs"]
mod error;
#[path = "../../extension/src/filter.rs"]
mod filter;
#[path = "rest_modules.rs"]
mod rest;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut parts = text.split('\0');
    let mut next = || parts.next().unwrap_or("").to_string();
    let (method, path, query, body) = (next(), next(), next(), next());
    let (range, accept, prefer, content_type) = (next(), next(), next(), next());
    let request = serde_json::json!({
        "method": method, "path": path, "query": query, "body": body,
        "headers": { "range": range, "accept": accept, "prefer": prefer, "content-type": content_type },
    });
    let text = request.to_string();
    let request = rest::request::HttpRequest::from_json(&text).expect("a JSON object of strings is a request");
    let _ = rest::request::parse(&request);
    let _ = filter::parse_logic(filter::LogicOp::And, false, &query);
    let _ = filter::parse_condition(&query);
    let _ = rest::csv::to_rows(&body);
});
