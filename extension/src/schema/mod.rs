//! The schema cache: the catalog model built from one catalog query, kept per
//! backend and rebuilt only when the schema version or exposed schemas change.
use pgrx::prelude::*;
use pgrx::spi::OwnedPreparedStatement;
use serde::Deserialize;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

#[derive(Debug, Deserialize)]
pub struct Column {
    pub name: String,
    #[serde(rename = "type")]
    pub type_name: String,
}

#[derive(Debug, Deserialize)]
pub struct Table {
    pub schema: String,
    pub name: String,
    pub columns: Vec<Column>,
}

impl Table {
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }
}

#[derive(Debug, Default)]
pub struct Catalog {
    tables: HashMap<(String, String), Table>,
}

impl Catalog {
    pub fn from_tables(tables: Vec<Table>) -> Self {
        Catalog {
            tables: tables
                .into_iter()
                .map(|t| ((t.schema.clone(), t.name.clone()), t))
                .collect(),
        }
    }

    pub fn table(&self, schema: &str, name: &str) -> Option<&Table> {
        self.tables.get(&(schema.to_string(), name.to_string()))
    }
}

struct Cached {
    version: i64,
    schemas: Vec<String>,
    catalog: Rc<Catalog>,
    built: Instant,
}

/// A miss may mean DDL that was uncommitted when the cache was built (the
/// version is bumped before commit). A miss reloads, at most this often.
const MISS_RELOAD_INTERVAL: Duration = Duration::from_secs(1);

thread_local! {
    static CACHE: RefCell<Option<Cached>> = const { RefCell::new(None) };
    /// Read on every request, so planned once per backend.
    static VERSION_PLAN: RefCell<Option<OwnedPreparedStatement>> = const { RefCell::new(None) };
}

fn schema_version() -> i64 {
    VERSION_PLAN.with(|cell| {
        let mut cell = cell.borrow_mut();
        Spi::connect(|client| {
            if cell.is_none() {
                *cell = Some(
                    client
                        .prepare("SELECT last_value FROM fluxbase.schema_version", &[])?
                        .keep(),
                );
            }
            let plan = cell.as_ref().expect("prepared above");
            client.select(plan, Some(1), &[])?.first().get::<i64>(1)
        })
        .unwrap_or_else(|e| pgrx::error!("reading fluxbase.schema_version failed: {e}"))
        .unwrap_or(0)
    })
}

/// The catalog for `schemas`, rebuilt when DDL has bumped the schema version.
/// Must run before the role switch: it reads `fluxbase.schema_version`.
pub fn catalog(schemas: &[String]) -> Rc<Catalog> {
    let version = schema_version();
    let hit = CACHE.with(|c| {
        c.borrow()
            .as_ref()
            .filter(|cached| cached.version == version && cached.schemas == schemas)
            .map(|cached| cached.catalog.clone())
    });
    if let Some(catalog) = hit {
        return catalog;
    }
    store(version, schemas)
}

/// After a lookup missed: the reloaded catalog, or `None` when the cache is
/// younger than `MISS_RELOAD_INTERVAL` (so misses cannot become a reload storm).
pub fn reload_after_miss(schemas: &[String]) -> Option<Rc<Catalog>> {
    let (version, fresh) = CACHE.with(|c| {
        c.borrow()
            .as_ref()
            .map(|cached| {
                (
                    cached.version,
                    cached.built.elapsed() < MISS_RELOAD_INTERVAL,
                )
            })
            .unwrap_or((0, false))
    });
    if fresh {
        return None;
    }
    Some(store(version, schemas))
}

fn store(version: i64, schemas: &[String]) -> Rc<Catalog> {
    let catalog = Rc::new(load(schemas));
    CACHE.with(|c| {
        *c.borrow_mut() = Some(Cached {
            version,
            schemas: schemas.to_vec(),
            catalog: catalog.clone(),
            built: Instant::now(),
        })
    });
    catalog
}

fn load(schemas: &[String]) -> Catalog {
    let json = Spi::get_one_with_args::<pgrx::JsonB>(
        include_str!("../../../sql/catalog.sql"),
        &[schemas.to_vec().into()],
    )
    .unwrap_or_else(|e| pgrx::error!("schema cache query failed: {e}"))
    .map(|j| j.0)
    .unwrap_or(serde_json::Value::Array(vec![]));
    let tables: Vec<Table> = serde_json::from_value(json)
        .unwrap_or_else(|e| pgrx::error!("schema cache did not deserialise: {e}"));
    Catalog::from_tables(tables)
}
