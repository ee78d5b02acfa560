//! Rooms' rules (kind, topic, slow mode, freeze, roles, sanctions) and their audit log:
//! the writes (each one transaction with its audit entry) and the reads, all on pool
//! connections. They need no place in the writer's order: an append only ever touches
//! a room's `last_seq` and `last_ts`, and the row lock orders it against a change.

use bavard_protocol::{Role, RoomName, Timestamp, User};
use tokio_postgres::{Client, Transaction};

use crate::store::{AuditEntry, AuditRecord, NewRoom, RuleChange, Sanction, StoreError, StoredRules};

/// Records `room` and, when it was new, its owner and `audit`, in one transaction;
/// answers whether it was new.
pub(super) async fn create_room(client: &mut Client, room: &NewRoom, audit: &AuditEntry) -> Result<bool, StoreError> {
    let tx = client.transaction().await?;
    let created = tx
        .execute(
            "INSERT INTO rooms (name, kind, topic, created_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (name) DO NOTHING",
            &[&room.room.as_str(), &room.kind.as_str(), &room.topic, &Timestamp::now().millis()],
        )
        .await?
        > 0;
    if created {
        if let Some(owner) = &room.owner {
            set_role(&tx, &room.room, owner, Role::Owner).await?;
        }
        for member in &room.members {
            set_role(&tx, &room.room, member, Role::Member).await?;
        }
        insert_audit(&tx, &room.room, audit).await?;
    }
    tx.commit().await?;
    Ok(created)
}

/// Applies `changes` to `room` in order (giving it a row first if it has none), and
/// appends `audit` to its log, in one transaction.
pub(super) async fn change_room(
    client: &mut Client,
    room: &RoomName,
    changes: &[RuleChange],
    audit: &AuditEntry,
) -> Result<(), StoreError> {
    let tx = client.transaction().await?;
    let name = room.as_str();
    tx.execute(
        "INSERT INTO rooms (name, created_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        &[&name, &Timestamp::now().millis()],
    )
    .await?;
    for change in changes {
        match change {
            RuleChange::Kind(kind) => {
                tx.execute("UPDATE rooms SET kind = $2 WHERE name = $1", &[&name, &kind.as_str()]).await?
            }
            RuleChange::Topic(topic) => {
                tx.execute("UPDATE rooms SET topic = $2 WHERE name = $1", &[&name, topic]).await?
            }
            RuleChange::SlowMode(secs) => {
                // Stored as integer: a slow mode beyond i32::MAX seconds is the same as i32::MAX.
                let secs = i32::try_from(*secs).unwrap_or(i32::MAX);
                tx.execute("UPDATE rooms SET slow_mode_secs = $2 WHERE name = $1", &[&name, &secs]).await?
            }
            RuleChange::Frozen(frozen) => {
                tx.execute("UPDATE rooms SET frozen = $2 WHERE name = $1", &[&name, frozen]).await?
            }
            RuleChange::Role { user, role: Some(role) } => set_role(&tx, room, user, *role).await?,
            RuleChange::Role { user, role: None } => {
                tx.execute("DELETE FROM room_roles WHERE room = $1 AND user_id = $2", &[&name, user]).await?
            }
            RuleChange::Sanction(Sanction { user, kind, until, reason }) => {
                tx.execute(
                    "INSERT INTO sanctions (room, user_id, kind, until, reason) VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (room, user_id, kind) DO UPDATE SET until = EXCLUDED.until, reason = EXCLUDED.reason",
                    &[&name, user, &kind.as_str(), &until.map(Timestamp::millis), reason],
                )
                .await?
            }
            RuleChange::Lift { user, kind } => {
                tx.execute(
                    "DELETE FROM sanctions WHERE room = $1 AND user_id = $2 AND kind = $3",
                    &[&name, user, &kind.as_str()],
                )
                .await?
            }
        };
    }
    insert_audit(&tx, room, audit).await?;
    tx.commit().await?;
    Ok(())
}

