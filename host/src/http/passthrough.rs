//! `ANY /v1/passthrough/{*path}`: a raw call to a connection's platform, for when no action
//! fits. The host sends the method, path, query, body and safe headers to the connection's
//! base URL with the credential injected, under exactly the egress policy, limits and
//! scrubbing of connector requests, and returns the upstream status, body and safe headers
//! (each upstream header also as `x-sluice-passthrough-<name>`). Both bodies stream through
//! without being buffered whole; the response is scrubbed of the credential as it streams.
//! The call's request-log row is written when the response body has been sent (or the caller
//! went away), with the bytes it carried; the upstream's answer moves the connection's
//! `state` as it does for execute.
//!
//! The call runs in a task of its own (see [`super::detach`]). A caller that leaves before the
//! upstream answered leaves the request going if its body was all in — the row then says
//! `client_closed` with the upstream's status — and cuts it off otherwise: what it sent is not
//! a whole request.

use super::detach::{self, CLIENT_CLOSED, PendingRow, Route};
use super::extract::Caller;
use super::{AppState, Transaction};
use crate::error::{ActionUrl, ApiError};
use crate::runtime::CallContext;
use crate::runtime::bindings::Header;
use crate::upstream::UpstreamError;
use crate::vault::logs::RequestLog;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::{Extension, Router};
use futures::stream::BoxStream;
use futures::{FutureExt, Stream, StreamExt};
use std::borrow::Cow;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

/// The connection header, and Pica's name for it.
const CONNECTION_HEADERS: [&str; 2] = ["x-sluice-connection-key", "x-pica-connection-key"];
const PREFIX: &str = "/v1/passthrough";
pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/passthrough/{*path}", any(passthrough))
        // The root of the connection's base URL (a wildcard matches no empty path).
        .route("/v1/passthrough/", any(passthrough))
        // The body streams through with its own cap (`--max-passthrough-body-mib`).
        .layer(axum::extract::DefaultBodyLimit::disable())
}

/// Caller headers that are the gateway's business, not the upstream's: the host-owned ones a
/// connector may not set either, plus the gateway's own.
fn forwardable(name: &HeaderName) -> bool {
    let text = name.as_str();
    !(text.starts_with("x-sluice-")
        || text.starts_with("x-pica-")
        || crate::runtime::capability::is_forbidden_header(name))
}

/// Upstream headers returned under their own names: not those that describe one hop, nor the
/// names of the gateway's own rate-limit headers (a caller reading `X-RateLimit-Remaining`
/// must see the key's calls left, not the upstream's; those come as
/// `x-sluice-passthrough-x-ratelimit-remaining`).
fn returnable(name: &str) -> bool {
    !matches!(
        name,
        "connection"
            | "keep-alive"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
            | "content-length"
            | "set-cookie"
            | "x-ratelimit-limit"
            | "x-ratelimit-remaining"
            | "x-ratelimit-reset"
    )
}

