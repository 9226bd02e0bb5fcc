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
    /// Close the socket with this code and reason.
    Close(u16, String),
    /// An event shared by every recipient of a fan-out.
    Event { join_ref: Option<Arc<str>>, event: Arc<Event> },
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

    /// Removes `socket`'s metas; the `leaves` of a diff, if any.
    fn drop_presence(&mut self, socket: SocketId) -> Map<String, Value> {
        let mut leaves = Map::new();
        self.presence.retain(|key, metas| {
            let (gone, kept): (Vec<Meta>, Vec<Meta>) =
                std::mem::take(metas).into_iter().partition(|m| m.socket == socket);
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

#[derive(Default)]
pub struct Hub {
    topics: Mutex<HashMap<String, Topic>>,
    next_socket: AtomicU64,
    next_ref: AtomicU64,
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
    pub fn leave(&self, topic: &str, socket: SocketId) {
        let (recipients, diff) = {
            let mut topics = self.lock();
            let Some(t) = topics.get_mut(topic) else { return };
            t.members.remove(&socket);
            let leaves = t.drop_presence(socket);
            let recipients = if leaves.is_empty() { vec![] } else { presence_recipients(t) };
            if t.members.is_empty() && t.presence.is_empty() {
                topics.remove(topic);
            }
            (recipients, json!({ "joins": {}, "leaves": leaves }))
        };
        deliver(recipients, &Arc::new(Event { topic: client_topic(topic).into(), kind: EventKind::PresenceDiff(diff) }))
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
        deliver(recipients, &Arc::new(Event { topic: client_topic(topic).into(), kind: EventKind::Broadcast { event, body } }))
    }

    /// Tracks (or re-tracks) `socket` under `key`; the sender starts
    /// receiving presence too.
    pub fn track(&self, topic: &str, socket: SocketId, key: &str, payload: Map<String, Value>) {
        let phx_ref = format!("F{:x}", self.next_ref.fetch_add(1, Ordering::Relaxed));
        let (recipients, diff) = {
            let mut topics = self.lock();
            let Some(t) = topics.get_mut(topic) else { return };
            if let Some(m) = t.members.get_mut(&socket) {
                m.presence = true;
            }
            let mut leaves = Map::new();
            let metas = t.presence.entry(key.to_string()).or_default();
            let prev = metas.iter().position(|m| m.socket == socket).map(|i| metas.remove(i));
            let meta = Meta { phx_ref, socket, payload };
            let joined = meta.to_json(prev.as_ref().map(|p| p.phx_ref.as_str()));
            if let Some(prev) = &prev {
                leaves.insert(key.into(), json!({ "metas": [prev.to_json(None)] }));
            }
            metas.push(meta);
            (presence_recipients(t), json!({ "joins": { key: { "metas": [joined] } }, "leaves": leaves }))
        };
        deliver(recipients, &Arc::new(Event { topic: client_topic(topic).into(), kind: EventKind::PresenceDiff(diff) }))
    }

    pub fn untrack(&self, topic: &str, socket: SocketId) {
        let (recipients, diff) = {
            let mut topics = self.lock();
            let Some(t) = topics.get_mut(topic) else { return };
            let leaves = t.drop_presence(socket);
            if leaves.is_empty() {
                return;
            }
            (presence_recipients(t), json!({ "joins": {}, "leaves": leaves }))
        };
        deliver(recipients, &Arc::new(Event { topic: client_topic(topic).into(), kind: EventKind::PresenceDiff(diff) }))
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
        (Member { tx, kill: CancellationToken::new(), join_ref: Some("1".into()), receive_own, broadcasts: true, presence: true }, rx)
    }

    fn event_names(rx: &mut mpsc::Receiver<Outgoing>) -> Vec<String> {
        let mut names = vec![];
        while let Ok(o) = rx.try_recv() {
            names.push(match o {
                Outgoing::Text(_) => "reply".into(),
                Outgoing::Close(..) => "close".into(),
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
            Ok(Outgoing::Event { event, .. }) => assert_eq!(event.topic, "realtime:room", "clients see their own topic"),
            _ => panic!("an event"),
        }
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
