//! The document against the real router: bodies the routes accept validate against their
//! documented schemas and bodies they refuse do not; replies validate against theirs, with no
//! undocumented field; typed query parameters are refused outside their documented values.

use crate::http::{App, AppState, router};
use crate::metrics::Metrics;
use crate::oauth::refresh::TokenRefresher;
use crate::policy::Policy;
use crate::registry::Registry;
use crate::runtime::{Runtime, RuntimeLimits};
use crate::upstream::{Upstream, UpstreamError, UpstreamRequest, UpstreamResponse};
use crate::vault::api_keys::{Environment, KeyOptions, Scope};
use crate::vault::{KeySource, Vault};
use axum::body::Body;
use axum::http::{Method, Request};
use futures::future::BoxFuture;
use serde_json::{Value, json};
use sluice_fixtures::guests;
use std::sync::Arc;
use std::time::Duration;

const ADMIN_KEY: &str = "admin-key-of-the-openapi-tests";

/// No upstream: these tests call no connector that sends a request.
struct NoUpstream;

impl Upstream for NoUpstream {
    fn send(&self, _request: UpstreamRequest) -> BoxFuture<'_, Result<UpstreamResponse, UpstreamError>> {
        Box::pin(async { Err(UpstreamError::Transport("no upstream in these tests".into())) })
    }
}

/// Which key a request carries.
#[derive(Debug, Clone, Copy)]
enum Auth {
    Key,
    Admin,
    Anonymous,
}

/// The whole router over a fresh vault, with the echo, GitHub and Gmail connectors loaded.
struct Gateway {
    router: axum::Router,
    key: String,
    document: Value,
    _dir: tempfile::TempDir,
}

/// An answer: status and body (`null` if not JSON).
#[derive(Debug)]
struct Answer {
    status: u16,
    body: Value,
}

