//! Differential property test: for random limits (sliding windows, token buckets, calls in
//! flight) and random sequences of acquires, waits, reports (refunds, charges, cooldowns, released
//! in-flight slots, repeated reports) and status reads, the Redis backend's Lua scripts answer
//! exactly what the memory backend's `Ledger` answers at the same times. The Redis side runs on a
//! real `redis-server` started for this test, with the decision time set by hand.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use proptest::{prelude::*, test_runner::TestRunner};
use sluice_e2e::redis_server::RedisServer;
use sluice_server::{
    backend::{AcquireCall, Backend, BackendError, RedisBackend},
    config::{RedisConfig, RedisUrl},
    core::{
        acquire_in_family, AcquireError, AdminOp, AdoptOrder, Algorithm, Class, CooldownCause,
        CooldownOrder, Cost, Decision, Dimension, LeaseId, Ledger, LimitSpec, Member, Micros,
        OverloadOrder, RemainingReading, ReportCall, ServiceSpec,
    },
};

const S: Micros = 1_000_000;

/// The priority classes acquires draw from: rank 0 is never overtaken; a rank-1 lease may be
/// overtaken once, a rank-2 lease three times.
fn class(rank: u8) -> Class {
    match rank {
        0 => Class::TOP,
        1 => Class::with_min_share(1, 0.5),
        _ => Class::with_min_share(2, 0.25),
    }
}
const T0: Micros = 1_800_000_000 * S;

#[derive(Clone, Debug)]
enum Op {
    Acquire {
        tokens: u64,
        max_wait: Micros,
        request_id: Option<u8>,
        /// Priority class (0 the highest; see `CLASSES`).
        rank: u8,
    },
    Advance(Micros),
    /// Acquires sent as one batch (as concurrent acquires of a replica are): decided like the
    /// same acquires one after the other.
    Burst(Vec<(u64, Micros, Option<u8>, u8)>),
    Report {
        back: usize,
        percent: u64,
        cooldown: Option<(usize, Micros)>,
        overload: Option<u32>,
        success: bool,
        remaining: Option<(usize, u64, u64)>,
        adopt: Option<(usize, u64)>,
    },
    Status,
    /// An operator's action: reset (true) or clear the cooldowns (false).
    Admin(bool),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (1u64..=60, prop_oneof![Just(0), 0..30 * S], prop::option::weighted(0.2, 0u8..4), 0u8..3)
            .prop_map(|(tokens, max_wait, request_id, rank)| Op::Acquire { tokens, max_wait, request_id, rank }),
        3 => (0..4 * S).prop_map(Op::Advance),
        1 => prop::collection::vec(
            (1u64..=60, prop_oneof![Just(0), 0..30 * S], prop::option::weighted(0.2, 0u8..4), 0u8..3),
            2..6,
        )
        .prop_map(Op::Burst),
        3 => (
            (0usize..6, 0u64..=150, prop::option::weighted(0.2, (0usize..4, 1..10 * S))),
            (
                prop::option::weighted(0.15, 800u32..=1200),
                any::<bool>(),
                prop::option::weighted(0.3, (0usize..3, 0u64..300, prop_oneof![Just(0), Just(50)])),
                prop::option::weighted(0.15, (0usize..3, 1u64..300)),
            ),
        )
            .prop_map(|((back, percent, cooldown), (overload, success, remaining, adopt))| Op::Report {
                back,
                percent,
                cooldown,
                overload,
                success,
                remaining,
                adopt,
            }),
        1 => Just(Op::Status),
        1 => any::<bool>().prop_map(Op::Admin),
    ]
}

fn limit() -> impl Strategy<Value = LimitSpec> {
    prop_oneof![
        4 => budget(),
        1 => (1u64..=4, 2u64..=20).prop_map(|(amount, secs)| LimitSpec::concurrent(amount, secs * S)),
    ]
}

fn budget() -> impl Strategy<Value = LimitSpec> {
    (any::<bool>(), 60u64..=200, 1u64..=20, 0u8..3, 30u64..=300).prop_map(
        |(bucket, amount, secs, dim, burst)| {
            let dimension = [
                Dimension::Requests,
                Dimension::Tokens,
                Dimension::OutputTokens,
            ][usize::from(dim)];
            let amount = if dimension == Dimension::Requests {
                amount / 10
            } else {
                amount
            };
            let algorithm = if bucket {
                Algorithm::TokenBucket {
                    burst: burst.max(60),
                }
            } else {
                Algorithm::SlidingWindow
            };
            LimitSpec::new(dimension, amount, secs * S, algorithm)
        },
    )
}

