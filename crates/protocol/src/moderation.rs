//! Rooms' kinds and roles, and the requests that manage them: `create`, membership
//! (`add_member`, `remove_member`, `set_role`), moderation (`kick`, `ban`, `unban`,
//! `mute`, `unmute`) and `refresh` (a fresh token on a live connection), with the
//! `removed` event a connection receives when it is taken out of a room.

use serde::{Deserialize, Serialize};

use crate::{ErrorBody, ErrorCode, RoomName, Timestamp};

/// The longest user id a request may name, in characters.
pub const MAX_USER_ID_CHARS: usize = 128;
/// The longest moderation `reason`, in characters.
pub const MAX_REASON_CHARS: usize = 256;
/// The longest room topic, in characters.
pub const MAX_TOPIC_CHARS: usize = 256;
/// The longest sanction (`duration_secs`): ten years.
pub const MAX_DURATION_SECS: u64 = 10 * 365 * 24 * 3600;
/// The longest slow mode (`slow_mode_secs`): one day.
pub const MAX_SLOW_MODE_SECS: u32 = 24 * 3600;

/// Who may join, read and write a room.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum RoomKind {
    /// Anyone may join, read and write (the default; joining an unknown room makes one).
    #[default]
    Public,
    /// Only members (and server admins) may join and read; members write.
    Private,
    /// Anyone may join and read; only the room's moderators, server admins and the REST
    /// API write.
    Broadcast,
    /// The room of two users (made by `dm`): only they join, read and write, server
    /// admins included; nobody can be added.
    Direct,
}

impl RoomKind {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Private => "private",
            Self::Broadcast => "broadcast",
            Self::Direct => "direct",
        }
    }

    /// The kind spelled `text`, if any.
    pub fn parse(text: &str) -> Option<Self> {
        [Self::Public, Self::Private, Self::Broadcast, Self::Direct].into_iter().find(|kind| kind.as_str() == text)
    }
}

/// A user's role in one room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Role {
    /// A member: may join a private room; nothing more.
    Member,
    /// May kick, ban and mute members, manage members, and change the topic, slow mode
    /// and freeze.
    Moderator,
    /// Everything a moderator may, over moderators too, plus roles and the room's kind.
    Owner,
}

impl Role {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Member => "member",
            Self::Moderator => "moderator",
            Self::Owner => "owner",
        }
    }

    /// The role spelled `text`, if any.
    pub fn parse(text: &str) -> Option<Self> {
        [Self::Member, Self::Moderator, Self::Owner].into_iter().find(|role| role.as_str() == text)
    }
}

/// `create`: make a room and own it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateRequest {
    /// The new room's name.
    pub room: RoomName,
    /// Its kind (default `public`).
    #[serde(default)]
    pub kind: RoomKind,
    /// What it is about (at most 256 printable characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
}

/// The result of a successful `create`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateReply {
    /// The room created.
    pub room: RoomName,
    /// Its kind.
    pub kind: RoomKind,
    /// Its topic ("" when none).
    pub topic: String,
}

/// `add_member` and `set_role`: give `user` a role in `room`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoleRequest {
    /// The room.
    pub room: RoomName,
    /// The user's id.
    pub user: String,
    /// The role (`add_member`: default `member`; `set_role`: required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
}

/// `remove_member`, and the target of `unban` and `unmute`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserInRoom {
    /// The room.
    pub room: RoomName,
    /// The user's id.
    pub user: String,
}

/// `kick`, `ban`, `unban`, `mute`, `unmute`: a moderation action on `user` in `room`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModerationRequest {
    /// The room.
    pub room: RoomName,
    /// The user's id.
    pub user: String,
    /// How long the sanction lasts (absent: until lifted). For `kick`, how long the
    /// user may not join again (absent: may rejoin at once). Ignored by `unban` and
    /// `unmute`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_secs: Option<u64>,
    /// Why, for the audit log and the user (at most 256 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The result of a moderation action that lasts: when it ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModerationReply {
    /// When the sanction ends; absent when it lasts until lifted, or for actions that
    /// do not last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<Timestamp>,
}

/// The result of a successful `refresh`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshReply {
    /// When the new token expires; the connection closes with 1008 then unless it is
    /// refreshed again.
    pub expires: Timestamp,
}

/// Why a connection was taken out of a room (the `removed` event).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RemovedBecause {
    /// A moderator kicked the user.
    Kick,
    /// A moderator banned the user.
    Ban,
    /// The user is no longer a member of the private room.
    RemoveMember,
    /// The room became private and the user is not a member.
    Kind,
    /// A reason added by a newer server.
    #[serde(other)]
    Unknown,
}

/// `removed`: this connection is no longer in `room` (it receives nothing more from it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemovedEvent {
    /// The room.
    pub room: RoomName,
    /// What removed it.
    pub action: RemovedBecause,
    /// The moderator's reason, when one was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Until when the user may not join again (a timed kick or ban).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<Timestamp>,
}

fn bad(message: String) -> Result<(), ErrorBody> {
    Err(ErrorBody::new(ErrorCode::BadRequest, message))
}

/// Checks a user id named by a request: 1 to 128 characters, no control characters.
pub fn check_user_id(user: &str) -> Result<(), ErrorBody> {
    let chars = user.chars().count();
    if chars == 0 || chars > MAX_USER_ID_CHARS || user.chars().any(char::is_control) {
        return bad(format!("user must be a user id of 1 to {MAX_USER_ID_CHARS} printable characters"));
    }
    Ok(())
}

/// Checks a topic: at most 256 characters, none of them control characters.
pub fn check_topic(topic: &str) -> Result<(), ErrorBody> {
    let chars = topic.chars().count();
    if chars > MAX_TOPIC_CHARS || topic.chars().any(char::is_control) {
        return bad(format!("topic has {chars} characters; use at most {MAX_TOPIC_CHARS} printable ones"));
    }
    Ok(())
}

/// Checks a moderation reason and duration.
pub fn check_sanction(duration_secs: Option<u64>, reason: Option<&str>) -> Result<(), ErrorBody> {
    if let Some(secs) = duration_secs {
        if secs == 0 || secs > MAX_DURATION_SECS {
            return bad(format!("duration_secs must be 1 to {MAX_DURATION_SECS} (ten years); omit it for no end"));
        }
    }
    if let Some(reason) = reason {
        let chars = reason.chars().count();
        if chars > MAX_REASON_CHARS {
            return bad(format!("reason has {chars} characters; the limit is {MAX_REASON_CHARS}"));
        }
    }
    Ok(())
}

/// Checks a slow mode: 0 (off) to one day.
pub fn check_slow_mode(secs: u32) -> Result<(), ErrorBody> {
    if secs > MAX_SLOW_MODE_SECS {
        return bad(format!("slow_mode_secs must be 0 (off) to {MAX_SLOW_MODE_SECS}"));
    }
    Ok(())
}

impl ModerationRequest {
    /// Range checks the types alone do not express.
    pub fn validate(&self) -> Result<(), ErrorBody> {
        check_user_id(&self.user)?;
        check_sanction(self.duration_secs, self.reason.as_deref())
    }
}
