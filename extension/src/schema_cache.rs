//! The schema cache: the catalog model (`fluxbase_rest::catalog`) built
//! from one catalog query, kept per backend and rebuilt only after a schema
//! change (signalled through Postgres' cache invalidation, so a request pays
//! nothing to check) or when the exposed schemas change.
use fluxbase_rest::catalog::Catalog;
use fluxbase_rest::openapi::Privileges;
use pgrx::prelude::*;
use rustc_hash::FxHashMap as HashMap;
use std::cell::{Cell, RefCell};
use std::ffi::CString;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::error;

struct Cached {
    schemas: Vec<String>,
    catalog: Rc<Catalog>,
    built: Instant,
}

/// A miss may mean DDL that was uncommitted when the cache was built. A miss
/// reloads, at most this often.
const MISS_RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// A role's `ALTER ROLE … SET` settings (this database's after the
/// cluster-wide ones), as `name`, `value`.
pub type RoleSettings = Rc<[(CString, CString)]>;

/// Bound on roles whose settings a backend keeps; past it the cache starts over.
const MAX_ROLES: usize = 256;

thread_local! {
    static CACHE: RefCell<Option<Cached>> = const { RefCell::new(None) };
    /// Set by the relcache callback: a schema change may have happened.
    static STALE: Cell<bool> = const { Cell::new(true) };
    /// Role settings by role name, dropped with the schema cache.
    static ROLE_SETTINGS: RefCell<HashMap<String, RoleSettings>> = RefCell::new(HashMap::default());
    static ROLE_SETTINGS_STALE: Cell<bool> = const { Cell::new(false) };
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
        ROLE_SETTINGS_STALE.with(|s| s.set(true));
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

/// The catalog query, the cache's one SPI call (the REST engine's other SPI
/// calls are in `rest/execute.rs`). Run as the session user, before the
/// request's role switch.
fn load(schemas: &[String]) -> Catalog {
    let json = Spi::get_one_with_args::<pgrx::JsonB>(include_str!("../../sql/catalog.sql"), &[schemas.to_vec().into()])
        .unwrap_or_else(|e| error::spi_failed("schema cache query failed", e))
        .map(|j| j.0)
        .unwrap_or(serde_json::Value::Null);
    Catalog::from_json(json, schemas).unwrap_or_else(|e| error::catalog_unreadable(e))
}

/// What the current role may use in `schema`, for the OpenAPI description
/// (`GET /rest/v1/`, rare enough not to be cached): run after the role
/// switch, so Postgres' own privilege checks answer.
pub fn privileges(schema: &str) -> Privileges {
    let json =
        Spi::get_one_with_args::<pgrx::JsonB>(include_str!("../../sql/openapi_privileges.sql"), &[schema.into()])
            .unwrap_or_else(|e| error::spi_failed("privileges query failed", e))
            .map(|j| j.0)
            .unwrap_or(serde_json::Value::Null);
    serde_json::from_value(json).unwrap_or_else(|e| error::catalog_unreadable(e))
}

/// The settings `ALTER ROLE role SET …` gave `role`, which Postgres applies
/// only at login, never on `SET ROLE`: the engine applies them itself, as
/// PostgREST does ("impersonated role settings"). Kept per backend and
/// dropped with the schema cache (`fluxbase.reload_schema()`, `NOTIFY pgrst,
/// 'reload schema'`, or DDL); a new connection reads them afresh. Read as
/// the session user, before the role switch.
pub fn role_settings(role: &str) -> RoleSettings {
    if ROLE_SETTINGS_STALE.with(|s| s.replace(false)) {
        ROLE_SETTINGS.with(|r| r.borrow_mut().clear());
    }
    if let Some(hit) = ROLE_SETTINGS.with(|r| r.borrow().get(role).cloned()) {
        return hit;
    }
    let settings: RoleSettings = Spi::get_one_with_args::<Vec<String>>(
        "SELECT coalesce(array_agg(u.setting ORDER BY s.setdatabase, u.n), '{}') \
         FROM pg_catalog.pg_db_role_setting s \
         CROSS JOIN LATERAL unnest(s.setconfig) WITH ORDINALITY AS u(setting, n) \
         WHERE s.setrole = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = $1) \
           AND s.setdatabase IN (0, (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database()))",
        &[role.into()],
    )
    .unwrap_or_else(|e| error::spi_failed("role settings query failed", e))
    .unwrap_or_default()
    .iter()
    .filter_map(|s| {
        let (name, value) = s.split_once('=')?;
        Some((CString::new(name).ok()?, CString::new(value).ok()?))
    })
    .collect();
    ROLE_SETTINGS.with(|r| {
        let mut r = r.borrow_mut();
        if r.len() >= MAX_ROLES {
            r.clear();
        }
        r.insert(role.to_string(), settings.clone());
    });
    settings
}
