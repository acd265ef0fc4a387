//! Live reloads: surviving services keep their state, changed limits carry usage over, calls of a
//! replaced configuration are refused, limits dropped and added back work.

use std::time::Duration;

use sluice_server::error::Error;

use crate::{suite::*, TestBackend};

const S: Duration = Duration::from_secs(1);

pub(crate) async fn a_reload_keeps_the_state_of_surviving_services_and_adds_and_removes_services<
    B: TestBackend,
>() {
    let services = services(&["rpm", "tpm", "bucket", "split"]);
    let l = limiter_for::<B>(&services).await;
    granted(&l, &req("rpm", 0, Duration::ZERO)).await;
    granted(&l, &req("rpm", 0, Duration::ZERO)).await;
    l.report(report("tpm", "", 429, &[("retry-after", "25")]))
        .await
        .expect("report");
    let fresh = "[[services]]\nname = \"fresh\"\nlimits = [{ dimension = \"requests\", amount = 1, window = \"1m\" }]\n";
    let summary = reload(&l, &replace_block(&services, "split", fresh))
        .await
        .expect("reload");
    assert_eq!(summary.added, ["fresh"]);
    assert_eq!(summary.removed, ["split"]);
    assert!(summary.changed.is_empty(), "{summary:?}");
    assert_eq!(summary.unchanged, ["rpm", "tpm", "bucket"]);
    // rpm still counts its two grants; tpm is still cooling down.
    granted(&l, &req("rpm", 0, Duration::ZERO)).await;
    denied(&l, &req("rpm", 0, Duration::ZERO)).await;
    assert_eq!(denied(&l, &req("tpm", 1, Duration::ZERO)).await, 25 * US);
    assert!(is(
        l.acquire(&req("split", 1, Duration::ZERO)).await,
        |e| matches!(e, Error::UnknownService(_))
    ));
    assert!(is(l.status("split").await, |e| matches!(
        e,
        Error::UnknownService(_)
    )));
    granted(&l, &req("fresh", 0, Duration::ZERO)).await;
    let listed: Vec<String> = l
        .list()
        .await
        .expect("list")
        .into_iter()
        .map(|s| s.spec.name.clone())
        .collect();
    assert_eq!(listed, ["rpm", "tpm", "bucket", "fresh"]);
}

pub(crate) async fn a_reload_carries_usage_over_to_changed_limits<B: TestBackend>() {
    let services = services(&["tpm", "bucket", "split"]);
    let l = limiter_for::<B>(&services).await;
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
    let text = replace_block(&services, "tpm", tpm);
    let text = replace_block(&text, "split", split_block);
    let text = replace_block(&text, "bucket", bucket);
    let summary = reload(&l, &text).await.expect("reload");
    assert_eq!(summary.changed, ["tpm", "bucket", "split"]);
    // tpm: 3 of 4 requests and 900 of 1000 tokens already used.
    granted(&l, &req("tpm", 100, Duration::ZERO)).await;
    let status = l.status("tpm").await.expect("status");
    assert_eq!(
        (
            status.snapshot.limits[0].amount,
            status.snapshot.limits[0].used
        ),
        (4, 4)
    );
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

pub(crate) async fn a_reload_that_turns_adoption_off_restores_the_configured_amount<
    B: TestBackend,
>() {
    let services = services(&["adopt"]);
    let l = limiter_for::<B>(&services).await;
    l.report(report(
        "adopt",
        "",
        200,
        &[("x-ratelimit-limit-requests", "5")],
    ))
    .await
    .expect("report");
    assert_eq!(
        l.status("adopt").await.expect("status").snapshot.limits[0].amount,
        5
    );
    let text = services.replace("adopt_provider_limits = true\n", "");
    let summary = reload(&l, &text).await.expect("reload");
    assert_eq!(summary.changed, ["adopt"]);
    assert_eq!(
        l.status("adopt").await.expect("status").snapshot.limits[0].amount,
        100
    );
}

pub(crate) async fn calls_carrying_a_replaced_configuration_are_refused_by_the_backend<
    B: TestBackend,
>() {
    let l = limiter::<B>(&["rpm"]).await;
    let old = l.service("rpm").expect("rpm").spec.clone();
    let rpm = "[[services]]\nname = \"rpm\"\nlimits = [{ dimension = \"requests\", amount = 5, window = \"10s\" }]\n";
    reload(&l, rpm).await.expect("reload");
    let call = sluice_server::backend::AcquireCall {
        cost: sluice_server::core::Cost::of_call(0, 0, 0),
        max_wait: 0,
        request_id: None,
        class: sluice_server::core::Class::TOP,
    };
    let stale = l.backend().acquire(&old, call).await;
    assert!(
        matches!(
            stale,
            Err(sluice_server::backend::BackendError::Reconfigured(_))
        ),
        "{stale:?}"
    );
    // Through the limiter, the new configuration answers: five grants.
    for _ in 0..5 {
        granted(&l, &req("rpm", 0, Duration::ZERO)).await;
    }
    denied(&l, &req("rpm", 0, Duration::ZERO)).await;
}

pub(crate) async fn a_limit_dropped_and_added_back_by_reloads_leaves_a_working_service<
    B: TestBackend,
>() {
    let services = services(&["tpm"]);
    let l = limiter_for::<B>(&services).await;
    for _ in 0..3 {
        granted(&l, &req("tpm", 300, Duration::ZERO)).await;
    }
    let requests_only = "[[services]]\nname = \"tpm\"\nlimits = [{ dimension = \"requests\", amount = 100, window = \"1m\" }]\n";
    reload(&l, requests_only).await.expect("reload");
    for _ in 0..2 {
        granted(&l, &req("tpm", 100, Duration::ZERO)).await;
    }
    l.backend().advance(30 * S).await;
    reload(&l, &services).await.expect("reload back");
    // Whatever the tokens limit counts from its return (memory: every lease it still
    // holds; Redis: the calls from the reload on), decisions keep coming, never errors.
    for _ in 0..5 {
        l.acquire(&req("tpm", 50, Duration::ZERO))
            .await
            .expect("a decision");
    }
    l.backend().advance(31 * S).await;
    l.backend().maintain().await;
    let status = l.status("tpm").await.expect("status");
    assert!(status.snapshot.limits[1].used <= 1000, "{status:?}");
    granted(&l, &req("tpm", 100, Duration::ZERO)).await;
}
