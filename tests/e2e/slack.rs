//! The Slack connector, written in Python (componentize-py), through the real gateway against a
//! fake Slack Web API on loopback. Each test shares one gateway across several calls: loading
//! the ~18 MB CPython component is the slow part.

use crate::languages::{
    Connected, assert_bad_request, component, examples_are_listed, refused_egress_is_egress_denied,
};
use serde_json::{Value, json};
use sluice_fixtures::{Recorded, Reply, guests};

/// The bot token in the test connection.
const TOKEN: &str = "xoxb-e2e-SLACK-token-0123456789";

/// The cursor Slack hands out after the first page of channels.
const NEXT_CURSOR: &str = "dGVhbTpDMDI=";

fn query(request: &Recorded) -> Vec<(String, String)> {
    form_urlencoded::parse(request.query.as_deref().unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

fn query_value(request: &Recorded, name: &str) -> Option<String> {
    query(request)
        .into_iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value)
}

fn channel(id: &str, name: &str) -> Value {
    json!({"id": id, "name": name, "is_channel": true, "is_archived": false})
}

/// Answers like Slack: HTTP 200 with `{"ok": ...}` envelopes, cursor pagination in
/// `response_metadata.next_cursor`, and a real 429 when rate limited.
fn fake_slack(request: &Recorded) -> Reply {
    match (request.method.as_str(), request.path.as_str()) {
        ("POST", "/api/chat.postMessage") => {
            let body = request.json();
            if body["channel"] == "C404" {
                return Reply::json(200, json!({"ok": false, "error": "channel_not_found"}));
            }
            Reply::json(
                200,
                json!({"ok": true, "channel": body["channel"], "ts": "1712345678.000200",
                       "message": {"type": "message", "text": body["text"], "thread_ts": body["thread_ts"]}}),
            )
        }
        ("GET", "/api/conversations.list") => match query_value(request, "cursor").as_deref() {
            None => Reply::json(
                200,
                json!({"ok": true, "channels": [channel("C001", "general"), channel("C002", "random")],
                       "response_metadata": {"next_cursor": NEXT_CURSOR}}),
            ),
            Some(NEXT_CURSOR) => Reply::json(
                200,
                json!({"ok": true, "channels": [channel("C003", "ops")], "response_metadata": {"next_cursor": ""}}),
            ),
            Some(_) => Reply::json(200, json!({"ok": false, "error": "invalid_cursor"})),
        },
        ("GET", "/api/users.info") => match query_value(request, "user").as_deref() {
            Some("U429") => {
                let mut reply = Reply::json(429, json!({"ok": false, "error": "ratelimited"}));
                reply.headers.push(("retry-after".into(), "30".into()));
                reply
            }
            Some(user) => Reply::json(
                200,
                // Echo the credential back: the host must scrub it before the guest sees it.
                json!({"ok": true, "user": {"id": user, "name": "jenny", "real_name": "Jenny Rosen"},
                       "echo_authorization": request.header("authorization")}),
            ),
            None => Reply::json(200, json!({"ok": false, "error": "user_not_found"})),
        },
        _ => Reply::json(404, json!({"ok": false, "error": "unknown_method"})),
    }
}

async fn connected() -> Option<Connected> {
    let component = component("slack", guests::SLACK)?;
    Some(Connected::start(component, "slack", TOKEN, "/api", fake_slack).await)
}

/// Every endpoint's happy path: the Python connector builds Slack's requests, the host injects
/// the bot token, and Slack's envelopes come back verbatim.
#[tokio::test(flavor = "multi_thread")]
async fn slack_endpoints_reach_the_fake_slack_with_the_injected_token() {
    let Some(setup) = connected().await else { return };
    examples_are_listed(&setup, "slack", &["post_message", "list_channels", "get_user"]).await;

    // post_message: a JSON POST to chat.postMessage.
    let posted = setup
        .execute(
            "slack",
            "post_message",
            json!({"channel": "C001", "text": "Hello from Python", "thread_ts": "1712345678.000100"}),
        )
        .await;
    assert_eq!(posted.status, 200, "{:?}", posted.body);
    assert_eq!(posted.body["status"], 200);
    assert_eq!(posted.body["data"]["ok"], true);
    assert_eq!(posted.body["data"]["message"]["text"], "Hello from Python");
    let sent = setup.only_request();
    assert_eq!(
        (sent.method.as_str(), sent.path.as_str()),
        ("POST", "/api/chat.postMessage")
    );
    assert_eq!(
        sent.header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    assert_eq!(
        sent.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    assert_eq!(
        sent.json(),
        json!({"channel": "C001", "text": "Hello from Python", "thread_ts": "1712345678.000100"})
    );

    // list_channels, one page: the caller's cursor and limit go into the query.
    let page = setup
        .execute(
            "slack",
            "list_channels",
            json!({"limit": 2, "cursor": NEXT_CURSOR}),
        )
        .await;
    assert_eq!(page.body["data"]["channels"][0]["id"], "C003", "{:?}", page.body);
    let sent = setup.requests().pop().expect("a request");
    assert_eq!(sent.path, "/api/conversations.list");
    assert_eq!(query_value(&sent, "cursor").as_deref(), Some(NEXT_CURSOR));
    assert_eq!(query_value(&sent, "limit").as_deref(), Some("2"));
    assert_eq!(query_value(&sent, "types").as_deref(), Some("public_channel"));

    // list_channels, all pages: the connector follows next_cursor and merges the pages.
    let before = setup.requests().len();
    let all = setup
        .execute(
            "slack",
            "list_channels",
            json!({"all_pages": true, "exclude_archived": true, "types": "public_channel,private_channel"}),
        )
        .await;
    assert_eq!(all.body["status"], 200, "{:?}", all.body);
    let ids: Vec<&str> = all.body["data"]["channels"]
        .as_array()
        .expect("channels")
        .iter()
        .filter_map(|c| c["id"].as_str())
        .collect();
    assert_eq!(ids, ["C001", "C002", "C003"]);
    assert_eq!(all.body["data"]["response_metadata"]["next_cursor"], "");
    let pages = &setup.requests()[before..];
    assert_eq!(pages.len(), 2, "one request per page");
    assert_eq!(query_value(&pages[0], "cursor"), None);
    assert_eq!(query_value(&pages[1], "cursor").as_deref(), Some(NEXT_CURSOR));
    assert_eq!(
        query_value(&pages[1], "exclude_archived").as_deref(),
        Some("true")
    );
    assert_eq!(
        query_value(&pages[1], "types").as_deref(),
        Some("public_channel,private_channel")
    );
    for page in pages {
        assert_eq!(
            page.header("authorization"),
            Some(format!("Bearer {TOKEN}").as_str())
        );
    }

    // get_user: the token the fake echoes back is scrubbed before the connector sees it.
    let user = setup
        .execute("slack", "get_user", json!({"user": "U0123ABCD"}))
        .await;
    assert_eq!(user.body["data"]["user"]["id"], "U0123ABCD", "{:?}", user.body);
    assert_eq!(user.body["data"]["echo_authorization"], "Bearer [REDACTED]");
    let sent = setup.requests().pop().expect("a request");
    assert_eq!(
        (sent.method.as_str(), sent.path.as_str()),
        ("GET", "/api/users.info")
    );
    assert_eq!(query_value(&sent, "user").as_deref(), Some("U0123ABCD"));
}

/// Params failing the schema never reach the connector or Slack; Slack's error envelopes and
/// HTTP errors are answers passed through with their status.
#[tokio::test(flavor = "multi_thread")]
async fn slack_bad_params_are_400_and_upstream_errors_pass_through() {
    let Some(setup) = connected().await else { return };

    let missing_text = setup
        .execute("slack", "post_message", json!({"channel": "C001"}))
        .await;
    assert_bad_request(&setup, &missing_text, 0);
    let wrong_type = setup
        .execute("slack", "list_channels", json!({"limit": "many"}))
        .await;
    assert_bad_request(&setup, &wrong_type, 0);
    let unknown_field = setup
        .execute("slack", "get_user", json!({"user": "U1", "as_admin": true}))
        .await;
    assert_bad_request(&setup, &unknown_field, 0);

    let not_found = setup
        .execute("slack", "post_message", json!({"channel": "C404", "text": "hi"}))
        .await;
    assert_eq!(not_found.status, 200);
    assert_eq!(
        not_found.body,
        json!({"status": 200, "data": {"ok": false, "error": "channel_not_found"}})
    );

    let limited = setup.execute("slack", "get_user", json!({"user": "U429"})).await;
    assert_eq!(limited.status, 200);
    // Slack's `Retry-After` reaches the caller beside the connector's answer.
    assert_eq!(
        limited.body,
        json!({"status": 429, "data": {"ok": false, "error": "ratelimited"}, "headers": {"retry-after": "30"}})
    );
    // The connector's `print()` reaches the gateway's log under the call's transaction.
    let transaction = limited.headers["x-transaction-key"].to_str().expect("key");
    setup
        .gateway
        .output_with_line(&[
            transaction,
            "stream=\"stdout\"",
            "Slack rate-limited /users.info: retry after 30 s",
        ])
        .await;

    // An error envelope in the middle of a paginated walk ends it and is returned as it is.
    let bad_cursor = setup
        .execute(
            "slack",
            "list_channels",
            json!({"cursor": "bogus", "all_pages": true}),
        )
        .await;
    assert_eq!(
        bad_cursor.body,
        json!({"status": 200, "data": {"ok": false, "error": "invalid_cursor"}})
    );
}

/// The host's `denied` http-error reaches the connector and comes back as `egress_denied`.
#[tokio::test(flavor = "multi_thread")]
async fn slack_refused_egress_is_egress_denied() {
    let Some(component) = component("slack", guests::SLACK) else {
        return;
    };
    refused_egress_is_egress_denied(component, "slack", TOKEN, "get_user", json!({"user": "U1"})).await;
}
