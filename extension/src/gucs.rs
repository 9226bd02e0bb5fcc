//! Every `fluxbase.*` setting, registered once in `init()`.
use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};
use std::ffi::CString;

/// Schemas the REST API exposes, comma-separated; the first is the default.
/// Unset: PostgREST's `pgrst.db_schemas`, else `public`.
pub static DB_SCHEMAS: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
/// Role used when the claims carry no `role`.
pub static ANON_ROLE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c"anon"));
/// How long an `Idempotency-Key` is remembered, in seconds.
pub static IDEMPOTENCY_TTL: GucSetting<i32> = GucSetting::<i32>::new(86_400);
/// Upper bound on rows a read returns (Supabase's default, 1000); 0: none.
/// PostgREST's `pgrst.db_max_rows` wins where it is set.
pub static MAX_ROWS: GucSetting<i32> = GucSetting::<i32>::new(1000);
/// Upper bound on the items of a request's `select`, embedded ones included.
pub static MAX_SELECT_ITEMS: GucSetting<i32> = GucSetting::<i32>::new(100);
/// Upper bound on a response body, in bytes (32 MiB); 0: none.
pub static MAX_RESPONSE_BYTES: GucSetting<i32> = GucSetting::<i32>::new(32 * 1024 * 1024);
/// Aggregates in `select` (`count()`, `col.sum()`…); also on when PostgREST's
/// `pgrst.db_aggregates_enabled` is.
pub static AGGREGATES_ENABLED: GucSetting<bool> = GucSetting::<bool>::new(false);
/// `Accept: application/vnd.pgrst.plan`; also on when `pgrst.db_plan_enabled` is.
pub static PLAN_ENABLED: GucSetting<bool> = GucSetting::<bool>::new(false);
/// How a request's transaction ends: commit, commit-allow-override, rollback,
/// rollback-allow-override. Unset: `pgrst.db_tx_end`, else commit.
pub static TX_END: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
/// Schemas appended to the request schema in `search_path`. Unset:
/// `pgrst.db_extra_search_path`, else `public`.
pub static EXTRA_SEARCH_PATH: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
/// A function every REST request calls first, under its role (PostgREST's
/// db-pre-request). Unset: `pgrst.db_pre_request`, else none.
pub static PRE_REQUEST: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);

pub fn init() {
    GucRegistry::define_bool_guc(
        c"fluxbase.aggregates_enabled",
        c"Allow aggregate functions (count(), sum(), avg(), min(), max()) in select.",
        c"Off by default, as in PostgREST: an aggregate over a large table is an expensive request.",
        &AGGREGATES_ENABLED,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"fluxbase.plan_enabled",
        c"Answer Accept: application/vnd.pgrst.plan with the query's EXPLAIN output.",
        c"",
        &PLAN_ENABLED,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"fluxbase.tx_end",
        c"How a request's transaction ends: commit, commit-allow-override, rollback, rollback-allow-override.",
        c"",
        &TX_END,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"fluxbase.extra_search_path",
        c"Schemas added after the request's schema in search_path, comma-separated.",
        c"",
        &EXTRA_SEARCH_PATH,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"fluxbase.pre_request",
        c"Function (schema.name) every REST request calls first, as the request's role.",
        c"PostgREST's db-pre-request: it may raise to refuse the request or set response.headers/response.status.",
        &PRE_REQUEST,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"fluxbase.idempotency_ttl",
        c"Seconds an Idempotency-Key and its response are kept.",
        c"",
        &IDEMPOTENCY_TTL,
        1,
        i32::MAX,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"fluxbase.db_schemas",
        c"Schemas exposed by the REST API, comma-separated.",
        c"The first schema is used when a request names none (Accept-Profile/Content-Profile).",
        &DB_SCHEMAS,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"fluxbase.anon_role",
        c"Role for requests whose claims carry no role.",
        c"",
        &ANON_ROLE,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"fluxbase.max_rows",
        c"Maximum rows returned by one REST read (0 = unlimited).",
        c"pgrst.db_max_rows wins where it is set.",
        &MAX_ROWS,
        0,
        i32::MAX,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"fluxbase.max_select_items",
        c"Maximum items in one REST request's select, embedded resources included.",
        c"Past it the request is refused with 400 PGRST100.",
        &MAX_SELECT_ITEMS,
        1,
        i32::MAX,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"fluxbase.max_response_bytes",
        c"Maximum size of one REST response body, in bytes (0 = unlimited).",
        c"Past it the request fails with 54000 and nothing is sent; a write is rolled back.",
        &MAX_RESPONSE_BYTES,
        0,
        i32::MAX,
        GucContext::Suset,
        GucFlags::default(),
    );
}

