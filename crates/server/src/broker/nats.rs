//! A [`Broker`] over core NATS publish/subscribe (not JetStream: events are best-effort,
//! and nodes fill gaps from the store).
//!
//! Every node publishes on and subscribes to one subject, `{prefix}.events`, carrying
//! [`encode`]d events. One NATS client per node; inside the process:
//!
//! - [`Broker::publish`] never waits: it drops the event (and counts it) when NATS is
//!   down, and otherwise pushes it onto a bounded queue that one publisher task drains
//!   into the client, in order. When the queue is full the event is dropped and
//!   counted too; drops are logged at most once per second.
//! - One subscriber task decodes what the subscription hears (skipping what it cannot
//!   read) and fans it out through a broadcast channel to every [`Broker::subscribe`]
//!   stream; a stream that falls behind that channel hears [`Heard::Reconnected`].
//! - The client's connection events drive [`Broker::connected`]: false from a
//!   `Disconnected` to the next `Connected`, and every `Connected` after
//!   [`NatsBroker::connect`] returned (a reconnect, or the first connect of a node that
//!   started while NATS was down) makes every stream hear [`Heard::Reconnected`], as
//!   does a `SlowConsumer` (the client dropped events this node did not read in time).
//!
//! A node starts even when NATS is unreachable: the client keeps trying in the
//! background (backoff from 100 ms up to 5 s), and meanwhile the node serves its own
//! clients alone.
//!
//! Dropping the broker stops its tasks and ends its streams. (The client's own
//! connection task ends once it notices the client is gone; if NATS is down at that
//! moment, it only notices after its next successful connect, or when the runtime
//! stops.)

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use async_nats::{Client, ConnectOptions, Event, ServerAddr, Subject, Subscriber};
use bytes::Bytes;
use futures_util::stream::{self, BoxStream, StreamExt};
use tokio::sync::{broadcast, mpsc, Notify};
use tokio::task::JoinHandle;

use super::{decode, encode, Broker, ClusterEvent, Heard};

/// Events waiting for the publisher task; beyond that, publishing drops them.
const PUBLISH_QUEUE: usize = 65_536;
/// Events held for the slowest in-process subscriber; beyond that it hears
/// [`Heard::Reconnected`].
const HEARD_CAPACITY: usize = 16_384;
/// How long the publisher waits for the client to take one event (it stops taking them
/// while it reconnects) before dropping it.
const PUBLISH_WAIT: Duration = Duration::from_secs(1);
/// How long [`NatsBroker::connect`] waits for the first connection before starting
/// disconnected.
const INITIAL_WAIT: Duration = Duration::from_secs(2);
/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How often the client pings the server: a link that silently died is noticed after
/// about two unanswered pings.
const PING_INTERVAL: Duration = Duration::from_secs(10);
/// The delay before the first reconnect attempt; it doubles up to [`MAX_RECONNECT_DELAY`].
const FIRST_RECONNECT_DELAY: Duration = Duration::from_millis(100);
/// The longest wait between two reconnect attempts.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(5);
/// At most one drop log line per this period.
const DROP_LOG_PERIOD: Duration = Duration::from_secs(1);
/// Sentinel in `last_drop_log_ms`: no drop logged yet.
const NEVER: u64 = u64::MAX;

