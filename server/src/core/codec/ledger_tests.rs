//! Property tests of the [`Ledger`]'s codec with a controlled clock. Ledgers (alone or as a
//! child and its parent) are built by random runs of real operations — acquires in priority
//! classes with request ids, reports of every kind, operator actions, pruning and compaction,
//! reloads — with time advancing by random steps. Each must decode to the very same state,
//! encode again to the same bytes, and decide exactly as the original for a further random run;
//! no prefix of its encoding decodes, and no mutation of it panics.

use proptest::prelude::*;

use super::tests::refuses_damage;
use super::*;
use crate::core::tests::{limit_strategy, requests, spec, tokens_bucket, S, T0};
use crate::core::*;

/// One step of a run. `who` picks a ledger (modulo how many there are); `back` a lease id it
/// was given, counted from the latest (`None`: the id of another process's lease).
#[derive(Clone, Debug)]
enum Op {
    Acquire {
        who: usize,
        cost: (u64, u64, u64),
        max_wait: Micros,
        request: Option<u8>,
        rank: u8,
    },
    Advance(Micros),
    Report {
        who: usize,
        back: Option<usize>,
        call: Box<ReportCall>,
        adopt: Option<(usize, u64)>,
    },
    Admin(usize, AdminOp),
    Compact(usize, bool),
    /// Reload with limit `at` replaced by (or, by `at`'s remainder, joined by or removed for)
    /// this one.
    Reshape(usize, LimitSpec, usize),
}

fn report_call() -> impl Strategy<Value = ReportCall> {
    let cause = (400u32..600).prop_map(|status_code| CooldownCause {
        status_code,
        source: format!("s{status_code}"),
    });
    let cooldown =
        ((0usize..4), 0..20 * S, cause.clone()).prop_map(|(d, length, cause)| CooldownOrder {
            dimension: Dimension::ALL[d],
            length,
            cause,
        });
    let overload = (1..S, 1..10 * S, 800u32..=1200, 0..3 * S, cause).prop_map(
        |(base, cap, jitter_permille, at_least, cause)| OverloadOrder {
            base,
            cap,
            jitter_permille,
            at_least,
            cause,
        },
    );
    let reading = (0usize..4, 0u64..200, 0u64..5).prop_map(|(limit, remaining, tolerance)| {
        RemainingReading {
            limit,
            remaining,
            tolerance,
        }
    });
    let usage = prop::array::uniform4(prop::option::of(0u64..120));
    (
        prop::option::weighted(0.5, usage),
        prop::option::weighted(0.3, cooldown),
        prop::option::weighted(0.15, overload),
        prop::option::weighted(0.3, reading),
        any::<(bool, bool)>(),
        prop::option::weighted(0.3, 200u32..600),
    )
        .prop_map(
            |(usage, cooldown, overload, reading, (success, throttled), status)| ReportCall {
                usage,
                cooldowns: cooldown.into_iter().collect(),
                overload,
                success,
                remaining: reading.into_iter().collect(),
                throttled,
                observation: status.map(|s| (s, vec![("retry-after".into(), format!("{s}"))])),
                ..ReportCall::default()
            },
        )
}

fn op() -> impl Strategy<Value = Op> {
    let step = prop_oneof![8 => 0..3 * S, 1 => 20 * S..120 * S];
    let cost = (0u64..=60, 0u64..=30, 0u64..=30);
    let max_wait = prop_oneof![Just(0), 0..30 * S];
    let request = prop::option::weighted(0.6, 0u8..12);
    let acquire = (any::<usize>(), cost, max_wait, request, 0u8..3).prop_map(
        |(who, cost, max_wait, request, rank)| Op::Acquire {
            who,
            cost,
            max_wait,
            request,
            rank,
        },
    );
    let back = prop::option::weighted(0.9, 0usize..6);
    let adopt = prop::option::weighted(0.2, (0usize..4, 20u64..400));
    let report =
        (any::<usize>(), back, report_call(), adopt).prop_map(|(who, back, call, adopt)| {
            Op::Report {
                who,
                back,
                call: Box::new(call),
                adopt,
            }
        });
    let admin = prop_oneof![Just(AdminOp::ClearCooldowns), Just(AdminOp::Reset)];
    prop_oneof![
        6 => acquire,
        3 => step.prop_map(Op::Advance),
        3 => report,
        1 => (any::<usize>(), admin).prop_map(|(who, op)| Op::Admin(who, op)),
        1 => (any::<usize>(), any::<bool>()).prop_map(|(who, prune)| Op::Compact(who, prune)),
        1 => (any::<usize>(), limit_strategy(), any::<usize>())
            .prop_map(|(who, limit, at)| Op::Reshape(who, limit, at)),
    ]
}

