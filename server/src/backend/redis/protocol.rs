//! The protocol between the Redis backend and its scripts, on the Rust side: the arguments
//! acquires and reports are encoded into and what the report and status scripts' replies mean,
//! with every reply offset named here (acquire replies: `answer.rs`; the scripts' side: the header
//! of each `.lua` file; the whole layout: `LAYOUT.md`).

use super::{BackendError, ReportCall};
use crate::core::{
    adaptive, Algorithm, BucketShape, Class, CooldownCause, Cost, Dimension, LeaseId,
    LimitSnapshot, Micros, Observation, ReportOutcome, Scope, ServiceSnapshot, ServiceSpec,
    MAX_LEASES,
};

/// Offsets in `report.lua`'s reply.
mod report {
    pub const COOLDOWN: usize = 0;
    pub const COOLDOWN_SET: usize = 1;
    pub const USAGE_APPLIED: usize = 2;
    pub const LEASE_UNKNOWN: usize = 3;
    pub const OUTSIDE_USAGE: usize = 4;
    pub const RELEASED: usize = 5;
    pub const UPLINKS: usize = 6;
    pub const ADAPTIVE_SCALE: usize = 7;
    pub const ADAPTIVE_LOWERED: usize = 8;
}

/// Offsets in `status.lua`'s reply: the service's fields, then [`PER_LIMIT`] values per limit
/// from [`LIMITS`], then [`DIMENSION_COOLDOWN`] values per token dimension, then the scale, then
/// [`PER_BUDGET`] values per limit (its budget in force before the scale).
mod status {
    pub const NOW: usize = 0;
    pub const COOLDOWN: usize = 1;
    pub const COOLDOWN_STATUS: usize = 2;
    pub const COOLDOWN_SOURCE: usize = 3;
    pub const QUEUED: usize = 4;
    pub const REPORT_STATUS: usize = 5;
    pub const REPORT_AT: usize = 6;
    pub const REPORT_HEADERS: usize = 7;
    /// Leases held (read by tests through `lease_count`).
    pub const HELD: usize = 8;
    pub const LIMITS: usize = 9;
    pub const PER_LIMIT: usize = 4;
    pub const USED: usize = 0;
    pub const RESET: usize = 1;
    pub const AMOUNT: usize = 2;
    pub const REMAINING: usize = 3;
    /// Remaining, status, source of each of the three token dimensions' cooldowns.
    pub const DIMENSION_COOLDOWN: usize = 3;
    /// After the limits: past the three dimension cooldowns.
    pub const ADAPTIVE_SCALE: usize = 3 * DIMENSION_COOLDOWN;
    /// Per limit after the scale: the amount and burst in force before the adaptive scale.
    pub const PER_BUDGET: usize = 2;
    pub const BUDGET_AMOUNT: usize = 0;
    pub const BUDGET_BURST: usize = 1;

    /// Where limit `i`'s values start.
    pub const fn limit(i: usize) -> usize {
        LIMITS + PER_LIMIT * i
    }

    /// Where limit `i`'s budget in force starts, of `limits` limits.
    pub const fn budget(limits: usize, i: usize) -> usize {
        limit(limits) + ADAPTIVE_SCALE + 1 + PER_BUDGET * i
    }

    /// The reply's length for `limits` limits.
    pub const fn len(limits: usize) -> usize {
        budget(limits, limits)
    }
}

/// Numbers the scripts read as doubles are exact below 2^53; a longer wait or a later deadline
/// means the same to them.
const MAX_EXACT: u64 = 1 << 53;

/// Acquires packed as `acquire.lua` and `family.lua` unpack them: first each acquire's eight
/// little-endian doubles (their `NUMBERS` format: cost in each dimension, max_wait µs, priority
/// rank, max overtakes, deadline in Redis µs, -1 for none), then each one's request id as a
/// little-endian u16 length and its bytes. The ids come together so that a script reads them all
/// in one unpack and looks them all up in one command.
#[derive(Default)]
pub(super) struct PackedRequests {
    numbers: Vec<u8>,
    ids: Vec<u8>,
}

impl PackedRequests {
    /// Room for `n` acquires.
    pub(super) fn with_capacity(n: usize) -> Self {
        Self {
            numbers: Vec::with_capacity(n * 64),
            ids: Vec::with_capacity(n * 40),
        }
    }

    /// Appends one acquire.
    pub(super) fn push(
        &mut self,
        cost: Cost,
        max_wait: Micros,
        class: Class,
        deadline: Option<u64>,
        request_id: &str,
    ) {
        pack_numbers(&mut self.numbers, cost, max_wait, class, deadline);
        // Request ids are at most MAX_REQUEST_ID (256) bytes, checked up front.
        let id = &request_id.as_bytes()[..request_id.len().min(usize::from(u16::MAX))];
        self.ids.extend_from_slice(&(id.len() as u16).to_le_bytes());
        self.ids.extend_from_slice(id);
    }

