//! Tests of the codec's primitives and of the core's value types: arbitrary values round-trip
//! exactly, every truncation of their encoding and any trailing byte are refused, and arbitrary
//! bytes never panic (what decodes re-encodes to the very same bytes: the format is canonical).

use std::fmt::Debug;

use proptest::prelude::*;

use super::*;
use crate::core::*;

fn text() -> impl Strategy<Value = String> {
    ".{0,10}"
}

fn number() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..300, any::<u64>()]
}

fn dimension() -> impl Strategy<Value = Dimension> {
    (0usize..4).prop_map(|i| Dimension::ALL[i])
}

fn cause() -> impl Strategy<Value = CooldownCause> {
    (any::<u32>(), text()).prop_map(|(status_code, source)| CooldownCause {
        status_code,
        source,
    })
}

fn headers() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::vec((text(), text()), 0..3)
}

fn scope() -> impl Strategy<Value = Scope> {
    prop_oneof![
        Just(Scope::Shared),
        Just(Scope::Local),
        Just(Scope::FailOpen)
    ]
}

fn lease_id() -> impl Strategy<Value = LeaseId> {
    (any::<u64>(), number()).prop_map(|(nonce, seq)| LeaseId { nonce, seq })
}

fn decider() -> impl Strategy<Value = Decider> {
    prop_oneof![
        Just(Decider::Now),
        Just(Decider::Cooldown),
        any::<usize>().prop_map(Decider::Limit),
        (any::<u8>(), any::<Option<u16>>())
            .prop_map(|(level, limit)| Decider::Ancestor { level, limit }),
    ]
}

fn limit() -> impl Strategy<Value = LimitSpec> {
    let algorithm = prop_oneof![
        Just(Algorithm::SlidingWindow),
        (1..=MAX_AMOUNT).prop_map(|burst| Algorithm::TokenBucket { burst }),
        Just(Algorithm::Concurrent),
    ];
    (dimension(), 1..=MAX_AMOUNT, 1..=u64::MAX, algorithm, text()).prop_map(
        |(dimension, amount, window, algorithm, name)| LimitSpec {
            dimension,
            amount,
            window,
            algorithm,
            name,
        },
    )
}

fn service_spec() -> impl Strategy<Value = ServiceSpec> {
    (
        (
            any::<usize>(),
            text(),
            text(),
            prop::collection::vec(limit(), 0..4),
        ),
        (number(), number(), number(), any::<(bool, bool, bool)>()),
        (prop::option::of(text()), prop::option::of(text())),
    )
        .prop_map(|((index, name, profile, limits), more, (parent, family))| {
            let (default_cooldown, max_cooldown, quota_cooldown, (adopt, adaptive, shadow)) = more;
            ServiceSpec {
                index,
                name,
                profile,
                limits,
                default_cooldown,
                max_cooldown,
                quota_cooldown,
                adopt_provider_limits: adopt,
                adaptive,
                parent,
                family,
                mode: if shadow { Mode::Shadow } else { Mode::Enforce },
            }
        })
}

fn report_call() -> impl Strategy<Value = ReportCall> {
    let cooldown =
        (dimension(), number(), cause()).prop_map(|(dimension, length, cause)| CooldownOrder {
            dimension,
            length,
            cause,
        });
    let overload = (number(), number(), any::<u32>(), number(), cause()).prop_map(
        |(base, cap, jitter_permille, at_least, cause)| OverloadOrder {
            base,
            cap,
            jitter_permille,
            at_least,
            cause,
        },
    );
    let reading = (any::<usize>(), number(), number()).prop_map(|(limit, remaining, tolerance)| {
        RemainingReading {
            limit,
            remaining,
            tolerance,
        }
    });
    let adopt =
        (any::<usize>(), number(), number()).prop_map(|(limit, amount, burst)| AdoptOrder {
            limit,
            amount,
            burst,
        });
    (
        (
            prop::option::of(lease_id()),
            any::<Option<[Option<u64>; 4]>>(),
        ),
        (
            prop::collection::vec(cooldown, 0..3),
            prop::option::of(overload),
        ),
        (
            prop::collection::vec(reading, 0..3),
            prop::collection::vec(adopt, 0..3),
        ),
        (
            any::<(bool, bool)>(),
            prop::option::of((any::<u32>(), headers())),
        ),
    )
        .prop_map(
            |((lease, usage), (cooldowns, overload), (remaining, adopt), more)| {
                let ((success, throttled), observation) = more;
                ReportCall {
                    lease,
                    usage,
                    cooldowns,
                    overload,
                    success,
                    remaining,
                    adopt,
                    throttled,
                    observation,
                }
            },
        )
}

