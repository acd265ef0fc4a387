//! Reports on the service layer: a provider's answer read through the service's profile into a
//! [`ReportCall`] (cooldowns, overload backoff, adopted budgets, outside usage, a throttle), applied
//! to the service and its ancestors; an abandoned call's in-flight slot freed.

use super::*;

impl<B: Backend> Limiter<B> {
    /// Applies a provider's answer: cooldown, usage, remembered headers.
    pub async fn report(&self, req: ReportRequest) -> Result<ReportAnswer, Error> {
        self.on_service(&req.service, |service| self.report_on(service, &req))
            .await
    }

    pub(in crate::limiter) async fn report_on(
        &self,
        service: Arc<Service>,
        req: &ReportRequest,
    ) -> Result<ReportAnswer, Error> {
        let spec = &service.spec;
        if req.status_code != ABANDONED && !(100..=999).contains(&req.status_code) {
            return Err(Error::InvalidArgument(format!(
                "status_code: {} is not an HTTP status (100..=999), nor 0 for no answer",
                req.status_code
            )));
        }
        if req.body.len() > MAX_BODY {
            return Err(Error::InvalidArgument(format!(
                "body: {} bytes (at most {MAX_BODY})",
                req.body.len()
            )));
        }
        let lease = if req.lease_id.is_empty() {
            None
        } else {
            Some(req.lease_id.parse::<LeaseId>().map_err(|_| {
                Error::InvalidArgument(format!(
                    "lease_id: {:?} is malformed",
                    truncate(&req.lease_id)
                ))
            })?)
        };
        let usage = req.usage.map(usage_update).transpose()?;
        let headers =
            provider::validate_headers(req.headers.clone()).map_err(Error::InvalidArgument)?;
        if req.status_code == ABANDONED {
            return self.abandon(spec, lease, usage).await;
        }
        let profile = &service.profile;
        let reading = provider::read(profile, &headers, &req.body, wall_clock_now());
        let mut notes = reading.notes.clone();
        let plan = provider::plan(
            spec,
            profile,
            req.status_code,
            &reading,
            self.jitter.next(),
            &mut notes,
        );
        let causes: Vec<String> = plan
            .cooldowns
            .iter()
            .map(|o| o.cause.source.clone())
            .chain(plan.overload.iter().map(|o| o.cause.source.clone()))
            .collect();
        let call = ReportCall {
            lease,
            usage,
            cooldowns: plan.cooldowns,
            overload: plan.overload,
            success: plan.success,
            remaining: plan.remaining,
            adopt: plan.adopt,
            throttled: plan.throttled,
            observation: Some((req.status_code, provider::rate_limit_headers(&headers))),
        };
        metrics::report(&spec.name, req.status_code);
        let family = spec.family.is_some().then(|| call.clone());
        let started = metrics::start();
        let outcome = self.backend.report(spec, call).await;
        metrics::backend("report", started, outcome.is_err());
        let mut outcome = outcome?;
        if let Some(call) = family {
            let cooled = self.report_ancestors(spec, call, &outcome.uplinks).await?;
            for (ancestor, remaining) in cooled {
                notes.push(format!("family cooldown set on {ancestor}"));
                outcome.cooldown_set = true;
                outcome.cooldown_remaining = outcome.cooldown_remaining.max(remaining);
            }
        }
        if outcome.cooldown_set {
            for cause in &causes {
                metrics::cooldown(&spec.name, cause, outcome.cooldown_remaining);
            }
        }
        if outcome.adaptive_lowered {
            notes.push(format!(
                "adaptive budget lowered to {}%",
                outcome.adaptive_scale / 10
            ));
        }
        if outcome.usage_applied {
            notes.push("usage applied".into());
        } else if outcome.lease_unknown {
            notes.push("lease unknown or expired: usage ignored".into());
        }
        if outcome.released {
            notes.push("in-flight slot released".into());
        }
        if outcome.outside_usage > 0 {
            notes.push(format!(
                "charged {} as usage from outside Sluice",
                outcome.outside_usage
            ));
        }
        if outcome.cooldown_set {
            notes.insert(0, format!("cooldown set ({})", causes.join(", ")));
        }
        if spec.adaptive {
            metrics::adaptive(&spec.name, outcome.adaptive_scale);
        }
        metrics::scoped(&spec.name, "report", outcome.scope);
        Ok(ReportAnswer {
            cooldown: outcome.cooldown_remaining,
            cooldown_set: outcome.cooldown_set,
            detail: notes.join("; "),
            scope: outcome.scope,
        })
    }

