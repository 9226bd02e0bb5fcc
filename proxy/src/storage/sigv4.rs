//! AWS Signature Version 4 as S3 uses it (pure): the `Authorization`
//! header and presigned-URL query forms, the canonical request, the
//! signing key, and the `aws-chunked` body (`STREAMING-AWS4-HMAC-SHA256-PAYLOAD`
//! with a signature per chunk, `STREAMING-UNSIGNED-PAYLOAD-TRAILER` with a
//! trailing checksum) decoded in bounded memory.
//! <https://docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-authenticating-requests.html>
use bytes::{Buf, Bytes, BytesMut};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";
pub const STREAMING_SIGNED: &str = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD";
pub const STREAMING_SIGNED_TRAILER: &str = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER";
pub const STREAMING_UNSIGNED_TRAILER: &str = "STREAMING-UNSIGNED-PAYLOAD-TRAILER";
/// `sha256("")`, hex.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
/// The longest validity of a presigned URL (seven days), as S3.
pub const PRESIGNED_MAX_SECONDS: u64 = 604_800;

/// Why a request's signature could not be checked or did not match, as S3
/// names it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigError {
    #[error("{0}")]
    Malformed(String),
    #[error("The request signature we calculated does not match the signature you provided. Check your key and signing method.")]
    Mismatch,
    #[error("The difference between the request time and the server's time is too large.")]
    TimeSkewed,
    #[error("Request has expired")]
    Expired,
    #[error("The provided 'x-amz-content-sha256' header does not match what was computed.")]
    ContentSha256Mismatch,
    #[error("{0}")]
    BadChunk(String),
    #[error("The {0} you specified did not match the calculated checksum.")]
    BadChecksum(String),
}

/// What a request claims about its signature, from the `Authorization`
/// header or a presigned URL's query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    /// `YYYYMMDD` of the scope.
    pub date: String,
    pub region: String,
    pub service: String,
    /// Lower-case names, in the order given (sorted by the client).
    pub signed_headers: Vec<String>,
    pub signature: String,
    /// `YYYYMMDDTHHMMSSZ`.
    pub amz_date: String,
    /// Presigned: seconds of validity from `amz_date`.
    pub expires: Option<u64>,
}

impl Credentials {
    /// `date/region/service/aws4_request`.
    pub fn scope(&self) -> String {
        format!("{}/{}/{}/aws4_request", self.date, self.region, self.service)
    }
}

/// `AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/s3/aws4_request,
/// SignedHeaders=host;x-amz-date, Signature=…`; `amz_date` from the
/// `x-amz-date` (or `date`) header.
pub fn parse_authorization(header: &str, amz_date: &str) -> Result<Credentials, SigError> {
    let rest = header
        .strip_prefix(ALGORITHM)
        .ok_or_else(|| SigError::Malformed("Only AWS4-HMAC-SHA256 (Signature Version 4) is supported".into()))?;
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let (k, v) = part.trim().split_once('=').unwrap_or((part.trim(), ""));
        match k {
            "Credential" => credential = Some(v),
            "SignedHeaders" => signed = Some(v),
            "Signature" => signature = Some(v),
            _ => {}
        }
    }
    let malformed = |what: &str| SigError::Malformed(format!("The authorization header is malformed: {what}"));
    build(
        credential.ok_or_else(|| malformed("no Credential"))?,
        signed.ok_or_else(|| malformed("no SignedHeaders"))?,
        signature.ok_or_else(|| malformed("no Signature"))?,
        amz_date,
        None,
    )
}

/// A presigned URL's `X-Amz-*` query parameters (decoded pairs).
pub fn parse_presigned(query: &[(String, String)]) -> Result<Credentials, SigError> {
    let get = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .ok_or_else(|| SigError::Malformed(format!("Query-string authentication requires {name}")))
    };
    if get("X-Amz-Algorithm")? != ALGORITHM {
        return Err(SigError::Malformed("X-Amz-Algorithm only supports \"AWS4-HMAC-SHA256\"".into()));
    }
    let expires: u64 =
        get("X-Amz-Expires")?.parse().map_err(|_| SigError::Malformed("X-Amz-Expires should be a number".into()))?;
    if expires > PRESIGNED_MAX_SECONDS {
        return Err(SigError::Malformed("X-Amz-Expires must be less than a week (in seconds)".into()));
    }
    build(
        get("X-Amz-Credential")?,
        get("X-Amz-SignedHeaders")?,
        get("X-Amz-Signature")?,
        get("X-Amz-Date")?,
        Some(expires),
    )
}