/// Why a [`NatsBroker`] cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    /// The subject prefix is not a valid NATS subject without wildcards.
    #[error("invalid NATS subject prefix {0:?}: use dot-separated tokens without spaces, '*' or '>'")]
    BadPrefix(String),
    /// A server address in the URL does not parse.
    #[error("invalid NATS URL {url:?}: {source}")]
    BadUrl {
        /// The URL given.
        url: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The client cannot be made (an unreachable server is not an error: the broker
    /// starts disconnected and keeps trying).
    #[error("cannot use NATS at {url}: {source}")]
    Connect {
        /// The URL given.
        url: String,
        /// What the client said.
        #[source]
        source: async_nats::ConnectError,
    },
    /// The client refused the subscription.
    #[error("cannot subscribe on NATS: {0}")]
    Subscribe(#[from] async_nats::SubscribeError),
}

/// Carries events between nodes over core NATS publish/subscribe, on `{prefix}.events`.
pub struct NatsBroker {
    shared: Arc<Shared>,
    queue: mpsc::Sender<ClusterEvent>,
    subject: Subject,
    publisher: JoinHandle<()>,
    listener: JoinHandle<()>,
}

/// What the broker, its tasks and the client's event callback share.
struct Shared {
    /// Whether the client is connected now (driven by its connection events).
    up: AtomicBool,
    /// Set when [`NatsBroker::connect`] returns: from then on, a connect means events may
    /// have been missed.
    announce_connects: AtomicBool,
    /// Told on every connect (for [`NatsBroker::connect`]'s first wait).
    connected_once: Notify,
    /// Feeds every subscribe stream.
    heard: broadcast::Sender<Heard>,
    /// Events dropped on the way out, ever.
    dropped: AtomicU64,
    /// For the drop log's rate limit.
    started: Instant,
    /// When the last drop was logged, in ms since `started` ([`NEVER`] if never).
    last_drop_log_ms: AtomicU64,
}

impl NatsBroker {
    /// Connects to the NATS server(s) at `url` (`nats://host:port`, or several separated
    /// by commas) and subscribes to `{subject_prefix}.events`. Waits up to 2 s for the
    /// first connection; if NATS is unreachable, returns a disconnected broker that
    /// keeps trying in the background (and whose streams hear [`Heard::Reconnected`]
    /// when it gets through). Errors only for a bad URL or prefix. Spawns its tasks on
    /// the current tokio runtime.
    pub async fn connect(url: &str, subject_prefix: &str) -> Result<NatsBroker, NatsError> {
        let subject = events_subject(subject_prefix)?;
        let servers = url
            .split(',')
            .map(|server| match server.trim() {
                "" => Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "an empty server address")),
                server => server.parse::<ServerAddr>(),
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| NatsError::BadUrl { url: url.to_owned(), source })?;
        let shared = Arc::new(Shared {
            up: AtomicBool::new(false),
            announce_connects: AtomicBool::new(false),
            connected_once: Notify::new(),
            heard: broadcast::channel(HEARD_CAPACITY).0,
            dropped: AtomicU64::new(0),
            started: Instant::now(),
            last_drop_log_ms: AtomicU64::new(NEVER),
        });
        let events_to: Weak<Shared> = Arc::downgrade(&shared);
        let client = ConnectOptions::new()
            .name("bavard")
            .retry_on_initial_connect()
            .max_reconnects(None)
            .reconnect_delay_callback(reconnect_delay)
            .connection_timeout(CONNECT_TIMEOUT)
            .ping_interval(PING_INTERVAL)
            .event_callback(move |event| {
                let shared = events_to.upgrade();
                async move {
                    if let Some(shared) = shared {
                        shared.on_event(event);
                    }
                }
            })
            .connect(servers)
            .await
            .map_err(|source| NatsError::Connect { url: url.to_owned(), source })?;
        // Queued in the client until it connects, and sent again on every reconnect.
        let subscriber = client.subscribe(subject.clone()).await?;

        if tokio::time::timeout(INITIAL_WAIT, shared.connected_once.notified()).await.is_ok() {
            // Put the subscription on the wire before anyone publishes.
            if tokio::time::timeout(INITIAL_WAIT, client.flush()).await.is_err() {
                tracing::debug!("NATS did not flush the subscription in time");
            }
            tracing::info!(url, %subject, "connected to NATS");
        } else {
            tracing::warn!(
                url,
                %subject,
                "NATS is unreachable: starting disconnected (serving this node's clients alone) and retrying"
            );
        }
        shared.announce_connects.store(true, Ordering::Release);

        let (queue, outbox) = mpsc::channel(PUBLISH_QUEUE);
        let publisher = tokio::spawn(publish_loop(client.clone(), subject.clone(), outbox, Arc::clone(&shared)));
        let listener = tokio::spawn(listen_loop(subscriber, Arc::clone(&shared)));
        Ok(NatsBroker { shared, queue, subject, publisher, listener })
    }

    /// How many events this broker dropped instead of publishing them (NATS down, or the
    /// publish queue full), since it was made.
    pub fn dropped_events(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// The subject events travel on.
    #[cfg(test)]
    pub fn subject(&self) -> &str {
        self.subject.as_str()
    }
}

impl Broker for NatsBroker {
    fn publish(&self, event: ClusterEvent) {
        if !self.shared.up.load(Ordering::Acquire) {
            self.shared.drop_event("NATS is down");
            return;
        }
        match self.queue.try_send(event) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => self.shared.drop_event("the publish queue is full"),
            Err(mpsc::error::TrySendError::Closed(_)) => self.shared.drop_event("the publisher stopped"),
        }
    }

    fn subscribe(&self) -> BoxStream<'static, Heard> {
        stream::unfold(self.shared.heard.subscribe(), |mut heard| async move {
            match heard.recv().await {
                Ok(heard_now) => Some((heard_now, heard)),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "this node fell behind its NATS broker and missed events");
                    Some((Heard::Reconnected, heard))
                }
                Err(broadcast::error::RecvError::Closed) => None,
            }
        })
        .boxed()
    }

    fn connected(&self) -> bool {
        self.shared.up.load(Ordering::Acquire)
    }
}

