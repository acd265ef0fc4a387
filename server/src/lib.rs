//! Sluice server library: the limiter core, its backends, configuration and the gRPC service.
//!
//! - [`core`]: pure decision logic (sliding windows, token buckets, leases, cooldowns);
//! - [`backend`]: where state lives, behind one trait;
//! - [`limiter`]: validation and orchestration, free of protobuf;
//! - [`grpc`]: the `sluice.v1.RateLimiter` service, converting types only;
//! - [`server`]: [`run`], which serves it all with health and reflection;
//! - [`reload`]: live configuration (SIGHUP and the Admin service's `ReloadConfig`).

pub mod admin;
pub mod auth;
pub mod backend;
pub mod cli;
pub mod config;
pub mod core;
pub mod envoy;
pub mod error;
pub mod grpc;
pub mod limiter;
pub mod metrics;
pub mod provider;
pub mod reload;
pub mod server;
pub mod tls;
pub mod web;

pub use server::{run, run_with};
