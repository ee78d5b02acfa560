//! The session loop driven over an in-memory pair of channels, with an in-memory store
//! and paused time: the clock moves only when every task waits, so timings are exact
//! and a missing wakeup shows up as a timeout instead of a slow test.

use std::{sync::Arc, time::Duration};

use bavard_protocol::{close_code, Limits, RoomName, User};
use futures_util::{Sink, Stream};
use serde_json::{json, Value};
use tokio::{sync::mpsc, task::JoinHandle, time::Instant};
use tokio_util::{
    sync::{CancellationToken, PollSender},
    task::TaskTracker,
};

use super::*;
use crate::{
    broker::Solo,
    hub::{commit_stream, HubSettings},
    store::MemoryStore,
};

const HEARTBEAT: Duration = Duration::from_secs(30);
const IDLE_TIMEOUT: Duration = Duration::from_secs(75);

fn settings() -> SessionSettings {
    SessionSettings {
        server_name: "test".to_owned(),
        limits: Limits { max_frame_bytes: 64 * 1024, max_text_chars: 4000 },
        outbox_frames: 64,
        outbox_bytes: 1 << 20,
        rate_per_second: 0.0,
        rate_burst: 10,
        rate_strikes: 3,
        heartbeat: HEARTBEAT,
        idle_timeout: IDLE_TIMEOUT,
        max_pending_sends: 256,
        shutdown_grace: Duration::from_secs(1),
        metrics: Arc::default(),
        max_rooms: 100,
        jwt: None,
    }
}

/// Fails the test when `future` waits longer than a minute past the longest timer
/// a test sets (in paused time: at once, when nothing else can happen).
async fn within<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(600), future).await.expect("nothing happened for 600 s")
}

/// Lets every task run until all of them wait (paused time then moves 1 ms).
async fn settle() {
    tokio::time::sleep(Duration::from_millis(1)).await;
}

/// A hub over an in-memory store, and the shutdown token its sessions share.
struct Server {
    hub: Arc<Hub>,
    shutdown: CancellationToken,
    sessions: TaskTracker,
}

impl Server {
    fn new() -> Self {
        let (commits, stream) = commit_stream(64);
        let settings = HubSettings {
            recovery_limit: 100,
            typing_interval: Duration::from_secs(2),
            presence_max_members: 1000,
            node: "test".into(),
            user_rate_per_second: 0.0,
            user_rate_burst: 1,
            presence_lease: Duration::from_secs(15),
            max_text_chars: 4000,
            read_receipts_max_members: 100,
        };
        let hub = Arc::new(Hub::new(Arc::new(MemoryStore::new(commits)), Arc::new(Solo), settings, Arc::default()));
        tokio::spawn({
            let hub = Arc::clone(&hub);
            async move { hub.run_dispatcher(stream).await }
        });
        Self { hub, shutdown: CancellationToken::new(), sessions: TaskTracker::new() }
    }

    fn context(&self, name: &str, settings: SessionSettings) -> SessionContext {
        SessionContext {
            hub: Arc::clone(&self.hub),
            settings: Arc::new(settings),
            shutdown: self.shutdown.clone(),
            identity: crate::auth::Identity::guest(User { id: format!("u_{name}"), name: name.to_owned() }),
        }
    }

    /// A JSON session whose socket holds at most `buffered` unread messages.
    fn json(&self, name: &str, settings: SessionSettings, buffered: usize) -> (Client, JoinHandle<()>) {
        let (socket, client) = pair(buffered);
        (client, self.sessions.spawn(run_json(socket, self.context(name, settings))))
    }

    /// A plain-text session in `room`.
    fn plain(&self, name: &str, settings: SessionSettings, room: &str) -> (Client, JoinHandle<()>) {
        let (socket, client) = pair(64);
        let room = RoomName::new(room).unwrap();
        (client, self.sessions.spawn(run_plain(socket, self.context(name, settings), room)))
    }
}

/// The session's end of an in-memory connection.
struct MemorySocket {
    incoming: mpsc::Receiver<WsMessage>,
    outgoing: PollSender<WsMessage>,
}

/// The client's end.
struct Client {
    to_session: mpsc::Sender<WsMessage>,
    from_session: mpsc::Receiver<WsMessage>,
}

fn pair(buffered: usize) -> (MemorySocket, Client) {
    let (to_session, incoming) = mpsc::channel(64);
    let (outgoing, from_session) = mpsc::channel(buffered);
    (MemorySocket { incoming, outgoing: PollSender::new(outgoing) }, Client { to_session, from_session })
}

