//! MCP: a real client — the official MCP Python SDK — lists the tools and calls one end to end.
//!
//! `.ci/run` installs the SDK into `target/mcp-venv` from `tests/mcp/requirements.txt`. Without
//! it the test is skipped with a loud message, except under CI, where it must run.

use crate::common::{SECRET, SLUICE, Setup};
use serde_json::Value;
use sluice_fixtures::gateway::Options;
use sluice_fixtures::{Gateway, guests};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The Python with the MCP SDK; `None` (the test is skipped, loudly) where it is not
/// installed, which CI does not allow.
fn python() -> Option<PathBuf> {
    if let Ok(explicit) = std::env::var("SLUICE_TEST_PYTHON") {
        return Some(PathBuf::from(explicit));
    }
    // Not canonicalized: the venv's interpreter is a symlink that must keep its own path.
    let venv = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/mcp-venv/bin/python");
    if venv.exists() {
        return Some(venv);
    }
    assert!(
        std::env::var("CI").is_err(),
        "CI must have the MCP SDK in target/mcp-venv"
    );
    eprintln!(
        "SKIPPED: the MCP Python SDK is not installed; run `python3 -m venv target/mcp-venv && target/mcp-venv/bin/pip install -r tests/mcp/requirements.txt`"
    );
    None
}

#[tokio::test(flavor = "multi_thread")]
async fn official_mcp_client_lists_and_calls_tools() {
    let Some(python) = python() else {
        return;
    };
    let setup = Setup::new().await;
    let github_and_echo = setup.gateway.create_key("test", "github,echo").await;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/mcp/client.py");
    let output = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        tokio::process::Command::new(python)
            .arg(script)
            .arg(&setup.gateway.url)
            .arg(&github_and_echo)
            .output(),
    )
    .await
    .expect("the MCP client finished in time")
    .expect("run the MCP client");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: Value = serde_json::from_slice(&output.stdout).expect("client output is JSON");
    assert_eq!(seen["server"], "sluice");
    let tools: Vec<&str> = seen["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        tools.contains(&"github__create_issue") && tools.contains(&"echo__say"),
        "{tools:?}"
    );
    assert!(
        !tools.iter().any(|t| t.starts_with("hostile__")),
        "outside the key's scope"
    );
    assert_eq!(seen["ok_error"], false);
    let ok: Value = serde_json::from_str(seen["ok_text"].as_str().expect("text")).expect("JSON text");
    assert_eq!(ok["status"], 200);
    assert_eq!(ok["data"]["full_name"], "acme/webapp");
    assert_eq!(seen["bad_error"], true);
    assert!(
        seen["bad_text"]
            .as_str()
            .unwrap_or_default()
            .contains("bad_request")
    );
    let sent = setup
        .upstream_requests()
        .pop()
        .expect("the tool call reached the upstream");
    assert_eq!(
        sent.header("authorization"),
        Some(format!("Bearer {SECRET}").as_str())
    );
}

