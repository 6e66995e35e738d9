//! Every documented error code, with its HTTP status and a stable JSON shape.

use crate::common::{Answer, Setup, send};
use serde_json::json;
use sluice_fixtures::gateway::Options;

fn assert_error(answer: &Answer, status: u16, code: &str) {
    assert_eq!(
        (answer.status, answer.code()),
        (status, code),
        "{:?}",
        answer.body
    );
    assert!(
        answer.body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{:?}",
        answer.body
    );
    assert!(
        answer.headers.contains_key("x-transaction-key"),
        "errors carry a transaction key too"
    );
}

/// No key, a malformed key, an unknown key and a revoked key are each refused with 401.
#[tokio::test(flavor = "multi_thread")]
async fn api_key_problems_are_401() {
    let setup = Setup::new().await;
    let url = format!("{}/v1/echo/say", setup.gateway.url);
    let body = json!({"params": {}});

    let missing = send(setup.client.post(&url).json(&body)).await;
    assert_error(&missing, 401, "unauthorized");
    assert_eq!(
        missing.headers["www-authenticate"], "Bearer",
        "RFC 6750's challenge"
    );
    let malformed = send(setup.client.post(&url).bearer_auth("not-a-key").json(&body)).await;
    assert_error(&malformed, 401, "unauthorized");
    let basic = send(setup.client.post(&url).basic_auth("u", Some("p")).json(&body)).await;
    assert_error(&basic, 401, "unauthorized");
    let says = basic.body["message"].as_str().unwrap_or_default();
    assert!(
        says.contains("must be `Bearer sk_…`"),
        "another scheme is named as such: {says}"
    );
    let unknown = setup
        .execute_as("sk_test_0000000000000000", "echo", "say", body.clone())
        .await;
    assert_error(&unknown, 401, "unauthorized");
    // Two keys in one request: which was meant is a guess, so neither acts. The same key in
    // both headers is one key.
    let twice = send(
        setup
            .client
            .post(&url)
            .header("authorization", format!("Bearer {}", setup.key))
            .header("authorization", "Bearer sk_test_another")
            .json(&body),
    )
    .await;
    assert_error(&twice, 401, "unauthorized");
    let both = |alias: &str| {
        setup
            .client
            .post(&url)
            .bearer_auth(&setup.key)
            .header("x-pica-secret", alias)
            .json(&body)
    };
    assert_error(&send(both("sk_test_another")).await, 401, "unauthorized");
    assert_eq!(send(both(&setup.key)).await.status, 200);

    // A key in use (so cached in memory) revoked by another process, the CLI: refused once the
    // bounded staleness of the credentials generation has passed.
    let revoked_key = setup.gateway.create_key("test", "*").await;
    let before = setup.execute_as(&revoked_key, "echo", "say", body.clone()).await;
    assert_eq!(before.status, 200, "{}", before.body);
    setup
        .gateway
        .cli(&["keys", "revoke", &revoked_key[..12]])
        .await
        .expect("revoke");
    tokio::time::sleep(sluice::vault::generation::CROSS_PROCESS_STALENESS).await;
    let revoked = setup.execute_as(&revoked_key, "echo", "say", body).await;
    assert_error(&revoked, 401, "api_key_revoked");
    assert_eq!(
        revoked.headers["www-authenticate"],
        "Bearer error=\"invalid_token\""
    );
    // The request log names the revoked key, so that its operator can tell who still uses it.
    let row = logged_row(&setup, &revoked).await;
    assert!(row.contains(&format!("key={}", &revoked_key[..12])), "{row}");
    // Calls that named no known key are counted, not kept: anyone may send them, and as rows
    // they would fill the disk. Rows are written in order, so the earlier ones are in by now.
    let unauthorized = setup
        .gateway
        .cli(&["logs", "--outcome", "unauthorized"])
        .await
        .expect("logs");
    assert_eq!(unauthorized.trim(), "", "no rows for keyless calls");
    let counted = r#"sluice_requests_total{integration="echo",endpoint="say",outcome="unauthorized"} 6"#;
    let metrics = setup.gateway.metrics().await;
    assert!(metrics.contains(counted), "missing `{counted}` in:\n{metrics}");
}

