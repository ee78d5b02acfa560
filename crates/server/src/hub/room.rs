//! One room's live state: its members (JSON and plain-text apart, so an event for one
//! protocol never walks the other), who is online in the order they came, typing
//! throttles, and the seq of the last message delivered. Every method takes the
//! room's lock once and never awaits while holding it.
//!
//! Cost rule: joining, leaving and disconnecting do work independent of the room's
//! size except fanning an event out to the members who receive it. Presence is
//! per user while the room has at most `presence_max` users online; above that the
//! room only marks its count as changed, and the hub announces it (an `occupancy`
//! event) at most once per second. The roster (online users by arrival) is an ordered
//! map, so the first page of members and every later page cost the page, not the room.

use std::{
    collections::{BTreeMap, HashMap},
    ops::Bound,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use bavard_protocol::{
    plain, Message, OccupancyEvent, PresenceEvent, RoomName, ServerFrame, Timestamp, TypingEvent, User,
};

use super::{encode_message_event, outbox::Batch, Frame, Protocol, SessionId, Subscriber};

pub(super) struct Room {
    name: RoomName,
    /// When this node first had a member in it (what the directory says of a room that
    /// has members but no stored record yet).
    pub(super) opened: Timestamp,
    /// Above this many users online, presence goes out as `occupancy` counts.
    presence_max: usize,
    state: Mutex<RoomState>,
}

/// An online user's key: one of its connections, hashed and compared by user id, so
/// the room keeps no copy of the id (this is memory every member pays).
struct UserKey(Arc<Subscriber>);

impl std::hash::Hash for UserKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.user.id.as_str().hash(state);
    }
}

impl PartialEq for UserKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.user.id == other.0.user.id
    }
}

impl Eq for UserKey {}

impl std::borrow::Borrow<str> for UserKey {
    fn borrow(&self) -> &str {
        &self.0.user.id
    }
}

/// A user online in the room on another node.
struct Remote {
    user: User,
    arrival: u64,
}

/// A user online in the room.
struct Online {
    /// How many of the user's connections are members.
    connections: usize,
    /// The user's place in the roster.
    arrival: u64,
}

#[derive(Default)]
struct RoomState {
    /// The seq of the last message fanned out; every later one reaches current members.
    delivered: u64,
    /// Messages that came before their predecessors, by seq (empty on one node).
    pending: BTreeMap<u64, Arc<Message>>,
    /// A fill from the store is owed up to this seq (`u64::MAX`: to the end).
    owed: Option<u64>,
    /// Since when the room has waited for a missing seq or an owed fill.
    gap_since: Option<Instant>,
    /// JSON connections that are members.
    json: HashMap<SessionId, Arc<Subscriber>>,
    /// Plain-text connections that are members.
    plain: HashMap<SessionId, Arc<Subscriber>>,
    /// Online users by id.
    online: HashMap<UserKey, Online>,
    /// Online users in the order they came online (by arrival number), each through
    /// the connection that brought it online.
    roster: BTreeMap<u64, Arc<Subscriber>>,
    /// The next arrival number.
    next_arrival: u64,
    /// When each user last had a `typing` event sent.
    typing_sent: HashMap<String, Instant>,
    /// The count last announced in an `occupancy` event.
    announced: usize,
    /// Whether the hub has this room in its list of counts to announce.
    occupancy_due: bool,
    /// Set when the room emptied and left the hub's map; joins must look again.
    retired: bool,
    /// Users online on other nodes of the cluster (online here too or not), by id,
    /// with their place in the roster. Empty on a node alone.
    remote: HashMap<String, Remote>,
    /// `remote` by arrival, for the roster's pages.
    remote_roster: BTreeMap<u64, String>,
    /// How many users of `remote` are not online here.
    remote_only: usize,
    /// Members visited (pushed to or listed), for the tests of the cost rule.
    #[cfg(test)]
    visits: std::cell::Cell<usize>,
}

/// What a new member learns when it joins.
pub(super) struct Snapshot {
    /// The seq of the last message delivered before the member was added.
    pub(super) last_seq: u64,
    /// Users online, this one included.
    pub(super) member_count: usize,
    /// The first users of the roster.
    pub(super) members: Vec<User>,
    /// Where `members` stopped, when more users are online.
    pub(super) cursor: Option<u64>,
}

