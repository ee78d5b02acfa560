//! Rooms' rules (kind, topic, slow mode, freeze, roles, sanctions) and their audit log,
//! in the writer's file (`DB-log`): the writes, which only the writer thread runs (each
//! one transaction with its audit entry), and the reads, on the read pool's connections
//! (where that file is attached as `log`).

use bavard_protocol::{Role, RoomName, Timestamp, User};
use rusqlite::{params, Connection, OptionalExtension, Transaction};

use crate::store::{AuditEntry, AuditRecord, NewRoom, RuleChange, Sanction, StoreError, StoredRules};

/// Records `room` and, when it was new, its owner and `audit`, in one transaction;
/// answers whether it was new.
pub(super) fn create_room(conn: &mut Connection, room: &NewRoom, audit: &AuditEntry) -> Result<bool, StoreError> {
    let tx = conn.transaction()?;
    let created = tx
        .prepare_cached(
            "INSERT INTO rooms (name, kind, topic, created_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (name) DO NOTHING",
        )?
        .execute(params![room.room.as_str(), room.kind.as_str(), room.topic, Timestamp::now().millis()])?
        > 0;
    if created {
        if let Some(owner) = &room.owner {
            set_role(&tx, &room.room, owner, Role::Owner)?;
        }
        for member in &room.members {
            set_role(&tx, &room.room, member, Role::Member)?;
        }
        insert_audit(&tx, &room.room, audit)?;
    }
    tx.commit()?;
    Ok(created)
}

/// Applies `changes` to `room` in order (giving it a row first if it has none), and
/// appends `audit` to its log, in one transaction.
pub(super) fn change_room(
    conn: &mut Connection,
    room: &RoomName,
    changes: &[RuleChange],
    audit: &AuditEntry,
) -> Result<(), StoreError> {
    let tx = conn.transaction()?;
    let name = room.as_str();
    tx.prepare_cached("INSERT OR IGNORE INTO rooms (name, created_at) VALUES (?1, ?2)")?
        .execute(params![name, Timestamp::now().millis()])?;
    for change in changes {
        match change {
            RuleChange::Kind(kind) => tx
                .prepare_cached("UPDATE rooms SET kind = ?2 WHERE name = ?1")?
                .execute(params![name, kind.as_str()])?,
            RuleChange::Topic(topic) => {
                tx.prepare_cached("UPDATE rooms SET topic = ?2 WHERE name = ?1")?.execute(params![name, topic])?
            }
            RuleChange::SlowMode(secs) => tx
                .prepare_cached("UPDATE rooms SET slow_mode_secs = ?2 WHERE name = ?1")?
                .execute(params![name, secs])?,
            RuleChange::Frozen(frozen) => {
                tx.prepare_cached("UPDATE rooms SET frozen = ?2 WHERE name = ?1")?.execute(params![name, frozen])?
            }
            RuleChange::Role { user, role: Some(role) } => set_role(&tx, room, user, *role)?,
            RuleChange::Role { user, role: None } => tx
                .prepare_cached("DELETE FROM room_roles WHERE room = ?1 AND user_id = ?2")?
                .execute(params![name, user])?,
            RuleChange::Sanction(Sanction { user, kind, until, reason }) => tx
                .prepare_cached(
                    "INSERT INTO sanctions (room, user_id, kind, until, reason) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (room, user_id, kind) DO UPDATE SET until = excluded.until, reason = excluded.reason",
                )?
                .execute(params![name, user, kind.as_str(), until.map(Timestamp::millis), reason])?,
            RuleChange::Lift { user, kind } => tx
                .prepare_cached("DELETE FROM sanctions WHERE room = ?1 AND user_id = ?2 AND kind = ?3")?
                .execute(params![name, user, kind.as_str()])?,
        };
    }
    insert_audit(&tx, room, audit)?;
    tx.commit()?;
    Ok(())
}

fn set_role(tx: &Transaction<'_>, room: &RoomName, user: &str, role: Role) -> Result<usize, StoreError> {
    Ok(tx
        .prepare_cached(
            "INSERT INTO room_roles (room, user_id, role) VALUES (?1, ?2, ?3)
             ON CONFLICT (room, user_id) DO UPDATE SET role = excluded.role",
        )?
        .execute(params![room.as_str(), user, role.as_str()])?)
}

fn insert_audit(tx: &Transaction<'_>, room: &RoomName, entry: &AuditEntry) -> Result<(), StoreError> {
    let AuditEntry { ts, actor, action, target, reason, detail } = entry;
    tx.prepare_cached(
        "INSERT INTO audit (room, ts, actor_id, actor_name, action, target, reason, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![room.as_str(), ts.millis(), actor.id, actor.name, action, target, reason, detail])?;
    Ok(())
}

/// `room`'s rules, read in one snapshot; None when it has no row. Roles and sanctions
/// come sorted by user (then kind); sanctions that ended by `now` are left out, and so
/// are rows with a role or sanction kind this version does not know (a role it cannot
/// grant, a sanction it cannot enforce).
pub(super) fn read_rules(
    conn: &Connection,
    room: &RoomName,
    now: Timestamp,
) -> Result<Option<StoredRules>, StoreError> {
    let tx = conn.unchecked_transaction()?;
    let name = room.as_str();
    let Some(mut rules) = tx
        .prepare_cached("SELECT kind, slow_mode_secs, frozen FROM log.rooms WHERE name = ?1")?
        .query_row([name], |row| Ok(StoredRules::from_row(&row.get::<_, String>(0)?, row.get(1)?, row.get(2)?)))
        .optional()?
    else {
        return Ok(None);
    };
    let mut statement =
        tx.prepare_cached("SELECT user_id, role FROM log.room_roles WHERE room = ?1 ORDER BY user_id")?;
    for row in statement.query_map([name], |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?)))? {
        let (user, role) = row?;
        rules.add_role_row(name, user, &role);
    }
    let mut statement = tx.prepare_cached(
        "SELECT user_id, kind, until, reason FROM log.sanctions
         WHERE room = ?1 AND (until IS NULL OR until > ?2) ORDER BY user_id, kind",
    )?;
    let rows = statement.query_map(params![name, now.millis()], |row| {
        Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?, row.get::<_, Option<i64>>(2)?, row.get(3)?))
    })?;
    for row in rows {
        let (user, kind, until, reason) = row?;
        rules.add_sanction_row(name, user, &kind, until, reason);
    }
    Ok(Some(rules))
}

/// The newest `limit` audit entries of `room` with an id below `before`, newest first.
pub(super) fn read_audit(
    conn: &Connection,
    room: &RoomName,
    before: Option<u64>,
    limit: u32,
) -> Result<Vec<AuditRecord>, StoreError> {
    let before = before.map_or(i64::MAX, |b| b.min(i64::MAX as u64) as i64);
    let mut statement = conn.prepare_cached(
        "SELECT id, ts, actor_id, actor_name, action, target, reason, detail FROM log.audit
         WHERE room = ?1 AND id < ?2 ORDER BY id DESC LIMIT ?3",
    )?;
    let rows = statement.query_map(params![room.as_str(), before, i64::from(limit)], |row| {
        Ok(AuditRecord {
            id: row.get::<_, i64>(0)? as u64,
            entry: AuditEntry {
                ts: Timestamp(row.get(1)?),
                actor: User { id: row.get(2)?, name: row.get(3)? },
                action: row.get(4)?,
                target: row.get(5)?,
                reason: row.get(6)?,
                detail: row.get(7)?,
            },
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}
