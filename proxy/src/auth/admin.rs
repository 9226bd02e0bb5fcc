//! The service-role API: `/admin/users`, `/invite`, `/admin/generate_link`.
use http::StatusCode;
use serde_json::{json, Value};

use super::otp::Mail;
use super::*;
use crate::error::ApiError;
use crate::http::{json_response, Response};

/// `ban_duration` as GoTrue reads it: `none`, or a Go duration like `24h`, `90m`, `30s`.
pub(super) fn ban_seconds(s: &str) -> Result<i64, ApiError> {
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

/// The user plus what an e-mail would carry, as GoTrue's GenerateLinkResponse.
fn link_answer(mut user: Value, url: &str, code: &str, link: &str, redirect: &str, kind: &str) -> Value {
    if let Some(o) = user.as_object_mut() {
        o.insert("action_link".into(), json!(url));
        o.insert("email_otp".into(), json!(code));
        o.insert("hashed_token".into(), json!(link));
        o.insert("redirect_to".into(), json!(redirect));
        o.insert("verification_type".into(), json!(kind));
    }
    user
}

/// `page` and `per_page` as GoTrue's `paginate` reads them: unsigned
/// decimal integers (default 1 and 50), `per_page` above 0; anything else is
/// `400 validation_failed` "Bad Pagination Parameters: …" with Go's
/// `strconv.ParseUint` wording. `per_page` is capped at 1000 here.
pub(super) fn pagination(page: Option<&str>, per_page: Option<&str>) -> Result<(i32, i32), ApiError> {
    let parse = |s: &str| -> Result<u64, ApiError> {
        let syntax = s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit());
        match s.parse::<u64>() {
            Ok(n) if !syntax => Ok(n),
            _ => {
                let why = if syntax { "invalid syntax" } else { "value out of range" };
                Err(ApiError::auth(
                    400,
                    "validation_failed",
                    format!("Bad Pagination Parameters: strconv.ParseUint: parsing {s:?}: {why}"),
                ))
            }
        }
    };
    let page = page.filter(|p| !p.is_empty()).map(parse).transpose()?.unwrap_or(1);
    let per_page = per_page.filter(|p| !p.is_empty()).map(parse).transpose()?.unwrap_or(50);
    if per_page == 0 {
        return Err(ApiError::auth(
            400,
            "validation_failed",
            "Bad Pagination Parameters: per_page must be greater than 0",
        ));
    }
    // Page 0 is the first page, as in GoTrue.
    Ok((page.clamp(1, i32::MAX as u64) as i32, per_page.min(1000) as i32))
}