impl Gateway {
    async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let runtime =
            Arc::new(Runtime::new(RuntimeLimits::default(), Arc::new(NoUpstream)).expect("runtime"));
        let registry = Arc::new(Registry::default());
        // The documented connection fields include a base URL of the operator's choosing.
        let policy: Policy = serde_json::from_value(json!({
            "connectors": {"github": {"baseUrls": ["https://github.acme.test"]}}
        }))
        .expect("policy");
        for component in [guests::ECHO, guests::GITHUB, guests::GMAIL] {
            let bytes = std::fs::read(component).expect("component file");
            let loaded = runtime.load(bytes, &policy).await.expect("load");
            registry.insert(loaded);
        }
        let vault = Vault::open(
            &dir.path().join("sluice.db"),
            &KeySource::Explicit("ab".repeat(32)),
        )
        .expect("vault");
        let key = vault
            .create_api_key(&KeyOptions::new(Environment::Test, Scope::All))
            .expect("API key")
            .key;
        let metrics = Arc::new(Metrics::default());
        let tasks = tokio_util::task::TaskTracker::new();
        let refresher = Arc::new(TokenRefresher::for_runtime(
            vault.clone(),
            &runtime,
            300,
            metrics.clone(),
            tasks.clone(),
        ));
        let (logs, _writer) = crate::vault::logs::start_writer(vault.store()).expect("log writer");
        let app = AppState::new(App {
            runtime,
            registry,
            vault,
            public_url: "http://gateway.test".into(),
            usage: Arc::default(),
            logs,
            admin_key_hash: Some(crate::vault::crypto::api_key_hash(ADMIN_KEY)),
            max_connections_per_environment: None,
            metrics,
            max_passthrough_body: 1 << 20,
            max_call_body: 1 << 20,
            max_tool_result: 100 << 10,
            refresher,
            connect_session_ttl: 600,
            max_in_flight_per_key: None,
            dev_builds: None,
            access_log: false,
            busy_poll: None,
            cors_origins: Vec::new(),
            metrics_on_api: true,
            stopping: tokio::sync::watch::channel(false).1,
            event_streams: Arc::new(tokio::sync::Semaphore::new(1)),
            tasks,
            openapi: Default::default(),
        });
        let mut gateway = Self {
            router: router(app),
            key,
            document: Value::Null,
            _dir: dir,
        };
        let document = gateway
            .call(Method::GET, "/openapi.json", Auth::Anonymous, None)
            .await;
        assert_eq!(document.status, 200);
        gateway.document = document.body;
        gateway
    }

    async fn call(&self, method: Method, path: &str, auth: Auth, body: Option<&Value>) -> Answer {
        let mut request = Request::builder().method(method).uri(path);
        match auth {
            Auth::Key => request = request.header("authorization", format!("Bearer {}", self.key)),
            Auth::Admin => request = request.header("authorization", format!("Bearer {ADMIN_KEY}")),
            Auth::Anonymous => {}
        }
        let body = match body {
            Some(body) => {
                request = request.header("content-type", "application/json");
                Body::from(body.to_string())
            }
            None => Body::empty(),
        };
        let request = request.body(body).expect("request");
        let response = tokio::time::timeout(
            Duration::from_secs(30),
            tower::ServiceExt::oneshot(self.router.clone(), request),
        )
        .await
        .expect("answered in time")
        .expect("infallible");
        let status = response.status().as_u16();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        Answer {
            status,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        }
    }

    /// The documented operation `method` `template`.
    fn operation(&self, method: &Method, template: &str) -> &Value {
        let operation = &self.document["paths"][template][method.as_str().to_lowercase()];
        assert!(operation.is_object(), "{method} {template} is not documented");
        operation
    }

    /// The key the documented operation asks for.
    fn auth(&self, method: &Method, template: &str) -> Auth {
        let security = &self.operation(method, template)["security"][0];
        if security.get("adminKey").is_some() {
            Auth::Admin
        } else if security.get("apiKey").is_some() {
            Auth::Key
        } else {
            Auth::Anonymous
        }
    }

    /// Send `body` to the route `template` (at `path`) as its documentation says.
    async fn send(&self, method: &Method, template: &str, path: &str, body: Option<&Value>) -> Answer {
        let auth = self.auth(method, template);
        self.call(method.clone(), path, auth, body).await
    }

    /// The documented JSON request body schema of `method` `template`.
    fn request_schema(&self, method: &Method, template: &str) -> &Value {
        &self.operation(method, template)["requestBody"]["content"]["application/json"]["schema"]
    }

    /// The documented success replies of `method` `template`: status and JSON schema.
    fn successes(&self, method: &Method, template: &str) -> Vec<(u16, &Value)> {
        let responses = self.operation(method, template)["responses"]
            .as_object()
            .expect("responses");
        let successes: Vec<(u16, &Value)> = responses
            .iter()
            .filter_map(|(status, response)| {
                let status: u16 = status.parse().ok().filter(|s| (200..300).contains(s))?;
                Some((status, &response["content"]["application/json"]["schema"]))
            })
            .collect();
        assert!(!successes.is_empty(), "{method} {template} documents no success");
        successes
    }

    /// A validator of `schema`, which may refer to the document's components. `strict`
    /// refuses properties the schemas do not name, as a check that replies hide no field.
    fn validator(&self, schema: &Value, strict: bool) -> jsonschema::Validator {
        let mut root = schema.clone();
        root["components"] = self.document["components"].clone();
        if strict {
            close_every_object(&mut root);
        }
        jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .build(&root)
            .unwrap_or_else(|error| panic!("not a valid schema ({error}): {schema}"))
    }

    /// Errors of `instance` against `schema` (empty if valid).
    fn errors(&self, schema: &Value, instance: &Value, strict: bool) -> Vec<String> {
        self.validator(schema, strict)
            .iter_errors(instance)
            .map(|error| format!("{} at {}", error, error.instance_path()))
            .collect()
    }

    /// Check that the reply of a successful call validates against the documented schema, with
    /// no undocumented field.
    fn assert_documented_reply(&self, method: &Method, template: &str, answer: &Answer) {
        let successes = self.successes(method, template);
        let Some((_, schema)) = successes.iter().find(|(status, _)| *status == answer.status) else {
            panic!("{method} {template} answered {answer:?}, documented {successes:?}")
        };
        let errors = self.errors(schema, &answer.body, true);
        assert!(
            errors.is_empty(),
            "{method} {template}: the reply does not match {schema}: {errors:?}\n{}",
            answer.body
        );
    }

    /// Check that an error answer takes the documented error shape.
    fn assert_error_shape(&self, answer: &Answer) {
        let errors = self.errors(&super::schemas::reference("Error"), &answer.body, true);
        assert!(errors.is_empty(), "{:?}: {errors:?}", answer.body);
    }
}

/// Every object schema with `properties`, refusing others: for replies only (request schemas
/// combine partial objects in `anyOf`).
fn close_every_object(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            if map.contains_key("properties") && !map.contains_key("additionalProperties") {
                map.insert("additionalProperties".into(), json!(false));
            }
            map.values_mut().for_each(close_every_object);
        }
        Value::Array(items) => items.iter_mut().for_each(close_every_object),
        _ => {}
    }
}

/// Every `$ref` in `value`, with where it is.
fn references(value: &Value, at: &str, found: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                if let ("$ref", Value::String(target)) = (key.as_str(), child) {
                    found.push((at.to_owned(), target.clone()));
                }
                references(child, &format!("{at}/{key}"), found);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                references(child, &format!("{at}/{i}"), found);
            }
        }
        _ => {}
    }
}

