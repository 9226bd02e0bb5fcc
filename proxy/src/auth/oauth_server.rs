//! The OAuth 2.1 server: Supabase Auth as the identity provider of
//! third-party apps, as GoTrue serves it (its `internal/api/oauthserver`):
//! the admin client API (`/admin/oauth/clients`), dynamic registration
//! (`POST /oauth/clients/register`), `GET /oauth/authorize` (to the app's
//! consent page), the consent API (`/oauth/authorizations/{id}`), the token
//! endpoint (`POST /oauth/token`: authorization_code with PKCE and
//! refresh_token, clients authenticated by client_secret_basic,
//! client_secret_post or none), `/oauth/userinfo`, the user's grants and
//! the discovery document. State lives in `auth.oauth_*`
//! (sql/auth/oauth_server.sql).
use base64::Engine;
use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use serde_json::{json, Value};

use super::oauth::{found, random_token, with_query};
use super::providers::{s256, valid_pkce};
use super::{new_refresh_token, oauth_refusal, refusal, session_of, sha256_hex, unix_now, AuthCall};
use crate::config::Config;
use crate::error::ApiError;
use crate::http::{empty_response, json_response, query_pairs, Response};
use crate::jwt::Caller;

/// GoTrue's `models.SupportedOAuthScopes`.
const SCOPES: [&str; 4] = ["openid", "email", "profile", "phone"];
const AUTH_METHODS: [&str; 3] = ["none", "client_secret_basic", "client_secret_post"];

fn disabled() -> ApiError {
    ApiError::auth(404, "feature_disabled", "OAuth server is disabled")
}

/// An RFC 6749 error body, as GoTrue's `apierrors.OAuthError`: 400.
pub(crate) fn oauth_error(error: &str, description: &str) -> Response {
    json_response(StatusCode::BAD_REQUEST, &json!({ "error": error, "error_description": description }))
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::auth(400, "validation_failed", msg)
}

/// A JSON body as GoTrue's handlers decode it (`Invalid JSON body`).
fn json_body(body: &Bytes, msg: &str) -> Result<Value, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(v @ Value::Object(_)) => Ok(v),
        _ => Err(ApiError::auth(400, "bad_json", msg)),
    }
}

fn client_id(s: &str) -> Result<uuid::Uuid, ApiError> {
    uuid::Uuid::parse_str(s).map_err(|_| bad("invalid client_id format"))
}

/// The discovery document GoTrue serves at both
/// `/.well-known/openid-configuration` and
/// `/.well-known/oauth-authorization-server`.
pub(crate) fn metadata(config: &Config, signing_alg: &str) -> Value {
    let issuer = format!("{}/auth/v1", config.public_url().trim_end_matches('/'));
    let mut doc = json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/oauth/authorize"),
        "token_endpoint": format!("{issuer}/oauth/token"),
        "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
        "userinfo_endpoint": format!("{issuer}/oauth/userinfo"),
        "scopes_supported": SCOPES,
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [signing_alg],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "claims_supported": ["sub", "aud", "iss", "exp", "iat", "auth_time", "nonce", "email", "email_verified",
            "phone_number", "phone_number_verified", "name", "picture", "preferred_username", "updated_at"],
        "code_challenge_methods_supported": ["S256", "plain"],
    });
    let server = &config.auth.oauth_server;
    if server.enabled && server.allow_dynamic_registration {
        doc["registration_endpoint"] = json!(format!("{issuer}/oauth/clients/register"));
    }
    doc
}

/// GoTrue's `validateRedirectURI`: absolute, no fragment, no scheme that
/// runs code, plain HTTP only to this machine.
fn redirect_uri_problem(uri: &str) -> Option<&'static str> {
    if uri.is_empty() {
        return Some("redirect URI cannot be empty");
    }
    let Ok(url) = url::Url::parse(uri) else { return Some("invalid URL format") };
    let host = url.host_str().unwrap_or("");
    if host.is_empty() {
        return Some("must have scheme and host");
    }
    if ["javascript", "data", "file", "vbscript", "about", "blob"].contains(&url.scheme()) {
        return Some("scheme is not allowed for security reasons");
    }
    if url.scheme() == "http" && !["localhost", "127.0.0.1", "::1", "[::1]"].contains(&host) {
        return Some("HTTP scheme only allowed for localhost");
    }
    if url.fragment().is_some() {
        return Some("fragment not allowed in redirect URI");
    }
    None
}

fn strings(v: &Value) -> Option<Vec<String>> {
    v.as_array().map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
}

fn check_redirect_uris(uris: &[String], required: bool) -> Result<(), String> {
    if uris.is_empty() {
        return Err(if required { "redirect_uris is required" } else { "redirect_uris cannot be empty" }.into());
    }
    if uris.len() > 10 {
        return Err("redirect_uris cannot exceed 10 items".into());
    }
    for uri in uris {
        if let Some(problem) = redirect_uri_problem(uri) {
            return Err(format!("invalid redirect_uri '{uri}': {problem}"));
        }
    }
    Ok(())
}

fn check_grant_types(grants: &[String]) -> Result<(), String> {
    if grants.is_empty() {
        return Err("grant_types cannot be empty".into());
    }
    if grants.iter().any(|g| g != "authorization_code" && g != "refresh_token") {
        return Err("grant_types must only contain 'authorization_code' and/or 'refresh_token'".into());
    }
    Ok(())
}

