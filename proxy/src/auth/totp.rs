//! TOTP (RFC 6238: HMAC-SHA1, 30-second steps, 6 digits) and the
//! encryption of TOTP secrets at rest (AES-256-GCM with
//! `auth.mfa_encryption_key`; there is no plaintext fallback).
use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha1::Sha1;

use crate::jwt::constant_time_eq;

const STEP_SECONDS: u64 = 30;
const DIGITS: u32 = 6;

/// A new 160-bit secret, base32 (RFC 4648, no padding) as authenticator apps take it.
pub fn new_secret() -> String {
    let mut bytes = [0u8; 20];
    rand::thread_rng().fill_bytes(&mut bytes);
    base32(&bytes)
}

fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &b in bytes {
        buffer = (buffer << 8) | b as u32;
        bits += 8;
        while bits >= 5 {
            out.push(ALPHABET[((buffer >> (bits - 5)) & 31) as usize] as char);
            bits -= 5;
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

fn base32_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let (mut buffer, mut bits) = (0u32, 0u32);
    for c in s.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'2'..=b'7' => c - b'2' + 26,
            _ => return None,
        } as u32;
        buffer = (buffer << 5) | v;
        bits += 5;
        if bits >= 8 {
            out.push((buffer >> (bits - 8)) as u8);
            bits -= 8;
        }
    }
    Some(out)
}

/// The code of one time step.
pub fn code_at(secret: &str, step: u64) -> Option<String> {
    let key = base32_decode(secret)?;
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(&key).ok()?;
    mac.update(&step.to_be_bytes());
    let digest = mac.finalize().into_bytes();
    let offset = (digest[19] & 0x0f) as usize;
    let value = u32::from_be_bytes([digest[offset] & 0x7f, digest[offset + 1], digest[offset + 2], digest[offset + 3]]);
    Some(format!("{:0width$}", value % 10u32.pow(DIGITS), width = DIGITS as usize))
}

/// Whether `code` is the code of the current step or of one step either
/// side (clock drift), compared in constant time.
/// The time step (current, or one either side) whose code `code` is; every
/// candidate is compared, in constant time. The step lets a factor refuse a
/// code it already accepted.
pub fn matching_step(secret: &str, code: &str, unix_now: u64) -> Option<u64> {
    let step = unix_now / STEP_SECONDS;
    let mut found = None;
    for s in [step.saturating_sub(1), step, step + 1] {
        if let Some(expected) = code_at(secret, s) {
            if constant_time_eq(expected.as_bytes(), code.trim().as_bytes()) {
                found = Some(s);
            }
        }
    }
    found
}

/// `otpauth://` URI for authenticator apps.
pub fn uri(secret: &str, issuer: &str, account: &str) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'@' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    format!("otpauth://totp/{}:{}?secret={secret}&issuer={}", enc(issuer), enc(account), enc(issuer))
}

/// The URI as an SVG QR code (supabase-js turns it into a data URI).
pub fn qr_svg(uri: &str) -> Option<String> {
    let code = qrcode::QrCode::new(uri.as_bytes()).ok()?;
    Some(code.render::<qrcode::render::svg::Color<'_>>().min_dimensions(200, 200).build())
}

/// A 256-bit key from 64 hex characters.
pub fn parse_key(hex: &str) -> Result<[u8; 32], String> {
    let hex = hex.trim();
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("must be 64 hex characters (256 bits)".into());
    }
    let mut key = [0u8; 32];
    for (i, k) in key.iter_mut().enumerate() {
        *k = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
    }
    Ok(key)
}

/// `base64(nonce ‖ ciphertext)`.
pub fn encrypt(key: &[u8; 32], plaintext: &str) -> String {
    let cipher = Aes256Gcm::new(key.into());
    let mut nonce = [0u8; 12];
    rand::thread_rng().fill_bytes(&mut nonce);
    let sealed = cipher.encrypt(Nonce::from_slice(&nonce), plaintext.as_bytes()).expect("AES-GCM encryption");
    let mut out = nonce.to_vec();
    out.extend(sealed);
    base64::engine::general_purpose::STANDARD.encode(out)
}

pub fn decrypt(key: &[u8; 32], stored: &str) -> Option<String> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(stored).ok()?;
    if bytes.len() < 12 {
        return None;
    }
    let (nonce, sealed) = bytes.split_at(12);
    let plain = Aes256Gcm::new(key.into()).decrypt(Nonce::from_slice(nonce), sealed).ok()?;
    String::from_utf8(plain).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6238_sha1_vectors() {
        // RFC 6238 appendix B, the 20-byte ASCII key "12345678901234567890", 6 digits.
        let secret = base32(b"12345678901234567890");
        assert_eq!(code_at(&secret, 59 / 30).unwrap(), "287082");
        assert_eq!(code_at(&secret, 1111111109 / 30).unwrap(), "081804");
        assert_eq!(code_at(&secret, 2000000000 / 30).unwrap(), "279037");
        assert_eq!(matching_step(&secret, "081804", 1111111109 + 30), Some(1111111109 / 30));
        assert_eq!(matching_step(&secret, "081804", 1111111109 + 90), None);
        assert_eq!(base32_decode(&secret).unwrap(), b"12345678901234567890");
    }

    #[test]
    fn secrets_are_sealed_and_tamper_evident() {
        let key = parse_key(&"ab".repeat(32)).unwrap();
        let sealed = encrypt(&key, "JBSWY3DPEHPK3PXP");
        assert_ne!(sealed, encrypt(&key, "JBSWY3DPEHPK3PXP"), "fresh nonce each time");
        assert_eq!(decrypt(&key, &sealed).as_deref(), Some("JBSWY3DPEHPK3PXP"));
        let other = parse_key(&"cd".repeat(32)).unwrap();
        assert_eq!(decrypt(&other, &sealed), None);
        assert!(parse_key("short").is_err());
        assert!(qr_svg(&uri("JBSWY3DPEHPK3PXP", "Fluxbase", "ada@example.com")).unwrap().starts_with("<?xml"));
    }
}
