//! The embedded SQLite store: one writer thread that group-commits appends (one
//! transaction, one fsync, per batch) and a small pool of read connections.
//!
//! The writer (`writer.rs`) is the single authority on `seq`: it caches each room's
//! last seq and assigns the next one, so a room's seqs are gap-free and reported on the
//! commit stream in order. Appends land in an append-ordered journal (its own file,
//! `DB-log`) and the archiver (`archiver.rs`) moves them to the room-ordered
//! `messages` table (the file `DB`) in bulk; the tail (`tail.rs`) shows readers the
//! journal's messages meanwhile. WAL mode lets reads run beside both.

mod archiver;
mod messaging;
mod rules;
mod tail;
mod writer;

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    thread,
};

use bavard_protocol::{Message, RoomName, Timestamp, User};
use futures_util::future::BoxFuture;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use tokio::sync::{mpsc, oneshot};

use self::{
    tail::Tail,
    writer::{Writer, WriterCommand},
};
use super::{
    AuditEntry, AuditRecord, ChangeMessage, ChangeRefused, Changed, MessageStore, NewMessage, NewRoom, Page, PageQuery,
    PendingAppend, RoomRecord, RuleChange, StoreError, StoredRules, Viewer,
};
use crate::{hub::CommitSender, metrics::Metrics};

/// How many appends may wait for the writer before `append` applies backpressure.
const WRITER_QUEUE: usize = 16_384;
/// How many idle read connections are kept.
const READ_POOL: usize = 4;
/// How many reads run at once (as many as the pool keeps connections, so none is
/// opened and thrown away); more wait their turn. Without a bound, a burst of joins
/// (each reads its room's rules once) could open a connection and a blocking thread
/// per read (suspected of the idle memory regression of issue 11: 10,000 idle
/// connections in 1,000 rooms cost 4.2 KiB each instead of 2.9; see BENCHMARKS.md).
const READS_AT_ONCE: usize = READ_POOL;
/// The most memory SQLite keeps for all connections together (page caches first give
/// back what they hold beyond it; a process-wide soft limit).
const SQLITE_MEMORY: i64 = 16 * 1024 * 1024;
/// How often the checkpointer copies the WAL into the database file.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// The schema of the main database file, applied on every start (each statement is
/// idempotent).
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS messages (
    room      TEXT    NOT NULL,
    seq       INTEGER NOT NULL,
    ts        INTEGER NOT NULL,
    user_id   TEXT    NOT NULL,
    user_name TEXT    NOT NULL,
    text      TEXT    NOT NULL,
    key       TEXT,
    reply_to  INTEGER,
    PRIMARY KEY (room, seq)
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS messages_by_key ON messages (room, user_id, key) WHERE key IS NOT NULL;
PRAGMA user_version = 1;
";

/// The schema of the writer's file (`DB-log`): the journal (messages acknowledged but
/// not yet archived, in append order) and the rooms, which only the writer changes.
/// Applied on every start (each statement is idempotent). `rooms` is created in its
/// version 2 shape: [`migrate_journal`] brings a fresh file to [`JOURNAL_VERSION`] as it
/// does an old one, so both take the same path.
const JOURNAL_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS journal (
    id        INTEGER PRIMARY KEY,
    room      TEXT    NOT NULL,
    seq       INTEGER NOT NULL,
    ts        INTEGER NOT NULL,
    user_id   TEXT    NOT NULL,
    user_name TEXT    NOT NULL,
    text      TEXT    NOT NULL,
    key       TEXT,
    reply_to  INTEGER
);
CREATE TABLE IF NOT EXISTS rooms (
    name       TEXT    PRIMARY KEY,
    topic      TEXT    NOT NULL DEFAULT '',
    kind       TEXT    NOT NULL DEFAULT 'public',
    created_at INTEGER NOT NULL,
    last_seq   INTEGER NOT NULL DEFAULT 0,
    last_ts    INTEGER
) WITHOUT ROWID;
";

/// Version 3: rooms' rules (slow mode, freeze, roles, sanctions) and their audit log.
/// Timestamps (`until`, `ts`) are integer milliseconds.
const JOURNAL_V3: &str = "
BEGIN;
ALTER TABLE rooms ADD COLUMN slow_mode_secs INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rooms ADD COLUMN frozen INTEGER NOT NULL DEFAULT 0;
CREATE TABLE room_roles (
    room    TEXT NOT NULL,
    user_id TEXT NOT NULL,
    role    TEXT NOT NULL,
    PRIMARY KEY (room, user_id)
) WITHOUT ROWID;
CREATE TABLE sanctions (
    room    TEXT NOT NULL,
    user_id TEXT NOT NULL,
    kind    TEXT NOT NULL,
    until   INTEGER,
    reason  TEXT,
    PRIMARY KEY (room, user_id, kind)
) WITHOUT ROWID;
CREATE TABLE audit (
    id         INTEGER PRIMARY KEY,
    room       TEXT    NOT NULL,
    ts         INTEGER NOT NULL,
    actor_id   TEXT    NOT NULL,
    actor_name TEXT    NOT NULL,
    action     TEXT    NOT NULL,
    target     TEXT,
    reason     TEXT,
    detail     TEXT
);
CREATE INDEX audit_by_room ON audit (room, id);
PRAGMA user_version = 3;
COMMIT;
";

/// The writer file's schema version once [`migrate_journal`] has run.
const JOURNAL_VERSION: i64 = 4;

/// Brings the writer's file (with the archive attached as `archive`) to
/// [`JOURNAL_VERSION`]: version 2 added `rooms`, filled from the stored messages;
/// version 3 added rooms' rules and the audit log ([`JOURNAL_V3`]); version 4 the
/// overlay of changed messages, reactions, threads and read positions
/// ([`messaging::JOURNAL_V4`]). Each step is one transaction. A file of a newer
/// version is refused.
fn migrate_journal(conn: &Connection) -> Result<(), StoreError> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if version > JOURNAL_VERSION {
        return Err(StoreError::Database(format!(
            "the database was written by a newer Bavard (schema {version}, this one knows {JOURNAL_VERSION}): upgrade Bavard"
        )));
    }
    if version < 2 {
        conn.execute_batch(
            "BEGIN;
             INSERT OR IGNORE INTO rooms (name, created_at, last_seq, last_ts)
               SELECT room, MIN(ts), MAX(seq), MAX(ts) FROM
                 (SELECT room, seq, ts FROM archive.messages UNION ALL SELECT room, seq, ts FROM journal)
               GROUP BY room;
             PRAGMA user_version = 2;
             COMMIT;",
        )?;
    }
    if version < 3 {
        // A failed step leaves its transaction open; the store is not opened, and the
        // connection's close rolls it back.
        conn.execute_batch(JOURNAL_V3)?;
    }
    if version < 4 {
        conn.execute_batch(messaging::JOURNAL_V4)?;
    }
    Ok(())
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Database(e.to_string())
    }
}

