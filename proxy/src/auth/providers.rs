//! Sign-in with OAuth 2.0 and OpenID Connect providers, as Supabase Auth
//! does it: `GET /authorize` sends the browser to the provider, the provider
//! sends it back to `GET|POST /callback`, and the proxy redirects it to the
//! app with a session (implicit flow) or a one-time code the app trades
//! for a session with `grant_type=pkce`. `grant_type=id_token` signs in
//! with an ID token a mobile app got from the provider itself.
//!
//! The provider sees PKCE (S256) and, for OIDC, a nonce on every request;
//! ID tokens are checked against the issuer's published keys (signature,
//! `iss`, `aud`, `exp`, `nonce`). The state of a sign-in in progress lives
//! in Postgres (`fluxbase.auth_oauth_states`, keyed by the SHA-256 of the
//! `state` parameter), so any proxy can finish what another began, once.
use base64::Engine;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::config::{Auth as AuthConfig, OAuthProvider};
use crate::error::ApiError;

const PRESETS: [&str; 6] = ["google", "github", "gitlab", "azure", "apple", "discord"];
/// Largest provider response read (discovery, keys, tokens, user info).
const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// Claims of an ID token that describe the token, not the person.
const TOKEN_CLAIMS: [&str; 10] = ["aud", "exp", "iat", "nbf", "nonce", "at_hash", "c_hash", "auth_time", "azp", "jti"];

#[derive(Clone, Copy, PartialEq, Debug)]
enum Style {
    /// OpenID Connect: identity from the ID token.
    Oidc,
    /// Plain OAuth 2.0: identity from the user-info endpoint.
    OAuth2,
    /// OAuth 2.0 with GitHub's separate e-mail list.
    GitHub,
}

#[derive(Clone, Debug, Default)]
struct Endpoints {
    authorize: String,
    token: String,
    userinfo: Option<String>,
    jwks: Option<String>,
    issuer: Option<String>,
}

pub struct Provider {
    pub name: String,
    style: Style,
    client_id: String,
    secret: Option<String>,
    audiences: Vec<String>,
    scopes: String,
    basic_auth: bool,
    redirect_uri: String,
    /// Extra parameters of the authorization request (Apple: form_post).
    extra: Vec<(&'static str, &'static str)>,
    /// Discovery document URL (OIDC) or fixed endpoints (OAuth 2.0).
    discovery: Option<String>,
    fixed: Option<Endpoints>,
    discovered: tokio::sync::OnceCell<Endpoints>,
    keys: tokio::sync::Mutex<Option<(Instant, JwkSet)>>,
}

/// The person a provider vouched for.
pub struct Identity {
    pub provider_id: String,
    pub email: Option<String>,
    pub email_verified: bool,
    /// `auth.identities.identity_data`, also merged into the user's metadata.
    pub data: Value,
}

pub struct Tokens {
    pub access_token: Option<String>,
    pub refresh_token: Option<String>,
    pub id_token: Option<String>,
}

/// Configured providers and the HTTP client that talks to them.
pub struct Providers {
    map: HashMap<String, Provider>,
    http: reqwest::Client,
}

fn preset_of<'a>(name: &'a str, p: &'a OAuthProvider) -> &'a str {
    p.kind.as_deref().unwrap_or(if PRESETS.contains(&name) { name } else { "oidc" })
}

/// Start-up check of one `[auth.providers.NAME]` table.
pub fn check_provider(name: &str, p: &OAuthProvider) -> Result<(), String> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        return Err(format!("provider name {name:?}: use letters, digits, - and _"));
    }
    if p.client_id.is_empty() {
        return Err(format!("{name}: client_id is required"));
    }
    match preset_of(name, p) {
        "oidc" if p.issuer.is_none() => Err(format!("{name}: kind oidc needs issuer (its discovery URL base)")),
        "oauth2" if p.authorize_url.is_none() || p.token_url.is_none() || p.userinfo_url.is_none() => {
            Err(format!("{name}: kind oauth2 needs authorize_url, token_url and userinfo_url"))
        }
        k if !PRESETS.contains(&k) && k != "oidc" && k != "oauth2" => {
            Err(format!("{name}: kind {k:?} is not oidc, oauth2 or one of {PRESETS:?}"))
        }
        _ => match p.token_auth.as_deref() {
            None | Some("basic") | Some("post") => Ok(()),
            Some(other) => Err(format!("{name}: token_auth {other:?} is not basic or post")),
        },
    }
}

