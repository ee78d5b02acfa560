//! The messages a WebSocket carries, whole (fragments are assembled by the decoder).

use bytes::Bytes;
use bytestring::ByteString;

/// One WebSocket message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A text message: UTF-8 checked once, shared without a copy when cloned.
    Text(ByteString),
    /// A binary message.
    Binary(Bytes),
    /// A ping (at most 125 bytes). The server socket answers it by itself.
    Ping(Bytes),
    /// A pong (at most 125 bytes).
    Pong(Bytes),
    /// A close frame, with its code and reason when it had them.
    Close(Option<CloseFrame>),
}

/// The code and reason of a close frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseFrame {
    /// The close code (1000 normal, 1002 protocol error, 4000-4999 application...).
    pub code: u16,
    /// Why, for people (at most 123 bytes on the wire).
    pub reason: String,
}

impl CloseFrame {
    /// A close frame with `code` and `reason`.
    pub fn new(code: u16, reason: impl Into<String>) -> Self {
        Self { code, reason: reason.into() }
    }
}