fn check_uri(name: &str, uri: &str) -> Result<(), String> {
    if uri.is_empty() {
        return Ok(());
    }
    if uri.len() > 2048 {
        return Err(format!("{name} cannot exceed 2048 characters"));
    }
    if url::Url::parse(uri).is_err() && !uri.starts_with('/') {
        return Err(format!("{name} must be a valid URL"));
    }
    Ok(())
}

fn client_type_of(method: &str) -> &'static str {
    if method == "none" {
        "public"
    } else {
        "confidential"
    }
}

/// A client secret: 32 random bytes, base64url; stored as GoTrue stores it
/// (SHA-256, base64url without padding).
fn new_client_secret() -> (String, String) {
    let secret = random_token();
    let hash = secret_hash(&secret);
    (secret, hash)
}

fn secret_hash(secret: &str) -> String {
    use sha2::{Digest, Sha256};
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(secret.as_bytes()))
}

/// A registration body (admin or dynamic) checked as GoTrue's
/// `OAuthServerClientRegisterParams.validate`, into the row to store (the
/// secret hash added by the caller). Refusals carry GoTrue's message,
/// which its handler prefixes with the status.
fn registration(body: &Value, registration_type: &str) -> Result<Value, String> {
    let text = |k: &str| body.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let uris = body.get("redirect_uris").and_then(strings).unwrap_or_default();
    check_redirect_uris(&uris, true)?;
    let grants = body.get("grant_types").and_then(strings).unwrap_or_default();
    if !grants.is_empty() {
        check_grant_types(&grants)?;
    }
    let (name, uri, logo) = (text("client_name"), text("client_uri"), text("logo_uri"));
    if name.chars().count() > 1024 {
        return Err("client_name cannot exceed 1024 characters".into());
    }
    check_uri("client_uri", &uri)?;
    check_uri("logo_uri", &logo)?;
    let (explicit, method) = (text("client_type"), text("token_endpoint_auth_method"));
    if !explicit.is_empty() && explicit != "public" && explicit != "confidential" {
        return Err("client_type must be 'public' or 'confidential'".into());
    }
    if !method.is_empty() && !AUTH_METHODS.contains(&method.as_str()) {
        return Err("token_endpoint_auth_method must be one of: [none client_secret_basic client_secret_post]".into());
    }
    if !explicit.is_empty() && !method.is_empty() && explicit != client_type_of(&method) {
        return Err(format!(
            "client_type '{explicit}' is inconsistent with token_endpoint_auth_method '{method}' (expected client_type '{}')",
            client_type_of(&method)
        ));
    }
    let client_type = match (explicit.as_str(), method.as_str()) {
        ("", "") => "confidential",
        ("", m) => client_type_of(m),
        (t, _) => t,
    };
    let method = match method.as_str() {
        "" if client_type == "public" => "none",
        "" => "client_secret_basic",
        m => m,
    };
    let grants = if grants.is_empty() { vec!["authorization_code".into(), "refresh_token".into()] } else { grants };
    Ok(json!({
        "registration_type": registration_type,
        "client_type": client_type,
        "token_endpoint_auth_method": method,
        "redirect_uris": uris,
        "grant_types": grants,
        "client_name": name,
        "client_uri": uri,
        "logo_uri": logo,
    }))
}

/// The fields a `PUT /admin/oauth/clients/{id}` changes, checked as GoTrue's
/// `OAuthServerClientUpdateParams.validate`.
fn update_changes(body: &Value) -> Result<Value, ApiError> {
    let mut changes = serde_json::Map::new();
    for key in ["redirect_uris", "grant_types", "client_name", "client_uri", "logo_uri", "token_endpoint_auth_method"] {
        if let Some(v) = body.get(key).filter(|v| !v.is_null()) {
            changes.insert(key.into(), v.clone());
        }
    }
    if changes.is_empty() {
        return Err(bad("No fields provided for update"));
    }
    if let Some(v) = changes.get("redirect_uris") {
        check_redirect_uris(&strings(v).unwrap_or_default(), false).map_err(bad)?;
    }
    if let Some(v) = changes.get("grant_types") {
        check_grant_types(&strings(v).unwrap_or_default()).map_err(bad)?;
    }
    let text = |k: &str| changes.get(k).and_then(Value::as_str).unwrap_or("");
    if text("client_name").chars().count() > 1024 {
        return Err(bad("client_name cannot exceed 1024 characters"));
    }
    check_uri("client_uri", text("client_uri")).map_err(bad)?;
    check_uri("logo_uri", text("logo_uri")).map_err(bad)?;
    if changes.contains_key("token_endpoint_auth_method") && !AUTH_METHODS.contains(&text("token_endpoint_auth_method"))
    {
        return Err(bad(
            "invalid token_endpoint_auth_method: must be one of [none client_secret_basic client_secret_post]",
        ));
    }
    Ok(Value::Object(changes))
}

