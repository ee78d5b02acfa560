//! The chat features on top of messages, for the WebSocket ops and the REST API alike:
//! direct rooms, edits, deletes, streamed messages, reactions, read positions, threads
//! and search. Each is checked against the room's rules here (read or write right,
//! the user's bucket), against the message (author, state) by the store in the same
//! step as the change, and then told to the room's JSON members on every node as an
//! event carrying the room's change number `rev` (see `docs/protocol.md`).

use bavard_protocol::{
    AppendEvent, ChangeReply, DeletedEvent, EditedEvent, FinishedEvent, HistoryReply, Message, ReactionEvent,
    ReadEvent, ReadReply, RoomKind, RoomName, SearchReply, ServerFrame, Timestamp, User, STREAM_TEXT_FACTOR,
};

use super::{Frame, Hub, HubError, GUEST_PREFIX};
use crate::{
    auth::{Actor, Standing, Who},
    broker::{ClusterBody, ClusterEvent},
    store::{AuditEntry, ChangeMessage, ChangeRefused, MessageChange, NewRoom, PageQuery},
};

/// How direct rooms' names start; no other room may take such a name.
pub const DIRECT_PREFIX: &str = "dm-";

/// A change a user asks for, as the hub's callers name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// New text for one's message.
    Edit(String),
    /// Delete a message (one's own, or any as a moderator).
    Delete,
    /// Add text to one's streamed message.
    Append(String),
    /// End one's streamed message.
    Finish,
    /// React (true) or take a reaction back (false).
    React(String, bool),
}

/// The direct room of two users: `dm-` and the first 128 bits of the SHA-256 of their
/// ids (in order, NUL-separated), in hex; the same whoever asks.
pub fn direct_room_name(a: &str, b: &str) -> Result<RoomName, HubError> {
    use sha2::{Digest, Sha256};
    let (first, second) = if a <= b { (a, b) } else { (b, a) };
    let mut hash = Sha256::new();
    hash.update(first.as_bytes());
    hash.update([0]);
    hash.update(second.as_bytes());
    let digest = hash.finalize();
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    RoomName::new(&format!("{DIRECT_PREFIX}{hex}"))
        .map_err(|e| HubError::Forbidden(format!("cannot name the direct room: {e}")))
}

impl From<ChangeRefused> for HubError {
    fn from(refused: ChangeRefused) -> Self {
        match refused {
            ChangeRefused::NoMessage { room, seq } => HubError::NoMessage { room, seq },
            ChangeRefused::Deleted(_) | ChangeRefused::NotStreaming(_) | ChangeRefused::Streaming(_) => {
                HubError::Conflict(refused.to_string())
            }
            ChangeRefused::TooLong(_) => HubError::TooLarge(refused.to_string()),
            ChangeRefused::NotAuthor { .. } | ChangeRefused::TooManyReactions(_) => {
                HubError::Forbidden(refused.to_string())
            }
        }
    }
}

impl Hub {
    /// Opens (or finds) the direct room of `actor` and `other`: private to the two of
    /// them, made on first use. Signed-in users only (a guest's id proves nothing and
    /// does not last).
    pub async fn direct_room(&self, actor: &Actor, other: &str) -> Result<RoomName, HubError> {
        let me = &actor.user.id;
        if actor.standing == Standing::Guest || me.starts_with(GUEST_PREFIX) {
            return Err(HubError::Forbidden("direct messages need a signed-in user: connect with a token".into()));
        }
        if other == me {
            return Err(HubError::BadRequest("a direct room needs another user than you".into()));
        }
        if other.starts_with(GUEST_PREFIX) {
            return Err(HubError::BadRequest(format!("{other} is a guest: guests have no direct rooms")));
        }
        let name = direct_room_name(me, other)?;
        let guard = self.guards.get(self.store.as_ref(), &name).await?;
        if guard.read(|rules| rules.kind == RoomKind::Direct && rules.role(me).is_some()) {
            return Ok(name);
        }
        let entry = AuditEntry {
            ts: Timestamp::now(),
            actor: actor.user.clone(),
            action: "create".into(),
            target: Some(other.to_owned()),
            reason: None,
            detail: Some(RoomKind::Direct.as_str().into()),
        };
        let room = NewRoom {
            room: name.clone(),
            kind: RoomKind::Direct,
            topic: String::new(),
            owner: None,
            members: vec![me.clone(), other.to_owned()],
        };
        self.store.create_room(room, entry).await?;
        // Read the rules again: made now, or by the other user a moment ago.
        self.guards.forget(&name);
        let guard = self.guards.get(self.store.as_ref(), &name).await?;
        if !guard.read(|rules| rules.kind == RoomKind::Direct && rules.role(me).is_some()) {
            return Err(HubError::Forbidden(format!("room {name} is not your direct room")));
        }
        self.metrics.moderation_action("dm");
        Ok(name)
    }

