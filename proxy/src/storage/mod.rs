//! `/storage/v1`: Supabase Storage as storage-js calls it: buckets, objects,
//! signed URLs, public URLs. Rows live in `storage.buckets`/`storage.objects`
//! (sql/storage.sql) and every change to them runs as the caller
//! (`fluxbase.authenticate`: role and claims), so RLS policies decide; the
//! bytes live in a `Backend` under `<bucket>/<name>/<version>`.
//! - `backend.rs`: the `Backend` trait and the local file system;
//! - `s3_backend.rs`: the S3 backend;
//! - `rules.rs`: names, sizes, MIME patterns, ranges (pure);
//! - `sign.rs`: signed URL tokens;
//! - `render.rs`, `transform.rs`: image transforms (`/render/image`);
//! - `error.rs`: storage-api's error catalogue;
//! - `tus.rs`: resumable uploads (TUS) at `/upload/resumable`;
//! - `s3.rs` and `sigv4.rs`: the S3 protocol at `/storage/v1/s3`;
//! - here: routing and the handlers.
//!
//! Consistency: an upload writes a new version's file first (temporary
//! file, fsync, rename), then inserts or updates the row in one
//! transaction; if that fails the file is removed, and a replaced
//! version's file is removed after the commit. A reader follows the row to
//! a file that is complete. Writers of one path are serialised by an
//! advisory lock.
mod backend;
mod error;
mod pipeline;
mod render;
mod rules;
mod s3;
mod s3_backend;
mod sign;
mod sigv4;
mod sniff;
mod transform;
mod tus;

pub use s3::{is_s3_path, new_key_pair, seal};

use bytes::Bytes;
use futures_util::StreamExt;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, StatusCode};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

use crate::error::ApiError;
use crate::http::{read_body, Body, BodyError, RequestContext, Response};
use crate::jwt::Caller;
use crate::state::AppState;

use backend::{Backend, BackendError, ByteStream, LocalFs};
use error::{db_error, pg, StorageError};
use pipeline::{End, Params, Step, AUTHENTICATE};
use tokio_postgres::types::ToSql;

/// Sweeps of temporary files a crash left behind.
const SWEEP_EVERY: Duration = Duration::from_secs(3600);

/// The message of a signed URL that could not be made in a batch.
const NOT_SIGNABLE: &str = "Either the object does not exist or you do not have access to it";

pub struct StorageService {
    backend: Arc<dyn Backend>,
    resumable: Arc<tus::Staging>,
    sweeper: std::sync::Once,
    renderer: render::Renderer,
}

impl StorageService {
    pub fn new(config: &crate::config::Config) -> Result<StorageService, String> {
        let backend: Arc<dyn Backend> = match config.storage.backend {
            crate::config::StorageBackend::Local => Arc::new(LocalFs::new(config.storage.root.clone())),
            crate::config::StorageBackend::S3 => Arc::new(s3_backend::S3Store::new(&config.storage)?),
        };
        Ok(StorageService {
            backend,
            resumable: Arc::new(tus::Staging::new(&config.storage)),
            sweeper: std::sync::Once::new(),
            renderer: render::Renderer::new(&config.storage),
        })
    }

    /// Removes what crashed uploads left behind, now and every hour (the
    /// first storage request starts it, so `check-config` touches no disk).
    fn start_sweeper(&self, state: &Arc<AppState>) {
        self.sweeper.call_once(|| {
            self.resumable.clone().start_sweeper();
            let (backend, state) = (self.backend.clone(), state.clone());
            tokio::spawn(async move {
                loop {
                    match backend.recover().await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(removed = n, "storage: removed what crashed uploads left behind"),
                        Err(e) => tracing::warn!(error = %e, "storage: sweeping crashed uploads failed"),
                    }
                    match sweep_pending(&state, &*backend).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(removed = n, "storage: removed versions a crash left without a row"),
                        Err(e) => tracing::warn!(error = %e, "storage: sweeping versions without a row failed"),
                    }
                    tokio::time::sleep(SWEEP_EVERY).await;
                }
            });
        });
    }

    /// Serves one `/storage/v1` request as `caller`, verified by the dispatcher.
    pub async fn handle<B>(
        &self,
        state: &Arc<AppState>,
        req: Request<B>,
        ctx: &RequestContext,
        caller: &Caller,
    ) -> Result<Response, ApiError>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        self.start_sweeper(state);
        let _ = ctx;
        let (parts, body) = req.into_parts();
        let path = crate::http::path_decode(parts.uri.path().strip_prefix("/storage/v1").unwrap_or(""));
        let segments: Vec<&str> = path.trim_start_matches('/').splitn(4, '/').collect();
        let query = parts.uri.query().unwrap_or("").to_string();
        let call = Call { state, backend: &*self.backend, caller, headers: &parts.headers, query: &query };
        let method = parts.method.clone();
        let (headers, limit) = (&parts.headers, state.config.server.body_limit_bytes);
        let json_body = |body: B| async move { parse_json(&read_body(headers, body, limit).await?) };
        let rest = |from: usize| segments.get(from..).map(|s| s.join("/")).unwrap_or_default();
        match (&method, segments.as_slice()) {
            (_, ["upload", "resumable", tail @ ..]) => {
                tus::handle(&call, &self.resumable, &method, tail, body_stream(body)).await
            }
            (&Method::GET, ["bucket"]) | (&Method::GET, ["bucket", ""]) => call.list_buckets().await,
            (&Method::POST, ["bucket"]) | (&Method::POST, ["bucket", ""]) => {
                call.create_bucket(json_body(body).await?).await
            }
            (&Method::POST, ["bucket", id, "empty"]) => call.empty_bucket(id).await,
            (&Method::GET, ["bucket", id]) => call.get_bucket(id).await,
            (&Method::PUT, ["bucket", id]) => call.update_bucket(id, json_body(body).await?).await,
            (&Method::DELETE, ["bucket", id]) => call.delete_bucket(id).await,
            (&Method::POST, ["object", "list", bucket]) => call.list_objects(bucket, json_body(body).await?).await,
            (&Method::POST, ["object", "list-v2", bucket]) => {
                call.list_objects_v2(bucket, json_body(body).await?).await
            }
            (&Method::POST, ["object", "move"]) => call.move_object(json_body(body).await?).await,
            (&Method::POST, ["object", "copy"]) => call.copy_object(json_body(body).await?).await,
            (&Method::POST, ["object", "sign", bucket]) => call.sign_many(bucket, json_body(body).await?).await,
            (&Method::POST, ["object", "sign", bucket, ..]) => {
                let name = rest(3);
                call.sign_one(bucket, &name, json_body(body).await?).await
            }
            (&Method::GET | &Method::HEAD, ["object", "sign", bucket, ..]) => {
                let name = rest(3);
                call.download(bucket, &name, Access::Signed, &method).await
            }
            (&Method::POST, ["object", "upload", "sign", ..]) => {
                let (bucket, name) = split_bucket(&rest(3))?;
                call.sign_upload(&bucket, &name).await
            }
            (&Method::PUT, ["object", "upload", "sign", ..]) => {
                let (bucket, name) = split_bucket(&rest(3))?;
                call.upload_signed(&bucket, &name, body_stream(body)).await
            }
            (&Method::GET | &Method::HEAD, ["object", "public", bucket, ..]) => {
                call.download(bucket, &rest(3), Access::Public, &method).await
            }
            (&Method::GET | &Method::HEAD, ["object", "authenticated", bucket, ..]) => {
                call.download(bucket, &rest(3), Access::Caller, &method).await
            }
            (&Method::GET, ["object", "info", "public" | "authenticated", ..]) => {
                let (bucket, name) = split_bucket(&rest(3))?;
                call.info(&bucket, &name).await
            }
            (&Method::GET, ["object", "info", bucket, ..]) => call.info(bucket, &rest(3)).await,
            (&Method::GET, ["render", "image", kind, ..]) => {
                let access = match *kind {
                    "public" => Access::Public,
                    "authenticated" => Access::Caller,
                    "sign" => Access::Signed,
                    _ => return Err(ApiError::NotFound),
                };
                let (bucket, name) = split_bucket(&rest(3))?;
                call.render_image(&self.renderer, &bucket, &name, access).await
            }
            (&Method::DELETE, ["object", bucket]) => call.remove_many(bucket, json_body(body).await?).await,
            (&Method::POST | &Method::PUT, ["object", bucket, ..]) if segments.len() > 2 => {
                let write = if method == Method::POST { Write::Upload } else { Write::Update };
                call.upload(bucket, &rest(2), write, body_stream(body), None).await
            }
            (&Method::GET | &Method::HEAD, ["object", bucket, ..]) if segments.len() > 2 => {
                call.download(bucket, &rest(2), Access::Caller, &method).await
            }
            (&Method::DELETE, ["object", bucket, ..]) if segments.len() > 2 => call.remove_one(bucket, &rest(2)).await,
            _ => Err(ApiError::NotFound),
        }
    }
}

