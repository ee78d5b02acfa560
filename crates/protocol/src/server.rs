//! Frames the server sends on `/ws`: `{"type": ...}` events and replies, and the
//! helpers that encode them once so the same bytes can go to every member.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{ErrorBody, Limits, RequestId, RoomName, Timestamp};

/// Who sent a message or is present in a room.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct User {
    /// Stable identifier: a token's `sub` for signed-in users, `g_...` for guests,
    /// `api:...` for REST authors.
    pub id: String,
    /// Display name.
    pub name: String,
}

/// A stored message, as carried by `message` events and in `join`/`history` replies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Message {
    /// The room it belongs to.
    pub room: RoomName,
    /// Its position in the room: 1, 2, 3... gap-free.
    pub seq: u64,
    /// When the server stored it.
    pub ts: Timestamp,
    /// Its author.
    pub from: User,
    /// Its text.
    pub text: String,
    /// The sender's idempotency key, if it gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The seq of the message it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<u64>,
    /// When its author last edited it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edited_at: Option<Timestamp>,
    /// True once deleted: `text` is then empty.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
    /// True while its author streams it (`append` adds text, `finish` ends it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub streaming: bool,
    /// Reactions, per emoji, in the order they were first given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reactions: Vec<crate::Reaction>,
    /// How many messages reply to it (its thread).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub reply_count: u32,
    /// When its latest reply was stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reply_at: Option<Timestamp>,
    /// The room's change number of its last change (edit, delete, reaction, append, finish);
    /// absent for a message never changed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rev: u64,
}

fn is_zero<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

impl Message {
    /// A message as first stored: no edit, reaction, reply or change yet.
    pub fn new(room: RoomName, seq: u64, ts: Timestamp, from: User, text: String) -> Self {
        Self {
            room,
            seq,
            ts,
            from,
            text,
            key: None,
            reply_to: None,
            edited_at: None,
            deleted: false,
            streaming: false,
            reactions: Vec::new(),
            reply_count: 0,
            last_reply_at: None,
            rev: 0,
        }
    }
}

/// The first frame of every JSON connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// Protocol version (1).
    pub protocol: u32,
    /// Server name and version, e.g. `bavard 0.1.0`.
    pub server: String,
    /// Who this connection is.
    pub user: User,
    /// This connection's session id.
    pub session: String,
    /// Limits the client must respect.
    pub limits: Limits,
}

/// Users who came online in (`joined`) or left (`left`) a room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceEvent {
    /// The room.
    pub room: RoomName,
    /// Users now present.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub joined: Vec<User>,
    /// Users no longer present.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub left: Vec<User>,
    /// How many users are online in the room after this change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_count: Option<usize>,
}

/// How many users are online in a room too large for per-user `presence` events: sent
/// at most once per second, when the count changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OccupancyEvent {
    /// The room.
    pub room: RoomName,
    /// How many users are online in it.
    pub member_count: usize,
}

/// Someone is typing in a room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypingEvent {
    /// The room.
    pub room: RoomName,
    /// Who is typing.
    pub user: User,
}

/// The result of a successful `join`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinReply {
    /// The room joined.
    pub room: RoomName,
    /// The last seq in the room when the subscription started; live events follow it.
    pub seq: u64,
    /// How many users are online in the room (this one included).
    #[serde(default)]
    pub member_count: usize,
    /// The first users online in the room, in the order they came online: at most 100
    /// ([`crate::JOIN_REPLY_MEMBERS`]); page through the rest with `members`.
    pub members: Vec<User>,
    /// Present when more members than `members` lists are online: the `cursor` to pass
    /// to `members` for the next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members_cursor: Option<String>,
    /// Recovered or latest messages, oldest first.
    pub messages: Vec<Message>,
    /// With `since`: whether `messages` is the whole gap (if not, page the rest with `history`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovered: Option<bool>,
    /// The room's change number: how many edits, deletes, reactions (added or taken
    /// back), appends and finishes it has seen. Pass the highest `rev` seen as
    /// `since_rev` when joining again.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rev: u64,
    /// With `since_rev`: the messages up to `since` changed after it, in the order of
    /// their last change (at most the recovery limit; `recovered` covers them too).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changed: Vec<Message>,
    /// How many messages of others follow this user's read position (at most 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unread: Option<u64>,
}

/// The result of a successful `send`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SendReply {
    /// The room.
    pub room: RoomName,
    /// The message's seq (the original one for a repeated `key`).
    pub seq: u64,
    /// When it was stored.
    pub ts: Timestamp,
    /// True when `key` had been seen before and nothing new was sent.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub duplicate: bool,
}

/// The result of a successful `history`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HistoryReply {
    /// The page, oldest first.
    pub messages: Vec<Message>,
    /// Whether more messages exist beyond this page in the direction of paging.
    pub has_more: bool,
}

/// The result of a successful `members`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MembersReply {
    /// The room listed.
    pub room: RoomName,
    /// How many users are online in the room.
    pub member_count: usize,
    /// This page of users, in the order they came online.
    pub members: Vec<User>,
    /// Present when more members follow: pass it as `cursor` for the next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// A `reply` as a client reads it: the `ok` flag, the error, or the result fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplyFrame {
    /// The id of the request this answers.
    pub id: RequestId,
    /// Whether the request succeeded.
    pub ok: bool,
    /// Why it failed, when `ok` is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
    /// The result fields, when `ok` is true (see [`JoinReply`], [`SendReply`], [`HistoryReply`]).
    #[serde(flatten)]
    pub result: Map<String, Value>,
}

