//! Passthrough: raw calls to a connection's platform with the credential injected by the host.

use crate::common::{REQUEST_TIMEOUT, SECRET, SIZED_BODY_BYTES, Setup, send};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn passthrough_forwards_the_call_and_injects_the_credential() {
    let setup = Setup::new().await;
    let response = setup
        .client
        .get(format!(
            "{}/v1/passthrough/repos/acme/webapp?per_page=5",
            setup.gateway.url
        ))
        .bearer_auth(&setup.key)
        .header("x-sluice-connection-key", &setup.connection_key)
        .header("accept", "application/vnd.github+json")
        .header("x-custom", "kept")
        // Named by `Connection`: for this hop only.
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "dropped")
        .send()
        .await
        .expect("passthrough");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["x-sluice-passthrough-content-type"],
        "application/json; charset=utf-8"
    );
    assert!(response.headers().contains_key("x-transaction-key"));
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["full_name"], "acme/webapp", "the upstream body, verbatim");

    let sent = setup.upstream_requests().pop().expect("sent");
    assert_eq!(
        (sent.method.as_str(), sent.path.as_str()),
        ("GET", "/repos/acme/webapp")
    );
    assert_eq!(sent.query.as_deref(), Some("per_page=5"));
    assert_eq!(
        sent.header("authorization"),
        Some(format!("Bearer {SECRET}").as_str()),
        "the credential, not the API key"
    );
    assert_eq!(sent.header("accept"), Some("application/vnd.github+json"));
    assert_eq!(sent.header("x-custom"), Some("kept"));
    assert_eq!(
        sent.header("x-hop"),
        None,
        "a header `Connection` names is hop-by-hop"
    );
    assert!(
        sent.header("x-sluice-connection-key").is_none(),
        "gateway headers stay at the gateway"
    );

    // The root of the base URL is reachable too.
    let root = setup
        .client
        .get(format!("{}/v1/passthrough/?page=2", setup.gateway.url))
        .bearer_auth(&setup.key)
        .header("x-sluice-connection-key", &setup.connection_key)
        .send()
        .await
        .expect("passthrough");
    assert!(root.headers().contains_key("x-transaction-key"));
    let sent = setup.upstream_requests().pop().expect("sent");
    assert_eq!((sent.method.as_str(), sent.path.as_str()), ("GET", "/"));
    assert_eq!(sent.query.as_deref(), Some("page=2"));
}