/// Deletes the bytes of versions recorded as pending for longer than any
/// request may take (`storage.request_timeout_ms` and a minute) that no
/// row names: a crash came between storing them and committing their row.
async fn sweep_pending(state: &AppState, backend: &dyn Backend) -> Result<usize, String> {
    let older_than = (state.config.storage.request_timeout_ms / 1000 + 60) as f64;
    let client = state.client().await.map_err(|e| e.to_string())?;
    let rows = client
        .query("SELECT bucket_id, name, version FROM fluxbase.storage_pending_expired($1)", &[&older_than])
        .await
        .map_err(|e| e.to_string())?;
    let keys: Vec<String> = rows.iter().map(|r| key(r.get(0), r.get(1), r.get(2))).collect();
    let n = keys.len();
    if n > 0 {
        backend.delete(keys).await.map_err(|e| e.to_string())?;
    }
    Ok(n)
}

fn split_bucket(path: &str) -> Result<(String, String), ApiError> {
    match path.split_once('/') {
        Some((bucket, name)) => Ok((bucket.to_string(), name.to_string())),
        None => Err(StorageError::InvalidKey(path.to_string()).into()),
    }
}

fn parse_json(bytes: &[u8]) -> Result<Value, ApiError> {
    if bytes.is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_slice(bytes)
        .map_err(|e| StorageError::InvalidRequest(format!("body is not valid JSON: {e}")).into())
}

fn body_stream<B>(body: B) -> ByteStream
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    http_body_util::BodyStream::new(body)
        .filter_map(|frame| async move {
            match frame {
                Ok(frame) => frame.into_data().ok().map(Ok),
                Err(e) => Some(Err(BodyError::from(e))),
            }
        })
        .boxed()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    /// The caller's policies decide.
    Caller,
    /// Anyone, if the bucket is public.
    Public,
    /// Anyone with a valid signed URL (`?token=`).
    Signed,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Write {
    /// POST: a new object (`x-upsert: true` replaces one).
    Upload,
    /// PUT: replaces an existing object.
    Update,
}

/// Who an upload is made as when it is not the caller: a signed upload
/// URL's owner, and whether it may replace.
struct SignedUpload {
    owner: Option<String>,
    upsert: bool,
    jti: String,
    exp: u64,
}

/// The object as it is about to be written.
struct NewObject {
    content_type: String,
    cache_control: String,
    user_metadata: Option<Value>,
    body: ByteStream,
}

/// A field of an update: absent (`None`, unchanged), null or a value.
type Change<T> = Option<Option<T>>;

/// One request's handlers.
struct Call<'a> {
    state: &'a Arc<AppState>,
    backend: &'a dyn Backend,
    caller: &'a Caller,
    headers: &'a HeaderMap,
    query: &'a str,
}

fn message(text: &str) -> Response {
    crate::http::json_response(StatusCode::OK, &json!({ "message": text }))
}

fn ok_json(body: Value) -> Response {
    crate::http::json_response(StatusCode::OK, &body)
}

/// A JSON text built by Postgres, answered as it is.
fn ok_raw(text: String) -> Response {
    http::Response::builder()
        .header(header::CONTENT_TYPE, "application/json; charset=utf-8")
        .body(Body::full(text))
        .expect("static response parts")
}

fn key(bucket: &str, name: &str, version: &str) -> String {
    format!("{bucket}/{name}/{version}")
}

/// `storage.objects.metadata` of a version just written.
fn object_metadata(version: &str, size: u64, content_type: &str, cache_control: &str) -> Value {
    json!({
        "eTag": format!("\"{}\"", version.replace('-', "")),
        "size": size,
        "mimetype": content_type,
        "cacheControl": cache_control,
        "lastModified": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "contentLength": size,
        "httpStatusCode": 200,
    })
}

/// `Content-Disposition` for a `download` query parameter (empty: the
/// object's own file name).
fn content_disposition(query: &str, name: &str) -> Option<HeaderValue> {
    let download = crate::http::query_param(query, "download")?;
    let file = if download.is_empty() { name.rsplit('/').next().unwrap_or(name).to_string() } else { download };
    let ascii: String =
        file.chars().map(|c| if c.is_ascii_graphic() && c != '"' || c == ' ' { c } else { '_' }).collect();
    HeaderValue::from_str(&format!(
        "attachment; filename=\"{ascii}\"; filename*=UTF-8''{}",
        crate::http::form_encode(&file)
    ))
    .ok()
}

fn sub_of(claims: &Value) -> Option<String> {
    claims.get("sub").and_then(Value::as_str).map(str::to_string)
}

