//! The signed-in user: `GET/PUT /user`, e-mail and phone changes, and
//! reauthentication before a password change.
use http::StatusCode;
use serde_json::{json, Value};

use super::otp::{deliver, six_digits, Mail};
use super::*;
use crate::error::ApiError;
use crate::http::{form_encode, json_response, Response};
use crate::jwt::Caller;

impl AuthCall<'_> {
    pub(super) async fn user(&self, caller: &Caller) -> Result<Response, ApiError> {
        let (user, session) = session_of(caller)?;
        self.call_json("SELECT fluxbase.auth_user($1, $2)", &[&user, &session]).await
    }

    /// PUT /user. A new e-mail is confirmed by e-mail when mail is sent
    /// and sign-ups are not auto-confirmed (to the new address and, with
    /// `auth.secure_email_change`, the current one); a new password may
    /// need the `nonce` of GET /reauthenticate.
    pub(super) async fn update_user(
        &self,
        caller: &Caller,
        body: &Value,
        redirect: Option<String>,
    ) -> Result<Response, ApiError> {
        let (user, session) = session_of(caller)?;
        let config = &self.state.config.auth;
        let email = normalise_email(body)?;
        let phone = normalise_phone(body)?;
        let hash = match body.get("password") {
            Some(_) => {
                let password = self.check_password(body_text(body, "password")).await?;
                self.check_nonce(user, caller, body_text(body, "nonce")).await?;
                Some(self.hash(password).await?)
            }
            None => None,
        };
        let data = body.get("data").filter(|d| d.is_object()).cloned();
        let confirm_by_mail = email.is_some() && self.service.mailer.is_some() && !config.autoconfirm();
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
                "SELECT fluxbase.auth_update_user($1, $2, $3, $4, $5, $6)",
                &[&user, &session, &immediate, &immediate_phone, &hash, &data],
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
    pub(super) async fn phone_change(
        &self,
        user: uuid::Uuid,
        session: Option<uuid::Uuid>,
        new: &str,
    ) -> Result<Value, ApiError> {
        let config = &self.state.config.auth;
        self.rate_limit(&[(format!("sms:ip:{}", self.ctx.ip), config.rate_limit_sms_per_ip)]).await?;
        let (code, test_number) = self.code_for(new);
        let code_hash = sha256_hex(&format!("{new}:{code}"));
        let (_, link_hash) = new_refresh_token();
        let updated = self
            .query_json(
                "SELECT fluxbase.auth_phone_change_request($1, $2, $3, $4, $5, $6)",
                &[&user, &session, &new, &link_hash, &code_hash, &(config.sms_interval_seconds as i32)],
            )
            .await?;
        if !test_number {
            let missing = || ApiError::auth(422, "phone_provider_disabled", "Unsupported phone provider");
            if let Err(e) = self.text_code(new, &code, missing).await {
                self.withdraw(&code_hash, false).await;
                return Err(e);
            }
        }
        Ok(updated)
    }

    /// The `nonce` (a code from GET /reauthenticate) of a password change:
    /// checked when given, required by `auth.update_password_require_reauthentication`.
    pub(super) async fn check_nonce(
        &self,
        user: uuid::Uuid,
        caller: &Caller,
        nonce: Option<&str>,
    ) -> Result<(), ApiError> {
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
        // The code went to the e-mail, or by SMS to a user without one.
        let claim = |k: &str| caller.claims.get(k).and_then(Value::as_str).filter(|v| !v.is_empty());
        let address = claim("email").or_else(|| claim("phone")).unwrap_or("");
        let ok: bool = self
            .query_row(
                "SELECT fluxbase.auth_reauthenticated($1, $2, $3)",
                &[&user, &sha256_hex(&format!("{address}:{nonce}")), &(config.otp_expiry_seconds as i32)],
            )
            .await?
            .get(0);
        if ok {
            Ok(())
        } else {
            Err(ApiError::auth(400, "reauthentication_not_valid", "Verification code is invalid or has expired"))
        }
    }

    /// GET /reauthenticate: a code that PUT /user takes as `nonce`, e-mailed,
    /// or texted to a user without an e-mail (GoTrue's `Reauthenticate`).
    pub(super) async fn reauthenticate(&self, caller: &Caller) -> Result<Response, ApiError> {
        let (user, session) = session_of(caller)?;
        let me = self.query_json("SELECT fluxbase.auth_user($1, $2)", &[&user, &session]).await?;
        let field = |k: &str| me.get(k).and_then(Value::as_str).filter(|v| !v.is_empty());
        match (field("email"), field("phone")) {
            (Some(email), _) => {
                let site = self.redirect_target(None)?;
                let mail =
                    Mail { email, kind: "reauthentication", create: false, redirect: &site, data: None, pkce: None };
                self.email_token(mail).await?;
            }
            (None, Some(phone)) => {
                self.phone_enabled(phone)?;
                self.sms_token(phone, "reauthentication", false, None).await?;
            }
            (None, None) => {
                return Err(ApiError::auth(
                    422,
                    "validation_failed",
                    "Reauthentication requires the user to have an email or a phone number",
                ))
            }
        }
        Ok(json_response(StatusCode::OK, &json!({})))
    }

    /// Starts an e-mail change: codes and links to the new address and
    /// (secure change) the current one; the user, with `new_email`.
    pub(super) async fn email_change(
        &self,
        user: uuid::Uuid,
        session: Option<uuid::Uuid>,
        current: &str,
        new: &str,
        redirect: &str,
    ) -> Result<Value, ApiError> {
        let config = &self.state.config.auth;
        let Some(mailer) = &self.service.mailer else {
            return Err(ApiError::auth(422, "email_provider_disabled", "E-mail needs auth.smtp_host"));
        };
        self.rate_limit(&[(format!("email:ip:{}", self.ctx.ip), config.rate_limit_email_per_ip)]).await?;
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
                "SELECT fluxbase.auth_email_change_request($1, $2, $3, $4, $5, $6, $7, $8)",
                &[
                    &user,
                    &session,
                    &new,
                    &to_new.1,
                    &to_new.3,
                    &to_current.as_ref().map(|t| &t.1),
                    &to_current.as_ref().map(|t| &t.3),
                    &(config.email_interval_seconds as i32),
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
            let fill = super::mailer::Fill {
                confirmation_url: &url,
                token: code,
                token_hash: link,
                site_url: &site,
                email: current,
                redirect_to: redirect,
                new_email: new,
            };
            if let Err(e) = deliver(mailer, to, super::mailer::Kind::EmailChange, &fill).await {
                // Both confirmations or none: with one withdrawn, the other
                // alone would complete a secure change.
                self.withdraw(&to_new.3, false).await;
                if let Some(current) = &to_current {
                    self.withdraw(&current.3, false).await;
                }
                return Err(e);
            }
        }
        Ok(updated)
    }
}
