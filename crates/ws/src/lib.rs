//! Bavard's WebSocket framing (RFC 6455), on its own so it can be tested, fuzzed and
//! checked for conformance apart from the chat server.
//!
//! - [`Message`], [`CloseFrame`] and [`Error`]: the types every side speaks. Text is a
//!   [`ByteString`](bytestring::ByteString), so one encoded frame is shared by any number
//!   of connections without a copy. [`Error::close_code`] is the one mapping from a
//!   framing error to the close code that reports it.
//! - [`frame`]: the frame-header parser, the frame encoder and the [`Decoder`] that turns
//!   a peer's bytes into messages. Pure functions over byte slices: the fuzz target
//!   (`fuzz/`) drives exactly the code the server runs.
//! - [`ServerSocket`]: the server side of a connection, a `Sink<Message>` and a
//!   `Stream<Item = Result<Message, Error>>` that keeps no heap memory while idle.
//! - [`client`]: a raw client for load generation and tests: hand-written upgrade,
//!   masked frames, server frames parsed in place from the caller's buffer.
//! - [`derive_accept_key`]: the handshake's `Sec-WebSocket-Accept`.
//!
//! Not supported, by design: extensions (no compression is negotiated at upgrade).

pub mod client;
mod error;
pub mod frame;
mod handshake;
mod message;
mod server;

pub use error::Error;
pub use frame::{parse_frame_head, Decoder, FrameHead, Role};
pub use handshake::derive_accept_key;
pub use message::{CloseFrame, Message};
pub use server::ServerSocket;
