//! The execute endpoint against a fake GitHub: what goes upstream and what comes back.

use crate::common::{SECRET, Setup};
use reqwest::Method;
use serde_json::json;

/// A read passes through the upstream status and JSON body verbatim, with the credential
/// injected by the host and GitHub's media type set by the connector.
#[tokio::test(flavor = "multi_thread")]
async fn get_repo_returns_status_and_data_verbatim() {
    let setup = Setup::new().await;
    let answer = setup.get_repo().await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(
        answer.body,
        json!({"status": 200, "data": {"id": 1296269, "full_name": "acme/webapp", "private": false, "default_branch": "main"}})
    );
    let tx = answer
        .headers
        .get("x-transaction-key")
        .expect("transaction key header");
    assert!(tx.to_str().expect("ascii").starts_with("txn_"));

    let requests = setup.upstream_requests();
    assert_eq!(requests.len(), 1);
    let sent = &requests[0];
    assert_eq!(sent.method, "GET");
    assert_eq!(sent.path, "/repos/acme/webapp");
    assert_eq!(
        sent.header("authorization"),
        Some(format!("Bearer {SECRET}").as_str())
    );
    assert_eq!(sent.header("accept"), Some("application/vnd.github+json"));
    assert_eq!(sent.header("x-github-api-version"), Some("2022-11-28"));
    setup.assert_secret_not_logged();
}

