//! # Sluice
//!
//! A self-hosted API gateway that runs third-party API connectors as sandboxed WebAssembly
//! components. A caller sends `POST /v1/{integration}/{endpoint}`; the host picks the caller's
//! connection, runs the connector in a fresh sandbox, lets it send upstream requests through a
//! host capability that injects the credential, and returns `{"status", "data"}`.
//!
//! # Layout
//! - [`config`] — the command line (every flag also an environment variable).
//! - [`server`] — the acceptor and the thread-per-core serving threads.
//! - [`http`] — the router and one module per route group; [`error`] — the API's error shape.
//! - [`runtime`] — wasmtime engine, bindings, per-request stores, limits, the `http` capability.
//! - [`registry`] — loaded connectors, swapped atomically; [`reload`] — the file watcher.
//! - [`cache`] — compiled components on disk, authenticated.
//! - [`egress`] — allowlist and address policy (pure); [`upstream`] — the HTTP transport.
//! - [`policy`] — the operator's per-connector limits and host narrowing.
//! - [`vault`] — API keys, connections (secrets encrypted at rest), request log.
//! - [`store`] — the vault's persistence behind a trait; [`store::SqliteStore`] implements it.
//! - [`oauth`] — OAuth 2.0: PKCE, the token endpoint, single-flight refresh.
//! - [`usage`] — per-key daily quotas and per-minute rate limits; [`metrics`] — Prometheus.
//! - [`cli`] — what each command does; [`dev`] — `sluice dev` and `sluice new`.
//! - [`busy_poll`] — keeping CPUs out of idle halt while serving (opt-in).

pub mod busy_poll;
pub mod cache;
pub mod cli;
pub mod config;
pub mod dev;
pub mod egress;
pub mod error;
pub mod http;
pub mod metrics;
pub mod oauth;
pub mod policy;
pub mod registry;
pub mod reload;
pub mod runtime;
pub mod server;
pub mod store;
pub mod upstream;
pub mod usage;
pub mod vault;
pub mod vcpu_idle;

use std::future::Future;
use tokio::net::TcpListener;

/// Serve `app` on `listener` as `options` say until `shutdown` resolves, then drain in-flight
/// requests and the calls and refreshes their callers left running.
pub async fn serve(
    listener: TcpListener,
    app: http::AppState,
    options: server::ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let options = server::ServeOptions {
        open_connections: app.metrics.open_connections.clone(),
        background: app.tasks.clone(),
        ..options
    };
    server::serve(listener, http::router(app), options, shutdown).await
}