async fn passthrough(
    State(app): State<AppState>,
    Extension(transaction): Extension<Transaction>,
    caller: Result<Caller, ApiError>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let log = RequestLog::begin(&transaction, None, "passthrough");
    let mut row = PendingRow::new(&app, Route::Passthrough, log, started);
    let head = method == Method::HEAD;
    let progress = Arc::new(BodyProgress::new(expects_body(&body)));
    // The call runs in a task of its own (see `detach`)…
    let (task_app, task_progress) = (app.clone(), progress.clone());
    // A row recording itself after a cut-off still says how much of the body came.
    row.count_request_bytes_with(progress.counted.clone());
    let call = detach::spawn(&app, async move {
        let result = run(
            &task_app,
            transaction.key,
            caller,
            method,
            uri,
            headers,
            body,
            &task_progress,
            &mut row.log,
        );
        let finished = AssertUnwindSafe(result).catch_unwind().await;
        let result = match finished {
            Ok(result) => result,
            Err(panic) => {
                // A bug, not the caller leaving: the row says so before the panic goes on to
                // the handler (`detach::join` answers 500).
                row.record_internal_error();
                std::panic::resume_unwind(panic);
            }
        };
        (result, row)
    });
    // …which a caller leaving before its body is all in cuts off: what it sent is not a whole
    // request. (Its row is then recorded as the task is dropped.)
    let _cut_off = CutOffUnlessWhole {
        call: call.abort_handle(),
        progress: &progress,
    };
    let (result, mut row) = match detach::join(call).await {
        Ok(done) => done,
        Err(response) => return response,
    };
    if progress.broke_off.load(Ordering::Relaxed) {
        // The caller's connection broke midway through its body: it hung up. (hyper still asks
        // for an answer, which has nowhere to go.)
        drop(row);
        return ApiError::BadRequest("the request body broke off before its end".into()).into_response();
    }
    let relayed = match result {
        Ok(relayed) => relayed,
        Err(error) => {
            let response = super::settle(Err(error), &mut row.log, started);
            row.record(None);
            return response;
        }
    };
    row.log.http_status = relayed.status().as_u16();
    if !head && carries_body(relayed.status()) {
        return relayed.map(|body| Body::from_stream(Relay { body, row: Some(row) }));
    }
    // hyper drops such a body unread: nothing is sent, and the row is complete now.
    row.record(None);
    relayed.map(Body::from_stream)
}

/// Aborts a passthrough's task when dropped before the caller's body is all in: the handler
/// is dropped early only when its caller went away. (Aborting a finished task does nothing.)
struct CutOffUnlessWhole<'a> {
    call: tokio::task::AbortHandle,
    progress: &'a BodyProgress,
}

impl Drop for CutOffUnlessWhole<'_> {
    fn drop(&mut self) {
        if !self.progress.whole.load(Ordering::Relaxed) {
            self.call.abort();
        }
    }
}

/// Whether a response with `status` has a body on the wire (RFC 9110 §6.4.1).
fn carries_body(status: StatusCode) -> bool {
    !(status.is_informational() || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED)
}

/// The upstream body as it arrives, scrubbed.
type UpstreamBody = BoxStream<'static, Result<Bytes, UpstreamError>>;

/// `body`, holding the call's place among its key's calls in flight until it is dropped: a
/// passthrough is in flight until its body has been relayed (or the caller left).
fn in_flight_until_relayed(
    body: UpstreamBody,
    place: Option<crate::usage::in_flight::InFlightCall>,
) -> UpstreamBody {
    match place {
        Some(place) => body
            .map(move |chunk| {
                let _held = &place;
                chunk
            })
            .boxed(),
        None => body,
    }
}

/// The upstream body on its way to the caller, counted. Its row is recorded exactly once:
/// when the body ends, when the upstream breaks off (the outcome says why), or when the body
/// is dropped unfinished, which is the server giving up on a caller that went away. The bytes
/// counted are those handed to the server; on a disconnect some may not have reached the
/// caller.
struct Relay {
    body: UpstreamBody,
    row: Option<PendingRow>,
}

impl Relay {
    fn finish(&mut self, outcome: Option<&str>) {
        if let Some(row) = self.row.take() {
            row.record(outcome);
        }
    }
}

impl Stream for Relay {
    type Item = Result<Bytes, UpstreamError>;

    fn poll_next(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let next = std::task::ready!(this.body.poll_next_unpin(context));
        match &next {
            Some(Ok(chunk)) => {
                if let Some(row) = &mut this.row {
                    row.log.response_bytes += chunk.len() as u64;
                }
            }
            Some(Err(error)) => {
                let error = ApiError::from(crate::runtime::capability::upstream_error(error.clone()));
                this.finish(Some(error.code()));
            }
            None => this.finish(None),
        }
        Poll::Ready(next)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.finish(Some(CLIENT_CLOSED));
    }
}

/// What became of the caller's body on its way upstream.
#[derive(Debug, Default)]
struct BodyProgress {
    /// The caller sends a body.
    expected: bool,
    /// Bytes passed on so far.
    counted: Arc<AtomicU64>,
    /// All of it is in (or there is none).
    whole: AtomicBool,
    /// It grew past the limit and was cut off.
    exceeded: AtomicBool,
    /// The caller stopped sending it.
    stalled: AtomicBool,
    /// The caller's connection failed before its end: the caller hung up.
    broke_off: AtomicBool,
}