impl Providers {
    pub fn new(config: &AuthConfig, public_url: &str) -> Result<Providers, String> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("Fluxbase/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        let mut map = HashMap::new();
        for (name, p) in &config.providers {
            if p.enabled == Some(false) {
                continue;
            }
            map.insert(name.clone(), Provider::new(name, p, public_url));
        }
        Ok(Providers { map, http })
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.map.keys().map(String::as_str)
    }

    pub fn get(&self, name: &str) -> Result<&Provider, ApiError> {
        self.map.get(name).ok_or_else(|| {
            ApiError::auth(
                400,
                "validation_failed",
                format!("Unsupported provider: Provider {name} could not be found"),
            )
        })
    }

    async fn endpoints<'p>(&self, p: &'p Provider) -> Result<&'p Endpoints, String> {
        if let Some(fixed) = &p.fixed {
            return Ok(fixed);
        }
        let url = p.discovery.as_deref().unwrap_or_default();
        p.discovered
            .get_or_try_init(|| async {
                let doc = self.get_json(self.http.get(url)).await.map_err(|e| format!("discovery {url}: {e}"))?;
                let field = |k: &str| doc.get(k).and_then(Value::as_str).map(str::to_string);
                Ok(Endpoints {
                    authorize: field("authorization_endpoint").ok_or("discovery: no authorization_endpoint")?,
                    token: field("token_endpoint").ok_or("discovery: no token_endpoint")?,
                    userinfo: field("userinfo_endpoint"),
                    jwks: field("jwks_uri"),
                    issuer: field("issuer"),
                })
            })
            .await
    }

    /// The provider's authorization URL for a new sign-in.
    pub async fn authorize_url(
        &self,
        p: &Provider,
        state: &str,
        nonce: &str,
        verifier: &str,
        more_scopes: Option<&str>,
        forwarded: &[(String, String)],
    ) -> Result<String, ApiError> {
        let endpoints = self.endpoints(p).await.map_err(unavailable)?;
        let mut scopes = p.scopes.clone();
        for s in more_scopes.unwrap_or("").split([' ', ',']).filter(|s| !s.is_empty()) {
            if !scopes.split(' ').any(|have| have == s) {
                scopes.push(' ');
                scopes.push_str(s);
            }
        }
        let mut params: Vec<(&str, &str)> = vec![
            ("response_type", "code"),
            ("client_id", &p.client_id),
            ("redirect_uri", &p.redirect_uri),
            ("scope", scopes.trim()),
            ("state", state),
        ];
        let challenge = s256(verifier);
        params.push(("code_challenge", &challenge));
        params.push(("code_challenge_method", "S256"));
        if p.style == Style::Oidc {
            params.push(("nonce", nonce));
        }
        params.extend(p.extra.iter().copied());
        for (k, v) in forwarded {
            if !params.iter().any(|(have, _)| have == k) {
                params.push((k, v));
            }
        }
        let query: Vec<String> = params.iter().map(|(k, v)| format!("{k}={}", crate::http::form_encode(v))).collect();
        let sep = if endpoints.authorize.contains('?') { '&' } else { '?' };
        Ok(format!("{}{sep}{}", endpoints.authorize, query.join("&")))
    }

    /// Trades the provider's code for its tokens.
    pub async fn exchange(&self, p: &Provider, code: &str, verifier: &str) -> Result<Tokens, String> {
        let endpoints = self.endpoints(p).await?;
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", p.redirect_uri.as_str()),
            ("code_verifier", verifier),
        ];
        let mut request = self.http.post(&endpoints.token).header("accept", "application/json");
        match (&p.secret, p.basic_auth) {
            (Some(secret), true) => {
                // RFC 6749 2.3.1: both parts form-encoded before Basic.
                request =
                    request.basic_auth(crate::http::form_encode(&p.client_id), Some(crate::http::form_encode(secret)));
            }
            (Some(secret), false) => {
                form.push(("client_id", &p.client_id));
                form.push(("client_secret", secret));
            }
            (None, _) => form.push(("client_id", &p.client_id)),
        }
        let body: Vec<String> = form.iter().map(|(k, v)| format!("{k}={}", crate::http::form_encode(v))).collect();
        let request = request.header("content-type", "application/x-www-form-urlencoded").body(body.join("&"));
        let v = self.get_json(request).await.map_err(|e| format!("token endpoint: {e}"))?;
        if let Some(err) = v.get("error").and_then(Value::as_str) {
            let detail = v.get("error_description").and_then(Value::as_str).unwrap_or("");
            return Err(format!("token endpoint refused the code: {err} {detail}"));
        }
        let field = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        Ok(Tokens {
            access_token: field("access_token"),
            refresh_token: field("refresh_token"),
            id_token: field("id_token"),
        })
    }

    /// Who signed in: from the ID token (OIDC) or the user-info endpoint.
    pub async fn identity(&self, p: &Provider, tokens: &Tokens, nonce: &str) -> Result<Identity, String> {
        match p.style {
            Style::Oidc => {
                let token = tokens.id_token.as_deref().ok_or("the provider returned no id_token")?;
                let claims = self.verify_id_token(p, token, &[p.client_id.as_str()], Some(nonce)).await?;
                Ok(identity_from_claims(p, claims))
            }
            Style::OAuth2 | Style::GitHub => {
                let endpoints = self.endpoints(p).await?;
                let url = endpoints.userinfo.as_deref().ok_or("no userinfo endpoint")?;
                let access = tokens.access_token.as_deref().ok_or("the provider returned no access_token")?;
                let mut info = self
                    .get_json(self.http.get(url).bearer_auth(access).header("accept", "application/json"))
                    .await
                    .map_err(|e| format!("userinfo: {e}"))?;
                if p.style == Style::GitHub {
                    github_email(self, url, access, &mut info).await;
                }
                Ok(identity_from_claims(p, info))
            }
        }
    }

    /// Verifies an ID token of `p`: signature by a key of the issuer, `iss`,
    /// `exp`, `aud` one of `audiences`; `nonce` (when given) must equal its
    /// claim. Returns the claims.
    pub async fn verify_id_token(
        &self,
        p: &Provider,
        token: &str,
        audiences: &[&str],
        nonce: Option<&str>,
    ) -> Result<Value, String> {
        let endpoints = self.endpoints(p).await?;
        let header = decode_header(token).map_err(|e| format!("id_token: {e}"))?;
        let alg = header.alg;
        if !matches!(
            alg,
            Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512
                | Algorithm::ES256
                | Algorithm::ES384
        ) {
            return Err(format!("id_token: algorithm {alg:?} is not accepted"));
        }
        let key = self.key_for(p, endpoints, header.kid.as_deref(), alg).await?;
        let mut validation = Validation::new(alg);
        validation.set_audience(audiences);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 30;
        // The issuer is checked below: Microsoft's is a template per tenant.
        validation.iss = None;
        let claims = decode::<Value>(token, &key, &validation).map_err(|e| format!("id_token: {e}"))?.claims;
        let iss = claims.get("iss").and_then(Value::as_str).unwrap_or("");
        let expected = endpoints.issuer.as_deref().unwrap_or_default();
        let tenant = claims.get("tid").and_then(Value::as_str).unwrap_or("{tenantid}");
        if iss != expected && iss != expected.replace("{tenantid}", tenant) {
            return Err(format!("id_token: issuer {iss:?} is not {expected:?}"));
        }
        if let Some(nonce) = nonce {
            let claim = claims.get("nonce").and_then(Value::as_str).unwrap_or("");
            if !crate::jwt::constant_time_eq(claim.as_bytes(), nonce.as_bytes()) {
                return Err("id_token: nonce does not match".into());
            }
        }
        Ok(claims)
    }

    /// The issuer's key `kid`; the key set is fetched again (at most once a
    /// minute) when a key is not in it, so rotations at the provider work.
    async fn key_for(
        &self,
        p: &Provider,
        endpoints: &Endpoints,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<DecodingKey, String> {
        let url = endpoints.jwks.as_deref().ok_or("the provider publishes no jwks_uri")?;
        let mut cached = p.keys.lock().await;
        for attempt in 0..2 {
            if let Some((_, set)) = cached.as_ref() {
                let found = set.keys.iter().find(|k| match kid {
                    Some(kid) => k.common.key_id.as_deref() == Some(kid),
                    None => k.common.key_algorithm.map(|a| a.to_string()) == Some(format!("{alg:?}")),
                });
                if let Some(jwk) = found {
                    return DecodingKey::from_jwk(jwk).map_err(|e| format!("provider key: {e}"));
                }
            }
            let fresh = cached.as_ref().is_some_and(|(at, _)| at.elapsed() < Duration::from_secs(60));
            if attempt == 1 || fresh {
                break;
            }
            let doc = self.get_json(self.http.get(url)).await.map_err(|e| format!("jwks {url}: {e}"))?;
            let set: JwkSet = serde_json::from_value(doc).map_err(|e| format!("jwks {url}: {e}"))?;
            *cached = Some((Instant::now(), set));
        }
        Err(format!("id_token: key {kid:?} is not among the provider's keys"))
    }

    /// A JSON answer of at most MAX_RESPONSE_BYTES, or why not.
    async fn get_json(&self, request: reqwest::RequestBuilder) -> Result<Value, String> {
        let mut response = request.send().await.map_err(|e| e.without_url().to_string())?;
        let status = response.status();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| e.without_url().to_string())? {
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err("response larger than 1 MiB".into());
            }
            body.extend_from_slice(&chunk);
        }
        let value: Value = serde_json::from_slice(&body).map_err(|_| format!("HTTP {status}: not JSON"))?;
        // Token endpoints answer errors with 400 and a JSON body worth reading.
        if status.is_success() || value.get("error").is_some() {
            Ok(value)
        } else {
            Err(format!("HTTP {status}"))
        }
    }
}

