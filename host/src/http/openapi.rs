//! `GET /openapi.json`: an OpenAPI 3.1 document of the gateway's own API, generated from the
//! route table below, plus one operation per loaded action (`POST /v1/github/get_repo`)
//! whose request body carries that action's params schema, so a client generator or an agent
//! sees every action's input.
//!
//! Each route says what body it takes, what it answers and which parameters it reads; the
//! schemas live once in `components` ([`schemas`], [`params`]) and are referenced. The tests
//! beside this file send bodies to the real router and hold the documented schemas to what the
//! handlers accept and answer, and an end-to-end test requests every listed route, so an entry
//! that stops matching its route fails the build.

pub mod params;
pub mod schemas;
#[cfg(test)]
mod tests;

use super::AppState;
use crate::runtime::manifest::{EndpointInfo, Manifest};
use axum::extract::State;
use params::Param;
use schemas::reference;
use serde_json::{Map, Value, json};

/// One documented operation.
#[derive(Debug)]
pub struct Operation {
    /// `operationId`: what generated clients name their method (unique, stable).
    pub id: &'static str,
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
    /// What it takes in the body.
    pub body: Option<Body>,
    /// What it answers when it succeeds.
    pub reply: Reply,
    /// The query and header parameters it reads.
    pub params: &'static [Param],
}

