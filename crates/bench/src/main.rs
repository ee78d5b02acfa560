//! `bavard-bench`: the load generator for Bavard (and, for the hot-room scenario, any
//! server speaking the plain-text protocol). Parses the command line and runs a scenario.

// Parts of the raw client are used by the scenarios still to come.
#[allow(dead_code)]
mod rawws;
mod scenarios;
mod stats;

use std::{path::PathBuf, process::ExitCode};

use clap::{Args, Parser, Subcommand};

use scenarios::hot_room::{self, HotRoomArgs};

/// Load generator for Bavard chat servers.
///
/// Start the server with its rate limit off, e.g.
/// `bavard --listen 127.0.0.1:8000 --db /tmp/b.db --rate-per-second 0`,
/// then run a scenario with `--server-pid $(pgrep -n bavard)` to get the server's CPU
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
    /// The server's base URL (`ws://host:port`); a path, when given, replaces the
    /// scenario's default endpoint.
    #[arg(long, default_value = "ws://127.0.0.1:8000")]
    pub url: String,

    /// The server's process id: reports its CPU seconds per million deliveries (from
    /// /proc/PID/stat) and its memory (VmRSS from /proc/PID/status).
    #[arg(long)]
    pub server_pid: Option<u32>,

    /// Append machine-readable rows to this CSV file (a header is written to a new file).
    #[arg(long)]
    pub csv: Option<PathBuf>,

    /// The server's name in the CSV `server` column (default: bavard).
    #[arg(long)]
    pub label: Option<String>,
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match &cli.scenario {
        Scenario::HotRoom { common, args } => hot_room::run(common, args),
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
