//! The writer task: group-commits this node's appends and puts barriers in their order
//! on the commit stream.
//!
//! It takes every command queued (up to [`MAX_BATCH`]) and commits the appends among
//! them in one transaction (see the parent module's doc for how seqs are decided
//! across nodes). It owns one connection, and when that connection is lost or cannot
//! be made, it fails the batch at hand with [`StoreError::Unavailable`] and tries to
//! connect again with the next batch, after a growing pause (during which batches fail
//! at once rather than wait), so appends work again as soon as PostgreSQL is back.

use std::{
    collections::{hash_map::Entry, HashMap},
    sync::Arc,
    time::{Duration, Instant},
};

use bavard_protocol::{Message, RoomName, Timestamp};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::Client;

use super::{connect, Connector, QUERY_TIMEOUT};
use crate::{
    hub::CommitSender,
    metrics::Metrics,
    store::{Appended, NewMessage, StoreError},
};

/// The most appends one transaction takes.
const MAX_BATCH: usize = 4_096;
/// How many times a batch is tried when another node's transaction got in its way (the
/// same idempotency key committed first, or a deadlock PostgreSQL broke).
const MAX_ATTEMPTS: usize = 4;
/// The first pause before connecting again after a failure; it doubles up to
/// [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

type Reply = oneshot::Sender<Result<Appended, StoreError>>;

/// What the writer is asked to do.
pub(super) enum WriterCommand {
    Append(NewMessage, Reply),
    /// Answers with the receiver the hub fires once it has processed the barrier.
    Barrier(RoomName, oneshot::Sender<Result<oneshot::Receiver<()>, StoreError>>),
    Close(oneshot::Sender<()>),
}

/// Who sent which idempotency key in which room.
type KeyId = (String, String, String);

pub(super) struct Writer {
    connector: Connector,
    client: Option<Client>,
    /// No connection is attempted before this instant (after a failed one).
    retry_at: Option<Instant>,
    backoff: Duration,
    /// Why the last connection attempt failed (what batches get until the next one).
    last_failure: String,
    commits: CommitSender,
    metrics: Arc<Metrics>,
}

/// What one attempt at a batch decided, per append in order.
enum Outcome {
    /// New: its seq.
    New(u64),
    /// A repeat of a stored (or earlier in the batch) message.
    Duplicate(Appended),
}

impl Writer {
    pub(super) fn new(connector: Connector, client: Client, commits: CommitSender, metrics: Arc<Metrics>) -> Self {
        Self {
            connector,
            client: Some(client),
            retry_at: None,
            backoff: MIN_BACKOFF,
            last_failure: String::new(),
            commits,
            metrics,
        }
    }

