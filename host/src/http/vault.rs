//! The Pica-compatible vault API: `/v1/vault/connections` and `/v1/vault/connections/{id}`.
//!
//! Connections belong to the caller key's environment; a key sees and changes only the
//! connections of its environment and of integrations within its scope. Secrets are
//! write-only: no response ever contains one.

use super::AppState;
use super::extract::{Caller, JsonBody};
use super::query::Query;
use super::timestamps::rfc3339;
use crate::egress::AddressPolicy;
use crate::error::ApiError;
use crate::runtime::manifest::AuthScheme;
use crate::vault::Vault;
use crate::vault::api_keys::Environment;
use crate::vault::checks;
use crate::vault::connections::{ConnectionFilter, ConnectionPatch, ConnectionRecord, NewConnection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

/// Longest free-text field.
const MAX_TEXT: usize = 1024;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/vault/connections", get(list).post(create))
        .route(
            "/v1/vault/connections/{id}",
            get(read).patch(update).delete(remove),
        )
}

/// A connection as the API (and `sluice connections list --json`) shows it: everything but
/// the secret.
pub(crate) fn view(record: &ConnectionRecord) -> Value {
    json!({
        "id": record.public_id(),
        "key": record.key,
        "name": record.name,
        "description": record.description,
        "platform": record.platform,
        "environment": record.environment.as_str(),
        "identity": record.identity,
        "identityType": record.identity_type,
        "state": record.state,
        "tags": record.tags,
        "active": record.active,
        "baseUrl": record.base_url.as_ref().map(url::Url::as_str),
        "createdAt": rfc3339(record.created_at),
        "updatedAt": rfc3339(record.updated_at),
    })
}

async fn list(
    State(app): State<AppState>,
    Caller(key): Caller,
    query: Query,
) -> Result<Json<Value>, ApiError> {
    if query.has("platformVersion") {
        return Err(ApiError::BadRequest(
            "query parameter `platformVersion`: a connection has no version of its own; every \
             connection of an integration runs the connector version the gateway serves (see \
             GET /v1/available-connectors)"
                .into(),
        ));
    }
    let query = query.only(super::openapi::params::CONNECTION_FILTERS)?;
    let page = query.pagination()?;
    let ids = query
        .selector_list("_id")?
        .iter()
        .map(|id| {
            crate::vault::connections::row_id(id).ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "query parameter `_id`: `{id}` is not a connection id (`conn_…`)"
                ))
            })
        })
        .collect::<Result<Vec<i64>, _>>()?;
    // Empty is refused: `?identity=${user}` with the variable empty would list every tenant's.
    let identity_type = query.selector("identityType")?;
    if let Some(kind) = &identity_type {
        check_identity_type(kind)?;
    }
    let platforms = query.list("platform");
    if let Some(outside) = platforms.iter().find(|platform| !key.scope.allows(platform)) {
        return Err(ApiError::ScopeNotAllowed(outside.clone()));
    }
    let filter = ConnectionFilter {
        keys: query.selector_list("key")?,
        platforms_in_scope: key.scope.integrations().map(<[String]>::to_vec),
        platforms,
        identity: query.selector("identity")?,
        identity_type,
        active: active_filter(&query)?,
        tags: query.list("tags"),
        ids,
        name: query.text("name"),
        state: state_filter(&query)?,
    };
    let environment = key.environment;
    let result = app
        .vault
        .run(move |vault| vault.list_connections(environment, &filter, page.page, page.limit))
        .await?;
    let rows: Vec<Value> = result.rows.iter().map(view).collect();
    Ok(Json(page.envelope(rows, result.total)))
}

/// The list's `state` filter, one of the states a connection can be in.
fn state_filter(query: &Query) -> Result<Option<String>, ApiError> {
    let states = super::openapi::params::CONNECTION_STATES;
    match query.text("state") {
        Some(state) if !states.contains(&state.as_str()) => Err(ApiError::BadRequest(format!(
            "query parameter `state` must be one of {}",
            states.join(", ")
        ))),
        state => Ok(state),
    }
}

