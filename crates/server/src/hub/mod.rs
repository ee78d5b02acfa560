//! Rooms, membership, presence, typing and fan-out.
//!
//! The hub never assigns seqs and never touches sockets: the store reports commits in
//! order on the commit stream, and [`Hub::run_dispatcher`] turns each one into a frame
//! encoded once per protocol and pushed, as shared bytes, onto every member's bounded
//! outbox. A member whose outbox is full is flagged (its session closes with 4008)
//! rather than skipped. Joining a room is ordered against that stream through a store
//! barrier, so a join's reply and the live events that follow it meet without a gap
//! or an overlap.
//!
//! Joining and leaving cost the same in a room of ten or of ten thousand (see
//! `room.rs`): large rooms report their count in `occupancy` events, which
//! [`Hub::run_occupancy`] sends at most once per second per room.

mod outbox;
mod room;

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, RwLock,
    },
    time::Duration,
};

use bavard_protocol::{JoinReply, MembersReply, Message, RoomName, SendRequest, User, JOIN_REPLY_MEMBERS};
use tokio::sync::mpsc;

pub use outbox::{Frame, Outbox, Taken};
use room::{CountChange, Room};

use crate::store::{CommitEvent, MessageStore, NewMessage, Page, PageQuery, PendingAppend, StoreError};

/// Which protocol a member speaks, which decides how events are encoded for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// JSON protocol v1 (`/ws`).
    Json,
    /// The original plain-text protocol (`/ws/chat`).
    Plain,
}

/// Identifies one connection for the hub's lifetime.
pub type SessionId = u64;

/// One connection as the rooms see it: who, which protocol, and where its frames go.
#[derive(Debug)]
pub struct Subscriber {
    /// Unique per connection.
    pub session: SessionId,
    /// The connection's user.
    pub user: User,
    /// How to encode events for it.
    pub protocol: Protocol,
    /// Its bounded outbound queue.
    pub outbox: Outbox,
}

/// Hub settings.
#[derive(Debug, Clone)]
pub struct HubSettings {
    /// The most messages a `join` with `since` returns.
    pub recovery_limit: u32,
    /// The shortest interval between two `typing` events of one user in one room.
    pub typing_interval: Duration,
    /// Rooms with more users online than this get `occupancy` counts instead of
    /// per-user `presence` events, and no `typing` events.
    pub presence_max_members: usize,
}

/// How often large rooms announce their member count (when it changed).
pub const OCCUPANCY_INTERVAL: Duration = Duration::from_secs(1);

