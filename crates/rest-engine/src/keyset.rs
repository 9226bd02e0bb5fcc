//! Keyset (cursor) pagination, beyond PostgREST: `Prefer: pagination=keyset`
//! (or a `cursor=` parameter) orders by the requested columns plus the
//! primary key, and a full page answers with an opaque cursor for the next
//! one. A cursor names a position, not an offset, so rows inserted before it
//! do not shift the following pages. Pure.
use serde_json::Value;

use crate::error::RestError;

#[derive(Debug, Clone, PartialEq)]
pub struct KeyColumn {
    pub name: String,
    pub type_name: String,
    pub descending: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Keyset {
    pub columns: Vec<KeyColumn>,
    /// The last row of the previous page, one text value per key column.
    pub after: Option<Vec<String>>,
}

fn shape(columns: &[KeyColumn]) -> String {
    let spec: String =
        columns.iter().map(|c| format!("{}:{},", c.name, if c.descending { "d" } else { "a" })).collect();
    let hash = crate::hash::fnv1a(crate::hash::FNV_OFFSET, spec.as_bytes());
    format!("{:08x}", hash as u32)
}

fn bad(details: &str) -> RestError {
    RestError::Parse { param: "cursor".into(), value: String::new(), details: details.into() }
}

/// base64url without padding, both ways (no dependency for 30 lines).
const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn encode64(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (*b as u32) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

fn decode64(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let values: Option<Vec<u32>> =
        text.bytes().map(|c| ALPHABET.iter().position(|a| *a == c).map(|p| p as u32)).collect();
    for chunk in values?.chunks(4) {
        if chunk.len() < 2 {
            return None;
        }
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, v)| n | v << (18 - 6 * i));
        for i in 0..chunk.len() - 1 {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    Some(out)
}

pub fn encode(columns: &[KeyColumn], values: &[String]) -> String {
    format!("{}.{}", shape(columns), encode64(Value::from(values.to_vec()).to_string().as_bytes()))
}

/// The position a cursor names, checked against the page's key columns.
pub fn decode(columns: &[KeyColumn], cursor: &str) -> Result<Vec<String>, RestError> {
    let (hash, data) = cursor.split_once('.').ok_or_else(|| bad("malformed cursor"))?;
    if hash != shape(columns) {
        return Err(bad("this cursor belongs to another order; repeat the request that issued it"));
    }
    let bytes = decode64(data).ok_or_else(|| bad("malformed cursor"))?;
    let values: Vec<String> = serde_json::from_slice(&bytes).map_err(|_| bad("malformed cursor"))?;
    if values.len() != columns.len() {
        return Err(bad("malformed cursor"));
    }
    Ok(values)
}

/// The cursor after the last row of a page (a JSON array body).
pub fn next_cursor(columns: &[KeyColumn], body: &str) -> Option<String> {
    let rows: Value = serde_json::from_str(body).ok()?;
    let last = rows.as_array()?.last()?.as_object()?;
    let values: Option<Vec<String>> = columns
        .iter()
        .map(|c| match last.get(&c.name)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        })
        .collect();
    Some(encode(columns, &values?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cols() -> Vec<KeyColumn> {
        vec![
            KeyColumn { name: "created".into(), type_name: "timestamptz".into(), descending: true },
            KeyColumn { name: "id".into(), type_name: "integer".into(), descending: false },
        ]
    }

    #[test]
    fn cursors_round_trip_and_are_tied_to_their_order() {
        let c = next_cursor(
            &cols(),
            r#"[{"id":1,"created":"2026-01-01T00:00:00+00:00"},{"id":7,"created":"2026-01-02T00:00:00+00:00"}]"#,
        )
        .unwrap();
        assert_eq!(decode(&cols(), &c).unwrap(), vec!["2026-01-02T00:00:00+00:00".to_string(), "7".to_string()]);
        let mut other = cols();
        other[0].descending = false;
        assert!(decode(&other, &c).is_err());
        assert!(decode(&cols(), "nonsense").is_err());
        assert!(decode(&cols(), &format!("{}.@@@", c.split('.').next().unwrap())).is_err());
        assert_eq!(next_cursor(&cols(), "[]"), None);
        for s in ["", "a", "ab", "abc", "abcd", "\u{00e9}\u{1f600}"] {
            assert_eq!(decode64(&encode64(s.as_bytes())).unwrap(), s.as_bytes());
        }
    }
}
