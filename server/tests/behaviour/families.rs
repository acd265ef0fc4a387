//! Behaviour of families and replays that an outside test of main found wrong (issue 22),
//! instantiated per backend by the per-backend macro in `main.rs`: a member's queue never stalls its siblings,
//! every denial names what decided it, a retried job is a new call through its ancestors'
//! in-flight limits, lease ids never repeat for a service, and numbers near 2^53 are refused up
//! front alike on every backend.

use std::time::Duration;

use sluice_server::{
    config::Config,
    core::{Decider, Decision},
    error::Error,
    limiter::UsageReport,
};

use crate::{suite::*, TestBackend};

/// The family of the outside test: a parent over a small model and a large one.
pub const FAMILY: &str = r#"
[[services]]
name = "openai"
limits = [{ dimension = "tokens", amount = 100000, window = "10s" }]

[[services]]
name = "openai/gpt-4o"
parent = "openai"
profile = "openai"
limits = [
  { dimension = "requests", amount = 100, window = "10s" },
  { dimension = "tokens", amount = 1000, window = "10s" },
]

[[services]]
name = "openai/gpt-4o-mini"
parent = "openai"
profile = "openai"
limits = [{ dimension = "tokens", amount = 100000, window = "10s" }]

[[services]]
name = "org"
limits = [
  { dimension = "concurrent", amount = 1, timeout = "1m" },
  { dimension = "requests", amount = 100, window = "1m" },
]

[[services]]
name = "org/m"
parent = "org"
limits = [{ dimension = "requests", amount = 100, window = "1m" }]

[[services]]
name = "solo"
limits = [
  { dimension = "concurrent", amount = 1, timeout = "1m" },
  { dimension = "requests", amount = 100, window = "1m" },
]

[[services]]
name = "huge"
limits = [{ dimension = "tokens", amount = 1125899906842624, window = "1s" }]
"#;

const S: Duration = Duration::from_secs(1);

/// The decider of a denial; panics on a grant.
async fn denial<B: TestBackend>(
    l: &sluice_server::limiter::Limiter<B>,
    r: &sluice_server::limiter::AcquireRequest,
) -> (u64, Decider) {
    match l.acquire(r).await.expect("acquire").1 {
        Decision::Denied {
            retry_after,
            decider,
            ..
        } => (retry_after, decider),
        d => panic!("expected a denial, got {d:?}"),
    }
}

pub(crate) async fn a_members_queue_never_stalls_its_siblings<B: TestBackend>() {
    let l = limiter_for::<B>(&services_of(
        FAMILY,
        &["openai", "openai/gpt-4o", "openai/gpt-4o-mini"],
    ))
    .await;
    granted(&l, &req("openai/gpt-4o", 1000, Duration::ZERO)).await;
    // gpt-4o's own limit queues its next call 10 s ahead, in the parent too.
    let (_, wait) = granted(&l, &req("openai/gpt-4o", 1000, 30 * S)).await;
    assert_eq!(wait, 10 * US);
    // The parent has 98,000 tokens left: mini is not held back by gpt-4o's queue.
    let (_, wait) = granted(&l, &req("openai/gpt-4o-mini", 10, Duration::ZERO)).await;
    assert_eq!(wait, 0);
    let (_, wait) = granted(&l, &req("openai/gpt-4o-mini", 10, 30 * S)).await;
    assert_eq!(wait, 0);
    // gpt-4o itself still waits in arrival order, behind its own queue.
    // (until its second call leaves its window).
    let (after, decider) = denial(&l, &req("openai/gpt-4o", 1, Duration::ZERO)).await;
    assert_eq!(after, 20 * US);
    assert_eq!(
        decider,
        Decider::Limit(1),
        "its own tokens limit queued the slot"
    );
    // The parent's counts include both queued and granted calls.
    let parent = l.status("openai").await.expect("status");
    assert_eq!(parent.snapshot.limits[0].used, 2020);
}

