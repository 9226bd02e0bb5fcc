//! Web3 sign-in (`POST /token?grant_type=web3`), as GoTrue's
//! `internal/api/web3.go`: a wallet signs a Sign-In with Ethereum (EIP-4361)
//! or Sign In With Solana message for this app; the signature proves the
//! address (secp256k1 key recovery over the `personal_sign` hash, or
//! ed25519), the message's URI, domain and times are checked, and the
//! address is the user (identity provider `web3`, id
//! `web3:<chain>:<address>`). Each signed message signs in once
//! (sql/auth/web3.sql).
use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};

use super::oauth_server::oauth_error;
use super::{new_refresh_token, sha256_hex, AuthCall};
use crate::error::ApiError;
use crate::http::Response;

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Chain {
    Ethereum,
    Solana,
}

impl Chain {
    fn name(self) -> &'static str {
        match self {
            Chain::Ethereum => "ethereum",
            Chain::Solana => "solana",
        }
    }

    /// As GoTrue's messages write the chain.
    fn title(self) -> &'static str {
        match self {
            Chain::Ethereum => "Ethereum",
            Chain::Solana => "Solana",
        }
    }

    /// The prefix of GoTrue's parser errors (`siwe:`, `siws:`).
    fn parser(self) -> &'static str {
        match self {
            Chain::Ethereum => "siwe",
            Chain::Solana => "siws",
        }
    }
}

/// A sign-in message, parsed as GoTrue's `siwe.ParseMessage` and
/// `siws.ParseMessage` read it (the two formats share their lines).
#[derive(Debug)]
pub(crate) struct SignInMessage {
    pub domain: String,
    /// Ethereum addresses in lower case (one user per wallet, whatever the
    /// EIP-55 checksum casing); Solana's base58 as written.
    pub address: String,
    pub statement: Option<String>,
    pub uri: url::Url,
    pub chain_id: Option<String>,
    pub issued_at: DateTime<Utc>,
    pub expiration_time: Option<DateTime<Utc>>,
    pub not_before: Option<DateTime<Utc>>,
}

/// GoTrue's `domainPattern`: `localhost` or a DNS name with a TLD of two or
/// more letters, with an optional port.
fn valid_domain(domain: &str) -> bool {
    let (host, port) = match domain.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (domain, None),
    };
    if port.is_some_and(|p| p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit())) {
        return false;
    }
    if host == "localhost" {
        return true;
    }
    let labels: Vec<&str> = host.split('.').collect();
    let Some((tld, names)) = labels.split_last() else { return false };
    let label_ok = |l: &&str| {
        let b = l.as_bytes();
        !b.is_empty()
            && b.len() <= 63
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
    };
    !names.is_empty() && names.iter().all(label_ok) && tld.len() >= 2 && tld.bytes().all(|c| c.is_ascii_alphabetic())
}

fn valid_address(chain: Chain, address: &str) -> bool {
    match chain {
        Chain::Ethereum => {
            address.len() == 42 && address.starts_with("0x") && address[2..].bytes().all(|b| b.is_ascii_hexdigit())
        }
        Chain::Solana => (32..=44).contains(&address.len()) && address.bytes().all(|b| b.is_ascii_alphanumeric()),
    }
}

/// EIP-155 chain ids are positive integers; Solana's are CAIP-2 names of
/// its clusters.
fn valid_chain_id(chain: Chain, id: &str) -> bool {
    match chain {
        Chain::Ethereum => id.parse::<i64>().is_ok_and(|n| n > 0),
        Chain::Solana => ["solana:mainnet", "solana:devnet", "solana:testnet", "solana:localnet"].contains(&id),
    }
}

fn timestamp(value: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(value).ok().map(|t| t.with_timezone(&Utc))
}

