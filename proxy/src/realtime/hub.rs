//! Who listens where on this proxy: topics, the sockets that joined them,
//! presence per topic, and fan-out. Fan-out copies the recipients under the
//! lock and queues to each socket's bounded send queue with `try_send`; no
//! lock is held while a socket is written. A socket whose queue is full is
//! a slow consumer: it is told to close, never waited for.
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::protocol::Body;

pub type SocketId = u64;

/// The hub's key of a channel. Public and private channels of one name are
/// separate, as in Supabase Realtime: a private one is keyed with a leading
/// control character no client topic can start with.
pub fn key(topic: &str, private: bool) -> String {
    if private {
        format!("\u{1}{topic}")
    } else {
        topic.to_string()
    }
}

/// The topic clients see for a hub key.
fn client_topic(key: &str) -> &str {
    key.strip_prefix('\u{1}').unwrap_or(key)
}

/// What a socket's writer sends; it encodes in the socket's protocol version.
pub enum Outgoing {
    /// A frame encoded for this socket already (replies).
    Text(String),
    /// A binary frame encoded for this socket already (replayed binary broadcasts).
    Binary(Vec<u8>),
    /// Close the socket with this code and reason.
    Close(u16, String),
    /// An event shared by every recipient of a fan-out.
    Event { join_ref: Option<Arc<str>>, event: Arc<Event> },
    /// A Postgres change (`data`, shared) for the channel's bindings `ids`.
    Change { join_ref: Option<Arc<str>>, topic: Arc<str>, ids: Arc<[u32]>, data: Arc<str> },
}

pub struct Event {
    pub topic: String,
    pub kind: EventKind,
}

pub enum EventKind {
    Broadcast { event: String, body: Body },
    PresenceDiff(Value),
    PresenceState(Value),
}

/// Another proxy's presence entry: `(origin, socket, key, phx_ref, payload)`.
pub type RemoteMeta = (Arc<str>, SocketId, String, String, Map<String, Value>);

/// A socket's place in a topic.
pub struct Member {
    pub tx: mpsc::Sender<Outgoing>,
    pub kill: CancellationToken,
    pub join_ref: Option<Arc<str>>,
    /// `config.broadcast.self`: receives its own broadcasts.
    pub receive_own: bool,
    /// Receives broadcasts (on a private channel: its SELECT policies allow
    /// reading `broadcast` messages).
    pub broadcasts: bool,
    /// Receives `presence_state`/`presence_diff`.
    pub presence: bool,
}

struct Meta {
    phx_ref: String,
    /// The proxy whose socket tracked it; `None`: this one.
    origin: Option<Arc<str>>,
    socket: SocketId,
    payload: Map<String, Value>,
}

impl Meta {
    fn to_json(&self, prev: Option<&str>) -> Value {
        let mut m = self.payload.clone();
        m.insert("phx_ref".into(), Value::String(self.phx_ref.clone()));
        if let Some(prev) = prev {
            m.insert("phx_ref_prev".into(), Value::String(prev.into()));
        }
        Value::Object(m)
    }
}

#[derive(Default)]
struct Topic {
    members: HashMap<SocketId, Member>,
    /// Presence key → its metas (one per tracking socket).
    presence: HashMap<String, Vec<Meta>>,
}

impl Topic {
    fn presence_state(&self) -> Value {
        let state: Map<String, Value> = self
            .presence
            .iter()
            .map(|(key, metas)| {
                (key.clone(), json!({ "metas": metas.iter().map(|m| m.to_json(None)).collect::<Vec<_>>() }))
            })
            .collect();
        Value::Object(state)
    }

    /// Removes the metas of `socket` of `origin`; the `leaves` of a diff, if any.
    fn drop_presence(&mut self, origin: Option<&str>, socket: SocketId) -> Map<String, Value> {
        self.drop_where(|m| m.socket == socket && m.origin.as_deref() == origin)
    }

