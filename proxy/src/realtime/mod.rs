//! `/realtime/v1`: Supabase Realtime's Phoenix channels over WebSocket, as
//! realtime-js 2.x speaks them: broadcast and presence, public and private
//! channels, broadcast from SQL and over HTTP.
//! - `protocol.rs`: the wire format (vsn 1.0.0 objects, 2.0.0 arrays and
//!   binary broadcasts);
//! - `hub.rs`: who listens where on this proxy, presence, fan-out;
//! - `socket.rs`: one connection: its channels, their authorisation
//!   (`fluxbase.realtime_authorize`), limits and send queue;
//! - `feed.rs`: messages sent from SQL and table changes, by logical
//!   decoding (`pgoutput.rs` decodes them);
//! - `changes.rs`: `postgres_changes` bindings, their filters (`filter.rs`)
//!   and the RLS-checked delivery of table changes;
//! - here: the upgrade, the HTTP broadcast API, and the bridge that makes
//!   proxies one service (a socket's broadcast is delivered locally, then
//!   sent as `NOTIFY fluxbase_realtime`; every other proxy delivers it to its
//!   sockets; messages from SQL come the same way where `wal_level` is not
//!   `logical`).
mod changes;
mod feed;
mod filter;
mod hub;
mod pgoutput;
mod protocol;
mod socket;

use base64::Engine;

use http::{header, HeaderMap, Request, StatusCode};

use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use sha1::{Digest, Sha1};
use std::sync::{Arc, Once};
use std::time::Duration;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

use crate::error::ApiError;
use crate::http::Response;
use crate::jwt::Caller;
use crate::state::AppState;

use hub::Hub;
use protocol::{Body, Vsn};

/// The `NOTIFY` channel between proxies.
const CHANNEL: &str = "fluxbase_realtime";
/// `NOTIFY` refuses payloads of 8000 bytes or more.
const NOTIFY_MAX: usize = 7999;
/// Frames larger than this close the socket (1009) before being parsed; a
/// payload between `realtime.max_payload_bytes` and this is refused with
/// a reply and the socket stays.
const MAX_FRAME_BYTES: usize = 1 << 20;
/// Bytes read from a socket at a time (tungstenite's default: 128 KiB).
const READ_BUFFER_BYTES: usize = 4 << 10;
/// Frames are written once this many bytes are queued, or when the queue
/// is empty (tungstenite's default: 128 KiB).
const WRITE_BUFFER_BYTES: usize = 16 << 10;

pub struct RealtimeService {
    shared: Arc<Shared>,
}

/// What every socket of this proxy shares.
pub(crate) struct Shared {
    hub: Hub,
    /// Channels with `postgres_changes` bindings.
    changes: changes::Registry,
    /// Tells this proxy's own NOTIFYs from others'.
    instance: String,
    bridge: Once,
    /// True while the bridge is listening.
    ready: watch::Sender<bool>,
    /// True while messages from SQL can arrive (feed.rs).
    feed_ready: watch::Sender<bool>,
    /// Open sockets per client address.
    per_ip: Arc<PerIp>,
    /// This proxy's presence changes, for the other proxies, in order.
    presence_out: tokio::sync::mpsc::UnboundedSender<PresenceOut>,
    presence_queue: std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<PresenceOut>>>,
}

/// A presence change of one of this proxy's sockets: tracked (`Some(key,
/// phx_ref, payload)`) or gone (`None`), in hub key `topic`.
pub(crate) struct PresenceOut {
    topic: String,
    socket: hub::SocketId,
    tracked: Option<(String, String, serde_json::Map<String, Value>)>,
}

/// Heartbeat of a proxy's presence; one silent for `PRESENCE_DEAD_AFTER` is gone.
const PRESENCE_HEARTBEAT: Duration = Duration::from_secs(5);
const PRESENCE_DEAD_AFTER_SECONDS: f64 = 15.0;