/// The specs, clock and lease ids of a run: one service, or a child (0) and its parent (1).
#[derive(Clone, Debug)]
struct World {
    specs: Vec<ServiceSpec>,
    now: Micros,
    ids: Vec<Vec<LeaseId>>,
}

fn world() -> impl Strategy<Value = (World, Vec<Ledger>)> {
    let flags = any::<(bool, bool, bool)>();
    let in_flight = prop::option::weighted(0.3, (1u64..=4, 2u64..=20));
    let max_leases = prop_oneof![3 => Just(MAX_LEASES), 1 => 3usize..30];
    (
        prop::collection::vec(limit_strategy(), 1..=3),
        flags,
        in_flight,
        max_leases,
    )
        .prop_map(
            |(limits, (family, adopt, adaptive), in_flight, max_leases)| {
                let mut child = spec(limits);
                child.adopt_provider_limits = adopt;
                child.adaptive = adaptive;
                if let Some((amount, secs)) = in_flight {
                    child.limits.push(LimitSpec::concurrent(amount, secs * S));
                }
                let mut specs = vec![child];
                if family {
                    let mut parent = spec(vec![tokens_bucket(150, 10 * S, 100)]);
                    parent.name = "parent".into();
                    for s in specs.iter_mut().chain([&mut parent]) {
                        s.family = Some("parent".into());
                    }
                    specs[0].parent = Some("parent".into());
                    specs.push(parent);
                }
                let ledgers = specs
                    .iter()
                    .enumerate()
                    .map(|(i, s)| Ledger::new(s, 0xc0de + i as u64).with_max_leases(max_leases))
                    .collect();
                let ids = vec![Vec::new(); specs.len()];
                let world = World {
                    specs,
                    now: T0,
                    ids,
                };
                (world, ledgers)
            },
        )
}

fn classes(rank: u8) -> Class {
    match rank {
        0 => Class::TOP,
        r => Class::with_min_share(r, 0.5 / f64::from(r)),
    }
}

