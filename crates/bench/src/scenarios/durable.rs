//! Scenario 4, durable sends: `--senders` JSON connections, each sending `send` requests
//! with an idempotency key and waiting for the ack (which means committed to the store)
//! before the next one (or keeping `--in-flight` outstanding). Reports acked messages/s
//! and the ack latency distribution.

use std::{collections::VecDeque, sync::Arc, time::Duration};

use anyhow::{bail, Context};
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
pub const CSV_HEADER: &str = "server,senders,in_flight,acked_per_s,p50_ms,p99_ms,p999_ms,errors";

/// Options of the durable-sends scenario.
#[derive(Debug, Clone, Args)]
pub struct DurableArgs {
    /// Concurrent sending connections.
    #[arg(long, default_value_t = 100)]
    pub senders: usize,

    /// Rooms the senders are spread over (each sender joins one; members receive the
    /// messages of their room, so fewer rooms mean more fan-out).
    #[arg(long, default_value_t = 100)]
    pub rooms: usize,

    /// Unacknowledged sends each sender keeps outstanding (1: wait for each ack).
    #[arg(long, default_value_t = 1)]
    pub in_flight: usize,

    /// Seconds measured, after the warm-up.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,

    /// Seconds of sending before measuring.
    #[arg(long, default_value_t = 2.0)]
    pub warmup_secs: f64,

    /// Bytes of each message's text.
    #[arg(long, default_value_t = 64)]
    pub text_bytes: usize,

    /// Worker threads of the bench's runtime.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

/// What the scenario measured.
#[derive(Debug, Clone)]
pub struct DurableResult {
    /// Acks received per second in the measured window.
    pub acked_per_s: f64,
    /// Ack latency, µs.
    pub histogram: Histogram<u64>,
    /// Sends that failed (error replies or closed connections).
    pub errors: u64,
}

/// Runs the scenario and prints its result.
pub fn run(common: &Common, args: &DurableArgs) -> anyhow::Result<DurableResult> {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(args.threads.max(1)).enable_all().build()?;
    runtime.block_on(measure(common, args))
}

struct SenderOutcome {
    histogram: Histogram<u64>,
    acked: u64,
    errors: u64,
}

async fn measure(common: &Common, args: &DurableArgs) -> anyhow::Result<DurableResult> {
    anyhow::ensure!(args.senders >= 1 && args.rooms >= 1 && args.in_flight >= 1, "counts must be at least 1");
    let endpoint = Arc::new(Endpoint::parse(&common.url)?);
    println!(
        "durable sends: {} senders over {} rooms, {} in flight each, {} s measured",
        args.senders, args.rooms, args.in_flight, args.duration
    );
    let start = now_us() + 500_000 + 2_000 * args.senders as u64;
    let measure_start = start + (args.warmup_secs * 1e6) as u64;
    let measure_end = measure_start + (args.duration * 1e6) as u64;
    let tag = now_us() % 1_000_000;
    let mut tasks = Vec::new();
    for i in 0..args.senders {
        let endpoint = endpoint.clone();
        let args = args.clone();
        tasks.push(tokio::spawn(
            async move { sender(&endpoint, &args, i, tag, start, measure_start, measure_end).await },
        ));
    }
    stats::sleep_until_us(measure_start).await;
    let meter = CpuMeter::start(&common.server_pid);
    stats::sleep_until_us(measure_end).await;
    let usage = meter.stop();
    let mut histogram = stats::latency_histogram();
    let (mut acked, mut errors) = (0, 0);
    for task in tasks {
        let outcome = task.await.context("a sender panicked")??;
        histogram.add(&outcome.histogram).map_err(|e| anyhow::anyhow!("cannot merge histograms: {e}"))?;
        acked += outcome.acked;
        errors += outcome.errors;
    }
    let acked_per_s = acked as f64 / args.duration;
    println!(
        "durable: {acked_per_s:.0} acked messages/s, ack {}, errors {errors}; {}",
        stats::summary(&histogram),
        usage.per_million(acked, "acked messages")
    );
    if let Some(csv) = &common.csv {
        let label = &common.label;
        let row = format!(
            "{label},{},{},{acked_per_s:.0},{},{errors}",
            args.senders,
            args.in_flight,
            stats::p50_p99_p999_csv(&histogram)
        );
        stats::append_csv(csv, CSV_HEADER, &row)?;
    }
    Ok(DurableResult { acked_per_s, histogram, errors })
}

async fn sender(
    endpoint: &Endpoint,
    args: &DurableArgs,
    index: usize,
    tag: u64,
    start: u64,
    measure_start: u64,
    measure_end: u64,
) -> anyhow::Result<SenderOutcome> {
    let mut conn = jsonws::connect(endpoint, &format!("durable-{index}"), None).await?;
    let room = format!("durable-{}", index % args.rooms);
    jsonws::request(&mut conn, 0, json!({"op": "join", "room": room, "limit": 0})).await?;
    stats::sleep_until_us(start).await;
    let mut outcome = SenderOutcome { histogram: stats::latency_histogram(), acked: 0, errors: 0 };
    let mut outstanding: VecDeque<(u64, u64)> = VecDeque::new();
    let text = "x".repeat(args.text_bytes.max(1));
    let mut next_id = 1u64;
    loop {
        let now = now_us();
        while now < measure_end && outstanding.len() < args.in_flight {
            let frame = format!(
                r#"{{"op":"send","id":{next_id},"room":"{room}","text":"{text}","key":"b{tag}-{index}-{next_id}"}}"#
            );
            conn.queue_text(frame.as_bytes());
            outstanding.push_back((next_id, now_us()));
            next_id += 1;
        }
        if outstanding.is_empty() {
            break;
        }
        conn.flush().await?;
        let frame = match tokio::time::timeout(Duration::from_secs(30), conn.next()).await {
            Ok(Ok(Incoming::Data(frame))) => frame,
            Ok(Ok(Incoming::Closed(code))) => bail!("sender {index}: closed with code {code}"),
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => bail!("sender {index}: no ack within 30 s"),
        };
        if jsonws::frame_type(frame) != Some(b"reply") {
            continue;
        }
        let Some(id) = jsonws::int_field(frame, b"\"id\":") else { continue };
        let ok = jsonws::find(frame, b"\"ok\":true").is_some();
        let Some(position) = outstanding.iter().position(|(i, _)| *i == id) else { continue };
        let Some((_, sent_at)) = outstanding.remove(position) else { continue };
        let now = now_us();
        if !ok {
            outcome.errors += 1;
            if outcome.errors <= 3 {
                eprintln!("sender {index}: {}", String::from_utf8_lossy(frame));
            }
        } else if sent_at >= measure_start && now < measure_end {
            outcome.acked += 1;
            stats::record(&mut outcome.histogram, now - sent_at);
        }
    }
    conn.close().await;
    Ok(outcome)
}