    /// The argument: the numbers, then the ids.
    pub(super) fn finish(mut self) -> Vec<u8> {
        self.numbers.extend_from_slice(&self.ids);
        self.numbers
    }
}

fn pack_numbers(
    out: &mut Vec<u8>,
    cost: Cost,
    max_wait: Micros,
    class: Class,
    deadline: Option<u64>,
) {
    let numbers = [
        cost.0[0],
        cost.0[1],
        cost.0[2],
        cost.0[3],
        max_wait,
        u64::from(class.rank),
        u64::from(class.max_overtakes),
    ];
    for n in numbers {
        // Costs are at most 2^50 (checked up front); waits are clamped.
        out.extend_from_slice(&(n.min(MAX_EXACT) as f64).to_le_bytes());
    }
    let deadline = deadline.map_or(-1.0, |d| d.min(MAX_EXACT) as f64);
    out.extend_from_slice(&deadline.to_le_bytes());
}

/// The leases a status reply says the service holds.
pub(super) fn held(reply: &[String]) -> Result<usize, BackendError> {
    number(reply, status::HELD)
}

/// A reply that is not what the scripts send.
pub(super) fn protocol(what: &str) -> BackendError {
    BackendError::Unavailable(format!("redis: unexpected script reply ({what})"))
}

/// Number `i` of a reply.
pub(super) fn number<T: std::str::FromStr>(reply: &[String], i: usize) -> Result<T, BackendError> {
    reply
        .get(i)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| protocol("a number was expected"))
}

/// The leases a family member's lease booked in its ancestors: `nonce:seq` pairs (nonces in
/// hex), comma-separated, parent first.
pub(super) fn parse_uplinks(text: &str) -> Result<Vec<LeaseId>, BackendError> {
    text.split(',')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (nonce, seq) = pair.split_once(':').ok_or_else(|| protocol("bad uplink"))?;
            Ok(LeaseId {
                nonce: u64::from_str_radix(nonce, 16).map_err(|_| protocol("bad uplink"))?,
                seq: seq.parse().map_err(|_| protocol("bad uplink"))?,
            })
        })
        .collect()
}

/// `report.lua`'s ARGV from 5 on (see its header) for `call` on `spec`.
pub(super) fn report_args(
    spec: &ServiceSpec,
    call: &ReportCall,
) -> Result<Vec<String>, BackendError> {
    let (lease_nonce, lease_seq) = call.lease.map_or((String::new(), String::new()), |l| {
        (format!("{:016x}", l.nonce), l.seq.to_string())
    });
    let usage = call.usage.map_or(String::new(), |u| {
        u[1..]
            .iter()
            .map(|v| v.map_or("-".to_string(), |v| v.to_string()))
            .collect::<Vec<_>>()
            .join(" ")
    });
    // Sources are our own text; newlines would split an order, so none may pass.
    let cooldowns = call
        .cooldowns
        .iter()
        .map(|o| {
            format!(
                "{} {} {} {}",
                o.dimension.index(),
                o.length,
                o.cause.status_code,
                o.cause.source.replace('\n', " ")
            )
        })
        .collect::<Vec<_>>()
        .join("\n");
    let overload = call.overload.as_ref().map_or(String::new(), |o| {
        format!(
            "{} {} {} {} {} {}",
            o.base,
            o.cap,
            o.jitter_permille,
            o.at_least,
            o.cause.status_code,
            o.cause.source.replace('\n', " ")
        )
    });
    let success = if call.success { "1" } else { "0" };
    let remaining = call
        .remaining
        .iter()
        .map(|r| format!("{} {} {}", r.limit, r.remaining, r.tolerance))
        .collect::<Vec<_>>()
        .join(" ");
    let adopt = call
        .adopt
        .iter()
        .map(|o| {
            let window = spec.limits.get(o.limit).map_or(1, |l| l.window);
            let (a, wg) = BucketShape {
                amount: o.amount,
                window,
                burst: o.burst,
            }
            .reduced();
            format!("{} {} {} {a} {wg}", o.limit, o.amount, o.burst)
        })
        .collect::<Vec<_>>()
        .join(" ");
    let max_leases = MAX_LEASES.to_string();
    let (observed, headers) = match &call.observation {
        Some((status, headers)) => (
            status.to_string(),
            serde_json::to_string(headers).map_err(|e| BackendError::Unavailable(e.to_string()))?,
        ),
        None => Default::default(),
    };
    Ok(vec![
        lease_nonce,
        lease_seq,
        usage,
        cooldowns,
        overload,
        success.to_string(),
        remaining,
        observed,
        headers,
        max_leases,
        adopt,
        if spec.family.is_some() { "1" } else { "0" }.to_string(),
        if call.throttled { "1" } else { "0" }.to_string(),
    ])
}

