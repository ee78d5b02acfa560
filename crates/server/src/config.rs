//! Settings: command-line flags, each with a `BAVARD_*` environment equivalent.
//! Defaults make `bavard` alone a working local server.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Bavard: a self-hosted real-time chat server.
#[derive(Debug, Parser)]
#[command(name = "bavard", version, about, long_about = None, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Server settings, used when no subcommand is given.
    #[command(flatten)]
    pub serve: ServeConfig,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the chat server (the default).
    Serve(Box<ServeConfig>),
    /// Chat in a room from the terminal, or from a script.
    ///
    /// Sends each non-empty line read from standard input to the room, and prints the
    /// room's messages as `[room #seq] name: text`, arrivals and departures as
    /// `* name joined` / `* name left`, and `* name is typing`. At the end of input it
    /// waits until the server has stored every line it sent, then exits 0, so
    /// `printf 'hello\n' | bavard chat --room general --name bot` works in a pipe.
    /// It reconnects after a network failure or a server restart without losing or
    /// repeating messages. Status lines and errors go to standard error.
    Chat(ChatArgs),
}

/// Everything `bavard chat` can be told.
#[derive(Debug, Clone, Args)]
pub struct ChatArgs {
    /// The server's JSON WebSocket endpoint (`http://` and `https://` are accepted too;
    /// a URL without a path gets `/ws`).
    #[arg(default_value = "ws://127.0.0.1:8000/ws")]
    pub url: String,

    /// The room to join (1 to 64 characters from `A-Z a-z 0-9 . _ -`).
    #[arg(long, short, env = "BAVARD_ROOM", default_value = "general")]
    pub room: String,

    /// Your nickname (on an open server; without one the server makes you a guest, `guest-XXXX`).
    #[arg(long, short, env = "BAVARD_NAME")]
    pub name: Option<String>,

    /// How many earlier messages of the room to print after joining (at most 200).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=200))]
    pub history: u32,

    /// A PEM file of certificates to trust for `wss://` (`https://`) besides the usual
    /// public roots: a server's self-signed certificate, or a private authority's.
    #[arg(long, env = "BAVARD_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<std::path::PathBuf>,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// How connections and REST calls prove who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthMode {
    /// `?name=` is enough (guests); a token, when one is presented and a JWT key is
    /// configured, is verified and makes a signed-in user.
    Open,
    /// Every WebSocket needs a valid JWT (`Authorization: Bearer` or `?token=`).
    Jwt,
}

