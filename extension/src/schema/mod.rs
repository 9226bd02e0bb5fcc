//! The schema cache: the catalog model built from one catalog query, kept per
//! backend and rebuilt only after a schema change (signalled through
//! Postgres' cache invalidation, so a request pays nothing to check) or when
//! the exposed schemas change.
use pgrx::prelude::*;
use serde::Deserialize;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

mod relationships;
pub use relationships::Relationship;

#[derive(Debug, Deserialize, Clone)]
pub struct Column {
    pub name: String,
    #[serde(rename = "type")]
    pub type_name: String,
    pub nullable: bool,
    pub has_default: bool,
    pub generated: bool,
    /// The default as an SQL expression (identity: its `nextval`).
    #[serde(default)]
    pub default: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Table {
    pub schema: String,
    pub name: String,
    pub kind: String,
    pub comment: Option<String>,
    pub columns: Vec<Column>,
    pub primary_key: Vec<String>,
    /// Column sets (sorted) of primary key and unique constraints.
    pub unique_keys: Vec<Vec<String>>,
}

impl Table {
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    pub fn is_view(&self) -> bool {
        self.kind == "v" || self.kind == "m"
    }

    /// Whether `columns` (in any order) are covered by a unique key.
    pub fn is_unique(&self, columns: &[String]) -> bool {
        let mut sorted = columns.to_vec();
        sorted.sort();
        self.unique_keys.contains(&sorted)
    }
}

#[derive(Debug, Deserialize, Clone)]
pub struct ForeignKey {
    pub name: String,
    pub schema: String,
    pub table: String,
    pub columns: Vec<String>,
    pub foreign_schema: String,
    pub foreign_table: String,
    pub foreign_columns: Vec<String>,
}

#[derive(Debug, Deserialize, Clone)]
pub struct FunctionArg {
    pub name: String,
    #[serde(rename = "type")]
    pub type_name: String,
}

#[derive(Debug, Deserialize, Clone)]
pub struct Function {
    pub schema: String,
    pub name: String,
    pub args: Vec<FunctionArg>,
    /// How many trailing arguments have defaults.
    pub defaults: i16,
    pub returns_set: bool,
    pub returns_composite: bool,
    pub returns_void: bool,
    /// Columns of the rows a composite-returning function yields.
    pub result_columns: Option<Vec<ResultColumn>>,
    /// `i`mmutable, `s`table or `v`olatile.
    pub volatility: String,
    /// Returns rows of this table or view (`SETOF t`, `t`).
    #[serde(default)]
    pub returns_table: Option<RelationName>,
}

#[derive(Debug, Deserialize, Clone)]
pub struct RelationName {
    pub schema: String,
    pub name: String,
}

#[derive(Debug, Deserialize, Clone)]
pub struct ResultColumn {
    pub name: String,
    #[serde(rename = "type")]
    pub type_name: String,
}

impl Function {
    /// The rows this function returns, seen as a table (for select/filters).
    pub fn result_table(&self) -> Table {
        Table {
            schema: self.schema.clone(),
            name: self.name.clone(),
            kind: "f".into(),
            comment: None,
            columns: self
                .result_columns
                .iter()
                .flatten()
                .map(|c| Column {
                    name: c.name.clone(),
                    type_name: c.type_name.clone(),
                    nullable: true,
                    has_default: false,
                    generated: false,
                    default: None,
                })
                .collect(),
            primary_key: vec![],
            unique_keys: vec![],
        }
    }

    pub fn required_args(&self) -> &[FunctionArg] {
        &self.args[..self.args.len().saturating_sub(self.defaults.max(0) as usize)]
    }
}

/// A view column and the table (or view) column it shows unchanged.
#[derive(Debug, Deserialize, Clone)]
pub struct ViewColumn {
    pub schema: String,
    pub view: String,
    pub column: String,
    pub origin_schema: String,
    pub origin_table: String,
    pub origin_column: String,
}

#[derive(Debug, Deserialize, Default)]
struct CatalogJson {
    tables: Vec<Table>,
    foreign_keys: Vec<ForeignKey>,
    #[serde(default)]
    view_columns: Vec<ViewColumn>,
    functions: Vec<Function>,
    #[serde(default)]
    postgis: bool,
}

#[derive(Debug, Default)]
pub struct Catalog {
    /// PostGIS is installed (`application/geo+json` can be served).
    pub postgis: bool,
    tables: HashMap<(String, String), Table>,
    pub foreign_keys: Vec<ForeignKey>,
    functions: HashMap<(String, String), Vec<Function>>,
}

impl Catalog {
    /// `exposed`: the schemas the API serves; the JSON may describe more
    /// (tables behind views of exposed schemas).
    fn from_json(json: CatalogJson, exposed: &[String]) -> Self {
        let mut functions: HashMap<(String, String), Vec<Function>> = HashMap::new();
        for f in json.functions {
            functions.entry((f.schema.clone(), f.name.clone())).or_default().push(f);
        }
        let mut tables: HashMap<(String, String), Table> =
            json.tables.into_iter().map(|t| ((t.schema.clone(), t.name.clone()), t)).collect();
        let origins = relationships::ViewOrigins::new(&json.view_columns);
        origins.infer_view_keys(&mut tables);
        let mut foreign_keys = origins.through_views(&json.foreign_keys);
        // Keep what touches an exposed schema: the rest cannot be embedded.
        foreign_keys.retain(|fk| exposed.contains(&fk.schema) || exposed.contains(&fk.foreign_schema));
        Catalog { tables, foreign_keys, functions, postgis: json.postgis }
    }

