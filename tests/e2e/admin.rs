//! The admin API for keys, and the request log.

use crate::common::Setup;
use reqwest::Method;
use serde_json::{Value, json};
use sluice_fixtures::gateway::{Options, TEST_ADMIN_KEY};

/// Without an admin key configured the admin API does not exist.
#[tokio::test(flavor = "multi_thread")]
async fn admin_api_is_off_without_an_admin_key() {
    let setup = Setup::new().await;
    let answer = setup
        .api_as(TEST_ADMIN_KEY, Method::GET, "/v1/admin/keys", None)
        .await;
    assert_eq!((answer.status, answer.code()), (404, "not_found"));
}

/// Keys are created (shown once), listed without their secret part, and revoked.
#[tokio::test(flavor = "multi_thread")]
async fn admin_creates_lists_and_revokes_keys() {
    let setup = Setup::with_options(Options {
        admin_api: true,
        ..Options::default()
    })
    .await;
    let wrong = setup
        .api_as("not-the-admin-key", Method::GET, "/v1/admin/keys", None)
        .await;
    assert_eq!((wrong.status, wrong.code()), (401, "unauthorized"));
    let caller_key = setup.api(Method::GET, "/v1/admin/keys", None).await;
    assert_eq!(
        caller_key.code(),
        "unauthorized",
        "an API key is not an admin key"
    );

    let created = setup
        .api_as(
            TEST_ADMIN_KEY,
            Method::POST,
            "/v1/admin/keys",
            Some(
                json!({"environment": "live", "scope": "github", "name": "ci", "dailyQuota": 10,
                        "maxInFlight": 4, "expiresAt": "2099-01-31T12:00:00Z"}),
            ),
        )
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let key = created.body["key"].as_str().expect("key").to_owned();
    assert!(key.starts_with("sk_live_"));
    assert_eq!(created.body["scope"], "github");
    assert_eq!(created.body["name"], "ci");
    assert_eq!(created.body["dailyQuota"], 10);
    assert_eq!(created.body["maxInFlight"], 4);
    assert!(created.body.get("warnings").is_none(), "{:?}", created.body);
    // A scope naming no installed connector (a typo) makes the key, with a warning.
    let typo = setup
        .api_as(
            TEST_ADMIN_KEY,
            Method::POST,
            "/v1/admin/keys",
            Some(json!({"scope": "github,gihtub"})),
        )
        .await;
    assert_eq!(typo.status, 201, "{:?}", typo.body);
    assert_eq!(
        typo.body["warnings"],
        json!([
            "no connector `gihtub` is installed on this gateway: check the scope for a typo (the key \
                was created all the same)"
        ]),
    );
    // A blank name is no name.
    let unnamed = setup
        .api_as(
            TEST_ADMIN_KEY,
            Method::POST,
            "/v1/admin/keys",
            Some(json!({"name": "  "})),
        )
        .await;
    assert_eq!(
        (unnamed.status, &unnamed.body["name"]),
        (201, &Value::Null),
        "{:?}",
        unnamed.body
    );
    // Times read as every other route gives them: RFC 3339 in UTC.
    assert_eq!(created.body["expiresAt"], "2099-01-31T12:00:00Z");
    assert_eq!(created.body["revokedAt"], Value::Null);
    let created_at = created.body["createdAt"].as_str().unwrap_or_default();
    assert!(
        created_at.len() == 20 && created_at.starts_with("20") && created_at.ends_with('Z'),
        "{created_at}"
    );

    let listed = setup
        .api_as(TEST_ADMIN_KEY, Method::GET, "/v1/admin/keys", None)
        .await;
    assert!(
        !listed.body.to_string().contains(&key),
        "listing never shows a full key"
    );
    let row = listed.body["rows"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["id"] == created.body["id"]))
        .expect("the new key is listed")
        .clone();
    assert_eq!(row["status"], "active");

    let id = created.body["id"].to_string();
    let revoked = setup
        .api_as(
            TEST_ADMIN_KEY,
            Method::DELETE,
            &format!("/v1/admin/keys/{id}"),
            None,
        )
        .await;
    assert_eq!(revoked.body["status"], "revoked");
    assert_eq!(
        revoked.body["id"], created.body["id"],
        "the key's id, a number as listed"
    );
    let refused = setup
        .execute_as(&key, "github", "get_repo", json!({"params": {}}))
        .await;
    assert_eq!((refused.status, refused.code()), (401, "api_key_revoked"));

    for bad in [
        json!({"environment": "prod"}),
        json!({"scope": ""}),
        json!({"expiresAt": 1}),
        json!({"expiresAt": "2020-01-01T00:00:00Z"}),
        json!({"expiresAt": "next tuesday"}),
        json!({"expiresAt": "2099-01-31T12:00:00+02:00"}),
        json!({"expiresAt": true}),
        json!({"expiresAt": 253_402_300_800_i64}),
        json!({"colour": 1}),
        json!({"scope": "GitHub"}),
        json!({"scope": "github,Git Hub!!"}),
        json!({"dailyQuota": 0}),
        json!({"perMinuteLimit": 0}),
        json!({"maxInFlight": 0}),
        json!({"maxInFlight": -1}),
        json!({"name": "x".repeat(201)}),
        json!({"name": "line\nbreak"}),
    ] {
        let answer = setup
            .api_as(TEST_ADMIN_KEY, Method::POST, "/v1/admin/keys", Some(bad.clone()))
            .await;
        assert_eq!((answer.status, answer.code()), (400, "bad_request"), "{bad}");
    }
    let missing = setup
        .api_as(TEST_ADMIN_KEY, Method::DELETE, "/v1/admin/keys/99999", None)
        .await;
    assert_eq!(missing.code(), "not_found");
}

