//! What happens to messages after they are stored: edits, deletes, streamed text,
//! reactions, threads, read positions and the search index.
//!
//! Messages themselves never change in the journal or in `messages`: a message's
//! current state is an overlay in the writer's file (`DB-log`), written by the writer
//! thread only: `message_changes` (text, edit time, deleted, streaming, and the room's
//! change number `rev` of its last change), `reactions`, `thread_replies` and
//! `read_marks`. Reads apply the overlay to the messages they return ([`annotate`]),
//! and only in rooms that have one (the writer keeps that set, [`Overlaid`], in
//! memory), so the common read of a room no one edits costs nothing more.
//!
//! The search index is an FTS5 table in the main file, written by the archiver only
//! (`archiver.rs` says when). It is contentless: it keeps the words, not a second
//! copy of every text. A message's row id there is its room's number (`fts_rooms`)
//! times 2^32 plus its seq, so a search is a row-id range of one room. Each room has a
//! watermark, `indexed_seq`: its messages up to there are indexed with their current
//! text (a deleted one is left out), those after it not yet. Changes to indexed
//! messages are applied in `change_id` order (which orders changes across rooms);
//! changes to later ones are picked up when those are indexed. A search first brings
//! its room's index up to its last acknowledged message, archived or still in the
//! journal, so it sees every acknowledged message and change; a delete also hides a
//! message from results at once.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use bavard_protocol::{Message, Reaction, RoomName, Timestamp, MAX_REACTIONS_PER_MESSAGE, MAX_UNREAD};
use rusqlite::{params, Connection, OptionalExtension, Transaction};

use super::{row_to_message, tail::Tail, COLUMNS};
use crate::store::{
    ChangeMessage, ChangeRefused, Changed, MessageChange, MessageState, PageQuery, StoreError, RANKED_MATCHES,
};

/// Version 4 of the writer's file: the overlay of changed messages, reactions, threads,
/// read positions, and each room's change number.
pub(super) const JOURNAL_V4: &str = "
BEGIN;
ALTER TABLE rooms ADD COLUMN last_rev INTEGER NOT NULL DEFAULT 0;
CREATE TABLE message_changes (
    room      TEXT    NOT NULL,
    seq       INTEGER NOT NULL,
    user_id   TEXT    NOT NULL,
    text      TEXT,
    edited_at INTEGER,
    deleted   INTEGER NOT NULL DEFAULT 0,
    streaming INTEGER NOT NULL DEFAULT 0,
    rev       INTEGER NOT NULL DEFAULT 0,
    change_id INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (room, seq)
) WITHOUT ROWID;
CREATE INDEX message_changes_by_rev ON message_changes (room, rev);
CREATE INDEX message_changes_by_change ON message_changes (change_id);
CREATE TABLE reactions (
    room    TEXT    NOT NULL,
    seq     INTEGER NOT NULL,
    emoji   TEXT    NOT NULL,
    user_id TEXT    NOT NULL,
    ts      INTEGER NOT NULL,
    PRIMARY KEY (room, seq, emoji, user_id)
) WITHOUT ROWID;
CREATE TABLE thread_replies (
    room TEXT    NOT NULL,
    root INTEGER NOT NULL,
    seq  INTEGER NOT NULL,
    ts   INTEGER NOT NULL,
    PRIMARY KEY (room, root, seq)
) WITHOUT ROWID;
CREATE TABLE read_marks (
    room    TEXT    NOT NULL,
    user_id TEXT    NOT NULL,
    seq     INTEGER NOT NULL,
    PRIMARY KEY (room, user_id)
) WITHOUT ROWID;
PRAGMA user_version = 4;
COMMIT;
";

/// The search index in the main file (idempotent statements, applied on every start).
/// Contentless (`content = ''`) made indexing about a third cheaper than keeping the
/// texts a second time; `contentless_delete` lets edits and deletes replace or drop a
/// message's row.
const SEARCH_SCHEMA: &str = "
CREATE VIRTUAL TABLE IF NOT EXISTS messages_fts USING fts5(
    text, content = '', contentless_delete = 1, tokenize = 'unicode61 remove_diacritics 2');
