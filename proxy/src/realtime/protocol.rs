//! The Phoenix channel wire format as realtime-js speaks it: JSON objects
//! for vsn 1.0.0, JSON arrays `[join_ref, ref, topic, event, payload]` for
//! vsn 2.0.0, and vsn 2.0.0's binary user broadcasts (kind 3 from clients,
//! kind 4 to clients). Pure functions: no socket, no state.
use bytes::Bytes;
use serde_json::{json, Value};

/// The protocol version a socket asked for with `?vsn=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vsn {
    V1,
    V2,
}

impl Vsn {
    /// Phoenix's server default is 1.0.0 when the client names none.
    pub fn parse(vsn: Option<&str>) -> Option<Vsn> {
        match vsn {
            None | Some("1.0.0") => Some(Vsn::V1),
            Some("2.0.0") => Some(Vsn::V2),
            Some(_) => None,
        }
    }
}

/// What a broadcast carries: JSON, or raw bytes (vsn 2.0.0 only).
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    Json(Value),
    Binary(Bytes),
}

/// A binary frame from a client.
#[derive(Debug, Clone, PartialEq)]
pub enum Inbound {
    /// A user broadcast push (kind 3).
    Broadcast { join_ref: Option<String>, msg_ref: Option<String>, topic: String, event: String, body: Body },
}

/// A Phoenix message.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub join_ref: Option<String>,
    pub msg_ref: Option<String>,
    pub topic: String,
    pub event: String,
    pub payload: Value,
}

const KIND_USER_BROADCAST_PUSH: u8 = 3;
const KIND_USER_BROADCAST: u8 = 4;
const ENCODING_BINARY: u8 = 0;
const ENCODING_JSON: u8 = 1;

/// A ref is a string in realtime-js; Phoenix clients of other languages
/// send numbers, which are kept as their text.
fn opt_ref(v: Option<&Value>) -> Result<Option<String>, String> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err("a ref must be a string or null".into()),
    }
}

fn text_field(v: Option<&Value>, name: &str) -> Result<String, String> {
    match v {
        Some(Value::String(s)) => Ok(s.clone()),
        _ => Err(format!("`{name}` must be a string")),
    }
}

/// Decodes a text frame.
pub fn decode_text(vsn: Vsn, text: &str) -> Result<Message, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    match (vsn, value) {
        (Vsn::V2, Value::Array(mut parts)) if parts.len() == 5 => {
            let payload = parts.pop().unwrap_or(Value::Null);
            Ok(Message {
                join_ref: opt_ref(parts.first())?,
                msg_ref: opt_ref(parts.get(1))?,
                topic: text_field(parts.get(2), "topic")?,
                event: text_field(parts.get(3), "event")?,
                payload,
            })
        }
        (Vsn::V2, _) => Err("vsn 2.0.0 frames are arrays [join_ref, ref, topic, event, payload]".into()),
        (Vsn::V1, Value::Object(mut obj)) => Ok(Message {
            join_ref: opt_ref(obj.get("join_ref"))?,
            msg_ref: opt_ref(obj.get("ref"))?,
            topic: text_field(obj.get("topic"), "topic")?,
            event: text_field(obj.get("event"), "event")?,
            payload: obj.remove("payload").unwrap_or(Value::Null),
        }),
        (Vsn::V1, _) => Err("vsn 1.0.0 frames are objects {topic, event, payload, ref, join_ref}".into()),
    }
}

