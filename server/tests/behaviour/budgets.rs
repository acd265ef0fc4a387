//! Learning the provider's real budget (issue 16), instantiated per backend by the per-backend macro in `main.rs`:
//! token buckets adopt a provider's `limit` (rate and burst follow, the state carries over) and
//! are drained by a `remaining` below Sluice's view, never filled.

use std::time::Duration;

use crate::{suite::*, TestBackend};

/// Services of the budget tests.
pub const BUDGETS: &str = r#"
[[services]]
name = "oai-bucket"
profile = "openai"
adopt_provider_limits = true
limits = [
  { dimension = "requests", amount = 1000, window = "1m" },
  { dimension = "tokens", amount = 20000, window = "1m", algorithm = "token_bucket" },
]

[[services]]
name = "quiet"
adaptive = true
default_cooldown = "2s"
limits = [
  { dimension = "requests", amount = 100, window = "10s" },
  { dimension = "tokens", amount = 10000, window = "10s", algorithm = "token_bucket" },
]

[[services]]
name = "oai-bucket-fixed"
profile = "openai"
limits = [{ dimension = "tokens", amount = 20000, window = "1m", algorithm = "token_bucket" }]

[[services]]
name = "learned"
profile = "openai"
adopt_provider_limits = true
adaptive = true
default_cooldown = "2s"
limits = [
  { dimension = "requests", amount = 100, window = "1m" },
  { dimension = "tokens", amount = 20000, window = "1m", algorithm = "token_bucket", burst = 5000 },
]

[[services]]
name = "claude-quiet"
profile = "anthropic"
adaptive = true
limits = [{ dimension = "requests", amount = 100, window = "10s" }]

[[services]]
name = "gemini-quiet"
profile = "gemini"
adaptive = true
quota_cooldown = "20m"
limits = [{ dimension = "requests", amount = 100, window = "10s" }]
"#;

const S: Duration = Duration::from_secs(1);

/// Reports a 429 of `service` (no headers) and checks it lowered the adaptive budget to
/// `percent`.
async fn throttle_to<B: TestBackend>(
    l: &sluice_server::limiter::Limiter<B>,
    service: &str,
    percent: u32,
) {
    let a = l
        .report(report(service, "", 429, &[]))
        .await
        .expect("report");
    let lowered = format!("adaptive budget lowered to {percent}%");
    assert!(a.detail.contains(&lowered), "{}", a.detail);
}

/// The live state of the adaptive service.
async fn scale<B: TestBackend>(
    l: &sluice_server::limiter::Limiter<B>,
) -> sluice_server::core::ServiceSnapshot {
    l.status("quiet").await.expect("status").snapshot
}

pub(crate) async fn a_token_bucket_adopts_the_providers_budget_with_its_rate_and_burst<
    B: TestBackend,
>() {
    let l = limiter_for::<B>(&services_of(BUDGETS, &["oai-bucket"])).await;
    let (lease, _) = granted(&l, &req("oai-bucket", 10_000, Duration::ZERO)).await;
    // The provider's budget is half the configured one.
    let a = l
        .report(report(
            "oai-bucket",
            &lease,
            200,
            &[
                ("x-ratelimit-limit-tokens", "10000"),
                ("x-ratelimit-remaining-tokens", "0"),
            ],
        ))
        .await
        .expect("report");
    assert!(
        a.detail.contains("adopted provider budget 10000"),
        "{}",
        a.detail
    );
    let status = l.status("oai-bucket").await.expect("status");
    assert_eq!(status.snapshot.limits[1].amount, 10_000);
    // The 10,000 tokens spent carry over: the bucket is empty at the new burst, and
    // refills at the new rate (10,000 a minute: 1,000 tokens take 6 s).
    assert_eq!(status.snapshot.limits[1].used, 10_000);
    assert_eq!(
        denied(&l, &req("oai-bucket", 1_000, Duration::ZERO)).await,
        6 * US
    );
    l.backend().advance(6 * S).await;
    granted(&l, &req("oai-bucket", 1_000, Duration::ZERO)).await;
    // The same budget again changes nothing (no rounding creeps in).
    l.report(report(
        "oai-bucket",
        "",
        200,
        &[("x-ratelimit-limit-tokens", "10000")],
    ))
    .await
    .expect("report");
    assert_eq!(
        denied(&l, &req("oai-bucket", 1_000, Duration::ZERO)).await,
        6 * US
    );
    // A higher budget raises rate and burst: the debt drains twice as fast.
    l.report(report(
        "oai-bucket",
        "",
        200,
        &[("x-ratelimit-limit-tokens", "20000")],
    ))
    .await
    .expect("report");
    let status = l.status("oai-bucket").await.expect("status");
    assert_eq!(status.snapshot.limits[1].amount, 20_000);
    assert_eq!(status.snapshot.limits[1].used, 10_000);
    granted(&l, &req("oai-bucket", 10_000, Duration::ZERO)).await;
    assert_eq!(
        denied(&l, &req("oai-bucket", 1_000, Duration::ZERO)).await,
        3 * US
    );
}

