//! Operations endpoints: readiness and Prometheus metrics.

use crate::common::{Setup, send};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn readyz_reports_a_writable_database() {
    let setup = Setup::new().await;
    let ready = send(setup.client.get(format!("{}/readyz", setup.gateway.url))).await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.body["status"], "ready");
    assert_eq!(ready.body["connectors"], 3);
}

/// A database file removed under the running gateway (its connections would go on writing to
/// the removed file) makes it not ready, saying why, and ready again once the file is back.
#[tokio::test(flavor = "multi_thread")]
async fn readyz_fails_while_the_database_file_is_gone() {
    let setup = Setup::new().await;
    let ready = format!("{}/readyz", setup.gateway.url);
    let db = setup.gateway.data_dir().join("sluice.db");
    let moved = setup.gateway.data_dir().join("moved.db");
    std::fs::rename(&db, &moved).expect("move the database away");
    let gone = send(setup.client.get(&ready)).await;
    assert_eq!(gone.status, 503, "{:?}", gone.body);
    assert_eq!(
        gone.body["message"],
        "the database file was removed or replaced while the gateway ran: restore it and restart the gateway"
    );
    std::fs::rename(&moved, &db).expect("put it back");
    assert_eq!(send(setup.client.get(&ready)).await.status, 200);
}

