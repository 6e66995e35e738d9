//! The admin API: API keys and OAuth apps, behind the operator's admin key (`SLUICE_ADMIN_KEY`).
//! Disabled (404) when no admin key is configured.

use super::AppState;
use super::extract::JsonBody;
use super::timestamps::{TimeInput, rfc3339};
use crate::error::ApiError;
use crate::vault::api_keys::{ApiKey, KeyOptions, Revocation, Scope, join_ids, key_name};
use crate::vault::oauth_apps::{NewOAuthApp, OAuthApp};
use axum::extract::{FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/keys", get(list).post(create))
        .route("/v1/admin/keys/{id}", delete(revoke))
        .route("/v1/admin/oauth-apps", get(list_oauth_apps))
        .route(
            "/v1/admin/oauth-apps/{integration}",
            get(get_oauth_app).put(put_oauth_app).delete(delete_oauth_app),
        )
}

/// Proof that the request carries the admin key.
struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, Self::Rejection> {
        let Some(expected) = &app.admin_key_hash else {
            return Err(ApiError::NotFound(
                "the admin API is disabled (set SLUICE_ADMIN_KEY)".into(),
            ));
        };
        let presented = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(super::extract::bearer_token)
            .ok_or_else(|| {
                ApiError::Unauthorized("missing admin key: send `Authorization: Bearer <admin key>`".into())
            })?;
        // Compare digests: equal-length values whose comparison time says nothing about the key.
        if crate::vault::crypto::api_key_hash(presented.trim()) != *expected {
            return Err(ApiError::Unauthorized("invalid admin key".into()));
        }
        Ok(Admin)
    }
}

fn view(key: &ApiKey) -> Value {
    json!({
        "id": key.id,
        "prefix": key.prefix,
        "name": key.name,
        "environment": key.environment.as_str(),
        "scope": key.scope.to_string(),
        "status": key.status(crate::vault::now()),
        "createdAt": rfc3339(key.created_at),
        "revokedAt": key.revoked_at.map(rfc3339),
        "expiresAt": key.expires_at.map(rfc3339),
        "dailyQuota": key.daily_quota,
        "perMinuteLimit": key.per_minute_limit,
        "maxInFlight": key.max_in_flight,
    })
}

