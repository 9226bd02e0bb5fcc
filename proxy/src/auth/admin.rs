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

impl AuthCall<'_> {
    /// POST /invite (service_role): creates the user and mails an invitation.
    pub(super) async fn invite(&self, body: &Value, redirect: Option<String>) -> Result<Response, ApiError> {
        let email = normalise_email(body)?
            .ok_or_else(|| ApiError::auth(422, "validation_failed", "An email address is required"))?;
        let redirect = self.redirect_target(redirect)?;
        let data = body.get("data").filter(|d| d.is_object()).cloned();
        self.email_token(Mail { email: &email, kind: "invite", create: true, redirect: &redirect, data, pkce: None })
            .await?;
        Ok(json_response(StatusCode::OK, &self.user_by_email(&email).await?))
    }

    pub(super) async fn user_by_email(&self, email: &str) -> Result<Value, ApiError> {
        self.query_json("SELECT fluxbase.auth_user_by_email($1)", &[&email]).await
    }

    /// POST /admin/generate_link: the link and code an e-mail would carry,
    /// returned instead of sent (for your own mail provider).
    pub(super) async fn generate_link(&self, body: &Value, redirect: Option<String>) -> Result<Response, ApiError> {
        let kind = match body_text(body, "type") {
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
        let redirect = self.redirect_target(redirect.or_else(|| body_text(body, "redirect_to").map(str::to_string)))?;
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

    pub(super) async fn admin_list(
        &self,
        page: Option<String>,
        per_page: Option<String>,
    ) -> Result<Response, ApiError> {
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
