//! Identities, token verification and room permissions: who a connection or a REST
//! call is, and what the rules of a room let them do. Nothing here does I/O but reading
//! the key file at start.

pub mod identity;
pub mod rules;

pub use identity::{Actor, Identity, Standing, Who};
pub use rules::{Power, RoomRules};