    fn drop_where(&mut self, gone: impl Fn(&Meta) -> bool) -> Map<String, Value> {
        let mut leaves = Map::new();
        self.presence.retain(|key, metas| {
            let (gone, kept): (Vec<Meta>, Vec<Meta>) = std::mem::take(metas).into_iter().partition(&gone);
            if !gone.is_empty() {
                leaves
                    .insert(key.clone(), json!({ "metas": gone.iter().map(|m| m.to_json(None)).collect::<Vec<_>>() }));
            }
            *metas = kept;
            !metas.is_empty()
        });
        leaves
    }
}

pub struct Hub {
    topics: Mutex<HashMap<String, Topic>>,
    next_socket: AtomicU64,
    next_ref: AtomicU64,
    /// Makes this proxy's `phx_ref`s unlike other proxies' (clients tell
    /// metas apart by them).
    ref_base: u32,
}

impl Default for Hub {
    fn default() -> Self {
        Hub {
            topics: Mutex::default(),
            next_socket: AtomicU64::new(0),
            next_ref: AtomicU64::new(0),
            ref_base: rand::random(),
        }
    }
}

/// Queues to each recipient; a full queue marks a slow consumer, whose
/// writer then closes it.
fn deliver(recipients: Vec<(mpsc::Sender<Outgoing>, CancellationToken, Option<Arc<str>>)>, event: &Arc<Event>) {
    for (tx, kill, join_ref) in recipients {
        if let Err(mpsc::error::TrySendError::Full(_)) = tx.try_send(Outgoing::Event { join_ref, event: event.clone() })
        {
            kill.cancel();
        }
    }
}

