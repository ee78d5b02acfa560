//! The archiver thread: copies the journal into the room-ordered `messages` table, on
//! its own connection to the main database file, beside the writer.
//!
//! The two tables live in two database files so that each has its own write lock:
//! archiving (sorting and inserting a few thousand rows into two B-trees, ~10 µs a
//! row here) never holds up an acknowledged commit. Copies are `INSERT OR IGNORE`, so
//! a row copied twice (after a crash between the copy and the journal's delete) is
//! harmless. Each copy is committed with an fsync before the writer is told, so the
//! writer never deletes a journal row that is not durably in `messages`.

use std::{
    sync::{
        atomic::{AtomicI64, Ordering},
        mpsc as std_mpsc, Arc,
    },
    time::{Duration, Instant},
};

use rusqlite::Connection;
use tokio::sync::mpsc;

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

/// Copies journal rows with ids in `(after, through]` into `messages`; returns how many
/// were new.
fn copy(conn: &mut Connection, after: i64, through: i64) -> Result<usize, StoreError> {
    let tx = conn.transaction()?;
    let copied = tx.execute(
        "INSERT OR IGNORE INTO messages (room, seq, ts, user_id, user_name, text, key, reply_to)
         SELECT room, seq, ts, user_id, user_name, text, key, reply_to FROM log.journal
         WHERE id > ?1 AND id <= ?2 ORDER BY room, seq",
        [after, through],
    )?;
    messaging::index_copied(&tx, after, through)?;
    tx.commit()?;
    Ok(copied)
}

/// Archives and deletes whatever the journal holds (at start, before the writer runs).
pub(super) fn archive_all(conn: &mut Connection) -> Result<usize, StoreError> {
    let copied = copy(conn, i64::MIN, i64::MAX)?;
    conn.execute("DELETE FROM log.journal", [])?;
    Ok(copied)
}

/// Runs the archiver until `stop` is dropped: every [`LOOK_EVERY`] it compares the
/// writer's last journal id with its own progress and copies a chunk when enough rows
/// wait or they have waited long enough.
pub(super) fn run(
    mut conn: Connection,
    last_id: Arc<AtomicI64>,
    last_change_id: Arc<AtomicI64>,
    writer: mpsc::Sender<WriterCommand>,
    stop: std_mpsc::Receiver<()>,
) {
    let mut through = 0_i64;
    let mut last_copy = Instant::now();
    let mut indexed_changes = 0_i64;
    while let Err(std_mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(LOOK_EVERY) {
        let changes = last_change_id.load(Ordering::Acquire);
        if changes > indexed_changes {
            match messaging::reindex_changes(&mut conn, changes) {
                Ok(()) => indexed_changes = changes,
                Err(e) => tracing::warn!(error = %e, "cannot update the search index; will retry"),
            }
        }
        let written = last_id.load(Ordering::Acquire);
        let waiting = written - through;
        if waiting <= 0 || (waiting < BUSY_ROWS && last_copy.elapsed() < MAX_WAIT) {
            continue;
        }
        let upto = written.min(through + CHUNK);
        let started = Instant::now();
        match copy(&mut conn, through, upto) {
            Ok(copied) => {
                tracing::debug!(copied, took = ?started.elapsed(), "journal archived");
                through = upto;
                last_copy = Instant::now();
                if writer.blocking_send(WriterCommand::Archived(through)).is_err() {
                    break;
                }
            }
            Err(e) => {
                // Reads still see the rows through the tail; retry, but not in a spin.
                tracing::error!(error = %e, "cannot archive the journal; will retry in {RETRY_AFTER:?}");
                if !matches!(stop.recv_timeout(RETRY_AFTER), Err(std_mpsc::RecvTimeoutError::Timeout)) {
                    break;
                }
            }
        }
    }
    tracing::debug!("sqlite archiver stopped");
}
