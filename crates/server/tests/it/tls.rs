//! TLS on the server's own port (`--tls-cert`, `--tls-key`): https and wss with a
//! self-signed certificate made here, handshakes that never finish not holding up
//! anyone, graceful shutdown over TLS, and start errors that name the file at fault.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use bavard::{app, config::ServeConfig};
use futures_util::StreamExt;
use tokio::net::TcpStream;
use tokio_rustls::{
    client::TlsStream,
    rustls::{
        self,
        pki_types::{CertificateDer, ServerName},
    },
    TlsConnector,
};
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{bavard_command, close_code_of, http_exchange, spawn_with, test_config, within, ChildServer};

/// A self-signed certificate for `localhost` written as PEM files, and a client that
/// trusts it (and only it).
pub struct Pki {
    cert: PathBuf,
    key: PathBuf,
    connector: TlsConnector,
    dir: tempfile::TempDir,
}

impl Pki {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert, certified.cert.pem()).unwrap();
        std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
        Self { cert, key, connector: trusting(certified.cert.der().clone()), dir }
    }

    pub fn configure(&self, config: &mut ServeConfig) {
        config.tls_cert = Some(self.cert.clone());
        config.tls_key = Some(self.key.clone());
    }

    /// A TLS connection to `addr`, checking the certificate against `localhost`.
    pub async fn connect(&self, addr: std::net::SocketAddr) -> TlsStream<TcpStream> {
        let tcp = within(TcpStream::connect(addr)).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        within(self.connector.connect(name, tcp)).await.unwrap()
    }

    /// `GET path` over https: (status, body).
    pub async fn get(&self, addr: std::net::SocketAddr, path: &str) -> (u16, String) {
        let tls = self.connect(addr).await;
        let (status, _, body) = http_exchange(tls, &format!("GET {path} HTTP/1.1\r\nHost: localhost")).await;
        (status, body)
    }
}

fn trusting(certificate: CertificateDer<'static>) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certificate).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsConnector::from(Arc::new(config))
}

#[tokio::test]
async fn https_and_wss_are_served_on_the_same_port() {
    let pki = Pki::new();
    let server = spawn_with(|c| pki.configure(c)).await;

    let (status, body) = pki.get(server.addr, "/healthz").await;
    assert_eq!((status, body.as_str()), (200, "ok"));

    let tls = pki.connect(server.addr).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let url = format!("wss://localhost:{}/ws?name=alice", server.addr.port());
    let (mut ws, _) = within(tokio_tungstenite::client_async(url, tls)).await.unwrap();
    let welcome = match within(ws.next()).await {
        Some(Ok(Message::Text(text))) => serde_json::from_str::<serde_json::Value>(&text).unwrap(),
        other => panic!("expected the welcome frame, got {other:?}"),
    };
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    assert_eq!(welcome["user"]["name"], "alice", "{welcome}");

    // Graceful shutdown works over TLS: the open WebSocket is closed with 1001.
    let stopping = tokio::spawn(server.stop());
    assert_eq!(close_code_of(&mut ws).await, 1001);
    drop(ws);
    within(stopping).await.unwrap();
}

#[tokio::test]
async fn clients_that_never_finish_a_handshake_do_not_hold_up_others() {
    let pki = Pki::new();
    let server = spawn_with(|c| pki.configure(c)).await;
    // One client that never speaks, one that stops halfway through its hello.
    let silent = within(TcpStream::connect(server.addr)).await.unwrap();
    let mut halfway = within(TcpStream::connect(server.addr)).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut halfway, &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).await.unwrap();

    // The handshake timeout is 10 s: handshakes done one after another would wait for it.
    let started = Instant::now();
    let (status, body) = pki.get(server.addr, "/healthz").await;
    assert_eq!((status, body.as_str()), (200, "ok"));
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());

    drop((silent, halfway));
    server.stop().await;
}

/// The error `app::start` gives for these settings.
async fn start_error(adjust: impl FnOnce(&mut ServeConfig)) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&dir.path().join("bavard.db"));
    adjust(&mut config);
    match within(app::start(config)).await {
        Ok(server) => {
            within(server.stop()).await.unwrap();
            panic!("the server started");
        }
        Err(e) => format!("{e:#}"),
    }
}

fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

