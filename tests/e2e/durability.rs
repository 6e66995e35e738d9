//! Crash safety: acknowledged credential writes survive SIGKILL, and the database stays intact.

use crate::common::Setup;
use reqwest::Method;
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Kill the gateway with SIGKILL in the middle of a stream of connection writes, five times;
/// after each restart every acknowledged connection is present, its secret still decrypts
/// (it is used for a real upstream call), and `PRAGMA integrity_check` is `ok`.
#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_writes_survive_sigkill() {
    let mut setup = Setup::new().await;
    let acknowledged: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    for round in 0..5u64 {
        let before = acknowledged.lock().expect("lock").len();
        let writers: Vec<_> = (0..4)
            .map(|writer| {
                let client = setup.client.clone();
                let url = format!("{}/v1/vault/connections", setup.gateway.url);
                let key = setup.key.clone();
                let base_url = setup.upstream.url();
                let acknowledged = acknowledged.clone();
                tokio::spawn(async move {
                    for i in 0.. {
                        let secret = format!("ghp_durable_{round}_{writer}_{i}");
                        let body = json!({"platform": "github", "secret": secret, "identity": secret, "baseUrl": base_url});
                        let sent = client.post(&url).bearer_auth(&key).json(&body).send().await;
                        match sent {
                            Ok(response) if response.status() == 201 => {
                                let created: serde_json::Value = match response.json().await {
                                    Ok(created) => created,
                                    Err(_) => return,
                                };
                                let key = created["key"].as_str().unwrap_or_default().to_owned();
                                acknowledged.lock().expect("lock").push((key, secret));
                            }
                            _ => return,
                        }
                    }
                })
            })
            .collect();
        // Kill once writes are flowing (a busy machine may take a while to acknowledge the
        // first), at a different point of the stream each round.
        let flowing = std::time::Instant::now();
        while acknowledged.lock().expect("lock").len() == before {
            assert!(
                flowing.elapsed() < Duration::from_secs(20),
                "round {round}: no write was acknowledged"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(20 + 70 * round)).await;
        setup.gateway.kill_and_restart().await;
        for writer in writers {
            let _ = tokio::time::timeout(Duration::from_secs(10), writer).await;
        }

        let acknowledged = acknowledged.lock().expect("lock").clone();
        assert!(
            !acknowledged.is_empty(),
            "round {round}: some writes were acknowledged"
        );
        for (key, _) in &acknowledged {
            let answer = setup
                .api(Method::GET, &format!("/v1/vault/connections/{key}"), None)
                .await;
            assert_eq!(
                answer.status, 200,
                "round {round}: acknowledged connection {key} was lost"
            );
        }
        // The newest acknowledged secret still decrypts and is injected upstream.
        let (_, secret) = acknowledged.last().expect("one").clone();
        let answer = setup
            .execute(
                "github",
                "get_repo",
                json!({"params": {"owner": "acme", "repo": "webapp"}, "identity": secret}),
            )
            .await;
        assert_eq!(answer.body["status"], 200, "{:?}", answer.body);
        let sent = setup.upstream_requests().pop().expect("sent");
        assert_eq!(
            sent.header("authorization"),
            Some(format!("Bearer {secret}").as_str())
        );

        let db = rusqlite::Connection::open(setup.gateway.data_dir().join("sluice.db")).expect("open db");
        let integrity: String = db
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .expect("integrity_check");
        assert_eq!(integrity, "ok", "round {round}");
    }
}

/// `sluice vault rotate-key` re-encrypts every secret while the gateway keeps serving with
/// the rotated credentials, and a restart works with the new key alone.
#[tokio::test(flavor = "multi_thread")]
async fn key_rotation_keeps_a_running_gateway_serving() {
    let mut setup = Setup::new().await;
    let params = json!({"params": {"owner": "acme", "repo": "webapp"}});
    assert_eq!(
        setup.execute("github", "get_repo", params.clone()).await.body["status"],
        200
    );
    let key_file = setup.gateway.data_dir().join("master.key");
    let before = std::fs::read_to_string(&key_file).expect("key file");

    setup
        .gateway
        .cli(&["vault", "rotate-key"])
        .await
        .expect("rotate-key");
    let after = std::fs::read_to_string(&key_file).expect("key file");
    assert_ne!(before.trim(), after.trim(), "a new key is in place");
    assert!(
        !after.contains(before.trim()),
        "the old key is gone from the file"
    );

    let answer = setup.execute("github", "get_repo", params.clone()).await;
    assert_eq!(
        answer.body["status"], 200,
        "the running gateway still decrypts: {:?}",
        answer.body
    );
    let sent = setup.upstream_requests().pop().expect("sent");
    assert_eq!(
        sent.header("authorization"),
        Some(format!("Bearer {}", crate::common::SECRET).as_str())
    );

    setup.gateway.restart().await;
    assert_eq!(
        setup.execute("github", "get_repo", params).await.body["status"],
        200
    );
    assert!(setup.gateway.output().contains("master keys reloaded"));
}
