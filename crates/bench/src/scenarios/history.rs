//! Scenario 5, history: seeds a room with `--messages` messages (unless it has them
//! already: the database is reused between runs), then `--clients` JSON clients (the SDK's
//! `bavard_client::Connection`) page `history` closed-loop; reports the latency of the
//! latest page (`limit` 50, no cursor) and of pages at random depths (`before` a random seq).
//! With `--search`, it also measures `search` in that room: a rare word (the number of
//! one seeded message, a few matches) and a word every message has (every message
//! matches: the ranking's worst case).

use std::{sync::Arc, time::Duration};

use anyhow::{bail, Context};
use bavard_client::{
    protocol::{HistoryRequest, RoomName},
    Connection,
};
use bavard_ws::client::{Endpoint, Incoming};
use clap::Args;
use hdrhistogram::Histogram;
use serde_json::json;

use crate::{
    jsonws,
    stats::{self, now_us, CpuMeter},
    Common,
};

/// CSV header of this scenario.
pub const CSV_HEADER: &str = "server,messages,mode,queries_per_s,p50_ms,p99_ms,p999_ms";

/// Options of the history scenario.
#[derive(Debug, Clone, Args)]
pub struct HistoryArgs {
    /// Messages the room must hold; missing ones are sent first.
    #[arg(long, default_value_t = 1_000_000)]
    pub messages: u64,

    /// The room.
    #[arg(long, default_value = "history-1m")]
    pub room: String,

    /// Connections seeding the room in parallel (each is a member and so also receives
    /// every seeded message).
    #[arg(long, default_value_t = 2)]
    pub seed_senders: usize,

    /// Unacknowledged sends per seeding connection (the server allows 256).
    #[arg(long, default_value_t = 200)]
    pub seed_in_flight: usize,

    /// Seed the room, then exit without measuring.
    #[arg(long)]
    pub seed_only: bool,

    /// Concurrent clients querying.
    #[arg(long, default_value_t = 10)]
    pub clients: usize,

    /// Queries per mode, over all clients.
    #[arg(long, default_value_t = 5_000)]
    pub queries: usize,

    /// Page size.
    #[arg(long, default_value_t = 50)]
    pub limit: u32,

    /// Worker threads of the bench's runtime.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,

    /// Also measure `search` (rare and common words), `--search-queries` of each.
    #[arg(long)]
    pub search: bool,

    /// Searches per kind, over all clients.
    #[arg(long, default_value_t = 500)]
    pub search_queries: usize,
}

/// Runs the scenario; true when every query succeeded.
pub fn run(common: &Common, args: &HistoryArgs) -> anyhow::Result<bool> {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(args.threads.max(1)).enable_all().build()?;
    runtime.block_on(measure(common, args))
}

/// The room's last seq, read from a `join` reply.
async fn head(endpoint: &Endpoint, room: &str) -> anyhow::Result<u64> {
    let mut conn = jsonws::connect(endpoint, "history-probe", None).await?;
    let reply = jsonws::request(&mut conn, 1, json!({"op": "join", "room": room, "limit": 0})).await?;
    conn.close().await;
    reply["seq"].as_u64().context("join reply without seq")
}

/// Sends `count` messages to `room` keeping `in_flight` unacknowledged.
async fn seed(endpoint: &Endpoint, room: &str, sender: usize, count: u64, in_flight: usize) -> anyhow::Result<()> {
    let mut conn = jsonws::connect(endpoint, &format!("history-seed-{sender}"), None).await?;
    jsonws::request(&mut conn, 0, json!({"op": "join", "room": room, "limit": 0})).await?;
    let (mut next, mut acked, mut outstanding) = (1u64, 0u64, 0usize);
    while acked < count {
        while outstanding < in_flight && next <= count {
            let frame = format!(
                r#"{{"op":"send","id":{next},"room":"{room}","text":"seeded message {sender}-{next}: lorem ipsum dolor sit amet"}}"#
            );
            conn.queue_text(frame.as_bytes());
            next += 1;
            outstanding += 1;
        }
        conn.flush().await?;
        match conn.next().await? {
            Incoming::Data(frame) => {
                if jsonws::frame_type(frame) == Some(b"reply") {
                    if jsonws::find(frame, b"\"ok\":true").is_none() {
                        bail!("seeding failed: {}", String::from_utf8_lossy(frame));
                    }
                    acked += 1;
                    outstanding -= 1;
                }
            }
            // Seeders are members and receive every seeded message: if they fall behind, the
            // server drops them (4008); the caller starts another round for what is missing.
            Incoming::Closed(4008) => {
                eprintln!("seeding connection {sender} was too slow a consumer (4008); continuing in another round");
                return Ok(());
            }
            Incoming::Closed(code) => bail!("seeding connection closed with code {code}"),
        }
    }
    conn.close().await;
    Ok(())
}

