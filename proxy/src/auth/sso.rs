//! SAML single sign-on: `POST /sso`, `GET /sso/saml/metadata` and
//! `POST /sso/saml/acs`, finishing as an OAuth sign-in does.

use http::StatusCode;
use serde_json::{json, Value};

use super::oauth::{error_redirect, random_token, Finish};
use super::*;
use crate::db::Cached;
use crate::error::ApiError;
use crate::http::{empty_response, json_response, Response};

impl AuthCall<'_> {
    /// `POST /sso` `{domain | provider_id, redirect_to, code_challenge,
    /// code_challenge_method, skip_http_redirect}`: the identity provider's
    /// URL with an AuthnRequest.
    pub(crate) async fn sso_start(&self, body: &Value) -> Result<Response, ApiError> {
        let Some(saml) = &self.service.saml else {
            return Err(ApiError::auth(404, "saml_provider_disabled", "SAML 2.0 is disabled"));
        };
        let idp = saml.find(body_text(body, "provider_id"), body_text(body, "domain"))?;
        let config = &self.state.config.auth;
        self.rate_limit(&[(format!("signin:ip:{}", self.ctx.ip), config.rate_limit_signins_per_ip)]).await?;
        let redirect = self.redirect_target(body_text(body, "redirect_to").map(str::to_string))?;
        let pkce = super::pkce_of(body)?;
        let (relay, request_id) = (random_token(), format!("_{}", uuid::Uuid::new_v4().simple()));
        let (challenge, method) = pkce.unzip();
        self.execute(
            "SELECT fluxbase.auth_oauth_begin($1, $2, $3, $4, $5, $6, '', NULL, $7)",
            &[
                &sha256_hex(&relay),
                &format!("sso:{}", idp.name),
                &redirect,
                &challenge,
                &method,
                &request_id,
                &(self.state.config.auth.flow_state_expiry_seconds as i32),
            ],
        )
        .await?;
        let url = idp.authn_url(&request_id, &relay).map_err(ApiError::Internal)?;
        if body.get("skip_http_redirect").and_then(Value::as_bool) == Some(false) {
            return Ok(empty_response(StatusCode::SEE_OTHER, Some(&url)));
        }
        Ok(json_response(StatusCode::OK, &json!({ "url": url })))
    }

    /// `GET /sso/saml/metadata`: Fluxbase as a SAML service provider.
    pub(crate) fn sso_metadata(&self) -> Result<Response, ApiError> {
        let Some(saml) = &self.service.saml else {
            return Err(ApiError::auth(404, "saml_provider_disabled", "SAML 2.0 is disabled"));
        };
        let xml = saml.metadata_xml().map_err(ApiError::Internal)?;
        Ok(http::Response::builder()
            .status(StatusCode::OK)
            .header(http::header::CONTENT_TYPE, "application/samlmetadata+xml")
            .body(crate::http::Body::full(xml))
            .expect("static response parts"))
    }

    /// `POST /sso/saml/acs` (form `SAMLResponse`, `RelayState`): the identity
    /// provider's answer, checked, then the sign-in finishes as for OAuth.
    pub(crate) async fn sso_acs(&self, params: &[(String, String)]) -> Result<Response, ApiError> {
        let get =
            |k: &str| params.iter().find(|(name, _)| name == k).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty());
        let site = self.redirect_target(None)?;
        let Some(saml) = &self.service.saml else {
            return Err(ApiError::auth(404, "saml_provider_disabled", "SAML 2.0 is disabled"));
        };
        let bad_state = || {
            error_redirect(
                &site,
                true,
                "invalid_request",
                "bad_saml_relay_state",
                "SAML relay state is unknown, used or expired",
            )
        };
        let Some(relay) = get("RelayState") else { return Ok(bad_state()) };
        let client = self.state.client().await?;
        let row = client
            .query_opt_cached(
                "SELECT * FROM fluxbase.auth_oauth_take($1, $2)",
                &[&sha256_hex(relay), &(self.state.config.auth.flow_state_expiry_seconds as i32)],
            )
            .await
            .map_err(db_error)?;
        drop(client);
        let Some(row) = row else { return Ok(bad_state()) };
        let provider: String = row.get("provider");
        let redirect: String = row.get("redirect_to");
        let challenge: Option<String> = row.get("code_challenge");
        let pkce = challenge.is_some();
        let fail = |code: &str, msg: &str| Ok(error_redirect(&redirect, pkce, "access_denied", code, msg));
        let Some(idp) = provider.strip_prefix("sso:").and_then(|name| saml.get(name)) else {
            return fail("sso_provider_not_found", "The SSO provider is no longer configured");
        };
        let Some(response) = get("SAMLResponse").map(str::to_string) else {
            return fail("saml_assertion_no_user_id", "No SAMLResponse in the request");
        };
        let request_id: String = row.get("nonce");
        // xmlsec is synchronous C: kept off the other tasks' threads.
        let verified = tokio::task::block_in_place(|| idp.verify(&response, &request_id, &saml.acs_url));
        let identity = match verified {
            Ok(identity) => identity,
            Err(e) => {
                tracing::info!(provider = %idp.name, reason = %e, "SAML response refused");
                return fail("saml_assertion_invalid", "The SAML response could not be verified");
            }
        };
        let identity = super::providers::Identity {
            provider_id: identity.name_id,
            email_verified: identity.email.is_some(),
            email: identity.email,
            data: identity.data,
        };
        let finish = Finish {
            provider: &provider,
            redirect: &redirect,
            challenge: challenge
                .map(|c| (c, row.get::<_, Option<String>>("code_challenge_method").unwrap_or_default())),
            link_user: None,
            sso: true,
        };
        let none = super::providers::Tokens { access_token: None, refresh_token: None, id_token: None };
        self.finish_signin(finish, &identity, &none).await
    }
}