impl Call<'_> {
    async fn client(&self) -> Result<deadpool_postgres::Object, ApiError> {
        self.state.client().await
    }

    /// One statement as the caller, in a transaction of its own (one round
    /// trip): its rows.
    async fn as_caller(&self, sql: &str, params: Params<'_>) -> Result<Vec<tokio_postgres::Row>, ApiError> {
        self.as_caller_or(sql, params, StorageError::KeyAlreadyExists).await
    }

    /// The same, answering a unique violation as `duplicate`.
    async fn as_caller_or(
        &self,
        sql: &str,
        params: Params<'_>,
        duplicate: StorageError,
    ) -> Result<Vec<tokio_postgres::Row>, ApiError> {
        let client = self.client().await?;
        pipeline::as_caller(&client, &self.caller.claims, sql, params, End::Commit)
            .await
            .map_err(|e| db_error(e, duplicate))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn file_size_limit(&self) -> u64 {
        self.state.config.storage.file_size_limit
    }

    // ---- buckets ----

    async fn list_buckets(&self) -> Result<Response, ApiError> {
        let rows = self
            .as_caller(
                "SELECT coalesce(json_agg(b ORDER BY b.name), '[]')::text FROM (SELECT id, name, owner, owner_id, public, \
                 file_size_limit, allowed_mime_types, created_at, updated_at FROM storage.buckets) b",
                &[],
            )
            .await?;
        Ok(ok_raw(rows[0].get(0)))
    }

    async fn get_bucket(&self, id: &str) -> Result<Response, ApiError> {
        let rows = self
            .as_caller(
                "SELECT row_to_json(b)::text FROM (SELECT id, name, owner, owner_id, public, file_size_limit, \
                 allowed_mime_types, created_at, updated_at FROM storage.buckets WHERE id = $1) b",
                &[&id],
            )
            .await?;
        rows.first().map(|r| ok_raw(r.get(0))).ok_or_else(|| StorageError::NoSuchBucket.into())
    }

    /// `file_size_limit` and `allowed_mime_types` of a create or update body.
    fn bucket_limits(&self, body: &Value) -> Result<(Change<i64>, Change<Vec<String>>), ApiError> {
        let size = match body.get("file_size_limit") {
            None => None,
            Some(v) => {
                let bytes = rules::file_size(v)?;
                if bytes.is_some_and(|b| b > self.file_size_limit()) {
                    return Err(StorageError::InvalidRequest(format!(
                        "file_size_limit exceeds the global limit of {} bytes",
                        self.file_size_limit()
                    ))
                    .into());
                }
                Some(bytes.map(|b| b as i64))
            }
        };
        let types = match body.get("allowed_mime_types") {
            None => None,
            Some(Value::Null) => Some(None),
            Some(Value::Array(items)) => {
                let types: Option<Vec<String>> = items.iter().map(|v| v.as_str().map(str::to_string)).collect();
                let types = types.filter(|t| t.iter().all(|t| t.contains('/') && !t.chars().any(char::is_control)));
                Some(Some(types.ok_or_else(|| {
                    StorageError::InvalidRequest("allowed_mime_types must be a list of MIME types".into())
                })?))
            }
            Some(_) => {
                return Err(
                    StorageError::InvalidRequest("allowed_mime_types must be a list of MIME types".into()).into()
                )
            }
        };
        Ok((size, types))
    }

    async fn create_bucket(&self, body: Value) -> Result<Response, ApiError> {
        let name = body.get("name").and_then(Value::as_str).ok_or(StorageError::MissingParameter("name"))?;
        let id = body.get("id").and_then(Value::as_str).unwrap_or(name);
        rules::bucket_id(id)?;
        rules::bucket_id(name)?;
        let public = body.get("public").and_then(Value::as_bool).unwrap_or(false);
        let (size, types) = self.bucket_limits(&body)?;
        let sub = sub_of(&self.caller.claims);
        let owner = sub.as_deref().and_then(|s| uuid::Uuid::parse_str(s).ok());
        self.as_caller_or(
            "INSERT INTO storage.buckets (id, name, owner, owner_id, public, file_size_limit, allowed_mime_types) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[&id, &name, &owner, &sub, &public, &size.flatten(), &types.flatten()],
            StorageError::BucketAlreadyExists,
        )
        .await?;
        Ok(ok_json(json!({ "name": id })))
    }

    async fn update_bucket(&self, id: &str, body: Value) -> Result<Response, ApiError> {
        let public = body.get("public").and_then(Value::as_bool);
        let (size, types) = self.bucket_limits(&body)?;
        let rows = self
            .as_caller(
                "UPDATE storage.buckets SET public = coalesce($2, public), \
                 file_size_limit = CASE WHEN $3 THEN $4 ELSE file_size_limit END, \
                 allowed_mime_types = CASE WHEN $5 THEN $6 ELSE allowed_mime_types END, updated_at = now() \
                 WHERE id = $1 RETURNING 1",
                &[&id, &public, &size.is_some(), &size.flatten(), &types.is_some(), &types.flatten()],
            )
            .await?;
        if rows.is_empty() {
            return Err(StorageError::NoSuchBucket.into());
        }
        Ok(message("Successfully updated"))
    }

    async fn empty_bucket(&self, id: &str) -> Result<Response, ApiError> {
        let client = self.client().await?;
        let claims = &*self.caller.claims;
        let answers = pipeline::transaction(
            &client,
            &[
                Step { sql: AUTHENTICATE, params: &[&claims] },
                Step { sql: "SELECT 1 FROM storage.buckets WHERE id = $1", params: &[&id] },
                Step {
                    sql: "DELETE FROM storage.objects WHERE bucket_id = $1 RETURNING name, version",
                    params: &[&id],
                },
            ],
            End::Commit,
        )
        .await
        .map_err(pg)?;
        let mut results = pipeline::rows(answers).map_err(pg)?;
        let rows = results.pop().unwrap_or_default();
        if results[1].is_empty() {
            return Err(StorageError::NoSuchBucket.into());
        }
        self.forget(rows.iter().map(|r| (id.to_string(), r.get::<_, String>(0), r.get::<_, Option<String>>(1)))).await;
        Ok(message("Successfully emptied"))
    }

    async fn delete_bucket(&self, id: &str) -> Result<Response, ApiError> {
        let rows = self
            .as_caller_or("DELETE FROM storage.buckets WHERE id = $1 RETURNING 1", &[&id], StorageError::BucketNotEmpty)
            .await?;
        if rows.is_empty() {
            return Err(StorageError::NoSuchBucket.into());
        }
        Ok(message("Successfully deleted"))
    }

    /// Deletes the files of rows that are gone (after their commit). A file
    /// that cannot be deleted is logged and left: no row points to it.
    async fn forget(&self, objects: impl Iterator<Item = (String, String, Option<String>)>) {
        let keys: Vec<String> =
            objects.filter_map(|(bucket, name, version)| version.map(|v| key(&bucket, &name, &v))).collect();
        if keys.is_empty() {
            return;
        }
        if let Err(e) = self.backend.delete(keys).await {
            tracing::warn!(error = %e, "storage: deleting replaced or removed files failed");
        }
    }

    // ---- objects: writes ----

    /// The object in an upload request: a multipart form (storage-js with a
    /// `Blob`/`File`/`FormData`: fields `cacheControl`, `metadata`, then the
    /// file) or the raw body (`content-type`, `cache-control`, `x-metadata`
    /// as base64 JSON).
    async fn incoming(&self, body: ByteStream) -> Result<NewObject, ApiError> {
        let content_type = self.header("content-type").unwrap_or("").to_string();
        if rules::essence(&content_type) == "multipart/form-data" {
            let boundary =
                multer::parse_boundary(&content_type).map_err(|e| StorageError::InvalidRequest(e.to_string()))?;
            let mut form = multer::Multipart::new(body, boundary);
            let mut cache_control = None;
            let mut user_metadata = None;
            loop {
                let field = form
                    .next_field()
                    .await
                    .map_err(|e| StorageError::InvalidRequest(format!("malformed multipart body: {e}")))?
                    .ok_or_else(|| StorageError::InvalidRequest("No content provided".into()))?;
                let (field_name, file_name) = (field.name().map(str::to_string), field.file_name().is_some());
                match (field_name.as_deref(), file_name) {
                    (Some("cacheControl"), false) => {
                        let text = field.text().await.map_err(|e| StorageError::InvalidRequest(e.to_string()))?;
                        cache_control = Some(format!("max-age={}", text.trim()));
                    }
                    (Some("metadata"), false) => {
                        let text = field.text().await.map_err(|e| StorageError::InvalidRequest(e.to_string()))?;
                        user_metadata = Some(
                            serde_json::from_str::<Value>(&text)
                                .map_err(|_| StorageError::InvalidRequest("metadata must be a JSON object".into()))?,
                        );
                    }
                    (Some(""), _) | (_, true) | (None, false) => {
                        let content_type =
                            field.content_type().map(|m| m.to_string()).unwrap_or_else(|| "text/plain".into());
                        let stream = field.map(|chunk| chunk.map_err(BodyError::from)).boxed();
                        // The form must live while its file is read.
                        let stream = KeepAlive { stream, _form: form }.boxed();
                        return Ok(NewObject {
                            content_type,
                            cache_control: cache_control.unwrap_or_else(|| "no-cache".into()),
                            user_metadata,
                            body: stream,
                        });
                    }
                    _ => {} // other fields are ignored, as storage-api does
                }
            }
        }
        let user_metadata =
            match self.header("x-metadata") {
                None => None,
                Some(b64) => {
                    use base64::Engine;
                    let bytes = base64::engine::general_purpose::STANDARD.decode(b64.trim()).map_err(|_| {
                        StorageError::InvalidRequest("x-metadata must be base64 of a JSON object".into())
                    })?;
                    Some(serde_json::from_slice::<Value>(&bytes).map_err(|_| {
                        StorageError::InvalidRequest("x-metadata must be base64 of a JSON object".into())
                    })?)
                }
            };
        if user_metadata.as_ref().is_some_and(|m| !m.is_object()) {
            return Err(StorageError::InvalidRequest("metadata must be a JSON object".into()).into());
        }
        Ok(NewObject {
            content_type: if content_type.is_empty() { "application/octet-stream".into() } else { content_type },
            cache_control: self.header("cache-control").unwrap_or("no-cache").to_string(),
            user_metadata,
            body,
        })
    }

    /// Upload (POST, `x-upsert`) or update (PUT) of `bucket/name`, as the
    /// caller, or as a signed upload URL's owner (`signed`). A refused
    /// upload's remaining body is read and dropped (up to `DRAIN_LIMIT`)
    /// before the answer, so the client, still sending, reads the error
    /// instead of a reset connection.
    async fn upload(
        &self,
        bucket: &str,
        name: &str,
        write: Write,
        body: ByteStream,
        signed: Option<SignedUpload>,
    ) -> Result<Response, ApiError> {
        let body = SharedBody::new(body);
        let result = self.upload_checked(bucket, name, write, body.clone().boxed(), signed).await;
        if result.is_err() {
            body.drain(DRAIN_LIMIT).await;
        }
        result
    }

    async fn upload_checked(
        &self,
        bucket: &str,
        name: &str,
        write: Write,
        body: ByteStream,
        signed: Option<SignedUpload>,
    ) -> Result<Response, ApiError> {
        rules::bucket_id(bucket)?;
        rules::object_name(name)?;
        let upsert = match &signed {
            Some(s) => s.upsert,
            None => self.header("x-upsert").is_some_and(|v| v.eq_ignore_ascii_case("true")),
        };
        // A signed upload was checked against the policies when it was signed.
        let version = uuid::Uuid::new_v4().to_string();
        let (limit, allowed) =
            self.precheck_recording(bucket, name, write, upsert, signed.is_none(), Some(&version)).await?;
        let declared = self.header("content-length").and_then(|v| v.parse::<u64>().ok());
        let multipart = self.header("content-type").is_some_and(|t| rules::essence(t) == "multipart/form-data");
        if declared.is_some_and(|n| n > limit) && !multipart {
            return Err(StorageError::EntityTooLarge.into());
        }
        let mut object = self.incoming(body).await?;
        if !rules::mime_allowed(allowed.as_deref(), &object.content_type) {
            return Err(StorageError::InvalidMimeType(object.content_type).into());
        }
        if allowed.as_ref().is_some_and(|a| !a.is_empty()) {
            let (sniffed, body) = sniff::sniff(object.body)
                .await
                .map_err(|e| ApiError::from(StorageError::InvalidRequest(format!("reading the upload failed: {e}"))))?;
            sniff::check(allowed.as_deref(), sniffed)?;
            object.body = body;
        }

        let new_key = key(bucket, name, &version);
        // Recorded as pending by the precheck above.
        let size = self.backend.put_recorded(new_key.clone(), object.body, limit).await.map_err(|e| match e {
            BackendError::TooLarge { .. } => ApiError::from(StorageError::EntityTooLarge),
            BackendError::Body(m) => StorageError::InvalidRequest(format!("reading the upload failed: {m}")).into(),
            other => StorageError::Internal(other.to_string()).into(),
        })?;

        let metadata = object_metadata(&version, size, &object.content_type, &object.cache_control);
        let claims = match &signed {
            Some(s) => Arc::new(json!({ "role": "service_role", "sub": s.owner })),
            None => self.caller.claims.clone(),
        };
        let committed = self
            .commit_write(
                bucket,
                name,
                write,
                upsert,
                &version,
                &metadata,
                object.user_metadata,
                &claims,
                signed.as_ref(),
            )
            .await;
        match committed {
            Ok((id, replaced)) => {
                self.forget(replaced.map(|v| (bucket.to_string(), name.to_string(), Some(v))).into_iter()).await;
                Ok(ok_json(json!({ "Id": id.to_string(), "Key": format!("{bucket}/{name}") })))
            }
            Err(e) => {
                self.forget(std::iter::once((bucket.to_string(), name.to_string(), Some(version)))).await;
                Err(e)
            }
        }
    }

    /// The bucket's limits (`file_size_limit`, `allowed_mime_types`) and,
    /// with `dry_run`, whether the caller's policies would let this write
    /// through: tried and rolled back before a byte is read, as
    /// storage-api's `canUpload`, so a refused or duplicate upload is
    /// answered at once and costs no disk. One round trip; the write itself
    /// is checked again when it commits.
    async fn precheck(
        &self,
        bucket: &str,
        name: &str,
        write: Write,
        upsert: bool,
        dry_run: bool,
    ) -> Result<(u64, Option<Vec<String>>), ApiError> {
        self.precheck_recording(bucket, name, write, upsert, dry_run, None).await
    }

    /// The same, and with `pending` the version about to be stored is
    /// recorded in `fluxbase.storage_pending_versions` in that round trip
    /// (the record commits, the dry run is undone by a savepoint), so bytes
    /// a crash leaves without a row are found by the sweeper.
    async fn precheck_recording(
        &self,
        bucket: &str,
        name: &str,
        write: Write,
        upsert: bool,
        dry_run: bool,
        pending: Option<&str>,
    ) -> Result<(u64, Option<Vec<String>>), ApiError> {
        let sub = sub_of(&self.caller.claims);
        let owner = sub.as_deref().and_then(|s| uuid::Uuid::parse_str(s).ok());
        let claims = &*self.caller.claims;
        let sql = match (write, upsert) {
            (Write::Update, _) => {
                "UPDATE storage.objects SET owner = $3, owner_id = $4 WHERE bucket_id = $1 AND name = $2 RETURNING id"
            }
            (Write::Upload, true) => {
                "INSERT INTO storage.objects (bucket_id, name, owner, owner_id) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (bucket_id, name) DO UPDATE SET owner = excluded.owner, owner_id = excluded.owner_id \
                 RETURNING id"
            }
            (Write::Upload, false) => {
                "INSERT INTO storage.objects (bucket_id, name, owner, owner_id) VALUES ($1, $2, $3, $4) RETURNING id"
            }
        };
        let version = pending.unwrap_or_default();
        let rules_params: [&(dyn ToSql + Sync); 1] = [&bucket];
        let auth_params: [&(dyn ToSql + Sync); 1] = [&claims];
        let dry_params: [&(dyn ToSql + Sync); 4] = [&bucket, &name, &owner, &sub];
        let pending_params: [&(dyn ToSql + Sync); 3] = [&version, &bucket, &name];
        // The record is written as the proxy, before the caller's role is
        // taken; the dry run after it is undone by its savepoint.
        let mut steps = vec![Step { sql: BUCKET_RULES, params: &rules_params }];
        if pending.is_some() {
            steps.push(Step { sql: RECORD_PENDING, params: &pending_params });
        }
        let mut dry_at = None;
        if dry_run {
            if pending.is_some() {
                steps.push(Step { sql: "SAVEPOINT dry_run", params: &[] });
            }
            steps.push(Step { sql: AUTHENTICATE, params: &auth_params });
            dry_at = Some(steps.len());
            steps.push(Step { sql, params: &dry_params });
            if pending.is_some() {
                steps.push(Step { sql: "ROLLBACK TO SAVEPOINT dry_run", params: &[] });
            }
        }
        let end = if pending.is_some() { End::Commit } else { End::Rollback };
        let client = self.client().await?;
        let mut answers = pipeline::transaction(&client, &steps, end).await.map_err(pg)?.into_iter().enumerate();
        // The bucket first, as storage-api looks it up before the policies.
        let (_, rules) = answers.next().expect("one answer per step");
        let rules = rules.map_err(pg)?;
        let rules = rules.first().ok_or(StorageError::NoSuchBucket)?;
        for (at, answer) in answers {
            if Some(at) == dry_at {
                answer
                    .map_err(|e| db_error(e, StorageError::KeyAlreadyExists))?
                    .first()
                    .ok_or(StorageError::NoSuchKey)?;
            } else {
                answer.map_err(pg)?;
            }
        }
        Ok((self.bucket_limit(rules.get(1)), rules.get(2)))
    }

    /// The largest object a bucket takes: its own limit within the global one.
    fn bucket_limit(&self, bucket_limit: Option<i64>) -> u64 {
        let global = self.file_size_limit();
        bucket_limit.map_or(global, |l| (l.max(0) as u64).min(global))
    }

    /// A bucket's largest object (`bucket_limit`) and allowed MIME types,
    /// whatever the caller's policies on buckets say; `NoSuchBucket` if it
    /// does not exist.
    async fn bucket_rules(&self, bucket: &str) -> Result<(u64, Option<Vec<String>>), ApiError> {
        let client = self.client().await?;
        let statement = client.prepare_cached(BUCKET_RULES).await.map_err(pg)?;
        let row = client.query_opt(&statement, &[&bucket]).await.map_err(pg)?.ok_or(StorageError::NoSuchBucket)?;
        Ok((self.bucket_limit(row.get(1)), row.get(2)))
    }

    /// Records a version about to be stored outside an upload's precheck
    /// (a resumable upload's completion).
    async fn record_pending(&self, bucket: &str, name: &str, version: &str) -> Result<(), ApiError> {
        let client = self.client().await?;
        let statement = client.prepare_cached(RECORD_PENDING).await.map_err(pg)?;
        client.execute(&statement, &[&version, &bucket, &name]).await.map_err(pg)?;
        Ok(())
    }

    /// The row of a written version, in one transaction under the path's
    /// lock: returns the object's id and the version it replaced.
    #[allow(clippy::too_many_arguments)]
    async fn commit_write(
        &self,
        bucket: &str,
        name: &str,
        write: Write,
        upsert: bool,
        version: &str,
        metadata: &Value,
        user_metadata: Option<Value>,
        claims: &Value,
        signed: Option<&SignedUpload>,
    ) -> Result<(uuid::Uuid, Option<String>), ApiError> {
        let sub = sub_of(claims);
        let owner = sub.as_deref().and_then(|s| uuid::Uuid::parse_str(s).ok());
        let write_sql = match (write, upsert) {
            (Write::Update, _) => {
                "UPDATE storage.objects SET version = $3, metadata = $4, user_metadata = $5, owner = $6, \
                 owner_id = $7, last_accessed_at = now() WHERE bucket_id = $1 AND name = $2 RETURNING id"
            }
            (Write::Upload, true) => {
                "INSERT INTO storage.objects (bucket_id, name, version, metadata, user_metadata, owner, owner_id) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (bucket_id, name) DO UPDATE SET \
                 version = excluded.version, metadata = excluded.metadata, user_metadata = excluded.user_metadata, \
                 owner = excluded.owner, owner_id = excluded.owner_id, last_accessed_at = now() RETURNING id"
            }
            (Write::Upload, false) => {
                "INSERT INTO storage.objects (bucket_id, name, version, metadata, user_metadata, owner, owner_id) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id"
            }
        };
        // A signed upload's token is spent with the write (no token: a no-op).
        let (jti, expires) = (signed.map(|s| s.jti.as_str()), signed.map(|s| s.exp as f64));
        let client = self.client().await?;
        let steps = [
            Step { sql: LOCK_PATH, params: &[&bucket, &name] },
            Step { sql: FORGET_PENDING, params: &[&version] },
            Step { sql: "SELECT fluxbase.storage_upload_token_spend($1, to_timestamp($2))", params: &[&jti, &expires] },
            Step { sql: PREVIOUS_VERSION, params: &[&bucket, &name] },
            Step { sql: AUTHENTICATE, params: &[&claims] },
            Step { sql: write_sql, params: &[&bucket, &name, &version, metadata, &user_metadata, &owner, &sub] },
        ];
        let answers = pipeline::transaction(&client, &steps, End::Commit).await.map_err(pg)?;
        let answers = pipeline::rows(answers).map_err(|e| db_error(e, StorageError::KeyAlreadyExists))?;
        let id: uuid::Uuid = answers[5].first().ok_or(StorageError::NoSuchKey)?.get(0);
        let previous: Option<String> = answers[3].first().and_then(|r| r.get(0));
        Ok((id, previous))
    }

    async fn remove_one(&self, bucket: &str, name: &str) -> Result<Response, ApiError> {
        let rows = self
            .as_caller(
                "DELETE FROM storage.objects WHERE bucket_id = $1 AND name = $2 RETURNING version",
                &[&bucket, &name],
            )
            .await?;
        let Some(row) = rows.first() else { return Err(StorageError::NoSuchKey.into()) };
        self.forget(std::iter::once((bucket.to_string(), name.to_string(), row.get(0)))).await;
        Ok(message("Successfully deleted"))
    }

    /// `DELETE /object/{bucket}` `{prefixes: [names]}`: the objects the
    /// caller could delete, as rows.
    async fn remove_many(&self, bucket: &str, body: Value) -> Result<Response, ApiError> {
        let names: Vec<String> = body
            .get("prefixes")
            .and_then(Value::as_array)
            .ok_or(StorageError::MissingParameter("prefixes"))?
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
        if names.is_empty() || names.len() > 1000 {
            return Err(StorageError::InvalidRequest("prefixes must list 1 to 1000 names".into()).into());
        }
        let rows = self
            .as_caller(
                "DELETE FROM storage.objects WHERE bucket_id = $1 AND name = ANY($2) RETURNING name, version, \
                 json_build_object('bucket_id', bucket_id, 'name', name, 'id', id, 'owner', owner, 'owner_id', \
                 owner_id, 'version', version, 'updated_at', updated_at, 'created_at', created_at, \
                 'last_accessed_at', last_accessed_at, 'metadata', metadata, 'user_metadata', user_metadata)::text",
                &[&bucket, &names],
            )
            .await?;
        let body = format!("[{}]", rows.iter().map(|r| r.get::<_, String>(2)).collect::<Vec<_>>().join(","));
        self.forget(rows.iter().map(|r| (bucket.to_string(), r.get::<_, String>(0), r.get::<_, Option<String>>(1))))
            .await;
        Ok(ok_raw(body))
    }

    /// Move (`copy: false`) or copy of `{bucketId, sourceKey, destinationKey,
    /// destinationBucket?}`: the bytes get a new version under the new key
    /// (a hard link on the local disk), then the rows change as the caller.
    async fn relocate(&self, body: Value, copy: bool) -> Result<Response, ApiError> {
        let text = |k: &'static str| {
            body.get(k).and_then(Value::as_str).map(str::to_string).ok_or(StorageError::MissingParameter(k))
        };
        let (bucket, source, dest) = (text("bucketId")?, text("sourceKey")?, text("destinationKey")?);
        let dest_bucket = body.get("destinationBucket").and_then(Value::as_str).unwrap_or(&bucket).to_string();
        rules::bucket_id(&bucket)?;
        rules::bucket_id(&dest_bucket)?;
        rules::object_name(&source)?;
        rules::object_name(&dest)?;
        let upsert = self.header("x-upsert").is_some_and(|v| v.eq_ignore_ascii_case("true"));

        let source_rows = self
            .as_caller(
                "SELECT version, metadata, user_metadata FROM storage.objects WHERE bucket_id = $1 AND name = $2",
                &[&bucket, &source],
            )
            .await?;
        let source_row = source_rows.first().ok_or(StorageError::NoSuchKey)?;
        let old_version: Option<String> = source_row.get(0);
        let old_version = old_version.ok_or(StorageError::NoSuchKey)?;
        let version = uuid::Uuid::new_v4().to_string();
        let new_key = key(&dest_bucket, &dest, &version);
        // Pending until its row commits: a crash between the copy and the
        // row leaves bytes the sweeper finds by this record.
        self.record_pending(&dest_bucket, &dest, &version).await?;
        self.backend.copy(key(&bucket, &source, &old_version), new_key.clone()).await.map_err(|e| match e {
            BackendError::NotFound => ApiError::from(StorageError::NoSuchKey),
            other => StorageError::Internal(other.to_string()).into(),
        })?;
        // The rows in one transaction under the destination's lock; a move
        // applies only to the version whose bytes were copied.
        let result = async {
            let sub = sub_of(&self.caller.claims);
            let owner = sub.as_deref().and_then(|s| uuid::Uuid::parse_str(s).ok());
            let claims = &*self.caller.claims;
            let metadata: Value = {
                let mut metadata: Value = source_row.get(1);
                if let Some(m) = metadata.as_object_mut() {
                    m.insert("eTag".into(), json!(format!("\"{}\"", version.replace('-', ""))));
                }
                metadata
            };
            let user_metadata: Option<Value> = match body.get("copyMetadata").and_then(Value::as_bool) {
                Some(false) => body.get("metadata").cloned(),
                _ => source_row.get(2),
            };
            let copy_params: [&(dyn tokio_postgres::types::ToSql + Sync); 7] =
                [&dest_bucket, &dest, &version, &metadata, &user_metadata, &owner, &sub];
            let move_params: [&(dyn tokio_postgres::types::ToSql + Sync); 6] =
                [&bucket, &source, &dest_bucket, &dest, &version, &old_version];
            let last = if copy {
                Step { sql: "INSERT INTO storage.objects (bucket_id, name, version, metadata, user_metadata, owner, owner_id) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id", params: &copy_params }
            } else {
                Step { sql: "UPDATE storage.objects SET bucket_id = $3, name = $4, version = $5, last_accessed_at = now() \
                     WHERE bucket_id = $1 AND name = $2 AND version = $6 RETURNING id", params: &move_params }
            };
            let steps = [
                Step { sql: LOCK_PATH, params: &[&dest_bucket, &dest] },
                Step { sql: FORGET_PENDING, params: &[&version] },
                Step { sql: PREVIOUS_VERSION, params: &[&dest_bucket, &dest] },
                Step { sql: AUTHENTICATE, params: &[&claims] },
                // x-upsert replaces what is there, if the caller may delete it.
                Step { sql: "DELETE FROM storage.objects WHERE $3 AND bucket_id = $1 AND name = $2", params: &[&dest_bucket, &dest, &upsert] },
                last,
            ];
            let client = self.client().await?;
            let answers = pipeline::transaction(&client, &steps, End::Commit).await.map_err(pg)?;
            let mut answers = pipeline::rows(answers).map_err(|e| db_error(e, StorageError::KeyAlreadyExists))?;
            let id: uuid::Uuid = answers.pop().unwrap_or_default().first().ok_or(StorageError::NoSuchKey)?.get(0);
            let replaced: Option<String> = answers[2].first().and_then(|r| r.get(0));
            Ok::<_, ApiError>((id, replaced))
        }
        .await;
        match result {
            Ok((id, replaced)) => {
                let mut gone = Vec::new();
                if !copy {
                    gone.push((bucket.clone(), source.clone(), Some(old_version)));
                }
                if upsert {
                    if let Some(v) = replaced {
                        gone.push((dest_bucket.clone(), dest.clone(), Some(v)));
                    }
                }
                self.forget(gone.into_iter()).await;
                Ok(if copy {
                    ok_json(json!({ "Id": id.to_string(), "Key": format!("{dest_bucket}/{dest}") }))
                } else {
                    message("Successfully moved")
                })
            }
            Err(e) => {
                self.forget(std::iter::once((dest_bucket, dest, Some(version)))).await;
                Err(e)
            }
        }
    }

    async fn move_object(&self, body: Value) -> Result<Response, ApiError> {
        self.relocate(body, false).await
    }

    async fn copy_object(&self, body: Value) -> Result<Response, ApiError> {
        self.relocate(body, true).await
    }

    // ---- objects: reads ----

    /// `POST /object/list/{bucket}` `{prefix, limit, offset, sortBy: {column,
    /// order}, search}`: one level under `prefix`, folders first, through
    /// `storage.search()` as the caller.
    async fn list_objects(&self, bucket: &str, body: Value) -> Result<Response, ApiError> {
        let prefix = body.get("prefix").and_then(Value::as_str).unwrap_or("").trim_matches('/');
        let (prefix, levels) = if prefix.is_empty() {
            (String::new(), 1)
        } else {
            (format!("{prefix}/"), prefix.split('/').count() as i32 + 1)
        };
        let int = |k: &str, default: i64| body.get(k).and_then(Value::as_i64).unwrap_or(default);
        let limit = int("limit", 100).clamp(0, 10_000) as i32;
        let offset = int("offset", 0).max(0) as i32;
        let search = body.get("search").and_then(Value::as_str).unwrap_or("");
        let sort = body.get("sortBy");
        let column = sort.and_then(|s| s.get("column")).and_then(Value::as_str).unwrap_or("name");
        let order = sort.and_then(|s| s.get("order")).and_then(Value::as_str).unwrap_or("asc");
        let rows = self
            .as_caller(
                "SELECT coalesce(json_agg(s), '[]')::text FROM storage.search($1, $2, $3, $4, $5, $6, $7, $8) s",
                &[&prefix, &bucket, &limit, &levels, &offset, &search, &column, &order],
            )
            .await?;
        Ok(ok_raw(rows[0].get(0)))
    }

    /// `POST /object/list-v2/{bucket}` `{prefix, limit, cursor,
    /// with_delimiter, sortBy: {column, order}}` (storage-js `listV2`): a
    /// page of keys under `prefix` as S3's ListObjectsV2 pages them — full
    /// keys, and with `with_delimiter` the sub-folders as common prefixes
    /// (`key/`) beside the objects directly under `prefix` — answered
    /// `{hasNext, folders, objects, nextCursor}`. Without a delimiter
    /// `sortBy` orders by `name`, `updated_at` or `created_at` (then name);
    /// with one, by name. As the caller: policies decide what is listed.
    async fn list_objects_v2(&self, bucket: &str, body: Value) -> Result<Response, ApiError> {
        rules::bucket_id(bucket)?;
        let prefix = body.get("prefix").and_then(Value::as_str).unwrap_or("").trim_start_matches('/').to_string();
        let limit = match body.get("limit") {
            None | Some(Value::Null) => 1000,
            Some(v) => match v.as_i64() {
                Some(n) if n >= 1 => n.min(1000),
                _ => return Err(StorageError::InvalidRequest("limit must be a positive integer".into()).into()),
            },
        };
        let delimiter = body.get("with_delimiter").and_then(Value::as_bool).unwrap_or(false);
        let sort = body.get("sortBy");
        let column = match sort.and_then(|s| s.get("column")).and_then(Value::as_str).unwrap_or("name") {
            "name" => "name",
            "updated_at" if !delimiter => "updated_at",
            "created_at" if !delimiter => "created_at",
            "updated_at" | "created_at" => "name",
            other => {
                return Err(StorageError::InvalidRequest(format!(
                    "sortBy.column must be one of name, updated_at, created_at, not {other}"
                ))
                .into())
            }
        };
        let descending = match sort.and_then(|s| s.get("order")).and_then(Value::as_str).unwrap_or("asc") {
            "asc" => false,
            "desc" => true,
            _ => return Err(StorageError::InvalidRequest("sortBy.order must be asc or desc".into()).into()),
        };
        // The cursor: the last key of the page, and its sort value.
        let (after_key, after_value) = match body.get("cursor").and_then(Value::as_str).filter(|c| !c.is_empty()) {
            None => (None, None),
            Some(cursor) => {
                let bad = || ApiError::from(StorageError::InvalidRequest("Invalid cursor".into()));
                use base64::Engine;
                let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
                let value: Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
                let key = value.get("k").and_then(Value::as_str).ok_or_else(bad)?.to_string();
                (Some(key), value.get("v").and_then(Value::as_str).map(str::to_string))
            }
        };
        // One statement for both modes: with the delimiter, a key past the
        // prefix that has a further `/` collapses to its folder.
        let (op, order) = if descending { ("<", "DESC") } else { (">", "ASC") };
        let sort_value = if column == "name" {
            "NULL::text".to_string()
        } else {
            format!("to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US')")
        };
        let sql = format!(
            "WITH entries AS ( \
               SELECT CASE WHEN $3 AND strpos(substr(name, length($2) + 1), '/') > 0 \
                        THEN $2 || split_part(substr(name, length($2) + 1), '/', 1) || '/' ELSE name END AS key, \
                      id, name, version, metadata, updated_at, created_at, last_accessed_at, {sort_value} AS sort_value \
               FROM storage.objects \
               WHERE bucket_id = $1 AND name COLLATE \"C\" >= $2 AND starts_with(name, $2)), \
             page AS ( \
               SELECT DISTINCT ON (sort_value, key COLLATE \"C\") * FROM entries \
               WHERE $4::text IS NULL OR (coalesce(sort_value, ''), key COLLATE \"C\") {op} (coalesce($5, ''), $4::text) \
               ORDER BY sort_value {order}, key COLLATE \"C\" {order}, (key = name) \
               LIMIT $6) \
             SELECT coalesce(json_agg(json_build_object( \
                      'folder', key <> name, 'key', key, 'id', id, 'name', name, 'version', version, \
                      'updated_at', updated_at, 'created_at', created_at, 'last_accessed_at', last_accessed_at, \
                      'metadata', metadata, 'sort_value', sort_value) \
                    ORDER BY sort_value {order}, key COLLATE \"C\" {order}), '[]')::text FROM page"
        );
        let rows =
            self.as_caller(&sql, &[&bucket, &prefix, &delimiter, &after_key, &after_value, &(limit + 1)]).await?;
        let mut entries: Vec<Value> =
            serde_json::from_str(rows[0].get(0)).map_err(|e| StorageError::Internal(e.to_string()))?;
        let has_next = entries.len() as i64 > limit;
        entries.truncate(limit as usize);
        let next_cursor = match entries.last().filter(|_| has_next) {
            None => None,
            Some(last) => {
                use base64::Engine;
                let cursor = json!({ "k": last["key"], "v": last["sort_value"] });
                Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(cursor.to_string()))
            }
        };
        let (mut folders, mut objects) = (Vec::new(), Vec::new());
        for mut entry in entries {
            let folder = entry["folder"].as_bool().unwrap_or(false);
            let map = entry.as_object_mut().expect("a JSON object per entry");
            map.remove("folder");
            map.remove("sort_value");
            if folder {
                let key = map["key"].clone();
                folders.push(json!({ "name": key, "key": key }));
            } else {
                objects.push(entry);
            }
        }
        let mut body = json!({ "hasNext": has_next, "folders": folders, "objects": objects });
        if let Some(cursor) = next_cursor {
            body["nextCursor"] = json!(cursor);
        }
        Ok(ok_json(body))
    }

    /// The row of `bucket/name` as `access` allows: `(id, version, metadata)`.
    async fn find(&self, bucket: &str, name: &str, access: Access) -> Result<(uuid::Uuid, String, Value), ApiError> {
        let rows = if access == Access::Caller {
            self.as_caller(
                "SELECT id, version, metadata FROM storage.objects WHERE bucket_id = $1 AND name = $2",
                &[&bucket, &name],
            )
            .await?
        } else {
            let client = self.client().await?;
            let statement = client
                .prepare_cached("SELECT id, version, metadata FROM fluxbase.storage_object_unchecked($1, $2, $3)")
                .await
                .map_err(pg)?;
            client.query(&statement, &[&bucket, &name, &(access == Access::Public)]).await.map_err(pg)?
        };
        let row = rows.first().ok_or(StorageError::NoSuchKey)?;
        let version: Option<String> = row.get(1);
        Ok((row.get(0), version.ok_or(StorageError::NoSuchKey)?, row.get::<_, Option<Value>>(2).unwrap_or(json!({}))))
    }

    async fn download(&self, bucket: &str, name: &str, access: Access, method: &Method) -> Result<Response, ApiError> {
        rules::bucket_id(bucket)?;
        rules::object_name(name)?;
        if access == Access::Signed {
            let token = crate::http::query_param(self.query, "token").ok_or(StorageError::InvalidSignature)?;
            sign::verify(self.state.config.jwt.secret.as_deref(), &token, &format!("{bucket}/{name}"))?;
        }
        let (_, version, metadata) = self.find(bucket, name, access).await?;
        let size = metadata.get("size").and_then(Value::as_u64).unwrap_or(0);
        let range = match self.header("range") {
            None => None,
            Some(r) => match rules::range(r, size) {
                Ok(range) => range,
                Err(()) => {
                    return Ok(http::Response::builder()
                        .status(StatusCode::RANGE_NOT_SATISFIABLE)
                        .header(header::CONTENT_RANGE, format!("bytes */{size}"))
                        .body(Body::empty())
                        .expect("static response parts"))
                }
            },
        };
        let mut builder = http::Response::builder()
            .status(if range.is_some() { StatusCode::PARTIAL_CONTENT } else { StatusCode::OK })
            .header(header::ACCEPT_RANGES, "bytes");
        let text = |k: &str| metadata.get(k).and_then(Value::as_str);
        for (name, value) in [
            (header::CONTENT_TYPE, text("mimetype")),
            (header::CACHE_CONTROL, text("cacheControl")),
            (header::ETAG, text("eTag")),
        ] {
            if let Some(v) = value.and_then(|v| HeaderValue::from_str(v).ok()) {
                builder = builder.header(name, v);
            }
        }
        if let Some(modified) = text("lastModified").and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()) {
            builder = builder.header(
                header::LAST_MODIFIED,
                modified.with_timezone(&chrono::Utc).format("%a, %d %b %Y %H:%M:%S GMT").to_string(),
            );
        }
        if let Some(v) = content_disposition(self.query, name) {
            builder = builder.header(header::CONTENT_DISPOSITION, v);
        }
        let length = match range {
            Some((first, last)) => {
                builder = builder.header(header::CONTENT_RANGE, format!("bytes {first}-{last}/{size}"));
                last - first + 1
            }
            None => size,
        };
        if method == Method::HEAD {
            return Ok(builder
                .header(header::CONTENT_LENGTH, length)
                .body(Body::empty())
                .expect("static response parts"));
        }
        let mut stream = self.backend.get(key(bucket, name, &version), range).await.map_err(|e| match e {
            BackendError::NotFound => ApiError::from(StorageError::NoSuchKey),
            other => StorageError::Internal(other.to_string()).into(),
        })?;
        let (sender, chunks) = tokio::sync::mpsc::channel(2);
        tokio::spawn(async move {
            while let Some(chunk) = stream.next().await {
                if sender.send(chunk).await.is_err() {
                    return;
                }
            }
        });
        Ok(builder.body(Body::Stream { chunks, remaining: length }).expect("static response parts"))
    }

    /// `GET /object/info/{bucket}/{name}`: the object's facts, as storage-api's info.
    async fn info(&self, bucket: &str, name: &str) -> Result<Response, ApiError> {
        let rows = self
            .as_caller(
                "SELECT json_build_object('id', id, 'name', name, 'version', version, 'bucket_id', bucket_id, \
                 'size', (metadata->>'size')::bigint, 'content_type', metadata->>'mimetype', \
                 'cache_control', metadata->>'cacheControl', 'etag', metadata->>'eTag', \
                 'metadata', user_metadata, 'last_modified', updated_at, 'created_at', created_at)::text \
                 FROM storage.objects WHERE bucket_id = $1 AND name = $2",
                &[&bucket, &name],
            )
            .await?;
        rows.first().map(|r| ok_raw(r.get(0))).ok_or_else(|| StorageError::NoSuchKey.into())
    }

    // ---- signed URLs ----

    fn expires_in(body: &Value) -> Result<u64, ApiError> {
        match body.get("expiresIn").and_then(Value::as_i64) {
            Some(n) if n > 0 => Ok(n as u64),
            _ => Err(StorageError::InvalidRequest("expiresIn must be a positive number of seconds".into()).into()),
        }
    }

    /// A signed download URL; with `transformations`, of the rendered
    /// image (`/render/image/sign/…`), the transforms sealed in the token.
    fn signed_url(
        &self,
        bucket: &str,
        name: &str,
        expires_in: u64,
        transformations: Option<String>,
    ) -> Result<String, ApiError> {
        let path = if transformations.is_some() { "render/image" } else { "object" };
        let mut token = sign::token(format!("{bucket}/{name}"));
        token.transformations = transformations;
        let token = sign::sign(self.state.config.jwt.secret.as_deref(), token, expires_in)?;
        // Unencoded, as storage-api answers: storage-js passes it through encodeURI.
        Ok(format!("/{path}/sign/{bucket}/{name}?token={token}"))
    }

    /// `POST /object/sign/{bucket}/{name}` `{expiresIn}`: only for an
    /// object the caller can read.
    async fn sign_one(&self, bucket: &str, name: &str, body: Value) -> Result<Response, ApiError> {
        let expires_in = Self::expires_in(&body)?;
        let transformations = render::signed_transformations(self.state.config.storage.image_transforms, &body)?;
        self.find(bucket, name, Access::Caller).await?;
        Ok(ok_json(json!({ "signedURL": self.signed_url(bucket, name, expires_in, transformations)? })))
    }

    /// `POST /object/sign/{bucket}` `{expiresIn, paths}`: one entry per path,
    /// with an error for those the caller cannot read.
    async fn sign_many(&self, bucket: &str, body: Value) -> Result<Response, ApiError> {
        let expires_in = Self::expires_in(&body)?;
        let paths: Vec<String> = body
            .get("paths")
            .and_then(Value::as_array)
            .ok_or(StorageError::MissingParameter("paths"))?
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
        let rows = self
            .as_caller("SELECT name FROM storage.objects WHERE bucket_id = $1 AND name = ANY($2)", &[&bucket, &paths])
            .await?;
        let found: std::collections::HashSet<String> = rows.iter().map(|r| r.get(0)).collect();
        let mut out = Vec::with_capacity(paths.len());
        for path in &paths {
            out.push(if found.contains(path) {
                json!({ "error": null, "path": path, "signedURL": self.signed_url(bucket, path, expires_in, None)? })
            } else {
                json!({ "error": NOT_SIGNABLE, "path": path, "signedURL": null })
            });
        }
        Ok(ok_json(Value::Array(out)))
    }

    /// `POST /object/upload/sign/{bucket}/{name}`: a URL that uploads once
    /// as the caller, if the caller's policies would let them insert it now
    /// (checked by inserting and rolling back).
    async fn sign_upload(&self, bucket: &str, name: &str) -> Result<Response, ApiError> {
        rules::bucket_id(bucket)?;
        rules::object_name(name)?;
        let upsert = self.header("x-upsert").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let sub = sub_of(&self.caller.claims);
        let owner = sub.as_deref().and_then(|s| uuid::Uuid::parse_str(s).ok());
        let claims = &*self.caller.claims;
        let client = self.client().await?;
        let steps = [
            Step { sql: BUCKET_RULES, params: &[&bucket] },
            Step { sql: AUTHENTICATE, params: &[&claims] },
            Step {
                sql: "INSERT INTO storage.objects (bucket_id, name, owner, owner_id, version) \
                 VALUES ($1, $2, $3, $4, 'probe') ON CONFLICT (bucket_id, name) DO NOTHING",
                params: &[&bucket, &name, &owner, &sub],
            },
        ];
        let mut answers = pipeline::transaction(&client, &steps, End::Rollback).await.map_err(pg)?.into_iter();
        let rules = answers.next().expect("one answer per step").map_err(pg)?;
        rules.first().ok_or(StorageError::NoSuchBucket)?;
        answers.nth(1).expect("one answer per step").map_err(|e| db_error(e, StorageError::KeyAlreadyExists))?;
        let mut token = sign::token(format!("{bucket}/{name}"));
        token.owner = sub;
        token.upsert = Some(upsert);
        token.jti = Some(uuid::Uuid::new_v4().to_string());
        let token = sign::sign(
            self.state.config.jwt.secret.as_deref(),
            token,
            self.state.config.storage.signed_upload_expiry_seconds,
        )?;
        let url = format!("/object/upload/sign/{bucket}/{name}?token={token}");
        Ok(ok_json(json!({ "url": url, "token": token })))
    }

    /// `PUT /object/upload/sign/{bucket}/{name}?token=…`: the upload, once.
    async fn upload_signed(&self, bucket: &str, name: &str, body: ByteStream) -> Result<Response, ApiError> {
        let body = SharedBody::new(body);
        let result = self.upload_signed_checked(bucket, name, body.clone().boxed()).await;
        if result.is_err() {
            body.drain(DRAIN_LIMIT).await;
        }
        result
    }

    async fn upload_signed_checked(&self, bucket: &str, name: &str, body: ByteStream) -> Result<Response, ApiError> {
        let token = crate::http::query_param(self.query, "token").ok_or(StorageError::InvalidSignature)?;
        let claims = sign::verify(self.state.config.jwt.secret.as_deref(), &token, &format!("{bucket}/{name}"))
            .map_err(|e| match e {
                StorageError::ExpiredToken => e,
                _ => StorageError::InvalidUploadSignature("Invalid upload Signature".into()),
            })?;
        let jti = claims.jti.ok_or_else(|| StorageError::InvalidUploadSignature("Invalid upload Signature".into()))?;
        let signed = SignedUpload { owner: claims.owner, upsert: claims.upsert.unwrap_or(false), jti, exp: claims.exp };
        self.upload(bucket, name, Write::Upload, body, Some(signed)).await
    }
}

