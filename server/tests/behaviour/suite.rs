//! The behaviour tests, instantiated per backend by [`behaviour_suite!`].

use std::{sync::Arc, time::Duration};

use sluice_server::{
    config::Config,
    core::ServiceSpec,
    error::Error,
    limiter::{AcquireRequest, Limiter, ReloadSummary, ReportRequest},
};

use crate::TestBackend;

/// Services every test can use.
pub const CONFIG: &str = r#"
[[services]]
name = "rpm"
limits = [{ dimension = "requests", amount = 3, window = "10s" }]

[[services]]
name = "tpm"
default_cooldown = "2s"
max_cooldown = "30s"
limits = [
  { dimension = "requests", amount = 100, window = "1m" },
  { dimension = "tokens", amount = 1000, window = "1m" },
]

[[services]]
name = "bucket"
limits = [{ dimension = "tokens", amount = 600, window = "1m", algorithm = "token_bucket", burst = 100 }]

[[services]]
name = "oai"
profile = "openai"
limits = [
  { dimension = "requests", amount = 100, window = "1m" },
  { dimension = "tokens", amount = 1000, window = "1m" },
]

[[services]]
name = "claude"
profile = "anthropic"
quota_cooldown = "10m"
limits = [{ dimension = "requests", amount = 50, window = "1m" }]

[[services]]
name = "gemini"
profile = "gemini"
quota_cooldown = "20m"
limits = [{ dimension = "requests", amount = 10, window = "1m" }]

[[services]]
name = "split"
limits = [
  { dimension = "input_tokens", amount = 100, window = "1m" },
  { dimension = "output_tokens", amount = 50, window = "1m", algorithm = "token_bucket" },
]

[[services]]
name = "inflight"
limits = [
  { dimension = "concurrent", amount = 2, timeout = "30s" },
  { dimension = "requests", amount = 100, window = "1m" },
]

[[services]]
name = "org"
limits = [{ dimension = "tokens", amount = 1000, window = "1m" }]

[[services]]
name = "org/big"
parent = "org"
profile = "openai"
limits = [{ dimension = "requests", amount = 100, window = "1m" }]

[[services]]
name = "org/small"
parent = "org"
profile = "openai"
limits = [
  { dimension = "requests", amount = 100, window = "1m" },
  { dimension = "tokens", amount = 600, window = "1m" },
]

[[services]]
name = "adopt"
profile = "openai"
adopt_provider_limits = true
limits = [
  { dimension = "requests", amount = 100, window = "1m" },
  { dimension = "tokens", amount = 1000, window = "1m", algorithm = "token_bucket" },
]
"#;

/// One second in microseconds, as the limiter's answers count time.
pub const US: u64 = 1_000_000;

pub fn specs() -> Vec<Arc<ServiceSpec>> {
    Config::parse(CONFIG)
        .expect("suite config is valid")
        .services
        .into_iter()
        .map(Arc::new)
        .collect()
}

pub async fn limiter<B: TestBackend>() -> Limiter<B> {
    let specs = specs();
    let backend = B::create(&specs).await;
    Limiter::new(specs, backend)
}

/// Reloads `l` with `config`, as a SIGHUP would.
pub async fn reload<B: TestBackend>(l: &Limiter<B>, config: &str) -> Result<ReloadSummary, Error> {
    let config = Config::parse(config).expect("reloaded config is valid");
    l.reconfigure(config.services, config.profiles).await
}

/// [`CONFIG`] with the service `name`'s block replaced by `block` (empty: removed).
pub fn config_with(name: &str, block: &str) -> String {
    replace_block(CONFIG, name, block)
}

/// `config` with the service `name`'s block replaced by `block` (empty: removed).
pub fn replace_block(config: &str, name: &str, block: &str) -> String {
    let mut out = String::new();
    for part in config
        .split("[[services]]")
        .filter(|p| !p.trim().is_empty())
    {
        if part.trim_start().starts_with(&format!("name = {name:?}")) {
            out.push_str(block);
        } else {
            out.push_str("[[services]]");
            out.push_str(part);
        }
    }
    out
}

pub fn req(service: &str, tokens: u64, max_wait: Duration) -> AcquireRequest {
    AcquireRequest {
        service: service.into(),
        tokens,
        max_wait: max_wait.as_micros() as u64,
        ..AcquireRequest::default()
    }
}

pub fn report(
    service: &str,
    lease_id: &str,
    status: u32,
    headers: &[(&str, &str)],
) -> ReportRequest {
    ReportRequest {
        service: service.into(),
        lease_id: lease_id.into(),
        status_code: status,
        headers: headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
        ..ReportRequest::default()
    }
}

