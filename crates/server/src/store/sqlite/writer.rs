//! The writer thread: the single authority on `seq`, and the only connection that
//! writes.
//!
//! Appends are group-committed to the `journal`, a table in append order with no
//! other index: a commit writes the few pages at its end (plus one fsync) however many
//! rooms the batch touches. Writing them straight into the room-ordered `messages`
//! table dirtied a page per room per index (100 rooms: ~110 pages, ~440 KiB and 3-4 ms
//! per commit here). The journal is moved into `messages` in one transaction when it
//! holds [`ARCHIVE_ROWS`] rows or the writer has been idle for [`ARCHIVE_IDLE`], oldest
//! first in chunks of [`ARCHIVE_CHUNK`] (one chunk is a short pause for the appends
//! queued behind it), so each room's pages are written once per chunk instead of once
//! per commit. Until
//! then the [`Tail`] serves the journal's messages to readers, and idempotency keys
//! are checked against the journal in memory and against `messages` through its index.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
    time::{Duration, Instant},
};

use bavard_protocol::{Message, RoomName, Timestamp};
use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::{mpsc, oneshot};

use super::tail::Tail;
use crate::store::{Appended, CommitEvent, NewMessage, StoreError};

/// The most appends one transaction takes.
const MAX_BATCH: usize = 4_096;
/// Journal rows above which chunks are archived even while appends keep coming.
pub(super) const ARCHIVE_ROWS: usize = 16_384;
/// Journal rows moved per archive transaction.
pub(super) const ARCHIVE_CHUNK: usize = 4_096;
/// Idle time after which the journal is archived.
pub(super) const ARCHIVE_IDLE: Duration = Duration::from_millis(100);

/// What the writer is asked to do.
pub(super) enum WriterCommand {
    Append(NewMessage, oneshot::Sender<Result<Appended, StoreError>>),
    Barrier(RoomName, oneshot::Sender<()>),
    Close(oneshot::Sender<()>),
}

type Reply = oneshot::Sender<Result<Appended, StoreError>>;

/// Who sent which idempotency key in which room.
type KeyId = (RoomName, String, String);

pub(super) struct Writer {
    conn: Connection,
    /// Each room's last committed seq, loaded on first use.
    last_seq: HashMap<RoomName, u64>,
    /// The keys of the journal's messages, with their outcome.
    journal_keys: HashMap<KeyId, Appended>,
    /// The journal's messages in journal order: what each archived chunk takes away.
    journal: VecDeque<Journaled>,
    tail: Arc<Tail>,
    commits: mpsc::Sender<CommitEvent>,
}

impl Writer {
    /// A writer over `conn`, whose journal must be empty (see [`archive_leftovers`]).
    pub(super) fn new(conn: Connection, tail: Arc<Tail>, commits: mpsc::Sender<CommitEvent>) -> Self {
        Self { conn, last_seq: HashMap::new(), journal_keys: HashMap::new(), journal: VecDeque::new(), tail, commits }
    }

