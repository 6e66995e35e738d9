//! axum's own rejections (a path segment that is not UTF-8, a form that does not parse, a wrong
//! content type) answer in plain text; the API answers every error as `{"error", "message"}`.
//! Rewriting them in one place, after the router, keeps that true for extractors added later.

use crate::error::ApiError;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Marks a response that carries an upstream's answer as it came (passthrough): an upstream's
/// plain-text error is the caller's to read, not the gateway's to rewrite.
#[derive(Debug, Clone, Copy)]
pub(super) struct UpstreamAnswer;

/// Longest rejection text kept as the message (axum's are one line).
const MAX_MESSAGE_BYTES: usize = 1024;

/// `response` in the API's error shape if it is one of axum's plain-text rejections; otherwise
/// as it is (the common case costs a status check).
pub(super) async fn in_api_shape(response: Response) -> Response {
    let status = response.status();
    let rewrite = (status.is_client_error() || status.is_server_error())
        && response.extensions().get::<UpstreamAnswer>().is_none()
        && response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.starts_with("text/plain"));
    if !rewrite {
        return response;
    }
    let message = match axum::body::to_bytes(response.into_body(), MAX_MESSAGE_BYTES).await {
        Ok(text) if !text.is_empty() => String::from_utf8_lossy(&text).trim().to_owned(),
        _ => status.canonical_reason().unwrap_or("bad request").to_owned(),
    };
    let error = match status {
        StatusCode::NOT_FOUND => ApiError::NotFound(message),
        StatusCode::METHOD_NOT_ALLOWED => ApiError::MethodNotAllowed,
        StatusCode::REQUEST_TIMEOUT => ApiError::RequestTimeout(message),
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge(message),
        status if status.is_server_error() => ApiError::Internal(anyhow::anyhow!(message)),
        _ => ApiError::BadRequest(message),
    };
    error.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;

    async fn rewritten(response: Response) -> (StatusCode, serde_json::Value) {
        let response = in_api_shape(response).await;
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .expect("body");
        (
            status,
            serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        )
    }

    #[tokio::test]
    async fn plain_text_rejections_take_the_api_error_shape() {
        let rejection = (
            StatusCode::BAD_REQUEST,
            "Invalid URL: Invalid UTF-8 in `integration`",
        )
            .into_response();
        let (status, body) = rewritten(rejection).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"], "bad_request");
        assert_eq!(body["message"], "Invalid URL: Invalid UTF-8 in `integration`");

        let unsupported = (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Form requests must have `Content-Type: application/x-www-form-urlencoded`",
        )
            .into_response();
        let (status, body) = rewritten(unsupported).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("bad_request"))
        );
    }

    #[tokio::test]
    async fn upstream_answers_and_other_responses_are_left_alone() {
        let mut upstream = (StatusCode::BAD_REQUEST, "upstream says no").into_response();
        upstream.extensions_mut().insert(UpstreamAnswer);
        let (status, body) = rewritten(upstream).await;
        assert_eq!((status, body), (StatusCode::BAD_REQUEST, serde_json::Value::Null));

        let page = Response::builder()
            .status(StatusCode::NOT_FOUND)
            .header(header::CONTENT_TYPE, "text/html")
            .body(Body::from("<p>gone</p>"))
            .expect("response");
        let (status, body) = rewritten(page).await;
        assert_eq!((status, body), (StatusCode::NOT_FOUND, serde_json::Value::Null));
    }
}
