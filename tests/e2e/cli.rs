//! The command line checks what it is given as the gateway and the vault API would: a
//! connection the gateway could not use, a key in a database the gateway does not read, settings
//! no gateway can run with, and a connector crate the loader would refuse are refused at once,
//! with a message saying what to do.

use crate::common::{SECRET, SLUICE, Setup, send};
use reqwest::Method;
use serde_json::{Value, json};
use sluice_fixtures::gateway::Options;
use sluice_fixtures::{Gateway, guests};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

/// Secrets of the connections the `connections list` and `remove` tests add besides
/// [`SECRET`]; no command may print any of them.
const ALICE_SECRET: &str = "ghp_cliALICEsecret0123456789";
const BOB_SECRET: &str = "ghp_cliBOBsecret0123456789";

/// Run the binary with `args` (and no inherited Sluice settings).
fn sluice(args: &[&str], dir: Option<&Path>) -> Output {
    let mut command = std::process::Command::new(SLUICE);
    command
        .args(args)
        .env_remove("SLUICE_MASTER_KEY")
        .env_remove("SLUICE_ADMIN_KEY");
    if let Some(dir) = dir {
        command.current_dir(dir);
    }
    command.output().expect("run sluice")
}

/// The error the command printed; panics if it succeeded.
fn refusal(output: &Output) -> String {
    assert!(
        !output.status.success(),
        "expected a refusal, got success: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `connections add` refuses what `POST /v1/vault/connections` refuses, and stores nothing then.
#[tokio::test(flavor = "multi_thread")]
async fn connections_add_checks_what_the_vault_api_checks() {
    let gateway = Gateway::start(
        Path::new(SLUICE),
        &[guests::GITHUB, guests::ECHO],
        Options::default(),
    )
    .await;
    let key = gateway.first_start_key.clone().expect("first start key");
    let plugins = gateway.plugins_dir().to_str().expect("UTF-8").to_owned();
    let add = |integration: &'static str, secret: &'static str, extra: &'static [&'static str]| {
        let mut args = vec!["connections", "add", integration, "--secret", secret, "--plugins"];
        args.push(&plugins);
        args.extend_from_slice(extra);
        let gateway = &gateway;
        async move { gateway.cli(&args).await }
    };
    let refused = [
        (
            add("nosuch", "ghp_tok123", &[]).await,
            "no integration named `nosuch`",
        ),
        (
            add("echo", "ghp_tok123", &[]).await,
            "`echo` needs no credentials",
        ),
        (
            add(
                "github",
                "ghp_tok123",
                &["--identity", "alice", "--identity-type", "robot"],
            )
            .await,
            "--identity-type must be one of user, team, organization, project, not `robot`",
        ),
        (
            add("github", "ghp_tok123", &["--base-url", "notaurl"]).await,
            "--base-url is not a URL",
        ),
        (
            add("github", "ghp_tok123", &["--base-url", "http://127.0.0.1:9"]).await,
            "--base-url must be an https URL with a host: the connection's credential is sent to it \
             (plain http is allowed with --allow-private-upstreams",
        ),
        (
            add("github", "ghp_tok123", &["--identity-type", "user"]).await,
            "required arguments were not provided:\n  --identity <IDENTITY>",
        ),
        (add("github", "   ", &[]).await, "--secret must not be empty"),
        (
            add("github", "abcd", &[]).await,
            "--secret is shorter than 6 characters",
        ),
        (
            add("github", "ghp_token\n", &[]).await,
            "--secret contains a control character (\\n) at character 10",
        ),
        (
            add("github", "ghp\r\ntoken", &[]).await,
            "--secret contains a control character (\\r) at character 4",
        ),
        (
            add("github", "ghp_token", &["--env", "staging"]).await,
            "unknown environment `staging`",
        ),
    ];
    for (answer, expected) in refused {
        let error = answer.expect_err(expected);
        assert!(error.contains(expected), "expected `{expected}` in: {error}");
    }

    let https = add(
        "github",
        "ghp_token",
        &["--base-url", "https://ghe.acme.corp/api/v3"],
    )
    .await;
    let local = add(
        "github",
        "ghp_token",
        &[
            "--identity",
            "dev",
            "--base-url",
            "http://127.0.0.1:9",
            "--allow-private-upstreams",
        ],
    )
    .await;
    assert!(https.is_ok() && local.is_ok(), "{https:?} {local:?}");
    let listed = send(
        reqwest::Client::new()
            .request(Method::GET, format!("{}/v1/vault/connections", gateway.url))
            .bearer_auth(&key),
    )
    .await;
    assert_eq!(
        listed.body["total"], 2,
        "only the two accepted connections were stored: {:?}",
        listed.body
    );

    let zero_days = gateway
        .cli(&["keys", "create", "--expires-in-days", "0"])
        .await
        .expect_err("an already expired key");
    assert!(zero_days.contains("--expires-in-days"), "{zero_days}");
}

/// Changing a token from the command line: a second connection for the same owner is added
/// with a warning (calls naming no connection become ambiguous), while `--replace` puts the new
/// secret into the existing connection, whose key stays, and calls use it at once.
#[tokio::test(flavor = "multi_thread")]
async fn connections_add_replace_changes_a_token_in_place() {
    let setup = Setup::new().await;
    let plugins = setup.gateway.plugins_dir().to_str().expect("UTF-8").to_owned();
    let add = |secret: &'static str, extra: &'static [&'static str]| {
        let mut args = vec![
            "connections",
            "add",
            "github",
            "--secret",
            secret,
            "--plugins",
            &plugins,
            "--allow-private-upstreams",
        ];
        args.extend_from_slice(extra);
        let gateway = &setup.gateway;
        async move { gateway.cli_output(&args).await }
    };
    let replaced = add("ghp_rotated_token_2", &["--replace"]).await;
    assert!(
        replaced.status.success(),
        "{}",
        String::from_utf8_lossy(&replaced.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&replaced.stdout).trim(),
        setup.connection_key,
        "the key stays"
    );
    let answer = setup.get_repo().await;
    assert_eq!(answer.body["status"], 200, "{:?}", answer.body);
    let sent = setup.upstream_requests().pop().expect("sent");
    assert_eq!(sent.header("authorization"), Some("Bearer ghp_rotated_token_2"));

    let second = add("ghp_another_token3", &[]).await;
    assert!(second.status.success());
    let warning = String::from_utf8_lossy(&second.stderr);
    assert!(
        warning.contains("already has an active connection with no identity")
            && warning.contains(&setup.connection_key)
            && warning.contains("--replace"),
        "{warning}"
    );
    // Now there are two: `--replace` does not guess which.
    let ambiguous = add("ghp_third_token_4", &["--replace"]).await;
    assert!(!ambiguous.status.success());
    assert!(
        String::from_utf8_lossy(&ambiguous.stderr).contains("--replace does not know which"),
        "{}",
        String::from_utf8_lossy(&ambiguous.stderr)
    );

    // With --identity-type, --replace looks only at that type: user nora is not team nora.
    let stdout = |output: &std::process::Output| String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let user = add(
        "ghp_nora_user_5",
        &["--identity", "nora", "--identity-type", "user", "--replace"],
    )
    .await;
    assert!(user.status.success(), "{}", String::from_utf8_lossy(&user.stderr));
    let team = add(
        "ghp_nora_team_6",
        &["--identity", "nora", "--identity-type", "team", "--replace"],
    )
    .await;
    assert!(team.status.success(), "{}", String::from_utf8_lossy(&team.stderr));
    assert_ne!(stdout(&team), stdout(&user), "a connection of its own");
    let warning = String::from_utf8_lossy(&team.stderr);
    assert!(warning.contains("of another identity type"), "{warning}");
    let user_again = add(
        "ghp_nora_user_7",
        &["--identity", "nora", "--identity-type", "user", "--replace"],
    )
    .await;
    assert_eq!(stdout(&user_again), stdout(&user), "user nora's, not team nora's");
    setup.assert_secret_not_logged();
}

/// A scope naming a connector that never loaded on this gateway (a typo, most likely) makes
/// the key with a warning; one that did, without.
#[tokio::test(flavor = "multi_thread")]
async fn a_scope_naming_an_unknown_connector_is_warned_of() {
    let gateway = Gateway::start(Path::new(SLUICE), &[guests::ECHO], Options::default()).await;
    let typo = gateway.cli_output(&["keys", "create", "--scope", "ehco"]).await;
    assert!(typo.status.success(), "the key is made all the same");
    let warned = String::from_utf8_lossy(&typo.stderr);
    assert!(warned.contains("no connector `ehco` has loaded"), "{warned}");
    let known = gateway.cli_output(&["keys", "create", "--scope", "echo"]).await;
    assert!(known.status.success());
    assert!(!String::from_utf8_lossy(&known.stderr).contains("warning"));
}

/// `sluice logs` shows an operator the request log without an API key: newest first, one line
/// per call, filtered by integration, outcome or transaction key.
#[tokio::test(flavor = "multi_thread")]
async fn logs_show_calls_newest_first() {
    let gateway = Gateway::start(Path::new(SLUICE), &[guests::ECHO], Options::default()).await;
    let key = gateway.first_start_key.clone().expect("key");
    let client = reqwest::Client::new();
    let mut transactions = Vec::new();
    for body in [
        json!({"params": {"message": "hi"}}),
        json!({"params": "not an object"}),
    ] {
        let answer = send(
            client
                .post(format!("{}/v1/echo/say", gateway.url))
                .bearer_auth(&key)
                .json(&body),
        )
        .await;
        let transaction = answer.headers["x-transaction-key"].to_str().expect("ascii");
        transactions.push(transaction.to_owned());
    }
    // Rows are written in batches: wait for both.
    let started = std::time::Instant::now();
    let listed = loop {
        let listed = gateway
            .cli(&["logs", "--integration", "echo"])
            .await
            .expect("logs");
        if listed.lines().count() >= 2 {
            break listed;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "{listed}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let lines: Vec<&str> = listed.lines().collect();
    assert!(
        lines[0].contains(&transactions[1]) && lines[0].contains("\tbad_request\techo/say\t400"),
        "newest first: {listed}"
    );
    assert!(
        lines[1].contains(&transactions[0]) && lines[1].contains("\tok\t"),
        "{listed}"
    );
    let refused = gateway
        .cli(&["logs", "--outcome", "bad_request"])
        .await
        .expect("logs");
    assert_eq!(refused.lines().count(), 1, "{refused}");
    let one = gateway
        .cli(&["logs", "--transaction-key", &transactions[0]])
        .await
        .expect("logs");
    assert_eq!(one.lines().count(), 1, "{one}");
    // Echo needs no connection: no call was made with one.
    let by_connection = gateway
        .cli(&["logs", "--connection-key", "test::echo::default::x"])
        .await
        .expect("logs");
    assert!(by_connection.is_empty(), "{by_connection}");
    let live = gateway.cli(&["logs", "--env", "live"]).await.expect("logs");
    assert!(live.is_empty(), "the calls were test calls: {live}");
    let test = gateway.cli(&["logs", "--env", "test"]).await.expect("logs");
    assert_eq!(test.lines().count(), 2, "{test}");
    // Without --env, both environments: a live call's transaction key is found as it is.
    let live_key = gateway.create_key("live", "*").await;
    let live_call = send(
        reqwest::Client::new()
            .post(format!("{}/v1/echo/say", gateway.url))
            .bearer_auth(&live_key)
            .json(&json!({"params": {}})),
    )
    .await;
    let live_transaction = live_call.headers["x-transaction-key"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let started = std::time::Instant::now();
    loop {
        let found = gateway
            .cli(&["logs", "--transaction-key", &live_transaction])
            .await
            .expect("logs");
        if found.lines().count() == 1 {
            break;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "{found}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let typo = gateway
        .cli(&["logs", "--outcome", "bad_reqest"])
        .await
        .expect_err("refused");
    assert!(typo.contains("--outcome must be one of"), "{typo}");
}

/// `keys list` shows what limits a key: its expiry, daily quota, per-minute limit and calls in
/// flight.
#[tokio::test(flavor = "multi_thread")]
async fn keys_list_shows_expiry_and_limits() {
    let gateway = Gateway::start(Path::new(SLUICE), &[guests::ECHO], Options::default()).await;
    let created = gateway
        .cli(&[
            "keys",
            "create",
            "--expires-in-days",
            "3",
            "--daily-quota",
            "100",
            "--per-minute",
            "5",
            "--max-in-flight",
            "7",
            "--name",
            "nightly bot",
        ])
        .await
        .expect("key created");
    let prefix = &created[..12];
    let listed = gateway.cli(&["keys", "list"]).await.expect("keys listed");
    let line = listed
        .lines()
        .find(|line| line.starts_with(prefix))
        .unwrap_or_else(|| panic!("{prefix} in {listed}"));
    let columns: Vec<&str> = line.split('\t').collect();
    assert!(
        columns[1]
            .strip_prefix("id=")
            .is_some_and(|id| id.parse::<i64>().is_ok()),
        "{line}"
    );
    assert_eq!(columns[2..5], ["test", "active", "scope=*"], "{line}");
    let expires = columns[5].strip_prefix("expires=").expect("an expiry column");
    assert!(expires.ends_with('Z') && expires.len() == 20, "{line}");
    assert_eq!(
        columns[6..],
        ["daily=100", "per_minute=5", "in_flight=7", "nightly bot"],
        "{line}"
    );
    // The first start's key has none of these limits, nor a name.
    let unlimited = listed
        .lines()
        .find(|line| !line.starts_with(prefix))
        .expect("first key");
    assert!(
        unlimited.ends_with("\texpires=never\tdaily=-\tper_minute=-\tin_flight=-\t-"),
        "{unlimited}"
    );
}

/// Limits that would refuse every call, and scopes that would match no connector, are refused;
/// a key is revoked by itself as well as by its prefix or id, and never echoed.
#[tokio::test(flavor = "multi_thread")]
async fn keys_that_cannot_work_are_refused_and_keys_are_revoked_by_key_prefix_or_id() {
    let gateway = Gateway::start(Path::new(SLUICE), &[guests::ECHO], Options::default()).await;
    for (args, expected) in [
        (&["--daily-quota", "0"][..], "0 is not in 1.."),
        (&["--per-minute", "0"], "0 is not in 1.."),
        (&["--max-in-flight", "0"], "0 is not in 1.."),
        (&["--scope", "GitHub"], "`GitHub` is not an integration id"),
    ] {
        let mut command = vec!["keys", "create"];
        command.extend(args);
        let error = gateway.cli(&command).await.expect_err("refused");
        assert!(error.contains(expected), "{args:?}: {error}");
    }
    let status_of = |listed: &str, key: &str| -> Option<String> {
        let line = listed.lines().find(|line| line.starts_with(&key[..12]))?;
        line.split('\t').nth(3).map(str::to_owned)
    };
    let by_key = gateway.cli(&["keys", "create"]).await.expect("key created");
    let revoked = gateway.cli_output(&["keys", "revoke", &by_key]).await;
    assert!(revoked.status.success(), "{revoked:?}");
    let said = String::from_utf8_lossy(&revoked.stderr);
    assert!(
        said.starts_with("revoked key ") && !said.contains(&by_key),
        "{said}"
    );
    let by_id = gateway.cli(&["keys", "create"]).await.expect("key created");
    let listed = gateway.cli(&["keys", "list"]).await.expect("keys listed");
    let id = listed
        .lines()
        .find(|line| line.starts_with(&by_id[..12]))
        .and_then(|line| line.split('\t').nth(1)?.strip_prefix("id=").map(str::to_owned))
        .expect("an id column");
    gateway
        .cli(&["keys", "revoke", &id])
        .await
        .expect("revoked by id");
    // A mistyped key is not echoed back.
    let mistyped = format!("{by_id}x");
    let error = gateway
        .cli(&["keys", "revoke", &mistyped])
        .await
        .expect_err("no such key");
    assert!(
        error.contains("no active key matches") && !error.contains(&mistyped),
        "{error}"
    );

    let listed = gateway.cli(&["keys", "list"]).await.expect("keys listed");
    for key in [&by_key, &by_id] {
        assert_eq!(status_of(&listed, key).as_deref(), Some("revoked"), "{listed}");
    }
}

/// Commands that manage a gateway's state never create a new, empty one: a key or connection
/// stored there would never reach the gateway.
#[test]
fn state_commands_refuse_a_data_dir_without_a_database() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing");
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).expect("empty dir");
    // A restore that copied an empty file (a backup that failed) is no database either.
    let empty_file = dir.path().join("empty-file");
    std::fs::create_dir(&empty_file).expect("dir");
    std::fs::write(empty_file.join("sluice.db"), b"").expect("empty database file");
    for data_dir in [&missing, &empty, &empty_file] {
        let data_dir = data_dir.to_str().expect("UTF-8");
        for command in [
            &["keys", "create"][..],
            &["keys", "list"],
            &["keys", "revoke", "sk_test_abcd"],
            &["connections", "add", "github", "--secret", "ghp_tok123"],
            &["connections", "list"],
            &["connections", "remove", "test::github::default::0123"],
            &["vault", "rotate-key"],
            &["oauth-apps", "list"],
            &["connectors", "approve", "github"],
        ] {
            let mut args = command.to_vec();
            args.extend(["--data-dir", data_dir]);
            let error = refusal(&sluice(&args, None));
            assert!(
                error.contains(&format!("no Sluice database at {data_dir}/sluice.db"))
                    && error.contains("start `sluice serve` once with this --data-dir"),
                "{command:?}: {error}"
            );
        }
    }
    assert!(!missing.exists(), "the data directory was not created");
    assert_eq!(
        std::fs::read_dir(&empty).expect("read").count(),
        0,
        "nothing was created in the empty one"
    );
    let left = std::fs::metadata(empty_file.join("sluice.db")).expect("still there");
    assert_eq!(left.len(), 0, "the empty file was not made a database");
}

/// A data directory whose key is there but whose database is not (a restore that missed it)
/// starts a new vault, saying so loudly rather than as if nothing were amiss.
#[tokio::test(flavor = "multi_thread")]
async fn a_key_without_its_database_starts_a_new_vault_with_a_warning() {
    let mut gateway = Gateway::start(Path::new(SLUICE), &[], Options::default()).await;
    let warning = "is missing or empty: starting a new, empty vault";
    assert!(!gateway.output().contains(warning));
    assert!(gateway.terminate().await);
    for file in ["sluice.db", "sluice.db-wal", "sluice.db-shm"] {
        let _ = std::fs::remove_file(gateway.data_dir().join(file));
    }
    gateway.respawn().await;
    let output = gateway.output();
    assert!(
        output.contains(&format!(
            "master.key exists but {}",
            gateway.data_dir().join("sluice.db").display()
        )) && output.contains(warning),
        "{output}"
    );
}

/// Settings no gateway can work with stop it at start, naming the flag.
#[test]
fn serve_refuses_settings_that_cannot_work() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().to_str().expect("UTF-8");
    for (flag, value, expected) in [
        ("--public-url", "notaurl", "not an absolute URL"),
        (
            "--listen",
            "gateway.internal:8080",
            "expected an IP address and port, like 127.0.0.1:8080",
        ),
        ("--listen", "localhost:http", "expected an IP address and port"),
        ("--max-instances", "0", "0 is not in 1.."),
        ("--max-instances", "10000000", "10000000 is not in 1..=100000"),
        ("--memory-limit-mib", "4097", "4097 is not in 4..=4096"),
        ("--serve-threads", "0", "0 is not in 1..=1024"),
        ("--serve-threads", "100000", "100000 is not in 1..=1024"),
        ("--timeout-ms", "0", "0 is not in 1.."),
        ("--memory-limit-mib", "0", "0 is not in 4.."),
        ("--upstream-timeout-ms", "0", "0 is not in 1.."),
        ("--max-upstream-requests", "0", "0 is not in 1.."),
        ("--max-response-mib", "0", "0 is not in 1.."),
        ("--max-request-body-mib", "0", "0 is not in 1.."),
        ("--max-passthrough-body-mib", "0", "0 is not in 1.."),
        ("--connect-session-ttl-secs", "0", "0 is not in 1.."),
        ("--log-retention-days", "0", "0 is not in 1.."),
        ("--max-connections-per-env", "0", "0 is not in 1.."),
        ("--admin-key", "", "the admin key is empty"),
        (
            "--cors-origin",
            "https://app.example.com/app",
            "more than scheme, host and port",
        ),
    ] {
        let error = refusal(&sluice(&["serve", flag, value, "--data-dir", data_dir], None));
        assert!(
            error.contains(flag) && error.contains(expected),
            "{flag} {value}: {error}"
        );
    }
    // A plugins directory that is not there (the default `connectors` on a first run).
    let missing = dir.path().join("no-such-dir");
    let error = refusal(&sluice(
        &[
            "serve",
            "--plugins",
            missing.to_str().expect("UTF-8"),
            "--data-dir",
            data_dir,
        ],
        None,
    ));
    assert!(
        error.contains("cannot read the plugins directory") && error.contains("pass --plugins"),
        "{error}"
    );
    // An empty `SLUICE_ADMIN_KEY=` line in an env file is the same mistake.
    let output = std::process::Command::new(SLUICE)
        .args(["serve", "--data-dir", data_dir])
        .env("SLUICE_ADMIN_KEY", "")
        .output()
        .expect("run sluice");
    assert!(refusal(&output).contains("the admin key is empty"));
    // Probes on the serving address itself: an address of their own is the point.
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).expect("plugins dir");
    let error = refusal(&sluice(
        &[
            "serve",
            "--listen",
            "127.0.0.1:18593",
            "--ops-listen",
            "127.0.0.1:18593",
            "--plugins",
            plugins.to_str().expect("UTF-8"),
            "--data-dir",
            data_dir,
        ],
        None,
    ));
    assert!(
        error.contains("--ops-listen 127.0.0.1:18593 is the --listen address"),
        "{error}"
    );
    std::fs::remove_dir(&plugins).expect("remove plugins dir");
    assert!(
        std::fs::read_dir(dir.path()).expect("read").next().is_none(),
        "refused before touching the data directory"
    );
}

/// A port in use is reported before anything else happens (connectors compile for seconds on
/// a first start), and the data directory is not created for it.
#[test]
fn a_port_in_use_is_reported_at_once() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = taken.local_addr().expect("addr").to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("data");
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).expect("plugins dir");
    let output = sluice(
        &[
            "serve",
            "--listen",
            &address,
            "--data-dir",
            data_dir.to_str().expect("UTF-8"),
            "--plugins",
            plugins.to_str().expect("UTF-8"),
        ],
        None,
    );
    let error = refusal(&output);
    assert!(error.contains(&format!("binding {address}")), "{error}");
    assert!(
        !data_dir.exists(),
        "nothing was created for a gateway that could not listen"
    );
}

