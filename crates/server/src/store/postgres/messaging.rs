//! What happens to messages after they are stored, in PostgreSQL: edits, deletes,
//! streamed text, reactions, threads, read positions and search.
//!
//! A message's current state is its row of `messages` (text, `edited_at`, `deleted`,
//! `streaming`) with `rev`, the room's change number (`rooms.last_rev`) of its last
//! change. A change is one transaction on a pool connection that first locks the room's
//! row (`FOR UPDATE`, the lock appends take to give seqs), so a room's changes get
//! increasing revs in commit order, whichever node makes them; it locks that one row
//! only, so it never waits in a cycle with an append batch (which locks rooms in name
//! order). Reactions are rows of `reactions`, read positions of `read_marks`; a thread
//! is the messages whose `reply_to` is its root; search uses a full-text index of the
//! text (`to_tsvector('simple', text)`), so it sees a change at once.

use std::collections::HashMap;

use bavard_protocol::{Message, Reaction, RoomName, Timestamp, MAX_REACTIONS_PER_MESSAGE, MAX_UNREAD};
use tokio_postgres::{Client, Transaction};

use super::{row_to_message, COLUMNS};
use crate::store::{
    ChangeMessage, ChangeRefused, Changed, MessageChange, MessageState, PageQuery, StoreError, RANKED_MATCHES,
};

/// A seq as PostgreSQL's bigint (seqs past i64::MAX do not exist).
fn db_seq(seq: u64) -> i64 {
    seq.min(i64::MAX as u64) as i64
}

/// A message's state, with its author, as its change reads it.
/// Checks `ask` against the message and applies it, in one transaction.
pub(super) async fn change_message(
    client: &mut Client,
    ask: &ChangeMessage,
) -> Result<Result<Changed, ChangeRefused>, StoreError> {
    let text = match &ask.change {
        MessageChange::Edit(text) | MessageChange::Append { text, .. } | MessageChange::React { emoji: text, .. } => {
            text.as_str()
        }
        MessageChange::Delete | MessageChange::Finish => "",
    };
    if text.contains('\0') || ask.by.contains('\0') {
        return Err(StoreError::Database(
            "PostgreSQL cannot store the character U+0000 (NUL): remove it from the text".into(),
        ));
    }
    let tx = client.transaction().await?;
    let outcome = apply(&tx, ask).await?;
    if matches!(outcome, Ok(Changed { changed: true, .. })) {
        tx.commit().await?;
    }
    Ok(outcome)
}

async fn apply(tx: &Transaction<'_>, ask: &ChangeMessage) -> Result<Result<Changed, ChangeRefused>, StoreError> {
    let ChangeMessage { room, seq, by, moderator, change, at } = ask;
    let (name, seq) = (room.as_str(), *seq);
    let no_message = || Ok(Err(ChangeRefused::NoMessage { room: room.clone(), seq }));
    // The room's lock first: changes of one room take turns, and get revs in order.
    if tx.query_opt("SELECT 1 FROM rooms WHERE name = $1 FOR UPDATE", &[&name]).await?.is_none() {
        return no_message();
    }
    let row = tx
        .query_opt(
            "SELECT user_id, text, deleted, streaming, rev FROM messages WHERE room = $1 AND seq = $2",
            &[&name, &db_seq(seq)],
        )
        .await?;
    let Some(row) = row else { return no_message() };
    let now = MessageState {
        author: row.try_get(0)?,
        text: row.try_get(1)?,
        deleted: row.try_get(2)?,
        streaming: row.try_get(3)?,
        rev: row.try_get::<_, i64>(4)? as u64,
    };
    let unchanged = Changed { changed: false, rev: now.rev, offset: 0, count: 0 };
    if let Some(refusal) = change.refusal(seq, &now, by, *moderator) {
        return Ok(Err(refusal));
    }
    let offset = now.text.chars().count();
    let key: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&name, &db_seq(seq)];
    let update = match change {
        MessageChange::Edit(text) => {
            let rev = bump(tx, name).await?;
            tx.execute(
                "UPDATE messages SET text = $3, edited_at = $4, rev = $5 WHERE room = $1 AND seq = $2",
                &[key[0], key[1], text, &at.millis(), &rev],
            )
            .await?;
            rev
        }
        MessageChange::Delete if now.deleted => return Ok(Ok(unchanged)),
        MessageChange::Delete => {
            let rev = bump(tx, name).await?;
            tx.execute(
                "UPDATE messages SET text = '', deleted = true, streaming = false, rev = $3
                 WHERE room = $1 AND seq = $2",
                &[key[0], key[1], &rev],
            )
            .await?;
            rev
        }
        MessageChange::Append { text, .. } => {
            let rev = bump(tx, name).await?;
            tx.execute(
                "UPDATE messages SET text = text || $3, rev = $4 WHERE room = $1 AND seq = $2",
                &[key[0], key[1], text, &rev],
            )
            .await?;
            rev
        }
        MessageChange::Finish => {
            let rev = bump(tx, name).await?;
            tx.execute(
                "UPDATE messages SET streaming = false, rev = $3 WHERE room = $1 AND seq = $2",
                &[key[0], key[1], &rev],
            )
            .await?;
            rev
        }
        MessageChange::React { emoji, on } => {
            let reacted = react(tx, name, seq, emoji, by, *on, *at).await?;
            let count: i64 = tx
                .query_one(
                    "SELECT COUNT(*) FROM reactions WHERE room = $1 AND seq = $2 AND emoji = $3",
                    &[key[0], key[1], emoji],
                )
                .await?
                .try_get(0)?;
            let count = u32::try_from(count).unwrap_or(u32::MAX);
            match reacted {
                Reacted::Changed => {}
                Reacted::Same => return Ok(Ok(Changed { count, ..unchanged })),
                Reacted::TooMany => return Ok(Err(ChangeRefused::TooManyReactions(MAX_REACTIONS_PER_MESSAGE))),
            }
            let rev = bump(tx, name).await?;
            tx.execute("UPDATE messages SET rev = $3 WHERE room = $1 AND seq = $2", &[key[0], key[1], &rev]).await?;
            return Ok(Ok(Changed { changed: true, rev: rev as u64, offset: 0, count }));
        }
    };
    Ok(Ok(Changed { changed: true, rev: update as u64, offset, count: 0 }))
}

