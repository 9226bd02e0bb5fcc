//! `/storage/v1/s3`: the S3 protocol over the same buckets and objects, as
//! Supabase Storage serves it (path-style: `/s3/{bucket}/{key}`). A request
//! is signed with SigV4 (`sigv4.rs`) by an access key kept sealed in
//! `fluxbase.storage_s3_keys` (acting as service_role), or by a session
//! token (access key: any, secret: the anon key, `x-amz-security-token`: a
//! user's JWT, so RLS applies). Every operation goes through `Call`'s
//! handlers, so an object written here is an ordinary storage object.
//! Answers and refusals are S3's XML.
use super::pipeline::{as_caller, End};
use bytes::{Bytes, BytesMut};
use futures_util::{StreamExt, TryStreamExt};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use super::backend::{BackendError, ByteStream};
use super::sigv4::{self, Checksum, ChunkSigner, ChunkedDecoder, Credentials, Payload, SigError};
use super::{body_stream, Access, Call, StorageService, Write};
use crate::error::ApiError;
use crate::http::{Body, BodyError, RequestContext, Response};
use crate::jwt::Caller;
use crate::state::AppState;

const PREFIX: &str = "/storage/v1/s3";
const XMLNS: &str = "http://s3.amazonaws.com/doc/2006-03-01/";
/// Largest XML request body (DeleteObjects of 1000 long keys).
const XML_BODY_MAX: usize = 4 << 20;
/// Multipart uploads left this long are removed when the next one starts.
const UPLOAD_EXPIRY: &str = "7 days";
/// Where parts wait for CompleteMultipartUpload: a prefix no bucket id has.
const PARTS_PREFIX: &str = "~s3-multipart";

/// Whether `path` is the S3 endpoint's.
pub fn is_s3_path(path: &str) -> bool {
    path == PREFIX || path.starts_with("/storage/v1/s3/")
}

/// An S3 refusal: HTTP status, S3's code and message.
#[derive(Debug)]
pub struct S3Error {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl S3Error {
    fn new(status: u16, code: &'static str, message: impl Into<String>) -> S3Error {
        S3Error {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
            code,
            message: message.into(),
        }
    }

    fn not_implemented(what: &str) -> S3Error {
        S3Error::new(501, "NotImplemented", format!("{what} is not implemented by this server"))
    }

    fn no_such_upload() -> S3Error {
        S3Error::new(
            404,
            "NoSuchUpload",
            "The specified multipart upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed.",
        )
    }

    fn response(&self, resource: &str, request_id: &str, head: bool) -> Response {
        let body = if head {
            Body::empty()
        } else {
            Body::full(format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{}</Code><Message>{}</Message>\
                 <Resource>{}</Resource><RequestId>{}</RequestId></Error>",
                self.code,
                esc(&self.message),
                esc(resource),
                esc(request_id)
            ))
        };
        http::Response::builder()
            .status(self.status)
            .header(header::CONTENT_TYPE, "application/xml")
            .header("x-amz-request-id", request_id)
            .body(body)
            .expect("static response parts")
    }
}

impl From<SigError> for S3Error {
    fn from(e: SigError) -> S3Error {
        let message = e.to_string();
        match e {
            SigError::Malformed(_) => S3Error::new(400, "AuthorizationHeaderMalformed", message),
            SigError::Mismatch => S3Error::new(403, "SignatureDoesNotMatch", message),
            SigError::TimeSkewed => S3Error::new(403, "RequestTimeTooSkewed", message),
            SigError::Expired => S3Error::new(403, "AccessDenied", message),
            SigError::ContentSha256Mismatch => S3Error::new(400, "XAmzContentSHA256Mismatch", message),
            SigError::BadChunk(_) => S3Error::new(400, "IncompleteBody", message),
            SigError::BadChecksum(_) => S3Error::new(400, "BadDigest", message),
        }
    }
}

/// A storage refusal in S3's words (S3's code where it has one, storage's
/// own otherwise).
impl From<ApiError> for S3Error {
    fn from(e: ApiError) -> S3Error {
        match e {
            ApiError::Storage { status, code, message, .. } => match code {
                "NoSuchBucket" => S3Error::new(404, "NoSuchBucket", "The specified bucket does not exist"),
                "NoSuchKey" => S3Error::new(404, "NoSuchKey", "The specified key does not exist."),
                "BucketAlreadyExists" => {
                    S3Error::new(409, "BucketAlreadyExists", "The requested bucket name is not available.")
                }
                "ResourceNotEmpty" => {
                    S3Error::new(409, "BucketNotEmpty", "The bucket you tried to delete is not empty")
                }
                "InvalidBucketName" => S3Error::new(400, "InvalidBucketName", "The specified bucket is not valid."),
                "InvalidKey" => S3Error::new(400, "InvalidArgument", message),
                "EntityTooLarge" => {
                    S3Error::new(400, "EntityTooLarge", "Your proposed upload exceeds the maximum allowed object size.")
                }
                "AccessDenied" => S3Error::new(403, "AccessDenied", message),
                "InvalidMimeType" => S3Error::new(415, "InvalidMimeType", message),
                "KeyAlreadyExists" => S3Error::new(409, "KeyAlreadyExists", message),
                "DatabaseTimeout" => S3Error::new(503, "SlowDown", "Please reduce your request rate."),
                "DatabaseError" | "InternalError" => {
                    S3Error::new(500, "InternalError", "We encountered an internal error. Please try again.")
                }
                _ if status >= 500 => S3Error::new(500, "InternalError", message),
                _ => S3Error::new(400, "InvalidRequest", message),
            },
            ApiError::DatabaseUnavailable(_) | ApiError::PoolTimeout => {
                S3Error::new(503, "ServiceUnavailable", "Please reduce your request rate.")
            }
            other => {
                tracing::error!(error = %other, "s3 protocol: unexpected error");
                S3Error::new(500, "InternalError", "We encountered an internal error. Please try again.")
            }
        }
    }
}

fn pg(e: tokio_postgres::Error) -> S3Error {
    S3Error::from(super::error::pg(e))
}

/// XML text escaping.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

