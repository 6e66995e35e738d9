//! The runtime's sharing of instance slots, against real connector components.

use super::*;
use crate::upstream::{UpstreamError, UpstreamRequest, UpstreamResponse};
use sluice_fixtures::guests;

/// An upstream that answers `{}` only once the test lets a request through, so a request can be
/// held in flight with its instance alive.
struct GatedUpstream {
    gate: Semaphore,
}

impl Upstream for GatedUpstream {
    fn send(&self, _request: UpstreamRequest) -> BoxFuture<'_, Result<UpstreamResponse, UpstreamError>> {
        Box::pin(async move {
            // Each permit lets one request through.
            self.gate
                .acquire()
                .await
                .map_err(|_| UpstreamError::Transport("gate closed".into()))?
                .forget();
            Ok(UpstreamResponse {
                status: 200,
                headers: http::HeaderMap::new(),
                body: bytes::Bytes::from_static(b"{}"),
            })
        })
    }
}

fn runtime(max_instances: u32) -> (Runtime, Arc<GatedUpstream>) {
    runtime_with(RuntimeLimits {
        max_instances,
        ..RuntimeLimits::default()
    })
}

fn runtime_with(limits: RuntimeLimits) -> (Runtime, Arc<GatedUpstream>) {
    let upstream = Arc::new(GatedUpstream {
        gate: Semaphore::new(0),
    });
    let runtime = Runtime::new(limits, upstream.clone()).expect("runtime");
    (runtime, upstream)
}

async fn load(runtime: &Runtime, path: &str) -> LoadedConnector {
    let bytes = std::fs::read(path).expect("component file");
    runtime.load(bytes, &Policy::default()).await.expect("load")
}