/// SQLite-backed [`MessageStore`].
pub struct SqliteStore {
    writer: mpsc::Sender<WriterCommand>,
    readers: Arc<ReadPool>,
    tail: Arc<Tail>,
    /// Rooms with changed messages, reactions or threads (see `messaging.rs`).
    overlaid: Arc<messaging::Overlaid>,
    /// Dropping it stops the checkpointer thread.
    _checkpointer: std::sync::mpsc::Sender<()>,
    /// Asks the archiver to index a room before a search; dropping it stops the
    /// archiver thread.
    archiver: std::sync::mpsc::Sender<archiver::Command>,
}

/// The journal's database file beside the main one: `bavard.db` -> `bavard.db-log`.
pub fn journal_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push("-log");
    PathBuf::from(name)
}

/// Attaches the database file at `path` to `conn` under `alias`.
fn attach(conn: &Connection, path: &Path, alias: &str) -> Result<(), StoreError> {
    let name = path.to_str().ok_or_else(|| StoreError::Database(format!("{} is not UTF-8", path.display())))?;
    conn.execute(&format!("ATTACH DATABASE ?1 AS {alias}"), [name])?;
    Ok(())
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and starts the writer thread.
    /// Commits are reported on `commits`, their duration and size in `metrics`.
    pub fn open(path: &Path, commits: CommitSender, metrics: Arc<Metrics>) -> Result<Self, StoreError> {
        Self::open_files(path, commits, metrics).map_err(|error| explain_unwritable(path, error))
    }

    fn open_files(path: &Path, commits: CommitSender, metrics: Arc<Metrics>) -> Result<Self, StoreError> {
        let log_path = journal_path(path);
        let mut archive = open_connection(path, false)?;
        archive.execute_batch(SCHEMA)?;
        messaging::create_search_index(&archive)?;
        let journal = open_connection(&log_path, false)?;
        journal.execute_batch(JOURNAL_SCHEMA)?;
        // Checkpoints copy pages into the database file and fsync it: that is the
        // checkpointer thread's work, off the path of acknowledgements.
        journal.pragma_update(None, "wal_autocheckpoint", 0)?;
        attach(&journal, path, "archive")?;
        attach(&archive, &log_path, "log")?;
        migrate_journal(&journal)?;
        // A journal left by a crash holds acknowledged messages: archive them first.
        let recovered = archiver::archive_all(&mut archive)?;
        if recovered > 0 {
            tracing::info!(recovered, "archived the journal left by the previous run");
        }
        let checkpointer = start_checkpointer(&log_path)?;
        let (writer, queue) = mpsc::channel(WRITER_QUEUE);
        let tail = Arc::new(Tail::default());
        let last_id = Arc::new(std::sync::atomic::AtomicI64::new(0));
        let last_change_id = Arc::new(std::sync::atomic::AtomicI64::new(0));
        let overlaid = Arc::new(messaging::Overlaid::load(&journal)?);
        let revisions = messaging::Revisions::load(&journal, Arc::clone(&last_change_id))?;
        let mut state = Writer::new(
            journal,
            Arc::clone(&last_id),
            Arc::clone(&tail),
            commits,
            metrics,
            revisions,
            Arc::clone(&overlaid),
        );
        thread::Builder::new()
            .name("bavard-sqlite-writer".into())
            .spawn(move || state.run(queue))
            .map_err(|e| StoreError::Database(format!("cannot start the writer thread: {e}")))?;
        let (archiver, archiver_commands) = std::sync::mpsc::channel();
        let to_writer = writer.clone();
        thread::Builder::new()
            .name("bavard-sqlite-archiver".into())
            .spawn(move || archiver::run(archive, last_id, last_change_id, to_writer, archiver_commands))
            .map_err(|e| StoreError::Database(format!("cannot start the archiver thread: {e}")))?;
        let readers = Arc::new(ReadPool {
            path: path.to_owned(),
            log_path,
            idle: Mutex::new(Vec::new()),
            running: tokio::sync::Semaphore::new(READS_AT_ONCE),
        });
        Ok(Self { writer, readers, tail, overlaid, _checkpointer: checkpointer, archiver })
    }

    /// Sends the writer a command that answers on a oneshot, and waits for the answer.
    async fn ask_writer<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> WriterCommand,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.writer.send(command(reply)).await.map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    async fn read<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let _turn = self.readers.running.acquire().await.map_err(|_| StoreError::Closed)?;
        let readers = Arc::clone(&self.readers);
        tokio::task::spawn_blocking(move || {
            let conn = readers.take()?;
            let result = work(&conn);
            readers.give_back(conn);
            result
        })
        .await
        .map_err(|e| StoreError::Database(format!("read task failed: {e}")))?
    }

    /// A page of history: the tail's part first, then the archive's when the tail does
    /// not cover the range (see `tail.rs` for why in that order).
    async fn page_of(&self, room: RoomName, query: PageQuery) -> Result<Page, StoreError> {
        let recent = self.tail.slice(&room, query);
        if recent.complete {
            return Ok(tail::merge(query, Vec::new(), recent.messages));
        }
        let stored = self.read(move |conn| read_page(conn, &room, query)).await?;
        Ok(tail::merge(query, stored, recent.messages))
    }
}

/// Starts the thread that checkpoints the WAL every [`CHECKPOINT_EVERY`] (passively:
/// it never blocks the writer or the readers) until the returned sender is dropped.
fn start_checkpointer(path: &Path) -> Result<std::sync::mpsc::Sender<()>, StoreError> {
    let conn = open_connection(path, false)?;
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    thread::Builder::new()
        .name("bavard-sqlite-checkpointer".into())
        .spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(CHECKPOINT_EVERY) {
                if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    tracing::warn!(error = %e, "WAL checkpoint failed; will retry");
                }
            }
        })
        .map_err(|e| StoreError::Database(format!("cannot start the checkpointer thread: {e}")))?;
    Ok(stop)
}

/// `error` (from opening the database at `path`), with the reason when it is that the
/// file cannot be written: SQLite only says "unable to open database file".
fn explain_unwritable(path: &Path, error: StoreError) -> StoreError {
    let probe = if path.exists() {
        std::fs::OpenOptions::new().append(true).open(path).map(drop)
    } else {
        std::fs::OpenOptions::new().write(true).create_new(true).open(path).and_then(|_| std::fs::remove_file(path))
    };
    let why = match probe {
        Err(e) if e.kind() == std::io::ErrorKind::ReadOnlyFilesystem => {
            "it is on a read-only file system: remount it read-write, or give --db a path on a writable disk"
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            "the server may not write it: give its user write permission on the file and its folder, or another --db"
        }
        _ => return error,
    };
    // The cause's own text, not its Display: that would say "database error: " twice.
    let cause = match error {
        StoreError::Database(message) => message,
        other => other.to_string(),
    };
    StoreError::Database(format!("{cause}; {} cannot be written: {why}", path.display()))
}

