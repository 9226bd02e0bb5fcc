//! WebAuthn for passkeys: the checks a relying party makes on a new
//! credential (registration) and on a sign-in (assertion), per WebAuthn
//! Level 2 §7.1 and §7.2. Attestation statements are not evaluated (the
//! options ask for `attestation: "none"`): a passkey proves possession of
//! its key, not the make of the authenticator. Keys: ES256 (COSE -7) and
//! RS256 (COSE -257). CBOR is decoded by `ciborium`; the ceremony checks
//! are ours (webauthn-rs wants its own serialised ceremony state and
//! credential rows, where ours live in Postgres for any proxy to finish, and
//! keeps usernameless sign-in behind an experimental feature).
use base64::Engine;
use ciborium::value::Value;
use sha2::{Digest, Sha256};

/// Decodes one CBOR item from the front of `input` (by `ciborium`, nesting
/// at most 16 deep); returns it and the rest.
pub fn cbor_decode(input: &[u8]) -> Result<(Value, &[u8]), String> {
    let mut rest = input;
    let item = ciborium::de::from_reader_with_recursion_limit(&mut rest, 16).map_err(|e| format!("CBOR: {e}"))?;
    Ok((item, rest))
}

/// The value under `key` of a CBOR map.
fn entry<'v>(map: &'v Value, key: &Value) -> Option<&'v Value> {
    map.as_map()?.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

/// The value under an integer key (COSE labels).
fn int_key(map: &Value, key: i64) -> Option<&Value> {
    entry(map, &Value::Integer(key.into()))
}

fn int(value: &Value) -> Option<i128> {
    value.as_integer().map(i128::from)
}

fn bytes(value: &Value) -> Option<&[u8]> {
    value.as_bytes().map(Vec::as_slice)
}

pub fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub fn from_b64url(s: &str) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|_| "not base64url".to_string())
}

/// What the relying party expects of every ceremony.
pub struct RelyingParty<'a> {
    pub id: &'a str,
    pub origins: &'a [String],
}

/// The parsed `authenticatorData`.
pub struct AuthData {
    pub sign_count: u32,
    /// (aaguid, credential id, COSE public key) when attested.
    pub credential: Option<([u8; 16], Vec<u8>, Vec<u8>)>,
}

const UP: u8 = 0x01;
const AT: u8 = 0x40;

fn parse_auth_data(data: &[u8], rp: &RelyingParty<'_>) -> Result<AuthData, String> {
    if data.len() < 37 {
        return Err("authenticator data too short".into());
    }
    if data[..32] != Sha256::digest(rp.id.as_bytes())[..] {
        return Err("the credential is for another relying party (rpIdHash)".into());
    }
    let flags = data[32];
    if flags & UP == 0 {
        return Err("the user was not present (UP flag)".into());
    }
    let sign_count = u32::from_be_bytes([data[33], data[34], data[35], data[36]]);
    let credential = if flags & AT != 0 {
        let rest = &data[37..];
        if rest.len() < 18 {
            return Err("attested credential data too short".into());
        }
        let aaguid: [u8; 16] = rest[..16].try_into().map_err(|_| "aaguid")?;
        let len = u16::from_be_bytes([rest[16], rest[17]]) as usize;
        let rest = &rest[18..];
        if rest.len() < len || len == 0 || len > 1023 {
            return Err("credential id length".into());
        }
        let id = rest[..len].to_vec();
        let (_, after) = cbor_decode(&rest[len..])?;
        let key = rest[len..rest.len() - after.len()].to_vec();
        Some((aaguid, id, key))
    } else {
        None
    };
    Ok(AuthData { sign_count, credential })
}

/// `clientDataJSON` checks: type, challenge (base64url), origin.
fn check_client_data(raw: &[u8], kind: &str, challenge: &str, rp: &RelyingParty<'_>) -> Result<(), String> {
    let client: serde_json::Value = serde_json::from_slice(raw).map_err(|_| "clientDataJSON is not JSON")?;
    let field = |k: &str| client.get(k).and_then(serde_json::Value::as_str).unwrap_or("");
    if field("type") != kind {
        return Err(format!("clientData type is not {kind}"));
    }
    if !crate::jwt::constant_time_eq(field("challenge").as_bytes(), challenge.as_bytes()) {
        return Err("clientData challenge does not match".into());
    }
    if !rp.origins.iter().any(|o| o == field("origin")) {
        return Err(format!("origin {:?} is not allowed", field("origin")));
    }
    if client.get("crossOrigin").and_then(serde_json::Value::as_bool) == Some(true) {
        return Err("cross-origin ceremonies are not allowed".into());
    }
    Ok(())
}

