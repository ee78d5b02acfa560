//! Scenario 3, idle connections: opens up to `--conns` WebSockets that then stay silent,
//! from source addresses `--first-source` (127.0.0.2), the next one (127.0.0.3), ...
//! (`--per-address` each, so the client side never runs out of ephemeral ports), and
//! reports handshakes/s, handshake latency
//! and the server's RSS growth per connection (needs `--server-pid`).
//!
//! With `--room-size` equal to `--conns` every plain-text connection is in one room;
//! `--probe` then checks that the room really holds them all (one connection sends a
//! message, every connection must receive it), and `--kill-server` stops the server
//! before the connections close, because a plain-text room that empties at once costs
//! the server a notice to every remaining member per departure (n²/2 frames).
//!
//! This process may hold 20,000 open files, so 19,000 connections is the practical top.

use std::{
    net::{IpAddr, Ipv4Addr},
    sync::Arc,
    time::Duration,
};

use anyhow::{bail, Context};
use bavard_ws::client::{self, Endpoint, Masker, OP_TEXT};
use clap::{Args, ValueEnum};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::{watch, Semaphore},
};

use crate::{
    dial, jsonws,
    stats::{self, now_us, CpuMeter},
    Common,
};

/// CSV header of this scenario.
pub const CSV_HEADER: &str =
    "server,protocol,conns,handshakes_per_s,handshake_p99_ms,rss_per_conn_bytes,room_size,connect_s,probe_reached,probe_ms";

/// Which protocol the idle connections speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Protocol {
    /// JSON protocol on `/ws?name=...`; a handshake counts once `welcome` is read.
    Json,
    /// Plain-text protocol on `/ws/chat/idle-N` (rooms of `--room-size`).
    Plain,
}

/// Options of the idle scenario.
#[derive(Debug, Clone, Args)]
pub struct IdleArgs {
    /// Connections to open (this process is limited to 20,000 open files).
    #[arg(long, default_value_t = 19_000)]
    pub conns: usize,

    /// Connections per source address (`--first-source`, then the next address, ...).
    #[arg(long, default_value_t = 10_000)]
    pub per_address: usize,

    /// The first source address (in 127.0.0.0/8, not the server's): connections come
    /// from it, then from the next address up, `--per-address` each. A run right after
    /// one whose ~10,000 client sockets from the same address are still in TIME_WAIT
    /// (60 s) connects about twice as slowly: give each run fresh addresses.
    #[arg(long, default_value_t = Ipv4Addr::new(127, 0, 0, 2))]
    pub first_source: Ipv4Addr,

    /// Protocol of the connections.
    #[arg(long, value_enum, default_value_t = Protocol::Json)]
    pub protocol: Protocol,

    /// Plain-text connections per room (rooms `idle-0`, `idle-1`, ...).
    #[arg(long, default_value_t = 10)]
    pub room_size: usize,

    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 256)]
    pub connect_concurrency: usize,

    /// Seconds to wait after the last handshake before reading the server's RSS.
    #[arg(long, default_value_t = 2.0)]
    pub settle_secs: f64,

    /// Seconds to keep the connections open after measuring (the server pings silent
    /// clients after 30 s by default, which these do not answer: keep this short).
    #[arg(long, default_value_t = 1.0)]
    pub hold_secs: f64,

    /// Worker threads of the bench's runtime.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,

    /// Plain protocol: after measuring, one connection sends a message and every
    /// connection must receive it (proves each room holds its members); prints how many
    /// did and how long the fan-out took. The scenario fails if one did not.
    #[arg(long)]
    pub probe: bool,

    /// After measuring (and probing), SIGKILL the server (`--server-pid`) and wait for
    /// it to die before closing the connections: closing a plain-text room of thousands
    /// at once makes a server send n²/2 disconnect notices, minutes of CPU for 19,000.
    #[arg(long, requires = "server_pid")]
    pub kill_server: bool,
}

