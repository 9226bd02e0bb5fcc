//! `/auth/v1`: Supabase Auth (GoTrue) compatible sign-in. The proxy hashes
//! passwords (on its hashing threads) and signs access tokens; every state
//! change is one `fluxbase.auth_*` function in the database (sql/auth/, one
//! file per area as here), so rotation, reuse detection and lockout are
//! atomic and shared by all proxies. Each call carries the request's context
//! (`AuthCall::query_row`); refusals arrive as `FAnnn` errors (`db_error`)
//! or, when their writes must commit, as `{error, status, msg}` (`refusal`).
//!
//! The room: `routes.rs` is the route table; each area's handlers are an
//! `impl AuthCall` in their own file (`session`, `user`, `mfa`, `otp`,
//! `admin`, `oauth`, `oauth_server`, `sso`, `passkey`, `web3`); the clients
//! of the outside world (`mailer`, `sms`, `providers`, `saml`, `breach`) and
//! the crypto (`password`, `signing`, `totp`, `webauthn`) sit beside them,
//! built once into `AuthService` when the proxy starts.
use bytes::Bytes;
use http::StatusCode;
use rand::RngCore;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio_postgres::types::ToSql;

use crate::config::{invalid, Config};
use crate::db::Cached;
use crate::error::ApiError;
use crate::http::{json_response, RequestContext, Response};
use crate::jwt::{Caller, VerifyingKey};
use crate::state::AppState;

mod admin;
pub mod breach;
pub mod mailer;
mod mfa;
mod oauth;
mod oauth_server;
mod otp;
mod passkey;
pub mod password;
pub mod providers;
mod routes;
pub mod saml;
mod session;
pub mod signing;
pub mod sms;
mod sso;
pub mod totp;
mod user;
mod web3;
pub mod webauthn;

pub use routes::handle;

/// The auth service's own state, built once at start: the hashing threads,
/// the signing keys and the clients of mail, SMS, OAuth/OIDC, SAML and the
/// leaked-password list. Building it also checks the settings only these
/// clients can judge, so a bad one stops the start (exit 64) naming its key.
pub struct AuthService {
    pub hasher: password::Hasher,
    /// Keys that sign `/auth/v1` sessions, when `jwt.signing_jwks_file` is set.
    pub signing: Option<signing::SigningKeys>,
    /// SMTP for `/auth/v1` e-mail, when configured.
    pub mailer: Option<mailer::Mailer>,
    /// SAML identity providers, when configured.
    pub saml: Option<saml::Saml>,
    /// Leaked-password check, when configured.
    pub breach: Option<breach::BreachCheck>,
    /// SMS for phone sign-in, when configured.
    pub sms: Option<sms::Sms>,
    /// OAuth/OIDC providers of `/auth/v1/authorize`.
    pub providers: providers::Providers,
    /// `auth.mfa_encryption_key`, parsed once.
    pub mfa_key: Option<[u8; 32]>,
}

impl AuthService {
    /// Errors name the setting, as configuration errors do (exit 64).
    pub fn new(config: &Config) -> Result<AuthService, String> {
        let auth = &config.auth;
        let named = |key: &'static str| move |e: String| invalid(key, e).to_string();
        let signing = config
            .jwt
            .signing_jwks_file
            .as_deref()
            .map(signing::SigningKeys::load)
            .transpose()
            .map_err(named("jwt.signing_jwks_file"))?;
        let mfa_key = auth
            .mfa_encryption_key
            .as_deref()
            .map(totp::parse_key)
            .transpose()
            .map_err(|e| invalid("auth.mfa_encryption_key", e).to_string())?;
        for (name, provider) in &auth.providers {
            providers::check_provider(name, provider).map_err(named("auth.providers"))?;
        }
        for (phone, code) in &auth.sms_test_otp {
            if sms::normalise_phone(phone).as_deref() != Some(phone.as_str()) || code.is_empty() {
                let reason = format!("{phone:?}: digits only, no +, and a code");
                return Err(invalid("auth.sms_test_otp", reason).to_string());
            }
        }
        Ok(AuthService {
            hasher: password::Hasher::new(auth)?,
            mailer: mailer::Mailer::new(auth)?,
            providers: providers::Providers::new(auth, &config.public_url())?,
            sms: sms::Sms::new(auth).map_err(named("auth.sms_provider"))?,
            saml: saml::Saml::new(auth, &config.public_url()).map_err(named("auth.saml_providers"))?,
            breach: breach::BreachCheck::new(auth).map_err(named("auth.password_breached_file"))?,
            signing,
            mfa_key,
        })
    }

