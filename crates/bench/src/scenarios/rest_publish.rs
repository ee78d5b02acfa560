//! REST publish: `--conns` HTTP/1.1 keep-alive connections, each POSTing to
//! `/api/rooms/{room}/messages` in a loop with one request in flight (each with its own
//! `Idempotency-Key`, as the durable WebSocket senders use keys), while WebSocket members
//! of the same rooms, JSON (`/ws`, joined) and plain-text (`/ws/chat/{room}`), receive.
//! Reports acknowledged publishes/s (201 answers, which the server gives after the durable
//! commit), the publish latency (request written to response read), and checks that every
//! acknowledged publish reached every member of its room, in order.

use std::{
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed},
        Arc,
    },
    time::Duration,
};

use anyhow::{bail, Context};
use bavard_ws::client::{Endpoint, Incoming, WsConn};
use clap::Args;
use hdrhistogram::Histogram;
use serde_json::json;

use crate::{
    http1::HttpConn,
    jsonws,
    stats::{self, now_us, CpuMeter},
    Common,
};

/// CSV header of this scenario.
pub const CSV_HEADER: &str =
    "server,conns,rooms,json_members,plain_members,acked_per_s,p50_ms,p99_ms,p999_ms,errors,missing";

/// What every plain-text member receives before the text that was sent.
const PLAIN_PREFIX: &[u8] = bavard_protocol::plain::RECEIVED_PREFIX.as_bytes();

/// Options of the REST-publish scenario.
#[derive(Debug, Clone, Args)]
pub struct RestPublishArgs {
    /// HTTP/1.1 keep-alive connections publishing, one request in flight on each.
    #[arg(long, default_value_t = 100)]
    pub conns: usize,

    /// Rooms the connections publish into (connection i into room `rp-{i % rooms}`).
    #[arg(long, default_value_t = 100)]
    pub rooms: usize,

    /// JSON WebSocket members per room (`/ws`, joined), each receiving every message.
    #[arg(long, default_value_t = 1)]
    pub json_members: usize,

    /// Plain-text WebSocket members per room (`/ws/chat/{room}`).
    #[arg(long, default_value_t = 1)]
    pub plain_members: usize,

    /// Seconds measured, after the warm-up.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,

    /// Seconds of publishing before measuring.
    #[arg(long, default_value_t = 2.0)]
    pub warmup_secs: f64,

    /// Seconds to wait after the last answer for the last deliveries.
    #[arg(long, default_value_t = 5.0)]
    pub drain_secs: f64,

    /// Bytes of each message's text.
    #[arg(long, default_value_t = 64)]
    pub text_bytes: usize,

    /// Sent as `Authorization: Bearer KEY` (needed when the server has --api-key, or is
    /// not on this machine).
    #[arg(long)]
    pub api_key: Option<String>,

