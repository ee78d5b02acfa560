//! Frames a client sends on `/ws`: `{"op": ..., "id"?: ...}` and how they are parsed,
//! including the error a malformed frame earns (with its `id` when one could be read).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{
    messaging::check_dm,
    moderation::{check_topic, check_user_id},
    CreateRequest, DmRequest, ErrorBody, ErrorCode, MessageRef, ModerationRequest, ReactRequest, ReadRequest,
    RoleRequest, RoomName, SearchRequest, TextChange, UserInRoom, MAX_HISTORY_LIMIT, MAX_KEY_CHARS, MAX_MEMBERS_LIMIT,
};

/// A request id chosen by the client: a string or an integer, echoed in the reply.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RequestId {
    /// An integer id.
    Int(i64),
    /// A string id.
    Str(String),
}

impl From<i64> for RequestId {
    fn from(value: i64) -> Self {
        Self::Int(value)
    }
}

impl From<&str> for RequestId {
    fn from(value: &str) -> Self {
        Self::Str(value.to_owned())
    }
}

/// `join`: subscribe to a room, optionally recovering everything after `since`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JoinRequest {
    /// The room to join.
    pub room: RoomName,
    /// The last seq the client has; the reply holds every message after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<u64>,
    /// Without `since`: how many of the latest messages to return (default 50, at most 200).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// With `since`: the highest change number (`rev`) the client has seen; the reply's
    /// `changed` holds the messages up to `since` changed after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_rev: Option<u64>,
}

/// `send`: append a message to a room.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SendRequest {
    /// The room to post in.
    pub room: RoomName,
    /// The message text, 1 to `max_text_chars` characters.
    pub text: String,
    /// Idempotency key (at most 64 characters): a repeat from the same user in the same
    /// room replies with the original seq and sends nothing new.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The seq of the message this one answers (it joins that message's thread).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<u64>,
    /// Starts a streamed message: `append` adds to it and `finish` ends it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stream: bool,
}

/// `history`: page through a room's stored messages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryRequest {
    /// The room to read.
    pub room: RoomName,
    /// Only messages with a seq below this one (the page nearest to it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<u64>,
    /// Only messages with a seq above this one (the page nearest to it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<u64>,
    /// Page size, at most 200 (default 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// Only the replies to this message (its thread), oldest first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread: Option<u64>,
}

/// `members`: page through the users online in a room, in the order they came online.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MembersRequest {
    /// The room to list.
    pub room: RoomName,
    /// Where the previous page ended (its reply's `cursor`, or the `join` reply's
    /// `members_cursor`); absent for the first page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// Page size, at most 1000 (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// One operation of protocol v1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Subscribe to a room.
    Join(JoinRequest),
    /// Unsubscribe from a room.
    Leave {
        /// The room to leave.
        room: RoomName,
    },
    /// Post a message.
    Send(SendRequest),
    /// Read stored messages.
    History(HistoryRequest),
    /// Tell the room this user is typing.
    Typing {
        /// The room the user types in.
        room: RoomName,
    },
    /// A no-op whose reply proves the connection is alive.
    Ping,
    /// List who is online in a room, a page at a time.
    Members(MembersRequest),
    /// Create a room and own it (signed-in users).
    Create(CreateRequest),
    /// Give a user a role in a room (default `member`): owners and moderators.
    AddMember(RoleRequest),
    /// Take a user's role in a room away (and, in a private room, the user out of it).
    RemoveMember(UserInRoom),
    /// Change a user's role in a room: owners.
    SetRole(RoleRequest),
    /// End a user's membership of a room on every connection (for a while, with
    /// `duration_secs`).
    Kick(ModerationRequest),
    /// Keep a user out of a room: no join, no read, no write.
    Ban(ModerationRequest),
    /// Lift a ban.
    Unban(ModerationRequest),
    /// Stop a user from writing in a room.
    Mute(ModerationRequest),
    /// Lift a mute.
    Unmute(ModerationRequest),
    /// Present a fresh token before the connection's one expires.
    Refresh {
        /// The new JWT (same `sub`).
        token: String,
    },
    /// Open (or find) the direct room of the caller and another user.
    Dm(DmRequest),
    /// Change the text of one's own message.
    Edit(TextChange),
    /// Delete a message (its author, or a moderator).
    Delete(MessageRef),
    /// React to a message.
    React(ReactRequest),
    /// Take one's reaction back.
    Unreact(ReactRequest),
    /// Move one's read position in a room.
    Read(ReadRequest),
    /// Search a room's messages.
    Search(SearchRequest),
    /// Add text to one's streamed message.
    Append(TextChange),
    /// End one's streamed message.
    Finish(MessageRef),
}