fn xml(status: StatusCode, body: String) -> Response {
    http::Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/xml")
        .body(Body::full(format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n{body}")))
        .expect("static response parts")
}

fn empty(status: StatusCode) -> Response {
    http::Response::builder().status(status).body(Body::empty()).expect("static response parts")
}

// ---- access keys ----

/// The secret sealed for the database: `base64(nonce ‖ AES-256-GCM(secret))`
/// with the access key id as associated data (a sealed secret moved to
/// another key's row does not open).
pub fn seal(key: &[u8; 32], access_key_id: &str, secret: &str) -> String {
    use aes_gcm::aead::{Aead, KeyInit, Payload as AeadPayload};
    use base64::Engine;
    use rand::RngCore;
    let mut nonce = [0u8; 12];
    rand::thread_rng().fill_bytes(&mut nonce);
    let sealed = aes_gcm::Aes256Gcm::new(key.into())
        .encrypt(
            aes_gcm::Nonce::from_slice(&nonce),
            AeadPayload { msg: secret.as_bytes(), aad: access_key_id.as_bytes() },
        )
        .expect("AES-GCM encryption");
    let mut out = nonce.to_vec();
    out.extend(sealed);
    base64::engine::general_purpose::STANDARD.encode(out)
}

pub fn unseal(key: &[u8; 32], access_key_id: &str, sealed: &str) -> Option<String> {
    use aes_gcm::aead::{Aead, KeyInit, Payload as AeadPayload};
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD.decode(sealed).ok()?;
    if bytes.len() < 12 {
        return None;
    }
    let (nonce, body) = bytes.split_at(12);
    let plain = aes_gcm::Aes256Gcm::new(key.into())
        .decrypt(aes_gcm::Nonce::from_slice(nonce), AeadPayload { msg: body, aad: access_key_id.as_bytes() })
        .ok()?;
    String::from_utf8(plain).ok()
}

/// A new key pair: an id of 20 upper-case letters and digits (as AWS's) and
/// a 40-character secret.
pub fn new_key_pair() -> (String, String) {
    use rand::Rng;
    const ID: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    const SECRET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    let id: String = (0..16).map(|_| ID[rng.gen_range(0..ID.len())] as char).collect();
    let secret: String = (0..40).map(|_| SECRET[rng.gen_range(0..SECRET.len())] as char).collect();
    (format!("FBAK{id}"), secret)
}

// ---- authentication ----

/// A verified request: who acts, and how its body is to be checked.
struct Verified {
    caller: Caller,
    creds: Credentials,
    payload: Payload,
    signer: Option<ChunkSigner>,
}

fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

async fn authenticate(state: &AppState, parts: &http::request::Parts) -> Result<Verified, S3Error> {
    let raw_query = parts.uri.query().unwrap_or("");
    let query = crate::http::query_pairs(raw_query);
    let q = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let headers = &parts.headers;
    let (creds, payload_text) = if let Some(auth) = header_str(headers, "authorization") {
        let amz_date = match header_str(headers, "x-amz-date") {
            Some(d) => d.to_string(),
            None => header_str(headers, "date").and_then(sigv4::http_date_to_amz).ok_or_else(|| {
                S3Error::new(403, "AccessDenied", "AWS authentication requires a valid Date or x-amz-date header")
            })?,
        };
        let creds = sigv4::parse_authorization(auth, &amz_date)?;
        let payload = header_str(headers, "x-amz-content-sha256").ok_or_else(|| {
            S3Error::new(400, "InvalidRequest", "Missing required header for this request: x-amz-content-sha256")
        })?;
        (creds, payload.to_string())
    } else if q("X-Amz-Algorithm").is_some() {
        let creds = sigv4::parse_presigned(&query)
            .map_err(|e| S3Error::new(400, "AuthorizationQueryParametersError", e.to_string()))?;
        (creds, q("X-Amz-Content-Sha256").unwrap_or_else(|| sigv4::UNSIGNED_PAYLOAD.into()))
    } else {
        return Err(S3Error::new(
            403,
            "AccessDenied",
            "Anonymous access is not allowed: sign the request (AWS Signature Version 4)",
        ));
    };
    let payload = Payload::parse(&payload_text)?;
    sigv4::check_time(&creds, chrono::Utc::now().timestamp())?;

    let session_token =
        header_str(headers, "x-amz-security-token").map(str::to_string).or_else(|| q("X-Amz-Security-Token"));
    let secret = match &session_token {
        Some(_) => state.config.api_keys.anon.clone().ok_or_else(|| {
            S3Error::new(
                403,
                "InvalidAccessKeyId",
                "Session tokens need api_keys.anon (the secret access key of session-token mode)",
            )
        })?,
        None => access_key_secret(state, &creds.access_key_id).await?,
    };

    let host = |name: &str| -> Vec<String> {
        let values: Vec<String> =
            headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).map(|v| v.trim().to_string()).collect();
        if values.is_empty() && name == "host" {
            return parts.uri.authority().map(|a| vec![a.to_string()]).unwrap_or_default();
        }
        values
    };
    let key = sigv4::signing_key(&secret, &creds);
    let canonical_query = sigv4::canonical_query(raw_query);
    let raw_path = parts.uri.path();
    let normal_path = sigv4::uri_encode(&crate::http::path_decode(raw_path), true);
    // The path as S3's signers encode it; as sent, for clients that encode less.
    let matches = [normal_path.as_str(), raw_path].iter().any(|path| {
        let canonical = sigv4::canonical_request(
            parts.method.as_str(),
            path,
            &canonical_query,
            &creds.signed_headers,
            host,
            &payload_text,
        );
        sigv4::same(&sigv4::signature(&key, &sigv4::string_to_sign(&creds, &canonical)), &creds.signature)
    });
    if !matches {
        return Err(SigError::Mismatch.into());
    }
    let caller = match session_token {
        None => Caller { claims: Arc::new(json!({ "role": "service_role" })), anonymous: false },
        Some(token) => state
            .verifier
            .authenticate(Some(&format!("Bearer {token}")), None)
            .map_err(|e| S3Error::new(403, "AccessDenied", format!("the session token was refused: {e}")))?,
    };
    let signer = matches!(payload, Payload::StreamingSigned { .. }).then(|| ChunkSigner::new(key, &creds));
    Ok(Verified { caller, creds, payload, signer })
}

/// The secret of an access key, unsealed.
async fn access_key_secret(state: &AppState, access_key_id: &str) -> Result<String, S3Error> {
    let unknown =
        || S3Error::new(403, "InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist in our records.");
    let Some(key) = state.config.storage.s3_key() else {
        return Err(S3Error::new(
            403,
            "InvalidAccessKeyId",
            "S3 access keys are off: storage.s3_encryption_key is not set",
        ));
    };
    let client = state.client().await.map_err(S3Error::from)?;
    let row = client
        .query_opt("SELECT secret_sealed FROM fluxbase.storage_s3_keys WHERE access_key_id = $1", &[&access_key_id])
        .await
        .map_err(pg)?
        .ok_or_else(unknown)?;
    unseal(&key, access_key_id, row.get(0)).ok_or_else(|| {
        tracing::error!(access_key_id, "s3 protocol: an access key does not unseal with storage.s3_encryption_key");
        S3Error::new(500, "InternalError", "We encountered an internal error. Please try again.")
    })
}

// ---- request bodies ----

/// The first reason a body failed its checks, for the answer (the backend
/// only sees "the body failed").
type Failure = Arc<Mutex<Option<SigError>>>;

enum BodyCheck {
    Plain { sha256: Option<(sha2::Sha256, String)>, checksum: Option<(Checksum, String, String)> },
    Chunked { decoder: ChunkedDecoder, declared: Option<u64> },
}

impl BodyCheck {
    fn new(v: &mut Verified, headers: &HeaderMap) -> Result<BodyCheck, S3Error> {
        let checksum_header = headers.keys().map(HeaderName::as_str).find(|n| {
            n.starts_with("x-amz-checksum-")
                && !matches!(*n, "x-amz-checksum-type" | "x-amz-checksum-algorithm" | "x-amz-checksum-mode")
        });
        Ok(match &v.payload {
            Payload::Unsigned | Payload::Sha256(_) => BodyCheck::Plain {
                sha256: match &v.payload {
                    Payload::Sha256(h) => Some((sha2::Digest::new(), h.clone())),
                    _ => None,
                },
                checksum: checksum_header.and_then(|name| {
                    let sent = header_str(headers, name)?.trim().to_string();
                    Checksum::for_header(name).map(|c| (c, name.to_string(), sent))
                }),
            },
            Payload::StreamingSigned { trailer } => {
                let trailer_name = header_str(headers, "x-amz-trailer");
                BodyCheck::Chunked {
                    decoder: ChunkedDecoder::new(v.signer.take(), *trailer, trailer_name),
                    declared: decoded_length(headers),
                }
            }
            Payload::StreamingUnsignedTrailer => BodyCheck::Chunked {
                decoder: ChunkedDecoder::new(None, false, header_str(headers, "x-amz-trailer")),
                declared: decoded_length(headers),
            },
        })
    }

    fn push(&mut self, chunk: Bytes) -> Result<Vec<Bytes>, SigError> {
        match self {
            BodyCheck::Plain { sha256, checksum } => {
                if let Some((h, _)) = sha256.as_mut() {
                    sha2::Digest::update(h, &chunk);
                }
                if let Some((c, _, _)) = checksum.as_mut() {
                    c.update(&chunk);
                }
                Ok(vec![chunk])
            }
            BodyCheck::Chunked { decoder, .. } => decoder.push(chunk),
        }
    }

    fn finish(&mut self) -> Result<(), SigError> {
        match self {
            BodyCheck::Plain { sha256, checksum } => {
                if let Some((h, expected)) = sha256.take() {
                    if sigv4::hex(&sha2::Digest::finalize(h)) != *expected {
                        return Err(SigError::ContentSha256Mismatch);
                    }
                }
                if let Some((c, name, sent)) = checksum.take() {
                    if c.finish() != sent {
                        return Err(SigError::BadChecksum(name));
                    }
                }
                Ok(())
            }
            BodyCheck::Chunked { decoder, declared } => {
                decoder.finish()?;
                match declared {
                    Some(n) if *n != decoder.decoded_len() => Err(SigError::BadChunk(format!(
                        "x-amz-decoded-content-length is {n} but the body carried {} bytes",
                        decoder.decoded_len()
                    ))),
                    _ => Ok(()),
                }
            }
        }
    }
}

fn decoded_length(headers: &HeaderMap) -> Option<u64> {
    header_str(headers, "x-amz-decoded-content-length").and_then(|v| v.trim().parse().ok())
}

/// The payload of a request body, checked as its signature says: a failed
/// check ends the stream with an error (so nothing is stored) and is kept
/// in `failure` for the answer.
fn checked_body(body: ByteStream, check: BodyCheck, failure: Failure) -> ByteStream {
    struct St {
        body: ByteStream,
        check: BodyCheck,
        pending: VecDeque<Bytes>,
        done: bool,
        failure: Failure,
    }
    let fail = |st: &mut St, e: SigError| -> BodyError {
        st.done = true;
        let text = e.to_string();
        st.failure.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
        text.into()
    };
    let st = St { body, check, pending: VecDeque::new(), done: false, failure };
    futures_util::stream::unfold(st, move |mut st| async move {
        loop {
            if let Some(b) = st.pending.pop_front() {
                return Some((Ok(b), st));
            }
            if st.done {
                return None;
            }
            match st.body.next().await {
                Some(Ok(chunk)) => match st.check.push(chunk) {
                    Ok(out) => st.pending.extend(out.into_iter().filter(|b| !b.is_empty())),
                    Err(e) => {
                        let err = fail(&mut st, e);
                        return Some((Err(err), st));
                    }
                },
                Some(Err(e)) => {
                    st.done = true;
                    return Some((Err(e), st));
                }
                None => {
                    st.done = true;
                    if let Err(e) = st.check.finish() {
                        let err = fail(&mut st, e);
                        return Some((Err(err), st));
                    }
                }
            }
        }
    })
    .boxed()
}

/// A small body (XML) read whole, checked.
async fn read_checked(body: ByteStream, check: BodyCheck) -> Result<Bytes, S3Error> {
    let failure: Failure = Arc::default();
    let mut stream = checked_body(body, check, failure.clone());
    let mut out = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => {
                out.extend_from_slice(&c);
                if out.len() > XML_BODY_MAX {
                    return Err(S3Error::new(400, "MaxMessageLengthExceeded", "Your request was too big."));
                }
            }
            Err(e) => {
                return Err(match failure.lock().unwrap_or_else(|p| p.into_inner()).take() {
                    Some(f) => f.into(),
                    None => S3Error::new(400, "IncompleteBody", format!("reading the request body failed: {e}")),
                })
            }
        }
    }
    Ok(out.freeze())
}

