//! The client's error type. A denial (the slot is further away than `max_wait`) is an error here
//! because the caller asked for a permit and did not get one; it carries `retry_after`.

use std::time::Duration;

use sluice::v1::Reason;
use tonic::Code;

/// Why an operation did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No slot within `max_wait`. Retry after `retry_after`, or wait longer.
    #[error("denied by {limit} ({reason:?}); retry after {retry_after:?}")]
    Denied {
        /// The earliest time from now at which the same request could be granted (a hint).
        retry_after: Duration,
        /// `Cooldown` (a provider asked for a pause) or `Limit`.
        reason: Reason,
        /// The limit that decided, e.g. `tokens/1m`, or `cooldown`.
        limit: String,
    },
    /// The cost is above a limit's amount or burst: it can never be granted.
    #[error("cost can never fit: {0}")]
    CannotFit(String),
    /// The service is not configured on the server.
    #[error("unknown service: {0}")]
    UnknownService(String),
    /// The server refused the request as malformed.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Any other gRPC error (e.g. UNAVAILABLE when the backend is down).
    #[error("gRPC error: {0}")]
    Status(tonic::Status),
    /// The connection could not be established.
    #[error("transport error: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The server URL is malformed.
    #[error("invalid server URL {0}")]
    InvalidUrl(String),
    /// The server answered something this client does not understand.
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl Error {
    /// The suggested wait before retrying, for denials.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Denied { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Self {
        let message = status.message().to_string();
        match status.code() {
            Code::FailedPrecondition => Error::CannotFit(message),
            Code::NotFound => Error::UnknownService(message),
            Code::InvalidArgument => Error::InvalidArgument(message),
            _ => Error::Status(status),
        }
    }
}
