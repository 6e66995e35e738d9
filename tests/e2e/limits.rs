//! Per-key quotas and rate limits, exact under concurrency.

use crate::common::Setup;
use reqwest::Method;
use serde_json::json;
use sluice_fixtures::gateway::{Options, TEST_ADMIN_KEY};

/// 200 concurrent calls against a daily quota of 100: exactly 100 succeed, the rest are
/// refused with `daily_limit_reached` and a `Retry-After` until UTC midnight.
#[tokio::test(flavor = "multi_thread")]
async fn daily_quota_is_exact_under_concurrency() {
    // Room for all 200 at once: only the quota may refuse a call here.
    let setup = Setup::with_options(Options {
        extra_args: vec!["--max-in-flight-per-connector".into(), "256".into()],
        ..Options::default()
    })
    .await;
    let key = setup
        .gateway
        .create_key_with("test", "*", &["--daily-quota", "100"])
        .await;
    let calls = (0..200).map(|i| setup.execute_as(&key, "echo", "say", json!({"params": {"i": i}})));
    let answers = futures::future::join_all(calls).await;
    let ok = answers.iter().filter(|a| a.status == 200).count();
    let refused: Vec<_> = answers.iter().filter(|a| a.status == 429).collect();
    assert_eq!(ok, 100);
    assert_eq!(refused.len(), 100);
    for answer in refused {
        assert_eq!(answer.code(), "daily_limit_reached");
        let retry_after: i64 = answer.headers["retry-after"]
            .to_str()
            .expect("ascii")
            .parse()
            .expect("seconds");
        assert!((1..=86_400).contains(&retry_after), "{retry_after}");
    }
}

/// `echo/say` with `key`.
async fn say(setup: &Setup, key: &str) -> crate::common::Answer {
    setup.execute_as(key, "echo", "say", json!({"params": {}})).await
}

/// The quota survives a restart: calls already made today still count. Calls to actions that do
/// not exist or that the key may not use count neither before nor after.
#[tokio::test(flavor = "multi_thread")]
async fn daily_quota_survives_a_restart() {
    let setup = Setup::new().await;
    let key = setup
        .gateway
        .create_key_with("test", "echo,hostile", &["--daily-quota", "5"])
        .await;
    for _ in 0..2 {
        assert_eq!(say(&setup, &key).await.status, 200);
    }
    for (integration, endpoint, code) in [
        ("echo", "nope", "not_found"),
        ("nope", "say", "not_found"),
        ("github", "get_repo", "scope_not_allowed"),
        ("github", "get_repo", "scope_not_allowed"),
    ] {
        let refused = setup
            .execute_as(&key, integration, endpoint, json!({"params": {}}))
            .await;
        assert_eq!(refused.code(), code, "{integration}/{endpoint}");
    }
    // Nor do passthrough calls on a connection out of the key's scope, on none, or naming none.
    for (connection, code) in [
        (Some(setup.connection_key.as_str()), "scope_not_allowed"),
        (Some("test::github::default::nope"), "not_found"),
        (None, "bad_request"),
    ] {
        let call = setup
            .client
            .get(format!("{}/v1/passthrough/repos/acme/webapp", setup.gateway.url))
            .bearer_auth(&key);
        let call = match connection {
            Some(connection) => call.header("x-sluice-connection-key", connection),
            None => call,
        };
        let refused = crate::common::send(call).await;
        assert_eq!(refused.code(), code, "{:?}", refused.body);
    }
    // A malformed Idempotency-Key is refused before the limits: not counted either.
    for _ in 0..2 {
        let malformed = crate::common::send(
            setup
                .client
                .post(format!("{}/v1/echo/say", setup.gateway.url))
                .bearer_auth(&key)
                .header("idempotency-key", "k".repeat(300))
                .json(&json!({"params": {}})),
        )
        .await;
        assert_eq!(malformed.code(), "bad_request", "{:?}", malformed.body);
    }
    // A call naming a connection that does not exist got through the limits first: counted.
    let no_such_connection = setup
        .execute_as(
            &key,
            "hostile",
            "call",
            json!({"params": {"url": "/text"}, "connection_key": "test::hostile::default::nope"}),
        )
        .await;
    assert_eq!(
        no_such_connection.code(),
        "not_found",
        "{:?}",
        no_such_connection.body
    );
    // The fourth call of the day is still allowed: none of the refusals counted...
    assert_eq!(say(&setup, &key).await.status, 200);
    // SIGTERM flushes nothing special: the batched log writer has had its 100 ms.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let mut setup = setup;
    setup.gateway.restart().await;
    // ...nor do they after a restart, which counts the four calls made: one more is allowed.
    assert_eq!(say(&setup, &key).await.status, 200);
    let over = say(&setup, &key).await;
    assert_eq!((over.status, over.code()), (429, "daily_limit_reached"));
}

