//! TLS for a single node without a proxy (`--tls-cert`, `--tls-key`): loading the PEM
//! certificate chain and key into a rustls configuration (ring provider, ALPN
//! `http/1.1`), and [`TlsListener`], the listener axum serves from when TLS is on.
//!
//! The listener hands axum only connections whose handshake is done. Handshakes run in
//! tasks of their own, each bounded by a timeout and at most a fixed number at once, so
//! a client that opens TCP and never finishes (or never starts) its handshake delays no
//! one else, and a crowd of them holds a bounded number of sockets for a bounded time.

use std::{io, net::SocketAddr, path::Path, sync::Arc, time::Duration};

use anyhow::{bail, ensure, Context};
use axum::serve::Listener;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    sync::{mpsc, Semaphore},
    task::JoinSet,
};
use tokio_rustls::{
    rustls::{
        self,
        pki_types::{
            pem::{self, PemObject},
            CertificateDer, PrivateKeyDer,
        },
    },
    server::TlsStream,
    TlsAcceptor,
};

/// How long a client may take to complete its handshake once its turn has come.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; further accepted connections wait in the kernel's
/// backlog. A handshake costs about a millisecond of CPU, so this many finish within a
/// second or two even on a busy machine.
const MAX_HANDSHAKES: usize = 1024;
/// Handshaken connections that may wait for the HTTP server to take them.
const READY_QUEUE: usize = 64;

/// The bounds put on handshakes.
#[derive(Debug, Clone, Copy)]
pub struct HandshakeLimits {
    /// Longest time one handshake may take; a slower client is dropped.
    pub timeout: Duration,
    /// Handshakes in progress at once.
    pub max_in_flight: usize,
}

impl Default for HandshakeLimits {
    fn default() -> Self {
        Self { timeout: HANDSHAKE_TIMEOUT, max_in_flight: MAX_HANDSHAKES }
    }
}

