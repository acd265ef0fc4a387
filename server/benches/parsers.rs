//! Criterion microbenchmarks of the provider parsers: reading a realistic answer of each profile
//! (headers, and the body where the profile reads it), and the time formats alone.

#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion};
use sluice_server::provider::{
    self,
    formats::{parse_go_duration, parse_wait, TimeFormat},
    Header, Profile,
};

const NOW: u64 = 1_740_435_900_000_000;

fn headers(pairs: &[(&str, &str)]) -> Vec<Header> {
    pairs
        .iter()
        .map(|(n, v)| Header {
            name: n.to_string(),
            value: v.to_string(),
        })
        .collect()
}

fn profiles(c: &mut Criterion) {
    let cases: Vec<(&str, Vec<Header>, &[u8])> = vec![
        (
            "openai",
            headers(&[
                ("x-ratelimit-limit-requests", "5000"),
                ("x-ratelimit-remaining-requests", "4999"),
                ("x-ratelimit-reset-requests", "12ms"),
                ("x-ratelimit-limit-tokens", "800000"),
                ("x-ratelimit-remaining-tokens", "799000"),
                ("x-ratelimit-reset-tokens", "2m59.56s"),
            ]),
            b"",
        ),
        (
            "anthropic",
            headers(&[
                ("retry-after", "23"),
                ("anthropic-ratelimit-requests-limit", "50"),
                ("anthropic-ratelimit-requests-remaining", "0"),
                ("anthropic-ratelimit-requests-reset", "2025-02-24T22:25:32Z"),
                ("anthropic-ratelimit-input-tokens-limit", "40000"),
                ("anthropic-ratelimit-input-tokens-remaining", "12000"),
                ("anthropic-ratelimit-input-tokens-reset", "2025-02-24T22:25:40Z"),
            ]),
            b"",
        ),
        (
            "generic",
            headers(&[
                ("ratelimit-policy", "\"default\";q=100;w=10"),
                ("ratelimit", "\"default\";r=50;t=30"),
                ("retry-after", "Mon, 24 Feb 2025 22:25:32 GMT"),
            ]),
            b"",
        ),
        (
            "gemini",
            Vec::new(),
            br#"{"error":{"code":429,"status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{"quotaId":"GenerateRequestsPerMinutePerProjectPerModel"}]},{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"34.5s"}]}}"#,
        ),
    ];
    let mut group = c.benchmark_group("read_answer");
    for (name, headers, body) in cases {
        let Some(profile) = Profile::builtin(name) else {
            panic!("no profile {name}");
        };
        group.bench_function(name, |b| {
            b.iter(|| provider::read(&profile, &headers, body, NOW))
        });
    }
    group.finish();
}

fn formats(c: &mut Criterion) {
    let mut group = c.benchmark_group("formats");
    group.bench_function("go_duration", |b| b.iter(|| parse_go_duration("2m59.56s")));
    group.bench_function("rfc3339", |b| {
        b.iter(|| parse_wait(TimeFormat::Rfc3339, "2025-02-24T22:25:32Z", NOW))
    });
    group.bench_function("http_date", |b| {
        b.iter(|| parse_wait(TimeFormat::HttpDate, "Mon, 24 Feb 2025 22:25:32 GMT", NOW))
    });
    group.bench_function("garbage", |b| {
        b.iter(|| parse_wait(TimeFormat::Duration, "\u{1F600}99999999999999999999h", NOW))
    });
    group.finish();
}

criterion_group!(benches, profiles, formats);
criterion_main!(benches);
