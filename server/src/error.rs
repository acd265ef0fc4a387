//! The one error type of the service layer. Each variant maps to one gRPC status code (the mapping
//! lives in [`crate::grpc`]). Being over a limit is not an error: it is a denial.

use crate::{
    backend::BackendError,
    core::{AcquireError, NeverFits},
};

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Malformed input: names, sizes, durations, numbers. → `INVALID_ARGUMENT`
    #[error("{0}")]
    InvalidArgument(String),
    /// The service is not configured. → `NOT_FOUND`
    #[error("unknown service {0:?}")]
    UnknownService(String),
    /// The cost can never be granted. → `FAILED_PRECONDITION`
    #[error(transparent)]
    NeverFits(#[from] NeverFits),
    /// The backend failed and the policy is `fail_closed`. → `UNAVAILABLE`
    #[error("{0}")]
    Unavailable(String),
    /// Load shedding: the request was not considered. → `RESOURCE_EXHAUSTED`
    #[error("{0}")]
    Overloaded(String),
    /// A reload replaced the service's configuration during the call. The limiter asks again
    /// once; if that races a reload too → `UNAVAILABLE`
    #[error("{0}")]
    Reconfigured(String),
}

impl From<BackendError> for Error {
    fn from(e: BackendError) -> Self {
        match e {
            BackendError::Refused(AcquireError::RequestIdReused(_)) => {
                Error::InvalidArgument(e.to_string())
            }
            BackendError::Refused(AcquireError::Full) => Error::Overloaded(e.to_string()),
            BackendError::Refused(AcquireError::TotalTooLarge) => Error::Overloaded(e.to_string()),
            BackendError::Unavailable(_) | BackendError::Failed(_) => {
                Error::Unavailable(e.to_string())
            }
            BackendError::Reconfigured(_) => Error::Reconfigured(e.to_string()),
            BackendError::Unsupported(_) => Error::InvalidArgument(e.to_string()),
        }
    }
}