/// A service with `limits`, keeping only the first in-flight limit (a service has at most one).
fn spec(mut limits: Vec<LimitSpec>) -> ServiceSpec {
    let concurrent = |l: &LimitSpec| l.algorithm == Algorithm::Concurrent;
    if let Some(first) = limits.iter().position(concurrent) {
        let mut i = 0;
        limits.retain(|l| {
            i += 1;
            i - 1 == first || !concurrent(l)
        });
    }
    ServiceSpec::new("diff/svc", limits)
}

/// Same outcome. Lease ids are not compared: the nonces differ by design, and Redis restarts a
/// service's numbering when all of its keys have expired, while the memory ledger counts on.
fn same_decision(memory: &Decision, redis: &Decision) -> bool {
    match (memory, redis) {
        (Decision::Granted(m), Decision::Granted(r)) => {
            m.slot == r.slot && m.wait == r.wait && m.decider == r.decider
        }
        _ => memory == redis,
    }
}

/// Checks that both backends answered one acquire alike; the two lease ids of a grant.
fn same_answer(
    memory: Result<Decision, AcquireError>,
    redis: Result<Decision, BackendError>,
    t: Micros,
) -> Result<Option<(LeaseId, LeaseId)>, TestCaseError> {
    match (memory, redis) {
        (Ok(m), Ok(r)) => {
            prop_assert!(
                same_decision(&m, &r),
                "acquire at {t}: memory {m:?}, redis {r:?}"
            );
            Ok(match (m, r) {
                (Decision::Granted(m), Decision::Granted(r)) => Some((m.lease_id, r.lease_id)),
                _ => None,
            })
        }
        (Err(m), Err(BackendError::Refused(r))) => {
            prop_assert_eq!(m, r);
            Ok(None)
        }
        (m, r) => Err(TestCaseError::fail(format!(
            "acquire at {t}: memory {m:?}, redis {r:?}"
        ))),
    }
}

