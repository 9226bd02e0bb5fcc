//! Asymmetric signing keys for the access tokens `/auth/v1` issues: ES256
//! (P-256) or RS256 (RSA, 2048 bits or more) private keys in a JWK set file
//! (`jwt.signing_jwks_file`). The first key
//! signs; every key verifies, so a rotation (a new key put first by
//! `fluxbase gen-signing-key`) keeps tokens of older keys valid until they
//! expire. Public parts are published at `/auth/v1/.well-known/jwks.json`
//! so clients can verify tokens without the secret.
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use p256::pkcs8::EncodePrivateKey;
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::traits::{PrivateKeyParts, PublicKeyParts};
use serde_json::{json, Value};
use std::path::Path;

use crate::jwt::VerifyingKey;

pub struct SigningKeys {
    current: (String, Algorithm, EncodingKey),
    /// (kid, algorithm, public JWK) of every key, current first.
    public: Vec<(String, Algorithm, Value)>,
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn big(jwk: &Value, member: &str, kid: &str) -> Result<rsa::BigUint, String> {
    let text =
        jwk.get(member).and_then(Value::as_str).ok_or_else(|| format!("key {kid}: RSA member {member} missing"))?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .map_err(|_| format!("key {kid}: RSA member {member} is not base64url"))?;
    Ok(rsa::BigUint::from_bytes_be(&bytes))
}

/// An ES256 key: its signing key and public JWK.
fn ec_key(jwk: &Value, kid: &str) -> Result<(EncodingKey, Value), String> {
    // The EC key alone: the parser refuses members it does not know (kid, alg, use).
    let bare: serde_json::Map<String, Value> =
        ["kty", "crv", "x", "y", "d"].iter().filter_map(|k| jwk.get(*k).map(|v| (k.to_string(), v.clone()))).collect();
    let secret = p256::SecretKey::from_jwk_str(&Value::Object(bare).to_string())
        .map_err(|e| format!("key {kid}: not a P-256 private key ({e})"))?;
    let public: Value =
        serde_json::from_str(&secret.public_key().to_jwk_string()).map_err(|e| format!("key {kid}: {e}"))?;
    let der = secret.to_pkcs8_der().map_err(|e| format!("key {kid}: {e}"))?;
    Ok((EncodingKey::from_ec_der(der.as_bytes()), public))
}

/// An RS256 key: its signing key and public JWK (`n`, `e`).
fn rsa_key(jwk: &Value, kid: &str) -> Result<(EncodingKey, Value), String> {
    let (n, e, d) = (big(jwk, "n", kid)?, big(jwk, "e", kid)?, big(jwk, "d", kid)?);
    let primes = vec![big(jwk, "p", kid)?, big(jwk, "q", kid)?];
    let key = rsa::RsaPrivateKey::from_components(n, e, d, primes).map_err(|e| format!("key {kid}: {e}"))?;
    key.validate().map_err(|e| format!("key {kid}: not a valid RSA key ({e})"))?;
    if key.size() < 256 {
        return Err(format!("key {kid}: RSA keys must have at least 2048 bits"));
    }
    let der = key.to_pkcs1_der().map_err(|e| format!("key {kid}: {e}"))?;
    let public = json!({ "kty": "RSA", "n": b64(&key.n().to_bytes_be()), "e": b64(&key.e().to_bytes_be()) });
    Ok((EncodingKey::from_rsa_der(der.as_bytes()), public))
}

/// The members `names` of a JWK (a public key from a public-only JWK).
fn pick(jwk: &Value, names: &[&str]) -> Value {
    Value::Object(names.iter().filter_map(|k| jwk.get(*k).map(|v| (k.to_string(), v.clone()))).collect())
}

fn kid_of(jwk: &Value) -> Result<String, String> {
    jwk.get("kid").and_then(Value::as_str).map(str::to_string).ok_or_else(|| "every key needs a \"kid\"".into())
}

impl SigningKeys {
    /// Reads `jwt.signing_jwks_file`: a JWK set `{"keys": [...]}` (ours,
    /// the first key signs) or GoTrue's `GOTRUE_JWT_KEYS` format, a bare
    /// array of JWKs where the key whose `key_ops` has `sign` signs and
    /// the others only verify (public-only keys allowed). Symmetric (`oct`)
    /// keys are skipped: HS256 is `jwt.secret`'s.
    pub fn load(path: &Path) -> Result<SigningKeys, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let set: Value = serde_json::from_str(&text).map_err(|e| format!("not a JWK set: {e}"))?;
        let keys = match &set {
            Value::Array(keys) => keys,
            _ => set.get("keys").and_then(Value::as_array).ok_or("not a JWK set: no \"keys\"")?,
        };
        let ops = |jwk: &Value, op: &str| {
            jwk.get("key_ops").and_then(Value::as_array).map(|o| o.iter().any(|v| v.as_str() == Some(op)))
        };
        // With `key_ops` (GoTrue), the key marked `sign`; else the first.
        let signer = keys.iter().position(|k| ops(k, "sign") == Some(true)).or_else(|| {
            keys.iter().position(|k| k.get("key_ops").is_none() && k.get("kty").and_then(Value::as_str) != Some("oct"))
        });
        let mut public = Vec::new();
        let mut current = None;
        for (i, jwk) in keys.iter().enumerate() {
            if jwk.get("kty").and_then(Value::as_str) == Some("oct") {
                tracing::warn!("jwt.signing_jwks_file: a symmetric (oct) key is skipped; HS256 uses jwt.secret");
                continue;
            }
            let kid = kid_of(jwk)?;
            let private = jwk.get("d").is_some();
            let algorithm = match (jwk.get("kty").and_then(Value::as_str), jwk.get("crv").and_then(Value::as_str)) {
                (Some("EC"), Some("P-256")) => Algorithm::ES256,
                (Some("RSA"), _) => Algorithm::RS256,
                _ => return Err(format!("key {kid}: signing keys are EC P-256 (ES256) or RSA (RS256)")),
            };
            let (signing, mut public_jwk) = match (algorithm, private) {
                (Algorithm::ES256, true) => {
                    let (s, p) = ec_key(jwk, &kid)?;
                    (Some(s), p)
                }
                (_, true) => {
                    let (s, p) = rsa_key(jwk, &kid)?;
                    (Some(s), p)
                }
                (Algorithm::ES256, false) => (None, pick(jwk, &["kty", "crv", "x", "y"])),
                (_, false) => (None, pick(jwk, &["kty", "n", "e"])),
            };
            if let Some(o) = public_jwk.as_object_mut() {
                o.insert("kid".into(), json!(kid));
                o.insert("alg".into(), json!(format!("{algorithm:?}")));
                o.insert("use".into(), json!("sig"));
                o.insert("key_ops".into(), json!(["verify"]));
            }
            if Some(i) == signer {
                let signing =
                    signing.ok_or_else(|| format!("key {kid}: the signing key needs its private part (\"d\")"))?;
                current = Some((kid.clone(), algorithm, signing));
            }
            public.push((kid, algorithm, public_jwk));
        }
        Ok(SigningKeys {
            current: current.ok_or("no signing key (a private key, with \"sign\" in key_ops in an array)")?,
            public,
        })
    }

