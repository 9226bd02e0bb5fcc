//! The `/auth/v1/passkeys` routes (supabase-js `auth.passkey.*`,
//! `registerPasskey`, `signInWithPasskey`): WebAuthn registration for a
//! signed-in user and usernameless sign-in with a discoverable credential.
//! The ceremony checks are in webauthn.rs; challenges and credentials live
//! in Postgres, so any proxy can finish a ceremony another began.
use http::StatusCode;
use rand::RngCore;
use serde_json::{json, Value};

use super::webauthn::{b64url, RelyingParty};
use super::{body_text, db_error, new_refresh_token, refusal, session_of, AuthCall};
use crate::db::Cached;
use crate::error::ApiError;
use crate::http::{empty_response, json_response, Response};
use crate::jwt::Caller;

/// How long a challenge may be answered, seconds.
const CHALLENGE_SECONDS: i32 = 300;

pub(super) fn failed(e: String) -> ApiError {
    tracing::info!(reason = %e, "passkey refused");
    ApiError::auth(400, "webauthn_verification_failed", "The passkey could not be verified")
}

/// GoTrue's answers for a challenge that is past its time, and one that
/// never was, was used already, or is another ceremony's or user's.
pub(super) fn expired() -> ApiError {
    ApiError::auth(400, "webauthn_challenge_expired", "Challenge has expired")
}

pub(super) fn not_found() -> ApiError {
    ApiError::auth(400, "webauthn_challenge_not_found", "Challenge not found or already used")
}

pub(super) fn challenge_id(body: &Value) -> Result<uuid::Uuid, ApiError> {
    body_text(body, "challenge_id")
        .and_then(|c| uuid::Uuid::parse_str(c).ok())
        .ok_or_else(|| ApiError::auth(400, "validation_failed", "challenge_id must be a valid UUID"))
}

pub(super) fn hex_to_b64url(hex: &str) -> Option<String> {
    let bytes: Option<Vec<u8>> =
        (0..hex.len()).step_by(2).map(|i| hex.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok())).collect();
    bytes.map(|b| b64url(&b))
}

/// The origin (`scheme://host[:port]`) and host of a URL.
pub(super) fn origin_and_host(url: &str) -> (String, String) {
    let (scheme, rest) = url.split_once("://").unwrap_or(("https", url));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map(|(_, h)| h).unwrap_or(authority);
    let hostname = if host.starts_with('[') {
        host.split(']').next().map(|h| format!("{h}]")).unwrap_or_default()
    } else {
        host.split(':').next().unwrap_or("").to_string()
    };
    (format!("{scheme}://{host}"), hostname)
}

