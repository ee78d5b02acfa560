//! Rooms, membership, presence, typing and fan-out: everything a session or the HTTP
//! API asks of the server goes through the [`Hub`], which alone talks to the store.
//!
//! The hub never assigns seqs and never touches sockets: the store reports commits in
//! order on the commit stream ([`commits`]), and [`Hub::run_dispatcher`] turns each one
//! into a [`Frame`] encoded once per protocol and pushed, as shared bytes, onto every
//! member's bounded outbox. A member whose outbox is full is flagged (its session
//! closes with 4008) rather than skipped. Joining a room is ordered against that stream
//! through a barrier, so a join's reply and the live events that follow it meet
//! without a gap or an overlap. What this node commits is also handed to the
//! [`Broker`], and what other nodes commit comes back through it.
//!
//! Joining and leaving cost the same in a room of ten or of ten thousand (see
//! `room.rs`): large rooms report their count in `occupancy` events, which
//! [`Hub::run_occupancy`] sends at most once per second per room.
//!
//! Every join, read and write is checked against the room's rules, held in memory by
//! [`guard`] and changed through [`moderation`] (which also takes sanctioned users out
//! of their rooms at once); each user's messages draw on one token bucket shared by
//! its connections ([`quota`]).
//!
//! The hub counts what it alone sees in the server's metrics: rooms with members, and
//! per room and commit batch the frames it pushed and each message's latency.

mod commits;
mod guard;
mod messaging;
mod moderation;
mod outbox;
mod presence;
mod quota;
mod room;
#[cfg(test)]
mod tests;

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, RwLock,
    },
    task::{Context, Poll},
    time::Duration,
};

use bavard_protocol::{
    ErrorBody, ErrorCode, HistoryReply, JoinReply, MembersReply, Message, RoomName, Timestamp, User, JOIN_REPLY_MEMBERS,
};
use futures_util::StreamExt;

#[cfg(test)]
pub(crate) use commits::Reported;
pub use commits::{commit_stream, CommitSender, CommitStream};
pub use messaging::{Change, DIRECT_PREFIX};
pub use moderation::{RoomChanges, Sanctioning};
pub use outbox::{Frame, Outbox, Taken};
pub use quota::Quota;
use room::{CountChange, Room};

use crate::auth::{Actor, Standing, Who};
use crate::broker::{Broker, ClusterBody, ClusterEvent, Heard, NodeId};
use crate::metrics::{Limit, Metrics};
use crate::store::{Appended, MessageStore, NewMessage, Page, PageQuery, PendingAppend, RoomRecord, StoreError};
use bavard_protocol::RoomKind;

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
    /// How the server knows the user (guest, signed in, admin).
    pub standing: Standing,
    /// How to encode events for it.
    pub protocol: Protocol,
    /// Its bounded outbound queue.
    pub outbox: Outbox,
    /// The user's message bucket, shared by its connections (None: no limit).
    pub quota: Option<Arc<Quota>>,
}

impl Subscriber {
    /// The connection's user as permission checks see it.
    pub fn who(&self) -> Who<'_> {
        Who { id: &self.user.id, admin: self.standing == Standing::Admin }
    }
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
    /// This node's name among the hubs that share a broker.
    pub node: NodeId,
    /// Messages one user may send per second across its connections (0: no limit).
    pub user_rate_per_second: f64,
    /// Messages one user may send in a burst above that.
    pub user_rate_burst: u32,
    /// How long other nodes count this node's users without news from it.
    pub presence_lease: Duration,
    /// The longest message text, in characters (streamed messages grow to
    /// [`bavard_protocol::STREAM_TEXT_FACTOR`] times it).
    pub max_text_chars: usize,
    /// Rooms with more users online than this send `read` events only to the reader's
    /// own connections.
    pub read_receipts_max_members: usize,
}

/// How guests' user ids start (`?name=` users and random guests): their names prove
/// nothing, so they hold no roles and have no direct rooms.
pub(crate) const GUEST_PREFIX: &str = "g_";

/// How often large rooms announce their member count (when it changed).
pub const OCCUPANCY_INTERVAL: Duration = Duration::from_secs(1);

/// How long a room waits for a missing seq (another node's message whose event is
/// late) before reading it from the store.
pub const GAP_HOLD: Duration = Duration::from_millis(200);
/// How often rooms waiting for a seq are checked.
const GAP_CHECK: Duration = Duration::from_millis(50);
/// Messages read from the store per fill.
const GAP_PAGE: u32 = 500;

