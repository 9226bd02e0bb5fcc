//! Execute stage, the only one that touches SPI. Plans are prepared once per
//! backend per SQL text and kept; Postgres re-plans a kept plan by itself when
//! the role (and so RLS) changes under it.
use pgrx::prelude::*;
use pgrx::spi::OwnedPreparedStatement;
use std::cell::RefCell;
use std::collections::HashMap;

use crate::rest::sql::Query;

/// Bound on kept plans per backend; past it the cache starts over.
const MAX_PLANS: usize = 1024;

thread_local! {
    static PLANS: RefCell<HashMap<String, OwnedPreparedStatement>> = RefCell::new(HashMap::new());
}

pub struct ReadResult {
    pub body: String,
    pub rows: i64,
}

pub fn read(query: &Query) -> ReadResult {
    PLANS.with(|plans| {
        let mut plans = plans.borrow_mut();
        if !plans.contains_key(&query.sql) {
            if plans.len() >= MAX_PLANS {
                plans.clear();
            }
            let types = vec![PgOid::BuiltIn(PgBuiltInOids::TEXTOID); query.params.len()];
            let plan =
                Spi::connect(|client| client.prepare(query.sql.as_str(), &types).map(|p| p.keep()))
                    .unwrap_or_else(|e| pgrx::error!("could not prepare REST query: {e}"));
            plans.insert(query.sql.clone(), plan);
        }
        let plan = &plans[&query.sql];
        let args: Vec<pgrx::datum::DatumWithOid<'_>> =
            query.params.iter().map(|p| p.as_str().into()).collect();
        Spi::connect(|client| {
            let table = client.select(plan, Some(1), &args)?;
            let row = table.first();
            let body = row.get::<String>(1)?.unwrap_or_else(|| "[]".into());
            let rows = row.get::<i64>(2)?.unwrap_or(0);
            Ok::<_, pgrx::spi::SpiError>(ReadResult { body, rows })
        })
        .unwrap_or_else(|e| pgrx::error!("REST query failed: {e}"))
    })
}