/// A per-minute limit reports its window in `X-RateLimit-*` headers and refuses with `rate_limited`.
#[tokio::test(flavor = "multi_thread")]
async fn per_minute_limit_reports_its_window() {
    let setup = Setup::new().await;
    let key = setup
        .gateway
        .create_key_with("test", "*", &["--per-minute", "3"])
        .await;
    // Keep all four calls inside one clock minute.
    let second = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        % 60;
    if second > 50 {
        tokio::time::sleep(std::time::Duration::from_secs(61 - second)).await;
    }
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let answer = setup.execute_as(&key, "echo", "say", json!({"params": {}})).await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.headers["x-ratelimit-limit"], "3");
        remaining.push(
            answer.headers["x-ratelimit-remaining"]
                .to_str()
                .expect("ascii")
                .to_owned(),
        );
    }
    assert_eq!(remaining, ["2", "1", "0"]);
    let over = setup.execute_as(&key, "echo", "say", json!({"params": {}})).await;
    assert_eq!((over.status, over.code()), (429, "rate_limited"));
    assert_eq!(over.headers["x-ratelimit-remaining"], "0");
    let retry_after: u64 = over.headers["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry_after));
}

/// Keys made through the admin API with an expiry stop working once it passes.
#[tokio::test(flavor = "multi_thread")]
async fn expired_key_is_api_key_expired() {
    let setup = Setup::with_options(Options {
        admin_api: true,
        ..Options::default()
    })
    .await;
    let since_epoch = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
    };
    // At least five seconds to create and use the key on a busy machine.
    let expiry = since_epoch().as_secs() + 6;
    let created = setup
        .api_as(
            TEST_ADMIN_KEY,
            Method::POST,
            "/v1/admin/keys",
            Some(json!({"expiresAt": expiry})),
        )
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let key = created.body["key"].as_str().expect("key shown once").to_owned();
    assert_eq!(
        setup
            .execute_as(&key, "echo", "say", json!({"params": {}}))
            .await
            .status,
        200
    );
    let past_expiry = std::time::Duration::from_secs(expiry) + std::time::Duration::from_millis(100);
    tokio::time::sleep(past_expiry.saturating_sub(since_epoch())).await;
    let expired = setup.execute_as(&key, "echo", "say", json!({"params": {}})).await;
    assert_eq!((expired.status, expired.code()), (401, "api_key_expired"));
}

/// A key holds at most its share of calls in flight (the gateway's `--max-in-flight-per-key`,
/// or the key's own cap): one over it is refused at once with `key_busy`, actions and
/// passthrough alike, while other keys keep calling; ended calls free their places.
#[tokio::test(flavor = "multi_thread")]
async fn a_key_over_its_calls_in_flight_is_busy_and_others_are_not() {
    let setup = Setup::with_options(Options {
        extra_args: vec!["--max-in-flight-per-key".into(), "2".into()],
        ..Options::default()
    })
    .await;
    let roomy = setup
        .gateway
        .create_key_with("test", "*", &["--max-in-flight", "3"])
        .await;
    let slow = json!({"params": {"owner": "acme", "repo": "slow"}});
    let slow_calls =
        futures::future::join_all((0..2).map(|_| setup.execute("github", "get_repo", slow.clone())));
    let meanwhile = async {
        // Both slow calls have reached the upstream, which holds them for 1.5 s.
        let reached = || {
            setup
                .upstream_requests()
                .iter()
                .filter(|request| request.path == "/repos/acme/slow")
                .count()
        };
        while reached() < 2 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let busy = setup.get_repo().await;
        let passthrough = setup.passthrough_get("/repos/acme/webapp").await;
        let other_key = setup.execute_as(&roomy, "github", "get_repo", slow.clone()).await;
        (busy, passthrough, other_key)
    };
    let (slow_answers, (busy, passthrough, other_key)) = tokio::join!(slow_calls, meanwhile);
    for answer in &slow_answers {
        assert_eq!(answer.body["status"], 200, "{:?}", answer.body);
    }
    assert_eq!((busy.status, busy.code()), (429, "key_busy"), "{:?}", busy.body);
    assert_eq!(busy.headers["retry-after"], "1");
    assert!(
        busy.body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("2 calls in flight"),
        "{:?}",
        busy.body
    );
    assert_eq!((passthrough.status, passthrough.code()), (429, "key_busy"));
    assert_eq!(
        other_key.body["status"], 200,
        "another key has places of its own: {:?}",
        other_key.body
    );
    assert_eq!(
        setup.get_repo().await.body["status"],
        200,
        "the slow calls have ended"
    );
    for endpoint in ["get_repo", "passthrough"] {
        let row = setup
            .log_row_where(&format!("outcome=key_busy&endpoint={endpoint}"))
            .await;
        assert!(row.is_some(), "a key_busy row for {endpoint}");
    }
}