/// Decodes a binary frame: only vsn 2.0.0's user broadcast push (kind 3):
/// `kind, len(join_ref), len(ref), len(topic), len(event), len(meta),
/// encoding`, the five strings, then the payload.
pub fn decode_binary(frame: &[u8]) -> Result<Inbound, String> {
    let header = frame.get(..7).ok_or("binary frame shorter than its header")?;
    if header[0] != KIND_USER_BROADCAST_PUSH {
        return Err(format!("binary frame of unknown kind {}", header[0]));
    }
    let mut offset = 7;
    let mut fields = Vec::with_capacity(5);
    for len in &header[1..6] {
        let end = offset + usize::from(*len);
        let bytes = frame.get(offset..end).ok_or("binary frame shorter than its header says")?;
        fields.push(std::str::from_utf8(bytes).map_err(|_| "binary frame field is not UTF-8")?.to_string());
        offset = end;
    }
    let rest = Bytes::copy_from_slice(&frame[offset..]);
    let body = match header[6] {
        ENCODING_BINARY => Body::Binary(rest),
        ENCODING_JSON => Body::Json(serde_json::from_slice(&rest).map_err(|e| format!("payload is not JSON: {e}"))?),
        other => return Err(format!("unknown payload encoding {other}")),
    };
    let non_empty = |s: String| (!s.is_empty()).then_some(s);
    let mut fields = fields.into_iter();
    let (join_ref, msg_ref, topic, event) = (
        fields.next().and_then(non_empty),
        fields.next().and_then(non_empty),
        fields.next().unwrap_or_default(),
        fields.next().unwrap_or_default(),
    );
    Ok(Inbound::Broadcast { join_ref, msg_ref, topic, event, body })
}

/// Encodes a message as the socket's version writes it.
pub fn encode(
    vsn: Vsn,
    join_ref: Option<&str>,
    msg_ref: Option<&str>,
    topic: &str,
    event: &str,
    payload: &Value,
) -> String {
    let value = match vsn {
        Vsn::V2 => json!([join_ref, msg_ref, topic, event, payload]),
        Vsn::V1 => json!({ "join_ref": join_ref, "ref": msg_ref, "topic": topic, "event": event, "payload": payload }),
    };
    value.to_string()
}

/// A user broadcast to a vsn 2.0.0 client with a binary payload (kind 4):
/// `kind, len(topic), len(event), len(meta), encoding`, the strings, the
/// payload; `meta` (JSON, e.g. a replayed message's `{replayed, id}`) may be
/// empty. `None` if a field does not fit its one-byte length.
pub fn encode_binary_broadcast(topic: &str, event: &str, meta: &str, payload: &[u8]) -> Option<Vec<u8>> {
    let (t, e, m) = (u8::try_from(topic.len()).ok()?, u8::try_from(event.len()).ok()?, u8::try_from(meta.len()).ok()?);
    let mut out = Vec::with_capacity(5 + topic.len() + event.len() + meta.len() + payload.len());
    out.extend_from_slice(&[KIND_USER_BROADCAST, t, e, m, ENCODING_BINARY]);
    out.extend_from_slice(topic.as_bytes());
    out.extend_from_slice(event.as_bytes());
    out.extend_from_slice(meta.as_bytes());
    out.extend_from_slice(payload);
    Some(out)
}

/// The payload of a user broadcast as realtime-js reads it.
pub fn broadcast_payload(event: &str, payload: &Value) -> Value {
    json!({ "type": "broadcast", "event": event, "payload": payload })
}

/// `phx_reply` payloads.
pub fn reply_ok(response: Value) -> Value {
    json!({ "status": "ok", "response": response })
}