/// GoTrue's `validateRemainingAuthorizeParams`: the scope to store, or why
/// the request is refused (sent back to the app's redirect_uri).
fn authorize_scope(
    response_type: &str,
    scope: &str,
    resource: &str,
    challenge: &str,
    method: &str,
    default_scope: &str,
) -> Result<String, String> {
    let response_type = if response_type.is_empty() { "code" } else { response_type };
    let scope = if scope.is_empty() { default_scope } else { scope };
    if response_type != "code" {
        return Err("only response_type=code is supported".into());
    }
    if scope.is_empty() {
        return Err("scope parameter is required".into());
    }
    let scopes: Vec<&str> = scope.split_whitespace().collect();
    if scopes.is_empty() {
        return Err("scope parameter cannot be empty".into());
    }
    if let Some(unknown) = scopes.iter().find(|s| !SCOPES.contains(s)) {
        return Err(format!("unsupported scope: {unknown}"));
    }
    if !resource.is_empty() {
        match url::Url::parse(resource) {
            Err(_) => return Err("resource must be an absolute URI".into()),
            Ok(u) if u.fragment().is_some() => return Err("resource must not include a fragment component".into()),
            Ok(u) if u.query().is_some() => return Err("resource must not include a query component".into()),
            Ok(_) => {}
        }
    }
    if challenge.is_empty() || method.is_empty() {
        return Err("PKCE flow requires both code_challenge and code_challenge_method".into());
    }
    if !["s256", "plain"].contains(&method.to_ascii_lowercase().as_str()) {
        return Err("code_challenge_method must be 'S256' or 'plain'".into());
    }
    if challenge.len() < 43 || challenge.len() > 128 {
        return Err("code_challenge must be between 43 and 128 characters".into());
    }
    Ok(scopes.join(" "))
}

/// How a token request's client identified itself (GoTrue's
/// `ExtractClientCredentials`): Basic header, else the body's `client_id`
/// and `client_secret`.
#[derive(Debug, PartialEq)]
struct Credentials {
    client_id: String,
    secret: String,
    method: &'static str,
}

fn credentials(headers: &HeaderMap, params: &[(String, String)]) -> Result<Credentials, String> {
    if let Some(basic) =
        headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Basic "))
    {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(basic.trim())
            .ok()
            .and_then(|d| String::from_utf8(d).ok())
            .ok_or("invalid basic auth encoding")?;
        let (id, secret) = decoded.split_once(':').ok_or("invalid basic auth format")?;
        let decode = crate::http::percent_decode;
        return Ok(Credentials { client_id: decode(id), secret: decode(secret), method: "client_secret_basic" });
    }
    let get = |k: &str| params.iter().find(|(name, _)| name == k).map(|(_, v)| v.clone()).unwrap_or_default();
    let (client_id, secret) = (get("client_id"), get("client_secret"));
    if client_id.is_empty() {
        return Err("client_id is required".into());
    }
    let method = if secret.is_empty() { "none" } else { "client_secret_post" };
    Ok(Credentials { client_id, secret, method })
}

/// GoTrue's `oauthTokenError`: a 400 refusal of the session functions as
/// the token endpoint's RFC 6749 error; others pass as they are.
fn token_error(e: ApiError) -> Result<Response, ApiError> {
    match e {
        ApiError::Auth { status, error_code, msg } if status == StatusCode::BAD_REQUEST => {
            let code = match error_code.as_str() {
                "refresh_token_not_found"
                | "refresh_token_already_used"
                | "session_not_found"
                | "session_expired"
                | "user_banned" => "invalid_grant",
                _ => "invalid_request",
            };
            Ok(oauth_error(code, &msg))
        }
        other => Err(other),
    }
}

