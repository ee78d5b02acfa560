//! The writer thread: the single authority on `seq`, and the only connection that
//! writes the journal.
//!
//! Appends are group-committed to the `journal`, a table in append order in its own
//! database file (`DB-log`) with no other index: a commit writes the few pages at its
//! end (plus one fsync) however many rooms the batch touches. Writing them straight
//! into the room-ordered `messages` table dirtied a page per room per index (100
//! rooms: ~110 pages, ~440 KiB and 3-4 ms per commit here). The archiver thread
//! (`archiver.rs`) copies the journal into `messages` on the other core and tells the
//! writer how far it got; the writer then forgets those rows (their keys, the tail,
//! and the rows themselves, deleted in its next transaction). Until then the [`Tail`]
//! serves them to readers, and idempotency keys are checked against the journal in
//! memory and against `messages` through its index. Each successful group commit
//! records its duration and size in the server's metrics.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        atomic::{AtomicI64, Ordering},
        Arc,
    },
    time::Instant,
};

use bavard_protocol::{Message, RoomName, Timestamp};
use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::{mpsc, oneshot};

use super::{
    messaging::{self, Overlaid, Revisions},
    rules,
    tail::Tail,
};
use crate::{
    hub::CommitSender,
    metrics::Metrics,
    store::{Appended, AuditEntry, ChangeMessage, ChangeRefused, Changed, NewMessage, NewRoom, RuleChange, StoreError},
};

/// The most appends one transaction takes.
const MAX_BATCH: usize = 4_096;

/// What the writer is asked to do.
pub(super) enum WriterCommand {
    Append(NewMessage, oneshot::Sender<Result<Appended, StoreError>>),
    Barrier(RoomName, oneshot::Sender<()>),
    /// Records a new room with its audit entry (see `MessageStore::create_room`);
    /// answers false when it is already known.
    CreateRoom {
        room: NewRoom,
        audit: AuditEntry,
        reply: oneshot::Sender<Result<bool, StoreError>>,
    },
    /// Changes a room's rules with its audit entry (see `MessageStore::change_room`).
    ChangeRoom {
        room: RoomName,
        changes: Vec<RuleChange>,
        audit: AuditEntry,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    /// Changes a stored message (see `MessageStore::change_message`).
    Change(ChangeMessage, oneshot::Sender<Result<Result<Changed, ChangeRefused>, StoreError>>),
    /// Moves a read position forward (see `MessageStore::mark_read`).
    MarkRead {
        room: RoomName,
        user: String,
        seq: u64,
        reply: oneshot::Sender<Result<(u64, bool), StoreError>>,
    },
    /// The archiver copied every journal row up to this id into `messages`.
    Archived(i64),
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
    /// The id of the last journal row written; the archiver reads it to know what waits.
    last_id: Arc<AtomicI64>,
    /// Journal rows up to this id are archived and can be deleted.
    deletable_through: i64,
    tail: Arc<Tail>,
    commits: CommitSender,
    /// Commit latency and batch size are recorded here.
    metrics: Arc<Metrics>,
    /// Rooms' change numbers, for changes to messages.
    revisions: Revisions,
    /// Rooms with an overlay, which readers consult.
    overlaid: Arc<Overlaid>,
}

/// A change to a message or a read position, waiting for its transaction.
enum Edit {
    Change(ChangeMessage, oneshot::Sender<Result<Result<Changed, ChangeRefused>, StoreError>>),
    MarkRead { room: RoomName, user: String, seq: u64, reply: oneshot::Sender<Result<(u64, bool), StoreError>> },
}

impl Writer {
    /// A writer over `conn` (the journal database, with `messages` attached as
    /// `archive`), whose journal must be empty (see [`super::archiver::archive_all`]).
    pub(super) fn new(
        conn: Connection,
        last_id: Arc<AtomicI64>,
        tail: Arc<Tail>,
        commits: CommitSender,
        metrics: Arc<Metrics>,
        revisions: Revisions,
        overlaid: Arc<Overlaid>,
    ) -> Self {
        Self {
            conn,
            last_seq: HashMap::new(),
            journal_keys: HashMap::new(),
            journal: VecDeque::new(),
            last_id,
            deletable_through: 0,
            tail,
            commits,
            metrics,
            revisions,
            overlaid,
        }
    }