/// Everything `bavard serve` can be told.
#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// Address to listen on (use port 0 for any free port).
    #[arg(long, env = "BAVARD_LISTEN", default_value = "127.0.0.1:8000")]
    pub listen: SocketAddr,

    /// Where history is kept: a SQLite database file (created with its schema on first
    /// start), or a PostgreSQL URL (`postgres://user@host:5432/db`, shared by the nodes
    /// of a cluster; migrations run on start).
    #[arg(long, env = "BAVARD_DB", default_value = "bavard.db")]
    pub db: PathBuf,

    /// How nodes of a cluster tell each other what they committed: `redis://host:6379`
    /// or `nats://host:4222`. Without one, this server is a node alone.
    #[arg(long, env = "BAVARD_BROKER", value_name = "URL")]
    pub broker: Option<String>,

    /// This node's name in the cluster (default: generated at start). Two live nodes
    /// must not share one.
    #[arg(long, env = "BAVARD_NODE_ID")]
    pub node_id: Option<String>,

    /// Seconds a node's users count as online elsewhere in the cluster without news
    /// from it: a node that dies stops counting within this time.
    #[arg(long, env = "BAVARD_PRESENCE_LEASE_SECS", default_value_t = 15)]
    pub presence_lease_secs: u64,

    /// Prefix of the broker channel or subject (and keys) this cluster uses, so several
    /// clusters (or test runs) can share one Redis or NATS.
    #[arg(long, env = "BAVARD_CLUSTER_NAME", default_value = "bavard")]
    pub cluster_name: String,

    /// Log format.
    #[arg(long, env = "BAVARD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Largest WebSocket frame accepted, in bytes; larger ones close the connection with 1009.
    #[arg(long, env = "BAVARD_MAX_FRAME_BYTES", default_value_t = 64 * 1024)]
    pub max_frame_bytes: usize,

    /// Longest message text, in characters.
    #[arg(long, env = "BAVARD_MAX_TEXT_CHARS", default_value_t = 4000)]
    pub max_text_chars: usize,

    /// The URLs browsers reach this server at, comma-separated, e.g.
    /// `https://chat.example.com`: their origins may open WebSockets. Without any, the
    /// server's own origins are its `--listen` address (unless 0.0.0.0 or ::) and
    /// `127.0.0.1`, `localhost` and `[::1]` on its port, over http and https. The
    /// request's Host header is never trusted for this (DNS rebinding).
    #[arg(long, env = "BAVARD_PUBLIC_URL", value_delimiter = ',', value_name = "URL")]
    pub public_url: Vec<String>,

    /// Further origins allowed to open WebSockets, comma-separated (`*` allows any),
    /// besides the server's own (see `--public-url`); clients that send no Origin header
    /// (not browsers) are allowed too.
    #[arg(long, env = "BAVARD_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// The server admin's REST key, presented as `Authorization: Bearer KEY` (users
    /// present their JWT the same way). Without one, REST calls from loopback clients
    /// act as the admin, and others may only read rooms that are not private.
    #[arg(long, env = "BAVARD_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,

    /// REST writes (POST, PATCH) one client address may make per second on average
    /// (0: unlimited); beyond it they get 429 `rate_limited`.
    #[arg(long, env = "BAVARD_API_RATE_PER_SECOND", default_value_t = 200.0)]
    pub api_rate_per_second: f64,

    /// REST writes one client address may make in a burst above the average.
    #[arg(long, env = "BAVARD_API_RATE_BURST", default_value_t = 400)]
    pub api_rate_burst: u32,

    /// `open`: anyone connects with `?name=` (a local run); `jwt`: every WebSocket needs
    /// a JWT signed with `--jwt-secret` or `--jwt-public-key`.
    #[arg(long, env = "BAVARD_AUTH", value_enum, default_value_t = AuthMode::Open)]
    pub auth: AuthMode,

    /// The HS256 secret JWTs are signed with (give this or `--jwt-public-key`).
    #[arg(long, env = "BAVARD_JWT_SECRET", hide_env_values = true, conflicts_with = "jwt_public_key")]
    pub jwt_secret: Option<String>,

    /// PEM file with the public key JWTs are signed with: RSA (RS256), EC P-256 (ES256)
    /// or Ed25519 (EdDSA). Only that algorithm is accepted.
    #[arg(long, env = "BAVARD_JWT_PUBLIC_KEY", value_name = "FILE")]
    pub jwt_public_key: Option<PathBuf>,

    /// When set, tokens must carry this `aud`.
    #[arg(long, env = "BAVARD_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// When set, tokens must carry this `iss`.
    #[arg(long, env = "BAVARD_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Messages one user may send per second on average, across all its connections
    /// and REST (0: no limit); beyond it sends get `rate_limited`.
    #[arg(long, env = "BAVARD_USER_RATE_PER_SECOND", default_value_t = 10.0)]
    pub user_rate_per_second: f64,

    /// Messages one user may send in a burst above the average.
    #[arg(long, env = "BAVARD_USER_RATE_BURST", default_value_t = 20)]
    pub user_rate_burst: u32,

    /// Most simultaneous WebSockets from one client address (0: no limit); further
    /// upgrades get 429. Behind a reverse proxy every client shares its address: set 0
    /// there and limit at the proxy.
    #[arg(long, env = "BAVARD_MAX_CONNECTIONS_PER_IP", default_value_t = 1000)]
    pub max_connections_per_ip: usize,

    /// Most rooms one connection may have joined at once; a further `join` is
    /// `forbidden` until it leaves one.
    #[arg(long, env = "BAVARD_MAX_ROOMS_PER_CONNECTION", default_value_t = 100)]
    pub max_rooms_per_connection: usize,

    /// Frames queued for one connection before it counts as a slow consumer and is
    /// closed with 4008.
    #[arg(long, env = "BAVARD_OUTBOX_FRAMES", default_value_t = 4096)]
    pub outbox_frames: usize,

    /// Bytes of frame text queued for one connection before it counts as a slow
    /// consumer and is closed with 4008 (bounds the memory a member that does not read
    /// can pin, whatever the size of the messages).
    #[arg(long, env = "BAVARD_OUTBOX_BYTES", default_value_t = 1024 * 1024)]
    pub outbox_bytes: usize,

    /// Most messages a `join` with `since` returns before `recovered` is false.
    #[arg(long, env = "BAVARD_RECOVERY_LIMIT", default_value_t = 1000)]
    pub recovery_limit: u32,

    /// Rooms with more users online than this get an `occupancy` event (the count, at
    /// most once per second) instead of a `presence` event per arrival and departure,
    /// and no `typing` events: per-user events would cost every member a frame per join.
    #[arg(long, env = "BAVARD_PRESENCE_EVENTS_MAX_MEMBERS", default_value_t = 1000)]
    pub presence_events_max_members: usize,

    /// Rooms with more users online than this send `read` events (a member's read
    /// position) only to the reader's own connections, not to every member.
    #[arg(long, env = "BAVARD_READ_RECEIPTS_MAX_MEMBERS", default_value_t = 100)]
    pub read_receipts_max_members: usize,

    /// Frames a connection may send per second, on average (0: no limit).
    #[arg(long, env = "BAVARD_RATE_PER_SECOND", default_value_t = 20.0)]
    pub rate_per_second: f64,

    /// Frames a connection may send in a burst above the average rate.
    #[arg(long, env = "BAVARD_RATE_BURST", default_value_t = 40)]
    pub rate_burst: u32,

    /// Rejected frames in a row after which the connection is closed with 4029.
    #[arg(long, env = "BAVARD_RATE_STRIKES", default_value_t = 10)]
    pub rate_strikes: u32,

    /// Seconds of silence from a client before the server pings it.
    #[arg(long, env = "BAVARD_HEARTBEAT_SECS", default_value_t = 30.0)]
    pub heartbeat_secs: f64,

    /// Seconds without any frame from a client (pongs included) before it is closed as dead.
    #[arg(long, env = "BAVARD_IDLE_TIMEOUT_SECS", default_value_t = 75.0)]
    pub idle_timeout_secs: f64,

    /// Seconds given to connections to close and to the store to commit at shutdown.
    #[arg(long, env = "BAVARD_SHUTDOWN_GRACE_SECS", default_value_t = 10.0)]
    pub shutdown_grace_secs: f64,

    /// Most simultaneous WebSocket connections; further upgrades get 503.
    #[arg(long, env = "BAVARD_MAX_CONNECTIONS", default_value_t = 19_000)]
    pub max_connections: usize,

    /// Seconds a new connection has to finish its TLS handshake (with TLS) and send a
    /// complete first request head, and a keep-alive connection to send the head of its
    /// next request after a response; slower clients are closed (slow-loris defence;
    /// WebSockets, once open, have `--idle-timeout-secs` instead).
    #[arg(long, env = "BAVARD_REQUEST_HEAD_TIMEOUT_SECS", default_value_t = 10.0)]
    pub request_head_timeout_secs: f64,

    /// Seconds a request has, from its complete head, to send its whole body; a slower
    /// body is answered 408 and its connection closed (slow-loris on bodies). Requests
    /// without a body, WebSockets among them, are not concerned.
    #[arg(long, env = "BAVARD_REQUEST_BODY_TIMEOUT_SECS", default_value_t = 10.0)]
    pub request_body_timeout_secs: f64,

    /// Most connections at once that have not yet sent a complete first request head
    /// (TLS handshakes included); a new connection past it closes the oldest of them.
    #[arg(long, env = "BAVARD_MAX_UNFINISHED_REQUESTS", default_value_t = 1024)]
    pub max_unfinished_requests: usize,

    /// Also serve `GET /conformance/echo`, a WebSocket that sends every text and binary
    /// message back unchanged, over the same framing, frame limit (`--max-frame-bytes`)
    /// and close codes as `/ws`: for WebSocket conformance suites (Autobahn). Off by
    /// default: it stores nothing but lets anyone who may connect bounce traffic.
    #[arg(long, env = "BAVARD_CONFORMANCE_ECHO")]
    pub conformance_echo: bool,

    /// PEM file with the TLS certificate chain, the server's own certificate first. With
    /// `--tls-key`, the server speaks https and wss on the `--listen` port (HTTP/1.1);
    /// give both or neither.
    #[arg(long, env = "BAVARD_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// PEM file with the private key of `--tls-cert` (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "BAVARD_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    /// Browser origins whose pages may call `/api` (CORS), comma-separated, each as
    /// `scheme://host[:port]`, e.g. `https://app.example`. Empty: no CORS headers, so
    /// browsers allow only same-origin calls.
    #[arg(long, env = "BAVARD_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,

    /// Threads running connections (0: one per core but one, at least one). The spare
    /// core serves the store's writer thread and the kernel's network work; on two
    /// cores one worker delivered a hot room with 20 % less CPU and a lower p99 than
    /// two (BENCHMARKS.md).
    #[arg(long, env = "BAVARD_WORKERS", default_value_t = 0)]
    pub workers: usize,
}

