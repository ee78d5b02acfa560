//! A client that survives the network: reconnects with jittered backoff, rejoins its
//! rooms with `since` (paging with `history` when the server could not return the whole
//! gap), hands out each message exactly once and in seq order per room, passes the
//! server's other events on, says when it lost and regained the connection, and retries
//! sends with the same idempotency key.

use std::{
    collections::{BTreeMap, VecDeque},
    time::Duration,
};

use bavard_protocol::{
    ErrorCode, HistoryRequest, JoinReply, JoinRequest, Message, Request, RoomName, SendReply, ServerFrame, Welcome,
};

use crate::{ClientError, Connection, TlsConfig};

const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Page size when recovering a gap with `history`.
const GAP_PAGE: u32 = 200;

/// What [`Resilient::next_event`] hands out, in the order it happened.
#[derive(Debug)]
pub enum Event {
    /// A message of a joined room: each once, in seq order per room, none skipped.
    Message(Message),
    /// Any other event from the server: presence, typing, occupancy, closing, an error
    /// event, or a frame type from a newer server. Replies are never events.
    Server(ServerFrame),
    /// The connection was lost (why: the error); the next call reconnects.
    Disconnected(ClientError),
    /// Reconnected: `room` is joined again, with `member_count` users online. The
    /// messages missed meanwhile come next.
    Rejoined {
        /// The room.
        room: RoomName,
        /// Users online in it, this client included.
        member_count: usize,
    },
    /// The server's history of `room` now ends at `seq`, below the last seq handed out:
    /// its database was replaced. Messages continue after `seq`.
    HistoryRestarted {
        /// The room.
        room: RoomName,
        /// The room's last seq on the server now.
        seq: u64,
    },
}

/// A reconnecting client; see the module docs.
pub struct Resilient {
    url: String,
    /// Whom `wss://` trusts; `None`: the Mozilla roots.
    tls: Option<TlsConfig>,
    connection: Option<Connection>,
    /// Joined rooms and the last seq handed out for each (the room's last seq when joined).
    rooms: BTreeMap<RoomName, u64>,
    inbox: VecDeque<Event>,
    key_prefix: String,
    next_key: u64,
    /// Connection attempts that may fail in a row before giving up.
    max_attempts: u32,
    /// Failed connection attempts in a row and the wait before the next one: kept here so
    /// that a call dropped while it waits (in a `select!`) does not restart the backoff.
    failures: u32,
    backoff: Duration,
    /// A `ping` was sent after a silence and nothing has arrived since.
    pinged: bool,
}

/// The connection is unusable: reconnect.
fn is_connection_lost(error: &ClientError) -> bool {
    matches!(error, ClientError::WebSocket(_) | ClientError::Closed { .. } | ClientError::Timeout(_))
}

/// Worth another connection attempt (as opposed to the server refusing for good: a bad
/// name, a foreign origin, a wrong URL).
fn is_transient(error: &ClientError) -> bool {
    match error {
        ClientError::Refused { status, .. } => *status >= 500 || *status == 429,
        ClientError::WebSocket(tokio_tungstenite::tungstenite::Error::Url(_)) => false,
        ClientError::WebSocket(_) | ClientError::Timeout(_) | ClientError::Protocol(_) => true,
        ClientError::Closed { code, .. } => !matches!(code, 1003 | 1008),
        ClientError::Server(body) => {
            matches!(body.code, ErrorCode::Internal | ErrorCode::Unavailable | ErrorCode::RateLimited)
        }
        ClientError::Tls(_) => false,
    }
}

/// Users online according to a join reply (servers before `member_count` listed them all).
fn online(reply: &JoinReply) -> usize {
    reply.member_count.max(reply.members.len())
}