impl Request {
    /// The ops this version understands.
    pub const OPS: [&'static str; 26] = [
        "join",
        "leave",
        "send",
        "history",
        "typing",
        "ping",
        "members",
        "create",
        "add_member",
        "remove_member",
        "set_role",
        "kick",
        "ban",
        "unban",
        "mute",
        "unmute",
        "refresh",
        "dm",
        "edit",
        "delete",
        "react",
        "unreact",
        "read",
        "search",
        "append",
        "finish",
    ];

    /// The wire name of this request's op.
    pub fn op(&self) -> &'static str {
        match self {
            Self::Join(_) => "join",
            Self::Leave { .. } => "leave",
            Self::Send(_) => "send",
            Self::History(_) => "history",
            Self::Typing { .. } => "typing",
            Self::Ping => "ping",
            Self::Members(_) => "members",
            Self::Create(_) => "create",
            Self::AddMember(_) => "add_member",
            Self::RemoveMember(_) => "remove_member",
            Self::SetRole(_) => "set_role",
            Self::Kick(_) => "kick",
            Self::Ban(_) => "ban",
            Self::Unban(_) => "unban",
            Self::Mute(_) => "mute",
            Self::Unmute(_) => "unmute",
            Self::Refresh { .. } => "refresh",
            Self::Dm(_) => "dm",
            Self::Edit(_) => "edit",
            Self::Delete(_) => "delete",
            Self::React(_) => "react",
            Self::Unreact(_) => "unreact",
            Self::Read(_) => "read",
            Self::Search(_) => "search",
            Self::Append(_) => "append",
            Self::Finish(_) => "finish",
        }
    }

    /// Range checks that the types alone do not express.
    pub fn validate(&self, max_text_chars: usize) -> Result<(), ErrorBody> {
        let bad = |message: String| Err(ErrorBody::new(ErrorCode::BadRequest, message));
        match self {
            Self::Send(send) => send.validate(max_text_chars),
            Self::History(HistoryRequest { limit: Some(limit), .. })
            | Self::Join(JoinRequest { limit: Some(limit), .. })
                if *limit > MAX_HISTORY_LIMIT =>
            {
                bad(format!("limit must be at most {MAX_HISTORY_LIMIT}"))
            }
            Self::Members(MembersRequest { limit: Some(limit), .. }) if *limit == 0 || *limit > MAX_MEMBERS_LIMIT => {
                bad(format!("limit must be 1 to {MAX_MEMBERS_LIMIT}"))
            }
            Self::Create(create) => create.topic.as_deref().map_or(Ok(()), check_topic),
            Self::AddMember(RoleRequest { user, .. }) | Self::RemoveMember(UserInRoom { user, .. }) => {
                check_user_id(user)
            }
            Self::SetRole(RoleRequest { user, role, .. }) => {
                check_user_id(user)?;
                match role {
                    Some(_) => Ok(()),
                    None => bad("set_role needs a role: owner, moderator or member".to_owned()),
                }
            }
            Self::Kick(action)
            | Self::Ban(action)
            | Self::Unban(action)
            | Self::Mute(action)
            | Self::Unmute(action) => action.validate(),
            Self::Refresh { token } if token.is_empty() => bad("token must not be empty".to_owned()),
            Self::Dm(dm) => check_dm(dm),
            Self::Edit(change) => change.validate(max_text_chars),
            // The total a streamed message may reach is the hub's to check.
            Self::Append(change) => change.validate(max_text_chars),
            Self::Delete(message) | Self::Finish(message) => message.validate(),
            Self::React(react) | Self::Unreact(react) => react.validate(),
            Self::Search(search) => search.validate(),
            _ => Ok(()),
        }
    }
}