    pub fn sign(&self, claims: &Value) -> Result<String, jsonwebtoken::errors::Error> {
        let mut header = Header::new(self.current.1);
        header.kid = Some(self.current.0.clone());
        jsonwebtoken::encode(&header, claims, &self.current.2)
    }

    /// The algorithm of the key that signs (`ES256` or `RS256`).
    pub fn algorithm(&self) -> &'static str {
        match self.current.1 {
            Algorithm::RS256 => "RS256",
            _ => "ES256",
        }
    }

    /// The public half of every key, for the verifier.
    pub fn verifying_keys(&self) -> Result<Vec<VerifyingKey>, String> {
        self.public
            .iter()
            .map(|(kid, algorithm, jwk)| {
                let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwk.clone()).map_err(|e| e.to_string())?;
                let key = DecodingKey::from_jwk(&jwk).map_err(|e| e.to_string())?;
                Ok(VerifyingKey { kid: Some(kid.clone()), algorithm: *algorithm, key })
            })
            .collect()
    }

    /// The public keys, as published.
    pub fn public_jwks(&self) -> Vec<Value> {
        self.public.iter().map(|(_, _, jwk)| jwk.clone()).collect()
    }
}

/// Signs an HS256 token with `jwt.secret`: sessions when no signing keys
/// are configured, the dev keys and `fluxbase sign`.
pub fn sign_hs256(secret: &str, claims: &Value) -> Result<String, jsonwebtoken::errors::Error> {
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(secret.as_bytes()))
}