fn build(
    credential: &str,
    signed: &str,
    signature: &str,
    amz_date: &str,
    expires: Option<u64>,
) -> Result<Credentials, SigError> {
    let parts: Vec<&str> = credential.split('/').collect();
    let [access_key_id, date, region, service, "aws4_request"] = parts.as_slice() else {
        return Err(SigError::Malformed(format!("The credential {credential:?} is malformed")));
    };
    if parse_amz_date(amz_date).is_none() {
        return Err(SigError::Malformed(
            "X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"".into(),
        ));
    }
    if !amz_date.starts_with(date) {
        return Err(SigError::Malformed(format!("The credential's date {date} is not the request's date {amz_date}")));
    }
    if signature.len() != 64 || !signature.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(SigError::Malformed("The signature is not 64 hex digits".into()));
    }
    let signed_headers: Vec<String> = signed.split(';').map(|h| h.trim().to_ascii_lowercase()).collect();
    if !signed_headers.iter().any(|h| h == "host") {
        return Err(SigError::Malformed("The host header must be signed".into()));
    }
    Ok(Credentials {
        access_key_id: access_key_id.to_string(),
        date: date.to_string(),
        region: region.to_string(),
        service: service.to_string(),
        signed_headers,
        signature: signature.to_ascii_lowercase(),
        amz_date: amz_date.to_string(),
        expires,
    })
}

/// `20150830T123600Z` → seconds since the epoch.
pub fn parse_amz_date(text: &str) -> Option<i64> {
    chrono::NaiveDateTime::parse_from_str(text, "%Y%m%dT%H%M%SZ").ok().map(|t| t.and_utc().timestamp())
}

/// An HTTP `Date` header (`Sun, 30 Aug 2015 12:36:00 GMT`) as an amz date.
pub fn http_date_to_amz(text: &str) -> Option<String> {
    chrono::DateTime::parse_from_rfc2822(text)
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc).format("%Y%m%dT%H%M%SZ").to_string())
}

/// Header auth: within 15 minutes of `now`. Presigned: not before its
/// date (less 15 minutes of skew) and not after date + expires.
pub fn check_time(creds: &Credentials, now: i64) -> Result<(), SigError> {
    let at = parse_amz_date(&creds.amz_date).ok_or_else(|| SigError::Malformed("bad X-Amz-Date".into()))?;
    match creds.expires {
        None if (now - at).abs() > 15 * 60 => Err(SigError::TimeSkewed),
        Some(_) if at - now > 15 * 60 => Err(SigError::Malformed("Request is not valid yet".into())),
        Some(expires) if now > at + expires as i64 => Err(SigError::Expired),
        _ => Ok(()),
    }
}

/// S3's URI encoding: unreserved bytes stay, all else is `%XX`; `/` stays
/// in a path.
pub fn uri_encode(text: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            b'/' if keep_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The canonical query: every pair but `X-Amz-Signature`, each side
/// encoded, sorted. `query` is the raw query string.
pub fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let decode = crate::http::path_decode;
            (uri_encode(&decode(k), false), uri_encode(&decode(v), false))
        })
        .filter(|(k, _)| k != "X-Amz-Signature")
        .collect();
    pairs.sort();
    pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&")
}