/// Bumps the room's change number (its row is locked); answers the new one.
async fn bump(tx: &Transaction<'_>, name: &str) -> Result<i64, StoreError> {
    Ok(tx
        .query_one("UPDATE rooms SET last_rev = last_rev + 1 WHERE name = $1 RETURNING last_rev", &[&name])
        .await?
        .try_get(0)?)
}

enum Reacted {
    Changed,
    Same,
    TooMany,
}

async fn react(
    tx: &Transaction<'_>,
    name: &str,
    seq: u64,
    emoji: &str,
    user: &str,
    on: bool,
    at: Timestamp,
) -> Result<Reacted, StoreError> {
    let seq = db_seq(seq);
    if !on {
        let removed = tx
            .execute(
                "DELETE FROM reactions WHERE room = $1 AND seq = $2 AND emoji = $3 AND user_id = $4",
                &[&name, &seq, &emoji, &user],
            )
            .await?;
        return Ok(if removed > 0 { Reacted::Changed } else { Reacted::Same });
    }
    let kinds: Vec<String> = tx
        .query("SELECT DISTINCT emoji FROM reactions WHERE room = $1 AND seq = $2", &[&name, &seq])
        .await?
        .iter()
        .map(|row| row.try_get(0))
        .collect::<Result<_, _>>()?;
    if !kinds.iter().any(|known| known == emoji) && kinds.len() >= MAX_REACTIONS_PER_MESSAGE {
        return Ok(Reacted::TooMany);
    }
    let added = tx
        .execute(
            "INSERT INTO reactions (room, seq, emoji, user_id, ts) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT DO NOTHING",
            &[&name, &seq, &emoji, &user, &at.millis()],
        )
        .await?;
    Ok(if added > 0 { Reacted::Changed } else { Reacted::Same })
}