pub(crate) async fn a_members_cooldown_never_stalls_its_siblings<B: TestBackend>() {
    let l = limiter_for::<B>(&services_of(
        FAMILY,
        &["openai", "openai/gpt-4o", "openai/gpt-4o-mini"],
    ))
    .await;
    // A 429 on gpt-4o's requests, a dimension the parent does not limit: its own cooldown.
    let a = l
        .report(report("openai/gpt-4o", "", 429, &[("retry-after", "20")]))
        .await
        .expect("report");
    assert!(
        a.cooldown_set && !a.detail.contains("family"),
        "{}",
        a.detail
    );
    let (_, wait) = granted(&l, &req("openai/gpt-4o", 10, 30 * S)).await;
    assert_eq!(wait, 20 * US);
    // mini goes now; gpt-4o's next call names the cooldown that holds it.
    let (_, wait) = granted(&l, &req("openai/gpt-4o-mini", 10, Duration::ZERO)).await;
    assert_eq!(wait, 0);
    let (after, decider) = denial(&l, &req("openai/gpt-4o", 10, Duration::ZERO)).await;
    assert_eq!((after, decider), (20 * US, Decider::Cooldown));
}

pub(crate) async fn the_parents_own_queue_holds_every_member_and_is_named<B: TestBackend>() {
    let l = limiter_for::<B>(&services_of(
        FAMILY,
        &["openai", "openai/gpt-4o", "openai/gpt-4o-mini"],
    ))
    .await;
    granted(&l, &req("openai/gpt-4o-mini", 99_000, Duration::ZERO)).await;
    l.backend().advance(2 * S).await;
    // The parent's own tokens limit queues this call until the first leaves its window.
    let (_, wait) = granted(&l, &req("openai/gpt-4o-mini", 2_000, 30 * S)).await;
    assert_eq!(wait, 8 * US);
    // Arrival order on the parent's limit: a sibling's small call waits behind it, and
    // the denial names the parent's limit (never REASON_UNSPECIFIED).
    let (spec, decision) = l
        .acquire(&req("openai/gpt-4o", 1, Duration::ZERO))
        .await
        .expect("acquire");
    let Decision::Denied {
        retry_after,
        decider,
        ..
    } = decision
    else {
        panic!("expected a denial, got {decision:?}");
    };
    assert_eq!(retry_after, 8 * US);
    assert_eq!(
        decider,
        Decider::Ancestor {
            level: 1,
            limit: Some(0)
        }
    );
    assert_eq!(l.decider_name(&spec, decider), "openai: tokens/10s");
    let (after, decider) = denial(&l, &req("openai", 1, Duration::ZERO)).await;
    assert_eq!((after, decider), (8 * US, Decider::Limit(0)));
}

pub(crate) async fn a_retried_job_is_a_new_call_through_its_ancestors_in_flight_limit<
    B: TestBackend,
>() {
    let l = limiter_for::<B>(&services_of(FAMILY, &["org", "org/m"])).await;
    let mut a = req("org/m", 0, Duration::ZERO);
    a.request_id = "job-A".into();
    let (lease_a, _) = granted(&l, &a).await;
    // Retried while it holds the parent's slot: the same lease.
    assert_eq!(granted(&l, &a).await.0, lease_a);
    l.report(report("org/m", &lease_a, 200, &[]))
        .await
        .expect("report");
    assert_eq!(
        l.status("org").await.expect("status").snapshot.limits[0].used,
        0
    );
    let (lease_b, _) = granted(&l, &req("org/m", 0, Duration::ZERO)).await;
    let (_, decider) = denial(&l, &req("org/m", 0, Duration::ZERO)).await;
    assert_eq!(
        decider,
        Decider::Ancestor {
            level: 1,
            limit: Some(0)
        }
    );
    // A retries after its report: a new call, refused while B holds the only slot.
    let (_, decider) = denial(&l, &a).await;
    assert_eq!(
        decider,
        Decider::Ancestor {
            level: 1,
            limit: Some(0)
        }
    );
    assert_eq!(
        l.status("org").await.expect("status").snapshot.limits[0].used,
        1
    );
    // Once B reports, A's retry books anew (a new lease id).
    l.report(report("org/m", &lease_b, 200, &[]))
        .await
        .expect("report");
    let (again, _) = granted(&l, &a).await;
    assert_ne!(again, lease_a);
}