/// The request as signed: `headers` yields `(lower-case name, value)` for
/// the signed names (values of a repeated header in order).
pub fn canonical_request(
    method: &str,
    canonical_uri: &str,
    canonical_query: &str,
    signed_headers: &[String],
    header: impl Fn(&str) -> Vec<String>,
    payload_hash: &str,
) -> String {
    let mut out = format!("{method}\n{canonical_uri}\n{canonical_query}\n");
    for name in signed_headers {
        let values: Vec<String> =
            header(name).iter().map(|v| v.split_whitespace().collect::<Vec<_>>().join(" ")).collect();
        out.push_str(&format!("{name}:{}\n", values.join(",")));
    }
    out.push_str(&format!("\n{}\n{payload_hash}", signed_headers.join(";")));
    out
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// `HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request")`.
pub fn signing_key(secret: &str, creds: &Credentials) -> [u8; 32] {
    let k = hmac(format!("AWS4{secret}").as_bytes(), creds.date.as_bytes());
    let k = hmac(&k, creds.region.as_bytes());
    let k = hmac(&k, creds.service.as_bytes());
    hmac(&k, b"aws4_request")
}

pub fn string_to_sign(creds: &Credentials, canonical_request: &str) -> String {
    format!("{ALGORITHM}\n{}\n{}\n{}", creds.amz_date, creds.scope(), sha256_hex(canonical_request.as_bytes()))
}

pub fn signature(key: &[u8; 32], string_to_sign: &str) -> String {
    hex(&hmac(key, string_to_sign.as_bytes()))
}

/// Constant-time comparison of two hex signatures.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// How the body of a signed request is to be checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// `UNSIGNED-PAYLOAD`: not at all.
    Unsigned,
    /// The body's SHA-256 (hex) must be this.
    Sha256(String),
    /// `aws-chunked`, each chunk signed (and maybe a signed trailer).
    StreamingSigned { trailer: bool },
    /// `aws-chunked`, unsigned, with a trailing checksum.
    StreamingUnsignedTrailer,
}

impl Payload {
    pub fn parse(value: &str) -> Result<Payload, SigError> {
        Ok(match value {
            UNSIGNED_PAYLOAD => Payload::Unsigned,
            STREAMING_SIGNED => Payload::StreamingSigned { trailer: false },
            STREAMING_SIGNED_TRAILER => Payload::StreamingSigned { trailer: true },
            STREAMING_UNSIGNED_TRAILER => Payload::StreamingUnsignedTrailer,
            hash if hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
                Payload::Sha256(hash.to_ascii_lowercase())
            }
            other => {
                return Err(SigError::Malformed(format!("x-amz-content-sha256 {other:?} is not supported")));
            }
        })
    }
}

/// Signs each chunk of a `STREAMING-AWS4-HMAC-SHA256-PAYLOAD` body with the
/// previous signature (the request's, first).
pub struct ChunkSigner {
    key: [u8; 32],
    amz_date: String,
    scope: String,
    previous: String,
}

impl ChunkSigner {
    pub fn new(key: [u8; 32], creds: &Credentials) -> ChunkSigner {
        ChunkSigner { key, amz_date: creds.amz_date.clone(), scope: creds.scope(), previous: creds.signature.clone() }
    }

    /// The expected signature of a chunk whose data hashes to `data_sha256`;
    /// it becomes the previous one.
    pub fn next(&mut self, data_sha256: &str) -> String {
        let sts = format!(
            "AWS4-HMAC-SHA256-PAYLOAD\n{}\n{}\n{}\n{EMPTY_SHA256}\n{data_sha256}",
            self.amz_date, self.scope, self.previous
        );
        self.previous = signature(&self.key, &sts);
        self.previous.clone()
    }

    /// The expected signature of the trailer (its lines, each `name:value\n`).
    pub fn trailer(&mut self, canonical_trailer: &str) -> String {
        let sts = format!(
            "AWS4-HMAC-SHA256-TRAILER\n{}\n{}\n{}\n{}",
            self.amz_date,
            self.scope,
            self.previous,
            sha256_hex(canonical_trailer.as_bytes())
        );
        signature(&self.key, &sts)
    }
}

/// A checksum a client sends with an upload (`x-amz-checksum-*`), base64.
pub enum Checksum {
    Crc32(crc32fast::Hasher),
    Sha1(sha1::Sha1),
    Sha256(Sha256),
}

