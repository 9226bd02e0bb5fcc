//! `Idempotency-Key` on REST writes: a retried request with the same key and
//! the same content gets the first response and writes nothing twice; the
//! same key with different content is a 422. Keys are scoped to the role and
//! the user (`sub`) and kept `fluxbase.idempotency_ttl` seconds.
//!
//! The key is claimed before the write, in the same transaction: a concurrent
//! retry blocks on the key's row until the first request commits, then
//! replays its response. A write that fails rolls its claim back with it.
use pgrx::prelude::*;
use serde_json::Value;

use crate::claims::{self, Claims};
use crate::error::RestError;
use crate::gucs;
use crate::rest::request::{ApiRequest, HttpRequest};
use crate::rest::{fnv1a, Response, FNV_OFFSET};

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
    let scope = format!("{}:{}", claims.role().unwrap_or(""), claims.sub().unwrap_or(""));
    let ttl = gucs::IDEMPOTENCY_TTL.get();
    // Insert the claim, or take over an expired one; a live one comes back.
    let existing = Spi::connect_mut(|client| {
        client.update(
            "DELETE FROM fluxbase.idempotency_keys WHERE scope = $1 AND key = $2 \
             AND created_at < now() - make_interval(secs => $3)",
            None,
            &[scope.as_str().into(), key.into(), (ttl as f64).into()],
        )?;
        let inserted = client.update(
            "INSERT INTO fluxbase.idempotency_keys (scope, key, request_hash, status, headers, body) \
             VALUES ($1, $2, $3, 0, '{}', '') ON CONFLICT (scope, key) DO NOTHING",
            None,
            &[scope.as_str().into(), key.into(), hash.as_str().into()],
        )?;
        if inserted.len() == 1 {
            return Ok::<_, pgrx::spi::SpiError>(None);
        }
        let row = client
            .select(
                "SELECT request_hash, status, headers::text, body FROM fluxbase.idempotency_keys WHERE scope = $1 AND key = $2",
                Some(1),
                &[scope.as_str().into(), key.into()],
            )?
            .first();
        Ok(Some((
            row.get::<String>(1)?.unwrap_or_default(),
            row.get::<i32>(2)?.unwrap_or(0),
            row.get::<String>(3)?.unwrap_or_default(),
            row.get::<String>(4)?.unwrap_or_default(),
        )))
    })
    .unwrap_or_else(|e| pgrx::error!("idempotency key lookup failed: {e}"));
    match existing {
        None => Ok(Some(Outcome::Fresh(Claim { scope, key: key.to_string() }))),
        Some((stored_hash, _, _, _)) if stored_hash != hash => Err(RestError::IdempotencyMismatch),
        Some((_, status, headers, body)) => {
            let mut headers: Value = serde_json::from_str(&headers).unwrap_or(Value::Object(Default::default()));
            if let Some(map) = headers.as_object_mut() {
                map.insert("Idempotent-Replayed".into(), Value::String("true".into()));
            }
            Ok(Some(Outcome::Replay(Response { status: status as u16, headers, body })))
        }
    }
}

/// Keeps the response of the claimed write for later retries.
pub fn store(claim: &Claim, response: &Response) {
    // The write ran as the request's role; the key table is the session user's.
    claims::set_local(c"role", "none");
    Spi::connect_mut(|client| {
        client.update(
            "UPDATE fluxbase.idempotency_keys SET status = $3, headers = $4::json, body = $5 WHERE scope = $1 AND key = $2",
            None,
            &[
                claim.scope.as_str().into(),
                claim.key.as_str().into(),
                (response.status as i32).into(),
                response.headers.to_string().into(),
                response.body.as_str().into(),
            ],
        )
        .map(|_| ())
    })
    .unwrap_or_else(|e| pgrx::error!("storing the idempotent response failed: {e}"));
}