/// The served document holds together: every `$ref` points at something in it, every schema
/// is a valid JSON Schema, every operation names its path parameters, and every JSON body and
/// reply has a schema.
#[tokio::test]
async fn the_document_is_whole_and_its_schemas_are_valid() {
    let gateway = Gateway::start().await;
    let document = &gateway.document;
    let mut found = Vec::new();
    references(document, "", &mut found);
    assert!(found.len() > 40, "{}", found.len());
    for (at, target) in &found {
        let pointer = target
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("{at}: `{target}` is not local"));
        assert!(
            document.pointer(pointer).is_some(),
            "{at}: `{target}` does not resolve"
        );
    }
    for (name, schema) in document["components"]["schemas"].as_object().expect("schemas") {
        gateway.validator(schema, false);
        assert!(schema.is_object(), "{name}");
    }
    let paths = document["paths"].as_object().expect("paths");
    // Every operation has an id, and no two share one (generated clients name methods so).
    let ids: Vec<&str> = paths
        .values()
        .flat_map(|operations| operations.as_object().expect("operations").values())
        .map(|operation| operation["operationId"].as_str().expect("operationId"))
        .collect();
    let distinct: std::collections::BTreeSet<&&str> = ids.iter().collect();
    assert_eq!(distinct.len(), ids.len(), "{ids:?}");
    assert!(
        ids.contains(&"listConnections") && ids.contains(&"passthroughDelete"),
        "{ids:?}"
    );
    for (path, operations) in paths {
        let named: Vec<&str> = path
            .split('/')
            .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
            .collect();
        for (method, operation) in operations.as_object().expect("operations") {
            let in_path: Vec<&str> = operation["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == "path")
                .filter_map(|p| p["name"].as_str())
                .collect();
            assert_eq!(in_path, named, "{method} {path}");
            for content in [&operation["requestBody"]["content"]].into_iter().chain(
                operation["responses"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(_, r)| &r["content"]),
            ) {
                if let Some(json) = content.get("application/json") {
                    gateway.validator(&json["schema"], false);
                }
            }
            assert!(
                operation["responses"]
                    .as_object()
                    .is_some_and(|responses| !responses.is_empty()),
                "{method} {path}"
            );
        }
    }
    // The request bodies of every route that reads JSON.
    for (method, template) in [
        (Method::POST, "/v1/vault/connections"),
        (Method::PATCH, "/v1/vault/connections/{id}"),
        (Method::POST, "/v1/connect"),
        (Method::POST, "/v1/admin/keys"),
        (Method::PUT, "/v1/admin/oauth-apps/{integration}"),
        (Method::POST, "/v1/{integration}/{endpoint}"),
        (Method::POST, "/v1/echo/say"),
        (Method::POST, "/mcp"),
    ] {
        assert!(
            gateway.request_schema(&method, template).is_object(),
            "{method} {template}"
        );
    }
}

/// One request body and whether the route takes it.
struct BodyCase {
    method: Method,
    template: &'static str,
    path: String,
    body: Value,
    accepted: bool,
}

fn case(method: Method, template: &'static str, path: &str, body: Value, accepted: bool) -> BodyCase {
    BodyCase {
        method,
        template,
        path: path.to_owned(),
        body,
        accepted,
    }
}