impl Checksum {
    /// The hasher of `x-amz-checksum-crc32`/`-sha1`/`-sha256`; None for an
    /// algorithm not checked here (CRC32C, CRC64NVME: passed unchecked).
    pub fn for_header(name: &str) -> Option<Checksum> {
        match name.to_ascii_lowercase().as_str() {
            "x-amz-checksum-crc32" => Some(Checksum::Crc32(crc32fast::Hasher::new())),
            "x-amz-checksum-sha1" => Some(Checksum::Sha1(sha1::Sha1::new())),
            "x-amz-checksum-sha256" => Some(Checksum::Sha256(Sha256::new())),
            _ => None,
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            Checksum::Crc32(h) => h.update(data),
            Checksum::Sha1(h) => sha1::Digest::update(h, data),
            Checksum::Sha256(h) => h.update(data),
        }
    }

    /// The checksum, base64 as S3 sends it.
    pub fn finish(self) -> String {
        use base64::Engine;
        let bytes = match self {
            Checksum::Crc32(h) => h.finalize().to_be_bytes().to_vec(),
            Checksum::Sha1(h) => sha1::Digest::finalize(h).to_vec(),
            Checksum::Sha256(h) => h.finalize().to_vec(),
        };
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }
}

/// Longest chunk header or trailer line read before giving up.
const LINE_MAX: usize = 4096;
/// Trailer bytes kept (a few checksum headers).
const TRAILER_MAX: usize = 16 << 10;

enum State {
    /// `hex-size[;chunk-signature=…]\r\n`
    Header,
    /// `remaining` bytes of data left in the chunk.
    Data {
        remaining: u64,
    },
    /// The `\r\n` after a chunk's data.
    DataEnd,
    /// After the last (empty) chunk: trailer lines up to an empty line.
    Trailer,
    Done,
}

/// Decodes an `aws-chunked` body: feed bytes with `push`, get the payload
/// back; `finish` checks the end. Data is passed on as it arrives (the
/// hash of a chunk is checked at its end), so memory stays at one line.
pub struct ChunkedDecoder {
    signer: Option<ChunkSigner>,
    signed_trailer: bool,
    state: State,
    buf: BytesMut,
    hasher: Sha256,
    chunk_signature: String,
    trailer: String,
    decoded: u64,
    /// `(algorithm header, hasher)` of the checksum the trailer will carry.
    checksum: Option<(String, Checksum)>,
}

impl ChunkedDecoder {
    /// `signer`: Some for signed chunks. `trailer_checksum`: the header
    /// name the client announced in `x-amz-trailer`, if any.
    pub fn new(signer: Option<ChunkSigner>, signed_trailer: bool, trailer_checksum: Option<&str>) -> ChunkedDecoder {
        ChunkedDecoder {
            signer,
            signed_trailer,
            state: State::Header,
            buf: BytesMut::new(),
            hasher: Sha256::new(),
            chunk_signature: String::new(),
            trailer: String::new(),
            decoded: 0,
            checksum: trailer_checksum
                .and_then(|name| Checksum::for_header(name).map(|c| (name.to_ascii_lowercase(), c))),
        }
    }

    pub fn decoded_len(&self) -> u64 {
        self.decoded
    }