fn open_connection(path: &Path, read_only: bool) -> Result<Connection, StoreError> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags)
        .map_err(|e| StoreError::Database(format!("cannot open {}: {e}", path.display())))?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    // A page cache large enough for the hot ends of busy rooms' indexes (SQLite's
    // default is 2 MiB), all connections' caches together bounded by
    // [`SQLITE_MEMORY`]. No mmap: every page read through the map stayed in the
    // process's resident memory, which then grew with the database file (to 350 MiB
    // in a 30-minute soak, RELIABILITY.md) instead of staying bounded.
    conn.pragma_update(None, "cache_size", -32_768)?;
    conn.pragma_update(None, "mmap_size", 0)?;
    conn.pragma_update(None, "soft_heap_limit", SQLITE_MEMORY)?;
    if !read_only {
        // WAL lets readers run beside the writer; FULL fsyncs each commit, so an
        // acknowledged message survives a crash or a power cut.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
    }
    Ok(conn)
}

struct ReadPool {
    path: PathBuf,
    log_path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    /// One permit per read running (see [`READS_AT_ONCE`]).
    running: tokio::sync::Semaphore,
}

impl ReadPool {
    fn take(&self) -> Result<Connection, StoreError> {
        let pooled = self.idle.lock().map_err(|_| StoreError::Closed)?.pop();
        match pooled {
            Some(conn) => Ok(conn),
            None => {
                let conn = open_connection(&self.path, true)?;
                attach(&conn, &self.log_path, "log")?;
                Ok(conn)
            }
        }
    }

    fn give_back(&self, conn: Connection) {
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < READ_POOL {
                idle.push(conn);
            }
        }
    }
}

fn row_to_message(room: &RoomName, row: &rusqlite::Row<'_>) -> rusqlite::Result<Message> {
    let from = User { id: row.get(2)?, name: row.get(3)? };
    Ok(Message {
        key: row.get(5)?,
        reply_to: row.get::<_, Option<i64>>(6)?.map(|r| r as u64),
        ..Message::new(room.clone(), row.get::<_, i64>(0)? as u64, Timestamp(row.get(1)?), from, row.get(4)?)
    })
}

const COLUMNS: &str = "seq, ts, user_id, user_name, text, key, reply_to";

const ROOM_COLUMNS: &str = "name, topic, kind, created_at, last_seq, last_ts, slow_mode_secs, frozen";

/// A row of `rooms` ([`ROOM_COLUMNS`]); None when its name is not a valid room name.
/// A kind this version does not know reads as private (see `store::stored_kind`).
fn row_to_room(row: &rusqlite::Row<'_>) -> rusqlite::Result<Option<RoomRecord>> {
    let Ok(room) = RoomName::new(&row.get::<_, String>(0)?) else { return Ok(None) };
    let created = Timestamp(row.get(3)?);
    Ok(Some(RoomRecord {
        room,
        topic: row.get(1)?,
        kind: super::stored_kind(&row.get::<_, String>(2)?),
        created,
        last_seq: row.get::<_, i64>(4)? as u64,
        last_ts: row.get::<_, Option<i64>>(5)?.map_or(created, Timestamp),
        slow_mode_secs: row.get(6)?,
        frozen: row.get(7)?,
    }))
}

/// The archive's part of a page: at most `limit + 1` messages in the query's range
/// (the extra one tells whether more exist), oldest first.
fn read_page(conn: &Connection, room: &RoomName, query: PageQuery) -> Result<Vec<Message>, StoreError> {
    let (sql, low, high, limit, newest_first) = match query {
        PageQuery::Before { before, limit } => (
            format!(
                "SELECT {COLUMNS} FROM messages WHERE room = ?1 AND seq > ?2 AND seq < ?3 ORDER BY seq DESC LIMIT ?4"
            ),
            0,
            before,
            limit,
            true,
        ),
        PageQuery::After { after, before, limit } => (
            format!(
                "SELECT {COLUMNS} FROM messages WHERE room = ?1 AND seq > ?2 AND seq < ?3 ORDER BY seq ASC LIMIT ?4"
            ),
            after,
            before,
            limit,
            false,
        ),
    };
    let high = high.map_or(i64::MAX, |h| h.min(i64::MAX as u64) as i64);
    let low = low.min(i64::MAX as u64) as i64;
    let mut statement = conn.prepare_cached(&sql)?;
    let rows = statement
        .query_map(params![room.as_str(), low, high, i64::from(limit) + 1], |row| row_to_message(room, row))?;
    let mut messages = rows.collect::<Result<Vec<_>, _>>()?;
    if newest_first {
        messages.reverse();
    }
    Ok(messages)
}