/// The COSE algorithm of a public key we accept: -7 (ES256) or -257 (RS256).
fn cose_alg(cose: &[u8]) -> Result<i128, String> {
    let (key, _) = cbor_decode(cose)?;
    match (int_key(&key, 1).and_then(int), int_key(&key, 3).and_then(int)) {
        (Some(2), Some(-7)) if int_key(&key, -1).and_then(int) == Some(1) => Ok(-7),
        (Some(3), Some(-257)) => Ok(-257),
        other => Err(format!("public key type/algorithm {other:?} is not ES256 or RS256")),
    }
}

/// Verifies `signature` over `message` with a COSE public key.
fn verify_signature(cose: &[u8], message: &[u8], signature: &[u8]) -> Result<(), String> {
    let (key, _) = cbor_decode(cose)?;
    match cose_alg(cose)? {
        -7 => {
            use p256::ecdsa::signature::Verifier;
            let x = int_key(&key, -2).and_then(bytes).ok_or("EC key without x")?;
            let y = int_key(&key, -3).and_then(bytes).ok_or("EC key without y")?;
            if x.len() != 32 || y.len() != 32 {
                return Err("EC key coordinates are not 32 bytes".into());
            }
            let mut point = vec![4u8];
            point.extend_from_slice(x);
            point.extend_from_slice(y);
            let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(&point).map_err(|_| "not a P-256 point")?;
            let sig = p256::ecdsa::Signature::from_der(signature).map_err(|_| "signature is not DER ECDSA")?;
            vk.verify(message, &sig).map_err(|_| "signature does not verify".to_string())
        }
        _ => {
            use rsa::signature::Verifier;
            let n = int_key(&key, -1).and_then(bytes).ok_or("RSA key without n")?;
            let e = int_key(&key, -2).and_then(bytes).ok_or("RSA key without e")?;
            let public = rsa::RsaPublicKey::new(rsa::BigUint::from_bytes_be(n), rsa::BigUint::from_bytes_be(e))
                .map_err(|e| format!("RSA key: {e}"))?;
            let vk = rsa::pkcs1v15::VerifyingKey::<Sha256>::new(public);
            let sig = rsa::pkcs1v15::Signature::try_from(signature).map_err(|_| "RSA signature")?;
            vk.verify(message, &sig).map_err(|_| "signature does not verify".to_string())
        }
    }
}

/// A credential the browser created: checked against the challenge, the
/// relying party and its own data. Returns (credential id, COSE key,
/// sign count, aaguid).
pub struct NewCredential {
    pub id: Vec<u8>,
    pub public_key: Vec<u8>,
    pub sign_count: u32,
    pub aaguid: uuid::Uuid,
}

pub fn verify_registration(
    credential: &serde_json::Value,
    challenge: &str,
    rp: &RelyingParty<'_>,
) -> Result<NewCredential, String> {
    let field = |k: &str| credential.pointer(k).and_then(serde_json::Value::as_str).ok_or(format!("{k} missing"));
    if credential.get("type").and_then(serde_json::Value::as_str) != Some("public-key") {
        return Err("credential type is not public-key".into());
    }
    let raw_id = from_b64url(field("/rawId").or_else(|_| field("/id"))?)?;
    let client_data = from_b64url(field("/response/clientDataJSON")?)?;
    check_client_data(&client_data, "webauthn.create", challenge, rp)?;
    let attestation = from_b64url(field("/response/attestationObject")?)?;
    let (object, _) = cbor_decode(&attestation)?;
    let auth_data =
        entry(&object, &Value::Text("authData".into())).and_then(bytes).ok_or("attestationObject without authData")?;
    let parsed = parse_auth_data(auth_data, rp)?;
    let (aaguid, id, key) = parsed.credential.ok_or("no attested credential data (AT flag)")?;
    if id != raw_id {
        return Err("rawId is not the attested credential id".into());
    }
    cose_alg(&key)?;
    Ok(NewCredential { id, public_key: key, sign_count: parsed.sign_count, aaguid: uuid::Uuid::from_bytes(aaguid) })
}

