//! Limits: exact sliding windows, token buckets, in-flight slots, arrival order, denials that
//! write nothing, costs that can never fit, priority classes, independence of services, bounded
//! state, shadow mode.

use std::time::Duration;

use sluice_server::error::Error;

use crate::{suite::*, TestBackend};

const S: Duration = Duration::from_secs(1);

pub(crate) async fn sliding_window_counts_requests_exactly<B: TestBackend>() {
    let l = limiter::<B>(&["rpm"]).await;
    for _ in 0..3 {
        assert_eq!(granted(&l, &req("rpm", 0, Duration::ZERO)).await.1, 0);
        l.backend().advance(S).await;
    }
    // 3 granted at t = 0, 1, 2 s; now t = 3 s: the first leaves the window at 10 s.
    assert_eq!(denied(&l, &req("rpm", 0, Duration::ZERO)).await, 7_000_000);
    let (_, wait) = granted(&l, &req("rpm", 0, 10 * S)).await;
    assert_eq!(wait, 7_000_000);
}

pub(crate) async fn in_flight_slots_are_held_until_reported<B: TestBackend>() {
    let l = limiter::<B>(&["inflight"]).await;
    let (a, _) = granted(&l, &req("inflight", 0, Duration::ZERO)).await;
    let (b, _) = granted(&l, &req("inflight", 0, Duration::ZERO)).await;
    // Both slots held: the earliest frees itself at its lease timeout.
    assert_eq!(
        denied(&l, &req("inflight", 0, Duration::ZERO)).await,
        30_000_000
    );
    let status = l.status("inflight").await.expect("status");
    assert_eq!(status.snapshot.limits[0].used, 2);
    assert_eq!(status.snapshot.limits[0].remaining, 0);
    assert!(released(&l, "inflight", &a, 200).await);
    assert_eq!(granted(&l, &req("inflight", 0, Duration::ZERO)).await.1, 0);
    denied(&l, &req("inflight", 0, Duration::ZERO)).await;
    // A call abandoned without an answer (status 0) gives its slot back too.
    assert!(released(&l, "inflight", &b, 0).await);
    assert_eq!(granted(&l, &req("inflight", 0, Duration::ZERO)).await.1, 0);
    // The requests limit saw every grant; the concurrent limit only holds.
    let status = l.status("inflight").await.expect("status");
    assert_eq!(status.snapshot.limits[1].used, 4);
    assert_eq!(status.snapshot.limits[0].used, 2);
}

pub(crate) async fn a_crashed_workers_slot_frees_itself_at_the_lease_timeout<B: TestBackend>() {
    let l = limiter::<B>(&["inflight"]).await;
    granted(&l, &req("inflight", 0, Duration::ZERO)).await;
    granted(&l, &req("inflight", 0, Duration::ZERO)).await;
    // Neither worker ever reports. 10 s later, a worker that would wait is not booked on
    // their timeouts (a report may come sooner): denied, with the timeout as the bound.
    l.backend().advance(10 * S).await;
    assert_eq!(denied(&l, &req("inflight", 0, 60 * S)).await, 20_000_000);
    l.backend().advance(19 * S).await;
    denied(&l, &req("inflight", 0, 60 * S)).await;
    // At the timeout both slots are free again.
    l.backend().advance(S).await;
    granted(&l, &req("inflight", 0, Duration::ZERO)).await;
    granted(&l, &req("inflight", 0, Duration::ZERO)).await;
    let status = l.status("inflight").await.expect("status");
    assert_eq!(status.snapshot.limits[0].used, 2);
}

pub(crate) async fn token_costs_are_reserved_in_arrival_order<B: TestBackend>() {
    let l = limiter::<B>(&["tpm"]).await;
    granted(&l, &req("tpm", 800, Duration::ZERO)).await;
    let (_, big) = granted(&l, &req("tpm", 1000, 120 * S)).await;
    assert_eq!(big, 60_000_000);
    // A small request that would fit now waits behind the big one.
    let (_, small) = granted(&l, &req("tpm", 10, 300 * S)).await;
    assert!(small >= big, "small {small} < big {big}");
}