async fn say(runtime: &Runtime, echo: &LoadedConnector) {
    let answer = runtime
        .invoke(echo, "say", r#"{"i":1}"#, CallContext::default())
        .await
        .expect("echo answers");
    assert_eq!(answer.output.status, 200);
}

/// Give the task that builds a spare after a request time to finish.
async fn let_spares_build() {
    tokio::time::sleep(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn a_load_finds_a_slot_while_every_request_slot_and_spare_is_taken() {
    let (runtime, upstream) = runtime(1);
    let github = load(&runtime, guests::GITHUB).await;
    let echo = load(&runtime, guests::ECHO).await;
    say(&runtime, &echo).await;
    let_spares_build().await;
    assert_eq!(
        runtime.spares_alive(),
        1,
        "echo's spare takes the only spare slot"
    );

    let context = CallContext {
        credential: Some(Credential::new("ghp_test")),
        ..CallContext::default()
    };
    let held = runtime.invoke(
        &github,
        "get_repo",
        r#"{"owner":"acme","repo":"webapp"}"#,
        context,
    );
    let reload_while_held = async {
        while runtime.instances_in_use() < 1 {
            tokio::task::yield_now().await;
        }
        // Every request slot and every spare slot is taken: only the load's own share is left.
        let reloaded = runtime
            .load(
                std::fs::read(guests::ECHO).expect("echo.wasm"),
                &Policy::default(),
            )
            .await;
        upstream.gate.add_permits(1);
        reloaded
    };
    let (held, reloaded) = tokio::join!(held, reload_while_held);
    assert_eq!(held.expect("the held request finishes").output.status, 200);
    let reloaded = reloaded.expect("a load is not starved by requests and spares");
    assert_eq!(reloaded.manifest.id, "echo");
}

#[tokio::test]
async fn an_idle_spare_is_dropped_and_gives_its_allowance_back() {
    let (runtime, _upstream) = runtime(4);
    let echo = load(&runtime, guests::ECHO).await;
    say(&runtime, &echo).await;
    let_spares_build().await;
    assert_eq!(runtime.spares_alive(), 1);

    assert_eq!(
        echo.drop_idle_spares(Duration::from_secs(3600)),
        0,
        "not idle long enough"
    );
    assert_eq!(runtime.spares_alive(), 1);
    assert_eq!(echo.drop_idle_spares(Duration::ZERO), 1);
    assert_eq!(runtime.spares_alive(), 0, "the allowance is given back");
    assert_eq!(echo.drop_idle_spares(Duration::ZERO), 0, "nothing left to drop");

    // The connector still serves, and the next request prepares a spare again.
    say(&runtime, &echo).await;
    let_spares_build().await;
    assert_eq!(runtime.spares_alive(), 1);
}

#[tokio::test]
async fn a_request_abandoned_mid_flight_gives_its_slot_back_and_leaves_a_spare() {
    let (runtime, upstream) = runtime(4);
    let github = load(&runtime, guests::GITHUB).await;
    let context = || CallContext {
        credential: Some(Credential::new("ghp_test")),
        ..CallContext::default()
    };
    let params = r#"{"owner":"acme","repo":"webapp"}"#;
    upstream.gate.add_permits(1);
    let answered = runtime.invoke(&github, "get_repo", params, context()).await;
    assert_eq!(answered.expect("answered").output.status, 200);
    let_spares_build().await;
    assert_eq!(runtime.spares_alive(), 1);

    // The next request takes the spare and waits on the upstream; its caller gives up.
    let held = runtime.invoke(&github, "get_repo", params, context());
    let abandoned = tokio::time::timeout(Duration::from_millis(50), held).await;
    assert!(
        abandoned.is_err(),
        "the gate held the request until it was dropped"
    );
    let_spares_build().await;
    assert_eq!(
        runtime.instances_in_use(),
        0,
        "the abandoned request's slot is back"
    );
    assert_eq!(
        runtime.spares_alive(),
        1,
        "the thread has a spare for its next request"
    );
}

#[tokio::test]
async fn a_compilation_past_its_deadline_fails_the_load_and_the_next_load_works() {
    let (runtime, _upstream) = runtime_with(RuntimeLimits {
        compile_timeout: Duration::from_micros(1),
        ..RuntimeLimits::default()
    });
    let bytes = std::fs::read(guests::ECHO).expect("echo.wasm");
    let error = runtime
        .load(bytes.clone(), &Policy::default())
        .await
        .expect_err("no component compiles in a microsecond");
    assert!(
        error.to_string().contains("compiling took longer than"),
        "{error}"
    );

    let (runtime, _upstream) = runtime_with(RuntimeLimits::default());
    let echo = runtime.load(bytes, &Policy::default()).await.expect("load");
    say(&runtime, &echo).await;
}

#[tokio::test]
async fn load_errors_are_one_line_and_a_file_that_is_not_webassembly_is_named_so() {
    let (runtime, _upstream) = runtime(1);
    let error = runtime
        .load(b"garbage\n".to_vec(), &Policy::default())
        .await
        .expect_err("not WebAssembly")
        .to_string();
    assert_eq!(
        error,
        "not a loadable connector component: not a WebAssembly file (it does not start with the `\\0asm` magic number)"
    );
    // A core module, not a component: wasmtime's message spans lines.
    let error = runtime
        .load(b"\0asm\x01\0\0\0".to_vec(), &Policy::default())
        .await
        .expect_err("a core module")
        .to_string();
    assert_eq!(
        error,
        "not a loadable connector component: a core WebAssembly module, not a component: build the \
         connector with `--target wasm32-wasip2` (or make a component of the module with `wasm-tools \
         component new`)"
    );
    assert_eq!(
        one_line("expected=[\n    0x0,\n    0x61,\n] actual"),
        "expected=[ 0x0, 0x61, ] actual"
    );
    // What a connector declares is quoted in manifest errors: no forged log lines or colours.
    assert_eq!(
        one_line("method `GET\r\n2026-01-01 INFO forged` is not\u{1b}[31m one"),
        "method `GET 2026-01-01 INFO forged` is not [31m one"
    );
}

/// A connector that panics in `describe()` fails to load with its own words in the error (the
/// load error is what `/v1/plugins` and the log line naming the file show), not wasmtime's
/// backtrace of guest frames, nor Rust's advice to set an environment variable a guest lacks.
#[tokio::test]
async fn a_describe_that_panics_fails_the_load_with_its_message() {
    let (runtime, _upstream) = runtime(1);
    let bytes = std::fs::read(guests::DESCRIBE_PANICS).expect("versioned.wasm (describe-panics)");
    let error = runtime
        .load(bytes, &Policy::default())
        .await
        .expect_err("describe panics")
        .to_string();
    assert!(error.starts_with("describe() failed: it trapped ("), "{error}");
    let said = error.split_once("; the connector wrote: ").map(|(_, said)| said);
    assert!(
        said.is_some_and(
            |said| said.starts_with("panicked at tests/guests/versioned/src/lib.rs:")
                && said.ends_with(": describe broke on purpose")
        ),
        "{error}"
    );
    assert!(!error.contains("RUST_BACKTRACE") && error.len() < 300, "{error}");
}

/// A connector whose `describe()` never returns fails to load at its deadline, saying so; the
/// slot it held is free again for the next load.
#[tokio::test]
async fn a_describe_that_never_returns_fails_the_load_at_its_deadline() {
    let (runtime, _upstream) = runtime_with(RuntimeLimits {
        max_instances: 1,
        describe_timeout: Duration::from_millis(300),
        ..RuntimeLimits::default()
    });
    let bytes = std::fs::read(guests::DESCRIBE_LOOPS).expect("versioned.wasm (describe-loops)");
    for _ in 0..3 {
        let error = runtime
            .load(bytes.clone(), &Policy::default())
            .await
            .expect_err("describe loops")
            .to_string();
        assert_eq!(
            error,
            "describe() failed: it ran past its 300 ms deadline (a loop that never ends?)"
        );
    }
    load(&runtime, guests::VERSIONED_V1).await;
}

#[tokio::test]
async fn a_connection_base_url_is_used_only_where_the_policy_allows_it() {
    let (runtime, _upstream) = runtime(4);
    let policy: Policy = serde_json::from_value(serde_json::json!({
        "connectors": {"github": {"baseUrls": ["https://*.acme.test"]}}
    }))
    .expect("policy");
    let bytes = std::fs::read(guests::GITHUB).expect("github.wasm");
    let restricted = runtime.load(bytes.clone(), &policy).await.expect("load");
    let url = |text: &str| Url::parse(text).expect("url");

    let plan = restricted
        .plan_for(Some(&url("https://github.acme.test/api/v3")))
        .expect("allowed");
    assert_eq!(plan.base_url, "https://github.acme.test/api/v3");
    let again = restricted
        .plan_for(Some(&url("https://github.acme.test/api/v3")))
        .expect("allowed");
    assert!(Arc::ptr_eq(&plan, &again), "a connection's calls share one plan");
    for _ in 0..2 {
        let refused = restricted
            .plan_for(Some(&url("https://evil.example")))
            .expect_err("outside the policy, every time");
        assert!(refused.contains("https://evil.example"), "{refused}");
    }
    assert!(restricted.plan_for(None).is_ok(), "the connector's own origin");

    // Without a word from the operator, a connection may only pick among the origins the
    // connector declared: no API key widens where the gateway sends requests.
    let unrestricted = runtime
        .load(bytes.clone(), &Policy::default())
        .await
        .expect("load");
    let refused = unrestricted
        .plan_for(Some(&url("https://evil.example")))
        .expect_err("not declared");
    assert_eq!(
        refused,
        "the base URL (https://evil.example) is not among the origins github declares; the operator \
         may allow others with `baseUrls` for `github` in the policy file"
    );
    assert!(
        unrestricted
            .plan_for(Some(&url("https://api.github.com/v3")))
            .is_ok()
    );
    // Loopback only where the operator let the gateway reach private upstreams (development).
    let loopback = unrestricted
        .plan_for(Some(&url("http://127.0.0.1:9000")))
        .expect_err("loopback");
    assert!(loopback.contains("--allow-private-upstreams"), "{loopback}");
    let (development, _upstream) = runtime_with(RuntimeLimits {
        address_policy: AddressPolicy::AllowPrivate,
        ..RuntimeLimits::default()
    });
    let local = development
        .load(bytes.clone(), &Policy::default())
        .await
        .expect("load");
    for loopback in [
        "http://127.0.0.1:9000",
        "http://localhost:9000",
        "http://[::1]:9000",
    ] {
        assert!(local.plan_for(Some(&url(loopback))).is_ok(), "{loopback}");
    }
    for elsewhere in ["http://10.0.0.7:9000", "https://evil.example"] {
        assert!(local.plan_for(Some(&url(elsewhere))).is_err(), "{elsewhere}");
    }
    // `*` lets every key choose.
    let open: Policy = serde_json::from_value(serde_json::json!({
        "connectors": {"github": {"baseUrls": ["*"]}}
    }))
    .expect("policy");
    let open = runtime.load(bytes, &open).await.expect("load");
    assert!(open.plan_for(Some(&url("https://evil.example"))).is_ok());
}

/// A JavaScript manifest with a misspelt case traps with a line naming neither the field nor
/// the cases: the load error adds them; other lines are left as they are.
#[test]
fn a_misspelt_manifest_case_is_explained() {
    let hint = super::describe_trap_hint("Error: unknown variant tag: apikey");
    assert!(
        hint.contains("none, bearer, header, query, basic, oauth2"),
        "{hint}"
    );
    assert_eq!(super::describe_trap_hint("TypeError: x is undefined"), "");
}