/// The row cap of a read: `pgrst.db_max_rows` where set, else
/// `fluxbase.max_rows`; 0: none.
pub fn max_rows() -> i32 {
    placeholder(c"pgrst.db_max_rows").and_then(|v| v.parse().ok()).filter(|n| *n > 0).unwrap_or_else(|| MAX_ROWS.get())
}

pub fn max_select_items() -> usize {
    MAX_SELECT_ITEMS.get().max(1) as usize
}

/// The response body cap in bytes; `usize::MAX`: none.
pub fn max_response_bytes() -> usize {
    match MAX_RESPONSE_BYTES.get() {
        n if n <= 0 => usize::MAX,
        n => n as usize,
    }
}

pub fn string(setting: &GucSetting<Option<CString>>, default: &str) -> String {
    setting
        .get()
        .and_then(|s| s.into_string().ok())
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| default.to_string())
}

/// A setting Postgres only knows as a placeholder (`pgrst.*`, set with
/// `ALTER ROLE authenticator SET pgrst.db_schemas = '…'` in a database that
/// moved over from PostgREST).
fn placeholder(name: &std::ffi::CStr) -> Option<String> {
    // SAFETY: a valid C string in; the result is NULL or a C string owned by
    // the GUC machinery, copied before anything else runs.
    unsafe {
        let value = pgrx::pg_sys::GetConfigOption(name.as_ptr(), true, false);
        if value.is_null() {
            return None;
        }
        std::ffi::CStr::from_ptr(value).to_str().ok().map(str::trim).filter(|s| !s.is_empty()).map(str::to_string)
    }
}

/// A Fluxbase string setting, else its PostgREST counterpart, else `default`.
fn with_fallback(setting: &GucSetting<Option<CString>>, pgrst: &std::ffi::CStr, default: &str) -> String {
    setting
        .get()
        .and_then(|s| s.into_string().ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| placeholder(pgrst))
        .unwrap_or_else(|| default.to_string())
}

fn list(value: &str) -> Vec<String> {
    value.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()
}

/// A boolean as Postgres reads one (`on`, `true`, `yes`, `1`).
fn is_true(value: Option<String>) -> bool {
    value.is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "on" | "true" | "yes" | "1" | "t" | "y"))
}

pub fn db_schemas() -> Vec<String> {
    list(&with_fallback(&DB_SCHEMAS, c"pgrst.db_schemas", "public"))
}

pub fn extra_search_path() -> Vec<String> {
    list(&with_fallback(&EXTRA_SEARCH_PATH, c"pgrst.db_extra_search_path", "public"))
}

/// The pre-request function's name as configured (`schema.name` or `name`).
pub fn pre_request() -> Option<String> {
    Some(with_fallback(&PRE_REQUEST, c"pgrst.db_pre_request", "")).filter(|s| !s.is_empty())
}

/// `response.status` and `response.headers` as the request's SQL left them
/// (PostgREST's response GUCs), unset or empty as `None`.
pub fn response_settings() -> (Option<String>, Option<String>) {
    (placeholder(c"response.status"), placeholder(c"response.headers"))
}

pub fn aggregates_enabled() -> bool {
    AGGREGATES_ENABLED.get() || is_true(placeholder(c"pgrst.db_aggregates_enabled"))
}

pub fn plan_enabled() -> bool {
    PLAN_ENABLED.get() || is_true(placeholder(c"pgrst.db_plan_enabled"))
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TxEnd {
    pub rollback: bool,
    /// `Prefer: tx=commit|rollback` may change the default.
    pub overridable: bool,
}

pub fn tx_end() -> TxEnd {
    match with_fallback(&TX_END, c"pgrst.db_tx_end", "commit").as_str() {
        "commit-allow-override" => TxEnd { rollback: false, overridable: true },
        "rollback" => TxEnd { rollback: true, overridable: false },
        "rollback-allow-override" => TxEnd { rollback: true, overridable: true },
        _ => TxEnd { rollback: false, overridable: false },
    }
}
