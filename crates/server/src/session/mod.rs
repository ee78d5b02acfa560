//! One connection's life, for both protocols: the read loop, limits, the bounded
//! outbound queue drained in batches with one flush, heartbeat, and the close code
//! that ends it.
//!
//! The session is generic over any `Sink`/`Stream` of WebSocket messages, so it runs
//! the same over a real socket or an in-memory pair. It talks to rooms only through
//! the [`Hub`]; it never touches the store. It counts what only it sees (connections,
//! messages accepted, rate-limited frames, 4008 closes) in the metrics that come with
//! its [`SessionSettings`]: shared by every session already, so counting adds no
//! memory per connection.

mod echo;
mod json;
mod manage;
mod plain;
#[cfg(test)]
mod tests;

use std::{collections::VecDeque, future::Future, sync::Arc, task::Poll, time::Duration};

use bavard_protocol::{close_code, encode_error, ErrorBody, Limits, RequestId, RoomName};
use bavard_ws::{CloseFrame, Error as WsError, Message as WsMessage};
use futures_util::{future::BoxFuture, stream::FuturesOrdered, FutureExt, Sink, SinkExt, Stream, StreamExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{
    auth::{jwt::JwtVerifier, Identity},
    hub::{Frame, Hub, HubError, Outbox, Posted, Protocol, Subscriber, Taken},
    metrics::Metrics,
    rate::RateLimiter,
};

/// What a session runs over: a WebSocket as a sink and stream of messages (a real
/// socket, or an in-memory pair in the tests).
pub trait Socket: Sink<WsMessage, Error = WsError> + Stream<Item = Result<WsMessage, WsError>> + Unpin {}

impl<S> Socket for S where S: Sink<WsMessage, Error = WsError> + Stream<Item = Result<WsMessage, WsError>> + Unpin {}

/// Limits and timings shared by every session.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    /// Server name announced in `welcome`.
    pub server_name: String,
    /// Frame and text limits.
    pub limits: Limits,
    /// Capacity of each connection's outbound queue, in frames.
    pub outbox_frames: usize,
    /// Capacity of each connection's outbound queue, in bytes of frame text.
    pub outbox_bytes: usize,
    /// Average frames per second a client may send (0: unlimited).
    pub rate_per_second: f64,
    /// Burst above the average.
    pub rate_burst: u32,
    /// Rejected frames in a row before closing with 4029.
    pub rate_strikes: u32,
    /// Silence after which the server pings.
    pub heartbeat: Duration,
    /// Silence after which the connection is closed as dead.
    pub idle_timeout: Duration,
    /// Sends awaiting their commit before the session stops reading.
    pub max_pending_sends: usize,
    /// How long a shutting-down session waits for its pending sends.
    pub shutdown_grace: Duration,
    /// Where sessions count connections, accepted messages, rate-limited frames and
    /// slow-consumer closes.
    pub metrics: Arc<Metrics>,
    /// Most rooms one connection may have joined at once.
    pub max_rooms: usize,
    /// Verifies the tokens of `refresh` (None: no JWT key configured).
    pub jwt: Option<Arc<JwtVerifier>>,
}

pub use echo::run_echo;

/// Why a session ended. [`End::close_frame`] is the one place that maps it to a code.
#[derive(Debug)]
pub enum End {
    /// The client sent a close frame.
    ClientClosed,
    /// The connection broke without a close handshake.
    Disconnected,
    /// The server is shutting down.
    Shutdown,
    /// The outbound queue overflowed or a write stalled.
    SlowConsumer,
    /// Too many frames were rejected by the rate limit.
    RateLimited,
    /// A text exceeded the limits (frames over the limit are [`End::Framing`]).
    TooBig(String),
    /// A binary frame on a text protocol.
    Binary,
    /// Nothing was heard from the client for too long.
    IdleTimeout,
    /// The connection's token expired without a `refresh`.
    TokenExpired,
    /// A moderator took a plain-text client out of its room, or the room refused its
    /// text: the reason is the close frame's.
    Policy(String),
    /// The client's frames broke the WebSocket rules: the code is the framing's own
    /// ([`WsError::close_code`]): 1002 protocol, 1007 invalid UTF-8, 1009 too big.
    Framing(u16, String),
}

