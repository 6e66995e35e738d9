//! The catalog, generated from the loaded connectors' `describe()` (never hand-maintained, and
//! current the moment a connector is hot-reloaded): connectors, actions, action knowledge, the
//! docs route of the execute endpoint, and tool definitions for LLMs.

use super::AppState;
use super::extract::Caller;
use super::openapi::params;
use super::query::Query;
use crate::error::ApiError;
use crate::runtime::LoadedConnector;
use crate::runtime::manifest::{AuthScheme, EndpointInfo, HTTP_METHODS};
use crate::vault::api_keys::ApiKey;
use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};
use std::sync::Arc;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/available-connectors", get(connectors))
        .route("/v1/available-actions/{platform}", get(actions))
        .route("/v1/actions/{action_id}/knowledge", get(knowledge))
        .route("/v1/tools", get(tools))
        .route("/v1/{integration}/{endpoint}", get(endpoint_docs))
}

fn contains_ci(haystack: &str, needle: &str) -> bool {
    haystack.to_lowercase().contains(&needle.to_lowercase())
}

fn is_oauth(connector: &LoadedConnector) -> bool {
    matches!(connector.manifest.auth, AuthScheme::OAuth2(_))
}

/// A key sees the catalog of the integrations its scope reaches, as it sees their tools: a
/// connector outside it is `scope_not_allowed` when asked for by name, as calling it would be.
fn within_scope(key: &ApiKey, connector: &LoadedConnector) -> Result<(), ApiError> {
    if key.scope.allows(&connector.manifest.id) {
        Ok(())
    } else {
        Err(ApiError::ScopeNotAllowed(connector.manifest.id.clone()))
    }
}

/// Whether `value` is one of a list filter's `wanted` values, ignoring ASCII case (ids,
/// keys and categories are written in lower case, `Payments` means `payments`); an empty
/// list filters nothing.
fn any_of(wanted: &[String], value: &str) -> bool {
    wanted.is_empty() || wanted.iter().any(|w| w.eq_ignore_ascii_case(value))
}

async fn connectors(
    State(app): State<AppState>,
    Caller(caller): Caller,
    query: Query,
) -> Result<Json<Value>, ApiError> {
    let query = query.only(params::CONNECTOR_FILTERS)?;
    let page = query.pagination()?;
    let (platforms, keys, name, categories) = (
        query.list("platform"),
        query.list("key"),
        query.text("name"),
        query.list("category"),
    );
    let oauth = match query.boolean("oauth")? {
        Some(oauth) => Some(oauth),
        None => query.boolean("authkit")?,
    };
    let snapshot = app.registry.snapshot();
    let matching: Vec<&Arc<LoadedConnector>> = snapshot
        .values()
        .filter(|c| caller.scope.allows(&c.manifest.id))
        .filter(|c| any_of(&platforms, &c.manifest.id))
        .filter(|c| any_of(&keys, &c.manifest.id))
        .filter(|c| name.as_ref().is_none_or(|n| contains_ci(&c.manifest.name, n)))
        .filter(|c| any_of(&categories, &c.manifest.category))
        .filter(|c| oauth.is_none_or(|o| is_oauth(c) == o))
        .collect();
    Ok(Json(page.of(matching, |c| {
        let m = &c.manifest;
        json!({
            "name": m.name,
            "key": m.id,
            "platform": m.id,
            "platformVersion": m.version,
            "version": m.version,
            "status": "active",
            "active": true,
            "description": m.description,
            "category": m.category,
            "image": m.icon_url,
            "tags": [m.category],
            "oauth": is_oauth(c),
            "tools": m.endpoints.len(),
            "contract": c.contract,
        })
    })))
}

fn action_row(connector: &LoadedConnector, endpoint: &EndpointInfo) -> Value {
    json!({
        "title": endpoint.title,
        "key": endpoint.action_key,
        "endpoint": endpoint.name,
        "method": endpoint.method,
        "path": endpoint.path,
        "platform": connector.manifest.id,
        "description": endpoint.description,
    })
}

async fn actions(
    State(app): State<AppState>,
    Caller(caller): Caller,
    Path(platform): Path<String>,
    query: Query,
) -> Result<Json<Value>, ApiError> {
    let query = query.only(params::ACTION_FILTERS)?;
    let page = query.pagination()?;
    let connector = app.connector(&platform)?;
    within_scope(&caller, &connector)?;
    let (title, keys, method) = (query.text("title"), query.list("key"), query.text("method"));
    // A method no action can have is a typo to report, not a filter that matches nothing.
    if let Some(method) = &method
        && !HTTP_METHODS
            .iter()
            .any(|known| known.eq_ignore_ascii_case(method))
    {
        return Err(ApiError::BadRequest(format!(
            "query parameter `method` must be one of {}, not `{method}`",
            HTTP_METHODS.join(", ")
        )));
    }
    let matching: Vec<&EndpointInfo> = connector
        .manifest
        .endpoints
        .iter()
        .filter(|e| title.as_ref().is_none_or(|t| contains_ci(&e.title, t)))
        .filter(|e| any_of(&keys, &e.action_key))
        .filter(|e| method.as_ref().is_none_or(|m| e.method.eq_ignore_ascii_case(m)))
        .collect();
    Ok(Json(page.of(matching, |e| action_row(&connector, e))))
}

