//! The end-user connect flow.
//!
//! - `POST /v1/connect` (API key) opens a connect session for an identity and integration and
//!   returns its URL; `GET /v1/connect/{id}` reports pending / connected / failed / expired.
//! - `GET /connect/{token}` is the page the end user opens. For OAuth integrations it links to
//!   `GET /connect/{token}/authorize`, which starts the authorization-code flow with `state`,
//!   PKCE (S256) and a browser-binding cookie; the provider sends the user back to
//!   `GET /connect/oauth/callback`, which exchanges the code and stores the tokens. For API-key
//!   and basic-auth integrations the page is a form that posts back to `POST /connect/{token}`.
//!
//! Protections: tokens and states are random and stored hashed; a state works once, only
//! within the session's lifetime and only in the browser that started it; the form carries a
//! token derived from the session and refuses cross-site posts; redirects go only to the
//! provider's authorize URL (configuration, never request input).

mod page;

use super::AppState;
use super::extract::{Caller, JsonBody};
use crate::error::ApiError;
use crate::oauth::{OAuthClient, pkce};
use crate::runtime::LoadedConnector;
use crate::runtime::manifest::AuthScheme;
use crate::vault::Vault;
use crate::vault::api_keys::Environment;
use crate::vault::connect_sessions::{ConnectSession, NewSession, SessionStatus};
use crate::vault::connections::{ConnectionSelector, NewConnection, PlanLimitReached};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Form, Json, Router};
use hmac::{Hmac, Mac};
use page::Field;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;

/// The cookie that ties an OAuth attempt to the browser that started it.
const BROWSER_COOKIE: &str = "sluice_connect";

/// Where providers send users back to, under the public URL.
const CALLBACK_PATH: &str = "/connect/oauth/callback";

/// Longest credential accepted from the form.
const MAX_FORM_SECRET: usize = 16 << 10;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/connect", axum::routing::post(create_session))
        .route("/v1/connect/{id}", get(session_status))
        .route("/connect", get(no_session))
        .route(CALLBACK_PATH, get(oauth_callback))
        .route("/connect/{token}", get(connect_page).post(submit_credentials))
        .route("/connect/{token}/authorize", get(start_oauth))
}