    /// Serves commands until the queue closes or a `Close` arrives.
    pub(super) fn run(&mut self, mut queue: mpsc::Receiver<WriterCommand>) {
        // A clock for the idle wait only; the writer never runs other tasks.
        let clock = match tokio::runtime::Builder::new_current_thread().enable_time().build() {
            Ok(clock) => clock,
            Err(e) => {
                tracing::error!(error = %e, "the sqlite writer cannot start its clock; appends will fail");
                return;
            }
        };
        let mut batch = Vec::with_capacity(64);
        // Whether the writer waited ARCHIVE_IDLE with nothing to do since its last batch.
        let mut idle = false;
        loop {
            let first = if self.journal.is_empty() {
                queue.blocking_recv()
            } else if idle {
                match queue.try_recv() {
                    Ok(command) => Some(command),
                    Err(mpsc::error::TryRecvError::Empty) => {
                        self.archive_chunk();
                        continue;
                    }
                    Err(mpsc::error::TryRecvError::Disconnected) => None,
                }
            } else {
                match clock.block_on(async { tokio::time::timeout(ARCHIVE_IDLE, queue.recv()).await }) {
                    Ok(command) => command,
                    Err(_idle) => {
                        idle = true;
                        continue;
                    }
                }
            };
            idle = false;
            let Some(first) = first else { break };
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(command) => batch.push(command),
                    Err(_) => break,
                }
            }
            let closing = self.process(&mut batch);
            let keep = if closing.is_some() { 0 } else { ARCHIVE_ROWS };
            while self.journal.len() > keep && self.archive_chunk() {}
            if let Some(done) = closing {
                queue.close();
                // Appends queued behind the close are refused; their senders see `Closed`.
                let _refused = done.send(());
                break;
            }
        }
        tracing::debug!("sqlite writer stopped");
    }

    /// Runs one batch: appends in one transaction, then barriers and close in order.
    fn process(&mut self, batch: &mut Vec<WriterCommand>) -> Option<oneshot::Sender<()>> {
        let mut appends = Vec::new();
        let mut closing = None;
        for command in batch.drain(..) {
            match command {
                WriterCommand::Append(message, reply) => appends.push((message, reply)),
                WriterCommand::Barrier(room, done) => {
                    self.commit_appends(std::mem::take(&mut appends));
                    self.barrier(room, done);
                }
                WriterCommand::Close(done) => {
                    self.commit_appends(std::mem::take(&mut appends));
                    closing = Some(done);
                    break;
                }
            }
        }
        self.commit_appends(appends);
        closing
    }

    fn barrier(&mut self, room: RoomName, done: oneshot::Sender<()>) {
        match self.room_last_seq(&room) {
            Ok(last_seq) => {
                let _hub_gone = self.commits.blocking_send(CommitEvent::Barrier { room, last_seq, done });
            }
            Err(e) => tracing::error!(error = %e, "cannot read the last seq of room {room}"),
        }
    }

    fn room_last_seq(&mut self, room: &RoomName) -> Result<u64, StoreError> {
        if let Some(seq) = self.last_seq.get(room) {
            return Ok(*seq);
        }
        // The journal is archived at start and whenever the cache is dropped, so the
        // archive alone knows the last seq of a room the cache has not seen.
        let seq: i64 = self.conn.query_row(
            "SELECT COALESCE(MAX(seq), 0) FROM messages WHERE room = ?1",
            [room.as_str()],
            |row| row.get(0),
        )?;
        let seq = seq as u64;
        self.last_seq.insert(room.clone(), seq);
        Ok(seq)
    }

    fn commit_appends(&mut self, appends: Vec<(NewMessage, Reply)>) {
        if appends.is_empty() {
            return;
        }
        let ts = Timestamp::now();
        match self.insert_all(&appends, ts) {
            Ok(Inserted { outcomes, committed, journaled }) => {
                for (journaled, appended) in journaled {
                    if let Some(id) = &journaled.key {
                        self.journal_keys.insert(id.clone(), appended);
                    }
                    self.journal.push_back(journaled);
                }
                self.tail.extend(&committed);
                // The hub hears of a commit before its senders are acked, so an acked
                // message is already on its way to the members.
                if !committed.is_empty() {
                    let _hub_gone = self.commits.blocking_send(CommitEvent::Committed(committed));
                }
                for ((_, reply), outcome) in appends.into_iter().zip(outcomes) {
                    let _sender_gone = reply.send(Ok(outcome));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, count = appends.len(), "group commit failed");
                // Nothing of the batch was stored; reload the seqs from the database to
                // be safe (the journal is archived first, so the archive knows them all).
                while !self.journal.is_empty() && self.archive_chunk() {}
                self.last_seq.clear();
                for (_, reply) in appends {
                    let _sender_gone = reply.send(Err(StoreError::Database(e.to_string())));
                }
            }
        }
    }

    /// The stored outcome of an earlier message with the same key, if any.
    fn find_key(&self, pending: &HashMap<KeyId, Appended>, id: &KeyId) -> Result<Option<Appended>, StoreError> {
        if let Some(found) = pending.get(id).or_else(|| self.journal_keys.get(id)) {
            return Ok(Some(Appended { duplicate: true, ..*found }));
        }
        let mut by_key =
            self.conn.prepare_cached("SELECT seq, ts FROM messages WHERE room = ?1 AND user_id = ?2 AND key = ?3")?;
        let found = by_key
            .query_row(params![id.0.as_str(), id.1, id.2], |row| {
                Ok(Appended { seq: row.get::<_, i64>(0)? as u64, ts: Timestamp(row.get(1)?), duplicate: true })
            })
            .optional()?;
        Ok(found)
    }

    fn insert_all(&mut self, appends: &[(NewMessage, Reply)], ts: Timestamp) -> Result<Inserted, StoreError> {
        for (message, _) in appends {
            self.room_last_seq(&message.room)?;
        }
        // Everything but the inserts is decided before the transaction opens.
        let mut next_seq: HashMap<&RoomName, u64> = HashMap::new();
        // Keys of this batch, for repeats inside it.
        let mut batch_keys: HashMap<KeyId, Appended> = HashMap::new();
        let mut journaled = Vec::with_capacity(appends.len());
        let mut outcomes = Vec::with_capacity(appends.len());
        let mut committed = Vec::with_capacity(appends.len());
        for (message, _) in appends {
            let key_id = message.key.as_ref().map(|key| (message.room.clone(), message.from.id.clone(), key.clone()));
            if let Some(id) = &key_id {
                if let Some(original) = self.find_key(&batch_keys, id)? {
                    outcomes.push(original);
                    continue;
                }
            }
            let last = self.last_seq.get(&message.room).copied().unwrap_or_default();
            let seq = next_seq.entry(&message.room).or_insert(last);
            *seq += 1;
            let appended = Appended { seq: *seq, ts, duplicate: false };
            if let Some(id) = &key_id {
                batch_keys.insert(id.clone(), appended);
            }
            journaled.push((Journaled { room: message.room.clone(), seq: *seq, key: key_id }, appended));
            outcomes.push(appended);
            committed.push(Arc::new(Message {
                room: message.room.clone(),
                seq: *seq,
                ts,
                from: message.from.clone(),
                text: message.text.clone(),
                key: message.key.clone(),
                reply_to: message.reply_to,
            }));
        }
        let tx = self.conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO journal (room, seq, ts, user_id, user_name, text, key, reply_to)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            for message in &committed {
                insert.execute(params![
                    message.room.as_str(),
                    message.seq as i64,
                    message.ts.millis(),
                    message.from.id,
                    message.from.name,
                    message.text,
                    message.key,
                    message.reply_to.map(|r| r as i64),
                ])?;
            }
        }
        tx.commit()?;
        for (room, seq) in next_seq {
            self.last_seq.insert(room.clone(), seq);
        }
        Ok(Inserted { outcomes, committed, journaled })
    }

    /// Moves the oldest chunk of the journal into `messages`; false (and the journal
    /// and the tail left as they are, for a later retry) when that fails.
    fn archive_chunk(&mut self) -> bool {
        let started = Instant::now();
        let chunk = self.journal.len().min(ARCHIVE_CHUNK);
        if chunk == 0 {
            return true;
        }
        if let Err(e) = archive_oldest(&mut self.conn, chunk) {
            tracing::error!(error = %e, "cannot archive the journal; will retry");
            return false;
        }
        let mut archived: HashMap<RoomName, u64> = HashMap::new();
        for moved in self.journal.drain(..chunk) {
            if let Some(key) = moved.key {
                self.journal_keys.remove(&key);
            }
            let through = archived.entry(moved.room).or_default();
            *through = (*through).max(moved.seq);
        }
        self.tail.forget_through(&archived);
        tracing::debug!(chunk, took = ?started.elapsed(), "journal chunk archived");
        true
    }
}

