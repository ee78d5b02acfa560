//! The benchmark scenarios, one module each (numbered as in the benchmark plan).

pub mod hot_room;
