//! Sluice server library: the limiter core, its backends, configuration and the gRPC service.

pub mod core;
