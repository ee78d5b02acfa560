//! Bavard, the chat server, as a library: `main.rs` parses the command line and calls
//! [`app::start`]; the integration tests call it too, on port 0.

pub mod api;
pub mod app;
pub mod chat;
pub mod config;
pub mod hub;
pub mod session;
pub mod store;
pub mod web;
