//! Durable message history: the [`MessageStore`] trait the hub talks to, and its
//! backends (`sqlite` is the embedded default; `postgres` is shared by several nodes).
//!
//! A store owns sequence numbers: it assigns each room's next `seq` when it commits
//! an append, and it reports every commit, in commit order, on the hub's commit stream
//! (`hub::CommitSender`), which the hub fans out. Nothing here knows about sessions.

#[cfg(test)]
mod chat_scenario;
#[cfg(test)]
mod memory;
mod postgres;
mod sqlite;

use std::{future::Future, pin::Pin};

use bavard_protocol::{Message, Role, RoomKind, RoomName, Timestamp, User};
use futures_util::future::BoxFuture;

#[cfg(test)]
pub use memory::MemoryStore;
pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// What a store failure looks like to its callers. A failure shared by several callers
/// (a failed group commit) is cloned to each, not wrapped again: its text would say
/// "database error: database error: ...".
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed the operation.
    #[error("database error: {0}")]
    Database(String),
    /// The store is shut down or its writer stopped.
    #[error("the message store is closed")]
    Closed,
    /// The database cannot be reached now (a networked database that is down or cut
    /// off); the operation may be retried later.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
}

/// A message to append; the store gives it a seq and a timestamp.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// The room it goes to.
    pub room: RoomName,
    /// Its author.
    pub from: User,
    /// Its text (already validated).
    pub text: String,
    /// Idempotency key: a repeat from the same user in the same room is not stored twice.
    pub key: Option<String>,
    /// The seq of the message it answers.
    pub reply_to: Option<u64>,
    /// Whether it starts a streamed message (`append` adds to it, `finish` ends it).
    pub streaming: bool,
}

/// The outcome of a committed append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The message's seq (the original one when `duplicate`).
    pub seq: u64,
    /// When it was stored.
    pub ts: Timestamp,
    /// True when the key had been stored before and nothing new was written.
    pub duplicate: bool,
}

/// An append that is queued in commit order and resolves once it is durable.
pub type PendingAppend = Pin<Box<dyn Future<Output = Result<Appended, StoreError>> + Send>>;

/// Which slice of a room's history to read. Pages are always returned oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageQuery {
    /// The newest `limit` messages with seq < `before` (all when `before` is None);
    /// `has_more` says whether older ones exist.
    Before {
        /// Exclusive upper bound.
        before: Option<u64>,
        /// Page size.
        limit: u32,
    },
    /// The oldest `limit` messages with `after` < seq < `before`;
    /// `has_more` says whether more exist in that range.
    After {
        /// Exclusive lower bound.
        after: u64,
        /// Exclusive upper bound, if any.
        before: Option<u64>,
        /// Page size.
        limit: u32,
    },
}

/// One page of history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// Oldest first.
    pub messages: Vec<Message>,
    /// Whether more messages exist beyond this page in the paging direction.
    pub has_more: bool,
}

/// A room as the store knows it: created explicitly, or by its first message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomRecord {
    /// The room's name.
    pub room: RoomName,
    /// What the room is about ("" when unset).
    pub topic: String,
    /// Who may join, read and write.
    pub kind: RoomKind,
    /// When it was created (explicitly, or by its first message).
    pub created: Timestamp,
    /// Its last seq (0 before the first message).
    pub last_seq: u64,
    /// When its last message was stored, or when it was created if it has none.
    pub last_ts: Timestamp,
    /// Seconds a member must wait between two messages (0: no slow mode).
    pub slow_mode_secs: u32,
    /// Whether only moderators may write.
    pub frozen: bool,
}

/// What a sanction keeps a user from doing in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SanctionKind {
    /// Joining, reading and writing.
    Ban,
    /// Writing.
    Mute,
    /// Joining again, until it ends (a kick with a duration).
    Kick,
}

impl SanctionKind {
    /// How the store spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ban => "ban",
            Self::Mute => "mute",
            Self::Kick => "kick",
        }
    }

    /// The kind spelled `text`, if any.
    pub fn parse(text: &str) -> Option<Self> {
        [Self::Ban, Self::Mute, Self::Kick].into_iter().find(|kind| kind.as_str() == text)
    }
}

/// A sanction in force on one user of a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sanction {
    /// The user it applies to.
    pub user: String,
    /// What it forbids.
    pub kind: SanctionKind,
    /// When it ends (None: when lifted).
    pub until: Option<Timestamp>,
    /// Why, as the moderator gave it.
    pub reason: Option<String>,
}