/// Puts a new key (`ES256`: P-256, `RS256`: RSA 2048) first in the JWK set
/// at `path` (creating it), so it signs from the next start while the older
/// keys still verify.
pub fn generate(path: &Path, kid: Option<String>, alg: &str) -> Result<String, String> {
    let mut keys: Vec<Value> = match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|s| s.get("keys").and_then(Value::as_array).cloned())
            .ok_or_else(|| format!("{}: not a JWK set", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => vec![],
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let mut jwk: Value = match alg {
        "ES256" => {
            let secret = p256::SecretKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
            serde_json::from_str(&secret.to_jwk_string()).map_err(|e| e.to_string())?
        }
        "RS256" => {
            let key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).map_err(|e| e.to_string())?;
            let [p, q] = [&key.primes()[0], &key.primes()[1]];
            let crt = |prime: &rsa::BigUint| b64(&(key.d() % (prime - 1u32)).to_bytes_be());
            let qi = key.qinv().and_then(|q| q.to_biguint()).map(|q| b64(&q.to_bytes_be())).unwrap_or_default();
            json!({
                "kty": "RSA",
                "n": b64(&key.n().to_bytes_be()),
                "e": b64(&key.e().to_bytes_be()),
                "d": b64(&key.d().to_bytes_be()),
                "p": b64(&p.to_bytes_be()),
                "q": b64(&q.to_bytes_be()),
                "dp": crt(p),
                "dq": crt(q),
                "qi": qi,
            })
        }
        other => return Err(format!("--alg {other}: use ES256 or RS256")),
    };
    let kid = kid.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    if keys.iter().any(|k| k.get("kid").and_then(Value::as_str) == Some(&kid)) {
        return Err(format!("a key with kid {kid} exists"));
    }
    if let Some(o) = jwk.as_object_mut() {
        o.insert("kid".into(), json!(kid));
        o.insert("alg".into(), json!(alg));
        o.insert("use".into(), json!("sig"));
    }
    keys.insert(0, jwk);
    let text = serde_json::to_string_pretty(&json!({ "keys": keys })).map_err(|e| e.to_string())?;
    write_private(path, &text)?;
    Ok(kid)
}

#[cfg(unix)]
fn write_private(path: &Path, text: &str) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    file.write_all(text.as_bytes()).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_keeps_old_tokens_verifying_and_publishes_no_private_part() {
        let dir = std::env::temp_dir().join(format!("fluxbase-signing-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("keys.json");
        let first = generate(&path, Some("k1".into()), "ES256").unwrap();
        let old = SigningKeys::load(&path).unwrap();
        let token = old.sign(&json!({ "sub": "x", "exp": 4_000_000_000u64 })).unwrap();
        generate(&path, None, "RS256").unwrap();
        let keys = SigningKeys::load(&path).unwrap();
        assert_ne!(keys.current.0, first, "the new key signs");
        assert_eq!(keys.algorithm(), "RS256");
        let rsa_token = keys.sign(&json!({ "sub": "y" })).unwrap();
        let rsa_kid = jsonwebtoken::decode_header(&rsa_token).unwrap().kid.unwrap();
        let VerifyingKey { algorithm: alg, key, .. } =
            keys.verifying_keys().unwrap().into_iter().find(|k| k.kid.as_deref() == Some(rsa_kid.as_str())).unwrap();
        assert_eq!(alg, Algorithm::RS256);
        let mut validation = jsonwebtoken::Validation::new(alg);
        validation.required_spec_claims.clear();
        assert!(jsonwebtoken::decode::<Value>(&rsa_token, &key, &validation).is_ok());
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.kid.as_deref(), Some("k1"));
        let VerifyingKey { algorithm: alg, key, .. } =
            keys.verifying_keys().unwrap().into_iter().find(|k| k.kid.as_deref() == Some("k1")).unwrap();
        let mut validation = jsonwebtoken::Validation::new(alg);
        validation.required_spec_claims.clear();
        assert!(jsonwebtoken::decode::<Value>(&token, &key, &validation).is_ok());
        assert!(keys.public_jwks().iter().all(|k| k.get("d").is_none()));
        assert!(generate(&path, Some("k1".into()), "ES256").is_err());
        assert!(generate(&path, None, "HS256").is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn gotrue_bare_arrays_sign_with_the_key_marked_sign() {
        let dir = std::env::temp_dir().join(format!("fluxbase-signing-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let ours = dir.join("ours.json");
        generate(&ours, Some("old".into()), "ES256").unwrap();
        generate(&ours, Some("new".into()), "ES256").unwrap();
        let set: Value = serde_json::from_str(&std::fs::read_to_string(&ours).unwrap()).unwrap();
        let (mut newer, mut older) = (set["keys"][0].clone(), set["keys"][1].clone());
        // As `supabase gen signing-key` writes them: the signer second, an
        // old key public-only, and the legacy symmetric key.
        newer["key_ops"] = json!(["sign", "verify"]);
        older["key_ops"] = json!(["verify"]);
        older.as_object_mut().unwrap().remove("d");
        let array = json!([older, { "kty": "oct", "kid": "legacy", "k": "c2VjcmV0" }, newer]);
        let path = dir.join("gotrue.json");
        std::fs::write(&path, array.to_string()).unwrap();
        let keys = SigningKeys::load(&path).unwrap();
        assert_eq!(keys.current.0, "new");
        assert_eq!(keys.public_jwks().len(), 2, "the oct key is skipped");
        assert_eq!(keys.verifying_keys().unwrap().len(), 2);
        let no_signer = json!([older]);
        std::fs::write(&path, no_signer.to_string()).unwrap();
        assert!(SigningKeys::load(&path).is_err(), "a public key cannot sign");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