    /// Consumes `input`; returns the payload bytes it carried.
    pub fn push(&mut self, input: Bytes) -> Result<Vec<Bytes>, SigError> {
        self.buf.extend_from_slice(&input);
        let mut out = Vec::new();
        loop {
            match self.state {
                State::Header => {
                    let Some(line) = self.line()? else { break };
                    let (size, ext) = line.split_once(';').unwrap_or((&line, ""));
                    let size = u64::from_str_radix(size.trim(), 16)
                        .map_err(|_| SigError::BadChunk(format!("bad chunk size {size:?}")))?;
                    if self.signer.is_some() {
                        let sig = ext
                            .trim()
                            .strip_prefix("chunk-signature=")
                            .ok_or_else(|| SigError::BadChunk("a chunk without chunk-signature".into()))?;
                        self.chunk_signature = sig.to_ascii_lowercase();
                    }
                    self.hasher = Sha256::new();
                    self.state = if size == 0 {
                        self.check_chunk()?;
                        State::Trailer
                    } else {
                        State::Data { remaining: size }
                    };
                }
                State::Data { remaining } => {
                    if self.buf.is_empty() {
                        break;
                    }
                    let take = (remaining as usize).min(self.buf.len());
                    let data = self.buf.split_to(take).freeze();
                    self.hasher.update(&data);
                    if let Some((_, c)) = self.checksum.as_mut() {
                        c.update(&data);
                    }
                    self.decoded += data.len() as u64;
                    out.push(data);
                    let left = remaining - take as u64;
                    self.state = if left == 0 { State::DataEnd } else { State::Data { remaining: left } };
                }
                State::DataEnd => {
                    if self.buf.len() < 2 {
                        break;
                    }
                    if &self.buf[..2] != b"\r\n" {
                        return Err(SigError::BadChunk("a chunk's data is not followed by CRLF".into()));
                    }
                    self.buf.advance(2);
                    self.check_chunk()?;
                    self.state = State::Header;
                }
                State::Trailer => {
                    let Some(line) = self.line()? else { break };
                    if line.is_empty() {
                        self.check_trailer()?;
                        self.state = State::Done;
                    } else {
                        self.trailer.push_str(&line);
                        self.trailer.push('\n');
                        if self.trailer.len() > TRAILER_MAX {
                            return Err(SigError::BadChunk("the trailer is too long".into()));
                        }
                    }
                }
                State::Done => {
                    if !self.buf.is_empty() {
                        return Err(SigError::BadChunk("bytes after the last chunk".into()));
                    }
                    break;
                }
            }
        }
        Ok(out)
    }

    /// The body ended: it must have ended where the encoding does.
    pub fn finish(&mut self) -> Result<(), SigError> {
        match self.state {
            State::Done => Ok(()),
            // Without a trailer, some clients end after the last chunk's CRLF.
            State::Trailer if self.buf.is_empty() && self.trailer.is_empty() => self.check_trailer(),
            _ => Err(SigError::BadChunk("the body ended inside a chunk".into())),
        }
    }

    fn line(&mut self) -> Result<Option<String>, SigError> {
        match self.buf.windows(2).position(|w| w == b"\r\n") {
            Some(at) => {
                let line = self.buf.split_to(at);
                self.buf.advance(2);
                String::from_utf8(line.to_vec())
                    .map(Some)
                    .map_err(|_| SigError::BadChunk("a chunk header is not text".into()))
            }
            None if self.buf.len() > LINE_MAX => Err(SigError::BadChunk("a chunk header is too long".into())),
            None => Ok(None),
        }
    }

    fn check_chunk(&mut self) -> Result<(), SigError> {
        if let Some(signer) = self.signer.as_mut() {
            let hash = hex(&std::mem::take(&mut self.hasher).finalize());
            if !same(&signer.next(&hash), &self.chunk_signature) {
                return Err(SigError::Mismatch);
            }
        }
        Ok(())
    }