/// Counts open sockets per client address.
#[derive(Default)]
struct PerIp(std::sync::Mutex<std::collections::HashMap<String, usize>>);

/// One socket's place in its address's count, given back when dropped.
struct IpSlot {
    counts: Arc<PerIp>,
    ip: String,
}

impl PerIp {
    fn enter(self: &Arc<Self>, ip: &str, limit: usize) -> Option<IpSlot> {
        let mut counts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = counts.entry(ip.to_string()).or_default();
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(IpSlot { counts: self.clone(), ip: ip.to_string() })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = counts.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

impl Default for RealtimeService {
    fn default() -> Self {
        let (presence_out, queue) = tokio::sync::mpsc::unbounded_channel();
        RealtimeService {
            shared: Arc::new(Shared {
                hub: Hub::default(),
                changes: changes::Registry::default(),
                instance: uuid::Uuid::new_v4().to_string(),
                bridge: Once::new(),
                ready: watch::Sender::new(false),
                feed_ready: watch::Sender::new(false),
                per_ip: Arc::default(),
                presence_out,
                presence_queue: std::sync::Mutex::new(Some(queue)),
            }),
        }
    }
}

impl RealtimeService {
    /// `GET /realtime/v1/websocket?apikey=…&vsn=…`: answers `101` and serves
    /// the socket on its own task. The caller was verified by the
    /// dispatcher; `apikey` is kept to verify `access_token`s against.
    pub fn handle<B>(
        &self,
        state: &Arc<AppState>,
        req: &mut Request<B>,
        caller: Caller,
        apikey: Option<String>,
        ip: &str,
    ) -> Result<Response, ApiError> {
        if req.uri().path() != "/realtime/v1/websocket" {
            return Err(ApiError::NotFound);
        }
        let Some(slot) = self.shared.per_ip.enter(ip, state.config.realtime.max_connections_per_ip) else {
            state.metrics.realtime_refused("connections_per_ip");
            return Err(ApiError::RateLimited {
                retry_after: 1,
                msg: format!(
                    "ConnectionRateLimitReached: more than {} realtime connections from this address",
                    state.config.realtime.max_connections_per_ip
                ),
            });
        };
        let query = req.uri().query().unwrap_or("");
        let vsn = crate::http::query_param(query, "vsn");
        let vsn = Vsn::parse(vsn.as_deref()).ok_or_else(|| bad_request("vsn must be 1.0.0 or 2.0.0"))?;
        let accept = accept_key(req.method(), req.headers())?;
        self.start_bridge(state);
        let on_upgrade = hyper::upgrade::on(req);
        let (state, shared) = (state.clone(), self.shared.clone());
        tokio::spawn(async move {
            let upgraded = match on_upgrade.await {
                Ok(u) => u,
                Err(e) => return tracing::debug!(error = %e, "WebSocket upgrade failed"),
            };
            // tungstenite reads in 128 KiB chunks into a buffer of that size
            // by default: most of an idle socket's memory. Frames are small;
            // a large one grows the buffer as it is read.
            let config = WebSocketConfig::default()
                .max_message_size(Some(MAX_FRAME_BYTES))
                .max_frame_size(Some(MAX_FRAME_BYTES))
                .read_buffer_size(READ_BUFFER_BYTES)
                .write_buffer_size(WRITE_BUFFER_BYTES);
            let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await;
            socket::run(ws, socket::Conn { state, shared, vsn, caller, apikey }).await;
            drop(slot);
        });
        Ok(http::Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(header::UPGRADE, "websocket")
            .header(header::CONNECTION, "Upgrade")
            .header(header::SEC_WEBSOCKET_ACCEPT, accept)
            .body(crate::http::Body::empty())
            .expect("static response parts"))
    }

    /// The bridge starts with the first socket, so `check-config` and the
    /// in-process tests connect nothing.
    fn start_bridge(&self, state: &Arc<AppState>) {
        self.shared.bridge.call_once(|| {
            let pg = match crate::db::pg_config(&state.config.database) {
                Ok(pg) => pg,
                Err(e) => return tracing::error!(error = %e, "realtime bridge not started"),
            };
            let (shared, state) = (self.shared.clone(), state.clone());
            let ready = self.shared.ready.clone();
            tokio::spawn(prune(state.clone()));
            let queue = self.shared.presence_queue.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(queue) = queue {
                tokio::spawn(presence_outbox(state.clone(), self.shared.clone(), queue));
            }
            tokio::spawn(feed::run(state.clone(), shared.clone(), pg.clone()));
            // One at a time, in the order Postgres sent them: a message read
            // back by id must not be overtaken by the next one.
            let (inbound, mut queue) = tokio::sync::mpsc::unbounded_channel::<String>();
            tokio::spawn(async move {
                while let Some(payload) = queue.recv().await {
                    shared.on_notify(&state, &payload).await;
                }
            });
            tokio::spawn(crate::listener::run_channel(
                pg,
                CHANNEL,
                move |payload| {
                    let _ = inbound.send(payload.to_string());
                },
                ready,
            ));
        });
    }
}

impl Shared {
    /// Waits (briefly) until broadcasts from other proxies can arrive, so a
    /// join acknowledged is a join that receives them.
    async fn bridge_ready(&self) {
        let (mut ready, mut feed) = (self.ready.subscribe(), self.feed_ready.subscribe());
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            let _ = ready.wait_for(|r| *r).await;
            let _ = feed.wait_for(|r| *r).await;
        })
        .await;
    }