impl Drop for NatsBroker {
    fn drop(&mut self) {
        self.publisher.abort();
        self.listener.abort();
    }
}

impl fmt::Debug for NatsBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsBroker")
            .field("subject", &self.subject.as_str())
            .field("connected", &self.connected())
            .field("dropped_events", &self.dropped_events())
            .finish()
    }
}

impl Shared {
    /// Follows the client's connection events.
    fn on_event(&self, event: Event) {
        match event {
            Event::Connected => {
                self.up.store(true, Ordering::Release);
                self.connected_once.notify_one();
                if self.announce_connects.load(Ordering::Acquire) {
                    tracing::info!(
                        "reconnected to NATS: events published meanwhile are lost, catching up from the store"
                    );
                    let _nobody_listens = self.heard.send(Heard::Reconnected);
                }
            }
            Event::Disconnected => {
                self.up.store(false, Ordering::Release);
                tracing::warn!("lost NATS: dropping this node's events until it is back, and retrying");
            }
            Event::Closed => {
                self.up.store(false, Ordering::Release);
                tracing::warn!("the NATS client closed");
            }
            Event::SlowConsumer(_) => {
                tracing::warn!("this node read NATS too slowly and missed events: catching up from the store");
                let _nobody_listens = self.heard.send(Heard::Reconnected);
            }
            Event::LameDuckMode => tracing::info!("the NATS server is shutting down (lame duck mode)"),
            Event::ServerError(e) => tracing::warn!(error = %e, "NATS server error"),
            // Every failed reconnect attempt says so: the client logs those itself.
            Event::ClientError(e) => tracing::debug!(error = %e, "NATS client error"),
            Event::Draining => {}
        }
    }

    /// Counts a dropped event, logging at most once per [`DROP_LOG_PERIOD`].
    fn drop_event(&self, why: &'static str) {
        let total = self.dropped.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(NEVER - 1);
        let last = self.last_drop_log_ms.load(Ordering::Relaxed);
        let due = last == NEVER || now.saturating_sub(last) >= DROP_LOG_PERIOD.as_millis() as u64;
        if due && self.last_drop_log_ms.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            tracing::warn!(
                why,
                dropped_total = total,
                "dropping cluster events: other nodes fill the gap from the store"
            );
        }
    }
}

