//! REST errors raised before or instead of SQL, in PostgREST's catalogue
//! (code, HTTP status, message, details, hint). Errors from executing SQL are
//! Postgres errors with their SQLSTATE; the proxy maps those to HTTP.
use serde_json::{json, Value};

use crate::catalog::RelationshipSummary;
use thiserror::Error;

/// `PGRST200`'s particulars, boxed: errors travel in every `Result` of
/// the planner, whose size the largest variant sets.
#[derive(Debug, PartialEq)]
pub struct MissingRelationship {
    pub schema: String,
    pub table: String,
    pub target: String,
    pub hint: Option<String>,
    /// PostgREST's "Perhaps you meant …" hint.
    pub suggestion: Option<String>,
}

/// How a POST to a function carried its arguments (PGRST202's wording
/// depends on it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CallBody {
    Json,
    Text,
    Xml,
    Bytea,
}

/// What PGRST202 says: the function searched for, the argument names given
/// (sorted), how the body carried them (`None` for GET), a close candidate.
#[derive(Debug, PartialEq)]
pub struct MissingFunction {
    pub schema: String,
    pub name: String,
    pub args: Vec<String>,
    pub body: Option<CallBody>,
    pub hint: Option<String>,
}

#[derive(Debug, Error, PartialEq)]
pub enum RestError {
    #[error("failed to parse {param}")]
    Parse { param: String, value: String, details: String },
    #[error("unknown operator")]
    UnknownOperator { column: String, operator: String },
    #[error("invalid request body")]
    InvalidBody(String),
    #[error("range not satisfiable")]
    Range(String),
    #[error("unsupported method")]
    Method { method: String },
    #[error("schema not exposed")]
    Schema { schema: String, exposed: Vec<String> },
    #[error("unsupported media type")]
    ContentType(String),
    #[error("not acceptable")]
    Accept(String),
    #[error("filter on an embedded resource that is not selected")]
    EmbedFilter(String),
    #[error("response.headers is not a JSON array of one-key objects")]
    GucHeaders,
    #[error("response.status is not a status code")]
    GucStatus,
    #[error("related order on an embed that is not to-one")]
    RelatedOrder { origin: String, target: String },
    #[error("singular response")]
    Singular { rows: i64 },
    #[error("invalid PUT")]
    Put(String),
    #[error("PUT payload and filter differ")]
    PutMismatch,
    #[error("invalid preferences")]
    InvalidPreferences(Vec<String>),
    #[error("max-affected exceeded")]
    MaxAffected { affected: i64, max: i64 },
    #[error("relationship not found")]
    NoRelationship(Box<MissingRelationship>),
    #[error("ambiguous relationship")]
    AmbiguousRelationship { table: String, target: String, candidates: Vec<RelationshipSummary> },
    /// PGRST202; boxed, so that every `Result` of the engine stays small.
    #[error("function not found")]
    Function(Box<MissingFunction>),
    /// PGRST203, with the candidates as `schema.name(arg => type, …)`.
    #[error("ambiguous function")]
    AmbiguousFunction { candidates: Vec<String> },
    /// PGRST128: `max-affected` with `handling=strict` on a function that
    /// does not return a set.
    #[error("max-affected on a function not returning a set")]
    MaxAffectedRpc,
    #[error("column not in payload target")]
    PayloadColumn { table: String, column: String },
    #[error("table not found")]
    Table { schema: String, table: String, hint: Option<String> },
    #[error("column not found")]
    Column { table: String, column: String },
    #[error("precondition failed")]
    PreconditionFailed,
    #[error("idempotency key reused")]
    IdempotencyMismatch,
    #[error("limit without order")]
    LimitWithoutOrder,
    #[error("aggregates disabled")]
    AggregatesDisabled,
    #[error("invalid request")]
    InvalidRequest(String),
    #[error("not implemented")]
    NotImplemented(String),
}

impl RestError {
    pub fn status(&self) -> u16 {
        use RestError::*;
        match self {
            Parse { .. } | UnknownOperator { .. } | InvalidRequest(_) | EmbedFilter(_) | RelatedOrder { .. } => 400,
            LimitWithoutOrder | AggregatesDisabled | NotImplemented(_) => 400,
            InvalidBody(_) | InvalidPreferences(_) | MaxAffected { .. } | MaxAffectedRpc | PutMismatch => 400,
            NoRelationship(_) | PayloadColumn { .. } | Column { .. } => 400,
            Range(_) => 416,
            Method { .. } | Put(_) => 405,
            Schema { .. } | Accept(_) | Singular { .. } => 406,
            ContentType(_) => 415,
            AmbiguousRelationship { .. } | AmbiguousFunction { .. } => 300,
            Table { .. } | Function(_) => 404,
            IdempotencyMismatch => 422,
            PreconditionFailed => 412,
            GucHeaders | GucStatus => 500,
        }
    }