/// A message in the journal, as the archive needs to know it.
struct Journaled {
    room: RoomName,
    seq: u64,
    key: Option<KeyId>,
}

/// The outcome of one group commit.
struct Inserted {
    /// Per append, in order.
    outcomes: Vec<Appended>,
    /// The new messages (duplicates excluded).
    committed: Vec<Arc<Message>>,
    /// The new messages as the journal knows them, with their outcome.
    journaled: Vec<(Journaled, Appended)>,
}

/// Moves every journal row into `messages`; returns how many.
pub(super) fn archive_journal(conn: &mut Connection) -> Result<usize, StoreError> {
    let mut moved = 0;
    loop {
        let chunk = archive_oldest(conn, ARCHIVE_CHUNK)?;
        moved += chunk;
        if chunk < ARCHIVE_CHUNK {
            return Ok(moved);
        }
    }
}

/// Moves the `count` oldest journal rows into `messages` in one transaction; returns
/// how many there were.
///
/// The archive needs no fsync of its own: WAL frames are replayed in order, so the
/// next journal commit's fsync makes it durable too, and an archive lost to a crash
/// leaves its rows in the journal, which the next start archives again.
fn archive_oldest(conn: &mut Connection, count: usize) -> Result<usize, StoreError> {
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    let moved = move_oldest(conn, count);
    conn.pragma_update(None, "synchronous", "FULL")?;
    moved
}

fn move_oldest(conn: &mut Connection, count: usize) -> Result<usize, StoreError> {
    let tx = conn.transaction()?;
    let last_id: Option<i64> =
        tx.query_row("SELECT MAX(id) FROM (SELECT id FROM journal ORDER BY id LIMIT ?1)", [count as i64], |row| {
            row.get(0)
        })?;
    let Some(last_id) = last_id else { return Ok(0) };
    let moved = tx.execute(
        "INSERT INTO messages (room, seq, ts, user_id, user_name, text, key, reply_to)
         SELECT room, seq, ts, user_id, user_name, text, key, reply_to FROM journal WHERE id <= ?1
         ORDER BY room, seq",
        [last_id],
    )?;
    tx.execute("DELETE FROM journal WHERE id <= ?1", [last_id])?;
    tx.commit()?;
    Ok(moved)
}
