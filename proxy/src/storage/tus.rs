//! `/storage/v1/upload/resumable`: TUS 1.0 resumable uploads as Supabase
//! Storage serves them (storage-api on @tus/server): creation (also with
//! upload), HEAD, PATCH, termination and expiration, plus the signed variant
//! under `…/resumable/sign` (`x-signature`: a signed upload URL's token).
//!
//! An upload's id is base64url of `<bucket>/<name>/<version>`, as
//! storage-api makes it; the version becomes the object's version when the
//! upload completes. Until then the bytes are staged on the proxy's disk, in
//! `<storage.root>/.tus/`:
//! - `<version>.info`: what the creation said (JSON, written once: temporary
//!   file, fsync, rename: it exists whole or not at all);
//! - `<version>.part`: the bytes received. Its length *is* the offset: a
//!   PATCH appends, fsyncs, and only then answers the new offset, so after a
//!   crash or a restart HEAD answers what really is on disk and the client
//!   resumes from there. No second record can disagree with the bytes.
//!
//! A PATCH holds an exclusive lock on the `.part` (flock, dropped by the
//! kernel when a process dies), so two writers never interleave and the
//! sweeper leaves a live upload alone. The last PATCH hands the file to the
//! backend (`put_file`: a hard link on the local disk, no copy) and commits
//! the row through the normal write path (`Call::commit_write`), as the
//! caller, so policies decide at completion as they did at creation
//! (`Call::precheck`).
use std::borrow::Cow;
use std::io::{Seek, SeekFrom, Write as _};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use futures_util::StreamExt;
use http::header::{self, HeaderValue};
use http::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::backend::{BackendError, ByteStream};
use super::error::StorageError;
use super::{key, rules, sign, Call, SharedBody, SignedUpload, Write, DRAIN_LIMIT};
use crate::error::ApiError;
use crate::http::{Body, Response};

const TUS_RESUMABLE: &str = "1.0.0";
const EXTENSIONS: &str = "creation,creation-with-upload,termination,expiration";
/// Where uploads live, as clients see it (storage-api's `tusPath` behind
/// Supabase's `/storage/v1`).
const PATH: &str = "/storage/v1/upload/resumable";
const OFFSET_OCTET_STREAM: &str = "application/offset+octet-stream";
/// @tus/server's `HEADERS`, which it allows and exposes, plus storage-api's
/// own allowed headers.
const TUS_HEADERS: &str = "Authorization, Content-Type, Location, Tus-Extension, Tus-Max-Size, Tus-Resumable, \
     Tus-Version, Upload-Concat, Upload-Defer-Length, Upload-Length, Upload-Metadata, Upload-Offset, \
     X-HTTP-Method-Override, X-Requested-With, X-Forwarded-Host, X-Forwarded-Proto, Forwarded";
const EXTRA_ALLOWED: &str = "X-Upsert, Upload-Expires, ApiKey, x-signature";
/// How long a request waits for another request's lock on one upload
/// (@tus/server's `lockDrainTimeout`).
const LOCK_WAIT: Duration = Duration::from_secs(3);
const LOCK_POLL: Duration = Duration::from_millis(50);
/// Staged files without their `.info` (a crash during creation) are swept
/// once this old.
const ORPHAN_AGE: Duration = Duration::from_secs(600);
const WRITE_BUFFER: usize = 1 << 20;
const CHUNKS_IN_FLIGHT: usize = 4;

/// A refusal as @tus/server answers it: a status and a text body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TusError {
    status: u16,
    body: Cow<'static, str>,
}

const fn refusal(status: u16, body: &'static str) -> TusError {
    TusError { status, body: Cow::Borrowed(body) }
}

// @tus/utils' `ERRORS`, word for word.
const MISSING_OFFSET: TusError = refusal(403, "Upload-Offset header required\n");
const INVALID_TERMINATION: TusError = refusal(400, "Cannot terminate an already completed upload");
const ERR_LOCK_TIMEOUT: TusError = refusal(500, "failed to acquire lock before timeout");
const INVALID_CONTENT_TYPE: TusError = refusal(403, "Content-Type header required\n");
const FILE_NOT_FOUND: TusError = refusal(404, "The file for this url was not found\n");
const INVALID_OFFSET: TusError = refusal(409, "Upload-Offset conflict\n");
const FILE_NO_LONGER_EXISTS: TusError = refusal(410, "The file for this url no longer exists\n");
const ERR_SIZE_EXCEEDED: TusError = refusal(413, "upload's size exceeded\n");
const ERR_MAX_SIZE_EXCEEDED: TusError = refusal(413, "Maximum size exceeded\n");
const INVALID_LENGTH: TusError = refusal(400, "Upload-Length or Upload-Defer-Length header required\n");
const INVALID_METADATA: TusError = refusal(
    400,
    "Upload-Metadata is invalid. It MUST consist of one or more comma-separated key-value pairs. The key and value \
     MUST be separated by a space. The key MUST NOT contain spaces and commas and MUST NOT be empty. The key SHOULD \
     be ASCII encoded and the value MUST be Base64 encoded. All keys MUST be unique",
);
const UNKNOWN_ERROR: TusError = refusal(500, "Something went wrong with that request\n");
const FILE_WRITE_ERROR: TusError = refusal(500, "Something went wrong receiving the file\n");
const UNSUPPORTED_CONCATENATION: TusError =
    refusal(501, "Concatenation extension is not (yet) supported. Disable parallel uploads in the tus client.\n");