impl AuthCall<'_> {
    fn server_enabled(&self) -> Result<(), ApiError> {
        if self.state.config.auth.oauth_server.enabled {
            Ok(())
        } else {
            Err(disabled())
        }
    }

    /// `/admin/oauth/clients…` (service_role, checked by the route table).
    pub(crate) async fn oauth_admin(
        &self,
        method: &Method,
        rest: &[&str],
        query: &str,
        body: &Bytes,
    ) -> Result<Response, ApiError> {
        self.server_enabled()?;
        match (method, rest) {
            (&Method::POST, []) => self.oauth_register(body, "manual").await,
            (&Method::GET, []) => self.oauth_list(query).await,
            (method, [id, more @ ..]) => {
                let id = client_id(id)?;
                // Loaded first, as GoTrue's LoadOAuthServerClient middleware.
                let client = self.query_json("SELECT fluxbase.auth_oauth_client_get($1)", &[&id]).await?;
                match (method, more) {
                    (&Method::GET, []) => Ok(json_response(StatusCode::OK, &client)),
                    (&Method::PUT, []) => {
                        let changes = update_changes(&json_body(body, "Invalid JSON body")?)?;
                        self.call_json("SELECT fluxbase.auth_oauth_client_update($1, $2)", &[&id, &changes]).await
                    }
                    (&Method::DELETE, []) => {
                        self.execute("SELECT fluxbase.auth_oauth_client_delete($1)", &[&id]).await?;
                        Ok(empty_response(StatusCode::NO_CONTENT, None))
                    }
                    (&Method::POST, ["regenerate_secret"]) => {
                        let (secret, hash) = new_client_secret();
                        let mut client =
                            self.query_json("SELECT fluxbase.auth_oauth_client_secret($1, $2)", &[&id, &hash]).await?;
                        client["client_secret"] = json!(secret);
                        Ok(json_response(StatusCode::OK, &client))
                    }
                    _ => Err(ApiError::auth(405, "method_not_allowed", "Method not allowed")),
                }
            }
            _ => Err(ApiError::auth(405, "method_not_allowed", "Method not allowed")),
        }
    }

    /// Registration, manual (admin) or dynamic: `201` with the client, and
    /// its secret once when it is confidential.
    async fn oauth_register(&self, body: &Bytes, registration_type: &str) -> Result<Response, ApiError> {
        let body = json_body(body, "Invalid JSON body")?;
        // GoTrue wraps the validation error again, its status in the message.
        let mut row = registration(&body, registration_type).map_err(|e| bad(format!("400: {e}")))?;
        let secret = (row["client_type"] == "confidential").then(new_client_secret);
        row["secret_hash"] = json!(secret.as_ref().map(|(_, h)| h));
        let mut client = self.query_json("SELECT fluxbase.auth_oauth_client_create($1)", &[&row]).await?;
        if let Some((secret, _)) = secret {
            client["client_secret"] = json!(secret);
        }
        Ok(json_response(StatusCode::CREATED, &client))
    }

    /// `GET /admin/oauth/clients?page=&per_page=`: newest first, with
    /// `X-Total-Count` and `Link` as `/admin/users`.
    async fn oauth_list(&self, query: &str) -> Result<Response, ApiError> {
        let param = |k: &str| crate::http::query_param(query, k);
        let page: i32 = param("page").and_then(|p| p.parse().ok()).filter(|p| *p >= 1).unwrap_or(1);
        let per_page: i32 =
            param("per_page").and_then(|p| p.parse().ok()).filter(|p| (1..=1000).contains(p)).unwrap_or(50);
        let listed = self.query_json("SELECT fluxbase.auth_oauth_client_list($1, $2)", &[&page, &per_page]).await?;
        let total = listed.get("total").and_then(Value::as_i64).unwrap_or(0);
        let mut response =
            json_response(StatusCode::OK, &json!({ "clients": listed.get("clients").cloned().unwrap_or(json!([])) }));
        let headers = response.headers_mut();
        if let Ok(v) = http::HeaderValue::from_str(&total.to_string()) {
            headers.insert("x-total-count", v);
        }
        let last = ((total + per_page as i64 - 1) / per_page as i64).max(1);
        let mut links = vec![format!("</admin/oauth/clients?page={last}&per_page={per_page}>; rel=\"last\"")];
        if (page as i64) < last {
            links.insert(0, format!("</admin/oauth/clients?page={}&per_page={per_page}>; rel=\"next\"", page + 1));
        }
        if let Ok(v) = http::HeaderValue::from_str(&links.join(", ")) {
            headers.insert(http::header::LINK, v);
        }
        Ok(response)
    }

    /// `/oauth/…`: registration, authorize, consent, token, userinfo.
    pub(crate) async fn oauth_server(
        &self,
        parts: &http::request::Parts,
        rest: &[&str],
        body: &Bytes,
        caller: &Caller,
    ) -> Result<Response, ApiError> {
        self.server_enabled()?;
        let query = parts.uri.query().unwrap_or("");
        match (&parts.method, rest) {
            (&Method::POST, ["clients", "register"]) => {
                if !self.state.config.auth.oauth_server.allow_dynamic_registration {
                    return Err(ApiError::auth(
                        403,
                        "oauth_dynamic_client_registration_disabled",
                        "Dynamic client registration is not enabled",
                    ));
                }
                let limit = self.state.config.auth.rate_limit_signups_per_ip;
                self.rate_limit(&[(format!("oauth_register:ip:{}", self.ctx.ip), limit)]).await?;
                self.oauth_register(body, "dynamic").await
            }
            (&Method::GET, ["authorize"]) => self.oauth_server_authorize(&query_pairs(query)).await,
            (&Method::GET, ["authorizations", id]) => {
                let (user, _) = session_of(caller)?;
                self.check_origin(&parts.headers)?;
                let (code, code_hash) = new_code();
                let details = self
                    .query_json(
                        "SELECT fluxbase.auth_oauth_authorization_details($1, $2, $3)",
                        &[id, &user, &code_hash],
                    )
                    .await?;
                if details.get("approved").is_some() {
                    return Ok(json_response(StatusCode::OK, &consent_redirect(&details, &code)));
                }
                Ok(json_response(StatusCode::OK, &details))
            }
            (&Method::POST, ["authorizations", id, "consent"]) => {
                let (user, _) = session_of(caller)?;
                self.check_origin(&parts.headers)?;
                let body = json_body(body, "invalid JSON body")?;
                let approve = match body.get("action").and_then(Value::as_str) {
                    Some("approve") => true,
                    Some("deny") => false,
                    _ => return Err(bad("action must be 'approve' or 'deny'")),
                };
                let (code, code_hash) = new_code();
                let decided = self
                    .query_json(
                        "SELECT fluxbase.auth_oauth_consent($1, $2, $3, $4)",
                        &[id, &user, &approve, &code_hash],
                    )
                    .await?;
                Ok(json_response(StatusCode::OK, &consent_redirect(&decided, &code)))
            }
            (&Method::POST, ["token"]) => self.oauth_token(&parts.headers, body).await,
            (&Method::GET, ["userinfo"]) => {
                let (user, session) = session_of(caller)?;
                self.call_json("SELECT fluxbase.auth_oauth_userinfo($1, $2)", &[&user, &session]).await
            }
            _ => Err(ApiError::auth(404, "not_found", "Not found")),
        }
    }

    /// `GET|DELETE /user/oauth/grants`.
    pub(crate) async fn oauth_grants(
        &self,
        method: &Method,
        query: &str,
        caller: &Caller,
    ) -> Result<Response, ApiError> {
        let (user, _) = session_of(caller)?;
        self.server_enabled()?;
        match *method {
            Method::GET => self.call_json("SELECT fluxbase.auth_oauth_grants($1)", &[&user]).await,
            Method::DELETE => {
                let id = crate::http::query_param(query, "client_id")
                    .filter(|c| !c.is_empty())
                    .ok_or_else(|| bad("client_id query parameter is required"))?;
                let id = client_id(&id)?;
                self.execute("SELECT fluxbase.auth_oauth_grant_revoke($1, $2)", &[&user, &id]).await?;
                Ok(empty_response(StatusCode::NO_CONTENT, None))
            }
            _ => Err(ApiError::auth(405, "method_not_allowed", "Method not allowed")),
        }
    }

    /// The consent page calls from the site it was sent to: a browser's
    /// `Origin`, when there is one, must be the site URL's or an allowed
    /// redirect URL's (GoTrue's `validateRequestOrigin`).
    fn check_origin(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(origin) = headers.get(http::header::ORIGIN).and_then(|v| v.to_str().ok()) else { return Ok(()) };
        let config = &self.state.config;
        let site = config.auth.site_url.clone().unwrap_or_else(|| config.public_url());
        let origin_of = |u: &str| url::Url::parse(u.trim_end_matches('*')).ok().map(|u| u.origin());
        let Some(asked) = origin_of(origin) else { return Err(bad("unauthorized request origin")) };
        let allowed = std::iter::once(site.as_str())
            .chain(config.auth.redirect_urls.iter().map(String::as_str))
            .any(|u| origin_of(u).as_ref() == Some(&asked));
        if allowed {
            Ok(())
        } else {
            Err(bad("unauthorized request origin"))
        }
    }

    /// `GET /oauth/authorize`: checks the client and its redirect_uri
    /// (refused here, in JSON), then the rest (refused at the redirect_uri),
    /// stores the request and sends the browser to the consent page.
    async fn oauth_server_authorize(&self, params: &[(String, String)]) -> Result<Response, ApiError> {
        let get = |k: &str| params.iter().find(|(name, _)| name == k).map(|(_, v)| v.as_str()).unwrap_or("");
        let (client, redirect, state) = (get("client_id"), get("redirect_uri"), get("state"));
        if client.is_empty() {
            return Err(bad("client_id is required"));
        }
        if redirect.is_empty() {
            return Err(bad("redirect_uri is required"));
        }
        let id = uuid::Uuid::parse_str(client)
            .map_err(|_| ApiError::auth(400, "oauth_client_not_found", "invalid client_id format"))?;
        let found_client = match self.query_json("SELECT fluxbase.auth_oauth_client_get($1)", &[&id]).await {
            Err(ApiError::Auth { error_code, .. }) if error_code == "oauth_client_not_found" => {
                return Err(ApiError::auth(400, "oauth_client_not_found", "invalid client_id"))
            }
            other => other?,
        };
        let registered = found_client.get("redirect_uris").and_then(strings).unwrap_or_default();
        if !registered.iter().any(|r| r == redirect) {
            return Err(bad("invalid redirect_uri"));
        }
        // Each call stores a request: limited per client IP like sign-ins.
        let limit = self.state.config.auth.rate_limit_signins_per_ip;
        self.rate_limit(&[(format!("signin:ip:{}", self.ctx.ip), limit)]).await?;
        let server = &self.state.config.auth.oauth_server;
        let (challenge, method) = (get("code_challenge"), get("code_challenge_method"));
        let scope = match authorize_scope(
            get("response_type"),
            get("scope"),
            get("resource"),
            challenge,
            method,
            &server.default_scope,
        ) {
            Ok(scope) => scope,
            Err(e) => return Ok(found(&error_url(redirect, "invalid_request", &e, state))),
        };
        let authorization_id = random_token();
        let ttl = server.authorization_ttl_seconds as i32;
        self.execute(
            "SELECT fluxbase.auth_oauth_authorize($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            &[
                &id,
                &authorization_id,
                &redirect,
                &scope,
                &state,
                &get("resource"),
                &challenge,
                &method,
                &get("nonce"),
                &ttl,
            ],
        )
        .await?;
        if server.authorization_url_path.is_empty() {
            return Ok(found(&error_url(redirect, "server_error", "oauth authorization path not configured", state)));
        }
        let site = self.state.config.auth.site_url.clone().unwrap_or_else(|| self.state.config.public_url());
        let path = &server.authorization_url_path;
        let slash = if path.starts_with('/') { "" } else { "/" };
        let page = format!("{}{slash}{path}", site.trim_end_matches('/'));
        Ok(found(&with_query(&page, &[("authorization_id", &authorization_id)])))
    }

    /// `POST /oauth/token`: the client authenticated (GoTrue's
    /// `requireOAuthClientAuth`), then its grant.
    async fn oauth_token(&self, headers: &HeaderMap, body: &Bytes) -> Result<Response, ApiError> {
        let is_json = headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.contains("application/json"));
        let params: Vec<(String, String)> = if is_json {
            match serde_json::from_slice::<Value>(body) {
                Ok(Value::Object(o)) => {
                    o.into_iter().filter_map(|(k, v)| v.as_str().map(|s| (k, s.to_string()))).collect()
                }
                _ => {
                    return Err(ApiError::auth(
                        400,
                        "invalid_credentials",
                        "Invalid client credentials: failed to parse JSON body",
                    ))
                }
            }
        } else {
            query_pairs(std::str::from_utf8(body).unwrap_or(""))
        };
        let invalid = |m: &str| ApiError::auth(400, "invalid_credentials", m);
        let creds = credentials(headers, &params).map_err(|e| invalid(&format!("Invalid client credentials: {e}")))?;
        let id = uuid::Uuid::parse_str(&creds.client_id).map_err(|_| invalid("Invalid client_id format"))?;
        let client = self.query_json("SELECT fluxbase.auth_oauth_client_credentials($1)", &[&id]).await?;
        let text = |k: &str| client.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let registered = text("token_endpoint_auth_method");
        if creds.method != registered {
            return Err(invalid(&format!(
                "invalid authentication method: client is registered for '{registered}' but '{}' was used",
                creds.method
            )));
        }
        if text("client_type") == "public" {
            if !creds.secret.is_empty() {
                return Err(invalid("public clients must not provide client_secret"));
            }
        } else if creds.secret.is_empty() {
            return Err(invalid("confidential clients must provide client_secret"));
        } else if !crate::jwt::constant_time_eq(secret_hash(&creds.secret).as_bytes(), text("secret_hash").as_bytes()) {
            return Err(invalid("invalid client credentials"));
        }

        let get = |k: &str| params.iter().find(|(name, _)| name == k).map(|(_, v)| v.as_str()).unwrap_or("");
        let grant = get("grant_type");
        if grant.is_empty() {
            return Ok(oauth_error("invalid_request", "grant_type is required"));
        }
        let allowed = client.get("grant_types").and_then(strings).unwrap_or_default();
        if !allowed.iter().any(|g| g == grant) {
            return Ok(oauth_error(
                "unsupported_grant_type",
                &format!("Client is not allowed to use grant type: {grant}"),
            ));
        }
        let config = &self.state.config.auth;
        let (refresh, refresh_hash) = new_refresh_token();
        let issued = match grant {
            "authorization_code" => {
                let code = get("code");
                if code.is_empty() {
                    return Ok(oauth_error("invalid_request", "code is required for authorization_code grant"));
                }
                self.rate_limit(&[(format!("verify:ip:{}", self.ctx.ip), config.rate_limit_verify_per_ip)]).await?;
                let verifier = get("code_verifier");
                let verifier_s256 = if valid_pkce(verifier) { s256(verifier) } else { String::new() };
                let issued = self
                    .query_json(
                        "SELECT fluxbase.auth_oauth_code_exchange($1, $2, $3, $4, $5, $6, $7)",
                        &[
                            &id,
                            &sha256_hex(code),
                            &get("redirect_uri"),
                            &get("resource"),
                            &verifier,
                            &verifier_s256,
                            &refresh_hash,
                        ],
                    )
                    .await?;
                if let Some(error) = issued.get("error").and_then(Value::as_str) {
                    let description = issued.get("error_description").and_then(Value::as_str).unwrap_or(error);
                    return Ok(oauth_error(error, description));
                }
                issued
            }
            "refresh_token" => {
                let old = get("refresh_token");
                if old.is_empty() {
                    return Ok(oauth_error("invalid_request", "refresh_token is required for refresh_token grant"));
                }
                self.rate_limit(&[(format!("refresh:ip:{}", self.ctx.ip), config.rate_limit_refresh_per_ip)]).await?;
                let reuse = config.refresh_token_reuse_interval_seconds as i32;
                let issued = self
                    .query_json(
                        "SELECT fluxbase.auth_oauth_refresh($1, $2, $3, $4)",
                        &[&id, &sha256_hex(old), &refresh_hash, &reuse],
                    )
                    .await;
                // GoTrue's invalid_client refusals as they are; the session
                // functions' other refusals as token_error maps them.
                if let Some(refused) = issued.as_ref().ok().and_then(oauth_refusal) {
                    return Ok(refused);
                }
                match issued.and_then(|issued| refusal(&issued).map(|_| issued)) {
                    Ok(issued) => issued,
                    Err(e) => return token_error(e),
                }
            }
            other => return Ok(oauth_error("unsupported_grant_type", &format!("Unsupported grant type: {other}"))),
        };
        let session = self.session_json(&issued, &refresh)?;
        let mut answer = json!({
            "access_token": session["access_token"],
            "token_type": session["token_type"],
            "expires_in": session["expires_in"],
            "refresh_token": session["refresh_token"],
        });
        let openid = issued.get("scope").and_then(Value::as_str).is_some_and(|s| s.split(' ').any(|s| s == "openid"));
        if grant == "authorization_code" && openid {
            answer["id_token"] = json!(self.id_token(&issued, &creds.client_id)?);
        }
        Ok(json_response(StatusCode::OK, &answer))
    }

    /// The OIDC ID token of an `openid` authorization, signed as the access
    /// tokens are, with GoTrue's claim set (`tokens.IDTokenClaims`).
    fn id_token(&self, issued: &Value, client: &str) -> Result<String, ApiError> {
        let iss = format!("{}/auth/v1", self.state.config.public_url());
        let claims = id_token_claims(issued, client, &iss, unix_now());
        let signed = match (&self.service.signing, self.state.config.jwt.secret.as_deref()) {
            (Some(keys), _) => keys.sign(&claims),
            (None, Some(secret)) => super::signing::sign_hs256(secret, &claims),
            (None, None) => {
                return Err(ApiError::Internal("ID tokens need jwt.signing_jwks_file or jwt.secret".into()))
            }
        };
        signed.map_err(|e| ApiError::Internal(format!("signing: {e}")))
    }
}

