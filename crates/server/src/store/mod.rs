//! Durable message history: the [`MessageStore`] trait the hub talks to, and its
//! backends (`sqlite` is the embedded default).
//!
//! A store owns sequence numbers: it assigns each room's next `seq` when it commits
//! an append, and it reports every commit, in commit order, on the hub's commit stream
//! (`hub::CommitSender`), which the hub fans out. Nothing here knows about sessions.

#[cfg(test)]
mod memory;
mod sqlite;

use std::{future::Future, pin::Pin};

use bavard_protocol::{Message, RoomName, Timestamp, User};
use futures_util::future::BoxFuture;

#[cfg(test)]
pub use memory::MemoryStore;
pub use sqlite::SqliteStore;

/// What a store failure looks like to its callers.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed the operation.
    #[error("database error: {0}")]
    Database(String),
    /// The store is shut down or its writer stopped.
    #[error("the message store is closed")]
    Closed,
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
    /// Who may join and write (only `public` in this version).
    pub kind: String,
    /// When it was created (explicitly, or by its first message).
    pub created: Timestamp,
    /// Its last seq (0 before the first message).
    pub last_seq: u64,
    /// When its last message was stored, or when it was created if it has none.
    pub last_ts: Timestamp,
}

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

    /// Records a new room; false (and nothing changed) when it is already known.
    fn create_room(&self, room: RoomName, topic: String) -> BoxFuture<'_, Result<bool, StoreError>>;

    /// Sets a known room's topic; false when the room is not known.
    fn set_topic(&self, room: RoomName, topic: String) -> BoxFuture<'_, Result<bool, StoreError>>;

    /// Checks that the database answers (for `/readyz`).
    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Commits everything queued so far, then stops accepting appends.
    fn close(&self) -> BoxFuture<'_, ()>;
}
