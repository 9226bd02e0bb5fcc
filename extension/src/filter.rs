//! The one filter grammar (`col=op.value`), shared by REST and, later, the
//! realtime and GraphQL filters. Pure: no SPI, unit-tested.

#[derive(Debug, Clone, PartialEq)]
pub enum Operator {
    Eq,
    Neq,
    Gt,
    Gte,
    Lt,
    Lte,
    Like,
    Ilike,
    Is,
    In,
}

impl Operator {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "eq" => Self::Eq,
            "neq" => Self::Neq,
            "gt" => Self::Gt,
            "gte" => Self::Gte,
            "lt" => Self::Lt,
            "lte" => Self::Lte,
            "like" => Self::Like,
            "ilike" => Self::Ilike,
            "is" => Self::Is,
            "in" => Self::In,
            _ => return None,
        })
    }

    /// The SQL comparison operator for the binary operators.
    pub fn sql(&self) -> &'static str {
        match self {
            Self::Eq => "=",
            Self::Neq => "<>",
            Self::Gt => ">",
            Self::Gte => ">=",
            Self::Lt => "<",
            Self::Lte => "<=",
            Self::Like => "LIKE",
            Self::Ilike => "ILIKE",
            Self::Is => "IS",
            Self::In => "= ANY",
        }
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

#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    Scalar(String),
    List(Vec<String>),
    Is(IsValue),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub negated: bool,
    pub operator: Operator,
    pub operand: Operand,
}

#[derive(Debug, PartialEq)]
pub enum FilterError {
    UnknownOperator(String),
    Malformed(String),
}

/// Parses the value side of `col=[not.]op.value`.
pub fn parse_condition(input: &str) -> Result<Condition, FilterError> {
    let (negated, rest) = match input.strip_prefix("not.") {
        Some(rest) => (true, rest),
        None => (false, input),
    };
    let (op, value) = rest.split_once('.').ok_or_else(|| {
        FilterError::Malformed(format!("expected operator.value, got \"{input}\""))
    })?;
    let operator =
        Operator::parse(op).ok_or_else(|| FilterError::UnknownOperator(op.to_string()))?;
    let operand = match operator {
        Operator::Is => Operand::Is(match value.to_ascii_lowercase().as_str() {
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
        Operator::In => Operand::List(parse_list(value)?),
        Operator::Like | Operator::Ilike => Operand::Scalar(value.replace('*', "%")),
        _ => Operand::Scalar(value.to_string()),
    };
    Ok(Condition {
        negated,
        operator,
        operand,
    })
}

/// `(a,"b,c",d)` → `["a", "b,c", "d"]`. Double quotes protect commas and
/// parentheses; `\"` and `\\` escape inside quotes.
pub fn parse_list(value: &str) -> Result<Vec<String>, FilterError> {
    let inner = value
        .strip_prefix('(')
        .and_then(|v| v.strip_suffix(')'))
        .ok_or_else(|| {
            FilterError::Malformed(format!("expected a parenthesised list, got \"{value}\""))
        })?;
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
        return Err(FilterError::Malformed(format!(
            "unterminated quote in \"{value}\""
        )));
    }
    items.push(current);
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_binary_operators() {
        let c = parse_condition("eq.5").unwrap();
        assert_eq!(
            c,
            Condition {
                negated: false,
                operator: Operator::Eq,
                operand: Operand::Scalar("5".into())
            }
        );
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
    fn parses_is_and_in() {
        assert_eq!(
            parse_condition("is.null").unwrap().operand,
            Operand::Is(IsValue::Null)
        );
        assert_eq!(
            parse_condition(r#"in.(1,"a,b",3)"#).unwrap().operand,
            Operand::List(vec!["1".into(), "a,b".into(), "3".into()])
        );
        assert_eq!(
            parse_condition("in.()").unwrap().operand,
            Operand::List(vec![])
        );
    }

    #[test]
    fn unknown_operators_are_errors_not_eq() {
        assert_eq!(
            parse_condition("equals.5"),
            Err(FilterError::UnknownOperator("equals".into()))
        );
        assert!(matches!(
            parse_condition("5"),
            Err(FilterError::Malformed(_))
        ));
        assert!(matches!(
            parse_condition("is.maybe"),
            Err(FilterError::Malformed(_))
        ));
        assert!(matches!(
            parse_condition("in.(1,2"),
            Err(FilterError::Malformed(_))
        ));
    }
}
