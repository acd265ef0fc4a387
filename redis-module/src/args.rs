//! Reading a command's arguments (numbers, the decision time) and the errors a call that cannot
//! be read gets, plus replicating a call with the time it was decided at.

use std::time::{SystemTime, UNIX_EPOCH};

use sluice_server::core::{CodecError, Micros};

use crate::redis::{Args, Context};

/// Why a call was refused before anything was decided. The reply's first word is Redis's error
/// code.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// Too few (or too many) arguments.
    #[error("ERR wrong number of arguments for a SLUICE command")]
    Arity,
    /// An argument that must be a number is not.
    #[error("ERR SLUICE: {0} is not a valid number")]
    Number(&'static str),
    /// An encoded argument could not be read.
    #[error("ERR SLUICE: malformed argument: {0}")]
    Codec(CodecError),
    /// The arguments do not fit together.
    #[error("ERR SLUICE: {0}")]
    Invalid(&'static str),
    /// A key holds a value that is not a Sluice ledger.
    #[error("WRONGTYPE SLUICE: a key holds a value that is not a Sluice ledger")]
    WrongType,
    /// A call from the primary or the AOF without its decision time.
    #[error("ERR SLUICE: a replicated call must carry its time")]
    NoTime,
}

/// A decimal `u64`.
pub fn parse_u64(bytes: &[u8]) -> Option<u64> {
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

/// A decision time: µs since the Unix epoch, or `-1` for Redis's clock (`Some(None)`).
pub fn parse_now(bytes: &[u8]) -> Option<Option<Micros>> {
    if bytes == b"-1" {
        Some(None)
    } else {
        parse_u64(bytes).map(Some)
    }
}

/// Redis's clock, µs since the Unix epoch.
pub fn wall_micros() -> Micros {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as Micros)
}

/// The time a call is decided at: the one it carries, else Redis's clock (a replicated call must
/// carry one: its primary's).
pub fn decision_time(cx: &Context<'_>, now: Option<Micros>) -> Result<Micros, CallError> {
    match now {
        Some(now) => Ok(now),
        None if cx.is_replicated() => Err(CallError::NoTime),
        None => Ok(wall_micros()),
    }
}

/// Replicates the running call as `name` with argument `now_at` replaced by the time it used.
pub fn replicate_at(cx: &Context<'_>, args: &Args<'_>, name: &str, now_at: usize, now: Micros) {
    let time = now.to_string();
    let api = cx.api();
    let all: Vec<&[u8]> = (0..args.len())
        .map(|i| {
            if i == now_at {
                time.as_bytes()
            } else {
                args.bytes(api, i).unwrap_or_default()
            }
        })
        .collect();
    cx.replicate(name, &all);
}