/// A caller's own `X-Request-Id` comes back on the answer, is kept in the call's request-log
/// row (where it finds the call) and goes with the call's log lines; one of another shape (a
/// space in it, too long) is left out, and the call goes ahead all the same.
#[tokio::test(flavor = "multi_thread")]
async fn the_callers_request_id_comes_back_and_finds_the_call() {
    let setup = Setup::new().await;
    let call = |request_id: String| {
        let request = setup
            .client
            .post(format!("{}/v1/github/get_repo", setup.gateway.url))
            .bearer_auth(&setup.key)
            .header("x-request-id", request_id)
            .json(&json!({"params": {"owner": "acme", "repo": "nope"}}));
        crate::common::send(request)
    };
    let answer = call("app-7f3a/42".into()).await;
    assert_eq!(answer.body["status"], 404, "{:?}", answer.body);
    assert_eq!(answer.headers["x-request-id"], "app-7f3a/42");
    let row = setup
        .log_row_where("requestId=app-7f3a%2F42")
        .await
        .expect("the call's row, found by its request id");
    assert_eq!(
        (&row["requestId"], &row["transactionKey"]),
        (
            &json!("app-7f3a/42"),
            &json!(answer.headers["x-transaction-key"].to_str().expect("ascii"))
        )
    );
    // The connection's calls are found by its key; another connection's key finds none.
    let connection = row["connectionKey"].as_str().expect("the call's connection");
    for (connection, calls) in [(connection, 1), ("test::github::someone_else::x", 0)] {
        let path = format!("/v1/logs?connectionKey={connection}&requestId=app-7f3a%2F42");
        let logs = setup.api(Method::GET, &path, None).await;
        assert_eq!(logs.body["total"], calls, "{connection}: {:?}", logs.body);
    }
    // Empty (a variable that was): refused, not every connection's calls.
    for empty in ["", ",", "%20"] {
        let logs = setup
            .api(Method::GET, &format!("/v1/logs?connectionKey={empty}"), None)
            .await;
        assert_eq!(
            (logs.status, logs.code()),
            (400, "bad_request"),
            "{empty}: {:?}",
            logs.body
        );
    }
    assert!(
        setup.gateway.output().contains(r#"request_id="app-7f3a/42""#),
        "the gateway's log lines of the call carry it (quoted: it is the caller's text)"
    );
    for unfit in ["two words".to_owned(), "x".repeat(129)] {
        let answer = call(unfit.clone()).await;
        assert_eq!(
            answer.body["status"], 404,
            "the call goes ahead: {:?}",
            answer.body
        );
        assert!(answer.headers.get("x-request-id").is_none(), "{unfit}");
    }
    let untagged = setup.get_repo().await;
    assert!(untagged.headers.get("x-request-id").is_none());
}

/// An answer that says it is JSON but is not reaches the caller as a string (nothing is lost),
/// and the gateway's log says why under the call's transaction key.
#[tokio::test(flavor = "multi_thread")]
async fn a_json_answer_that_is_not_json_is_a_string_and_logged() {
    let setup = Setup::new().await;
    let answer = setup
        .execute(
            "github",
            "get_repo",
            json!({"params": {"owner": "acme", "repo": "broken"}}),
        )
        .await;
    assert_eq!(answer.body, json!({"status": 200, "data": "{not json"}));
    let tx = answer.headers["x-transaction-key"].to_str().expect("ascii");
    setup
        .gateway
        .output_with_line(&[tx, "says it is JSON but its body is not"])
        .await;
}

/// An answer that is no text reaches the caller as base64, marked so, with its content type:
/// its bytes, not text with replacement characters.
#[tokio::test(flavor = "multi_thread")]
async fn an_answer_that_is_no_text_is_base64() {
    use base64::Engine as _;
    let setup = Setup::new().await;
    let answer = setup
        .execute(
            "github",
            "get_repo",
            json!({"params": {"owner": "acme", "repo": "binary"}}),
        )
        .await;
    assert_eq!(answer.body["dataEncoding"], "base64", "{:?}", answer.body);
    assert_eq!(answer.body["contentType"], "application/octet-stream");
    let bytes = base64::prelude::BASE64_STANDARD
        .decode(answer.body["data"].as_str().expect("a string"))
        .expect("base64");
    assert_eq!(bytes, (0..=255).collect::<Vec<u8>>());
}

/// An upstream that answers too late is `504 upstream_timeout`; one that answers compressed,
/// which the gateway never asks for, is `502 connector_error` (its body is not passed on).
#[tokio::test(flavor = "multi_thread")]
async fn late_and_compressed_upstream_answers_are_refused() {
    let setup = Setup::with_options(sluice_fixtures::gateway::Options {
        extra_args: vec!["--upstream-timeout-ms".into(), "300".into()],
        ..Default::default()
    })
    .await;
    let late = setup
        .execute(
            "github",
            "get_repo",
            json!({"params": {"owner": "acme", "repo": "slow"}}),
        )
        .await;
    assert_eq!(
        (late.status, late.code()),
        (504, "upstream_timeout"),
        "{:?}",
        late.body
    );
    let compressed = setup
        .execute(
            "github",
            "get_repo",
            json!({"params": {"owner": "acme", "repo": "gzipped"}}),
        )
        .await;
    assert_eq!(
        (compressed.status, compressed.code()),
        (502, "connector_error"),
        "{:?}",
        compressed.body
    );
}

/// An upstream's rate limit reaches the caller with what it needs to wait: the upstream's
/// `Retry-After`, rate-limit headers and request id in `headers` (not its cookies or caching),
/// while the gateway's own `X-RateLimit-*` stay the API key's.
#[tokio::test(flavor = "multi_thread")]
async fn the_upstreams_rate_limit_headers_reach_the_caller() {
    let setup = Setup::new().await;
    let answer = setup
        .execute(
            "github",
            "get_repo",
            json!({"params": {"owner": "acme", "repo": "busy"}}),
        )
        .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(answer.body["status"], 403);
    assert_eq!(
        answer.body["headers"],
        json!({
            "x-ratelimit-limit": "5000",
            "x-ratelimit-remaining": "0",
            "x-ratelimit-reset": "1764547200",
            "retry-after": "60",
            "x-github-request-id": "C0DE:BEEF",
        })
    );
    assert!(
        answer.headers.get("x-ratelimit-remaining").is_none(),
        "the gateway's own rate-limit headers are the key's, and this key has no limit"
    );
    // An answer without such headers has no `headers` at all.
    let plain = setup.get_repo().await;
    assert!(plain.body.get("headers").is_none(), "{:?}", plain.body);
}

/// A header passed on to the caller is scrubbed of the credential like everything else.
#[tokio::test(flavor = "multi_thread")]
async fn passed_on_headers_never_carry_the_credential() {
    let setup = Setup::new().await;
    let answer = setup
        .execute(
            "github",
            "get_repo",
            json!({"params": {"owner": "acme", "repo": "echoing"}}),
        )
        .await;
    let request_id = answer.body["headers"]["x-request-id"]
        .as_str()
        .expect("the request id is passed on");
    assert!(request_id.starts_with("req-Bearer "), "{request_id}");
    assert!(!request_id.contains(SECRET), "{request_id}");
    assert!(request_id.contains("[REDACTED]"), "{request_id}");
}

/// Optional params become query parameters; absent ones are not sent.
#[tokio::test(flavor = "multi_thread")]
async fn list_issues_sends_query_parameters() {
    let setup = Setup::new().await;
    let answer = setup
        .execute(
            "github",
            "list_issues",
            json!({"params": {"owner": "acme", "repo": "webapp", "state": "all", "labels": "bug,ui", "per_page": 5}}),
        )
        .await;
    assert_eq!(answer.body["status"], 200);
    assert_eq!(answer.body["data"][0]["number"], 7);
    // Where the next page is: both of the upstream's `Link` headers, joined.
    assert_eq!(
        answer.body["headers"],
        json!({"link": "<https://api.github.com/repositories/1296269/issues?page=2>; rel=\"next\", \
            <https://api.github.com/repositories/1296269/issues?page=4>; rel=\"last\""})
    );
    let sent = &setup.upstream_requests()[0];
    assert_eq!(sent.path, "/repos/acme/webapp/issues");
    assert_eq!(
        sent.query.as_deref(),
        Some("state=all&labels=bug%2Cui&per_page=5")
    );
}

/// get_issue names the issue in the path.
#[tokio::test(flavor = "multi_thread")]
async fn get_issue_reads_one_issue() {
    let setup = Setup::new().await;
    let answer = setup
        .execute(
            "github",
            "get_issue",
            json!({"params": {"owner": "acme", "repo": "webapp", "issue_number": 7}}),
        )
        .await;
    assert_eq!(
        answer.body,
        json!({"status": 200, "data": {"number": 7, "title": "Bug", "state": "open"}})
    );
    assert_eq!(setup.upstream_requests()[0].path, "/repos/acme/webapp/issues/7");
    // `7.0` is an integer to JSON Schema, and so to the connector (a Rust `u64` here).
    let float = setup
        .execute(
            "github",
            "get_issue",
            json!({"params": {"owner": "acme", "repo": "webapp", "issue_number": 7.0}}),
        )
        .await;
    assert_eq!(float.body["status"], 200, "{:?}", float.body);
    assert_eq!(setup.upstream_requests()[1].path, "/repos/acme/webapp/issues/7");
}

/// create_issue POSTs a JSON body without nulls and reports the upstream's 201.
#[tokio::test(flavor = "multi_thread")]
async fn create_issue_posts_json_and_passes_201_through() {
    let setup = Setup::new().await;
    let answer = setup
        .execute(
            "github",
            "create_issue",
            json!({"params": {"owner": "acme", "repo": "webapp", "title": "Bug report", "labels": ["bug"]}}),
        )
        .await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.body,
        json!({"status": 201, "data": {"number": 8, "title": "Bug report", "state": "open"}})
    );
    let sent = &setup.upstream_requests()[0];
    assert_eq!(sent.method, "POST");
    assert_eq!(sent.path, "/repos/acme/webapp/issues");
    assert_eq!(sent.header("content-type"), Some("application/json"));
    assert_eq!(sent.json(), json!({"title": "Bug report", "labels": ["bug"]}));
}