impl Provider {
    fn new(name: &str, p: &OAuthProvider, public_url: &str) -> Provider {
        let preset = preset_of(name, p);
        let default_issuer = match preset {
            "google" => Some("https://accounts.google.com"),
            "gitlab" => Some("https://gitlab.com"),
            "azure" => Some("https://login.microsoftonline.com/common/v2.0"),
            "apple" => Some("https://appleid.apple.com"),
            _ => None,
        };
        let style = match preset {
            "github" => Style::GitHub,
            "discord" | "oauth2" => Style::OAuth2,
            _ => Style::Oidc,
        };
        let fixed = match preset {
            "github" => {
                let base = p.issuer.as_deref().unwrap_or("https://github.com").trim_end_matches('/');
                let api = if base == "https://github.com" {
                    "https://api.github.com".to_string()
                } else {
                    format!("{base}/api/v3")
                };
                Some(Endpoints {
                    authorize: format!("{base}/login/oauth/authorize"),
                    token: format!("{base}/login/oauth/access_token"),
                    userinfo: Some(format!("{api}/user")),
                    ..Default::default()
                })
            }
            "discord" => Some(Endpoints {
                authorize: "https://discord.com/api/oauth2/authorize".into(),
                token: "https://discord.com/api/oauth2/token".into(),
                userinfo: Some("https://discord.com/api/users/@me".into()),
                ..Default::default()
            }),
            "oauth2" => Some(Endpoints::default()),
            _ => None,
        }
        .map(|mut e| {
            if let Some(u) = &p.authorize_url {
                e.authorize = u.clone();
            }
            if let Some(u) = &p.token_url {
                e.token = u.clone();
            }
            if let Some(u) = &p.userinfo_url {
                e.userinfo = Some(u.clone());
            }
            e
        });
        let issuer = p.issuer.as_deref().or(default_issuer).unwrap_or_default().trim_end_matches('/');
        let scopes = p.scopes.clone().map(|s| s.join(" ")).unwrap_or_else(|| {
            match preset {
                "github" => "read:user user:email",
                "discord" => "identify email",
                "apple" => "openid email name",
                "oauth2" => "openid email profile",
                _ => "openid email profile",
            }
            .into()
        });
        Provider {
            name: name.to_string(),
            style,
            client_id: p.client_id.clone(),
            secret: p.secret.clone(),
            audiences: std::iter::once(p.client_id.clone()).chain(p.additional_client_ids.iter().cloned()).collect(),
            scopes,
            // Basic is the OAuth default; GitHub, Discord and Apple read the form.
            basic_auth: match p.token_auth.as_deref() {
                Some(m) => m == "basic",
                None => !matches!(preset, "github" | "discord" | "apple"),
            },
            redirect_uri: p.redirect_uri.clone().unwrap_or_else(|| format!("{public_url}/auth/v1/callback")),
            extra: if preset == "apple" { vec![("response_mode", "form_post")] } else { vec![] },
            discovery: (style == Style::Oidc).then(|| format!("{issuer}/.well-known/openid-configuration")),
            fixed,
            discovered: tokio::sync::OnceCell::new(),
            keys: tokio::sync::Mutex::new(None),
        }
    }

