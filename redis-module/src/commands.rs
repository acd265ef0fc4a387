//! The single-key commands: `SLUICE.REPORT` (a provider's answer), `SLUICE.STATUS` (the live
//! state, read only), `SLUICE.ADMIN` (an operator's action) and `SLUICE.RESTORE` (a whole state,
//! as the AOF rewrite emits it). Each takes the service's key, the decision time (`-1`: Redis's
//! clock) and its encoded configuration; the writing ones replicate themselves with the time
//! they used.
//!
//! - `SLUICE.REPORT key now spec nonce call` → the encoded `ReportOutcome`
//! - `SLUICE.STATUS key now spec` → the encoded `ServiceSnapshot` and leases held (`u64`)
//! - `SLUICE.ADMIN key now spec nonce op` → `OK`
//! - `SLUICE.PRUNE key now spec` → when pruning can next drop something (µs), or `-1` once the
//!   key holds nothing (it is deleted then)
//! - `SLUICE.RESTORE key state` → `OK`

use sluice_server::core::{from_bytes, to_bytes, AdminOp, Ledger, ReportCall, ServiceSpec};

use crate::{
    args::{decision_time, parse_now, parse_u64, replicate_at, CallError},
    redis::{Args, Context},
    slots::Slots,
    value::{ledger_type, Stored},
};

/// Where the time is in every single-key command.
const NOW_AT: usize = 1;

fn arg<'a>(cx: &Context<'_>, args: &Args<'a>, i: usize) -> Result<&'a [u8], CallError> {
    args.bytes(cx.api(), i).ok_or(CallError::Arity)
}

fn exact(args: &Args<'_>, count: usize) -> Result<(), CallError> {
    if args.len() == count {
        Ok(())
    } else {
        Err(CallError::Arity)
    }
}

/// The decision time of a single-key command.
fn now_of(cx: &Context<'_>, args: &Args<'_>) -> Result<u64, CallError> {
    let now = parse_now(arg(cx, args, NOW_AT)?).ok_or(CallError::Number("now"))?;
    decision_time(cx, now)
}

fn nonce_of(cx: &Context<'_>, args: &Args<'_>) -> Result<u64, CallError> {
    parse_u64(arg(cx, args, 3)?).ok_or(CallError::Number("nonce"))
}

/// Runs `SLUICE.REPORT`.
pub fn report(cx: &Context<'_>, args: &Args<'_>) -> Result<(), CallError> {
    exact(args, 5)?;
    let now = now_of(cx, args)?;
    let spec = arg(cx, args, 2)?;
    let nonce = nonce_of(cx, args)?;
    let call: ReportCall = from_bytes(arg(cx, args, 4)?).map_err(CallError::Codec)?;
    let mut slots = Slots::open(cx, args, &[0])?;
    slots.prepare(0, spec, nonce, sluice_server::core::MAX_LEASES)?;
    let outcome = match slots.single_mut() {
        Some(stored) => stored.ledger.report(&stored.spec, now, &call),
        None => return Err(CallError::Arity),
    };
    slots.settle(now);
    if !cx.is_replicated() {
        replicate_at(cx, args, "SLUICE.REPORT", NOW_AT, now);
    }
    cx.bulk(&to_bytes(&outcome));
    Ok(())
}

/// Runs `SLUICE.ADMIN`.
pub fn admin(cx: &Context<'_>, args: &Args<'_>) -> Result<(), CallError> {
    exact(args, 5)?;
    let now = now_of(cx, args)?;
    let spec = arg(cx, args, 2)?;
    let nonce = nonce_of(cx, args)?;
    let op: AdminOp = from_bytes(arg(cx, args, 4)?).map_err(CallError::Codec)?;
    let mut slots = Slots::open(cx, args, &[0])?;
    slots.prepare(0, spec, nonce, sluice_server::core::MAX_LEASES)?;
    if let Some(stored) = slots.single_mut() {
        stored.ledger.admin(&stored.spec, now, op);
    }
    slots.settle(now);
    if !cx.is_replicated() {
        replicate_at(cx, args, "SLUICE.ADMIN", NOW_AT, now);
    }
    cx.ok();
    Ok(())
}

/// Runs `SLUICE.STATUS`: the state as the configuration sent would see it (a state shaped for
/// another is reshaped on a copy), or an empty one.
pub fn status(cx: &Context<'_>, args: &Args<'_>) -> Result<(), CallError> {
    exact(args, 3)?;
    let now = now_of(cx, args)?;
    let spec_bytes = arg(cx, args, 2)?;
    let key = cx.open_read(args.raw(0).ok_or(CallError::Arity)?);
    let stored = key
        .value::<Stored>(ledger_type())
        .map_err(|_| CallError::WrongType)?;
    let snapshot = match stored.and_then(crate::value::borrow) {
        Some(stored) if stored.is_shaped_for(spec_bytes) => (
            stored.ledger.snapshot(&stored.spec, now),
            stored.ledger.lease_count() as u64,
        ),
        Some(stored) => {
            let mut copy = stored.clone();
            copy.conform(spec_bytes).map_err(CallError::Codec)?;
            (
                copy.ledger.snapshot(&copy.spec, now),
                copy.ledger.lease_count() as u64,
            )
        }
        None => {
            let spec: ServiceSpec = from_bytes(spec_bytes).map_err(CallError::Codec)?;
            (Ledger::new(&spec, 0).snapshot(&spec, now), 0)
        }
    };
    cx.bulk(&to_bytes(&snapshot));
    Ok(())
}

/// Runs `SLUICE.PRUNE`: drops expired leases and an idle state's spare memory (the maintenance
/// sweep's visit; decisions prune too).
pub fn prune(cx: &Context<'_>, args: &Args<'_>) -> Result<(), CallError> {
    exact(args, 3)?;
    let now = now_of(cx, args)?;
    let spec = arg(cx, args, 2)?;
    let mut slots = Slots::open(cx, args, &[0])?;
    if slots.is_empty() {
        cx.integer(-1);
        return Ok(());
    }
    slots.prepare(0, spec, 0, sluice_server::core::MAX_LEASES)?;
    let next = slots.single_mut().and_then(|stored| {
        stored.ledger.compact(&stored.spec, now);
        stored.ledger.next_prune_at(&stored.spec)
    });
    slots.settle(now);
    if !cx.is_replicated() {
        replicate_at(cx, args, "SLUICE.PRUNE", NOW_AT, now);
    }
    cx.integer(next.and_then(|t| i64::try_from(t).ok()).unwrap_or(-1));
    Ok(())
}

/// Runs `SLUICE.RESTORE`: replaces the key's value with an encoded state.
pub fn restore(cx: &Context<'_>, args: &Args<'_>) -> Result<(), CallError> {
    exact(args, 2)?;
    let stored = Stored::from_bytes(arg(cx, args, 1)?).map_err(CallError::Codec)?;
    let key = cx.open(args.raw(0).ok_or(CallError::Arity)?);
    if !key.is_empty() && key.value::<Stored>(ledger_type()).is_err() {
        return Err(CallError::WrongType);
    }
    let value = Box::into_raw(Box::new(stored));
    if !key.set_value(ledger_type(), value.cast()) {
        crate::value::reclaim(value);
        return Err(CallError::Invalid("the key cannot be written"));
    }
    if !cx.is_replicated() {
        let api = cx.api();
        let all: Vec<&[u8]> = (0..args.len())
            .map(|i| args.bytes(api, i).unwrap_or_default())
            .collect();
        cx.replicate("SLUICE.RESTORE", &all);
    }
    cx.ok();
    Ok(())
}
