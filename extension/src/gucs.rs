//! Every `fluxbase.*` setting, and the `pgrst.*` and `response.*` ones Fluxbase reads as PostgREST does, registered once in `init()`.
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

/// PostgREST's in-database settings (`ALTER ROLE authenticator SET
/// pgrst.db_schemas = 'api'`), honoured where the Fluxbase one is unset.
/// Registered rather than read as placeholders: a registered setting is a
/// pointer read, a placeholder a search of every setting by name, on each
/// request. Users may set them, as they may set any placeholder.
pub static PGRST_DB_SCHEMAS: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static PGRST_DB_MAX_ROWS: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static PGRST_DB_AGGREGATES_ENABLED: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static PGRST_DB_PLAN_ENABLED: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static PGRST_DB_TX_END: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static PGRST_DB_EXTRA_SEARCH_PATH: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static PGRST_DB_PRE_REQUEST: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
/// PostgREST's response settings, which the request's SQL sets.
pub static RESPONSE_STATUS: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static RESPONSE_HEADERS: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);

/// Registered with their PostgREST names, for anyone to set.
const BORROWED: [(&std::ffi::CStr, &std::ffi::CStr, &GucSetting<Option<CString>>); 9] = [
    (c"pgrst.db_schemas", c"PostgREST's db-schemas; fluxbase.db_schemas wins where set.", &PGRST_DB_SCHEMAS),
    (c"pgrst.db_max_rows", c"PostgREST's db-max-rows; wins over fluxbase.max_rows where set.", &PGRST_DB_MAX_ROWS),
    (c"pgrst.db_aggregates_enabled", c"PostgREST's db-aggregates-enabled.", &PGRST_DB_AGGREGATES_ENABLED),
    (c"pgrst.db_plan_enabled", c"PostgREST's db-plan-enabled.", &PGRST_DB_PLAN_ENABLED),
    (c"pgrst.db_tx_end", c"PostgREST's db-tx-end; fluxbase.tx_end wins where set.", &PGRST_DB_TX_END),
    (
        c"pgrst.db_extra_search_path",
        c"PostgREST's db-extra-search-path; fluxbase.extra_search_path wins where set.",
        &PGRST_DB_EXTRA_SEARCH_PATH,
    ),
    (
        c"pgrst.db_pre_request",
        c"PostgREST's db-pre-request; fluxbase.pre_request wins where set.",
        &PGRST_DB_PRE_REQUEST,
    ),
    (c"response.status", c"The status of the REST response (set by the request's SQL).", &RESPONSE_STATUS),
    (c"response.headers", c"Headers of the REST response, a JSON array of one-key objects.", &RESPONSE_HEADERS),
];

pub fn init() {
    for (name, description, setting) in BORROWED {
        GucRegistry::define_string_guc(name, description, c"", setting, GucContext::Userset, GucFlags::default());
    }
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
    text(&PGRST_DB_MAX_ROWS).and_then(|v| v.parse().ok()).filter(|n| *n > 0).unwrap_or_else(|| MAX_ROWS.get())
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

/// A string setting's value, or `default` where it is unset or blank.
pub fn string(setting: &GucSetting<Option<CString>>, default: &str) -> String {
    read(setting, |s| (!s.trim().is_empty()).then(|| s.to_string())).unwrap_or_else(|| default.to_string())
}

/// A string setting's text, trimmed; `None` where it is unset or blank.
fn text(setting: &GucSetting<Option<CString>>) -> Option<String> {
    read(setting, |s| Some(s.trim()).filter(|t| !t.is_empty()).map(str::to_string))
}

/// `f` of a string setting's text, read in place (one pointer read where the
/// setting is unset, the common case); `None` where it is unset or not UTF-8.
fn read<T>(setting: &GucSetting<Option<CString>>, f: impl FnOnce(&str) -> Option<T>) -> Option<T> {
    // SAFETY: the pointer is NULL or a C string owned by the GUC machinery,
    // read and copied before anything else runs.
    unsafe {
        let value = *setting.as_ptr();
        if value.is_null() {
            return None;
        }
        std::ffi::CStr::from_ptr(value).to_str().ok().and_then(f)
    }
}

/// A Fluxbase string setting, else its PostgREST counterpart, else `default`.
fn with_fallback(setting: &GucSetting<Option<CString>>, pgrst: &GucSetting<Option<CString>>, default: &str) -> String {
    text(setting).or_else(|| text(pgrst)).unwrap_or_else(|| default.to_string())
}

fn list(value: &str) -> Vec<String> {
    value.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()
}

/// A boolean as Postgres reads one (`on`, `true`, `yes`, `1`).
fn is_true(value: Option<String>) -> bool {
    value.is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "on" | "true" | "yes" | "1" | "t" | "y"))
}

pub fn db_schemas() -> Vec<String> {
    list(&with_fallback(&DB_SCHEMAS, &PGRST_DB_SCHEMAS, "public"))
}

pub fn extra_search_path() -> Vec<String> {
    list(&with_fallback(&EXTRA_SEARCH_PATH, &PGRST_DB_EXTRA_SEARCH_PATH, "public"))
}

/// The pre-request function's name as configured (`schema.name` or `name`).
pub fn pre_request() -> Option<String> {
    text(&PRE_REQUEST).or_else(|| text(&PGRST_DB_PRE_REQUEST))
}

/// `response.status` and `response.headers` as the request's SQL left them
/// (PostgREST's response GUCs), unset or empty as `None`.
pub fn response_settings() -> (Option<String>, Option<String>) {
    (text(&RESPONSE_STATUS), text(&RESPONSE_HEADERS))
}

pub fn aggregates_enabled() -> bool {
    AGGREGATES_ENABLED.get() || is_true(text(&PGRST_DB_AGGREGATES_ENABLED))
}

pub fn plan_enabled() -> bool {
    PLAN_ENABLED.get() || is_true(text(&PGRST_DB_PLAN_ENABLED))
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TxEnd {
    pub rollback: bool,
    /// `Prefer: tx=commit|rollback` may change the default.
    pub overridable: bool,
}

pub fn tx_end() -> TxEnd {
    match with_fallback(&TX_END, &PGRST_DB_TX_END, "commit").as_str() {
        "commit-allow-override" => TxEnd { rollback: false, overridable: true },
        "rollback" => TxEnd { rollback: true, overridable: false },
        "rollback-allow-override" => TxEnd { rollback: true, overridable: true },
        _ => TxEnd { rollback: false, overridable: false },
    }
}