    /// The public keys of the session signing keys, for the token verifier.
    pub fn verifying_keys(&self) -> Result<Vec<VerifyingKey>, String> {
        let keys = self.signing.as_ref().map(|s| s.verifying_keys()).transpose();
        keys.map(Option::unwrap_or_default).map_err(|e| invalid("jwt.signing_jwks_file", e).to_string())
    }
}

/// One request being served by the auth service: the shared state, the
/// service's clients and the request's context. The handlers of every area
/// are methods of it, in the area's file.
pub(crate) struct AuthCall<'a> {
    pub(crate) state: &'a AppState,
    pub(crate) service: &'a AuthService,
    pub(crate) ctx: &'a RequestContext,
}

/// `code_challenge` and `code_challenge_method` of a supabase-js request in
/// the PKCE flow (both or neither).
pub(crate) fn pkce_of(body: &Value) -> Result<Option<(String, String)>, ApiError> {
    match (body_text(body, "code_challenge"), body_text(body, "code_challenge_method").map(str::to_ascii_lowercase)) {
        (None, _) => Ok(None),
        (Some(c), Some(m)) if providers::valid_pkce(c) && (m == "s256" || m == "plain") => Ok(Some((c.to_string(), m))),
        _ => Err(ApiError::auth(
            400,
            "validation_failed",
            "code_challenge must be 43-128 characters with method s256 or plain",
        )),
    }
}

fn settings(state: &AppState, service: &AuthService) -> Value {
    let a = &state.config.auth;
    let phone = service.sms.is_some() || a.sms_autoconfirm || !a.sms_test_otp.is_empty();
    let mut external = json!({ "email": true, "phone": phone, "anonymous_users": a.anonymous_users });
    for name in service.providers.names() {
        external[name] = json!(true);
    }
    json!({
        "external": external,
        "disable_signup": a.disable_signup,
        "mailer_autoconfirm": a.autoconfirm(),
        "phone_autoconfirm": a.sms_autoconfirm,
        "sms_provider": service.sms.as_ref().map(|s| s.name()).unwrap_or(""),
        "saml_enabled": service.saml.is_some(),
    })
}

fn parse_body(body: &Bytes) -> Result<Value, ApiError> {
    if body.is_empty() {
        return Ok(json!({}));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(v @ Value::Object(_)) => Ok(v),
        _ => Err(ApiError::auth(400, "bad_json", "Could not parse request body as JSON")),
    }
}

/// A string field of a request body, trimmed; absent when missing, not a
/// string, or empty.
pub(crate) fn body_text<'v>(body: &'v Value, key: &str) -> Option<&'v str> {
    body.get(key).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty())
}

fn user_id(s: &str) -> Result<uuid::Uuid, ApiError> {
    uuid::Uuid::parse_str(s).map_err(|_| ApiError::auth(404, "user_not_found", "User not found"))
}

fn factor_id(s: &str) -> Result<uuid::Uuid, ApiError> {
    uuid::Uuid::parse_str(s).map_err(|_| ApiError::auth(404, "mfa_factor_not_found", "Factor not found"))
}

fn require_service_role(caller: &Caller) -> Result<(), ApiError> {
    if caller.role() == "service_role" {
        Ok(())
    } else {
        Err(ApiError::auth(403, "not_admin", "User not allowed"))
    }
}

/// The signed-in user of a request: `sub` and `session_id` of its token.
pub(crate) fn session_of(caller: &Caller) -> Result<(uuid::Uuid, Option<uuid::Uuid>), ApiError> {
    let claim = |k: &str| caller.claims.get(k).and_then(Value::as_str).and_then(|s| uuid::Uuid::parse_str(s).ok());
    match claim("sub") {
        Some(sub) if !caller.anonymous => Ok((sub, claim("session_id"))),
        _ => Err(ApiError::auth(401, "no_authorization", NO_SESSION)),
    }
}

