//! Flood: does a flood from one user raise another room's latency? A quiet JSON room
//! `flood-quiet` of `--members` connections (users `flood-quiet-0`, `-1`, ...), of which
//! the first `--senders` each send `<sender>:<seq>:<send-time-µs>` every `--interval-ms`;
//! every member reads every message, and its publish-to-delivery latency comes from the
//! timestamp in the text (as in many-rooms). The quiet room runs through two measured
//! phases of `--secs` each, the same connections throughout:
//!
//! 1. no flood;
//! 2. flood: one user (`?name=flooder`) on `--flood-conns` connections in room
//!    `flood-noisy` sends as fast as it can, keeping `--flood-in-flight` sends
//!    outstanding per connection (refilled when half are answered), counting `ok`
//!    replies, `rate_limited` replies (refused) and closes with 4029 (after which it
//!    reconnects, rejoins and goes on). The messages the server accepted are counted by
//!    a watcher, another user in `flood-noisy` that only reads: the `ok` replies the
//!    flooder reads undercount them, since replies still queued when the server closes
//!    a connection with 4029 are lost. The flooder and the watcher run on a thread (and
//!    tokio runtime) of their own, so their loops do not delay the quiet members' reads.
//!
//! Each phase starts with `--warmup-secs` not measured (for phase 2, the flooder is
//! already flooding). One line per phase: the quiet room's p50/p99/max latency and
//! deliveries (of messages sent inside the window), and for phase 2 the flooder's
//! accepted and refused messages per second and its 4029 closes; with `--server-pid`,
//! the server's CPU seconds over each window.
//!
//! The point is to show that the server's limits protect the quiet room, so run it
//! against a server with its default limits (20 frames/s per connection, burst 40,
//! closed with 4029 after 10 refusals in a row; 10 messages/s per user, burst 20):
//!
//! ```sh
//! bavard --listen 127.0.0.1:8000 --db /tmp/f.db &
//! bavard-bench flood --server-pid $(pgrep -n bavard)
//! ```
//!
//! (not `--rate-per-second 0` as for the other scenarios). The quiet senders send at
//! 10/s each by default, within both limits; a quiet send refused by the server makes
//! the run fail (exit 2), as does a quiet message not delivered to every member.