/// Applies `op`; returns what it answered and the snapshots of every ledger after it.
fn apply(w: &mut World, ledgers: &mut [Ledger], op: &Op) -> String {
    let n = ledgers.len();
    let answer = match op.clone() {
        Op::Acquire {
            who,
            cost,
            max_wait,
            request,
            rank,
        } => {
            let who = who % n;
            let cost = Cost::of_call(cost.0, cost.1, cost.2);
            if w.specs[who..].iter().any(|s| s.check_fits(&cost).is_err()) {
                return String::new();
            }
            let rid = request.map(|r| format!("req-{r}"));
            let rid = rid.as_deref();
            let result = if n == 1 {
                ledgers[0].acquire_in_class(&w.specs[0], w.now, cost, max_wait, rid, classes(rank))
            } else {
                let mut members: Vec<Member<'_>> = w.specs[who..]
                    .iter()
                    .zip(ledgers[who..].iter_mut())
                    .map(|(spec, ledger)| Member { spec, ledger })
                    .collect();
                acquire_in_family(&mut members, w.now, cost, max_wait, rid)
            };
            if let Ok(Decision::Granted(g)) = &result {
                w.ids[who].push(g.lease_id);
            }
            format!("{result:?}")
        }
        Op::Advance(step) => {
            w.now += step;
            String::new()
        }
        Op::Report {
            who,
            back,
            mut call,
            adopt,
        } => {
            let who = who % n;
            let ids = &w.ids[who];
            call.lease = match back {
                Some(b) if !ids.is_empty() => Some(ids[ids.len() - 1 - b % ids.len()]),
                Some(_) => None,
                None => Some(LeaseId { nonce: 7, seq: 0 }),
            };
            let spec = &w.specs[who];
            call.adopt = adopt
                .and_then(|(i, amount)| AdoptOrder::new(i, spec.limits.get(i)?, amount).ok())
                .into_iter()
                .collect();
            let out = ledgers[who].report(spec, w.now, &call);
            // The same answer reaches the leases it booked in its ancestors (its usage only).
            let up: Vec<ReportOutcome> = out
                .uplinks
                .iter()
                .zip(who + 1..n)
                .map(|(&lease, i)| {
                    let call = ReportCall {
                        lease: Some(lease),
                        usage: call.usage,
                        ..ReportCall::default()
                    };
                    w.ids[i].push(lease);
                    ledgers[i].report(&w.specs[i], w.now, &call)
                })
                .collect();
            format!("{out:?} {up:?}")
        }
        Op::Admin(who, op) => {
            ledgers[who % n].admin(&w.specs[who % n], w.now, op);
            String::new()
        }
        Op::Compact(who, prune) => {
            let (spec, ledger) = (&w.specs[who % n], &mut ledgers[who % n]);
            if prune {
                ledger.prune(spec, w.now);
                String::new()
            } else {
                format!("{}", ledger.compact(spec, w.now))
            }
        }
        Op::Reshape(who, limit, at) => {
            let old = w.specs[who % n].clone();
            let mut new = old.clone();
            let i = at % new.limits.len();
            match at % 3 {
                0 if new.limits.len() < 4 => new.limits.push(limit),
                1 if new.limits.len() > 1 => drop(new.limits.remove(i)),
                _ => new.limits[i] = limit,
            }
            ledgers[who % n].reshape(&old, &new);
            w.specs[who % n] = new;
            String::new()
        }
    };
    let snapshots: Vec<ServiceSnapshot> = (0..n)
        .map(|i| ledgers[i].snapshot(&w.specs[i], w.now))
        .collect();
    format!("{answer} {snapshots:?}")
}

/// `ledger` encoded, checked to decode to the same state and to encode again to the same bytes.
fn round_trip(ledger: &Ledger) -> Result<(Vec<u8>, Ledger), TestCaseError> {
    let bytes = to_bytes(ledger);
    let back: Ledger = from_bytes(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
    ledger.assert_same_state(&back);
    prop_assert_eq!(to_bytes(&back), bytes.clone());
    Ok((bytes, back))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn decoded_ledgers_hold_the_same_state_and_decide_alike(
        (mut world, mut ledgers) in world(),
        before in prop::collection::vec(op(), 0..120),
        after in prop::collection::vec(op(), 1..80),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 16),
        flips in prop::collection::vec((any::<prop::sample::Index>(), 1..=255u8), 16),
    ) {
        for op in &before {
            apply(&mut world, &mut ledgers, op);
        }
        let mut decoded = Vec::new();
        for ledger in &ledgers {
            let (bytes, back) = round_trip(ledger)?;
            decoded.push(back);
            for cut in &cuts {
                prop_assert!(from_bytes::<Ledger>(&bytes[..cut.index(bytes.len())]).is_err());
            }
            // Damaged bytes never panic; what still decodes is canonical.
            for (at, flip) in &flips {
                let mut bad = bytes.clone();
                bad[at.index(bytes.len())] ^= flip;
                if let Ok(l) = from_bytes::<Ledger>(&bad) {
                    prop_assert_eq!(to_bytes(&l), bad);
                }
            }
        }
        let mut twin = world.clone();
        for op in &after {
            let original = apply(&mut world, &mut ledgers, op);
            let copy = apply(&mut twin, &mut decoded, op);
            prop_assert_eq!(original, copy, "after {:?}", op);
        }
        for (ledger, copy) in ledgers.iter().zip(&decoded) {
            prop_assert_eq!(to_bytes(ledger), to_bytes(copy));
        }
    }
}