/// Brings `messages` (all of `room`) to their current state: text, edit, delete and
/// streaming from their rows, reactions (`me` for `viewer`), reply counts.
pub(super) async fn annotate(
    client: &Client,
    room: &RoomName,
    mut messages: Vec<Message>,
    viewer: Option<&str>,
) -> Result<Vec<Message>, StoreError> {
    if messages.is_empty() {
        return Ok(messages);
    }
    let name = room.as_str();
    let seqs: Vec<i64> = messages.iter().map(|m| db_seq(m.seq)).collect();
    let me = viewer.unwrap_or("");
    let in_room: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&name, &seqs];
    let with_viewer: [&(dyn tokio_postgres::types::ToSql + Sync); 3] = [&name, &seqs, &me];
    // Three statements pipelined on the connection.
    let (changes, reactions, threads) = futures_util::try_join!(
        client.query(
            "SELECT seq, text, edited_at, deleted, streaming, rev FROM messages
             WHERE room = $1 AND seq = ANY($2) AND rev > 0",
            &in_room,
        ),
        client.query(
            "SELECT seq, emoji, COUNT(*), bool_or(user_id = $3), MIN(ts) AS first FROM reactions
             WHERE room = $1 AND seq = ANY($2) GROUP BY seq, emoji ORDER BY seq, first, emoji",
            &with_viewer,
        ),
        client.query(
            "SELECT reply_to, COUNT(*), MAX(ts) FROM messages
             WHERE room = $1 AND reply_to = ANY($2) GROUP BY reply_to",
            &in_room,
        ),
    )?;
    let mut state = HashMap::with_capacity(changes.len());
    for row in &changes {
        let seq = row.try_get::<_, i64>(0)? as u64;
        let edited_at: Option<i64> = row.try_get(2)?;
        let change =
            (row.try_get::<_, String>(1)?, edited_at, row.try_get(3)?, row.try_get(4)?, row.try_get::<_, i64>(5)?);
        state.insert(seq, change);
    }
    let mut by_seq: HashMap<u64, Vec<Reaction>> = HashMap::new();
    for row in &reactions {
        let reaction = Reaction {
            emoji: row.try_get(1)?,
            count: u32::try_from(row.try_get::<_, i64>(2)?).unwrap_or(u32::MAX),
            me: viewer.is_some() && row.try_get::<_, Option<bool>>(3)?.unwrap_or(false),
        };
        by_seq.entry(row.try_get::<_, i64>(0)? as u64).or_default().push(reaction);
    }
    let mut stats = HashMap::with_capacity(threads.len());
    for row in &threads {
        let count = u32::try_from(row.try_get::<_, i64>(1)?).unwrap_or(u32::MAX);
        stats.insert(row.try_get::<_, i64>(0)? as u64, (count, Timestamp(row.try_get(2)?)));
    }
    for message in &mut messages {
        if let Some((text, edited_at, deleted, streaming, rev)) = state.remove(&message.seq) {
            message.text = text;
            message.edited_at = edited_at.map(Timestamp);
            message.deleted = deleted;
            message.streaming = streaming;
            message.rev = rev as u64;
        }
        if let Some((count, last)) = stats.get(&message.seq) {
            message.reply_count = *count;
            message.last_reply_at = Some(*last);
        }
        if message.deleted {
            message.text.clear();
            message.reactions.clear();
        } else if let Some(list) = by_seq.remove(&message.seq) {
            message.reactions = list;
        }
    }
    Ok(messages)
}

/// The messages of `room` with these seqs, in that order (those that exist).
pub(super) async fn messages_at(client: &Client, room: &RoomName, seqs: &[u64]) -> Result<Vec<Message>, StoreError> {
    let wanted: Vec<i64> = seqs.iter().map(|seq| db_seq(*seq)).collect();
    let rows = client
        .query(&format!("SELECT {COLUMNS} FROM messages WHERE room = $1 AND seq = ANY($2)"), &[&room.as_str(), &wanted])
        .await?;
    let mut found = HashMap::with_capacity(rows.len());
    for row in &rows {
        let message = row_to_message(room, row)?;
        found.insert(message.seq, message);
    }
    Ok(seqs.iter().filter_map(|seq| found.get(seq).cloned()).collect())
}

/// The room's change number (0 when it has none).
pub(super) async fn room_rev(client: &Client, room: &RoomName) -> Result<u64, StoreError> {
    let row = client.query_opt("SELECT last_rev FROM rooms WHERE name = $1", &[&room.as_str()]).await?;
    Ok(match row {
        Some(row) => row.try_get::<_, i64>(0)? as u64,
        None => 0,
    })
}

/// Splits `rows` (`limit + 1` at most) into `limit` seqs and whether more exist.
fn seqs_and_more(rows: &[tokio_postgres::Row], limit: u32) -> Result<(Vec<u64>, bool), StoreError> {
    let mut seqs = rows.iter().map(|row| row.try_get::<_, i64>(0).map(|s| s as u64)).collect::<Result<Vec<_>, _>>()?;
    let more = seqs.len() > limit as usize;
    seqs.truncate(limit as usize);
    Ok((seqs, more))
}

/// Seqs up to `through` changed after `since_rev`, in change order.
pub(super) async fn changed_since(
    client: &Client,
    room: &RoomName,
    through: u64,
    since_rev: u64,
    limit: u32,
) -> Result<(Vec<u64>, bool), StoreError> {
    let rows = client
        .query(
            "SELECT seq FROM messages WHERE room = $1 AND rev > 0 AND rev > $2 AND seq <= $3 ORDER BY rev LIMIT $4",
            &[&room.as_str(), &db_seq(since_rev), &db_seq(through), &(i64::from(limit) + 1)],
        )
        .await?;
    seqs_and_more(&rows, limit)
}