impl BodyProgress {
    fn new(expected: bool) -> Self {
        Self {
            expected,
            whole: AtomicBool::new(!expected),
            ..Self::default()
        }
    }
}

/// `query` (raw, still percent-encoded) without the pairs named `param`, the rest as it was.
fn without_param<'a>(query: &'a str, param: Option<&str>) -> Cow<'a, str> {
    let Some(param) = param else {
        return Cow::Borrowed(query);
    };
    let pairs: Vec<&str> = query.split('&').collect();
    let kept: Vec<&str> = pairs
        .iter()
        .copied()
        .filter(|pair| {
            url::form_urlencoded::parse(pair.as_bytes())
                .next()
                .is_none_or(|(name, _)| name != param)
        })
        .collect();
    match kept.len() == pairs.len() {
        true => Cow::Borrowed(query),
        false => Cow::Owned(kept.join("&")),
    }
}

/// The caller's `Content-Length`, if it is a number.
fn declared_length(headers: &HeaderMap) -> Option<usize> {
    headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
}

/// Whether the caller sends a body. Asked of the body, not of its headers: over HTTP/2 a body
/// may come with neither `Content-Length` nor `Transfer-Encoding`.
fn expects_body(body: &Body) -> bool {
    !axum::body::HttpBody::is_end_stream(body)
}

/// Counts the caller's body as it streams upstream and cuts it off past `limit` bytes.
fn capped_body(
    body: Body,
    declared: Option<usize>,
    limit: usize,
    progress: Arc<BodyProgress>,
) -> crate::upstream::RequestBody {
    let mut seen = 0usize;
    let ended = progress.clone();
    let stream = body
        .into_data_stream()
        .map(move |chunk| {
            let chunk = chunk.map_err(|error| {
                let why = match crate::server::BodyStalled::found_in(&error) {
                    Some(_) => &progress.stalled,
                    None => &progress.broke_off,
                };
                why.store(true, Ordering::Relaxed);
                std::io::Error::other(error)
            })?;
            seen += chunk.len();
            progress.counted.store(seen as u64, Ordering::Relaxed);
            if seen > limit {
                progress.exceeded.store(true, Ordering::Relaxed);
                return Err(std::io::Error::other("request body over the limit"));
            }
            // With a declared length the upstream client stops asking once it has that much,
            // before the stream says it ended.
            if declared == Some(seen) {
                progress.whole.store(true, Ordering::Relaxed);
            }
            Ok::<_, std::io::Error>(chunk)
        })
        .chain(futures::stream::poll_fn(move |_| {
            ended.whole.store(true, Ordering::Relaxed);
            Poll::Ready(None)
        }));
    crate::upstream::streamed_body(stream, declared.map(|length| length as u64))
}