/// Reads the PEM certificate chain `cert` and private key `key` and builds the server's
/// TLS configuration. Errors name the file at fault and what it should hold.
pub fn load_config(cert: &Path, key: &Path) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let chain = read_chain(cert)?;
    let private_key = read_key(key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("the TLS library has no protocol version in common with its crypto provider")?
        .with_no_client_auth()
        .with_single_cert(chain, private_key)
        .with_context(|| {
            format!(
                "cannot use the TLS key {} with the certificate {}: the key must be the certificate's own \
                 private key (RSA, ECDSA P-256/P-384 or Ed25519), and the certificate's file must start \
                 with the server's certificate",
                key.display(),
                cert.display()
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn read_chain(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem = std::fs::read(path)
        .with_context(|| format!("cannot read the TLS certificate file {} (--tls-cert)", path.display()))?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("the TLS certificate file {} is not valid PEM (--tls-cert)", path.display()))?;
    ensure!(
        !chain.is_empty(),
        "the TLS certificate file {} holds no certificate (--tls-cert): it should hold PEM blocks \
         `-----BEGIN CERTIFICATE-----`, the server's certificate first, then its intermediates",
        path.display()
    );
    Ok(chain)
}

fn read_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    let pem =
        std::fs::read(path).with_context(|| format!("cannot read the TLS key file {} (--tls-key)", path.display()))?;
    match PrivateKeyDer::from_pem_slice(&pem) {
        Ok(key) => Ok(key),
        Err(pem::Error::NoItemsFound) => bail!(
            "the TLS key file {} holds no private key (--tls-key): it should hold a PEM block \
             `-----BEGIN PRIVATE KEY-----` (or `RSA PRIVATE KEY`, `EC PRIVATE KEY`)",
            path.display()
        ),
        Err(e) => Err(e).with_context(|| format!("the TLS key file {} is not valid PEM (--tls-key)", path.display())),
    }
}

/// A listener that yields TLS streams whose handshake is complete. A task of its own
/// accepts TCP connections from the inner listener and starts one handshake task per
/// connection; finished handshakes queue here for axum. Dropping the listener (axum
/// does at graceful shutdown) stops that task, which aborts the handshakes in progress.
pub struct TlsListener<S> {
    ready: mpsc::Receiver<(TlsStream<S>, SocketAddr)>,
    local_addr: SocketAddr,
}

impl<S> TlsListener<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    /// Starts accepting from `inner` (which sets its socket options, e.g. TCP_NODELAY).
    /// Must be called within the Tokio runtime.
    pub fn new<L>(inner: L, config: Arc<rustls::ServerConfig>, limits: HandshakeLimits) -> io::Result<Self>
    where
        L: Listener<Io = S, Addr = SocketAddr>,
    {
        let local_addr = inner.local_addr()?;
        let (ready_tx, ready) = mpsc::channel(READY_QUEUE);
        tokio::spawn(accept_loop(inner, TlsAcceptor::from(config), limits, ready_tx));
        Ok(Self { ready, local_addr })
    }
}

impl<S> Listener for TlsListener<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Io = TlsStream<S>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            None => {
                // Only a panic ends the accept loop while this listener lives.
                tracing::error!("the TLS accept loop stopped: no new connection will be accepted");
                std::future::pending().await
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

/// Accepts TCP connections while the listener lives, each once a handshake slot is
/// free, and hands each to a handshake task.
async fn accept_loop<L>(
    mut inner: L,
    acceptor: TlsAcceptor,
    limits: HandshakeLimits,
    ready: mpsc::Sender<(TlsStream<L::Io>, SocketAddr)>,
) where
    L: Listener<Addr = SocketAddr>,
{
    let slots = Arc::new(Semaphore::new(limits.max_in_flight.max(1)));
    // Owning the tasks means dropping them: when this loop ends, handshakes stop too.
    let mut handshakes = JoinSet::new();
    loop {
        while handshakes.try_join_next().is_some() {}
        let slot = tokio::select! {
            () = ready.closed() => return,
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => return, // never closed
            },
        };
        let (tcp, peer) = tokio::select! {
            () = ready.closed() => return,
            accepted = inner.accept() => accepted,
        };
        let (acceptor, ready) = (acceptor.clone(), ready.clone());
        handshakes.spawn(async move {
            // The slot is held until the connection is handed over, so at most
            // `max_in_flight` connections sit between accept and the HTTP server.
            let _slot = slot;
            match tokio::time::timeout(limits.timeout, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    // Fails only when the listener is gone (shutdown): the connection drops.
                    let _ = ready.send((tls, peer)).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out after {:?}", limits.timeout),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::{TcpListener, TcpStream},
    };
    use tokio_rustls::{rustls::pki_types::ServerName, TlsConnector};

    use super::*;

    /// A self-signed certificate for `localhost`, as (certificate, key) PEM files.
    fn self_signed(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, CertificateDer<'static>) {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, certified.cert.pem()).unwrap();
        std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
        (cert, key, certified.cert.der().clone())
    }

    fn connector(trusted: CertificateDer<'static>) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(trusted).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        TlsConnector::from(Arc::new(config))
    }

    /// A listener that echoes one line per connection, and its address.
    async fn echo_server(limits: HandshakeLimits) -> (SocketAddr, TlsConnector, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key, der) = self_signed(dir.path());
        let config = load_config(&cert, &key).unwrap();
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut listener = TlsListener::new(tcp, config, limits).unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut tls, _) = listener.accept().await;
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    let n = tls.read(&mut buf).await.unwrap_or(0);
                    let _ = tls.write_all(&buf[..n]).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        (addr, connector(der), dir)
    }

    async fn echo_once(addr: SocketAddr, connector: &TlsConnector) -> Vec<u8> {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let mut tls = connector.connect(name, tcp).await.unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]), "HTTP/1.1 only");
        tls.write_all(b"hello").await.unwrap();
        let mut echoed = Vec::new();
        tls.read_to_end(&mut echoed).await.unwrap();
        echoed
    }

    #[tokio::test]
    async fn a_silent_client_does_not_hold_up_the_next_handshake() {
        let limits = HandshakeLimits { timeout: Duration::from_secs(30), max_in_flight: 8 };
        let (addr, connector, _dir) = echo_server(limits).await;
        let _silent = TcpStream::connect(addr).await.unwrap();
        let started = Instant::now();
        let echoed = tokio::time::timeout(Duration::from_secs(10), echo_once(addr, &connector)).await.unwrap();
        assert_eq!(echoed, b"hello");
        assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    }

    #[tokio::test]
    async fn handshakes_are_bounded_in_time_and_number() {
        let limits = HandshakeLimits { timeout: Duration::from_millis(300), max_in_flight: 2 };
        let (addr, connector, _dir) = echo_server(limits).await;
        let mut silent = Vec::new();
        for _ in 0..2 {
            silent.push(TcpStream::connect(addr).await.unwrap());
        }
        // Both slots are taken by silent clients: the third waits for their timeout...
        let started = Instant::now();
        let echoed = tokio::time::timeout(Duration::from_secs(10), echo_once(addr, &connector)).await.unwrap();
        assert_eq!(echoed, b"hello");
        assert!(started.elapsed() >= Duration::from_millis(250), "took {:?}", started.elapsed());
        // ...and the silent ones were dropped by then.
        for mut stream in silent {
            let mut buf = [0u8; 1];
            let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await.unwrap();
            assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        }
    }

    #[test]
    fn files_that_are_not_pem_or_do_not_match_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key, _) = self_signed(dir.path());
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a certificate\n").unwrap();
        let missing = dir.path().join("missing.pem");
        let other = dir.path().join("other");
        std::fs::create_dir(&other).unwrap();
        let (_, other_key, _) = self_signed(&other);

        let message = |cert: &Path, key: &Path| format!("{:#}", load_config(cert, key).err().unwrap());
        let m = message(&missing, &key);
        assert!(m.contains("cannot read the TLS certificate file") && m.contains("missing.pem"), "{m}");
        let m = message(&garbage, &key);
        assert!(m.contains("holds no certificate") && m.contains("garbage.pem"), "{m}");
        let m = message(&cert, &garbage);
        assert!(m.contains("holds no private key") && m.contains("garbage.pem"), "{m}");
        let m = message(&cert, &cert);
        assert!(m.contains("holds no private key") && m.contains("cert.pem"), "{m}");
        let m = message(&cert, &other_key);
        assert!(m.contains("cannot use the TLS key") && m.contains("other/key.pem"), "{m}");
        assert!(load_config(&cert, &key).is_ok());
    }
}
