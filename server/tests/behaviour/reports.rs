//! Provider answers: overload backoff, cooldowns from `remaining: 0`, outside usage, adopted
//! limits, quotas, refunds of the estimate, the last answer in status, operators' actions.

use std::time::Duration;

use sluice_server::{error::Error, limiter::UsageReport};

use crate::{suite::*, TestBackend};

const S: Duration = Duration::from_secs(1);

pub(crate) async fn overloads_back_off_exponentially_with_jitter_until_a_success<B: TestBackend>() {
    let l = limiter::<B>(&["tpm"]).await;
    let within = |c: u64, base: u64| (base * 8 / 10..=base * 12 / 10).contains(&c);
    // default_cooldown 2 s: 2 s, then 4 s, then 8 s, each ±20 %.
    for expected in [2 * US, 4 * US, 8 * US] {
        let a = l.report(report("tpm", "", 529, &[])).await.expect("report");
        assert!(a.cooldown_set, "{}", a.detail);
        assert!(
            within(a.cooldown, expected),
            "{} not near {expected}",
            a.cooldown
        );
        l.backend().advance(Duration::from_micros(a.cooldown)).await;
    }
    // A success resets the streak.
    l.report(report("tpm", "", 200, &[])).await.expect("report");
    let a = l.report(report("tpm", "", 503, &[])).await.expect("report");
    assert!(within(a.cooldown, 2 * US), "{}", a.cooldown);
    // A retry-after is a floor.
    l.backend().advance(3 * S).await;
    l.report(report("tpm", "", 200, &[])).await.expect("report");
    let b = l
        .report(report("tpm", "", 529, &[("retry-after", "10")]))
        .await
        .expect("report");
    assert_eq!(b.cooldown, 10 * US);
    let status = l.status("tpm").await.expect("status");
    let (_, cause) = status.snapshot.cooldown.expect("cooldown");
    assert_eq!(cause.source, "529 overloaded");
}

pub(crate) async fn remaining_zero_cools_down_the_dimension_it_names<B: TestBackend>() {
    let l = limiter::<B>(&["oai"]).await;
    let ok = report(
        "oai",
        "",
        200,
        &[
            ("x-ratelimit-remaining-tokens", "0"),
            ("x-ratelimit-reset-tokens", "6s"),
            ("x-ratelimit-remaining-requests", "99"),
        ],
    );
    let a = l.report(ok).await.expect("report");
    assert!(a.cooldown_set, "{}", a.detail);
    assert_eq!(a.cooldown, 6 * US);
    let status = l.status("oai").await.expect("status");
    assert!(
        status.snapshot.cooldown.is_none(),
        "requests are not cooled down"
    );
    let (dimension, left, cause) = &status.snapshot.dimension_cooldowns[0];
    assert_eq!((dimension.as_str(), *left), ("tokens", 6 * US));
    assert_eq!(cause.source, "200 tokens remaining 0");
    // A call that spends tokens waits; one that spends none does not.
    assert_eq!(denied(&l, &req("oai", 10, Duration::ZERO)).await, 6 * US);
    let mut free = req("oai", 0, Duration::ZERO);
    free.output_tokens = 0;
    assert_eq!(granted(&l, &free).await.1, 0);
    // A 429 pointing at tokens cools tokens down until their reset, not retry-after.
    l.backend().advance(7 * S).await;
    let limited = report(
        "oai",
        "",
        429,
        &[
            ("x-ratelimit-remaining-tokens", "0"),
            ("x-ratelimit-reset-tokens", "20s"),
            ("retry-after", "1"),
        ],
    );
    let b = l.report(limited).await.expect("report");
    assert_eq!(b.cooldown, 20 * US, "{}", b.detail);
    assert_eq!(denied(&l, &req("oai", 10, Duration::ZERO)).await, 20 * US);
}

pub(crate) async fn remaining_below_the_view_is_charged_as_outside_usage<B: TestBackend>() {
    let l = limiter::<B>(&["oai"]).await;
    granted(&l, &req("oai", 100, Duration::ZERO)).await;
    // Sluice thinks 900 tokens are left; the provider says 500: 400 went elsewhere.
    let a = l
        .report(report(
            "oai",
            "",
            200,
            &[
                ("x-ratelimit-remaining-tokens", "500"),
                ("x-ratelimit-limit-tokens", "2000"),
            ],
        ))
        .await
        .expect("report");
    assert!(a.detail.contains("charged 400"), "{}", a.detail);
    let status = l.status("oai").await.expect("status");
    assert_eq!(status.snapshot.limits[1].used, 500);
    assert_eq!(status.learned, vec![None, Some(2000)]);
    granted(&l, &req("oai", 500, Duration::ZERO)).await;
    denied(&l, &req("oai", 1, Duration::ZERO)).await;
    // A provider that sees more room than Sluice changes nothing.
    let b = l
        .report(report(
            "oai",
            "",
            200,
            &[("x-ratelimit-remaining-tokens", "900")],
        ))
        .await
        .expect("report");
    assert!(!b.detail.contains("charged"), "{}", b.detail);
}