/// `(path of element names, text)` of each text node, and `(path, "")` at
/// each element's start.
fn xml_nodes(body: &[u8]) -> Result<Vec<(String, String)>, S3Error> {
    use quick_xml::events::Event;
    let malformed = || {
        S3Error::new(
            400,
            "MalformedXML",
            "The XML you provided was not well-formed or did not validate against our published schema",
        )
    };
    let mut reader = quick_xml::Reader::from_reader(body);
    reader.config_mut().trim_text(true);
    let (mut stack, mut out, mut buf) = (Vec::<String>::new(), Vec::new(), Vec::new());
    loop {
        match reader.read_event_into(&mut buf).map_err(|_| malformed())? {
            Event::Start(e) => {
                stack.push(String::from_utf8_lossy(e.local_name().as_ref()).into_owned());
                out.push((stack.join("/"), String::new()));
            }
            Event::Empty(e) => {
                stack.push(String::from_utf8_lossy(e.local_name().as_ref()).into_owned());
                out.push((stack.join("/"), String::new()));
                stack.pop();
            }
            Event::End(_) => {
                stack.pop().ok_or_else(malformed)?;
            }
            Event::Text(t) => {
                let text = t.unescape().map_err(|_| malformed())?.into_owned();
                out.push((stack.join("/"), text));
            }
            Event::CData(t) => out.push((stack.join("/"), String::from_utf8_lossy(&t).into_owned())),
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    if !stack.is_empty() {
        return Err(malformed());
    }
    Ok(out)
}

/// `x-amz-meta-*` headers as storage's user metadata.
fn user_metadata(headers: &HeaderMap) -> Option<Value> {
    let map: serde_json::Map<String, Value> = headers
        .iter()
        .filter_map(|(k, v)| {
            let name = k.as_str().strip_prefix("x-amz-meta-")?;
            Some((name.to_string(), Value::String(v.to_str().ok()?.to_string())))
        })
        .collect();
    (!map.is_empty()).then_some(Value::Object(map))
}

fn set(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

/// The headers storage's upload reads, for an object written through S3:
/// S3 writes always replace.
fn upload_headers(
    content_type: &str,
    cache_control: Option<&str>,
    length: Option<u64>,
    meta: Option<&Value>,
) -> HeaderMap {
    use base64::Engine;
    let mut h = HeaderMap::new();
    set(&mut h, "x-upsert", "true");
    set(&mut h, "content-type", content_type);
    if let Some(c) = cache_control {
        set(&mut h, "cache-control", c);
    }
    if let Some(n) = length {
        set(&mut h, "content-length", &n.to_string());
    }
    if let Some(m) = meta {
        set(&mut h, "x-metadata", &base64::engine::general_purpose::STANDARD.encode(m.to_string()));
    }
    h
}

fn quote_etag(etag: &str) -> String {
    format!("\"{}\"", etag.trim_matches('"'))
}

// ---- the endpoint ----

impl StorageService {
    /// Serves one `/storage/v1/s3` request; every refusal is S3's XML.
    pub async fn handle_s3<B>(&self, state: &Arc<AppState>, req: Request<B>, ctx: &RequestContext) -> Response
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        self.start_sweeper(state);
        let head = req.method() == Method::HEAD;
        let resource = crate::http::path_decode(req.uri().path().strip_prefix(PREFIX).unwrap_or("/"));
        let mut response = match self.s3(state, req).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(code = e.code, message = %e.message, "s3 protocol: refused");
                e.response(&resource, &ctx.request_id, head)
            }
        };
        set(response.headers_mut(), "x-amz-request-id", &ctx.request_id);
        response
    }

    async fn s3<B>(&self, state: &Arc<AppState>, req: Request<B>) -> Result<Response, S3Error>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let (parts, body) = req.into_parts();
        let mut verified = authenticate(state, &parts).await?;
        let path = crate::http::path_decode(parts.uri.path().strip_prefix(PREFIX).unwrap_or(""));
        let path = path.trim_start_matches('/');
        let (bucket, key) = path.split_once('/').unwrap_or((path, ""));
        let query = crate::http::query_pairs(parts.uri.query().unwrap_or(""));
        let has = |name: &str| query.iter().any(|(k, _)| k == name);
        let q = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let headers = &parts.headers;
        let method = &parts.method;
        let no_headers = HeaderMap::new();
        let caller = verified.caller.clone();
        let s3 = S3 { service: self, state, caller: &caller, region: verified.creds.region.clone() };
        if bucket.is_empty() {
            return match *method {
                Method::GET => s3.list_buckets().await,
                _ => Err(S3Error::new(
                    405,
                    "MethodNotAllowed",
                    "The specified method is not allowed against this resource.",
                )),
            };
        }
        let unsupported = [
            "acl",
            "tagging",
            "policy",
            "cors",
            "lifecycle",
            "versioning",
            "versions",
            "website",
            "encryption",
            "replication",
            "object-lock",
            "retention",
            "legal-hold",
            "torrent",
            "restore",
            "select",
            "attributes",
            "logging",
            "notification",
            "accelerate",
            "requestPayment",
            "ownershipControls",
        ];
        if let Some((name, _)) = query.iter().find(|(k, _)| unsupported.contains(&k.as_str())) {
            return Err(S3Error::not_implemented(&format!("?{name}")));
        }
        if key.is_empty() {
            return match *method {
                Method::GET if has("location") => Ok(xml(
                    StatusCode::OK,
                    format!("<LocationConstraint xmlns=\"{XMLNS}\">{}</LocationConstraint>", esc(&s3.region)),
                )),
                Method::GET if has("uploads") => Err(S3Error::not_implemented("ListMultipartUploads")),
                Method::GET => s3.list_objects(bucket, &query).await,
                Method::HEAD => {
                    let h = no_headers.clone();
                    s3.call(&h).get_bucket(bucket).await?;
                    let mut r = empty(StatusCode::OK);
                    set(r.headers_mut(), "x-amz-bucket-region", &s3.region);
                    Ok(r)
                }
                Method::PUT => {
                    super::rules::bucket_id(bucket).map_err(ApiError::from)?;
                    s3.call(&no_headers).create_bucket(json!({ "name": bucket })).await?;
                    let mut r = empty(StatusCode::OK);
                    set(r.headers_mut(), "location", &format!("/{bucket}"));
                    Ok(r)
                }
                Method::DELETE => {
                    s3.call(&no_headers).delete_bucket(bucket).await?;
                    Ok(empty(StatusCode::NO_CONTENT))
                }
                Method::POST if has("delete") => {
                    let check = BodyCheck::new(&mut verified, headers)?;
                    let body = read_checked(body_stream(body), check).await?;
                    s3.delete_objects(bucket, &body).await
                }
                _ => Err(S3Error::new(
                    405,
                    "MethodNotAllowed",
                    "The specified method is not allowed against this resource.",
                )),
            };
        }
        let upload_id = q("uploadId");
        match (method.clone(), upload_id) {
            (Method::PUT, Some(upload)) => {
                if headers.contains_key("x-amz-copy-source") {
                    return Err(S3Error::not_implemented("UploadPartCopy"));
                }
                let part: i32 = q("partNumber")
                    .and_then(|n| n.parse().ok())
                    .filter(|n| (1..=10_000).contains(n))
                    .ok_or_else(|| {
                        S3Error::new(
                            400,
                            "InvalidArgument",
                            "Part number must be an integer between 1 and 10000, inclusive",
                        )
                    })?;
                let check = BodyCheck::new(&mut verified, headers)?;
                s3.upload_part(bucket, key, upload, part, body_stream(body), check).await
            }
            (Method::POST, Some(upload)) => {
                let check = BodyCheck::new(&mut verified, headers)?;
                let body = read_checked(body_stream(body), check).await?;
                s3.complete_upload(bucket, key, upload, &body).await
            }
            (Method::DELETE, Some(upload)) => s3.abort_upload(bucket, key, upload).await,
            (Method::GET, Some(upload)) => s3.list_parts(bucket, key, upload).await,
            (Method::POST, None) if has("uploads") => s3.create_upload(bucket, key, headers).await,
            (Method::PUT, None) if headers.contains_key("x-amz-copy-source") => {
                s3.copy_object(bucket, key, headers).await
            }
            (Method::PUT, None) => {
                let check = BodyCheck::new(&mut verified, headers)?;
                s3.put_object(bucket, key, headers, body_stream(body), check).await
            }
            (Method::GET | Method::HEAD, None) => {
                let mut h = HeaderMap::new();
                if let Some(range) = headers.get(header::RANGE) {
                    h.insert(header::RANGE, range.clone());
                }
                Ok(s3.call(&h).download(bucket, key, Access::Caller, method).await?)
            }
            (Method::DELETE, None) => match s3.call(&no_headers).remove_one(bucket, key).await {
                Ok(_) => Ok(empty(StatusCode::NO_CONTENT)),
                // S3 answers a delete of a missing key as done.
                Err(ApiError::Storage { code: "NoSuchKey", .. }) => Ok(empty(StatusCode::NO_CONTENT)),
                Err(e) => Err(e.into()),
            },
            _ => {
                Err(S3Error::new(405, "MethodNotAllowed", "The specified method is not allowed against this resource."))
            }
        }
    }
}

