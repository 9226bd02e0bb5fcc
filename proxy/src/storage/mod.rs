//! `/storage/v1`: Supabase Storage as storage-js calls it: buckets, objects,
//! signed URLs, public URLs. Rows live in `storage.buckets`/`storage.objects`
//! (sql/storage.sql) and every change to them runs as the caller
//! (`fluxbase.authenticate`: role and claims), so RLS policies decide; the
//! bytes live in a `Backend` under `<bucket>/<name>/<version>`.
//! - `backend.rs`: the `Backend` trait and the local file system;
//! - `s3.rs`: the S3 backend;
//! - `rules.rs`: names, sizes, MIME patterns, ranges (pure);
//! - `sign.rs`: signed URL tokens;
//! - `error.rs`: storage-api's error catalogue;
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
mod rules;
mod s3;
mod sign;

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

/// Sweeps of temporary files a crash left behind.
const SWEEP_EVERY: Duration = Duration::from_secs(3600);

/// The message of a signed URL that could not be made in a batch.
const NOT_SIGNABLE: &str = "Either the object does not exist or you do not have access to it";

pub struct StorageService {
    backend: Arc<dyn Backend>,
    sweeper: std::sync::Once,
}

impl StorageService {
    pub fn new(config: &crate::config::Config) -> Result<StorageService, String> {
        let backend: Arc<dyn Backend> = match config.storage.backend {
            crate::config::StorageBackend::Local => Arc::new(LocalFs::new(config.storage.root.clone())),
            crate::config::StorageBackend::S3 => Arc::new(s3::S3Store::new(&config.storage)?),
        };
        Ok(StorageService { backend, sweeper: std::sync::Once::new() })
    }

