//! Crashes and faults, with the real binary as a child process: `kill -9` and SIGTERM
//! while several users send, the database on a full disk and on a read-only one (a
//! tmpfs the test mounts: it needs root, as CI has; without it the test fails), and a
//! member that never reads. What was acknowledged must survive each, exactly once and
//! in order, and a retried key must not make a second message.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::Command,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
        Arc,
    },
    time::{Duration, Instant},
};

use bavard_client::{ClientError, Connection};
use bavard_protocol::{HistoryRequest, Message, RoomName};
use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};

use crate::{helpers::*, jwt};

/// No rate limits (the senders go as fast as the server acks), and tokens of the test
/// secret, so that a user is the same user again after a restart: keys are per user.
const FLAGS: [&str; 6] = ["--rate-per-second", "0", "--user-rate-per-second", "0", "--jwt-secret", jwt::SECRET];

fn start(db: &Path, extra: &[&str]) -> ChildServer {
    let args: Vec<&str> = FLAGS.iter().copied().chain(extra.iter().copied()).collect();
    ChildServer::start(db, &args)
}

async fn connect_as(server: &ChildServer, sub: &str) -> Connection {
    within(Connection::connect(&server.ws(&format!("/ws?token={}", jwt::token(sub))))).await.unwrap()
}

/// The key and text of a user's `i`-th message.
fn key_of(sub: &str, i: u64) -> String {
    format!("{sub}-{i}")
}

fn text_of(sub: &str, i: u64) -> String {
    format!("{sub} says {i}")
}

/// What one sender saw: the seq of each acknowledged message (by number), and the
/// number of the one it was sending when its connection ended, if any.
#[derive(Debug, Default)]
struct SenderLog {
    sub: String,
    room: String,
    acked: Vec<(u64, u64)>,
    unanswered: Option<u64>,
    /// The error of a send the server refused (then also `unanswered`).
    refused: Option<String>,
}