/// One S3 request's operations.
struct S3<'a> {
    service: &'a StorageService,
    state: &'a Arc<AppState>,
    caller: &'a Caller,
    region: String,
}

/// An object's S3 facts: ETag and last modification (ISO 8601).
const OBJECT_FACTS: &str = "SELECT metadata->>'eTag', \
    to_char(coalesce((metadata->>'lastModified')::timestamptz, now()) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') \
    FROM fluxbase.storage_object_unchecked($1, $2, false)";

impl<'a> S3<'a> {
    fn call<'h>(&'h self, headers: &'h HeaderMap) -> Call<'h> {
        Call { state: self.state, backend: &*self.service.backend, caller: self.caller, headers, query: "" }
    }

    async fn facts(&self, bucket: &str, key: &str) -> Result<(String, String), S3Error> {
        let client = self.state.client().await?;
        let row = client.query_opt(OBJECT_FACTS, &[&bucket, &key]).await.map_err(pg)?;
        let row = row.ok_or_else(|| S3Error::from(ApiError::from(super::error::StorageError::NoSuchKey)))?;
        Ok((quote_etag(&row.get::<_, Option<String>>(0).unwrap_or_default()), row.get(1)))
    }

    /// Storage's upload of `body` as `bucket/key`, then the S3 ETag; a body
    /// that failed its checks is answered as such.
    async fn write(
        &self,
        bucket: &str,
        key: &str,
        headers: &HeaderMap,
        body: ByteStream,
        failure: &Failure,
    ) -> Result<String, S3Error> {
        let result = self.call(headers).upload(bucket, key, Write::Upload, body, None).await;
        if let Some(f) = failure.lock().unwrap_or_else(|p| p.into_inner()).take() {
            return Err(f.into());
        }
        result?;
        Ok(self.facts(bucket, key).await?.0)
    }

