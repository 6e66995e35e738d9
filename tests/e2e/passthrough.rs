//! Passthrough: raw calls to a connection's platform with the credential injected by the host.

use crate::common::{SECRET, Setup, send};
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
    assert!(
        sent.header("x-sluice-connection-key").is_none(),
        "gateway headers stay at the gateway"
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
        .expect("passthrough")
        .text()
        .await
        .expect("body");
    assert!(
        !echoed.contains(SECRET) && echoed.contains("[REDACTED]"),
        "{echoed}"
    );
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
    let double_slash = send(
        setup
            .client
            .get(format!("{}/v1/passthrough//evil.example/x", setup.gateway.url))
            .bearer_auth(&setup.key)
            .header("x-sluice-connection-key", &setup.connection_key),
    )
    .await;
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
    let mut connection = tokio::net::TcpStream::connect(&address).await.expect("connect");
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    connection
        .write_all(
            format!(
                "GET /v1/passthrough/%2e%2e/%2E%2E/admin HTTP/1.1\r\nhost: {address}\r\n\
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
    assert!(reply.starts_with("HTTP/1.1 403"), "{reply}");
    assert!(reply.contains(r#""error":"egress_denied""#), "{reply}");
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
