//! A store in memory, for tests that drive the hub and sessions in paused time: no
//! threads and no files, so the clock only moves when every task waits.
//! Same contract as the SQLite store (seqs gap-free per room, keys deduplicated,
//! commits reported in order before the append resolves), none of its durability.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use bavard_protocol::{Message, Role, RoomKind, RoomName, Timestamp};
use futures_util::future::BoxFuture;
use tokio::sync::{oneshot, Mutex};

use super::{
    Appended, AuditEntry, AuditRecord, ChangeMessage, ChangeRefused, Changed, MessageStore, NewMessage, NewRoom, Page,
    PageQuery, PendingAppend, RoomRecord, RuleChange, Sanction, StoreError, StoredRules, Viewer,
};
use crate::hub::CommitSender;

/// See the module docs.
pub struct MemoryStore {
    /// Held across the report on the commit stream, so commits are reported in order.
    state: Mutex<State>,
    commits: CommitSender,
}

#[derive(Default)]
struct State {
    rooms: HashMap<RoomName, Vec<Message>>,
    records: HashMap<RoomName, RoomRecord>,
    /// Each room's roles, by user (sorted, as the SQLite store reads them).
    roles: HashMap<RoomName, BTreeMap<String, Role>>,
    /// Each room's sanctions, by user and kind.
    sanctions: HashMap<RoomName, BTreeMap<(String, &'static str), Sanction>>,
    /// Every audit entry, oldest first; a record's id is its index + 1.
    audit: Vec<(RoomName, AuditEntry)>,
    /// (room, user id, key) of every keyed message.
    keys: HashMap<(RoomName, String, String), Appended>,
    closed: bool,
}

impl MemoryStore {
    /// An empty store reporting its commits on `commits`.
    pub fn new(commits: CommitSender) -> Self {
        Self { state: Mutex::new(State::default()), commits }
    }
}

/// A room's record as a first message or a first change makes it: public, no topic.
fn new_record(room: &RoomName, now: Timestamp) -> RoomRecord {
    RoomRecord {
        room: room.clone(),
        topic: String::new(),
        kind: RoomKind::Public,
        created: now,
        last_seq: 0,
        last_ts: now,
        slow_mode_secs: 0,
        frozen: false,
    }
}

impl MessageStore for MemoryStore {
    fn append(&self, new: NewMessage) -> BoxFuture<'_, Result<PendingAppend, StoreError>> {
        Box::pin(async move {
            let mut state = self.state.lock().await;
            if state.closed {
                return Err(StoreError::Closed);
            }
            let key = new.key.clone().map(|key| (new.room.clone(), new.from.id.clone(), key));
            if let Some(appended) = key.as_ref().and_then(|key| state.keys.get(key)) {
                let duplicate = Appended { duplicate: true, ..*appended };
                return Ok(Box::pin(async move { Ok(duplicate) }) as PendingAppend);
            }
            let messages = state.rooms.entry(new.room.clone()).or_default();
            let NewMessage { room, from, text, key: message_key, reply_to, streaming } = new;
            let seq = messages.len() as u64 + 1;
            let message = Message {
                key: message_key,
                reply_to,
                streaming,
                ..Message::new(room, seq, Timestamp::now(), from, text)
            };
            let appended = Appended { seq: message.seq, ts: message.ts, duplicate: false };
            messages.push(message.clone());
            let record =
                state.records.entry(message.room.clone()).or_insert_with(|| new_record(&message.room, message.ts));
            record.last_seq = message.seq;
            record.last_ts = message.ts;
            if let Some(key) = key {
                state.keys.insert(key, appended);
            }
            if !self.commits.committed(vec![Arc::new(message)]).await {
                return Err(StoreError::Closed);
            }
            Ok(Box::pin(async move { Ok(appended) }) as PendingAppend)
        })
    }