/// Parses `raw` as GoTrue does; a refusal is GoTrue's error text.
pub(crate) fn parse_message(raw: &str, chain: Chain) -> Result<SignInMessage, String> {
    let p = chain.parser();
    let err = |what: &str| format!("{p}: {what}");
    let lines: Vec<&str> = raw.split('\n').collect();
    if lines.len() < 6 {
        return Err(err("message needs at least 6 lines"));
    }
    let suffix = format!(" wants you to sign in with your {} account:", chain.title());
    let Some(domain) = lines[0].strip_suffix(&suffix) else {
        return Err(err(&format!("message first line does not end in \"{suffix}\"")));
    };
    let domain = domain.trim();
    if !valid_domain(domain) {
        return Err(err("domain in first line of message is not valid"));
    }
    let address = lines[1].trim();
    if !valid_address(chain, address) {
        return Err(err(match chain {
            Chain::Ethereum => "wallet address is not a valid Ethereum address",
            Chain::Solana => "wallet address is not in base58 format",
        }));
    }
    let address = if chain == Chain::Ethereum { address.to_ascii_lowercase() } else { address.to_string() };
    if !lines[2].is_empty() {
        return Err(err("third line must be empty"));
    }
    let mut start = 3;
    let mut statement = None;
    if !lines[3].is_empty() && lines[4].is_empty() {
        statement = Some(lines[3].to_string());
        start = 5;
    }
    let (mut uri, mut version, mut chain_id) = (None, None, None);
    let (mut issued_at, mut expiration_time, mut not_before) = (None, None, None);
    let mut resources = 0;
    let mut in_resources = false;
    for (i, line) in lines.iter().enumerate().skip(start) {
        let line = line.trim();
        if in_resources {
            if let Some(resource) = line.strip_prefix("- ") {
                if url::Url::parse(resource.trim()).is_err() {
                    return Err(err(&format!("Resource at position {resources} has invalid URI")));
                }
                resources += 1;
                continue;
            }
            in_resources = false;
        }
        if line == "Resources:" {
            in_resources = true;
            continue;
        }
        if line.is_empty() {
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            return Err(err(&format!("encountered unparsable line at index {i}")));
        };
        let value = value.trim();
        match key {
            "URI" => uri = Some(url::Url::parse(value).map_err(|_| err("URI is not valid"))?),
            "Version" => version = Some(value.to_string()),
            "Chain ID" => {
                let required = chain == Chain::Ethereum;
                if (required || !value.is_empty()) && !valid_chain_id(chain, value) {
                    return Err(err("Chain ID is not valid"));
                }
                chain_id = Some(value.to_string());
            }
            "Issued At" => {
                issued_at = Some(timestamp(value).ok_or_else(|| err("Issued At is not a valid ISO8601 timestamp"))?)
            }
            "Expiration Time" => {
                expiration_time =
                    Some(timestamp(value).ok_or_else(|| err("Expiration Time is not a valid ISO8601 timestamp"))?)
            }
            "Not Before" => {
                not_before = Some(timestamp(value).ok_or_else(|| err("Not Before is not a valid ISO8601 timestamp"))?)
            }
            // Nonce and Request ID are read by GoTrue but not checked.
            _ => {}
        }
    }
    let version = version.unwrap_or_default();
    if version != "1" {
        return Err(err(&format!("Version value is not supported, expected 1 got {version:?}")));
    }
    let issued_at = issued_at.ok_or_else(|| err("Issued At is not specified"))?;
    let uri = uri.ok_or_else(|| err("URI is not specified"))?;
    if expiration_time.is_some_and(|e| issued_at > e) {
        return Err(err("Issued At is after Expiration Time"));
    }
    if let (Some(nb), Some(e)) = (not_before, expiration_time) {
        if nb > e {
            return Err(err("Not Before is after Expiration Time"));
        }
    }
    Ok(SignInMessage {
        domain: domain.to_string(),
        address,
        statement,
        uri,
        chain_id,
        issued_at,
        expiration_time,
        not_before,
    })
}