/// Each route's documented request body takes what the route takes and refuses what it refuses
/// for the body's sake: unknown fields, missing or `null` required ones, wrong types, values
/// outside a fixed set, fields that do not go together. (Refusals that depend on the gateway's
/// state — an integration that is not loaded, a time in the past — are the route's alone.)
#[tokio::test]
async fn documented_request_bodies_agree_with_the_routes() {
    let gateway = Gateway::start().await;
    let existing = gateway
        .call(
            Method::POST,
            "/v1/vault/connections",
            Auth::Key,
            Some(&json!({"platform": "github", "secret": "ghp_existing1"})),
        )
        .await;
    assert_eq!(existing.status, 201, "{:?}", existing.body);
    let connection = format!(
        "/v1/vault/connections/{}",
        existing.body["id"].as_str().expect("id")
    );
    let connection_key = existing.body["key"].as_str().expect("key").to_owned();
    let later = crate::vault::now() + 3600;

    let vault = "/v1/vault/connections";
    let update = "/v1/vault/connections/{id}";
    let connect = "/v1/connect";
    let keys = "/v1/admin/keys";
    let oauth_app = "/v1/admin/oauth-apps/{integration}";
    let gmail_app = "/v1/admin/oauth-apps/gmail";
    let echo = "/v1/echo/say";
    let cases = vec![
        // The vault API, as the README and the end-to-end tests use it.
        case(
            Method::POST,
            vault,
            vault,
            json!({"platform": "github", "secret": "ghp_x123456"}),
            true,
        ),
        case(
            Method::POST,
            vault,
            vault,
            json!({
                "platform": "github", "secret": "ghp_vaultAPIsecret", "identity": "bob", "identityType": "user",
                "name": "Bob's GitHub", "description": "for tests", "tags": ["crm", "eu"],
                "baseUrl": "https://github.acme.test"
            }),
            true,
        ),
        case(
            Method::POST,
            vault,
            vault,
            json!({"platform": "github", "secret": "ghp_x12345", "name": null, "username": null}),
            true,
        ),
        case(
            Method::POST,
            vault,
            vault,
            json!({"platform": "github", "secret": "ghp_x12345", "identityType": null}),
            false,
        ),
        case(
            Method::POST,
            vault,
            vault,
            json!({"platform": "github", "secret": "ghp_x12345", "identity": "rita", "replace": true}),
            true,
        ),
        case(
            Method::POST,
            vault,
            vault,
            json!({"platform": "github", "secret": "ghp_x12345", "replace": "yes"}),
            false,
        ),
        case(
            Method::POST,
            vault,
            vault,
            json!({"platform": "github", "secret": "ghp_x12345", "colour": "red"}),
            false,
        ),
        case(Method::POST, vault, vault, json!({"secret": "ghp_x12345"}), false),
        case(
            Method::POST,
            vault,
            vault,
            json!({"platform": null, "secret": "ghp_x12345"}),
            false,
        ),
        case(Method::POST, vault, vault, json!({"platform": "github"}), false),
        case(
            Method::POST,
            vault,
            vault,
            json!({"platform": "github", "secret": null}),
            false,
        ),
        case(
            Method::POST,
            vault,
            vault,
            json!({"platform": "github", "secret": "  "}),
            false,
        ),
        case(
            Method::POST,
            vault,
            vault,
            json!({"platform": "github", "secret": "ghp_x12345", "identityType": "robot"}),
            false,
        ),
        case(
            Method::POST,
            vault,
            vault,
            json!({"platform": "github", "secret": "ghp_x12345", "tags": "crm"}),
            false,
        ),
        case(
            Method::POST,
            vault,
            vault,
            json!({"platform": "github", "secret": "ghp_x12345", "tags": null}),
            false,
        ),
        case(
            Method::POST,
            vault,
            vault,
            json!({"platform": "github", "secret": "ghp_x12345", "tags": [""]}),
            false,
        ),
        case(
            Method::POST,
            vault,
            vault,
            json!({"platform": "github", "secret": "ghp_x12345", "username": "u", "password": "p"}),
            false,
        ),
        case(
            Method::POST,
            vault,
            vault,
            json!({"platform": "github", "password": "p"}),
            false,
        ),
        case(
            Method::POST,
            vault,
            vault,
            json!({"platform": "github", "secret": "ghp_x12345", "name": "n".repeat(1025)}),
            false,
        ),
        case(
            Method::PATCH,
            update,
            &connection,
            json!({"active": false, "name": "Old"}),
            true,
        ),
        case(
            Method::PATCH,
            update,
            &connection,
            json!({"tags": ["a"], "description": null}),
            true,
        ),
        case(Method::PATCH, update, &connection, json!({}), true),
        case(Method::PATCH, update, &connection, json!({"baseUrl": null}), true),
        case(
            Method::PATCH,
            update,
            &connection,
            json!({"baseUrl": "https://github.acme.test", "secret": "ghp_moved"}),
            true,
        ),
        case(Method::PATCH, update, &connection, json!({"active": true}), true),
        case(
            Method::PATCH,
            update,
            &connection,
            json!({"platform": "gmail"}),
            false,
        ),
        case(Method::PATCH, update, &connection, json!({"active": "no"}), false),
        case(Method::PATCH, update, &connection, json!({"tags": [""]}), false),
        case(Method::PATCH, update, &connection, json!({"secret": " "}), false),
        // Connect sessions.
        case(
            Method::POST,
            connect,
            connect,
            json!({"integration": "github", "identity": "zoe"}),
            true,
        ),
        case(
            Method::POST,
            connect,
            connect,
            json!({"platform": "github"}),
            true,
        ),
        case(
            Method::POST,
            connect,
            connect,
            json!({
                "integration": "github", "identityType": "team", "connectionKey": connection_key,
                "baseUrl": "https://github.acme.test"
            }),
            true,
        ),
        case(
            Method::POST,
            connect,
            connect,
            json!({"integration": "github", "identity": null}),
            false,
        ),
        case(
            Method::POST,
            connect,
            connect,
            json!({"integration": "github", "bogus": 1}),
            false,
        ),
        case(Method::POST, connect, connect, json!({}), false),
        case(
            Method::POST,
            connect,
            connect,
            json!({"integration": "github", "platform": "github"}),
            false,
        ),
        case(
            Method::POST,
            connect,
            connect,
            json!({"integration": "github", "identity": ""}),
            false,
        ),
        case(
            Method::POST,
            connect,
            connect,
            json!({"integration": "github", "identityType": "banana"}),
            false,
        ),
        case(
            Method::POST,
            connect,
            connect,
            json!({"integration": "github", "connection_key": connection_key}),
            false,
        ),
        // The admin API.
        case(Method::POST, keys, keys, json!({}), true),
        case(
            Method::POST,
            keys,
            keys,
            json!({"environment": "live", "scope": "github", "name": "ci", "dailyQuota": 10}),
            true,
        ),
        case(
            Method::POST,
            keys,
            keys,
            json!({"scope": "github, gmail", "perMinuteLimit": 5, "expiresAt": later, "name": null}),
            true,
        ),
        case(Method::POST, keys, keys, json!({"environment": "prod"}), false),
        case(Method::POST, keys, keys, json!({"environment": null}), false),
        case(Method::POST, keys, keys, json!({"scope": ""}), false),
        case(Method::POST, keys, keys, json!({"scope": " , "}), false),
        case(Method::POST, keys, keys, json!({"colour": 1}), false),
        case(Method::POST, keys, keys, json!({"dailyQuota": -1}), false),
        case(
            Method::POST,
            keys,
            keys,
            json!({"perMinuteLimit": 4_294_967_296_u64}),
            false,
        ),
        case(
            Method::PUT,
            oauth_app,
            gmail_app,
            json!({"clientId": "a", "clientSecret": "client-secret-b"}),
            true,
        ),
        case(
            Method::PUT,
            oauth_app,
            gmail_app,
            json!({
                "clientId": "other-client", "clientSecret": "other-secret-value", "scopes": ["extra.scope"],
                "redirectUrl": "https://app.acme.test/callback", "authorizeUrl": "https://accounts.acme.test/auth",
                "tokenUrl": null
            }),
            true,
        ),
        case(
            Method::PUT,
            oauth_app,
            gmail_app,
            json!({"clientId": "", "clientSecret": "client-secret-b"}),
            false,
        ),
        case(
            Method::PUT,
            oauth_app,
            gmail_app,
            json!({"clientId": "a", "clientSecret": " "}),
            false,
        ),
        case(
            Method::PUT,
            oauth_app,
            gmail_app,
            json!({"clientSecret": "client-secret-b"}),
            false,
        ),
        case(
            Method::PUT,
            oauth_app,
            gmail_app,
            json!({"clientId": "a", "clientSecret": "client-secret-b", "colour": 1}),
            false,
        ),
        case(
            Method::PUT,
            oauth_app,
            gmail_app,
            json!({"clientId": "a", "clientSecret": "client-secret-b", "scopes": null}),
            true,
        ),
        case(
            Method::PUT,
            oauth_app,
            gmail_app,
            json!({"clientId": "a", "clientSecret": "client-secret-b", "scopes": ["two scopes"]}),
            false,
        ),
        // Execute, through an action's own operation (its params schema inside).
        case(Method::POST, echo, echo, json!({"params": {}}), true),
        case(
            Method::POST,
            echo,
            echo,
            json!({"params": {"message": "hi"}, "identity": null}),
            false,
        ),
        case(
            Method::POST,
            echo,
            echo,
            json!({"params": {}, "identity": "alice"}),
            true,
        ),
        case(
            Method::POST,
            echo,
            echo,
            json!({"params": {}, "connection_key": null}),
            false,
        ),
        case(Method::POST, echo, echo, json!({}), false),
        case(Method::POST, echo, echo, json!({"params": null}), false),
        case(Method::POST, echo, echo, json!({"params": []}), false),
        case(
            Method::POST,
            echo,
            echo,
            json!({"params": {}, "colour": 1}),
            false,
        ),
        case(
            Method::POST,
            echo,
            echo,
            json!({"params": {}, "connection_key": "a", "connectionKey": "b"}),
            false,
        ),
    ];
    for case in &cases {
        let answer = gateway
            .send(&case.method, case.template, &case.path, Some(&case.body))
            .await;
        let label = format!("{} {} {}", case.method, case.path, case.body);
        if case.accepted {
            assert!(
                (200..300).contains(&answer.status),
                "{label}: refused, {answer:?}"
            );
        } else {
            assert_eq!(answer.status, 400, "{label}: {answer:?}");
            gateway.assert_error_shape(&answer);
        }
        let mut schemas = vec![gateway.request_schema(&case.method, case.template)];
        if case.template == echo {
            // The generic execute route documents the same body.
            schemas.push(gateway.request_schema(&Method::POST, "/v1/{integration}/{endpoint}"));
        }
        for schema in schemas {
            let errors = gateway.errors(schema, &case.body, false);
            assert_eq!(
                errors.is_empty(),
                case.accepted,
                "{label}: the documented schema disagrees with the route: {errors:?}"
            );
        }
    }
}