/// A room's rules as stored: what the hub enforces on every join, read and write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredRules {
    /// Who may join, read and write.
    pub kind: RoomKind,
    /// Seconds a member must wait between two messages (0: no slow mode).
    pub slow_mode_secs: u32,
    /// Whether only moderators may write.
    pub frozen: bool,
    /// Users with a role in the room.
    pub roles: Vec<(String, Role)>,
    /// Sanctions not yet expired (those whose `until` is past may be left out).
    pub sanctions: Vec<Sanction>,
}

impl StoredRules {
    /// Rules of a room as its row says, before its roles and sanctions are added.
    fn from_row(kind: &str, slow_mode_secs: u32, frozen: bool) -> Self {
        Self { kind: stored_kind(kind), slow_mode_secs, frozen, ..Self::default() }
    }

    /// Adds a role read from the database; one this version does not know (a role it
    /// cannot grant) is left out, and logged.
    fn add_role_row(&mut self, room: &str, user: String, role: &str) {
        match Role::parse(role) {
            Some(role) => self.roles.push((user, role)),
            None => tracing::warn!(room, %user, %role, "unknown role in the database; ignored"),
        }
    }

    /// Adds a sanction read from the database; one of a kind this version does not know
    /// (it cannot enforce it) is left out, and logged.
    fn add_sanction_row(&mut self, room: &str, user: String, kind: &str, until: Option<i64>, reason: Option<String>) {
        match SanctionKind::parse(kind) {
            Some(kind) => self.sanctions.push(Sanction { user, kind, until: until.map(Timestamp), reason }),
            None => tracing::warn!(room, %user, %kind, "unknown sanction in the database; ignored"),
        }
    }
}

/// The kind stored as `text`. A spelling this version does not know (written by a newer
/// Bavard, or by hand) reads as private: members only, rather than open to anyone.
fn stored_kind(text: &str) -> RoomKind {
    RoomKind::parse(text).unwrap_or(RoomKind::Private)
}

/// One change to a room's rules (see [`MessageStore::change_room`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleChange {
    /// Sets the room's kind.
    Kind(RoomKind),
    /// Sets its topic.
    Topic(String),
    /// Sets its slow mode (0: off).
    SlowMode(u32),
    /// Freezes or unfreezes it.
    Frozen(bool),
    /// Gives `user` a role (Some) or takes it away (None).
    Role {
        /// The user.
        user: String,
        /// The new role.
        role: Option<Role>,
    },
    /// Puts a sanction on a user, replacing one of the same kind.
    Sanction(Sanction),
    /// Lifts the user's sanction of that kind, if any.
    Lift {
        /// The user.
        user: String,
        /// The kind of sanction lifted.
        kind: SanctionKind,
    },
}

/// One entry of a room's audit log: who did what to whom, when and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// When (set by the caller).
    pub ts: Timestamp,
    /// Who acted.
    pub actor: User,
    /// What they did (`create`, `kind`, `topic`, `slow_mode`, `frozen`, `add_member`,
    /// `remove_member`, `set_role`, `kick`, `ban`, `unban`, `mute`, `unmute`).
    pub action: String,
    /// To whom, for actions on a user.
    pub target: Option<String>,
    /// Why, as given.
    pub reason: Option<String>,
    /// What changed, in a word or two (`private`, `moderator`, `30s`...).
    pub detail: Option<String>,
}

/// An audit entry as stored, with its place in the room's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// Increasing with time within a room (and across rooms); pages go by it.
    pub id: u64,
    /// The entry.
    pub entry: AuditEntry,
}

/// A room to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRoom {
    /// Its name.
    pub room: RoomName,
    /// Its kind.
    pub kind: RoomKind,
    /// Its topic ("" for none).
    pub topic: String,
    /// The user who owns it, if any.
    pub owner: Option<String>,
    /// Users who are members of it from the start (a direct room's two users).
    pub members: Vec<String>,
}

/// A change to one stored message (see [`MessageStore::change_message`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageChange {
    /// Replaces the text (its author only; not while streamed, not once deleted).
    Edit(String),
    /// Deletes it: the text goes, the seq stays (its author, or a moderator).
    Delete,
    /// Adds text to a streamed message (its author), up to `max_chars` in all.
    Append {
        /// The text added.
        text: String,
        /// The most characters the message may reach.
        max_chars: usize,
    },
    /// Ends a streamed message (its author).
    Finish,
    /// Adds (`on`) or takes back the user's reaction.
    React {
        /// The reaction.
        emoji: String,
        /// True to add it, false to take it back.
        on: bool,
    },
}

