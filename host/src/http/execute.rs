//! `POST /v1/{integration}/{endpoint}`: run one connector action for the caller.

use super::detach::{PendingRow, Route};
use super::extract::{Caller, JsonBody};
use super::idempotency::{self, IdempotencyKey};
use super::query::Query;
use super::{AppState, Transaction};
use crate::error::{ActionUrl, ApiError};
use crate::metrics::ConnectorLabels;
use crate::runtime::bindings::Output;
use crate::runtime::manifest::Manifest;
use crate::runtime::{CallContext, needs_connection};
use crate::runtime::{InvokeError, Invoked};
use crate::usage::in_flight::InFlightCall;
use crate::usage::{Limits, Refusal, Window};
use crate::vault::api_keys::ApiKey;
use crate::vault::connections::ConnectionSelector;
use crate::vault::idempotency::{Claim, IdempotentRequest};
use crate::vault::logs::{IDEMPOTENT_REPLAY, RequestLog};
use axum::extract::{Path, State};
use axum::http::HeaderValue;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Router};
use base64::Engine as _;
use base64::prelude::BASE64_STANDARD;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::io::Write as _;
use std::time::Instant;

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/v1/{integration}/{endpoint}", post(execute))
}

/// The request body: `{"params": {...}, "connection_key"?: "...", "identity"?: "...",
/// "identity_type"?: "..."}`.
///
/// Unknown fields are refused: a misspelt `connection_key` ignored would run the call on
/// another account. `connectionKey` and `identityType` are accepted too, as the connect and
/// vault APIs spell them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExecuteBody {
    params: Option<Box<RawValue>>,
    #[serde(
        alias = "connectionKey",
        default,
        deserialize_with = "super::extract::not_null"
    )]
    connection_key: Option<String>,
    #[serde(default, deserialize_with = "super::extract::not_null")]
    identity: Option<String>,
    #[serde(
        alias = "identityType",
        default,
        deserialize_with = "super::extract::not_null"
    )]
    identity_type: Option<String>,
}

async fn execute(
    State(app): State<AppState>,
    Extension(transaction): Extension<Transaction>,
    IdempotencyKey(idempotency_key): IdempotencyKey,
    caller: Result<Caller, ApiError>,
    Path((integration, endpoint)): Path<(String, String)>,
    query: Result<Query, ApiError>,
    body: Result<JsonBody<ExecuteBody>, ApiError>,
) -> Response {
    // Refused as a body that is not understood is: what a call selects goes in its body, and
    // `?identity=alice` ignored would run the call on the key owner's own connection (as
    // `/mcp?identity=alice` would not).
    let body = match query.and_then(|query| query.only(&[])) {
        Ok(_) => body,
        Err(ApiError::BadRequest(refused)) => Err(ApiError::BadRequest(format!(
            "{refused}: a call names its connection in the body, as in {{\"params\": {{…}}, \"identity\": \"…\"}}"
        ))),
        Err(other) => Err(other),
    };
    // An `Idempotency-Key` counts only on a call that could run: a caller not authenticated or
    // a body not understood is refused as always.
    let (key, idempotent) = match (&caller, &body, idempotency_key) {
        (Ok(Caller(key)), Ok(JsonBody(request)), Ok(Some(idempotency_key))) => {
            let mut parts = vec![
                Some(integration.as_str()),
                Some(endpoint.as_str()),
                request.connection_key.as_deref(),
                request.identity.as_deref(),
                request.params.as_deref().map(RawValue::get),
            ];
            // Last and only when given, so that a call without it keeps the fingerprint it had
            // before the field existed (a retry across an upgrade is still a retry).
            if let Some(identity_type) = &request.identity_type {
                parts.push(Some(identity_type));
            }
            let idempotent = IdempotentRequest {
                api_key_id: key.id,
                key: idempotency_key,
                fingerprint: idempotency::fingerprint(&parts),
            };
            (key.clone(), idempotent)
        }
        (Ok(Caller(key)), Ok(_), Err(refusal)) => {
            let names = (integration.as_str(), endpoint.as_str());
            return answer_without_running(&app, &transaction, key, names, Err(refusal));
        }
        _ => {
            return call(&app, transaction, caller, &integration, &endpoint, body)
                .await
                .response;
        }
    };
    // Claimed and run in a task of its own, to its end even if the caller leaves: its retry
    // then finds the reply kept (a claim made here and dropped with the caller would hold the
    // key with nothing running).
    let task = super::detach::spawn(
        &app,
        call_once(
            app.clone(),
            transaction,
            key,
            idempotent,
            (integration, endpoint),
            body,
        ),
    );
    super::detach::join(task).await.unwrap_or_else(|failed| failed)
}