async fn ensure_seeded(endpoint: &Arc<Endpoint>, args: &HistoryArgs) -> anyhow::Result<u64> {
    let first = head(endpoint, &args.room).await?;
    if first >= args.messages {
        println!("room {} already holds {first} messages", args.room);
        return Ok(first);
    }
    println!("seeding {} messages into {} ({} senders)...", args.messages - first, args.room, args.seed_senders);
    let started = now_us();
    let mut have = first;
    for _round in 0..20 {
        let need = args.messages - have;
        let senders = args.seed_senders.max(1) as u64;
        let mut tasks = Vec::new();
        for s in 0..senders {
            let count = need / senders + u64::from(s < need % senders);
            let (endpoint, room, in_flight) = (endpoint.clone(), args.room.clone(), args.seed_in_flight.max(1));
            tasks.push(tokio::spawn(async move { seed(&endpoint, &room, s as usize, count, in_flight).await }));
        }
        for task in tasks {
            task.await.context("a seeding task panicked")??;
        }
        have = head(endpoint, &args.room).await?;
        if have >= args.messages {
            let secs = (now_us() - started) as f64 / 1e6;
            let seeded = have - first;
            println!(
                "seeded {seeded} messages in {secs:.1} s ({:.0} messages/s); the room holds {have}",
                seeded as f64 / secs
            );
            return Ok(have);
        }
    }
    bail!("could not seed {} messages (the room holds {have})", args.messages)
}

/// `queries` history requests from `clients` clients; `deep` picks a random `before`.
async fn query(
    args: &HistoryArgs,
    url: &str,
    head: u64,
    deep: bool,
    server_pids: &[u32],
) -> anyhow::Result<(Histogram<u64>, f64)> {
    let room = RoomName::new(&args.room)?;
    let clients = args.clients.max(1);
    let meter = CpuMeter::start(server_pids);
    let mut tasks = Vec::new();
    for c in 0..clients {
        let per_client = args.queries / clients + usize::from(c < args.queries % clients);
        let (room, url, limit) = (room.clone(), url.to_owned(), args.limit);
        tasks.push(tokio::spawn(async move {
            let mut conn = Connection::connect(&url).await?;
            conn.set_timeout(Duration::from_secs(30));
            let mut histogram = stats::latency_histogram();
            let mut random = 0x9e37_79b9_7f4a_7c15u64 ^ (c as u64 + 1);
            for _ in 0..per_client {
                random ^= random << 13;
                random ^= random >> 7;
                random ^= random << 17;
                let before = deep.then(|| u64::from(limit) + 1 + random % head.max(1));
                let request =
                    HistoryRequest { room: room.clone(), before, after: None, limit: Some(limit), thread: None };
                let t0 = now_us();
                let page = conn.history(request).await?;
                stats::record(&mut histogram, now_us() - t0);
                if page.messages.is_empty() {
                    bail!("empty history page");
                }
            }
            conn.close().await;
            anyhow::Ok(histogram)
        }));
    }
    let mut histogram = stats::latency_histogram();
    for task in tasks {
        let h = task.await.context("a query task panicked")??;
        histogram.add(&h).map_err(|e| anyhow::anyhow!("cannot merge histograms: {e}"))?;
    }
    let usage = meter.stop();
    let per_s = histogram.len() as f64 / usage.wall.max(1e-9);
    println!(
        "history {} (limit {}): {per_s:.0} queries/s, {}; {}",
        if deep { "at random depths" } else { "latest page" },
        args.limit,
        stats::summary(&histogram),
        usage.per_million(histogram.len(), "queries")
    );
    Ok((histogram, per_s))
}

