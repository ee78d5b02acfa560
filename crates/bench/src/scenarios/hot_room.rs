//! Scenario 1, the hot room: one plain-text room (`/ws/chat` by default, so any server
//! speaking the original protocol can be measured) with `--conns` receivers plus
//! `--publishers` extra connections that publish `<publisher>:<seq>:<send-time-µs>` at a
//! rising rate. Every connection, publishers included, is a room member that reads and
//! counts every delivery: latency from the payload's timestamp, loss from per-publisher
//! sequence numbers and per-step totals. The highest rate with zero loss and p99 under
//! the limit is the result.
//!
//! Receivers are raw sockets (no WebSocket library): each shard thread runs a
//! single-threaded tokio runtime and parses frames in place from one shared 64 KiB read
//! buffer, so a delivery costs the bench far less than it costs the server.

use std::{
    cell::RefCell,
    future::poll_fn,
    io,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed, Ordering::SeqCst},
        Arc, Mutex, MutexGuard,
    },
    task::Poll,
    time::Duration,
};

use anyhow::{bail, Context};
use bavard_ws::client::{self, Endpoint, Masker, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT};
use clap::Args;
use hdrhistogram::Histogram;
use tokio::{
    io::{AsyncRead, AsyncWriteExt, ReadBuf},
    net::TcpStream,
    runtime::Handle,
    sync::{oneshot, Semaphore},
};

use crate::{
    dial,
    stats::{self, now_us, CpuMeter},
    Common,
};

/// What every plain-text client receives before the text that was sent.
const PREFIX: &[u8] = bavard_protocol::plain::RECEIVED_PREFIX.as_bytes();
/// Bytes read per `read` call (the shared buffer grows when a frame is larger).
const READ_CHUNK: usize = 64 * 1024;
/// CSV header of this scenario.
pub const CSV_HEADER: &str = "server,rate,deliveries_per_s,p50_ms,p99_ms,loss";

/// Options of the hot-room scenario.
#[derive(Debug, Clone, Args)]
pub struct HotRoomArgs {
    /// Receiving connections in the room.
    #[arg(long, default_value_t = 1000)]
    pub conns: usize,

    /// Publishing connections, in addition to `--conns`; they are room members too and
    /// count their deliveries, so the room has conns + publishers members.
    #[arg(long, default_value_t = 10)]
    pub publishers: usize,

    /// Rate steps in deliveries per second (sends/s x room size), tried in order.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "100000,200000,400000,600000,800000,1000000,1250000,1500000,2000000,2500000,3000000,3500000,4000000,5000000,6000000"
    )]
    pub rates: Vec<u64>,

    /// Seconds each step is measured, after its warm-up.
    #[arg(long, alias = "duration", default_value_t = 5.0)]
    pub step_secs: f64,

    /// Seconds at the step's rate before measuring (not in the latency histogram; loss counts).
    #[arg(long, default_value_t = 1.0)]
    pub warmup_secs: f64,

    /// Seconds to wait after a step for its last deliveries; whatever is missing then is lost.
    #[arg(long, default_value_t = 2.0)]
    pub drain_secs: f64,

    /// A step fails when its p99 latency exceeds this many milliseconds (or anything is lost).
    #[arg(long, default_value_t = 50.0)]
    pub p99_limit_ms: f64,

    /// Pad each sent text to at least this many bytes (0: no padding, about 20 bytes).
    #[arg(long, default_value_t = 0)]
    pub payload_bytes: usize,

    /// Room to use: connects to `/ws/chat/{room}` instead of `/ws/chat` (ignored when
    /// the URL has a path).
    #[arg(long)]
    pub room: Option<String>,

    /// Threads receiving (each a single-threaded runtime with a share of the connections).
    /// The default 1 leaves the other core to the server on a 2-core machine; the bench
    /// reports its own CPU per million deliveries so its cost is visible.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,

    /// Microseconds each receive thread naps between turns (0: wake for every readable
    /// socket). Napping batches many sockets' reads per wake-up, which lowers the bench's
    /// CPU per delivery, and adds at most about this much to measured latencies.
    #[arg(long, default_value_t = 0)]
    pub coalesce_us: u64,

    /// Connection handshakes in flight at once while setting up.
    #[arg(long, default_value_t = 100)]
    pub connect_concurrency: usize,

    /// Run every step even after one fails.
    #[arg(long)]
    pub keep_going: bool,

    /// Another server (a node of the same cluster) to spread the room over; repeat for
    /// more. Connection i (receivers first, then publishers) goes to URL i mod n of
    /// `--url`, then each `--also-url` in order, so every server gets its share of both
    /// receivers and publishers. Give every node's pid to `--server-pid` to count the CPU
    /// of them all.
    #[arg(long, value_name = "URL")]
    pub also_url: Vec<String>,
}

