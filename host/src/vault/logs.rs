//! The request log: one row per execute or passthrough call, written in batches by a
//! background thread through [`Store::insert_request_logs`] (SQLite gives it a connection of
//! its own with `synchronous=NORMAL`: losing the last log rows on power loss is acceptable;
//! slowing every call down to an fsync is not). Never holds params or secrets.

use super::Vault;
use crate::store::Store;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// The outcome of a call whose caller left before its answer was all sent.
pub const CLIENT_CLOSED: &str = "client_closed";

/// The outcome of a retry answered with the reply kept for its `Idempotency-Key` (the action
/// did not run again).
pub const IDEMPOTENT_REPLAY: &str = "idempotent_replay";

/// One call, as logged.
#[derive(Debug, Clone, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestLog {
    /// The row's place in the log, in the order calls ended; set when read back (it is the
    /// `before` cursor of `GET /v1/logs`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    /// The transaction key.
    pub transaction_key: String,
    /// The caller's own `X-Request-Id`, if it sent one.
    pub request_id: Option<String>,
    /// When the call arrived (Unix milliseconds).
    pub created_at_ms: i64,
    /// The API key's row id.
    #[serde(skip)]
    pub key_id: Option<i64>,
    /// The API key's visible prefix.
    pub key_prefix: Option<String>,
    /// `test` or `live`.
    pub environment: Option<String>,
    /// Integration.
    pub integration: Option<String>,
    /// Endpoint.
    pub endpoint: Option<String>,
    /// Connection key used.
    pub connection_key: Option<String>,
    /// The gateway's HTTP status.
    pub http_status: u16,
    /// The upstream status the connector reported.
    pub upstream_status: Option<u16>,
    /// `ok` or the error code.
    pub outcome: String,
    /// Time spent in the gateway.
    pub duration_us: u64,
    /// Request body size.
    pub request_bytes: u64,
    /// Response body size.
    pub response_bytes: u64,
    /// Whether the reply is the call's final word, which a call under an `Idempotency-Key`
    /// keeps for its retries: the connector started (its upstream requests may have had
    /// effects) and the upstream did not refuse the credential. Not logged.
    #[serde(skip)]
    pub reply_is_final: bool,
    /// Whether the call got through the key's limits and so counted against its quota: what a
    /// restarted gateway counts again. Not shown.
    #[serde(skip)]
    pub counted: bool,
}

impl RequestLog {
    /// Attribute the call to the API key that made it.
    pub fn made_with(&mut self, key: &crate::vault::api_keys::ApiKey) {
        self.key_id = Some(key.id);
        self.key_prefix = Some(key.prefix.clone());
        self.environment = Some(key.environment.as_str().to_owned());
    }

    /// Whether the row is kept: a call that named no key the gateway knows (no key, a made-up
    /// one) is counted in the metrics only. Anyone can send such calls, as fast as the
    /// network allows; kept, each would be a row for the whole retention period, and a
    /// flood of them would fill the disk. A key refused as revoked or expired is named, so its
    /// calls are kept (an operator wants to see a revoked key still in use).
    pub fn is_kept(&self) -> bool {
        self.key_prefix.is_some()
    }

    /// A row for a call that starts now; the handler fills in the rest as it goes.
    pub fn begin(transaction: &crate::http::Transaction, integration: Option<&str>, endpoint: &str) -> Self {
        let created_at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        Self {
            id: None,
            transaction_key: transaction.key.clone(),
            request_id: transaction.caller_request_id.clone(),
            created_at_ms,
            key_id: None,
            key_prefix: None,
            environment: None,
            integration: integration.map(logged_name),
            endpoint: Some(logged_name(endpoint)),
            connection_key: None,
            http_status: 200,
            upstream_status: None,
            outcome: "ok".into(),
            duration_us: 0,
            request_bytes: 0,
            response_bytes: 0,
            reply_is_final: false,
            counted: false,
        }
    }
}