/// Runs the scenario and prints its result.
pub fn run(common: &Common, args: &IdleArgs) -> anyhow::Result<bool> {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(args.threads.max(1)).enable_all().build()?;
    runtime.block_on(measure(common, args))
}

/// The source addresses of a scenario's connections: connection `i` comes from
/// `first + i / per_address`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sources {
    first: Ipv4Addr,
    per_address: usize,
}

impl Sources {
    /// The addresses of `conns` connections from `first` up, `per_address` each; fails
    /// unless every one of them is a loopback address (127.0.0.0/8, all local on Linux)
    /// other than the server's (`server`).
    pub(crate) fn new(first: Ipv4Addr, per_address: usize, conns: usize, server: IpAddr) -> anyhow::Result<Self> {
        let sources = Self { first, per_address: per_address.max(1) };
        let count = conns.div_ceil(sources.per_address);
        for n in 0..count {
            let ip = sources.nth(n)?;
            if IpAddr::V4(ip) == server {
                bail!("source address {ip} is the server's address: pick another --first-source");
            }
        }
        Ok(sources)
    }

    /// The `n`th address from `first`.
    fn nth(&self, n: usize) -> anyhow::Result<Ipv4Addr> {
        let ip = u32::try_from(n)
            .ok()
            .and_then(|n| u32::from(self.first).checked_add(n))
            .map(Ipv4Addr::from)
            .filter(|ip| ip.octets()[0] == 127 && *ip != Ipv4Addr::new(127, 255, 255, 255))
            .with_context(|| {
                format!("source address {} + {n} is outside the loopback range 127.0.0.0/8", self.first)
            })?;
        Ok(ip)
    }

    /// The source address of connection `index`.
    pub(crate) fn of(&self, index: usize) -> anyhow::Result<IpAddr> {
        Ok(IpAddr::V4(self.nth(index / self.per_address)?))
    }

    /// How many addresses `conns` connections use.
    pub(crate) fn count(&self, conns: usize) -> usize {
        conns.div_ceil(self.per_address)
    }

    /// The first address.
    pub(crate) fn first(&self) -> Ipv4Addr {
        self.first
    }
}

async fn open(endpoint: &Endpoint, args: &IdleArgs, sources: Sources, index: usize) -> anyhow::Result<TcpStream> {
    let bind = Some(sources.of(index)?);
    match args.protocol {
        Protocol::Plain => {
            let path = format!("/ws/chat/idle-{}", index / args.room_size.max(1));
            Ok(dial::connect(endpoint, &path, bind).await?.0)
        }
        Protocol::Json => {
            let (mut stream, mut bytes) = dial::connect(endpoint, &format!("/ws?name=idle-{index}"), bind).await?;
            // Read until the welcome frame is complete.
            let mut chunk = [0u8; 2048];
            loop {
                if let Some(header) = client::parse_header(&bytes)? {
                    if bytes.len() >= header.total_len() {
                        if header.opcode != OP_TEXT {
                            bail!("expected the welcome text frame, got opcode {}", header.opcode);
                        }
                        return Ok(stream);
                    }
                }
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    bail!("closed before welcome");
                }
                bytes.extend_from_slice(&chunk[..n]);
            }
        }
    }
}

