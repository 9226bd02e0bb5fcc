//! The S3 backend: object bytes in one S3 bucket (AWS or any S3-protocol
//! server), under `<prefix>/<bucket>/<name>/<version>`, through rust-s3.
//!
//! A body shorter than one part goes up in a single PUT (S3 stores it whole
//! or not at all); a longer one as a multipart upload whose object appears
//! only at CompleteMultipartUpload. Memory per upload stays at two parts:
//! one filling, one on its way. On any failure (size limit, broken body,
//! store error, the request dropped) the multipart upload is aborted, so
//! nothing is stored; an upload a crash left open is aborted by `recover`
//! once it is older than any live upload can be.
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use s3::creds::Credentials;
use s3::error::S3Error;
use s3::serde_types::{ObjectIdentifier, Part};
use s3::{Bucket, Region};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::backend::{Backend, BackendError, ByteStream};
use crate::config::Storage;
use crate::http::BodyError;

/// The smallest part S3 takes (but the last), and ours unless the size
/// limit needs larger ones to fit in S3's 10,000 parts.
const PART_SIZE: u64 = 8 << 20;
const MAX_PARTS: u64 = 10_000;
/// What S3 is told the bytes are; the row keeps the real MIME type.
const CONTENT_TYPE: &str = "application/octet-stream";
/// Each request but a download's body, which lasts as long as the client reads.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

pub struct S3Store {
    bucket: Arc<Bucket>,
    /// The same bucket without a time limit, for downloads.
    streaming: Arc<Bucket>,
    /// `""` or `"<prefix>/"`.
    prefix: String,
    /// An open multipart upload older than this has no live writer.
    stale_after: Duration,
    /// Multipart uploads this process is writing now (`recover` skips them).
    live: Arc<Mutex<HashSet<String>>>,
}

impl S3Store {
    pub fn new(config: &Storage) -> Result<S3Store, String> {
        let region = match &config.s3_endpoint {
            Some(endpoint) => Region::Custom {
                region: config.s3_region.clone(),
                endpoint: endpoint.trim_end_matches('/').to_string(),
            },
            None => config.s3_region.parse().map_err(|e| format!("storage.s3_region: {e}"))?,
        };
        let credentials = Credentials::new(
            config.s3_access_key_id.as_deref(),
            config.s3_secret_access_key.as_deref(),
            None,
            config.s3_session_token.as_deref(),
            None,
        )
        .map_err(|e| format!("S3 credentials: {e}"))?;
        let mut bucket = Bucket::new(&config.s3_bucket, region, credentials).map_err(|e| e.to_string())?;
        if config.s3_force_path_style {
            bucket = bucket.with_path_style();
        }
        let mut streaming = bucket.clone();
        streaming.set_request_timeout(None);
        bucket.set_request_timeout(Some(REQUEST_TIMEOUT));
        let prefix = config.s3_prefix.trim_end_matches('/');
        // A live upload ends within the storage request timeout; the margin
        // covers clock skew between us and the store (S3 allows 5 minutes).
        let timeout = Duration::from_millis(config.request_timeout_ms);
        Ok(S3Store {
            bucket: Arc::from(bucket),
            streaming: Arc::from(streaming),
            prefix: if prefix.is_empty() { String::new() } else { format!("{prefix}/") },
            stale_after: timeout + timeout.min(Duration::from_secs(300)),
            live: Arc::new(Mutex::new(HashSet::new())),
        })
    }

