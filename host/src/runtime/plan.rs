//! Where an invocation may send requests: the connector's own plan, made at load, and plans
//! around connections' base URLs, made once per URL rather than on every call.

use super::manifest::Manifest;
use crate::egress::HostPattern;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use url::Url;

/// Where one invocation may send requests and where its credential goes.
#[derive(Debug, Clone)]
pub(crate) struct EgressPlan {
    /// Paths starting with `/` are appended to this (no trailing slash).
    pub base_url: String,
    /// Origins the invocation may reach.
    pub allowlist: Vec<HostPattern>,
    /// The only origin that receives the credential.
    pub credential_origin: Option<HostPattern>,
}

impl EgressPlan {
    /// The plan of describe(), which runs with no egress at all: it allows nothing.
    pub(super) fn while_loading() -> Self {
        Self {
            base_url: String::new(),
            allowlist: Vec::new(),
            credential_origin: None,
        }
    }

    /// Whether this is [`EgressPlan::while_loading`]'s (only describe() has no base URL).
    pub(super) fn is_while_loading(&self) -> bool {
        self.base_url.is_empty()
    }

    pub(super) fn new(manifest: &Manifest, base_url_override: Option<&Url>) -> Self {
        let default_origin = HostPattern::origin_of(&manifest.base_url);
        let (base_url, allowlist) = match base_url_override {
            None => (manifest.base_url.clone(), manifest.allowed_hosts.clone()),
            Some(custom) => {
                // The connection's base URL takes the place of the default origin; other
                // declared origins stay as they are. If the operator's policy removed the
                // default origin, no override brings an origin back.
                let default_allowed = default_origin
                    .as_ref()
                    .is_some_and(|origin| manifest.allowed_hosts.contains(origin));
                let mut allowlist: Vec<HostPattern> = manifest
                    .allowed_hosts
                    .iter()
                    .filter(|p| Some(*p) != default_origin.as_ref())
                    .cloned()
                    .collect();
                if default_allowed {
                    allowlist.extend(HostPattern::origin_of(custom));
                }
                (custom.clone(), allowlist)
            }
        };
        let credential_origin = HostPattern::origin_of(&base_url);
        Self {
            base_url: base_url.as_str().trim_end_matches('/').to_owned(),
            allowlist,
            credential_origin,
        }
    }
}

/// Most plans [`CustomPlans`] keeps; past this it starts again (a gateway with more distinct
/// base URLs for one connector than this rebuilds plans, as it did for every call before).
const MAX_CUSTOM_PLANS: usize = 1024;

/// Plans around connections' base URLs, keyed by the URL. Only plans for URLs the operator's
/// policy allows go in, and a connector's policy is fixed for the life of its load, so an
/// entry found here needs no second check.
#[derive(Debug, Default)]
pub(super) struct CustomPlans(Mutex<HashMap<Url, Arc<EgressPlan>>>);

impl CustomPlans {
    pub(super) fn get(&self, base_url: &Url) -> Option<Arc<EgressPlan>> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(base_url)
            .cloned()
    }

    pub(super) fn insert(&self, base_url: &Url, plan: Arc<EgressPlan>) {
        let mut plans = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if plans.len() >= MAX_CUSTOM_PLANS {
            plans.clear();
        }
        plans.insert(base_url.clone(), plan);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_plans_stay_bounded() {
        let plans = CustomPlans::default();
        let plan = Arc::new(EgressPlan {
            base_url: String::new(),
            allowlist: Vec::new(),
            credential_origin: None,
        });
        for n in 0..=MAX_CUSTOM_PLANS {
            let url = Url::parse(&format!("https://h{n}.example")).expect("url");
            plans.insert(&url, plan.clone());
        }
        let kept = plans.0.lock().expect("lock").len();
        assert!(kept <= MAX_CUSTOM_PLANS, "{kept} plans kept");
        let last = Url::parse(&format!("https://h{MAX_CUSTOM_PLANS}.example")).expect("url");
        assert!(plans.get(&last).is_some(), "the newest plan is kept");
    }
}