/// create_comment POSTs the comment body to the issue's comments.
#[tokio::test(flavor = "multi_thread")]
async fn create_comment_posts_to_the_issue() {
    let setup = Setup::new().await;
    let answer = setup
        .execute(
            "github",
            "create_comment",
            json!({"params": {"owner": "acme", "repo": "webapp", "issue_number": 7, "body": "Thanks!"}}),
        )
        .await;
    assert_eq!(
        answer.body,
        json!({"status": 201, "data": {"id": 99, "body": "Thanks!"}})
    );
    let sent = &setup.upstream_requests()[0];
    assert_eq!(
        (sent.method.as_str(), sent.path.as_str()),
        ("POST", "/repos/acme/webapp/issues/7/comments")
    );
    assert_eq!(sent.json(), json!({"body": "Thanks!"}));
}

/// Upstream errors are answers, not gateway errors: HTTP 200 with the upstream status inside.
#[tokio::test(flavor = "multi_thread")]
async fn upstream_404_and_422_are_passed_through_as_status() {
    let setup = Setup::new().await;
    let missing = setup
        .execute(
            "github",
            "get_repo",
            json!({"params": {"owner": "acme", "repo": "missing"}}),
        )
        .await;
    assert_eq!(missing.status, 200);
    assert_eq!(
        missing.body,
        json!({"status": 404, "data": {"message": "Not Found"}})
    );

    let invalid = setup
        .execute(
            "github",
            "create_issue",
            json!({"params": {"owner": "acme", "repo": "webapp", "title": " "}}),
        )
        .await;
    assert_eq!(invalid.status, 200);
    assert_eq!(invalid.body["status"], 422);
    assert_eq!(invalid.body["data"]["message"], "Validation Failed");
}

