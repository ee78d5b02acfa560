//! The PostgreSQL store: one database shared by several Bavard nodes.
//!
//! Each node runs one writer task (`writer.rs`) that group-commits its appends (every
//! append queued, up to a few thousand, in one transaction) and a small pool of
//! connections for reads and for rooms' rules (`rules.rs`). The schema is versioned and
//! migrated on start (`schema.rs`).
//!
//! # Order across nodes
//!
//! Several nodes append to the same room at once, so no node can own a room's seqs the
//! way the SQLite writer does: the database decides. In its append transaction a
//! writer bumps the `last_seq` of each room of its batch by that room's count of new
//! messages, `n`:
//!
//! ```sql
//! INSERT INTO rooms (name, created_at, last_seq, last_ts) VALUES ($1, $ts, $n, $ts)
//! ON CONFLICT (name) DO UPDATE SET last_seq = rooms.last_seq + $n, last_ts = $ts
//! RETURNING last_seq
//! ```
//!
//! and the batch's messages of that room take seqs `last_seq - n + 1 ..= last_seq`, in
//! the batch's order. The update locks the room's row until the transaction ends, so a
//! second node's batch on the same room waits, then reads the first one's committed
//! `last_seq` (an upsert under READ COMMITTED sees the latest row version): a room's
//! seqs are gap-free and totally ordered across nodes, and a transaction that fails or
//! rolls back leaves `last_seq` as it was. Rooms are locked in name order (one
//! statement over the batch's rooms, sorted), so two batches sharing rooms never wait
//! for each other in a cycle; if PostgreSQL still reports a deadlock, the batch is
//! tried again.
//!
//! Idempotency keys are checked with one query per batch, before seqs are assigned;
//! a key repeated within the batch answers the first message's seq. Two nodes racing
//! with the same key both miss it, the unique index on `(room, user_id, key)` fails the
//! second transaction, and that node tries its batch again (a few times), now finding
//! the key.
//!
//! Each node reports its own commits on its commit stream, in its commit order (so a
//! room's seqs arrive in increasing order, though with the other nodes' seqs missing:
//! those reach the hub through the broker). A barrier reads the room's `last_seq` from
//! the database, which counts every node's commits.
//!
//! # Faults
//!
//! Connecting gives up after [`CONNECT_TIMEOUT`] and statements after
//! [`STATEMENT_TIMEOUT`] (server side) or [`QUERY_TIMEOUT`] (client side, when the
//! network is silent). [`PgStore::open`] fails with [`StoreError::Unavailable`] when
//! PostgreSQL cannot be reached; once open, every operation does while it is down, and
//! the writer and the pool connect again when it is back. A failed append batch is
//! rolled back and every append of it gets the error, none acked. A connection lost
//! while a `COMMIT` was on its way leaves the outcome unknown: the appends get
//! `Unavailable` though the batch may have been stored (a retry with the same key
//! finds it).

mod rules;
mod schema;
mod writer;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use bavard_protocol::{Message, RoomName, Timestamp, User};
use futures_util::future::BoxFuture;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_postgres::{Client, NoTls, Row};

use self::writer::{Writer, WriterCommand};
use super::{
    AuditEntry, AuditRecord, MessageStore, NewMessage, NewRoom, Page, PageQuery, PendingAppend, RoomRecord, RuleChange,
    StoreError, StoredRules,
};
use crate::{hub::CommitSender, metrics::Metrics};

/// How many appends may wait for the writer before `append` applies backpressure.
const WRITER_QUEUE: usize = 16_384;
/// How many connections the pool opens at most (reads and rules run on them).
const POOL_SIZE: usize = 8;
/// How long connecting (TCP, startup and authentication) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long PostgreSQL lets a statement run (waiting for a row lock included).
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a transaction may stay idle before PostgreSQL ends its session, so a node
/// cut off mid-transaction does not hold rooms' locks for long.
const IDLE_IN_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the store waits for any one operation's answers (a silent network).
const QUERY_TIMEOUT: Duration = Duration::from_secs(15);

/// How to reach the database.
#[derive(Clone)]
struct Connector {
    config: tokio_postgres::Config,
    /// Where, for error messages (without the password).
    target: String,
}