/// The timing of the current step, read by every receiver once per read.
#[derive(Debug, Default)]
struct Window {
    /// Frames sent before this (µs) belong to an earlier step ("late").
    step_start: AtomicU64,
    /// Latencies of frames sent in [measure_start, measure_end) are recorded.
    measure_start: AtomicU64,
    measure_end: AtomicU64,
    /// The sync probe being waited for, and how many connections have seen it.
    sync_target: AtomicU64,
    sync_seen: AtomicU64,
}

/// The publishers' schedule: `rate` sends/s each from `start_us`, for generation `generation`.
#[derive(Debug, Clone, Copy, Default)]
struct Schedule {
    generation: u64,
    rate: f64,
    start_us: u64,
}

#[derive(Debug, Default)]
struct PubControl {
    schedule: Mutex<Schedule>,
    sync_request: AtomicU64,
    sent: Vec<AtomicU64>,
    seen_generation: Vec<AtomicU64>,
}

/// Counters of one shard, reset at each step start.
#[derive(Debug, Default, Clone, Copy)]
struct Counters {
    /// Deliveries of frames sent in this step.
    received: u64,
    /// Deliveries (of any step) that arrived inside the measurement window.
    arrived_in_window: u64,
    /// Deliveries of frames sent in an earlier step.
    late: u64,
    /// Sequence numbers skipped (cumulative over the run).
    gaps: u64,
    /// Frames older than one already seen from the same publisher (cumulative).
    reordered: u64,
    /// Frames that were not benchmark messages (e.g. disconnection notices).
    other: u64,
    /// Connections closed by the server or failed (cumulative).
    closed: u64,
}

impl Counters {
    fn add(&mut self, o: &Counters) {
        self.received += o.received;
        self.arrived_in_window += o.arrived_in_window;
        self.late += o.late;
        self.gaps += o.gaps;
        self.reordered += o.reordered;
        self.other += o.other;
        self.closed += o.closed;
    }
}

struct ShardStats {
    counters: Counters,
    histogram: Histogram<u64>,
}

struct Shared {
    window: Window,
    control: PubControl,
    payload_bytes: usize,
    publishers: usize,
}

struct Shard {
    handle: Handle,
    stats: Arc<Mutex<ShardStats>>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn lock(stats: &Mutex<ShardStats>) -> MutexGuard<'_, ShardStats> {
    stats.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shard {
    fn start(index: usize, coalesce_us: u64) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new().name(format!("bench-shard-{index}")).spawn(move || {
            runtime.block_on(async {
                if coalesce_us > 0 {
                    // The thread naps between turns instead of waking for every readable
                    // socket: each turn then finds many sockets ready at once.
                    tokio::spawn(async move {
                        loop {
                            std::thread::sleep(Duration::from_micros(coalesce_us));
                            tokio::task::yield_now().await;
                        }
                    });
                }
                let _stopped = stopped.await;
            });
        })?;
        let stats =
            Arc::new(Mutex::new(ShardStats { counters: Counters::default(), histogram: stats::latency_histogram() }));
        Ok(Self { handle, stats, stop: Some(stop), thread: Some(thread) })
    }
}

