//! Scenario 6, reconnect storm: `--clients` JSON clients (the SDK's
//! `bavard_client::Connection`) join rooms of `--room-size`, note the room's seq and
//! disconnect; `--missed` messages per room are then published while they are away; then
//! all of them reconnect at once and `join` with `since`. Reports the time until every
//! client has recovered every message it missed, and the distribution of per-client times.

use std::{sync::Arc, time::Duration};

use anyhow::{bail, Context};
use bavard_client::{protocol::RoomName, Connection};
use bavard_ws::client::{Endpoint, Incoming};
use clap::Args;
use serde_json::json;
use tokio::sync::Semaphore;

use crate::{
    jsonws,
    stats::{self, now_us, CpuMeter},
    Common,
};

/// CSV header of this scenario.
pub const CSV_HEADER: &str = "server,clients,missed,all_recovered_s,p50_ms,p99_ms,retries,failed";

/// Options of the reconnect-storm scenario.
#[derive(Debug, Clone, Args)]
pub struct ReconnectArgs {
    /// Clients that reconnect at once.
    #[arg(long, default_value_t = 10_000)]
    pub clients: usize,

    /// Clients per room (rooms `rs-0`, `rs-1`, ...).
    #[arg(long, default_value_t = 10)]
    pub room_size: usize,

    /// Messages published in each room while the clients are away.
    #[arg(long, default_value_t = 20)]
    pub missed: usize,

    /// Connections publishing the missed messages.
    #[arg(long, default_value_t = 10)]
    pub publishers: usize,

    /// Handshakes in flight while setting up (the storm itself starts everyone at once).
    #[arg(long, default_value_t = 256)]
    pub connect_concurrency: usize,

    /// Reconnection attempts per client during the storm before it counts as failed.
    #[arg(long, default_value_t = 20)]
    pub attempts: u32,

