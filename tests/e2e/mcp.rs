//! MCP: a real client — the official MCP Python SDK — lists the tools and calls one end to end.
//!
//! `.ci/run` installs the SDK into `target/mcp-venv` from `tests/mcp/requirements.txt`. Without
//! it the test is skipped with a loud message, except under CI, where it must run.

use crate::common::{SECRET, Setup};
use serde_json::Value;
use std::path::PathBuf;

fn python() -> Option<PathBuf> {
    if let Ok(explicit) = std::env::var("SLUICE_TEST_PYTHON") {
        return Some(PathBuf::from(explicit));
    }
    // Not canonicalized: the venv's interpreter is a symlink that must keep its own path.
    let venv = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/mcp-venv/bin/python");
    venv.exists().then_some(venv)
}

#[tokio::test(flavor = "multi_thread")]
async fn official_mcp_client_lists_and_calls_tools() {
    let Some(python) = python() else {
        assert!(
            std::env::var("CI").is_err(),
            "CI must have the MCP SDK in target/mcp-venv"
        );
        eprintln!(
            "SKIPPED: the MCP Python SDK is not installed; run `python3 -m venv target/mcp-venv && target/mcp-venv/bin/pip install -r tests/mcp/requirements.txt`"
        );
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

    let unknown_choice = call("?identiy=alice").await;
    assert_eq!(
        (unknown_choice.status, unknown_choice.code()),
        (400, "bad_request")
    );

    let get = reqwest::get(format!("{}/mcp", setup.gateway.url))
        .await
        .expect("get");
    assert_eq!(get.status(), 405);
    assert_eq!(get.headers()["allow"], "POST");
    let body: Value = get.json().await.expect("json body");
    assert_eq!(body["error"], "method_not_allowed");
}