    pub fn table(&self, schema: &str, name: &str) -> Option<&Table> {
        self.tables.get(&(schema.to_string(), name.to_string()))
    }

    /// Tables and views of one (exposed) schema.
    pub fn tables_in<'a>(&'a self, schema: &'a str) -> impl Iterator<Item = &'a Table> + 'a {
        self.tables.values().filter(move |t| t.schema == schema)
    }

    pub fn functions(&self, schema: &str, name: &str) -> &[Function] {
        self.functions.get(&(schema.to_string(), name.to_string())).map(Vec::as_slice).unwrap_or(&[])
    }

    pub fn functions_in<'a>(&'a self, schema: &'a str) -> impl Iterator<Item = &'a Function> + 'a {
        self.functions.values().flatten().filter(move |f| f.schema == schema)
    }
}

struct Cached {
    schemas: Vec<String>,
    catalog: Rc<Catalog>,
    built: Instant,
}

/// A miss may mean DDL that was uncommitted when the cache was built. A miss
/// reloads, at most this often.
const MISS_RELOAD_INTERVAL: Duration = Duration::from_secs(1);

thread_local! {
    static CACHE: RefCell<Option<Cached>> = const { RefCell::new(None) };
    /// Set by the relcache callback: a schema change may have happened.
    static STALE: Cell<bool> = const { Cell::new(true) };
}

/// Registers the invalidation callback (once per backend, from `_PG_init`).
pub fn init() {
    // SAFETY: called once while the library loads; the callback is a plain
    // function that lives as long as the process.
    unsafe { pg_sys::CacheRegisterRelcacheCallback(Some(on_relcache_invalidation), pg_sys::Datum::from(0)) }
}

/// Postgres calls this while it processes invalidation messages (at
/// transaction start, and when DDL commits in this backend). An "invalidate
/// all" (`relid` 0: what `invalidate_everywhere` sends, and what Postgres
/// sends when a backend fell behind on invalidations) marks the cache stale;
/// invalidations of single relations (ANALYZE, VACUUM, DDL too) do not:
/// every DDL command also sends an "invalidate all" through the event
/// triggers, and statistics do not change the schema.
#[pg_guard]
unsafe extern "C-unwind" fn on_relcache_invalidation(_arg: pg_sys::Datum, relid: pg_sys::Oid) {
    if relid == pg_sys::InvalidOid {
        STALE.with(|s| s.set(true));
    }
}

/// Marks every backend's cache stale (delivered with this transaction's commit).
pub fn invalidate_everywhere() {
    // SAFETY: queues an invalidation message; no pointers involved.
    unsafe { pg_sys::CacheInvalidateRelcacheAll() }
}

/// The catalog for `schemas`, rebuilt after a schema change.
pub fn catalog(schemas: &[String]) -> Rc<Catalog> {
    let hit = CACHE.with(|c| {
        c.borrow()
            .as_ref()
            .filter(|cached| !STALE.with(Cell::get) && cached.schemas == schemas)
            .map(|cached| cached.catalog.clone())
    });
    if let Some(catalog) = hit {
        return catalog;
    }
    store(schemas)
}

/// After a lookup missed: the reloaded catalog, or `None` when the cache is
/// younger than `MISS_RELOAD_INTERVAL` (so misses cannot become a reload storm).
pub fn reload_after_miss(schemas: &[String]) -> Option<Rc<Catalog>> {
    let fresh = CACHE.with(|c| c.borrow().as_ref().is_some_and(|cached| cached.built.elapsed() < MISS_RELOAD_INTERVAL));
    if fresh {
        return None;
    }
    Some(store(schemas))
}

fn store(schemas: &[String]) -> Rc<Catalog> {
    // Cleared before loading: an invalidation that arrives while the catalog
    // query runs marks it stale again, and the next request reloads.
    STALE.with(|s| s.set(false));
    let catalog = Rc::new(load(schemas));
    CACHE.with(|c| {
        *c.borrow_mut() = Some(Cached { schemas: schemas.to_vec(), catalog: catalog.clone(), built: Instant::now() })
    });
    catalog
}

fn load(schemas: &[String]) -> Catalog {
    let json =
        Spi::get_one_with_args::<pgrx::JsonB>(include_str!("../../../sql/catalog.sql"), &[schemas.to_vec().into()])
            .unwrap_or_else(|e| pgrx::error!("schema cache query failed: {e}"))
            .map(|j| j.0)
            .unwrap_or(serde_json::Value::Null);
    let parsed: CatalogJson =
        serde_json::from_value(json).unwrap_or_else(|e| pgrx::error!("schema cache did not deserialise: {e}"));
    Catalog::from_json(parsed, schemas)
}

#[cfg(test)]
pub(crate) fn test_catalog(json: serde_json::Value) -> Catalog {
    Catalog::from_json(serde_json::from_value(json).expect("test catalog"), &["public".to_string()])
}