impl End {
    /// The close frame to send, if the connection can still carry one.
    pub fn close_frame(&self) -> Option<CloseFrame> {
        let (code, reason) = match self {
            Self::ClientClosed | Self::Disconnected => return None,
            Self::Shutdown => (close_code::GOING_AWAY, "server shutting down".to_owned()),
            Self::SlowConsumer => {
                (close_code::SLOW_CONSUMER, "slow consumer: reconnect and join with since".to_owned())
            }
            Self::RateLimited => (close_code::RATE_LIMITED, "rate limit exceeded repeatedly".to_owned()),
            Self::TooBig(reason) => (close_code::TOO_BIG, reason.clone()),
            Self::Binary => (close_code::UNSUPPORTED_DATA, "binary frames are not supported; send text".to_owned()),
            Self::IdleTimeout => (close_code::NORMAL, "idle timeout".to_owned()),
            Self::TokenExpired => (close_code::POLICY, "token expired: reconnect with a fresh token".to_owned()),
            Self::Policy(reason) => (close_code::POLICY, reason.clone()),
            Self::Framing(code, reason) => (*code, reason.clone()),
        };
        Some(CloseFrame { code, reason })
    }

    /// Why a framing error ends the session. The close code is the framing's own
    /// ([`WsError::close_code`], the mapping the Autobahn run checks); the session
    /// only words the reason of an oversized frame its own way.
    fn from_ws_error(error: WsError) -> Self {
        let Some(code) = error.close_code() else { return Self::Disconnected };
        match error {
            WsError::TooBig { size, limit } => {
                Self::Framing(code, format!("frame of {size} bytes; the limit is {limit}"))
            }
            error => Self::Framing(code, error.close_reason()),
        }
    }
}

/// Everything a new session needs besides its socket.
pub struct SessionContext {
    /// The rooms.
    pub hub: Arc<Hub>,
    /// Shared limits and timings.
    pub settings: Arc<SessionSettings>,
    /// Fires when the server starts shutting down.
    pub shutdown: CancellationToken,
    /// Who is connecting.
    pub identity: Identity,
}

/// A send awaiting its commit, with what its reply needs.
struct SentOutcome {
    id: Option<RequestId>,
    room: RoomName,
    outcome: Result<Posted, HubError>,
}

/// The rooms a connection has joined: a few, so a small vector beats a hash set's
/// minimum allocation (this is memory every idle connection pays).
#[derive(Default)]
struct JoinedRooms(Vec<RoomName>);

impl JoinedRooms {
    fn insert(&mut self, room: RoomName) {
        if !self.0.contains(&room) {
            self.0.push(room);
        }
    }

    /// Whether the room was joined.
    fn remove(&mut self, room: &RoomName) -> bool {
        let before = self.0.len();
        self.0.retain(|joined| joined != room);
        self.0.len() != before
    }

    fn drain(&mut self) -> std::vec::Drain<'_, RoomName> {
        self.0.drain(..)
    }

    /// The room joined first (a plain-text session's only room).
    fn first(&self) -> Option<&RoomName> {
        self.0.first()
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    /// Forgets the rooms `still_in` says the connection is no longer in (a moderator
    /// took it out).
    fn prune(&mut self, still_in: impl Fn(&RoomName) -> bool) {
        self.0.retain(|room| still_in(room));
    }
}