async fn measure(common: &Common, args: &IdleArgs) -> anyhow::Result<bool> {
    let endpoint = Arc::new(Endpoint::parse(&common.url)?);
    let pids = &common.server_pid;
    // With several pids (nodes of a cluster), RSS is their sum.
    let rss_before = (!pids.is_empty()).then(|| stats::rss_total(pids)).transpose()?;
    let sources = Sources::new(args.first_source, args.per_address, args.conns, endpoint.addr.ip())?;
    println!(
        "idle: {} {:?} connections from {} source address(es) starting at {}, {} handshakes in flight",
        args.conns,
        args.protocol,
        sources.count(args.conns),
        sources.first(),
        args.connect_concurrency
    );
    let permits = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let meter = CpuMeter::start(&common.server_pid);
    let started = now_us();
    let mut tasks = Vec::with_capacity(args.conns);
    for index in 0..args.conns {
        let (endpoint, permits, args) = (endpoint.clone(), permits.clone(), args.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = permits.acquire().await;
            let t0 = now_us();
            let opened = open(&endpoint, &args, sources, index).await;
            opened.map(|stream| (stream, now_us() - t0))
        }));
    }
    let mut streams = Vec::with_capacity(args.conns);
    let mut histogram = stats::latency_histogram();
    let mut failures = 0usize;
    for task in tasks {
        match task.await.context("a connection task panicked")? {
            Ok((stream, latency)) => {
                stats::record(&mut histogram, latency);
                streams.push(stream);
            }
            Err(e) => {
                failures += 1;
                if failures <= 3 {
                    eprintln!("idle: connection failed: {e:#}");
                }
            }
        }
    }
    let secs = (now_us() - started) as f64 / 1e6;
    let usage = meter.stop();
    let opened = streams.len();
    let handshakes_per_s = opened as f64 / secs;
    println!(
        "opened {opened} connections in {secs:.2} s: {handshakes_per_s:.0} handshakes/s, handshake {}, {failures} failed; {}",
        stats::summary(&histogram),
        usage.per_million(opened as u64, "handshakes")
    );
    let rooms = args.conns.div_ceil(args.room_size.max(1));
    if args.protocol == Protocol::Plain {
        println!(
            "rooms: {rooms} of up to {} connections; time to connect them all {secs:.2} s ({handshakes_per_s:.0} joins/s)",
            args.room_size.max(1)
        );
    }
    tokio::time::sleep(Duration::from_secs_f64(args.settle_secs.max(0.0))).await;
    let mut rss_per_conn = None;
    if let Some(before) = rss_before {
        let after = stats::rss_total(pids)?;
        let per = after.saturating_sub(before) as f64 / opened.max(1) as f64;
        println!(
            "server RSS {:.1} MiB -> {:.1} MiB: {:.1} KiB per connection",
            before as f64 / 1048576.0,
            after as f64 / 1048576.0,
            per / 1024.0
        );
        if per < 512.0 {
            println!(
                "note: the server's RSS barely grew: it reuses the memory of earlier connections; \
                 measure RSS per connection on a freshly started server"
            );
        }
        rss_per_conn = Some(per);
    } else {
        println!("server RSS unknown (no --server-pid)");
    }
    let mut probe_ok = true;
    let mut probe_cells = String::from(",");
    if args.probe && args.protocol == Protocol::Plain && !streams.is_empty() {
        let (back, reached, probe_ms) = probe(streams, args.room_size.max(1)).await?;
        streams = back;
        let total = streams.len();
        probe_ok = reached == total;
        println!(
            "probe: reached {reached} of {total} connections in {probe_ms:.1} ms{}",
            if probe_ok { "" } else { " (FAILED: not every connection is in its room)" }
        );
        probe_cells = format!("{reached},{probe_ms:.1}");
    } else if args.probe {
        println!("probe: skipped (only for --protocol plain)");
    }
    if let Some(csv) = &common.csv {
        let label = &common.label;
        let room_size = if args.protocol == Protocol::Plain { args.room_size.to_string() } else { String::new() };
        let row = format!(
            "{label},{:?},{opened},{handshakes_per_s:.0},{:.3},{},{room_size},{secs:.3},{probe_cells}",
            args.protocol,
            stats::quantile_ms(&histogram, 0.99),
            rss_per_conn.map_or(String::new(), |r| format!("{r:.0}"))
        );
        stats::append_csv(csv, CSV_HEADER, &row)?;
    }
    tokio::time::sleep(Duration::from_secs_f64(args.hold_secs.max(0.0))).await;
    if args.kill_server {
        stats::kill_before_closing(&common.server_pid)?;
    }
    drop(streams);
    Ok(failures == 0 && probe_ok)
}