/// What one [`Room::deliver`] did, for the hub's metrics.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(super) struct Delivered {
    /// Message frames queued on members' outboxes (members that overflowed excluded).
    pub(super) frames: u64,
    /// The messages delivered, in seq order.
    pub(super) messages: Vec<Arc<Message>>,
    /// Whether the room now waits for a missing seq (or an owed fill).
    pub(super) waiting: bool,
}

/// The outcome of [`Room::add`] and [`Room::remove`] the hub acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CountChange {
    /// Nothing to announce later (no change, or presence events told the members).
    Told,
    /// The count changed in a large room: announce it with the next `occupancy` round.
    Announce,
}

impl RoomState {
    /// Owes a fill up to `seq`; true when that is new debt.
    fn owe(&mut self, seq: u64) -> bool {
        if seq <= self.delivered {
            return false;
        }
        self.owed = Some(self.owed.map_or(seq, |owed| owed.max(seq)));
        // Due at once: nothing else will bring these messages.
        self.gap_since = Some(Instant::now() - Duration::from_secs(3600));
        true
    }

    /// Starts or ends the wait for a missing seq.
    fn settle_gap(&mut self) {
        let waiting = !self.pending.is_empty() || self.owed.is_some();
        match (waiting, self.gap_since) {
            (true, None) => self.gap_since = Some(Instant::now()),
            (false, Some(_)) => self.gap_since = None,
            _ => {}
        }
    }

    fn visit(&self) {
        #[cfg(test)]
        self.visits.set(self.visits.get() + 1);
    }

    /// Pushes `frame` to every JSON member but `skip`; encodes nothing per member.
    fn to_json_members(&self, frame: &Frame, skip: impl Fn(&Subscriber) -> bool) {
        for member in self.json.values() {
            self.visit();
            if !skip(member) {
                member.outbox.push(frame.clone());
            }
        }
    }

    fn members_of(&mut self, protocol: Protocol) -> &mut HashMap<SessionId, Arc<Subscriber>> {
        match protocol {
            Protocol::Json => &mut self.json,
            Protocol::Plain => &mut self.plain,
        }
    }

    fn has_members(&self) -> bool {
        !self.json.is_empty() || !self.plain.is_empty()
    }

    /// How many users are online in the room, here and on other nodes.
    fn count(&self) -> usize {
        self.online.len() + self.remote_only
    }

    /// A page of the roster after `cursor`, and the cursor of the next page: the users
    /// online here and elsewhere, by arrival.
    fn roster_page(&self, cursor: Option<u64>, limit: usize) -> (Vec<User>, Option<u64>) {
        let from = cursor.map_or(Bound::Unbounded, Bound::Excluded);
        let mut page = Vec::with_capacity(limit.min(self.roster.len() + self.remote_only));
        let mut local = self.roster.range((from, Bound::Unbounded)).peekable();
        // Users online here too are listed once, from here.
        let mut remote = self
            .remote_roster
            .range((from, Bound::Unbounded))
            .filter(|(_, id)| !self.online.contains_key(id.as_str()))
            .peekable();
        let mut last = None;
        while page.len() < limit {
            let take_local = match (local.peek(), remote.peek()) {
                (Some((l, _)), Some((r, _))) => l < r,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            self.visit();
            if take_local {
                let Some((arrival, first)) = local.next() else { break };
                page.push(first.user.clone());
                last = Some(*arrival);
            } else {
                let Some((arrival, id)) = remote.next() else { break };
                if let Some(entry) = self.remote.get(id) {
                    page.push(entry.user.clone());
                }
                last = Some(*arrival);
            }
        }
        let more = local.peek().is_some() || remote.peek().is_some();
        (page, last.filter(|_| more))
    }

    /// Tells the JSON members (but `skip`) that `user` came or went, with the new count,
    /// or, in a room above the presence limit, asks for the count to be announced.
    fn presence(&mut self, room: &RoomName, user: &User, joined: bool, skip: SessionId, max: usize) -> CountChange {
        let count = self.count();
        if count > max {
            if self.occupancy_due {
                return CountChange::Told;
            }
            self.occupancy_due = true;
            return CountChange::Announce;
        }
        if self.json.len() > usize::from(self.json.contains_key(&skip)) {
            let (joined, left) = if joined { (vec![user.clone()], vec![]) } else { (vec![], vec![user.clone()]) };
            let event = PresenceEvent { room: room.clone(), joined, left, member_count: Some(count) };
            let frame = Frame::from(ServerFrame::Presence(event).to_json());
            self.to_json_members(&frame, |m| m.session == skip);
        }
        self.announced = count;
        CountChange::Told
    }
}

impl Room {
    pub(super) fn name(&self) -> &RoomName {
        &self.name
    }