/// The list's `active` filter: active connections unless the caller asks otherwise, as in
/// Pica's API; `active=any` lists both.
fn active_filter(query: &Query) -> Result<Option<bool>, ApiError> {
    if query.text("active").as_deref() == Some("any") {
        return Ok(None);
    }
    let active = query
        .boolean("active")
        .map_err(|_| ApiError::BadRequest("query parameter `active` must be true, false or any".into()))?;
    Ok(Some(active.unwrap_or(true)))
}

/// `POST /v1/vault/connections` body. Unknown fields are refused so typos do not pass silently.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct CreateBody {
    platform: String,
    secret: Option<String>,
    username: Option<String>,
    password: Option<String>,
    #[serde(default, deserialize_with = "super::extract::not_null")]
    identity: Option<String>,
    #[serde(default, deserialize_with = "super::extract::not_null")]
    identity_type: Option<String>,
    name: Option<String>,
    description: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
    base_url: Option<String>,
    /// Store the secret in the owner's connection if it has one (see [`create`]).
    #[serde(default)]
    replace: bool,
}

pub(super) fn check_identity_type(kind: &str) -> Result<(), ApiError> {
    checks::check_identity_type("`identityType`", kind).map_err(ApiError::BadRequest)
}

fn check_text(field: &str, value: Option<&String>) -> Result<(), ApiError> {
    match value {
        Some(v) if v.len() > MAX_TEXT => Err(ApiError::BadRequest(format!(
            "`{field}` is longer than {MAX_TEXT} bytes"
        ))),
        _ => Ok(()),
    }
}

fn check_tags(tags: &[String]) -> Result<(), ApiError> {
    if tags.len() > 32 || tags.iter().any(|t| t.is_empty() || t.len() > 64) {
        return Err(ApiError::BadRequest(
            "`tags` must be at most 32 non-empty strings of at most 64 bytes".into(),
        ));
    }
    Ok(())
}

/// A connection's base URL from the API, for a connection of `platform`. It receives the
/// credential, so it must be `https`, unless the gateway may reach private upstreams (local
/// development, where plain `http` on loopback is the norm), and where the operator's policy
/// allows: refused now rather than on every call.
pub(super) fn parse_base_url(app: &AppState, platform: &str, raw: &str) -> Result<url::Url, ApiError> {
    let plain_http_allowed = app.runtime.limits().address_policy == AddressPolicy::AllowPrivate;
    let parsed =
        checks::parse_base_url("`baseUrl`", raw, plain_http_allowed).map_err(ApiError::BadRequest)?;
    if let Some(connector) = app.registry.get(platform) {
        connector
            .check_base_url(&parsed)
            .map_err(|reason| ApiError::BadRequest(format!("`baseUrl`: {reason}")))?;
    }
    Ok(parsed)
}

