//! The OAuth half of the connect page: `GET /connect/{token}/authorize` sends the browser to
//! the provider with `state`, PKCE (S256) and a browser-binding cookie; the provider sends it
//! back to `GET /connect/oauth/callback`, which exchanges the code for tokens.

use super::super::AppState;
use super::form::page_token;
use super::page;
use super::{
    ConnectSession, constant_time_eq, destination_origin, fail, finish, internal_page, pending_session,
};
use crate::oauth::client::TokenError;
use crate::oauth::{OAuthClient, pkce};
use crate::runtime::LoadedConnector;
use crate::vault::connect_sessions::{FailureCode, OAuthAttempt};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::sync::Arc;

/// The cookies that tie OAuth attempts to the browser that started them are named this, then
/// the start of the attempt's `state`: one per attempt, so a second flow started in another
/// tab (another account, another integration) does not overwrite the first one's.
const BROWSER_COOKIE_PREFIX: &str = "sluice_connect_";

/// How many characters of the `state` (a random token) name an attempt's cookie: 96 bits.
const STATE_CHARS_IN_COOKIE_NAME: usize = 16;

/// The name of the browser cookie of the attempt with this `state`.
fn browser_cookie_name(state: &str) -> String {
    let start: String = state.chars().take(STATE_CHARS_IN_COOKIE_NAME).collect();
    format!("{BROWSER_COOKIE_PREFIX}{start}")
}

/// Where providers send users back to, under the public URL.
pub(super) const CALLBACK_PATH: &str = "/connect/oauth/callback";

/// The connector's OAuth declaration and the operator's app, put together off the executor.
pub(super) async fn resolve_client(
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

/// What the connect page's sign-in link carries.
#[derive(Debug, Deserialize)]
pub(super) struct StartQuery {
    /// The page's token for the destination it named (see [`page_token`]).
    shown: Option<String>,
}

pub(super) async fn start_oauth(
    State(app): State<AppState>,
    Path(token): Path<String>,
    query: Result<Query<StartQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let (session, connector) = match pending_session(&app, &token).await {
        Ok(found) => found,
        Err(page) => return page,
    };
    let client = match resolve_client(&app, &connector).await {
        Ok(Ok(client)) => client,
        // A hand-made URL: this page's form is where its credential goes.
        Ok(Err(crate::oauth::ClientError::NotOAuth(_))) => {
            return page::message(
                StatusCode::BAD_REQUEST,
                "No sign-in here",
                &format!(
                    "{} connects with a key, not by signing in. Go back to the connect page and enter it there.",
                    connector.manifest.name
                ),
                false,
            );
        }
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
    let destination = match destination_origin(&app, &session, &connector).await {
        Ok(origin) => origin,
        Err(page) => return page,
    };
    // Sign-in starts only from a page that named where the tokens will be used, and only while
    // that still holds. A link straight here (the page skipped), or a page gone stale, leads to
    // the page as it reads now.
    let shown = query
        .ok()
        .and_then(|Query(query)| query.shown)
        .unwrap_or_default();
    let expected = page_token(&app.vault, &token, &destination);
    if !constant_time_eq(shown.as_bytes(), expected.as_bytes()) {
        tracing::info!(session = %session.public_id, "sign-in started without the connect page's current destination; sent to the page");
        return see_other(&format!("/connect/{token}"));
    }
    let state = pkce::random_token(24);
    let browser = pkce::random_token(24);
    let verifier = pkce::verifier();
    let begun = {
        let (state, browser, verifier, session) = (state.clone(), browser.clone(), verifier.clone(), session);
        app.vault
            .run(move |vault| vault.begin_oauth(&session, &state, &browser, &verifier, &destination))
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
    let mut response = see_other(target.as_str());
    set_browser_cookie(&app, &mut response, &state, &browser, app.connect_session_ttl);
    response
}

/// Set the browser cookie of the attempt with this `state` to `value` for `max_age` seconds
/// (`0` removes it).
fn set_browser_cookie(app: &AppState, response: &mut Response, state: &str, value: &str, max_age: i64) {
    let secure = if app.public_url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{}={value}; Path=/connect; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}",
        browser_cookie_name(state),
    );
    if let Ok(cookie) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
}

/// A `303 See Other` to `location`, neither cached nor telling the next site where from.
fn see_other(location: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    let headers = response.headers_mut();
    if let Ok(location) = HeaderValue::from_str(location) {
        headers.insert(header::LOCATION, location);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

#[derive(Debug, Deserialize)]
pub(super) struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// The value of the cookie `name` the browser sent.
fn browser_cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(found, _)| *found == name)
        .map(|(_, value)| value.to_owned())
}

fn refused(text: &str) -> Response {
    page::message(StatusCode::BAD_REQUEST, "Sign-in not completed", text, false)
}

pub(super) async fn oauth_callback(
    State(app): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<CallbackQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(mut query)) = query else {
        return refused("The provider sent back a malformed answer.");
    };
    let Some(state) = query.state.take().filter(|s| !s.is_empty() && s.len() <= 512) else {
        return refused("The provider's answer did not say which sign-in it belongs to.");
    };
    let taken = {
        let state = state.clone();
        app.vault.run(move |vault| vault.take_oauth_state(&state)).await
    };
    match taken {
        Ok(Some(attempt)) => {
            let mut response = complete_sign_in(&app, &headers, query, &state, attempt).await;
            // The attempt is spent however it ended: the browser need not keep its cookie.
            // (Only for a state the gateway made: it names the cookie.)
            set_browser_cookie(&app, &mut response, &state, "", 0);
            response
        }
        Ok(None) => refused(
            "This sign-in was already completed, has expired, or is unknown. Open the connect link again.",
        ),
        // The state is not spent: the browser keeps its cookie, to load the callback again.
        Err(error) => internal_page(error),
    }
}

