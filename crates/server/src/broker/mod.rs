//! The seam between nodes: where the hub hands on what its own store committed (and
//! what else other nodes must know: rule changes, evictions, presence, typing), and
//! hears what other nodes say, to fan it out to its own members without storing it
//! again. Messages keep the seq their store gave them, so a broker may lose or reorder
//! events and nodes still deliver each room in seq order (they hold back what comes
//! early and fill gaps from the store).
//!
//! One node needs nobody to talk to ([`Solo`], which costs nothing per commit). Hubs in
//! one process share an [`InProcessBroker`] (the tests run several hubs that way); the
//! cluster's Redis and NATS brokers plug in behind the same trait and carry events as
//! [`encode`]d bytes.

use std::sync::Arc;

use bavard_protocol::{Message, RemovedBecause, RoomName, Timestamp, User};
use futures_util::stream::{self, BoxStream, StreamExt};
use serde::{Deserialize, Serialize};
#[cfg(test)]
use tokio::sync::broadcast;

mod nats;
mod redis;

pub use self::nats::NatsBroker;
pub use self::redis::RedisBroker;

/// Names one node of a cluster; a hub skips the events it published itself.
pub type NodeId = Arc<str>;

/// What one node tells the others.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterEvent {
    /// The node that says it.
    pub origin: NodeId,
    /// What it says.
    pub body: ClusterBody,
}

/// The things nodes tell each other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ClusterBody {
    /// Messages the origin's store committed, in seq order within each room.
    Messages {
        /// The messages.
        messages: Vec<Arc<Message>>,
    },
    /// A room's rules changed (roles, sanctions, kind, settings): read them again.
    RulesChanged {
        /// The room.
        room: RoomName,
    },
    /// Take `user`'s connections out of `room` (a kick, a ban, a lost membership), or,
    /// without a user, every connection of a user without a role (the room became
    /// private).
    Evict {
        /// The room.
        room: RoomName,
        /// The user's id; None: everyone without a role in the room.
        user: Option<String>,
        /// Why.
        action: RemovedBecause,
        /// The moderator's reason.
        reason: Option<String>,
        /// Until when the user is kept out.
        until: Option<Timestamp>,
    },
    /// The users online on the origin, per room: all its rooms (`full`, every third of
    /// a lease) or those that changed. It also renews the origin's lease (a node not
    /// heard from for a lease is counted as gone, with its users).
    Presence {
        /// Rooms with the origin's users online there (none: nobody there any more).
        rooms: Vec<(RoomName, Vec<User>)>,
        /// Whether `rooms` lists every room the origin has users in.
        full: bool,
        /// How long this lasts without renewal, in milliseconds.
        lease_ms: u64,
    },
    /// `user` types in `room`.
    Typing {
        /// The room.
        room: RoomName,
        /// Who types.
        user: User,
    },
    /// An event for the room's JSON members (an edit, a reaction, a read position...),
    /// as its JSON frame; only for `only_user`'s connections when set.
    RoomEvent {
        /// The room.
        room: RoomName,
        /// The frame, encoded.
        event: String,
        /// Whose connections alone receive it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        only_user: Option<String>,
    },
}

/// What a node hears from its broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Heard {
    /// An event of some node (this one's own included: skip them).
    Event(ClusterEvent),
    /// The link to the broker was lost and is back: events published meanwhile may be
    /// lost, so every room must catch up from the store.
    Reconnected,
}

/// Carries events between nodes.
pub trait Broker: Send + Sync + 'static {
    /// Hands an event to every node. Never waits: a broker that cannot keep up (or is
    /// cut off) drops events, and nodes fill the gaps from the store.
    fn publish(&self, event: ClusterEvent);

    /// Hands messages `origin` just committed to every node (what the dispatcher calls
    /// once per commit batch; [`Solo`] makes it free).
    fn publish_messages(&self, origin: &NodeId, messages: &[Arc<Message>]) {
        self.publish(ClusterEvent {
            origin: Arc::clone(origin),
            body: ClusterBody::Messages { messages: messages.to_vec() },
        });
    }

    /// What this node hears from now on, in the order it hears it.
    fn subscribe(&self) -> BoxStream<'static, Heard>;

    /// Whether this node is connected to the other nodes now (`/readyz`).
    fn connected(&self) -> bool;

    /// Whether other nodes may exist (false for [`Solo`]: then the hub skips the work
    /// only a cluster needs, such as presence leases).
    fn clustered(&self) -> bool {
        true
    }
}