    pub fn is_oidc(&self) -> bool {
        self.style == Style::Oidc
    }

    pub fn audiences(&self) -> Vec<&str> {
        self.audiences.iter().map(String::as_str).collect()
    }
}

/// GitHub keeps e-mail addresses apart: the primary verified one signs in.
async fn github_email(providers: &Providers, user_url: &str, access: &str, info: &mut Value) {
    let url = format!("{}/emails", user_url.trim_end_matches('/'));
    let request = providers.http.get(url).bearer_auth(access).header("accept", "application/vnd.github+json");
    if let Ok(Value::Array(emails)) = providers.get_json(request).await {
        let primary = emails.iter().find(|e| e.get("primary") == Some(&json!(true)));
        if let (Some(e), Some(o)) = (primary, info.as_object_mut()) {
            o.insert("email".into(), e.get("email").cloned().unwrap_or(Value::Null));
            o.insert("email_verified".into(), e.get("verified").cloned().unwrap_or(json!(false)));
        }
    }
}

/// `identity_data` with Supabase's names (`full_name`, `avatar_url`,
/// `user_name`, `provider_id`) next to the provider's own claims.
pub fn identity_from_claims(p: &Provider, claims: Value) -> Identity {
    let mut data: Map<String, Value> = match claims {
        Value::Object(m) => m.into_iter().filter(|(k, _)| !TOKEN_CLAIMS.contains(&k.as_str())).collect(),
        _ => Map::new(),
    };
    let text = |d: &Map<String, Value>, keys: &[&str]| {
        keys.iter().find_map(|k| match d.get(*k) {
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        })
    };
    let provider_id = text(&data, &["sub", "id"]).unwrap_or_default();
    let email = text(&data, &["email"]).map(|e| e.to_lowercase());
    let email_verified = ["email_verified", "verified"].iter().any(|k| match data.get(*k) {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s == "true",
        _ => false,
    });
    let name = text(&data, &["name", "global_name", "login", "username"]);
    let avatar = text(&data, &["picture", "avatar_url"]).or_else(|| {
        let hash = text(&data, &["avatar"])?;
        Some(format!("https://cdn.discordapp.com/avatars/{provider_id}/{hash}.png"))
    });
    let user_name = text(&data, &["preferred_username", "login", "username"]);
    let added = [
        ("full_name", name.clone()),
        ("name", name),
        ("avatar_url", avatar.clone()),
        ("picture", avatar),
        ("user_name", user_name.clone()),
        ("preferred_username", user_name),
    ];
    for (key, value) in added {
        if let Some(v) = value {
            data.entry(key.to_string()).or_insert(Value::String(v));
        }
    }
    data.insert("sub".into(), json!(provider_id));
    data.insert("provider_id".into(), json!(provider_id));
    data.insert("email_verified".into(), json!(email_verified));
    data.insert("phone_verified".into(), json!(false));
    if let Some(e) = &email {
        data.insert("email".into(), json!(e));
    }
    if !data.contains_key("iss") {
        data.insert("iss".into(), json!(p.fixed.as_ref().map(|f| f.authorize.clone()).unwrap_or_default()));
    }
    Identity { provider_id, email, email_verified, data: Value::Object(data) }
}