/// Filters of `GET /v1/logs`.
#[derive(Debug, Clone, Default)]
pub struct LogFilter {
    /// Environment: always the caller's key's through the API; `None` (both) for the CLI.
    pub environment: Option<String>,
    /// Any of these integrations (none: any integration).
    pub integrations: Vec<String>,
    /// Any of these endpoints (none: any endpoint).
    pub endpoints: Vec<String>,
    /// Calls made with any of these connections (none: any connection, or none).
    pub connection_keys: Vec<String>,
    /// Outcome code.
    pub outcome: Option<String>,
    /// Key prefix.
    pub key_prefix: Option<String>,
    /// Transaction key.
    pub transaction_key: Option<String>,
    /// The caller's `X-Request-Id`.
    pub request_id: Option<String>,
    /// Only rows at or after this time (Unix ms).
    pub since_ms: Option<i64>,
    /// Only rows logged before the row of this id (a cursor: new rows do not move it).
    pub before_id: Option<i64>,
    /// Only rows whose upstream status is in this range (inclusive).
    pub upstream_status: Option<(u16, u16)>,
    /// What a scoped key may see: rows of these integrations, and its own rows (`None`: all).
    pub visible_to: Option<ScopedReader>,
}

/// A scoped key reading the log.
#[derive(Debug, Clone, Default)]
pub struct ScopedReader {
    /// The integrations in its scope.
    pub integrations: Vec<String>,
    /// The key's id: its own calls are always visible, whatever they named.
    pub key_id: i64,
}

/// Sends log rows to the background writer; dropping every sender stops it.
#[derive(Debug, Clone)]
pub struct LogSink {
    sender: mpsc::Sender<RequestLog>,
    /// Rows dropped so far.
    dropped: Arc<std::sync::atomic::AtomicU64>,
}

impl LogSink {
    fn new(sender: mpsc::Sender<RequestLog>) -> Self {
        Self {
            sender,
            dropped: Arc::default(),
        }
    }