/// Caller-supplied path parts are encoded: `/`, `?` stay inside their segment, and a part that
/// encoded still reads `..` to a server decoding `%2F` first is not sent at all.
#[tokio::test(flavor = "multi_thread")]
async fn path_params_cannot_escape_their_segment() {
    let setup = Setup::new().await;
    setup
        .execute(
            "github",
            "get_repo",
            json!({"params": {"owner": "a/b", "repo": "x?y=1"}}),
        )
        .await;
    let sent = &setup.upstream_requests()[0];
    assert_eq!(sent.path, "/repos/a%2Fb/x%3Fy%3D1");
    assert_eq!(sent.query, None);
    let climbing = setup
        .execute(
            "github",
            "get_repo",
            json!({"params": {"owner": "../../admin", "repo": "x"}}),
        )
        .await;
    assert_eq!(
        (climbing.status, climbing.code()),
        (403, "egress_denied"),
        "{:?}",
        climbing.body
    );
    assert_eq!(setup.upstream_requests().len(), 1, "nothing more was sent");
}

/// A connector with auth `none` runs without any connection.
#[tokio::test(flavor = "multi_thread")]
async fn connector_without_auth_needs_no_connection() {
    let setup = Setup::new().await;
    let answer = setup
        .execute("echo", "say", json!({"params": {"message": "hi", "n": [1, 2]}}))
        .await;
    assert_eq!(
        answer.body,
        json!({"status": 200, "data": {"message": "hi", "n": [1, 2]}})
    );
    // A connection key it cannot use is the caller's mistake, said rather than ignored; an
    // identity (an app acting for its user on every call) is fine.
    let keyed = setup
        .execute("echo", "say", json!({"params": {}, "connectionKey": "zzz"}))
        .await;
    assert_eq!(
        (keyed.status, keyed.code()),
        (400, "bad_request"),
        "{:?}",
        keyed.body
    );
    let for_user = setup
        .execute("echo", "say", json!({"params": {}, "identity": "alice"}))
        .await;
    assert_eq!(for_user.status, 200, "{:?}", for_user.body);
}

/// Non-JSON upstream bodies come back as a string.
#[tokio::test(flavor = "multi_thread")]
async fn text_bodies_become_strings() {
    let setup = Setup::new().await;
    let answer = setup
        .execute("hostile", "call", json!({"params": {"url": "/text"}}))
        .await;
    assert_eq!(answer.body["status"], 200);
    assert_eq!(answer.body["data"]["seen_body"], "plain words");
}