impl ServeConfig {
    /// `--db` as logs may show it: a URL's password replaced by `***`.
    pub fn db_for_logs(&self) -> String {
        let db = self.db.to_string_lossy().into_owned();
        let Some((scheme, rest)) = db.split_once("://") else { return db };
        let Some((userinfo, host)) = rest.split_once('@') else { return db };
        match userinfo.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}"),
            None => db,
        }
    }

    /// Heartbeat interval as a duration.
    pub fn heartbeat(&self) -> Duration {
        secs(self.heartbeat_secs)
    }

    /// Idle timeout as a duration.
    pub fn idle_timeout(&self) -> Duration {
        secs(self.idle_timeout_secs)
    }

    /// How many runtime worker threads to start.
    pub fn worker_threads(&self) -> usize {
        match self.workers {
            0 => std::thread::available_parallelism().map_or(1, |cores| cores.get().saturating_sub(1).max(1)),
            n => n,
        }
    }

    /// `--request-head-timeout-secs` as a duration.
    pub fn request_head_timeout(&self) -> Duration {
        secs(self.request_head_timeout_secs)
    }

    /// `--request-body-timeout-secs` as a duration.
    pub fn request_body_timeout(&self) -> Duration {
        secs(self.request_body_timeout_secs)
    }

    /// Shutdown grace as a duration.
    pub fn shutdown_grace(&self) -> Duration {
        secs(self.shutdown_grace_secs)
    }

    /// The defaults with another database and listen address (for tests and embedding).
    /// `BAVARD_*` variables are ignored: what is not set here is the documented default,
    /// whatever the environment says.
    pub fn with(listen: SocketAddr, db: PathBuf) -> Self {
        use clap::{CommandFactory, FromArgMatches};
        let command = Cli::command().mut_args(|arg| arg.env(None));
        let parsed = command.try_get_matches_from(["bavard"]).and_then(|matches| Cli::from_arg_matches(&matches));
        let mut config = match parsed {
            Ok(cli) => cli.serve,
            Err(e) => unreachable!("the defaults parse: {e}"),
        };
        config.listen = listen;
        config.db = db;
        config
    }
}