/// A short admin key works, with a warning at start.
#[tokio::test(flavor = "multi_thread")]
async fn a_short_admin_key_is_warned_about() {
    let gateway = Gateway::start(
        Path::new(SLUICE),
        &[],
        Options {
            extra_args: vec!["--admin-key".into(), "short".into()],
            ..Options::default()
        },
    )
    .await;
    assert!(
        gateway
            .output()
            .contains("the admin key is shorter than 16 characters"),
        "{}",
        gateway.output()
    );
}

/// `sluice new` takes the ids the loader takes and no others, and writes a crate that finds
/// the SDK wherever it is created.
#[test]
fn new_checks_the_id_as_the_loader_does_and_needs_the_sdk_outside_the_workspace() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace");
    let dir = tempfile::tempdir().expect("tempdir");
    let sources = dir.path().to_str().expect("UTF-8");
    let long = "a".repeat(65);
    for (name, expected) in [
        ("vault", "`vault` is taken by the gateway's own routes"),
        ("Weather", "must be 1-64 of a-z, 0-9, `_` and `-`"),
        (long.as_str(), "must be 1-64 of a-z, 0-9, `_` and `-`"),
    ] {
        let error = refusal(&sluice(
            &["new", name, "--dir", sources, "--sdk", "sdk-guest"],
            Some(workspace),
        ));
        assert!(error.contains(expected), "{name}: {error}");
    }
    let error = refusal(&sluice(&["new", "weather", "--dir", sources], None));
    assert!(error.contains("pass --sdk <path>"), "{error}");
    let error = refusal(&sluice(
        &["new", "weather", "--dir", sources, "--sdk", sources],
        None,
    ));
    assert!(error.contains("there is no Cargo.toml there"), "{error}");
    assert!(
        std::fs::read_dir(dir.path()).expect("read").next().is_none(),
        "nothing was created"
    );

    // A relative --sdk is taken from the current directory.
    let created = sluice(
        &["new", "acme-crm", "--dir", sources, "--sdk", "sdk-guest"],
        Some(workspace),
    );
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let krate = dir.path().join("acme-crm");
    let manifest = std::fs::read_to_string(krate.join("Cargo.toml")).expect("Cargo.toml");
    let sdk = manifest
        .lines()
        .find_map(|line| line.strip_prefix("sluice-sdk = { path = \""))
        .and_then(|rest| rest.split('"').next())
        .expect("an SDK path");
    assert_eq!(
        krate.join(sdk).canonicalize().expect("the SDK path resolves"),
        workspace.join("sdk-guest").canonicalize().expect("sdk-guest")
    );
}

