//! The embedded SQLite store: one writer thread that group-commits appends (one
//! transaction, one fsync, per batch) and a small pool of read connections.
//!
//! The writer is the single authority on `seq`: it caches each room's last seq and
//! assigns the next one inside the transaction, so a room's seqs are gap-free and
//! reported on the commit stream in order. WAL mode lets reads run beside it.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    thread,
};

use bavard_protocol::{Message, RoomName, Timestamp, User};
use futures_util::future::BoxFuture;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use tokio::sync::{mpsc, oneshot};

use super::{Appended, CommitEvent, MessageStore, NewMessage, Page, PageQuery, PendingAppend, RoomSummary, StoreError};

/// How many appends may wait for the writer before `append` applies backpressure.
const WRITER_QUEUE: usize = 16_384;
/// The most appends one transaction takes.
const MAX_BATCH: usize = 4_096;
/// How many idle read connections are kept.
const READ_POOL: usize = 4;

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

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Database(e.to_string())
    }
}

enum WriterCommand {
    Append(NewMessage, oneshot::Sender<Result<Appended, StoreError>>),
    Barrier(RoomName, oneshot::Sender<()>),
    Close(oneshot::Sender<()>),
}

/// SQLite-backed [`MessageStore`].
pub struct SqliteStore {
    writer: mpsc::Sender<WriterCommand>,
    readers: Arc<ReadPool>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and starts the writer thread.
    /// Commits are reported on `commits`.
    pub fn open(path: &Path, commits: mpsc::Sender<CommitEvent>) -> Result<Self, StoreError> {
        let conn = open_connection(path, false)?;
        conn.execute_batch(SCHEMA)?;
        let (writer, queue) = mpsc::channel(WRITER_QUEUE);
        let mut state = Writer { conn, last_seq: HashMap::new(), commits };
        thread::Builder::new()
            .name("bavard-sqlite-writer".into())
            .spawn(move || state.run(queue))
            .map_err(|e| StoreError::Database(format!("cannot start the writer thread: {e}")))?;
        let readers = Arc::new(ReadPool { path: path.to_owned(), idle: Mutex::new(Vec::new()) });
        Ok(Self { writer, readers })
    }

    async fn read<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
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
    // default is 2 MiB), and reads through mmap instead of a copy per page.
    conn.pragma_update(None, "cache_size", -32_768)?;
    conn.pragma_update(None, "mmap_size", 256 * 1024 * 1024)?;
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
    idle: Mutex<Vec<Connection>>,
}

