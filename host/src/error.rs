//! The HTTP edge's error type: every failure becomes a stable code, a status and a message.
//!
//! Bodies look like `{"error": code, "message": …, "action_url"?: …}`. 5xx messages never
//! carry the gateway's internals: they are fixed texts, or relay what the connector, upstream or
//! OAuth provider said; the details go to the log under the request's transaction key.

use crate::runtime::InvokeError;
use crate::runtime::bindings::{ConnectorError, HttpError};
use crate::vault::api_keys::Environment;
use axum::Json;
use axum::http::header::{RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Longest message passed on to a caller (connector-supplied text, or names the caller sent).
const MAX_MESSAGE_BYTES: usize = 500;

/// The code of an internal error: a bug in the gateway, details in its log.
pub const INTERNAL_ERROR: &str = "internal_error";

/// Every outcome a request-log row can have: `ok`, `client_closed` (the caller left before its
/// answer was all sent), `idempotent_replay` (a retry answered with the reply kept for its
/// `Idempotency-Key`), then each code [`ApiError::code`] gives.
pub const OUTCOMES: &[&str] = &[
    "ok",
    "client_closed",
    "idempotent_replay",
    "bad_request",
    "unauthorized",
    "api_key_revoked",
    "api_key_expired",
    "scope_not_allowed",
    "origin_not_allowed",
    "integration_not_connected",
    "ambiguous_connection",
    "token_expired",
    "token_refresh_failed",
    "plan_limit_reached",
    "daily_limit_reached",
    "rate_limited",
    "key_busy",
    "not_found",
    "method_not_allowed",
    "payload_too_large",
    "too_many_upstream_requests",
    "request_timeout",
    "connector_timeout",
    "connector_memory_limit",
    "connector_trap",
    "connector_error",
    "egress_denied",
    "upstream_unreachable",
    "upstream_timeout",
    "at_capacity",
    "connector_unavailable",
    "not_ready",
    "connector_busy",
    "idempotency_key_in_use",
    "idempotency_key_reused",
    "storage_unavailable",
    "internal_error",
];

/// Every code an error can have: the outcomes but the first three, which are not errors.
pub const ERROR_CODES: &[&str] = OUTCOMES.split_at(3).1;

/// Everything that can go wrong on the caller-facing API.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed request or params.
    #[error("{0}")]
    BadRequest(String),
    /// The params do not match the endpoint's JSON Schema.
    #[error("params do not match the endpoint's schema: {}", summary(.0))]
    InvalidParams(Vec<(String, String)>),
    /// Missing or unknown API key.
    #[error("{0}")]
    Unauthorized(String),
    /// The key was revoked; `prefix`: its visible prefix, for the request log.
    #[error("this API key has been revoked")]
    ApiKeyRevoked {
        /// The key's prefix (`sk_test_abcd`).
        prefix: String,
    },
    /// The key is past its expiry; `prefix`: its visible prefix, for the request log.
    #[error("this API key has expired")]
    ApiKeyExpired {
        /// The key's prefix.
        prefix: String,
    },
    /// A browser page of an origin the operator did not allow (`--cors-origin`) called `/mcp`.
    #[error(
        "requests from origin `{0}` are refused: MCP servers accept browser requests only from origins \
         the operator allows (--cors-origin), which keeps DNS-rebinding pages out"
    )]
    OriginNotAllowed(String),
    /// The key may not call this integration.
    #[error("this API key may not call `{0}`")]
    ScopeNotAllowed(String),
    /// Several connections could serve the call, or none without naming one: which account
    /// acts is the caller's to say (`connection_key` or `identity`).
    #[error("{message}")]
    AmbiguousConnection {
        /// What is ambiguous and how to choose.
        message: String,
        /// The keys of the connections to choose from (a few; the message says where the rest are).
        candidates: Vec<String>,
    },
    /// The caller has no connection for this integration (for the identity the call named).
    #[error(
        "no {integration} connection{}: {}",
        for_identity(identity.as_deref()),
        match action_url {
            Some(_) => "connect an account first",
            None => "connect an account first, once its sign-in is set up on this gateway (the operator registers an OAuth app)",
        }
    )]
    IntegrationNotConnected {
        /// Integration id.
        integration: String,
        /// The identity the call named, if it named one.
        identity: Option<String>,
        /// Where the user can connect; none while no link could work.
        action_url: Option<ActionUrl>,
    },
    /// The connection's OAuth grant is gone (refresh refused or impossible): reconnect.
    #[error("the {integration} connection's authorization has expired or was revoked: {reason}")]
    TokenExpired {
        /// Integration id.
        integration: String,
        /// Why, without secrets.
        reason: String,
        /// Where the user can reconnect.
        action_url: ActionUrl,
    },
    /// Refreshing the connection's OAuth token failed for now (provider down, bad config).
    #[error("could not refresh the connection's OAuth token: {0}")]
    TokenRefreshFailed(String),
    /// The environment's connection limit is reached.
    #[error("{0}")]
    PlanLimitReached(String),
    /// A call with the same `Idempotency-Key` is still running.
    #[error("a call with this Idempotency-Key is still running; retry once it has finished to get its reply")]
    IdempotencyKeyInUse,
    /// The `Idempotency-Key` was used in the last day for a call that asked for something else.
    #[error(
        "this Idempotency-Key was used in the last 24 hours for another call (another integration, action, \
         connection or params); use a new key for a new call"
    )]
    IdempotencyKeyReused,
    /// The key's daily quota is used up.
    #[error("this API key's daily call quota is used up; it resets at UTC midnight")]
    DailyLimitReached {
        /// Seconds until the quota resets.
        retry_after: i64,
    },
    /// The key's per-minute limit is used up.
    #[error("this API key may make {limit} calls per minute; retry in {retry_after} s")]
    RateLimited {
        /// Calls per minute.
        limit: u32,
        /// Seconds until the window resets.
        retry_after: i64,
    },
    /// The key has as many calls in flight as it may.
    #[error("this API key has {limit} calls in flight, as many as it may at once; retry when one has ended")]
    KeyBusy {
        /// Calls it may have in flight.
        limit: u32,
    },
    /// Unknown route, integration or endpoint.
    #[error("{0}")]
    NotFound(String),
    /// Wrong method on a known route.
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    /// The request body is larger than allowed.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The client stopped sending its request body.
    #[error("{0}")]
    RequestTimeout(String),
    /// The connector ran past its deadline, this one.
    #[error("the connector did not finish within its {} ms deadline", .0.as_millis())]
    ConnectorTimeout(std::time::Duration),
    /// The connector exceeded its memory budget, of this many bytes.
    #[error("the connector exceeded its memory limit of {} MiB", .0 >> 20)]
    ConnectorMemoryLimit(usize),
    /// The connector crashed. The message points at the log, never at what the connector wrote:
    /// that is guest-controlled text (it may echo anything the connector was given).
    #[error("the connector crashed while handling this request{}", see_log(.transaction_key))]
    ConnectorTrap {
        /// The request's transaction key, under which the crash and the connector's output
        /// (its log, stdout and stderr) were logged; empty when there is none.
        transaction_key: String,
    },
    /// The connector reported a failure.
    #[error("{0}")]
    ConnectorError(String),
    /// The connector tried to reach something policy forbids.
    #[error("{0}")]
    EgressDenied(String),
    /// The upstream could not be reached.
    #[error("{0}")]
    UpstreamUnreachable(String),
    /// The upstream did not answer in time.
    #[error("{0}")]
    UpstreamTimeout(String),
    /// The upstream answer or connector request exceeded a size limit.
    #[error("{0}")]
    UpstreamTooLarge(String),
    /// The connector needed more upstream requests than a call may make (this many).
    #[error(
        "the connector needed more than {0} upstream requests for this call (the gateway's \
         --max-upstream-requests); ask for less at once (a smaller page, a narrower query)"
    )]
    TooManyUpstreamRequests(u32),
    /// The connector is at its own concurrency limit.
    #[error("the connector is handling as many requests as it may; retry shortly")]
    ConnectorBusy,
    /// No instance slot is free.
    #[error("the gateway is at capacity; retry shortly")]
    AtCapacity,
    /// The connector is installed but did not load (its new outbound hosts await approval).
    #[error(
        "the `{0}` connector is installed on this gateway but did not load; the operator sees why in \
         GET /v1/plugins and the gateway's log"
    )]
    ConnectorUnavailable(String),
    /// The gateway is starting: its connectors are still loading (compiling, on a first start).
    #[error("the gateway is starting: its connectors are still loading; retry in a moment")]
    NotReady,
    /// The database failed in a way that passes (a full disk, an I/O error, another process
    /// holding it): the same request may well succeed later. Details are logged, not returned.
    #[error(
        "the gateway could not use its database just now (its operator sees why in the log); retry \
         later"
    )]
    StorageUnavailable(#[source] anyhow::Error),
    /// A bug or an infrastructure failure; details are logged, not returned.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

/// A link where the user can connect (or reconnect) an account: a connect session's page, and
/// that session's id, which the app polls (`GET /v1/connect/{id}`) to learn when it is done.
#[derive(Debug, Clone)]
pub struct ActionUrl {
    /// The page to send the user to.
    pub url: String,
    /// The connect session behind it; none when no session could be opened (the generic page).
    pub session_id: Option<String>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    action_url: Option<&'a str>,
    /// The connect session behind `action_url`.
    #[serde(skip_serializing_if = "Option::is_none")]
    connect_session_id: Option<&'a str>,
    /// Per-field failures, for `InvalidParams`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    details: Vec<FieldError<'a>>,
    /// Connection keys to choose from, for `AmbiguousConnection`.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    candidates: &'a [String],
}

#[derive(Serialize)]
struct FieldError<'a> {
    pointer: &'a str,
    message: &'a str,
}