impl Resilient {
    /// A client for `url` (e.g. `ws://127.0.0.1:8000/ws?name=alice`; [`crate::endpoint`]
    /// builds one); connects lazily.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            tls: None,
            connection: None,
            rooms: BTreeMap::new(),
            inbox: VecDeque::new(),
            key_prefix: format!("r{:016x}", random()),
            next_key: 1,
            max_attempts: 100,
            failures: 0,
            backoff: MIN_BACKOFF,
            pinged: false,
        }
    }

    /// Makes `wss://` connections trust whom `tls` trusts (e.g. [`TlsConfig::with_ca_file`]
    /// for a server with a self-signed certificate) instead of the Mozilla roots only.
    pub fn set_tls(&mut self, tls: TlsConfig) {
        self.tls = Some(tls);
    }

    /// Sets how many failed attempts in a row (connections, or sends refused for now)
    /// end with an error (default 100; 1: fail at once, e.g. for a first connection).
    pub fn set_max_attempts(&mut self, attempts: u32) {
        self.max_attempts = attempts.max(1);
    }

    /// The current connection's `welcome` (who the server says we are, its limits);
    /// `None` while disconnected.
    pub fn welcome(&self) -> Option<&Welcome> {
        self.connection.as_ref().map(Connection::welcome)
    }

    /// The last seq of `room` handed out (the room's last seq when it was joined, until
    /// a message comes); `None` if the room is not joined.
    pub fn last_seq(&self, room: &RoomName) -> Option<u64> {
        self.rooms.get(room).copied()
    }

    /// Joins `room`; its messages from now on (and, after a reconnect, the ones missed
    /// meanwhile) come out of [`Resilient::next_event`]. Returns the server's reply.
    pub async fn join(&mut self, room: &RoomName) -> Result<JoinReply, ClientError> {
        self.join_with_history(room, 0).await
    }

    /// Like [`Resilient::join`], and the reply's `messages` are the room's `earlier`
    /// latest messages (at most 200), oldest first: history, not events. Joining a room
    /// already joined recovers what came after the last seq handed out, as events.
    pub async fn join_with_history(&mut self, room: &RoomName, earlier: u32) -> Result<JoinReply, ClientError> {
        loop {
            let last = self.rooms.get(room).copied();
            let connection = self.connected().await?;
            let joined = match last {
                None => {
                    let request =
                        JoinRequest { room: room.clone(), since: None, limit: Some(earlier), since_rev: None };
                    let joined = connection.call::<JoinReply>(Request::Join(request)).await;
                    joined.inspect(|reply| {
                        self.rooms.insert(room.clone(), reply.seq);
                    })
                }
                Some(last) => recover(connection, room, last).await.map(|recovered| {
                    self.rooms.insert(room.clone(), recovered.last);
                    self.inbox.extend(recovered.events);
                    recovered.reply
                }),
            };
            match joined {
                Ok(reply) => return Ok(reply),
                Err(e) if is_connection_lost(&e) => self.lost(e)?,
                Err(e) => return Err(e),
            }
        }
    }

    /// Sends `text` and waits for its ack, retrying with one key across reconnects, and
    /// after a while when the server asks to slow down or failed. Other refusals (too
    /// long, not a member...) come back as [`ClientError::Server`]. Not cancel-safe: a
    /// send dropped half-way may or may not be stored.
    pub async fn send(&mut self, room: &RoomName, text: &str) -> Result<SendReply, ClientError> {
        let key = format!("{}-{}", self.key_prefix, self.next_key);
        self.next_key += 1;
        let mut refusals = 0;
        let mut wait = MIN_BACKOFF;
        loop {
            let connection = self.connected().await?;
            let error = match connection.send(room, text, Some(&key)).await {
                Ok(reply) => return Ok(reply),
                Err(e) if is_connection_lost(&e) => {
                    self.lost(e)?;
                    continue;
                }
                Err(e) => e,
            };
            let rejoin = match &error {
                ClientError::Server(body)
                    if matches!(body.code, ErrorCode::RateLimited | ErrorCode::Internal | ErrorCode::Unavailable) =>
                {
                    false
                }
                // The server does not count us in a room we joined: join again on a new connection.
                ClientError::Server(body) if body.code == ErrorCode::Forbidden && self.rooms.contains_key(room) => true,
                _ => return Err(error),
            };
            refusals += 1;
            if refusals >= self.max_attempts {
                return Err(error);
            }
            if rejoin {
                self.lose(error);
            } else {
                tokio::time::sleep(jittered(wait)).await;
                wait = (wait * 2).min(MAX_BACKOFF);
            }
        }
    }

    /// Any other request (moderation, the chat features, ops of newer servers) on the
    /// current connection, connecting first if needed: its typed result (a reply struct
    /// of `bavard_protocol`, or `serde_json::Value`) or the server's error. Events that
    /// arrive meanwhile wait for [`Resilient::next_event`]. Not retried: when the
    /// connection is lost before the answer, the error says so, the request may or may
    /// not have been done, and the next call reconnects.
    pub async fn call<T: serde::de::DeserializeOwned>(&mut self, request: Request) -> Result<T, ClientError> {
        let connection = self.connected().await?;
        match connection.call(request).await {
            Err(e) if is_connection_lost(&e) => {
                let said = e.to_string();
                self.lost(e)?;
                Err(ClientError::Closed {
                    code: 1006,
                    reason: format!("lost before the answer came ({said}): the request may or may not have been done"),
                })
            }
            other => other,
        }
    }

    /// The next event: messages of joined rooms (each once, in seq order per room), the
    /// server's other events, and this client's own news (connection lost, rooms
    /// rejoined). Reconnects as needed; after a silence it pings the server, and a
    /// second silence counts as a lost connection. Cancel-safe: dropping the future (in
    /// a `select!`) loses nothing, and the next call goes on where it was.
    pub async fn next_event(&mut self) -> Result<Event, ClientError> {
        loop {
            if let Some(event) = self.inbox.pop_front() {
                return Ok(event);
            }
            if self.connection.is_none() {
                // Reconnecting queues the rejoined rooms and what they recovered.
                self.connected().await?;
                continue;
            }
            let frame = self.connected().await?.next_event().await;
            match frame {
                Ok(frame) => {
                    self.pinged = false;
                    self.take(frame);
                }
                Err(ClientError::Timeout(_)) if !self.pinged => self.ping().await,
                Err(e) if is_connection_lost(&e) => self.lost(e)?,
                Err(e) => return Err(e),
            }
        }
    }

    /// The next message of any joined room: each once, in seq order per room (other
    /// events are skipped).
    pub async fn next_message(&mut self) -> Result<Message, ClientError> {
        loop {
            if let Event::Message(message) = self.next_event().await? {
                return Ok(message);
            }
        }
    }

    /// Closes the connection normally.
    pub async fn close(mut self) {
        if let Some(connection) = self.connection.take() {
            connection.close().await;
        }
    }

    /// Quiet for a while: asks the server whether it is still there.
    async fn ping(&mut self) {
        let Some(connection) = self.connection.as_mut() else { return };
        match connection.submit(Request::Ping).await {
            Ok(_) => self.pinged = true,
            Err(e) => self.lose(e),
        }
    }

    /// Queues what `frame` means for the caller.
    fn take(&mut self, frame: ServerFrame) {
        match frame {
            ServerFrame::Message(message) => self.accept(message),
            // Replies to requests nobody waits for any more (a ping's).
            ServerFrame::Reply(_) | ServerFrame::Welcome(_) => {}
            other => self.inbox.push_back(Event::Server(other)),
        }
    }

    /// Queues `message` if it is the next one of its room.
    fn accept(&mut self, message: Message) {
        let Some(last) = self.rooms.get_mut(&message.room) else { return };
        if message.seq <= *last {
            return;
        }
        if message.seq > *last + 1 {
            // Never expected (the server's order has no gaps), but never hand out a hole:
            // recover from the last seq handed out on a new connection.
            let problem = format!("room {} went from seq {} to {}", message.room, *last, message.seq);
            tracing::warn!("{problem}; recovering");
            self.lose(ClientError::Protocol(problem));
            return;
        }
        *last = message.seq;
        self.inbox.push_back(Event::Message(message));
    }

    /// Forgets a connection that failed: fine if coming back may help (the next call
    /// reconnects), the error itself if the server closed it for good (1003, 1008).
    fn lost(&mut self, error: ClientError) -> Result<(), ClientError> {
        if is_transient(&error) {
            self.lose(error);
            Ok(())
        } else {
            self.connection = None;
            self.pinged = false;
            Err(error)
        }
    }

    /// Forgets a broken connection, and says so.
    fn lose(&mut self, error: ClientError) {
        if self.connection.take().is_some() {
            self.inbox.push_back(Event::Disconnected(error));
        }
        self.pinged = false;
    }

    /// The live connection, reconnecting (and rejoining every room) if there is none.
    async fn connected(&mut self) -> Result<&mut Connection, ClientError> {
        while self.connection.is_none() {
            if self.failures > 0 {
                tokio::time::sleep(jittered(self.backoff)).await;
            }
            match self.open().await {
                Ok(()) => {
                    self.failures = 0;
                    self.backoff = MIN_BACKOFF;
                }
                Err(e) => {
                    if self.failures > 0 {
                        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                    }
                    self.failures += 1;
                    if self.failures >= self.max_attempts || !is_transient(&e) {
                        self.failures = 0;
                        self.backoff = MIN_BACKOFF;
                        return Err(e);
                    }
                    tracing::debug!(error = %e, "reconnect failed; retrying in about {:?}", self.backoff);
                }
            }
        }
        self.connection.as_mut().ok_or(ClientError::Protocol("no connection".into()))
    }

    /// Connects and joins every room again from its last seq. Nothing changes until all
    /// of it succeeded, so a failed or dropped attempt leaves the client as it was.
    async fn open(&mut self) -> Result<(), ClientError> {
        let mut connection = match &self.tls {
            Some(tls) => Connection::connect_with(&self.url, Some(tls)).await?,
            None => Connection::connect(&self.url).await?,
        };
        let mut recovered = Vec::with_capacity(self.rooms.len());
        for (room, &last) in &self.rooms {
            recovered.push((room.clone(), recover(&mut connection, room, last).await?));
        }
        for (room, recovered) in recovered {
            self.rooms.insert(room, recovered.last);
            self.inbox.extend(recovered.events);
        }
        self.connection = Some(connection);
        self.pinged = false;
        Ok(())
    }
}

