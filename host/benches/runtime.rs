//! Criterion benchmarks of the request path.
//!
//! - `instantiate_invoke/*`: a fresh Store + instance from the cached pre-instantiation and one
//!   `invoke`, with the `http` capability answered in-process (no network).
//! - `invoke_params/*`: the same with small and 64 KiB params (copying params in and results
//!   out of the sandbox), no upstream call.
//! - `http_send/*`: one `http.send` round trip through the capability (allowlist, header rules,
//!   credential injection, scrubbing) answered in-process with 1 KiB or 64 KiB, and over real
//!   loopback HTTP to an in-process upstream.
//! - `egress/*`: the allowlist match and the SSRF address check a request goes through.
//! - `credential/*`: a connection's credential from a record in memory (decrypt only), looked up
//!   on the calling thread, and the round trip through the vault's blocking pool the gateway
//!   makes per call.
//! - `params/*`: params validation against the manifest's compiled JSON Schema validators.
//! - `http_path/*`: the whole gateway over loopback — API key check, connection lookup and
//!   decryption, fresh instance, credential injection, real HTTP to a fake upstream.
//!
//! Run with `cargo bench -p sluice --bench runtime` (one group: `-- egress`). The load harness
//! (`cargo run --release -p sluice-loadbench`) measures the gateway process under concurrency.

use criterion::{Criterion, criterion_group, criterion_main};
use futures::future::BoxFuture;
use sluice::egress::AddressPolicy;
use sluice::http::{App, AppState};
use sluice::oauth::refresh::TokenRefresher;
use sluice::policy::Policy;
use sluice::registry::Registry;
use sluice::runtime::{CallContext, Credential, Runtime, RuntimeLimits};
use sluice::upstream::{HttpUpstream, Upstream, UpstreamError, UpstreamRequest, UpstreamResponse};
use sluice::vault::api_keys::{Environment, KeyOptions, Scope};
use sluice::vault::connections::NewConnection;
use sluice::vault::{KeySource, Vault};
use sluice_fixtures::{FakeUpstream, Reply, guests};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Answers every request with the same ~1 KiB JSON body, without touching the network.
struct CannedUpstream {
    body: bytes::Bytes,
}

impl Upstream for CannedUpstream {
    fn send(&self, _request: UpstreamRequest) -> BoxFuture<'_, Result<UpstreamResponse, UpstreamError>> {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        let response = UpstreamResponse {
            status: 200,
            headers,
            body: self.body.clone(),
        };
        Box::pin(async move { Ok(response) })
    }
}

fn repo_json() -> serde_json::Value {
    serde_json::json!({
        "id": 1296269, "name": "webapp", "full_name": "acme/webapp", "private": false,
        "description": "x".repeat(800), "default_branch": "main", "stargazers_count": 80
    })
}

fn instantiate_invoke(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let upstream = Arc::new(CannedUpstream {
        body: repo_json().to_string().into(),
    });
    let runtime = Runtime::new(RuntimeLimits::default(), upstream).expect("runtime");
    let github = rt
        .block_on(runtime.load(
            std::fs::read(guests::GITHUB).expect("github.wasm"),
            &Policy::default(),
        ))
        .expect("load github");
    let echo = rt
        .block_on(runtime.load(
            std::fs::read(guests::ECHO).expect("echo.wasm"),
            &Policy::default(),
        ))
        .expect("load echo");
    let context = CallContext {
        transaction_key: "txn_bench".into(),
        credential: Some(Credential::new("ghp_benchmark_token")),
        ..CallContext::default()
    };

    let mut group = c.benchmark_group("instantiate_invoke");
    group.bench_function("github_get_repo", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let output = runtime
                        .invoke(
                            &github,
                            "get_repo",
                            r#"{"owner":"acme","repo":"webapp"}"#,
                            context.clone(),
                        )
                        .await
                        .expect("invoke");
                    assert_eq!(output.output.status, 200);
                }
                start.elapsed()
            })
        })
    });
    group.bench_function("echo_say_no_upstream", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    runtime
                        .invoke(&echo, "say", r#"{"message":"hi"}"#, CallContext::default())
                        .await
                        .expect("invoke");
                }
                start.elapsed()
            })
        })
    });
    group.finish();

    // Criterion reports per-sample means; also time single calls for true percentiles.
    let mut samples: Vec<Duration> = rt.block_on(async {
        let mut samples = Vec::with_capacity(10_000);
        for _ in 0..10_000 {
            let start = Instant::now();
            runtime
                .invoke(
                    &github,
                    "get_repo",
                    r#"{"owner":"acme","repo":"webapp"}"#,
                    context.clone(),
                )
                .await
                .expect("invoke");
            samples.push(start.elapsed());
        }
        samples
    });
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q) as usize];
    println!(
        "instantiate_invoke/github_get_repo over 10000 single calls: p50 {:?} p90 {:?} p99 {:?} max {:?}",
        at(0.50),
        at(0.90),
        at(0.99),
        at(1.0)
    );
}