/// Fail `session` for the gateway's sign-in setup (`reason`), telling the user `text`.
async fn sign_in_not_set_up(app: &AppState, session: &ConnectSession, reason: &str, text: &str) -> Response {
    fail(app, session, FailureCode::SignInNotSetUp, reason, refused(text)).await
}

/// Finish the sign-in `attempt` (its `state` taken from the store) the provider sent the
/// browser back from with `query`.
async fn complete_sign_in(
    app: &AppState,
    headers: &HeaderMap,
    query: CallbackQuery,
    state: &str,
    attempt: OAuthAttempt,
) -> Response {
    let session = attempt.session;
    let same_browser = browser_cookie(headers, &browser_cookie_name(state)).is_some_and(|cookie| {
        constant_time_eq(
            &crate::vault::crypto::api_key_hash(&cookie),
            &attempt.browser_hash,
        )
    });
    if !same_browser {
        // Not completed: the account signed in with could be someone else's (a callback link
        // sent to the user). The state is spent, but the session stays open: a link scanner's
        // fetch or a second browser must not end the user's own attempt, who starts again.
        tracing::info!(session = %session.public_id, "OAuth callback from a browser other than the one that started it refused");
        return refused(
            "This sign-in was started in another browser, so it was stopped. Open the connect link again in the browser you sign in with.",
        );
    }
    if let Some(error) = query.error {
        let description = query.error_description.unwrap_or_default();
        let reason = format!("the provider returned `{error}` {description}");
        let page = page::message(
            StatusCode::OK,
            "Access was not granted",
            &format!("The provider said: {error}. {description}"),
            false,
        );
        return fail(
            app,
            &session,
            FailureCode::AuthorizationRefused,
            reason.trim(),
            page,
        )
        .await;
    }
    let Some(code) = query.code.filter(|c| !c.is_empty()) else {
        let page = refused("The provider sent no authorization code.");
        return fail(
            app,
            &session,
            FailureCode::NoAuthorizationCode,
            "the provider sent no authorization code",
            page,
        )
        .await;
    };
    let Some(connector) = app.registry.get(&session.platform) else {
        let page = refused("The integration is no longer available on this gateway.");
        return fail(
            app,
            &session,
            FailureCode::IntegrationUnavailable,
            "the integration is no longer available",
            page,
        )
        .await;
    };
    // The page named where the tokens would be used; should that have changed while the user
    // was signing in (a connection made meanwhile with another base URL), nothing is stored.
    // The session stays open: the user reads the page again and decides. (Checked here, before
    // the code is exchanged, and again as the tokens are stored.)
    let destination = match destination_origin(app, &session, &connector).await {
        Ok(origin) => origin,
        Err(page) => return page,
    };
    if attempt
        .destination
        .as_ref()
        .is_some_and(|started| *started != destination)
    {
        tracing::info!(session = %session.public_id, %destination, "OAuth callback refused: the destination changed during sign-in");
        return refused(&format!(
            "Where this account would be used changed while you were signing in (it is now {destination}), so nothing was stored. Open the connect link again to check it."
        ));
    }
    let client = match resolve_client(app, &connector).await {
        Ok(Ok(client)) => client,
        Ok(Err(error)) => {
            let page = "Sign-in is not set up on this gateway any more.";
            return sign_in_not_set_up(app, &session, &error.to_string(), page).await;
        }
        Err(error) => return internal_page(error),
    };
    let exchanged = app
        .refresher
        .endpoint()
        .exchange_code(&client, &code, &redirect_uri(app, &client), &attempt.verifier)
        .await;
    let tokens = match exchanged {
        Ok(tokens) => tokens,
        Err(error @ TokenError::Unavailable(_)) => {
            // The provider is down for now: the session stays open, so the user can sign in
            // again through the same link once it is back.
            tracing::warn!(integration = %session.platform, %error, "authorization code exchange failed; the session stays open");
            return page::message(
                StatusCode::BAD_GATEWAY,
                "Could not finish connecting",
                &format!("{error}. Open the connect link again to retry."),
                false,
            );
        }
        Err(error @ TokenError::NotPermitted(_)) => {
            tracing::warn!(integration = %session.platform, %error, "authorization code exchange not possible");
            let page = "Sign-in is not set up correctly on this gateway. Tell the application.";
            return sign_in_not_set_up(app, &session, &error.to_string(), page).await;
        }
        Err(error) => {
            tracing::warn!(integration = %session.platform, %error, "authorization code exchange failed");
            let page = page::message(
                StatusCode::BAD_GATEWAY,
                "Could not finish connecting",
                &format!("{error}. Ask the application for a new link."),
                false,
            );
            return fail(
                app,
                &session,
                FailureCode::TokenExchangeFailed,
                &error.to_string(),
                page,
            )
            .await;
        }
    };
    let credential = super::Credential {
        secret: tokens.to_secret(),
        token_expires_at: tokens.expires_at,
        destination: attempt.destination.unwrap_or(destination),
    };
    finish(app, &connector, session, credential).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_browser_cookie_is_found_among_others() {
        let name = browser_cookie_name("Qx3_-abcdefghijklmnop");
        assert_eq!(name, "sluice_connect_Qx3_-abcdefghijk");
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; sluice_connect_other=x; sluice_connect_Qx3_-abcdefghijk=abc; b=2"),
        );
        assert_eq!(browser_cookie(&headers, &name).as_deref(), Some("abc"));
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("sluice_connect_Qx3_-abcdefghijkx=abc"),
        );
        assert_eq!(browser_cookie(&headers, &name), None);
    }
}
