//! `GET /render/image/{public|authenticated|sign}/{bucket}/{name}`: an
//! object rendered with image transforms (transform.rs), as storage-api
//! serves them through imgproxy. Access is decided as for a download of the
//! object (public bucket, the caller's policies, or a signed token that
//! carries its transforms). Renderings run on blocking threads, at most
//! `storage.transform_concurrency` at once, and are kept on disk under
//! `<root>/~render` keyed by the object's version and the options, so a
//! replaced object is never served from an older rendering.
use bytes::Bytes;
use futures_util::StreamExt;
use http::header::{self, HeaderValue};
use http::StatusCode;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::Semaphore;

use super::backend::BackendError;
use super::error::StorageError;
use super::transform::{self, Limits2, Options, Output, RenderError};
use super::{key, rules, sign, Access, Call};
use crate::error::ApiError;
use crate::http::{Body, Response};

/// The image transform service of one proxy: its switch, limits, permits
/// and cache.
pub struct Renderer {
    enabled: bool,
    limits: Limits2,
    permits: Arc<Semaphore>,
    cache: Option<Arc<RenderCache>>,
}

impl Renderer {
    pub fn new(config: &crate::config::Storage) -> Renderer {
        Renderer {
            enabled: config.image_transforms,
            limits: Limits2 {
                max_pixels: config.transform_max_pixels,
                max_source_bytes: config.transform_max_source_bytes,
            },
            permits: Arc::new(Semaphore::new(config.transform_concurrency)),
            cache: (config.transform_cache_bytes > 0).then(|| {
                Arc::new(RenderCache {
                    dir: config.root.join("~render"),
                    limit: config.transform_cache_bytes,
                    size: AtomicU64::new(0),
                    counted: std::sync::Once::new(),
                    evicting: AtomicBool::new(false),
                })
            }),
        }
    }
}

/// Rendered variants as files `<dir>/<sha256 of key>`: the MIME type on the
/// first line, then the bytes. Written to a temporary name and renamed, so
/// a reader sees a whole file or none. `~` is not allowed in bucket ids, so
/// the directory never meets a bucket's.
struct RenderCache {
    dir: PathBuf,
    limit: u64,
    /// Bytes in the directory (counted once, then kept up to date).
    size: AtomicU64,
    counted: std::sync::Once,
    evicting: AtomicBool,
}

impl RenderCache {
    fn path(&self, key: &str) -> PathBuf {
        let digest = Sha256::digest(key.as_bytes());
        let name: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        self.dir.join(name)
    }

    fn load(&self, key: &str) -> Option<(String, Vec<u8>)> {
        let bytes = std::fs::read(self.path(key)).ok()?;
        let split = bytes.iter().position(|&b| b == b'\n')?;
        let mime = std::str::from_utf8(&bytes[..split]).ok()?.to_string();
        Some((mime, bytes[split + 1..].to_vec()))
    }

    fn store(&self, key: &str, mime: &str, bytes: &[u8]) -> std::io::Result<()> {
        self.counted.call_once(|| {
            let total = std::fs::read_dir(&self.dir)
                .map(|d| d.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum())
                .unwrap_or(0);
            self.size.store(total, Ordering::Relaxed);
        });
        std::fs::create_dir_all(&self.dir)?;
        let tmp = self.dir.join(format!(".tmp-{}", uuid::Uuid::new_v4()));
        let mut data = Vec::with_capacity(mime.len() + 1 + bytes.len());
        data.extend_from_slice(mime.as_bytes());
        data.push(b'\n');
        data.extend_from_slice(bytes);
        std::fs::write(&tmp, &data)?;
        if let Err(e) = std::fs::rename(&tmp, self.path(key)) {
            let _cleanup_failure_is_the_rename_error = std::fs::remove_file(&tmp);
            return Err(e);
        }
        if self.size.fetch_add(data.len() as u64, Ordering::Relaxed) + data.len() as u64 > self.limit {
            self.evict();
        }
        Ok(())
    }

