//! Unit and property tests of the core with explicit times (the controlled clock).

use proptest::prelude::*;

use super::*;

pub(super) const S: Micros = MICROS_PER_SEC;

pub(super) fn spec(limits: Vec<LimitSpec>) -> ServiceSpec {
    ServiceSpec::new("test/svc", limits)
}

/// The ledger's report with a service-wide cooldown given as an end time.
fn report(
    l: &mut Ledger,
    spec: &ServiceSpec,
    now: Micros,
    lease: Option<LeaseId>,
    usage: Option<UsageUpdate>,
    cooldown: Option<Cooldown>,
    observation: Option<(u32, Vec<(String, String)>)>,
) -> ReportOutcome {
    let call = ReportCall {
        lease,
        usage,
        cooldowns: cooldown
            .map(|c| CooldownOrder {
                dimension: Dimension::Requests,
                length: c.until - now,
                cause: c.cause,
            })
            .into_iter()
            .collect(),
        observation,
        ..ReportCall::default()
    };
    l.report(spec, now, &call)
}

pub(super) fn requests(amount: u64, window: Micros) -> LimitSpec {
    LimitSpec::new(
        Dimension::Requests,
        amount,
        window,
        Algorithm::SlidingWindow,
    )
}

pub(super) fn tokens_bucket(amount: u64, window: Micros, burst: u64) -> LimitSpec {
    LimitSpec::new(
        Dimension::Tokens,
        amount,
        window,
        Algorithm::TokenBucket { burst },
    )
}

pub(super) fn tokens_window(amount: u64, window: Micros) -> LimitSpec {
    LimitSpec::new(Dimension::Tokens, amount, window, Algorithm::SlidingWindow)
}

fn grant(d: Decision) -> Grant {
    match d {
        Decision::Granted(g) => g,
        Decision::Denied { .. } => panic!("expected a grant, got {d:?}"),
    }
}

pub(super) const T0: Micros = 1_700_000_000 * S;

#[test]
fn sliding_window_grants_up_to_amount_then_queues_at_window_end() {
    let spec = spec(vec![requests(3, 10 * S)]);
    let mut l = Ledger::new(&spec, 1);
    for k in 0..3 {
        let g = grant(
            l.acquire(&spec, T0 + k * S, Cost::of_call(0, 0, 0), 0, None)
                .unwrap(),
        );
        assert_eq!(g.slot, T0 + k * S);
        assert_eq!(g.decider, Decider::Now);
    }
    // Fourth call at T0+3s: the first lease leaves the window at T0+10s.
    let d = l
        .acquire(&spec, T0 + 3 * S, Cost::of_call(0, 0, 0), 0, None)
        .unwrap();
    assert_eq!(
        d,
        Decision::Denied {
            retry_after: 7 * S,
            decider: Decider::Limit(0),
            scope: Scope::Shared,
        }
    );
    let g = grant(
        l.acquire(&spec, T0 + 3 * S, Cost::of_call(0, 0, 0), 7 * S, None)
            .unwrap(),
    );
    assert_eq!((g.slot, g.wait), (T0 + 10 * S, 7 * S));
    // The next one queues behind it, at the second lease's expiry.
    let g = grant(
        l.acquire(&spec, T0 + 3 * S, Cost::of_call(0, 0, 0), 60 * S, None)
            .unwrap(),
    );
    assert_eq!(g.slot, T0 + 11 * S);
}

#[test]
fn sliding_window_waits_until_enough_cost_has_left() {
    let spec = spec(vec![tokens_window(100, 60 * S)]);
    let mut l = Ledger::new(&spec, 1);
    for (k, c) in [40, 30, 30].into_iter().enumerate() {
        grant(
            l.acquire(&spec, T0 + k as u64 * S, Cost::of_call(c, 0, 0), 0, None)
                .unwrap(),
        );
    }
    // 50 tokens need the first two leases (70) gone: at T0 + 1s + 60s.
    let g = grant(
        l.acquire(&spec, T0 + 5 * S, Cost::of_call(50, 0, 0), 120 * S, None)
            .unwrap(),
    );
    assert_eq!(g.slot, T0 + 61 * S);
}

#[test]
fn denials_record_nothing() {
    let spec = spec(vec![requests(1, 10 * S)]);
    let mut l = Ledger::new(&spec, 1);
    grant(
        l.acquire(&spec, T0, Cost::of_call(0, 0, 0), 0, None)
            .unwrap(),
    );
    for _ in 0..1000 {
        assert!(matches!(
            l.acquire(&spec, T0, Cost::of_call(0, 0, 0), 0, None)
                .unwrap(),
            Decision::Denied { .. }
        ));
    }
    assert_eq!(l.lease_count(), 1);
    let g = grant(
        l.acquire(&spec, T0 + 10 * S, Cost::of_call(0, 0, 0), 0, None)
            .unwrap(),
    );
    assert_eq!(g.wait, 0);
}

#[test]
fn all_limits_are_booked_together_or_not_at_all() {
    let spec = spec(vec![requests(10, 60 * S), tokens_window(1000, 60 * S)]);
    let mut l = Ledger::new(&spec, 1);
    grant(
        l.acquire(&spec, T0, Cost::of_call(900, 0, 0), 0, None)
            .unwrap(),
    );
    // Fits the request limit but not the token limit: denied, and no request is counted.
    assert!(matches!(
        l.acquire(&spec, T0, Cost::of_call(200, 0, 0), 0, None)
            .unwrap(),
        Decision::Denied {
            decider: Decider::Limit(1),
            ..
        }
    ));
    let snap = l.snapshot(&spec, T0);
    assert_eq!(snap.limits[0].used, 1);
    assert_eq!(snap.limits[1].used, 900);
}

#[test]
fn large_requests_are_not_starved_by_small_ones() {
    let spec = spec(vec![tokens_window(100, 10 * S)]);
    let mut l = Ledger::new(&spec, 1);
    grant(
        l.acquire(&spec, T0, Cost::of_call(60, 0, 0), 0, None)
            .unwrap(),
    );
    let big = grant(
        l.acquire(&spec, T0, Cost::of_call(100, 0, 0), 60 * S, None)
            .unwrap(),
    );
    assert_eq!(big.slot, T0 + 10 * S);
    // A small one that would fit now must still queue behind the big one.
    let small = grant(
        l.acquire(&spec, T0, Cost::of_call(1, 0, 0), 60 * S, None)
            .unwrap(),
    );
    assert!(small.slot >= big.slot);
}

