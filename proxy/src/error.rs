//! The proxy's error type, by layer: the request itself (`Request`,
//! `BodyTooLarge`, `NotFound`), the caller's credentials (`Jwt`,
//! `InvalidApiKey`), the database (`Database` for a statement's failure,
//! `DatabaseUnavailable`/`PoolTimeout` for the connection), a service's own
//! refusals (`Auth`, `RateLimited`, `WeakPassword`) and `Internal`. Each
//! variant has one HTTP status and one code from docs/errors.md; the
//! rendering follows the surface the request came in on, so Supabase
//! clients find the fields they read. Internals are logged, never sent.
use http::{HeaderValue, StatusCode};
use serde_json::{json, Value};
use thiserror::Error;

/// Which service's error shape to render.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// PostgREST: `{code, message, details, hint}`.
    Rest,
    /// Supabase Auth: `{code: <status>, error_code, msg}`.
    Auth,
    /// Fluxbase's own: `{code, message}`.
    Fluxbase,
    /// Supabase Storage: `{statusCode: "<status>", code, error, message}`,
    /// answered with HTTP 400 unless the status is a 5xx (storage-api's
    /// error handler does the same).
    Storage,
}

#[derive(Debug, Error)]
pub enum ApiError {
    #[error("route not found")]
    NotFound,
    #[error("service not available in this release: {0}")]
    NotImplemented(&'static str),
    #[error("request body exceeds {limit} bytes")]
    BodyTooLarge { limit: usize },
    /// The request is malformed in a way the proxy sees before any service
    /// does (a body that is not UTF-8, a body that could not be read).
    #[error("{message}")]
    Request { status: StatusCode, code: &'static str, message: String },
    #[error("request timed out after {ms} ms")]
    Timeout { ms: u64 },
    #[error("invalid API key")]
    InvalidApiKey,
    #[error("{message}")]
    Jwt { code: &'static str, message: String },
    #[error("database unavailable: {0}")]
    DatabaseUnavailable(String),
    /// No pooled connection came free within `database.pool_timeout_ms`.
    #[error("Timed out acquiring connection from connection pool.")]
    PoolTimeout,
    #[error("{message}")]
    Database { status: StatusCode, code: String, message: String, details: Option<String>, hint: Option<String> },
    /// A response fully formed by the extension (status, PostgREST body).
    #[error("internal error: {0}")]
    Internal(String),
    /// An `/auth/v1` refusal, with Supabase Auth's `error_code`.
    #[error("{msg}")]
    Auth { status: StatusCode, error_code: String, msg: String },
    /// A `/storage/v1` refusal in storage-api's vocabulary: `status` is the
    /// `statusCode` of the body, `code` storage-api's `ErrorCode`, `error`
    /// its older short name.
    #[error("{message}")]
    Storage { status: u16, code: &'static str, error: &'static str, message: String },
    /// A rate limit was hit: 429 with `Retry-After`.
    #[error("{msg}")]
    RateLimited { retry_after: u64, msg: String },
    /// A new password that policy refuses: 422 `weak_password` with
    /// Supabase's `weak_password.reasons` (`length`, `characters`, `pwned`).
    #[error("{msg}")]
    WeakPassword { msg: String, reasons: Vec<&'static str> },
}

impl ApiError {
    pub fn auth(status: u16, error_code: &str, msg: impl Into<String>) -> ApiError {
        ApiError::Auth {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
            error_code: error_code.to_string(),
            msg: msg.into(),
        }
    }
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            ApiError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Request { status, .. } => *status,
            ApiError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ApiError::InvalidApiKey | ApiError::Jwt { .. } => StatusCode::UNAUTHORIZED,
            ApiError::DatabaseUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::PoolTimeout => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Database { status, .. } => *status,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Auth { status, .. } => *status,
            ApiError::Storage { status, .. } if *status >= 500 => {
                StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            }
            ApiError::Storage { .. } => StatusCode::BAD_REQUEST,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::WeakPassword { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        }
    }

    pub fn code(&self) -> &str {
        match self {
            ApiError::NotFound => "FB001",
            ApiError::NotImplemented(_) => "FB002",
            ApiError::BodyTooLarge { .. } => "FB003",
            ApiError::Request { code, .. } => code,
            ApiError::Timeout { .. } => "FB005",
            ApiError::InvalidApiKey => "FB010",
            ApiError::Jwt { code, .. } => code,
            ApiError::DatabaseUnavailable(_) => "PGRST001",
            ApiError::PoolTimeout => "PGRST003",
            ApiError::Database { code, .. } => code,
            ApiError::Internal(_) => "FB000",
            ApiError::Auth { error_code, .. } => error_code,
            ApiError::Storage { code, .. } => code,
            ApiError::RateLimited { .. } => "FB006",
            ApiError::WeakPassword { .. } => "weak_password",
        }
    }

    /// Supabase Auth's `error_code` vocabulary for the same condition.
    fn auth_error_code(&self) -> &str {
        match self {
            ApiError::Auth { error_code, .. } => error_code,
            ApiError::RateLimited { .. } => "over_request_rate_limit",
            ApiError::WeakPassword { .. } => "weak_password",
            ApiError::NotFound => "not_found",
            ApiError::NotImplemented(_) => "not_implemented",
            ApiError::BodyTooLarge { .. } => "request_too_large",
            ApiError::Request { .. } => "validation_failed",
            ApiError::Timeout { .. } => "request_timeout",
            ApiError::InvalidApiKey => "no_authorization",
            ApiError::Jwt { .. } => "bad_jwt",
            ApiError::DatabaseUnavailable(_)
            | ApiError::PoolTimeout
            | ApiError::Database { .. }
            | ApiError::Storage { .. }
            | ApiError::Internal(_) => "unexpected_failure",
        }
    }

    /// The message a client may see; internal details stay in the logs.
    fn public_message(&self) -> String {
        match self {
            ApiError::Internal(_) => "Internal server error".into(),
            ApiError::DatabaseUnavailable(_) => "Database client error. Retrying the connection.".into(),
            ApiError::InvalidApiKey => "Invalid API key".into(),
            other => other.to_string(),
        }
    }

    pub fn body(&self, surface: Surface, request_id: &str) -> Value {
        let (details, hint) = match self {
            ApiError::Database { details, hint, .. } => (details.clone(), hint.clone()),
            ApiError::InvalidApiKey => {
                (None, Some("Double check the apikey header: it must be one of the configured keys.".to_string()))
            }
            _ => (None, None),
        };
        match surface {
            // PostgREST's body is exactly code, message, details and hint; the
            // request id travels in `X-Request-Id`. Fluxbase's own FB codes
            // keep it in the body too.
            Surface::Rest if self.code().starts_with("FB") => json!({
                "code": self.code(),
                "message": self.public_message(),
                "details": details,
                "hint": hint,
                "request_id": request_id,
            }),
            Surface::Rest => json!({
                "code": self.code(),
                "message": self.public_message(),
                "details": details,
                "hint": hint,
            }),
            Surface::Auth => {
                let mut body = json!({
                    "code": self.status().as_u16(),
                    "error_code": self.auth_error_code(),
                    "msg": self.public_message(),
                    "request_id": request_id,
                });
                if let ApiError::WeakPassword { reasons, .. } = self {
                    body["weak_password"] = json!({ "reasons": reasons });
                }
                body
            }
            Surface::Storage => {
                let (status, code, error) = match self {
                    ApiError::Storage { status, error, .. } => (status.to_string(), self.code(), *error),
                    other => (other.status().as_u16().to_string(), other.code(), other.code()),
                };
                json!({
                    "statusCode": status,
                    "code": code,
                    "error": if error.is_empty() { code } else { error },
                    "message": self.public_message(),
                    "request_id": request_id,
                })
            }
            Surface::Fluxbase => json!({
                "code": self.code(),
                "message": self.public_message(),
                "status": self.status().as_u16(),
                "hint": hint,
                "request_id": request_id,
            }),
        }
    }

    /// Extra headers an error carries (RFC 6750 for token errors).
    pub fn www_authenticate(&self) -> Option<HeaderValue> {
        match self {
            ApiError::Jwt { message, .. } => HeaderValue::from_str(&format!(
                "Bearer error=\"invalid_token\", error_description=\"{}\"",
                message.replace('"', "'")
            ))
            .ok(),
            _ => None,
        }
    }

    /// `Retry-After` of a rate-limited request, seconds.
    pub fn retry_after(&self) -> Option<HeaderValue> {
        match self {
            ApiError::RateLimited { retry_after, .. } => HeaderValue::from_str(&retry_after.to_string()).ok(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_keep_the_fields_clients_read() {
        let e = ApiError::Jwt { code: "PGRST303", message: "JWT expired".into() };
        let rest = e.body(Surface::Rest, "r1");
        assert_eq!(rest["code"], "PGRST303");
        assert_eq!(rest["message"], "JWT expired");
        // PostgREST's four members, no more (the id is in X-Request-Id).
        assert_eq!(rest.as_object().unwrap().len(), 4, "{rest}");
        let db = ApiError::Database {
            status: StatusCode::CONFLICT,
            code: "23505".into(),
            message: "duplicate key value violates unique constraint \"t_pkey\"".into(),
            details: Some("Key (id)=(1) already exists.".into()),
            hint: None,
        };
        let body = db.body(Surface::Rest, "r1");
        let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["code", "details", "hint", "message"]);
        assert_eq!(ApiError::NotFound.body(Surface::Rest, "r1")["request_id"], "r1");
        let auth = e.body(Surface::Auth, "r1");
        assert_eq!(auth["code"], 401);
        assert_eq!(auth["error_code"], "bad_jwt");
        let internal = ApiError::Internal("secret detail".into()).body(Surface::Fluxbase, "r2");
        assert!(!internal.to_string().contains("secret detail"));
    }
}