impl Stream for MemorySocket {
    type Item = Result<WsMessage, WsError>;

    fn poll_next(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Option<Self::Item>> {
        self.incoming.poll_recv(cx).map(|message| message.map(Ok))
    }
}

impl Sink<WsMessage> for MemorySocket {
    type Error = WsError;

    fn poll_ready(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Result<(), Self::Error>> {
        self.outgoing.poll_reserve(cx).map_err(|_| WsError::SendAfterClose)
    }

    fn start_send(mut self: std::pin::Pin<&mut Self>, message: WsMessage) -> Result<(), Self::Error> {
        self.outgoing.send_item(message).map_err(|_| WsError::SendAfterClose)
    }

    fn poll_flush(self: std::pin::Pin<&mut Self>, _cx: &mut std::task::Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> Poll<Result<(), Self::Error>> {
        self.outgoing.close();
        Poll::Ready(Ok(()))
    }
}

impl Client {
    async fn send(&self, message: WsMessage) {
        within(self.to_session.send(message)).await.expect("the session stopped reading");
    }

    async fn send_json(&self, frame: Value) {
        self.send(WsMessage::Text(frame.to_string().into())).await;
    }

    async fn send_text(&self, text: &str) {
        self.send(WsMessage::Text(text.into())).await;
    }

    async fn recv(&mut self) -> WsMessage {
        within(self.from_session.recv()).await.expect("the session ended without a close frame")
    }

    /// The next message, which must be a text frame.
    async fn text(&mut self) -> String {
        match self.recv().await {
            WsMessage::Text(text) => text.to_string(),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    /// The next message, which must be a JSON frame.
    async fn event(&mut self) -> Value {
        serde_json::from_str(&self.text().await).unwrap()
    }

    /// Reads until the close frame and returns its code and reason, and how many
    /// `message` events came before it.
    async fn closed(&mut self) -> (u16, String, usize) {
        let mut messages = 0;
        loop {
            match self.recv().await {
                WsMessage::Close(Some(frame)) => return (frame.code, frame.reason.to_string(), messages),
                WsMessage::Close(None) => panic!("a close frame without a code"),
                WsMessage::Text(text) if text.contains(r#""type":"message""#) => messages += 1,
                _ => {}
            }
        }
    }

    /// Joins `room` (the welcome must have been read) and returns the reply.
    async fn join(&mut self, room: &str) -> Value {
        self.send_json(json!({"op": "join", "id": "join", "room": room})).await;
        let reply = self.event().await;
        assert_eq!((&reply["type"], &reply["ok"]), (&json!("reply"), &json!(true)), "{reply}");
        reply
    }
}

#[tokio::test(start_paused = true)]
async fn a_silent_client_is_pinged_each_heartbeat_and_closed_at_the_idle_timeout() {
    let server = Server::new();
    let (mut client, session) = server.json("ann", settings(), 16);
    let start = Instant::now();
    assert_eq!(client.event().await["type"], "welcome");
    for beat in 1..=2 {
        assert!(matches!(client.recv().await, WsMessage::Ping(_)));
        assert_eq!(start.elapsed().as_secs(), HEARTBEAT.as_secs() * beat);
    }
    // The third beat (90 s) finds 90 s of silence, past the 75 s idle timeout.
    let (code, reason, _) = client.closed().await;
    assert_eq!((code, reason.as_str()), (close_code::NORMAL, "idle timeout"));
    assert_eq!(start.elapsed().as_secs(), 90);
    within(session).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn any_frame_from_the_client_defers_the_idle_close() {
    let server = Server::new();
    let (mut client, _session) = server.json("ann", settings(), 16);
    let start = Instant::now();
    assert_eq!(client.event().await["type"], "welcome");
    assert!(matches!(client.recv().await, WsMessage::Ping(_)));
    client.send(WsMessage::Pong(Default::default())).await;
    // Heard at 30 s: pinged at 60 and 90 s, closed at 120 s (75 s of silence), not at 90 s.
    for _ in 0..2 {
        assert!(matches!(client.recv().await, WsMessage::Ping(_)));
    }
    let (code, _, _) = client.closed().await;
    assert_eq!(code, close_code::NORMAL);
    assert_eq!(start.elapsed().as_secs(), 120);
}

#[tokio::test(start_paused = true)]
async fn json_frames_over_the_rate_are_refused_then_the_connection_closed_after_the_strikes() {
    let server = Server::new();
    let limited = SessionSettings { rate_per_second: 1.0, rate_burst: 3, rate_strikes: 3, ..settings() };
    let (mut client, _session) = server.json("ann", limited, 16);
    assert_eq!(client.event().await["type"], "welcome");
    let ping = |id: u32| json!({"op": "ping", "id": id.to_string()});
    for id in 1..=3 {
        client.send_json(ping(id)).await;
        assert_eq!(client.event().await, json!({"type": "reply", "ok": true, "id": id.to_string()}));
    }
    client.send_json(ping(4)).await;
    let refused = client.event().await;
    assert_eq!((refused["id"].as_str(), refused["error"]["code"].as_str()), (Some("4"), Some("rate_limited")));

    // A second later one token is back, and an accepted frame clears the strikes.
    tokio::time::sleep(Duration::from_secs(1)).await;
    client.send_json(ping(5)).await;
    assert_eq!(client.event().await["ok"], true);
    for id in 6..=8 {
        client.send_json(ping(id)).await;
    }
    let (code, _, _) = client.closed().await;
    assert_eq!(code, close_code::RATE_LIMITED);
}

#[tokio::test(start_paused = true)]
async fn plain_text_over_the_rate_waits_instead_of_being_refused() {
    let server = Server::new();
    let limited = SessionSettings { rate_per_second: 1.0, rate_burst: 1, ..settings() };
    let (mut client, _session) = server.plain("ann", limited, "chat");
    settle().await;
    let start = Instant::now();
    for text in ["a", "b", "c"] {
        client.send_text(text).await;
    }
    for (second, text) in ["a", "b", "c"].into_iter().enumerate() {
        assert_eq!(client.text().await, format!("Message reçu : {text}"));
        assert_eq!(start.elapsed().as_secs(), second as u64);
    }
}

/// Ann joins `lobby` and reads her welcome and join reply; Bob, who joined first and
/// never reads, is the one who talks.
async fn ann_and_bob(server: &Server, ann: SessionSettings, buffered: usize) -> (Client, JoinHandle<()>, Client) {
    let (mut bob, _bob_session) = server.json("bob", settings(), 1024);
    assert_eq!(bob.event().await["type"], "welcome");
    bob.join("lobby").await;
    let (mut ann, session) = server.json("ann", ann, buffered);
    assert_eq!(ann.event().await["type"], "welcome");
    ann.join("lobby").await;
    (ann, session, bob)
}

async fn say(bob: &Client, text: &str) {
    bob.send_json(json!({"op": "send", "room": "lobby", "text": text})).await;
}

#[tokio::test(start_paused = true)]
async fn a_member_whose_outbox_overflows_while_a_write_waits_leaves_at_once_and_gets_4008() {
    let server = Server::new();
    let small = SessionSettings { outbox_frames: 16, ..settings() };
    let (mut ann, _session, bob) = ann_and_bob(&server, small, 1).await;
    for text in ["fills the socket", "waits to be written"] {
        say(&bob, text).await;
        settle().await;
    }
    assert_eq!(online_in_lobby(&server), 2);
    for n in 0..40 {
        say(&bob, &format!("m{n}")).await;
    }
    settle().await;
    // Ann's write still waits for her to read, yet the overflow already ended her
    // session: she is out of the room before her close frame can even be written.
    assert_eq!(online_in_lobby(&server), 1);
    let (code, _, delivered) = ann.closed().await;
    assert_eq!(code, close_code::SLOW_CONSUMER);
    assert!(delivered < 42, "the overflow dropped the queue instead of delivering it ({delivered})");
}

fn online_in_lobby(server: &Server) -> usize {
    server.hub.members(&RoomName::new("lobby").unwrap(), None, 10).unwrap().member_count
}

#[tokio::test(start_paused = true)]
async fn a_write_stalled_past_the_idle_timeout_ends_the_session_as_a_slow_consumer() {
    let server = Server::new();
    let (_ann, session, bob) = ann_and_bob(&server, settings(), 1).await;
    let start = Instant::now();
    // The first fills the socket, the second write waits for a reader that never comes.
    for text in ["one", "two"] {
        say(&bob, text).await;
    }
    within(session).await.unwrap();
    let stalled = start.elapsed();
    assert!(stalled >= IDLE_TIMEOUT && stalled < IDLE_TIMEOUT + Duration::from_secs(10), "{stalled:?}");
    assert_eq!(online_in_lobby(&server), 1, "ann left the room when her session ended");
}

/// The wakeup rule: a write that waits may swallow the outbox's wakeup for frames that
/// arrive meanwhile, so after a write the loop looks at the outbox again before it
/// waits. Were it to wait, the third message would stay queued: nothing else wakes the
/// session before the test's bound (its heartbeat is set beyond it).
#[tokio::test(start_paused = true)]
async fn frames_queued_during_a_waiting_write_are_written_without_another_wakeup() {
    let server = Server::new();
    let no_heartbeat =
        SessionSettings { heartbeat: Duration::from_secs(3600), idle_timeout: Duration::from_secs(7200), ..settings() };
    let (mut ann, _session, bob) = ann_and_bob(&server, no_heartbeat, 1).await;
    say(&bob, "one").await; // fills ann's socket
    settle().await;
    say(&bob, "two").await; // its write waits
    settle().await;
    say(&bob, "three").await; // queued while the write waits
    settle().await;
    for expected in ["one", "two", "three"] {
        let event = ann.event().await;
        assert_eq!(event["text"], expected, "{event}");
    }
}

#[tokio::test(start_paused = true)]
async fn shutdown_answers_what_was_read_then_says_closing_and_closes_with_1001() {
    let server = Server::new();
    let (mut ann, _session, _bob) = ann_and_bob(&server, settings(), 16).await;
    ann.send_json(json!({"op": "send", "id": "s", "room": "lobby", "text": "last words"})).await;
    settle().await;
    server.shutdown.cancel();
    let mut seen = Vec::new();
    let code = loop {
        match ann.recv().await {
            WsMessage::Text(text) => seen.push(serde_json::from_str::<Value>(&text).unwrap()["type"].clone()),
            WsMessage::Close(Some(frame)) => break frame.code,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(code, close_code::GOING_AWAY);
    assert_eq!(seen.last(), Some(&json!("closing")));
    // Bob, shut down too, may be announced leaving on the way.
    seen.retain(|kind| kind != "presence");
    assert_eq!(seen, [json!("reply"), json!("message"), json!("closing")]);
    server.sessions.close();
    within(server.sessions.wait()).await;
}

/// What an idle connection costs is mostly this future, kept for the connection's
/// whole life: rare paths are boxed so they do not grow it. This is the session's own
/// part, without its socket; raise the budget only knowingly (BENCHMARKS.md records
/// the memory per idle connection). 800 until 2026-12-02; 816 since token expiry
/// (a boxed timer and its wait in the loop: 16 bytes of ~2.3 KiB per idle connection).
#[tokio::test]
async fn a_sessions_future_stays_within_its_budget() {
    const BUDGET: usize = 816;
    let server = Server::new();
    let (socket, _client) = pair(1);
    let socket_size = std::mem::size_of_val(&socket);
    let json = run_json(socket, server.context("ann", settings()));
    let own = std::mem::size_of_val(&json) - socket_size;
    let (socket, _client) = pair(1);
    let plain = run_plain(socket, server.context("bob", settings()), RoomName::new("chat").unwrap());
    let plain_own = std::mem::size_of_val(&plain) - socket_size;
    assert!(own <= BUDGET && plain_own <= BUDGET, "json {own} bytes, plain {plain_own}; budget {BUDGET}");
}

/// The framing's close codes are the ones the protocol documents, and the session
/// sends them as they are.
#[test]
fn framing_errors_close_with_the_framings_code() {
    let close = |error: WsError| End::from_ws_error(error).close_frame().map(|frame| (frame.code, frame.reason));
    let (code, reason) = close(WsError::TooBig { size: 70_000, limit: 65_536 }).unwrap();
    assert_eq!((code, reason.as_str()), (close_code::TOO_BIG, "frame of 70000 bytes; the limit is 65536"));
    let (code, reason) = close(WsError::InvalidUtf8("a text message")).unwrap();
    assert_eq!((code, reason.as_str()), (close_code::INVALID_DATA, "invalid UTF-8 in a text message"));
    let (code, _) = close(WsError::Protocol("unmasked frame from a client".into())).unwrap();
    assert_eq!(code, close_code::PROTOCOL_ERROR);
    assert_eq!(close(WsError::Reset), None);
    assert_eq!(close(WsError::SendAfterClose), None);
}