CREATE TABLE IF NOT EXISTS fts_rooms (
    name        TEXT    PRIMARY KEY,
    no          INTEGER NOT NULL UNIQUE,
    indexed_seq INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS fts_state (id INTEGER PRIMARY KEY CHECK (id = 1), changes_through INTEGER NOT NULL);
";

/// Creates the search index, or replaces one from before it was contentless and kept
/// per-room watermarks: the archiver fills the new one in the background.
pub(super) fn create_search_index(conn: &Connection) -> Result<(), StoreError> {
    let declared: Option<String> =
        conn.query_row("SELECT sql FROM sqlite_master WHERE name = 'messages_fts'", [], |row| row.get(0)).optional()?;
    let watermarks: bool = conn.query_row(
        "SELECT COUNT(*) > 0 FROM pragma_table_info('fts_rooms') WHERE name = 'indexed_seq'",
        [],
        |row| row.get(0),
    )?;
    if declared.is_some_and(|sql| !sql.contains("contentless_delete") || !watermarks) {
        tracing::info!("replacing the search index with a contentless one, rebuilt in the background");
        conn.execute_batch(
            "BEGIN; DROP TABLE IF EXISTS messages_fts; DROP TABLE IF EXISTS fts_rooms;
             DROP TABLE IF EXISTS fts_state; COMMIT;",
        )?;
    }
    conn.execute_batch(SEARCH_SCHEMA)?;
    Ok(())
}

/// Seqs at or above this are not indexed (their row id would not fit).
const INDEXED_SEQS: i64 = 1 << 32;

/// Rooms with an overlay, with their change number: reads elsewhere skip the overlay.
#[derive(Default)]
pub(super) struct Overlaid {
    rooms: RwLock<HashMap<RoomName, u64>>,
}

impl Overlaid {
    /// Loads the rooms with an overlay from the writer's file.
    pub(super) fn load(conn: &Connection) -> Result<Self, StoreError> {
        let mut statement = conn.prepare(
            "SELECT name, last_rev FROM rooms WHERE last_rev > 0
             UNION SELECT DISTINCT room, 0 FROM thread_replies
             UNION SELECT DISTINCT room, 0 FROM message_changes",
        )?;
        let mut rooms = HashMap::new();
        for row in statement.query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?)))? {
            let (name, rev) = row?;
            if let Ok(room) = RoomName::new(&name) {
                let known = rooms.entry(room).or_insert(0);
                *known = (*known).max(rev as u64);
            }
        }
        Ok(Self { rooms: RwLock::new(rooms) })
    }

    /// The room's change number, if it has an overlay.
    pub(super) fn rev(&self, room: &RoomName) -> Option<u64> {
        self.rooms.read().unwrap_or_else(|p| p.into_inner()).get(room).copied()
    }

    /// Notes that the room has an overlay, with this change number (or more).
    pub(super) fn note(&self, room: &RoomName, rev: u64) {
        let mut rooms = self.rooms.write().unwrap_or_else(|p| p.into_inner());
        match rooms.get_mut(room) {
            Some(known) => *known = (*known).max(rev),
            None => {
                rooms.insert(room.clone(), rev);
            }
        }
    }
}

/// A message's state as the overlay has it, with its author.
/// The message `seq` of `room` as the writer sees it (tail, then archive), with its
/// overlay; None when there is no such message.
fn current(tx: &Transaction<'_>, tail: &Tail, room: &RoomName, seq: u64) -> Result<Option<MessageState>, StoreError> {
    let original = match tail.get(room, seq) {
        Some(message) => Some((message.from.id.clone(), message.text.clone())),
        None => tx
            .prepare_cached("SELECT user_id, text FROM archive.messages WHERE room = ?1 AND seq = ?2")?
            .query_row(params![room.as_str(), seq as i64], |row| Ok((row.get(0)?, row.get(1)?)))
            .optional()?,
    };
    let Some((author, text)) = original else { return Ok(None) };
    let overlay = tx
        .prepare_cached("SELECT text, deleted, streaming, rev FROM message_changes WHERE room = ?1 AND seq = ?2")?
        .query_row(params![room.as_str(), seq as i64], |row| {
            Ok((
                row.get::<_, Option<String>>(0)?,
                row.get::<_, bool>(1)?,
                row.get::<_, bool>(2)?,
                row.get::<_, i64>(3)?,
            ))
        })
        .optional()?;
    Ok(Some(match overlay {
        Some((changed, deleted, streaming, rev)) => {
            MessageState { author, text: changed.unwrap_or(text), deleted, streaming, rev: rev as u64 }
        }
        None => MessageState { author, text, deleted: false, streaming: false, rev: 0 },
    }))
}

/// The writer's state for changes: each room's change number, and the last change id.
pub(super) struct Revisions {
    revs: HashMap<RoomName, u64>,
    /// The last change id given, committed or not.
    last_given: i64,
    /// The last committed change id, which the archiver reads to re-index.
    last_change_id: Arc<std::sync::atomic::AtomicI64>,
}

