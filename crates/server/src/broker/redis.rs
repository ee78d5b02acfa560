//! The cluster's Redis broker: nodes carry [`ClusterEvent`]s to each other over Redis
//! pub/sub, on the channel `{prefix}:events`, as [`encode`]d JSON.
//!
//! Two background tasks, spawned on the runtime that calls [`RedisBroker::connect`], own
//! the two Redis connections:
//!
//! - the publisher drains a bounded in-process queue ([`QUEUE_CAPACITY`] events) and
//!   sends what it holds as one pipeline of `PUBLISH`es, so [`Broker::publish`] never
//!   waits: while the queue is full or Redis is down, events are dropped and counted
//!   (logged at most once a second), and nodes fill the gaps from the store;
//! - the subscriber holds the pub/sub connection and fans what it hears out to every
//!   [`Broker::subscribe`] stream of this process through a broadcast channel (a stream
//!   that falls behind hears [`Heard::Reconnected`] and catches up from the store).
//!
//! When either connection breaks (or stops answering its keep-alive `PING`),
//! [`Broker::connected`] turns false and that task reconnects with jittered
//! exponential backoff (100 ms doubling up to 5 s). Once the subscriber has subscribed
//! again, every stream hears [`Heard::Reconnected`] (events published meanwhile were
//! missed). A broker unreachable at start is no error: the node starts disconnected,
//! serves its own clients, and connects in the background (then its streams hear
//! `Reconnected` too). Dropping the last clone of the [`RedisBroker`] stops both tasks.

use std::{
    future::Future,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use ::redis::{
    aio::{MultiplexedConnection, PubSubSink, PubSubStream},
    AsyncConnectionConfig, Client, RedisError, Value,
};
use futures_util::stream::{self, BoxStream, StreamExt};
use tokio::sync::{broadcast, mpsc, Notify};
use tokio_util::sync::{CancellationToken, DropGuard};

use super::{decode, encode, Broker, ClusterEvent, Heard};

/// How many events wait for the publisher at most; beyond that, events are dropped.
pub const QUEUE_CAPACITY: usize = 65_536;
/// How many events an in-process subscriber may fall behind before it hears
/// [`Heard::Reconnected`] instead of them.
const FANOUT_CAPACITY: usize = 8_192;
/// How many queued events the publisher sends in one pipeline at most.
const BATCH: usize = 256;
/// The first reconnection delay (before jitter), doubled after each failure.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// The longest reconnection delay (before jitter).
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How long opening a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long Redis may take to answer a command.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a connection may stay silent before it is checked with a `PING` (so a
/// dead link is found even when no event flows).
const KEEPALIVE: Duration = Duration::from_secs(2);

/// Why a [`RedisBroker`] cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The broker URL is not one Redis understands.
    #[error(
        "invalid Redis URL: {0} (expected redis://[user:password@]host[:port][/db] \
         or unix:///path/to/socket; TLS (rediss://) is not supported)"
    )]
    BadUrl(String),
}

/// A [`Broker`] over Redis pub/sub. Cheap to clone: clones share the connections, and
/// dropping the last one stops the background tasks.
#[derive(Debug, Clone)]
pub struct RedisBroker {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The publisher task's queue.
    queue: mpsc::Sender<ClusterEvent>,
    /// Where the subscriber task fans out what it hears.
    heard: broadcast::Sender<Heard>,
    health: Arc<Health>,
    /// Stops both tasks when the last clone goes.
    _stop: DropGuard,
}

/// What the tasks and the broker handles share.
#[derive(Debug)]
struct Health {
    publisher_up: AtomicBool,
    subscriber_up: AtomicBool,
    /// Events dropped since the start.
    dropped: AtomicU64,
    /// When a drop was last logged, in ms since `epoch` (`u64::MAX`: never).
    last_drop_log: AtomicU64,
    epoch: Instant,
    /// Told by the subscriber when its link broke: the publisher's is likely broken too,
    /// and an idle publisher would only find out at its next keep-alive.
    check_publisher: Notify,
}

