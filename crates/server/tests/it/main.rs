//! Integration tests: the real server on port 0 with a real SQLite file, driven over
//! real sockets. One binary so the server and test helpers compile once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod abuse;
mod auth;
mod bad_input;
mod chat;
mod cluster;
mod conformance;
mod cors;
mod faults;
mod guarantees;
mod helpers;
mod http_edges;
mod json;
mod json_errors;
mod jwt;
mod lifecycle;
mod limits;
mod members;
mod metrics;
mod moderation;
mod permissions;
mod plain;
mod resilient;
mod rest;
mod services;
mod terminal_client;
mod tls;