#[tokio::test]
async fn missing_or_bad_tls_files_stop_the_start_with_a_message_naming_them() {
    let pki = Pki::new();
    let other = Pki::new();
    let garbage = write(pki.dir.path(), "garbage.pem", "this is not PEM\n");
    let broken = write(pki.dir.path(), "broken.pem", "-----BEGIN CERTIFICATE-----\n!!!\n");
    let missing = pki.dir.path().join("missing.pem");

    let error = start_error(|c| c.tls_cert = Some(pki.cert.clone())).await;
    assert!(error.contains("--tls-cert was given without --tls-key"), "{error}");
    let error = start_error(|c| c.tls_key = Some(pki.key.clone())).await;
    assert!(error.contains("--tls-key was given without --tls-cert"), "{error}");

    let cases = [
        (&missing, &pki.key, "cannot read the TLS certificate file", "missing.pem"),
        (&garbage, &pki.key, "holds no certificate", "garbage.pem"),
        (&broken, &pki.key, "is not valid PEM", "broken.pem"),
        (&pki.cert, &missing, "cannot read the TLS key file", "missing.pem"),
        (&pki.cert, &pki.cert, "holds no private key", "cert.pem"),
        (&pki.cert, &other.key, "cannot use the TLS key", &other.key.display().to_string()),
    ];
    for (cert, key, what, file) in cases {
        let error = start_error(|c| {
            c.tls_cert = Some(cert.clone());
            c.tls_key = Some(key.clone());
        })
        .await;
        assert!(error.contains(what) && error.contains(file), "expected {what:?} about {file}: {error}");
    }

    // The binary says it on standard error and exits 1.
    let log = pki.dir.path().join("stderr.log");
    let child = bavard_command()
        .args(["--listen", "127.0.0.1:0", "--db"])
        .arg(pki.dir.path().join("bavard.db"))
        .arg("--tls-cert")
        .arg(&garbage)
        .arg("--tls-key")
        .arg(&pki.key)
        .stdin(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let code =
        ChildServer { child, addr: "127.0.0.1:0".parse().unwrap(), https: false, log: Default::default() }.wait_exit();
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("holds no certificate") && stderr.contains("garbage.pem"), "{stderr}");
}

#[tokio::test]
async fn the_binary_reports_https_and_serves_it() {
    let pki = Pki::new();
    let db = pki.dir.path().join("bavard.db");
    let (cert, key) = (pki.cert.to_str().unwrap(), pki.key.to_str().unwrap());
    let server = ChildServer::start(&db, &["--tls-cert", cert, "--tls-key", key]);
    assert!(server.https, "the listening line should say https://");
    let (status, body) = pki.get(server.addr, "/healthz").await;
    assert_eq!((status, body.as_str()), (200, "ok"));
}

/// `bavard chat ARGS` with `input` on standard input: (exit status, stdout, stderr).
async fn chat_over(args: Vec<String>, input: &'static str) -> (std::process::ExitStatus, String, String) {
    use std::{io::Write, process::Stdio};
    let mut child = bavard_command()
        .arg("chat")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let output = within(tokio::task::spawn_blocking(move || child.wait_with_output())).await.unwrap().unwrap();
    let text = |bytes: Vec<u8>| String::from_utf8_lossy(&bytes).into_owned();
    (output.status, text(output.stdout), text(output.stderr))
}

#[tokio::test]
async fn the_rust_sdk_and_bavard_chat_connect_over_wss_trusting_a_given_root() {
    use bavard_client::{protocol::RoomName, ClientError, Connection, Event, Resilient, TlsConfig};

    let pki = Pki::new();
    let server = spawn_with(|c| pki.configure(c)).await;
    let url = |name: &str| format!("wss://localhost:{}/ws?name={name}", server.addr.port());

    // The usual roots do not include a self-signed certificate: refused, and said why.
    let error = within(Connection::connect(&url("alice"))).await.err().expect("an unknown certificate is refused");
    let said = error.to_string();
    assert!(matches!(error, ClientError::WebSocket(_)) && said.contains("certificate"), "{said}");

    // Trusting it: the SDK's connection, and the reconnecting client.
    let tls = TlsConfig::with_ca_file(&pki.cert).unwrap();
    let mut alice = within(Connection::connect_with(&url("alice"), Some(&tls))).await.unwrap();
    assert_eq!(alice.welcome().user.name, "alice");
    let room = RoomName::new("secure").unwrap();
    within(alice.join(&room, None)).await.unwrap();
    let mut bob = Resilient::new(url("bob"));
    bob.set_tls(tls.clone());
    within(bob.join(&room)).await.unwrap();
    assert_eq!(within(alice.send(&room, "over wss", Some("k-1"))).await.unwrap().seq, 1);
    let seen = loop {
        match within(bob.next_event()).await.unwrap() {
            Event::Message(message) => break message,
            _ => continue,
        }
    };
    assert_eq!((seen.seq, seen.text.as_str()), (1, "over wss"));

    // `bavard chat` with --ca-cert sends over wss; without it, it says what is wrong.
    let https = format!("https://localhost:{}", server.addr.port());
    let cert = pki.cert.display().to_string();
    let args = |extra: &[&str]| {
        let mut args = vec![https.clone(), "--room".into(), "secure".into(), "--name".into(), "carol".into()];
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    let (status, out, err) = chat_over(args(&["--ca-cert", &cert]), "from the terminal\n").await;
    assert!(status.success(), "exit {status}; stdout {out}; stderr {err}");
    assert!(out.contains("[secure #2] carol: from the terminal"), "stdout {out}; stderr {err}");
    let (status, out, err) = chat_over(args(&[]), "never sent\n").await;
    assert!(!status.success(), "stdout {out}");
    assert!(err.contains("certificate") && !err.contains("not compiled in"), "{err}");

    // A file that is not a certificate is refused with its name.
    let garbage = write(pki.dir.path(), "garbage.pem", "this is not PEM\n");
    let problem = TlsConfig::with_ca_file(&garbage).unwrap_err().to_string();
    assert!(problem.contains("garbage.pem") && problem.contains("no certificate"), "{problem}");
    let (status, _, err) = chat_over(args(&["--ca-cert", &garbage.display().to_string()]), "x\n").await;
    assert!(!status.success() && err.contains("--ca-cert") && err.contains("garbage.pem"), "{err}");

    bob.close().await;
    alice.close().await;
    server.stop().await;
}