/// Sends keyed messages one after the other until `stop` or until the connection ends.
async fn sender(
    url: String,
    sub: String,
    room: RoomName,
    acked_total: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> SenderLog {
    let mut log = SenderLog { sub: sub.clone(), room: room.to_string(), ..SenderLog::default() };
    let mut conn = within(Connection::connect(&url)).await.unwrap();
    within(conn.join(&room, Some(u64::MAX))).await.unwrap();
    for i in 0.. {
        if stop.load(Relaxed) {
            break;
        }
        match conn.send(&room, &text_of(&sub, i), Some(&key_of(&sub, i))).await {
            Ok(reply) => {
                assert!(!reply.duplicate, "a first send was answered as a duplicate: {reply:?}");
                log.acked.push((i, reply.seq));
                acked_total.fetch_add(1, Relaxed);
            }
            Err(ClientError::Server(error)) => {
                log.refused = Some(error.to_string());
                log.unanswered = Some(i);
                break;
            }
            Err(_) => {
                // The server is gone (or going): this send may or may not be stored.
                log.unanswered = Some(i);
                break;
            }
        }
    }
    log
}

/// Starts `users` senders, spread over `rooms` rooms.
fn start_senders(
    server: &ChildServer,
    users: usize,
    rooms: usize,
    acked: &Arc<AtomicU64>,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<SenderLog>> {
    (0..users)
        .map(|n| {
            let sub = format!("user{n}");
            let url = server.ws(&format!("/ws?token={}", jwt::token(&sub)));
            let room = room(&format!("load-{}", n % rooms));
            tokio::spawn(sender(url, sub, room, acked.clone(), stop.clone()))
        })
        .collect()
}

async fn wait_for_acks(acked: &AtomicU64, at_least: u64) {
    within(async {
        while acked.load(Relaxed) < at_least {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

/// Every message of `room`, paging through its whole history.
async fn whole_history(conn: &mut Connection, room: &RoomName) -> Vec<Message> {
    let mut messages: Vec<Message> = Vec::new();
    loop {
        let after = messages.last().map_or(0, |m| m.seq);
        let request =
            HistoryRequest { room: room.clone(), before: None, after: Some(after), limit: Some(200), thread: None };
        let page = within(conn.history(request)).await.unwrap();
        messages.extend(page.messages);
        if !page.has_more {
            return messages;
        }
    }
}

/// After a restart: each sender's unanswered send and a few acknowledged ones are sent
/// again with their keys (an acknowledged one must come back as the same seq, marked
/// duplicate); then every room's history must hold seqs 1..=n once each, every
/// acknowledged message at its seq, each key once, and each sender's messages in the
/// order it sent them.
async fn check_after_restart(server: &ChildServer, logs: &[SenderLog]) {
    let mut retried: HashMap<String, u64> = HashMap::new();
    for log in logs {
        let mut conn = connect_as(server, &log.sub).await;
        let room = room(&log.room);
        within(conn.join(&room, Some(u64::MAX))).await.unwrap();
        for &(i, seq) in log.acked.iter().rev().take(3) {
            let again = within(conn.send(&room, &text_of(&log.sub, i), Some(&key_of(&log.sub, i)))).await.unwrap();
            assert!(again.duplicate && again.seq == seq, "{}'s acked send {i} (seq {seq}) retried: {again:?}", log.sub);
        }
        if let Some(i) = log.unanswered {
            let again = within(conn.send(&room, &text_of(&log.sub, i), Some(&key_of(&log.sub, i)))).await.unwrap();
            retried.insert(key_of(&log.sub, i), again.seq);
        }
    }
    let mut reader = connect_as(server, "reader").await;
    let rooms: std::collections::BTreeSet<&str> = logs.iter().map(|log| log.room.as_str()).collect();
    let mut stored: HashMap<String, u64> = HashMap::new();
    for name in rooms {
        let messages = whole_history(&mut reader, &room(name)).await;
        let seqs: Vec<u64> = messages.iter().map(|m| m.seq).collect();
        assert_eq!(seqs, (1..=messages.len() as u64).collect::<Vec<_>>(), "room {name}: seqs are 1..=n once each");
        for message in messages {
            let key = message.key.clone().expect("every message of the test has a key");
            assert!(stored.insert(key.clone(), message.seq).is_none(), "key {key} stored twice");
            let (sub, i) = key.rsplit_once('-').unwrap();
            assert_eq!(message.text, text_of(sub, i.parse().unwrap()), "the text of {key}");
        }
    }
    for log in logs {
        let mut previous = 0;
        for &(i, seq) in &log.acked {
            let key = key_of(&log.sub, i);
            assert_eq!(stored.get(&key), Some(&seq), "acked message {key} (seq {seq}) after the restart");
            assert!(seq > previous, "{}'s messages out of order", log.sub);
            previous = seq;
        }
    }
    for (key, seq) in retried {
        assert_eq!(stored.get(&key), Some(&seq), "the retried {key} is stored once, at the seq its retry got");
    }
}

#[tokio::test]
async fn kill_9_under_load_loses_no_acknowledged_message_and_retries_make_no_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crash.db");
    let mut server = start(&db, &[]);
    let (acked, stop) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
    let senders = start_senders(&server, 8, 2, &acked, &stop);
    wait_for_acks(&acked, 800).await;
    server.child.kill().unwrap(); // SIGKILL, while the senders are sending
    server.child.wait().unwrap();
    let mut logs = Vec::new();
    for sender in senders {
        logs.push(within(sender).await.unwrap());
    }
    assert!(logs.iter().all(|log| log.unanswered.is_some()), "every sender was cut off mid-send");
    assert!(logs.iter().all(|log| log.refused.is_none()), "a send refused before the crash: {logs:?}");
    let restarted = start(&db, &[]);
    check_after_restart(&restarted, &logs).await;
}

#[tokio::test]
async fn sigterm_under_load_drains_within_the_grace_time_and_keeps_what_was_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("drain.db");
    let grace = Duration::from_secs(3);
    let mut server = start(&db, &["--shutdown-grace-secs", "3"]);
    let (acked, stop) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
    let senders = start_senders(&server, 8, 2, &acked, &stop);
    wait_for_acks(&acked, 500).await;
    let signalled = Instant::now();
    kill(Pid::from_raw(server.child.id() as i32), Signal::SIGTERM).unwrap();
    assert_eq!(server.wait_exit(), Some(0), "{}", server.log());
    let took = signalled.elapsed();
    println!("SIGTERM under load: the server exited after {took:?} (grace {grace:?})");
    // The grace bounds each stage of the shutdown; under load the whole stays within it
    // (one second of margin for a loaded machine).
    assert!(took < grace + Duration::from_secs(1), "the shutdown took {took:?} with a grace of {grace:?}");
    let mut logs = Vec::new();
    for sender in senders {
        logs.push(within(sender).await.unwrap());
    }
    assert!(!server.log().contains("panicked"), "{}", server.log());
    let restarted = start(&db, &[]);
    check_after_restart(&restarted, &logs).await;
}

/// A tmpfs mounted on a temporary folder for one test, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. `4m`). Fails the test, saying why, when the
    /// process may not mount (these tests need root, as CI has).
    fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("cannot run mount(8)");
        assert!(
            output.status.success(),
            "cannot mount a tmpfs on {} ({}): the disk-fault tests need root (CI runs as root)",
            dir.path().display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Remounts read-only (`ro`) or read-write (`rw`); the kernel refuses (EBUSY) while
    /// a process holds a file open for writing on it.
    fn remount(&self, mode: &str) {
        let output = Command::new("mount").args(["-o", &format!("remount,{mode}")]).arg(self.path()).output().unwrap();
        assert!(output.status.success(), "remount,{mode}: {}", String::from_utf8_lossy(&output.stderr).trim());
    }

    /// Fills what space is left with a file; returns its path.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.path().join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while file.write_all(&chunk).is_ok() {}
        let _ = file.write_all(&chunk[..1]);
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

#[tokio::test]
async fn a_full_disk_fails_sends_with_a_clear_error_and_the_server_recovers_when_space_returns() {
    let disk = Tmpfs::mount("6m");
    let db = disk.path().join("full.db");
    let mut server = start(&db, &[]);
    let full = room("full");
    let mut conn = connect_as(&server, "writer").await;
    within(conn.join(&full, Some(u64::MAX))).await.unwrap();
    let mut acked: Vec<(u64, u64)> = Vec::new();
    let text = |i: u64| format!("{i} {}", "x".repeat(1000));
    let mut i = 0;
    for _ in 0..20 {
        acked.push((i, within(conn.send(&full, &text(i), Some(&format!("k{i}")))).await.unwrap().seq));
        i += 1;
    }
    let filler = disk.fill();
    // The database's files may hold some free pages: send until a send fails.
    let mut refused = None;
    for _ in 0..5_000 {
        match within(conn.send(&full, &text(i), Some(&format!("k{i}")))).await {
            Ok(reply) => acked.push((i, reply.seq)),
            Err(ClientError::Server(error)) => {
                refused = Some(error);
                break;
            }
            Err(other) => panic!("send {i} on a full disk: {other} (the server log: {})", server.log()),
        }
        i += 1;
    }
    let error = refused.unwrap_or_else(|| panic!("5,000 sends of 1 KB were acked on a full 6 MiB disk"));
    println!("a send on a full disk: {error} (after {} acked)", acked.len());
    // The exact text: it once said "database error: database error: ...".
    assert_eq!(
        error.to_string(),
        "internal: database error: database or disk is full; retry later (with the same key for a send)",
        "a send on a full disk"
    );
    assert!(server.child.try_wait().unwrap().is_none(), "the server died on a full disk: {}", server.log());
    // Reads still work.
    let stored = whole_history(&mut conn, &full).await;
    assert!(stored.len() >= acked.len(), "{} stored, {} acked", stored.len(), acked.len());

    // Space returns: the same key (refused, so not stored) and new ones are accepted.
    std::fs::remove_file(filler).unwrap();
    let deadline = Instant::now() + WAIT;
    let again = loop {
        match within(conn.send(&full, &text(i), Some(&format!("k{i}")))).await {
            Ok(reply) => break reply,
            Err(ClientError::Server(error)) if Instant::now() < deadline => {
                let _ = error;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(other) => panic!("the server did not recover when space returned: {other}: {}", server.log()),
        }
    };
    assert!(!again.duplicate, "a refused send was stored: {again:?}");
    acked.push((i, again.seq));
    i += 1;
    acked.push((i, within(conn.send(&full, &text(i), Some(&format!("k{i}")))).await.unwrap().seq));
    assert!(!server.log().contains("panicked"), "{}", server.log());

    // Everything acknowledged is there after a restart, once, in order.
    kill(Pid::from_raw(server.child.id() as i32), Signal::SIGTERM).unwrap();
    assert_eq!(server.wait_exit(), Some(0), "{}", server.log());
    let restarted = start(&db, &[]);
    let mut reader = connect_as(&restarted, "reader").await;
    let stored = whole_history(&mut reader, &full).await;
    let seqs: Vec<u64> = stored.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, (1..=stored.len() as u64).collect::<Vec<_>>());
    let by_key: HashMap<String, u64> = stored.iter().map(|m| (m.key.clone().unwrap(), m.seq)).collect();
    assert_eq!(by_key.len(), stored.len(), "a key stored twice");
    for (i, seq) in acked {
        assert_eq!(by_key.get(&format!("k{i}")), Some(&seq), "acked message k{i}");
    }
}

#[tokio::test]
async fn a_read_only_disk_is_refused_with_a_clear_error_and_nothing_acknowledged_is_lost() {
    let disk = Tmpfs::mount("8m");
    let db = disk.path().join("ro.db");
    let mut server = start(&db, &[]);
    let mut conn = connect_as(&server, "writer").await;
    let ro = room("ro");
    within(conn.join(&ro, Some(u64::MAX))).await.unwrap();
    let mut acked = Vec::new();
    for i in 0..50 {
        acked.push(within(conn.send(&ro, &format!("m{i}"), Some(&format!("k{i}")))).await.unwrap().seq);
    }
    drop(conn);
    // While the server holds its files open for writing, the kernel refuses to remount
    // the disk read-only (EBUSY): the server is stopped first.
    kill(Pid::from_raw(server.child.id() as i32), Signal::SIGTERM).unwrap();
    assert_eq!(server.wait_exit(), Some(0), "{}", server.log());
    disk.remount("ro");
    let mut refused = bavard_command()
        .args(["--listen", "127.0.0.1:0", "--db"])
        .arg(&db)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = refused.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the server started on a read-only disk and did not stop");
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = {
        use std::io::Read;
        let mut text = String::new();
        refused.stderr.take().unwrap().read_to_string(&mut text).unwrap();
        text
    };
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains("ro.db") && stderr.contains("read-only file system: remount it read-write"),
        "the error names the file, the cause and what to do: {stderr}"
    );
    assert!(!stderr.contains("database error: database error"), "the error says it twice: {stderr}");

    disk.remount("rw");
    let server = start(&db, &[]);
    let mut conn = connect_as(&server, "writer").await;
    within(conn.join(&ro, Some(u64::MAX))).await.unwrap();
    let stored = whole_history(&mut conn, &ro).await;
    assert_eq!(stored.iter().map(|m| m.seq).collect::<Vec<_>>(), acked);
    let again = within(conn.send(&ro, "m0", Some("k0"))).await.unwrap();
    assert!(again.duplicate && again.seq == 1, "{again:?}");
    assert_eq!(within(conn.send(&ro, "after", None)).await.unwrap().seq, 51);
}

/// VmRSS of `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

#[tokio::test]
async fn members_that_never_read_stay_bounded_in_memory_while_the_others_keep_receiving() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir.path().join("slow.db"), &["--outbox-bytes", "1048576", "--idle-timeout-secs", "600"]);
    let pid = server.child.id();
    let rooms = [room("stuck-a"), room("stuck-b")];
    let mut stuck = Vec::new();
    let mut readers = Vec::new();
    for room in &rooms {
        let mut silent = raw_websocket(server.addr, "/ws?name=silent").await;
        silent.send_text(format!(r#"{{"op":"join","room":"{room}","id":1}}"#).as_bytes()).await.unwrap();
        stuck.push(silent);
        let mut reader = connect_as(&server, &format!("reader-{room}")).await;
        within(reader.join(room, None)).await.unwrap();
        readers.push(reader);
    }
    let mut writer = connect_as(&server, "writer").await;
    for room in &rooms {
        within(writer.join(room, Some(u64::MAX))).await.unwrap();
    }
    let before = rss(pid);
    // 4,000 NUL characters: each a 24 KB frame. 1,200 per room is 29 MB a stuck member
    // would pin (less what the kernel's buffers hold) without the byte bound.
    let text = "\0".repeat(4000);
    let mut highest = before;
    let mut seqs = [0_u64; 2];
    for batch in 0..120 {
        for (r, room) in rooms.iter().enumerate() {
            let mut ids = Vec::new();
            for _ in 0..10 {
                let send = bavard_protocol::SendRequest {
                    room: room.clone(),
                    text: text.clone(),
                    key: None,
                    reply_to: None,
                    stream: false,
                };
                ids.push(within(writer.submit(bavard_protocol::Request::Send(send))).await.unwrap());
            }
            for id in &ids {
                let reply = within(writer.reply_to(id)).await.unwrap();
                assert!(reply.ok, "{reply:?}");
            }
            // The reading member gets every message, in order, as it is sent.
            for _ in 0..10 {
                let message = loop {
                    match within(readers[r].next_event()).await.unwrap() {
                        bavard_protocol::ServerFrame::Message(message) => break message,
                        _ => continue,
                    }
                };
                seqs[r] += 1;
                assert_eq!(message.seq, seqs[r], "batch {batch} in {room}");
            }
        }
        highest = highest.max(rss(pid));
    }
    let grew = highest.saturating_sub(before);
    println!("server RSS {} MiB before, {} MiB at most while two members did not read", before >> 20, highest >> 20);
    // Measured: +17 MiB with the 1 MiB bound (the store's caches and recent messages
    // grow too), +75 MiB with the bound raised to 1 GiB.
    assert!(grew < 40 << 20, "RSS grew by {} MiB with two stuck members", grew >> 20);
    // Each stuck member was closed as a slow consumer once its queue passed 1 MiB (its
    // close frame may never reach it: the socket's buffers are full).
    let (status, metrics) = http_get(&format!("http://{}/metrics", server.addr)).await;
    assert_eq!(status, 200);
    let closes = metrics.lines().find_map(|line| line.strip_prefix("bavard_slow_consumer_closes_total "));
    assert_eq!(closes, Some("2"), "{metrics}");
    drop(stuck);
}

/// A log that cannot be written (its disk is full: here /dev/full, whose every write
/// fails with ENOSPC) must not stop the server. tracing-subscriber reports its own write
/// errors with `eprint!`, which panics when stderr fails: the thread that logged died
/// (the main thread at start; in the soak run of RELIABILITY.md, the SQLite writer,
/// which left the store closed for good once the disk had filled).
#[tokio::test]
async fn a_log_on_a_full_disk_does_not_stop_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
    let mut child = bavard_command()
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--rate-per-second",
            "0",
            "--user-rate-per-second",
            "0",
            "--db",
        ])
        .arg(dir.path().join("log.db"))
        .env("BAVARD_LOG", "debug")
        .stdout(std::process::Stdio::null())
        .stderr(full)
        .spawn()
        .unwrap();
    let url = format!("ws://127.0.0.1:{port}/ws?name=logger");
    let mut conn = within(async {
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("the server exited ({status}) because its log could not be written");
            }
            match Connection::connect(&url).await {
                Ok(conn) => break conn,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    })
    .await;
    let busy = room("logged");
    within(conn.join(&busy, None)).await.unwrap();
    // Enough sends for the writer and the archiver to log (at debug) many times.
    for i in 0..300 {
        within(conn.send(&busy, &format!("m{i}"), None)).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    let last = within(conn.send(&busy, "still here", None)).await.unwrap();
    assert_eq!(last.seq, 301);
    assert!(child.try_wait().unwrap().is_none(), "the server died");
    let _ = child.kill();
    let _ = child.wait();
}
