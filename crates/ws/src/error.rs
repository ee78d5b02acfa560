//! What can go wrong on a WebSocket, and the one mapping from each failure to the close
//! code that reports it to the peer ([`Error::close_code`]).

use std::{borrow::Cow, net::SocketAddr};

/// The longest reason a close frame can carry: its payload is at most 125 bytes, two of
/// which are the code.
pub const MAX_CLOSE_REASON: usize = 123;

/// A WebSocket failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The peer broke RFC 6455 (unmasked client frame, reserved bits or opcode,
    /// fragmented or oversized control frame, bad close frame...).
    #[error("WebSocket protocol violation: {0}")]
    Protocol(Cow<'static, str>),
    /// A text message or a close reason is not valid UTF-8.
    #[error("invalid UTF-8 in {0}")]
    InvalidUtf8(&'static str),
    /// A frame, or a message put together from fragments, is over the limit.
    #[error("message of {size} bytes is over the limit of {limit} bytes")]
    TooBig {
        /// The frame's or message's size in bytes, as far as it is known.
        size: usize,
        /// The largest accepted.
        limit: usize,
    },
    /// The peer closed the TCP connection without a closing handshake.
    #[error("the peer closed the connection without a closing handshake")]
    Reset,
    /// Reading or writing the connection failed.
    #[error("WebSocket I/O: {0}")]
    Io(#[from] std::io::Error),
    /// A message was sent after the close frame.
    #[error("cannot send on a WebSocket after its close frame")]
    SendAfterClose,
    /// A client could not reach the server.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// Where it tried.
        addr: SocketAddr,
        /// Why it failed.
        source: std::io::Error,
    },
    /// A client's URL cannot be used.
    #[error("invalid WebSocket URL {url}: {reason}")]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The HTTP upgrade failed (refused by the server, or an unreadable response).
    #[error("WebSocket handshake failed: {0}")]
    Handshake(String),
}

impl Error {
    pub(crate) fn protocol(description: impl Into<Cow<'static, str>>) -> Self {
        Self::Protocol(description.into())
    }

    /// The close code that reports this error to the peer: 1002 for a protocol
    /// violation, 1007 for invalid UTF-8, 1009 for a message too big; `None` when the
    /// connection is gone or closing and no close frame can be sent.
    pub fn close_code(&self) -> Option<u16> {
        match self {
            Self::Protocol(_) => Some(1002),
            Self::InvalidUtf8(_) => Some(1007),
            Self::TooBig { .. } => Some(1009),
            Self::Reset
            | Self::Io(_)
            | Self::SendAfterClose
            | Self::Connect { .. }
            | Self::InvalidUrl { .. }
            | Self::Handshake(_) => None,
        }
    }

    /// This error's description, cut to fit a close frame's reason.
    pub fn close_reason(&self) -> String {
        let mut reason = self.to_string();
        let fits = fit_close_reason(&reason).len();
        reason.truncate(fits);
        reason
    }
}

/// The longest prefix of `reason` that fits a close frame, cut at a character boundary.
pub(crate) fn fit_close_reason(reason: &str) -> &str {
    if reason.len() <= MAX_CLOSE_REASON {
        return reason;
    }
    let mut end = MAX_CLOSE_REASON;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_framing_error_has_its_close_code() {
        assert_eq!(Error::protocol("x").close_code(), Some(1002));
        assert_eq!(Error::InvalidUtf8("a text message").close_code(), Some(1007));
        assert_eq!(Error::TooBig { size: 2, limit: 1 }.close_code(), Some(1009));
        assert_eq!(Error::Reset.close_code(), None);
        assert_eq!(Error::SendAfterClose.close_code(), None);
    }

    #[test]
    fn close_reasons_fit_a_close_frame() {
        let error = Error::protocol("é".repeat(100));
        let reason = error.close_reason();
        assert!(reason.len() <= MAX_CLOSE_REASON && reason.len() >= MAX_CLOSE_REASON - 1, "{}", reason.len());
        assert!(reason.starts_with("WebSocket protocol violation: é"));
        assert_eq!(Error::Reset.close_reason(), Error::Reset.to_string());
    }
}