    pub(super) fn new(name: RoomName, presence_max: usize) -> Self {
        Self { name, opened: Timestamp::now(), presence_max, state: Mutex::new(RoomState::default()) }
    }

    fn lock(&self) -> MutexGuard<'_, RoomState> {
        // A panic while holding the lock cannot leave the state half-updated in a way
        // that matters more than stopping delivery would, so keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that every seq up to `last_seq` is committed. A room nobody is in yet
    /// starts there (its first member's join reply reads the rest from the store); a
    /// room with members must deliver up to it, so it is owed a fill from the store
    /// (in a cluster, other nodes' messages may not have arrived yet).
    pub(super) fn catch_up_to(&self, last_seq: u64) -> bool {
        let mut state = self.lock();
        if state.has_members() {
            return state.owe(last_seq);
        }
        state.delivered = state.delivered.max(last_seq);
        let delivered = state.delivered;
        state.pending.retain(|seq, _| *seq > delivered);
        let _nobody_to_tell = self.release(&mut state, Vec::new());
        let delivered = state.delivered;
        state.owed = state.owed.filter(|owed| *owed > delivered);
        state.settle_gap();
        false
    }

    /// Asks for every message up to `seq` to be filled from the store (a reconnected
    /// broker may have lost some); true when the room now waits for a fill.
    pub(super) fn owe_up_to(&self, seq: u64) -> bool {
        self.lock().owe(seq)
    }

    /// When the room has waited `hold` or longer for a missing seq (or is owed a fill):
    /// the last seq delivered and the seq to fill up to (exclusive; None: to the end).
    pub(super) fn gap_due(&self, hold: Duration) -> Option<(u64, Option<u64>)> {
        let state = self.lock();
        let since = state.gap_since?;
        if since.elapsed() < hold {
            return None;
        }
        let until = match (state.pending.keys().next(), state.owed) {
            (_, Some(owed)) if owed == u64::MAX => None,
            (Some(first), Some(owed)) => Some((*first).max(owed.saturating_add(1))),
            (Some(first), None) => Some(*first),
            (None, Some(owed)) => Some(owed.saturating_add(1)),
            (None, None) => return None,
        };
        Some((state.delivered, until))
    }

    /// Whether the room still waits for messages (a gap or a fill owed).
    pub(super) fn has_gap(&self) -> bool {
        self.lock().gap_since.is_some()
    }

    /// A fill from the store reached `seq` (everything up to it was handed to
    /// [`Room::deliver`]), and the store's last message when `at_end`: the debt is
    /// paid up to there.
    pub(super) fn filled_to(&self, seq: u64, at_end: bool) {
        let mut state = self.lock();
        if at_end || state.owed.is_some_and(|owed| owed <= seq) {
            state.owed = None;
        }
        state.delivered = state.delivered.max(seq);
        let delivered = state.delivered;
        state.pending.retain(|pending, _| *pending > delivered);
        let _ = self.release(&mut state, Vec::new());
        state.settle_gap();
    }

