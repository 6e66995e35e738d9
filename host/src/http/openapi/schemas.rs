//! `components/schemas`: the request bodies the gateway's own routes accept and the replies
//! they send. A request body schema says what the handler accepts: its serde struct (field
//! names, aliases, `null` for `Option`s, `deny_unknown_fields`) and the checks the handler
//! makes before touching anything (fixed values, lengths, which fields go together). Checks
//! that need the gateway's state (does the integration exist, is a time in the future, may a
//! URL receive the credential) are described, not encoded.
//!
//! Tests in `super::tests` send bodies to the real routes and hold each schema to them.

use crate::vault::api_keys::Environment;
use crate::vault::checks::{IDENTITY_TYPES, MAX_IDENTITY_BYTES, MAX_SECRET_BYTES};
use crate::vault::connect_sessions::{FailureCode, SessionStatus};
use serde_json::{Map, Value, json};

/// A `$ref` to the schema `name` of `components/schemas`.
pub fn reference(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

/// `schema`, also allowing `null` (what serde accepts for an `Option`).
fn or_null(mut schema: Value) -> Value {
    if let Some(kind) = schema.get("type").cloned() {
        let mut kinds = match kind {
            Value::Array(kinds) => kinds,
            one => vec![one],
        };
        kinds.push(json!("null"));
        schema["type"] = Value::Array(kinds);
    }
    if let Some(Value::Array(values)) = schema.get_mut("enum") {
        values.push(Value::Null);
    }
    schema
}

/// An object with these `required` fields and `properties`.
fn object<Name: serde::Serialize>(required: &[Name], properties: Value) -> Value {
    json!({"type": "object", "required": required, "properties": properties})
}

/// An object whose every property is always there (a reply).
fn record(properties: Value) -> Value {
    let required: Vec<String> = properties
        .as_object()
        .map(|properties| properties.keys().cloned().collect())
        .unwrap_or_default();
    object(&required, properties)
}

/// [`object`], refusing fields it does not name (`#[serde(deny_unknown_fields)]`).
fn closed(required: &[&str], properties: Value) -> Value {
    let mut schema = object(required, properties);
    schema["additionalProperties"] = json!(false);
    schema
}

/// `schema` with one more property.
fn with_property(mut schema: Value, name: &str, property: Value, required: bool) -> Value {
    schema["properties"][name] = property;
    if required && let Some(Value::Array(names)) = schema.get_mut("required") {
        names.push(json!(name));
    }
    schema
}

/// `schema`, saying what absence means (`#[serde(default = …)]`).
fn with_default(mut schema: Value, default: Value) -> Value {
    schema["default"] = default;
    schema
}

fn string(description: &str) -> Value {
    json!({"type": "string", "description": description})
}

fn integer(description: &str) -> Value {
    json!({"type": "integer", "description": description})
}

/// A time the API shows: RFC 3339 in UTC.
fn timestamp(description: &str) -> Value {
    json!({"type": "string", "format": "date-time", "description": description})
}

/// A time the API takes: RFC 3339 in UTC or Unix seconds.
fn time_input(description: &str) -> Value {
    json!({
        "type": ["string", "integer"],
        "maximum": crate::http::timestamps::LATEST,
        "description": format!("{description}: a UTC time such as `2030-01-31T12:00:00Z`, or Unix seconds")
    })
}

/// A string that is not blank (`trim()` leaves something).
fn not_blank(description: &str) -> Value {
    json!({"type": "string", "pattern": "\\S", "description": description})
}

fn one_of(values: &[&str], description: &str) -> Value {
    json!({"type": "string", "enum": values, "description": description})
}

fn constant(value: Value) -> Value {
    json!({"const": value})
}

fn strings() -> Value {
    json!({"type": "array", "items": {"type": "string"}})
}

fn environment() -> Value {
    let names: Vec<&str> = Environment::ALL.iter().map(|e| e.as_str()).collect();
    one_of(&names, "`test` or `live`")
}

fn identity_type() -> Value {
    one_of(IDENTITY_TYPES, "The kind of identity")
}

/// `{"rows": [item], "total"}`: a whole list.
fn list_of(item: &str) -> Value {
    record(
        json!({"rows": {"type": "array", "items": reference(item)}, "total": {"type": "integer", "minimum": 0}}),
    )
}

/// `{"rows", "total", "pages", "page"}`: one page of a list ([`crate::http::query::Page`]).
fn page_of(item: &str) -> Value {
    let page = with_property(
        list_of(item),
        "pages",
        json!({"type": "integer", "minimum": 0}),
        true,
    );
    with_property(page, "page", json!({"type": "integer", "minimum": 1}), true)
}

/// Present, and not `null`.
fn given(field: &str) -> Value {
    json!({"required": [field], "properties": {field: {"not": {"type": "null"}}}})
}

/// Absent, or `null` (what serde reads as `None`).
fn not_given(field: &str) -> Value {
    json!({"properties": {field: {"type": "null"}}})
}

fn tags() -> Value {
    json!({
        "type": "array", "maxItems": 32,
        "items": {"type": "string", "minLength": 1, "maxLength": 64},
        "description": "At most 32 tags of 1 to 64 bytes"
    })
}

/// An identity as [`crate::vault::checks::check_identity`] takes it. Never `null`: a caller
/// that meant someone must not get the key owner's connection (`extract::not_null`).
fn identity(description: &str) -> Value {
    json!({
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_IDENTITY_BYTES,
        "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]*$",
        "description": format!("{description}; 1 to {MAX_IDENTITY_BYTES} bytes, no control characters"),
    })
}

fn text(description: &str) -> Value {
    or_null(
        json!({"type": "string", "maxLength": 1024, "description": format!("{description}; at most 1024 bytes")}),
    )
}

fn secret(description: &str) -> Value {
    or_null(json!({
        "type": "string", "pattern": "\\S", "maxLength": MAX_SECRET_BYTES, "writeOnly": true,
        "description": format!("{description}: not blank, at most {} KiB, no control characters (it is sent in an HTTP header)", MAX_SECRET_BYTES >> 10)
    }))
}

fn base_url(description: &str) -> Value {
    or_null(json!({"type": "string", "format": "uri", "description": description}))
}

/// The body of an execute call, around the action's own params schema.
pub fn execute_request(params_schema: Value) -> Value {
    let mut body = closed(
        &["params"],
        json!({
            "params": params_schema,
            "connection_key": string("The connection to use (also `connectionKey`)"),
            "connectionKey": string("The same as `connection_key`"),
            "identity": identity("Use this identity's connection"),
            "identity_type": identity_type(),
            "identityType": identity_type(),
        }),
    );
    // serde takes an alias as the field itself: both spellings at once are a duplicate.
    body["not"] = json!({"anyOf": [
        {"required": ["connection_key", "connectionKey"]},
        {"required": ["identity_type", "identityType"]},
    ]});
    body
}

fn connection_create() -> Value {
    let mut body = closed(
        &["platform"],
        json!({
            "platform": string("The integration: a loaded connector's id"),
            "secret": secret("The API key or token (for basic auth, `user:password`)"),
            "username": or_null(json!({"type": "string", "pattern": "^[^:]*$", "description": "Basic auth, with `password` instead of `secret`"})),
            "password": or_null(string("Basic auth, with `username`")),
            "identity": identity("The end user, team, … the connection belongs to"),
            "identityType": identity_type(),
            "name": text("Display name"),
            "description": text("Description"),
            "tags": tags(),
            "baseUrl": base_url("Where the connector's calls go instead of the integration's own origin (https, and where the operator's policy allows)"),
            "replace": {"type": "boolean", "description": "If the owner (`identity` of `identityType` when given, of any type otherwise; or the key owner without an identity) has an active connection of this integration, store the secret in it (and `baseUrl`, `name`, `description`, `tags` where given) instead of making a second one: `200` with it; several are a 400 `ambiguous_connection`"}
        }),
    );
    body["anyOf"] = json!([
        {"title": "secret", "allOf": [given("secret"), not_given("username"), not_given("password")]},
        {"title": "username and password", "allOf": [given("username"), given("password"), not_given("secret")]}
    ]);
    body
}

fn connection_update() -> Value {
    closed(
        &[],
        json!({
            "name": text("Display name (`null`: unchanged)"),
            "description": text("Description (`null`: unchanged)"),
            "tags": or_null(tags()),
            "active": or_null(json!({"type": "boolean", "description": "Whether calls may use it"})),
            "baseUrl": base_url("A new base URL, which needs `secret` in the same request (the credential goes there); `null` returns to the integration's own"),
            "secret": secret("A new credential")
        }),
    )
}

fn connect_session_create() -> Value {
    let mut body = closed(
        &[],
        json!({
            "integration": string("The integration to connect"),
            "platform": string("The same as `integration`"),
            "identity": identity("Whose account: the connection made belongs to this identity"),
            "identityType": identity_type(),
            "connectionKey": string("Reconnect this existing connection"),
            "baseUrl": base_url("The base URL the connection made gets (shown to the user as where the credential goes)"),
            "returnUrl": {"type": ["string", "null"], "format": "uri", "maxLength": 2048, "description":
                "The app's page the user's browser goes back to when the flow ends (https, or http on localhost), \
                 with `connectSessionId`, `status` and `connectionKey` or `errorCode` and `error` added to its query"}
        }),
    );
    body["oneOf"] = json!([{"required": ["integration"]}, {"required": ["platform"]}]);
    body
}

fn api_key_create() -> Value {
    closed(
        &[],
        json!({
            "environment": with_default(environment(), json!("test")),
            "scope": with_default(json!({"type": "string", "pattern": "[^\\s,]", "description": "`*` or a comma-separated list of integrations"}), json!("*")),
            "name": or_null(string("Label")),
            "expiresAt": or_null(time_input("Expiry, in the future")),
            "dailyQuota": or_null(json!({"type": "integer", "minimum": 1, "maximum": u32::MAX, "description": "Calls per UTC day"})),
            "perMinuteLimit": or_null(json!({"type": "integer", "minimum": 1, "maximum": u32::MAX, "description": "Calls per minute"})),
            "maxInFlight": or_null(json!({"type": "integer", "minimum": 1, "maximum": u32::MAX, "description": "Calls in flight at once (`429 key_busy` beyond); without it the gateway's `--max-in-flight-per-key`, if set"}))
        }),
    )
}

fn oauth_app_put() -> Value {
    let url = |description: &str| {
        or_null(
            json!({"type": "string", "format": "uri", "description": format!("{description}: an absolute http(s) URL")}),
        )
    };
    closed(
        &["clientId", "clientSecret"],
        json!({
            "clientId": not_blank("The app's client id at the provider"),
            "clientSecret": {"type": "string", "pattern": "\\S", "writeOnly": true, "description": "The app's client secret (stored encrypted, never shown)"},
            "redirectUrl": url("Where the provider sends users back (default `<public URL>/connect/oauth/callback`)"),
            "scopes": or_null(json!({
                "type": "array",
                "items": {"type": "string", "pattern": "^[\\x21\\x23-\\x5b\\x5d-\\x7e]+$"},
                "description": "Scopes requested on top of the connector's, one OAuth scope token each"
            })),
            "authorizeUrl": url("Replaces the connector's authorize URL"),
            "tokenUrl": url("Replaces the connector's token URL")
        }),
    )
}

fn connection() -> Value {
    let states = super::params::CONNECTION_STATES;
    record(json!({
        "id": string("Public id"),
        "key": string("Connection key, e.g. `test::github::default::…`"),
        "name": or_null(string("Display name")),
        "description": or_null(string("Description")),
        "platform": string("Integration"),
        "environment": environment(),
        "identity": or_null(string("Owner identity")),
        "identityType": or_null(identity_type()),
        "state": one_of(states, "Health from recent upstream answers"),
        "tags": strings(),
        "active": {"type": "boolean"},
        "baseUrl": or_null(string("Base URL replacing the integration's origin")),
        "createdAt": timestamp("Creation"),
        "updatedAt": timestamp("Last change")
    }))
}

fn api_key() -> Value {
    record(json!({
        "id": integer("Row id"),
        "prefix": string("The visible start of the key, e.g. `sk_test_3f9a`"),
        "name": or_null(string("Label")),
        "environment": environment(),
        "scope": string("`*` or a comma-separated list of integrations"),
        "status": one_of(&["active", "revoked", "expired"], "Whether it works"),
        "createdAt": timestamp("Creation"),
        "revokedAt": or_null(timestamp("Revocation")),
        "expiresAt": or_null(timestamp("Expiry")),
        "dailyQuota": or_null(integer("Calls per UTC day")),
        "perMinuteLimit": or_null(integer("Calls per minute")),
        "maxInFlight": or_null(integer("Calls in flight at once; null for the gateway's default"))
    }))
}

fn oauth_app() -> Value {
    record(json!({
        "integration": string("Integration"),
        "clientId": string("Client id"),
        "redirectUrl": or_null(string("Redirect URL, if not the default")),
        "scopes": strings(),
        "authorizeUrl": or_null(string("Authorize URL, if not the connector's")),
        "tokenUrl": or_null(string("Token URL, if not the connector's")),
        "createdAt": timestamp("Creation"),
        "updatedAt": timestamp("Last change")
    }))
}

fn connect_session() -> Value {
    let statuses: Vec<&str> = SessionStatus::ALL.iter().map(|s| s.as_str()).collect();
    let session = record(json!({
        "id": string("Public id, e.g. `cs_…`"),
        "status": one_of(&statuses, "Where the session stands"),
        "integration": string("Integration"),
        "environment": environment(),
        "identity": or_null(string("Owner identity of the connection")),
        "identityType": or_null(identity_type()),
        "baseUrl": or_null(string("The base URL the connection gets")),
        "returnUrl": or_null(string("Where the user's browser goes back to when the flow ends")),
        "createdAt": timestamp("Creation"),
        "expiresAt": timestamp("Expiry")
    }));
    let session = with_property(
        session,
        "connectionKey",
        or_null(string("Once `connected`: the connection made or updated")),
        false,
    );
    let codes: Vec<&str> = FailureCode::ALL.iter().map(|c| c.as_str()).collect();
    let session = with_property(
        session,
        "errorCode",
        or_null(one_of(
            &codes,
            "Once `failed`: why, as a stable code (null for sessions that failed before codes were recorded)",
        )),
        false,
    );
    with_property(
        session,
        "error",
        or_null(string("Once `failed`: why, for people")),
        false,
    )
}

fn connector() -> Value {
    record(json!({
        "name": string("Display name"),
        "key": string("Connector id"),
        "platform": string("Connector id"),
        "platformVersion": string("Connector version"),
        "version": string("Connector version"),
        "status": constant(json!("active")),
        "active": constant(json!(true)),
        "description": string("Description"),
        "category": string("Category"),
        "image": or_null(string("Icon URL")),
        "tags": strings(),
        "oauth": {"type": "boolean"},
        "tools": integer("Number of actions"),
        "contract": string("The WIT contract version it was built against")
    }))
}

fn action() -> Value {
    record(json!({
        "title": string("Title"),
        "key": string("Action key, e.g. `github-create-issue`"),
        "endpoint": string("Endpoint name, for `POST /v1/{integration}/{endpoint}`"),
        "method": string("Upstream HTTP method"),
        "path": string("Upstream path"),
        "platform": string("Connector id"),
        "description": string("Description")
    }))
}

fn action_knowledge() -> Value {
    record(json!({
        "action": record(json!({
            "id": string("Action key"),
            "title": string("Title"),
            "description": string("Description"),
            "method": string("Upstream HTTP method"),
            "path": string("Upstream path"),
            "platform": string("Connector id"),
            "execute": string("How to call it, e.g. `POST /v1/github/get_repo`")
        })),
        "parameters": {"type": "object", "description": "The JSON Schema of `params`"},
        "examples": {"type": "array", "items": record(json!({"title": {"type": "string"}, "params": {"type": "object"}}))}
    }))
}

fn log_entry() -> Value {
    record(json!({
        "id": integer("The row's place in the log, in the order calls ended: `before` takes it to read the next page"),
        "transactionKey": string("Transaction key"),
        "requestId": or_null(string("The caller's `X-Request-Id`, if it sent one (1 to 128 visible ASCII characters)")),
        "createdAt": timestamp("Arrival, to the millisecond"),
        "createdAtMs": integer("Arrival (Unix milliseconds)"),
        "keyPrefix": or_null(string("The API key's prefix")),
        "environment": or_null(environment()),
        "integration": or_null(string("Integration")),
        "endpoint": or_null(string("Endpoint (`passthrough` for passthrough calls)")),
        "connectionKey": or_null(string("Connection used")),
        "httpStatus": integer(
            "The gateway's status; 499 when the caller left before any of the reply was sent"
        ),
        "upstreamStatus": or_null(integer("The upstream's status")),
        "outcome": one_of(
            crate::error::OUTCOMES,
            "`ok`, the error code, `client_closed` (the caller left before the reply was all \
             sent) or `idempotent_replay` (a retry answered with the reply kept for its Idempotency-Key)"
        ),
        "durationUs": integer("Time in the gateway (µs); for passthrough, until the response body was sent"),
        "requestBytes": integer("Bytes of `params` (execute, MCP tool calls) or of the body (passthrough)"),
        "responseBytes": integer("Response body size (for passthrough, the bytes sent to the caller)")
    }))
}

fn plugin_list() -> Value {
    let plugin = record(json!({
        "id": string("Connector id"),
        "name": string("Display name"),
        "version": string("Version"),
        "hash": string("SHA-256 of the component (hex)"),
        "contract": string("WIT contract version"),
        "file": or_null(string("Its file in the plugins directory")),
        "loadedAt": timestamp("Load time"),
        "state": one_of(&["loaded", "stale"], "`stale`: a newer file failed to load and this version keeps serving"),
        "lastError": or_null(string("Why the newer file failed")),
        "endpoints": strings()
    }));
    let failure =
        record(json!({"file": string("File"), "error": string("Why it failed"), "at": timestamp("When")}));
    let shadowed = record(json!({
        "file": string("File"),
        "id": string("The connector id it declares"),
        "by": or_null(string("The file serving that id instead")),
        "at": timestamp("When it was replaced")
    }));
    let build = record(json!({
        "source": string("The connector's source directory"),
        "output": string("The end of the build's output (the compiler's errors)"),
        "at": timestamp("When it failed")
    }));
    let list = record(json!({
        "rows": {"type": "array", "items": plugin},
        "total": {"type": "integer", "minimum": 0},
        "failures": {"type": "array", "items": failure},
        "shadowed": {
            "type": "array",
            "items": shadowed,
            "description": "Files that loaded but serve nothing: a file written later declares the same id (they take over if it is removed)"
        }
    }));
    with_property(
        list,
        "builds",
        json!({
            "type": "object",
            "description": "Under `sluice dev` only: connectors whose last build failed (the last good version keeps serving)",
            "properties": {"failed": {"type": "array", "items": build}},
            "required": ["failed"],
            "additionalProperties": false
        }),
        false,
    )
}

fn error() -> Value {
    object(
        &["error", "message"],
        json!({
            "error": {
                "type": "string",
                "description": "Stable error code",
                // Every code an error can have: the request log's outcomes but `ok`,
                // `client_closed` and `idempotent_replay` (readiness's `not_ready` is one).
                "enum": crate::error::ERROR_CODES,
            },
            "message": string("For people"),
            "action_url": string("Where the user can connect or reconnect (with `integration_not_connected` and `token_expired`)"),
            "connect_session_id": string("The connect session behind `action_url`: poll GET /v1/connect/{id} until it is connected"),
            "candidates": {
                "type": "array",
                "items": {"type": "string"},
                "description": "With `ambiguous_connection`: keys of connections the call could name (a few)"
            },
            "details": {
                "type": "array",
                "description": "Per-field failures of params validation",
                "items": record(json!({"pointer": string("JSON pointer into `params`"), "message": {"type": "string"}}))
            }
        }),
    )
}

fn json_rpc_request() -> Value {
    let message = object(
        &["jsonrpc", "method"],
        json!({
            "jsonrpc": constant(json!("2.0")),
            "id": {"description": "Absent for a notification (answered `202` without a body)"},
            "method": string("`initialize`, `ping`, `tools/list`, `tools/call` or `notifications/…`"),
            "params": {"type": "object"}
        }),
    );
    json!({"oneOf": [message, batch(&message)]})
}

/// A JSON-RPC batch of `message`s: MCP 2025-03-26 only (2025-06-18 dropped batches).
fn batch(message: &Value) -> Value {
    json!({
        "type": "array", "items": message, "minItems": 1, "maxItems": 32,
        "description": "A batch (MCP 2025-03-26 only): the answers come in one array, in its order, without those of notifications"
    })
}

fn json_rpc_response() -> Value {
    let mut response = object(
        &["jsonrpc", "id"],
        json!({
            "jsonrpc": constant(json!("2.0")),
            "id": {"description": "The request's id"},
            "result": {"type": "object"},
            "error": record(json!({"code": {"type": "integer"}, "message": {"type": "string"}}))
        }),
    );
    response["oneOf"] = json!([{"required": ["result"]}, {"required": ["error"]}]);
    json!({"oneOf": [response, batch(&response)]})
}

/// Every schema of `components/schemas`.
pub fn all() -> Map<String, Value> {
    let schemas = [
        // Request bodies.
        ("ExecuteRequest", execute_request(json!({"type": "object"}))),
        ("ConnectionCreate", connection_create()),
        ("ConnectionUpdate", connection_update()),
        ("ConnectSessionCreate", connect_session_create()),
        ("ApiKeyCreate", api_key_create()),
        ("OAuthAppPut", oauth_app_put()),
        ("JsonRpcRequest", json_rpc_request()),
        (
            "ConnectForm",
            object(
                &["csrf"],
                json!({
                    "csrf": string("The form token from the page"),
                    "secret": string("API key or token"),
                    "username": string("Basic auth user (without `:`)"),
                    "password": string("Basic auth password")
                }),
            ),
        ),
        // Replies.
        (
            "ExecuteReply",
            object(
                &["status", "data"],
                json!({
                    "status": integer("The upstream's HTTP status"),
                    "data": {"description": "The upstream's body: JSON as is, other text as a string (UTF-8, or \
                        ISO-8859-1 when its content type says so), bytes that are no text as base64, null when empty"},
                    "dataEncoding": {"type": "string", "enum": ["base64"], "description": "Present when `data` is \
                        the body's bytes in base64"},
                    "contentType": string("The body's content type; present with `dataEncoding`"),
                    "dataOmitted": string("On a replay (`idempotent-replayed: true`) of a reply over 256 KiB, or one that can no longer be opened: why `data` is null"),
                    "headers": {"type": "object", "additionalProperties": {"type": "string"}, "description":
                        "The upstream answer's headers a caller may act on, by lower-case name: `retry-after`, \
                        `link`, `x-total-count`, rate limits (`x-ratelimit-*`, `ratelimit*`) and request ids; \
                        present when the upstream sent any and the connector passed its answer on"},
                    "action_url": string("When the upstream refused (401) a connection that has failed: where the user reconnects it"),
                    "connect_session_id": string("The connect session behind `action_url`")
                }),
            ),
        ),
        ("Connection", connection()),
        ("ConnectionPage", page_of("Connection")),
        (
            "ConnectionDeleted",
            record(
                json!({"id": string("Public id"), "key": string("Connection key"), "deleted": constant(json!(true))}),
            ),
        ),
        ("ApiKey", api_key()),
        (
            "ApiKeyCreated",
            with_property(
                with_property(
                    api_key(),
                    "key",
                    string("The whole key: shown this once, stored only as a hash"),
                    true,
                ),
                "warnings",
                json!({"type": "array", "items": {"type": "string"},
                       "description": "What may be wrong with the key as made (a scope naming no installed connector); absent when nothing is"}),
                false,
            ),
        ),
        ("ApiKeyList", list_of("ApiKey")),
        (
            "ApiKeyRevoked",
            record(json!({"id": integer("Row id of the key revoked"), "status": constant(json!("revoked"))})),
        ),
        ("OAuthApp", oauth_app()),
        ("OAuthAppList", list_of("OAuthApp")),
        (
            "OAuthAppDeleted",
            record(json!({"integration": string("Integration"), "status": constant(json!("deleted"))})),
        ),
        ("ConnectSession", connect_session()),
        (
            "ConnectSessionCreated",
            with_property(
                connect_session(),
                "url",
                string("The page to send the end user to"),
                true,
            ),
        ),
        ("Connector", connector()),
        ("ConnectorPage", page_of("Connector")),
        ("Action", action()),
        ("ActionPage", page_of("Action")),
        ("ActionKnowledge", action_knowledge()),
        (
            "ToolList",
            record(json!({
                "format": one_of(&["openai", "anthropic", "mcp"], "The format asked for"),
                "tools": {"type": "array", "items": {"type": "object"}, "description": "Tool definitions in that format"}
            })),
        ),
        ("LogEntry", log_entry()),
        ("LogPage", page_of("LogEntry")),
        ("PluginList", plugin_list()),
        ("Health", record(json!({"status": constant(json!("ok"))}))),
        (
            "Readiness",
            record(json!({
                "status": constant(json!("ready")),
                "connectors": integer("Loaded connectors"),
                "failed": integer("Component files that failed to load (see GET /v1/plugins)"),
                "database": constant(json!("writable"))
            })),
        ),
        ("JsonRpcResponse", json_rpc_response()),
        (
            "OpenApiDocument",
            json!({"type": "object", "description": "An OpenAPI 3.1 document"}),
        ),
        ("Error", error()),
    ];
    schemas
        .into_iter()
        .map(|(name, schema)| (name.to_owned(), schema))
        .collect()
}