use std::{
    collections::VecDeque,
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
use tokio::sync::{oneshot, watch};

use crate::{
    jsonws,
    stats::{self, now_us, CpuMeter, CpuUsage},
    Common,
};

/// CSV header of this scenario.
pub const CSV_HEADER: &str = "server,phase,members,senders,interval_ms,delivered,expected,p50_ms,p99_ms,max_ms,\
                              flood_conns,flood_accepted_per_s,flood_refused_per_s,flood_closes_4029,server_cpu_s";

/// The quiet room.
const QUIET_ROOM: &str = "flood-quiet";
/// The flooder's room.
const NOISY_ROOM: &str = "flood-noisy";
/// The flooder's user name, the same on all its connections.
const FLOODER: &str = "flooder";
/// A member of the noisy room that counts the flooder's messages the server accepted.
const WATCHER: &str = "flood-watch";
/// The close code of the per-connection rate limit.
const RATE_LIMITED_CLOSE: u16 = 4029;

/// Options of the flood scenario.
#[derive(Debug, Clone, Args)]
pub struct FloodArgs {
    /// Members of the quiet room.
    #[arg(long, default_value_t = 50)]
    pub members: usize,

    /// Members of the quiet room that send (each its own user).
    #[arg(long, default_value_t = 5)]
    pub senders: usize,

    /// Milliseconds between two messages of one quiet sender.
    #[arg(long, default_value_t = 100)]
    pub interval_ms: u64,

    /// Seconds measured per phase, after its warm-up.
    #[arg(long, default_value_t = 10.0)]
    pub secs: f64,

    /// Seconds of traffic before each phase's measured window.
    #[arg(long, default_value_t = 1.0)]
    pub warmup_secs: f64,

    /// Connections of the flooder (one user).
    #[arg(long, default_value_t = 4)]
    pub flood_conns: usize,

    /// Sends the flooder keeps outstanding per connection.
    #[arg(long, default_value_t = 64)]
    pub flood_in_flight: usize,

    /// Seconds to wait after the last quiet send for the last deliveries.
    #[arg(long, default_value_t = 3.0)]
    pub drain_secs: f64,
}

/// When things happen, on the [`now_us`] clock.
#[derive(Debug, Clone, Copy)]
struct Plan {
    /// The quiet senders' first tick.
    start: u64,
    /// The measured windows of phase 1 (no flood) and phase 2 (flood), `[from, to)`.
    windows: [(u64, u64); 2],
    /// The flooder floods from here (the end of phase 1) to the end of phase 2.
    flood_start: u64,
}

impl Plan {
    fn phase(&self, t: u64) -> Option<usize> {
        self.windows.iter().position(|&(from, to)| t >= from && t < to)
    }

    fn end(&self) -> u64 {
        self.windows[1].1
    }
}

/// The quiet room's figures, per phase.
#[derive(Debug, Default)]
struct PhaseCounters {
    /// Sends made inside the window.
    sent: AtomicU64,
    /// Of those, refused by the server (any error reply).
    rejected: AtomicU64,
    /// Of those, refused with `rate_limited`.
    rate_limited: AtomicU64,
    /// Deliveries (to any member) of messages sent inside the window.
    delivered: AtomicU64,
}

struct Quiet {
    phases: [PhaseCounters; 2],
    histograms: [Mutex<Histogram<u64>>; 2],
    /// Members whose connection closed.
    closed: AtomicU64,
    members: usize,
    senders: usize,
    interval_us: u64,
}

/// The flooder's counts inside phase 2's window (replies by arrival time).
#[derive(Debug, Default)]
struct FloodCounters {
    /// The flooder's messages delivered to the watcher: those the server accepted.
    delivered: AtomicU64,
    /// `ok` replies read (fewer than accepted: a reply still queued when the server
    /// closes the connection with 4029 is lost).
    accepted: AtomicU64,
    refused: AtomicU64,
    /// Other error replies.
    errors: AtomicU64,
    closes_4029: AtomicU64,
    /// Connections lost otherwise (another close code, a reset, a write error).
    other_closes: AtomicU64,
    /// Failed connects or joins (over the whole flood).
    connect_failures: AtomicU64,
    /// Connections opened (over the whole flood).
    connections: AtomicU64,
}

/// Runs the scenario; true when every quiet message was accepted and delivered to every member.
pub fn run(common: &Common, args: &FloodArgs) -> anyhow::Result<bool> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    runtime.block_on(measure(common, args))
}

/// Parses `<sender>:<seq>:<send-time-µs>`.
fn parse_text(text: &[u8]) -> Option<(u64, u64, u64)> {
    let mut parts = text.split(|&b| b == b':').map(|p| std::str::from_utf8(p).ok()?.parse::<u64>().ok());
    Some((parts.next()??, parts.next()??, parts.next()??))
}