    /// Fans committed messages of this room out to the members in seq order, encoding
    /// each at most once per protocol and pushing them to each member in one go. A
    /// message whose predecessor has not been delivered waits (a cluster's nodes
    /// commit a room's messages in turns, and their events may cross): the hub fills
    /// the gap from the store if it lasts. Returns what it queued, counted with plain
    /// integers (the hub adds it up once).
    pub(super) fn deliver(&self, messages: &[&Arc<Message>]) -> Delivered {
        let mut state = self.lock();
        let mut next = state.delivered + 1;
        let mut fresh: Vec<Arc<Message>> = Vec::with_capacity(messages.len());
        for message in messages {
            if message.seq == next {
                fresh.push(Arc::clone(message));
                next += 1;
                while let Some(waiting) = state.pending.remove(&next) {
                    fresh.push(waiting);
                    next += 1;
                }
            } else if message.seq > next {
                state.pending.entry(message.seq).or_insert_with(|| Arc::clone(message));
            }
        }
        let mut delivered = self.release(&mut state, fresh);
        state.settle_gap();
        delivered.waiting = state.gap_since.is_some();
        delivered
    }

    /// Pushes `fresh` (the next seqs, in order) and whatever waiting messages follow
    /// them to the members.
    fn release(&self, state: &mut RoomState, mut fresh: Vec<Arc<Message>>) -> Delivered {
        let mut next = fresh.last().map_or(state.delivered, |last| last.seq) + 1;
        while let Some(waiting) = state.pending.remove(&next) {
            fresh.push(waiting);
            next += 1;
        }
        let Some(last) = fresh.last() else { return Delivered::default() };
        state.delivered = last.seq;
        let mut pushed = 0u64;
        if !state.json.is_empty() {
            let frames: Batch = fresh.iter().map(|m| encode_message_event(m)).collect();
            for member in state.json.values() {
                pushed += u64::from(member.outbox.push_all(&frames));
            }
        }
        if !state.plain.is_empty() {
            let frames: Batch = fresh.iter().map(|m| Frame::from(plain::received(&m.text))).collect();
            for member in state.plain.values() {
                pushed += u64::from(member.outbox.push_all(&frames));
            }
        }
        let frames = pushed * fresh.len() as u64;
        Delivered { frames, messages: fresh, waiting: false }
    }

    /// Adds a member and returns what it needs to know with at most `listed` users of
    /// the roster, or None if the room was retired (the caller looks the room up again).
    pub(super) fn add(&self, subscriber: &Arc<Subscriber>, listed: usize) -> Option<(Snapshot, CountChange)> {
        let mut state = self.lock();
        if state.retired {
            return None;
        }
        let previous = state.members_of(subscriber.protocol).insert(subscriber.session, Arc::clone(subscriber));
        let mut change = CountChange::Told;
        if previous.is_none() {
            let user = &subscriber.user;
            let arrival = state.next_arrival;
            let online = match state.online.get_mut(user.id.as_str()) {
                Some(online) => online,
                None => {
                    state.online.entry(UserKey(Arc::clone(subscriber))).or_insert(Online { connections: 0, arrival })
                }
            };
            online.connections += 1;
            if online.connections == 1 {
                state.next_arrival += 1;
                state.roster.insert(arrival, Arc::clone(subscriber));
                if state.remote.contains_key(&user.id) {
                    // Online elsewhere already: no news for anyone.
                    state.remote_only -= 1;
                } else {
                    change = state.presence(&self.name, user, true, subscriber.session, self.presence_max);
                }
            }
        }
        let (members, cursor) = state.roster_page(None, listed);
        let snapshot = Snapshot { last_seq: state.delivered, member_count: state.count(), members, cursor };
        Some((snapshot, change))
    }

    /// Removes a member; `disconnected` says the connection ended (plain-text clients
    /// then tell the room). Returns None when it was not a member.
    pub(super) fn remove(&self, subscriber: &Subscriber, disconnected: bool) -> Option<CountChange> {
        let mut state = self.lock();
        self.remove_locked(&mut state, subscriber.protocol, subscriber.session, disconnected).map(|(_, change)| change)
    }

    /// Removes every connection `goes` picks (a moderator's kick, ban or new rule),
    /// telling the others as a departure. Returns the connections removed and the count
    /// changes to act on.
    pub(super) fn evict(&self, goes: impl Fn(&Subscriber) -> bool) -> (Vec<Arc<Subscriber>>, Vec<CountChange>) {
        let mut state = self.lock();
        let picked: Vec<(Protocol, SessionId)> = state
            .json
            .values()
            .chain(state.plain.values())
            .filter(|member| goes(member))
            .map(|member| (member.protocol, member.session))
            .collect();
        let mut removed = Vec::with_capacity(picked.len());
        let mut changes = Vec::new();
        for (protocol, session) in picked {
            // A plain-text client taken out is closed: the others hear it left.
            let closes = protocol == Protocol::Plain;
            if let Some((member, change)) = self.remove_locked(&mut state, protocol, session, closes) {
                removed.push(member);
                changes.push(change);
            }
        }
        (removed, changes)
    }

