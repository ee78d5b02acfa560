//! Who may write through the REST API: a caller presenting the configured key as
//! `Authorization: Bearer KEY`, or, when no key is configured, a client on this
//! machine (loopback). Reads are open in this version.

use std::net::SocketAddr;

use axum::{
    extract::connect_info::Connected,
    http::{header, HeaderMap},
    serve::IncomingStream,
};
use bavard_protocol::ErrorCode;
use tokio::net::TcpStream;

use super::{error::ApiError, AppState};
use crate::{net::NoDelayListener, tls::TlsListener};

/// The address of the client on the other end of a request, over any of the server's
/// listeners (plain TCP or TLS): axum's `ConnectInfo` for it.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

impl Connected<IncomingStream<'_, NoDelayListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, NoDelayListener>) -> Self {
        Self(*stream.remote_addr())
    }
}

impl Connected<IncomingStream<'_, TlsListener<TcpStream>>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TlsListener<TcpStream>>) -> Self {
        Self(*stream.remote_addr())
    }
}

/// Refuses a write (401) unless the caller may write; see the module docs.
pub fn check_write(state: &AppState, headers: &HeaderMap, Peer(peer): Peer) -> Result<(), ApiError> {
    let Some(expected) = state.api_key.as_deref() else {
        if peer.ip().is_loopback() {
            return Ok(());
        }
        return Err(ApiError::new(
            ErrorCode::Unauthorized,
            "REST writes from other machines need an API key: start the server with --api-key and send it as Authorization: Bearer KEY",
        ));
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
        Some(key) if same_secret(key.as_bytes(), expected.as_bytes()) => Ok(()),
        Some(_) => Err(ApiError::new(ErrorCode::Unauthorized, "wrong API key")),
        None => {
            Err(ApiError::new(ErrorCode::Unauthorized, "this call needs the API key: send Authorization: Bearer KEY"))
        }
    }
}

/// Compares two secrets in time that depends on their lengths only.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |differ, (x, y)| differ | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::same_secret;

    #[test]
    fn secrets_compare_by_content() {
        assert!(same_secret(b"k3y", b"k3y"));
        assert!(!same_secret(b"k3y", b"k3z"));
        assert!(!same_secret(b"k3y", b"k3y!"));
        assert!(!same_secret(b"", b"k"));
    }
}
