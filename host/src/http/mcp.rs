//! `/mcp`: the Model Context Protocol over its streamable HTTP transport, so AI agents can use
//! every action the API key may reach as a tool. `POST` requests are answered with JSON (a
//! batch, which the 2025-03-26 revision allows, with an array); `GET` opens the server's event
//! stream, which says `notifications/tools/list_changed` when a hot reload changes the tools
//! the key sees. A request naming a protocol version the server does not speak is a 400.
//!
//! Methods: `initialize`, `notifications/*` (accepted), `ping`, `tools/list`, `tools/call`.
//! A tool call runs exactly the execute path (same validation, limits, logging, connection
//! choice — from `?identity=` / `?connection_key=` on the server URL); its reply is the tool
//! result, with `isError` set for gateway and upstream errors.
//!
//! Sessions hold no state here: `initialize` hands out an `Mcp-Session-Id` (clients open the
//! event stream only once they have one) and any id is accepted back, so every gateway
//! behind a load balancer serves every session. `DELETE /mcp` is 405 ("nothing to end").

use super::extract::{Caller, WholeBody};
use super::{AppState, Transaction};
use crate::error::ApiError;
use crate::vault::api_keys::ApiKey;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Json, Router};
use serde_json::{Value, json};
use std::time::Duration;

/// Protocol versions this server speaks, newest first.
const PROTOCOL_VERSIONS: &[&str] = &["2025-06-18", "2025-03-26", "2024-11-05"];

pub(super) fn router() -> Router<AppState> {
    // `DELETE` gets the API's JSON 405, which MCP clients take as "no session to end".
    Router::new().route("/mcp", post(handle).get(events))
}

/// Header carrying the session id.
const SESSION_HEADER: &str = "mcp-session-id";

/// How often the event stream sends a comment when there is nothing to say, so that proxies
/// and the client's read timeout keep it open.
const STREAM_KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The one event the stream sends.
const TOOLS_CHANGED: &str = r#"{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}"#;

/// What the tools a key sees depend on: the connectors in its scope and their builds.
fn visible_tools(app: &AppState, key: &crate::vault::api_keys::ApiKey) -> Vec<(String, String)> {
    app.registry
        .snapshot()
        .values()
        .filter(|c| key.scope.allows(&c.manifest.id))
        .map(|c| (c.manifest.id.clone(), c.content_hash.clone()))
        .collect()
}

/// How often an open event stream looks whether its key was revoked or expired meanwhile.
const KEY_RECHECK: Duration = Duration::from_secs(5);

/// One open event stream: what its key saw last, and what it waits on.
struct Follower {
    app: AppState,
    key: crate::vault::api_keys::ApiKey,
    /// The key as the client presented it, to look it up again (see [`KEY_RECHECK`]).
    presented: String,
    changes: tokio::sync::watch::Receiver<()>,
    stopping: tokio::sync::watch::Receiver<bool>,
    seen: Vec<(String, String)>,
    /// Its place among the gateway's event streams, given back when the stream ends.
    _place: tokio::sync::OwnedSemaphorePermit,
}

impl Follower {
    /// Wait until the connectors the key sees change (true), or the gateway stops or the key
    /// is revoked or expires (false: a stream does not outlive its key).
    async fn next_change(&mut self) -> bool {
        loop {
            let recheck = tokio::select! {
                changed = self.changes.changed() => if changed.is_err() { return false } else { false },
                // Shutting down (or the signal's sender is gone): end the stream.
                _ = self.stopping.wait_for(|stop| *stop) => return false,
                () = tokio::time::sleep(KEY_RECHECK) => true,
            };
            if recheck {
                if !super::extract::key_still_valid(&self.app, self.presented.clone()).await {
                    return false;
                }
                continue;
            }
            let now = visible_tools(&self.app, &self.key);
            if now != self.seen {
                self.seen = now;
                return true;
            }
        }
    }
}