/// GoTrue's ID token claims (`tokens.Service.GenerateIDToken`): `iss`,
/// `sub`, `aud` (the client), `iat`, `exp` (an hour later, whatever the
/// access tokens' lifetime), `auth_time` (the sign-in this exchange made),
/// `client_id`, the request's `nonce`; by scope: `email` → `email`,
/// `email_verified`; `phone` → `phone_number`, `phone_number_verified`;
/// `profile` → `name` (user_metadata.name, else the e-mail), `picture`
/// (picture, else avatar_url), `preferred_username` (preferred_username,
/// else username), `updated_at`. Both `…_verified` claims are always there
/// (false without their scope), as GoTrue's booleans are not omitempty;
/// empty strings are left out, as its omitempty strings.
fn id_token_claims(issued: &Value, client: &str, iss: &str, now: u64) -> Value {
    let user = &issued["user"];
    let meta = &user["user_metadata"];
    let scopes: Vec<&str> = issued["scope"].as_str().unwrap_or("").split(' ').collect();
    let text = |v: &Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_string);
    let unix = |v: &Value| v.as_str().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()).map(|t| t.timestamp());
    let mut claims = json!({
        "iss": iss,
        "sub": user["id"],
        "aud": client,
        "exp": now + 3600,
        "iat": now,
        "auth_time": unix(&user["last_sign_in_at"]).unwrap_or(now as i64),
        "email_verified": false,
        "phone_number_verified": false,
        "client_id": client,
    });
    if let Some(nonce) = text(&issued["nonce"]) {
        claims["nonce"] = json!(nonce);
    }
    if scopes.contains(&"email") {
        if let Some(email) = text(&user["email"]) {
            claims["email"] = json!(email);
        }
        claims["email_verified"] = json!(!user["email_confirmed_at"].is_null());
    }
    if scopes.contains(&"phone") {
        if let Some(phone) = text(&user["phone"]) {
            claims["phone_number"] = json!(phone);
        }
        claims["phone_number_verified"] = json!(!user["phone_confirmed_at"].is_null());
    }
    if scopes.contains(&"profile") {
        if let Some(name) = text(&meta["name"]).or_else(|| text(&user["email"])) {
            claims["name"] = json!(name);
        }
        if let Some(picture) = text(&meta["picture"]).or_else(|| text(&meta["avatar_url"])) {
            claims["picture"] = json!(picture);
        }
        if let Some(username) = text(&meta["preferred_username"]).or_else(|| text(&meta["username"])) {
            claims["preferred_username"] = json!(username);
        }
        if let Some(updated) = unix(&user["updated_at"]).filter(|t| *t > 0) {
            claims["updated_at"] = json!(updated);
        }
    }
    claims
}

