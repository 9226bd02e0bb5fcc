//! JWT verification (HS256 secret; RS256/ES256 keys from a JWK set) and the
//! API-key rules of Supabase: which credential of a request decides its role.
//! Verification only: signing sessions is the auth service's (auth/signing.rs).
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{decode, decode_header, errors::ErrorKind, Algorithm, DecodingKey, Validation};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::{ApiKeys, Jwt as JwtConfig};
use crate::error::ApiError;

/// Who a request acts as, verified once per request by the dispatcher: the
/// claims handed to Postgres.
#[derive(Debug, Clone)]
pub struct Caller {
    pub claims: Arc<Value>,
    /// Acting as the anonymous role, with or without a token (the anon key
    /// is a token): PostgREST answers permission errors 401 then, not 403.
    pub anonymous: bool,
}

impl Caller {
    pub fn role(&self) -> &str {
        self.claims.get("role").and_then(Value::as_str).unwrap_or("")
    }
}

/// Verified claims and their `exp`, keyed by the token.
type CachedClaims = (Arc<Value>, Option<u64>);

/// A public key tokens may be signed with (RS256 or ES256).
pub struct VerifyingKey {
    pub kid: Option<String>,
    pub algorithm: Algorithm,
    pub key: DecodingKey,
}

pub struct Verifier {
    hs256: Option<DecodingKey>,
    asymmetric: Vec<VerifyingKey>,
    audience: Option<String>,
    leeway: u64,
    anon: Arc<Value>,
    anon_role: String,
    publishable: Vec<String>,
    secret: Vec<String>,
    cache: Mutex<HashMap<String, CachedClaims>>,
    cache_entries: usize,
    /// The database login role (`authenticator`): a token may not name it.
    login_role: Option<String>,
}