fn decision() -> impl Strategy<Value = Decision> {
    let grant = (lease_id(), number(), number(), decider(), scope()).prop_map(
        |(lease_id, slot, wait, decider, scope)| Grant {
            lease_id,
            slot,
            wait,
            decider,
            scope,
        },
    );
    prop_oneof![
        grant.prop_map(Decision::Granted),
        (number(), decider(), scope()).prop_map(|(retry_after, decider, scope)| {
            Decision::Denied {
                retry_after,
                decider,
                scope,
            }
        }),
    ]
}

fn outcome() -> impl Strategy<Value = ReportOutcome> {
    (
        (number(), any::<(bool, bool, bool, bool, bool)>(), number()),
        (
            prop::collection::vec(lease_id(), 0..3),
            any::<u32>(),
            scope(),
        ),
    )
        .prop_map(|((remaining, flags, outside), (uplinks, scale, scope))| {
            let (set, applied, unknown, released, lowered) = flags;
            ReportOutcome {
                cooldown_remaining: remaining,
                cooldown_set: set,
                usage_applied: applied,
                lease_unknown: unknown,
                outside_usage: outside,
                released,
                uplinks,
                adaptive_scale: scale,
                adaptive_lowered: lowered,
                scope,
            }
        })
}

fn snapshot() -> impl Strategy<Value = ServiceSnapshot> {
    let limit = (
        number(),
        number(),
        any::<bool>(),
        number(),
        number(),
        number(),
    )
        .prop_map(
            |(amount, burst, adopted, used, remaining, reset_after)| LimitSnapshot {
                amount,
                burst,
                adopted,
                used,
                remaining,
                reset_after,
            },
        );
    let observation =
        (number(), any::<u32>(), headers()).prop_map(|(at, status_code, headers)| Observation {
            at,
            status_code,
            headers,
        });
    (
        (number(), prop::collection::vec(limit, 0..4)),
        prop::option::of((number(), cause())),
        prop::collection::vec((dimension(), number(), cause()), 0..3),
        (
            number(),
            prop::option::of(observation),
            any::<u32>(),
            scope(),
        ),
    )
        .prop_map(|((now, limits), cooldown, dimension_cooldowns, more)| {
            let (queued, last_report, adaptive_scale, scope) = more;
            ServiceSnapshot {
                now,
                limits,
                cooldown,
                dimension_cooldowns,
                queued,
                last_report,
                adaptive_scale,
                scope,
            }
        })
}

fn acquire_result() -> impl Strategy<Value = Result<Decision, AcquireError>> {
    prop_oneof![
        decision().prop_map(Ok),
        text().prop_map(|id| Err(AcquireError::RequestIdReused(id))),
        Just(Err(AcquireError::Full)),
        Just(Err(AcquireError::TotalTooLarge)),
    ]
}

/// Every proper prefix of `bytes` and `bytes` with a byte more are refused (as a `T`).
pub(super) fn refuses_damage<T: Decode + Debug>(bytes: &[u8]) {
    for end in 0..bytes.len() {
        let cut = from_bytes::<T>(&bytes[..end]);
        assert!(cut.is_err(), "a prefix of {end} bytes decoded: {cut:?}");
    }
    let mut longer = bytes.to_vec();
    longer.push(0);
    assert_eq!(from_bytes::<T>(&longer).err(), Some(CodecError::Trailing));
}

/// `value` decodes back to itself, and its damaged encodings are refused.
fn round_trips<T: Encode + Decode + PartialEq + Debug>(value: &T) {
    let bytes = to_bytes(value);
    assert_eq!(from_bytes::<T>(&bytes).as_ref(), Ok(value));
    refuses_damage::<T>(&bytes);
}

