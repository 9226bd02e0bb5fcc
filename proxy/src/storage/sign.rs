//! Signed URLs as storage-api makes them: an HS256 JWT over the project's
//! JWT secret (`jwt.secret`) whose `url` claim is `<bucket>/<name>`; a
//! download token may carry image `transformations`, an upload token the
//! `owner` it uploads as, `upsert`, and an id (`jti`) so it works once.
use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::error::StorageError;

#[derive(Serialize, Deserialize)]
pub struct Token {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upsert: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transformations: Option<String>,
    pub iat: u64,
    pub exp: u64,
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn secret(secret: Option<&str>) -> Result<&str, StorageError> {
    secret.ok_or_else(|| StorageError::Internal("signed URLs need jwt.secret".into()))
}

/// A token for `url` valid `expires_in` seconds.
pub fn sign(key: Option<&str>, mut token: Token, expires_in: u64) -> Result<String, StorageError> {
    token.iat = now();
    token.exp = token.iat.saturating_add(expires_in);
    encode(&Header::new(Algorithm::HS256), &token, &EncodingKey::from_secret(secret(key)?.as_bytes()))
        .map_err(|e| StorageError::Internal(e.to_string()))
}

/// The token's claims if it is ours, unexpired and for `url`.
pub fn verify(key: Option<&str>, token: &str, url: &str) -> Result<Token, StorageError> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = 0;
    validation.validate_aud = false;
    validation.required_spec_claims = ["exp"].into_iter().map(str::to_string).collect();
    let data =
        decode::<Token>(token, &DecodingKey::from_secret(secret(key)?.as_bytes()), &validation).map_err(|e| match e
            .kind()
        {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => StorageError::ExpiredToken,
            _ => StorageError::InvalidSignature,
        })?;
    if data.claims.url != url {
        return Err(StorageError::InvalidSignature);
    }
    Ok(data.claims)
}

pub fn token(url: String) -> Token {
    Token { url, owner: None, upsert: None, jti: None, transformations: None, iat: 0, exp: 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: Option<&str> = Some("0123456789abcdef0123456789abcdef");

    #[test]
    fn a_token_opens_only_its_own_url_until_it_expires() {
        let t = sign(KEY, token("avatars/a.png".into()), 60).unwrap();
        assert_eq!(verify(KEY, &t, "avatars/a.png").unwrap().url, "avatars/a.png");
        assert!(matches!(verify(KEY, &t, "avatars/b.png"), Err(StorageError::InvalidSignature)));
        assert!(matches!(
            verify(Some("another-secret-another-secret-xx"), &t, "avatars/a.png"),
            Err(StorageError::InvalidSignature)
        ));
        assert!(matches!(verify(KEY, "garbage", "avatars/a.png"), Err(StorageError::InvalidSignature)));
        let mut old = token("avatars/a.png".into());
        old.iat = now() - 100;
        old.exp = now() - 10;
        let expired =
            encode(&Header::new(Algorithm::HS256), &old, &EncodingKey::from_secret(KEY.unwrap().as_bytes())).unwrap();
        assert!(matches!(verify(KEY, &expired, "avatars/a.png"), Err(StorageError::ExpiredToken)));
    }
}