    fn remove_locked(
        &self,
        state: &mut RoomState,
        protocol: Protocol,
        session: SessionId,
        disconnected: bool,
    ) -> Option<(Arc<Subscriber>, CountChange)> {
        let member = state.members_of(protocol).remove(&session)?;
        let user = &member.user;
        let mut change = CountChange::Told;
        let went_offline = state.online.get_mut(user.id.as_str()).is_some_and(|online| {
            online.connections -= 1;
            online.connections == 0
        });
        if went_offline {
            if let Some(online) = state.online.remove(user.id.as_str()) {
                state.roster.remove(&online.arrival);
            }
            state.typing_sent.remove(&user.id);
            if state.remote.contains_key(&user.id) {
                // Still online elsewhere.
                state.remote_only += 1;
            } else {
                change = state.presence(&self.name, user, false, member.session, self.presence_max);
            }
        }
        if disconnected && member.protocol == Protocol::Plain && !state.plain.is_empty() {
            // The draft's notice: a static frame, so every member shares the same bytes.
            let notice = Frame::from_static(plain::DISCONNECTED);
            for other in state.plain.values() {
                state.visit();
                other.outbox.push(notice.clone());
            }
        }
        Some((member, change))
    }

    /// Sends the room's count to its JSON members if it changed since the last
    /// announcement; called by the hub's occupancy round for rooms that asked.
    pub(super) fn announce_occupancy(&self) {
        let mut state = self.lock();
        state.occupancy_due = false;
        let count = state.count();
        if count == state.announced || state.retired {
            return;
        }
        state.announced = count;
        let event = ServerFrame::Occupancy(OccupancyEvent { room: self.name.clone(), member_count: count });
        let frame = Frame::from(event.to_json());
        state.to_json_members(&frame, |_| false);
    }

    /// A page of the users online after `cursor`: the users, the count and the cursor
    /// of the next page.
    pub(super) fn members(&self, cursor: Option<u64>, limit: usize) -> (Vec<User>, usize, Option<u64>) {
        let state = self.lock();
        let (page, next) = state.roster_page(cursor, limit);
        (page, state.count(), next)
    }

    pub(super) fn has_member(&self, subscriber: &Subscriber) -> bool {
        self.lock().members_of(subscriber.protocol).contains_key(&subscriber.session)
    }

    pub(super) fn is_empty(&self) -> bool {
        !self.lock().has_members()
    }

    /// Marks an empty room retired; returns false (and changes nothing) if it has members.
    pub(super) fn retire_if_empty(&self) -> bool {
        let mut state = self.lock();
        state.retired = !state.has_members();
        state.retired
    }

    pub(super) fn online_count(&self) -> usize {
        self.lock().count()
    }

    /// The users online here (what this node tells the others).
    pub(super) fn local_users(&self) -> Vec<User> {
        self.lock().online.keys().map(|key| key.0.user.clone()).collect()
    }

    /// Sets the users online in the room on other nodes, telling the members who came
    /// and went (users online here too change nothing); returns the count changes.
    pub(super) fn set_remote(&self, users: &HashMap<String, User>) -> Vec<CountChange> {
        let mut state = self.lock();
        let gone: Vec<String> = state.remote.keys().filter(|id| !users.contains_key(id.as_str())).cloned().collect();
        let mut changes = Vec::new();
        for id in gone {
            let Some(entry) = state.remote.remove(&id) else { continue };
            state.remote_roster.remove(&entry.arrival);
            if !state.online.contains_key(id.as_str()) {
                state.remote_only -= 1;
                changes.push(state.presence(&self.name, &entry.user, false, 0, self.presence_max));
            }
        }
        for (id, user) in users {
            if state.remote.contains_key(id) {
                continue;
            }
            let arrival = state.next_arrival;
            state.next_arrival += 1;
            state.remote.insert(id.clone(), Remote { user: user.clone(), arrival });
            state.remote_roster.insert(arrival, id.clone());
            if !state.online.contains_key(id.as_str()) {
                state.remote_only += 1;
                changes.push(state.presence(&self.name, user, true, 0, self.presence_max));
            }
        }
        changes
    }