/// Open a session for a reconnect or first connect and return its URL, for `action_url`s.
/// A failure to write one is logged and answered with the generic connect page, so the
/// original error still reaches the caller.
pub(super) async fn action_url(
    app: &AppState,
    environment: Environment,
    integration: &str,
    identity: Option<String>,
    connection_key: Option<String>,
) -> String {
    let new = NewSession {
        environment,
        platform: integration.to_owned(),
        identity,
        identity_type: None,
        connection_key,
        ttl_seconds: app.connect_session_ttl,
    };
    match app
        .vault
        .run(move |vault| vault.create_connect_session(&new))
        .await
    {
        Ok((_, token)) => format!("{}/connect/{token}", app.public_url),
        Err(error) => {
            tracing::error!(error = %format!("{error:#}"), "could not open a connect session");
            format!("{}/connect", app.public_url)
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct CreateBody {
    #[serde(alias = "platform")]
    integration: String,
    identity: Option<String>,
    identity_type: Option<String>,
    connection_key: Option<String>,
}

fn session_view(app: &AppState, session: &ConnectSession, token: Option<&str>) -> Value {
    let status = session.status(crate::vault::now());
    let mut view = json!({
        "id": session.public_id,
        "status": status.as_str(),
        "integration": session.platform,
        "environment": session.environment.as_str(),
        "identity": session.identity,
        "identityType": session.identity_type,
        "createdAt": session.created_at,
        "expiresAt": session.expires_at,
    });
    if let Some(token) = token {
        view["url"] = Value::String(format!("{}/connect/{token}", app.public_url));
    }
    match status {
        SessionStatus::Connected => view["connectionKey"] = json!(session.connection_key),
        SessionStatus::Failed => view["error"] = json!(session.error),
        _ => {}
    }
    view
}

async fn create_session(
    State(app): State<AppState>,
    caller: Result<Caller, ApiError>,
    body: Result<JsonBody<CreateBody>, ApiError>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Caller(key) = caller?;
    let JsonBody(body) = body?;
    let connector = app
        .registry
        .get(&body.integration)
        .ok_or_else(|| ApiError::NotFound(format!("no integration named `{}`", body.integration)))?;
    if !key.scope.allows(&body.integration) {
        return Err(ApiError::ScopeNotAllowed(body.integration));
    }
    if !connector.manifest.auth.needs_connection() {
        return Err(ApiError::BadRequest(format!(
            "`{}` needs no credentials, so there is nothing to connect",
            body.integration
        )));
    }
    for (field, value) in [
        ("identity", &body.identity),
        ("identityType", &body.identity_type),
    ] {
        if value.as_ref().is_some_and(|v| v.is_empty() || v.len() > 200) {
            return Err(ApiError::BadRequest(format!(
                "`{field}` must be 1 to 200 characters"
            )));
        }
    }
    let environment = key.environment;
    if let Some(connection_key) = body.connection_key.clone() {
        let existing = app
            .vault
            .run(move |vault| vault.get_connection(environment, &connection_key))
            .await?;
        if existing.is_none_or(|c| c.platform != body.integration) {
            return Err(ApiError::NotFound(format!(
                "no {} connection `{}` in this environment",
                body.integration,
                body.connection_key.as_deref().unwrap_or_default()
            )));
        }
    }
    let new = NewSession {
        environment,
        platform: body.integration,
        identity: body.identity,
        identity_type: body.identity_type,
        connection_key: body.connection_key,
        ttl_seconds: app.connect_session_ttl,
    };
    let (session, token) = app
        .vault
        .run(move |vault| vault.create_connect_session(&new))
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(session_view(&app, &session, Some(&token))),
    ))
}

async fn session_status(
    State(app): State<AppState>,
    caller: Result<Caller, ApiError>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let Caller(key) = caller?;
    let environment = key.environment;
    let lookup = id.clone();
    let session = app
        .vault
        .run(move |vault| vault.connect_session(environment, &lookup))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no connect session `{id}`")))?;
    Ok(Json(session_view(&app, &session, None)))
}

async fn no_session() -> Response {
    page::message(
        StatusCode::NOT_FOUND,
        "No connect link",
        "This page needs a connect link. Ask the application you came from for a new one.",
        false,
    )
}

/// A page for a session that can no longer be used, or `None` if it is pending.
fn finished_page(session: &ConnectSession) -> Option<Response> {
    match session.status(crate::vault::now()) {
        SessionStatus::Pending => None,
        SessionStatus::Connected => Some(page::message(
            StatusCode::OK,
            "Already connected",
            "This account is connected. You can close this window.",
            true,
        )),
        SessionStatus::Expired => Some(page::message(
            StatusCode::GONE,
            "This link has expired",
            "Connect links are valid for a few minutes. Ask the application for a new one.",
            false,
        )),
        SessionStatus::Failed => Some(page::message(
            StatusCode::GONE,
            "Connecting failed",
            &format!(
                "{} Ask the application for a new link to try again.",
                session
                    .error
                    .as_deref()
                    .unwrap_or("The connection could not be made.")
            ),
            false,
        )),
    }
}

/// The pending session for `token` and its connector, or the page to show instead.
async fn pending_session(
    app: &AppState,
    token: &str,
) -> Result<(ConnectSession, Arc<LoadedConnector>), Response> {
    let lookup = token.to_owned();
    let session = match app
        .vault
        .run(move |vault| vault.connect_session_by_token(&lookup))
        .await
    {
        Ok(Some(session)) => session,
        Ok(None) => {
            return Err(page::message(
                StatusCode::NOT_FOUND,
                "Unknown connect link",
                "This connect link is not valid. Ask the application for a new one.",
                false,
            ));
        }
        Err(error) => return Err(internal_page(error)),
    };
    if let Some(done) = finished_page(&session) {
        return Err(done);
    }
    match app.registry.get(&session.platform) {
        Some(connector) => Ok((session, connector)),
        None => Err(page::message(
            StatusCode::NOT_FOUND,
            "Integration unavailable",
            &format!(
                "The {} integration is not available on this gateway.",
                session.platform
            ),
            false,
        )),
    }
}

fn internal_page(error: anyhow::Error) -> Response {
    tracing::error!(error = %format!("{error:#}"), "connect flow failed");
    page::message(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Something went wrong",
        "The gateway could not complete this step. Please try again.",
        false,
    )
}

/// The form token for a session: derived from the URL token with a key only the gateway has.
fn form_token(vault: &Vault, session_token: &str) -> String {
    let key = vault.derive_key("connect-form");
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&key).expect("HMAC takes any key length");
    mac.update(session_token.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// The inputs a non-OAuth auth scheme needs.
fn credential_fields(auth: &AuthScheme) -> Vec<Field> {
    match auth {
        AuthScheme::Basic => vec![
            Field {
                name: "username",
                label: "Username".into(),
                secret: false,
            },
            Field {
                name: "password",
                label: "Password".into(),
                secret: true,
            },
        ],
        AuthScheme::Header(name) => vec![Field {
            name: "secret",
            label: format!("API key (sent as `{name}`)"),
            secret: true,
        }],
        _ => vec![Field {
            name: "secret",
            label: "API key or token".into(),
            secret: true,
        }],
    }
}

async fn connect_page(State(app): State<AppState>, Path(token): Path<String>) -> Response {
    let (_, connector) = match pending_session(&app, &token).await {
        Ok(found) => found,
        Err(page) => return page,
    };
    let manifest = &connector.manifest;
    match &manifest.auth {
        AuthScheme::OAuth2(_) => page::oauth_start(&manifest.name, &format!("/connect/{token}/authorize")),
        auth => page::credentials_form(
            &manifest.name,
            &format!("/connect/{token}"),
            &form_token(&app.vault, &token),
            &credential_fields(auth),
        ),
    }
}

async fn submit_credentials(
    State(app): State<AppState>,
    Path(token): Path<String>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    // Browsers say where a post comes from; refuse posts another site made.
    let cross_site = headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site"));
    let expected = form_token(&app.vault, &token);
    let presented = form.get("csrf").map(String::as_str).unwrap_or_default();
    if cross_site || !constant_time_eq(presented.as_bytes(), expected.as_bytes()) {
        return page::message(
            StatusCode::FORBIDDEN,
            "Request refused",
            "This form was not submitted from its own page. Open the connect link again.",
            false,
        );
    }
    let (session, connector) = match pending_session(&app, &token).await {
        Ok(found) => found,
        Err(page) => return page,
    };
    let auth = &connector.manifest.auth;
    if matches!(auth, AuthScheme::OAuth2(_)) {
        return page::message(
            StatusCode::BAD_REQUEST,
            "Use the sign-in button",
            "This integration connects through its provider's sign-in page.",
            false,
        );
    }
    let value = |name: &str| form.get(name).map(|v| v.trim()).filter(|v| !v.is_empty());
    let secret = match auth {
        AuthScheme::Basic => match (value("username"), value("password")) {
            (Some(user), Some(password)) if !user.contains(':') => format!("{user}:{password}"),
            _ => return form_error(&connector, "Enter a username (without `:`) and a password."),
        },
        _ => match value("secret") {
            Some(secret) => secret.to_owned(),
            None => return form_error(&connector, "Enter the API key."),
        },
    };
    if secret.len() > MAX_FORM_SECRET || secret.chars().any(char::is_control) {
        return form_error(
            &connector,
            "That value is too long or contains control characters.",
        );
    }
    finish(&app, &connector, session, secret, None).await
}

fn form_error(connector: &LoadedConnector, text: &str) -> Response {
    page::message(
        StatusCode::BAD_REQUEST,
        &format!("Could not connect {}", connector.manifest.name),
        &format!("{text} Go back and try again."),
        false,
    )
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The connector's OAuth declaration and the operator's app, put together off the executor.
async fn resolve_client(
    app: &AppState,
    connector: &Arc<LoadedConnector>,
) -> anyhow::Result<Result<OAuthClient, crate::oauth::ClientError>> {
    let (vault, connector) = (app.vault.clone(), connector.clone());
    app.vault
        .run(move |_| Ok(OAuthClient::resolve(&vault, &connector.manifest)))
        .await
}

/// The redirect URI sent to the provider: the app's registered one or this gateway's callback.
fn redirect_uri(app: &AppState, client: &OAuthClient) -> String {
    client
        .redirect_url
        .as_ref()
        .map(|u| u.to_string())
        .unwrap_or_else(|| format!("{}{CALLBACK_PATH}", app.public_url))
}

async fn start_oauth(State(app): State<AppState>, Path(token): Path<String>) -> Response {
    let (session, connector) = match pending_session(&app, &token).await {
        Ok(found) => found,
        Err(page) => return page,
    };
    let client = match resolve_client(&app, &connector).await {
        Ok(Ok(client)) => client,
        Ok(Err(error)) => {
            tracing::warn!(integration = %connector.manifest.id, %error, "connect flow cannot start");
            return page::message(
                StatusCode::SERVICE_UNAVAILABLE,
                "Not available yet",
                &format!(
                    "{} sign-in is not set up on this gateway. Ask its operator to register an OAuth app.",
                    connector.manifest.name
                ),
                false,
            );
        }
        Err(error) => return internal_page(error),
    };
    let state = pkce::random_token(24);
    let browser = pkce::random_token(24);
    let verifier = pkce::verifier();
    let begun = {
        let (state, browser, verifier, session) = (state.clone(), browser.clone(), verifier.clone(), session);
        app.vault
            .run(move |vault| vault.begin_oauth(&session, &state, &browser, &verifier))
            .await
    };
    match begun {
        Ok(true) => {}
        Ok(false) => {
            return page::message(
                StatusCode::GONE,
                "This link has expired",
                "Ask the application for a new one.",
                false,
            );
        }
        Err(error) => return internal_page(error),
    }
    let target = client.authorization_url(&redirect_uri(&app, &client), &state, &pkce::challenge(&verifier));
    let secure = if app.public_url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{BROWSER_COOKIE}={browser}; Path=/connect; HttpOnly; SameSite=Lax; Max-Age={}{secure}",
        app.connect_session_ttl
    );
    let mut response = StatusCode::SEE_OTHER.into_response();
    let headers = response.headers_mut();
    if let (Ok(location), Ok(cookie)) = (
        HeaderValue::from_str(target.as_str()),
        HeaderValue::from_str(&cookie),
    ) {
        headers.insert(header::LOCATION, location);
        headers.insert(header::SET_COOKIE, cookie);
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    }
    response
}

#[derive(Debug, Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

fn browser_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == BROWSER_COOKIE)
        .map(|(_, value)| value.to_owned())
}