/// Why a hub operation failed.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// The session has not joined the room.
    #[error("you are not a member of room {0}: join it first")]
    NotMember(RoomName),
    /// A `members` cursor this server did not hand out.
    #[error("invalid cursor {0:?}: pass the cursor of the previous page, or none for the first")]
    BadCursor(String),
    /// A room was to be created under a name already in use.
    #[error("room {0} already exists")]
    RoomExists(RoomName),
    /// The room was never created, written to or joined.
    #[error("there is no room {0}: create it, or join it, first")]
    UnknownRoom(RoomName),
    /// The room's rules, or the actor's rank, forbid it.
    #[error("{0}")]
    Forbidden(String),
    /// The room's slow mode: the member sent too recently.
    #[error("room {room} is in slow mode: you may send again in {} s", wait.as_secs_f64().ceil())]
    SlowMode {
        /// The room.
        room: RoomName,
        /// How long until the member may send again.
        wait: Duration,
    },
    /// The user sent more messages than its bucket allows, across its connections.
    #[error("too many messages from you: at most {per_second} per second (bursts of {burst}) across your connections; slow down")]
    UserRate {
        /// The average allowed.
        per_second: f64,
        /// The burst allowed.
        burst: u32,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The room has no such message.
    #[error("room {room} has no message {seq}")]
    NoMessage {
        /// The room.
        room: RoomName,
        /// The seq asked for.
        seq: u64,
    },
    /// The message's state forbids it (deleted, streamed or not).
    #[error("{0}")]
    Conflict(String),
    /// The result would be too large.
    #[error("{0}")]
    TooLarge(String),
    /// The request makes no sense.
    #[error("{0}")]
    BadRequest(String),
    /// This node has lost its broker: it serves its own clients, and catches them up
    /// from the store when the broker is back.
    #[error("the broker is unreachable: this node is cut off from the others of its cluster")]
    BrokerDown,
}

impl HubError {
    /// How the error reads on the wire (the same for the WebSocket and REST).
    pub fn to_error_body(&self) -> ErrorBody {
        let code = match self {
            Self::NotMember(_) => ErrorCode::Forbidden,
            Self::BadCursor(_) => ErrorCode::BadRequest,
            Self::RoomExists(_) => ErrorCode::Conflict,
            Self::UnknownRoom(_) | Self::NoMessage { .. } => ErrorCode::NotFound,
            Self::Conflict(_) => ErrorCode::Conflict,
            Self::TooLarge(_) => ErrorCode::TooLarge,
            Self::BadRequest(_) => ErrorCode::BadRequest,
            Self::Forbidden(_) => ErrorCode::Forbidden,
            Self::BrokerDown => ErrorCode::Unavailable,
            Self::SlowMode { .. } | Self::UserRate { .. } => ErrorCode::RateLimited,
            Self::Store(e @ StoreError::Unavailable(_)) => {
                tracing::warn!(error = %e, "store unavailable");
                return ErrorBody::new(
                    ErrorCode::Unavailable,
                    format!("{e}; retry later (with the same key for a send): nothing acknowledged is lost"),
                );
            }
            Self::Store(e) => {
                tracing::error!(error = %e, "store failure");
                return ErrorBody::new(ErrorCode::Internal, format!("{e}; retry later (with the same key for a send)"));
            }
        };
        ErrorBody::new(code, self.to_string())
    }
}

/// A message to publish, whichever door it came in by: the hub's own form of a send.
#[derive(Debug, Clone)]
pub struct Post {
    /// The room it goes to.
    pub room: RoomName,
    /// Its text (already validated).
    pub text: String,
    /// Idempotency key: a repeat from the same user in the same room is not stored twice.
    pub key: Option<String>,
    /// The seq of the message it answers.
    pub reply_to: Option<u64>,
    /// Whether it starts a streamed message.
    pub stream: bool,
}

/// A published message, once durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Posted {
    /// The message's seq (the original one when `duplicate`).
    pub seq: u64,
    /// When it was stored.
    pub ts: Timestamp,
    /// True when the key had been used before and nothing new was stored or delivered.
    pub duplicate: bool,
}

impl From<Appended> for Posted {
    fn from(Appended { seq, ts, duplicate }: Appended) -> Self {
        Self { seq, ts, duplicate }
    }
}

/// A post in commit order, resolving once it is durable (see [`Hub::publish`]).
pub struct PendingPost(PendingAppend);

