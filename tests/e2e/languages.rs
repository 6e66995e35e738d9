//! What the end-to-end tests of connectors written in other languages (Python, JavaScript, C)
//! share: finding the component `tests/fixtures/build.rs` built, and a gateway serving only
//! that connector with a connection pointing at a fake upstream.

use crate::common::{Answer, SLUICE, send};
use serde_json::{Value, json};
use sluice_fixtures::gateway::Options;
use sluice_fixtures::{FakeUpstream, Gateway, Recorded, Reply};

/// The component for `connector`, or `None` (after saying so loudly) when its toolchain was
/// missing at build time. In CI a missing component fails the test instead: every language
/// must be built and tested there (the fixtures' build script fails first in that case).
pub fn component(connector: &str, built: Option<&'static str>) -> Option<&'static str> {
    if built.is_none() {
        let in_ci = std::env::var_os("CI").is_some_and(|value| !value.is_empty() && value != "false");
        assert!(
            !in_ci,
            "the {connector} connector was not built, but CI must test it"
        );
        eprintln!(
            "\n########## SKIPPED: the {connector} connector was not built (its toolchain is missing; \
             see the cargo warning from sluice-fixtures) ##########\n"
        );
    }
    built
}

/// A gateway serving one connector, a key with `*` scope, and a connection to a fake upstream.
pub struct Connected {
    pub gateway: Gateway,
    pub upstream: FakeUpstream,
    pub key: String,
    /// The credential stored in the connection; it must never show up in the gateway's output.
    pub secret: &'static str,
    pub client: reqwest::Client,
}

impl Connected {
    /// Start the gateway with `component`, connect `integration` with `secret`, and point the
    /// connection's base URL at a fake upstream answering with `responder` (`base_path` is
    /// appended to the fake's URL, like Slack's `/api`).
    pub async fn start(
        component: &str,
        integration: &str,
        secret: &'static str,
        base_path: &str,
        responder: impl Fn(&Recorded) -> Reply + Send + Sync + 'static,
    ) -> Self {
        Self::start_with(
            component,
            integration,
            secret,
            base_path,
            responder,
            Options::default(),
        )
        .await
    }

    /// The same with gateway options.
    pub async fn start_with(
        component: &str,
        integration: &str,
        secret: &'static str,
        base_path: &str,
        responder: impl Fn(&Recorded) -> Reply + Send + Sync + 'static,
        options: Options,
    ) -> Self {
        let upstream = FakeUpstream::start(responder).await;
        let gateway = Gateway::start(std::path::Path::new(SLUICE), &[component], options).await;
        let key = gateway.create_key("test", "*").await;
        let base_url = format!("{}{base_path}", upstream.url());
        gateway
            .add_connection(integration, secret, &["--base-url", &base_url])
            .await;
        Self {
            gateway,
            upstream,
            key,
            secret,
            client: reqwest::Client::new(),
        }
    }

    /// `POST /v1/{integration}/{endpoint}` with `{"params": params}`.
    pub async fn execute(&self, integration: &str, endpoint: &str, params: Value) -> Answer {
        let request = self
            .client
            .post(format!("{}/v1/{integration}/{endpoint}", self.gateway.url))
            .bearer_auth(&self.key)
            .json(&json!({ "params": params }));
        send(request).await
    }

    /// The catalog entry of one action: its JSON Schema and examples from `describe()`.
    pub async fn knowledge(&self, action_id: &str) -> Answer {
        let request = self
            .client
            .get(format!("{}/v1/actions/{action_id}/knowledge", self.gateway.url))
            .bearer_auth(&self.key);
        send(request).await
    }

    /// Everything the fake upstream received.
    pub fn requests(&self) -> Vec<Recorded> {
        self.upstream.requests()
    }

    /// The one request the fake upstream received.
    pub fn only_request(&self) -> Recorded {
        let requests = self.requests();
        assert_eq!(requests.len(), 1, "{requests:#?}");
        requests[0].clone()
    }
}

/// Whatever a test did, the connection secret must not have reached the gateway's output.
impl Drop for Connected {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            assert!(
                !self.gateway.output().contains(self.secret),
                "the secret leaked into the gateway's output"
            );
        }
    }
}

/// Every documented example of every action validates and runs: the catalog lists the
/// connector's actions with schemas and examples, straight from its `describe()`.
pub async fn examples_are_listed(setup: &Connected, integration: &str, actions: &[&str]) {
    for action in actions {
        let knowledge = setup
            .knowledge(&format!("{integration}-{}", action.replace('_', "-")))
            .await;
        assert_eq!(knowledge.status, 200, "{action}: {:?}", knowledge.body);
        assert_eq!(
            knowledge.body["parameters"]["type"], "object",
            "{action} has a params schema: {:?}",
            knowledge.body
        );
        assert!(
            knowledge.body["examples"]
                .as_array()
                .is_some_and(|examples| !examples.is_empty()),
            "{action} has examples: {:?}",
            knowledge.body
        );
    }
}

/// With private upstreams refused (the operator did not opt in), the loopback fake is
/// unreachable: the host's typed `denied` http-error must reach the connector, and the
/// connector must hand it back as its `http` error, which the gateway reports as
/// `403 egress_denied` with nothing sent. This exercises each language's error mapping.
pub async fn refused_egress_is_egress_denied(
    component: &str,
    integration: &str,
    secret: &'static str,
    endpoint: &str,
    params: Value,
) {
    let options = Options {
        deny_private_upstreams: true,
        ..Options::default()
    };
    let setup = Connected::start_with(
        component,
        integration,
        secret,
        "",
        |_| Reply::text(200, "unreachable"),
        options,
    )
    .await;
    let answer = setup.execute(integration, endpoint, params).await;
    assert_eq!(
        (answer.status, answer.code()),
        (403, "egress_denied"),
        "{:?}",
        answer.body
    );
    assert!(setup.requests().is_empty(), "nothing was sent");
}

/// A 400 `bad_request` naming the failing part of the params, with nothing sent upstream.
pub fn assert_bad_request(setup: &Connected, answer: &Answer, before: usize) {
    assert_eq!(
        (answer.status, answer.code()),
        (400, "bad_request"),
        "{:?}",
        answer.body
    );
    assert_eq!(
        setup.requests().len(),
        before,
        "nothing is sent upstream for bad params"
    );
}
