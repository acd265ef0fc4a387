//! Leases and request ids: a retried acquire counts once, a lease id names one lease of one
//! service, late and double reports free nothing more, malformed input is an error.

use std::time::Duration;

use sluice_server::{error::Error, limiter::UsageReport};

use crate::{suite::*, TestBackend};

const S: Duration = Duration::from_secs(1);

pub(crate) async fn a_request_id_is_replayed_only_while_its_slot_is_held<B: TestBackend>() {
    let l = limiter::<B>(&["inflight"]).await;
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

pub(crate) async fn double_and_late_reports_free_nothing_more<B: TestBackend>() {
    let l = limiter::<B>(&["inflight"]).await;
    let (a, _) = granted(&l, &req("inflight", 0, Duration::ZERO)).await;
    let (b, _) = granted(&l, &req("inflight", 0, Duration::ZERO)).await;
    assert!(released(&l, "inflight", &a, 200).await);
    assert!(
        !released(&l, "inflight", &a, 200).await,
        "a second report released"
    );
    granted(&l, &req("inflight", 0, Duration::ZERO)).await;
    // b and the new lease hold both slots.
    denied(&l, &req("inflight", 0, Duration::ZERO)).await;
    // Past the timeout: b's slot was freed by itself and taken by someone else; b's late
    // report must not free that one.
    l.backend().advance(31 * S).await;
    granted(&l, &req("inflight", 0, Duration::ZERO)).await;
    granted(&l, &req("inflight", 0, Duration::ZERO)).await;
    assert!(
        !released(&l, "inflight", &b, 200).await,
        "a late report released"
    );
    denied(&l, &req("inflight", 0, Duration::ZERO)).await;
}

pub(crate) async fn request_id_makes_a_retried_acquire_count_once<B: TestBackend>() {
    let l = limiter::<B>(&["rpm"]).await;
    let mut r = req("rpm", 0, Duration::ZERO);
    r.request_id = "job-42".into();
    let (a, _) = granted(&l, &r).await;
    let (b, _) = granted(&l, &r).await;
    assert_eq!(a, b);
    assert_eq!(
        l.status("rpm").await.expect("status").snapshot.limits[0].used,
        1
    );
    r.tokens = 5;
    assert!(is(l.acquire(&r).await.map(|_| ()), |e| matches!(
        e,
        Error::InvalidArgument(_)
    )));
}

pub(crate) async fn unknown_leases_are_not_errors_but_malformed_input_is<B: TestBackend>() {
    let l = limiter::<B>(&["tpm"]).await;
    let mut r = report("tpm", "0000000000000000-7", 200, &[]);
    r.usage = Some(UsageReport {
        total_tokens: Some(1),
        ..UsageReport::default()
    });
    let a = l.report(r).await.expect("report");
    assert!(a.detail.contains("lease unknown"), "{}", a.detail);
    assert!(is(
        l.report(report("tpm", "garbage", 200, &[])).await,
        |e| matches!(e, Error::InvalidArgument(_))
    ));
    assert!(is(
        l.report(report("tpm", "", 99, &[])).await,
        |e| matches!(e, Error::InvalidArgument(_))
    ));
    assert!(is(
        l.report(report("nope", "", 200, &[])).await,
        |e| matches!(e, Error::UnknownService(_))
    ));
    assert!(is(l.report(report("", "", 200, &[])).await, |e| matches!(
        e,
        Error::InvalidArgument(_)
    )));
    let many: Vec<(String, String)> = (0..101)
        .map(|i| (format!("x-h{i}"), "v".to_string()))
        .collect();
    let mut r = report("tpm", "", 429, &[]);
    r.headers = many;
    assert!(is(l.report(r).await, |e| matches!(
        e,
        Error::InvalidArgument(_)
    )));
    // Nothing of the refused report was applied.
    assert!(l
        .status("tpm")
        .await
        .expect("status")
        .snapshot
        .cooldown
        .is_none());
}

pub(crate) async fn a_lease_id_only_names_a_lease_of_its_own_service<B: TestBackend>() {
    let l = limiter::<B>(&["tpm", "bucket"]).await;
    let (lease, _) = granted(&l, &req("tpm", 1000, Duration::ZERO)).await;
    // Reported under another service, the lease is unknown and refunds nothing.
    let mut r = report("bucket", &lease, 200, &[]);
    r.usage = Some(UsageReport {
        total_tokens: Some(1),
        ..UsageReport::default()
    });
    let a = l.report(r).await.expect("report");
    assert!(a.detail.contains("lease unknown"), "{}", a.detail);
    denied(&l, &req("tpm", 1, Duration::ZERO)).await;
}