pub fn reply_error(reason: &str) -> Value {
    json!({ "status": "error", "response": { "reason": reason } })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_versions_decode_the_same_join() {
        let v2 = r#"["1","1","realtime:room","phx_join",{"config":{"broadcast":{"self":true}}}]"#;
        let v1 = r#"{"join_ref":"1","ref":"1","topic":"realtime:room","event":"phx_join","payload":{"config":{"broadcast":{"self":true}}}}"#;
        let a = decode_text(Vsn::V2, v2).unwrap();
        let b = decode_text(Vsn::V1, v1).unwrap();
        assert_eq!(a, b);
        assert_eq!((a.join_ref.as_deref(), a.event.as_str()), (Some("1"), "phx_join"));
        assert_eq!(a.payload["config"]["broadcast"]["self"], true);
    }

    #[test]
    fn heartbeats_have_null_join_refs_and_numbers_are_refs() {
        let m = decode_text(Vsn::V2, r#"[null,"7","phoenix","heartbeat",{}]"#).unwrap();
        assert_eq!((m.join_ref, m.msg_ref.as_deref()), (None, Some("7")));
        let m = decode_text(Vsn::V1, r#"{"ref":7,"topic":"phoenix","event":"heartbeat","payload":{}}"#).unwrap();
        assert_eq!(m.msg_ref.as_deref(), Some("7"));
    }

    #[test]
    fn malformed_frames_say_what_is_wrong() {
        assert!(decode_text(Vsn::V2, "not json").unwrap_err().starts_with("not JSON"));
        assert!(decode_text(Vsn::V2, r#"{"topic":"x"}"#).unwrap_err().contains("arrays"));
        assert!(decode_text(Vsn::V2, r#"[null,null,5,"e",{}]"#).unwrap_err().contains("topic"));
        assert!(decode_text(Vsn::V1, r#"[null,null,"t","e",{}]"#).unwrap_err().contains("objects"));
        assert!(decode_text(Vsn::V1, r#"{"topic":"t","event":"e","ref":{}}"#).unwrap_err().contains("ref"));
    }

    #[test]
    fn encodes_as_each_version_writes() {
        let p = reply_ok(json!({}));
        assert_eq!(
            encode(Vsn::V2, None, Some("3"), "phoenix", "phx_reply", &p),
            r#"[null,"3","phoenix","phx_reply",{"response":{},"status":"ok"}]"#
        );
        let v1: Value = serde_json::from_str(&encode(Vsn::V1, Some("1"), None, "t", "e", &json!(1))).unwrap();
        assert_eq!(v1, json!({"join_ref":"1","ref":null,"topic":"t","event":"e","payload":1}));
    }

    /// Built as realtime-js's serializer builds it (`_encodeUserBroadcastPush`).
    fn push(join_ref: &str, r: &str, topic: &str, event: &str, meta: &str, encoding: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![
            3,
            join_ref.len() as u8,
            r.len() as u8,
            topic.len() as u8,
            event.len() as u8,
            meta.len() as u8,
            encoding,
        ];
        for s in [join_ref, r, topic, event, meta] {
            out.extend_from_slice(s.as_bytes());
        }
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn binary_broadcast_pushes_decode_json_and_bytes() {
        let frame = push("1", "2", "realtime:room", "cursor", "", 1, br#"{"x":1}"#);
        assert_eq!(
            decode_binary(&frame).unwrap(),
            Inbound::Broadcast {
                join_ref: Some("1".into()),
                msg_ref: Some("2".into()),
                topic: "realtime:room".into(),
                event: "cursor".into(),
                body: Body::Json(json!({"x": 1})),
            }
        );
        let frame = push("1", "", "realtime:é", "bin", r#"{"persist":false}"#, 0, &[0, 255]);
        let Inbound::Broadcast { msg_ref, topic, body, .. } = decode_binary(&frame).unwrap();
        assert_eq!((msg_ref, topic.as_str(), body), (None, "realtime:é", Body::Binary(Bytes::from_static(&[0, 255]))));
    }

    #[test]
    fn malformed_binary_frames_are_refused() {
        assert!(decode_binary(&[3, 1]).is_err());
        assert!(decode_binary(&[9, 0, 0, 0, 0, 0, 1]).unwrap_err().contains("unknown kind"));
        assert!(decode_binary(&[3, 0, 0, 200, 0, 0, 1, b'x']).unwrap_err().contains("shorter"));
        assert!(decode_binary(&push("1", "2", "t", "e", "", 1, b"{nope")).unwrap_err().contains("not JSON"));
        assert!(decode_binary(&push("1", "2", "t", "e", "", 7, b"")).unwrap_err().contains("encoding"));
    }

    #[test]
    fn binary_broadcasts_to_clients_are_kind_4() {
        let out = encode_binary_broadcast("realtime:room", "bin", "", &[1, 2]).unwrap();
        assert_eq!(&out[..5], &[4, 13, 3, 0, 0]);
        assert_eq!(&out[5..18], b"realtime:room");
        assert_eq!(&out[18..], b"bin\x01\x02");
        assert!(encode_binary_broadcast(&"t".repeat(256), "e", "", &[]).is_none());
    }
}
