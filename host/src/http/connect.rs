//! The end-user connect flow.
//!
//! - `POST /v1/connect` (API key) opens a connect session for an identity and integration and
//!   returns its URL; `GET /v1/connect/{id}` reports pending / connected / failed / expired.
//! - `GET /connect/{token}` is the page the end user opens. For OAuth integrations it links to
//!   `GET /connect/{token}/authorize?shown=…`, which starts the authorization-code flow with
//!   `state`, PKCE (S256) and a browser-binding cookie; the provider sends the user back to
//!   `GET /connect/oauth/callback`, which exchanges the code and stores the tokens. For API-key
//!   and basic-auth integrations the page is a form that posts back to `POST /connect/{token}`.
//!
//! Protections: tokens and states are random and stored hashed; a state works once, only
//! within the session's lifetime and only in the browser that started it; the form and the
//! sign-in link carry a token derived from the session and the destination the page named
//! (the credential is stored only if that destination still holds, also at the OAuth
//! callback), and cross-site posts are refused; redirects go only to the
//! provider's authorize URL (configuration, never request input) and, once the flow has ended,
//! to the `returnUrl` the app set on the session with its API key.

//!
//! Modules: [`api`] (the app-facing routes), [`form`] (API-key and basic-auth credentials),
//! [`oauth`] (authorize and callback), [`page`] (HTML); this file holds what they share —
//! session lookup, the finished-session pages, storing the connection.

mod api;
mod form;
mod oauth;
mod page;

use api::{cancel_session, create_session, session_status};
use form::{credential_fields, page_token, submit_credentials};
use oauth::{CALLBACK_PATH, oauth_callback, start_oauth};

use super::AppState;
use crate::error::ActionUrl;
use crate::runtime::LoadedConnector;
use crate::runtime::manifest::AuthScheme;
use crate::vault::Vault;
use crate::vault::api_keys::Environment;
use crate::vault::connect_sessions::{ConnectSession, FailureCode, NewSession, SessionStatus};
use crate::vault::connections::{ConnectionRecord, NewConnection, PlanLimitReached};
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use std::sync::Arc;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/connect", axum::routing::post(create_session))
        .route("/v1/connect/{id}", get(session_status).delete(cancel_session))
        .route("/connect", get(no_session))
        .route(CALLBACK_PATH, get(oauth_callback))
        .route("/connect/{token}", get(connect_page).post(submit_credentials))
        .route("/connect/{token}/authorize", get(start_oauth))
}

/// The `action_url` for a first connection to `integration`, unless no link could work: an
/// OAuth integration whose sign-in the operator has not set up (no OAuth app) would only lead
/// the user to a "not available" page.
pub(super) async fn first_connect_url(
    app: &AppState,
    environment: Environment,
    integration: &str,
    identity: Option<String>,
    identity_type: Option<String>,
) -> Option<ActionUrl> {
    if let Some(connector) = app.registry.get(integration)
        && matches!(connector.manifest.auth, AuthScheme::OAuth2(_))
        && !matches!(oauth::resolve_client(app, &connector).await, Ok(Ok(_)))
    {
        return None;
    }
    let owner = Owner {
        identity,
        identity_type,
    };
    Some(action_url(app, environment, integration, owner, None).await)
}

/// Where the user reconnects `record` when the upstream refused it (`credential_status` 401)
/// and it has failed already (its credential was revoked or rotated there), as `token_expired`
/// says for OAuth. Only then, so that one 401 (a token without a scope) opens no session.
pub(super) async fn reconnect_if_failed(
    app: &AppState,
    record: &ConnectionRecord,
    credential_status: Option<u16>,
) -> Option<ActionUrl> {
    match credential_status {
        Some(401) if record.state == "failed" => Some(reconnect_url(app, record).await),
        _ => None,
    }
}

/// A session that reconnects `record` (for its identity), for an `action_url`.
pub(super) async fn reconnect_url(app: &AppState, record: &ConnectionRecord) -> ActionUrl {
    let owner = Owner {
        identity: record.identity.clone(),
        identity_type: record.identity_type.clone(),
    };
    action_url(
        app,
        record.environment,
        &record.platform,
        owner,
        Some(record.key.clone()),
    )
    .await
}

