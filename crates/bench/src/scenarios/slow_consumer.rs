//! Slow consumers: in each of `--rooms` rooms, one member that never reads and one that
//! does, while a publisher sends `--rate` messages/s of `--text-chars` characters into
//! every room; once with ASCII text, once with NUL characters (each written `\u0000` in
//! JSON: frames six times the size). Prints the server's RSS before, at its highest
//! during, and after the stuck members are gone, and how the reading members fared
//! (messages received of those sent, latency). The server's `--outbox-bytes` is what
//! bounds the memory a stuck member pins: past it, the member is closed with 4008.

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

use crate::{
    jsonws,
    stats::{self, now_us},
    Common,
};

/// Options of the slow-consumer scenario.
#[derive(Debug, Clone, Args)]
pub struct SlowConsumerArgs {
    /// Rooms, each with one member that never reads and one that does.
    #[arg(long, default_value_t = 2)]
    pub rooms: usize,

    /// Messages per second sent into each room.
    #[arg(long, default_value_t = 200)]
    pub rate: u64,

    /// Characters per message.
    #[arg(long, default_value_t = 4000)]
    pub text_chars: usize,

    /// Seconds of traffic per text kind.
    #[arg(long, default_value_t = 15.0)]
    pub duration: f64,

    /// Seconds to wait after the stuck members are gone before the "after" reading.
    #[arg(long, default_value_t = 3.0)]
    pub settle_secs: f64,

    /// Run without the stuck members: the same traffic's own cost, to compare with.
    #[arg(long)]
    pub no_stuck: bool,
}

/// Runs the scenario; true when the reading members got every message.
pub fn run(common: &Common, args: &SlowConsumerArgs) -> anyhow::Result<bool> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    runtime.block_on(async {
        let mut ok = true;
        for (kind, filler) in [("ASCII", 'a'), ("NUL", '\0')] {
            ok &= phase(common, args, kind, filler).await?;
        }
        Ok(ok)
    })
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// The server's RSS, if its pid was given.
fn rss(common: &Common) -> Option<u64> {
    (!common.server_pid.is_empty()).then(|| stats::rss_total(&common.server_pid).ok()).flatten()
}

