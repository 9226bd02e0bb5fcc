//! The REST engine: request.rs (parse) → plan.rs (resolve against the schema
//! cache) → sql.rs (SQL + parameters) → execute.rs (the only stage with SPI).
pub mod execute;
pub mod plan;
pub mod request;
pub mod sql;

use serde_json::{json, Value};

use crate::claims::{self, RequestInfo};
use crate::error::RestError;
use crate::{gucs, schema};

pub struct Response {
    pub status: u16,
    pub headers: Value,
    pub body: String,
}

impl Response {
    fn error(err: &RestError) -> Self {
        Response {
            status: err.status(),
            headers: json!({ "Content-Type": "application/json; charset=utf-8" }),
            body: err.body().to_string(),
        }
    }
}

pub fn handle(request: Value, claims: &Value) -> Response {
    match run(&request, claims) {
        Ok(response) => response,
        Err(err) => Response::error(&err),
    }
}

fn run(request: &Value, claims: &Value) -> Result<Response, RestError> {
    let api = request::parse(request)?;
    let exposed = gucs::db_schemas();
    let schema = plan::resolve_schema(api.schema.as_deref(), &exposed)?;
    // The catalog is read as the session user, before the role switch.
    let catalog = schema::catalog(&exposed);
    let max_rows = gucs::MAX_ROWS.get();
    let plan = match plan::read(&api, &schema, &catalog, max_rows) {
        Err(err @ (RestError::Table { .. } | RestError::Column { .. })) => {
            match schema::reload_after_miss(&exposed) {
                Some(fresh) => plan::read(&api, &schema, &fresh, max_rows)?,
                None => return Err(err),
            }
        }
        other => other?,
    };
    let query = sql::read(&plan);

    let empty = json!({});
    let info = RequestInfo {
        method: api.method.as_str(),
        path: request.get("path").and_then(Value::as_str).unwrap_or(""),
        headers: request.get("headers").unwrap_or(&empty),
    };
    claims::authenticate(claims, Some(&info));
    let result = execute::read(&query);

    let range = if result.rows == 0 {
        "*/*".to_string()
    } else {
        let first = plan.offset.unwrap_or(0);
        format!("{}-{}/*", first, first + result.rows - 1)
    };
    let body = if api.method == request::Method::Head {
        String::new()
    } else {
        result.body
    };
    Ok(Response {
        status: 200,
        headers: json!({
            "Content-Type": "application/json; charset=utf-8",
            "Content-Range": range,
        }),
        body,
    })
}