/// With several connections, the caller picks one by identity or key; without either, the call
/// uses the key owner's default (the one connection without an identity), never an end user's;
/// two defaults are ambiguous, an error that lists them.
#[tokio::test(flavor = "multi_thread")]
async fn connection_is_chosen_by_identity_or_key_else_the_owners_default() {
    let setup = Setup::new().await;
    let alice_secret = "ghp_aliceSECRETtoken987654";
    let base_url = setup.upstream.url();
    let alice = setup
        .gateway
        .add_connection(
            "github",
            alice_secret,
            &["--identity", "alice", "--base-url", &base_url],
        )
        .await;
    let params = json!({"owner": "acme", "repo": "webapp"});

    let by_default = setup
        .execute("github", "get_repo", json!({"params": params}))
        .await;
    assert_eq!(by_default.body["status"], 200, "{:?}", by_default.body);

    let by_identity = setup
        .execute(
            "github",
            "get_repo",
            json!({"params": params, "identity": "alice"}),
        )
        .await;
    assert_eq!(by_identity.body["status"], 200);
    let by_key = setup
        .execute(
            "github",
            "get_repo",
            json!({"params": params, "connection_key": setup.connection_key}),
        )
        .await;
    assert_eq!(by_key.body["status"], 200);
    // The vault API's spelling works too; a misspelt selector is refused, not ignored (which
    // would run the call on the default connection).
    let by_camel_case_key = setup
        .execute(
            "github",
            "get_repo",
            json!({"params": params, "connectionKey": alice}),
        )
        .await;
    assert_eq!(by_camel_case_key.body["status"], 200);
    let misspelt = setup
        .execute(
            "github",
            "get_repo",
            json!({"params": params, "connection_kee": alice}),
        )
        .await;
    assert_eq!((misspelt.status, misspelt.code()), (400, "bad_request"));
    let both_spellings = setup
        .execute(
            "github",
            "get_repo",
            json!({"params": params, "connection_key": alice, "connectionKey": alice}),
        )
        .await;
    assert_eq!(
        (both_spellings.status, both_spellings.code()),
        (400, "bad_request")
    );
    let message = both_spellings.body["message"].as_str().unwrap_or_default();
    assert!(message.contains("in one of its spellings"), "{message}");

    let auth: Vec<String> = setup
        .upstream_requests()
        .iter()
        .map(|r| r.header("authorization").unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        auth,
        vec![
            format!("Bearer {SECRET}"),
            format!("Bearer {alice_secret}"),
            format!("Bearer {SECRET}"),
            format!("Bearer {alice_secret}")
        ]
    );

    let second_default = setup
        .gateway
        .add_connection("github", "ghp_secondDEFAULTtoken123", &["--base-url", &base_url])
        .await;
    let ambiguous = setup
        .execute("github", "get_repo", json!({"params": params}))
        .await;
    assert_eq!(
        (ambiguous.status, ambiguous.code()),
        (400, "ambiguous_connection")
    );
    let message = ambiguous.body["message"].as_str().expect("message");
    for candidate in [&setup.connection_key, &second_default] {
        assert!(message.contains(candidate.as_str()), "{message}");
        assert!(
            ambiguous.body["candidates"]
                .as_array()
                .expect("candidates")
                .contains(&json!(candidate)),
            "{:?}",
            ambiguous.body
        );
    }
    assert!(
        !message.contains(&alice),
        "an end user's connection is no candidate: {message}"
    );
    assert_eq!(
        setup.upstream_requests().len(),
        4,
        "an ambiguous call sends nothing"
    );

    // With alice's connection the only one left, a call that names nobody does not become
    // alice's call.
    for key in [&setup.connection_key, &second_default] {
        setup
            .gateway
            .cli(&["connections", "remove", key])
            .await
            .expect("remove");
    }
    let nobody = setup
        .execute("github", "get_repo", json!({"params": params}))
        .await;
    assert_eq!(
        (nobody.status, nobody.code()),
        (400, "ambiguous_connection"),
        "{:?}",
        nobody.body
    );
    let message = nobody.body["message"].as_str().expect("message");
    assert!(
        message.contains("name `identity`") && !message.contains(&alice),
        "{message}"
    );
    assert!(
        nobody.body.get("candidates").is_none(),
        "end users' connections are not listed: {:?}",
        nobody.body
    );
    assert_eq!(setup.upstream_requests().len(), 4, "nothing was sent");
    let named = setup
        .execute(
            "github",
            "get_repo",
            json!({"params": params, "identity": "alice"}),
        )
        .await;
    assert_eq!(named.body["status"], 200, "{:?}", named.body);
    // A second account connected for alice: naming alice no longer says which one acts.
    let alice_again = setup
        .gateway
        .add_connection(
            "github",
            "ghp_aliceSECONDtoken55555",
            &["--identity", "alice", "--base-url", &base_url],
        )
        .await;
    let ambiguous = setup
        .execute(
            "github",
            "get_repo",
            json!({"params": params, "identity": "alice"}),
        )
        .await;
    assert_eq!(
        (ambiguous.status, ambiguous.code()),
        (400, "ambiguous_connection")
    );
    let message = ambiguous.body["message"].as_str().expect("message");
    assert!(message.contains("belong to identity `alice`"), "{message}");
    assert_eq!(ambiguous.body["candidates"].as_array().map(Vec::len), Some(2));
    for candidate in [&alice, &alice_again] {
        assert!(message.contains(candidate.as_str()), "{message}");
    }
    assert_eq!(
        setup.upstream_requests().len(),
        5,
        "an ambiguous call sends nothing"
    );
    let by_key = setup
        .execute(
            "github",
            "get_repo",
            json!({"params": params, "connection_key": alice_again}),
        )
        .await;
    assert_eq!(by_key.body["status"], 200, "{:?}", by_key.body);
    // An identity the vault API would refuse is refused here too, before it can reach a
    // connect session (and from there a connection key): no action URL, nothing sent.
    for bad in ["evil\u{1b}[31mX\u{7}", "", &"a".repeat(201)] {
        let refused = setup
            .execute("github", "get_repo", json!({"params": params, "identity": bad}))
            .await;
        assert_eq!((refused.status, refused.code()), (400, "bad_request"), "{bad:?}");
        assert!(refused.body.get("action_url").is_none(), "{:?}", refused.body);
    }
    assert_eq!(setup.upstream_requests().len(), 6, "nothing more was sent");
}