/// The bytes of an event on a networked broker (JSON, so operators can read it).
pub fn encode(event: &ClusterEvent) -> Vec<u8> {
    serde_json::to_vec(event).unwrap_or_default()
}

/// An event read from a networked broker; None (logged) for bytes that are not one,
/// from a newer or foreign publisher.
pub fn decode(bytes: &[u8]) -> Option<ClusterEvent> {
    match serde_json::from_slice(bytes) {
        Ok(event) => Some(event),
        Err(e) => {
            tracing::warn!(error = %e, "ignoring a broker event this node cannot read");
            None
        }
    }
}

/// A node alone: nothing to publish to, nothing to hear.
#[derive(Debug, Default)]
pub struct Solo;

impl Broker for Solo {
    fn publish(&self, _event: ClusterEvent) {}

    fn publish_messages(&self, _origin: &NodeId, _messages: &[Arc<Message>]) {}

    fn subscribe(&self) -> BoxStream<'static, Heard> {
        stream::pending().boxed()
    }

    fn connected(&self) -> bool {
        true
    }

    fn clustered(&self) -> bool {
        false
    }
}

/// Nodes in one process, connected by a broadcast channel (the tests' cluster: one
/// server process runs one node, with [`Solo`] or a networked broker).
#[cfg(test)]
#[derive(Debug)]
pub struct InProcessBroker {
    events: broadcast::Sender<ClusterEvent>,
}

#[cfg(test)]
impl InProcessBroker {
    /// A broker that holds up to `capacity` events for its slowest subscriber; beyond
    /// that, that subscriber misses the oldest ones (and hears `Reconnected`).
    pub fn new(capacity: usize) -> Self {
        Self { events: broadcast::channel(capacity.max(1)).0 }
    }
}

#[cfg(test)]
impl Broker for InProcessBroker {
    fn publish(&self, event: ClusterEvent) {
        let _nobody_listens = self.events.send(event);
    }

    fn subscribe(&self) -> BoxStream<'static, Heard> {
        stream::unfold(self.events.subscribe(), |mut events| async move {
            match events.recv().await {
                Ok(event) => Some((Heard::Event(event), events)),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "this node fell behind the in-process broker and missed events");
                    Some((Heard::Reconnected, events))
                }
                Err(broadcast::error::RecvError::Closed) => None,
            }
        })
        .boxed()
    }

    fn connected(&self) -> bool {
        true
    }
}

/// Serializes the tests that run private broker servers: a test that kills its server
/// frees the port, which another test's new server could take while the first test's
/// brokers still reconnect to it (the nats tests failed 2 times in 80 that way when run
/// in parallel).
#[cfg(test)]
pub(crate) async fn one_private_server_test_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_survive_the_wire_format() {
        let message = Message {
            key: Some("k".into()),
            ..Message::new(
                RoomName::new("r").unwrap(),
                7,
                Timestamp(1_000),
                User { id: "u".into(), name: "U".into() },
                "hé".into(),
            )
        };
        for body in [
            ClusterBody::Messages { messages: vec![Arc::new(message)] },
            ClusterBody::RulesChanged { room: RoomName::new("r").unwrap() },
            ClusterBody::Presence { rooms: vec![(RoomName::new("r").unwrap(), vec![])], full: true, lease_ms: 15_000 },
        ] {
            let event = ClusterEvent { origin: "n1".into(), body };
            assert_eq!(decode(&encode(&event)), Some(event));
        }
        assert_eq!(decode(b"{\"origin\":\"n1\",\"body\":{\"kind\":\"from_the_future\"}}"), None);
    }
}
