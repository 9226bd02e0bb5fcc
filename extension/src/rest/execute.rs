//! Execute stage, the REST engine's only SPI calls: the request's statement
//! (and its EXPLAIN), and the idempotency keys' table. (The schema cache's
//! catalog query is the extension's one other SPI call.) Plans are prepared
//! once per backend per SQL text and kept; Postgres re-plans a kept plan by
//! itself when the role (and so RLS) changes under it.
//!
//! A statement that raises a Postgres error (a constraint, RLS, a bad value)
//! unwinds through here and reaches the caller with its own SQLSTATE; the
//! `Err` results handled here are failures of SPI itself.
use fluxbase_rest::response::{Outcome, Response};
use fluxbase_rest::sql::{Query, Shape};
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::spi::{OwnedPreparedStatement, SpiError};
use rustc_hash::FxHashMap as HashMap;
use std::cell::{Cell, RefCell};

use crate::{error, gucs};

/// Bound on kept plans per backend; past it the cache starts over.
const MAX_PLANS: usize = 1024;

/// Kept plans of one role, keyed by SQL text. FxHash: the keys are SQL the
/// engine wrote, and hashing them is on every request's path.
type RolePlans = HashMap<String, OwnedPreparedStatement>;

thread_local! {
    /// Read-only and read-write plans, per role. A plan over tables with
    /// row-level security is only valid for the role it was made for:
    /// sharing one between roles would make Postgres re-plan at every switch
    /// (anon, then a user, then anon…); one per role keeps each valid.
    static PLANS: RefCell<[HashMap<pg_sys::Oid, RolePlans>; 2]> = RefCell::new([HashMap::default(), HashMap::default()]);
    static KEPT: Cell<usize> = const { Cell::new(0) };
}

/// Runs `query` through a kept plan. `mutating` statements run read-write.
pub fn run(query: &Query, mutating: bool) -> Outcome {
    // SAFETY: reads the current user id, no pointers involved.
    let role = unsafe { pg_sys::GetUserId() };
    PLANS.with(|plans| {
        let mut plans = plans.borrow_mut();
        let exec = |plan: &OwnedPreparedStatement| {
            let args = text_args(&query.params);
            let max = gucs::max_response_bytes();
            let result = if mutating {
                Spi::connect_mut(|client| collect(client.update(plan, None, &args)?, query.shape, max))
            } else {
                Spi::connect(|client| collect(client.select(plan, None, &args)?, query.shape, max))
            };
            result.unwrap_or_else(|e| error::spi_failed("REST query failed", e))
        };
        if let Some(plan) = plans[mutating as usize].get(&role).and_then(|p| p.get(query.sql.as_str())) {
            return exec(plan);
        }
        if KEPT.get() >= MAX_PLANS {
            plans.iter_mut().for_each(HashMap::clear);
            KEPT.set(0);
        }
        KEPT.set(KEPT.get() + 1);
        let types = text_types(&query.params);
        let prepared = Spi::connect(|client| {
            let p = if mutating {
                client.prepare_mut(query.sql.as_str(), &types)?
            } else {
                client.prepare(query.sql.as_str(), &types)?
            };
            Ok::<_, SpiError>(p.keep())
        })
        .unwrap_or_else(|e| error::spi_failed("could not prepare REST query", e));
        exec(plans[mutating as usize].entry(role).or_default().entry(query.sql.clone()).or_insert(prepared))
    })
}

/// The top plan node's row estimate of an `EXPLAIN (FORMAT JSON)` query.
pub fn planned_rows(query: &Query) -> i64 {
    let args = text_args(&query.params);
    // Not a read-only SPI call: SPI refuses EXPLAIN there (the transaction
    // itself stays read-only for GET).
    let plan = Spi::connect_mut(|client| {
        let prepared = client.prepare_mut(query.sql.as_str(), &text_types(&query.params))?;
        client.update(&prepared, Some(1), &args)?.first().get::<pgrx::Json>(1)
    })
    .unwrap_or_else(|e| error::spi_failed("EXPLAIN for count=planned failed", e));
    plan.and_then(|j| j.0.get(0)?.get("Plan")?.get("Plan Rows")?.as_f64()).map(|r| r.round() as i64).unwrap_or(0)
}