fn http_path(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let data_dir = tempfile::tempdir().expect("tempdir");
    let (url, key, proxy_url, _upstream, _shutdown) = rt.block_on(async {
        let body = repo_json();
        let upstream = FakeUpstream::start(move |_| Reply::json(200, body.clone())).await;
        let proxy_url = start_plain_proxy(format!("{}/repos/acme/webapp", upstream.url())).await;
        let vault = Vault::open(
            &data_dir.path().join("sluice.db"),
            &KeySource::Explicit("ab".repeat(32)),
        )
        .expect("vault");
        let key = vault
            .create_api_key(&KeyOptions::new(Environment::Test, Scope::All))
            .expect("key")
            .key;
        vault
            .add_connection(
                &NewConnection {
                    platform: "github".into(),
                    environment: Some(Environment::Test),
                    base_url: Some(url::Url::parse(&upstream.url()).expect("url")),
                    secret: "ghp_benchmark_token".into(),
                    ..NewConnection::default()
                },
                None,
            )
            .expect("connection")
            .expect("under the plan limit");
        let limits = RuntimeLimits {
            address_policy: AddressPolicy::AllowPrivate,
            ..RuntimeLimits::default()
        };
        let transport = Arc::new(HttpUpstream::new(AddressPolicy::AllowPrivate).expect("transport"));
        let runtime = Arc::new(Runtime::new(limits, transport).expect("runtime"));
        let registry = Arc::new(Registry::default());
        registry.insert(
            runtime
                .load(
                    std::fs::read(guests::GITHUB).expect("github.wasm"),
                    &Policy::default(),
                )
                .await
                .expect("load"),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let (logs, _writer) = sluice::vault::logs::start_writer(vault.store()).expect("log writer");
        let tasks = tokio_util::task::TaskTracker::new();
        let refresher = Arc::new(TokenRefresher::for_runtime(
            vault.clone(),
            &runtime,
            300,
            Arc::default(),
            tasks.clone(),
        ));
        let app = AppState::new(App {
            runtime,
            registry,
            vault,
            public_url: url.clone(),
            usage: Arc::default(),
            logs,
            admin_key_hash: None,
            max_connections_per_environment: None,
            metrics: Arc::default(),
            max_passthrough_body: 64 << 20,
            max_call_body: 1 << 20,
            max_tool_result: 100 << 10,
            refresher,
            connect_session_ttl: 600,
            max_in_flight_per_key: None,
            dev_builds: None,
            access_log: false,
            busy_poll: None,
            cors_origins: Vec::new(),
            metrics_on_api: true,
            stopping: tokio::sync::watch::channel(false).1,
            event_streams: Arc::new(tokio::sync::Semaphore::new(1)),
            tasks,
            openapi: Default::default(),
        });
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(sluice::serve(
            listener,
            app,
            sluice::server::ServeOptions::default(),
            async {
                let _ = rx.await;
            },
        ));
        (url, key, proxy_url, upstream, tx)
    });
    let client = reqwest::Client::new();
    let endpoint = format!("{url}/v1/github/get_repo");
    let body = r#"{"params":{"owner":"acme","repo":"webapp"}}"#;

    let mut group = c.benchmark_group("http_path");
    group.measurement_time(Duration::from_secs(8));
    group.bench_function("github_get_repo_loopback", |b| {
        b.iter_custom(|iters| rt.block_on(time_posts(&client, &endpoint, Some(&key), body, iters)))
    });
    // The floor for any gateway on this stack: the same request through a plain axum + reqwest
    // proxy that adds a bearer token and no WebAssembly, key check, database or validation.
    group.bench_function("plain_proxy_loopback", |b| {
        b.iter_custom(|iters| rt.block_on(time_posts(&client, &proxy_url, None, body, iters)))
    });
    group.finish();
}

/// Time `iters` sequential JSON POSTs of `body` to `url`, each read to the end.
async fn time_posts(
    client: &reqwest::Client,
    url: &str,
    key: Option<&str>,
    body: &'static str,
    iters: u64,
) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        let mut request = client
            .post(url)
            .header("content-type", "application/json")
            .body(body);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.expect("send");
        assert_eq!(response.status(), 200);
        response.bytes().await.expect("body");
    }
    start.elapsed()
}