impl AuthCall<'_> {
    /// POST /invite (service_role): creates the user and mails an invitation.
    /// A confirmed address is `422 email_exists`; when the e-mail cannot be
    /// sent, the user made for it is removed again.
    pub(super) async fn invite(&self, body: &Value, redirect: Option<String>) -> Result<Response, ApiError> {
        let email = required_email(body)?;
        let redirect = self.redirect_target(redirect)?;
        self.refuse_confirmed(&email).await?;
        let data = body.get("data").filter(|d| d.is_object()).cloned();
        self.email_token(Mail { email: &email, kind: "invite", create: true, redirect: &redirect, data, pkce: None })
            .await?;
        Ok(json_response(StatusCode::OK, &self.user_by_email(&email).await?))
    }

    pub(super) async fn user_by_email(&self, email: &str) -> Result<Value, ApiError> {
        self.query_json("SELECT fluxbase.auth_user_by_email($1)", &[&email]).await
    }

    /// Invites and sign-up links are for addresses nobody has confirmed.
    async fn refuse_confirmed(&self, email: &str) -> Result<(), ApiError> {
        let user = self.user_by_email(email).await?;
        if user.get("email_confirmed_at").is_some_and(|c| !c.is_null()) {
            return Err(ApiError::auth(
                422,
                "email_exists",
                "A user with this email address has already been registered",
            ));
        }
        Ok(())
    }

    /// POST /admin/generate_link: the link and code an e-mail would carry,
    /// returned instead of sent (for your own mail provider). Types as
    /// GoTrue's: magiclink, recovery, invite, signup (with `password`),
    /// email_change_current and email_change_new (with `new_email`).
    pub(super) async fn generate_link(&self, body: &Value, redirect: Option<String>) -> Result<Response, ApiError> {
        let kind = body.get("type").and_then(Value::as_str).unwrap_or("");
        if !matches!(kind, "magiclink" | "recovery" | "invite" | "signup" | "email_change_current" | "email_change_new")
        {
            return Err(ApiError::auth(
                400,
                "validation_failed",
                format!("Invalid email action link type requested: {kind}"),
            ));
        }
        let email = required_email(body)?;
        let redirect = self.redirect_target(redirect.or_else(|| body_text(body, "redirect_to").map(str::to_string)))?;
        let data = body.get("data").filter(|d| d.is_object()).cloned();
        if kind.starts_with("email_change_") {
            return self.email_change_link(kind, &email, body, &redirect).await;
        }
        if kind == "invite" || kind == "signup" {
            self.refuse_confirmed(&email).await?;
        }
        // An unknown address's magic link is a sign-up, as in GoTrue.
        let unknown = kind == "magiclink" && self.user_by_email(&email).await?.is_null();
        let verification = if unknown { "signup" } else { kind };
        if kind == "signup" {
            let hash = self.hash(self.check_password(body_text(body, "password")).await?).await?;
            let (_, refresh_hash) = new_refresh_token();
            self.query_json(
                "SELECT fluxbase.auth_signup($1, NULL, $2, $3, false, false, $4)",
                &[&email, &hash, &data, &refresh_hash],
            )
            .await?;
        }
        let create = kind == "invite" || unknown;
        let mail = Mail { email: &email, kind: verification, create, redirect: &redirect, data, pkce: None };
        let Some((url, link, code, _)) = self.store_token(mail, "email", None, 0).await? else {
            return Err(ApiError::auth(404, "user_not_found", "User with this email not found"));
        };
        let out = self.user_by_email(&email).await?;
        Ok(json_response(StatusCode::OK, &link_answer(out, &url, &code, &link, &redirect, verification)))
    }

    /// generate_link `email_change_current` / `email_change_new`: one link
    /// and code, for the current address or `new_email`.
    async fn email_change_link(
        &self,
        kind: &str,
        email: &str,
        body: &Value,
        redirect: &str,
    ) -> Result<Response, ApiError> {
        if kind == "email_change_current" && !self.state.config.auth.secure_email_change {
            return Err(ApiError::auth(
                400,
                "validation_failed",
                "Enable secure email change to generate link for current email",
            ));
        }
        let new_email = normalise_email(&json!({ "email": body.get("new_email") }))?
            .ok_or_else(|| ApiError::auth(400, "validation_failed", "An email address is required"))?;
        let (link, link_hash) = new_refresh_token();
        let code = super::otp::six_digits();
        let to = if kind == "email_change_current" { email } else { new_email.as_str() };
        let code_hash = sha256_hex(&format!("{to}:{code}"));
        let out = self
            .query_json(
                "SELECT fluxbase.auth_admin_email_change_link($1, $2, $3, $4, $5)",
                &[&email, &new_email, &kind, &link_hash, &code_hash],
            )
            .await?;
        let url = format!(
            "{}/auth/v1/verify?token={link}&type=email_change&redirect_to={}",
            self.state.config.public_url(),
            crate::http::form_encode(redirect)
        );
        Ok(json_response(StatusCode::OK, &link_answer(out, &url, &code, &link, redirect, kind)))
    }

    pub(super) async fn admin_list(
        &self,
        page: Option<String>,
        per_page: Option<String>,
    ) -> Result<Response, ApiError> {
        let (page, per_page) = pagination(page.as_deref(), per_page.as_deref())?;
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

    pub(super) async fn admin_upsert(&self, user: Option<uuid::Uuid>, body: &Value) -> Result<Response, ApiError> {
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
            let hash = self.hash(self.check_password(body_text(body, "password")).await?).await?;
            fields.insert("password_hash".into(), json!(hash));
        }
        if let Some(ban) = body_text(body, "ban_duration") {
            fields.insert("ban_duration_seconds".into(), json!(ban_seconds(ban)?));
        }
        if user.is_none() && !fields.contains_key("email") && !fields.contains_key("phone") {
            return Err(ApiError::auth(400, "validation_failed", "Unable to validate email address: invalid format"));
        }
        self.call_json("SELECT fluxbase.auth_admin_upsert($1, $2)", &[&user, &Value::Object(fields)]).await
    }
}