/// Passthrough answers carry the key's rate-limit window under the `X-RateLimit-*` names, as
/// action calls do; the upstream's own rate-limit headers come prefixed, so a caller never
/// takes the upstream's calls left for the gateway's. The upstream's `Retry-After` belongs to
/// the upstream's 429 and is relayed.
#[tokio::test(flavor = "multi_thread")]
async fn passthrough_tells_the_keys_rate_limit_not_the_upstreams() {
    let setup = Setup::new().await;
    let limited = setup
        .gateway
        .create_key_with("test", "*", &["--per-minute", "100"])
        .await;
    let response = setup
        .client
        .get(format!("{}/v1/passthrough/rate-limited", setup.gateway.url))
        .bearer_auth(&limited)
        .header("x-sluice-connection-key", &setup.connection_key)
        .send()
        .await
        .expect("passthrough");
    assert_eq!(response.status(), 429);
    let headers = response.headers();
    assert_eq!(headers["x-ratelimit-limit"], "100");
    assert_eq!(headers.get_all("x-ratelimit-remaining").iter().count(), 1);
    assert_eq!(headers["x-ratelimit-remaining"], "99");
    assert_eq!(headers["x-sluice-passthrough-x-ratelimit-remaining"], "42");
    assert_eq!(headers["x-sluice-passthrough-x-ratelimit-limit"], "5000");
    assert_eq!(headers["retry-after"], "7");

    // A key with no limit gets no rate-limit headers of the gateway's, and none unprefixed.
    let unlimited = setup
        .client
        .get(format!("{}/v1/passthrough/rate-limited", setup.gateway.url))
        .bearer_auth(&setup.key)
        .header("x-sluice-connection-key", &setup.connection_key)
        .send()
        .await
        .expect("passthrough");
    assert!(!unlimited.headers().contains_key("x-ratelimit-remaining"));
    assert_eq!(
        unlimited.headers()["x-sluice-passthrough-x-ratelimit-remaining"],
        "42"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn passthrough_passes_bodies_and_statuses_and_scrubs_echoes() {
    let setup = Setup::new().await;
    let invalid = setup
        .client
        .post(format!(
            "{}/v1/passthrough/repos/acme/webapp/issues",
            setup.gateway.url
        ))
        .bearer_auth(&setup.key)
        .header("x-pica-connection-key", &setup.connection_key)
        .json(&json!({"title": ""}))
        .send()
        .await
        .expect("passthrough");
    assert_eq!(invalid.status(), 422, "the upstream status is the reply's status");
    let sent = setup.upstream_requests().pop().expect("sent");
    assert_eq!(sent.json(), json!({"title": ""}));

    let echoed = setup
        .client
        .get(format!("{}/v1/passthrough/echo-headers", setup.gateway.url))
        .bearer_auth(&setup.key)
        .header("x-sluice-connection-key", &setup.connection_key)
        .send()
        .await
        .expect("passthrough");
    // The upstream's length is that of the body before scrubbing: it would tell the secret's
    // length, and describe a body the caller does not get.
    assert!(
        !echoed
            .headers()
            .contains_key("x-sluice-passthrough-content-length"),
        "{:?}",
        echoed.headers()
    );
    let echoed = echoed.text().await.expect("body");
    assert!(
        !echoed.contains(SECRET) && echoed.contains("[REDACTED]"),
        "{echoed}"
    );
}

/// Over HTTP/2 a body may come with neither `Content-Length` nor `Transfer-Encoding`: it is
/// forwarded all the same (it used to be dropped, the upstream getting an empty POST).
#[tokio::test(flavor = "multi_thread")]
async fn passthrough_forwards_an_http2_body_sent_without_a_length() {
    let setup = Setup::new().await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .expect("client");
    let chunks = ["{\"title\":", " \"sent over h2\"}"].map(Ok::<_, std::io::Error>);
    let answer = h2
        .post(format!(
            "{}/v1/passthrough/repos/acme/webapp/issues",
            setup.gateway.url
        ))
        .bearer_auth(&setup.key)
        .header("x-sluice-connection-key", &setup.connection_key)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .expect("passthrough");
    assert_eq!(answer.version(), reqwest::Version::HTTP_2);
    assert_eq!(answer.status(), 201);
    let sent = setup.upstream_requests().pop().expect("sent");
    assert_eq!(sent.json(), json!({"title": "sent over h2"}));
}

#[tokio::test(flavor = "multi_thread")]
async fn passthrough_errors_are_typed() {
    let setup = Setup::new().await;
    let url = format!("{}/v1/passthrough/repos/acme/webapp", setup.gateway.url);
    let no_header = send(setup.client.get(&url).bearer_auth(&setup.key)).await;
    assert_eq!((no_header.status, no_header.code()), (400, "bad_request"));
    let unknown = send(
        setup
            .client
            .get(&url)
            .bearer_auth(&setup.key)
            .header("x-sluice-connection-key", "nope"),
    )
    .await;
    assert_eq!((unknown.status, unknown.code()), (404, "not_found"));
    // A key sent as raw UTF-8 is read as such (keys made before identities were encoded in
    // them hold it), and bytes that are not UTF-8 are named as the problem.
    for (bytes, expected) in [
        ("test::github::ünï::0".as_bytes(), (404, "not_found", "ünï")),
        (b"test::\xff::0".as_slice(), (400, "bad_request", "is not UTF-8")),
        (b"".as_slice(), (400, "bad_request", "is empty")),
    ] {
        let answer = send(setup.client.get(&url).bearer_auth(&setup.key).header(
            "x-sluice-connection-key",
            reqwest::header::HeaderValue::from_bytes(bytes).expect("obs-text is a valid header value"),
        ))
        .await;
        let message = answer.body["message"].as_str().unwrap_or_default();
        assert_eq!(
            (answer.status, answer.code()),
            (expected.0, expected.1),
            "{message}"
        );
        assert!(message.contains(expected.2), "{message}");
    }
    let slack_only = setup.gateway.create_key("test", "slack").await;
    let scoped = send(
        setup
            .client
            .get(&url)
            .bearer_auth(&slack_only)
            .header("x-sluice-connection-key", &setup.connection_key),
    )
    .await;
    assert_eq!((scoped.status, scoped.code()), (403, "scope_not_allowed"));
    let anonymous = send(
        setup
            .client
            .get(&url)
            .header("x-sluice-connection-key", &setup.connection_key),
    )
    .await;
    assert_eq!(anonymous.code(), "unauthorized");
    assert!(setup.upstream_requests().is_empty());

    // A path that would read as another origin is the caller's mistake.
    let double_slash = setup.passthrough_get("//evil.example/x").await;
    assert_eq!((double_slash.status, double_slash.code()), (400, "bad_request"));

    // `..` segments (encoded, so that no client normalises them away) cannot climb out of a
    // connection's base URL path. Sent raw: an HTTP client would resolve them itself.
    let under_a_path = setup
        .gateway
        .add_connection(
            "github",
            "ghp_pathSCOPEDtoken42",
            &["--base-url", &format!("{}/api/v3", setup.upstream.url())],
        )
        .await;
    let address = setup.gateway.url.trim_start_matches("http://").to_owned();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Also what upstream servers may still read as `..`: before a path parameter (Tomcat),
    // or between encoded separators (servers that decode before resolving dots).
    for climbing in ["%2e%2e/%2E%2E/admin", "..;/admin", "..%2fadmin", "..%5Cadmin"] {
        let mut connection = tokio::net::TcpStream::connect(&address).await.expect("connect");
        connection
            .write_all(
                format!(
                    "GET /v1/passthrough/{climbing} HTTP/1.1\r\nhost: {address}\r\n\
                     authorization: Bearer {}\r\nx-sluice-connection-key: {under_a_path}\r\n\
                     connection: close\r\n\r\n",
                    setup.key
                )
                .as_bytes(),
            )
            .await
            .expect("write");
        let mut reply = String::new();
        connection.read_to_string(&mut reply).await.expect("read");
        assert!(reply.starts_with("HTTP/1.1 403"), "{climbing}: {reply}");
        assert!(
            reply.contains(r#""error":"egress_denied""#),
            "{climbing}: {reply}"
        );
    }
    assert!(setup.upstream_requests().is_empty(), "nothing was sent upstream");

    // An upstream's own plain-text error comes back as it was sent, not in the gateway's shape.
    let teapot = setup
        .client
        .get(format!("{}/v1/passthrough/teapot", setup.gateway.url))
        .bearer_auth(&setup.key)
        .header("x-sluice-connection-key", &setup.connection_key)
        .send()
        .await
        .expect("passthrough");
    assert_eq!(teapot.status().as_u16(), 418);
    assert_eq!(teapot.text().await.expect("body"), "short and stout");
}

/// Bodies far larger than any buffered limit stream through both ways, and the credential is
/// scrubbed from the download even where it straddles chunk boundaries.
#[tokio::test(flavor = "multi_thread")]
async fn large_bodies_stream_through_and_are_scrubbed() {
    let setup = Setup::new().await;
    let download = setup
        .client
        .get(format!("{}/v1/passthrough/big", setup.gateway.url))
        .bearer_auth(&setup.key)
        .header("x-sluice-connection-key", &setup.connection_key)
        .send()
        .await
        .expect("download")
        .bytes()
        .await
        .expect("body");
    let original = crate::common::big_body();
    let occurrences = original.matches(SECRET).count();
    assert!(occurrences > 40_000);
    let expected = original.replace(SECRET, "[REDACTED]");
    assert_eq!(download.len(), expected.len());
    assert!(
        download == expected.as_bytes(),
        "the scrubbed body, byte for byte"
    );

    let upload = vec![b'u'; 20 << 20];
    let answer = send(
        setup
            .client
            .put(format!("{}/v1/passthrough/upload", setup.gateway.url))
            .bearer_auth(&setup.key)
            .header("x-sluice-connection-key", &setup.connection_key)
            .body(upload),
    )
    .await;
    assert_eq!(answer.body["received"], 20 << 20);
    // Streamed through, yet framed as the caller framed it: many APIs refuse chunked uploads.
    let sent = setup.upstream_requests().pop().expect("sent");
    assert_eq!(sent.header("content-length"), Some("20971520"));
    assert_eq!(sent.header("transfer-encoding"), None);
}

/// A body over the passthrough cap is refused with `payload_too_large`.
#[tokio::test(flavor = "multi_thread")]
async fn passthrough_body_over_the_cap_is_413() {
    let setup = Setup::with_options(sluice_fixtures::gateway::Options {
        extra_args: vec!["--max-passthrough-body-mib".into(), "1".into()],
        ..Default::default()
    })
    .await;
    let answer = send(
        setup
            .client
            .put(format!("{}/v1/passthrough/upload", setup.gateway.url))
            .bearer_auth(&setup.key)
            .header("x-sluice-connection-key", &setup.connection_key)
            .body(vec![b'u'; 2 << 20]),
    )
    .await;
    assert_eq!((answer.status, answer.code()), (413, "payload_too_large"));
    assert!(setup.upstream_requests().is_empty());
}

/// A passthrough's request-log row carries the size of the body the caller received, counted
/// as it streamed through.
#[tokio::test(flavor = "multi_thread")]
async fn passthrough_log_row_counts_the_streamed_response_body() {
    let setup = Setup::new().await;
    let response = tokio::time::timeout(
        REQUEST_TIMEOUT,
        setup
            .client
            .get(format!("{}/v1/passthrough/sized", setup.gateway.url))
            .bearer_auth(&setup.key)
            .header("x-sluice-connection-key", &setup.connection_key)
            .send(),
    )
    .await
    .expect("in time")
    .expect("passthrough");
    assert_eq!(response.status(), 200);
    let tx = transaction_key(response.headers());
    let body = tokio::time::timeout(REQUEST_TIMEOUT, response.bytes())
        .await
        .expect("in time")
        .expect("body");
    assert_eq!(body.len(), SIZED_BODY_BYTES);

    let row = setup.log_row(&tx).await.expect("the call was logged");
    assert_eq!(row["responseBytes"], SIZED_BODY_BYTES, "{row}");
    assert_eq!(row["outcome"], "ok", "{row}");
    assert_eq!(
        (row["httpStatus"].as_u64(), row["upstreamStatus"].as_u64()),
        (Some(200), Some(200))
    );
    assert_eq!(row["endpoint"], "passthrough");
    assert_eq!(row["connectionKey"], setup.connection_key.as_str());
    // Counted in the metrics as execute calls are, under its own endpoint label.
    let metrics = setup.gateway.metrics().await;
    let counted = r#"sluice_requests_total{integration="github",endpoint="passthrough",outcome="ok"} 1"#;
    assert!(metrics.contains(counted), "{metrics}");
}

/// A caller that hangs up halfway through a download still gets a row, written when the
/// gateway gives up on it, with what was sent so far and an outcome that says so.
#[tokio::test(flavor = "multi_thread")]
async fn passthrough_caller_gone_midway_is_logged_with_what_was_sent() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let setup = Setup::new().await;
    let address = setup.gateway.url.trim_start_matches("http://").to_owned();
    let mut connection = tokio::net::TcpStream::connect(&address).await.expect("connect");
    let request = format!(
        "GET /v1/passthrough/big HTTP/1.1\r\nhost: {address}\r\nauthorization: Bearer {}\r\n\
         x-sluice-connection-key: {}\r\n\r\n",
        setup.key, setup.connection_key
    );
    connection.write_all(request.as_bytes()).await.expect("write");
    // Read the head and about 1 MiB of the 40 MiB body, then hang up.
    let mut received = Vec::new();
    let mut buffer = vec![0; 64 << 10];
    while received.len() < 1 << 20 {
        let read = tokio::time::timeout(REQUEST_TIMEOUT, connection.read(&mut buffer))
            .await
            .expect("in time")
            .expect("read");
        assert!(read > 0, "the gateway sent the whole body early");
        received.extend_from_slice(&buffer[..read]);
    }
    drop(connection);
    let head_end = received
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&received[..head_end]).to_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let tx = head
        .lines()
        .find_map(|line| line.strip_prefix("x-transaction-key: "))
        .expect("a transaction key")
        .trim()
        .to_owned();

    let row = setup.log_row(&tx).await.expect("the abandoned call was logged");
    assert_eq!(row["outcome"], "client_closed", "{row}");
    let sent = row["responseBytes"].as_u64().expect("responseBytes");
    let whole = crate::common::big_body().replace(SECRET, "[REDACTED]").len() as u64;
    let read = (received.len() - head_end) as u64;
    assert!(
        // What the client read includes the chunked framing, a few bytes a chunk.
        sent >= read * 9 / 10 && sent < whole,
        "part of the body was sent: {sent} of {whole} bytes (the client read {read})"
    );
    assert_eq!(row["httpStatus"], 200, "{row}");
    // Exactly one row, even though the body was never finished.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let rows = setup
        .api(
            reqwest::Method::GET,
            &format!("/v1/logs?transactionKey={tx}"),
            None,
        )
        .await;
    assert_eq!(rows.body["total"], 1, "{:?}", rows.body);
}

/// Upstream 401s through passthrough move the connection's state as they do for execute:
/// degraded after one, failed after three in a row, operational again after a success.
#[tokio::test(flavor = "multi_thread")]
async fn passthrough_401s_fail_the_connection_and_a_success_restores_it() {
    let setup = Setup::new().await;
    let call = |path: &str| {
        send(
            setup
                .client
                .get(format!("{}/v1/passthrough/{path}", setup.gateway.url))
                .bearer_auth(&setup.key)
                .header("x-sluice-connection-key", &setup.connection_key),
        )
    };
    let rejected = call("repos/acme/revoked").await;
    assert_eq!(rejected.status, 401, "the upstream 401 is passed through");
    assert_eq!(
        setup.wait_for_state(&setup.connection_key, "degraded").await,
        "degraded"
    );
    for _ in 0..2 {
        assert_eq!(call("repos/acme/revoked").await.status, 401);
    }
    assert_eq!(
        setup.wait_for_state(&setup.connection_key, "failed").await,
        "failed"
    );
    assert_eq!(call("repos/acme/webapp").await.status, 200);
    assert_eq!(
        setup.wait_for_state(&setup.connection_key, "operational").await,
        "operational"
    );
}

/// The transaction key a response carries.
fn transaction_key(headers: &reqwest::header::HeaderMap) -> String {
    headers["x-transaction-key"].to_str().expect("ascii").to_owned()
}

/// A caller that hangs up before the upstream answered a request it sent whole leaves the
/// request going: the upstream's answer still comes in, and the row says `client_closed`
/// (499: nothing was sent) with the upstream's status.
#[tokio::test(flavor = "multi_thread")]
async fn passthrough_caller_gone_before_the_answer_leaves_the_request_going() {
    let setup = Setup::new().await;
    let head = format!(
        "GET /v1/passthrough/slow HTTP/1.1\r\nx-sluice-connection-key: {}",
        setup.connection_key
    );
    setup
        .hang_up_during_slow_call(&setup.raw_request(&head, ""))
        .await;

    let row = setup.client_closed_row().await;
    crate::common::assert_ran_to_its_end_unanswered(&row);
    assert_eq!(row["endpoint"], "passthrough");
    assert_eq!(row["connectionKey"], setup.connection_key.as_str());
}

/// A caller that hangs up halfway through sending its body cuts the upstream request off (the
/// upstream never gets a whole body), and the call is still logged as `client_closed`.
#[tokio::test(flavor = "multi_thread")]
async fn passthrough_caller_gone_mid_upload_cuts_the_request_off() {
    use tokio::io::AsyncWriteExt;
    let setup = Setup::new().await;
    let address = setup.gateway.url.trim_start_matches("http://").to_owned();
    let mut connection = tokio::net::TcpStream::connect(&address).await.expect("connect");
    let whole = 1 << 20;
    let head = format!(
        "PUT /v1/passthrough/upload HTTP/1.1\r\nhost: {address}\r\nauthorization: Bearer {}\r\n\
         x-sluice-connection-key: {}\r\ncontent-length: {whole}\r\n\r\n",
        setup.key, setup.connection_key
    );
    connection.write_all(head.as_bytes()).await.expect("write");
    connection.write_all(&[b'u'; 64 << 10]).await.expect("write");
    // Long enough for the gateway to start the upstream request and pass on what came.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    drop(connection);

    let row = setup.client_closed_row().await;
    assert_eq!(
        (&row["httpStatus"], &row["upstreamStatus"]),
        (&json!(499), &serde_json::Value::Null),
        "{row}"
    );
    // The row says how much of the body came before the caller left.
    let counted = row["requestBytes"].as_u64().expect("requestBytes");
    assert!((1..=64 << 10).contains(&counted), "{row}");
    // A request that did not come whole is not answered either; give it the time it would take.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(
        setup
            .upstream_requests()
            .iter()
            .all(|request| request.body.len() < whole),
        "the upstream got the whole body"
    );
}
