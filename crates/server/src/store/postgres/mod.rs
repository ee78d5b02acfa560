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

mod messaging;
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
    AuditEntry, AuditRecord, ChangeMessage, ChangeRefused, Changed, MessageStore, NewMessage, NewRoom, Page, PageQuery,
    PendingAppend, RoomRecord, RuleChange, StoreError, StoredRules, Viewer,
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

/// A message's columns as [`row_to_message`] reads them: its current state included
/// (reactions and replies are added by `messaging::annotate`).
const COLUMNS: &str = "seq, ts, user_id, user_name, text, key, reply_to, edited_at, deleted, streaming, rev";

const ROOM_COLUMNS: &str = "name, topic, kind, created_at, last_seq, last_ts, slow_mode_secs, frozen";

fn row_to_message(room: &RoomName, row: &Row) -> Result<Message, StoreError> {
    let from = User { id: row.try_get(2)?, name: row.try_get(3)? };
    let (seq, ts) = (row.try_get::<_, i64>(0)? as u64, Timestamp(row.try_get(1)?));
    Ok(Message {
        key: row.try_get(5)?,
        reply_to: row.try_get::<_, Option<i64>>(6)?.map(|r| r as u64),
        edited_at: row.try_get::<_, Option<i64>>(7)?.map(Timestamp),
        deleted: row.try_get(8)?,
        streaming: row.try_get(9)?,
        rev: row.try_get::<_, i64>(10)? as u64,
        ..Message::new(room.clone(), seq, ts, from, row.try_get(4)?)
    })
}

/// A row of `rooms` ([`ROOM_COLUMNS`]); None when its name is not a valid room name.
/// A kind this version does not know reads as private (see `store::stored_kind`).
fn row_to_room(row: &Row) -> Result<Option<RoomRecord>, StoreError> {
    let Ok(room) = RoomName::new(row.try_get::<_, &str>(0)?) else { return Ok(None) };
    let created = Timestamp(row.try_get(3)?);
    Ok(Some(RoomRecord {
        room,
        topic: row.try_get(1)?,
        kind: super::stored_kind(row.try_get(2)?),
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

    fn change_message(
        &self,
        change: ChangeMessage,
    ) -> BoxFuture<'_, Result<Result<Changed, ChangeRefused>, StoreError>> {
        Box::pin(self.pool.run(move |client| Box::pin(async move { messaging::change_message(client, &change).await })))
    }

    fn annotate(
        &self,
        room: RoomName,
        messages: Vec<Message>,
        viewer: Viewer,
    ) -> BoxFuture<'_, Result<Vec<Message>, StoreError>> {
        Box::pin(self.pool.run(move |client| {
            Box::pin(async move { messaging::annotate(client, &room, messages, viewer.as_deref()).await })
        }))
    }

    fn messages_at(&self, room: RoomName, seqs: Vec<u64>) -> BoxFuture<'_, Result<Vec<Message>, StoreError>> {
        Box::pin(
            self.pool.run(move |client| Box::pin(async move { messaging::messages_at(client, &room, &seqs).await })),
        )
    }

    fn room_rev(&self, room: RoomName) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(self.pool.run(move |client| Box::pin(async move { messaging::room_rev(client, &room).await })))
    }

    fn changed_since(
        &self,
        room: RoomName,
        through: u64,
        since_rev: u64,
        limit: u32,
    ) -> BoxFuture<'_, Result<(Vec<u64>, bool), StoreError>> {
        Box::pin(self.pool.run(move |client| {
            Box::pin(async move { messaging::changed_since(client, &room, through, since_rev, limit).await })
        }))
    }

    fn thread(
        &self,
        room: RoomName,
        root: u64,
        query: PageQuery,
    ) -> BoxFuture<'_, Result<(Vec<u64>, bool), StoreError>> {
        Box::pin(
            self.pool.run(move |client| Box::pin(async move { messaging::thread(client, &room, root, query).await })),
        )
    }

    fn search(
        &self,
        room: RoomName,
        q: String,
        limit: u32,
        offset: u32,
    ) -> BoxFuture<'_, Result<(Vec<u64>, bool), StoreError>> {
        Box::pin(
            self.pool
                .run(move |client| Box::pin(async move { messaging::search(client, &room, &q, limit, offset).await })),
        )
    }

    fn mark_read(&self, room: RoomName, user: String, seq: u64) -> BoxFuture<'_, Result<(u64, bool), StoreError>> {
        Box::pin(
            self.pool.run(move |client| Box::pin(async move { messaging::mark_read(client, &room, &user, seq).await })),
        )
    }

    fn unread(&self, room: RoomName, user: String) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(self.pool.run(move |client| Box::pin(async move { messaging::unread(client, &room, &user).await })))
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

#[cfg(test)]
mod tests {
    //! These tests need the machine's PostgreSQL (127.0.0.1:5432, user `postgres`, trust
    //! authentication; `BAVARD_TEST_POSTGRES` names another server as
    //! `postgres://user@host:port`); without it they fail. Each creates its own database
    //! and drops it at the end.

