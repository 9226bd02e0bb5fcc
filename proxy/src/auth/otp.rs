//! One-time codes and links by e-mail and SMS: `/otp`, `/magiclink`,
//! `/recover`, `/resend`, `/verify`, and where their links may lead.
use http::StatusCode;
use serde_json::{json, Value};

use super::*;
use crate::db::Cached;
use crate::error::ApiError;
use crate::http::{empty_response, form_encode, json_response, Response};

/// An e-mailed link and code: for whom, what for, where the link leads.
pub(super) struct Mail<'a> {
    pub(super) email: &'a str,
    /// magiclink, recovery, signup or invite
    pub(super) kind: &'a str,
    /// Create the user when the address is unknown.
    pub(super) create: bool,
    pub(super) redirect: &'a str,
    pub(super) data: Option<Value>,
    /// The app's PKCE `(code_challenge, code_challenge_method)`: the link
    /// then leads to `?code=` instead of a session.
    pub(super) pkce: Option<(String, String)>,
}

/// A one-time code: six random digits.
pub(super) fn six_digits() -> String {
    format!("{:06}", rand::thread_rng().next_u32() % 1_000_000)
}

/// Sends one e-mail of `kind` to `to`.
pub(super) async fn deliver(
    mailer: &super::mailer::Mailer,
    to: &str,
    kind: super::mailer::Kind,
    fill: &super::mailer::Fill<'_>,
) -> Result<(), ApiError> {
    mailer.send(to, kind, fill).await.map_err(|e| match e {
        // GoTrue's sendEmail: an address the mail service refuses is the
        // caller's mistake, 400 `email_address_invalid`.
        super::mailer::SendError::Address(reason) => {
            tracing::info!(reason = %reason, "the mail relay refused a recipient");
            ApiError::auth(400, "email_address_invalid", format!("Email address \"{to}\" is invalid"))
        }
        super::mailer::SendError::Other(reason) => {
            tracing::error!(error = %reason, "sending e-mail failed");
            let msg = match kind {
                super::mailer::Kind::Invite => "Error sending invite email",
                super::mailer::Kind::Confirmation => "Error sending confirmation email",
                super::mailer::Kind::Recovery => "Error sending recovery email",
                super::mailer::Kind::EmailChange => "Error sending email change email",
                super::mailer::Kind::Reauthentication => "Error sending reauthentication email",
                super::mailer::Kind::MagicLink => "Error sending magic link email",
            };
            ApiError::auth(500, "unexpected_failure", msg)
        }
    })
}