/// The main routes' replies match their documented success status and schema, and name no
/// field the schema does not; errors take the documented error shape.
#[tokio::test]
async fn replies_match_their_documented_schemas() {
    let gateway = Gateway::start().await;
    let check = |method: Method, template: &'static str, path: String, body: Option<Value>| {
        let gateway = &gateway;
        async move {
            let answer = gateway.send(&method, template, &path, body.as_ref()).await;
            gateway.assert_documented_reply(&method, template, &answer);
            answer.body
        }
    };

    // The vault API, through a connection's whole life.
    let created = check(
        Method::POST,
        "/v1/vault/connections",
        "/v1/vault/connections".into(),
        Some(json!({
            "platform": "github", "secret": "ghp_replies1", "identity": "bob", "identityType": "user",
            "tags": ["crm"], "baseUrl": "https://github.acme.test"
        })),
    )
    .await;
    let one = format!("/v1/vault/connections/{}", created["id"].as_str().expect("id"));
    let listed = check(
        Method::GET,
        "/v1/vault/connections",
        "/v1/vault/connections?identityType=user&tags=crm&limit=5".into(),
        None,
    )
    .await;
    assert_eq!(listed["rows"][0]["id"], created["id"]);
    check(Method::GET, "/v1/vault/connections/{id}", one.clone(), None).await;
    check(
        Method::PATCH,
        "/v1/vault/connections/{id}",
        one.clone(),
        Some(json!({"name": "Bob's", "baseUrl": null})),
    )
    .await;
    let replaced = check(
        Method::POST,
        "/v1/vault/connections",
        "/v1/vault/connections".into(),
        Some(json!({"platform": "github", "secret": "ghp_replies2", "identity": "bob", "replace": true})),
    )
    .await;
    assert_eq!(replaced["id"], created["id"]);
    let session = check(
        Method::POST,
        "/v1/connect",
        "/v1/connect".into(),
        Some(json!({"integration": "github", "identity": "bob", "connectionKey": created["key"]})),
    )
    .await;
    check(
        Method::GET,
        "/v1/connect/{id}",
        format!("/v1/connect/{}", session["id"].as_str().expect("id")),
        None,
    )
    .await;
    check(Method::DELETE, "/v1/vault/connections/{id}", one.clone(), None).await;

    // Errors: the shared shape, with `action_url` and `details` where they belong.
    let get_repo = "/v1/github/get_repo";
    for (method, path, auth, body, status) in [
        (Method::GET, one.as_str(), Auth::Key, None, 404),
        (
            Method::POST,
            get_repo,
            Auth::Key,
            Some(json!({"params": {"owner": "acme", "repo": "webapp"}})),
            403,
        ),
        (Method::GET, "/v1/vault/connections", Auth::Anonymous, None, 401),
        (
            Method::POST,
            get_repo,
            Auth::Key,
            Some(json!({"params": {"owner": 1}})),
            400,
        ),
    ] {
        let answer = gateway.call(method, path, auth, body.as_ref()).await;
        assert_eq!(answer.status, status, "{path}: {answer:?}");
        gateway.assert_error_shape(&answer);
        match status {
            403 => assert!(answer.body["action_url"].is_string(), "{answer:?}"),
            400 => assert!(answer.body["details"].is_array(), "{answer:?}"),
            _ => {}
        }
    }

    // The admin API.
    let key = check(
        Method::POST,
        "/v1/admin/keys",
        "/v1/admin/keys".into(),
        Some(json!({"environment": "live", "scope": "github", "name": "ci", "dailyQuota": 10})),
    )
    .await;
    check(Method::GET, "/v1/admin/keys", "/v1/admin/keys".into(), None).await;
    check(
        Method::DELETE,
        "/v1/admin/keys/{id}",
        format!("/v1/admin/keys/{}", key["id"]),
        None,
    )
    .await;
    let app = "/v1/admin/oauth-apps/{integration}";
    let gmail = "/v1/admin/oauth-apps/gmail".to_owned();
    check(
        Method::PUT,
        app,
        gmail.clone(),
        Some(json!({"clientId": "client", "clientSecret": "secret", "scopes": ["a"]})),
    )
    .await;
    check(Method::GET, app, gmail.clone(), None).await;
    check(
        Method::GET,
        "/v1/admin/oauth-apps",
        "/v1/admin/oauth-apps".into(),
        None,
    )
    .await;
    check(Method::DELETE, app, gmail, None).await;

    // Catalog, execute, operations.
    check(
        Method::GET,
        "/v1/available-connectors",
        "/v1/available-connectors?oauth=false".into(),
        None,
    )
    .await;
    check(
        Method::GET,
        "/v1/available-actions/{platform}",
        "/v1/available-actions/github".into(),
        None,
    )
    .await;
    check(
        Method::GET,
        "/v1/actions/{actionId}/knowledge",
        "/v1/actions/github-get-repo/knowledge".into(),
        None,
    )
    .await;
    check(
        Method::GET,
        "/v1/{integration}/{endpoint}",
        "/v1/github/get_repo".into(),
        None,
    )
    .await;
    check(
        Method::GET,
        "/v1/tools",
        "/v1/tools?format=anthropic".into(),
        None,
    )
    .await;
    check(
        Method::POST,
        "/v1/echo/say",
        "/v1/echo/say".into(),
        Some(json!({"params": {"message": "hi"}})),
    )
    .await;
    check(
        Method::POST,
        "/v1/{integration}/{endpoint}",
        "/v1/echo/say".into(),
        Some(json!({"params": {}})),
    )
    .await;
    // The request log is written in batches, off the request path.
    let mut logged = Value::Null;
    for _ in 0..100 {
        logged = check(Method::GET, "/v1/logs", "/v1/logs?integration=echo".into(), None).await;
        if logged["total"].as_i64() > Some(0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(logged["total"].as_i64() > Some(0), "{logged}");
    for path in ["/v1/plugins", "/healthz", "/readyz", "/openapi.json"] {
        check(Method::GET, path, path.into(), None).await;
    }
    for message in [
        json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}),
        json!({"jsonrpc": "2.0", "id": "two", "method": "tools/list"}),
        json!({"jsonrpc": "2.0", "id": 3, "method": "no/such"}),
    ] {
        check(Method::POST, "/mcp", "/mcp".into(), Some(message)).await;
    }
}

