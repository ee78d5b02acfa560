//! Soak: `--conns` JSON connections in rooms of `--room-size` for `--minutes`, every
//! member sending with an idempotency key at a steady pace (`--rate` deliveries/s in
//! all), every 50th send repeated with its key. Asserts, at the end:
//! - no loss, no duplicate, no reordering: each member saw its room's seqs one by one
//!   (every `message` event is the seq after the previous one) up to the room's last
//!   acknowledged seq, so every acknowledged message reached every member once, in order;
//! - the acknowledged seqs of each room are 1..=n, each once, and a repeated key was
//!   answered with its first seq and `duplicate`;
//! - the server's RSS drifted less than `--max-drift-percent` between the first sample
//!   after the warm-up and the last one (RSS is sampled every `--sample-secs`).
//!
//! Not for CI: the defaults run 30 minutes. 10,000 connections need 10,000 file
//! descriptors on each side (the server and the bench are separate processes).

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
        Arc, Mutex,
    },
    time::Duration,
};

use anyhow::Context;
use bavard_ws::client::{Endpoint, Incoming, WsConn};
use clap::Args;
use serde_json::json;
use tokio::sync::{watch, Semaphore};

use crate::{
    jsonws,
    stats::{self, now_us},
    Common,
};

/// Options of the soak scenario.
#[derive(Debug, Clone, Args)]
pub struct SoakArgs {
    /// JSON connections.
    #[arg(long, default_value_t = 10_000)]
    pub conns: usize,

    /// Members per room (rooms `soak-RUN-0`, `soak-RUN-1`, ...).
    #[arg(long, default_value_t = 10)]
    pub room_size: usize,

    /// Deliveries per second in all (sends/s x room size).
    #[arg(long, default_value_t = 10_000)]
    pub rate: u64,

    /// Minutes of traffic.
    #[arg(long, default_value_t = 30.0)]
    pub minutes: f64,

    /// Seconds of traffic before the first RSS sample that drift is measured from.
    #[arg(long, default_value_t = 60.0)]
    pub warmup_secs: f64,

    /// Seconds between RSS samples (each printed).
    #[arg(long, default_value_t = 60.0)]
    pub sample_secs: f64,

    /// Largest RSS drift accepted, in percent of the first sample.
    #[arg(long, default_value_t = 5.0)]
    pub max_drift_percent: f64,

    /// Seconds to wait after the last send for the last acks and deliveries.
    #[arg(long, default_value_t = 30.0)]
    pub drain_secs: f64,

    /// Handshakes in flight at once while setting up.
    #[arg(long, default_value_t = 256)]
    pub connect_concurrency: usize,

    /// Worker threads of the bench's runtime.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

/// Every how many sends one is repeated with its key.
const REPEAT_EVERY: u64 = 50;

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    acked: AtomicU64,
    repeats_acked: AtomicU64,
    bad_repeats: AtomicU64,
    errors: AtomicU64,
    received: AtomicU64,
    gaps: AtomicU64,
    repeated_or_reordered: AtomicU64,
    closed: AtomicU64,
}

/// What one member saw: the seq it joined at and the last seq it received.
struct Seen {
    joined_at: AtomicU64,
    last: AtomicU64,
}

struct Shared {
    counters: Counters,
    /// Acknowledged seqs of each room.
    acked: Vec<Mutex<Vec<u64>>>,
    seen: Vec<Seen>,
    period_us: u64,
    room_size: usize,
    conns: usize,
    run: String,
    sending: AtomicBool,
    /// Sends and repeats not answered yet.
    in_flight: AtomicU64,
}

impl Shared {
    fn room(&self, index: usize) -> String {
        format!("soak-{}-{}", self.run, index / self.room_size)
    }
}

/// Runs the scenario; true when nothing was lost, duplicated or reordered and RSS
/// drifted less than the limit.
pub fn run(common: &Common, args: &SoakArgs) -> anyhow::Result<bool> {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(args.threads.max(1)).enable_all().build()?;
    runtime.block_on(soak(common, args))
}

/// What a send's `id` stands for: bit 0 set for the repeat of a send.
fn send_id(n: u64, repeat: bool) -> u64 {
    n * 2 + u64::from(repeat) + 2
}