/// Decoding `bytes` as a `T` does not panic; what decodes encodes to the same bytes.
fn canonical<T: Encode + Decode>(bytes: &[u8]) {
    if let Ok(value) = from_bytes::<T>(bytes) {
        assert_eq!(to_bytes(&value), bytes, "{}", std::any::type_name::<T>());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn values_round_trip_exactly(
        call in report_call(),
        result in acquire_result(),
        out in outcome(),
        snap in snapshot(),
        class in any::<(u8, u16)>(),
        cost in any::<[u64; 4]>(),
        ops in any::<bool>(),
    ) {
        round_trips(&call);
        round_trips(&result);
        round_trips(&out);
        round_trips(&snap);
        round_trips(&Class { rank: class.0, max_overtakes: class.1 });
        round_trips(&Cost(cost));
        round_trips(&if ops { AdminOp::Reset } else { AdminOp::ClearCooldowns });
    }

    #[test]
    fn service_specs_round_trip_exactly(spec in service_spec()) {
        let bytes = to_bytes(&spec);
        let back: ServiceSpec = from_bytes(&bytes).unwrap();
        prop_assert!(back.same_as(&spec) && back.index == spec.index);
        prop_assert_eq!(to_bytes(&back), bytes.clone());
        refuses_damage::<ServiceSpec>(&bytes);
    }

    #[test]
    fn arbitrary_bytes_never_panic(mut bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        for version in [None, Some(FORMAT_VERSION)] {
            if let Some(v) = version {
                bytes.insert(0, v);
            }
            canonical::<ServiceSpec>(&bytes);
            canonical::<ReportCall>(&bytes);
            canonical::<Result<Decision, AcquireError>>(&bytes);
            canonical::<ReportOutcome>(&bytes);
            canonical::<ServiceSnapshot>(&bytes);
            canonical::<AdminOp>(&bytes);
            canonical::<Ledger>(&bytes);
        }
    }

    #[test]
    fn varints_round_trip_at_any_width(n in any::<u128>(), shift in 0u32..128) {
        let n = n >> shift;
        let mut out = Vec::new();
        out.put_varint128(n);
        let mut r = Reader::new(&out);
        prop_assert_eq!(r.varint128(), Ok(n));
        prop_assert!(r.is_empty());
        let wide = u64::try_from(n);
        prop_assert_eq!(Reader::new(&out).varint().ok(), wide.ok());
    }
}

#[test]
fn malformed_input_gets_a_clear_error() {
    let id = LeaseId { nonce: 7, seq: 300 };
    assert_eq!(from_bytes::<LeaseId>(&[]), Err(CodecError::Truncated));
    assert_eq!(
        from_bytes::<LeaseId>(&[2, 0]),
        Err(CodecError::UnknownVersion(2))
    );
    let mut bytes = to_bytes(&id);
    assert_eq!(bytes.len(), 1 + 8 + 2);
    bytes.push(0);
    assert_eq!(from_bytes::<LeaseId>(&bytes), Err(CodecError::Trailing));
    assert_eq!(
        from_bytes::<AdminOp>(&[FORMAT_VERSION, 2]),
        Err(CodecError::BadTag {
            what: "admin op",
            tag: 2
        })
    );
    // Varints: minimal, and within their type.
    assert_eq!(
        Reader::new(&[0x80, 0x00]).varint(),
        Err(CodecError::Invalid("overlong varint"))
    );
    let mut max = Vec::new();
    max.put_varint(u64::MAX);
    assert_eq!(max.len(), 10);
    assert_eq!(Reader::new(&max).varint(), Ok(u64::MAX));
    *max.last_mut().unwrap() = 2;
    assert_eq!(
        Reader::new(&max).varint(),
        Err(CodecError::Invalid("varint overflow"))
    );
    assert_eq!(
        from_bytes::<u16>(&[FORMAT_VERSION, 0x80, 0x80, 0x04]),
        Err(CodecError::Invalid("u16"))
    );
    // A length beyond the input is refused before anything is allocated for it.
    let mut huge = vec![FORMAT_VERSION];
    huge.put_varint(u64::MAX >> 1);
    assert_eq!(
        from_bytes::<Vec<Ledger>>(&huge).err(),
        Some(CodecError::TooLong)
    );
    assert_eq!(from_bytes::<String>(&huge), Err(CodecError::TooLong));
    // Text is UTF-8; limits are ones the arithmetic can use.
    assert_eq!(
        from_bytes::<String>(&[FORMAT_VERSION, 1, 0xff]),
        Err(CodecError::Invalid("utf-8"))
    );
    let mut zero = LimitSpec::new(Dimension::Tokens, 1, 1, Algorithm::SlidingWindow);
    zero.amount = 0;
    assert_eq!(
        from_bytes::<LimitSpec>(&to_bytes(&zero)),
        Err(CodecError::Invalid("limit amount"))
    );
}
