//! What makes a chat more than a pipe: direct rooms, edits, deletes, reactions, read
//! positions, search and streamed messages. The requests of those ops, their replies,
//! the events they cause, and their validation rules.

use serde::{Deserialize, Serialize};

use crate::{check_user_id, ErrorBody, ErrorCode, Message, RoomName, Timestamp, User};

/// The longest reaction, in characters (an emoji, or a short word such as `+1`).
pub const MAX_EMOJI_CHARS: usize = 16;
/// The most different reactions one message takes.
pub const MAX_REACTIONS_PER_MESSAGE: usize = 20;
/// The longest search query, in characters.
pub const MAX_QUERY_CHARS: usize = 200;
/// The largest `limit` of a search page.
pub const MAX_SEARCH_LIMIT: u32 = 50;
/// How many results a search page holds when the client names no limit.
pub const DEFAULT_SEARCH_LIMIT: u32 = 20;
/// The furthest a search pages (`offset + limit`).
pub const MAX_SEARCH_RESULTS: u32 = 1000;
/// Unread counts stop here: a room with more unread messages reports this many.
pub const MAX_UNREAD: u64 = 1000;
/// How many times `max_text_chars` a streamed message may grow to.
pub const STREAM_TEXT_FACTOR: usize = 4;

/// How many users reacted to a message with one emoji.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Reaction {
    /// The reaction.
    pub emoji: String,
    /// How many users reacted with it.
    pub count: u32,
    /// Whether the reader is one of them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub me: bool,
}

/// `dm`: the direct room of the caller and `user`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DmRequest {
    /// The other user's id.
    pub user: String,
}

/// The result of `dm`: the room both users share, the same for both.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DmReply {
    /// The direct room (`dm-` and 32 hex digits).
    pub room: RoomName,
}

/// A message of a room: `delete`, `finish`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRef {
    /// The room.
    pub room: RoomName,
    /// The message's seq.
    pub seq: u64,
}

/// `edit` (the new text) and `append` (the text added).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TextChange {
    /// The room.
    pub room: RoomName,
    /// The message's seq.
    pub seq: u64,
    /// The new text (`edit`) or the text to add (`append`).
    pub text: String,
}

/// `react` and `unreact`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReactRequest {
    /// The room.
    pub room: RoomName,
    /// The message's seq.
    pub seq: u64,
    /// The reaction (1 to 16 characters, no spaces).
    pub emoji: String,
}

/// `read`: the caller has read the room up to `seq`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadRequest {
    /// The room.
    pub room: RoomName,
    /// The last seq read.
    pub seq: u64,
}

/// `search`: messages of a room matching words, best first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchRequest {
    /// The room.
    pub room: RoomName,
    /// The words to look for (1 to 200 characters); a message matches when it has them
    /// all, the last one as a prefix.
    pub q: String,
    /// Page size, 1 to 50 (default 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// How many results to skip (the previous pages'), default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u32>,
}

/// The result of `edit`, `delete`, `append`, `finish`, `react` and `unreact`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChangeReply {
    /// The room.
    pub room: RoomName,
    /// The message changed.
    pub seq: u64,
    /// The room's change number after this change (see `rev` in `join`).
    pub rev: u64,
}

/// The result of `read`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReadReply {
    /// The room.
    pub room: RoomName,
    /// The caller's read position now (never lower than before).
    pub seq: u64,
    /// Messages of others after it (at most 1000).
    pub unread: u64,
}

/// The result of `search`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SearchReply {
    /// The matching messages, best first.
    pub messages: Vec<Message>,
    /// Whether more results follow (ask again with `offset` + the page's length).
    pub has_more: bool,
}

/// A message's text was edited by its author.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EditedEvent {
    /// The room.
    pub room: RoomName,
    /// The message.
    pub seq: u64,
    /// Its new text.
    pub text: String,
    /// When it was edited.
    pub edited_at: Timestamp,
    /// The room's change number of this change.
    pub rev: u64,
}

/// A message was deleted: its text is gone, its seq stays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletedEvent {
    /// The room.
    pub room: RoomName,
    /// The message.
    pub seq: u64,
    /// The room's change number of this change.
    pub rev: u64,
}

/// A user reacted to a message, or took a reaction back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReactionEvent {
    /// The room.
    pub room: RoomName,
    /// The message.
    pub seq: u64,
    /// The reaction.
    pub emoji: String,
    /// Who reacted.
    pub user: User,
    /// True for `react`, false for `unreact`.
    pub added: bool,
    /// How many users now react with `emoji`.
    pub count: u32,
    /// The room's change number of this change.
    pub rev: u64,
}

/// A user's read position in a room moved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadEvent {
    /// The room.
    pub room: RoomName,
    /// Who read.
    pub user: User,
    /// Their read position now.
    pub seq: u64,
}

