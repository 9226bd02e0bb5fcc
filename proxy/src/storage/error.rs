//! Storage's refusals in storage-api's words (its `ERRORS` catalogue:
//! `statusCode`, `code`, `error`, `message`), and the mapping of database
//! failures onto them. Rendered by `http::error_response` on the Storage
//! surface: HTTP 400 unless the status is a 5xx, as storage-api answers.
use crate::error::ApiError;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("Bucket not found")]
    NoSuchBucket,
    #[error("Object not found")]
    NoSuchKey,
    #[error("The resource already exists")]
    KeyAlreadyExists,
    #[error("The resource already exists")]
    BucketAlreadyExists,
    #[error("The bucket you tried to delete is not empty")]
    BucketNotEmpty,
    #[error("Bucket name invalid")]
    InvalidBucketName(String),
    #[error("Invalid key: {0}")]
    InvalidKey(String),
    #[error("Invalid file size format, hint: use 20GB / 20MB / 30KB / 3B")]
    InvalidFileSizeLimit,
    #[error("{0}")]
    InvalidRequest(String),
    #[error("mime type {0} is not supported")]
    InvalidMimeType(String),
    #[error("The object exceeded the maximum allowed size")]
    EntityTooLarge,
    #[error("{0}")]
    AccessDenied(String),
    #[error("Invalid signature")]
    InvalidSignature,
    #[error("The provided token has expired.")]
    ExpiredToken,
    #[error("{0}")]
    InvalidUploadSignature(String),
    #[error("Missing Required Parameter {0}")]
    MissingParameter(&'static str),
    #[error("The feature {0} is not enabled for this resource")]
    FeatureNotEnabled(&'static str),
    /// What the image renderer refused (imgproxy's status and words, as
    /// storage-api passes them on).
    #[error("{message}")]
    ImageProcessing { status: u16, message: String },
    #[error("The connection to the database timed out")]
    DatabaseTimeout,
    #[error("database error: {0}")]
    Database(String),
    #[error("Internal server error: {0}")]
    Internal(String),
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> ApiError {
        use StorageError::*;
        let (status, code, error): (u16, &'static str, &'static str) = match &e {
            NoSuchBucket => (404, "NoSuchBucket", "Bucket not found"),
            NoSuchKey => (404, "NoSuchKey", "not_found"),
            KeyAlreadyExists => (409, "KeyAlreadyExists", "Duplicate"),
            BucketAlreadyExists => (409, "BucketAlreadyExists", "Duplicate"),
            BucketNotEmpty => (409, "ResourceNotEmpty", ""),
            InvalidBucketName(_) => (400, "InvalidBucketName", "Invalid Input"),
            InvalidKey(_) => (400, "InvalidKey", ""),
            InvalidFileSizeLimit | InvalidRequest(_) => (400, "InvalidRequest", ""),
            InvalidMimeType(_) => (415, "InvalidMimeType", "invalid_mime_type"),
            EntityTooLarge => (413, "EntityTooLarge", "Payload too large"),
            AccessDenied(_) => (403, "AccessDenied", "Unauthorized"),
            InvalidSignature => (400, "InvalidSignature", ""),
            ExpiredToken => (400, "ExpiredToken", ""),
            InvalidUploadSignature(_) => (400, "InvalidUploadSignature", ""),
            MissingParameter(_) => (400, "MissingParameter", ""),
            FeatureNotEnabled(_) => (409, "FeatureNotEnabled", ""),
            ImageProcessing { status, .. } => (*status, "InvalidRequest", ""),
            DatabaseTimeout => (544, "DatabaseTimeout", ""),
            Database(detail) => {
                tracing::error!(error = %detail, "storage database error");
                return ApiError::Storage {
                    status: 500,
                    code: "DatabaseError",
                    error: "",
                    message: "database error".into(),
                };
            }
            Internal(detail) => {
                tracing::error!(error = %detail, "storage internal error");
                return ApiError::Storage {
                    status: 500,
                    code: "InternalError",
                    error: "",
                    message: "Internal server error".into(),
                };
            }
        };
        ApiError::Storage { status, code, error, message: e.to_string() }
    }
}

/// What a statement's failure means to a storage client: a policy that
/// refused (42501, or a `WITH CHECK` that failed), a duplicate, a bucket
/// still in use, a timeout; anything else is logged and answered 500.
/// `duplicate` names the resource a unique violation is about.
pub fn db_error(err: tokio_postgres::Error, duplicate: StorageError) -> ApiError {
    let Some(db) = err.as_db_error() else {
        return ApiError::DatabaseUnavailable(err.to_string());
    };
    match db.code().code() {
        "42501" => StorageError::AccessDenied(db.message().to_string()).into(),
        "23505" => duplicate.into(),
        "23503" if db.table() == Some("objects") && db.message().contains("objects_bucketId_fkey") => {
            // Deleting a bucket that still has objects; inserting into one
            // that does not exist.
            if db.message().starts_with("update or delete") {
                StorageError::BucketNotEmpty.into()
            } else {
                StorageError::NoSuchBucket.into()
            }
        }
        "23514" => StorageError::InvalidBucketName(db.message().to_string()).into(),
        "57014" => StorageError::DatabaseTimeout.into(),
        "FS400" => StorageError::InvalidUploadSignature(db.message().to_string()).into(),
        code if code.starts_with("08") || code == "57P01" => ApiError::DatabaseUnavailable(db.message().to_string()),
        code => StorageError::Database(format!("{code}: {}", db.message())).into(),
    }
}

/// A connection or pool failure while talking to Postgres outside a statement.
pub fn pg(err: tokio_postgres::Error) -> ApiError {
    db_error(err, StorageError::KeyAlreadyExists)
}