async fn member(
    mut conn: WsConn,
    index: usize,
    shared: Arc<Shared>,
    mut start: watch::Receiver<Option<u64>>,
) -> anyhow::Result<()> {
    let room = shared.room(index);
    let room_index = index / shared.room_size;
    let Some(start_us) = *start.wait_for(Option::is_some).await? else { return Ok(()) };
    let phase = shared.period_us * index as u64 / shared.conns.max(1) as u64;
    let first = tokio::time::Instant::now() + Duration::from_micros((start_us + phase).saturating_sub(now_us()));
    let mut ticker = tokio::time::interval_at(first, Duration::from_micros(shared.period_us.max(1)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let seen = &shared.seen[index];
    let c = &shared.counters;
    let mut n = 0_u64;
    // The seq of each send whose repeat is awaited, by send number.
    let mut first_seqs: std::collections::HashMap<u64, u64> = std::collections::HashMap::new();
    loop {
        tokio::select! {
            incoming = conn.next() => match incoming? {
                Incoming::Data(frame) => match jsonws::frame_type(frame) {
                    Some(b"message") => {
                        let Some(seq) = jsonws::int_field(frame, b"\"seq\":") else { continue };
                        let last = seen.last.load(Relaxed);
                        if seq == last + 1 {
                        } else if seq > last + 1 {
                            c.gaps.fetch_add(seq - last - 1, Relaxed);
                        } else {
                            c.repeated_or_reordered.fetch_add(1, Relaxed);
                            continue;
                        }
                        seen.last.store(seq, Relaxed);
                        c.received.fetch_add(1, Relaxed);
                    }
                    Some(b"reply") => {
                        shared.in_flight.fetch_sub(1, Relaxed);
                        let Some(id) = jsonws::int_field(frame, b"\"id\":") else { continue };
                        let reply: serde_json::Value = serde_json::from_slice(frame).context("unreadable reply")?;
                        let Some(seq) = reply["seq"].as_u64().filter(|_| reply["ok"] == true) else {
                            eprintln!("member {index}: send failed: {reply}");
                            c.errors.fetch_add(1, Relaxed);
                            continue;
                        };
                        let (sent, repeat) = ((id - 2) / 2, (id - 2) % 2 == 1);
                        if repeat {
                            c.repeats_acked.fetch_add(1, Relaxed);
                            let original = first_seqs.remove(&sent);
                            if reply["duplicate"] != true || original.is_some_and(|first| first != seq) {
                                eprintln!("member {index}: the repeat of send {sent} was answered {reply} (first seq {original:?})");
                                c.bad_repeats.fetch_add(1, Relaxed);
                            }
                        } else {
                            c.acked.fetch_add(1, Relaxed);
                            shared.acked[room_index].lock().unwrap_or_else(|p| p.into_inner()).push(seq);
                            if sent % REPEAT_EVERY == 0 {
                                first_seqs.insert(sent, seq);
                            }
                        }
                    }
                    Some(b"error") => {
                        eprintln!("member {index}: {}", String::from_utf8_lossy(frame));
                        c.errors.fetch_add(1, Relaxed);
                    }
                    _ => {}
                },
                Incoming::Closed(code) => {
                    c.closed.fetch_add(1, Relaxed);
                    anyhow::bail!("member {index} closed with code {code}");
                }
            },
            _ = ticker.tick(), if shared.sending.load(Relaxed) => {
                // The guard is read when the select starts: a tick after the end sends nothing.
                if !shared.sending.load(Relaxed) {
                    continue;
                }
                let key = format!("{}-{index}-{n}", shared.run);
                let text = format!("{index}:{n}:{}", now_us());
                let frame = json!({"op": "send", "id": send_id(n, false), "room": room, "text": text, "key": key});
                conn.send_text(frame.to_string().as_bytes()).await?;
                shared.in_flight.fetch_add(1, Relaxed);
                c.sent.fetch_add(1, Relaxed);
                if n % REPEAT_EVERY == 0 {
                    // The same send again, as a client that lost the reply would retry it.
                    let frame = json!({"op": "send", "id": send_id(n, true), "room": room, "text": text, "key": key});
                    conn.send_text(frame.to_string().as_bytes()).await?;
                    shared.in_flight.fetch_add(1, Relaxed);
                }
                n += 1;
            }
        }
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// `RssAnon` of `pid` in bytes (the heap, without the database file's mapped pages).
fn rss_anon(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("RssAnon:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

async fn soak(common: &Common, args: &SoakArgs) -> anyhow::Result<bool> {
    anyhow::ensure!(args.conns >= 1 && args.room_size >= 1 && args.rate >= 1, "counts must be at least 1");
    let endpoint = Arc::new(Endpoint::parse(&common.url)?);
    let rooms = args.conns.div_ceil(args.room_size);
    let sends_per_member = args.rate as f64 / args.room_size as f64 / args.conns as f64;
    let shared = Arc::new(Shared {
        counters: Counters::default(),
        acked: (0..rooms).map(|_| Mutex::new(Vec::new())).collect(),
        seen: (0..args.conns).map(|_| Seen { joined_at: AtomicU64::new(0), last: AtomicU64::new(0) }).collect(),
        period_us: (1e6 / sends_per_member) as u64,
        room_size: args.room_size,
        conns: args.conns,
        run: format!("{:x}", std::process::id() as u64 * 1_000_003 + now_us() % 1_000_000),
        sending: AtomicBool::new(true),
        in_flight: AtomicU64::new(0),
    });
    println!(
        "soak: {} JSON connections in {rooms} rooms of {}, {} deliveries/s ({sends_per_member:.3} sends/s per member, \
         every {REPEAT_EVERY}th repeated with its key) for {} min",
        args.conns, args.room_size, args.rate, args.minutes
    );
    let pid = common.server_pid.first().copied();
    // The server's RSS and its anonymous part (without the database's mapped pages).
    let rss_line = |what: &str| match pid {
        Some(pid) => {
            let rss = stats::rss_bytes(&pid.to_string()).unwrap_or(0);
            let anon = rss_anon(pid).unwrap_or(0);
            println!("{what}server RSS {:.1} MiB (anonymous {:.1} MiB)", mib(rss), mib(anon));
            Some((rss, anon))
        }
        None => None,
    };
    rss_line("before connecting: ");
    let (start_tx, start_rx) = watch::channel(None);
    let permits = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let started = now_us();
    let mut joins = Vec::with_capacity(args.conns);
    let mut members = Vec::with_capacity(args.conns);
    for index in 0..args.conns {
        let (endpoint, permits, shared, start_rx) =
            (endpoint.clone(), permits.clone(), shared.clone(), start_rx.clone());
        let (joined_tx, joined_rx) = tokio::sync::oneshot::channel::<anyhow::Result<()>>();
        members.push(tokio::spawn(async move {
            let joined = async {
                let _permit = permits.acquire().await?;
                let mut conn = jsonws::connect(&endpoint, &format!("s{index}"), None).await?;
                let reply =
                    jsonws::request(&mut conn, 1, json!({"op": "join", "room": shared.room(index), "limit": 0}))
                        .await?;
                let at = reply["seq"].as_u64().context("a join reply without seq")?;
                shared.seen[index].joined_at.store(at, Relaxed);
                shared.seen[index].last.store(at, Relaxed);
                anyhow::Ok(conn)
            }
            .await;
            match joined {
                Ok(conn) => {
                    let _ = joined_tx.send(Ok(()));
                    member(conn, index, shared, start_rx).await
                }
                Err(e) => {
                    let _ = joined_tx.send(Err(anyhow::anyhow!("{e:#}")));
                    Ok(())
                }
            }
        }));
        joins.push(joined_rx);
    }
    for joined in joins {
        joined.await.context("a member task died")??;
    }
    let secs = (now_us() - started) as f64 / 1e6;
    println!("connected and joined {} in {secs:.1} s", args.conns);
    rss_line("connected, before traffic: ");

    let start = now_us() + 200_000;
    let end = start + (args.minutes * 60e6) as u64;
    start_tx.send(Some(start))?;
    let c = &shared.counters;
    let mut samples: Vec<(f64, (u64, u64))> = Vec::new();
    let mut next_sample = start + (args.warmup_secs * 1e6) as u64;
    let mut last_received = (now_us(), 0_u64);
    while next_sample < end {
        stats::sleep_until_us(next_sample).await;
        let now = now_us();
        let received = c.received.load(Relaxed);
        let rate = (received - last_received.1) as f64 / ((now - last_received.0) as f64 / 1e6);
        last_received = (now, received);
        let minute = (now - start) as f64 / 60e6;
        print!(
            "t = {minute:.1} min: acked {}, received {received} ({rate:.0}/s), errors {}, gaps {}, closed {}; ",
            c.acked.load(Relaxed),
            c.errors.load(Relaxed),
            c.gaps.load(Relaxed),
            c.closed.load(Relaxed)
        );
        match rss_line("") {
            Some(rss) => samples.push((minute, rss)),
            None => println!(),
        }
        next_sample += (args.sample_secs * 1e6) as u64;
    }
    stats::sleep_until_us(end).await;
    shared.sending.store(false, Relaxed);
    let drain_deadline = now_us() + (args.drain_secs * 1e6) as u64;
    let last_acked = || -> Vec<u64> {
        let rooms = shared.acked.iter();
        rooms.map(|room| room.lock().unwrap_or_else(|p| p.into_inner()).iter().max().copied().unwrap_or(0)).collect()
    };
    let all_received = || {
        let last = last_acked();
        shared.seen.iter().enumerate().all(|(index, seen)| seen.last.load(Relaxed) >= last[index / shared.room_size])
    };
    // Settled: every send answered and delivered, twice in a row a second apart.
    let mut settled = 0;
    while settled < 2 && now_us() < drain_deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let done =
            shared.in_flight.load(Relaxed) == 0 && c.acked.load(Relaxed) == c.sent.load(Relaxed) && all_received();
        settled = if done { settled + 1 } else { 0 };
    }
    let final_rss = rss_line("after the last delivery: ");
    if let Some(rss) = final_rss {
        samples.push(((now_us() - start) as f64 / 60e6, rss));
    }

    // Every room's acknowledged seqs are 1..=n once each (fresh rooms), and every member
    // received up to its room's last acknowledged seq without a gap.
    let mut bad_rooms = 0;
    let mut acked_total = 0;
    for (room, acked) in shared.acked.iter().enumerate() {
        let mut seqs = acked.lock().unwrap_or_else(|p| p.into_inner()).clone();
        seqs.sort_unstable();
        acked_total += seqs.len();
        if seqs.iter().enumerate().any(|(i, &seq)| seq != i as u64 + 1) {
            eprintln!("room {room}: acknowledged seqs are not 1..={} once each", seqs.len());
            bad_rooms += 1;
        }
    }
    let mut short_members = 0;
    let mut expected_deliveries = 0_u64;
    for (index, seen) in shared.seen.iter().enumerate() {
        let last_acked = shared.acked[index / shared.room_size]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .max()
            .copied()
            .unwrap_or(0);
        expected_deliveries += last_acked.saturating_sub(seen.joined_at.load(Relaxed));
        if seen.last.load(Relaxed) < last_acked {
            short_members += 1;
        }
    }
    let received = c.received.load(Relaxed);
    let drift_of = |part: fn(&(u64, u64)) -> u64| match (samples.first(), samples.last()) {
        (Some((_, first)), Some((_, last))) if samples.len() >= 2 => {
            Some((part(last) as f64 - part(first) as f64) / part(first) as f64 * 100.0)
        }
        _ => None,
    };
    let drift = drift_of(|&(rss, _)| rss);
    let anon_drift = drift_of(|&(_, anon)| anon);
    println!(
        "soak: sent {}, acked {} ({acked_total} seqs), errors {}, in flight at the end {}; repeats acked {} (wrong {}); \
         received {received} of {expected_deliveries} expected deliveries, gaps {}, repeated or reordered {}, \
         members short of their room's last seq {short_members}, rooms with bad seqs {bad_rooms}, closed {}",
        c.sent.load(Relaxed),
        c.acked.load(Relaxed),
        c.errors.load(Relaxed),
        shared.in_flight.load(Relaxed),
        c.repeats_acked.load(Relaxed),
        c.bad_repeats.load(Relaxed),
        c.gaps.load(Relaxed),
        c.repeated_or_reordered.load(Relaxed),
        c.closed.load(Relaxed),
    );
    if let Some(drift) = drift {
        let (first, last) = (samples[0], samples[samples.len() - 1]);
        println!(
            "soak: server RSS {:.1} MiB at {:.1} min -> {:.1} MiB at {:.1} min: drift {drift:+.2} % (limit {} %); \
             anonymous {:.1} -> {:.1} MiB ({:+.2} %)",
            mib(first.1 .0),
            first.0,
            mib(last.1 .0),
            last.0,
            args.max_drift_percent,
            mib(first.1 .1),
            mib(last.1 .1),
            anon_drift.unwrap_or(0.0)
        );
    }
    let lossless = c.errors.load(Relaxed) == 0
        && c.bad_repeats.load(Relaxed) == 0
        && c.gaps.load(Relaxed) == 0
        && c.repeated_or_reordered.load(Relaxed) == 0
        && c.closed.load(Relaxed) == 0
        && shared.in_flight.load(Relaxed) == 0
        && short_members == 0
        && bad_rooms == 0
        && received == expected_deliveries
        && acked_total as u64 == c.sent.load(Relaxed);
    let steady = drift.is_none_or(|d| d < args.max_drift_percent);
    println!("soak: {}", if lossless && steady { "PASSED" } else { "FAILED" });
    for task in members {
        task.abort();
    }
    Ok(lossless && steady)
}