impl Future for PendingPost {
    type Output = Result<Posted, HubError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0.as_mut().poll(cx).map(|appended| Ok(Posted::from(appended?)))
    }
}

/// A room as the directory describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomListing {
    /// The room's name.
    pub room: RoomName,
    /// What it is about ("" when unset).
    pub topic: String,
    /// Who may join, read and write.
    pub kind: RoomKind,
    /// When it was created.
    pub created: Timestamp,
    /// Its last seq (0 before the first message).
    pub last_seq: u64,
    /// Its last activity: its last message, or its creation.
    pub last_ts: Timestamp,
    /// Users online in it now, on this node.
    pub online: usize,
    /// Seconds a member waits between two messages (0: off).
    pub slow_mode_secs: u32,
    /// Whether only moderators write.
    pub frozen: bool,
}

impl RoomListing {
    fn new(record: RoomRecord, online: usize) -> Self {
        let RoomRecord { room, topic, kind, created, last_seq, last_ts, slow_mode_secs, frozen } = record;
        Self { room, topic, kind, created, last_seq, last_ts, online, slow_mode_secs, frozen }
    }
}

/// Rooms and their members; see the module docs.
pub struct Hub {
    /// Rooms that have at least one member (or a join under way). Read on every
    /// delivery, written only when a room appears or empties.
    rooms: RwLock<HashMap<RoomName, Arc<Room>>>,
    store: Arc<dyn MessageStore>,
    broker: Arc<dyn Broker>,
    settings: HubSettings,
    next_session: AtomicU64,
    /// Large rooms whose member count changed since the last occupancy round.
    occupancy_due: Mutex<Vec<Arc<Room>>>,
    /// Rooms, deliveries and delivery latency are counted here.
    metrics: Arc<Metrics>,
    /// Each room's rules, as enforced.
    guards: guard::Guards,
    /// Each user's message bucket.
    quotas: quota::Quotas,
    /// Rooms waiting for a missing seq or an owed catch-up, by name.
    gaps: Mutex<HashMap<RoomName, Arc<Room>>>,
    /// Who is online on the other nodes.
    presence: presence::ClusterPresence,
}

impl Hub {
    /// A hub over `store`, hearing other nodes through `broker`, counting in `metrics`.
    pub fn new(
        store: Arc<dyn MessageStore>,
        broker: Arc<dyn Broker>,
        settings: HubSettings,
        metrics: Arc<Metrics>,
    ) -> Self {
        let quotas = quota::Quotas::new(settings.user_rate_per_second, settings.user_rate_burst);
        let presence = presence::ClusterPresence::new(settings.presence_lease);
        Self {
            rooms: RwLock::new(HashMap::new()),
            store,
            broker,
            settings,
            next_session: AtomicU64::new(1),
            occupancy_due: Mutex::new(Vec::new()),
            metrics,
            guards: guard::Guards::default(),
            quotas,
            gaps: Mutex::new(HashMap::new()),
            presence,
        }
    }

    /// The message bucket `user` shares with its other connections (None: no limit).
    pub fn quota(&self, user: &str) -> Option<Arc<Quota>> {
        self.quotas.of(user)
    }

    /// A fresh session id.
    pub fn next_session_id(&self) -> SessionId {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }

    /// Consumes the store's commit stream until it ends, delivering each committed
    /// message to the members of its room, in order, and handing it to the broker;
    /// meanwhile delivers what other nodes committed, as the broker reports it.
    pub async fn run_dispatcher(&self, mut commits: CommitStream) {
        let mut remote = self.broker.subscribe();
        loop {
            tokio::select! {
                // Local commits first: a join's barrier waits on them.
                biased;
                event = commits.next() => match event {
                    Some(commits::CommitEvent::Committed(messages)) => {
                        self.deliver(&messages);
                        self.broker.publish_messages(&self.settings.node, &messages);
                    }
                    Some(commits::CommitEvent::Barrier { room, last_seq, done }) => {
                        let room = self.room_or_new(room);
                        if room.catch_up_to(last_seq) {
                            self.note_gap(&room);
                        }
                        let _joiner_gone = done.send(());
                    }
                    None => break,
                },
                Some(heard) = remote.next() => match heard {
                    Heard::Event(event) if event.origin != self.settings.node => self.heard(event).await,
                    Heard::Event(_own) => {}
                    Heard::Reconnected => self.catch_up_everything(),
                }
            }
        }
        tracing::debug!("commit stream ended; dispatcher stopped");
    }

