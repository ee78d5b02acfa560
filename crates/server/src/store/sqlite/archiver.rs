//! The archiver thread: copies the journal into the room-ordered `messages` table, on
//! its own connection to the main database file, beside the writer, and keeps the
//! search index (see `messaging.rs`) behind it.
//!
//! The two tables live in two database files so that each has its own write lock:
//! archiving (sorting and inserting a few thousand rows into two B-trees, ~10 µs a
//! row here) never holds up an acknowledged commit. Copies are `INSERT OR IGNORE`, so
//! a row copied twice (after a crash between the copy and the journal's delete) is
//! harmless. Each copy is committed with an fsync before the writer is told, so the
//! writer never deletes a journal row that is not durably in `messages`.
//!
//! Indexing for search is not part of the copy: it costs about as much as the copy
//! itself, and FTS5 does it far more cheaply in large batches. The archiver notes the
//! rooms it copied and indexes them once [`INDEX_BATCH`] messages wait or the oldest
//! has waited [`INDEX_WAIT`]; a search first asks it to bring its room's index up to
//! date ([`Command::IndexRoom`]), so a search sees every acknowledged message
//! whatever the index's lag.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicI64, Ordering},
        mpsc as std_mpsc, Arc,
    },
    time::{Duration, Instant},
};

use bavard_protocol::RoomName;
use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::{messaging, writer::WriterCommand};
use crate::store::StoreError;

/// How often the archiver looks at the journal.
const LOOK_EVERY: Duration = Duration::from_millis(20);
/// Rows waiting that are copied at once, without waiting for the writer to idle.
const BUSY_ROWS: i64 = 4_096;
/// How long a smaller backlog may wait.
const MAX_WAIT: Duration = Duration::from_millis(500);
/// How long the archiver waits after a failed copy.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// The most rows one copy takes.
const CHUNK: i64 = 16_384;
/// Messages waiting for the index that are indexed at once; also the most one index
/// transaction takes.
const INDEX_BATCH: i64 = 65_536;
/// How long fewer messages may wait for the index.
const INDEX_WAIT: Duration = Duration::from_secs(5);

/// What the rest of the store asks of the archiver. Dropping every sender stops it.
pub(super) enum Command {
    /// Index the room's messages up to its last acknowledged one, and apply the
    /// changes made so far, before a search of it.
    IndexRoom(RoomName, oneshot::Sender<Result<(), StoreError>>),
}