fn unavailable(e: String) -> ApiError {
    tracing::warn!(error = %e, "OAuth provider unavailable");
    ApiError::auth(502, "provider_unavailable", "The sign-in provider could not be reached")
}

/// PKCE S256: base64url(SHA-256(verifier)).
pub fn s256(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// RFC 7636: 43 to 128 characters of `[A-Za-z0-9-._~]`.
pub fn valid_pkce(s: &str) -> bool {
    (43..=128).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_and_presets() {
        // RFC 7636 appendix B.
        assert_eq!(s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"), "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
        assert!(valid_pkce("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"));
        assert!(!valid_pkce("short"));
        assert!(!valid_pkce(&"a".repeat(129)));
        let bare = OAuthProvider { client_id: "c".into(), ..Default::default() };
        assert!(check_provider("google", &bare).is_ok());
        assert!(check_provider("keycloak", &bare).unwrap_err().contains("issuer"));
        let oauth2 = OAuthProvider { kind: Some("oauth2".into()), ..bare.clone() };
        assert!(check_provider("x", &oauth2).unwrap_err().contains("authorize_url"));
        assert!(check_provider("bad name", &bare).is_err());
        let p = Provider::new("github", &bare, "http://h");
        assert_eq!(p.redirect_uri, "http://h/auth/v1/callback");
        assert!(!p.basic_auth);
        assert_eq!(p.fixed.as_ref().unwrap().userinfo.as_deref(), Some("https://api.github.com/user"));
        let g = Provider::new("google", &bare, "http://h");
        assert_eq!(g.discovery.as_deref(), Some("https://accounts.google.com/.well-known/openid-configuration"));
    }

    #[test]
    fn identities_use_supabase_names() {
        let p = Provider::new("discord", &OAuthProvider { client_id: "c".into(), ..Default::default() }, "http://h");
        let i = identity_from_claims(
            &p,
            json!({"id": "42", "email": "Ada@Example.com", "verified": true, "username": "ada", "avatar": "abc"}),
        );
        assert_eq!(i.provider_id, "42");
        assert_eq!(i.email.as_deref(), Some("ada@example.com"));
        assert!(i.email_verified);
        assert_eq!(i.data["user_name"], "ada");
        assert_eq!(i.data["avatar_url"], "https://cdn.discordapp.com/avatars/42/abc.png");
        let i = identity_from_claims(&p, json!({"sub": "s", "email_verified": "false", "nonce": "n", "aud": "x"}));
        assert!(!i.email_verified);
        assert!(i.data.get("nonce").is_none() && i.data.get("aud").is_none());
    }
}