async fn oauth_callback(
    State(app): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<CallbackQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let refused = |text: &str| page::message(StatusCode::BAD_REQUEST, "Sign-in not completed", text, false);
    let Ok(Query(query)) = query else {
        return refused("The provider sent back a malformed answer.");
    };
    let Some(state) = query.state.filter(|s| !s.is_empty() && s.len() <= 512) else {
        return refused("The provider's answer did not say which sign-in it belongs to.");
    };
    let attempt = match app.vault.run(move |vault| vault.take_oauth_state(&state)).await {
        Ok(Some(attempt)) => attempt,
        Ok(None) => {
            return refused(
                "This sign-in was already completed, has expired, or is unknown. Open the connect link again.",
            );
        }
        Err(error) => return internal_page(error),
    };
    let session = attempt.session;
    let same_browser = browser_cookie(&headers).is_some_and(|cookie| {
        constant_time_eq(
            &crate::vault::crypto::api_key_hash(&cookie),
            &attempt.browser_hash,
        )
    });
    if !same_browser {
        fail(
            &app,
            &session,
            "the sign-in finished in a different browser than it started in",
        )
        .await;
        return refused("This sign-in was started in another browser. Open the connect link again here.");
    }
    if let Some(error) = query.error {
        let description = query.error_description.unwrap_or_default();
        let reason = format!("the provider returned `{error}` {description}");
        fail(&app, &session, reason.trim()).await;
        return page::message(
            StatusCode::OK,
            "Access was not granted",
            &format!("The provider said: {error}. {description}"),
            false,
        );
    }
    let Some(code) = query.code.filter(|c| !c.is_empty()) else {
        fail(&app, &session, "the provider sent no authorization code").await;
        return refused("The provider sent no authorization code.");
    };
    let Some(connector) = app.registry.get(&session.platform) else {
        fail(&app, &session, "the integration is no longer available").await;
        return refused("The integration is no longer available on this gateway.");
    };
    let client = match resolve_client(&app, &connector).await {
        Ok(Ok(client)) => client,
        Ok(Err(error)) => {
            fail(&app, &session, &error.to_string()).await;
            return refused("Sign-in is not set up on this gateway any more.");
        }
        Err(error) => return internal_page(error),
    };
    let exchanged = app
        .refresher
        .endpoint()
        .exchange_code(&client, &code, &redirect_uri(&app, &client), &attempt.verifier)
        .await;
    let tokens = match exchanged {
        Ok(tokens) => tokens,
        Err(error) => {
            tracing::warn!(integration = %session.platform, %error, "authorization code exchange failed");
            fail(&app, &session, &error.to_string()).await;
            return page::message(
                StatusCode::BAD_GATEWAY,
                "Could not finish connecting",
                &format!("{error}. Open the connect link again to retry."),
                false,
            );
        }
    };
    let expires_at = tokens.expires_at;
    finish(&app, &connector, session, tokens.to_secret(), expires_at).await
}

