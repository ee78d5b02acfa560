//! Bavard, the chat server, as a library: `main.rs` parses the command line and calls
//! [`app::start`]; the integration tests call it too, on port 0.

mod api;
pub mod app;
pub mod chat;
pub mod config;
mod hub;
mod session;
mod store;
mod web;
pub mod ws;