fn summary(errors: &[(String, String)]) -> String {
    errors
        .iter()
        .map(|(pointer, message)| format!("`{pointer}`: {message}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// ` for identity `…`` when a call named one.
pub(crate) fn for_identity(identity: Option<&str>) -> String {
    identity
        .map(|identity| format!(" for identity `{identity}`"))
        .unwrap_or_default()
}

/// Why a connection key was not found, when its own first part says: a key of the other
/// environment than the API key's (`live::…` asked for with a test key). Empty otherwise.
pub(crate) fn other_environment(connection_key: &str, environment: Environment) -> String {
    let other = match environment {
        Environment::Test => Environment::Live,
        Environment::Live => Environment::Test,
    };
    match connection_key.starts_with(&format!("{}::", other.as_str())) {
        true => format!(
            ": it is a {other} connection, and a {this} API key reaches {this} connections only",
            other = other.as_str(),
            this = environment.as_str()
        ),
        false => String::new(),
    }
}

impl ApiError {
    /// The stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest(_) | Self::InvalidParams(_) => "bad_request",
            Self::Unauthorized(_) => "unauthorized",
            Self::ApiKeyRevoked { .. } => "api_key_revoked",
            Self::ApiKeyExpired { .. } => "api_key_expired",
            Self::ScopeNotAllowed(_) => "scope_not_allowed",
            Self::OriginNotAllowed(_) => "origin_not_allowed",
            Self::IntegrationNotConnected { .. } => "integration_not_connected",
            Self::AmbiguousConnection { .. } => "ambiguous_connection",
            Self::TokenExpired { .. } => "token_expired",
            Self::TokenRefreshFailed(_) => "token_refresh_failed",
            Self::PlanLimitReached(_) => "plan_limit_reached",
            Self::DailyLimitReached { .. } => "daily_limit_reached",
            Self::RateLimited { .. } => "rate_limited",
            Self::KeyBusy { .. } => "key_busy",
            Self::NotFound(_) => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::PayloadTooLarge(_) => "payload_too_large",
            Self::RequestTimeout(_) => "request_timeout",
            Self::ConnectorTimeout(_) => "connector_timeout",
            Self::ConnectorMemoryLimit(_) => "connector_memory_limit",
            Self::ConnectorTrap { .. } => "connector_trap",
            Self::ConnectorError(_) => "connector_error",
            Self::EgressDenied(_) => "egress_denied",
            Self::UpstreamUnreachable(_) => "upstream_unreachable",
            Self::UpstreamTimeout(_) => "upstream_timeout",
            Self::UpstreamTooLarge(_) => "payload_too_large",
            Self::TooManyUpstreamRequests(_) => "too_many_upstream_requests",
            Self::AtCapacity => "at_capacity",
            Self::ConnectorUnavailable(_) => "connector_unavailable",
            Self::NotReady => "not_ready",
            Self::ConnectorBusy => "connector_busy",
            Self::IdempotencyKeyInUse => "idempotency_key_in_use",
            Self::IdempotencyKeyReused => "idempotency_key_reused",
            Self::StorageUnavailable(_) => "storage_unavailable",
            Self::Internal(_) => INTERNAL_ERROR,
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) | Self::InvalidParams(_) | Self::AmbiguousConnection { .. } => {
                StatusCode::BAD_REQUEST
            }
            Self::Unauthorized(_)
            | Self::ApiKeyRevoked { .. }
            | Self::ApiKeyExpired { .. }
            | Self::TokenExpired { .. } => StatusCode::UNAUTHORIZED,
            Self::ScopeNotAllowed(_)
            | Self::OriginNotAllowed(_)
            | Self::IntegrationNotConnected { .. }
            | Self::EgressDenied(_)
            | Self::PlanLimitReached(_) => StatusCode::FORBIDDEN,
            Self::DailyLimitReached { .. }
            | Self::RateLimited { .. }
            | Self::KeyBusy { .. }
            | Self::ConnectorBusy => StatusCode::TOO_MANY_REQUESTS,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::IdempotencyKeyInUse => StatusCode::CONFLICT,
            Self::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::ConnectorTimeout(_) | Self::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::ConnectorMemoryLimit(_)
            | Self::ConnectorTrap { .. }
            | Self::ConnectorError(_)
            | Self::UpstreamUnreachable(_)
            | Self::UpstreamTooLarge(_)
            | Self::TooManyUpstreamRequests(_)
            | Self::TokenRefreshFailed(_) => StatusCode::BAD_GATEWAY,
            Self::AtCapacity
            | Self::ConnectorUnavailable(_)
            | Self::NotReady
            | Self::StorageUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            // The transaction key is on the response; the request span carries it into this line.
            Self::Internal(error) => tracing::error!(error = %format!("{error:#}"), "internal error"),
            Self::StorageUnavailable(error) => {
                tracing::error!(error = %format!("{error:#}"), "a write to the database failed")
            }
            _ => {}
        }
        let action_url = match &self {
            Self::IntegrationNotConnected { action_url, .. } => action_url.as_ref(),
            Self::TokenExpired { action_url, .. } => Some(action_url),
            _ => None,
        };
        let details = match &self {
            Self::InvalidParams(errors) => errors
                .iter()
                .map(|(pointer, message)| FieldError { pointer, message })
                .collect(),
            _ => Vec::new(),
        };
        let candidates = match &self {
            Self::AmbiguousConnection { candidates, .. } => candidates.as_slice(),
            _ => &[],
        };
        let body = ErrorBody {
            error: self.code(),
            // Messages quote what the caller sent (a name, a value); a 20 KB name is not
            // worth sending back whole.
            message: bounded(self.to_string()),
            action_url: action_url.map(|action| action.url.as_str()),
            connect_session_id: action_url.and_then(|action| action.session_id.as_deref()),
            details,
            candidates,
        };
        let mut response = (self.status(), Json(body)).into_response();
        let headers = response.headers_mut();
        match &self {
            Self::DailyLimitReached { retry_after } => {
                headers.insert(RETRY_AFTER, HeaderValue::from(*retry_after));
            }
            Self::RateLimited { limit, retry_after } => {
                headers.insert(RETRY_AFTER, HeaderValue::from(*retry_after));
                headers.insert("x-ratelimit-limit", HeaderValue::from(*limit));
                headers.insert("x-ratelimit-remaining", HeaderValue::from(0));
                headers.insert("x-ratelimit-reset", HeaderValue::from(*retry_after));
            }
            // Load, not the caller's allowance: worth another try a moment later.
            Self::AtCapacity
            | Self::ConnectorBusy
            | Self::KeyBusy { .. }
            | Self::IdempotencyKeyInUse
            | Self::NotReady => {
                headers.insert(RETRY_AFTER, HeaderValue::from(LOAD_RETRY_AFTER_SECONDS));
            }
            // The gateway's own key is a bearer token (RFC 6750), which clients (MCP ones
            // among them) look for. Not for `token_expired`: that is the upstream's grant.
            Self::Unauthorized(_) => {
                headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Self::ApiKeyRevoked { .. } | Self::ApiKeyExpired { .. } => {
                headers.insert(
                    WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer error=\"invalid_token\""),
                );
            }
            // A full disk takes an operator: a retry a second later would only fail again.
            Self::StorageUnavailable(_) => {
                headers.insert(RETRY_AFTER, HeaderValue::from(STORAGE_RETRY_AFTER_SECONDS));
            }
            _ => {}
        }
        response
    }
}

