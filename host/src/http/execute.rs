//! `POST /v1/{integration}/{endpoint}`: run one connector action for the caller.

use super::extract::{Caller, JsonBody};
use super::{AppState, TransactionKey};
use crate::error::ApiError;
use crate::runtime::bindings::Output;
use crate::runtime::{CallContext, needs_connection};
use crate::vault::connections::ConnectionSelector;
use axum::extract::{Path, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Router};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::borrow::Cow;

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/v1/{integration}/{endpoint}", post(execute))
}

/// The request body: `{"params": {...}, "connection_key"?: "...", "identity"?: "..."}`.
#[derive(Debug, Deserialize)]
struct ExecuteBody {
    params: Option<Box<RawValue>>,
    connection_key: Option<String>,
    identity: Option<String>,
}

/// The reply: the upstream status and body, the body embedded as JSON when it is JSON.
#[derive(Serialize)]
struct ExecuteReply<'a> {
    status: u16,
    data: Data<'a>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Data<'a> {
    Json(&'a RawValue),
    Text(Cow<'a, str>),
    Empty(Option<()>),
}

async fn execute(
    State(app): State<AppState>,
    Extension(TransactionKey(transaction_key)): Extension<TransactionKey>,
    Caller(key): Caller,
    Path((integration, endpoint)): Path<(String, String)>,
    JsonBody(body): JsonBody<ExecuteBody>,
) -> Result<Response, ApiError> {
    let connector = app
        .registry
        .get(&integration)
        .ok_or_else(|| ApiError::NotFound(format!("no integration named `{integration}`")))?;
    if connector.manifest.endpoint(&endpoint).is_none() {
        return Err(ApiError::NotFound(format!(
            "integration `{integration}` has no endpoint named `{endpoint}`"
        )));
    }
    if !key.scope.allows(&integration) {
        return Err(ApiError::ScopeNotAllowed(integration));
    }
    let params = body
        .params
        .ok_or_else(|| ApiError::BadRequest("`params` is required (use {} for none)".into()))?;
    if !params.get().trim_start().starts_with('{') {
        return Err(ApiError::BadRequest("`params` must be a JSON object".into()));
    }

    let mut context = CallContext {
        transaction_key,
        ..CallContext::default()
    };
    if needs_connection(&connector.manifest) {
        let selector = ConnectionSelector {
            connection_key: body.connection_key,
            identity: body.identity,
        };
        let explicit = selector.connection_key.is_some() || selector.identity.is_some();
        let (platform, environment) = (integration.clone(), key.environment);
        let (connection, credential) = app
            .vault
            .run(move |vault| {
                let mut found = vault.find_connections(&platform, environment, &selector)?;
                if found.len() > 1 && !explicit {
                    return Ok(Err(found.into_iter().map(|c| c.key).collect::<Vec<_>>()));
                }
                let Some(connection) = found.pop() else {
                    return Ok(Ok(None));
                };
                let credential = vault.credential(&connection)?;
                Ok(Ok(Some((connection, credential))))
            })
            .await?
            .map_err(|candidates| {
                ApiError::BadRequest(format!(
                    "several {integration} connections match; pass `connection_key` (one of: {})",
                    candidates.join(", ")
                ))
            })?
            .ok_or_else(|| ApiError::IntegrationNotConnected {
                action_url: format!("{}/connect/{integration}", app.public_url),
                integration: integration.clone(),
            })?;
        tracing::debug!(connection = %connection.key, "connection selected");
        context.credential = Some(credential);
        context.base_url_override = connection.base_url;
    }

    let output = app
        .runtime
        .invoke(&connector, &endpoint, params.get(), context)
        .await?;
    Ok(reply(&output))
}

/// Render `{"status", "data"}` without re-parsing JSON bodies into trees.
fn reply(output: &Output) -> Response {
    let is_json = output.content_type.as_deref().is_some_and(|ct| {
        let media = ct.split(';').next().unwrap_or("").trim();
        media.eq_ignore_ascii_case("application/json") || media.ends_with("+json")
    });
    let raw: Option<&RawValue> = if is_json {
        serde_json::from_slice(&output.body).ok()
    } else {
        None
    };
    let data = match raw {
        Some(raw) => Data::Json(raw),
        None if output.body.is_empty() => Data::Empty(None),
        None => Data::Text(String::from_utf8_lossy(&output.body)),
    };
    let reply = ExecuteReply {
        status: output.status,
        data,
    };
    match serde_json::to_vec(&reply) {
        Ok(bytes) => ([(CONTENT_TYPE, "application/json")], bytes).into_response(),
        Err(error) => ApiError::Internal(error.into()).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(empty, serde_json::json!({"status": 201, "data": null}));
    }
}