async fn set_role(tx: &Transaction<'_>, room: &RoomName, user: &str, role: Role) -> Result<u64, StoreError> {
    Ok(tx
        .execute(
            "INSERT INTO room_roles (room, user_id, role) VALUES ($1, $2, $3)
             ON CONFLICT (room, user_id) DO UPDATE SET role = EXCLUDED.role",
            &[&room.as_str(), &user, &role.as_str()],
        )
        .await?)
}

async fn insert_audit(tx: &Transaction<'_>, room: &RoomName, entry: &AuditEntry) -> Result<(), StoreError> {
    let AuditEntry { ts, actor, action, target, reason, detail } = entry;
    tx.execute(
        "INSERT INTO audit (room, ts, actor_id, actor_name, action, target, reason, detail)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[&room.as_str(), &ts.millis(), &actor.id, &actor.name, action, target, reason, detail],
    )
    .await?;
    Ok(())
}

/// `room`'s rules, read in one snapshot (a repeatable-read transaction); None when it
/// has no row. Roles and sanctions come sorted by user (then kind, bytewise, as SQLite
/// sorts); sanctions that ended by `now` are left out, and so are rows with a role or
/// sanction kind this version does not know (a role it cannot grant, a sanction it
/// cannot enforce).
pub(super) async fn read_rules(
    client: &mut Client,
    room: &RoomName,
    now: Timestamp,
) -> Result<Option<StoredRules>, StoreError> {
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let name = room.as_str();
    let Some(row) = tx.query_opt("SELECT kind, slow_mode_secs, frozen FROM rooms WHERE name = $1", &[&name]).await?
    else {
        return Ok(None);
    };
    let slow_mode_secs = u32::try_from(row.try_get::<_, i32>(1)?).unwrap_or(0);
    let mut rules = StoredRules::from_row(row.try_get(0)?, slow_mode_secs, row.try_get(2)?);
    for row in tx
        .query("SELECT user_id, role FROM room_roles WHERE room = $1 ORDER BY user_id COLLATE \"C\"", &[&name])
        .await?
    {
        let (user, role): (String, String) = (row.try_get(0)?, row.try_get(1)?);
        rules.add_role_row(name, user, &role);
    }
    let rows = tx
        .query(
            "SELECT user_id, kind, until, reason FROM sanctions
             WHERE room = $1 AND (until IS NULL OR until > $2) ORDER BY user_id COLLATE \"C\", kind COLLATE \"C\"",
            &[&name, &now.millis()],
        )
        .await?;
    for row in rows {
        let (user, kind): (String, String) = (row.try_get(0)?, row.try_get(1)?);
        rules.add_sanction_row(name, user, &kind, row.try_get(2)?, row.try_get(3)?);
    }
    tx.commit().await?;
    Ok(Some(rules))
}

/// The newest `limit` audit entries of `room` with an id below `before`, newest first.
pub(super) async fn read_audit(
    client: &Client,
    room: &RoomName,
    before: Option<u64>,
    limit: u32,
) -> Result<Vec<AuditRecord>, StoreError> {
    let before = before.map_or(i64::MAX, |b| b.min(i64::MAX as u64) as i64);
    let rows = client
        .query(
            "SELECT id, ts, actor_id, actor_name, action, target, reason, detail FROM audit
             WHERE room = $1 AND id < $2 ORDER BY id DESC LIMIT $3",
            &[&room.as_str(), &before, &i64::from(limit)],
        )
        .await?;
    rows.iter()
        .map(|row| {
            Ok(AuditRecord {
                id: row.try_get::<_, i64>(0)? as u64,
                entry: AuditEntry {
                    ts: Timestamp(row.try_get(1)?),
                    actor: User { id: row.try_get(2)?, name: row.try_get(3)? },
                    action: row.try_get(4)?,
                    target: row.try_get(5)?,
                    reason: row.try_get(6)?,
                    detail: row.try_get(7)?,
                },
            })
        })
        .collect()
}
