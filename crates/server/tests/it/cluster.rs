//! Several nodes as one cluster: one PostgreSQL database shared by the nodes, Redis or
//! NATS between them, nginx in front of them.
//!
//! Needs, on 127.0.0.1: PostgreSQL on port 5432 (user `postgres`, trust
//! authentication; each test creates a database of its own, `bavard_it_<hex>`, and
//! drops it), and installed but not running: `redis-server`, `nats-server`, Debian's
//! `nginx` and PostgreSQL's server binaries (`initdb`, `postgres`). Each test starts
//! its own Redis or NATS on a free port, and uses a cluster name of its own
//! (`--cluster-name`), so runs do not interfere. `.ci/run` installs and starts them; a
//! missing service fails the test, it is never skipped (see `services.rs`).

use std::{
    collections::{BTreeMap, HashSet},
    net::SocketAddr,
    path::Path,
    time::{Duration, Instant},
};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::{helpers::*, services::*};

/// A node of `cluster` in this process, on `db` and `broker`, named `{cluster}-{id}`.
async fn node(db: &Path, broker: &str, cluster: &str, id: &str, lease_secs: u64) -> TestServer {
    let (broker, cluster, id) = (broker.to_owned(), cluster.to_owned(), id.to_owned());
    start_on(db, move |config| {
        config.broker = Some(broker);
        config.node_id = Some(format!("{cluster}-{id}"));
        config.cluster_name = cluster;
        config.presence_lease_secs = lease_secs;
    })
    .await
}

/// A node of `cluster` as a child process (the `bavard` binary), without rate limits,
/// with `extra` flags.
fn child_node(db: &str, broker: &str, cluster: &str, id: &str, extra: &[&str]) -> ChildServer {
    let node_id = format!("{cluster}-{id}");
    let mut args = vec!["--broker", broker, "--node-id", &node_id, "--cluster-name", cluster];
    args.extend(["--rate-per-second", "0", "--user-rate-per-second", "0"]);
    args.extend_from_slice(extra);
    ChildServer::start(Path::new(db), &args)
}

/// Kills `node` with SIGKILL (`kill -9`: no goodbye, no flush) and reaps it.
fn kill_9(node: &mut ChildServer) {
    node.child.kill().expect("the node runs");
    node.child.wait().expect("the node is reaped");
}

/// A raw JSON client on `url` as the guest `name` (guests of one name are one user on
/// every node: `g_{name}`).
async fn guest(url: &str, name: &str) -> JsonClient {
    JsonClient::connect(&format!("{url}/ws?name={name}"), &[]).await.unwrap_or_else(|refused| {
        panic!("{url} refused the connection: {refused:?}");
    })
}

fn ws_base(addr: SocketAddr) -> String {
    format!("ws://{addr}")
}

fn seq(message: &Value) -> u64 {
    message["seq"].as_u64().unwrap_or_else(|| panic!("no seq: {message}"))
}

fn text(message: &Value) -> String {
    message["text"].as_str().unwrap_or_else(|| panic!("no text: {message}")).to_owned()
}

/// The whole history of `room`, oldest first, paged forward with `history`.
async fn history(client: &mut JsonClient, room: &str) -> Vec<Value> {
    let (mut all, mut after) = (Vec::new(), 0);
    loop {
        let reply = client.ok(json!({"op": "history", "room": room, "after": after, "limit": 200})).await;
        let page = reply["messages"].as_array().cloned().unwrap_or_default();
        if let Some(last) = page.last() {
            after = seq(last);
        }
        all.extend(page);
        if reply["has_more"] != true {
            return all;
        }
    }
}

/// Sends `text` with `key` and returns the ok reply.
async fn send(client: &mut JsonClient, room: &str, text: &str, key: &str) -> Value {
    client.ok(json!({"op": "send", "room": room, "text": text, "key": key})).await
}

