//! One WebSocket: its joined channels, its limits (channels, joins and
//! events per second, payload size, liveness) and its bounded send queue.
//! The reader handles frames in order; a writer task owns the socket's
//! sending half and encodes in the socket's protocol version.
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

use super::hub::{Event, EventKind, Member, Outgoing, SocketId};
use super::protocol::{self, Body, Inbound, Message, Vsn};
use super::{query, query_one, PresenceOut, Shared, CHANNEL, NOTIFY_MAX};
use crate::jwt::Caller;
use crate::state::AppState;

pub struct Conn {
    pub state: Arc<AppState>,
    pub shared: Arc<Shared>,
    pub vsn: Vsn,
    pub caller: Caller,
    pub apikey: Option<String>,
}

/// A channel this socket joined.
struct Joined {
    /// Its key in the hub (`hub::key`: private channels apart).
    key: String,
    private: bool,
    join_ref: Option<String>,
    ack: bool,
    presence_key: String,
    /// May broadcast and track: always on a public channel; on a private
    /// one, what its INSERT policies on `realtime.messages` allowed at join.
    may_send: bool,
    may_track: bool,
    /// What its policies allowed (private channels), to tell a new token
    /// that takes a read away.
    access: Option<Access>,
    /// The role of the channel's caller: a new token with another one has
    /// its `postgres_changes` bindings checked again.
    role: String,
    /// When the channel's token (the join's `access_token`, the latest one
    /// sent, or the socket's key) expires; the channel is closed then.
    expires: Option<Instant>,
}

/// When `caller`'s token expires (`exp`), if it does.
fn expiry(caller: &Caller) -> Option<Instant> {
    let exp = caller.claims.get("exp")?.as_f64()?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok()?.as_secs_f64();
    Some(Instant::now() + Duration::from_secs_f64((exp - now).clamp(0.0, 1e9)))
}

/// How long ago an (unverified) token's `exp` passed, for Supabase's
/// "Token has expired N seconds ago"; only read once verification said the
/// token expired.
fn expired_seconds_ago(token: &str) -> Option<u64> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let exp = serde_json::from_slice::<Value>(&bytes).ok()?.get("exp")?.as_f64()?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok()?.as_secs_f64();
    Some((now - exp).max(0.0) as u64)
}

/// What a caller may do on a private channel (`fluxbase.realtime_authorize`).
#[derive(serde::Deserialize, Clone, Copy)]
struct Access {
    broadcast_read: bool,
    presence_read: bool,
    broadcast_write: bool,
    presence_write: bool,
}

/// Counts events in the current second.
struct Window {
    started: Instant,
    count: u32,
}

impl Window {
    fn new() -> Window {
        Window { started: Instant::now(), count: 0 }
    }

    fn allow(&mut self, limit: u32) -> bool {
        if self.started.elapsed() >= Duration::from_secs(1) {
            *self = Window::new();
        }
        self.count += 1;
        self.count <= limit
    }
}

struct Session {
    conn: Conn,
    id: SocketId,
    tx: mpsc::Sender<Outgoing>,
    kill: CancellationToken,
    channels: HashMap<String, Joined>,
    joins: Window,
    events: Window,
}

