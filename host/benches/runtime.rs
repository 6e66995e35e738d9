//! Criterion benchmarks of the request path.
//!
//! - `instantiate_invoke/*`: a fresh Store + instance from the cached pre-instantiation and one
//!   `invoke`, with the `http` capability answered in-process (no network).
//! - `http_path/*`: the whole gateway over loopback — API key check, connection lookup and
//!   decryption, fresh instance, credential injection, real HTTP to a fake upstream.
//!
//! Run with `cargo bench -p sluice --bench runtime`.

use criterion::{Criterion, criterion_group, criterion_main};
use futures::future::BoxFuture;
use sluice::egress::AddressPolicy;
use sluice::http::AppState;
use sluice::oauth::refresh::TokenRefresher;
use sluice::policy::Policy;
use sluice::registry::Registry;
use sluice::runtime::{CallContext, Credential, Runtime, RuntimeLimits};
use sluice::upstream::{HttpUpstream, Upstream, UpstreamError, UpstreamRequest, UpstreamResponse};
use sluice::vault::api_keys::{Environment, KeyOptions, Scope};
use sluice::vault::connections::NewConnection;
use sluice::vault::{KeySource, Vault};
use sluice_fixtures::{FakeUpstream, Reply, guests};
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
        let logs = sluice::vault::logs::start_writer(&data_dir.path().join("sluice.db")).expect("log writer");
        let refresher = Arc::new(TokenRefresher::for_runtime(
            vault.clone(),
            &runtime,
            300,
            Arc::default(),
        ));
        let app = AppState {
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
            refresher,
            connect_session_ttl: 600,
        };
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(sluice::serve(listener, app, async {
            let _ = rx.await;
        }));
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

criterion_group!(benches, instantiate_invoke, http_path);
criterion_main!(benches);