    /// Queue a row. When the queue is full the row is dropped (and counted in the log)
    /// rather than slowing callers down.
    pub fn record(&self, row: RequestLog) {
        if self.sender.try_send(row).is_err() {
            let dropped = self.dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            // The 1st, 2nd, 4th, 8th… drop of an episode: a line per row would flood the log
            // just when the writer is behind.
            if dropped.is_power_of_two() {
                tracing::warn!(dropped, "request log queue full; log rows were dropped");
            }
        } else if self.dropped.load(std::sync::atomic::Ordering::Relaxed) > 0 {
            // The episode is over: the next one is reported from its first drop.
            self.dropped.store(0, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
impl LogSink {
    /// A sink whose rows a test reads from the receiver instead of a database.
    pub(crate) fn for_tests() -> (Self, mpsc::Receiver<RequestLog>) {
        let (sender, receiver) = mpsc::channel(16);
        (Self::new(sender), receiver)
    }
}

/// Most rows written in one transaction. With one transaction per 100 ms this keeps up with
/// tens of thousands of requests a second; the queue holds two batches.
const MAX_BATCH: usize = 8192;

/// Rows kept in memory while writing them fails (a full disk), to be written once it works
/// again (about 3 MiB); past that, new rows wait in the queue, and past the queue they are
/// dropped.
const MAX_UNWRITTEN: usize = 4 * MAX_BATCH;

/// How often writing is tried again while it fails.
const RETRY_EVERY: Duration = Duration::from_secs(1);

/// Start the writer into `store` (e.g. [`Vault::store`]). Rows are flushed every 100 ms, and
/// once every [`LogSink`] is dropped (see [`LogWriter::finish`]).
pub fn start_writer(store: Arc<dyn Store>) -> anyhow::Result<(LogSink, LogWriter)> {
    let (sender, mut receiver) = mpsc::channel::<RequestLog>(2 * MAX_BATCH);
    let thread = std::thread::Builder::new()
        .name("sluice-log-writer".into())
        .spawn(move || {
            let mut unwritten = Unwritten::default();
            loop {
                if unwritten.rows.is_empty() {
                    match receiver.blocking_recv() {
                        Some(row) => unwritten.rows.push(row),
                        None => break,
                    }
                }
                // Gather whatever else is already queued, then write.
                std::thread::sleep(if unwritten.failing {
                    RETRY_EVERY
                } else {
                    Duration::from_millis(100)
                });
                // Closed now: what is queued is all there will be.
                let closed = receiver.is_closed();
                while unwritten.rows.len() < MAX_UNWRITTEN {
                    match receiver.try_recv() {
                        Ok(row) => unwritten.rows.push(row),
                        Err(_) => break,
                    }
                }
                unwritten.write(store.as_ref());
                if closed && unwritten.failing {
                    tracing::error!(
                        rows = unwritten.rows.len(),
                        "the gateway stops; request log rows that could not be written are lost"
                    );
                    break;
                }
            }
        })?;
    Ok((LogSink::new(sender), LogWriter(thread)))
}

/// Rows the writer has taken off the queue and not written yet.
#[derive(Debug, Default)]
struct Unwritten {
    rows: Vec<RequestLog>,
    /// The last attempt failed.
    failing: bool,
}

impl Unwritten {
    /// Write the rows, a transaction per [`MAX_BATCH`], keeping those the storage failing left
    /// unwritten for the next try. A batch refused for what it holds would be refused again:
    /// its rows are written one by one, and only those refused are dropped.
    fn write(&mut self, store: &dyn Store) {
        while !self.rows.is_empty() {
            let batch = &self.rows[..self.rows.len().min(MAX_BATCH)];
            match store.insert_request_logs(batch) {
                Ok(()) => {
                    if std::mem::take(&mut self.failing) {
                        tracing::info!("request log rows are written again");
                    }
                }
                Err(error) if crate::store::worth_retrying(&error) => {
                    if !self.failing {
                        tracing::error!(error = %format!("{error:#}"), rows = self.rows.len(), "writing request log rows failed; they are kept and tried again every second");
                    }
                    self.failing = true;
                    return;
                }
                Err(error) => {
                    let refused = batch
                        .iter()
                        .filter(|row| store.insert_request_logs(std::slice::from_ref(row)).is_err())
                        .count();
                    tracing::error!(error = %format!("{error:#}"), refused, "request log rows were refused and dropped");
                }
            }
            let done = batch.len();
            self.rows.drain(..done);
        }
    }
}

/// The writer thread: it writes what is queued and stops once every [`LogSink`] is dropped.
#[derive(Debug)]
pub struct LogWriter(std::thread::JoinHandle<()>);

impl LogWriter {
    /// Wait up to `limit` for the writer to have written the last rows and stopped, so that a
    /// process exiting after serving keeps them; whether it did.
    pub async fn finish(self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while !self.0.is_finished() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }
}

/// Outcomes of calls that do not count against a key's daily quota: calls refused by
/// authentication, by the limits (a place among the key's calls in flight included) or while the
/// gateway started, calls of an action that does not exist, is out of the key's scope or whose
/// connector did not load, and retries under an `Idempotency-Key` (answered, or refused, without running).
const NOT_COUNTED_AGAINST_QUOTA: &[&str] = &[
    IDEMPOTENT_REPLAY,
    "key_busy",
    "not_ready",
    "idempotency_key_in_use",
    "idempotency_key_reused",
    "daily_limit_reached",
    "rate_limited",
    "unauthorized",
    "api_key_revoked",
    "api_key_expired",
    "not_found",
    "scope_not_allowed",
    "connector_unavailable",
];

/// Longest integration or endpoint name a row keeps: every real one is at most 64 bytes; a
/// caller's made-up path segment of any length is cut here, so that it cannot grow the row.
const MAX_LOGGED_NAME_BYTES: usize = 128;

fn logged_name(name: &str) -> String {
    crate::error::cut_to(name.to_owned(), MAX_LOGGED_NAME_BYTES)
}

impl Vault {
    /// One page (1-based) of log rows matching `filter`, newest first, and the total.
    pub fn list_logs(
        &self,
        filter: &LogFilter,
        page: u32,
        limit: u32,
    ) -> anyhow::Result<(Vec<RequestLog>, i64)> {
        self.store.list_request_logs(filter, page, limit)
    }

    /// Calls `key_id` made since `since_ms` that counted against its quota.
    pub fn count_calls_since(&self, key_id: i64, since_ms: i64) -> anyhow::Result<u64> {
        self.store
            .count_calls_since(key_id, since_ms, NOT_COUNTED_AGAINST_QUOTA)
    }

    /// Delete log rows older than `before_ms`; returns how many.
    pub fn prune_logs(&self, before_ms: i64) -> anyhow::Result<usize> {
        self.write(|store| store.prune_request_logs(before_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vault::KeySource;

    fn row(at_ms: i64, outcome: &str) -> RequestLog {
        RequestLog {
            id: None,
            transaction_key: format!("txn_{at_ms}"),
            request_id: None,
            created_at_ms: at_ms,
            key_id: Some(1),
            key_prefix: Some("sk_test_abcd".into()),
            environment: Some("test".into()),
            integration: Some("github".into()),
            endpoint: Some("get_repo".into()),
            connection_key: None,
            http_status: 200,
            upstream_status: Some(200),
            outcome: outcome.into(),
            duration_us: 10,
            request_bytes: 2,
            response_bytes: 20,
            reply_is_final: true,
            counted: outcome == "ok",
        }
    }

    /// A fresh vault whose request log holds `rows`.
    fn vault_with(rows: &[RequestLog]) -> anyhow::Result<(tempfile::TempDir, Vault)> {
        let dir = tempfile::tempdir()?;
        let vault = Vault::open(&dir.path().join("db"), &KeySource::Explicit("ab".repeat(32)))?;
        vault.store().insert_request_logs(rows)?;
        Ok((dir, vault))
    }

    /// Every row of the test environment, newest first, and how many there are.
    fn test_rows(vault: &Vault) -> anyhow::Result<(Vec<RequestLog>, i64)> {
        let filter = LogFilter {
            environment: Some("test".into()),
            ..LogFilter::default()
        };
        vault.list_logs(&filter, 1, 20)
    }

    /// Stop the writer as the gateway does at exit: drop the sink, wait for the last rows.
    async fn stop(sink: LogSink, writer: LogWriter) {
        drop(sink);
        assert!(writer.finish(Duration::from_secs(10)).await, "the writer stopped");
    }

    #[tokio::test]
    async fn the_writer_writes_the_last_rows_before_it_finishes() -> anyhow::Result<()> {
        let (_dir, vault) = vault_with(&[])?;
        let (sink, writer) = start_writer(vault.store())?;
        sink.record(row(1_000, "ok"));
        stop(sink, writer).await;
        let (rows, total) = test_rows(&vault)?;
        assert_eq!((total, rows[0].transaction_key.as_str()), (1, "txn_1000"));
        Ok(())
    }

    /// Rows that cannot be written for now (the storage failing; here another process holding
    /// the database past the busy timeout) are kept and written once writing works again.
    #[tokio::test]
    async fn rows_the_database_could_not_take_are_written_when_it_can() -> anyhow::Result<()> {
        let (dir, vault) = vault_with(&[])?;
        let other_process = rusqlite::Connection::open(dir.path().join("db"))?;
        other_process.execute_batch("BEGIN IMMEDIATE")?;
        let (sink, writer) = start_writer(vault.store())?;
        sink.record(row(1_000, "ok"));
        // Past the writer's 5 s busy timeout, so that its write fails.
        tokio::time::sleep(Duration::from_millis(5_600)).await;
        other_process.execute_batch("ROLLBACK")?;
        sink.record(row(2_000, "ok"));
        stop(sink, writer).await;
        let (rows, total) = test_rows(&vault)?;
        assert_eq!(total, 2, "{rows:?}");
        Ok(())
    }

    /// A row the database refuses for what it holds would be refused again: it is dropped, and
    /// the rows written with it are not.
    #[tokio::test]
    async fn a_refused_row_is_dropped_and_holds_up_no_other() -> anyhow::Result<()> {
        let (dir, vault) = vault_with(&[])?;
        rusqlite::Connection::open(dir.path().join("db"))?.execute_batch(
            "CREATE TRIGGER refuse BEFORE INSERT ON request_logs WHEN NEW.outcome = 'poison'
             BEGIN SELECT RAISE(ABORT, 'refused'); END",
        )?;
        let (sink, writer) = start_writer(vault.store())?;
        for (at_ms, outcome) in [(1_000, "ok"), (2_000, "poison"), (3_000, "ok")] {
            sink.record(row(at_ms, outcome));
        }
        stop(sink, writer).await;
        let (rows, total) = test_rows(&vault)?;
        assert_eq!(total, 2, "{rows:?}");
        Ok(())
    }

    /// One tenant's calls: the rows of any of the connections named, none of another's or of
    /// calls made without a connection.
    #[test]
    fn rows_are_found_by_the_connection_they_used() -> anyhow::Result<()> {
        let with = |at_ms, key: Option<&str>| RequestLog {
            connection_key: key.map(Into::into),
            ..row(at_ms, "ok")
        };
        let (alice, bob) = ("test::github::alice::a1", "test::github::bob::b1");
        let rows = [
            with(1_000, Some(alice)),
            with(2_000, Some(bob)),
            with(3_000, None),
            with(4_000, Some(alice)),
        ];
        let (_dir, vault) = vault_with(&rows)?;
        let found = |keys: &[&str]| -> anyhow::Result<Vec<String>> {
            let filter = LogFilter {
                environment: Some("test".into()),
                connection_keys: keys.iter().map(|key| (*key).to_owned()).collect(),
                ..LogFilter::default()
            };
            let (rows, _) = vault.list_logs(&filter, 1, 10)?;
            Ok(rows.into_iter().map(|row| row.transaction_key).collect())
        };
        assert_eq!(found(&[alice])?, ["txn_4000", "txn_1000"]);
        assert_eq!(found(&[bob, alice])?, ["txn_4000", "txn_2000", "txn_1000"]);
        assert_eq!(found(&[])?.len(), 4, "no filter: every row");
        Ok(())
    }

    #[test]
    fn rows_are_found_by_the_callers_request_id() -> anyhow::Result<()> {
        let tagged = |at_ms, id: &str| RequestLog {
            request_id: Some(id.into()),
            ..row(at_ms, "ok")
        };
        let (_dir, vault) = vault_with(&[tagged(1_000, "req-1"), row(2_000, "ok"), tagged(3_000, "req-2")])?;
        let filter = LogFilter {
            environment: Some("test".into()),
            request_id: Some("req-1".into()),
            ..LogFilter::default()
        };
        let (rows, total) = vault.list_logs(&filter, 1, 10)?;
        assert_eq!((total, rows[0].transaction_key.as_str()), (1, "txn_1000"));
        assert_eq!(rows[0].request_id.as_deref(), Some("req-1"));
        Ok(())
    }

    #[test]
    fn quota_counting_and_retention() -> anyhow::Result<()> {
        let (_dir, vault) = vault_with(&[
            row(1_000, "ok"),
            row(2_000, "not_found"),
            row(2_100, "key_busy"),
            row(2_200, "not_ready"),
            row(3_000, "daily_limit_reached"),
        ])?;
        assert_eq!(
            vault.count_calls_since(1, 0)?,
            1,
            "refused calls and calls of unknown actions do not count against the quota"
        );
        assert_eq!(vault.count_calls_since(1, 500)?, 1);
        assert_eq!(vault.count_calls_since(1, 1_500)?, 0);
        assert_eq!(vault.prune_logs(2_500)?, 4);
        let (rows, total) = test_rows(&vault)?;
        assert_eq!((rows.len(), total), (1, 1));
        assert_eq!(rows[0].outcome, "daily_limit_reached");

        // A row says whether its call counted, whatever its outcome: a `not_found` can come
        // after the limits (no such connection), a `bad_request` before them (a malformed header).
        vault.store().insert_request_logs(&[
            RequestLog {
                counted: true,
                ..row(4_000, "not_found")
            },
            RequestLog {
                counted: false,
                ..row(4_100, "bad_request")
            },
        ])?;
        assert_eq!(vault.count_calls_since(1, 3_500)?, 1);
        Ok(())
    }

    /// Rows logged before rows said whether they counted are judged by their outcome.
    #[test]
    fn rows_from_before_the_counted_column_are_judged_by_outcome() -> anyhow::Result<()> {
        let (dir, vault) = vault_with(&[
            row(1_000, "ok"),
            row(2_000, "not_found"),
            row(3_000, "bad_request"),
        ])?;
        rusqlite::Connection::open(dir.path().join("db"))?
            .execute_batch("UPDATE request_logs SET counted = NULL")?;
        assert_eq!(vault.count_calls_since(1, 0)?, 2, "`ok` and `bad_request`");
        Ok(())
    }

    #[test]
    fn a_scoped_reader_sees_its_integrations_and_its_own_calls() -> anyhow::Result<()> {
        let mut others_stripe = row(1_000, "ok");
        others_stripe.key_id = Some(2);
        others_stripe.integration = Some("stripe".into());
        let mut own_stripe = row(2_000, "scope_not_allowed");
        own_stripe.integration = Some("stripe".into());
        let others_github = RequestLog {
            key_id: Some(2),
            ..row(3_000, "ok")
        };
        let (_dir, vault) = vault_with(&[others_stripe, own_stripe, others_github])?;
        let filter = LogFilter {
            environment: Some("test".into()),
            visible_to: Some(ScopedReader {
                integrations: vec!["github".into()],
                key_id: 1,
            }),
            ..LogFilter::default()
        };
        let (rows, total) = vault.list_logs(&filter, 1, 20)?;
        let seen: Vec<_> = rows.iter().map(|r| r.created_at_ms).collect();
        assert_eq!((seen, total), (vec![3_000, 2_000], 2));
        Ok(())
    }
}