pub async fn run<S>(ws: WebSocketStream<S>, conn: Conn)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let id = conn.shared.hub.socket_id();
    let config = &conn.state.config.realtime;
    let heartbeat_timeout = Duration::from_millis(config.heartbeat_timeout_ms);
    let (tx, rx) = mpsc::channel(config.send_queue_frames);
    let kill = CancellationToken::new();
    let (sink, mut stream) = ws.split();
    let writer = tokio::spawn(write(sink, rx, kill.clone(), conn.vsn, conn.state.clone()));
    conn.state.metrics.realtime_socket(1);
    tracing::debug!(socket = id, role = conn.caller.role(), "realtime socket opened");
    let mut session =
        Session { conn, id, tx, kill, channels: HashMap::new(), joins: Window::new(), events: Window::new() };
    loop {
        let expires = session.channels.values().filter_map(|j| j.expires).min();
        tokio::select! {
            _ = session.kill.cancelled() => break,
            _ = async {
                match expires {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            } => session.expire_channels(),
            frame = tokio::time::timeout(heartbeat_timeout, stream.next()) => match frame {
                Err(_) => {
                    session.close(CloseCode::Policy, "HeartbeatTimeout: no message from the client in time");
                    break;
                }
                Ok(Some(Err(tokio_tungstenite::tungstenite::Error::Capacity(_)))) => {
                    session.close(CloseCode::Size, "MessageTooBig: a frame is at most 1 MiB");
                    break;
                }
                Ok(None) | Ok(Some(Err(_))) => break,
                Ok(Some(Ok(frame))) => {
                    if !session.on_frame(frame).await {
                        break;
                    }
                }
            },
        }
    }
    let state = session.conn.state.clone();
    for joined in session.channels.values() {
        session.hub_leave(&joined.key);
    }
    // The writer ends once the queue is drained and closed.
    drop(session);
    let _ = writer.await;
    state.metrics.realtime_socket(-1);
}

async fn write<K>(
    mut sink: K,
    mut rx: mpsc::Receiver<Outgoing>,
    kill: CancellationToken,
    vsn: Vsn,
    state: Arc<AppState>,
) where
    K: futures_util::Sink<Frame> + Unpin,
{
    loop {
        let next = tokio::select! {
            biased;
            _ = kill.cancelled() => {
                state.metrics.realtime_slow_consumer();
                let frame = close_frame(CloseCode::Policy, "SlowConsumer: the client did not read its messages fast enough");
                let _ = tokio::time::timeout(Duration::from_secs(1), sink.send(frame)).await;
                return;
            }
            next = rx.recv() => next,
        };
        let frame = match next {
            None => {
                let _ =
                    tokio::time::timeout(Duration::from_secs(1), sink.send(close_frame(CloseCode::Normal, ""))).await;
                return;
            }
            Some(Outgoing::Close(code, reason)) => {
                let _ =
                    tokio::time::timeout(Duration::from_secs(1), sink.send(close_frame(code.into(), &reason))).await;
                return;
            }
            Some(Outgoing::Text(text)) => Frame::text(text),
            Some(Outgoing::Binary(bytes)) => Frame::binary(bytes),
            Some(Outgoing::Change { join_ref, topic, ids, data }) => {
                Frame::text(super::changes::encode(vsn, join_ref.as_deref(), &topic, &ids, &data))
            }
            Some(Outgoing::Event { join_ref, event }) => match encode_event(vsn, join_ref.as_deref(), &event) {
                Some(frame) => frame,
                None => continue,
            },
        };
        tokio::select! {
            sent = sink.send(frame) => if sent.is_err() { return },
            _ = kill.cancelled() => return,
        }
    }
}

fn close_frame(code: CloseCode, reason: &str) -> Frame {
    Frame::Close(Some(CloseFrame { code, reason: reason.to_string().into() }))
}

fn encode_event(vsn: Vsn, join_ref: Option<&str>, e: &Event) -> Option<Frame> {
    let text = match &e.kind {
        EventKind::Broadcast { event, body: Body::Json(payload) } => {
            protocol::encode(vsn, join_ref, None, &e.topic, "broadcast", &protocol::broadcast_payload(event, payload))
        }
        EventKind::Broadcast { event, body: Body::Binary(bytes) } => {
            // vsn 1.0.0 has no binary frames: such a socket cannot receive it.
            return match vsn {
                Vsn::V2 => protocol::encode_binary_broadcast(&e.topic, event, "", bytes).map(Frame::binary),
                Vsn::V1 => None,
            };
        }
        EventKind::PresenceDiff(diff) => protocol::encode(vsn, join_ref, None, &e.topic, "presence_diff", diff),
        EventKind::PresenceState(state) => protocol::encode(vsn, join_ref, None, &e.topic, "presence_state", state),
    };
    Some(Frame::text(text))
}

/// Messages one join may replay (`config.broadcast.replay.limit`), as Supabase.
const REPLAY_MAX: i64 = 25;