#[test]
fn token_bucket_refills_continuously() {
    let spec = spec(vec![tokens_bucket(600, 60 * S, 100)]);
    let mut l = Ledger::new(&spec, 1);
    grant(
        l.acquire(&spec, T0, Cost::of_call(100, 0, 0), 0, None)
            .unwrap(),
    );
    // 10 tokens per second refill.
    let d = l
        .acquire(&spec, T0, Cost::of_call(25, 0, 0), 0, None)
        .unwrap();
    assert_eq!(
        d,
        Decision::Denied {
            retry_after: 2_500_000,
            decider: Decider::Limit(0),
            scope: Scope::Shared,
        }
    );
    let g = grant(
        l.acquire(&spec, T0 + 3 * S, Cost::of_call(25, 0, 0), 0, None)
            .unwrap(),
    );
    assert_eq!(g.wait, 0);
    let snap = l.snapshot(&spec, T0 + 3 * S);
    assert_eq!(snap.limits[0].used, 95);
    assert_eq!(snap.limits[0].remaining, 5);
}

#[test]
fn cooldowns_block_and_only_lengthen() {
    let spec = spec(vec![requests(100, 60 * S)]);
    let mut l = Ledger::new(&spec, 1);
    let cause = |s: &str| CooldownCause {
        status_code: 429,
        source: s.into(),
    };
    let out = report(
        &mut l,
        &spec,
        T0,
        None,
        None,
        Some(Cooldown {
            until: T0 + 30 * S,
            cause: cause("a"),
        }),
        None,
    );
    assert!(out.cooldown_set);
    assert_eq!(out.cooldown_remaining, 30 * S);
    let out = report(
        &mut l,
        &spec,
        T0,
        None,
        None,
        Some(Cooldown {
            until: T0 + 5 * S,
            cause: cause("b"),
        }),
        None,
    );
    assert!(!out.cooldown_set);
    assert_eq!(out.cooldown_remaining, 30 * S);
    let d = l
        .acquire(&spec, T0 + S, Cost::of_call(0, 0, 0), 0, None)
        .unwrap();
    assert_eq!(
        d,
        Decision::Denied {
            retry_after: 29 * S,
            decider: Decider::Cooldown,
            scope: Scope::Shared,
        }
    );
    let g = grant(
        l.acquire(&spec, T0 + S, Cost::of_call(0, 0, 0), 60 * S, None)
            .unwrap(),
    );
    assert_eq!(g.slot, T0 + 30 * S);
    assert_eq!(
        l.snapshot(&spec, T0 + S).cooldown.map(|c| c.1.source),
        Some("a".to_string())
    );
    assert_eq!(l.snapshot(&spec, T0 + 31 * S).cooldown, None);
}

#[test]
fn a_cooldown_defers_queued_slots_keeping_their_order_and_spacing() {
    let spec = spec(vec![requests(2, 10 * S)]);
    let mut l = Ledger::new(&spec, 1);
    let rid = |i: usize| format!("r{i}");
    let slots: Vec<Micros> = (0..6)
        .map(|i| {
            let d = l.acquire(&spec, T0, Cost::of_call(0, 0, 0), 60 * S, Some(&rid(i)));
            grant(d.unwrap()).slot
        })
        .collect();
    assert_eq!(
        slots,
        vec![T0, T0, T0 + 10 * S, T0 + 10 * S, T0 + 20 * S, T0 + 20 * S]
    );
    let ids: Vec<LeaseId> = (0..6).map(|seq| LeaseId { nonce: 1, seq }).collect();
    // A 429 at T0 + 1 s says: nothing for 15 s. The queued slots move back by 6 s, in order.
    let cause = CooldownCause {
        status_code: 429,
        source: "429 retry-after".into(),
    };
    let at = T0 + S;
    report(
        &mut l,
        &spec,
        at,
        None,
        None,
        Some(Cooldown {
            until: at + 15 * S,
            cause,
        }),
        None,
    );
    let moved: Vec<Micros> = ids.iter().map(|id| l.slot_of(*id).unwrap()).collect();
    assert_eq!(
        moved,
        vec![T0, T0, T0 + 16 * S, T0 + 16 * S, T0 + 26 * S, T0 + 26 * S]
    );
    // A new call queues after them, and a retried acquire learns its new slot.
    let next = grant(
        l.acquire(&spec, at, Cost::of_call(0, 0, 0), 60 * S, None)
            .unwrap(),
    );
    assert_eq!(next.slot, T0 + 36 * S);
    let again = grant(
        l.acquire(&spec, at, Cost::of_call(0, 0, 0), 0, Some(&rid(2)))
            .unwrap(),
    );
    assert_eq!(
        (again.lease_id, again.slot, again.wait),
        (ids[2], T0 + 16 * S, 15 * S)
    );
}

/// Books `n` calls of `tokens` at `at`, each with its own request id; returns (id, slot).
fn queue_calls(
    l: &mut Ledger,
    spec: &ServiceSpec,
    at: Micros,
    n: usize,
    tokens: u64,
) -> Vec<(LeaseId, Micros)> {
    (0..n)
        .map(|i| {
            let cost = Cost::of_call(tokens, 0, 0);
            let g = grant(
                l.acquire(spec, at, cost, 3600 * S, Some(&format!("q{i}")))
                    .unwrap(),
            );
            (g.lease_id, g.slot)
        })
        .collect()
}

#[test]
fn a_lowered_budget_books_queued_slots_again_at_its_rate() {
    // 10 calls per 10 s configured; the provider's budget is 5.
    let mut spec = spec(vec![requests(10, 10 * S)]);
    spec.adopt_provider_limits = true;
    let mut l = Ledger::new(&spec, 1);
    let booked = queue_calls(&mut l, &spec, T0, 30, 0);
    assert_eq!(booked[10].1, T0 + 10 * S);
    assert_eq!(booked[29].1, T0 + 20 * S);
    // A 429 at T0 + 1 s with a 2 s cooldown and the provider's limit of 5.
    let at = T0 + S;
    let call = ReportCall {
        cooldowns: vec![CooldownOrder {
            dimension: Dimension::Requests,
            length: 2 * S,
            cause: CooldownCause {
                status_code: 429,
                source: "test".into(),
            },
        }],
        adopt: vec![AdoptOrder {
            limit: 0,
            amount: 5,
            burst: 5,
        }],
        ..ReportCall::default()
    };
    l.report(&spec, at, &call);
    let moved: Vec<Micros> = booked
        .iter()
        .map(|(id, _)| l.slot_of(*id).unwrap())
        .collect();
    // Granted ones stay; the queued ones keep their ids and order, five per window now: the
    // first five wait for the ten of T0 to leave (T0 + 10 s), and so on.
    assert_eq!(&moved[..10], &[T0; 10]);
    for (k, slot) in moved[10..].iter().enumerate() {
        assert_eq!(*slot, T0 + 10 * S * (1 + k as u64 / 5), "queued call {k}");
    }
    // Without the lowered budget the same report only moves them past the cooldown.
    let mut same = Ledger::new(&spec, 1);
    let booked = queue_calls(&mut same, &spec, T0, 30, 0);
    same.report(
        &spec,
        at,
        &ReportCall {
            adopt: vec![],
            ..call
        },
    );
    let kept: Vec<Micros> = booked
        .iter()
        .map(|(id, _)| same.slot_of(*id).unwrap())
        .collect();
    assert_eq!(kept, booked.iter().map(|b| b.1).collect::<Vec<_>>());
}

