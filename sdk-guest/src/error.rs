//! The connector's error type and its mapping onto the WIT `connector-error` variants.

use crate::bindings::exports::sluice::connector::connector::ConnectorError;
use crate::bindings::sluice::connector::types::HttpError as WitHttpError;
use std::fmt;

/// Why the gateway did not deliver an upstream response to [`crate::http::RequestBuilder::send`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// Refused by the gateway's policy (host not allowed, forbidden header). Nothing was sent.
    Denied(String),
    /// The upstream did not answer in time.
    Timeout(String),
    /// The request or response exceeded a size limit.
    TooLarge(String),
    /// The request was malformed (method, URL or header).
    Invalid(String),
    /// Connecting to or talking with the upstream failed.
    Transport(String),
    /// Anything else.
    Other(String),
}

impl HttpError {
    pub(crate) fn from_wit(error: WitHttpError) -> Self {
        match error {
            WitHttpError::Denied(m) => Self::Denied(m),
            WitHttpError::Timeout(m) => Self::Timeout(m),
            WitHttpError::TooLarge(m) => Self::TooLarge(m),
            WitHttpError::Invalid(m) => Self::Invalid(m),
            WitHttpError::Transport(m) => Self::Transport(m),
            WitHttpError::Other(m) => Self::Other(m),
        }
    }

    pub(crate) fn into_wit(self) -> WitHttpError {
        match self {
            Self::Denied(m) => WitHttpError::Denied(m),
            Self::Timeout(m) => WitHttpError::Timeout(m),
            Self::TooLarge(m) => WitHttpError::TooLarge(m),
            Self::Invalid(m) => WitHttpError::Invalid(m),
            Self::Transport(m) => WitHttpError::Transport(m),
            Self::Other(m) => WitHttpError::Other(m),
        }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (kind, message) = match self {
            Self::Denied(m) => ("denied", m),
            Self::Timeout(m) => ("timeout", m),
            Self::TooLarge(m) => ("too large", m),
            Self::Invalid(m) => ("invalid", m),
            Self::Transport(m) => ("transport", m),
            Self::Other(m) => ("other", m),
        };
        write!(f, "{kind}: {message}")
    }
}

impl std::error::Error for HttpError {}

/// Why an action failed. Each variant becomes a stable error code for the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The params were missing, of the wrong type or inconsistent (caller sees `bad_request`).
    BadParams(String),
    /// The endpoint is not one this connector offers. The host calls only the endpoints
    /// `describe` declares, so returning this is a bug of the connector: the caller sees
    /// `502 connector_error`.
    UnknownEndpoint(String),
    /// An upstream request failed before any response.
    Http(HttpError),
    /// The upstream answered in a way the connector cannot make sense of.
    Upstream(String),
    /// Anything else.
    Other(String),
}

impl Error {
    /// A [`Error::BadParams`] with `message`.
    pub fn bad_params(message: impl Into<String>) -> Self {
        Self::BadParams(message.into())
    }

    /// The error to return for an endpoint name the connector does not know.
    pub fn unknown_endpoint(endpoint: &str) -> Self {
        Self::UnknownEndpoint(format!("no endpoint named `{endpoint}`"))
    }

    /// A [`Error::Upstream`] with `message`.
    pub fn upstream(message: impl Into<String>) -> Self {
        Self::Upstream(message.into())
    }

    /// A [`Error::Other`] with `message`.
    pub fn other(message: impl Into<String>) -> Self {
        Self::Other(message.into())
    }

    pub(crate) fn into_wit(self) -> ConnectorError {
        match self {
            Self::BadParams(m) => ConnectorError::BadParams(m),
            Self::UnknownEndpoint(m) => ConnectorError::UnknownEndpoint(m),
            Self::Http(e) => ConnectorError::Http(e.into_wit()),
            Self::Upstream(m) => ConnectorError::Upstream(m),
            Self::Other(m) => ConnectorError::Other(m),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadParams(m) => write!(f, "bad params: {m}"),
            Self::UnknownEndpoint(m) => write!(f, "unknown endpoint: {m}"),
            Self::Http(e) => write!(f, "upstream request failed: {e}"),
            Self::Upstream(m) => write!(f, "unexpected upstream answer: {m}"),
            Self::Other(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {}

impl From<HttpError> for Error {
    fn from(error: HttpError) -> Self {
        Self::Http(error)
    }
}

/// So that `?` works on `serde_json` calls in an action too: building or reading JSON the
/// connector made itself (upstream answers are read with [`crate::http::Response::json`],
/// which says what it expected).
impl From<serde_json::Error> for Error {
    fn from(error: serde_json::Error) -> Self {
        Self::Other(format!("JSON: {error}"))
    }
}
