//! Hot reload and the compiled-artifact cache, against the real binary.

use crate::common::{SLUICE, send};
use serde_json::{Value, json};
use sluice_fixtures::gateway::Options;
use sluice_fixtures::{Gateway, guests};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

async fn version(client: &reqwest::Client, gateway_url: &str, key: &str) -> Result<String, String> {
    let response = client
        .post(format!("{gateway_url}/v1/versioned/version"))
        .bearer_auth(key)
        .json(&json!({"params": {}}))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let body: Value = response.json().await.map_err(|e| e.to_string())?;
    match body["data"]["version"].as_str() {
        Some(version) if status == 200 => Ok(version.to_owned()),
        _ => Err(format!("{status}: {body}")),
    }
}

/// Poll until `expected` serves; returns how long it took.
async fn wait_for_version(
    client: &reqwest::Client,
    gateway: &Gateway,
    key: &str,
    expected: &str,
) -> Duration {
    let started = Instant::now();
    loop {
        if version(client, &gateway.url, key).await.as_deref() == Ok(expected) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{expected} never started serving"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Four clients asking for the version, over and over, until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Vec<Result<String, String>>>>,
}

impl Load {
    fn start(client: &reqwest::Client, gateway: &Gateway, key: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..4)
            .map(|_| {
                let (client, url, key, stop) =
                    (client.clone(), gateway.url.clone(), key.to_owned(), stop.clone());
                tokio::spawn(async move {
                    let mut answers = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        answers.push(version(&client, &url, &key).await);
                    }
                    answers
                })
            })
            .collect();
        Self { stop, tasks }
    }

    /// Stop, check that every request was answered, and return the versions answered.
    async fn stop_expecting_no_failures(self) -> Vec<Result<String, String>> {
        self.stop.store(true, Ordering::Relaxed);
        let mut answers = Vec::new();
        for task in self.tasks {
            answers.extend(task.await.expect("load task"));
        }
        let failed: Vec<&String> = answers.iter().filter_map(|a| a.as_ref().err()).collect();
        assert!(
            failed.is_empty(),
            "{} of {} requests failed: {:?}",
            failed.len(),
            answers.len(),
            &failed[..failed.len().min(3)]
        );
        answers
    }
}

/// Replace the component the way a build tool does: write a temporary file, rename it over.
fn replace_by_rename(source: &str, target: &Path) {
    let temporary = target.with_extension("wasm.partial");
    std::fs::copy(source, &temporary).expect("write temporary");
    std::fs::rename(&temporary, target).expect("rename over");
}

/// Replace the component in place, as an editor or `cp` does (the file is briefly partial).
fn replace_in_place(source: &str, target: &Path) {
    std::fs::write(target, std::fs::read(source).expect("read")).expect("write in place");
}

/// Requests keep flowing while the component is replaced 20 times (alternating two versions,
/// written in place and by rename) plus one garbage write: no request fails, every answer
/// comes from one of the two versions, and after the last swap only the last one answers.
#[tokio::test(flavor = "multi_thread")]
async fn hot_reload_under_load_drops_nothing() {
    // v2 first: its host list is the superset, approved on first sight.
    let gateway = Gateway::start(Path::new(SLUICE), &[guests::VERSIONED_V2], Options::default()).await;
    let key = gateway.first_start_key.clone().expect("key");
    let client = reqwest::Client::new();
    let target = gateway.plugins_dir().join("versioned.wasm");
    let load = Load::start(&client, &gateway, &key);

    let mut latencies = Vec::new();
    for swap in 0..20 {
        let (source, expected) = if swap % 2 == 0 {
            (guests::VERSIONED_V1, "1.0.0")
        } else {
            (guests::VERSIONED_V2, "2.0.0")
        };
        if swap == 10 {
            std::fs::write(&target, b"\0asm garbage that is not a component").expect("garbage");
            tokio::time::sleep(Duration::from_millis(600)).await;
        }
        if swap % 4 < 2 {
            replace_in_place(source, &target);
        } else {
            replace_by_rename(source, &target);
        }
        latencies.push(wait_for_version(&client, &gateway, &key, expected).await);
    }
    let answers = load.stop_expecting_no_failures().await;
    assert!(
        answers
            .iter()
            .all(|a| matches!(a.as_deref(), Ok("1.0.0" | "2.0.0")))
    );
    assert!(
        answers.len() > 100,
        "the load kept running ({} requests)",
        answers.len()
    );
    for _ in 0..20 {
        assert_eq!(version(&client, &gateway.url, &key).await.as_deref(), Ok("2.0.0"));
    }
    latencies.sort();
    println!(
        "hot reload, file write to new version serving over 20 swaps under load: p50 {:?}, max {:?}, {} requests served meanwhile",
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1],
        answers.len()
    );
}

