//! A client that survives the network: reconnects with backoff, rejoins its rooms with
//! `since`, hands out each message exactly once in seq order, and retries sends with
//! the same idempotency key.

use std::{
    collections::{BTreeMap, VecDeque},
    time::Duration,
};

use bavard_protocol::{HistoryRequest, Message, RoomName, SendReply, ServerFrame};

use crate::{ClientError, Connection};

const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A reconnecting client; see the module docs.
pub struct Resilient {
    url: String,
    connection: Option<Connection>,
    /// Joined rooms and the last seq handed out for each.
    rooms: BTreeMap<RoomName, u64>,
    inbox: VecDeque<Message>,
    key_prefix: String,
    next_key: u64,
    /// Connection attempts that may fail in a row before giving up.
    max_attempts: u32,
}

fn is_connection_error(error: &ClientError) -> bool {
    matches!(error, ClientError::WebSocket(_) | ClientError::Closed { .. } | ClientError::Timeout(_))
}

impl Resilient {
    /// A client for `url` (e.g. `ws://127.0.0.1:8000/ws?name=alice`); connects lazily.
    pub fn new(url: impl Into<String>) -> Self {
        let key_prefix = format!("r{:x}", std::process::id() as u64 ^ nanos());
        Self {
            url: url.into(),
            connection: None,
            rooms: BTreeMap::new(),
            inbox: VecDeque::new(),
            key_prefix,
            next_key: 1,
            max_attempts: 100,
        }
    }

    /// Sets how many failed connection attempts in a row end with an error (default 100).
    pub fn set_max_attempts(&mut self, attempts: u32) {
        self.max_attempts = attempts.max(1);
    }

    /// Joins `room`; its stored messages from now on (and, after a reconnect, the ones
    /// missed meanwhile) come out of [`Resilient::next_message`].
    pub async fn join(&mut self, room: &RoomName) -> Result<(), ClientError> {
        self.rooms.entry(room.clone()).or_insert(0);
        loop {
            self.connected().await?;
            match self.rejoin(room).await {
                Err(e) if is_connection_error(&e) => self.connection = None,
                other => return other,
            }
        }
    }

    /// Sends `text` and waits for its ack, retrying across reconnects with one key.
    pub async fn send(&mut self, room: &RoomName, text: &str) -> Result<SendReply, ClientError> {
        let key = format!("{}-{}", self.key_prefix, self.next_key);
        self.next_key += 1;
        loop {
            let connection = self.connected().await?;
            match connection.send(room, text, Some(&key)).await {
                Err(e) if is_connection_error(&e) => self.connection = None,
                other => return other,
            }
        }
    }

    /// The next message of any joined room: each once, in seq order per room.
    pub async fn next_message(&mut self) -> Result<Message, ClientError> {
        loop {
            // Connecting first: a reconnect may recover missed messages into the inbox.
            self.connected().await?;
            if let Some(message) = self.inbox.pop_front() {
                return Ok(message);
            }
            let connection = self.connection.as_mut().ok_or(ClientError::Protocol("no connection".into()))?;
            match connection.next_event().await {
                Ok(ServerFrame::Message(message)) => self.accept(message),
                Ok(_) => {}
                Err(e) if is_connection_error(&e) => self.connection = None,
                Err(e) => return Err(e),
            }
        }
    }

    /// Keeps `message` if it is the next one of its room.
    fn accept(&mut self, message: Message) {
        if let Some(last) = self.rooms.get_mut(&message.room) {
            if message.seq > *last {
                *last = message.seq;
                self.inbox.push_back(message);
            }
        }
    }

    /// The live connection, reconnecting (and rejoining every room) if there is none.
    async fn connected(&mut self) -> Result<&mut Connection, ClientError> {
        let mut backoff = MIN_BACKOFF;
        let mut attempts = 0;
        while self.connection.is_none() {
            attempts += 1;
            match Connection::connect(&self.url).await {
                Ok(connection) => {
                    self.connection = Some(connection);
                    let rooms: Vec<RoomName> = self.rooms.keys().cloned().collect();
                    for room in rooms {
                        if let Err(e) = self.rejoin(&room).await {
                            self.connection = None;
                            if !is_connection_error(&e) {
                                return Err(e);
                            }
                            break;
                        }
                    }
                }
                Err(e) if attempts >= self.max_attempts => return Err(e),
                Err(e) => tracing::debug!(error = %e, "reconnect failed; retrying in {backoff:?}"),
            }
            if self.connection.is_none() {
                // Jitter (75-125 %) so that a fleet cut off at once does not come back
                // in lockstep and overflow the server's listen queue.
                tokio::time::sleep(backoff.mul_f64(0.75 + 0.5 * jitter())).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
        self.connection.as_mut().ok_or(ClientError::Protocol("no connection".into()))
    }

    /// Joins `room` on the current connection, recovering from the last seq seen and
    /// paging with `history` when the gap was larger than the server's recovery limit.
    async fn rejoin(&mut self, room: &RoomName) -> Result<(), ClientError> {
        let last = self.rooms.get(room).copied().unwrap_or(0);
        let since = (last > 0).then_some(last);
        let connection = self.connection.as_mut().ok_or(ClientError::Protocol("no connection".into()))?;
        let reply = connection.join(room, since).await?;
        let head = reply.seq;
        if since.is_none() {
            // A first join starts at the room's head: older messages are history, not news.
            if let Some(last) = self.rooms.get_mut(room) {
                *last = (*last).max(head);
            }
            return Ok(());
        }
        let mut recovered = reply.recovered.unwrap_or(true);
        let mut messages = reply.messages;
        loop {
            let newest = messages.last().map_or(last, |m| m.seq);
            for message in messages {
                self.accept(message);
            }
            if recovered {
                break;
            }
            let request =
                HistoryRequest { room: room.clone(), before: Some(head + 1), after: Some(newest), limit: Some(200) };
            let connection = self.connection.as_mut().ok_or(ClientError::Protocol("no connection".into()))?;
            let page = connection.history(request).await?;
            recovered = !page.has_more;
            messages = page.messages;
        }
        Ok(())
    }
}

fn nanos() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos() as u64)
}

/// A number in [0, 1) that differs between calls and processes (no cryptographic use).
fn jitter() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(nanos());
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}