fn secs(value: f64) -> Duration {
    Duration::try_from_secs_f64(value.max(0.0)).unwrap_or(Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_password_never_reaches_the_logs() {
        let mut config = ServeConfig::with("127.0.0.1:0".parse().unwrap(), "postgres://bob:s3cret@db:5432/chat".into());
        assert_eq!(config.db_for_logs(), "postgres://bob:***@db:5432/chat");
        config.db = "postgres://bob@db/chat".into();
        assert_eq!(config.db_for_logs(), "postgres://bob@db/chat");
        config.db = "bavard.db".into();
        assert_eq!(config.db_for_logs(), "bavard.db");
    }

    #[test]
    fn embedded_defaults_ignore_the_environment() {
        // Only this test in the library reads this variable.
        std::env::set_var("BAVARD_PRESENCE_EVENTS_MAX_MEMBERS", "7");
        let config = ServeConfig::with("127.0.0.1:0".parse().unwrap(), "t.db".into());
        let parsed = Cli::try_parse_from(["bavard"]).unwrap().serve;
        std::env::remove_var("BAVARD_PRESENCE_EVENTS_MAX_MEMBERS");
        assert_eq!(parsed.presence_events_max_members, 7, "the command line reads the environment");
        assert_eq!(config.presence_events_max_members, 1000, "embedded servers do not");
    }
}