    /// The envelope a broadcast travels in between proxies; messages sent
    /// from SQL (`fluxbase.realtime_emit()`) have the same shape without `o`.
    fn envelope(&self, topic: &str, private: bool, event: &str, body: &Body) -> String {
        let mut e = json!({ "o": self.instance, "t": topic, "e": event });
        if private {
            e["private"] = Value::Bool(true);
        }
        match body {
            Body::Json(v) => e["p"] = v.clone(),
            Body::Binary(b) => e["b"] = Value::String(base64::engine::general_purpose::STANDARD.encode(b)),
        }
        e.to_string()
    }

    /// A `NOTIFY fluxbase_realtime`: another proxy's broadcast or presence
    /// change, or a message from SQL. One from SQL too large for NOTIFY
    /// carries only its row's id; it is read from `realtime.messages` and
    /// then delivered.
    async fn on_notify(&self, state: &AppState, payload: &str) {
        let Ok(e) = serde_json::from_str::<Value>(payload) else {
            return tracing::warn!("unreadable {CHANNEL} NOTIFY payload ignored");
        };
        if e["o"].as_str() == Some(self.instance.as_str()) {
            return;
        }
        match e["kind"].as_str() {
            Some("presence") => return self.remote_presence(&e),
            Some("gone") => return self.hub.drop_origin(e["i"].as_str().unwrap_or("")),
            _ => {}
        }
        let (Some(id), Some(at)) = (e["id"].as_str(), e["at"].as_str()) else {
            return self.deliver_value(state, e);
        };
        let sql = "SELECT fluxbase.realtime_message($1::text::uuid, $2::text::timestamp)";
        match query_one(state, sql, &[&id, &at]).await.map(|row| row.get::<_, Option<String>>(0)) {
            Ok(Some(envelope)) => self.deliver(state, &envelope),
            Ok(None) => tracing::warn!(id, "a realtime message from SQL was gone before it was read"),
            Err(e) => tracing::warn!(error = %e, id, "a realtime message from SQL could not be read"),
        }
    }

    fn remote_presence(&self, e: &Value) {
        let (Some(origin), Some(topic), Some(socket)) = (e["o"].as_str(), e["t"].as_str(), e["s"].as_u64()) else {
            return;
        };
        let tracked = match (e["op"].as_str(), e["k"].as_str(), e["r"].as_str(), e["m"].as_object()) {
            (Some("join"), Some(key), Some(phx_ref), Some(meta)) => Some((key.into(), phx_ref.into(), meta.clone())),
            _ => None,
        };
        self.hub.remote_presence(topic, origin.into(), socket, tracked);
    }

