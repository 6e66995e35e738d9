//! A caller going away never costs a call its request-log row, and may leave its upstream side
//! running to its end.
//!
//! When a caller disconnects, hyper drops its handler's future. A [`PendingRow`] dropped that
//! way records itself with the outcome [`CLIENT_CLOSED`] and the status
//! [`CLIENT_CLOSED_STATUS`], with what the call had filled in by then. Execute (and MCP's
//! `tools/call`) run inside the handler, so the caller leaving cuts them off (the instance is
//! dropped, an upstream request in flight abandoned): a task per call cost 15–30% of the
//! throughput in paired load runs. Passthrough [`spawn`]s its exchange instead, so that a
//! request whose body was all sent is not cut off midway, and awaits it; the task hands back
//! the outcome with the row, and if the caller is gone by then tokio drops the unclaimed
//! output and the row records itself. The task's running time is bounded as any call's, and
//! graceful shutdown waits for it ([`crate::http::App::tasks`]).

use super::AppState;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::vault::logs::{LogSink, RequestLog};
use axum::response::{IntoResponse, Response};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use tokio::task::JoinHandle;
use tracing::Instrument;

pub(super) use crate::vault::logs::CLIENT_CLOSED;

/// The gateway status logged for a call whose caller went away before any of the reply was
/// sent: nginx's 499 (client closed request). No response ever carries it; once the head of a
/// reply has gone out (a passthrough body cut midway), the row keeps that head's status.
pub(super) const CLIENT_CLOSED_STATUS: u16 = 499;

/// Start `call` in a task of its own on this thread's runtime, in the request's span (its log
/// lines keep the transaction key), counted among the work shutdown waits for.
pub(super) fn spawn<T: Send + 'static>(
    app: &AppState,
    call: impl Future<Output = T> + Send + 'static,
) -> JoinHandle<T> {
    app.tasks.spawn(call.in_current_span())
}

/// What the task handed back, or the reply for a task that did not finish (it panicked).
pub(super) async fn join<T>(task: JoinHandle<T>) -> Result<T, Response> {
    task.await.map_err(|error| {
        tracing::error!(%error, "a call's task failed");
        ApiError::Internal(anyhow::anyhow!("the call's task failed: {error}")).into_response()
    })
}

/// Which route a row is for: they label their calls differently in the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Route {
    /// `POST /v1/{integration}/{endpoint}` (and MCP's `tools/call`).
    Execute,
    /// `ANY /v1/passthrough/{*path}`.
    Passthrough,
}

/// A call's request-log row (and its count in the metrics), recorded exactly once: by
/// [`PendingRow::record`], by [`PendingRow::record_internal_error`] when the call panicked,
/// or — dropped unrecorded, its caller gone before the reply — as [`CLIENT_CLOSED`] with the
/// status [`CLIENT_CLOSED_STATUS`] and no bytes sent.
pub(super) struct PendingRow {
    /// The row as the call fills it in.
    pub(super) log: RequestLog,
    route: Route,
    sink: LogSink,
    metrics: Arc<Metrics>,
    registry: Arc<Registry>,
    started: Instant,
    recorded: bool,
    /// Bytes of a streamed request body received so far, read when the row records itself
    /// after a cut-off (the call had not filled them in yet).
    request_bytes_so_far: Option<Arc<AtomicU64>>,
}

impl PendingRow {
    /// The row of a call on `route` that arrived at `started`.
    pub(super) fn new(app: &AppState, route: Route, log: RequestLog, started: Instant) -> Self {
        Self {
            log,
            route,
            sink: app.logs.clone(),
            metrics: app.metrics.clone(),
            registry: app.registry.clone(),
            started,
            recorded: false,
            request_bytes_so_far: None,
        }
    }

    /// Take the request's byte count from `counter` should the row record itself unfinished.
    pub(super) fn count_request_bytes_with(&mut self, counter: Arc<AtomicU64>) {
        self.request_bytes_so_far = Some(counter);
    }

    /// Record the row of a call that panicked: an `internal_error`, as its caller is told.
    pub(super) fn record_internal_error(&mut self) {
        self.log.http_status = 500;
        self.log.response_bytes = 0;
        self.fill_in_request_bytes();
        self.write(Some(crate::error::INTERNAL_ERROR));
    }

    fn fill_in_request_bytes(&mut self) {
        if let Some(counter) = &self.request_bytes_so_far {
            self.log.request_bytes = self.log.request_bytes.max(counter.load(Ordering::Relaxed));
        }
    }

    /// Record the row, with `outcome` in place of the one it holds if given.
    ///
    /// The duration runs until now: for execute the reply is built, for passthrough the body
    /// has been sent (or given up), which includes any time the caller took to read — it
    /// cannot be told apart from the upstream's without buffering the body.
    pub(super) fn record(mut self, outcome: Option<&str>) {
        self.write(outcome);
    }

    fn write(&mut self, outcome: Option<&str>) {
        self.recorded = true;
        if let Some(outcome) = outcome {
            self.log.outcome = outcome.to_owned();
        }
        let elapsed = self.started.elapsed();
        self.log.duration_us = elapsed.as_micros() as u64;
        let (integration, endpoint) = self.labels();
        self.metrics
            .count_call(integration, endpoint, &self.log.outcome, elapsed);
        if self.log.is_kept() {
            self.sink.record(std::mem::take(&mut self.log));
        }
    }