    fn barrier(&self, room: RoomName) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let (done, processed) = oneshot::channel();
            {
                let state = self.state.lock().await;
                let last_seq = state.rooms.get(&room).map_or(0, |messages| messages.len() as u64);
                if !self.commits.barrier(room, last_seq, done).await {
                    return Err(StoreError::Closed);
                }
            }
            processed.await.map_err(|_| StoreError::Closed)
        })
    }

    fn page(&self, room: RoomName, query: PageQuery) -> BoxFuture<'_, Result<Page, StoreError>> {
        Box::pin(async move {
            let state = self.state.lock().await;
            let all = state.rooms.get(&room).map_or(&[][..], Vec::as_slice);
            let (page, has_more) = match query {
                PageQuery::Before { before, limit } => {
                    let end = before.map_or(all.len(), |b| (b.saturating_sub(1) as usize).min(all.len()));
                    let start = end.saturating_sub(limit as usize);
                    (&all[start..end], start > 0)
                }
                PageQuery::After { after, before, limit } => {
                    let start = (after as usize).min(all.len());
                    let end = before.map_or(all.len(), |b| (b.saturating_sub(1) as usize).min(all.len())).max(start);
                    let stop = end.min(start + limit as usize);
                    (&all[start..stop], stop < end)
                }
            };
            Ok(Page { messages: page.to_vec(), has_more })
        })
    }

    fn rooms(&self, limit: u32) -> BoxFuture<'_, Result<Vec<RoomRecord>, StoreError>> {
        Box::pin(async move {
            let state = self.state.lock().await;
            let mut rooms: Vec<RoomRecord> = state.records.values().cloned().collect();
            rooms.sort_by_key(|room| std::cmp::Reverse(room.last_ts));
            rooms.truncate(limit as usize);
            Ok(rooms)
        })
    }

    fn room(&self, room: RoomName) -> BoxFuture<'_, Result<Option<RoomRecord>, StoreError>> {
        Box::pin(async move { Ok(self.state.lock().await.records.get(&room).cloned()) })
    }

    fn create_room(&self, new: NewRoom, audit: AuditEntry) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            let mut state = self.state.lock().await;
            if state.records.contains_key(&new.room) {
                return Ok(false);
            }
            let NewRoom { room, kind, topic, owner, members: _ } = new;
            let record = RoomRecord { topic, kind, ..new_record(&room, Timestamp::now()) };
            state.records.insert(room.clone(), record);
            if let Some(owner) = owner {
                state.roles.entry(room.clone()).or_default().insert(owner, Role::Owner);
            }
            state.audit.push((room, audit));
            Ok(true)
        })
    }

    fn change_room(
        &self,
        room: RoomName,
        changes: Vec<RuleChange>,
        audit: AuditEntry,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let mut state = self.state.lock().await;
            let state = &mut *state;
            let record = state.records.entry(room.clone()).or_insert_with(|| new_record(&room, Timestamp::now()));
            for change in changes {
                match change {
                    RuleChange::Kind(kind) => record.kind = kind,
                    RuleChange::Topic(topic) => record.topic = topic,
                    RuleChange::SlowMode(secs) => record.slow_mode_secs = secs,
                    RuleChange::Frozen(frozen) => record.frozen = frozen,
                    RuleChange::Role { user, role: Some(role) } => {
                        state.roles.entry(room.clone()).or_default().insert(user, role);
                    }
                    RuleChange::Role { user, role: None } => {
                        state.roles.entry(room.clone()).or_default().remove(&user);
                    }
                    RuleChange::Sanction(sanction) => {
                        let key = (sanction.user.clone(), sanction.kind.as_str());
                        state.sanctions.entry(room.clone()).or_default().insert(key, sanction);
                    }
                    RuleChange::Lift { user, kind } => {
                        state.sanctions.entry(room.clone()).or_default().remove(&(user, kind.as_str()));
                    }
                }
            }
            state.audit.push((room, audit));
            Ok(())
        })
    }

    fn rules(&self, room: RoomName) -> BoxFuture<'_, Result<Option<StoredRules>, StoreError>> {
        Box::pin(async move {
            let state = self.state.lock().await;
            let Some(record) = state.records.get(&room) else { return Ok(None) };
            let now = Timestamp::now();
            let roles = state
                .roles
                .get(&room)
                .map_or_else(Vec::new, |roles| roles.iter().map(|(user, role)| (user.clone(), *role)).collect());
            let sanctions = state.sanctions.get(&room).map_or_else(Vec::new, |sanctions| {
                sanctions.values().filter(|s| s.until.is_none_or(|until| until > now)).cloned().collect()
            });
            Ok(Some(StoredRules {
                kind: record.kind,
                slow_mode_secs: record.slow_mode_secs,
                frozen: record.frozen,
                roles,
                sanctions,
            }))
        })
    }

    fn audit(
        &self,
        room: RoomName,
        before: Option<u64>,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<AuditRecord>, StoreError>> {
        Box::pin(async move {
            let state = self.state.lock().await;
            let end = before.map_or(state.audit.len(), |b| (b.saturating_sub(1) as usize).min(state.audit.len()));
            Ok(state.audit[..end]
                .iter()
                .enumerate()
                .rev()
                .filter(|(_, (of, _))| *of == room)
                .take(limit as usize)
                .map(|(index, (_, entry))| AuditRecord { id: index as u64 + 1, entry: entry.clone() })
                .collect())
        })
    }

    // The chat features are tested against the real stores; this double has none.
    fn change_message(&self, _: ChangeMessage) -> BoxFuture<'_, Result<Result<Changed, ChangeRefused>, StoreError>> {
        Box::pin(async { Err(StoreError::Database("the memory store keeps no changes".into())) })
    }

    fn annotate(
        &self,
        _: RoomName,
        messages: Vec<Message>,
        _: Viewer,
    ) -> BoxFuture<'_, Result<Vec<Message>, StoreError>> {
        Box::pin(async { Ok(messages) })
    }

    fn messages_at(&self, room: RoomName, seqs: Vec<u64>) -> BoxFuture<'_, Result<Vec<Message>, StoreError>> {
        Box::pin(async move {
            let state = self.state.lock().await;
            let stored = state.rooms.get(&room).cloned().unwrap_or_default();
            Ok(seqs.iter().filter_map(|seq| stored.get((*seq as usize).checked_sub(1)?).cloned()).collect())
        })
    }

    fn room_rev(&self, _: RoomName) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async { Ok(0) })
    }

    fn changed_since(
        &self,
        _: RoomName,
        _: u64,
        _: u64,
        _: u32,
    ) -> BoxFuture<'_, Result<(Vec<u64>, bool), StoreError>> {
        Box::pin(async { Ok((Vec::new(), false)) })
    }

    fn thread(&self, _: RoomName, _: u64, _: PageQuery) -> BoxFuture<'_, Result<(Vec<u64>, bool), StoreError>> {
        Box::pin(async { Ok((Vec::new(), false)) })
    }

    fn search(&self, _: RoomName, _: String, _: u32, _: u32) -> BoxFuture<'_, Result<(Vec<u64>, bool), StoreError>> {
        Box::pin(async { Ok((Vec::new(), false)) })
    }

    fn mark_read(&self, _: RoomName, _: String, seq: u64) -> BoxFuture<'_, Result<(u64, bool), StoreError>> {
        Box::pin(async move { Ok((seq, true)) })
    }

    fn unread(&self, _: RoomName, _: String) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async { Ok(0) })
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move { self.state.lock().await.closed = true })
    }
}