    /// Worker threads of the bench's runtime.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

/// What the scenario measured.
#[derive(Debug, Clone)]
pub struct RestPublishResult {
    /// 201 answers per second in the measured window.
    pub acked_per_s: f64,
    /// Publish latency, µs.
    pub histogram: Histogram<u64>,
    /// Publishes answered with another status, or failed.
    pub errors: u64,
    /// Deliveries of acknowledged publishes that no member received (after the drain).
    pub missing: u64,
}

#[derive(Debug, Default)]
struct Counters {
    /// Every 201 answer, warm-up included: each must reach every member of its room.
    acked: AtomicU64,
    json_received: AtomicU64,
    plain_received: AtomicU64,
    gaps: AtomicU64,
    reordered: AtomicU64,
    /// Members that have seen their room's probe.
    ready: AtomicUsize,
    closed: AtomicU64,
}

/// Runs the scenario and prints its result.
pub fn run(common: &Common, args: &RestPublishArgs) -> anyhow::Result<RestPublishResult> {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(args.threads.max(1)).enable_all().build()?;
    runtime.block_on(measure(common, args))
}

/// A member's connection, of either protocol.
enum Member {
    Json(WsConn),
    Plain(WsConn),
}

async fn measure(common: &Common, args: &RestPublishArgs) -> anyhow::Result<RestPublishResult> {
    anyhow::ensure!(args.conns >= 1 && args.rooms >= 1, "counts must be at least 1");
    let members_per_room = args.json_members + args.plain_members;
    let endpoint = Arc::new(Endpoint::parse(&common.url)?);
    let tag = now_us() % 1_000_000 + 1;
    println!(
        "rest publish: {} HTTP/1.1 connections (1 request in flight each) into {} rooms, {} JSON + {} plain \
         members per room, {} s measured",
        args.conns, args.rooms, args.json_members, args.plain_members, args.duration
    );
    let auth = args.api_key.as_ref().map(|key| format!("Authorization: Bearer {key}\r\n")).unwrap_or_default();

    // The rooms, created (or already there: 409), then their members.
    let mut setup = HttpConn::connect(endpoint.addr).await?;
    for room in 0..args.rooms {
        let body = json!({"name": format!("rp-{room}")}).to_string();
        let request = format!(
            "POST /api/rooms HTTP/1.1\r\nHost: {}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            endpoint.host,
            body.len()
        );
        setup.send(request.as_bytes()).await?;
        let response = within(setup.response()).await?;
        if response.status != 201 && response.status != 409 {
            bail!("creating room rp-{room}: {} {}", response.status, String::from_utf8_lossy(response.body));
        }
    }
    let counters = Arc::new(Counters::default());
    let mut member_tasks = Vec::new();
    for room in 0..args.rooms {
        let name = format!("rp-{room}");
        for i in 0..members_per_room {
            let member = if i < args.json_members {
                let mut conn = jsonws::connect(&endpoint, &format!("rp-member-{room}-{i}"), None).await?;
                jsonws::request(&mut conn, 0, json!({"op": "join", "room": name, "limit": 0})).await?;
                Member::Json(conn)
            } else {
                Member::Plain(WsConn::connect(&endpoint, &format!("/ws/chat/{name}"), 16 * 1024).await?)
            };
            let counters = counters.clone();
            member_tasks.push(tokio::spawn(receive(member, counters, tag, args.conns)));
        }
    }
    // Every member must be subscribed before the first counted publish: probes until
    // each has seen one (a plain member's subscription may follow its upgrade).
    let members = args.rooms * members_per_room;
    let probe_deadline = now_us() + 10_000_000;
    let mut probes = 0u64;
    while counters.ready.load(Relaxed) < members {
        if now_us() > probe_deadline {
            bail!("only {} of {members} members received a probe within 10 s", counters.ready.load(Relaxed));
        }
        for room in 0..args.rooms {
            let body = json!({"text": format!("probe:{tag}:{probes}")}).to_string();
            let request = publish_request(&endpoint.host, &auth, &format!("rp-{room}"), None, &body);
            setup.send(request.as_bytes()).await?;
            let response = within(setup.response()).await?;
            if response.status != 201 {
                bail!("probe into rp-{room}: {} {}", response.status, String::from_utf8_lossy(response.body));
            }
            probes += 1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let start = now_us() + 200_000;
    let measure_start = start + (args.warmup_secs * 1e6) as u64;
    let measure_end = measure_start + (args.duration * 1e6) as u64;
    let mut publishers = Vec::new();
    for index in 0..args.conns {
        let conn = HttpConn::connect(endpoint.addr).await?;
        let (endpoint, counters, auth) = (endpoint.clone(), counters.clone(), auth.clone());
        let window = Window { start, measure_start, measure_end };
        let room = format!("rp-{}", index % args.rooms);
        let text_bytes = args.text_bytes;
        publishers.push(tokio::spawn(async move {
            publisher(conn, &endpoint.host, &auth, &room, index, tag, text_bytes, window, &counters).await
        }));
    }
    stats::sleep_until_us(measure_start).await;
    let meter = CpuMeter::start(&common.server_pid);
    stats::sleep_until_us(measure_end).await;
    let usage = meter.stop();
    let mut histogram = stats::latency_histogram();
    let (mut acked_in_window, mut errors) = (0, 0);
    for task in publishers {
        let outcome = task.await.context("a publisher panicked")??;
        histogram.add(&outcome.histogram).map_err(|e| anyhow::anyhow!("cannot merge histograms: {e}"))?;
        acked_in_window += outcome.acked_in_window;
        errors += outcome.errors;
    }

    let expected = counters.acked.load(Relaxed) * members_per_room as u64;
    let received = || counters.json_received.load(Relaxed) + counters.plain_received.load(Relaxed);
    let drain_deadline = now_us() + (args.drain_secs * 1e6) as u64;
    while received() < expected && now_us() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for task in &member_tasks {
        task.abort();
    }
    let delivered = received();
    let missing = expected.saturating_sub(delivered);
    let acked_per_s = acked_in_window as f64 / args.duration;
    println!(
        "rest publish: {acked_per_s:.0} acked publishes/s, publish {}, errors {errors}; {}",
        stats::summary(&histogram),
        usage.per_million(acked_in_window, "publishes")
    );
    println!(
        "deliveries: {delivered} of {expected} (JSON {}, plain {}), missing {missing}, gaps {}, reordered {}, \
         members closed {}",
        counters.json_received.load(Relaxed),
        counters.plain_received.load(Relaxed),
        counters.gaps.load(Relaxed),
        counters.reordered.load(Relaxed),
        counters.closed.load(Relaxed),
    );
    if let Some(csv) = &common.csv {
        let label = &common.label;
        let row = format!(
            "{label},{},{},{},{},{acked_per_s:.0},{},{errors},{missing}",
            args.conns,
            args.rooms,
            args.json_members,
            args.plain_members,
            stats::p50_p99_p999_csv(&histogram)
        );
        stats::append_csv(csv, CSV_HEADER, &row)?;
    }
    // More deliveries than acknowledged publishes, or out of order, is a failure too.
    let extra = delivered.saturating_sub(expected) + counters.gaps.load(Relaxed) + counters.reordered.load(Relaxed);
    Ok(RestPublishResult { acked_per_s, histogram, errors: errors + extra, missing })
}

/// A setup call's answer, bounded in time.
async fn within<T>(future: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::time::timeout(Duration::from_secs(30), future).await.context("no answer within 30 s")?
}

/// `POST /api/rooms/{room}/messages` with `body`, and an `Idempotency-Key` when given.
fn publish_request(host: &str, auth: &str, room: &str, key: Option<&str>, body: &str) -> String {
    let key = key.map(|key| format!("Idempotency-Key: {key}\r\n")).unwrap_or_default();
    format!(
        "POST /api/rooms/{room}/messages HTTP/1.1\r\nHost: {host}\r\n{auth}{key}Content-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[derive(Debug, Clone, Copy)]
struct Window {
    start: u64,
    measure_start: u64,
    measure_end: u64,
}

struct PublisherOutcome {
    histogram: Histogram<u64>,
    acked_in_window: u64,
    errors: u64,
}

/// Publishes `<tag>:<index>:<n>` (padded with `x`s) in a loop, one request at a time,
/// from `window.start` until `window.measure_end`.
#[allow(clippy::too_many_arguments)]
async fn publisher(
    mut conn: HttpConn,
    host: &str,
    auth: &str,
    room: &str,
    index: usize,
    tag: u64,
    text_bytes: usize,
    window: Window,
    counters: &Counters,
) -> anyhow::Result<PublisherOutcome> {
    let mut outcome = PublisherOutcome { histogram: stats::latency_histogram(), acked_in_window: 0, errors: 0 };
    stats::sleep_until_us(window.start).await;
    let mut n = 0u64;
    let mut request = String::new();
    while now_us() < window.measure_end {
        let mut text = format!("{tag}:{index}:{n}");
        if text.len() < text_bytes {
            text.push(' ');
            text.extend(std::iter::repeat_n('x', text_bytes - text.len()));
        }
        let body = format!(r#"{{"text":"{text}"}}"#);
        request.clear();
        request.push_str(&publish_request(host, auth, room, Some(&format!("r{tag}-{index}-{n}")), &body));
        let sent_at = now_us();
        conn.send(request.as_bytes()).await?;
        let response = tokio::time::timeout(Duration::from_secs(30), conn.response())
            .await
            .with_context(|| format!("publisher {index}: no answer within 30 s"))??;
        let now = now_us();
        if response.status == 201 && jsonws::find(response.body, b"\"duplicate\":true").is_none() {
            counters.acked.fetch_add(1, Relaxed);
            if sent_at >= window.measure_start && now < window.measure_end {
                outcome.acked_in_window += 1;
                stats::record(&mut outcome.histogram, now - sent_at);
            }
        } else {
            outcome.errors += 1;
            if outcome.errors <= 3 {
                eprintln!("publisher {index}: {} {}", response.status, String::from_utf8_lossy(response.body));
            }
        }
        n += 1;
    }
    Ok(outcome)
}

/// Reads a member's deliveries until aborted: counts the texts of this run (`<tag>:...`),
/// checks each publisher's numbers arrive in order, and marks the member ready at its
/// first probe.
async fn receive(member: Member, counters: Arc<Counters>, tag: u64, publishers: usize) -> anyhow::Result<()> {
    let (mut conn, json) = match member {
        Member::Json(conn) => (conn, true),
        Member::Plain(conn) => (conn, false),
    };
    let tag = tag.to_string();
    let probe = format!("probe:{tag}:");
    let mine = format!("{tag}:");
    let mut ready = false;
    let mut next = vec![0u64; publishers];
    loop {
        let frame = match conn.next().await? {
            Incoming::Data(frame) => frame,
            Incoming::Closed(code) => {
                counters.closed.fetch_add(1, Relaxed);
                bail!("a member was closed with code {code}");
            }
        };
        let text = if json {
            if jsonws::frame_type(frame) != Some(b"message") {
                continue;
            }
            jsonws::str_field(frame, b"\"text\":\"")
        } else {
            frame.strip_prefix(PLAIN_PREFIX)
        };
        let Some(text) = text else { continue };
        if text.starts_with(probe.as_bytes()) {
            if !ready {
                ready = true;
                counters.ready.fetch_add(1, Relaxed);
            }
            continue;
        }
        let Some(rest) = text.strip_prefix(mine.as_bytes()) else { continue };
        let mut fields = rest.split(|&b| b == b':' || b == b' ');
        let number = |field: Option<&[u8]>| std::str::from_utf8(field?).ok()?.parse::<u64>().ok();
        let (Some(publisher), Some(n)) = (number(fields.next()), number(fields.next())) else { continue };
        if let Some(expected) = next.get_mut(publisher as usize) {
            if n == *expected {
                *expected += 1;
            } else if n > *expected {
                counters.gaps.fetch_add(n - *expected, Relaxed);
                *expected = n + 1;
            } else {
                counters.reordered.fetch_add(1, Relaxed);
            }
        }
        let received = if json { &counters.json_received } else { &counters.plain_received };
        received.fetch_add(1, Relaxed);
    }
}
