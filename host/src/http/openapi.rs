//! `GET /openapi.json`: an OpenAPI 3.1 description of the gateway's own API, generated from
//! the route table below, plus one operation per loaded action (`POST /v1/github/get_repo`)
//! whose request body carries that action's params schema, so a client generator or an agent
//! sees every action's input. A test requests every listed route through the real router, so
//! an entry that stops matching a route fails the build.

use super::AppState;
use crate::runtime::manifest::{EndpointInfo, Manifest};
use axum::Json;
use axum::extract::State;
use serde_json::{Map, Value, json};

/// One documented operation.
pub struct Operation {
    /// HTTP method, lower case.
    pub method: &'static str,
    /// Path template in OpenAPI syntax.
    pub path: &'static str,
    /// Group.
    pub tag: &'static str,
    /// One line.
    pub summary: &'static str,
    /// Whether it takes the caller's API key (`admin` for the admin key, `none` for neither).
    pub auth: &'static str,
}

macro_rules! op {
    ($method:literal, $path:literal, $tag:literal, $auth:literal, $summary:literal) => {
        Operation {
            method: $method,
            path: $path,
            tag: $tag,
            summary: $summary,
            auth: $auth,
        }
    };
}

/// Every route of the API.
pub const OPERATIONS: &[Operation] = &[
    op!(
        "post",
        "/v1/{integration}/{endpoint}",
        "execute",
        "key",
        "Run an action: `{\"params\": {...}}` → `{\"status\", \"data\"}`"
    ),
    op!(
        "get",
        "/v1/{integration}/{endpoint}",
        "catalog",
        "key",
        "Knowledge of an action (docs route)"
    ),
    op!(
        "get",
        "/v1/available-connectors",
        "catalog",
        "key",
        "Loaded connectors, filtered and paginated"
    ),
    op!(
        "get",
        "/v1/available-actions/{platform}",
        "catalog",
        "key",
        "Actions of a connector"
    ),
    op!(
        "get",
        "/v1/actions/{actionId}/knowledge",
        "catalog",
        "key",
        "Everything needed to call an action"
    ),
    op!(
        "get",
        "/v1/tools",
        "catalog",
        "key",
        "Actions as LLM tool definitions (openai, anthropic, mcp)"
    ),
    op!("get", "/v1/vault/connections", "vault", "key", "List connections"),
    op!(
        "post",
        "/v1/vault/connections",
        "vault",
        "key",
        "Create a connection (secrets are write-only)"
    ),
    op!(
        "get",
        "/v1/vault/connections/{id}",
        "vault",
        "key",
        "Read a connection"
    ),
    op!(
        "patch",
        "/v1/vault/connections/{id}",
        "vault",
        "key",
        "Change a connection"
    ),
    op!(
        "delete",
        "/v1/vault/connections/{id}",
        "vault",
        "key",
        "Delete a connection"
    ),
    op!(
        "get",
        "/v1/passthrough/{path}",
        "passthrough",
        "key",
        "Raw call on the connection's platform (any method)"
    ),
    op!(
        "post",
        "/mcp",
        "mcp",
        "key",
        "Model Context Protocol (streamable HTTP)"
    ),
    op!(
        "get",
        "/v1/logs",
        "operations",
        "key",
        "Request log of the key's environment"
    ),
    op!("get", "/v1/admin/keys", "admin", "admin", "List API keys"),
    op!(
        "post",
        "/v1/admin/keys",
        "admin",
        "admin",
        "Create an API key (shown once)"
    ),
    op!(
        "delete",
        "/v1/admin/keys/{id}",
        "admin",
        "admin",
        "Revoke an API key"
    ),
    op!(
        "get",
        "/v1/plugins",
        "operations",
        "none",
        "Loaded connectors, versions, hashes, load errors"
    ),
    op!("get", "/healthz", "operations", "none", "Liveness"),
    op!(
        "get",
        "/readyz",
        "operations",
        "none",
        "Readiness: database writable"
    ),
    op!(
        "post",
        "/v1/connect",
        "connect",
        "key",
        "Open a connect session for an identity and integration; returns its URL"
    ),
    op!(
        "get",
        "/v1/connect/{id}",
        "connect",
        "key",
        "A connect session's status: pending, connected, failed or expired"
    ),
    op!(
        "get",
        "/connect/{token}",
        "connect",
        "none",
        "The end-user connect page (HTML)"
    ),
    op!(
        "post",
        "/connect/{token}",
        "connect",
        "none",
        "Submit API-key or basic-auth credentials from the connect page"
    ),
    op!(
        "get",
        "/connect/{token}/authorize",
        "connect",
        "none",
        "Start the OAuth authorization-code flow (PKCE) at the provider"
    ),
    op!(
        "get",
        "/connect/oauth/callback",
        "connect",
        "none",
        "Where the OAuth provider sends the user back"
    ),
    op!("get", "/v1/admin/oauth-apps", "admin", "admin", "List OAuth apps"),
    op!(
        "get",
        "/v1/admin/oauth-apps/{integration}",
        "admin",
        "admin",
        "An integration's OAuth app (without its secret)"
    ),
    op!(
        "put",
        "/v1/admin/oauth-apps/{integration}",
        "admin",
        "admin",
        "Register or replace an integration's OAuth app"
    ),
    op!(
        "delete",
        "/v1/admin/oauth-apps/{integration}",
        "admin",
        "admin",
        "Remove an integration's OAuth app"
    ),
    op!("get", "/metrics", "operations", "none", "Prometheus metrics"),
    op!("get", "/openapi.json", "operations", "none", "This document"),
];