    fn path(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    async fn begin(&self, path: &str) -> Result<Multipart, BackendError> {
        let started = self.bucket.initiate_multipart_upload(path, CONTENT_TYPE).await.map_err(store_error)?;
        self.live.lock().unwrap_or_else(|e| e.into_inner()).insert(started.upload_id.clone());
        Ok(Multipart {
            bucket: self.bucket.clone(),
            live: self.live.clone(),
            path: path.to_string(),
            id: started.upload_id,
            parts: Vec::new(),
            sending: None,
            finished: false,
        })
    }

    async fn upload(
        &self,
        path: &str,
        body: &mut ByteStream,
        limit: u64,
        open: &mut Option<Multipart>,
    ) -> Result<u64, BackendError> {
        let part_size = usize::try_from(PART_SIZE.max(limit.div_ceil(MAX_PARTS))).unwrap_or(usize::MAX);
        let mut buffer: Vec<u8> = Vec::new();
        let mut size: u64 = 0;
        while let Some(chunk) = body.next().await {
            let mut chunk = chunk.map_err(|e| BackendError::Body(e.to_string()))?;
            size += chunk.len() as u64;
            if size > limit {
                return Err(BackendError::TooLarge { limit });
            }
            // Parts are cut at exactly `part_size`, so a buffer never grows
            // past its capacity (a Vec would double).
            while !chunk.is_empty() {
                let take = (part_size - buffer.len()).min(chunk.len());
                buffer.extend_from_slice(&chunk.split_to(take));
                if buffer.len() == part_size {
                    let upload = match open {
                        Some(upload) => upload,
                        None => open.insert(self.begin(path).await?),
                    };
                    upload.send(std::mem::replace(&mut buffer, Vec::with_capacity(part_size))).await?;
                }
            }
        }
        match open {
            None => {
                self.bucket.put_object_with_content_type(path, &buffer, CONTENT_TYPE).await.map_err(store_error)?;
            }
            Some(upload) => {
                if !buffer.is_empty() {
                    upload.send(buffer).await?;
                }
                upload.complete().await?;
            }
        }
        Ok(size)
    }
}

/// One multipart upload in progress: the parts sent, and the one being sent.
struct Multipart {
    bucket: Arc<Bucket>,
    live: Arc<Mutex<HashSet<String>>>,
    path: String,
    id: String,
    parts: Vec<Part>,
    sending: Option<tokio::task::JoinHandle<Result<Part, S3Error>>>,
    /// Completed or aborted: nothing left to clean up.
    finished: bool,
}

impl Multipart {
    /// Sends the next part while the caller reads the one after it.
    async fn send(&mut self, part: Vec<u8>) -> Result<(), BackendError> {
        self.wait().await?;
        let number = u32::try_from(self.parts.len() + 1).expect("at most 10,000 parts");
        let (bucket, path, id) = (self.bucket.clone(), self.path.clone(), self.id.clone());
        self.sending =
            Some(tokio::spawn(async move { bucket.put_multipart_chunk(part, &path, number, &id, CONTENT_TYPE).await }));
        Ok(())
    }

    async fn wait(&mut self) -> Result<(), BackendError> {
        if let Some(sending) = self.sending.take() {
            let part = sending.await.map_err(|e| BackendError::Io(std::io::Error::other(e.to_string())))?;
            self.parts.push(part.map_err(store_error)?);
        }
        Ok(())
    }

    async fn complete(&mut self) -> Result<(), BackendError> {
        self.wait().await?;
        let parts = std::mem::take(&mut self.parts);
        let done = match self.bucket.complete_multipart_upload(&self.path, &self.id, parts).await {
            // rust-s3 checks for the root element AWS answers with
            // (`CompleteMultipartUploadResult`); some servers name it
            // otherwise (moto: `…Response`). A 200 that is no `<Error>` is done.
            Err(S3Error::HttpFailWithBody(200, body)) if !body.contains("<Error>") => Ok(()),
            other => other.map(|_| ()),
        };
        match done {
            Ok(()) => {
                self.finished = true;
                Ok(())
            }
            Err(e) => {
                // The store may have made the object before the answer was
                // lost: it goes too, or it would be an orphan.
                if let Err(e) = self.bucket.delete_object(&self.path).await {
                    tracing::warn!(key = %self.path, error = %e, "S3: removing a failed upload's object failed");
                }
                Err(store_error(e))
            }
        }
    }

