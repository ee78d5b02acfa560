//! Bavard, the chat server, as a library: `main.rs` parses the command line and calls
//! [`app::start`]; the integration tests call it too, on port 0. The terminal client
//! (`bavard chat`, `chat.rs`) belongs to the binary: it talks to the server through the
//! client SDK like any other client.

mod api;
pub mod app;
mod auth;
mod broker;
pub mod config;
mod hub;
mod metrics;
mod net;
mod session;
mod store;
mod tls;
mod web;