pub(crate) async fn an_adaptive_budget_lowers_on_429s_and_recovers_when_quiet<B: TestBackend>() {
    let l = limiter_for::<B>(&services_of(BUDGETS, &["quiet"])).await;
    throttle_to(&l, "quiet", 70).await;
    let s = scale(&l).await;
    assert_eq!(s.adaptive_scale, 700);
    assert_eq!((s.limits[0].amount, s.limits[1].amount), (70, 7000));
    // A second 429 of the same cooldown lowers nothing more.
    let b = l
        .report(report("quiet", "", 429, &[]))
        .await
        .expect("report");
    assert!(!b.detail.contains("adaptive"), "{}", b.detail);
    assert_eq!(scale(&l).await.adaptive_scale, 700);
    // After the cooldown: 70 requests in the window, not 100; the bucket at 70 % rate.
    l.backend().advance(2 * S).await;
    for _ in 0..70 {
        let mut r = req("quiet", 0, Duration::ZERO);
        r.output_tokens = 0;
        granted(&l, &r).await;
    }
    let mut r = req("quiet", 0, Duration::ZERO);
    r.output_tokens = 0;
    denied(&l, &r).await;
    // A 429 of a later episode lowers again; each quiet period (10 s, the longest window)
    // gives back half the gap to the scale the 429 came at (70 %), then 5 % of the
    // configured budget, up to all of it.
    throttle_to(&l, "quiet", 49).await;
    l.backend().advance(10 * S).await;
    assert_eq!(scale(&l).await.adaptive_scale, 595);
    l.backend().advance(10 * S).await;
    assert_eq!(scale(&l).await.adaptive_scale, 648);
    // 8 halvings up to 70 %, then 6 steps of 5 %.
    l.backend().advance(110 * S).await;
    assert_eq!(scale(&l).await.adaptive_scale, 950);
    l.backend().advance(10 * S).await;
    let s = scale(&l).await;
    assert_eq!(
        (s.adaptive_scale, s.limits[0].amount, s.limits[1].amount),
        (1000, 100, 10000)
    );
}

pub(crate) async fn queued_calls_are_released_at_the_lowered_budget_after_a_429<B: TestBackend>() {
    let l = limiter_for::<B>(&services_of(BUDGETS, &["quiet"])).await;
    let call = |i: usize| {
        let mut r = req("quiet", 0, 60 * S);
        r.output_tokens = 0;
        r.request_id = format!("call-{i}");
        r
    };
    // 100 requests per 10 s: 100 now, 100 queued 10 s out, 50 queued 20 s out.
    let mut booked = Vec::new();
    for i in 0..250 {
        booked.push(granted(&l, &call(i)).await);
    }
    assert_eq!(booked[249].1, 20 * US);
    // A 429 lowers the budget to 70 %: the queued calls are booked again at 70 per
    // window, keeping their leases (asking again with the request id says when).
    l.report(report("quiet", "", 429, &[]))
        .await
        .expect("report");
    let mut per_window = std::collections::BTreeMap::new();
    for (i, (lease, _)) in booked.iter().enumerate() {
        let (again, wait) = granted(&l, &call(i)).await;
        assert_eq!(&again, lease, "call {i} kept its lease");
        *per_window.entry(wait / US).or_insert(0) += 1;
    }
    assert_eq!(
        per_window.into_iter().collect::<Vec<_>>(),
        vec![(0, 100), (10, 70), (20, 70), (30, 10)]
    );
}

