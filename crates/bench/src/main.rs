//! `bavard-bench`: the load generator for Bavard (and, for the hot-room scenario, any
//! server speaking the plain-text protocol). Parses the command line and runs a scenario.

mod dial;
mod http1;
mod jsonws;
mod scenarios;
mod stats;

use std::{path::PathBuf, process::ExitCode};

use clap::{Args, Parser, Subcommand};

use scenarios::{
    durable::{self, DurableArgs},
    flood::{self, FloodArgs},
    history::{self, HistoryArgs},
    hot_room::{self, HotRoomArgs},
    idle::{self, IdleArgs},
    join_storm::{self, JoinStormArgs},
    many_rooms::{self, ManyRoomsArgs},
    reconnect::{self, ReconnectArgs},
    rest_publish::{self, RestPublishArgs},
    slow_consumer::{self, SlowConsumerArgs},
    soak::{self, SoakArgs},
};

/// Load generator for Bavard chat servers.
///
/// Start the server with its rate limit off, e.g.
/// `bavard --listen 127.0.0.1:8000 --db /tmp/b.db --rate-per-second 0`
/// (but with its default limits for `flood`), then run a scenario with `--server-pid $(pgrep -n bavard)` to get the server's CPU
/// and memory figures.
#[derive(Debug, Parser)]
#[command(name = "bavard-bench", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