/// A minimal reverse proxy on loopback: every request becomes a GET of `target`.
async fn start_plain_proxy(target: String) -> String {
    use axum::extract::State;
    let client = reqwest::Client::new();
    let app = axum::Router::new()
        .route(
            "/proxy",
            axum::routing::post(
                |State((client, target)): State<(reqwest::Client, String)>, _body: bytes::Bytes| async move {
                    let response = client
                        .get(&target)
                        .bearer_auth("ghp_benchmark_token")
                        .send()
                        .await;
                    match response {
                        Ok(response) => response.bytes().await.unwrap_or_default(),
                        Err(_) => bytes::Bytes::new(),
                    }
                },
            ),
        )
        .with_state((client, target));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/proxy", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// A runtime with the GitHub and echo connectors loaded, answering upstream calls from `upstream`.
fn runtime_with(
    rt: &tokio::runtime::Runtime,
    limits: RuntimeLimits,
    upstream: Arc<dyn Upstream>,
) -> (
    Runtime,
    sluice::runtime::LoadedConnector,
    sluice::runtime::LoadedConnector,
) {
    let runtime = Runtime::new(limits, upstream).expect("runtime");
    let load = |path: &str| {
        rt.block_on(runtime.load(std::fs::read(path).expect("component"), &Policy::default()))
            .expect("load")
    };
    let github = load(guests::GITHUB);
    let echo = load(guests::ECHO);
    (runtime, github, echo)
}

/// Time `iters` sequential invocations of `endpoint` with `params`, each checked for `status`.
async fn time_invokes(
    runtime: &Runtime,
    connector: &sluice::runtime::LoadedConnector,
    endpoint: &str,
    params: &str,
    context: &CallContext,
    iters: u64,
) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        let output = runtime
            .invoke(connector, endpoint, params, context.clone())
            .await
            .expect("invoke");
        assert_eq!(output.output.status, 200);
    }
    start.elapsed()
}

fn invoke_params(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let upstream = Arc::new(CannedUpstream {
        body: bytes::Bytes::new(),
    });
    let (runtime, _github, echo) = runtime_with(&rt, RuntimeLimits::default(), upstream);
    let small = r#"{"message":"hi"}"#.to_owned();
    let large = serde_json::json!({ "message": "x".repeat(64 << 10) }).to_string();
    let context = CallContext::default();
    let mut group = c.benchmark_group("invoke_params");
    for (name, params) in [("echo_say_small", &small), ("echo_say_64k", &large)] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| rt.block_on(time_invokes(&runtime, &echo, "say", params, &context, iters)))
        });
    }
    group.finish();
}