/// `search_queries` searches from `clients` clients; `common` looks for a word every
/// message has, otherwise for one seeded message's number.
async fn search(
    endpoint: &Arc<Endpoint>,
    args: &HistoryArgs,
    head: u64,
    common: bool,
    server_pids: &[u32],
) -> anyhow::Result<(Histogram<u64>, f64)> {
    // The index follows the archive: wait until the last seeded message is searchable.
    let mut probe = jsonws::connect(endpoint, "search-probe", None).await?;
    let last = format!("seeded message 0-{}", args.messages / args.seed_senders.max(1) as u64);
    for attempt in 0.. {
        let reply = jsonws::request(&mut probe, attempt, json!({"op": "search", "room": args.room, "q": last})).await?;
        if reply["ok"] != true {
            bail!("search failed: {reply}");
        }
        if reply["messages"].as_array().is_some_and(|m| !m.is_empty()) || attempt > 600 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    probe.close().await;
    let clients = args.clients.max(1);
    let meter = CpuMeter::start(server_pids);
    let mut tasks = Vec::new();
    for c in 0..clients {
        let per_client = args.search_queries / clients + usize::from(c < args.search_queries % clients);
        let (endpoint, room, senders) = (endpoint.clone(), args.room.clone(), args.seed_senders.max(1) as u64);
        tasks.push(tokio::spawn(async move {
            let mut conn = jsonws::connect(&endpoint, &format!("searcher-{c}"), None).await?;
            let mut histogram = stats::latency_histogram();
            let mut random = 0x9e37_79b9_7f4a_7c15u64 ^ (c as u64 + 1);
            for i in 0..per_client {
                random ^= random << 13;
                random ^= random >> 7;
                random ^= random << 17;
                let q = if common { "lorem".to_owned() } else { format!("{}", 1 + random % (head / senders).max(1)) };
                let t0 = now_us();
                let reply = jsonws::request(&mut conn, i as u64, json!({"op": "search", "room": room, "q": q})).await?;
                stats::record(&mut histogram, now_us() - t0);
                if reply["ok"] != true || reply["messages"].as_array().is_none_or(|m| m.is_empty()) {
                    bail!("search for {q} found nothing: {reply}");
                }
            }
            conn.close().await;
            anyhow::Ok(histogram)
        }));
    }
    let mut histogram = stats::latency_histogram();
    for task in tasks {
        let h = task.await.context("a search task panicked")??;
        histogram.add(&h).map_err(|e| anyhow::anyhow!("cannot merge histograms: {e}"))?;
    }
    let usage = meter.stop();
    let per_s = histogram.len() as f64 / usage.wall.max(1e-9);
    println!(
        "search for {} in {head} messages: {per_s:.0} queries/s, {}; {}",
        if common { "a word of every message" } else { "a rare word" },
        stats::summary(&histogram),
        usage.per_million(histogram.len(), "queries")
    );
    Ok((histogram, per_s))
}

async fn measure(common: &Common, args: &HistoryArgs) -> anyhow::Result<bool> {
    let endpoint = Arc::new(Endpoint::parse(&common.url)?);
    let head = ensure_seeded(&endpoint, args).await?;
    if args.seed_only {
        return Ok(true);
    }
    let url = format!("ws://{}/ws?name=history-reader", endpoint.host);
    for deep in [false, true] {
        let (histogram, per_s) = query(args, &url, head, deep, &common.server_pid).await?;
        if let Some(csv) = &common.csv {
            let label = &common.label;
            let row = format!(
                "{label},{head},{},{per_s:.0},{}",
                if deep { "random" } else { "latest" },
                stats::p50_p99_p999_csv(&histogram)
            );
            stats::append_csv(csv, CSV_HEADER, &row)?;
        }
    }
    if args.search {
        for every in [false, true] {
            let (histogram, per_s) = search(&endpoint, args, head, every, &common.server_pid).await?;
            if let Some(csv) = &common.csv {
                let mode = if every { "search-common" } else { "search-rare" };
                let row = format!("{},{head},{mode},{per_s:.0},{}", common.label, stats::p50_p99_p999_csv(&histogram));
                stats::append_csv(csv, CSV_HEADER, &row)?;
            }
        }
    }
    Ok(true)
}