pub(crate) async fn an_adaptive_bucket_charges_at_its_scale<B: TestBackend>() {
    let l = limiter_for::<B>(&services_of(BUDGETS, &["quiet"])).await;
    l.report(report("quiet", "", 429, &[]))
        .await
        .expect("report");
    l.backend().advance(2 * S).await;
    // 7,000 tokens empty the bucket at 70 %; the next 700 come after 1 s (700 a second).
    granted(&l, &req("quiet", 7000, Duration::ZERO)).await;
    let s = scale(&l).await;
    assert_eq!((s.limits[1].used, s.limits[1].remaining), (7000, 0));
    assert_eq!(
        denied(&l, &req("quiet", 700, Duration::ZERO)).await,
        S.as_micros() as u64
    );
}

pub(crate) async fn a_providers_remaining_below_the_view_drains_a_token_bucket_and_never_fills_it<
    B: TestBackend,
>() {
    let l = limiter_for::<B>(&services_of(BUDGETS, &["oai-bucket-fixed"])).await;
    let (lease, _) = granted(&l, &req("oai-bucket-fixed", 1_000, Duration::ZERO)).await;
    // Someone else spent 14,000 of the provider's budget: the bucket takes it as used.
    let a = l
        .report(report(
            "oai-bucket-fixed",
            &lease,
            200,
            &[("x-ratelimit-remaining-tokens", "5000")],
        ))
        .await
        .expect("report");
    assert!(a.detail.contains("charged 14000"), "{}", a.detail);
    let status = l.status("oai-bucket-fixed").await.expect("status");
    assert_eq!(status.snapshot.limits[0].used, 15_000);
    // A provider that sees more left than Sluice does frees nothing.
    l.report(report(
        "oai-bucket-fixed",
        "",
        200,
        &[("x-ratelimit-remaining-tokens", "19000")],
    ))
    .await
    .expect("report");
    assert_eq!(
        l.status("oai-bucket-fixed")
            .await
            .expect("status")
            .snapshot
            .limits[0]
            .used,
        15_000
    );
    granted(&l, &req("oai-bucket-fixed", 5_000, Duration::ZERO)).await;
    denied(&l, &req("oai-bucket-fixed", 1_000, Duration::ZERO)).await;
}

pub(crate) async fn a_decrease_keeps_what_an_adaptive_bucket_owes<B: TestBackend>() {
    let l = limiter_for::<B>(&services_of(BUDGETS, &["quiet"])).await;
    // A call under way took 7,000 of the 10,000-token burst (1,000 a second).
    granted(&l, &req("quiet", 7000, Duration::ZERO)).await;
    l.report(report("quiet", "", 429, &[]))
        .await
        .expect("report");
    // At 70 % the bucket holds 7,000 and refills 700 a second. The 7,000 tokens the call took
    // are still owed in full: the lowered bucket is empty, not 2,100 tokens short of full.
    let s = scale(&l).await;
    assert_eq!(
        (s.limits[1].amount, s.limits[1].used, s.limits[1].remaining),
        (7000, 7000, 0)
    );
    // After the 2 s cooldown, 1,400 tokens have drained at 700 a second: that much fits, and
    // the next 700 come a second later.
    l.backend().advance(2 * S).await;
    denied(&l, &req("quiet", 1401, Duration::ZERO)).await;
    granted(&l, &req("quiet", 1400, Duration::ZERO)).await;
    assert_eq!(
        denied(&l, &req("quiet", 700, Duration::ZERO)).await,
        S.as_micros() as u64
    );
}

