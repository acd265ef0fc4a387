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
mod convert;
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
use tonic::{
    metadata::{Ascii, MetadataValue},
    service::{interceptor::InterceptedService, Interceptor},
    transport::{Channel, Endpoint},
};

/// A connection to a Sluice server. Cheap to clone; clones share the connection.
#[derive(Clone, Debug)]
pub struct Client {
    channel: Channel,
    credentials: Credentials,
    client_id: String,
}

/// A bearer token that cannot travel in a header (it must be printable ASCII).
#[derive(Debug, thiserror::Error)]
#[error("bearer token: not printable ASCII")]
pub struct InvalidToken;

/// What every call carries to authenticate: a bearer token, if set. `Debug` hides it.
#[derive(Clone, Default)]
struct Credentials {
    authorization: Option<MetadataValue<Ascii>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let token = if self.authorization.is_some() {
            "Some(***)"
        } else {
            "None"
        };
        write!(f, "Credentials {{ bearer_token: {token} }}")
    }
}

impl Interceptor for Credentials {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.authorization {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
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
            channel,
            credentials: Credentials::default(),
            client_id: String::new(),
        }
    }

    /// Sends `token` as `authorization: Bearer <token>` on every call, for servers configured
    /// with `[auth]` tokens.
    pub fn with_bearer_token(mut self, token: &str) -> Result<Self, InvalidToken> {
        let mut value: MetadataValue<Ascii> = format!("Bearer {token}")
            .parse()
            .map_err(|_| InvalidToken)?;
        value.set_sensitive(true);
        self.credentials.authorization = Some(value);
        Ok(self)
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
            .rpc()
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
        let response = self.rpc().list_services(ListServicesRequest {}).await?;
        Ok(response.into_inner().services)
    }

    fn rpc(&self) -> RateLimiterClient<InterceptedService<Channel, Credentials>> {
        RateLimiterClient::with_interceptor(self.channel.clone(), self.credentials.clone())
    }
}
