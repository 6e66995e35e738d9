//! Hostile connectors: each attack fails for that request only, with its own error code,
//! while well-behaved requests keep succeeding and nothing leaks.

use crate::common::{SECRET, SLUICE, Setup, send};
use serde_json::{Value, json};
use sluice_fixtures::gateway::Options;
use sluice_fixtures::{FakeUpstream, Gateway, Reply, guests};
use std::path::Path;

fn short_deadline() -> Options {
    Options {
        extra_args: vec![
            "--timeout-ms".into(),
            "1500".into(),
            "--memory-limit-mib".into(),
            "32".into(),
        ],
        ..Options::default()
    }
}

/// A 4 s deadline, for tests that keep the hostile `spin` busy beside other requests, plus
/// one more flag.
fn spin_for_four_seconds_with(flag: &str, value: &str) -> Options {
    Options {
        extra_args: vec![flag.into(), value.into(), "--timeout-ms".into(), "4000".into()],
        ..Options::default()
    }
}

/// Run `attack` on the hostile connector while echo requests run beside it; all echoes succeed.
async fn attack_while_serving(setup: &Setup, endpoint: &str, params: Value) -> crate::common::Answer {
    let attack = setup.execute("hostile", endpoint, json!({"params": params}));
    let bystanders = async {
        for i in 0..5 {
            let answer = setup.execute("echo", "say", json!({"params": {"i": i}})).await;
            assert_eq!(
                answer.body,
                json!({"status": 200, "data": {"i": i}}),
                "bystander {i} failed"
            );
        }
    };
    let (answer, ()) = tokio::join!(attack, bystanders);
    assert!(
        !answer.body.to_string().contains(SECRET),
        "the secret leaked into a reply"
    );
    answer
}

/// An infinite loop is stopped at the deadline.
#[tokio::test(flavor = "multi_thread")]
async fn infinite_loop_is_stopped_with_connector_timeout() {
    let setup = Setup::with_options(short_deadline()).await;
    let answer = attack_while_serving(&setup, "spin", json!({})).await;
    assert_eq!(
        (answer.status, answer.code()),
        (504, "connector_timeout"),
        "{:?}",
        answer.body
    );
}

