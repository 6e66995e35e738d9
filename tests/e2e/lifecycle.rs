//! Starting, loading and stopping the gateway.

use crate::common::{SLUICE, Setup, send};
use serde_json::json;
use sluice_fixtures::gateway::Options;
use sluice_fixtures::{Gateway, guests};
use std::path::Path;

/// The first start of an empty data directory prints a working test key.
#[tokio::test(flavor = "multi_thread")]
async fn first_start_prints_a_working_test_key() {
    let gateway = Gateway::start(Path::new(SLUICE), &[guests::ECHO], Options::default()).await;
    let key = gateway
        .first_start_key
        .clone()
        .expect("a key printed on first start");
    assert!(key.starts_with("sk_test_"));
    let client = reqwest::Client::new();
    let answer = send(
        client
            .post(format!("{}/v1/echo/say", gateway.url))
            .bearer_auth(&key)
            .json(&json!({"params": {"ok": true}})),
    )
    .await;
    assert_eq!(answer.body, json!({"status": 200, "data": {"ok": true}}));
    let health = send(client.get(format!("{}/healthz", gateway.url))).await;
    assert_eq!(health.body, json!({"status": "ok"}));
    // What it runs with is in one line of its log.
    let output = gateway.output();
    let starting = output
        .lines()
        .find(|line| line.contains("starting sluice"))
        .unwrap_or_default();
    assert!(
        starting.contains(&format!("version={}", env!("CARGO_PKG_VERSION")))
            && starting.contains("admin_api=false")
            && starting.contains("policy=none"),
        "{output}"
    );
}

/// Garbage in the plugins directory is refused at load; the good connectors still serve and
/// the failure is in the log.
#[tokio::test(flavor = "multi_thread")]
async fn broken_component_is_refused_and_others_serve() {
    let dir = tempfile::tempdir().expect("tempdir");
    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"\0asm this is not a component").expect("write garbage");
    let garbage = garbage.to_string_lossy().into_owned();
    let gateway = Gateway::start(Path::new(SLUICE), &[&garbage, guests::ECHO], Options::default()).await;
    let key = gateway.first_start_key.clone().expect("key");
    let answer = send(
        reqwest::Client::new()
            .post(format!("{}/v1/echo/say", gateway.url))
            .bearer_auth(&key)
            .json(&json!({"params": {}})),
    )
    .await;
    assert_eq!(answer.body["status"], 200);
    let plugins = send(reqwest::Client::new().get(format!("{}/v1/plugins", gateway.url))).await;
    assert_eq!(plugins.body["total"], 1);
    assert!(gateway.output().contains("connector failed to load"));

    // A file too large to be a connector is refused without being read (it is sparse here).
    std::fs::File::create(gateway.plugins_dir().join("huge.wasm"))
        .and_then(|file| file.set_len(200 << 20))
        .expect("sparse file");
    let mut failures = String::new();
    for _ in 0..100 {
        let plugins = send(reqwest::Client::new().get(format!("{}/v1/plugins", gateway.url))).await;
        failures = plugins.body["failures"].to_string();
        if failures.contains("huge.wasm") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        failures.contains("a component may be at most 128 MiB"),
        "{failures}"
    );
    let plugins_dir = gateway.plugins_dir().display().to_string();
    assert!(
        !failures.contains(&plugins_dir),
        "files are named, not located: {failures}"
    );
}

/// SIGTERM lets an in-flight request finish, then the process exits cleanly; meanwhile the
/// readiness probe (on the ops address, which still answers) says it is shutting down.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_in_flight_requests() {
    let mut setup = Setup::with_options(sluice_fixtures::gateway::Options {
        extra_args: ["--ops-listen", "127.0.0.1:0"].map(String::from).to_vec(),
        ..Default::default()
    })
    .await;
    let ready = format!("http://{}/readyz", setup.gateway.ops_address());
    assert_eq!(send(setup.client.get(&ready)).await.status, 200);
    // The metrics are served on the ops address only, once there is one.
    let api_metrics = send(setup.client.get(format!("{}/metrics", setup.gateway.url))).await;
    assert_eq!((api_metrics.status, api_metrics.code()), (404, "not_found"));
    let (client, key) = (setup.client.clone(), setup.key.clone());
    let url = format!("{}/v1/hostile/call", setup.gateway.url);
    let in_flight = tokio::spawn(send(
        client
            .post(url)
            .bearer_auth(&key)
            .json(&json!({"params": {"url": "/slower"}})),
    ));
    // Wait until the slow request has reached the upstream.
    let deadline = std::time::Instant::now() + crate::common::BACKGROUND_WORK;
    while setup.upstream.requests().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the call never reached the upstream"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    setup.gateway.signal("TERM");
    // While it drains, it no longer listens: a new client is refused at once (and can try
    // another gateway) rather than queued in the backlog until the drain ends.
    let address = setup.gateway.url.trim_start_matches("http://").to_owned();
    let started = std::time::Instant::now();
    while tokio::net::TcpStream::connect(&address).await.is_ok() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "still accepting connections after SIGTERM"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let draining = send(setup.client.get(&ready)).await;
    assert_eq!(
        (draining.status, &draining.body["message"]),
        (503, &json!("the gateway is shutting down")),
        "{:?}",
        draining.body
    );
    let (exited_cleanly, answer) = tokio::join!(setup.gateway.exited_successfully(), in_flight);
    let answer = answer.expect("join");
    assert_eq!(answer.body["status"], 200, "{:?}", answer.body);
    assert!(exited_cleanly, "the gateway exits 0 after draining");
}