const UNSUPPORTED_DEFER_LENGTH: TusError = refusal(501, "creation-defer-length extension is not (yet) supported.\n");
const TUS_RESUMABLE_REQUIRED: TusError = refusal(412, "Tus-Resumable Required\n");
// storage-api's `ERRORS.MetadataRequired`.
const METADATA_REQUIRED: TusError = refusal(400, "Metadata header is required");

impl From<ApiError> for TusError {
    /// storage-api's `onResponseError`: a storage refusal keeps its own
    /// status and message; anything else is logged and answered 500.
    fn from(e: ApiError) -> TusError {
        match e {
            ApiError::Storage { status, message, .. } if status < 500 => TusError { status, body: message.into() },
            other if other.status().is_client_error() => {
                TusError { status: other.status().as_u16(), body: other.to_string().into() }
            }
            other => {
                tracing::error!(error = %other, "storage: resumable upload failed");
                UNKNOWN_ERROR
            }
        }
    }
}

impl From<StorageError> for TusError {
    fn from(e: StorageError) -> TusError {
        ApiError::from(e).into()
    }
}

impl From<std::io::Error> for TusError {
    fn from(e: std::io::Error) -> TusError {
        tracing::error!(error = %e, "storage: resumable upload staging failed");
        FILE_WRITE_ERROR
    }
}

/// Where uploads are staged and how long they live.
pub struct Staging {
    dir: PathBuf,
    expiry: Duration,
}

/// What a creation said, kept beside the bytes.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Info {
    bucket: String,
    name: String,
    length: u64,
    /// `Upload-Metadata`, decoded, in the client's order.
    metadata: Vec<(String, Option<String>)>,
    /// Unix seconds.
    created: i64,
    expires: i64,
}

impl Info {
    fn meta(&self, k: &str) -> Option<&str> {
        self.metadata.iter().find(|(key, _)| key == k).and_then(|(_, v)| v.as_deref())
    }

    fn expired(&self) -> bool {
        chrono::Utc::now().timestamp() > self.expires
    }

    fn expires_header(&self) -> String {
        chrono::DateTime::from_timestamp(self.expires, 0)
            .unwrap_or_default()
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string()
    }

    /// The object's `Content-Type` (storage-api checks `contentType` only
    /// when given; here the default is checked too, so a bucket limited to
    /// some types never gets an untyped object).
    fn content_type(&self) -> String {
        self.meta("contentType").filter(|t| !t.is_empty()).unwrap_or("application/octet-stream").to_string()
    }

    /// storage-api's `onCreate`: digits become `max-age=<n>`, anything else
    /// `no-cache`.
    fn cache_control(&self) -> String {
        match self.meta("cacheControl") {
            Some(t) if !t.is_empty() && t.trim_start_matches('-').chars().all(|c| c.is_ascii_digit()) => {
                format!("max-age={t}")
            }
            _ => "no-cache".into(),
        }
    }

    /// The `metadata` key: user metadata as JSON, ignored when it is not.
    fn user_metadata(&self) -> Option<Value> {
        self.meta("metadata").and_then(|t| serde_json::from_str::<Value>(t).ok()).filter(Value::is_object)
    }
}

impl Staging {
    pub fn new(config: &crate::config::Storage) -> Staging {
        Staging { dir: config.root.join(".tus"), expiry: Duration::from_secs(config.resumable_expiry_seconds) }
    }

    fn info_path(&self, version: &uuid::Uuid) -> PathBuf {
        self.dir.join(format!("{version}.info"))
    }

    fn part_path(&self, version: &uuid::Uuid) -> PathBuf {
        self.dir.join(format!("{version}.part"))
    }

