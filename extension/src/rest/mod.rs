//! The REST engine's Postgres side: one request through the pure stages of
//! `fluxbase_rest` (request → plan → sql → response), with what only a
//! backend has: settings (`gucs`), the schema cache, the request's role and
//! settings (`claims`), and execute.rs, the only module here that runs SQL
//! (the schema cache's catalog query is the extension's other SPI call).
pub mod execute;
pub mod idempotency;

use fluxbase_rest::error::RestError;
use fluxbase_rest::plan::{self, Plan, WriteKind};
use fluxbase_rest::prefer::{Count, Return};
use fluxbase_rest::request::{self, ApiRequest, Explain, HttpRequest, MediaType, Method, Target};
use fluxbase_rest::response::{self, Response};
use fluxbase_rest::sql::{self, Body};
use fluxbase_rest::{keyset, openapi};

use crate::claims::{self, Claims, RequestInfo};
use crate::{gucs, schema_cache};

pub fn handle(request: &HttpRequest<'_>, claims: &Claims<'_>) -> Response {
    match run(request, claims) {
        Ok(response) => response,
        Err(err) => Response::error(&err),
    }
}

fn is_cache_miss(err: &RestError) -> bool {
    matches!(
        err,
        RestError::Table { .. } | RestError::Column { .. } | RestError::Function(_) | RestError::NoRelationship(_)
    )
}