    /// Removes what crashed uploads left behind, now and every hour (the
    /// first storage request starts it, so `check-config` touches no disk).
    fn start_sweeper(&self) {
        self.sweeper.call_once(|| {
            let backend = self.backend.clone();
            tokio::spawn(async move {
                loop {
                    match backend.recover().await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(removed = n, "storage: removed what crashed uploads left behind"),
                        Err(e) => tracing::warn!(error = %e, "storage: sweeping crashed uploads failed"),
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
        self.start_sweeper();
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
            (&Method::GET, ["bucket"]) | (&Method::GET, ["bucket", ""]) => call.list_buckets().await,
            (&Method::POST, ["bucket"]) | (&Method::POST, ["bucket", ""]) => {
                call.create_bucket(json_body(body).await?).await
            }
            (&Method::POST, ["bucket", id, "empty"]) => call.empty_bucket(id).await,
            (&Method::GET, ["bucket", id]) => call.get_bucket(id).await,
            (&Method::PUT, ["bucket", id]) => call.update_bucket(id, json_body(body).await?).await,
            (&Method::DELETE, ["bucket", id]) => call.delete_bucket(id).await,
            (&Method::POST, ["object", "list", bucket]) => call.list_objects(bucket, json_body(body).await?).await,
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

fn sub_of(claims: &Value) -> Option<String> {
    claims.get("sub").and_then(Value::as_str).map(str::to_string)
}

impl Call<'_> {
    async fn client(&self) -> Result<deadpool_postgres::Object, ApiError> {
        self.state.client().await
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn file_size_limit(&self) -> u64 {
        self.state.config.storage.file_size_limit
    }

    // ---- buckets ----

    async fn list_buckets(&self) -> Result<Response, ApiError> {
        let mut client = self.client().await?;
        let tx = as_caller(&mut client, &self.caller.claims).await?;
        let row = tx
            .query_one(
                "SELECT coalesce(json_agg(b ORDER BY b.name), '[]')::text FROM (SELECT id, name, owner, owner_id, public, \
                 file_size_limit, allowed_mime_types, created_at, updated_at FROM storage.buckets) b",
                &[],
            )
            .await
            .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        Ok(ok_raw(row.get(0)))
    }

    async fn get_bucket(&self, id: &str) -> Result<Response, ApiError> {
        let mut client = self.client().await?;
        let tx = as_caller(&mut client, &self.caller.claims).await?;
        let row = tx
            .query_opt(
                "SELECT row_to_json(b)::text FROM (SELECT id, name, owner, owner_id, public, file_size_limit, \
                 allowed_mime_types, created_at, updated_at FROM storage.buckets WHERE id = $1) b",
                &[&id],
            )
            .await
            .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        row.map(|r| ok_raw(r.get(0))).ok_or_else(|| StorageError::NoSuchBucket.into())
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
        let mut client = self.client().await?;
        let tx = as_caller(&mut client, &self.caller.claims).await?;
        tx.execute(
            "INSERT INTO storage.buckets (id, name, owner, owner_id, public, file_size_limit, allowed_mime_types) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[&id, &name, &owner, &sub, &public, &size.flatten(), &types.flatten()],
        )
        .await
        .map_err(|e| db_error(e, StorageError::BucketAlreadyExists))?;
        tx.commit().await.map_err(pg)?;
        Ok(ok_json(json!({ "name": id })))
    }

    async fn update_bucket(&self, id: &str, body: Value) -> Result<Response, ApiError> {
        let public = body.get("public").and_then(Value::as_bool);
        let (size, types) = self.bucket_limits(&body)?;
        let mut client = self.client().await?;
        let tx = as_caller(&mut client, &self.caller.claims).await?;
        let n = tx
            .execute(
                "UPDATE storage.buckets SET public = coalesce($2, public), \
                 file_size_limit = CASE WHEN $3 THEN $4 ELSE file_size_limit END, \
                 allowed_mime_types = CASE WHEN $5 THEN $6 ELSE allowed_mime_types END, updated_at = now() \
                 WHERE id = $1",
                &[&id, &public, &size.is_some(), &size.flatten(), &types.is_some(), &types.flatten()],
            )
            .await
            .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        if n == 0 {
            return Err(StorageError::NoSuchBucket.into());
        }
        Ok(message("Successfully updated"))
    }

    async fn empty_bucket(&self, id: &str) -> Result<Response, ApiError> {
        let mut client = self.client().await?;
        let tx = as_caller(&mut client, &self.caller.claims).await?;
        if tx.query_opt("SELECT 1 FROM storage.buckets WHERE id = $1", &[&id]).await.map_err(pg)?.is_none() {
            return Err(StorageError::NoSuchBucket.into());
        }
        let rows = tx
            .query("DELETE FROM storage.objects WHERE bucket_id = $1 RETURNING name, version", &[&id])
            .await
            .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        self.forget(rows.iter().map(|r| (id.to_string(), r.get::<_, String>(0), r.get::<_, Option<String>>(1)))).await;
        Ok(message("Successfully emptied"))
    }

    async fn delete_bucket(&self, id: &str) -> Result<Response, ApiError> {
        let mut client = self.client().await?;
        let tx = as_caller(&mut client, &self.caller.claims).await?;
        let n = tx
            .execute("DELETE FROM storage.buckets WHERE id = $1", &[&id])
            .await
            .map_err(|e| db_error(e, StorageError::BucketNotEmpty))?;
        tx.commit().await.map_err(pg)?;
        if n == 0 {
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
        let client = self.client().await?;
        let rules_row = client
            .query_opt(
                "SELECT public, file_size_limit, allowed_mime_types FROM fluxbase.storage_bucket_rules($1)",
                &[&bucket],
            )
            .await
            .map_err(pg)?
            .ok_or(StorageError::NoSuchBucket)?;
        drop(client);
        let bucket_limit: Option<i64> = rules_row.get(1);
        let allowed: Option<Vec<String>> = rules_row.get(2);
        let limit = bucket_limit.map_or(self.file_size_limit(), |l| (l.max(0) as u64).min(self.file_size_limit()));
        let declared = self.header("content-length").and_then(|v| v.parse::<u64>().ok());
        let multipart = self.header("content-type").is_some_and(|t| rules::essence(t) == "multipart/form-data");
        if declared.is_some_and(|n| n > limit) && !multipart {
            return Err(StorageError::EntityTooLarge.into());
        }
        let upsert = match &signed {
            Some(s) => s.upsert,
            None => self.header("x-upsert").is_some_and(|v| v.eq_ignore_ascii_case("true")),
        };
        if signed.is_none() {
            self.precheck(bucket, name, write, upsert).await?;
        }
        let object = self.incoming(body).await?;
        if !rules::mime_allowed(allowed.as_deref(), &object.content_type) {
            return Err(StorageError::InvalidMimeType(object.content_type).into());
        }

        let version = uuid::Uuid::new_v4().to_string();
        let new_key = key(bucket, name, &version);
        let size = self.backend.put(new_key.clone(), object.body, limit).await.map_err(|e| match e {
            BackendError::TooLarge { .. } => ApiError::from(StorageError::EntityTooLarge),
            BackendError::Body(m) => StorageError::InvalidRequest(format!("reading the upload failed: {m}")).into(),
            other => StorageError::Internal(other.to_string()).into(),
        })?;

        let metadata = json!({
            "eTag": format!("\"{}\"", version.replace('-', "")),
            "size": size,
            "mimetype": object.content_type,
            "cacheControl": object.cache_control,
            "lastModified": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "contentLength": size,
            "httpStatusCode": 200,
        });
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

    /// Would the caller's policies let this write through? Tried and rolled
    /// back before a byte is read, as storage-api's `canUpload`, so a
    /// refused or duplicate upload is answered at once and costs no disk.
    /// The write itself is checked again when it commits.
    async fn precheck(&self, bucket: &str, name: &str, write: Write, upsert: bool) -> Result<(), ApiError> {
        let sub = sub_of(&self.caller.claims);
        let owner = sub.as_deref().and_then(|s| uuid::Uuid::parse_str(s).ok());
        let mut client = self.client().await?;
        let tx = as_caller(&mut client, &self.caller.claims).await?;
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
        let row = tx
            .query_opt(sql, &[&bucket, &name, &owner, &sub])
            .await
            .map_err(|e| db_error(e, StorageError::KeyAlreadyExists))?;
        tx.rollback().await.map_err(pg)?;
        row.map(|_| ()).ok_or_else(|| StorageError::NoSuchKey.into())
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
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        lock_path(&tx, bucket, name).await?;
        if let Some(s) = signed {
            let expires = s.exp as f64;
            let fresh: bool = tx
                .query_one("SELECT fluxbase.storage_upload_token_redeem($1, to_timestamp($2))", &[&s.jti, &expires])
                .await
                .map_err(pg)?
                .get(0);
            if !fresh {
                return Err(
                    StorageError::InvalidUploadSignature("The signed upload URL was already used".into()).into()
                );
            }
        }
        let previous: Option<Option<String>> = tx
            .query_opt("SELECT version FROM fluxbase.storage_object_unchecked($1, $2, false)", &[&bucket, &name])
            .await
            .map_err(pg)?
            .map(|r| r.get(0));
        tx.execute("SELECT fluxbase.authenticate($1)", &[claims]).await.map_err(pg)?;
        let sub = sub_of(claims);
        let owner = sub.as_deref().and_then(|s| uuid::Uuid::parse_str(s).ok());
        let row = match (write, upsert) {
            (Write::Update, _) => tx
                .query_opt(
                    "UPDATE storage.objects SET version = $3, metadata = $4, user_metadata = $5, owner = $6, \
                     owner_id = $7, last_accessed_at = now() WHERE bucket_id = $1 AND name = $2 RETURNING id",
                    &[&bucket, &name, &version, metadata, &user_metadata, &owner, &sub],
                )
                .await
                .map_err(|e| db_error(e, StorageError::KeyAlreadyExists))?,
            (Write::Upload, upsert) => {
                let sql = if upsert {
                    "INSERT INTO storage.objects (bucket_id, name, version, metadata, user_metadata, owner, owner_id) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (bucket_id, name) DO UPDATE SET \
                     version = excluded.version, metadata = excluded.metadata, user_metadata = excluded.user_metadata, \
                     owner = excluded.owner, owner_id = excluded.owner_id, last_accessed_at = now() RETURNING id"
                } else {
                    "INSERT INTO storage.objects (bucket_id, name, version, metadata, user_metadata, owner, owner_id) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id"
                };
                tx.query_opt(sql, &[&bucket, &name, &version, metadata, &user_metadata, &owner, &sub])
                    .await
                    .map_err(|e| db_error(e, StorageError::KeyAlreadyExists))?
            }
        };
        let id: uuid::Uuid = row.ok_or(StorageError::NoSuchKey)?.get(0);
        tx.commit().await.map_err(pg)?;
        Ok((id, previous.flatten()))
    }

    async fn remove_one(&self, bucket: &str, name: &str) -> Result<Response, ApiError> {
        let mut client = self.client().await?;
        let tx = as_caller(&mut client, &self.caller.claims).await?;
        let rows = tx
            .query(
                "DELETE FROM storage.objects WHERE bucket_id = $1 AND name = $2 RETURNING version",
                &[&bucket, &name],
            )
            .await
            .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
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
        let mut client = self.client().await?;
        let tx = as_caller(&mut client, &self.caller.claims).await?;
        let rows = tx
            .query(
                "DELETE FROM storage.objects WHERE bucket_id = $1 AND name = ANY($2) RETURNING name, version, \
                 json_build_object('bucket_id', bucket_id, 'name', name, 'id', id, 'owner', owner, 'owner_id', \
                 owner_id, 'version', version, 'updated_at', updated_at, 'created_at', created_at, \
                 'last_accessed_at', last_accessed_at, 'metadata', metadata, 'user_metadata', user_metadata)::text",
                &[&bucket, &names],
            )
            .await
            .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
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

        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        lock_path(&tx, &dest_bucket, &dest).await?;
        let replaced: Option<Option<String>> = tx
            .query_opt("SELECT version FROM fluxbase.storage_object_unchecked($1, $2, false)", &[&dest_bucket, &dest])
            .await
            .map_err(pg)?
            .map(|r| r.get(0));
        tx.execute("SELECT fluxbase.authenticate($1)", &[&*self.caller.claims]).await.map_err(pg)?;
        let source_row = tx
            .query_opt(
                "SELECT version, metadata, user_metadata FROM storage.objects WHERE bucket_id = $1 AND name = $2",
                &[&bucket, &source],
            )
            .await
            .map_err(pg)?
            .ok_or(StorageError::NoSuchKey)?;
        let old_version: Option<String> = source_row.get(0);
        let old_version = old_version.ok_or(StorageError::NoSuchKey)?;
        let version = uuid::Uuid::new_v4().to_string();
        let new_key = key(&dest_bucket, &dest, &version);
        self.backend.copy(key(&bucket, &source, &old_version), new_key.clone()).await.map_err(|e| match e {
            BackendError::NotFound => ApiError::from(StorageError::NoSuchKey),
            other => StorageError::Internal(other.to_string()).into(),
        })?;
        let result = async {
            let sub = sub_of(&self.caller.claims);
            let owner = sub.as_deref().and_then(|s| uuid::Uuid::parse_str(s).ok());
            if replaced.is_some() && upsert {
                tx.execute("DELETE FROM storage.objects WHERE bucket_id = $1 AND name = $2", &[&dest_bucket, &dest])
                    .await
                    .map_err(pg)?;
            }
            let row = if copy {
                let mut metadata: Value = source_row.get(1);
                if let Some(m) = metadata.as_object_mut() {
                    m.insert("eTag".into(), json!(format!("\"{}\"", version.replace('-', ""))));
                }
                let user_metadata: Option<Value> = match body.get("copyMetadata").and_then(Value::as_bool) {
                    Some(false) => body.get("metadata").cloned(),
                    _ => source_row.get(2),
                };
                tx.query_one(
                    "INSERT INTO storage.objects (bucket_id, name, version, metadata, user_metadata, owner, owner_id) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
                    &[&dest_bucket, &dest, &version, &metadata, &user_metadata, &owner, &sub],
                )
                .await
                .map_err(|e| db_error(e, StorageError::KeyAlreadyExists))?
            } else {
                tx.query_opt(
                    "UPDATE storage.objects SET bucket_id = $3, name = $4, version = $5, last_accessed_at = now() \
                     WHERE bucket_id = $1 AND name = $2 RETURNING id",
                    &[&bucket, &source, &dest_bucket, &dest, &version],
                )
                .await
                .map_err(|e| db_error(e, StorageError::KeyAlreadyExists))?
                .ok_or(StorageError::NoSuchKey)?
            };
            let id: uuid::Uuid = row.get(0);
            tx.commit().await.map_err(pg)?;
            Ok::<_, ApiError>(id)
        }
        .await;
        match result {
            Ok(id) => {
                let mut gone = Vec::new();
                if !copy {
                    gone.push((bucket.clone(), source.clone(), Some(old_version)));
                }
                if upsert {
                    if let Some(v) = replaced.flatten() {
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
        let mut client = self.client().await?;
        let tx = as_caller(&mut client, &self.caller.claims).await?;
        let row = tx
            .query_one(
                "SELECT coalesce(json_agg(s), '[]')::text FROM storage.search($1, $2, $3, $4, $5, $6, $7, $8) s",
                &[&prefix, &bucket, &limit, &levels, &offset, &search, &column, &order],
            )
            .await
            .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        Ok(ok_raw(row.get(0)))
    }

    /// The row of `bucket/name` as `access` allows: `(id, version, metadata)`.
    async fn find(&self, bucket: &str, name: &str, access: Access) -> Result<(uuid::Uuid, String, Value), ApiError> {
        let mut client = self.client().await?;
        let row = if access == Access::Caller {
            let tx = as_caller(&mut client, &self.caller.claims).await?;
            let row = tx
                .query_opt(
                    "SELECT id, version, metadata FROM storage.objects WHERE bucket_id = $1 AND name = $2",
                    &[&bucket, &name],
                )
                .await
                .map_err(pg)?;
            tx.commit().await.map_err(pg)?;
            row
        } else {
            client
                .query_opt(
                    "SELECT id, version, metadata FROM fluxbase.storage_object_unchecked($1, $2, $3)",
                    &[&bucket, &name, &(access == Access::Public)],
                )
                .await
                .map_err(pg)?
        };
        let row = row.ok_or(StorageError::NoSuchKey)?;
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
        if let Some(download) = crate::http::query_param(self.query, "download") {
            let file = if download.is_empty() { name.rsplit('/').next().unwrap_or(name).to_string() } else { download };
            let ascii: String =
                file.chars().map(|c| if c.is_ascii_graphic() && c != '"' || c == ' ' { c } else { '_' }).collect();
            let disposition =
                format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{}", crate::http::form_encode(&file));
            if let Ok(v) = HeaderValue::from_str(&disposition) {
                builder = builder.header(header::CONTENT_DISPOSITION, v);
            }
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
        let mut client = self.client().await?;
        let tx = as_caller(&mut client, &self.caller.claims).await?;
        let row = tx
            .query_opt(
                "SELECT json_build_object('id', id, 'name', name, 'version', version, 'bucket_id', bucket_id, \
                 'size', (metadata->>'size')::bigint, 'content_type', metadata->>'mimetype', \
                 'cache_control', metadata->>'cacheControl', 'etag', metadata->>'eTag', \
                 'metadata', user_metadata, 'last_modified', updated_at, 'created_at', created_at)::text \
                 FROM storage.objects WHERE bucket_id = $1 AND name = $2",
                &[&bucket, &name],
            )
            .await
            .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        row.map(|r| ok_raw(r.get(0))).ok_or_else(|| StorageError::NoSuchKey.into())
    }

    // ---- signed URLs ----

    fn expires_in(body: &Value) -> Result<u64, ApiError> {
        match body.get("expiresIn").and_then(Value::as_i64) {
            Some(n) if n > 0 => Ok(n as u64),
            _ => Err(StorageError::InvalidRequest("expiresIn must be a positive number of seconds".into()).into()),
        }
    }

    fn signed_url(&self, bucket: &str, name: &str, expires_in: u64) -> Result<String, ApiError> {
        let token =
            sign::sign(self.state.config.jwt.secret.as_deref(), sign::token(format!("{bucket}/{name}")), expires_in)?;
        // Unencoded, as storage-api answers: storage-js passes it through encodeURI.
        Ok(format!("/object/sign/{bucket}/{name}?token={token}"))
    }

    /// `POST /object/sign/{bucket}/{name}` `{expiresIn}`: only for an
    /// object the caller can read.
    async fn sign_one(&self, bucket: &str, name: &str, body: Value) -> Result<Response, ApiError> {
        let expires_in = Self::expires_in(&body)?;
        self.find(bucket, name, Access::Caller).await?;
        Ok(ok_json(json!({ "signedURL": self.signed_url(bucket, name, expires_in)? })))
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
        let mut client = self.client().await?;
        let tx = as_caller(&mut client, &self.caller.claims).await?;
        let rows = tx
            .query("SELECT name FROM storage.objects WHERE bucket_id = $1 AND name = ANY($2)", &[&bucket, &paths])
            .await
            .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        let found: std::collections::HashSet<String> = rows.iter().map(|r| r.get(0)).collect();
        let mut out = Vec::with_capacity(paths.len());
        for path in &paths {
            out.push(if found.contains(path) {
                json!({ "error": null, "path": path, "signedURL": self.signed_url(bucket, path, expires_in)? })
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
        let mut client = self.client().await?;
        client
            .query_opt("SELECT 1 FROM fluxbase.storage_bucket_rules($1)", &[&bucket])
            .await
            .map_err(pg)?
            .ok_or(StorageError::NoSuchBucket)?;
        let tx = as_caller(&mut client, &self.caller.claims).await?;
        tx.execute(
            "INSERT INTO storage.objects (bucket_id, name, owner, owner_id, version) VALUES ($1, $2, $3, $4, 'probe') \
             ON CONFLICT (bucket_id, name) DO NOTHING",
            &[&bucket, &name, &owner, &sub],
        )
        .await
        .map_err(|e| db_error(e, StorageError::KeyAlreadyExists))?;
        tx.rollback().await.map_err(pg)?;
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

/// A transaction acting as `claims` (role and `request.jwt.claims`).
async fn as_caller<'c>(
    client: &'c mut deadpool_postgres::Object,
    claims: &Value,
) -> Result<deadpool_postgres::Transaction<'c>, ApiError> {
    let tx = client.transaction().await.map_err(pg)?;
    tx.execute("SELECT fluxbase.authenticate($1)", &[claims]).await.map_err(pg)?;
    Ok(tx)
}

/// Serialises writers of one path until the transaction ends.
async fn lock_path(tx: &deadpool_postgres::Transaction<'_>, bucket: &str, name: &str) -> Result<(), ApiError> {
    tx.execute("SELECT pg_advisory_xact_lock(hashtextextended($1 || '/' || $2, 17))", &[&bucket, &name])
        .await
        .map_err(pg)?;
    Ok(())
}

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