fn keccak256(data: &[u8]) -> [u8; 32] {
    use sha3::{Digest, Keccak256};
    Keccak256::digest(data).into()
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// `personal_sign` (EIP-191) of `raw`: the address that signed it, recovered
/// from the 65-byte `r ‖ s ‖ v` signature, must be the message's.
pub(crate) fn verify_ethereum(raw: &str, address: &str, signature_hex: &str) -> bool {
    use k256::ecdsa::{RecoveryId, Signature, VerifyingKey};
    let Some(sig) = hex_decode(signature_hex.strip_prefix("0x").unwrap_or(signature_hex)) else { return false };
    if sig.len() != 65 {
        return false;
    }
    let v = if sig[64] >= 27 { sig[64] - 27 } else { sig[64] };
    let (Some(mut recovery), Ok(mut signature)) = (RecoveryId::from_byte(v), Signature::from_slice(&sig[..64])) else {
        return false;
    };
    // A high-s signature is the same signature of the other parity.
    if let Some(low) = signature.normalize_s() {
        signature = low;
        recovery = RecoveryId::new(!recovery.is_y_odd(), recovery.is_x_reduced());
    }
    let mut prefixed = format!("\x19Ethereum Signed Message:\n{}", raw.len()).into_bytes();
    prefixed.extend_from_slice(raw.as_bytes());
    let Ok(key) = VerifyingKey::recover_from_prehash(&keccak256(&prefixed), &signature, recovery) else {
        return false;
    };
    let point = key.to_encoded_point(false);
    let hash = keccak256(&point.as_bytes()[1..]);
    let recovered: String = hash[12..].iter().map(|b| format!("{b:02x}")).collect();
    address.strip_prefix("0x").is_some_and(|a| a.eq_ignore_ascii_case(&recovered))
}

/// ed25519 over the message's bytes by the key that is the (base58) address.
pub(crate) fn verify_solana(raw: &str, address: &str, signature: &[u8]) -> bool {
    let Ok(key) = bs58::decode(address).into_vec() else { return false };
    let (Ok(key), Ok(signature)) = (<[u8; 32]>::try_from(key), <[u8; 64]>::try_from(signature)) else {
        return false;
    };
    let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(&key) else { return false };
    key.verify_strict(raw.as_bytes(), &ed25519_dalek::Signature::from_bytes(&signature)).is_ok()
}

/// GoTrue's checks after the signature, in its order: the URI is this
/// app's (HTTPS unless localhost, an allowed redirect URL), the domain is
/// the URI's, and `now` is within the message's times and at most
/// `max_validity` from its `Issued At`. A refusal is GoTrue's
/// `invalid_grant` description.
pub(crate) fn check_message(
    msg: &SignInMessage,
    chain: Chain,
    now: DateTime<Utc>,
    max_validity: Duration,
    allowed: impl Fn(&str) -> bool,
) -> Result<(), String> {
    let t = chain.title();
    let localhost = msg.uri.host_str() == Some("localhost");
    if msg.uri.scheme() != "https" && !localhost {
        return Err(format!("Signed {t} message is using URI which does not use HTTPS"));
    }
    if !allowed(msg.uri.as_str()) {
        return Err(format!(
            "Signed {t} message is using URI which is not allowed on this server, message was signed for another app"
        ));
    }
    let host = match (msg.uri.host_str(), msg.uri.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (h, _) => h.unwrap_or("").to_string(),
    };
    if !localhost && (host != msg.domain || !allowed(&format!("https://{}/", msg.domain))) {
        return Err(format!(
            "Signed {t} message is using a Domain that does not match the one in URI which is not allowed on this server"
        ));
    }
    if msg.not_before.is_some_and(|nb| now < nb) {
        return Err(format!("Signed {t} message becomes valid in the future"));
    }
    if msg.expiration_time.is_some_and(|e| now > e) {
        return Err(format!("Signed {t} message is expired"));
    }
    if now > msg.issued_at + max_validity {
        return Err(format!("{t} message was issued too long ago"));
    }
    if now < msg.issued_at - max_validity {
        return Err(format!("{t} message was issued too far in the future"));
    }
    Ok(())
}

fn bad(msg: &str) -> ApiError {
    ApiError::auth(400, "validation_failed", msg)
}

impl AuthCall<'_> {
    /// `POST /token?grant_type=web3` `{chain, message, signature}`: GoTrue's
    /// `Web3Grant`, answer for answer.
    pub(super) async fn web3_grant(&self, body: &Value) -> Result<Response, ApiError> {
        let config = &self.state.config.auth;
        if !config.web3_ethereum_enabled && !config.web3_solana_enabled {
            return Err(ApiError::auth(422, "web3_provider_disabled", "Web3 provider is disabled"));
        }
        let (chain, max_validity) = match body.get("chain").and_then(Value::as_str).unwrap_or("") {
            "ethereum" if config.web3_ethereum_enabled => {
                (Chain::Ethereum, config.web3_ethereum_maximum_validity_seconds)
            }
            "solana" if config.web3_solana_enabled => (Chain::Solana, config.web3_solana_maximum_validity_seconds),
            "ethereum" => {
                return Err(ApiError::auth(422, "web3_provider_disabled", "Ethereum Web3 provider is disabled"))
            }
            "solana" => return Err(ApiError::auth(422, "web3_provider_disabled", "Solana Web3 provider is disabled")),
            _ => return Err(ApiError::auth(400, "web3_unsupported_chain", "Unsupported chain")),
        };
        self.rate_limit(&[(format!("signin:ip:{}", self.ctx.ip), config.rate_limit_signins_per_ip)]).await?;
        let message = body.get("message").and_then(Value::as_str).unwrap_or("");
        let signature = body.get("signature").and_then(Value::as_str).unwrap_or("");
        if message.len() < 64 {
            return Err(bad("message is too short"));
        }
        if message.len() > 20 * 1024 {
            return Err(bad("message must not exceed 20KB"));
        }
        let solana_signature = match chain {
            Chain::Ethereum => {
                if signature.strip_prefix("0x").unwrap_or(signature).len() != 130 {
                    return Err(bad(
                        "signature must be 65 bytes long, encoded as a 130 character-long hexadecimal string",
                    ));
                }
                Vec::new()
            }
            Chain::Solana => {
                if signature.len() != 86 && signature.len() != 88 {
                    return Err(bad("signature must be 64 bytes encoded as base64 with or without padding"));
                }
                // Either alphabet, padded or not (GoTrue's reading).
                let url = signature.trim_end_matches('=').replace('+', "-").replace('/', "_");
                let engine = base64::engine::GeneralPurpose::new(
                    &base64::alphabet::URL_SAFE,
                    base64::engine::general_purpose::NO_PAD.with_decode_allow_trailing_bits(true),
                );
                engine.decode(url).map_err(|_| bad("signature does not contain valid base64 characters"))?
            }
        };
        let parsed = parse_message(message, chain).map_err(|e| bad(&e))?;
        let verified = match chain {
            Chain::Ethereum => verify_ethereum(message, &parsed.address, signature),
            Chain::Solana => verify_solana(message, &parsed.address, &solana_signature),
        };
        if !verified {
            return Ok(oauth_error("invalid_grant", "Signature does not match address in message"));
        }
        let now = Utc::now();
        let max_validity = Duration::seconds(max_validity.into());
        if let Err(description) = check_message(&parsed, chain, now, max_validity, |u| self.redirect_allowed(u)) {
            return Ok(oauth_error("invalid_grant", &description));
        }
        // The message is remembered for as long as it could still be accepted.
        let last_valid =
            parsed.expiration_time.map_or(parsed.issued_at + max_validity, |e| e.min(parsed.issued_at + max_validity));
        let keep_seconds = ((last_valid - now).num_seconds() + 1).max(1) as i32;

        let provider_id = format!("web3:{}:{}", chain.name(), parsed.address);
        let network = parsed.chain_id.clone().unwrap_or_default();
        // As GoTrue stores it (structs.Map of its provider.Claims).
        let statement = match (&parsed.statement, chain) {
            (Some(s), _) => json!(s),
            (None, Chain::Ethereum) => Value::Null,
            (None, Chain::Solana) => json!(""),
        };
        let identity = json!({
            "sub": provider_id,
            "custom_claims": {
                "address": parsed.address,
                "chain": chain.name(),
                "network": network,
                "domain": parsed.domain,
                "statement": statement,
            },
            "email_verified": false,
            "phone_verified": false,
        });
        let traits = json!({
            "provider": "web3",
            "chain": chain.name(),
            "network": network,
            "address": parsed.address,
            "domain": parsed.domain,
            "uri": parsed.uri.as_str(),
        });
        let allow_signup = !config.disable_signup;
        let (refresh, refresh_hash) = new_refresh_token();
        let issued = self
            .query_json(
                "SELECT fluxbase.auth_web3_signin($1, $2, $3, $4, $5, $6, $7)",
                &[&provider_id, &identity, &sha256_hex(message), &keep_seconds, &allow_signup, &refresh_hash, &traits],
            )
            .await?;
        if let Some(error) = issued.get("error").and_then(Value::as_str) {
            let description = issued.get("error_description").and_then(Value::as_str).unwrap_or(error);
            return Ok(oauth_error(error, description));
        }
        self.session(&issued, &refresh)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        timestamp(s).unwrap()
    }

    const ETH: &str = "app.example.com wants you to sign in with your Ethereum account:\n\
        0x2c7536E3605D9C16a7a3D7b1898e529396a65c23\n\nSign in to the app\n\n\
        URI: https://app.example.com/login\nVersion: 1\nChain ID: 1\nNonce: 32891756\n\
        Issued At: 2026-12-01T10:00:00.000Z\nExpiration Time: 2026-12-01T10:05:00Z";

    #[test]
    fn eip_4361_messages_are_parsed_as_gotrue_parses_them() {
        let m = parse_message(ETH, Chain::Ethereum).unwrap();
        assert_eq!(m.domain, "app.example.com");
        assert_eq!(m.address, "0x2c7536e3605d9c16a7a3d7b1898e529396a65c23", "one user per wallet, any casing");
        assert_eq!(m.statement.as_deref(), Some("Sign in to the app"));
        assert_eq!(m.uri.as_str(), "https://app.example.com/login");
        assert_eq!(m.chain_id.as_deref(), Some("1"));
        assert_eq!(m.issued_at, at("2026-12-01T10:00:00Z"));
        assert_eq!(m.expiration_time, Some(at("2026-12-01T10:05:00Z")));

        let refused = |raw: &str| parse_message(raw, Chain::Ethereum).unwrap_err();
        assert_eq!(refused("a\nb"), "siwe: message needs at least 6 lines");
        assert!(refused(&ETH.replace("Ethereum account", "Bitcoin account")).starts_with("siwe: message first line"));
        assert_eq!(
            refused(&ETH.replace("app.example.com wants", "*** wants")),
            "siwe: domain in first line of message is not valid"
        );
        assert_eq!(refused(&ETH.replace("0x2c75", "0xzz75")), "siwe: wallet address is not a valid Ethereum address");
        assert_eq!(refused(&ETH.replace("Chain ID: 1", "Chain ID: 0")), "siwe: Chain ID is not valid");
        assert_eq!(
            refused(&ETH.replace("Version: 1", "Version: 2")),
            "siwe: Version value is not supported, expected 1 got \"2\""
        );
        assert_eq!(refused(&ETH.replace("URI: https://app.example.com/login\n", "")), "siwe: URI is not specified");
        assert_eq!(
            refused(&ETH.replace("Issued At: 2026-12-01T10:00:00.000Z", "Issued At: yesterday")),
            "siwe: Issued At is not a valid ISO8601 timestamp"
        );
        assert_eq!(refused(&ETH.replace("10:05:00Z", "09:05:00Z")), "siwe: Issued At is after Expiration Time");
        assert_eq!(
            refused(&ETH.replace("Nonce: 32891756", "Nonce 32891756")),
            "siwe: encountered unparsable line at index 8"
        );
    }

    #[test]
    fn solana_messages_and_their_chain_ids() {
        let sol = "localhost:5173 wants you to sign in with your Solana account:\n\
            4UPcfLX6rHuunkDiCnrVdN2BxnaKUAT1m2KCrzaAAct6\n\nVersion: 1\nURI: http://localhost:5173/\n\
            Issued At: 2026-12-01T10:00:00Z\nChain ID: solana:devnet";
        let m = parse_message(sol, Chain::Solana).unwrap();
        assert_eq!(m.address, "4UPcfLX6rHuunkDiCnrVdN2BxnaKUAT1m2KCrzaAAct6", "base58 keeps its case");
        assert_eq!(m.statement, None);
        assert_eq!(m.chain_id.as_deref(), Some("solana:devnet"));
        assert_eq!(
            parse_message(&sol.replace("solana:devnet", "mainnet"), Chain::Solana).unwrap_err(),
            "siws: Chain ID is not valid"
        );
        assert_eq!(
            parse_message(&sol.replace("4UPc", "0x+c"), Chain::Solana).unwrap_err(),
            "siws: wallet address is not in base58 format"
        );
    }

    #[test]
    fn uri_domain_and_time_windows_are_checked_in_gotrues_order() {
        let m = parse_message(ETH, Chain::Ethereum).unwrap();
        let ten = Duration::minutes(10);
        let app = |u: &str| u.starts_with("https://app.example.com/");
        let ok = at("2026-12-01T10:01:00Z");
        assert_eq!(check_message(&m, Chain::Ethereum, ok, ten, app), Ok(()));
        assert_eq!(
            check_message(&m, Chain::Ethereum, ok, ten, |_| false).unwrap_err(),
            "Signed Ethereum message is using URI which is not allowed on this server, message was signed for another app"
        );
        assert_eq!(
            check_message(&m, Chain::Ethereum, at("2026-12-01T10:05:01Z"), ten, app).unwrap_err(),
            "Signed Ethereum message is expired"
        );
        assert_eq!(
            check_message(&m, Chain::Ethereum, at("2026-12-01T09:49:59Z"), ten, app).unwrap_err(),
            "Ethereum message was issued too far in the future"
        );
        let no_expiry =
            parse_message(&ETH.replace("\nExpiration Time: 2026-12-01T10:05:00Z", ""), Chain::Ethereum).unwrap();
        assert_eq!(
            check_message(&no_expiry, Chain::Ethereum, at("2026-12-01T10:10:01Z"), ten, app).unwrap_err(),
            "Ethereum message was issued too long ago"
        );
        let http = parse_message(&ETH.replace("URI: https://", "URI: http://"), Chain::Ethereum).unwrap();
        assert_eq!(
            check_message(&http, Chain::Ethereum, ok, ten, |_| true).unwrap_err(),
            "Signed Ethereum message is using URI which does not use HTTPS"
        );
        let other =
            parse_message(&ETH.replace("app.example.com wants", "evil.example wants"), Chain::Ethereum).unwrap();
        assert_eq!(
            check_message(&other, Chain::Ethereum, ok, ten, app).unwrap_err(),
            "Signed Ethereum message is using a Domain that does not match the one in URI which is not allowed on this server"
        );
        let later = parse_message(&format!("{ETH}\nNot Before: 2026-12-01T10:02:00Z"), Chain::Ethereum).unwrap();
        assert_eq!(
            check_message(&later, Chain::Ethereum, ok, ten, app).unwrap_err(),
            "Signed Ethereum message becomes valid in the future"
        );
    }

    #[test]
    fn ethereum_signatures_recover_the_signing_address() {
        // Key 0x…01 (address 0x7e5f…bdf): a known secp256k1 test key.
        use k256::ecdsa::SigningKey;
        let key = SigningKey::from_slice(&[[0u8; 31].as_slice(), &[1u8]].concat()).unwrap();
        let point = key.verifying_key().to_encoded_point(false);
        let address: String = keccak256(&point.as_bytes()[1..])[12..].iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(address, "7e5f4552091a69125d5dfcb7b8c2659029395bdf");
        let message = ETH.replace("0x2c7536E3605D9C16a7a3D7b1898e529396a65c23", &format!("0x{address}"));
        let mut prefixed = format!("\x19Ethereum Signed Message:\n{}", message.len()).into_bytes();
        prefixed.extend_from_slice(message.as_bytes());
        let (sig, rec) = key.sign_prehash_recoverable(&keccak256(&prefixed)).unwrap();
        let hex: String =
            sig.to_bytes().iter().chain([rec.to_byte() + 27].iter()).map(|b| format!("{b:02x}")).collect();
        let addr = format!("0x{address}");
        assert!(verify_ethereum(&message, &addr, &format!("0x{hex}")));
        assert!(!verify_ethereum(&format!("{message} "), &addr, &format!("0x{hex}")), "another message");
        assert!(!verify_ethereum(&message, "0x2c7536e3605d9c16a7a3d7b1898e529396a65c23", &format!("0x{hex}")));
        assert!(!verify_ethereum(&message, &addr, &format!("0x{}", "z".repeat(130))));
    }

    #[test]
    fn solana_signatures_are_ed25519_by_the_address_key() {
        use ed25519_dalek::{Signer, SigningKey};
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let address = bs58::encode(key.verifying_key().to_bytes()).into_string();
        let message = "localhost wants you to sign in with your Solana account:\n...";
        let sig = key.sign(message.as_bytes()).to_bytes();
        assert!(verify_solana(message, &address, &sig));
        assert!(!verify_solana("another message", &address, &sig));
        assert!(!verify_solana(message, "4UPcfLX6rHuunkDiCnrVdN2BxnaKUAT1m2KCrzaAAct6", &sig));
        assert!(!verify_solana(message, &address, &sig[..63]));
    }

    #[test]
    fn domains_as_gotrues_pattern() {
        for ok in ["localhost", "localhost:5173", "app.example.com", "a.io:443", "x-y.example.org"] {
            assert!(valid_domain(ok), "{ok}");
        }
        for bad in ["example", "-a.example.com", "a.example.c0m", "a..com", "app.example.com:", "a.com:123456", "***"] {
            assert!(!valid_domain(bad), "{bad}");
        }
    }
}