async fn create(
    State(app): State<AppState>,
    Caller(key): Caller,
    JsonBody(body): JsonBody<CreateBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let connector = app.registry.get(&body.platform).ok_or_else(|| {
        ApiError::BadRequest(format!("`platform`: no integration named `{}`", body.platform))
    })?;
    if !key.scope.allows(&body.platform) {
        return Err(ApiError::ScopeNotAllowed(body.platform));
    }
    if let Some(kind) = &body.identity_type {
        check_identity_type(kind)?;
        // Otherwise it would describe the key owner's own default connection.
        if body.identity.is_none() {
            return Err(ApiError::BadRequest(
                "`identityType` says what kind of identity `identity` is, and `identity` is missing".into(),
            ));
        }
    }
    if let Some(identity) = &body.identity {
        checks::check_identity("`identity`", identity).map_err(ApiError::BadRequest)?;
    }
    for (field, value) in [
        ("name", body.name.as_ref()),
        ("description", body.description.as_ref()),
    ] {
        check_text(field, value)?;
    }
    check_tags(&body.tags)?;
    let secret = match &connector.manifest.auth {
        AuthScheme::Basic => match (&body.username, &body.password, &body.secret) {
            (Some(user), Some(password), None) if !user.contains(':') => format!("{user}:{password}"),
            (None, None, Some(secret)) if secret.contains(':') => secret.clone(),
            _ => {
                return Err(ApiError::BadRequest(
                    "`username` and `password` are required for this integration".into(),
                ));
            }
        },
        AuthScheme::None => {
            return Err(ApiError::BadRequest(format!(
                "`platform`: {} needs no credentials",
                body.platform
            )));
        }
        _ => match (&body.secret, &body.username, &body.password) {
            (Some(secret), None, None) if !secret.trim().is_empty() => secret.clone(),
            _ => {
                return Err(ApiError::BadRequest(
                    "`secret` is required for this integration".into(),
                ));
            }
        },
    };
    checks::check_secret("`secret`", &secret).map_err(ApiError::BadRequest)?;
    let base_url = body
        .base_url
        .as_deref()
        .map(|raw| parse_base_url(&app, &body.platform, raw))
        .transpose()?;
    let new = NewConnection {
        platform: body.platform,
        environment: Some(key.environment),
        identity: body.identity,
        identity_type: body.identity_type,
        name: body.name,
        description: body.description,
        tags: body.tags,
        base_url,
        secret,
        token_expires_at: None,
    };
    let limit = app.max_connections_per_environment;
    let replace = body.replace;
    let stored = app
        .vault
        .run(move |vault| store_connection(vault, &new, replace, limit))
        .await??;
    Ok(match stored {
        Stored::Created(record) => (StatusCode::CREATED, Json(view(&record))),
        Stored::Replaced(record) => (StatusCode::OK, Json(view(&record))),
    })
}

/// What `POST /v1/vault/connections` did.
enum Stored {
    /// Made a new connection.
    Created(ConnectionRecord),
    /// Stored the secret in the owner's existing connection (`replace`).
    Replaced(ConnectionRecord),
}

/// Store `new`: a new connection, or with `replace` the owner's connection if it has one (its
/// secret replaced, and the base URL, name, description and tags given): an app storing a
/// user's new key does not give the user a second connection, which would make calls that
/// name only the identity ambiguous.
fn store_connection(
    vault: &Vault,
    new: &NewConnection,
    replace: bool,
    limit: Option<u32>,
) -> anyhow::Result<Result<Stored, ApiError>> {
    let environment = new.environment.unwrap_or(Environment::Test);
    let _one_at_a_time = vault.owner_writes();
    let existing = match replace {
        // With an `identityType` the owner is the identity of that type: user 42 is not
        // organization 42, as execute and the connect flow tell them apart.
        true => vault.owner_connections(
            &new.platform,
            environment,
            new.identity.as_deref(),
            new.identity_type.as_deref(),
        )?,
        false => Vec::new(),
    };
    let current = match existing.as_slice() {
        [] => {
            return Ok(match vault.add_connection(new, limit)? {
                Ok(record) => Ok(Stored::Created(record)),
                Err(limit) => Err(ApiError::PlanLimitReached(limit.to_string())),
            });
        }
        [current] => current,
        several => {
            return Ok(Err(ApiError::AmbiguousConnection {
                message: format!(
                    "`replace`: the owner has {} {} connections; change the one meant with PATCH /v1/vault/connections/{{key}}",
                    several.len(),
                    new.platform
                ),
                candidates: several
                    .iter()
                    .take(super::connection::CANDIDATES_NAMED)
                    .map(|c| c.key.clone())
                    .collect(),
            }));
        }
    };
    let patch = ConnectionPatch {
        secret: Some(new.secret.clone()),
        base_url: new.base_url.clone().map(Some),
        name: new.name.clone(),
        description: new.description.clone(),
        tags: (!new.tags.is_empty()).then(|| new.tags.clone()),
        active: None,
    };
    let replaced = vault
        .update_connection(environment, &current.key, &patch)?
        .ok_or_else(|| anyhow::anyhow!("connection {} went while its secret was replaced", current.key))?;
    Ok(Ok(Stored::Replaced(replaced)))
}

