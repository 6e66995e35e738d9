//! `Idempotency-Key` on execute (the header of the IETF httpapi draft, as payment APIs have it):
//! a retry of a call — same API key, same key, same request — gets the first call's reply
//! instead of running the action again, for a day.
//!
//! A call claims its key before it runs, and runs to its end in a task of its own, so a caller
//! that timed out and retries finds the reply kept even though it left. Only a call whose
//! connector started keeps its reply; one refused before that (params, limits, no connection,
//! a busy connector, a credential the upstream refused) gives its key back, so that its retry
//! runs once the cause is gone.

use super::AppState;
use super::execute::Called;
use crate::error::ApiError;
use crate::vault::idempotency::{IdempotentRequest, status_only_reply};
use axum::body::{Body, Bytes};
use axum::extract::FromRequestParts;
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

/// The request header.
pub(super) const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The response header that marks a kept reply sent again.
pub(super) const REPLAYED: &str = "idempotent-replayed";

/// Longest key accepted (a UUID is 36).
const MAX_KEY_BYTES: usize = 255;

/// A claim outlives the call it was made for by this much before a retry may take it: the
/// call's gateway may be slow to write the reply, not gone.
const CLAIM_MARGIN_SECONDS: u64 = 60;

/// The request's `Idempotency-Key` as [`key_of`] reads it; extracted on its own so that
/// the handler does not copy every header of every call to look for one.
pub(super) struct IdempotencyKey(pub Result<Option<String>, ApiError>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(key_of(&parts.headers)))
    }
}

/// The caller's `Idempotency-Key`, if it sent one; one that is empty, too long, not printable
/// ASCII or sent twice is refused rather than ignored (the caller counts on it).
fn key_of(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let mut values = headers.get_all(IDEMPOTENCY_KEY).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::BadRequest(
            "send one Idempotency-Key header, not several".into(),
        ));
    }
    let bytes = value.as_bytes();
    let printable = bytes.iter().all(|&byte| byte == b' ' || byte.is_ascii_graphic());
    if bytes.is_empty() || bytes.len() > MAX_KEY_BYTES || !printable {
        return Err(ApiError::BadRequest(format!(
            "Idempotency-Key must be 1 to {MAX_KEY_BYTES} printable ASCII characters (a UUID, say)"
        )));
    }
    Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
}

/// Digest of what a call asks for: a key sent again with anything else is refused. Each part
/// is length-prefixed, so no two different calls run together into the same bytes.
pub(super) fn fingerprint(parts: &[Option<&str>]) -> [u8; 32] {
    let mut digest = Sha256::new();
    for part in parts {
        match part {
            None => digest.update([0]),
            Some(text) => {
                digest.update([1]);
                digest.update((text.len() as u64).to_le_bytes());
                digest.update(text.as_bytes());
            }
        }
    }
    digest.finalize().into()
}

/// Largest reply kept whole for retries.
const MAX_KEPT_BYTES: usize = 256 << 10;

/// How long a claim holds (seconds): the longest a call may wait for an instance and run.
pub(super) fn claim_seconds(app: &AppState) -> i64 {
    let limits = app.runtime.limits();
    let longest_call = limits.invocation_timeout + limits.instance_wait;
    (longest_call.as_secs() + CLAIM_MARGIN_SECONDS) as i64
}

/// The reply kept for a retry, sent again and marked so.
pub(super) fn replay(http_status: u16, body: Vec<u8>) -> Response {
    let status = StatusCode::from_u16(http_status).unwrap_or(StatusCode::OK);
    let headers = [
        (CONTENT_TYPE, HeaderValue::from_static("application/json")),
        (
            axum::http::HeaderName::from_static(REPLAYED),
            HeaderValue::from_static("true"),
        ),
    ];
    (status, headers, body).into_response()
}

/// Keep the reply of `called` for `request`'s retries if it is final, or give the key back; the
/// caller gets the reply either way.
pub(super) async fn keep(app: &AppState, request: IdempotentRequest, called: Called) -> Response {
    let Called {
        response,
        reply_is_final,
        upstream_status,
    } = called;
    if !reply_is_final {
        let released = app
            .vault
            .run(move |vault| vault.release_idempotent_call(&request))
            .await;
        if let Err(error) = released {
            // The claim runs out by itself; until then a retry is told the call is running.
            tracing::error!(error = %format!("{error:#}"), "giving back an idempotency key failed");
        }
        return response;
    }
    let (parts, body) = response.into_parts();
    // Execute's replies are built whole in memory, so this only gathers them.
    let bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(bytes) => bytes,
        Err(error) => {
            return ApiError::Internal(anyhow::anyhow!("reading a reply to keep: {error}")).into_response();
        }
    };
    let status = parts.status.as_u16();
    // A reply over the cap is kept as its status only: every caller could otherwise store
    // megabytes a call for a day; the retry still learns how the call went.
    let kept = match upstream_status {
        Some(upstream_status) if bytes.len() > MAX_KEPT_BYTES => Bytes::from(status_only_reply(
            upstream_status,
            &format!(
                "the reply was over {} KiB, too large to keep for retries",
                MAX_KEPT_BYTES >> 10
            ),
        )),
        _ => bytes.clone(),
    };
    let finished = app
        .vault
        .run(move |vault| vault.finish_idempotent_call(&request, (status, upstream_status), &kept))
        .await;
    if let Err(error) = finished {
        // The caller still gets its reply; a retry after the claim runs out runs the call again.
        tracing::error!(error = %format!("{error:#}"), "keeping an idempotent call's reply failed");
    }
    Response::from_parts(parts, Body::from(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&[u8]]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(
                IDEMPOTENCY_KEY,
                HeaderValue::from_bytes(value).expect("a header value"),
            );
        }
        headers
    }

    #[test]
    fn a_key_is_one_short_printable_header() {
        assert_eq!(key_of(&HeaderMap::new()).ok(), Some(None));
        let uuid = b"8e03978e-40d5-43e8-bc93-6894a57f9324";
        assert_eq!(
            key_of(&headers(&[uuid])).ok().flatten().as_deref(),
            Some("8e03978e-40d5-43e8-bc93-6894a57f9324")
        );
        let long = vec![b'k'; MAX_KEY_BYTES + 1];
        for refused in [
            headers(&[b""]),
            headers(&[&long]),
            headers(&[b"caf\xc3\xa9"]),
            headers(&[b"a", b"b"]),
        ] {
            assert!(
                matches!(key_of(&refused), Err(ApiError::BadRequest(_))),
                "{refused:?}"
            );
        }
    }

    #[test]
    fn fingerprints_tell_every_part_apart() {
        let base = fingerprint(&[Some("github"), Some("get_repo"), None, None, Some("{}")]);
        assert_eq!(
            base,
            fingerprint(&[Some("github"), Some("get_repo"), None, None, Some("{}")])
        );
        for other in [
            fingerprint(&[Some("github"), Some("get_repo"), Some(""), None, Some("{}")]),
            fingerprint(&[Some("github"), Some("get_repo"), None, Some(""), Some("{}")]),
            fingerprint(&[Some("githu"), Some("bget_repo"), None, None, Some("{}")]),
            fingerprint(&[Some("github"), Some("get_repo"), None, None, Some("{ }")]),
        ] {
            assert_ne!(base, other);
        }
    }
}
