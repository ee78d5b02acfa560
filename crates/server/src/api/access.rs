//! How much each client address may do: REST writes need a caller ([`super::auth`])
//! and draw on a token bucket per address (`--api-rate-per-second`,
//! `--api-rate-burst`); WebSockets count against `--max-connections-per-ip`.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
};

use axum::http::HeaderMap;
use bavard_protocol::ErrorCode;

use super::{auth::Caller, error::ApiError, AppState};
use crate::rate::RateLimiter;

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
/// listeners (plain TCP or TLS): axum's `ConnectInfo` for it, which `net.rs` puts in
/// every request.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// Refuses a write unless the caller may write (401) and has not written too fast
/// from its address (429); returns who writes.
pub fn check_write(state: &AppState, headers: &HeaderMap, Peer(peer): Peer) -> Result<Caller, ApiError> {
    let caller = state.auth.rest(headers, peer)?;
    caller.actor()?;
    state.write_rate.take(peer.ip())?;
    Ok(caller)
}

/// Open WebSockets per client address (`--max-connections-per-ip`).
pub struct IpConnections {
    max: usize,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One open WebSocket of an address; dropping it (when the session ends) frees it.
pub struct IpSlot {
    ip: IpAddr,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl IpConnections {
    /// At most `max` connections per address (0: no limit).
    pub fn new(max: usize) -> Self {
        Self { max, open: Arc::default() }
    }

    /// A slot for one more connection from `ip`, or None when it has `max` already.
    pub fn open(&self, ip: IpAddr) -> Option<Option<IpSlot>> {
        if self.max == 0 {
            return Some(None);
        }
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let count = open.entry(ip).or_default();
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(Some(IpSlot { ip, open: Arc::clone(&self.open) }))
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn an_address_holds_at_most_its_connections_and_gets_them_back() {
        let limit = IpConnections::new(2);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let first = limit.open(a).unwrap();
        let _second = limit.open(a).unwrap();
        assert!(limit.open(a).is_none());
        assert!(limit.open(b).is_some(), "another address has its own");
        drop(first);
        assert!(limit.open(a).is_some());
        assert!(limit.open.lock().unwrap().len() <= 2);
        assert!(IpConnections::new(0).open(a).unwrap().is_none(), "0 is no limit, and nothing is tracked");
    }
}