async fn run_case(
    redis_url: String,
    case: u64,
    limits: Vec<LimitSpec>,
    ops: Vec<Op>,
    adopt_provider_limits: bool,
    adaptive: bool,
) -> Result<(), TestCaseError> {
    let spec = Arc::new(ServiceSpec {
        adopt_provider_limits,
        adaptive,
        ..spec(limits)
    });
    let now = Arc::new(AtomicU64::new(T0));
    let config = RedisConfig::new(RedisUrl::parse(&redis_url).map_err(TestCaseError::fail)?)
        .key_prefix(format!("case{case}"))
        .timeout(Duration::from_secs(5));
    let backend = RedisBackend::connect(std::slice::from_ref(&spec), &config)
        .await
        .map_err(|e| TestCaseError::fail(e.to_string()))?
        .with_manual_time(now.clone());
    let mut ledger = Ledger::new(&spec, 7);
    let mut t = T0;
    // (memory lease, redis lease, tokens asked)
    let mut grants = Vec::new();
    for op in ops {
        now.store(t, Ordering::SeqCst);
        match op {
            Op::Acquire {
                tokens,
                max_wait,
                request_id,
                rank,
            } => {
                let cost = Cost::of_call(tokens, 0, tokens / 2);
                if spec.check_fits(&cost).is_err() {
                    continue;
                }
                let rid = request_id.map(|r| format!("rid-{r}"));
                let memory =
                    ledger.acquire_in_class(&spec, t, cost, max_wait, rid.as_deref(), class(rank));
                let redis = backend
                    .acquire(
                        &spec,
                        AcquireCall {
                            cost,
                            max_wait,
                            request_id: rid.as_deref(),
                            class: class(rank),
                        },
                    )
                    .await;
                if let Some(leases) = same_answer(memory, redis, t)? {
                    grants.push((leases.0, leases.1, tokens));
                }
            }
            Op::Advance(d) => t += d,
            Op::Burst(burst) => {
                let rids: Vec<Option<String>> = burst
                    .iter()
                    .map(|(_, _, r, _)| r.map(|r| format!("rid-{r}")))
                    .collect();
                let calls: Vec<AcquireCall> = burst
                    .iter()
                    .zip(&rids)
                    .map(|((tokens, max_wait, _, rank), rid)| AcquireCall {
                        cost: Cost::of_call(*tokens, 0, tokens / 2),
                        max_wait: *max_wait,
                        request_id: rid.as_deref(),
                        class: class(*rank),
                    })
                    .filter(|c| spec.check_fits(&c.cost).is_ok())
                    .collect();
                let redis = backend
                    .acquire_batch(&spec, &calls)
                    .await
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(redis.len(), calls.len());
                for (call, r) in calls.iter().zip(redis) {
                    let m = ledger.acquire_in_class(
                        &spec,
                        t,
                        call.cost,
                        call.max_wait,
                        call.request_id,
                        call.class,
                    );
                    if let Some(leases) = same_answer(m, r, t)? {
                        grants.push((leases.0, leases.1, call.cost.0[1]));
                    }
                }
            }
            Op::Report {
                back,
                percent,
                cooldown,
                overload,
                success,
                remaining,
                adopt,
            } => {
                let lease = grants.len().checked_sub(back + 1).map(|i| grants[i]);
                let usage = lease.map(|(_, _, tokens)| {
                    let used = tokens * percent / 100;
                    [None, Some(used), None, Some(used / 3)]
                });
                let headers = vec![(
                    "x-ratelimit-remaining-tokens".to_string(),
                    format!("{percent}"),
                )];
                let cause = |source: &str| CooldownCause {
                    status_code: 429,
                    source: source.into(),
                };
                let call = |lease: Option<LeaseId>| ReportCall {
                    lease,
                    usage,
                    cooldowns: cooldown
                        .map(|(d, length)| CooldownOrder {
                            dimension: Dimension::ALL[d],
                            length,
                            cause: cause("429 tokens reset"),
                        })
                        .into_iter()
                        .collect(),
                    overload: overload.map(|jitter_permille| OverloadOrder {
                        base: S,
                        cap: 8 * S,
                        jitter_permille,
                        at_least: 0,
                        cause: cause("529 overloaded"),
                    }),
                    success,
                    // A cooldown comes with a 429: a throttle for an adaptive budget.
                    throttled: cooldown.is_some(),
                    remaining: remaining
                        .filter(|(limit, _, _)| *limit < spec.limits.len())
                        .map(|(limit, remaining, tolerance)| RemainingReading {
                            limit,
                            remaining,
                            tolerance,
                        })
                        .into_iter()
                        .collect(),
                    // Sliding windows and token buckets (whose rate and burst follow; their state
                    // carries over); amounts below one call's cost let a call go alone. Budgets
                    // come from headers, so only with an observation (which keeps the state, and
                    // with it the adopted budget, alive).
                    adopt: adopt
                        .filter(|(limit, _)| *limit < spec.limits.len() && percent % 2 == 0)
                        .and_then(|(limit, amount)| {
                            AdoptOrder::new(limit, &spec.limits[limit], amount).ok()
                        })
                        .into_iter()
                        .collect(),
                    // Half the reports carry an observation (which keeps the state alive longer).
                    observation: (percent % 2 == 0).then(|| (200, headers.clone())),
                };
                let memory = ledger.report(&spec, t, &call(lease.map(|l| l.0)));
                let redis = backend
                    .report(&spec, call(lease.map(|l| l.1)))
                    .await
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(memory, redis, "report at {}", t);
            }
            Op::Admin(reset) => {
                let op = if reset {
                    AdminOp::Reset
                } else {
                    AdminOp::ClearCooldowns
                };
                ledger.admin(&spec, t, op);
                backend
                    .admin(&spec, op)
                    .await
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
            }
            Op::Status => {
                let memory = ledger.snapshot(&spec, t);
                let redis = backend
                    .status(&spec)
                    .await
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(memory, redis, "status at {}", t);
            }
        }
    }
    Ok(())
}

