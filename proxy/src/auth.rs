//! `/auth/v1`: Supabase Auth (GoTrue) compatible sessions. The proxy hashes
//! passwords (on the blocking pool) and signs access tokens; every state
//! change is one `fluxbase.auth_*` function in the database (sql/auth_functions.sql),
//! so rotation, reuse detection and lockout are atomic and shared by all
//! proxies.
use bytes::Bytes;
use http::{Method, StatusCode};
use rand::RngCore;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio_postgres::types::ToSql;

use crate::db::Cached;
use crate::error::ApiError;
use crate::jwt::{sign_hs256, Auth};
use crate::password::Verdict;
use crate::server::{json_response, AppState, Ctx, Response};

pub async fn handle(
    state: &AppState,
    parts: http::request::Parts,
    body: Bytes,
    ctx: &Ctx,
) -> Result<Response, ApiError> {
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    // The apikey (or bearer) must be valid on every route, as behind Supabase's gateway.
    let caller = state.verifier.authenticate(header("authorization"), header("apikey"))?;
    let path = parts.uri.path().strip_prefix("/auth/v1").unwrap_or("").trim_end_matches('/');
    let query = parts.uri.query().unwrap_or("");
    let param = |name: &str| {
        query.split('&').filter_map(|p| p.split_once('=')).find(|(k, _)| *k == name).map(|(_, v)| percent_decode(v))
    };
    let req = Req { state, ctx, user_agent: header("user-agent").unwrap_or("").to_string() };
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match (&parts.method, segments.as_slice()) {
        (&Method::GET, ["health"]) => Ok(json_response(
            StatusCode::OK,
            &json!({ "version": env!("CARGO_PKG_VERSION"), "name": "Fluxbase Auth", "description": "Supabase Auth compatible" }),
        )),
        (&Method::GET, ["settings"]) => Ok(json_response(StatusCode::OK, &settings(state))),
        (&Method::GET, [".well-known", "jwks.json"]) => {
            let keys = state.signing.as_ref().map(|s| s.public_jwks()).unwrap_or_default();
            Ok(json_response(StatusCode::OK, &json!({ "keys": keys })))
        }
        (&Method::GET, [".well-known", "openid-configuration"]) => {
            let issuer = format!("{}/auth/v1", state.config.public_url());
            let algs = json!([state.signing.as_ref().map(|s| s.algorithm()).unwrap_or("HS256")]);
            Ok(json_response(
                StatusCode::OK,
                &json!({
                    "issuer": issuer,
                    "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
                    "token_endpoint": format!("{issuer}/token"),
                    "userinfo_endpoint": format!("{issuer}/user"),
                    "response_types_supported": ["token"],
                    "subject_types_supported": ["public"],
                    "id_token_signing_alg_values_supported": algs,
                    "grant_types_supported": ["password", "refresh_token", "pkce", "id_token"],
                }),
            ))
        }
        (&Method::POST, ["signup"]) => req.signup(&parse_body(&body)?, param("redirect_to")).await,
        (&Method::POST, ["token"]) => match param("grant_type").as_deref() {
            Some("password") => req.password_grant(&parse_body(&body)?).await,
            Some("refresh_token") => req.refresh_grant(&parse_body(&body)?).await,
            Some("pkce") => req.pkce_grant(&parse_body(&body)?).await,
            Some("id_token") => req.id_token_grant(&caller, &parse_body(&body)?).await,
            Some(other) => Err(ApiError::auth(
                400,
                "validation_failed",
                format!("grant_type {other} is not supported by this release"),
            )),
            None => Err(ApiError::auth(400, "validation_failed", "grant_type is required")),
        },
        (&Method::GET, ["authorize"]) => req.oauth_authorize(&query_pairs(query), None).await,
        (&Method::GET, ["callback"]) => req.oauth_callback(&query_pairs(query)).await,
        // Apple (response_mode=form_post) posts the callback as a form.
        (&Method::POST, ["callback"]) => {
            let form = std::str::from_utf8(&body).map_err(|_| ApiError::auth(400, "bad_oauth_callback", "Bad form"))?;
            req.oauth_callback(&query_pairs(form)).await
        }
        (&Method::GET, ["user", "identities", "authorize"]) => {
            if !state.config.auth.manual_linking {
                return Err(ApiError::auth(404, "manual_linking_disabled", "Manual linking is disabled"));
            }
            let (user, session) = session_of(&caller)?;
            // The token's session must still exist: a signed-out token links nothing.
            req.query_json("SELECT fluxbase.auth_user($1, $2)", &[&user, &session]).await?;
            req.oauth_authorize(&query_pairs(query), Some(user)).await
        }
        (&Method::DELETE, ["user", "identities", id]) => req.unlink_identity(&caller, id).await,
        (method, ["passkeys", rest @ ..]) => {
            if !state.config.auth.passkeys {
                return Err(ApiError::auth(422, "passkeys_disabled", "Passkeys are disabled"));
            }
            match (method, rest) {
                (&Method::POST, ["registration", "options"]) => req.passkey_registration_options(&caller).await,
                (&Method::POST, ["registration", "verify"]) => {
                    req.passkey_registration_verify(&caller, &parse_body(&body)?).await
                }
                (&Method::POST, ["authentication", "options"]) => req.passkey_authentication_options().await,
                (&Method::POST, ["authentication", "verify"]) => {
                    req.passkey_authentication_verify(&parse_body(&body)?).await
                }
                (&Method::GET, []) => req.passkeys(session_of(&caller)?.0, None, None, false).await,
                (&Method::PATCH, [id]) => {
                    req.passkeys(session_of(&caller)?.0, Some(id), Some(&parse_body(&body)?), false).await
                }
                (&Method::DELETE, [id]) => req.passkeys(session_of(&caller)?.0, Some(id), None, true).await,
                _ => Err(ApiError::auth(405, "method_not_allowed", "Method not allowed")),
            }
        }
        (&Method::POST, ["sso"]) => req.sso_start(&parse_body(&body)?).await,
        (&Method::GET, ["sso", "saml", "metadata"]) => req.sso_metadata(),
        (&Method::POST, ["sso", "saml", "acs"]) => {
            let form = std::str::from_utf8(&body).map_err(|_| ApiError::auth(400, "validation_failed", "Bad form"))?;
            req.sso_acs(&query_pairs(form)).await
        }
        (&Method::POST, ["otp"] | ["magiclink"]) => {
            let body = parse_body(&body)?;
            let create = body.get("create_user").and_then(Value::as_bool).unwrap_or(true);
            match normalise_phone(&body)? {
                Some(phone) if body.get("email").is_none() => {
                    let data = body.get("data").filter(|d| d.is_object()).cloned();
                    let create = create && !state.config.auth.disable_signup;
                    req.phone_enabled(&phone)?;
                    req.sms_token(&phone, "magiclink", create, data).await?;
                    Ok(json_response(StatusCode::OK, &json!({})))
                }
                _ => req.send_email_token(&body, "magiclink", create, param("redirect_to")).await,
            }
        }
        (&Method::POST, ["invite"]) => {
            require_service_role(&caller)?;
            req.invite(&parse_body(&body)?, param("redirect_to")).await
        }
        (&Method::POST, ["admin", "generate_link"]) => {
            require_service_role(&caller)?;
            req.generate_link(&parse_body(&body)?, param("redirect_to")).await
        }
        (&Method::GET, ["admin", "audit"]) => {
            require_service_role(&caller)?;
            let page: i32 = param("page").and_then(|p| p.parse().ok()).filter(|p| *p >= 1).unwrap_or(1);
            let per_page: i32 =
                param("per_page").and_then(|p| p.parse().ok()).filter(|p| (1..=1000).contains(p)).unwrap_or(50);
            req.call_json("SELECT fluxbase.auth_admin_audit($1, $2)", &[&page, &per_page]).await
        }
        (&Method::POST, ["resend"]) => req.resend(&parse_body(&body)?, param("redirect_to")).await,
        (&Method::POST, ["recover"]) => {
            req.send_email_token(&parse_body(&body)?, "recovery", false, param("redirect_to")).await
        }
        (&Method::GET, ["verify"]) => {
            req.verify_link(param("token").unwrap_or_default(), param("type").unwrap_or_default(), param("redirect_to"))
                .await
        }
        (&Method::POST, ["verify"]) => req.verify_code(&parse_body(&body)?).await,
        (&Method::POST, ["logout"]) => req.logout(&caller, param("scope").as_deref().unwrap_or("global")).await,
        (&Method::GET, ["user"]) => req.user(&caller).await,
        (&Method::PUT, ["user"]) => req.update_user(&caller, &parse_body(&body)?, param("redirect_to")).await,
        (&Method::GET, ["reauthenticate"]) => req.reauthenticate(&caller).await,
        (&Method::POST, ["factors"]) => req.mfa_enroll(&caller, &parse_body(&body)?).await,
        (&Method::POST, ["factors", id, "challenge"]) => req.mfa_challenge(&caller, factor_id(id)?).await,
        (&Method::POST, ["factors", id, "verify"]) => {
            req.mfa_verify(&caller, factor_id(id)?, &parse_body(&body)?).await
        }
        (&Method::DELETE, ["factors", id]) => {
            let (user, session) = session_of(&caller)?;
            let factor = factor_id(id)?;
            let aal = caller.claims.get("aal").and_then(Value::as_str).unwrap_or("aal1").to_string();
            req.call_json(
                "SELECT fluxbase.auth_mfa_unenroll($1, $2, $3, $4, $5, $6)",
                &[&user, &session, &aal, &factor, &ctx.ip, &ctx.request_id],
            )
            .await
        }
        (method, ["admin", "users", rest @ ..]) => {
            require_service_role(&caller)?;
            match (method, rest) {
                (&Method::GET, []) => req.admin_list(param("page"), param("per_page")).await,
                (&Method::POST, []) => req.admin_upsert(None, &parse_body(&body)?).await,
                (&Method::GET, [id]) => req.call_json("SELECT fluxbase.auth_admin_get($1)", &[&user_id(id)?]).await,
                (&Method::PUT, [id]) => req.admin_upsert(Some(user_id(id)?), &parse_body(&body)?).await,
                (&Method::GET, [id, "passkeys"]) => req.passkeys(user_id(id)?, None, None, false).await,
                (&Method::DELETE, [id, "passkeys", passkey]) => {
                    req.passkeys(user_id(id)?, Some(passkey), None, true).await
                }
                (&Method::GET, [id, "factors"]) => {
                    req.call_json("SELECT fluxbase.auth_admin_factors($1)", &[&user_id(id)?]).await
                }
                (&Method::DELETE, [id, "factors", factor]) => {
                    let (id, factor) = (user_id(id)?, factor_id(factor)?);
                    req.call_json(
                        "SELECT fluxbase.auth_admin_delete_factor($1, $2, $3, $4)",
                        &[&id, &factor, &ctx.ip, &ctx.request_id],
                    )
                    .await
                }
                (&Method::DELETE, [id]) => {
                    let id = user_id(id)?;
                    req.call_json("SELECT fluxbase.auth_admin_delete($1, $2, $3)", &[&id, &ctx.ip, &ctx.request_id])
                        .await
                }
                _ => Err(ApiError::auth(405, "method_not_allowed", "Method not allowed")),
            }
        }
        (_, [route, ..])
            if [
                "otp",
                "magiclink",
                "verify",
                "recover",
                "resend",
                "invite",
                "reauthenticate",
                "factors",
                "authorize",
                "callback",
                "sso",
                "user",
                "token",
                "signup",
                "logout",
                "settings",
                "health",
                "passkeys",
                "admin",
            ]
            .contains(route) =>
        {
            Err(ApiError::auth(
                405,
                "method_not_allowed",
                format!("/auth/v1/{route} does not take {} here", parts.method),
            ))
        }
        _ => Err(ApiError::auth(404, "not_found", "Not found")),
    }
}

