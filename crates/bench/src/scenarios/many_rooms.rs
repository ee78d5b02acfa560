//! Scenario 2, many rooms: `--conns` JSON connections in rooms of `--room-size`, every
//! member sending `<member>:<seq>:<send-time-µs>` at a steady pace so that the server
//! makes `--rate` deliveries per second (every message persisted). Each member counts the
//! deliveries it gets (latency from the payload, loss from per-member sequence numbers).

use std::{
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
use serde_json::json;
use tokio::sync::{watch, Semaphore};

use crate::{
    jsonws,
    stats::{self, now_us, CpuMeter},
    Common,
};

/// CSV header of this scenario.
pub const CSV_HEADER: &str = "server,conns,room_size,rate,deliveries_per_s,p50_ms,p99_ms,p999_ms,loss";

/// Options of the many-rooms scenario.
#[derive(Debug, Clone, Args)]
pub struct ManyRoomsArgs {
    /// JSON connections.
    #[arg(long, default_value_t = 10_000)]
    pub conns: usize,

    /// Members per room (rooms `mr-0`, `mr-1`, ...).
    #[arg(long, default_value_t = 10)]
    pub room_size: usize,

    /// Target deliveries per second (sends/s x room size).
    #[arg(long, default_value_t = 100_000)]
    pub rate: u64,

    /// Seconds measured, after the warm-up.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,

    /// Seconds of traffic before measuring.
    #[arg(long, default_value_t = 2.0)]
    pub warmup_secs: f64,

    /// Seconds to wait after the last send for the last deliveries.
    #[arg(long, default_value_t = 3.0)]
    pub drain_secs: f64,

    /// Handshakes in flight at once while setting up.
    #[arg(long, default_value_t = 256)]
    pub connect_concurrency: usize,

    /// Worker threads of the bench's runtime.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

#[derive(Debug, Default)]
struct Counters {
    sent: AtomicU64,
    received: AtomicU64,
    arrived_in_window: AtomicU64,
    gaps: AtomicU64,
    reordered: AtomicU64,
    errors: AtomicU64,
    closed: AtomicU64,
}

struct Shared {
    counters: Counters,
    histogram: Mutex<Histogram<u64>>,
    /// Send interval of each member, µs.
    period_us: u64,
    room_size: usize,
    conns: usize,
}

/// Runs the scenario; true when nothing was lost.
pub fn run(common: &Common, args: &ManyRoomsArgs) -> anyhow::Result<bool> {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(args.threads.max(1)).enable_all().build()?;
    runtime.block_on(measure(common, args))
}

/// Parses `<member>:<seq>:<send-time-µs>`.
fn parse_text(text: &[u8]) -> Option<(usize, u64, u64)> {
    let mut parts = text.split(|&b| b == b':').map(|p| std::str::from_utf8(p).ok()?.parse::<u64>().ok());
    let member = parts.next()??;
    let seq = parts.next()??;
    let sent = parts.next()??;
    Some((member as usize, seq, sent))
}

async fn member(
    mut conn: WsConn,
    index: usize,
    shared: Arc<Shared>,
    mut start: watch::Receiver<Option<(u64, u64, u64)>>,
) -> anyhow::Result<()> {
    let room = format!("mr-{}", index / shared.room_size);
    let me = index % shared.room_size;
    let Some((start_us, measure_start, measure_end)) = *start.wait_for(Option::is_some).await? else {
        return Ok(());
    };
    // Spread the members' sends evenly over the period.
    let phase = shared.period_us * index as u64 / shared.conns.max(1) as u64;
    let first = tokio::time::Instant::now() + Duration::from_micros((start_us + phase).saturating_sub(now_us()));
    let mut ticker = tokio::time::interval_at(first, Duration::from_micros(shared.period_us.max(1)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut next_seq = vec![0u64; shared.room_size];
    let mut seq = 0u64;
    let mut sending = true;
    loop {
        tokio::select! {
            incoming = conn.next() => match incoming? {
                Incoming::Data(frame) => {
                    match jsonws::frame_type(frame) {
                        Some(b"message") => {}
                        Some(b"error") => {
                            shared.counters.errors.fetch_add(1, Relaxed);
                            continue;
                        }
                        _ => continue,
                    }
                    let now = now_us();
                    let Some((from, seq, sent_us)) =
                        jsonws::str_field(frame, b"\"text\":\"").and_then(parse_text) else { continue };
                    let c = &shared.counters;
                    if let Some(expected) = next_seq.get_mut(from) {
                        if seq == *expected {
                            *expected += 1;
                        } else if seq > *expected {
                            c.gaps.fetch_add(seq - *expected, Relaxed);
                            *expected = seq + 1;
                        } else {
                            c.reordered.fetch_add(1, Relaxed);
                        }
                    }
                    c.received.fetch_add(1, Relaxed);
                    if now >= measure_start && now < measure_end {
                        c.arrived_in_window.fetch_add(1, Relaxed);
                    }
                    if sent_us >= measure_start && sent_us < measure_end {
                        let mut histogram = shared.histogram.lock().unwrap_or_else(|p| p.into_inner());
                        stats::record(&mut histogram, now.saturating_sub(sent_us));
                    }
                }
                Incoming::Closed(code) => {
                    shared.counters.closed.fetch_add(1, Relaxed);
                    anyhow::bail!("member {index} closed with code {code}");
                }
            },
            _ = ticker.tick(), if sending => {
                let now = now_us();
                if now >= measure_end {
                    sending = false;
                    continue;
                }
                let frame = format!(r#"{{"op":"send","room":"{room}","text":"{me}:{seq}:{now}"}}"#);
                seq += 1;
                conn.send_text(frame.as_bytes()).await?;
                shared.counters.sent.fetch_add(1, Relaxed);
            }
        }
    }
}

async fn measure(common: &Common, args: &ManyRoomsArgs) -> anyhow::Result<bool> {
    anyhow::ensure!(args.conns >= 1 && args.room_size >= 1 && args.rate >= 1, "counts must be at least 1");
    let endpoint = Arc::new(Endpoint::parse(&common.url)?);
    let sends_per_member = args.rate as f64 / args.room_size as f64 / args.conns as f64;
    let shared = Arc::new(Shared {
        counters: Counters::default(),
        histogram: Mutex::new(stats::latency_histogram()),
        period_us: (1e6 / sends_per_member) as u64,
        room_size: args.room_size,
        conns: args.conns,
    });
    println!(
        "many rooms: {} JSON connections in rooms of {}, {} deliveries/s ({sends_per_member:.2} sends/s per member)",
        args.conns, args.room_size, args.rate
    );
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
                let mut conn = jsonws::connect(&endpoint, &format!("mr-{index}"), None).await?;
                let room = format!("mr-{}", index / shared.room_size);
                jsonws::request(&mut conn, 0, json!({"op": "join", "room": room, "limit": 0})).await?;
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
    println!("connected and joined {} in {secs:.2} s ({:.0}/s)", args.conns, args.conns as f64 / secs);

    let start = now_us() + 200_000;
    let measure_start = start + (args.warmup_secs * 1e6) as u64;
    let measure_end = measure_start + (args.duration * 1e6) as u64;
    start_tx.send(Some((start, measure_start, measure_end)))?;
    stats::sleep_until_us(measure_start).await;
    let meter = CpuMeter::start(&common.server_pid);
    stats::sleep_until_us(measure_end).await;
    let usage = meter.stop();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let c = &shared.counters;
    let expected = c.sent.load(Relaxed) * args.room_size as u64;
    let drain_deadline = now_us() + (args.drain_secs * 1e6) as u64;
    while c.received.load(Relaxed) < expected && now_us() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let received = c.received.load(Relaxed);
    let loss = expected.saturating_sub(received);
    let arrived = c.arrived_in_window.load(Relaxed);
    let deliveries_per_s = arrived as f64 / args.duration;
    let histogram = shared.histogram.lock().unwrap_or_else(|p| p.into_inner()).clone();
    println!(
        "many rooms: {deliveries_per_s:.0} deliveries/s, {}, loss {loss} of {expected} (gaps {}, reordered {}, \
         errors {}, closed {}); {}",
        stats::summary(&histogram),
        c.gaps.load(Relaxed),
        c.reordered.load(Relaxed),
        c.errors.load(Relaxed),
        c.closed.load(Relaxed),
        usage.per_million(arrived, "deliveries")
    );
    if let Some(csv) = &common.csv {
        let label = &common.label;
        let row = format!(
            "{label},{},{},{},{deliveries_per_s:.0},{},{loss}",
            args.conns,
            args.room_size,
            args.rate,
            stats::p50_p99_p999_csv(&histogram)
        );
        stats::append_csv(csv, CSV_HEADER, &row)?;
    }
    for task in members {
        task.abort();
    }
    Ok(loss == 0 && c.errors.load(Relaxed) == 0)
}
