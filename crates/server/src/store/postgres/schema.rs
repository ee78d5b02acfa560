//! The PostgreSQL schema and its migrations.
//!
//! Each migration is a step from one version to the next; [`migrate`] applies the
//! missing ones on start, in one transaction that first takes a transaction-level
//! advisory lock ([`MIGRATION_LOCK`]), so nodes starting at once take turns: the
//! first one migrates, the others then find the schema current and change nothing.
//! The version is the one row of `bavard_schema`. A database of a newer version than
//! this build knows is refused rather than written with an older idea of its shape.

use tokio_postgres::Client;

use crate::store::StoreError;

/// The key of the advisory lock held while migrating (any constant: it names this
/// application's lock among others taken on the same database).
const MIGRATION_LOCK: i64 = 0x6261_7661_7264; // "bavard"

/// The migrations, in order: `MIGRATIONS[i]` brings version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // Version 1: messages, rooms (with their rules), roles, sanctions and the audit
    // log. Timestamps are bigint milliseconds since the epoch, as `Timestamp` holds.
    "
    CREATE TABLE messages (
        room      text   NOT NULL,
        seq       bigint NOT NULL,
        ts        bigint NOT NULL,
        user_id   text   NOT NULL,
        user_name text   NOT NULL,
        text      text   NOT NULL,
        key       text,
        reply_to  bigint,
        PRIMARY KEY (room, seq)
    );
    CREATE UNIQUE INDEX messages_by_key ON messages (room, user_id, key) WHERE key IS NOT NULL;
    CREATE TABLE rooms (
        name           text    PRIMARY KEY,
        topic          text    NOT NULL DEFAULT '',
        kind           text    NOT NULL DEFAULT 'public',
        created_at     bigint  NOT NULL,
        last_seq       bigint  NOT NULL DEFAULT 0,
        last_ts        bigint,
        slow_mode_secs integer NOT NULL DEFAULT 0,
        frozen         boolean NOT NULL DEFAULT false
    );
    CREATE TABLE room_roles (
        room    text NOT NULL,
        user_id text NOT NULL,
        role    text NOT NULL,
        PRIMARY KEY (room, user_id)
    );
    CREATE TABLE sanctions (
        room    text   NOT NULL,
        user_id text   NOT NULL,
        kind    text   NOT NULL,
        until   bigint,
        reason  text,
        PRIMARY KEY (room, user_id, kind)
    );
    CREATE TABLE audit (
        id         bigserial PRIMARY KEY,
        room       text   NOT NULL,
        ts         bigint NOT NULL,
        actor_id   text   NOT NULL,
        actor_name text   NOT NULL,
        action     text   NOT NULL,
        target     text,
        reason     text,
        detail     text
    );
    CREATE INDEX audit_by_room ON audit (room, id);
    ",
    // Version 2: chat features. A message's current state (edits, deletes, streamed
    // text) lives in its row, with `rev`, the room's change number (`rooms.last_rev`)
    // of its last change; reactions and read positions have tables of their own;
    // threads are read from `reply_to`, search from a full-text index of the text.
    "
    ALTER TABLE messages
        ADD COLUMN edited_at bigint,
        ADD COLUMN deleted   boolean NOT NULL DEFAULT false,
        ADD COLUMN streaming boolean NOT NULL DEFAULT false,
        ADD COLUMN rev       bigint  NOT NULL DEFAULT 0;
    ALTER TABLE rooms ADD COLUMN last_rev bigint NOT NULL DEFAULT 0;
    CREATE INDEX messages_by_rev ON messages (room, rev) WHERE rev > 0;
    CREATE INDEX messages_by_thread ON messages (room, reply_to, seq) WHERE reply_to IS NOT NULL;
    CREATE INDEX messages_by_words ON messages USING gin (to_tsvector('simple', text));
    CREATE TABLE reactions (
        room    text   NOT NULL,
        seq     bigint NOT NULL,
        emoji   text   NOT NULL,
        user_id text   NOT NULL,
        ts      bigint NOT NULL,
        PRIMARY KEY (room, seq, emoji, user_id)
    );
    CREATE TABLE read_marks (
        room    text   NOT NULL,
        user_id text   NOT NULL,
        seq     bigint NOT NULL,
        PRIMARY KEY (room, user_id)
    );
    ",
];

/// The schema version this build writes.
pub(super) const VERSION: i32 = MIGRATIONS.len() as i32;

/// Brings the database to [`VERSION`] (see the module doc); answers the version it
/// found. Nothing is changed when a step fails: the transaction rolls back.
pub(super) async fn migrate(client: &mut Client) -> Result<i32, StoreError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS bavard_schema (version integer NOT NULL)").await?;
    let found: Option<i32> = tx.query_one("SELECT max(version) FROM bavard_schema", &[]).await?.try_get(0)?;
    let found = found.unwrap_or(0);
    if found > VERSION {
        return Err(StoreError::Database(format!(
            "the database was written by a newer Bavard (schema {found}, this one knows {VERSION}): upgrade Bavard"
        )));
    }
    if found < VERSION {
        for step in MIGRATIONS.iter().skip(usize::try_from(found).unwrap_or(0)) {
            tx.batch_execute(step).await?;
        }
        tx.execute("DELETE FROM bavard_schema", &[]).await?;
        tx.execute("INSERT INTO bavard_schema (version) VALUES ($1)", &[&VERSION]).await?;
        tracing::info!(from = found, to = VERSION, "migrated the PostgreSQL schema");
    }
    tx.commit().await?;
    Ok(found)
}