/// `GET /mcp`: the server's event stream. It says `notifications/tools/list_changed` each time
/// a load, reload or removal changes the connectors the key sees, and ends when the gateway
/// shuts down (a client reconnects to another or the restarted one). Streams take at most half
/// of the gateway's client connections; beyond that `503 at_capacity`.
async fn events(
    State(app): State<AppState>,
    headers: HeaderMap,
    caller: Result<Caller, ApiError>,
) -> Response {
    if let Err(refusal) = check_origin(&app, &headers) {
        return refusal.into_response();
    }
    let key = match caller {
        Ok(Caller(key)) => key,
        Err(error) => return error.into_response(),
    };
    if let Some(refusal) = unsupported_version(&headers) {
        return ApiError::BadRequest(refusal).into_response();
    }
    let Some(presented) = super::extract::presented_key(&headers) else {
        return ApiError::Unauthorized("missing API key: send `Authorization: Bearer sk_…`".into())
            .into_response();
    };
    let Ok(place) = app.event_streams.clone().try_acquire_owned() else {
        return ApiError::AtCapacity.into_response();
    };
    let mut changes = app.registry.subscribe();
    changes.mark_unchanged();
    let follower = Follower {
        seen: visible_tools(&app, &key),
        stopping: app.stopping.clone(),
        app,
        key,
        presented,
        changes,
        _place: place,
    };
    let stream = futures::stream::unfold(follower, |mut follower| async move {
        follower.next_change().await.then(|| {
            let event = Event::default().event("message").data(TOOLS_CHANGED);
            (Ok::<_, std::convert::Infallible>(event), follower)
        })
    });
    let mut response = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(STREAM_KEEP_ALIVE))
        .into_response();
    // Behind nginx (which buffers by default) a small event could wait in its buffer for good.
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// MCP's rule against DNS rebinding: a request that comes with an `Origin` (a browser page)
/// is served only for an origin the operator allows with `--cors-origin`, or the gateway's own.
/// Clients that are not browsers send no `Origin`.
fn check_origin(app: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(origin) = headers.get(axum::http::header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or_default();
    let own = url::Url::parse(&app.public_url)
        .map(|url| url.origin().ascii_serialization())
        .unwrap_or_default();
    let allowed = origin == own
        || app
            .cors_origins
            .iter()
            .any(|allowed| allowed == "*" || allowed == origin);
    if allowed {
        Ok(())
    } else {
        Err(ApiError::OriginNotAllowed(origin.chars().take(200).collect()))
    }
}

fn rpc_result(id: &Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

/// What `tools/call` params may hold (MCP: the tool, its arguments, protocol metadata).
const TOOL_CALL_PARAMS: [&str; 3] = ["name", "arguments", "_meta"];

fn rpc_error(id: &Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

/// The most messages one batch may hold.
const MAX_BATCH: usize = 32;

/// Header naming the protocol version a client negotiated (MCP 2025-06-18).
const VERSION_HEADER: &str = "mcp-protocol-version";

/// MCP (2025-06-18): a request naming a protocol version the server does not speak is a 400.
/// Without the header a client is taken to speak 2025-03-26, as the revision says.
fn unsupported_version(headers: &HeaderMap) -> Option<String> {
    let named = headers.get(VERSION_HEADER)?;
    if named.to_str().is_ok_and(|v| PROTOCOL_VERSIONS.contains(&v)) {
        return None;
    }
    Some(format!(
        "unsupported MCP-Protocol-Version: this server speaks {}",
        PROTOCOL_VERSIONS.join(", ")
    ))
}

/// Which connection tool calls use, from the server URL's query (`/mcp?identity=alice`): an
/// agent acting for one user is configured with that user's URL, as the tools themselves only
/// take the action's parameters.
#[derive(Debug, Default)]
struct ConnectionChoice {
    identity: Option<String>,
    identity_type: Option<String>,
    connection_key: Option<String>,
}

impl ConnectionChoice {
    fn from_query(query: super::query::Query) -> Result<Self, ApiError> {
        let query = query.only(super::openapi::params::MCP_CONNECTION)?;
        // Each selector may be spelt as the execute body spells it or as the vault API does.
        let either = |snake: &str, camel: &str| match (query.selector(snake)?, query.selector(camel)?) {
            (Some(_), Some(_)) => Err(ApiError::BadRequest(format!(
                "query parameters `{snake}` and `{camel}` are one parameter: give one"
            ))),
            (snake, camel) => Ok(snake.or(camel)),
        };
        Ok(Self {
            identity: query.selector("identity")?,
            identity_type: either("identity_type", "identityType")?,
            connection_key: either("connection_key", "connectionKey")?,
        })
    }
}

/// What a message's answer depends on besides the message.
struct RequestContext {
    app: AppState,
    transaction: Transaction,
    key: ApiKey,
    choice: ConnectionChoice,
    /// Whether the client speaks 2025-06-18 (it says so in every request after `initialize`),
    /// whose tool results may carry `structuredContent`.
    structured_results: bool,
}

/// The answer to one message: nothing for a notification; for `initialize`, the session id
/// to hand out.
struct Reply {
    message: Value,
    session: Option<String>,
}

impl From<Value> for Reply {
    fn from(message: Value) -> Self {
        Self {
            message,
            session: None,
        }
    }
}

async fn handle(
    State(app): State<AppState>,
    Extension(transaction): Extension<Transaction>,
    headers: HeaderMap,
    caller: Result<Caller, ApiError>,
    query: Result<super::query::Query, ApiError>,
    body: Result<WholeBody, ApiError>,
) -> Response {
    if let Err(refusal) = check_origin(&app, &headers) {
        return refusal.into_response();
    }
    let choice = match query.and_then(ConnectionChoice::from_query) {
        Ok(choice) => choice,
        Err(error) => return error.into_response(),
    };
    let (Caller(key), WholeBody(body)) = match (caller, body) {
        (Ok(caller), Ok(body)) => (caller, body),
        (Err(error), _) | (_, Err(error)) => return error.into_response(),
    };
    if let Some(refusal) = unsupported_version(&headers) {
        return (
            StatusCode::BAD_REQUEST,
            Json(rpc_error(&Value::Null, -32600, &refusal)),
        )
            .into_response();
    }
    let message = match super::strict_json::parse_slice(&body) {
        Ok(message) => message,
        Err(error) => {
            // JSON that parses but names a key twice (its arguments, most likely) is refused as
            // execute refuses such params, answering its id: a client can tell which request
            // it was, rather than wait on it until its timeout.
            let id = serde_json::from_slice::<Value>(&body).ok().and_then(|lax| {
                lax.get("id")
                    .filter(|id| id.is_string() || id.is_number())
                    .cloned()
            });
            return Json(match id {
                Some(id) => rpc_error(&id, -32602, &format!("invalid params: {error}")),
                None => rpc_error(&Value::Null, -32700, &format!("parse error: {error}")),
            })
            .into_response();
        }
    };
    let latest = headers.get(VERSION_HEADER).is_some_and(|v| v == "2025-06-18");
    let caller = RequestContext {
        app,
        transaction,
        key,
        choice,
        structured_results: latest,
    };
    match message {
        // The 2025-06-18 revision dropped batches: a client that negotiated it sends none.
        Value::Array(_) if latest => Json(rpc_error(
            &Value::Null,
            -32600,
            "invalid request: MCP 2025-06-18 has no batches (2025-03-26 had)",
        ))
        .into_response(),
        Value::Array(batch) => answer_batch(&caller, batch).await,
        message => match answer(&caller, message, false).await {
            None => StatusCode::ACCEPTED.into_response(),
            Some(Reply { message, session }) => {
                let mut response = Json(message).into_response();
                if let Some(session) = session.and_then(|s| HeaderValue::from_str(&s).ok()) {
                    response.headers_mut().insert(SESSION_HEADER, session);
                }
                response
            }
        },
    }
}

/// A JSON-RPC batch (MCP 2025-03-26): the answers in one array, in the batch's order, without
/// the notifications'; only notifications: `202`, as for one. Its messages run one after the
/// other, so one request holds at most one instance, as any other does; they share the
/// request's transaction key.
async fn answer_batch(caller: &RequestContext, batch: Vec<Value>) -> Response {
    if batch.is_empty() || batch.len() > MAX_BATCH {
        let problem = format!("invalid request: a batch holds 1 to {MAX_BATCH} messages");
        return Json(rpc_error(&Value::Null, -32600, &problem)).into_response();
    }
    let mut replies = Vec::with_capacity(batch.len());
    for message in batch {
        replies.push(answer(caller, message, true).await);
    }
    let answers: Vec<Value> = replies.into_iter().flatten().map(|reply| reply.message).collect();
    if answers.is_empty() {
        return StatusCode::ACCEPTED.into_response();
    }
    Json(Value::Array(answers)).into_response()
}

/// Answer one message (`None` for a notification).
async fn answer(caller: &RequestContext, message: Value, in_batch: bool) -> Option<Reply> {
    let id = message.get("id").cloned();
    // A response to a request of the server's: this server sends none, so there is nothing to
    // match it to, but the transport accepts it (`202`) as it accepts a notification.
    if message.get("method").is_none()
        && id.is_some()
        && (message.get("result").is_some() || message.get("error").is_some())
    {
        return None;
    }
    let (Some(method), Some("2.0")) = (message["method"].as_str(), message["jsonrpc"].as_str()) else {
        return Some(Reply::from(rpc_error(
            id.as_ref().unwrap_or(&Value::Null),
            -32600,
            "invalid request: a JSON-RPC 2.0 message needs `\"jsonrpc\": \"2.0\"` and a `method`",
        )));
    };
    // A notification (`notifications/initialized`, `notifications/cancelled`, …).
    let id = id?;
    // JSON-RPC ids are strings or numbers (MCP rules out null too); an answer to another kind
    // could not be matched to its request.
    if !(id.is_string() || id.is_number()) {
        return Some(Reply::from(rpc_error(
            &Value::Null,
            -32600,
            "invalid request: `id` must be a string or a number",
        )));
    }
    let params = &message["params"];
    let reply = match method {
        "initialize" if in_batch => rpc_error(
            &id,
            -32600,
            "invalid request: `initialize` must not be part of a batch",
        ),
        "initialize" => {
            let requested = params["protocolVersion"].as_str().unwrap_or_default();
            let version = PROTOCOL_VERSIONS
                .iter()
                .find(|v| **v == requested)
                .unwrap_or(&PROTOCOL_VERSIONS[0]);
            let result = json!({
                "protocolVersion": version,
                "capabilities": {"tools": {"listChanged": true}},
                "serverInfo": {"name": "sluice", "version": env!("CARGO_PKG_VERSION")},
                "instructions": "Each tool runs one action of a connected API through the Sluice gateway.",
            });
            return Some(Reply {
                message: rpc_result(&id, result),
                session: Some(crate::vault::crypto::random_id("mcp_", 16)),
            });
        }
        "ping" => rpc_result(&id, json!({})),
        // Every tool comes in one page: a cursor can only be one this server never gave.
        "tools/list" if !params["cursor"].is_null() => rpc_error(
            &id,
            -32602,
            "invalid params: unknown cursor (tools/list returns every tool at once, with no nextCursor)",
        ),
        "tools/list" => {
            let key = &caller.key;
            let bound = bound_integration(caller).await;
            let tools = super::catalog::tool_definitions(
                &caller.app,
                |id| key.scope.allows(id) && serves(&caller.app, bound.as_deref(), id),
                "mcp",
            );
            rpc_result(&id, json!({"tools": tools}))
        }
        "tools/call" => call_tool(caller, &id, params).await,
        other => rpc_error(&id, -32601, &format!("method `{other}` not found")),
    };
    Some(Reply::from(reply))
}

/// The integration whose connection the server URL's `?connection_key=` names, if it names
/// one that exists: a connection key is one integration's, so the URL serves that
/// integration's tools and those that need no connection.
async fn bound_integration(caller: &RequestContext) -> Option<String> {
    let key = caller.choice.connection_key.clone()?;
    let environment = caller.key.environment;
    let found = caller
        .app
        .vault
        .run(move |vault| vault.get_connection(environment, &key))
        .await;
    found.ok().flatten().map(|record| record.platform)
}

/// Whether a server URL bound to `bound`'s connection (if any) serves connector `id`'s tools.
fn serves(app: &AppState, bound: Option<&str>, id: &str) -> bool {
    match bound {
        None => true,
        Some(bound) => {
            bound == id
                || app
                    .registry
                    .get(id)
                    .is_some_and(|connector| !connector.manifest.auth.needs_connection())
        }
    }
}

/// `tools/call`: the tool's action, run exactly as `POST /v1/{integration}/{endpoint}` runs it.
async fn call_tool(caller: &RequestContext, id: &Value, params: &Value) -> Value {
    if let Some(unknown) = params
        .as_object()
        .and_then(|params| params.keys().find(|k| !TOOL_CALL_PARAMS.contains(&k.as_str())))
    {
        // As `POST /v1/{integration}/{endpoint}` refuses unknown fields: a selector put here
        // would otherwise be ignored and the call run on another connection.
        return rpc_error(
            id,
            -32602,
            &format!(
                "unknown field `{unknown}` in tools/call params (they are `name`, `arguments` and `_meta`); \
                 the connection is chosen by the server URL: /mcp?identity=… or /mcp?connection_key=…"
            ),
        );
    }
    let Some(name) = params["name"].as_str() else {
        return rpc_error(
            id,
            -32602,
            "`params.name` must be a string naming a tool (see tools/list)",
        );
    };
    let key = &caller.key;
    let Some((connector, endpoint)) = super::catalog::find_tool(&caller.app, name, |id| key.scope.allows(id))
    else {
        // A tool the key may not use exists all the same (`/openapi.json` lists it): say why
        // it cannot be called, as `403 scope_not_allowed` does for an execute call.
        if super::catalog::find_tool(&caller.app, name, |_| true).is_some() {
            return rpc_error(
                id,
                -32602,
                &format!("tool `{name}` is outside this API key's scope (scope_not_allowed)"),
            );
        }
        return rpc_error(id, -32602, &format!("unknown tool `{name}`"));
    };
    let integration = connector.manifest.id.as_str();
    if let Some(bound) = bound_integration(caller).await
        && !serves(&caller.app, Some(&bound), integration)
    {
        // tools/list did not offer it: say what the URL serves rather than run the call on a
        // connection of another integration (which no call could use).
        return rpc_error(
            id,
            -32602,
            &format!(
                "tool `{name}` uses a {integration} connection, and this server URL names a {bound} \
                 connection (connection_key): it serves {bound}'s tools and those needing no \
                 connection. For {integration}'s, add a server whose URL names a {integration} \
                 connection, or use /mcp?identity=…"
            ),
        );
    }
    let arguments = match &params["arguments"] {
        Value::Null => json!({}),
        arguments @ Value::Object(_) => arguments.clone(),
        _ => {
            return rpc_error(
                id,
                -32602,
                "`params.arguments` must be a JSON object (the tool's input)",
            );
        }
    };
    // The server URL's connection choice applies to the tools that use a connection; a
    // connector that needs none would refuse a connection key.
    let connection_key = connector
        .manifest
        .auth
        .needs_connection()
        .then(|| caller.choice.connection_key.clone())
        .flatten();
    // Only the selectors the server URL gave: an explicit `null` is refused by `execute`.
    let mut body = serde_json::Map::from_iter([("params".to_owned(), arguments)]);
    let selectors = [
        ("identity", caller.choice.identity.clone()),
        ("identity_type", caller.choice.identity_type.clone()),
        ("connection_key", connection_key),
    ];
    for (name, value) in selectors {
        if let Some(value) = value {
            body.insert(name.to_owned(), Value::String(value));
        }
    }
    let (status, text) = super::execute::execute_for(
        &caller.app,
        caller.transaction.clone(),
        key.clone(),
        integration,
        &endpoint,
        Value::Object(body),
    )
    .await;
    let mut envelope = serde_json::from_str::<Value>(&text).ok();
    let mut text = text;
    if status != StatusCode::OK
        && let Some(refusal) = envelope.as_mut()
        && matches!(
            refusal["error"].as_str(),
            Some("ambiguous_connection" | "integration_not_connected")
        )
        && let Some(message) = refusal["message"].as_str()
    {
        // Said for execute's callers, who name a connection in the body; a model can only
        // change the arguments, which cannot choose one, and would try again and again.
        refusal["message"] = Value::String(format!(
            "{message}. Over MCP the connection is chosen by the server URL (/mcp?connection_key=… \
             or /mcp?identity=…), not by the tool's arguments: the user must set it in this \
             server's configuration"
        ));
        text = refusal.to_string();
    }
    let is_error = status != StatusCode::OK
        || envelope
            .as_ref()
            .and_then(|v| v["status"].as_u64())
            .is_some_and(|upstream| upstream >= 400);
    let limit = caller.app.max_tool_result;
    let whole = text.len() <= limit;
    let text = if whole {
        text
    } else {
        cut_for_the_model(&text, limit)
    };
    let mut result = json!({"content": [{"type": "text", "text": text}], "isError": is_error});
    // The same envelope as an object, for clients that read structured results; the text
    // block stays for those that do not (as the 2025-06-18 revision asks). Not for an answer
    // too long for the model: that would send it whole after all.
    if caller.structured_results
        && whole
        && let Some(envelope) = envelope
    {
        result["structuredContent"] = envelope;
    }
    rpc_result(id, result)
}

/// The first `limit` bytes of a tool result's `text` (at a character boundary), and a line
/// saying it was cut: an agent's model reads the result, and an answer of megabytes would fill
/// its context (or be refused by its client) rather than help.
fn cut_for_the_model(text: &str, limit: usize) -> String {
    let mut end = limit.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}\n[cut by the gateway: the answer is {} bytes, the first {end} are above \
         (--max-tool-result-kib); ask for less, e.g. a smaller page or fewer fields]",
        &text[..end],
        text.len()
    )
}
