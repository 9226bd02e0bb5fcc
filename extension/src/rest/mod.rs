//! The REST engine: request.rs (parse) → plan.rs (resolve against the schema
//! cache) → sql.rs (SQL + parameters) → execute.rs (the only stage with SPI),
//! then the HTTP response PostgREST would give.
pub mod csv;
pub mod execute;
pub mod idempotency;
pub mod keyset;
pub mod openapi;
pub mod plan;
pub mod prefer;
pub mod request;
pub mod sql;

use serde_json::{json, Map, Value};

use crate::claims::{self, Claims, RequestInfo};
use crate::error::RestError;
use crate::rest::execute::Outcome;
use crate::rest::plan::{Plan, WriteKind};
use crate::rest::prefer::{Count, Return};
use crate::rest::request::{ApiRequest, Explain, HttpRequest, MediaType, Method, Target};
use crate::rest::sql::Body;
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

pub fn handle(request: &HttpRequest<'_>, claims: &Claims<'_>) -> Response {
    match run(request, claims) {
        Ok(response) => response,
        Err(err) => Response::error(&err),
    }
}

fn is_cache_miss(err: &RestError) -> bool {
    matches!(
        err,
        RestError::Table { .. }
            | RestError::Column { .. }
            | RestError::Function { .. }
            | RestError::NoRelationship { .. }
    )
}

fn run(request: &HttpRequest<'_>, claims: &Claims<'_>) -> Result<Response, RestError> {
    let api = request::parse(request)?;
    let exposed = gucs::db_schemas();
    let schema = plan::resolve_schema(api.schema.as_deref(), &exposed)?;
    // The catalog is read as the session user, before the role switch.
    let catalog = schema::catalog(&exposed);
    if api.target == Target::Root {
        if !api.method.is_read() {
            return Err(RestError::Method { method: api.method.as_str().into() });
        }
        let body = openapi::describe(&catalog, &schema, request);
        return Ok(Response {
            status: 200,
            headers: json!({ "Content-Type": "application/openapi+json; charset=utf-8" }),
            body: if api.method == Method::Head { String::new() } else { body.to_string() },
        });
    }
    if request::has_aggregates(&api.select) && !gucs::aggregates_enabled() {
        return Err(RestError::AggregatesDisabled);
    }
    if api.accept == MediaType::GeoJson && !catalog.postgis {
        return Err(RestError::Accept("application/geo+json (PostGIS is not installed in this database)".into()));
    }
    let max_rows = gucs::max_rows();
    let plan = match plan::plan(&api, &schema, &catalog, max_rows) {
        Err(err) if is_cache_miss(&err) => match schema::reload_after_miss(&exposed) {
            Some(fresh) => plan::plan(&api, &schema, &fresh, max_rows)?,
            None => return Err(err),
        },
        other => other?,
    };

    let path = ["/", request.path.trim_start_matches('/')].concat();
    let info = RequestInfo { method: api.method.as_str(), path: &path, headers: request.headers_json };
    let rollback = transaction_end(&api);
    // Claimed as the session user, before the role switch. A request that
    // ends in a rollback wrote nothing, so there is nothing to replay.
    let idempotent = if rollback { None } else { idempotency::claim(&api, request, claims)? };
    let claim = match idempotent {
        Some(idempotency::Outcome::Replay(response)) => return Ok(response),
        Some(idempotency::Outcome::Fresh(claim)) => Some(claim),
        None => None,
    };
    claims::ensure_session(c"search_path", &search_path(&schema));
    claims::authenticate(claims, Some(&info));
    let result = if rollback {
        execute::in_subtransaction(|| respond(&api, &plan, request), |_| false)
    } else {
        respond(&api, &plan, request)
    };
    let mut result = match claim {
        Some(claim) => {
            let response = result.unwrap_or_else(|e| Response::error(&e));
            idempotency::store(&claim, &response);
            Ok(response)
        }
        None => result,
    };
    if let (Ok(response), Some(asked)) = (&mut result, api.prefer.tx_rollback) {
        if gucs::tx_end().overridable {
            let echo = if asked { "tx=rollback" } else { "tx=commit" };
            if let Some(headers) = response.headers.as_object_mut() {
                let applied = match headers.get("Preference-Applied").and_then(Value::as_str) {
                    Some(others) => format!("{others}, {echo}"),
                    None => echo.to_string(),
                };
                headers.insert("Preference-Applied".into(), Value::String(applied));
            }
        }
    }
    result
}