impl Drop for Shard {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _gone = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _done = thread.join();
        }
    }
}

/// State of one connection.
struct ConnState {
    /// Bytes of an incomplete frame carried over to the next read.
    carry: Vec<u8>,
    /// Next expected seq per publisher.
    next_seq: Vec<u64>,
    last_sync: u64,
    /// Frames to write (pongs, and a publisher's messages).
    out: Vec<u8>,
    masker: Masker,
}

thread_local! {
    static READ_BUF: RefCell<Vec<u8>> = RefCell::new(vec![0; READ_CHUNK]);
}

/// Reads once (into the thread's shared buffer) and processes every complete frame.
/// Resolves to false when the connection is over.
fn read_batch<'a>(
    stream: &'a mut TcpStream,
    state: &'a mut ConnState,
    shared: &'a Shared,
    shard: &'a Mutex<ShardStats>,
) -> impl std::future::Future<Output = io::Result<bool>> + 'a {
    poll_fn(move |cx| {
        READ_BUF.with(|cell| {
            let mut buf = cell.borrow_mut();
            let carry = state.carry.len();
            if buf.len() < carry + READ_CHUNK {
                buf.resize(carry + READ_CHUNK, 0);
            }
            buf[..carry].copy_from_slice(&state.carry);
            let mut read_buf = ReadBuf::new(&mut buf[carry..]);
            match Pin::new(&mut *stream).poll_read(cx, &mut read_buf) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {
                    let n = read_buf.filled().len();
                    if n == 0 {
                        return Poll::Ready(Ok(false));
                    }
                    let data = &buf[..carry + n];
                    let (consumed, open) = process(data, state, shared, shard)?;
                    state.carry.clear();
                    state.carry.extend_from_slice(&data[consumed..]);
                    Poll::Ready(Ok(open))
                }
            }
        })
    })
}

/// Handles every complete frame of `data`; returns the bytes consumed and whether the
/// connection is still open.
fn process(
    data: &[u8],
    state: &mut ConnState,
    shared: &Shared,
    shard: &Mutex<ShardStats>,
) -> io::Result<(usize, bool)> {
    let now = now_us();
    let window = &shared.window;
    let step_start = window.step_start.load(Relaxed);
    let measure_start = window.measure_start.load(Relaxed);
    let measure_end = window.measure_end.load(Relaxed);
    let arrived_in_window = now >= measure_start && now < measure_end;
    let mut guard = lock(shard);
    let stats = &mut *guard;
    let mut pos = 0;
    while let Some(header) = client::parse_header(&data[pos..]).map_err(io::Error::other)? {
        let header_len = header.header_len;
        let total = header.total_len();
        if data.len() - pos < total {
            break;
        }
        let payload = &data[pos + header_len..pos + total];
        pos += total;
        match header.opcode {
            OP_TEXT => {
                let Some(body) = payload.strip_prefix(PREFIX) else {
                    stats.counters.other += 1;
                    continue;
                };
                if let Some(probe) = body.strip_prefix(b"sync:") {
                    let k = parse_u64(probe).unwrap_or(0);
                    if k != 0 && k == window.sync_target.load(Relaxed) && state.last_sync != k {
                        state.last_sync = k;
                        window.sync_seen.fetch_add(1, SeqCst);
                    }
                    continue;
                }
                let Some((publisher, seq, sent_us)) = parse_message(body) else {
                    stats.counters.other += 1;
                    continue;
                };
                let c = &mut stats.counters;
                if let Some(expected) = state.next_seq.get_mut(publisher) {
                    if seq == *expected {
                        *expected += 1;
                    } else if seq > *expected {
                        c.gaps += seq - *expected;
                        *expected = seq + 1;
                    } else {
                        c.reordered += 1;
                    }
                }
                if arrived_in_window {
                    c.arrived_in_window += 1;
                }
                if sent_us < step_start {
                    c.late += 1;
                } else {
                    c.received += 1;
                    if sent_us >= measure_start && sent_us < measure_end {
                        stats::record(&mut stats.histogram, now.saturating_sub(sent_us));
                    }
                }
            }
            OP_PING => {
                let mask = state.masker.next_mask();
                client::encode_frame(&mut state.out, OP_PONG, payload, mask);
            }
            OP_CLOSE => return Ok((pos, false)),
            _ => stats.counters.other += 1,
        }
    }
    Ok((pos, true))
}

