//! The benchmark scenarios, one module each (numbered as in the benchmark plan).

pub mod durable;
pub mod flood;
pub mod history;
pub mod hot_room;
pub mod idle;
pub mod join_storm;
pub mod many_rooms;
pub mod reconnect;
pub mod rest_publish;
pub mod slow_consumer;
pub mod soak;
