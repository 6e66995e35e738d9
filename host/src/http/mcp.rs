//! `POST /mcp`: the Model Context Protocol over its streamable HTTP transport, so AI agents can
//! use every action the API key may reach as a tool. Requests are answered with single JSON
//! responses (no server-initiated stream: `GET /mcp` is 405, which clients accept).
//!
//! Methods: `initialize`, `notifications/*` (accepted), `ping`, `tools/list`, `tools/call`.
//! A tool call runs exactly the execute path (same validation, limits, logging, connection
//! choice — from `?identity=` / `?connection_key=` on the server URL); its reply is the tool
//! result, with `isError` set for gateway and upstream errors.

use super::extract::{Caller, WholeBody};
use super::{AppState, TransactionKey};
use crate::error::ApiError;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Json, Router};
use serde_json::{Value, json};

/// Protocol versions this server speaks, newest first.
const PROTOCOL_VERSIONS: &[&str] = &["2025-06-18", "2025-03-26", "2024-11-05"];

pub(super) fn router() -> Router<AppState> {
    // Other methods get the API's JSON 405 (with `Allow: POST`), which MCP clients take as
    // "no server-initiated stream, no session to delete".
    Router::new().route("/mcp", post(handle))
}

fn rpc_result(id: &Value, result: Value) -> Response {
    Json(json!({"jsonrpc": "2.0", "id": id, "result": result})).into_response()
}

fn rpc_error(id: &Value, code: i64, message: &str) -> Response {
    Json(json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})).into_response()
}

/// Which connection tool calls use, from the server URL's query (`/mcp?identity=alice`): an
/// agent acting for one user is configured with that user's URL, as the tools themselves only
/// take the action's parameters.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ConnectionChoice {
    identity: Option<String>,
    #[serde(alias = "connectionKey")]
    connection_key: Option<String>,
}

async fn handle(
    State(app): State<AppState>,
    Extension(transaction_key): Extension<TransactionKey>,
    caller: Result<Caller, ApiError>,
    choice: Result<Query<ConnectionChoice>, QueryRejection>,
    body: Result<WholeBody, ApiError>,
) -> Response {
    let Query(choice) = match choice {
        Ok(choice) => choice,
        Err(rejection) => {
            return ApiError::BadRequest(format!("the /mcp query: {}", rejection.body_text()))
                .into_response();
        }
    };
    let (Caller(key), WholeBody(body)) = match (caller, body) {
        (Ok(caller), Ok(body)) => (caller, body),
        (Err(error), _) | (_, Err(error)) => return error.into_response(),
    };
    let message: Value = match serde_json::from_slice(&body) {
        Ok(message) => message,
        Err(error) => return rpc_error(&Value::Null, -32700, &format!("parse error: {error}")),
    };
    if message.is_array() {
        return rpc_error(&Value::Null, -32600, "batches are not supported");
    }
    let id = message.get("id").cloned();
    let (Some(method), Some("2.0")) = (message["method"].as_str(), message["jsonrpc"].as_str()) else {
        return rpc_error(
            id.as_ref().unwrap_or(&Value::Null),
            -32600,
            "invalid request: a JSON-RPC 2.0 message needs `\"jsonrpc\": \"2.0\"` and a `method`",
        );
    };
    let Some(id) = id else {
        // A notification (`notifications/initialized`, `notifications/cancelled`, …).
        return StatusCode::ACCEPTED.into_response();
    };
    let params = &message["params"];
    match method {
        "initialize" => {
            let requested = params["protocolVersion"].as_str().unwrap_or_default();
            let version = PROTOCOL_VERSIONS
                .iter()
                .find(|v| **v == requested)
                .unwrap_or(&PROTOCOL_VERSIONS[0]);
            rpc_result(
                &id,
                json!({
                    "protocolVersion": version,
                    "capabilities": {"tools": {"listChanged": false}},
                    "serverInfo": {"name": "sluice", "version": env!("CARGO_PKG_VERSION")},
                    "instructions": "Each tool runs one action of a connected API through the Sluice gateway.",
                }),
            )
        }
        "ping" => rpc_result(&id, json!({})),
        "tools/list" => {
            let tools = super::catalog::tool_definitions(&app, |id| key.scope.allows(id), "mcp");
            rpc_result(&id, json!({"tools": tools}))
        }
        "tools/call" => {
            let name = params["name"].as_str().unwrap_or_default();
            let Some((connector, endpoint)) =
                super::catalog::find_tool(&app, name, |id| key.scope.allows(id))
            else {
                return rpc_error(&id, -32602, &format!("unknown tool `{name}`"));
            };
            let integration = connector.manifest.id.as_str();
            let arguments = match &params["arguments"] {
                Value::Null => json!({}),
                other => other.clone(),
            };
            let body = json!({
                "params": arguments,
                "identity": choice.identity,
                "connection_key": choice.connection_key,
            });
            let reply =
                super::execute::execute_for(&app, transaction_key, key, integration, &endpoint, body).await;
            let (status, text) = reply;
            let is_error = status != StatusCode::OK
                || serde_json::from_str::<Value>(&text)
                    .ok()
                    .and_then(|v| v["status"].as_u64())
                    .is_some_and(|upstream| upstream >= 400);
            rpc_result(
                &id,
                json!({"content": [{"type": "text", "text": text}], "isError": is_error}),
            )
        }
        other => rpc_error(&id, -32601, &format!("method `{other}` not found")),
    }
}
