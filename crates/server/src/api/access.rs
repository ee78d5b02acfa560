//! Who may write through the REST API, and how fast: a caller presenting the
//! configured key as `Authorization: Bearer KEY`, or, when no key is configured, a
//! client on this machine (loopback); each client address gets a token bucket of
//! writes (`--api-rate-per-second`, `--api-rate-burst`). Reads are open in this version.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::Mutex,
};

use axum::{
    extract::connect_info::Connected,
    http::{header, HeaderMap},
    serve::IncomingStream,
};
use bavard_protocol::ErrorCode;
use tokio::net::TcpStream;

use super::{error::ApiError, AppState};
use crate::{net::NoDelayListener, session::RateLimiter, tls::TlsListener};

/// Client addresses tracked at most; past it, the buckets of addresses that have not
/// written for a while are dropped (a dropped address starts again with a full burst).
const MAX_TRACKED: usize = 10_000;

/// Per-address token buckets of REST writes.
pub struct WriteRate {
    per_second: f64,
    burst: u32,
    buckets: Mutex<HashMap<IpAddr, RateLimiter>>,
}

impl WriteRate {
    /// `per_second` writes per address on average (0: unlimited), `burst` above it.
    pub fn new(per_second: f64, burst: u32) -> Self {
        Self { per_second, burst, buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes a write from `ip`'s bucket, or refuses (429).
    fn take(&self, ip: IpAddr) -> Result<(), ApiError> {
        if self.per_second <= 0.0 {
            return Ok(());
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_TRACKED && !buckets.contains_key(&ip) {
            buckets.retain(|_, bucket| !bucket.is_full());
        }
        let bucket = buckets.entry(ip).or_insert_with(|| RateLimiter::new(self.per_second, self.burst));
        if bucket.try_take() {
            return Ok(());
        }
        Err(ApiError::new(
            ErrorCode::RateLimited,
            format!(
                "too many writes from {ip}: at most {} per second (bursts of {}); slow down",
                self.per_second, self.burst
            ),
        ))
    }
}

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

/// Refuses a write unless the caller may write (401) and has not written too fast
/// (429); see the module docs.
pub fn check_write(state: &AppState, headers: &HeaderMap, Peer(peer): Peer) -> Result<(), ApiError> {
    check_key(state, headers, peer)?;
    state.write_rate.take(peer.ip())
}

fn check_key(state: &AppState, headers: &HeaderMap, peer: SocketAddr) -> Result<(), ApiError> {
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