async fn fail(app: &AppState, session: &ConnectSession, reason: &str) {
    let (id, reason) = (session.id, reason.to_owned());
    if let Err(error) = app
        .vault
        .run(move |vault| vault.fail_connect_session(id, &reason))
        .await
    {
        tracing::error!(error = %format!("{error:#}"), "could not record a failed connect session");
    }
}

/// Store the credential — updating the session's connection, or the identity's existing one,
/// or creating one — mark the session connected and show the success page.
async fn finish(
    app: &AppState,
    connector: &LoadedConnector,
    session: ConnectSession,
    secret: String,
    token_expires_at: Option<i64>,
) -> Response {
    let limit = app.max_connections_per_environment;
    let stored_session = session.clone();
    let saved = app
        .vault
        .run(move |vault| save_connection(vault, &stored_session, &secret, token_expires_at, limit))
        .await;
    let name = &connector.manifest.name;
    match saved {
        Ok(Ok(connection_key)) => {
            tracing::info!(integration = %session.platform, connection = %connection_key, session = %session.public_id, "account connected");
            page::message(
                StatusCode::OK,
                &format!("{name} connected"),
                &format!("Your {name} account is connected. You can close this window."),
                true,
            )
        }
        Ok(Err(limit)) => {
            fail(app, &session, &limit.to_string()).await;
            page::message(
                StatusCode::FORBIDDEN,
                "Could not connect",
                &limit.to_string(),
                false,
            )
        }
        Err(error) => internal_page(error),
    }
}