/// `sluice connections <args>` on the gateway's data directory, checking that it printed no
/// connection secret, whatever it printed.
fn connections(gateway: &Gateway, args: &[&str]) -> Output {
    let data_dir = gateway.data_dir().to_str().expect("UTF-8");
    let output = sluice(
        &[&["connections"], args, &["--data-dir", data_dir]].concat(),
        None,
    );
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    for secret in [SECRET, ALICE_SECRET, BOB_SECRET] {
        assert!(
            !printed.contains(secret),
            "`connections {args:?}` printed a secret: {printed}"
        );
    }
    output
}

/// What a command that must succeed printed: (stdout, stderr).
fn success(output: &Output) -> (String, String) {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "expected success: {stderr}");
    (String::from_utf8_lossy(&output.stdout).into_owned(), stderr)
}

/// The tab-separated lines `connections list <args>` printed.
fn listed(gateway: &Gateway, args: &[&str]) -> Vec<Vec<String>> {
    let (stdout, _) = success(&connections(gateway, &[&["list"], args].concat()));
    stdout
        .lines()
        .map(|line| line.split('\t').map(str::to_owned).collect())
        .collect()
}

/// The connection keys (first column) `connections list <args>` printed, sorted.
fn listed_keys(gateway: &Gateway, args: &[&str]) -> Vec<String> {
    let mut keys: Vec<_> = listed(gateway, args)
        .into_iter()
        .map(|row| row[0].clone())
        .collect();
    keys.sort();
    keys
}