/// Tool calls use the connection the server URL names (`/mcp?identity=…`): an agent acting for
/// one user is given that user's URL. Methods other than POST get the API's JSON 405.
#[tokio::test(flavor = "multi_thread")]
async fn the_server_url_chooses_the_connection_tool_calls_use() {
    let setup = Setup::new().await;
    let alice_secret = "ghp_aliceMCPtoken12345";
    setup
        .gateway
        .add_connection(
            "github",
            alice_secret,
            &["--identity", "alice", "--base-url", &setup.upstream.url()],
        )
        .await;
    let call = |query: &'static str| {
        crate::common::send(
            setup
                .client
                .post(format!("{}/mcp{query}", setup.gateway.url))
                .bearer_auth(&setup.key)
                .json(&serde_json::json!({
                    "jsonrpc": "2.0", "id": 1, "method": "tools/call",
                    "params": {"name": "github__get_repo", "arguments": {"owner": "acme", "repo": "webapp"}}
                })),
        )
    };
    for query in ["?identity=alice", ""] {
        let answer = call(query).await;
        assert_eq!(
            answer.body["result"]["isError"], false,
            "{query}: {:?}",
            answer.body
        );
    }
    let sent: Vec<String> = setup
        .upstream_requests()
        .iter()
        .map(|r| r.header("authorization").unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        sent,
        [format!("Bearer {alice_secret}"), format!("Bearer {SECRET}")]
    );

    for malformed in [
        serde_json::json!({"jsonrpc": "2.0", "id": 2}),
        serde_json::json!({"jsonrpc": "1.0", "id": 3, "method": "ping"}),
    ] {
        let answer = crate::common::send(
            setup
                .client
                .post(format!("{}/mcp", setup.gateway.url))
                .bearer_auth(&setup.key)
                .json(&malformed),
        )
        .await;
        assert_eq!(
            answer.body["error"]["code"], -32600,
            "{malformed}: {:?}",
            answer.body
        );
        assert_eq!(answer.body["id"], malformed["id"]);
    }

    // A connection selector in the call's params is refused, not ignored (the call would run
    // on the default connection); so are a missing tool name and an id that is no id.
    let nothing_more_sent = setup.upstream_requests().len();
    for (message, code, says) in [
        (
            serde_json::json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {
                "name": "github__get_repo", "arguments": {"owner": "acme", "repo": "webapp"}, "identity": "alice"}}),
            -32602,
            "unknown field `identity`",
        ),
        (
            serde_json::json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"arguments": {}}}),
            -32602,
            "`params.name` must be a string",
        ),
        (
            serde_json::json!({"jsonrpc": "2.0", "id": {"a": 1}, "method": "ping"}),
            -32600,
            "`id` must be a string or a number",
        ),
    ] {
        let answer = crate::common::send(
            setup
                .client
                .post(format!("{}/mcp", setup.gateway.url))
                .bearer_auth(&setup.key)
                .json(&message),
        )
        .await;
        assert_eq!(answer.body["error"]["code"], code, "{message}: {:?}", answer.body);
        let text = answer.body["error"]["message"].as_str().unwrap_or_default();
        assert!(text.contains(says), "{text}");
    }
    // A tool outside the key's scope is named as such, not as a tool that does not exist.
    let echo_only = setup.gateway.create_key("test", "echo").await;
    for (tool, says) in [
        ("github__get_repo", "outside this API key's scope"),
        ("github__no_such_action", "unknown tool"),
    ] {
        let answer = crate::common::send(
            setup
                .client
                .post(format!("{}/mcp", setup.gateway.url))
                .bearer_auth(&echo_only)
                .json(
                    &serde_json::json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {
                    "name": tool, "arguments": {"owner": "acme", "repo": "webapp"}}}),
                ),
        )
        .await;
        assert_eq!(answer.body["error"]["code"], -32602, "{tool}: {:?}", answer.body);
        let text = answer.body["error"]["message"].as_str().unwrap_or_default();
        assert!(text.contains(says), "{tool}: {text}");
    }
    assert_eq!(
        setup.upstream_requests().len(),
        nothing_more_sent,
        "nothing was sent"
    );
    // `_meta` is protocol metadata, allowed.
    let with_meta = crate::common::send(
        setup
            .client
            .post(format!("{}/mcp", setup.gateway.url))
            .bearer_auth(&setup.key)
            .json(
                &serde_json::json!({"jsonrpc": "2.0", "id": 6, "method": "tools/call", "params": {
                "name": "github__get_repo", "arguments": {"owner": "acme", "repo": "webapp"},
                "_meta": {"progressToken": 1}}}),
            ),
    )
    .await;
    assert_eq!(with_meta.body["result"]["isError"], false, "{:?}", with_meta.body);

    // The query is read as every route's is, and its refusals say so in the same words.
    for (query, says) in [
        (
            "?identiy=alice",
            "unknown query parameter `identiy`; this route takes identity",
        ),
        (
            "?identity=alice&identity=bob",
            "`identity` is given more than once",
        ),
        ("?connection_key=a&connectionKey=b", "give one"),
        ("?identity=a&identity_type=user&identityType=team", "give one"),
        // A URL built from an empty variable does not fall back to the owner's connection.
        ("?identity=", "query parameter `identity` is empty"),
        ("?connection_key=", "query parameter `connection_key` is empty"),
    ] {
        let refused = call(query).await;
        assert_eq!((refused.status, refused.code()), (400, "bad_request"), "{query}");
        let message = refused.body["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{query}: {message}");
    }

    let keyless = reqwest::get(format!("{}/mcp", setup.gateway.url))
        .await
        .expect("get");
    assert_eq!(keyless.status(), 401, "the event stream takes the key too");
    assert_eq!(keyless.headers()["www-authenticate"], "Bearer");
    let delete = reqwest::Client::new()
        .delete(format!("{}/mcp", setup.gateway.url))
        .bearer_auth(&setup.key)
        .send()
        .await
        .expect("delete");
    assert_eq!(delete.status(), 405, "no session to end");
    assert_eq!(delete.headers()["allow"], "POST,GET,HEAD");
    let body: Value = delete.json().await.expect("json body");
    assert_eq!(body["error"], "method_not_allowed");

    // With a second connection made without an identity, a URL naming none is ambiguous: the
    // model is told that the server's URL chooses, not its arguments (which it cannot use).
    setup
        .gateway
        .add_connection("github", "ghp_secondDefault123", &[])
        .await;
    let ambiguous = call("").await;
    assert_eq!(ambiguous.body["result"]["isError"], true, "{:?}", ambiguous.body);
    let text = ambiguous.body["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default();
    let refusal: Value = serde_json::from_str(text).expect("the error envelope");
    assert_eq!(refusal["error"], "ambiguous_connection", "{text}");
    assert!(
        refusal["message"]
            .as_str()
            .is_some_and(|m| m.contains("Over MCP the connection is chosen by the server URL")),
        "{text}"
    );
}