async fn find(
    app: &AppState,
    key: &crate::vault::api_keys::ApiKey,
    id: String,
) -> Result<ConnectionRecord, ApiError> {
    let environment = key.environment;
    let lookup = id.clone();
    app.vault
        .run(move |vault| vault.get_connection(environment, &lookup))
        .await?
        .filter(|record| key.scope.allows(&record.platform))
        .ok_or_else(|| {
            let other = crate::error::other_environment(&id, environment);
            ApiError::NotFound(format!("no connection `{id}`{other}"))
        })
}

async fn read(
    State(app): State<AppState>,
    Caller(key): Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(view(&find(&app, &key, id).await?)))
}

/// `PATCH` body: every field optional; `baseUrl: null` clears the override.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PatchBody {
    name: Option<String>,
    description: Option<String>,
    tags: Option<Vec<String>>,
    active: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    base_url: Option<Option<String>>,
    secret: Option<String>,
}

/// Distinguishes an absent field (`None`) from an explicit `null` (`Some(None)`).
fn present<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(deserializer).map(Some)
}

async fn update(
    State(app): State<AppState>,
    Caller(key): Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<PatchBody>,
) -> Result<Json<Value>, ApiError> {
    let record = find(&app, &key, id).await?;
    check_text("name", body.name.as_ref())?;
    check_text("description", body.description.as_ref())?;
    if let Some(tags) = &body.tags {
        check_tags(tags)?;
    }
    if let Some(secret) = &body.secret {
        // Checked as POST checks it (`user:password` for basic auth) where the connector is
        // loaded; a connection whose connector is gone takes any well-formed secret.
        match app.registry.get(&record.platform) {
            Some(connector) => {
                checks::check_secret_for(&record.platform, &connector.manifest.auth, "`secret`", secret)
            }
            None => checks::check_secret("`secret`", secret),
        }
        .map_err(ApiError::BadRequest)?;
    }
    let base_url = match body.base_url {
        None => None,
        Some(None) => Some(None),
        Some(Some(raw)) => Some(Some(parse_base_url(&app, &record.platform, &raw)?)),
    };
    let moves_the_credential = matches!(&base_url, Some(Some(url)) if record.base_url.as_ref() != Some(url));
    if moves_the_credential && body.secret.is_none() {
        // The stored credential goes wherever the base URL points. Whoever may edit a
        // connection must not be able to send its write-only secret to a host of their choosing.
        return Err(ApiError::BadRequest(
            "`baseUrl` can only change together with `secret`: the connection's credential is sent \
             to its base URL (`baseUrl: null` returns to the integration's own)"
                .into(),
        ));
    }
    let patch = ConnectionPatch {
        name: body.name,
        description: body.description,
        tags: body.tags,
        active: body.active,
        base_url,
        secret: body.secret,
    };
    let environment = key.environment;
    let updated = app
        .vault
        .run(move |vault| vault.update_connection(environment, &record.public_id(), &patch))
        .await?
        .ok_or_else(|| ApiError::NotFound("the connection was deleted meanwhile".into()))?;
    Ok(Json(view(&updated)))
}

async fn remove(
    State(app): State<AppState>,
    Caller(key): Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let record = find(&app, &key, id).await?;
    let environment = key.environment;
    let public_id = record.public_id();
    app.vault
        .run(move |vault| vault.delete_connection(environment, &public_id))
        .await?;
    // Refreshed tokens this gateway kept for it (the database refused them) go with it.
    app.refresher.forget_connection(record.id);
    Ok(Json(
        json!({"id": record.public_id(), "key": record.key, "deleted": true}),
    ))
}