/// A call under an `Idempotency-Key`: claim the key, then run the call and keep its reply, or
/// answer from what the key holds without running it.
async fn call_once(
    app: AppState,
    transaction: Transaction,
    key: ApiKey,
    idempotent: IdempotentRequest,
    (integration, endpoint): (String, String),
    body: Result<JsonBody<ExecuteBody>, ApiError>,
) -> Response {
    let claim_seconds = idempotency::claim_seconds(&app);
    let claiming = idempotent.clone();
    let claim = app
        .vault
        .run(move |vault| vault.claim_idempotent_call(&claiming, claim_seconds))
        .await;
    let answer = match claim {
        Ok(Claim::Claimed) => {
            let caller = Ok(Caller(key));
            let called = call(&app, transaction, caller, &integration, &endpoint, body).await;
            return idempotency::keep(&app, idempotent, called).await;
        }
        Ok(Claim::Finished {
            same_request: true,
            http_status,
            body,
        }) => Ok(idempotency::replay(http_status, body)),
        Ok(Claim::Running { same_request: true }) => Err(ApiError::IdempotencyKeyInUse),
        Ok(
            Claim::Running { same_request: false }
            | Claim::Finished {
                same_request: false, ..
            },
        ) => Err(ApiError::IdempotencyKeyReused),
        Err(error) => Err(ApiError::from(error)),
    };
    answer_without_running(&app, &transaction, &key, (&integration, &endpoint), answer)
}

/// A call's reply, and what keeping it for an `Idempotency-Key` needs to know of it.
pub(super) struct Called {
    /// The reply.
    pub response: Response,
    /// See [`RequestLog::reply_is_final`].
    pub reply_is_final: bool,
    /// The upstream status the connector reported, if it answered.
    pub upstream_status: Option<u16>,
}

/// Run the call and log it.
async fn call(
    app: &AppState,
    transaction: Transaction,
    caller: Result<Caller, ApiError>,
    integration: &str,
    endpoint: &str,
    body: Result<JsonBody<ExecuteBody>, ApiError>,
) -> Called {
    let started = Instant::now();
    let log = RequestLog::begin(&transaction, Some(integration), endpoint);
    // If the caller leaves, hyper drops this future and with it the call (the instance, an
    // upstream request in flight); the row then records itself as `client_closed`. Running the
    // call in a task of its own instead, to finish it, cost 15–30% of the throughput in paired
    // load runs (BENCHMARKS.md, ninth pass), so only passthrough, OAuth refreshes and calls
    // with an `Idempotency-Key` do that.
    let mut row = PendingRow::new(app, Route::Execute, log, started);
    let result = run(
        app,
        transaction.key,
        caller,
        integration,
        endpoint,
        body,
        &mut row.log,
    )
    .await;
    let response = super::settle(result, &mut row.log, started);
    let called = Called {
        response,
        reply_is_final: row.log.reply_is_final,
        upstream_status: row.log.upstream_status,
    };
    row.record(None);
    called
}

/// Log and send an answer to a call with an `Idempotency-Key` that did not run: its refusal,
/// or the reply kept for it (`idempotent_replay`).
fn answer_without_running(
    app: &AppState,
    transaction: &Transaction,
    key: &ApiKey,
    (integration, endpoint): (&str, &str),
    answer: Result<Response, ApiError>,
) -> Response {
    let started = Instant::now();
    let mut log = RequestLog::begin(transaction, Some(integration), endpoint);
    log.made_with(key);
    let replayed = answer.is_ok();
    let mut row = PendingRow::new(app, Route::Execute, log, started);
    let response = super::settle(answer, &mut row.log, started);
    row.record(replayed.then_some(IDEMPOTENT_REPLAY));
    response
}