/// An e-mailed link and code: for whom, what for, where the link leads.
struct Mail<'a> {
    email: &'a str,
    /// magiclink, recovery, signup or invite
    kind: &'a str,
    /// Create the user when the address is unknown.
    create: bool,
    redirect: &'a str,
    data: Option<Value>,
    /// The app's PKCE `(code_challenge, code_challenge_method)`: the link
    /// then leads to `?code=` instead of a session.
    pkce: Option<(String, String)>,
}

/// `code_challenge` and `code_challenge_method` of a supabase-js request in
/// the PKCE flow (both or neither).
pub(crate) fn pkce_of(body: &Value) -> Result<Option<(String, String)>, ApiError> {
    match (text(body, "code_challenge"), text(body, "code_challenge_method").map(str::to_ascii_lowercase)) {
        (None, _) => Ok(None),
        (Some(c), Some(m)) if crate::oauth::valid_pkce(c) && (m == "s256" || m == "plain") => {
            Ok(Some((c.to_string(), m)))
        }
        _ => Err(ApiError::auth(
            400,
            "validation_failed",
            "code_challenge must be 43-128 characters with method s256 or plain",
        )),
    }
}

pub(crate) struct Req<'a> {
    pub(crate) state: &'a AppState,
    pub(crate) ctx: &'a Ctx,
    pub(crate) user_agent: String,
}

fn settings(state: &AppState) -> Value {
    let a = &state.config.auth;
    let phone = state.sms.is_some() || a.sms_autoconfirm || !a.sms_test_otp.is_empty();
    let mut external = json!({ "email": true, "phone": phone, "anonymous_users": a.anonymous_users });
    for name in state.providers.names() {
        external[name] = json!(true);
    }
    json!({
        "external": external,
        "disable_signup": a.disable_signup,
        "mailer_autoconfirm": a.autoconfirm(),
        "phone_autoconfirm": a.sms_autoconfirm,
        "sms_provider": state.sms.as_ref().map(|s| s.name()).unwrap_or(""),
        "saml_enabled": state.saml.is_some(),
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

/// `%xx` and `+` decoding of one query parameter value (malformed escapes stay as they are).
pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The `k=v` pairs of a query string or form body, decoded.
pub(crate) fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// `?a=b` form-encoding of a value.
pub(crate) fn form_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub(crate) fn text<'v>(body: &'v Value, key: &str) -> Option<&'v str> {
    body.get(key).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty())
}

fn user_id(s: &str) -> Result<uuid::Uuid, ApiError> {
    uuid::Uuid::parse_str(s).map_err(|_| ApiError::auth(404, "user_not_found", "User not found"))
}

fn factor_id(s: &str) -> Result<uuid::Uuid, ApiError> {
    uuid::Uuid::parse_str(s).map_err(|_| ApiError::auth(404, "mfa_factor_not_found", "Factor not found"))
}

fn require_service_role(caller: &Auth) -> Result<(), ApiError> {
    if caller.role() == "service_role" {
        Ok(())
    } else {
        Err(ApiError::auth(403, "not_admin", "User not allowed"))
    }
}

/// The signed-in user of a request: `sub` and `session_id` of its token.
pub(crate) fn session_of(caller: &Auth) -> Result<(uuid::Uuid, Option<uuid::Uuid>), ApiError> {
    let claim = |k: &str| caller.claims.get(k).and_then(Value::as_str).and_then(|s| uuid::Uuid::parse_str(s).ok());
    match claim("sub") {
        Some(sub) if !caller.anonymous => Ok((sub, claim("session_id"))),
        _ => Err(ApiError::auth(401, "no_authorization", "This endpoint requires a valid Bearer token")),
    }
}

fn valid_email(email: &str) -> bool {
    let Some((local, domain)) = email.rsplit_once('@') else { return false };
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && email.len() <= 255
}

/// `phone` of a request body, as stored: digits only (E.164 without `+`).
fn normalise_phone(body: &Value) -> Result<Option<String>, ApiError> {
    match text(body, "phone") {
        None => Ok(None),
        Some(p) => crate::sms::normalise_phone(p)
            .map(Some)
            .ok_or_else(|| ApiError::auth(400, "validation_failed", "Invalid phone number format (E.164 required)")),
    }
}

fn normalise_email(body: &Value) -> Result<Option<String>, ApiError> {
    match text(body, "email") {
        None => Ok(None),
        Some(e) if valid_email(e) => Ok(Some(e.to_lowercase())),
        Some(_) => Err(ApiError::auth(400, "validation_failed", "Unable to validate email address: invalid format")),
    }
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
/// the message, the client's message in the hint.
pub(crate) fn db_error(e: tokio_postgres::Error) -> ApiError {
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        if let Some(status) = code.strip_prefix("FA").and_then(|n| n.parse::<u16>().ok()) {
            return ApiError::auth(status, db.message(), db.hint().unwrap_or(db.message()));
        }
    }
    crate::db::query_error(e, true)
}

