//! Request context for RLS: role switch and `request.*` settings, set through
//! the GUC API (no SQL parsing), transaction-local like `SET LOCAL`.
use fluxbase_rest::borrowed::{self, Text};
use pgrx::pg_sys;
use serde::Deserialize;
use std::ffi::{CStr, CString};

use crate::{error, gucs, schema_cache};

/// The claims of a request's JWT that the engine reads, borrowed from the
/// claims' JSON text (which `request.jwt.claims` is set to as it is). Claims
/// that are not strings count as absent.
#[derive(Deserialize, Default)]
pub struct Claims<'a> {
    #[serde(borrow, default)]
    role: Text<'a, true>,
    #[serde(borrow, default)]
    sub: Text<'a, true>,
    #[serde(borrow, default)]
    email: Text<'a, true>,
    #[serde(skip)]
    pub text: &'a str,
}

impl<'a> Claims<'a> {
    pub fn from_json(text: &'a str) -> Result<Claims<'a>, serde_json::Error> {
        if text.trim() == "null" {
            return Ok(Claims { text, ..Claims::default() });
        }
        if !borrowed::is_object(text) {
            return Err(serde::de::Error::custom("the claims must be a JSON object"));
        }
        Ok(Claims { text, ..serde_json::from_str(text)? })
    }

    pub fn role(&self) -> Option<&str> {
        self.role.0.as_deref()
    }

    pub fn sub(&self) -> Option<&str> {
        self.sub.0.as_deref()
    }

    /// The claims `auth.*` reads through `request.jwt.claim.<name>`.
    fn per_claim(&self) -> [(&'static CStr, Option<&str>); 3] {
        [
            (c"request.jwt.claim.sub", self.sub()),
            (c"request.jwt.claim.role", self.role()),
            (c"request.jwt.claim.email", self.email.0.as_deref()),
        ]
    }
}

/// What the proxy knows about the HTTP request, exposed to policies and
/// functions as PostgREST exposes it.
pub struct RequestInfo<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// The request headers as a JSON object (text).
    pub headers: &'a str,
}

pub fn authenticate(claims: &Claims<'_>, request: Option<&RequestInfo<'_>>) {
    let role = match claims.role() {
        Some(role) => role.to_string(),
        None => gucs::string(&gucs::ANON_ROLE, "anon"),
    };
    apply_role_settings(&role);
    set_local(c"request.jwt.claims", claims.text);
    // Supabase's auth.uid(), auth.role() and auth.email() read PostgREST's
    // legacy per-claim settings first: with them set, a policy that calls
    // auth.uid() costs a setting lookup per row instead of parsing the
    // claims JSON per row.
    for (setting, value) in claims.per_claim() {
        if let Some(value) = value.filter(|v| !v.contains('\0')) {
            set_local(setting, value);
        }
    }
    if let Some(req) = request {
        set_local(c"request.method", req.method);
        set_local(c"request.path", req.path);
        set_local(c"request.headers", req.headers);
    }
    // Last, so that a refused role (42501 from Postgres' own membership check)
    // is the error the caller sees.
    set_local(c"role", &role);
}

unsafe extern "C-unwind" {
    // utils/timeout.h, not in pgrx's bindings.
    fn enable_timeout_after(id: std::ffi::c_int, delay_ms: std::ffi::c_int);
    fn disable_timeout(id: std::ffi::c_int, keep_indicator: bool);
}

/// `STATEMENT_TIMEOUT` of `TimeoutId` (utils/timeout.h, the same in 15–18).
const STATEMENT_TIMEOUT: std::ffi::c_int = 3;

/// Applies `role`'s own settings (`ALTER ROLE … SET`, Supabase's
/// `statement_timeout` of anon and authenticated among them)
/// transaction-locally, as logging in as that role would. A setting the
/// session user may not set is skipped. `statement_timeout` is armed anew:
/// Postgres arms it when a statement starts, and the request's statement
/// has started.
fn apply_role_settings(role: &str) {
    let settings = schema_cache::role_settings(role);
    let mut timeout = false;
    for (name, value) in settings.iter() {
        // SAFETY: valid C strings; with elevel DEBUG1 a refused setting
        // returns 0 instead of raising.
        let applied = unsafe {
            pg_sys::set_config_option(
                name.as_ptr(),
                value.as_ptr(),
                pg_sys::GucContext::PGC_USERSET,
                pg_sys::GucSource::PGC_S_SESSION,
                pg_sys::GucAction::GUC_ACTION_LOCAL,
                true,
                pg_sys::DEBUG1 as i32,
                false,
            )
        };
        timeout |= applied > 0 && name.to_bytes().eq_ignore_ascii_case(b"statement_timeout");
    }
    if timeout {
        // SAFETY: reads a GUC variable and (re)schedules a predefined timeout,
        // as postgres.c does at a statement's start; an ERROR it could raise
        // is caught at the boundary.
        unsafe {
            pg_sys::ffi::pg_guard_ffi_boundary(|| match pg_sys::StatementTimeout {
                ms if ms > 0 => enable_timeout_after(STATEMENT_TIMEOUT, ms),
                _ => disable_timeout(STATEMENT_TIMEOUT, false),
            })
        }
    }
}

pub fn set_local(name: &CStr, value: &str) {
    set(name, value, pg_sys::GucAction::GUC_ACTION_LOCAL);
}

/// Sets `name` for the session, unless it already has `value`. For settings
/// every request names anyway (`search_path`): keeping the value between
/// requests is then safe, and the common case costs a string comparison
/// instead of a GUC set and its restore at commit.
pub fn ensure_session(name: &CStr, value: &str) {
    // SAFETY: a valid C string in; the result is NULL or a C string owned by
    // the GUC machinery, read before anything else runs.
    let same = unsafe {
        let current = pg_sys::GetConfigOption(name.as_ptr(), true, false);
        !current.is_null() && std::ffi::CStr::from_ptr(current).to_bytes() == value.as_bytes()
    };
    if !same {
        set(name, value, pg_sys::GucAction::GUC_ACTION_SET);
    }
}

fn set(name: &CStr, value: &str, action: pg_sys::GucAction::Type) {
    // A NUL inside a claim would truncate the value; refuse it instead.
    let value = match CString::new(value) {
        Ok(v) => v,
        Err(_) => error::nul_in_setting("request context values must not contain NUL bytes"),
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

#[cfg(test)]
mod tests {
    use super::Claims;

    #[test]
    fn claims_are_read_from_an_object_only() {
        let c = Claims::from_json(r#"{"role":"authenticated","sub":"u1","email":5,"exp":1}"#).unwrap();
        assert_eq!((c.role(), c.sub(), c.email.0.as_deref()), (Some("authenticated"), Some("u1"), None));
        assert!(Claims::from_json(r#"["service_role"]"#).is_err());
        assert_eq!(Claims::from_json("null").unwrap().role(), None);
    }
}