#[cfg(test)]
mod tests {
    use bavard_protocol::User;

    use super::*;
    use crate::store::SanctionKind;

    fn entry(action: &str) -> AuditEntry {
        let actor = User { id: "u_mod".into(), name: "u_mod".into() };
        AuditEntry { ts: Timestamp(1), actor, action: action.into(), target: None, reason: None, detail: None }
    }

    #[tokio::test]
    async fn rules_and_audit_behave_as_in_the_sqlite_store() {
        let (commits, _unread) = crate::hub::commit_stream(1);
        let store = MemoryStore::new(commits);
        let team = RoomName::new("team").unwrap();
        let new = NewRoom {
            room: team.clone(),
            kind: RoomKind::Private,
            topic: "t".into(),
            owner: Some("u_1".into()),
            members: Vec::new(),
        };
        assert!(store.create_room(new.clone(), entry("create")).await.unwrap());
        assert!(!store.create_room(new, entry("again")).await.unwrap());
        let past = Timestamp(Timestamp::now().millis() - 1);
        let ban = Sanction { user: "u_2".into(), kind: SanctionKind::Ban, until: None, reason: None };
        let changes = vec![
            RuleChange::SlowMode(3),
            RuleChange::Frozen(true),
            RuleChange::Role { user: "u_0".into(), role: Some(Role::Member) },
            RuleChange::Sanction(ban.clone()),
            RuleChange::Sanction(Sanction {
                user: "u_3".into(),
                kind: SanctionKind::Mute,
                until: Some(past),
                reason: None,
            }),
            RuleChange::Sanction(Sanction { user: "u_4".into(), ..ban.clone() }),
            RuleChange::Lift { user: "u_4".into(), kind: SanctionKind::Ban },
        ];
        store.change_room(team.clone(), changes, entry("setup")).await.unwrap();
        let rules = store.rules(team.clone()).await.unwrap().unwrap();
        assert_eq!((rules.kind, rules.slow_mode_secs, rules.frozen), (RoomKind::Private, 3, true));
        assert_eq!(rules.roles, [("u_0".to_owned(), Role::Member), ("u_1".to_owned(), Role::Owner)]);
        assert_eq!(rules.sanctions, [ban]);
        let lobby = RoomName::new("lobby").unwrap();
        assert_eq!(store.rules(lobby.clone()).await.unwrap(), None);
        store.change_room(lobby.clone(), vec![RuleChange::Topic("hi".into())], entry("topic")).await.unwrap();
        assert_eq!(store.room(lobby.clone()).await.unwrap().unwrap().topic, "hi");
        let log = store.audit(team.clone(), None, 10).await.unwrap();
        let actions: Vec<_> = log.iter().map(|r| r.entry.action.as_str()).collect();
        assert_eq!(actions, ["setup", "create"]);
        let older = store.audit(team, Some(log[0].id), 10).await.unwrap();
        assert_eq!(older, log[1..]);
        assert_eq!(store.audit(lobby, None, 10).await.unwrap().len(), 1);
    }
}
