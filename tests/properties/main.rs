//! Property tests of the runtime: arbitrary params JSON into real connector components never
//! crashes the host; every outcome is an output or a typed connector error.

use futures::future::BoxFuture;
use proptest::prelude::*;
use serde_json::Value;
use sluice::policy::Policy;
use sluice::runtime::{CallContext, Credential, InvokeError, LoadedConnector, Runtime, RuntimeLimits};
use sluice::upstream::{Upstream, UpstreamError, UpstreamRequest, UpstreamResponse};
use sluice_fixtures::guests;
use std::sync::{Arc, OnceLock};

/// Answers every request in-process with a small JSON body.
struct Canned;

impl Upstream for Canned {
    fn send(&self, _request: UpstreamRequest) -> BoxFuture<'_, Result<UpstreamResponse, UpstreamError>> {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        Box::pin(async move {
            Ok(UpstreamResponse {
                status: 200,
                headers,
                body: bytes::Bytes::from_static(br#"{"ok":true}"#),
            })
        })
    }
}

struct World {
    tokio: tokio::runtime::Runtime,
    runtime: Runtime,
    github: LoadedConnector,
    echo: LoadedConnector,
}

/// Compiling the components is the slow part: do it once for all cases.
fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let tokio = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("tokio");
        let runtime = Runtime::new(RuntimeLimits::default(), Arc::new(Canned)).expect("runtime");
        let load = |path: &str| {
            tokio
                .block_on(runtime.load(std::fs::read(path).expect("component"), &Policy::default()))
                .expect("load")
        };
        let github = load(guests::GITHUB);
        let echo = load(guests::ECHO);
        World {
            tokio,
            runtime,
            github,
            echo,
        }
    })
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "\\PC{0,20}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::hash_map("[a-z_]{1,12}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn params() -> impl Strategy<Value = Value> {
    prop::collection::hash_map(
        prop_oneof![
            Just("owner".to_owned()),
            Just("repo".to_owned()),
            Just("title".to_owned()),
            Just("issue_number".to_owned()),
            "[a-z_]{1,8}"
        ],
        json_value(),
        0..6,
    )
    .prop_map(|m| Value::Object(m.into_iter().collect()))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever the params, GitHub endpoints answer or fail with a typed error — never a trap.
    #[test]
    fn github_never_traps_on_any_params(params in params(), endpoint in 0usize..5) {
        let world = world();
        let endpoint = ["get_repo", "list_issues", "get_issue", "create_issue", "create_comment"][endpoint];
        let context = CallContext {
            transaction_key: "txn_prop".into(),
            credential: Some(Credential::new("ghp_property_token")),
            ..CallContext::default()
        };
        let outcome = world
            .tokio
            .block_on(world.runtime.invoke(&world.github, endpoint, &params.to_string(), context));
        match outcome {
            Ok(invoked) => prop_assert_eq!(invoked.output.status, 200),
            Err(InvokeError::Connector(_)) => {}
            Err(other) => prop_assert!(false, "{endpoint} with {params}: {other}"),
        }
    }

    /// The echo connector returns any object unchanged.
    #[test]
    fn echo_round_trips_any_object(params in params()) {
        let world = world();
        let invoked = world
            .tokio
            .block_on(world.runtime.invoke(&world.echo, "say", &params.to_string(), CallContext::default()))
            .expect("echo answers");
        let echoed: Value = serde_json::from_slice(&invoked.output.body).expect("JSON");
        prop_assert_eq!(echoed, params);
    }
}
