//! `Idempotency-Key` on execute: a retried call runs once, and its retries get its reply.

use crate::common::{Answer, SECRET, Setup, send};
use serde_json::{Value, json};
use std::time::Duration;

impl Setup {
    /// `POST /v1/github/{endpoint}` with `body` under `Idempotency-Key: idempotency_key`.
    async fn execute_once(&self, endpoint: &str, idempotency_key: &str, body: &Value) -> Answer {
        let request = self
            .client
            .post(format!("{}/v1/github/{endpoint}", self.gateway.url))
            .bearer_auth(&self.key)
            .header("idempotency-key", idempotency_key)
            .json(body);
        send(request).await
    }

    /// How many requests the fake GitHub got for `path`.
    fn upstream_count(&self, path: &str) -> usize {
        self.upstream_requests().iter().filter(|r| r.path == path).count()
    }
}

fn issue(title: &str) -> Value {
    json!({"params": {"owner": "acme", "repo": "webapp", "title": title}})
}

const ISSUES: &str = "/repos/acme/webapp/issues";

/// A retry with the same key and request gets the first reply, marked, without a second
/// upstream request (also after a restart: the reply is kept in the vault); the same key for
/// another request is refused; another key runs again.
#[tokio::test(flavor = "multi_thread")]
async fn a_retried_call_runs_once_and_gets_the_first_reply() {
    let mut setup = Setup::new().await;
    let first = setup
        .execute_once("create_issue", "order-17", &issue("Bug"))
        .await;
    assert_eq!(first.status, 200, "{:?}", first.body);
    assert_eq!(first.body["status"], 201);
    assert!(first.headers.get("idempotent-replayed").is_none());

    let retry = setup
        .execute_once("create_issue", "order-17", &issue("Bug"))
        .await;
    assert_eq!((retry.status, &retry.body), (200, &first.body));
    assert_eq!(retry.headers["idempotent-replayed"], "true");
    assert_eq!(setup.upstream_count(ISSUES), 1, "the action ran once");
    let tx = retry.headers["x-transaction-key"].to_str().expect("ascii");
    let row = setup.log_row(tx).await.expect("the replay is logged");
    assert_eq!(row["outcome"], "idempotent_replay");

    let other_request = setup
        .execute_once("create_issue", "order-17", &issue("Other"))
        .await;
    assert_eq!(other_request.status, 422, "{:?}", other_request.body);
    assert_eq!(other_request.code(), "idempotency_key_reused");
    assert_eq!(setup.upstream_count(ISSUES), 1);

    setup.gateway.restart().await;
    let after_restart = setup
        .execute_once("create_issue", "order-17", &issue("Bug"))
        .await;
    assert_eq!(after_restart.body, first.body);
    assert_eq!(after_restart.headers["idempotent-replayed"], "true");
    assert_eq!(setup.upstream_count(ISSUES), 1);

    let new_key = setup
        .execute_once("create_issue", "order-18", &issue("Bug"))
        .await;
    assert_eq!(new_key.body["status"], 201);
    assert_eq!(setup.upstream_count(ISSUES), 2);
    // The kept reply is the upstream's data: sealed in the vault, not in plain text.
    let db = rusqlite::Connection::open(setup.gateway.data_dir().join("sluice.db")).expect("open db");
    let (status, reply): (u16, Vec<u8>) = db
        .query_row(
            "SELECT http_status, reply_ciphertext FROM idempotent_calls WHERE idempotency_key = 'order-17'",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .expect("the reply is kept");
    assert_eq!(status, 200);
    let reply = String::from_utf8_lossy(&reply);
    assert!(
        !reply.contains("Bug") && !reply.contains("status"),
        "the reply is sealed"
    );
}

/// A call refused before its connector ran (here: no connection for the identity it names)
/// gives its key back: once the user has connected, the same retry runs.
#[tokio::test(flavor = "multi_thread")]
async fn a_call_refused_before_it_ran_gives_its_key_back() {
    let setup = Setup::new().await;
    let mut for_ivy = issue("Bug");
    for_ivy["identity"] = json!("ivy");
    let refused = setup.execute_once("create_issue", "ivy-1", &for_ivy).await;
    assert_eq!(refused.code(), "integration_not_connected", "{:?}", refused.body);

    setup
        .gateway
        .add_connection(
            "github",
            SECRET,
            &["--identity", "ivy", "--base-url", &setup.upstream.url()],
        )
        .await;
    let retried = setup.execute_once("create_issue", "ivy-1", &for_ivy).await;
    assert_eq!(retried.body["status"], 201, "{:?}", retried.body);
    assert!(retried.headers.get("idempotent-replayed").is_none());
    assert_eq!(setup.upstream_count(ISSUES), 1);
}

/// A reply the upstream gave because it refused the credential is no final word: once the
/// user has reconnected, the retry runs.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_credential_keeps_nothing() {
    let setup = Setup::new().await;
    let revoked = json!({"params": {"owner": "acme", "repo": "revoked"}});
    for _ in 0..2 {
        let answer = setup.execute_once("get_repo", "revoked-1", &revoked).await;
        assert_eq!(answer.body["status"], 401, "{:?}", answer.body);
        assert!(answer.headers.get("idempotent-replayed").is_none());
    }
    assert_eq!(setup.upstream_count("/repos/acme/revoked"), 2);
}