/// Text was added to a streamed message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendEvent {
    /// The room.
    pub room: RoomName,
    /// The message.
    pub seq: u64,
    /// The text added.
    pub text: String,
    /// How many characters the message had before it: a client whose copy is not that
    /// long missed an append, and reads the message again (`history`).
    pub offset: usize,
    /// The room's change number of this change.
    pub rev: u64,
}

/// A streamed message is complete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinishedEvent {
    /// The room.
    pub room: RoomName,
    /// The message.
    pub seq: u64,
    /// The room's change number of this change.
    pub rev: u64,
}

/// Checks a reaction: 1 to [`MAX_EMOJI_CHARS`] characters, no whitespace or control.
pub fn check_emoji(emoji: &str) -> Result<(), ErrorBody> {
    let chars = emoji.chars().count();
    if chars == 0 || chars > MAX_EMOJI_CHARS || emoji.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ErrorBody::new(
            ErrorCode::BadRequest,
            format!("a reaction has 1 to {MAX_EMOJI_CHARS} characters, without spaces or control characters"),
        ));
    }
    Ok(())
}

/// Checks a search query: 1 to [`MAX_QUERY_CHARS`] characters (one without a letter or
/// digit is valid, and finds nothing).
pub fn check_query(q: &str) -> Result<(), ErrorBody> {
    let chars = q.chars().count();
    if chars == 0 || chars > MAX_QUERY_CHARS {
        return Err(ErrorBody::new(ErrorCode::BadRequest, format!("q must have 1 to {MAX_QUERY_CHARS} characters")));
    }
    Ok(())
}

/// Checks a search page's `limit` and `offset`.
pub fn check_search_page(limit: Option<u32>, offset: Option<u32>) -> Result<(), ErrorBody> {
    let limit = limit.unwrap_or(DEFAULT_SEARCH_LIMIT);
    if limit == 0 || limit > MAX_SEARCH_LIMIT {
        return Err(ErrorBody::new(ErrorCode::BadRequest, format!("limit must be 1 to {MAX_SEARCH_LIMIT}")));
    }
    if offset.unwrap_or(0) >= MAX_SEARCH_RESULTS {
        return Err(ErrorBody::new(
            ErrorCode::BadRequest,
            format!(
                "a search pages through its first {MAX_SEARCH_RESULTS} results: offset is at most {}",
                MAX_SEARCH_RESULTS - 1
            ),
        ));
    }
    Ok(())
}

/// Checks a message text: 1 to `max_chars` characters.
pub fn check_text(text: &str, max_chars: usize) -> Result<(), ErrorBody> {
    if text.is_empty() {
        return Err(ErrorBody::new(ErrorCode::BadRequest, "text must not be empty"));
    }
    let chars = text.chars().count();
    if chars > max_chars {
        return Err(ErrorBody::new(
            ErrorCode::TooLarge,
            format!("text has {chars} characters; the limit is {max_chars}"),
        ));
    }
    Ok(())
}

/// Checks the other user of a `dm`.
pub fn check_dm(request: &DmRequest) -> Result<(), ErrorBody> {
    check_user_id(&request.user)
}

fn seq_is_positive(seq: u64) -> Result<(), ErrorBody> {
    if seq == 0 {
        return Err(ErrorBody::new(ErrorCode::BadRequest, "seq starts at 1"));
    }
    Ok(())
}

impl MessageRef {
    /// The seq is a message's (at least 1).
    pub fn validate(&self) -> Result<(), ErrorBody> {
        seq_is_positive(self.seq)
    }
}

impl TextChange {
    /// The seq is a message's and the text has 1 to `max_chars` characters.
    pub fn validate(&self, max_chars: usize) -> Result<(), ErrorBody> {
        seq_is_positive(self.seq)?;
        check_text(&self.text, max_chars)
    }
}

impl ReactRequest {
    /// The seq is a message's and the emoji a valid reaction.
    pub fn validate(&self) -> Result<(), ErrorBody> {
        seq_is_positive(self.seq)?;
        check_emoji(&self.emoji)
    }
}

impl SearchRequest {
    /// The query and the page are within bounds.
    pub fn validate(&self) -> Result<(), ErrorBody> {
        check_query(&self.q)?;
        check_search_page(self.limit, self.offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reactions_queries_and_pages_are_bounded() {
        assert!(check_emoji("👍").is_ok());
        assert!(check_emoji("+1").is_ok());
        assert!(check_emoji("").is_err());
        assert!(check_emoji("a b").is_err());
        assert!(check_emoji(&"x".repeat(17)).is_err());
        assert!(check_query("hello world").is_ok());
        assert!(check_query("").is_err());
        assert!(check_query(&"q".repeat(201)).is_err());
        assert!(check_search_page(None, None).is_ok());
        assert!(check_search_page(Some(0), None).is_err());
        assert!(check_search_page(Some(50), Some(999)).is_ok());
        assert!(check_search_page(Some(50), Some(1000)).is_err());
    }
}
