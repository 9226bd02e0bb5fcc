//! Execute stage, the only one that touches SPI. Plans are prepared once per
//! backend per SQL text and kept; Postgres re-plans a kept plan by itself when
//! the role (and so RLS) changes under it.
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::spi::{OwnedPreparedStatement, SpiError};
use rustc_hash::FxHashMap as HashMap;
use std::cell::{Cell, RefCell};

use crate::rest::sql::{Query, Shape};

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

#[derive(Debug, Default)]
pub struct Outcome {
    pub body: Option<String>,
    /// Rows in the body (reads) or rows written (writes).
    pub rows: i64,
    /// `count=exact` total, when asked for.
    pub total: Option<i64>,
}

/// Runs `query` through a kept plan. `mutating` statements run read-write.
pub fn run(query: &Query, mutating: bool) -> Outcome {
    // SAFETY: reads the current user id, no pointers involved.
    let role = unsafe { pg_sys::GetUserId() };
    PLANS.with(|plans| {
        let mut plans = plans.borrow_mut();
        let exec = |plan: &OwnedPreparedStatement| {
            let args = text_args(&query.params);
            let result = if mutating {
                Spi::connect_mut(|client| collect(client.update(plan, None, &args)?, query.shape))
            } else {
                Spi::connect(|client| collect(client.select(plan, None, &args)?, query.shape))
            };
            result.unwrap_or_else(|e| pgrx::error!("REST query failed: {e}"))
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
        .unwrap_or_else(|e| pgrx::error!("could not prepare REST query: {e}"));
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
    .unwrap_or_else(|e| pgrx::error!("EXPLAIN for count=planned failed: {e}"));
    plan.and_then(|j| j.0.get(0)?.get("Plan")?.get("Plan Rows")?.as_f64()).map(|r| r.round() as i64).unwrap_or(0)
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
    .unwrap_or_else(|e: SpiError| pgrx::error!("EXPLAIN failed: {e}"))
}

/// The engine's parameters: always text, cast in the SQL where a type is needed.
fn text_args(params: &[String]) -> Vec<pgrx::datum::DatumWithOid<'_>> {
    params.iter().map(|p| p.as_str().into()).collect()
}

fn text_types(params: &[String]) -> Vec<PgOid> {
    vec![PgOid::BuiltIn(PgBuiltInOids::TEXTOID); params.len()]
}

fn collect(table: pgrx::spi::SpiTupleTable<'_>, shape: Shape) -> Result<Outcome, SpiError> {
    let rows = table.len() as i64;
    match shape {
        Shape::Bare => return Ok(Outcome { body: None, rows, total: None }),
        Shape::Rows { object: true } => {
            let body = if rows == 1 { table.first().get::<String>(1)? } else { None };
            return Ok(Outcome { body, rows, total: None });
        }
        Shape::Rows { object: false } => {
            let mut body = String::from("[");
            for (i, row) in table.enumerate() {
                if i > 0 {
                    body.push(',');
                }
                body.push_str(row.get::<&str>(1)?.unwrap_or("null"));
            }
            body.push(']');
            return Ok(Outcome { body: Some(body), rows, total: None });
        }
        Shape::Aggregated => {}
    }
    let row = table.first();
    Ok(Outcome {
        body: row.get::<String>(1)?,
        rows: row.get::<i64>(2)?.unwrap_or(0),
        total: if row.columns()? >= 3 { row.get::<i64>(3)? } else { None },
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
