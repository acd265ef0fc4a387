//! What the service layer shows and what operators do: GetStatus and ListServices, a cooldown set
//! by hand, reset and clear.

use super::*;

impl<B: Backend> Limiter<B> {
    /// The live state of one service.
    pub async fn status(&self, name: &str) -> Result<ServiceStatus, Error> {
        self.on_service(name, |service| self.status_of(service))
            .await
    }

    pub(in crate::limiter) async fn status_of(
        &self,
        service: Arc<Service>,
    ) -> Result<ServiceStatus, Error> {
        let spec = &service.spec;
        let started = metrics::start();
        let snapshot = self.backend.status(spec).await;
        metrics::backend("status", started, snapshot.is_err());
        let snapshot = snapshot?;
        if spec.adaptive {
            metrics::adaptive(&spec.name, snapshot.adaptive_scale);
        }
        let learned = learned(&service, &snapshot);
        Ok(ServiceStatus {
            spec: spec.clone(),
            snapshot,
            learned,
        })
    }

    /// Operator: sets (or lengthens) a service-wide cooldown of `length`, with `reason` as its
    /// cause; queued slots it covers move back as for a provider's cooldown.
    pub async fn set_cooldown(
        &self,
        name: &str,
        length: Micros,
        reason: &str,
    ) -> Result<ServiceStatus, Error> {
        self.on_service(name, |service| {
            self.set_cooldown_on(service, length, reason)
        })
        .await
    }

    pub(in crate::limiter) async fn set_cooldown_on(
        &self,
        service: Arc<Service>,
        length: Micros,
        reason: &str,
    ) -> Result<ServiceStatus, Error> {
        let spec = &service.spec;
        if length == 0 || length > spec.max_cooldown {
            return Err(Error::InvalidArgument(format!(
                "duration: must be more than 0 and at most max_cooldown ({})",
                crate::core::format_duration(spec.max_cooldown)
            )));
        }
        let reason: String = reason
            .chars()
            .filter(|c| !c.is_control())
            .take(200)
            .collect();
        let call = ReportCall {
            cooldowns: vec![CooldownOrder {
                dimension: Dimension::Requests,
                length,
                cause: CooldownCause {
                    status_code: 0,
                    source: format!("admin: {}", if reason.is_empty() { "set" } else { &reason }),
                },
            }],
            ..ReportCall::default()
        };
        self.backend.report(spec, call).await?;
        tracing::info!(service = %spec.name, cooldown_ms = length / 1_000, reason = %reason, "admin: cooldown set");
        self.status_of(service.clone()).await
    }

    /// Operator: an action on a service's state (clear its cooldowns, or reset it).
    pub async fn admin(&self, name: &str, op: AdminOp) -> Result<ServiceStatus, Error> {
        self.on_service(name, |service| async move {
            self.backend.admin(&service.spec, op).await?;
            tracing::info!(service = %service.spec.name, action = ?op, "admin action");
            self.status_of(service).await
        })
        .await
    }

    /// The live state of every service, in config order.
    pub async fn list(&self) -> Result<Vec<ServiceStatus>, Error> {
        let catalog = self.catalog();
        let mut out = Vec::with_capacity(catalog.order.len());
        for service in &catalog.order {
            match self
                .on_service(&service.spec.name, |s| self.status_of(s))
                .await
            {
                Ok(status) => out.push(status),
                // Removed by a reload while listing.
                Err(Error::UnknownService(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }
}

impl ServiceStatus {
    /// Why limit `i`'s amount in force is what it is, from the state in force (not from the
    /// provider's last answer, which may have named no budget): `configured`, `provider budget`
    /// (an adopted provider budget unlike the configured one), `adaptive N% after 429s` (a
    /// lowered adaptive budget), or `provider budget, adaptive N% after 429s`.
    pub fn effective_because(&self, i: usize) -> String {
        let (Some(limit), Some(live)) = (self.spec.limits.get(i), self.snapshot.limits.get(i))
        else {
            return "configured".into();
        };
        let scale = self.snapshot.adaptive_scale;
        let scaled =
            scale < crate::core::adaptive::FULL && limit.algorithm != Algorithm::Concurrent;
        match (live.adopted, scaled) {
            (false, false) => "configured".into(),
            (true, false) => "provider budget".into(),
            (adopted, true) => format!(
                "{}adaptive {}% after 429s",
                if adopted { "provider budget, " } else { "" },
                scale / 10
            ),
        }
    }
}

/// The budgets the provider's last answer named, per configured limit.
pub(super) fn learned(service: &Service, snapshot: &ServiceSnapshot) -> Vec<Option<u64>> {
    let spec = &service.spec;
    let mut learned = vec![None; spec.limits.len()];
    let Some(report) = &snapshot.last_report else {
        return learned;
    };
    let headers: Vec<provider::Header> = report
        .headers
        .iter()
        .map(|(name, value)| provider::Header {
            name: name.clone(),
            value: value.clone(),
        })
        .collect();
    let reading = provider::read(&service.profile, &headers, &[], report.at);
    for dimension in Dimension::ALL {
        let r = &reading.dimensions[dimension.index()];
        if let (Some(limit), Some(i)) =
            (r.limit, provider::matching_limit(spec, dimension, r.window))
        {
            learned[i] = Some(limit);
        }
    }
    learned
}