impl Revisions {
    /// Reads the last change id from the writer's file; room numbers load on use.
    pub(super) fn load(
        conn: &Connection,
        last_change_id: Arc<std::sync::atomic::AtomicI64>,
    ) -> Result<Self, StoreError> {
        let last: i64 = conn.query_row("SELECT COALESCE(MAX(change_id), 0) FROM message_changes", [], |r| r.get(0))?;
        last_change_id.store(last, std::sync::atomic::Ordering::Release);
        Ok(Self { revs: HashMap::new(), last_given: last, last_change_id })
    }

    fn room_rev(&mut self, tx: &Transaction<'_>, room: &RoomName) -> Result<u64, StoreError> {
        if let Some(rev) = self.revs.get(room) {
            return Ok(*rev);
        }
        let rev: Option<i64> = tx
            .prepare_cached("SELECT last_rev FROM rooms WHERE name = ?1")?
            .query_row([room.as_str()], |row| row.get(0))
            .optional()?;
        let rev = rev.unwrap_or(0) as u64;
        self.revs.insert(room.clone(), rev);
        Ok(rev)
    }

    /// Forgets what the failed transaction gave (the cached numbers, the change ids).
    pub(super) fn forget(&mut self) {
        self.revs.clear();
        self.last_given = self.last_change_id.load(std::sync::atomic::Ordering::Acquire);
    }

    /// Publishes the change ids of the committed transaction to the archiver.
    pub(super) fn committed(&self) {
        self.last_change_id.store(self.last_given, std::sync::atomic::Ordering::Release);
    }

    fn next_change_id(&mut self) -> i64 {
        self.last_given += 1;
        self.last_given
    }

    /// Bumps the room's change number in the transaction; answers the new one.
    fn bump(&mut self, tx: &Transaction<'_>, room: &RoomName) -> Result<u64, StoreError> {
        let rev = self.room_rev(tx, room)? + 1;
        tx.prepare_cached(
            "INSERT INTO rooms (name, created_at, last_rev) VALUES (?1, ?2, ?3)
             ON CONFLICT (name) DO UPDATE SET last_rev = excluded.last_rev",
        )?
        .execute(params![room.as_str(), Timestamp::now().millis(), rev as i64])?;
        self.revs.insert(room.clone(), rev);
        Ok(rev)
    }

    /// Applies one change in `tx` after checking it; the caller commits.
    pub(super) fn apply(
        &mut self,
        tx: &Transaction<'_>,
        tail: &Tail,
        ask: &ChangeMessage,
    ) -> Result<Result<Changed, ChangeRefused>, StoreError> {
        let ChangeMessage { room, seq, by, moderator, change, at } = ask;
        let seq = *seq;
        let Some(now) = current(tx, tail, room, seq)? else {
            return Ok(Err(ChangeRefused::NoMessage { room: room.clone(), seq }));
        };
        let unchanged = Changed { changed: false, rev: now.rev, offset: 0, count: 0 };
        if let Some(refusal) = change.refusal(seq, &now, by, *moderator) {
            return Ok(Err(refusal));
        }
        let (text, deleted, streaming, edited_at) = match change {
            MessageChange::Edit(text) => (Some(text.clone()), false, false, Some(at.millis())),
            MessageChange::Delete if now.deleted => return Ok(Ok(unchanged)),
            MessageChange::Delete => (Some(String::new()), true, false, None),
            MessageChange::Append { text, .. } => (Some(format!("{}{text}", now.text)), false, true, None),
            MessageChange::Finish => (None, false, false, None),
            MessageChange::React { emoji, on } => {
                let changed = react(tx, room, seq, emoji, by, *on, *at)?;
                let count = reaction_count(tx, room, seq, emoji)?;
                match changed {
                    Reacted::Changed => {}
                    Reacted::Same => return Ok(Ok(Changed { count, ..unchanged })),
                    Reacted::TooMany => {
                        return Ok(Err(ChangeRefused::TooManyReactions(MAX_REACTIONS_PER_MESSAGE)));
                    }
                }
                let rev = self.bump(tx, room)?;
                touch(tx, room, seq, &now.author, rev, self.next_change_id())?;
                return Ok(Ok(Changed { changed: true, rev, offset: 0, count }));
            }
        };
        let rev = self.bump(tx, room)?;
        tx.prepare_cached(
            "INSERT INTO message_changes (room, seq, user_id, text, edited_at, deleted, streaming, rev, change_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT (room, seq) DO UPDATE SET
               text = COALESCE(excluded.text, text), edited_at = COALESCE(excluded.edited_at, edited_at),
               deleted = excluded.deleted, streaming = excluded.streaming,
               rev = excluded.rev, change_id = excluded.change_id",
        )?
        .execute(params![
            room.as_str(),
            seq as i64,
            now.author,
            text,
            edited_at,
            deleted,
            streaming,
            rev as i64,
            self.next_change_id()
        ])?;
        let offset = now.text.chars().count();
        Ok(Ok(Changed { changed: true, rev, offset, count: 0 }))
    }