/// Every execute call leaves a log row — transaction key, outcome, statuses — and no params.
#[tokio::test(flavor = "multi_thread")]
async fn execute_calls_are_logged_without_params() {
    let setup = Setup::new().await;
    let ok = setup.get_repo().await;
    let tx = ok.headers["x-transaction-key"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let failed = setup
        .execute(
            "github",
            "nope",
            json!({"params": {"owner": "very-private-value"}}),
        )
        .await;
    assert_eq!(failed.code(), "not_found");

    let mut rows = serde_json::Value::Null;
    let deadline = tokio::time::Instant::now() + crate::common::BACKGROUND_WORK;
    while tokio::time::Instant::now() < deadline {
        let answer = setup.api(Method::GET, "/v1/logs?integration=github", None).await;
        if answer.body["total"].as_i64().unwrap_or(0) >= 2 {
            rows = answer.body["rows"].clone();
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let rows = rows.as_array().expect("two log rows appear");
    // A filter takes a comma-separated list, as the vault API's do.
    let endpoints_of = |answer: &crate::common::Answer| -> Vec<String> {
        let mut endpoints: Vec<String> = answer.body["rows"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|row| row["endpoint"].as_str().map(str::to_owned))
            .collect();
        endpoints.sort();
        endpoints
    };
    let both = setup
        .api(
            Method::GET,
            "/v1/logs?integration=echo,github&endpoint=nope,get_repo",
            None,
        )
        .await;
    assert_eq!(endpoints_of(&both), ["get_repo", "nope"], "{:?}", both.body);
    let one = setup.api(Method::GET, "/v1/logs?endpoint=get_repo", None).await;
    assert_eq!(endpoints_of(&one), ["get_repo"], "{:?}", one.body);
    let misspelt = setup.api(Method::GET, "/v1/logs?integraton=github", None).await;
    assert_eq!((misspelt.status, misspelt.code()), (400, "bad_request"));
    let message = misspelt.body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("`integraton`") && message.contains("integration"),
        "{message}"
    );
    // Given twice, a filter is refused rather than one of the two guessed.
    let twice = setup
        .api(Method::GET, "/v1/logs?integration=github&integration=echo", None)
        .await;
    assert_eq!((twice.status, twice.code()), (400, "bad_request"));
    assert!(
        twice.body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("`integration`")
    );
    let row = rows
        .iter()
        .find(|r| r["transactionKey"] == json!(tx))
        .expect("row of the ok call");
    assert_eq!(row["outcome"], "ok");
    assert_eq!(row["httpStatus"], 200);
    assert_eq!(row["upstreamStatus"], 200);
    assert_eq!(row["endpoint"], "get_repo");
    assert!(
        row["connectionKey"]
            .as_str()
            .is_some_and(|k| k.starts_with("test::github::"))
    );
    assert!(
        rows.iter()
            .any(|r| r["outcome"] == "not_found" && r["httpStatus"] == 404)
    );
    let by_tx = setup
        .api(Method::GET, &format!("/v1/logs?transactionKey={tx}"), None)
        .await;
    assert_eq!(by_tx.body["total"], 1);
    // A row's time in both shapes, agreeing; `since` takes either.
    let created_at_ms = row["createdAtMs"].as_i64().expect("createdAtMs");
    let created_at = row["createdAt"].as_str().expect("createdAt").to_owned();
    assert!(
        created_at.ends_with('Z') && created_at.contains('.'),
        "{created_at}"
    );
    for since in [created_at_ms.to_string(), created_at.clone()] {
        let from = setup
            .api(
                Method::GET,
                &format!("/v1/logs?transactionKey={tx}&since={since}"),
                None,
            )
            .await;
        assert_eq!(from.body["total"], 1, "since={since}: {:?}", from.body);
    }
    let later = setup
        .api(
            Method::GET,
            &format!("/v1/logs?transactionKey={tx}&since={}", created_at_ms + 1),
            None,
        )
        .await;
    assert_eq!(later.body["total"], 0, "`since` is a lower bound");
    // Paging by `before` (the last row's `id`) is not shifted by calls logged meanwhile.
    let newest = setup
        .api(Method::GET, "/v1/logs?integration=github&limit=1", None)
        .await;
    let newest_id = newest.body["rows"][0]["id"].as_i64().expect("a row id");
    let next_page = |before: i64| {
        let path = format!("/v1/logs?integration=github&limit=1&before={before}");
        let setup = &setup;
        async move { setup.api(Method::GET, &path, None).await }
    };
    let second = next_page(newest_id).await;
    let older = second.body["rows"][0].clone();
    assert!(older["id"].as_i64().expect("id") < newest_id, "{:?}", second.body);
    let again = setup.get_repo().await;
    let again = again.headers["x-transaction-key"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(setup.log_row(&again).await.is_some(), "the new call is logged");
    assert_eq!(
        next_page(newest_id).await.body["rows"][0],
        older,
        "the same page after a new call"
    );
    // Calls the upstream answered by status or class; the gateway's own refusals have none.
    let by_upstream = |filter: &str| {
        let path = format!("/v1/logs?integration=github&upstreamStatus={filter}&limit=100");
        let setup = &setup;
        async move { setup.api(Method::GET, &path, None).await }
    };
    let succeeded = by_upstream("2xx").await;
    assert!(
        succeeded.body["total"].as_i64().unwrap_or(0) >= 2,
        "{:?}",
        succeeded.body
    );
    assert!(
        succeeded.body["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .all(|row| row["upstreamStatus"] == 200)
    );
    assert_eq!(by_upstream("200").await.body["total"], succeeded.body["total"]);
    assert_eq!(by_upstream("5xx").await.body["total"], 0);
    for bad in ["upstreamStatus=6xx", "upstreamStatus=20", "before=0", "before=x"] {
        let refused = setup.api(Method::GET, &format!("/v1/logs?{bad}"), None).await;
        assert_eq!((refused.status, refused.code()), (400, "bad_request"), "{bad}");
    }
    // A misspelt outcome is refused, naming the ones that exist, rather than matching nothing.
    let by_outcome = setup.api(Method::GET, "/v1/logs?outcome=not_found", None).await;
    assert_eq!(by_outcome.body["total"], 1, "{:?}", by_outcome.body);
    // Unix seconds where milliseconds belong would match every row: refused, saying so.
    for bad in ["outcome=notfound", "since=yesterday", "since=1764500000"] {
        let refused = setup.api(Method::GET, &format!("/v1/logs?{bad}"), None).await;
        assert_eq!((refused.status, refused.code()), (400, "bad_request"), "{bad}");
    }
    let seconds = setup.api(Method::GET, "/v1/logs?since=1764500000", None).await;
    let message = seconds.body["message"].as_str().unwrap_or_default();
    assert!(message.contains("looks like seconds"), "{message}");
    let unknown = setup.api(Method::GET, "/v1/logs?outcome=notfound", None).await;
    let message = unknown.body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("`notfound`") && message.contains("client_closed"),
        "{message}"
    );
    let all = setup
        .api(Method::GET, "/v1/logs?limit=100", None)
        .await
        .body
        .to_string();
    assert!(!all.contains("very-private-value"), "params are not logged");
    let live = setup.gateway.create_key("live", "*").await;
    let other_env = setup.api_as(&live, Method::GET, "/v1/logs", None).await;
    assert_eq!(other_env.body["total"], 0, "logs are per environment");
    // A test connection named with a live key is not found, and the answer says why (the
    // key's own first part names its environment: nothing is told that the caller did not).
    let path = format!("/v1/vault/connections/{}", setup.connection_key);
    let crossed = setup.api_as(&live, Method::GET, &path, None).await;
    assert_eq!((crossed.status, crossed.code()), (404, "not_found"));
    let says = crossed.body["message"].as_str().unwrap_or_default();
    assert!(
        says.contains("it is a test connection, and a live API key reaches live connections only"),
        "{says}"
    );
}
