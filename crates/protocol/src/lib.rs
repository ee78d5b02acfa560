//! The Bavard wire contract in Rust: every frame a client or the server may send on
//! `/ws` (JSON protocol v1) and the two texts of the plain-text protocol of `/ws/chat`.
//!
//! This crate owns shapes and validation rules only; it performs no I/O and knows
//! nothing about rooms, storage or sockets. The server, the client SDK and the
//! AsyncAPI document all agree with it (a test deserializes the document's examples).

mod client;
mod error;
mod limits;
mod messaging;
mod moderation;
#[cfg(feature = "openapi")]
mod openapi;
pub mod plain;
mod room;
mod server;
mod timestamp;

pub use client::{
    ClientFrame, HistoryRequest, JoinRequest, MembersRequest, ParseError, Request, RequestId, SendRequest,
};
pub use error::{ErrorBody, ErrorCode};
pub use limits::{
    close_code, Limits, DEFAULT_HISTORY_LIMIT, DEFAULT_MEMBERS_LIMIT, JOIN_REPLY_MEMBERS, MAX_HISTORY_LIMIT,
    MAX_KEY_CHARS, MAX_MEMBERS_LIMIT,
};
pub use messaging::{
    check_emoji, check_query, check_search_page, check_text, AppendEvent, ChangeReply, DeletedEvent, DmReply,
    DmRequest, EditedEvent, FinishedEvent, MessageRef, ReactRequest, Reaction, ReactionEvent, ReadEvent, ReadReply,
    ReadRequest, SearchReply, SearchRequest, TextChange, DEFAULT_SEARCH_LIMIT, MAX_EMOJI_CHARS, MAX_QUERY_CHARS,
    MAX_REACTIONS_PER_MESSAGE, MAX_SEARCH_LIMIT, MAX_SEARCH_RESULTS, MAX_UNREAD, STREAM_TEXT_FACTOR,
};
pub use moderation::{
    check_sanction, check_slow_mode, check_topic, check_user_id, CreateReply, CreateRequest, ModerationReply,
    ModerationRequest, RefreshReply, RemovedBecause, RemovedEvent, Role, RoleRequest, RoomKind, UserInRoom,
    MAX_DURATION_SECS, MAX_REASON_CHARS, MAX_SLOW_MODE_SECS, MAX_TOPIC_CHARS, MAX_USER_ID_CHARS,
};
pub use room::{RoomName, RoomNameError, MAX_ROOM_NAME_CHARS};
pub use server::{
    encode_error, encode_ok_reply, Empty, HistoryReply, JoinReply, MembersReply, Message, OccupancyEvent,
    PresenceEvent, ReplyFrame, SendReply, ServerFrame, TypingEvent, User, Welcome,
};
pub use timestamp::Timestamp;

/// The protocol version this crate describes, announced in `welcome`.
pub const PROTOCOL_VERSION: u32 = 1;

/// The AsyncAPI 3.0 description of the JSON protocol, served at `/asyncapi.json`.
pub const ASYNCAPI_JSON: &str = include_str!("../asyncapi.json");