fn run(request: &HttpRequest<'_>, claims: &Claims<'_>) -> Result<Response, RestError> {
    let api = request::parse(request)?;
    request::check_select_items(&api.select, gucs::max_select_items())?;
    let exposed = gucs::db_schemas();
    let schema = plan::resolve_schema(api.schema.as_deref(), &exposed)?;
    // The catalog is read as the session user, before the role switch.
    let catalog = schema_cache::catalog(&exposed);
    if api.target == Target::Root {
        if !api.method.is_read() {
            return Err(RestError::Method { method: api.method.as_str().into() });
        }
        // Described as the caller may use it: its privileges are read as its role.
        claims::authenticate(claims, None);
        let privileges = schema_cache::privileges(&schema);
        return Ok(response::openapi(&api, &openapi::describe(&catalog, &schema, &privileges, request)));
    }
    if request::has_aggregates(&api.select) && !gucs::aggregates_enabled() {
        return Err(RestError::AggregatesDisabled);
    }
    if api.accept == MediaType::GeoJson && !catalog.postgis {
        return Err(RestError::Accept("application/geo+json (PostGIS is not installed in this database)".into()));
    }
    let max_rows = gucs::max_rows();
    let plan = match plan::plan(&api, &schema, &catalog, max_rows) {
        Err(err) if is_cache_miss(&err) => match schema_cache::reload_after_miss(&exposed) {
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
    claims::authenticate(claims, Some(&info));
    // After the role's own settings, which may name a search_path.
    claims::ensure_session(c"search_path", &search_path(&schema));
    let result = if rollback {
        execute::in_subtransaction(|| respond_as_set(&api, &plan, request), |_| false)
    } else {
        respond_as_set(&api, &plan, request)
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
            response::echo_transaction_end(response, asked);
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

/// `respond`, then the status and headers the request's SQL set in
/// `response.status` / `response.headers`, read before a rollback undoes them.
fn respond_as_set(api: &ApiRequest, plan: &Plan, request: &HttpRequest<'_>) -> Result<Response, RestError> {
    let mut response = respond(api, plan, request)?;
    let (status, headers) = gucs::response_settings();
    if status.is_some() || headers.is_some() {
        response::apply_settings(&mut response, status.as_deref(), headers.as_deref())?;
    }
    Ok(response)
}

/// Runs the plan under the request's role and shapes the response.
fn respond(api: &ApiRequest, plan: &Plan, request: &HttpRequest<'_>) -> Result<Response, RestError> {
    if api.method.is_read() {
        // As PostgREST: GET and HEAD run read-only, whatever they call.
        claims::set_local(c"transaction_read_only", "on");
    }
    if let Some(function) = gucs::pre_request() {
        execute::pre_request(&function);
    }
    let exact = api.prefer.count.is_some();
    let singular = api.accept == MediaType::Object;
    let array_or_object = match api.accept {
        MediaType::Object => Body::Object,
        MediaType::GeoJson => Body::GeoJson,
        MediaType::Csv => Body::Csv,
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
            outcome.rendered = array_or_object == Body::Csv;
            if planned.is_some() {
                outcome.total = planned;
            }
            let next = match (&read.keyset, read.paging.limit, outcome.body.as_deref()) {
                (Some(ks), Some(limit), Some(body)) if outcome.rows == limit && !singular => {
                    keyset::next_cursor(&ks.columns, body)
                }
                _ => None,
            };
            let mut response =
                response::read_response(api, outcome, read.paging.offset.unwrap_or(0), singular, read.capped)?;
            if let Some(cursor) = next {
                response::link_next_page(&mut response, request, cursor);
            }
            Ok(response)
        }
        Plan::Call(call) => {
            let f = &call.function;
            let mutating = api.method == Method::Post && f.volatility == "v";
            // max-affected with handling=strict: only on functions returning
            // sets (PGRST128), and rolled back past the limit (PGRST124).
            let max = api.prefer.max_affected.filter(|_| api.prefer.strict);
            if max.is_some() && !f.returns_set {
                return Err(RestError::MaxAffectedRpc);
            }
            // CSV is built by the statement, for scalars too (`pgrst_scalar`).
            let body = match array_or_object {
                _ if call.read.is_some() || !singular => array_or_object,
                _ => Body::Array,
            };
            // As PostgREST: a call counts for count=exact and estimated (no
            // EXPLAIN of a function call), not for planned.
            let exact = matches!(api.prefer.count, Some(Count::Exact | Count::Estimated));
            let query = sql::call(call, body, api.nulls_stripped, exact && f.returns_set);
            let mut outcome = if (singular && mutating) || max.is_some() {
                execute::in_subtransaction(
                    || execute::run(&query, mutating),
                    |o| (!singular || !mutating || o.rows == 1) && max.is_none_or(|m| o.rows <= m),
                )
            } else {
                execute::run(&query, mutating)
            };
            if let Some(m) = max.filter(|m| outcome.rows > *m) {
                return Err(RestError::MaxAffected { affected: outcome.rows, max: m });
            }
            outcome.rendered = body == Body::Csv;
            if f.returns_void {
                return Ok(response::void_call());
            }
            if !f.returns_set {
                return Ok(response::scalar_call(api, outcome.body, exact));
            }
            let offset = call.read.as_ref().and_then(|r| r.paging.offset).or(call.paging.offset).unwrap_or(0);
            response::read_response(api, outcome, offset, singular, call.read.as_ref().and_then(|r| r.capped))
        }
        Plan::Write(write) => {
            let body = match write.returning {
                Return::Representation => array_or_object,
                Return::HeadersOnly => Body::Array,
                Return::Minimal => Body::None,
            };
            if write.payload.as_ref().is_some_and(|p| p.columns.is_empty()) && matches!(write.kind, WriteKind::Update) {
                return Ok(response::empty_update());
            }
            if let (Some(pre), Some(expected)) = (&write.precondition, api.if_match.as_deref()) {
                if !response::precondition_holds(expected, execute::run(&sql::locked_read(pre), true)) {
                    return Err(RestError::PreconditionFailed);
                }
            }
            let query = sql::write(write, body, api.nulls_stripped);
            if sql::counts_inserted(write) {
                // The statement counts its inserted rows from zero.
                claims::set_local(c"pgrst.inserted", "");
            }
            let max = api.prefer.max_affected.filter(|_| api.prefer.strict);
            let mut outcome = if singular || max.is_some() {
                execute::in_subtransaction(
                    || execute::run(&query, true),
                    |o| (!singular || o.rows == 1) && max.is_none_or(|m| o.rows <= m),
                )
            } else {
                execute::run(&query, true)
            };
            outcome.rendered = body == Body::Csv;
            if singular && outcome.rows != 1 {
                return Err(RestError::Singular { rows: outcome.rows });
            }
            if let Some(m) = max {
                if outcome.rows > m {
                    return Err(RestError::MaxAffected { affected: outcome.rows, max: m });
                }
            }
            response::write_response(api, write, outcome)
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
        Plan::Read(read) => sql::read_aggregated(read, body, api.nulls_stripped),
        Plan::Write(write) => sql::write(write, body, api.nulls_stripped),
        Plan::Call(call) => sql::call(call, body, api.nulls_stripped, false),
    };
    let lines = execute::explain(&sql::explain(&query, explain), &query.params, explain.json);
    Ok(response::explained(api, explain, &lines))
}
