//! The command line checks what it is given as the gateway and the vault API would: a
//! connection the gateway could not use, a key in a database the gateway does not read, settings
//! no gateway can run with, and a connector crate the loader would refuse are refused at once,
//! with a message saying what to do.

use crate::common::{SLUICE, send};
use reqwest::Method;
use sluice_fixtures::gateway::Options;
use sluice_fixtures::{Gateway, guests};
use std::path::Path;
use std::process::Output;

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
        (add("nosuch", "tok", &[]).await, "no integration named `nosuch`"),
        (add("echo", "tok", &[]).await, "`echo` needs no credentials"),
        (
            add("github", "tok", &["--identity-type", "robot"]).await,
            "--identity-type must be one of user, team, organization, project, not `robot`",
        ),
        (
            add("github", "tok", &["--base-url", "notaurl"]).await,
            "--base-url is not a URL",
        ),
        (
            add("github", "tok", &["--base-url", "http://127.0.0.1:9"]).await,
            "--base-url must be an https URL with a host: the connection's credential is sent to it \
             (plain http is allowed with --allow-private-upstreams",
        ),
        (add("github", "   ", &[]).await, "--secret must not be empty"),
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

/// Commands that manage a gateway's state never create a new, empty one: a key or connection
/// stored there would never reach the gateway.
#[test]
fn state_commands_refuse_a_data_dir_without_a_database() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing");
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).expect("empty dir");
    for data_dir in [&missing, &empty] {
        let data_dir = data_dir.to_str().expect("UTF-8");
        for command in [
            &["keys", "create"][..],
            &["keys", "list"],
            &["keys", "revoke", "sk_test_abcd"],
            &["connections", "add", "github", "--secret", "tok"],
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
}

/// Settings no gateway can work with stop it at start, naming the flag.
#[test]
fn serve_refuses_settings_that_cannot_work() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().to_str().expect("UTF-8");
    for (flag, value, expected) in [
        ("--public-url", "notaurl", "not an absolute URL"),
        ("--max-instances", "0", "0 is not in 1.."),
        ("--timeout-ms", "0", "0 is not in 1.."),
        ("--memory-limit-mib", "0", "0 is not in 4.."),
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
    // An empty `SLUICE_ADMIN_KEY=` line in an env file is the same mistake.
    let output = std::process::Command::new(SLUICE)
        .args(["serve", "--data-dir", data_dir])
        .env("SLUICE_ADMIN_KEY", "")
        .output()
        .expect("run sluice");
    assert!(refusal(&output).contains("the admin key is empty"));
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
