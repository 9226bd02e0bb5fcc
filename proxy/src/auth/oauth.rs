//! The `/auth/v1` routes of OAuth/OIDC sign-in (see oauth.rs for the
//! provider side): `GET /authorize`, `GET|POST /callback`,
//! `GET /user/identities/authorize`, `DELETE /user/identities/{id}`,
//! `POST /token?grant_type=pkce|id_token`.
use http::StatusCode;
use serde_json::{json, Value};

use super::providers::{s256, valid_pkce};
use super::{body_text, db_error, new_refresh_token, refusal, sha256_hex, AuthCall};
use crate::db::Cached;
use crate::error::ApiError;
use crate::http::form_encode;
use crate::http::{empty_response, json_response, Response};
use crate::jwt::Caller;

/// Query parameters of `/authorize` that are Fluxbase's own; every other one
/// (`login_hint`, `prompt`, `access_type`, ...) goes on to the provider, as
/// supabase-js's `queryParams` expect.
const OWN_PARAMS: [&str; 7] =
    ["provider", "redirect_to", "scopes", "code_challenge", "code_challenge_method", "skip_http_redirect", "flow_type"];

pub(super) fn found(location: &str) -> Response {
    empty_response(StatusCode::FOUND, Some(location))
}

/// `url` with `pairs` added to its query (before any fragment).
pub(crate) fn with_query(url: &str, pairs: &[(&str, &str)]) -> String {
    let (base, fragment) = url.split_once('#').map(|(b, f)| (b, Some(f))).unwrap_or((url, None));
    let added: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={}", form_encode(v))).collect();
    let sep = if base.contains('?') { '&' } else { '?' };
    let mut out = format!("{base}{sep}{}", added.join("&"));
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    out
}

/// Where the browser goes when a sign-in fails after the provider: the
/// app's URL with Supabase's `error`, `error_code`, `error_description`
/// (query for PKCE, fragment for the implicit flow).
pub(super) fn error_redirect(target: &str, pkce: bool, error: &str, code: &str, description: &str) -> Response {
    let pairs = [("error", error), ("error_code", code), ("error_description", description)];
    if pkce {
        return found(&with_query(target, &pairs));
    }
    let fragment: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={}", form_encode(v))).collect();
    found(&format!("{}#{}", target.split('#').next().unwrap_or(target), fragment.join("&")))
}

/// Where a finished outside sign-in goes and what it is for.
pub(super) struct Finish<'a> {
    pub(super) provider: &'a str,
    pub(super) redirect: &'a str,
    /// The app's PKCE challenge and method (none: implicit flow).
    pub(super) challenge: Option<(String, String)>,
    pub(super) link_user: Option<uuid::Uuid>,
    /// SAML: users of their own (`is_sso_user`), never linked by e-mail.
    pub(super) sso: bool,
}

pub(super) fn random_token() -> String {
    new_refresh_token().0
}

