//! SQL stage: a plan into one SQL text plus text parameters. Identifiers are
//! always quoted; user values only ever travel as `$n` parameters. Pure.
use crate::filter::{IsValue, Operand, Operator};
use crate::rest::plan::{Projection, ReadPlan};

#[derive(Debug, PartialEq)]
pub struct Query {
    pub sql: String,
    pub params: Vec<String>,
}

pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A Postgres array literal of text elements, each quoted and escaped.
fn array_literal(items: &[String]) -> String {
    let quoted: Vec<String> = items
        .iter()
        .map(|i| format!("\"{}\"", i.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    format!("{{{}}}", quoted.join(","))
}

pub fn read(plan: &ReadPlan) -> Query {
    let mut params = Vec::new();
    let mut bind = |value: String| {
        params.push(value);
        format!("${}", params.len())
    };
    let table = format!("{}.{}", ident(&plan.schema), ident(&plan.table));

    let columns: Vec<String> = plan
        .projection
        .iter()
        .map(|p| match p {
            Projection::Star => format!("{table}.*"),
            Projection::Column { name, alias, cast } => {
                let mut expr = ident(name);
                if let Some(cast) = cast {
                    expr = format!("{expr}::{}", ident(cast));
                }
                format!("{expr} AS {}", ident(alias.as_deref().unwrap_or(name)))
            }
        })
        .collect();

    let mut conditions = Vec::new();
    for f in &plan.filters {
        let col = ident(&f.column);
        let c = &f.condition;
        let expr = match (&c.operator, &c.operand) {
            (Operator::Is, Operand::Is(v)) => {
                let rhs = match v {
                    IsValue::Null => "NULL",
                    IsValue::NotNull => "NOT NULL",
                    IsValue::True => "TRUE",
                    IsValue::False => "FALSE",
                    IsValue::Unknown => "UNKNOWN",
                };
                format!("{col} IS {rhs}")
            }
            (Operator::In, Operand::List(items)) => {
                let p = bind(array_literal(items));
                format!("{col} = ANY({p}::{}[])", f.type_name)
            }
            (Operator::Like | Operator::Ilike, Operand::Scalar(v)) => {
                let p = bind(v.clone());
                format!("{col}::text {} {p}", c.operator.sql())
            }
            (op, Operand::Scalar(v)) => {
                let p = bind(v.clone());
                format!("{col} {} {p}::{}", op.sql(), f.type_name)
            }
            // The parser pairs operators with their operand kinds.
            (_, _) => unreachable!("operand kind does not match operator"),
        };
        conditions.push(if c.negated {
            format!("NOT ({expr})")
        } else {
            expr
        });
    }

    let mut sql = format!("SELECT {} FROM {table}", columns.join(", "));
    if !conditions.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conditions.join(" AND "));
    }
    if !plan.order.is_empty() {
        let terms: Vec<String> = plan
            .order
            .iter()
            .map(|o| {
                let mut t = ident(&o.column);
                t.push_str(if o.descending { " DESC" } else { " ASC" });
                match o.nulls_first {
                    Some(true) => t.push_str(" NULLS FIRST"),
                    Some(false) => t.push_str(" NULLS LAST"),
                    None => {}
                }
                t
            })
            .collect();
        sql.push_str(" ORDER BY ");
        sql.push_str(&terms.join(", "));
    }
    if let Some(limit) = plan.limit {
        let p = bind(limit.to_string());
        sql.push_str(&format!(" LIMIT {p}::int8"));
    }
    if let Some(offset) = plan.offset {
        let p = bind(offset.to_string());
        sql.push_str(&format!(" OFFSET {p}::int8"));
    }
    let sql = format!("SELECT coalesce(json_agg(_fb_t), '[]')::text, count(*) FROM ({sql}) _fb_t");
    Query { sql, params }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::parse_condition;
    use crate::rest::plan::PlannedFilter;
    use crate::rest::request::OrderTerm;

    #[test]
    fn builds_parameterised_sql() {
        let plan = ReadPlan {
            schema: "public".into(),
            table: "to\"dos".into(),
            projection: vec![Projection::Column {
                name: "id".into(),
                alias: Some("key".into()),
                cast: None,
            }],
            filters: vec![
                PlannedFilter {
                    column: "id".into(),
                    type_name: "integer".into(),
                    condition: parse_condition("gt.1").unwrap(),
                },
                PlannedFilter {
                    column: "title".into(),
                    type_name: "text".into(),
                    condition: parse_condition("in.(a,\"b\\\"c\")").unwrap(),
                },
            ],
            order: vec![OrderTerm {
                column: "id".into(),
                descending: true,
                nulls_first: Some(false),
            }],
            limit: Some(5),
            offset: None,
        };
        let q = read(&plan);
        assert_eq!(
            q.sql,
            "SELECT coalesce(json_agg(_fb_t), '[]')::text, count(*) FROM (SELECT \"id\" AS \"key\" FROM \"public\".\"to\"\"dos\" \
             WHERE \"id\" > $1::integer AND \"title\" = ANY($2::text[]) ORDER BY \"id\" DESC NULLS LAST LIMIT $3::int8) _fb_t"
        );
        assert_eq!(
            q.params,
            vec![
                "1".to_string(),
                "{\"a\",\"b\\\"c\"}".to_string(),
                "5".to_string()
            ]
        );
    }
}
