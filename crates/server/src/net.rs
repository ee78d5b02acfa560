//! The server's connections, from TCP accept to the HTTP router: `TCP_NODELAY` on every
//! socket (small frames must leave at once; Nagle's algorithm would hold them for the
//! peer's ACK), the TLS handshake when TLS is on (`tls.rs` loads its configuration),
//! HTTP/1.1 with upgrades (hyper), the client's address for `ConnectInfo<Peer>`, and
//! graceful shutdown.
//!
//! It also owns the bounds against clients that open a connection and never finish a
//! request (slow-loris, half-open connections):
//!
//! - **Time.** From accept, a connection has [`ConnectionLimits::head_timeout`] to
//!   finish its TLS handshake (if any) and send a complete first request head; then it
//!   is closed. Every later request head on a keep-alive connection has the same time,
//!   counted from the end of the previous response, so an idle keep-alive connection is
//!   closed after that time too (hyper's `header_read_timeout`). Bodies are bounded
//!   by the router (`api/body_timeout.rs`, `--request-body-timeout-secs`), upgraded
//!   WebSockets not at all here (the sessions have their own idle timeout).
//! - **Number.** At most [`ConnectionLimits::max_unfinished`] connections may be
//!   waiting for their first request head at once. A new connection past that closes
//!   the *oldest* unfinished one: a legitimate client sends its head within a round
//!   trip of connecting, so it is never the oldest for long, while a crowd of silent or
//!   drip-feeding sockets can hold the server for no longer than it takes newcomers to
//!   push them out.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU8, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use axum::{extract::ConnectInfo, Router};
use hyper::{body::Incoming, server::conn::http1, service::Service as _, Request};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpStream},
    time::Instant,
};
use tokio_rustls::TlsAcceptor;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    api::Peer,
    metrics::{Limit, Metrics},
};

/// The bounds put on connections that have not sent a complete request head yet.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Time from accept to a complete first request head (TLS handshake included), and
    /// for each later head on a keep-alive connection.
    pub head_timeout: Duration,
    /// Connections waiting for their first complete request head at once; past it the
    /// oldest is closed.
    pub max_unfinished: usize,
}