fn jwt_error(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::Jwt { code, message: message.into() }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Opaque Supabase keys are never JWTs and never bearer tokens.
fn is_opaque(key: &str) -> bool {
    key.starts_with("sb_publishable_") || key.starts_with("sb_secret_")
}

impl Verifier {
    /// `own_keys`: the public keys of this deployment's own session signing,
    /// verified beside `jwt.secret` and `jwt.jwks_file`.
    /// `login_role`: the role the proxy connects as, which no token may name.
    pub fn new(
        config: &JwtConfig,
        keys: &ApiKeys,
        own_keys: Vec<VerifyingKey>,
        login_role: Option<String>,
    ) -> Result<Verifier, String> {
        let mut asymmetric = own_keys;
        if let Some(path) = &config.jwks_file {
            let text = std::fs::read_to_string(path).map_err(|e| format!("jwt.jwks_file {}: {e}", path.display()))?;
            let set: JwkSet = serde_json::from_str(&text).map_err(|e| format!("jwt.jwks_file: not a JWK set: {e}"))?;
            for jwk in &set.keys {
                let algorithm = match jwk.common.key_algorithm.map(|a| a.to_string()).as_deref() {
                    Some("RS256") => Algorithm::RS256,
                    Some("ES256") => Algorithm::ES256,
                    other => return Err(format!("jwt.jwks_file: key alg {other:?} is not RS256 or ES256")),
                };
                let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("jwt.jwks_file: {e}"))?;
                asymmetric.push(VerifyingKey { kid: jwk.common.key_id.clone(), algorithm, key });
            }
        }
        Ok(Verifier {
            hs256: config.secret.as_ref().map(|s| DecodingKey::from_secret(s.as_bytes())),
            asymmetric,
            audience: config.audience.clone(),
            leeway: config.leeway_seconds,
            anon: Arc::new(json!({ "role": config.anon_role })),
            anon_role: config.anon_role.clone(),
            publishable: keys.publishable.clone(),
            secret: keys.secret.clone(),
            cache: Mutex::new(HashMap::new()),
            cache_entries: config.cache_entries,
            login_role,
        })
    }

    /// Supabase's rules: a JWT in `Authorization: Bearer` wins; an opaque key
    /// is never a bearer token, so then the `apikey` header decides; no
    /// credential at all means the anon role.
    pub fn authenticate(&self, authorization: Option<&str>, apikey: Option<&str>) -> Result<Caller, ApiError> {
        let bearer = match authorization {
            Some(h) => {
                let (scheme, token) = h.trim().split_once(' ').unwrap_or((h, ""));
                if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
                    return Err(jwt_error("PGRST301", "Authorization header must be `Bearer <token>`"));
                }
                Some(token.trim())
            }
            None => None,
        };
        if let Some(key) = apikey.filter(|k| is_opaque(k)) {
            if !self.opaque_key_is_known(key) {
                return Err(ApiError::InvalidApiKey);
            }
        }
        let claims = match bearer {
            Some(token) if !is_opaque(token) => self.verify(token)?,
            _ => match apikey {
                Some(key) if key.starts_with("sb_secret_") => Arc::new(json!({ "role": "service_role" })),
                Some(key) if is_opaque(key) => self.anon.clone(),
                Some(key) => self.verify(key)?,
                None if bearer.is_some() => return Err(ApiError::InvalidApiKey),
                None => self.anon.clone(),
            },
        };
        let anonymous = claims.get("role").and_then(Value::as_str).is_none_or(|r| r == self.anon_role);
        Ok(Caller { claims, anonymous })
    }

    fn opaque_key_is_known(&self, key: &str) -> bool {
        // Every configured key is compared, in constant time, so timing does
        // not tell which prefix matched.
        let mut found = false;
        for k in self.publishable.iter().chain(self.secret.iter()) {
            found |= constant_time_eq(k.as_bytes(), key.as_bytes());
        }
        found
    }

    pub fn verify(&self, token: &str) -> Result<Arc<Value>, ApiError> {
        if let Some((claims, exp)) = self.cache.lock().ok().and_then(|c| c.get(token).cloned()) {
            if exp.is_none_or(|exp| now() < exp + self.leeway) {
                return Ok(claims);
            }
        }
        let claims = Arc::new(self.verify_uncached(token)?);
        // A NumericDate (checked numeric by verify_uncached), whole seconds.
        let exp = claims.get("exp").and_then(Value::as_f64).map(|e| e.max(0.0) as u64);
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= self.cache_entries {
                cache.clear();
            }
            cache.insert(token.to_string(), (claims.clone(), exp));
        }
        Ok(claims)
    }

    fn verify_uncached(&self, token: &str) -> Result<Value, ApiError> {
        let parts = token.split('.').count();
        if parts != 3 {
            return Err(jwt_error("PGRST301", format!("Expected 3 parts in JWT; got {parts}")));
        }
        let header =
            decode_header(token).map_err(|_| jwt_error("PGRST301", "Wrong or unsupported encoding algorithm"))?;
        let key = match header.alg {
            Algorithm::HS256 => self.hs256.as_ref(),
            Algorithm::RS256 | Algorithm::ES256 => self
                .asymmetric
                .iter()
                .filter(|k| k.algorithm == header.alg)
                .find(|k| header.kid.is_none() || k.kid == header.kid)
                .map(|k| &k.key),
            _ => None,
        }
        .ok_or_else(|| jwt_error("PGRST301", "No suitable key or wrong key type"))?;

        let mut validation = Validation::new(header.alg);
        validation.required_spec_claims.clear();
        // exp, nbf and iat are checked below, as RFC 7519 NumericDates
        // (integers or not); the crate reads only integers and would take
        // a float `exp` as no expiry at all.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        match &self.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        let data = decode::<Value>(token, key, &validation).map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => jwt_error("PGRST303", "JWT expired"),
            ErrorKind::ImmatureSignature => jwt_error("PGRST303", "JWT not yet valid"),
            ErrorKind::InvalidAudience => jwt_error("PGRST303", "JWT not in audience"),
            ErrorKind::InvalidSignature => jwt_error("PGRST301", "JWT cryptographic operation failed"),
            _ => jwt_error("PGRST301", "JWT could not be decoded"),
        })?;
        let claims = data.claims;
        if !claims.is_object() {
            return Err(jwt_error("PGRST303", "JWT claims must be a JSON object"));
        }
        self.check_times(&claims)?;
        match claims.get("role") {
            None => {}
            Some(Value::String(role)) => self.check_role(role)?,
            Some(_) => return Err(jwt_error("PGRST303", "The JWT 'role' claim must be a string")),
        }
        Ok(claims)
    }

    /// `exp`, `nbf` and `iat`, when present, are numbers (RFC 7519's
    /// NumericDate, fractions allowed), judged with `jwt.leeway_seconds`.
    fn check_times(&self, claims: &Value) -> Result<(), ApiError> {
        let now = now() as f64;
        let leeway = self.leeway as f64;
        let time = |name: &str| match claims.get(name) {
            None => Ok(None),
            Some(v) => v.as_f64().filter(|t| t.is_finite()).map(Some).ok_or_else(|| {
                jwt_error("PGRST301", format!("The JWT '{name}' claim must be a number (seconds since the epoch)"))
            }),
        };
        if time("exp")?.is_some_and(|exp| now >= exp + leeway) {
            return Err(jwt_error("PGRST303", "JWT expired"));
        }
        if time("nbf")?.is_some_and(|nbf| now + leeway < nbf) {
            return Err(jwt_error("PGRST303", "JWT not yet valid"));
        }
        if time("iat")?.is_some_and(|iat| iat > now + leeway) {
            return Err(jwt_error("PGRST303", "JWT issued at future"));
        }
        Ok(())
    }

    /// A token names a role the request then runs as. Never the login role
    /// itself, and never `none` (which `SET ROLE` takes as "back to the
    /// login role"): both would run as the authenticator. Postgres' own
    /// membership check refuses every other role the login role may not
    /// switch to, with the same answer.
    fn check_role(&self, role: &str) -> Result<(), ApiError> {
        if role.eq_ignore_ascii_case("none") || self.login_role.as_deref() == Some(role) {
            return Err(ApiError::Database {
                status: http::StatusCode::FORBIDDEN,
                code: "42501".into(),
                message: format!("permission denied to set role \"{role}\""),
                details: None,
                hint: None,
            });
        }
        Ok(())
    }
}

pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn sign_hs256(secret: &str, claims: &Value) -> Result<String, jsonwebtoken::errors::Error> {
        let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
        jsonwebtoken::encode(&jsonwebtoken::Header::new(Algorithm::HS256), claims, &key)
    }

    fn verifier() -> Verifier {
        let config = JwtConfig {
            secret: Some(SECRET.into()),
            jwks_file: None,
            signing_jwks_file: None,
            audience: None,
            anon_role: "anon".into(),
            cache_entries: 10,
            leeway_seconds: 0,
        };
        let keys = ApiKeys {
            publishable: vec!["sb_publishable_abc".into()],
            secret: vec!["sb_secret_0123456789abcdef0123456789".into()],
            ..Default::default()
        };
        Verifier::new(&config, &keys, vec![], Some("authenticator".into())).unwrap()
    }

    fn code(r: Result<Caller, ApiError>) -> String {
        r.unwrap_err().code().to_string()
    }

    fn asymmetric_verifier() -> Verifier {
        let config = JwtConfig {
            secret: None,
            jwks_file: Some(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/jwks.json").into()),
            signing_jwks_file: None,
            audience: Some("authenticated".into()),
            anon_role: "anon".into(),
            cache_entries: 10,
            leeway_seconds: 0,
        };
        Verifier::new(&config, &ApiKeys::default(), vec![], None).unwrap()
    }

    fn sign_with(alg: Algorithm, kid: &str, pem: &str, claims: &Value) -> String {
        let mut header = jsonwebtoken::Header::new(alg);
        header.kid = Some(kid.into());
        let key = match alg {
            Algorithm::RS256 => jsonwebtoken::EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
            _ => jsonwebtoken::EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
        };
        jsonwebtoken::encode(&header, claims, &key).unwrap()
    }

    #[test]
    fn rs256_and_es256_tokens_verify_against_the_jwk_set() {
        let v = asymmetric_verifier();
        let claims = json!({"role": "authenticated", "sub": "u1", "aud": "authenticated", "exp": now() + 60});
        let rsa = include_str!("../testdata/rs256.pem");
        let ec = include_str!("../testdata/es256.pem");
        for token in [
            sign_with(Algorithm::RS256, "rsa-test-1", rsa, &claims),
            sign_with(Algorithm::ES256, "ec-test-1", ec, &claims),
        ] {
            assert_eq!(v.authenticate(Some(&format!("Bearer {token}")), None).unwrap().role(), "authenticated");
        }
        // Wrong audience, unknown kid, and an HS256 token when no secret is configured.
        let other_aud = sign_with(Algorithm::RS256, "rsa-test-1", rsa, &json!({"role": "authenticated", "aud": "x"}));
        assert_eq!(code(v.authenticate(Some(&format!("Bearer {other_aud}")), None)), "PGRST303");
        let unknown_kid = sign_with(Algorithm::RS256, "rsa-rotated-away", rsa, &claims);
        assert_eq!(code(v.authenticate(Some(&format!("Bearer {unknown_kid}")), None)), "PGRST301");
        let hs = sign_hs256(SECRET, &claims).unwrap();
        assert_eq!(code(v.authenticate(Some(&format!("Bearer {hs}")), None)), "PGRST301");
    }

    #[test]
    fn no_credentials_means_anon() {
        let a = verifier().authenticate(None, None).unwrap();
        assert_eq!(a.role(), "anon");
        assert!(a.anonymous);
    }

    #[test]
    fn bearer_jwt_wins_over_apikey() {
        let user = sign_hs256(SECRET, &json!({"role": "authenticated", "sub": "u1", "exp": now() + 60})).unwrap();
        let a = verifier().authenticate(Some(&format!("Bearer {user}")), Some("sb_publishable_abc")).unwrap();
        assert_eq!(a.role(), "authenticated");
    }

    #[test]
    fn opaque_keys_decide_only_through_apikey() {
        let v = verifier();
        let a = v
            .authenticate(
                Some("Bearer sb_secret_0123456789abcdef0123456789"),
                Some("sb_secret_0123456789abcdef0123456789"),
            )
            .unwrap();
        assert_eq!(a.role(), "service_role");
        assert_eq!(v.authenticate(None, Some("sb_publishable_abc")).unwrap().role(), "anon");
        assert_eq!(code(v.authenticate(None, Some("sb_publishable_nope"))), "FB010");
        // An opaque bearer without an apikey is not a credential.
        assert_eq!(code(v.authenticate(Some("Bearer sb_secret_0123456789abcdef0123456789"), None)), "FB010");
    }

    #[test]
    fn time_claims_must_be_numbers_and_are_judged_every_time() {
        let v = verifier();
        let bearer = |claims: Value| format!("Bearer {}", sign_hs256(SECRET, &claims).unwrap());
        let now = now() as f64;
        for exp in [json!(now - 10.5), json!(-1), json!(0)] {
            let token = bearer(json!({"role": "authenticated", "exp": exp}));
            assert_eq!(code(v.authenticate(Some(&token), None)), "PGRST303", "exp {exp}");
        }
        for bad in [json!("4000000000"), Value::Null, json!(true), json!([1])] {
            for claim in ["exp", "nbf", "iat"] {
                let token = bearer(json!({"role": "authenticated", claim: bad.clone()}));
                assert_eq!(code(v.authenticate(Some(&token), None)), "PGRST301", "{claim}: {bad}");
            }
        }
        // A fractional exp in the future verifies, and still expires once cached.
        let soon = bearer(json!({"role": "authenticated", "exp": now + 1.5}));
        assert_eq!(v.authenticate(Some(&soon), None).unwrap().role(), "authenticated");
        std::thread::sleep(std::time::Duration::from_millis(2600));
        assert_eq!(code(v.authenticate(Some(&soon), None)), "PGRST303", "a cached token expires too");
        let iat_future = bearer(json!({"role": "anon", "iat": now + 3600.5}));
        assert_eq!(code(v.authenticate(Some(&iat_future), None)), "PGRST303");
    }

    #[test]
    fn tokens_may_not_name_the_login_role_or_none() {
        let v = verifier();
        for role in ["authenticator", "none", "NONE"] {
            let token = format!("Bearer {}", sign_hs256(SECRET, &json!({"role": role})).unwrap());
            let err = v.authenticate(Some(&token), None).unwrap_err();
            assert_eq!((err.status().as_u16(), err.code()), (403, "42501"), "{role}");
        }
        let token = format!("Bearer {}", sign_hs256(SECRET, &json!({"role": "service_role"})).unwrap());
        assert_eq!(v.authenticate(Some(&token), None).unwrap().role(), "service_role");
    }

    #[test]
    fn bad_tokens_are_rejected_with_postgrest_codes() {
        let v = verifier();
        let expired = sign_hs256(SECRET, &json!({"role": "authenticated", "exp": now() - 10})).unwrap();
        assert_eq!(code(v.authenticate(Some(&format!("Bearer {expired}")), None)), "PGRST303");
        let forged = sign_hs256("another-secret-another-secret-xx", &json!({"role": "service_role"})).unwrap();
        assert_eq!(code(v.authenticate(Some(&format!("Bearer {forged}")), None)), "PGRST301");
        // alg: none
        let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJyb2xlIjoic2VydmljZV9yb2xlIn0.";
        assert_eq!(code(v.authenticate(Some(&format!("Bearer {none}")), None)), "PGRST301");
        assert_eq!(code(v.authenticate(Some("Bearer a.b"), None)), "PGRST301");
        assert_eq!(code(v.authenticate(Some("Basic xyz"), None)), "PGRST301");
        let future = sign_hs256(SECRET, &json!({"role": "anon", "nbf": now() + 3600})).unwrap();
        assert_eq!(code(v.authenticate(Some(&format!("Bearer {future}")), None)), "PGRST303");
        // RS256 token against a verifier with no RSA keys: algorithm not configured.
        let rs = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJyb2xlIjoic2VydmljZV9yb2xlIn0.c2ln";
        assert_eq!(code(v.authenticate(Some(&format!("Bearer {rs}")), None)), "PGRST301");
    }
}