impl Connector {
    fn new(url: &str) -> Result<Self, StoreError> {
        let mut config: tokio_postgres::Config = url.parse().map_err(|e| {
            StoreError::Database(format!("invalid PostgreSQL URL (expected postgres://user@host:port/db): {e}"))
        })?;
        let mut options = config.get_options().map(|o| format!("{o} ")).unwrap_or_default();
        options.push_str(&format!(
            "-c statement_timeout={} -c idle_in_transaction_session_timeout={}",
            STATEMENT_TIMEOUT.as_millis(),
            IDLE_IN_TRANSACTION_TIMEOUT.as_millis()
        ));
        config.options(options).connect_timeout(CONNECT_TIMEOUT).keepalives_idle(Duration::from_secs(10));
        if config.get_application_name().is_none() {
            config.application_name("bavard");
        }
        let hosts: Vec<String> = config
            .get_hosts()
            .iter()
            .map(|host| match host {
                tokio_postgres::config::Host::Tcp(name) => name.clone(),
                #[cfg(unix)]
                tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
            })
            .collect();
        let ports: Vec<String> = config.get_ports().iter().map(u16::to_string).collect();
        let target = format!(
            "{}:{}/{}",
            hosts.join(","),
            ports.join(","),
            config.get_dbname().or(config.get_user()).unwrap_or_default()
        );
        Ok(Self { config, target })
    }
}

/// A new connection, its I/O driven by a task of its own (which ends with it).
async fn connect(connector: &Connector) -> Result<Client, StoreError> {
    let unavailable =
        |why: String| StoreError::Unavailable(format!("cannot connect to PostgreSQL at {}: {why}", connector.target));
    let attempt = connector.config.connect(NoTls);
    let (client, connection) = match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
        Err(_) => return Err(unavailable(format!("no answer within {}s", CONNECT_TIMEOUT.as_secs()))),
        // A server that answers but refuses (a wrong password, no such database) is not
        // going to change its mind: that is a configuration error.
        Ok(Err(e)) if e.as_db_error().is_some() && !is_transient(&e) => {
            return Err(StoreError::Database(format!("PostgreSQL at {} refused the connection: {e}", connector.target)))
        }
        Ok(Err(e)) => return Err(unavailable(e.to_string())),
        Ok(Ok(connected)) => connected,
    };
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "lost a PostgreSQL connection");
        }
    });
    Ok(client)
}

/// Whether `e` says the database is out of reach or out of service for now (rather
/// than that the operation is wrong).
fn is_transient(e: &tokio_postgres::Error) -> bool {
    match e.code() {
        // Connection exceptions, insufficient resources, operator intervention (a
        // shutdown, a server starting, a statement timeout), system errors.
        Some(code) => ["08", "53", "57", "58"].iter().any(|class| code.code().starts_with(class)),
        // No answer from the server: the connection failed or is closed.
        None => {
            e.is_closed()
                || std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())
                || e.to_string().contains("timeout")
        }
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        if is_transient(&e) {
            Self::Unavailable(format!("{e}; check that PostgreSQL is up and reachable"))
        } else {
            Self::Database(match e.as_db_error() {
                Some(db) => format!("{db}"),
                None => e.to_string(),
            })
        }
    }
}

/// The same error again, for each append of a failed batch.
fn copy_error(e: &StoreError) -> StoreError {
    match e {
        StoreError::Database(message) => StoreError::Database(message.clone()),
        StoreError::Closed => StoreError::Closed,
        StoreError::Unavailable(message) => StoreError::Unavailable(message.clone()),
    }
}

/// Connections for reads and rules: at most [`POOL_SIZE`] at once, idle ones kept.
struct Pool {
    connector: Connector,
    idle: Mutex<Vec<Client>>,
    permits: Semaphore,
}