pub(crate) async fn lease_ids_never_repeat_for_a_service_removed_and_added_back<B: TestBackend>() {
    // `huge` stays while `solo` is removed (a config names at least one service).
    let services = services_of(FAMILY, &["solo", "huge"]);
    let l = limiter_for::<B>(&services).await;
    let (lease_a, _) = granted(&l, &req("solo", 0, Duration::ZERO)).await;
    let without = replace_block(&services, "solo", "");
    let config = Config::parse(&without).expect("valid");
    l.reconfigure(config.services, config.profiles)
        .await
        .expect("reload");
    let config = Config::parse(&services).expect("valid");
    l.reconfigure(config.services, config.profiles)
        .await
        .expect("reload");
    // The state may start empty (memory) or be found again (Redis keeps its keys).
    match l
        .acquire(&req("solo", 0, Duration::ZERO))
        .await
        .expect("acquire")
        .1
    {
        Decision::Granted(g) => {
            let lease_b = g.lease_id.to_string();
            assert_ne!(lease_b, lease_a, "a lease id was handed out twice");
            // A's stale report frees nothing of B's: a third call still finds the slot held.
            let answer = l
                .report(report("solo", &lease_a, 200, &[]))
                .await
                .expect("report");
            assert!(!answer.detail.contains("released"), "{}", answer.detail);
            denial(&l, &req("solo", 0, Duration::ZERO)).await;
            assert_eq!(
                l.status("solo").await.expect("status").snapshot.limits[0].used,
                1
            );
        }
        Decision::Denied { .. } => {
            // A still holds the slot: its report releases it, and only then may B go.
            assert!(l
                .report(report("solo", &lease_a, 200, &[]))
                .await
                .expect("report")
                .detail
                .contains("released"));
            let (lease_b, _) = granted(&l, &req("solo", 0, Duration::ZERO)).await;
            assert_ne!(lease_b, lease_a);
        }
    }
}

pub(crate) async fn numbers_near_two_to_the_53_are_refused_up_front_or_granted_alike<
    B: TestBackend,
>() {
    let l = limiter_for::<B>(&services_of(FAMILY, &["huge"])).await;
    // A cost beyond every amount Sluice accepts is malformed input, on every backend.
    let too_big = l.acquire(&req("huge", 1 << 53, Duration::ZERO)).await;
    assert!(is(too_big, |e| matches!(e, Error::InvalidArgument(_))));
    // 40 calls of 2^48 against 2^50 per second: every one granted (four a second), none
    // an outage, though their running total passes 2^53.
    for _ in 0..40 {
        let (_, wait) = granted(&l, &req("huge", 1 << 48, Duration::ZERO)).await;
        assert_eq!(wait, 0);
        for _ in 0..3 {
            granted(&l, &req("huge", 1 << 48, Duration::ZERO)).await;
        }
        denial(&l, &req("huge", 1 << 48, Duration::ZERO)).await;
        l.backend().advance(S).await;
    }
    // A report with usage beyond the bound is refused before it changes anything.
    let (lease, _) = granted(&l, &req("huge", 1 << 48, Duration::ZERO)).await;
    let mut r = report("huge", &lease, 200, &[]);
    r.usage = Some(UsageReport {
        total_tokens: Some(1 << 53),
        ..UsageReport::default()
    });
    assert!(is(l.report(r).await, |e| matches!(
        e,
        Error::InvalidArgument(_)
    )));
    let status = l.status("huge").await.expect("status");
    assert_eq!(status.snapshot.limits[0].used, 1 << 48);
    // A real usage within the bound still replaces the estimate.
    let mut r = report("huge", &lease, 200, &[]);
    r.usage = Some(UsageReport {
        total_tokens: Some(1 << 49),
        ..UsageReport::default()
    });
    l.report(r).await.expect("report");
    assert_eq!(
        l.status("huge").await.expect("status").snapshot.limits[0].used,
        1 << 49
    );
}

