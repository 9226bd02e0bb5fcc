//! The pure rules of storage requests: which bucket ids and object names
//! are accepted, `"50MB"`-style sizes, MIME patterns, `Range` headers.
use super::error::StorageError;

/// Longest object name, bytes (storage-api's limit).
pub const NAME_MAX_BYTES: usize = 1024;
/// Longest path segment, bytes: a segment is a directory or file name on
/// the local backend, and file systems stop at 255.
pub const SEGMENT_MAX_BYTES: usize = 255;

/// A bucket id: 1–63 characters of storage-api's set (letters, digits and
/// `_ ! - . * ' ( ) & $ @ = ; : + , ?` and space), never `.` or `..`.
pub fn bucket_id(id: &str) -> Result<(), StorageError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "_!-.*'() &$@=;:+,?".contains(c);
    if id.is_empty() || id.len() >= 64 || id == "." || id == ".." || !id.chars().all(allowed) {
        return Err(StorageError::InvalidBucketName(id.to_string()));
    }
    Ok(())
}

/// An object name: at most 1024 bytes, no control characters, no empty,
/// `.` or `..` segment, no segment over 255 bytes, no backslash.
pub fn object_name(name: &str) -> Result<(), StorageError> {
    let bad = name.is_empty()
        || name.len() > NAME_MAX_BYTES
        || name.chars().any(|c| c.is_control() || c == '\\')
        || name.split('/').any(|s| s.is_empty() || s == "." || s == ".." || s.len() > SEGMENT_MAX_BYTES);
    if bad {
        return Err(StorageError::InvalidKey(name.to_string()));
    }
    Ok(())
}

/// A size as storage-js sends `file_size_limit`: a number of bytes, or a
/// text like `"50MB"`, `"1.5GB"`, `"300KB"`, `"12B"` (binary units: 1 KB =
/// 1024 B), or null for none.
pub fn file_size(value: &serde_json::Value) -> Result<Option<u64>, StorageError> {
    let invalid = || StorageError::InvalidFileSizeLimit;
    match value {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::Number(n) => n.as_u64().map(Some).ok_or_else(invalid),
        serde_json::Value::String(text) => {
            let t = text.trim().to_ascii_uppercase();
            let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
            let (number, unit) = t.split_at(split);
            let factor: u64 = match unit.trim() {
                "" | "B" => 1,
                "KB" => 1 << 10,
                "MB" => 1 << 20,
                "GB" => 1 << 30,
                "TB" => 1 << 40,
                _ => return Err(invalid()),
            };
            let n: f64 = number.parse().map_err(|_| invalid())?;
            if !n.is_finite() || n < 0.0 {
                return Err(invalid());
            }
            Ok(Some((n * factor as f64).round() as u64))
        }
        _ => Err(invalid()),
    }
}

/// The MIME type without parameters, lower case.
pub fn essence(content_type: &str) -> String {
    content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

/// Whether `content_type` is allowed by a bucket's `allowed_mime_types`
/// (exact types or `type/*` wildcards, compared without parameters); no
/// list or an empty one allows everything.
pub fn mime_allowed(allowed: Option<&[String]>, content_type: &str) -> bool {
    let Some(allowed) = allowed.filter(|a| !a.is_empty()) else { return true };
    let ty = essence(content_type);
    allowed.iter().any(|pattern| {
        let pattern = essence(pattern);
        pattern == "*/*"
            || pattern == ty
            || pattern.strip_suffix("/*").is_some_and(|major| ty.split('/').next() == Some(major))
    })
}

/// A `Range: bytes=…` header against an object of `size` bytes: the first
/// and last byte, inclusive. `Ok(None)`: no range (or one we ignore, as
/// several ranges); `Err(())`: unsatisfiable (416).
pub fn range(header: &str, size: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(spec) = header.trim().strip_prefix("bytes=") else { return Ok(None) };
    if spec.contains(',') {
        return Ok(None);
    }
    let (start, end) = spec.split_once('-').ok_or(())?;
    let (start, end) = (start.trim(), end.trim());
    let parsed = match (start.is_empty(), end.is_empty()) {
        (true, true) => return Err(()),
        (true, false) => {
            let n: u64 = end.parse().map_err(|_| ())?;
            if n == 0 || size == 0 {
                return Err(());
            }
            (size.saturating_sub(n), size - 1)
        }
        (false, _) => {
            let first: u64 = start.parse().map_err(|_| ())?;
            let last: u64 = if end.is_empty() { size.saturating_sub(1) } else { end.parse().map_err(|_| ())? };
            if first >= size || last < first {
                return Err(());
            }
            (first, last.min(size - 1))
        }
    };
    Ok(Some(parsed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_that_could_escape_or_confuse_are_refused() {
        for good in ["a.png", "folder/sub/file name (1).txt", "ünïcode/ok", "a..b/c"] {
            assert!(object_name(good).is_ok(), "{good}");
        }
        let long = "x".repeat(256);
        for bad in ["", "../etc/passwd", "a/../b", "a//b", "/abs", "a/", "./a", "tab\there", "nul\0", "a\\b", &long] {
            assert!(object_name(bad).is_err(), "{bad:?}");
        }
        assert!(object_name(&"a/".repeat(600)).is_err());
        assert!(bucket_id("avatars").is_ok());
        for bad in ["", "..", "a/b", &"b".repeat(64), "bad\u{7}"] {
            assert!(bucket_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sizes_take_units() {
        assert_eq!(file_size(&json!("50MB")).unwrap(), Some(50 << 20));
        assert_eq!(file_size(&json!("1.5 gb")).unwrap(), Some(3 << 29));
        assert_eq!(file_size(&json!("300KB")).unwrap(), Some(300 << 10));
        assert_eq!(file_size(&json!("12")).unwrap(), Some(12));
        assert_eq!(file_size(&json!(1024)).unwrap(), Some(1024));
        assert_eq!(file_size(&json!(null)).unwrap(), None);
        for bad in [json!("ten MB"), json!("5XB"), json!(-1), json!(true), json!("")] {
            assert!(file_size(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn mime_patterns_have_wildcards() {
        let allowed = vec!["image/*".to_string(), "application/pdf".to_string()];
        assert!(mime_allowed(Some(&allowed), "image/png"));
        assert!(mime_allowed(Some(&allowed), "Application/PDF; charset=binary"));
        assert!(!mime_allowed(Some(&allowed), "text/html"));
        assert!(!mime_allowed(Some(&allowed), "imagex/png"));
        assert!(mime_allowed(None, "text/html"));
        assert!(mime_allowed(Some(&[]), "text/html"));
    }

    #[test]
    fn ranges() {
        assert_eq!(range("bytes=0-9", 100), Ok(Some((0, 9))));
        assert_eq!(range("bytes=90-", 100), Ok(Some((90, 99))));
        assert_eq!(range("bytes=-10", 100), Ok(Some((90, 99))));
        assert_eq!(range("bytes=50-500", 100), Ok(Some((50, 99))));
        assert_eq!(range("bytes=100-", 100), Err(()));
        assert_eq!(range("bytes=9-3", 100), Err(()));
        assert_eq!(range("bytes=0-1,4-5", 100), Ok(None));
        assert_eq!(range("items=0-1", 100), Ok(None));
    }
}