impl Health {
    fn new() -> Self {
        Self {
            publisher_up: AtomicBool::new(false),
            subscriber_up: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
            last_drop_log: AtomicU64::new(u64::MAX),
            epoch: Instant::now(),
            check_publisher: Notify::new(),
        }
    }

    /// Counts `count` dropped events, logging at most once a second.
    fn drop_events(&self, count: u64, why: &'static str) {
        if count == 0 {
            return;
        }
        let total = self.dropped.fetch_add(count, Ordering::Relaxed).saturating_add(count);
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        let last = self.last_drop_log.load(Ordering::Relaxed);
        let due = last == u64::MAX || now.saturating_sub(last) >= 1_000;
        if due && self.last_drop_log.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            tracing::warn!(
                dropped_total = total,
                why,
                "the Redis broker dropped events; nodes fill the gaps from the store"
            );
        }
    }
}

impl RedisBroker {
    /// Connects to the Redis at `url` (`redis://[user:password@]host[:port][/db]` or
    /// `unix:///path`) and carries events on the channel `{channel_prefix}:events`.
    ///
    /// Fails only for a URL Redis does not understand. A Redis that cannot be reached
    /// now is no error: the broker starts disconnected ([`Broker::connected`] is false,
    /// and events published meanwhile are dropped) and keeps trying in the background;
    /// the first try waits a few seconds at most (a host that does not answer). Must be
    /// called within a tokio runtime, which runs the broker's tasks.
    pub async fn connect(url: &str, channel_prefix: &str) -> Result<RedisBroker, BrokerError> {
        let client = Client::open(url).map_err(|e| BrokerError::BadUrl(e.to_string()))?;
        let channel = format!("{channel_prefix}:events");
        let health = Arc::new(Health::new());
        let stop = CancellationToken::new();
        let (queue, queued) = mpsc::channel(QUEUE_CAPACITY);
        let (heard, _) = broadcast::channel(FANOUT_CAPACITY);

        // A first attempt at both links, so that a reachable Redis is in use on return.
        let (publisher, subscriber) = tokio::join!(open_publisher(&client), open_subscriber(&client, &channel));
        let publisher = publisher
            .map_err(|e| tracing::warn!(error = %e, "cannot reach Redis to publish; this node starts cut off from the others and keeps trying"))
            .ok();
        let subscriber = subscriber
            .map_err(|e| tracing::warn!(error = %e, "cannot subscribe on Redis; this node starts cut off from the others and keeps trying"))
            .ok();
        health.publisher_up.store(publisher.is_some(), Ordering::Relaxed);
        health.subscriber_up.store(subscriber.is_some(), Ordering::Relaxed);
        if publisher.is_some() && subscriber.is_some() {
            tracing::info!(%channel, "connected to the Redis broker");
        }

        tokio::spawn(run_publisher(
            client.clone(),
            channel.clone(),
            publisher,
            queued,
            Arc::clone(&health),
            stop.clone(),
        ));
        tokio::spawn(run_subscriber(client, channel, subscriber, heard.clone(), Arc::clone(&health), stop.clone()));
        Ok(RedisBroker { inner: Arc::new(Inner { queue, heard, health, _stop: stop.drop_guard() }) })
    }

    /// How many events this broker dropped since it started (queue full or Redis down).
    #[cfg(test)]
    pub fn dropped(&self) -> u64 {
        self.inner.health.dropped.load(Ordering::Relaxed)
    }
}

impl Broker for RedisBroker {
    fn publish(&self, event: ClusterEvent) {
        let health = &self.inner.health;
        if !health.publisher_up.load(Ordering::Relaxed) {
            health.drop_events(1, "Redis is unreachable");
        } else if self.inner.queue.try_send(event).is_err() {
            health.drop_events(1, "the publish queue is full");
        }
    }