pub(crate) async fn a_family_spends_its_parents_budget_atomically<B: TestBackend>() {
    use sluice_server::core::{Decider, Decision};
    let l = limiter::<B>(&["org", "org/big", "org/small"]).await;
    granted(&l, &req("org/big", 600, Duration::ZERO)).await;
    granted(&l, &req("org/small", 300, Duration::ZERO)).await;
    // 100 tokens left in the parent: the small model's own limit would allow 300 more.
    match l
        .acquire(&req("org/small", 200, Duration::ZERO))
        .await
        .expect("acquire")
        .1
    {
        Decision::Denied {
            retry_after,
            decider,
            ..
        } => {
            assert_eq!(
                decider,
                Decider::Ancestor {
                    level: 1,
                    limit: Some(0)
                }
            );
            assert_eq!(retry_after, 60 * US);
        }
        d => panic!("expected a denial by the parent, got {d:?}"),
    }
    // A denial booked nothing anywhere; the parent itself can be acquired directly.
    granted(&l, &req("org", 100, Duration::ZERO)).await;
    denied(&l, &req("org/big", 1, Duration::ZERO)).await;
    let org = l.status("org").await.expect("status");
    assert_eq!(org.snapshot.limits[0].used, 1000);
    let small = l.status("org/small").await.expect("status");
    assert_eq!(small.snapshot.limits[1].used, 300);
    // A wait is booked in the parent too: at 60 s the first 600 tokens leave its window.
    let (_, wait) = granted(&l, &req("org/small", 500, 120 * S)).await;
    assert_eq!(wait, 60 * US);
    // A cost above an ancestor's limit can never fit, and says whose limit.
    let never = l.acquire(&req("org/big", 1001, 120 * S)).await;
    assert!(is(
        never,
        |e| matches!(e, Error::NeverFits(n) if n.limit == "org: tokens/1m")
    ));
}

pub(crate) async fn reports_reach_the_parent_and_its_429s_cool_the_family<B: TestBackend>() {
    let l = limiter::<B>(&["org", "org/big", "org/small"]).await;
    let (lease, _) = granted(&l, &req("org/big", 900, Duration::ZERO)).await;
    // The call used 200 tokens: the parent is refunded with the child.
    let mut r = report("org/big", &lease, 200, &[]);
    r.usage = Some(UsageReport {
        total_tokens: Some(200),
        ..UsageReport::default()
    });
    l.report(r).await.expect("report");
    assert_eq!(
        l.status("org").await.expect("status").snapshot.limits[0].used,
        200
    );
    granted(&l, &req("org/small", 500, Duration::ZERO)).await;
    // A 429 on the big model's requests is its own: the parent limits no requests.
    let a = l
        .report(report("org/big", "", 429, &[("retry-after", "5")]))
        .await
        .expect("report");
    assert!(
        a.cooldown_set && !a.detail.contains("family"),
        "{}",
        a.detail
    );
    granted(&l, &req("org/small", 10, Duration::ZERO)).await;
    // A 429 on tokens (the parent's dimension) cools the whole family down.
    let b = l
        .report(report(
            "org/small",
            "",
            429,
            &[
                ("x-ratelimit-remaining-tokens", "0"),
                ("x-ratelimit-reset-tokens", "20s"),
            ],
        ))
        .await
        .expect("report");
    assert!(
        b.detail.contains("family cooldown set on org"),
        "{}",
        b.detail
    );
    l.backend().advance(6 * S).await;
    assert_eq!(
        denied(&l, &req("org/big", 10, Duration::ZERO)).await,
        14 * US
    );
    assert_eq!(denied(&l, &req("org", 10, Duration::ZERO)).await, 14 * US);
    // A call that spends no tokens is not held back by a tokens cooldown.
    let mut free = req("org/big", 0, Duration::ZERO);
    free.output_tokens = 0;
    granted(&l, &free).await;
}