    async fn put_object(
        &self,
        bucket: &str,
        key: &str,
        headers: &HeaderMap,
        body: ByteStream,
        check: BodyCheck,
    ) -> Result<Response, S3Error> {
        let length =
            decoded_length(headers).or_else(|| header_str(headers, "content-length").and_then(|v| v.parse().ok()));
        let content_type = header_str(headers, "content-type").unwrap_or("application/octet-stream");
        let mut h =
            upload_headers(content_type, header_str(headers, "cache-control"), length, user_metadata(headers).as_ref());
        // `If-None-Match: *`: create only (S3's conditional write); `If-Match`
        // would need a compare-and-swap on the version: refused, not ignored.
        if headers.contains_key(header::IF_MATCH) {
            return Err(S3Error::not_implemented("If-Match on PutObject"));
        }
        let create_only = header_str(headers, "if-none-match").map(str::trim) == Some("*");
        if create_only {
            set(&mut h, "x-upsert", "false");
        }
        let failure: Failure = Arc::default();
        let etag = match self.write(bucket, key, &h, checked_body(body, check, failure.clone()), &failure).await {
            Err(e) if create_only && e.code == "KeyAlreadyExists" => {
                return Err(S3Error::new(
                    412,
                    "PreconditionFailed",
                    "At least one of the pre-conditions you specified did not hold",
                ))
            }
            other => other?,
        };
        let mut r = empty(StatusCode::OK);
        set(r.headers_mut(), "etag", &etag);
        Ok(r)
    }

    async fn copy_object(&self, bucket: &str, key: &str, headers: &HeaderMap) -> Result<Response, S3Error> {
        let source = crate::http::path_decode(header_str(headers, "x-amz-copy-source").unwrap_or(""));
        let source = source.split('?').next().unwrap_or("").trim_start_matches('/');
        let (src_bucket, src_key) = source.split_once('/').ok_or_else(|| {
            S3Error::new(
                400,
                "InvalidArgument",
                "Copy Source must mention the source bucket and key: sourcebucket/sourcekey",
            )
        })?;
        let mut body =
            json!({ "bucketId": src_bucket, "sourceKey": src_key, "destinationBucket": bucket, "destinationKey": key });
        if header_str(headers, "x-amz-metadata-directive").is_some_and(|d| d.eq_ignore_ascii_case("REPLACE")) {
            body["copyMetadata"] = json!(false);
            body["metadata"] = user_metadata(headers).unwrap_or(Value::Null);
        }
        let mut h = HeaderMap::new();
        set(&mut h, "x-upsert", "true");
        self.call(&h).copy_object(body).await?;
        let (etag, modified) = self.facts(bucket, key).await?;
        Ok(xml(
            StatusCode::OK,
            format!("<CopyObjectResult xmlns=\"{XMLNS}\"><LastModified>{modified}</LastModified><ETag>{}</ETag></CopyObjectResult>", esc(&etag)),
        ))
    }