    /// Records, in the append's transaction, what a new message adds to the overlay: a
    /// reply in its root's thread, a streamed message's state.
    pub(super) fn appended(&mut self, tx: &Transaction<'_>, message: &Message) -> Result<(), StoreError> {
        if let Some(root) = message.reply_to {
            tx.prepare_cached("INSERT OR IGNORE INTO thread_replies (room, root, seq, ts) VALUES (?1, ?2, ?3, ?4)")?
                .execute(params![message.room.as_str(), root as i64, message.seq as i64, message.ts.millis()])?;
        }
        if message.streaming {
            tx.prepare_cached(
                "INSERT OR REPLACE INTO message_changes (room, seq, user_id, text, streaming, rev, change_id)
                 VALUES (?1, ?2, ?3, ?4, 1, 0, ?5)",
            )?
            .execute(params![
                message.room.as_str(),
                message.seq as i64,
                message.from.id,
                message.text,
                self.next_change_id()
            ])?;
        }
        Ok(())
    }
}

/// Bumps a message's change number without touching its text (a reaction).
fn touch(
    tx: &Transaction<'_>,
    room: &RoomName,
    seq: u64,
    author: &str,
    rev: u64,
    change_id: i64,
) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO message_changes (room, seq, user_id, rev, change_id) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (room, seq) DO UPDATE SET rev = excluded.rev",
    )?
    .execute(params![room.as_str(), seq as i64, author, rev as i64, change_id])?;
    Ok(())
}

enum Reacted {
    Changed,
    Same,
    TooMany,
}

