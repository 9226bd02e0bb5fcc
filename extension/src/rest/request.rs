//! Parse stage: the proxy's request JSON into a typed `ApiRequest`. Pure.
use serde_json::Value;

use crate::error::RestError;
use crate::filter::{self, Condition, FilterError};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Method {
    Get,
    Head,
}

impl Method {
    pub fn as_str(&self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
        }
    }
}

#[derive(Debug, PartialEq)]
pub enum SelectItem {
    Star,
    Column {
        name: String,
        alias: Option<String>,
        cast: Option<String>,
    },
}

#[derive(Debug, PartialEq)]
pub struct OrderTerm {
    pub column: String,
    pub descending: bool,
    pub nulls_first: Option<bool>,
}

#[derive(Debug, PartialEq)]
pub struct Filter {
    pub column: String,
    pub condition: Condition,
}

#[derive(Debug, PartialEq)]
pub struct ApiRequest {
    pub method: Method,
    pub schema: Option<String>,
    pub relation: String,
    pub select: Vec<SelectItem>,
    pub filters: Vec<Filter>,
    pub order: Vec<OrderTerm>,
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

pub fn parse(request: &Value) -> Result<ApiRequest, RestError> {
    let method = match request
        .get("method")
        .and_then(Value::as_str)
        .unwrap_or("GET")
    {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        other => {
            return Err(RestError::Method {
                method: other.to_string(),
            })
        }
    };
    let relation = request
        .get("path")
        .and_then(Value::as_str)
        .unwrap_or("")
        .trim_matches('/')
        .to_string();
    if relation.is_empty() || relation.contains('/') {
        return Err(RestError::InvalidRequest(format!(
            "invalid path \"{relation}\""
        )));
    }
    let headers = request.get("headers");
    let header = |name: &str| {
        headers
            .and_then(|h| h.get(name))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let schema = header("accept-profile");

    let mut api = ApiRequest {
        method,
        schema,
        relation,
        select: vec![SelectItem::Star],
        filters: vec![],
        order: vec![],
        limit: None,
        offset: None,
    };
    let query = request.get("query").and_then(Value::as_str).unwrap_or("");
    for (key, value) in query_pairs(query)? {
        match key.as_str() {
            "select" => api.select = parse_select(&value)?,
            "order" => api.order = parse_order(&value)?,
            "limit" => api.limit = Some(parse_count("limit", &value)?),
            "offset" => api.offset = Some(parse_count("offset", &value)?),
            "or" | "and" | "columns" | "on_conflict" => {
                return Err(RestError::Parse {
                    param: key.clone(),
                    value,
                    details: format!("\"{key}\" is not supported by this version of Fluxbase yet"),
                })
            }
            _ => {
                let condition = filter::parse_condition(&value).map_err(|e| match e {
                    FilterError::UnknownOperator(operator) => RestError::UnknownOperator {
                        column: key.clone(),
                        operator,
                    },
                    FilterError::Malformed(details) => RestError::Parse {
                        param: "filter".into(),
                        value: value.clone(),
                        details,
                    },
                })?;
                api.filters.push(Filter {
                    column: key,
                    condition,
                });
            }
        }
    }
    Ok(api)
}

fn parse_count(param: &str, value: &str) -> Result<i64, RestError> {
    value
        .parse::<i64>()
        .ok()
        .filter(|n| *n >= 0)
        .ok_or_else(|| RestError::Parse {
            param: param.into(),
            value: value.into(),
            details: "expected a non-negative integer".into(),
        })
}

fn parse_select(value: &str) -> Result<Vec<SelectItem>, RestError> {
    let bad = |details: &str| RestError::Parse {
        param: "select".into(),
        value: value.into(),
        details: details.into(),
    };
    let mut items = Vec::new();
    for raw in value.split(',') {
        let raw = raw.trim();
        if raw == "*" {
            items.push(SelectItem::Star);
            continue;
        }
        if raw.is_empty() {
            return Err(bad("empty select item"));
        }
        if raw.contains('(') || raw.contains("->") {
            return Err(bad(
                "embedding and JSON paths are not supported by this version of Fluxbase yet",
            ));
        }
        let (alias, rest) = match raw.split_once(':') {
            Some((a, r)) if !r.starts_with(':') => (Some(a.to_string()), r),
            _ => (None, raw),
        };
        let (name, cast) = match rest.split_once("::") {
            Some((n, c)) => (n.to_string(), Some(c.to_string())),
            None => (rest.to_string(), None),
        };
        if name.is_empty() || cast.as_deref() == Some("") || alias.as_deref() == Some("") {
            return Err(bad("malformed select item"));
        }
        items.push(SelectItem::Column { name, alias, cast });
    }
    Ok(items)
}

fn parse_order(value: &str) -> Result<Vec<OrderTerm>, RestError> {
    value
        .split(',')
        .map(|term| {
            let mut parts = term.split('.');
            let column = parts.next().unwrap_or("").to_string();
            let mut order = OrderTerm {
                column,
                descending: false,
                nulls_first: None,
            };
            for modifier in parts {
                match modifier {
                    "asc" => order.descending = false,
                    "desc" => order.descending = true,
                    "nullsfirst" => order.nulls_first = Some(true),
                    "nullslast" => order.nulls_first = Some(false),
                    other => {
                        return Err(RestError::Parse {
                            param: "order".into(),
                            value: value.into(),
                            details: format!("unknown order modifier \"{other}\""),
                        })
                    }
                }
            }
            if order.column.is_empty() {
                return Err(RestError::Parse {
                    param: "order".into(),
                    value: value.into(),
                    details: "empty column".into(),
                });
            }
            Ok(order)
        })
        .collect()
}

/// `a=1&b=x%20y` → pairs, percent- and `+`-decoded as HTML forms encode them.
pub fn query_pairs(query: &str) -> Result<Vec<(String, String)>, RestError> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((decode(k)?, decode(v)?))
        })
        .collect()
}

