//! The one filter grammar, shared by REST and, later, the realtime and
//! GraphQL filters: leaf conditions (`col=[not.]op[(any|all)].value`) and
//! logic trees (`or=(a.eq.1,and(b.gt.2,c.is.null))`). Pure: no SPI.

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Operator {
    Eq,
    Neq,
    Gt,
    Gte,
    Lt,
    Lte,
    Like,
    Ilike,
    Match,
    Imatch,
    Is,
    IsDistinct,
    In,
    Contains,
    ContainedIn,
    Overlaps,
    StrictlyLeft,
    StrictlyRight,
    NotExtendsRight,
    NotExtendsLeft,
    Adjacent,
    Fts,
    Plfts,
    Phfts,
    Wfts,
}

impl Operator {
    fn parse(s: &str) -> Option<Self> {
        use Operator::*;
        Some(match s {
            "eq" => Eq,
            "neq" => Neq,
            "gt" => Gt,
            "gte" => Gte,
            "lt" => Lt,
            "lte" => Lte,
            "like" => Like,
            "ilike" => Ilike,
            "match" => Match,
            "imatch" => Imatch,
            "is" => Is,
            "isdistinct" => IsDistinct,
            "in" => In,
            "cs" => Contains,
            "cd" => ContainedIn,
            "ov" => Overlaps,
            "sl" => StrictlyLeft,
            "sr" => StrictlyRight,
            "nxr" => NotExtendsRight,
            "nxl" => NotExtendsLeft,
            "adj" => Adjacent,
            "fts" => Fts,
            "plfts" => Plfts,
            "phfts" => Phfts,
            "wfts" => Wfts,
            _ => return None,
        })
    }

