//! The caller-facing HTTP API: one router, one module per route group.
//!
//! - [`execute`] — `POST /v1/{integration}/{endpoint}`; [`catalog`] — connectors, actions,
//!   knowledge, docs route and LLM tool definitions.
//! - [`health`] — `/healthz` and `GET /v1/plugins`.
//! - [`vault`] — the Pica-compatible connections API; [`admin`] — API keys and OAuth apps
//!   (admin key).
//! - [`connect`] — connect sessions and the end-user connect page (OAuth and API-key forms);
//!   [`connection`] — picking a call's connection and its (refreshed) credential.
//! - [`openapi`] — the OpenAPI description of these routes.
//! - [`mcp`] — the Model Context Protocol endpoint for AI agents.
//! - [`passthrough`] — `ANY /v1/passthrough/{*path}`; [`logs`] — `GET /v1/logs`; [`query`] — query-string parsing and pagination.
//! - [`extract`] — body and API-key extraction that fails with [`ApiError`]s; [`cors`] —
//!   cross-origin requests from the origins the operator allows.
//! - [`detach`] — calls running in a task of their own, so that a caller going away costs
//!   neither the upstream exchange nor the request-log row.

mod admin;
pub mod catalog;
mod connect;
mod connection;
pub mod cors;
mod detach;
mod execute;
pub mod extract;
mod health;
mod idempotency;
mod logs;
mod mcp;
pub mod openapi;
mod passthrough;
pub mod query;
mod rejection;
mod strict_json;
pub(crate) mod timestamps;
pub(crate) mod vault;

use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::oauth::refresh::TokenRefresher;
use crate::registry::Registry;
use crate::runtime::Runtime;
use crate::usage::UsageTracker;
use crate::vault::Vault;
use crate::vault::logs::{LogSink, RequestLog};
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::HeaderValue;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument;

/// Shared state of every handler, behind one `Arc`: axum clones the state for every request
/// (and every extractor that asks for it), and one count is cheaper than one per field.
#[derive(Debug, Clone)]
pub struct AppState(Arc<App>);

impl AppState {
    /// Share `app` with the handlers.
    pub fn new(app: App) -> Self {
        Self(Arc::new(app))
    }
}

impl std::ops::Deref for AppState {
    type Target = App;

    fn deref(&self) -> &App {
        &self.0
    }
}

/// What the handlers share: the runtime, the connectors, the vault and the settings.
#[derive(Debug)]
pub struct App {
    /// The WebAssembly runtime.
    pub runtime: Arc<Runtime>,
    /// Loaded connectors.
    pub registry: Arc<Registry>,
    /// Keys and connections.
    pub vault: Vault,
    /// Public base URL of this gateway, for `action_url`s.
    pub public_url: String,
    /// Per-key call counters.
    pub usage: Arc<UsageTracker>,
    /// The request log writer.
    pub logs: LogSink,
    /// SHA-256 of the admin key; `None` disables the admin API.
    pub admin_key_hash: Option<Vec<u8>>,
    /// Most connections one environment may hold.
    pub max_connections_per_environment: Option<u32>,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Largest body a caller may stream through passthrough.
    pub max_passthrough_body: usize,
    /// Largest request body of every other route (an action's params, an MCP message).
    pub max_call_body: usize,
    /// Longest text of an MCP tool result, in bytes.
    pub max_tool_result: usize,
    /// OAuth token refresh, shared by every request.
    pub refresher: Arc<TokenRefresher>,
    /// Lifetime of a connect session, in seconds.
    pub connect_session_ttl: i64,
    /// Calls one API key may have in flight, for keys without a cap of their own.
    pub max_in_flight_per_key: Option<u32>,
    /// Under `sluice dev`: connectors whose last build failed (shown in `GET /v1/plugins`).
    pub dev_builds: Option<crate::dev::BuildFailures>,
    /// Whether every request gets a `request done` line in the process log.
    pub access_log: bool,
    /// Keeps the CPUs from halting while requests are in flight (`--busy-poll-us`).
    pub busy_poll: Option<Arc<crate::busy_poll::BusyPoll>>,
    /// Origins browser apps may call from (`--cors-origin`); none by default.
    pub cors_origins: Vec<String>,
    /// Whether the API's address serves `/metrics`: not when `--ops-listen` does. Metrics name
    /// every connector and count its calls, which the API's callers need not see.
    pub metrics_on_api: bool,
    /// Turns true when the gateway starts shutting down: responses that would otherwise never
    /// end (MCP's event stream) end then, so that shutdown does not wait for them, and
    /// readiness fails (on `--ops-listen`, which answers while the API drains).
    pub stopping: tokio::sync::watch::Receiver<bool>,
    /// Places for MCP event streams. A stream holds its client connection for as long as the
    /// client likes, so they may take only part of `--max-connections`: calls always find room.
    pub event_streams: Arc<tokio::sync::Semaphore>,
    /// Work a request starts that must not end with its caller: each passthrough call runs in
    /// a task of its own (see [`detach`]), as do an OAuth refresh and a connection's health
    /// update. Graceful
    /// shutdown waits for all of it ([`crate::server::ServeOptions::background`]).
    pub tasks: tokio_util::task::TaskTracker,
    /// `/openapi.json` as last rendered, for the connectors then loaded.
    pub openapi: openapi::Cache,
}

