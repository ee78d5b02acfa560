//! Each room's rules in memory, where the hub checks every join, read and write
//! without asking the store: a [`RoomGuard`] per room, loaded from the store the first
//! time the room is used and changed only after the store has committed the change
//! (write-through), one change at a time per room, so memory never runs ahead of disk
//! nor applies two changes in another order than the store did.
//!
//! A guard also holds what slow mode needs: when each member last sent.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard, RwLock},
    time::{Duration, Instant},
};

use bavard_protocol::{RoomName, Timestamp};

use crate::{
    auth::{RoomRules, Who},
    store::{MessageStore, StoreError, StoredRules},
};

/// One room's rules and slow-mode clock.
pub(super) struct RoomGuard {
    state: Mutex<GuardState>,
    /// Held across a change's store write and its application here.
    changing: tokio::sync::Mutex<()>,
}

struct GuardState {
    rules: RoomRules,
    /// When each member last sent, while the room has a slow mode.
    last_sent: HashMap<String, Instant>,
}

/// Why a write was refused.
pub(super) enum WriteRefusal {
    /// The rules forbid it.
    Forbidden(String),
    /// Slow mode: the member may write again after this long.
    SlowMode(Duration),
}

impl RoomGuard {
    fn new(room: &str, stored: Option<StoredRules>) -> Self {
        let state = GuardState { rules: RoomRules::of_room(room, stored), last_sent: HashMap::new() };
        Self { state: Mutex::new(state), changing: tokio::sync::Mutex::new(()) }
    }

    fn lock(&self) -> MutexGuard<'_, GuardState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads the rules.
    pub(super) fn read<T>(&self, look: impl FnOnce(&RoomRules) -> T) -> T {
        look(&self.lock().rules)
    }

    /// Changes the rules in memory (the store has committed the change).
    pub(super) fn update(&self, change: impl FnOnce(&mut RoomRules)) {
        let mut state = self.lock();
        change(&mut state.rules);
        if state.rules.slow_mode_secs == 0 {
            state.last_sent = HashMap::new();
        }
    }

    /// Serializes changes to this room (see the module docs).
    pub(super) async fn changing(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.changing.lock().await
    }

    /// Checks a write by `who` and, under slow mode, counts it.
    pub(super) fn check_write(&self, who: Who<'_>, room: &str) -> Result<(), WriteRefusal> {
        let mut state = self.lock();
        state.rules.check_write(who, room, Timestamp::now()).map_err(WriteRefusal::Forbidden)?;
        let slow = state.rules.slow_mode_secs;
        if slow == 0 || state.rules.is_moderator(who) {
            return Ok(());
        }
        let now = Instant::now();
        let interval = Duration::from_secs(u64::from(slow));
        if let Some(last) = state.last_sent.get(who.id) {
            let since = now.duration_since(*last);
            if since < interval {
                return Err(WriteRefusal::SlowMode(interval - since));
            }
        }
        if state.last_sent.len() >= 4 * 1024 {
            state.last_sent.retain(|_, last| now.duration_since(*last) < interval);
        }
        state.last_sent.insert(who.id.to_owned(), now);
        Ok(())
    }
}

/// Guards kept before the unused ones are dropped: joining or writing to ever new
/// room names must not grow memory without bound.
const MAX_GUARDS: usize = 65_536;

/// The guards of the rooms in use (a few hundred bytes per room).
#[derive(Default)]
pub(super) struct Guards {
    rooms: RwLock<HashMap<RoomName, Arc<RoomGuard>>>,
}

impl Guards {
    /// Forgets the room's rules (another node changed them): they are read again from
    /// the store on next use.
    pub(super) fn forget(&self, room: &RoomName) {
        self.rooms.write().unwrap_or_else(|p| p.into_inner()).remove(room);
    }

    /// The room's guard, loading its rules from the store the first time.
    pub(super) async fn get(&self, store: &dyn MessageStore, room: &RoomName) -> Result<Arc<RoomGuard>, StoreError> {
        if let Some(guard) = self.rooms.read().unwrap_or_else(|p| p.into_inner()).get(room) {
            return Ok(Arc::clone(guard));
        }
        let stored = store.rules(room.clone()).await?;
        let mut rooms = self.rooms.write().unwrap_or_else(|p| p.into_inner());
        if rooms.len() >= MAX_GUARDS {
            // A guard nobody holds is only a copy of what the store has (a slow mode's
            // clock aside): it is read again on next use. One being changed is held.
            rooms.retain(|_, guard| Arc::strong_count(guard) > 1);
        }
        // Another caller may have loaded it meanwhile: the first one loaded is kept, so
        // a change applied to it is never lost to a later, staler load.
        Ok(Arc::clone(rooms.entry(room.clone()).or_insert_with(|| Arc::new(RoomGuard::new(room.as_str(), stored)))))
    }
}