    /// Worker threads of the bench's runtime.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

/// Runs the scenario; true when every client recovered everything.
pub fn run(common: &Common, args: &ReconnectArgs) -> anyhow::Result<bool> {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(args.threads.max(1)).enable_all().build()?;
    runtime.block_on(measure(common, args))
}

fn room_of(index: usize, room_size: usize) -> anyhow::Result<RoomName> {
    Ok(RoomName::new(&format!("rs-{}", index / room_size.max(1)))?)
}

/// Publishes `missed` messages in each room `r` with `r % publishers == p`.
async fn publish(endpoint: &Endpoint, p: usize, args: &ReconnectArgs, rooms: usize) -> anyhow::Result<u64> {
    let mut conn = jsonws::connect(endpoint, &format!("rs-publisher-{p}"), None).await?;
    let mut id = 1u64;
    let mut sent = 0u64;
    for room in (p..rooms).step_by(args.publishers.max(1)) {
        jsonws::request(&mut conn, id, json!({"op": "join", "room": format!("rs-{room}"), "limit": 0})).await?;
        id += 1;
        let first = id;
        for n in 0..args.missed {
            let frame = format!(r#"{{"op":"send","id":{id},"room":"rs-{room}","text":"missed {n}"}}"#);
            conn.queue_text(frame.as_bytes());
            id += 1;
        }
        conn.flush().await?;
        let mut acked = 0;
        while acked < args.missed {
            match conn.next().await? {
                Incoming::Data(frame) => {
                    if jsonws::frame_type(frame) == Some(b"reply") {
                        let reply_id = jsonws::int_field(frame, b"\"id\":").unwrap_or(0);
                        if reply_id >= first && reply_id < id {
                            if jsonws::find(frame, b"\"ok\":true").is_none() {
                                bail!("send failed: {}", String::from_utf8_lossy(frame));
                            }
                            acked += 1;
                        }
                    }
                }
                Incoming::Closed(code) => bail!("publisher closed with code {code}"),
            }
        }
        sent += acked as u64;
        jsonws::request(&mut conn, id, json!({"op": "leave", "room": format!("rs-{room}")})).await?;
        id += 1;
    }
    conn.close().await;
    Ok(sent)
}

/// One client's storm: reconnect (retrying with backoff) and join with `since`.
/// Returns the connection (kept open until the end, as a real client would stay), the µs
/// until recovered and the retries it needed.
async fn rejoin(
    url: String,
    room: RoomName,
    since: u64,
    missed: usize,
    attempts: u32,
) -> anyhow::Result<(Connection, u64, u32)> {
    let t0 = now_us();
    let mut backoff = Duration::from_millis(50);
    let mut retries = 0;
    loop {
        let outcome = async {
            let mut conn = Connection::connect(&url).await?;
            let reply = conn.join(&room, Some(since)).await?;
            anyhow::Ok((conn, reply))
        }
        .await;
        match outcome {
            Ok((conn, reply)) => {
                let got = reply.messages.iter().filter(|m| m.seq > since).count();
                if reply.recovered == Some(false) || got < missed {
                    bail!("recovered {got} of {missed} messages (recovered flag {:?})", reply.recovered);
                }
                return Ok((conn, now_us() - t0, retries));
            }
            Err(e) if retries + 1 >= attempts => return Err(e.context(format!("after {attempts} attempts"))),
            Err(_) => {
                retries += 1;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

async fn measure(common: &Common, args: &ReconnectArgs) -> anyhow::Result<bool> {
    anyhow::ensure!(args.clients >= 1 && args.room_size >= 1 && args.publishers >= 1, "counts must be at least 1");
    let endpoint = Arc::new(Endpoint::parse(&common.url)?);
    let url = |i: usize| format!("ws://{}/ws?name=rs-{i}", endpoint.host);
    let rooms = args.clients.div_ceil(args.room_size);
    println!(
        "reconnect storm: {} clients in {rooms} rooms of {}, {} messages missed per room",
        args.clients, args.room_size, args.missed
    );

    // 1. Everyone joins and notes the room's seq, then leaves.
    let permits = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let started = now_us();
    let mut tasks = Vec::with_capacity(args.clients);
    for i in 0..args.clients {
        let (permits, url, room) = (permits.clone(), url(i), room_of(i, args.room_size)?);
        tasks.push(tokio::spawn(async move {
            let _permit = permits.acquire().await?;
            let mut conn = Connection::connect(&url).await?;
            let reply = conn.join(&room, None).await?;
            anyhow::Ok((conn, reply.seq))
        }));
    }
    let mut connections = Vec::with_capacity(args.clients);
    let mut since = Vec::with_capacity(args.clients);
    for task in tasks {
        let (conn, seq) = task.await.context("a client task panicked")??;
        connections.push(conn);
        since.push(seq);
    }
    println!("{} clients joined in {:.2} s", args.clients, (now_us() - started) as f64 / 1e6);
    for conn in connections {
        conn.close().await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // 2. Messages they miss.
    let started = now_us();
    let mut publishers = Vec::new();
    for p in 0..args.publishers {
        let (endpoint, args) = (endpoint.clone(), args.clone());
        publishers.push(tokio::spawn(async move { publish(&endpoint, p, &args, rooms).await }));
    }
    let mut published = 0;
    for task in publishers {
        published += task.await.context("a publisher panicked")??;
    }
    println!("published {published} messages while they were away in {:.2} s", (now_us() - started) as f64 / 1e6);

    // 3. The storm.
    let meter = CpuMeter::start(&common.server_pid);
    let mut tasks = Vec::with_capacity(args.clients);
    for (i, &since) in since.iter().enumerate() {
        let room = room_of(i, args.room_size)?;
        let (url, missed, attempts) = (url(i), args.missed, args.attempts);
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let _ = tx.send(rejoin(url, room, since, missed, attempts).await);
        });
        tasks.push(rx);
    }
    let mut histogram = stats::latency_histogram();
    let (mut retries, mut failed, mut slowest) = (0u64, 0usize, 0u64);
    let mut connections = Vec::with_capacity(args.clients);
    for rx in tasks {
        match rx.await {
            Ok(Ok((conn, us, tries))) => {
                connections.push(conn);
                stats::record(&mut histogram, us);
                slowest = slowest.max(us);
                retries += u64::from(tries);
            }
            Ok(Err(e)) => {
                failed += 1;
                if failed <= 3 {
                    eprintln!("reconnect: a client failed: {e:#}");
                }
            }
            Err(_) => failed += 1,
        }
    }
    let usage = meter.stop();
    drop(connections);
    let all_recovered_s = slowest as f64 / 1e6;
    println!(
        "all {} recovered in {all_recovered_s:.2} s (per client {}), {retries} retries, {failed} failed; {}",
        args.clients - failed,
        stats::summary(&histogram),
        usage.per_million(args.clients as u64, "rejoins")
    );
    if let Some(csv) = &common.csv {
        let label = &common.label;
        let row = format!(
            "{label},{},{},{all_recovered_s:.3},{:.3},{:.3},{retries},{failed}",
            args.clients,
            args.missed,
            stats::quantile_ms(&histogram, 0.5),
            stats::quantile_ms(&histogram, 0.99)
        );
        stats::append_csv(csv, CSV_HEADER, &row)?;
    }
    Ok(failed == 0)
}
