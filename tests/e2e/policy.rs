//! The operator's policy: per-connector limits, host narrowing, concurrency, and approval of
//! outbound hosts when a connector's new version asks for more.

use crate::common::{SLUICE, Setup, send};
use reqwest::Method;
use serde_json::json;
use sluice_fixtures::gateway::Options;
use sluice_fixtures::{Gateway, guests};
use std::path::Path;

fn with_policy(policy: serde_json::Value) -> (tempfile::TempDir, Options) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("policy.json");
    std::fs::write(&path, policy.to_string()).expect("write policy");
    let options = Options {
        extra_args: vec!["--policy".into(), path.display().to_string()],
        ..Options::default()
    };
    (dir, options)
}

/// A connector over its own in-flight limit is refused at once with `connector_busy`, while
/// other connectors keep serving.
#[tokio::test(flavor = "multi_thread")]
async fn connector_over_its_in_flight_limit_is_busy() {
    let (_dir, mut options) =
        with_policy(json!({"connectors": {"hostile": {"maxInFlight": 1, "timeoutMs": 1500}}}));
    options.extra_args.extend(["--timeout-ms".into(), "5000".into()]);
    let setup = Setup::with_options(options).await;
    let first = setup.execute("hostile", "spin", json!({"params": {}}));
    let second = async {
        setup.wait_for_metric("sluice_instances_in_use 1").await;
        let busy = setup.execute("hostile", "spin", json!({"params": {}})).await;
        let echo = setup.execute("echo", "say", json!({"params": {"x": 1}})).await;
        (busy, echo)
    };
    let (first, (busy, echo)) = tokio::join!(first, second);
    assert_eq!(
        first.code(),
        "connector_timeout",
        "the policy's shorter deadline applies"
    );
    assert_eq!((busy.status, busy.code()), (429, "connector_busy"));
    assert_eq!(echo.body["status"], 200);
}

/// A per-connector memory cap below the global one is enforced.
#[tokio::test(flavor = "multi_thread")]
async fn per_connector_memory_cap_applies() {
    let (_dir, options) = with_policy(json!({"connectors": {"hostile": {"memoryMib": 8}}}));
    let setup = Setup::with_options(options).await;
    let answer = setup.execute("hostile", "grow", json!({"params": {}})).await;
    assert_eq!((answer.status, answer.code()), (502, "connector_memory_limit"));
    // The same allocation pattern fits the global 64 MiB: the echo connector is unaffected.
    assert_eq!(
        setup.execute("echo", "say", json!({"params": {}})).await.body["status"],
        200
    );
}

/// A per-connector memory cap too small for the connector even to start fails its load, saying
/// so, instead of loading it and failing every call (a Python connector needs tens of MiB).
#[tokio::test(flavor = "multi_thread")]
async fn a_memory_cap_the_connector_cannot_start_under_fails_its_load() {
    let Some(slack) = crate::languages::component("slack", guests::SLACK) else {
        return;
    };
    let (_dir, options) = with_policy(json!({"connectors": {"slack": {"memoryMib": 4}}}));
    let gateway = Gateway::start(Path::new(SLUICE), &[slack, guests::ECHO], options).await;
    let plugins = send(reqwest::Client::new().get(format!("{}/v1/plugins", gateway.url))).await;
    let loaded: Vec<&str> = plugins.body["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .filter_map(|row| row["id"].as_str())
        .collect();
    assert_eq!(loaded, ["echo"], "{:?}", plugins.body);
    let error = plugins.body["failures"][0]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("under the policy's memory limit of 4 MiB the connector does not start")
            && error.contains("raise its memoryMib"),
        "{error}"
    );
    // Callers are told it is installed but did not load.
    let key = gateway.first_start_key.clone().expect("key");
    let call = send(
        reqwest::Client::new()
            .post(format!("{}/v1/slack/list_channels", gateway.url))
            .bearer_auth(&key)
            .json(&json!({"params": {}})),
    )
    .await;
    assert_eq!(
        (call.status, call.code()),
        (503, "connector_unavailable"),
        "{:?}",
        call.body
    );
}