fn react(
    tx: &Transaction<'_>,
    room: &RoomName,
    seq: u64,
    emoji: &str,
    user: &str,
    on: bool,
    at: Timestamp,
) -> Result<Reacted, StoreError> {
    let key = params![room.as_str(), seq as i64, emoji, user];
    if !on {
        let removed = tx
            .prepare_cached("DELETE FROM reactions WHERE room = ?1 AND seq = ?2 AND emoji = ?3 AND user_id = ?4")?
            .execute(key)?;
        return Ok(if removed > 0 { Reacted::Changed } else { Reacted::Same });
    }
    let kinds: Vec<String> = tx
        .prepare_cached("SELECT DISTINCT emoji FROM reactions WHERE room = ?1 AND seq = ?2")?
        .query_map(params![room.as_str(), seq as i64], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    if !kinds.iter().any(|known| known == emoji) && kinds.len() >= MAX_REACTIONS_PER_MESSAGE {
        return Ok(Reacted::TooMany);
    }
    let added = tx
        .prepare_cached("INSERT OR IGNORE INTO reactions (room, seq, emoji, user_id, ts) VALUES (?1, ?2, ?3, ?4, ?5)")?
        .execute(params![room.as_str(), seq as i64, emoji, user, at.millis()])?;
    Ok(if added > 0 { Reacted::Changed } else { Reacted::Same })
}

fn reaction_count(tx: &Transaction<'_>, room: &RoomName, seq: u64, emoji: &str) -> Result<u32, StoreError> {
    let count: i64 = tx
        .prepare_cached("SELECT COUNT(*) FROM reactions WHERE room = ?1 AND seq = ?2 AND emoji = ?3")?
        .query_row(params![room.as_str(), seq as i64, emoji], |row| row.get(0))?;
    Ok(count as u32)
}

/// Moves a read position forward; answers the position now and whether it moved.
pub(super) fn mark_read(
    tx: &Transaction<'_>,
    room: &RoomName,
    user: &str,
    seq: u64,
) -> Result<(u64, bool), StoreError> {
    let before: Option<i64> = tx
        .prepare_cached("SELECT seq FROM read_marks WHERE room = ?1 AND user_id = ?2")?
        .query_row(params![room.as_str(), user], |row| row.get(0))
        .optional()?;
    let seq = seq.min(i64::MAX as u64) as i64;
    if before.is_some_and(|before| before >= seq) {
        return Ok((before.unwrap_or(seq) as u64, false));
    }
    tx.prepare_cached("INSERT OR REPLACE INTO read_marks (room, user_id, seq) VALUES (?1, ?2, ?3)")?
        .execute(params![room.as_str(), user, seq])?;
    Ok((seq as u64, true))
}

// ---- reads (on the read pool's connections, where the writer's file is `log`) ----

/// Applies the overlay to `messages` (all of `room`); `viewer` gets `me` on its
/// reactions.
pub(super) fn annotate(
    conn: &Connection,
    room: &RoomName,
    mut messages: Vec<Message>,
    viewer: Option<&str>,
) -> Result<Vec<Message>, StoreError> {
    let (Some(low), Some(high)) = (messages.iter().map(|m| m.seq).min(), messages.iter().map(|m| m.seq).max()) else {
        return Ok(messages);
    };
    // A few messages far apart are read one by one rather than as one wide range.
    let ranges: Vec<(u64, u64)> = if high - low > 4 * messages.len() as u64 {
        messages.iter().map(|m| (m.seq, m.seq)).collect()
    } else {
        vec![(low, high)]
    };
    let mut changes = HashMap::new();
    let mut reactions: HashMap<u64, Vec<Reaction>> = HashMap::new();
    let mut threads = HashMap::new();
    let name = room.as_str();
    for (low, high) in ranges {
        let range = params![name, low as i64, high as i64];
        let mut statement = conn.prepare_cached(
            "SELECT seq, text, edited_at, deleted, streaming, rev FROM log.message_changes
             WHERE room = ?1 AND seq BETWEEN ?2 AND ?3",
        )?;
        for row in statement.query_map(range, |row| {
            Ok((
                row.get::<_, i64>(0)? as u64,
                (
                    row.get::<_, Option<String>>(1)?,
                    row.get::<_, Option<i64>>(2)?,
                    row.get::<_, bool>(3)?,
                    row.get::<_, bool>(4)?,
                    row.get::<_, i64>(5)? as u64,
                ),
            ))
        })? {
            let (seq, change) = row?;
            changes.insert(seq, change);
        }
        let mut statement = conn.prepare_cached(
            "SELECT seq, emoji, COUNT(*), MAX(user_id = ?4), MIN(ts) AS first FROM log.reactions
             WHERE room = ?1 AND seq BETWEEN ?2 AND ?3 GROUP BY seq, emoji ORDER BY seq, first, emoji",
        )?;
        let rows = statement.query_map(params![name, low as i64, high as i64, viewer.unwrap_or("")], |row| {
            Ok((
                row.get::<_, i64>(0)? as u64,
                Reaction { emoji: row.get(1)?, count: row.get::<_, i64>(2)? as u32, me: row.get::<_, bool>(3)? },
            ))
        })?;
        for row in rows {
            let (seq, mut reaction) = row?;
            reaction.me &= viewer.is_some();
            reactions.entry(seq).or_default().push(reaction);
        }
        let mut statement = conn.prepare_cached(
            "SELECT root, COUNT(*), MAX(ts) FROM log.thread_replies WHERE room = ?1 AND root BETWEEN ?2 AND ?3
             GROUP BY root",
        )?;
        for row in statement.query_map(range, |row| {
            Ok((row.get::<_, i64>(0)? as u64, (row.get::<_, i64>(1)? as u32, row.get::<_, i64>(2)?)))
        })? {
            let (root, stats) = row?;
            threads.insert(root, stats);
        }
    }
    for message in &mut messages {
        if let Some((text, edited_at, deleted, streaming, rev)) = changes.remove(&message.seq) {
            if let Some(text) = text {
                message.text = text;
            }
            message.edited_at = edited_at.map(Timestamp);
            message.deleted = deleted;
            message.streaming = streaming;
            message.rev = rev;
        }
        if let Some((count, last)) = threads.get(&message.seq) {
            message.reply_count = *count;
            message.last_reply_at = Some(Timestamp(*last));
        }
        if message.deleted {
            message.text.clear();
            message.reactions.clear();
        } else if let Some(list) = reactions.remove(&message.seq) {
            message.reactions = list;
        }
    }
    Ok(messages)
}

/// The archive's copy of one message.
pub(super) fn stored_message(conn: &Connection, room: &RoomName, seq: u64) -> Result<Option<Message>, StoreError> {
    Ok(conn
        .prepare_cached(&format!("SELECT {COLUMNS} FROM messages WHERE room = ?1 AND seq = ?2"))?
        .query_row(params![room.as_str(), seq as i64], |row| row_to_message(room, row))
        .optional()?)
}

/// Seqs up to `through` changed after `since_rev`, in change order (`limit + 1` at most).
pub(super) fn changed_since(
    conn: &Connection,
    room: &RoomName,
    through: u64,
    since_rev: u64,
    limit: u32,
) -> Result<Vec<u64>, StoreError> {
    let mut statement = conn.prepare_cached(
        "SELECT seq FROM log.message_changes WHERE room = ?1 AND rev > ?2 AND seq <= ?3 ORDER BY rev LIMIT ?4",
    )?;
    let rows = statement.query_map(
        params![
            room.as_str(),
            since_rev.min(i64::MAX as u64) as i64,
            through.min(i64::MAX as u64) as i64,
            i64::from(limit) + 1
        ],
        |row| row.get::<_, i64>(0),
    )?;
    Ok(rows.map(|seq| seq.map(|s| s as u64)).collect::<Result<_, _>>()?)
}

/// The replies to `root` in the query's range, oldest first (`limit + 1` at most).
pub(super) fn thread(conn: &Connection, room: &RoomName, root: u64, query: PageQuery) -> Result<Vec<u64>, StoreError> {
    let clamp = |seq: u64| seq.min(i64::MAX as u64) as i64;
    let (low, high, limit, newest_first) = match query {
        PageQuery::Before { before, limit } => (0, before.map_or(i64::MAX, clamp), limit, true),
        PageQuery::After { after, before, limit } => (clamp(after), before.map_or(i64::MAX, clamp), limit, false),
    };
    let order = if newest_first { "DESC" } else { "ASC" };
    let mut statement = conn.prepare_cached(&format!(
        "SELECT seq FROM log.thread_replies WHERE room = ?1 AND root = ?2 AND seq > ?3 AND seq < ?4
         ORDER BY seq {order} LIMIT ?5"
    ))?;
    let rows = statement
        .query_map(params![room.as_str(), clamp(root), low, high, i64::from(limit) + 1], |row| row.get::<_, i64>(0))?;
    let mut seqs: Vec<u64> = rows.map(|seq| seq.map(|s| s as u64)).collect::<Result<_, _>>()?;
    if newest_first {
        seqs.reverse();
    }
    Ok(seqs)
}

/// Counts the messages of others after `user`'s read position, not deleted, up to
/// [`MAX_UNREAD`]: the tail's in memory, the archive's below the tail's first seq.
pub(super) fn unread(conn: &Connection, tail: &Tail, room: &RoomName, user: &str) -> Result<u64, StoreError> {
    let name = room.as_str();
    let position: i64 = conn
        .prepare_cached("SELECT seq FROM log.read_marks WHERE room = ?1 AND user_id = ?2")?
        .query_row(params![name, user], |row| row.get(0))
        .optional()?
        .unwrap_or(0);
    let recent = tail.slice(room, PageQuery::After { after: position as u64, before: None, limit: u32::MAX - 1 });
    let first_recent = recent.messages.first().map_or(i64::MAX, |m| m.seq as i64);
    let mut count = recent.messages.iter().filter(|m| m.from.id != user).count() as i64;
    if !recent.complete && count < MAX_UNREAD as i64 {
        let archived: i64 = conn
            .prepare_cached(
                "SELECT COUNT(*) FROM (SELECT 1 FROM messages WHERE room = ?1 AND seq > ?2 AND seq < ?3
                 AND user_id <> ?4 LIMIT ?5)",
            )?
            .query_row(params![name, position, first_recent, user, MAX_UNREAD as i64 * 2], |row| row.get(0))?;
        count += archived;
    }
    let deleted: i64 = conn
        .prepare_cached(
            "SELECT COUNT(*) FROM log.message_changes WHERE room = ?1 AND seq > ?2 AND deleted = 1 AND user_id <> ?3",
        )?
        .query_row(params![name, position, user], |row| row.get(0))?;
    Ok((count - deleted).clamp(0, MAX_UNREAD as i64) as u64)
}