/// `Retry-After` of a refusal for load (`at_capacity`, `connector_busy`, `key_busy`): requests finish in
/// well under a second, so a second later the gateway has most likely caught up.
const LOAD_RETRY_AFTER_SECONDS: u32 = 1;

/// `Retry-After` of `storage_unavailable`.
const STORAGE_RETRY_AFTER_SECONDS: u32 = 30;

/// A failure the gateway did not foresee is its own (`internal_error`), but for the database
/// failing in a way that passes (full, failing storage; held by another process): worth a retry.
impl From<anyhow::Error> for ApiError {
    fn from(error: anyhow::Error) -> Self {
        match crate::store::passes_by_itself(&error) {
            true => Self::StorageUnavailable(error),
            false => Self::Internal(error),
        }
    }
}

/// Where the details of a crash are: the gateway log, under the request's transaction key.
fn see_log(transaction_key: &str) -> String {
    if transaction_key.is_empty() {
        String::new()
    } else {
        format!("; see the gateway log for transaction {transaction_key}")
    }
}

/// Text from outside the gateway is passed on, but bounded.
fn bounded(message: String) -> String {
    cut_to(message, MAX_MESSAGE_BYTES)
}

/// `text` cut to at most `max` bytes (on a character boundary), marked as cut with `…`.
pub(crate) fn cut_to(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.truncate(cut);
    text.push('…');
    text
}

