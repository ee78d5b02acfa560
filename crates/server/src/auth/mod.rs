//! Identities, token verification and room permissions: who a connection or a REST
//! call is, and what the rules of a room let them do. Nothing here does I/O but reading
//! the key file at start.

pub mod identity;
pub mod jwt;
pub mod rules;

pub use identity::{Actor, Identity, Standing, Who};
pub use rules::{Power, RoomRules};

/// Seconds since the Unix epoch (what tokens' `exp` counts in).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