impl SendRequest {
    /// Range checks that the types alone do not express: the text's length and the
    /// key's.
    pub fn validate(&self, max_text_chars: usize) -> Result<(), ErrorBody> {
        if self.text.is_empty() {
            return Err(ErrorBody::new(ErrorCode::BadRequest, "text must not be empty"));
        }
        let chars = self.text.chars().count();
        if chars > max_text_chars {
            return Err(ErrorBody::new(
                ErrorCode::TooLarge,
                format!("text has {chars} characters; the limit is {max_text_chars}"),
            ));
        }
        if let Some(key) = &self.key {
            let key_chars = key.chars().count();
            if key_chars == 0 || key_chars > MAX_KEY_CHARS {
                return Err(ErrorBody::new(
                    ErrorCode::BadRequest,
                    format!("key must have 1 to {MAX_KEY_CHARS} characters"),
                ));
            }
        }
        Ok(())
    }
}

/// The `id` of a frame whose other fields could not all be read, if the frame is a
/// JSON object whose `id` is a valid request id.
fn readable_id(text: &str) -> Option<RequestId> {
    let fields: std::collections::HashMap<String, &serde_json::value::RawValue> = serde_json::from_str(text).ok()?;
    serde_json::from_str(fields.get("id")?.get()).ok()
}

/// A parsed client frame: the optional request id and the request.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientFrame {
    /// The id to echo in the reply, if the client wants one.
    pub id: Option<RequestId>,
    /// What the client asks for.
    pub request: Request,
}

/// A frame that could not be understood, with the id to reply to when it was readable.
#[derive(Debug, Clone, PartialEq)]
pub struct ParseError {
    /// The frame's `id`, if it had a valid one.
    pub id: Option<RequestId>,
    /// What was wrong.
    pub error: ErrorBody,
}