    /// Removes the oldest renderings until the cache is at 3/4 of its limit.
    fn evict(&self) {
        if self.evicting.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut files: Vec<(std::time::SystemTime, u64, PathBuf)> = std::fs::read_dir(&self.dir)
            .map(|d| {
                d.flatten()
                    .filter_map(|e| {
                        let m = e.metadata().ok()?;
                        Some((m.modified().ok()?, m.len(), e.path()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        let mut total: u64 = files.iter().map(|f| f.1).sum();
        for (_, len, path) in files {
            if total <= self.limit / 4 * 3 {
                break;
            }
            if std::fs::remove_file(&path).is_ok() {
                total -= len;
            }
        }
        self.size.store(total, Ordering::Relaxed);
        self.evicting.store(false, Ordering::Release);
    }
}

fn processing(e: RenderError) -> ApiError {
    let status = if matches!(e, RenderError::Encode(_)) { 500 } else { 422 };
    StorageError::ImageProcessing { status, message: e.to_string() }.into()
}

impl Call<'_> {
    /// `GET /render/image/{kind}/{bucket}/{name}`.
    pub(super) async fn render_image(
        &self,
        renderer: &Renderer,
        bucket: &str,
        name: &str,
        access: Access,
    ) -> Result<Response, ApiError> {
        if !renderer.enabled {
            return Err(StorageError::FeatureNotEnabled("imageTransformation").into());
        }
        rules::bucket_id(bucket)?;
        rules::object_name(name)?;
        let options = if access == Access::Signed {
            let token = crate::http::query_param(self.query, "token").ok_or(StorageError::InvalidSignature)?;
            let claims = sign::verify(self.state.config.jwt.secret.as_deref(), &token, &format!("{bucket}/{name}"))?;
            Options::from_token(claims.transformations.as_deref().unwrap_or(""))
        } else {
            Options::from_query(self.query).map_err(|e| StorageError::InvalidRequest(e.0))?
        };
        let (_, version, metadata) = self.find(bucket, name, access).await?;
        let size = metadata.get("size").and_then(Value::as_u64).unwrap_or(0);
        if size > renderer.limits.max_source_bytes {
            return Err(processing(RenderError::TooLarge));
        }
        let accept = self.header("accept").map(str::to_string);
        // What decides the bytes: the version, the options and the output
        // format, negotiated or asked for (a PNG stands for "the source's").
        let output = options.output(Output::Png, accept.as_deref());
        let cache_key = format!("{bucket}/{name}/{version}/{}", options.cache_key(output));
        let cached = match &renderer.cache {
            Some(cache) => {
                let (cache, k) = (cache.clone(), cache_key.clone());
                tokio::task::spawn_blocking(move || cache.load(&k)).await.ok().flatten()
            }
            None => None,
        };
        let (mime, bytes) = match cached {
            Some(hit) => hit,
            None => {
                // The permit first: a waiting request holds no source bytes,
                // so memory is bounded by the permits, not by the queue.
                let permit = renderer
                    .permits
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|e| StorageError::Internal(e.to_string()))?;
                let source = self.read_source(bucket, name, &version, renderer.limits.max_source_bytes).await?;
                let limits = renderer.limits;
                let rendered = tokio::task::spawn_blocking(move || {
                    let _permit = permit;
                    let (_, source_format) = transform::source_format(&source)?;
                    let output = options.output(source_format, accept.as_deref());
                    transform::render(&source, &options, output, limits).map(|bytes| (output.mime().to_string(), bytes))
                })
                .await
                .map_err(|e| StorageError::Internal(format!("image rendering stopped: {e}")))?
                .map_err(processing)?;
                if let Some(cache) = &renderer.cache {
                    let (cache, k, mime, bytes) = (cache.clone(), cache_key, rendered.0.clone(), rendered.1.clone());
                    tokio::task::spawn_blocking(move || {
                        if let Err(e) = cache.store(&k, &mime, &bytes) {
                            tracing::warn!(error = %e, "storage: keeping a rendered image failed");
                        }
                    });
                }
                rendered
            }
        };
        let mut builder = http::Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, mime)
            .header(header::CONTENT_LENGTH, bytes.len())
            .header(header::VARY, "Accept");
        let text = |k: &str| metadata.get(k).and_then(Value::as_str);
        for (name, value) in [(header::CACHE_CONTROL, text("cacheControl")), (header::ETAG, text("eTag"))] {
            if let Some(v) = value.and_then(|v| HeaderValue::from_str(v).ok()) {
                builder = builder.header(name, v);
            }
        }
        if let Some(v) = super::content_disposition(self.query, name) {
            builder = builder.header(header::CONTENT_DISPOSITION, v);
        }
        Ok(builder.body(Body::full(Bytes::from(bytes))).expect("static response parts"))
    }

    /// The bytes of an object version, at most `limit`.
    async fn read_source(&self, bucket: &str, name: &str, version: &str, limit: u64) -> Result<Vec<u8>, ApiError> {
        let mut stream = self.backend.get(key(bucket, name, version), None).await.map_err(|e| match e {
            BackendError::NotFound => ApiError::from(StorageError::NoSuchKey),
            other => StorageError::Internal(other.to_string()).into(),
        })?;
        let mut source = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| StorageError::Internal(e.to_string()))?;
            source.extend_from_slice(&chunk);
            if source.len() as u64 > limit {
                return Err(processing(RenderError::TooLarge));
            }
        }
        Ok(source)
    }
}

/// The `transformations` claim for a signed URL whose body asks for
/// `transform` (none when transforms are off: storage-api then signs the
/// plain object).
pub fn signed_transformations(enabled: bool, body: &Value) -> Result<Option<String>, ApiError> {
    match body.get("transform") {
        Some(t) if enabled && t.as_object().is_some_and(|o| !o.is_empty()) => {
            let options = Options::from_json(t).map_err(|e| StorageError::InvalidRequest(e.0))?;
            Ok(Some(options.to_token()))
        }
        _ => Ok(None),
    }
}