    fn room_or_new(&self, name: RoomName) -> Arc<Room> {
        let mut rooms = self.rooms.write().unwrap_or_else(|p| p.into_inner());
        let presence_max = self.settings.presence_max_members;
        let mut created = false;
        let room = Arc::clone(rooms.entry(name.clone()).or_insert_with(|| {
            created = true;
            Arc::new(Room::new(name, presence_max))
        }));
        self.metrics.set_rooms(rooms.len());
        drop(rooms);
        if created && self.broker.clustered() {
            // Nobody here to tell yet: the counts are all that change.
            let _no_members = room.set_remote(&self.presence.users(room.name()));
        }
        room
    }

    /// Tells the other nodes, every [`presence::PRESENCE_EVERY`] until `stop` fires,
    /// who is online in the rooms that changed here (and in all rooms every third of a
    /// lease), and forgets the nodes whose lease ran out. Nothing on a node alone.
    pub async fn run_presence(&self, stop: tokio_util::sync::CancellationToken) {
        if !self.broker.clustered() {
            return;
        }
        let lease = self.presence.lease();
        let full_every = (lease / 3).max(presence::PRESENCE_EVERY);
        let mut ticks = tokio::time::interval(presence::PRESENCE_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_full: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = ticks.tick() => {
                    for room in self.presence.expire() {
                        self.refresh_remote(&room);
                    }
                    let full = last_full.is_none_or(|at| at.elapsed() >= full_every);
                    if full {
                        last_full = Some(tokio::time::Instant::now());
                    }
                    self.tell_presence(full);
                }
            }
        }
    }

    /// Tells the other nodes who is online here: in every room, or in those that changed.
    fn tell_presence(&self, full: bool) {
        let changed = self.presence.take_changed();
        let names: Vec<RoomName> =
            if full { self.rooms.read().unwrap_or_else(|p| p.into_inner()).keys().cloned().collect() } else { changed };
        if names.is_empty() && !full {
            return;
        }
        let rooms: Vec<(RoomName, Vec<User>)> = names
            .into_iter()
            .map(|name| {
                let users = self.room(&name).map(|room| room.local_users()).unwrap_or_default();
                (name, users)
            })
            .filter(|(_, users)| !(full && users.is_empty()))
            .collect();
        let lease_ms = u64::try_from(self.presence.lease().as_millis()).unwrap_or(u64::MAX);
        let body = ClusterBody::Presence { rooms, full, lease_ms };
        self.broker.publish(ClusterEvent { origin: Arc::clone(&self.settings.node), body });
    }

    /// Gives a room here the users the other nodes have in it now.
    fn refresh_remote(&self, name: &RoomName) {
        if let Some(room) = self.room(name) {
            for change in room.set_remote(&self.presence.users(name)) {
                self.count_changed(&room, change);
            }
        }
    }

    /// Fans a commit batch out room by room: each member's outbox is locked once per
    /// batch, and each message is encoded once per protocol. Counts the frames pushed
    /// (one add per room) and each message's latency since its commit. A room left
    /// waiting for a missing seq is noted for [`Hub::run_gap_filler`].
    fn deliver(&self, messages: &[Arc<Message>]) {
        let mut by_room: HashMap<&RoomName, Vec<&Arc<Message>>> = HashMap::new();
        for message in messages {
            by_room.entry(&message.room).or_default().push(message);
        }
        for (name, messages) in by_room {
            if let Some(room) = self.room(name) {
                self.deliver_to(&room, &messages);
            }
        }
    }

    fn deliver_to(&self, room: &Arc<Room>, messages: &[&Arc<Message>]) {
        let delivered = room.deliver(messages);
        self.metrics.delivered(delivered.frames);
        if delivered.frames > 0 {
            let now = Timestamp::now();
            for message in &delivered.messages {
                self.metrics.delivery_latency(message.ts, now);
            }
        }
        if delivered.waiting {
            self.note_gap(room);
        }
    }

    fn note_gap(&self, room: &Arc<Room>) {
        let mut gaps = self.gaps.lock().unwrap_or_else(|p| p.into_inner());
        gaps.entry(room.name().clone()).or_insert_with(|| Arc::clone(room));
    }

    /// What another node said.
    async fn heard(&self, event: ClusterEvent) {
        match event.body {
            ClusterBody::Messages { messages } => self.deliver(&messages),
            ClusterBody::RulesChanged { room } => self.guards.forget(&room),
            ClusterBody::Evict { room, user, action, reason, until } => {
                self.evict_here(&room, user.as_deref(), action, reason, until).await;
            }
            ClusterBody::Typing { room, user } => {
                if let Some(room) = self.room(&room) {
                    room.typing(&user, self.settings.typing_interval);
                }
            }
            ClusterBody::RoomEvent { room, event, only_user } => {
                self.deliver_event(&room, &event, only_user.as_deref())
            }
            ClusterBody::Presence { rooms, full, lease_ms } => {
                for room in self.presence.heard(event.origin, rooms, full, lease_ms) {
                    self.refresh_remote(&room);
                }
            }
        }
    }

    /// After the broker lost events: every room with members catches up from the store.
    fn catch_up_everything(&self) {
        // What the others missed of this node's presence, they get now.
        if self.broker.clustered() {
            self.tell_presence(true);
        }
        let rooms: Vec<Arc<Room>> = self.rooms.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
        tracing::info!(rooms = rooms.len(), "the broker reconnected: catching every room up from the store");
        for room in rooms {
            if room.owe_up_to(u64::MAX) {
                self.note_gap(&room);
            }
        }
    }

    /// Fills, every [`GAP_CHECK`] until `stop` fires, the rooms that waited
    /// [`GAP_HOLD`] for a missing seq (or owe a catch-up) from the store, in order.
    pub async fn run_gap_filler(&self, stop: tokio_util::sync::CancellationToken) {
        let mut ticks = tokio::time::interval(GAP_CHECK);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = ticks.tick() => self.fill_gaps().await,
            }
        }
    }

    async fn fill_gaps(&self) {
        let waiting: Vec<Arc<Room>> = {
            let gaps = self.gaps.lock().unwrap_or_else(|p| p.into_inner());
            if gaps.is_empty() {
                return;
            }
            gaps.values().cloned().collect()
        };
        for room in waiting {
            if let Some((delivered, until)) = room.gap_due(GAP_HOLD) {
                let query = PageQuery::After { after: delivered, before: until, limit: GAP_PAGE };
                match self.store.page(room.name().clone(), query).await {
                    Ok(page) => {
                        let last = page.messages.last().map_or(delivered, |m| m.seq);
                        let messages: Vec<Arc<Message>> = page.messages.into_iter().map(Arc::new).collect();
                        let refs: Vec<&Arc<Message>> = messages.iter().collect();
                        self.deliver_to(&room, &refs);
                        if !page.has_more {
                            let reached = until.map_or(last, |until| until.saturating_sub(1)).max(last);
                            room.filled_to(reached, until.is_none());
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, room = %room.name(), "cannot fill a gap from the store; will retry")
                    }
                }
            }
            if !room.has_gap() {
                let mut gaps = self.gaps.lock().unwrap_or_else(|p| p.into_inner());
                if gaps.get(room.name()).is_some_and(|noted| Arc::ptr_eq(noted, &room)) && !room.has_gap() {
                    gaps.remove(room.name());
                }
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
        since_rev: Option<u64>,
        limit: u32,
    ) -> Result<JoinReply, HubError> {
        let joined = self.subscribe(subscriber, room, JOIN_REPLY_MEMBERS).await?;
        self.recheck_join(subscriber, room).await?;
        let last_seq = joined.last_seq;
        let (query, recovery) = join_query(since, last_seq, limit, self.settings.recovery_limit);
        let page = if query_is_empty(query) {
            Page { messages: Vec::new(), has_more: false }
        } else {
            self.store.page(room.clone(), query).await?
        };
        let viewer = Some(subscriber.user.id.as_str());
        let messages = self.current(room, page.messages, viewer).await?;
        let rev = self.store.room_rev(room.clone()).await?;
        let (changed, more_changed) = match (since, since_rev) {
            (Some(since), Some(since_rev)) if rev > since_rev => {
                let through = since.min(last_seq);
                let limit = self.settings.recovery_limit;
                let (seqs, more) = self.store.changed_since(room.clone(), through, since_rev, limit).await?;
                (self.current_at(room, seqs, viewer).await?, more)
            }
            _ => (Vec::new(), false),
        };
        // Guests' ids last one connection: they have no read position to count from.
        let unread = if subscriber.user.id.starts_with(GUEST_PREFIX) {
            None
        } else {
            Some(self.store.unread(room.clone(), subscriber.user.id.clone()).await?)
        };
        Ok(JoinReply {
            room: room.clone(),
            seq: last_seq,
            member_count: joined.member_count,
            members: joined.members,
            members_cursor: joined.cursor.map(|arrival| arrival.to_string()),
            messages,
            recovered: recovery.then_some(!page.has_more && !more_changed),
            rev,
            changed,
            unread,
        })
    }

    /// Subscribes `subscriber` to `room` with nothing to reply (the plain-text protocol
    /// has no join reply).
    pub async fn enter(&self, subscriber: &Arc<Subscriber>, room: &RoomName) -> Result<(), HubError> {
        self.subscribe(subscriber, room, 0).await?;
        self.recheck_join(subscriber, room).await
    }

    /// May `who` join `room`? Asked before an upgrade to a plain-text room (whose
    /// refusal is an HTTP status), and by every join.
    pub async fn check_join(&self, who: Who<'_>, room: &RoomName) -> Result<(), HubError> {
        let guard = self.guards.get(self.store.as_ref(), room).await?;
        guard.read(|rules| rules.check_join(who, room.as_str(), Timestamp::now())).map_err(HubError::Forbidden)
    }

    /// Checks a join after subscribing, and undoes it if refused: a ban that lands
    /// while the join is under way takes out the members it finds, and a member added
    /// just after it would otherwise slip through.
    async fn recheck_join(&self, subscriber: &Subscriber, room: &RoomName) -> Result<(), HubError> {
        if let Err(refused) = self.check_join(subscriber.who(), room).await {
            self.remove_member(subscriber, room, false);
            return Err(refused);
        }
        Ok(())
    }

    /// Adds the subscriber to the room once the room is in step with the commit stream.
    async fn subscribe(
        &self,
        subscriber: &Arc<Subscriber>,
        name: &RoomName,
        listed: usize,
    ) -> Result<room::Snapshot, HubError> {
        self.check_join(subscriber.who(), name).await?;
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
                if self.broker.clustered() {
                    self.presence.changed(name);
                }
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

    /// Whether the session is a member of `room` now.
    pub fn is_member(&self, subscriber: &Subscriber, name: &RoomName) -> bool {
        self.room(name).is_some_and(|room| room.has_member(subscriber))
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
            if self.broker.clustered() {
                self.presence.changed(name);
            }
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
            Some(text) => Some(parse_cursor(text).ok_or_else(|| HubError::BadCursor(text.to_owned()))?),
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
            self.metrics.set_rooms(rooms.len());
        }
    }

    /// Queues a message from `subscriber` for the next commit, in this call's order. The
    /// member must have joined the room. The returned future resolves once the message
    /// is durable; its delivery to the room happens through the commit stream either way.
    pub async fn publish(&self, subscriber: &Subscriber, post: Post) -> Result<PendingPost, HubError> {
        let member = self.room(&post.room).is_some_and(|room| room.has_member(subscriber));
        if !member {
            return Err(HubError::NotMember(post.room));
        }
        self.check_write(subscriber.who(), &post.room, subscriber.quota.as_deref()).await?;
        self.check_reply_to(&post).await?;
        let Post { room, text, key, reply_to, stream } = post;
        let message = NewMessage { room, from: subscriber.user.clone(), text, key, reply_to, streaming: stream };
        Ok(PendingPost(self.store.append(message).await?))
    }

    /// Queues a message from `from`, written by `actor`, for the next commit without
    /// membership: the REST API's door. The actor's rights and message bucket apply
    /// (admins have no bucket); otherwise exactly [`Hub::publish`].
    pub async fn publish_as(&self, actor: &Actor, from: User, post: Post) -> Result<PendingPost, HubError> {
        let quota = if actor.is_admin() { None } else { self.quotas.of(&actor.user.id) };
        self.check_write(actor.who(), &post.room, quota.as_deref()).await?;
        self.check_reply_to(&post).await?;
        let Post { room, text, key, reply_to, stream } = post;
        let message = NewMessage { room, from, text, key, reply_to, streaming: stream };
        Ok(PendingPost(self.store.append(message).await?))
    }

    /// A reply must answer a message of its room: one with a seq up to the room's last.
    async fn check_reply_to(&self, post: &Post) -> Result<(), HubError> {
        let Some(root) = post.reply_to else { return Ok(()) };
        let known = match self.room(&post.room).map(|room| room.delivered_seq()) {
            Some(last) if root <= last => true,
            _ => self.store.room(post.room.clone()).await?.is_some_and(|record| root <= record.last_seq),
        };
        if root == 0 || !known {
            return Err(HubError::NoMessage { room: post.room.clone(), seq: root });
        }
        Ok(())
    }

    /// Takes one message from `user`'s bucket (edits, reactions and appends count as
    /// messages).
    fn take_from_bucket(&self, user: &str) -> Result<(), HubError> {
        if self.quotas.of(user).is_some_and(|quota| !quota.try_take()) {
            self.metrics.limit_refused(Limit::UserRate);
            let HubSettings { user_rate_per_second: per_second, user_rate_burst: burst, .. } = self.settings;
            return Err(HubError::UserRate { per_second, burst });
        }
        Ok(())
    }

    /// Checks a message from `who` against the room's rules, slow mode and the user's
    /// bucket, taking from the bucket (and the slow-mode slot) when it passes.
    async fn check_write(&self, who: Who<'_>, room: &RoomName, quota: Option<&Quota>) -> Result<(), HubError> {
        let guard = self.guards.get(self.store.as_ref(), room).await?;
        // The bucket first: a send it refuses must not use up the slow mode's slot.
        if quota.is_some_and(|quota| !quota.try_take()) {
            self.metrics.limit_refused(Limit::UserRate);
            let HubSettings { user_rate_per_second: per_second, user_rate_burst: burst, .. } = self.settings;
            return Err(HubError::UserRate { per_second, burst });
        }
        match guard.check_write(who, room.as_str()) {
            Ok(()) => Ok(()),
            Err(guard::WriteRefusal::Forbidden(reason)) => Err(HubError::Forbidden(reason)),
            Err(guard::WriteRefusal::SlowMode(wait)) => {
                self.metrics.limit_refused(Limit::SlowMode);
                Err(HubError::SlowMode { room: room.clone(), wait })
            }
        }
    }

    /// Tells the room's other JSON members that the subscriber types, at most once per
    /// typing interval per user and room.
    pub async fn typing(&self, subscriber: &Subscriber, name: &RoomName) -> Result<(), HubError> {
        let room = self.room(name).filter(|room| room.has_member(subscriber));
        let room = room.ok_or_else(|| HubError::NotMember(name.clone()))?;
        let guard = self.guards.get(self.store.as_ref(), name).await?;
        let who = subscriber.who();
        guard.read(|rules| rules.check_write(who, name.as_str(), Timestamp::now())).map_err(HubError::Forbidden)?;
        if room.typing(&subscriber.user, self.settings.typing_interval) && self.broker.clustered() {
            let body = ClusterBody::Typing { room: name.clone(), user: subscriber.user.clone() };
            self.broker.publish(ClusterEvent { origin: Arc::clone(&self.settings.node), body });
        }
        Ok(())
    }

    /// Reads a page of `room`'s history, oldest first: with `after`, the oldest `limit`
    /// messages after it (and before `before`); otherwise the newest `limit` before
    /// `before`. No membership needed, only the right to read the room.
    pub async fn history(
        &self,
        who: Who<'_>,
        room: &RoomName,
        before: Option<u64>,
        after: Option<u64>,
        limit: u32,
    ) -> Result<HistoryReply, HubError> {
        self.check_read(who, room).await?;
        let query = history_query(before, after, limit);
        let Page { messages, has_more } = self.store.page(room.clone(), query).await?;
        let messages = self.current(room, messages, Some(who.id)).await?;
        Ok(HistoryReply { messages, has_more })
    }

    /// May `who` read `room`?
    pub async fn check_read(&self, who: Who<'_>, room: &RoomName) -> Result<(), HubError> {
        let guard = self.guards.get(self.store.as_ref(), room).await?;
        guard.read(|rules| rules.check_read(who, room.as_str(), Timestamp::now())).map_err(HubError::Forbidden)
    }

    /// The stored rooms (created, or written to) `who` may see, most recently active
    /// first, with how many users are online in each: private rooms are listed only to
    /// their members and to admins, direct rooms only to their two users. `who` None is
    /// an anonymous caller.
    pub async fn directory(&self, who: Option<Who<'_>>, limit: u32) -> Result<Vec<RoomListing>, HubError> {
        let rooms = self.store.rooms(limit).await?;
        let mut listed = Vec::with_capacity(rooms.len());
        for record in rooms {
            let closed = matches!(record.kind, RoomKind::Private | RoomKind::Direct);
            if closed && !self.may_see(who, &record.room).await? {
                continue;
            }
            listed.push(self.listing(record));
        }
        Ok(listed)
    }

    async fn may_see(&self, who: Option<Who<'_>>, room: &RoomName) -> Result<bool, HubError> {
        let Some(who) = who else { return Ok(false) };
        match self.check_read(who, room).await {
            Ok(()) => Ok(true),
            Err(HubError::Forbidden(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn listing(&self, record: RoomRecord) -> RoomListing {
        let online = self.online_count(&record.room);
        RoomListing::new(record, online)
    }

    fn online_count(&self, name: &RoomName) -> usize {
        self.room(name).map_or(0, |room| room.online_count())
    }

    /// Whether the room called `name` was created, written to, or has members now. A
    /// room with members here is answered from memory, without asking the store.
    pub async fn knows_room(&self, name: &RoomName) -> Result<bool, HubError> {
        if self.online_count(name) > 0 {
            return Ok(true);
        }
        Ok(self.store.room(name.clone()).await?.is_some())
    }

    /// The room called `name`, if it was created, written to, or has members now.
    pub async fn room_info(&self, name: &RoomName) -> Result<Option<RoomListing>, HubError> {
        if let Some(record) = self.store.room(name.clone()).await? {
            return Ok(Some(self.listing(record)));
        }
        // Joined, never written to: known to this node only while it has members.
        Ok(self.room(name).filter(|room| room.online_count() > 0).map(|room| RoomListing {
            room: name.clone(),
            topic: String::new(),
            kind: RoomKind::Public,
            created: room.opened,
            last_seq: 0,
            last_ts: room.opened,
            online: room.online_count(),
            slow_mode_secs: 0,
            frozen: false,
        }))
    }

    pub(super) async fn stored_room(&self, name: &RoomName) -> Result<RoomListing, HubError> {
        let record = self.store.room(name.clone()).await?;
        record.map(|record| self.listing(record)).ok_or_else(|| HubError::UnknownRoom(name.clone()))
    }

    /// Whether this node can serve: its store answers and, in a cluster, its broker is
    /// connected (a node cut off from the others still serves its own clients, but a
    /// load balancer should prefer the others).
    pub async fn ready(&self) -> Result<(), HubError> {
        self.store.ping().await?;
        if !self.broker.connected() {
            return Err(HubError::BrokerDown);
        }
        Ok(())
    }
}

/// A `members` cursor as this server writes it: a number in decimal, without sign or
/// leading zeros, of at most 19 digits (the form `/openapi.json` documents). Any other
/// text is not a cursor this server handed out.
fn parse_cursor(text: &str) -> Option<u64> {
    let canonical = !text.is_empty()
        && text.len() <= 19
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    canonical.then(|| text.parse().ok()).flatten()
}

/// The store query that answers a `join` whose subscription started after `last_seq`,
/// and whether it recovers a gap: with `since`, the oldest `recovery_limit` messages
/// after it, up to `last_seq` (the reply's `recovered` is then "the page holds the whole
/// gap", i.e. the store has no more in that range); without, the newest `limit`.
pub(crate) fn join_query(since: Option<u64>, last_seq: u64, limit: u32, recovery_limit: u32) -> (PageQuery, bool) {
    let before = Some(last_seq.saturating_add(1));
    match since {
        Some(since) => (PageQuery::After { after: since, before, limit: recovery_limit }, true),
        None => (PageQuery::Before { before, limit }, false),
    }
}

/// The store query of a `history` request: with `after`, the oldest `limit` after it
/// (and before `before`); otherwise the newest `limit` before `before`.
pub(crate) fn history_query(before: Option<u64>, after: Option<u64>, limit: u32) -> PageQuery {
    match after {
        Some(after) => PageQuery::After { after, before, limit },
        None => PageQuery::Before { before, limit },
    }
}

/// Whether `query` can only find nothing (no store read needed).
pub(crate) fn query_is_empty(query: PageQuery) -> bool {
    match query {
        PageQuery::Before { before, limit } => limit == 0 || before == Some(1),
        PageQuery::After { after, before, limit } => limit == 0 || before.is_some_and(|b| b <= after.saturating_add(1)),
    }
}

/// Encodes a message as the `message` event of the JSON protocol.
fn encode_message_event(message: &Message) -> Frame {
    Frame::from(bavard_protocol::ServerFrame::Message(message.clone()).to_json())
}