    /// Serves commands until the queue closes or a `Close` arrives.
    pub(super) fn run(&mut self, mut queue: mpsc::Receiver<WriterCommand>) {
        let mut batch = Vec::with_capacity(64);
        while let Some(first) = queue.blocking_recv() {
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(command) => batch.push(command),
                    Err(_) => break,
                }
            }
            let closing = self.process(&mut batch);
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
    /// Consecutive changes share a transaction too; appends and changes take turns in
    /// the order they came.
    fn process(&mut self, batch: &mut Vec<WriterCommand>) -> Option<oneshot::Sender<()>> {
        let mut appends = Vec::new();
        let mut edits = Vec::new();
        let mut closing = None;
        for command in batch.drain(..) {
            if !matches!(command, WriterCommand::Change(..) | WriterCommand::MarkRead { .. }) {
                self.commit_edits(std::mem::take(&mut edits));
            }
            match command {
                WriterCommand::Append(message, reply) => appends.push((message, reply)),
                WriterCommand::Change(change, reply) => {
                    self.commit_appends(std::mem::take(&mut appends));
                    edits.push(Edit::Change(change, reply));
                }
                WriterCommand::MarkRead { room, user, seq, reply } => {
                    self.commit_appends(std::mem::take(&mut appends));
                    edits.push(Edit::MarkRead { room, user, seq, reply });
                }
                WriterCommand::Barrier(room, done) => {
                    self.commit_appends(std::mem::take(&mut appends));
                    self.barrier(room, done);
                }
                // A room's transaction comes after the appends queued before it.
                WriterCommand::CreateRoom { room, audit, reply } => {
                    self.commit_appends(std::mem::take(&mut appends));
                    let _caller_gone = reply.send(rules::create_room(&mut self.conn, &room, &audit));
                }
                WriterCommand::ChangeRoom { room, changes, audit, reply } => {
                    self.commit_appends(std::mem::take(&mut appends));
                    let _caller_gone = reply.send(rules::change_room(&mut self.conn, &room, &changes, &audit));
                }
                WriterCommand::Archived(through) => self.archived(through),
                WriterCommand::Close(done) => {
                    self.commit_appends(std::mem::take(&mut appends));
                    closing = Some(done);
                    break;
                }
            }
        }
        self.commit_edits(edits);
        if appends.is_empty() {
            self.delete_archived();
        }
        self.commit_appends(appends);
        closing
    }

