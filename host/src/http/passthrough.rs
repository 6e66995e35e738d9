//! `ANY /v1/passthrough/{*path}`: a raw call to a connection's platform, for when no action
//! fits. The host sends the method, path, query, body and safe headers to the connection's
//! base URL with the credential injected, under exactly the egress policy, limits and
//! scrubbing of connector requests, and returns the upstream status, body and safe headers
//! (each upstream header also as `x-sluice-passthrough-<name>`).

use super::extract::Caller;
use super::{AppState, TransactionKey};
use crate::error::ApiError;
use crate::runtime::CallContext;
use crate::runtime::bindings::Header;
use crate::vault::logs::RequestLog;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::{Extension, Router};
use std::time::Instant;

/// The connection header, and Pica's name for it.
const CONNECTION_HEADERS: [&str; 2] = ["x-sluice-connection-key", "x-pica-connection-key"];
const PREFIX: &str = "/v1/passthrough";
/// Largest body a caller may send through.
const MAX_BODY: usize = 8 << 20;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/passthrough/{*path}", any(passthrough))
        .layer(DefaultBodyLimit::max(MAX_BODY))
}

/// Caller headers that are the gateway's business, not the upstream's: the host-owned ones a
/// connector may not set either, plus the gateway's own.
fn forwardable(name: &HeaderName) -> bool {
    let text = name.as_str();
    !(text.starts_with("x-sluice-")
        || text.starts_with("x-pica-")
        || matches!(text, "accept-encoding" | "x-forwarded-proto")
        || crate::runtime::capability::is_forbidden_header(name))
}

/// Upstream headers that describe one hop, not the content.
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
    )
}

#[allow(clippy::too_many_arguments)]
async fn passthrough(
    State(app): State<AppState>,
    Extension(TransactionKey(transaction_key)): Extension<TransactionKey>,
    caller: Result<Caller, ApiError>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let started = Instant::now();
    let mut log = RequestLog::begin(&transaction_key, None, "passthrough");
    let response = match run(
        &app,
        transaction_key,
        caller,
        method,
        uri,
        headers,
        body,
        &mut log,
    )
    .await
    {
        Ok(response) => response,
        Err(error) => {
            log.outcome = error.code().to_owned();
            error.into_response()
        }
    };
    log.http_status = response.status().as_u16();
    log.duration_us = started.elapsed().as_micros() as u64;
    app.logs.record(log);
    response
}

#[allow(clippy::too_many_arguments)]
async fn run(
    app: &AppState,
    transaction_key: String,
    caller: Result<Caller, ApiError>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
    log: &mut RequestLog,
) -> Result<Response, ApiError> {
    let Caller(key) = caller?;
    log.key_id = Some(key.id);
    log.key_prefix = Some(key.prefix.clone());
    log.environment = Some(key.environment.as_str().to_owned());
    // Passthrough calls count against the key's quota and rate limit like actions do.
    super::execute::admit(app, &key).await?;
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge(format!("request body is larger than {MAX_BODY} bytes"))
        } else {
            ApiError::BadRequest("could not read the request body".into())
        }
    })?;
    log.request_bytes = body.len() as u64;
    let connection_key = CONNECTION_HEADERS
        .iter()
        .find_map(|name| headers.get(*name))
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .ok_or_else(|| ApiError::BadRequest("the `x-sluice-connection-key` header is required".into()))?;
    let environment = key.environment;
    let lookup = connection_key.clone();
    let (record, credential) = app
        .vault
        .run(move |vault| {
            let Some(record) = vault.get_connection(environment, &lookup)? else {
                return Ok(None);
            };
            let credential = vault.credential(&record)?;
            Ok(Some((record, credential)))
        })
        .await?
        .filter(|(record, _)| record.active)
        .ok_or_else(|| ApiError::NotFound(format!("no active connection `{connection_key}`")))?;
    if !key.scope.allows(&record.platform) {
        return Err(ApiError::ScopeNotAllowed(record.platform));
    }
    log.integration = Some(record.platform.clone());
    log.connection_key = Some(record.key.clone());
    let connector = app
        .registry
        .get(&record.platform)
        .ok_or_else(|| ApiError::NotFound(format!("no integration named `{}`", record.platform)))?;

    // The raw (still percent-encoded) path after the prefix, and the query.
    let path = uri.path().strip_prefix(PREFIX).unwrap_or("/");
    let url = match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_owned(),
    };
    let forwarded: Vec<Header> = headers
        .iter()
        .filter(|(name, _)| forwardable(name))
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
        body: (!body.is_empty()).then(|| body.to_vec()),
    };
    let context = CallContext {
        transaction_key,
        credential: Some(credential),
        base_url_override: record.base_url.clone(),
    };
    let upstream = app.runtime.passthrough(&connector, request, context).await?;
    log.upstream_status = Some(upstream.status);
    log.response_bytes = upstream.body.len() as u64;

    let status = StatusCode::from_u16(upstream.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut response = (status, upstream.body).into_response();
    let out = response.headers_mut();
    for Header { name, value } in upstream.headers {
        let (Ok(value), false) = (HeaderValue::from_str(&value), name.is_empty()) else {
            continue;
        };
        if let Ok(prefixed) = HeaderName::from_bytes(format!("x-sluice-passthrough-{name}").as_bytes()) {
            out.append(prefixed, value.clone());
        }
        if returnable(&name)
            && let Ok(name) = HeaderName::from_bytes(name.as_bytes())
        {
            out.append(name, value);
        }
    }
    Ok(response)
}