impl App {
    /// The loaded connector `id`, or why there is none: `connector_unavailable` when a file
    /// declaring it failed to load (its new hosts await approval), else `not_found`.
    pub(crate) fn connector(&self, id: &str) -> Result<Arc<crate::runtime::LoadedConnector>, ApiError> {
        if let Some(connector) = self.registry.get(id) {
            return Ok(connector);
        }
        if self.registry.failed_to_load(id) {
            return Err(ApiError::ConnectorUnavailable(id.to_owned()));
        }
        Err(ApiError::NotFound(format!("no integration named `{id}`")))
    }
}

/// How many MCP event streams a gateway taking `max_connections` client connections keeps
/// open at once: half of them.
pub fn max_event_streams(max_connections: usize) -> usize {
    (max_connections / 2).max(1)
}

/// The current request as logs know it.
#[derive(Debug, Clone, Default)]
pub struct Transaction {
    /// The gateway's transaction key, also sent as `x-transaction-key`.
    pub key: String,
    /// The caller's own `X-Request-Id`, when it sent one fit to keep (see [`caller_request_id`]).
    pub caller_request_id: Option<String>,
}

/// The longest `X-Request-Id` kept: room for any UUID, ULID or trace id with a prefix.
const LONGEST_REQUEST_ID: usize = 128;

/// The caller's `X-Request-Id`, if it is 1 to 128 visible ASCII characters. One that is not is
/// left out rather than refused: an id is the caller's convenience, not worth failing its call
/// over, and text of any other shape would not go safely into logs and headers.
fn caller_request_id(headers: &axum::http::HeaderMap) -> Option<String> {
    let value = headers.get("x-request-id")?.as_bytes();
    let fits =
        (1..=LONGEST_REQUEST_ID).contains(&value.len()) && value.iter().all(|byte| byte.is_ascii_graphic());
    fits.then(|| String::from_utf8_lossy(value).into_owned())
}

/// The whole API.
pub fn router(state: AppState) -> Router {
    let access_log = state.access_log;
    let busy_poll = state.busy_poll.clone();
    let registry = state.registry.clone();
    let cors = cors::layer(&state.cors_origins);
    let api = Router::new()
        .merge(execute::router())
        .merge(catalog::router())
        .merge(health::router(state.metrics_on_api))
        .merge(vault::router())
        .merge(admin::router())
        .merge(logs::router())
        .merge(passthrough::router())
        .merge(mcp::router())
        .merge(connect::router())
        .route("/openapi.json", axum::routing::get(openapi::serve))
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(state.max_call_body))
        .layer(middleware::from_fn(move |request: Request, next: Next| {
            let starting = registry.is_starting();
            async move {
                match starting && !served_while_starting(request.uri().path()) {
                    true => ApiError::NotReady.into_response(),
                    false => next.run(request).await,
                }
            }
        }))
        .layer(middleware::from_fn(move |request, next| {
            transaction(request, next, access_log, busy_poll.clone())
        }))
        .with_state(state);
    // Outermost: preflights are answered before anything asks for a key, and every answer,
    // the API's errors included, carries the CORS headers.
    match cors {
        Some(cors) => api.layer(cors),
        None => api,
    }
}

/// What `--ops-listen` serves: probes and metrics only, no key, no CORS, nothing of the API.
pub fn ops_router(state: AppState) -> Router {
    health::probes()
        .fallback(|| async {
            ApiError::NotFound("this address serves /healthz, /readyz and /metrics only".into())
        })
        .with_state(state)
}

/// Routes answered while the first load of the connectors is under way: probes and the
/// operator's views. Every other answer would depend on connectors not known yet (an action
/// "not found", a catalog missing them), so those wait for the end of the load (`not_ready`).
fn served_while_starting(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics" | "/v1/plugins")
}