    async fn delete_objects(&self, bucket: &str, body: &[u8]) -> Result<Response, S3Error> {
        let nodes = xml_nodes(body)?;
        let keys: Vec<String> =
            nodes.iter().filter(|(p, t)| p == "Delete/Object/Key" && !t.is_empty()).map(|(_, t)| t.clone()).collect();
        let quiet = nodes.iter().any(|(p, t)| p == "Delete/Quiet" && t.eq_ignore_ascii_case("true"));
        if keys.is_empty() || keys.len() > 1000 {
            return Err(S3Error::new(400, "MalformedXML", "A Delete request names 1 to 1000 objects"));
        }
        let none = HeaderMap::new();
        self.call(&none).remove_many(bucket, json!({ "prefixes": keys })).await?;
        let mut out = format!("<DeleteResult xmlns=\"{XMLNS}\">");
        if !quiet {
            for k in &keys {
                out.push_str(&format!("<Deleted><Key>{}</Key></Deleted>", esc(k)));
            }
        }
        out.push_str("</DeleteResult>");
        Ok(xml(StatusCode::OK, out))
    }

    async fn list_buckets(&self) -> Result<Response, S3Error> {
        let client = self.state.client().await?;
        let rows = as_caller(
            &client,
            &self.caller.claims,
            "SELECT id, to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') \
             FROM storage.buckets ORDER BY id COLLATE \"C\"",
            &[],
            End::Commit,
        )
        .await
        .map_err(pg)?;
        let mut out = format!(
            "<ListAllMyBucketsResult xmlns=\"{XMLNS}\"><Owner><ID>fluxbase</ID><DisplayName>fluxbase</DisplayName></Owner><Buckets>"
        );
        for r in &rows {
            out.push_str(&format!(
                "<Bucket><Name>{}</Name><CreationDate>{}</CreationDate></Bucket>",
                esc(r.get(0)),
                r.get::<_, Option<String>>(1).unwrap_or_default()
            ));
        }
        out.push_str("</Buckets></ListAllMyBucketsResult>");
        Ok(xml(StatusCode::OK, out))
    }

    /// ListObjectsV2 (`list-type=2`) or ListObjects (v1, `marker`): names
    /// under `prefix` in byte order, rolled up to `CommonPrefixes` at the
    /// first `delimiter` after it, as the caller sees them.
    async fn list_objects(&self, bucket: &str, query: &[(String, String)]) -> Result<Response, S3Error> {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let q = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let v2 = q("list-type").as_deref() == Some("2");
        let prefix = q("prefix").unwrap_or_default();
        let delimiter = q("delimiter").unwrap_or_default();
        let max_keys: i64 = match q("max-keys") {
            None => 1000,
            Some(n) => n
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| S3Error::new(400, "InvalidArgument", "max-keys must be a non-negative integer"))?
                .min(1000),
        };
        let token = q("continuation-token");
        let after = if v2 {
            match &token {
                Some(t) => String::from_utf8(b64.decode(t).map_err(|_| {
                    S3Error::new(400, "InvalidArgument", "The continuation token provided is incorrect")
                })?)
                .map_err(|_| S3Error::new(400, "InvalidArgument", "The continuation token provided is incorrect"))?,
                None => q("start-after").unwrap_or_default(),
            }
        } else {
            q("marker").unwrap_or_default()
        };
        let url = q("encoding-type").as_deref() == Some("url");
        let enc = |s: &str| if url { sigv4::uri_encode(s, true) } else { esc(s) };

