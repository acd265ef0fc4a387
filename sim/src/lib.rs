//! A simulated LLM provider, for Sluice's end-to-end tests and its goodput benchmark: an HTTP/1.1
//! server that enforces request and token budgets the way providers do (a fixed window or a
//! continuously refilled token bucket) and answers like them: OpenAI- or Anthropic-style
//! rate-limit headers, 429s with their bodies, usage in the JSON body. It speaks the official
//! SDKs' wire format too ([`sdk`]), so they can be pointed at it. It records every call, so a
//! test can check what the provider saw rather than what the workers believe.
//!
//! [`SimProvider::start`] binds port 0; [`SimClient`] is a minimal keep-alive HTTP client for
//! workers.

mod budget;
mod client;
mod headers;
pub mod sdk;
mod server;

pub use budget::{Budget, Enforcement};
pub use client::{ClientError, SimClient, SimResponse};
pub use headers::{HeaderMode, Style};
pub use server::{budget, CallRecord, ProviderConfig, SimProvider};