/// The FTS5 query for the words of `q`: each a quoted term, the last also a prefix.
pub(super) fn fts_query(q: &str) -> Option<String> {
    let words: Vec<&str> = q.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).collect();
    let (last, rest) = words.split_last()?;
    let mut query: Vec<String> = rest.iter().map(|w| format!("\"{w}\"")).collect();
    query.push(format!("\"{last}\"*"));
    Some(query.join(" "))
}

/// The seqs of `room` matching `q`, best first (`limit + 1` at most, from `offset`).
pub(super) fn search(
    conn: &Connection,
    room: &RoomName,
    q: &str,
    limit: u32,
    offset: u32,
) -> Result<Vec<u64>, StoreError> {
    let Some(query) = fts_query(q) else { return Ok(Vec::new()) };
    let number: Option<i64> = conn
        .prepare_cached("SELECT no FROM fts_rooms WHERE name = ?1")?
        .query_row([room.as_str()], |row| row.get(0))
        .optional()?;
    let Some(number) = number else { return Ok(Vec::new()) };
    let low = number << 32;
    // Ranked among the newest matches only (see `RANKED_MATCHES`): FTS5 walks a term's
    // row ids newest first and stops there, instead of ranking every match.
    let mut statement = conn.prepare_cached(
        "SELECT id FROM (
           SELECT rowid AS id, rank FROM messages_fts WHERE messages_fts MATCH ?1 AND rowid BETWEEN ?2 AND ?3
           ORDER BY rowid DESC LIMIT ?6)
         ORDER BY rank, id DESC LIMIT ?4 OFFSET ?5",
    )?;
    let high = low + INDEXED_SEQS - 1;
    let page = (i64::from(limit) + 1, i64::from(offset), i64::from(RANKED_MATCHES));
    let rows = statement.query_map(params![query, low, high, page.0, page.1, page.2], |row| row.get::<_, i64>(0))?;
    Ok(rows.map(|id| id.map(|id| (id & (INDEXED_SEQS - 1)) as u64)).collect::<Result<_, _>>()?)
}