/// Whom a connect session connects an account for: the identity a call named, and the kind of
/// owner it is, if the call said.
pub(super) struct Owner {
    identity: Option<String>,
    identity_type: Option<String>,
}

/// A session for a reconnect or first connect (the one an earlier call opened for the same
/// thing, while it has half its lifetime left), and its URL, for `action_url`s. A failure to
/// write one is logged and answered with the generic connect page, so the original error
/// still reaches the caller.
pub(super) async fn action_url(
    app: &AppState,
    environment: Environment,
    integration: &str,
    owner: Owner,
    connection_key: Option<String>,
) -> ActionUrl {
    let new = NewSession {
        environment,
        platform: integration.to_owned(),
        identity: owner.identity,
        identity_type: owner.identity_type,
        connection_key,
        base_url: None,
        // The caller of a call did not ask for a connect flow, so it named no page to return to.
        return_url: None,
        ttl_seconds: app.connect_session_ttl,
    };
    match app
        .vault
        .run(move |vault| vault.connect_session_for_action(&new))
        .await
    {
        Ok((session, token)) => ActionUrl {
            url: format!("{}/connect/{token}", app.public_url),
            session_id: Some(session.public_id),
        },
        Err(error) => {
            tracing::error!(error = %format!("{error:#}"), "could not open a connect session");
            ActionUrl {
                url: format!("{}/connect", app.public_url),
                session_id: None,
            }
        }
    }
}

async fn no_session() -> Response {
    page::message(
        StatusCode::NOT_FOUND,
        "No connect link",
        "This page needs a connect link. Ask the application you came from for a new one.",
        false,
    )
}