    /// Tells the other proxies (through the database) of a presence change.
    pub(crate) fn presence_changed(&self, out: PresenceOut) {
        let _ = self.presence_out.send(out);
    }

    /// Before this proxy's first member joins `topic`: the other proxies'
    /// presence there.
    pub(crate) async fn load_presence(&self, state: &AppState, topic: &str) {
        if self.hub.has_topic(topic) {
            return;
        }
        let sql = "SELECT fluxbase.realtime_presence_state($1, $2)";
        match query_one(state, sql, &[&topic, &self.instance]).await.map(|row| row.get::<_, Value>(0)) {
            Ok(Value::Array(entries)) => {
                let entries = entries
                    .iter()
                    .filter_map(|e| {
                        Some((
                            Arc::from(e["i"].as_str()?),
                            e["s"].as_u64()?,
                            e["k"].as_str()?.to_string(),
                            e["r"].as_str()?.to_string(),
                            e["m"].as_object()?.clone(),
                        ))
                    })
                    .collect();
                self.hub.load_remote(topic, entries);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "loading other proxies' presence failed"),
        }
    }

    fn deliver(&self, state: &AppState, envelope: &str) {
        match serde_json::from_str::<Value>(envelope) {
            Ok(e) => self.deliver_value(state, e),
            Err(_) => tracing::warn!("unreadable realtime envelope ignored"),
        }
    }

    fn deliver_value(&self, state: &AppState, e: Value) {
        let (Some(topic), Some(event)) = (e["t"].as_str(), e["e"].as_str()) else { return };
        let body = match e.get("b").and_then(Value::as_str) {
            Some(b) => match base64::engine::general_purpose::STANDARD.decode(b) {
                Ok(bytes) => Body::Binary(bytes.into()),
                Err(_) => return,
            },
            None => Body::Json(e.get("p").cloned().unwrap_or(Value::Null)),
        };
        let private = e["private"].as_bool() == Some(true);
        self.hub.broadcast(&hub::key(topic, private), None, event.to_string(), body);
        state.metrics.realtime_broadcast_received();
    }
}

impl RealtimeService {
    /// Broadcast over HTTP, as Supabase Realtime has it, answered `202`:
    /// - `POST /realtime/v1/api/broadcast` with `{messages: [{topic, event,
    ///   payload, private}]}` (realtime-js's `send()` before a channel is
    ///   joined);
    /// - `POST /realtime/v1/api/broadcast/{topic}/events/{event}[?private=true]`
    ///   with the payload as the body, JSON or bytes (`httpSend()`).
    ///
    /// Each message is authorised like a socket's send (a private topic by
    /// the caller's INSERT policies on `realtime.messages`; one refused is
    /// left out) and delivered through the database to every proxy.
    pub async fn http_broadcast(
        &self,
        state: &AppState,
        caller: &Caller,
        parts: &http::request::Parts,
        body: &[u8],
    ) -> Result<Response, ApiError> {
        let rest = parts.uri.path().strip_prefix("/realtime/v1/api/broadcast").unwrap_or("");
        let messages = match rest.trim_matches('/').split('/').collect::<Vec<_>>()[..] {
            [""] => {
                let request: Value =
                    serde_json::from_slice(body).map_err(|e| bad_request(&format!("the body is not JSON: {e}")))?;
                match request.get("messages").and_then(Value::as_array) {
                    Some(messages) => messages.clone(),
                    None => return Err(bad_request("the body needs `messages`, an array")),
                }
            }
            [topic, "events", event] => {
                let (topic, event) = (crate::http::percent_decode(topic), crate::http::percent_decode(event));
                let private =
                    crate::http::query_param(parts.uri.query().unwrap_or(""), "private").as_deref() == Some("true");
                let binary = parts
                    .headers
                    .get(header::CONTENT_TYPE)
                    .is_some_and(|v| v.as_bytes().starts_with(b"application/octet-stream"));
                let mut m = json!({ "topic": topic, "event": event, "private": private });
                if binary {
                    m["binary"] = Value::String(base64::engine::general_purpose::STANDARD.encode(body));
                } else {
                    m["payload"] =
                        serde_json::from_slice(body).map_err(|e| bad_request(&format!("the body is not JSON: {e}")))?;
                }
                vec![m]
            }
            _ => return Err(ApiError::NotFound),
        };
        let limit = state.config.realtime.max_payload_bytes;
        for m in &messages {
            if m.get("topic").and_then(Value::as_str).is_none_or(str::is_empty)
                || m.get("event").and_then(Value::as_str).is_none()
            {
                return Err(bad_request("each message needs `topic` and `event` as strings"));
            }
            let size = m.get("payload").map_or(0, |p| p.to_string().len())
                + m.get("binary").and_then(Value::as_str).map_or(0, |b| b.len() * 3 / 4);
            if size > limit {
                return Err(ApiError::BodyTooLarge { limit });
            }
        }
        let client = state.client().await?;
        let statement = client
            .prepare_cached("SELECT fluxbase.realtime_broadcast($1::jsonb, $2::jsonb)")
            .await
            .map_err(|e| crate::db::query_error(e, !caller.anonymous))?;
        client
            .execute(&statement, &[&*caller.claims, &Value::Array(messages)])
            .await
            .map_err(|e| crate::db::query_error(e, !caller.anonymous))?;
        Ok(crate::http::empty_response(StatusCode::ACCEPTED, None))
    }
}

