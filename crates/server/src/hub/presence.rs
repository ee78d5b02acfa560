//! Presence across a cluster: who is online in each room on the other nodes, from
//! what they say, and for how long to believe them.
//!
//! Each node tells the others which users are online in which of its rooms: the rooms
//! whose users changed, at most once per [`PRESENCE_EVERY`], and all of its rooms every
//! third of a lease, which also renews its lease. A node not heard from for a lease
//! (`--presence-lease-secs`, 15 by default) is taken for dead, and its users stop
//! counting: no ghosts outlive the node that had them. The rooms turn what changes
//! into `presence` events (or occupancy counts) for their members.

use std::{
    collections::{HashMap, HashSet},
    sync::Mutex,
    time::{Duration, Instant},
};

use bavard_protocol::{RoomName, User};

use crate::broker::NodeId;

/// How often a node tells the others about the rooms whose users changed.
pub const PRESENCE_EVERY: Duration = Duration::from_secs(1);

/// What this node knows of the others' users.
pub(super) struct ClusterPresence {
    lease: Duration,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    nodes: HashMap<NodeId, NodeView>,
    /// Rooms whose local users changed since this node last told the others.
    dirty: HashSet<RoomName>,
}

/// One other node, as last heard.
struct NodeView {
    expires: Instant,
    rooms: HashMap<RoomName, Vec<User>>,
}

impl ClusterPresence {
    pub(super) fn new(lease: Duration) -> Self {
        Self { lease, state: Mutex::new(State::default()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The lease this node gives its own word.
    pub(super) fn lease(&self) -> Duration {
        self.lease
    }

    /// Takes what `origin` said (all its rooms when `full`, else the rooms listed) and
    /// renews its lease for `lease_ms`; returns the rooms whose users may have changed.
    pub(super) fn heard(
        &self,
        origin: NodeId,
        rooms: Vec<(RoomName, Vec<User>)>,
        full: bool,
        lease_ms: u64,
    ) -> Vec<RoomName> {
        let mut state = self.lock();
        let expires = Instant::now() + Duration::from_millis(lease_ms);
        let view = state.nodes.entry(origin).or_insert_with(|| NodeView { expires, rooms: HashMap::new() });
        view.expires = expires;
        let mut touched: Vec<RoomName> = Vec::with_capacity(rooms.len());
        if full {
            let listed: HashSet<&RoomName> = rooms.iter().map(|(room, _)| room).collect();
            touched.extend(view.rooms.keys().filter(|room| !listed.contains(room)).cloned());
            view.rooms.retain(|room, _| listed.contains(room));
        }
        for (room, users) in rooms {
            touched.push(room.clone());
            if users.is_empty() {
                view.rooms.remove(&room);
            } else {
                view.rooms.insert(room, users);
            }
        }
        touched
    }

    /// Forgets the nodes whose lease ran out; returns the rooms they had users in.
    pub(super) fn expire(&self) -> Vec<RoomName> {
        let mut state = self.lock();
        let now = Instant::now();
        let dead: Vec<NodeId> =
            state.nodes.iter().filter(|(_, view)| view.expires <= now).map(|(node, _)| node.clone()).collect();
        let mut touched = Vec::new();
        for node in dead {
            if let Some(view) = state.nodes.remove(&node) {
                tracing::warn!(%node, rooms = view.rooms.len(), "a node's presence lease ran out: its users no longer count");
                touched.extend(view.rooms.into_keys());
            }
        }
        touched
    }

    /// The users online in `room` on other nodes, by id.
    pub(super) fn users(&self, room: &RoomName) -> HashMap<String, User> {
        let state = self.lock();
        let mut users = HashMap::new();
        for view in state.nodes.values() {
            for user in view.rooms.get(room).into_iter().flatten() {
                users.entry(user.id.clone()).or_insert_with(|| user.clone());
            }
        }
        users
    }

    /// Notes that this node's users changed in `room`.
    pub(super) fn changed(&self, room: &RoomName) {
        let mut state = self.lock();
        if !state.dirty.contains(room) {
            state.dirty.insert(room.clone());
        }
    }

    /// The rooms whose local users changed since the last call.
    pub(super) fn take_changed(&self) -> Vec<RoomName> {
        self.lock().dirty.drain().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str) -> User {
        User { id: id.into(), name: id.into() }
    }

    #[test]
    fn a_node_not_heard_from_for_a_lease_stops_counting() {
        let presence = ClusterPresence::new(Duration::from_secs(15));
        let room = RoomName::new("r").unwrap();
        presence.heard("a".into(), vec![(room.clone(), vec![user("u1")])], true, 0);
        presence.heard("b".into(), vec![(room.clone(), vec![user("u2")])], true, 60_000);
        assert_eq!(presence.users(&room).len(), 2);
        assert_eq!(presence.expire(), vec![room.clone()], "a's lease of 0 ms is over");
        let left: Vec<String> = presence.users(&room).into_keys().collect();
        assert_eq!(left, ["u2".to_owned()], "u1 was online on a only");
    }

    #[test]
    fn a_full_snapshot_drops_the_rooms_it_no_longer_lists() {
        let presence = ClusterPresence::new(Duration::from_secs(15));
        let (r1, r2) = (RoomName::new("r1").unwrap(), RoomName::new("r2").unwrap());
        presence.heard("a".into(), vec![(r1.clone(), vec![user("u")]), (r2.clone(), vec![user("v")])], true, 60_000);
        let touched = presence.heard("a".into(), vec![(r2.clone(), vec![user("v")])], true, 60_000);
        assert!(touched.contains(&r1) && presence.users(&r1).is_empty());
        presence.heard("a".into(), vec![(r2.clone(), vec![])], false, 60_000);
        assert!(presence.users(&r2).is_empty(), "a partial update with nobody empties the room");
    }
}