impl ApiError {
    /// The prefix of the key this error refused as revoked or expired: the request log names
    /// it, so that an operator can tell which revoked key is still in use.
    pub fn refused_key_prefix(&self) -> Option<&str> {
        match self {
            Self::ApiKeyRevoked { prefix } | Self::ApiKeyExpired { prefix } => Some(prefix),
            _ => None,
        }
    }
}

impl From<InvokeError> for ApiError {
    fn from(error: InvokeError) -> Self {
        match error {
            // Sandbox faults are the operator's business too: logged under the transaction key.
            InvokeError::Timeout(deadline) => {
                tracing::warn!("connector stopped at its deadline");
                Self::ConnectorTimeout(deadline)
            }
            InvokeError::MemoryLimit(bytes) => {
                tracing::warn!("connector stopped at its memory limit");
                Self::ConnectorMemoryLimit(bytes)
            }
            InvokeError::Busy => Self::AtCapacity,
            InvokeError::ConnectorBusy => Self::ConnectorBusy,
            InvokeError::NotAnHttpStatus(_) => Self::ConnectorError(error.to_string()),
            InvokeError::TooLarge(limit) => Self::UpstreamTooLarge(format!(
                "the connector's answer is larger than the gateway's {} MiB limit",
                limit >> 20
            )),
            InvokeError::TooManyUpstreamRequests(cap) => Self::TooManyUpstreamRequests(cap),
            InvokeError::Trap {
                detail,
                transaction_key,
            } => {
                tracing::warn!(%detail, "connector trapped");
                Self::ConnectorTrap { transaction_key }
            }
            InvokeError::Connector(error) => error.into(),
            // Callers that can offer a reconnect link map this themselves.
            InvokeError::CredentialRejected { failure, .. } => Self::TokenRefreshFailed(failure.message),
            InvokeError::BaseUrlNotAllowed(reason) => Self::EgressDenied(reason),
            InvokeError::SentTheCredential => Self::EgressDenied(error.to_string()),
        }
    }
}

