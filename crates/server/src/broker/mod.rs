//! The seam between nodes: where the hub hands on what its own store committed, and
//! hears what other nodes' stores committed, to fan it out to its own members without
//! storing it again. The broker carries committed messages only: order is the store's
//! (each message keeps its seq), so a broker may lose or reorder events and nodes
//! still deliver each room in seq order.
//!
//! One node needs nobody to talk to ([`Solo`], which costs nothing per commit). Hubs in
//! one process share an [`InProcessBroker`] (the tests run two hubs that way); the
//! cluster's Redis and NATS brokers plug in behind the same trait.

use std::sync::Arc;

use bavard_protocol::Message;
use futures_util::stream::{self, BoxStream, StreamExt};
#[cfg(test)]
use tokio::sync::broadcast;

/// Names one node of a cluster; a hub skips the events it published itself.
pub type NodeId = Arc<str>;

/// Messages one node committed, as other nodes hear of them.
#[derive(Debug, Clone)]
pub struct ClusterEvent {
    /// The node whose store committed them.
    pub origin: NodeId,
    /// In seq order within each room.
    pub messages: Arc<[Arc<Message>]>,
}

/// Carries committed messages between nodes.
pub trait Broker: Send + Sync + 'static {
    /// Hands messages `origin` just committed to every node. Never waits: a broker
    /// that cannot keep up drops events, and nodes fill the gap from the store.
    fn publish(&self, origin: &NodeId, messages: &[Arc<Message>]);

    /// Every event published from now on, by any node (this one included), in the
    /// order this node receives them.
    fn subscribe(&self) -> BoxStream<'static, ClusterEvent>;
}

/// A node alone: nothing to publish to, nothing to hear.
#[derive(Debug, Default)]
pub struct Solo;

impl Broker for Solo {
    fn publish(&self, _origin: &NodeId, _messages: &[Arc<Message>]) {}

    fn subscribe(&self) -> BoxStream<'static, ClusterEvent> {
        stream::pending().boxed()
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
    /// that, that subscriber misses the oldest ones (and logs how many).
    pub fn new(capacity: usize) -> Self {
        Self { events: broadcast::channel(capacity.max(1)).0 }
    }
}

#[cfg(test)]
impl Broker for InProcessBroker {
    fn publish(&self, origin: &NodeId, messages: &[Arc<Message>]) {
        let event = ClusterEvent { origin: Arc::clone(origin), messages: messages.into() };
        let _nobody_listens = self.events.send(event);
    }

    fn subscribe(&self) -> BoxStream<'static, ClusterEvent> {
        stream::unfold(self.events.subscribe(), |mut events| async move {
            loop {
                match events.recv().await {
                    Ok(event) => return Some((event, events)),
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "this node fell behind the in-process broker and missed events");
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
        .boxed()
    }
}
