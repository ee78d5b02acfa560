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
    check_key(state.api_key.as_deref(), headers, peer)?;
    state.write_rate.take(peer.ip())
}

/// Refuses (401) a write without the configured key, or, with none configured, from
/// another machine.
fn check_key(api_key: Option<&str>, headers: &HeaderMap, peer: SocketAddr) -> Result<(), ApiError> {
    let Some(expected) = api_key else {
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
    use super::*;

    fn bearer(key: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, format!("Bearer {key}").parse().unwrap());
        headers
    }

    #[test]
    fn without_a_key_only_loopback_clients_may_write() {
        let none = HeaderMap::new();
        for local in ["127.0.0.1:5000", "127.0.9.2:5000", "[::1]:5000"] {
            assert!(check_key(None, &none, local.parse().unwrap()).is_ok(), "{local}");
        }
        for remote in ["10.0.0.7:5000", "192.168.1.2:5000", "[2001:db8::1]:5000"] {
            let refused = check_key(None, &bearer("anything"), remote.parse().unwrap());
            assert!(refused.is_err(), "{remote}");
        }
    }

    #[test]
    fn with_a_key_every_client_needs_it_loopback_included() {
        let local: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let remote: SocketAddr = "10.0.0.7:5000".parse().unwrap();
        assert!(check_key(Some("k3y"), &HeaderMap::new(), local).is_err());
        assert!(check_key(Some("k3y"), &bearer("nope"), remote).is_err());
        assert!(check_key(Some("k3y"), &bearer("k3y"), remote).is_ok());
    }

    #[test]
    fn each_address_gets_its_own_bucket_of_writes() {
        let rate = WriteRate::new(0.001, 2);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        assert!(rate.take(a).is_ok() && rate.take(a).is_ok());
        assert!(rate.take(a).is_err());
        assert!(rate.take(b).is_ok());
        let unlimited = WriteRate::new(0.0, 1);
        assert!((0..1000).all(|_| unlimited.take(a).is_ok()), "a rate of 0 is unlimited");
    }

    #[test]
    fn secrets_compare_by_content() {
        assert!(same_secret(b"k3y", b"k3y"));
        assert!(!same_secret(b"k3y", b"k3z"));
        assert!(!same_secret(b"k3y", b"k3y!"));
        assert!(!same_secret(b"", b"k"));
    }
}