/// The replies to `root` in the query's range, oldest first.
pub(super) async fn thread(
    client: &Client,
    room: &RoomName,
    root: u64,
    query: PageQuery,
) -> Result<(Vec<u64>, bool), StoreError> {
    let (low, high, limit, newest_first) = match query {
        PageQuery::Before { before, limit } => (0, before.map_or(i64::MAX, db_seq), limit, true),
        PageQuery::After { after, before, limit } => (db_seq(after), before.map_or(i64::MAX, db_seq), limit, false),
    };
    let order = if newest_first { "DESC" } else { "ASC" };
    let rows = client
        .query(
            &format!(
                "SELECT seq FROM messages WHERE room = $1 AND reply_to = $2 AND seq > $3 AND seq < $4
                 ORDER BY seq {order} LIMIT $5"
            ),
            &[&room.as_str(), &db_seq(root), &low, &high, &(i64::from(limit) + 1)],
        )
        .await?;
    let (mut seqs, more) = seqs_and_more(&rows, limit)?;
    if newest_first {
        seqs.reverse();
    }
    Ok((seqs, more))
}

/// The tsquery (text for `to_tsquery`) for the words of `q`: each a quoted lexeme,
/// the last also a prefix, all required. Words hold letters and digits only, so no
/// word can be read as tsquery syntax.
fn ts_query(q: &str) -> Option<String> {
    let words: Vec<&str> = q.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).collect();
    let (last, rest) = words.split_last()?;
    let mut query: Vec<String> = rest.iter().map(|w| format!("'{w}'")).collect();
    query.push(format!("'{last}':*"));
    Some(query.join(" & "))
}

/// The seqs of `room`'s messages (not deleted) matching the words of `q`, best first.
pub(super) async fn search(
    client: &Client,
    room: &RoomName,
    q: &str,
    limit: u32,
    offset: u32,
) -> Result<(Vec<u64>, bool), StoreError> {
    let Some(query) = ts_query(q) else { return Ok((Vec::new(), false)) };
    let rows = client
        .query(
            // Ranked among the newest matches only (see `RANKED_MATCHES`).
            "SELECT seq FROM (
               SELECT seq, text FROM messages
               WHERE room = $1 AND NOT deleted AND to_tsvector('simple', text) @@ to_tsquery('simple', $2)
               ORDER BY seq DESC LIMIT $5) AS newest
             ORDER BY ts_rank(to_tsvector('simple', text), to_tsquery('simple', $2)) DESC, seq DESC
             LIMIT $3 OFFSET $4",
            &[&room.as_str(), &query, &(i64::from(limit) + 1), &i64::from(offset), &(RANKED_MATCHES as i64)],
        )
        .await?;
    seqs_and_more(&rows, limit)
}

/// Moves `user`'s read position forward; answers the position now.
pub(super) async fn mark_read(
    client: &Client,
    room: &RoomName,
    user: &str,
    seq: u64,
) -> Result<(u64, bool), StoreError> {
    // A row comes back only when the position moved (or was new).
    let moved = client
        .query_opt(
            "INSERT INTO read_marks (room, user_id, seq) VALUES ($1, $2, $3)
             ON CONFLICT (room, user_id) DO UPDATE SET seq = EXCLUDED.seq WHERE read_marks.seq < EXCLUDED.seq
             RETURNING seq",
            &[&room.as_str(), &user, &db_seq(seq)],
        )
        .await?;
    if let Some(row) = moved {
        return Ok((row.try_get::<_, i64>(0)? as u64, true));
    }
    let row = client
        .query_one("SELECT seq FROM read_marks WHERE room = $1 AND user_id = $2", &[&room.as_str(), &user])
        .await?;
    Ok((row.try_get::<_, i64>(0)? as u64, false))
}

/// How many messages of others, not deleted, follow `user`'s read position (at most
/// [`MAX_UNREAD`]).
pub(super) async fn unread(client: &Client, room: &RoomName, user: &str) -> Result<u64, StoreError> {
    let row = client
        .query_one(
            "SELECT COUNT(*) FROM (
               SELECT 1 FROM messages WHERE room = $1 AND user_id <> $2 AND NOT deleted
                 AND seq > COALESCE((SELECT seq FROM read_marks WHERE room = $1 AND user_id = $2), 0)
               LIMIT $3) AS unread",
            &[&room.as_str(), &user, &(MAX_UNREAD as i64)],
        )
        .await?;
    Ok(row.try_get::<_, i64>(0)? as u64)
}

#[cfg(test)]
mod tests {
    use super::ts_query;

    #[test]
    fn a_query_is_its_words_quoted_and_the_last_a_prefix() {
        assert_eq!(ts_query("hello wor").as_deref(), Some("'hello' & 'wor':*"));
        assert_eq!(ts_query("'a' | !b:*").as_deref(), Some("'a' & 'b':*"));
        assert_eq!(ts_query("café-crème").as_deref(), Some("'café' & 'crème':*"));
        assert_eq!(ts_query(" ;; "), None);
    }
}