/// Turn a handler's result into the response, completing its request-log row (outcome,
/// status, duration, and the body size of a body built whole) on the way.
fn settle(result: Result<Response, ApiError>, log: &mut RequestLog, started: Instant) -> Response {
    let response = match result {
        Ok(response) => response,
        Err(error) => {
            log.outcome = error.code().to_owned();
            axum::response::IntoResponse::into_response(error)
        }
    };
    log.http_status = response.status().as_u16();
    log.duration_us = started.elapsed().as_micros() as u64;
    log.response_bytes = axum::body::HttpBody::size_hint(response.body())
        .exact()
        .unwrap_or(0);
    response
}

/// A request path as the logs show it. A connect page's path holds its session's bearer token
/// (`/connect/cst_…`), which is not written down anywhere (the vault keeps only its hash).
struct LoggedPath<'a>(&'a str);

impl std::fmt::Display for LoggedPath<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.strip_prefix("/connect/cst_") {
            Some(rest) => {
                let after_token = rest.find('/').map_or("", |at| &rest[at..]);
                write!(f, "/connect/cst_[REDACTED]{after_token}")
            }
            None => f.write_str(self.0),
        }
    }
}

/// Give every request a transaction key, put it on the response, and with `access_log` log
/// the outcome.
async fn transaction(
    mut request: Request,
    next: Next,
    access_log: bool,
    busy_poll: Option<Arc<crate::busy_poll::BusyPoll>>,
) -> Response {
    let _active = busy_poll.as_deref().map(crate::busy_poll::BusyPoll::begin);
    let key = crate::vault::crypto::random_id("txn_", 12);
    let caller_request_id = caller_request_id(request.headers());
    // Whatever a handler logs carries the transaction key and route. The span holds only what
    // is known up front: recording fields later costs a re-format per field on every request
    // (so the caller's request id, when there is one, costs only the requests that carry one).
    let span = tracing::info_span!(
        "request",
        tx = %key,
        method = %request.method(),
        path = %LoggedPath(request.uri().path()),
        request_id = tracing::field::Empty
    );
    if let Some(request_id) = &caller_request_id {
        span.record("request_id", request_id.as_str());
    }
    let echoed = caller_request_id
        .as_ref()
        .and_then(|id| HeaderValue::from_str(id).ok());
    request.extensions_mut().insert(Transaction {
        key: key.clone(),
        caller_request_id,
    });
    let started = Instant::now();
    let response = next.run(request).instrument(span.clone()).await;
    let mut response = rejection::in_api_shape(response).await;
    if let Ok(value) = HeaderValue::from_str(&key) {
        response.headers_mut().insert("x-transaction-key", value);
    }
    if let Some(request_id) = echoed {
        response.headers_mut().insert("x-request-id", request_id);
    }
    if access_log {
        span.in_scope(|| {
            tracing::info!(
                target: "sluice::access",
                status = response.status().as_u16(),
                micros = started.elapsed().as_micros() as u64,
                "request done"
            );
        });
    }
    response
}

#[cfg(test)]
mod tests {
    use super::{LoggedPath, caller_request_id};

    #[test]
    fn a_callers_request_id_is_kept_only_in_a_safe_shape() {
        let id_of = |value: &[u8]| {
            let mut headers = axum::http::HeaderMap::new();
            let value = axum::http::HeaderValue::from_bytes(value).expect("header value");
            headers.insert("x-request-id", value);
            caller_request_id(&headers)
        };
        for kept in [
            "req_01HZX",
            "0f8c2a1e-7d3b-4c55-9e21-3b7d1f0a9c44",
            &"x".repeat(128),
        ] {
            assert_eq!(id_of(kept.as_bytes()).as_deref(), Some(kept));
        }
        for left_out in [
            &b""[..],
            b"two words",
            b"tab\there",
            &[b'x'; 129],
            "caf\u{e9}".as_bytes(),
        ] {
            assert_eq!(id_of(left_out), None, "{:?}", String::from_utf8_lossy(left_out));
        }
        assert_eq!(caller_request_id(&axum::http::HeaderMap::new()), None);
    }

    #[test]
    fn connect_page_tokens_are_not_logged() {
        for (path, logged) in [
            ("/connect/cst_0123abcd", "/connect/cst_[REDACTED]"),
            (
                "/connect/cst_0123abcd/authorize",
                "/connect/cst_[REDACTED]/authorize",
            ),
            ("/connect/oauth/callback", "/connect/oauth/callback"),
            ("/v1/echo/say", "/v1/echo/say"),
        ] {
            assert_eq!(LoggedPath(path).to_string(), logged);
        }
    }
}
