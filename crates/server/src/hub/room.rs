//! One room's live state: its members, who is online, typing throttles, and the seq
//! of the last message delivered. Every method takes the room's lock once and never
//! awaits while holding it.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use bavard_protocol::{plain, Message, PresenceEvent, RoomName, ServerFrame, TypingEvent, User};

use super::{encode_message_event, Frame, Protocol, SessionId, Subscriber};

pub(super) struct Room {
    name: RoomName,
    state: Mutex<RoomState>,
}

#[derive(Default)]
struct RoomState {
    /// The seq of the last message fanned out; every later one reaches current members.
    delivered: u64,
    members: HashMap<SessionId, Arc<Subscriber>>,
    /// Online users and how many of their connections are members.
    /// How many of each online user's connections are members (the users themselves
    /// are found through the members: no second copy per connection).
    online: HashMap<String, usize>,
    /// When each user last had a `typing` event sent.
    typing_sent: HashMap<String, Instant>,
    /// Set when the room emptied and left the hub's map; joins must look again.
    retired: bool,
}

impl RoomState {
    /// Each online user once.
    fn online_users(&self) -> Vec<User> {
        let mut seen = std::collections::HashSet::new();
        self.members.values().filter(|m| seen.insert(m.user.id.as_str())).map(|m| m.user.clone()).collect()
    }

    /// Pushes `frame` to every member matching `to`; encodes nothing per member.
    fn broadcast(&self, frame: &Frame, to: impl Fn(&Subscriber) -> bool) {
        for member in self.members.values().filter(|m| to(m)) {
            member.outbox.push(frame.clone());
        }
    }

    fn presence(&self, room: &RoomName, user: &User, joined: bool, skip: SessionId) {
        let (joined, left) = if joined { (vec![user.clone()], vec![]) } else { (vec![], vec![user.clone()]) };
        let event = ServerFrame::Presence(PresenceEvent { room: room.clone(), joined, left });
        let frame = Frame::from(event.to_json());
        self.broadcast(&frame, |m| m.protocol == Protocol::Json && m.session != skip);
    }
}