/// Grants `req`, returning (lease id, wait in µs); panics on a denial.
pub async fn granted<B: TestBackend>(l: &Limiter<B>, r: &AcquireRequest) -> (String, u64) {
    match l.acquire(r).await.expect("acquire").1 {
        sluice_server::core::Decision::Granted(g) => (g.lease_id.to_string(), g.wait),
        d => panic!("expected a grant, got {d:?}"),
    }
}

/// Returns retry_after in µs of a denial; panics on a grant.
pub async fn denied<B: TestBackend>(l: &Limiter<B>, r: &AcquireRequest) -> u64 {
    match l.acquire(r).await.expect("acquire").1 {
        sluice_server::core::Decision::Denied { retry_after, .. } => retry_after,
        d => panic!("expected a denial, got {d:?}"),
    }
}

pub fn is<T: std::fmt::Debug>(r: Result<T, Error>, f: fn(&Error) -> bool) -> bool {
    match r {
        Err(e) => f(&e),
        Ok(v) => panic!("expected an error, got {v:?}"),
    }
}

/// Reports `lease` of `service` with `status` and returns whether it released an in-flight slot.
pub async fn released<B: TestBackend>(
    l: &Limiter<B>,
    service: &str,
    lease: &str,
    status: u32,
) -> bool {
    let answer = l
        .report(report(service, lease, status, &[]))
        .await
        .expect("report");
    answer.detail.contains("slot released")
}