impl MessageStore for SqliteStore {
    fn append(&self, message: NewMessage) -> BoxFuture<'_, Result<PendingAppend, StoreError>> {
        Box::pin(async move {
            let (reply, outcome) = oneshot::channel();
            self.writer.send(WriterCommand::Append(message, reply)).await.map_err(|_| StoreError::Closed)?;
            let pending: PendingAppend = Box::pin(async move { outcome.await.map_err(|_| StoreError::Closed)? });
            Ok(pending)
        })
    }

    fn barrier(&self, room: RoomName) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let (done, processed) = oneshot::channel();
            self.writer.send(WriterCommand::Barrier(room, done)).await.map_err(|_| StoreError::Closed)?;
            processed.await.map_err(|_| StoreError::Closed)
        })
    }

    fn page(&self, room: RoomName, query: PageQuery) -> BoxFuture<'_, Result<Page, StoreError>> {
        Box::pin(self.page_of(room, query))
    }

    fn rooms(&self, limit: u32) -> BoxFuture<'_, Result<Vec<RoomRecord>, StoreError>> {
        Box::pin(self.read(move |conn| {
            let mut statement = conn.prepare_cached(&format!(
                "SELECT {ROOM_COLUMNS} FROM log.rooms ORDER BY COALESCE(last_ts, created_at) DESC, name LIMIT ?1"
            ))?;
            let rows = statement.query_map([i64::from(limit)], row_to_room)?;
            let mut rooms = Vec::new();
            for row in rows {
                // A name that is not a room name (written by hand) is left out.
                if let Some(room) = row? {
                    rooms.push(room);
                }
            }
            Ok(rooms)
        }))
    }

    fn room(&self, room: RoomName) -> BoxFuture<'_, Result<Option<RoomRecord>, StoreError>> {
        Box::pin(self.read(move |conn| {
            let mut statement =
                conn.prepare_cached(&format!("SELECT {ROOM_COLUMNS} FROM log.rooms WHERE name = ?1"))?;
            Ok(statement.query_row([room.as_str()], row_to_room).optional()?.flatten())
        }))
    }

    fn create_room(&self, room: NewRoom, audit: AuditEntry) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(self.ask_writer(|reply| WriterCommand::CreateRoom { room, audit, reply }))
    }

    fn change_room(
        &self,
        room: RoomName,
        changes: Vec<RuleChange>,
        audit: AuditEntry,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.ask_writer(|reply| WriterCommand::ChangeRoom { room, changes, audit, reply }))
    }

    fn rules(&self, room: RoomName) -> BoxFuture<'_, Result<Option<StoredRules>, StoreError>> {
        Box::pin(self.read(move |conn| rules::read_rules(conn, &room, Timestamp::now())))
    }

    fn audit(
        &self,
        room: RoomName,
        before: Option<u64>,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<AuditRecord>, StoreError>> {
        Box::pin(self.read(move |conn| rules::read_audit(conn, &room, before, limit)))
    }

    fn change_message(
        &self,
        change: ChangeMessage,
    ) -> BoxFuture<'_, Result<Result<Changed, ChangeRefused>, StoreError>> {
        Box::pin(self.ask_writer(|reply| WriterCommand::Change(change, reply)))
    }

    fn annotate(
        &self,
        room: RoomName,
        messages: Vec<Message>,
        viewer: Viewer,
    ) -> BoxFuture<'_, Result<Vec<Message>, StoreError>> {
        Box::pin(async move {
            if messages.is_empty() || self.overlaid.rev(&room).is_none() {
                return Ok(messages);
            }
            self.read(move |conn| messaging::annotate(conn, &room, messages, viewer.as_deref())).await
        })
    }

    fn messages_at(&self, room: RoomName, seqs: Vec<u64>) -> BoxFuture<'_, Result<Vec<Message>, StoreError>> {
        Box::pin(async move {
            let mut found: Vec<Option<Message>> =
                seqs.iter().map(|seq| self.tail.get(&room, *seq).map(|m| Message::clone(&m))).collect();
            let missing: Vec<(usize, u64)> =
                seqs.iter().enumerate().filter(|(i, _)| found[*i].is_none()).map(|(i, seq)| (i, *seq)).collect();
            if !missing.is_empty() {
                let read = self
                    .read(move |conn| {
                        missing
                            .into_iter()
                            .map(|(i, seq)| Ok((i, messaging::stored_message(conn, &room, seq)?)))
                            .collect::<Result<Vec<_>, StoreError>>()
                    })
                    .await?;
                for (i, message) in read {
                    found[i] = message;
                }
            }
            Ok(found.into_iter().flatten().collect())
        })
    }

    fn room_rev(&self, room: RoomName) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move { Ok(self.overlaid.rev(&room).unwrap_or(0)) })
    }

    fn changed_since(
        &self,
        room: RoomName,
        through: u64,
        since_rev: u64,
        limit: u32,
    ) -> BoxFuture<'_, Result<(Vec<u64>, bool), StoreError>> {
        Box::pin(async move {
            if self.overlaid.rev(&room).is_none_or(|rev| rev <= since_rev) {
                return Ok((Vec::new(), false));
            }
            let mut seqs =
                self.read(move |conn| messaging::changed_since(conn, &room, through, since_rev, limit)).await?;
            Ok(trim(&mut seqs, limit))
        })
    }

    fn thread(
        &self,
        room: RoomName,
        root: u64,
        query: PageQuery,
    ) -> BoxFuture<'_, Result<(Vec<u64>, bool), StoreError>> {
        Box::pin(async move {
            if self.overlaid.rev(&room).is_none() {
                return Ok((Vec::new(), false));
            }
            let mut seqs = self.read(move |conn| messaging::thread(conn, &room, root, query)).await?;
            let (limit, newest) = match query {
                PageQuery::Before { limit, .. } => (limit, true),
                PageQuery::After { limit, .. } => (limit, false),
            };
            let has_more = seqs.len() > limit as usize;
            if has_more {
                if newest {
                    seqs.drain(..seqs.len() - limit as usize);
                } else {
                    seqs.truncate(limit as usize);
                }
            }
            Ok((seqs, has_more))
        })
    }

    fn search(
        &self,
        room: RoomName,
        q: String,
        limit: u32,
        offset: u32,
    ) -> BoxFuture<'_, Result<(Vec<u64>, bool), StoreError>> {
        Box::pin(async move {
            // The index may lag behind the archive: the archiver brings the room's up
            // to date first, so the search sees every acknowledged message.
            let (reply, indexed) = oneshot::channel();
            self.archiver.send(archiver::Command::IndexRoom(room.clone(), reply)).map_err(|_| StoreError::Closed)?;
            indexed.await.map_err(|_| StoreError::Closed)??;
            let mut seqs = self.read(move |conn| messaging::search(conn, &room, &q, limit, offset)).await?;
            Ok(trim(&mut seqs, limit))
        })
    }

    fn mark_read(&self, room: RoomName, user: String, seq: u64) -> BoxFuture<'_, Result<(u64, bool), StoreError>> {
        Box::pin(self.ask_writer(move |reply| WriterCommand::MarkRead { room, user, seq, reply }))
    }

    fn unread(&self, room: RoomName, user: String) -> BoxFuture<'_, Result<u64, StoreError>> {
        let tail = Arc::clone(&self.tail);
        Box::pin(self.read(move |conn| messaging::unread(conn, &tail, &room, &user)))
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            if self.writer.is_closed() {
                return Err(StoreError::Closed);
            }
            self.read(|conn| Ok(conn.query_row("SELECT 1", [], |_| Ok(()))?)).await
        })
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let (done, closed) = oneshot::channel();
            if self.writer.send(WriterCommand::Close(done)).await.is_ok() {
                let _already_closed = closed.await;
            }
        })
    }
}

/// Cuts `seqs` (read with one extra) to `limit`; answers them and whether more exist.
fn trim(seqs: &mut Vec<u64>, limit: u32) -> (Vec<u64>, bool) {
    let has_more = seqs.len() > limit as usize;
    seqs.truncate(limit as usize);
    (std::mem::take(seqs), has_more)
}

#[cfg(test)]
mod tests {
    use bavard_protocol::{Role, RoomKind};

    use super::*;
    use crate::store::{Appended, Sanction, SanctionKind};

    fn user(id: &str) -> User {
        User { id: id.into(), name: id.into() }
    }