impl Room {
    pub(super) fn new(name: RoomName) -> Self {
        Self { name, state: Mutex::new(RoomState::default()) }
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
    pub(super) fn deliver(&self, messages: &[&Message]) {
        let mut state = self.lock();
        let fresh: Vec<&Message> = messages.iter().copied().filter(|m| m.seq > state.delivered).collect();
        let Some(last) = fresh.last() else { return };
        state.delivered = last.seq;
        let (mut json, mut text): (Option<Vec<Frame>>, Option<Vec<Frame>>) = (None, None);
        for member in state.members.values() {
            let frames = match member.protocol {
                Protocol::Json => json.get_or_insert_with(|| fresh.iter().map(|m| encode_message_event(m)).collect()),
                Protocol::Plain => {
                    text.get_or_insert_with(|| fresh.iter().map(|m| Frame::from(plain::received(&m.text))).collect())
                }
            };
            member.outbox.push_all(frames);
        }
    }

    /// Adds a member; returns the last delivered seq and the users online, or None if
    /// the room was retired (the caller looks the room up again).
    pub(super) fn add(&self, subscriber: &Arc<Subscriber>) -> Option<(u64, Vec<User>)> {
        let mut state = self.lock();
        if state.retired {
            return None;
        }
        let previous = state.members.insert(subscriber.session, Arc::clone(subscriber));
        if previous.is_none() {
            let user = &subscriber.user;
            let connections = state.online.entry(user.id.clone()).or_insert(0);
            *connections += 1;
            if *connections == 1 {
                state.presence(&self.name, user, true, subscriber.session);
            }
        }
        Some((state.delivered, state.online_users()))
    }

    /// Removes a member; `disconnected` says the connection ended (plain-text clients
    /// then tell the room). Returns whether it was a member.
    pub(super) fn remove(&self, session: SessionId, disconnected: bool) -> bool {
        let mut state = self.lock();
        let Some(member) = state.members.remove(&session) else { return false };
        let user = &member.user;
        let went_offline = match state.online.get_mut(&user.id) {
            Some(connections) => {
                *connections -= 1;
                *connections == 0
            }
            None => false,
        };
        if went_offline {
            state.online.remove(&user.id);
            state.typing_sent.remove(&user.id);
            state.presence(&self.name, user, false, session);
        }
        if disconnected && member.protocol == Protocol::Plain {
            let notice = Frame::from_static(plain::DISCONNECTED);
            state.broadcast(&notice, |m| m.protocol == Protocol::Plain);
        }
        true
    }

    pub(super) fn has_member(&self, session: SessionId) -> bool {
        self.lock().members.contains_key(&session)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.lock().members.is_empty()
    }

    /// Marks an empty room retired; returns false (and changes nothing) if it has members.
    pub(super) fn retire_if_empty(&self) -> bool {
        let mut state = self.lock();
        state.retired = state.members.is_empty();
        state.retired
    }

    pub(super) fn member_count(&self) -> usize {
        self.lock().members.len()
    }

    pub(super) fn online_count(&self) -> usize {
        self.lock().online.len()
    }

    /// Sends a `typing` event to the other users' JSON connections, throttled per user.
    pub(super) fn typing(&self, user: &User, interval: Duration) {
        let mut state = self.lock();
        let now = Instant::now();
        if state.typing_sent.get(&user.id).is_some_and(|last| now.duration_since(*last) < interval) {
            return;
        }
        state.typing_sent.insert(user.id.clone(), now);
        let event = ServerFrame::Typing(TypingEvent { room: self.name.clone(), user: user.clone() });
        let frame = Frame::from(event.to_json());
        state.broadcast(&frame, |m| m.protocol == Protocol::Json && m.user.id != user.id);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use bavard_protocol::Timestamp;

    use super::*;
    use crate::hub::{Outbox, Taken};

    fn member(session: SessionId, protocol: Protocol) -> Arc<Subscriber> {
        let user = User { id: format!("g_u{session}"), name: format!("u{session}") };
        Arc::new(Subscriber { session, user, protocol, outbox: Outbox::new(16) })
    }

    fn taken(subscriber: &Subscriber) -> VecDeque<Frame> {
        let mut frames = VecDeque::new();
        assert!(matches!(subscriber.outbox.take(&mut frames), Taken::Frames));
        frames
    }

    #[test]
    fn a_message_is_encoded_once_per_protocol_and_its_bytes_shared_by_every_member() {
        let room = Room::new(RoomName::new("shared").unwrap());
        let members: Vec<_> = [Protocol::Json, Protocol::Json, Protocol::Plain, Protocol::Plain]
            .into_iter()
            .enumerate()
            .map(|(i, protocol)| member(i as SessionId + 1, protocol))
            .collect();
        for subscriber in &members {
            room.add(subscriber).unwrap();
        }
        for subscriber in &members {
            // Drop the presence events: only the message matters here.
            let _ = subscriber.outbox.take(&mut VecDeque::new());
        }
        let message = Message {
            room: RoomName::new("shared").unwrap(),
            seq: 1,
            ts: Timestamp(0),
            from: members[0].user.clone(),
            text: "hello".into(),
            key: None,
            reply_to: None,
        };
        room.deliver(&[&message]);
        let frames: Vec<Frame> = members.iter().map(|m| taken(m).pop_front().unwrap()).collect();
        assert_eq!(frames[2].as_str(), "Message reçu : hello");
        assert!(frames[0].as_str().starts_with(r#"{"type":"message""#));
        // Same protocol, same bytes in memory: one encoding, shared.
        assert_eq!(frames[0].as_str().as_ptr(), frames[1].as_str().as_ptr());
        assert_eq!(frames[2].as_str().as_ptr(), frames[3].as_str().as_ptr());
    }
}