/// A value the route takes for a documented parameter of `schema`.
fn good_value(schema: &Value) -> String {
    if let Some(first) = schema["enum"].get(0).and_then(Value::as_str) {
        return first.to_owned();
    }
    if let Some(first) = schema["anyOf"].get(0) {
        return good_value(first);
    }
    if schema["format"] == "date-time" {
        return "2030-01-31T12:00:00Z".into();
    }
    match schema["type"].as_str() {
        Some("integer") => schema["default"]
            .as_i64()
            .or(schema["minimum"].as_i64())
            .unwrap_or(0)
            .to_string(),
        Some("boolean") => "true".into(),
        Some("string") if schema.get("pattern").is_some() => schema["examples"][0]
            .as_str()
            .expect("a patterned parameter's example")
            .into(),
        Some("array") => match schema["items"]["examples"].get(0).and_then(Value::as_str) {
            Some(example) => format!("{example},{example}"),
            None => "a,b".into(),
        },
        _ => "x".into(),
    }
}

/// Values outside what the parameter's schema allows (none for free text).
fn bad_values(schema: &Value) -> Vec<String> {
    if schema.get("enum").is_some() {
        return vec!["not-a-value".into()];
    }
    if schema.get("anyOf").is_some() {
        // Neither a time nor a number of milliseconds, nor a time with an offset to guess at.
        return vec![
            "yesterday".into(),
            "-1".into(),
            "2030-01-31T12:00:00+02:00".into(),
        ];
    }
    match schema["type"].as_str() {
        Some("integer") => {
            let mut bad = vec!["x".to_owned()];
            if let Some(min) = schema["minimum"].as_i64() {
                bad.push((min - 1).to_string());
            }
            if let Some(max) = schema["maximum"].as_i64().filter(|max| *max < i64::MAX) {
                bad.push((max + 1).to_string());
            }
            bad
        }
        Some("boolean") => vec!["maybe".into()],
        Some("string") if schema.get("pattern").is_some() => vec!["x".into()],
        Some("array") if schema["items"].get("pattern").is_some() => vec!["x".into()],
        _ => Vec::new(),
    }
}