#[allow(clippy::too_many_arguments)]
async fn run(
    app: &AppState,
    transaction_key: String,
    caller: Result<Caller, ApiError>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
    progress: &Arc<BodyProgress>,
    log: &mut RequestLog,
) -> Result<axum::http::Response<UpstreamBody>, ApiError> {
    let Caller(key) =
        caller.inspect_err(|refused| log.key_prefix = refused.refused_key_prefix().map(str::to_owned))?;
    log.made_with(&key);
    // First a place among the key's calls in flight: a key at its cap starts no lookups.
    let in_flight = super::execute::enter_in_flight(app, &key)?;
    let connection_key = CONNECTION_HEADERS
        .iter()
        .find_map(|name| headers.get(*name))
        .ok_or_else(|| ApiError::BadRequest("the `x-sluice-connection-key` header is required".into()))?;
    // Keys made before identities were spelt in ASCII in them may hold UTF-8, which a client
    // can send as raw bytes.
    let connection_key = std::str::from_utf8(connection_key.as_bytes())
        .map_err(|_| ApiError::BadRequest("the `x-sluice-connection-key` header is not UTF-8".into()))?
        .to_owned();
    // As execute answers an empty `connection_key`: a client that sent an unset variable.
    if connection_key.trim().is_empty() {
        return Err(ApiError::BadRequest(
            "the `x-sluice-connection-key` header is empty: name a connection key".into(),
        ));
    }
    let environment = key.environment;
    let lookup = connection_key.clone();
    // Taken before the connection is read: an answer is then never counted against a secret
    // stored after the one this call sent.
    let credential_taken_at_us = crate::vault::now_micros();
    let record = app
        .vault
        .run(move |vault| vault.get_connection(environment, &lookup))
        .await?
        .filter(|record| record.active)
        .ok_or_else(|| {
            let other = crate::error::other_environment(&connection_key, environment);
            ApiError::NotFound(format!("no active connection `{connection_key}`{other}"))
        })?;
    log.integration = Some(record.platform.clone());
    if !key.scope.allows(&record.platform) {
        return Err(ApiError::ScopeNotAllowed(record.platform));
    }
    log.connection_key = Some(record.key.clone());
    let connector = app.connector(&record.platform)?;
    // Passthrough calls count against the key's quota and rate limit like actions do, once
    // they name a connection the key may use (as an action must exist and be in scope).
    let window = super::execute::count_call(app, &key).await?;
    log.counted = true;
    let limit = app.max_passthrough_body;
    let declared = declared_length(&headers);
    if declared.is_some_and(|length| length > limit) {
        return Err(ApiError::PayloadTooLarge(format!(
            "request body is larger than {limit} bytes"
        )));
    }
    // Opened only for a call that will be made.
    let sealed = record.clone();
    let credential = app.vault.run(move |vault| vault.credential(&sealed)).await?;

    // The raw (still percent-encoded) path after the prefix, and the query.
    let path = uri.path().strip_prefix(PREFIX).unwrap_or("/");
    // `//host/…` would read as another origin; it is the caller's mistake, not the connector's.
    if path.starts_with("//") {
        return Err(ApiError::BadRequest(
            "the passthrough path must not start with `//`".into(),
        ));
    }
    // The credential's own header and query parameter are the gateway's: a caller's are
    // dropped, as its `Authorization` is (a connector sending them is refused instead).
    let credential_header = connector.manifest.auth.credential_header();
    let credential_param = connector.manifest.auth.credential_query_param();
    let url = match uri.query().map(|query| without_param(query, credential_param)) {
        Some(query) if !query.is_empty() => format!("{path}?{query}"),
        _ => path.to_owned(),
    };
    // Headers the caller's `Connection` names are hop-by-hop for this hop only (RFC 9110
    // §7.6.1): a proxy does not pass them on.
    let hop_by_hop = |name: &HeaderName| {
        headers
            .get_all(axum::http::header::CONNECTION)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .any(|named| named.trim().eq_ignore_ascii_case(name.as_str()))
    };
    let forwarded: Vec<Header> = headers
        .iter()
        .filter(|(name, _)| forwardable(name) && !hop_by_hop(name) && Some(*name) != credential_header)
        .filter_map(|(name, value)| {
            Some(Header {
                name: name.as_str().to_owned(),
                value: value.to_str().ok()?.to_owned(),
            })
        })
        .collect();
    let request = crate::runtime::bindings::Request {
        method: method.as_str().to_owned(),
        url,
        headers: forwarded,
        body: None,
    };
    let mut context = CallContext {
        transaction_key,
        ..CallContext::default()
    };
    super::connection::attach_credential(app, &connector.manifest, &record, credential, &mut context).await?;
    // A streamed request body cannot be replayed: a passthrough that sends one gets the
    // proactive refresh only; one without a body is refreshed and retried once after a 401,
    // as an action's request is.
    if progress.expected {
        context.renewal = None;
    }
    let upstream_body = progress
        .expected
        .then(|| capped_body(body, declared, limit, progress.clone()));
    let sent = app
        .runtime
        .passthrough(&connector, request, upstream_body, context)
        .await;
    log.request_bytes = progress.counted.load(Ordering::Relaxed);
    if progress.exceeded.load(Ordering::Relaxed) {
        return Err(ApiError::PayloadTooLarge(format!(
            "request body is larger than {limit} bytes"
        )));
    }
    if progress.stalled.load(Ordering::Relaxed) {
        return Err(ApiError::RequestTimeout(
            "the client stopped sending its request body, or sent it too slowly".into(),
        ));
    }
    let upstream = sent?;
    log.upstream_status = Some(upstream.status);
    if let Some(failure) = upstream.renewal_failure {
        return Err(super::connection::rejected(app, &record, failure).await);
    }
    // Said in headers: the body is the upstream's own.
    let reconnect = super::connect::reconnect_if_failed(app, &record, upstream.credential_status).await;
    if let Some(status) = upstream.credential_status {
        super::connection::track_credential_health(app, record, status, credential_taken_at_us);
    }

    let status = StatusCode::from_u16(upstream.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let body = in_flight_until_relayed(upstream.body, in_flight);
    let mut response = axum::http::Response::new(body);
    *response.status_mut() = status;
    response.extensions_mut().insert(super::rejection::UpstreamAnswer);
    let out = response.headers_mut();
    for Header { name, value } in upstream.headers {
        let (Ok(value), false) = (HeaderValue::from_str(&value), name.is_empty()) else {
            continue;
        };
        // The upstream's length is the body's before scrubbing: it describes a body the
        // caller may not get, and the difference would tell a scrubbed secret's length.
        if name != "content-length"
            && let Ok(prefixed) = HeaderName::from_bytes(format!("x-sluice-passthrough-{name}").as_bytes())
        {
            out.append(prefixed, value.clone());
        }
        if returnable(&name)
            && let Ok(name) = HeaderName::from_bytes(name.as_bytes())
        {
            out.append(name, value);
        }
    }
    super::execute::tell_rate_limit(window, out);
    if let Some(reconnect) = reconnect {
        tell_reconnect(&reconnect, out);
    }
    Ok(response)
}

/// `x-sluice-action-url` and `x-sluice-connect-session-id`: where the user reconnects the
/// failed connection a passthrough used, and the session to poll.
fn tell_reconnect(reconnect: &ActionUrl, headers: &mut axum::http::HeaderMap) {
    if let Ok(url) = HeaderValue::from_str(&reconnect.url) {
        headers.insert("x-sluice-action-url", url);
    }
    if let Some(session) = reconnect
        .session_id
        .as_deref()
        .and_then(|id| HeaderValue::from_str(id).ok())
    {
        headers.insert("x-sluice-connect-session-id", session);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc::Receiver;

    fn relay(chunks: Vec<Result<Bytes, UpstreamError>>) -> (Relay, Receiver<RequestLog>) {
        let mut log = RequestLog::begin(
            &crate::http::Transaction {
                key: "txn_test".into(),
                caller_request_id: None,
            },
            Some("github"),
            "passthrough",
        );
        log.key_prefix = Some("sk_test_abcd".into());
        let (row, rows) = PendingRow::for_tests(Route::Passthrough, log);
        let body = futures::stream::iter(chunks).boxed();
        (Relay { body, row: Some(row) }, rows)
    }

    fn only_row(rows: &mut Receiver<RequestLog>) -> RequestLog {
        let row = rows.try_recv().expect("a row was recorded");
        assert!(rows.try_recv().is_err(), "exactly one row");
        row
    }

    #[tokio::test]
    async fn a_body_sent_to_the_end_logs_its_bytes_once() {
        let chunks = vec![
            Ok(Bytes::from_static(b"hello ")),
            Ok(Bytes::from_static(b"world")),
        ];
        let (mut relay, mut rows) = relay(chunks);
        while let Some(chunk) = relay.next().await {
            chunk.expect("a chunk");
        }
        drop(relay);
        let row = only_row(&mut rows);
        assert_eq!((row.outcome.as_str(), row.response_bytes), ("ok", 11));
    }

    #[tokio::test]
    async fn a_body_never_polled_still_logs_once_as_client_closed() {
        let (relay, mut rows) = relay(vec![Ok(Bytes::from_static(b"unsent"))]);
        drop(relay);
        let row = only_row(&mut rows);
        // The head went out: the row keeps its status.
        assert_eq!(
            (row.outcome.as_str(), row.response_bytes, row.http_status),
            (CLIENT_CLOSED, 0, 200)
        );
    }

    /// Poll `body` to its end (or first error); whether it ended without one.
    async fn drain(mut body: crate::upstream::RequestBody) -> bool {
        use http_body_util::BodyExt;
        loop {
            match body.frame().await {
                Some(Ok(_)) => continue,
                Some(Err(_)) => return false,
                None => return true,
            }
        }
    }

    fn caller_body(chunks: &[&'static str]) -> Body {
        let chunks: Vec<Result<Bytes, std::io::Error>> = chunks
            .iter()
            .map(|c| Ok(Bytes::from_static(c.as_bytes())))
            .collect();
        Body::from_stream(futures::stream::iter(chunks))
    }

    #[tokio::test]
    async fn a_body_is_whole_once_its_declared_length_is_in_or_it_ended() {
        // Declared: whole with its last byte, whether or not the stream is asked for its end.
        let progress = Arc::new(BodyProgress::new(true));
        let mut body = capped_body(caller_body(&["hel", "lo"]), Some(5), 100, progress.clone());
        use http_body_util::BodyExt;
        body.frame().await;
        assert!(!progress.whole.load(Ordering::Relaxed), "3 of 5 bytes");
        body.frame().await;
        assert!(progress.whole.load(Ordering::Relaxed), "5 of 5 bytes");

        // Chunked: whole when it ends.
        let progress = Arc::new(BodyProgress::new(true));
        let body = capped_body(caller_body(&["hel", "lo"]), None, 100, progress.clone());
        assert!(!progress.whole.load(Ordering::Relaxed));
        assert!(drain(body).await);
        assert!(progress.whole.load(Ordering::Relaxed));
        assert_eq!(progress.counted.load(Ordering::Relaxed), 5);

        // Cut off past the limit: never whole.
        let progress = Arc::new(BodyProgress::new(true));
        let body = capped_body(caller_body(&["hel", "lo"]), None, 4, progress.clone());
        assert!(!drain(body).await);
        assert!(progress.exceeded.load(Ordering::Relaxed));
        assert!(!progress.whole.load(Ordering::Relaxed));

        // The caller's connection breaking: never whole, and said so.
        let progress = Arc::new(BodyProgress::new(true));
        let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
            Ok(Bytes::from_static(b"hel")),
            Err(std::io::Error::other("connection reset")),
        ];
        let broken = Body::from_stream(futures::stream::iter(chunks));
        assert!(!drain(capped_body(broken, Some(5), 100, progress.clone())).await);
        assert!(progress.broke_off.load(Ordering::Relaxed));
        assert!(!progress.whole.load(Ordering::Relaxed) && !progress.stalled.load(Ordering::Relaxed));

        // No body at all: whole from the start.
        assert!(BodyProgress::new(false).whole.load(Ordering::Relaxed));
    }

    #[test]
    fn the_credentials_query_parameter_is_dropped_from_the_callers_query() {
        assert_eq!(without_param("a=1&b=2", None), "a=1&b=2");
        assert_eq!(without_param("a=1&b=2", Some("api_key")), "a=1&b=2");
        assert_eq!(
            without_param("api_key=mine&a=%2F&api%5Fkey=x&api_key", Some("api_key")),
            "a=%2F"
        );
        assert_eq!(without_param("api_key=mine", Some("api_key")), "");
    }

    #[tokio::test]
    async fn an_upstream_breaking_off_logs_why_and_what_was_sent() {
        let chunks = vec![
            Ok(Bytes::from_static(b"part")),
            Err(UpstreamError::Timeout(std::time::Duration::from_secs(1))),
        ];
        let (mut relay, mut rows) = relay(chunks);
        relay.next().await;
        assert!(relay.next().await.is_some_and(|chunk| chunk.is_err()));
        drop(relay);
        let row = only_row(&mut rows);
        assert_eq!(
            (row.outcome.as_str(), row.response_bytes),
            ("upstream_timeout", 4)
        );
    }
}
