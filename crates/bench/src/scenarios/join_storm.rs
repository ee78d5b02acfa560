//! Join storm: a room already holding `--members` connections, then `--joiners` more
//! connections join it at once (`--connect-concurrency` in flight). With `--protocol
//! json` every connection opens `/ws?name=...`, reads `welcome` and sends
//! `{"op":"join","room":R,"limit":0}`; the join-reply latency is the time from sending
//! the join to reading its reply. With `--protocol plain` a connection to
//! `/ws/chat/{room}` is the join (the plain-text protocol has no reply), so the latency
//! is the whole connect (TCP + upgrade): that variant measures any server speaking the
//! plain-text protocol.
//!
//! Members stay connected and keep reading (answering pings), so the server's events to
//! them (presence while the room is small, then `occupancy` at most once a second) are
//! delivered during the storm, as they would be to real clients. For JSON the replies
//! are checked: `member_count` at least the room's members, at most 100 `members`, a
//! `members_cursor` when the list is cut; and after the storm every member should have
//! been told the final count by an `occupancy` event.

use std::{
    net::Ipv4Addr,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc, Mutex,
    },
    time::Duration,
};

use anyhow::Context;
use bavard_ws::client::{Endpoint, Incoming, WsConn};
use clap::Args;
use hdrhistogram::Histogram;
use serde_json::Value;
use tokio::sync::Semaphore;

use crate::{
    dial, jsonws,
    scenarios::idle::{Protocol, Sources},
    stats::{self, now_us, CpuMeter},
    Common,
};

/// CSV header of this scenario.
pub const CSV_HEADER: &str = "server,protocol,members,joiners,joins_per_s,storm_s,join_p50_ms,join_p99_ms,join_p999_ms,connect_p99_ms,setup_joins_per_s,errors";

/// Read buffer each connection starts with (grows for a larger frame, e.g. a join reply).
const CONN_BUFFER: usize = 2048;

/// Options of the join-storm scenario.
#[derive(Debug, Clone, Args)]
pub struct JoinStormArgs {
    /// Connections in the room before the storm.
    #[arg(long, default_value_t = 10_000)]
    pub members: usize,

    /// Connections that join at once.
    #[arg(long, default_value_t = 1_000)]
    pub joiners: usize,

    /// The room.
    #[arg(long, default_value = "storm")]
    pub room: String,

    /// Protocol: `json` (join op and its reply) or `plain` (a connect is the join).
    #[arg(long, value_enum, default_value_t = Protocol::Json)]
    pub protocol: Protocol,

    /// Connections (connect + join) in flight at once, while filling the room and in the storm.
    #[arg(long, default_value_t = 256)]
    pub connect_concurrency: usize,

    /// Connections per source address (`--first-source`, then the next address, ...).
    #[arg(long, default_value_t = 10_000)]
    pub per_address: usize,

    /// The first source address (in 127.0.0.0/8, not the server's): the members, then
    /// the joiners, come from it and the addresses above it, `--per-address` each. Give
    /// each run fresh addresses: client sockets of an earlier run still in TIME_WAIT on
    /// the same address slow connecting down about twofold.
    #[arg(long, default_value_t = Ipv4Addr::new(127, 0, 0, 2))]
    pub first_source: Ipv4Addr,

    /// Seconds between filling the room and the storm (lets the events of the filling go out).
    #[arg(long, default_value_t = 1.5)]
    pub pause_secs: f64,

    /// Seconds after the storm before checking what members were told (JSON: the
    /// occupancy round runs once a second).
    #[arg(long, default_value_t = 2.0)]
    pub settle_secs: f64,

    /// After measuring, SIGKILL the server (`--server-pid`) and wait for it to die before
    /// closing the connections (a plain-text room that empties at once costs the server
    /// n²/2 disconnect notices).
    #[arg(long, requires = "server_pid")]
    pub kill_server: bool,

