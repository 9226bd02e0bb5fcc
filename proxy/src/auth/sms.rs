//! SMS for phone sign-in. Two providers:
//! - `webhook`: POSTs Supabase's "Send SMS hook" payload
//!   `{"user": {"phone"}, "sms": {"otp"}}` to your URL, signed as Standard
//!   Webhooks sign (`webhook-id`, `webhook-timestamp`, `webhook-signature:
//!   v1,<base64 HMAC-SHA256 of "id.timestamp.body">`), with the secret in
//!   Supabase's `v1,whsec_<base64>` form. Any SMS gateway fits behind it.
//! - `twilio`: Twilio's Messages API (and compatible gateways), form-encoded
//!   with HTTP Basic account SID and auth token.
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::time::Duration;

use crate::config::Auth as AuthConfig;

enum Provider {
    Webhook { url: String, secret: Vec<u8> },
    Twilio { api: String, sid: String, token: String, from: String },
}

pub struct Sms {
    provider: Provider,
    http: reqwest::Client,
}

/// The key of a `v1,whsec_<base64>` (or `whsec_<base64>`) secret.
pub fn webhook_key(secret: &str) -> Result<Vec<u8>, String> {
    let b64 = secret.trim().trim_start_matches("v1,").trim_start_matches("whsec_");
    let key = base64::engine::general_purpose::STANDARD.decode(b64).map_err(|_| "not v1,whsec_<base64>".to_string())?;
    if key.len() < 16 {
        return Err("the key must be at least 16 bytes".into());
    }
    Ok(key)
}

/// `v1,<signature>` of Standard Webhooks.
pub fn sign(key: &[u8], id: &str, timestamp: u64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()))
}

impl Sms {
    /// `None` without `auth.sms_provider`.
    pub fn new(config: &AuthConfig) -> Result<Option<Sms>, String> {
        let provider = match config.sms_provider.as_deref() {
            None => return Ok(None),
            Some("webhook") => Provider::Webhook {
                url: config.sms_webhook_url.clone().ok_or("auth.sms_webhook_url is required")?,
                secret: webhook_key(config.sms_webhook_secret.as_deref().ok_or("auth.sms_webhook_secret is required")?)
                    .map_err(|e| format!("auth.sms_webhook_secret: {e}"))?,
            },
            Some("twilio") => Provider::Twilio {
                api: config.sms_twilio_api_url.trim_end_matches('/').to_string(),
                sid: config.sms_twilio_account_sid.clone().ok_or("auth.sms_twilio_account_sid is required")?,
                token: config.sms_twilio_auth_token.clone().ok_or("auth.sms_twilio_auth_token is required")?,
                from: config.sms_twilio_from.clone().ok_or("auth.sms_twilio_from is required")?,
            },
            Some(other) => return Err(format!("auth.sms_provider {other:?} is not webhook or twilio")),
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Some(Sms { provider, http }))
    }

    pub fn name(&self) -> &'static str {
        match self.provider {
            Provider::Webhook { .. } => "webhook",
            Provider::Twilio { .. } => "twilio",
        }
    }

    /// Sends `message` (which carries `code`) to `phone` (digits, no `+`).
    pub async fn send(&self, phone: &str, code: &str, message: &str) -> Result<(), String> {
        let request = match &self.provider {
            Provider::Webhook { url, secret } => {
                let body = serde_json::json!({ "user": { "phone": phone }, "sms": { "otp": code } }).to_string();
                let id = format!("msg_{}", uuid::Uuid::new_v4().simple());
                let timestamp = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                self.http
                    .post(url)
                    .header("content-type", "application/json")
                    .header("webhook-id", &id)
                    .header("webhook-timestamp", timestamp.to_string())
                    .header("webhook-signature", sign(secret, &id, timestamp, &body))
                    .body(body)
            }
            Provider::Twilio { api, sid, token, from } => {
                let sender = if from.starts_with("MG") { "MessagingServiceSid" } else { "From" };
                let form = [("To", format!("+{phone}")), (sender, from.clone()), ("Body", message.to_string())];
                let body: Vec<String> =
                    form.iter().map(|(k, v)| format!("{k}={}", crate::http::form_encode(v))).collect();
                self.http
                    .post(format!("{api}/2010-04-01/Accounts/{sid}/Messages.json"))
                    .basic_auth(sid, Some(token))
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(body.join("&"))
            }
        };
        let response = request.send().await.map_err(|e| e.without_url().to_string())?;
        if response.status().is_success() {
            Ok(())
        } else {
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            Err(format!("{} answered {status}: {}", self.name(), text.chars().take(200).collect::<String>()))
        }
    }
}

/// A phone number as Supabase stores it: digits only, no `+`, 2 to 15 of
/// them, not starting with 0 (E.164). Spaces, dashes, dots and parentheses
/// are dropped.
pub fn normalise_phone(raw: &str) -> Option<String> {
    let digits: String =
        raw.trim().trim_start_matches('+').chars().filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')')).collect();
    let valid =
        (2..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) && !digits.starts_with('0');
    valid.then_some(digits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_and_signatures() {
        assert_eq!(normalise_phone("+1 (555) 555-0100").as_deref(), Some("15555550100"));
        assert_eq!(normalise_phone("0123"), None);
        assert_eq!(normalise_phone("+1555x"), None);
        assert_eq!(normalise_phone("1234567890123456"), None);
        // The example of the Standard Webhooks specification.
        let key = webhook_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = r#"{"test": 2432232314}"#;
        assert_eq!(
            sign(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        assert!(webhook_key("v1,whsec_c2hvcnQ=").is_err());
    }
}