/// A JSON-RPC batch (MCP 2025-03-26) gets one array of answers in the batch's order, without
/// the notifications'; a request naming a protocol version the server does not speak is a 400.
#[tokio::test(flavor = "multi_thread")]
async fn batches_are_answered_and_unknown_protocol_versions_refused() {
    let setup = Setup::new().await;
    let post = |body: Value, version: Option<&'static str>| post_mcp(&setup, body, version);
    let batch = serde_json::json!([
        {"jsonrpc": "2.0", "id": "a", "method": "tools/call",
         "params": {"name": "github__get_repo", "arguments": {"owner": "acme", "repo": "webapp"}}},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "ping"},
        {"jsonrpc": "2.0", "id": 3, "method": "initialize", "params": {"protocolVersion": "2025-03-26"}},
        {"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "nope"}},
    ]);
    let answer = post(batch, Some("2025-03-26")).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let answers = answer.body.as_array().expect("an array of answers");
    let ids: Vec<&Value> = answers.iter().map(|a| &a["id"]).collect();
    assert_eq!(
        ids,
        [
            &Value::from("a"),
            &Value::from(2),
            &Value::from(3),
            &Value::from(4)
        ]
    );
    assert_eq!(answers[0]["result"]["isError"], false, "{:?}", answers[0]);
    assert_eq!(answers[1]["result"], serde_json::json!({}));
    assert_eq!(answers[2]["error"]["code"], -32600, "initialize stands alone");
    assert_eq!(answers[3]["error"]["code"], -32602);
    assert_eq!(setup.upstream_requests().len(), 1, "the tool call ran once");

    let only_notifications = setup
        .client
        .post(format!("{}/mcp", setup.gateway.url))
        .bearer_auth(&setup.key)
        .json(&serde_json::json!([{"jsonrpc": "2.0", "method": "notifications/initialized"}]))
        .send()
        .await
        .expect("POST /mcp");
    assert_eq!(only_notifications.status(), 202);
    for refused in [
        serde_json::json!([]),
        Value::Array(vec![
            serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "ping"});
            33
        ]),
    ] {
        let answer = post(refused, None).await;
        assert_eq!(answer.body["error"]["code"], -32600, "{:?}", answer.body);
    }

    // The 2025-06-18 revision has no batches.
    let newer = post(
        serde_json::json!([{"jsonrpc": "2.0", "id": 1, "method": "ping"}]),
        Some("2025-06-18"),
    )
    .await;
    assert_eq!(newer.body["error"]["code"], -32600, "{:?}", newer.body);

    // A server URL naming a connection still runs the tools that need none.
    let keyed = crate::common::send(
        setup
            .client
            .post(format!(
                "{}/mcp?connection_key={}",
                setup.gateway.url, setup.connection_key
            ))
            .bearer_auth(&setup.key)
            .json(
                &serde_json::json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                "params": {"name": "echo__say", "arguments": {"message": "hi"}}}),
            ),
    )
    .await;
    assert_eq!(keyed.body["result"]["isError"], false, "{:?}", keyed.body);
    // It lists and runs only the tools its connection can serve: a GitHub connection's URL
    // offers no tool of another integration that needs a connection, and refuses a call of one
    // (rather than run it on a connection no call of it could use).
    let keyed_post = |message: Value| {
        crate::common::send(
            setup
                .client
                .post(format!(
                    "{}/mcp?connection_key={}",
                    setup.gateway.url, setup.connection_key
                ))
                .bearer_auth(&setup.key)
                .json(&message),
        )
    };
    let listed = keyed_post(serde_json::json!({"jsonrpc": "2.0", "id": 8, "method": "tools/list"})).await;
    let names: Vec<&str> = listed.body["result"]["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(|tool| tool["name"].as_str())
        .collect();
    assert!(
        names.contains(&"github__get_repo") && names.contains(&"echo__say"),
        "{names:?}"
    );
    assert!(
        !names.iter().any(|name| name.starts_with("hostile__")),
        "{names:?}"
    );
    let everything = post(
        serde_json::json!({"jsonrpc": "2.0", "id": 8, "method": "tools/list"}),
        None,
    )
    .await;
    assert!(
        everything.body["result"]["tools"]
            .as_array()
            .expect("tools")
            .iter()
            .any(|tool| tool["name"] == "hostile__call"),
        "without a connection key every tool is listed"
    );
    let other = keyed_post(
        serde_json::json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call",
        "params": {"name": "hostile__call", "arguments": {"url": "/slow"}}}),
    )
    .await;
    assert_eq!(other.body["error"]["code"], -32602, "{:?}", other.body);
    let message = other.body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("uses a hostile connection") && message.contains("names a github connection"),
        "{message}"
    );

    // Arguments naming a key twice are refused, as execute's params are.
    let twice = crate::common::send(
        setup
            .client
            .post(format!("{}/mcp", setup.gateway.url))
            .bearer_auth(&setup.key)
            .header("content-type", "application/json")
            .body(
                r#"{"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": "github__get_repo",
                    "arguments": {"owner": "acme", "repo": "webapp", "repo": "other"}}}"#,
            ),
    )
    .await;
    // Answered with its id: the client knows which request it was.
    assert_eq!(
        (&twice.body["error"]["code"], &twice.body["id"]),
        (&serde_json::json!(-32602), &serde_json::json!(9)),
        "{:?}",
        twice.body
    );
    let twice_said = twice.body["error"]["message"].as_str().unwrap_or_default();
    assert!(twice_said.contains("repo"), "{twice_said}");
    assert_eq!(setup.upstream_requests().len(), 1, "nothing more was sent");

    // Versions: those the server speaks pass, others are a 400 that names the ones it speaks.
    let ping = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "ping"});
    for version in ["2025-06-18", "2024-11-05"] {
        assert_eq!(post(ping.clone(), Some(version)).await.status, 200, "{version}");
    }
    let unknown = post(ping, Some("2099-01-01")).await;
    assert_eq!(unknown.status, 400, "{:?}", unknown.body);
    let message = unknown.body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("2025-06-18"), "{message}");
    let stream = setup
        .client
        .get(format!("{}/mcp", setup.gateway.url))
        .bearer_auth(&setup.key)
        .header("mcp-protocol-version", "1999-01-01")
        .send()
        .await
        .expect("GET /mcp");
    assert_eq!(stream.status(), 400);
}