/// Calls the pre-request function (`SELECT schema.name()`) as the request's
/// role; an error it raises is the request's.
pub fn pre_request(function: &str) {
    let sql = ["SELECT ", &qualified_name(function), "()"].concat();
    Spi::connect_mut(|client| client.update(sql.as_str(), None, &[]).map(|_| ()))
        .unwrap_or_else(|e| error::spi_failed("the pre-request function failed", e));
}

/// `schema.name` or `name`, each part quoted, as PostgREST reads
/// db-pre-request.
fn qualified_name(name: &str) -> String {
    match name.split_once('.') {
        Some((schema, function)) => [fluxbase_rest::sql::ident(schema), fluxbase_rest::sql::ident(function)].join("."),
        None => fluxbase_rest::sql::ident(name),
    }
}

/// The lines of an `EXPLAIN` (one JSON document with FORMAT JSON).
pub fn explain(sql: &str, params: &[String], json: bool) -> Vec<String> {
    let (args, types) = (text_args(params), text_types(params));
    // SPI refuses EXPLAIN in a read-only call, whatever it explains; the
    // transaction of a GET stays read-only all the same.
    Spi::connect_mut(|client| {
        let prepared = client.prepare_mut(sql, &types)?;
        let rows = client.update(&prepared, None, &args)?;
        rows.map(|row| {
            Ok(if json {
                row.get::<pgrx::Json>(1)?.map(|j| j.0.to_string()).unwrap_or_default()
            } else {
                row.get::<String>(1)?.unwrap_or_default()
            })
        })
        .collect::<Result<Vec<_>, SpiError>>()
    })
    .unwrap_or_else(|e: SpiError| error::spi_failed("EXPLAIN failed", e))
}

/// What an idempotency key's first request left: its fingerprint and, once
/// that request finished, its response (`status` 0 until then).
pub struct KeptResponse {
    pub request_hash: String,
    pub status: i32,
    pub headers: String,
    pub body: String,
}

/// Claims an idempotency key for a request with fingerprint `hash`, taking
/// over a claim older than `ttl_seconds`: `None` when the claim is this
/// request's, else what the key's live claim holds. A concurrent claim of
/// the same key waits here until the first request's transaction ends.
pub fn claim_idempotency_key(scope: &str, key: &str, hash: &str, ttl_seconds: f64) -> Option<KeptResponse> {
    Spi::connect_mut(|client| {
        client.update(
            "DELETE FROM fluxbase.idempotency_keys WHERE scope = $1 AND key = $2 \
             AND created_at < now() - make_interval(secs => $3)",
            None,
            &[scope.into(), key.into(), ttl_seconds.into()],
        )?;
        let inserted = client.update(
            "INSERT INTO fluxbase.idempotency_keys (scope, key, request_hash, status, headers, body) \
             VALUES ($1, $2, $3, 0, '{}', '') ON CONFLICT (scope, key) DO NOTHING",
            None,
            &[scope.into(), key.into(), hash.into()],
        )?;
        if inserted.len() == 1 {
            return Ok::<_, SpiError>(None);
        }
        let row = client
            .select(
                "SELECT request_hash, status, headers::text, body FROM fluxbase.idempotency_keys WHERE scope = $1 AND key = $2",
                Some(1),
                &[scope.into(), key.into()],
            )?
            .first();
        Ok(Some(KeptResponse {
            request_hash: row.get::<String>(1)?.unwrap_or_default(),
            status: row.get::<i32>(2)?.unwrap_or(0),
            headers: row.get::<String>(3)?.unwrap_or_default(),
            body: row.get::<String>(4)?.unwrap_or_default(),
        }))
    })
    .unwrap_or_else(|e| error::spi_failed("idempotency key lookup failed", e))
}