    /// The metrics labels: the integration if it is loaded and, for an action, the endpoint if
    /// the connector has it; `unknown` otherwise, so that callers cannot grow the metrics
    /// without bound by inventing names.
    fn labels(&self) -> (&str, &str) {
        let integration = self.log.integration.as_deref().unwrap_or_default();
        let endpoint = self.log.endpoint.as_deref().unwrap_or_default();
        let loaded = self.registry.get(integration);
        match (self.route, loaded) {
            (Route::Passthrough, Some(_)) => (integration, "passthrough"),
            (Route::Passthrough, None) => ("unknown", "passthrough"),
            (Route::Execute, Some(connector)) if connector.manifest.endpoint(endpoint).is_some() => {
                (integration, endpoint)
            }
            (Route::Execute, _) => ("unknown", "unknown"),
        }
    }
}

impl Drop for PendingRow {
    fn drop(&mut self) {
        if !self.recorded {
            self.log.http_status = CLIENT_CLOSED_STATUS;
            self.log.response_bytes = 0;
            self.fill_in_request_bytes();
            self.write(Some(CLIENT_CLOSED));
        }
    }
}

#[cfg(test)]
impl PendingRow {
    /// A row whose writes a test reads from the receiver, with no connector loaded.
    pub(super) fn for_tests(
        route: Route,
        log: RequestLog,
    ) -> (Self, tokio::sync::mpsc::Receiver<RequestLog>) {
        let (sink, rows) = LogSink::for_tests();
        let row = Self {
            log,
            route,
            sink,
            metrics: Arc::default(),
            registry: Arc::default(),
            started: Instant::now(),
            recorded: false,
            request_bytes_so_far: None,
        };
        (row, rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc::Receiver;

    fn only_row(rows: &mut Receiver<RequestLog>) -> RequestLog {
        let row = rows.try_recv().expect("a row was recorded");
        assert!(rows.try_recv().is_err(), "exactly one row");
        row
    }

    fn execute_row() -> (PendingRow, Receiver<RequestLog>) {
        let mut log = RequestLog::begin(
            &crate::http::Transaction {
                key: "txn_test".into(),
                caller_request_id: None,
            },
            Some("github"),
            "get_repo",
        );
        log.upstream_status = Some(201);
        log.key_prefix = Some("sk_test_abcd".into());
        PendingRow::for_tests(Route::Execute, log)
    }

    /// A call that named no known key is counted, not written: anyone can send those.
    #[test]
    fn a_row_of_a_caller_without_a_known_key_is_not_written() {
        let (mut row, mut rows) = execute_row();
        row.log.key_prefix = None;
        row.log.http_status = 401;
        row.record(Some("unauthorized"));
        assert!(rows.try_recv().is_err(), "no row");
    }

    #[test]
    fn a_recorded_row_is_written_once_as_it_stands() {
        let (mut row, mut rows) = execute_row();
        row.log.response_bytes = 40;
        row.record(None);
        let written = only_row(&mut rows);
        assert_eq!(
            (
                written.outcome.as_str(),
                written.http_status,
                written.response_bytes
            ),
            ("ok", 200, 40)
        );
    }

    #[test]
    fn a_row_dropped_unrecorded_says_the_caller_left_and_keeps_the_upstream_status() {
        let (mut row, mut rows) = execute_row();
        // The reply was built, but never handed to the caller.
        row.log.response_bytes = 40;
        drop(row);
        let written = only_row(&mut rows);
        assert_eq!(
            (
                written.outcome.as_str(),
                written.http_status,
                written.upstream_status,
                written.response_bytes
            ),
            (CLIENT_CLOSED, CLIENT_CLOSED_STATUS, Some(201), 0)
        );
        assert_eq!(written.transaction_key, "txn_test");
    }

    #[test]
    fn a_row_cut_off_midway_through_a_streamed_body_counts_what_came() {
        let (mut row, mut rows) = PendingRow::for_tests(
            Route::Passthrough,
            RequestLog::begin(
                &crate::http::Transaction {
                    key: "txn_test".into(),
                    caller_request_id: None,
                },
                None,
                "passthrough",
            ),
        );
        row.log.key_prefix = Some("sk_test_abcd".into());
        let received = Arc::new(AtomicU64::new(0));
        row.count_request_bytes_with(received.clone());
        received.store(65_536, Ordering::Relaxed);
        drop(row);
        let written = only_row(&mut rows);
        assert_eq!(
            (written.outcome.as_str(), written.request_bytes),
            (CLIENT_CLOSED, 65_536)
        );
    }

    #[test]
    fn a_row_of_a_call_that_panicked_is_an_internal_error_written_once() {
        let (mut row, mut rows) = execute_row();
        row.record_internal_error();
        drop(row);
        let written = only_row(&mut rows);
        assert_eq!(
            (written.outcome.as_str(), written.http_status),
            (crate::error::INTERNAL_ERROR, 500)
        );
    }

    #[test]
    fn an_outcome_given_when_recording_replaces_the_one_held() {
        let (row, mut rows) = execute_row();
        row.record(Some("upstream_timeout"));
        assert_eq!(only_row(&mut rows).outcome, "upstream_timeout");
    }

    #[test]
    fn names_no_loaded_connector_has_are_counted_as_unknown() {
        let (row, _rows) = execute_row();
        assert_eq!(row.labels(), ("unknown", "unknown"));
        let log = RequestLog::begin(
            &crate::http::Transaction {
                key: "txn_test".into(),
                caller_request_id: None,
            },
            None,
            "passthrough",
        );
        let (row, _rows) = PendingRow::for_tests(Route::Passthrough, log);
        assert_eq!(row.labels(), ("unknown", "passthrough"));
    }
}