pub(crate) async fn provider_limits_are_adopted_when_the_service_says_so<B: TestBackend>() {
    let l = limiter::<B>(&["oai", "adopt"]).await;
    for _ in 0..3 {
        granted(&l, &req("adopt", 10, Duration::ZERO)).await;
    }
    // The key allows 5 requests, not the configured 100; 2 are left.
    let a = l
        .report(report(
            "adopt",
            "",
            200,
            &[
                ("x-ratelimit-limit-requests", "5"),
                ("x-ratelimit-remaining-requests", "2"),
                ("x-ratelimit-limit-tokens", "500"),
            ],
        ))
        .await
        .expect("report");
    assert!(
        a.detail
            .contains("adopted provider budget 5 for requests/1m"),
        "{}",
        a.detail
    );
    // A token bucket adopts it too (its rate and burst follow).
    assert!(
        a.detail
            .contains("adopted provider budget 500 for tokens/1m"),
        "{}",
        a.detail
    );
    assert!(!a.detail.contains("charged"), "{}", a.detail);
    let status = l.status("adopt").await.expect("status");
    assert_eq!(status.learned, vec![Some(5), Some(500)]);
    assert_eq!(
        (
            status.snapshot.limits[0].amount,
            status.snapshot.limits[0].remaining
        ),
        (5, 2)
    );
    assert_eq!(status.snapshot.limits[1].amount, 500);
    granted(&l, &req("adopt", 10, Duration::ZERO)).await;
    granted(&l, &req("adopt", 10, Duration::ZERO)).await;
    assert_eq!(denied(&l, &req("adopt", 10, Duration::ZERO)).await, 60 * US);
    // A raised budget is adopted too.
    l.report(report(
        "adopt",
        "",
        200,
        &[
            ("x-ratelimit-limit-requests", "7"),
            ("x-ratelimit-remaining-requests", "2"),
        ],
    ))
    .await
    .expect("report");
    granted(&l, &req("adopt", 10, Duration::ZERO)).await;
    granted(&l, &req("adopt", 10, Duration::ZERO)).await;
    denied(&l, &req("adopt", 10, Duration::ZERO)).await;
    // Services that do not adopt only show what they learned.
    l.report(report(
        "oai",
        "",
        200,
        &[("x-ratelimit-limit-requests", "5")],
    ))
    .await
    .expect("report");
    let oai = l.status("oai").await.expect("status");
    assert_eq!(
        (oai.learned[0], oai.snapshot.limits[0].amount),
        (Some(5), 100)
    );
}

pub(crate) async fn operators_clear_cooldowns_and_reset_usage<B: TestBackend>() {
    use sluice_server::core::AdminOp;
    let l = limiter::<B>(&["rpm"]).await;
    let (lease, _) = granted(&l, &req("rpm", 0, Duration::ZERO)).await;
    // A queued slot behind the cooldown, then the cooldown.
    granted(&l, &req("rpm", 0, Duration::ZERO)).await;
    l.report(report("rpm", &lease, 429, &[("retry-after", "60")]))
        .await
        .expect("report");
    assert_eq!(denied(&l, &req("rpm", 0, Duration::ZERO)).await, 60 * US);
    let status = l
        .admin("rpm", AdminOp::ClearCooldowns)
        .await
        .expect("clear");
    assert!(status.snapshot.cooldown.is_none());
    granted(&l, &req("rpm", 0, Duration::ZERO)).await;
    // The limit (3 per 10 s) is spent; a reset forgets it.
    denied(&l, &req("rpm", 0, Duration::ZERO)).await;
    let status = l.admin("rpm", AdminOp::Reset).await.expect("reset");
    assert_eq!(status.snapshot.limits[0].used, 0);
    granted(&l, &req("rpm", 0, Duration::ZERO)).await;
    // An operator's cooldown works like a provider's, bounded by max_cooldown.
    let status = l
        .set_cooldown("rpm", 30 * US, "maintenance")
        .await
        .expect("set");
    let (remaining, cause) = status.snapshot.cooldown.expect("a cooldown");
    assert_eq!(
        (remaining, cause.source.as_str()),
        (30 * US, "admin: maintenance")
    );
    assert!(is(l.set_cooldown("rpm", 0, "").await, |e| matches!(
        e,
        Error::InvalidArgument(_)
    )));
}

