//! The tail: messages committed to the journal but not yet archived into the
//! room-ordered `messages` table, kept in memory by room so that reads see them
//! without the journal needing an index.
//!
//! Only the writer changes it: it appends after each journal commit and forgets what
//! each archive commit moved. A reader copies the tail's part of its range first and
//! queries the database second, so whatever the archive moves in between is seen at
//! least once; [`merge`] drops the overlap.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, RwLock},
};

use bavard_protocol::{Message, RoomName};

use crate::store::{Page, PageQuery};

/// Recent messages by room, each room's in seq order with no gap.
#[derive(Default)]
pub(super) struct Tail {
    rooms: RwLock<HashMap<RoomName, VecDeque<Arc<Message>>>>,
}

/// What a query found in the tail.
pub(super) struct TailSlice {
    /// The tail's messages in the query's range, oldest first (at most `limit + 1`).
    pub(super) messages: Vec<Message>,
    /// Whether the tail alone answers the query: the database need not be read.
    pub(super) complete: bool,
}

impl Tail {
    /// Adds committed messages (in seq order within each room).
    pub(super) fn extend(&self, messages: &[Arc<Message>]) {
        let mut rooms = self.rooms.write().unwrap_or_else(|p| p.into_inner());
        for message in messages {
            // A room name is cloned only when its room enters the tail, not per message.
            match rooms.get_mut(&message.room) {
                Some(recent) => recent.push_back(Arc::clone(message)),
                None => {
                    rooms.insert(message.room.clone(), VecDeque::from([Arc::clone(message)]));
                }
            }
        }
    }

    /// Forgets each room's messages up to the given seq: the archive now holds them.
    pub(super) fn forget_through(&self, archived: &HashMap<RoomName, u64>) {
        let mut rooms = self.rooms.write().unwrap_or_else(|p| p.into_inner());
        for (room, through) in archived {
            if let Some(recent) = rooms.get_mut(room) {
                while recent.front().is_some_and(|m| m.seq <= *through) {
                    recent.pop_front();
                }
                if recent.is_empty() {
                    rooms.remove(room);
                }
            }
        }
    }

    /// The message `seq` of `room`, if the tail holds it.
    pub(super) fn get(&self, room: &RoomName, seq: u64) -> Option<Arc<Message>> {
        let rooms = self.rooms.read().unwrap_or_else(|p| p.into_inner());
        let recent = rooms.get(room)?;
        let first = recent.front()?.seq;
        // Each room's tail is gap-free: the index is the distance from its first seq.
        let at = recent.get(usize::try_from(seq.checked_sub(first)?).ok()?)?;
        (at.seq == seq).then(|| Arc::clone(at))
    }

    /// The tail's part of `query` in `room`.
    pub(super) fn slice(&self, room: &RoomName, query: PageQuery) -> TailSlice {
        let rooms = self.rooms.read().unwrap_or_else(|p| p.into_inner());
        let Some(recent) = rooms.get(room) else {
            return TailSlice { messages: Vec::new(), complete: false };
        };
        let first = recent.front().map_or(u64::MAX, |m| m.seq);
        match query {
            PageQuery::Before { before, limit } => {
                let below = |m: &&Arc<Message>| before.is_none_or(|b| m.seq < b);
                let wanted = limit as usize + 1;
                let mut newest: Vec<Message> =
                    recent.iter().rev().filter(below).take(wanted).map(|m| Message::clone(m)).collect();
                newest.reverse();
                // The tail holds the room's newest messages: enough of them answer alone.
                let complete = newest.len() == wanted || first == 1;
                TailSlice { messages: newest, complete }
            }
            PageQuery::After { after, before, limit } => {
                let in_range = |m: &&Arc<Message>| m.seq > after && before.is_none_or(|b| m.seq < b);
                let messages: Vec<Message> =
                    recent.iter().filter(in_range).take(limit as usize + 1).map(|m| Message::clone(m)).collect();
                // Every seq after `after` is here when the tail starts at or before it.
                TailSlice { messages, complete: first <= after.saturating_add(1) }
            }
        }
    }
}

/// Combines what the database returned with the tail's slice into one page: sorted,
/// without duplicates, `limit` long, and `has_more` when more exist that way.
pub(super) fn merge(query: PageQuery, stored: Vec<Message>, recent: Vec<Message>) -> Page {
    let mut messages = stored;
    messages.extend(recent);
    messages.sort_by_key(|m| m.seq);
    messages.dedup_by_key(|m| m.seq);
    let limit = match query {
        PageQuery::Before { limit, .. } | PageQuery::After { limit, .. } => limit as usize,
    };
    let has_more = messages.len() > limit;
    if has_more {
        match query {
            // The newest `limit`, oldest first.
            PageQuery::Before { .. } => drop(messages.drain(..messages.len() - limit)),
            PageQuery::After { .. } => messages.truncate(limit),
        }
    }
    Page { messages, has_more }
}

#[cfg(test)]
mod tests {
    use bavard_protocol::{Timestamp, User};

    use super::*;

    fn message(seq: u64) -> Arc<Message> {
        Arc::new(Message::new(
            RoomName::new("r").unwrap(),
            seq,
            Timestamp(0),
            User { id: "u".into(), name: "u".into() },
            format!("m{seq}"),
        ))
    }

    fn seqs(messages: &[Message]) -> Vec<u64> {
        messages.iter().map(|m| m.seq).collect()
    }

    #[test]
    fn the_tail_answers_alone_only_when_it_covers_the_range() {
        let tail = Tail::default();
        let room = RoomName::new("r").unwrap();
        tail.extend(&(11..=20).map(message).collect::<Vec<_>>());
        let last5 = tail.slice(&room, PageQuery::Before { before: None, limit: 5 });
        assert_eq!((seqs(&last5.messages), last5.complete), (vec![15, 16, 17, 18, 19, 20], true));
        let last20 = tail.slice(&room, PageQuery::Before { before: Some(21), limit: 20 });
        assert!(!last20.complete, "seqs 1 to 10 are in the archive");
        let after12 = tail.slice(&room, PageQuery::After { after: 12, before: Some(15), limit: 50 });
        assert_eq!((seqs(&after12.messages), after12.complete), (vec![13, 14], true));
        assert!(!tail.slice(&room, PageQuery::After { after: 5, before: None, limit: 50 }).complete);
    }

    #[test]
    fn merging_drops_what_both_sides_hold_and_pages_in_the_asked_direction() {
        let stored: Vec<Message> = (1..=12).map(|s| Message::clone(&message(s))).collect();
        let recent: Vec<Message> = (10..=20).map(|s| Message::clone(&message(s))).collect();
        let before = merge(PageQuery::Before { before: None, limit: 5 }, stored.clone(), recent.clone());
        assert_eq!((seqs(&before.messages), before.has_more), (vec![16, 17, 18, 19, 20], true));
        let after = merge(PageQuery::After { after: 0, before: None, limit: 15 }, stored, recent);
        assert_eq!((seqs(&after.messages), after.has_more), ((1..=15).collect(), true));
    }
}