pub(crate) async fn denials_record_nothing<B: TestBackend>() {
    let l = limiter::<B>(&["tpm", "learning"]).await;
    granted(&l, &req("tpm", 1000, Duration::ZERO)).await;
    for _ in 0..50 {
        denied(&l, &req("tpm", 1, Duration::ZERO)).await;
    }
    let status = l.status("tpm").await.expect("status");
    assert_eq!(status.snapshot.limits[0].used, 1, "requests counted");
    assert_eq!(status.snapshot.limits[1].used, 1000);

    // A service that adopts the provider's budget and adapts to its 429s, both in force.
    l.report(report(
        "learning",
        "",
        200,
        &[
            ("x-ratelimit-limit-requests", "50"),
            ("x-ratelimit-limit-tokens", "600"),
        ],
    ))
    .await
    .expect("report");
    l.report(report("learning", "", 429, &[]))
        .await
        .expect("report");
    l.backend().advance(S).await;
    // Burst 300 of the adopted 600 (half, as configured), 210 at 70 %: spent, one queued.
    granted(&l, &req("learning", 210, Duration::ZERO)).await;
    let (_, wait) = granted(&l, &req("learning", 100, 30 * S)).await;
    assert!(wait > 0, "the second call waits");
    let before = l.status("learning").await.expect("status");
    let held = l.backend().held_leases(&before.spec).await;
    assert_eq!(before.snapshot.adaptive_scale, 700);
    assert_eq!(
        (
            before.snapshot.limits[0].amount,
            before.snapshot.limits[1].amount
        ),
        (35, 420)
    );
    for max_wait in [Duration::ZERO, S, 10 * S] {
        for _ in 0..20 {
            denied(&l, &req("learning", 200, max_wait)).await;
        }
    }
    let after = l.status("learning").await.expect("status");
    assert_eq!(after.snapshot, before.snapshot, "denials changed the state");
    assert_eq!(l.backend().held_leases(&after.spec).await, held);
    // Nor did they restart the quiet period: a minute after the 429 the budget recovers.
    l.backend().advance(59 * S).await;
    let later = l.status("learning").await.expect("status");
    assert_eq!(later.snapshot.adaptive_scale, 850);
}

pub(crate) async fn token_bucket_allows_burst_then_refills<B: TestBackend>() {
    let l = limiter::<B>(&["bucket"]).await;
    granted(&l, &req("bucket", 100, Duration::ZERO)).await;
    // 10 tokens per second.
    assert_eq!(
        denied(&l, &req("bucket", 50, Duration::ZERO)).await,
        5_000_000
    );
    l.backend().advance(5 * S).await;
    assert_eq!(granted(&l, &req("bucket", 50, Duration::ZERO)).await.1, 0);
}

pub(crate) async fn costs_that_never_fit_are_refused_naming_the_limit<B: TestBackend>() {
    let l = limiter::<B>(&["bucket", "split"]).await;
    let r = l.acquire(&req("bucket", 101, 60 * S)).await;
    assert!(is(
        r.map(|_| ()),
        |e| matches!(e, Error::NeverFits(n) if n.limit == "tokens/1m")
    ));
    let mut split = req("split", 0, 60 * S);
    split.output_tokens = 51;
    let r = l.acquire(&split).await;
    assert!(is(
        r.map(|_| ()),
        |e| matches!(e, Error::NeverFits(n) if n.limit == "output_tokens/1m")
    ));
}

pub(crate) async fn interactive_calls_are_booked_ahead_of_queued_batch_calls<B: TestBackend>() {
    let l = limiter::<B>(&["rpm"]).await;
    let call = |priority: &str, id: &str| {
        let mut r = req("rpm", 0, 60 * S);
        r.priority = priority.into();
        r.request_id = id.into();
        r
    };
    // rpm: 3 per 10 s. Three batch calls now, three queued for 10 s later.
    for i in 0..6 {
        let (_, wait) = granted(&l, &call("batch", &format!("b{i}"))).await;
        assert_eq!(wait, if i < 3 { 0 } else { 10 * US });
    }
    // An interactive call takes the first queued slot; the queued batch calls move back
    // in their order (a worker learns its new slot by asking again with its request id).
    assert_eq!(granted(&l, &call("interactive", "i0")).await.1, 10 * US);
    let mut waits = Vec::new();
    for id in ["b3", "b4", "b5"] {
        waits.push(granted(&l, &call("batch", id)).await.1);
    }
    assert_eq!(waits, [10 * US, 10 * US, 20 * US]);
    // A default call goes ahead of batch calls too.
    assert_eq!(granted(&l, &call("default", "d0")).await.1, 10 * US);
    waits.clear();
    for id in ["b3", "b4", "b5"] {
        waits.push(granted(&l, &call("batch", id)).await.1);
    }
    assert_eq!(waits, [10 * US, 20 * US, 20 * US]);
    // An interactive call goes ahead of both, but never of an interactive one.
    assert_eq!(granted(&l, &call("interactive", "i1")).await.1, 10 * US);
    assert_eq!(granted(&l, &call("default", "d0")).await.1, 10 * US);
    assert_eq!(granted(&l, &call("batch", "b3")).await.1, 20 * US);
    assert!(is(
        l.acquire(&call("urgent", "u0")).await,
        |e| matches!(e, Error::InvalidArgument(m) if m.contains("priority"))
    ));
    // Leases moved back count once, however often: six batch calls, two interactive, one
    // default (on Redis, leases an overtake took out leave tombstones that are not leases).
    let spec = l.service("rpm").expect("rpm is configured").spec.clone();
    assert_eq!(l.backend().held_leases(&spec).await, 9);
    l.backend().advance(60 * S).await;
    l.backend().maintain().await;
    assert_eq!(l.backend().held_leases(&spec).await, 0);
}