    /// The SQL operator for the binary operators.
    pub fn sql(&self) -> &'static str {
        use Operator::*;
        match self {
            Eq => "=",
            Neq => "<>",
            Gt => ">",
            Gte => ">=",
            Lt => "<",
            Lte => "<=",
            Like => "LIKE",
            Ilike => "ILIKE",
            Match => "~",
            Imatch => "~*",
            Is => "IS",
            IsDistinct => "IS DISTINCT FROM",
            In => "= ANY",
            Contains => "@>",
            ContainedIn => "<@",
            Overlaps => "&&",
            StrictlyLeft => "<<",
            StrictlyRight => ">>",
            NotExtendsRight => "&<",
            NotExtendsLeft => "&>",
            Adjacent => "-|-",
            Fts | Plfts | Phfts | Wfts => "@@",
        }
    }

    /// The tsquery constructor of a full-text operator.
    pub fn tsquery_fn(&self) -> Option<&'static str> {
        match self {
            Operator::Fts => Some("to_tsquery"),
            Operator::Plfts => Some("plainto_tsquery"),
            Operator::Phfts => Some("phraseto_tsquery"),
            Operator::Wfts => Some("websearch_to_tsquery"),
            _ => None,
        }
    }

    /// Operators whose value is compared as text, whatever the column type.
    pub fn is_text_match(&self) -> bool {
        matches!(self, Operator::Like | Operator::Ilike | Operator::Match | Operator::Imatch)
    }

    fn allows_quantifier(&self) -> bool {
        use Operator::*;
        matches!(self, Eq | Neq | Gt | Gte | Lt | Lte | Like | Ilike | Match | Imatch)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum IsValue {
    Null,
    NotNull,
    True,
    False,
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Quantifier {
    Any,
    All,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    Scalar(String),
    List(Vec<String>),
    Is(IsValue),
    /// `op(any).{a,b}` / `op(all).{a,b}`: one comparison against each element.
    Quantified(Quantifier, Vec<String>),
    /// Full-text search with an optional language: `fts(english).cat`.
    Text {
        language: Option<String>,
        query: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub negated: bool,
    pub operator: Operator,
    pub operand: Operand,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LogicOp {
    And,
    Or,
}

/// A column reference: a name and an optional JSON path (`data->a->>b`).
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    pub name: String,
    pub json_path: Vec<JsonStep>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct JsonStep {
    /// `->>` (text) rather than `->` (json).
    pub as_text: bool,
    pub key: String,
}

impl Field {
    pub fn parse(s: &str) -> Result<Field, FilterError> {
        let mut parts = Vec::new();
        let mut rest = s;
        let name_end = rest.find("->").unwrap_or(rest.len());
        let name = rest[..name_end].trim().to_string();
        rest = &rest[name_end..];
        while !rest.is_empty() {
            let as_text = rest.starts_with("->>");
            rest = &rest[if as_text { 3 } else { 2 }..];
            let end = rest.find("->").unwrap_or(rest.len());
            let key = &rest[..end];
            if key.is_empty() {
                return Err(FilterError::Malformed(format!("empty JSON path step in \"{s}\"")));
            }
            parts.push(JsonStep { as_text, key: key.to_string() });
            rest = &rest[end..];
        }
        if name.is_empty() {
            return Err(FilterError::Malformed(format!("empty column name in \"{s}\"")));
        }
        Ok(Field { name, json_path: parts })
    }

    /// The key this field gets in a JSON result: the last path step, or the name.
    pub fn output_name(&self) -> &str {
        self.json_path.last().map(|s| s.key.as_str()).unwrap_or(&self.name)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    Condition { field: Field, condition: Condition },
    Logic { op: LogicOp, negated: bool, children: Vec<Filter> },
}

#[derive(Debug, PartialEq)]
pub enum FilterError {
    UnknownOperator(String),
    Malformed(String),
}

/// Parses the value side of `col=[not.]op[(any|all)].value`.
pub fn parse_condition(input: &str) -> Result<Condition, FilterError> {
    let (negated, rest) = match input.strip_prefix("not.") {
        Some(rest) => (true, rest),
        None => (false, input),
    };
    let (op, value) = rest
        .split_once('.')
        .ok_or_else(|| FilterError::Malformed(format!("expected operator.value, got \"{input}\"")))?;
    let (op_name, modifier) = match op.split_once('(') {
        Some((name, m)) => {
            let m = m.strip_suffix(')').ok_or_else(|| FilterError::Malformed(format!("unclosed \"(\" in \"{op}\"")))?;
            (name, Some(m))
        }
        None => (op, None),
    };
    let operator = Operator::parse(op_name).ok_or_else(|| FilterError::UnknownOperator(op_name.to_string()))?;
    let operand = match (operator, modifier) {
        (o, Some(lang)) if o.tsquery_fn().is_some() => {
            Operand::Text { language: Some(lang.to_string()), query: value.into() }
        }
        (o, None) if o.tsquery_fn().is_some() => Operand::Text { language: None, query: value.into() },
        (o, Some(q @ ("any" | "all"))) if o.allows_quantifier() => {
            let quantifier = if q == "any" { Quantifier::Any } else { Quantifier::All };
            let items = parse_braced_list(value)?;
            let items = if o == Operator::Like || o == Operator::Ilike {
                items.into_iter().map(|i| i.replace('*', "%")).collect()
            } else {
                items
            };
            Operand::Quantified(quantifier, items)
        }
        (_, Some(m)) => {
            return Err(FilterError::Malformed(format!("modifier \"({m})\" is not valid for \"{op_name}\"")))
        }
        (Operator::Is, None) => Operand::Is(match value.to_ascii_lowercase().as_str() {
            "null" => IsValue::Null,
            "not_null" => IsValue::NotNull,
            "true" => IsValue::True,
            "false" => IsValue::False,
            "unknown" => IsValue::Unknown,
            other => {
                return Err(FilterError::Malformed(format!(
                    "is.{other}: expected null, not_null, true, false or unknown"
                )))
            }
        }),
        (Operator::In, None) => Operand::List(parse_list(value)?),
        (Operator::Like | Operator::Ilike, None) => Operand::Scalar(value.replace('*', "%")),
        (_, None) => Operand::Scalar(value.to_string()),
    };
    Ok(Condition { negated, operator, operand })
}

/// `{a,b}` (the any/all form) → items.
fn parse_braced_list(value: &str) -> Result<Vec<String>, FilterError> {
    let inner = value
        .strip_prefix('{')
        .and_then(|v| v.strip_suffix('}'))
        .ok_or_else(|| FilterError::Malformed(format!("expected a {{…}} list, got \"{value}\"")))?;
    split_items(inner, value)
}

/// `(a,"b,c",d)` → `["a", "b,c", "d"]`. Double quotes protect commas and
/// parentheses; `\"` and `\\` escape inside quotes.
pub fn parse_list(value: &str) -> Result<Vec<String>, FilterError> {
    let inner = value
        .strip_prefix('(')
        .and_then(|v| v.strip_suffix(')'))
        .ok_or_else(|| FilterError::Malformed(format!("expected a parenthesised list, got \"{value}\"")))?;
    split_items(inner, value)
}

fn split_items(inner: &str, whole: &str) -> Result<Vec<String>, FilterError> {
    let mut items = Vec::new();
    if inner.is_empty() {
        return Ok(items);
    }
    let mut current = String::new();
    let mut chars = inner.chars();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match c {
            '"' => quoted = !quoted,
            '\\' if quoted => {
                if let Some(next) = chars.next() {
                    current.push(next);
                }
            }
            ',' if !quoted => items.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    if quoted {
        return Err(FilterError::Malformed(format!("unterminated quote in \"{whole}\"")));
    }
    items.push(current);
    Ok(items)
}

/// Bounds that keep hostile logic trees cheap to parse and plan.
pub const MAX_LOGIC_DEPTH: usize = 16;
pub const MAX_CONDITIONS: usize = 256;

/// Parses the value of `or=`/`and=` (`(…)`), given the operator and whether
/// the key was negated (`not.or=`).
pub fn parse_logic(op: LogicOp, negated: bool, value: &str) -> Result<Filter, FilterError> {
    let mut count = 0;
    parse_logic_at(op, negated, value, 0, &mut count)
}

fn parse_logic_at(
    op: LogicOp,
    negated: bool,
    value: &str,
    depth: usize,
    count: &mut usize,
) -> Result<Filter, FilterError> {
    if depth >= MAX_LOGIC_DEPTH {
        return Err(FilterError::Malformed(format!("logic trees nest at most {MAX_LOGIC_DEPTH} levels")));
    }
    let inner = value
        .strip_prefix('(')
        .and_then(|v| v.strip_suffix(')'))
        .ok_or_else(|| FilterError::Malformed(format!("expected (…) after and/or, got \"{value}\"")))?;
    let mut children = Vec::new();
    for item in split_top_level(inner)? {
        *count += 1;
        if *count > MAX_CONDITIONS {
            return Err(FilterError::Malformed(format!("at most {MAX_CONDITIONS} conditions per request")));
        }
        let (neg, body) = match item.strip_prefix("not.") {
            Some(b) => (true, b),
            None => (false, item.as_str()),
        };
        let nested =
            [("and(", LogicOp::And), ("or(", LogicOp::Or)].into_iter().find(|(prefix, _)| body.starts_with(prefix));
        if let Some((prefix, nested_op)) = nested {
            children.push(parse_logic_at(nested_op, neg, &body[prefix.len() - 1..], depth + 1, count)?);
            continue;
        }
        // `field.op.value`: the field ends at the first '.' that is not part of a JSON arrow.
        let dot = item
            .find('.')
            .ok_or_else(|| FilterError::Malformed(format!("expected column.operator.value, got \"{item}\"")))?;
        let field = Field::parse(&item[..dot])?;
        let condition = parse_condition(&item[dot + 1..])?;
        children.push(Filter::Condition { field, condition });
    }
    if children.is_empty() {
        return Err(FilterError::Malformed("empty and/or".into()));
    }
    Ok(Filter::Logic { op, negated, children })
}

/// Splits on commas that are outside parentheses, braces and double quotes.
fn split_top_level(s: &str) -> Result<Vec<String>, FilterError> {
    let mut items = Vec::new();
    let mut depth = 0i32;
    let mut quoted = false;
    let mut current = String::new();
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            current.push(c);
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted => {
                escaped = true;
                current.push(c);
            }
            '"' => {
                quoted = !quoted;
                current.push(c);
            }
            '(' | '{' if !quoted => {
                depth += 1;
                current.push(c);
            }
            ')' | '}' if !quoted => {
                depth -= 1;
                if depth < 0 {
                    return Err(FilterError::Malformed(format!("unbalanced parentheses in \"{s}\"")));
                }
                current.push(c);
            }
            ',' if !quoted && depth == 0 => items.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    if quoted || depth != 0 {
        return Err(FilterError::Malformed(format!("unbalanced quotes or parentheses in \"{s}\"")));
    }
    if !current.is_empty() {
        items.push(current);
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_binary_operators() {
        let c = parse_condition("eq.5").unwrap();
        assert_eq!(c, Condition { negated: false, operator: Operator::Eq, operand: Operand::Scalar("5".into()) });
        let c = parse_condition("not.gte.a.b").unwrap();
        assert!(c.negated);
        assert_eq!(c.operand, Operand::Scalar("a.b".into()));
    }

    #[test]
    fn like_uses_star_as_wildcard() {
        let c = parse_condition("ilike.*oo*").unwrap();
        assert_eq!(c.operand, Operand::Scalar("%oo%".into()));
    }

    #[test]
    fn parses_is_in_quantifiers_and_fts() {
        assert_eq!(parse_condition("is.null").unwrap().operand, Operand::Is(IsValue::Null));
        assert_eq!(
            parse_condition(r#"in.(1,"a,b",3)"#).unwrap().operand,
            Operand::List(vec!["1".into(), "a,b".into(), "3".into()])
        );
        assert_eq!(parse_condition("in.()").unwrap().operand, Operand::List(vec![]));
        assert_eq!(
            parse_condition("like(any).{a*,*b}").unwrap().operand,
            Operand::Quantified(Quantifier::Any, vec!["a%".into(), "%b".into()])
        );
        assert_eq!(
            parse_condition("fts(english).fat & cat").unwrap().operand,
            Operand::Text { language: Some("english".into()), query: "fat & cat".into() }
        );
        assert!(matches!(parse_condition("is(any).{1}"), Err(FilterError::Malformed(_))));
    }

    #[test]
    fn unknown_operators_are_errors_not_eq() {
        assert_eq!(parse_condition("equals.5"), Err(FilterError::UnknownOperator("equals".into())));
        assert!(matches!(parse_condition("5"), Err(FilterError::Malformed(_))));
        assert!(matches!(parse_condition("is.maybe"), Err(FilterError::Malformed(_))));
        assert!(matches!(parse_condition("in.(1,2"), Err(FilterError::Malformed(_))));
    }

    #[test]
    fn parses_fields_with_json_paths() {
        let f = Field::parse("data->a->>b").unwrap();
        assert_eq!(f.name, "data");
        assert_eq!(f.json_path.len(), 2);
        assert!(f.json_path[1].as_text);
        assert_eq!(f.output_name(), "b");
        assert!(Field::parse("data->").is_err());
    }

    #[test]
    fn parses_nested_logic() {
        let f =
            parse_logic(LogicOp::Or, false, "(id.eq.1,and(name.like.*a*,done.not.is.true),data->>k.in.(\"x,y\",z))")
                .unwrap();
        let Filter::Logic { op, children, .. } = f else { panic!() };
        assert_eq!(op, LogicOp::Or);
        assert_eq!(children.len(), 3);
        assert!(matches!(&children[1], Filter::Logic { op: LogicOp::And, .. }));
        let Filter::Condition { field, condition } = &children[2] else { panic!() };
        assert_eq!(field.json_path[0].key, "k");
        assert_eq!(condition.operand, Operand::List(vec!["x,y".into(), "z".into()]));
    }

    #[test]
    fn hostile_logic_is_bounded() {
        let deep = format!("{}id.eq.1{}", "(or(".repeat(40), "))".repeat(40));
        assert!(parse_logic(LogicOp::Or, false, &deep[..deep.len() - 1]).is_err());
        let wide = format!("({})", vec!["id.eq.1"; 1000].join(","));
        assert!(parse_logic(LogicOp::And, false, &wide).is_err());
        assert!(parse_logic(LogicOp::And, false, "(id.eq.1").is_err());
        assert!(parse_logic(LogicOp::And, false, "()").is_err());
    }
}