impl ReadPool {
    fn take(&self) -> Result<Connection, StoreError> {
        let pooled = self.idle.lock().map_err(|_| StoreError::Closed)?.pop();
        match pooled {
            Some(conn) => Ok(conn),
            None => open_connection(&self.path, true),
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

struct Writer {
    conn: Connection,
    /// Each room's last committed seq, loaded on first use.
    last_seq: HashMap<RoomName, u64>,
    commits: mpsc::Sender<CommitEvent>,
}

impl Writer {
    fn run(&mut self, mut queue: mpsc::Receiver<WriterCommand>) {
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
        let seq: i64 = self.conn.query_row(
            "SELECT COALESCE(MAX(seq), 0) FROM messages WHERE room = ?1",
            [room.as_str()],
            |row| row.get(0),
        )?;
        let seq = seq as u64;
        self.last_seq.insert(room.clone(), seq);
        Ok(seq)
    }

    fn commit_appends(&mut self, appends: Vec<(NewMessage, oneshot::Sender<Result<Appended, StoreError>>)>) {
        if appends.is_empty() {
            return;
        }
        let ts = Timestamp::now();
        match self.insert_all(&appends, ts) {
            Ok(outcomes) => {
                let committed: Vec<Arc<Message>> = appends
                    .iter()
                    .zip(&outcomes)
                    .filter(|(_, outcome)| !outcome.duplicate)
                    .map(|((message, _), outcome)| {
                        Arc::new(Message {
                            room: message.room.clone(),
                            seq: outcome.seq,
                            ts: outcome.ts,
                            from: message.from.clone(),
                            text: message.text.clone(),
                            key: message.key.clone(),
                            reply_to: message.reply_to,
                        })
                    })
                    .collect();
                if !committed.is_empty() {
                    let _hub_gone = self.commits.blocking_send(CommitEvent::Committed(committed));
                }
                for ((_, reply), outcome) in appends.into_iter().zip(outcomes) {
                    let _sender_gone = reply.send(Ok(outcome));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, count = appends.len(), "group commit failed");
                // The cached seqs may count rows that were rolled back: reload them.
                self.last_seq.clear();
                for (_, reply) in appends {
                    let _sender_gone = reply.send(Err(StoreError::Database(e.to_string())));
                }
            }
        }
    }

    fn insert_all(
        &mut self,
        appends: &[(NewMessage, oneshot::Sender<Result<Appended, StoreError>>)],
        ts: Timestamp,
    ) -> Result<Vec<Appended>, StoreError> {
        for (message, _) in appends {
            self.room_last_seq(&message.room)?;
        }
        // On any error the caller clears `last_seq`, so advancing it in place is safe.
        let Self { conn, last_seq, .. } = self;
        let tx = conn.transaction()?;
        let mut outcomes = Vec::with_capacity(appends.len());
        {
            let mut insert = tx.prepare_cached(
                "INSERT OR IGNORE INTO messages (room, seq, ts, user_id, user_name, text, key, reply_to)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            let mut by_key =
                tx.prepare_cached("SELECT seq, ts FROM messages WHERE room = ?1 AND user_id = ?2 AND key = ?3")?;
            for (message, _) in appends {
                let last = last_seq.get_mut(&message.room).ok_or(StoreError::Closed)?;
                let seq = *last + 1;
                let inserted = insert.execute(params![
                    message.room.as_str(),
                    seq as i64,
                    ts.millis(),
                    message.from.id,
                    message.from.name,
                    message.text,
                    message.key,
                    message.reply_to.map(|r| r as i64),
                ])?;
                if inserted == 1 {
                    *last = seq;
                    outcomes.push(Appended { seq, ts, duplicate: false });
                    continue;
                }
                let original = by_key
                    .query_row(params![message.room.as_str(), message.from.id, message.key], |row| {
                        Ok(Appended { seq: row.get::<_, i64>(0)? as u64, ts: Timestamp(row.get(1)?), duplicate: true })
                    })
                    .optional()?;
                let original = original.ok_or_else(|| {
                    StoreError::Database(format!("seq {seq} of room {} is already taken", message.room))
                })?;
                outcomes.push(original);
            }
        }
        tx.commit()?;
        Ok(outcomes)
    }
}

fn row_to_message(room: &RoomName, row: &rusqlite::Row<'_>) -> rusqlite::Result<Message> {
    Ok(Message {
        room: room.clone(),
        seq: row.get::<_, i64>(0)? as u64,
        ts: Timestamp(row.get(1)?),
        from: User { id: row.get(2)?, name: row.get(3)? },
        text: row.get(4)?,
        key: row.get(5)?,
        reply_to: row.get::<_, Option<i64>>(6)?.map(|r| r as u64),
    })
}

const COLUMNS: &str = "seq, ts, user_id, user_name, text, key, reply_to";

fn read_page(conn: &Connection, room: &RoomName, query: PageQuery) -> Result<Page, StoreError> {
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
    let has_more = messages.len() > limit as usize;
    messages.truncate(limit as usize);
    if newest_first {
        messages.reverse();
    }
    Ok(Page { messages, has_more })
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
        Box::pin(self.read(move |conn| read_page(conn, &room, query)))
    }

    fn rooms(&self, limit: u32) -> BoxFuture<'_, Result<Vec<RoomSummary>, StoreError>> {
        Box::pin(self.read(move |conn| {
            let mut statement = conn.prepare_cached(
                "SELECT room, MAX(seq), MAX(ts) FROM messages GROUP BY room ORDER BY MAX(ts) DESC, room LIMIT ?1",
            )?;
            let rows = statement.query_map([i64::from(limit)], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?, row.get::<_, i64>(2)?))
            })?;
            let mut rooms = Vec::new();
            for row in rows {
                let (name, last_seq, last_ts) = row?;
                if let Ok(room) = RoomName::new(&name) {
                    rooms.push(RoomSummary { room, last_seq: last_seq as u64, last_ts: Timestamp(last_ts) });
                }
            }
            Ok(rooms)
        }))
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

#[cfg(test)]
mod tests {
    use super::*;

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
        }
    }

    async fn append(store: &SqliteStore, message: NewMessage) -> Appended {
        store.append(message).await.unwrap().await.unwrap()
    }

    #[tokio::test]
    async fn seqs_are_per_room_gap_free_and_keys_deduplicate() {
        let dir = tempfile::tempdir().unwrap();
        let (commits, mut stream) = mpsc::channel(64);
        let store = SqliteStore::open(&dir.path().join("t.db"), commits).unwrap();
        assert_eq!(append(&store, new_message("a", "1", None)).await.seq, 1);
        assert_eq!(append(&store, new_message("b", "1", None)).await.seq, 1);
        assert_eq!(append(&store, new_message("a", "2", Some("k"))).await.seq, 2);
        let again = append(&store, new_message("a", "2 again", Some("k"))).await;
        assert_eq!((again.seq, again.duplicate), (2, true));
        assert_eq!(append(&store, new_message("a", "3", None)).await.seq, 3);
        let mut reported = Vec::new();
        while let Ok(CommitEvent::Committed(batch)) = stream.try_recv() {
            reported.extend(batch.iter().map(|m| (m.room.to_string(), m.seq)));
        }
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
}
