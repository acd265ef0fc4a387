//! Durations between `std` and protobuf: the RPCs carry `google.protobuf.Duration`s, the API
//! takes and returns `std::time::Duration`s. Out-of-range values saturate (a negative one is zero).

use std::time::Duration;

/// A `std` duration as protobuf's (seconds beyond `i64` saturate).
pub(crate) fn to_proto(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: d.subsec_nanos() as i32,
    }
}

/// A protobuf duration as `std`'s; none, or a negative one, is zero.
pub(crate) fn from_proto(d: Option<prost_types::Duration>) -> Duration {
    d.map_or(Duration::ZERO, |d| {
        Duration::new(
            u64::try_from(d.seconds).unwrap_or(0),
            u32::try_from(d.nanos).unwrap_or(0),
        )
    })
}