/// The invocation deadline is wall-clock time and covers host calls: a connector waiting on a
/// slow upstream (no guest code running, so no epoch check) is stopped at the deadline.
#[tokio::test(flavor = "multi_thread")]
async fn the_deadline_covers_time_spent_waiting_on_the_upstream() {
    let setup = Setup::with_options(Options {
        extra_args: vec!["--timeout-ms".into(), "500".into()],
        ..Options::default()
    })
    .await;
    // Timed from a plain thread with a plain socket, apart from this process's runtime.
    let address = setup.gateway.url.trim_start_matches("http://").to_owned();
    let key = setup.key.clone();
    let (reply, took) = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let body = r#"{"params": {"url": "/slower"}}"#;
        let started = std::time::Instant::now();
        let mut connection = std::net::TcpStream::connect(&address).expect("connect");
        write!(
            connection,
            "POST /v1/hostile/call HTTP/1.1\r\nhost: {address}\r\nauthorization: Bearer {key}\r\n\
             content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .expect("write");
        let mut reply = String::new();
        connection.read_to_string(&mut reply).expect("read");
        (reply, started.elapsed())
    })
    .join()
    .expect("client thread");
    assert!(reply.starts_with("HTTP/1.1 504"), "{reply}");
    assert!(reply.contains(r#""error":"connector_timeout""#), "{reply}");
    assert!(
        took < std::time::Duration::from_secs(4),
        "answered after {took:?}, near when the upstream did (6 s)"
    );
}

/// Handles a guest holds live in host memory outside its linear-memory cap: past a few
/// thousand the guest traps, and a guest holding a normal number is unaffected.
#[tokio::test(flavor = "multi_thread")]
async fn holding_host_handles_without_end_is_stopped() {
    let setup = Setup::new().await;
    let few = setup
        .execute("hostile", "hold_handles", json!({"params": {"count": 100}}))
        .await;
    assert_eq!(few.body, json!({"status": 200, "data": {"held": 100}}));
    let answer = attack_while_serving(&setup, "hold_handles", json!({"count": 100_000})).await;
    assert_eq!(
        (answer.status, answer.code()),
        (502, "connector_trap"),
        "{:?}",
        answer.body
    );
}

/// A guest computing without end gives its serving thread back at every epoch tick: with a
/// single serving thread, a request that arrives while it spins is answered long before the
/// spinner's deadline, and the spinner still times out.
#[tokio::test(flavor = "multi_thread")]
async fn a_spinning_connector_does_not_hold_its_serving_thread() {
    let setup = Setup::with_options(spin_for_four_seconds_with("--serve-threads", "1")).await;
    let spin = setup.execute("hostile", "spin", json!({"params": {}}));
    tokio::pin!(spin);
    let bystander = async {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        setup.execute("echo", "say", json!({"params": {"i": 1}})).await
    };
    tokio::select! {
        answer = bystander => {
            assert_eq!(answer.body, json!({"status": 200, "data": {"i": 1}}));
        }
        spun = &mut spin => panic!(
            "the spinner finished first ({:?}): the bystander waited for its deadline",
            spun.body
        ),
    }
    let spun = spin.await;
    assert_eq!((spun.status, spun.code()), (504, "connector_timeout"));
}

/// An instance prepared ahead of a request (a spare) runs under that request's deadline, not
/// one counted from when it was prepared: a request arriving long after the spare was built
/// succeeds, and a spinning request on a spare still runs until its own deadline.
#[tokio::test(flavor = "multi_thread")]
async fn a_prepared_instance_runs_under_its_requests_deadline() {
    let timeout = std::time::Duration::from_millis(500);
    let options = Options {
        extra_args: vec![
            "--serve-threads".into(),
            "1".into(),
            "--timeout-ms".into(),
            timeout.as_millis().to_string(),
        ],
        ..Options::default()
    };
    let setup = Setup::with_options(options).await;
    for i in 0..2 {
        let answer = setup.execute("echo", "say", json!({"params": {"i": i}})).await;
        assert_eq!(
            answer.body,
            json!({"status": 200, "data": {"i": i}}),
            "request {i}"
        );
        // Long enough for the spare prepared after this request to outlive a deadline.
        tokio::time::sleep(timeout * 2).await;
    }
    for attempt in 0..2 {
        let started = std::time::Instant::now();
        let spun = setup.execute("hostile", "spin", json!({"params": {}})).await;
        assert_eq!(
            (spun.status, spun.code()),
            (504, "connector_timeout"),
            "spin {attempt}"
        );
        assert!(
            started.elapsed() >= timeout,
            "spin {attempt} was stopped after {:?}, before its deadline",
            started.elapsed()
        );
        tokio::time::sleep(timeout * 2).await;
    }
}

/// Unbounded allocation hits the per-request memory cap.
#[tokio::test(flavor = "multi_thread")]
async fn memory_bomb_hits_connector_memory_limit() {
    let setup = Setup::with_options(short_deadline()).await;
    let answer = attack_while_serving(&setup, "grow", json!({})).await;
    assert_eq!(
        (answer.status, answer.code()),
        (502, "connector_memory_limit"),
        "{:?}",
        answer.body
    );
}

/// Deep recursion traps on the wasm stack limit instead of crashing the host.
#[tokio::test(flavor = "multi_thread")]
async fn deep_recursion_is_a_trap() {
    let setup = Setup::with_options(short_deadline()).await;
    let answer = attack_while_serving(&setup, "recurse", json!({})).await;
    assert_eq!(
        (answer.status, answer.code()),
        (502, "connector_trap"),
        "{:?}",
        answer.body
    );
    // The cause is on the log line tagged with the transaction, not twenty lines below it.
    let transaction = transaction_of(&answer);
    setup
        .gateway
        .output_with_line(&[&transaction, "connector trapped detail=wasm trap: "])
        .await;
}

/// A panic mid-request is a trap for that request only; the message hides the details.
#[tokio::test(flavor = "multi_thread")]
async fn panic_is_connector_trap_for_that_request_only() {
    let setup = Setup::new().await;
    let answer = attack_while_serving(&setup, "panic", json!({})).await;
    assert_eq!((answer.status, answer.code()), (502, "connector_trap"));
    assert!(
        !answer.body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("deliberate")
    );
    let after = setup
        .execute("hostile", "call", json!({"params": {"url": "/text"}}))
        .await;
    assert_eq!(
        after.body["status"], 200,
        "the same connector serves the next request"
    );
}

fn transaction_of(answer: &crate::common::Answer) -> String {
    answer.headers["x-transaction-key"]
        .to_str()
        .expect("transaction key")
        .to_owned()
}

/// A Rust connector's panic message and location reach the gateway's log at error level, under
/// the request's transaction key; the caller is pointed at that key, not shown the message.
#[tokio::test(flavor = "multi_thread")]
async fn a_panic_message_is_logged_under_the_transaction_key() {
    let setup = Setup::new().await;
    let answer = setup.execute("hostile", "panic", json!({"params": {}})).await;
    assert_eq!((answer.status, answer.code()), (502, "connector_trap"));
    let transaction = transaction_of(&answer);
    assert_eq!(
        answer.body["message"],
        format!(
            "the connector crashed while handling this request; see the gateway log for transaction {transaction}"
        )
    );
    let output = setup
        .gateway
        .output_with_line(&[&transaction, "deliberate panic in the middle of a request"])
        .await;
    let line = output
        .lines()
        .find(|line| line.contains("deliberate panic"))
        .unwrap_or_default();
    assert!(line.contains("ERROR") && line.contains("panicked at"), "{line}");
    assert!(
        line.contains("src/lib.rs:"),
        "the panic's location is logged: {line}"
    );

    // Also when the connector had used up its log budget before it crashed.
    let answer = setup
        .execute("hostile", "panic", json!({"params": {"log_first": 150}}))
        .await;
    assert_eq!(answer.code(), "connector_trap");
    let transaction = transaction_of(&answer);
    let output = setup
        .gateway
        .output_with_line(&[&transaction, "deliberate panic", "past_log_budget=true"])
        .await;
    assert!(
        output.contains("step 99") && !output.contains("step 100"),
        "the budget held"
    );
}

/// What a connector writes to stdout and stderr becomes its log lines under the request's
/// transaction key; past 64 KiB it is dropped, past the line budget too, and the call still
/// answers normally.
#[tokio::test(flavor = "multi_thread")]
async fn stdout_and_stderr_floods_are_capped() {
    let setup = Setup::new().await;
    // 2 × 2000 lines of 20 bytes: over the 64 KiB kept, and far over the 100-line budget.
    let params = json!({"stdout": format!("out-{}", "o".repeat(15)), "stderr": format!("err-{}", "e".repeat(15)), "times": 2000});
    let answer = attack_while_serving(&setup, "print", params).await;
    assert_eq!(answer.body, json!({"status": 200, "data": {"printed": 2000}}));
    let transaction = transaction_of(&answer);
    let output = setup
        .gateway
        .output_with_line(&[&transaction, "the rest was dropped"])
        .await;
    let printed: Vec<&str> = output
        .lines()
        .filter(|line| line.contains("out-ooo") || line.contains("err-eee"))
        .collect();
    assert!(
        !printed.is_empty() && printed.len() <= 100,
        "{} lines kept",
        printed.len()
    );
    assert!(printed.iter().all(|line| line.contains(&transaction)));
    assert!(printed.iter().any(|line| line.contains("stream=\"stdout\"")));
    assert!(output.contains("log budget exhausted"));
    let kept: usize = printed.iter().map(|line| line.len()).sum();
    assert!(kept < 100 << 10, "{kept} bytes of output logged");
}

/// An endpoint the connector declares but does not handle (a forgotten `match` arm answering
/// unknown-endpoint) is the connector's fault, not the caller's: `502 connector_error`, and
/// the gateway's log says so, where a 404 told the caller the endpoint did not exist.
#[tokio::test(flavor = "multi_thread")]
async fn a_declared_endpoint_the_connector_does_not_handle_is_its_error() {
    let setup = Setup::new().await;
    let answer = setup.execute("hostile", "forgotten", json!({"params": {}})).await;
    assert_eq!(
        (answer.status, answer.code()),
        (502, "connector_error"),
        "{:?}",
        answer.body
    );
    let message = answer.body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("declares this endpoint but does not handle it"),
        "{message}"
    );
    let transaction = transaction_of(&answer);
    setup
        .gateway
        .output_with_line(&[&transaction, "its invoke() does not handle it"])
        .await;
}