#[test]
fn an_adaptive_decrease_spaces_queued_bucket_slots_at_the_lowered_rate() {
    // A bucket of 1,000 tokens per 10 s (burst 1,000); calls of 100 tokens queue 1 s apart.
    let mut spec = spec(vec![tokens_bucket(1000, 10 * S, 1000)]);
    spec.adaptive = true;
    let mut l = Ledger::new(&spec, 1);
    let booked = queue_calls(&mut l, &spec, T0, 20, 100);
    assert_eq!(booked[11].1 - booked[10].1, S);
    let at = T0 + S / 2;
    let call = ReportCall {
        cooldowns: vec![CooldownOrder {
            dimension: Dimension::Requests,
            length: S,
            cause: CooldownCause {
                status_code: 429,
                source: "test".into(),
            },
        }],
        throttled: true,
        ..ReportCall::default()
    };
    let out = l.report(&spec, at, &call);
    assert!(out.adaptive_lowered);
    let moved: Vec<Micros> = booked
        .iter()
        .map(|(id, _)| l.slot_of(*id).unwrap())
        .collect();
    // At 0.7 of the rate a call of 100 tokens costs 143 tokens' time: 1.43 s apart.
    for pair in moved[11..].windows(2) {
        assert!(pair[1] - pair[0] >= 1_428_000, "{pair:?}");
    }
    assert!(moved.windows(2).all(|p| p[0] <= p[1]), "order kept");
}

#[test]
fn request_id_makes_acquire_idempotent() {
    let spec = spec(vec![requests(2, 60 * S)]);
    let mut l = Ledger::new(&spec, 7);
    let a = grant(
        l.acquire(&spec, T0, Cost::of_call(5, 0, 0), 0, Some("r1"))
            .unwrap(),
    );
    let b = grant(
        l.acquire(&spec, T0 + S, Cost::of_call(5, 0, 0), 0, Some("r1"))
            .unwrap(),
    );
    assert_eq!(a.lease_id, b.lease_id);
    assert_eq!(l.lease_count(), 1);
    assert_eq!(
        l.acquire(&spec, T0, Cost::of_call(6, 0, 0), 0, Some("r1")),
        Err(AcquireError::RequestIdReused("r1".into()))
    );
    grant(
        l.acquire(&spec, T0, Cost::of_call(5, 0, 0), 0, Some("r2"))
            .unwrap(),
    );
    assert!(matches!(
        l.acquire(&spec, T0, Cost::of_call(5, 0, 0), 0, Some("r3"))
            .unwrap(),
        Decision::Denied { .. }
    ));
}

#[test]
fn reported_usage_refunds_sliding_and_bucket_limits() {
    for limit in [
        tokens_window(1000, 60 * S),
        tokens_bucket(1000, 60 * S, 1000),
    ] {
        let spec = spec(vec![limit]);
        let mut l = Ledger::new(&spec, 1);
        let g = grant(
            l.acquire(&spec, T0, Cost::of_call(1000, 0, 0), 0, None)
                .unwrap(),
        );
        assert!(matches!(
            l.acquire(&spec, T0, Cost::of_call(500, 0, 0), 0, None)
                .unwrap(),
            Decision::Denied { .. }
        ));
        let out = report(
            &mut l,
            &spec,
            T0,
            Some(g.lease_id),
            Some([None, Some(400), None, None]),
            None,
            None,
        );
        assert!(out.usage_applied);
        let g2 = grant(
            l.acquire(&spec, T0, Cost::of_call(600, 0, 0), 0, None)
                .unwrap(),
        );
        assert_eq!(g2.wait, 0, "{:?}", spec.limits[0].algorithm);
        assert!(matches!(
            l.acquire(&spec, T0, Cost::of_call(1, 0, 0), 0, None)
                .unwrap(),
            Decision::Denied { .. }
        ));
    }
}

fn try_tokens(l: &mut Ledger, spec: &ServiceSpec, at: Micros, tokens: u64) -> bool {
    matches!(
        l.acquire(spec, at, Cost::of_call(tokens, 0, 0), 0, None)
            .unwrap(),
        Decision::Granted(_)
    )
}

#[test]
fn bucket_refund_never_frees_capacity_used_by_later_leases() {
    // One token per second, capacity 100.
    let spec = spec(vec![tokens_bucket(100, 100 * S, 100)]);
    let mut l = Ledger::new(&spec, 1);
    let first = grant(
        l.acquire(&spec, T0, Cost::of_call(100, 0, 0), 0, None)
            .unwrap(),
    );
    // 60 s later 60 tokens have refilled and a second lease takes them: the bucket is full.
    assert!(try_tokens(&mut l, &spec, T0 + 60 * S, 60));
    let out = report(
        &mut l,
        &spec,
        T0 + 60 * S,
        Some(first.lease_id),
        Some([None, Some(0), None, None]),
        None,
        None,
    );
    assert!(out.usage_applied);
    // The first lease used nothing, but the second's 60 tokens still hold the bucket: 40 free.
    assert!(try_tokens(&mut l, &spec, T0 + 60 * S, 40));
    assert!(!try_tokens(&mut l, &spec, T0 + 60 * S, 1));
}

#[test]
fn bucket_refund_applies_while_a_deep_bucket_still_holds_the_cost() {
    // One token per second with a burst of 100: a full bucket takes 100 s to drain, ten windows.
    let spec = spec(vec![tokens_bucket(10, 10 * S, 100)]);
    let mut l = Ledger::new(&spec, 1);
    let g = grant(
        l.acquire(&spec, T0, Cost::of_call(100, 0, 0), 0, None)
            .unwrap(),
    );
    let out = report(
        &mut l,
        &spec,
        T0 + 20 * S,
        Some(g.lease_id),
        Some([None, Some(0), None, None]),
        None,
        None,
    );
    assert!(out.usage_applied);
    assert!(try_tokens(&mut l, &spec, T0 + 20 * S, 100));
}

#[test]
fn reports_charge_extra_usage() {
    let spec = spec(vec![tokens_window(1000, 60 * S)]);
    let mut l = Ledger::new(&spec, 1);
    let g = grant(
        l.acquire(&spec, T0, Cost::of_call(100, 0, 0), 0, None)
            .unwrap(),
    );
    report(
        &mut l,
        &spec,
        T0,
        Some(g.lease_id),
        Some([None, Some(950), None, None]),
        None,
        None,
    );
    assert_eq!(l.snapshot(&spec, T0).limits[0].used, 950);
    assert!(matches!(
        l.acquire(&spec, T0, Cost::of_call(100, 0, 0), 0, None)
            .unwrap(),
        Decision::Denied { .. }
    ));
}