    /// Applies a change to message `seq` of `room` for `actor`, and tells the room.
    pub async fn change_message(
        &self,
        actor: &Actor,
        room: &RoomName,
        seq: u64,
        change: Change,
    ) -> Result<ChangeReply, HubError> {
        let who = actor.who();
        let guard = self.guards.get(self.store.as_ref(), room).await?;
        let now = Timestamp::now();
        let (moderator, rights) = guard.read(|rules| {
            let rights = match change {
                // Deleting one's words is allowed to the muted; a moderator's power is checked by the store.
                Change::Delete => rules.check_read(who, room.as_str(), now),
                _ => rules.check_write(who, room.as_str(), now),
            };
            (rules.is_moderator(who) && rules.kind != RoomKind::Direct, rights)
        });
        rights.map_err(HubError::Forbidden)?;
        if !actor.is_admin() {
            self.take_from_bucket(&actor.user.id)?;
        }
        let max_stream_chars = self.settings.max_text_chars * STREAM_TEXT_FACTOR;
        let (store_change, text) = match &change {
            Change::Edit(text) => (MessageChange::Edit(text.clone()), text.clone()),
            Change::Delete => (MessageChange::Delete, String::new()),
            Change::Append(text) => {
                (MessageChange::Append { text: text.clone(), max_chars: max_stream_chars }, text.clone())
            }
            Change::Finish => (MessageChange::Finish, String::new()),
            Change::React(emoji, on) => (MessageChange::React { emoji: emoji.clone(), on: *on }, emoji.clone()),
        };
        let ask = ChangeMessage {
            room: room.clone(),
            seq,
            by: actor.user.id.clone(),
            moderator,
            change: store_change,
            at: now,
        };
        let done = self.store.change_message(ask).await??;
        if done.changed {
            let room = room.clone();
            let rev = done.rev;
            let event = match change {
                Change::Edit(_) => ServerFrame::Edited(EditedEvent { room, seq, text, edited_at: now, rev }),
                Change::Delete => ServerFrame::Deleted(DeletedEvent { room, seq, rev }),
                Change::Append(_) => ServerFrame::Append(AppendEvent { room, seq, text, offset: done.offset, rev }),
                Change::Finish => ServerFrame::Finished(FinishedEvent { room, seq, rev }),
                Change::React(_, added) => ServerFrame::Reaction(ReactionEvent {
                    room,
                    seq,
                    emoji: text,
                    user: actor.user.clone(),
                    added,
                    count: done.count,
                    rev,
                }),
            };
            self.tell_room(event, None);
            self.metrics.message_changed(match change {
                Change::Edit(_) => "edit",
                Change::Delete => "delete",
                Change::Append(_) => "append",
                Change::Finish => "finish",
                Change::React(_, true) => "react",
                Change::React(_, false) => "unreact",
            });
        }
        Ok(ChangeReply { room: room.clone(), seq, rev: done.rev })
    }

    /// Moves `user`'s read position in `room` to `seq` (never back, never past the
    /// room's last message), and tells the room's members when it is small enough, or
    /// else the user's own connections.
    pub async fn mark_read(&self, who: Who<'_>, user: &User, room: &RoomName, seq: u64) -> Result<ReadReply, HubError> {
        self.check_read(who, room).await?;
        let record = self.store.room(room.clone()).await?;
        let last = record.ok_or_else(|| HubError::UnknownRoom(room.clone()))?.last_seq;
        let (position, moved) = self.store.mark_read(room.clone(), user.id.clone(), seq.min(last)).await?;
        let unread = self.store.unread(room.clone(), user.id.clone()).await?;
        if moved {
            let everyone = self.online_count(room) <= self.settings.read_receipts_max_members;
            let event = ServerFrame::Read(ReadEvent { room: room.clone(), user: user.clone(), seq: position });
            self.tell_room(event, (!everyone).then(|| user.id.clone()));
        }
        Ok(ReadReply { room: room.clone(), seq: position, unread })
    }

