//! The credentials form of API-key and basic-auth integrations: which fields a scheme needs,
//! and the post that stores them, guarded by a form token derived from the session.

use super::super::AppState;
use super::page::{self, Field};
use super::{constant_time_eq, destination_origin, finish, pending_session};
use crate::runtime::LoadedConnector;
use crate::runtime::manifest::AuthScheme;
use crate::vault::Vault;
use axum::Form;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use hmac::{Hmac, Mac};
use std::collections::HashMap;

/// Longest credential accepted from the form.
const MAX_FORM_SECRET: usize = 16 << 10;

/// The token a connect page hands back — its form's `csrf` field, or `shown` on its sign-in
/// link: derived from the URL token and the destination the page named, with a key only the
/// gateway has. Should the destination change between the page and its post or sign-in (a
/// connection made meanwhile with another base URL), the step is refused rather than the
/// credential sent somewhere the user was not shown.
pub(super) fn page_token(vault: &Vault, session_token: &str, destination: &str) -> String {
    let key = vault.derive_key("connect-form");
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&key).expect("HMAC takes any key length");
    mac.update(session_token.as_bytes());
    mac.update(b"\n");
    mac.update(destination.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// The inputs a non-OAuth auth scheme needs.
pub(super) fn credential_fields(auth: &AuthScheme) -> Vec<Field> {
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

/// Whether the browser says another site (or a page that is not the gateway's) made this post.
///
/// Browsers that send fetch metadata say it exactly: anything but `Sec-Fetch-Site:
/// same-origin` is refused, `same-site` too (a sibling subdomain may be someone else's). Their
/// `Origin` is not read: it is `null` on a page whose referrer policy hides the referrer.
/// Older browsers only send `Origin`: refused when `null` (an opaque origin: a sandboxed frame,
/// a `data:` page) or neither the gateway's public origin nor the host the request was sent to
/// (a proxy in front may rewrite `Host`).
fn posted_from_another_site(headers: &HeaderMap, public_url: &str) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        return !site.as_bytes().eq_ignore_ascii_case(b"same-origin");
    }
    let Some(origin) = headers.get(axum::http::header::ORIGIN) else {
        return false;
    };
    let origin = origin.to_str().unwrap_or("null").trim_end_matches('/');
    let public_origin = url::Url::parse(public_url).map(|url| url.origin().ascii_serialization());
    let is_public_origin = public_origin.is_ok_and(|public| public.eq_ignore_ascii_case(origin));
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|host| host.to_str().ok());
    let is_requested_host = origin
        .split_once("://")
        .is_some_and(|(_, authority)| host.is_some_and(|host| authority.eq_ignore_ascii_case(host)));
    !(is_public_origin || is_requested_host)
}

pub(super) async fn submit_credentials(
    State(app): State<AppState>,
    Path(token): Path<String>,
    headers: HeaderMap,
    request: Request,
) -> Response {
    let refused = || {
        page::message(
            StatusCode::FORBIDDEN,
            "Request refused",
            "This form was not submitted from its own page. Open the connect link again.",
            false,
        )
    };
    // Browsers say where a post comes from; refuse posts another site made.
    if posted_from_another_site(&headers, &app.public_url) {
        return refused();
    }
    // The link must be a live session's before the body is read: a client without one could
    // otherwise hold a connection by trickling a body in.
    let (session, connector) = match pending_session(&app, &token).await {
        Ok(found) => found,
        Err(page) => return page,
    };
    // A person is reading: an unreadable post (not a form, too large) gets a page too.
    let form: HashMap<String, String> = match Form::from_request(request, &app).await {
        Ok(Form(form)) => form,
        Err(rejection) => {
            return page::message(
                rejection.status(),
                "Form not readable",
                "This page takes the connect form as your browser sends it. Open the connect link again.",
                false,
            );
        }
    };
    let destination = match destination_origin(&app, &session, &connector).await {
        Ok(origin) => origin,
        Err(page) => return page,
    };
    let expected = page_token(&app.vault, &token, &destination);
    let presented = form.get("csrf").map(String::as_str).unwrap_or_default();
    if !constant_time_eq(presented.as_bytes(), expected.as_bytes()) {
        return refused();
    }
    let auth = &connector.manifest.auth;
    if matches!(auth, AuthScheme::OAuth2(_)) {
        return page::message(
            StatusCode::BAD_REQUEST,
            "Use the sign-in button",
            "This integration connects through its provider's sign-in page.",
            false,
        );
    }
    let secret = match secret_from(auth, &form) {
        Ok(secret) => secret,
        Err(missing) => return form_error(&connector, missing),
    };
    if secret.len() > MAX_FORM_SECRET || secret.chars().any(char::is_control) {
        return form_error(
            &connector,
            "That value is too long or contains control characters.",
        );
    }
    // The vault's rule: a shorter secret could not be scrubbed from upstream answers.
    let shortest = crate::runtime::SHORTEST_SCRUBBED;
    if secret.chars().count() < shortest {
        return form_error(
            &connector,
            &format!("That value is too short: a credential has at least {shortest} characters."),
        );
    }
    let credential = super::Credential {
        secret,
        token_expires_at: None,
        destination,
    };
    finish(&app, &connector, session, credential).await
}