#[test]
fn unknown_and_foreign_leases_are_reported_not_applied() {
    let spec = spec(vec![tokens_window(1000, 60 * S)]);
    let mut l = Ledger::new(&spec, 1);
    let foreign = LeaseId { nonce: 2, seq: 0 };
    grant(
        l.acquire(&spec, T0, Cost::of_call(100, 0, 0), 0, None)
            .unwrap(),
    );
    let out = report(
        &mut l,
        &spec,
        T0,
        Some(foreign),
        Some([None, Some(1), None, None]),
        None,
        None,
    );
    assert!(!out.usage_applied && out.lease_unknown);
    let missing = LeaseId { nonce: 1, seq: 99 };
    let out = report(
        &mut l,
        &spec,
        T0,
        Some(missing),
        Some([None, Some(1), None, None]),
        None,
        None,
    );
    assert!(!out.usage_applied && out.lease_unknown);
}

#[test]
fn a_clock_stepping_back_frees_nothing() {
    let spec = spec(vec![requests(1, 10 * S)]);
    let mut l = Ledger::new(&spec, 1);
    grant(
        l.acquire(&spec, T0 + 5 * S, Cost::of_call(0, 0, 0), 0, None)
            .unwrap(),
    );
    let d = l
        .acquire(&spec, T0, Cost::of_call(0, 0, 0), 0, None)
        .unwrap();
    assert_eq!(
        d,
        Decision::Denied {
            retry_after: 10 * S,
            decider: Decider::Limit(0),
            scope: Scope::Shared,
        }
    );
}

#[test]
fn expired_leases_and_idle_state_are_dropped() {
    let spec = spec(vec![
        requests(1000, 10 * S),
        tokens_bucket(100, 10 * S, 100),
    ]);
    let mut l = Ledger::new(&spec, 1);
    for k in 0..500 {
        grant(
            l.acquire(&spec, T0, Cost::of_call(0, 0, 0), 0, Some(&format!("r{k}")))
                .unwrap(),
        );
    }
    assert_eq!(l.lease_count(), 500);
    assert!(!l.compact(&spec, T0 + 9 * S));
    assert!(l.compact(&spec, T0 + 10 * S));
    assert_eq!(l.lease_count(), 0);
    // A replayed request id after expiry is a new request.
    let g = grant(
        l.acquire(&spec, T0 + 10 * S, Cost::of_call(0, 0, 0), 0, Some("r1"))
            .unwrap(),
    );
    assert_eq!(g.lease_id.seq, 500);
}

#[test]
fn a_full_lease_log_sheds_acquires_but_keeps_replays() {
    let spec = spec(vec![tokens_window(1000, 86_400 * S)]);
    let mut l = Ledger::new(&spec, 1).with_max_leases(10);
    for k in 0..10 {
        grant(
            l.acquire(&spec, T0, Cost::of_call(0, 0, 0), 0, Some(&format!("r{k}")))
                .unwrap(),
        );
    }
    assert_eq!(
        l.acquire(&spec, T0, Cost::of_call(0, 0, 0), 0, None),
        Err(AcquireError::Full)
    );
    // A retry of a granted request is still answered.
    grant(
        l.acquire(&spec, T0, Cost::of_call(0, 0, 0), 0, Some("r3"))
            .unwrap(),
    );
    assert_eq!(l.lease_count(), 10);
}

// ---- properties ----

#[derive(Clone, Debug)]
enum Op {
    Acquire { tokens: u64, max_wait: Micros },
    Advance(Micros),
    Refund { back: usize, fraction: u8 },
    Cooldown(Micros),
}

fn ranked(
    l: &mut Ledger,
    spec: &ServiceSpec,
    at: Micros,
    rid: &str,
    class: Class,
    max_wait: Micros,
) -> Decision {
    l.acquire_in_class(spec, at, Cost::of_call(1, 0, 0), max_wait, Some(rid), class)
        .unwrap()
}

#[test]
fn a_higher_class_is_booked_ahead_of_queued_lower_ones_within_their_share() {
    let spec = spec(vec![requests(1, S)]);
    let mut l = Ledger::new(&spec, 1);
    let batch = Class::with_min_share(2, 0.5); // each batch lease may be overtaken once
    let interactive = Class::TOP;
    for (i, rid) in ["a", "b", "c"].iter().enumerate() {
        assert_eq!(
            grant(ranked(&mut l, &spec, T0, rid, batch, 10 * S)).wait,
            i as u64 * S
        );
    }
    let b_before = grant(ranked(&mut l, &spec, T0, "b", batch, 10 * S)).lease_id;
    // An interactive call goes ahead of the queued batch calls b and c (a has started).
    let i1 = grant(ranked(&mut l, &spec, T0, "i1", interactive, 10 * S));
    assert_eq!(i1.wait, S);
    assert_eq!(l.slot_of_request("b"), Some(T0 + 2 * S));
    assert_eq!(l.slot_of_request("c"), Some(T0 + 3 * S));
    // b's old lease id names nothing now (a retry with its request id learns the new one).
    assert_eq!(l.slot_of(b_before), None);
    let b_after = grant(ranked(&mut l, &spec, T0, "b", batch, 10 * S));
    assert_eq!((b_after.slot, b_after.wait), (T0 + 2 * S, 2 * S));
    // Their share is spent: the next interactive call queues behind them.
    assert_eq!(
        grant(ranked(&mut l, &spec, T0, "i2", interactive, 10 * S)).wait,
        4 * S
    );
    // A batch call never overtakes a batch call; an interactive one never an interactive one.
    assert_eq!(
        grant(ranked(&mut l, &spec, T0, "d", batch, 10 * S)).wait,
        5 * S
    );
    assert_eq!(
        grant(ranked(&mut l, &spec, T0, "i3", interactive, 10 * S)).wait,
        5 * S
    );
    assert_eq!(l.slot_of_request("d"), Some(T0 + 6 * S));
    // A call that would wait too long even ahead of them changes nothing.
    assert!(matches!(
        ranked(&mut l, &spec, T0, "i4", interactive, S),
        Decision::Denied { .. }
    ));
    assert_eq!(l.slot_of_request("d"), Some(T0 + 6 * S));
}

#[test]
fn with_calls_in_flight_a_higher_class_overtakes_only_into_a_free_slot() {
    let batch = Class::with_min_share(2, 0.1);
    for (amount, overtakes) in [(2, false), (3, true)] {
        let spec = spec(vec![LimitSpec::concurrent(amount, 60 * S), requests(1, S)]);
        let mut l = Ledger::new(&spec, 1);
        grant(ranked(&mut l, &spec, T0, "a", batch, 10 * S));
        assert_eq!(grant(ranked(&mut l, &spec, T0, "b", batch, 10 * S)).wait, S);
        match ranked(&mut l, &spec, T0, "i", Class::TOP, 10 * S) {
            Decision::Granted(g) => {
                assert!(overtakes, "amount {amount}: overtook with every slot held");
                assert_eq!(g.wait, S);
                assert_eq!(l.slot_of_request("b"), Some(T0 + 2 * S));
            }
            Decision::Denied { .. } => {
                assert!(!overtakes, "amount {amount}: a free slot, yet no overtake");
                assert_eq!(l.slot_of_request("b"), Some(T0 + S));
            }
        }
        // However it went, never more holds than slots.
        assert!(l.snapshot(&spec, T0).limits[0].used <= amount);
    }
}