    fn new_message(room: &str, text: &str, key: Option<&str>) -> NewMessage {
        NewMessage {
            room: RoomName::new(room).unwrap(),
            from: user("u_1"),
            text: text.into(),
            key: key.map(Into::into),
            reply_to: None,
            streaming: false,
        }
    }

    async fn append(store: &SqliteStore, message: NewMessage) -> Appended {
        store.append(message).await.unwrap().await.unwrap()
    }

    #[tokio::test]
    async fn seqs_are_per_room_gap_free_and_keys_deduplicate() {
        let dir = tempfile::tempdir().unwrap();
        let (commits, mut stream) = crate::hub::commit_stream(64);
        let store = SqliteStore::open(&dir.path().join("t.db"), commits, Arc::default()).unwrap();
        assert_eq!(append(&store, new_message("a", "1", None)).await.seq, 1);
        assert_eq!(append(&store, new_message("b", "1", None)).await.seq, 1);
        assert_eq!(append(&store, new_message("a", "2", Some("k"))).await.seq, 2);
        let again = append(&store, new_message("a", "2 again", Some("k"))).await;
        assert_eq!((again.seq, again.duplicate), (2, true));
        assert_eq!(append(&store, new_message("a", "3", None)).await.seq, 3);
        let reported: Vec<_> = stream.drain_committed().iter().map(|m| (m.room.to_string(), m.seq)).collect();
        let expected = [("a", 1), ("b", 1), ("a", 2), ("a", 3)].map(|(r, s)| (r.to_string(), s));
        assert_eq!(reported, expected);

        let room = RoomName::new("a").unwrap();
        let page = store.page(room.clone(), PageQuery::Before { before: None, limit: 2 }).await.unwrap();
        assert_eq!(page.messages.iter().map(|m| m.seq).collect::<Vec<_>>(), [2, 3]);
        assert!(page.has_more);
        let page = store.page(room, PageQuery::After { after: 1, before: Some(3), limit: 5 }).await.unwrap();
        assert_eq!(page.messages.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(), ["2"]);
        assert!(!page.has_more);
        store.close().await;
    }

    /// A store whose commit stream nobody reads (these tests read pages, not events).
    fn open_store(path: &Path) -> SqliteStore {
        let (commits, _unread) = crate::hub::commit_stream(1);
        SqliteStore::open(path, commits, Arc::default()).unwrap()
    }