    async fn abort(&mut self) {
        if let Some(sending) = self.sending.take() {
            sending.abort();
            let _ = sending.await;
        }
        if let Err(e) = self.bucket.abort_upload(&self.path, &self.id).await {
            // `recover` aborts it later.
            tracing::warn!(key = %self.path, error = %e, "S3: aborting a multipart upload failed");
        }
        self.finished = true;
    }
}

impl Drop for Multipart {
    /// An upload dropped midway (its request cancelled) is aborted in the
    /// background.
    fn drop(&mut self) {
        self.live.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.id);
        if self.finished {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        if let Some(sending) = self.sending.take() {
            sending.abort();
        }
        let (bucket, path, id) = (self.bucket.clone(), std::mem::take(&mut self.path), std::mem::take(&mut self.id));
        runtime.spawn(async move {
            if let Err(e) = bucket.abort_upload(&path, &id).await {
                tracing::warn!(key = %path, error = %e, "S3: aborting a dropped multipart upload failed");
            }
        });
    }
}

fn store_error(e: S3Error) -> BackendError {
    match e {
        S3Error::HttpFailWithBody(404, _) => BackendError::NotFound,
        other => BackendError::Io(std::io::Error::other(format!("S3: {other}"))),
    }
}

/// Whether an upload started at `initiated` (RFC 3339, as S3 lists it) can
/// have no live writer any more; an unreadable time is left alone.
fn is_stale(initiated: &str, now: chrono::DateTime<chrono::Utc>, stale_after: chrono::Duration) -> bool {
    match chrono::DateTime::parse_from_rfc3339(initiated) {
        Ok(initiated) => now.signed_duration_since(initiated) > stale_after,
        Err(_) => {
            tracing::warn!(initiated, "S3: a multipart upload's start time is unreadable");
            false
        }
    }
}

/// A key as `x-amz-copy-source` wants it: percent-encoded, `/` kept.
fn copy_source(path: &str) -> String {
    path.split('/').map(|s| crate::http::form_encode(s).replace('+', "%20")).collect::<Vec<_>>().join("/")
}

impl Backend for S3Store {
    fn put(&self, key: String, mut body: ByteStream, limit: u64) -> BoxFuture<'_, Result<u64, BackendError>> {
        Box::pin(async move {
            let path = self.path(&key);
            let mut open = None;
            let stored = self.upload(&path, &mut body, limit, &mut open).await;
            if stored.is_err() {
                if let Some(mut upload) = open {
                    if !upload.finished {
                        upload.abort().await;
                    }
                }
            }
            stored
        })
    }

    fn get(&self, key: String, range: Option<(u64, u64)>) -> BoxFuture<'_, Result<ByteStream, BackendError>> {
        Box::pin(async move {
            let path = self.path(&key);
            let response = match range {
                None => self.streaming.get_object_stream(&path).await,
                Some((first, last)) => {
                    let mut headers = http::HeaderMap::new();
                    let value = format!("bytes={first}-{last}").parse().expect("a valid header value");
                    headers.insert(http::header::RANGE, value);
                    let ranged = self.streaming.with_extra_headers(headers).map_err(store_error)?;
                    ranged.get_object_stream(&path).await
                }
            }
            .map_err(store_error)?;
            if range.is_some() && response.status_code != 206 {
                return Err(BackendError::Io(std::io::Error::other(format!(
                    "S3: a range request was answered {}",
                    response.status_code
                ))));
            }
            Ok(response.bytes.map(|chunk| chunk.map_err(|e| BodyError::from(format!("S3: {e}")))).boxed())
        })
    }

    fn copy(&self, from: String, to: String) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(async move {
            let (from, to) = (copy_source(&self.path(&from)), self.path(&to));
            self.bucket.copy_object_internal(from, to).await.map_err(store_error)?;
            Ok(())
        })
    }

    fn delete(&self, keys: Vec<String>) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(async move {
            if keys.is_empty() {
                return Ok(());
            }
            let objects: Vec<ObjectIdentifier> = keys.iter().map(|k| ObjectIdentifier::new(self.path(k))).collect();
            let result = self.bucket.delete_objects(objects).await.map_err(store_error)?;
            match result.errors.first() {
                None => Ok(()),
                Some(e) => Err(BackendError::Io(std::io::Error::other(format!(
                    "S3: deleting {} failed: {} {} ({} keys failed)",
                    e.key,
                    e.code,
                    e.message,
                    result.errors.len()
                )))),
            }
        })
    }

    fn recover(&self) -> BoxFuture<'_, Result<usize, BackendError>> {
        Box::pin(async move {
            let prefix = (!self.prefix.is_empty()).then_some(self.prefix.as_str());
            let pages = self.bucket.list_multiparts_uploads(prefix, None).await.map_err(store_error)?;
            let now = chrono::Utc::now();
            let stale_after = chrono::Duration::from_std(self.stale_after).unwrap_or(chrono::Duration::MAX);
            let mut aborted = 0;
            for upload in pages.iter().flat_map(|page| page.uploads.iter()) {
                if self.live.lock().unwrap_or_else(|e| e.into_inner()).contains(&upload.id) {
                    continue;
                }
                if is_stale(&upload.initiated, now, stale_after) {
                    self.bucket.abort_upload(&upload.key, &upload.id).await.map_err(store_error)?;
                    aborted += 1;
                }
            }
            Ok(aborted)
        })
    }
}