/// A sign-in: checked against the challenge, the relying party and the
/// stored key. Returns the authenticator's new sign count.
pub fn verify_assertion(
    credential: &serde_json::Value,
    challenge: &str,
    rp: &RelyingParty<'_>,
    public_key: &[u8],
) -> Result<u32, String> {
    let field = |k: &str| credential.pointer(k).and_then(serde_json::Value::as_str).ok_or(format!("{k} missing"));
    let client_data = from_b64url(field("/response/clientDataJSON")?)?;
    check_client_data(&client_data, "webauthn.get", challenge, rp)?;
    let auth_data = from_b64url(field("/response/authenticatorData")?)?;
    let parsed = parse_auth_data(&auth_data, rp)?;
    let signature = from_b64url(field("/response/signature")?)?;
    let mut message = auth_data.clone();
    message.extend_from_slice(&Sha256::digest(&client_data));
    verify_signature(public_key, &message, &signature)?;
    Ok(parsed.sign_count)
}

/// The credential id of an assertion (`rawId`, else `id`).
pub fn credential_id(credential: &serde_json::Value) -> Result<Vec<u8>, String> {
    let id = credential
        .get("rawId")
        .or_else(|| credential.get("id"))
        .and_then(serde_json::Value::as_str)
        .ok_or("credential id missing")?;
    from_b64url(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cbor_items_and_limits() {
        // {1: 2, 3: -7, "a": h'0102', "t": [true, null]}
        let bytes = [0xa4, 0x01, 0x02, 0x03, 0x26, 0x61, b'a', 0x42, 1, 2, 0x61, b't', 0x82, 0xf5, 0xf6, 0xff];
        let (item, rest) = cbor_decode(&bytes).unwrap();
        assert_eq!(rest, &[0xff], "the rest after one item: where a COSE key ends inside authData");
        assert_eq!(int_key(&item, 1).and_then(int), Some(2));
        assert_eq!(int_key(&item, 3).and_then(int), Some(-7));
        assert_eq!(entry(&item, &Value::Text("a".into())).and_then(super::bytes), Some(&[1u8, 2][..]));
        let t = entry(&item, &Value::Text("t".into())).unwrap();
        assert_eq!(t, &Value::Array(vec![Value::Bool(true), Value::Null]));
        assert!(cbor_decode(&[0x5a, 0xff, 0xff, 0xff, 0xff]).is_err(), "length beyond the input");
        assert!(cbor_decode(&[0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).is_err(), "2^64 items");
        assert!(cbor_decode(&[0x81; 40]).is_err(), "too deep");
        assert!(cbor_decode(&[]).is_err());
    }

    /// Attacker-controlled bytes: every input decodes or fails, never panics
    /// or recurses without bound (xorshift inputs, biased towards headers).
    #[test]
    fn cbor_never_panics_on_random_input() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let origins = vec!["https://a.example".to_string()];
        let rp = RelyingParty { id: "a.example", origins: &origins };
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 64) as usize;
            let bytes: Vec<u8> = (0..len).map(|i| (x.rotate_left(i as u32 * 7) & 0xff) as u8).collect();
            let _ = cbor_decode(&bytes);
            let _ = cose_alg(&bytes);
            let mut data = Sha256::digest(b"a.example").to_vec();
            data.push(0x41);
            data.extend_from_slice(&bytes);
            let _ = parse_auth_data(&data, &rp);
        }
    }

    #[test]
    fn auth_data_is_bound_to_the_relying_party() {
        let origins = vec!["https://app.example".to_string()];
        let rp = RelyingParty { id: "app.example", origins: &origins };
        let mut data = Sha256::digest(b"app.example").to_vec();
        data.push(UP);
        data.extend_from_slice(&7u32.to_be_bytes());
        assert_eq!(parse_auth_data(&data, &rp).unwrap().sign_count, 7);
        let other = RelyingParty { id: "evil.example", origins: &origins };
        assert!(parse_auth_data(&data, &other).is_err());
        data[32] = 0;
        assert!(parse_auth_data(&data, &rp).is_err(), "user not present");
        let client = br#"{"type":"webauthn.get","challenge":"abc","origin":"https://app.example"}"#;
        assert!(check_client_data(client, "webauthn.get", "abc", &rp).is_ok());
        assert!(check_client_data(client, "webauthn.get", "abd", &rp).is_err());
        assert!(check_client_data(client, "webauthn.create", "abc", &rp).is_err());
        let evil = br#"{"type":"webauthn.get","challenge":"abc","origin":"https://evil.example"}"#;
        assert!(check_client_data(evil, "webauthn.get", "abc", &rp).is_err());
    }
}