impl Req<'_> {
    pub(crate) async fn call_json(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Response, ApiError> {
        let value = self.query_json(sql, params).await?;
        Ok(json_response(StatusCode::OK, &value))
    }

    pub(crate) async fn query_json(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Value, ApiError> {
        let client = self.state.client().await?;
        let row = client.query_one_cached(sql, params).await.map_err(db_error)?;
        Ok(row.get::<_, Option<Value>>(0).unwrap_or(Value::Null))
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

    async fn hash(&self, password: String) -> Result<String, ApiError> {
        self.state
            .hasher
            .run(move |h| h.hash(&password))
            .await
            .ok_or_else(|| ApiError::Internal("password hashing failed".into()))
    }

    /// A new password, as policy allows it: `auth.password_min_length`, one
    /// character of each `auth.password_required_characters` set, not in the
    /// breached-password list. Refusals are `422 weak_password` with reasons.
    async fn check_password(&self, password: Option<&str>) -> Result<String, ApiError> {
        let config = &self.state.config.auth;
        let min = config.password_min_length;
        let Some(p) = password else {
            return Err(ApiError::auth(422, "validation_failed", "Signup requires a valid password"));
        };
        if p.len() > 1024 {
            return Err(ApiError::WeakPassword { msg: "Password is too long".into(), reasons: vec!["length"] });
        }
        let mut reasons = vec![];
        let mut msgs = vec![];
        if p.chars().count() < min {
            reasons.push("length");
            msgs.push(format!("Password should be at least {min} characters."));
        }
        let sets = &config.password_required_characters;
        if !sets.is_empty() && !sets.iter().all(|set| p.chars().any(|c| set.contains(c))) {
            reasons.push("characters");
            msgs.push(format!("Password should contain at least one character of each: {}.", sets.join(", ")));
        }
        if reasons.is_empty() {
            if let Some(breach) = &self.state.breach {
                match breach.is_breached(p).await {
                    Ok(false) => {}
                    Ok(true) => {
                        reasons.push("pwned");
                        msgs.push(
                            "Password is known to be weak and easy to guess, please choose a different one.".into(),
                        );
                    }
                    Err(e) => {
                        // Fail closed: a password that could not be checked is not taken.
                        tracing::error!(error = %e, "breached-password check failed");
                        return Err(ApiError::auth(
                            503,
                            "unexpected_failure",
                            "The password could not be checked; try again",
                        ));
                    }
                }
            }
        }
        if reasons.is_empty() {
            Ok(p.to_string())
        } else {
            Err(ApiError::WeakPassword { msg: msgs.join(" "), reasons })
        }
    }

    /// The session JSON of Supabase Auth, from what an auth_* function returned.
    pub(crate) fn session(&self, issued: &Value, refresh_token: &str) -> Result<Response, ApiError> {
        Ok(json_response(StatusCode::OK, &self.session_json(issued, refresh_token)?))
    }

    /// A session as the URL fragment of Supabase's implicit flow.
    pub(crate) fn session_fragment(
        &self,
        issued: &Value,
        refresh_token: &str,
        extra: &[(&str, &str)],
    ) -> Result<String, ApiError> {
        let v = self.session_json(issued, refresh_token)?;
        let field =
            |k: &str| v.get(k).map(|x| x.as_str().map(str::to_string).unwrap_or(x.to_string())).unwrap_or_default();
        let mut out = format!(
            "access_token={}&expires_at={}&expires_in={}",
            field("access_token"),
            field("expires_at"),
            field("expires_in")
        );
        for (k, value) in extra {
            out.push_str(&format!("&{k}={}", form_encode(value)));
        }
        out.push_str(&format!("&refresh_token={}&token_type=bearer", field("refresh_token")));
        Ok(out)
    }

    pub(crate) fn session_json(&self, issued: &Value, refresh_token: &str) -> Result<Value, ApiError> {
        let user = issued.get("user").cloned().unwrap_or(Value::Null);
        let now = unix_now();
        let expires_in = self.state.config.auth.jwt_expiry_seconds;
        let claims = json!({
            "aud": "authenticated",
            "iss": format!("{}/auth/v1", self.state.config.public_url()),
            "sub": user.get("id"),
            "iat": now,
            "exp": now + expires_in,
            "email": user.get("email"),
            "phone": user.get("phone"),
            "app_metadata": user.get("app_metadata"),
            "user_metadata": user.get("user_metadata"),
            "role": user.get("role").and_then(Value::as_str).unwrap_or("authenticated"),
            "aal": issued.get("aal").and_then(Value::as_str).unwrap_or("aal1"),
            "amr": issued.get("amr"),
            "session_id": issued.get("session_id"),
            "is_anonymous": user.get("is_anonymous").and_then(Value::as_bool).unwrap_or(false),
        });
        let signed = match (&self.state.signing, self.state.config.jwt.secret.as_deref()) {
            (Some(keys), _) => keys.sign(&claims),
            (None, Some(secret)) => sign_hs256(secret, &claims),
            (None, None) => {
                return Err(ApiError::Internal("issuing sessions needs jwt.signing_jwks_file or jwt.secret".into()))
            }
        };
        let access_token = signed.map_err(|e| ApiError::Internal(format!("signing: {e}")))?;
        Ok(json!({
            "access_token": access_token,
            "token_type": "bearer",
            "expires_in": expires_in,
            "expires_at": now + expires_in,
            "refresh_token": refresh_token,
            "user": user,
        }))
    }

    async fn signup(&self, body: &Value, redirect: Option<String>) -> Result<Response, ApiError> {
        let config = &self.state.config.auth;
        if config.disable_signup {
            return Err(ApiError::auth(422, "signup_disabled", "Signups not allowed for this instance"));
        }
        self.rate_limit(&[(format!("signup:ip:{}", self.ctx.ip), config.rate_limit_signups_per_ip)]).await?;
        let email = normalise_email(body)?;
        // E-mail wins when both are given, as in Supabase.
        let phone = if email.is_none() { normalise_phone(body)? } else { None };
        let data = body.get("data").filter(|d| d.is_object()).cloned();
        let anonymous = email.is_none() && phone.is_none() && body.get("password").is_none();
        if anonymous && !config.anonymous_users {
            return Err(ApiError::auth(422, "anonymous_provider_disabled", "Anonymous sign-ins are disabled"));
        }
        if let Some(phone) = &phone {
            self.phone_enabled(phone)?;
        }
        let hash = if anonymous {
            None
        } else {
            if email.is_none() && phone.is_none() {
                return Err(ApiError::auth(422, "validation_failed", "To signup, please provide your email"));
            }
            Some(self.hash(self.check_password(text(body, "password")).await?).await?)
        };
        let confirmed = if phone.is_some() { config.sms_autoconfirm } else { config.autoconfirm() };
        let (refresh, refresh_hash) = new_refresh_token();
        let issued = self
            .query_json(
                "SELECT fluxbase.auth_signup($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                &[
                    &email,
                    &phone,
                    &hash,
                    &data,
                    &confirmed,
                    &anonymous,
                    &refresh_hash,
                    &self.ctx.ip,
                    &self.user_agent,
                    &self.ctx.request_id,
                ],
            )
            .await?;
        if issued.get("session_id").is_some() {
            return self.session(&issued, &refresh);
        }
        // Not confirmed yet: the confirmation mail goes out; no session until its link or code.
        if let Some(email) = &email {
            let redirect = self.redirect_target(redirect)?;
            let pkce = pkce_of(body)?;
            self.email_token(Mail { email, kind: "signup", create: false, redirect: &redirect, data: None, pkce })
                .await?;
        } else if let Some(phone) = &phone {
            self.sms_token(phone, "signup", false, None).await?;
        }
        Ok(json_response(StatusCode::OK, issued.get("user").unwrap_or(&Value::Null)))
    }

    async fn password_grant(&self, body: &Value) -> Result<Response, ApiError> {
        let email = normalise_email(body).unwrap_or(None);
        let phone = if email.is_none() { normalise_phone(body).unwrap_or(None) } else { None };
        let password = body.get("password").and_then(Value::as_str).unwrap_or("").to_string();
        if email.is_none() && phone.is_none() {
            return Err(ApiError::auth(400, "validation_failed", "An email address or phone number is required"));
        }
        let config = &self.state.config.auth;
        let account = email.as_deref().or(phone.as_deref()).unwrap_or("");
        self.rate_limit(&[
            (format!("signin:ip:{}", self.ctx.ip), config.rate_limit_signins_per_ip),
            (format!("signin:account:{account}"), config.rate_limit_signins_per_account),
        ])
        .await?;
        let invalid = || ApiError::auth(400, "invalid_credentials", "Invalid login credentials");
        let client = self.state.client().await?;
        let row = client
            .query_opt_cached("SELECT * FROM fluxbase.auth_password_candidate($1, $2)", &[&email, &phone])
            .await
            .map_err(db_error)?;
        drop(client);
        let stored: Option<String> = row.as_ref().and_then(|r| r.get("password_hash"));
        let verdict = self
            .state
            .hasher
            .run(move |h| h.verify(&password, stored.as_deref()))
            .await
            .ok_or_else(|| ApiError::Internal("password check failed".into()))?;
        let Some(row) = row else { return Err(invalid()) };
        let user: uuid::Uuid = row.get("user_id");
        let locked: Option<std::time::SystemTime> = row.get("locked_until");
        if let Some(until) = locked.filter(|t| *t > SystemTime::now()) {
            let wait = until.duration_since(SystemTime::now()).map(|d| d.as_secs()).unwrap_or(1);
            return Err(ApiError::auth(
                429,
                "over_request_rate_limit",
                format!("Too many failed sign-in attempts. Try again in {wait} seconds."),
            ));
        }
        let (ok, rehash) = match verdict {
            Verdict::Wrong => (false, None),
            Verdict::Right => (true, None),
            Verdict::RightRehashed(h) => (true, Some(h)),
        };
        if ok && row.get::<_, bool>("banned") {
            return Err(ApiError::auth(400, "user_banned", "User is banned"));
        }
        if ok && !row.get::<_, bool>("confirmed") {
            return Err(match phone {
                Some(_) => ApiError::auth(400, "phone_not_confirmed", "Phone not confirmed"),
                None => ApiError::auth(400, "email_not_confirmed", "Email not confirmed"),
            });
        }
        let (refresh, refresh_hash) = new_refresh_token();
        let issued = self
            .query_json(
                "SELECT fluxbase.auth_password_outcome($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                &[
                    &user,
                    &ok,
                    &(config.lockout_max_failures as i32),
                    &(config.lockout_seconds as i32),
                    &rehash,
                    &refresh_hash,
                    &self.ctx.ip,
                    &self.user_agent,
                    &self.ctx.request_id,
                ],
            )
            .await?;
        if !ok || issued.is_null() {
            return Err(invalid());
        }
        self.session(&issued, &refresh)
    }

    async fn refresh_grant(&self, body: &Value) -> Result<Response, ApiError> {
        let Some(old) = text(body, "refresh_token") else {
            return Err(ApiError::auth(400, "validation_failed", "refresh_token is required"));
        };
        let config = &self.state.config.auth;
        self.rate_limit(&[(format!("refresh:ip:{}", self.ctx.ip), config.rate_limit_refresh_per_ip)]).await?;
        let (refresh, refresh_hash) = new_refresh_token();
        let reuse = config.refresh_token_reuse_interval_seconds as i32;
        let issued = self
            .query_json(
                "SELECT fluxbase.auth_refresh($1, $2, $3, $4, $5)",
                &[&sha256_hex(old), &refresh_hash, &reuse, &self.ctx.ip, &self.ctx.request_id],
            )
            .await?;
        refusal(&issued)?;
        self.session(&issued, &refresh)
    }

    async fn logout(&self, caller: &Auth, scope: &str) -> Result<Response, ApiError> {
        if !["global", "local", "others"].contains(&scope) {
            return Err(ApiError::auth(400, "validation_failed", "scope must be global, local or others"));
        }
        let (user, session) = session_of(caller)?;
        let client = self.state.client().await?;
        client
            .query_one_cached(
                "SELECT fluxbase.auth_logout($1, $2, $3, $4, $5)",
                &[&user, &session, &scope, &self.ctx.ip, &self.ctx.request_id],
            )
            .await
            .map_err(db_error)?;
        Ok(http::Response::builder()
            .status(StatusCode::NO_CONTENT)
            .body(http_body_util::Full::new(Bytes::new()))
            .expect("static response parts"))
    }

    async fn user(&self, caller: &Auth) -> Result<Response, ApiError> {
        let (user, session) = session_of(caller)?;
        self.call_json("SELECT fluxbase.auth_user($1, $2)", &[&user, &session]).await
    }

    /// PUT /user. A new e-mail is confirmed by e-mail when mail is sent
    /// and sign-ups are not auto-confirmed (to the new address and, with
    /// `auth.secure_email_change`, the current one); a new password may
    /// need the `nonce` of GET /reauthenticate.
    async fn update_user(&self, caller: &Auth, body: &Value, redirect: Option<String>) -> Result<Response, ApiError> {
        let (user, session) = session_of(caller)?;
        let config = &self.state.config.auth;
        let email = normalise_email(body)?;
        let phone = normalise_phone(body)?;
        let hash = match body.get("password") {
            Some(_) => {
                let password = self.check_password(text(body, "password")).await?;
                self.check_nonce(user, caller, text(body, "nonce")).await?;
                Some(self.hash(password).await?)
            }
            None => None,
        };
        let data = body.get("data").filter(|d| d.is_object()).cloned();
        let confirm_by_mail = email.is_some() && self.state.mailer.is_some() && !config.autoconfirm();
        let immediate = if confirm_by_mail { None } else { email.clone() };
        // A new number is confirmed by a code texted to it, unless phones
        // are auto-confirmed; without an SMS provider it cannot change.
        if let Some(p) = &phone {
            if !config.sms_autoconfirm {
                self.phone_enabled(p)?;
            }
        }
        let immediate_phone = if config.sms_autoconfirm { phone.clone() } else { None };
        let mut updated = self
            .query_json(
                "SELECT fluxbase.auth_update_user($1, $2, $3, $4, $5, $6, $7, $8)",
                &[&user, &session, &immediate, &immediate_phone, &hash, &data, &self.ctx.ip, &self.ctx.request_id],
            )
            .await?;
        if let Some(new) = email.filter(|_| confirm_by_mail) {
            if updated.get("email").and_then(Value::as_str) != Some(new.as_str()) {
                let current = updated.get("email").and_then(Value::as_str).unwrap_or("").to_string();
                let redirect = self.redirect_target(redirect)?;
                updated = self.email_change(user, session, &current, &new, &redirect).await?;
            }
        }
        if let Some(new) = phone.filter(|_| !config.sms_autoconfirm) {
            if updated.get("phone").and_then(Value::as_str) != Some(new.as_str()) {
                updated = self.phone_change(user, session, &new).await?;
            }
        }
        Ok(json_response(StatusCode::OK, &updated))
    }

    /// Starts a phone change: a code texted to the new number.
    async fn phone_change(&self, user: uuid::Uuid, session: Option<uuid::Uuid>, new: &str) -> Result<Value, ApiError> {
        let config = &self.state.config.auth;
        self.rate_limit(&[(format!("sms:ip:{}", self.ctx.ip), config.rate_limit_signins_per_ip)]).await?;
        let (code, test_number) = self.code_for(new);
        let code_hash = sha256_hex(&format!("{new}:{code}"));
        let (_, link_hash) = new_refresh_token();
        let updated = self
            .query_json(
                "SELECT fluxbase.auth_phone_change_request($1, $2, $3, $4, $5, $6, $7, $8)",
                &[
                    &user,
                    &session,
                    &new,
                    &link_hash,
                    &code_hash,
                    &(config.sms_interval_seconds as i32),
                    &self.ctx.ip,
                    &self.ctx.request_id,
                ],
            )
            .await?;
        if !test_number {
            let missing = || ApiError::auth(422, "phone_provider_disabled", "Unsupported phone provider");
            if let Err(e) = self.text_code(new, &code, missing).await {
                self.withdraw(&code_hash).await;
                return Err(e);
            }
        }
        Ok(updated)
    }

    /// The `nonce` (a code from GET /reauthenticate) of a password change:
    /// checked when given, required by `auth.update_password_require_reauthentication`.
    async fn check_nonce(&self, user: uuid::Uuid, caller: &Auth, nonce: Option<&str>) -> Result<(), ApiError> {
        let config = &self.state.config.auth;
        let Some(nonce) = nonce else {
            if config.update_password_require_reauthentication {
                return Err(ApiError::auth(
                    400,
                    "reauthentication_needed",
                    "Password update requires reauthentication",
                ));
            }
            return Ok(());
        };
        self.rate_limit(&[(format!("verify:ip:{}", self.ctx.ip), config.rate_limit_verify_per_ip)]).await?;
        let email = caller.claims.get("email").and_then(Value::as_str).unwrap_or("");
        let client = self.state.client().await?;
        let ok: bool = client
            .query_one_cached(
                "SELECT fluxbase.auth_reauthenticated($1, $2, $3, $4, $5)",
                &[
                    &user,
                    &sha256_hex(&format!("{email}:{nonce}")),
                    &(config.otp_expiry_seconds as i32),
                    &self.ctx.ip,
                    &self.ctx.request_id,
                ],
            )
            .await
            .map_err(db_error)?
            .get(0);
        if ok {
            Ok(())
        } else {
            Err(ApiError::auth(400, "reauthentication_not_valid", "Verification code is invalid or has expired"))
        }
    }

    /// GET /reauthenticate: e-mails a code that PUT /user takes as `nonce`.
    async fn reauthenticate(&self, caller: &Auth) -> Result<Response, ApiError> {
        let (user, session) = session_of(caller)?;
        let me = self.query_json("SELECT fluxbase.auth_user($1, $2)", &[&user, &session]).await?;
        let Some(email) = me.get("email").and_then(Value::as_str).filter(|e| !e.is_empty()) else {
            return Err(ApiError::auth(
                422,
                "validation_failed",
                "Reauthentication requires the user to have an email",
            ));
        };
        let site = self.redirect_target(None)?;
        let mail = Mail { email, kind: "reauthentication", create: false, redirect: &site, data: None, pkce: None };
        self.email_token(mail).await?;
        Ok(json_response(StatusCode::OK, &json!({})))
    }

    /// Starts an e-mail change: codes and links to the new address and
    /// (secure change) the current one; the user, with `new_email`.
    async fn email_change(
        &self,
        user: uuid::Uuid,
        session: Option<uuid::Uuid>,
        current: &str,
        new: &str,
        redirect: &str,
    ) -> Result<Value, ApiError> {
        let config = &self.state.config.auth;
        let Some(mailer) = &self.state.mailer else {
            return Err(ApiError::auth(422, "email_provider_disabled", "E-mail needs auth.smtp_host"));
        };
        self.rate_limit(&[(format!("email:ip:{}", self.ctx.ip), config.rate_limit_signins_per_ip)]).await?;
        let token = |address: &str| {
            let (link, link_hash) = new_refresh_token();
            let code = six_digits();
            let code_hash = sha256_hex(&format!("{address}:{code}"));
            (link, link_hash, code, code_hash)
        };
        let to_new = token(new);
        let to_current = (config.secure_email_change && !current.is_empty()).then(|| token(current));
        let updated = self
            .query_json(
                "SELECT fluxbase.auth_email_change_request($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                &[
                    &user,
                    &session,
                    &new,
                    &to_new.1,
                    &to_new.3,
                    &to_current.as_ref().map(|t| &t.1),
                    &to_current.as_ref().map(|t| &t.3),
                    &(config.email_interval_seconds as i32),
                    &self.ctx.ip,
                    &self.ctx.request_id,
                ],
            )
            .await?;
        let site = self.redirect_target(None)?;
        for (to, (link, _, code, _)) in std::iter::once((new, &to_new)).chain(to_current.as_ref().map(|t| (current, t)))
        {
            let url = format!(
                "{}/auth/v1/verify?token={link}&type=email_change&redirect_to={}",
                self.state.config.public_url(),
                form_encode(redirect)
            );
            let fill = crate::mailer::Fill {
                confirmation_url: &url,
                token: code,
                token_hash: link,
                site_url: &site,
                email: current,
                redirect_to: redirect,
                new_email: new,
            };
            if let Err(e) = deliver(mailer, to, crate::mailer::Kind::EmailChange, &fill).await {
                // Both confirmations or none: with one withdrawn, the other
                // alone would complete a secure change.
                self.withdraw(&to_new.3).await;
                if let Some(current) = &to_current {
                    self.withdraw(&current.3).await;
                }
                return Err(e);
            }
        }
        Ok(updated)
    }

    /// POST /factors: a TOTP factor, unverified until its first code.
    async fn mfa_enroll(&self, caller: &Auth, body: &Value) -> Result<Response, ApiError> {
        let (user, session) = session_of(caller)?;
        let config = &self.state.config.auth;
        match text(body, "factor_type") {
            Some("totp") => {}
            Some("phone") => return self.mfa_enroll_phone(caller, body).await,
            Some(other) => {
                return Err(ApiError::auth(
                    422,
                    &format!("mfa_{other}_enroll_not_enabled"),
                    format!("MFA with {other} is not available in this release"),
                ))
            }
            None => return Err(ApiError::auth(400, "validation_failed", "factor_type is required")),
        }
        let Some(key) = &self.state.mfa_key else {
            return Err(ApiError::auth(
                422,
                "mfa_totp_enroll_not_enabled",
                "MFA enrolment is disabled: auth.mfa_encryption_key is not set",
            ));
        };
        let secret = crate::totp::new_secret();
        let sealed = crate::totp::encrypt(key, &secret);
        let friendly = text(body, "friendly_name").map(str::to_string);
        let aal = caller.claims.get("aal").and_then(Value::as_str).unwrap_or("aal1").to_string();
        let client = self.state.client().await?;
        let row = client
            .query_one_cached(
                "SELECT fluxbase.auth_mfa_enroll($1, $2, $3, $4, $5, $6, $7, $8)",
                &[
                    &user,
                    &session,
                    &aal,
                    &friendly,
                    &sealed,
                    &(config.mfa_max_factors as i32),
                    &self.ctx.ip,
                    &self.ctx.request_id,
                ],
            )
            .await
            .map_err(db_error)?;
        let id: uuid::Uuid = row.get(0);
        let issuer = text(body, "issuer").unwrap_or(&config.mfa_issuer);
        let account = caller.claims.get("email").and_then(Value::as_str).filter(|e| !e.is_empty());
        let uri = crate::totp::uri(&secret, issuer, account.unwrap_or(&user.to_string()));
        Ok(json_response(
            StatusCode::OK,
            &json!({
                "id": id.to_string(),
                "type": "totp",
                "friendly_name": friendly.unwrap_or_default(),
                "totp": { "qr_code": crate::totp::qr_svg(&uri).unwrap_or_default(), "secret": secret, "uri": uri },
            }),
        ))
    }

    /// POST /factors `{factor_type: "phone", phone}`: codes by SMS.
    async fn mfa_enroll_phone(&self, caller: &Auth, body: &Value) -> Result<Response, ApiError> {
        let (user, session) = session_of(caller)?;
        let config = &self.state.config.auth;
        let phone = normalise_phone(body)?
            .ok_or_else(|| ApiError::auth(400, "validation_failed", "A phone number is required"))?;
        if self.state.sms.is_none() && !config.sms_test_otp.contains_key(&phone) {
            return Err(ApiError::auth(422, "mfa_phone_enroll_not_enabled", "MFA by phone needs auth.sms_provider"));
        }
        let friendly = text(body, "friendly_name").map(str::to_string);
        let aal = caller.claims.get("aal").and_then(Value::as_str).unwrap_or("aal1").to_string();
        let client = self.state.client().await?;
        let id: uuid::Uuid = client
            .query_one_cached(
                "SELECT fluxbase.auth_mfa_enroll($1, $2, $3, $4, NULL, $5, $6, $7, 'phone', $8)",
                &[
                    &user,
                    &session,
                    &aal,
                    &friendly,
                    &(config.mfa_max_factors as i32),
                    &self.ctx.ip,
                    &self.ctx.request_id,
                    &phone,
                ],
            )
            .await
            .map_err(db_error)?
            .get(0);
        Ok(json_response(
            StatusCode::OK,
            &json!({ "id": id.to_string(), "type": "phone", "friendly_name": friendly.unwrap_or_default(), "phone": phone }),
        ))
    }

    /// POST /factors/{id}/challenge: for a phone factor, the code goes out by SMS.
    async fn mfa_challenge(&self, caller: &Auth, factor: uuid::Uuid) -> Result<Response, ApiError> {
        let (user, session) = session_of(caller)?;
        let config = &self.state.config.auth;
        let mut challenge = self
            .query_json(
                "SELECT fluxbase.auth_mfa_challenge($1, $2, $3, $4, $5)",
                &[&user, &session, &factor, &self.ctx.ip, &(config.sms_interval_seconds as i32)],
            )
            .await?;
        let phone = challenge.as_object_mut().and_then(|o| o.remove("phone"));
        if let Some(phone) = phone.as_ref().and_then(Value::as_str) {
            let id = challenge.get("id").and_then(Value::as_str).unwrap_or_default().to_string();
            let (code, test_number) = self.code_for(phone);
            let client = self.state.client().await?;
            client
                .execute_cached(
                    "SELECT fluxbase.auth_mfa_challenge_code($1::text::uuid, $2)",
                    &[&id, &sha256_hex(&format!("{id}:{code}"))],
                )
                .await
                .map_err(db_error)?;
            drop(client);
            if !test_number {
                // Every challenge texts someone: the same per-IP limit as sign-in codes.
                self.rate_limit(&[(format!("sms:ip:{}", self.ctx.ip), config.rate_limit_signins_per_ip)]).await?;
                let missing =
                    || ApiError::auth(422, "mfa_phone_enroll_not_enabled", "MFA by phone needs auth.sms_provider");
                self.text_code(phone, &code, missing).await?;
            }
        }
        Ok(json_response(StatusCode::OK, &challenge))
    }

    /// POST /factors/{id}/verify: a right code moves the session to aal2.
    async fn mfa_verify(&self, caller: &Auth, factor: uuid::Uuid, body: &Value) -> Result<Response, ApiError> {
        let (user, session) = session_of(caller)?;
        let config = &self.state.config.auth;
        let challenge = text(body, "challenge_id")
            .and_then(|c| uuid::Uuid::parse_str(c).ok())
            .ok_or_else(|| ApiError::auth(400, "validation_failed", "challenge_id is required"))?;
        let code = text(body, "code").unwrap_or("").to_string();
        self.rate_limit(&[(format!("verify:ip:{}", self.ctx.ip), config.rate_limit_verify_per_ip)]).await?;
        let client = self.state.client().await?;
        let row = client
            .query_one_cached(
                "SELECT secret, factor_type, otp_code FROM fluxbase.auth_mfa_secret($1, $2, $3, $4)",
                &[&user, &session, &factor, &challenge],
            )
            .await
            .map_err(db_error)?;
        drop(client);
        // Past the failure limit, auth_mfa_result refuses even a right code.
        let (ok, step) = if row.get::<_, String>("factor_type") == "phone" {
            // The texted code, bound to its challenge; none stored yet: wrong.
            let stored: Option<String> = row.get("otp_code");
            let given = sha256_hex(&format!("{challenge}:{code}"));
            (stored.is_some_and(|s| crate::jwt::constant_time_eq(s.as_bytes(), given.as_bytes())), None)
        } else {
            let key = self
                .state
                .mfa_key
                .as_ref()
                .ok_or_else(|| ApiError::auth(422, "mfa_verification_rejected", "MFA is not configured"))?;
            let sealed: Option<String> = row.get("secret");
            let secret = sealed.as_deref().and_then(|s| crate::totp::decrypt(key, s)).ok_or_else(|| {
                ApiError::Internal("a TOTP secret does not decrypt with auth.mfa_encryption_key".into())
            })?;
            let step = crate::totp::matching_step(&secret, &code, unix_now()).map(|s| s as i64);
            (step.is_some(), step)
        };
        let (refresh, refresh_hash) = new_refresh_token();
        let issued = self
            .query_json(
                "SELECT fluxbase.auth_mfa_result($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                &[
                    &user,
                    &session,
                    &factor,
                    &challenge,
                    &ok,
                    &refresh_hash,
                    &self.ctx.ip,
                    &self.ctx.request_id,
                    &step,
                    &(config.mfa_max_verify_failures as i32),
                    &(config.mfa_failure_window_seconds as i32),
                ],
            )
            .await?;
        refusal(&issued)?;
        self.session(&issued, &refresh)
    }

    /// The `redirect_to` of an e-mail link: the site URL by default; anything
    /// but the site URL or an allowed URL is refused.
    pub(crate) fn redirect_target(&self, asked: Option<String>) -> Result<String, ApiError> {
        let config = &self.state.config.auth;
        let site = config.site_url.clone().unwrap_or_else(|| self.state.config.public_url());
        let Some(url) = asked.filter(|u| !u.is_empty()) else { return Ok(site) };
        let allowed = redirect_allowed(&url, &site, true)
            || config.redirect_urls.iter().any(|p| match p.strip_suffix('*') {
                Some(prefix) => redirect_allowed(&url, prefix, true),
                None => redirect_allowed(&url, p, false),
            });
        if allowed {
            Ok(url)
        } else {
            Err(ApiError::auth(422, "validation_failed", "redirect_to is not an allowed redirect URL"))
        }
    }

    /// POST /otp, /magiclink, /recover: e-mails a link and a 6-digit code.
    /// Unknown addresses get the same answer as known ones (nothing is sent).
    async fn send_email_token(
        &self,
        body: &Value,
        kind: &str,
        create: bool,
        redirect: Option<String>,
    ) -> Result<Response, ApiError> {
        let email = normalise_email(body)?
            .ok_or_else(|| ApiError::auth(422, "validation_failed", "An email address is required"))?;
        let redirect = self.redirect_target(redirect.or_else(|| text(body, "redirect_to").map(str::to_string)))?;
        let data = body.get("data").filter(|d| d.is_object()).cloned();
        let create = create && !self.state.config.auth.disable_signup;
        let pkce = pkce_of(body)?;
        self.email_token(Mail { email: &email, kind, create, redirect: &redirect, data, pkce }).await?;
        Ok(json_response(StatusCode::OK, &json!({})))
    }

    /// Stores a link and code of `kind` (magiclink, recovery, signup,
    /// invite) for `email`; `None` for an unknown address unless `create`.
    /// Returns the link URL and the code.
    async fn store_token(
        &self,
        mail: Mail<'_>,
        channel: &str,
        fixed_code: Option<String>,
        interval_seconds: u32,
    ) -> Result<Option<(String, String, String)>, ApiError> {
        let Mail { email, kind, create, redirect, data, pkce } = mail;
        let (challenge, method) = pkce.unzip();
        let (link, link_hash) = new_refresh_token();
        let code = fixed_code.unwrap_or_else(six_digits);
        let code_hash = sha256_hex(&format!("{email}:{code}"));
        // Invites redeem like sign-up confirmations.
        let stored_kind = if kind == "invite" { "signup" } else { kind };
        let client = self.state.client().await?;
        let outcome: String = client
            .query_one_cached(
                "SELECT fluxbase.auth_send_token($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                &[
                    &channel,
                    &email,
                    &stored_kind,
                    &link_hash,
                    &code_hash,
                    &create,
                    &data,
                    &(interval_seconds as i32),
                    &challenge,
                    &method,
                    &self.ctx.ip,
                    &self.ctx.request_id,
                ],
            )
            .await
            .map_err(db_error)?
            .get(0);
        match outcome.as_str() {
            "too_soon" => Err(ApiError::RateLimited {
                retry_after: interval_seconds as u64,
                msg: format!("For security purposes, you can only request this after {interval_seconds} seconds."),
            }),
            "sent" => {
                let url = format!(
                    "{}/auth/v1/verify?token={link}&type={kind}&redirect_to={}",
                    self.state.config.public_url(),
                    form_encode(redirect)
                );
                Ok(Some((url, link, code)))
            }
            _ => Ok(None),
        }
    }

    /// Stores a link and code of `kind` and mails them; nothing happens for
    /// an unknown address unless `create`.
    async fn email_token(&self, mail: Mail<'_>) -> Result<(), ApiError> {
        let (email, kind, redirect) = (mail.email, mail.kind, mail.redirect);
        let config = &self.state.config.auth;
        let Some(mailer) = &self.state.mailer else {
            return Err(ApiError::auth(422, "email_provider_disabled", "E-mail needs auth.smtp_host"));
        };
        self.rate_limit(&[(format!("email:ip:{}", self.ctx.ip), config.rate_limit_signins_per_ip)]).await?;
        let Some((url, link, code)) = self.store_token(mail, "email", None, config.email_interval_seconds).await?
        else {
            return Ok(());
        };
        let mail_kind = match kind {
            "recovery" => crate::mailer::Kind::Recovery,
            "signup" => crate::mailer::Kind::Confirmation,
            "invite" => crate::mailer::Kind::Invite,
            "reauthentication" => crate::mailer::Kind::Reauthentication,
            _ => crate::mailer::Kind::MagicLink,
        };
        let site = self.redirect_target(None)?;
        let fill = crate::mailer::Fill {
            confirmation_url: &url,
            token: &code,
            token_hash: &link,
            site_url: &site,
            email,
            redirect_to: redirect,
            new_email: "",
        };
        let sent = deliver(mailer, email, mail_kind, &fill).await;
        if sent.is_err() {
            self.withdraw(&sha256_hex(&format!("{email}:{code}"))).await;
        }
        sent
    }

    /// Takes back a stored code that never reached its recipient.
    async fn withdraw(&self, code_hash: &str) {
        if let Ok(client) = self.state.client().await {
            if let Err(e) = client.execute_cached("SELECT fluxbase.auth_withdraw_token($1)", &[&code_hash]).await {
                tracing::warn!(error = %e, "withdrawing an undelivered code failed");
            }
        }
    }

    /// Phone sign-in needs an SMS provider, unless sign-ups are confirmed
    /// without one or the number is a configured test number.
    fn phone_enabled(&self, phone: &str) -> Result<(), ApiError> {
        let config = &self.state.config.auth;
        if self.state.sms.is_some() || config.sms_autoconfirm || config.sms_test_otp.contains_key(phone) {
            Ok(())
        } else {
            Err(ApiError::auth(422, "phone_provider_disabled", "Unsupported phone provider"))
        }
    }

    /// Stores a code of `kind` for `phone` and texts it (test numbers get
    /// their fixed code and no SMS); nothing happens for an unknown number
    /// unless `create`.
    async fn sms_token(&self, phone: &str, kind: &str, create: bool, data: Option<Value>) -> Result<(), ApiError> {
        let config = &self.state.config.auth;
        let (code, test_number) = self.code_for(phone);
        let missing = || ApiError::auth(422, "phone_provider_disabled", "Unsupported phone provider");
        if !test_number && self.state.sms.is_none() {
            return Err(missing());
        }
        self.rate_limit(&[(format!("sms:ip:{}", self.ctx.ip), config.rate_limit_signins_per_ip)]).await?;
        let mail = Mail { email: phone, kind, create, redirect: "", data, pkce: None };
        if self.store_token(mail, "phone", Some(code.clone()), config.sms_interval_seconds).await?.is_none() {
            return Ok(());
        }
        if !test_number {
            if let Err(e) = self.text_code(phone, &code, missing).await {
                self.withdraw(&sha256_hex(&format!("{phone}:{code}"))).await;
                return Err(e);
            }
        }
        Ok(())
    }

    /// The code for `phone`: its fixed one when it is a test number
    /// (`true`: no SMS goes out), else six random digits.
    fn code_for(&self, phone: &str) -> (String, bool) {
        match self.state.config.auth.sms_test_otp.get(phone) {
            Some(fixed) => (fixed.clone(), true),
            None => (six_digits(), false),
        }
    }

    /// Texts `code` to `phone` with `auth.sms_template`; `missing` is the
    /// refusal without an SMS provider. A provider failure is logged and
    /// answered `500 sms_send_failed`.
    async fn text_code(&self, phone: &str, code: &str, missing: impl FnOnce() -> ApiError) -> Result<(), ApiError> {
        let sms = self.state.sms.as_ref().ok_or_else(missing)?;
        let message = self.state.config.auth.sms_template.replace("{{ .Code }}", code);
        sms.send(phone, code, &message).await.map_err(|e| {
            tracing::error!(error = %e, "sending an SMS failed");
            ApiError::auth(500, "sms_send_failed", "Error sending the SMS")
        })
    }

    /// POST /invite (service_role): creates the user and mails an invitation.
    async fn invite(&self, body: &Value, redirect: Option<String>) -> Result<Response, ApiError> {
        let email = normalise_email(body)?
            .ok_or_else(|| ApiError::auth(422, "validation_failed", "An email address is required"))?;
        let redirect = self.redirect_target(redirect)?;
        let data = body.get("data").filter(|d| d.is_object()).cloned();
        self.email_token(Mail { email: &email, kind: "invite", create: true, redirect: &redirect, data, pkce: None })
            .await?;
        Ok(json_response(StatusCode::OK, &self.user_by_email(&email).await?))
    }

    async fn user_by_email(&self, email: &str) -> Result<Value, ApiError> {
        self.query_json("SELECT fluxbase.auth_user_by_email($1)", &[&email]).await
    }

    /// POST /admin/generate_link: the link and code an e-mail would carry,
    /// returned instead of sent (for your own mail provider).
    async fn generate_link(&self, body: &Value, redirect: Option<String>) -> Result<Response, ApiError> {
        let kind = match text(body, "type") {
            Some(k @ ("magiclink" | "recovery" | "invite")) => k,
            Some(other) => {
                return Err(ApiError::auth(
                    422,
                    "validation_failed",
                    format!("generate_link type {other} is not supported in this release"),
                ))
            }
            None => return Err(ApiError::auth(422, "validation_failed", "type is required")),
        };
        let email = normalise_email(body)?
            .ok_or_else(|| ApiError::auth(422, "validation_failed", "An email address is required"))?;
        let redirect = self.redirect_target(redirect.or_else(|| text(body, "redirect_to").map(str::to_string)))?;
        let data = body.get("data").filter(|d| d.is_object()).cloned();
        let create = kind != "recovery";
        let mail = Mail { email: &email, kind, create, redirect: &redirect, data, pkce: None };
        let Some((url, link, code)) = self.store_token(mail, "email", None, 0).await? else {
            return Err(ApiError::auth(404, "user_not_found", "User with this email not found"));
        };
        let mut out = self.user_by_email(&email).await?;
        if let Some(o) = out.as_object_mut() {
            o.insert("action_link".into(), json!(url));
            o.insert("email_otp".into(), json!(code));
            o.insert("hashed_token".into(), json!(link));
            o.insert("redirect_to".into(), json!(redirect));
            o.insert("verification_type".into(), json!(kind));
        }
        Ok(json_response(StatusCode::OK, &out))
    }

    /// POST /resend `{type: "signup", email}`: the confirmation mail again,
    /// for an address that is registered and not confirmed (else nothing).
    async fn resend(&self, body: &Value, redirect: Option<String>) -> Result<Response, ApiError> {
        if text(body, "type") == Some("sms") {
            let phone = normalise_phone(body)?
                .ok_or_else(|| ApiError::auth(422, "validation_failed", "A phone number is required"))?;
            let client = self.state.client().await?;
            let unconfirmed = client
                .query_opt_cached(
                    "SELECT 1 FROM fluxbase.auth_password_candidate(NULL, $1) WHERE NOT confirmed",
                    &[&phone],
                )
                .await
                .map_err(db_error)?
                .is_some();
            drop(client);
            if unconfirmed {
                self.sms_token(&phone, "signup", false, None).await?;
            }
            return Ok(json_response(StatusCode::OK, &json!({})));
        }
        if text(body, "type") != Some("signup") {
            return Err(ApiError::auth(
                400,
                "validation_failed",
                "Only types signup and sms can be resent in this release",
            ));
        }
        let email = normalise_email(body)?
            .ok_or_else(|| ApiError::auth(422, "validation_failed", "An email address is required"))?;
        let redirect = self.redirect_target(redirect)?;
        let client = self.state.client().await?;
        let unconfirmed = client
            .query_opt_cached("SELECT 1 FROM fluxbase.auth_password_candidate($1, NULL) WHERE NOT confirmed", &[&email])
            .await
            .map_err(db_error)?
            .is_some();
        drop(client);
        if unconfirmed {
            let pkce = pkce_of(body)?;
            self.email_token(Mail {
                email: &email,
                kind: "signup",
                create: false,
                redirect: &redirect,
                data: None,
                pkce,
            })
            .await?;
        }
        Ok(json_response(StatusCode::OK, &json!({})))
    }

    /// Runs one of the redeeming functions (auth_verify_token,
    /// auth_verify_email_change, auth_verify_phone_change): `leading`
    /// arguments, then expiry, a fresh refresh-token hash, IP, user agent,
    /// request id and the address a code was typed for. Rate-limited per IP.
    async fn redeem_with(
        &self,
        function: &str,
        leading: &[&(dyn ToSql + Sync)],
        address: Option<&str>,
    ) -> Result<(Value, String), ApiError> {
        let config = &self.state.config.auth;
        self.rate_limit(&[(format!("verify:ip:{}", self.ctx.ip), config.rate_limit_verify_per_ip)]).await?;
        let (refresh, refresh_hash) = new_refresh_token();
        let expiry = config.otp_expiry_seconds as i32;
        let tail: [&(dyn ToSql + Sync); 6] =
            [&expiry, &refresh_hash, &self.ctx.ip, &self.user_agent, &self.ctx.request_id, &address];
        let params: Vec<&(dyn ToSql + Sync)> = leading.iter().copied().chain(tail).collect();
        let placeholders: Vec<String> = (1..=params.len()).map(|i| format!("${i}")).collect();
        let sql = format!("SELECT fluxbase.{function}({})", placeholders.join(", "));
        let issued = self.query_json(&sql, &params).await?;
        refusal(&issued)?;
        Ok((issued, refresh))
    }

    async fn redeem(
        &self,
        channel: &str,
        kind: &str,
        link_hash: Option<String>,
        code_hash: Option<String>,
        pkce_code: Option<&str>,
        address: Option<&str>,
    ) -> Result<(Value, String), ApiError> {
        let pkce_hash = pkce_code.map(sha256_hex);
        self.redeem_with("auth_verify_token", &[&channel, &kind, &link_hash, &code_hash, &pkce_hash], address).await
    }

    async fn redeem_email_change(
        &self,
        link_hash: Option<String>,
        code_hash: Option<String>,
        address: Option<&str>,
    ) -> Result<(Value, String), ApiError> {
        self.redeem_with("auth_verify_email_change", &[&link_hash, &code_hash], address).await
    }

    /// GET /verify: the link of an e-mail; redirects with the session in
    /// the fragment (or the error), as Supabase's implicit flow does, or
    /// with `?code=` when the link was asked for by a PKCE app.
    async fn verify_link(&self, token: String, kind: String, redirect: Option<String>) -> Result<Response, ApiError> {
        let redirect = self.redirect_target(redirect)?;
        let kind = match kind.as_str() {
            "recovery" => "recovery",
            "signup" | "invite" => "signup",
            "email_change" => "email_change",
            _ => "magiclink",
        };
        let pkce_code = uuid::Uuid::new_v4().to_string();
        let redeemed = if kind == "email_change" {
            self.redeem_email_change(Some(sha256_hex(&token)), None, None).await
        } else {
            self.redeem("email", kind, Some(sha256_hex(&token)), None, Some(&pkce_code), None).await
        };
        let fragment = match redeemed {
            Ok((issued, _)) if issued.get("msg").is_some() => {
                format!("message={}", form_encode(issued["msg"].as_str().unwrap_or_default()))
            }
            Ok((issued, _)) if issued.get("pkce").is_some() => {
                return Ok(http::Response::builder()
                    .status(StatusCode::SEE_OTHER)
                    .header(http::header::LOCATION, crate::auth_oauth::with_query(&redirect, &[("code", &pkce_code)]))
                    .body(http_body_util::Full::new(Bytes::new()))
                    .expect("static response parts"));
            }
            Ok((issued, refresh)) => format!("{}&type={kind}", self.session_fragment(&issued, &refresh, &[])?),
            Err(ApiError::Auth { error_code, msg, .. }) => {
                format!("error=access_denied&error_code={error_code}&error_description={}", form_encode(&msg))
            }
            Err(other) => return Err(other),
        };
        Ok(http::Response::builder()
            .status(StatusCode::SEE_OTHER)
            .header(http::header::LOCATION, format!("{redirect}#{fragment}"))
            .body(http_body_util::Full::new(Bytes::new()))
            .expect("static response parts"))
    }

    /// POST /verify `{type, email, token}` (the code) or `{type, token_hash}` (the link token).
    async fn verify_code(&self, body: &Value) -> Result<Response, ApiError> {
        let (channel, kind) = match text(body, "type") {
            Some("recovery") => ("email", "recovery"),
            Some("signup") | Some("invite") => ("email", "signup"),
            Some("email") | Some("magiclink") => ("email", "magiclink"),
            // One code type for a phone's sign-up confirmation and sign-in.
            Some("sms") => ("phone", "magiclink"),
            Some("phone_change") => ("phone", "phone_change"),
            Some("email_change") => ("email", "email_change"),
            _ => {
                return Err(ApiError::auth(
                    400,
                    "validation_failed",
                    "type must be email, magiclink, recovery, signup or sms",
                ))
            }
        };
        let address = if channel == "phone" { normalise_phone(body)? } else { normalise_email(body)? };
        let (link_hash, code_hash) = match (text(body, "token_hash"), &address, text(body, "token")) {
            (Some(link), _, _) if channel == "email" => (Some(sha256_hex(link)), None),
            (_, Some(address), Some(code)) => (None, Some(sha256_hex(&format!("{address}:{code}")))),
            _ => {
                return Err(ApiError::auth(
                    400,
                    "validation_failed",
                    "Verify requires a token_hash, or an email or phone and a token",
                ))
            }
        };
        if kind == "phone_change" {
            let (issued, refresh) =
                self.redeem_with("auth_verify_phone_change", &[&code_hash], address.as_deref()).await?;
            return self.session(&issued, &refresh);
        }
        if kind == "email_change" {
            let (issued, refresh) = self.redeem_email_change(link_hash, code_hash, address.as_deref()).await?;
            if let Some(msg) = issued.get("msg") {
                return Ok(json_response(StatusCode::OK, &json!({ "msg": msg, "code": 200 })));
            }
            return self.session(&issued, &refresh);
        }
        let (issued, refresh) = self.redeem(channel, kind, link_hash, code_hash, None, address.as_deref()).await?;
        self.session(&issued, &refresh)
    }

    async fn admin_list(&self, page: Option<String>, per_page: Option<String>) -> Result<Response, ApiError> {
        let page: i32 = page.and_then(|p| p.parse().ok()).filter(|p| *p >= 1).unwrap_or(1);
        let per_page: i32 = per_page.and_then(|p| p.parse().ok()).filter(|p| (1..=1000).contains(p)).unwrap_or(50);
        let listed = self.query_json("SELECT fluxbase.auth_admin_list($1, $2)", &[&page, &per_page]).await?;
        let total = listed.get("total").and_then(Value::as_i64).unwrap_or(0);
        let mut response = json_response(
            StatusCode::OK,
            &json!({ "users": listed.get("users").cloned().unwrap_or(json!([])), "aud": "authenticated" }),
        );
        let headers = response.headers_mut();
        if let Ok(v) = http::HeaderValue::from_str(&total.to_string()) {
            headers.insert("x-total-count", v);
        }
        let last = ((total + per_page as i64 - 1) / per_page as i64).max(1);
        let mut links = vec![format!("</admin/users?page={last}&per_page={per_page}>; rel=\"last\"")];
        if (page as i64) < last {
            links.insert(0, format!("</admin/users?page={}&per_page={per_page}>; rel=\"next\"", page + 1));
        }
        if let Ok(v) = http::HeaderValue::from_str(&links.join(", ")) {
            headers.insert(http::header::LINK, v);
        }
        Ok(response)
    }

    async fn admin_upsert(&self, user: Option<uuid::Uuid>, body: &Value) -> Result<Response, ApiError> {
        let mut fields = serde_json::Map::new();
        if let Some(email) = normalise_email(body)? {
            fields.insert("email".into(), json!(email));
        }
        if let Some(phone) = normalise_phone(body)? {
            fields.insert("phone".into(), json!(phone));
        }
        for key in ["user_metadata", "app_metadata", "email_confirm", "phone_confirm"] {
            if let Some(v) = body.get(key).filter(|v| !v.is_null()) {
                fields.insert(key.into(), v.clone());
            }
        }
        if body.get("password").is_some() {
            let hash = self.hash(self.check_password(text(body, "password")).await?).await?;
            fields.insert("password_hash".into(), json!(hash));
        }
        if let Some(ban) = text(body, "ban_duration") {
            fields.insert("ban_duration_seconds".into(), json!(ban_seconds(ban)?));
        }
        if user.is_none() && !fields.contains_key("email") && !fields.contains_key("phone") {
            return Err(ApiError::auth(400, "validation_failed", "Unable to validate email address: invalid format"));
        }
        self.call_json(
            "SELECT fluxbase.auth_admin_upsert($1, $2, $3, $4)",
            &[&user, &Value::Object(fields), &self.ctx.ip, &self.ctx.request_id],
        )
        .await
    }
}