/// Instantiates the suite for one backend type.
#[macro_export]
macro_rules! behaviour_suite {
    ($backend:ty) => {
        use std::time::Duration;

        use sluice_server::{backend::Backend, error::Error, limiter::UsageReport};
        use $crate::{suite::*, TestBackend};

        type B = $backend;
        const S: Duration = Duration::from_secs(1);

        #[tokio::test]
        async fn sliding_window_counts_requests_exactly() {
            let l = limiter::<B>().await;
            for _ in 0..3 {
                assert_eq!(granted(&l, &req("rpm", 0, Duration::ZERO)).await.1, 0);
                l.backend().advance(S).await;
            }
            // 3 granted at t = 0, 1, 2 s; now t = 3 s: the first leaves the window at 10 s.
            assert_eq!(denied(&l, &req("rpm", 0, Duration::ZERO)).await, 7_000_000);
            let (_, wait) = granted(&l, &req("rpm", 0, 10 * S)).await;
            assert_eq!(wait, 7_000_000);
        }

        #[tokio::test]
        async fn in_flight_slots_are_held_until_reported() {
            let l = limiter::<B>().await;
            let (a, _) = granted(&l, &req("inflight", 0, Duration::ZERO)).await;
            let (b, _) = granted(&l, &req("inflight", 0, Duration::ZERO)).await;
            // Both slots held: the earliest frees itself at its lease timeout.
            assert_eq!(denied(&l, &req("inflight", 0, Duration::ZERO)).await, 30_000_000);
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

        #[tokio::test]
        async fn a_crashed_workers_slot_frees_itself_at_the_lease_timeout() {
            let l = limiter::<B>().await;
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

        #[tokio::test]
        async fn a_request_id_is_replayed_only_while_its_slot_is_held() {
            let l = limiter::<B>().await;
            let mut job = req("inflight", 0, Duration::ZERO);
            job.request_id = "job-1".into();
            let (first, _) = granted(&l, &job).await;
            // A retry while the slot is held is the same call.
            assert_eq!(granted(&l, &job).await.0, first);
            // Reported (the call failed, say): the job retried with its key is a new call that
            // holds a slot of its own.
            assert!(released(&l, "inflight", &first, 0).await);
            let (second, _) = granted(&l, &job).await;
            assert_ne!(second, first);
            let status = l.status("inflight").await.expect("status");
            assert_eq!(status.snapshot.limits[0].used, 1);
            // Its worker crashes: past the timeout, the retried job is a new call again.
            l.backend().advance(31 * S).await;
            let (third, _) = granted(&l, &job).await;
            assert_ne!(third, second);
            granted(&l, &req("inflight", 0, Duration::ZERO)).await;
            denied(&l, &req("inflight", 0, Duration::ZERO)).await;
        }

        #[tokio::test]
        async fn double_and_late_reports_free_nothing_more() {
            let l = limiter::<B>().await;
            let (a, _) = granted(&l, &req("inflight", 0, Duration::ZERO)).await;
            let (b, _) = granted(&l, &req("inflight", 0, Duration::ZERO)).await;
            assert!(released(&l, "inflight", &a, 200).await);
            assert!(!released(&l, "inflight", &a, 200).await, "a second report released");
            granted(&l, &req("inflight", 0, Duration::ZERO)).await;
            // b and the new lease hold both slots.
            denied(&l, &req("inflight", 0, Duration::ZERO)).await;
            // Past the timeout: b's slot was freed by itself and taken by someone else; b's late
            // report must not free that one.
            l.backend().advance(31 * S).await;
            granted(&l, &req("inflight", 0, Duration::ZERO)).await;
            granted(&l, &req("inflight", 0, Duration::ZERO)).await;
            assert!(!released(&l, "inflight", &b, 200).await, "a late report released");
            denied(&l, &req("inflight", 0, Duration::ZERO)).await;
        }

        #[tokio::test]
        async fn a_family_spends_its_parents_budget_atomically() {
            use sluice_server::core::{Decider, Decision};
            let l = limiter::<B>().await;
            granted(&l, &req("org/big", 600, Duration::ZERO)).await;
            granted(&l, &req("org/small", 300, Duration::ZERO)).await;
            // 100 tokens left in the parent: the small model's own limit would allow 300 more.
            match l.acquire(&req("org/small", 200, Duration::ZERO)).await.expect("acquire").1 {
                Decision::Denied { retry_after, decider, .. } => {
                    assert_eq!(decider, Decider::Ancestor { level: 1, limit: Some(0) });
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
            assert!(is(never, |e| matches!(e, Error::NeverFits(n) if n.limit == "org: tokens/1m")));
        }

        #[tokio::test]
        async fn reports_reach_the_parent_and_its_429s_cool_the_family() {
            let l = limiter::<B>().await;
            let (lease, _) = granted(&l, &req("org/big", 900, Duration::ZERO)).await;
            // The call used 200 tokens: the parent is refunded with the child.
            let mut r = report("org/big", &lease, 200, &[]);
            r.usage = Some(UsageReport { total_tokens: Some(200), ..UsageReport::default() });
            l.report(r).await.expect("report");
            assert_eq!(l.status("org").await.expect("status").snapshot.limits[0].used, 200);
            granted(&l, &req("org/small", 500, Duration::ZERO)).await;
            // A 429 on the big model's requests is its own: the parent limits no requests.
            let a = l.report(report("org/big", "", 429, &[("retry-after", "5")])).await.expect("report");
            assert!(a.cooldown_set && !a.detail.contains("family"), "{}", a.detail);
            granted(&l, &req("org/small", 10, Duration::ZERO)).await;
            // A 429 on tokens (the parent's dimension) cools the whole family down.
            let b = l.report(report("org/small", "", 429, &[
                ("x-ratelimit-remaining-tokens", "0"),
                ("x-ratelimit-reset-tokens", "20s"),
            ])).await.expect("report");
            assert!(b.detail.contains("family cooldown set on org"), "{}", b.detail);
            l.backend().advance(6 * S).await;
            assert_eq!(denied(&l, &req("org/big", 10, Duration::ZERO)).await, 14 * US);
            assert_eq!(denied(&l, &req("org", 10, Duration::ZERO)).await, 14 * US);
            // A call that spends no tokens is not held back by a tokens cooldown.
            let mut free = req("org/big", 0, Duration::ZERO);
            free.output_tokens = 0;
            granted(&l, &free).await;
        }

        #[tokio::test]
        async fn token_costs_are_reserved_in_arrival_order() {
            let l = limiter::<B>().await;
            granted(&l, &req("tpm", 800, Duration::ZERO)).await;
            let (_, big) = granted(&l, &req("tpm", 1000, 120 * S)).await;
            assert_eq!(big, 60_000_000);
            // A small request that would fit now waits behind the big one.
            let (_, small) = granted(&l, &req("tpm", 10, 300 * S)).await;
            assert!(small >= big, "small {small} < big {big}");
        }

        #[tokio::test]
        async fn denials_record_nothing() {
            let l = limiter::<B>().await;
            granted(&l, &req("tpm", 1000, Duration::ZERO)).await;
            for _ in 0..50 {
                denied(&l, &req("tpm", 1, Duration::ZERO)).await;
            }
            let status = l.status("tpm").await.expect("status");
            assert_eq!(status.snapshot.limits[0].used, 1, "requests counted");
            assert_eq!(status.snapshot.limits[1].used, 1000);
        }

        #[tokio::test]
        async fn token_bucket_allows_burst_then_refills() {
            let l = limiter::<B>().await;
            granted(&l, &req("bucket", 100, Duration::ZERO)).await;
            // 10 tokens per second.
            assert_eq!(denied(&l, &req("bucket", 50, Duration::ZERO)).await, 5_000_000);
            l.backend().advance(5 * S).await;
            assert_eq!(granted(&l, &req("bucket", 50, Duration::ZERO)).await.1, 0);
        }

        #[tokio::test]
        async fn costs_that_never_fit_are_refused_naming_the_limit() {
            let l = limiter::<B>().await;
            let r = l.acquire(&req("bucket", 101, 60 * S)).await;
            assert!(is(r.map(|_| ()), |e| matches!(e, Error::NeverFits(n) if n.limit == "tokens/1m")));
            let mut split = req("split", 0, 60 * S);
            split.output_tokens = 51;
            let r = l.acquire(&split).await;
            assert!(is(r.map(|_| ()), |e| matches!(e, Error::NeverFits(n) if n.limit == "output_tokens/1m")));
        }

        #[tokio::test]
        async fn a_429_cools_the_service_down_and_cooldowns_only_lengthen() {
            let l = limiter::<B>().await;
            let (lease, _) = granted(&l, &req("tpm", 10, Duration::ZERO)).await;
            let a = l.report(report("tpm", &lease, 429, &[("Retry-After", "20")])).await.expect("report");
            assert!(a.cooldown_set);
            assert_eq!(a.cooldown, 20_000_000);
            let b = l.report(report("tpm", "", 429, &[("retry-after", "5")])).await.expect("report");
            assert!(!b.cooldown_set);
            assert_eq!(b.cooldown, 20_000_000);
            assert_eq!(denied(&l, &req("tpm", 1, Duration::ZERO)).await, 20_000_000);
            let (_, wait) = granted(&l, &req("tpm", 1, 30 * S)).await;
            assert_eq!(wait, 20_000_000);
            // A 429 without retry-after uses the default (2 s); a huge retry-after is clamped (30 s).
            l.backend().advance(21 * S).await;
            let c = l.report(report("tpm", "", 429, &[])).await.expect("report");
            assert_eq!(c.cooldown, 2_000_000);
            let d = l.report(report("tpm", "", 429, &[("retry-after", "86400")])).await.expect("report");
            assert_eq!(d.cooldown, 30_000_000);
            assert!(d.detail.contains("clamped"), "{}", d.detail);
        }

        #[tokio::test]
        async fn overloads_back_off_exponentially_with_jitter_until_a_success() {
            let l = limiter::<B>().await;
            let within = |c: u64, base: u64| (base * 8 / 10..=base * 12 / 10).contains(&c);
            // default_cooldown 2 s: 2 s, then 4 s, then 8 s, each ±20 %.
            for expected in [2 * US, 4 * US, 8 * US] {
                let a = l.report(report("tpm", "", 529, &[])).await.expect("report");
                assert!(a.cooldown_set, "{}", a.detail);
                assert!(within(a.cooldown, expected), "{} not near {expected}", a.cooldown);
                l.backend().advance(Duration::from_micros(a.cooldown)).await;
            }
            // A success resets the streak.
            l.report(report("tpm", "", 200, &[])).await.expect("report");
            let a = l.report(report("tpm", "", 503, &[])).await.expect("report");
            assert!(within(a.cooldown, 2 * US), "{}", a.cooldown);
            // A retry-after is a floor.
            l.backend().advance(3 * S).await;
            l.report(report("tpm", "", 200, &[])).await.expect("report");
            let b = l.report(report("tpm", "", 529, &[("retry-after", "10")])).await.expect("report");
            assert_eq!(b.cooldown, 10 * US);
            let status = l.status("tpm").await.expect("status");
            let (_, cause) = status.snapshot.cooldown.expect("cooldown");
            assert_eq!(cause.source, "529 overloaded");
        }

        #[tokio::test]
        async fn remaining_zero_cools_down_the_dimension_it_names() {
            let l = limiter::<B>().await;
            let ok = report("oai", "", 200, &[
                ("x-ratelimit-remaining-tokens", "0"),
                ("x-ratelimit-reset-tokens", "6s"),
                ("x-ratelimit-remaining-requests", "99"),
            ]);
            let a = l.report(ok).await.expect("report");
            assert!(a.cooldown_set, "{}", a.detail);
            assert_eq!(a.cooldown, 6 * US);
            let status = l.status("oai").await.expect("status");
            assert!(status.snapshot.cooldown.is_none(), "requests are not cooled down");
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
            let limited = report("oai", "", 429, &[
                ("x-ratelimit-remaining-tokens", "0"),
                ("x-ratelimit-reset-tokens", "20s"),
                ("retry-after", "1"),
            ]);
            let b = l.report(limited).await.expect("report");
            assert_eq!(b.cooldown, 20 * US, "{}", b.detail);
            assert_eq!(denied(&l, &req("oai", 10, Duration::ZERO)).await, 20 * US);
        }

        #[tokio::test]
        async fn remaining_below_the_view_is_charged_as_outside_usage() {
            let l = limiter::<B>().await;
            granted(&l, &req("oai", 100, Duration::ZERO)).await;
            // Sluice thinks 900 tokens are left; the provider says 500: 400 went elsewhere.
            let a = l.report(report("oai", "", 200, &[
                ("x-ratelimit-remaining-tokens", "500"),
                ("x-ratelimit-limit-tokens", "2000"),
            ])).await.expect("report");
            assert!(a.detail.contains("charged 400"), "{}", a.detail);
            let status = l.status("oai").await.expect("status");
            assert_eq!(status.snapshot.limits[1].used, 500);
            assert_eq!(status.learned, vec![None, Some(2000)]);
            granted(&l, &req("oai", 500, Duration::ZERO)).await;
            denied(&l, &req("oai", 1, Duration::ZERO)).await;
            // A provider that sees more room than Sluice changes nothing.
            let b = l.report(report("oai", "", 200, &[("x-ratelimit-remaining-tokens", "900")]))
                .await
                .expect("report");
            assert!(!b.detail.contains("charged"), "{}", b.detail);
        }

        #[tokio::test]
        async fn provider_limits_are_adopted_when_the_service_says_so() {
            let l = limiter::<B>().await;
            for _ in 0..3 {
                granted(&l, &req("adopt", 10, Duration::ZERO)).await;
            }
            // The key allows 5 requests, not the configured 100; 2 are left.
            let a = l.report(report("adopt", "", 200, &[
                ("x-ratelimit-limit-requests", "5"),
                ("x-ratelimit-remaining-requests", "2"),
                ("x-ratelimit-limit-tokens", "500"),
            ])).await.expect("report");
            assert!(a.detail.contains("adopted provider budget 5 for requests/1m"), "{}", a.detail);
            // A token bucket adopts it too (its rate and burst follow).
            assert!(a.detail.contains("adopted provider budget 500 for tokens/1m"), "{}", a.detail);
            assert!(!a.detail.contains("charged"), "{}", a.detail);
            let status = l.status("adopt").await.expect("status");
            assert_eq!(status.learned, vec![Some(5), Some(500)]);
            assert_eq!((status.snapshot.limits[0].amount, status.snapshot.limits[0].remaining), (5, 2));
            assert_eq!(status.snapshot.limits[1].amount, 500);
            granted(&l, &req("adopt", 10, Duration::ZERO)).await;
            granted(&l, &req("adopt", 10, Duration::ZERO)).await;
            assert_eq!(denied(&l, &req("adopt", 10, Duration::ZERO)).await, 60 * US);
            // A raised budget is adopted too.
            l.report(report("adopt", "", 200, &[
                ("x-ratelimit-limit-requests", "7"),
                ("x-ratelimit-remaining-requests", "2"),
            ])).await.expect("report");
            granted(&l, &req("adopt", 10, Duration::ZERO)).await;
            granted(&l, &req("adopt", 10, Duration::ZERO)).await;
            denied(&l, &req("adopt", 10, Duration::ZERO)).await;
            // Services that do not adopt only show what they learned.
            l.report(report("oai", "", 200, &[("x-ratelimit-limit-requests", "5")])).await.expect("report");
            let oai = l.status("oai").await.expect("status");
            assert_eq!((oai.learned[0], oai.snapshot.limits[0].amount), (Some(5), 100));
        }

        #[tokio::test]
        async fn operators_clear_cooldowns_and_reset_usage() {
            use sluice_server::core::AdminOp;
            let l = limiter::<B>().await;
            let (lease, _) = granted(&l, &req("rpm", 0, Duration::ZERO)).await;
            // A queued slot behind the cooldown, then the cooldown.
            granted(&l, &req("rpm", 0, Duration::ZERO)).await;
            l.report(report("rpm", &lease, 429, &[("retry-after", "60")])).await.expect("report");
            assert_eq!(denied(&l, &req("rpm", 0, Duration::ZERO)).await, 60 * US);
            let status = l.admin("rpm", AdminOp::ClearCooldowns).await.expect("clear");
            assert!(status.snapshot.cooldown.is_none());
            granted(&l, &req("rpm", 0, Duration::ZERO)).await;
            // The limit (3 per 10 s) is spent; a reset forgets it.
            denied(&l, &req("rpm", 0, Duration::ZERO)).await;
            let status = l.admin("rpm", AdminOp::Reset).await.expect("reset");
            assert_eq!(status.snapshot.limits[0].used, 0);
            granted(&l, &req("rpm", 0, Duration::ZERO)).await;
            // An operator's cooldown works like a provider's, bounded by max_cooldown.
            let status = l.set_cooldown("rpm", 30 * US, "maintenance").await.expect("set");
            let (remaining, cause) = status.snapshot.cooldown.expect("a cooldown");
            assert_eq!((remaining, cause.source.as_str()), (30 * US, "admin: maintenance"));
            assert!(is(l.set_cooldown("rpm", 0, "").await, |e| matches!(e, Error::InvalidArgument(_))));
        }

        #[tokio::test]
        async fn quota_and_spend_caps_cool_down_long_with_the_cause_visible() {
            let l = limiter::<B>().await;
            let mut r = report("claude", "", 429, &[]);
            r.body = br#"{"type":"error","error":{"type":"rate_limit_error","details":{"error_code":"enforced_spend_limit_reached"}}}"#.to_vec();
            let a = l.report(r).await.expect("report");
            assert_eq!(a.cooldown, 600 * US);
            let (_, cause) = l.status("claude").await.expect("status").snapshot.cooldown.expect("cooldown");
            assert!(cause.source.contains("enforced_spend_limit_reached"), "{}", cause.source);

            // Gemini: the wait is in the body; a per-day quota is a long wait.
            let mut r = report("gemini", "", 429, &[]);
            r.body = br#"{"error":{"code":429,"status":"RESOURCE_EXHAUSTED","details":[
                {"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"34s"}]}}"#.to_vec();
            assert_eq!(l.report(r).await.expect("report").cooldown, 34 * US);
            let mut r = report("gemini", "", 429, &[]);
            r.body = br#"{"error":{"code":429,"status":"RESOURCE_EXHAUSTED","details":[
                {"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[
                  {"quotaId":"GenerateRequestsPerDayPerProjectPerModel-FreeTier"}]}]}}"#.to_vec();
            assert_eq!(l.report(r).await.expect("report").cooldown, 1200 * US);
            let (_, cause) = l.status("gemini").await.expect("status").snapshot.cooldown.expect("cooldown");
            assert!(cause.source.contains("PerDay"), "{}", cause.source);
        }

        #[tokio::test]
        async fn reported_usage_refunds_the_estimate() {
            let l = limiter::<B>().await;
            for service in ["tpm", "bucket"] {
                let full = if service == "tpm" { 1000 } else { 100 };
                let (lease, _) = granted(&l, &req(service, full, Duration::ZERO)).await;
                denied(&l, &req(service, full / 2, Duration::ZERO)).await;
                let mut r = report(service, &lease, 200, &[]);
                r.usage = Some(UsageReport { total_tokens: Some(full / 4), ..UsageReport::default() });
                let a = l.report(r).await.expect("report");
                assert!(a.detail.contains("usage applied"), "{}", a.detail);
                granted(&l, &req(service, full * 3 / 4, Duration::ZERO)).await;
                denied(&l, &req(service, 1, Duration::ZERO)).await;
            }
        }

        #[tokio::test]
        async fn interactive_calls_are_booked_ahead_of_queued_batch_calls() {
            let l = limiter::<B>().await;
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
            assert!(is(l.acquire(&call("urgent", "u0")).await, |e| matches!(e, Error::InvalidArgument(m) if m.contains("priority"))));
        }

        #[tokio::test]
        async fn request_id_makes_a_retried_acquire_count_once() {
            let l = limiter::<B>().await;
            let mut r = req("rpm", 0, Duration::ZERO);
            r.request_id = "job-42".into();
            let (a, _) = granted(&l, &r).await;
            let (b, _) = granted(&l, &r).await;
            assert_eq!(a, b);
            assert_eq!(l.status("rpm").await.expect("status").snapshot.limits[0].used, 1);
            r.tokens = 5;
            assert!(is(l.acquire(&r).await.map(|_| ()), |e| matches!(e, Error::InvalidArgument(_))));
        }

        #[tokio::test]
        async fn unknown_leases_are_not_errors_but_malformed_input_is() {
            let l = limiter::<B>().await;
            let mut r = report("tpm", "0000000000000000-7", 200, &[]);
            r.usage = Some(UsageReport { total_tokens: Some(1), ..UsageReport::default() });
            let a = l.report(r).await.expect("report");
            assert!(a.detail.contains("lease unknown"), "{}", a.detail);
            assert!(is(l.report(report("tpm", "garbage", 200, &[])).await, |e| matches!(e, Error::InvalidArgument(_))));
            assert!(is(l.report(report("tpm", "", 99, &[])).await, |e| matches!(e, Error::InvalidArgument(_))));
            assert!(is(l.report(report("nope", "", 200, &[])).await, |e| matches!(e, Error::UnknownService(_))));
            assert!(is(l.report(report("", "", 200, &[])).await, |e| matches!(e, Error::InvalidArgument(_))));
            let many: Vec<(String, String)> = (0..101).map(|i| (format!("x-h{i}"), "v".to_string())).collect();
            let mut r = report("tpm", "", 429, &[]);
            r.headers = many;
            assert!(is(l.report(r).await, |e| matches!(e, Error::InvalidArgument(_))));
            // Nothing of the refused report was applied.
            assert!(l.status("tpm").await.expect("status").snapshot.cooldown.is_none());
        }

        #[tokio::test]
        async fn a_lease_id_only_names_a_lease_of_its_own_service() {
            let l = limiter::<B>().await;
            let (lease, _) = granted(&l, &req("tpm", 1000, Duration::ZERO)).await;
            // Reported under another service, the lease is unknown and refunds nothing.
            let mut r = report("bucket", &lease, 200, &[]);
            r.usage = Some(UsageReport { total_tokens: Some(1), ..UsageReport::default() });
            let a = l.report(r).await.expect("report");
            assert!(a.detail.contains("lease unknown"), "{}", a.detail);
            denied(&l, &req("tpm", 1, Duration::ZERO)).await;
        }

        #[tokio::test]
        async fn status_shows_the_providers_last_answer() {
            let l = limiter::<B>().await;
            let r = report("tpm", "", 200, &[("X-RateLimit-Remaining-Tokens", "77"), ("content-type", "json")]);
            l.report(r).await.expect("report");
            l.backend().advance(3 * S).await;
            let status = l.status("tpm").await.expect("status");
            let last = status.snapshot.last_report.expect("last report");
            assert_eq!(last.status_code, 200);
            assert_eq!(last.headers, vec![("x-ratelimit-remaining-tokens".to_string(), "77".to_string())]);
            assert_eq!(status.snapshot.now - last.at, 3_000_000);
        }

        #[tokio::test]
        async fn expired_leases_are_dropped_and_idle_services_shrink() {
            let l = limiter::<B>().await;
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

        #[tokio::test]
        async fn services_are_independent() {
            let l = limiter::<B>().await;
            l.report(report("tpm", "", 429, &[("retry-after", "60")])).await.expect("report");
            assert_eq!(granted(&l, &req("rpm", 0, Duration::ZERO)).await.1, 0);
        }

        #[tokio::test]
        async fn a_reload_keeps_the_state_of_surviving_services_and_adds_and_removes_services() {
            let l = limiter::<B>().await;
            granted(&l, &req("rpm", 0, Duration::ZERO)).await;
            granted(&l, &req("rpm", 0, Duration::ZERO)).await;
            l.report(report("tpm", "", 429, &[("retry-after", "25")])).await.expect("report");
            let fresh = "[[services]]\nname = \"fresh\"\nlimits = [{ dimension = \"requests\", amount = 1, window = \"1m\" }]\n";
            let summary = reload(&l, &config_with("split", fresh)).await.expect("reload");
            assert_eq!(summary.added, ["fresh"]);
            assert_eq!(summary.removed, ["split"]);
            assert!(summary.changed.is_empty(), "{summary:?}");
            assert_eq!(summary.unchanged.len(), 11);
            // rpm still counts its two grants; tpm is still cooling down.
            granted(&l, &req("rpm", 0, Duration::ZERO)).await;
            denied(&l, &req("rpm", 0, Duration::ZERO)).await;
            assert_eq!(denied(&l, &req("tpm", 1, Duration::ZERO)).await, 25 * US);
            assert!(is(l.acquire(&req("split", 1, Duration::ZERO)).await, |e| matches!(e, Error::UnknownService(_))));
            assert!(is(l.status("split").await, |e| matches!(e, Error::UnknownService(_))));
            granted(&l, &req("fresh", 0, Duration::ZERO)).await;
            let listed: Vec<String> = l.list().await.expect("list").into_iter().map(|s| s.spec.name.clone()).collect();
            assert_eq!(listed, ["rpm", "tpm", "bucket", "oai", "claude", "gemini", "fresh", "inflight", "org", "org/big", "org/small", "adopt"]);
        }

        #[tokio::test]
        async fn a_reload_carries_usage_over_to_changed_limits() {
            let l = limiter::<B>().await;
            for _ in 0..3 {
                granted(&l, &req("tpm", 300, Duration::ZERO)).await;
            }
            // split: input_tokens 100/1m sliding, output_tokens 50/1m bucket; empty the bucket.
            let mut split = req("split", 0, Duration::ZERO);
            (split.input_tokens, split.output_tokens) = (60, 50);
            granted(&l, &split).await;
            granted(&l, &req("bucket", 100, Duration::ZERO)).await;
            let tpm = "[[services]]\nname = \"tpm\"\ndefault_cooldown = \"2s\"\nmax_cooldown = \"30s\"\nlimits = [\n  { dimension = \"requests\", amount = 4, window = \"1m\" },\n  { dimension = \"tokens\", amount = 1000, window = \"1m\" },\n]\n";
            // The same bucket, now listed first, and a lower input budget.
            let split_block = "[[services]]\nname = \"split\"\nlimits = [\n  { dimension = \"output_tokens\", amount = 50, window = \"1m\", algorithm = \"token_bucket\" },\n  { dimension = \"input_tokens\", amount = 80, window = \"1m\" },\n]\n";
            let bucket = "[[services]]\nname = \"bucket\"\nlimits = [{ dimension = \"tokens\", amount = 600, window = \"1m\", algorithm = \"token_bucket\", burst = 200 }]\n";
            let text = config_with("tpm", tpm);
            let text = replace_block(&text, "split", split_block);
            let text = replace_block(&text, "bucket", bucket);
            let summary = reload(&l, &text).await.expect("reload");
            assert_eq!(summary.changed, ["tpm", "bucket", "split"]);
            // tpm: 3 of 4 requests and 900 of 1000 tokens already used.
            granted(&l, &req("tpm", 100, Duration::ZERO)).await;
            let status = l.status("tpm").await.expect("status");
            assert_eq!((status.snapshot.limits[0].amount, status.snapshot.limits[0].used), (4, 4));
            assert_eq!(status.snapshot.limits[1].used, 1000);
            denied(&l, &req("tpm", 1, Duration::ZERO)).await;
            // split: the unchanged bucket is still empty (refills 50 a minute), 60 of 80 input used.
            let mut output = req("split", 0, Duration::ZERO);
            output.output_tokens = 10;
            assert_eq!(denied(&l, &output).await, 12 * US);
            let mut input = req("split", 0, Duration::ZERO);
            input.input_tokens = 21;
            denied(&l, &input).await;
            input.input_tokens = 20;
            granted(&l, &input).await;
            // bucket: a reshaped bucket is a new limit and starts full.
            granted(&l, &req("bucket", 200, Duration::ZERO)).await;
        }

        #[tokio::test]
        async fn a_reload_that_turns_adoption_off_restores_the_configured_amount() {
            let l = limiter::<B>().await;
            l.report(report("adopt", "", 200, &[("x-ratelimit-limit-requests", "5")])).await.expect("report");
            assert_eq!(l.status("adopt").await.expect("status").snapshot.limits[0].amount, 5);
            let text = CONFIG.replace("adopt_provider_limits = true\n", "");
            let summary = reload(&l, &text).await.expect("reload");
            assert_eq!(summary.changed, ["adopt"]);
            assert_eq!(l.status("adopt").await.expect("status").snapshot.limits[0].amount, 100);
        }

        #[tokio::test]
        async fn calls_carrying_a_replaced_configuration_are_refused_by_the_backend() {
            let l = limiter::<B>().await;
            let old = l.service("rpm").expect("rpm").spec.clone();
            let rpm = "[[services]]\nname = \"rpm\"\nlimits = [{ dimension = \"requests\", amount = 5, window = \"10s\" }]\n";
            reload(&l, &config_with("rpm", rpm)).await.expect("reload");
            let call = sluice_server::backend::AcquireCall {
                cost: sluice_server::core::Cost::of_call(0, 0, 0),
                max_wait: 0,
                request_id: None,
                class: sluice_server::core::Class::TOP,
            };
            let stale = l.backend().acquire(&old, call).await;
            assert!(matches!(stale, Err(sluice_server::backend::BackendError::Reconfigured(_))), "{stale:?}");
            // Through the limiter, the new configuration answers: five grants.
            for _ in 0..5 {
                granted(&l, &req("rpm", 0, Duration::ZERO)).await;
            }
            denied(&l, &req("rpm", 0, Duration::ZERO)).await;
        }

        #[tokio::test]
        async fn a_limit_dropped_and_added_back_by_reloads_leaves_a_working_service() {
            let l = limiter::<B>().await;
            for _ in 0..3 {
                granted(&l, &req("tpm", 300, Duration::ZERO)).await;
            }
            let requests_only = "[[services]]\nname = \"tpm\"\nlimits = [{ dimension = \"requests\", amount = 100, window = \"1m\" }]\n";
            reload(&l, &config_with("tpm", requests_only)).await.expect("reload");
            for _ in 0..2 {
                granted(&l, &req("tpm", 100, Duration::ZERO)).await;
            }
            l.backend().advance(30 * S).await;
            reload(&l, CONFIG).await.expect("reload back");
            // Whatever the tokens limit counts from its return (memory: every lease it still
            // holds; Redis: the calls from the reload on), decisions keep coming, never errors.
            for _ in 0..5 {
                l.acquire(&req("tpm", 50, Duration::ZERO)).await.expect("a decision");
            }
            l.backend().advance(31 * S).await;
            l.backend().maintain().await;
            let status = l.status("tpm").await.expect("status");
            assert!(status.snapshot.limits[1].used <= 1000, "{status:?}");
            granted(&l, &req("tpm", 100, Duration::ZERO)).await;
        }
    };
}