impl Pool {
    /// Runs `work` on a pooled connection (a new one when none is idle), within
    /// [`QUERY_TIMEOUT`]. The connection goes back to the pool unless the work timed
    /// out or failed for want of a working connection.
    async fn run<T>(
        &self,
        work: impl for<'c> FnOnce(&'c mut Client) -> BoxFuture<'c, Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let _permit = self.permits.acquire().await.map_err(|_| StoreError::Closed)?;
        let pooled = {
            let mut idle = self.idle.lock().map_err(|_| StoreError::Closed)?;
            let mut pooled = None;
            while let Some(client) = idle.pop() {
                if !client.is_closed() {
                    pooled = Some(client);
                    break;
                }
            }
            pooled
        };
        let mut client = match pooled {
            Some(client) => client,
            None => connect(&self.connector).await?,
        };
        let result = tokio::time::timeout(QUERY_TIMEOUT, work(&mut client)).await.unwrap_or_else(|_| {
            Err(StoreError::Unavailable(format!(
                "PostgreSQL did not answer within {}s: check that it is up and reachable",
                QUERY_TIMEOUT.as_secs()
            )))
        });
        if !matches!(result, Err(StoreError::Unavailable(_))) && !client.is_closed() {
            if let Ok(mut idle) = self.idle.lock() {
                idle.push(client);
            }
        }
        result
    }
}

