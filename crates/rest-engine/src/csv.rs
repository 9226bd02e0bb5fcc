//! CSV in both directions, as PostgREST speaks it: a header row of column
//! names, RFC 4180 quoting, empty unquoted fields for NULL. Pure.
use serde_json::{Map, Value};

use crate::error::RestError;

fn field(value: &Value) -> String {
    let text = match value {
        Value::Null => return String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if text.is_empty() || text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

/// A JSON array of objects (a response body) as CSV.
pub fn from_rows(body: &str) -> String {
    let rows: Vec<Map<String, Value>> = serde_json::from_str(body).unwrap_or_default();
    let Some(first) = rows.first() else { return String::new() };
    let header: Vec<&String> = first.keys().collect();
    let mut out = header.iter().map(|h| field(&Value::String((*h).clone()))).collect::<Vec<_>>().join(",");
    for row in &rows {
        out.push('\n');
        let line: Vec<String> = header.iter().map(|h| field(row.get(*h).unwrap_or(&Value::Null))).collect();
        out.push_str(&line.join(","));
    }
    out
}

/// A CSV request body as a JSON array of objects with text (or null) values.
pub fn to_rows(csv: &str) -> Result<Value, RestError> {
    let records = parse(csv)?;
    let mut it = records.into_iter();
    let header: Vec<String> = it
        .next()
        .ok_or_else(|| RestError::InvalidBody("CSV body needs a header row".into()))?
        .into_iter()
        .map(|f| f.unwrap_or_default())
        .collect();
    let mut rows = Vec::new();
    for (i, record) in it.enumerate() {
        if record.len() != header.len() {
            return Err(RestError::InvalidBody(format!(
                "CSV row {} has {} fields; the header has {}",
                i + 2,
                record.len(),
                header.len()
            )));
        }
        let obj: Map<String, Value> =
            header.iter().cloned().zip(record.into_iter().map(|f| f.map_or(Value::Null, Value::String))).collect();
        rows.push(Value::Object(obj));
    }
    Ok(Value::Array(rows))
}

/// Records of fields; `None` is an empty unquoted field (NULL).
fn parse(csv: &str) -> Result<Vec<Vec<Option<String>>>, RestError> {
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut chars = csv.chars().peekable();
    loop {
        let mut value = String::new();
        let mut quoted = false;
        if chars.peek() == Some(&'"') {
            quoted = true;
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        value.push('"');
                    }
                    Some('"') => break,
                    Some(c) => value.push(c),
                    None => return Err(RestError::InvalidBody("unterminated quoted CSV field".into())),
                }
            }
        }
        while let Some(&c) = chars.peek() {
            if c == ',' || c == '\n' || c == '\r' {
                break;
            }
            if quoted {
                return Err(RestError::InvalidBody("characters after a closing quote in CSV".into()));
            }
            value.push(c);
            chars.next();
        }
        record.push(if value.is_empty() && !quoted { None } else { Some(value) });
        match chars.next() {
            Some(',') => continue,
            Some('\r') => {
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
            }
            Some('\n') => {}
            None => {
                if !(record.len() == 1 && record[0].is_none()) {
                    records.push(record);
                }
                return Ok(records);
            }
            Some(_) => unreachable!("the field loop stops only at separators"),
        }
        records.push(std::mem::take(&mut record));
        if chars.peek().is_none() {
            return Ok(records);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trips_quoting_and_nulls() {
        let body = r#"[{"id":1,"name":"a, \"b\"","note":null},{"id":2,"name":"plain","note":"x"}]"#;
        let csv = from_rows(body);
        assert_eq!(csv, "id,name,note\n1,\"a, \"\"b\"\"\",\n2,plain,x");
        let back = to_rows(&csv).unwrap();
        assert_eq!(
            back,
            json!([{"id": "1", "name": "a, \"b\"", "note": null}, {"id": "2", "name": "plain", "note": "x"}])
        );
    }

    #[test]
    fn refuses_broken_csv() {
        assert!(to_rows("").is_err());
        assert!(to_rows("a,b\n1").is_err());
        assert!(to_rows("a\n\"open").is_err());
        assert!(to_rows("a\n\"x\"y").is_err());
        assert_eq!(to_rows("a,b\r\n1,2\r\n").unwrap(), json!([{"a": "1", "b": "2"}]));
    }
}
