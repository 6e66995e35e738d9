//! # Sluice
//!
//! A self-hosted API gateway that runs third-party API connectors as sandboxed WebAssembly
//! components. A caller sends `POST /v1/{integration}/{endpoint}`; the host picks the caller's
//! connection, runs the connector in a fresh sandbox, lets it send upstream requests through a
//! host capability that injects the credential, and returns `{"status", "data"}`.
//!
//! # Layout
//! - [`config`] — the command line (every flag also an environment variable).
//! - [`http`] — the router and one module per route group; [`error`] — the API's error shape.
//! - [`runtime`] — wasmtime engine, bindings, per-request stores, limits, the `http` capability.
//! - [`registry`] — loaded connectors, swapped atomically; [`reload`] — the file watcher.
//! - [`cache`] — compiled components on disk, authenticated.
//! - [`egress`] — allowlist and address policy (pure); [`upstream`] — the HTTP transport.
//! - [`policy`] — the operator's per-connector limits and host narrowing.
//! - [`vault`] — SQLite store: API keys, connections (secrets encrypted at rest), request log.
//! - [`oauth`] — OAuth 2.0: PKCE, the token endpoint, single-flight refresh.
//! - [`usage`] — per-key daily quotas and per-minute rate limits; [`metrics`] — Prometheus.
//! - [`cli`] — what each command does; [`dev`] — `sluice dev` and `sluice new`.

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
pub mod upstream;
pub mod usage;
pub mod vault;

use std::future::Future;
use tokio::net::TcpListener;

/// Serve `app` on `listener` until `shutdown` resolves, then drain in-flight requests.
pub async fn serve(
    listener: TcpListener,
    app: http::AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let pacemaker = tokio::spawn(keep_the_timer_driver_scheduled());
    // Replies go out as soon as they are written: an API answer is one small write, which
    // Nagle's algorithm could otherwise hold back until the caller acknowledges the last one.
    let listener = axum::serve::ListenerExt::tap_io(listener, |connection| {
        if let Err(error) = connection.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY");
        }
    });
    let served = axum::serve(listener, http::router(app))
        .with_graceful_shutdown(shutdown)
        .await;
    pacemaker.abort();
    Ok(served?)
}

/// Keep a near timer in tokio's timer wheel for as long as the server runs.
///
/// Every request arms timers (the invocation deadline, the upstream timeout). When tokio's
/// timer driver went to sleep with no timer pending, arming one wakes its thread to shorten
/// the sleep — one more cross-CPU wake-up on every request of an otherwise idle gateway. With
/// this timer always due within a second, the requests' later deadlines need no wake-up.
async fn keep_the_timer_driver_scheduled() {
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
    }
}