/// Output cannot carry the credential into the log: if a connector gets hold of it (here the
/// caller passes it in) and prints it, to stdout or, before crashing, to stderr, the log shows
/// it scrubbed.
#[tokio::test(flavor = "multi_thread")]
async fn the_credential_is_scrubbed_from_stdout_and_stderr() {
    let setup = Setup::new().await;
    // The end of stderr as an interpreter built in Rust writes it when it crashes: the advice
    // to set an environment variable, which a guest has none of, is left out of the log.
    let stderr = format!(
        "err token={SECRET}\nnote: run with `RUST_BACKTRACE=1` environment variable to display a backtrace"
    );
    let print = |then_panic: bool| json!({"params": {"stdout": format!("out token={SECRET}"), "stderr": stderr, "times": 1, "then_panic": then_panic}});
    let answer = setup.execute("hostile", "print", print(false)).await;
    assert_eq!(answer.body["status"], 200, "{:?}", answer.body);
    let transaction = transaction_of(&answer);
    setup
        .gateway
        .output_with_line(&[&transaction, "err token=[REDACTED]", "WARN"])
        .await;
    let crashed = setup.execute("hostile", "print", print(true)).await;
    assert_eq!(crashed.code(), "connector_trap");
    assert!(!crashed.body.to_string().contains("token="), "{:?}", crashed.body);
    let transaction = transaction_of(&crashed);
    let output = setup
        .gateway
        .output_with_line(&[&transaction, "err token=[REDACTED]", "ERROR"])
        .await;
    assert!(output.contains("out token=[REDACTED]"));
    assert!(!output.contains("RUST_BACKTRACE"), "{output}");
    setup.assert_secret_not_logged();
}

