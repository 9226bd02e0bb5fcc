//! REST errors raised before any SQL runs, in PostgREST's catalogue
//! (code, HTTP status, message, details, hint). Errors from executing SQL are
//! Postgres errors with their SQLSTATE; the proxy maps those to HTTP.
use serde_json::{json, Value};
use thiserror::Error;

#[derive(Debug, Error, PartialEq)]
pub enum RestError {
    #[error("\"failed to parse {param} parameter ({value})\"")]
    Parse {
        param: String,
        value: String,
        details: String,
    },
    #[error("unknown operator")]
    UnknownOperator { column: String, operator: String },
    #[error("unsupported method")]
    Method { method: String },
    #[error("schema not exposed")]
    Schema {
        schema: String,
        exposed: Vec<String>,
    },
    #[error("table not found")]
    Table { schema: String, table: String },
    #[error("column not found")]
    Column { table: String, column: String },
    #[error("invalid request")]
    InvalidRequest(String),
}

impl RestError {
    pub fn status(&self) -> u16 {
        match self {
            RestError::Parse { .. } | RestError::UnknownOperator { .. } => 400,
            RestError::Method { .. } => 405,
            RestError::Schema { .. } => 406,
            RestError::Table { .. } => 404,
            RestError::Column { .. } => 400,
            RestError::InvalidRequest(_) => 400,
        }
    }

    pub fn body(&self) -> Value {
        let (code, message, details, hint): (&str, String, Option<String>, Option<String>) = match self {
            RestError::Parse { param, value, details } => (
                "PGRST100",
                format!("\"failed to parse {param} parameter ({value})\""),
                Some(details.clone()),
                None,
            ),
            RestError::UnknownOperator { column, operator } => (
                "PGRST100",
                format!("\"failed to parse filter ({operator})\" on column \"{column}\""),
                Some(format!("unknown operator \"{operator}\"")),
                Some("Operators are eq, neq, gt, gte, lt, lte, like, ilike, is, in, optionally prefixed with not.".into()),
            ),
            RestError::Method { method } => {
                ("PGRST117", format!("Unsupported HTTP method: {method}"), None, None)
            }
            RestError::Schema { exposed, .. } => (
                "PGRST106",
                "Invalid schema".to_string(),
                None,
                Some(format!("Only the following schemas are exposed: {}", exposed.join(", "))),
            ),
            RestError::Table { schema, table } => (
                "PGRST205",
                format!("Could not find the table '{schema}.{table}' in the schema cache"),
                None,
                None,
            ),
            RestError::Column { table, column } => (
                "42703",
                format!("column {table}.{column} does not exist"),
                None,
                None,
            ),
            RestError::InvalidRequest(msg) => ("PGRST100", msg.clone(), None, None),
        };
        json!({ "code": code, "message": message, "details": details, "hint": hint })
    }
}