/// Serves `router` on `listener` (over TLS when `tls` is given) until `shutdown`
/// fires; then stops accepting, lets each connection finish the request it is
/// serving, and returns once every connection is closed. Upgraded connections (the
/// WebSockets) are not waited for: they belong to the session tasks.
pub async fn serve(
    mut listener: TcpListener,
    tls: Option<TlsAcceptor>,
    router: Router,
    limits: ConnectionLimits,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let unfinished = Arc::new(Unfinished::new(limits.max_unfinished));
    let connections = TaskTracker::new();
    loop {
        let (tcp, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            // axum's own accept for a TcpListener: it retries, and backs off on errors
            // such as running out of file descriptors.
            accepted = axum::serve::Listener::accept(&mut listener) => accepted,
        };
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!(error = %e, "cannot set TCP_NODELAY");
        }
        let ticket = unfinished.admit();
        let connection = Connection {
            peer,
            router: router.clone(),
            limits,
            ticket,
            metrics: Arc::clone(&metrics),
            shutdown: shutdown.clone(),
        };
        connections.spawn(connection.run(tcp, tls.clone()));
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

/// One accepted connection and what serving it needs.
struct Connection {
    peer: SocketAddr,
    router: Router,
    limits: ConnectionLimits,
    ticket: TicketHandle,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
}

impl Connection {
    async fn run(self, tcp: TcpStream, tls: Option<TlsAcceptor>) {
        let deadline = Instant::now() + self.limits.head_timeout;
        let Some(acceptor) = tls else { return self.serve_http(tcp, deadline).await };
        let handshake = tokio::select! {
            handshake = tokio::time::timeout_at(deadline, acceptor.accept(tcp)) => handshake,
            () = self.ticket.evicted.cancelled() => {
                self.metrics.limit_refused(Limit::UnfinishedRequests);
                return;
            }
            () = self.shutdown.cancelled() => return,
        };
        match handshake {
            Ok(Ok(tls)) => self.serve_http(tls, deadline).await,
            Ok(Err(e)) => tracing::debug!(peer = %self.peer, error = %e, "TLS handshake failed"),
            Err(_) => {
                self.metrics.limit_refused(Limit::RequestHead);
                tracing::debug!(peer = %self.peer, "TLS handshake not done within {:?}", self.limits.head_timeout);
            }
        }
    }

    async fn serve_http<IO>(self, io: IO, deadline: Instant)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Self { peer, router, limits, ticket, metrics, shutdown } = self;
        let router = TowerToHyperService::new(router);
        let started = Arc::clone(&ticket);
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            // hyper calls the service once a request head is complete.
            started.finish();
            request.extensions_mut().insert(ConnectInfo(Peer(peer)));
            router.call(request)
        });
        let mut builder = http1::Builder::new();
        builder.timer(TokioTimer::new()).header_read_timeout(limits.head_timeout);
        let connection = builder.serve_connection(TokioIo::new(io), service).with_upgrades();
        tokio::pin!(connection);
        // Fires once, at the deadline or when a newcomer evicts this connection: it ends
        // the connection unless its first request head came in time.
        let head_watch = async {
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => {}
                () = ticket.evicted.cancelled() => {}
            }
        };
        tokio::pin!(head_watch);
        let (mut watching, mut draining) = (true, false);
        loop {
            tokio::select! {
                // The deadline first: when hyper's own header timer fires in the same
                // tick, the close is still counted as this bound's.
                biased;
                () = &mut head_watch, if watching => {
                    watching = false;
                    if !ticket.give_up() {
                        continue;
                    }
                    if ticket.evicted.is_cancelled() {
                        metrics.limit_refused(Limit::UnfinishedRequests);
                        tracing::debug!(%peer, "closed: the oldest of too many connections without a complete request");
                    } else {
                        metrics.limit_refused(Limit::RequestHead);
                        tracing::debug!(%peer, "closed: no complete request head within {:?}", limits.head_timeout);
                    }
                    return;
                }
                served = connection.as_mut() => {
                    if let Err(e) = served {
                        tracing::debug!(%peer, error = %e, "HTTP connection ended");
                    }
                    return;
                }
                () = shutdown.cancelled(), if !draining => {
                    draining = true;
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// Where a connection stands with its first request head.
const WAITING: u8 = 0;
const STARTED: u8 = 1;
const GIVEN_UP: u8 = 2;

/// The connections still waiting for their first request head, oldest first.
struct Unfinished {
    max: usize,
    inner: Mutex<UnfinishedInner>,
}

#[derive(Default)]
struct UnfinishedInner {
    next_id: u64,
    waiting: BTreeMap<u64, Arc<Ticket>>,
}

/// A connection's place among the unfinished ones, until its first request head comes
/// ([`Ticket::finish`]) or it ends (dropping the connection's handle, [`TicketHandle`]).
struct Ticket {
    id: u64,
    state: AtomicU8,
    evicted: CancellationToken,
    registry: Arc<Unfinished>,
}

impl Ticket {
    /// A request head came: the connection is no longer unfinished.
    fn finish(&self) {
        if self.state.load(Ordering::Relaxed) == WAITING
            && self.state.compare_exchange(WAITING, STARTED, Ordering::AcqRel, Ordering::Relaxed).is_ok()
        {
            self.registry.remove(self.id);
        }
    }

    /// Whether the connection is to be closed: true unless its first head came first.
    fn give_up(&self) -> bool {
        match self.state.compare_exchange(WAITING, GIVEN_UP, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => true,
            Err(state) => state == GIVEN_UP,
        }
    }
}

/// The connection task's hold on its [`Ticket`]: dropping it gives the place back.
struct TicketHandle(Arc<Ticket>);

impl Drop for TicketHandle {
    fn drop(&mut self) {
        self.0.registry.remove(self.0.id);
    }
}

impl std::ops::Deref for TicketHandle {
    type Target = Arc<Ticket>;

    fn deref(&self) -> &Arc<Ticket> {
        &self.0
    }
}

impl Unfinished {
    fn new(max: usize) -> Self {
        Self { max: max.max(1), inner: Mutex::new(UnfinishedInner::default()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, UnfinishedInner> {
        // Nothing panics while holding it; a poisoned map is still a valid map.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn remove(&self, id: u64) {
        self.lock().waiting.remove(&id);
    }

    /// A place for a new connection, closing the oldest unfinished ones past the bound.
    fn admit(self: &Arc<Self>) -> TicketHandle {
        let mut inner = self.lock();
        while inner.waiting.len() >= self.max {
            let Some((_, oldest)) = inner.waiting.pop_first() else { break };
            // One whose head came meanwhile (it is removing itself) is left alone.
            if oldest.give_up() {
                oldest.evicted.cancel();
            }
        }
        let id = inner.next_id;
        inner.next_id += 1;
        let ticket = Arc::new(Ticket {
            id,
            state: AtomicU8::new(WAITING),
            evicted: CancellationToken::new(),
            registry: Arc::clone(self),
        });
        inner.waiting.insert(id, Arc::clone(&ticket));
        TicketHandle(ticket)
    }
}