#[derive(Clone, Debug)]
enum InFlight {
    Acquire(Micros),
    Advance(Micros),
    Report(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u64..=60, prop_oneof![Just(0), 0..30 * S]).prop_map(|(tokens, max_wait)| Op::Acquire { tokens, max_wait }),
        2 => (0..4 * S).prop_map(Op::Advance),
        1 => (0usize..8, 0u8..=100).prop_map(|(back, fraction)| Op::Refund { back, fraction }),
        1 => (1..20 * S).prop_map(Op::Cooldown),
    ]
}

pub(super) fn limit_strategy() -> impl Strategy<Value = LimitSpec> {
    (any::<bool>(), 60u64..=200, 1u64..=20, 1u64..=3).prop_map(|(bucket, amount, secs, dim)| {
        let dimension = if dim == 1 {
            Dimension::Requests
        } else {
            Dimension::Tokens
        };
        let amount = if dimension == Dimension::Requests {
            amount / 10
        } else {
            amount
        };
        let algorithm = if bucket {
            Algorithm::TokenBucket {
                burst: (amount / 2).max(60),
            }
        } else {
            Algorithm::SlidingWindow
        };
        LimitSpec::new(dimension, amount, secs * S, algorithm)
    })
}

/// Checks the window invariants over the final cost of every grant.
fn check_invariants(spec: &ServiceSpec, grants: &[(Micros, Cost)]) -> Result<(), TestCaseError> {
    for pair in grants.windows(2) {
        prop_assert!(pair[0].0 <= pair[1].0, "grants out of arrival order");
    }
    for limit in &spec.limits {
        let cost = |c: &Cost| u128::from(c.get(limit.dimension));
        for (i, (start, _)) in grants.iter().enumerate() {
            match limit.algorithm {
                Algorithm::SlidingWindow => {
                    let sum: u128 = grants[i..]
                        .iter()
                        .take_while(|(s, _)| *s < start + limit.window)
                        .map(|(_, c)| cost(c))
                        .sum();
                    prop_assert!(
                        sum <= u128::from(limit.amount),
                        "{}: {sum} in a window",
                        limit.name
                    );
                }
                Algorithm::TokenBucket { burst } => {
                    let mut sum = 0u128;
                    for (s, c) in &grants[i..] {
                        sum += cost(c);
                        // granted in [start, s] ≤ burst + rate × (s − start)
                        let bound = u128::from(burst) * u128::from(limit.window)
                            + u128::from(limit.amount) * u128::from(s - start);
                        prop_assert!(
                            sum * u128::from(limit.window) <= bound,
                            "{}: {sum} over bucket bound",
                            limit.name
                        );
                    }
                }
                // Checked by `calls_in_flight_never_exceed_the_concurrent_limit`.
                Algorithm::Concurrent => {}
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn grants_respect_every_limit_and_arrival_order(
        limits in prop::collection::vec(limit_strategy(), 1..=3),
        ops in prop::collection::vec(op(), 1..200),
    ) {
        let spec = spec(limits);
        let mut ledger = Ledger::new(&spec, 1);
        let mut now = T0;
        let mut grants: Vec<(Micros, Cost, LeaseId)> = Vec::new();
        for op in ops {
            match op {
                Op::Acquire { tokens, max_wait } => {
                    let cost = Cost::of_call(tokens, 0, 0);
                    if spec.check_fits(&cost).is_err() {
                        continue;
                    }
                    let before = ledger.clone();
                    match ledger.acquire(&spec, now, cost, max_wait, None).unwrap() {
                        Decision::Granted(g) => {
                            prop_assert!(g.slot >= now && g.wait <= max_wait);
                            prop_assert_eq!(g.slot - now, g.wait);
                            if g.wait > 0 {
                                // The slot is the earliest: one microsecond less is too early.
                                let mut probe = before.clone();
                                let earliest = matches!(
                                    probe.acquire(&spec, now, cost, g.wait - 1, None).unwrap(),
                                    Decision::Denied { retry_after, .. } if retry_after == g.wait
                                );
                                prop_assert!(earliest, "a slot before {} µs was free", g.wait);
                            }
                            grants.push((g.slot, cost, g.lease_id));
                        }
                        Decision::Denied { retry_after, .. } => {
                            prop_assert!(retry_after > max_wait);
                            // The hint is exact: asking again after it, without waiting, succeeds.
                            let mut probe = before;
                            let exact = matches!(
                                probe.acquire(&spec, now + retry_after, cost, 0, None).unwrap(),
                                Decision::Granted(_)
                            );
                            prop_assert!(exact, "no slot {} µs later", retry_after);
                        }
                    }
                }
                Op::Advance(d) => now += d,
                Op::Refund { back, fraction } => {
                    if let Some(i) = grants.len().checked_sub(back + 1) {
                        let old = grants[i].1.get(Dimension::Tokens);
                        let new = old * u64::from(fraction) / 100;
                        let out = report(&mut ledger, &spec, now, Some(grants[i].2), Some([None, Some(new), None, None]), None, None);
                        if out.usage_applied {
                            grants[i].1 .0[1] = new;
                        }
                    }
                }
                Op::Cooldown(length) => {
                    let cause = CooldownCause { status_code: 429, source: "test".into() };
                    let until = now + length;
                    report(&mut ledger, &spec, now, None, None, Some(Cooldown { until, cause }), None);
                    // Queued slots moved past the cooldown; the grants' times are where they are now.
                    for g in &mut grants {
                        if let Some(slot) = ledger.slot_of(g.2) {
                            prop_assert!(slot >= g.0, "a deferred slot moved earlier");
                            g.0 = slot;
                        }
                        prop_assert!(g.0 <= now || g.0 >= until, "slot {} inside the cooldown", g.0);
                    }
                }
            }
        }
        let grants: Vec<(Micros, Cost)> = grants.into_iter().map(|(s, c, _)| (s, c)).collect();
        check_invariants(&spec, &grants)?;
    }

    #[test]
    fn calls_in_flight_never_exceed_the_concurrent_limit(
        amount in 1u64..=4,
        timeout in (2u64..=20).prop_map(|s| s * S),
        ops in prop::collection::vec(prop_oneof![
            3 => prop_oneof![Just(0), 0..30 * S].prop_map(InFlight::Acquire),
            2 => (0..4 * S).prop_map(InFlight::Advance),
            2 => (0usize..6).prop_map(InFlight::Report),
        ], 1..200),
    ) {
        let spec = spec(vec![LimitSpec::concurrent(amount, timeout), requests(20, 10 * S)]);
        let mut ledger = Ledger::new(&spec, 1);
        let mut now = T0;
        // (start, end, lease) of every granted call: end is the timeout until a report ends it.
        let mut holds: Vec<(Micros, Micros, LeaseId)> = Vec::new();
        for op in ops {
            match op {
                InFlight::Acquire(max_wait) => {
                    let cost = Cost::of_call(0, 0, 0);
                    let before = ledger.clone();
                    match ledger.acquire(&spec, now, cost, max_wait, None).unwrap() {
                        Decision::Granted(g) => {
                            if g.wait > 0 {
                                let mut probe = before;
                                let later = matches!(
                                    probe.acquire(&spec, now, cost, g.wait - 1, None).unwrap(),
                                    Decision::Denied { retry_after, .. } if retry_after == g.wait
                                );
                                prop_assert!(later, "a slot before {} µs was free", g.wait);
                            }
                            holds.push((g.slot, g.slot + timeout, g.lease_id));
                        }
                        // A full in-flight limit denies whatever the wait: only a timeout would free
                        // a slot, and a report may come sooner.
                        Decision::Denied { retry_after, decider, .. } => prop_assert!(
                            retry_after > max_wait || decider == Decider::Limit(0),
                            "denied within max_wait by {:?}", decider
                        ),
                    }
                }
                InFlight::Advance(d) => now += d,
                InFlight::Report(back) => {
                    if let Some(i) = holds.len().checked_sub(back + 1) {
                        let (start, end, lease) = holds[i];
                        let out = report(&mut ledger, &spec, now, Some(lease), None, None, None);
                        // Only a slot still held is released: not twice, not after its timeout.
                        prop_assert_eq!(out.released, end > now && end > start, "report of {:?}", lease);
                        if out.released {
                            holds[i].1 = now.max(start);
                        }
                    }
                }
            }
        }
        for &(t, _, _) in &holds {
            let covering = holds.iter().filter(|&&(s, e, _)| s <= t && t < e).count() as u64;
            prop_assert!(covering <= amount, "{covering} calls in flight at {t}");
        }
    }

    #[test]
    fn a_family_never_exceeds_its_parents_limits_nor_its_own(
        parent_limit in limit_strategy(),
        child_limits in prop::collection::vec(limit_strategy(), 2),
        ops in prop::collection::vec(prop_oneof![
            3 => (0usize..3, 1u64..=60, prop_oneof![Just(0), 0..30 * S])
                .prop_map(|(who, tokens, max_wait)| Some((who, tokens, max_wait))),
            1 => Just(None),
        ], 1..150),
        steps in prop::collection::vec(0..3 * S, 150),
    ) {
        // Service 0 is the parent of services 1 and 2.
        let mut specs: Vec<ServiceSpec> = std::iter::once(parent_limit)
            .chain(child_limits)
            .map(|l| spec(vec![l]))
            .collect();
        for (i, s) in specs.iter_mut().enumerate() {
            s.family = Some("parent".into());
            if i > 0 {
                s.parent = Some("parent".into());
            }
        }
        let mut ledgers: Vec<Ledger> = (0..3).map(|i| Ledger::new(&specs[i], i as u64)).collect();
        let mut grants: Vec<Vec<(Micros, Cost)>> = vec![Vec::new(); 3];
        let mut now = T0;
        for (op, step) in ops.into_iter().zip(steps) {
            let Some((who, tokens, max_wait)) = op else {
                now += step;
                continue;
            };
            let cost = Cost::of_call(tokens, 0, 0);
            let chain: Vec<usize> = if who == 0 { vec![0] } else { vec![who, 0] };
            if chain.iter().any(|&i| specs[i].check_fits(&cost).is_err()) {
                continue;
            }
            let (parent, children) = ledgers.split_first_mut().unwrap();
            let mut members = match who {
                0 => vec![Member { spec: &specs[0], ledger: parent }],
                w => vec![
                    Member { spec: &specs[w], ledger: &mut children[w - 1] },
                    Member { spec: &specs[0], ledger: parent },
                ],
            };
            if let Decision::Granted(g) = acquire_in_family(&mut members, now, cost, max_wait, None).unwrap() {
                prop_assert!(g.wait <= max_wait);
                for &i in &chain {
                    grants[i].push((g.slot, cost));
                }
            }
        }
        // Each child keeps its own arrival order. The parent's log may hold a child's call behind
        // a sibling's call that the sibling's own limit queued (arrival order is per ledger, not
        // across the family): its limits must hold over the slots in time order.
        grants[0].sort_by_key(|&(slot, _)| slot);
        for (i, g) in grants.iter().enumerate() {
            check_invariants(&specs[i], g)?;
        }
    }

    #[test]
    fn classes_keep_every_limit_their_order_and_their_share(
        limits in prop::collection::vec(limit_strategy(), 1..=2),
        ops in prop::collection::vec(prop_oneof![
            3 => (0u8..3, 1u64..=60, prop_oneof![Just(0), 0..30 * S])
                .prop_map(|(rank, tokens, max_wait)| Some((rank, tokens, max_wait))),
            1 => Just(None),
        ], 1..150),
        steps in prop::collection::vec(0..2 * S, 150),
    ) {
        let spec = spec(limits);
        let classes = [Class::TOP, Class::with_min_share(1, 0.5), Class::with_min_share(2, 0.25)];
        let mut ledger = Ledger::new(&spec, 1);
        let mut now = T0;
        // (request id, rank, cost, slot, times moved later)
        let mut grants: Vec<(String, u8, Cost, Micros, u16)> = Vec::new();
        for (n, (op, step)) in ops.into_iter().zip(steps).enumerate() {
            let Some((rank, tokens, max_wait)) = op else {
                now += step;
                continue;
            };
            let cost = Cost::of_call(tokens, 0, 0);
            if spec.check_fits(&cost).is_err() {
                continue;
            }
            let rid = format!("r{n}");
            let class = classes[usize::from(rank)];
            let decision = ledger.acquire_in_class(&spec, now, cost, max_wait, Some(&rid), class).unwrap();
            // Every earlier grant is where it was, or later (never before now).
            for g in &mut grants {
                let slot = ledger.slot_of_request(&g.0).unwrap_or(g.3);
                prop_assert!(slot >= g.3, "{} moved earlier", g.0);
                if slot > g.3 {
                    prop_assert!(g.1 > rank, "{} (rank {}) moved by rank {}", g.0, g.1, rank);
                    g.4 += 1;
                    g.3 = slot;
                }
            }
            if let Decision::Granted(g) = decision {
                prop_assert!(g.wait <= max_wait);
                grants.push((rid, rank, cost, g.slot, 0));
            }
        }
        for g in &grants {
            let max = classes[usize::from(g.1)].max_overtakes;
            prop_assert!(g.4 <= max, "{} overtaken {} times (at most {})", g.0, g.4, max);
        }
        // Within a class, arrival order holds.
        for rank in 0..3u8 {
            let slots: Vec<Micros> = grants.iter().filter(|g| g.1 == rank).map(|g| g.3).collect();
            prop_assert!(slots.windows(2).all(|w| w[0] <= w[1]), "class {} out of order", rank);
        }
        let mut by_slot: Vec<(Micros, Cost)> = grants.iter().map(|g| (g.3, g.2)).collect();
        by_slot.sort_by_key(|g| g.0);
        check_invariants(&spec, &by_slot)?;
    }

    #[test]
    fn a_lone_request_is_granted_as_soon_as_it_fits(
        limit in limit_strategy(),
        tokens in 1u64..=60,
    ) {
        let spec = spec(vec![limit]);
        let mut ledger = Ledger::new(&spec, 1);
        let cost = Cost::of_call(tokens, 0, 0);
        prop_assume!(spec.check_fits(&cost).is_ok());
        let g = grant(ledger.acquire(&spec, T0, cost, 0, None).unwrap());
        prop_assert_eq!(g.wait, 0);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// After a report lowers a sliding window's budget, the queued calls keep their ids and
    /// order, never move earlier nor into the cooldown, and every window ending at one of them
    /// holds at most the lowered amount (the calls already started count too).
    #[test]
    fn a_lowered_budget_keeps_every_queued_window_within_it(
        amount in 2u64..=12,
        window_s in 1u64..=10,
        calls in prop::collection::vec((0u64..=3, 0u64..=2_000_000), 1..60),
        report_after in 0u64..=5_000_000,
        cooldown in 0u64..=10_000_000,
        lower_to in 1u64..=11,
    ) {
        let lower_to = lower_to.min(amount - 1);
        let window = window_s * S;
        let mut spec = spec(vec![requests(amount, window), tokens_window(amount * 10, window)]);
        spec.adopt_provider_limits = true;
        let mut ledger = Ledger::new(&spec, 1);
        let mut now = T0;
        let mut booked: Vec<(LeaseId, Micros, Cost)> = Vec::new();
        for (tokens, gap) in calls {
            now += gap;
            let cost = Cost::of_call(tokens, 0, 0);
            if let Decision::Granted(g) = ledger.acquire(&spec, now, cost, 3600 * S, None).unwrap() {
                booked.push((g.lease_id, g.slot, cost));
            }
        }
        now += report_after;
        let call = ReportCall {
            cooldowns: vec![CooldownOrder {
                dimension: Dimension::Requests,
                length: cooldown,
                cause: CooldownCause { status_code: 429, source: "test".into() },
            }],
            adopt: vec![AdoptOrder { limit: 0, amount: lower_to, burst: lower_to }],
            ..ReportCall::default()
        };
        ledger.report(&spec, now, &call);
        let until = now + cooldown;
        let mut last = 0;
        let mut moved = Vec::new();
        for (id, old, cost) in &booked {
            let slot = ledger.slot_of(*id);
            prop_assert!(slot.is_some() || *old <= now, "a queued call lost its lease");
            let Some(slot) = slot else { continue };
            prop_assert!(slot >= *old, "moved earlier");
            prop_assert!(slot >= last, "order lost");
            prop_assert!(*old <= now || (slot >= until || cooldown == 0), "inside the cooldown");
            last = slot;
            moved.push((slot, *old > now, *cost));
        }
        for &(t, queued, _) in &moved {
            if !queued {
                continue;
            }
            let calls = moved.iter().filter(|m| m.0 + window > t && m.0 <= t).count() as u64;
            prop_assert!(calls <= lower_to, "{calls} calls in the window ending at {t}");
        }
    }
}

/// What the learned-budget property test does.
#[derive(Clone, Debug)]
enum Learn {
    Acquire {
        tokens: u64,
        max_wait: Micros,
    },
    Advance(Micros),
    /// A 429 (not a quota) with a cooldown of this length.
    Throttle(Micros),
    /// The provider names this token budget.
    Adopt(u64),
}

/// The schedule of a bucket's budget in force: when its adopted shape (amount, burst) and its
/// adaptive scale changed, replayed beside the ledger.
struct Schedule {
    /// (from, amount, burst), in time order.
    shapes: Vec<(Micros, u64, u64)>,
    /// (at, the adaptive state after the throttle), in time order.
    throttles: Vec<(Micros, adaptive::Adaptive)>,
    period: Micros,
}

impl Schedule {
    fn shape_at(&self, t: Micros) -> (u64, u64) {
        let i = self.shapes.partition_point(|s| s.0 <= t);
        let (_, amount, burst) = self.shapes[i.max(1) - 1];
        (amount, burst)
    }

    fn scale_at(&self, t: Micros) -> u32 {
        let i = self.throttles.partition_point(|s| s.0 <= t);
        match i.checked_sub(1) {
            Some(i) => self.throttles[i].1.scale_at(t, self.period),
            None => adaptive::FULL,
        }
    }

    /// Real tokens × 1000 × window that drain from the bucket over `[from, to)`.
    fn drained(&self, from: Micros, to: Micros) -> u128 {
        let mut cuts: Vec<Micros> = self.shapes.iter().map(|s| s.0).collect();
        for (at, a) in &self.throttles {
            cuts.push(*at);
            for k in 1..=a.periods_to_full() + 1 {
                cuts.push(at.saturating_add(k * self.period));
            }
        }
        cuts.retain(|&c| c > from && c < to);
        cuts.push(to);
        cuts.sort_unstable();
        let mut at = from;
        let mut sum = 0u128;
        for cut in cuts {
            let (amount, _) = self.shape_at(at);
            sum += u128::from(cut - at) * u128::from(amount) * u128::from(self.scale_at(at));
            at = cut;
        }
        sum
    }
}

fn learn_op() -> impl Strategy<Value = Learn> {
    prop_oneof![
        5 => (1u64..=60, prop_oneof![Just(0), 0..30 * S])
            .prop_map(|(tokens, max_wait)| Learn::Acquire { tokens, max_wait }),
        3 => (0..4 * S).prop_map(Learn::Advance),
        1 => (0..5 * S).prop_map(Learn::Throttle),
        1 => (20u64..=400).prop_map(Learn::Adopt),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// A token bucket under adopted and adaptive budgets never admits more than the budget in
    /// force: replaying the grants through an exact bucket of real tokens (its rate and burst
    /// those in force, scaled by the adaptive budget, what it holds carried over whole when
    /// either changes), every grant fits the burst it was booked under, and a queued call that a
    /// lowered burst left too large goes alone on an empty bucket. Throttles come when no slot
    /// is queued (with slots queued, what calls already started owe before the last slot keeps
    /// its old scale: documented); new calls above the burst in force are not made; a service
    /// forgotten while idle starts afresh. A sliding window of requests queues calls ahead of
    /// the bucket, so the bucket's TAT also holds time that owes nothing.
    #[test]
    fn adopted_and_adaptive_buckets_keep_the_budget_in_force(
        bucket in (60u64..=200, 1u64..=20, 50u64..=200),
        requests in (2u64..=20, 1u64..=20),
        ops in prop::collection::vec(learn_op(), 1..200),
    ) {
        learned_budgets_hold(bucket, requests, ops)?;
    }
}

/// See `adopted_and_adaptive_buckets_keep_the_budget_in_force`: a bucket of `amount` per `secs`
/// with a burst of `percent` of it (at least 60), a sliding window of requests, `ops`.
fn learned_budgets_hold(
    (amount, secs, percent): (u64, u64, u64),
    (requests_amount, requests_secs): (u64, u64),
    ops: Vec<Learn>,
) -> Result<(), TestCaseError> {
    let burst = (amount * percent / 100).max(60);
    let window = secs * S;
    let spec = ServiceSpec {
        adopt_provider_limits: true,
        adaptive: true,
        ..spec(vec![
            requests(requests_amount, requests_secs * S),
            tokens_bucket(amount, window, burst),
        ])
    };
    let mut ledger = Ledger::new(&spec, 1);
    let mut now = T0;
    let mut schedule = Schedule {
        shapes: vec![(0, amount, burst)],
        throttles: Vec::new(),
        period: spec.adaptive_period(),
    };
    let mut replay = adaptive::Adaptive::default();
    let mut cooldown_end = 0;
    let mut forgotten: Vec<Micros> = Vec::new();
    // (slot, lease, tokens, burst × scale it was booked under)
    let mut grants: Vec<(Micros, LeaseId, u64, u128)> = Vec::new();
    for op in ops {
        if ledger.is_stale(&spec, now) {
            // An idle service is forgotten, with what it learned: its configured budget starts
            // afresh. (A debt converted to a much lower adopted rate can outlive the retention
            // the service is kept for: forgotten with it.)
            forgotten.push(now);
            schedule.shapes.push((now, amount, burst));
            replay = adaptive::Adaptive::default();
            cooldown_end = 0;
            schedule.throttles.push((now, replay));
        }
        match op {
            Learn::Acquire { tokens, max_wait } => {
                let cost = Cost::of_call(tokens, 0, 0);
                let live = ledger.snapshot(&spec, now);
                if spec.check_fits(&cost).is_err() || tokens > live.limits[1].burst {
                    continue;
                }
                let scale = live.adaptive_scale;
                let (_, in_force) = schedule.shape_at(now);
                if let Decision::Granted(g) =
                    ledger.acquire(&spec, now, cost, max_wait, None).unwrap()
                {
                    let cap = u128::from(in_force) * u128::from(scale);
                    grants.push((g.slot, g.lease_id, tokens, cap));
                }
            }
            Learn::Advance(d) => now += d,
            Learn::Throttle(length) => {
                if ledger.snapshot(&spec, now).queued > 0 {
                    continue;
                }
                let call = ReportCall {
                    cooldowns: vec![CooldownOrder {
                        dimension: Dimension::Requests,
                        length,
                        cause: CooldownCause {
                            status_code: 429,
                            source: "429".into(),
                        },
                    }],
                    throttled: true,
                    ..ReportCall::default()
                };
                let out = ledger.report(&spec, now, &call);
                cooldown_end = cooldown_end.max(now + length);
                replay.throttle(now, cooldown_end.max(now), schedule.period);
                prop_assert_eq!(out.adaptive_scale, replay.scale_at(now, schedule.period));
                schedule.throttles.push((now, replay));
            }
            Learn::Adopt(to) => {
                let Ok(order) = AdoptOrder::new(1, &spec.limits[1], to) else {
                    continue;
                };
                let call = ReportCall {
                    adopt: vec![order],
                    ..ReportCall::default()
                };
                ledger.report(&spec, now, &call);
                let (from_amount, from_burst) = schedule.shape_at(now);
                if from_amount > order.amount || from_burst > order.burst {
                    // A lower budget: the queued calls are booked again under it (same ids, never
                    // earlier).
                    let cap = u128::from(order.burst)
                        * u128::from(ledger.snapshot(&spec, now).adaptive_scale);
                    for g in grants.iter_mut().filter(|g| g.0 > now) {
                        let slot = ledger.slot_of(g.1).unwrap();
                        prop_assert!(slot >= g.0, "a re-booked slot moved earlier");
                        (g.0, g.3) = (slot, cap);
                    }
                }
                if (from_amount, from_burst) != (order.amount, order.burst) {
                    schedule.shapes.push((now, order.amount, order.burst));
                }
                let shown = ledger.snapshot(&spec, now).limits[1].amount;
                prop_assert_eq!(
                    shown,
                    adaptive::scaled(order.amount, schedule.scale_at(now))
                );
            }
        }
    }
    // The exact bucket of real tokens, in tokens × 1000 × window.
    let w = u128::from(window);
    let mut level = 0u128;
    let mut at = grants.first().map_or(0, |g| g.0);
    let mut order: Vec<usize> = (0..grants.len()).collect();
    order.sort_by_key(|&i| (grants[i].0, grants[i].1.seq));
    for i in order {
        let (slot, _, tokens, cap) = grants[i];
        level = level.saturating_sub(schedule.drained(at, slot));
        if forgotten.iter().any(|&f| f > at && f <= slot) {
            level = 0;
        }
        at = slot;
        if u128::from(tokens) * 1000 > cap {
            // A queued call above a lowered burst goes alone: on an empty bucket.
            prop_assert_eq!(
                level,
                0,
                "a call above the burst went with others at {}",
                slot
            );
        }
        level += u128::from(tokens) * 1000 * w;
        prop_assert!(
            level <= cap.max(u128::from(tokens) * 1000) * w,
            "{} real tokens held at {} after a grant of {}, burst × scale {}",
            level as f64 / 1000.0 / w as f64,
            slot,
            tokens,
            cap
        );
    }
    Ok(())
}

/// A raise adopted while a call is queued behind time the bucket does not owe (the slot came
/// from the wait of a first call): the queued call's tokens must not start draining at the
/// higher rate before its slot (`BucketShape::convert` counts from the latest slot too).
#[test]
fn a_raised_budget_does_not_drain_a_queued_calls_tokens_early() {
    let ops = vec![
        Learn::Acquire {
            tokens: 27,
            max_wait: 0,
        },
        Learn::Adopt(34),
        Learn::Acquire {
            tokens: 22,
            max_wait: 1_235_295,
        },
        Learn::Adopt(44),
        Learn::Acquire {
            tokens: 16,
            max_wait: 1_272_728,
        },
        Learn::Acquire {
            tokens: 1,
            max_wait: 0,
        },
    ];
    let held = learned_budgets_hold((71, 2, 50), (3, 1), ops);
    assert!(held.is_ok(), "{held:?}");
}