/// A request to an origin outside the allowlist is refused and never sent.
#[tokio::test(flavor = "multi_thread")]
async fn disallowed_host_is_denied() {
    let setup = Setup::new().await;
    let other = FakeUpstream::start(|_| Reply::json(200, json!({"stolen": true}))).await;
    let answer =
        attack_while_serving(&setup, "call", json!({"url": format!("{}/collect", other.url())})).await;
    assert_eq!(
        (answer.status, answer.code()),
        (403, "egress_denied"),
        "{:?}",
        answer.body
    );
    assert!(
        other.requests().is_empty(),
        "nothing may reach a non-allowlisted origin"
    );
}

/// The guest may not set Authorization (or other host-owned headers) itself.
#[tokio::test(flavor = "multi_thread")]
async fn guest_set_authorization_is_refused() {
    let setup = Setup::new().await;
    for header in [
        "Authorization",
        "host",
        "Transfer-Encoding",
        "proxy-authorization",
    ] {
        let answer = attack_while_serving(
            &setup,
            "call",
            json!({"url": "/text", "headers": [[header, "Bearer attacker"]]}),
        )
        .await;
        assert_eq!(
            (answer.status, answer.code()),
            (403, "egress_denied"),
            "{header}: {:?}",
            answer.body
        );
    }
    let crlf = attack_while_serving(
        &setup,
        "call",
        json!({"url": "/text", "headers": [["x-ok", "a\r\nx-injected: 1"]]}),
    )
    .await;
    assert_eq!(crlf.code(), "connector_error", "{:?}", crlf.body);
    assert!(setup.upstream_requests().is_empty());
}

/// A connector that would send its connection's credential over plain http does not load,
/// saying why, unless the gateway may reach private upstreams (local development against
/// fakes on loopback).
#[tokio::test(flavor = "multi_thread")]
async fn a_connector_sending_a_credential_over_plain_http_does_not_load() {
    let plugins = |gateway: &Gateway| send(reqwest::Client::new().get(format!("{}/v1/plugins", gateway.url)));
    let options = Options {
        deny_private_upstreams: true,
        ..Options::default()
    };
    let production = Gateway::start(Path::new(SLUICE), &[guests::PLAIN_HTTP], options).await;
    let listed = plugins(&production).await;
    assert_eq!(listed.body["rows"], json!([]), "{:?}", listed.body);
    let error = listed.body["failures"][0]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("`http://api.versioned.test/` is plain http")
            && error.contains("in the clear")
            && error.contains("--allow-private-upstreams"),
        "{error}"
    );
    let development = Gateway::start(Path::new(SLUICE), &[guests::PLAIN_HTTP], Options::default()).await;
    let listed = plugins(&development).await;
    assert_eq!(listed.body["rows"][0]["id"], "versioned", "{:?}", listed.body);
}

