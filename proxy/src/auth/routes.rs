//! The route table of `/auth/v1`: method and path to a handler.
use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::{json, Value};

use super::*;
use crate::error::ApiError;
use crate::http::{json_response, query_pairs, query_param, RequestContext, Response};
use crate::jwt::Caller;

/// Serves one `/auth/v1` request. `caller` was verified by the dispatcher:
/// the apikey (or bearer) must be valid on every route, as behind
/// Supabase's gateway. A route that needs a user's session and has none is
/// answered in GoTrue's words for what was sent (`no_session`).
pub async fn handle(
    state: &AppState,
    service: &AuthService,
    parts: http::request::Parts,
    body: Bytes,
    ctx: &RequestContext,
    caller: Caller,
) -> Result<Response, ApiError> {
    let bearer = parts.headers.contains_key(http::header::AUTHORIZATION);
    let claims = caller.clone();
    route(state, service, parts, body, ctx, caller).await.map_err(|e| no_session(e, &claims, bearer))
}

async fn route(
    state: &AppState,
    service: &AuthService,
    parts: http::request::Parts,
    body: Bytes,
    ctx: &RequestContext,
    caller: Caller,
) -> Result<Response, ApiError> {
    let path = parts.uri.path().strip_prefix("/auth/v1").unwrap_or("").trim_end_matches('/');
    let query = parts.uri.query().unwrap_or("");
    let param = |name: &str| query_param(query, name);
    let req = AuthCall { state, service, ctx };
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match (&parts.method, segments.as_slice()) {
        (&Method::GET, ["health"]) => Ok(json_response(
            StatusCode::OK,
            &json!({ "version": env!("CARGO_PKG_VERSION"), "name": "Fluxbase Auth", "description": "Supabase Auth compatible" }),
        )),
        (&Method::GET, ["settings"]) => Ok(json_response(StatusCode::OK, &settings(state, service))),
        (&Method::GET, [".well-known", "jwks.json"]) => {
            let keys = service.signing.as_ref().map(|s| s.public_jwks()).unwrap_or_default();
            Ok(json_response(StatusCode::OK, &json!({ "keys": keys })))
        }
        (&Method::GET, [".well-known", "openid-configuration"]) => {
            let alg = service.signing.as_ref().map(|s| s.algorithm()).unwrap_or("HS256");
            Ok(json_response(StatusCode::OK, &oauth_server::metadata(&state.config, alg)))
        }
        (&Method::GET, [".well-known", "oauth-authorization-server"]) => {
            if !state.config.auth.oauth_server.enabled {
                return Err(ApiError::auth(404, "feature_disabled", "OAuth server is disabled"));
            }
            let alg = service.signing.as_ref().map(|s| s.algorithm()).unwrap_or("HS256");
            Ok(json_response(StatusCode::OK, &oauth_server::metadata(&state.config, alg)))
        }
        (_, ["oauth", rest @ ..]) => req.oauth_server(&parts, rest, &body, &caller).await,
        (method, ["admin", "oauth", "clients", rest @ ..]) => {
            require_service_role(&caller)?;
            req.oauth_admin(method, rest, query, &body).await
        }
        (method, ["user", "oauth", "grants"]) => req.oauth_grants(method, query, &caller).await,
        (&Method::POST, ["signup"]) => req.signup(&parse_body(&body)?, param("redirect_to")).await,
        (&Method::POST, ["token"]) => match param("grant_type").as_deref() {
            Some("password") => req.password_grant(&parse_body(&body)?).await,
            Some("refresh_token") => req.refresh_grant(&parse_body(&body)?).await,
            Some("pkce") => req.pkce_grant(&parse_body(&body)?).await,
            Some("id_token") => req.id_token_grant(&caller, &parse_body(&body)?).await,
            Some("web3") => req.web3_grant(&parse_body(&body)?).await,
            Some(other) => Err(ApiError::auth(
                400,
                "validation_failed",
                format!("grant_type {other} is not supported by this release"),
            )),
            None => Err(ApiError::auth(400, "validation_failed", "grant_type is required")),
        },
        (&Method::GET, ["authorize"]) => req.oauth_authorize(&query_pairs(query), None).await,
        (&Method::GET, ["callback"]) => req.oauth_callback(&query_pairs(query)).await,
        // Apple (response_mode=form_post) posts the callback as a form.
        (&Method::POST, ["callback"]) => {
            let form = std::str::from_utf8(&body).map_err(|_| ApiError::auth(400, "bad_oauth_callback", "Bad form"))?;
            req.oauth_callback(&query_pairs(form)).await
        }
        (&Method::GET, ["user", "identities", "authorize"]) => {
            if !state.config.auth.manual_linking {
                return Err(ApiError::auth(404, "manual_linking_disabled", "Manual linking is disabled"));
            }
            let (user, session) = session_of(&caller)?;
            // The token's session must still exist: a signed-out token links nothing.
            req.query_json("SELECT fluxbase.auth_user($1, $2)", &[&user, &session]).await?;
            req.oauth_authorize(&query_pairs(query), Some(user)).await
        }
        (&Method::DELETE, ["user", "identities", id]) => req.unlink_identity(&caller, id).await,
        (method, ["passkeys", rest @ ..]) => {
            if !state.config.auth.passkeys {
                return Err(ApiError::auth(422, "passkeys_disabled", "Passkeys are disabled"));
            }
            match (method, rest) {
                (&Method::POST, ["registration", "options"]) => req.passkey_registration_options(&caller).await,
                (&Method::POST, ["registration", "verify"]) => {
                    req.passkey_registration_verify(&caller, &parse_body(&body)?).await
                }
                (&Method::POST, ["authentication", "options"]) => req.passkey_authentication_options().await,
                (&Method::POST, ["authentication", "verify"]) => {
                    req.passkey_authentication_verify(&parse_body(&body)?).await
                }
                (&Method::GET, []) => req.passkeys(session_of(&caller)?.0, None, None, false).await,
                (&Method::PATCH, [id]) => {
                    req.passkeys(session_of(&caller)?.0, Some(id), Some(&parse_body(&body)?), false).await
                }
                (&Method::DELETE, [id]) => req.passkeys(session_of(&caller)?.0, Some(id), None, true).await,
                _ => Err(ApiError::auth(405, "method_not_allowed", "Method not allowed")),
            }
        }
        (&Method::POST, ["sso"]) => req.sso_start(&parse_body(&body)?).await,
        (&Method::GET, ["sso", "saml", "metadata"]) => req.sso_metadata(),
        (&Method::POST, ["sso", "saml", "acs"]) => {
            let form = std::str::from_utf8(&body).map_err(|_| ApiError::auth(400, "validation_failed", "Bad form"))?;
            req.sso_acs(&query_pairs(form)).await
        }
        (&Method::POST, ["otp"] | ["magiclink"]) => {
            let body = parse_body(&body)?;
            let create = body.get("create_user").and_then(Value::as_bool).unwrap_or(true);
            match normalise_phone(&body)? {
                Some(phone) if body.get("email").is_none() => {
                    let data = body.get("data").filter(|d| d.is_object()).cloned();
                    let create = create && !state.config.auth.disable_signup;
                    req.phone_enabled(&phone)?;
                    req.sms_token(&phone, "magiclink", create, data).await?;
                    Ok(json_response(StatusCode::OK, &json!({})))
                }
                _ => req.send_email_token(&body, "magiclink", create, param("redirect_to")).await,
            }
        }
        (&Method::POST, ["invite"]) => {
            require_service_role(&caller)?;
            req.invite(&parse_body(&body)?, param("redirect_to")).await
        }
        (&Method::POST, ["admin", "generate_link"]) => {
            require_service_role(&caller)?;
            req.generate_link(&parse_body(&body)?, param("redirect_to")).await
        }
        (&Method::GET, ["admin", "audit"]) => {
            require_service_role(&caller)?;
            let page: i32 = param("page").and_then(|p| p.parse().ok()).filter(|p| *p >= 1).unwrap_or(1);
            let per_page: i32 =
                param("per_page").and_then(|p| p.parse().ok()).filter(|p| (1..=1000).contains(p)).unwrap_or(50);
            req.call_json("SELECT fluxbase.auth_admin_audit($1, $2)", &[&page, &per_page]).await
        }
        (&Method::POST, ["resend"]) => req.resend(&parse_body(&body)?, param("redirect_to")).await,
        (&Method::POST, ["recover"]) => {
            req.send_email_token(&parse_body(&body)?, "recovery", false, param("redirect_to")).await
        }
        (&Method::GET, ["verify"]) => {
            req.verify_link(param("token").unwrap_or_default(), param("type").unwrap_or_default(), param("redirect_to"))
                .await
        }
        (&Method::POST, ["verify"]) => req.verify_code(&parse_body(&body)?).await,
        (&Method::POST, ["logout"]) => req.logout(&caller, param("scope").as_deref().unwrap_or("global")).await,
        (&Method::GET, ["user"]) => req.user(&caller).await,
        (&Method::PUT, ["user"]) => req.update_user(&caller, &parse_body(&body)?, param("redirect_to")).await,
        (&Method::GET, ["reauthenticate"]) => req.reauthenticate(&caller).await,
        (&Method::POST, ["factors"]) => req.mfa_enroll(&caller, &parse_body(&body)?).await,
        // The session is checked before the factor is looked up: without
        // one, 401 whatever the factor id (GoTrue's requireAuthentication).
        (&Method::POST, ["factors", id, "challenge"]) => {
            let factor = req.factor_of_session(&caller, id).await?;
            req.mfa_challenge(&caller, factor).await
        }
        (&Method::POST, ["factors", id, "verify"]) => {
            let factor = req.factor_of_session(&caller, id).await?;
            req.mfa_verify(&caller, factor, &parse_body(&body)?).await
        }
        (&Method::DELETE, ["factors", id]) => {
            let (user, session) = session_of(&caller)?;
            let factor = factor_id(id)?;
            let aal = caller.claims.get("aal").and_then(Value::as_str).unwrap_or("aal1").to_string();
            req.call_json("SELECT fluxbase.auth_mfa_unenroll($1, $2, $3, $4)", &[&user, &session, &aal, &factor]).await
        }
        (method, ["admin", "users", rest @ ..]) => {
            require_service_role(&caller)?;
            match (method, rest) {
                (&Method::GET, []) => req.admin_list(param("page"), param("per_page")).await,
                (&Method::POST, []) => req.admin_upsert(None, &parse_body(&body)?).await,
                (&Method::GET, [id]) => req.call_json("SELECT fluxbase.auth_admin_get($1)", &[&user_id(id)?]).await,
                (&Method::PUT, [id]) => req.admin_upsert(Some(user_id(id)?), &parse_body(&body)?).await,
                (&Method::GET, [id, "passkeys"]) => req.passkeys(user_id(id)?, None, None, false).await,
                (&Method::DELETE, [id, "passkeys", passkey]) => {
                    req.passkeys(user_id(id)?, Some(passkey), None, true).await
                }
                (&Method::GET, [id, "factors"]) => {
                    req.call_json("SELECT fluxbase.auth_admin_factors($1)", &[&user_id(id)?]).await
                }
                (&Method::DELETE, [id, "factors", factor]) => {
                    let (id, factor) = (user_id(id)?, factor_id(factor)?);
                    req.call_json("SELECT fluxbase.auth_admin_delete_factor($1, $2)", &[&id, &factor]).await
                }
                (&Method::DELETE, [id]) => {
                    let id = user_id(id)?;
                    req.call_json("SELECT fluxbase.auth_admin_delete($1)", &[&id]).await
                }
                _ => Err(ApiError::auth(405, "method_not_allowed", "Method not allowed")),
            }
        }
        (_, [route, ..])
            if [
                "otp",
                "magiclink",
                "verify",
                "recover",
                "resend",
                "invite",
                "reauthenticate",
                "factors",
                "authorize",
                "callback",
                "sso",
                "user",
                "token",
                "signup",
                "logout",
                "settings",
                "health",
                "passkeys",
                "admin",
            ]
            .contains(route) =>
        {
            Err(ApiError::auth(
                405,
                "method_not_allowed",
                format!("/auth/v1/{route} does not take {} here", parts.method),
            ))
        }
        _ => Err(ApiError::auth(404, "not_found", "Not found")),
    }
}