/// `session_of`'s refusal, which `no_session` words as GoTrue does.
const NO_SESSION: &str = "This endpoint requires a valid Bearer token";

/// GoTrue's `requireAuthentication` for a request without a user's session:
/// no `Authorization` header, `401 no_authorization` "This endpoint
/// requires a Bearer token"; a token without `sub` (the anon key, as
/// supabase-js sends it when signed out), `403 bad_jwt` "invalid claim:
/// missing sub claim"; a `sub` that is no UUID, `400 bad_jwt` "invalid
/// claim: sub claim must be a UUID". Other errors pass as they are.
pub(crate) fn no_session(e: ApiError, caller: &Caller, bearer: bool) -> ApiError {
    let ApiError::Auth { status, error_code, msg } = &e else { return e };
    if *status != StatusCode::UNAUTHORIZED || error_code != "no_authorization" || msg != NO_SESSION {
        return e;
    }
    let sub = caller.claims.get("sub").and_then(Value::as_str).filter(|s| !s.is_empty());
    match (bearer, sub) {
        (false, _) => ApiError::auth(401, "no_authorization", "This endpoint requires a Bearer token"),
        (true, None) => ApiError::auth(403, "bad_jwt", "invalid claim: missing sub claim"),
        (true, Some(sub)) if uuid::Uuid::parse_str(sub).is_err() => {
            ApiError::auth(400, "bad_jwt", "invalid claim: sub claim must be a UUID")
        }
        // A token of the anonymous role that names a user: refused as before.
        _ => e,
    }
}

/// An e-mail address as GoTrue accepts it (`checkmail.ValidateFormat`):
/// a local part of `a-zA-Z0-9.!#$%&'*+/=?^_`{|}~-`, one `@`, and a domain of
/// dot-separated labels (letters, digits, inner hyphens, 1–63 each).
fn valid_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else { return false };
    let local_ok = !local.is_empty()
        && local.bytes().all(|b| b.is_ascii_alphanumeric() || b"\x2e!#$%&'*+/=?^_`{|}~-".contains(&b));
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    local_ok && domain.split('.').all(label_ok)
}

/// `phone` of a request body, as stored: digits only (E.164 without `+`).
fn normalise_phone(body: &Value) -> Result<Option<String>, ApiError> {
    match body_text(body, "phone") {
        None => Ok(None),
        Some(p) => sms::normalise_phone(p)
            .map(Some)
            .ok_or_else(|| ApiError::auth(400, "validation_failed", "Invalid phone number format (E.164 required)")),
    }
}

/// `email` of a request body, lower-cased, checked as GoTrue's
/// `validateEmail` checks it on every path (sign-up, sign-in codes, admin
/// createUser, invite, generate_link): `400 validation_failed`.
fn normalise_email(body: &Value) -> Result<Option<String>, ApiError> {
    match body_text(body, "email") {
        None => Ok(None),
        Some(e) if e.len() > 255 => Err(ApiError::auth(400, "validation_failed", "An email address is too long")),
        Some(e) if valid_email(e) => Ok(Some(e.to_lowercase())),
        Some(_) => Err(ApiError::auth(400, "validation_failed", "Unable to validate email address: invalid format")),
    }
}

/// As `normalise_email`, for a route that needs the address.
fn required_email(body: &Value) -> Result<String, ApiError> {
    normalise_email(body)?.ok_or_else(|| ApiError::auth(400, "validation_failed", "An email address is required"))
}