/// The typed query parameters of every documented list route are checked as documented: each
/// documented value is taken, each value outside the schema is a `400 bad_request`. The MCP
/// endpoint takes its documented connection parameters and nothing else.
#[tokio::test]
async fn typed_query_parameters_are_checked_as_documented() {
    let gateway = Gateway::start().await;
    let paths = gateway.document["paths"].as_object().expect("paths");
    let mut checked = 0;
    for (template, operations) in paths {
        let Some(operation) = operations.get("get") else {
            continue;
        };
        let parameters: Vec<Value> = operation["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| match p["$ref"].as_str() {
                Some(target) => gateway.document.pointer(&target[1..]).expect("resolves").clone(),
                None => p.clone(),
            })
            .filter(|p| p["in"] == "query")
            .collect();
        let is_json = operation["responses"]["200"]["content"]
            .get("application/json")
            .is_some();
        if parameters.is_empty() || !is_json {
            continue;
        }
        // The server refuses a repeated query parameter: a list is one comma-separated value,
        // which a generated client sends only when told `explode: false`.
        for parameter in parameters.iter().filter(|p| p["schema"]["type"] == "array") {
            assert_eq!(
                (&parameter["style"], &parameter["explode"]),
                (&json!("form"), &json!(false)),
                "{template}: {parameter}"
            );
        }
        let path = template.replace("{platform}", "github");
        let all_good: Vec<String> = parameters
            .iter()
            .map(|p| {
                format!(
                    "{}={}",
                    p["name"].as_str().expect("name"),
                    good_value(&p["schema"])
                )
            })
            .collect();
        let answer = gateway
            .send(
                &Method::GET,
                template,
                &format!("{path}?{}", all_good.join("&")),
                None,
            )
            .await;
        gateway.assert_documented_reply(&Method::GET, template, &answer);
        for parameter in &parameters {
            let name = parameter["name"].as_str().expect("name");
            for bad in bad_values(&parameter["schema"]) {
                let answer = gateway
                    .send(&Method::GET, template, &format!("{path}?{name}={bad}"), None)
                    .await;
                assert_eq!(answer.status, 400, "{template}?{name}={bad}: {answer:?}");
                gateway.assert_error_shape(&answer);
                checked += 1;
            }
        }
    }
    assert!(checked >= 15, "{checked}");

    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"});
    let mcp = gateway.operation(&Method::POST, "/mcp")["parameters"].clone();
    for parameter in mcp.as_array().expect("parameters") {
        let name = parameter["name"].as_str().expect("name");
        let answer = gateway
            .send(&Method::POST, "/mcp", &format!("/mcp?{name}=x"), Some(&ping))
            .await;
        assert_eq!(answer.status, 200, "{name}: {answer:?}");
    }
    let undocumented = gateway
        .send(&Method::POST, "/mcp", "/mcp?colour=red", Some(&ping))
        .await;
    assert_eq!(undocumented.status, 400, "{undocumented:?}");
}