impl AuthCall<'_> {
    /// `GET /authorize?provider=…` (and `/user/identities/authorize` with
    /// `link_user`): remembers the sign-in and sends the browser to the provider.
    pub(crate) async fn oauth_authorize(
        &self,
        params: &[(String, String)],
        link_user: Option<uuid::Uuid>,
    ) -> Result<Response, ApiError> {
        let get = |k: &str| params.iter().find(|(name, _)| name == k).map(|(_, v)| v.as_str());
        // Each call stores a sign-in in progress: limited per IP like sign-ins.
        let config = &self.state.config.auth;
        self.rate_limit(&[(format!("signin:ip:{}", self.ctx.ip), config.rate_limit_signins_per_ip)]).await?;
        let name = get("provider")
            .filter(|p| !p.is_empty())
            .ok_or_else(|| ApiError::auth(400, "validation_failed", "Unsupported provider: missing provider"))?;
        let provider = self.service.providers.get(name)?;
        let redirect = self.redirect_target(get("redirect_to").map(str::to_string))?;
        let challenge = get("code_challenge").filter(|c| !c.is_empty());
        let method = match (challenge, get("code_challenge_method").map(str::to_ascii_lowercase).as_deref()) {
            (None, _) => None,
            (Some(c), Some(m @ ("s256" | "plain"))) if valid_pkce(c) => Some(m.to_string()),
            (Some(_), Some("s256" | "plain")) => {
                return Err(ApiError::auth(400, "validation_failed", "code_challenge must be 43-128 characters"))
            }
            _ => {
                return Err(ApiError::auth(
                    400,
                    "validation_failed",
                    "code_challenge_method must be s256 or plain with a code_challenge",
                ))
            }
        };
        let (state, nonce, verifier) = (random_token(), random_token(), random_token());
        let config = &self.state.config.auth;
        self.execute(
            "SELECT fluxbase.auth_oauth_begin($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            &[
                &sha256_hex(&state),
                &provider.name,
                &redirect,
                &challenge,
                &method,
                &nonce,
                &verifier,
                &link_user,
                &(config.flow_state_expiry_seconds as i32),
            ],
        )
        .await?;
        let forwarded: Vec<(String, String)> =
            params.iter().filter(|(k, _)| !OWN_PARAMS.contains(&k.as_str())).cloned().collect();
        let url = self
            .service
            .providers
            .authorize_url(provider, &state, &nonce, &verifier, get("scopes"), &forwarded)
            .await?;
        if get("skip_http_redirect") == Some("true") {
            return Ok(json_response(StatusCode::OK, &json!({ "url": url })));
        }
        Ok(found(&url))
    }

    /// `GET|POST /callback` from the provider: its code becomes the user's
    /// identity, then a session (fragment) or a PKCE code (query) for the app.
    pub(crate) async fn oauth_callback(&self, params: &[(String, String)]) -> Result<Response, ApiError> {
        let get =
            |k: &str| params.iter().find(|(name, _)| name == k).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty());
        let site = self.redirect_target(None)?;
        let Some(state) = get("state") else {
            return Ok(error_redirect(
                &site,
                true,
                "invalid_request",
                "bad_oauth_callback",
                "OAuth state parameter missing",
            ));
        };
        let config = &self.state.config.auth;
        let client = self.state.client().await?;
        let row = client
            .query_opt_cached(
                "SELECT * FROM fluxbase.auth_oauth_take($1, $2)",
                &[&sha256_hex(state), &(config.flow_state_expiry_seconds as i32)],
            )
            .await
            .map_err(db_error)?;
        drop(client);
        let Some(row) = row else {
            return Ok(error_redirect(
                &site,
                true,
                "invalid_request",
                "bad_oauth_state",
                "OAuth callback with invalid state",
            ));
        };
        let redirect: String = row.get("redirect_to");
        let challenge: Option<String> = row.get("code_challenge");
        let pkce = challenge.is_some();
        let fail =
            |error: &str, code: &str, description: &str| Ok(error_redirect(&redirect, pkce, error, code, description));
        if let Some(error) = get("error") {
            let description = get("error_description").unwrap_or("The provider refused the sign-in");
            return fail(error, "provider_error", description);
        }
        let Some(code) = get("code") else {
            return fail("invalid_request", "bad_oauth_callback", "OAuth callback without a code");
        };
        let name: String = row.get("provider");
        let Ok(provider) = self.service.providers.get(&name) else {
            return fail("invalid_request", "provider_disabled", "The provider is no longer configured");
        };
        let verifier: String = row.get("verifier");
        let nonce: String = row.get("nonce");
        let providers = &self.service.providers;
        let outcome = async {
            let tokens = providers.exchange(provider, code, &verifier).await?;
            let identity = providers.identity(provider, &tokens, &nonce).await?;
            Ok::<_, String>((tokens, identity))
        }
        .await;
        let (tokens, identity) = match outcome {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(provider = %name, error = %e, "OAuth callback failed");
                return fail("server_error", "unexpected_failure", "Unable to exchange external code");
            }
        };
        let finish = Finish {
            provider: &provider.name,
            redirect: &redirect,
            challenge: challenge
                .map(|c| (c, row.get::<_, Option<String>>("code_challenge_method").unwrap_or_default())),
            link_user: row.get("link_user"),
            sso: false,
        };
        self.finish_signin(finish, &identity, &tokens).await
    }

    /// The end of every sign-in at an outside provider (OAuth, OIDC, SAML):
    /// the user found, linked or created, then a redirect to the app with a
    /// PKCE code or a session in the fragment, or with the refusal.
    pub(super) async fn finish_signin(
        &self,
        finish: Finish<'_>,
        identity: &super::providers::Identity,
        tokens: &super::providers::Tokens,
    ) -> Result<Response, ApiError> {
        let Finish { provider, redirect, challenge, link_user, sso } = finish;
        let pkce = challenge.is_some();
        let code_out = uuid::Uuid::new_v4().to_string();
        let flow = challenge.map(|(c, method)| {
            json!({
                "code_hash": sha256_hex(&code_out),
                "code_challenge": c,
                "code_challenge_method": method,
                "provider_access_token": tokens.access_token,
                "provider_refresh_token": tokens.refresh_token,
                "method": if sso { "sso/saml" } else { "oauth" },
            })
        });
        let (refresh, refresh_hash) = new_refresh_token();
        let issued =
            self.oauth_signin(provider, identity, link_user, flow.is_none().then_some(refresh_hash), flow, sso).await;
        let issued = match issued {
            Ok(v) => v,
            Err(ApiError::Auth { error_code, msg, .. }) => {
                return Ok(error_redirect(redirect, pkce, "access_denied", &error_code, &msg))
            }
            Err(other) => return Err(other),
        };
        if pkce {
            return Ok(found(&with_query(redirect, &[("code", &code_out)])));
        }
        let mut extra = vec![];
        if let Some(t) = &tokens.access_token {
            extra.push(("provider_token", t.as_str()));
        }
        if let Some(t) = &tokens.refresh_token {
            extra.push(("provider_refresh_token", t.as_str()));
        }
        let fragment = self.session_fragment(&issued, &refresh, &extra)?;
        Ok(found(&format!("{}#{fragment}", redirect.split('#').next().unwrap_or(redirect))))
    }

    pub(super) async fn oauth_signin(
        &self,
        provider: &str,
        identity: &super::providers::Identity,
        link_user: Option<uuid::Uuid>,
        refresh_hash: Option<String>,
        flow: Option<Value>,
        sso: bool,
    ) -> Result<Value, ApiError> {
        let config = &self.state.config.auth;
        self.query_json(
            "SELECT fluxbase.auth_oauth_signin($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            &[
                &provider,
                &identity.provider_id,
                &identity.data,
                &identity.email,
                &identity.email_verified,
                &link_user,
                &!config.disable_signup,
                &config.autoconfirm(),
                &refresh_hash,
                &flow,
                &sso,
            ],
        )
        .await
    }

    /// `POST /token?grant_type=pkce` `{auth_code, code_verifier}`.
    pub(crate) async fn pkce_grant(&self, body: &Value) -> Result<Response, ApiError> {
        let (Some(code), Some(verifier)) = (body_text(body, "auth_code"), body_text(body, "code_verifier")) else {
            return Err(ApiError::auth(
                400,
                "validation_failed",
                "invalid request: both auth code and code verifier should be non-empty",
            ));
        };
        if !valid_pkce(verifier) {
            return Err(ApiError::auth(400, "validation_failed", "code_verifier must be 43-128 characters"));
        }
        let config = &self.state.config.auth;
        self.rate_limit(&[(format!("verify:ip:{}", self.ctx.ip), config.rate_limit_verify_per_ip)]).await?;
        let (refresh, refresh_hash) = new_refresh_token();
        let issued = self
            .query_json(
                "SELECT fluxbase.auth_pkce_exchange($1, $2, $3, $4, $5)",
                &[
                    &sha256_hex(code),
                    &s256(verifier),
                    &verifier,
                    &(config.flow_state_expiry_seconds as i32),
                    &refresh_hash,
                ],
            )
            .await?;
        refusal(&issued)?;
        let mut session = self.session_json(&issued, &refresh)?;
        if let Some(o) = session.as_object_mut() {
            for key in ["provider_token", "provider_refresh_token"] {
                if let Some(v) = issued.get(key) {
                    o.insert(key.into(), v.clone());
                }
            }
        }
        Ok(json_response(StatusCode::OK, &session))
    }

    /// `POST /token?grant_type=id_token` `{provider, id_token, nonce?}`: an
    /// ID token a native app got from the provider. A nonce in the token
    /// must be the SHA-256 (hex) of the `nonce` sent here.
    /// With `link_identity: true` (supabase-js `linkIdentity({token})`) the
    /// identity is linked to the signed-in caller.
    pub(crate) async fn id_token_grant(&self, caller: &Caller, body: &Value) -> Result<Response, ApiError> {
        let (Some(name), Some(token)) = (body_text(body, "provider"), body_text(body, "id_token")) else {
            return Err(ApiError::auth(400, "validation_failed", "provider and id_token are required"));
        };
        let provider = self.service.providers.get(name)?;
        if !provider.is_oidc() {
            return Err(ApiError::auth(400, "validation_failed", format!("Provider {name} does not issue ID tokens")));
        }
        let config = &self.state.config.auth;
        self.rate_limit(&[(format!("signin:ip:{}", self.ctx.ip), config.rate_limit_signins_per_ip)]).await?;
        let bad = |m: String| {
            tracing::info!(provider = %name, reason = %m, "id_token refused");
            ApiError::auth(400, "bad_jwt", "Bad ID token")
        };
        let claims =
            self.service.providers.verify_id_token(provider, token, &provider.audiences(), None).await.map_err(bad)?;
        match (claims.get("nonce").and_then(Value::as_str), body_text(body, "nonce")) {
            (None, None) => {}
            (Some(claim), Some(raw)) if crate::jwt::constant_time_eq(claim.as_bytes(), sha256_hex(raw).as_bytes()) => {}
            (Some(_), Some(_)) => return Err(ApiError::auth(400, "bad_jwt", "Nonces mismatch")),
            _ => {
                return Err(ApiError::auth(
                    400,
                    "bad_jwt",
                    "Passed nonce and nonce in id_token should either both exist or not.",
                ))
            }
        }
        let link_user = match body.get("link_identity") {
            Some(Value::Bool(true)) => {
                if !config.manual_linking {
                    return Err(ApiError::auth(404, "manual_linking_disabled", "Manual linking is disabled"));
                }
                Some(super::session_of(caller)?.0)
            }
            _ => None,
        };
        let identity = super::providers::identity_from_claims(provider, claims);
        let (refresh, refresh_hash) = new_refresh_token();
        let issued = self.oauth_signin(name, &identity, link_user, Some(refresh_hash), None, false).await?;
        self.session(&issued, &refresh)
    }

    /// `DELETE /user/identities/{id}`.
    pub(crate) async fn unlink_identity(&self, caller: &Caller, id: &str) -> Result<Response, ApiError> {
        if !self.state.config.auth.manual_linking {
            return Err(ApiError::auth(404, "manual_linking_disabled", "Manual linking is disabled"));
        }
        let (user, _) = super::session_of(caller)?;
        let identity = uuid::Uuid::parse_str(id)
            .map_err(|_| ApiError::auth(404, "identity_not_found", "Identity doesn't exist"))?;
        self.call_json("SELECT fluxbase.auth_unlink_identity($1, $2)", &[&user, &identity]).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn redirects_keep_the_apps_url() {
        assert_eq!(with_query("http://a/cb", &[("code", "x y")]), "http://a/cb?code=x%20y");
        assert_eq!(with_query("http://a/cb?k=1#top", &[("code", "c")]), "http://a/cb?k=1&code=c#top");
        let r = error_redirect("http://a/cb#old", false, "access_denied", "bad_oauth_state", "no");
        let location = r.headers().get("location").unwrap().to_str().unwrap();
        assert_eq!(location, "http://a/cb#error=access_denied&error_code=bad_oauth_state&error_description=no");
    }
}