impl From<ConnectorError> for ApiError {
    fn from(error: ConnectorError) -> Self {
        match error {
            ConnectorError::BadParams(m) => Self::BadRequest(bounded(m)),
            // The host calls only endpoints the connector declared, so this is the connector
            // contradicting itself (a `match` arm forgotten), not a caller's unknown name.
            ConnectorError::UnknownEndpoint(m) => {
                tracing::warn!(answer = %bounded(m), "the connector declares this endpoint but its invoke() does not handle it");
                Self::ConnectorError(
                    "the connector declares this endpoint but does not handle it (its invoke() answered \
                     unknown-endpoint); its author needs to know"
                        .into(),
                )
            }
            ConnectorError::Http(e) => e.into(),
            ConnectorError::Upstream(m) => {
                Self::ConnectorError(bounded(format!("unexpected upstream answer: {m}")))
            }
            ConnectorError::Other(m) => Self::ConnectorError(bounded(m)),
        }
    }
}

impl From<HttpError> for ApiError {
    fn from(error: HttpError) -> Self {
        match error {
            HttpError::Denied(m) => Self::EgressDenied(bounded(m)),
            HttpError::Timeout(m) => Self::UpstreamTimeout(bounded(m)),
            HttpError::TooLarge(m) => Self::UpstreamTooLarge(bounded(m)),
            HttpError::Invalid(m) => Self::ConnectorError(bounded(format!("invalid upstream request: {m}"))),
            HttpError::Transport(m) => Self::UpstreamUnreachable(bounded(m)),
            HttpError::Other(m) => Self::ConnectorError(bounded(m)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connector_errors_map_to_documented_codes() {
        let cases: Vec<(ApiError, &str, u16)> = vec![
            (ConnectorError::BadParams("x".into()).into(), "bad_request", 400),
            (
                ConnectorError::UnknownEndpoint("x".into()).into(),
                "connector_error",
                502,
            ),
            (
                ConnectorError::Http(HttpError::Denied("x".into())).into(),
                "egress_denied",
                403,
            ),
            (
                ConnectorError::Http(HttpError::Timeout("x".into())).into(),
                "upstream_timeout",
                504,
            ),
            (
                ConnectorError::Http(HttpError::TooLarge("x".into())).into(),
                "payload_too_large",
                502,
            ),
            (
                ConnectorError::Http(HttpError::Transport("x".into())).into(),
                "upstream_unreachable",
                502,
            ),
            (
                ConnectorError::Http(HttpError::Invalid("x".into())).into(),
                "connector_error",
                502,
            ),
            (ConnectorError::Other("x".into()).into(), "connector_error", 502),
            (
                InvokeError::Timeout(std::time::Duration::from_secs(30)).into(),
                "connector_timeout",
                504,
            ),
            (
                InvokeError::MemoryLimit(64 << 20).into(),
                "connector_memory_limit",
                502,
            ),
            (
                InvokeError::Trap {
                    detail: "secret detail".into(),
                    transaction_key: "txn_1".into(),
                }
                .into(),
                "connector_trap",
                502,
            ),
            (InvokeError::Busy.into(), "at_capacity", 503),
            (InvokeError::TooLarge(16 << 20).into(), "payload_too_large", 502),
            (InvokeError::ConnectorBusy.into(), "connector_busy", 429),
        ];
        for (error, code, status) in cases {
            assert_eq!(error.code(), code);
            assert_eq!(error.status().as_u16(), status, "{code}");
        }
    }

    /// One error of each kind. The match has no wildcard, so a new variant does not compile
    /// until it is added here, and then to [`OUTCOMES`] if its code is new.
    fn one_of_each() -> Vec<ApiError> {
        let text = || String::from("x");
        let all = vec![
            ApiError::BadRequest(text()),
            ApiError::InvalidParams(vec![]),
            ApiError::Unauthorized(text()),
            ApiError::ApiKeyRevoked {
                prefix: "sk_test_abcd".into(),
            },
            ApiError::ApiKeyExpired {
                prefix: "sk_test_abcd".into(),
            },
            ApiError::ScopeNotAllowed(text()),
            ApiError::OriginNotAllowed(text()),
            ApiError::IntegrationNotConnected {
                integration: text(),
                identity: None,
                action_url: Some(ActionUrl {
                    url: text(),
                    session_id: None,
                }),
            },
            ApiError::TokenExpired {
                integration: text(),
                reason: text(),
                action_url: ActionUrl {
                    url: text(),
                    session_id: None,
                },
            },
            ApiError::AmbiguousConnection {
                message: text(),
                candidates: vec![text()],
            },
            ApiError::TokenRefreshFailed(text()),
            ApiError::PlanLimitReached(text()),
            ApiError::DailyLimitReached { retry_after: 1 },
            ApiError::RateLimited {
                limit: 1,
                retry_after: 1,
            },
            ApiError::KeyBusy { limit: 1 },
            ApiError::NotFound(text()),
            ApiError::IdempotencyKeyInUse,
            ApiError::IdempotencyKeyReused,
            ApiError::MethodNotAllowed,
            ApiError::PayloadTooLarge(text()),
            ApiError::RequestTimeout(text()),
            ApiError::ConnectorTimeout(std::time::Duration::from_secs(30)),
            ApiError::ConnectorMemoryLimit(64 << 20),
            ApiError::ConnectorTrap {
                transaction_key: text(),
            },
            ApiError::ConnectorError(text()),
            ApiError::EgressDenied(text()),
            ApiError::UpstreamUnreachable(text()),
            ApiError::UpstreamTimeout(text()),
            ApiError::UpstreamTooLarge(text()),
            ApiError::TooManyUpstreamRequests(16),
            ApiError::AtCapacity,
            ApiError::ConnectorUnavailable(text()),
            ApiError::ConnectorBusy,
            ApiError::NotReady,
            ApiError::StorageUnavailable(anyhow::anyhow!("x")),
            ApiError::Internal(anyhow::anyhow!("x")),
        ];
        for error in &all {
            match error {
                ApiError::BadRequest(_)
                | ApiError::InvalidParams(_)
                | ApiError::Unauthorized(_)
                | ApiError::ApiKeyRevoked { .. }
                | ApiError::ApiKeyExpired { .. }
                | ApiError::ScopeNotAllowed(_)
                | ApiError::OriginNotAllowed(_)
                | ApiError::IntegrationNotConnected { .. }
                | ApiError::TokenExpired { .. }
                | ApiError::AmbiguousConnection { .. }
                | ApiError::TokenRefreshFailed(_)
                | ApiError::PlanLimitReached(_)
                | ApiError::DailyLimitReached { .. }
                | ApiError::RateLimited { .. }
                | ApiError::KeyBusy { .. }
                | ApiError::NotFound(_)
                | ApiError::IdempotencyKeyInUse
                | ApiError::IdempotencyKeyReused
                | ApiError::MethodNotAllowed
                | ApiError::PayloadTooLarge(_)
                | ApiError::RequestTimeout(_)
                | ApiError::ConnectorTimeout(_)
                | ApiError::ConnectorMemoryLimit(_)
                | ApiError::ConnectorTrap { .. }
                | ApiError::ConnectorError(_)
                | ApiError::EgressDenied(_)
                | ApiError::UpstreamUnreachable(_)
                | ApiError::UpstreamTimeout(_)
                | ApiError::UpstreamTooLarge(_)
                | ApiError::TooManyUpstreamRequests(_)
                | ApiError::AtCapacity
                | ApiError::ConnectorUnavailable(_)
                | ApiError::ConnectorBusy
                | ApiError::NotReady
                | ApiError::StorageUnavailable(_)
                | ApiError::Internal(_) => {}
            }
        }
        all
    }

    #[test]
    fn the_outcomes_are_ok_client_closed_and_exactly_the_codes_errors_give() {
        assert_eq!(
            OUTCOMES[..3],
            [
                "ok",
                crate::vault::logs::CLIENT_CLOSED,
                crate::vault::logs::IDEMPOTENT_REPLAY
            ]
        );
        let given: std::collections::BTreeSet<&str> = one_of_each().iter().map(ApiError::code).collect();
        let listed: std::collections::BTreeSet<&str> = ERROR_CODES.iter().copied().collect();
        assert_eq!(given, listed);
        assert_eq!(listed.len() + 3, OUTCOMES.len(), "an outcome is listed twice");
    }

    #[test]
    fn refusals_for_load_say_when_to_retry() {
        for error in [
            ApiError::AtCapacity,
            ApiError::ConnectorBusy,
            ApiError::KeyBusy { limit: 2 },
            ApiError::IdempotencyKeyInUse,
        ] {
            let response = error.into_response();
            assert_eq!(
                response.headers().get(RETRY_AFTER).map(|v| v.as_bytes()),
                Some(&b"1"[..])
            );
        }
        let response = ApiError::ConnectorTimeout(std::time::Duration::from_secs(30)).into_response();
        assert!(response.headers().get(RETRY_AFTER).is_none());
    }

    /// The database refusing a write for want of room says "retry later" (503), with nothing
    /// of the cause; one refusing what was written is the gateway's own failure (500).
    #[test]
    fn a_database_that_cannot_take_a_write_is_unavailable_not_broken() -> anyhow::Result<()> {
        let conn = rusqlite::Connection::open_in_memory()?;
        conn.execute_batch("CREATE TABLE t (v TEXT NOT NULL)")?;
        let pages: i64 = conn.pragma_query_value(None, "page_count", |r| r.get(0))?;
        conn.pragma_update(None, "max_page_count", pages)?;
        let full = conn
            .execute("INSERT INTO t VALUES (?1)", ["x".repeat(64 << 10)])
            .expect_err("no page left");
        let error = ApiError::from(anyhow::Error::from(full).context("storing a connection"));
        assert_eq!(error.code(), "storage_unavailable");
        assert!(error.to_string().contains("retry later"), "{error}");
        let response = error.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            response.headers().get(RETRY_AFTER).map(|v| v.as_bytes()),
            Some(&b"30"[..])
        );

        let refused = conn
            .execute("INSERT INTO t VALUES (NULL)", [])
            .expect_err("NOT NULL");
        let error = ApiError::from(anyhow::Error::from(refused));
        assert_eq!(
            (error.code(), error.to_string().as_str()),
            (INTERNAL_ERROR, "internal error")
        );
        Ok(())
    }

    #[test]
    fn trap_and_internal_messages_hide_details() {
        let trap: ApiError = InvokeError::Trap {
            detail: "wasm backtrace at 0x1234".into(),
            transaction_key: "txn_abc".into(),
        }
        .into();
        assert_eq!(
            trap.to_string(),
            "the connector crashed while handling this request; see the gateway log for transaction txn_abc"
        );
        let internal = ApiError::Internal(anyhow::anyhow!("database at /secret/path is locked"));
        assert_eq!(internal.to_string(), "internal error");
    }

    #[test]
    fn long_connector_messages_are_bounded() {
        let error: ApiError = ConnectorError::Other("x".repeat(10_000)).into();
        assert!(error.to_string().len() < MAX_MESSAGE_BYTES + 10);
    }
}
