//! The server's TCP listener: every accepted connection gets `TCP_NODELAY`, since small
//! frames must leave at once (Nagle's algorithm would hold them for the peer's ACK).
//! TLS (`tls.rs`) is layered on top of it.

use std::{io, net::SocketAddr};

use axum::serve::Listener;
use tokio::net::{TcpListener, TcpStream};

/// See the module docs.
pub struct NoDelayListener(pub TcpListener);

impl Listener for NoDelayListener {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        // axum's own accept for a TcpListener: it retries, and backs off on errors such
        // as running out of file descriptors.
        let (stream, addr) = Listener::accept(&mut self.0).await;
        if let Err(e) = stream.set_nodelay(true) {
            tracing::warn!(error = %e, "cannot set TCP_NODELAY");
        }
        (stream, addr)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}