impl ReplyFrame {
    /// Reads the result fields as `T` (e.g. [`SendReply`]).
    pub fn result_as<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        T::deserialize(Value::Object(self.result.clone()))
    }
}

/// Every frame the server may send on `/ws`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// First frame of a connection.
    Welcome(Welcome),
    /// The answer to a request that carried an `id`.
    Reply(ReplyFrame),
    /// A failed request that carried no `id`.
    Error {
        /// What went wrong.
        error: ErrorBody,
    },
    /// A new message in a joined room.
    Message(Message),
    /// Users came or went in a joined room.
    Presence(PresenceEvent),
    /// Someone types in a joined room.
    Typing(TypingEvent),
    /// How many users are online in a large joined room.
    Occupancy(OccupancyEvent),
    /// This connection was taken out of a room (kicked, banned, no longer a member).
    Removed(crate::RemovedEvent),
    /// A message was edited.
    Edited(crate::EditedEvent),
    /// A message was deleted.
    Deleted(crate::DeletedEvent),
    /// A reaction was added or taken back.
    Reaction(crate::ReactionEvent),
    /// A user's read position moved.
    Read(crate::ReadEvent),
    /// Text was added to a streamed message.
    Append(crate::AppendEvent),
    /// A streamed message is complete.
    Finished(crate::FinishedEvent),
    /// The server is shutting down; the connection closes with 1001 next.
    Closing {
        /// Why, for humans.
        reason: String,
    },
    /// A frame type added by a newer server; clients skip it.
    #[serde(other)]
    Unknown,
}

impl ServerFrame {
    /// The `type` of every frame this version of the protocol defines.
    pub const TYPES: [&'static str; 15] = [
        "welcome",
        "reply",
        "error",
        "message",
        "presence",
        "typing",
        "occupancy",
        "removed",
        "edited",
        "deleted",
        "reaction",
        "read",
        "append",
        "finished",
        "closing",
    ];

    /// The wire `type` of this frame (`unknown` for a frame from a newer server).
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Welcome(_) => "welcome",
            Self::Reply(_) => "reply",
            Self::Error { .. } => "error",
            Self::Message(_) => "message",
            Self::Presence(_) => "presence",
            Self::Typing(_) => "typing",
            Self::Occupancy(_) => "occupancy",
            Self::Removed(_) => "removed",
            Self::Edited(_) => "edited",
            Self::Deleted(_) => "deleted",
            Self::Reaction(_) => "reaction",
            Self::Read(_) => "read",
            Self::Append(_) => "append",
            Self::Finished(_) => "finished",
            Self::Closing { .. } => "closing",
            Self::Unknown => "unknown",
        }
    }

    /// Encodes the frame as JSON text.
    pub fn to_json(&self) -> String {
        // Serializing these types cannot fail: every map key is a string.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Encodes a successful reply whose result fields are those of `result`.
pub fn encode_ok_reply<T: Serialize>(id: &RequestId, result: &T) -> String {
    #[derive(Serialize)]
    struct Ok<'a, T> {
        r#type: &'static str,
        id: &'a RequestId,
        ok: bool,
        #[serde(flatten)]
        result: &'a T,
    }
    serde_json::to_string(&Ok { r#type: "reply", id, ok: true, result }).unwrap_or_default()
}

/// Encodes a failed reply, or an `error` event when the request had no id.
pub fn encode_error(id: Option<&RequestId>, error: &ErrorBody) -> String {
    match id {
        Some(id) => {
            ServerFrame::Reply(ReplyFrame { id: id.clone(), ok: false, error: Some(error.clone()), result: Map::new() })
                .to_json()
        }
        None => ServerFrame::Error { error: error.clone() }.to_json(),
    }
}

/// An empty result for ops whose reply carries nothing but `ok`.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Empty {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;

    #[test]
    fn replies_look_like_the_contract() {
        let ok = encode_ok_reply(&RequestId::Int(7), &Empty {});
        assert_eq!(ok, r#"{"type":"reply","id":7,"ok":true}"#);
        let error = ErrorBody::new(ErrorCode::Forbidden, "you are not a member of room ops");
        let failed = encode_error(Some(&RequestId::Int(7)), &error);
        assert_eq!(
            failed,
            r#"{"type":"reply","id":7,"ok":false,"error":{"code":"forbidden","message":"you are not a member of room ops"}}"#
        );
        let event = encode_error(None, &error);
        assert!(event.starts_with(r#"{"type":"error","error":{"code":"forbidden""#), "{event}");
    }

    #[test]
    fn a_client_reads_typed_results_from_a_reply() {
        let room = RoomName::new("general").unwrap();
        let sent = SendReply { room, seq: 4, ts: Timestamp(5), duplicate: false };
        let text = encode_ok_reply(&RequestId::Str("x".into()), &sent);
        let ServerFrame::Reply(reply) = serde_json::from_str(&text).unwrap() else { panic!("{text}") };
        assert!(reply.ok);
        assert_eq!(reply.result_as::<SendReply>().unwrap(), sent);
    }
}