fn save_connection(
    vault: &Vault,
    session: &ConnectSession,
    secret: &str,
    token_expires_at: Option<i64>,
    limit: Option<u32>,
) -> anyhow::Result<Result<String, PlanLimitReached>> {
    let environment = session.environment;
    let existing = match &session.connection_key {
        Some(key) => vault.get_connection(environment, key)?,
        None if session.identity.is_some() => {
            let selector = ConnectionSelector {
                connection_key: None,
                identity: session.identity.clone(),
            };
            vault
                .find_connections(&session.platform, environment, &selector)?
                .pop()
        }
        None => None,
    };
    let key = match existing.filter(|c| c.platform == session.platform) {
        Some(existing) => {
            vault.store_secret(&existing, secret, token_expires_at)?;
            existing.key
        }
        None => {
            let new = NewConnection {
                platform: session.platform.clone(),
                environment: Some(environment),
                identity: session.identity.clone(),
                identity_type: session.identity_type.clone(),
                secret: secret.to_owned(),
                token_expires_at,
                ..NewConnection::default()
            };
            match vault.add_connection(&new, limit)? {
                Ok(record) => record.key,
                Err(limit) => return Ok(Err(limit)),
            }
        }
    };
    vault.complete_connect_session(session.id, &key)?;
    Ok(Ok(key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vault::connections::TokenSet;

    #[test]
    fn the_browser_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; sluice_connect=abc; b=2"),
        );
        assert_eq!(browser_cookie(&headers).as_deref(), Some("abc"));
        headers.insert(header::COOKIE, HeaderValue::from_static("sluice_connectx=abc"));
        assert_eq!(browser_cookie(&headers), None);
    }

    #[test]
    fn form_tokens_compare_in_constant_time_and_exactly() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }

    #[test]
    fn tokens_serialise_for_storage_without_leaking_in_debug() {
        let tokens = TokenSet {
            access_token: "at-secret".into(),
            refresh_token: Some("rt-secret".into()),
            expires_at: Some(10),
            scope: None,
        };
        assert!(!format!("{tokens:?}").contains("secret"));
        assert_eq!(
            TokenSet::from_secret(&tokens.to_secret())
                .refresh_token
                .as_deref(),
            Some("rt-secret")
        );
        assert_eq!(TokenSet::from_secret("plain-token").access_token, "plain-token");
    }
}