    fn check_trailer(&mut self) -> Result<(), SigError> {
        let mut canonical = String::new();
        let mut trailer_signature = None;
        let mut sent: Option<(String, String)> = None;
        for line in self.trailer.lines() {
            let (name, value) = line.split_once(':').unwrap_or((line, ""));
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim().to_string());
            if name == "x-amz-trailer-signature" {
                trailer_signature = Some(value);
            } else {
                canonical.push_str(&format!("{name}:{value}\n"));
                if name.starts_with("x-amz-checksum-") {
                    sent = Some((name, value));
                }
            }
        }
        if self.signed_trailer {
            let signer = self.signer.as_mut().ok_or(SigError::Mismatch)?;
            let expected = signer.trailer(&canonical);
            if !trailer_signature.is_some_and(|s| same(&s.to_ascii_lowercase(), &expected)) {
                return Err(SigError::Mismatch);
            }
        }
        if let Some((name, checksum)) = self.checksum.take() {
            match sent {
                Some((sent_name, value)) if sent_name == name => {
                    if checksum.finish() != value {
                        return Err(SigError::BadChecksum(name));
                    }
                }
                _ => return Err(SigError::BadChunk(format!("the trailer does not carry {name}"))),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // AWS's published examples: secret and date of the S3 SigV4 docs
    // ("Examples: Signature calculations in AWS Signature Version 4").
    const S3_SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

    fn sign(creds: &Credentials, secret: &str, canonical: &str) -> String {
        signature(&signing_key(secret, creds), &string_to_sign(creds, canonical))
    }

    #[test]
    fn get_vanilla_of_the_aws_test_suite() {
        // aws-sig-v4-test-suite/get-vanilla.
        let creds = parse_authorization(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
            "20150830T123600Z",
        )
        .unwrap();
        let canonical = canonical_request(
            "GET",
            "/",
            &canonical_query(""),
            &creds.signed_headers,
            |h| vec![if h == "host" { "example.amazonaws.com".into() } else { "20150830T123600Z".into() }],
            EMPTY_SHA256,
        );
        assert_eq!(
            canonical,
            "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n\
             e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(sign(&creds, "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", &canonical), creds.signature);
    }

    fn s3_example(signed: &str, signature: &str) -> Credentials {
        parse_authorization(
            &format!(
                "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, \
                 SignedHeaders={signed}, Signature={signature}"
            ),
            "20130524T000000Z",
        )
        .unwrap()
    }

    #[test]
    fn s3_get_object_with_range() {
        // "Example: GET Object": GET /test.txt, Range: bytes=0-9.
        let creds = s3_example(
            "host;range;x-amz-content-sha256;x-amz-date",
            "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41",
        );
        let canonical = canonical_request(
            "GET",
            "/test.txt",
            "",
            &creds.signed_headers,
            |h| {
                vec![match h {
                    "host" => "examplebucket.s3.amazonaws.com",
                    "range" => "bytes=0-9",
                    "x-amz-content-sha256" => EMPTY_SHA256,
                    _ => "20130524T000000Z",
                }
                .into()]
            },
            EMPTY_SHA256,
        );
        assert_eq!(sign(&creds, S3_SECRET, &canonical), creds.signature);
    }

    #[test]
    fn s3_list_objects_query_is_sorted_and_encoded() {
        // "Example: GET Bucket (List Objects)": ?max-keys=2&prefix=J.
        let creds = s3_example(
            "host;x-amz-content-sha256;x-amz-date",
            "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7",
        );
        let query = canonical_query("prefix=J&max-keys=2");
        assert_eq!(query, "max-keys=2&prefix=J");
        let canonical = canonical_request(
            "GET",
            "/",
            &query,
            &creds.signed_headers,
            |h| {
                vec![match h {
                    "host" => "examplebucket.s3.amazonaws.com",
                    "x-amz-content-sha256" => EMPTY_SHA256,
                    _ => "20130524T000000Z",
                }
                .into()]
            },
            EMPTY_SHA256,
        );
        assert_eq!(sign(&creds, S3_SECRET, &canonical), creds.signature);
    }

    #[test]
    fn s3_presigned_url() {
        // "Example: Presigned URL": GET /test.txt for 86400 s.
        let raw = "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request\
                   &X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host\
                   &X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404";
        let creds = parse_presigned(&crate::http::query_pairs(raw)).unwrap();
        assert_eq!(creds.expires, Some(86400));
        let canonical = canonical_request(
            "GET",
            "/test.txt",
            &canonical_query(raw),
            &creds.signed_headers,
            |_| vec!["examplebucket.s3.amazonaws.com".into()],
            UNSIGNED_PAYLOAD,
        );
        assert_eq!(sign(&creds, S3_SECRET, &canonical), creds.signature);
        let at = parse_amz_date("20130524T000000Z").unwrap();
        assert_eq!(check_time(&creds, at + 86400), Ok(()));
        assert_eq!(check_time(&creds, at + 86401), Err(SigError::Expired));
    }

    /// "Example: PUT Object" of the streaming docs: 66560 bytes of `a` in
    /// chunks of 64 KiB, 1 KiB and 0, each signed.
    #[test]
    fn s3_streaming_chunks_are_verified() {
        let creds = s3_example(
            "content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;x-amz-storage-class",
            "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9",
        );
        let canonical = canonical_request(
            "PUT",
            "/examplebucket/chunkObject.txt",
            "",
            &creds.signed_headers,
            |h| {
                vec![match h {
                    "content-encoding" => "aws-chunked",
                    "content-length" => "66824",
                    "host" => "s3.amazonaws.com",
                    "x-amz-content-sha256" => STREAMING_SIGNED,
                    "x-amz-date" => "20130524T000000Z",
                    "x-amz-decoded-content-length" => "66560",
                    _ => "REDUCED_REDUNDANCY",
                }
                .into()]
            },
            STREAMING_SIGNED,
        );
        assert_eq!(sign(&creds, S3_SECRET, &canonical), creds.signature);

        let body = |sigs: [&str; 3]| {
            let mut body = Vec::new();
            body.extend_from_slice(format!("10000;chunk-signature={}\r\n", sigs[0]).as_bytes());
            body.extend(std::iter::repeat_n(b'a', 65536));
            body.extend_from_slice(format!("\r\n400;chunk-signature={}\r\n", sigs[1]).as_bytes());
            body.extend(std::iter::repeat_n(b'a', 1024));
            body.extend_from_slice(format!("\r\n0;chunk-signature={}\r\n\r\n", sigs[2]).as_bytes());
            body
        };
        let good = [
            "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
            "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497",
            "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9",
        ];
        let encoded = body(good);
        assert_eq!(encoded.len(), 66824);
        // Fed in odd pieces, as the network delivers it.
        let key = signing_key(S3_SECRET, &creds);
        let mut decoder = ChunkedDecoder::new(Some(ChunkSigner::new(key, &creds)), false, None);
        let mut out = Vec::new();
        for piece in encoded.chunks(7777) {
            for b in decoder.push(Bytes::copy_from_slice(piece)).unwrap() {
                out.extend_from_slice(&b);
            }
        }
        decoder.finish().unwrap();
        assert_eq!(out.len(), 66560);
        assert!(out.iter().all(|&b| b == b'a'));

        let mut forged = good;
        forged[1] = "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5498";
        let mut decoder = ChunkedDecoder::new(Some(ChunkSigner::new(key, &creds)), false, None);
        assert_eq!(decoder.push(Bytes::from(body(forged))).unwrap_err(), SigError::Mismatch);
    }

    #[test]
    fn unsigned_chunks_with_a_crc32_trailer() {
        // CRC32 of "hello world" is 0x0d4a1185: base64 "DUoRhQ==".
        let ok = "5\r\nhello\r\n6\r\n world\r\n0\r\nx-amz-checksum-crc32:DUoRhQ==\r\n\r\n";
        let mut decoder = ChunkedDecoder::new(None, false, Some("x-amz-checksum-crc32"));
        let out: Vec<u8> = decoder.push(Bytes::from(ok)).unwrap().concat();
        decoder.finish().unwrap();
        assert_eq!(out, b"hello world");
        let bad = ok.replace("DUoRhQ==", "AAAAAA==");
        let mut decoder = ChunkedDecoder::new(None, false, Some("x-amz-checksum-crc32"));
        assert!(matches!(decoder.push(Bytes::from(bad)), Err(SigError::BadChecksum(_))));
        let mut decoder = ChunkedDecoder::new(None, false, None);
        decoder.push(Bytes::from("5\r\nhel")).unwrap();
        assert!(decoder.finish().is_err());
    }

    #[test]
    fn malformed_authorization_is_refused() {
        assert!(parse_authorization("AWS AKID:sig", "20150830T123600Z").is_err());
        assert!(parse_authorization(
            "AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/s3/aws4_request, SignedHeaders=x-amz-date, \
             Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
            "20150830T123600Z"
        )
        .is_err());
        assert!(parse_authorization(
            "AWS4-HMAC-SHA256 Credential=AKID/20150831/us-east-1/s3/aws4_request, SignedHeaders=host, \
             Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
            "20150830T123600Z"
        )
        .is_err());
        let creds = parse_authorization(
            "AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/s3/aws4_request, SignedHeaders=host, \
             Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
            "20150830T123600Z",
        )
        .unwrap();
        let at = parse_amz_date("20150830T123600Z").unwrap();
        assert_eq!(check_time(&creds, at + 901), Err(SigError::TimeSkewed));
        assert_eq!(check_time(&creds, at - 600), Ok(()));
    }
}