/// Loopback upstreams are refused unless the operator opted in, whatever the spelling.
#[tokio::test(flavor = "multi_thread")]
async fn private_upstream_is_refused_without_opt_in() {
    let setup = Setup::with_options(Options {
        deny_private_upstreams: true,
        ..Options::default()
    })
    .await;
    let answer = setup.get_repo().await;
    assert_eq!(
        (answer.status, answer.code()),
        (403, "egress_denied"),
        "{:?}",
        answer.body
    );
    // The refusal names the way out for a developer whose upstream is on loopback.
    let says = answer.body["message"].as_str().unwrap_or_default();
    assert!(says.contains("--allow-private-upstreams"), "{says}");

    // The hostile connection's base URL is the loopback fake too: name it by `localhost`.
    let port = setup.upstream.addr.port();
    let by_name = attack_while_serving(
        &setup,
        "call",
        json!({"url": format!("http://localhost:{port}/text")}),
    )
    .await;
    assert_eq!(by_name.code(), "egress_denied", "{:?}", by_name.body);
    assert!(
        setup.upstream_requests().is_empty(),
        "nothing may be sent to loopback"
    );
}

/// An upstream that echoes the credential cannot hand it to the guest: it is scrubbed.
#[tokio::test(flavor = "multi_thread")]
async fn credential_echoed_by_upstream_is_scrubbed() {
    let setup = Setup::new().await;
    let answer = attack_while_serving(&setup, "call", json!({"url": "/echo-headers"})).await;
    assert_eq!(answer.body["status"], 200, "{:?}", answer.body);
    let seen = answer.body["data"].to_string();
    assert!(!seen.contains(SECRET), "the guest saw the secret: {seen}");
    assert!(seen.contains("[REDACTED]"), "{seen}");
    let sent = &setup.upstream_requests()[0];
    assert_eq!(
        sent.header("authorization"),
        Some(format!("Bearer {SECRET}").as_str())
    );
    setup.assert_secret_not_logged();
}

/// An 8 MiB URL is refused with a typed error before it is sent.
#[tokio::test(flavor = "multi_thread")]
async fn huge_url_is_refused() {
    let setup = Setup::new().await;
    let answer = attack_while_serving(&setup, "huge_url", json!({})).await;
    assert_eq!(answer.code(), "payload_too_large", "{:?}", answer.body);
    assert!(setup.upstream_requests().is_empty());
}

/// A connector may send only a bounded number of upstream requests per call.
#[tokio::test(flavor = "multi_thread")]
async fn upstream_request_count_is_capped() {
    let setup = Setup::new().await;
    let answer = attack_while_serving(&setup, "many_calls", json!({"count": 100})).await;
    assert_eq!(
        (answer.status, answer.code()),
        (502, "too_many_upstream_requests"),
        "{:?}",
        answer.body
    );
    let message = answer.body["message"].as_str().unwrap_or_default();
    assert!(message.contains("more than 16 upstream requests"), "{message}");
    assert_eq!(
        setup.upstream_requests().len(),
        16,
        "the default cap is 16 requests"
    );
}

/// A log flood is truncated and capped; the request itself completes.
#[tokio::test(flavor = "multi_thread")]
async fn log_flood_is_capped() {
    let setup = Setup::new().await;
    let answer = attack_while_serving(&setup, "flood_log", json!({"count": 1000})).await;
    assert_eq!(answer.body, json!({"status": 200, "data": {"logged": 1000}}));
    let output = setup.gateway.output();
    let kept = output.lines().filter(|l| l.contains("xxxxxxxxxx")).count();
    assert!(kept <= 100, "{kept} log lines kept");
    assert!(output.contains("log budget exhausted"));
    assert!(output.lines().all(|l| l.len() < 4096), "long lines are truncated");
}

/// Redirects are followed by the host on the same origin, with the credential re-injected.
#[tokio::test(flavor = "multi_thread")]
async fn same_origin_redirect_is_followed_with_the_credential() {
    let setup = Setup::new().await;
    let answer = attack_while_serving(&setup, "call", json!({"url": "/redirect-same"})).await;
    assert_eq!(
        answer.body["status"], 200,
        "the guest sees the final response: {:?}",
        answer.body
    );
    assert!(
        answer.body["data"]["seen_body"]
            .as_str()
            .unwrap_or_default()
            .contains("[REDACTED]")
    );
    let requests = setup.upstream_requests();
    let paths: Vec<&str> = requests.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths, ["/redirect-same", "/echo-headers"]);
    let expected = format!("Bearer {SECRET}");
    assert!(
        requests
            .iter()
            .all(|r| r.header("authorization") == Some(expected.as_str()))
    );
}