/// Reasons in Supabase Realtime's `Code: message` shape.
mod reason {
    pub const UNMATCHED_TOPIC: &str = "unmatched topic";
    pub const TOO_MANY_CHANNELS: &str = "ChannelRateLimitReached: Too many channels";
    pub const TOO_MANY_JOINS: &str = "ClientJoinRateLimitReached: Too many joins per second";
    pub const TOO_MANY_EVENTS: &str = "MessagePerSecondRateLimitReached: Too many messages per second";
    pub const TOPIC_REQUIRED: &str = "TopicNameRequired: You must provide a topic name";
    pub const CANNOT_WRITE: &str = "Unauthorized: You do not have permissions to write to this Channel topic";
}

impl Session {
    fn config(&self) -> &crate::config::Realtime {
        &self.conn.state.config.realtime
    }

    /// Queues a frame; a full queue makes this socket a slow consumer.
    fn queue(&self, out: Outgoing) {
        if self.tx.try_send(out).is_err() {
            self.kill.cancel();
        }
    }

    fn send(&self, join_ref: Option<&str>, msg_ref: Option<&str>, topic: &str, event: &str, payload: &Value) {
        self.queue(Outgoing::Text(protocol::encode(self.conn.vsn, join_ref, msg_ref, topic, event, payload)));
    }

    fn reply(&self, m: &Message, payload: Value) {
        self.send(m.join_ref.as_deref(), m.msg_ref.as_deref(), &m.topic, "phx_reply", &payload);
    }

    fn refuse(&self, join_ref: Option<&str>, msg_ref: Option<&str>, topic: &str, code: &'static str, reason: &str) {
        self.conn.state.metrics.realtime_refused(code);
        self.send(join_ref, msg_ref, topic, "phx_reply", &protocol::reply_error(reason));
    }

    fn close(&self, code: CloseCode, reason: &str) {
        self.queue(Outgoing::Close(code.into(), reason.to_string()));
    }

    /// A frame that could not be read: a `phx_error` on topic `phoenix`
    /// says why (no ref to answer to); the socket stays open.
    fn malformed(&self, why: &str) {
        self.conn.state.metrics.realtime_refused("malformed");
        self.send(None, None, "phoenix", "phx_error", &json!({ "reason": format!("MalformedMessage: {why}") }));
    }

    /// Handles one frame; false ends the connection.
    async fn on_frame(&mut self, frame: Frame) -> bool {
        match frame {
            Frame::Text(text) => match protocol::decode_text(self.conn.vsn, text.as_str()) {
                Ok(m) => self.on_message(m).await,
                Err(why) => self.malformed(&why),
            },
            Frame::Binary(bytes) if self.conn.vsn == Vsn::V2 => match protocol::decode_binary(&bytes) {
                Ok(Inbound::Broadcast { join_ref, msg_ref, topic, event, body }) => {
                    let m = Message { join_ref, msg_ref, topic, event: "broadcast".into(), payload: Value::Null };
                    self.on_broadcast(&m, event, body).await;
                }
                Err(why) => self.malformed(&why),
            },
            Frame::Binary(_) => self.malformed("binary frames need vsn 2.0.0"),
            Frame::Close(_) => return false,
            Frame::Ping(_) | Frame::Pong(_) | Frame::Frame(_) => {}
        }
        true
    }

    async fn on_message(&mut self, m: Message) {
        if m.topic == "phoenix" && m.event == "heartbeat" {
            return self.reply(&m, protocol::reply_ok(json!({})));
        }
        if m.event == "phx_join" {
            return self.join(m).await;
        }
        if !self.channels.contains_key(&m.topic) {
            return self.refuse(
                m.join_ref.as_deref(),
                m.msg_ref.as_deref(),
                &m.topic,
                "unmatched_topic",
                reason::UNMATCHED_TOPIC,
            );
        }
        match m.event.as_str() {
            "phx_leave" => self.leave(&m),
            "access_token" => self.access_token(&m).await,
            "broadcast" => {
                let event = m.payload.get("event").and_then(Value::as_str).map(str::to_string);
                match event {
                    Some(event) => {
                        let body = Body::Json(m.payload.get("payload").cloned().unwrap_or(Value::Null));
                        self.on_broadcast(&m, event, body).await;
                    }
                    None => {
                        self.refuse_m(&m, "malformed", "MalformedMessage: a broadcast needs payload.event as a string")
                    }
                }
            }
            "presence" => self.presence(&m),
            other => {
                let reason = format!(
                    "UnknownEvent: `{}` is not an event of this channel",
                    other.chars().take(64).collect::<String>()
                );
                self.refuse_m(&m, "unknown_event", &reason)
            }
        }
    }

