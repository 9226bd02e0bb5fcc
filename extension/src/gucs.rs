//! Every `fluxbase.*` setting, registered once in `init()`.
use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};
use std::ffi::CString;

/// Schemas the REST API exposes, comma-separated; the first is the default.
pub static DB_SCHEMAS: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c"public"));
/// Role used when the claims carry no `role`.
pub static ANON_ROLE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c"anon"));
/// Upper bound on rows a read returns; 0 means no bound.
pub static MAX_ROWS: GucSetting<i32> = GucSetting::<i32>::new(0);

pub fn init() {
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

pub fn string(setting: &GucSetting<Option<CString>>, default: &str) -> String {
    setting
        .get()
        .and_then(|s| s.into_string().ok())
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| default.to_string())
}

pub fn db_schemas() -> Vec<String> {
    string(&DB_SCHEMAS, "public").split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()
}
