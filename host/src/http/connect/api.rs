//! The app-facing half: `POST /v1/connect` opens a session, `GET /v1/connect/{id}` polls it,
//! `DELETE /v1/connect/{id}` cancels it.

use super::super::AppState;
use super::super::extract::{Caller, JsonBody};
use super::super::timestamps::rfc3339;
use super::super::vault::{check_identity_type, parse_base_url};
use crate::error::ApiError;
use crate::oauth::ClientError;
use crate::runtime::manifest::AuthScheme;
use crate::vault::api_keys::ApiKey;
use crate::vault::connect_sessions::{ConnectSession, FailureCode, NewSession, SessionStatus};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct CreateBody {
    #[serde(alias = "platform")]
    integration: String,
    #[serde(default, deserialize_with = "crate::http::extract::not_null")]
    identity: Option<String>,
    #[serde(default, deserialize_with = "crate::http::extract::not_null")]
    identity_type: Option<String>,
    #[serde(default, deserialize_with = "crate::http::extract::not_null")]
    connection_key: Option<String>,
    base_url: Option<String>,
    return_url: Option<String>,
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
        "baseUrl": session.base_url.as_ref().map(url::Url::as_str),
        "returnUrl": session.return_url.as_ref().map(url::Url::as_str),
        "createdAt": rfc3339(session.created_at),
        "expiresAt": rfc3339(session.expires_at),
    });
    if let Some(token) = token {
        view["url"] = Value::String(format!("{}/connect/{token}", app.public_url));
    }
    match status {
        SessionStatus::Connected => view["connectionKey"] = json!(session.connection_key),
        SessionStatus::Failed => {
            view["errorCode"] = json!(session.error_code);
            view["error"] = json!(session.error);
        }
        _ => {}
    }
    view
}

pub(super) async fn create_session(
    State(app): State<AppState>,
    caller: Result<Caller, ApiError>,
    body: Result<JsonBody<CreateBody>, ApiError>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Caller(key) = caller?;
    let JsonBody(body) = body?;
    let connector = app.registry.get(&body.integration).ok_or_else(|| {
        // A field of the body, as in the vault API: the route itself exists.
        ApiError::BadRequest(format!(
            "`integration`: no integration named `{}`",
            body.integration
        ))
    })?;
    if !key.scope.allows(&body.integration) {
        return Err(ApiError::ScopeNotAllowed(body.integration));
    }
    if !connector.manifest.auth.needs_connection() {
        return Err(ApiError::BadRequest(format!(
            "`{}` needs no credentials, so there is nothing to connect",
            body.integration
        )));
    }
    if let Some(identity) = &body.identity {
        crate::vault::checks::check_identity("`identity`", identity).map_err(ApiError::BadRequest)?;
    }
    // An OAuth sign-in hands the user's tokens to whatever base URL the session names, and the
    // app choosing it is not the user: only where the operator lists the allowed ones.
    let oauth = matches!(connector.manifest.auth, AuthScheme::OAuth2(_));
    if body.base_url.is_some() && oauth && !connector.base_urls_set_by_operator() {
        return Err(ApiError::BadRequest(format!(
            "`baseUrl`: a {} sign-in's tokens go to the connection's base URL, so a session may \
             choose one only among those the operator allows (`baseUrls` for `{}` in the policy file)",
            connector.manifest.name, body.integration
        )));
    }
    // An OAuth integration without the operator's app would fail only at the user's click:
    // say so to the app now. (A vault failure here is the gateway's, not the app's.)
    if oauth && let Err(not_set_up) = super::oauth::resolve_client(&app, &connector).await? {
        if let ClientError::Vault(error) = not_set_up {
            return Err(ApiError::from(error));
        }
        return Err(ApiError::BadRequest(format!(
            "{} sign-in is not set up on this gateway: {not_set_up}",
            connector.manifest.name
        )));
    }
    if let Some(kind) = &body.identity_type {
        // The same kinds the vault API accepts, so the connection made can be filtered by it.
        check_identity_type(kind)?;
        // As in the vault API: it would label the key owner's own default connection (a
        // reconnect keeps the connection's own identity).
        if body.identity.is_none() && body.connection_key.is_none() {
            return Err(ApiError::BadRequest(
                "`identityType` says what kind of identity `identity` is, and `identity` is missing".into(),
            ));
        }
    }
    // The credential the flow stores goes with this base URL, so setting it here moves no
    // credential that already exists.
    let mut base_url = body
        .base_url
        .as_deref()
        .map(|raw| parse_base_url(&app, &body.integration, raw))
        .transpose()?;
    let mut identity = body.identity;
    let mut identity_type = body.identity_type;
    let environment = key.environment;
    if let Some(connection_key) = body.connection_key.clone() {
        let existing = app
            .vault
            .run(move |vault| vault.get_connection(environment, &connection_key))
            .await?
            .filter(|c| c.platform == body.integration)
            .ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "`connectionKey`: no {} connection `{}` in this environment",
                    body.integration,
                    body.connection_key.as_deref().unwrap_or_default()
                ))
            })?;
        // Calls cannot use an inactive connection, however it is reconnected: the flow would
        // report it connected, and the calls that follow would ask for a connection again.
        if !existing.active {
            return Err(ApiError::BadRequest(format!(
                "`connectionKey`: connection `{}` is inactive; activate it first (PATCH \
                 /v1/vault/connections/{{key}} with {{\"active\": true}})",
                existing.key
            )));
        }
        // A reconnect is for the connection's own identity; another would be misreported.
        if identity.is_some() && identity != existing.identity {
            return Err(ApiError::BadRequest(format!(
                "`identity` is not the identity of connection `{}`: leave it out to reconnect that connection",
                existing.key
            )));
        }
        // A connection without a type keeps none: only one that has another is a conflict.
        if existing.identity_type.is_some()
            && identity_type.is_some()
            && identity_type != existing.identity_type
        {
            return Err(ApiError::BadRequest(format!(
                "`identityType` is not the identity type of connection `{}`: leave it out to reconnect that connection",
                existing.key
            )));
        }
        identity = existing.identity;
        identity_type = existing.identity_type;
        // The page tells the user where the credential goes: where this connection sends it,
        // unless the session moves it.
        if base_url.is_none() {
            base_url = existing.base_url;
        }
    }
    let new = NewSession {
        environment,
        platform: body.integration,
        identity,
        identity_type,
        connection_key: body.connection_key,
        base_url,
        return_url: body.return_url.as_deref().map(parse_return_url).transpose()?,
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

/// Longest `returnUrl` accepted.
const MAX_RETURN_URL_BYTES: usize = 2048;

/// The app's page the user returns to: `https`, or `http` on this machine (an app in
/// development), without credentials in it — the flow's outcome is added to its query.
fn parse_return_url(raw: &str) -> Result<url::Url, ApiError> {
    let refuse = |why: &str| ApiError::BadRequest(format!("`returnUrl`: {why}"));
    if raw.len() > MAX_RETURN_URL_BYTES {
        return Err(refuse(&format!("longer than {MAX_RETURN_URL_BYTES} bytes")));
    }
    let url = url::Url::parse(raw).map_err(|e| refuse(&format!("not an absolute URL ({e})")))?;
    let loopback = match url.host() {
        // A host name goes into the form page's Content-Security-Policy: letters, digits, `-`
        // and `.` only (URL parsing lets more through).
        Some(url::Host::Domain(domain))
            if !domain
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.') =>
        {
            return Err(refuse("the host name may hold only letters, digits, `-` and `.`"));
        }
        Some(url::Host::Domain(domain)) => domain.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        // The form page must let its post go on to the return origin (`form-action`), and a
        // Content-Security-Policy cannot name an IPv6 address: browsers would stop there.
        Some(url::Host::Ipv6(_)) => {
            return Err(refuse(
                "must name a host or an IPv4 address: browsers cannot be let through to an IPv6 address",
            ));
        }
        None => false,
    };
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        _ => return Err(refuse("must be an https URL (http only on localhost)")),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(refuse("must not hold a user name or password"));
    }
    Ok(url)
}