#[cfg(test)]
pub(super) mod tests {
    //! Against a real S3-protocol server: moto's (scripts/setup.sh installs it).
    use super::*;
    use bytes::Bytes;

    /// A moto server on a free port, stopped when dropped.
    pub struct MotoServer {
        child: std::process::Child,
        pub endpoint: String,
    }

    impl MotoServer {
        pub fn start() -> MotoServer {
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let child = std::process::Command::new("python3")
                .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("python3 -m moto.server (scripts/setup.sh installs moto)");
            // Dropped (killed and reaped) if it never answers.
            let server = MotoServer { child, endpoint: format!("http://127.0.0.1:{port}") };
            for _ in 0..200 {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return server;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            panic!("moto's S3 server did not start on {}", server.endpoint);
        }
    }

    impl Drop for MotoServer {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn config(endpoint: &str, bucket: &str) -> Storage {
        Storage {
            backend: crate::config::StorageBackend::S3,
            s3_bucket: bucket.into(),
            s3_endpoint: Some(endpoint.into()),
            s3_access_key_id: Some("test".into()),
            s3_secret_access_key: Some("test".into()),
            s3_force_path_style: true,
            s3_prefix: "tenant-a".into(),
            request_timeout_ms: 1000,
            ..Storage::default()
        }
    }

    async fn make_bucket(endpoint: &str, name: &str) -> Box<Bucket> {
        let region = Region::Custom { region: "us-east-1".into(), endpoint: endpoint.into() };
        let credentials = Credentials::new(Some("test"), Some("test"), None, None, None).unwrap();
        // Made as a bare PUT: moto takes it unsigned, and refuses rust-s3's
        // location constraint for us-east-1.
        let made = reqwest::Client::new().put(format!("{endpoint}/{name}")).send().await.unwrap();
        assert!(made.status().is_success(), "creating the bucket: {}", made.status());
        Bucket::new(name, region, credentials).unwrap().with_path_style()
    }

    fn stream(chunks: Vec<Result<Bytes, &'static str>>) -> ByteStream {
        futures_util::stream::iter(chunks.into_iter().map(|c| c.map_err(|e| BodyError::from(e.to_string())))).boxed()
    }