pub(crate) async fn services_are_independent<B: TestBackend>() {
    let l = limiter::<B>(&["rpm", "tpm"]).await;
    l.report(report("tpm", "", 429, &[("retry-after", "60")]))
        .await
        .expect("report");
    assert_eq!(granted(&l, &req("rpm", 0, Duration::ZERO)).await.1, 0);
}

pub(crate) async fn expired_leases_are_dropped_and_idle_services_shrink<B: TestBackend>() {
    let l = limiter::<B>(&["rpm"]).await;
    let spec = l.service("rpm").expect("rpm is configured").spec.clone();
    for _ in 0..3 {
        granted(&l, &req("rpm", 0, Duration::ZERO)).await;
    }
    assert_eq!(l.backend().held_leases(&spec).await, 3);
    l.backend().advance(10 * S).await;
    l.backend().maintain().await;
    assert_eq!(l.backend().held_leases(&spec).await, 0);
    let status = l.status("rpm").await.expect("status");
    assert_eq!(status.snapshot.limits[0].used, 0);
    assert_eq!(status.snapshot.queued, 0);
    for _ in 0..3 {
        granted(&l, &req("rpm", 0, Duration::ZERO)).await;
    }
}

pub(crate) async fn a_shadow_service_grants_every_call_at_once_and_books_what_it_decided<
    B: TestBackend,
>() {
    use sluice_server::core::Decision;
    let l = limiter::<B>(&["shadow"]).await;
    let decide = |max_wait: Duration| {
        let l = &l;
        async move {
            let (_, answer) = l.decide(&req("shadow", 0, max_wait)).await.expect("decide");
            match &answer.decision {
                Decision::Granted(g) => assert_eq!(g.wait, 0, "a shadow call waits for nothing"),
                d => panic!("a shadow call was refused: {d:?}"),
            }
            answer.shadow.expect("the decision that was made")
        }
    };
    // Three calls fit now; two more, allowed to wait, are booked 10 s out, as enforced.
    let mut waits = Vec::new();
    for _ in 0..5 {
        match decide(60 * S).await {
            Decision::Granted(g) => waits.push(g.wait),
            d => panic!("expected a grant, got {d:?}"),
        }
    }
    assert_eq!(waits, [0, 0, 0, 10 * US, 10 * US]);
    let status = l.status("shadow").await.expect("status");
    assert_eq!(
        (status.snapshot.limits[0].used, status.snapshot.queued),
        (5, 2)
    );

    // One that may not wait would have been refused: it goes anyway, on lease 0, booking nothing.
    let (_, answer) = l
        .decide(&req("shadow", 0, Duration::ZERO))
        .await
        .expect("decide");
    let Decision::Granted(g) = &answer.decision else {
        panic!("refused: {answer:?}")
    };
    assert_eq!((g.lease_id.nonce, g.lease_id.seq), (0, 0));
    assert!(matches!(answer.shadow, Some(Decision::Denied { .. })));
    assert_eq!(
        l.status("shadow").await.expect("status").snapshot.limits[0].used,
        5
    );

    // Its report still applies the provider's cooldown, so later decisions show it.
    let lease = g.lease_id.to_string();
    l.report(report("shadow", &lease, 429, &[("retry-after", "30")]))
        .await
        .expect("report");
    match decide(Duration::ZERO).await {
        Decision::Denied { retry_after, .. } => assert_eq!(retry_after, 30 * US),
        d => panic!("expected the cooldown's denial, got {d:?}"),
    }
    // Through Limiter::acquire (what a shadow decision is made of) the same call is refused.
    denied(&l, &req("shadow", 0, Duration::ZERO)).await;

    // Enforced by a reload, the service keeps its state, and the same call is refused.
    let enforced = services(&["shadow"]).replace("mode = \"shadow\"\n", "");
    let summary = reload(&l, &enforced).await.expect("reload");
    assert_eq!(summary.changed, ["shadow"]);
    assert_eq!(
        l.status("shadow").await.expect("status").snapshot.limits[0].used,
        5
    );
    let (_, answer) = l
        .decide(&req("shadow", 0, Duration::ZERO))
        .await
        .expect("decide");
    assert!(answer.shadow.is_none(), "{answer:?}");
    assert!(
        matches!(answer.decision, Decision::Denied { .. }),
        "{answer:?}"
    );
}