pub(super) async fn session_status(
    State(app): State<AppState>,
    caller: Result<Caller, ApiError>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let Caller(key) = caller?;
    let session = session_of(&app, &key, id).await?;
    Ok(Json(session_view(&app, &session, None)))
}

/// `DELETE /v1/connect/{id}`: end a pending session, so its link stops working (the user
/// left, or the app disconnected them meanwhile). It then reads `failed` with `errorCode`
/// `cancelled`. A session that has ended already stays as it ended, and is returned as it is:
/// a `connected` one made its connection, which the vault API removes.
pub(super) async fn cancel_session(
    State(app): State<AppState>,
    caller: Result<Caller, ApiError>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let Caller(key) = caller?;
    let session = session_of(&app, &key, id.clone()).await?;
    if session.status(crate::vault::now()) != SessionStatus::Pending {
        return Ok(Json(session_view(&app, &session, None)));
    }
    let row_id = session.id;
    app.vault
        .run(move |vault| {
            // Not while a flow is storing its credential: the cancel comes before (nothing is
            // stored) or after (the session is connected and stays so).
            let _one_at_a_time = vault.owner_writes();
            vault.fail_connect_session(
                row_id,
                FailureCode::Cancelled,
                "the application cancelled the session",
            )
        })
        .await?;
    tracing::info!(session = %session.public_id, "connect session cancelled");
    let session = session_of(&app, &key, id).await?;
    Ok(Json(session_view(&app, &session, None)))
}

/// The session `id` of the key's environment, unless its integration is outside the key's
/// scope: such sessions are not there for this key, as connections outside it are not in
/// its vault list.
async fn session_of(app: &AppState, key: &ApiKey, id: String) -> Result<ConnectSession, ApiError> {
    let environment = key.environment;
    let lookup = id.clone();
    app.vault
        .run(move |vault| vault.connect_session(environment, &lookup))
        .await?
        .filter(|session| key.scope.allows(&session.platform))
        .ok_or_else(|| ApiError::NotFound(format!("no connect session `{id}`")))
}