impl AuthCall<'_> {
    /// The relying party: `auth.passkey_rp_id` and `auth.passkey_origins`,
    /// by default the site URL's host and origin.
    pub(super) fn relying_party(&self) -> (String, Vec<String>, String) {
        let config = &self.state.config.auth;
        let site = config.site_url.clone().unwrap_or_else(|| self.state.config.public_url());
        let (origin, host) = origin_and_host(&site);
        let id = config.passkey_rp_id.clone().unwrap_or(host);
        let origins = if config.passkey_origins.is_empty() { vec![origin] } else { config.passkey_origins.clone() };
        (id, origins, config.passkey_rp_name.clone())
    }

    pub(super) async fn new_challenge(
        &self,
        user: Option<(uuid::Uuid, Option<uuid::Uuid>)>,
        kind: &str,
        aal: &str,
    ) -> Result<(String, Value), ApiError> {
        let mut bytes = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut bytes);
        let challenge = b64url(&bytes);
        let issued = self
            .query_json(
                "SELECT fluxbase.auth_passkey_challenge($1, $2, $3, $4, $5, $6)",
                &[&user.map(|u| u.0), &user.and_then(|u| u.1), &kind, &challenge, &CHALLENGE_SECONDS, &aal],
            )
            .await?;
        Ok((challenge, issued))
    }

    pub(super) async fn take_challenge(
        &self,
        id: uuid::Uuid,
        kind: &str,
        user: Option<uuid::Uuid>,
    ) -> Result<String, ApiError> {
        let row = self
            .query_row(
                "SELECT fluxbase.auth_passkey_take_challenge($1, $2, $3, $4)",
                &[&id, &kind, &user, &CHALLENGE_SECONDS],
            )
            .await?;
        match row.get::<_, Option<String>>(0) {
            None => Err(not_found()),
            Some(c) if c.is_empty() => Err(expired()),
            Some(c) => Ok(c),
        }
    }

    pub(super) fn expires_at() -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
            + CHALLENGE_SECONDS as u64
    }

    /// POST /passkeys/registration/options (signed in).
    pub(crate) async fn passkey_registration_options(&self, caller: &Caller) -> Result<Response, ApiError> {
        let (user, session) = session_of(caller)?;
        let aal = caller.claims.get("aal").and_then(Value::as_str).unwrap_or("aal1");
        let (challenge, issued) = self.new_challenge(Some((user, session)), "registration", aal).await?;
        let (rp_id, _, rp_name) = self.relying_party();
        let me = &issued["user"];
        let name = [me.get("email"), me.get("phone")]
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .find(|s| !s.is_empty())
            .map(str::to_string)
            .unwrap_or_else(|| user.to_string());
        let exclude: Vec<Value> = issued["exclude"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|h| h.as_str().and_then(hex_to_b64url))
            .map(|id| json!({ "type": "public-key", "id": id }))
            .collect();
        Ok(json_response(
            StatusCode::OK,
            &json!({
                "challenge_id": issued["id"],
                "expires_at": Self::expires_at(),
                "options": {
                    "rp": { "id": rp_id, "name": rp_name },
                    "user": { "id": b64url(user.as_bytes()), "name": name, "displayName": name },
                    "challenge": challenge,
                    "pubKeyCredParams": [
                        { "type": "public-key", "alg": -7 },
                        { "type": "public-key", "alg": -257 },
                    ],
                    "timeout": CHALLENGE_SECONDS * 1000,
                    "excludeCredentials": exclude,
                    "authenticatorSelection": {
                        "residentKey": "required",
                        "requireResidentKey": true,
                        "userVerification": "preferred",
                    },
                    "attestation": "none",
                },
            }),
        ))
    }

    /// POST /passkeys/registration/verify `{challenge_id, credential}`.
    pub(crate) async fn passkey_registration_verify(
        &self,
        caller: &Caller,
        body: &Value,
    ) -> Result<Response, ApiError> {
        let (user, _) = session_of(caller)?;
        let challenge = self.take_challenge(challenge_id(body)?, "registration", Some(user)).await?;
        let (rp_id, origins, _) = self.relying_party();
        let rp = RelyingParty { id: &rp_id, origins: &origins };
        let credential = body.get("credential").ok_or_else(|| failed("no credential".into()))?;
        let new = super::webauthn::verify_registration(credential, &challenge, &rp).map_err(failed)?;
        let name = body_text(body, "friendly_name").map(str::to_string);
        self.call_json(
            "SELECT fluxbase.auth_passkey_register($1, $2, $3, $4, $5, $6)",
            &[&user, &new.id, &new.public_key, &(new.sign_count as i64), &new.aaguid, &name],
        )
        .await
    }

    /// POST /passkeys/authentication/options: a challenge for any passkey.
    pub(crate) async fn passkey_authentication_options(&self) -> Result<Response, ApiError> {
        let config = &self.state.config.auth;
        self.rate_limit(&[(format!("signin:ip:{}", self.ctx.ip), config.rate_limit_signins_per_ip)]).await?;
        let (challenge, issued) = self.new_challenge(None, "authentication", "aal1").await?;
        let (rp_id, _, _) = self.relying_party();
        Ok(json_response(
            StatusCode::OK,
            &json!({
                "challenge_id": issued["id"],
                "expires_at": Self::expires_at(),
                "options": {
                    "challenge": challenge,
                    "timeout": CHALLENGE_SECONDS * 1000,
                    "rpId": rp_id,
                    "allowCredentials": [],
                    "userVerification": "preferred",
                },
            }),
        ))
    }

    /// POST /passkeys/authentication/verify `{challenge_id, credential}`: a session.
    pub(crate) async fn passkey_authentication_verify(&self, body: &Value) -> Result<Response, ApiError> {
        let challenge = self.take_challenge(challenge_id(body)?, "authentication", None).await?;
        let credential = body.get("credential").ok_or_else(|| failed("no credential".into()))?;
        let id = super::webauthn::credential_id(credential).map_err(failed)?;
        let client = self.state.client().await?;
        let row = client
            .query_opt_cached("SELECT * FROM fluxbase.auth_passkey_lookup($1)", &[&id])
            .await
            .map_err(db_error)?
            .ok_or_else(|| failed("unknown credential id".into()))?;
        drop(client);
        let (passkey, user, key): (uuid::Uuid, uuid::Uuid, Vec<u8>) = (row.get(0), row.get(1), row.get(2));
        // A discoverable credential names its user; it must be the owner.
        if let Some(handle) = credential.pointer("/response/userHandle").and_then(Value::as_str) {
            if super::webauthn::from_b64url(handle).ok().as_deref() != Some(user.as_bytes().as_slice()) {
                return Err(failed("userHandle is not the passkey's user".into()));
            }
        }
        let (rp_id, origins, _) = self.relying_party();
        let rp = RelyingParty { id: &rp_id, origins: &origins };
        let count = super::webauthn::verify_assertion(credential, &challenge, &rp, &key).map_err(failed)?;
        let (refresh, refresh_hash) = new_refresh_token();
        let issued = self
            .query_json("SELECT fluxbase.auth_passkey_signin($1, $2, $3)", &[&passkey, &(count as i64), &refresh_hash])
            .await?;
        refusal(&issued)?;
        self.session(&issued, &refresh)
    }

    /// GET /passkeys, PATCH /passkeys/{id} `{friendly_name}`, DELETE /passkeys/{id}
    /// for the signed-in user, or (admin) for `user`.
    pub(crate) async fn passkeys(
        &self,
        user: uuid::Uuid,
        passkey: Option<&str>,
        rename: Option<&Value>,
        delete: bool,
    ) -> Result<Response, ApiError> {
        let passkey = match passkey {
            Some(p) => Some(
                uuid::Uuid::parse_str(p).map_err(|_| ApiError::auth(404, "passkey_not_found", "Passkey not found"))?,
            ),
            None => None,
        };
        let name = rename.and_then(|b| body_text(b, "friendly_name")).map(str::to_string);
        if passkey.is_some() && !delete && name.is_none() {
            return Err(ApiError::auth(400, "validation_failed", "friendly_name is required"));
        }
        let out = self
            .query_json("SELECT fluxbase.auth_passkeys($1, $2, $3, $4)", &[&user, &passkey, &name, &delete])
            .await?;
        if delete {
            return Ok(empty_response(StatusCode::NO_CONTENT, None));
        }
        Ok(json_response(StatusCode::OK, &out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn origins_and_hosts() {
        assert_eq!(origin_and_host("http://localhost:3000/x"), ("http://localhost:3000".into(), "localhost".into()));
        assert_eq!(
            origin_and_host("https://app.example.com"),
            ("https://app.example.com".into(), "app.example.com".into())
        );
        assert_eq!(hex_to_b64url("0102ff").as_deref(), Some("AQL_"));
        assert_eq!(hex_to_b64url("zz"), None);
    }
}