    /// `n` bytes of a pattern that differs between parts.
    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 / 7 + i / 1_000_003) as u8).collect()
    }

    fn chunks_of(bytes: &[u8], size: usize) -> Vec<Result<Bytes, &'static str>> {
        bytes.chunks(size).map(|c| Ok(Bytes::copy_from_slice(c))).collect()
    }

    async fn read_all(mut s: ByteStream) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(chunk) = s.next().await {
            out.extend_from_slice(&chunk.unwrap());
        }
        out
    }

    /// Every key in the bucket, and every open multipart upload's key.
    async fn stored(bucket: &Bucket) -> (Vec<String>, Vec<String>) {
        let keys = bucket.list(String::new(), None).await.unwrap();
        let mut keys: Vec<String> = keys.iter().flat_map(|p| p.contents.iter().map(|o| o.key.clone())).collect();
        keys.sort();
        let uploads = bucket.list_multiparts_uploads(None, None).await.unwrap();
        let uploads = uploads.iter().flat_map(|p| p.uploads.iter().map(|u| u.key.clone())).collect();
        (keys, uploads)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn s3_writes_are_all_or_nothing_and_ranges_copy_delete_work() {
        let server = MotoServer::start();
        let bucket = make_bucket(&server.endpoint, "fluxbase-unit").await;
        let store = S3Store::new(&config(&server.endpoint, "fluxbase-unit")).unwrap();

        // Small: one PUT, under the prefix.
        let size = store.put("b/a b/ü.txt/v1".into(), stream(chunks_of(b"hello world", 4)), 100).await.unwrap();
        assert_eq!(size, 11);
        assert_eq!(read_all(store.get("b/a b/ü.txt/v1".into(), None).await.unwrap()).await, b"hello world");
        assert_eq!(read_all(store.get("b/a b/ü.txt/v1".into(), Some((6, 10))).await.unwrap()).await, b"world");
        assert_eq!(stored(&bucket).await, (vec!["tenant-a/b/a b/ü.txt/v1".to_string()], vec![]));

        // Large: three parts (8 + 8 + 4 MiB), streamed in chunks that do
        // not divide a part (3 MiB + 1).
        let big = pattern(20 << 20);
        let size = store.put("b/big/v1".into(), stream(chunks_of(&big, (3 << 20) + 1)), 64 << 20).await.unwrap();
        assert_eq!(size, big.len() as u64);
        assert!(read_all(store.get("b/big/v1".into(), None).await.unwrap()).await == big, "the whole object");
        let (first, last) = ((8 << 20) - 5, (8 << 20) + 4);
        let range = read_all(store.get("b/big/v1".into(), Some((first, last))).await.unwrap()).await;
        assert_eq!(range, big[first as usize..=last as usize], "a range across a part boundary");

        // Too large after a part went up, a body that breaks off mid-part,
        // and one over the limit in its first part: nothing stored, no
        // multipart upload left open.
        let err = store.put("b/over/v1".into(), stream(chunks_of(&big, 1 << 20)), 10 << 20).await.unwrap_err();
        assert!(matches!(err, BackendError::TooLarge { limit } if limit == 10 << 20), "{err}");
        let mut cut = chunks_of(&big[..12 << 20], 1 << 20);
        cut.push(Err("connection reset"));
        let err = store.put("b/cut/v1".into(), stream(cut), 64 << 20).await.unwrap_err();
        assert!(matches!(err, BackendError::Body(_)), "{err}");
        let err = store.put("b/small-over/v1".into(), stream(chunks_of(b"0123456789", 3)), 6).await.unwrap_err();
        assert!(matches!(err, BackendError::TooLarge { limit: 6 }), "{err}");
        let (keys, uploads) = stored(&bucket).await;
        assert_eq!(keys, vec!["tenant-a/b/a b/ü.txt/v1".to_string(), "tenant-a/b/big/v1".to_string()]);
        assert!(uploads.is_empty(), "open multipart uploads: {uploads:?}");

        // An upload dropped midway (its request cancelled) is aborted too.
        let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Bytes, BodyError>>(4);
        let body = futures_util::stream::poll_fn({
            let mut receiver = receiver;
            move |cx| receiver.poll_recv(cx)
        })
        .boxed();
        let put = tokio::spawn({
            let store = S3Store::new(&config(&server.endpoint, "fluxbase-unit")).unwrap();
            async move { store.put("b/dropped/v1".into(), body, 64 << 20).await }
        });
        for part in big[..10 << 20].chunks(1 << 20) {
            sender.send(Ok(Bytes::copy_from_slice(part))).await.unwrap();
        }
        let mut opened = false;
        for _ in 0..100 {
            opened = !stored(&bucket).await.1.is_empty();
            if opened {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(opened, "a multipart upload was opened");
        put.abort();
        let _ = put.await;
        let mut left = vec![];
        for _ in 0..100 {
            left = stored(&bucket).await.1;
            if left.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(left.is_empty(), "the dropped upload was aborted: {left:?}");

        // Copy is server-side; a missing source is NotFound.
        store.copy("b/a b/ü.txt/v1".into(), "c/x/v2".into()).await.unwrap();
        assert_eq!(read_all(store.get("c/x/v2".into(), None).await.unwrap()).await, b"hello world");
        assert!(matches!(store.copy("b/none/v1".into(), "c/y/v1".into()).await, Err(BackendError::NotFound)));
        assert!(matches!(store.get("b/none/v1".into(), None).await, Err(BackendError::NotFound)));

        // Delete many in one request; a missing key is no error.
        store.delete(vec!["b/a b/ü.txt/v1".into(), "b/big/v1".into(), "b/missing/v9".into()]).await.unwrap();
        assert_eq!(stored(&bucket).await.0, vec!["tenant-a/c/x/v2".to_string()]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn s3_recover_aborts_stale_uploads_under_the_prefix_only() {
        let server = MotoServer::start();
        let bucket = make_bucket(&server.endpoint, "fluxbase-recover").await;
        let store = S3Store::new(&config(&server.endpoint, "fluxbase-recover")).unwrap();
        // What a crashed proxy left, one of another installation's, and one
        // this process is writing now.
        bucket.initiate_multipart_upload("tenant-a/b/crashed/v1", CONTENT_TYPE).await.unwrap();
        bucket.initiate_multipart_upload("tenant-b/b/theirs/v1", CONTENT_TYPE).await.unwrap();
        let live = store.begin("tenant-a/b/live/v1").await.unwrap();
        // moto lists every upload as started in 2010, so all but the live
        // one are stale here (`is_stale` is tested on its own below).
        assert_eq!(store.recover().await.unwrap(), 1);
        let mut left = stored(&bucket).await.1;
        left.sort();
        assert_eq!(left, vec!["tenant-a/b/live/v1".to_string(), "tenant-b/b/theirs/v1".to_string()]);
        drop(live);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(stored(&bucket).await.1, vec!["tenant-b/b/theirs/v1".to_string()]);
    }

    #[test]
    fn an_upload_is_stale_only_past_the_longest_request() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-02T08:00:00Z").unwrap().with_timezone(&chrono::Utc);
        let hour = chrono::Duration::hours(1);
        assert!(!is_stale("2026-12-02T07:30:00.000Z", now, hour), "a live upload's age");
        assert!(is_stale("2026-12-02T06:59:59Z", now, hour));
        assert!(!is_stale("2026-12-02T09:00:00Z", now, hour), "a store clock ahead of ours");
        assert!(!is_stale("yesterday", now, hour), "an unreadable time is left alone");
        let config = Storage {
            s3_bucket: "b".into(),
            s3_access_key_id: Some("k".into()),
            s3_secret_access_key: Some("s".into()),
            ..Storage::default()
        };
        let store = S3Store::new(&config).unwrap();
        assert_eq!(
            store.stale_after,
            Duration::from_secs(3600 + 300),
            "the request timeout plus 5 minutes for clock skew"
        );
        assert_eq!(store.path("b/n/v"), "b/n/v");
        let store = S3Store::new(&Storage { s3_prefix: "one/two/".into(), ..config }).unwrap();
        assert_eq!(store.path("b/n/v"), "one/two/b/n/v");
    }
}
