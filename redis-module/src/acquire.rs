//! `SLUICE.ACQUIRE`: the acquires of one or more services decided in one command, each on its
//! service's ledger (and a family member's on its ancestors' too), exactly as the memory backend
//! decides them.
//!
//! `SLUICE.ACQUIRE key more key… now max_leases section…`: the first key, how many more there
//! are, those (the first key comes first so that cluster clients route the command by it, as
//! they route a command they do not know), then `now`, the decision time in µs since the Unix
//! epoch (`-1`: Redis's clock; the command is replicated with the time it used, so replicas and
//! the AOF decide alike), and sections. Each section is `chain spec… nonce… requests`: it takes
//! the next `chain` keys (a service, then its ancestors, parent first), the encoded
//! configuration of each, the nonce each takes if it has no state yet, and the encoded
//! [`AcquireRequests`]. The reply is one encoded [`AcquireAnswer`] per request, sections in order.
//! The whole call is read and checked before anything is decided: a malformed call changes
//! nothing.

use sluice_server::core::{
    acquire_in_family, from_bytes, to_bytes, AcquireAnswer, AcquireRequest, AcquireRequests,
    Micros, MAX_ANCESTORS,
};

use crate::{
    args::{parse_now, parse_u64, CallError},
    redis::{Args, Context},
    slots::Slots,
};

/// One section of the call, read.
struct Section<'a> {
    /// Where its keys are among the call's arguments.
    keys: Vec<usize>,
    specs: Vec<&'a [u8]>,
    nonces: Vec<u64>,
    requests: Vec<AcquireRequest>,
}

/// The call, read.
struct Call<'a> {
    now: Option<Micros>,
    /// Where `now` is among the arguments (replaced by the time used when replicated).
    now_at: usize,
    max_leases: usize,
    sections: Vec<Section<'a>>,
}

/// Which arguments are keys (for Redis's `getkeys-api` question).
pub fn keys(cx: &Context<'_>, args: &Args<'_>) -> Vec<usize> {
    let more = args
        .bytes(cx.api(), 1)
        .and_then(parse_u64)
        .and_then(|n| usize::try_from(n).ok())
        .map_or(0, |n| n.min(args.len().saturating_sub(2)));
    // Only positions that exist: Redis reads the arguments at the positions named.
    std::iter::once(0)
        .chain(2..2 + more)
        .filter(|&i| i < args.len())
        .collect()
}

fn read<'a>(cx: &Context<'_>, args: &Args<'a>) -> Result<Call<'a>, CallError> {
    let api = cx.api();
    let arg = |i: usize| args.bytes(api, i).ok_or(CallError::Arity);
    let number = |i: usize, what: &'static str| -> Result<u64, CallError> {
        parse_u64(arg(i)?).ok_or(CallError::Number(what))
    };
    let more = usize::try_from(number(1, "more")?).map_err(|_| CallError::Arity)?;
    // The first key, `more`, the other keys, `now` and `max_leases` at least.
    if more > args.len().saturating_sub(4) {
        return Err(CallError::Arity);
    }
    let key_args: Vec<usize> = std::iter::once(0).chain(2..2 + more).collect();
    let now_at = 2 + more;
    let now = parse_now(arg(now_at)?).ok_or(CallError::Number("now"))?;
    let max_leases = usize::try_from(number(now_at + 1, "max_leases")?)
        .map_err(|_| CallError::Number("max_leases"))?;
    let mut sections = Vec::new();
    let (mut at, mut key) = (now_at + 2, 0);
    while at < args.len() {
        let chain = number(at, "chain")? as usize;
        if chain == 0 || chain > MAX_ANCESTORS + 1 {
            return Err(CallError::Invalid(
                "a section's chain is 1 to 1 + MAX_ANCESTORS keys",
            ));
        }
        let specs = (0..chain)
            .map(|i| arg(at + 1 + i))
            .collect::<Result<_, _>>()?;
        let nonces = (0..chain)
            .map(|i| number(at + 1 + chain + i, "nonce"))
            .collect::<Result<_, _>>()?;
        let AcquireRequests(requests) =
            from_bytes(arg(at + 1 + 2 * chain)?).map_err(CallError::Codec)?;
        let keys = key_args
            .get(key..key + chain)
            .ok_or(CallError::Invalid(
                "the sections take more keys than the call names",
            ))?
            .to_vec();
        let names: Vec<&[u8]> = keys.iter().map(|&i| arg(i)).collect::<Result<_, _>>()?;
        if names
            .iter()
            .enumerate()
            .any(|(i, n)| names[..i].contains(n))
        {
            return Err(CallError::Invalid("a key appears twice in one section"));
        }
        sections.push(Section {
            keys,
            specs,
            nonces,
            requests,
        });
        at += 2 + 2 * chain;
        key += chain;
    }
    if key != key_args.len() {
        return Err(CallError::Invalid(
            "the sections take fewer keys than the call names",
        ));
    }
    Ok(Call {
        now,
        now_at,
        max_leases,
        sections,
    })
}

/// Runs the command; replies with the answers, or an error for a call it cannot read.
pub fn run(cx: &Context<'_>, args: &Args<'_>) -> Result<(), CallError> {
    let call = read(cx, args)?;
    let now = crate::args::decision_time(cx, call.now)?;
    // Every key and configuration is checked before the first decision, so a call fails whole
    // or not at all (a later section's error must not leave an earlier one's bookings
    // unreplicated and unanswered).
    for section in &call.sections {
        Slots::check(cx, args, &section.keys, &section.specs)?;
    }
    let mut answers: Vec<Vec<u8>> = Vec::new();
    // Whether any stored state was read, written or deleted: such a call is replicated, denials
    // too (they move the high-water mark and prune).
    let mut changed = false;
    for section in &call.sections {
        let mut slots = Slots::open(cx, args, &section.keys)?;
        for (i, spec) in section.specs.iter().enumerate() {
            slots.prepare(i, spec, section.nonces[i], call.max_leases)?;
        }
        for request in &section.requests {
            answers.push(to_bytes(&decide(&mut slots, request, now)));
        }
        changed |= slots.settle(now);
    }
    if changed && !cx.is_replicated() {
        crate::args::replicate_at(cx, args, "SLUICE.ACQUIRE", call.now_at, now);
    }
    cx.bulks(answers.iter().map(Vec::as_slice));
    Ok(())
}

fn decide(slots: &mut Slots, request: &AcquireRequest, now: Micros) -> AcquireAnswer {
    if request.deadline.is_some_and(|deadline| now > deadline) {
        return AcquireAnswer::PastDeadline;
    }
    let id = request.request_id.as_deref();
    let result = match slots.single_mut() {
        // A service outside any family; a family's root (chain of one) is decided as a family,
        // as the memory backend does.
        Some(one) if one.spec.family.is_none() => one.ledger.acquire_in_class(
            &one.spec,
            now,
            request.cost,
            request.max_wait,
            id,
            request.class,
        ),
        _ => acquire_in_family(
            &mut slots.members(),
            now,
            request.cost,
            request.max_wait,
            id,
        ),
    };
    match result {
        Ok(decision) => AcquireAnswer::Decided(decision),
        Err(error) => AcquireAnswer::Refused(error),
    }
}
