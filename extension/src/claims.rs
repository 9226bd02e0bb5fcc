//! Request context for RLS: role switch and `request.*` settings, set through
//! the GUC API (no SQL parsing), transaction-local like `SET LOCAL`.
use pgrx::pg_sys;
use serde_json::Value;
use std::ffi::CString;

use crate::gucs;

/// The claims `auth.*` reads through `request.jwt.claim.<name>`.
const PER_CLAIM: [(&str, &str); 3] =
    [("sub", "request.jwt.claim.sub"), ("role", "request.jwt.claim.role"), ("email", "request.jwt.claim.email")];

/// What the proxy knows about the HTTP request, exposed to policies and
/// functions as PostgREST exposes it.
pub struct RequestInfo<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub headers: &'a Value,
}

/// `claims_text` is `claims` as JSON text (the text the caller sent: no
/// second serialisation per request).
pub fn authenticate(claims: &Value, claims_text: &str, request: Option<&RequestInfo<'_>>) {
    let role = claims
        .get("role")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| gucs::string(&gucs::ANON_ROLE, "anon"));
    set_local("request.jwt.claims", claims_text);
    // Supabase's auth.uid(), auth.role() and auth.email() read PostgREST's
    // legacy per-claim settings first: with them set, a policy that calls
    // auth.uid() costs a setting lookup per row instead of parsing the
    // claims JSON per row.
    for (claim, setting) in PER_CLAIM {
        if let Some(value) = claims.get(claim).and_then(Value::as_str).filter(|v| !v.contains('\0')) {
            set_local(setting, value);
        }
    }
    if let Some(req) = request {
        set_local("request.method", req.method);
        set_local("request.path", req.path);
        set_local("request.headers", &req.headers.to_string());
    }
    // Last, so that a refused role (42501 from Postgres' own membership check)
    // is the error the caller sees.
    set_local("role", &role);
}

pub fn set_local(name: &str, value: &str) {
    set(name, value, pg_sys::GucAction::GUC_ACTION_LOCAL);
}

/// Sets `name` for the session, unless it already has `value`. For settings
/// every request names anyway (`search_path`): keeping the value between
/// requests is then safe, and the common case costs a string comparison
/// instead of a GUC set and its restore at commit.
pub fn ensure_session(name: &str, value: &str) {
    let c_name = CString::new(name).expect("GUC names have no NUL");
    // SAFETY: a valid C string in; the result is NULL or a C string owned by
    // the GUC machinery, read before anything else runs.
    let same = unsafe {
        let current = pg_sys::GetConfigOption(c_name.as_ptr(), true, false);
        !current.is_null() && std::ffi::CStr::from_ptr(current).to_bytes() == value.as_bytes()
    };
    if !same {
        set(name, value, pg_sys::GucAction::GUC_ACTION_SET);
    }
}

fn set(name: &str, value: &str, action: pg_sys::GucAction::Type) {
    let name = CString::new(name).expect("GUC names have no NUL");
    // A NUL inside a claim would truncate the value; refuse it instead.
    let value = match CString::new(value) {
        Ok(v) => v,
        Err(_) => pgrx::error!("request context values must not contain NUL bytes"),
    };
    // SAFETY: both pointers are valid C strings for the duration of the call;
    // ERROR-level failures longjmp and are caught by pgrx's guard.
    unsafe {
        pg_sys::set_config_option(
            name.as_ptr(),
            value.as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_SESSION,
            action,
            true,
            pg_sys::PGERROR as i32,
            false,
        );
    }
}