/// What joining a room again brought back.
struct Recovered {
    /// The join reply, its messages moved into `events`.
    reply: JoinReply,
    /// The last seq in `events`.
    last: u64,
    events: Vec<Event>,
}

/// Joins `room` on `connection` with `since` = `last`, and pages the rest of the gap
/// with `history` when the join reply could not hold it all (the server's recovery limit).
async fn recover(connection: &mut Connection, room: &RoomName, mut last: u64) -> Result<Recovered, ClientError> {
    let request = JoinRequest { room: room.clone(), since: Some(last), limit: None, since_rev: None };
    let mut reply: JoinReply = connection.call(Request::Join(request)).await?;
    let head = reply.seq;
    let mut events = vec![Event::Rejoined { room: room.clone(), member_count: online(&reply) }];
    if head < last {
        events.push(Event::HistoryRestarted { room: room.clone(), seq: head });
        last = head;
    }
    let mut complete = reply.recovered.unwrap_or(true);
    let mut page = std::mem::take(&mut reply.messages);
    loop {
        let before = last;
        for message in page {
            if message.seq > last && message.seq <= head {
                last = message.seq;
                events.push(Event::Message(message));
            }
        }
        if complete || last >= head || last == before {
            break;
        }
        let request = HistoryRequest {
            room: room.clone(),
            after: Some(last),
            before: Some(head + 1),
            limit: Some(GAP_PAGE),
            thread: None,
        };
        let more = connection.history(request).await?;
        complete = !more.has_more;
        page = more.messages;
    }
    Ok(Recovered { reply, last, events })
}

/// `wait` give or take 25 %, so that a fleet cut off at once does not come back in
/// lockstep and overflow the server's listen queue.
fn jittered(wait: Duration) -> Duration {
    wait.mul_f64(0.75 + 0.5 * ((random() >> 11) as f64 / (1u64 << 53) as f64))
}

/// A number that differs between calls and processes (std seeds each `RandomState` from
/// the operating system); not for cryptography.
fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(nanos);
    hasher.write_u32(std::process::id());
    hasher.finish()
}
