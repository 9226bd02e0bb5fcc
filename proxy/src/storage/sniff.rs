//! What an upload's first bytes say it is. A bucket's `allowed_mime_types`
//! is checked against the declared `Content-Type` (as storage-api does) and,
//! beyond it, against the type the bytes' magic numbers name, so a bucket
//! that takes images cannot be handed an executable called `cat.png`. Bytes
//! no magic number matches (text, most formats without a signature) are
//! judged by the declared type alone.
use bytes::{Bytes, BytesMut};
use futures_util::{stream, StreamExt};

use super::backend::ByteStream;
use super::error::StorageError;
use super::rules;
use crate::http::BodyError;

/// How much of a body is read before deciding (Office documents and
/// archives may need a few KiB; images need a dozen bytes).
pub const PEEK_BYTES: usize = 8192;

/// The MIME type the first bytes of `body` name, if any, and the body
/// whole again (the peeked bytes put back in front).
pub async fn sniff(mut body: ByteStream) -> Result<(Option<&'static str>, ByteStream), BodyError> {
    let mut head = BytesMut::new();
    while head.len() < PEEK_BYTES {
        match body.next().await {
            Some(chunk) => head.extend_from_slice(&chunk?),
            None => break,
        }
    }
    let head: Bytes = head.freeze();
    let kind = infer::get(&head).map(|k| k.mime_type());
    let whole = stream::iter((!head.is_empty()).then_some(Ok(head))).chain(body).boxed();
    Ok((kind, whole))
}

/// The same for a file already on disk (a finished resumable upload).
pub fn sniff_file(path: &std::path::Path) -> std::io::Result<Option<&'static str>> {
    use std::io::Read;
    let mut head = Vec::with_capacity(PEEK_BYTES);
    std::fs::File::open(path)?.take(PEEK_BYTES as u64).read_to_end(&mut head)?;
    Ok(infer::get(&head).map(|k| k.mime_type()))
}

/// Refuses bytes whose sniffed type a bucket's `allowed_mime_types` does
/// not allow (`415`, naming that type).
pub fn check(allowed: Option<&[String]>, sniffed: Option<&str>) -> Result<(), StorageError> {
    match sniffed {
        Some(sniffed) if !rules::mime_allowed(allowed, sniffed) => Err(StorageError::InvalidMimeType(sniffed.into())),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(parts: &[&'static [u8]]) -> ByteStream {
        stream::iter(parts.iter().map(|p| Ok(Bytes::from_static(p))).collect::<Vec<_>>()).boxed()
    }

    async fn collect(body: ByteStream) -> Vec<u8> {
        body.map(|c| c.unwrap().to_vec()).concat().await
    }

    #[tokio::test]
    async fn names_types_by_their_bytes_and_gives_the_body_back_whole() {
        let png: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
        let (kind, body) = sniff(chunks(&[&png[..3], &png[3..], b"rest"])).await.unwrap();
        assert_eq!(kind, Some("image/png"));
        assert_eq!(collect(body).await, [png, b"rest"].concat());

        let elf: &[u8] = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x02\0\x3e\0";
        let zeros: &[u8] = &[0; 64];
        assert_eq!(sniff(chunks(&[elf, zeros])).await.unwrap().0, Some("application/x-executable"));

        let (kind, body) = sniff(chunks(&[b"just some text"])).await.unwrap();
        assert_eq!(kind, None);
        assert_eq!(collect(body).await, b"just some text");

        let (kind, body) = sniff(chunks(&[])).await.unwrap();
        assert_eq!(kind, None);
        assert!(collect(body).await.is_empty());
    }
}
