//! The backend behaviour suite: every test is written once against [`Limiter`] and runs on every
//! backend through [`TestBackend`]. Time is controlled: `tokio::time::pause()` plus
//! [`TestBackend::advance`].

mod suite;

use std::{sync::Arc, time::Duration};

use sluice_server::{
    backend::{Backend, Clock, MemoryBackend},
    core::ServiceSpec,
};

/// A backend the suite can create fresh and whose clock it can move.
pub trait TestBackend: Backend + Sized {
    /// A fresh backend holding `specs`.
    fn create(specs: &[Arc<ServiceSpec>]) -> impl std::future::Future<Output = Self> + Send;
    /// Moves the backend's clock forward.
    fn advance(&self, by: Duration) -> impl std::future::Future<Output = ()> + Send;
    /// Leases the backend still holds for `spec` (to check that memory stays bounded).
    fn held_leases(&self, spec: &ServiceSpec) -> impl std::future::Future<Output = usize> + Send;
}

impl TestBackend for MemoryBackend {
    async fn create(specs: &[Arc<ServiceSpec>]) -> Self {
        MemoryBackend::new(specs, Clock::new())
    }

    async fn advance(&self, by: Duration) {
        tokio::time::advance(by).await;
    }

    async fn held_leases(&self, spec: &ServiceSpec) -> usize {
        MemoryBackend::lease_count(self, spec)
    }
}

mod memory {
    crate::behaviour_suite!(sluice_server::backend::MemoryBackend);
}