/// A page for a session that can no longer be used, or `None` if it is pending. A session
/// that ended sends the user back to the app's `returnUrl` again, if it has one (a form posted
/// twice, the link opened again) — only within the session's lifetime, so that an old link
/// does not stay a redirect from the gateway's address for the day it is kept.
fn finished_page(session: &ConnectSession) -> Option<Response> {
    let now = crate::vault::now();
    let back_to_app = |ended, page| match now < session.expires_at {
        true => back_to_app(session, ended, page),
        false => page,
    };
    match session.status(now) {
        SessionStatus::Pending => None,
        SessionStatus::Connected => {
            let page = page::message(
                StatusCode::OK,
                "Already connected",
                "This account is connected. You can close this window.",
                true,
            );
            let connection_key = session.connection_key.as_deref().unwrap_or_default();
            Some(back_to_app(Ended::Connected(connection_key), page))
        }
        // Not sent back on its own: past its lifetime a link would otherwise stay a redirect
        // from the gateway's address to wherever its app pointed it. The user is offered the
        // way back instead, and the app is told `expired`, so it can open a new session.
        SessionStatus::Expired => Some(page::message_with_return(
            StatusCode::GONE,
            "This link has expired",
            "Connect links are valid for a few minutes. Ask the application for a new one.",
            return_target(session, Ended::Expired).as_ref(),
        )),
        SessionStatus::Failed => {
            let reason = session
                .error
                .as_deref()
                .unwrap_or("the connection could not be made");
            let page = page::message(
                StatusCode::GONE,
                "Connecting failed",
                &format!(
                    "{} Ask the application for a new link to try again.",
                    as_sentence(reason)
                ),
                false,
            );
            Some(back_to_app(
                Ended::Failed(session.error_code.as_deref(), reason),
                page,
            ))
        }
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

/// A recorded failure reason (`the provider returned …`) as a sentence of a page: capitalised,
/// with its full stop.
fn as_sentence(reason: &str) -> String {
    let reason = reason.trim().trim_end_matches('.');
    let mut chars = reason.chars();
    match chars.next() {
        Some(first) => format!("{}{}.", first.to_uppercase(), chars.as_str()),
        None => String::new(),
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

async fn connect_page(State(app): State<AppState>, Path(token): Path<String>) -> Response {
    let (session, connector) = match pending_session(&app, &token).await {
        Ok(found) => found,
        Err(page) => return page,
    };
    let manifest = &connector.manifest;
    let origin = match destination_origin(&app, &session, &connector).await {
        Ok(origin) => origin,
        Err(page) => return page,
    };
    match &manifest.auth {
        AuthScheme::OAuth2(_) => {
            let shown = page_token(&app.vault, &token, &origin);
            page::oauth_start(
                &manifest.name,
                &origin,
                &format!("/connect/{token}/authorize?shown={shown}"),
            )
        }
        auth => {
            let return_origin = session
                .return_url
                .as_ref()
                .map(|url| url.origin().ascii_serialization());
            let target = page::FormTarget {
                action: &format!("/connect/{token}"),
                csrf: &page_token(&app.vault, &token, &origin),
                return_origin: return_origin.as_deref(),
            };
            page::credentials_form(&manifest.name, &origin, &target, &credential_fields(auth))
        }
    }
}

/// Where the credential the flow stores will be used, as the page tells the user: the
/// application may have chosen the base URL (`baseUrl` on the session), or the connection the
/// flow updates has one of its own, and only the user can tell whether it is right. Scheme,
/// host and port: `http://` or an odd port is worth seeing too.
async fn destination_origin(
    app: &AppState,
    session: &ConnectSession,
    connector: &LoadedConnector,
) -> Result<String, Response> {
    let looked_up = session.clone();
    let target = app
        .vault
        .run(move |vault| target_of(vault, &looked_up))
        .await
        .map_err(internal_page)?;
    let updated = match target {
        Target::Existing(record) => Some(*record),
        Target::New => None,
        Target::Removed => return Err(reconnected_connection_removed(app, session).await),
    };
    Ok(destination_of(
        session,
        updated.as_ref(),
        &connector.manifest.base_url,
    ))
}

/// End `session`, which reconnects a connection the app has removed since: storing the
/// credential in a new connection would undo the app's disconnect.
async fn reconnected_connection_removed(app: &AppState, session: &ConnectSession) -> Response {
    let reason = "the connection this link reconnects was removed";
    tracing::info!(session = %session.public_id, "connect flow refused: {reason}");
    let page = page::message(
        StatusCode::GONE,
        "Could not connect",
        "The connection this link reconnects was removed, so nothing was stored. Ask the application for a new link.",
        false,
    );
    fail(app, session, FailureCode::ConnectionRemoved, reason, page).await
}

/// The origin a flow on `session` sends its credential to: the session's base URL, else that
/// of the connection it updates (`updated`), else the connector's (`default`).
fn destination_of(
    session: &ConnectSession,
    updated: Option<&ConnectionRecord>,
    default: &url::Url,
) -> String {
    session
        .base_url
        .as_ref()
        .or(updated.and_then(|record| record.base_url.as_ref()))
        .unwrap_or(default)
        .origin()
        .ascii_serialization()
}

/// The connection a session's credential goes into.
#[derive(Debug)]
enum Target {
    /// This one: the connection the session reconnects, or the one calls naming the session's
    /// owner use (the identity's only connection, or the key owner's only one made without an
    /// identity).
    Existing(Box<ConnectionRecord>),
    /// A new one: the owner has none, or several (a new one does not pick among them).
    New,
    /// None: the connection the session reconnects was removed since it began.
    Removed,
}

/// Where a flow on `session` stores its credential: the connection it reconnects, or the one a
/// call naming the session's owner (its identity and type, or the key's owner when it has no
/// identity) would use. A connection of another kind of owner with the same identity
/// (organization `42` for user `42`) is another tenant's and is never updated; nor is one of
/// several the owner has, which a call could not tell apart either: the flow then makes a
/// connection of its own.
fn target_of(vault: &Vault, session: &ConnectSession) -> anyhow::Result<Target> {
    let environment = session.environment;
    if let Some(key) = &session.connection_key {
        let existing = vault
            .get_connection(environment, key)?
            .filter(|c| c.platform == session.platform);
        return Ok(existing.map_or(Target::Removed, |record| Target::Existing(Box::new(record))));
    }
    let mut owners = vault.owner_connections(
        &session.platform,
        environment,
        session.identity.as_deref(),
        session.identity_type.as_deref(),
    )?;
    Ok(match (owners.pop(), owners.is_empty()) {
        (Some(only), true) => Target::Existing(Box::new(only)),
        _ => Target::New,
    })
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Record that `session` failed (`code`, for `reason`), and send the user back to the app with
/// it, or show `page` when the app named no page to return to.
async fn fail(
    app: &AppState,
    session: &ConnectSession,
    code: FailureCode,
    reason: &str,
    page: Response,
) -> Response {
    let (id, recorded) = (session.id, reason.to_owned());
    let (environment, public_id) = (session.environment, session.public_id.clone());
    // `None` if it failed here, else how it had ended already.
    let ended_before = move |vault: &Vault| -> anyhow::Result<Option<ConnectSession>> {
        if vault.fail_connect_session(id, code, &recorded)? {
            return Ok(None);
        }
        vault.connect_session(environment, &public_id)
    };
    match app.vault.run(ended_before).await {
        Ok(None) => {}
        Ok(Some(ended)) => {
            // Connected, or cancelled, meanwhile: the user and the app hear how it did end.
            tracing::info!(session = %session.public_id, "the connect session had ended already");
            if let Some(page) = finished_page(&ended) {
                return page;
            }
        }
        Err(error) => {
            tracing::error!(error = %format!("{error:#}"), "could not record a failed connect session")
        }
    }
    back_to_app(session, Ended::Failed(Some(code.as_str()), reason), page)
}

/// The query parameters that tell the app's return page how the flow ended.
const OUTCOME_PARAMS: [&str; 5] = [
    "connectSessionId",
    "status",
    "connectionKey",
    "error",
    "errorCode",
];

/// How a session ended, as the app's return page is told.
enum Ended<'a> {
    /// With this connection key.
    Connected(&'a str),
    /// For this reason: its code (a [`FailureCode`]'s wire name; none for sessions that
    /// failed before codes were recorded) and message.
    Failed(Option<&'a str>, &'a str),
    /// Unused within its lifetime.
    Expired,
}

/// A `303` back to the app's `returnUrl` with the outcome added to its query —
/// `connectSessionId`, `status` (`connected` or `failed`) and `connectionKey` or `error`, as
/// `GET /v1/connect/{id}` says them — or `page` when the app named no page to return to.
fn back_to_app(session: &ConnectSession, ended: Ended<'_>, page: Response) -> Response {
    match return_target(session, ended) {
        Some(target) => page::redirect(&target),
        None => page,
    }
}

/// The app's `returnUrl` with the outcome added to its query, if the session has one.
fn return_target(session: &ConnectSession, ended: Ended<'_>) -> Option<url::Url> {
    let return_url = session.return_url.as_ref()?;
    let mut target = return_url.clone();
    // The outcome's names replace any the app's URL has, so `status` is read as the gateway's.
    let kept: Vec<(String, String)> = return_url
        .query_pairs()
        .filter(|(name, _)| !OUTCOME_PARAMS.contains(&name.as_ref()))
        .map(|(name, value)| (name.into_owned(), value.into_owned()))
        .collect();
    {
        let mut query = target.query_pairs_mut();
        query.clear().extend_pairs(&kept);
        query.append_pair("connectSessionId", &session.public_id);
        match ended {
            Ended::Connected(connection_key) => {
                query.append_pair("status", "connected");
                query.append_pair("connectionKey", connection_key);
            }
            Ended::Failed(code, reason) => {
                query.append_pair("status", "failed");
                if let Some(code) = code {
                    query.append_pair("errorCode", code);
                }
                query.append_pair("error", reason);
            }
            Ended::Expired => {
                query.append_pair("status", "expired");
            }
        }
    }
    Some(target)
}

/// Store the credential — updating the session's connection, or the identity's existing one,
/// or creating one — mark the session connected and show the success page.
/// What a flow stores: the credential, for the destination its page named.
pub(super) struct Credential {
    /// The secret (for OAuth, the token set).
    pub secret: String,
    /// When an OAuth access token expires.
    pub token_expires_at: Option<i64>,
    /// The origin the page named as where it will be used.
    pub destination: String,
}

/// What became of storing a flow's credential.
enum Saved {
    /// Stored in the connection with this key.
    Connected(String),
    /// The environment holds as many connections as it may.
    PlanLimit(PlanLimitReached),
    /// The credential would now go elsewhere than the page said (to this origin): not stored.
    DestinationMoved(String),
    /// The connection the session reconnects was removed: not stored.
    ConnectionRemoved,
    /// The session ended while the user was at it (this is how it stands now, `None` if it
    /// has been deleted): not stored.
    SessionEnded(Option<Box<ConnectSession>>),
}

async fn finish(
    app: &AppState,
    connector: &LoadedConnector,
    session: ConnectSession,
    credential: Credential,
) -> Response {
    let limit = app.max_connections_per_environment;
    let stored_session = session.clone();
    let default_base_url = connector.manifest.base_url.clone();
    let saved = app
        .vault
        .run(move |vault| save_connection(vault, &stored_session, &credential, &default_base_url, limit))
        .await;
    let name = &connector.manifest.name;
    match saved {
        Ok(Saved::DestinationMoved(now)) => {
            // The session stays open: the user reads the page again and decides.
            tracing::info!(session = %session.public_id, destination = %now, "connect flow refused: the destination changed after the page named it");
            page::message(
                StatusCode::CONFLICT,
                "Not stored",
                &format!(
                    "Where this account would be used changed after the page named it (it is now {now}), so nothing was stored. Open the connect link again to check it."
                ),
                false,
            )
        }
        Ok(Saved::Connected(connection_key)) => {
            tracing::info!(integration = %session.platform, connection = %connection_key, session = %session.public_id, "account connected");
            let page = page::message(
                StatusCode::OK,
                &format!("{name} connected"),
                &format!("Your {name} account is connected. You can close this window."),
                true,
            );
            back_to_app(&session, Ended::Connected(&connection_key), page)
        }
        Ok(Saved::ConnectionRemoved) => reconnected_connection_removed(app, &session).await,
        Ok(Saved::SessionEnded(now)) => {
            tracing::info!(session = %session.public_id, "connect flow ended before its credential was stored");
            now.and_then(|now| finished_page(&now)).unwrap_or_else(|| {
                page::message(
                    StatusCode::GONE,
                    "This link has expired",
                    "Ask the application for a new one.",
                    false,
                )
            })
        }
        Ok(Saved::PlanLimit(limit)) => {
            let reason = limit.to_string();
            let page = page::message(StatusCode::FORBIDDEN, "Could not connect", &reason, false);
            fail(app, &session, FailureCode::ConnectionLimitReached, &reason, page).await
        }
        Err(error) => internal_page(error),
    }
}

/// Store `credential` for `session`, if it still goes where its page said (checked here, in
/// the same step as the store: a connection made meanwhile with another base URL would send
/// it elsewhere).
fn save_connection(
    vault: &Vault,
    session: &ConnectSession,
    credential: &Credential,
    default_base_url: &url::Url,
    limit: Option<u32>,
) -> anyhow::Result<Saved> {
    let environment = session.environment;
    let _one_at_a_time = vault.owner_writes();
    match vault.connect_session(environment, &session.public_id)? {
        Some(now) if now.status(crate::vault::now()) == SessionStatus::Pending => {}
        now => return Ok(Saved::SessionEnded(now.map(Box::new))),
    }
    let updated = match target_of(vault, session)? {
        Target::Existing(record) => Some(*record),
        Target::New => None,
        Target::Removed => return Ok(Saved::ConnectionRemoved),
    };
    let destination = destination_of(session, updated.as_ref(), default_base_url);
    if destination != credential.destination {
        return Ok(Saved::DestinationMoved(destination));
    }
    let (secret, token_expires_at) = (&credential.secret, credential.token_expires_at);
    let key = match updated {
        Some(existing) => {
            vault.store_secret(&existing, secret, token_expires_at, session.base_url.as_ref())?;
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
                base_url: session.base_url.clone(),
                ..NewConnection::default()
            };
            match vault.add_connection(&new, limit)? {
                Ok(record) => record.key,
                Err(limit) => return Ok(Saved::PlanLimit(limit)),
            }
        }
    };
    if !vault.complete_connect_session(session.id, &key)? {
        // Ended by another gateway on the same database since it was checked above.
        let now = vault.connect_session(environment, &session.public_id)?;
        return Ok(Saved::SessionEnded(now.map(Box::new)));
    }
    Ok(Saved::Connected(key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vault::KeySource;
    use crate::vault::connections::TokenSet;
    use anyhow::Context;

    /// A GitHub connect session for identity `yara`.
    fn yara_session() -> NewSession {
        NewSession {
            environment: Environment::Test,
            platform: "github".into(),
            identity: Some("yara".into()),
            identity_type: None,
            connection_key: None,
            base_url: None,
            return_url: None,
            ttl_seconds: 600,
        }
    }

    /// A vault in `dir` with a pending GitHub session for identity `yara`, and a credential
    /// from its form, for GitHub's own API.
    fn pending_github_session(
        dir: &tempfile::TempDir,
    ) -> anyhow::Result<(Vault, ConnectSession, Credential)> {
        let vault = Vault::open(
            &dir.path().join("sluice.db"),
            &KeySource::Explicit("ab".repeat(32)),
        )?;
        let (session, _) = vault.create_connect_session(&yara_session())?;
        let credential = Credential {
            secret: "ghp_from_the_form".into(),
            token_expires_at: None,
            destination: "https://api.github.com".into(),
        };
        Ok((vault, session, credential))
    }

    /// The destination is checked again in the step that stores the credential: a connection
    /// made for the identity with another base URL since the page (or the sign-in) began takes
    /// nothing, and the session stays pending.
    #[test]
    fn a_credential_is_stored_only_where_its_page_said() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let (vault, session, credential) = pending_github_session(&dir)?;
        let default = url::Url::parse("https://api.github.com")?;
        // Meanwhile: a connection of the identity's own, elsewhere.
        let elsewhere = vault.add_connection(
            &NewConnection {
                platform: "github".into(),
                identity: Some("yara".into()),
                secret: "ghp_made_meanwhile".into(),
                base_url: Some(url::Url::parse("https://ghe.acme.corp")?),
                ..NewConnection::default()
            },
            None,
        )??;
        let saved = save_connection(&vault, &session, &credential, &default, None)?;
        assert!(matches!(&saved, Saved::DestinationMoved(now) if now == "https://ghe.acme.corp"));
        let untouched = vault.connection_by_id(elsewhere.id)?.context("connection")?;
        assert_eq!(vault.credential(&untouched)?.secret(), "ghp_made_meanwhile");
        let pending = vault
            .connect_session(Environment::Test, &session.public_id)?
            .context("session")?;
        assert_eq!(pending.status(crate::vault::now()), SessionStatus::Pending);
        // Where the page said it would go, it is stored.
        let named = Credential {
            destination: "https://ghe.acme.corp".into(),
            ..credential
        };
        let saved = save_connection(&vault, &session, &named, &default, None)?;
        assert!(matches!(&saved, Saved::Connected(key) if *key == elsewhere.key));
        Ok(())
    }

    /// A credential is stored only while its session is pending: a form posted twice (the
    /// session read as pending by both) stores one connection, and a session the app cancelled
    /// as the user submitted stores none.
    #[test]
    fn a_credential_is_stored_once_and_only_into_a_pending_session() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let (vault, session, credential) = pending_github_session(&dir)?;
        let default = url::Url::parse("https://api.github.com")?;
        // The identity has two connections already: a session without a key makes a third.
        for secret in ["ghp_one", "ghp_two"] {
            let new = NewConnection {
                platform: "github".into(),
                identity: Some("yara".into()),
                secret: secret.into(),
                ..NewConnection::default()
            };
            vault.add_connection(&new, None)??;
        }
        let count = || -> anyhow::Result<usize> {
            Ok(vault
                .owner_connections("github", Environment::Test, Some("yara"), None)?
                .len())
        };
        let first = save_connection(&vault, &session, &credential, &default, None)?;
        assert!(matches!(first, Saved::Connected(_)));
        let second = save_connection(&vault, &session, &credential, &default, None)?;
        let Saved::SessionEnded(Some(now)) = second else {
            panic!("the second post stored again")
        };
        assert_eq!(now.status(crate::vault::now()), SessionStatus::Connected);
        assert_eq!(count()?, 3);

        let (cancelled, _) = vault.create_connect_session(&yara_session())?;
        assert!(vault.fail_connect_session(cancelled.id, FailureCode::Cancelled, "cancelled")?);
        // Marking it connected (as a flow that checked it before the cancel would) fails too.
        assert!(!vault.complete_connect_session(cancelled.id, "test::github::yara::x")?);
        let saved = save_connection(&vault, &cancelled, &credential, &default, None)?;
        assert!(matches!(saved, Saved::SessionEnded(Some(_))));
        assert_eq!(count()?, 3);
        let still = vault
            .connect_session(Environment::Test, &cancelled.public_id)?
            .context("session")?;
        assert_eq!(still.status(crate::vault::now()), SessionStatus::Failed);
        Ok(())
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
            refresh_refused: None,
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