/// A one-time code: six random digits.
fn six_digits() -> String {
    format!("{:06}", rand::thread_rng().next_u32() % 1_000_000)
}

/// Sends one e-mail of `kind` to `to`.
async fn deliver(
    mailer: &crate::mailer::Mailer,
    to: &str,
    kind: crate::mailer::Kind,
    fill: &crate::mailer::Fill<'_>,
) -> Result<(), ApiError> {
    mailer.send(to, kind, fill).await.map_err(|e| {
        tracing::error!(error = %e, "sending e-mail failed");
        ApiError::auth(500, "unexpected_failure", "Error sending the e-mail")
    })
}

/// Whether sessions may be sent to `candidate` on the strength of the
/// allowed URL `allowed`: the same scheme, host and port, no user info, no
/// control characters or backslashes, and (`prefix`) a path under
/// `allowed`'s, else the same URL. Comparing strings would let
/// `https://app.example.com.evil.com` and `https://app.example.com@evil.com`
/// through on `https://app.example.com`.
fn redirect_allowed(candidate: &str, allowed: &str, prefix: bool) -> bool {
    if candidate.chars().any(|c| c.is_control() || c == '\\') {
        return false;
    }
    let (Ok(c), Ok(a)) = (url::Url::parse(candidate), url::Url::parse(allowed)) else { return false };
    if !c.username().is_empty() || c.password().is_some() || c.host_str().is_none() {
        return false;
    }
    if c.scheme() != a.scheme()
        || c.host_str() != a.host_str()
        || c.port_or_known_default() != a.port_or_known_default()
    {
        return false;
    }
    if prefix {
        c.path().starts_with(a.path())
    } else {
        c.as_str() == a.as_str()
    }
}