fn parse_u64(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    let mut value: u64 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return None;
        }
        value = value.wrapping_mul(10).wrapping_add(u64::from(b - b'0'));
    }
    Some(value)
}

/// Parses `<publisher>:<seq>:<send-time-µs>[ padding]`.
fn parse_message(body: &[u8]) -> Option<(usize, u64, u64)> {
    let mut fields = [0u64; 3];
    let mut field = 0;
    let mut digits = 0;
    for &b in body {
        match b {
            b'0'..=b'9' => {
                fields[field] = fields[field].wrapping_mul(10).wrapping_add(u64::from(b - b'0'));
                digits += 1;
            }
            b':' if digits > 0 && field < 2 => {
                field += 1;
                digits = 0;
            }
            b' ' if digits > 0 && field == 2 => break,
            _ => return None,
        }
    }
    (field == 2 && digits > 0).then_some((fields[0] as usize, fields[1], fields[2]))
}

/// A publisher's pacing: sends what the schedule says is due at each 1 ms tick.
struct Pacer {
    index: usize,
    generation: u64,
    sent_in_generation: u64,
    seq: u64,
    sync_sent: u64,
    text: Vec<u8>,
}

impl Pacer {
    fn tick(&mut self, state: &mut ConnState, shared: &Shared) {
        use std::io::Write;
        let control = &shared.control;
        let schedule = *control.schedule.lock().unwrap_or_else(|p| p.into_inner());
        if schedule.generation != self.generation {
            self.generation = schedule.generation;
            self.sent_in_generation = 0;
        }
        if self.index == 0 {
            let wanted = control.sync_request.load(SeqCst);
            if wanted > self.sync_sent {
                self.sync_sent = wanted;
                self.text.clear();
                let _infallible = write!(self.text, "sync:{wanted}");
                let mask = state.masker.next_mask();
                client::encode_frame(&mut state.out, OP_TEXT, &self.text, mask);
            }
        }
        let now = now_us();
        if schedule.rate > 0.0 && now >= schedule.start_us {
            // Publisher i of n is offset by i/n of a send interval, so that the room gets
            // evenly spaced messages rather than bursts of n at once.
            let phase = 1.0 - self.index as f64 / shared.publishers as f64;
            let due = ((now - schedule.start_us) as f64 * schedule.rate / 1e6 + phase) as u64;
            let mut sent = 0;
            while self.sent_in_generation < due {
                self.text.clear();
                let _infallible = write!(self.text, "{}:{}:{now}", self.index, self.seq);
                if self.text.len() < shared.payload_bytes {
                    self.text.push(b' ');
                    self.text.resize(shared.payload_bytes, b'x');
                }
                let mask = state.masker.next_mask();
                client::encode_frame(&mut state.out, OP_TEXT, &self.text, mask);
                self.seq += 1;
                self.sent_in_generation += 1;
                sent += 1;
            }
            if let Some(counter) = control.sent.get(self.index) {
                counter.fetch_add(sent, SeqCst);
            }
        }
        if let Some(seen) = control.seen_generation.get(self.index) {
            seen.store(schedule.generation, SeqCst);
        }
    }
}