    /// Sends a `typing` event to the other users' JSON connections, throttled per user;
    /// dropped in rooms too large for per-user presence. True when it was sent.
    pub(super) fn typing(&self, user: &User, interval: Duration) -> bool {
        let mut state = self.lock();
        if state.count() > self.presence_max {
            return false;
        }
        let now = Instant::now();
        if state.typing_sent.get(&user.id).is_some_and(|last| now.duration_since(*last) < interval) {
            return false;
        }
        state.typing_sent.insert(user.id.clone(), now);
        let event = ServerFrame::Typing(TypingEvent { room: self.name.clone(), user: user.clone() });
        let frame = Frame::from(event.to_json());
        state.to_json_members(&frame, |m| m.user.id == user.id);
        true
    }

    /// The seq of the last message delivered to the room's members.
    pub(super) fn delivered_seq(&self) -> u64 {
        self.lock().delivered
    }

    /// Sends `frame` to the room's JSON members but those `skip` names.
    pub(super) fn to_json(&self, frame: &Frame, skip: impl Fn(&Subscriber) -> bool) {
        self.lock().to_json_members(frame, skip);
    }

    #[cfg(test)]
    fn visits(&self) -> usize {
        self.lock().visits.take()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;
    use crate::hub::{Outbox, Taken};

    fn member(session: SessionId, protocol: Protocol) -> Arc<Subscriber> {
        let user = User { id: format!("g_u{session}"), name: format!("u{session}") };
        Arc::new(Subscriber {
            session,
            user,
            standing: crate::auth::Standing::Guest,
            protocol,
            outbox: Outbox::new(64, 1 << 20),
            quota: None,
        })
    }

    fn taken(subscriber: &Subscriber) -> Vec<String> {
        let mut frames = VecDeque::new();
        match subscriber.outbox.take(&mut frames) {
            Taken::Frames => frames.iter().map(|f| f.as_str().to_owned()).collect(),
            Taken::Empty => Vec::new(),
            Taken::Overflowed | Taken::Evicted(_) => panic!("outbox overflowed or evicted"),
        }
    }

    fn room(presence_max: usize) -> Room {
        Room::new(RoomName::new("r").unwrap(), presence_max)
    }

    #[test]
    fn a_message_is_encoded_once_per_protocol_and_its_bytes_shared_by_every_member() {
        let room = room(1000);
        let members: Vec<_> = [Protocol::Json, Protocol::Json, Protocol::Plain, Protocol::Plain]
            .into_iter()
            .enumerate()
            .map(|(i, protocol)| member(i as SessionId + 1, protocol))
            .collect();
        for subscriber in &members {
            room.add(subscriber, 100).unwrap();
        }
        for subscriber in &members {
            // Drop the presence events: only the message matters here.
            let _ = subscriber.outbox.take(&mut VecDeque::new());
        }
        let message =
            Message::new(RoomName::new("r").unwrap(), 1, Timestamp(0), members[0].user.clone(), "hello".into());
        let message = Arc::new(message);
        let delivered = room.deliver(&[&message]);
        assert_eq!((delivered.frames, delivered.messages.len()), (4, 1), "one frame per member");
        let frames: Vec<Frame> = members
            .iter()
            .map(|m| {
                let mut frames = VecDeque::new();
                assert!(matches!(m.outbox.take(&mut frames), Taken::Frames));
                frames.pop_front().unwrap()
            })
            .collect();
        assert_eq!(frames[2].as_str(), "Message reçu : hello");
        assert!(frames[0].as_str().starts_with(r#"{"type":"message""#));
        // Same protocol, same bytes in memory: one encoding, shared.
        assert_eq!(frames[0].as_str().as_ptr(), frames[1].as_str().as_ptr());
        assert_eq!(frames[2].as_str().as_ptr(), frames[3].as_str().as_ptr());
    }

    fn message(seq: u64) -> Arc<Message> {
        Arc::new(Message::new(
            RoomName::new("r").unwrap(),
            seq,
            Timestamp(0),
            User { id: "u".into(), name: "u".into() },
            format!("m{seq}"),
        ))
    }

    fn seqs(delivered: &Delivered) -> Vec<u64> {
        delivered.messages.iter().map(|m| m.seq).collect()
    }

    #[test]
    fn messages_that_come_before_their_predecessors_wait_for_them() {
        let room = room(1000);
        room.add(&member(1, Protocol::Json), 100).unwrap();
        let (m1, m2, m3, m4) = (message(1), message(2), message(3), message(4));
        assert_eq!(seqs(&room.deliver(&[&m2, &m3])), Vec::<u64>::new(), "1 has not come yet");
        assert!(room.has_gap());
        assert_eq!(room.gap_due(Duration::from_secs(60)), None, "not due before the hold");
        assert_eq!(room.gap_due(Duration::ZERO), Some((0, Some(2))), "fill 1 from the store");
        assert_eq!(seqs(&room.deliver(&[&m1])), [1, 2, 3]);
        assert!(!room.has_gap());
        assert_eq!(seqs(&room.deliver(&[&m2, &m4])), [4], "a repeat is dropped");
    }

    #[test]
    fn a_room_with_members_owes_a_fill_up_to_a_barrier_and_a_reconnect() {
        let room = room(1000);
        assert!(!room.catch_up_to(5), "nobody is in: the room starts at 5");
        room.add(&member(1, Protocol::Json), 100).unwrap();
        assert!(room.catch_up_to(7), "members are owed 6 and 7");
        assert_eq!(room.gap_due(Duration::from_secs(3600)), Some((5, Some(8))), "due at once");
        room.deliver(&[&message(6), &message(7)]);
        room.filled_to(7, false);
        assert!(!room.has_gap());
        assert!(room.owe_up_to(u64::MAX));
        assert_eq!(room.gap_due(Duration::ZERO), Some((7, None)), "to the end of the room");
        room.filled_to(7, false);
        assert!(room.has_gap(), "not at the end yet");
        room.filled_to(7, true);
        assert!(!room.has_gap());
    }

    #[test]
    fn joining_and_leaving_a_room_of_ten_thousand_visits_no_member_beyond_the_listed_page() {
        for protocol in [Protocol::Json, Protocol::Plain] {
            let room = room(1000);
            for session in 1..=10_000 {
                room.add(&member(session, protocol), 100).unwrap();
            }
            room.announce_occupancy();
            room.visits();
            let newcomer = member(20_000, protocol);
            let (snapshot, change) = room.add(&newcomer, 100).unwrap();
            assert_eq!((snapshot.member_count, snapshot.members.len()), (10_001, 100));
            assert_eq!(change, CountChange::Announce);
            assert_eq!(room.visits(), 100, "{protocol:?}: a join visits the listed members only");
            let (_, change) = room.add(&member(20_001, protocol), 100).unwrap();
            assert_eq!(change, CountChange::Told, "the count is already due for announcement");
            room.visits();
            room.remove(&newcomer, false).unwrap();
            assert_eq!(room.visits(), 0, "{protocol:?}: a leave visits nobody");
        }
    }

    #[test]
    fn a_plain_text_disconnect_reaches_every_plain_member_and_no_json_member() {
        let room = room(2);
        let plain: Vec<_> = (1..=5).map(|s| member(s, Protocol::Plain)).collect();
        let json = member(10, Protocol::Json);
        for subscriber in plain.iter().chain([&json]) {
            room.add(subscriber, 100).unwrap();
        }
        for subscriber in plain.iter().chain([&json]) {
            taken(subscriber);
        }
        room.visits();
        room.remove(&plain[0], true).unwrap();
        for subscriber in &plain[1..] {
            assert_eq!(taken(subscriber), [plain::DISCONNECTED]);
        }
        assert_eq!(taken(&json), Vec::<String>::new(), "above the presence limit: no presence event");
        assert_eq!(room.visits(), 4, "the four remaining plain members, nobody else");
    }

    #[test]
    fn presence_turns_into_occupancy_above_the_limit_and_back() {
        let room = room(3);
        let watcher = member(1, Protocol::Json);
        room.add(&watcher, 100).unwrap();
        let others: Vec<_> = (2..=4).map(|s| member(s, Protocol::Json)).collect();
        for (i, other) in others.iter().enumerate() {
            let (_, change) = room.add(other, 100).unwrap();
            // 2 and 3 users online: presence; the 4th crosses the limit of 3.
            let expected = if i < 2 { CountChange::Told } else { CountChange::Announce };
            assert_eq!(change, expected, "join {i}");
        }
        let frames = taken(&watcher);
        assert_eq!(frames.len(), 2, "{frames:?}");
        assert!(frames[1].contains(r#""joined":[{"id":"g_u3""#) && frames[1].contains(r#""member_count":3"#));
        room.announce_occupancy();
        assert_eq!(taken(&watcher), [r#"{"type":"occupancy","room":"r","member_count":4}"#]);
        room.announce_occupancy();
        assert_eq!(taken(&watcher), Vec::<String>::new(), "no change, no announcement");
        // Back at the limit: presence events again, with the count.
        assert_eq!(room.remove(&others[2], false), Some(CountChange::Told));
        let frames = taken(&watcher);
        assert_eq!(frames.len(), 1, "{frames:?}");
        assert!(frames[0].contains(r#""left":[{"id":"g_u4""#) && frames[0].contains(r#""member_count":3"#));
        room.announce_occupancy();
        assert_eq!(taken(&watcher), Vec::<String>::new(), "the presence event carried the count");
    }

    #[test]
    fn changes_between_two_occupancy_rounds_make_one_event_with_the_last_count() {
        let room = room(1);
        let watcher = member(1, Protocol::Json);
        room.add(&watcher, 100).unwrap();
        let changes: Vec<CountChange> = (2..=4).map(|s| room.add(&member(s, Protocol::Json), 100).unwrap().1).collect();
        assert_eq!(changes, [CountChange::Announce, CountChange::Told, CountChange::Told], "the room asks once");
        taken(&watcher);
        room.announce_occupancy();
        assert_eq!(taken(&watcher), [r#"{"type":"occupancy","room":"r","member_count":4}"#]);
    }

    #[test]
    fn typing_is_dropped_above_the_presence_limit() {
        let room = room(2);
        let (a, b, c) = (member(1, Protocol::Json), member(2, Protocol::Json), member(3, Protocol::Json));
        room.add(&a, 100).unwrap();
        room.add(&b, 100).unwrap();
        taken(&a);
        room.typing(&b.user, Duration::ZERO);
        assert_eq!(taken(&a).len(), 1);
        room.add(&c, 100).unwrap();
        taken(&a);
        room.typing(&b.user, Duration::ZERO);
        assert_eq!(taken(&a), Vec::<String>::new());
    }

    #[test]
    fn the_roster_pages_in_arrival_order_without_repeats() {
        let room = room(1000);
        let members: Vec<_> = (1..=25).map(|s| member(s, Protocol::Json)).collect();
        for subscriber in &members {
            room.add(subscriber, 10).unwrap();
        }
        // A second connection of user 1 does not list it twice.
        let twin = Arc::new(Subscriber {
            session: 99,
            user: members[0].user.clone(),
            standing: crate::auth::Standing::Guest,
            protocol: Protocol::Plain,
            outbox: Outbox::new(4, 1 << 20),
            quota: None,
        });
        let (snapshot, _) = room.add(&twin, 10).unwrap();
        assert_eq!((snapshot.member_count, snapshot.members.len()), (25, 10));
        room.remove(&members[12], false).unwrap();
        let mut seen: Vec<String> = snapshot.members.iter().map(|u| u.name.clone()).collect();
        let mut cursor = snapshot.cursor;
        while let Some(after) = cursor {
            let (page, count, next) = room.members(Some(after), 10);
            assert_eq!(count, 24);
            seen.extend(page.into_iter().map(|u| u.name));
            cursor = next;
        }
        let expected: Vec<String> = (1..=25).filter(|s| *s != 13).map(|s| format!("u{s}")).collect();
        assert_eq!(seen, expected);
    }
}