/// Run an action for an already authenticated caller (the MCP `tools/call` path), with the
/// same validation, limits, logging and metrics; returns the HTTP status and the reply body.
pub(super) async fn execute_for(
    app: &AppState,
    transaction: Transaction,
    key: ApiKey,
    integration: &str,
    endpoint: &str,
    body: serde_json::Value,
) -> (axum::http::StatusCode, String) {
    // Through text: `params` is kept as raw JSON, which a `Value` cannot hand out.
    let body = serde_json::from_str::<ExecuteBody>(&body.to_string())
        .map(JsonBody)
        .map_err(|e| ApiError::BadRequest(format!("invalid arguments: {e}")));
    let response = execute(
        State(app.clone()),
        Extension(transaction),
        IdempotencyKey(Ok(None)),
        Ok(Caller(key)),
        Path((integration.to_owned(), endpoint.to_owned())),
        // The MCP URL's own query chose the connection, and is in `body` now.
        Ok(Query::default()),
        body,
    )
    .await;
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap_or_default();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// The execute flow proper; `log` collects what the request log row needs.
async fn run(
    app: &AppState,
    transaction_key: String,
    caller: Result<Caller, ApiError>,
    integration: &str,
    endpoint: &str,
    body: Result<JsonBody<ExecuteBody>, ApiError>,
    log: &mut RequestLog,
) -> Result<Response, ApiError> {
    let Caller(key) =
        caller.inspect_err(|refused| log.key_prefix = refused.refused_key_prefix().map(str::to_owned))?;
    log.made_with(&key);

    let connector = app.connector(integration)?;
    let endpoint_info = connector.manifest.endpoint(endpoint).ok_or_else(|| {
        ApiError::NotFound(format!(
            "integration `{integration}` has no endpoint named `{endpoint}`"
        ))
    })?;
    if !key.scope.allows(integration) {
        return Err(ApiError::ScopeNotAllowed(integration.to_owned()));
    }
    // Limits apply to calls of actions that exist and that the key may use: a caller probing
    // names does not spend its quota (`Vault::count_calls_since` agrees after a restart).
    // Held until the call has ended.
    let Admitted {
        window,
        in_flight: _in_flight,
    } = admit(app, &key).await?;
    log.counted = true;
    let JsonBody(body) = body?;
    let params = body
        .params
        .ok_or_else(|| ApiError::BadRequest("`params` is required (use {} for none)".into()))?;
    if !params.get().trim_start().starts_with('{') {
        return Err(ApiError::BadRequest("`params` must be a JSON object".into()));
    }
    log.request_bytes = params.get().len() as u64;
    // The connector gets the text, so the schema must see all of it: duplicate keys, which a
    // `Value` would collapse to the last, are refused.
    let mut params_value = super::strict_json::parse(params.get())
        .map_err(|e| ApiError::BadRequest(format!("`params`: {e}{}", super::extract::hint_for(&e))))?;
    let violations = Manifest::validate_params(endpoint_info, &params_value);
    if !violations.is_empty() {
        return Err(ApiError::InvalidParams(violations));
    }
    // The params go to the connector as the caller wrote them, unless a whole number came as
    // `7.0`: the schema took it as an integer, so the connector gets it as one.
    let rewritten =
        Manifest::integral_numbers_as_integers(&mut params_value).then(|| params_value.to_string());
    let params_text = rewritten.as_deref().unwrap_or(params.get());

    let mut context = CallContext {
        transaction_key,
        egress_denials: Some(app.metrics.clone()),
        ..CallContext::default()
    };
    let mut connection = None;
    // Taken before the connection is read: an answer is then never counted against a secret
    // stored after the one this call sent.
    let credential_taken_at_us = crate::vault::now_micros();
    if needs_connection(&connector.manifest) {
        let selector = ConnectionSelector {
            connection_key: body.connection_key,
            identity: body.identity,
            identity_type: body.identity_type,
        };
        let (record, stored) = super::connection::select(app, integration, key.environment, selector).await?;
        tracing::debug!(connection = %record.key, version = %connector.manifest.version, "connection selected");
        log.connection_key = Some(record.key.clone());
        super::connection::attach_credential(app, &connector.manifest, &record, stored, &mut context).await?;
        connection = Some(record);
    } else if body.connection_key.is_some() {
        // Ignoring it would hide a caller's mistake (another integration's key, a typo).
        return Err(ApiError::BadRequest(format!(
            "`{integration}` needs no connection, so `connection_key` is not used: leave it out"
        )));
    }

    let invoke_started = Instant::now();
    let invoked = app
        .runtime
        .invoke(&connector, endpoint, params_text, context)
        .await;
    log.reply_is_final = is_final(&invoked);
    let labels = ConnectorLabels {
        integration: integration.to_owned(),
    };
    app.metrics
        .connector_seconds
        .get_or_create(&labels)
        .observe(invoke_started.elapsed().as_secs_f64());
    // The connector's refused requests are counted as they happen (see `egress_denials`
    // above); a connection's base URL outside the operator's `baseUrls` refuses the call itself.
    if let Err(InvokeError::BaseUrlNotAllowed(_)) = &invoked {
        app.metrics.egress_denied.get_or_create(&labels).inc();
    }
    let invoked = match invoked {
        Err(InvokeError::CredentialRejected { failure, .. }) => {
            let record = connection.as_ref().ok_or_else(|| {
                ApiError::Internal(anyhow::anyhow!("a credential was renewed without a connection"))
            })?;
            return Err(super::connection::rejected(app, record, failure).await);
        }
        other => other?,
    };
    // Only calls that waited on an upstream: answers made without one would pull the
    // upstream latency histogram towards zero.
    if !invoked.upstream_time.is_zero() {
        app.metrics
            .upstream_seconds
            .get_or_create(&labels)
            .observe(invoked.upstream_time.as_secs_f64());
    }
    log.upstream_status = Some(invoked.output.status);
    let reconnect = match &connection {
        Some(record) => super::connect::reconnect_if_failed(app, record, invoked.credential_status).await,
        None => None,
    };
    if let (Some(record), Some(status)) = (connection, invoked.credential_status) {
        super::connection::track_credential_health(app, record, status, credential_taken_at_us);
    }
    let mut response = reply(&invoked.output, &invoked.upstream_headers, reconnect.as_ref());
    tell_rate_limit(window, response.headers_mut());
    Ok(response)
}

/// Whether an invocation's answer is the call's final word, which a call under an
/// `Idempotency-Key` keeps: not when it was refused before the guest ran, nor when the upstream
/// refused the credential before any request of the call reached it otherwise (nothing was done
/// with it) — a retry should then run once the cause is gone, not get this answer again.
fn is_final(invoked: &Result<Invoked, InvokeError>) -> bool {
    match invoked {
        Err(InvokeError::Busy | InvokeError::ConnectorBusy | InvokeError::BaseUrlNotAllowed(_)) => false,
        Err(InvokeError::CredentialRejected { upstream_acted, .. }) => *upstream_acted,
        Ok(invoked) if invoked.credential_status == Some(401) => invoked.upstream_acted,
        _ => true,
    }
}

/// The key's rate-limit window in `X-RateLimit-*` headers, when the key has a limit.
pub(super) fn tell_rate_limit(window: Option<Window>, headers: &mut axum::http::HeaderMap) {
    if let Some(window) = window {
        headers.insert("x-ratelimit-limit", HeaderValue::from(window.limit));
        headers.insert("x-ratelimit-remaining", HeaderValue::from(window.remaining));
        headers.insert("x-ratelimit-reset", HeaderValue::from(window.reset_after));
    }
}

/// A call the key's limits let through.
pub(super) struct Admitted {
    /// The key's rate-limit window, to report in headers.
    pub window: Option<Window>,
    /// The call's place among the key's calls in flight: hold it until the call has ended.
    pub in_flight: Option<InFlightCall>,
}

/// Let a call through the key's limits: a place among its calls in flight, then its quota and
/// rate limit (a call refused for the first does not spend the others).
pub(super) async fn admit(app: &AppState, key: &ApiKey) -> Result<Admitted, ApiError> {
    let in_flight = enter_in_flight(app, key)?;
    let window = count_call(app, key).await?;
    Ok(Admitted { window, in_flight })
}

/// A place among the key's calls in flight, if it has a cap (`key_busy` when they are all taken).
pub(super) fn enter_in_flight(app: &AppState, key: &ApiKey) -> Result<Option<InFlightCall>, ApiError> {
    match key.max_in_flight.or(app.max_in_flight_per_key) {
        Some(limit) => Ok(Some(
            app.usage
                .in_flight
                .enter(key.id, limit)
                .ok_or(ApiError::KeyBusy { limit })?,
        )),
        None => Ok(None),
    }
}

/// Count the call against the key's quota and rate limit.
pub(super) async fn count_call(app: &AppState, key: &ApiKey) -> Result<Option<Window>, ApiError> {
    let limits = Limits {
        daily_quota: key.daily_quota,
        per_minute: key.per_minute_limit,
    };
    if limits.daily_quota.is_none() && limits.per_minute.is_none() {
        return Ok(None);
    }
    let now = crate::vault::now();
    // Seed today's count from the request log the first time this process sees the key.
    let key_id = key.id;
    let midnight_ms = now.div_euclid(86_400) * 86_400_000;
    let seed = match app.usage.is_tracked(key_id) {
        true => 0,
        false => {
            app.vault
                .run(move |vault| vault.count_calls_since(key_id, midnight_ms))
                .await?
        }
    };
    app.usage
        .admit(key_id, limits, now, || seed)
        .map_err(|refusal| match refusal {
            Refusal::DailyQuota { retry_after } => ApiError::DailyLimitReached { retry_after },
            Refusal::RateLimited { limit, retry_after } => ApiError::RateLimited { limit, retry_after },
        })
}

/// Render `{"status": N, "data": …}`: a valid JSON body is spliced in as it is (checked, not
/// parsed into a tree or re-serialised), an empty body is `null`, anything else a string;
/// `headers` (the upstream's `Retry-After`, `Link`, rate limits…) follow when there are any.
fn reply(output: &Output, upstream_headers: &[(String, String)], reconnect: Option<&ActionUrl>) -> Response {
    let content_type = output.content_type.as_deref().unwrap_or("");
    let media = content_type.split(';').next().unwrap_or("").trim();
    let is_json = media.eq_ignore_ascii_case("application/json") || media.ends_with("+json");
    // A byte-order mark is allowed before JSON text (RFC 8259 §8.1 lets a parser skip it).
    let json_text = output.body.strip_prefix(UTF8_BOM).unwrap_or(&output.body);
    let embeds_json = is_json && serde_json::from_slice::<&RawValue>(json_text).is_ok();
    if is_json && !embeds_json && !output.body.is_empty() {
        // The caller gets a string where it expected an object: say why, for whoever looks.
        tracing::warn!(
            status = output.status,
            "the answer says it is JSON but its body is not; `data` is that body as a string"
        );
    }
    let headers_len: usize = upstream_headers
        .iter()
        .map(|(name, value)| name.len() + value.len() + 8)
        .sum();
    let mut body = Vec::with_capacity(output.body.len() + headers_len + 64);
    // Writing into a Vec cannot fail.
    let _ = write!(body, "{{\"status\":{},\"data\":", output.status);
    let written = if embeds_json {
        body.extend_from_slice(json_text);
        Ok(())
    } else if output.body.is_empty() {
        body.extend_from_slice(b"null");
        Ok(())
    } else {
        // Text that would more than double as a JSON string (mostly control characters, six
        // bytes each escaped) goes as bytes: a 16 MiB answer must not make a 96 MiB reply.
        // (Measured against the answer's bytes: Latin-1 text grows as it becomes UTF-8 too.)
        let text =
            as_text(&output.body, content_type).filter(|text| escaped_len(text) <= 2 * output.body.len());
        match text {
            Some(text) => serde_json::to_writer(&mut body, &text),
            // Bytes that are no text: base64, said so, with what they are, rather than text
            // with replacement characters the caller could not tell from the real thing.
            None => serde_json::to_writer(&mut body, &BASE64_STANDARD.encode(&output.body)).and_then(|()| {
                let _ = write!(body, ",\"dataEncoding\":\"base64\",\"contentType\":");
                serde_json::to_writer(&mut body, &output.content_type)
            }),
        }
    };
    let written = written.and_then(|()| {
        if upstream_headers.is_empty() {
            return Ok(());
        }
        body.extend_from_slice(b",\"headers\":{");
        for (index, (name, value)) in upstream_headers.iter().enumerate() {
            if index > 0 {
                body.push(b',');
            }
            serde_json::to_writer(&mut body, name)?;
            body.push(b':');
            serde_json::to_writer(&mut body, value)?;
        }
        body.push(b'}');
        Ok(())
    });
    let written = written.and_then(|()| {
        let Some(reconnect) = reconnect else {
            return Ok(());
        };
        body.extend_from_slice(b",\"action_url\":");
        serde_json::to_writer(&mut body, &reconnect.url)?;
        if let Some(session) = &reconnect.session_id {
            body.extend_from_slice(b",\"connect_session_id\":");
            serde_json::to_writer(&mut body, session)?;
        }
        Ok(())
    });
    if let Err(error) = written {
        return ApiError::Internal(error.into()).into_response();
    }
    body.push(b'}');
    ([(CONTENT_TYPE, "application/json")], body).into_response()
}

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// The `charset` parameter of a content type, if any. Read only for bodies that are not UTF-8:
/// the usual answer (JSON, `charset=utf-8`) never needs it.
fn charset(content_type: &str) -> Option<&str> {
    content_type.split(';').skip(1).find_map(|parameter| {
        let (name, value) = parameter.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("charset")
            .then(|| value.trim().trim_matches('"'))
    })
}

/// How long `text` is as a JSON string's contents: control characters take six bytes
/// (`\u0001`) or two (`\n`), quotes and backslashes two.
fn escaped_len(text: &str) -> usize {
    text.bytes()
        .map(|byte| match byte {
            b'\n' | b'\r' | b'\t' | 0x08 | 0x0c | b'"' | b'\\' => 2,
            0x00..=0x1f => 6,
            _ => 1,
        })
        .sum()
}

/// `body` as text: UTF-8 (without a byte-order mark) whatever the label says (servers that
/// label UTF-8 as Latin-1 are common, and Latin-1 text with accents is almost never valid
/// UTF-8), else ISO-8859-1 when the content type says so (each byte is the code point of the
/// same number); `None` for bytes that are neither.
fn as_text<'a>(body: &'a [u8], content_type: &str) -> Option<std::borrow::Cow<'a, str>> {
    let text = body.strip_prefix(UTF8_BOM).unwrap_or(body);
    if let Ok(text) = std::str::from_utf8(text) {
        return Some(text.into());
    }
    const LATIN1_LABELS: [&str; 7] = [
        "iso-8859-1",
        "iso8859-1",
        "iso_8859-1",
        "latin1",
        "l1",
        "cp819",
        "ibm819",
    ];
    let latin1 = charset(content_type).is_some_and(|label| {
        LATIN1_LABELS
            .iter()
            .any(|known| known.eq_ignore_ascii_case(label))
    });
    latin1.then(|| {
        body.iter()
            .map(|&byte| char::from(byte))
            .collect::<String>()
            .into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(output: &Output) -> Response {
        super::reply(output, &[], None)
    }

    fn output(content_type: Option<&str>, body: &[u8]) -> Output {
        Output {
            status: 201,
            content_type: content_type.map(Into::into),
            body: body.to_vec(),
        }
    }

    async fn body_of(response: Response) -> serde_json::Value {
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        serde_json::from_slice(&bytes).expect("reply is JSON")
    }

    #[tokio::test]
    async fn bodies_that_are_not_utf8_lose_nothing() {
        // ISO-8859-1, as its content type says: decoded, not replaced.
        let latin1 = body_of(reply(&output(Some("text/plain; charset=ISO-8859-1"), b"caf\xE9"))).await;
        assert_eq!(latin1, serde_json::json!({"status": 201, "data": "café"}));
        // Bytes that are no text: base64, marked, with their content type.
        let bytes: Vec<u8> = (0..=255).collect();
        let binary = body_of(reply(&output(Some("application/octet-stream"), &bytes))).await;
        assert_eq!(binary["dataEncoding"], "base64");
        assert_eq!(binary["contentType"], "application/octet-stream");
        let decoded = BASE64_STANDARD
            .decode(binary["data"].as_str().expect("a string"))
            .expect("base64");
        assert_eq!(decoded, bytes);
        // Text of control characters, which would grow sixfold as a JSON string, goes as bytes;
        // text of lines and quotes, which at most doubles, stays text.
        let controls = vec![1u8; 4096];
        let encoded = body_of(reply(&output(Some("text/plain"), &controls))).await;
        assert_eq!(encoded["dataEncoding"], "base64");
        let lines = "\"a\"\n".repeat(1024);
        let text = body_of(reply(&output(Some("text/plain"), lines.as_bytes()))).await;
        assert_eq!(text["data"], lines.as_str());
        // Text in UTF-8 stays text, whatever charset label it carries.
        for label in ["utf-8", "ISO-8859-1"] {
            let content_type = format!("text/plain; charset={label}");
            let text = body_of(reply(&output(Some(&content_type), "naïve".as_bytes()))).await;
            assert_eq!(
                text,
                serde_json::json!({"status": 201, "data": "naïve"}),
                "{label}"
            );
        }
        // Bytes without a content type say so with null, not an empty type.
        let untyped = body_of(reply(&output(None, &[0xff, 0xfe, 0x00]))).await;
        assert_eq!(untyped["contentType"], serde_json::Value::Null);
    }

    #[test]
    fn a_refused_credential_is_final_only_once_the_upstream_may_have_acted() {
        let invoked = |credential_status, upstream_acted| {
            Ok(Invoked {
                output: output(None, b""),
                credential_status,
                upstream_time: std::time::Duration::ZERO,
                upstream_acted,
                upstream_headers: Vec::new(),
            })
        };
        assert!(is_final(&invoked(Some(200), true)));
        assert!(
            is_final(&invoked(None, false)),
            "no upstream request: the connector's own answer"
        );
        // A 401 to the only request: nothing was done; a 401 after a write: the write stands.
        assert!(!is_final(&invoked(Some(401), false)));
        assert!(is_final(&invoked(Some(401), true)));
        let rejected = |upstream_acted| {
            Err(InvokeError::CredentialRejected {
                failure: crate::runtime::RenewalFailure {
                    revoked: true,
                    message: "invalid_grant".into(),
                },
                upstream_acted,
            })
        };
        assert!(!is_final(&rejected(false)));
        assert!(is_final(&rejected(true)));
        assert!(!is_final(&Err(InvokeError::ConnectorBusy)));
        assert!(is_final(&Err(InvokeError::Timeout(
            std::time::Duration::from_secs(30)
        ))));
    }

    #[tokio::test]
    async fn upstream_headers_follow_the_data_as_an_object() {
        let headers = [
            ("retry-after".to_owned(), "7".to_owned()),
            (
                "link".to_owned(),
                "<https://x.test/?page=2>; rel=\"next\"".to_owned(),
            ),
        ];
        let limited = super::reply(&output(Some("application/json"), b"{}"), &headers, None);
        assert_eq!(
            body_of(limited).await,
            serde_json::json!({"status": 201, "data": {}, "headers": {
                "retry-after": "7", "link": "<https://x.test/?page=2>; rel=\"next\""
            }})
        );
    }

    #[tokio::test]
    async fn json_bodies_are_embedded_and_others_become_strings() {
        let json = body_of(reply(&output(
            Some("application/json; charset=utf-8"),
            br#"{"id":7}"#,
        )))
        .await;
        assert_eq!(json, serde_json::json!({"status": 201, "data": {"id": 7}}));
        let text = body_of(reply(&output(Some("text/plain"), b"hello"))).await;
        assert_eq!(text, serde_json::json!({"status": 201, "data": "hello"}));
        let broken = body_of(reply(&output(Some("application/json"), b"{not json"))).await;
        assert_eq!(broken, serde_json::json!({"status": 201, "data": "{not json"}));
        let empty = body_of(reply(&output(None, b""))).await;
        let bom = body_of(reply(&output(
            Some("application/json"),
            b"\xEF\xBB\xBF{\"id\":7}",
        )))
        .await;
        assert_eq!(bom, serde_json::json!({"status": 201, "data": {"id": 7}}));
        assert_eq!(empty, serde_json::json!({"status": 201, "data": null}));
        let spaced = body_of(reply(&output(Some("application/problem+json"), b" [1, 2]\n"))).await;
        assert_eq!(spaced, serde_json::json!({"status": 201, "data": [1, 2]}));
        let quoted = body_of(reply(&output(
            Some("text/plain"),
            "say \"hi\"\n\u{1F600}".as_bytes(),
        )))
        .await;
        assert_eq!(
            quoted,
            serde_json::json!({"status": 201, "data": "say \"hi\"\n\u{1F600}"})
        );
        let two_values = body_of(reply(&output(Some("application/json"), b"{} {}"))).await;
        assert_eq!(two_values, serde_json::json!({"status": 201, "data": "{} {}"}));
    }
}
