//! The Sluice wire protocol: Rust types and gRPC stubs generated from
//! `proto/sluice/v1/sluice.proto`, shared by `sluice-server` and `sluice-client`.
//!
//! Most users want `sluice-client` instead; this crate is for code that speaks the raw API.

/// Package `sluice.v1`: the `RateLimiter` service and its messages.
#[allow(missing_docs, clippy::all)]
pub mod v1 {
    tonic::include_proto!("sluice.v1");
}

/// Package `envoy.service.ratelimit.v3`: the part of Envoy's rate limit service Sluice serves.
#[allow(missing_docs, clippy::all)]
pub mod envoy_rls {
    tonic::include_proto!("envoy.service.ratelimit.v3");
}

/// The encoded `FileDescriptorSet` of the API, served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("sluice_descriptor");
