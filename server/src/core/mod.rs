//! The decision core: pure decision logic with no gRPC, no I/O and no clock of its own.
//!
//! Every function here takes the current time as an argument (`Micros` since the Unix epoch), so
//! tests drive it with explicit times and backends supply their own clock. [`Ledger`] is the state
//! of one service; [`SlidingWindow`] and [`TokenBucket`] hold the arithmetic of the two algorithms.

pub mod adaptive;
mod answer;
mod bucket;
pub mod codec;
pub mod duration;
mod family;
mod lease;
mod ledger;
mod names;
mod priority;
mod report;
mod spec;
mod unpredictable;
mod window;

pub use answer::{
    Cooldown, CooldownCause, Decider, Decision, Grant, LimitSnapshot, Observation, ReportOutcome,
    ServiceSnapshot,
};
pub use bucket::{BucketShape, TokenBucket};
mod remote;
pub use codec::{from_bytes, to_bytes, CodecError, Decode, Encode, Reader, FORMAT_VERSION};
pub use duration::{format_duration, parse_duration, DurationError};
pub use family::{acquire_in_family, Member};
pub use lease::LeaseId;
pub use ledger::{
    AcquireError, AdminOp, BucketStates, Ledger, UsageUpdate, MAX_DEFERRED, MAX_LEASES,
};
pub use names::{ancestors, validate_service_name, BrokenLineage, MAX_ANCESTORS};
pub use priority::{Class, Priorities, MIN_SHARE};
pub use remote::{AcquireAnswer, AcquireRequest, AcquireRequests};
pub use report::{
    AdoptOrder, CooldownOrder, NotAdopted, OverloadOrder, RemainingReading, ReportCall,
};
mod scope;
pub use scope::Scope;
pub use spec::{
    Algorithm, Cost, Dimension, LimitSpec, Mode, NeverFits, ServiceSpec, MAX_AMOUNT, MAX_TOTAL,
    MAX_WAIT_LIMIT,
};
pub use unpredictable::Unpredictable;
pub use window::SlidingWindow;

/// Microseconds: a point in time since the Unix epoch, or a duration.
pub type Micros = u64;

/// Microseconds per second.
pub const MICROS_PER_SEC: Micros = 1_000_000;

#[cfg(test)]
mod tests;