// ---- the index (written by the archiver, on the main file's connection) ----

/// The rooms with messages the index has not taken, and how many (at start).
pub(super) fn unindexed_rooms(conn: &Connection) -> Result<Vec<(String, i64)>, StoreError> {
    let mut statement = conn.prepare(
        "SELECT r.name, r.last_seq - COALESCE(f.indexed_seq, 0) FROM log.rooms r
         LEFT JOIN fts_rooms f ON f.name = r.name WHERE r.last_seq > COALESCE(f.indexed_seq, 0)",
    )?;
    let rooms = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
    Ok(rooms.collect::<Result<_, _>>()?)
}

/// Indexes up to `budget` of `room`'s archived messages after its watermark, with
/// their current text, and with `journal` also those not archived yet once the
/// archived ones are all in. Returns how many archived seqs it covered and whether the
/// room is now indexed through its last archived message (and with `journal`, its
/// last acknowledged one).
///
/// Callers index several rooms in one transaction, in the order of their numbers
/// ([`index_order`]): FTS5 writes what it holds as a new segment at every commit and
/// whenever a row id is lower than the last one, and many small segments made indexing
/// five times dearer.
pub(super) fn index_room(
    tx: &Transaction<'_>,
    room: &str,
    budget: i64,
    journal: bool,
) -> Result<(i64, bool), StoreError> {
    tx.prepare_cached(
        "INSERT OR IGNORE INTO fts_rooms (name, no) VALUES (?1, (SELECT COALESCE(MAX(no), 0) + 1 FROM fts_rooms))",
    )?
    .execute([room])?;
    let (number, indexed): (i64, i64) = tx
        .prepare_cached("SELECT no, indexed_seq FROM fts_rooms WHERE name = ?1")?
        .query_row([room], |row| Ok((row.get(0)?, row.get(1)?)))?;
    let archived: i64 = tx
        .prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM messages WHERE room = ?1")?
        .query_row([room], |row| row.get(0))?;
    // The last seq of this batch: `budget` archived messages on, or the last archived.
    let upto: i64 = tx
        .prepare_cached("SELECT seq FROM messages WHERE room = ?1 AND seq > ?2 ORDER BY seq LIMIT 1 OFFSET ?3")?
        .query_row(params![room, indexed, budget - 1], |row| row.get(0))
        .optional()?
        .unwrap_or(archived)
        .max(indexed);
    // Plain inserts: the rows after the watermark were never indexed (the watermark
    // moves in the same transaction), and FTS5 takes them at a third of the cost of
    // `INSERT OR REPLACE`, which looks for a row to replace first.
    tx.prepare_cached(
        "INSERT INTO messages_fts (rowid, text)
         SELECT (?2 << 32) | m.seq, COALESCE(c.text, m.text) FROM messages m
         LEFT JOIN log.message_changes c ON c.room = m.room AND c.seq = m.seq
         WHERE m.room = ?1 AND m.seq > ?3 AND m.seq <= ?4 AND m.seq < ?5 AND COALESCE(c.deleted, 0) = 0",
    )?
    .execute(params![room, number, indexed, upto, INDEXED_SEQS])?;
    // The watermark may be past the archive already (a search indexed the journal).
    let caught_up = upto >= archived;
    let mut through = upto;
    if caught_up && journal {
        // Not archived yet: the journal has no index by room, but it holds a few
        // thousand rows at most (the archiver copies them within half a second).
        tx.prepare_cached(
            "INSERT INTO messages_fts (rowid, text)
             SELECT (?2 << 32) | j.seq, COALESCE(c.text, j.text) FROM log.journal j
             LEFT JOIN log.message_changes c ON c.room = j.room AND c.seq = j.seq
             WHERE j.room = ?1 AND j.seq > ?3 AND j.seq < ?4 AND COALESCE(c.deleted, 0) = 0",
        )?
        .execute(params![room, number, upto, INDEXED_SEQS])?;
        through = tx
            .prepare_cached("SELECT COALESCE(MAX(seq), ?2) FROM log.journal WHERE room = ?1")?
            .query_row(params![room, upto], |row| row.get::<_, i64>(0))?
            .max(upto);
    }
    tx.prepare_cached("UPDATE fts_rooms SET indexed_seq = ?2 WHERE name = ?1")?.execute(params![room, through])?;
    Ok((upto - indexed, caught_up))
}