/// Narrowing a connector's hosts to none denies even its own base URL; a policy that names
/// hosts the connector never declared does not widen anything.
#[tokio::test(flavor = "multi_thread")]
async fn policy_narrows_but_never_widens_hosts() {
    let (_dir, options) = with_policy(json!({"connectors": {
        "github": {"allowedHosts": ["https://evil.example"]},
        "hostile": {"maxUpstreamRequests": 2}
    }}));
    let setup = Setup::with_options(options).await;
    let answer = setup.get_repo().await;
    assert_eq!(answer.code(), "egress_denied", "{:?}", answer.body);
    let capped = setup
        .execute("hostile", "many_calls", json!({"params": {"count": 5}}))
        .await;
    assert_eq!(capped.code(), "too_many_upstream_requests", "{:?}", capped.body);
    assert_eq!(
        setup.upstream_requests().len(),
        2,
        "the policy's cap of 2 applies"
    );
}

/// A new version asking for more outbound hosts is not activated until approved; the
/// difference is shown, and after approval it loads.
#[tokio::test(flavor = "multi_thread")]
async fn widening_hosts_needs_approval() {
    let mut gateway = Gateway::start(Path::new(SLUICE), &[guests::VERSIONED_V1], Options::default()).await;
    let key = gateway.first_start_key.clone().expect("key");
    let client = reqwest::Client::new();
    let version = |gateway: &Gateway| {
        send(
            client
                .post(format!("{}/v1/versioned/version", gateway.url))
                .bearer_auth(&key)
                .json(&json!({"params": {}})),
        )
    };
    assert_eq!(version(&gateway).await.body["data"]["version"], "1.0.0");

    std::fs::copy(guests::VERSIONED_V2, gateway.plugins_dir().join("versioned.wasm")).expect("upgrade");
    gateway.restart().await;
    // The unapproved version is not active, and callers are told it is installed but did not
    // load (not that it does not exist); readiness counts the failure.
    let refused = version(&gateway).await;
    assert_eq!(
        (refused.status, refused.code()),
        (503, "connector_unavailable"),
        "{:?}",
        refused.body
    );
    let ready = send(client.request(Method::GET, format!("{}/readyz", gateway.url))).await;
    assert_eq!(
        (ready.status, &ready.body["failed"]),
        (200, &json!(1)),
        "{:?}",
        ready.body
    );
    let plugins = send(client.request(Method::GET, format!("{}/v1/plugins", gateway.url))).await;
    let failure = plugins.body["failures"][0]["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(failure.contains("+https://extra.versioned.test:443"), "{failure}");
    let plugins_dir = gateway.plugins_dir().display().to_string();
    // The route takes no key: it names the command, and the log has it with this machine's paths.
    assert!(
        failure.contains("sluice connectors approve versioned"),
        "{failure}"
    );
    assert!(!failure.contains(&plugins_dir), "{failure}");
    // The log names the command that works for this gateway.
    gateway
        .output_with_line(&["sluice connectors approve --plugins /", "--data-dir", "versioned"])
        .await;

    // A dry run shows what would be approved and approves nothing: twice, the same.
    for _ in 0..2 {
        let preview = gateway
            .cli(&[
                "connectors",
                "approve",
                "versioned",
                "--plugins",
                &plugins_dir,
                "--dry-run",
            ])
            .await
            .expect("dry run");
        assert_eq!(preview, "+ https://extra.versioned.test:443");
    }
    let diff = gateway
        .cli(&["connectors", "approve", "versioned", "--plugins", &plugins_dir])
        .await
        .expect("approve");
    assert_eq!(diff, "+ https://extra.versioned.test:443");
    // The watching gateway loads it without a restart.
    let approved = std::time::Instant::now();
    while version(&gateway).await.body["data"]["version"] != "2.0.0" {
        assert!(
            approved.elapsed() < std::time::Duration::from_secs(10),
            "the approved version never loaded"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Approving it again says there was nothing to approve.
    let again = gateway
        .cli_output(&["connectors", "approve", "versioned", "--plugins", &plugins_dir])
        .await;
    let said = String::from_utf8_lossy(&again.stderr);
    assert!(
        again.status.success() && said.contains("nothing new to approve"),
        "{said}"
    );
    // A file meant that does not load says why, not merely that there is none.
    std::fs::copy(guests::BAD_IMPORT, gateway.plugins_dir().join("broken.wasm")).expect("copy");
    let broken = gateway
        .cli(&[
            "connectors",
            "approve",
            "versioned",
            "--plugins",
            &plugins_dir,
            "--file",
            "broken.wasm",
        ])
        .await
        .expect_err("does not load");
    assert!(
        broken.contains("no loadable component named broken.wasm") && broken.contains("broken.wasm: "),
        "{broken}"
    );
}

/// The operator can restrict where connections' base URLs may point: a connection outside the
/// list is refused with `egress_denied`, for actions and passthrough alike, and nothing is sent.
#[tokio::test(flavor = "multi_thread")]
async fn connection_base_urls_outside_the_policy_are_refused() {
    let (_dir, options) =
        with_policy(json!({"connectors": {"github": {"baseUrls": ["https://github.acme.test"]}}}));
    let setup = Setup::with_options(options).await;
    let answer = setup.get_repo().await;
    assert_eq!(
        (answer.status, answer.code()),
        (403, "egress_denied"),
        "{:?}",
        answer.body
    );
    let message = answer.body["message"].as_str().unwrap_or_default();
    assert!(message.contains("not one the operator allows"), "{message}");
    // Counted as an egress refusal, as the connector's own refused requests are.
    let metrics = setup.gateway.metrics().await;
    assert!(
        metrics.contains(r#"sluice_egress_denied_total{integration="github"} 1"#),
        "{metrics}"
    );
    let passthrough = setup.passthrough_get("/repos/acme/webapp").await;
    assert_eq!(passthrough.code(), "egress_denied", "{:?}", passthrough.body);
    assert!(
        setup.upstream_requests().is_empty(),
        "nothing reached the upstream"
    );

    // Through the API a connection (or a connect session) cannot get such a base URL at all.
    let api = |path: &str, body: serde_json::Value| {
        send(
            setup
                .client
                .post(format!("{}{path}", setup.gateway.url))
                .bearer_auth(&setup.key)
                .json(&body),
        )
    };
    let elsewhere = "https://elsewhere.example";
    let created = api(
        "/v1/vault/connections",
        json!({"platform": "github", "secret": "ghp_x12345", "identity": "eve", "baseUrl": elsewhere}),
    )
    .await;
    assert_eq!(
        (created.status, created.code()),
        (400, "bad_request"),
        "{:?}",
        created.body
    );
    let session = api(
        "/v1/connect",
        json!({"integration": "github", "baseUrl": elsewhere}),
    )
    .await;
    assert_eq!(
        (session.status, session.code()),
        (400, "bad_request"),
        "{:?}",
        session.body
    );
    let allowed = api(
        "/v1/vault/connections",
        json!({"platform": "github", "secret": "ghp_x12345", "identity": "eve", "baseUrl": "https://github.acme.test"}),
    )
    .await;
    assert_eq!(allowed.status, 201, "{:?}", allowed.body);
}

/// `SIGHUP` reads the policy file again: a changed policy applies without a restart, to
/// connectors whose files did not change; a file that became invalid is reported and the
/// policy in force stays.
#[tokio::test(flavor = "multi_thread")]
async fn sighup_applies_a_changed_policy_and_keeps_the_old_one_if_the_new_is_invalid() {
    let (dir, options) = with_policy(json!({"connectors": {}}));
    let policy_file = dir.path().join("policy.json");
    let setup = Setup::with_options(options).await;
    assert_eq!(setup.get_repo().await.status, 200, "no narrowing yet");

    // Narrow github's hosts to none, as an operator cutting off a connector would.
    let narrowed = json!({"connectors": {"github": {"allowedHosts": []}}});
    std::fs::write(&policy_file, narrowed.to_string()).expect("write policy");
    setup.gateway.signal("HUP");
    let denied = eventually(|| setup.get_repo(), |answer| answer.code() == "egress_denied").await;
    assert_eq!(denied.status, 403, "{:?}", denied.body);

    // A broken file is refused; the narrowed policy stays, and the gateway keeps serving.
    std::fs::write(
        &policy_file,
        r#"{"connectors": {"github": {"timeoutMs": "soon"}}}"#,
    )
    .expect("write");
    setup.gateway.signal("HUP");
    let output = setup
        .gateway
        .output_with_line(&["the policy file is not valid", "timeoutMs"])
        .await;
    assert!(output.contains("the policy in force stays"), "{output}");
    assert_eq!(setup.get_repo().await.code(), "egress_denied");
    assert_eq!(
        setup.execute("echo", "say", json!({"params": {}})).await.status,
        200
    );

    // Back to no narrowing.
    std::fs::write(&policy_file, json!({"connectors": {}}).to_string()).expect("write policy");
    setup.gateway.signal("HUP");
    let allowed = eventually(|| setup.get_repo(), |answer| answer.status == 200).await;
    assert_eq!(allowed.body["status"], 200, "{:?}", allowed.body);
}

/// The first answer of `call` that `done` accepts, within ten seconds.
async fn eventually<F, A>(call: impl Fn() -> F, done: impl Fn(&A) -> bool) -> A
where
    F: std::future::Future<Output = A>,
    A: std::fmt::Debug,
{
    let started = std::time::Instant::now();
    loop {
        let answer = call().await;
        if done(&answer) {
            return answer;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "never came: last {answer:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Policy entries for connectors that are not loaded (a typo, or one added later by hot
/// reload) are named in a warning at start rather than ignored in silence.
#[tokio::test(flavor = "multi_thread")]
async fn policy_entries_for_connectors_not_loaded_are_warned_about() {
    let (_dir, options) = with_policy(json!({"connectors": {
        "gihtub": {"memoryMib": 8},
        "echo": {"timeoutMs": 1000, "memoryMib": 100000, "allowedHosts": ["https://evil.example.com"]}
    }}));
    let gateway = Gateway::start(Path::new(SLUICE), &[guests::ECHO], options).await;
    // `Gateway::start` returns once the start-up log (this warning included) has been read.
    let output = gateway.output();
    let warning = output
        .lines()
        .find(|line| line.contains("the policy has entries for connectors that are not loaded"))
        .unwrap_or_else(|| panic!("no warning in:\n{output}"));
    assert!(
        warning.contains(r#"["gihtub"]"#),
        "names the unknown id, and only it: {warning}"
    );
    // A limit above the gateway's own does nothing: said, not ignored in silence.
    let loosened = output
        .lines()
        .find(|line| line.contains("the policy sets limits above the gateway's own"))
        .unwrap_or_else(|| panic!("no warning in:\n{output}"));
    assert!(loosened.contains(r#"["echo.memoryMib"]"#), "{loosened}");
    // Hosts the connector never declared are ignored, which here leaves it none at all.
    assert!(
        output.contains("leave this connector no host it declared"),
        "{output}"
    );
}

/// A memory cap no connector can start in is refused when the policy is read.
#[test]
fn a_policy_memory_cap_too_small_for_any_connector_is_refused() {
    let (dir, _) = with_policy(json!({"connectors": {"echo": {"memoryMib": 1}}}));
    let output = std::process::Command::new(SLUICE)
        .args(["serve", "--listen", "127.0.0.1:0", "--policy"])
        .arg(dir.path().join("policy.json"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env_remove("SLUICE_MASTER_KEY")
        .env_remove("SLUICE_ADMIN_KEY")
        .output()
        .expect("run sluice");
    assert!(!output.status.success(), "the gateway started");
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(
        error.contains("`memoryMib` 1 for `echo` is below the minimum of 4 MiB"),
        "{error}"
    );
}
