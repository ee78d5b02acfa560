//! A store in memory, for tests that drive the hub and sessions in paused time: no
//! threads and no files, so the clock only moves when every task waits.
//! Same contract as the SQLite store (seqs gap-free per room, keys deduplicated,
//! commits reported in order before the append resolves), none of its durability.

use std::{collections::HashMap, sync::Arc};

use bavard_protocol::{Message, RoomName, Timestamp};
use futures_util::future::BoxFuture;
use tokio::sync::{oneshot, Mutex};

use super::{Appended, MessageStore, NewMessage, Page, PageQuery, PendingAppend, RoomRecord, StoreError};
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
            let NewMessage { room, from, text, key: message_key, reply_to } = new;
            let message = Message {
                room,
                seq: messages.len() as u64 + 1,
                ts: Timestamp::now(),
                from,
                text,
                key: message_key,
                reply_to,
            };
            let appended = Appended { seq: message.seq, ts: message.ts, duplicate: false };
            messages.push(message.clone());
            let record = state.records.entry(message.room.clone()).or_insert_with(|| RoomRecord {
                room: message.room.clone(),
                topic: String::new(),
                kind: "public".to_owned(),
                created: message.ts,
                last_seq: 0,
                last_ts: message.ts,
            });
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

    fn create_room(&self, room: RoomName, topic: String) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            let mut state = self.state.lock().await;
            if state.records.contains_key(&room) {
                return Ok(false);
            }
            let now = Timestamp::now();
            let record = RoomRecord {
                room: room.clone(),
                topic,
                kind: "public".to_owned(),
                created: now,
                last_seq: 0,
                last_ts: now,
            };
            state.records.insert(room, record);
            Ok(true)
        })
    }

    fn set_topic(&self, room: RoomName, topic: String) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            match self.state.lock().await.records.get_mut(&room) {
                Some(record) => {
                    record.topic = topic;
                    Ok(true)
                }
                None => Ok(false),
            }
        })
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move { self.state.lock().await.closed = true })
    }
}