/// Hands queued events to the client, one at a time and in order.
async fn publish_loop(client: Client, subject: Subject, mut outbox: mpsc::Receiver<ClusterEvent>, shared: Arc<Shared>) {
    while let Some(event) = outbox.recv().await {
        if !shared.up.load(Ordering::Acquire) {
            shared.drop_event("NATS is down");
            continue;
        }
        let payload = Bytes::from(encode(&event));
        match tokio::time::timeout(PUBLISH_WAIT, client.publish(subject.clone(), payload)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "NATS refused an event");
                shared.drop_event("NATS refused it");
            }
            Err(_) => shared.drop_event("NATS did not take it in time"),
        }
    }
}

/// Decodes what the subscription hears and hands it to every subscribe stream.
async fn listen_loop(mut subscriber: Subscriber, shared: Arc<Shared>) {
    while let Some(message) = subscriber.next().await {
        if let Some(event) = decode(&message.payload) {
            let _nobody_listens = shared.heard.send(Heard::Event(event));
        }
    }
    tracing::warn!("the NATS subscription ended: this node no longer hears other nodes");
}

/// The wait before reconnect attempt `attempts` (1 for the first after a loss): 100 ms,
/// doubling up to 5 s, less up to a fifth at random so that nodes do not retry in step.
fn reconnect_delay(attempts: usize) -> Duration {
    let doublings = u32::try_from(attempts.saturating_sub(1)).unwrap_or(u32::MAX).min(16);
    let delay = FIRST_RECONNECT_DELAY.saturating_mul(1 << doublings).min(MAX_RECONNECT_DELAY);
    delay.mul_f64(1.0 - 0.2 * rand::random::<f64>())
}

