//! Prometheus metrics, served as text at `GET /metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of a finished execute call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    /// Connector id.
    pub integration: String,
    /// Endpoint name.
    pub endpoint: String,
    /// `ok` or the error code.
    pub outcome: String,
}

/// Labels naming one connector.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectorLabels {
    /// Connector id.
    pub integration: String,
}

/// Labels of the build-info gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    /// The gateway's version.
    version: String,
}

/// Labels of a component load.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LoadLabels {
    /// `ok` or `failed`.
    pub outcome: String,
}

/// Labels of an OAuth token refresh.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefreshLabels {
    /// Connector id.
    pub integration: String,
    /// `ok`, `rejected` or `unavailable`.
    pub outcome: String,
}

/// Create the series of `labels` in `family` if it is new (a counter starts at zero).
fn start_at_zero<L, M>(family: &Family<L, M>, labels: &L)
where
    L: Clone + std::hash::Hash + Eq,
    M: Default,
{
    drop(family.get_or_create(labels));
}

fn latency_histogram() -> Histogram {
    // 50 µs to ~26 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 20))
}

/// Every metric the gateway exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Execute calls by integration, endpoint and outcome.
    pub requests: Family<CallLabels, Counter>,
    /// Gateway time of an execute call.
    pub request_seconds: Family<ConnectorLabels, Histogram>,
    /// Time inside the connector (instantiate + invoke, upstream calls included).
    pub connector_seconds: Family<ConnectorLabels, Histogram>,
    /// Time waiting for upstream responses.
    pub upstream_seconds: Family<ConnectorLabels, Histogram>,
    /// Instances running now.
    pub instances_in_use: Gauge,
    /// Spare instances waiting for a request.
    pub spare_instances: Gauge,
    /// Client connections open now (against `--max-connections`).
    pub open_connections: Gauge,
    /// Component loads (startup and hot reload) by outcome.
    pub loads: Family<LoadLabels, Counter>,
    /// Upstream requests refused by the egress policy.
    pub egress_denied: Family<ConnectorLabels, Counter>,
    /// OAuth token refreshes (calls to a token endpoint) by outcome.
    pub token_refreshes: Family<RefreshLabels, Counter>,
    /// Connections that turned `failed` (repeated 401s, or a refresh the provider refused).
    pub connections_failed: Family<ConnectorLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("sluice");
        let requests = Family::<CallLabels, Counter>::default();
        let request_seconds = Family::<ConnectorLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let connector_seconds = Family::<ConnectorLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let upstream_seconds = Family::<ConnectorLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let instances_in_use = Gauge::default();
        let spare_instances = Gauge::default();
        let open_connections = Gauge::default();
        let loads = Family::<LoadLabels, Counter>::default();
        for outcome in ["ok", "failed"] {
            start_at_zero(
                &loads,
                &LoadLabels {
                    outcome: outcome.into(),
                },
            );
        }
        let egress_denied = Family::<ConnectorLabels, Counter>::default();
        let token_refreshes = Family::<RefreshLabels, Counter>::default();
        let connections_failed = Family::<ConnectorLabels, Counter>::default();
        registry.register(
            "requests",
            "Execute calls by integration, endpoint and outcome",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Gateway time of an execute call",
            request_seconds.clone(),
        );
        registry.register(
            "connector_duration_seconds",
            "Time inside the connector, upstream calls included",
            connector_seconds.clone(),
        );
        registry.register(
            "upstream_duration_seconds",
            "Time waiting for upstream responses",
            upstream_seconds.clone(),
        );
        registry.register(
            "instances_in_use",
            "Connector instances running now",
            instances_in_use.clone(),
        );
        registry.register(
            "spare_instances",
            "Instances prepared for the next request and not yet taken",
            spare_instances.clone(),
        );
        registry.register(
            "open_connections",
            "Client connections open now; past --max-connections new clients wait",
            open_connections.clone(),
        );
        registry.register("component_loads", "Component loads by outcome", loads.clone());
        // Always 1: which version runs, for dashboards and alerts across an upgrade.
        let build_info = Family::<BuildLabels, Gauge>::default();
        let version = BuildLabels {
            version: env!("CARGO_PKG_VERSION").to_owned(),
        };
        build_info.get_or_create(&version).set(1);
        registry.register(
            "build_info",
            "The running gateway's version (always 1)",
            build_info,
        );
        registry.register(
            "egress_denied",
            "Upstream requests refused by the egress policy",
            egress_denied.clone(),
        );
        registry.register(
            "oauth_token_refreshes",
            "OAuth token refreshes by integration and outcome",
            token_refreshes.clone(),
        );
        registry.register(
            "connections_failed",
            "Connections whose credential stopped working (repeated 401s or a refused token refresh); \
             their users must reconnect",
            connections_failed.clone(),
        );
        Self {
            registry,
            requests,
            request_seconds,
            connector_seconds,
            upstream_seconds,
            instances_in_use,
            spare_instances,
            open_connections,
            loads,
            egress_denied,
            token_refreshes,
            connections_failed,
        }
    }
}

impl crate::runtime::EgressDenials for Metrics {
    fn count(&self, connector: &str) {
        let labels = ConnectorLabels {
            integration: connector.to_owned(),
        };
        self.egress_denied.get_or_create(&labels).inc();
    }
}

impl Metrics {
    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }

    /// Count one call (execute or passthrough) and how long the gateway took. The caller
    /// keeps the labels bounded: names from loaded connectors, or `unknown`.
    pub fn count_call(&self, integration: &str, endpoint: &str, outcome: &str, elapsed: std::time::Duration) {
        self.requests
            .get_or_create(&CallLabels {
                integration: integration.to_owned(),
                endpoint: endpoint.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
        self.request_seconds
            .get_or_create(&ConnectorLabels {
                integration: integration.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Start the counters a loaded connector will move at zero, so that the first event shows
    /// as an increase: `increase(sluice_egress_denied_total[5m]) > 0` misses a series whose first
    /// sample is already 1. Error outcomes stay unlisted (they are many, and `ok` is enough
    /// to tell a connector's series exist).
    pub fn start_connector_series(&self, manifest: &crate::runtime::manifest::Manifest) {
        let integration = || manifest.id.clone();
        for endpoint in &manifest.endpoints {
            start_at_zero(
                &self.requests,
                &CallLabels {
                    integration: integration(),
                    endpoint: endpoint.name.clone(),
                    outcome: "ok".into(),
                },
            );
        }
        start_at_zero(
            &self.egress_denied,
            &ConnectorLabels {
                integration: integration(),
            },
        );
        if !matches!(manifest.auth, crate::runtime::manifest::AuthScheme::None) {
            start_at_zero(
                &self.connections_failed,
                &ConnectorLabels {
                    integration: integration(),
                },
            );
        }
        if matches!(manifest.auth, crate::runtime::manifest::AuthScheme::OAuth2(_)) {
            for outcome in ["ok", "rejected", "unavailable"] {
                start_at_zero(
                    &self.token_refreshes,
                    &RefreshLabels {
                        integration: integration(),
                        outcome: outcome.into(),
                    },
                );
            }
        }
    }

    /// Count a connection that turned `failed`.
    pub fn count_connection_failed(&self, integration: &str) {
        self.connections_failed
            .get_or_create(&ConnectorLabels {
                integration: integration.to_owned(),
            })
            .inc();
    }

    /// Count a component load.
    pub fn record_load(&self, ok: bool) {
        self.loads
            .get_or_create(&LoadLabels {
                outcome: if ok { "ok" } else { "failed" }.into(),
            })
            .inc();
    }
}