/// A bucket's limits, whatever the caller's policies on buckets say.
const BUCKET_RULES: &str = "SELECT public, file_size_limit, allowed_mime_types FROM fluxbase.storage_bucket_rules($1)";

/// Serialises writers of one path (`$1/$2`) until the transaction ends.
const LOCK_PATH: &str = "SELECT pg_advisory_xact_lock(hashtextextended($1 || '/' || $2, 17))";

/// A version about to be stored (`$1`, for `$2/$3`): see `precheck_recording`.
/// Its row's transaction forgets it (FORGET_PENDING).
const RECORD_PENDING: &str =
    "INSERT INTO fluxbase.storage_pending_versions (version, bucket_id, name) VALUES ($1, $2, $3)";
const FORGET_PENDING: &str = "DELETE FROM fluxbase.storage_pending_versions WHERE version = $1";

/// The version a write to `$1/$2` replaces, whatever the caller may read.
const PREVIOUS_VERSION: &str = "SELECT version FROM fluxbase.storage_object_unchecked($1, $2, false)";

/// Bytes of a refused upload read and dropped before answering; a client
/// sending more than this sees the connection close.
const DRAIN_LIMIT: u64 = 64 << 20;

/// A request body that the upload reads and, after a refusal, the handler
/// drains: two handles on one stream (the lock is only taken inside a poll).
#[derive(Clone)]
struct SharedBody(Arc<std::sync::Mutex<ByteStream>>);

impl SharedBody {
    fn new(body: ByteStream) -> SharedBody {
        SharedBody(Arc::new(std::sync::Mutex::new(body)))
    }

    async fn drain(mut self, limit: u64) {
        let mut read = 0u64;
        while let Some(Ok(chunk)) = self.next().await {
            read += chunk.len() as u64;
            if read > limit {
                return;
            }
        }
    }
}

impl futures_util::Stream for SharedBody {
    type Item = Result<Bytes, BodyError>;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).as_mut().poll_next(cx)
    }
}

/// A multipart file's stream, with the form it comes from kept alive.
struct KeepAlive {
    stream: ByteStream,
    _form: multer::Multipart<'static>,
}

impl futures_util::Stream for KeepAlive {
    type Item = Result<Bytes, BodyError>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.stream.as_mut().poll_next(cx)
    }
}