/// `{prefix}.events`, for a prefix of plain NATS tokens.
fn events_subject(prefix: &str) -> Result<Subject, NatsError> {
    let valid = !prefix.is_empty()
        && prefix.split('.').all(|token| {
            !token.is_empty() && token.chars().all(|c| !c.is_whitespace() && !c.is_control() && c != '*' && c != '>')
        });
    if valid {
        Ok(Subject::from(format!("{prefix}.events")))
    } else {
        Err(NatsError::BadPrefix(prefix.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use std::process::{Child, Command, Stdio};
    use std::sync::atomic::AtomicUsize;

    use bavard_protocol::RoomName;

    use super::super::{ClusterBody, NodeId};
    use super::*;

    /// The server the tests run (Debian's `nats-server` package); missing, they fail.
    const NATS_SERVER: &str = "/usr/sbin/nats-server";
    /// The longest any one wait in these tests may take.
    const WAIT: Duration = Duration::from_secs(20);

    /// A private nats-server on a port of its own, killed when dropped.
    struct NatsServer {
        port: u16,
        child: Option<Child>,
    }

    impl NatsServer {
        async fn start() -> Self {
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let mut server = Self { port, child: None };
            server.restart().await;
            server
        }

        fn url(&self) -> String {
            format!("nats://127.0.0.1:{}", self.port)
        }

        /// Starts the server (again) on its port and waits until it accepts connections.
        async fn restart(&mut self) {
            assert!(self.child.is_none(), "the server runs already");
            let child = Command::new(NATS_SERVER)
                .args(["-p", &self.port.to_string(), "-a", "127.0.0.1"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {NATS_SERVER} (apt-get install nats-server): {e}"));
            self.child = Some(child);
            let deadline = Instant::now() + WAIT;
            while tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_err() {
                assert!(Instant::now() < deadline, "nats-server did not listen on port {}", self.port);
                if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                    panic!("nats-server exited at start: {status}");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }

        /// Kills the server (as a crash would).
        fn kill(&mut self) {
            if let Some(mut child) = self.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    impl Drop for NatsServer {
        fn drop(&mut self) {
            self.kill();
        }
    }

    /// A subject prefix no other test uses.
    fn prefix(test: &str) -> String {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        format!("bavard-test.{test}.{}.{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
    }

    fn event(origin: &str, n: usize) -> ClusterEvent {
        ClusterEvent {
            origin: origin.into(),
            body: ClusterBody::RulesChanged { room: RoomName::new(&format!("r{n}")).unwrap() },
        }
    }

    fn is_probe(event: &ClusterEvent) -> bool {
        event.origin.starts_with("probe-")
    }

    async fn connect(server: &NatsServer, prefix: &str) -> NatsBroker {
        tokio::time::timeout(WAIT, NatsBroker::connect(&server.url(), prefix)).await.unwrap().unwrap()
    }

    /// Waits until `check` holds, polling.
    async fn wait_until(what: &str, check: impl Fn() -> bool) {
        let deadline = Instant::now() + WAIT;
        while !check() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The next thing `stream` hears.
    async fn next(stream: &mut BoxStream<'static, Heard>) -> Heard {
        tokio::time::timeout(WAIT, stream.next())
            .await
            .expect("timed out waiting for the broker")
            .expect("the broker's stream ended")
    }

    /// The next event on `stream` that is not a probe, skipping probes (and nothing else).
    async fn next_real(stream: &mut BoxStream<'static, Heard>) -> Heard {
        loop {
            match next(stream).await {
                Heard::Event(event) if is_probe(&event) => {}
                heard => return heard,
            }
        }
    }

    /// Waits until `stream` hears `Reconnected`, skipping events.
    async fn reconnected(stream: &mut BoxStream<'static, Heard>) {
        while next(stream).await != Heard::Reconnected {}
    }

    /// Publishes probes from `from` until `to` hears one: the path between them works
    /// (both subscriptions are on the server). Returns what `to` heard meanwhile that is
    /// not a probe.
    async fn flows(from: &NatsBroker, to: &mut BoxStream<'static, Heard>, tag: &str) -> Vec<Heard> {
        let origin = format!("probe-{tag}");
        let mut other = Vec::new();
        let deadline = Instant::now() + WAIT;
        for n in 0.. {
            assert!(Instant::now() < deadline, "no event flows for {tag}");
            from.publish(event(&origin, n));
            let until = tokio::time::Instant::now() + Duration::from_millis(200);
            while let Ok(heard) = tokio::time::timeout_at(until, to.next()).await {
                match heard.expect("the broker's stream ended") {
                    Heard::Event(event) if *event.origin == *origin => return other,
                    Heard::Event(event) if is_probe(&event) => {}
                    heard => other.push(heard),
                }
            }
        }
        unreachable!()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_brokers_exchange_events_both_ways_and_each_hears_its_own() {
        let _serial = crate::broker::one_private_server_test_at_a_time().await;
        let server = NatsServer::start().await;
        let prefix = prefix("exchange");
        let a = connect(&server, &prefix).await;
        // A list of servers, one of them dead.
        let servers = format!("nats://127.0.0.1:1, {}", server.url());
        let b = tokio::time::timeout(WAIT, NatsBroker::connect(&servers, &prefix)).await.unwrap().unwrap();
        assert!(a.connected() && b.connected());
        assert_eq!(a.subject(), format!("{prefix}.events"));
        let mut heard_by_a = a.subscribe();
        let mut heard_by_a_too = a.subscribe();
        let mut heard_by_b = b.subscribe();
        assert!(flows(&a, &mut heard_by_b, "a-b").await.is_empty());
        assert!(flows(&b, &mut heard_by_a, "b-a").await.is_empty());

        a.publish(event("a", 1));
        b.publish_messages(&NodeId::from("b"), &[]);
        let from_b = ClusterEvent { origin: "b".into(), body: ClusterBody::Messages { messages: vec![] } };
        for stream in [&mut heard_by_a, &mut heard_by_a_too, &mut heard_by_b] {
            let mut got = vec![next_real(stream).await, next_real(stream).await];
            got.sort_by_key(|heard| format!("{heard:?}"));
            assert_eq!(got, vec![Heard::Event(event("a", 1)), Heard::Event(from_b.clone())]);
        }
        assert_eq!((a.dropped_events(), b.dropped_events()), (0, 0));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_publishers_order_is_kept() {
        let _serial = crate::broker::one_private_server_test_at_a_time().await;
        let server = NatsServer::start().await;
        let prefix = prefix("order");
        let a = connect(&server, &prefix).await;
        let b = connect(&server, &prefix).await;
        let mut heard_by_a = a.subscribe();
        let mut heard_by_b = b.subscribe();
        flows(&a, &mut heard_by_b, "a-b").await;
        flows(&a, &mut heard_by_a, "a-a").await;

        const EVENTS: usize = 2_000;
        for n in 0..EVENTS {
            a.publish(event("a", n));
        }
        for stream in [&mut heard_by_a, &mut heard_by_b] {
            for n in 0..EVENTS {
                assert_eq!(next_real(stream).await, Heard::Event(event("a", n)));
            }
        }
        assert_eq!(a.dropped_events(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_killed_server_is_noticed_and_publishing_neither_blocks_nor_panics() {
        let _serial = crate::broker::one_private_server_test_at_a_time().await;
        let mut server = NatsServer::start().await;
        let prefix = prefix("killed");
        let a = connect(&server, &prefix).await;
        let b = connect(&server, &prefix).await;
        let mut heard_by_b = b.subscribe();
        flows(&a, &mut heard_by_b, "a-b").await;

        server.kill();
        let killed = Instant::now();
        wait_until("both brokers see NATS is gone", || !a.connected() && !b.connected()).await;
        assert!(killed.elapsed() < Duration::from_secs(5), "took {:?}", killed.elapsed());

        const EVENTS: usize = 200_000; // beyond the publish queue
        let publishing = Instant::now();
        for n in 0..EVENTS {
            a.publish(event("a", n));
        }
        assert!(publishing.elapsed() < Duration::from_secs(5), "publishing took {:?}", publishing.elapsed());
        assert!(a.dropped_events() >= EVENTS as u64);
        assert!(!a.connected());
        // Nothing reaches b while NATS is down (and its stream does not end).
        assert!(tokio::time::timeout(Duration::from_millis(500), heard_by_b.next()).await.is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn after_a_restart_both_reconnect_hear_reconnected_and_events_flow_again() {
        let _serial = crate::broker::one_private_server_test_at_a_time().await;
        let mut server = NatsServer::start().await;
        let prefix = prefix("restart");
        let a = connect(&server, &prefix).await;
        let b = connect(&server, &prefix).await;
        let mut heard_by_a = a.subscribe();
        let mut heard_by_b = b.subscribe();
        flows(&a, &mut heard_by_b, "a-b").await;
        flows(&b, &mut heard_by_a, "b-a").await;

        server.kill();
        wait_until("both brokers see NATS is gone", || !a.connected() && !b.connected()).await;
        for n in 0..100 {
            a.publish(event("lost-a", n));
            b.publish(event("lost-b", n));
        }
        assert!(a.dropped_events() >= 100 && b.dropped_events() >= 100);

        server.restart().await;
        wait_until("both brokers are back", || a.connected() && b.connected()).await;
        reconnected(&mut heard_by_a).await;
        reconnected(&mut heard_by_b).await;

        // What was published while NATS was down is lost, not delivered late.
        assert_eq!(flows(&a, &mut heard_by_b, "a-b-again").await, vec![]);
        assert_eq!(flows(&b, &mut heard_by_a, "b-a-again").await, vec![]);
        a.publish(event("a", 1));
        b.publish(event("b", 2));
        for stream in [&mut heard_by_a, &mut heard_by_b] {
            let mut got = vec![next_real(stream).await, next_real(stream).await];
            got.sort_by_key(|heard| format!("{heard:?}"));
            assert_eq!(got, vec![Heard::Event(event("a", 1)), Heard::Event(event("b", 2))]);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_node_started_while_nats_is_down_connects_when_it_comes_up() {
        let _serial = crate::broker::one_private_server_test_at_a_time().await;
        let mut server = NatsServer::start().await;
        server.kill();
        let prefix = prefix("late");
        let started = Instant::now();
        let a = connect(&server, &prefix).await;
        assert!(started.elapsed() < Duration::from_secs(5), "connect took {:?}", started.elapsed());
        assert!(!a.connected());
        let mut heard_by_a = a.subscribe();
        a.publish(event("lost-a", 0));
        assert_eq!(a.dropped_events(), 1);

        server.restart().await;
        wait_until("the broker connects", || a.connected()).await;
        reconnected(&mut heard_by_a).await;
        let b = connect(&server, &prefix).await;
        assert!(b.connected());
        let mut heard_by_b = b.subscribe();
        flows(&b, &mut heard_by_a, "b-a").await;
        flows(&a, &mut heard_by_b, "a-b").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn undecodable_payloads_are_skipped() {
        let _serial = crate::broker::one_private_server_test_at_a_time().await;
        let server = NatsServer::start().await;
        let prefix = prefix("garbage");
        let a = connect(&server, &prefix).await;
        let mut heard_by_a = a.subscribe();
        flows(&a, &mut heard_by_a, "a-a").await;

        let raw = tokio::time::timeout(WAIT, async_nats::connect(server.url())).await.unwrap().unwrap();
        let subject = format!("{prefix}.events");
        for garbage in
            [&b"not json"[..], b"", b"{\"origin\":\"x\",\"body\":{\"kind\":\"from_the_future\"}}", b"\xff\xfe"]
        {
            raw.publish(subject.clone(), Bytes::copy_from_slice(garbage)).await.unwrap();
        }
        raw.publish(subject, encode(&event("raw", 1)).into()).await.unwrap();
        tokio::time::timeout(WAIT, raw.flush()).await.unwrap().unwrap();

        assert_eq!(next_real(&mut heard_by_a).await, Heard::Event(event("raw", 1)));
        assert!(a.connected());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dropping_the_broker_ends_its_streams() {
        let _serial = crate::broker::one_private_server_test_at_a_time().await;
        let server = NatsServer::start().await;
        let a = connect(&server, &prefix("drop")).await;
        let mut heard_by_a = a.subscribe();
        drop(a);
        assert_eq!(tokio::time::timeout(WAIT, heard_by_a.next()).await.unwrap(), None);
    }

    #[tokio::test]
    async fn bad_prefixes_and_urls_are_refused() {
        let _serial = crate::broker::one_private_server_test_at_a_time().await;
        for bad in ["", "a..b", ".a", "a.", "a b", "a.*", "a.>", "a\tb"] {
            assert!(matches!(events_subject(bad), Err(NatsError::BadPrefix(_))), "{bad:?}");
        }
        assert_eq!(events_subject("bavard.prod-1").unwrap().as_str(), "bavard.prod-1.events");
        for bad in ["nats://[not a url", "", "nats://127.0.0.1:4222,,"] {
            let refused = NatsBroker::connect(bad, "bavard").await;
            assert!(matches!(refused, Err(NatsError::BadUrl { .. })), "{bad:?}: {refused:?}");
        }
    }

    #[test]
    fn reconnect_delays_grow_to_five_seconds() {
        assert!(reconnect_delay(1) <= Duration::from_millis(100));
        assert!(reconnect_delay(1) >= Duration::from_millis(80));
        assert!(reconnect_delay(3) >= Duration::from_millis(320));
        for attempts in [7, 8, 100, usize::MAX] {
            let delay = reconnect_delay(attempts);
            assert!(delay <= MAX_RECONNECT_DELAY && delay >= Duration::from_secs(4), "{attempts}: {delay:?}");
        }
    }
}