impl MessageChange {
    /// Why `by` may not make this change to message `seq` as it stands (`now`), if it
    /// may not: the rules every store applies, in the transaction that makes the change.
    /// Anyone may delete their own message, and moderators anyone's; only the author
    /// edits, appends and finishes; a deleted message takes nothing more but a delete;
    /// a streamed one takes appends and its finish, not edits, up to its limit.
    pub fn refusal(&self, seq: u64, now: &MessageState, by: &str, moderator: bool) -> Option<ChangeRefused> {
        let mine = now.author == by;
        match self {
            Self::Edit(_) if !mine => Some(ChangeRefused::NotAuthor { what: "edit", seq }),
            Self::Delete if !mine && !moderator => Some(ChangeRefused::NotAuthor { what: "delete", seq }),
            Self::Append { .. } if !mine => Some(ChangeRefused::NotAuthor { what: "append to", seq }),
            Self::Finish if !mine => Some(ChangeRefused::NotAuthor { what: "finish", seq }),
            Self::Delete => None,
            _ if now.deleted => Some(ChangeRefused::Deleted(seq)),
            Self::Edit(_) if now.streaming => Some(ChangeRefused::Streaming(seq)),
            Self::Append { .. } | Self::Finish if !now.streaming => Some(ChangeRefused::NotStreaming(seq)),
            Self::Append { text, max_chars } => {
                let total = now.text.chars().count() + text.chars().count();
                (total > *max_chars).then_some(ChangeRefused::TooLong(*max_chars))
            }
            _ => None,
        }
    }
}

/// A stored message's state, as a change is checked against it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageState {
    /// Its author's user id.
    pub author: String,
    /// Its current text.
    pub text: String,
    /// Whether it was deleted.
    pub deleted: bool,
    /// Whether it is still streamed.
    pub streaming: bool,
    /// The room's change number of its last change (0: never changed).
    pub rev: u64,
}

/// A change asked of the store: the store checks it against the message (its author,
/// its state) and applies it in one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeMessage {
    /// The room.
    pub room: RoomName,
    /// The message.
    pub seq: u64,
    /// Who asks (a user id).
    pub by: String,
    /// Whether they moderate the room: they may delete others' messages.
    pub moderator: bool,
    /// What to change.
    pub change: MessageChange,
    /// When.
    pub at: Timestamp,
}

/// Why the store refused a change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeRefused {
    /// No such message.
    #[error("room {room} has no message {seq}")]
    NoMessage {
        /// The room.
        room: RoomName,
        /// The seq asked for.
        seq: u64,
    },
    /// Only the author may do this.
    #[error("only the author of message {seq} may {what} it")]
    NotAuthor {
        /// What was asked (`edit`, `delete`, `append to`, `finish`).
        what: &'static str,
        /// The message.
        seq: u64,
    },
    /// The message was deleted.
    #[error("message {0} was deleted")]
    Deleted(u64),
    /// `append` or `finish` on a message that is not streamed (any more).
    #[error("message {0} is not being streamed: only a message sent with stream: true takes append and finish, until finished")]
    NotStreaming(u64),
    /// `edit` of a message still streamed.
    #[error("message {0} is still being streamed: finish it first")]
    Streaming(u64),
    /// The streamed message would grow past its limit.
    #[error("a streamed message has at most {0} characters: finish this one and send another")]
    TooLong(usize),
    /// Too many different reactions on one message.
    #[error("a message takes at most {0} different reactions")]
    TooManyReactions(usize),
}

/// What a change did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changed {
    /// Whether anything changed (a repeated reaction, or taking back one never given,
    /// changes nothing and tells nobody).
    pub changed: bool,
    /// The room's change number of this change (the message's last one when nothing
    /// changed).
    pub rev: u64,
    /// `append`: how many characters the message had before.
    pub offset: usize,
    /// `react`: how many users react with that emoji now.
    pub count: u32,
}

/// A search ranks the newest this many matches of its words in the room: a word most
/// messages of a large room have would otherwise cost a rank per message (seconds in a
/// room of a million). Older matches of such words are not found; rarer words' are.
pub const RANKED_MATCHES: u32 = 10_000;

/// Where reads of the store start from: what `annotate` adds depends on the reader.
pub type Viewer = Option<String>;

