//! An example worker: acquires a slot before each (simulated) LLM call and reports the answer.
//!
//! Start a server first (`cargo run -p sluice-server -- --config examples/sluice.toml`), then:
//!
//! ```text
//! cargo run -p sluice-client --example worker -- http://127.0.0.1:50051 openai/gpt-4o 20
//! ```
//!
//! Every tenth simulated call answers 429 with `retry-after: 2`: watch the other calls pause.

use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderValue, StatusCode};
use sluice_client::{Client, Error, Usage};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:50051".into());
    let service = args.next().unwrap_or_else(|| "openai/gpt-4o".into());
    let calls: u32 = args.next().map_or(Ok(20), |n| n.parse())?;

    let client = Client::connect(url).await?.with_client_id("example-worker");
    let start = Instant::now();
    for call in 1..=calls {
        let estimate = 1_200;
        let permit = match client
            .acquire(&service)
            .tokens(estimate)
            .max_wait(Duration::from_secs(30))
            .await
        {
            Ok(permit) => permit,
            Err(Error::Denied {
                retry_after, limit, ..
            }) => {
                println!("call {call}: denied by {limit}, retry after {retry_after:?}");
                tokio::time::sleep(retry_after).await;
                continue;
            }
            Err(e) => return Err(e.into()),
        };

        // The real API call would go here; this one pretends, and rate-limits every tenth call.
        let mut headers = HeaderMap::new();
        let status = if call % 10 == 0 {
            headers.insert("retry-after", HeaderValue::from_static("2"));
            StatusCode::TOO_MANY_REQUESTS
        } else {
            headers.insert(
                "x-ratelimit-remaining-tokens",
                HeaderValue::from_static("28000"),
            );
            StatusCode::OK
        };
        let outcome = permit
            .report(status, &headers, Some(Usage::tokens(700, 300)))
            .await?;
        println!(
            "call {call} at {:>6.2?}: waited {:?} ({}), answered {status}, cooldown {:?}",
            start.elapsed(),
            permit.wait(),
            if permit.limit().is_empty() {
                "-"
            } else {
                permit.limit()
            },
            outcome.cooldown,
        );
    }
    Ok(())
}
