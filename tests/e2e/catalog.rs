//! The catalog: generated from the loaded connectors, filtered, paginated, and current after a
//! hot reload; tool definitions for LLMs respect the key's scope.

use crate::common::{SLUICE, Setup, send};
use reqwest::Method;
use serde_json::{Value, json};
use sluice_fixtures::gateway::Options;
use sluice_fixtures::{Gateway, guests};
use std::path::Path;

fn keys(rows: &Value, field: &str) -> Vec<String> {
    rows.as_array()
        .map(|rows| {
            rows.iter()
                .filter_map(|r| r[field].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn connectors_and_actions_are_listed_from_describe() {
    let setup = Setup::new().await;
    let all = setup.api(Method::GET, "/v1/available-connectors", None).await;
    assert_eq!(all.body["total"], 3, "{:?}", all.body);
    assert_eq!(keys(&all.body["rows"], "key"), ["echo", "github", "hostile"]);
    let github = setup
        .api(
            Method::GET,
            "/v1/available-connectors?name=git&category=developer-tools",
            None,
        )
        .await;
    assert_eq!(github.body["total"], 1);
    let row = &github.body["rows"][0];
    assert_eq!(
        (
            row["platform"].clone(),
            row["tools"].clone(),
            row["oauth"].clone()
        ),
        (json!("github"), json!(5), json!(false))
    );
    assert!(row["image"].as_str().is_some_and(|i| i.starts_with("https://")));
    let paged = setup
        .api(Method::GET, "/v1/available-connectors?limit=2&page=2", None)
        .await;
    assert_eq!(
        (paged.body["pages"].clone(), keys(&paged.body["rows"], "key")),
        (json!(2), vec!["hostile".to_owned()])
    );
    // A list is one value, comma-separated, as in the vault and log filters; ids and
    // categories match in any case.
    for query in [
        "platform=echo,GitHub",
        "key=github,echo",
        "category=Developer-Tools",
    ] {
        let listed = setup
            .api(Method::GET, &format!("/v1/available-connectors?{query}"), None)
            .await;
        assert_eq!(keys(&listed.body["rows"], "key"), ["echo", "github"], "{query}");
    }

    let actions = setup.api(Method::GET, "/v1/available-actions/github", None).await;
    assert_eq!(
        keys(&actions.body["rows"], "key"),
        [
            "github-get-repo",
            "github-list-issues",
            "github-get-issue",
            "github-create-issue",
            "github-create-comment"
        ]
    );
    let posts = setup
        .api(
            Method::GET,
            "/v1/available-actions/github?method=post&title=create",
            None,
        )
        .await;
    assert_eq!(keys(&posts.body["rows"], "key"), ["github-create-issue"]);
    let two = setup
        .api(
            Method::GET,
            "/v1/available-actions/github?key=github-get-issue,github-get-repo",
            None,
        )
        .await;
    assert_eq!(
        keys(&two.body["rows"], "key"),
        ["github-get-repo", "github-get-issue"]
    );
    let missing = setup.api(Method::GET, "/v1/available-actions/nope", None).await;
    assert_eq!(missing.code(), "not_found");
    let bad_limit = setup
        .api(Method::GET, "/v1/available-actions/github?limit=0", None)
        .await;
    assert_eq!(bad_limit.code(), "bad_request");
    let bad_method = setup
        .api(Method::GET, "/v1/available-actions/github?method=FOO", None)
        .await;
    assert_eq!(bad_method.code(), "bad_request");
    let message = bad_method.body["message"].as_str().unwrap_or_default();
    assert!(message.contains("`method` must be one of GET, POST"), "{message}");
}

#[tokio::test(flavor = "multi_thread")]
async fn knowledge_and_docs_route_describe_an_action() {
    let setup = Setup::new().await;
    let knowledge = setup
        .api(Method::GET, "/v1/actions/github-create-issue/knowledge", None)
        .await;
    assert_eq!(knowledge.body["action"]["method"], "POST");
    assert_eq!(knowledge.body["action"]["path"], "/repos/{owner}/{repo}/issues");
    assert_eq!(
        knowledge.body["parameters"]["required"],
        json!(["owner", "repo", "title"])
    );
    assert_eq!(knowledge.body["examples"][0]["params"]["title"], "Bug report");
    let docs = setup.api(Method::GET, "/v1/github/create_issue", None).await;
    assert_eq!(
        docs.body, knowledge.body,
        "the docs route returns the same knowledge"
    );
    let queried = setup
        .api(Method::GET, "/v1/github/create_issue?format=yaml", None)
        .await;
    assert_eq!((queried.status, queried.code()), (400, "bad_request"));
    let unknown = setup
        .api(
            Method::GET,
            "/v1/actions/github-delete-everything/knowledge",
            None,
        )
        .await;
    assert_eq!((unknown.status, unknown.code()), (404, "not_found"));
    let anonymous = send(
        setup
            .client
            .get(format!("{}/v1/github/create_issue", setup.gateway.url)),
    )
    .await;
    assert_eq!(anonymous.code(), "unauthorized");
}

#[tokio::test(flavor = "multi_thread")]
async fn tools_are_offered_in_each_format_within_the_keys_scope() {
    let setup = Setup::new().await;
    let github_only = setup.gateway.create_key("test", "github").await;
    for (format, name_at, schema_at) in [
        ("openai", "/function/name", "/function/parameters"),
        ("anthropic", "/name", "/input_schema"),
        ("mcp", "/name", "/inputSchema"),
    ] {
        let answer = setup
            .api_as(
                &github_only,
                Method::GET,
                &format!("/v1/tools?format={format}"),
                None,
            )
            .await;
        let tools = answer.body["tools"].as_array().expect("tools");
        assert_eq!(tools.len(), 5, "{format}: only the github actions");
        let names: Vec<&str> = tools
            .iter()
            .filter_map(|t| t.pointer(name_at)?.as_str())
            .collect();
        assert!(names.contains(&"github__create_issue"), "{format}: {names:?}");
        assert!(
            tools
                .iter()
                .all(|t| t.pointer(schema_at).is_some_and(Value::is_object)),
            "{format}"
        );
    }
    let all = setup.api(Method::GET, "/v1/tools", None).await;
    assert!(
        all.body["tools"].as_array().expect("tools").len() > 5,
        "a `*` key sees every connector"
    );
    let bad = setup.api(Method::GET, "/v1/tools?format=xml", None).await;
    assert_eq!(bad.code(), "bad_request");

    // The catalog keeps to the same scope: the connector list holds github alone, and another
    // connector asked for by name is scope_not_allowed, as calling it would be.
    let listed = setup
        .api_as(&github_only, Method::GET, "/v1/available-connectors", None)
        .await;
    let keys: Vec<&str> = listed.body["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .filter_map(|row| row["key"].as_str())
        .collect();
    assert_eq!(keys, ["github"]);
    for path in [
        "/v1/available-actions/echo",
        "/v1/echo/say",
        "/v1/actions/echo-say/knowledge",
    ] {
        let refused = setup.api_as(&github_only, Method::GET, path, None).await;
        assert_eq!(
            (refused.status, refused.code()),
            (403, "scope_not_allowed"),
            "{path}"
        );
    }
    let allowed = setup
        .api_as(&github_only, Method::GET, "/v1/available-actions/github", None)
        .await;
    assert_eq!(allowed.status, 200);
}

/// Tool names stay within what LLM APIs accept (1-64 of `[a-zA-Z0-9_-]`, distinct), with room
/// for an MCP client's prefix (at most 48), and each
/// calls its own action; an action id two connectors' actions share is not resolved to either.
#[tokio::test(flavor = "multi_thread")]
async fn awkward_names_give_valid_tools_and_no_silent_action_choice() {
    let gateway = Gateway::start(
        Path::new(SLUICE),
        &[guests::HOSTILE, guests::NAMES],
        Options::default(),
    )
    .await;
    let key = gateway.first_start_key.clone().expect("key");
    let client = reqwest::Client::new();
    let get = |path: &str| send(client.get(format!("{}{path}", gateway.url)).bearer_auth(&key));

    let tools = get("/v1/tools?format=openai").await;
    let names: Vec<String> = tools.body["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(|t| t["function"]["name"].as_str().map(str::to_owned))
        .collect();
    let valid = |name: &String| {
        (1..=48).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    assert!(names.iter().all(valid), "{names:?}");
    let distinct: std::collections::BTreeSet<&String> = names.iter().collect();
    assert_eq!(distinct.len(), names.len(), "{names:?}");
    assert!(names.contains(&"hostile-huge__url".to_owned()), "{names:?}");
    let long = names
        .iter()
        .find(|n| n.starts_with("hostile-huge__list_everything"))
        .expect("the long action is offered")
        .clone();
    assert_eq!(long.len(), 48, "{long}");

    // The shortened name calls the action it stands for.
    let call = send(
        client
            .post(format!("{}/mcp", gateway.url))
            .bearer_auth(&key)
            .json(&json!({
                "jsonrpc": "2.0", "id": 1, "method": "tools/call",
                "params": {"name": long, "arguments": {}},
            })),
    )
    .await;
    let text = call.body["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default();
    let reply: Value = serde_json::from_str(text).unwrap_or_default();
    assert_eq!(
        reply["data"]["endpoint"], "list_everything_a_connector_author_might_describe_at_length",
        "{:?}",
        call.body
    );
    assert_eq!(call.body["result"]["isError"], false);

    // `hostile` + `huge_url` and `hostile-huge` + `url` have the same action id.
    let shared = get("/v1/actions/hostile-huge-url/knowledge").await;
    assert_eq!((shared.status, shared.code()), (400, "bad_request"));
    let message = shared.body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("GET /v1/hostile/huge_url") && message.contains("GET /v1/hostile-huge/url"),
        "{message}"
    );
    let by_route = get("/v1/hostile-huge/url").await;
    assert_eq!(
        by_route.body["action"]["platform"], "hostile-huge",
        "{:?}",
        by_route.body
    );
}

/// The catalog follows a hot reload at once.
#[tokio::test(flavor = "multi_thread")]
async fn catalog_follows_hot_reload() {
    let gateway = Gateway::start(Path::new(SLUICE), &[guests::VERSIONED_V2], Options::default()).await;
    let key = gateway.first_start_key.clone().expect("key");
    let client = reqwest::Client::new();
    let version = || async {
        let answer = send(
            client
                .get(format!("{}/v1/available-connectors?key=versioned", gateway.url))
                .bearer_auth(&key),
        )
        .await;
        answer.body["rows"][0]["version"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(version().await, "2.0.0");
    std::fs::copy(guests::VERSIONED_V1, gateway.plugins_dir().join("versioned.wasm")).expect("replace");
    let started = std::time::Instant::now();
    while version().await != "1.0.0" {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "the catalog never changed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// `name` as a JSON Pointer reference token (RFC 6901).
fn pointer_token(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}

/// Appends to `found` the JSON Pointer (from `at`) of every property in `schema`, at any depth,
/// that has no non-empty `description`: under `properties`, and in the schemas of `items`
/// (and `prefixItems`), `anyOf`/`oneOf`/`allOf`, an object `additionalProperties` and `$defs`.
fn undescribed_properties(schema: &Value, at: &str, found: &mut Vec<String>) {
    let Some(schema) = schema.as_object() else {
        return;
    };
    if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
        for (name, property) in properties {
            let here = format!("{at}/properties/{}", pointer_token(name));
            let described = property["description"]
                .as_str()
                .is_some_and(|d| !d.trim().is_empty());
            if !described {
                found.push(here.clone());
            }
            undescribed_properties(property, &here, found);
        }
    }
    let mut subschemas = |key: &str| match schema.get(key) {
        Some(Value::Array(list)) => {
            for (index, subschema) in list.iter().enumerate() {
                undescribed_properties(subschema, &format!("{at}/{key}/{index}"), found);
            }
        }
        Some(Value::Object(map)) if key == "$defs" || key == "definitions" => {
            for (name, subschema) in map {
                let here = format!("{at}/{key}/{}", pointer_token(name));
                undescribed_properties(subschema, &here, found);
            }
        }
        Some(subschema @ Value::Object(_)) => {
            undescribed_properties(subschema, &format!("{at}/{key}"), found)
        }
        _ => {}
    };
    for key in [
        "items",
        "prefixItems",
        "anyOf",
        "oneOf",
        "allOf",
        "additionalProperties",
        "$defs",
        "definitions",
    ] {
        subschemas(key);
    }
}

/// LLMs call actions as tools from their params schemas alone: every property of every example
/// connector (in every language), nested ones included, says what it is.
#[tokio::test(flavor = "multi_thread")]
async fn every_param_of_every_example_connector_is_described() {
    let mut components = vec![guests::GITHUB, guests::GMAIL, guests::ECHO];
    for (name, built) in [
        ("slack", guests::SLACK),
        ("stripe", guests::STRIPE),
        ("hubspot", guests::HUBSPOT),
    ] {
        components.extend(crate::languages::component(name, built));
    }
    let gateway = Gateway::start(Path::new(SLUICE), &components, Options::default()).await;
    let key = gateway.create_key("test", "*").await;
    let client = reqwest::Client::new();
    let get = |path: String| send(client.get(format!("{}{path}", gateway.url)).bearer_auth(&key));

    let connectors = get("/v1/available-connectors?limit=100".into()).await;
    let platforms = keys(&connectors.body["rows"], "platform");
    assert_eq!(platforms.len(), components.len(), "{:?}", connectors.body);
    let mut missing = Vec::new();
    for platform in &platforms {
        let actions = get(format!("/v1/available-actions/{platform}?limit=100")).await;
        let endpoints = keys(&actions.body["rows"], "endpoint");
        assert!(!endpoints.is_empty(), "{platform}: {:?}", actions.body);
        for endpoint in endpoints {
            let docs = get(format!("/v1/{platform}/{endpoint}")).await;
            let schema = &docs.body["parameters"];
            assert!(schema.is_object(), "{platform}.{endpoint}: {:?}", docs.body);
            let mut found = Vec::new();
            undescribed_properties(schema, "", &mut found);
            missing.extend(found.into_iter().map(|at| format!("{platform}.{endpoint}: {at}")));
        }
    }
    assert!(
        missing.is_empty(),
        "{} params without a description:\n  {}",
        missing.len(),
        missing.join("\n  ")
    );
}