/// PostgreSQL-backed [`MessageStore`], for several nodes sharing one database (see the
/// module doc for how they agree on each room's order).
#[cfg_attr(not(test), allow(dead_code))] // wired by app.rs (issue #10)
pub struct PgStore {
    writer: mpsc::Sender<WriterCommand>,
    pool: Arc<Pool>,
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/db`),
    /// brings its schema up to date and starts the writer task; commits are reported on
    /// `commits`, their duration and size in `metrics`. Fails with
    /// [`StoreError::Unavailable`] when PostgreSQL cannot be reached within a few
    /// seconds, and with [`StoreError::Database`] when it refuses the connection or the
    /// schema is newer than this build knows.
    #[cfg_attr(not(test), allow(dead_code))] // wired by app.rs (issue #10)
    pub async fn open(url: &str, commits: CommitSender, metrics: Arc<Metrics>) -> Result<Self, StoreError> {
        let connector = Connector::new(url)?;
        let mut client = connect(&connector).await?;
        match tokio::time::timeout(QUERY_TIMEOUT, schema::migrate(&mut client)).await {
            Ok(migrated) => migrated?,
            Err(_) => {
                return Err(StoreError::Unavailable(format!(
                    "migrating the schema took over {}s: another node may be holding the migration lock",
                    QUERY_TIMEOUT.as_secs()
                )))
            }
        };
        let (writer, queue) = mpsc::channel(WRITER_QUEUE);
        tokio::spawn(Writer::new(connector.clone(), client, commits, metrics).run(queue));
        let pool = Pool { connector, idle: Mutex::new(Vec::new()), permits: Semaphore::new(POOL_SIZE) };
        Ok(Self { writer, pool: Arc::new(pool) })
    }

    async fn page_of(&self, room: RoomName, query: PageQuery) -> Result<Page, StoreError> {
        let (low, high, limit, newest_first) = match query {
            PageQuery::Before { before, limit } => (0, before, limit, true),
            PageQuery::After { after, before, limit } => (after, before, limit, false),
        };
        let high = high.map_or(i64::MAX, |h| h.min(i64::MAX as u64) as i64);
        let low = low.min(i64::MAX as u64) as i64;
        let order = if newest_first { "DESC" } else { "ASC" };
        let sql = format!(
            "SELECT {COLUMNS} FROM messages WHERE room = $1 AND seq > $2 AND seq < $3 ORDER BY seq {order} LIMIT $4"
        );
        let rows = self
            .pool
            .run(|client| {
                let name = room.to_string();
                Box::pin(async move { Ok(client.query(&sql, &[&name, &low, &high, &(i64::from(limit) + 1)]).await?) })
            })
            .await?;
        let mut messages = rows.iter().map(|row| row_to_message(&room, row)).collect::<Result<Vec<_>, _>>()?;
        let has_more = messages.len() > limit as usize;
        messages.truncate(limit as usize);
        if newest_first {
            messages.reverse();
        }
        Ok(Page { messages, has_more })
    }
}

const COLUMNS: &str = "seq, ts, user_id, user_name, text, key, reply_to";

const ROOM_COLUMNS: &str = "name, topic, kind, created_at, last_seq, last_ts, slow_mode_secs, frozen";

fn row_to_message(room: &RoomName, row: &Row) -> Result<Message, StoreError> {
    Ok(Message {
        room: room.clone(),
        seq: row.try_get::<_, i64>(0)? as u64,
        ts: Timestamp(row.try_get(1)?),
        from: User { id: row.try_get(2)?, name: row.try_get(3)? },
        text: row.try_get(4)?,
        key: row.try_get(5)?,
        reply_to: row.try_get::<_, Option<i64>>(6)?.map(|r| r as u64),
    })
}

/// A row of `rooms` ([`ROOM_COLUMNS`]); None when its name is not a valid room name.
/// A kind this version does not know reads as private (see [`rules::parse_kind`]).
fn row_to_room(row: &Row) -> Result<Option<RoomRecord>, StoreError> {
    let Ok(room) = RoomName::new(row.try_get::<_, &str>(0)?) else { return Ok(None) };
    let created = Timestamp(row.try_get(3)?);
    Ok(Some(RoomRecord {
        room,
        topic: row.try_get(1)?,
        kind: rules::parse_kind(row.try_get(2)?),
        created,
        last_seq: row.try_get::<_, i64>(4)? as u64,
        last_ts: row.try_get::<_, Option<i64>>(5)?.map_or(created, Timestamp),
        slow_mode_secs: u32::try_from(row.try_get::<_, i32>(6)?).unwrap_or(0),
        frozen: row.try_get(7)?,
    }))
}

impl MessageStore for PgStore {
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
            let (reply, answer) = oneshot::channel();
            self.writer.send(WriterCommand::Barrier(room, reply)).await.map_err(|_| StoreError::Closed)?;
            let processed = answer.await.map_err(|_| StoreError::Closed)??;
            processed.await.map_err(|_| StoreError::Closed)
        })
    }

    fn page(&self, room: RoomName, query: PageQuery) -> BoxFuture<'_, Result<Page, StoreError>> {
        Box::pin(self.page_of(room, query))
    }

    fn rooms(&self, limit: u32) -> BoxFuture<'_, Result<Vec<RoomRecord>, StoreError>> {
        Box::pin(async move {
            let sql = format!(
                "SELECT {ROOM_COLUMNS} FROM rooms ORDER BY COALESCE(last_ts, created_at) DESC, name COLLATE \"C\" LIMIT $1"
            );
            let rows = self
                .pool
                .run(|client| Box::pin(async move { Ok(client.query(&sql, &[&i64::from(limit)]).await?) }))
                .await?;
            let mut rooms = Vec::with_capacity(rows.len());
            for row in &rows {
                // A name that is not a room name (written by hand) is left out.
                if let Some(room) = row_to_room(row)? {
                    rooms.push(room);
                }
            }
            Ok(rooms)
        })
    }

    fn room(&self, room: RoomName) -> BoxFuture<'_, Result<Option<RoomRecord>, StoreError>> {
        Box::pin(async move {
            let sql = format!("SELECT {ROOM_COLUMNS} FROM rooms WHERE name = $1");
            let row = self
                .pool
                .run(|client| Box::pin(async move { Ok(client.query_opt(&sql, &[&room.as_str()]).await?) }))
                .await?;
            Ok(match row {
                Some(row) => row_to_room(&row)?,
                None => None,
            })
        })
    }

    fn create_room(&self, room: NewRoom, audit: AuditEntry) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(self.pool.run(move |client| Box::pin(async move { rules::create_room(client, &room, &audit).await })))
    }

    fn change_room(
        &self,
        room: RoomName,
        changes: Vec<RuleChange>,
        audit: AuditEntry,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(
            self.pool
                .run(move |client| Box::pin(async move { rules::change_room(client, &room, &changes, &audit).await })),
        )
    }

    fn rules(&self, room: RoomName) -> BoxFuture<'_, Result<Option<StoredRules>, StoreError>> {
        Box::pin(
            self.pool
                .run(move |client| Box::pin(async move { rules::read_rules(client, &room, Timestamp::now()).await })),
        )
    }

    fn audit(
        &self,
        room: RoomName,
        before: Option<u64>,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<AuditRecord>, StoreError>> {
        Box::pin(
            self.pool.run(move |client| Box::pin(async move { rules::read_audit(client, &room, before, limit).await })),
        )
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            if self.writer.is_closed() {
                return Err(StoreError::Closed);
            }
            self.pool.run(|client| Box::pin(async move { Ok(client.simple_query("SELECT 1").await.map(drop)?) })).await
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