impl Hub {
    pub fn socket_id(&self) -> SocketId {
        self.next_socket.fetch_add(1, Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Topic>> {
        self.topics.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Joins `socket` to `topic` (replacing an earlier join of it) and
    /// queues `reply`, then the presence state if the member wants it, in
    /// that order, before any later event of the topic.
    pub fn join(&self, topic: &str, socket: SocketId, member: Member, reply: String) {
        let mut topics = self.lock();
        let t = topics.entry(topic.to_string()).or_default();
        let state = member.presence.then(|| t.presence_state());
        if member.tx.try_send(Outgoing::Text(reply)).is_err() {
            member.kill.cancel();
        }
        if let Some(state) = state {
            let event = Arc::new(Event { topic: client_topic(topic).into(), kind: EventKind::PresenceState(state) });
            if member.tx.try_send(Outgoing::Event { join_ref: member.join_ref.clone(), event }).is_err() {
                member.kill.cancel();
            }
        }
        t.members.insert(socket, member);
    }

    /// Removes `socket` from `topic`; its presence leaves are announced.
    /// True if it was present (other proxies are to be told).
    pub fn leave(&self, topic: &str, socket: SocketId) -> bool {
        let (recipients, diff, was_present) = {
            let mut topics = self.lock();
            let Some(t) = topics.get_mut(topic) else { return false };
            t.members.remove(&socket);
            let leaves = t.drop_presence(None, socket);
            let was_present = !leaves.is_empty();
            let recipients = if leaves.is_empty() { vec![] } else { presence_recipients(t) };
            // Remote presence is kept only while this proxy has members.
            if t.members.is_empty() {
                topics.remove(topic);
            }
            (recipients, json!({ "joins": {}, "leaves": leaves }), was_present)
        };
        deliver(
            recipients,
            &Arc::new(Event { topic: client_topic(topic).into(), kind: EventKind::PresenceDiff(diff) }),
        );
        was_present
    }

    /// A private channel's policies were checked again (a new
    /// `access_token`): what the member may receive from now on.
    pub fn set_reads(&self, topic: &str, socket: SocketId, broadcasts: bool, presence: bool) {
        if let Some(m) = self.lock().get_mut(topic).and_then(|t| t.members.get_mut(&socket)) {
            m.broadcasts = broadcasts;
            m.presence = m.presence && presence;
        }
    }

    /// Whether this proxy has members in `topic` (and so its remote presence).
    pub fn has_topic(&self, topic: &str) -> bool {
        self.lock().contains_key(topic)
    }

    /// Other proxies' presence in `topic`, loaded before this proxy's first
    /// member joins it: `(origin, socket, key, phx_ref, payload)`.
    pub fn load_remote(&self, topic: &str, entries: Vec<RemoteMeta>) {
        let mut topics = self.lock();
        let t = topics.entry(topic.to_string()).or_default();
        for (origin, socket, key, phx_ref, payload) in entries {
            t.drop_presence(Some(&origin), socket);
            t.presence.entry(key).or_default().push(Meta { phx_ref, origin: Some(origin), socket, payload });
        }
    }

    /// Another proxy's socket tracked (`Some`) or left (`None`) presence in
    /// `topic`; ignored unless this proxy has members there.
    pub fn remote_presence(
        &self,
        topic: &str,
        origin: Arc<str>,
        socket: SocketId,
        joined: Option<(String, String, Map<String, Value>)>,
    ) {
        let (recipients, diff) = {
            let mut topics = self.lock();
            let Some(t) = topics.get_mut(topic) else { return };
            let leaves = t.drop_presence(Some(&origin), socket);
            let mut joins = Map::new();
            if let Some((key, phx_ref, payload)) = joined {
                let meta = Meta { phx_ref, origin: Some(origin), socket, payload };
                joins.insert(key.clone(), json!({ "metas": [meta.to_json(None)] }));
                t.presence.entry(key).or_default().push(meta);
            }
            if leaves.is_empty() && joins.is_empty() {
                return;
            }
            (presence_recipients(t), json!({ "joins": joins, "leaves": leaves }))
        };
        deliver(recipients, &Arc::new(Event { topic: client_topic(topic).into(), kind: EventKind::PresenceDiff(diff) }))
    }

    /// A proxy is gone: its sockets leave every topic's presence here.
    pub fn drop_origin(&self, origin: &str) {
        let diffs: Vec<_> = {
            let mut topics = self.lock();
            topics
                .iter_mut()
                .filter_map(|(topic, t)| {
                    let leaves = t.drop_where(|m| m.origin.as_deref() == Some(origin));
                    (!leaves.is_empty())
                        .then(|| (topic.clone(), presence_recipients(t), json!({ "joins": {}, "leaves": leaves })))
                })
                .collect()
        };
        for (topic, recipients, diff) in diffs {
            deliver(
                recipients,
                &Arc::new(Event { topic: client_topic(&topic).into(), kind: EventKind::PresenceDiff(diff) }),
            );
        }
    }

    /// Sends a user broadcast to the topic's members on this proxy; `from`
    /// (the sender's socket) gets it only with `self`.
    pub fn broadcast(&self, topic: &str, from: Option<SocketId>, event: String, body: Body) {
        let recipients: Vec<_> = {
            let topics = self.lock();
            let Some(t) = topics.get(topic) else { return };
            t.members
                .iter()
                .filter(|(id, m)| m.broadcasts && (Some(**id) != from || m.receive_own))
                .map(|(_, m)| (m.tx.clone(), m.kill.clone(), m.join_ref.clone()))
                .collect()
        };
        deliver(
            recipients,
            &Arc::new(Event { topic: client_topic(topic).into(), kind: EventKind::Broadcast { event, body } }),
        )
    }

    /// Tracks (or re-tracks) `socket` under `key`; the sender starts
    /// receiving presence too. The new meta's `phx_ref`, for other proxies.
    pub fn track(&self, topic: &str, socket: SocketId, key: &str, payload: Map<String, Value>) -> Option<String> {
        let phx_ref = format!("F{:08x}{:x}", self.ref_base, self.next_ref.fetch_add(1, Ordering::Relaxed));
        let (recipients, diff) = {
            let mut topics = self.lock();
            let t = topics.get_mut(topic)?;
            if let Some(m) = t.members.get_mut(&socket) {
                m.presence = true;
            }
            let mut leaves = Map::new();
            let metas = t.presence.entry(key.to_string()).or_default();
            let prev = metas.iter().position(|m| m.socket == socket && m.origin.is_none()).map(|i| metas.remove(i));
            let meta = Meta { phx_ref: phx_ref.clone(), origin: None, socket, payload };
            let joined = meta.to_json(prev.as_ref().map(|p| p.phx_ref.as_str()));
            if let Some(prev) = &prev {
                leaves.insert(key.into(), json!({ "metas": [prev.to_json(None)] }));
            }
            metas.push(meta);
            (presence_recipients(t), json!({ "joins": { key: { "metas": [joined] } }, "leaves": leaves }))
        };
        deliver(
            recipients,
            &Arc::new(Event { topic: client_topic(topic).into(), kind: EventKind::PresenceDiff(diff) }),
        );
        Some(phx_ref)
    }

    /// True if `socket` was present (other proxies are to be told).
    pub fn untrack(&self, topic: &str, socket: SocketId) -> bool {
        let (recipients, diff) = {
            let mut topics = self.lock();
            let Some(t) = topics.get_mut(topic) else { return false };
            let leaves = t.drop_presence(None, socket);
            if leaves.is_empty() {
                return false;
            }
            (presence_recipients(t), json!({ "joins": {}, "leaves": leaves }))
        };
        deliver(
            recipients,
            &Arc::new(Event { topic: client_topic(topic).into(), kind: EventKind::PresenceDiff(diff) }),
        );
        true
    }
}

fn presence_recipients(t: &Topic) -> Vec<(mpsc::Sender<Outgoing>, CancellationToken, Option<Arc<str>>)> {
    t.members.values().filter(|m| m.presence).map(|m| (m.tx.clone(), m.kill.clone(), m.join_ref.clone())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(capacity: usize, receive_own: bool) -> (Member, mpsc::Receiver<Outgoing>) {
        let (tx, rx) = mpsc::channel(capacity);
        (
            Member {
                tx,
                kill: CancellationToken::new(),
                join_ref: Some("1".into()),
                receive_own,
                broadcasts: true,
                presence: true,
            },
            rx,
        )
    }

    fn event_names(rx: &mut mpsc::Receiver<Outgoing>) -> Vec<String> {
        let mut names = vec![];
        while let Ok(o) = rx.try_recv() {
            names.push(match o {
                Outgoing::Text(_) | Outgoing::Binary(_) => "reply".into(),
                Outgoing::Close(..) => "close".into(),
                Outgoing::Change { .. } => "postgres_changes".into(),
                Outgoing::Event { event, .. } => match &event.kind {
                    EventKind::Broadcast { event, .. } => format!("broadcast:{event}"),
                    EventKind::PresenceDiff(_) => "presence_diff".into(),
                    EventKind::PresenceState(_) => "presence_state".into(),
                },
            });
        }
        names
    }

    #[test]
    fn a_full_queue_cuts_off_that_socket_only() {
        let hub = Hub::default();
        let (slow, mut slow_rx) = member(2, false);
        let (fast, mut fast_rx) = member(64, false);
        let (slow_kill, fast_kill) = (slow.kill.clone(), fast.kill.clone());
        hub.join("t", 1, slow, "r".into());
        hub.join("t", 2, fast, "r".into());
        for i in 0..5 {
            hub.broadcast("t", None, format!("e{i}"), Body::Json(Value::Null));
        }
        assert!(slow_kill.is_cancelled(), "the socket whose queue filled is told to close");
        assert!(!fast_kill.is_cancelled());
        assert_eq!(event_names(&mut fast_rx).len(), 1 + 1 + 5, "reply, presence_state, five broadcasts");
        assert_eq!(event_names(&mut slow_rx), ["reply", "presence_state"]);
    }

    #[test]
    fn a_private_channel_is_not_the_public_one_of_the_same_name() {
        let hub = Hub::default();
        let (public, mut public_rx) = member(64, false);
        let (private, mut private_rx) = member(64, false);
        hub.join(&key("realtime:room", false), 1, public, "r".into());
        hub.join(&key("realtime:room", true), 2, private, "r".into());
        hub.broadcast(&key("realtime:room", true), None, "secret".into(), Body::Json(Value::Null));
        hub.broadcast(&key("realtime:room", false), None, "open".into(), Body::Json(Value::Null));
        assert_eq!(event_names(&mut public_rx), ["reply", "presence_state", "broadcast:open"]);
        assert_eq!(event_names(&mut private_rx), ["reply", "presence_state", "broadcast:secret"]);
        hub.broadcast(&key("realtime:room", true), None, "again".into(), Body::Json(Value::Null));
        match private_rx.try_recv() {
            Ok(Outgoing::Event { event, .. }) => {
                assert_eq!(event.topic, "realtime:room", "clients see their own topic")
            }
            _ => panic!("an event"),
        }
    }

    #[test]
    fn presence_of_other_proxies_joins_leaves_and_goes_with_its_proxy() {
        let hub = Hub::default();
        let (a, mut a_rx) = member(64, false);
        hub.load_remote("t", vec![("p2".into(), 7, "grace".into(), "R1".into(), Map::new())]);
        hub.join("t", 1, a, "r".into());
        match (a_rx.try_recv(), a_rx.try_recv()) {
            (Ok(Outgoing::Text(_)), Ok(Outgoing::Event { event, .. })) => match &event.kind {
                EventKind::PresenceState(state) => assert_eq!(state["grace"]["metas"][0]["phx_ref"], "R1"),
                _ => panic!("presence_state"),
            },
            _ => panic!("reply, then presence_state"),
        }
        hub.remote_presence("t", "p2".into(), 8, Some(("linus".into(), "R2".into(), Map::new())));
        hub.remote_presence("t", "p3".into(), 7, Some(("ada".into(), "R3".into(), Map::new())));
        hub.remote_presence("t", "p2".into(), 7, None);
        hub.remote_presence("elsewhere", "p2".into(), 9, Some(("x".into(), "R4".into(), Map::new())));
        assert_eq!(event_names(&mut a_rx), ["presence_diff", "presence_diff", "presence_diff"]);
        hub.drop_origin("p2");
        assert_eq!(event_names(&mut a_rx), ["presence_diff"], "p2's remaining socket leaves when p2 is gone");
        let topics = hub.lock();
        assert_eq!(topics["t"].presence.keys().collect::<Vec<_>>(), ["ada"], "p3's socket stays");
        assert!(!topics.contains_key("elsewhere"), "no members here: not kept");
    }

    #[test]
    fn self_presence_and_leaving() {
        let hub = Hub::default();
        let (a, mut a_rx) = member(64, true);
        let (b, mut b_rx) = member(64, false);
        hub.join("t", 1, a, "r".into());
        hub.join("t", 2, b, "r".into());
        hub.broadcast("t", Some(1), "mine".into(), Body::Json(Value::Null));
        hub.broadcast("t", Some(2), "theirs".into(), Body::Json(Value::Null));
        assert_eq!(event_names(&mut a_rx), ["reply", "presence_state", "broadcast:mine", "broadcast:theirs"]);
        assert_eq!(event_names(&mut b_rx), ["reply", "presence_state", "broadcast:mine"]);
        hub.track("t", 1, "ada", Map::new());
        hub.track("t", 1, "ada", Map::new());
        assert_eq!(hub.lock()["t"].presence["ada"].len(), 1, "tracking again replaces");
        hub.leave("t", 1);
        assert!(!hub.lock()["t"].presence.contains_key("ada"), "leaving drops presence");
        assert_eq!(event_names(&mut b_rx), ["presence_diff", "presence_diff", "presence_diff"]);
        hub.leave("t", 2);
        assert!(hub.lock().is_empty(), "an empty topic is forgotten");
    }
}