    /// Applies changes to messages and read positions in one transaction; each gets
    /// its own answer (a refused change writes nothing), all fail if the commit does.
    fn commit_edits(&mut self, edits: Vec<Edit>) {
        if edits.is_empty() {
            return;
        }
        let done = self.apply_edits(&edits);
        match done {
            Ok(outcomes) => {
                self.revisions.committed();
                for (edit, outcome) in edits.into_iter().zip(outcomes) {
                    match (edit, outcome) {
                        (Edit::Change(change, reply), EditOutcome::Changed(outcome)) => {
                            if let Ok(changed) = &outcome {
                                self.overlaid.note(&change.room, changed.rev);
                            }
                            let _caller_gone = reply.send(Ok(outcome));
                        }
                        (Edit::MarkRead { reply, .. }, EditOutcome::Read(read)) => {
                            let _caller_gone = reply.send(Ok(read));
                        }
                        _ => tracing::error!("a change's outcome does not match its kind"),
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "changes to messages failed");
                self.revisions.forget();
                for edit in edits {
                    let error = e.clone();
                    let _caller_gone = match edit {
                        Edit::Change(_, reply) => reply.send(Err(error)).is_ok(),
                        Edit::MarkRead { reply, .. } => reply.send(Err(error)).is_ok(),
                    };
                }
            }
        }
    }

    fn apply_edits(&mut self, edits: &[Edit]) -> Result<Vec<EditOutcome>, StoreError> {
        let tx = self.conn.transaction()?;
        let mut outcomes = Vec::with_capacity(edits.len());
        for edit in edits {
            outcomes.push(match edit {
                Edit::Change(change, _) => EditOutcome::Changed(self.revisions.apply(&tx, &self.tail, change)?),
                Edit::MarkRead { room, user, seq, .. } => {
                    EditOutcome::Read(messaging::mark_read(&tx, room, user, *seq)?)
                }
            });
        }
        tx.commit()?;
        Ok(outcomes)
    }

    fn barrier(&mut self, room: RoomName, done: oneshot::Sender<()>) {
        match self.room_last_seq(&room) {
            Ok(last_seq) => {
                let _hub_gone = self.commits.blocking_barrier(room, last_seq, done);
            }
            Err(e) => tracing::error!(error = %e, "cannot read the last seq of room {room}"),
        }
    }

    fn room_last_seq(&mut self, room: &RoomName) -> Result<u64, StoreError> {
        if let Some(seq) = self.last_seq.get(room) {
            return Ok(*seq);
        }
        let seq: i64 = self
            .conn
            .prepare_cached(
                "SELECT COALESCE(MAX(seq), 0) FROM
                   (SELECT seq FROM archive.messages WHERE room = ?1 UNION ALL SELECT seq FROM journal WHERE room = ?1)",
            )?
            .query_row([room.as_str()], |row| row.get(0))?;
        let seq = seq as u64;
        self.last_seq.insert(room.clone(), seq);
        Ok(seq)
    }

    fn commit_appends(&mut self, appends: Vec<(NewMessage, Reply)>) {
        if appends.is_empty() {
            return;
        }
        let ts = Timestamp::now();
        let (messages, replies): (Vec<NewMessage>, Vec<Reply>) = appends.into_iter().unzip();
        let count = messages.len();
        let started = Instant::now();
        match self.insert_all(messages, ts) {
            Ok(Inserted { outcomes, committed, journaled }) => {
                self.metrics.committed(count, started.elapsed());
                for entry in journaled {
                    if let Some(id) = &entry.key {
                        self.journal_keys.insert(id.clone(), Appended { seq: entry.seq, ts, duplicate: false });
                    }
                    self.journal.push_back(entry);
                }
                self.tail.extend(&committed);
                // The hub hears of a commit before its senders are acked, so an acked
                // message is already on its way to the members.
                if !committed.is_empty() {
                    let _hub_gone = self.commits.blocking_committed(committed);
                }
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _sender_gone = reply.send(Ok(outcome));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, count, "group commit failed");
                // Nothing of the batch was stored; reload the seqs from the database.
                self.last_seq.clear();
                self.revisions.forget();
                for reply in replies {
                    let _sender_gone = reply.send(Err(e.clone()));
                }
            }
        }
    }

    /// The stored outcome of an earlier message with the same key, if any.
    fn find_key(&self, pending: &HashMap<KeyId, Appended>, id: &KeyId) -> Result<Option<Appended>, StoreError> {
        if let Some(found) = pending.get(id).or_else(|| self.journal_keys.get(id)) {
            return Ok(Some(Appended { duplicate: true, ..*found }));
        }
        let mut by_key = self
            .conn
            .prepare_cached("SELECT seq, ts FROM archive.messages WHERE room = ?1 AND user_id = ?2 AND key = ?3")?;
        let found = by_key
            .query_row(params![id.0.as_str(), id.1, id.2], |row| {
                Ok(Appended { seq: row.get::<_, i64>(0)? as u64, ts: Timestamp(row.get(1)?), duplicate: true })
            })
            .optional()?;
        Ok(found)
    }