        self.call(&HeaderMap::new()).bucket_rules(bucket).await?;
        let client = self.state.client().await?;
        let rows = as_caller(
                &client,
                &self.caller.claims,
                "WITH matched AS ( \
                   SELECT name, metadata, updated_at, \
                     CASE WHEN $3 <> '' AND strpos(substr(name, length($2) + 1), $3) > 0 \
                       THEN left(name, length($2) + strpos(substr(name, length($2) + 1), $3) + length($3) - 1) END AS common \
                   FROM storage.objects WHERE bucket_id = $1 AND left(name, length($2)) = $2 \
                 ), keyed AS ( \
                   SELECT coalesce(common, name) COLLATE \"C\" AS k, common IS NOT NULL AS folder, \
                     (metadata->>'size')::bigint AS size, metadata->>'eTag' AS etag, \
                     to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') AS modified \
                   FROM matched \
                 ) \
                 SELECT DISTINCT ON (k) k::text, folder, size, etag, modified FROM keyed \
                 WHERE k > $4 ORDER BY k LIMIT $5",
                &[&bucket, &prefix, &delimiter, &after, &(max_keys + 1)],
                End::Commit,
            )
            .await
            .map_err(pg)?;
        let truncated = rows.len() as i64 > max_keys;
        let rows = &rows[..rows.len().min(max_keys as usize)];
        let mut out = format!(
            "<ListBucketResult xmlns=\"{XMLNS}\"><Name>{}</Name><Prefix>{}</Prefix><MaxKeys>{max_keys}</MaxKeys>\
             <IsTruncated>{truncated}</IsTruncated>",
            esc(bucket),
            enc(&prefix)
        );
        if !delimiter.is_empty() {
            out.push_str(&format!("<Delimiter>{}</Delimiter>", enc(&delimiter)));
        }
        if url {
            out.push_str("<EncodingType>url</EncodingType>");
        }
        let last = rows.last().map(|r| r.get::<_, String>(0));
        if v2 {
            out.push_str(&format!("<KeyCount>{}</KeyCount>", rows.len()));
            if let Some(t) = &token {
                out.push_str(&format!("<ContinuationToken>{}</ContinuationToken>", esc(t)));
            }
            if let Some(s) = q("start-after") {
                out.push_str(&format!("<StartAfter>{}</StartAfter>", enc(&s)));
            }
            if let (true, Some(l)) = (truncated, &last) {
                out.push_str(&format!("<NextContinuationToken>{}</NextContinuationToken>", b64.encode(l)));
            }
        } else {
            out.push_str(&format!("<Marker>{}</Marker>", enc(&after)));
            if let (true, Some(l)) = (truncated, &last) {
                out.push_str(&format!("<NextMarker>{}</NextMarker>", enc(l)));
            }
        }
        for r in rows {
            let k: String = r.get(0);
            if r.get::<_, bool>(1) {
                continue;
            }
            out.push_str(&format!(
                "<Contents><Key>{}</Key><LastModified>{}</LastModified><ETag>{}</ETag><Size>{}</Size>\
                 <StorageClass>STANDARD</StorageClass></Contents>",
                enc(&k),
                r.get::<_, Option<String>>(4).unwrap_or_default(),
                esc(&quote_etag(&r.get::<_, Option<String>>(3).unwrap_or_default())),
                r.get::<_, Option<i64>>(2).unwrap_or(0)
            ));
        }
        for r in rows.iter().filter(|r| r.get::<_, bool>(1)) {
            out.push_str(&format!("<CommonPrefixes><Prefix>{}</Prefix></CommonPrefixes>", enc(&r.get::<_, String>(0))));
        }
        out.push_str("</ListBucketResult>");
        Ok(xml(StatusCode::OK, out))
    }

    // ---- multipart uploads ----

    async fn create_upload(&self, bucket: &str, key: &str, headers: &HeaderMap) -> Result<Response, S3Error> {
        super::rules::bucket_id(bucket).map_err(ApiError::from)?;
        super::rules::object_name(key).map_err(ApiError::from)?;
        self.call(&HeaderMap::new()).bucket_rules(bucket).await?;
        // Refused at once if the caller's policies would refuse the object.
        self.call(&HeaderMap::new()).precheck(bucket, key, Write::Upload, true, true).await?;
        self.expire_uploads().await;
        let upload = uuid::Uuid::new_v4();
        let content_type = header_str(headers, "content-type").unwrap_or("application/octet-stream");
        let cache_control = header_str(headers, "cache-control").unwrap_or("no-cache");
        let client = self.state.client().await?;
        client
            .execute(
                "INSERT INTO fluxbase.storage_s3_uploads (upload_id, bucket_id, name, content_type, cache_control, user_metadata) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[&upload, &bucket, &key, &content_type, &cache_control, &user_metadata(headers)],
            )
            .await
            .map_err(pg)?;
        Ok(xml(
            StatusCode::OK,
            format!(
                "<InitiateMultipartUploadResult xmlns=\"{XMLNS}\"><Bucket>{}</Bucket><Key>{}</Key><UploadId>{upload}</UploadId>\
                 </InitiateMultipartUploadResult>",
                esc(bucket),
                esc(key)
            ),
        ))
    }

    /// Removes uploads abandoned for `UPLOAD_EXPIRY`, and their parts.
    async fn expire_uploads(&self) {
        let result = async {
            let client = self.state.client().await?;
            let rows = client
                .query(
                    &format!(
                        "WITH gone AS (DELETE FROM fluxbase.storage_s3_uploads WHERE created_at < now() - interval '{UPLOAD_EXPIRY}' \
                         RETURNING upload_id) SELECT p.key FROM fluxbase.storage_s3_parts p JOIN gone USING (upload_id)"
                    ),
                    &[],
                )
                .await
                .map_err(super::error::pg)?;
            Ok::<_, ApiError>(rows.iter().map(|r| r.get::<_, String>(0)).collect::<Vec<_>>())
        }
        .await;
        match result {
            Ok(keys) if !keys.is_empty() => {
                if let Err(e) = self.service.backend.delete(keys).await {
                    tracing::warn!(error = %e, "s3 protocol: deleting expired parts failed");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "s3 protocol: expiring multipart uploads failed"),
        }
    }

    /// The upload's `(content_type, cache_control, user_metadata)`, if it is
    /// one of `bucket/key`.
    async fn upload_row(
        &self,
        bucket: &str,
        key: &str,
        upload: &str,
    ) -> Result<(uuid::Uuid, String, String, Option<Value>), S3Error> {
        let id = uuid::Uuid::parse_str(upload).map_err(|_| S3Error::no_such_upload())?;
        let client = self.state.client().await?;
        let row = client
            .query_opt(
                "SELECT content_type, cache_control, user_metadata FROM fluxbase.storage_s3_uploads \
                 WHERE upload_id = $1 AND bucket_id = $2 AND name = $3",
                &[&id, &bucket, &key],
            )
            .await
            .map_err(pg)?
            .ok_or_else(S3Error::no_such_upload)?;
        Ok((id, row.get(0), row.get(1), row.get(2)))
    }

    async fn upload_part(
        &self,
        bucket: &str,
        key: &str,
        upload: &str,
        part: i32,
        body: ByteStream,
        check: BodyCheck,
    ) -> Result<Response, S3Error> {
        let (id, ..) = self.upload_row(bucket, key, upload).await?;
        let (limit, _) = self.call(&HeaderMap::new()).bucket_rules(bucket).await?;
        let version = uuid::Uuid::new_v4().simple().to_string();
        let part_key = format!("{PARTS_PREFIX}/{id}/{part}-{version}");
        let failure: Failure = Arc::default();
        let stored =
            self.service.backend.put(part_key.clone(), checked_body(body, check, failure.clone()), limit).await;
        if let Some(f) = failure.lock().unwrap_or_else(|p| p.into_inner()).take() {
            return Err(f.into());
        }
        let size = stored.map_err(|e| match e {
            BackendError::TooLarge { .. } => S3Error::from(ApiError::from(super::error::StorageError::EntityTooLarge)),
            BackendError::Body(m) => S3Error::new(400, "IncompleteBody", m),
            other => S3Error::new(500, "InternalError", other.to_string()),
        })?;
        let etag = format!("\"{version}\"");
        let client = self.state.client().await?;
        let replaced = client
            .query_one(
                "WITH old AS (SELECT key FROM fluxbase.storage_s3_parts WHERE upload_id = $1 AND part_number = $2) \
                 INSERT INTO fluxbase.storage_s3_parts (upload_id, part_number, key, size, etag) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (upload_id, part_number) DO UPDATE SET key = excluded.key, size = excluded.size, etag = excluded.etag \
                 RETURNING (SELECT key FROM old)",
                &[&id, &part, &part_key, &(size as i64), &etag],
            )
            .await;
        match replaced {
            Ok(row) => {
                if let Some(old) = row.get::<_, Option<String>>(0) {
                    if let Err(e) = self.service.backend.delete(vec![old]).await {
                        tracing::warn!(error = %e, "s3 protocol: deleting a replaced part failed");
                    }
                }
            }
            Err(e) => {
                if let Err(e) = self.service.backend.delete(vec![part_key]).await {
                    tracing::warn!(error = %e, "s3 protocol: deleting an unrecorded part failed");
                }
                // The upload was aborted or completed meanwhile.
                if e.code() == Some(&tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION) {
                    return Err(S3Error::no_such_upload());
                }
                return Err(pg(e));
            }
        }
        let mut r = empty(StatusCode::OK);
        set(r.headers_mut(), "etag", &etag);
        Ok(r)
    }

    async fn complete_upload(&self, bucket: &str, key: &str, upload: &str, body: &[u8]) -> Result<Response, S3Error> {
        let (id, content_type, cache_control, meta) = self.upload_row(bucket, key, upload).await?;
        let mut listed: Vec<(i32, String)> = Vec::new();
        for (path, text) in xml_nodes(body)? {
            match path.as_str() {
                "CompleteMultipartUpload/Part" => listed.push((0, String::new())),
                "CompleteMultipartUpload/Part/PartNumber" if !text.is_empty() => {
                    let n = text
                        .trim()
                        .parse()
                        .map_err(|_| S3Error::new(400, "MalformedXML", "PartNumber is not a number"))?;
                    listed
                        .last_mut()
                        .ok_or_else(|| S3Error::new(400, "MalformedXML", "PartNumber outside a Part"))?
                        .0 = n;
                }
                "CompleteMultipartUpload/Part/ETag" if !text.is_empty() => {
                    listed.last_mut().ok_or_else(|| S3Error::new(400, "MalformedXML", "ETag outside a Part"))?.1 = text;
                }
                _ => {}
            }
        }
        if listed.is_empty() {
            return Err(S3Error::new(
                400,
                "MalformedXML",
                "The XML you provided was not well-formed or did not validate against our published schema",
            ));
        }
        if listed.windows(2).any(|w| w[0].0 >= w[1].0) {
            return Err(S3Error::new(
                400,
                "InvalidPartOrder",
                "The list of parts was not in ascending order. Parts must be ordered by part number.",
            ));
        }
        let client = self.state.client().await?;
        let rows = client
            .query("SELECT part_number, key, size, etag FROM fluxbase.storage_s3_parts WHERE upload_id = $1", &[&id])
            .await
            .map_err(pg)?;
        drop(client);
        let mut keys = Vec::with_capacity(listed.len());
        let mut total: u64 = 0;
        for (n, etag) in &listed {
            let row = rows
                .iter()
                .find(|r| r.get::<_, i32>(0) == *n && quote_etag(r.get(3)) == quote_etag(etag))
                .ok_or_else(|| {
                    S3Error::new(400, "InvalidPart", "One or more of the specified parts could not be found. The part may not have been uploaded, or the specified entity tag may not match the part's entity tag.")
                })?;
            keys.push(row.get::<_, String>(1));
            total += row.get::<_, i64>(2) as u64;
        }
        let backend = self.service.backend.clone();
        let stream = futures_util::stream::iter(keys)
            .then(move |k| {
                let backend = backend.clone();
                async move { backend.get(k, None).await.map_err(|e| BodyError::from(e.to_string())) }
            })
            .try_flatten()
            .boxed();
        let h = upload_headers(&content_type, Some(&cache_control), Some(total), meta.as_ref());
        let failure: Failure = Arc::default();
        let etag = self.write(bucket, key, &h, stream, &failure).await?;
        // Done: the parts go (a failed completion keeps them for a retry).
        self.forget_upload(id, "completed").await?;
        Ok(xml(
            StatusCode::OK,
            format!(
                "<CompleteMultipartUploadResult xmlns=\"{XMLNS}\"><Location>/{}/{}</Location><Bucket>{}</Bucket><Key>{}</Key>\
                 <ETag>{}</ETag></CompleteMultipartUploadResult>",
                esc(&sigv4::uri_encode(bucket, false)),
                esc(&sigv4::uri_encode(key, true)),
                esc(bucket),
                esc(key),
                esc(&etag)
            ),
        ))
    }

    async fn abort_upload(&self, bucket: &str, key: &str, upload: &str) -> Result<Response, S3Error> {
        let (id, ..) = self.upload_row(bucket, key, upload).await?;
        self.forget_upload(id, "aborted").await?;
        Ok(empty(StatusCode::NO_CONTENT))
    }

    /// Drops a multipart upload's rows, then its parts' files (`why`: for
    /// the log line when a file cannot be deleted; no row names it anymore).
    async fn forget_upload(&self, id: uuid::Uuid, why: &str) -> Result<(), S3Error> {
        let client = self.state.client().await?;
        let rows = client
            .query(
                "WITH gone AS (DELETE FROM fluxbase.storage_s3_uploads WHERE upload_id = $1 RETURNING upload_id) \
                 SELECT p.key FROM fluxbase.storage_s3_parts p JOIN gone USING (upload_id)",
                &[&id],
            )
            .await
            .map_err(pg)?;
        let keys: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        if !keys.is_empty() {
            if let Err(e) = self.service.backend.delete(keys).await {
                tracing::warn!(error = %e, "s3 protocol: deleting {why} parts failed");
            }
        }
        Ok(())
    }

    async fn list_parts(&self, bucket: &str, key: &str, upload: &str) -> Result<Response, S3Error> {
        let (id, ..) = self.upload_row(bucket, key, upload).await?;
        let client = self.state.client().await?;
        let rows = client
            .query(
                "SELECT part_number, size, etag FROM fluxbase.storage_s3_parts WHERE upload_id = $1 ORDER BY part_number",
                &[&id],
            )
            .await
            .map_err(pg)?;
        let mut out = format!(
            "<ListPartsResult xmlns=\"{XMLNS}\"><Bucket>{}</Bucket><Key>{}</Key><UploadId>{id}</UploadId>\
             <MaxParts>10000</MaxParts><IsTruncated>false</IsTruncated>",
            esc(bucket),
            esc(key)
        );
        for r in &rows {
            out.push_str(&format!(
                "<Part><PartNumber>{}</PartNumber><ETag>{}</ETag><Size>{}</Size></Part>",
                r.get::<_, i32>(0),
                esc(r.get(2)),
                r.get::<_, i64>(1)
            ));
        }
        out.push_str("</ListPartsResult>");
        Ok(xml(StatusCode::OK, out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_only_with_their_key_and_id() {
        let key = [7u8; 32];
        let sealed = seal(&key, "FBAKONE", "s3cr3t");
        assert_eq!(unseal(&key, "FBAKONE", &sealed).as_deref(), Some("s3cr3t"));
        assert_eq!(unseal(&key, "FBAKTWO", &sealed), None);
        assert_eq!(unseal(&[8u8; 32], "FBAKONE", &sealed), None);
        let (id, secret) = new_key_pair();
        assert!(id.starts_with("FBAK") && id.len() == 20 && secret.len() == 40);
    }

    #[test]
    fn delete_and_complete_bodies_parse() {
        let nodes = xml_nodes(
            b"<?xml version=\"1.0\"?><Delete xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Object><Key>a&amp;b</Key></Object>\
              <Object><Key>c</Key></Object><Quiet>true</Quiet></Delete>",
        )
        .unwrap();
        let keys: Vec<&str> = nodes
            .iter()
            .filter(|(p, _)| p == "Delete/Object/Key")
            .map(|(_, t)| t.as_str())
            .filter(|t| !t.is_empty())
            .collect();
        assert_eq!(keys, ["a&b", "c"]);
        assert!(xml_nodes(b"<Delete><Object></Delete>").is_err());
    }

    #[test]
    fn storage_refusals_become_s3_codes() {
        let e: S3Error = ApiError::from(super::super::error::StorageError::NoSuchKey).into();
        assert_eq!((e.status.as_u16(), e.code), (404, "NoSuchKey"));
        let e: S3Error = ApiError::from(super::super::error::StorageError::EntityTooLarge).into();
        assert_eq!((e.status.as_u16(), e.code), (400, "EntityTooLarge"));
        let r = S3Error::from(SigError::Mismatch).response("/b/k", "req-1", false);
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
    }
}