fn http_send(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let params = r#"{"owner":"acme","repo":"webapp"}"#;
    let credential = CallContext {
        transaction_key: "txn_bench".into(),
        credential: Some(Credential::new("ghp_benchmark_token")),
        ..CallContext::default()
    };
    let mut group = c.benchmark_group("http_send");
    for (name, size) in [("canned_1k", 1usize << 10), ("canned_64k", 64 << 10)] {
        let body = serde_json::json!({"name": "webapp", "description": "x".repeat(size - 40)}).to_string();
        let upstream = Arc::new(CannedUpstream { body: body.into() });
        let (runtime, github, _echo) = runtime_with(&rt, RuntimeLimits::default(), upstream);
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(time_invokes(
                    &runtime,
                    &github,
                    "get_repo",
                    params,
                    &credential,
                    iters,
                ))
            })
        });
    }
    // Real HTTP/1.1 over loopback to an in-process axum upstream, through the production transport.
    let upstream_url = rt.block_on(async {
        let body = bytes::Bytes::from(repo_json().to_string());
        let app = axum::Router::new().fallback(move || {
            let body = body.clone();
            async move { ([(http::header::CONTENT_TYPE, "application/json")], body) }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    });
    let limits = RuntimeLimits {
        address_policy: AddressPolicy::AllowPrivate,
        ..RuntimeLimits::default()
    };
    let transport = Arc::new(HttpUpstream::new(AddressPolicy::AllowPrivate).expect("transport"));
    let (runtime, github, _echo) = runtime_with(&rt, limits, transport);
    let loopback = CallContext {
        base_url_override: Some(url::Url::parse(&upstream_url).expect("url")),
        ..credential.clone()
    };
    group.bench_function("loopback_1k", |b| {
        b.iter_custom(|iters| {
            rt.block_on(time_invokes(
                &runtime, &github, "get_repo", params, &loopback, iters,
            ))
        })
    });
    // The same, driven from a runtime worker (as the gateway's handlers are) rather than from
    // `block_on` on the bench thread.
    let runtime = Arc::new(runtime);
    let github = Arc::new(github);
    group.bench_function("loopback_1k_on_worker", |b| {
        b.iter_custom(|iters| {
            let (runtime, github, loopback) = (runtime.clone(), github.clone(), loopback.clone());
            rt.block_on(async move {
                tokio::spawn(async move {
                    time_invokes(&runtime, &github, "get_repo", params, &loopback, iters).await
                })
                .await
                .expect("bench task")
            })
        })
    });
    // The same GET without the connector: the production transport alone, and a default
    // reqwest client (what the plain proxy uses), to tell the transport's cost from the rest.
    let transport = HttpUpstream::new(AddressPolicy::AllowPrivate).expect("transport");
    let target = url::Url::parse(&format!("{upstream_url}/repos/acme/webapp")).expect("url");
    group.bench_function("transport_only_loopback_1k", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let response = transport
                        .send(UpstreamRequest {
                            method: http::Method::GET,
                            url: target.clone(),
                            headers: http::HeaderMap::new(),
                            body: None,
                            timeout: Duration::from_secs(10),
                            max_response_bytes: 16 << 20,
                        })
                        .await
                        .expect("send");
                    assert_eq!(response.status, 200);
                }
                start.elapsed()
            })
        })
    });
    let plain = reqwest::Client::builder().no_proxy().build().expect("client");
    group.bench_function("plain_reqwest_loopback_1k", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let response = plain.get(target.clone()).send().await.expect("send");
                    assert_eq!(response.status(), 200);
                    response.bytes().await.expect("body");
                }
                start.elapsed()
            })
        })
    });
    group.finish();
}

fn egress(c: &mut Criterion) {
    use sluice::egress::{HostPattern, ip_literal, is_allowed};
    let allowlist: Vec<HostPattern> = [
        "https://api.github.com",
        "https://uploads.github.com",
        "https://*.githubusercontent.com",
        "http://127.0.0.1:8080",
    ]
    .iter()
    .map(|p| HostPattern::parse(p).expect("pattern"))
    .collect();
    let allowed = url::Url::parse("https://api.github.com/repos/acme/webapp").expect("url");
    let wildcard =
        url::Url::parse("https://raw.githubusercontent.com/acme/webapp/main/README.md").expect("url");
    let denied = url::Url::parse("https://evil.example.com/steal").expect("url");
    let mut group = c.benchmark_group("egress");
    group.bench_function("allowlist_exact_hit", |b| {
        b.iter(|| assert!(is_allowed(&allowlist, black_box(&allowed))))
    });
    group.bench_function("allowlist_wildcard_hit", |b| {
        b.iter(|| assert!(is_allowed(&allowlist, black_box(&wildcard))))
    });
    group.bench_function("allowlist_miss", |b| {
        b.iter(|| assert!(!is_allowed(&allowlist, black_box(&denied))))
    });
    // The SSRF guard on every address a request may connect to: IP literals in the URL and
    // every resolved address, IPv4-mapped IPv6 included.
    let addresses: Vec<std::net::IpAddr> = [
        "140.82.112.6",
        "169.254.169.254",
        "10.1.2.3",
        "::ffff:127.0.0.1",
        "2606:50c0:8000::154",
    ]
    .iter()
    .map(|a| a.parse().expect("ip"))
    .collect();
    group.bench_function("address_policy_5_ips", |b| {
        b.iter(|| {
            let permitted = addresses
                .iter()
                .filter(|ip| AddressPolicy::PublicOnly.permits(*black_box(*ip)))
                .count();
            assert_eq!(permitted, 2);
        })
    });
    group.bench_function("parse_url_allowlist_and_ip_check", |b| {
        b.iter(|| {
            let url = url::Url::parse(black_box("http://127.0.0.1:8080/repos/acme/webapp?per_page=30"))
                .expect("url");
            assert!(is_allowed(&allowlist, &url));
            let ip = ip_literal(&url).expect("literal");
            assert!(!AddressPolicy::PublicOnly.permits(ip));
        })
    });
    group.finish();
}