async fn list(State(app): State<AppState>, _: Admin) -> Result<Json<Value>, ApiError> {
    let keys = app.vault.run(|vault| vault.list_api_keys()).await?;
    let rows: Vec<Value> = keys.iter().map(view).collect();
    Ok(Json(json!({"rows": rows, "total": rows.len()})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct CreateBody {
    #[serde(default = "default_environment")]
    environment: String,
    #[serde(default = "default_scope")]
    scope: String,
    name: Option<String>,
    expires_at: Option<TimeInput>,
    daily_quota: Option<u32>,
    per_minute_limit: Option<u32>,
    max_in_flight: Option<u32>,
}

fn default_environment() -> String {
    "test".into()
}

fn default_scope() -> String {
    "*".into()
}

async fn create(
    State(app): State<AppState>,
    _: Admin,
    JsonBody(body): JsonBody<CreateBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let environment = body
        .environment
        .parse()
        .map_err(|_| ApiError::BadRequest("`environment` must be test or live".into()))?;
    let scope =
        Scope::parse_for_new_key(&body.scope).map_err(|e| ApiError::BadRequest(format!("`scope`: {e}")))?;
    let expires_at = body
        .expires_at
        .map(|at| at.unix_seconds("expiresAt"))
        .transpose()?;
    if expires_at.is_some_and(|at| at <= crate::vault::now()) {
        return Err(ApiError::BadRequest("`expiresAt` must be in the future".into()));
    }
    for (field, limit) in [
        ("dailyQuota", body.daily_quota),
        ("perMinuteLimit", body.per_minute_limit),
        ("maxInFlight", body.max_in_flight),
    ] {
        if limit == Some(0) {
            return Err(ApiError::BadRequest(format!(
                "`{field}` must be at least 1 (leave it out for no limit)"
            )));
        }
    }
    let name = key_name(body.name).map_err(|e| ApiError::BadRequest(format!("`name`: {e}")))?;
    let warnings = scope_warnings(&app, &scope);
    let options = KeyOptions {
        environment,
        scope,
        name,
        expires_at,
        daily_quota: body.daily_quota,
        per_minute_limit: body.per_minute_limit,
        max_in_flight: body.max_in_flight,
    };
    let created = app.vault.run(move |vault| vault.create_api_key(&options)).await?;
    let mut reply = view(&created.record);
    reply["key"] = Value::String(created.key);
    if !warnings.is_empty() {
        reply["warnings"] = warnings.into();
    }
    Ok((StatusCode::CREATED, Json(reply)))
}

/// A typo in a scope makes a key that can call nothing it was meant for; the key may still be
/// made before its connector is installed, so an unknown name is a warning, not a refusal.
fn scope_warnings(app: &AppState, scope: &Scope) -> Vec<String> {
    let Scope::Only(ids) = scope else {
        return Vec::new();
    };
    ids.iter()
        .filter(|id| app.registry.get(id).is_none() && !app.registry.failed_to_load(id))
        .map(|id| {
            format!(
                "no connector `{id}` is installed on this gateway: check the scope for a typo (the key \
                 was created all the same)"
            )
        })
        .collect()
}

async fn revoke(
    State(app): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let target = id.clone();
    match app.vault.run(move |vault| vault.revoke_api_key(&target)).await? {
        Revocation::Revoked(revoked) => Ok(Json(json!({"id": revoked, "status": "revoked"}))),
        Revocation::NoActiveKey => Err(ApiError::NotFound(format!("no active key `{id}`"))),
        Revocation::Ambiguous(ids) => Err(ApiError::BadRequest(format!(
            "several active keys have the prefix `{id}` (ids {}); none was revoked: revoke by id",
            join_ids(&ids)
        ))),
    }
}

/// An OAuth app as the admin API shows it: never the client secret.
fn oauth_app_view(app: &OAuthApp) -> Value {
    json!({
        "integration": app.platform,
        "clientId": app.client_id,
        "redirectUrl": app.redirect_url.as_ref().map(|u| u.as_str()),
        "scopes": app.scopes,
        "authorizeUrl": app.authorize_url.as_ref().map(|u| u.as_str()),
        "tokenUrl": app.token_url.as_ref().map(|u| u.as_str()),
        "createdAt": rfc3339(app.created_at),
        "updatedAt": rfc3339(app.updated_at),
    })
}

async fn list_oauth_apps(State(app): State<AppState>, _: Admin) -> Result<Json<Value>, ApiError> {
    let apps = app.vault.run(|vault| vault.list_oauth_apps()).await?;
    let rows: Vec<Value> = apps.iter().map(oauth_app_view).collect();
    Ok(Json(json!({"rows": rows, "total": rows.len()})))
}

async fn get_oauth_app(
    State(app): State<AppState>,
    _: Admin,
    Path(integration): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let lookup = integration.clone();
    let found = app.vault.run(move |vault| vault.oauth_app(&lookup)).await?;
    let found =
        found.ok_or_else(|| ApiError::NotFound(format!("no OAuth app is registered for `{integration}`")))?;
    Ok(Json(oauth_app_view(&found)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct OAuthAppBody {
    client_id: String,
    client_secret: String,
    redirect_url: Option<String>,
    scopes: Option<Vec<String>>,
    authorize_url: Option<String>,
    token_url: Option<String>,
}

fn absolute_url(field: &str, value: Option<String>) -> Result<Option<url::Url>, ApiError> {
    value
        .map(|text| {
            crate::vault::checks::parse_oauth_url(&format!("`{field}`"), &text).map_err(ApiError::BadRequest)
        })
        .transpose()
}

/// An authorize or token URL: https unless the gateway may reach private upstreams.
fn provider_url(app: &AppState, field: &str, value: Option<String>) -> Result<Option<url::Url>, ApiError> {
    let plain_http_allowed =
        app.runtime.limits().address_policy == crate::egress::AddressPolicy::AllowPrivate;
    value
        .map(|text| {
            crate::vault::checks::parse_provider_url(&format!("`{field}`"), &text, plain_http_allowed)
                .map_err(ApiError::BadRequest)
        })
        .transpose()
}

async fn put_oauth_app(
    State(app): State<AppState>,
    _: Admin,
    Path(integration): Path<String>,
    JsonBody(body): JsonBody<OAuthAppBody>,
) -> Result<Json<Value>, ApiError> {
    let connector = app.connector(&integration)?;
    if !matches!(
        connector.manifest.auth,
        crate::runtime::manifest::AuthScheme::OAuth2(_)
    ) {
        return Err(ApiError::BadRequest(format!(
            "`{integration}` does not use OAuth 2.0"
        )));
    }
    if body.client_id.trim().is_empty() {
        return Err(ApiError::BadRequest("`clientId` is required".into()));
    }
    // As for connections' secrets: it is sent in requests and scrubbed from what comes back.
    crate::vault::checks::check_secret("`clientSecret`", &body.client_secret)
        .map_err(ApiError::BadRequest)?;
    let scopes = body.scopes.unwrap_or_default();
    for scope in &scopes {
        crate::vault::checks::check_oauth_scope("`scopes` entry", scope).map_err(ApiError::BadRequest)?;
    }
    let new = NewOAuthApp {
        platform: integration,
        client_id: body.client_id,
        client_secret: body.client_secret,
        redirect_url: absolute_url("redirectUrl", body.redirect_url)?,
        scopes,
        authorize_url: provider_url(&app, "authorizeUrl", body.authorize_url)?,
        token_url: provider_url(&app, "tokenUrl", body.token_url)?,
    };
    let stored = app.vault.run(move |vault| vault.put_oauth_app(&new)).await?;
    Ok(Json(oauth_app_view(&stored)))
}

async fn delete_oauth_app(
    State(app): State<AppState>,
    _: Admin,
    Path(integration): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let target = integration.clone();
    if !app
        .vault
        .run(move |vault| vault.delete_oauth_app(&target))
        .await?
    {
        return Err(ApiError::NotFound(format!(
            "no OAuth app is registered for `{integration}`"
        )));
    }
    Ok(Json(json!({"integration": integration, "status": "deleted"})))
}