/// The official client, following the server's event stream, hears
/// `notifications/tools/list_changed` when a hot reload changes the tools its key sees, and
/// lists the new ones.
#[tokio::test(flavor = "multi_thread")]
async fn a_hot_reload_tells_connected_agents_their_tools_changed() {
    use tokio::io::AsyncBufReadExt;
    let Some(python) = python() else {
        return;
    };
    let gateway = Gateway::start(Path::new(SLUICE), &[guests::ECHO], Options::default()).await;
    let key = gateway.first_start_key.clone().expect("key");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/mcp/client.py");
    let mut client = tokio::process::Command::new(python)
        .args([
            script.as_os_str(),
            gateway.url.as_ref(),
            key.as_ref(),
            "follow".as_ref(),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run the MCP client");
    let mut lines = tokio::io::BufReader::new(client.stdout.take().expect("stdout")).lines();
    let next_line = async |lines: &mut tokio::io::Lines<_>| -> Value {
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .expect("the client answered in time")
            .expect("read")
            .unwrap_or_default();
        serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON: {line:?}"))
    };
    let before = next_line(&mut lines).await;
    let echo_only = before["tools"].as_array().expect("tools");
    assert!(
        echo_only
            .iter()
            .all(|t| t.as_str().is_some_and(|t| t.starts_with("echo__"))),
        "{before}"
    );

    // The client opens its event stream on its own time: add and take away the github
    // connector until it hears of a change (each step changes what it would list).
    let github = gateway.plugins_dir().join("github.wasm");
    let toggling = async {
        loop {
            std::fs::copy(guests::GITHUB, &github).expect("add github");
            tokio::time::sleep(Duration::from_secs(2)).await;
            std::fs::remove_file(&github).expect("remove github");
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    };
    let after = tokio::select! {
        after = next_line(&mut lines) => after,
        () = toggling => unreachable!(),
    };
    assert_eq!(after["notified"], true, "{after}");
    let tools = after["tools"].as_array().expect("tools");
    // Listed again after the change: with github's tools, or (if it was heard as taken away
    // again already) echo's alone.
    assert!(
        tools.contains(&serde_json::json!("github__get_repo")) || tools == echo_only,
        "{after}"
    );
}

/// An open event stream does not hold up shutdown: it ends when the gateway stops.
#[tokio::test(flavor = "multi_thread")]
async fn open_event_streams_end_at_shutdown() {
    let mut gateway = Gateway::start(Path::new(SLUICE), &[guests::ECHO], Options::default()).await;
    let key = gateway.first_start_key.clone().expect("key");
    let client = reqwest::Client::new();
    let initialize = client
        .post(format!("{}/mcp", gateway.url))
        .bearer_auth(&key)
        .json(&serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}))
        .send()
        .await
        .expect("initialize");
    let session = initialize.headers()["mcp-session-id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let body: Value = initialize.json().await.expect("json");
    assert_eq!(body["result"]["capabilities"]["tools"]["listChanged"], true);
    let mut stream = client
        .get(format!("{}/mcp", gateway.url))
        .bearer_auth(&key)
        .header("mcp-session-id", &session)
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("open the event stream");
    assert_eq!(stream.status(), 200);
    assert!(
        stream.headers()["content-type"]
            .to_str()
            .unwrap_or_default()
            .starts_with("text/event-stream")
    );
    assert_eq!(
        stream.headers()["x-accel-buffering"],
        "no",
        "proxies pass events on at once"
    );
    let started = std::time::Instant::now();
    assert!(gateway.terminate().await, "the gateway exited cleanly");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let rest = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(Some(_)) = stream.chunk().await {}
    })
    .await;
    assert!(rest.is_ok(), "the stream ended");
}

