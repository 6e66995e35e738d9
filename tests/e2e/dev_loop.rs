//! The developer loop: `sluice new` scaffolds a connector, `sluice dev` builds and serves it,
//! and saving a change rebuilds and hot-reloads it; a broken build keeps the last good one.

use crate::common::{SLUICE, send};
use sluice_fixtures::Gateway;
use sluice_fixtures::gateway::Options;
use std::path::Path;
use std::time::{Duration, Instant};

/// `sluice dev --sources <sources>`, as the gateway fixture's command.
fn dev_command(sources: &Path) -> Vec<String> {
    vec!["dev".into(), "--sources".into(), sources.display().to_string()]
}

async fn served_version(gateway: &Gateway, id: &str) -> Option<String> {
    let plugins = send(reqwest::Client::new().get(format!("{}/v1/plugins", gateway.url))).await;
    plugins.body["rows"]
        .as_array()?
        .iter()
        .find(|row| row["id"] == id)
        .and_then(|row| row["version"].as_str().map(str::to_owned))
}

/// The output of `source`'s failed build in `GET /v1/plugins`, once it shows (`failed`) or once
/// it is gone (not `failed`); waits up to two minutes for that.
async fn failed_build_output_once(gateway: &Gateway, source: &str, failed: bool) -> Option<String> {
    let started = Instant::now();
    loop {
        let plugins = send(reqwest::Client::new().get(format!("{}/v1/plugins", gateway.url))).await;
        let output = plugins.body["builds"]["failed"]
            .as_array()
            .and_then(|builds| builds.iter().find(|build| build["source"] == source))
            .and_then(|build| build["output"].as_str().map(str::to_owned));
        if output.is_some() == failed {
            return output;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{source}'s failed build did not {}: {:?}",
            if failed { "show" } else { "go" },
            plugins.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The repository's root.
fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace")
}

/// `sluice new <id>` (Rust) in `sources`, run from the repository with `--sdk sdk-guest`: the
/// SDK's path relative to where `sluice new` runs. Returns the crate's directory.
fn new_rust_connector(id: &str, sources: &Path) -> std::path::PathBuf {
    sluice_new(id, sources, &["--sdk", "sdk-guest"])
}

/// `sluice new <id> --dir <sources> <args>`, run from the repository; returns the new
/// connector's directory.
fn sluice_new(id: &str, sources: &Path, args: &[&str]) -> std::path::PathBuf {
    let scaffold = std::process::Command::new(SLUICE)
        .args(["new", id, "--dir"])
        .arg(sources)
        .args(args)
        .current_dir(workspace())
        .output()
        .expect("sluice new");
    assert!(
        scaffold.status.success(),
        "{}",
        String::from_utf8_lossy(&scaffold.stderr)
    );
    sources.join(id)
}

#[tokio::test(flavor = "multi_thread")]
async fn dev_rebuilds_on_save_and_keeps_the_last_good_build() {
    let workspace = workspace();
    let sources = tempfile::tempdir().expect("tempdir");
    // An id with `-` (which is not a Rust name): the crate must build all the same.
    let krate = new_rust_connector("hello-dev", sources.path());

    // Share compiled dependencies between runs; the crate lives outside the workspace.
    let target_dir = workspace.join("target").join("dev-loop");
    // `--sources` relative to the gateway's working directory (this test's), as with the
    // default `--sources plugins`: file events name absolute paths all the same.
    let here = std::env::current_dir().expect("cwd");
    let up = "../".repeat(here.components().count() - 1);
    let relative_sources = format!(
        "{up}{}",
        sources.path().display().to_string().trim_start_matches('/')
    );
    let gateway = Gateway::start(
        Path::new(SLUICE),
        &[],
        Options {
            command: Some(vec!["dev".into(), "--sources".into(), relative_sources]),
            env: vec![("CARGO_TARGET_DIR".into(), target_dir.display().to_string())],
            ..Options::default()
        },
    )
    .await;
    assert_eq!(
        served_version(&gateway, "hello-dev").await.as_deref(),
        Some("0.1.0")
    );

    let manifest = krate.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest).expect("manifest");
    let saved = Instant::now();
    // The new version also moves to another host: under `sluice dev` it loads all the same (the
    // author's own connector), with a warning that names the host.
    let lib = krate.join("src").join("lib.rs");
    let first_source = std::fs::read_to_string(&lib).expect("source");
    let source = first_source.replace("https://api.example.com", "https://api.example.org");
    assert_ne!(source, first_source, "the template's base URL moved");
    std::fs::write(&lib, &source).expect("save the source");
    std::fs::write(
        &manifest,
        text.replace("version = \"0.1.0\"", "version = \"0.2.0\""),
    )
    .expect("save");
    while served_version(&gateway, "hello-dev").await.as_deref() != Some("0.2.0") {
        assert!(
            saved.elapsed() < Duration::from_secs(120),
            "the change was never served: {}",
            gateway.output()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("sluice dev: save to new version serving in {:?}", saved.elapsed());
    let output = gateway.output();
    assert!(
        output
            .lines()
            .any(|line| line.contains("sluice dev approved the new outbound hosts")
                && line.contains("+https://api.example.org")),
        "{output}"
    );

    std::fs::write(&lib, format!("{source}\nthis is not rust\n")).expect("break the build");
    let started = Instant::now();
    while !gateway
        .output()
        .contains("failed; the last good version keeps serving")
    {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the failed build was not reported"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        gateway.output().contains("error"),
        "the compiler's errors are shown"
    );
    assert_eq!(
        served_version(&gateway, "hello-dev").await.as_deref(),
        Some("0.2.0")
    );
    // The failure is in /v1/plugins too, for an editor or agent that reads no terminal...
    let plugins = send(reqwest::Client::new().get(format!("{}/v1/plugins", gateway.url))).await;
    let failed = &plugins.body["builds"]["failed"][0];
    assert_eq!(failed["source"], "hello-dev", "{:?}", plugins.body);
    assert!(
        failed["output"]
            .as_str()
            .is_some_and(|output| output.contains("error")),
        "{failed}"
    );
    let sources_path = sources
        .path()
        .canonicalize()
        .expect("canonical")
        .display()
        .to_string();
    assert!(
        !failed["output"]
            .as_str()
            .unwrap_or_default()
            .contains(&sources_path),
        "the route takes no key: no paths of the machine in it: {failed}"
    );
    // ...until the connector builds again.
    std::fs::write(&lib, &source).expect("mend the build");
    assert!(
        failed_build_output_once(&gateway, "hello-dev", false)
            .await
            .is_none()
    );
    // Under `sluice dev` every request is shown as it happens.
    let output = gateway.output();
    assert!(
        output
            .lines()
            .any(|line| line.contains("request done") && line.contains("/v1/plugins")),
        "{output}"
    );

    // Renaming the connector and then undoing the rename serves it under each id in turn:
    // the author's own build going back to its id is no takeover.
    let renamed = source.replace(r#"Manifest::new("hello-dev""#, r#"Manifest::new("hello-renamed""#);
    assert_ne!(renamed, source, "the template names its id");
    for (text, id) in [(&renamed, "hello-renamed"), (&source, "hello-dev")] {
        std::fs::write(&lib, text).expect("save the id");
        let saved = Instant::now();
        while served_version(&gateway, id).await.is_none() {
            assert!(
                saved.elapsed() < Duration::from_secs(120),
                "{id} was never served: {}",
                gateway.output()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert!(
        gateway
            .output()
            .contains("sluice dev let its own build serve a connector"),
        "{}",
        gateway.output()
    );

    // A Cargo.toml cargo cannot read is a failed build too, in /v1/plugins; the last good
    // build keeps serving.
    let good_manifest = std::fs::read_to_string(&manifest).expect("manifest");
    std::fs::write(&manifest, format!("{good_manifest}\nthis is not toml [\n")).expect("break it");
    let output = failed_build_output_once(&gateway, "hello-dev", true).await;
    assert!(
        output.is_some_and(|output| output.contains("cargo cannot read hello-dev/Cargo.toml")),
        "{}",
        gateway.output()
    );
    assert!(served_version(&gateway, "hello-dev").await.is_some());
    std::fs::write(&manifest, &good_manifest).expect("mend it");
    assert!(
        failed_build_output_once(&gateway, "hello-dev", false)
            .await
            .is_none()
    );
    // Each save compiled a new version; only the one serving is kept compiled.
    let cached: Vec<_> = std::fs::read_dir(gateway.data_dir().join("cache"))
        .expect("the cache")
        .filter_map(Result::ok)
        .filter(|entry| entry.path().extension().is_some_and(|ext| ext == "cwasm"))
        .collect();
    assert_eq!(cached.len(), 1, "{cached:?}");
}

/// `sluice dev` rebuilds a connector in another language (here JavaScript) through its
/// `build.sh` when a file changes, and a broken build keeps the last good version serving.
#[tokio::test(flavor = "multi_thread")]
async fn dev_rebuilds_a_javascript_connector_on_save() {
    if crate::languages::component("stripe", sluice_fixtures::guests::STRIPE).is_none() {
        return;
    }
    let workspace = workspace();
    let sources = tempfile::tempdir().expect("tempdir");
    let connector = sources.path().join("stripe");
    std::fs::create_dir(&connector).expect("connector dir");
    for file in ["build.sh", "connector.js", "package.json", "package-lock.json"] {
        std::fs::copy(workspace.join("plugins/stripe").join(file), connector.join(file)).expect("copy");
    }
    let gateway = Gateway::start(
        Path::new(SLUICE),
        &[],
        Options {
            command: Some(dev_command(sources.path())),
            // The copy lives outside the repository: point it at the shared build helpers
            // (which locate the WIT and the pinned tools).
            env: vec![(
                "SLUICE_PLUGINS_LIB".into(),
                workspace.join("plugins/lib").display().to_string(),
            )],
            // Components written to a directory named relative to the gateway's working
            // directory, as with the default `target/sluice-dev/connectors`: `build.sh` runs
            // in the connector's directory, and must still write there.
            relative_plugins: true,
            ..Options::default()
        },
    )
    .await;
    assert_eq!(served_version(&gateway, "stripe").await.as_deref(), Some("0.1.0"));

    let source = connector.join("connector.js");
    let text = std::fs::read_to_string(&source).expect("source");
    let version = |v: &str| {
        text.replace(
            r#"const VERSION = "0.1.0";"#,
            &format!(r#"const VERSION = "{v}";"#),
        )
    };
    let saved = Instant::now();
    std::fs::write(&source, version("0.1.5")).expect("save");
    // Saved again while that build runs (it starts after a 300 ms pause and takes seconds):
    // the later save is the one served in the end.
    tokio::time::sleep(Duration::from_millis(800)).await;
    std::fs::write(&source, version("0.2.0")).expect("save again");
    while served_version(&gateway, "stripe").await.as_deref() != Some("0.2.0") {
        assert!(
            saved.elapsed() < Duration::from_secs(120),
            "the change was never served:\n{}",
            gateway.output()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "sluice dev (JavaScript): save to new version serving in {:?}",
        saved.elapsed()
    );

    std::fs::write(&source, format!("{text}\nthis is not javascript(\n")).expect("break the build");
    let started = Instant::now();
    while !gateway
        .output()
        .contains("failed; the last good version keeps serving")
    {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the failed build was not reported"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(served_version(&gateway, "stripe").await.as_deref(), Some("0.2.0"));

    // Deleting the connector's directory takes its component away too: it was served until
    // removed by hand, restarts included.
    std::fs::remove_dir_all(&connector).expect("delete the connector");
    let deleted = Instant::now();
    while served_version(&gateway, "stripe").await.is_some() {
        assert!(
            deleted.elapsed() < Duration::from_secs(30),
            "the deleted connector is still served:\n{}",
            gateway.output()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        gateway.output().contains("is gone; removed"),
        "{}",
        gateway.output()
    );
}

/// The crate `sluice new` writes comes with a unit test that runs natively with `cargo test`,
/// against `sluice_sdk::testing`'s fake upstream: no gateway, no WebAssembly.
#[tokio::test(flavor = "multi_thread")]
async fn a_new_rust_connectors_own_test_passes_with_cargo_test() {
    let sources = tempfile::tempdir().expect("tempdir");
    let krate = new_rust_connector("unit-tested", sources.path());
    let mut test = tokio::process::Command::new(env!("CARGO"));
    test.args(["test", "--quiet"])
        .env("CARGO_TARGET_DIR", workspace().join("target").join("dev-loop"))
        .current_dir(krate);
    let printed = run_to_success(test, Duration::from_secs(600)).await;
    assert!(printed.contains("1 passed"), "the template's test ran: {printed}");
}

/// Run `command` to its end within `limit`; its stdout and stderr, once it succeeded.
async fn run_to_success(mut command: tokio::process::Command, limit: Duration) -> String {
    let output = tokio::time::timeout(limit, command.output())
        .await
        .expect("the command finishes")
        .expect("the command runs");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{printed}");
    printed
}

/// The JavaScript connector `sluice new` writes comes with unit tests that `npm test` runs
/// under `node --test`, against the fake gateway in its `testing/`: no build, no gateway.
#[tokio::test(flavor = "multi_thread")]
async fn a_new_javascript_connectors_own_tests_pass_with_npm_test() {
    let npm_runs = std::process::Command::new("npm")
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success());
    if crate::languages::component("JavaScript (npm)", npm_runs.then_some("")).is_none() {
        return;
    }
    let sources = tempfile::tempdir().expect("tempdir");
    let connector = sluice_new("unit-tested-js", sources.path(), &["--lang", "javascript"]);
    let mut test = tokio::process::Command::new("npm");
    test.args(["test", "--silent"]).current_dir(connector);
    let printed = run_to_success(test, Duration::from_secs(120)).await;
    assert!(
        printed.contains("# pass 3"),
        "the template's tests ran: {printed}"
    );
}

/// Scaffold connector `id` in `language` with `sluice new` into a directory outside the
/// repository, and build it with its own `build.sh` into `components`. `None` (after saying
/// so loudly, or failing in CI) when the language's toolchain is missing.
async fn new_script_connector(id: &str, language: &str, sources: &Path, components: &Path) -> Option<String> {
    let workspace = workspace();
    let scaffold = std::process::Command::new(SLUICE)
        .args(["new", id, "--lang", language, "--dir"])
        .arg(sources)
        .output()
        .expect("sluice new");
    let said = String::from_utf8_lossy(&scaffold.stderr);
    assert!(scaffold.status.success(), "{said}");
    // Outside the repository the build helpers and the contract are written beside it.
    assert!(said.contains("the build helpers"), "{said}");
    assert!(sources.join("lib/wit/connector.wit").is_file());

    // Only what `sluice new` wrote: no checkout's helpers or contract. The pinned tools are the
    // ones the test fixtures installed for plugins/stripe and plugins/slack (the same pins), so
    // nothing is downloaded.
    let build = tokio::process::Command::new("bash")
        .arg(sources.join(id).join("build.sh"))
        .arg(components)
        .env_remove("SLUICE_PLUGINS_LIB")
        .env_remove("SLUICE_WIT_DIR")
        .env("SLUICE_TOOLS_DIR", workspace.join("target/lang-tools"))
        .current_dir(sources.join(id))
        .output();
    let build = tokio::time::timeout(Duration::from_secs(600), build)
        .await
        .expect("the build finishes")
        .expect("bash build.sh");
    let log = String::from_utf8_lossy(&build.stderr);
    match build.status.code() {
        Some(0) => {}
        // The toolchain is missing: skipped loudly here, an error in CI.
        Some(3) => return crate::languages::component(id, None).map(str::to_owned),
        _ => panic!("building the new {language} connector failed:\n{log}"),
    }
    let component = components.join(format!("{id}.wasm"));
    assert!(component.is_file(), "{log}");
    Some(component.display().to_string())
}

/// What a connector from `sluice new --lang <language>` does out of the box, served by a real
/// gateway: `echo` answers and logs through `console.log` / `print()`, its schema is enforced,
/// `get_item` reaches the upstream with the credential the host injects and its optional query
/// parameter, and `create_item` sends its JSON body.
async fn new_script_connector_runs(id: &str, language: &str, log_marker: &str) {
    let sources = tempfile::tempdir().expect("tempdir");
    let components = tempfile::tempdir().expect("tempdir");
    let Some(component) = new_script_connector(id, language, sources.path(), components.path()).await else {
        return;
    };
    let setup = crate::languages::Connected::start(&component, id, "sk_new_connector_secret", "", |_| {
        sluice_fixtures::Reply::json(200, serde_json::json!({"id": "a/b", "name": "Widget"}))
    })
    .await;

    let echoed = setup
        .execute(id, "echo", serde_json::json!({"message": "héllo ✓"}))
        .await;
    assert_eq!(
        echoed.body,
        serde_json::json!({"status": 200, "data": {"message": "héllo ✓"}}),
        "{}",
        setup.gateway.output()
    );
    let transaction = echoed.headers["x-transaction-key"].to_str().expect("key");
    setup
        .gateway
        .output_with_line(&[transaction, log_marker, &format!("{id} echoes")])
        .await;

    let refused = setup.execute(id, "echo", serde_json::json!({})).await;
    assert_eq!(refused.status, 400, "{:?}", refused.body);

    let item = setup
        .execute(id, "get_item", serde_json::json!({"id": "a/b"}))
        .await;
    assert_eq!(
        item.body,
        serde_json::json!({"status": 200, "data": {"id": "a/b", "name": "Widget"}})
    );
    let sent = setup.only_request();
    assert_eq!(
        (sent.method.as_str(), sent.path.as_str(), sent.query.as_deref()),
        ("GET", "/items/a%2Fb", None),
        "no query parameter without `fields`"
    );
    assert_eq!(
        sent.header("authorization"),
        Some("Bearer sk_new_connector_secret")
    );

    let fields = setup
        .execute(
            id,
            "get_item",
            serde_json::json!({"id": "7", "fields": "name,size & more"}),
        )
        .await;
    assert_eq!(fields.status, 200, "{:?}", fields.body);
    let created = setup
        .execute(id, "create_item", serde_json::json!({"name": "Widget ✓"}))
        .await;
    assert_eq!(created.status, 200, "{:?}", created.body);
    let requests = setup.requests();
    let [_, with_fields, create] = requests.as_slice() else {
        panic!("three requests: {requests:#?}");
    };
    assert_eq!(
        (with_fields.path.as_str(), with_fields.query.as_deref()),
        ("/items/7", Some("fields=name%2Csize%20%26%20more"))
    );
    assert_eq!((create.method.as_str(), create.path.as_str()), ("POST", "/items"));
    assert_eq!(create.header("content-type"), Some("application/json"));
    assert_eq!(create.json(), serde_json::json!({"name": "Widget ✓"}));
}

/// `sluice new --lang javascript` writes a connector that builds outside the repository and
/// whose `console.log` reaches the gateway's log (at info level).
#[tokio::test(flavor = "multi_thread")]
async fn new_javascript_connector_builds_runs_and_logs() {
    new_script_connector_runs("hello-js", "javascript", "INFO").await;
}

/// `sluice new --lang py` (the alias) writes a connector that builds outside the repository
/// and whose `print()` reaches the gateway's log (as the connector's stdout).
#[tokio::test(flavor = "multi_thread")]
async fn new_python_connector_builds_runs_and_logs() {
    new_script_connector_runs("hello_py", "py", "stream=\"stdout\"").await;
}

/// A copied connector directory whose `build.sh` still writes the original's component fails
/// its build, saying so, instead of overwriting the original: `sluice dev` publishes only
/// `<directory name>.wasm` from what a script wrote.
#[tokio::test(flavor = "multi_thread")]
async fn a_build_script_writing_another_connectors_component_fails_and_overwrites_nothing() {
    let sources = tempfile::tempdir().expect("tempdir");
    let write_script = |dir: &str, writes: &str| {
        let connector = sources.path().join(dir);
        std::fs::create_dir_all(&connector).expect("connector dir");
        let script = format!("cp '{}' \"$1/{writes}.wasm\"\n", sluice_fixtures::guests::ECHO);
        std::fs::write(connector.join("build.sh"), script).expect("build.sh");
    };
    write_script("echo", "echo");
    let gateway = Gateway::start(
        Path::new(SLUICE),
        &[],
        Options {
            command: Some(dev_command(sources.path())),
            ..Options::default()
        },
    )
    .await;
    assert!(
        served_version(&gateway, "echo").await.is_some(),
        "{}",
        gateway.output()
    );
    let echo = gateway.plugins_dir().join("echo.wasm");
    let before = std::fs::metadata(&echo)
        .and_then(|m| m.modified())
        .expect("echo.wasm");

    write_script("copy", "echo");
    let output = failed_build_output_once(&gateway, "copy", true)
        .await
        .expect("failed");
    assert!(output.contains("wrote echo.wasm, not copy.wasm"), "{output}");
    assert!(
        !output.contains(&gateway.plugins_dir().display().to_string()),
        "no paths: {output}"
    );
    let after = std::fs::metadata(&echo)
        .and_then(|m| m.modified())
        .expect("echo.wasm");
    assert_eq!(before, after, "the original's component is untouched");
    assert!(!gateway.plugins_dir().join("copy.wasm").exists());
    let staged: Vec<_> = std::fs::read_dir(gateway.plugins_dir())
        .expect("plugins")
        .map(|entry| entry.expect("entry").file_name())
        .collect();
    assert_eq!(staged.len(), 1, "nothing left behind: {staged:?}");

    // Mended, it builds as itself.
    write_script("copy", "copy");
    failed_build_output_once(&gateway, "copy", false).await;
    assert!(gateway.plugins_dir().join("copy.wasm").exists());
}