/// `rooms` in the order their rows sort in the index: by number, rooms without one
/// last (they are numbered in that order as they are indexed).
pub(super) fn index_order(conn: &Connection, mut rooms: Vec<String>) -> Result<Vec<String>, StoreError> {
    let mut number = conn.prepare_cached("SELECT no FROM fts_rooms WHERE name = ?1")?;
    let mut numbered = Vec::with_capacity(rooms.len());
    for room in rooms.drain(..) {
        let no: Option<i64> = number.query_row([&room], |row| row.get(0)).optional()?;
        numbered.push((no.unwrap_or(i64::MAX), room));
    }
    numbered.sort_unstable();
    Ok(numbered.into_iter().map(|(_, room)| room).collect())
}

/// Re-indexes the indexed messages changed since the last pass (up to `upto`): a
/// deleted one leaves the index, an edited or finished one is indexed with its text.
/// Messages after their room's watermark are indexed with their text when they are.
pub(super) fn reindex_changes(conn: &mut Connection, upto: i64) -> Result<(), StoreError> {
    let tx = conn.transaction()?;
    let through: i64 = tx
        .query_row("SELECT changes_through FROM fts_state WHERE id = 1", [], |row| row.get(0))
        .optional()?
        .unwrap_or(0);
    if through >= upto {
        return Ok(());
    }
    tx.prepare_cached(
        "DELETE FROM messages_fts WHERE rowid IN (
           SELECT (r.no << 32) | c.seq FROM log.message_changes c
           JOIN fts_rooms r ON r.name = c.room AND c.seq <= r.indexed_seq
           WHERE c.change_id > ?1 AND c.change_id <= ?2 AND c.seq < ?3
             AND (c.deleted = 1 OR (c.text IS NOT NULL AND c.streaming = 0)))",
    )?
    .execute(params![through, upto, INDEXED_SEQS])?;
    tx.prepare_cached(
        "INSERT OR REPLACE INTO messages_fts (rowid, text)
         SELECT (r.no << 32) | c.seq, c.text FROM log.message_changes c
         JOIN fts_rooms r ON r.name = c.room AND c.seq <= r.indexed_seq
         WHERE c.change_id > ?1 AND c.change_id <= ?2 AND c.seq < ?3 AND c.deleted = 0 AND c.streaming = 0
           AND c.text IS NOT NULL",
    )?
    .execute(params![through, upto, INDEXED_SEQS])?;
    tx.prepare_cached("INSERT OR REPLACE INTO fts_state (id, changes_through) VALUES (1, ?1)")?.execute([upto])?;
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::fts_query;

    #[test]
    fn a_query_is_its_words_quoted_and_the_last_a_prefix() {
        assert_eq!(fts_query("hello wor").as_deref(), Some("\"hello\" \"wor\"*"));
        assert_eq!(fts_query("\"a\" OR b*").as_deref(), Some("\"a\" \"OR\" \"b\"*"));
        assert_eq!(fts_query("café-crème").as_deref(), Some("\"café\" \"crème\"*"));
        assert_eq!(fts_query(" ;; "), None);
    }
}
