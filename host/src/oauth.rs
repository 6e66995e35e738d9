//! OAuth 2.0 on the host's side: the gateway owns the whole token lifecycle, so connectors
//! and callers never handle tokens.
//!
//! - [`pkce`] — code verifiers and S256 challenges.
//! - [`client`] — the token endpoint: code exchange and refresh, with every provider answer
//!   turned into a clear outcome.
//! - [`refresh`] — proactive and reactive refresh, single-flight per connection, rotated
//!   tokens persisted before use.
//!
//! A connector's manifest declares the provider (authorize and token URLs, default scopes,
//! extra authorize parameters); the operator registers the OAuth app (client id and secret,
//! extra scopes, optional endpoint overrides). [`OAuthClient`] is the two put together.

pub mod client;
pub mod pkce;
pub mod refresh;

use crate::runtime::manifest::{AuthScheme, Manifest, OAuth2Config};
use crate::vault::Vault;
use crate::vault::oauth_apps::OAuthApp;
use url::Url;

/// Everything needed to run an OAuth flow for one integration.
#[derive(Clone)]
pub struct OAuthClient {
    /// Authorization endpoint.
    pub authorize_url: Url,
    /// Token endpoint.
    pub token_url: Url,
    /// Client id.
    pub client_id: String,
    /// Client secret.
    pub client_secret: String,
    /// Scopes to request: the connector's defaults plus the app's extras.
    pub scopes: Vec<String>,
    /// Extra authorize parameters the provider needs (e.g. `access_type=offline`).
    pub authorize_params: Vec<(String, String)>,
    /// Redirect URL registered with the provider, if the operator set one.
    pub redirect_url: Option<Url>,
}

impl std::fmt::Debug for OAuthClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthClient")
            .field("token_url", &self.token_url.as_str())
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

/// Why an OAuth flow cannot run for an integration.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The connector does not use OAuth 2.0.
    #[error("`{0}` does not use OAuth 2.0")]
    NotOAuth(String),
    /// The operator has not registered an OAuth app for it.
    #[error("no OAuth app is registered for `{0}` (see `sluice oauth-apps set`)")]
    NoApp(String),
    /// A declared or configured endpoint is not a usable URL.
    #[error("the OAuth configuration of `{0}` is invalid: {1}")]
    Invalid(String, String),
    /// The vault failed.
    #[error(transparent)]
    Vault(#[from] anyhow::Error),
}

impl OAuthClient {
    /// Put the connector's declaration and the operator's app together. Blocking (vault).
    pub fn resolve(vault: &Vault, manifest: &Manifest) -> Result<Self, ClientError> {
        let AuthScheme::OAuth2(declared) = &manifest.auth else {
            return Err(ClientError::NotOAuth(manifest.id.clone()));
        };
        Self::resolve_declared(vault, &manifest.id, declared)
    }

    /// The same from the integration id and its declared OAuth configuration.
    pub fn resolve_declared(
        vault: &Vault,
        integration: &str,
        declared: &OAuth2Config,
    ) -> Result<Self, ClientError> {
        let app = vault
            .oauth_app(integration)?
            .ok_or_else(|| ClientError::NoApp(integration.to_owned()))?;
        let client_secret = vault.oauth_client_secret(&app)?;
        Self::combine(integration, declared, app, client_secret)
    }

    fn combine(
        integration: &str,
        declared: &OAuth2Config,
        app: OAuthApp,
        client_secret: String,
    ) -> Result<Self, ClientError> {
        let endpoint = |configured: Option<Url>, declared: &str, what: &str| match configured {
            Some(url) => Ok(url),
            None => Url::parse(declared).map_err(|e| {
                ClientError::Invalid(integration.to_owned(), format!("{what} `{declared}`: {e}"))
            }),
        };
        let authorize_url = endpoint(app.authorize_url, &declared.authorize_url, "authorize URL")?;
        let token_url = endpoint(app.token_url, &declared.token_url, "token URL")?;
        let mut scopes = declared.scopes.clone();
        for extra in app.scopes {
            if !scopes.contains(&extra) {
                scopes.push(extra);
            }
        }
        Ok(Self {
            authorize_url,
            token_url,
            client_id: app.client_id,
            client_secret,
            scopes,
            authorize_params: declared.authorize_params.clone(),
            redirect_url: app.redirect_url,
        })
    }

    /// The provider URL that starts the authorization-code flow with PKCE (S256).
    pub fn authorization_url(&self, redirect_uri: &str, state: &str, challenge: &str) -> Url {
        let mut url = self.authorize_url.clone();
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair("response_type", "code")
                .append_pair("client_id", &self.client_id)
                .append_pair("redirect_uri", redirect_uri)
                .append_pair("state", state)
                .append_pair("code_challenge", challenge)
                .append_pair("code_challenge_method", "S256");
            if !self.scopes.is_empty() {
                query.append_pair("scope", &self.scopes.join(" "));
            }
            for (name, value) in &self.authorize_params {
                query.append_pair(name, value);
            }
        }
        url
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_authorization_url_carries_pkce_state_scopes_and_provider_quirks() {
        let declared = OAuth2Config {
            authorize_url: "https://accounts.example.com/o/auth?prompt=none".into(),
            token_url: "https://oauth.example.com/token".into(),
            scopes: vec!["mail.read".into()],
            authorize_params: vec![("access_type".into(), "offline".into())],
        };
        let app = OAuthApp::for_tests("gmail", "client-1", vec!["mail.read".into(), "mail.send".into()]);
        let client = OAuthClient::combine("gmail", &declared, app, "s".into()).expect("client");
        assert_eq!(client.scopes, vec!["mail.read", "mail.send"]);
        let url = client.authorization_url("https://gw.example/connect/oauth/callback", "st4te", "ch4llenge");
        let pairs: Vec<(String, String)> = url.query_pairs().map(|(k, v)| (k.into(), v.into())).collect();
        let get = |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
                .unwrap_or("<missing>")
        };
        assert_eq!(get("prompt"), "none", "the declared URL's own query is kept");
        assert_eq!(get("response_type"), "code");
        assert_eq!(get("client_id"), "client-1");
        assert_eq!(get("redirect_uri"), "https://gw.example/connect/oauth/callback");
        assert_eq!(get("state"), "st4te");
        assert_eq!(get("code_challenge"), "ch4llenge");
        assert_eq!(get("code_challenge_method"), "S256");
        assert_eq!(get("scope"), "mail.read mail.send");
        assert_eq!(get("access_type"), "offline");
    }
}
