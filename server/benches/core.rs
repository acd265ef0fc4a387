//! Criterion microbenchmarks of the limiter core: one decision on a [`Ledger`] per algorithm and
//! per number of limits, granted (a lease booked, an old one pruned) or denied (nothing written),
//! and a report that reconciles a lease. Time advances 1 ms per decision, so a steady state of
//! about a thousand live leases per one-second window is measured, not an empty ledger.

#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use sluice_server::core::{
    Algorithm, Cost, Decision, Dimension, LeaseId, Ledger, LimitSpec, Micros, ReportCall,
    ServiceSpec,
};

const S: Micros = 1_000_000;
const T0: Micros = 1_800_000_000 * S;

fn spec(algorithm: Algorithm, limits: usize, amount: u64) -> ServiceSpec {
    let dims = [
        Dimension::Requests,
        Dimension::Tokens,
        Dimension::InputTokens,
        Dimension::OutputTokens,
    ];
    ServiceSpec::new(
        "bench",
        (0..limits)
            .map(|i| LimitSpec::new(dims[i % 4], amount, S * (1 + (i / 4) as u64), algorithm))
            .collect(),
    )
}

fn algorithms(burst: u64) -> [(&'static str, Algorithm); 2] {
    [
        ("sliding_window", Algorithm::SlidingWindow),
        ("token_bucket", Algorithm::TokenBucket { burst }),
    ]
}

fn acquire(c: &mut Criterion) {
    let cost = Cost::of_call(100, 60, 40);
    let mut granted = c.benchmark_group("acquire_granted");
    for (name, algorithm) in algorithms(1_000_000_000) {
        for limits in [1, 2, 4] {
            let spec = spec(algorithm, limits, 1_000_000_000);
            let mut ledger = Ledger::new(&spec, 1);
            let mut now = T0;
            granted.bench_with_input(BenchmarkId::new(name, limits), &limits, |b, _| {
                b.iter(|| {
                    now += 1_000;
                    let d = ledger.acquire(&spec, now, cost, 0, None);
                    assert!(matches!(d, Ok(Decision::Granted(_))));
                })
            });
        }
    }
    granted.finish();
    let mut denied = c.benchmark_group("acquire_denied");
    for (name, algorithm) in algorithms(100) {
        for limits in [1, 2, 4] {
            // Filled at the start; time stands still.
            let spec = spec(algorithm, limits, 100);
            let mut ledger = Ledger::new(&spec, 1);
            while let Ok(Decision::Granted(_)) = ledger.acquire(&spec, T0, cost, 0, None) {}
            denied.bench_with_input(BenchmarkId::new(name, limits), &limits, |b, _| {
                b.iter(|| {
                    let d = ledger.acquire(&spec, T0 + 1, cost, 0, None);
                    assert!(matches!(d, Ok(Decision::Denied { .. })));
                })
            });
        }
    }
    denied.finish();
}

fn report(c: &mut Criterion) {
    let mut group = c.benchmark_group("report_usage");
    for (name, algorithm) in algorithms(1_000_000_000) {
        let spec = spec(algorithm, 2, 1_000_000_000);
        let mut ledger = Ledger::new(&spec, 1);
        let mut now = T0;
        group.bench_function(name, |b| {
            b.iter(|| {
                now += 1_000;
                let Ok(Decision::Granted(g)) =
                    ledger.acquire(&spec, now, Cost::of_call(100, 0, 0), 0, None)
                else {
                    panic!("not granted");
                };
                let call = ReportCall {
                    lease: Some(LeaseId {
                        nonce: 1,
                        seq: g.lease_id.seq,
                    }),
                    usage: Some([None, Some(80), None, None]),
                    success: true,
                    ..ReportCall::default()
                };
                ledger.report(&spec, now, &call)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, acquire, report);
criterion_main!(benches);