/// A bearer token refused on `/auth/v1`, worded as GoTrue's
/// `parseJWTClaims` words it (golang-jwt's reasons): `403 bad_jwt`
/// "invalid JWT: unable to parse or verify signature, …".
pub fn gotrue_jwt_error(e: ApiError) -> ApiError {
    let ApiError::Jwt { message, .. } = &e else { return e };
    let reason = match message.as_str() {
        m if m.starts_with("Expected 3 parts") => {
            "token is malformed: token contains an invalid number of segments".to_string()
        }
        "JWT expired" => "token has invalid claims: token is expired".to_string(),
        "JWT not yet valid" => "token has invalid claims: token is not valid yet".to_string(),
        "JWT issued at future" => "token has invalid claims: token used before issued".to_string(),
        "JWT cryptographic operation failed" => "token signature is invalid: signature is invalid".to_string(),
        "Wrong or unsupported encoding algorithm" => "token is malformed: could not JSON decode header".to_string(),
        "No suitable key or wrong key type" => {
            "token is unverifiable: error while executing keyfunc: no suitable key".to_string()
        }
        other => format!("token is malformed: {other}"),
    };
    ApiError::auth(403, "bad_jwt", format!("invalid JWT: unable to parse or verify signature, {reason}"))
}

/// A refresh token: 32 random bytes, URL-safe; the database sees only its SHA-256.
pub(crate) fn new_refresh_token() -> (String, String) {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let hash = sha256_hex(&token);
    (token, hash)
}