/// A refusal that must still commit (a reuse revokes the session, a wrong
/// code counts) comes back from the database as `{error, status, msg}`.
pub(crate) fn refusal(issued: &Value) -> Result<(), ApiError> {
    match issued.get("error").and_then(Value::as_str) {
        Some(code) => {
            let status = issued.get("status").and_then(Value::as_u64).unwrap_or(400) as u16;
            Err(ApiError::auth(status, code, issued.get("msg").and_then(Value::as_str).unwrap_or(code)))
        }
        None => Ok(()),
    }
}

/// `ban_duration` as GoTrue reads it: `none`, or a Go duration like `24h`, `90m`, `30s`.
fn ban_seconds(s: &str) -> Result<i64, ApiError> {
    if s == "none" {
        return Ok(0);
    }
    let bad = || ApiError::auth(400, "validation_failed", "invalid format for ban duration");
    let mut total = 0f64;
    let mut number = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() || c == '.' {
            number.push(c);
            continue;
        }
        let n: f64 = number.parse().map_err(|_| bad())?;
        number.clear();
        total += n * match c {
            'h' => 3600.0,
            'm' => 60.0,
            's' => 1.0,
            _ => return Err(bad()),
        };
    }
    if !number.is_empty() || total <= 0.0 {
        return Err(bad());
    }
    Ok(total as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_are_compared_as_urls() {
        let site = "https://app.example.com";
        assert!(redirect_allowed("https://app.example.com/welcome?x=1", site, true));
        assert!(redirect_allowed("https://app.example.com", site, true));
        assert!(!redirect_allowed("https://app.example.com.evil.com/", site, true));
        assert!(!redirect_allowed("https://app.example.com@evil.com/", site, true));
        assert!(!redirect_allowed("https://evil.com\\@app.example.com/", site, true));
        assert!(!redirect_allowed("http://app.example.com/", site, true), "scheme");
        assert!(!redirect_allowed("https://app.example.com:8443/", site, true), "port");
        assert!(!redirect_allowed("https://app.example.com/\nx", site, true));
        assert!(redirect_allowed("http://localhost:3000/cb", "http://localhost:3000/", true));
        assert!(!redirect_allowed("http://localhost:30000/cb", "http://localhost:3000", true));
        assert!(redirect_allowed("https://a.example/auth/cb", "https://a.example/auth", true));
        assert!(!redirect_allowed("https://a.example/other", "https://a.example/auth", true));
        assert!(redirect_allowed("https://a.example/exact", "https://a.example/exact", false));
        assert!(!redirect_allowed("https://a.example/exact/more", "https://a.example/exact", false));
        assert!(!redirect_allowed("javascript:alert(1)", site, true));
    }

    #[test]
    fn emails_and_ban_durations() {
        assert!(valid_email("ada@example.com"));
        assert!(!valid_email("ada@localhost"));
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
}