/// A second SIGTERM while the gateway drains ends it at once (exit 1), without waiting for the
/// calls still in flight: an operator who asks twice means it.
#[tokio::test(flavor = "multi_thread")]
async fn a_second_sigterm_exits_at_once() {
    let mut setup = Setup::new().await;
    let (client, key) = (setup.client.clone(), setup.key.clone());
    let url = format!("{}/v1/hostile/call", setup.gateway.url);
    let in_flight = tokio::spawn(
        client
            .post(url)
            .bearer_auth(&key)
            .json(&json!({"params": {"url": "/slower"}}))
            .send(),
    );
    let deadline = std::time::Instant::now() + crate::common::BACKGROUND_WORK;
    while setup.upstream.requests().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the call never reached the upstream"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    setup.gateway.signal("TERM");
    setup.gateway.output_with_line(&["shutdown requested"]).await;
    assert!(!setup.gateway.terminate().await, "the second signal exits 1");
    let cut = in_flight.await.expect("join");
    assert!(cut.is_err(), "the call in flight was not waited for: {cut:?}");
    assert!(setup.gateway.output().contains("second shutdown request"));
}

/// SIGTERM while a passthrough call whose caller hung up is still waiting on its upstream: the
/// gateway waits for the call to end before it exits (cleanly), and the call's row is on disk.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_waits_for_calls_whose_caller_left() {
    let mut setup = Setup::new().await;
    let head = format!(
        "GET /v1/passthrough/slow HTTP/1.1\r\nx-sluice-connection-key: {}",
        setup.connection_key
    );
    let request = setup.raw_request(&head, "");
    setup.hang_up_during_slow_call(&request).await;
    assert!(setup.gateway.terminate().await, "the gateway exits 0");

    setup.gateway.restart().await;
    let row = setup.client_closed_row().await;
    crate::common::assert_ran_to_its_end_unanswered(&row);
}

/// A component built against a contract version the host does not support is refused at load
/// with a message naming both versions.
#[tokio::test(flavor = "multi_thread")]
async fn unknown_contract_version_is_refused_clearly() {
    let gateway = Gateway::start(
        Path::new(SLUICE),
        &[guests::FUTURE_CONTRACT, guests::ECHO],
        Options::default(),
    )
    .await;
    let plugins = send(reqwest::Client::new().get(format!("{}/v1/plugins", gateway.url))).await;
    assert_eq!(plugins.body["total"], 1, "only echo loads");
    let error = plugins.body["failures"][0]["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        error.contains("sluice:connector@9.0.0") && error.contains("0.1.x"),
        "{error}"
    );
}