/// What `report.lua` answered.
pub(super) fn report_outcome(reply: &[String]) -> Result<ReportOutcome, BackendError> {
    Ok(ReportOutcome {
        cooldown_remaining: number(reply, report::COOLDOWN)?,
        cooldown_set: number::<u8>(reply, report::COOLDOWN_SET)? == 1,
        usage_applied: number::<u8>(reply, report::USAGE_APPLIED)? == 1,
        lease_unknown: number::<u8>(reply, report::LEASE_UNKNOWN)? == 1,
        outside_usage: number(reply, report::OUTSIDE_USAGE)?,
        released: number::<u8>(reply, report::RELEASED)? == 1,
        uplinks: reply
            .get(report::UPLINKS)
            .map(|up| parse_uplinks(up))
            .transpose()?
            .unwrap_or_default(),
        adaptive_scale: number(reply, report::ADAPTIVE_SCALE)?,
        adaptive_lowered: number::<u8>(reply, report::ADAPTIVE_LOWERED)? == 1,
        scope: Scope::Shared,
    })
}

/// The snapshot `status.lua` answered for `spec`.
pub(super) fn snapshot(
    spec: &ServiceSpec,
    reply: &[String],
) -> Result<ServiceSnapshot, BackendError> {
    if reply.len() != status::len(spec.limits.len()) {
        return Err(protocol("status length"));
    }
    let now: Micros = number(reply, status::NOW)?;
    let cooldown_remaining: Micros = number(reply, status::COOLDOWN)?;
    let cooldown = (cooldown_remaining > 0)
        .then(|| {
            Ok::<_, BackendError>((
                cooldown_remaining,
                CooldownCause {
                    status_code: number(reply, status::COOLDOWN_STATUS)?,
                    source: reply[status::COOLDOWN_SOURCE].clone(),
                },
            ))
        })
        .transpose()?;
    let last_report = if reply[status::REPORT_STATUS].is_empty() {
        None
    } else {
        Some(Observation {
            at: number(reply, status::REPORT_AT)?,
            status_code: number(reply, status::REPORT_STATUS)?,
            headers: serde_json::from_str(&reply[status::REPORT_HEADERS])
                .map_err(|_| protocol("headers"))?,
        })
    };
    let n = spec.limits.len();
    let base = status::limit(n);
    let scale: u32 = number(reply, base + status::ADAPTIVE_SCALE)?;
    let limits = spec
        .limits
        .iter()
        .enumerate()
        .map(|(i, limit)| {
            let amount = number(reply, status::limit(i) + status::AMOUNT)?;
            let in_force: u64 = number(reply, status::budget(n, i) + status::BUDGET_AMOUNT)?;
            let burst: u64 = number(reply, status::budget(n, i) + status::BUDGET_BURST)?;
            let bucket = matches!(limit.algorithm, Algorithm::TokenBucket { .. });
            Ok(LimitSnapshot {
                used: number(reply, status::limit(i) + status::USED)?,
                reset_after: number(reply, status::limit(i) + status::RESET)?,
                amount,
                // As the memory ledger shows it: a bucket's burst at the scale, else the amount.
                burst: if bucket {
                    adaptive::scaled(burst, scale)
                } else {
                    amount
                },
                adopted: limit.is_other_budget(in_force, if bucket { burst } else { in_force }),
                remaining: number(reply, status::limit(i) + status::REMAINING)?,
            })
        })
        .collect::<Result<_, BackendError>>()?;
    let mut dimension_cooldowns = Vec::new();
    for (k, dimension) in Dimension::ALL[1..].iter().enumerate() {
        let remaining: Micros = number(reply, base + status::DIMENSION_COOLDOWN * k)?;
        if remaining > 0 {
            dimension_cooldowns.push((
                *dimension,
                remaining,
                CooldownCause {
                    status_code: number(reply, base + status::DIMENSION_COOLDOWN * k + 1)?,
                    source: reply[base + status::DIMENSION_COOLDOWN * k + 2].clone(),
                },
            ));
        }
    }
    Ok(ServiceSnapshot {
        now,
        limits,
        cooldown,
        dimension_cooldowns,
        queued: number(reply, status::QUEUED)?,
        last_report,
        adaptive_scale: scale,
        scope: Scope::Shared,
    })
}