/// Whether the request's changes are rolled back: `fluxbase.tx_end`
/// (`pgrst.db_tx_end`), overridden by `Prefer: tx=` where that is allowed.
/// Reads run read-only, so only writes and calls need to ask.
fn transaction_end(api: &ApiRequest) -> bool {
    if api.method.is_read() && api.prefer.tx_rollback.is_none() {
        return false;
    }
    let end = gucs::tx_end();
    match api.prefer.tx_rollback {
        Some(asked) if end.overridable => asked,
        _ => end.rollback,
    }
}

/// `search_path` for the request, as PostgREST sets it: the request's
/// schema, then `fluxbase.extra_search_path` (`pgrst.db_extra_search_path`).
fn search_path(schema: &str) -> String {
    let mut path = sql::ident(schema);
    for extra in gucs::extra_search_path() {
        path.push_str(", ");
        path.push_str(&sql::ident(&extra));
    }
    path
}

/// Runs the plan under the request's role and shapes the response.
fn respond(api: &ApiRequest, plan: &Plan, request: &HttpRequest<'_>) -> Result<Response, RestError> {
    if api.method.is_read() {
        // As PostgREST: GET and HEAD run read-only, whatever they call.
        claims::set_local(c"transaction_read_only", "on");
    }
    let exact = api.prefer.count.is_some();
    let singular = api.accept == MediaType::Object;
    let array_or_object = match api.accept {
        MediaType::Object => Body::Object,
        MediaType::GeoJson => Body::GeoJson,
        _ => Body::Array,
    };
    if let Some(explain) = &api.explain {
        return explained(api, plan, explain, array_or_object);
    }
    match plan {
        Plan::Read(read) => {
            // count=planned: the planner's estimate; estimated: exact up to
            // max_rows, the estimate beyond (as PostgREST).
            let planned = match api.prefer.count {
                Some(Count::Planned) => Some(execute::planned_rows(&sql::planned_count(read))),
                Some(Count::Estimated) => {
                    let max = gucs::max_rows() as i64;
                    let estimate = execute::planned_rows(&sql::planned_count(read));
                    (max > 0 && estimate > max).then_some(estimate)
                }
                _ => None,
            };
            let query = sql::read(read, array_or_object, api.nulls_stripped, exact && planned.is_none());
            let mut outcome = execute::run(&query, false);
            if planned.is_some() {
                outcome.total = planned;
            }
            let next = match (&read.keyset, read.paging.limit, outcome.body.as_deref()) {
                (Some(ks), Some(limit), Some(body)) if outcome.rows == limit && !singular => {
                    keyset::next_cursor(&ks.columns, body)
                }
                _ => None,
            };
            let mut response = read_response(api, outcome, read.paging.offset.unwrap_or(0), singular, read.capped)?;
            if let (Some(cursor), Some(headers)) = (next, response.headers.as_object_mut()) {
                let kept: Vec<&str> =
                    request.query.split('&').filter(|p| !p.is_empty() && !p.starts_with("cursor=")).collect();
                let path = &request.path;
                let link = format!("</rest/v1/{path}?{}&cursor={cursor}>; rel=\"next\"", kept.join("&"));
                headers.insert("Link".into(), Value::String(link));
                headers.insert("Fluxbase-Next-Cursor".into(), Value::String(cursor));
            }
            Ok(response)
        }
        Plan::Call(call) => {
            let f = &call.function;
            let mutating = api.method == Method::Post && f.volatility == "v";
            let body = if call.read.is_some() || !singular { array_or_object } else { Body::Array };
            let query = sql::call(call, body, api.nulls_stripped, exact && f.returns_set);
            let guard = singular && mutating;
            let outcome = if guard {
                execute::in_subtransaction(|| execute::run(&query, true), |o| o.rows == 1)
            } else {
                execute::run(&query, mutating)
            };
            if f.returns_void {
                return Ok(Response { status: 204, headers: json!({}), body: String::new() });
            }
            if !f.returns_set {
                let body = outcome.body.unwrap_or_else(|| "null".into());
                return Ok(Response {
                    status: 200,
                    headers: Value::Object(content_type(MediaType::Json)),
                    body: head_aware(api, body),
                });
            }
            let offset = call.read.as_ref().and_then(|r| r.paging.offset).unwrap_or(0);
            read_response(api, outcome, offset, singular, call.read.as_ref().and_then(|r| r.capped))
        }
        Plan::Write(write) => {
            let body = match write.returning {
                Return::Representation => array_or_object,
                Return::HeadersOnly => Body::Array,
                Return::Minimal => Body::None,
            };
            if write.payload.as_ref().is_some_and(|p| p.columns.is_empty()) && matches!(write.kind, WriteKind::Update) {
                // PATCH with `{}`: nothing to change.
                return Ok(Response { status: 204, headers: json!({ "Content-Range": "*/0" }), body: String::new() });
            }
            if let (Some(pre), Some(expected)) = (&write.precondition, api.if_match.as_deref()) {
                let current = execute::run(&sql::locked_read(pre), true);
                let array = current.body.unwrap_or_else(|| "[]".into());
                let mut tags = vec![etag(&array)];
                if current.rows == 1 {
                    // The singular form of the same read: the one element, as Postgres printed it.
                    if let Some(object) = array.strip_prefix('[').and_then(|a| a.strip_suffix(']')) {
                        tags.push(etag(object));
                    }
                }
                if !tags.iter().any(|t| etag_matches(Some(expected), t)) {
                    return Err(RestError::PreconditionFailed);
                }
            }
            let query = sql::write(write, body, api.nulls_stripped);
            let max = api.prefer.max_affected.filter(|_| api.prefer.strict);
            let outcome = if singular || max.is_some() {
                execute::in_subtransaction(
                    || execute::run(&query, true),
                    |o| (!singular || o.rows == 1) && max.is_none_or(|m| o.rows <= m),
                )
            } else {
                execute::run(&query, true)
            };
            if singular && outcome.rows != 1 {
                return Err(RestError::Singular { rows: outcome.rows });
            }
            if let Some(m) = max {
                if outcome.rows > m {
                    return Err(RestError::MaxAffected { affected: outcome.rows, max: m });
                }
            }
            write_response(api, write, outcome)
        }
    }
}