/// One connection's life: read and count deliveries; a publisher also sends on its ticks.
async fn run_conn(
    mut stream: TcpStream,
    leftover: Vec<u8>,
    shared: Arc<Shared>,
    shard: Arc<Mutex<ShardStats>>,
    publisher: Option<usize>,
) {
    let seed = stream.local_addr().map_or(1, |a| u32::from(a.port()).wrapping_mul(2_654_435_761));
    let mut state = ConnState {
        carry: leftover,
        next_seq: vec![0; shared.publishers],
        last_sync: 0,
        out: Vec::with_capacity(1024),
        masker: Masker::new(seed),
    };
    let mut pacer = publisher.map(|index| {
        let mut ticker = tokio::time::interval(Duration::from_millis(1));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let pacer = Pacer { index, generation: 0, sent_in_generation: 0, seq: 0, sync_sent: 0, text: Vec::new() };
        (ticker, pacer)
    });
    loop {
        let open = tokio::select! {
            read = read_batch(&mut stream, &mut state, &shared, &shard) => matches!(read, Ok(true)),
            _ = async {
                match &mut pacer {
                    Some((ticker, _)) => ticker.tick().await,
                    None => std::future::pending().await,
                }
            } => {
                if let Some((_, pacer)) = &mut pacer {
                    pacer.tick(&mut state, &shared);
                }
                true
            }
        };
        if open && !state.out.is_empty() {
            let written = stream.write_all(&state.out).await;
            state.out.clear();
            if written.is_ok() {
                continue;
            }
        } else if open {
            continue;
        }
        lock(&shard).counters.closed += 1;
        return;
    }
}

/// The result of one rate step.
#[derive(Debug, Clone)]
struct StepResult {
    rate: u64,
    deliveries_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    loss: u64,
    passed: bool,
}

/// Runs the hot-room scenario; returns whether at least one step passed.
pub fn run(common: &Common, args: &HotRoomArgs) -> anyhow::Result<bool> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(coordinate(common, args))
}

