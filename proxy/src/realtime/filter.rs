//! The `filter` of a `postgres_changes` binding, in realtime-js's grammar
//! (`RealtimePostgresFilterBuilder`): `column=[not.]op.value` conditions
//! joined by commas (AND); values with `,()"\` or outer spaces are
//! double-quoted with `\` escapes, lists are `in.(a,"b,c")`. Operators: eq,
//! neq, lt, lte, gt, gte, in, is, isdistinct, like, ilike, match, imatch.
//! Parsed once at join and checked against the table's columns; evaluated
//! on a change's text values (numbers and booleans by value, other types by
//! their text as Postgres prints them). Pure: no socket, no SQL.
use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Eq,
    Neq,
    Lt,
    Lte,
    Gt,
    Gte,
    In,
    Is,
    IsDistinct,
    Like,
    Ilike,
    Match,
    Imatch,
}

/// How a column's values compare.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    Number,
    Bool,
    Text,
}

impl Kind {
    pub fn of(typname: &str) -> Kind {
        match typname {
            "int2" | "int4" | "int8" | "float4" | "float8" | "numeric" | "oid" => Kind::Number,
            "bool" => Kind::Bool,
            _ => Kind::Text,
        }
    }
}

#[derive(Debug, Clone)]
enum Operand {
    One(String),
    List(Vec<String>),
    /// `is.`: null, not_null, true, false, unknown.
    Is(&'static str),
    Pattern(regex::Regex),
}

#[derive(Debug, Clone)]
struct Condition {
    column: String,
    negated: bool,
    op: Op,
    operand: Operand,
}

#[derive(Debug, Clone)]
pub struct Filter {
    conditions: Vec<Condition>,
}

/// Splits at top-level commas: not inside double quotes or parentheses.
fn split_top(s: &str) -> Vec<String> {
    let (mut parts, mut cur, mut quoted, mut depth, mut escaped) = (vec![], String::new(), false, 0i32, false);
    for c in s.chars() {
        if escaped {
            cur.push(c);
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted => {
                cur.push(c);
                escaped = true;
            }
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            '(' if !quoted => {
                depth += 1;
                cur.push(c);
            }
            ')' if !quoted => {
                depth -= 1;
                cur.push(c);
            }
            ',' if !quoted && depth == 0 => parts.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    parts.push(cur);
    parts
}

/// A scalar: `"…"` unquoted and unescaped, anything else as it is.
fn unquote(s: &str) -> Result<String, String> {
    let Some(inner) = s.strip_prefix('"') else { return Ok(s.to_string()) };
    let inner = inner.strip_suffix('"').ok_or_else(|| format!("unterminated quote in `{s}`"))?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            out.extend(chars.next());
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

/// A LIKE pattern (`%`, `_`, and PostgREST's `*` for `%`) as a regex.
fn like_regex(pattern: &str, insensitive: bool) -> Result<regex::Regex, String> {
    let mut re = String::from(if insensitive { "(?is)^" } else { "(?s)^" });
    for c in pattern.chars() {
        match c {
            '%' | '*' => re.push_str(".*"),
            '_' => re.push('.'),
            c => re.push_str(&regex::escape(&c.to_string())),
        }
    }
    re.push('$');
    regex::Regex::new(&re).map_err(|e| e.to_string())
}

impl Filter {
    /// Parses `filter`; `columns` (name → type name) checks column names and
    /// values when the binding names a table.
    pub fn parse(filter: &str, columns: Option<&HashMap<String, String>>) -> Result<Filter, String> {
        let mut conditions = vec![];
        for part in split_top(filter) {
            let part = part.trim();
            let (column, rest) =
                part.split_once('=').ok_or_else(|| format!("`{part}` is not of the form column=operator.value"))?;
            let column = column.trim().to_string();
            if column.is_empty() {
                return Err(format!("`{part}` names no column"));
            }
            let (negated, rest) = match rest.strip_prefix("not.") {
                Some(r) => (true, r),
                None => (false, rest),
            };
            let (op, value) =
                rest.split_once('.').ok_or_else(|| format!("`{part}` is not of the form column=operator.value"))?;
            let op = match op {
                "eq" => Op::Eq,
                "neq" => Op::Neq,
                "lt" => Op::Lt,
                "lte" => Op::Lte,
                "gt" => Op::Gt,
                "gte" => Op::Gte,
                "in" => Op::In,
                "is" => Op::Is,
                "isdistinct" => Op::IsDistinct,
                "like" => Op::Like,
                "ilike" => Op::Ilike,
                "match" => Op::Match,
                "imatch" => Op::Imatch,
                other => return Err(format!("unknown operator `{other}` in `{part}`")),
            };
            let kind = match columns {
                Some(cols) => match cols.get(&column) {
                    Some(t) => Kind::of(t),
                    None => return Err(format!("column `{column}` does not exist")),
                },
                None => Kind::Text,
            };
            let check = |v: &str| -> Result<(), String> {
                match kind {
                    Kind::Number if v.trim().parse::<f64>().is_err() => {
                        Err(format!("`{v}` is not a number (column `{column}`)"))
                    }
                    Kind::Bool if parse_bool(v).is_none() => Err(format!("`{v}` is not a boolean (column `{column}`)")),
                    _ => Ok(()),
                }
            };
            let operand = match op {
                Op::In => {
                    let inner = value
                        .strip_prefix('(')
                        .and_then(|v| v.strip_suffix(')'))
                        .ok_or_else(|| format!("`in` needs a list: `{column}=in.(a,b)`, got `{value}`"))?;
                    let items = split_top(inner).iter().map(|i| unquote(i.trim())).collect::<Result<Vec<_>, _>>()?;
                    if items.is_empty() || (items.len() == 1 && items[0].is_empty()) {
                        return Err(format!("`in` needs at least one value (column `{column}`)"));
                    }
                    items.iter().try_for_each(|i| check(i))?;
                    Operand::List(items)
                }
                Op::Is => Operand::Is(match value.to_ascii_lowercase().as_str() {
                    "null" => "null",
                    "not_null" => "not_null",
                    "true" => "true",
                    "false" => "false",
                    "unknown" => "unknown",
                    other => return Err(format!("is.{other}: expected null, not_null, true, false or unknown")),
                }),
                Op::Like | Op::Ilike => Operand::Pattern(like_regex(&unquote(value)?, op == Op::Ilike)?),
                Op::Match | Op::Imatch => {
                    let re = format!("{}{}", if op == Op::Imatch { "(?i)" } else { "" }, unquote(value)?);
                    Operand::Pattern(regex::Regex::new(&re).map_err(|e| format!("bad pattern in `{part}`: {e}"))?)
                }
                _ => {
                    let v = unquote(value)?;
                    check(&v)?;
                    Operand::One(v)
                }
            };
            conditions.push(Condition { column, negated, op, operand });
        }
        Ok(Filter { conditions })
    }

    /// Whether a row passes. `value(column)` is `None` for a column the
    /// change does not carry (a delete's non-key column without `REPLICA
    /// IDENTITY FULL`): that condition passes, as on Supabase; `Some(None)`
    /// is SQL NULL.
    pub fn passes<'a>(&self, value: impl Fn(&str) -> Option<(Option<&'a str>, Kind)>) -> bool {
        self.conditions.iter().all(|c| match value(&c.column) {
            None => true,
            Some((v, kind)) => c.holds(v, kind),
        })
    }
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "t" | "true" | "y" | "yes" | "on" | "1" => Some(true),
        "f" | "false" | "n" | "no" | "off" | "0" => Some(false),
        _ => None,
    }
}

fn compare(a: &str, b: &str, kind: Kind) -> Option<std::cmp::Ordering> {
    match kind {
        Kind::Number => a.trim().parse::<f64>().ok()?.partial_cmp(&b.trim().parse::<f64>().ok()?),
        Kind::Bool => Some(parse_bool(a)?.cmp(&parse_bool(b)?)),
        Kind::Text => Some(a.cmp(b)),
    }
}

impl Condition {
    /// SQL's answer, with unknown (NULL) as false: `not.` of unknown is
    /// unknown too, so a NULL passes only `is.null`, `not.is.…` and
    /// `isdistinct`.
    fn holds(&self, v: Option<&str>, kind: Kind) -> bool {
        use std::cmp::Ordering::*;
        let answer: Option<bool> = match (&self.operand, v) {
            (Operand::Is(what), v) => Some(match *what {
                "null" | "unknown" => v.is_none(),
                "not_null" => v.is_some(),
                "true" => v.and_then(parse_bool) == Some(true),
                _ => v.and_then(parse_bool) == Some(false),
            }),
            (Operand::One(_), None) if self.op == Op::IsDistinct => Some(true),
            (_, None) => None,
            (Operand::One(b), Some(a)) => {
                let ord = compare(a, b, kind);
                match self.op {
                    Op::Eq => ord.map(|o| o == Equal),
                    Op::Neq | Op::IsDistinct => ord.map(|o| o != Equal),
                    Op::Lt => ord.map(|o| o == Less),
                    Op::Lte => ord.map(|o| o != Greater),
                    Op::Gt => ord.map(|o| o == Greater),
                    Op::Gte => ord.map(|o| o != Less),
                    _ => None,
                }
            }
            (Operand::List(items), Some(a)) => Some(items.iter().any(|b| compare(a, b, kind) == Some(Equal))),
            (Operand::Pattern(re), Some(a)) => Some(re.is_match(a)),
        };
        match answer {
            Some(b) => b != self.negated,
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row<'a>(r: &'a [(&'a str, Option<&'a str>, Kind)]) -> impl Fn(&str) -> Option<(Option<&'a str>, Kind)> + 'a {
        move |c| r.iter().find(|(n, _, _)| *n == c).map(|(_, v, k)| (*v, *k))
    }

    #[test]
    fn operators_compare_as_postgres_would() {
        let r = [
            ("id", Some("10"), Kind::Number),
            ("title", Some("Buy milk, eggs"), Kind::Text),
            ("done", Some("f"), Kind::Bool),
            ("note", None, Kind::Text),
        ];
        let yes = |f: &str| Filter::parse(f, None).unwrap().passes(row(&r));
        assert!(yes("id=eq.10") && yes("id=gt.9") && yes("id=lte.10") && !yes("id=lt.10") && yes("id=neq.2"));
        assert!(yes("id=gt.9.5"), "numbers compare as numbers, not text ('10' < '9' as text)");
        assert!(yes("id=in.(1,10,100)") && !yes("id=in.(1,2)"));
        assert!(yes(r#"title=eq."Buy milk, eggs""#), "a quoted value keeps its comma");
        assert!(yes(r#"title=in.("Buy milk, eggs",x)"#));
        assert!(yes("title=like.Buy*") && yes("title=ilike.%MILK%") && !yes("title=like.%MILK%"));
        assert!(yes("title=match.^Buy") && yes("title=imatch.^buy"));
        assert!(yes("done=is.false") && yes("done=eq.false") && !yes("done=is.true"));
        assert!(yes("note=is.null") && !yes("note=eq.x") && !yes("note=not.eq.x"), "NULL compares unknown");
        assert!(yes("note=isdistinct.x") && yes("title=isdistinct.x") && !yes("id=isdistinct.10"));
        assert!(yes("id=not.eq.3") && !yes("id=not.in.(10)"));
        assert!(yes("id=gte.10,done=is.false") && !yes("id=gte.10,done=is.true"), "commas are AND");
        assert!(yes("missing=eq.1"), "a column the change does not carry does not filter");
    }

    #[test]
    fn malformed_filters_say_why() {
        let cols: HashMap<String, String> = [("id", "int8"), ("title", "text"), ("done", "bool")]
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        let err = |f: &str| Filter::parse(f, Some(&cols)).unwrap_err();
        assert!(err("id").contains("column=operator.value"));
        assert!(err("id=eq").contains("column=operator.value"));
        assert!(err("id=near.1").contains("unknown operator `near`"));
        assert!(err("nope=eq.1").contains("column `nope` does not exist"));
        assert!(err("id=eq.abc").contains("not a number"));
        assert!(err("done=eq.maybe").contains("not a boolean"));
        assert!(err("id=in.1,2").contains("needs a list"));
        assert!(err("title=eq.\"open").contains("unterminated quote"));
        assert!(err("title=is.maybe").contains("expected null"));
        assert!(Filter::parse("id=eq.1,title=neq.x", Some(&cols)).is_ok());
    }
}