    fn subscribe(&self) -> BoxStream<'static, Heard> {
        stream::unfold(self.inner.heard.subscribe(), |mut heard| async move {
            match heard.recv().await {
                Ok(heard_now) => Some((heard_now, heard)),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "this node fell behind its Redis broker and missed events");
                    Some((Heard::Reconnected, heard))
                }
                Err(broadcast::error::RecvError::Closed) => None,
            }
        })
        .boxed()
    }

    fn connected(&self) -> bool {
        let health = &self.inner.health;
        health.publisher_up.load(Ordering::Relaxed) && health.subscriber_up.load(Ordering::Relaxed)
    }
}

/// Why a link to Redis failed.
#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error(transparent)]
    Redis(#[from] RedisError),
    #[error("Redis did not answer within {0:?}")]
    TimedOut(Duration),
    #[error("the connection was closed")]
    Closed,
}

/// `operation`, failing if it takes longer than `limit`.
async fn within<T>(limit: Duration, operation: impl Future<Output = Result<T, RedisError>>) -> Result<T, LinkError> {
    match tokio::time::timeout(limit, operation).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(LinkError::TimedOut(limit)),
    }
}

async fn open_publisher(client: &Client) -> Result<MultiplexedConnection, LinkError> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT));
    within(CONNECT_TIMEOUT + RESPONSE_TIMEOUT, client.get_multiplexed_async_connection_with_config(&config)).await
}

async fn open_subscriber(client: &Client, channel: &str) -> Result<(PubSubSink, PubSubStream), LinkError> {
    let pubsub = within(CONNECT_TIMEOUT, client.get_async_pubsub()).await?;
    let (mut sink, stream) = pubsub.split();
    within(RESPONSE_TIMEOUT, sink.subscribe(channel)).await?;
    Ok((sink, stream))
}

/// Jittered exponential backoff between reconnection attempts.
struct Backoff {
    next: Duration,
    failures: u32,
}

impl Backoff {
    fn new() -> Self {
        Self { next: BACKOFF_MIN, failures: 0 }
    }

    fn reset(&mut self) {
        *self = Self::new();
    }

    /// Waits before the next attempt; false when the broker stopped meanwhile.
    async fn wait(&mut self, stop: &CancellationToken) -> bool {
        let delay = self.next.mul_f64(rand::random_range(0.5..=1.0));
        self.next = (self.next * 2).min(BACKOFF_MAX);
        self.failures = self.failures.saturating_add(1);
        tokio::select! {
            () = stop.cancelled() => false,
            () = tokio::time::sleep(delay) => true,
        }
    }

    /// Logs a failed attempt: the first one of an outage loudly, the others quietly.
    fn log_failure(&self, link: &'static str, error: &LinkError) {
        if self.failures <= 1 {
            tracing::warn!(link, %error, "cannot reach Redis; retrying with backoff");
        } else {
            tracing::debug!(link, %error, failures = self.failures, "cannot reach Redis yet");
        }
    }
}

/// The publisher task: sends what is queued, reconnecting when the link breaks.
async fn run_publisher(
    client: Client,
    channel: String,
    mut link: Option<MultiplexedConnection>,
    mut queued: mpsc::Receiver<ClusterEvent>,
    health: Arc<Health>,
    stop: CancellationToken,
) {
    let mut backoff = Backoff::new();
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let mut connection = match link.take() {
            Some(connection) => connection,
            None => {
                // What was queued before the link broke goes: the store has it.
                let mut stale = 0;
                while queued.try_recv().is_ok() {
                    stale += 1;
                }
                health.drop_events(stale, "Redis is unreachable");
                let attempt = tokio::select! {
                    () = stop.cancelled() => return,
                    attempt = open_publisher(&client) => attempt,
                };
                match attempt {
                    Ok(connection) => {
                        tracing::info!("publishing on Redis again");
                        connection
                    }
                    Err(error) => {
                        backoff.log_failure("publisher", &error);
                        if backoff.wait(&stop).await {
                            continue;
                        }
                        return;
                    }
                }
            }
        };
        health.publisher_up.store(true, Ordering::Relaxed);
        backoff.reset();
        let lost = publish_queued(&mut connection, &channel, &mut queued, &mut batch, &health, &stop).await;
        health.publisher_up.store(false, Ordering::Relaxed);
        let Some(error) = lost else { return };
        tracing::warn!(%error, "lost the Redis publishing connection; reconnecting");
        backoff.failures = 1;
        if !backoff.wait(&stop).await {
            return;
        }
    }
}