/// Durable, ordered message history.
pub trait MessageStore: Send + Sync + 'static {
    /// Queues `message` for the next group commit. Awaiting this only waits for room in
    /// the queue, and fixes the message's place in commit order; the returned future
    /// resolves once the message is durable.
    fn append(&self, message: NewMessage) -> BoxFuture<'_, Result<PendingAppend, StoreError>>;

    /// Puts a barrier for `room` on the commit stream, after every commit so far, and
    /// resolves once the hub has processed it.
    fn barrier(&self, room: RoomName) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Reads a page of `room`'s history.
    fn page(&self, room: RoomName, query: PageQuery) -> BoxFuture<'_, Result<Page, StoreError>>;

    /// Lists the known rooms, most recently active first.
    fn rooms(&self, limit: u32) -> BoxFuture<'_, Result<Vec<RoomRecord>, StoreError>>;

    /// The room called `room`, if it is known.
    fn room(&self, room: RoomName) -> BoxFuture<'_, Result<Option<RoomRecord>, StoreError>>;

    /// Records a new room (its owner with the `owner` role) and `audit` in one
    /// transaction; false (and nothing changed) when the room is already known.
    fn create_room(&self, room: NewRoom, audit: AuditEntry) -> BoxFuture<'_, Result<bool, StoreError>>;

    /// Applies `changes` to the room, in order, and appends `audit` to its log, in one
    /// transaction. A room without a record (joined, never written to) gets one first,
    /// public and ownerless.
    fn change_room(
        &self,
        room: RoomName,
        changes: Vec<RuleChange>,
        audit: AuditEntry,
    ) -> BoxFuture<'_, Result<(), StoreError>>;

    /// The room's rules; None when the room has no record (it is then public, without
    /// roles or sanctions).
    fn rules(&self, room: RoomName) -> BoxFuture<'_, Result<Option<StoredRules>, StoreError>>;

    /// A page of the room's audit log, newest first: the `limit` entries with an id
    /// below `before` (all when None).
    fn audit(
        &self,
        room: RoomName,
        before: Option<u64>,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<AuditRecord>, StoreError>>;

    /// Applies `change` to a stored message, after checking it against the message's
    /// author and state, in one transaction with the room's change number bumped.
    fn change_message(
        &self,
        change: ChangeMessage,
    ) -> BoxFuture<'_, Result<Result<Changed, ChangeRefused>, StoreError>>;

    /// Brings raw messages (as `page` returns them, all of `room`) to their current
    /// state: edits, deletes, streamed text, reactions (`me` for `viewer`), replies.
    fn annotate(
        &self,
        room: RoomName,
        messages: Vec<Message>,
        viewer: Viewer,
    ) -> BoxFuture<'_, Result<Vec<Message>, StoreError>>;

    /// The messages of `room` with these seqs, in that order, raw (see `annotate`);
    /// seqs without a message are left out.
    fn messages_at(&self, room: RoomName, seqs: Vec<u64>) -> BoxFuture<'_, Result<Vec<Message>, StoreError>>;

    /// The room's change number (0 before its first change).
    fn room_rev(&self, room: RoomName) -> BoxFuture<'_, Result<u64, StoreError>>;

    /// The seqs up to `through` whose last change is after `since_rev`, in the order of
    /// those changes: at most `limit`, and whether more exist.
    fn changed_since(
        &self,
        room: RoomName,
        through: u64,
        since_rev: u64,
        limit: u32,
    ) -> BoxFuture<'_, Result<(Vec<u64>, bool), StoreError>>;

    /// The seqs of the replies to `root` in the query's range (oldest first), and whether
    /// more exist in the paging direction.
    fn thread(
        &self,
        room: RoomName,
        root: u64,
        query: PageQuery,
    ) -> BoxFuture<'_, Result<(Vec<u64>, bool), StoreError>>;

    /// The seqs of `room`'s messages matching the words of `q`, best first: `limit`
    /// from `offset`, and whether more exist.
    fn search(
        &self,
        room: RoomName,
        q: String,
        limit: u32,
        offset: u32,
    ) -> BoxFuture<'_, Result<(Vec<u64>, bool), StoreError>>;

    /// Moves `user`'s read position in `room` to `seq` if that is further; answers the
    /// position now and whether it moved.
    fn mark_read(&self, room: RoomName, user: String, seq: u64) -> BoxFuture<'_, Result<(u64, bool), StoreError>>;

    /// How many messages of others, not deleted, follow `user`'s read position in
    /// `room` (at most [`bavard_protocol::MAX_UNREAD`]).
    fn unread(&self, room: RoomName, user: String) -> BoxFuture<'_, Result<u64, StoreError>>;

    /// Checks that the database answers (for `/readyz`).
    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Commits everything queued so far, then stops accepting appends.
    fn close(&self) -> BoxFuture<'_, ()>;
}