    fn insert_all(&mut self, messages: Vec<NewMessage>, ts: Timestamp) -> Result<Inserted, StoreError> {
        for message in &messages {
            self.room_last_seq(&message.room)?;
        }
        // Everything but the inserts is decided before the transaction opens.
        let mut next_seq: HashMap<RoomName, u64> = HashMap::new();
        // Keys of this batch, for repeats inside it.
        let mut batch_keys: HashMap<KeyId, Appended> = HashMap::new();
        let mut journaled = Vec::with_capacity(messages.len());
        let mut outcomes = Vec::with_capacity(messages.len());
        let mut committed = Vec::with_capacity(messages.len());
        for message in messages {
            let key_id = message.key.as_ref().map(|key| (message.room.clone(), message.from.id.clone(), key.clone()));
            if let Some(id) = &key_id {
                if let Some(original) = self.find_key(&batch_keys, id)? {
                    outcomes.push(original);
                    continue;
                }
            }
            let seq = match next_seq.get_mut(&message.room) {
                Some(seq) => seq,
                None => {
                    let last = self.last_seq.get(&message.room).copied().unwrap_or_default();
                    next_seq.entry(message.room.clone()).or_insert(last)
                }
            };
            *seq += 1;
            let appended = Appended { seq: *seq, ts, duplicate: false };
            if let Some(id) = &key_id {
                batch_keys.insert(id.clone(), appended);
            }
            let id = self.last_id.load(Ordering::Relaxed) + journaled.len() as i64 + 1;
            journaled.push(Journaled { id, room: message.room.clone(), seq: *seq, key: key_id });
            outcomes.push(appended);
            // The message moves into the event: no copy of its text per append.
            let NewMessage { room, from, text, key, reply_to, streaming } = message;
            committed.push(Arc::new(Message {
                key,
                reply_to,
                streaming,
                ..Message::new(room, appended.seq, ts, from, text)
            }));
        }
        let tx = self.conn.transaction()?;
        if self.deletable_through > 0 {
            tx.prepare_cached("DELETE FROM journal WHERE id <= ?1")?.execute([self.deletable_through])?;
        }
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO journal (id, room, seq, ts, user_id, user_name, text, key, reply_to)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?;
            for (message, journaled) in committed.iter().zip(&journaled) {
                insert.execute(params![
                    journaled.id,
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
            // The directory's view of each room the batch wrote to (a row per room, not
            // per message); a room's first message creates its row.
            let mut touch = tx.prepare_cached(
                "INSERT INTO rooms (name, created_at, last_seq, last_ts) VALUES (?1, ?2, ?3, ?2)
                 ON CONFLICT (name) DO UPDATE SET last_seq = excluded.last_seq, last_ts = excluded.last_ts",
            )?;
            for (room, seq) in &next_seq {
                touch.execute(params![room.as_str(), ts.millis(), *seq as i64])?;
            }
            for message in committed.iter().filter(|m| m.reply_to.is_some() || m.streaming) {
                self.revisions.appended(&tx, message)?;
            }
        }
        tx.commit()?;
        self.revisions.committed();
        for message in committed.iter().filter(|m| m.reply_to.is_some() || m.streaming) {
            self.overlaid.note(&message.room, 0);
        }
        self.deletable_through = 0;
        if let Some(last) = journaled.last() {
            self.last_id.store(last.id, Ordering::Release);
        }
        self.last_seq.extend(next_seq);
        Ok(Inserted { outcomes, committed, journaled })
    }

    /// Forgets the journal rows up to `through`, which the archiver has copied into
    /// `messages`: their keys and tail entries now, the rows with the next transaction.
    fn archived(&mut self, through: i64) {
        let mut archived: HashMap<RoomName, u64> = HashMap::new();
        while self.journal.front().is_some_and(|oldest| oldest.id <= through) {
            let Some(moved) = self.journal.pop_front() else { break };
            if let Some(key) = moved.key {
                self.journal_keys.remove(&key);
            }
            let done = archived.entry(moved.room).or_default();
            *done = (*done).max(moved.seq);
        }
        self.tail.forget_through(&archived);
        self.deletable_through = self.deletable_through.max(through);
    }

    /// Deletes archived journal rows in a transaction of their own, when no append
    /// comes to carry the delete (an idle writer: its fsync costs nobody).
    fn delete_archived(&mut self) {
        if self.deletable_through == 0 {
            return;
        }
        match self.conn.execute("DELETE FROM journal WHERE id <= ?1", [self.deletable_through]) {
            Ok(_) => self.deletable_through = 0,
            Err(e) => tracing::warn!(error = %e, "cannot delete archived journal rows; will retry"),
        }
    }
}

/// What one edit did, in its transaction.
enum EditOutcome {
    Changed(Result<Changed, ChangeRefused>),
    Read((u64, bool)),
}

/// A message in the journal, as the archive needs to know it.
struct Journaled {
    id: i64,
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
    /// The new messages as the journal knows them.
    journaled: Vec<Journaled>,
}
