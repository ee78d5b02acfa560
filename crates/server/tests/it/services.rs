//! The services the cluster tests run against: a fresh database on the machine's
//! PostgreSQL, a private PostgreSQL (to stop and start), private Redis and NATS servers
//! (to stop and start), and Debian's nginx in front of nodes.
//!
//! A missing service is a failure with a message saying what to install or start,
//! never a skipped test: `.ci/run` installs and starts them.

use std::{
    fs::File,
    net::{SocketAddr, TcpListener, TcpStream},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::helpers::WAIT;

/// The machine's PostgreSQL, where [`PgDatabase`] creates its databases (user
/// `postgres`, trust authentication on loopback).
pub const PG_HOST: &str = "127.0.0.1";
pub const PG_PORT: u16 = 5432;

/// A name no other test (or run) uses: `{prefix}_{16 hex digits}`.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}_{:016x}", rand::random::<u64>())
}

/// Serializes the tests that run private services (brokers, PostgreSQL, nginx): one
/// that stops its service frees the port, which another test's new service could take
/// while the first test's nodes still reconnect to it.
pub async fn one_private_service_test_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// A port free on 127.0.0.1 now (the OS picks it; a service started right after takes it).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("cannot bind a free port");
    listener.local_addr().expect("a bound listener has an address").port()
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
fn accepts(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// Polls `ready` every 50 ms until it holds; panics with `what` after [`WAIT`].
fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !ready() {
        assert!(Instant::now() < deadline, "{what}: not ready after {WAIT:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits (bounded) for `child` to exit; kills it if it does not.
fn reap(child: &mut Child) {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// `path` if it is an executable file, else a failure telling how to get it.
fn installed(path: &str, install: &str) -> PathBuf {
    let path = PathBuf::from(path);
    assert!(path.is_file(), "{} is missing: {install} (.ci/run installs it)", path.display());
    path
}

/// Runs one SQL command with `psql` as `postgres` on 127.0.0.1:`port`, database
/// `postgres`; returns whether it succeeded (and psql's complaint if not).
fn psql(port: u16, sql: &str) -> Result<(), String> {
    let output = Command::new("psql")
        .args(["-h", PG_HOST, "-p", &port.to_string(), "-U", "postgres", "-d", "postgres"])
        .args(["-v", "ON_ERROR_STOP=1", "-X", "-q", "-c", sql])
        .env("PGCONNECT_TIMEOUT", "5")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run psql ({e}): apt-get install postgresql-client"));
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim().to_owned())
    }
}

/// A database of its own on a PostgreSQL server, `bavard_it_<16 hex digits>`,
/// dropped (connections and all) when this is dropped.
pub struct PgDatabase {
    pub name: String,
    /// `postgres://postgres@127.0.0.1:PORT/NAME`, what `--db` takes.
    pub url: String,
    port: u16,
}

impl PgDatabase {
    /// A fresh database on the machine's PostgreSQL (127.0.0.1:5432).
    pub fn create() -> Self {
        Self::create_on(PG_PORT)
    }

    /// A fresh database on the PostgreSQL at 127.0.0.1:`port`.
    pub fn create_on(port: u16) -> Self {
        let name = unique("bavard_it");
        if let Err(e) = psql(port, &format!("CREATE DATABASE {name}")) {
            panic!(
                "cannot create a database on PostgreSQL at {PG_HOST}:{port} (user postgres, trust \
                 authentication; .ci/run starts it): {e}"
            );
        }
        let url = format!("postgres://postgres@{PG_HOST}:{port}/{name}");
        Self { name, url, port }
    }

    /// The URL as the `--db` value (`ServeConfig::db` is a path: a URL is kept as written).
    pub fn path(&self) -> &Path {
        Path::new(&self.url)
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        // Best effort: a server that outlives the test is cut off (WITH (FORCE)).
        let _ = psql(self.port, &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
    }
}

/// Which broker a [`BrokerProcess`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    Redis,
    Nats,
}

/// A private Redis or NATS server on a free port of 127.0.0.1 (nothing persisted),
/// which a test may stop and start again on the same port; killed when dropped.
pub struct BrokerProcess {
    pub kind: BrokerKind,
    pub port: u16,
    child: Option<Child>,
}

impl BrokerProcess {
    /// `/usr/bin/redis-server --port N --save '' --appendonly no`, started.
    pub fn redis() -> Self {
        Self::started(BrokerKind::Redis)
    }

    /// `/usr/sbin/nats-server -a 127.0.0.1 -p N`, started.
    pub fn nats() -> Self {
        Self::started(BrokerKind::Nats)
    }

    fn started(kind: BrokerKind) -> Self {
        let mut broker = Self { kind, port: free_port(), child: None };
        broker.start();
        broker
    }

    /// `redis://127.0.0.1:N` or `nats://127.0.0.1:N`, what `--broker` takes.
    pub fn url(&self) -> String {
        match self.kind {
            BrokerKind::Redis => format!("redis://127.0.0.1:{}", self.port),
            BrokerKind::Nats => format!("nats://127.0.0.1:{}", self.port),
        }
    }

    /// Starts the server (again) on its port and waits until it accepts connections.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "the broker is already running");
        let port = self.port.to_string();
        let mut command = match self.kind {
            BrokerKind::Redis => {
                let mut command = Command::new(installed("/usr/bin/redis-server", "apt-get install redis-server"));
                command.args(["--port", &port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]);
                command
            }
            BrokerKind::Nats => {
                let mut command = Command::new(installed("/usr/sbin/nats-server", "apt-get install nats-server"));
                command.args(["-a", "127.0.0.1", "-p", &port]);
                command
            }
        };
        let child = command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn();
        self.child = Some(child.unwrap_or_else(|e| panic!("cannot start {:?}: {e}", self.kind)));
        let (kind, port) = (self.kind, self.port);
        wait_until(&format!("{kind:?} on port {port}"), || accepts(port));
    }

    /// Kills the server (SIGKILL: an outage, not a goodbye) and waits until it is gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let port = self.port;
        wait_until(&format!("the broker on port {port} to stop"), || !accepts(port));
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The directory holding PostgreSQL's server binaries (`initdb`, `postgres`):
/// `/usr/local/bin` when they are there (this machine links them there), else the
/// newest `/usr/lib/postgresql/*/bin` (Debian's `postgresql` package).
fn pg_bin_dir() -> PathBuf {
    let local = PathBuf::from("/usr/local/bin");
    if local.join("initdb").is_file() && local.join("postgres").is_file() {
        return local;
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_string_lossy().parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    match versions.pop() {
        Some((_, bin)) => bin,
        None => panic!("no PostgreSQL server binaries (initdb, postgres): apt-get install postgresql (.ci/run does)"),
    }
}

/// The effective uid of this process (from `id -u`).
fn current_uid() -> Option<u32> {
    let output = Command::new("id").arg("-u").output().ok()?;
    String::from_utf8_lossy(&output.stdout).trim().parse().ok()
}

/// The uid and gid of user `name` (from `id`).
fn ids_of(name: &str) -> Option<(u32, u32)> {
    let id = |flag: &str| -> Option<u32> {
        let output = Command::new("id").args([flag, name]).output().ok()?;
        output.status.success().then(|| String::from_utf8_lossy(&output.stdout).trim().parse().ok())?
    };
    Some((id("-u")?, id("-g")?))
}

/// A PostgreSQL server of the test's own, in a temporary directory, on a free port of
/// 127.0.0.1, which the test may stop and start again (the machine's server must not
/// be stopped: other tests use it).
///
/// How it runs here: `initdb -D DIR/data -U postgres -A trust -E UTF8 --locale=C
/// --no-sync`, then `postgres -D DIR/data -p PORT -k DIR -h 127.0.0.1 -c fsync=off`.
/// PostgreSQL refuses to run as root, so when the tests run as root (CI containers),
/// both commands run as the `postgres` user (the Debian package's; its uid and gid are
/// set on the child process directly, which keeps the child's pid the postmaster's, so
/// signals reach it: `runuser` would not pass SIGINT on) and DIR is handed to that
/// user. The equivalent shell commands as root:
///
/// ```text
/// chown postgres DIR
/// runuser -u postgres -- initdb -D DIR/data -U postgres -A trust -E UTF8 --locale=C --no-sync
/// runuser -u postgres -- postgres -D DIR/data -p PORT -k DIR -h 127.0.0.1 -c fsync=off
/// ```
pub struct PrivatePostgres {
    pub port: u16,
    dir: tempfile::TempDir,
    bin: PathBuf,
    run_as: Option<(u32, u32)>,
    child: Option<Child>,
}

impl PrivatePostgres {
    /// Creates the cluster and starts its server.
    pub fn create() -> Self {
        let bin = pg_bin_dir();
        let dir = tempfile::Builder::new().prefix("bavard-pg-").tempdir().expect("cannot make a temporary directory");
        let run_as = if current_uid() == Some(0) {
            let ids = ids_of("postgres").expect(
                "running as root, PostgreSQL needs the postgres user: apt-get install postgresql (.ci/run does)",
            );
            std::os::unix::fs::chown(dir.path(), Some(ids.0), Some(ids.1))
                .expect("cannot hand the directory to postgres");
            Some(ids)
        } else {
            None
        };
        let mut server = Self { port: free_port(), dir, bin, run_as, child: None };
        let log = server.log("initdb.log");
        let status = server
            .command("initdb")
            .arg("-D")
            .arg(server.data())
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("a log file clones"))
            .stderr(log)
            .status()
            .expect("cannot run initdb");
        assert!(status.success(), "initdb failed: {}", server.read_log("initdb.log"));
        server.start();
        server
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`, what `--db` takes.
    pub fn url(&self) -> String {
        format!("postgres://postgres@{PG_HOST}:{}/postgres", self.port)
    }

    /// Starts the server (again) on its port and waits until it answers queries.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "the private PostgreSQL is already running");
        let log = self.log("postgres.log");
        let child = self
            .command("postgres")
            .arg("-D")
            .arg(self.data())
            .args(["-p", &self.port.to_string(), "-h", PG_HOST, "-k"])
            .arg(self.dir.path())
            .args(["-c", "fsync=off"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("a log file clones"))
            .stderr(log)
            .spawn()
            .expect("cannot start postgres");
        self.child = Some(child);
        let deadline = Instant::now() + WAIT;
        while psql(self.port, "SELECT 1").is_err() {
            if Instant::now() > deadline || self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(Some(_)))) {
                panic!("the private PostgreSQL did not start: {}", self.read_log("postgres.log"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the server with a fast shutdown (SIGINT: sessions are cut, nothing
    /// committed is lost) and waits until it is gone.
    pub fn stop(&mut self) {
        self.signal(nix::sys::signal::Signal::SIGINT);
    }

    fn signal(&mut self, signal: nix::sys::signal::Signal) {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, signal);
            reap(&mut child);
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A command for the server binary `name`, run as the postgres user when we are root.
    fn command(&self, name: &str) -> Command {
        let mut command = Command::new(self.bin.join(name));
        if let Some((uid, gid)) = self.run_as {
            command.uid(uid).gid(gid).current_dir(self.dir.path());
        }
        command
    }

    /// A log file in the directory (opened for appending).
    fn log(&self, name: &str) -> File {
        File::options().create(true).append(true).open(self.dir.path().join(name)).expect("cannot open a log file")
    }

    fn read_log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        // Immediate shutdown: the data is thrown away with the directory.
        self.signal(nix::sys::signal::Signal::SIGQUIT);
    }
}

/// Debian's nginx (`/usr/sbin/nginx`) as a child process, with its configuration,
/// logs, pid file and temporary files in a directory of its own, listening on a free
/// port of 127.0.0.1 and proxying to `upstreams` (WebSocket upgrades included).
pub struct Nginx {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Child,
}

impl Nginx {
    /// The configuration `docs/deploy.md` gives, with the test's ports and paths.
    pub fn config(dir: &Path, port: u16, upstreams: &[SocketAddr]) -> String {
        let dir = dir.display();
        let servers: String =
            upstreams.iter().map(|addr| format!("        server {addr} max_fails=1 fail_timeout=10s;\n")).collect();
        format!(
            r#"worker_processes 1;
error_log {dir}/error.log info;
pid {dir}/nginx.pid;

events {{
    worker_connections 1024;
}}

http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;

    # `Connection: upgrade` when the client asks for an upgrade, `close` otherwise.
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      close;
    }}

    upstream bavard {{
{servers}    }}

    server {{
        listen 127.0.0.1:{port};

        location / {{
            proxy_pass http://bavard;
            # WebSocket: HTTP/1.1 to the node, and the upgrade headers passed on.
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            # A WebSocket is quiet for long stretches (the node pings every 30 s).
            proxy_read_timeout 3600s;
            proxy_send_timeout 3600s;
            # A node that is down: try the other one (before anything was sent).
            proxy_connect_timeout 2s;
            proxy_next_upstream error timeout;
        }}
    }}
}}
"#
        )
    }

    /// Starts nginx in front of `upstreams` and waits until it accepts connections.
    pub fn start(upstreams: &[SocketAddr]) -> Self {
        Self::start_binary(installed("/usr/sbin/nginx", "nginx is not installed: apt-get install nginx"), upstreams)
    }

    /// Starts the nginx binary `nginx` in front of `upstreams`.
    pub fn start_binary(nginx: PathBuf, upstreams: &[SocketAddr]) -> Self {
        let dir =
            tempfile::Builder::new().prefix("bavard-nginx-").tempdir().expect("cannot make a temporary directory");
        let port = free_port();
        let conf = dir.path().join("nginx.conf");
        std::fs::write(&conf, Self::config(dir.path(), port, upstreams)).expect("cannot write nginx.conf");
        let child = Command::new(nginx)
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .arg("-c")
            .arg(&conf)
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start nginx");
        let mut nginx = Self { port, dir, child };
        let deadline = Instant::now() + WAIT;
        while !accepts(port) {
            let exited = matches!(nginx.child.try_wait(), Ok(Some(_)));
            if exited || Instant::now() > deadline {
                panic!(
                    "nginx did not start: {}",
                    std::fs::read_to_string(nginx.dir.path().join("error.log")).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        nginx
    }

    /// `ws://127.0.0.1:PORT{path}`.
    pub fn ws(&self, path: &str) -> String {
        format!("ws://127.0.0.1:{}{path}", self.port)
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn http(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM is nginx's fast shutdown: the master stops its worker, open WebSockets
        // and all (SIGKILL would leave the worker running, orphaned). SIGQUIT, the
        // graceful one, would wait for the WebSockets.
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        reap(&mut self.child);
    }
}