    /// A new upload: an empty, fsynced `.part`, then its `.info` renamed
    /// into place (the commit point of the creation).
    fn create(&self, version: &uuid::Uuid, info: &Info) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        std::fs::File::create(self.part_path(version))?.sync_all()?;
        let tmp = self.dir.join(format!("{version}.info.tmp"));
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&serde_json::to_vec(info).map_err(std::io::Error::other)?)?;
        file.sync_all()?;
        std::fs::rename(&tmp, self.info_path(version))?;
        std::fs::File::open(&self.dir)?.sync_all()
    }

    /// The upload's `.info` if it exists and belongs to `id`.
    fn info(&self, id: &UploadId) -> Result<Info, TusError> {
        let bytes = match std::fs::read(self.info_path(&id.version)) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(FILE_NOT_FOUND),
            Err(e) => return Err(e.into()),
        };
        let info: Info = serde_json::from_slice(&bytes).map_err(|_| FILE_NOT_FOUND)?;
        if info.bucket != id.bucket || info.name != id.name {
            return Err(FILE_NOT_FOUND);
        }
        Ok(info)
    }

    /// The upload's `.part`, open for writing and locked by this request,
    /// waiting up to `LOCK_WAIT` for another request to let go.
    async fn lock(&self, version: &uuid::Uuid) -> Result<std::fs::File, TusError> {
        let path = self.part_path(version);
        let file = match tokio::task::spawn_blocking(move || std::fs::OpenOptions::new().write(true).open(path)).await {
            Ok(Ok(file)) => file,
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => return Err(FILE_NOT_FOUND),
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => return Err(UNKNOWN_ERROR),
        };
        let deadline = tokio::time::Instant::now() + LOCK_WAIT;
        loop {
            if file.try_lock().is_ok() {
                return Ok(file);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ERR_LOCK_TIMEOUT);
            }
            tokio::time::sleep(LOCK_POLL).await;
        }
    }

    /// Removes an upload's files (its lock, if held, goes with the handle).
    fn remove(&self, version: &uuid::Uuid) {
        for path in [self.info_path(version), self.part_path(version)] {
            if let Err(e) = std::fs::remove_file(&path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %path.display(), error = %e, "storage: removing a staged upload failed");
                }
            }
        }
    }

    /// Removes expired uploads nobody is writing, and what a crash during a
    /// creation left; returns how many uploads went.
    pub fn sweep(&self) -> std::io::Result<usize> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        let mut removed = 0;
        for entry in entries {
            let entry = entry?;
            let file_name = entry.file_name();
            let Some(file_name) = file_name.to_str() else { continue };
            let Some((stem, ext)) = file_name.split_once('.') else { continue };
            let Ok(version) = uuid::Uuid::parse_str(stem) else { continue };
            // Gone meanwhile (its upload was removed a moment ago): skip.
            let Ok(modified) = entry.metadata().and_then(|m| m.modified()) else { continue };
            let old = modified.elapsed().unwrap_or_default() > ORPHAN_AGE;
            let gone = match ext {
                "info" => {
                    match std::fs::read(entry.path()).ok().and_then(|b| serde_json::from_slice::<Info>(&b).ok()) {
                        Some(info) => info.expired(),
                        None => old,
                    }
                }
                "part" => old && !self.info_path(&version).exists(),
                "info.tmp" => old,
                _ => false,
            };
            if !gone {
                continue;
            }
            // A writer holds the lock: leave it (its request ends soon).
            let held = std::fs::OpenOptions::new().write(true).open(self.part_path(&version));
            if let Ok(part) = &held {
                if part.try_lock().is_err() {
                    continue;
                }
            }
            if ext == "info.tmp" {
                let _ = std::fs::remove_file(entry.path());
            } else {
                self.remove(&version);
            }
            removed += 1;
        }
        Ok(removed)
    }

    /// Sweeps now and then every `expiry` (at most hourly).
    pub fn start_sweeper(self: Arc<Staging>) {
        let every = self.expiry.clamp(Duration::from_secs(1), Duration::from_secs(3600));
        tokio::spawn(async move {
            loop {
                let staging = self.clone();
                match tokio::task::spawn_blocking(move || staging.sweep()).await {
                    Ok(Ok(0)) => {}
                    Ok(Ok(n)) => tracing::info!(removed = n, "storage: removed expired resumable uploads"),
                    Ok(Err(e)) => tracing::warn!(error = %e, "storage: sweeping resumable uploads failed"),
                    Err(e) => tracing::warn!(error = %e, "storage: sweeping resumable uploads failed"),
                }
                tokio::time::sleep(every).await;
            }
        });
    }
}

/// `<bucket>/<name>/<version>`, base64url in URLs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct UploadId {
    bucket: String,
    name: String,
    version: uuid::Uuid,
}

impl UploadId {
    fn encode(&self) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(format!("{}/{}/{}", self.bucket, self.name, self.version))
    }

    fn decode(text: &str) -> Option<UploadId> {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).ok()?;
        let text = String::from_utf8(bytes).ok()?;
        let (bucket, rest) = text.split_once('/')?;
        let (name, version) = rest.rsplit_once('/')?;
        rules::bucket_id(bucket).ok()?;
        rules::object_name(name).ok()?;
        Some(UploadId { bucket: bucket.into(), name: name.into(), version: uuid::Uuid::parse_str(version).ok()? })
    }
}