/// A database file this user cannot write is refused at start, saying so, rather than served
/// from until the first write fails. (Made read-only with `chattr +i`, as root may write any
/// file; skipped where this machine cannot set the attribute.)
#[test]
fn a_database_the_gateway_cannot_write_stops_it_at_start() {
    let data = tempfile::tempdir().expect("data");
    let db = data.path().join("sluice.db");
    drop(sluice::store::SqliteStore::open(&db).expect("a database"));
    let immutable = |flag: &str| {
        std::process::Command::new("chattr")
            .arg(flag)
            .arg(&db)
            .status()
            .is_ok_and(|status| status.success())
    };
    if !immutable("+i") {
        eprintln!("skipped: `chattr +i` is not available here");
        return;
    }
    let started = std::process::Command::new(crate::common::SLUICE)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path())
        .arg("--plugins")
        .arg(data.path())
        .output();
    // Writable again before anything is asserted, so that the directory can be removed.
    assert!(immutable("-i"), "chattr -i");
    let started = started.expect("sluice serve");
    let said = String::from_utf8_lossy(&started.stderr);
    assert!(!started.status.success(), "{said}");
    assert!(said.contains("is read-only for this user"), "{said}");
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_calls_by_outcome_without_unbounded_labels() {
    let setup = Setup::new().await;
    // A loaded connector's counters exist at zero before its first event, so that an alert on
    // their increase sees that event.
    let before = setup.gateway.metrics().await;
    for zero in [
        r#"sluice_requests_total{integration="github",endpoint="get_repo",outcome="ok"} 0"#,
        r#"sluice_egress_denied_total{integration="hostile"} 0"#,
        r#"sluice_component_loads_total{outcome="failed"} 0"#,
        concat!(
            r#"sluice_build_info{version=""#,
            env!("CARGO_PKG_VERSION"),
            r#""} 1"#
        ),
    ] {
        assert!(before.contains(zero), "missing `{zero}` in:\n{before}");
    }
    setup.get_repo().await;
    let said = setup
        .execute("echo", "say", json!({"params": {"message": "hi"}}))
        .await;
    assert_eq!(said.status, 200, "{:?}", said.body);
    for made_up in ["aaa", "bbb", "ccc"] {
        setup.execute(made_up, "x", json!({"params": {}})).await;
    }
    setup
        .execute(
            "hostile",
            "call",
            json!({"params": {"url": "https://elsewhere.invalid/"}}),
        )
        .await;
    // A refusal in a call that then crashes is counted too.
    let crashed = setup
        .execute("hostile", "probe_then_panic", json!({"params": {}}))
        .await;
    assert_eq!(crashed.code(), "connector_trap", "{:?}", crashed.body);
    let expected = [
        r#"sluice_requests_total{integration="github",endpoint="get_repo",outcome="ok"} 1"#,
        r#"sluice_requests_total{integration="unknown",endpoint="unknown",outcome="not_found"} 3"#,
        r#"sluice_requests_total{integration="hostile",endpoint="call",outcome="egress_denied"} 1"#,
        r#"sluice_egress_denied_total{integration="hostile"} 2"#,
        r#"sluice_component_loads_total{outcome="ok"} 3"#,
        "sluice_instances_in_use 0",
        "sluice_spare_instances ",
        r#"sluice_request_duration_seconds_count{integration="github"} 1"#,
        r#"sluice_request_duration_seconds_count{integration="echo"} 1"#,
        r#"sluice_upstream_duration_seconds_count{integration="github"} 1"#,
        r#"sluice_connector_duration_seconds_bucket{le="#,
    ];
    // A used instance is torn down just after its answer is sent: on a busy machine the first
    // scrape may still count it in use.
    let started = std::time::Instant::now();
    let mut text = setup.gateway.metrics().await;
    while !expected.iter().all(|e| text.contains(e)) && started.elapsed() < crate::common::BACKGROUND_WORK {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        text = setup.gateway.metrics().await;
    }
    for expected in expected {
        assert!(text.contains(expected), "missing `{expected}` in:\n{text}");
    }
    assert!(!text.contains("aaa"), "made-up names do not become labels");
    // Echo answered without an upstream: that is no upstream duration of 0.
    assert!(
        !text.contains(r#"sluice_upstream_duration_seconds_count{integration="echo"}"#),
        "{text}"
    );
    let open_connections: i64 = text
        .lines()
        .find_map(|line| line.strip_prefix("sluice_open_connections "))
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no sluice_open_connections in:\n{text}"));
    assert!(open_connections >= 1, "this very request's connection is open");
}

/// With `--cors-origin`, a page of that origin may call the API from a browser: preflights are
/// answered without a key, and every answer (errors too) is readable by the page. Other origins,
/// and gateways without the flag, get no CORS headers.
#[tokio::test(flavor = "multi_thread")]
async fn browser_pages_of_allowed_origins_may_call_the_api() {
    let app = "https://app.example.com";
    let preflight = |url: &str, origin: &str| {
        reqwest::Client::new()
            .request(reqwest::Method::OPTIONS, format!("{url}/v1/echo/say"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization,content-type")
            .send()
    };
    let header = |response: &reqwest::Response, name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let setup = Setup::with_options(sluice_fixtures::gateway::Options {
        extra_args: vec!["--cors-origin".into(), format!("{app},http://localhost:5173")],
        ..Default::default()
    })
    .await;
    let url = &setup.gateway.url;
    let allowed = preflight(url, app).await.expect("preflight");
    assert!(allowed.status().is_success(), "{}", allowed.status());
    assert_eq!(
        header(&allowed, "access-control-allow-origin").as_deref(),
        Some(app)
    );
    let allowed_headers = header(&allowed, "access-control-allow-headers").unwrap_or_default();
    assert!(allowed_headers.contains("authorization"), "{allowed_headers}");
    assert!(
        header(&allowed, "access-control-allow-methods")
            .unwrap_or_default()
            .contains("POST")
    );
    let elsewhere = preflight(url, "https://evil.example").await.expect("preflight");
    assert_eq!(header(&elsewhere, "access-control-allow-origin"), None);

    let call = setup
        .client
        .post(format!("{url}/v1/echo/say"))
        .bearer_auth(&setup.key)
        .header("origin", app)
        .json(&json!({"params": {}}))
        .send()
        .await
        .expect("call");
    assert_eq!(call.status(), 200);
    assert_eq!(header(&call, "access-control-allow-origin").as_deref(), Some(app));
    let exposed = header(&call, "access-control-expose-headers").unwrap_or_default();
    assert!(
        exposed.contains("x-transaction-key") && exposed.contains("x-request-id"),
        "{exposed}"
    );
    // An allowed origin may use MCP too (others are refused there: DNS rebinding).
    let mcp = setup
        .client
        .post(format!("{url}/mcp"))
        .bearer_auth(&setup.key)
        .header("origin", app)
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}))
        .send()
        .await
        .expect("mcp");
    assert_eq!(mcp.status(), 200);
    let keyless = reqwest::Client::new()
        .post(format!("{url}/v1/echo/say"))
        .header("origin", "http://localhost:5173")
        .json(&json!({"params": {}}))
        .send()
        .await
        .expect("call");
    assert_eq!(keyless.status(), 401, "the key is still required");
    assert_eq!(
        header(&keyless, "access-control-allow-origin").as_deref(),
        Some("http://localhost:5173"),
        "the page can read the error"
    );

    let without_flag = sluice_fixtures::Gateway::start(
        std::path::Path::new(crate::common::SLUICE),
        &[sluice_fixtures::guests::ECHO],
        sluice_fixtures::gateway::Options::default(),
    )
    .await;
    let refused = preflight(&without_flag.url, app).await.expect("preflight");
    assert_eq!(header(&refused, "access-control-allow-origin"), None);
}

