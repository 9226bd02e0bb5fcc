//! `Idempotency-Key` on REST writes: a retried request with the same key and
//! the same content gets the first response and writes nothing twice; the
//! same key with different content is a 422. Keys are scoped to the caller
//! (role, `sub`, and the proxy's fingerprint of the credential: API key and
//! client address for the anonymous role, the session for a user) and kept
//! `fluxbase.idempotency_ttl` seconds.
//!
//! The key is claimed before the write, in the same transaction: a concurrent
//! retry blocks on the key's row until the first request commits, then
//! replays its response. A write that fails rolls its claim back with it.
//! The key table is read and written through execute.rs.
use fluxbase_rest::error::RestError;
use fluxbase_rest::hash::{fnv1a, FNV_OFFSET};
use fluxbase_rest::request::{ApiRequest, HttpRequest};
use fluxbase_rest::response::Response;
use serde_json::Value;

use crate::claims::{self, Claims};
use crate::gucs;
use crate::rest::execute;

pub const MAX_KEY_LENGTH: usize = 255;

pub struct Claim {
    scope: String,
    key: String,
}

pub enum Outcome {
    /// First use of the key: do the write, then `store` its response.
    Fresh(Claim),
    Replay(Response),
}

fn fnv(parts: &[&str]) -> String {
    let hash = parts.iter().fold(FNV_OFFSET, |h, part| fnv1a(fnv1a(h, part.as_bytes()), &[0]));
    format!("{hash:016x}")
}

/// Claims the key of a write, or finds the response to replay.
pub fn claim(api: &ApiRequest, request: &HttpRequest<'_>, claims: &Claims<'_>) -> Result<Option<Outcome>, RestError> {
    let Some(key) = request.header("idempotency-key") else { return Ok(None) };
    if api.method.is_read() {
        return Ok(None);
    }
    if key.is_empty() || key.len() > MAX_KEY_LENGTH {
        return Err(RestError::InvalidRequest(format!("Idempotency-Key must be 1 to {MAX_KEY_LENGTH} characters")));
    }
    let header = |name: &str| request.header(name).unwrap_or("");
    let hash = fnv(&[
        api.method.as_str(),
        &request.path,
        &request.query,
        request.body.as_deref().unwrap_or(""),
        header("prefer"),
        header("accept"),
        header("content-type"),
        header("content-profile"),
    ]);
    // The proxy's fingerprint of the caller (API key and address for the
    // anonymous role, whose key all clients share; the session for a user).
    // Called from SQL, without one, the claims alone scope the key.
    let scope = match request.idempotency_scope.as_deref() {
        Some(caller) => format!("{}:{}:{caller}", claims.role().unwrap_or(""), claims.sub().unwrap_or("")),
        None => format!("{}:{}", claims.role().unwrap_or(""), claims.sub().unwrap_or("")),
    };
    let ttl = gucs::IDEMPOTENCY_TTL.get();
    match execute::claim_idempotency_key(&scope, key, &hash, ttl as f64) {
        None => Ok(Some(Outcome::Fresh(Claim { scope, key: key.to_string() }))),
        Some(kept) if kept.request_hash != hash => Err(RestError::IdempotencyMismatch),
        Some(kept) => {
            let mut headers: Value = serde_json::from_str(&kept.headers).unwrap_or(Value::Object(Default::default()));
            if let Some(map) = headers.as_object_mut() {
                map.insert("Idempotent-Replayed".into(), Value::String("true".into()));
            }
            Ok(Some(Outcome::Replay(Response { status: kept.status as u16, headers, body: kept.body })))
        }
    }
}

/// Keeps the response of the claimed write for later retries.
pub fn store(claim: &Claim, response: &Response) {
    // The write ran as the request's role; the key table is the session user's.
    claims::set_local(c"role", "none");
    execute::store_idempotent_response(&claim.scope, &claim.key, response);
}