/// `Upload-Metadata`: comma-separated `key base64value` pairs (or a bare
/// key), keys unique, as @tus/utils' `Metadata.parse` accepts them.
fn parse_metadata(header: &str) -> Option<Vec<(String, Option<String>)>> {
    if header.trim().is_empty() {
        return None;
    }
    let mut out: Vec<(String, Option<String>)> = Vec::new();
    for pair in header.split(',') {
        let tokens: Vec<&str> = pair.split(' ').collect();
        let (key, value) = match tokens.as_slice() {
            [key] => (*key, None),
            [key, value] => (*key, Some(*value)),
            _ => return None,
        };
        if key.is_empty() || out.iter().any(|(k, _)| k == key) {
            return None;
        }
        let value = match value {
            None => None,
            Some(v) => {
                let valid = v.len() % 4 == 0
                    && v.trim_end_matches('=').chars().all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '/')
                    && v.len() - v.trim_end_matches('=').len() <= 2;
                if !valid {
                    return None;
                }
                let bytes = base64::engine::general_purpose::STANDARD.decode(v).ok()?;
                Some(String::from_utf8_lossy(&bytes).into_owned())
            }
        };
        out.push((key.to_string(), value));
    }
    Some(out)
}

fn stringify_metadata(metadata: &[(String, Option<String>)]) -> String {
    metadata
        .iter()
        .map(|(k, v)| match v {
            Some(v) => format!("{k} {}", base64::engine::general_purpose::STANDARD.encode(v)),
            None => k.clone(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The header names whose values @tus/server's `HeaderValidator` refuses.
fn invalid_headers(method: &Method, headers: &http::HeaderMap) -> Vec<String> {
    let integer = |v: &str| !v.is_empty() && v.chars().all(|c| c.is_ascii_digit()) && (v == "0" || !v.starts_with('0'));
    let mut names: Vec<String> = Vec::new();
    for (name, value) in headers {
        let Ok(v) = value.to_str() else { continue };
        let ok = match name.as_str() {
            "upload-offset" | "upload-length" => integer(v) && v.parse::<u64>().is_ok(),
            "upload-defer-length" => v == "1",
            "upload-metadata" => parse_metadata(v).is_some(),
            "x-forwarded-proto" => v == "http" || v == "https",
            "tus-version" | "tus-resumable" => v == TUS_RESUMABLE,
            "content-type" if method == Method::PATCH => v == OFFSET_OCTET_STREAM,
            "upload-concat" => v == "partial" || v.starts_with("final;"),
            _ => true,
        };
        if !ok && !names.iter().any(|n| n == name.as_str()) {
            names.push(name.as_str().to_string());
        }
    }
    names
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Serves `/upload/resumable[/sign][/<id>]`; `rest` is the path after
/// `resumable`.
pub(super) async fn handle(
    call: &Call<'_>,
    staging: &Arc<Staging>,
    method: &Method,
    rest: &[&str],
    body: ByteStream,
) -> Result<Response, ApiError> {
    let (signed, rest) = match rest.split_first() {
        Some((&"sign", rest)) => (true, rest),
        _ => (false, rest),
    };
    let id = match rest {
        [] | [""] => None,
        [id] => Some(*id),
        _ => return Err(ApiError::NotFound),
    };
    if !matches!(*method, Method::OPTIONS | Method::POST | Method::HEAD | Method::PATCH | Method::DELETE) {
        return Err(ApiError::NotFound);
    }
    let tus = Tus { call, staging, signed };
    let body = SharedBody::new(body);
    let invalid = invalid_headers(method, call.headers);
    let answer = match (method, id) {
        (&Method::OPTIONS, _) => Ok(tus.options()),
        // Every other request states the protocol version it speaks.
        _ if call.header("tus-resumable").is_none() => Err(TUS_RESUMABLE_REQUIRED),
        _ if !invalid.is_empty() => {
            Err(TusError { status: 400, body: format!("Invalid {}\n", invalid.join(" ")).into() })
        }
        (&Method::POST, None) => tus.create(body.clone().boxed()).await,
        (&Method::POST, Some(_)) => Err(FILE_NOT_FOUND),
        (&Method::HEAD, Some(id)) => tus.head(id).await,
        (&Method::PATCH, Some(id)) => tus.patch(id, body.clone().boxed()).await,
        (&Method::DELETE, Some(id)) => tus.terminate(id).await,
        _ => Err(FILE_NOT_FOUND),
    };
    let mut response = match answer {
        Ok(response) => response,
        Err(e) => {
            // The client may still be sending: read and drop the rest, so
            // it reads this answer rather than a reset connection.
            body.drain(DRAIN_LIMIT).await;
            let response = text(e.status, e.body.into_owned());
            if e.status >= 500 && e.status != 501 {
                tracing::warn!(status = e.status, "storage: resumable upload refused");
            }
            response
        }
    };
    let headers = response.headers_mut();
    headers.insert("tus-resumable", HeaderValue::from_static(TUS_RESUMABLE));
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(concat!(
            "Authorization, Content-Type, Location, Tus-Extension, Tus-Max-Size, Tus-Resumable, Tus-Version, ",
            "Upload-Concat, Upload-Defer-Length, Upload-Length, Upload-Metadata, Upload-Offset, ",
            "X-HTTP-Method-Override, X-Requested-With, X-Forwarded-Host, X-Forwarded-Proto, Forwarded, ",
            "Upload-Expires, Tus-Complete, x-request-id"
        )),
    );
    Ok(response)
}

fn text(status: u16, body: String) -> Response {
    http::Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Body::full(body))
        .expect("static response parts")
}

fn no_content(headers: Vec<(&'static str, String)>, status: StatusCode) -> Response {
    let mut builder = http::Response::builder().status(status);
    for (name, value) in headers {
        if let Ok(v) = HeaderValue::from_str(&value) {
            builder = builder.header(name, v);
        }
    }
    builder.body(Body::empty()).expect("static response parts")
}

/// One TUS request.
struct Tus<'a, 'c> {
    call: &'a Call<'c>,
    staging: &'a Arc<Staging>,
    /// Under `/sign`: authorised by `x-signature`, not by policies.
    signed: bool,
}

impl Tus<'_, '_> {
    fn options(&self) -> Response {
        no_content(
            vec![
                ("tus-version", TUS_RESUMABLE.into()),
                ("tus-extension", EXTENSIONS.into()),
                ("tus-max-size", self.call.file_size_limit().to_string()),
                ("access-control-allow-methods", "POST, HEAD, PATCH, OPTIONS, DELETE".into()),
                ("access-control-allow-headers", format!("{TUS_HEADERS}, {EXTRA_ALLOWED}")),
                ("access-control-max-age", "86400".into()),
            ],
            StatusCode::NO_CONTENT,
        )
    }

    /// Who the write is made as: a signed upload token's owner, or the
    /// caller whose policies must let them upload now (storage-api's
    /// `onIncomingRequest`: `canUpload` before every write request).
    async fn authorise(&self, bucket: &str, name: &str, check_policies: bool) -> Result<Authority, TusError> {
        if self.signed {
            let token = self
                .call
                .header("x-signature")
                .ok_or_else(|| StorageError::InvalidUploadSignature("Missing x-signature header".into()))?;
            let claims = sign::verify(self.call.state.config.jwt.secret.as_deref(), token, &format!("{bucket}/{name}"))
                .map_err(|e| match e {
                    StorageError::ExpiredToken => e,
                    _ => StorageError::InvalidUploadSignature("Invalid upload Signature".into()),
                })?;
            let jti =
                claims.jti.ok_or_else(|| StorageError::InvalidUploadSignature("Invalid upload Signature".into()))?;
            let upsert = claims.upsert.unwrap_or(false);
            return Ok(Authority {
                upsert,
                signed: Some(SignedUpload { owner: claims.owner, upsert, jti, exp: claims.exp }),
            });
        }
        let upsert = self.call.header("x-upsert").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        if check_policies {
            self.call.precheck(bucket, name, Write::Upload, upsert, true).await?;
        }
        Ok(Authority { upsert, signed: None })
    }

    fn location(&self, id: &UploadId) -> String {
        let headers = self.call.headers;
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).filter(|v| !v.is_empty());
        let proto = match text("x-forwarded-proto") {
            Some(p @ ("http" | "https")) => p,
            _ if self.call.state.config.server.behind_tls => "https",
            _ => "http",
        };
        let listen = self.call.state.config.server.listen.to_string();
        let host = text("x-forwarded-host").or_else(|| text("host")).unwrap_or(&listen);
        let sign = if self.signed { "/sign" } else { "" };
        format!("{proto}://{host}{PATH}{sign}/{}", id.encode())
    }

    /// POST: a new upload (creation), with its first bytes when the body is
    /// `application/offset+octet-stream` (creation-with-upload).
    async fn create(&self, body: ByteStream) -> Result<Response, TusError> {
        if self.call.header("upload-concat").is_some() {
            return Err(UNSUPPORTED_CONCATENATION);
        }
        if self.call.header("upload-defer-length").is_some() {
            return Err(UNSUPPORTED_DEFER_LENGTH);
        }
        let length: u64 = self.call.header("upload-length").and_then(|v| v.parse().ok()).ok_or(INVALID_LENGTH)?;
        let metadata = match self.call.header("upload-metadata") {
            Some(text) => parse_metadata(text).ok_or(INVALID_METADATA)?,
            None => return Err(METADATA_REQUIRED),
        };
        let meta = |k: &str| metadata.iter().find(|(key, _)| key == k).and_then(|(_, v)| v.clone()).unwrap_or_default();
        let (bucket, name) = (meta("bucketName"), meta("objectName"));
        rules::bucket_id(&bucket)?;
        rules::object_name(&name)?;
        let (limit, allowed) = self.call.bucket_rules(&bucket).await?;
        if length > limit {
            return Err(ERR_MAX_SIZE_EXCEEDED);
        }
        let authority = self.authorise(&bucket, &name, true).await?;
        let created = now();
        let info = Info {
            bucket,
            name,
            length,
            metadata,
            created,
            expires: created.saturating_add(self.staging.expiry.as_secs() as i64),
        };
        let content_type = info.content_type();
        if !rules::mime_allowed(allowed.as_deref(), &content_type) {
            return Err(StorageError::InvalidMimeType(content_type).into());
        }
        let id = UploadId { bucket: info.bucket.clone(), name: info.name.clone(), version: uuid::Uuid::new_v4() };
        {
            let (staging, info, version) = (self.staging.clone(), info.clone(), id.version);
            tokio::task::spawn_blocking(move || staging.create(&version, &info)).await.map_err(|_| UNKNOWN_ERROR)??;
        }
        let mut headers = vec![("location", self.location(&id))];
        let with_body = self.call.header("content-type") == Some(OFFSET_OCTET_STREAM);
        let offset = if with_body {
            let part = self.staging.lock(&id.version).await?;
            let (part, offset) = self.append(part, 0, info.length.min(limit), body).await?;
            headers.push(("upload-offset", offset.to_string()));
            if offset == info.length {
                self.finish(&id, &info, authority, limit, allowed.as_deref()).await?;
            }
            drop(part);
            offset
        } else {
            if length == 0 {
                let part = self.staging.lock(&id.version).await?;
                self.finish(&id, &info, authority, limit, allowed.as_deref()).await?;
                drop(part);
            }
            0
        };
        if offset < info.length {
            headers.push(("upload-expires", info.expires_header()));
        } else {
            headers.push(("tus-complete", "1".into()));
        }
        Ok(no_content(headers, StatusCode::CREATED))
    }

    fn upload_id(&self, id: &str) -> Result<UploadId, TusError> {
        UploadId::decode(id).ok_or(FILE_NOT_FOUND)
    }

    /// HEAD: the offset to resume from (what is on disk).
    async fn head(&self, id: &str) -> Result<Response, TusError> {
        let id = self.upload_id(id)?;
        if self.signed {
            self.authorise(&id.bucket, &id.name, false).await?;
        }
        let info = self.staging.info(&id)?;
        if info.expired() {
            return Err(FILE_NO_LONGER_EXISTS);
        }
        let offset = match std::fs::metadata(self.staging.part_path(&id.version)) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(FILE_NOT_FOUND),
            Err(e) => return Err(e.into()),
        };
        let mut headers = vec![
            ("cache-control", "no-store".to_string()),
            ("upload-offset", offset.to_string()),
            ("upload-length", info.length.to_string()),
        ];
        if !info.metadata.is_empty() {
            headers.push(("upload-metadata", stringify_metadata(&info.metadata)));
        }
        Ok(no_content(headers, StatusCode::OK))
    }

    /// PATCH: bytes at `Upload-Offset`; the last ones complete the upload.
    async fn patch(&self, id: &str, body: ByteStream) -> Result<Response, TusError> {
        let id = self.upload_id(id)?;
        let offset: u64 =
            self.call.header("upload-offset").ok_or(MISSING_OFFSET)?.parse().map_err(|_| MISSING_OFFSET)?;
        if self.call.header("content-type").is_none() {
            return Err(INVALID_CONTENT_TYPE);
        }
        let authority = self.authorise(&id.bucket, &id.name, true).await?;
        let (limit, allowed) = self.call.bucket_rules(&id.bucket).await?;
        let part = self.staging.lock(&id.version).await?;
        let info = self.staging.info(&id)?;
        if info.expired() {
            return Err(FILE_NO_LONGER_EXISTS);
        }
        let current = part.metadata()?.len();
        if current != offset {
            return Err(INVALID_OFFSET);
        }
        let most = info.length.min(limit);
        let declared = self.call.header("content-length").and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| offset.saturating_add(n) > most) {
            return Err(ERR_SIZE_EXCEEDED);
        }
        let (part, offset) = self.append(part, offset, most, body).await?;
        let mut headers = vec![("upload-offset", offset.to_string())];
        if offset == info.length {
            self.finish(&id, &info, authority, limit, allowed.as_deref()).await?;
            headers.push(("tus-complete", "1".into()));
        } else {
            headers.push(("upload-expires", info.expires_header()));
        }
        drop(part);
        Ok(no_content(headers, StatusCode::NO_CONTENT))
    }

    /// DELETE: an unfinished upload and its bytes (termination).
    async fn terminate(&self, id: &str) -> Result<Response, TusError> {
        let id = self.upload_id(id)?;
        self.authorise(&id.bucket, &id.name, true).await?;
        let part = self.staging.lock(&id.version).await?;
        let info = self.staging.info(&id)?;
        if part.metadata()?.len() == info.length {
            return Err(INVALID_TERMINATION);
        }
        self.staging.remove(&id.version);
        drop(part);
        Ok(no_content(vec![], StatusCode::NO_CONTENT))
    }

    /// Appends `body` to the locked `part` (now `offset` long), up to `most`
    /// bytes in all, and fsyncs; returns the new offset. A body that goes
    /// past `most` is refused and cut back to `offset`; a body that breaks
    /// off keeps what arrived (the client resumes from there).
    async fn append(
        &self,
        part: std::fs::File,
        offset: u64,
        most: u64,
        mut body: ByteStream,
    ) -> Result<(std::fs::File, u64), TusError> {
        let (sender, mut chunks) = tokio::sync::mpsc::channel::<Bytes>(CHUNKS_IN_FLIGHT);
        let overflow = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let overflow = overflow.clone();
            tokio::task::spawn_blocking(move || -> std::io::Result<(std::fs::File, u64)> {
                let mut part = part;
                part.seek(SeekFrom::Start(offset))?;
                let mut out = std::io::BufWriter::with_capacity(WRITE_BUFFER, &mut part);
                while let Some(chunk) = chunks.blocking_recv() {
                    out.write_all(&chunk)?;
                }
                out.flush()?;
                drop(out);
                if overflow.load(std::sync::atomic::Ordering::SeqCst) {
                    part.set_len(offset)?;
                }
                part.sync_data()?;
                let len = part.metadata()?.len();
                Ok((part, len))
            })
        };
        let mut received = offset;
        let mut broken = None;
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(chunk) => {
                    received += chunk.len() as u64;
                    if received > most {
                        overflow.store(true, std::sync::atomic::Ordering::SeqCst);
                        break;
                    }
                    if sender.send(chunk).await.is_err() {
                        break; // the writer failed: its error is below
                    }
                }
                Err(e) => {
                    broken = Some(e.to_string());
                    break;
                }
            }
        }
        drop(sender);
        let (part, len) = writer.await.map_err(|_| UNKNOWN_ERROR)??;
        if overflow.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(ERR_MAX_SIZE_EXCEEDED);
        }
        if let Some(e) = broken {
            tracing::info!(error = %e, offset = len, "storage: resumable upload body broke off; kept what arrived");
            return Err(FILE_WRITE_ERROR);
        }
        Ok((part, len))
    }

    /// The upload is whole: the object is written through the backend and
    /// its row committed as the caller (or the signed token's owner); then
    /// the staged files go. If the commit is refused, the object file is
    /// removed and the upload stays staged, so the last PATCH can be tried
    /// again (until the upload expires).
    async fn finish(
        &self,
        id: &UploadId,
        info: &Info,
        authority: Authority,
        limit: u64,
        allowed: Option<&[String]>,
    ) -> Result<(), TusError> {
        // The bytes' own type against the bucket's MIME types, as a plain
        // upload's are checked.
        if allowed.is_some_and(|a| !a.is_empty()) {
            let part = self.staging.part_path(&id.version);
            let internal = |e: String| TusError::from(ApiError::from(StorageError::Internal(e)));
            let sniffed = tokio::task::spawn_blocking(move || super::sniff::sniff_file(&part))
                .await
                .map_err(|e| internal(e.to_string()))?
                .map_err(|e| internal(e.to_string()))?;
            super::sniff::check(allowed, sniffed).map_err(|e| TusError::from(ApiError::from(e)))?;
        }
        let version = id.version.to_string();
        self.call.record_pending(&id.bucket, &id.name, &version).await?;
        let object_key = key(&id.bucket, &id.name, &version);
        let size =
            self.call.backend.put_file(object_key, self.staging.part_path(&id.version), limit).await.map_err(|e| {
                match e {
                    BackendError::TooLarge { .. } => ERR_MAX_SIZE_EXCEEDED,
                    BackendError::NotFound => FILE_NOT_FOUND,
                    other => TusError::from(ApiError::from(StorageError::Internal(other.to_string()))),
                }
            })?;
        let metadata = super::object_metadata(&version, size, &info.content_type(), &info.cache_control());
        let claims = match &authority.signed {
            Some(s) => Arc::new(serde_json::json!({ "role": "service_role", "sub": s.owner })),
            None => self.call.caller.claims.clone(),
        };
        let committed = self
            .call
            .commit_write(
                &id.bucket,
                &id.name,
                Write::Upload,
                authority.upsert,
                &version,
                &metadata,
                info.user_metadata(),
                &claims,
                authority.signed.as_ref(),
            )
            .await;
        match committed {
            Ok((_, replaced)) => {
                self.staging.remove(&id.version);
                self.call.forget(replaced.map(|v| (id.bucket.clone(), id.name.clone(), Some(v))).into_iter()).await;
                Ok(())
            }
            Err(e) => {
                self.call.forget(std::iter::once((id.bucket.clone(), id.name.clone(), Some(version)))).await;
                Err(e.into())
            }
        }
    }
}