/// Every connection starts reading; then the first connection of each room sends
/// `probe-<tag>-<room>` and every connection reads until its room's probe arrives (10 s
/// at most). Returns the streams, how many got their probe, and the time from the
/// sends to the last arrival in ms (read by this one-thread bench: mostly its own time
/// to go through every socket).
async fn probe(streams: Vec<TcpStream>, room_size: usize) -> anyhow::Result<(Vec<TcpStream>, usize, f64)> {
    let tag = now_us();
    let mut masker = Masker::new(tag as u32);
    let (go_tx, go_rx) = watch::channel(false);
    let deadline = now_us() + 10_000_000;
    let mut tasks = Vec::with_capacity(streams.len());
    for (index, mut stream) in streams.into_iter().enumerate() {
        let expected = format!("probe-{tag}-{}", index / room_size).into_bytes();
        let frame = (index % room_size == 0).then(|| {
            let mut frame = Vec::new();
            client::encode_frame(&mut frame, OP_TEXT, &expected, masker.next_mask());
            frame
        });
        let mut go = go_rx.clone();
        tasks.push(tokio::spawn(async move {
            if let Some(frame) = frame {
                if go.wait_for(|go| *go).await.is_err() || stream.write_all(&frame).await.is_err() {
                    return (stream, None);
                }
            }
            let mut seen = Vec::new();
            let mut chunk = [0u8; 2048];
            let arrived = loop {
                let left = Duration::from_micros(deadline.saturating_sub(now_us()));
                match tokio::time::timeout(left, stream.read(&mut chunk)).await {
                    Ok(Ok(n)) if n > 0 => {
                        seen.extend_from_slice(&chunk[..n]);
                        if jsonws::find(&seen, &expected).is_some() {
                            break Some(now_us());
                        }
                        if seen.len() > 64 * 1024 {
                            seen.drain(..seen.len() - expected.len());
                        }
                    }
                    _ => break None,
                }
            };
            (stream, arrived)
        }));
    }
    // Let every reader reach its first read before the probes go out.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = now_us();
    go_tx.send(true).context("the probe readers are gone")?;
    let (mut back, mut reached, mut last) = (Vec::with_capacity(tasks.len()), 0, started);
    for task in tasks {
        let (stream, arrived) = task.await.context("a probe reader panicked")?;
        if let Some(at) = arrived {
            reached += 1;
            last = last.max(at);
        }
        back.push(stream);
    }
    Ok((back, reached, (last - started) as f64 / 1000.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_addresses() {
        let server = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let sources = Sources::new(Ipv4Addr::new(127, 0, 0, 2), 10_000, 19_000, server).unwrap();
        assert_eq!(sources.count(19_000), 2);
        assert_eq!(sources.of(0).unwrap(), IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)));
        assert_eq!(sources.of(9_999).unwrap(), IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)));
        assert_eq!(sources.of(10_000).unwrap(), IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3)));
        let sources = Sources::new(Ipv4Addr::new(127, 0, 7, 255), 10, 11, server).unwrap();
        assert_eq!(sources.of(10).unwrap(), IpAddr::V4(Ipv4Addr::new(127, 0, 8, 0)));
        // The server's address, or beyond 127.0.0.0/8, is refused.
        assert!(Sources::new(Ipv4Addr::new(127, 0, 0, 0), 10, 11, server).is_err());
        assert!(Sources::new(Ipv4Addr::new(127, 255, 255, 254), 10, 11, server).is_err());
        assert!(Sources::new(Ipv4Addr::new(10, 0, 0, 2), 10, 1, server).is_err());
        assert!(Sources::new(Ipv4Addr::new(127, 0, 0, 2), 0, 2, server).is_ok());
    }
}
