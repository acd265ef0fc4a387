//! `sluice-client`: the Rust client of [Sluice], the rate-limit coordinator.
//!
//! Call [`Client::acquire`] before each call to a rate-limited API: it books a slot inside the
//! provider's limits, sleeps until the slot, and returns a [`Permit`]. After the call, hand the
//! provider's answer to [`Permit::report`]: a 429 becomes a cooldown shared by every worker, and
//! the real token usage corrects the estimate.
//!
//! ```no_run
//! use std::time::Duration;
//! use sluice_client::{Client, Usage};
//!
//! # async fn example() -> Result<(), sluice_client::Error> {
//! let client = Client::connect("http://127.0.0.1:50051").await?;
//! let permit = client
//!     .acquire("openai/gpt-4o")
//!     .tokens(1200)
//!     .max_wait(Duration::from_secs(30))
//!     .await?;
//! // ... call the API here; then report what it answered:
//! let headers = http::HeaderMap::new();
//! permit.report(200u16, &headers, Some(Usage::tokens(900, 250))).await?;
//! # Ok(())
//! # }
//! ```
//!
//! [Sluice]: https://github.com/sluice-rs/sluice

mod acquire;
mod error;
mod permit;

use std::time::Duration;

pub use acquire::Acquire;
pub use error::Error;
pub use permit::{Permit, ReportOutcome, Usage};
pub use sluice::v1 as proto;
use sluice::v1::{
    rate_limiter_client::RateLimiterClient, GetStatusRequest, ListServicesRequest, ServiceStatus,
};
use tonic::transport::{Channel, Endpoint};

/// A connection to a Sluice server. Cheap to clone; clones share the connection.
#[derive(Clone, Debug)]
pub struct Client {
    inner: RateLimiterClient<Channel>,
    client_id: String,
}

impl Client {
    /// Connects to a server, e.g. `http://127.0.0.1:50051`.
    pub async fn connect(url: impl Into<String>) -> Result<Self, Error> {
        let url = url.into();
        let endpoint = Endpoint::from_shared(url.clone())
            .map_err(|e| Error::InvalidUrl(format!("{url}: {e}")))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true);
        Ok(Self::from_channel(endpoint.connect().await?))
    }

    /// Wraps an existing channel (custom TLS, timeouts, load balancing).
    pub fn from_channel(channel: Channel) -> Self {
        Self {
            inner: RateLimiterClient::new(channel),
            client_id: String::new(),
        }
    }

    /// Names this worker in the server's logs.
    pub fn with_client_id(mut self, client_id: impl Into<String>) -> Self {
        self.client_id = client_id.into();
        self
    }

    /// Starts an acquire for `service`; set costs and `max_wait`, then `.await` it.
    pub fn acquire(&self, service: impl Into<String>) -> Acquire<'_> {
        Acquire::new(self, service.into())
    }

    /// The live state of one service.
    pub async fn status(&self, service: impl Into<String>) -> Result<ServiceStatus, Error> {
        let response = self
            .inner
            .clone()
            .get_status(GetStatusRequest {
                service: service.into(),
            })
            .await?;
        response
            .into_inner()
            .status
            .ok_or_else(|| Error::Protocol("GetStatus answered without a status".into()))
    }

    /// The live state of every configured service.
    pub async fn list_services(&self) -> Result<Vec<ServiceStatus>, Error> {
        let response = self
            .inner
            .clone()
            .list_services(ListServicesRequest {})
            .await?;
        Ok(response.into_inner().services)
    }

    fn rpc(&self) -> RateLimiterClient<Channel> {
        self.inner.clone()
    }
}