/// The server's anonymous RSS (`RssAnon`: its heap, not the database's mapped pages).
fn rss_anon(common: &Common) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", common.server_pid.first()?)).ok()?;
    let line = status.lines().find(|l| l.starts_with("RssAnon:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

async fn phase(common: &Common, args: &SlowConsumerArgs, kind: &str, filler: char) -> anyhow::Result<bool> {
    let endpoint = Endpoint::parse(&common.url)?;
    let run = format!("{:x}", now_us() ^ u64::from(std::process::id()));
    let rooms: Vec<String> = (0..args.rooms).map(|i| format!("slow-{run}-{i}")).collect();
    let before = rss(common);
    let anon_before = rss_anon(common);
    let mut stuck = Vec::new();
    let mut readers = Vec::new();
    let received = Arc::new(AtomicU64::new(0));
    let histogram = Arc::new(Mutex::new(stats::latency_histogram()));
    for room in &rooms {
        // A small read buffer, never read: what the server queues stays on its side
        // once the kernel's buffers are full.
        if !args.no_stuck {
            let mut conn = jsonws::connect_with_buffer(&endpoint, "stuck", None, 1024).await?;
            jsonws::request(&mut conn, 1, json!({"op": "join", "room": room, "limit": 0})).await?;
            stuck.push(conn);
        }
        let mut reader = jsonws::connect(&endpoint, "reader", None).await?;
        jsonws::request(&mut reader, 1, json!({"op": "join", "room": room, "limit": 0})).await?;
        let (received, histogram) = (received.clone(), histogram.clone());
        readers.push(tokio::spawn(read_messages(reader, received, histogram)));
    }
    // The publisher is a member of the rooms too (sending needs it): it reads (and
    // drops) what it receives, errors included, which it counts.
    let mut publisher = jsonws::connect(&endpoint, "publisher", None).await?;
    for room in &rooms {
        jsonws::request(&mut publisher, 1, json!({"op": "join", "room": room, "limit": 0})).await?;
    }
    let errors = Arc::new(AtomicU64::new(0));
    let publish_errors = errors.clone();
    let sent = Arc::new(AtomicU64::new(0));
    let period = Duration::from_micros(1_000_000 / args.rate.max(1));
    let end = now_us() + (args.duration * 1e6) as u64;
    let (text_chars, publish_rooms, publish_sent) = (args.text_chars, rooms.clone(), sent.clone());
    let publishing = tokio::spawn(async move {
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        while now_us() < end {
            tokio::select! {
                _ = ticker.tick() => {
                    for room in &publish_rooms {
                        // `<send time µs>:` then filler up to the length; no id: no reply.
                        let mut text = format!("{}:", now_us());
                        text.extend(std::iter::repeat_n(filler, text_chars.saturating_sub(text.len())));
                        let frame = json!({"op": "send", "room": room, "text": text}).to_string();
                        publisher.send_text(frame.as_bytes()).await?;
                        publish_sent.fetch_add(1, Relaxed);
                    }
                }
                incoming = publisher.next() => match incoming? {
                    Incoming::Data(frame) if jsonws::frame_type(frame) == Some(b"error") => {
                        if publish_errors.fetch_add(1, Relaxed) == 0 {
                            eprintln!("a send failed: {}", String::from_utf8_lossy(frame));
                        }
                    }
                    Incoming::Data(_) => {}
                    Incoming::Closed(code) => anyhow::bail!("the publisher was closed with {code}"),
                },
            }
        }
        anyhow::Ok(publisher)
    });
    let mut highest = before.unwrap_or(0);
    let mut highest_anon = anon_before.unwrap_or(0);
    while now_us() < end {
        tokio::time::sleep(Duration::from_millis(250)).await;
        highest = highest.max(rss(common).unwrap_or(0));
        highest_anon = highest_anon.max(rss_anon(common).unwrap_or(0));
    }
    let publisher = publishing.await.context("the publisher died")??;
    // Wait for the reading members' last messages.
    let expected = sent.load(Relaxed);
    let deadline = now_us() + 10_000_000;
    while received.load(Relaxed) < expected && now_us() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        highest = highest.max(rss(common).unwrap_or(0));
    }
    let during_end = rss(common);
    // The stuck members leave (the server may have closed them with 4008 already).
    let mut codes = Vec::new();
    for mut conn in stuck {
        codes.push(closed_code(&mut conn).await);
    }
    for reader in readers {
        reader.abort();
    }
    drop(publisher);
    tokio::time::sleep(Duration::from_secs_f64(args.settle_secs)).await;
    let after = rss(common);
    let anon_after = rss_anon(common);
    let got = received.load(Relaxed);
    let histogram = histogram.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let show = |bytes: Option<u64>| bytes.map_or("?".to_owned(), |b| format!("{:.1} MiB", mib(b)));
    println!(
        "slow consumers{}, {kind} text: {} rooms x {} msg/s of {} chars for {} s; server RSS before {}, highest \
         during {}, at the end of traffic {}, {} s after the stuck members left {}; anonymous RSS {} -> at most {} \
         -> {}; stuck members closed with {codes:?}; reading members received {got} of {expected} ({}); failed \
         sends {}",
        if args.no_stuck { " (none stuck: the baseline)" } else { "" },
        args.rooms,
        args.rate,
        args.text_chars,
        args.duration,
        show(before),
        show(Some(highest).filter(|_| before.is_some())),
        show(during_end),
        args.settle_secs,
        show(after),
        show(anon_before),
        show(Some(highest_anon).filter(|_| anon_before.is_some())),
        show(anon_after),
        stats::summary(&histogram),
        errors.load(Relaxed),
    );
    Ok(got == expected && errors.load(Relaxed) == 0)
}

/// Reads what the server sent a stuck member until its close: the close code (1006
/// when the socket just ended, 0 when the server had not closed it after 10 s).
async fn closed_code(conn: &mut WsConn) -> u16 {
    let reading = async {
        loop {
            match conn.next().await {
                Ok(Incoming::Closed(code)) => return code,
                Ok(Incoming::Data(_)) => continue,
                Err(_) => return 1006,
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), reading).await.unwrap_or(0)
}

/// Counts the `message` events a reading member gets, with their latency.
async fn read_messages(mut conn: WsConn, received: Arc<AtomicU64>, histogram: Arc<Mutex<Histogram<u64>>>) {
    while let Ok(Incoming::Data(frame)) = conn.next().await {
        if jsonws::frame_type(frame) != Some(b"message") {
            continue;
        }
        let sent = jsonws::str_field(frame, b"\"text\":\"")
            .and_then(|text| text.split(|&b| b == b':').next())
            .and_then(|digits| std::str::from_utf8(digits).ok()?.parse::<u64>().ok());
        if let Some(sent) = sent {
            let mut histogram = histogram.lock().unwrap_or_else(|p| p.into_inner());
            stats::record(&mut histogram, now_us().saturating_sub(sent));
        }
        received.fetch_add(1, Relaxed);
    }
}