/// Options every scenario takes.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// The server's base URL (`ws://host:port`). For hot-room, a path, when given,
    /// replaces `/ws/chat`; the JSON scenarios always use `/ws`.
    #[arg(long, default_value = "ws://127.0.0.1:8000")]
    pub url: String,

    /// The server's process id: reports its CPU seconds per million deliveries (from
    /// /proc/PID/stat) and its memory (VmRSS from /proc/PID/status). Several pids
    /// (comma-separated or the flag repeated, e.g. the nodes of a cluster): their CPU
    /// seconds are summed, each pid's share printed beside; RSS is their sum (each pid's
    /// shown beside where a scenario prints RSS).
    #[arg(long, value_name = "PID", value_delimiter = ',')]
    pub server_pid: Vec<u32>,

    /// Append machine-readable rows to this CSV file (a header is written to a new file).
    #[arg(long)]
    pub csv: Option<PathBuf>,

    /// The server's name in the CSV `server` column.
    #[arg(long, default_value = "bavard")]
    pub label: String,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// 1. Hot room: one plain-text room of 1,000 connections plus 10 publishers at
    ///    rising rates; the highest rate with zero loss and p99 <= 50 ms. Works against
    ///    any server speaking the plain-text protocol on /ws/chat.
    HotRoom {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        args: HotRoomArgs,
    },
    /// 4. Durable sends: acked messages/s and ack latency with 100 concurrent JSON senders.
    Durable {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        args: DurableArgs,
    },
    /// 2. Many rooms: 10,000 JSON connections in 1,000 rooms of 10 at 100k deliveries/s,
    ///    every message persisted; latency p50/p99/p999 and loss.
    ManyRooms {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        args: ManyRoomsArgs,
    },
    /// 3. Idle: up to 19,000 silent connections from source addresses 127.0.0.2 and up
    ///    (`--first-source`); handshakes/s and the server's RSS per connection.
    Idle {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        args: IdleArgs,
    },
    /// Join storm: a room of 10,000 JSON members, then 1,000 more connections join at
    ///    once; join-reply latency p50/p99 and joins/s (`--protocol plain`: connects into a
    ///    plain-text room, for any server speaking the plain-text protocol).
    JoinStorm {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        args: JoinStormArgs,
    },
    /// 5. History: p99 of `history` (last 50, and at random depths) in a room of 1M
    ///    messages, seeded first if needed (reuse the database between runs).
    History {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        args: HistoryArgs,
    },
    /// 6. Reconnect storm: 10k clients rejoin with `since` at once; time until all have
    ///    recovered what they missed.
    Reconnect {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        args: ReconnectArgs,
    },
    /// REST publish: 100 HTTP/1.1 keep-alive connections POSTing messages (one request
    ///    in flight each) while JSON and plain WebSocket members of the rooms receive;
    ///    acked publishes/s, publish latency, and every publish checked delivered.
    RestPublish {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        args: RestPublishArgs,
    },
    /// Flood: a quiet JSON room of 50 members (5 sending every 100 ms), measured without
    ///    and then with one user flooding another room from 4 connections; the quiet
    ///    room's latency p50/p99/max in each phase, and the flooder's accepted and refused
    ///    messages/s and 4029 closes. Run the server with its default limits for this one.
    Flood {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        args: FloodArgs,
    },
    /// Slow consumers: in each of 2 rooms a member that never reads and one that does,
    ///    200 messages/s of 4,000 characters per room (ASCII, then NUL); the server's RSS
    ///    before, during and after the stuck members leave, and what the readers got.
    SlowConsumer {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        args: SlowConsumerArgs,
    },
    /// Soak (not for CI): 10,000 JSON connections for 30 minutes with steady keyed
    ///    traffic; asserts no loss, duplicate or reordering and an RSS drift under 5 %.
    Soak {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        args: SoakArgs,
    },
    /// A few seconds of scenarios 1 and 4 at a low rate, and of REST publish; exits
    /// non-zero if anything was lost or failed (for CI).
    Smoke {
        #[command(flatten)]
        common: Common,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match &cli.scenario {
        Scenario::HotRoom { common, args } => hot_room::run(common, args),
        Scenario::Durable { common, args } => durable::run(common, args).map(|r| r.errors == 0),
        Scenario::ManyRooms { common, args } => many_rooms::run(common, args),
        Scenario::Idle { common, args } => idle::run(common, args),
        Scenario::JoinStorm { common, args } => join_storm::run(common, args),
        Scenario::History { common, args } => history::run(common, args),
        Scenario::Reconnect { common, args } => reconnect::run(common, args),
        Scenario::RestPublish { common, args } => {
            rest_publish::run(common, args).map(|r| r.errors == 0 && r.missing == 0)
        }
        Scenario::Flood { common, args } => flood::run(common, args),
        Scenario::SlowConsumer { common, args } => slow_consumer::run(common, args),
        Scenario::Soak { common, args } => soak::run(common, args),
        Scenario::Smoke { common } => smoke(common),
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(2),
        Err(e) => {
            eprintln!("bavard-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Scenario 1 with 50 receivers and 2 publishers at 5,000 deliveries/s for 2 s, then
/// scenario 4 with 10 senders for 2 s, then REST publish with 10 connections into 5
/// rooms for 1 s: true when nothing was lost and every send or publish was acked.
fn smoke(common: &Common) -> anyhow::Result<bool> {
    let hot = HotRoomArgs {
        conns: 50,
        publishers: 2,
        rates: vec![5_000],
        step_secs: 2.0,
        warmup_secs: 0.5,
        drain_secs: 5.0,
        // A loaded CI machine may be slow; the smoke test is about loss, not latency.
        p99_limit_ms: 5_000.0,
        payload_bytes: 0,
        room: Some("smoke".into()),
        threads: 1,
        coalesce_us: 0,
        connect_concurrency: 50,
        keep_going: false,
        also_url: Vec::new(),
    };
    let hot_ok = hot_room::run(common, &hot)?;
    let durable_args = DurableArgs {
        senders: 10,
        rooms: 10,
        in_flight: 1,
        duration: 2.0,
        warmup_secs: 0.5,
        text_bytes: 16,
        threads: 1,
    };
    let durable = durable::run(common, &durable_args)?;
    let durable_ok = durable.errors == 0 && durable.acked_per_s > 0.0 && !durable.histogram.is_empty();
    let rest_args = RestPublishArgs {
        conns: 10,
        rooms: 5,
        json_members: 1,
        plain_members: 1,
        duration: 1.0,
        warmup_secs: 0.5,
        drain_secs: 5.0,
        text_bytes: 16,
        api_key: None,
        threads: 1,
    };
    let rest = rest_publish::run(common, &rest_args)?;
    let rest_ok = rest.errors == 0 && rest.missing == 0 && rest.acked_per_s > 0.0 && !rest.histogram.is_empty();
    println!("smoke: hot room {}, durable {}, rest publish {}", verdict(hot_ok), verdict(durable_ok), verdict(rest_ok));
    Ok(hot_ok && durable_ok && rest_ok)
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "FAILED"
    }
}
