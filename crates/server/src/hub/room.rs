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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Delivered {
    /// Message frames queued on members' outboxes (members that overflowed excluded).
    pub(super) frames: u64,
    /// Messages not delivered before: the last `messages` of the slice given (a room's
    /// messages come in seq order, and only seqs above the last delivered one are new).
    pub(super) messages: usize,
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

    /// A page of the roster after `cursor`, and the cursor of the next page.
    fn roster_page(&self, cursor: Option<u64>, limit: usize) -> (Vec<User>, Option<u64>) {
        let from = cursor.map_or(Bound::Unbounded, Bound::Excluded);
        let mut page = Vec::with_capacity(limit.min(self.roster.len()));
        let mut entries = self.roster.range((from, Bound::Unbounded));
        let mut last = None;
        for (arrival, first) in entries.by_ref().take(limit) {
            self.visit();
            page.push(first.user.clone());
            last = Some(*arrival);
        }
        let next = last.filter(|_| entries.next().is_some());
        (page, next)
    }

    /// Tells the JSON members (but `skip`) that `user` came or went, with the new count,
    /// or, in a room above the presence limit, asks for the count to be announced.
    fn presence(&mut self, room: &RoomName, user: &User, joined: bool, skip: SessionId, max: usize) -> CountChange {
        let count = self.online.len();
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
    pub(super) fn new(name: RoomName, presence_max: usize) -> Self {
        Self { name, opened: Timestamp::now(), presence_max, state: Mutex::new(RoomState::default()) }
    }

    fn lock(&self) -> MutexGuard<'_, RoomState> {
        // A panic while holding the lock cannot leave the state half-updated in a way
        // that matters more than stopping delivery would, so keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that every seq up to `last_seq` is committed and needs no delivery.
    pub(super) fn catch_up_to(&self, last_seq: u64) {
        let mut state = self.lock();
        state.delivered = state.delivered.max(last_seq);
    }

    /// Fans committed messages of this room (in seq order) out to the members, encoding
    /// each at most once per protocol and pushing them to each member in one go.
    /// Returns what it queued, counted with plain integers (the hub adds it up once).
    pub(super) fn deliver(&self, messages: &[&Message]) -> Delivered {
        let mut state = self.lock();
        let fresh: Vec<&Message> = messages.iter().copied().filter(|m| m.seq > state.delivered).collect();
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
        Delivered { frames: pushed * fresh.len() as u64, messages: fresh.len() }
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
                change = state.presence(&self.name, user, true, subscriber.session, self.presence_max);
            }
        }
        let (members, cursor) = state.roster_page(None, listed);
        let snapshot = Snapshot { last_seq: state.delivered, member_count: state.online.len(), members, cursor };
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
            change = state.presence(&self.name, user, false, member.session, self.presence_max);
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
        let count = state.online.len();
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
        (page, state.online.len(), next)
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
        self.lock().online.len()
    }

    /// Sends a `typing` event to the other users' JSON connections, throttled per user;
    /// dropped in rooms too large for per-user presence.
    pub(super) fn typing(&self, user: &User, interval: Duration) {
        let mut state = self.lock();
        if state.online.len() > self.presence_max {
            return;
        }
        let now = Instant::now();
        if state.typing_sent.get(&user.id).is_some_and(|last| now.duration_since(*last) < interval) {
            return;
        }
        state.typing_sent.insert(user.id.clone(), now);
        let event = ServerFrame::Typing(TypingEvent { room: self.name.clone(), user: user.clone() });
        let frame = Frame::from(event.to_json());
        state.to_json_members(&frame, |m| m.user.id == user.id);
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
        let message = Message {
            room: RoomName::new("r").unwrap(),
            seq: 1,
            ts: Timestamp(0),
            from: members[0].user.clone(),
            text: "hello".into(),
            key: None,
            reply_to: None,
        };
        assert_eq!(room.deliver(&[&message]), Delivered { frames: 4, messages: 1 }, "one frame per member");
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