/// The document is rendered once per set of loaded connectors, not once per request.
#[test]
fn the_document_is_rendered_again_only_when_the_connectors_change() {
    let cache = super::Cache::default();
    let renders = std::cell::Cell::new(0);
    let render = || {
        renders.set(renders.get() + 1);
        bytes::Bytes::from(format!("render {}", renders.get()))
    };
    let loaded = Arc::new(std::collections::BTreeMap::new());
    assert_eq!(cache.rendered(&loaded, render), "render 1");
    assert_eq!(cache.rendered(&loaded, render), "render 1");
    let reloaded = Arc::new(std::collections::BTreeMap::new());
    assert_eq!(cache.rendered(&reloaded, render), "render 2");
    assert_eq!(renders.get(), 2);
}

/// A params schema with `$defs` (as pydantic writes them) keeps its references resolvable
/// once embedded in the document: they point where the schema is, not at the document's root.
#[test]
fn an_embedded_params_schema_keeps_its_local_references() {
    use crate::runtime::bindings::{AuthScheme, WitEndpoint, WitManifest};
    let schema = json!({
        "type": "object",
        "properties": {
            "home": {"$ref": "#/$defs/Address"},
            "work": {"anyOf": [{"$ref": "#/$defs/Address"}, {"type": "null"}]},
            "next": {"$ref": "#"}
        },
        "$defs": {"Address": {"type": "object", "properties": {"city": {"type": "string"}}}}
    });
    let manifest = crate::runtime::manifest::Manifest::from_wit(WitManifest {
        id: "crm".into(),
        name: "CRM".into(),
        version: "1.0.0".into(),
        description: String::new(),
        category: "test".into(),
        icon_url: None,
        base_url: "https://api.example.com".into(),
        allowed_hosts: vec!["https://api.example.com".into()],
        auth: AuthScheme::Bearer,
        endpoints: vec![WitEndpoint {
            name: "add_contact".into(),
            title: "Add a contact".into(),
            method: "POST".into(),
            path: "/contacts".into(),
            description: String::new(),
            params_schema: schema.to_string(),
            examples: Vec::new(),
        }],
    })
    .expect("loads");
    let operation = super::action_operation(&manifest, &manifest.endpoints[0]);
    let document = json!({"paths": {"/v1/crm/add_contact": {"post": operation}}});
    let mut references = Vec::new();
    collect_refs(&document, &mut references);
    // (The gateway's own components are checked with the whole document elsewhere.)
    references.retain(|reference| !reference.starts_with("#/components/"));
    assert_eq!(references.len(), 3, "{references:?}");
    for reference in references {
        let target = document.pointer(&reference[1..]);
        assert!(target.is_some(), "`{reference}` does not resolve");
    }
    let params =
        "/paths/~1v1~1crm~1add_contact/post/requestBody/content/application~1json/schema/properties/params";
    assert_eq!(
        document.pointer(params).map(|p| &p["$defs"]),
        Some(&schema["$defs"])
    );
}

fn collect_refs(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::Object(object) => {
            for (name, value) in object {
                match value.as_str() {
                    Some(reference) if name == "$ref" => found.push(reference.to_owned()),
                    _ => collect_refs(value, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| collect_refs(item, found)),
        _ => {}
    }
}
