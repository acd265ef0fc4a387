//! `[envoy]`: the domain and descriptor routes of the Envoy front door, checked into
//! [`EnvoyConfig`].

use super::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEnvoy {
    pub(super) domain: Option<String>,
    pub(super) service_key: Option<String>,
    #[serde(default)]
    pub(super) descriptors: Vec<RawRoute>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    pub(super) entries: std::collections::BTreeMap<String, String>,
    pub(super) service: String,
}

impl RawEnvoy {
    pub(super) fn validate(self, services: &[ServiceSpec]) -> Result<EnvoyConfig, String> {
        let mut routes = Vec::with_capacity(self.descriptors.len());
        for (i, route) in self.descriptors.into_iter().enumerate() {
            if route.entries.is_empty() {
                return Err(format!(
                    "envoy.descriptors[{i}].entries: at least one entry"
                ));
            }
            let Some(service) = services.iter().find(|s| s.name == route.service) else {
                return Err(format!(
                    "envoy.descriptors[{i}].service: {:?} is not a configured service",
                    route.service
                ));
            };
            // The service or an ancestor: a child's grant holds its parent's in-flight slot too.
            let mut at = Some(service);
            for _ in 0..=MAX_ANCESTORS {
                let Some(s) = at else { break };
                if s.concurrent().is_some() {
                    return Err(format!(
                        "envoy.descriptors[{i}].service: {:?} spends a concurrent limit (of {:?}), \
                         and Envoy never reports a call's end",
                        route.service, s.name
                    ));
                }
                at = s
                    .parent
                    .as_deref()
                    .and_then(|p| services.iter().find(|x| x.name == p));
            }
            routes.push(DescriptorRoute {
                entries: route.entries.into_iter().collect(),
                service: route.service,
            });
        }
        let service_key = self
            .service_key
            .unwrap_or_else(|| DEFAULT_SERVICE_KEY.to_string());
        if service_key.is_empty() {
            return Err("envoy.service_key: must not be empty".into());
        }
        Ok(EnvoyConfig {
            domain: self.domain,
            service_key,
            routes,
        })
    }
}