/// A connector's file renamed (`mv versioned.wasm x-versioned.wasm`, and back) keeps serving
/// throughout: under load, no request finds the connector missing while it moves.
#[tokio::test(flavor = "multi_thread")]
async fn a_renamed_file_keeps_its_connector_serving() {
    let gateway = Gateway::start(Path::new(SLUICE), &[guests::VERSIONED_V1], Options::default()).await;
    let key = gateway.first_start_key.clone().expect("key");
    let client = reqwest::Client::new();
    let load = Load::start(&client, &gateway, &key);
    // The new name sorts after the old one, and then before it.
    let names = ["versioned.wasm", "x-versioned.wasm"];
    for round in 0..6 {
        let (from, to) = (names[round % 2], names[(round + 1) % 2]);
        let dir = gateway.plugins_dir();
        std::fs::rename(dir.join(from), dir.join(to)).expect("rename");
        let started = Instant::now();
        loop {
            let plugins = send(client.get(format!("{}/v1/plugins", gateway.url))).await;
            if plugins.body["rows"][0]["file"] == to && plugins.body["shadowed"] == json!([]) {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{to} never took over: {}",
                plugins.body
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let answers = load.stop_expecting_no_failures().await;
    assert!(
        answers.len() > 20,
        "the load kept running ({} requests)",
        answers.len()
    );
}

/// A garbage write or a torn (half-written) file never replaces a working version; the
/// failure shows in `GET /v1/plugins` until the file is the serving version again. Removing the
/// file unloads the connector; a new file loads.
#[tokio::test(flavor = "multi_thread")]
async fn broken_writes_keep_the_old_version_and_files_come_and_go() {
    let gateway = Gateway::start(Path::new(SLUICE), &[guests::VERSIONED_V1], Options::default()).await;
    let key = gateway.first_start_key.clone().expect("key");
    let client = reqwest::Client::new();
    let target = gateway.plugins_dir().join("versioned.wasm");
    let good = std::fs::read(guests::VERSIONED_V1).expect("read");

    let mut previous_error = Value::Null;
    for broken in [b"\0asm not a component".to_vec(), good[..good.len() / 2].to_vec()] {
        std::fs::write(&target, &broken).expect("write broken");
        // Each write's own failure: the second finds the row stale from the first already.
        let mut state = Value::Null;
        let deadline = tokio::time::Instant::now() + crate::common::BACKGROUND_WORK;
        while tokio::time::Instant::now() < deadline {
            let plugins = send(client.get(format!("{}/v1/plugins", gateway.url))).await;
            state = plugins.body["rows"][0].clone();
            if state["state"] == "stale" && state["lastError"] != previous_error {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_ne!(state["lastError"], previous_error, "{state}");
        previous_error = state["lastError"].clone();
        assert_eq!(state["state"], "stale", "{state}");
        assert!(state["lastError"].as_str().is_some_and(|e| !e.is_empty()));
        assert_eq!(
            version(&client, &gateway.url, &key).await.as_deref(),
            Ok("1.0.0"),
            "the old version serves"
        );
    }
    // The same bytes as the version serving: nothing to load, and nothing stale any more.
    std::fs::write(&target, &good).expect("restore");
    let started = Instant::now();
    loop {
        let plugins = send(client.get(format!("{}/v1/plugins", gateway.url))).await;
        let state = &plugins.body["rows"][0];
        if state["state"] == "loaded" {
            assert_eq!(state["lastError"], Value::Null, "{state}");
            assert_eq!(plugins.body["failures"], json!([]), "{}", plugins.body);
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "still stale after the good file came back: {state}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_for_version(&client, &gateway, &key, "1.0.0").await;

    std::fs::remove_file(&target).expect("remove");
    let started = Instant::now();
    while version(&client, &gateway.url, &key).await.is_ok() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the removed connector still serves"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let gone = send(
        client
            .post(format!("{}/v1/versioned/version", gateway.url))
            .bearer_auth(&key)
            .json(&json!({"params": {}})),
    )
    .await;
    assert_eq!(gone.code(), "not_found");

    replace_by_rename(guests::ECHO, &gateway.plugins_dir().join("echo.wasm"));
    let started = Instant::now();
    loop {
        let answer = send(
            client
                .post(format!("{}/v1/echo/say", gateway.url))
                .bearer_auth(&key)
                .json(&json!({"params": {"new": true}})),
        )
        .await;
        if answer.status == 200 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "a new file is loaded"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A restart loads components from the compiled-artifact cache instead of compiling them.
#[tokio::test(flavor = "multi_thread")]
async fn restart_loads_components_from_the_cache() {
    let mut gateway = Gateway::start(
        Path::new(SLUICE),
        &[guests::GITHUB, guests::ECHO],
        Options::default(),
    )
    .await;
    let first = gateway.output();
    assert_eq!(first.matches("origin=Compiled").count(), 2, "{first}");
    gateway.restart().await;
    let after = gateway.output()[first.len()..].to_owned();
    assert_eq!(after.matches("origin=Cache").count(), 2, "{after}");
    assert_eq!(after.matches("origin=Compiled").count(), 0);
}

/// The `sluice_component_loads_total` count for `outcome`.
async fn loads(gateway: &Gateway, outcome: &str) -> u64 {
    let text = gateway.metrics().await;
    let prefix = format!("sluice_component_loads_total{{outcome=\"{outcome}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Reading a component (a backup, a checksum, the gateway's own load) is not a change, so it
/// loads nothing; a broken file fails once, not in a loop; and when a file that shadowed another
/// with the same connector id goes, the other one serves.
#[tokio::test(flavor = "multi_thread")]
async fn only_changes_load_and_a_shadowed_file_takes_over() {
    let gateway = Gateway::start(Path::new(SLUICE), &[guests::ECHO], Options::default()).await;
    let key = gateway.first_start_key.clone().expect("key");
    let client = reqwest::Client::new();
    assert_eq!(loads(&gateway, "ok").await, 1);
    let echo = gateway.plugins_dir().join("echo.wasm");
    for _ in 0..5 {
        std::fs::read(&echo).expect("read");
    }
    std::fs::write(gateway.plugins_dir().join("junk.wasm"), b"\0asm junk").expect("junk");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let deadline = Instant::now() + crate::common::BACKGROUND_WORK;
    while loads(&gateway, "failed").await == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(loads(&gateway, "ok").await, 1, "reads are not changes");
    assert_eq!(loads(&gateway, "failed").await, 1, "a broken file fails once");

    // A second file declaring `echo` waits for the operator (it would get echo's connections),
    // then, approved, serves until it is removed.
    let shadow = gateway.plugins_dir().join("zz-echo.wasm");
    std::fs::copy(guests::ECHO, &shadow).expect("copy");
    let started = Instant::now();
    let refusal = loop {
        let plugins = send(client.get(format!("{}/v1/plugins", gateway.url))).await;
        let failures = plugins.body["failures"].as_array().cloned().unwrap_or_default();
        if let Some(failure) = failures.iter().find(|f| f["file"] == "zz-echo.wasm") {
            break failure["error"].as_str().unwrap_or_default().to_owned();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no refusal: {}",
            plugins.body
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        refusal.contains("which echo.wasm serves") && refusal.contains("--file zz-echo.wasm"),
        "{refusal}"
    );
    assert_eq!(file_serving(&gateway, "echo").await, "echo.wasm");
    approve_file(&gateway, "echo", "zz-echo.wasm").await;
    let started = Instant::now();
    while loads(&gateway, "ok").await < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the second file never loaded"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The operator can see which file serves and which one waits behind it.
    let plugins = send(client.get(format!("{}/v1/plugins", gateway.url))).await;
    assert_eq!(
        plugins.body["rows"][0]["file"], "zz-echo.wasm",
        "{}",
        plugins.body
    );
    let shadowed = &plugins.body["shadowed"];
    assert_eq!(shadowed.as_array().map(Vec::len), Some(1), "{shadowed}");
    assert_eq!(
        (&shadowed[0]["file"], &shadowed[0]["id"], &shadowed[0]["by"]),
        (&json!("echo.wasm"), &json!("echo"), &json!("zz-echo.wasm")),
        "{shadowed}"
    );
    // Calls go on while it is removed: the file behind it takes over with no gap.
    let stop = Arc::new(AtomicBool::new(false));
    let callers: Vec<_> = (0..4)
        .map(|_| {
            let (client, url, key, stop) = (client.clone(), gateway.url.clone(), key.clone(), stop.clone());
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let call = client
                        .post(format!("{url}/v1/echo/say"))
                        .bearer_auth(&key)
                        .json(&json!({"params": {}}))
                        .send()
                        .await;
                    statuses.push(
                        call.map(|answer| answer.status().as_u16())
                            .map_err(|e| e.to_string()),
                    );
                }
                statuses
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    std::fs::remove_file(&shadow).expect("remove");
    wait_until_served_from(&gateway, "echo", "echo.wasm", "echo.wasm never took over").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::Relaxed);
    for caller in callers {
        let statuses = caller.await.expect("caller");
        assert!(
            statuses.iter().all(|status| status == &Ok(200)),
            "a call failed while the serving file went: {:?}",
            statuses
                .iter()
                .filter(|status| *status != &Ok(200))
                .collect::<Vec<_>>()
        );
    }
    let plugins = send(client.get(format!("{}/v1/plugins", gateway.url))).await;
    assert_eq!(plugins.body["shadowed"], json!([]), "{}", plugins.body);
    let call = send(
        client
            .post(format!("{}/v1/echo/say", gateway.url))
            .bearer_auth(&key)
            .json(&json!({"params": {}})),
    )
    .await;
    assert_eq!(call.status, 200, "{:?}", call.body);
}

/// `sluice connectors approve <id> --file <file>` on the gateway's plugins directory.
async fn approve_file(gateway: &Gateway, id: &str, file: &str) {
    let plugins_dir = gateway.plugins_dir().display().to_string();
    gateway
        .cli(&[
            "connectors",
            "approve",
            id,
            "--plugins",
            &plugins_dir,
            "--file",
            file,
        ])
        .await
        .expect("approve");
}

/// The file serving a connector id two files declare, as `/v1/plugins` names it.
async fn file_serving(gateway: &Gateway, id: &str) -> String {
    let plugins = send(reqwest::Client::new().get(format!("{}/v1/plugins", gateway.url))).await;
    plugins.body["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|row| row["id"] == id)
        .and_then(|row| row["file"].as_str())
        .unwrap_or_default()
        .to_owned()
}

/// Wait (up to 10 s) until `file` serves connector `id`; `otherwise` says what went wrong.
async fn wait_until_served_from(gateway: &Gateway, id: &str, file: &str, otherwise: &str) {
    let started = Instant::now();
    while file_serving(gateway, id).await != file {
        assert!(started.elapsed() < Duration::from_secs(10), "{otherwise}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A plugins directory named relative to the working directory (as in the README's quick
/// start) hot-reloads like an absolute one: the files loaded at start are the ones the watcher
/// reports later (they were taken for other files: a file changed to declare another id kept
/// serving its old connector too, and a rewrite "shadowed" the file itself).
#[tokio::test(flavor = "multi_thread")]
async fn a_relative_plugins_directory_reloads_like_an_absolute_one() {
    let gateway = Gateway::start(
        Path::new(SLUICE),
        &[guests::ECHO],
        Options {
            relative_plugins: true,
            ..Options::default()
        },
    )
    .await;
    let client = reqwest::Client::new();
    let echo = gateway.plugins_dir().join("echo.wasm");
    // Another connector's bytes in the same file.
    let partial = gateway.plugins_dir().join(".echo.wasm.partial");
    std::fs::copy(guests::GITHUB, &partial).expect("copy");
    std::fs::rename(&partial, &echo).expect("rename");
    wait_until_served_from(&gateway, "github", "echo.wasm", "the new connector never loaded").await;
    let plugins = send(client.get(format!("{}/v1/plugins", gateway.url))).await;
    let ids: Vec<&Value> = plugins.body["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| &r["id"])
        .collect();
    assert_eq!(ids, [&json!("github")], "{}", plugins.body);
    assert_eq!(
        (&plugins.body["shadowed"], &plugins.body["failures"]),
        (&json!([]), &json!([])),
        "{}",
        plugins.body
    );

    std::fs::remove_file(&echo).expect("remove");
    let started = Instant::now();
    loop {
        let plugins = send(client.get(format!("{}/v1/plugins", gateway.url))).await;
        if plugins.body["total"] == 0 {
            assert_eq!(plugins.body["failures"], json!([]), "{}", plugins.body);
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never unloaded: {}",
            plugins.body
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Of two files declaring one connector id, the one written last serves, whatever order the
/// gateway meets them in: a rescan (`SIGHUP`) and a restart keep it (they looked at the files
/// in name order, and the other took over), and writing the other file again hands it over.
#[tokio::test(flavor = "multi_thread")]
async fn the_file_written_last_serves_across_rescans_and_restarts() {
    let mut gateway = Gateway::start(Path::new(SLUICE), &[guests::ECHO], Options::default()).await;
    // Written after `echo.wasm`, and first in name order.
    let newer = gateway.plugins_dir().join("aa-echo.wasm");
    std::fs::copy(guests::ECHO, &newer).expect("copy");
    // A second file of a connector another file serves waits for the operator's approval.
    approve_file(&gateway, "echo", "aa-echo.wasm").await;
    wait_until_served_from(&gateway, "echo", "aa-echo.wasm", "the newer file never served").await;

    let before = loads(&gateway, "ok").await;
    gateway.signal("HUP");
    let started = Instant::now();
    while loads(&gateway, "ok").await == before {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the rescan loaded nothing"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The rest of the rescan's batch, if any, lands within its debounce.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        file_serving(&gateway, "echo").await,
        "aa-echo.wasm",
        "after a rescan"
    );

    gateway.restart().await;
    assert_eq!(
        file_serving(&gateway, "echo").await,
        "aa-echo.wasm",
        "after a restart"
    );
    let plugins = send(reqwest::Client::new().get(format!("{}/v1/plugins", gateway.url))).await;
    assert_eq!(
        (
            &plugins.body["shadowed"][0]["file"],
            &plugins.body["shadowed"][0]["by"]
        ),
        (&json!("echo.wasm"), &json!("aa-echo.wasm")),
        "{}",
        plugins.body
    );

    // Written again (here: only its time), the other file is the one written last.
    std::fs::File::options()
        .write(true)
        .open(gateway.plugins_dir().join("echo.wasm"))
        .and_then(|file| file.set_modified(std::time::SystemTime::now()))
        .expect("touch echo.wasm");
    wait_until_served_from(&gateway, "echo", "echo.wasm", "the touched file never served").await;
}

/// A file approved as one connector that is changed to declare another known connector's id
/// does not take it (nor its connections' credentials) until the operator approves: it keeps
/// serving its old version meanwhile. Approved, it shadows that connector's own file and its
/// own connector goes; changed back (and approved back), it serves its own again and the other
/// file takes its connector back.
#[tokio::test(flavor = "multi_thread")]
async fn a_file_that_stops_shadowing_another_hands_its_connector_back() {
    let gateway = Gateway::start(
        Path::new(SLUICE),
        &[guests::ECHO, guests::VERSIONED_V1],
        Options::default(),
    )
    .await;
    let key = gateway.first_start_key.clone().expect("key");
    let client = reqwest::Client::new();
    let echo_file = gateway.plugins_dir().join("echo.wasm");
    let serving = |body: &Value| -> Vec<(String, String)> {
        let rows = body["rows"].as_array().cloned().unwrap_or_default();
        let mut rows: Vec<(String, String)> = rows
            .iter()
            .map(|row| {
                (
                    row["id"].as_str().unwrap_or("?").to_owned(),
                    row["file"].as_str().unwrap_or("?").to_owned(),
                )
            })
            .collect();
        rows.sort();
        rows
    };
    let wait_for = |expected: Vec<(&'static str, &'static str)>, why: &'static str| {
        let (client, url) = (client.clone(), gateway.url.clone());
        async move {
            let expected: Vec<(String, String)> = expected
                .into_iter()
                .map(|(id, file)| (id.to_owned(), file.to_owned()))
                .collect();
            let started = Instant::now();
            loop {
                let plugins = send(client.get(format!("{url}/v1/plugins"))).await;
                if serving(&plugins.body) == expected {
                    return plugins.body;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "{why}: {}",
                    plugins.body
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };

    let plugins_dir = gateway.plugins_dir().display().to_string();
    let failure_of_echo_file = |id: &'static str, other: &'static str| {
        let (client, url) = (client.clone(), gateway.url.clone());
        async move {
            let started = Instant::now();
            loop {
                let plugins = send(client.get(format!("{url}/v1/plugins"))).await;
                let error = plugins.body["failures"][0]["error"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                if error.contains(&format!(
                    "approved as connector `{other}` and now declares `{id}`"
                )) {
                    return plugins.body;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "no refusal: {}",
                    plugins.body
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };

    replace_by_rename(guests::VERSIONED_V1, &echo_file);
    let refused = failure_of_echo_file("versioned", "echo").await;
    assert_eq!(
        serving(&refused),
        [("echo", "echo.wasm"), ("versioned", "versioned.wasm")].map(|(i, f)| (i.to_owned(), f.to_owned())),
        "{refused}"
    );
    // Two files declare `versioned` now: the operator names the one approved.
    let unnamed = gateway
        .cli(&["connectors", "approve", "versioned", "--plugins", &plugins_dir])
        .await
        .expect_err("two files declare it");
    assert!(
        unnamed.contains("echo.wasm, versioned.wasm") && unnamed.contains("--file"),
        "{unnamed}"
    );
    approve_file(&gateway, "versioned", "echo.wasm").await;
    let plugins = wait_for(
        vec![("versioned", "echo.wasm")],
        "echo.wasm never took `versioned` over",
    )
    .await;
    assert_eq!(
        (&plugins["shadowed"][0]["file"], &plugins["shadowed"][0]["by"]),
        (&json!("versioned.wasm"), &json!("echo.wasm")),
        "{plugins}"
    );
    // Echo's removal is logged.
    gateway
        .output_with_line(&[
            "connector removed: its file now declares another connector",
            "id=echo",
            "now=versioned",
        ])
        .await;

    replace_by_rename(guests::ECHO, &echo_file);
    failure_of_echo_file("echo", "versioned").await;
    approve_file(&gateway, "echo", "echo.wasm").await;
    let plugins = wait_for(
        vec![("echo", "echo.wasm"), ("versioned", "versioned.wasm")],
        "versioned.wasm never took its connector back",
    )
    .await;
    assert_eq!(plugins["shadowed"], json!([]), "{plugins}");
    assert_eq!(version(&client, &gateway.url, &key).await.as_deref(), Ok("1.0.0"));
}

/// Under `--no-watch`, `SIGHUP` makes the gateway look at its plugins directory again (it used
/// to end the process).
#[tokio::test(flavor = "multi_thread")]
async fn sighup_rescans_the_plugins_directory() {
    let gateway = Gateway::start(
        Path::new(SLUICE),
        &[],
        Options {
            extra_args: vec!["--no-watch".into()],
            ..Options::default()
        },
    )
    .await;
    let key = gateway.first_start_key.clone().expect("key");
    assert!(
        gateway
            .output()
            .contains("no connector components (*.wasm) in the plugins directory"),
        "an empty directory is worth a warning"
    );
    let client = reqwest::Client::new();
    std::fs::copy(guests::VERSIONED_V1, gateway.plugins_dir().join("versioned.wasm")).expect("copy");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        version(&client, &gateway.url, &key).await.is_err(),
        "not watching"
    );
    gateway.signal("HUP");
    wait_for_version(&client, &gateway, &key, "1.0.0").await;
    assert!(gateway.output().contains("SIGHUP"), "{}", gateway.output());
}

/// Replacing the whole plugins directory (an atomic deploy renames a new directory over the old
/// one), and removing it and making it again, keep hot reload going: the gateway serves what
/// the new directory holds and watches it, not the old one wherever it went.
#[tokio::test(flavor = "multi_thread")]
async fn a_replaced_plugins_directory_is_served_and_watched() {
    let gateway = Gateway::start(Path::new(SLUICE), &[guests::VERSIONED_V1], Options::default()).await;
    let key = gateway.first_start_key.clone().expect("key");
    let client = reqwest::Client::new();
    let echo_serves = |expected: bool| {
        let (client, url, key) = (client.clone(), gateway.url.clone(), key.clone());
        async move {
            let started = Instant::now();
            loop {
                let answer = send(
                    client
                        .post(format!("{url}/v1/echo/say"))
                        .bearer_auth(&key)
                        .json(&json!({"params": {}})),
                )
                .await;
                if (answer.status == 200) == expected {
                    return;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "echo serving should be {expected}: {:?}",
                    answer.body
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let plugins = gateway.plugins_dir().to_owned();
    let (next, old) = (plugins.with_extension("next"), plugins.with_extension("old"));
    std::fs::create_dir(&next).expect("next directory");
    for (source, name) in [
        (guests::VERSIONED_V1, "versioned.wasm"),
        (guests::ECHO, "echo.wasm"),
    ] {
        std::fs::copy(source, next.join(name)).expect("copy");
    }
    std::fs::rename(&plugins, &old).expect("move the old directory away");
    std::fs::rename(&next, &plugins).expect("move the new one in");
    echo_serves(true).await;
    // Changes in the new directory are the gateway's business…
    std::fs::remove_file(plugins.join("echo.wasm")).expect("remove echo");
    echo_serves(false).await;
    // …while those in the old one, wherever it went, are not.
    std::fs::copy(guests::ECHO, old.join("echo.wasm")).expect("copy");
    tokio::time::sleep(Duration::from_millis(600)).await;
    echo_serves(false).await;
    std::fs::remove_dir_all(&old).expect("remove the old directory");
    assert_eq!(version(&client, &gateway.url, &key).await.as_deref(), Ok("1.0.0"));
    // Nor are files beside the directory, which the gateway watches the parent of.
    let beside = plugins.with_extension("wasm");
    std::fs::copy(guests::ECHO, &beside).expect("copy");
    tokio::time::sleep(Duration::from_millis(600)).await;
    echo_serves(false).await;
    std::fs::remove_file(&beside).expect("remove");

    std::fs::remove_dir_all(&plugins).expect("remove the directory");
    let gone = async {
        while version(&client, &gateway.url, &key).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), gone)
        .await
        .expect("the connector goes with its file");
    std::fs::create_dir(&plugins).expect("make it again");
    std::fs::copy(guests::ECHO, plugins.join("echo.wasm")).expect("copy");
    echo_serves(true).await;
}

/// A plugins directory that is a symlink to a release, swapped for a new release's as deploys
/// do (a new link renamed over it), serves the new release; removing the old release then
/// changes nothing. (The gateway used to follow the link once, at start.)
#[tokio::test(flavor = "multi_thread")]
async fn a_plugins_symlink_swapped_to_a_new_release_is_followed() {
    let releases = tempfile::tempdir().expect("releases");
    let (v1, v2) = (releases.path().join("v1"), releases.path().join("v2"));
    for (release, components) in [
        (&v1, &[guests::VERSIONED_V1, guests::ECHO][..]),
        (&v2, &[guests::VERSIONED_V1][..]),
    ] {
        std::fs::create_dir(release).expect("release");
        for component in components {
            let name = Path::new(component).file_name().expect("name");
            std::fs::copy(component, release.join(name)).expect("copy");
        }
    }
    let current = releases.path().join("current");
    std::os::unix::fs::symlink(&v1, &current).expect("link");
    let options = Options {
        plugins_path: Some(current.clone()),
        ..Options::default()
    };
    let gateway = Gateway::start(Path::new(SLUICE), &[], options).await;
    let key = gateway.first_start_key.clone().expect("key");
    let client = reqwest::Client::new();
    let echo_status = || async {
        send(
            client
                .post(format!("{}/v1/echo/say", gateway.url))
                .bearer_auth(&key)
                .json(&json!({"params": {}})),
        )
        .await
        .status
    };
    assert_eq!(echo_status().await, 200);

    let next = releases.path().join("current.next");
    std::os::unix::fs::symlink(&v2, &next).expect("link");
    std::fs::rename(&next, &current).expect("swap the link");
    let started = Instant::now();
    while echo_status().await == 200 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the new release never served"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(version(&client, &gateway.url, &key).await.as_deref(), Ok("1.0.0"));

    std::fs::remove_dir_all(&v1).expect("remove the old release");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        version(&client, &gateway.url, &key).await.as_deref(),
        Ok("1.0.0"),
        "the new release still serves"
    );
}

/// Files added or removed while the gateway loads its connectors at start are not missed:
/// the directory is watched from the end of that first load, and looked at once more then.
#[tokio::test(flavor = "multi_thread")]
async fn changes_made_while_connectors_load_at_start_are_not_missed() {
    let options = Options {
        extra_args: vec!["--timeout-ms".into(), "3000".into()],
        ..Options::default()
    };
    let mut gateway = Gateway::start(Path::new(SLUICE), &[guests::ECHO], options).await;
    gateway.signal("TERM");
    let started = Instant::now();
    while reqwest::get(format!("{}/healthz", gateway.url)).await.is_ok() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the gateway never stopped"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A component whose describe() runs to its 3 s deadline keeps the next start loading for
    // that long; meanwhile one file comes and another goes.
    let plugins = gateway.plugins_dir().to_owned();
    std::fs::copy(guests::DESCRIBE_LOOPS, plugins.join("slow.wasm")).expect("copy");
    let meanwhile = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1000));
        std::fs::copy(guests::GITHUB, plugins.join("github.wasm")).expect("copy");
        std::fs::remove_file(plugins.join("echo.wasm")).expect("remove");
    });
    gateway.respawn().await;
    meanwhile.join().expect("changes made");
    wait_until_served_from(
        &gateway,
        "github",
        "github.wasm",
        "github.wasm, added during the load, never loaded",
    )
    .await;
    let started = Instant::now();
    while !file_serving(&gateway, "echo").await.is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "echo.wasm, removed during the load, still serves"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A load that failed because the database could not be written (here another process holds
/// its write lock; a full disk refuses the write alike) is tried again by itself: readiness
/// says so meanwhile, and the connector serves once the database takes writes again.
#[tokio::test(flavor = "multi_thread")]
async fn a_load_the_database_failed_is_tried_again() {
    let gateway = Gateway::start(Path::new(SLUICE), &[], Options::default()).await;
    let key = gateway.first_start_key.clone().expect("key");
    let client = reqwest::Client::new();
    let ready = format!("{}/readyz", gateway.url);
    let db = rusqlite::Connection::open(gateway.data_dir().join("sluice.db")).expect("open db");
    db.execute_batch("BEGIN IMMEDIATE").expect("hold the write lock");
    // A connector seen for the first time has its hosts recorded: a write, which fails once
    // the gateway's 5 s wait for the lock runs out.
    std::fs::copy(guests::VERSIONED_V1, gateway.plugins_dir().join("versioned.wasm")).expect("copy");
    let started = Instant::now();
    loop {
        let answer = send(client.get(&ready)).await;
        let message = answer.body["message"].as_str().unwrap_or_default();
        if message.contains("for want of the database") {
            assert_eq!(answer.status, 503, "{:?}", answer.body);
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "readiness never told of the failed load: {:?}",
            answer.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    db.execute_batch("COMMIT").expect("let go");
    wait_for_version(&client, &gateway, &key, "1.0.0").await;
    let answer = send(client.get(&ready)).await;
    assert_eq!(
        (answer.status, &answer.body["failed"]),
        (200, &json!(0)),
        "{:?}",
        answer.body
    );
}
