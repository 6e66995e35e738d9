//! What an action hands back to the gateway.

use crate::bindings::exports::sluice::connector::connector::Output as WitOutput;
use crate::http::Response;
use serde::Serialize;

/// The answer to an action: a status, a media type and a body.
///
/// Usually built from the upstream [`Response`] (`response.into()`), which passes the
/// upstream status and body through unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// The status to report to the caller as `status`.
    pub status: u16,
    /// Media type of `body`; `application/json` makes the gateway embed it as JSON.
    pub content_type: Option<String>,
    /// The body to hand to the caller as `data`.
    pub body: Vec<u8>,
}

impl Output {
    /// A JSON output with `status`, serializing `value`.
    pub fn json(status: u16, value: &impl Serialize) -> Result<Self, crate::Error> {
        let body = serde_json::to_vec(value).map_err(|e| crate::Error::other(e.to_string()))?;
        Ok(Self {
            status,
            content_type: Some("application/json".into()),
            body,
        })
    }

    /// A plain-text output with `status`.
    pub fn text(status: u16, text: impl Into<String>) -> Self {
        Self {
            status,
            content_type: Some("text/plain; charset=utf-8".into()),
            body: text.into().into_bytes(),
        }
    }

    pub(crate) fn into_wit(self) -> WitOutput {
        WitOutput {
            status: self.status,
            content_type: self.content_type,
            body: self.body,
        }
    }
}

impl From<Response> for Output {
    fn from(response: Response) -> Self {
        Self {
            status: response.status(),
            content_type: response.header("content-type").map(str::to_owned),
            body: response.into_bytes(),
        }
    }
}