fn credential(c: &mut Criterion) {
    use sluice::vault::connections::ConnectionSelector;
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let data_dir = tempfile::tempdir().expect("tempdir");
    let vault = Vault::open(
        &data_dir.path().join("sluice.db"),
        &KeySource::Explicit("ab".repeat(32)),
    )
    .expect("vault");
    let record = vault
        .add_connection(
            &NewConnection {
                platform: "github".into(),
                environment: Some(Environment::Test),
                secret: "ghp_benchmark_token".into(),
                ..NewConnection::default()
            },
            None,
        )
        .expect("connection")
        .expect("under the plan limit");
    let lookup = |vault: &Vault| -> anyhow::Result<Credential> {
        let found = vault.find_connections("github", Environment::Test, &ConnectionSelector::default())?;
        let record = found.first().ok_or_else(|| anyhow::anyhow!("no connection"))?;
        vault.credential(record)
    };
    let mut group = c.benchmark_group("credential");
    // What a cache of connection records would leave per call: the decryption alone.
    group.bench_function("decrypt_cached_record", |b| {
        b.iter(|| black_box(vault.credential(&record).expect("credential")))
    });
    group.bench_function("lookup_and_decrypt_inline", |b| {
        b.iter(|| black_box(lookup(&vault).expect("credential")))
    });
    // What the gateway does per call today: the same through the blocking pool.
    group.bench_function("vault_round_trip_uncached", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(vault.run(move |vault| lookup(vault)).await.expect("credential"));
                }
                start.elapsed()
            })
        })
    });
    group.finish();
}

fn params(c: &mut Criterion) {
    use sluice::runtime::manifest::Manifest;
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let upstream = Arc::new(CannedUpstream {
        body: bytes::Bytes::new(),
    });
    let (_runtime, github, _echo) = runtime_with(&rt, RuntimeLimits::default(), upstream);
    let get_repo = github.manifest.endpoint("get_repo").expect("get_repo");
    let create_issue = github.manifest.endpoint("create_issue").expect("create_issue");
    let valid: serde_json::Value = serde_json::json!({"owner": "acme", "repo": "webapp"});
    let invalid: serde_json::Value = serde_json::json!({"owner": "", "extra": true});
    let issue = r#"{"owner":"acme","repo":"webapp","title":"Bug report","body":"Steps to reproduce: ...","labels":["bug","p1"],"assignees":["octocat"]}"#;
    let mut group = c.benchmark_group("params");
    group.bench_function("get_repo_valid", |b| {
        b.iter(|| assert!(Manifest::validate_params(get_repo, black_box(&valid)).is_empty()))
    });
    group.bench_function("get_repo_invalid_3_errors", |b| {
        b.iter(|| assert_eq!(Manifest::validate_params(get_repo, black_box(&invalid)).len(), 3))
    });
    group.bench_function("create_issue_parse_and_validate", |b| {
        b.iter(|| {
            let value: serde_json::Value = serde_json::from_str(black_box(issue)).expect("json");
            assert!(Manifest::validate_params(create_issue, &value).is_empty());
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    instantiate_invoke,
    invoke_params,
    http_send,
    egress,
    credential,
    params,
    http_path
);
criterion_main!(benches);