/// A connector built against the 0.1 contract keeps working beside 0.2 connectors: it loads,
/// its 0.1 `http` import gets the credential injected, and `/v1/plugins` names its contract.
#[tokio::test(flavor = "multi_thread")]
async fn connector_built_against_the_older_contract_keeps_working() {
    let upstream = sluice_fixtures::FakeUpstream::start(crate::common::fake_github).await;
    let gateway = Gateway::start(
        Path::new(SLUICE),
        &[guests::CONTRACT_V0_1, guests::GITHUB],
        Options::default(),
    )
    .await;
    let key = gateway.first_start_key.clone().expect("key");
    gateway
        .add_connection("legacy", crate::common::SECRET, &["--base-url", &upstream.url()])
        .await;
    let answer = send(
        reqwest::Client::new()
            .post(format!("{}/v1/legacy/ping", gateway.url))
            .bearer_auth(&key)
            .json(&json!({"params": {}})),
    )
    .await;
    assert_eq!(answer.body, json!({"status": 200, "data": "plain words"}));
    let sent = upstream.requests().pop().expect("sent");
    assert_eq!(
        sent.header("authorization"),
        Some(format!("Bearer {}", crate::common::SECRET).as_str())
    );
    let plugins = send(reqwest::Client::new().get(format!("{}/v1/plugins", gateway.url))).await;
    let contracts: Vec<(String, String)> = plugins.body["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap_or_default().to_owned(),
                r["contract"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        contracts,
        [
            ("github".to_owned(), "0.2.0".to_owned()),
            ("legacy".to_owned(), "0.1.0".to_owned())
        ]
    );
    assert!(
        gateway.output().contains("legacy ping"),
        "the 0.1 log import works"
    );
}

/// While the connectors load (a Python one compiles for seconds on a first start) the gateway
/// already answers: `/healthz` is live, `/readyz` and the API say `503 not_ready` rather than
/// "no such integration", and `SIGTERM` stops it cleanly, so that an orchestrator neither
/// kills a starting gateway for want of an answer nor waits on one it stops.
#[tokio::test(flavor = "multi_thread")]
async fn a_starting_gateway_answers_probes_and_stops_cleanly() {
    use std::io::BufRead;
    let Some(slack) = crate::languages::component("slack", guests::SLACK) else {
        return;
    };
    let (plugins, data) = (
        tempfile::tempdir().expect("plugins"),
        tempfile::tempdir().expect("data"),
    );
    for (source, name) in [(slack, "slack.wasm"), (guests::ECHO, "echo.wasm")] {
        std::fs::copy(source, plugins.path().join(name)).expect("copy");
    }
    let mut child = std::process::Command::new(SLUICE)
        .args(["serve", "--listen", "127.0.0.1:0", "--no-cache", "--plugins"])
        .arg(plugins.path())
        .arg("--data-dir")
        .arg(data.path())
        .env("SLUICE_LOG", "info")
        .env_remove("SLUICE_MASTER_KEY")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the gateway");
    let stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let key = stdout
        .lines()
        .map_while(Result::ok)
        .find_map(|line| {
            line.trim()
                .starts_with("sk_test_")
                .then(|| line.trim().to_owned())
        })
        .expect("the first start's key");
    let (lines, stderr) = (std::sync::mpsc::channel(), child.stderr.take().expect("stderr"));
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines.0.send(line);
        }
    });
    let address = lines
        .1
        .iter()
        .find_map(|line| {
            line.contains("accepting connections while the connectors load")
                .then(|| line.split("address=").nth(1).map(str::to_owned))
                .flatten()
        })
        .expect("the address it answers on");
    let url = format!("http://{address}");
    let client = reqwest::Client::new();

    let ready = send(client.get(format!("{url}/readyz"))).await;
    assert_eq!(
        (ready.status, ready.code()),
        (503, "not_ready"),
        "{:?}",
        ready.body
    );
    assert_eq!(ready.headers["retry-after"], "1");
    let call = send(
        client
            .post(format!("{url}/v1/echo/say"))
            .bearer_auth(&key)
            .json(&json!({"params": {}})),
    )
    .await;
    assert_eq!((call.status, call.code()), (503, "not_ready"), "{:?}", call.body);
    assert_eq!(call.headers["retry-after"], "1");
    let live = send(client.get(format!("{url}/healthz"))).await;
    assert_eq!(live.body, json!({"status": "ok"}));
    assert_eq!(
        send(client.get(format!("{url}/readyz"))).await.status,
        503,
        "still loading while the probes were answered"
    );

    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let asked = std::time::Instant::now();
    let stopped = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("join")
        .expect("wait");
    assert!(stopped.success(), "{stopped:?}");
    // Not after the Python connector's compilation (seconds), which it does not wait for.
    assert!(
        asked.elapsed() < std::time::Duration::from_secs(6),
        "stopped after {:?}",
        asked.elapsed()
    );
    // Until the end of its stderr.
    let said: Vec<String> = lines.1.iter().collect();
    assert!(
        said.iter().any(|line| line.contains("shut down cleanly")),
        "{said:#?}"
    );
    assert!(
        !said.iter().any(|line| line.contains("connectors loaded")),
        "it waited for the first load to end: {said:#?}"
    );
}
