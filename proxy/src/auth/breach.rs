//! Breached-password checks: a password whose SHA-1 is in a list of leaked
//! passwords is refused. The list is either a file in Have I Been Pwned's
//! "Pwned Passwords" format (`SHA1HEX[:COUNT]` lines sorted by hash,
//! searched by bisection on disk, so the full 40 GB list works), or a
//! k-anonymity range API (`GET <url><first 5 hex>` answers
//! `SUFFIX:COUNT` lines; only the prefix leaves the machine).
use sha1::{Digest, Sha1};
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub struct BreachCheck {
    file: Option<PathBuf>,
    range_url: Option<String>,
    http: reqwest::Client,
}

fn sha1_upper(password: &str) -> String {
    Sha1::digest(password.as_bytes()).iter().map(|b| format!("{b:02X}")).collect()
}

/// The hash of a line (`HASH` or `HASH:COUNT`), upper-cased.
fn line_hash(line: &str) -> String {
    line.trim().split(':').next().unwrap_or("").to_ascii_uppercase()
}

/// Bisection over a sorted file of hash lines.
pub fn file_contains(path: &Path, hash: &str) -> std::io::Result<bool> {
    let mut reader = BufReader::new(std::fs::File::open(path)?);
    let (mut lo, mut hi) = (0u64, reader.get_ref().metadata()?.len());
    let mut line = String::new();
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        // The first line that starts at or after `mid`.
        let start = if mid == 0 {
            reader.seek(SeekFrom::Start(0))?;
            0
        } else {
            reader.seek(SeekFrom::Start(mid - 1))?;
            line.clear();
            mid - 1 + reader.read_line(&mut line)? as u64
        };
        line.clear();
        let read = reader.read_line(&mut line)? as u64;
        if read == 0 || start >= hi {
            hi = mid;
            continue;
        }
        match line_hash(&line).as_str().cmp(hash) {
            std::cmp::Ordering::Equal => return Ok(true),
            std::cmp::Ordering::Less => lo = start + read,
            std::cmp::Ordering::Greater => hi = mid,
        }
    }
    Ok(false)
}

/// Whether a range answer lists `suffix` (with a count above zero: padded
/// answers carry `:0` lines).
pub fn range_contains(body: &str, suffix: &str) -> bool {
    body.lines().any(|l| {
        let (s, count) = l.trim().split_once(':').unwrap_or((l.trim(), "1"));
        s.eq_ignore_ascii_case(suffix) && count.trim() != "0"
    })
}

impl BreachCheck {
    /// `None` when neither `auth.password_breached_file` nor `auth.password_breached_range_url` is set.
    pub fn new(config: &crate::config::Auth) -> Result<Option<BreachCheck>, String> {
        if config.password_breached_file.is_none() && config.password_breached_range_url.is_none() {
            return Ok(None);
        }
        if let Some(path) = &config.password_breached_file {
            std::fs::File::open(path).map_err(|e| format!("auth.password_breached_file {}: {e}", path.display()))?;
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Some(BreachCheck {
            file: config.password_breached_file.clone(),
            range_url: config.password_breached_range_url.clone(),
            http,
        }))
    }

    /// Whether `password` is a known leaked one. A failing check is an
    /// error, not a pass: the caller decides.
    pub async fn is_breached(&self, password: &str) -> Result<bool, String> {
        let hash = sha1_upper(password);
        if let Some(path) = self.file.clone() {
            let h = hash.clone();
            let found = tokio::task::spawn_blocking(move || file_contains(&path, &h))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("breached-password file: {e}"))?;
            if found {
                return Ok(true);
            }
        }
        if let Some(url) = &self.range_url {
            let (prefix, suffix) = hash.split_at(5);
            let response = self
                .http
                .get(format!("{url}{prefix}"))
                .header("add-padding", "true")
                .send()
                .await
                .map_err(|e| e.without_url().to_string())?;
            if !response.status().is_success() {
                return Err(format!("range API answered {}", response.status()));
            }
            let body = response.text().await.map_err(|e| e.to_string())?;
            return Ok(range_contains(&body, suffix));
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bisection_finds_every_line_and_nothing_else() {
        let dir = std::env::temp_dir().join(format!("fluxbase-breach-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("pwned.txt");
        let mut hashes: Vec<String> = (0..500).map(|i| sha1_upper(&format!("password{i}"))).collect();
        hashes.sort();
        let text: String = hashes.iter().enumerate().map(|(i, h)| format!("{h}:{}\r\n", i * 37 + 1)).collect();
        std::fs::write(&path, text).unwrap();
        for h in &hashes {
            assert!(file_contains(&path, h).unwrap(), "{h}");
        }
        for i in 500..700 {
            assert!(!file_contains(&path, &sha1_upper(&format!("password{i}"))).unwrap());
        }
        assert!(!file_contains(&path, "0000000000000000000000000000000000000000").unwrap());
        assert!(!file_contains(&path, "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF").unwrap());
        std::fs::write(&path, "").unwrap();
        assert!(!file_contains(&path, &hashes[0]).unwrap());
        std::fs::remove_dir_all(dir).unwrap();
        // "password" is 5BAA61E4C9B93F3F0682250B6CF8331B7EE68FD8.
        assert_eq!(sha1_upper("password"), "5BAA61E4C9B93F3F0682250B6CF8331B7EE68FD8");
        assert!(range_contains(
            "1E4C9B93F3F0682250B6CF8331B7EE68FD8:9545824\r\n00000:0",
            "1E4C9B93F3F0682250B6CF8331B7EE68FD8"
        ));
        assert!(!range_contains("1E4C9B93F3F0682250B6CF8331B7EE68FD8:0", "1E4C9B93F3F0682250B6CF8331B7EE68FD8"));
    }
}