/// A reply over 256 KiB is kept as its status only: a retry learns how the call went, and the
/// action still does not run again.
#[tokio::test(flavor = "multi_thread")]
async fn a_large_reply_is_kept_as_its_status() {
    let setup = Setup::new().await;
    let large = json!({"params": {"owner": "acme", "repo": "large"}});
    let first = setup.execute_once("get_repo", "large-1", &large).await;
    assert_eq!(first.body["data"]["blob"].as_str().map(str::len), Some(3 << 19));
    let retry = setup.execute_once("get_repo", "large-1", &large).await;
    assert_eq!(retry.headers["idempotent-replayed"], "true");
    assert_eq!(retry.body["status"], 200);
    assert_eq!(retry.body["data"], Value::Null);
    assert!(
        retry.body["dataOmitted"]
            .as_str()
            .unwrap_or_default()
            .contains("too large to keep"),
        "{:?}",
        retry.body
    );
    assert_eq!(setup.upstream_count("/repos/acme/large"), 1);
}

/// A retry while the call runs is told to wait (409, `Retry-After`); the call runs to its end
/// even when its caller leaves, and the next retry gets its reply.
#[tokio::test(flavor = "multi_thread")]
async fn a_caller_that_left_finds_the_reply_kept() {
    let setup = std::sync::Arc::new(Setup::new().await);
    let slow = json!({"params": {"owner": "acme", "repo": "slow"}});
    let first = tokio::spawn({
        let (setup, slow) = (setup.clone(), slow.clone());
        async move { setup.execute_once("get_repo", "slow-1", &slow).await }
    });
    let reached = async {
        while setup.upstream_count("/repos/acme/slow") == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), reached)
        .await
        .expect("the call reached the upstream");

    let meanwhile = setup.execute_once("get_repo", "slow-1", &slow).await;
    assert_eq!(meanwhile.status, 409, "{:?}", meanwhile.body);
    assert_eq!(meanwhile.code(), "idempotency_key_in_use");
    assert_eq!(meanwhile.headers["retry-after"], "1");

    // The caller gives up (its connection closes) while the upstream is still answering.
    first.abort();
    let _ = first.await;
    let mut replayed = None;
    let deadline = tokio::time::Instant::now() + crate::common::BACKGROUND_WORK;
    while tokio::time::Instant::now() < deadline {
        let retry = setup.execute_once("get_repo", "slow-1", &slow).await;
        if retry.status != 409 {
            replayed = Some(retry);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let replayed = replayed.expect("the call finished");
    assert_eq!(replayed.body, json!({"status": 200, "data": {"slow": true}}));
    assert_eq!(replayed.headers["idempotent-replayed"], "true");
    assert_eq!(setup.upstream_count("/repos/acme/slow"), 1, "the action ran once");
}

/// A key the gateway cannot keep its promise for is refused, not ignored.
#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_key_is_refused() {
    let setup = Setup::new().await;
    let too_long = "k".repeat(256);
    for key in ["", too_long.as_str()] {
        let answer = setup.execute_once("create_issue", key, &issue("Bug")).await;
        assert_eq!(answer.status, 400, "{key:?}: {:?}", answer.body);
        assert!(
            answer.body["message"]
                .as_str()
                .unwrap_or_default()
                .contains("Idempotency-Key"),
            "{:?}",
            answer.body
        );
    }
    assert_eq!(setup.upstream_count(ISSUES), 0);
}