/// Publishes what is queued over `connection` until it fails (Some) or the broker
/// stops (None).
async fn publish_queued(
    connection: &mut MultiplexedConnection,
    channel: &str,
    queued: &mut mpsc::Receiver<ClusterEvent>,
    batch: &mut Vec<ClusterEvent>,
    health: &Health,
    stop: &CancellationToken,
) -> Option<LinkError> {
    loop {
        let count = tokio::select! {
            () = stop.cancelled() => return None,
            count = queued.recv_many(batch, BATCH) => count,
            () = health.check_publisher.notified() => 0,
            () = tokio::time::sleep(KEEPALIVE) => 0,
        };
        let mut pipe = ::redis::pipe();
        if count == 0 {
            if queued.is_closed() && queued.is_empty() {
                return None; // every handle is gone
            }
            pipe.cmd("PING").ignore();
        }
        for event in batch.drain(..) {
            pipe.cmd("PUBLISH").arg(channel).arg(encode(&event)).ignore();
        }
        let sent = tokio::select! {
            () = stop.cancelled() => return None,
            sent = within(RESPONSE_TIMEOUT, pipe.query_async::<()>(&mut *connection)) => sent,
        };
        if let Err(error) = sent {
            // They may or may not have gone out; count them as lost.
            health.drop_events(u64::try_from(count).unwrap_or(u64::MAX), "Redis is unreachable");
            return Some(error);
        }
    }
}

/// The subscriber task: fans out what it hears, resubscribing when the link breaks.
async fn run_subscriber(
    client: Client,
    channel: String,
    mut link: Option<(PubSubSink, PubSubStream)>,
    heard: broadcast::Sender<Heard>,
    health: Arc<Health>,
    stop: CancellationToken,
) {
    // Streams taken before a first subscription that came late have missed events too.
    let mut announce = link.is_none();
    let mut backoff = Backoff::new();
    loop {
        let (sink, messages) = match link.take() {
            Some(link) => link,
            None => {
                let attempt = tokio::select! {
                    () = stop.cancelled() => return,
                    attempt = open_subscriber(&client, &channel) => attempt,
                };
                match attempt {
                    Ok(link) => link,
                    Err(error) => {
                        backoff.log_failure("subscriber", &error);
                        if backoff.wait(&stop).await {
                            continue;
                        }
                        return;
                    }
                }
            }
        };
        health.subscriber_up.store(true, Ordering::Relaxed);
        if announce {
            tracing::info!(%channel, "subscribed on Redis again; rooms catch up from the store");
            let _nobody_listens = heard.send(Heard::Reconnected);
        }
        announce = true;
        backoff.reset();
        let lost = listen(sink, messages, &heard, &stop).await;
        health.subscriber_up.store(false, Ordering::Relaxed);
        let Some(error) = lost else { return };
        health.check_publisher.notify_one();
        tracing::warn!(%error, "lost the Redis subscription; resubscribing");
        backoff.failures = 1;
        if !backoff.wait(&stop).await {
            return;
        }
    }
}