/// The JSON array `connections list --json <args>` printed.
fn listed_json(gateway: &Gateway, args: &[&str]) -> Vec<Value> {
    let (stdout, _) = success(&connections(gateway, &[&["list", "--json"], args].concat()));
    match serde_json::from_str(&stdout) {
        Ok(Value::Array(items)) => items,
        _ => panic!("not a JSON array: {stdout}"),
    }
}

/// `connections list` shows every connection of both environments: key, integration,
/// environment, identity, identity type, state (following the upstream's last answer), active
/// flag and creation time, as lines or as the vault API's JSON, filtered by integration,
/// identity and environment; and it never prints a secret.
#[tokio::test(flavor = "multi_thread")]
async fn connections_list_shows_and_filters_connections_but_never_their_secrets() {
    let setup = Setup::new().await;
    let gateway = &setup.gateway;
    let default = setup.connection_key.clone();
    let alice = gateway
        .add_connection(
            "github",
            ALICE_SECRET,
            &["--identity", "alice", "--identity-type", "user"],
        )
        .await;
    let bob = gateway
        .add_connection("github", BOB_SECRET, &["--identity", "bob", "--env", "live"])
        .await;
    // An upstream 401 on the default connection degrades it (off the response path: poll).
    let revoked = json!({"params": {"owner": "acme", "repo": "revoked"}, "connection_key": default});
    let answer = setup.execute("github", "get_repo", revoked).await;
    assert_eq!(answer.body["status"], 401, "{:?}", answer.body);
    let mut rows = Vec::new();
    let deadline = tokio::time::Instant::now() + crate::common::BACKGROUND_WORK;
    while tokio::time::Instant::now() < deadline {
        rows = listed(gateway, &[]);
        if rows.iter().any(|row| row[0] == default && row[5] == "degraded") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    assert_eq!(rows.len(), 4, "github default, hostile, alice and bob: {rows:?}");
    assert!(rows.iter().all(|row| row.len() == 8), "{rows:?}");
    let row = |key: &str| {
        rows.iter()
            .find(|row| row[0] == key)
            .unwrap_or_else(|| panic!("{key} is not listed: {rows:?}"))
    };
    assert_eq!(
        row(&alice)[1..7],
        ["github", "test", "alice", "user", "operational", "active"]
    );
    assert_eq!(
        row(&bob)[1..7],
        ["github", "live", "bob", "-", "operational", "active"]
    );
    assert_eq!(
        row(&default)[1..7],
        ["github", "test", "-", "-", "degraded", "active"]
    );
    assert!(
        rows.iter().any(|row| row[1] == "hostile" && row[2] == "test"),
        "{rows:?}"
    );

    let mut alice_and_default = vec![alice.clone(), default.clone()];
    alice_and_default.sort();
    for (filter, expected) in [
        (&["--identity", "alice"][..], vec![alice.clone()]),
        (&["--env", "live"], vec![bob.clone()]),
        (&["--integration", "github", "--env", "test"], alice_and_default),
        (
            &["--integration", "github", "--identity", "bob"],
            vec![bob.clone()],
        ),
        (&["--identity", "bob", "--env", "test"], vec![]),
        (&["--integration", "slack"], vec![]),
    ] {
        assert_eq!(listed_keys(gateway, filter), expected, "{filter:?}");
    }

    let items = listed_json(gateway, &[]);
    assert_eq!(items.len(), 4, "{items:?}");
    let vault_api_fields = BTreeSet::from([
        "id",
        "key",
        "name",
        "description",
        "platform",
        "environment",
        "identity",
        "identityType",
        "state",
        "tags",
        "active",
        "baseUrl",
        "createdAt",
        "updatedAt",
    ]);
    for item in &items {
        let fields: BTreeSet<&str> = item
            .as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(fields, vault_api_fields, "the vault API's fields, no secret");
    }
    let item = |key: &str| {
        items
            .iter()
            .find(|item| item["key"] == key)
            .unwrap_or_else(|| panic!("{key} is not listed: {items:?}"))
    };
    let alice_item = item(&alice);
    assert_eq!(
        (
            &alice_item["platform"],
            &alice_item["environment"],
            &alice_item["identity"],
            &alice_item["identityType"],
            &alice_item["state"],
            &alice_item["active"],
        ),
        (
            &json!("github"),
            &json!("test"),
            &json!("alice"),
            &json!("user"),
            &json!("operational"),
            &json!(true)
        )
    );
    assert_eq!(
        alice_item["createdAt"],
        row(&alice)[7],
        "the same time in both forms"
    );
    assert_eq!(
        (&item(&default)["state"], &item(&default)["identity"]),
        (&json!("degraded"), &Value::Null)
    );
    assert_eq!(item(&bob)["environment"], "live");
    // The same object the vault API returns for it.
    let read = setup
        .api(Method::GET, &format!("/v1/vault/connections/{alice}"), None)
        .await;
    assert_eq!(&read.body, alice_item);

    let bobs = listed_json(gateway, &["--env", "live", "--identity", "bob"]);
    assert_eq!(bobs.len(), 1, "{bobs:?}");
    assert_eq!(bobs[0]["key"], bob.as_str());
    assert!(listed_json(gateway, &["--integration", "slack"]).is_empty());
}

/// `connections remove` deletes one connection, by key or by id, and says on stderr which; the
/// running gateway stops using it at once and the others stay. A connection that is not there
/// (already removed, never added, or not in the `--env` given) is refused by name.
#[tokio::test(flavor = "multi_thread")]
async fn connections_remove_deletes_one_connection_and_the_gateway_stops_using_it() {
    let setup = Setup::new().await;
    let gateway = &setup.gateway;
    let removed = setup.connection_key.clone();
    let bob = gateway
        .add_connection("github", BOB_SECRET, &["--identity", "bob", "--env", "live"])
        .await;
    let call = json!({"params": {"owner": "acme", "repo": "webapp"}, "connection_key": removed});
    let before = setup.execute("github", "get_repo", call.clone()).await;
    assert_eq!(before.status, 200, "{:?}", before.body);
    let upstream_calls = setup.upstream_requests().len();

    let (stdout, stderr) = success(&connections(gateway, &["remove", &removed]));
    assert_eq!(stdout, "", "the report goes to stderr");
    assert!(
        stderr.contains(&format!("removed connection {removed} (conn_"))
            && stderr.contains(": github, test, identity -)"),
        "{stderr}"
    );
    let remaining = listed(gateway, &[]);
    assert_eq!(remaining.len(), 2, "hostile and bob's: {remaining:?}");
    assert!(remaining.iter().all(|row| row[0] != removed), "{remaining:?}");

    let after = setup.execute("github", "get_repo", call).await;
    assert_eq!(
        (after.status, after.code()),
        (404, "not_found"),
        "{:?}",
        after.body
    );
    assert_eq!(
        setup.upstream_requests().len(),
        upstream_calls,
        "nothing was sent upstream"
    );
    let read = setup
        .api(Method::GET, &format!("/v1/vault/connections/{removed}"), None)
        .await;
    assert_eq!(read.status, 404, "{:?}", read.body);

    for (args, expected) in [
        (
            vec!["remove", removed.as_str()],
            format!("no connection `{removed}` in the test or live environment"),
        ),
        (
            vec!["remove", "test::github::default::0123"],
            "no connection `test::github::default::0123` in the test or live environment".into(),
        ),
        (
            vec!["remove", bob.as_str(), "--env", "test"],
            format!("no connection `{bob}` in the test environment"),
        ),
    ] {
        let error = refusal(&connections(gateway, &args));
        assert!(error.contains(&expected), "{args:?}: {error}");
    }
    assert_eq!(listed_keys(gateway, &["--env", "live"]), [bob.as_str()]);

    let bob_id = listed_json(gateway, &["--env", "live"])[0]["id"]
        .as_str()
        .expect("an id")
        .to_owned();
    let (_, stderr) = success(&connections(gateway, &["remove", &bob_id, "--env", "live"]));
    assert!(
        stderr.contains(&format!(
            "removed connection {bob} ({bob_id}: github, live, identity bob)"
        )),
        "{stderr}"
    );
    assert!(listed(gateway, &["--env", "live"]).is_empty());
}

/// An environment other than test or live is refused by name, before the data directory is
/// even looked at, with a usage error rather than a panic.
#[test]
fn connections_list_and_remove_refuse_an_unknown_environment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().to_str().expect("UTF-8");
    for command in [&["connections", "list"][..], &["connections", "remove", "conn_1"]] {
        let output = sluice(
            &[command, &["--env", "prod", "--data-dir", data_dir]].concat(),
            None,
        );
        let error = refusal(&output);
        assert_eq!(output.status.code(), Some(2), "a usage error: {error}");
        assert!(
            error.contains("invalid value 'prod' for '--env")
                && error.contains("unknown environment `prod` (expected test or live)")
                && !error.contains("panicked"),
            "{command:?}: {error}"
        );
    }
}