/// Keeps `response` under a key claimed by `claim_idempotency_key`.
pub fn store_idempotent_response(scope: &str, key: &str, response: &Response) {
    Spi::connect_mut(|client| {
        client
            .update(
                "UPDATE fluxbase.idempotency_keys SET status = $3, headers = $4::json, body = $5 WHERE scope = $1 AND key = $2",
                None,
                &[
                    scope.into(),
                    key.into(),
                    (response.status as i32).into(),
                    response.headers.to_string().into(),
                    response.body.as_str().into(),
                ],
            )
            .map(|_| ())
    })
    .unwrap_or_else(|e| error::spi_failed("storing the idempotent response failed", e));
}

/// The engine's parameters: always text, cast in the SQL where a type is needed.
fn text_args(params: &[String]) -> Vec<pgrx::datum::DatumWithOid<'_>> {
    params.iter().map(|p| p.as_str().into()).collect()
}

fn text_types(params: &[String]) -> Vec<PgOid> {
    vec![PgOid::BuiltIn(PgBuiltInOids::TEXTOID); params.len()]
}

/// The statement's result as a body of at most `max` bytes (past it the
/// request fails: nothing partial is ever sent).
fn collect(table: pgrx::spi::SpiTupleTable<'_>, shape: Shape, max: usize) -> Result<Outcome, SpiError> {
    let rows = table.len() as i64;
    let bounded = |text: Option<&str>| {
        if let Some(t) = text.filter(|t| t.len() > max) {
            error::response_too_large(t.len(), max);
        }
        Ok::<_, SpiError>(text.map(str::to_string))
    };
    match shape {
        Shape::Bare => return Ok(Outcome { body: None, rows, total: None, rendered: false }),
        Shape::Rows { object: true } => {
            let body = if rows == 1 { bounded(table.first().get::<&str>(1)?)? } else { None };
            return Ok(Outcome { body, rows, total: None, rendered: false });
        }
        Shape::Rows { object: false } => {
            // The rows' text stays in SPI's memory until the body is built:
            // measured first, then copied once into a body of its exact size
            // (growing it by doubling copied a 1 MB body about twice more).
            let mut parts = Vec::with_capacity(rows as usize);
            let mut length = 2 + rows.max(1) as usize - 1;
            for row in table {
                let text = row.get::<&str>(1)?.unwrap_or("null");
                length += text.len();
                if length > max {
                    error::response_too_large(length, max);
                }
                parts.push(text);
            }
            let mut body = String::with_capacity(length);
            body.push('[');
            for (i, part) in parts.iter().enumerate() {
                if i > 0 {
                    body.push(',');
                }
                body.push_str(part);
            }
            body.push(']');
            return Ok(Outcome { body: Some(body), rows, total: None, rendered: false });
        }
        Shape::Aggregated => {}
    }
    let row = table.first();
    Ok(Outcome {
        body: bounded(row.get::<&str>(1)?)?,
        rows: row.get::<i64>(2)?.unwrap_or(0),
        total: if row.columns()? >= 3 { row.get::<i64>(3)? } else { None },
        rendered: false,
    })
}

/// Runs `work` in a subtransaction that is kept only when `keep` approves its
/// result: a write whose outcome the request refuses (a singular response
/// that is not one row, `max-affected` exceeded) leaves nothing behind.
/// Errors inside abort the whole statement, subtransaction included.
pub fn in_subtransaction<T>(work: impl FnOnce() -> T, keep: impl FnOnce(&T) -> bool) -> T {
    // SAFETY: the same sequence PL/pgSQL uses around an exception block; the
    // memory context and resource owner are restored on both paths.
    unsafe {
        let context = pg_sys::CurrentMemoryContext;
        let owner = pg_sys::CurrentResourceOwner;
        pg_sys::BeginInternalSubTransaction(std::ptr::null());
        pg_sys::MemoryContextSwitchTo(context);
        let value = work();
        if keep(&value) {
            pg_sys::ReleaseCurrentSubTransaction();
        } else {
            pg_sys::RollbackAndReleaseCurrentSubTransaction();
        }
        pg_sys::MemoryContextSwitchTo(context);
        pg_sys::CurrentResourceOwner = owner;
        value
    }
}