/// Polls `url` (a `/readyz`) until it answers `expected`; fails after `limit`.
async fn readyz_becomes(url: &str, expected: u16, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let (status, body) = http_get(url).await;
        if status == expected {
            return;
        }
        assert!(Instant::now() < deadline, "{url} still answers {status} ({body}) after {limit:?}, not {expected}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The number of JSON WebSockets the node at `addr` holds (`bavard_connections`).
async fn json_connections(addr: SocketAddr) -> f64 {
    let (status, text) = http_get(&format!("http://{addr}/metrics")).await;
    assert_eq!(status, 200, "{text}");
    text.lines()
        .find_map(|line| line.strip_prefix("bavard_connections{protocol=\"json\"} ")?.parse().ok())
        .unwrap_or_else(|| panic!("no bavard_connections{{protocol=\"json\"}} in {text}"))
}

/// Whether a presence event lists `user_id` among those who `joined`.
fn joined(event: &Value, user_id: &str) -> bool {
    event["joined"].as_array().is_some_and(|users| users.iter().any(|user| user["id"] == user_id))
}

/// The ids listed by a `members` reply.
fn member_ids(reply: &Value) -> Vec<String> {
    let members = reply["members"].as_array().cloned().unwrap_or_default();
    members.iter().map(|user| user["id"].as_str().unwrap_or_default().to_owned()).collect()
}

const MEMBERS_PER_NODE: usize = 2;
const SENDS_PER_MEMBER: usize = 50;

/// Three nodes, two members on each in one room, every member sending 50 messages at
/// once: every member receives the same 300 messages, seq 1 to 300 in order, and
/// history on every node says the same.
async fn three_nodes_deliver_one_sequence(broker: BrokerProcess) {
    const ROOM: &str = "one-sequence";
    let pg = PgDatabase::create();
    let cluster = unique("it");
    let mut nodes = Vec::new();
    for id in ["a", "b", "c"] {
        nodes.push(node(pg.path(), &broker.url(), &cluster, id, 15).await);
    }
    let mut members = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        for m in 0..MEMBERS_PER_NODE {
            let mut member = node.json_guest(&format!("n{n}m{m}")).await;
            let reply = member.ok(json!({"op": "join", "room": ROOM})).await;
            assert_eq!(reply["seq"], 0, "a fresh database: {reply}");
            members.push(member);
        }
    }
    let total = members.len() * SENDS_PER_MEMBER;

    // Every member sends its 50 (one at a time, each after the previous one's reply),
    // all members at once, then reads until it has seen `total` messages.
    let tasks: Vec<_> = members
        .into_iter()
        .enumerate()
        .map(|(i, mut member)| {
            tokio::spawn(async move {
                let mut acked = Vec::new();
                for k in 0..SENDS_PER_MEMBER {
                    let text = format!("member {i} message {k}");
                    let reply = send(&mut member, ROOM, &text, &format!("m{i}-{k}")).await;
                    assert!(reply["duplicate"].is_null(), "a fresh key is no duplicate: {reply}");
                    acked.push((seq(&reply), text));
                }
                let mut seen = Vec::new();
                while seen.len() < total {
                    let event = member.next_event_of("message").await;
                    seen.push((event["room"].as_str().unwrap_or_default().to_owned(), seq(&event), text(&event)));
                }
                (member, acked, seen)
            })
        })
        .collect();
    let mut members = Vec::new();
    let mut acked = Vec::new();
    let mut sequences = Vec::new();
    for task in tasks {
        let (member, sent, seen) = tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("a member did not send and receive everything within 60 s")
            .expect("a member's task failed");
        members.push(member);
        acked.extend(sent);
        sequences.push(seen);
    }

    let expected_seqs: Vec<u64> = (1..=total as u64).collect();
    let first = sequences[0].clone();
    for (i, seen) in sequences.iter().enumerate() {
        let seqs: Vec<u64> = seen.iter().map(|(_, seq, _)| *seq).collect();
        assert_eq!(seqs, expected_seqs, "member {i} saw seqs out of order, with a gap or twice");
        assert!(seen.iter().all(|(room, _, _)| room == ROOM), "member {i} saw another room");
        assert_eq!(seen, &first, "member {i} saw another sequence than member 0");
    }
    let texts: HashSet<&str> = first.iter().map(|(_, _, text)| text.as_str()).collect();
    assert_eq!(texts.len(), total, "every message once");
    for (seq, text) in &acked {
        assert_eq!(&first[(*seq - 1) as usize].2, text, "the acked seq {seq} is another message");
    }

    // Nothing more comes: a marker is the next message for everyone.
    let marker_seq = seq(&send(&mut members[0], ROOM, "marker", "marker").await);
    assert_eq!(marker_seq, total as u64 + 1);
    for (i, member) in members.iter_mut().enumerate() {
        let next = member.next_event_of("message").await;
        assert_eq!((seq(&next), text(&next)), (marker_seq, "marker".to_owned()), "member {i}: a duplicate came first");
    }

    // History is the same through every node.
    let expected: Vec<(u64, String)> = first.iter().map(|(_, seq, text)| (*seq, text.clone())).collect();
    for (n, member) in members.iter_mut().step_by(MEMBERS_PER_NODE).enumerate() {
        let stored: Vec<(u64, String)> = history(member, ROOM).await.iter().map(|m| (seq(m), text(m))).collect();
        assert_eq!(stored.len(), total + 1, "history through node {n}: every message and the marker");
        assert_eq!(stored[..total], expected[..], "history through node {n}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_on_redis_deliver_one_sequence_to_every_member() {
    let _serial = one_private_service_test_at_a_time().await;
    three_nodes_deliver_one_sequence(BrokerProcess::redis()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_on_nats_deliver_one_sequence_to_every_member() {
    let _serial = one_private_service_test_at_a_time().await;
    three_nodes_deliver_one_sequence(BrokerProcess::nats()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_with_9_loses_nothing_acked_and_its_clients_recover_elsewhere() {
    let _serial = one_private_service_test_at_a_time().await;
    const ROOM: &str = "killed";
    const TOTAL: usize = 100;
    const WINDOW: usize = 10;
    const KILL_AFTER: usize = 30;
    let pg = PgDatabase::create();
    let broker = BrokerProcess::redis();
    let cluster = unique("it");
    let mut a = child_node(&pg.url, &broker.url(), &cluster, "a", &[]);
    let b = child_node(&pg.url, &broker.url(), &cluster, "b", &[]);
    let c = child_node(&pg.url, &broker.url(), &cluster, "c", &[]);
    let message = |k: usize| format!("message {k}");
    let key = |k: usize| format!("w-{k}");

    let mut observer = guest(&ws_base(c.addr), "observer").await;
    observer.ok(json!({"op": "join", "room": ROOM})).await;
    let mut writer = guest(&ws_base(a.addr), "writer").await;
    writer.ok(json!({"op": "join", "room": ROOM})).await;

    // Sends on A, up to WINDOW unanswered at a time, and kills A once 30 are acked:
    // the sends then in flight may or may not have been committed.
    let mut acked: BTreeMap<usize, u64> = BTreeMap::new();
    let mut seen: BTreeMap<u64, String> = BTreeMap::new();
    let (mut sent, mut answered, mut killed) = (0, 0, false);
    loop {
        while !killed && sent < TOTAL && sent - answered < WINDOW {
            let frame = json!({"op": "send", "id": sent, "room": ROOM, "text": message(sent), "key": key(sent)});
            let written =
                tokio::time::timeout(WAIT, writer.socket.send(WsMessage::Text(frame.to_string().into()))).await;
            if !matches!(written, Ok(Ok(()))) {
                break;
            }
            sent += 1;
        }
        let frame = match tokio::time::timeout(WAIT, writer.socket.next()).await {
            Err(_) => panic!("the connection to node A neither answered nor ended (killed: {killed})"),
            Ok(Some(Ok(WsMessage::Text(frame)))) => frame,
            Ok(Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_)))) => continue,
            Ok(Some(Ok(_)) | Some(Err(_)) | None) => break,
        };
        let frame: Value = serde_json::from_str(&frame).expect("a JSON frame");
        match frame["type"].as_str() {
            Some("reply") => {
                assert_eq!(frame["ok"], true, "a send failed before the kill: {frame}");
                let k = frame["id"].as_u64().expect("the send's id") as usize;
                acked.insert(k, seq(&frame));
                answered += 1;
            }
            Some("message") => {
                seen.insert(seq(&frame), text(&frame));
            }
            _ => {}
        }
        if !killed && acked.len() >= KILL_AFTER {
            kill_9(&mut a);
            killed = true;
        }
    }
    assert!(killed, "the connection ended before node A was killed");
    assert!(acked.len() >= KILL_AFTER);

    // The writer comes back on B and recovers from the last seq it saw.
    let since = seen.keys().next_back().copied().unwrap_or(0);
    let mut writer = guest(&ws_base(b.addr), "writer").await;
    let reply = writer.ok(json!({"op": "join", "room": ROOM, "since": since})).await;
    assert_eq!(reply["recovered"], true, "{reply}");
    for recovered in reply["messages"].as_array().cloned().unwrap_or_default() {
        seen.insert(seq(&recovered), text(&recovered));
    }
    for (k, seq) in &acked {
        assert_eq!(seen.get(seq), Some(&message(*k)), "acked message {k} (seq {seq}) was not recovered");
    }

    // It sends again what was not acked, with the same keys: what A committed without
    // answering is a duplicate, not a second message.
    for k in 0..TOTAL {
        if acked.contains_key(&k) {
            continue;
        }
        let reply = send(&mut writer, ROOM, &message(k), &key(k)).await;
        if k >= sent {
            assert!(reply["duplicate"].is_null(), "message {k} was never sent before: {reply}");
        }
        acked.insert(k, seq(&reply));
    }
    let marker = seq(&send(&mut writer, ROOM, "marker", "marker").await);

    // Stored: every message exactly once, at its acked seq, seq 1 to 101 without a gap.
    let stored = history(&mut writer, ROOM).await;
    let seqs: Vec<u64> = stored.iter().map(seq).collect();
    assert_eq!(seqs, (1..=marker).collect::<Vec<_>>(), "the stored seqs");
    assert_eq!(marker, TOTAL as u64 + 1, "one message per key, and the marker");
    let keys: Vec<&str> = stored.iter().map(|m| m["key"].as_str().unwrap_or_default()).collect();
    assert_eq!(keys.iter().collect::<HashSet<_>>().len(), keys.len(), "a key stored twice: {keys:?}");
    for (k, acked_seq) in &acked {
        let at = &stored[(*acked_seq - 1) as usize];
        assert_eq!(
            (text(at), at["key"].as_str()),
            (message(*k), Some(key(*k).as_str())),
            "the message acked as {acked_seq}"
        );
    }

    // The observer on C saw all of it live, in order, without a gap or a repeat
    // (what A committed but never published came from the store).
    let mut live = Vec::new();
    while live.last().map(|(seq, _)| *seq) != Some(marker) {
        let event = observer.next_event_of("message").await;
        live.push((seq(&event), text(&event)));
    }
    let stored: Vec<(u64, String)> = stored.iter().map(|m| (seq(m), text(m))).collect();
    assert_eq!(live, stored, "what the observer on node C saw");
    drop(b);
}

/// Two nodes; the broker dies and comes back while one node's member writes: the
/// store acks it all, `/readyz` says 503 meanwhile, and the other node's member gets
/// every message in order once the broker is back.
async fn broker_outage(mut broker: BrokerProcess) {
    const ROOM: &str = "outage";
    const DURING: u64 = 10;
    let pg = PgDatabase::create();
    let cluster = unique("it");
    let a = node(pg.path(), &broker.url(), &cluster, "a", 15).await;
    let b = node(pg.path(), &broker.url(), &cluster, "b", 15).await;
    let mut writer = a.json_guest("writer").await;
    writer.ok(json!({"op": "join", "room": ROOM})).await;
    let mut reader = b.json_guest("reader").await;
    reader.ok(json!({"op": "join", "room": ROOM})).await;
    for node in [&a, &b] {
        readyz_becomes(&node.http("/readyz"), 200, WAIT).await;
    }

    // The cluster works.
    send(&mut writer, ROOM, "before", "before").await;
    let first = reader.next_event_of("message").await;
    assert_eq!((seq(&first), text(&first)), (1, "before".to_owned()));

    broker.stop();
    for node in [&a, &b] {
        readyz_becomes(&node.http("/readyz"), 503, Duration::from_secs(10)).await;
    }
    for k in 0..DURING {
        let reply = send(&mut writer, ROOM, &format!("during {k}"), &format!("during-{k}")).await;
        assert_eq!(seq(&reply), 2 + k, "the store acks while the broker is down: {reply}");
    }

    broker.start();
    let caught_up = tokio::time::timeout(Duration::from_secs(15), async {
        let mut got = Vec::new();
        while got.len() < DURING as usize {
            let event = reader.next_event_of("message").await;
            got.push((seq(&event), text(&event)));
        }
        got
    })
    .await
    .expect("node B's member did not catch up within 15 s of the broker's return");
    let expected: Vec<(u64, String)> = (0..DURING).map(|k| (2 + k, format!("during {k}"))).collect();
    assert_eq!(caught_up, expected, "node B's member after the outage");
    for node in [&a, &b] {
        readyz_becomes(&node.http("/readyz"), 200, Duration::from_secs(10)).await;
    }

    // Live again, and nothing repeated: the next message is the marker.
    send(&mut writer, ROOM, "marker", "marker").await;
    let next = reader.next_event_of("message").await;
    assert_eq!((seq(&next), text(&next)), (DURING + 2, "marker".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_stopped_and_started_mid_run_leaves_no_gap() {
    let _serial = one_private_service_test_at_a_time().await;
    broker_outage(BrokerProcess::redis()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_stopped_and_started_mid_run_leaves_no_gap() {
    let _serial = one_private_service_test_at_a_time().await;
    broker_outage(BrokerProcess::nats()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_nodes_users_leave_the_presence_of_the_others() {
    let _serial = one_private_service_test_at_a_time().await;
    const ROOM: &str = "lease";
    const LEASE_SECS: u64 = 2;
    let pg = PgDatabase::create();
    let broker = BrokerProcess::redis();
    let cluster = unique("it");
    let lease = ["--presence-lease-secs", "2"];
    let mut a = child_node(&pg.url, &broker.url(), &cluster, "a", &lease);
    let b = child_node(&pg.url, &broker.url(), &cluster, "b", &lease);

    let mut watcher = guest(&ws_base(b.addr), "watcher").await;
    watcher.ok(json!({"op": "join", "room": ROOM})).await;
    let mut ghost = guest(&ws_base(a.addr), "ghost").await;
    ghost.ok(json!({"op": "join", "room": ROOM})).await;

    // B's member sees A's user arrive, and B lists it.
    let arrival = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let event = watcher.next_event_of("presence").await;
            if event["room"] == ROOM && joined(&event, "g_ghost") {
                return event;
            }
        }
    })
    .await
    .expect("node B's member did not see node A's user arrive within 5 s");
    assert_eq!(arrival["member_count"], 2, "{arrival}");
    let members = watcher.ok(json!({"op": "members", "room": ROOM})).await;
    let mut listed = member_ids(&members);
    listed.sort();
    assert_eq!(listed, ["g_ghost", "g_watcher"], "{members}");

    kill_9(&mut a);
    let limit = Duration::from_secs(LEASE_SECS + 3);
    let departure = tokio::time::timeout(limit, watcher.next_left(ROOM, "g_ghost"))
        .await
        .unwrap_or_else(|_| panic!("node A's user was still online for node B {limit:?} after A died"));
    assert_eq!(departure["member_count"], 1, "{departure}");
    let members = watcher.ok(json!({"op": "members", "room": ROOM})).await;
    assert_eq!(member_ids(&members), ["g_watcher"], "{members}");
    assert_eq!(members["member_count"], 1, "{members}");
    drop(ghost);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_in_front_of_two_nodes_passes_upgrades_and_a_client_recovers_through_it() {
    let _serial = one_private_service_test_at_a_time().await;
    const ROOM: &str = "proxied";
    let pg = PgDatabase::create();
    let broker = BrokerProcess::redis();
    let cluster = unique("it");
    // Every client comes from nginx's address: no per-address limit.
    let behind_proxy = ["--max-connections-per-ip", "0"];
    let mut nodes = [
        child_node(&pg.url, &broker.url(), &cluster, "a", &behind_proxy),
        child_node(&pg.url, &broker.url(), &cluster, "b", &behind_proxy),
    ];
    let nginx = Nginx::start(&[nodes[0].addr, nodes[1].addr]);
    let (status, body) = http_get(&nginx.http("/readyz")).await;
    assert_eq!(status, 200, "/readyz through nginx: {body}");

    // Through nginx: the upgrade, a join, sends and their acks.
    let mut roamer = JsonClient::connect(&nginx.ws("/ws?name=roamer"), &[])
        .await
        .unwrap_or_else(|refused| panic!("nginx did not pass the upgrade on: {refused:?}"));
    roamer.ok(json!({"op": "join", "room": ROOM})).await;
    let mut acked = BTreeMap::new();
    for k in 0..5 {
        let reply = send(&mut roamer, ROOM, &format!("roamer {k}"), &format!("r-{k}")).await;
        acked.insert(seq(&reply), format!("roamer {k}"));
    }
    let mut last_seen = 0;
    while last_seen < 5 {
        last_seen = seq(&roamer.next_event_of("message").await);
    }

    // The node holding the connection (its metrics say so) dies.
    let deadline = Instant::now() + WAIT;
    let holder = loop {
        let counts = [json_connections(nodes[0].addr).await, json_connections(nodes[1].addr).await];
        match counts {
            [1.0, 0.0] => break 0,
            [0.0, 1.0] => break 1,
            _ => assert!(Instant::now() < deadline, "which node holds the connection? {counts:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    kill_9(&mut nodes[holder]);
    roamer.closed().await;
    let survivor = &nodes[1 - holder];

    // Meanwhile someone writes on the survivor.
    let mut other = guest(&ws_base(survivor.addr), "other").await;
    other.ok(json!({"op": "join", "room": ROOM})).await;
    for k in 0..3 {
        let reply = send(&mut other, ROOM, &format!("other {k}"), &format!("o-{k}")).await;
        acked.insert(seq(&reply), format!("other {k}"));
    }

    // The client comes back through nginx (which skips the dead node) and recovers.
    let mut roamer = JsonClient::connect(&nginx.ws("/ws?name=roamer"), &[])
        .await
        .unwrap_or_else(|refused| panic!("nginx did not reach the surviving node: {refused:?}"));
    let reply = roamer.ok(json!({"op": "join", "room": ROOM, "since": last_seen})).await;
    assert_eq!(reply["recovered"], true, "{reply}");
    let recovered: Vec<(u64, String)> =
        reply["messages"].as_array().cloned().unwrap_or_default().iter().map(|m| (seq(m), text(m))).collect();
    assert_eq!(recovered, [(6, "other 0".to_owned()), (7, "other 1".to_owned()), (8, "other 2".to_owned())]);
    let reply = send(&mut roamer, ROOM, "roamer again", "r-again").await;
    acked.insert(seq(&reply), "roamer again".to_owned());

    let stored: BTreeMap<u64, String> = history(&mut roamer, ROOM).await.iter().map(|m| (seq(m), text(m))).collect();
    assert_eq!(stored, acked, "history through nginx: every acked message, once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_fail_with_unavailable_while_postgres_is_down_and_nothing_acked_is_lost() {
    let _serial = one_private_service_test_at_a_time().await;
    const ROOM: &str = "pg-outage";
    let mut pg = PrivatePostgres::create();
    let url = pg.url();
    let server = start_on(Path::new(&url), |_| {}).await;
    let mut client = server.json_guest("steady").await;
    client.ok(json!({"op": "join", "room": ROOM})).await;
    let mut acked: BTreeMap<String, u64> = BTreeMap::new();
    for k in 0..5 {
        let key = format!("before-{k}");
        acked.insert(key.clone(), seq(&send(&mut client, ROOM, &key, &key).await));
    }

    pg.stop();
    let limit = Duration::from_secs(10);
    let mut refused = Vec::new();
    for k in 0..3 {
        let key = format!("down-{k}");
        let request = json!({"op": "send", "room": ROOM, "text": key, "key": key});
        let reply = tokio::time::timeout(limit, client.request(request))
            .await
            .unwrap_or_else(|_| panic!("a send while PostgreSQL is down was not answered within {limit:?}"));
        assert_eq!(reply["ok"], false, "a send was acked while PostgreSQL is down: {reply}");
        assert_eq!(reply["error"]["code"], "unavailable", "{reply}");
        assert!(!reply["error"]["message"].as_str().unwrap_or_default().is_empty(), "the error says why: {reply}");
        refused.push(key);
    }
    readyz_becomes(&server.http("/readyz"), 503, limit).await;

    pg.start();
    // Sends work again within a few seconds; until then they are refused the same way.
    let deadline = Instant::now() + Duration::from_secs(15);
    let first_after = loop {
        let reply = client.request(json!({"op": "send", "room": ROOM, "text": "after", "key": "after"})).await;
        if reply["ok"] == true {
            break reply;
        }
        assert_eq!(reply["error"]["code"], "unavailable", "{reply}");
        assert!(Instant::now() < deadline, "sends still fail 15 s after PostgreSQL came back: {reply}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    acked.insert("after".to_owned(), seq(&first_after));
    readyz_becomes(&server.http("/readyz"), 200, limit).await;
    // The refused sends, again with their keys.
    for key in refused {
        acked.insert(key.clone(), seq(&send(&mut client, ROOM, &key, &key).await));
    }

    // Every acked message stored once, at its seq, without a gap; and the member saw
    // exactly those, in order.
    let stored = history(&mut client, ROOM).await;
    let by_key: BTreeMap<String, u64> =
        stored.iter().map(|m| (m["key"].as_str().unwrap_or_default().to_owned(), seq(m))).collect();
    assert_eq!(by_key, acked, "stored keys and seqs");
    assert_eq!(stored.iter().map(seq).collect::<Vec<_>>(), (1..=acked.len() as u64).collect::<Vec<_>>());
    let last = acked.len() as u64;
    let mut live = Vec::new();
    while live.last() != Some(&last) {
        live.push(seq(&client.next_event_of("message").await));
    }
    assert_eq!(live, (1..=last).collect::<Vec<_>>(), "the member's live messages");
    server.stop().await;
}

/// A node of `cluster` that verifies tokens signed with the tests' secret.
async fn signed_node(db: &Path, broker: &str, cluster: &str, id: &str) -> TestServer {
    let (broker, cluster, id) = (broker.to_owned(), cluster.to_owned(), id.to_owned());
    start_on(db, move |config| {
        crate::jwt::with_secret(config);
        config.broker = Some(broker);
        config.node_id = Some(format!("{cluster}-{id}"));
        config.cluster_name = cluster;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_rules_and_moderation_hold_on_every_node_and_after_a_restart_on_postgres() {
    let _serial = one_private_service_test_at_a_time().await;
    use crate::jwt::token;
    let (pg, broker, cluster) = (PgDatabase::create(), BrokerProcess::redis(), unique("it"));
    let a = signed_node(pg.path(), &broker.url(), &cluster, "a").await;
    let b = signed_node(pg.path(), &broker.url(), &cluster, "b").await;

    // A private room made on A is private on B.
    let mut olivia = a.json_token(&token("olivia")).await;
    olivia.ok(json!({"op": "create", "room": "vault", "kind": "private"})).await;
    olivia.ok(json!({"op": "join", "room": "vault"})).await;
    let mut sam_on_b = b.json_token(&token("sam")).await;
    sam_on_b.refused_with("forbidden", json!({"op": "join", "room": "vault"})).await;
    // A member added on A may join on B (B reads the changed rules again).
    olivia.ok(json!({"op": "add_member", "room": "vault", "user": "sam"})).await;
    within(async {
        loop {
            if sam_on_b.request(json!({"op": "join", "room": "vault"})).await["ok"] == true {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    olivia.ok(json!({"op": "send", "room": "vault", "text": "across nodes"})).await;
    assert_eq!(sam_on_b.next_message_text().await, "across nodes");
    // Typing on A reaches the member on B.
    olivia.ok(json!({"op": "typing", "room": "vault"})).await;
    let typing = sam_on_b.next_event_of("typing").await;
    assert_eq!(typing["user"]["id"], "olivia", "{typing}");

    // A ban on A takes the user's connection on B out at once, and holds on B.
    olivia.ok(json!({"op": "ban", "room": "vault", "user": "sam", "reason": "enough"})).await;
    let removed = sam_on_b.next_event_of("removed").await;
    assert_eq!((&removed["room"], &removed["action"]), (&json!("vault"), &json!("ban")), "{removed}");
    sam_on_b.refused_with("forbidden", json!({"op": "join", "room": "vault"})).await;
    sam_on_b.refused_with("forbidden", json!({"op": "history", "room": "vault"})).await;

    // After a restart of both nodes, the rules and the audit log are still in PostgreSQL.
    drop((olivia, sam_on_b));
    let (a, b) = (a.restart_with(crate::jwt::with_secret).await, b.stop().await);
    drop(b);
    let mut sam = a.json_token(&token("sam")).await;
    sam.refused_with("forbidden", json!({"op": "join", "room": "vault"})).await;
    let audit = rest("GET", &a.http("/api/rooms/vault/audit"), Some(&token("olivia")), None).await;
    assert_eq!(audit.status, 200, "{}", audit.body);
    let actions: Vec<String> =
        audit.json()["entries"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap().to_owned()).collect();
    assert_eq!(actions, ["ban", "add_member", "create"], "newest first");
}