    #[tokio::test]
    async fn chat_features_work_and_outlive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let store = open_store(&path);
        let before = crate::store::chat_scenario::exercise(&store).await;
        store.close().await;
        drop(store);
        let store = open_store(&path);
        assert_eq!(crate::store::chat_scenario::state(&store).await, before);
        store.close().await;
    }

    fn journal_rows(path: &Path) -> i64 {
        let conn = Connection::open(journal_path(path)).unwrap();
        conn.query_row("SELECT COUNT(*) FROM journal", [], |row| row.get(0)).unwrap()
    }

    fn seqs(page: &Page) -> Vec<u64> {
        page.messages.iter().map(|m| m.seq).collect()
    }

    #[tokio::test]
    async fn a_journal_left_by_a_crash_is_archived_on_the_next_start_and_its_keys_still_count() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        {
            let store = open_store(&path);
            for i in 1..=3 {
                append(&store, new_message("a", &format!("a{i}"), Some(&format!("k{i}")))).await;
                append(&store, new_message("b", &format!("b{i}"), None)).await;
            }
            // Read while the messages are only in the journal and the tail.
            let page = store.page(RoomName::new("a").unwrap(), PageQuery::Before { before: None, limit: 2 }).await;
            assert_eq!(seqs(&page.unwrap()), [2, 3]);
            // Dropped without `close`, as by a crash: the journal may keep rows.
        }
        // And an acknowledged row the archiver never saw (the process died first).
        Connection::open(journal_path(&path))
            .unwrap()
            .execute(
                "INSERT INTO journal (id, room, seq, ts, user_id, user_name, text, key)
                 VALUES (1000, 'a', 4, 0, 'u_1', 'u_1', 'a4', 'k4')",
                [],
            )
            .unwrap();
        let store = open_store(&path);
        assert_eq!(journal_rows(&path), 0, "the journal was archived at start");
        let room = RoomName::new("a").unwrap();
        let page = store.page(room.clone(), PageQuery::After { after: 0, before: None, limit: 10 }).await.unwrap();
        assert_eq!(page.messages.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(), ["a1", "a2", "a3", "a4"]);
        let again = append(&store, new_message("a", "a2 again", Some("k2"))).await;
        assert_eq!((again.seq, again.duplicate), (2, true));
        let again = append(&store, new_message("a", "a4 again", Some("k4"))).await;
        assert_eq!((again.seq, again.duplicate), (4, true));
        assert_eq!(append(&store, new_message("a", "a5", None)).await.seq, 5);
        assert_eq!(append(&store, new_message("b", "b4", None)).await.seq, 4);
        store.close().await;
    }

    #[tokio::test]
    async fn pages_span_the_archive_and_the_journal_without_gaps_or_repeats() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let store = open_store(&path);
        for i in 1..=5 {
            append(&store, new_message("a", &format!("{i}"), None)).await;
        }
        // The archiver takes a small backlog after a short wait, and the writer then
        // deletes it from the journal.
        let archived = async {
            while journal_rows(&path) > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(10), archived).await.unwrap();
        for i in 6..=9 {
            append(&store, new_message("a", &format!("{i}"), Some(&format!("k{i}")))).await;
        }
        let room = RoomName::new("a").unwrap();
        let page = store.page(room.clone(), PageQuery::Before { before: None, limit: 6 }).await.unwrap();
        assert_eq!((seqs(&page), page.has_more), ((4..=9).collect(), true));
        let page = store.page(room.clone(), PageQuery::After { after: 3, before: Some(8), limit: 3 }).await.unwrap();
        assert_eq!((seqs(&page), page.has_more), (vec![4, 5, 6], true));
        let page = store.page(room.clone(), PageQuery::After { after: 0, before: None, limit: 50 }).await.unwrap();
        assert_eq!((seqs(&page), page.has_more), ((1..=9).collect(), false));
        let again = append(&store, new_message("a", "dup", Some("k7"))).await;
        assert_eq!((again.seq, again.duplicate), (7, true));
        let rooms = store.rooms(10).await.unwrap();
        assert_eq!((rooms.len(), rooms[0].last_seq), (1, 9), "the directory counts the journal too");
        store.close().await;
    }

    fn room(name: &str) -> RoomName {
        RoomName::new(name).unwrap()
    }

    fn entry(action: &str, detail: Option<&str>) -> AuditEntry {
        AuditEntry {
            ts: Timestamp(1_000),
            actor: user("u_mod"),
            action: action.into(),
            target: None,
            reason: None,
            detail: detail.map(Into::into),
        }
    }

    fn new_room(name: &str, kind: RoomKind, owner: Option<&str>) -> NewRoom {
        NewRoom { room: room(name), kind, topic: "about it".into(), owner: owner.map(Into::into), members: Vec::new() }
    }

    fn sanction(user: &str, kind: SanctionKind, until: Option<Timestamp>, reason: Option<&str>) -> Sanction {
        Sanction { user: user.into(), kind, until, reason: reason.map(Into::into) }
    }

    fn actions(records: &[AuditRecord]) -> Vec<&str> {
        records.iter().map(|r| r.entry.action.as_str()).collect()
    }

    #[tokio::test]
    async fn create_room_records_the_owner_and_its_audit_entry_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(&dir.path().join("t.db"));
        let mut created = entry("create", Some("private"));
        created.reason = Some("for the team".into());
        assert!(store.create_room(new_room("team", RoomKind::Private, Some("u_1")), created.clone()).await.unwrap());
        let record = store.room(room("team")).await.unwrap().unwrap();
        assert_eq!((record.kind, record.topic.as_str(), record.last_seq), (RoomKind::Private, "about it", 0));
        assert_eq!((record.slow_mode_secs, record.frozen), (0, false));
        let rules = store.rules(room("team")).await.unwrap().unwrap();
        assert_eq!(
            rules,
            StoredRules { kind: RoomKind::Private, roles: vec![("u_1".into(), Role::Owner)], ..StoredRules::default() }
        );
        // A second create changes nothing and logs nothing.
        let again = store.create_room(new_room("team", RoomKind::Public, Some("u_2")), entry("create", None));
        assert!(!again.await.unwrap());
        assert_eq!(store.rules(room("team")).await.unwrap().unwrap(), rules);
        let log = store.audit(room("team"), None, 10).await.unwrap();
        assert_eq!(log.len(), 1);
        assert_eq!(log[0].entry, created);
        // Without an owner: no role.
        assert!(store.create_room(new_room("open", RoomKind::Public, None), entry("create", None)).await.unwrap());
        assert!(store.rules(room("open")).await.unwrap().unwrap().roles.is_empty());
        store.close().await;
    }

    #[tokio::test]
    async fn change_room_gives_a_room_without_a_record_a_public_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(&dir.path().join("t.db"));
        assert_eq!(store.rules(room("lobby")).await.unwrap(), None);
        assert_eq!(store.room(room("lobby")).await.unwrap(), None);
        store.change_room(room("lobby"), vec![RuleChange::SlowMode(5)], entry("slow_mode", Some("5s"))).await.unwrap();
        let record = store.room(room("lobby")).await.unwrap().unwrap();
        assert_eq!((record.kind, record.topic.as_str(), record.slow_mode_secs), (RoomKind::Public, "", 5));
        assert_eq!((record.last_seq, record.last_ts), (0, record.created));
        assert_eq!(actions(&store.audit(room("lobby"), None, 10).await.unwrap()), ["slow_mode"]);
        // Its first message continues from there.
        assert_eq!(append(&store, new_message("lobby", "hi", None)).await.seq, 1);
        store.close().await;
    }

    #[tokio::test]
    async fn each_rule_change_round_trips_through_rules() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(&dir.path().join("t.db"));
        let later = Timestamp(Timestamp::now().millis() + 3_600_000);
        let changes = vec![
            RuleChange::Kind(RoomKind::Broadcast),
            RuleChange::Topic("news".into()),
            RuleChange::SlowMode(30),
            RuleChange::Frozen(true),
            RuleChange::Role { user: "u_b".into(), role: Some(Role::Member) },
            RuleChange::Role { user: "u_a".into(), role: Some(Role::Moderator) },
            RuleChange::Role { user: "u_c".into(), role: Some(Role::Member) },
            RuleChange::Sanction(sanction("u_x", SanctionKind::Mute, Some(later), Some("spam"))),
            RuleChange::Sanction(sanction("u_x", SanctionKind::Ban, None, None)),
            RuleChange::Sanction(sanction("u_y", SanctionKind::Kick, Some(later), None)),
        ];
        store.change_room(room("news"), changes, entry("setup", None)).await.unwrap();
        let rules = store.rules(room("news")).await.unwrap().unwrap();
        assert_eq!((rules.kind, rules.slow_mode_secs, rules.frozen), (RoomKind::Broadcast, 30, true));
        let roles = [("u_a", Role::Moderator), ("u_b", Role::Member), ("u_c", Role::Member)];
        assert_eq!(rules.roles, roles.map(|(u, r)| (u.to_owned(), r)));
        assert_eq!(
            rules.sanctions,
            [
                sanction("u_x", SanctionKind::Ban, None, None),
                sanction("u_x", SanctionKind::Mute, Some(later), Some("spam")),
                sanction("u_y", SanctionKind::Kick, Some(later), None),
            ]
        );
        assert_eq!(store.room(room("news")).await.unwrap().unwrap().topic, "news");

        // Changes apply in order: a role changed then taken away, a sanction replaced
        // by one of the same kind, another lifted, and the rest set back.
        let changes = vec![
            RuleChange::Role { user: "u_a".into(), role: Some(Role::Owner) },
            RuleChange::Role { user: "u_b".into(), role: None },
            RuleChange::Role { user: "u_c".into(), role: Some(Role::Moderator) },
            RuleChange::Role { user: "u_c".into(), role: None },
            RuleChange::Sanction(sanction("u_x", SanctionKind::Mute, None, Some("again"))),
            RuleChange::Lift { user: "u_x".into(), kind: SanctionKind::Ban },
            RuleChange::Lift { user: "u_nobody".into(), kind: SanctionKind::Ban },
            RuleChange::Kind(RoomKind::Public),
            RuleChange::Topic(String::new()),
            RuleChange::SlowMode(0),
            RuleChange::Frozen(false),
        ];
        store.change_room(room("news"), changes, entry("reset", None)).await.unwrap();
        let rules = store.rules(room("news")).await.unwrap().unwrap();
        assert_eq!((rules.kind, rules.slow_mode_secs, rules.frozen), (RoomKind::Public, 0, false));
        assert_eq!(rules.roles, [("u_a".to_owned(), Role::Owner)]);
        assert_eq!(
            rules.sanctions,
            [
                sanction("u_x", SanctionKind::Mute, None, Some("again")),
                sanction("u_y", SanctionKind::Kick, Some(later), None),
            ]
        );
        assert_eq!(store.room(room("news")).await.unwrap().unwrap().topic, "");
        // Another room's rules are its own.
        assert_eq!(store.rules(room("other")).await.unwrap(), None);
        store.close().await;
    }

    #[tokio::test]
    async fn expired_sanctions_are_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(&dir.path().join("t.db"));
        let now = Timestamp::now().millis();
        let changes = vec![
            RuleChange::Sanction(sanction("u_past", SanctionKind::Ban, Some(Timestamp(now - 1_000)), None)),
            RuleChange::Sanction(sanction("u_soon", SanctionKind::Mute, Some(Timestamp(now + 60_000)), None)),
            RuleChange::Sanction(sanction("u_ever", SanctionKind::Ban, None, None)),
        ];
        store.change_room(room("a"), changes, entry("ban", None)).await.unwrap();
        let rules = store.rules(room("a")).await.unwrap().unwrap();
        let users: Vec<_> = rules.sanctions.iter().map(|s| s.user.as_str()).collect();
        assert_eq!(users, ["u_ever", "u_soon"]);
        store.close().await;
    }

    #[tokio::test]
    async fn rules_and_audit_survive_reopening_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let rules = {
            let store = open_store(&path);
            store.create_room(new_room("team", RoomKind::Private, Some("u_1")), entry("create", None)).await.unwrap();
            let changes = vec![
                RuleChange::SlowMode(10),
                RuleChange::Frozen(true),
                RuleChange::Role { user: "u_2".into(), role: Some(Role::Member) },
                RuleChange::Sanction(sanction("u_3", SanctionKind::Ban, None, Some("rude"))),
            ];
            store.change_room(room("team"), changes, entry("setup", None)).await.unwrap();
            let rules = store.rules(room("team")).await.unwrap().unwrap();
            store.close().await;
            rules
        };
        let store = open_store(&path);
        assert_eq!(store.rules(room("team")).await.unwrap().unwrap(), rules);
        assert_eq!(rules.roles.len(), 2);
        let record = store.room(room("team")).await.unwrap().unwrap();
        assert_eq!((record.kind, record.slow_mode_secs, record.frozen), (RoomKind::Private, 10, true));
        assert_eq!(actions(&store.audit(room("team"), None, 10).await.unwrap()), ["setup", "create"]);
        store.close().await;
    }

    #[tokio::test]
    async fn audit_pages_go_newest_first_below_before() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(&dir.path().join("t.db"));
        for i in 1..=5 {
            let changes = vec![RuleChange::SlowMode(i)];
            store.change_room(room("a"), changes.clone(), entry(&format!("a{i}"), None)).await.unwrap();
            store.change_room(room("b"), changes, entry(&format!("b{i}"), None)).await.unwrap();
        }
        let page = store.audit(room("a"), None, 2).await.unwrap();
        assert_eq!(actions(&page), ["a5", "a4"]);
        assert!(page[0].id > page[1].id);
        let page = store.audit(room("a"), Some(page[1].id), 2).await.unwrap();
        assert_eq!(actions(&page), ["a3", "a2"]);
        let page = store.audit(room("a"), Some(page[1].id), 2).await.unwrap();
        assert_eq!(actions(&page), ["a1"]);
        assert!(store.audit(room("a"), Some(page[0].id), 2).await.unwrap().is_empty());
        assert!(store.audit(room("a"), None, 0).await.unwrap().is_empty());
        assert!(store.audit(room("c"), None, 10).await.unwrap().is_empty());
        let all = store.audit(room("b"), Some(u64::MAX), 10).await.unwrap();
        assert_eq!(actions(&all), ["b5", "b4", "b3", "b2", "b1"]);
        assert_eq!(all[0].entry, entry("b5", None));
        store.close().await;
    }

    #[tokio::test]
    async fn messages_committed_after_a_create_or_change_keep_the_rules() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(&dir.path().join("t.db"));
        // Appends queued just before the create are committed first, then the create
        // (its row is not overwritten), then appends behind it.
        let before = store.append(new_message("team", "before", None)).await.unwrap();
        let create = store.create_room(new_room("team", RoomKind::Private, Some("u_1")), entry("create", None));
        assert!(!create.await.unwrap(), "the queued message made the room first");
        assert_eq!(before.await.unwrap().seq, 1);
        store
            .change_room(
                room("team"),
                vec![
                    RuleChange::Kind(RoomKind::Broadcast),
                    RuleChange::Topic("t".into()),
                    RuleChange::SlowMode(7),
                    RuleChange::Frozen(true),
                ],
                entry("setup", None),
            )
            .await
            .unwrap();
        assert!(store.create_room(new_room("new", RoomKind::Private, None), entry("create", None)).await.unwrap());
        for text in ["1", "2", "3"] {
            append(&store, new_message("team", text, None)).await;
            append(&store, new_message("new", text, None)).await;
        }
        let team = store.room(room("team")).await.unwrap().unwrap();
        assert_eq!(
            (team.kind, team.topic.as_str(), team.slow_mode_secs, team.frozen, team.last_seq),
            (RoomKind::Broadcast, "t", 7, true, 4)
        );
        let new = store.room(room("new")).await.unwrap().unwrap();
        assert_eq!((new.kind, new.topic.as_str(), new.last_seq), (RoomKind::Private, "about it", 3));
        assert!(new.last_ts >= new.created);
        let rules = store.rules(room("team")).await.unwrap().unwrap();
        assert_eq!((rules.kind, rules.slow_mode_secs, rules.frozen), (RoomKind::Broadcast, 7, true));
        store.close().await;
    }

    /// The writer's file as version 2 left it.
    const JOURNAL_V2: &str = "
        CREATE TABLE journal (
            id INTEGER PRIMARY KEY, room TEXT NOT NULL, seq INTEGER NOT NULL, ts INTEGER NOT NULL,
            user_id TEXT NOT NULL, user_name TEXT NOT NULL, text TEXT NOT NULL, key TEXT, reply_to INTEGER
        );
        CREATE TABLE rooms (
            name TEXT PRIMARY KEY, topic TEXT NOT NULL DEFAULT '', kind TEXT NOT NULL DEFAULT 'public',
            created_at INTEGER NOT NULL, last_seq INTEGER NOT NULL DEFAULT 0, last_ts INTEGER
        ) WITHOUT ROWID;
        INSERT INTO rooms (name, topic, kind, created_at, last_seq, last_ts) VALUES
            ('old', 'from v2', 'public', 5, 0, NULL),
            ('odd', '', 'secret', 6, 0, NULL);
        PRAGMA user_version = 2;
    ";

    fn journal_version(path: &Path) -> i64 {
        let conn = Connection::open(journal_path(path)).unwrap();
        conn.query_row("PRAGMA user_version", [], |row| row.get(0)).unwrap()
    }

    #[tokio::test]
    async fn a_version_2_file_migrates_and_keeps_its_rooms() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        Connection::open(journal_path(&path)).unwrap().execute_batch(JOURNAL_V2).unwrap();
        let store = open_store(&path);
        assert_eq!(journal_version(&path), JOURNAL_VERSION);
        let old = store.room(room("old")).await.unwrap().unwrap();
        assert_eq!(
            (old.kind, old.topic.as_str(), old.created, old.slow_mode_secs, old.frozen),
            (RoomKind::Public, "from v2", Timestamp(5), 0, false)
        );
        assert_eq!(store.rules(room("old")).await.unwrap(), Some(StoredRules::default()));
        // A kind this version does not know reads as private.
        assert_eq!(store.room(room("odd")).await.unwrap().unwrap().kind, RoomKind::Private);
        assert_eq!(store.rules(room("odd")).await.unwrap().unwrap().kind, RoomKind::Private);
        store.change_room(room("old"), vec![RuleChange::Frozen(true)], entry("frozen", None)).await.unwrap();
        assert!(store.rules(room("old")).await.unwrap().unwrap().frozen);
        assert_eq!(append(&store, new_message("old", "hi", None)).await.seq, 1);
        store.close().await;
        drop(store);
        // Opening a migrated file again changes nothing.
        let store = open_store(&path);
        assert_eq!(journal_version(&path), JOURNAL_VERSION);
        assert!(store.rules(room("old")).await.unwrap().unwrap().frozen);
        assert_eq!(actions(&store.audit(room("old"), None, 10).await.unwrap()), ["frozen"]);
        store.close().await;
    }

    #[tokio::test]
    async fn a_version_1_database_gets_its_rooms_from_the_archive_at_the_latest_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let archive = Connection::open(&path).unwrap();
        archive.execute_batch(SCHEMA).unwrap();
        archive
            .execute_batch(
                "INSERT INTO messages (room, seq, ts, user_id, user_name, text) VALUES
                   ('a', 1, 10, 'u_1', 'u_1', 'one'), ('a', 2, 20, 'u_1', 'u_1', 'two')",
            )
            .unwrap();
        drop(archive);
        let store = open_store(&path);
        assert_eq!(journal_version(&path), JOURNAL_VERSION);
        let record = store.room(room("a")).await.unwrap().unwrap();
        assert_eq!(
            (record.kind, record.created, record.last_seq, record.last_ts, record.slow_mode_secs, record.frozen),
            (RoomKind::Public, Timestamp(10), 2, Timestamp(20), 0, false)
        );
        assert_eq!(append(&store, new_message("a", "three", None)).await.seq, 3);
        store.close().await;
    }

    #[tokio::test]
    async fn a_search_indexes_its_room_first_across_archive_and_journal_and_idle_rooms_catch_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let store = open_store(&path);
        let indexed_seq = |room: &str| -> Option<i64> {
            let conn = Connection::open(&path).unwrap();
            conn.query_row("SELECT indexed_seq FROM fts_rooms WHERE name = ?1", [room], |row| row.get(0))
                .optional()
                .unwrap()
        };
        let wait = |what: &'static str, done: Box<dyn Fn() -> bool>| async move {
            let waited = async {
                while !done() {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            };
            tokio::time::timeout(std::time::Duration::from_secs(20), waited).await.expect(what);
        };
        for i in 1..=5 {
            append(&store, new_message("a", &format!("common archived{i}"), None)).await;
        }
        append(&store, new_message("b", "idle room", None)).await;
        let journal = path.clone();
        wait("the archiver copies the journal", Box::new(move || journal_rows(&journal) == 0)).await;
        for i in 6..=8 {
            append(&store, new_message("a", &format!("common journal{i}"), None)).await;
        }
        let (mut found, more) = store.search(room("a"), "common".into(), 20, 0).await.unwrap();
        found.sort_unstable();
        assert_eq!((found, more), ((1..=8).collect(), false), "archived and journal rows alike");
        assert_eq!(indexed_seq("a"), Some(8));
        // Room b was never searched: the archiver indexes it on its own, in time.
        let idle = path.clone();
        let b_indexed = move || {
            let conn = Connection::open(&idle).unwrap();
            conn.query_row("SELECT indexed_seq FROM fts_rooms WHERE name = 'b'", [], |row| row.get::<_, i64>(0))
                .optional()
                .unwrap()
                == Some(1)
        };
        wait("the archiver indexes an idle room", Box::new(b_indexed)).await;
        assert_eq!(store.search(room("b"), "idle".into(), 20, 0).await.unwrap(), (vec![1], false));
        store.close().await;
    }

    #[tokio::test]
    async fn a_search_index_keeping_the_texts_is_rebuilt_contentless_and_still_finds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let archive = Connection::open(&path).unwrap();
        archive.execute_batch(SCHEMA).unwrap();
        archive
            .execute_batch(
                "INSERT INTO messages (room, seq, ts, user_id, user_name, text) VALUES
                   ('a', 1, 10, 'u_1', 'u_1', 'hello old index'), ('a', 2, 20, 'u_1', 'u_1', 'two');
                 CREATE VIRTUAL TABLE messages_fts USING fts5(text, tokenize = 'unicode61 remove_diacritics 2');
                 CREATE TABLE fts_rooms (name TEXT PRIMARY KEY, no INTEGER NOT NULL UNIQUE) WITHOUT ROWID;
                 CREATE TABLE fts_state (id INTEGER PRIMARY KEY CHECK (id = 1), changes_through INTEGER NOT NULL);
                 INSERT INTO fts_rooms VALUES ('a', 1);
                 INSERT INTO messages_fts (rowid, text) VALUES ((1 << 32) | 1, 'hello old index');
                 INSERT INTO fts_state VALUES (1, 0);",
            )
            .unwrap();
        drop(archive);
        let store = open_store(&path);
        let declared: String = Connection::open(&path)
            .unwrap()
            .query_row("SELECT sql FROM sqlite_master WHERE name = 'messages_fts'", [], |row| row.get(0))
            .unwrap();
        assert!(declared.contains("content = ''"), "{declared}");
        assert_eq!(store.search(room("a"), "hello".into(), 10, 0).await.unwrap(), (vec![1], false));
        assert_eq!(store.search(room("a"), "tw".into(), 10, 0).await.unwrap(), (vec![2], false));
        store.close().await;
    }

    #[tokio::test]
    async fn a_fresh_file_is_created_at_the_latest_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let store = open_store(&path);
        assert_eq!(journal_version(&path), JOURNAL_VERSION);
        store.close().await;
    }

    #[test]
    fn a_file_of_a_newer_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let newer = format!("PRAGMA user_version = {};", JOURNAL_VERSION + 1);
        Connection::open(journal_path(&path)).unwrap().execute_batch(&newer).unwrap();
        let (commits, _unread) = crate::hub::commit_stream(1);
        let Err(error) = SqliteStore::open(&path, commits, Arc::default()) else { panic!("a newer file was opened") };
        assert!(error.to_string().contains("newer Bavard"), "{error}");
    }
}
