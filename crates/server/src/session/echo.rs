//! The conformance echo (`--conformance-echo`, `GET /conformance/echo`): every text and
//! binary message comes back unchanged, for the Autobahn test suite. It runs over the
//! same socket as the chat sessions (`bavard_ws::ServerSocket`, the same
//! `--max-frame-bytes`), maps framing errors to close codes the same way
//! ([`End::from_ws_error`]), closes idle connections after the same timeout, and
//! closes with 1001 at shutdown; it joins no room and stores nothing.

use std::time::Duration;

use bavard_ws::Message as WsMessage;
use futures_util::{SinkExt, StreamExt};
use tokio_util::sync::CancellationToken;

use super::{close_socket, End, Socket};

/// Echoes `socket`'s messages until it closes, breaks the framing, stays silent for
/// `idle_timeout`, or the server shuts down.
pub async fn run_echo<S: Socket>(mut socket: S, idle_timeout: Duration, shutdown: CancellationToken) {
    let end = loop {
        let incoming = tokio::select! {
            () = shutdown.cancelled() => break End::Shutdown,
            incoming = tokio::time::timeout(idle_timeout, socket.next()) => incoming,
        };
        let message = match incoming {
            Err(_) => break End::IdleTimeout,
            Ok(None) => break End::Disconnected,
            Ok(Some(Err(error))) => break End::from_ws_error(error),
            Ok(Some(Ok(message))) => message,
        };
        match message {
            WsMessage::Text(_) | WsMessage::Binary(_) => {
                if socket.send(message).await.is_err() {
                    break End::Disconnected;
                }
            }
            WsMessage::Close(_) => break End::ClientClosed,
            // The socket answers pings itself.
            WsMessage::Ping(_) | WsMessage::Pong(_) => {}
        }
    };
    tracing::debug!(?end, "conformance echo ended");
    let linger = if matches!(end, End::Shutdown) { Duration::from_secs(1) } else { Duration::from_secs(5) };
    close_socket(&mut socket, &end, linger).await;
}