/// A request body.
#[derive(Debug, Clone, Copy)]
pub enum Body {
    /// JSON matching this schema of `components/schemas`.
    Json(&'static str),
    /// A form post (`application/x-www-form-urlencoded`) with these fields.
    Form(&'static str),
    /// Anything: passed on to the upstream as it is.
    Any,
}

/// A success reply.
#[derive(Debug, Clone, Copy)]
pub enum Reply {
    /// JSON: the status and the schema of `components/schemas`.
    Json(&'static str, &'static str),
    /// JSON of this schema: `201` for a new resource, `200` for one `replace` updated.
    CreatedOrReplaced(&'static str),
    /// A JSON-RPC response, or `202` without a body for a notification.
    JsonRpc,
    /// An HTML page (errors are pages too).
    Page,
    /// A `303` redirect (errors are pages).
    Redirect,
    /// Text of this content type.
    Text(&'static str),
    /// Whatever the upstream answered.
    Upstream,
}

/// An entry of the table: operation `id` is `method` `path` in group `tag`, with `auth`,
/// answering `reply`.
const fn op(
    id: &'static str,
    method: &'static str,
    path: &'static str,
    tag: &'static str,
    auth: &'static str,
    summary: &'static str,
    reply: Reply,
) -> Operation {
    Operation {
        id,
        method,
        path,
        tag,
        summary,
        auth,
        body: None,
        reply,
        params: &[],
    }
}

impl Operation {
    /// This operation, taking `body`.
    const fn body(self, body: Body) -> Self {
        Self {
            body: Some(body),
            ..self
        }
    }

    /// This operation, reading `params`.
    const fn params(self, params: &'static [Param]) -> Self {
        Self { params, ..self }
    }
}

/// Every route of the API.
pub const OPERATIONS: &[Operation] = &[
    op(
        "executeAction",
        "post",
        "/v1/{integration}/{endpoint}",
        "execute",
        "key",
        "Run an action: `{\"params\": {...}}` → `{\"status\", \"data\"}`",
        Reply::Json("200", "ExecuteReply"),
    )
    .body(Body::Json("ExecuteRequest"))
    .params(params::EXECUTE),
    op(
        "getActionDocs",
        "get",
        "/v1/{integration}/{endpoint}",
        "catalog",
        "key",
        "Knowledge of an action (docs route)",
        Reply::Json("200", "ActionKnowledge"),
    ),
    op(
        "listConnectors",
        "get",
        "/v1/available-connectors",
        "catalog",
        "key",
        "Loaded connectors, filtered and paginated",
        Reply::Json("200", "ConnectorPage"),
    )
    .params(params::CONNECTOR_FILTERS),
    op(
        "listActions",
        "get",
        "/v1/available-actions/{platform}",
        "catalog",
        "key",
        "Actions of a connector",
        Reply::Json("200", "ActionPage"),
    )
    .params(params::ACTION_FILTERS),
    op(
        "getActionKnowledge",
        "get",
        "/v1/actions/{actionId}/knowledge",
        "catalog",
        "key",
        "Everything needed to call an action",
        Reply::Json("200", "ActionKnowledge"),
    ),
    op(
        "listTools",
        "get",
        "/v1/tools",
        "catalog",
        "key",
        "Actions as LLM tool definitions (openai, anthropic, mcp)",
        Reply::Json("200", "ToolList"),
    )
    .params(params::TOOL_FORMAT),
    op(
        "listConnections",
        "get",
        "/v1/vault/connections",
        "vault",
        "key",
        "List connections",
        Reply::Json("200", "ConnectionPage"),
    )
    .params(params::CONNECTION_FILTERS),
    op(
        "createConnection",
        "post",
        "/v1/vault/connections",
        "vault",
        "key",
        "Create a connection (secrets are write-only), or with `replace` store the secret in the owner's",
        Reply::CreatedOrReplaced("Connection"),
    )
    .body(Body::Json("ConnectionCreate")),
    op(
        "getConnection",
        "get",
        "/v1/vault/connections/{id}",
        "vault",
        "key",
        "Read a connection (by id or key)",
        Reply::Json("200", "Connection"),
    ),
    op(
        "updateConnection",
        "patch",
        "/v1/vault/connections/{id}",
        "vault",
        "key",
        "Change a connection",
        Reply::Json("200", "Connection"),
    )
    .body(Body::Json("ConnectionUpdate")),
    op(
        "deleteConnection",
        "delete",
        "/v1/vault/connections/{id}",
        "vault",
        "key",
        "Delete a connection",
        Reply::Json("200", "ConnectionDeleted"),
    ),
    op(
        "passthrough",
        "get",
        "/v1/passthrough/{path}",
        "passthrough",
        "key",
        "Raw call on the connection's platform (any method)",
        Reply::Upstream,
    )
    .body(Body::Any)
    .params(params::PASSTHROUGH_CONNECTION),
    op(
        "mcpMessage",
        "post",
        "/mcp",
        "mcp",
        "key",
        "Model Context Protocol (streamable HTTP)",
        Reply::JsonRpc,
    )
    .body(Body::Json("JsonRpcRequest"))
    .params(params::MCP_CONNECTION),
    op(
        "mcpEvents",
        "get",
        "/mcp",
        "mcp",
        "key",
        "MCP event stream: `notifications/tools/list_changed` after a hot reload",
        Reply::Text("text/event-stream"),
    ),
    op(
        "listLogs",
        "get",
        "/v1/logs",
        "operations",
        "key",
        "Request log of the key's environment",
        Reply::Json("200", "LogPage"),
    )
    .params(params::LOG_FILTERS),
    op(
        "listApiKeys",
        "get",
        "/v1/admin/keys",
        "admin",
        "admin",
        "List API keys",
        Reply::Json("200", "ApiKeyList"),
    ),
    op(
        "createApiKey",
        "post",
        "/v1/admin/keys",
        "admin",
        "admin",
        "Create an API key (shown once)",
        Reply::Json("201", "ApiKeyCreated"),
    )
    .body(Body::Json("ApiKeyCreate")),
    op(
        "revokeApiKey",
        "delete",
        "/v1/admin/keys/{id}",
        "admin",
        "admin",
        "Revoke an API key",
        Reply::Json("200", "ApiKeyRevoked"),
    ),
    op(
        "listPlugins",
        "get",
        "/v1/plugins",
        "operations",
        "none",
        "Loaded connectors, versions, hashes, load errors",
        Reply::Json("200", "PluginList"),
    ),
    op(
        "liveness",
        "get",
        "/healthz",
        "operations",
        "none",
        "Liveness",
        Reply::Json("200", "Health"),
    ),
    op(
        "readiness",
        "get",
        "/readyz",
        "operations",
        "none",
        "Readiness: database writable (503 otherwise)",
        Reply::Json("200", "Readiness"),
    ),
    op(
        "createConnectSession",
        "post",
        "/v1/connect",
        "connect",
        "key",
        "Open a connect session for an identity and integration; returns its URL",
        Reply::Json("201", "ConnectSessionCreated"),
    )
    .body(Body::Json("ConnectSessionCreate")),
    op(
        "getConnectSession",
        "get",
        "/v1/connect/{id}",
        "connect",
        "key",
        "A connect session's status: pending, connected, failed or expired",
        Reply::Json("200", "ConnectSession"),
    ),
    op(
        "cancelConnectSession",
        "delete",
        "/v1/connect/{id}",
        "connect",
        "key",
        "Cancel a pending connect session (it then reads failed, errorCode cancelled); an ended one is returned as it is",
        Reply::Json("200", "ConnectSession"),
    ),
    op(
        "connectPage",
        "get",
        "/connect/{token}",
        "connect",
        "none",
        "The end-user connect page (HTML)",
        Reply::Page,
    ),
    op(
        "submitConnectForm",
        "post",
        "/connect/{token}",
        "connect",
        "none",
        "Submit API-key or basic-auth credentials from the connect page",
        Reply::Page,
    )
    .body(Body::Form("ConnectForm")),
    op(
        "startConnectAuthorization",
        "get",
        "/connect/{token}/authorize",
        "connect",
        "none",
        "Start the OAuth authorization-code flow (PKCE) at the provider",
        Reply::Redirect,
    ),
    op(
        "connectOAuthCallback",
        "get",
        "/connect/oauth/callback",
        "connect",
        "none",
        "Where the OAuth provider sends the user back",
        Reply::Page,
    )
    .params(params::OAUTH_CALLBACK),
    op(
        "listOAuthApps",
        "get",
        "/v1/admin/oauth-apps",
        "admin",
        "admin",
        "List OAuth apps",
        Reply::Json("200", "OAuthAppList"),
    ),
    op(
        "getOAuthApp",
        "get",
        "/v1/admin/oauth-apps/{integration}",
        "admin",
        "admin",
        "An integration's OAuth app (without its secret)",
        Reply::Json("200", "OAuthApp"),
    ),
    op(
        "putOAuthApp",
        "put",
        "/v1/admin/oauth-apps/{integration}",
        "admin",
        "admin",
        "Register or replace an integration's OAuth app",
        Reply::Json("200", "OAuthApp"),
    )
    .body(Body::Json("OAuthAppPut")),
    op(
        "deleteOAuthApp",
        "delete",
        "/v1/admin/oauth-apps/{integration}",
        "admin",
        "admin",
        "Remove an integration's OAuth app",
        Reply::Json("200", "OAuthAppDeleted"),
    ),
    op(
        "metrics",
        "get",
        "/metrics",
        "operations",
        "none",
        "Prometheus metrics",
        Reply::Text("application/openmetrics-text"),
    ),
    op(
        "openApiDocument",
        "get",
        "/openapi.json",
        "operations",
        "none",
        "This document",
        Reply::Json("200", "OpenApiDocument"),
    ),
];

/// `content` of a JSON body or reply with `schema`.
fn json_content(schema: Value) -> Value {
    json!({"application/json": {"schema": schema}})
}

/// Headers every API answer carries, and those an execute call's carry under a per-minute
/// limit (`components/headers`).
fn answer_headers() -> Value {
    let header = |name: &str| json!({"$ref": format!("#/components/headers/{name}")});
    json!({
        "x-transaction-key": header("TransactionKey"),
        "x-request-id": header("RequestId"),
        "x-ratelimit-limit": header("RateLimitLimit"),
        "x-ratelimit-remaining": header("RateLimitRemaining"),
        "x-ratelimit-reset": header("RateLimitReset")
    })
}

/// `components/headers`.
fn headers() -> Value {
    let integer =
        |description: &str| json!({"description": description, "schema": {"type": "integer", "minimum": 0}});
    json!({
        "TransactionKey": {
            "description": "This request's transaction key (`txn_…`), also in its request-log row and log lines",
            "schema": {"type": "string"}
        },
        "RequestId": {
            "description": "The caller's own `X-Request-Id`, sent back when it is 1 to 128 visible ASCII characters (then also in the request-log row, as `requestId`, and the gateway's log lines); one of another shape is ignored",
            "schema": {"type": "string"}
        },
        "RateLimitLimit": integer("Calls per minute the key may make (execute calls of keys with a per-minute limit)"),
        "RateLimitRemaining": integer("Calls left in the current minute"),
        "RateLimitReset": integer("Seconds until the minute's window resets"),
        "RetryAfter": integer("Seconds to wait before trying again (429, 503)")
    })
}

/// The API's error answer, `components/responses/Error`.
fn error_reply() -> Value {
    json!({"$ref": "#/components/responses/Error"})
}

/// What an HTML route answers when something is wrong.
fn error_page() -> Value {
    json!({"description": "A page saying what went wrong", "content": {"text/html": {"schema": {"type": "string"}}}})
}

fn request_body(body: Body) -> Value {
    match body {
        Body::Json(schema) => json!({"required": true, "content": json_content(reference(schema))}),
        Body::Form(schema) => json!({
            "required": true,
            "content": {"application/x-www-form-urlencoded": {"schema": reference(schema)}}
        }),
        Body::Any => json!({
            "description": "Sent to the upstream as it is, streamed",
            "content": {"*/*": {"schema": {}}}
        }),
    }
}

fn responses(reply: Reply) -> Value {
    let api_errors = |mut responses: Value| {
        responses["4XX"] = error_reply();
        responses["5XX"] = error_reply();
        responses
    };
    match reply {
        Reply::Json(status, schema) => api_errors(json!({
            status: {
                "description": "Success",
                "headers": answer_headers(),
                "content": json_content(reference(schema))
            }
        })),
        Reply::CreatedOrReplaced(schema) => api_errors(json!({
            "201": {
                "description": "Created",
                "headers": answer_headers(),
                "content": json_content(reference(schema))
            },
            "200": {
                "description": "With `replace`: the existing one, updated",
                "headers": answer_headers(),
                "content": json_content(reference(schema))
            }
        })),
        Reply::JsonRpc => api_errors(json!({
            "200": {
                "description": "The JSON-RPC response (errors included)",
                "headers": answer_headers(),
                "content": json_content(reference("JsonRpcResponse"))
            },
            "202": {"description": "A notification was accepted", "headers": answer_headers()}
        })),
        Reply::Page => json!({
            "200": {"description": "The page", "content": {"text/html": {"schema": {"type": "string"}}}},
            "default": error_page()
        }),
        Reply::Redirect => json!({
            "303": {"description": "To the provider's consent page", "headers": {"Location": {"schema": {"type": "string"}}}},
            "default": error_page()
        }),
        // (`GET /mcp` refuses a wrong key or version as every route does.)
        Reply::Text(content_type) => api_errors(json!({
            "200": {"description": "Success", "content": {content_type: {"schema": {"type": "string"}}}}
        })),
        Reply::Upstream => json!({
            "default": {
                "description": "The upstream's answer: its status, body and safe headers (each also as \
                    `x-sluice-passthrough-<name>`), with `x-sluice-action-url` and `x-sluice-connect-session-id` \
                    when it refused a connection that has failed; the gateway's own refusals take the shape of `Error`",
                "content": {"*/*": {"schema": {}}}
            }
        }),
    }
}

/// The operation object of `operation`.
fn operation_object(operation: &Operation) -> Value {
    let mut parameters: Vec<Value> = operation
        .path
        .split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
        .collect();
    parameters.extend(operation.params.iter().map(params::render));
    let security = match operation.auth {
        "key" => json!([{"apiKey": []}, {"picaSecret": []}]),
        "admin" => json!([{"adminKey": []}]),
        _ => json!([]),
    };
    let mut object = json!({
        "operationId": operation.id,
        "tags": [operation.tag],
        "summary": operation.summary,
        "parameters": parameters,
        "security": security,
        "responses": responses(operation.reply),
    });
    if let Some(body) = operation.body {
        object["requestBody"] = request_body(body);
    }
    object
}

/// The methods passthrough forwards, as OpenAPI names them.
const FORWARDED_METHODS: [&str; 6] = ["get", "post", "put", "patch", "delete", "head"];

/// The OpenAPI document of the gateway's own routes.
pub fn document() -> Value {
    let mut paths = Map::new();
    for operation in OPERATIONS {
        let entry = paths
            .entry(operation.path.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        // A route answering with whatever the upstream says (passthrough) forwards every
        // method; the table holds it once.
        let methods = match operation.reply {
            Reply::Upstream => &FORWARDED_METHODS[..],
            _ => std::slice::from_ref(&operation.method),
        };
        for method in methods {
            let mut object = operation_object(operation);
            if methods.len() > 1 {
                // One id per operation: `passthroughGet`, `passthroughPost`, …
                let (first, rest) = method.split_at(1);
                object["operationId"] = json!(format!("{}{}{rest}", operation.id, first.to_uppercase()));
            }
            entry[*method] = object;
        }
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
            "schemas": schemas::all(),
            "parameters": params::shared(),
            "headers": headers(),
            "responses": {
                "Error": {
                    "description": "Error: `{\"error\": code, \"message\", \"action_url\"?}`",
                    "headers": {
                        "x-transaction-key": {"$ref": "#/components/headers/TransactionKey"},
                        "x-request-id": {"$ref": "#/components/headers/RequestId"},
                        "retry-after": {"$ref": "#/components/headers/RetryAfter"},
                        "x-ratelimit-limit": {"$ref": "#/components/headers/RateLimitLimit"},
                        "x-ratelimit-remaining": {"$ref": "#/components/headers/RateLimitRemaining"},
                        "x-ratelimit-reset": {"$ref": "#/components/headers/RateLimitReset"}
                    },
                    "content": json_content(reference("Error"))
                }
            }
        }
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
    // Embedded under the operation, the schema's own `#/$defs/…` would point into this
    // document's root: each local reference is made to point where the schema now is.
    let path = format!("/v1/{}/{}", manifest.id, endpoint.name);
    let embedded_at = format!(
        "#/paths/{}/post/requestBody/content/application~1json/schema/properties/params",
        pointer_token(&path)
    );
    let mut params_schema = endpoint.params_schema.clone();
    rebase_local_refs(&mut params_schema, &embedded_at);
    let mut content = json!({"schema": schemas::execute_request(params_schema)});
    if !examples.is_empty() {
        content["examples"] = Value::Object(examples);
    }
    json!({
        "operationId": format!("{}__{}", manifest.id, endpoint.name),
        "tags": [manifest.name],
        "summary": endpoint.title,
        "description": endpoint.description,
        "security": [{"apiKey": []}, {"picaSecret": []}],
        "parameters": params::EXECUTE.iter().map(params::render).collect::<Vec<_>>(),
        "requestBody": {"required": true, "content": {"application/json": content}},
        "responses": responses(Reply::Json("200", "ExecuteReply"))
    })
}

/// `text` as one JSON Pointer token (RFC 6901: `~` is `~0`, `/` is `~1`).
fn pointer_token(text: &str) -> String {
    text.replace('~', "~0").replace('/', "~1")
}

/// Make every local `$ref` in `schema` (`#`, `#/$defs/X`) point below `base` (a URI fragment
/// pointer to where `schema` is placed in a larger document). Other references are left alone:
/// the loader accepts only local ones.
fn rebase_local_refs(schema: &mut Value, base: &str) {
    match schema {
        Value::Object(object) => {
            for (name, value) in object.iter_mut() {
                match value {
                    Value::String(reference) if name == "$ref" && reference.starts_with('#') => {
                        *reference = format!("{base}{}", &reference[1..]);
                    }
                    other => rebase_local_refs(other, base),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|item| rebase_local_refs(item, base)),
        _ => {}
    }
}

/// `GET /openapi.json`: the gateway's routes and every loaded action (connectors come and go
/// with hot reload, so the document is built per request).
pub async fn serve(State(app): State<AppState>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let connectors = app.registry.snapshot();
    let rendered = app.openapi.rendered(&connectors, || {
        serde_json::to_vec(&document_with(&connectors))
            .unwrap_or_default()
            .into()
    });
    ([(axum::http::header::CONTENT_TYPE, "application/json")], rendered).into_response()
}

/// The document as last rendered, and the set of loaded connectors it was rendered for. It is
/// rendered again only when that set changes (a load, a reload, a removal): a request for it
/// needs no key, so it must not cost the gateway the work of rendering every action's schema.
#[derive(Debug, Default)]
pub struct Cache {
    last: std::sync::Mutex<Option<(std::sync::Weak<Connectors>, bytes::Bytes)>>,
}

type Connectors = std::collections::BTreeMap<String, std::sync::Arc<crate::runtime::LoadedConnector>>;

impl Cache {
    /// The document for `connectors`: the one rendered last if it was for them, else `render`'s.
    /// (A weak reference keeps replaced connectors from being kept alive by the cache, and
    /// their set's address from being reused while it is held.)
    fn rendered(
        &self,
        connectors: &std::sync::Arc<Connectors>,
        render: impl FnOnce() -> bytes::Bytes,
    ) -> bytes::Bytes {
        let current = std::sync::Arc::downgrade(connectors);
        let lock = || self.last.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((rendered_for, document)) = lock().as_ref()
            && rendered_for.ptr_eq(&current)
        {
            return document.clone();
        }
        // Rendered without the lock: other requests are not held for it (two may render the
        // same document once, after a reload).
        let document = render();
        *lock() = Some((current, document.clone()));
        document
    }
}

/// The whole document: the gateway's routes and one operation per action of `connectors`.
fn document_with(connectors: &Connectors) -> Value {
    let mut document = document();
    // An action's own path takes precedence over the templated one, so it carries the docs
    // route (`GET`) too, without the template's path parameters.
    let mut knowledge = document["paths"]["/v1/{integration}/{endpoint}"]["get"].clone();
    knowledge["parameters"] = json!([]);
    for connector in connectors.values() {
        for endpoint in &connector.manifest.endpoints {
            let path = format!("/v1/{}/{}", connector.manifest.id, endpoint.name);
            let mut docs = knowledge.clone();
            // (Ids are lower case: `getActionDocs__…` is no action's `{id}__{name}`.)
            docs["operationId"] = json!(format!(
                "getActionDocs__{}__{}",
                connector.manifest.id, endpoint.name
            ));
            document["paths"][path] = json!({
                "post": action_operation(&connector.manifest, endpoint),
                "get": docs
            });
        }
    }
    document
}