/// `sluice vault backup` writes a complete copy of a running gateway's vault, which opens with
/// the master key (and is readable by its owner only); it never overwrites a file.
#[tokio::test(flavor = "multi_thread")]
async fn a_backup_of_a_running_gateway_opens_with_its_master_key() {
    let setup = Setup::new().await;
    let data_dir = setup.gateway.data_dir().to_owned();
    let out = tempfile::tempdir().expect("tempdir");
    let backup = out.path().join("backup.db");
    let back_up = || {
        let (to, from) = (backup.to_str().expect("UTF-8"), data_dir.to_str().expect("UTF-8"));
        sluice(&["vault", "backup", "--to", to, "--data-dir", from], None)
    };
    let backed_up = back_up();
    let said = String::from_utf8_lossy(&backed_up.stderr).into_owned();
    assert!(backed_up.status.success(), "{said}");
    assert!(said.contains("master.key"), "{said}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&backup).expect("backup").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{mode:o}");
    }
    let again = back_up();
    assert!(
        refusal(&again).contains("creating"),
        "an existing file is not overwritten"
    );

    // Restored beside its master key, the backup holds the setup's connection.
    let restored = tempfile::tempdir().expect("tempdir");
    std::fs::copy(&backup, restored.path().join("sluice.db")).expect("restore");
    std::fs::copy(data_dir.join("master.key"), restored.path().join("master.key")).expect("key");
    let listed = sluice(
        &[
            "connections",
            "list",
            "--data-dir",
            restored.path().to_str().expect("UTF-8"),
        ],
        None,
    );
    let stdout = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    assert!(stdout.contains(&setup.connection_key), "{stdout}");
    assert!(!stdout.contains(SECRET));
}

/// A database file that is not one is named in the error, with what to check, rather than
/// SQLite's bare "file is not a database".
#[test]
fn a_damaged_database_is_named_in_the_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let database = dir.path().join("sluice.db");
    std::fs::write(
        &database,
        "not a database at all, but long enough to have a header......",
    )
    .expect("write");
    let data_dir = dir.path().to_str().expect("UTF-8");
    let error = refusal(&sluice(&["keys", "list", "--data-dir", data_dir], None));
    assert!(
        error.contains(&format!("opening the database {}", database.display()))
            && error.contains("file is not a database")
            && !error.contains("panicked"),
        "{error}"
    );
}