    fn refuse_m(&self, m: &Message, code: &'static str, reason: &str) {
        self.refuse(m.join_ref.as_deref(), m.msg_ref.as_deref(), &m.topic, code, reason);
    }

    /// The caller a token makes, under the proxy's key rules.
    fn verify_token(&self, token: &str) -> Result<Caller, String> {
        self.conn
            .state
            .verifier
            .authenticate(Some(&format!("Bearer {token}")), self.conn.apikey.as_deref())
            .map_err(|e| format!("InvalidJWTToken: {e}"))
    }

    async fn join(&mut self, m: Message) {
        let limits = self.config().clone();
        if !self.joins.allow(limits.max_joins_per_second) {
            return self.refuse_m(&m, "join_rate", reason::TOO_MANY_JOINS);
        }
        let sub_topic = m.topic.strip_prefix("realtime:").unwrap_or(&m.topic);
        if sub_topic.is_empty() {
            return self.refuse_m(&m, "topic", reason::TOPIC_REQUIRED);
        }
        if m.topic.len() > 255 {
            return self.refuse_m(&m, "topic", "TopicNameTooLong: a topic is at most 255 bytes");
        }
        let rejoin = self.channels.contains_key(&m.topic);
        if !rejoin && self.channels.len() >= limits.max_channels_per_connection {
            return self.refuse_m(&m, "channels", reason::TOO_MANY_CHANNELS);
        }
        let config = &m.payload["config"];
        let caller = match m.payload.get("access_token").and_then(Value::as_str) {
            Some(token) => match self.verify_token(token) {
                Ok(caller) => caller,
                Err(reason) => return self.refuse_m(&m, "token", &reason),
            },
            None => self.conn.caller.clone(),
        };
        let private = config["private"].as_bool() == Some(true);
        let access = if private {
            match self.authorize(&caller, sub_topic).await {
                Ok(access) if access.broadcast_read || access.presence_read => Some(access),
                Ok(_) => {
                    let reason = format!(
                        "Unauthorized: You do not have permissions to read from this Channel topic: {sub_topic}"
                    );
                    return self.refuse_m(&m, "unauthorized", &reason);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "private channel authorisation failed");
                    return self.refuse_m(
                        &m,
                        "database",
                        "UnableToConnectToProject: the channel's policies could not be checked",
                    );
                }
            }
        } else {
            None
        };
        let bindings = match self.postgres_bindings(&caller, &config["postgres_changes"]).await {
            Ok(b) => b,
            Err(reason) => return self.refuse_m(&m, "postgres_changes", &reason),
        };
        let presence_key = match config["presence"]["key"].as_str() {
            Some(key) if !key.is_empty() => key.to_string(),
            _ => uuid::Uuid::new_v4().to_string(),
        };
        let key = super::hub::key(&m.topic, private);
        let shared = self.conn.shared.clone();
        if let Some(earlier) = self.channels.get(&m.topic) {
            self.hub_leave(&earlier.key);
        }
        shared.bridge_ready().await;
        shared.load_presence(&self.conn.state, &key).await;
        let member = Member {
            tx: self.tx.clone(),
            kill: self.kill.clone(),
            join_ref: m.join_ref.as_deref().map(Arc::from),
            receive_own: config["broadcast"]["self"].as_bool() == Some(true),
            broadcasts: access.as_ref().is_none_or(|a| a.broadcast_read),
            // Clients before `enabled` existed always received presence.
            presence: config["presence"]["enabled"].as_bool().unwrap_or(true)
                && access.as_ref().is_none_or(|a| a.presence_read),
        };
        let listed: Vec<Value> = bindings.iter().map(|(r, b)| r.reply(b.id)).collect();
        let reply = protocol::reply_ok(json!({ "postgres_changes": listed }));
        let reply =
            protocol::encode(self.conn.vsn, m.join_ref.as_deref(), m.msg_ref.as_deref(), &m.topic, "phx_reply", &reply);
        let expires = expiry(&caller);
        let with_changes = !bindings.is_empty();
        if with_changes {
            // Before the reply: a change committed once the client is
            // subscribed finds the channel here.
            shared.changes.subscribe(
                self.id,
                self.conn.vsn,
                &key,
                &m.topic,
                m.join_ref.as_deref().map(Arc::from),
                self.tx.clone(),
                self.kill.clone(),
                bindings.into_iter().map(|(_, b)| b).collect(),
                &caller,
                expires,
            );
        }
        shared.hub.join(&key, self.id, member, reply);
        if with_changes {
            let system = json!({ "extension": "postgres_changes", "status": "ok",
                "message": "Subscribed to PostgreSQL", "channel": sub_topic });
            self.send(m.join_ref.as_deref(), None, &m.topic, "system", &system);
        }
        if let (Some(replay), true) =
            (config["broadcast"]["replay"].as_object(), access.as_ref().is_some_and(|a| a.broadcast_read))
        {
            let since = replay.get("since").and_then(Value::as_i64).unwrap_or(0);
            let limit = replay.get("limit").and_then(Value::as_i64).unwrap_or(REPLAY_MAX).clamp(0, REPLAY_MAX);
            match self.replayed(sub_topic, since, limit).await {
                Ok(rows) => {
                    for (id, event, body) in rows {
                        let meta = json!({ "replayed": true, "id": id });
                        match body {
                            Body::Json(payload) => {
                                let mut message = protocol::broadcast_payload(&event, &payload);
                                message["meta"] = meta;
                                self.send(m.join_ref.as_deref(), None, &m.topic, "broadcast", &message);
                            }
                            // vsn 1.0.0 has no binary frames: skipped, as Supabase does.
                            Body::Binary(bytes) if self.conn.vsn == Vsn::V2 => {
                                let frame =
                                    protocol::encode_binary_broadcast(&m.topic, &event, &meta.to_string(), &bytes);
                                if let Some(frame) = frame {
                                    self.queue(Outgoing::Binary(frame));
                                }
                            }
                            Body::Binary(_) => {}
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "replaying a private channel's messages failed"),
            }
        }
        let ack = config["broadcast"]["ack"].as_bool() == Some(true);
        let (may_send, may_track) = access.as_ref().map_or((true, true), |a| (a.broadcast_write, a.presence_write));
        let role = caller.role().to_string();
        let joined = Joined {
            key,
            private,
            join_ref: m.join_ref,
            ack,
            presence_key,
            may_send,
            may_track,
            access,
            role,
            expires,
        };
        self.channels.insert(m.topic, joined);
    }

    /// A join's `config.postgres_changes`, each binding checked (its table
    /// exists, the caller's role may SELECT it, its filter parses against
    /// its columns); an error is the join's refusal reason.
    async fn postgres_bindings(
        &self,
        caller: &Caller,
        requested: &Value,
    ) -> Result<Vec<(super::changes::Requested, super::changes::Binding)>, String> {
        let list = match requested {
            Value::Null => return Ok(vec![]),
            Value::Array(list) => list,
            _ => return Err("MalformedMessage: config.postgres_changes must be an array".into()),
        };
        let mut out = Vec::with_capacity(list.len());
        for r in list {
            let r = super::changes::Requested::parse(r)
                .map_err(|e| format!("Unable to subscribe to changes with given parameters: {e}"))?;
            let columns = match (&r.table, r.schema.as_str()) {
                (Some(table), schema) if schema != "*" => {
                    let sql = "SELECT fluxbase.realtime_subscription($1::jsonb, $2, $3)";
                    let row =
                        query_one(&self.conn.state, sql, &[&*caller.claims, &schema, table]).await.map_err(|e| {
                            tracing::warn!(error = %e, "checking a postgres_changes binding failed");
                            "UnableToConnectToProject: the binding's table could not be checked".to_string()
                        })?;
                    let v: Value = row.get(0);
                    if let Some(e) = v["error"].as_str() {
                        return Err(e.to_string());
                    }
                    Some(
                        v["columns"]
                            .as_object()
                            .into_iter()
                            .flatten()
                            .map(|(k, t)| (k.clone(), t.as_str().unwrap_or("").to_string()))
                            .collect::<HashMap<String, String>>(),
                    )
                }
                _ => None,
            };
            let binding = self
                .conn
                .shared
                .changes
                .binding(&r, columns.as_ref())
                .map_err(|e| format!("Unable to subscribe to changes with given parameters: {e}"))?;
            out.push((r, binding));
        }
        Ok(out)
    }

    /// Stored broadcasts of a private channel since `since` (ms since the
    /// epoch), oldest first, at most `limit`: JSON or binary payloads.
    async fn replayed(&self, sub_topic: &str, since: i64, limit: i64) -> Result<Vec<(String, String, Body)>, String> {
        let sql = "SELECT id::text, event, payload, binary_payload FROM fluxbase.realtime_replay($1, $2, $3::int)";
        let rows = query(&self.conn.state, sql, &[&sub_topic, &since, &(limit as i32)]).await?;
        Ok(rows
            .iter()
            .map(|r| {
                let body = match r.get::<_, Option<Vec<u8>>>(3) {
                    Some(bytes) => Body::Binary(bytes.into()),
                    None => Body::Json(r.get::<_, Option<Value>>(2).unwrap_or(Value::Null)),
                };
                (r.get(0), r.get(1), body)
            })
            .collect())
    }

    /// Leaves a hub topic; presence it had there leaves the other proxies too.
    fn hub_leave(&self, key: &str) {
        self.conn.shared.changes.unsubscribe(self.id, key);
        if self.conn.shared.hub.leave(key, self.id) {
            let out = PresenceOut { topic: key.to_string(), socket: self.id, tracked: None };
            self.conn.shared.presence_changed(out);
        }
    }

    /// Supabase Realtime's check of a private channel, as `caller`.
    async fn authorize(&self, caller: &Caller, sub_topic: &str) -> Result<Access, String> {
        let sql = "SELECT fluxbase.realtime_authorize($1::jsonb, $2)";
        let row = query_one(&self.conn.state, sql, &[&*caller.claims, &sub_topic]).await?;
        serde_json::from_value(row.get::<_, Value>(0)).map_err(|e| e.to_string())
    }

    fn leave(&mut self, m: &Message) {
        let joined = self.channels.remove(&m.topic);
        if let Some(joined) = &joined {
            self.hub_leave(&joined.key);
        }
        self.reply(m, protocol::reply_ok(json!({})));
        let join_ref = joined.and_then(|j| j.join_ref);
        self.send(join_ref.as_deref(), join_ref.as_deref(), &m.topic, "phx_close", &json!({}));
    }

    /// A new token for the channel, as Supabase Realtime takes it: one that
    /// does not verify or has expired closes the channel with a `system`
    /// message; on a private channel the policies are checked again as the
    /// new caller, and a caller they no longer let read closes it too
    /// (Supabase's reasons). `postgres_changes` bindings are checked again
    /// when the role changed; their changes are checked as the new caller.
    async fn access_token(&mut self, m: &Message) {
        let Some(token) = m.payload.get("access_token").and_then(Value::as_str) else {
            return self.refuse_m(m, "malformed", "MalformedMessage: access_token must be a string");
        };
        // An API key is no user token: Supabase ignores it here.
        if token.starts_with("sb_") {
            return;
        }
        let caller = match self.verify_token(token) {
            Ok(caller) => caller,
            Err(reason) => {
                let (code, reason) = match expired_seconds_ago(token) {
                    Some(ago) if reason.contains("JWT expired") => {
                        ("token_expired", format!("Token has expired {ago} seconds ago"))
                    }
                    _ => ("token", reason),
                };
                self.conn.state.metrics.realtime_refused(code);
                return self.close_channel(&m.topic, &reason);
            }
        };
        let Some((private, previous, role)) =
            self.channels.get(&m.topic).map(|j| (j.private, j.access, j.role.clone()))
        else {
            return;
        };
        let sub_topic = m.topic.strip_prefix("realtime:").unwrap_or(&m.topic).to_string();
        let access = if private {
            match self.authorize(&caller, &sub_topic).await {
                Ok(a) if !a.broadcast_read && !a.presence_read => {
                    self.conn.state.metrics.realtime_refused("unauthorized");
                    let reason = format!("You do not have permissions to read from this Channel topic: {sub_topic}");
                    return self.close_channel(&m.topic, &reason);
                }
                Ok(a)
                    if previous.is_some_and(|p| {
                        (p.broadcast_read && !a.broadcast_read) || (p.presence_read && !a.presence_read)
                    }) =>
                {
                    self.conn.state.metrics.realtime_refused("unauthorized");
                    let reason = format!("You no longer have permission to read from this Channel topic: {sub_topic}");
                    return self.close_channel(&m.topic, &reason);
                }
                Ok(a) => Some(a),
                Err(e) => {
                    tracing::warn!(error = %e, "private channel authorisation failed");
                    return self.close_channel(&m.topic, "Realtime was unable to connect to the project database");
                }
            }
        } else {
            None
        };
        let shared = self.conn.shared.clone();
        let Some(joined) = self.channels.get_mut(&m.topic) else { return };
        joined.expires = expiry(&caller);
        if let Some(a) = access {
            joined.access = Some(a);
            joined.may_send = a.broadcast_write;
            joined.may_track = a.presence_write;
            shared.hub.set_reads(&joined.key, self.id, a.broadcast_read, a.presence_read);
        }
        let (key, expires) = (joined.key.clone(), joined.expires);
        joined.role = caller.role().to_string();
        if !shared.changes.set_caller(self.id, &key, &caller, expires) || role == caller.role() {
            return;
        }
        // Another role: its bindings must name tables it may SELECT.
        let bindings = shared.changes.requested(self.id, &key);
        if let Err(reason) = self.postgres_bindings(&caller, &Value::Array(bindings)).await {
            shared.changes.unsubscribe(self.id, &key);
            let join_ref = self.channels.get(&m.topic).and_then(|j| j.join_ref.clone());
            let system = json!({ "extension": "postgres_changes", "status": "error", "message": reason,
                "channel": sub_topic });
            self.send(join_ref.as_deref(), None, &m.topic, "system", &system);
        }
    }

    /// Closes the channels whose token expired, each with a `system`
    /// message, as Supabase Realtime does.
    fn expire_channels(&mut self) {
        let now = Instant::now();
        let expired: Vec<(String, Instant)> = self
            .channels
            .iter()
            .filter_map(|(topic, j)| j.expires.filter(|at| *at <= now).map(|at| (topic.clone(), at)))
            .collect();
        for (topic, at) in expired {
            self.conn.state.metrics.realtime_refused("token_expired");
            let reason = format!("Token has expired {} seconds ago", now.duration_since(at).as_secs());
            self.close_channel(&topic, &reason);
        }
    }

    /// A `system` error message on the channel, then `phx_close`; the
    /// socket leaves it.
    fn close_channel(&mut self, topic: &str, reason: &str) {
        let sub_topic = topic.strip_prefix("realtime:").unwrap_or(topic).to_string();
        let join_ref = self.channels.get(topic).and_then(|j| j.join_ref.clone());
        let system = json!({ "status": "error", "extension": "system", "message": reason, "channel": sub_topic });
        self.send(join_ref.as_deref(), None, topic, "system", &system);
        if let Some(joined) = self.channels.remove(topic) {
            self.hub_leave(&joined.key);
        }
        self.send(join_ref.as_deref(), join_ref.as_deref(), topic, "phx_close", &json!({}));
    }

    /// Checks an event's rate and size; refuses (and says why) if over.
    fn admit(&mut self, m: &Message, size: usize) -> bool {
        let limits = self.config().clone();
        if !self.events.allow(limits.max_events_per_second) {
            self.refuse_m(m, "event_rate", reason::TOO_MANY_EVENTS);
            return false;
        }
        if size > limits.max_payload_bytes {
            let reason = format!(
                "PayloadTooLarge: the payload is {size} bytes, more than this server's limit of {} bytes",
                limits.max_payload_bytes
            );
            self.refuse_m(m, "payload_size", &reason);
            return false;
        }
        true
    }

    async fn on_broadcast(&mut self, m: &Message, event: String, body: Body) {
        let Some((ack, key, private, may_send)) =
            self.channels.get(&m.topic).map(|j| (j.ack, j.key.clone(), j.private, j.may_send))
        else {
            return self.refuse_m(m, "unmatched_topic", reason::UNMATCHED_TOPIC);
        };
        if !may_send {
            return self.refuse_m(m, "unauthorized", reason::CANNOT_WRITE);
        }
        let size = match &body {
            Body::Json(v) => v.to_string().len(),
            Body::Binary(b) => b.len(),
        };
        if !self.admit(m, size) {
            return;
        }
        let shared = self.conn.shared.clone();
        let envelope = shared.envelope(&m.topic, private, &event, &body);
        if envelope.len() > NOTIFY_MAX {
            let reason = format!(
                "PayloadTooLarge: the message is {} bytes with its topic and event, more than {NOTIFY_MAX}",
                envelope.len()
            );
            return self.refuse_m(m, "payload_size", &reason);
        }
        let state = self.conn.state.clone();
        state.metrics.realtime_broadcast_sent();
        shared.hub.broadcast(&key, Some(self.id), event, body);
        let sent = query_one(&state, "SELECT pg_notify($1, $2)", &[&CHANNEL, &envelope]).await;
        match sent {
            Ok(_) if ack => self.reply(m, protocol::reply_ok(json!({}))),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "broadcast not sent to other proxies");
                if ack {
                    self.refuse_m(
                        m,
                        "database",
                        "DatabaseConnectionIssue: the broadcast reached this server's subscribers only",
                    );
                }
            }
        }
    }

    fn presence(&mut self, m: &Message) {
        let shared = self.conn.shared.clone();
        let hub = &shared.hub;
        let Some((key, may_track)) = self.channels.get(&m.topic).map(|j| (j.key.clone(), j.may_track)) else {
            return self.refuse_m(m, "unmatched_topic", reason::UNMATCHED_TOPIC);
        };
        match m.payload.get("event").and_then(Value::as_str) {
            Some("track") => {
                let payload = match m.payload.get("payload") {
                    None | Some(Value::Null) => Map::new(),
                    Some(Value::Object(o)) => o.clone(),
                    Some(_) => {
                        return self.refuse_m(m, "malformed", "MalformedMessage: a presence payload must be an object")
                    }
                };
                if !self.admit(m, Value::Object(payload.clone()).to_string().len()) {
                    return;
                }
                if !may_track {
                    return self.refuse_m(m, "unauthorized", reason::CANNOT_WRITE);
                }
                let presence_key = self.channels.get(&m.topic).map(|j| j.presence_key.clone()).unwrap_or_default();
                if let Some(phx_ref) = hub.track(&key, self.id, &presence_key, payload.clone()) {
                    let tracked = Some((presence_key, phx_ref, payload));
                    shared.presence_changed(PresenceOut { topic: key, socket: self.id, tracked });
                }
                self.reply(m, protocol::reply_ok(json!({})));
            }
            Some("untrack") => {
                if hub.untrack(&key, self.id) {
                    shared.presence_changed(PresenceOut { topic: key, socket: self.id, tracked: None });
                }
                self.reply(m, protocol::reply_ok(json!({})));
            }
            _ => self.refuse_m(m, "unknown_event", "UnknownPresenceEvent: presence events are track and untrack"),
        }
    }
}