/// `Accept: application/vnd.pgrst.plan`: the `EXPLAIN` of the statement the
/// request runs (with `analyze`, it runs; a write is then committed unless
/// `tx=rollback` or `fluxbase.tx_end` says otherwise, as in PostgREST).
fn explained(api: &ApiRequest, plan: &Plan, explain: &Explain, body: Body) -> Result<Response, RestError> {
    if !gucs::plan_enabled() {
        return Err(RestError::Accept(explain.content_type()));
    }
    let query = match plan {
        Plan::Read(read) => sql::read(read, body, api.nulls_stripped, false),
        Plan::Write(write) => sql::write(write, body, api.nulls_stripped),
        Plan::Call(call) => sql::call(call, body, api.nulls_stripped, false),
    };
    let mut options = vec![if explain.json { "FORMAT JSON" } else { "FORMAT TEXT" }.to_string()];
    options.extend(explain.options.iter().map(|o| o.to_ascii_uppercase()));
    let sql = format!("EXPLAIN ({}) {}", options.join(", "), query.sql);
    let lines = execute::explain(&sql, &query.params, explain.json);
    Ok(Response {
        status: 200,
        headers: json!({ "Content-Type": explain.content_type() }),
        body: head_aware(api, lines.join("\n")),
    })
}

/// `{"Content-Type": …}` of a response body in `media`.
fn content_type(media: MediaType) -> Map<String, Value> {
    let value = match media {
        MediaType::Object => "application/vnd.pgrst.object+json; charset=utf-8",
        MediaType::Csv => "text/csv; charset=utf-8",
        MediaType::GeoJson => "application/geo+json; charset=utf-8",
        _ => "application/json; charset=utf-8",
    };
    let mut headers = Map::with_capacity(4);
    headers.insert("Content-Type".into(), Value::String(value.into()));
    headers
}

/// The body in the negotiated media type (CSV is converted from the rows).
fn render(media: MediaType, body: String) -> String {
    if media == MediaType::Csv {
        csv::from_rows(&body)
    } else {
        body
    }
}

/// A weak validator of a read's body: equal bodies, equal ETags (FNV-1a, a
/// hash that never changes between releases, over the body and its length).
fn etag(body: &str) -> String {
    let hash = fnv1a(FNV_OFFSET, body.as_bytes());
    format!("W/\"{hash:016x}{:08x}\"", body.len())
}

/// FNV-1a, the one hash behind ETags, cursors and idempotency fingerprints:
/// small, and its output never changes between releases or Rust versions.
pub(crate) const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