/// A redirect to another origin is checked like any request: not allowlisted, not followed,
/// and the credential never travels there.
#[tokio::test(flavor = "multi_thread")]
async fn redirect_to_another_origin_is_denied() {
    let setup = Setup::new().await;
    let other = FakeUpstream::start(|_| Reply::json(200, json!({"stolen": true}))).await;
    let target = format!("{}/steal", other.url());
    let encoded: String =
        percent_encoding::utf8_percent_encode(&target, percent_encoding::NON_ALPHANUMERIC).to_string();
    let answer = attack_while_serving(
        &setup,
        "call",
        json!({"url": format!("/redirect-away?to={encoded}")}),
    )
    .await;
    assert_eq!(
        (answer.status, answer.code()),
        (403, "egress_denied"),
        "{:?}",
        answer.body
    );
    assert!(other.requests().is_empty(), "the other origin received nothing");
}

/// Redirect loops end after a fixed number of hops.
#[tokio::test(flavor = "multi_thread")]
async fn redirect_loop_is_cut_off() {
    let setup = Setup::new().await;
    let answer = attack_while_serving(&setup, "call", json!({"url": "/redirect-loop"})).await;
    assert_eq!(answer.code(), "upstream_unreachable", "{:?}", answer.body);
    assert_eq!(
        setup.upstream_requests().len(),
        6,
        "the first request and five redirects"
    );
}

/// Without the operator's opt-in, no spelling of loopback is reachable — IP literals are
/// refused before sending, names after resolution — and nothing is sent.
#[tokio::test(flavor = "multi_thread")]
async fn every_spelling_of_loopback_is_refused_without_opt_in() {
    let setup = Setup::with_options(Options {
        deny_private_upstreams: true,
        ..Options::default()
    })
    .await;
    let port = setup.upstream.addr.port();
    let spellings = [
        "127.0.0.1",
        "127.1",
        "[::1]",
        "[::ffff:127.0.0.1]",
        "2130706433",
        "0x7f000001",
        "0177.0.0.1",
        "localhost",
    ];
    for (i, host) in spellings.iter().enumerate() {
        let identity = format!("spelling{i}");
        let base_url = format!("http://{host}:{port}");
        setup
            .gateway
            .add_connection(
                "github",
                SECRET,
                &["--identity", &identity, "--base-url", &base_url],
            )
            .await;
        let answer = setup
            .execute(
                "github",
                "get_repo",
                json!({"params": {"owner": "acme", "repo": "webapp"}, "identity": identity}),
            )
            .await;
        assert_eq!(
            (answer.status, answer.code()),
            (403, "egress_denied"),
            "{host}: {:?}",
            answer.body
        );
    }
    // An address never dialled, private upstreams allowed or not, cannot even be stored.
    let plugins = format!("{}", setup.gateway.plugins_dir().display());
    let unspecified = format!("http://0.0.0.0:{port}");
    let refused = setup
        .gateway
        .cli(&[
            "connections",
            "add",
            "github",
            "--secret",
            SECRET,
            "--plugins",
            &plugins,
            "--allow-private-upstreams",
            "--base-url",
            &unspecified,
        ])
        .await
        .expect_err("0.0.0.0 is refused");
    assert!(refused.contains("which no call could reach"), "{refused}");
    assert!(
        setup.upstream_requests().is_empty(),
        "nothing may be sent to loopback"
    );
}