/// Whether sessions may be sent to `candidate` on the strength of the
/// allowed URL `allowed`: the same scheme, host and port, no user info, no
/// control characters or backslashes, and (`prefix`) a path under
/// `allowed`'s, else the same URL. Comparing strings would let
/// `https://app.example.com.evil.com` and `https://app.example.com@evil.com`
/// through on `https://app.example.com`.
pub(super) fn redirect_allowed(candidate: &str, allowed: &str, prefix: bool) -> bool {
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

impl AuthCall<'_> {
    /// The `redirect_to` of an e-mail link or sign-in: the site URL by
    /// default; anything but the site URL or an allowed URL is replaced by
    /// the site URL, as GoTrue does (`getRedirectURLOrReferrer`): the caller
    /// gets 200 and links never lead elsewhere.
    pub(crate) fn redirect_target(&self, asked: Option<String>) -> Result<String, ApiError> {
        let config = &self.state.config.auth;
        let site = config.site_url.clone().unwrap_or_else(|| self.state.config.public_url());
        let Some(url) = asked.filter(|u| !u.is_empty()) else { return Ok(site) };
        if self.redirect_allowed(&url) {
            Ok(url)
        } else {
            tracing::info!(redirect_to = %url, "redirect_to is not allowed: the site URL is used");
            Ok(site)
        }
    }

    /// `url` is under the site URL or an `auth.redirect_urls` entry.
    pub(crate) fn redirect_allowed(&self, url: &str) -> bool {
        let config = &self.state.config.auth;
        let site = config.site_url.clone().unwrap_or_else(|| self.state.config.public_url());
        redirect_allowed(url, &site, true)
            || config.redirect_urls.iter().any(|p| match p.strip_suffix('*') {
                Some(prefix) => redirect_allowed(url, prefix, true),
                None => redirect_allowed(url, p, false),
            })
    }

    /// POST /otp, /magiclink, /recover: e-mails a link and a 6-digit code.
    /// Unknown addresses get the same answer as known ones (nothing is sent).
    pub(super) async fn send_email_token(
        &self,
        body: &Value,
        kind: &str,
        create: bool,
        redirect: Option<String>,
    ) -> Result<Response, ApiError> {
        let email = required_email(body)?;
        let redirect = self.redirect_target(redirect.or_else(|| body_text(body, "redirect_to").map(str::to_string)))?;
        let data = body.get("data").filter(|d| d.is_object()).cloned();
        let create = create && !self.state.config.auth.disable_signup;
        let pkce = pkce_of(body)?;
        self.email_token(Mail { email: &email, kind, create, redirect: &redirect, data, pkce }).await?;
        Ok(json_response(StatusCode::OK, &json!({})))
    }

    /// Stores a link and code of `kind` (magiclink, recovery, signup,
    /// invite) for `email`; `None` for an unknown address unless `create`.
    /// Returns the link URL, the link token, the code and whether the user
    /// was made for it.
    pub(super) async fn store_token(
        &self,
        mail: Mail<'_>,
        channel: &str,
        fixed_code: Option<String>,
        interval_seconds: u32,
    ) -> Result<Option<(String, String, String, bool)>, ApiError> {
        let Mail { email, kind, create, redirect, data, pkce } = mail;
        let (challenge, method) = pkce.unzip();
        let (link, link_hash) = new_refresh_token();
        let code = fixed_code.unwrap_or_else(six_digits);
        let code_hash = sha256_hex(&format!("{email}:{code}"));
        // Invites redeem like sign-up confirmations.
        let stored_kind = if kind == "invite" { "signup" } else { kind };
        let outcome: String = self
            .query_row(
                "SELECT fluxbase.auth_send_token($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
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
                ],
            )
            .await?
            .get(0);
        match outcome.as_str() {
            "too_soon" => Err(ApiError::RateLimited {
                retry_after: interval_seconds as u64,
                msg: format!("For security purposes, you can only request this after {interval_seconds} seconds."),
            }),
            "sent" | "created" => {
                let url = format!(
                    "{}/auth/v1/verify?token={link}&type={kind}&redirect_to={}",
                    self.state.config.public_url(),
                    form_encode(redirect)
                );
                Ok(Some((url, link, code, outcome == "created")))
            }
            _ => Ok(None),
        }
    }

    /// Stores a link and code of `kind` and mails them; nothing happens for
    /// an unknown address unless `create`.
    pub(super) async fn email_token(&self, mail: Mail<'_>) -> Result<(), ApiError> {
        let (email, kind, redirect) = (mail.email, mail.kind, mail.redirect);
        let config = &self.state.config.auth;
        let Some(mailer) = &self.service.mailer else {
            return Err(ApiError::auth(422, "email_provider_disabled", "E-mail needs auth.smtp_host"));
        };
        self.rate_limit(&[(format!("email:ip:{}", self.ctx.ip), config.rate_limit_email_per_ip)]).await?;
        let Some((url, link, code, created)) =
            self.store_token(mail, "email", None, config.email_interval_seconds).await?
        else {
            return Ok(());
        };
        let mail_kind = match kind {
            "recovery" => super::mailer::Kind::Recovery,
            "signup" => super::mailer::Kind::Confirmation,
            "invite" => super::mailer::Kind::Invite,
            "reauthentication" => super::mailer::Kind::Reauthentication,
            _ => super::mailer::Kind::MagicLink,
        };
        let site = self.redirect_target(None)?;
        let fill = super::mailer::Fill {
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
            // As GoTrue's transaction would: the code is taken back, and a
            // user made for this e-mail (invite, sign-in code) is removed.
            self.withdraw(&sha256_hex(&format!("{email}:{code}")), created).await;
        }
        sent
    }

    /// Takes back a stored code that never reached its recipient, and the
    /// user made for it (`created`).
    pub(super) async fn withdraw(&self, code_hash: &str, created: bool) {
        if created {
            if let Err(e) = self.execute("SELECT fluxbase.auth_withdraw_new_user($1)", &[&code_hash]).await {
                tracing::warn!(error = %e, "removing the user of an undelivered code failed");
            }
        }
        if let Err(e) = self.execute("SELECT fluxbase.auth_withdraw_token($1)", &[&code_hash]).await {
            tracing::warn!(error = %e, "withdrawing an undelivered code failed");
        }
    }

    /// Phone sign-in needs an SMS provider, unless sign-ups are confirmed
    /// without one or the number is a configured test number.
    pub(super) fn phone_enabled(&self, phone: &str) -> Result<(), ApiError> {
        let config = &self.state.config.auth;
        if self.service.sms.is_some() || config.sms_autoconfirm || config.sms_test_otp.contains_key(phone) {
            Ok(())
        } else {
            Err(ApiError::auth(422, "phone_provider_disabled", "Unsupported phone provider"))
        }
    }

    /// Stores a code of `kind` for `phone` and texts it (test numbers get
    /// their fixed code and no SMS); nothing happens for an unknown number
    /// unless `create`.
    pub(super) async fn sms_token(
        &self,
        phone: &str,
        kind: &str,
        create: bool,
        data: Option<Value>,
    ) -> Result<(), ApiError> {
        let config = &self.state.config.auth;
        let (code, test_number) = self.code_for(phone);
        let missing = || ApiError::auth(422, "phone_provider_disabled", "Unsupported phone provider");
        if !test_number && self.service.sms.is_none() {
            return Err(missing());
        }
        self.rate_limit(&[(format!("sms:ip:{}", self.ctx.ip), config.rate_limit_sms_per_ip)]).await?;
        let mail = Mail { email: phone, kind, create, redirect: "", data, pkce: None };
        let Some((_, _, _, created)) =
            self.store_token(mail, "phone", Some(code.clone()), config.sms_interval_seconds).await?
        else {
            return Ok(());
        };
        if !test_number {
            if let Err(e) = self.text_code(phone, &code, missing).await {
                self.withdraw(&sha256_hex(&format!("{phone}:{code}")), created).await;
                return Err(e);
            }
        }
        Ok(())
    }

    /// The code for `phone`: its fixed one when it is a test number
    /// (`true`: no SMS goes out), else six random digits.
    pub(super) fn code_for(&self, phone: &str) -> (String, bool) {
        match self.state.config.auth.sms_test_otp.get(phone) {
            Some(fixed) => (fixed.clone(), true),
            None => (six_digits(), false),
        }
    }

    /// Texts `code` to `phone` with `auth.sms_template`; `missing` is the
    /// refusal without an SMS provider. A provider failure is logged and
    /// answered `500 sms_send_failed`.
    pub(super) async fn text_code(
        &self,
        phone: &str,
        code: &str,
        missing: impl FnOnce() -> ApiError,
    ) -> Result<(), ApiError> {
        let sms = self.service.sms.as_ref().ok_or_else(missing)?;
        let message = self.state.config.auth.sms_template.replace("{{ .Code }}", code);
        sms.send(phone, code, &message).await.map_err(|e| {
            tracing::error!(error = %e, "sending an SMS failed");
            ApiError::auth(500, "sms_send_failed", "Error sending the SMS")
        })
    }

    /// Whether a user has this e-mail (or phone) and has not confirmed it:
    /// the password sign-in's candidate, without its lockout.
    async fn unconfirmed(&self, email: Option<&str>, phone: Option<&str>) -> Result<bool, ApiError> {
        let client = self.state.client().await?;
        let row = client
            .query_one_cached(
                "SELECT (fluxbase.auth_password_candidate($1, $2, 0, 0, 1) ->> 'confirmed') IS NOT DISTINCT FROM 'false'",
                &[&email, &phone],
            )
            .await
            .map_err(db_error)?;
        Ok(row.get(0))
    }

    /// POST /resend `{type: "signup", email}`: the confirmation mail again,
    /// for an address that is registered and not confirmed (else nothing).
    pub(super) async fn resend(&self, body: &Value, redirect: Option<String>) -> Result<Response, ApiError> {
        if body_text(body, "type") == Some("sms") {
            let phone = normalise_phone(body)?
                .ok_or_else(|| ApiError::auth(422, "validation_failed", "A phone number is required"))?;
            if self.unconfirmed(None, Some(&phone)).await? {
                self.sms_token(&phone, "signup", false, None).await?;
            }
            return Ok(json_response(StatusCode::OK, &json!({})));
        }
        if body_text(body, "type") != Some("signup") {
            return Err(ApiError::auth(
                400,
                "validation_failed",
                "Only types signup and sms can be resent in this release",
            ));
        }
        let email = required_email(body)?;
        let redirect = self.redirect_target(redirect)?;
        if self.unconfirmed(Some(&email), None).await? {
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
    /// arguments, then expiry, a fresh refresh-token hash, the address a
    /// code was typed for and `trailing` ones. Rate-limited per IP.
    pub(super) async fn redeem_with(
        &self,
        function: &str,
        leading: &[&(dyn ToSql + Sync)],
        address: Option<&str>,
        trailing: &[&(dyn ToSql + Sync)],
    ) -> Result<(Value, String), ApiError> {
        let config = &self.state.config.auth;
        self.rate_limit(&[(format!("verify:ip:{}", self.ctx.ip), config.rate_limit_verify_per_ip)]).await?;
        let (refresh, refresh_hash) = new_refresh_token();
        let expiry = config.otp_expiry_seconds as i32;
        let tail: [&(dyn ToSql + Sync); 3] = [&expiry, &refresh_hash, &address];
        let params: Vec<&(dyn ToSql + Sync)> =
            leading.iter().copied().chain(tail).chain(trailing.iter().copied()).collect();
        let placeholders: Vec<String> = (1..=params.len()).map(|i| format!("${i}")).collect();
        let sql = format!("SELECT fluxbase.{function}({})", placeholders.join(", "));
        let issued = self.query_json(&sql, &params).await?;
        refusal(&issued)?;
        Ok((issued, refresh))
    }

    pub(super) async fn redeem(
        &self,
        channel: &str,
        kind: &str,
        link_hash: Option<String>,
        code_hash: Option<String>,
        pkce_code: Option<&str>,
        address: Option<&str>,
    ) -> Result<(Value, String), ApiError> {
        let pkce_hash = pkce_code.map(sha256_hex);
        self.redeem_with("auth_verify_token", &[&channel, &kind, &link_hash, &code_hash, &pkce_hash], address, &[])
            .await
    }

    pub(super) async fn redeem_email_change(
        &self,
        link_hash: Option<String>,
        code_hash: Option<String>,
        address: Option<&str>,
    ) -> Result<(Value, String), ApiError> {
        // GoTrue's emailChangeVerify: with secure e-mail change, the first
        // confirmation of a pending change waits for a second one.
        let secure = self.state.config.auth.secure_email_change;
        self.redeem_with("auth_verify_email_change", &[&link_hash, &code_hash], address, &[&secure]).await
    }

    /// GET /verify: the link of an e-mail; redirects with the session in
    /// the fragment (or the error), as Supabase's implicit flow does, or
    /// with `?code=` when the link was asked for by a PKCE app.
    pub(super) async fn verify_link(
        &self,
        token: String,
        kind: String,
        redirect: Option<String>,
    ) -> Result<Response, ApiError> {
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
                return Ok(empty_response(
                    StatusCode::SEE_OTHER,
                    Some(&super::oauth::with_query(&redirect, &[("code", &pkce_code)])),
                ));
            }
            Ok((issued, refresh)) => format!("{}&type={kind}", self.session_fragment(&issued, &refresh, &[])?),
            Err(ApiError::Auth { error_code, msg, .. }) => {
                format!("error=access_denied&error_code={error_code}&error_description={}", form_encode(&msg))
            }
            Err(other) => return Err(other),
        };
        Ok(empty_response(StatusCode::SEE_OTHER, Some(&format!("{redirect}#{fragment}"))))
    }

    /// POST /verify `{type, email, token}` (the code) or `{type, token_hash}` (the link token).
    pub(super) async fn verify_code(&self, body: &Value) -> Result<Response, ApiError> {
        let (channel, kind) = match body_text(body, "type") {
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
        let (link_hash, code_hash) = match (body_text(body, "token_hash"), &address, body_text(body, "token")) {
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
                self.redeem_with("auth_verify_phone_change", &[&code_hash], address.as_deref(), &[]).await?;
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn redirects_are_compared_as_urls() {
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
}