/// Sends waiting for their commit, in order. Allocated on the first send: a
/// `FuturesOrdered` allocates even when empty, and most connections mostly listen.
#[derive(Default)]
struct PendingSends(Option<FuturesOrdered<BoxFuture<'static, SentOutcome>>>);

impl PendingSends {
    fn push_back(&mut self, sent: BoxFuture<'static, SentOutcome>) {
        self.0.get_or_insert_with(FuturesOrdered::new).push_back(sent);
    }

    fn len(&self) -> usize {
        self.0.as_ref().map_or(0, FuturesOrdered::len)
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The next outcome if it is already known, without waiting.
    fn ready(&mut self) -> Option<SentOutcome> {
        self.0.as_mut().filter(|pending| !pending.is_empty())?.next().now_or_never().flatten()
    }

    /// The next outcome in order; never resolves while nothing is pending.
    async fn next(&mut self) -> Option<SentOutcome> {
        match self.0.as_mut() {
            Some(pending) if !pending.is_empty() => pending.next().await,
            _ => std::future::pending().await,
        }
    }
}

/// One connection's state.
struct Session<S> {
    socket: S,
    hub: Arc<Hub>,
    settings: Arc<SessionSettings>,
    me: Arc<Subscriber>,
    /// Rooms this connection has joined.
    rooms: JoinedRooms,
    rate: RateLimiter,
    /// Frames rejected by the rate limit in a row.
    strikes: u32,
    last_heard: Instant,
    /// Frames fed to the socket since the last flush.
    unflushed: bool,
    /// Sends waiting for their commit, in order.
    pending: PendingSends,
    /// Frames taken from the outbox, being written.
    outgoing: VecDeque<Frame>,
    shutdown: CancellationToken,
    /// Fires when the connection's token expires (None: no token). Boxed: most
    /// connections have none, and inline it would grow every session's future.
    expiry: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

/// Runs a JSON protocol connection to its end and closes it with the right code.
pub fn run_json<S>(socket: S, context: SessionContext) -> impl Future<Output = ()>
where
    S: Socket,
{
    run(socket, context, Protocol::Json, None)
}

/// Runs a plain-text connection in `room` to its end and closes it with the right code.
pub fn run_plain<S>(socket: S, context: SessionContext, room: RoomName) -> impl Future<Output = ()>
where
    S: Socket,
{
    run(socket, context, Protocol::Plain, Some(room))
}

/// Not an `async fn`: the session is built before the returned future, so the future
/// holds it once instead of once as a local and once in the block that runs it. That
/// future lives as long as the connection, so its size is memory per idle connection.
fn run<S>(socket: S, context: SessionContext, protocol: Protocol, room: Option<RoomName>) -> impl Future<Output = ()>
where
    S: Socket,
{
    let SessionContext { hub, settings, shutdown, identity } = context;
    let Identity { user, standing, expires } = identity;
    let outbox = Outbox::new(settings.outbox_frames, settings.outbox_bytes);
    let session_id = hub.next_session_id();
    let quota = hub.quota(&user.id);
    let me = Arc::new(Subscriber { session: session_id, user, standing, protocol, outbox, quota });
    // Debug level: at the default level nothing inside a session logs, and a recorded
    // span costs ~0.4 KiB per connection (measured with 10k idle connections).
    let span = tracing::debug_span!("session", id = session_id, user = %me.user.name, ?protocol);
    let mut session = Session {
        socket,
        rate: RateLimiter::new(settings.rate_per_second, settings.rate_burst),
        hub,
        settings,
        me,
        rooms: JoinedRooms::default(),
        strikes: 0,
        last_heard: Instant::now(),
        unflushed: false,
        pending: PendingSends::default(),
        outgoing: VecDeque::new(),
        shutdown,
        expiry: expires.map(|at| Box::pin(tokio::time::sleep_until(expiry_instant(at)))),
    };
    async move {
        tracing::debug!("connected");
        session.settings.metrics.connections(session.me.protocol).inc();
        let end = session.serve(room).await;
        Box::pin(session.finish(end)).await;
        session.settings.metrics.connections(session.me.protocol).dec();
    }
    .instrument(span)
}

impl<S> Session<S>
where
    S: Socket,
{
    /// Opens the session (a plain-text one in `plain_room`), then serves it until it ends.
    async fn serve(&mut self, plain_room: Option<RoomName>) -> End {
        let opened = match plain_room {
            None => Box::pin(self.json_open()).await,
            Some(room) => Box::pin(self.plain_open(room)).await,
        };
        if let Err(end) = opened {
            return end;
        }
        let heartbeat = self.settings.heartbeat.max(Duration::from_millis(10));
        let mut ticks = tokio::time::interval_at(Instant::now() + heartbeat, heartbeat);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let me = Arc::clone(&self.me);
        // One registration for the connection's life, not one per loop turn: every
        // session waits on the same token, and re-registering would contend on it.
        let shutdown = self.shutdown.clone();
        let mut shutting_down = std::pin::pin!(shutdown.cancelled());
        loop {
            // Acks already known join this turn's flush: a commit resolves a sender's
            // ack and queues its own message at once, and one write carries both.
            while let Some(sent) = self.pending.ready() {
                if let Err(end) = Box::pin(self.json_sent(sent)).await {
                    return end;
                }
            }
            // Everything queued is written, then flushed at once, before waiting again.
            // Writes may swallow the outbox's wakeups, so the loop only waits after
            // finding the outbox empty once the last write is done.
            // Decided before any await: a `Taken` held across one would grow every
            // session's future by its size.
            let frames = match me.outbox.take(&mut self.outgoing) {
                Taken::Overflowed => return End::SlowConsumer,
                Taken::Evicted(reason) => return End::Policy(reason),
                Taken::Frames => true,
                Taken::Empty => false,
            };
            let written = match frames {
                // Boxed like every rarer path: the session's future stays small while idle.
                true => Some(Box::pin(self.write_outgoing()).await),
                false if self.unflushed => Some(Box::pin(self.flush()).await),
                false => None,
            };
            match written {
                Some(Err(end)) => return end,
                Some(Ok(())) => continue,
                None => {}
            }
            let plain = me.protocol == Protocol::Plain;
            let room_for_more = self.pending.len() < self.settings.max_pending_sends;
            // Plain-text clients cannot be told about rate limits: they are slowed down
            // (their frames wait in the socket) instead.
            let throttled = plain && !self.rate.has_token();
            // Only a throttled turn pays for a timer (boxed: it is rare, and inline it
            // would grow every connection's future).
            let resume_at = throttled.then(|| Box::pin(tokio::time::sleep_until(self.rate.next_token_at())));
            let throttle = async move {
                match resume_at {
                    Some(sleep) => sleep.await,
                    None => std::future::pending().await,
                }
            };
            let result = tokio::select! {
                _ = &mut shutting_down => Err(Box::pin(self.shutting_down(plain)).await),
                _ = me.outbox.changed() => Ok(()),
                Some(sent) = self.pending.next() => Box::pin(self.json_sent(sent)).await,
                incoming = self.socket.next(), if room_for_more && !throttled => match incoming {
                    // Boxed: requests are rarer than deliveries, and their futures are large;
                    // inlined, they would make every idle connection's task that large.
                    Some(Ok(message)) => Box::pin(self.on_frame(message)).await,
                    Some(Err(error)) => Err(End::from_ws_error(error)),
                    None => Err(End::Disconnected),
                },
                _ = throttle, if throttled => Ok(()),
                _ = ticks.tick() => Box::pin(self.heartbeat()).await,
                _ = token_expired(&mut self.expiry) => Err(End::TokenExpired),
            };
            if let Err(end) = result {
                return end;
            }
        }
    }

    async fn on_frame(&mut self, message: WsMessage) -> Result<(), End> {
        self.last_heard = Instant::now();
        match message {
            WsMessage::Text(text) => match self.me.protocol {
                Protocol::Json => self.json_text(&text).await,
                Protocol::Plain => self.plain_text(&text).await,
            },
            WsMessage::Binary(_) => Err(End::Binary),
            WsMessage::Close(_) => Err(End::ClientClosed),
            WsMessage::Ping(_) | WsMessage::Pong(_) => Ok(()),
        }
    }

    /// Writes every frame taken from the outbox and flushes them at once.
    async fn write_outgoing(&mut self) -> Result<(), End> {
        let Self { socket, outgoing, me, settings, .. } = self;
        let write = async {
            while let Some(frame) = outgoing.pop_front() {
                socket.feed(WsMessage::Text(frame.into_text())).await?;
            }
            // The buffer came from the outbox with the frames; an idle session keeps none.
            *outgoing = VecDeque::new();
            socket.flush().await
        };
        self.unflushed = false;
        guard_write(write, &me.outbox, settings.idle_timeout).await
    }

    /// Queues a frame in the socket's write buffer; the loop flushes before waiting again.
    async fn feed(&mut self, message: WsMessage) -> Result<(), End> {
        self.unflushed = true;
        let fed = self.socket.feed(message);
        guard_write(fed, &self.me.outbox, self.settings.idle_timeout).await
    }

    async fn feed_text(&mut self, text: String) -> Result<(), End> {
        self.feed(WsMessage::Text(text.into())).await
    }

    async fn flush(&mut self) -> Result<(), End> {
        self.unflushed = false;
        let flushed = self.socket.flush();
        guard_write(flushed, &self.me.outbox, self.settings.idle_timeout).await
    }

    async fn feed_error(&mut self, id: Option<&RequestId>, error: &ErrorBody) -> Result<(), End> {
        self.feed_text(encode_error(id, error)).await
    }

    async fn heartbeat(&mut self) -> Result<(), End> {
        let silent = self.last_heard.elapsed();
        if silent >= self.settings.idle_timeout {
            return Err(End::IdleTimeout);
        }
        if silent >= self.settings.heartbeat {
            self.feed(WsMessage::Ping(Default::default())).await?;
        }
        Ok(())
    }

    /// Finishes what the client is owed before the server goes away.
    async fn shutting_down(&mut self, plain: bool) -> End {
        let grace = tokio::time::sleep(self.settings.shutdown_grace);
        tokio::pin!(grace);
        while !self.pending.is_empty() {
            tokio::select! {
                Some(sent) = self.pending.next() => {
                    if self.json_sent(sent).await.is_err() {
                        return End::Shutdown;
                    }
                }
                _ = &mut grace => break,
            }
        }
        if !plain {
            let _client_gone = self.feed_text(json::closing_event()).await;
        }
        End::Shutdown
    }

    /// Leaves every room, then closes the WebSocket properly: sends the close frame
    /// `end` calls for and reads (discarding) until the client answers or a short
    /// linger runs out. Dropping the socket while the client's frames are unread would
    /// send a TCP reset, and the client could lose the close frame that tells it why.
    async fn finish(&mut self, end: End) {
        // Long enough for a client that paused reading to get its close frame, short
        // enough that a dead one does not hold its buffers (or a shutdown) for long.
        let linger = if matches!(end, End::Shutdown) { Duration::from_secs(1) } else { Duration::from_secs(5) };
        if matches!(end, End::SlowConsumer) {
            self.settings.metrics.slow_consumer_closed();
        }
        self.hub.disconnect(&self.me, self.rooms.drain());
        tracing::debug!(?end, "session ended");
        close_socket(&mut self.socket, &end, linger).await;
    }
}

/// Sends the close frame `end` calls for (or the reply to the client's close, queued
/// when it was read), then reads and discards until the client answers or `linger`
/// runs out.
async fn close_socket<S: Socket>(socket: &mut S, end: &End, linger: Duration) {
    let close = async {
        let sent = match end.close_frame() {
            Some(frame) => socket.send(WsMessage::Close(Some(frame))).await,
            None => socket.flush().await,
        };
        if sent.is_ok() {
            while let Some(Ok(_)) = socket.next().await {}
        }
    };
    let _closed_or_late = tokio::time::timeout(linger, close).await;
}

/// When a token expiring at `unix_secs` (seconds since the Unix epoch) expires, on the
/// runtime's clock.
fn expiry_instant(unix_secs: u64) -> Instant {
    let now_unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let left = Duration::from_secs(unix_secs).saturating_sub(now_unix);
    Instant::now() + left
}

/// Resolves when the token expires; never without one. A `poll_fn` rather than an
/// `async fn`: it holds nothing but the reference, and it lives in every session's
/// future.
fn token_expired(expiry: &mut Option<std::pin::Pin<Box<tokio::time::Sleep>>>) -> impl Future<Output = ()> + '_ {
    std::future::poll_fn(move |cx| match expiry {
        Some(sleep) => sleep.as_mut().poll(cx),
        None => Poll::Pending,
    })
}

/// Runs a socket write unless the session overflows or the write stalls longer than
/// `limit` (a client that stopped reading).
async fn guard_write(
    write: impl Future<Output = Result<(), WsError>>,
    outbox: &Outbox,
    limit: Duration,
) -> Result<(), End> {
    let mut write = std::pin::pin!(write);
    // Most writes finish at once: only one that waits pays for a stall timer.
    let first = std::future::poll_fn(|cx| Poll::Ready(write.as_mut().poll(cx))).await;
    if let Poll::Ready(written) = first {
        return written.map_err(|_| End::Disconnected);
    }
    // Boxed: the timer and the outbox wait would otherwise sit in every session's future.
    Box::pin(async move {
        let mut stalled = std::pin::pin!(tokio::time::sleep(limit));
        loop {
            tokio::select! {
                written = &mut write => return written.map_err(|_| End::Disconnected),
                _ = outbox.changed() => {
                    // New frames wait for the next round; only an overflow ends the write.
                    if outbox.overflowed() {
                        return Err(End::SlowConsumer);
                    }
                }
                _ = &mut stalled => return Err(End::SlowConsumer),
            }
        }
    })
    .await
}
