//! Connectors by language: what the same kind of action costs when the connector is written in
//! Rust, Python (componentize-py), JavaScript (componentize-qjs) or C (clang + wit-bindgen).
//!
//! For each connector built by `tests/fixtures/build.rs` (a missing toolchain skips its
//! language with a message):
//! - size of the component file;
//! - load without cache (compile + instantiate_pre + `describe()`), and cold start from the
//!   artifact cache (deserialize + instantiate_pre + `describe()`), as a restart sees it;
//! - `languages/instantiate_invoke/*`: a fresh Store + instance and one `invoke` that sends one
//!   upstream request, answered in-process (no network), with criterion; then 2,000 single
//!   calls timed one by one for p50/p99.
//!
//! Run with `cargo bench -p sluice --bench languages`; numbers go to BENCHMARKS.md.

use criterion::{Criterion, criterion_group, criterion_main};
use futures::future::BoxFuture;
use sluice::cache::ArtifactCache;
use sluice::policy::Policy;
use sluice::runtime::{CallContext, Credential, LoadedConnector, Runtime, RuntimeLimits};
use sluice::upstream::{Upstream, UpstreamError, UpstreamRequest, UpstreamResponse};
use sluice_fixtures::guests;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Answers every request with the same small JSON body, without touching the network.
struct CannedUpstream;

impl Upstream for CannedUpstream {
    fn send(&self, _request: UpstreamRequest) -> BoxFuture<'_, Result<UpstreamResponse, UpstreamError>> {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        let body = serde_json::json!({"ok": true, "id": "42", "name": "x".repeat(600)}).to_string();
        let response = UpstreamResponse {
            status: 200,
            headers,
            body: body.into(),
        };
        Box::pin(async move { Ok(response) })
    }
}

/// (label, component, endpoint, params): one read-style action per language.
fn cases() -> Vec<(&'static str, &'static str, &'static str, &'static str)> {
    let mut cases = vec![(
        "rust_github_get_repo",
        guests::GITHUB,
        "get_repo",
        r#"{"owner":"acme","repo":"webapp"}"#,
    )];
    let others = [
        (
            "python_slack_get_user",
            guests::SLACK,
            "get_user",
            r#"{"user":"U0123ABCD"}"#,
        ),
        (
            "javascript_stripe_get_customer",
            guests::STRIPE,
            "get_customer",
            r#"{"id":"cus_A"}"#,
        ),
        (
            "c_hubspot_get_contact",
            guests::HUBSPOT,
            "get_contact",
            r#"{"contact_id":"101","properties":["email"]}"#,
        ),
    ];
    for (label, built, endpoint, params) in others {
        match built {
            Some(path) => cases.push((label, path, endpoint, params)),
            None => eprintln!("SKIPPED {label}: its toolchain was missing when the fixtures were built"),
        }
    }
    cases
}

fn context() -> CallContext {
    CallContext {
        transaction_key: "txn_bench".into(),
        credential: Some(Credential::new("bench_token_0123456789")),
        ..CallContext::default()
    }
}

async fn load(runtime: &Runtime, path: &str) -> LoadedConnector {
    let bytes = std::fs::read(path).expect("component file");
    runtime.load(bytes, &Policy::default()).await.expect("load")
}

fn languages(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let cache_dir = tempfile::tempdir().expect("tempdir");
    let mut group = c.benchmark_group("languages/instantiate_invoke");
    group.sample_size(20).measurement_time(Duration::from_secs(4));
    let mut summary = Vec::new();
    for (label, path, endpoint, params) in cases() {
        let size = std::fs::metadata(path).expect("component file").len();

        // Load without cache, then twice through the artifact cache: the first fills it, the
        // second is a restart's cold start.
        let plain = Runtime::new(RuntimeLimits::default(), Arc::new(CannedUpstream)).expect("runtime");
        let started = Instant::now();
        rt.block_on(load(&plain, path));
        let compile = started.elapsed();
        let cached = Runtime::new(RuntimeLimits::default(), Arc::new(CannedUpstream))
            .expect("runtime")
            .with_cache(ArtifactCache::open(&cache_dir.path().join(label), [7; 32]).expect("cache"));
        rt.block_on(load(&cached, path));
        let started = Instant::now();
        let connector = rt.block_on(load(&cached, path));
        let from_cache = started.elapsed();

        let call = || async {
            let invoked = cached
                .invoke(&connector, endpoint, params, context())
                .await
                .unwrap_or_else(|e| panic!("{label}: {e:?}"));
            assert_eq!(invoked.output.status, 200, "{label}");
        };
        group.bench_function(label, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        call().await;
                    }
                    start.elapsed()
                })
            })
        });

        // Criterion reports per-sample means; time single calls for true percentiles.
        let mut samples: Vec<Duration> = rt.block_on(async {
            let mut samples = Vec::with_capacity(2_000);
            for _ in 0..2_000 {
                let start = Instant::now();
                call().await;
                samples.push(start.elapsed());
            }
            samples
        });
        samples.sort();
        let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q) as usize];
        summary.push(format!(
            "{label}: size {:.2} MB, load without cache {compile:?}, cold start from cache {from_cache:?}, \
             instantiate+invoke over 2000 single calls p50 {:?} p99 {:?}",
            size as f64 / 1_000_000.0,
            at(0.50),
            at(0.99)
        ));
    }
    group.finish();
    for line in summary {
        println!("{line}");
    }
}

criterion_group!(benches, languages);
criterion_main!(benches);