async fn coordinate(common: &Common, args: &HotRoomArgs) -> anyhow::Result<bool> {
    anyhow::ensure!(args.publishers >= 1, "--publishers must be at least 1");
    anyhow::ensure!(args.threads >= 1, "--threads must be at least 1");
    let default_path = match &args.room {
        Some(room) => format!("/ws/chat/{room}"),
        None => "/ws/chat".to_owned(),
    };
    // Each server's endpoint and path (a URL's own path, when it has one, wins).
    let mut targets = Vec::with_capacity(1 + args.also_url.len());
    for url in std::iter::once(&common.url).chain(&args.also_url) {
        let endpoint = Endpoint::parse(url)?;
        let path = endpoint.path_or(&default_path).to_owned();
        targets.push((Arc::new(endpoint), path));
    }
    let room_size = args.conns + args.publishers;
    let on = match targets.as_slice() {
        [(_, path)] => format!("{}{path}", common.url),
        _ => {
            let urls: Vec<String> =
                targets.iter().map(|(endpoint, path)| format!("ws://{}{path}", endpoint.host)).collect();
            format!("{} servers round-robin ({})", targets.len(), urls.join(", "))
        }
    };
    println!(
        "hot room: {} receivers + {} publishers on {on} ({} thread(s)), payload >= {} bytes",
        args.conns, args.publishers, args.threads, args.payload_bytes
    );

    let shared = Arc::new(Shared {
        window: Window { measure_start: AtomicU64::new(u64::MAX), ..Window::default() },
        control: PubControl {
            schedule: Mutex::new(Schedule::default()),
            sync_request: AtomicU64::new(0),
            sent: (0..args.publishers).map(|_| AtomicU64::new(0)).collect(),
            seen_generation: (0..args.publishers).map(|_| AtomicU64::new(0)).collect(),
        },
        payload_bytes: args.payload_bytes,
        publishers: args.publishers,
    });
    let shards = (0..args.threads).map(|i| Shard::start(i, args.coalesce_us)).collect::<anyhow::Result<Vec<_>>>()?;

    // Connect everyone; publishers last so that receivers are there when they start.
    let started = now_us();
    let permits = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let mut ready = Vec::with_capacity(room_size);
    for i in 0..room_size {
        let shard = &shards[i % shards.len()];
        let publisher = i.checked_sub(args.conns);
        let (endpoint, path) = &targets[i % targets.len()];
        let (tx, rx) = oneshot::channel::<anyhow::Result<()>>();
        let (permits, endpoint, path, shared, stats) =
            (permits.clone(), endpoint.clone(), path.clone(), shared.clone(), shard.stats.clone());
        shard.handle.spawn(async move {
            let connected = {
                let _permit = permits.acquire().await;
                dial::connect(&endpoint, &path, None).await
            };
            match connected {
                Ok((stream, leftover)) => {
                    let _ = tx.send(Ok(()));
                    run_conn(stream, leftover, shared, stats, publisher).await;
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        });
        ready.push(rx);
    }
    for rx in ready {
        rx.await.context("a connection task died")??;
    }
    let secs = (now_us() - started) as f64 / 1e6;
    println!("connected {room_size} in {secs:.2} s ({:.0} handshakes/s)", room_size as f64 / secs);
    if targets.len() > 1 {
        let shares: Vec<String> = (0..targets.len())
            .map(|t| {
                let members = (0..room_size).filter(|i| i % targets.len() == t);
                let publishers = members.clone().filter(|i| *i >= args.conns).count();
                format!("server {}: {} connections ({publishers} publishers)", t + 1, members.count())
            })
            .collect();
        println!("spread: {}", shares.join(", "));
    }

    wait_until_all_joined(&shared, room_size).await?;

    let mut results = Vec::new();
    let mut generation = 0;
    for &rate in &args.rates {
        generation += 1;
        let result = step(common, args, &shared, &shards, rate, room_size, &mut generation).await?;
        if let Some(csv) = &common.csv {
            let row = format!(
                "{},{},{:.0},{:.3},{:.3},{}",
                common.label, result.rate, result.deliveries_per_s, result.p50_ms, result.p99_ms, result.loss
            );
            stats::append_csv(csv, CSV_HEADER, &row)?;
        }
        let passed = result.passed;
        results.push(result);
        if !passed && !args.keep_going {
            break;
        }
    }
    let best = results.iter().filter(|r| r.passed).max_by(|a, b| a.deliveries_per_s.total_cmp(&b.deliveries_per_s));
    match best {
        Some(best) => {
            println!("max sustained: {:.0} deliveries/s (p99 {:.2} ms, zero loss)", best.deliveries_per_s, best.p99_ms)
        }
        None => println!("max sustained: 0 deliveries/s (no step passed)"),
    }
    if let Some(rss) = stats::rss_report(&common.server_pid) {
        println!("server RSS at the end: {rss}");
    }
    drop(shards);
    Ok(best.is_some())
}

/// Sends numbered probes until one reaches every connection: then every member has
/// joined the room and no delivery of the steps can be missed for joining late.
async fn wait_until_all_joined(shared: &Shared, room_size: usize) -> anyhow::Result<()> {
    let window = &shared.window;
    for k in 1..=20u64 {
        window.sync_seen.store(0, SeqCst);
        window.sync_target.store(k, SeqCst);
        shared.control.sync_request.store(k, SeqCst);
        let deadline = now_us() + 1_000_000;
        while now_us() < deadline {
            if window.sync_seen.load(SeqCst) as usize >= room_size {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    bail!(
        "only {} of {room_size} connections receive the room's messages (is this a plain-text room?)",
        window.sync_seen.load(SeqCst)
    )
}

fn total_sent(shared: &Shared) -> u64 {
    shared.control.sent.iter().map(|s| s.load(SeqCst)).sum()
}

async fn step(
    common: &Common,
    args: &HotRoomArgs,
    shared: &Shared,
    shards: &[Shard],
    rate: u64,
    room_size: usize,
    generation: &mut u64,
) -> anyhow::Result<StepResult> {
    let per_publisher = rate as f64 / room_size as f64 / args.publishers as f64;
    for shard in shards {
        let mut stats = lock(&shard.stats);
        let closed = stats.counters.closed;
        let (gaps, reordered) = (stats.counters.gaps, stats.counters.reordered);
        stats.counters = Counters { closed, gaps, reordered, ..Counters::default() };
        stats.histogram.reset();
    }
    let sent_before = total_sent(shared);
    let start = now_us() + 2_000;
    let measure_start = start + (args.warmup_secs * 1e6) as u64;
    let measure_end = measure_start + (args.step_secs * 1e6) as u64;
    let window = &shared.window;
    window.step_start.store(start, SeqCst);
    window.measure_end.store(measure_end, SeqCst);
    window.measure_start.store(measure_start, SeqCst);
    set_schedule(shared, Schedule { generation: *generation, rate: per_publisher, start_us: start });

    stats::sleep_until_us(measure_start).await;
    let meter = CpuMeter::start(&common.server_pid);
    stats::sleep_until_us(measure_end).await;
    let usage = meter.stop();
    *generation += 1;
    set_schedule(shared, Schedule { generation: *generation, rate: 0.0, start_us: start });
    let stop_deadline = now_us() + 2_000_000;
    while shared.control.seen_generation.iter().any(|g| g.load(SeqCst) < *generation) && now_us() < stop_deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let sent = total_sent(shared) - sent_before;
    let expected = sent * room_size as u64;

    let drain_deadline = now_us() + (args.drain_secs * 1e6) as u64;
    let counters = loop {
        let mut counters = Counters::default();
        for shard in shards {
            counters.add(&lock(&shard.stats).counters);
        }
        if counters.received >= expected || now_us() >= drain_deadline {
            break counters;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let mut histogram = stats::latency_histogram();
    for shard in shards {
        let stats = lock(&shard.stats);
        histogram.add(&stats.histogram).map_err(|e| anyhow::anyhow!("cannot merge histograms: {e}"))?;
    }
    let loss = expected.saturating_sub(counters.received);
    let deliveries_per_s = counters.arrived_in_window as f64 / args.step_secs;
    let p50_ms = stats::quantile_ms(&histogram, 0.5);
    let p99_ms = stats::quantile_ms(&histogram, 0.99);
    let passed = loss == 0 && counters.closed == 0 && p99_ms <= args.p99_limit_ms && !histogram.is_empty();
    println!(
        "rate {rate}/s: {:.0} sends/s, {deliveries_per_s:.0} deliveries/s, {}, loss {loss} of {expected} \
         (late {}, gaps {}, reordered {}, closed {}, other {}); {}  {}",
        sent as f64 / (args.step_secs + args.warmup_secs),
        stats::summary(&histogram),
        counters.late,
        counters.gaps,
        counters.reordered,
        counters.closed,
        counters.other,
        usage.per_million(counters.arrived_in_window, "deliveries"),
        if passed { "PASS" } else { "FAIL" }
    );
    let bench_cores = usage.own / usage.wall.max(1e-9);
    if bench_cores > 0.85 * args.threads as f64 {
        println!(
            "warning: the bench used {:.0}% of its {} thread(s): this step may measure the generator, \
             not the server (try --threads 2)",
            100.0 * bench_cores / args.threads as f64,
            args.threads
        );
    }
    Ok(StepResult { rate, deliveries_per_s, p50_ms, p99_ms, loss, passed })
}

fn set_schedule(shared: &Shared, schedule: Schedule) {
    *shared.control.schedule.lock().unwrap_or_else(|p| p.into_inner()) = schedule;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_messages_with_and_without_padding() {
        assert_eq!(parse_message(b"3:17:123456"), Some((3, 17, 123456)));
        assert_eq!(parse_message(b"0:0:9 xxxxxxxx"), Some((0, 0, 9)));
        assert_eq!(parse_message(b"0:0"), None);
        assert_eq!(parse_message(b"a:0:1"), None);
        assert_eq!(parse_message(b"1:2:3:4"), None);
        assert_eq!(parse_u64(b"42"), Some(42));
        assert_eq!(parse_u64(b""), None);
    }
}