/// Writes this proxy's presence changes to the database in order (each
/// also a NOTIFY to the other proxies), and beats this proxy's heartbeat,
/// reaping proxies that stopped beating.
async fn presence_outbox(
    state: Arc<AppState>,
    shared: Arc<Shared>,
    mut queue: tokio::sync::mpsc::UnboundedReceiver<PresenceOut>,
) {
    let mut beat = tokio::time::interval(PRESENCE_HEARTBEAT);
    loop {
        let written = tokio::select! {
            _ = beat.tick() => {
                let sql = "SELECT fluxbase.realtime_presence_alive($1, make_interval(secs => $2))";
                query_one(&state, sql, &[&shared.instance, &PRESENCE_DEAD_AFTER_SECONDS]).await
            }
            out = queue.recv() => {
                let Some(out) = out else { return };
                let socket = out.socket as i64;
                match out.tracked {
                    Some((key, phx_ref, payload)) => {
                        let sql = "SELECT fluxbase.realtime_presence_track($1, $2, $3, $4, $5, $6)";
                        let meta = Value::Object(payload);
                        query_one(&state, sql, &[&shared.instance, &out.topic, &socket, &key, &phx_ref, &meta]).await
                    }
                    None => {
                        let sql = "SELECT fluxbase.realtime_presence_untrack($1, $2, $3)";
                        query_one(&state, sql, &[&shared.instance, &out.topic, &socket]).await
                    }
                }
            }
        };
        if let Err(e) = written {
            tracing::warn!(error = %e, "presence not shared with other proxies");
        }
    }
}

/// Deletes `realtime.messages` rows past `realtime.message_retention_seconds`, every minute.
async fn prune(state: Arc<AppState>) {
    let keep = state.config.realtime.message_retention_seconds as f64;
    let mut every = tokio::time::interval(Duration::from_secs(60));
    loop {
        every.tick().await;
        let sql = "SELECT fluxbase.realtime_prune(make_interval(secs => $1))";
        match query_one(&state, sql, &[&keep]).await.map(|row| row.get::<_, i64>(0)) {
            Ok(0) => {}
            Ok(n) => tracing::debug!(rows = n, "realtime messages pruned"),
            Err(e) => tracing::warn!(error = %e, "pruning realtime messages failed"),
        }
    }
}