/// A caller that hangs up while the connector waits on a slow upstream cuts the call off, and
/// the call is still logged: `client_closed` (499), its log lines tagged with its transaction,
/// counted in the metrics.
#[tokio::test(flavor = "multi_thread")]
async fn a_caller_hanging_up_mid_call_is_logged() {
    let setup = Setup::new().await;
    let request = setup.raw_request(
        "POST /v1/hostile/call HTTP/1.1",
        r#"{"params": {"url": "/slow"}}"#,
    );
    setup.hang_up_during_slow_call(&request).await;

    let row = setup.client_closed_row().await;
    crate::common::assert_cut_off_unanswered(&row);
    assert_eq!(
        (&row["integration"], &row["endpoint"]),
        (&json!("hostile"), &json!("call"))
    );
    let tx = row["transactionKey"].as_str().expect("transactionKey");
    let output = setup.gateway.output();
    assert!(
        output
            .lines()
            .any(|line| line.contains(tx) && line.contains("connection selected")),
        "the call's log lines carry its transaction key:\n{output}"
    );
    let metrics = setup.gateway.metrics().await;
    let counted = r#"sluice_requests_total{integration="hostile",endpoint="call",outcome="client_closed"} 1"#;
    assert!(metrics.contains(counted), "{metrics}");
}
