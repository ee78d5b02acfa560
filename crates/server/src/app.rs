//! Composition root: the only place that names concrete backends. [`start`] builds the
//! store, hub and router exactly as `main` does, serves until told to stop, and shuts
//! down in order: stop accepting, close every session (1001), commit what is queued.
//! With `--tls-cert` and `--tls-key` it serves https and wss on the same port
//! ([`crate::tls`] loads the certificate; [`crate::net`] accepts and serves).

use std::{net::SocketAddr, sync::Arc};

use anyhow::{bail, ensure, Context};
use bavard_protocol::Limits;
use tokio::{
    net::{TcpListener, TcpSocket},
    task::JoinHandle,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    api::{self, auth::Authenticator, AppState, OriginPolicy},
    auth::jwt::JwtVerifier,
    broker::{Broker, NatsBroker, RedisBroker, Solo},
    config::{AuthMode, ServeConfig},
    hub::{self, Hub, HubSettings},
    metrics::Metrics,
    net::{self, ConnectionLimits},
    session::SessionSettings,
    store::{MessageStore, PgStore, SqliteStore},
    tls,
};

/// Commit batches that may wait for the dispatcher before the store writer waits.
const COMMIT_STREAM_DEPTH: usize = 1024;
/// Sends a connection may have awaiting their commit before it stops reading.
const MAX_PENDING_SENDS: usize = 256;

/// A running server.
pub struct Server {
    addr: SocketAddr,
    tls: bool,
    shutdown: CancellationToken,
    finished: JoinHandle<anyhow::Result<()>>,
}

impl Server {
    /// The address it listens on (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https` when it serves TLS, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls {
            "https"
        } else {
            "http"
        }
    }

    /// Shuts down gracefully and waits until everything queued is committed.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.finished.await.context("the server task failed")?
    }
}

fn check(config: &ServeConfig) -> anyhow::Result<()> {
    ensure!(config.max_frame_bytes >= 256, "--max-frame-bytes must be at least 256");
    ensure!(config.max_text_chars >= 1, "--max-text-chars must be at least 1");
    ensure!(config.outbox_frames >= 16, "--outbox-frames must be at least 16");
    ensure!(config.outbox_bytes >= 64 * 1024, "--outbox-bytes must be at least 65536 (64 KiB)");
    ensure!(config.recovery_limit >= 1, "--recovery-limit must be at least 1");
    ensure!(config.rate_strikes >= 1, "--rate-strikes must be at least 1");
    ensure!(config.max_connections >= 1, "--max-connections must be at least 1");
    ensure!(config.max_unfinished_requests >= 1, "--max-unfinished-requests must be at least 1");
    ensure!(config.request_head_timeout_secs > 0.0, "--request-head-timeout-secs must be positive");
    ensure!(config.request_body_timeout_secs > 0.0, "--request-body-timeout-secs must be positive");
    ensure!(config.max_rooms_per_connection >= 1, "--max-rooms-per-connection must be at least 1");
    ensure!(config.heartbeat_secs > 0.0, "--heartbeat-secs must be positive");
    ensure!(
        config.idle_timeout_secs > config.heartbeat_secs,
        "--idle-timeout-secs must be longer than --heartbeat-secs"
    );
    Ok(())
}

/// Pending connections the kernel may hold before accept: tokio's default (1,024)
/// drops SYNs during connection storms (a reconnecting fleet), and each dropped SYN
/// costs its client a one-second retransmit. The kernel caps it at `somaxconn`.
const LISTEN_BACKLOG: u32 = 4_096;

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// The TLS configuration when both `--tls-cert` and `--tls-key` are given.
fn tls_config(config: &ServeConfig) -> anyhow::Result<Option<Arc<tokio_rustls::rustls::ServerConfig>>> {
    match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => tls::load_config(cert, key).map(Some),
        (None, None) => Ok(None),
        (Some(_), None) => {
            bail!("--tls-cert was given without --tls-key: give both to serve https and wss, or neither for plain http")
        }
        (None, Some(_)) => {
            bail!("--tls-key was given without --tls-cert: give both to serve https and wss, or neither for plain http")
        }
    }
}