/// Event streams hold their connections for as long as clients like, so they get only half of
/// `--max-connections`: past that, `503 at_capacity`, and calls still find a connection.
#[tokio::test(flavor = "multi_thread")]
async fn event_streams_leave_room_for_calls() {
    let gateway = Gateway::start(
        Path::new(SLUICE),
        &[guests::ECHO],
        Options {
            extra_args: vec!["--max-connections".into(), "4".into()],
            ..Options::default()
        },
    )
    .await;
    let key = gateway.first_start_key.clone().expect("key");
    let open_stream = || async {
        reqwest::Client::new()
            .get(format!("{}/mcp", gateway.url))
            .bearer_auth(&key)
            .send()
            .await
            .expect("GET /mcp")
    };
    let (first, second) = (open_stream().await, open_stream().await);
    assert_eq!((first.status().as_u16(), second.status().as_u16()), (200, 200));
    let third = open_stream().await;
    assert_eq!(third.status(), 503);
    let refusal: Value = third.json().await.expect("JSON");
    assert_eq!(refusal["error"], "at_capacity");
    let call = crate::common::send(
        reqwest::Client::new()
            .post(format!("{}/v1/echo/say", gateway.url))
            .bearer_auth(&key)
            .json(&serde_json::json!({"params": {}})),
    )
    .await;
    assert_eq!(call.status, 200, "{:?}", call.body);
    drop(first);
    let started = std::time::Instant::now();
    while open_stream().await.status() != 200 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "a closed stream gives its place back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An open event stream ends once its key is revoked (it is looked up again every few
/// seconds): a stream does not outlive its key, nor keep its place among the streams.
#[tokio::test(flavor = "multi_thread")]
async fn an_event_stream_ends_when_its_key_is_revoked() {
    let setup = Setup::new().await;
    let key = setup.gateway.create_key("test", "*").await;
    let open = || {
        reqwest::Client::new()
            .get(format!("{}/mcp", setup.gateway.url))
            .bearer_auth(&key)
            .header("accept", "text/event-stream")
            .send()
    };
    let mut stream = open().await.expect("open the event stream");
    assert_eq!(stream.status(), 200);
    setup
        .gateway
        .cli(&["keys", "revoke", &key])
        .await
        .expect("revoked");
    let ended = tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(Some(_)) = stream.chunk().await {}
    })
    .await;
    assert!(ended.is_ok(), "the stream outlived its key");
    assert_eq!(
        open().await.expect("answered").status(),
        401,
        "the key no longer opens one"
    );
}