/// Everything a caller (or an agent) needs to call one action.
fn knowledge_of(connector: &LoadedConnector, endpoint: &EndpointInfo) -> Value {
    json!({
        "action": {
            "id": endpoint.action_key,
            "title": endpoint.title,
            "description": endpoint.description,
            "method": endpoint.method,
            "path": endpoint.path,
            "platform": connector.manifest.id,
            "execute": format!("POST /v1/{}/{}", connector.manifest.id, endpoint.name),
        },
        "parameters": endpoint.params_schema,
        "examples": endpoint.examples.iter().map(|(title, params)| json!({"title": title, "params": params})).collect::<Vec<_>>(),
    })
}

async fn knowledge(
    State(app): State<AppState>,
    Caller(key): Caller,
    Path(action_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let snapshot = app.registry.snapshot();
    let named: Vec<(&LoadedConnector, &EndpointInfo)> = snapshot
        .values()
        .flat_map(|c| c.manifest.endpoints.iter().map(move |e| (&**c, e)))
        .filter(|(_, e)| e.action_key == action_id)
        .collect();
    // Actions outside the key's scope neither answer nor make an id ambiguous.
    let (matching, outside): (Vec<_>, Vec<_>) = named
        .into_iter()
        .partition(|(connector, _)| key.scope.allows(&connector.manifest.id));
    match matching.as_slice() {
        [] => match outside.first() {
            Some((connector, _)) => Err(ApiError::ScopeNotAllowed(connector.manifest.id.clone())),
            None => Err(ApiError::NotFound(format!("no action `{action_id}`"))),
        },
        [(connector, endpoint)] => Ok(Json(knowledge_of(connector, endpoint))),
        // Ids join two names that may themselves hold `-` (`my-app` + `x` and `my` + `app_x`):
        // rather than pick one, name them all with their unambiguous docs routes.
        several => Err(ApiError::BadRequest(format!(
            "action id `{action_id}` names {} actions of different connectors; ask for one by its route: {}",
            several.len(),
            several
                .iter()
                .map(|(c, e)| format!("GET /v1/{}/{}", c.manifest.id, e.name))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// The action the LLM tool `name` stands for, among the connectors `allows` admits.
pub fn find_tool(
    app: &AppState,
    name: &str,
    allows: impl Fn(&str) -> bool,
) -> Option<(Arc<LoadedConnector>, String)> {
    let is_named = |e: &&EndpointInfo| e.tool_name == name;
    // Usually `{connector}__{endpoint}`; shortened names are searched for.
    if let Some((integration, endpoint)) = name.split_once("__")
        && let Some(connector) = app.registry.get(integration).filter(|c| allows(&c.manifest.id))
        && let Some(endpoint) = connector.manifest.endpoint(endpoint).filter(is_named)
    {
        let endpoint = endpoint.name.clone();
        return Some((connector, endpoint));
    }
    app.registry
        .snapshot()
        .values()
        .filter(|c| allows(&c.manifest.id))
        .find_map(|c| {
            let endpoint = c.manifest.endpoints.iter().find(is_named)?;
            Some((Arc::clone(c), endpoint.name.clone()))
        })
}

async fn endpoint_docs(
    State(app): State<AppState>,
    Caller(key): Caller,
    Path((integration, endpoint)): Path<(String, String)>,
    query: Query,
) -> Result<Json<Value>, ApiError> {
    // As every other GET route: a parameter it does not take is a mistake to report.
    query.only(&[])?;
    let connector = app.connector(&integration)?;
    within_scope(&key, &connector)?;
    let info = connector.manifest.endpoint(&endpoint).ok_or_else(|| {
        ApiError::NotFound(format!(
            "integration `{integration}` has no endpoint named `{endpoint}`"
        ))
    })?;
    Ok(Json(knowledge_of(&connector, info)))
}

/// Every action the caller's key may reach, as tool definitions for an LLM API.
pub fn tool_definitions(app: &AppState, allows: impl Fn(&str) -> bool, format: &str) -> Vec<Value> {
    let snapshot = app.registry.snapshot();
    let mut tools = Vec::new();
    for connector in snapshot.values().filter(|c| allows(&c.manifest.id)) {
        for endpoint in &connector.manifest.endpoints {
            let name = &endpoint.tool_name;
            let mut description = if endpoint.description.is_empty() {
                format!("{} ({})", endpoint.title, connector.manifest.name)
            } else {
                format!(
                    "{}: {} ({})",
                    endpoint.title, endpoint.description, connector.manifest.name
                )
            };
            let (schema, moved) = tool_input_schema(&endpoint.params_schema);
            if let Some(moved) = moved {
                description.push_str(&format!(" The params must also match this JSON Schema: {moved}"));
            }
            tools.push(match format {
                "anthropic" => json!({"name": name, "description": description, "input_schema": schema}),
                "mcp" => json!({
                    "name": name,
                    "title": endpoint.title,
                    "description": description,
                    "inputSchema": schema,
                    "annotations": tool_annotations(endpoint),
                }),
                _ => json!({"type": "function", "function": {"name": name, "description": description, "parameters": schema}}),
            });
        }
    }
    tools
}

/// MCP tool annotations from what the action's HTTP method says (hints a host may use to decide
/// when to ask its user before a call; a connector could misstate its method, so they are hints,
/// as MCP says they are). Only a read says it changes nothing. Every action reaches an outside
/// API: an open world.
fn tool_annotations(endpoint: &EndpointInfo) -> Value {
    let method = endpoint.method.to_ascii_uppercase();
    let mut annotations = json!({"title": endpoint.title, "openWorldHint": true});
    match method.as_str() {
        "GET" | "HEAD" => annotations["readOnlyHint"] = json!(true),
        // Not said to be harmless: plenty of APIs delete and send with POST (Slack's
        // `chat.delete`), so MCP's default (possibly destructive) stands.
        "PUT" => {
            annotations["readOnlyHint"] = json!(false);
            annotations["idempotentHint"] = json!(true);
        }
        "DELETE" => {
            annotations["readOnlyHint"] = json!(false);
            annotations["destructiveHint"] = json!(true);
            annotations["idempotentHint"] = json!(true);
        }
        _ => annotations["readOnlyHint"] = json!(false),
    }
    annotations
}

/// Keywords LLM APIs refuse at the top of a tool's input schema: Anthropic's API answers
/// "input_schema does not support oneOf, allOf, or anyOf at the top level" for the whole
/// request, so one connector using them would break every call that lists the tools.
const TOP_LEVEL_COMBINATORS: [&str; 3] = ["anyOf", "oneOf", "allOf"];

/// `params_schema` as an LLM tool's input schema, and the top-level combinators taken out of it
/// (as a schema of their own, for the description). The gateway still checks params against
/// the whole schema, so a call that misses them gets a `bad_request` naming what is wrong.
fn tool_input_schema(params_schema: &Value) -> (std::borrow::Cow<'_, Value>, Option<Value>) {
    let Some(schema) = params_schema
        .as_object()
        .filter(|schema| TOP_LEVEL_COMBINATORS.iter().any(|k| schema.contains_key(*k)))
    else {
        return (std::borrow::Cow::Borrowed(params_schema), None);
    };
    let mut kept = schema.clone();
    let mut moved = serde_json::Map::new();
    for keyword in TOP_LEVEL_COMBINATORS {
        if let Some(value) = kept.remove(keyword) {
            moved.insert(keyword.to_owned(), value);
        }
    }
    (
        std::borrow::Cow::Owned(Value::Object(kept)),
        Some(Value::Object(moved)),
    )
}

async fn tools(
    State(app): State<AppState>,
    Caller(key): Caller,
    query: Query,
) -> Result<Json<Value>, ApiError> {
    let query = query.only(params::TOOL_FORMAT)?;
    let format = query.text("format").unwrap_or_else(|| "openai".into());
    if !matches!(format.as_str(), "openai" | "anthropic" | "mcp") {
        return Err(ApiError::BadRequest(format!(
            "query parameter `format` must be openai, anthropic or mcp, not `{format}`"
        )));
    }
    let tools = tool_definitions(&app, |id| key.scope.allows(id), &format);
    Ok(Json(json!({"format": format, "tools": tools})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_level_combinators_move_from_a_tools_schema_to_its_description() {
        let schema = json!({
            "type": "object",
            "required": ["to"],
            "properties": {"to": {"type": "string"}, "text": {"type": "string"}, "html": {"type": "string"}},
            "anyOf": [{"required": ["text"]}, {"required": ["html"]}],
            "allOf": [{"not": {"required": ["cc"]}}]
        });
        let (tool, moved) = tool_input_schema(&schema);
        assert_eq!(
            tool.as_ref(),
            &json!({
                "type": "object",
                "required": ["to"],
                "properties": {"to": {"type": "string"}, "text": {"type": "string"}, "html": {"type": "string"}}
            })
        );
        assert_eq!(
            moved,
            Some(json!({
                "anyOf": [{"required": ["text"]}, {"required": ["html"]}],
                "allOf": [{"not": {"required": ["cc"]}}]
            }))
        );
        // Nested ones are fine where they are.
        let nested =
            json!({"type": "object", "properties": {"x": {"anyOf": [{"type": "string"}, {"type": "null"}]}}});
        let (tool, moved) = tool_input_schema(&nested);
        assert!(matches!(tool, std::borrow::Cow::Borrowed(_)));
        assert_eq!((tool.as_ref(), moved), (&nested, None));
    }
}
