//! TOTP (RFC 6238: HMAC-SHA1, 30-second steps, 6 digits, by the `totp-rs`
//! crate), the `otpauth://` URI and QR code supabase-js shows, and the
//! encryption of TOTP secrets at rest (AES-256-GCM with
//! `auth.mfa_encryption_key`; there is no plaintext fallback). The URI and
//! QR code stay ours: totp-rs refuses `:` in issuer and account names and
//! draws PNGs, where supabase-js takes an SVG.
use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use rand::RngCore;
use totp_rs::{Algorithm, Builder, Secret, Totp};

/// The RFC 6238 parameters authenticator apps assume: HMAC-SHA1, 6 digits,
/// 30-second steps, and one step of clock drift either side.
fn totp(secret: &str) -> Option<Totp> {
    let secret = Secret::try_from_base32(secret).ok()?;
    let builder = Builder::new().with_algorithm(Algorithm::SHA1).with_digits(6).with_step_duration(30);
    builder.with_skew(1).with_secret(secret).build().ok()
}

/// A new 160-bit secret, base32 (RFC 4648, no padding) as authenticator apps take it.
pub fn new_secret() -> String {
    let mut bytes = [0u8; 20];
    rand::thread_rng().fill_bytes(&mut bytes);
    Secret::from(bytes).to_base32()
}

/// The code of one time step (what an authenticator app shows).
#[cfg(test)]
pub fn code_at(secret: &str, step: u64) -> Option<String> {
    Some(totp(secret)?.generate(step * 30).to_string())
}

/// The time step (current, or one either side) whose code `code` is,
/// compared in constant time. The step lets a factor refuse a code it
/// already accepted (the database keeps the last step used).
pub fn matching_step(secret: &str, code: &str, unix_now: u64) -> Option<u64> {
    totp(secret)?.check(code.trim(), unix_now)
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
        let secret = Secret::from(*b"12345678901234567890").to_base32();
        assert_eq!(code_at(&secret, 59 / 30).unwrap(), "287082");
        assert_eq!(code_at(&secret, 1111111109 / 30).unwrap(), "081804");
        assert_eq!(code_at(&secret, 2000000000 / 30).unwrap(), "279037");
        assert_eq!(matching_step(&secret, "081804", 1111111109 + 30), Some(1111111109 / 30));
        assert_eq!(matching_step(&secret, "081804", 1111111109 + 90), None);
        assert_eq!(matching_step(&secret, " 081804 ", 1111111109), Some(1111111109 / 30), "spaces around a code");
        assert_eq!(matching_step(&secret, "81804", 1111111109), None);
        assert_eq!(new_secret().len(), 32, "160 bits, base32 unpadded");
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