/// A connector never has the credential, so one that sends it guessed it, and with answers
/// scrubbed an upstream echoing its guesses would tell it which was right: such a request is
/// refused and the call stopped (`egress_denied`), whatever the connector makes of it, in the
/// body, a header or the URL alike. Wrong guesses go out as sent.
#[tokio::test(flavor = "multi_thread")]
async fn a_connector_that_guesses_the_credential_is_stopped() {
    let setup = Setup::new().await;
    let upload = |extra: Value| {
        let mut params = json!({"method": "PUT", "url": "/upload", "body": "guess-1 guess-2"});
        for (name, value) in extra.as_object().expect("fields") {
            params[name] = value.clone();
        }
        setup.execute("hostile", "call", json!({ "params": params }))
    };
    let wrong = upload(json!({})).await;
    assert_eq!(wrong.body["status"], 200, "{:?}", wrong.body);
    assert_eq!(setup.upstream_requests().len(), 1);

    let with_secret = format!("guess-1 {SECRET} guess-2");
    for guessed in [
        json!({"body": with_secret}),
        json!({"headers": [["x-guess", with_secret]]}),
        json!({"url": format!("/upload?q={SECRET}")}),
    ] {
        let answer = upload(guessed.clone()).await;
        assert_eq!(
            (answer.status, answer.code()),
            (403, "egress_denied"),
            "{guessed}: {:?}",
            answer.body
        );
        let says = answer.body["message"].as_str().unwrap_or_default();
        assert!(says.contains("credential"), "{says}");
        assert!(!answer.body.to_string().contains(SECRET));
    }
    assert_eq!(
        setup.upstream_requests().len(),
        1,
        "no guess holding the secret was sent"
    );
}

/// The WASI surface grants nothing: no environment, arguments, files, stdin or sockets.
#[tokio::test(flavor = "multi_thread")]
async fn wasi_grants_nothing_to_snoop_on() {
    let setup = Setup::new().await;
    let answer = attack_while_serving(&setup, "snoop", json!({})).await;
    assert_eq!(answer.body["status"], 200, "{:?}", answer.body);
    let seen = &answer.body["data"];
    assert_eq!(seen["env"], json!([]), "no environment variables");
    assert_eq!(seen["args"], json!([]), "no arguments");
    assert!(
        seen["file"].as_str().unwrap_or_default().starts_with("Err"),
        "{seen}"
    );
    assert!(
        seen["dir"].as_str().unwrap_or_default().starts_with("Err"),
        "{seen}"
    );
    assert_eq!(seen["stdin"], 0);
    assert!(
        seen["socket"].as_str().unwrap_or_default().starts_with("Err"),
        "{seen}"
    );
    assert!(!seen.to_string().contains(SECRET));
}

/// WASI random bytes come in small amounts: a guest asking for megabytes at once (which the host
/// would allocate and fill outside the guest's memory cap, without yielding) traps.
#[tokio::test(flavor = "multi_thread")]
async fn wasi_random_bytes_are_capped() {
    let setup = Setup::new().await;
    let small = attack_while_serving(&setup, "random_bytes", json!({"count": 32})).await;
    assert_eq!(small.body["data"], json!({"bytes": 32}), "{:?}", small.body);
    let huge = attack_while_serving(&setup, "random_bytes", json!({"count": 32 << 20})).await;
    assert_eq!(
        (huge.status, huge.code()),
        (502, "connector_trap"),
        "{:?}",
        huge.body
    );
}

/// Every request gets a fresh instance: nothing an earlier request wrote into the connector's
/// memory (a global counter, a page of scratch memory) is there for the next one, whether the
/// pool slot is reused one after another or many run at once.
#[tokio::test(flavor = "multi_thread")]
async fn no_request_sees_memory_an_earlier_request_wrote() {
    let setup = Setup::new().await;
    let remember = |secret: String| {
        let setup = &setup;
        async move {
            let answer = setup
                .execute("hostile", "remember", json!({"params": {"secret": secret}}))
                .await;
            assert_eq!(answer.body["status"], 200, "{:?}", answer.body);
            answer.body["data"].clone()
        }
    };
    for i in 0..20 {
        let seen = remember(format!("tenant-{i}-secret")).await;
        assert_eq!(seen, json!({"previous_calls": 0, "residue": ""}), "call {i}");
    }
    let concurrent = futures::future::join_all((0..16).map(|i| remember(format!("parallel-{i}")))).await;
    for (i, seen) in concurrent.iter().enumerate() {
        assert_eq!(
            *seen,
            json!({"previous_calls": 0, "residue": ""}),
            "concurrent call {i}"
        );
    }
}