/// Why a hub operation failed.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// The session has not joined the room.
    #[error("you are not a member of room {0}: join it first")]
    NotMember(RoomName),
    /// A `members` cursor this server did not hand out.
    #[error("invalid cursor {0:?}: pass the cursor of the previous page, or none for the first")]
    BadCursor(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Rooms and their members; see the module docs.
pub struct Hub {
    /// Rooms that have at least one member (or a join under way). Read on every
    /// delivery, written only when a room appears or empties.
    rooms: RwLock<HashMap<RoomName, Arc<Room>>>,
    store: Arc<dyn MessageStore>,
    settings: HubSettings,
    next_session: AtomicU64,
    /// Large rooms whose member count changed since the last occupancy round.
    occupancy_due: Mutex<Vec<Arc<Room>>>,
}

impl Hub {
    /// A hub over `store`.
    pub fn new(store: Arc<dyn MessageStore>, settings: HubSettings) -> Self {
        Self {
            rooms: RwLock::new(HashMap::new()),
            store,
            settings,
            next_session: AtomicU64::new(1),
            occupancy_due: Mutex::new(Vec::new()),
        }
    }

    /// The store behind the hub.
    pub fn store(&self) -> &Arc<dyn MessageStore> {
        &self.store
    }

    /// A fresh session id.
    pub fn next_session_id(&self) -> SessionId {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }

    /// Consumes the store's commit stream until it ends, delivering each committed
    /// message to the members of its room, in order.
    pub async fn run_dispatcher(&self, mut commits: mpsc::Receiver<CommitEvent>) {
        while let Some(event) = commits.recv().await {
            match event {
                CommitEvent::Committed(messages) => self.deliver(&messages),
                CommitEvent::Barrier { room, last_seq, done } => {
                    let room = {
                        let mut rooms = self.rooms.write().unwrap_or_else(|p| p.into_inner());
                        let presence_max = self.settings.presence_max_members;
                        Arc::clone(rooms.entry(room.clone()).or_insert_with(|| Arc::new(Room::new(room, presence_max))))
                    };
                    room.catch_up_to(last_seq);
                    let _joiner_gone = done.send(());
                }
            }
        }
        tracing::debug!("commit stream ended; dispatcher stopped");
    }

    /// Fans a commit batch out room by room: each member's outbox is locked once per
    /// batch, and each message is encoded once per protocol.
    fn deliver(&self, messages: &[Arc<Message>]) {
        let mut by_room: HashMap<&RoomName, Vec<&Message>> = HashMap::new();
        for message in messages {
            by_room.entry(&message.room).or_default().push(message);
        }
        for (name, messages) in by_room {
            if let Some(room) = self.room(name) {
                room.deliver(&messages);
            }
        }
    }

    fn room(&self, name: &RoomName) -> Option<Arc<Room>> {
        self.rooms.read().unwrap_or_else(|p| p.into_inner()).get(name).cloned()
    }

    /// Subscribes `subscriber` to `room` and returns the join reply: with `since`, every
    /// message after it (up to the recovery limit); without, the latest `limit`.
    pub async fn join(
        &self,
        subscriber: &Arc<Subscriber>,
        room: &RoomName,
        since: Option<u64>,
        limit: u32,
    ) -> Result<JoinReply, HubError> {
        let joined = self.subscribe(subscriber, room, JOIN_REPLY_MEMBERS).await?;
        let last_seq = joined.last_seq;
        let (query, recovery) = match since {
            Some(since) => {
                let limit = self.settings.recovery_limit;
                (PageQuery::After { after: since, before: Some(last_seq + 1), limit }, true)
            }
            None => (PageQuery::Before { before: Some(last_seq + 1), limit }, false),
        };
        let page = if query_is_empty(query) {
            Page { messages: Vec::new(), has_more: false }
        } else {
            self.store.page(room.clone(), query).await?
        };
        Ok(JoinReply {
            room: room.clone(),
            seq: last_seq,
            member_count: joined.member_count,
            members: joined.members,
            members_cursor: joined.cursor.map(|arrival| arrival.to_string()),
            messages: page.messages,
            recovered: recovery.then_some(!page.has_more),
        })
    }

    /// Subscribes `subscriber` to `room` with nothing to reply (the plain-text protocol
    /// has no join reply).
    pub async fn enter(&self, subscriber: &Arc<Subscriber>, room: &RoomName) -> Result<(), HubError> {
        self.subscribe(subscriber, room, 0).await.map(drop)
    }

    /// Adds the subscriber to the room once the room is in step with the commit stream.
    async fn subscribe(
        &self,
        subscriber: &Arc<Subscriber>,
        name: &RoomName,
        listed: usize,
    ) -> Result<room::Snapshot, HubError> {
        loop {
            let room = match self.room(name) {
                Some(room) => room,
                None => {
                    self.store.barrier(name.clone()).await?;
                    continue;
                }
            };
            if let Some((snapshot, change)) = room.add(subscriber, listed) {
                self.count_changed(&room, change);
                return Ok(snapshot);
            }
            // The room emptied and was dropped between the lookup and the add: retry.
        }
    }

    fn count_changed(&self, room: &Arc<Room>, change: CountChange) {
        if change == CountChange::Announce {
            self.occupancy_due.lock().unwrap_or_else(|p| p.into_inner()).push(Arc::clone(room));
        }
    }

    /// Announces, every [`OCCUPANCY_INTERVAL`] until `stop` fires, the member count of
    /// each large room whose count changed.
    pub async fn run_occupancy(&self, stop: tokio_util::sync::CancellationToken) {
        let mut ticks = tokio::time::interval(OCCUPANCY_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = ticks.tick() => self.announce_occupancy(),
            }
        }
    }

    /// One occupancy round (see [`Hub::run_occupancy`]).
    fn announce_occupancy(&self) {
        let due = std::mem::take(&mut *self.occupancy_due.lock().unwrap_or_else(|p| p.into_inner()));
        for room in due {
            room.announce_occupancy();
        }
    }

    /// Unsubscribes the session from `room`; false when it was not a member.
    pub fn leave(&self, subscriber: &Subscriber, name: &RoomName) -> bool {
        self.remove_member(subscriber, name, false)
    }

    /// Removes the session from every room in `rooms`, telling the others it left.
    pub fn disconnect(&self, subscriber: &Subscriber, rooms: impl IntoIterator<Item = RoomName>) {
        for name in rooms {
            self.remove_member(subscriber, &name, true);
        }
    }

    /// Takes the session out of one room (dropping the room once empty); false when it
    /// was not a member.
    fn remove_member(&self, subscriber: &Subscriber, name: &RoomName, disconnected: bool) -> bool {
        let Some(room) = self.room(name) else { return false };
        let removed = room.remove(subscriber, disconnected);
        if let Some(change) = removed {
            self.count_changed(&room, change);
        }
        if room.is_empty() {
            self.drop_room(name, &room);
        }
        removed.is_some()
    }

    /// A page of the users online in `room`, in the order they came online, after
    /// `cursor` (a cursor from an earlier page or join reply).
    pub fn members(&self, name: &RoomName, cursor: Option<&str>, limit: usize) -> Result<MembersReply, HubError> {
        let after = match cursor {
            None => None,
            Some(text) => Some(text.parse::<u64>().map_err(|_| HubError::BadCursor(text.to_owned()))?),
        };
        let (members, member_count, next) = match self.room(name) {
            Some(room) => room.members(after, limit),
            None => (Vec::new(), 0, None),
        };
        Ok(MembersReply { room: name.clone(), member_count, members, cursor: next.map(|n| n.to_string()) })
    }

    fn drop_room(&self, name: &RoomName, room: &Arc<Room>) {
        let mut rooms = self.rooms.write().unwrap_or_else(|p| p.into_inner());
        if rooms.get(name).is_some_and(|current| Arc::ptr_eq(current, room)) && room.retire_if_empty() {
            rooms.remove(name);
        }
    }

    /// Queues a message for the next commit, in this call's order. The member must have
    /// joined the room. The returned future resolves once the message is durable; its
    /// delivery to the room happens through the commit stream either way.
    pub async fn publish(&self, subscriber: &Subscriber, send: SendRequest) -> Result<PendingAppend, HubError> {
        let member = self.room(&send.room).is_some_and(|room| room.has_member(subscriber));
        if !member {
            return Err(HubError::NotMember(send.room));
        }
        let message = NewMessage {
            room: send.room,
            from: subscriber.user.clone(),
            text: send.text,
            key: send.key,
            reply_to: send.reply_to,
        };
        Ok(self.store.append(message).await?)
    }

    /// Tells the room's other JSON members that the subscriber types, at most once per
    /// typing interval per user and room.
    pub fn typing(&self, subscriber: &Subscriber, name: &RoomName) -> Result<(), HubError> {
        let room = self.room(name).filter(|room| room.has_member(subscriber));
        let room = room.ok_or_else(|| HubError::NotMember(name.clone()))?;
        room.typing(&subscriber.user, self.settings.typing_interval);
        Ok(())
    }

    /// Reads a page of history (no membership needed: rooms are public in this version).
    pub async fn history(&self, room: &RoomName, query: PageQuery) -> Result<Page, HubError> {
        Ok(self.store.page(room.clone(), query).await?)
    }

    /// How many users are online in `room`.
    pub fn online_count(&self, room: &RoomName) -> usize {
        self.room(room).map_or(0, |room| room.online_count())
    }
}

fn query_is_empty(query: PageQuery) -> bool {
    match query {
        PageQuery::Before { before, limit } => limit == 0 || before == Some(1),
        PageQuery::After { after, before, limit } => limit == 0 || before.is_some_and(|b| b <= after + 1),
    }
}

/// Encodes a message as the `message` event of the JSON protocol.
pub fn encode_message_event(message: &Message) -> Frame {
    Frame::from(bavard_protocol::ServerFrame::Message(message.clone()).to_json())
}