/// One quiet member: reads everything; a sender also sends on its tick until the plan's end.
async fn member(
    mut conn: WsConn,
    index: usize,
    quiet: Arc<Quiet>,
    mut plan_rx: watch::Receiver<Option<Plan>>,
) -> anyhow::Result<()> {
    let mut plan: Option<Plan> = None;
    let sender = index < quiet.senders;
    let far = tokio::time::Instant::now() + Duration::from_secs(86_400 * 365);
    let mut ticker = tokio::time::interval_at(far, Duration::from_micros(quiet.interval_us.max(1)));
    let mut sending = false;
    let mut seq = 0u64;
    // Sends waiting for their reply: (id, send time).
    let mut outstanding: VecDeque<(u64, u64)> = VecDeque::new();
    loop {
        tokio::select! {
            changed = plan_rx.changed(), if plan.is_none() => {
                changed?;
                plan = *plan_rx.borrow_and_update();
                if let (Some(p), true) = (plan, sender) {
                    // Spread the senders evenly over the interval.
                    let offset = quiet.interval_us * index as u64 / quiet.senders.max(1) as u64;
                    let first = tokio::time::Instant::now()
                        + Duration::from_micros((p.start + offset).saturating_sub(now_us()));
                    ticker = tokio::time::interval_at(first, Duration::from_micros(quiet.interval_us.max(1)));
                    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                    sending = true;
                }
            }
            incoming = conn.next() => match incoming? {
                Incoming::Data(frame) => {
                    let Some(plan) = plan else { continue };
                    match jsonws::frame_type(frame) {
                        Some(b"message") => {
                            let now = now_us();
                            let Some((_, _, sent_us)) =
                                jsonws::str_field(frame, b"\"text\":\"").and_then(parse_text) else { continue };
                            if let Some(p) = plan.phase(sent_us) {
                                quiet.phases[p].delivered.fetch_add(1, Relaxed);
                                let mut histogram = quiet.histograms[p].lock().unwrap_or_else(|e| e.into_inner());
                                stats::record(&mut histogram, now.saturating_sub(sent_us));
                            }
                        }
                        Some(b"reply") => {
                            let Some(id) = jsonws::int_field(frame, b"\"id\":") else { continue };
                            let Some(position) = outstanding.iter().position(|(i, _)| *i == id) else { continue };
                            let Some((_, sent_us)) = outstanding.remove(position) else { continue };
                            if jsonws::find(frame, b"\"ok\":true").is_some() {
                                continue;
                            }
                            if let Some(p) = plan.phase(sent_us) {
                                let c = &quiet.phases[p];
                                c.rejected.fetch_add(1, Relaxed);
                                if jsonws::find(frame, b"\"code\":\"rate_limited\"").is_some() {
                                    c.rate_limited.fetch_add(1, Relaxed);
                                }
                            }
                            eprintln!("quiet sender {index}: {}", String::from_utf8_lossy(frame));
                        }
                        _ => {}
                    }
                }
                Incoming::Closed(code) => {
                    quiet.closed.fetch_add(1, Relaxed);
                    anyhow::bail!("quiet member {index} closed with code {code}");
                }
            },
            _ = ticker.tick(), if sending => {
                let now = now_us();
                let Some(plan) = plan else { continue };
                if now >= plan.end() {
                    sending = false;
                    continue;
                }
                seq += 1;
                let frame = format!(r#"{{"op":"send","id":{seq},"room":"{QUIET_ROOM}","text":"{index}:{seq}:{now}"}}"#);
                conn.send_text(frame.as_bytes()).await?;
                outstanding.push_back((seq, now));
                if let Some(p) = plan.phase(now) {
                    quiet.phases[p].sent.fetch_add(1, Relaxed);
                }
            }
        }
    }
}

/// Connects as the flooder and joins the noisy room.
async fn flooder_connect(endpoint: &Endpoint) -> anyhow::Result<WsConn> {
    let mut conn = jsonws::connect(endpoint, FLOODER, None).await?;
    jsonws::request(&mut conn, 0, json!({"op": "join", "room": NOISY_ROOM, "limit": 0})).await?;
    Ok(conn)
}

/// Why one flooder connection ended.
enum ConnEnd {
    /// The flood is over.
    Done,
    /// Closed with 4029.
    RateLimited,
    /// Lost otherwise.
    Other(String),
}

/// One flooder connection until the server closes it or the flood ends.
async fn flood_once(
    conn: &mut WsConn,
    plan: &Plan,
    in_flight: usize,
    counters: &FloodCounters,
    next_id: &mut u64,
) -> ConnEnd {
    let end = plan.end();
    let window = plan.windows[1];
    let in_window = |t: u64| t >= window.0 && t < window.1;
    let mut outstanding = 0usize;
    loop {
        let now = now_us();
        if now >= end {
            return ConnEnd::Done;
        }
        if outstanding <= in_flight / 2 {
            while outstanding < in_flight {
                let frame = format!(r#"{{"op":"send","id":{},"room":"{NOISY_ROOM}","text":"flood"}}"#, *next_id);
                conn.queue_text(frame.as_bytes());
                *next_id += 1;
                outstanding += 1;
            }
            if let Err(e) = conn.flush().await {
                return ConnEnd::Other(format!("write: {e}"));
            }
        }
        let frame = match tokio::time::timeout(Duration::from_micros(end - now), conn.next()).await {
            Err(_) => return ConnEnd::Done,
            Ok(Err(e)) => return ConnEnd::Other(format!("read: {e}")),
            Ok(Ok(Incoming::Closed(RATE_LIMITED_CLOSE))) => return ConnEnd::RateLimited,
            Ok(Ok(Incoming::Closed(code))) => return ConnEnd::Other(format!("closed with code {code}")),
            Ok(Ok(Incoming::Data(frame))) => frame,
        };
        if jsonws::frame_type(frame) != Some(b"reply") {
            continue;
        }
        outstanding = outstanding.saturating_sub(1);
        if !in_window(now_us()) {
            continue;
        }
        if jsonws::find(frame, b"\"ok\":true").is_some() {
            counters.accepted.fetch_add(1, Relaxed);
        } else if jsonws::find(frame, b"\"code\":\"rate_limited\"").is_some() {
            counters.refused.fetch_add(1, Relaxed);
        } else if counters.errors.fetch_add(1, Relaxed) < 3 {
            eprintln!("flooder: {}", String::from_utf8_lossy(frame));
        }
    }
}

/// One flooder connection slot: connect, flood, reconnect when closed, until the end.
async fn flooder(endpoint: Arc<Endpoint>, plan: Plan, in_flight: usize, counters: Arc<FloodCounters>) {
    stats::sleep_until_us(plan.flood_start).await;
    let window = plan.windows[1];
    let mut next_id = 1u64;
    let mut reported = 0u32;
    while now_us() < plan.end() {
        let mut conn = match flooder_connect(&endpoint).await {
            Ok(conn) => conn,
            Err(e) => {
                if counters.connect_failures.fetch_add(1, Relaxed) < 3 {
                    eprintln!("flooder: cannot connect: {e:#}");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        counters.connections.fetch_add(1, Relaxed);
        let ended = flood_once(&mut conn, &plan, in_flight, &counters, &mut next_id).await;
        let now = now_us();
        let in_window = now >= window.0 && now < window.1;
        match ended {
            ConnEnd::Done => {
                conn.close().await;
                return;
            }
            ConnEnd::RateLimited if in_window => {
                counters.closes_4029.fetch_add(1, Relaxed);
            }
            ConnEnd::Other(why) if in_window => {
                counters.other_closes.fetch_add(1, Relaxed);
                if reported < 3 {
                    reported += 1;
                    eprintln!("flooder: connection lost: {why}");
                }
            }
            ConnEnd::RateLimited | ConnEnd::Other(_) => {}
        }
    }
}

/// Reads the noisy room as another user, counting the flooder's messages that arrive
/// inside phase 2's window, until the plan's end.
async fn watcher(mut conn: WsConn, plan: Plan, counters: Arc<FloodCounters>) -> anyhow::Result<()> {
    let window = plan.windows[1];
    loop {
        let now = now_us();
        if now >= plan.end() {
            conn.close().await;
            return Ok(());
        }
        match tokio::time::timeout(Duration::from_micros(plan.end() - now), conn.next()).await {
            Err(_) => {}
            Ok(incoming) => match incoming? {
                Incoming::Data(frame) => {
                    let now = now_us();
                    if jsonws::frame_type(frame) == Some(b"message") && now >= window.0 && now < window.1 {
                        counters.delivered.fetch_add(1, Relaxed);
                    }
                }
                Incoming::Closed(code) => anyhow::bail!("the watcher of {NOISY_ROOM} was closed with code {code}"),
            },
        }
    }
}

/// Runs the watcher and the flooder's connections on this thread's own runtime until the plan's end.
fn flood_thread(
    endpoint: Arc<Endpoint>,
    plan: Plan,
    args: &FloodArgs,
    counters: Arc<FloodCounters>,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let in_flight = args.flood_in_flight.max(1);
    let conns = args.flood_conns;
    runtime.block_on(async move {
        let mut conn = jsonws::connect(&endpoint, WATCHER, None).await.context("the watcher")?;
        jsonws::request(&mut conn, 0, json!({"op": "join", "room": NOISY_ROOM, "limit": 0}))
            .await
            .context("the watcher joining")?;
        let watching = tokio::spawn(watcher(conn, plan, counters.clone()));
        let tasks: Vec<_> =
            (0..conns).map(|_| tokio::spawn(flooder(endpoint.clone(), plan, in_flight, counters.clone()))).collect();
        for task in tasks {
            task.await.context("a flooder task panicked")?;
        }
        watching.await.context("the watcher panicked")?
    })
}

/// `p50 a ms, p99 b ms, max c ms`.
fn latency_line(histogram: &Histogram<u64>) -> String {
    format!(
        "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        stats::quantile_ms(histogram, 0.5),
        stats::quantile_ms(histogram, 0.99),
        histogram.max() as f64 / 1000.0
    )
}

/// `server X CPU-s (Y% of a core), bench Z CPU-s`.
fn cpu_line(usage: &CpuUsage) -> String {
    let server = match usage.server {
        Some(s) => format!("server {s:.2} CPU-s ({:.0}% of a core)", 100.0 * s / usage.wall.max(1e-9)),
        None => "server CPU unknown (no --server-pid)".into(),
    };
    format!("{server}, bench {:.2} CPU-s", usage.own)
}

async fn measure(common: &Common, args: &FloodArgs) -> anyhow::Result<bool> {
    anyhow::ensure!(
        args.members >= 1 && args.senders >= 1 && args.senders <= args.members,
        "--members and --senders must be at least 1, and --senders at most --members"
    );
    anyhow::ensure!(args.interval_ms >= 1 && args.secs > 0.0, "--interval-ms and --secs must be positive");
    let endpoint = Arc::new(Endpoint::parse(&common.url)?);
    let quiet = Arc::new(Quiet {
        phases: Default::default(),
        histograms: [Mutex::new(stats::latency_histogram()), Mutex::new(stats::latency_histogram())],
        closed: AtomicU64::new(0),
        members: args.members,
        senders: args.senders,
        interval_us: args.interval_ms * 1000,
    });
    let sends_per_s = args.senders as f64 * 1000.0 / args.interval_ms as f64;
    println!(
        "flood: quiet room {QUIET_ROOM} of {} members, {} senders every {} ms ({sends_per_s:.0} messages/s, \
         {:.0} deliveries/s); flooder: user {FLOODER} on {} connections in {NOISY_ROOM}, {} sends in flight each; \
         phases of {} s (+{} s warm-up)",
        args.members,
        args.senders,
        args.interval_ms,
        sends_per_s * args.members as f64,
        args.flood_conns,
        args.flood_in_flight,
        args.secs,
        args.warmup_secs
    );

    // The quiet room: each member reads from the moment it has joined.
    let (plan_tx, plan_rx) = watch::channel(None);
    let started = now_us();
    let mut members = Vec::with_capacity(args.members);
    for index in 0..args.members {
        let mut conn = jsonws::connect(&endpoint, &format!("{QUIET_ROOM}-{index}"), None)
            .await
            .with_context(|| format!("quiet member {index}"))?;
        jsonws::request(&mut conn, 0, json!({"op": "join", "room": QUIET_ROOM, "limit": 0}))
            .await
            .with_context(|| format!("quiet member {index} joining"))?;
        members.push(tokio::spawn(member(conn, index, quiet.clone(), plan_rx.clone())));
    }
    let secs = (now_us() - started) as f64 / 1e6;
    println!("connected and joined {} quiet members in {secs:.2} s", args.members);

    let warmup = (args.warmup_secs.max(0.0) * 1e6) as u64;
    let window = (args.secs * 1e6) as u64;
    let start = now_us() + 200_000;
    let p1 = (start + warmup, start + warmup + window);
    let p2 = (p1.1 + warmup, p1.1 + warmup + window);
    let plan = Plan { start, windows: [p1, p2], flood_start: p1.1 };
    plan_tx.send(Some(plan))?;

    let flood = Arc::new(FloodCounters::default());
    let (flood_done_tx, flood_done_rx) = oneshot::channel();
    {
        let (endpoint, args, flood) = (endpoint.clone(), args.clone(), flood.clone());
        std::thread::Builder::new().name("flooder".into()).spawn(move || {
            let _ = flood_done_tx.send(flood_thread(endpoint, plan, &args, flood));
        })?;
    }

    let mut usages = [CpuUsage::default(), CpuUsage::default()];
    for (usage, (from, to)) in usages.iter_mut().zip(plan.windows) {
        stats::sleep_until_us(from).await;
        let meter = CpuMeter::start(&common.server_pid);
        stats::sleep_until_us(to).await;
        *usage = meter.stop();
    }
    flood_done_rx.await.context("the flooder thread died")??;

    // Drain: every accepted quiet message should reach every member.
    let expected =
        |p: &PhaseCounters| p.sent.load(Relaxed).saturating_sub(p.rejected.load(Relaxed)) * quiet.members as u64;
    let drain_deadline = now_us() + (args.drain_secs * 1e6) as u64;
    loop {
        let missing = quiet.phases.iter().any(|p| p.delivered.load(Relaxed) < expected(p));
        if !missing || now_us() >= drain_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    for task in &members {
        task.abort();
    }

    let mut ok = true;
    let mut p99s = [0.0; 2];
    for (p, name) in ["phase 1, no flood", "phase 2, flood"].into_iter().enumerate() {
        let c = &quiet.phases[p];
        let histogram = quiet.histograms[p].lock().unwrap_or_else(|e| e.into_inner()).clone();
        p99s[p] = stats::quantile_ms(&histogram, 0.99);
        let (sent, rejected, limited) = (c.sent.load(Relaxed), c.rejected.load(Relaxed), c.rate_limited.load(Relaxed));
        let (delivered, expected) = (c.delivered.load(Relaxed), expected(c));
        ok &= rejected == 0 && delivered == expected && !histogram.is_empty();
        let mut line = format!(
            "quiet room {}, delivered {delivered} of {expected} ({sent} sent, {rejected} refused of which \
             {limited} rate_limited)",
            latency_line(&histogram)
        );
        let (mut accepted_s, mut refused_s, mut closes) = (String::new(), String::new(), String::new());
        if p == 1 {
            let f = &flood;
            let (delivered, replies) = (f.delivered.load(Relaxed), f.accepted.load(Relaxed));
            let refused = f.refused.load(Relaxed);
            let closes_4029 = f.closes_4029.load(Relaxed);
            accepted_s = format!("{:.1}", delivered as f64 / args.secs);
            refused_s = format!("{:.0}", refused as f64 / args.secs);
            closes = closes_4029.to_string();
            line += &format!(
                "; flooder {accepted_s} accepted/s ({:.1}/s ok replies read), {refused_s} refused/s, \
                 {closes_4029} closes with 4029 ({:.1}/s), {} other losses, {} other errors ({} connections \
                 opened, {} failed connects)",
                replies as f64 / args.secs,
                closes_4029 as f64 / args.secs,
                f.other_closes.load(Relaxed),
                f.errors.load(Relaxed),
                f.connections.load(Relaxed),
                f.connect_failures.load(Relaxed)
            );
            if refused == 0 && closes_4029 == 0 {
                eprintln!("warning: the flooder was never refused: is the server running with its default limits?");
            }
        }
        println!("{name}: {line}; {}", cpu_line(&usages[p]));
        if let Some(csv) = &common.csv {
            let server_cpu = usages[p].server.map(|s| format!("{s:.3}")).unwrap_or_default();
            let row = format!(
                "{},{},{},{},{},{delivered},{expected},{:.3},{:.3},{:.3},{},{accepted_s},{refused_s},{closes},{server_cpu}",
                common.label,
                if p == 0 { "no-flood" } else { "flood" },
                args.members,
                args.senders,
                args.interval_ms,
                stats::quantile_ms(&histogram, 0.5),
                stats::quantile_ms(&histogram, 0.99),
                histogram.max() as f64 / 1000.0,
                if p == 0 { String::new() } else { args.flood_conns.to_string() },
            );
            stats::append_csv(csv, CSV_HEADER, &row)?;
        }
    }
    let closed = quiet.closed.load(Relaxed);
    if closed > 0 {
        println!("{closed} quiet members were closed by the server");
        ok = false;
    }
    println!(
        "flood: quiet-room p99 {:.2} ms without the flood, {:.2} ms with it ({:+.0}%)",
        p99s[0],
        p99s[1],
        100.0 * (p99s[1] - p99s[0]) / p99s[0].max(1e-9)
    );
    Ok(ok)
}