/// An authorization code: 256 random bits; the database keeps its SHA-256.
fn new_code() -> (String, String) {
    let code = random_token();
    let hash = sha256_hex(&code);
    (code, hash)
}

/// `{redirect_url}` for the consent page: the code and state on approval,
/// `access_denied` on denial.
fn consent_redirect(decided: &Value, code: &str) -> Value {
    let redirect = decided["redirect_uri"].as_str().unwrap_or("");
    let state = decided["state"].as_str().unwrap_or("");
    let url = if decided["approved"] == json!(true) {
        let mut pairs = vec![("code", code)];
        if !state.is_empty() {
            pairs.push(("state", state));
        }
        with_query(redirect, &pairs)
    } else {
        error_url(redirect, "access_denied", "User denied the request", state)
    };
    json!({ "redirect_url": url })
}

fn error_url(redirect: &str, error: &str, description: &str, state: &str) -> String {
    let mut pairs = vec![("error", error), ("error_description", description)];
    if !state.is_empty() {
        pairs.push(("state", state));
    }
    with_query(redirect, &pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registrations_are_checked_as_gotrue_checks_them() {
        let ok =
            registration(&json!({ "redirect_uris": ["http://localhost:3000/cb"], "client_name": "App" }), "manual")
                .unwrap();
        assert_eq!(ok["client_type"], "confidential");
        assert_eq!(ok["token_endpoint_auth_method"], "client_secret_basic");
        assert_eq!(ok["grant_types"], json!(["authorization_code", "refresh_token"]));
        let public =
            registration(&json!({ "redirect_uris": ["myapp://cb"], "token_endpoint_auth_method": "none" }), "dynamic")
                .unwrap();
        assert_eq!(
            (public["client_type"].as_str(), public["token_endpoint_auth_method"].as_str()),
            (Some("public"), Some("none"))
        );
        let refused = |b: Value| registration(&b, "manual").unwrap_err();
        assert_eq!(refused(json!({})), "redirect_uris is required");
        assert_eq!(
            refused(json!({ "redirect_uris": ["http://evil.example/cb"] })),
            "invalid redirect_uri 'http://evil.example/cb': HTTP scheme only allowed for localhost"
        );
        assert!(refused(json!({ "redirect_uris": ["https://a.example/cb#x"] })).contains("fragment"));
        assert!(refused(json!({ "redirect_uris": ["javascript://a/alert(1)"] })).contains("not allowed"));
        assert_eq!(
            refused(json!({ "redirect_uris": ["https://a.example/cb"], "grant_types": ["password"] })),
            "grant_types must only contain 'authorization_code' and/or 'refresh_token'"
        );
        assert_eq!(
            refused(json!({ "redirect_uris": ["https://a.example/cb"], "client_type": "public",
                "token_endpoint_auth_method": "client_secret_post" })),
            "client_type 'public' is inconsistent with token_endpoint_auth_method 'client_secret_post' (expected client_type 'confidential')"
        );
        assert_eq!(update_changes(&json!({})).unwrap_err().code(), "validation_failed");
    }

    #[test]
    fn authorize_requests_need_pkce_and_known_scopes() {
        let c = "a".repeat(43);
        assert_eq!(authorize_scope("", "", "", &c, "S256", "email").unwrap(), "email");
        assert_eq!(authorize_scope("code", "openid  profile", "", &c, "s256", "email").unwrap(), "openid profile");
        assert_eq!(
            authorize_scope("token", "", "", &c, "S256", "email").unwrap_err(),
            "only response_type=code is supported"
        );
        assert_eq!(authorize_scope("", "admin", "", &c, "S256", "email").unwrap_err(), "unsupported scope: admin");
        assert_eq!(
            authorize_scope("", "email", "", "", "", "email").unwrap_err(),
            "PKCE flow requires both code_challenge and code_challenge_method"
        );
        assert_eq!(
            authorize_scope("", "email", "", "short", "S256", "email").unwrap_err(),
            "code_challenge must be between 43 and 128 characters"
        );
        assert!(authorize_scope("", "email", "https://api.example/x?y", &c, "S256", "email").is_err());
    }

    #[test]
    fn clients_authenticate_by_header_or_body() {
        let mut headers = HeaderMap::new();
        let basic = base64::engine::general_purpose::STANDARD.encode("id:sec%3Aret");
        headers.insert(http::header::AUTHORIZATION, format!("Basic {basic}").parse().unwrap());
        let c = credentials(&headers, &[]).unwrap();
        assert_eq!((c.client_id.as_str(), c.secret.as_str(), c.method), ("id", "sec:ret", "client_secret_basic"));
        let body =
            |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>();
        let c = credentials(&HeaderMap::new(), &body(&[("client_id", "id"), ("client_secret", "s")])).unwrap();
        assert_eq!(c.method, "client_secret_post");
        assert_eq!(credentials(&HeaderMap::new(), &body(&[("client_id", "id")])).unwrap().method, "none");
        assert_eq!(credentials(&HeaderMap::new(), &[]).unwrap_err(), "client_id is required");
        // GoTrue's stored hash: SHA-256, base64url without padding.
        assert_eq!(secret_hash("abc"), "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0");
    }

    #[test]
    fn id_tokens_carry_gotrues_claims_by_scope() {
        let user = json!({
            "id": "u1", "email": "ada@example.com", "email_confirmed_at": "2026-12-01T10:00:00+00:00",
            "phone": "", "phone_confirmed_at": null, "last_sign_in_at": "2026-12-01T10:00:05.5+00:00",
            "updated_at": "2026-12-01T10:00:06+00:00",
            "user_metadata": { "avatar_url": "https://a.example/p.png", "username": "ada" },
        });
        let only_openid = id_token_claims(&json!({ "user": user, "scope": "openid" }), "c1", "https://x/auth/v1", 100);
        assert_eq!(
            only_openid,
            json!({ "iss": "https://x/auth/v1", "sub": "u1", "aud": "c1", "iat": 100, "exp": 3700,
                "auth_time": 1_796_119_205, "email_verified": false, "phone_number_verified": false, "client_id": "c1" })
        );
        let all = id_token_claims(
            &json!({ "user": user, "scope": "openid email profile phone", "nonce": "n-1" }),
            "c1",
            "https://x/auth/v1",
            100,
        );
        assert_eq!(all["nonce"], "n-1");
        assert_eq!((all["email"].as_str(), all["email_verified"].as_bool()), (Some("ada@example.com"), Some(true)));
        assert_eq!(all.get("phone_number"), None, "an empty phone is left out");
        assert_eq!(all["phone_number_verified"], false);
        assert_eq!(all["name"], "ada@example.com", "no name: the e-mail");
        assert_eq!(all["picture"], "https://a.example/p.png");
        assert_eq!(all["preferred_username"], "ada");
        assert_eq!(all["updated_at"], 1_796_119_206);
    }

    #[test]
    fn refusals_of_the_grant_become_oauth_errors() {
        let r = token_error(ApiError::auth(400, "refresh_token_already_used", "Invalid Refresh Token: Already Used"))
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert!(token_error(ApiError::auth(429, "over_request_rate_limit", "slow")).is_err());
        let approved = json!({ "approved": true, "redirect_uri": "http://localhost/cb", "state": "s t" });
        assert_eq!(consent_redirect(&approved, "c")["redirect_url"], "http://localhost/cb?code=c&state=s%20t");
        let denied = json!({ "approved": false, "redirect_uri": "http://localhost/cb", "state": null });
        assert_eq!(
            consent_redirect(&denied, "c")["redirect_url"],
            "http://localhost/cb?error=access_denied&error_description=User%20denied%20the%20request"
        );
    }
}