/// The credential the form holds for `auth`, or what is missing. An API key and a user name are
/// trimmed (a copied key often brings a space along), a password is taken as typed: spaces at
/// its ends may be part of it.
fn secret_from(auth: &AuthScheme, form: &HashMap<String, String>) -> Result<String, &'static str> {
    let trimmed = |name: &str| form.get(name).map(|v| v.trim()).filter(|v| !v.is_empty());
    match auth {
        AuthScheme::Basic => {
            let password = form.get("password").filter(|v| !v.is_empty());
            match (trimmed("username"), password) {
                (Some(user), Some(password)) if !user.contains(':') => Ok(format!("{user}:{password}")),
                _ => Err("Enter a username (without `:`) and a password."),
            }
        }
        _ => trimmed("secret").map(str::to_owned).ok_or("Enter the API key."),
    }
}

fn form_error(connector: &LoadedConnector, text: &str) -> Response {
    page::message(
        StatusCode::BAD_REQUEST,
        &format!("Could not connect {}", connector.manifest.name),
        &format!("{text} Go back and try again."),
        false,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_is_kept_as_typed_and_a_key_trimmed() {
        let form = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let basic = form(&[("username", " ann "), ("password", " two words ")]);
        assert_eq!(
            secret_from(&AuthScheme::Basic, &basic).as_deref(),
            Ok("ann: two words ")
        );
        let no_password = form(&[("username", "ann"), ("password", "")]);
        assert!(secret_from(&AuthScheme::Basic, &no_password).is_err());
        let colon_user = form(&[("username", "a:n"), ("password", "secret")]);
        assert!(secret_from(&AuthScheme::Basic, &colon_user).is_err());
        let key = form(&[("secret", "  ghp_copied_with_spaces \n")]);
        assert_eq!(
            secret_from(&AuthScheme::Bearer, &key).as_deref(),
            Ok("ghp_copied_with_spaces")
        );
        assert!(secret_from(&AuthScheme::Bearer, &form(&[("secret", "   ")])).is_err());
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(*name, value.parse().expect("header value"));
        }
        headers
    }

    #[test]
    fn a_post_another_site_made_is_told_by_fetch_metadata_or_origin() {
        let public = "https://connect.example.com";
        let own_host = [("host", "127.0.0.1:8080")];
        for (pairs, cross) in [
            (&[][..], false),
            (&own_host[..], false),
            (
                &[("host", "127.0.0.1:8080"), ("origin", "http://127.0.0.1:8080")][..],
                false,
            ),
            // Behind a proxy that rewrote Host: the public origin.
            (
                &[
                    ("host", "10.0.0.5:8080"),
                    ("origin", "https://connect.example.com"),
                ][..],
                false,
            ),
            (
                &[("host", "127.0.0.1:8080"), ("origin", "https://evil.example")][..],
                true,
            ),
            (&[("host", "127.0.0.1:8080"), ("origin", "null")][..], true),
            (
                &[("host", "127.0.0.1:8080"), ("sec-fetch-site", "cross-site")][..],
                true,
            ),
            (
                &[
                    ("host", "127.0.0.1:8080"),
                    ("origin", "http://127.0.0.1:8080"),
                    ("sec-fetch-site", "cross-site"),
                ][..],
                true,
            ),
            (
                &[("host", "127.0.0.1:8080"), ("sec-fetch-site", "same-site")][..],
                true,
            ),
            // What Chromium sends for the page's own post: the page hides its referrer, so
            // its origin is `null`, and fetch metadata says where it comes from.
            (
                &[
                    ("host", "127.0.0.1:8080"),
                    ("origin", "null"),
                    ("sec-fetch-site", "same-origin"),
                ][..],
                false,
            ),
        ] {
            assert_eq!(
                posted_from_another_site(&headers(pairs), public),
                cross,
                "{pairs:?}"
            );
        }
    }
}