/// The store `--db` names: a PostgreSQL URL, or a SQLite file.
async fn open_store(
    config: &ServeConfig,
    commits: hub::CommitSender,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<Arc<dyn MessageStore>> {
    let db = config.db.to_string_lossy();
    if db.starts_with("postgres://") || db.starts_with("postgresql://") {
        let store = PgStore::open(&db, commits, Arc::clone(metrics))
            .await
            .context("cannot open the PostgreSQL database given with --db")?;
        return Ok(Arc::new(store));
    }
    let store = SqliteStore::open(&config.db, commits, Arc::clone(metrics))
        .with_context(|| format!("cannot open the database {}", config.db.display()))?;
    Ok(Arc::new(store))
}

/// The broker `--broker` names (Redis or NATS), or none: a node alone.
async fn open_broker(config: &ServeConfig) -> anyhow::Result<Arc<dyn Broker>> {
    let Some(url) = config.broker.as_deref() else { return Ok(Arc::new(Solo)) };
    let prefix = config.cluster_name.as_str();
    ensure!(!prefix.is_empty(), "--cluster-name must not be empty");
    if url.starts_with("redis://") || url.starts_with("unix://") {
        return Ok(Arc::new(RedisBroker::connect(url, prefix).await.context("cannot use the Redis broker")?));
    }
    if url.starts_with("nats://") {
        return Ok(Arc::new(NatsBroker::connect(url, prefix).await.context("cannot use the NATS broker")?));
    }
    bail!("--broker {url:?} is not a broker URL this server knows: use redis://HOST:PORT or nats://HOST:PORT")
}

/// Binds, opens the store and starts serving.
pub async fn start(config: ServeConfig) -> anyhow::Result<Server> {
    check(&config)?;
    let tls = tls_config(&config)?;
    let jwt = JwtVerifier::from_settings(
        config.jwt_secret.as_deref(),
        config.jwt_public_key.as_deref(),
        config.jwt_audience.as_deref(),
        config.jwt_issuer.as_deref(),
    )?
    .map(Arc::new);
    if config.auth == AuthMode::Jwt && jwt.is_none() {
        bail!("--auth jwt needs the key tokens are signed with: give --jwt-secret or --jwt-public-key");
    }
    let cors = api::cors::layer(&config.cors_origins)?;
    let listener = bind(config.listen).with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    // Built after binding: with port 0 the own origins' port is only known now.
    let origins = OriginPolicy::new(addr, &config.public_url, &config.allowed_origins)?;
    let (commits, commit_stream) = hub::commit_stream(COMMIT_STREAM_DEPTH);
    // This server's own metrics: several servers in one process (the tests) count apart.
    let metrics = Arc::new(Metrics::new());
    let store = open_store(&config, commits, &metrics).await?;
    let broker = open_broker(&config).await?;
    let node = match &config.node_id {
        Some(node) if node.trim().is_empty() => bail!("--node-id must not be empty"),
        Some(node) => node.clone(),
        None => format!("n_{:016x}", rand::random::<u64>()),
    };
    tracing::info!(%node, clustered = broker.clustered(), "this node");
    let hub = Arc::new(Hub::new(
        Arc::clone(&store),
        broker,
        HubSettings {
            recovery_limit: config.recovery_limit,
            typing_interval: std::time::Duration::from_secs(2),
            presence_max_members: config.presence_events_max_members,
            node: node.into(),
            user_rate_per_second: config.user_rate_per_second,
            user_rate_burst: config.user_rate_burst,
            presence_lease: std::time::Duration::from_secs(config.presence_lease_secs.max(1)),
            max_text_chars: config.max_text_chars,
            read_receipts_max_members: config.read_receipts_max_members,
        },
        Arc::clone(&metrics),
    ));
    let dispatcher = tokio::spawn({
        let hub = Arc::clone(&hub);
        async move { hub.run_dispatcher(commit_stream).await }
    });
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    tracker.spawn({
        let (hub, stop) = (Arc::clone(&hub), shutdown.clone());
        async move { hub.run_occupancy(stop).await }
    });
    tracker.spawn({
        let (hub, stop) = (Arc::clone(&hub), shutdown.clone());
        async move { hub.run_gap_filler(stop).await }
    });
    tracker.spawn({
        let (hub, stop) = (Arc::clone(&hub), shutdown.clone());
        async move { hub.run_presence(stop).await }
    });
    let http_metrics = Arc::clone(&metrics);
    let state = AppState {
        hub,
        sessions: Arc::new(SessionSettings {
            server_name: format!("bavard {}", env!("CARGO_PKG_VERSION")),
            limits: Limits { max_frame_bytes: config.max_frame_bytes, max_text_chars: config.max_text_chars },
            outbox_frames: config.outbox_frames,
            outbox_bytes: config.outbox_bytes,
            rate_per_second: config.rate_per_second,
            rate_burst: config.rate_burst,
            rate_strikes: config.rate_strikes,
            heartbeat: config.heartbeat(),
            idle_timeout: config.idle_timeout(),
            max_pending_sends: MAX_PENDING_SENDS,
            shutdown_grace: config.shutdown_grace(),
            metrics: Arc::clone(&metrics),
            max_rooms: config.max_rooms_per_connection,
            jwt: jwt.clone(),
        }),
        origins: Arc::new(origins),
        connections: Arc::new(tokio::sync::Semaphore::new(config.max_connections)),
        shutdown: shutdown.clone(),
        tracker: tracker.clone(),
        auth: Arc::new(Authenticator {
            mode: config.auth,
            jwt,
            api_key: config.api_key.as_deref().map(Arc::from),
            metrics: Arc::clone(&metrics),
        }),
        ip_connections: Arc::new(api::IpConnections::new(config.max_connections_per_ip)),
        write_rate: Arc::new(api::WriteRate::new(config.api_rate_per_second, config.api_rate_burst)),
        body_timeout: config.request_body_timeout(),
        metrics,
    };
    let grace = config.shutdown_grace();
    let router = api::router(state, cors, config.conformance_echo);
    let is_tls = tls.is_some();
    let limits = ConnectionLimits {
        head_timeout: config.request_head_timeout(),
        max_unfinished: config.max_unfinished_requests,
    };
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let serving = tokio::spawn(net::serve(listener, acceptor, router, limits, http_metrics, shutdown.clone()));
    let stop = shutdown.clone();
    let finished = tokio::spawn(async move {
        shutdown.cancelled().await;
        tracker.close();
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
            tracing::warn!("some connections did not close within {grace:?}");
        }
        store.close().await;
        if tokio::time::timeout(grace, dispatcher).await.is_err() {
            tracing::warn!("the dispatcher did not stop within {grace:?}");
        }
        match tokio::time::timeout(grace, serving).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e).context("the HTTP server task failed"),
            Err(_) => {
                tracing::warn!("HTTP connections still open after {grace:?}; leaving them");
                Ok(())
            }
        }
    });
    Ok(Server { addr, tls: is_tls, shutdown: stop, finished })
}