    /// Carries a report of `spec` (a member of a family) to its ancestors: the leases the call
    /// booked there (`uplinks`, parent first) take its usage and give back their in-flight slots,
    /// and a cooldown of a dimension an ancestor limits (a 429 on the shared budget) cools the
    /// ancestor down, and with it the whole family. Returns the ancestors whose cooldown was set,
    /// with its remaining time.
    pub(in crate::limiter) async fn report_ancestors(
        &self,
        spec: &ServiceSpec,
        call: ReportCall,
        uplinks: &[LeaseId],
    ) -> Result<Vec<(String, Micros)>, Error> {
        let mut cooled = Vec::new();
        for (level, ancestor) in self.ancestors(spec).iter().enumerate() {
            let limits = |d: Dimension| {
                ancestor
                    .limits
                    .iter()
                    .any(|l| l.dimension == d && l.algorithm != Algorithm::Concurrent)
            };
            let lease = uplinks.get(level).copied();
            let up = ReportCall {
                lease,
                usage: call.usage.filter(|_| lease.is_some()),
                cooldowns: call
                    .cooldowns
                    .iter()
                    .filter(|o| limits(o.dimension))
                    .cloned()
                    .collect(),
                overload: call
                    .overload
                    .clone()
                    .filter(|_| limits(Dimension::Requests)),
                success: call.success,
                // A 429 on the ancestor's budget is its throttle too.
                throttled: call.throttled && call.cooldowns.iter().any(|o| limits(o.dimension)),
                ..ReportCall::default()
            };
            if up.lease.is_none() && up.cooldowns.is_empty() && up.overload.is_none() {
                continue;
            }
            let started = metrics::start();
            let outcome = self.backend.report(ancestor, up).await;
            metrics::backend("report", started, outcome.is_err());
            let outcome = outcome?;
            if outcome.cooldown_set {
                cooled.push((ancestor.name.clone(), outcome.cooldown_remaining));
            }
        }
        Ok(cooled)
    }

    /// A call that got no answer: its lease gives back its in-flight slot (and takes its real
    /// usage, if given); no cooldown, no observation.
    pub(in crate::limiter) async fn abandon(
        &self,
        spec: &ServiceSpec,
        lease: Option<LeaseId>,
        usage: Option<UsageUpdate>,
    ) -> Result<ReportAnswer, Error> {
        let call = ReportCall {
            lease,
            usage,
            ..ReportCall::default()
        };
        metrics::report(&spec.name, ABANDONED);
        let family = spec.family.is_some().then(|| call.clone());
        let started = metrics::start();
        let outcome = self.backend.report(spec, call).await;
        metrics::backend("report", started, outcome.is_err());
        let outcome = outcome?;
        if let Some(call) = family {
            self.report_ancestors(spec, call, &outcome.uplinks).await?;
        }
        let detail = match (outcome.released, outcome.lease_unknown) {
            (true, _) => "abandoned: in-flight slot released",
            (false, true) => "abandoned: lease unknown or expired",
            (false, false) => "abandoned",
        };
        metrics::scoped(&spec.name, "report", outcome.scope);
        Ok(ReportAnswer {
            cooldown: outcome.cooldown_remaining,
            cooldown_set: false,
            detail: detail.into(),
            scope: outcome.scope,
        })
    }
}

pub(super) fn usage_update(u: UsageReport) -> Result<UsageUpdate, Error> {
    let input = u
        .input_tokens
        .map(|v| bounded("usage.input_tokens", v))
        .transpose()?;
    let output = u
        .output_tokens
        .map(|v| bounded("usage.output_tokens", v))
        .transpose()?;
    let total = match u.total_tokens {
        Some(v) => Some(bounded("usage.total_tokens", v)?),
        None => input.zip(output).map(|(i, o)| i + o),
    };
    Ok([None, total, input, output])
}