pub(crate) fn fnv1a(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |h, b| (h ^ *b as u64).wrapping_mul(0x0100_0000_01b3))
}

fn etag_matches(if_none_match: Option<&str>, tag: &str) -> bool {
    if_none_match.is_some_and(|h| {
        h.split(',')
            .map(str::trim)
            .any(|t| t == "*" || t == tag || t.trim_start_matches("W/") == tag.trim_start_matches("W/"))
    })
}

fn head_aware(api: &ApiRequest, body: String) -> String {
    if api.method == Method::Head {
        String::new()
    } else {
        body
    }
}

fn applied(api: &ApiRequest, headers: &mut Map<String, Value>) {
    let applied = &api.prefer.applied;
    if !applied.is_empty() {
        headers.insert("Preference-Applied".into(), Value::String(applied.join(", ")));
    }
}

fn read_response(
    api: &ApiRequest,
    outcome: Outcome,
    offset: i64,
    singular: bool,
    capped: Option<i64>,
) -> Result<Response, RestError> {
    if singular && outcome.rows != 1 {
        return Err(RestError::Singular { rows: outcome.rows });
    }
    let total = outcome.total.map(|t| t.to_string()).unwrap_or_else(|| "*".into());
    let range = if outcome.rows == 0 {
        format!("*/{total}")
    } else {
        format!("{}-{}/{}", offset, offset + outcome.rows - 1, total)
    };
    if let Some(t) = outcome.total {
        if offset > 0 && offset >= t && t > 0 {
            return Err(RestError::Range(format!("offset {offset} is past the {t} rows")));
        }
    }
    let partial = outcome.total.is_some_and(|t| outcome.rows < t);
    let mut headers = content_type(api.accept);
    headers.insert("Content-Range".into(), Value::String(range));
    applied(api, &mut headers);
    if let Some(max) = capped.filter(|m| outcome.rows >= *m) {
        // Never truncate silently: say that the server's row limit cut the page.
        headers.insert(
            "Warning".into(),
            Value::String(format!("299 fluxbase \"result limited to fluxbase.max_rows = {max} rows\"")),
        );
    }
    let body = render(api.accept, outcome.body.unwrap_or_else(|| "[]".into()));
    let tag = etag(&body);
    let not_modified = etag_matches(api.if_none_match.as_deref(), &tag);
    headers.insert("ETag".into(), Value::String(tag));
    if not_modified {
        return Ok(Response { status: 304, headers: Value::Object(headers), body: String::new() });
    }
    Ok(Response {
        status: if partial { 206 } else { 200 },
        headers: Value::Object(headers),
        body: head_aware(api, body),
    })
}

fn write_response(api: &ApiRequest, write: &plan::WritePlan, outcome: Outcome) -> Result<Response, RestError> {
    let n = outcome.rows;
    let mut headers = Map::new();
    let representation = write.returning == Return::Representation;
    headers.insert(
        "Content-Range".into(),
        Value::String(if representation && n > 0 { format!("0-{}/{}", n - 1, n) } else { format!("*/{n}") }),
    );
    applied(api, &mut headers);
    if write.returning == Return::HeadersOnly && api.method == Method::Post {
        if let Some(location) = location(write, outcome.body.as_deref()) {
            headers.insert("Location".into(), Value::String(location));
        }
    }
    let status = match (api.method, representation) {
        (Method::Post, _) => 201,
        (_, true) => 200,
        (_, false) => 204,
    };
    if !representation {
        return Ok(Response { status, headers: Value::Object(headers), body: String::new() });
    }
    headers.extend(content_type(api.accept));
    let body = render(api.accept, outcome.body.unwrap_or_else(|| "[]".into()));
    Ok(Response { status, headers: Value::Object(headers), body })
}

/// `/table?pk=eq.value` of the first written row.
fn location(write: &plan::WritePlan, body: Option<&str>) -> Option<String> {
    let rows: Value = serde_json::from_str(body?).ok()?;
    let row = rows.get(0)?.as_object()?;
    let parts: Vec<String> = write
        .primary_key
        .iter()
        .map(|k| {
            let v = match row.get(k) {
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
                None => String::new(),
            };
            format!("{}=eq.{}", encode(k), encode(&v))
        })
        .collect();
    (!parts.is_empty()).then(|| format!("/{}?{}", write.table, parts.join("&")))
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