    /// Serves commands until the queue closes or a `Close` arrives.
    pub(super) async fn run(mut self, mut queue: mpsc::Receiver<WriterCommand>) {
        let mut batch = Vec::with_capacity(64);
        while let Some(first) = queue.recv().await {
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(command) => batch.push(command),
                    Err(_) => break,
                }
            }
            if let Some(done) = self.process(&mut batch).await {
                queue.close();
                // Appends queued behind the close are refused; their senders see `Closed`.
                let _refused = done.send(());
                break;
            }
        }
        tracing::debug!("postgres writer stopped");
    }

    /// Runs one batch: appends in one transaction, barriers and close in their order.
    async fn process(&mut self, batch: &mut Vec<WriterCommand>) -> Option<oneshot::Sender<()>> {
        let mut appends = Vec::new();
        for command in batch.drain(..) {
            match command {
                WriterCommand::Append(message, reply) => appends.push((message, reply)),
                WriterCommand::Barrier(room, reply) => {
                    self.commit_appends(std::mem::take(&mut appends)).await;
                    self.barrier(room, reply).await;
                }
                WriterCommand::Close(done) => {
                    self.commit_appends(std::mem::take(&mut appends)).await;
                    return Some(done);
                }
            }
        }
        self.commit_appends(appends).await;
        None
    }

    /// The writer's connection, connecting first if it has none (or a broken one).
    async fn client(&mut self) -> Result<&mut Client, StoreError> {
        if self.client.as_ref().is_some_and(Client::is_closed) {
            self.client = None;
        }
        if self.client.is_none() {
            if self.retry_at.is_some_and(|at| Instant::now() < at) {
                return Err(StoreError::Unavailable(self.last_failure.clone()));
            }
            match connect(&self.connector).await {
                Ok(client) => {
                    tracing::info!("the writer is connected to PostgreSQL again");
                    self.client = Some(client);
                    self.retry_at = None;
                    self.backoff = MIN_BACKOFF;
                }
                Err(e) => {
                    self.last_failure = e.to_string();
                    self.retry_at = Some(Instant::now() + self.backoff);
                    self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                    return Err(e);
                }
            }
        }
        self.client.as_mut().ok_or_else(|| StoreError::Unavailable("no connection".into()))
    }

    /// Forgets the connection after `error` when it may be unusable (a connection
    /// failure, or a timeout that left a statement running).
    fn after_error(&mut self, error: &StoreError) {
        if matches!(error, StoreError::Unavailable(_)) {
            self.client = None;
        }
    }

    async fn barrier(&mut self, room: RoomName, reply: oneshot::Sender<Result<oneshot::Receiver<()>, StoreError>>) {
        let last_seq = match self.room_last_seq(&room).await {
            Ok(last_seq) => last_seq,
            Err(e) => {
                self.after_error(&e);
                let _caller_gone = reply.send(Err(e));
                return;
            }
        };
        let (done, processed) = oneshot::channel();
        if self.commits.barrier(room, last_seq, done).await {
            let _caller_gone = reply.send(Ok(processed));
        } else {
            let _caller_gone = reply.send(Err(StoreError::Closed));
        }
    }

    async fn room_last_seq(&mut self, room: &RoomName) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let name = room.as_str();
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&name];
        let query = client.query_opt("SELECT last_seq FROM rooms WHERE name = $1", &params);
        let row = tokio::time::timeout(QUERY_TIMEOUT, query).await.map_err(|_| timed_out())??;
        Ok(match row {
            Some(row) => row.try_get::<_, i64>(0)? as u64,
            None => 0,
        })
    }

    async fn commit_appends(&mut self, appends: Vec<(NewMessage, Reply)>) {
        // PostgreSQL's text cannot hold NUL: such a message would fail its whole batch,
        // so it is refused alone.
        let (appends, refused): (Vec<_>, Vec<_>) = appends.into_iter().partition(|(message, _)| !has_nul(message));
        for (_, reply) in refused {
            let _sender_gone = reply.send(Err(StoreError::Database(
                "PostgreSQL cannot store the character U+0000 (NUL): remove it from the message".into(),
            )));
        }
        if appends.is_empty() {
            return;
        }
        let (messages, replies): (Vec<NewMessage>, Vec<Reply>) = appends.into_iter().unzip();
        let count = messages.len();
        let started = Instant::now();
        let mut attempt = 1;
        let result = loop {
            let ts = Timestamp::now();
            let result = match self.client().await {
                Ok(client) => {
                    let work = insert_all(client, &messages, ts);
                    match tokio::time::timeout(QUERY_TIMEOUT, work).await {
                        Ok(result) => result.map(|outcomes| (outcomes, ts)),
                        Err(_) => Err(Failure::Store(timed_out())),
                    }
                }
                Err(e) => Err(Failure::Store(e)),
            };
            match result {
                Err(Failure::Conflict(e)) if attempt < MAX_ATTEMPTS => {
                    tracing::debug!(error = %e, attempt, "group commit ran into another node's; trying again");
                    attempt += 1;
                }
                Err(Failure::Conflict(e)) => break Err(e),
                Err(Failure::Store(e)) => {
                    self.after_error(&e);
                    break Err(e);
                }
                Ok(done) => break Ok(done),
            }
        };
        match result {
            Ok((outcomes, ts)) => {
                self.metrics.committed(count, started.elapsed());
                let mut committed = Vec::with_capacity(count);
                let mut answers = Vec::with_capacity(count);
                for (message, outcome) in messages.into_iter().zip(outcomes) {
                    match outcome {
                        Outcome::New(seq) => {
                            answers.push(Appended { seq, ts, duplicate: false });
                            // The message moves into the event: no copy of its text.
                            let NewMessage { room, from, text, key, reply_to, streaming } = message;
                            committed.push(Arc::new(Message {
                                key,
                                reply_to,
                                streaming,
                                ..Message::new(room, seq, ts, from, text)
                            }));
                        }
                        Outcome::Duplicate(original) => answers.push(original),
                    }
                }
                // The hub hears of a commit before its senders are acked, so an acked
                // message is already on its way to the members.
                if !committed.is_empty() {
                    let _hub_gone = self.commits.committed(committed).await;
                }
                for (reply, answer) in replies.into_iter().zip(answers) {
                    let _sender_gone = reply.send(Ok(answer));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, count, "group commit failed; nothing of the batch was stored");
                for reply in replies {
                    let _sender_gone = reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// Whether a text of `message` holds a NUL, which PostgreSQL's text type cannot.
fn has_nul(message: &NewMessage) -> bool {
    [message.text.as_str(), &message.from.id, &message.from.name, message.key.as_deref().unwrap_or_default()]
        .iter()
        .any(|text| text.contains('\0'))
}

fn timed_out() -> StoreError {
    StoreError::Unavailable(format!(
        "PostgreSQL did not answer within {}s: check that it is up and reachable",
        QUERY_TIMEOUT.as_secs()
    ))
}

/// Why an attempt at a batch failed.
enum Failure {
    /// Another node's transaction got in the way: trying again may succeed.
    Conflict(StoreError),
    /// Anything else.
    Store(StoreError),
}

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Self {
        let conflict = e.as_db_error().is_some_and(|db| {
            let code = db.code();
            (*code == tokio_postgres::error::SqlState::UNIQUE_VIOLATION && db.constraint() == Some("messages_by_key"))
                || *code == tokio_postgres::error::SqlState::T_R_DEADLOCK_DETECTED
                || *code == tokio_postgres::error::SqlState::T_R_SERIALIZATION_FAILURE
        });
        if conflict {
            Self::Conflict(e.into())
        } else {
            Self::Store(e.into())
        }
    }
}

/// One attempt at a batch, in one transaction: finds the keys already stored (one
/// query), bumps each room's `last_seq` by its count of new messages (rooms in name
/// order, one statement), and inserts the new messages (one statement). Answers each
/// append's outcome, in order. Dropping it before it ends (a timeout) drops the
/// transaction, which rolls back.
async fn insert_all(client: &mut Client, messages: &[NewMessage], ts: Timestamp) -> Result<Vec<Outcome>, Failure> {
    let tx = client.transaction().await?;
    // The distinct keys of the batch, and which of them are stored already.
    let mut keys: HashMap<KeyId, Option<Appended>> = HashMap::new();
    for message in messages {
        if let Some(key) = &message.key {
            keys.entry((message.room.to_string(), message.from.id.clone(), key.clone())).or_insert(None);
        }
    }
    if !keys.is_empty() {
        let (rooms, (users, texts)): (Vec<&str>, (Vec<&str>, Vec<&str>)) =
            keys.keys().map(|(room, user, key)| (room.as_str(), (user.as_str(), key.as_str()))).unzip();
        let rows = tx
            .query(
                "SELECT k.room, k.user_id, k.key, m.seq, m.ts
                 FROM UNNEST($1::text[], $2::text[], $3::text[]) AS k(room, user_id, key)
                 JOIN messages m ON m.room = k.room AND m.user_id = k.user_id AND m.key = k.key",
                &[&rooms, &users, &texts],
            )
            .await?;
        for row in rows {
            let id: KeyId = (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
            let found =
                Appended { seq: row.try_get::<_, i64>(3)? as u64, ts: Timestamp(row.try_get(4)?), duplicate: true };
            keys.insert(id, Some(found));
        }
    }
    // Each new message's place in its room's share of the batch (1-based), and the
    // size of each share; repeats (of stored keys or earlier in the batch) take none.
    let mut counts: HashMap<&str, i64> = HashMap::new();
    let mut places = Vec::with_capacity(messages.len());
    // Per key of the batch: the index of the message that carries it.
    let mut first_with_key: HashMap<KeyId, usize> = HashMap::new();
    for (index, message) in messages.iter().enumerate() {
        if let Some(key) = &message.key {
            let id = (message.room.to_string(), message.from.id.clone(), key.clone());
            if let Some(Some(stored)) = keys.get(&id) {
                places.push(Place::Stored(*stored));
                continue;
            }
            match first_with_key.entry(id) {
                Entry::Occupied(first) => {
                    places.push(Place::SameAs(*first.get()));
                    continue;
                }
                Entry::Vacant(slot) => {
                    slot.insert(index);
                }
            }
        }
        let count = counts.entry(message.room.as_str()).or_insert(0);
        *count += 1;
        places.push(Place::New(*count));
    }
    if counts.is_empty() {
        // Only repeats: nothing to write.
        tx.commit().await?;
        return Ok(resolve(&places, messages, &HashMap::new(), ts));
    }
    // Rooms in name order: two nodes' batches lock the rooms they share in the same
    // order, so neither waits for the other while holding a lock the other wants.
    let mut shares: Vec<(&str, i64)> = counts.iter().map(|(name, size)| (*name, *size)).collect();
    shares.sort_unstable();
    let (names, sizes): (Vec<&str>, Vec<i64>) = shares.iter().copied().unzip();
    let rows = tx
        .query(
            "INSERT INTO rooms (name, created_at, last_seq, last_ts)
             SELECT name, $3, n, $3 FROM UNNEST($1::text[], $2::bigint[]) WITH ORDINALITY AS t(name, n, i) ORDER BY i
             ON CONFLICT (name) DO UPDATE SET last_seq = rooms.last_seq + EXCLUDED.last_seq, last_ts = EXCLUDED.last_ts
             RETURNING name, last_seq",
            &[&names, &sizes, &ts.millis()],
        )
        .await?;
    // Each room's seq before this batch's share.
    let mut base: HashMap<String, i64> = HashMap::with_capacity(rows.len());
    for row in rows {
        let name: String = row.try_get(0)?;
        let last_seq: i64 = row.try_get(1)?;
        let size = counts.get(name.as_str()).copied().unwrap_or_default();
        base.insert(name, last_seq - size);
    }
    let mut rooms = Vec::new();
    let mut seqs = Vec::new();
    let mut user_ids = Vec::new();
    let mut user_names = Vec::new();
    let mut texts = Vec::new();
    let mut message_keys = Vec::new();
    let mut reply_tos = Vec::new();
    let mut streamings = Vec::new();
    for (message, place) in messages.iter().zip(&places) {
        let Place::New(place) = place else { continue };
        let Some(before) = base.get(message.room.as_str()) else {
            return Err(Failure::Store(StoreError::Database(format!("room {} got no seq", message.room))));
        };
        rooms.push(message.room.as_str());
        seqs.push(before + place);
        user_ids.push(message.from.id.as_str());
        user_names.push(message.from.name.as_str());
        texts.push(message.text.as_str());
        message_keys.push(message.key.as_deref());
        reply_tos.push(message.reply_to.map(|r| r.min(i64::MAX as u64) as i64));
        streamings.push(message.streaming);
    }
    tx.execute(
        "INSERT INTO messages (room, seq, ts, user_id, user_name, text, key, reply_to, streaming)
         SELECT room, seq, $3, user_id, user_name, text, key, reply_to, streaming
         FROM UNNEST($1::text[], $2::bigint[], $4::text[], $5::text[], $6::text[], $7::text[], $8::bigint[],
                     $9::boolean[])
           AS t(room, seq, user_id, user_name, text, key, reply_to, streaming)",
        &[&rooms, &seqs, &ts.millis(), &user_ids, &user_names, &texts, &message_keys, &reply_tos, &streamings],
    )
    .await?;
    tx.commit().await?;
    Ok(resolve(&places, messages, &base, ts))
}

/// Where a message of the batch goes.
enum Place {
    /// Its key is stored already, with this outcome.
    Stored(Appended),
    /// Its key is that of the earlier message at this index of the batch.
    SameAs(usize),
    /// It is new: the n-th (1-based) new message of its room in the batch.
    New(i64),
}

/// Each append's outcome, once the rooms' seqs before the batch (`base`) are known.
fn resolve(places: &[Place], messages: &[NewMessage], base: &HashMap<String, i64>, ts: Timestamp) -> Vec<Outcome> {
    let seq_of = |index: usize| match places.get(index) {
        Some(Place::New(place)) => {
            messages.get(index).and_then(|m| base.get(m.room.as_str())).map_or(0, |before| (before + place) as u64)
        }
        _ => 0,
    };
    places
        .iter()
        .enumerate()
        .map(|(index, place)| match place {
            Place::Stored(stored) => Outcome::Duplicate(*stored),
            Place::SameAs(first) => Outcome::Duplicate(Appended { seq: seq_of(*first), ts, duplicate: true }),
            Place::New(_) => Outcome::New(seq_of(index)),
        })
        .collect()
}
