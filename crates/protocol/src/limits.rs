//! Limits announced in `welcome` and the WebSocket close codes of the protocol.

use serde::{Deserialize, Serialize};

/// The longest idempotency `key` accepted by `send`, in characters.
pub const MAX_KEY_CHARS: usize = 64;

/// The largest `limit` accepted by `history`.
pub const MAX_HISTORY_LIMIT: u32 = 200;

/// How many messages `join` and `history` return when the client names no limit.
pub const DEFAULT_HISTORY_LIMIT: u32 = 50;

/// The largest `limit` accepted by `members`.
pub const MAX_MEMBERS_LIMIT: u32 = 1000;

/// How many members `members` lists when the client names no limit.
pub const DEFAULT_MEMBERS_LIMIT: u32 = 100;

/// The most members a `join` reply lists; `members` pages through the rest.
pub const JOIN_REPLY_MEMBERS: usize = 100;

/// The limits a connection must respect, announced in `welcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Largest frame the server accepts; larger ones close the connection with 1009.
    pub max_frame_bytes: usize,
    /// Longest message text, in characters.
    pub max_text_chars: usize,
}

/// WebSocket close codes used by the server.
pub mod close_code {
    /// Normal close.
    pub const NORMAL: u16 = 1000;
    /// The server is shutting down; reconnect elsewhere or later.
    pub const GOING_AWAY: u16 = 1001;
    /// The client broke the WebSocket protocol (bad framing, masking, opcodes).
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A binary frame on a text protocol.
    pub const UNSUPPORTED_DATA: u16 = 1003;
    /// A text frame or close reason that is not valid UTF-8.
    pub const INVALID_DATA: u16 = 1007;
    /// Policy: bad origin, banned, bad or expired token.
    pub const POLICY: u16 = 1008;
    /// A frame larger than `max_frame_bytes`.
    pub const TOO_BIG: u16 = 1009;
    /// Internal error.
    pub const INTERNAL: u16 = 1011;
    /// Slow consumer: reconnect and recover with `since`.
    pub const SLOW_CONSUMER: u16 = 4008;
    /// Rate limit exceeded repeatedly.
    pub const RATE_LIMITED: u16 = 4029;
}