    /// Worker threads of the bench's runtime.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

/// What members saw, shared by their reading tasks.
#[derive(Debug, Default)]
struct Seen {
    presence: AtomicU64,
    occupancy: AtomicU64,
    messages: AtomicU64,
    closed: AtomicU64,
}

struct Member {
    /// The `member_count` of the last `occupancy` or `presence` event this member read.
    last_count: Arc<AtomicU64>,
}

/// Runs the scenario and prints its result; true when every connection joined and the
/// checks passed.
pub fn run(common: &Common, args: &JoinStormArgs) -> anyhow::Result<bool> {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(args.threads.max(1)).enable_all().build()?;
    runtime.block_on(measure(common, args))
}

/// One connection's join: connect (and `welcome`), then for JSON the join request.
/// Returns the connection, the connect time and the join-reply time (µs; for plain
/// the join time is the connect time), and the parsed reply (JSON).
async fn join(
    endpoint: &Endpoint,
    args: &JoinStormArgs,
    sources: Sources,
    index: usize,
    name: &str,
) -> anyhow::Result<(WsConn, u64, u64, Option<Value>)> {
    let bind = Some(sources.of(index)?);
    let t0 = now_us();
    match args.protocol {
        Protocol::Plain => {
            let conn = dial::connect_conn(endpoint, &format!("/ws/chat/{}", args.room), bind, CONN_BUFFER).await?;
            let took = now_us() - t0;
            Ok((conn, took, took, None))
        }
        Protocol::Json => {
            let mut conn = jsonws::connect_with_buffer(endpoint, name, bind, CONN_BUFFER).await?;
            let connected = now_us();
            let request = format!(r#"{{"op":"join","room":"{}","id":1,"limit":0}}"#, args.room);
            conn.send_text(request.as_bytes()).await?;
            let reply = loop {
                match conn.next().await? {
                    Incoming::Data(frame) => {
                        if jsonws::frame_type(frame) == Some(b"reply")
                            && jsonws::int_field(frame, b"\"id\":") == Some(1)
                        {
                            let reply: Value = serde_json::from_slice(frame).context("unreadable join reply")?;
                            break reply;
                        }
                    }
                    Incoming::Closed(code) => anyhow::bail!("closed with code {code} while waiting for the join reply"),
                }
            };
            let replied = now_us();
            anyhow::ensure!(reply["ok"] == Value::Bool(true), "join failed: {}", reply["error"]);
            Ok((conn, connected - t0, replied - connected, Some(reply)))
        }
    }
}

/// Keeps reading a member's connection (answering pings), counting what it is told.
async fn keep_reading(mut conn: WsConn, seen: Arc<Seen>, last_count: Arc<AtomicU64>) {
    loop {
        match conn.next().await {
            Ok(Incoming::Data(frame)) => match jsonws::frame_type(frame) {
                Some(kind @ (b"occupancy" | b"presence")) => {
                    let counter = if kind == b"occupancy" { &seen.occupancy } else { &seen.presence };
                    counter.fetch_add(1, Relaxed);
                    if let Some(count) = jsonws::int_field(frame, b"\"member_count\":") {
                        last_count.store(count, Relaxed);
                    }
                }
                Some(_) => {}
                None => {
                    seen.messages.fetch_add(1, Relaxed);
                }
            },
            Ok(Incoming::Closed(_)) | Err(_) => {
                seen.closed.fetch_add(1, Relaxed);
                return;
            }
        }
    }
}

/// What a group of joins measured.
struct Joined {
    members: Vec<Member>,
    connect: Histogram<u64>,
    join: Histogram<u64>,
    secs: f64,
    errors: usize,
    replies: Vec<Value>,
}

/// Joins connections `first..first + count` (names `{prefix}-{i}`), `connect_concurrency`
/// at a time, and leaves each reading in its own task.
async fn join_many(
    endpoint: &Arc<Endpoint>,
    args: &JoinStormArgs,
    sources: Sources,
    first: usize,
    count: usize,
    prefix: &str,
    seen: &Arc<Seen>,
) -> anyhow::Result<Joined> {
    let permits = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let replies = Arc::new(Mutex::new(Vec::new()));
    let started = now_us();
    let mut tasks = Vec::with_capacity(count);
    for index in first..first + count {
        let (endpoint, permits, args, seen, replies) =
            (endpoint.clone(), permits.clone(), args.clone(), seen.clone(), replies.clone());
        let name = format!("{prefix}-{index}");
        tasks.push(tokio::spawn(async move {
            let joined = {
                let _permit = permits.acquire().await;
                join(&endpoint, &args, sources, index, &name).await
            };
            let (conn, connect_us, join_us, reply) = joined?;
            let done = now_us();
            if let Some(reply) = reply {
                replies.lock().unwrap_or_else(|p| p.into_inner()).push(reply);
            }
            let last_count = Arc::new(AtomicU64::new(0));
            tokio::spawn(keep_reading(conn, seen, last_count.clone()));
            anyhow::Ok((connect_us, join_us, done, last_count))
        }));
    }
    let mut joined = Joined {
        members: Vec::with_capacity(count),
        connect: stats::latency_histogram(),
        join: stats::latency_histogram(),
        secs: 0.0,
        errors: 0,
        replies: Vec::new(),
    };
    let mut last_done = started;
    for task in tasks {
        match task.await.context("a joining task panicked")? {
            Ok((connect_us, join_us, done, last_count)) => {
                stats::record(&mut joined.connect, connect_us);
                stats::record(&mut joined.join, join_us);
                last_done = last_done.max(done);
                joined.members.push(Member { last_count });
            }
            Err(e) => {
                joined.errors += 1;
                if joined.errors <= 3 {
                    eprintln!("join-storm: {prefix} connection failed: {e:#}");
                }
            }
        }
    }
    joined.secs = (last_done - started) as f64 / 1e6;
    joined.replies = std::mem::take(&mut *replies.lock().unwrap_or_else(|p| p.into_inner()));
    Ok(joined)
}

/// Checks the JSON join replies of the storm; returns the problems found.
fn check_replies(replies: &[Value], members_before: usize, members_after: usize) -> Vec<String> {
    let mut problems = Vec::new();
    let (mut min_count, mut max_count, mut max_listed) = (u64::MAX, 0u64, 0usize);
    for reply in replies {
        let count = reply["member_count"].as_u64();
        let listed = reply["members"].as_array().map(Vec::len);
        match (count, listed) {
            (Some(count), Some(listed)) => {
                min_count = min_count.min(count);
                max_count = max_count.max(count);
                max_listed = max_listed.max(listed);
                if (count as usize) > listed && reply["members_cursor"].is_null() {
                    problems.push(format!("a reply lists {listed} of {count} members without members_cursor"));
                }
            }
            _ => problems.push("a join reply without member_count or members".into()),
        }
    }
    if !replies.is_empty() {
        println!(
            "join replies: member_count {min_count}..{max_count}, at most {max_listed} members listed, \
             members_cursor when cut"
        );
        if (min_count as usize) <= members_before {
            problems.push(format!("member_count {min_count} is not above the {members_before} members already in"));
        }
        if (max_count as usize) > members_after {
            problems.push(format!("member_count {max_count} above the {members_after} connections in the room"));
        }
        if max_listed > 100 {
            problems.push(format!("a reply lists {max_listed} members (the server promises at most 100)"));
        }
    }
    problems.truncate(5);
    problems
}

async fn measure(common: &Common, args: &JoinStormArgs) -> anyhow::Result<bool> {
    anyhow::ensure!(args.members >= 1 && args.joiners >= 1, "--members and --joiners must be at least 1");
    let endpoint = Arc::new(Endpoint::parse(&common.url)?);
    let protocol = match args.protocol {
        Protocol::Json => "json",
        Protocol::Plain => "plain",
    };
    let conns = args.members + args.joiners;
    let sources = Sources::new(args.first_source, args.per_address, conns, endpoint.addr.ip())?;
    println!(
        "join storm: {} {protocol} members in room {}, then {} joiners at once ({} in flight), \
         from {} source address(es) starting at {}",
        args.members,
        args.room,
        args.joiners,
        args.connect_concurrency,
        sources.count(conns),
        sources.first()
    );
    let seen = Arc::new(Seen::default());

    // Fill the room.
    let setup = join_many(&endpoint, args, sources, 0, args.members, "storm-m", &seen).await?;
    let setup_rate = setup.members.len() as f64 / setup.secs.max(1e-9);
    println!(
        "room filled: {} of {} members in {:.2} s ({setup_rate:.0} joins/s), join {}, {} failed",
        setup.members.len(),
        args.members,
        setup.secs,
        stats::summary(&setup.join),
        setup.errors
    );
    anyhow::ensure!(setup.errors == 0, "{} of {} members could not join: no storm", setup.errors, args.members);
    tokio::time::sleep(Duration::from_secs_f64(args.pause_secs.max(0.0))).await;
    let before = (seen.presence.load(Relaxed), seen.occupancy.load(Relaxed));

    // The storm.
    let meter = CpuMeter::start(&common.server_pid);
    let storm = join_many(&endpoint, args, sources, args.members, args.joiners, "storm-j", &seen).await?;
    let usage = meter.stop();
    let joined = storm.members.len();
    let joins_per_s = joined as f64 / storm.secs.max(1e-9);
    let what = match args.protocol {
        Protocol::Json => "join reply (from sending the join to its reply)",
        Protocol::Plain => "join = connect (TCP connect to the upgrade's 101)",
    };
    println!(
        "storm: {joined} of {} joined in {:.3} s: {joins_per_s:.0} joins/s; {what}: {}; connect {}; {} failed; {}",
        args.joiners,
        storm.secs,
        stats::summary(&storm.join),
        stats::summary(&storm.connect),
        storm.errors,
        usage.per_million(joined as u64, "joins")
    );
    if let Some(server) = usage.server {
        println!("server CPU per join in the storm: {:.3} ms", 1000.0 * server / joined.max(1) as f64);
    }
    let bench_cores = usage.own / usage.wall.max(1e-9);
    if bench_cores > 0.85 * args.threads as f64 {
        println!(
            "warning: the bench used {:.0}% of its {} thread(s) during the storm: the latencies include its own \
             queueing, not only the server's",
            100.0 * bench_cores / args.threads as f64,
            args.threads
        );
    }

    let mut problems = check_replies(&storm.replies, args.members, args.members + args.joiners);
    tokio::time::sleep(Duration::from_secs_f64(args.settle_secs.max(0.0))).await;
    let in_room = setup.members.len() + joined;
    if args.protocol == Protocol::Json {
        let told = setup.members.iter().filter(|m| m.last_count.load(Relaxed) as usize == in_room).count();
        let (presence, occupancy) = (seen.presence.load(Relaxed) - before.0, seen.occupancy.load(Relaxed) - before.1);
        println!(
            "members told: {told} of {} members' last count is {in_room}; during the storm and {} s after it \
             they got {occupancy} occupancy and {presence} presence events ({:.2} occupancy per member)",
            setup.members.len(),
            args.settle_secs,
            occupancy as f64 / setup.members.len().max(1) as f64
        );
        if told < setup.members.len() {
            problems.push(format!("{} members were not told the final count {in_room}", setup.members.len() - told));
        }
    }
    let closed = seen.closed.load(Relaxed);
    if closed > 0 {
        problems.push(format!("{closed} connections were closed by the server"));
    }
    for problem in &problems {
        println!("check failed: {problem}");
    }
    if let Some(rss) = stats::rss_report(&common.server_pid) {
        println!("server RSS with {in_room} connections in the room: {rss}");
    }
    if let Some(csv) = &common.csv {
        let row = format!(
            "{},{protocol},{},{},{joins_per_s:.0},{:.3},{},{:.3},{setup_rate:.0},{}",
            common.label,
            args.members,
            args.joiners,
            storm.secs,
            stats::p50_p99_p999_csv(&storm.join),
            stats::quantile_ms(&storm.connect, 0.99),
            storm.errors + problems.len()
        );
        stats::append_csv(csv, CSV_HEADER, &row)?;
    }
    if args.kill_server {
        stats::kill_before_closing(&common.server_pid)?;
    }
    Ok(storm.errors == 0 && problems.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn checks_join_replies() {
        let good = json!({"member_count": 10_001, "members": vec![json!({}); 100], "members_cursor": "100"});
        assert!(check_replies(std::slice::from_ref(&good), 10_000, 11_000).is_empty());
        let uncut = json!({"member_count": 10_001, "members": vec![json!({}); 100]});
        assert_eq!(check_replies(&[uncut], 10_000, 11_000).len(), 1);
        let too_many = json!({"member_count": 10_001, "members": vec![json!({}); 101], "members_cursor": "1"});
        assert_eq!(check_replies(&[too_many], 10_000, 11_000).len(), 1);
        let low = json!({"member_count": 10_000, "members": vec![json!({}); 100], "members_cursor": "1"});
        assert_eq!(check_replies(&[low, good], 10_000, 11_000).len(), 1);
        assert!(check_replies(&[json!({"ok": true})], 1, 2).len() == 1);
    }
}