/// `--log-format json` makes every log line a JSON object, ready for a log pipeline.
#[tokio::test(flavor = "multi_thread")]
async fn json_log_format_emits_json_lines() {
    let setup = Setup::with_options(sluice_fixtures::gateway::Options {
        extra_args: vec!["--log-format".into(), "json".into(), "--access-log".into()],
        ..Default::default()
    })
    .await;
    setup.execute("echo", "say", json!({"params": {}})).await;
    // Logged as the answer goes out, and read from the process's stderr apart from it.
    let output = setup
        .gateway
        .output_with_line(&["sluice::access", "/v1/echo/say", "txn_"])
        .await;
    let log_lines: Vec<&str> = output.lines().filter(|l| l.starts_with('{')).collect();
    assert!(log_lines.len() > 3, "{output}");
    for line in &log_lines {
        let parsed: serde_json::Value = serde_json::from_str(line).expect("each log line is JSON");
        assert!(
            parsed["level"].is_string() && parsed["fields"].is_object(),
            "{line}"
        );
    }
    // The access line carries the request span (transaction key, method, path) and the outcome.
    assert!(
        log_lines
            .iter()
            .any(|l| l.contains(r#""target":"sluice::access""#)
                && l.contains(r#""path":"/v1/echo/say""#)
                && l.contains(r#""status":200"#)
                && l.contains("txn_")),
        "{output}"
    );
}

/// Without `--access-log` a successful call writes no line to the process log (it is still in
/// the request log, `GET /v1/logs`).
#[tokio::test(flavor = "multi_thread")]
async fn access_log_is_opt_in() {
    let setup = Setup::new().await;
    let ok = setup.execute("echo", "say", json!({"params": {}})).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let output = setup.gateway.output();
    assert!(!output.contains("request done"), "{output}");
    assert!(
        output.contains("connectors loaded"),
        "the process log itself works: {output}"
    );
}

/// Every operation in `/openapi.json` is a route the gateway really serves (none falls through
/// to the router's "no such route" or "method not allowed").
#[tokio::test(flavor = "multi_thread")]
async fn openapi_document_matches_the_routes() {
    let setup = Setup::with_options(sluice_fixtures::gateway::Options {
        admin_api: true,
        ..Default::default()
    })
    .await;
    let document = send(setup.client.get(format!("{}/openapi.json", setup.gateway.url))).await;
    assert_eq!(document.body["openapi"], "3.1.0");
    let paths = document.body["paths"].as_object().expect("paths");
    assert!(paths.len() > 15, "{paths:?}");
    let mut checked = 0;
    for (path, operations) in paths {
        let concrete = path
            .replace("{integration}", "github")
            .replace("{endpoint}", "get_repo")
            .replace("{platform}", "github")
            .replace("{actionId}", "github-get-repo")
            .replace("{id}", "conn_1")
            .replace("{path}", "repos/acme/webapp");
        for (method, operation) in operations.as_object().expect("operations") {
            let admin = operation["security"][0].get("adminKey").is_some();
            let key = if admin {
                sluice_fixtures::gateway::TEST_ADMIN_KEY
            } else {
                setup.key.as_str()
            };
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            let response = setup
                .client
                .request(method.clone(), format!("{}{concrete}", setup.gateway.url))
                .bearer_auth(key)
                .header("content-type", "application/json")
                .body("{}")
                .send()
                .await
                .expect("request");
            let status = response.status().as_u16();
            let streaming = response
                .headers()
                .get("content-type")
                .is_some_and(|t| t.as_bytes().starts_with(b"text/event-stream"));
            // An event stream does not end: its status and headers say it is routed.
            let body = if streaming {
                String::new()
            } else {
                response.text().await.unwrap_or_default()
            };
            assert_ne!(status, 405, "{method} {path} is not routed");
            assert!(
                !body.contains("no such route"),
                "{method} {path} is not routed: {body}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 20, "{checked}");

    // Each loaded action is an operation of its own, its body carrying the action's schema.
    let get_repo = &paths["/v1/github/get_repo"]["post"];
    assert_eq!(get_repo["operationId"], "github__get_repo");
    let body = &get_repo["requestBody"]["content"]["application/json"]["schema"];
    assert_eq!(body["required"], json!(["params"]));
    let params = &body["properties"]["params"];
    assert!(
        params["required"]
            .as_array()
            .is_some_and(|r| r.contains(&json!("owner"))),
        "the action's own params schema: {params}"
    );
    assert_eq!(
        get_repo["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/ExecuteReply"
    );
    assert!(
        paths["/v1/vault/connections"]["post"]["responses"]
            .get("201")
            .is_some()
    );
}

/// `--busy-poll-us` starts a spinner per CPU and the gateway answers as usual beside them.
#[tokio::test(flavor = "multi_thread")]
async fn busy_poll_runs_beside_requests() {
    let setup = Setup::with_options(sluice_fixtures::gateway::Options {
        extra_args: vec!["--busy-poll-us".into(), "500".into()],
        ..Default::default()
    })
    .await;
    for i in 0..20 {
        let answer = setup.execute("echo", "say", json!({"params": {"i": i}})).await;
        assert_eq!(answer.body, json!({"status": 200, "data": {"i": i}}));
    }
    let output = setup.gateway.output();
    assert!(output.contains("busy poll on"), "{output}");
    assert!(
        !output.contains("cannot run at SCHED_IDLE"),
        "spinners run at the lowest priority: {output}"
    );
}

/// `--ops-listen` serves the probes and metrics apart from the API's connection limit: with
/// every API connection taken, a liveness probe still gets its answer there.
#[tokio::test(flavor = "multi_thread")]
async fn probes_on_the_ops_address_answer_when_the_api_is_full() {
    use sluice_fixtures::gateway::Options;
    use sluice_fixtures::{Gateway, guests};
    use tokio::io::AsyncWriteExt;
    let gateway = Gateway::start(
        std::path::Path::new(crate::common::SLUICE),
        &[guests::ECHO],
        Options {
            extra_args: ["--max-connections", "1", "--ops-listen", "127.0.0.1:0"]
                .map(String::from)
                .to_vec(),
            ..Options::default()
        },
    )
    .await;
    let ops = gateway.ops_address();
    // Take the API's only connection with a request that never ends its headers.
    let main = gateway.url.trim_start_matches("http://").to_owned();
    let mut held = tokio::net::TcpStream::connect(&main).await.expect("connect");
    held.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
        .await
        .expect("write");
    let full = reqwest::Client::new()
        .get(format!("{}/healthz", gateway.url))
        .timeout(std::time::Duration::from_millis(500))
        .send()
        .await;
    assert!(full.is_err(), "the API's one connection is taken: {full:?}");

    let client = reqwest::Client::new();
    let live = send(client.get(format!("http://{ops}/healthz"))).await;
    assert_eq!((live.status, &live.body["status"]), (200, &json!("ok")));
    let ready = send(client.get(format!("http://{ops}/readyz"))).await;
    assert_eq!(
        (ready.status, &ready.body["connectors"]),
        (200, &json!(1)),
        "{:?}",
        ready.body
    );
    let metrics = client
        .get(format!("http://{ops}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(metrics.contains("sluice_open_connections 1"), "{metrics}");
    // Nothing of the API is there.
    let api = send(client.get(format!("http://{ops}/v1/plugins"))).await;
    assert_eq!((api.status, api.code()), (404, "not_found"));
    drop(held);
}