/// Fans out what the subscription hears until it fails (Some) or the broker stops
/// (None).
async fn listen(
    mut sink: PubSubSink,
    mut messages: PubSubStream,
    heard: &broadcast::Sender<Heard>,
    stop: &CancellationToken,
) -> Option<LinkError> {
    let keepalive = tokio::time::sleep(KEEPALIVE);
    tokio::pin!(keepalive);
    loop {
        tokio::select! {
            () = stop.cancelled() => return None,
            message = messages.next() => {
                let Some(message) = message else { return Some(LinkError::Closed) };
                keepalive.as_mut().reset(tokio::time::Instant::now() + KEEPALIVE);
                if let Some(event) = decode(message.get_payload_bytes()) {
                    let _nobody_listens = heard.send(Heard::Event(event));
                }
            }
            () = &mut keepalive => {
                let pinged = tokio::select! {
                    () = stop.cancelled() => return None,
                    pinged = within(RESPONSE_TIMEOUT, sink.ping::<Value>()) => pinged,
                };
                if let Err(error) = pinged {
                    return Some(error);
                }
                keepalive.as_mut().reset(tokio::time::Instant::now() + KEEPALIVE);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::process::{Child, Command, Stdio};

    use bavard_protocol::RoomName;

    use super::*;
    use crate::broker::ClusterBody;

    /// The longest any wait in these tests may take.
    const WAIT: Duration = Duration::from_secs(20);

    /// A private `redis-server` on its own port, killed when dropped.
    struct RedisServer {
        port: u16,
        child: Option<Child>,
    }

    impl RedisServer {
        /// Starts one on a free port.
        async fn start() -> Self {
            Self::start_on(free_port()).await
        }

        async fn start_on(port: u16) -> Self {
            let mut server = Self { port, child: None };
            server.restart().await;
            server
        }

        fn url(&self) -> String {
            url_of(self.port)
        }

        /// Starts it (again) on its port and waits until it answers.
        async fn restart(&mut self) {
            assert!(self.child.is_none(), "the server runs already");
            let child = Command::new("redis-server")
                .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("these tests need a real Redis: install redis-server (/usr/bin/redis-server)");
            self.child = Some(child);
            let client = Client::open(self.url()).unwrap();
            tokio::time::timeout(WAIT, async {
                loop {
                    if let Ok(mut connection) = client.get_multiplexed_async_connection().await {
                        if ::redis::cmd("PING").query_async::<String>(&mut connection).await.is_ok() {
                            return;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
            .await
            .expect("redis-server did not start");
        }

        /// Kills it (the port stays its own, to restart on).
        fn kill(&mut self) {
            if let Some(mut child) = self.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }

        /// Publishes raw `payload` on the channel of `prefix`, as a foreign publisher would.
        async fn publish_raw(&self, prefix: &str, payload: &[u8]) {
            let client = Client::open(self.url()).unwrap();
            let mut connection = client.get_multiplexed_async_connection().await.unwrap();
            let receivers: i64 = ::redis::cmd("PUBLISH")
                .arg(format!("{prefix}:events"))
                .arg(payload)
                .query_async(&mut connection)
                .await
                .unwrap();
            assert!(receivers >= 1, "nobody subscribed to {prefix}:events");
        }
    }

    impl Drop for RedisServer {
        fn drop(&mut self) {
            self.kill();
        }
    }

    fn free_port() -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    }

    fn url_of(port: u16) -> String {
        format!("redis://127.0.0.1:{port}/")
    }

    /// A prefix no other test uses.
    fn prefix(test: &str) -> String {
        format!("bavard-test-{}-{test}", std::process::id())
    }

    /// An event of `origin`, told apart by `n`.
    fn event(origin: &str, n: usize) -> ClusterEvent {
        ClusterEvent {
            origin: origin.into(),
            body: ClusterBody::RulesChanged { room: RoomName::new(&format!("room-{n}")).unwrap() },
        }
    }

    async fn next(stream: &mut BoxStream<'static, Heard>) -> Heard {
        tokio::time::timeout(WAIT, stream.next()).await.expect("nothing heard in time").expect("the stream ended")
    }

    async fn wait_until(what: &str, condition: impl FnMut() -> bool) {
        wait_at_most(WAIT, what, condition).await;
    }

    async fn wait_at_most(limit: Duration, what: &str, mut condition: impl FnMut() -> bool) {
        tokio::time::timeout(limit, async {
            while !condition() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("timed out waiting until {what}"));
    }

    async fn connect(url: &str, prefix: &str) -> RedisBroker {
        tokio::time::timeout(WAIT, RedisBroker::connect(url, prefix)).await.expect("connect hung").unwrap()
    }

    #[tokio::test]
    async fn two_nodes_hear_each_other_and_themselves() {
        let _serial = crate::broker::one_private_server_test_at_a_time().await;
        let server = RedisServer::start().await;
        let prefix = prefix("two-nodes");
        let (n1, n2) = (connect(&server.url(), &prefix).await, connect(&server.url(), &prefix).await);
        assert!(n1.connected() && n2.connected());
        assert!(n1.clustered());
        let (mut heard1, mut heard2) = (n1.subscribe(), n2.subscribe());

        n1.publish(event("n1", 1));
        assert_eq!(next(&mut heard1).await, Heard::Event(event("n1", 1)));
        assert_eq!(next(&mut heard2).await, Heard::Event(event("n1", 1)));

        n2.publish(event("n2", 2));
        assert_eq!(next(&mut heard1).await, Heard::Event(event("n2", 2)));
        assert_eq!(next(&mut heard2).await, Heard::Event(event("n2", 2)));

        // A stream taken later hears from then on, and every stream of a node hears it all.
        let mut later = n1.subscribe();
        n2.publish(event("n2", 3));
        for heard in [&mut heard1, &mut heard2, &mut later] {
            assert_eq!(next(heard).await, Heard::Event(event("n2", 3)));
        }
        assert_eq!(n1.dropped() + n2.dropped(), 0);
    }

    #[tokio::test]
    async fn events_from_one_publisher_arrive_in_publish_order() {
        let _serial = crate::broker::one_private_server_test_at_a_time().await;
        let server = RedisServer::start().await;
        let prefix = prefix("order");
        let (n1, n2) = (connect(&server.url(), &prefix).await, connect(&server.url(), &prefix).await);
        let mut heard = n2.subscribe();
        const COUNT: usize = 5_000;
        for n in 0..COUNT {
            n1.publish(event("n1", n));
        }
        for n in 0..COUNT {
            assert_eq!(next(&mut heard).await, Heard::Event(event("n1", n)), "event {n}");
        }
        assert_eq!(n1.dropped(), 0);
    }

    #[tokio::test]
    async fn both_nodes_reconnect_after_redis_restarts() {
        let _serial = crate::broker::one_private_server_test_at_a_time().await;
        let mut server = RedisServer::start().await;
        let prefix = prefix("restart");
        let (n1, n2) = (connect(&server.url(), &prefix).await, connect(&server.url(), &prefix).await);
        let (mut heard1, mut heard2) = (n1.subscribe(), n2.subscribe());
        n1.publish(event("n1", 0));
        assert_eq!(next(&mut heard1).await, Heard::Event(event("n1", 0)));
        assert_eq!(next(&mut heard2).await, Heard::Event(event("n1", 0)));

        server.kill();
        wait_at_most(Duration::from_secs(5), "both nodes see Redis gone", || !n1.connected() && !n2.connected()).await;

        // Publishing while Redis is down neither waits nor panics: it drops and counts.
        const WHILE_DOWN: u64 = 100_000;
        let started = Instant::now();
        for n in 0..WHILE_DOWN {
            n1.publish(event("n1", usize::try_from(n).unwrap()));
        }
        assert!(started.elapsed() < Duration::from_secs(2), "publishing took {:?}", started.elapsed());
        wait_until("every event published while down is counted as dropped", || n1.dropped() == WHILE_DOWN).await;
        assert!(!n1.connected() && !n2.connected());

        server.restart().await;
        assert_eq!(next(&mut heard1).await, Heard::Reconnected);
        assert_eq!(next(&mut heard2).await, Heard::Reconnected);
        wait_until("both nodes are connected again", || n1.connected() && n2.connected()).await;

        // (Two publishers' events may interleave either way: one at a time.)
        n2.publish(event("n2", 1));
        for heard in [&mut heard1, &mut heard2] {
            assert_eq!(next(heard).await, Heard::Event(event("n2", 1)));
        }
        n1.publish(event("n1", 2));
        for heard in [&mut heard1, &mut heard2] {
            assert_eq!(next(heard).await, Heard::Event(event("n1", 2)));
        }
        assert_eq!(n1.dropped(), WHILE_DOWN);
        assert_eq!(n2.dropped(), 0);
    }

    #[tokio::test]
    async fn a_node_starts_without_redis_and_connects_when_it_comes() {
        let _serial = crate::broker::one_private_server_test_at_a_time().await;
        let port = free_port();
        let prefix = prefix("late");
        let n1 = connect(&url_of(port), &prefix).await;
        assert!(!n1.connected());
        let mut heard = n1.subscribe();
        n1.publish(event("n1", 0));
        assert_eq!(n1.dropped(), 1);

        let _server = RedisServer::start_on(port).await;
        // The stream was taken while cut off: it must catch up.
        assert_eq!(next(&mut heard).await, Heard::Reconnected);
        wait_until("the node is connected", || n1.connected()).await;
        n1.publish(event("n1", 1));
        assert_eq!(next(&mut heard).await, Heard::Event(event("n1", 1)));
    }

    #[tokio::test]
    async fn a_stream_that_falls_behind_hears_reconnected() {
        let _serial = crate::broker::one_private_server_test_at_a_time().await;
        let server = RedisServer::start().await;
        let n1 = connect(&server.url(), &prefix("lag")).await;
        let (mut reader, mut sleeper) = (n1.subscribe(), n1.subscribe());
        let count = FANOUT_CAPACITY + 100;
        for n in 0..count {
            n1.publish(event("n1", n));
        }
        for n in 0..count {
            assert_eq!(next(&mut reader).await, Heard::Event(event("n1", n)));
        }
        // The sleeper missed the oldest: it must catch up from the store, then goes on.
        assert_eq!(next(&mut sleeper).await, Heard::Reconnected);
        assert!(matches!(next(&mut sleeper).await, Heard::Event(_)));
        assert!(n1.connected());
    }

    #[tokio::test]
    async fn garbage_on_the_channel_is_skipped() {
        let _serial = crate::broker::one_private_server_test_at_a_time().await;
        let server = RedisServer::start().await;
        let prefix = prefix("garbage");
        let n1 = connect(&server.url(), &prefix).await;
        let mut heard = n1.subscribe();
        server.publish_raw(&prefix, b"not json").await;
        server.publish_raw(&prefix, b"{\"origin\":\"n9\",\"body\":{\"kind\":\"from_the_future\"}}").await;
        n1.publish(event("n1", 1));
        assert_eq!(next(&mut heard).await, Heard::Event(event("n1", 1)));
        assert!(n1.connected());
    }

    #[tokio::test]
    async fn other_prefixes_are_not_heard() {
        let _serial = crate::broker::one_private_server_test_at_a_time().await;
        let server = RedisServer::start().await;
        let (a, b) = (prefix("cluster-a"), prefix("cluster-b"));
        let (n1, n2) = (connect(&server.url(), &a).await, connect(&server.url(), &b).await);
        let mut heard2 = n2.subscribe();
        n1.publish(event("n1", 1));
        n2.publish(event("n2", 2));
        assert_eq!(next(&mut heard2).await, Heard::Event(event("n2", 2)));
    }

    #[tokio::test]
    async fn dropping_the_broker_stops_it() {
        let _serial = crate::broker::one_private_server_test_at_a_time().await;
        let server = RedisServer::start().await;
        let n1 = connect(&server.url(), &prefix("drop")).await;
        let mut heard = n1.subscribe();
        drop(n1);
        let ended = tokio::time::timeout(WAIT, heard.next()).await.expect("the stream outlived its broker");
        assert_eq!(ended, None);
    }

    #[tokio::test]
    async fn bad_urls_are_refused() {
        let _serial = crate::broker::one_private_server_test_at_a_time().await;
        for url in ["not a url", "http://127.0.0.1:6379/", "rediss://127.0.0.1:6379/", "redis://127.0.0.1:6379/x"] {
            let refused = RedisBroker::connect(url, "p").await.err().unwrap_or_else(|| panic!("{url} accepted"));
            assert!(matches!(refused, BrokerError::BadUrl(_)));
            assert!(refused.to_string().starts_with("invalid Redis URL: "), "{refused}");
        }
    }
}
