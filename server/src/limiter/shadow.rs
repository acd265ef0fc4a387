//! Shadow mode (`mode = "shadow"` on a service): every decision is made, booked and counted as it
//! would be, but the caller is granted at once, so an operator can put Sluice in front of a live
//! fleet and read what it would have done before enforcing it. [`Limiter::decide`] is what the
//! APIs call: the decision a caller acts on and, in shadow mode, the one that was made.

use std::sync::Arc;

use super::{wall_clock_now, AcquireRequest, Limiter};
use crate::{
    backend::Backend,
    core::{Decider, Decision, Grant, LeaseId, Mode, ServiceSpec},
    error::Error,
    metrics,
};

/// What an acquire answers.
#[derive(Clone, Debug)]
pub struct Answer {
    /// The decision the caller acts on.
    pub decision: Decision,
    /// For a service in shadow mode: the decision that was made and booked (a grant's lease is
    /// real; a call that would have been refused gets lease 0, which names no state, so its
    /// report applies cooldowns only).
    pub shadow: Option<Decision>,
}

/// What a shadow decision would have done to the caller, for the metrics.
fn would(decision: &Decision) -> &'static str {
    match decision {
        Decision::Granted(g) if g.wait == 0 => "granted",
        Decision::Granted(_) => "queued",
        Decision::Denied { .. } => "denied",
    }
}

impl<B: Backend> Limiter<B> {
    /// [`Limiter::acquire`], answered as the service's mode says: enforced, the decision itself;
    /// in shadow mode, a grant at once with the decision beside it.
    pub async fn decide(&self, req: &AcquireRequest) -> Result<(Arc<ServiceSpec>, Answer), Error> {
        let (spec, decision) = self.acquire(req).await?;
        if spec.mode != Mode::Shadow {
            return Ok((
                spec,
                Answer {
                    decision,
                    shadow: None,
                },
            ));
        }
        metrics::shadow(&spec.name, would(&decision));
        let (lease_id, scope) = match &decision {
            Decision::Granted(g) => (g.lease_id, g.scope),
            Decision::Denied { scope, .. } => (LeaseId { nonce: 0, seq: 0 }, *scope),
        };
        let now = Decision::Granted(Grant {
            lease_id,
            slot: wall_clock_now(),
            wait: 0,
            decider: Decider::Now,
            scope,
        });
        Ok((
            spec,
            Answer {
                decision: now,
                shadow: Some(decision),
            },
        ))
    }
}