    use std::collections::HashSet;

    use bavard_protocol::{Role, RoomKind};

    use super::*;
    use crate::{
        hub::{commit_stream, CommitStream, Reported},
        store::{Appended, MessageChange, Sanction, SanctionKind},
    };

    fn server() -> String {
        std::env::var("BAVARD_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
    }

    async fn admin() -> Client {
        let url = format!("{}/postgres", server());
        let (client, connection) = tokio_postgres::connect(&url, NoTls)
            .await
            .unwrap_or_else(|e| panic!("these tests need PostgreSQL at {url} (user postgres, trust auth): {e}"));
        tokio::spawn(connection);
        client
    }

    /// A database of its own for one test, dropped with it (even when the test fails).
    struct TestDb {
        name: String,
    }

    impl TestDb {
        async fn new() -> Self {
            let name = format!("bavard_t_{:016x}", rand::random::<u64>());
            admin().await.batch_execute(&format!("CREATE DATABASE {name}")).await.unwrap();
            Self { name }
        }

        fn url(&self) -> String {
            format!("{}/{}", server(), self.name)
        }

        async fn client(&self) -> Client {
            let (client, connection) = tokio_postgres::connect(&self.url(), NoTls).await.unwrap();
            tokio::spawn(connection);
            client
        }
    }

    impl Drop for TestDb {
        fn drop(&mut self) {
            let name = self.name.clone();
            // A runtime of its own: the test's may be gone, or be single-threaded.
            let dropped = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                runtime.block_on(async {
                    admin().await.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await.unwrap();
                });
            })
            .join();
            if dropped.is_err() {
                eprintln!("could not drop the test database {}", self.name);
            }
        }
    }

    /// A store on `db` whose commit stream nobody reads (beyond 1024 reports).
    async fn open_store(db: &TestDb) -> crate::store::PgStore {
        let (commits, unread) = commit_stream(1024);
        // Kept alive (unread) for the store's lifetime.
        std::mem::forget(unread);
        PgStore::open(&db.url(), commits, Arc::default()).await.unwrap()
    }

    async fn open_with_stream(db: &TestDb) -> (PgStore, CommitStream) {
        let (commits, stream) = commit_stream(4096);
        (PgStore::open(&db.url(), commits, Arc::default()).await.unwrap(), stream)
    }

    fn user(id: &str) -> User {
        User { id: id.into(), name: id.into() }
    }

    fn room(name: &str) -> RoomName {
        RoomName::new(name).unwrap()
    }

    fn new_message(room_name: &str, text: &str, key: Option<&str>) -> NewMessage {
        NewMessage {
            room: room(room_name),
            from: user("u_1"),
            text: text.into(),
            key: key.map(Into::into),
            reply_to: None,
            streaming: false,
        }
    }

    async fn append(store: &PgStore, message: NewMessage) -> Appended {
        store.append(message).await.unwrap().await.unwrap()
    }

    fn seqs(page: &Page) -> Vec<u64> {
        page.messages.iter().map(|m| m.seq).collect()
    }

    #[tokio::test]
    async fn seqs_are_per_room_gap_free_and_keys_deduplicate() {
        let db = TestDb::new().await;
        let (store, mut stream) = open_with_stream(&db).await;
        assert_eq!(append(&store, new_message("a", "1", None)).await.seq, 1);
        assert_eq!(append(&store, new_message("b", "1", None)).await.seq, 1);
        let first = append(&store, new_message("a", "2", Some("k"))).await;
        assert_eq!((first.seq, first.duplicate), (2, false));
        let again = append(&store, new_message("a", "2 again", Some("k"))).await;
        assert_eq!(again, Appended { duplicate: true, ..first });
        // The same key from another user, or in another room, is another message.
        let mut other = new_message("a", "other user", Some("k"));
        other.from = user("u_2");
        assert_eq!(append(&store, other).await.seq, 3);
        assert_eq!(append(&store, new_message("b", "2", Some("k"))).await.seq, 2);

        // One batch: appends queued before the writer runs (this runtime has one
        // thread) are committed together, repeats within it included.
        let mut pending = Vec::new();
        for (room_name, text, key) in [
            ("a", "4", Some("k4")),
            ("c", "1", None),
            ("a", "4 again", Some("k4")),
            ("a", "2 once more", Some("k")),
            ("a", "5", None),
            ("c", "2", Some("k4")),
        ] {
            pending.push(store.append(new_message(room_name, text, key)).await.unwrap());
        }
        let mut outcomes = Vec::new();
        for outcome in pending {
            outcomes.push(outcome.await.unwrap());
        }
        let got: Vec<_> = outcomes.iter().map(|o| (o.seq, o.duplicate)).collect();
        assert_eq!(got, [(4, false), (1, false), (4, true), (2, true), (5, false), (2, false)]);
        assert_eq!(outcomes[2].ts, outcomes[0].ts);

        let reported: Vec<_> = stream.drain_committed().iter().map(|m| (m.room.to_string(), m.seq)).collect();
        let expected = [("a", 1), ("b", 1), ("a", 2), ("a", 3), ("b", 2), ("a", 4), ("c", 1), ("a", 5), ("c", 2)];
        assert_eq!(reported, expected.map(|(r, s)| (r.to_string(), s)));
        let all = store.page(room("a"), PageQuery::After { after: 0, before: None, limit: 50 }).await.unwrap();
        let texts: Vec<_> = all.messages.iter().map(|m| m.text.as_str()).collect();
        assert_eq!(texts, ["1", "2", "other user", "4", "5"]);
        assert_eq!(all.messages[1].key.as_deref(), Some("k"));
        let record = store.room(room("a")).await.unwrap().unwrap();
        assert_eq!(record.last_seq, 5);
        store.close().await;
    }

    #[tokio::test]
    async fn chat_features_work_and_outlive_a_restart() {
        let db = TestDb::new().await;
        let store = open_store(&db).await;
        let before = crate::store::chat_scenario::exercise(&store).await;
        store.close().await;
        drop(store);
        let store = open_store(&db).await;
        assert_eq!(crate::store::chat_scenario::state(&store).await, before);
        store.close().await;
    }

    #[tokio::test]
    async fn pages_go_before_and_after_with_has_more() {
        let db = TestDb::new().await;
        let store = open_store(&db).await;
        for i in 1..=9 {
            let mut message = new_message("a", &format!("{i}"), None);
            message.reply_to = (i > 1).then_some(i - 1);
            append(&store, message).await;
        }
        let a = room("a");
        let page = store.page(a.clone(), PageQuery::Before { before: None, limit: 6 }).await.unwrap();
        assert_eq!((seqs(&page), page.has_more), ((4..=9).collect(), true));
        assert_eq!(page.messages[0].reply_to, Some(3));
        let page = store.page(a.clone(), PageQuery::Before { before: Some(4), limit: 6 }).await.unwrap();
        assert_eq!((seqs(&page), page.has_more), (vec![1, 2, 3], false));
        let page = store.page(a.clone(), PageQuery::Before { before: Some(4), limit: 3 }).await.unwrap();
        assert_eq!((seqs(&page), page.has_more), (vec![1, 2, 3], false));
        let page = store.page(a.clone(), PageQuery::Before { before: Some(4), limit: 2 }).await.unwrap();
        assert_eq!((seqs(&page), page.has_more), (vec![2, 3], true));
        let page = store.page(a.clone(), PageQuery::After { after: 3, before: Some(8), limit: 3 }).await.unwrap();
        assert_eq!((seqs(&page), page.has_more), (vec![4, 5, 6], true));
        let page = store.page(a.clone(), PageQuery::After { after: 3, before: Some(8), limit: 4 }).await.unwrap();
        assert_eq!((seqs(&page), page.has_more), (vec![4, 5, 6, 7], false));
        let page = store.page(a.clone(), PageQuery::After { after: 0, before: None, limit: 50 }).await.unwrap();
        assert_eq!((seqs(&page), page.has_more), ((1..=9).collect(), false));
        let page = store.page(a.clone(), PageQuery::After { after: 9, before: None, limit: 50 }).await.unwrap();
        assert_eq!((seqs(&page), page.has_more), (vec![], false));
        let page = store.page(a, PageQuery::Before { before: Some(u64::MAX), limit: 0 }).await.unwrap();
        assert_eq!((seqs(&page), page.has_more), (vec![], true));
        let page = store.page(room("nowhere"), PageQuery::Before { before: None, limit: 10 }).await.unwrap();
        assert_eq!(page, Page { messages: vec![], has_more: false });
        store.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_nodes_appending_to_one_room_share_one_gap_free_order() {
        let db = TestDb::new().await;
        let (one, mut one_stream) = open_with_stream(&db).await;
        let (two, mut two_stream) = open_with_stream(&db).await;
        let (one, two) = (Arc::new(one), Arc::new(two));
        // Each node: 4 tasks of 50 appends, each awaited before the next, plus keyed
        // repeats that both nodes send (one of them stores each, the other finds it).
        let mut tasks = tokio::task::JoinSet::new();
        for (node, store) in [(1, &one), (2, &two)] {
            for task in 0..4 {
                let store = Arc::clone(store);
                tasks.spawn(async move {
                    let mut got = Vec::new();
                    for i in 0..50 {
                        let message = new_message("busy", &format!("n{node} t{task} m{i}"), None);
                        got.push((node, store.append(message).await.unwrap().await.unwrap()));
                    }
                    got
                });
            }
        }
        let mut outcomes = Vec::new();
        while let Some(got) = tasks.join_next().await {
            outcomes.extend(got.unwrap());
        }
        let mut all: Vec<u64> = outcomes.iter().map(|(_, a)| a.seq).collect();
        all.sort_unstable();
        assert_eq!(all, (1..=400).collect::<Vec<_>>(), "each seq exactly once");
        assert!(outcomes.iter().all(|(_, a)| !a.duplicate));

        // Each node's stream reports its own appends, in seq order.
        for (node, stream) in [(1, &mut one_stream), (2, &mut two_stream)] {
            let reported: Vec<u64> = stream.drain_committed().iter().map(|m| m.seq).collect();
            let mine: HashSet<u64> = outcomes.iter().filter(|(n, _)| *n == node).map(|(_, a)| a.seq).collect();
            assert_eq!(reported.len(), 200);
            assert!(reported.windows(2).all(|w| w[0] < w[1]), "node {node} reported {reported:?}");
            assert_eq!(reported.into_iter().collect::<HashSet<_>>(), mine);
        }
        let page = one.page(room("busy"), PageQuery::After { after: 0, before: None, limit: 1000 }).await.unwrap();
        assert_eq!(seqs(&page), (1..=400).collect::<Vec<_>>());
        assert_eq!(two.room(room("busy")).await.unwrap().unwrap().last_seq, 400);

        // A barrier on one node counts the other's appends.
        append(&two, new_message("busy", "last", None)).await;
        let barrier = tokio::spawn({
            let one = Arc::clone(&one);
            async move { one.barrier(room("busy")).await }
        });
        let reported = one_stream.next_reported().await.unwrap();
        assert!(matches!(&reported, Reported::Barrier(r, 401) if r.as_str() == "busy"), "{reported:?}");
        barrier.await.unwrap().unwrap();
        // And a room nobody wrote to is at 0.
        let barrier = tokio::spawn({
            let one = Arc::clone(&one);
            async move { one.barrier(room("quiet")).await }
        });
        let reported = one_stream.next_reported().await.unwrap();
        assert!(matches!(&reported, Reported::Barrier(r, 0) if r.as_str() == "quiet"), "{reported:?}");
        barrier.await.unwrap().unwrap();
        one.close().await;
        two.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_nodes_changing_one_room_while_appending_share_one_gap_free_rev_order() {
        let db = TestDb::new().await;
        let one = Arc::new(open_store(&db).await);
        let two = Arc::new(open_store(&db).await);
        for i in 0..4 {
            append(&one, new_message("busy", &format!("m{i}"), None)).await;
        }
        // Each node: 3 users reacting to the 4 messages in turn, while another task
        // appends to the room (taking its row lock by batches).
        let mut tasks = tokio::task::JoinSet::new();
        for (node, store) in [(1, &one), (2, &two)] {
            for user in 0..3 {
                let store = Arc::clone(store);
                tasks.spawn(async move {
                    let mut revs = Vec::new();
                    for seq in 1..=4 {
                        let ask = ChangeMessage {
                            room: room("busy"),
                            seq,
                            by: format!("n{node}u{user}"),
                            moderator: false,
                            change: MessageChange::React { emoji: "👍".into(), on: true },
                            at: Timestamp(seq as i64),
                        };
                        let changed = store.change_message(ask).await.unwrap().unwrap();
                        assert!(changed.changed);
                        revs.push(changed.rev);
                    }
                    revs
                });
            }
            let store = Arc::clone(store);
            tasks.spawn(async move {
                for i in 0..20 {
                    append(&store, new_message("busy", &format!("n{node} more {i}"), None)).await;
                }
                Vec::new()
            });
        }
        let mut revs = Vec::new();
        while let Some(got) = tasks.join_next().await {
            revs.extend(got.unwrap());
        }
        revs.sort_unstable();
        assert_eq!(revs, (1..=24).collect::<Vec<_>>(), "each rev exactly once");
        assert_eq!(two.room_rev(room("busy")).await.unwrap(), 24);
        assert_eq!(one.room(room("busy")).await.unwrap().unwrap().last_seq, 44);
        let at = one.messages_at(room("busy"), vec![1, 2, 3, 4]).await.unwrap();
        let annotated = two.annotate(room("busy"), at, None).await.unwrap();
        assert!(annotated.iter().all(|m| m.reactions.len() == 1 && m.reactions[0].count == 6), "{annotated:?}");
        // The last change of each message, in rev order.
        let mut by_rev: Vec<(u64, u64)> = annotated.iter().map(|m| (m.rev, m.seq)).collect();
        by_rev.sort_unstable();
        let order: Vec<u64> = by_rev.iter().map(|(_, seq)| *seq).collect();
        assert_eq!(one.changed_since(room("busy"), 100, 0, 10).await.unwrap(), (order, false));
        one.close().await;
        two.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_nodes_racing_with_the_same_keys_store_each_once() {
        let db = TestDb::new().await;
        let (one, two) = (Arc::new(open_store(&db).await), Arc::new(open_store(&db).await));
        let mut tasks = tokio::task::JoinSet::new();
        for store in [&one, &two] {
            for task in 0..2 {
                let store = Arc::clone(store);
                tasks.spawn(async move {
                    let mut got = Vec::new();
                    for i in 0..100 {
                        // Every key is sent by both nodes (and twice by each).
                        let key = format!("k{i}");
                        let message = new_message("keys", &format!("t{task} {i}"), Some(&key));
                        got.push((key, store.append(message).await.unwrap().await.unwrap()));
                    }
                    got
                });
            }
        }
        let mut by_key: HashMap<String, Vec<Appended>> = HashMap::new();
        while let Some(got) = tasks.join_next().await {
            for (key, outcome) in got.unwrap() {
                by_key.entry(key).or_default().push(outcome);
            }
        }
        assert_eq!(by_key.len(), 100);
        let mut stored = Vec::new();
        for (key, outcomes) in &by_key {
            assert_eq!(outcomes.iter().filter(|o| !o.duplicate).count(), 1, "{key}: {outcomes:?}");
            assert!(outcomes.iter().all(|o| o.seq == outcomes[0].seq), "{key}: {outcomes:?}");
            stored.push(outcomes[0].seq);
        }
        stored.sort_unstable();
        assert_eq!(stored, (1..=100).collect::<Vec<_>>());
        assert_eq!(one.room(room("keys")).await.unwrap().unwrap().last_seq, 100);
        one.close().await;
        two.close().await;
    }

    use std::collections::HashMap;

    #[tokio::test]
    async fn a_failed_batch_stores_nothing_and_acks_nothing() {
        let db = TestDb::new().await;
        let store = open_store(&db).await;
        append(&store, new_message("a", "1", None)).await;
        // A row the rooms table does not count (as if written by hand) takes room b's
        // next seq: the batch's insert fails, and the whole batch rolls back.
        let client = db.client().await;
        client
            .batch_execute(
                "INSERT INTO messages (room, seq, ts, user_id, user_name, text) VALUES ('b', 1, 0, 'u', 'u', 'x')",
            )
            .await
            .unwrap();
        let good = store.append(new_message("a", "2", Some("k"))).await.unwrap();
        let fresh = store.append(new_message("fresh", "1", None)).await.unwrap();
        let bad = store.append(new_message("b", "1", None)).await.unwrap();
        for pending in [good, fresh, bad] {
            let failed = pending.await;
            assert!(matches!(failed, Err(StoreError::Database(_))), "{failed:?}");
        }
        assert_eq!(store.room(room("a")).await.unwrap().unwrap().last_seq, 1);
        assert_eq!(store.room(room("fresh")).await.unwrap(), None);
        assert_eq!(store.room(room("b")).await.unwrap(), None);
        // The writer goes on: the key was not stored, the seq not taken.
        client.batch_execute("DELETE FROM messages WHERE room = 'b'").await.unwrap();
        let again = append(&store, new_message("a", "2", Some("k"))).await;
        assert_eq!((again.seq, again.duplicate), (2, false));
        assert_eq!(append(&store, new_message("b", "1", None)).await.seq, 1);
        store.close().await;
    }

    #[tokio::test]
    async fn a_nul_fails_its_own_append_not_its_batch() {
        let db = TestDb::new().await;
        let store = open_store(&db).await;
        let good = store.append(new_message("a", "fine", None)).await.unwrap();
        let bad = store.append(new_message("a", "nul \0 here", None)).await.unwrap();
        let bad_key = store.append(new_message("a", "key", Some("k\0"))).await.unwrap();
        let also_good = store.append(new_message("a", "fine too", None)).await.unwrap();
        assert!(matches!(bad.await, Err(StoreError::Database(_))));
        assert!(matches!(bad_key.await, Err(StoreError::Database(_))));
        assert_eq!((good.await.unwrap().seq, also_good.await.unwrap().seq), (1, 2));
        // An edit or an append with a NUL is refused, and changes nothing.
        for change in [MessageChange::Edit("nul \0".into()), MessageChange::React { emoji: "\0".into(), on: true }] {
            let ask =
                ChangeMessage { room: room("a"), seq: 1, by: "u_1".into(), moderator: false, change, at: Timestamp(1) };
            let refused = store.change_message(ask).await;
            assert!(matches!(&refused, Err(StoreError::Database(why)) if why.contains("NUL")), "{refused:?}");
        }
        assert_eq!(store.room_rev(room("a")).await.unwrap(), 0);
        let stored = store.messages_at(room("a"), vec![1]).await.unwrap();
        assert_eq!((stored[0].text.as_str(), stored[0].rev), ("fine", 0));
        store.close().await;
    }

    #[tokio::test]
    async fn rooms_come_most_recently_active_first() {
        let db = TestDb::new().await;
        let store = open_store(&db).await;
        append(&store, new_message("old", "1", None)).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        append(&store, new_message("new", "1", None)).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        append(&store, new_message("old", "2", None)).await;
        let rooms = store.rooms(10).await.unwrap();
        let names: Vec<_> = rooms.iter().map(|r| (r.room.as_str(), r.last_seq)).collect();
        assert_eq!(names, [("old", 2), ("new", 1)]);
        assert!(rooms[0].last_ts > rooms[0].created);
        assert_eq!(rooms[1].last_ts, rooms[1].created);
        assert_eq!(store.rooms(1).await.unwrap().len(), 1);
        assert_eq!(store.room(room("none")).await.unwrap(), None);
        store.ping().await.unwrap();
        store.close().await;
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
        let db = TestDb::new().await;
        let store = open_store(&db).await;
        let mut created = entry("create", Some("private"));
        created.reason = Some("for the team".into());
        created.target = Some("u_1".into());
        assert!(store.create_room(new_room("team", RoomKind::Private, Some("u_1")), created.clone()).await.unwrap());
        let record = store.room(room("team")).await.unwrap().unwrap();
        assert_eq!((record.kind, record.topic.as_str(), record.last_seq), (RoomKind::Private, "about it", 0));
        assert_eq!((record.slow_mode_secs, record.frozen, record.last_ts), (0, false, record.created));
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
        // A room made by its first message is known: creating it changes nothing.
        append(&store, new_message("chat", "hi", None)).await;
        assert!(!store.create_room(new_room("chat", RoomKind::Private, None), entry("create", None)).await.unwrap());
        assert_eq!(store.room(room("chat")).await.unwrap().unwrap().kind, RoomKind::Public);
        // And appends keep a created room's rules.
        append(&store, new_message("team", "hi", None)).await;
        let record = store.room(room("team")).await.unwrap().unwrap();
        assert_eq!((record.kind, record.topic.as_str(), record.last_seq), (RoomKind::Private, "about it", 1));
        store.close().await;
    }

    #[tokio::test]
    async fn change_room_gives_a_room_without_a_record_a_public_one() {
        let db = TestDb::new().await;
        let store = open_store(&db).await;
        assert_eq!(store.rules(room("lobby")).await.unwrap(), None);
        assert_eq!(store.room(room("lobby")).await.unwrap(), None);
        store.change_room(room("lobby"), vec![RuleChange::SlowMode(5)], entry("slow_mode", Some("5s"))).await.unwrap();
        let record = store.room(room("lobby")).await.unwrap().unwrap();
        assert_eq!((record.kind, record.topic.as_str(), record.slow_mode_secs), (RoomKind::Public, "", 5));
        assert_eq!((record.last_seq, record.last_ts), (0, record.created));
        assert_eq!(actions(&store.audit(room("lobby"), None, 10).await.unwrap()), ["slow_mode"]);
        // Its first message continues from there.
        assert_eq!(append(&store, new_message("lobby", "hi", None)).await.seq, 1);
        assert_eq!(store.rules(room("lobby")).await.unwrap().unwrap().slow_mode_secs, 5);
        store.close().await;
    }

    #[tokio::test]
    async fn each_rule_change_round_trips_through_rules() {
        let db = TestDb::new().await;
        let store = open_store(&db).await;
        let later = Timestamp(Timestamp::now().millis() + 3_600_000);
        let changes = vec![
            RuleChange::Kind(RoomKind::Broadcast),
            RuleChange::Topic("news".into()),
            RuleChange::SlowMode(30),
            RuleChange::Frozen(true),
            RuleChange::Role { user: "u_b".into(), role: Some(Role::Member) },
            RuleChange::Role { user: "u_a".into(), role: Some(Role::Moderator) },
            RuleChange::Role { user: "u_C".into(), role: Some(Role::Member) },
            RuleChange::Role { user: "u_c".into(), role: Some(Role::Member) },
            RuleChange::Sanction(sanction("u_x", SanctionKind::Mute, Some(later), Some("spam"))),
            RuleChange::Sanction(sanction("u_x", SanctionKind::Ban, None, None)),
            RuleChange::Sanction(sanction("u_y", SanctionKind::Kick, Some(later), None)),
        ];
        store.change_room(room("news"), changes, entry("setup", None)).await.unwrap();
        let rules = store.rules(room("news")).await.unwrap().unwrap();
        assert_eq!((rules.kind, rules.slow_mode_secs, rules.frozen), (RoomKind::Broadcast, 30, true));
        // Sorted bytewise, as SQLite sorts: "u_C" before "u_a".
        let roles = [("u_C", Role::Member), ("u_a", Role::Moderator), ("u_b", Role::Member), ("u_c", Role::Member)];
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
            RuleChange::Role { user: "u_C".into(), role: None },
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
        assert_eq!(actions(&store.audit(room("news"), None, 10).await.unwrap()), ["reset", "setup"]);
        // Another room's rules are its own.
        assert_eq!(store.rules(room("other")).await.unwrap(), None);
        // A kind, role or sanction this version does not know.
        let client = db.client().await;
        client
            .batch_execute(
                "UPDATE rooms SET kind = 'secret' WHERE name = 'news';
                 INSERT INTO room_roles VALUES ('news', 'u_z', 'overlord');
                 INSERT INTO sanctions VALUES ('news', 'u_z', 'exile', NULL, NULL);",
            )
            .await
            .unwrap();
        let rules = store.rules(room("news")).await.unwrap().unwrap();
        assert_eq!((rules.kind, rules.roles.len(), rules.sanctions.len()), (RoomKind::Private, 1, 2));
        assert_eq!(store.room(room("news")).await.unwrap().unwrap().kind, RoomKind::Private);
        store.close().await;
    }

    #[tokio::test]
    async fn expired_sanctions_are_left_out() {
        let db = TestDb::new().await;
        let store = open_store(&db).await;
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
    async fn audit_pages_go_newest_first_below_before() {
        let db = TestDb::new().await;
        let store = open_store(&db).await;
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

    async fn schema_version(db: &TestDb) -> i32 {
        db.client().await.query_one("SELECT version FROM bavard_schema", &[]).await.unwrap().get(0)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn migrations_run_once_even_from_nodes_starting_together_and_a_newer_schema_is_refused() {
        let db = TestDb::new().await;
        // Three nodes at once: one migrates, the others wait for its lock, then see it done.
        let url = db.url();
        let opened = futures_util::future::join_all((0..3).map(|_| {
            let (commits, unread) = commit_stream(16);
            std::mem::forget(unread);
            let url = url.clone();
            async move { PgStore::open(&url, commits, Arc::default()).await }
        }))
        .await;
        for store in &opened {
            assert!(store.is_ok(), "{:?}", store.as_ref().err());
        }
        assert_eq!(schema_version(&db).await, schema::VERSION);
        let rows: i64 = db.client().await.query_one("SELECT count(*) FROM bavard_schema", &[]).await.unwrap().get(0);
        assert_eq!(rows, 1);
        let store = &opened[0].as_ref().unwrap();
        append(store, new_message("a", "kept", Some("k"))).await;
        for store in opened.iter().flatten() {
            store.close().await;
        }
        drop(opened);
        // Opening again changes nothing and keeps the data.
        let mut client = db.client().await;
        assert_eq!(schema::migrate(&mut client).await.unwrap(), schema::VERSION);
        let store = open_store(&db).await;
        let again = append(&store, new_message("a", "again", Some("k"))).await;
        assert_eq!((again.seq, again.duplicate), (1, true));
        store.close().await;
        drop(store);

        client.execute("UPDATE bavard_schema SET version = $1", &[&(schema::VERSION + 1)]).await.unwrap();
        let (commits, _unread) = commit_stream(1);
        let Err(error) = PgStore::open(&db.url(), commits, Arc::default()).await else {
            panic!("a newer schema was opened")
        };
        assert!(matches!(error, StoreError::Database(_)), "{error:?}");
        assert!(error.to_string().contains("newer Bavard"), "{error}");
    }

    #[tokio::test]
    async fn an_unreachable_postgres_fails_open_as_unavailable_quickly() {
        let started = std::time::Instant::now();
        let (commits, _unread) = commit_stream(1);
        let Err(error) = PgStore::open("postgres://postgres@127.0.0.1:1/bavard", commits, Arc::default()).await else {
            panic!("opened a store on a closed port")
        };
        assert!(matches!(error, StoreError::Unavailable(_)), "{error:?}");
        assert!(error.to_string().contains("127.0.0.1:1"), "{error}");
        assert!(started.elapsed() < CONNECT_TIMEOUT + Duration::from_secs(1));
        let (commits, _unread) = commit_stream(1);
        let Err(error) = PgStore::open("not a url", commits, Arc::default()).await else { panic!("opened nothing") };
        assert!(matches!(error, StoreError::Database(_)), "{error:?}");
        // A database that does not exist is refused, not unavailable.
        let (commits, _unread) = commit_stream(1);
        let url = format!("{}/bavard_t_missing_{:x}", server(), rand::random::<u32>());
        let Err(error) = PgStore::open(&url, commits, Arc::default()).await else { panic!("opened nothing") };
        assert!(matches!(error, StoreError::Database(_)), "{error:?}");
    }

    /// A TCP proxy in front of the test server, which the test can cut (dropping every
    /// connection and refusing new ones) and restore on the same port.
    struct Proxy {
        port: u16,
        task: Option<tokio::task::JoinHandle<()>>,
    }

    impl Proxy {
        async fn start(port: u16) -> Self {
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let target = Connector::new(&format!("{}/postgres", server())).unwrap();
            let upstream = match (target.config.get_hosts().first(), target.config.get_ports().first()) {
                (Some(tokio_postgres::config::Host::Tcp(host)), Some(port)) => format!("{host}:{port}"),
                _ => "127.0.0.1:5432".into(),
            };
            let task = tokio::spawn(async move {
                let mut connections = tokio::task::JoinSet::new();
                while let Ok((mut inbound, _)) = listener.accept().await {
                    let upstream = upstream.clone();
                    connections.spawn(async move {
                        if let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await {
                            let _closed = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                }
            });
            Self { port, task: Some(task) }
        }

        async fn cut(&mut self) {
            if let Some(task) = self.task.take() {
                task.abort();
                let _aborted = task.await;
            }
        }
    }

    impl Drop for Proxy {
        fn drop(&mut self) {
            if let Some(task) = self.task.take() {
                task.abort();
            }
        }
    }

    #[tokio::test]
    async fn a_lost_database_makes_operations_unavailable_until_it_is_back() {
        let db = TestDb::new().await;
        let mut proxy = Proxy::start(0).await;
        let url = format!("postgres://postgres@127.0.0.1:{}/{}", proxy.port, db.name);
        let (commits, mut stream) = commit_stream(64);
        let store = PgStore::open(&url, commits, Arc::default()).await.unwrap();
        assert_eq!(append(&store, new_message("a", "1", None)).await.seq, 1);
        store.ping().await.unwrap();

        proxy.cut().await;
        let started = std::time::Instant::now();
        let failed = store.append(new_message("a", "lost", Some("k"))).await.unwrap().await;
        assert!(matches!(failed, Err(StoreError::Unavailable(_))), "{failed:?}");
        assert!(matches!(store.ping().await, Err(StoreError::Unavailable(_))));
        let page = store.page(room("a"), PageQuery::Before { before: None, limit: 10 }).await;
        assert!(matches!(page, Err(StoreError::Unavailable(_))), "{page:?}");
        assert!(matches!(store.rules(room("a")).await, Err(StoreError::Unavailable(_))));
        assert!(matches!(store.barrier(room("a")).await, Err(StoreError::Unavailable(_))));
        let ask = ChangeMessage {
            room: room("a"),
            seq: 1,
            by: "u_1".into(),
            moderator: false,
            change: MessageChange::Edit("lost".into()),
            at: Timestamp(1),
        };
        assert!(matches!(store.change_message(ask).await, Err(StoreError::Unavailable(_))));
        let search = store.search(room("a"), "lost".into(), 10, 0).await;
        assert!(matches!(search, Err(StoreError::Unavailable(_))), "{search:?}");
        assert!(matches!(store.mark_read(room("a"), "u_2".into(), 1).await, Err(StoreError::Unavailable(_))));
        assert!(matches!(store.unread(room("a"), "u_2".into()).await, Err(StoreError::Unavailable(_))));
        let failed = store.append(new_message("a", "lost", Some("k"))).await.unwrap().await;
        assert!(matches!(failed, Err(StoreError::Unavailable(_))), "{failed:?}");
        assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());

        // Back: the writer and the pool connect again (after the writer's pause).
        proxy = Proxy::start(proxy.port).await;
        let back = async {
            loop {
                match store.append(new_message("a", "back", Some("k"))).await.unwrap().await {
                    Ok(appended) => break appended,
                    Err(StoreError::Unavailable(_)) => tokio::time::sleep(Duration::from_millis(50)).await,
                    Err(e) => panic!("{e}"),
                }
            }
        };
        let back = tokio::time::timeout(Duration::from_secs(10), back).await.unwrap();
        assert_eq!((back.seq, back.duplicate), (2, false), "nothing of the failed batches was stored");
        store.ping().await.unwrap();
        let page = store.page(room("a"), PageQuery::Before { before: None, limit: 10 }).await.unwrap();
        assert_eq!(page.messages.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(), ["1", "back"]);
        let reported: Vec<_> = stream.drain_committed().iter().map(|m| m.text.clone()).collect();
        assert_eq!(reported, ["1", "back"]);
        store.close().await;
        drop(proxy);
    }

    #[tokio::test]
    async fn close_commits_what_is_queued_then_refuses_appends() {
        let db = TestDb::new().await;
        let (store, mut stream) = open_with_stream(&db).await;
        let queued = store.append(new_message("a", "queued", None)).await.unwrap();
        store.close().await;
        assert_eq!(queued.await.unwrap().seq, 1);
        let Some(Reported::Committed(messages)) = stream.next_reported().await else { panic!("no commit reported") };
        assert_eq!(messages.iter().map(|m| (m.seq, m.text.as_str())).collect::<Vec<_>>(), [(1, "queued")]);
        assert!(matches!(store.append(new_message("a", "late", None)).await, Err(StoreError::Closed)));
        assert!(matches!(store.barrier(room("a")).await, Err(StoreError::Closed)));
        assert!(matches!(store.ping().await, Err(StoreError::Closed)));
        // Reads still work.
        let page = store.page(room("a"), PageQuery::Before { before: None, limit: 10 }).await.unwrap();
        assert_eq!(seqs(&page), [1]);
    }

    /// Durable appends per second from many concurrent senders over a few rooms (run
    /// with `--ignored --nocapture` to see it).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "a measurement, not a test"]
    async fn append_throughput() {
        let db = TestDb::new().await;
        let store = Arc::new(open_store(&db).await);
        let started = std::time::Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        let (senders, each) = (500, 100);
        for sender in 0..senders {
            let store = Arc::clone(&store);
            tasks.spawn(async move {
                for i in 0..each {
                    let message = new_message(&format!("r{}", sender % 20), &format!("message {i} of {sender}"), None);
                    store.append(message).await.unwrap().await.unwrap();
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
        let took = started.elapsed();
        let total = senders * each;
        println!("{total} durable appends in {took:?}: {:.0}/s", total as f64 / took.as_secs_f64());
        store.close().await;
    }
}