/// Operations that answer `201 Created` on success.
const CREATING: &[(&str, &str)] = &[
    ("post", "/v1/vault/connections"),
    ("post", "/v1/admin/keys"),
    ("post", "/v1/connect"),
];

/// The body of an execute call, around the action's own params schema.
fn execute_request(params_schema: Value) -> Value {
    json!({
        "type": "object",
        "required": ["params"],
        "additionalProperties": false,
        "properties": {
            "params": params_schema,
            "connection_key": {"type": "string", "description": "The connection to use (also `connectionKey`)"},
            "identity": {"type": "string", "description": "Use this identity's connection"}
        }
    })
}

/// The OpenAPI document of the gateway's own routes.
pub fn document() -> Value {
    let mut paths = Map::new();
    for operation in OPERATIONS {
        let parameters: Vec<Value> = operation
            .path
            .split('/')
            .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let security = match operation.auth {
            "key" => json!([{"apiKey": []}, {"picaSecret": []}]),
            "admin" => json!([{"adminKey": []}]),
            _ => json!([]),
        };
        let entry = paths
            .entry(operation.path.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        let success = if CREATING.contains(&(operation.method, operation.path)) {
            "201"
        } else {
            "200"
        };
        entry[operation.method] = json!({
            "tags": [operation.tag],
            "summary": operation.summary,
            "parameters": parameters,
            "security": security,
            "responses": {
                success: {"description": "Success"},
                "default": {"description": "Error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
            }
        });
    }
    // The generic execute route: any action's params.
    if let Some(execute) = paths
        .get_mut("/v1/{integration}/{endpoint}")
        .and_then(|operations| operations.get_mut("post"))
    {
        execute["requestBody"] = json!({
            "required": true,
            "content": {"application/json": {"schema": execute_request(json!({"type": "object"}))}}
        });
        execute["responses"]["200"] = execute_reply();
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Sluice gateway", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {
            "securitySchemes": {
                "apiKey": {"type": "http", "scheme": "bearer", "description": "sk_test_… or sk_live_…"},
                "picaSecret": {"type": "apiKey", "in": "header", "name": "x-pica-secret"},
                "adminKey": {"type": "http", "scheme": "bearer", "description": "SLUICE_ADMIN_KEY"}
            },
            "schemas": {
                "ExecuteReply": {
                    "type": "object",
                    "required": ["status", "data"],
                    "properties": {
                        "status": {"type": "integer", "description": "The upstream's HTTP status"},
                        "data": {"description": "The upstream's body: JSON as is, other text as a string, null when empty"}
                    }
                },
                "Error": {
                    "type": "object",
                    "required": ["error", "message"],
                    "properties": {
                        "error": {"type": "string", "description": "Stable error code"},
                        "message": {"type": "string"},
                        "action_url": {"type": "string"},
                        "details": {"type": "array", "items": {"type": "object"}}
                    }
                }
            }
        }
    })
}

fn execute_reply() -> Value {
    json!({
        "description": "The upstream's answer (upstream errors are answers too: see `status`)",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ExecuteReply"}}}
    })
}

/// `POST /v1/{connector}/{action}` of one loaded action.
fn action_operation(manifest: &Manifest, endpoint: &EndpointInfo) -> Value {
    let examples: Map<String, Value> = endpoint
        .examples
        .iter()
        .enumerate()
        .map(|(i, (title, params))| {
            (
                format!("example{}", i + 1),
                json!({"summary": title, "value": {"params": params}}),
            )
        })
        .collect();
    let mut content = json!({"schema": execute_request(endpoint.params_schema.clone())});
    if !examples.is_empty() {
        content["examples"] = Value::Object(examples);
    }
    json!({
        "operationId": format!("{}__{}", manifest.id, endpoint.name),
        "tags": [manifest.name],
        "summary": endpoint.title,
        "description": endpoint.description,
        "security": [{"apiKey": []}, {"picaSecret": []}],
        "requestBody": {"required": true, "content": {"application/json": content}},
        "responses": {
            "200": execute_reply(),
            "default": {"description": "Error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
        }
    })
}

/// `GET /openapi.json`: the gateway's routes and every loaded action (connectors come and go
/// with hot reload, so the document is built per request).
pub async fn serve(State(app): State<AppState>) -> Json<Value> {
    let mut document = document();
    for connector in app.registry.snapshot().values() {
        for endpoint in &connector.manifest.endpoints {
            let path = format!("/v1/{}/{}", connector.manifest.id, endpoint.name);
            document["paths"][path] = json!({"post": action_operation(&connector.manifest, endpoint)});
        }
    }
    Json(document)
}