/// A tool result longer than `--max-tool-result-kib` is cut for the model and says so, without
/// its structured copy; a shorter one is whole. The execute API answers in full all the same.
#[tokio::test(flavor = "multi_thread")]
async fn a_long_tool_result_is_cut_for_the_model() {
    let setup = Setup::with_options(Options {
        extra_args: vec!["--max-tool-result-kib".into(), "1".into()],
        ..Options::default()
    })
    .await;
    let say = |message: String| {
        post_mcp(
            &setup,
            serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                "params": {"name": "echo__say", "arguments": {"message": message}}}),
            Some("2025-06-18"),
        )
    };
    let short = say("hi".into()).await;
    assert!(
        short.body["result"]["structuredContent"].is_object(),
        "{:?}",
        short.body
    );
    let long_message = "é".repeat(2000);
    let long = say(long_message.clone()).await;
    let text = long.body["result"]["content"][0]["text"].as_str().expect("text");
    let (kept, note) = text
        .split_once("\n[cut by the gateway: ")
        .expect("says it was cut");
    assert!(kept.len() <= 1024 && kept.len() > 1000, "{}", kept.len());
    assert!(note.contains("--max-tool-result-kib"), "{note}");
    assert!(
        long.body["result"].get("structuredContent").is_none(),
        "{:?}",
        long.body["result"]
    );
    assert_eq!(long.body["result"]["isError"], false);
    let whole = setup
        .execute(
            "echo",
            "say",
            serde_json::json!({"params": {"message": long_message}}),
        )
        .await;
    assert_eq!(whole.status, 200);
    assert!(whole.body.to_string().len() > 4000, "execute is not cut");
}

/// An agent that hangs up while its tool call waits on a slow upstream still leaves a row,
/// `client_closed`, as an execute call does.
#[tokio::test(flavor = "multi_thread")]
async fn a_tool_call_whose_agent_hung_up_is_logged() {
    let setup = Setup::new().await;
    let message = serde_json::json!({
        "jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "hostile__call", "arguments": {"url": "/slow"}}
    });
    let request = setup.raw_request("POST /mcp HTTP/1.1", &message.to_string());
    setup.hang_up_during_slow_call(&request).await;

    let row = setup.client_closed_row().await;
    crate::common::assert_cut_off_unanswered(&row);
    assert_eq!(
        (&row["integration"], &row["endpoint"]),
        (&Value::from("hostile"), &Value::from("call")),
        "{row}"
    );
}