pub(crate) async fn quota_and_spend_caps_cool_down_long_with_the_cause_visible<B: TestBackend>() {
    let l = limiter::<B>(&["claude", "gemini"]).await;
    let mut r = report("claude", "", 429, &[]);
    r.body = br#"{"type":"error","error":{"type":"rate_limit_error","details":{"error_code":"enforced_spend_limit_reached"}}}"#.to_vec();
    let a = l.report(r).await.expect("report");
    assert_eq!(a.cooldown, 600 * US);
    let (_, cause) = l
        .status("claude")
        .await
        .expect("status")
        .snapshot
        .cooldown
        .expect("cooldown");
    assert!(
        cause.source.contains("enforced_spend_limit_reached"),
        "{}",
        cause.source
    );

    // Gemini: the wait is in the body; a per-day quota is a long wait.
    let mut r = report("gemini", "", 429, &[]);
    r.body = br#"{"error":{"code":429,"status":"RESOURCE_EXHAUSTED","details":[
        {"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"34s"}]}}"#
        .to_vec();
    assert_eq!(l.report(r).await.expect("report").cooldown, 34 * US);
    let mut r = report("gemini", "", 429, &[]);
    r.body = br#"{"error":{"code":429,"status":"RESOURCE_EXHAUSTED","details":[
        {"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[
          {"quotaId":"GenerateRequestsPerDayPerProjectPerModel-FreeTier"}]}]}}"#
        .to_vec();
    assert_eq!(l.report(r).await.expect("report").cooldown, 1200 * US);
    let (_, cause) = l
        .status("gemini")
        .await
        .expect("status")
        .snapshot
        .cooldown
        .expect("cooldown");
    assert!(cause.source.contains("PerDay"), "{}", cause.source);
}

pub(crate) async fn reported_usage_refunds_the_estimate<B: TestBackend>() {
    let l = limiter::<B>(&["tpm", "bucket"]).await;
    for service in ["tpm", "bucket"] {
        let full = if service == "tpm" { 1000 } else { 100 };
        let (lease, _) = granted(&l, &req(service, full, Duration::ZERO)).await;
        denied(&l, &req(service, full / 2, Duration::ZERO)).await;
        let mut r = report(service, &lease, 200, &[]);
        r.usage = Some(UsageReport {
            total_tokens: Some(full / 4),
            ..UsageReport::default()
        });
        let a = l.report(r).await.expect("report");
        assert!(a.detail.contains("usage applied"), "{}", a.detail);
        granted(&l, &req(service, full * 3 / 4, Duration::ZERO)).await;
        denied(&l, &req(service, 1, Duration::ZERO)).await;
    }
}

pub(crate) async fn status_shows_the_providers_last_answer<B: TestBackend>() {
    let l = limiter::<B>(&["tpm"]).await;
    let r = report(
        "tpm",
        "",
        200,
        &[
            ("X-RateLimit-Remaining-Tokens", "77"),
            ("content-type", "json"),
        ],
    );
    l.report(r).await.expect("report");
    l.backend().advance(3 * S).await;
    let status = l.status("tpm").await.expect("status");
    let last = status.snapshot.last_report.expect("last report");
    assert_eq!(last.status_code, 200);
    assert_eq!(
        last.headers,
        vec![("x-ratelimit-remaining-tokens".to_string(), "77".to_string())]
    );
    assert_eq!(status.snapshot.now - last.at, 3_000_000);
}

pub(crate) async fn a_429_cools_the_service_down_and_cooldowns_only_lengthen<B: TestBackend>() {
    let l = limiter::<B>(&["tpm"]).await;
    let (lease, _) = granted(&l, &req("tpm", 10, Duration::ZERO)).await;
    let a = l
        .report(report("tpm", &lease, 429, &[("Retry-After", "20")]))
        .await
        .expect("report");
    assert!(a.cooldown_set);
    assert_eq!(a.cooldown, 20_000_000);
    let b = l
        .report(report("tpm", "", 429, &[("retry-after", "5")]))
        .await
        .expect("report");
    assert!(!b.cooldown_set);
    assert_eq!(b.cooldown, 20_000_000);
    assert_eq!(denied(&l, &req("tpm", 1, Duration::ZERO)).await, 20_000_000);
    let (_, wait) = granted(&l, &req("tpm", 1, 30 * S)).await;
    assert_eq!(wait, 20_000_000);
    // A 429 without retry-after uses the default (2 s); a huge retry-after is clamped (30 s).
    l.backend().advance(21 * S).await;
    let c = l.report(report("tpm", "", 429, &[])).await.expect("report");
    assert_eq!(c.cooldown, 2_000_000);
    let d = l
        .report(report("tpm", "", 429, &[("retry-after", "86400")]))
        .await
        .expect("report");
    assert_eq!(d.cooldown, 30_000_000);
    assert!(d.detail.contains("clamped"), "{}", d.detail);
}