pub(crate) fn sha256_hex(s: &str) -> String {
    Sha256::digest(s.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Postgres errors `FAnnn` are auth refusals: status nnn, `error_code` in
/// the message, the client's message in the hint; a 429 whose detail is a
/// number of seconds is sent with that `Retry-After`.
pub(crate) fn db_error(e: tokio_postgres::Error) -> ApiError {
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        if let Some(status) = code.strip_prefix("FA").and_then(|n| n.parse::<u16>().ok()) {
            let msg = db.hint().unwrap_or(db.message());
            if let Some(wait) = db.detail().and_then(|d| d.parse::<u64>().ok()).filter(|_| status == 429) {
                return ApiError::RateLimited { retry_after: wait, msg: msg.to_string() };
            }
            return ApiError::auth(status, db.message(), msg);
        }
    }
    crate::db::query_error(e, true)
}

/// A refusal that must still commit (a reuse revokes the session, a wrong
/// password or code counts, a one-time token is used up) comes back from
/// the database as `{error, status, msg}`; sql/auth/helpers.sql lists them.
pub(crate) fn refusal(issued: &Value) -> Result<(), ApiError> {
    match issued.get("error").and_then(Value::as_str) {
        Some(code) => {
            let status = issued.get("status").and_then(Value::as_u64).unwrap_or(400) as u16;
            Err(ApiError::auth(status, code, issued.get("msg").and_then(Value::as_str).unwrap_or(code)))
        }
        None => Ok(()),
    }
}

/// An OAuth error an auth function returned, `{error, error_description}`
/// (GoTrue's `apierrors.OAuthError`: a refusal of the token endpoints that
/// commits nothing): the 400 body as GoTrue sends it.
pub(crate) fn oauth_refusal(issued: &Value) -> Option<Response> {
    let error = issued.get("error")?.as_str()?;
    let description = issued.get("error_description")?.as_str()?;
    Some(oauth_server::oauth_error(error, description))
}

/// `select` (`SELECT fluxbase.auth_…($1, …)`, no FROM) run after the
/// request's context is set as transaction-local settings, in the same
/// statement: the auth functions read `request.ip`, `request.user_agent`
/// and `request.id` (sql/auth/helpers.sql). The context's parameters come
/// after the call's `arity` own ones, which keep their numbers.
fn in_context(select: &str, arity: usize) -> String {
    debug_assert!(select.starts_with("SELECT ") && !select.contains(" FROM "));
    format!(
        "WITH ctx AS MATERIALIZED (SELECT set_config('request.ip', ${}, true), \
         set_config('request.user_agent', ${}, true), set_config('request.id', ${}, true)) {select} FROM ctx",
        arity + 1,
        arity + 2,
        arity + 3,
    )
}

impl AuthCall<'_> {
    pub(crate) async fn call_json(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Response, ApiError> {
        let value = self.query_json(sql, params).await?;
        Ok(json_response(StatusCode::OK, &value))
    }

    /// The JSON an auth function returns (`null` for SQL NULL), called in
    /// the request's context.
    pub(crate) async fn query_json(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Value, ApiError> {
        let row = self.query_row(sql, params).await?;
        Ok(row.get::<_, Option<Value>>(0).unwrap_or(Value::Null))
    }

    /// One `SELECT fluxbase.auth_…(…)` in the request's context (see
    /// `in_context`): one round trip, a prepared statement per call site.
    pub(crate) async fn query_row(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<tokio_postgres::Row, ApiError> {
        let client = self.state.client().await?;
        client.query_one_cached(&in_context(sql, params.len()), &self.with_context(params)).await.map_err(db_error)
    }

    /// As `query_row`, for a function whose result is not needed.
    pub(crate) async fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<(), ApiError> {
        let client = self.state.client().await?;
        client.execute_cached(&in_context(sql, params.len()), &self.with_context(params)).await.map_err(db_error)?;
        Ok(())
    }

    /// A call's parameters, then the context's (`in_context`).
    fn with_context<'p>(&'p self, params: &[&'p (dyn ToSql + Sync)]) -> Vec<&'p (dyn ToSql + Sync)> {
        let ctx = self.ctx;
        let mut all: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(params.len() + 3);
        all.extend_from_slice(params);
        all.extend_from_slice(&[&ctx.ip, &ctx.user_agent, &ctx.request_id]);
        all
    }

    /// Counts one hit on each `(key, limit)`; refuses with 429 and
    /// `Retry-After` when a limit is exceeded. Keys are shared by every proxy.
    pub(crate) async fn rate_limit(&self, hits: &[(String, u32)]) -> Result<(), ApiError> {
        let hits: Vec<&(String, u32)> = hits.iter().filter(|(_, limit)| *limit > 0).collect();
        if hits.is_empty() {
            return Ok(());
        }
        let keys: Vec<&str> = hits.iter().map(|(k, _)| k.as_str()).collect();
        let limits: Vec<i32> = hits.iter().map(|(_, l)| *l as i32).collect();
        let window = self.state.config.auth.rate_limit_window_seconds as i32;
        let client = self.state.client().await?;
        let row = client
            .query_one_cached("SELECT fluxbase.auth_rate_hit($1, $2, $3)", &[&keys, &limits, &window])
            .await
            .map_err(db_error)?;
        match row.get::<_, i32>(0) {
            0 => Ok(()),
            wait => Err(ApiError::RateLimited {
                retry_after: wait as u64,
                msg: format!("Request rate limit reached. Try again in {wait} seconds."),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::admin::ban_seconds;
    use super::*;

    #[test]
    fn the_context_follows_the_calls_own_parameters() {
        assert_eq!(
            in_context("SELECT fluxbase.auth_logout($1, $2, $3)", 3),
            "WITH ctx AS MATERIALIZED (SELECT set_config('request.ip', $4, true), \
             set_config('request.user_agent', $5, true), set_config('request.id', $6, true)) \
             SELECT fluxbase.auth_logout($1, $2, $3) FROM ctx"
        );
    }

    #[test]
    fn emails_and_ban_durations() {
        assert!(valid_email("ada@example.com"));
        assert!(valid_email("ada@localhost"), "GoTrue (checkmail) needs no dot in the domain");
        assert!(!valid_email("@example.com"));
        assert_eq!(ban_seconds("24h").unwrap(), 86_400);
        assert_eq!(ban_seconds("1h30m").unwrap(), 5_400);
        assert_eq!(ban_seconds("none").unwrap(), 0);
        assert!(ban_seconds("forever").is_err());
        let (token, hash) = new_refresh_token();
        assert_eq!(token.len(), 43);
        assert_eq!(hash, sha256_hex(&token));
        assert_eq!(hash.len(), 64);
    }

    fn code(r: Result<impl std::fmt::Debug, ApiError>) -> (u16, String) {
        let e = r.unwrap_err();
        (e.status().as_u16(), e.code().to_string())
    }

    #[test]
    fn request_bodies_are_read_as_gotrue_reads_them() {
        let body = json!({ "email": "  Ada@Example.com ", "phone": "+1 (555) 010-9999", "blank": "  ", "n": 5 });
        assert_eq!(body_text(&body, "email"), Some("Ada@Example.com"));
        assert_eq!(body_text(&body, "blank"), None);
        assert_eq!(body_text(&body, "n"), None, "not a string");
        assert_eq!(normalise_email(&body).unwrap().as_deref(), Some("ada@example.com"));
        assert_eq!(normalise_phone(&body).unwrap().as_deref(), Some("15550109999"));
        assert_eq!(code(normalise_email(&json!({ "email": "nope" }))), (400, "validation_failed".into()));
        for bad in ["a b@example.com", "a@-x.com", "a@x..com", "@x.com", "a@", "a@x.com.", "a@b@c.com", "a\"b@x.com"] {
            assert_eq!(code(normalise_email(&json!({ "email": bad }))), (400, "validation_failed".into()), "{bad}");
        }
        for good in ["user@localhost", "a.b+tag@sub.example.co", "o'neil@x-y.example"] {
            assert!(normalise_email(&json!({ "email": good })).unwrap().is_some(), "{good}");
        }
        assert_eq!(code(required_email(&json!({}))), (400, "validation_failed".into()));
        assert_eq!(code(normalise_phone(&json!({ "phone": "0123" }))), (400, "validation_failed".into()));
        assert_eq!(code(parse_body(&Bytes::from_static(b"[1]"))), (400, "bad_json".into()), "an array is no body");
        assert_eq!(parse_body(&Bytes::new()).unwrap(), json!({}));
    }

    #[test]
    fn pkce_needs_a_valid_challenge_and_method() {
        let challenge = "a".repeat(43);
        let ok = json!({ "code_challenge": challenge, "code_challenge_method": "S256" });
        assert_eq!(pkce_of(&ok).unwrap(), Some((challenge.clone(), "s256".into())));
        assert_eq!(pkce_of(&json!({})).unwrap(), None);
        for bad in [
            json!({ "code_challenge": "short", "code_challenge_method": "s256" }),
            json!({ "code_challenge": challenge, "code_challenge_method": "md5" }),
            json!({ "code_challenge": challenge }),
        ] {
            assert_eq!(code(pkce_of(&bad)), (400, "validation_failed".into()), "{bad}");
        }
    }

    #[test]
    fn a_session_needs_a_signed_in_user() {
        let user = uuid::Uuid::new_v4();
        let caller = |claims: Value, anonymous| Caller { claims: std::sync::Arc::new(claims), anonymous };
        let signed_in = caller(json!({ "role": "authenticated", "sub": user.to_string() }), false);
        assert_eq!(session_of(&signed_in).unwrap(), (user, None));
        assert_eq!(code(session_of(&caller(json!({ "role": "anon" }), true))), (401, "no_authorization".into()));
        let anon_with_sub = caller(json!({ "role": "anon", "sub": user.to_string() }), true);
        assert_eq!(code(session_of(&anon_with_sub)), (401, "no_authorization".into()));
        assert_eq!(code(require_service_role(&signed_in)), (403, "not_admin".into()));
        // In GoTrue's words, by what was sent.
        let refused = |claims: Value, bearer| {
            let c = caller(claims, true);
            let e = no_session(session_of(&c).unwrap_err(), &c, bearer);
            (e.status().as_u16(), e.code().to_string(), e.to_string())
        };
        assert_eq!(refused(json!({ "role": "anon" }), false).0, 401);
        assert_eq!(
            refused(json!({ "role": "anon" }), true),
            (403, "bad_jwt".into(), "invalid claim: missing sub claim".into())
        );
        assert_eq!(refused(json!({ "role": "anon", "sub": "x" }), true).1, "bad_jwt");
        let other = no_session(ApiError::auth(401, "no_authorization", "else"), &signed_in, true);
        assert_eq!(code(Err::<(), _>(other)), (401, "no_authorization".into()));
        assert!(require_service_role(&caller(json!({ "role": "service_role" }), false)).is_ok());
    }

    #[test]
    fn refusals_that_commit_come_back_as_json() {
        assert!(refusal(&json!({ "user": {} })).is_ok());
        let reused = json!({ "error": "refresh_token_already_used", "status": 400, "msg": "Invalid Refresh Token" });
        assert_eq!(code(refusal(&reused)), (400, "refresh_token_already_used".into()));
        assert_eq!(code(user_id("not-a-uuid")), (404, "user_not_found".into()));
        assert_eq!(code(factor_id("x")), (404, "mfa_factor_not_found".into()));
    }
}