/// One of realtime's own statements (not a client's request) on a pooled
/// connection, kept prepared; a failure as text, for the log.
async fn query(
    state: &AppState,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Vec<tokio_postgres::Row>, String> {
    let client = state.client().await.map_err(|e| e.to_string())?;
    let statement = client.prepare_cached(sql).await.map_err(|e| e.to_string())?;
    client.query(&statement, params).await.map_err(|e| e.to_string())
}

/// `query` of a statement that returns one row (`SELECT f(…)`).
async fn query_one(
    state: &AppState,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<tokio_postgres::Row, String> {
    let client = state.client().await.map_err(|e| e.to_string())?;
    let statement = client.prepare_cached(sql).await.map_err(|e| e.to_string())?;
    client.query_one(&statement, params).await.map_err(|e| e.to_string())
}

fn bad_request(message: &str) -> ApiError {
    ApiError::Request { status: StatusCode::BAD_REQUEST, code: "FB004", message: message.into() }
}

/// RFC 6455's handshake checks; the `Sec-WebSocket-Accept` value.
fn accept_key(method: &http::Method, headers: &HeaderMap) -> Result<String, ApiError> {
    let has = |name: header::HeaderName, value: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|token| token.trim().eq_ignore_ascii_case(value)))
    };
    if method != http::Method::GET || !has(header::UPGRADE, "websocket") || !has(header::CONNECTION, "upgrade") {
        return Err(bad_request("this endpoint is a WebSocket: GET with Upgrade: websocket"));
    }
    if !has(header::SEC_WEBSOCKET_VERSION, "13") {
        return Err(bad_request("Sec-WebSocket-Version must be 13"));
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| bad_request("Sec-WebSocket-Key is missing"))?;
    let mut sha = Sha1::new();
    sha.update(key.trim().as_bytes());
    sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    Ok(base64::engine::general_purpose::STANDARD.encode(sha.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_is_rfc_6455s_example() {
        let mut h = HeaderMap::new();
        h.insert(header::UPGRADE, "websocket".parse().unwrap());
        h.insert(header::CONNECTION, "keep-alive, Upgrade".parse().unwrap());
        h.insert(header::SEC_WEBSOCKET_VERSION, "13".parse().unwrap());
        h.insert(header::SEC_WEBSOCKET_KEY, "dGhlIHNhbXBsZSBub25jZQ==".parse().unwrap());
        assert_eq!(accept_key(&http::Method::GET, &h).unwrap(), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert!(accept_key(&http::Method::POST, &h).is_err());
        h.remove(header::SEC_WEBSOCKET_KEY);
        assert!(accept_key(&http::Method::GET, &h).is_err());
    }

    #[test]
    fn sockets_per_address_are_counted_and_given_back() {
        let counts = Arc::new(PerIp::default());
        let a = counts.enter("203.0.113.1", 2).unwrap();
        let _b = counts.enter("203.0.113.1", 2).unwrap();
        assert!(counts.enter("203.0.113.1", 2).is_none(), "the third from one address is refused");
        let _other = counts.enter("198.51.100.7", 2).expect("another address has its own count");
        drop(a);
        assert!(counts.enter("203.0.113.1", 2).is_some(), "a closed socket gives its place back");
    }

    #[test]
    fn the_envelope_carries_json_and_bytes_and_skips_our_own() {
        let service = RealtimeService::default();
        let e: Value =
            serde_json::from_str(&service.shared.envelope("realtime:r", false, "ev", &Body::Json(json!({"a": 1}))))
                .unwrap();
        assert_eq!((e["t"].as_str(), e["e"].as_str(), &e["p"]), (Some("realtime:r"), Some("ev"), &json!({"a": 1})));
        let e: Value = serde_json::from_str(&service.shared.envelope(
            "t",
            true,
            "e",
            &Body::Binary(bytes::Bytes::from_static(&[1, 2])),
        ))
        .unwrap();
        assert_eq!(e["b"], "AQI=");
        assert_eq!(e["private"], true);
    }
}
