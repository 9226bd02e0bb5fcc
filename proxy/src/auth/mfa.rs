//! Multi-factor authentication: enrolling TOTP and phone factors, challenges
//! and verification up to aal2.
use http::StatusCode;
use serde_json::{json, Value};

use super::*;
use crate::db::Cached;
use crate::error::ApiError;
use crate::http::{json_response, Response};
use crate::jwt::Caller;

impl AuthCall<'_> {
    /// POST /factors: a TOTP factor, unverified until its first code.
    pub(super) async fn mfa_enroll(&self, caller: &Caller, body: &Value) -> Result<Response, ApiError> {
        let (user, session) = session_of(caller)?;
        let config = &self.state.config.auth;
        match body_text(body, "factor_type") {
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

    /// POST /factors/{id}/challenge: for a phone factor, the code goes out by SMS.
    pub(super) async fn mfa_challenge(&self, caller: &Caller, factor: uuid::Uuid) -> Result<Response, ApiError> {
        let (user, session) = session_of(caller)?;
        let config = &self.state.config.auth;
        let mut challenge = self
            .query_json(
                "SELECT fluxbase.auth_mfa_challenge($1, $2, $3, $4)",
                &[&user, &session, &factor, &(config.sms_interval_seconds as i32)],
            )
            .await?;
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
                self.rate_limit(&[(format!("sms:ip:{}", self.ctx.ip), config.rate_limit_signins_per_ip)]).await?;
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
}