    pub fn body(&self) -> Value {
        use RestError::*;
        let none = || None::<String>;
        let (code, message, details, hint): (&str, String, Option<String>, Option<String>) = match self {
            Parse { param, value, details } => (
                "PGRST100",
                format!("\"failed to parse {param} parameter ({value})\""),
                Some(details.clone()),
                none(),
            ),
            UnknownOperator { column, operator } => (
                "PGRST100",
                format!("\"failed to parse filter ({operator})\" on column \"{column}\""),
                Some(format!("unknown operator \"{operator}\"")),
                Some("Operators: eq, neq, gt, gte, lt, lte, like, ilike, match, imatch, is, isdistinct, in, cs, cd, ov, sl, sr, nxl, nxr, adj, fts, plfts, phfts, wfts; optionally not.".into()),
            ),
            InvalidBody(msg) => ("PGRST102", msg.clone(), none(), none()),
            Range(msg) => ("PGRST103", "Requested range not satisfiable".into(), Some(msg.clone()), none()),
            Method { method } => ("PGRST117", format!("Unsupported HTTP method: {method}"), none(), none()),
            Schema { exposed, .. } => (
                "PGRST106",
                "Invalid schema".into(),
                none(),
                Some(format!("Only the following schemas are exposed: {}", exposed.join(", "))),
            ),
            ContentType(ct) => ("PGRST107", format!("Content-Type not acceptable: {ct}"), none(), none()),
            Accept(a) => ("PGRST107", format!("None of these media types are available: {a}"), none(), none()),
            EmbedFilter(name) => (
                "PGRST108",
                format!("'{name}' is not an embedded resource in this request"),
                none(),
                Some(format!("Verify that '{name}' is included in the 'select' query parameter.")),
            ),
            GucHeaders => (
                "PGRST111",
                "response.headers guc must be a JSON array composed of objects with a single key and a string value"
                    .into(),
                none(),
                none(),
            ),
            GucStatus => ("PGRST112", "response.status guc must be a valid status code".into(), none(), none()),
            RelatedOrder { origin, target } => (
                "PGRST118",
                format!("A related order on '{target}' is not possible"),
                Some(format!("'{origin}' and '{target}' do not form a many-to-one or one-to-one relationship")),
                none(),
            ),
            Singular { rows } => (
                "PGRST116",
                "Cannot coerce the result to a single JSON object".into(),
                Some(format!("The result contains {rows} rows")),
                none(),
            ),
            Put(msg) => ("PGRST105", msg.clone(), none(), none()),
            PutMismatch => ("PGRST115", "Payload values do not match URL in primary key column(s)".into(), none(), none()),
            InvalidPreferences(p) => (
                "PGRST122",
                "Invalid preferences given with handling=strict".into(),
                Some(format!("Invalid preferences: {}", p.join(", "))),
                none(),
            ),
            MaxAffected { affected, .. } => (
                "PGRST124",
                "Query result exceeds max-affected preference constraint".into(),
                Some(format!("The query affects {affected} rows")),
                none(),
            ),
            MaxAffectedRpc => (
                "PGRST128",
                "Function must return SETOF or TABLE when max-affected preference is used with handling=strict".into(),
                none(),
                none(),
            ),
            NoRelationship(missing) => {
                let MissingRelationship { schema, table, target, hint, suggestion } = &**missing;
                (
                "PGRST200",
                format!("Could not find a relationship between '{table}' and '{target}' in the schema cache"),
                Some(format!(
                    "Searched for a foreign key relationship between '{table}' and '{target}'{} in the schema '{schema}', but no matches were found.",
                    hint.as_ref().map(|h| format!(" using the hint '{h}'")).unwrap_or_default()
                )),
                suggestion.clone(),
            )
            }
            AmbiguousRelationship { table, target, candidates } => {
                // `details` is an array of objects here, as PostgREST sends it.
                let details: Vec<Value> = candidates
                    .iter()
                    .map(|c| json!({"cardinality": c.cardinality, "embedding": c.embedding, "relationship": c.relationship}))
                    .collect();
                let hints: Vec<String> = candidates.iter().map(|c| format!("'{}'", c.hint)).collect();
                return json!({
                    "code": "PGRST201",
                    "message": format!("Could not embed because more than one relationship was found for '{table}' and '{target}'"),
                    "details": details,
                    "hint": format!("Try changing '{target}' to one of the following: {}. Find the desired relationship in the 'details' key.", hints.join(", ")),
                });
            }
            Function(missing) => {
                let MissingFunction { schema, name, args, body, hint } = missing.as_ref();
                // PostgREST's wording (Error.hs, NoRpc).
                let raw = matches!(body, Some(CallBody::Text | CallBody::Xml | CallBody::Bytea));
                let listed = if args.is_empty() { " without parameters".to_string() } else { format!("({})", args.join(", ")) };
                let with = if args.is_empty() {
                    " without parameters".to_string()
                } else {
                    format!(" with parameter{} {}", if args.len() > 1 { "s" } else { "" }, args.join(", "))
                };
                let searched = match body {
                    Some(CallBody::Text) => " with a single unnamed text parameter".to_string(),
                    Some(CallBody::Xml) => " with a single unnamed xml parameter".to_string(),
                    Some(CallBody::Bytea) => " with a single unnamed bytea parameter".to_string(),
                    Some(CallBody::Json) => format!("{with} or with a single unnamed json/jsonb parameter"),
                    None => with,
                };
                (
                    "PGRST202",
                    format!("Could not find the function {schema}.{name}{} in the schema cache", if raw { "" } else { &listed }),
                    Some(format!("Searched for the function {schema}.{name}{searched}, but no matches were found in the schema cache.")),
                    if raw { None } else { hint.clone() },
                )
            }
            AmbiguousFunction { candidates } => (
                "PGRST203",
                format!("Could not choose the best candidate function between: {}", candidates.join(", ")),
                none(),
                Some("Try renaming the parameters or the function itself in the database so function overloading can be resolved".into()),
            ),
            PayloadColumn { table, column } => (
                "PGRST204",
                format!("Could not find the '{column}' column of '{table}' in the schema cache"),
                none(),
                none(),
            ),
            Table { schema, table, hint } => (
                "PGRST205",
                format!("Could not find the table '{schema}.{table}' in the schema cache"),
                none(),
                hint.clone(),
            ),
            Column { table, column } => ("42703", format!("column {table}.{column} does not exist"), none(), none()),
            PreconditionFailed => (
                "FB020",
                "The rows changed since the ETag given in If-Match was issued".into(),
                none(),
                Some("Read the rows again (GET with the same filters) and retry with the new ETag.".into()),
            ),
            IdempotencyMismatch => (
                "FB021",
                "Idempotency-Key was already used with a different request".into(),
                none(),
                Some("Use a new key for a new request; a retry must repeat the request exactly.".into()),
            ),
            LimitWithoutOrder => (
                "PGRST109",
                "A 'limit' was applied without an explicit 'order'".into(),
                none(),
                Some("Apply an 'order' using unique column(s)".into()),
            ),
            AggregatesDisabled => ("PGRST123", "Use of aggregate functions is not allowed".into(), none(), none()),
            InvalidRequest(msg) => ("PGRST100", msg.clone(), none(), none()),
            NotImplemented(what) => ("PGRST127", "Feature not implemented".into(), Some(what.clone()), none()),
        };
        json!({ "code": code, "message": message, "details": details, "hint": hint })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PostgREST's wording (Error.hs), which apps and snapshots compare.
    #[test]
    fn function_errors_speak_postgrest() {
        let missing = |args: &[&str], body| {
            RestError::Function(Box::new(MissingFunction {
                schema: "public".into(),
                name: "f".into(),
                args: args.iter().map(|a| a.to_string()).collect(),
                body,
                hint: Some("Perhaps you meant to call the function public.g".into()),
            }))
        };
        let b = missing(&["a", "b"], Some(CallBody::Json)).body();
        assert_eq!(b["message"], "Could not find the function public.f(a, b) in the schema cache");
        assert_eq!(
            b["details"],
            "Searched for the function public.f with parameters a, b or with a single unnamed json/jsonb parameter, but no matches were found in the schema cache."
        );
        assert_eq!(b["hint"], "Perhaps you meant to call the function public.g");
        let b = missing(&[], None).body();
        assert_eq!(b["message"], "Could not find the function public.f without parameters in the schema cache");
        let b = missing(&[], Some(CallBody::Bytea)).body();
        assert_eq!(b["message"], "Could not find the function public.f in the schema cache");
        assert_eq!(b["hint"], Value::Null);
        let b =
            RestError::AmbiguousFunction { candidates: vec!["public.f()".into(), "public.f(a => text)".into()] }.body();
        assert_eq!(
            b["message"],
            "Could not choose the best candidate function between: public.f(), public.f(a => text)"
        );
        let b = RestError::Singular { rows: 3 }.body();
        assert_eq!(
            (b["message"].as_str(), b["details"].as_str()),
            (Some("Cannot coerce the result to a single JSON object"), Some("The result contains 3 rows"))
        );
    }
}