impl ClientFrame {
    /// Parses one text frame. Unknown fields are ignored.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let fail = |id: Option<RequestId>, code: ErrorCode, message: String| ParseError {
            id,
            error: ErrorBody::new(code, message),
        };
        let mut object: Map<String, Value> = match serde_json::from_str(text) {
            Ok(Value::Object(object)) => object,
            Ok(_) => return Err(fail(None, ErrorCode::BadRequest, "a frame must be a JSON object".into())),
            // Valid JSON syntax may still hold a number no f64 can (`1e400`): the id is
            // then still readable, and the error goes back with it.
            Err(e) => return Err(fail(readable_id(text), ErrorCode::BadRequest, format!("invalid JSON: {e}"))),
        };
        let id = match object.remove("id") {
            None | Some(Value::Null) => None,
            Some(value) => match RequestId::deserialize(value) {
                Ok(id) => Some(id),
                Err(_) => {
                    let message = "id must be a string or an integer".into();
                    return Err(fail(None, ErrorCode::BadRequest, message));
                }
            },
        };
        match object.get("op") {
            Some(Value::String(op)) if Request::OPS.contains(&op.as_str()) => {}
            Some(Value::String(op)) => {
                let message = format!("unknown op {op:?}; this server knows {}", Request::OPS.join(", "));
                return Err(fail(id, ErrorCode::UnknownOp, message));
            }
            Some(_) => return Err(fail(id, ErrorCode::BadRequest, "op must be a string".into())),
            None => return Err(fail(id, ErrorCode::BadRequest, "missing field `op`".into())),
        }
        match Request::deserialize(Value::Object(object)) {
            Ok(request) => Ok(Self { id, request }),
            Err(e) => Err(fail(id, ErrorCode::BadRequest, e.to_string())),
        }
    }

    /// Encodes this frame as the client sends it.
    pub fn to_json(&self) -> String {
        let mut value = serde_json::to_value(&self.request).unwrap_or(Value::Null);
        if let (Value::Object(object), Some(id)) = (&mut value, &self.id) {
            object.insert("id".into(), serde_json::to_value(id).unwrap_or(Value::Null));
        }
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_err(text: &str) -> ParseError {
        match ClientFrame::parse(text) {
            Err(e) => e,
            Ok(frame) => panic!("{text} parsed as {frame:?}"),
        }
    }

    #[test]
    fn parses_each_op_with_and_without_id() {
        let frame = ClientFrame::parse(r#"{"op":"send","id":7,"room":"general","text":"hi","key":"c-1","extra":true}"#)
            .unwrap();
        assert_eq!(frame.id, Some(RequestId::Int(7)));
        assert!(matches!(frame.request, Request::Send(SendRequest { ref text, .. }) if text == "hi"));
        let frame = ClientFrame::parse(r#"{"op":"ping","id":"a"}"#).unwrap();
        assert_eq!(frame.id, Some(RequestId::Str("a".into())));
        let frame = ClientFrame::parse(r#"{"op":"join","room":"x","since":3}"#).unwrap();
        assert_eq!(frame.id, None);
        assert!(matches!(frame.request, Request::Join(JoinRequest { since: Some(3), .. })));
    }

    #[test]
    fn a_number_no_float_can_hold_is_bad_request_answered_with_the_id() {
        let error = parse_err(r#"{"op":"join","id":"j1","room":"general","since":1e400}"#);
        assert_eq!((error.id, error.error.code), (Some(RequestId::Str("j1".into())), ErrorCode::BadRequest));
        assert!(error.error.message.contains("number out of range"), "{}", error.error.message);
        let error = parse_err(r#"{"op":"join","id":12,"room":"general","since":-1e999}"#);
        assert_eq!(error.id, Some(RequestId::Int(12)));
        // Broken JSON has no readable id.
        assert_eq!(parse_err(r#"{"op":"join","id":"j1","since":}"#).id, None);
    }

    #[test]
    fn round_trips_through_to_json() {
        let frame = ClientFrame {
            id: Some(RequestId::Int(3)),
            request: Request::History(HistoryRequest {
                room: RoomName::new("r").unwrap(),
                before: Some(10),
                after: None,
                limit: Some(5),
                thread: None,
            }),
        };
        assert_eq!(ClientFrame::parse(&frame.to_json()).unwrap(), frame);
    }

    #[test]
    fn explains_what_is_wrong_and_keeps_the_id() {
        assert_eq!(parse_err("not json").error.code, ErrorCode::BadRequest);
        assert_eq!(parse_err("[1]").error.code, ErrorCode::BadRequest);
        let e = parse_err(r#"{"op":"dance","id":1}"#);
        assert_eq!((e.id, e.error.code), (Some(RequestId::Int(1)), ErrorCode::UnknownOp));
        let e = parse_err(r#"{"op":"send","id":2,"room":"r"}"#);
        assert_eq!((e.id.clone(), e.error.code), (Some(RequestId::Int(2)), ErrorCode::BadRequest));
        assert!(e.error.message.contains("text"), "{}", e.error.message);
        let e = parse_err(r#"{"op":"send","id":2,"room":"r","text":5}"#);
        assert_eq!(e.error.code, ErrorCode::BadRequest);
        let e = parse_err(r#"{"op":"join","id":"j","room":"bad room"}"#);
        assert!(e.error.message.contains("invalid room name"), "{}", e.error.message);
        assert_eq!(parse_err(r#"{"op":"ping","id":{"x":1}}"#).id, None);
    }

    #[test]
    fn validation_checks_text_key_and_limits() {
        let send = |text: &str, key: Option<&str>| {
            Request::Send(SendRequest {
                room: RoomName::new("r").unwrap(),
                text: text.into(),
                key: key.map(Into::into),
                reply_to: None,
                stream: false,
            })
        };
        assert!(send("hé", None).validate(2).is_ok());
        assert_eq!(send("", None).validate(2).unwrap_err().code, ErrorCode::BadRequest);
        assert_eq!(send("abc", None).validate(2).unwrap_err().code, ErrorCode::TooLarge);
        assert!(send("a", Some(&"k".repeat(65))).validate(2).is_err());
        let history = ClientFrame::parse(r#"{"op":"history","room":"r","limit":201}"#).unwrap();
        assert!(history.request.validate(10).is_err());
        let members = ClientFrame::parse(r#"{"op":"members","room":"r","cursor":"7","limit":1000}"#).unwrap();
        assert!(members.request.validate(10).is_ok());
        let members = ClientFrame::parse(r#"{"op":"members","room":"r","limit":1001}"#).unwrap();
        assert_eq!(members.request.validate(10).unwrap_err().code, ErrorCode::BadRequest);
    }
}
