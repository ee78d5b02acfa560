//! Error codes and bodies: stable snake_case codes for programs, messages for humans.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A stable error code. New codes may be added; existing ones never change meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ErrorCode {
    /// The frame is not valid JSON, or a field is missing, of the wrong type or out of range.
    BadRequest,
    /// The `op` is not one this server knows.
    UnknownOp,
    /// The thing named does not exist.
    NotFound,
    /// The user may not do this.
    Forbidden,
    /// Too many requests; slow down.
    RateLimited,
    /// The frame or text is larger than the server's limits.
    TooLarge,
    /// The request conflicts with the current state.
    Conflict,
    /// No valid identity was given.
    Unauthorized,
    /// The server failed; the request may be retried.
    Internal,
    /// The server cannot reach its database for now; retry later (for `send`, with
    /// the same `key`): nothing acknowledged is lost.
    Unavailable,
    /// A code added by a newer server; read the message.
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// Every code this version of the protocol defines.
    pub const ALL: [ErrorCode; 10] = [
        Self::BadRequest,
        Self::UnknownOp,
        Self::NotFound,
        Self::Forbidden,
        Self::RateLimited,
        Self::TooLarge,
        Self::Conflict,
        Self::Unauthorized,
        Self::Internal,
        Self::Unavailable,
    ];

    /// The wire spelling of the code.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::UnknownOp => "unknown_op",
            Self::NotFound => "not_found",
            Self::Forbidden => "forbidden",
            Self::RateLimited => "rate_limited",
            Self::TooLarge => "too_large",
            Self::Conflict => "conflict",
            Self::Unauthorized => "unauthorized",
            Self::Internal => "internal",
            Self::Unavailable => "unavailable",
            Self::Unknown => "unknown",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `error` object of a failed reply or an `error` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// What went wrong, for programs.
    pub code: ErrorCode,
    /// What went wrong and what to do, for humans.
    pub message: String,
}

impl ErrorBody {
    /// An error with `code` and a human message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}

impl fmt::Display for ErrorBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ErrorBody {}