/// Copies journal rows with ids in `(after, through]` into `messages`; returns how many
/// were new, and the rooms copied with their number of rows.
fn copy(conn: &mut Connection, after: i64, through: i64) -> Result<(usize, Vec<(String, i64)>), StoreError> {
    let tx = conn.transaction()?;
    let copied = tx.execute(
        "INSERT OR IGNORE INTO messages (room, seq, ts, user_id, user_name, text, key, reply_to)
         SELECT room, seq, ts, user_id, user_name, text, key, reply_to FROM log.journal
         WHERE id > ?1 AND id <= ?2 ORDER BY room, seq",
        [after, through],
    )?;
    let rooms = tx
        .prepare_cached("SELECT room, COUNT(*) FROM log.journal WHERE id > ?1 AND id <= ?2 GROUP BY room")?
        .query_map([after, through], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<Result<_, _>>()?;
    tx.commit()?;
    Ok((copied, rooms))
}

/// Archives and deletes whatever the journal holds (at start, before the writer runs).
pub(super) fn archive_all(conn: &mut Connection) -> Result<usize, StoreError> {
    let (copied, _rooms) = copy(conn, i64::MIN, i64::MAX)?;
    conn.execute("DELETE FROM log.journal", [])?;
    Ok(copied)
}

/// The rooms with messages the index has not taken yet, and how many wait.
#[derive(Default)]
struct Unindexed {
    rooms: HashMap<String, i64>,
    waiting: i64,
    since: Option<Instant>,
}

impl Unindexed {
    fn add(&mut self, room: String, count: i64) {
        *self.rooms.entry(room).or_default() += count;
        self.waiting += count;
        self.since.get_or_insert_with(Instant::now);
    }

    fn due(&self) -> bool {
        self.waiting >= INDEX_BATCH || self.since.is_some_and(|since| since.elapsed() >= INDEX_WAIT)
    }

    /// Indexes waiting rooms, [`INDEX_BATCH`] messages at most; the rest stays due.
    fn index_some(&mut self, conn: &mut Connection) -> Result<(), StoreError> {
        let mut budget = INDEX_BATCH;
        let rooms = messaging::index_order(conn, self.rooms.keys().cloned().collect())?;
        let tx = conn.transaction()?;
        let mut done = Vec::new();
        for room in rooms {
            if budget <= 0 {
                break;
            }
            let (indexed, caught_up) = messaging::index_room(&tx, &room, budget, false)?;
            budget -= indexed.max(1);
            if caught_up {
                done.push(room);
            }
        }
        tx.commit()?;
        for room in done {
            if let Some(count) = self.rooms.remove(&room) {
                self.waiting -= count;
            }
        }
        if self.rooms.is_empty() {
            self.waiting = 0;
            self.since = None;
        }
        Ok(())
    }

    /// Indexes all of `room` (archived or not) for a search.
    fn index_for_search(&mut self, conn: &mut Connection, room: &str) -> Result<(), StoreError> {
        loop {
            let tx = conn.transaction()?;
            let (_, caught_up) = messaging::index_room(&tx, room, INDEX_BATCH, true)?;
            tx.commit()?;
            if caught_up {
                break;
            }
        }
        if let Some(count) = self.rooms.remove(room) {
            self.waiting -= count;
        }
        Ok(())
    }
}

/// Runs the archiver until every [`Command`] sender is dropped: every [`LOOK_EVERY`]
/// it compares the writer's last journal id with its own progress and copies a chunk
/// when enough rows wait or they have waited long enough, then brings the index up
/// to date with the changes made to messages, and indexes when enough is due.
pub(super) fn run(
    mut conn: Connection,
    last_id: Arc<AtomicI64>,
    last_change_id: Arc<AtomicI64>,
    writer: mpsc::Sender<WriterCommand>,
    commands: std_mpsc::Receiver<Command>,
) {
    let mut through = 0_i64;
    let mut last_copy = Instant::now();
    let mut indexed_changes = 0_i64;
    let mut unindexed = Unindexed::default();
    match messaging::unindexed_rooms(&conn) {
        Ok(rooms) => rooms.into_iter().for_each(|(room, count)| unindexed.add(room, count)),
        Err(e) => tracing::warn!(error = %e, "cannot tell which rooms the search index lacks"),
    }
    let mut next_look = Instant::now() + LOOK_EVERY;
    loop {
        match commands.recv_timeout(next_look.saturating_duration_since(Instant::now())) {
            Ok(Command::IndexRoom(room, reply)) => {
                let result = reindex_changes(&mut conn, &last_change_id, &mut indexed_changes)
                    .and_then(|()| unindexed.index_for_search(&mut conn, room.as_str()));
                let _gone = reply.send(result);
                continue;
            }
            Err(std_mpsc::RecvTimeoutError::Timeout) => next_look = Instant::now() + LOOK_EVERY,
            Err(std_mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if let Err(e) = reindex_changes(&mut conn, &last_change_id, &mut indexed_changes) {
            tracing::warn!(error = %e, "cannot update the search index; will retry");
        }
        let written = last_id.load(Ordering::Acquire);
        let waiting = written - through;
        if waiting <= 0 || (waiting < BUSY_ROWS && last_copy.elapsed() < MAX_WAIT) {
            if unindexed.due() {
                let started = Instant::now();
                match unindexed.index_some(&mut conn) {
                    Ok(()) => tracing::debug!(took = ?started.elapsed(), "search index updated"),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot update the search index; will retry in {RETRY_AFTER:?}");
                        next_look = Instant::now() + RETRY_AFTER;
                    }
                }
            }
            continue;
        }
        let upto = written.min(through + CHUNK);
        let started = Instant::now();
        match copy(&mut conn, through, upto) {
            Ok((copied, rooms)) => {
                tracing::debug!(copied, took = ?started.elapsed(), "journal archived");
                through = upto;
                last_copy = Instant::now();
                rooms.into_iter().for_each(|(room, count)| unindexed.add(room, count));
                if writer.blocking_send(WriterCommand::Archived(through)).is_err() {
                    break;
                }
            }
            Err(e) => {
                // Reads still see the rows through the tail; retry, but not in a spin.
                tracing::error!(error = %e, "cannot archive the journal; will retry in {RETRY_AFTER:?}");
                next_look = Instant::now() + RETRY_AFTER;
            }
        }
    }
    tracing::debug!("sqlite archiver stopped");
}

/// Applies to the index the changes to messages made since the last pass.
fn reindex_changes(conn: &mut Connection, last_change_id: &AtomicI64, done: &mut i64) -> Result<(), StoreError> {
    let changes = last_change_id.load(Ordering::Acquire);
    if changes > *done {
        messaging::reindex_changes(conn, changes)?;
        *done = changes;
    }
    Ok(())
}