/// A service with a sliding window of requests, a token bucket and calls in flight, that granted
/// `n` calls 20 ms apart, each with a 36-character request id (a UUID) and a few thousand tokens.
fn busy_ledger(n: u64) -> (ServiceSpec, Ledger) {
    let mut spec = spec(vec![
        LimitSpec::new(
            Dimension::Requests,
            10_000,
            60 * S,
            Algorithm::SlidingWindow,
        ),
        tokens_bucket(2_000_000, 60 * S, 2_000_000),
        LimitSpec::concurrent(5_000, 120 * S),
    ]);
    spec.adopt_provider_limits = true;
    let mut ledger = Ledger::new(&spec, 0x5eed_f00d_cafe_d00d);
    let mut now = T0;
    for k in 0..n {
        let rid = format!(
            "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
            k * 7919,
            k,
            k,
            k,
            k * 31
        );
        let cost = Cost::of_call(0, 1_000 + k * 37 % 2_000, 200 + k % 500);
        let decision = ledger.acquire(&spec, now, cost, 60 * S, Some(&rid));
        assert!(matches!(decision, Ok(Decision::Granted(_))), "{decision:?}");
        if k % 3 == 0 {
            let call = ReportCall {
                lease: Some(LeaseId {
                    nonce: 0x5eed_f00d_cafe_d00d,
                    seq: k,
                }),
                usage: Some([None, None, Some(900), Some(k % 700)]),
                ..ReportCall::default()
            };
            ledger.report(&spec, now, &call);
        }
        now += 20_000;
    }
    (spec, ledger)
}

#[test]
fn a_thousand_leases_encode_compactly() {
    let (spec, ledger) = busy_ledger(1_000);
    assert_eq!(ledger.lease_count(), 1_000);
    let bytes = to_bytes(&ledger);
    let back: Ledger = from_bytes(&bytes).unwrap();
    ledger.assert_same_state(&back);
    assert_eq!(back.snapshot(&spec, T0), ledger.snapshot(&spec, T0));
    // 36 bytes of request id each, and a few dozen more.
    println!("1,000 leases: {} bytes", bytes.len());
    assert!(bytes.len() < 1_000 * (36 + 30), "{} bytes", bytes.len());
}

#[test]
fn every_truncation_of_a_ledger_is_refused() {
    let (_, ledger) = busy_ledger(40);
    refuses_damage::<Ledger>(&to_bytes(&ledger));
}

/// Entries that no lease of the log stands for are kept too: an in-flight slot whose lease a
/// reload let expire first (the in-flight limit gone, a shorter retention), and a request id
/// naming no lease.
#[test]
fn entries_without_their_lease_round_trip() {
    let old = spec(vec![LimitSpec::concurrent(2, 60 * S), requests(10, S)]);
    let new = spec(vec![requests(10, S)]);
    let mut ledger = Ledger::new(&old, 1);
    for rid in ["a", "b"] {
        let cost = Cost::of_call(0, 0, 0);
        let granted = ledger.acquire(&old, T0, cost, 0, Some(rid));
        assert!(matches!(granted, Ok(Decision::Granted(_))));
    }
    ledger.reshape(&old, &new);
    ledger.prune(&new, T0 + 2 * S);
    assert_eq!(ledger.lease_count(), 0);
    ledger.index_request("ghost", 77);
    let bytes = to_bytes(&ledger);
    let back: Ledger = from_bytes(&bytes).unwrap();
    ledger.assert_same_state(&back);
    assert_eq!(to_bytes(&back), bytes);
    refuses_damage::<Ledger>(&bytes);
}
