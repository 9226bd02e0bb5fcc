//! Sessions: sign-up, the password and refresh-token grants, sign-out, and
//! the session JSON (a signed access token beside the refresh token).
use http::StatusCode;
use serde_json::{json, Value};

use super::otp::Mail;
use super::password::Verdict;
use super::signing::sign_hs256;
use super::*;
use crate::error::ApiError;
use crate::http::{empty_response, form_encode, json_response, Response};
use crate::jwt::Caller;

impl AuthCall<'_> {
    pub(super) async fn hash(&self, password: String) -> Result<String, ApiError> {
        self.service
            .hasher
            .run(move |h| h.hash(&password))
            .await
            .ok_or_else(|| ApiError::Internal("password hashing failed".into()))
    }

    /// A new password, as policy allows it: `auth.password_min_length`, one
    /// character of each `auth.password_required_characters` set, not in the
    /// breached-password list. Refusals are `422 weak_password` with reasons.
    pub(super) async fn check_password(&self, password: Option<&str>) -> Result<String, ApiError> {
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
            if let Some(breach) = &self.service.breach {
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
        // A session an OAuth client obtained (oauth_server.rs) names it and
        // its scopes, as GoTrue's AccessTokenClaims.
        let mut claims = claims;
        for key in ["client_id", "scope"] {
            if let Some(value) = issued.get(key).filter(|v| !v.is_null()) {
                claims[key] = value.clone();
            }
        }
        let signed = match (&self.service.signing, self.state.config.jwt.secret.as_deref()) {
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

    pub(super) async fn signup(&self, body: &Value, redirect: Option<String>) -> Result<Response, ApiError> {
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
            Some(self.hash(self.check_password(body_text(body, "password")).await?).await?)
        };
        let confirmed = if phone.is_some() { config.sms_autoconfirm } else { config.autoconfirm() };
        let (refresh, refresh_hash) = new_refresh_token();
        let issued = self
            .query_json(
                "SELECT fluxbase.auth_signup($1, $2, $3, $4, $5, $6, $7)",
                &[&email, &phone, &hash, &data, &confirmed, &anonymous, &refresh_hash],
            )
            .await?;
        if issued.get("session_id").is_some() {
            return self.session(&issued, &refresh);
        }
        // A confirmed address signed up again: a made-up user, nothing sent.
        if issued.get("obfuscated").and_then(Value::as_bool) == Some(true) {
            return Ok(json_response(StatusCode::OK, issued.get("user").unwrap_or(&Value::Null)));
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

    /// Known and unknown accounts get the same answers and the same work:
    /// a lockout check (before any hashing), a hash, and an outcome that
    /// counts a wrong password for the identifier and client address
    /// whether or not a user has it (sql/auth/session.sql).
    pub(super) async fn password_grant(&self, body: &Value) -> Result<Response, ApiError> {
        let email = normalise_email(body).unwrap_or(None);
        let phone = if email.is_none() { normalise_phone(body).unwrap_or(None) } else { None };
        let password = body.get("password").and_then(Value::as_str).unwrap_or("").to_string();
        if email.is_none() && phone.is_none() {
            return Err(ApiError::auth(400, "validation_failed", "An email address or phone number is required"));
        }
        let config = &self.state.config.auth;
        let account = email.as_deref().or(phone.as_deref()).unwrap_or("").to_string();
        self.rate_limit(&[
            (format!("signin:ip:{}", self.ctx.ip), config.rate_limit_signins_per_ip),
            // Per account *and* address: one stranger's attempts cannot use
            // up the owner's sign-ins (the lockout's account-wide ceiling
            // covers attacks spread over many addresses).
            (format!("signin:account:{account}:ip:{}", self.ctx.ip), config.rate_limit_signins_per_account),
        ])
        .await?;
        let max = config.lockout_max_failures as i32;
        let account_max = config.lockout_account_max_failures as i32;
        let window = config.lockout_seconds as i32;
        // Refused here (429) while the identifier is locked for this address.
        let candidate = self
            .query_json(
                "SELECT fluxbase.auth_password_candidate($1, $2, $3, $4, $5)",
                &[&email, &phone, &max, &account_max, &window],
            )
            .await?;
        let stored = candidate.get("password_hash").and_then(Value::as_str).map(str::to_string);
        let verdict = self
            .service
            .hasher
            .run(move |h| h.verify(&password, stored.as_deref()))
            .await
            .ok_or_else(|| ApiError::Internal("password check failed".into()))?;
        let user: Option<uuid::Uuid> = candidate.get("user_id").and_then(Value::as_str).and_then(|id| id.parse().ok());
        let flag = |key: &str| candidate.get(key).and_then(Value::as_bool).unwrap_or(false);
        let (ok, rehash) = match verdict {
            Verdict::Right if user.is_some() => (true, None),
            Verdict::RightRehashed(h) if user.is_some() => (true, Some(h)),
            _ => (false, None),
        };
        // Only the right password learns these, as in Supabase.
        if ok && flag("banned") {
            return Err(ApiError::auth(400, "user_banned", "User is banned"));
        }
        if ok && !flag("confirmed") {
            return Err(match phone {
                Some(_) => ApiError::auth(400, "phone_not_confirmed", "Phone not confirmed"),
                None => ApiError::auth(400, "email_not_confirmed", "Email not confirmed"),
            });
        }
        let (refresh, refresh_hash) = new_refresh_token();
        let issued = self
            .query_json(
                "SELECT fluxbase.auth_password_outcome($1, $2, $3, $4, $5, $6, $7, $8)",
                &[&account, &user, &ok, &max, &account_max, &window, &rehash, &refresh_hash],
            )
            .await?;
        refusal(&issued)?;
        self.session(&issued, &refresh)
    }

    pub(super) async fn refresh_grant(&self, body: &Value) -> Result<Response, ApiError> {
        let Some(old) = body_text(body, "refresh_token") else {
            return Err(ApiError::auth(400, "validation_failed", "refresh_token is required"));
        };
        let config = &self.state.config.auth;
        self.rate_limit(&[(format!("refresh:ip:{}", self.ctx.ip), config.rate_limit_refresh_per_ip)]).await?;
        let (refresh, refresh_hash) = new_refresh_token();
        let reuse = config.refresh_token_reuse_interval_seconds as i32;
        let issued = self
            .query_json("SELECT fluxbase.auth_refresh($1, $2, $3)", &[&sha256_hex(old), &refresh_hash, &reuse])
            .await?;
        // An OAuth client's session is refreshed at /oauth/token only (GoTrue).
        if let Some(refused) = oauth_refusal(&issued) {
            return Ok(refused);
        }
        refusal(&issued)?;
        self.session(&issued, &refresh)
    }

    pub(super) async fn logout(&self, caller: &Caller, scope: &str) -> Result<Response, ApiError> {
        if !["global", "local", "others"].contains(&scope) {
            return Err(ApiError::auth(400, "validation_failed", "scope must be global, local or others"));
        }
        let (user, session) = session_of(caller)?;
        self.query_row("SELECT fluxbase.auth_logout($1, $2, $3)", &[&user, &session, &scope]).await?;
        Ok(empty_response(StatusCode::NO_CONTENT, None))
    }
}