/// The request-log row of the call that got `answer`, once the log writer has written it.
async fn logged_row(setup: &Setup, answer: &Answer) -> String {
    let transaction = answer.headers["x-transaction-key"].to_str().expect("header");
    let started = std::time::Instant::now();
    loop {
        let listed = setup
            .gateway
            .cli(&["logs", "--transaction-key", transaction])
            .await
            .expect("logs");
        if !listed.trim().is_empty() {
            return listed;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "no row for {transaction}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Unknown integrations, endpoints and routes are 404 in the API's own shape; a wrong method is 405.
#[tokio::test(flavor = "multi_thread")]
async fn unknown_things_are_404() {
    let setup = Setup::new().await;
    let no_integration = setup.execute("nope", "say", json!({"params": {}})).await;
    assert_error(&no_integration, 404, "not_found");
    let no_endpoint = setup
        .execute("github", "delete_everything", json!({"params": {}}))
        .await;
    assert_error(&no_endpoint, 404, "not_found");
    // A name the caller made up is quoted back, but not at any length.
    let long_name = "x".repeat(20_000);
    let long = setup.execute("github", &long_name, json!({"params": {}})).await;
    assert_error(&long, 404, "not_found");
    assert!(
        long.body["message"].as_str().expect("message").len() < 600,
        "{:?}",
        long.body
    );
    // Nor kept at any length in the request log.
    let row = logged_row(&setup, &long).await;
    assert!(row.contains(&format!("github/{}…", &long_name[..128])), "{row}");
    assert!(row.len() < 600, "{row}");
    let no_route = send(setup.client.get(format!("{}/v2/nothing", setup.gateway.url))).await;
    assert_error(&no_route, 404, "not_found");
    let wrong_method = send(setup.client.put(format!("{}/v1/echo/say", setup.gateway.url))).await;
    assert_error(&wrong_method, 405, "method_not_allowed");
}

/// Malformed JSON, an empty body, missing or non-object params, and params of the wrong type
/// are 400; nothing reaches the upstream.
#[tokio::test(flavor = "multi_thread")]
async fn bad_bodies_and_params_are_400() {
    let setup = Setup::new().await;
    let url = format!("{}/v1/github/get_repo", setup.gateway.url);
    let raw = |body: &'static str| {
        setup
            .client
            .post(&url)
            .bearer_auth(&setup.key)
            .header("content-type", "application/json")
            .body(body)
    };
    assert_error(&send(raw("{not json")).await, 400, "bad_request");
    assert_error(&send(raw("")).await, 400, "bad_request");
    // What a call selects goes in its body: a query string would be ignored, and
    // `?identity=alice` run on the key owner's own connection.
    let queried = send(
        setup
            .client
            .post(format!("{url}?identity=alice"))
            .bearer_auth(&setup.key)
            .json(&json!({"params": {"owner": "acme", "repo": "webapp"}})),
    )
    .await;
    assert_error(&queried, 400, "bad_request");
    let says = queried.body["message"].as_str().unwrap_or_default();
    assert!(
        says.contains("`identity`") && says.contains("in the body"),
        "{says}"
    );
    // An empty selector is a mistake (a variable that was never set), as on `/mcp`.
    let empty = setup
        .execute(
            "github",
            "get_repo",
            json!({"params": {"owner": "acme", "repo": "webapp"}, "connection_key": ""}),
        )
        .await;
    assert_error(&empty, 400, "bad_request");
    // So is `null` (a serialiser's missing user id), though the key owner's own connection
    // exists and would serve a call that leaves the field out.
    for selector in ["identity", "connection_key", "connectionKey", "identity_type"] {
        let mut body = json!({"params": {"owner": "acme", "repo": "webapp"}});
        body[selector] = serde_json::Value::Null;
        let null = setup.execute("github", "get_repo", body).await;
        assert_error(&null, 400, "bad_request");
        let says = null.body["message"].as_str().unwrap_or_default();
        assert!(
            says.contains(&format!("`{selector}`")) && says.contains("null"),
            "{says}"
        );
    }
    assert!(setup.upstream_requests().is_empty(), "nothing ran");
    let array = send(raw("[1,2]")).await;
    assert_error(&array, 400, "bad_request");
    assert_eq!(array.body["message"], "request body must be a JSON object");
    // A lone UTF-16 surrogate is named as such, not as an escape cut short.
    let lone = send(raw(r#"{"params": {"owner": "\ud800", "repo": "x"}}"#)).await;
    assert_error(&lone, 400, "bad_request");
    let message = lone.body["message"].as_str().unwrap_or_default();
    assert!(message.contains("surrogate pair"), "{message}");
    assert_error(&send(raw(r#"{"paramz": {}}"#)).await, 400, "bad_request");
    assert_error(
        &send(raw(r#"{"params": "owner=acme"}"#)).await,
        400,
        "bad_request",
    );
    // A key given twice, at any depth: the schema would see the last value, a connector
    // reading the text may take the first.
    for twice in [
        r#"{"params": {"owner": "acme", "repo": "webapp", "repo": "../../admin"}}"#,
        r#"{"params": {"owner": "acme", "repo": "webapp", "extra": {"a": 1, "a": 2}}}"#,
    ] {
        let refused = send(raw(twice)).await;
        assert_error(&refused, 400, "bad_request");
        let message = refused.body["message"].as_str().unwrap_or_default();
        assert!(message.contains("is given twice"), "{twice}: {message}");
    }
    assert!(setup.upstream_requests().is_empty(), "nothing was sent");
    // A path segment that is not UTF-8: rejected before any handler runs, in the same shape.
    let not_utf8 = send(
        setup
            .client
            .post(format!("{}/v1/%FF/get_repo", setup.gateway.url))
            .bearer_auth(&setup.key)
            .body("{}"),
    )
    .await;
    assert_error(&not_utf8, 400, "bad_request");

    let wrong_type = setup
        .execute(
            "github",
            "get_repo",
            json!({"params": {"owner": 5, "repo": "webapp"}}),
        )
        .await;
    assert_error(&wrong_type, 400, "bad_request");
    // A dot segment would take the upstream path elsewhere: the caller's mistake, named.
    let dot_segment = setup
        .execute(
            "github",
            "get_repo",
            json!({"params": {"owner": "acme", "repo": ".."}}),
        )
        .await;
    assert_error(&dot_segment, 400, "bad_request");
    assert_eq!(
        dot_segment.body["details"][0]["pointer"], "/repo",
        "{:?}",
        dot_segment.body
    );
    let missing_field = setup
        .execute("github", "get_issue", json!({"params": {"owner": "acme"}}))
        .await;
    assert_error(&missing_field, 400, "bad_request");
    let message = missing_field.body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("issue_number") && message.contains("repo"),
        "{message}"
    );
    let details = missing_field.body["details"].as_array().expect("details");
    // Each missing field is pointed at where it belongs, not at the object that lacks it.
    let mut pointers: Vec<&str> = details.iter().filter_map(|d| d["pointer"].as_str()).collect();
    pointers.sort_unstable();
    assert_eq!(pointers, ["/issue_number", "/repo"], "{details:?}");
    // A number the connector could not take is refused by its schema, before it runs.
    let too_large = setup
        .execute(
            "github",
            "get_issue",
            json!({"params": {"owner": "acme", "repo": "webapp", "issue_number": 1e20}}),
        )
        .await;
    assert_error(&too_large, 400, "bad_request");
    assert_eq!(
        too_large.body["details"][0]["pointer"], "/issue_number",
        "{:?}",
        too_large.body
    );

    let several = setup
        .execute(
            "github",
            "list_issues",
            json!({"params": {"owner": "acme", "repo": "webapp", "state": "sideways", "per_page": 500, "extra": 1}}),
        )
        .await;
    assert_error(&several, 400, "bad_request");
    let pointers: Vec<&str> = several.body["details"]
        .as_array()
        .expect("details")
        .iter()
        .filter_map(|d| d["pointer"].as_str())
        .collect();
    for pointer in ["/state", "/per_page", "/"] {
        assert!(pointers.contains(&pointer), "{pointer} in {pointers:?}");
    }
    assert!(
        setup.upstream_requests().is_empty(),
        "nothing may be sent for bad params"
    );
    // A byte order mark before the object is ignored, as JSON parsers may.
    let with_bom = send(raw(
        "\u{feff}{\"params\": {\"owner\": \"acme\", \"repo\": \"webapp\"}}",
    ))
    .await;
    assert_eq!(
        (with_bom.status, &with_bom.body["status"]),
        (200, &json!(200)),
        "{:?}",
        with_bom.body
    );
}

/// Bodies over the limit are refused before they are read whole, and the answer says the
/// connection closes after it: a client that pools its connections gets every 413, from the
/// actions and from MCP, and its next call works.
#[tokio::test(flavor = "multi_thread")]
async fn oversized_body_is_413() {
    let setup = Setup::new().await;
    let huge = "x".repeat(2 << 20);
    for _ in 0..3 {
        let answer = setup
            .execute("echo", "say", json!({"params": {"blob": huge}}))
            .await;
        assert_error(&answer, 413, "payload_too_large");
        assert_eq!(answer.headers["connection"], "close");
        // The MCP endpoint answers in the same shape.
        let request = setup
            .client
            .post(format!("{}/mcp", setup.gateway.url))
            .bearer_auth(&setup.key)
            .body(huge.clone());
        let answer = send(request).await;
        assert_eq!(
            (answer.status, answer.code()),
            (413, "payload_too_large"),
            "{:?}",
            answer.body
        );
        assert_eq!(answer.headers["connection"], "close");
    }
    let after = setup.execute("echo", "say", json!({"params": {}})).await;
    assert_eq!(after.status, 200, "{:?}", after.body);
    let says = after_refusal_message(&setup, &huge).await;
    assert!(says.contains("--max-call-body-mib"), "{says}");
}

/// The message of the 413 a call with `blob` in its params gets.
async fn after_refusal_message(setup: &Setup, blob: &str) -> String {
    let answer = setup
        .execute("echo", "say", json!({"params": {"blob": blob}}))
        .await;
    assert_eq!(answer.code(), "payload_too_large", "{:?}", answer.body);
    answer.body["message"].as_str().unwrap_or_default().to_owned()
}

/// An operator whose actions take files raises the limit (`--max-call-body-mib`).
#[tokio::test(flavor = "multi_thread")]
async fn the_call_body_limit_is_the_operators_to_raise() {
    let setup = Setup::with_options(Options {
        extra_args: vec!["--max-call-body-mib".into(), "3".into()],
        ..Options::default()
    })
    .await;
    let blob = "x".repeat(2 << 20);
    let answer = setup
        .execute("echo", "say", json!({"params": {"blob": blob}}))
        .await;
    assert_eq!(answer.status, 200, "{:?}", answer.code());
    let says = after_refusal_message(&setup, &"x".repeat(3 << 20)).await;
    assert!(says.contains(&format!("larger than {} bytes", 3 << 20)), "{says}");
}

/// Any answer given before the body was read says the connection closes, not only a 413: a
/// passthrough call with a bad key or a call to no route, with a large body, and the pooled
/// client's next call works.
#[tokio::test(flavor = "multi_thread")]
async fn refusals_before_a_large_body_was_read_say_the_connection_closes() {
    let setup = Setup::new().await;
    let body = json!({"params": {"message": "x".repeat(1 << 20)}}).to_string();
    let refusals = [
        (
            format!("{}/v1/passthrough/anything", setup.gateway.url),
            "sk_wrong_key",
            401,
        ),
        (
            format!("{}/v2/echo/say", setup.gateway.url),
            setup.key.as_str(),
            404,
        ),
    ];
    for (url, key, status) in refusals {
        let request = setup
            .client
            .post(&url)
            .bearer_auth(key)
            .header("content-type", "application/json")
            .body(body.clone());
        let answer = send(request).await;
        assert_eq!(answer.status, status, "{url}: {:?}", answer.body);
        assert_eq!(answer.headers["connection"], "close", "{url}");
        let after = setup
            .execute("echo", "say", json!({"params": {"message": "hi"}}))
            .await;
        assert_eq!(after.status, 200, "{:?}", after.body);
        assert!(
            after
                .headers
                .get("connection")
                .is_none_or(|value| value != "close")
        );
    }
}

/// How a test client frames a request body.
#[derive(Debug, Clone, Copy)]
enum Framing {
    ContentLength,
    Chunked,
}

/// Send `head` (a request line and headers, without the blank line) with a body of `length`
/// bytes framed as `framing`, all of it before reading anything, then read the reply to the
/// end: what a simple client (Python's `http.client`, a shell script) does. Panics if the
/// connection is reset on the way.
async fn upload_then_read(address: &str, head: &str, length: usize, framing: Framing) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const CHUNK: usize = 64 << 10;
    let mut connection = tokio::net::TcpStream::connect(address).await.expect("connect");
    let chunk = vec![b'x'; CHUNK];
    let exchange = async {
        match framing {
            Framing::ContentLength => {
                let head = format!("{head}content-length: {length}\r\n\r\n");
                connection.write_all(head.as_bytes()).await?;
                for _ in 0..length / CHUNK {
                    connection.write_all(&chunk).await?;
                }
            }
            Framing::Chunked => {
                let head = format!("{head}transfer-encoding: chunked\r\n\r\n");
                connection.write_all(head.as_bytes()).await?;
                for _ in 0..length / CHUNK {
                    connection.write_all(format!("{CHUNK:x}\r\n").as_bytes()).await?;
                    connection.write_all(&chunk).await?;
                    connection.write_all(b"\r\n").await?;
                }
                connection.write_all(b"0\r\n\r\n").await?;
            }
        }
        let mut reply = Vec::new();
        connection.read_to_end(&mut reply).await?;
        std::io::Result::Ok(reply)
    };
    let reply = tokio::time::timeout(crate::common::REQUEST_TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| panic!("{head}: no reply in time"))
        .unwrap_or_else(|error| panic!("{head}: {error}"));
    String::from_utf8_lossy(&reply).into_owned()
}

/// A client that sends a whole oversized body before it reads the reply — with a
/// `content-length` (refused before the body is read) or chunked (refused part-way) — gets the
/// whole `413 payload_too_large` every time, from the action, MCP, vault and passthrough
/// routes alike: the gateway reads and discards the rest of the body before it closes the
/// connection (a lingering close) instead of resetting it under the unread bytes.
#[tokio::test(flavor = "multi_thread")]
async fn an_oversized_body_sent_whole_before_reading_still_gets_its_413() {
    let setup = Setup::with_options(sluice_fixtures::gateway::Options {
        extra_args: vec!["--max-passthrough-body-mib".into(), "1".into()],
        ..Default::default()
    })
    .await;
    let address = setup.gateway.url.trim_start_matches("http://").to_owned();
    let key = &setup.key;
    let heads = [
        format!("POST /v1/echo/say HTTP/1.1\r\nhost: {address}\r\nauthorization: Bearer {key}\r\n"),
        format!("POST /mcp HTTP/1.1\r\nhost: {address}\r\nauthorization: Bearer {key}\r\n"),
        format!("POST /v1/vault/connections HTTP/1.1\r\nhost: {address}\r\nauthorization: Bearer {key}\r\n"),
        format!(
            "PUT /v1/passthrough/upload HTTP/1.1\r\nhost: {address}\r\nauthorization: Bearer {key}\r\n\
             x-sluice-connection-key: {}\r\n",
            setup.connection_key
        ),
    ];
    for head in &heads {
        for framing in [Framing::ContentLength, Framing::Chunked] {
            let reply = upload_then_read(&address, head, 16 << 20, framing).await;
            let context = format!("{head} {framing:?}");
            assert!(reply.starts_with("HTTP/1.1 413 "), "{context}: {reply}");
            assert!(reply.contains("\r\nconnection: close\r\n"), "{context}: {reply}");
            let (_, body) = reply.split_once("\r\n\r\n").unwrap_or_default();
            let body: serde_json::Value =
                serde_json::from_str(body).unwrap_or_else(|error| panic!("{context}: {error}: {reply}"));
            assert_eq!(body["error"], "payload_too_large", "{context}: {reply}");
        }
    }
}

/// A client that stops sending its request body part-way gets `408 request_timeout` once it
/// has sent nothing for the idle timeout (an action's JSON body, and a passthrough body on its
/// way upstream), and a client that sends nothing at all is disconnected: neither holds a
/// connection for good.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_stops_sending_is_answered_408_or_disconnected() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let setup = Setup::with_options(sluice_fixtures::gateway::Options {
        extra_args: vec!["--idle-timeout-ms".into(), "500".into()],
        ..Default::default()
    })
    .await;
    let address = setup.gateway.url.trim_start_matches("http://").to_owned();
    let partial_requests = [
        format!("POST /v1/echo/say HTTP/1.1\r\nhost: {address}\r\n"),
        format!(
            "POST /v1/passthrough/repos/acme/webapp/issues HTTP/1.1\r\nhost: {address}\r\n\
             x-sluice-connection-key: {}\r\n",
            setup.connection_key
        ),
    ];
    for head in partial_requests {
        let mut connection = tokio::net::TcpStream::connect(&address).await.expect("connect");
        connection
            .write_all(
                format!(
                    "{head}authorization: Bearer {}\r\ncontent-type: application/json\r\n\
                     content-length: 100\r\n\r\n{{\"params\": ",
                    setup.key
                )
                .as_bytes(),
            )
            .await
            .expect("write");
        let mut reply = String::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            connection.read_to_string(&mut reply),
        )
        .await
        .expect("answered and closed within 10 s")
        .expect("read");
        assert!(reply.starts_with("HTTP/1.1 408"), "{head}: {reply}");
        assert!(reply.contains(r#""error":"request_timeout""#), "{head}: {reply}");
    }

    let mut silent = tokio::net::TcpStream::connect(&address).await.expect("connect");
    let mut nothing = Vec::new();
    let closed = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        silent.read_to_end(&mut nothing),
    )
    .await;
    assert!(
        closed.is_ok(),
        "a connection that never sent a byte was still open after 10 s"
    );

    // A client that sends a byte of its body every 100 ms never pauses for the idle timeout
    // (500 ms: wide enough for a scheduling stall on a loaded machine),
    // but that is far below the least rate a body must arrive at: answered 408 all the same.
    let mut trickling = tokio::net::TcpStream::connect(&address).await.expect("connect");
    let head = format!(
        "POST /v1/echo/say HTTP/1.1\r\nhost: {address}\r\nauthorization: Bearer {}\r\n\
         content-type: application/json\r\ncontent-length: 1000\r\n\r\n",
        setup.key
    );
    trickling.write_all(head.as_bytes()).await.expect("write");
    let started = std::time::Instant::now();
    let (mut reader, mut writer) = trickling.into_split();
    let trickle = tokio::spawn(async move {
        while writer.write_all(b" ").await.is_ok() && started.elapsed() < std::time::Duration::from_secs(10) {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    });
    let mut reply = String::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        reader.read_to_string(&mut reply),
    )
    .await
    .expect("answered within 10 s")
    .expect("read");
    trickle.abort();
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(reply.contains("too slowly"), "{reply}");
}

/// A request whose API key is missing or wrong is refused before its body is read: a caller
/// without a key cannot hold a connection by trickling a body in (its answer waited for the
/// whole body, and the idle timeout only bounds the pauses between bytes). The same for a
/// connect form posted to a link that is no live session's.
#[tokio::test(flavor = "multi_thread")]
async fn a_request_without_a_valid_key_is_refused_before_its_body() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let setup = Setup::new().await;
    let address = setup.gateway.url.trim_start_matches("http://").to_owned();
    let wrong_key = "authorization: Bearer sk_test_wrong\r\n";
    let cases = [
        ("POST /v1/echo/say", "", "401"),
        ("POST /v1/echo/say", wrong_key, "401"),
        ("POST /mcp", "", "401"),
        ("POST /mcp", wrong_key, "401"),
        ("POST /v1/connect", wrong_key, "401"),
        ("POST /connect/cst_0123456789abcdef", "", "404"),
    ];
    for (route, authorization, status) in cases {
        let mut connection = tokio::net::TcpStream::connect(&address).await.expect("connect");
        connection
            .write_all(
                format!(
                    "{route} HTTP/1.1\r\nhost: {address}\r\n{authorization}content-type: application/json\r\n\
                     content-length: 1000000\r\n\r\n{{"
                )
                .as_bytes(),
            )
            .await
            .expect("write");
        let mut reply = String::new();
        // Well within the 30 s idle timeout a trickling client would be held to.
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            connection.read_to_string(&mut reply),
        )
        .await
        .unwrap_or_else(|_| panic!("{route} {authorization:?}: not answered and closed within 5 s"))
        .expect("read");
        assert!(
            reply.starts_with(&format!("HTTP/1.1 {status}")),
            "{route}: {reply}"
        );
    }
}

/// An upstream that cannot be reached is `502 upstream_unreachable` with a fixed message; the
/// cause (here: connection refused) is in the gateway's log under the transaction key.
#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_upstream_is_502_and_its_cause_is_logged() {
    let setup = Setup::new().await;
    // Port 1 on loopback: nothing listens there, so the connection is refused at once.
    let closed = setup
        .gateway
        .add_connection(
            "github",
            "ghp_closedPORTtoken1",
            &["--identity", "ivy", "--base-url", "http://127.0.0.1:1"],
        )
        .await;
    let answer = setup
        .execute(
            "github",
            "get_repo",
            json!({"params": {"owner": "acme", "repo": "webapp"}, "connection_key": closed}),
        )
        .await;
    assert_error(&answer, 502, "upstream_unreachable");
    let transaction = answer.headers["x-transaction-key"]
        .to_str()
        .expect("key")
        .to_owned();
    let logged = setup
        .gateway
        .output_with_line(&[&transaction, "upstream exchange failed"])
        .await;
    let line = logged
        .lines()
        .find(|line| line.contains(&transaction) && line.contains("upstream exchange failed"))
        .unwrap_or_else(|| panic!("no log line for {transaction}:\n{logged}"));
    assert!(line.to_lowercase().contains("refused"), "{line}");
}

/// A key scoped to other integrations gets 403 scope_not_allowed.
#[tokio::test(flavor = "multi_thread")]
async fn key_outside_its_scope_is_403() {
    let setup = Setup::new().await;
    let slack_only = setup.gateway.create_key("test", "slack").await;
    let answer = setup
        .execute_as(
            &slack_only,
            "github",
            "get_repo",
            json!({"params": {"owner": "acme", "repo": "webapp"}}),
        )
        .await;
    assert_error(&answer, 403, "scope_not_allowed");
    assert!(setup.upstream_requests().is_empty());
}

/// Without a connection in the caller's environment the reply says how to connect.
#[tokio::test(flavor = "multi_thread")]
async fn missing_connection_is_403_with_action_url() {
    let setup = Setup::new().await;
    // The only GitHub connection is a test one: a live key must not reach it.
    let live = setup.gateway.create_key("live", "*").await;
    let get_repo_live = |body| setup.execute_as(&live, "github", "get_repo", body);
    let answer = get_repo_live(json!({"params": {"owner": "acme", "repo": "webapp"}})).await;
    assert_error(&answer, 403, "integration_not_connected");
    let action_url = answer.body["action_url"].as_str().expect("action_url");
    assert!(
        action_url.starts_with(&format!("{}/connect/cst_", setup.gateway.url)),
        "{action_url}"
    );
    // The link opens a connect page for the live environment's GitHub.
    let page = reqwest::get(action_url).await.expect("connect page");
    assert_eq!(page.status(), 200);
    assert!(page.text().await.expect("html").contains("Connect GitHub"));
    // The app polls the link's session to learn when the user is done, then calls again.
    let session = answer.body["connect_session_id"]
        .as_str()
        .expect("connect_session_id");
    let status = setup
        .api_as(
            &live,
            reqwest::Method::GET,
            &format!("/v1/connect/{session}"),
            None,
        )
        .await;
    assert_eq!(
        (status.status, &status.body["status"], &status.body["integration"]),
        (200, &json!("pending"), &json!("github")),
        "{:?}",
        status.body
    );
    assert_eq!(
        answer.body["message"], "no github connection: connect an account first",
        "{:?}",
        answer.body
    );
    // A retry is given the same link (one for the user to follow, not one per call); another
    // identity gets its own.
    let again = get_repo_live(json!({"params": {"owner": "acme", "repo": "other"}})).await;
    assert_error(&again, 403, "integration_not_connected");
    assert_eq!(
        (&again.body["action_url"], &again.body["connect_session_id"]),
        (&answer.body["action_url"], &answer.body["connect_session_id"]),
    );
    let for_carol =
        get_repo_live(json!({"params": {"owner": "acme", "repo": "webapp"}, "identity": "carol"})).await;
    assert_error(&for_carol, 403, "integration_not_connected");
    assert_ne!(for_carol.body["action_url"], answer.body["action_url"]);
    assert_ne!(
        for_carol.body["connect_session_id"],
        answer.body["connect_session_id"]
    );
    // An identity without a connection is named, so the caller knows whose account is missing.
    let for_bob = setup
        .execute(
            "github",
            "get_repo",
            json!({"params": {"owner": "acme", "repo": "webapp"}, "identity": "bob"}),
        )
        .await;
    assert_error(&for_bob, 403, "integration_not_connected");
    assert_eq!(
        for_bob.body["message"], "no github connection for identity `bob`: connect an account first",
        "{:?}",
        for_bob.body
    );

    let unknown_key = setup
        .execute(
            "github",
            "get_repo",
            json!({"params": {"owner": "acme", "repo": "webapp"}, "connection_key": "test::github::default::nope"}),
        )
        .await;
    // A connection key that names nothing is the caller's mistake: no connect link for it.
    assert_error(&unknown_key, 404, "not_found");
    assert!(
        unknown_key.body.get("action_url").is_none(),
        "{:?}",
        unknown_key.body
    );
    assert!(setup.upstream_requests().is_empty());
}