/// Who a write is made as, and whether it may replace an object.
struct Authority {
    upsert: bool,
    signed: Option<SignedUpload>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_parses_as_tus_utils_does() {
        let m = parse_metadata("bucketName YXZhdGFycw==,objectName YS9iLnBuZw==,flag").unwrap();
        assert_eq!(
            m,
            vec![
                ("bucketName".to_string(), Some("avatars".to_string())),
                ("objectName".to_string(), Some("a/b.png".to_string())),
                ("flag".to_string(), None),
            ]
        );
        assert_eq!(stringify_metadata(&m), "bucketName YXZhdGFycw==,objectName YS9iLnBuZw==,flag");
        for bad in ["", " ", "a b c", "a YQ==,a YQ==", "a !!!!", "a YQ", ",a YQ==", "a  YQ=="] {
            assert!(parse_metadata(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn upload_ids_round_trip_and_refuse_what_is_not_one() {
        let id = UploadId { bucket: "docs".into(), name: "a/b c.txt".into(), version: uuid::Uuid::new_v4() };
        assert_eq!(UploadId::decode(&id.encode()), Some(id.clone()));
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        for bad in [
            "not base64!".to_string(),
            b64("docs/a.txt"),
            b64(&format!("docs/../x/{}", id.version)),
            b64(&format!("/a.txt/{}", id.version)),
            b64("docs/a.txt/not-a-uuid"),
        ] {
            assert_eq!(UploadId::decode(&bad), None, "{bad}");
        }
    }

    #[test]
    fn headers_are_validated_as_tus_server_does() {
        let mut h = http::HeaderMap::new();
        h.insert("upload-offset", HeaderValue::from_static("12"));
        h.insert("tus-resumable", HeaderValue::from_static("1.0.0"));
        h.insert("content-type", HeaderValue::from_static("text/plain"));
        assert!(invalid_headers(&Method::POST, &h).is_empty(), "content-type is only checked on PATCH");
        assert_eq!(invalid_headers(&Method::PATCH, &h), vec!["content-type"]);
        h.insert("upload-offset", HeaderValue::from_static("012"));
        h.insert("tus-resumable", HeaderValue::from_static("0.2.2"));
        assert_eq!(invalid_headers(&Method::POST, &h), vec!["upload-offset", "tus-resumable"]);
    }

    fn staging() -> Staging {
        let dir = std::env::temp_dir().join(format!("fluxbase-tus-test-{}", uuid::Uuid::new_v4()));
        Staging { dir, expiry: Duration::from_secs(60) }
    }

    fn info(expires: i64) -> Info {
        Info {
            bucket: "b".into(),
            name: "n".into(),
            length: 10,
            metadata: vec![("cacheControl".into(), Some("3600".into()))],
            created: now(),
            expires,
        }
    }

    #[test]
    fn the_sweeper_removes_expired_uploads_but_not_live_ones() {
        let s = staging();
        let (fresh, expired, busy) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        s.create(&fresh, &info(now() + 60)).unwrap();
        s.create(&expired, &info(now() - 1)).unwrap();
        s.create(&busy, &info(now() - 1)).unwrap();
        let held = std::fs::OpenOptions::new().write(true).open(s.part_path(&busy)).unwrap();
        held.lock().unwrap();
        assert_eq!(s.sweep().unwrap(), 1);
        assert!(s.info_path(&fresh).exists() && s.part_path(&fresh).exists());
        assert!(!s.info_path(&expired).exists() && !s.part_path(&expired).exists());
        assert!(s.info_path(&busy).exists(), "a locked upload is being written");
        drop(held);
        assert_eq!(s.sweep().unwrap(), 1);
        let id = UploadId { bucket: "b".into(), name: "n".into(), version: fresh };
        assert_eq!(s.info(&id).unwrap().cache_control(), "max-age=3600");
        let other = UploadId { bucket: "b".into(), name: "other".into(), version: fresh };
        assert_eq!(s.info(&other).unwrap_err(), FILE_NOT_FOUND, "an id names its own bucket and object");
        std::fs::remove_dir_all(&s.dir).unwrap();
    }
}