/// A component importing a capability the host does not provide is refused at load, with
/// the reason in the log, and everything else still serves.
#[tokio::test(flavor = "multi_thread")]
async fn component_with_unknown_import_is_refused_at_load() {
    let gateway = sluice_fixtures::Gateway::start(
        std::path::Path::new(crate::common::SLUICE),
        &[sluice_fixtures::guests::BAD_IMPORT, sluice_fixtures::guests::ECHO],
        Options::default(),
    )
    .await;
    let output = gateway.output();
    assert!(output.contains("connector failed to load"), "{output}");
    assert!(
        output.contains("it imports something this gateway does not provide")
            && output.contains("sluice:spy/steal"),
        "the log names the missing import: {output}"
    );
    let plugins =
        crate::common::send(reqwest::Client::new().get(format!("{}/v1/plugins", gateway.url))).await;
    assert_eq!(plugins.body["total"], 1);
    assert_eq!(plugins.body["rows"][0]["id"], "echo");
}

/// A body far above the request limit never reaches the host: the hostcall fuel stops the copy.
#[tokio::test(flavor = "multi_thread")]
async fn huge_body_is_stopped_before_the_host_copies_it() {
    let setup = Setup::new().await;
    let answer = attack_while_serving(&setup, "huge_body", json!({"count": 24})).await;
    assert_eq!(
        (answer.status, answer.code()),
        (502, "payload_too_large"),
        "{:?}",
        answer.body
    );
    assert!(setup.upstream_requests().is_empty());
}

/// A connector's status must be an HTTP status: anything else is the connector's error, not a
/// `{"status": 999}` handed to the caller.
#[tokio::test(flavor = "multi_thread")]
async fn an_answer_status_outside_http_is_a_connector_error() {
    let setup = Setup::new().await;
    let created = setup
        .execute("hostile", "odd_status", json!({"params": {"count": 201}}))
        .await;
    assert_eq!(created.body["status"], 201, "{:?}", created.body);
    let odd = setup
        .execute("hostile", "odd_status", json!({"params": {"count": 999}}))
        .await;
    assert_eq!(
        (odd.status, odd.code()),
        (502, "connector_error"),
        "{:?}",
        odd.body
    );
    assert!(odd.body["message"].as_str().unwrap_or_default().contains("999"));
}

/// A connector's answer may be as large as an upstream response handed to it
/// (`--max-response-mib`, 16 MiB by default), not only as large as a request body (8 MiB);
/// past that it is `payload_too_large`, not a crash.
#[tokio::test(flavor = "multi_thread")]
async fn answers_up_to_the_response_limit_pass_and_larger_ones_are_too_large() {
    let setup = Setup::new().await;
    let nine = setup
        .execute("hostile", "big_answer", json!({"params": {"count": 9}}))
        .await;
    assert_eq!(nine.status, 200, "{}", nine.body["error"]);
    assert_eq!(nine.body["data"].as_str().map(str::len), Some(9 << 20));
    let over = setup
        .execute("hostile", "big_answer", json!({"params": {"count": 17}}))
        .await;
    assert_eq!(
        (over.status, over.code()),
        (502, "payload_too_large"),
        "{:?}",
        over.body["message"]
    );
    let message = over.body["message"].as_str().unwrap_or_default();
    assert!(message.contains("16 MiB"), "{message}");

    let small = Setup::with_options(Options {
        extra_args: vec!["--max-response-mib".into(), "2".into()],
        ..Options::default()
    })
    .await;
    let one = small
        .execute("hostile", "big_answer", json!({"params": {"count": 1}}))
        .await;
    assert_eq!(one.status, 200, "{}", one.body["error"]);
    let three = small
        .execute("hostile", "big_answer", json!({"params": {"count": 3}}))
        .await;
    assert_eq!(
        (three.status, three.code()),
        (502, "payload_too_large"),
        "{:?}",
        three.body["message"]
    );
}

/// With every instance slot busy, a request waits briefly and then gets `at_capacity`.
#[tokio::test(flavor = "multi_thread")]
async fn full_instance_pool_is_at_capacity() {
    let setup = Setup::with_options(spin_for_four_seconds_with("--max-instances", "1")).await;
    let spin = setup.execute("hostile", "spin", json!({"params": {}}));
    let queued = async {
        setup.wait_for_metric("sluice_instances_in_use 1").await;
        setup.execute("echo", "say", json!({"params": {}})).await
    };
    let (spin, queued) = tokio::join!(spin, queued);
    assert_eq!(spin.code(), "connector_timeout");
    assert_eq!((queued.status, queued.code()), (503, "at_capacity"));
    let after = setup.execute("echo", "say", json!({"params": {}})).await;
    assert_eq!(
        after.body["status"], 200,
        "capacity returns once the slot is free"
    );
}
