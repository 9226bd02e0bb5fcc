//! The `filter` of a `postgres_changes` binding, in realtime-js's grammar
//! (`RealtimePostgresFilterBuilder`): `column=[not.]op.value` conditions
//! joined by commas (AND); values with `,()"\` or outer spaces are
//! double-quoted with `\` escapes, lists are `in.(a,"b,c")`. Operators: eq,
//! neq, lt, lte, gt, gte, in, is, isdistinct, like, ilike, match, imatch.
//! Parsed once at join and checked against the table's columns; evaluated
//! on a change's text values, compared by the column's type: numbers
//! (integers exactly, others as f64), booleans, timestamps with and without
//! time zone and dates (as instants: `2024-05-01T12:00:00Z` equals
//! `2024-05-01 14:00:00+02`), UUIDs (any case); other types by their text as
//! Postgres prints them. Pure: no socket, no SQL.
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
    /// timestamptz: an instant.
    TimestampTz,
    /// timestamp: a wall-clock time (an offset in the value is ignored, as
    /// Postgres does).
    Timestamp,
    Date,
    Uuid,
    Text,
}

impl Kind {
    pub fn of(typname: &str) -> Kind {
        match typname {
            "int2" | "int4" | "int8" | "float4" | "float8" | "numeric" | "oid" => Kind::Number,
            "bool" => Kind::Bool,
            "timestamptz" => Kind::TimestampTz,
            "timestamp" => Kind::Timestamp,
            "date" => Kind::Date,
            "uuid" => Kind::Uuid,
            _ => Kind::Text,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Number => "a number",
            Kind::Bool => "a boolean",
            Kind::TimestampTz | Kind::Timestamp => "a timestamp",
            Kind::Date => "a date",
            Kind::Uuid => "a UUID",
            Kind::Text => "text",
        }
    }
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's days_from_civil).
fn days(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DD[( |T)HH:MM[:SS[.ffffff]]][Z|±HH[:MM]]`, as Postgres prints
/// (ISO DateStyle) and as clients write: µs since the epoch, the offset
/// applied when `zoned`.
fn timestamp_micros(v: &str, zoned: bool) -> Option<i128> {
    let v = v.trim();
    let num =
        |s: &str| -> Option<i64> { (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok())? };
    let (date, rest) = match v.find(['T', 't', ' ']) {
        Some(i) => (&v[..i], v[i + 1..].trim_start()),
        None => (v, ""),
    };
    let mut parts = date.splitn(3, '-');
    let (y, m, d) = (num(parts.next()?)?, num(parts.next()?)?, num(parts.next()?)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let mut micros = i128::from(days(y, m, d)) * 86_400_000_000;
    if rest.is_empty() {
        return Some(micros);
    }
    let split = rest.find(['Z', 'z', '+', '-']).unwrap_or(rest.len());
    let (clock, zone) = (rest[..split].trim_end(), &rest[split..]);
    let mut hms = clock.splitn(3, ':');
    let (h, mi) = (num(hms.next()?)?, num(hms.next()?)?);
    let (sec, frac) = match hms.next() {
        Some(s) => match s.split_once('.') {
            Some((s, f)) => (num(s)?, f),
            None => (num(s)?, ""),
        },
        None => (0, ""),
    };
    if h > 24 || mi > 59 || sec > 60 || (!frac.is_empty() && num(frac).is_none()) {
        return None;
    }
    let frac_micros: i64 = format!("{:0<6}", &frac[..frac.len().min(6)]).parse().ok()?;
    micros += i128::from((h * 3600 + mi * 60 + sec) * 1_000_000 + frac_micros);
    if zoned && !zone.is_empty() && !zone.eq_ignore_ascii_case("z") {
        let sign: i128 = if zone.starts_with('-') { -1 } else { 1 };
        let z = &zone[1..];
        let (zh, zm) = match z.split_once(':') {
            Some((h, m)) => (num(h)?, num(m)?),
            None if z.len() == 4 => (num(&z[..2])?, num(&z[2..])?),
            None => (num(z)?, 0),
        };
        micros -= sign * i128::from((zh * 60 + zm) * 60_000_000);
    }
    Some(micros)
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
                match compare(v, v, kind) {
                    None => Err(format!("`{v}` is not {} (column `{column}`)", kind.name())),
                    Some(_) => Ok(()),
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

/// Two values of a column of `kind`; `None` if one is not of that type.
fn compare(a: &str, b: &str, kind: Kind) -> Option<std::cmp::Ordering> {
    match kind {
        Kind::Number => match (a.trim().parse::<i128>(), b.trim().parse::<i128>()) {
            (Ok(x), Ok(y)) => Some(x.cmp(&y)),
            _ => a.trim().parse::<f64>().ok()?.partial_cmp(&b.trim().parse::<f64>().ok()?),
        },
        Kind::Bool => Some(parse_bool(a)?.cmp(&parse_bool(b)?)),
        Kind::TimestampTz => Some(timestamp_micros(a, true)?.cmp(&timestamp_micros(b, true)?)),
        Kind::Timestamp | Kind::Date => Some(timestamp_micros(a, false)?.cmp(&timestamp_micros(b, false)?)),
        Kind::Uuid => Some(uuid::Uuid::parse_str(a.trim()).ok()?.cmp(&uuid::Uuid::parse_str(b.trim()).ok()?)),
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
    fn typed_values_compare_by_their_type_not_their_text() {
        let r = [
            ("at", Some("2024-05-01 14:00:00.5+02"), Kind::TimestampTz),
            ("local", Some("2024-05-01 09:30:00"), Kind::Timestamp),
            ("day", Some("2024-05-01"), Kind::Date),
            ("who", Some("8f4b2c1e-0000-4000-8000-00000000000a"), Kind::Uuid),
            ("big", Some("9007199254740993"), Kind::Number),
        ];
        let yes = |f: &str| Filter::parse(f, None).unwrap().passes(row(&r));
        assert!(yes("at=eq.2024-05-01T12:00:00.500Z"), "the same instant in another zone");
        assert!(yes("at=gt.2024-05-01T11:59:59Z") && yes("at=lt.2024-05-01 13:00:00+00"));
        assert!(!yes("at=gt.2024-05-01T12:00:01Z"), "as text '2024-05-01 14…' > '2024-05-01T12…'");
        assert!(yes("local=lt.2024-05-01T10:00") && yes("local=gte.2024-05-01 09:30"));
        assert!(yes("day=eq.2024-05-01") && yes("day=lt.2024-05-02") && yes("day=in.(2023-01-01,2024-05-01)"));
        assert!(yes("who=eq.8F4B2C1E-0000-4000-8000-00000000000A"), "UUIDs in any case");
        assert!(yes("big=gt.9007199254740992"), "integers beyond f64's 2^53 compare exactly");
        assert!(yes("at=is.not_null") && !yes("at=is.null"));
    }

    #[test]
    fn malformed_filters_say_why() {
        let cols: HashMap<String, String> =
            [("id", "int8"), ("title", "text"), ("done", "bool"), ("at", "timestamptz"), ("who", "uuid")]
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
        assert!(err("at=gt.yesterday").contains("not a timestamp"));
        assert!(err("who=eq.ada").contains("not a UUID"));
        assert!(err("id=in.1,2").contains("needs a list"));
        assert!(err("title=eq.\"open").contains("unterminated quote"));
        assert!(err("title=is.maybe").contains("expected null"));
        assert!(Filter::parse("id=eq.1,title=neq.x", Some(&cols)).is_ok());
    }
}