/// What a modern MCP host reads besides names and schemas: tool titles and hints (a read says
/// it changes nothing; nothing else claims to be harmless), structured results for 2025-06-18
/// clients, and the transport's rules for cursors, wrong arguments and posted responses.
#[tokio::test(flavor = "multi_thread")]
async fn tools_carry_hints_and_results_their_structure() {
    let setup = Setup::new().await;
    let post = |body: Value, version: Option<&'static str>| post_mcp(&setup, body, version);
    let listed = post(
        serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}),
        Some("2025-06-18"),
    )
    .await;
    let tools = listed.body["result"]["tools"].as_array().expect("tools");
    let tool = |name: &str| {
        tools
            .iter()
            .find(|tool| tool["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {tools:?}"))
            .clone()
    };
    let read = tool("github__get_repo");
    assert!(read["title"].as_str().is_some_and(|t| !t.is_empty()), "{read}");
    assert_eq!(read["annotations"]["readOnlyHint"], true, "{read}");
    assert_eq!(read["annotations"]["openWorldHint"], true, "{read}");
    let write = tool("github__create_issue");
    assert_eq!(write["annotations"]["readOnlyHint"], false, "{write}");
    assert!(
        write["annotations"].get("destructiveHint").is_none(),
        "a POST is not said to be harmless: {write}"
    );

    let paged = post(
        serde_json::json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {"cursor": "zzz"}}),
        None,
    )
    .await;
    assert_eq!(paged.body["error"]["code"], -32602, "{:?}", paged.body);

    let call = serde_json::json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
        "params": {"name": "github__get_repo", "arguments": {"owner": "acme", "repo": "webapp"}}});
    let structured = post(call.clone(), Some("2025-06-18")).await;
    let result = &structured.body["result"];
    assert_eq!(result["structuredContent"]["status"], 200, "{result}");
    assert_eq!(result["structuredContent"]["data"]["full_name"], "acme/webapp");
    let text: Value =
        serde_json::from_str(result["content"][0]["text"].as_str().expect("text")).expect("json");
    assert_eq!(text, result["structuredContent"], "the text block says the same");
    let older = post(call, Some("2025-03-26")).await;
    assert!(
        older.body["result"].get("structuredContent").is_none(),
        "{:?}",
        older.body
    );

    let wrong = post(
        serde_json::json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call",
            "params": {"name": "github__get_repo", "arguments": "x"}}),
        None,
    )
    .await;
    assert_eq!(wrong.body["error"]["code"], -32602, "{:?}", wrong.body);
    let message = wrong.body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("`params.arguments` must be a JSON object"),
        "{message}"
    );

    // A JSON-RPC response posted by the client is accepted as a notification is.
    let response = setup
        .client
        .post(format!("{}/mcp", setup.gateway.url))
        .bearer_auth(&setup.key)
        .json(&serde_json::json!({"jsonrpc": "2.0", "id": 5, "result": {}}))
        .send()
        .await
        .expect("POST /mcp");
    assert_eq!(response.status(), 202);
    assert_eq!(setup.upstream_requests().len(), 2, "the two calls, nothing else");

    // A browser page of an origin the operator did not allow is refused (DNS rebinding);
    // the gateway's own origin is not.
    let ping = serde_json::json!({"jsonrpc": "2.0", "id": 6, "method": "ping"});
    for (origin, status) in [("http://rebound.example", 403), (setup.gateway.url.as_str(), 200)] {
        let answer = crate::common::send(
            setup
                .client
                .post(format!("{}/mcp", setup.gateway.url))
                .bearer_auth(&setup.key)
                .header("origin", origin)
                .json(&ping),
        )
        .await;
        assert_eq!(answer.status, status, "{origin}: {:?}", answer.body);
    }
    let stream = setup
        .client
        .get(format!("{}/mcp", setup.gateway.url))
        .bearer_auth(&setup.key)
        .header("origin", "http://rebound.example")
        .send()
        .await
        .expect("GET /mcp");
    assert_eq!(stream.status(), 403);
}

/// `POST /mcp` with `body` and this setup's key, saying `version` in `MCP-Protocol-Version`.
async fn post_mcp(setup: &Setup, body: Value, version: Option<&str>) -> crate::common::Answer {
    let mut request = setup
        .client
        .post(format!("{}/mcp", setup.gateway.url))
        .bearer_auth(&setup.key)
        .json(&body);
    if let Some(version) = version {
        request = request.header("mcp-protocol-version", version);
    }
    crate::common::send(request).await
}
