//! The bad-input table: malformed requests over the wire get the documented gRPC status codes,
//! and none of them changes the state of the service.

use sluice::v1::{AcquireRequest, GetStatusRequest, Header, ReportResponseRequest, Usage};
use sluice_e2e::Store;
use tonic::Code;

const CONFIG: &str = r#"
[[services]]
name = "svc"
limits = [
  { dimension = "requests", amount = 10, window = "1m" },
  { dimension = "tokens", amount = 1000, window = "1m" },
  { dimension = "output_tokens", amount = 500, window = "1m", algorithm = "token_bucket", burst = 200 },
]
"#;

fn acquire(service: &str) -> AcquireRequest {
    AcquireRequest {
        service: service.into(),
        ..AcquireRequest::default()
    }
}

fn duration(seconds: i64, nanos: i32) -> Option<prost_types::Duration> {
    Some(prost_types::Duration { seconds, nanos })
}

fn report(headers: Vec<Header>) -> ReportResponseRequest {
    ReportResponseRequest {
        service: "svc".into(),
        status_code: 429,
        headers,
        ..ReportResponseRequest::default()
    }
}

fn header(name: &str, value: &str) -> Header {
    Header {
        name: name.into(),
        value: value.into(),
    }
}

sluice_e2e::on_every_backend!(bad_input_gets_the_documented_status_codes);

async fn bad_input_gets_the_documented_status_codes(store: &Store) -> anyhow::Result<()> {
    let server = store.spawn_server(CONFIG).await?;
    let mut client = server.raw_client().await?;

    let acquires: Vec<(&str, AcquireRequest, Code, &str)> = vec![
        (
            "empty service name",
            acquire(""),
            Code::InvalidArgument,
            "empty",
        ),
        (
            "overlong service name",
            acquire(&"a".repeat(129)),
            Code::InvalidArgument,
            "129 bytes",
        ),
        (
            "bad characters",
            acquire("svc name"),
            Code::InvalidArgument,
            "service name contains",
        ),
        (
            "unknown service",
            acquire("other"),
            Code::NotFound,
            "unknown service",
        ),
        (
            "tokens above every limit",
            AcquireRequest {
                tokens: 1001,
                ..acquire("svc")
            },
            Code::FailedPrecondition,
            "tokens/1m",
        ),
        (
            "output above the burst",
            AcquireRequest {
                output_tokens: 201,
                ..acquire("svc")
            },
            Code::FailedPrecondition,
            "output_tokens/1m",
        ),
        (
            "tokens above 2^50",
            AcquireRequest {
                tokens: u64::MAX,
                ..acquire("svc")
            },
            Code::InvalidArgument,
            "2^50",
        ),
        (
            "negative max_wait",
            AcquireRequest {
                max_wait: duration(-1, 0),
                ..acquire("svc")
            },
            Code::InvalidArgument,
            "max_wait",
        ),
        (
            "negative nanos",
            AcquireRequest {
                max_wait: duration(0, -1),
                ..acquire("svc")
            },
            Code::InvalidArgument,
            "max_wait",
        ),
        (
            "nanos out of range",
            AcquireRequest {
                max_wait: duration(0, 1_000_000_000),
                ..acquire("svc")
            },
            Code::InvalidArgument,
            "max_wait",
        ),
        (
            "huge max_wait",
            AcquireRequest {
                max_wait: duration(i64::MAX, 0),
                ..acquire("svc")
            },
            Code::InvalidArgument,
            "max_wait",
        ),
        (
            "max_wait over a day",
            AcquireRequest {
                max_wait: duration(86_401, 0),
                ..acquire("svc")
            },
            Code::InvalidArgument,
            "max_wait",
        ),
        (
            "overlong request_id",
            AcquireRequest {
                request_id: "r".repeat(257),
                ..acquire("svc")
            },
            Code::InvalidArgument,
            "request_id",
        ),
    ];
    for (case, request, code, message) in acquires {
        let status = client.acquire(request).await.expect_err(case);
        assert_eq!(status.code(), code, "{case}: {status:?}");
        assert!(
            status.message().contains(message),
            "{case}: {:?} lacks {message:?}",
            status.message()
        );
    }

    let many: Vec<Header> = (0..101).map(|i| header(&format!("x-h{i}"), "1")).collect();
    let reports: Vec<(&str, ReportResponseRequest, Code, &str)> = vec![
        (
            "oversized header list",
            report(many),
            Code::InvalidArgument,
            "101 headers",
        ),
        (
            "oversized header value",
            report(vec![header("retry-after", &"9".repeat(8193))]),
            Code::InvalidArgument,
            "headers[0].value",
        ),
        (
            "overlong header name",
            report(vec![header(&"x".repeat(257), "1")]),
            Code::InvalidArgument,
            "headers[0].name",
        ),
        (
            "malformed header name",
            report(vec![header("retry after", "1")]),
            Code::InvalidArgument,
            "headers[0].name",
        ),
        (
            "control characters",
            report(vec![header("retry-after", "1\r\nx: y")]),
            Code::InvalidArgument,
            "control",
        ),
        (
            "oversized body",
            ReportResponseRequest {
                body: vec![b'x'; 64 * 1024 + 1],
                ..report(vec![])
            },
            Code::InvalidArgument,
            "body",
        ),
        (
            "status code 99",
            ReportResponseRequest {
                status_code: 99,
                ..report(vec![])
            },
            Code::InvalidArgument,
            "status_code",
        ),
        (
            "malformed lease id",
            ReportResponseRequest {
                lease_id: "lease?".into(),
                ..report(vec![])
            },
            Code::InvalidArgument,
            "lease_id",
        ),
        (
            "usage above 2^50",
            ReportResponseRequest {
                usage: Some(Usage {
                    total_tokens: Some(u64::MAX),
                    ..Usage::default()
                }),
                ..report(vec![])
            },
            Code::InvalidArgument,
            "usage.total_tokens",
        ),
        (
            "unknown service",
            ReportResponseRequest {
                service: "other".into(),
                ..report(vec![])
            },
            Code::NotFound,
            "unknown service",
        ),
    ];
    for (case, request, code, message) in reports {
        let status = client.report_response(request).await.expect_err(case);
        assert_eq!(status.code(), code, "{case}: {status:?}");
        assert!(
            status.message().contains(message),
            "{case}: {:?} lacks {message:?}",
            status.message()
        );
    }

    let status = client
        .get_status(GetStatusRequest {
            service: String::new(),
        })
        .await
        .expect_err("empty name");
    assert_eq!(status.code(), Code::InvalidArgument);

    // Nothing was recorded: no request counted, no cooldown set by the refused 429 reports.
    let state = client
        .get_status(GetStatusRequest {
            service: "svc".into(),
        })
        .await?
        .into_inner()
        .status
        .ok_or_else(|| anyhow::anyhow!("no status"))?;
    assert_eq!(state.limits[0].used, 0);
    assert!(state.cooldown.is_none());
    // An unparseable retry-after is not an error: the default cooldown applies, with a note.
    let answer = client
        .report_response(report(vec![header("retry-after", "soon")]))
        .await?
        .into_inner();
    assert!(answer.cooldown_set);
    assert!(
        answer.detail.contains("ignored retry-after"),
        "{}",
        answer.detail
    );
    Ok(())
}