    /// How many messages of others follow `user`'s read position in `room`.
    pub async fn unread(&self, room: &RoomName, user: &str) -> Result<u64, HubError> {
        Ok(self.store.unread(room.clone(), user.to_owned()).await?)
    }

    /// Brings `messages` of `room` to their current state for `viewer`.
    pub(super) async fn current(
        &self,
        room: &RoomName,
        messages: Vec<Message>,
        viewer: Option<&str>,
    ) -> Result<Vec<Message>, HubError> {
        Ok(self.store.annotate(room.clone(), messages, viewer.map(str::to_owned)).await?)
    }

    /// The messages of `room` with these seqs, in their current state, in that order.
    pub(super) async fn current_at(
        &self,
        room: &RoomName,
        seqs: Vec<u64>,
        viewer: Option<&str>,
    ) -> Result<Vec<Message>, HubError> {
        if seqs.is_empty() {
            return Ok(Vec::new());
        }
        let messages = self.store.messages_at(room.clone(), seqs).await?;
        self.current(room, messages, viewer).await
    }

    /// A page of the replies to `root`, oldest first, in their current state.
    pub async fn thread(
        &self,
        who: Who<'_>,
        room: &RoomName,
        root: u64,
        query: PageQuery,
    ) -> Result<HistoryReply, HubError> {
        self.check_read(who, room).await?;
        let (seqs, has_more) = self.store.thread(room.clone(), root, query).await?;
        Ok(HistoryReply { messages: self.current_at(room, seqs, Some(who.id)).await?, has_more })
    }

    /// `room`'s messages matching the words of `q`, best first, deleted ones left out.
    pub async fn search(
        &self,
        who: Who<'_>,
        room: &RoomName,
        q: &str,
        limit: u32,
        offset: u32,
    ) -> Result<SearchReply, HubError> {
        self.check_read(who, room).await?;
        // A page reaching past the first results a search pages through is cut there.
        let limit = limit.min(bavard_protocol::MAX_SEARCH_RESULTS.saturating_sub(offset));
        if limit == 0 {
            return Ok(SearchReply { messages: Vec::new(), has_more: false });
        }
        let (seqs, has_more) = self.store.search(room.clone(), q.to_owned(), limit, offset).await?;
        let has_more = has_more && offset + limit < bavard_protocol::MAX_SEARCH_RESULTS;
        let mut messages = self.current_at(room, seqs, Some(who.id)).await?;
        messages.retain(|m| !m.deleted);
        self.metrics.searched();
        Ok(SearchReply { messages, has_more })
    }

    /// Sends `event` to the room's JSON members here and on the other nodes (only to
    /// `only_user`'s connections when set).
    pub(super) fn tell_room(&self, event: ServerFrame, only_user: Option<String>) {
        let room = match &event {
            ServerFrame::Edited(e) => e.room.clone(),
            ServerFrame::Deleted(e) => e.room.clone(),
            ServerFrame::Reaction(e) => e.room.clone(),
            ServerFrame::Read(e) => e.room.clone(),
            ServerFrame::Append(e) => e.room.clone(),
            ServerFrame::Finished(e) => e.room.clone(),
            _ => return,
        };
        let json = event.to_json();
        self.deliver_event(&room, &json, only_user.as_deref());
        if self.broker.clustered() {
            let body = ClusterBody::RoomEvent { room, event: json, only_user };
            self.broker.publish(ClusterEvent { origin: std::sync::Arc::clone(&self.settings.node), body });
        }
    }

    /// Delivers an event (JSON text) to the room's JSON members on this node.
    pub(super) fn deliver_event(&self, room: &RoomName, json: &str, only_user: Option<&str>) {
        if let Some(room) = self.room(room) {
            room.to_json(&Frame::from(json.to_owned()), |member| only_user.is_some_and(|user| member.user.id != user));
        }
    }
}