pub(crate) async fn status_says_why_from_the_budget_in_force_not_the_last_answer<B: TestBackend>() {
    let l = limiter_for::<B>(&services_of(BUDGETS, &["learned"])).await;
    let why = |s: &sluice_server::limiter::ServiceStatus| {
        (0..2).map(|i| s.effective_because(i)).collect::<Vec<_>>()
    };
    let s = l.status("learned").await.expect("status");
    assert_eq!(why(&s), ["configured", "configured"]);
    assert_eq!(
        (s.snapshot.limits[1].burst, s.snapshot.limits[1].adopted),
        (5000, false)
    );
    // The provider's budget is half the configured one: the bucket's burst follows in the same
    // proportion (5,000 of 20,000 configured: 2,500 of 10,000).
    l.report(report(
        "learned",
        "",
        200,
        &[
            ("x-ratelimit-limit-requests", "50"),
            ("x-ratelimit-limit-tokens", "10000"),
        ],
    ))
    .await
    .expect("report");
    // Then answers that name no budget (a 5xx; providers that send headers only on 429s).
    l.report(report("learned", "", 500, &[]))
        .await
        .expect("report");
    l.report(report("learned", "", 200, &[]))
        .await
        .expect("report");
    let s = l.status("learned").await.expect("status");
    assert_eq!(s.learned, vec![None, None], "the last answer named nothing");
    let (requests, tokens) = (&s.snapshot.limits[0], &s.snapshot.limits[1]);
    assert_eq!((requests.amount, requests.adopted), (50, true));
    assert_eq!(
        (tokens.amount, tokens.burst, tokens.adopted),
        (10_000, 2_500, true)
    );
    assert_eq!(why(&s), ["provider budget", "provider budget"]);
    // Only 2,500 tokens fit at once, as the burst shown says.
    l.backend().advance(60 * S).await;
    granted(&l, &req("learned", 2_500, Duration::ZERO)).await;
    denied(&l, &req("learned", 1, Duration::ZERO)).await;
    // A 429 without headers lowers the adopted budget: both reasons, the burst at the scale.
    l.report(report("learned", "", 429, &[]))
        .await
        .expect("report");
    let s = l.status("learned").await.expect("status");
    assert_eq!(
        why(&s),
        [
            "provider budget, adaptive 70% after 429s",
            "provider budget, adaptive 70% after 429s"
        ]
    );
    assert_eq!(
        (s.snapshot.limits[1].amount, s.snapshot.limits[1].burst),
        (7_000, 1_750)
    );
    // The provider names the configured budget again: no longer another budget.
    l.report(report(
        "learned",
        "",
        200,
        &[
            ("x-ratelimit-limit-requests", "100"),
            ("x-ratelimit-limit-tokens", "20000"),
        ],
    ))
    .await
    .expect("report");
    let s = l.status("learned").await.expect("status");
    assert_eq!(
        why(&s),
        ["adaptive 70% after 429s", "adaptive 70% after 429s"]
    );
    assert_eq!(
        (s.snapshot.limits[1].burst, s.snapshot.limits[1].adopted),
        (3_500, false)
    );
}

pub(crate) async fn quotas_spend_caps_and_overloads_leave_an_adaptive_budget_alone<
    B: TestBackend,
>() {
    let l = limiter_for::<B>(&services_of(BUDGETS, &["claude-quiet", "gemini-quiet"])).await;
    let scale_of = |name: &'static str| {
        let l = &l;
        async move {
            l.status(name)
                .await
                .expect("status")
                .snapshot
                .adaptive_scale
        }
    };
    // Anthropic: overloads, then a spend cap (a 429 that no waiting at this rate cures).
    for status in [529, 503] {
        let a = l
            .report(report("claude-quiet", "", status, &[]))
            .await
            .expect("report");
        assert!(a.detail.contains("overloaded"), "{}", a.detail);
    }
    let mut cap = report("claude-quiet", "", 429, &[]);
    cap.body = br#"{"type":"error","error":{"type":"rate_limit_error","details":{"error_code":"enforced_spend_limit_reached"}}}"#.to_vec();
    let a = l.report(cap).await.expect("report");
    assert!(a.detail.contains("quota"), "{}", a.detail);
    assert_eq!(scale_of("claude-quiet").await, 1000);
    // Gemini: a daily quota.
    let mut quota = report("gemini-quiet", "", 429, &[]);
    quota.body = br#"{"error":{"code":429,"status":"RESOURCE_EXHAUSTED","details":[
        {"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[
          {"quotaId":"GenerateRequestsPerDayPerProjectPerModel-FreeTier"}]}]}}"#
        .to_vec();
    let a = l.report(quota).await.expect("report");
    assert!(a.detail.contains("quota"), "{}", a.detail);
    assert_eq!(scale_of("gemini-quiet").await, 1000);
    // A rate limit's 429 does lower them (during the quota's cooldown too).
    throttle_to(&l, "claude-quiet", 70).await;
    let mut limited = report("gemini-quiet", "", 429, &[]);
    limited.body = br#"{"error":{"code":429,"status":"RESOURCE_EXHAUSTED","details":[
        {"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"3s"}]}}"#
        .to_vec();
    l.report(limited).await.expect("report");
    assert_eq!(scale_of("claude-quiet").await, 700);
    assert_eq!(scale_of("gemini-quiet").await, 700);
}