fn decode(s: &str) -> Result<String, RestError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok());
                let byte = hex
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| {
                        RestError::InvalidRequest(format!(
                            "invalid percent-encoding in query string near \"{}\"",
                            &s[i..]
                        ))
                    })?;
                out.push(byte);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out)
        .map_err(|_| RestError::InvalidRequest("query string is not valid UTF-8".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_a_typical_supabase_js_read() {
        let req = json!({"method": "GET", "path": "todos", "query": "select=id%2Ctitle%3Aname&done=is.false&order=id.desc&limit=10"});
        let api = parse(&req).unwrap();
        assert_eq!(api.relation, "todos");
        assert_eq!(api.select.len(), 2);
        assert_eq!(
            api.select[1],
            SelectItem::Column {
                name: "name".into(),
                alias: Some("title".into()),
                cast: None
            }
        );
        assert_eq!(api.filters.len(), 1);
        assert_eq!(
            api.order[0],
            OrderTerm {
                column: "id".into(),
                descending: true,
                nulls_first: None
            }
        );
        assert_eq!(api.limit, Some(10));
    }

    #[test]
    fn rejects_bad_input_with_codes() {
        let bad = |q: &str| parse(&json!({"path": "t", "query": q})).unwrap_err();
        assert!(matches!(bad("id=wat.1"), RestError::UnknownOperator { .. }));
        assert!(matches!(bad("limit=-1"), RestError::Parse { .. }));
        assert!(matches!(bad("order=id.sideways"), RestError::Parse { .. }));
        assert!(matches!(bad("a=%zz"), RestError::InvalidRequest(_)));
        assert!(matches!(bad("a=%ff"), RestError::InvalidRequest(_)));
        assert!(matches!(
            parse(&json!({"method": "TRACE", "path": "t"})).unwrap_err(),
            RestError::Method { .. }
        ));
    }

    #[test]
    fn casts_and_plus_decoding() {
        let api = parse(&json!({"path": "t", "query": "select=id::text&name=eq.a+b"})).unwrap();
        assert_eq!(
            api.select[0],
            SelectItem::Column {
                name: "id".into(),
                alias: None,
                cast: Some("text".into())
            }
        );
        assert_eq!(
            api.filters[0].condition.operand,
            crate::filter::Operand::Scalar("a b".into())
        );
    }
}