/// Runs `case` on `strategy`'s values against one `redis-server`, each case with its own key
/// prefix (`SLUICE_DIFF_CASES` cases, default `default_cases`).
fn differential<S, F, Fut>(strategy: S, default_cases: u32, case: F) -> anyhow::Result<()>
where
    S: Strategy,
    F: Fn(String, u64, S::Value) -> Fut,
    Fut: std::future::Future<Output = Result<(), TestCaseError>>,
{
    let redis = RedisServer::start()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut runner = TestRunner::new(ProptestConfig::with_cases(
        std::env::var("SLUICE_DIFF_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default_cases),
    ));
    let n = AtomicU64::new(0);
    let result = runner.run(&strategy, |value| {
        runtime.block_on(case(redis.url(), n.fetch_add(1, Ordering::Relaxed), value))
    });
    if let Err(e) = result {
        anyhow::bail!("{e}");
    }
    Ok(())
}

#[test]
fn redis_scripts_decide_exactly_like_the_memory_ledger() -> anyhow::Result<()> {
    let strategy = (
        prop::collection::vec(limit(), 1..=3),
        prop::collection::vec(op(), 1..120),
        (any::<bool>(), any::<bool>()),
    );
    differential(
        strategy,
        256,
        |redis, n, (limits, ops, (adopt, adaptive))| {
            run_case(redis, n, limits, ops, adopt, adaptive)
        },
    )
}

#[derive(Clone, Debug)]
enum FamilyOp {
    /// Acquire on member `who` (0: the parent, 1 and 2: its children).
    Acquire {
        who: usize,
        tokens: u64,
        max_wait: Micros,
        request_id: Option<u8>,
    },
    Advance(Micros),
    /// A 429 on member `who`'s own state: a cooldown of dimension `dim` (its siblings must not
    /// wait for it, nor for the calls it queues).
    Cooldown {
        who: usize,
        dim: usize,
        length: Micros,
    },
    /// Report the `back`-th last grant with real usage, reaching the ancestors' leases too.
    Report {
        back: usize,
        percent: u64,
    },
    Status,
}

fn family_op() -> impl Strategy<Value = FamilyOp> {
    prop_oneof![
        5 => (0usize..3, 1u64..=60, prop_oneof![Just(0), 0..30 * S], prop::option::weighted(0.2, 0u8..4))
            .prop_map(|(who, tokens, max_wait, request_id)| FamilyOp::Acquire { who, tokens, max_wait, request_id }),
        3 => (0..4 * S).prop_map(FamilyOp::Advance),
        1 => (0usize..3, 0usize..4, 1..20 * S).prop_map(|(who, dim, length)| FamilyOp::Cooldown { who, dim, length }),
        2 => (0usize..6, 0u64..=150).prop_map(|(back, percent)| FamilyOp::Report { back, percent }),
        1 => Just(FamilyOp::Status),
    ]
}

/// A parent and two children, every limit drawn at random.
fn family_specs(limits: [Vec<LimitSpec>; 3]) -> Vec<Arc<ServiceSpec>> {
    let names = ["fam", "fam/a", "fam/b"];
    limits
        .into_iter()
        .enumerate()
        .map(|(i, l)| {
            let mut s = spec(l);
            s.name = names[i].into();
            s.family = Some("fam".into());
            s.parent = (i > 0).then(|| "fam".into());
            Arc::new(s)
        })
        .collect()
}

/// One report of a family member's lease, with its usage carried to the ancestors' leases, as the
/// limiter does. Returns the outcomes (uplinks' nonces differ by design: only their count is kept).
fn report_on_memory(
    specs: &[Arc<ServiceSpec>],
    ledgers: &mut [Ledger],
    who: usize,
    t: Micros,
    lease: LeaseId,
    usage: [Option<u64>; 4],
) -> Vec<(bool, bool, bool, usize)> {
    let call = |lease| ReportCall {
        lease: Some(lease),
        usage: Some(usage),
        ..ReportCall::default()
    };
    let specs_order = if who == 0 { vec![0] } else { vec![who, 0] };
    let mut out = Vec::new();
    let mut next = Some(lease);
    for i in specs_order {
        let Some(lease) = next.take() else { break };
        let o = ledgers[i].report(&specs[i], t, &call(lease));
        out.push((
            o.usage_applied,
            o.lease_unknown,
            o.released,
            o.uplinks.len(),
        ));
        next = o.uplinks.first().copied();
    }
    out
}

async fn run_family_case(
    redis_url: String,
    case: u64,
    limits: [Vec<LimitSpec>; 3],
    ops: Vec<FamilyOp>,
) -> Result<(), TestCaseError> {
    let specs = family_specs(limits);
    let now = Arc::new(AtomicU64::new(T0));
    let config = RedisConfig::new(RedisUrl::parse(&redis_url).map_err(TestCaseError::fail)?)
        .key_prefix(format!("family{case}"))
        .timeout(Duration::from_secs(5));
    let backend = RedisBackend::connect(&specs, &config)
        .await
        .map_err(|e| TestCaseError::fail(e.to_string()))?
        .with_manual_time(now.clone());
    let mut ledgers: Vec<Ledger> = (0..3).map(|i| Ledger::new(&specs[i], i as u64)).collect();
    let mut t = T0;
    // (member, memory lease, redis lease, tokens asked)
    let mut grants: Vec<(usize, LeaseId, LeaseId, u64)> = Vec::new();
    for op in ops {
        now.store(t, Ordering::SeqCst);
        match op {
            FamilyOp::Acquire {
                who,
                tokens,
                max_wait,
                request_id,
            } => {
                let cost = Cost::of_call(tokens, 0, tokens / 2);
                let chain = if who == 0 { vec![0] } else { vec![who, 0] };
                if chain.iter().any(|&i| specs[i].check_fits(&cost).is_err()) {
                    continue;
                }
                let rid = request_id.map(|r| format!("rid-{r}"));
                let memory = {
                    let (parent, children) = ledgers.split_first_mut().expect("three ledgers");
                    let mut members = match who {
                        0 => vec![Member {
                            spec: &specs[0],
                            ledger: parent,
                        }],
                        w => vec![
                            Member {
                                spec: &specs[w],
                                ledger: &mut children[w - 1],
                            },
                            Member {
                                spec: &specs[0],
                                ledger: parent,
                            },
                        ],
                    };
                    acquire_in_family(&mut members, t, cost, max_wait, rid.as_deref())
                };
                let redis = backend
                    .acquire(
                        &specs[who],
                        AcquireCall {
                            cost,
                            max_wait,
                            request_id: rid.as_deref(),
                            class: Class::TOP,
                        },
                    )
                    .await;
                if let Some((m, r)) = same_answer(memory, redis, t)? {
                    grants.push((who, m, r, tokens));
                }
            }
            FamilyOp::Advance(d) => t += d,
            FamilyOp::Cooldown { who, dim, length } => {
                let call = ReportCall {
                    cooldowns: vec![CooldownOrder {
                        dimension: Dimension::ALL[dim],
                        length,
                        cause: CooldownCause {
                            status_code: 429,
                            source: "retry-after".into(),
                        },
                    }],
                    ..ReportCall::default()
                };
                let memory = ledgers[who].report(&specs[who], t, &call);
                let redis = backend
                    .report(&specs[who], call)
                    .await
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(
                    (memory.cooldown_remaining, memory.cooldown_set),
                    (redis.cooldown_remaining, redis.cooldown_set),
                    "cooldown of member {} at {}",
                    who,
                    t
                );
            }
            FamilyOp::Report { back, percent } => {
                let Some(&(who, m, r, tokens)) =
                    grants.len().checked_sub(back + 1).map(|i| &grants[i])
                else {
                    continue;
                };
                let used = tokens * percent / 100;
                let usage = [None, Some(used), None, Some(used / 3)];
                let memory = report_on_memory(&specs, &mut ledgers, who, t, m, usage);
                let mut redis_out = Vec::new();
                let mut next = Some((who, r));
                while let Some((i, lease)) = next.take() {
                    let o = backend
                        .report(
                            &specs[i],
                            ReportCall {
                                lease: Some(lease),
                                usage: Some(usage),
                                ..ReportCall::default()
                            },
                        )
                        .await
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                    redis_out.push((
                        o.usage_applied,
                        o.lease_unknown,
                        o.released,
                        o.uplinks.len(),
                    ));
                    next = o.uplinks.first().map(|&up| (0, up));
                }
                prop_assert_eq!(memory, redis_out, "report of member {} at {}", who, t);
            }
            FamilyOp::Status => {
                for (i, spec) in specs.iter().enumerate() {
                    let memory = ledgers[i].snapshot(spec, t);
                    let redis = backend
                        .status(spec)
                        .await
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                    prop_assert_eq!(memory, redis, "status of {} at {}", spec.name, t);
                }
            }
        }
    }
    Ok(())
}

#[test]
fn family_scripts_decide_exactly_like_the_memory_ledgers() -> anyhow::Result<()> {
    let limits = || prop::collection::vec(limit(), 1..=2);
    let strategy = (
        (limits(), limits(), limits()),
        prop::collection::vec(family_op(), 1..100),
    );
    differential(strategy, 128, |redis, n, ((p, a, b), ops)| {
        run_family_case(redis, n, [p, a, b], ops)
    })
}
