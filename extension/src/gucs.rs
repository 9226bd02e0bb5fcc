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
/// Upper bound on rows a read returns; 0: PostgREST's `pgrst.db_max_rows`, else none.
pub static MAX_ROWS: GucSetting<i32> = GucSetting::<i32>::new(0);

pub fn init() {
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
        c"",
        &MAX_ROWS,
        0,
        i32::MAX,
        GucContext::Suset,
        GucFlags::default(),
    );
}

pub fn max_rows() -> i32 {
    match MAX_ROWS.get() {
        0 => placeholder(c"pgrst.db_max_rows").and_then(|v| v.parse().ok()).filter(|n| *n > 0).unwrap_or(0),
        n => n,
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

pub fn db_schemas() -> Vec<String> {
    let configured = DB_SCHEMAS
        .get()
        .and_then(|s| s.into_string().ok())
        .filter(|s| !s.trim().is_empty())
        .or_else(|| placeholder(c"pgrst.db_schemas"))
        .unwrap_or_else(|| "public".into());
    configured.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()
}
