//! Learning the provider's real budget (issue 16), instantiated per backend by [`budget_suite!`]:
//! token buckets adopt a provider's `limit` (rate and burst follow, the state carries over) and
//! are drained by a `remaining` below Sluice's view, never filled.

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
name = "oai-bucket-fixed"
profile = "openai"
limits = [{ dimension = "tokens", amount = 20000, window = "1m", algorithm = "token_bucket" }]
"#;

/// Instantiates the budget tests for one backend type.
#[macro_export]
macro_rules! budget_suite {
    ($backend:ty) => {
        use std::time::Duration;

        use $crate::{budgets::*, families::limiter_for, suite::*, TestBackend};

        type B = $backend;
        const S: Duration = Duration::from_secs(1);

        #[tokio::test]
        async fn a_token_bucket_adopts_the_providers_budget_with_its_rate_and_burst() {
            let l = limiter_for::<B>(BUDGETS).await;
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

        #[tokio::test]
        async fn a_providers_remaining_below_the_view_drains_a_token_bucket_and_never_fills_it() {
            let l = limiter_for::<B>(BUDGETS).await;
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
    };
}
