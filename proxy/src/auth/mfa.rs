//! Multi-factor authentication: enrolling TOTP, phone and WebAuthn factors,
//! challenges and verification up to aal2. WebAuthn ceremonies are checked
//! by webauthn.rs, as for passkeys; the factor's credential and each
//! challenge's ceremony live in Supabase's columns (`web_authn_credential`,
//! `web_authn_session_data`).
use http::StatusCode;
use rand::RngCore;
use serde_json::{json, Value};

use super::*;
use crate::db::Cached;
use crate::error::ApiError;
use crate::http::{json_response, Response};
use crate::jwt::Caller;

impl AuthCall<'_> {
    /// The factor id of a challenge or verify route, once the session is
    /// known good: no session is 401 and a signed-out one its refusal,
    /// whatever the id (the id's own checks come after).
    pub(super) async fn factor_of_session(&self, caller: &Caller, id: &str) -> Result<uuid::Uuid, ApiError> {
        let (user, session) = session_of(caller)?;
        match factor_id(id) {
            Ok(factor) => Ok(factor),
            Err(e) => {
                self.query_json("SELECT fluxbase.auth_user($1, $2)", &[&user, &session]).await?;
                Err(e)
            }
        }
    }

    /// POST /factors: a TOTP factor, unverified until its first code.
    pub(super) async fn mfa_enroll(&self, caller: &Caller, body: &Value) -> Result<Response, ApiError> {
        let (user, session) = session_of(caller)?;
        let config = &self.state.config.auth;
        match body_text(body, "factor_type") {
            Some("totp") => {}
            Some("phone") => return self.mfa_enroll_phone(caller, body).await,
            Some("webauthn") => return self.mfa_enroll_webauthn(caller, body).await,
            _ => {
                return Err(ApiError::auth(
                    400,
                    "validation_failed",
                    "factor_type needs to be totp, phone, or webauthn",
                ))
            }
        }
        let Some(key) = &self.service.mfa_key else {
            return Err(ApiError::auth(
                422,
                "mfa_totp_enroll_not_enabled",
                "MFA enrolment is disabled: auth.mfa_encryption_key is not set",
            ));
        };
        let secret = super::totp::new_secret();
        let sealed = super::totp::encrypt(key, &secret);
        let friendly = body_text(body, "friendly_name").map(str::to_string);
        let aal = caller.claims.get("aal").and_then(Value::as_str).unwrap_or("aal1").to_string();
        let row = self
            .query_row(
                "SELECT fluxbase.auth_mfa_enroll($1, $2, $3, $4, $5, $6)",
                &[&user, &session, &aal, &friendly, &sealed, &(config.mfa_max_factors as i32)],
            )
            .await?;
        let id: uuid::Uuid = row.get(0);
        let issuer = body_text(body, "issuer").unwrap_or(&config.mfa_issuer);
        let account = caller.claims.get("email").and_then(Value::as_str).filter(|e| !e.is_empty());
        let uri = super::totp::uri(&secret, issuer, account.unwrap_or(&user.to_string()));
        Ok(json_response(
            StatusCode::OK,
            &json!({
                "id": id.to_string(),
                "type": "totp",
                "friendly_name": friendly.unwrap_or_default(),
                "totp": { "qr_code": super::totp::qr_svg(&uri).unwrap_or_default(), "secret": secret, "uri": uri },
            }),
        ))
    }

    /// POST /factors `{factor_type: "phone", phone}`: codes by SMS.
    pub(super) async fn mfa_enroll_phone(&self, caller: &Caller, body: &Value) -> Result<Response, ApiError> {
        let (user, session) = session_of(caller)?;
        let config = &self.state.config.auth;
        let phone = normalise_phone(body)?
            .ok_or_else(|| ApiError::auth(400, "validation_failed", "A phone number is required"))?;
        if self.service.sms.is_none() && !config.sms_test_otp.contains_key(&phone) {
            return Err(ApiError::auth(422, "mfa_phone_enroll_not_enabled", "MFA by phone needs auth.sms_provider"));
        }
        let friendly = body_text(body, "friendly_name").map(str::to_string);
        let aal = caller.claims.get("aal").and_then(Value::as_str).unwrap_or("aal1").to_string();
        let id: uuid::Uuid = self
            .query_row(
                "SELECT fluxbase.auth_mfa_enroll($1, $2, $3, $4, NULL, $5, 'phone', $6)",
                &[&user, &session, &aal, &friendly, &(config.mfa_max_factors as i32), &phone],
            )
            .await?
            .get(0);
        Ok(json_response(
            StatusCode::OK,
            &json!({ "id": id.to_string(), "type": "phone", "friendly_name": friendly.unwrap_or_default(), "phone": phone }),
        ))
    }

    /// POST /factors `{factor_type: "webauthn", friendly_name}`: unverified
    /// until its first challenge registers a credential.
    pub(super) async fn mfa_enroll_webauthn(&self, caller: &Caller, body: &Value) -> Result<Response, ApiError> {
        let (user, session) = session_of(caller)?;
        let config = &self.state.config.auth;
        if !config.passkeys {
            return Err(ApiError::auth(422, "mfa_webauthn_enroll_not_enabled", "MFA enroll is disabled for WebAuthn"));
        }
        let friendly = body_text(body, "friendly_name").map(str::to_string);
        let aal = caller.claims.get("aal").and_then(Value::as_str).unwrap_or("aal1").to_string();
        let id: uuid::Uuid = self
            .query_row(
                "SELECT fluxbase.auth_mfa_enroll($1, $2, $3, $4, NULL, $5, 'webauthn')",
                &[&user, &session, &aal, &friendly, &(config.mfa_max_factors as i32)],
            )
            .await?
            .get(0);
        Ok(json_response(
            StatusCode::OK,
            &json!({ "id": id.to_string(), "type": "webauthn", "friendly_name": friendly.unwrap_or_default() }),
        ))
    }

    /// A WebAuthn factor's challenge (`challenge` made by auth_mfa_challenge):
    /// registration options while the factor is unverified, assertion
    /// options for its credential once verified, as GoTrue's
    /// `{webauthn: {type: "create" | "request", credential_options: {publicKey}}}`.
    /// The relying party is Fluxbase's (`auth.passkey_rp_id`,
    /// `auth.passkey_origins`), not the `rpId` a client sends.
    async fn webauthn_challenge(&self, user: uuid::Uuid, challenge: &mut Value) -> Result<(), ApiError> {
        use super::webauthn::b64url;
        if !self.state.config.auth.passkeys {
            return Err(ApiError::auth(
                422,
                "mfa_webauthn_verify_not_enabled",
                "MFA verification is disabled for WebAuthn",
            ));
        }
        let mut bytes = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut bytes);
        let text = b64url(&bytes);
        let (rp_id, _, rp_name) = self.relying_party();
        let id = challenge.get("id").and_then(Value::as_str).and_then(|c| uuid::Uuid::parse_str(c).ok());
        let data = json!({
            "challenge": text,
            "rpId": rp_id,
            "user_id": b64_std(user.as_bytes()),
            "userVerification": "preferred",
        });
        let begun =
            self.query_json("SELECT fluxbase.auth_mfa_webauthn_begin($1, $2, $3)", &[&user, &id, &data]).await?;
        let to_url = |v: &Value| v.as_str().and_then(from_b64_std).map(|b| b64url(&b));
        let options = if begun["status"] == "verified" {
            let allow: Vec<Value> = to_url(&begun["credential"]["id"])
                .map(|id| json!({ "type": "public-key", "id": id }))
                .into_iter()
                .collect();
            json!({ "type": "request", "credential_options": { "publicKey": {
                "challenge": text,
                "timeout": 300_000,
                "rpId": rp_id,
                "allowCredentials": allow,
                "userVerification": "preferred",
            } } })
        } else {
            let name = begun["name"].as_str().unwrap_or_default();
            let exclude: Vec<Value> = begun["exclude"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(to_url)
                .map(|id| json!({ "type": "public-key", "id": id }))
                .collect();
            json!({ "type": "create", "credential_options": { "publicKey": {
                "rp": { "name": rp_name, "id": rp_id },
                "user": { "name": name, "displayName": name, "id": b64url(user.as_bytes()) },
                "challenge": text,
                "pubKeyCredParams": [{ "type": "public-key", "alg": -7 }, { "type": "public-key", "alg": -257 }],
                "timeout": 300_000,
                "excludeCredentials": exclude,
                "authenticatorSelection": { "userVerification": "preferred" },
                "attestation": "none",
            } } })
        };
        challenge["webauthn"] = options;
        Ok(())
    }

    /// POST /factors/{id}/challenge: for a phone factor, the code goes out by
    /// SMS; for a WebAuthn factor, the ceremony's options.
    pub(super) async fn mfa_challenge(&self, caller: &Caller, factor: uuid::Uuid) -> Result<Response, ApiError> {
        let (user, session) = session_of(caller)?;
        let config = &self.state.config.auth;
        let mut challenge = self
            .query_json(
                "SELECT fluxbase.auth_mfa_challenge($1, $2, $3, $4)",
                &[&user, &session, &factor, &(config.sms_interval_seconds as i32)],
            )
            .await?;
        if challenge.get("type").and_then(Value::as_str) == Some("webauthn") {
            self.webauthn_challenge(user, &mut challenge).await?;
            return Ok(json_response(StatusCode::OK, &challenge));
        }
        let phone = challenge.as_object_mut().and_then(|o| o.remove("phone"));
        if let Some(phone) = phone.as_ref().and_then(Value::as_str) {
            let id = challenge.get("id").and_then(Value::as_str).unwrap_or_default().to_string();
            let (code, test_number) = self.code_for(phone);
            self.execute(
                "SELECT fluxbase.auth_mfa_challenge_code($1::text::uuid, $2)",
                &[&id, &sha256_hex(&format!("{id}:{code}"))],
            )
            .await?;
            if !test_number {
                // Every challenge texts someone: the same per-IP limit as sign-in codes.
                self.rate_limit(&[(format!("sms:ip:{}", self.ctx.ip), config.rate_limit_sms_per_ip)]).await?;
                let missing =
                    || ApiError::auth(422, "mfa_phone_enroll_not_enabled", "MFA by phone needs auth.sms_provider");
                self.text_code(phone, &code, missing).await?;
            }
        }
        Ok(json_response(StatusCode::OK, &challenge))
    }

    /// POST /factors/{id}/verify: a right code moves the session to aal2.
    pub(super) async fn mfa_verify(
        &self,
        caller: &Caller,
        factor: uuid::Uuid,
        body: &Value,
    ) -> Result<Response, ApiError> {
        let (user, session) = session_of(caller)?;
        let config = &self.state.config.auth;
        let challenge = body_text(body, "challenge_id")
            .and_then(|c| uuid::Uuid::parse_str(c).ok())
            .ok_or_else(|| ApiError::auth(400, "validation_failed", "challenge_id is required"))?;
        if let Some(params) = body.get("webauthn").filter(|w| !w.is_null()) {
            return self.mfa_verify_webauthn(user, session, factor, challenge, params).await;
        }
        let code = body_text(body, "code").unwrap_or("").to_string();
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
        if row.get::<_, String>("factor_type") == "webauthn" {
            return Err(ApiError::auth(400, "validation_failed", "WebAuthn config required"));
        }
        // Past the failure limit, auth_mfa_result refuses even a right code.
        let (ok, step) = if row.get::<_, String>("factor_type") == "phone" {
            // The texted code, bound to its challenge; none stored yet: wrong.
            let stored: Option<String> = row.get("otp_code");
            let given = sha256_hex(&format!("{challenge}:{code}"));
            (stored.is_some_and(|s| crate::jwt::constant_time_eq(s.as_bytes(), given.as_bytes())), None)
        } else {
            let key = self
                .service
                .mfa_key
                .as_ref()
                .ok_or_else(|| ApiError::auth(422, "mfa_verification_rejected", "MFA is not configured"))?;
            let sealed: Option<String> = row.get("secret");
            let secret = sealed.as_deref().and_then(|s| super::totp::decrypt(key, s)).ok_or_else(|| {
                ApiError::Internal("a TOTP secret does not decrypt with auth.mfa_encryption_key".into())
            })?;
            let step = super::totp::matching_step(&secret, &code, unix_now()).map(|s| s as i64);
            (step.is_some(), step)
        };
        let (refresh, refresh_hash) = new_refresh_token();
        let issued = self
            .query_json(
                "SELECT fluxbase.auth_mfa_result($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                &[
                    &user,
                    &session,
                    &factor,
                    &challenge,
                    &ok,
                    &refresh_hash,
                    &step,
                    &(config.mfa_max_verify_failures as i32),
                    &(config.mfa_failure_window_seconds as i32),
                ],
            )
            .await?;
        refusal(&issued)?;
        self.session(&issued, &refresh)
    }

    /// POST /factors/{id}/verify `{challenge_id, webauthn: {type,
    /// credential_response}}`: a new credential (`create`, the factor's
    /// first) or an assertion by the factor's credential (`request`); a
    /// right one moves the session to aal2, a wrong one counts as a wrong
    /// code does.
    async fn mfa_verify_webauthn(
        &self,
        user: uuid::Uuid,
        session: Option<uuid::Uuid>,
        factor: uuid::Uuid,
        challenge: uuid::Uuid,
        params: &Value,
    ) -> Result<Response, ApiError> {
        let config = &self.state.config.auth;
        let kind = params.get("type").and_then(Value::as_str);
        if !matches!(kind, Some("create" | "request")) {
            return Err(ApiError::auth(400, "validation_failed", "WebAuthn type must be create or request"));
        }
        let Some(response) = params.get("credential_response").filter(|r| r.is_object()) else {
            return Err(ApiError::auth(400, "validation_failed", "credential_response required"));
        };
        self.rate_limit(&[(format!("verify:ip:{}", self.ctx.ip), config.rate_limit_verify_per_ip)]).await?;
        let state = self
            .query_json(
                "SELECT fluxbase.auth_mfa_webauthn_state($1, $2, $3, $4)",
                &[&user, &session, &factor, &challenge],
            )
            .await?;
        if state["factor_type"] != "webauthn" {
            return Err(ApiError::auth(400, "validation_failed", "The factor is not a WebAuthn factor"));
        }
        let expected = state["session_data"]["challenge"].as_str().unwrap_or_default();
        let (rp_id, origins, _) = self.relying_party();
        let rp = super::webauthn::RelyingParty { id: &rp_id, origins: &origins };
        let verified = state["status"] == "verified";
        let refused = |e: String| tracing::info!(reason = %e, "a WebAuthn factor's answer was refused");
        let (mut ok, mut credential, mut aaguid, mut count) = (false, None, None, None);
        match (kind, verified) {
            (Some("create"), false) => match super::webauthn::verify_registration(response, expected, &rp) {
                Ok(new) => {
                    ok = true;
                    aaguid = Some(new.aaguid);
                    credential = Some(json!({
                        "id": b64_std(&new.id),
                        "publicKey": b64_std(&new.public_key),
                        "attestationType": "none",
                        "transport": [],
                        "authenticator": {
                            "AAGUID": b64_std(new.aaguid.as_bytes()),
                            "signCount": new.sign_count,
                            "cloneWarning": false,
                        },
                    }));
                }
                Err(e) => refused(e),
            },
            (Some("request"), true) => {
                let stored = &state["credential"];
                let id = stored["id"].as_str().and_then(from_b64_std);
                let key = stored["publicKey"].as_str().and_then(from_b64_std);
                match (id, key, super::webauthn::credential_id(response)) {
                    (Some(id), Some(key), Ok(given)) if id == given => {
                        match super::webauthn::verify_assertion(response, expected, &rp, &key) {
                            Ok(n) => (ok, count) = (true, Some(n as i64)),
                            Err(e) => refused(e),
                        }
                    }
                    _ => refused("not the factor's credential".into()),
                }
            }
            _ => refused(format!("a {} answer for a {} factor", kind.unwrap_or(""), state["status"])),
        }
        let (refresh, refresh_hash) = new_refresh_token();
        let issued = self
            .query_json(
                "SELECT fluxbase.auth_mfa_webauthn_result($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                &[
                    &user,
                    &session,
                    &factor,
                    &challenge,
                    &ok,
                    &credential,
                    &aaguid,
                    &count,
                    &refresh_hash,
                    &(config.mfa_max_verify_failures as i32),
                    &(config.mfa_failure_window_seconds as i32),
                ],
            )
            .await?;
        refusal(&issued)?;
        self.session(&issued, &refresh)
    }
}

/// Base64 with padding, as Go's encoding/json writes `[]byte` (GoTrue's
/// go-webauthn credential and session data).
fn b64_std(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn from_b64_std(s: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).ok()
}
