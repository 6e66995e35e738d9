//! OAuth apps: the operator's OAuth client (id, encrypted secret, redirect URL, extra scopes,
//! optional endpoint overrides) for one integration.

use super::crypto::{MasterKey, Sealed};
use super::{Vault, now};
use anyhow::Context;
use url::Url;

/// What an operator registers for an integration.
#[derive(Clone, Default)]
pub struct NewOAuthApp {
    /// Connector id.
    pub platform: String,
    /// The client id issued by the provider.
    pub client_id: String,
    /// The client secret issued by the provider.
    pub client_secret: String,
    /// Redirect URL registered with the provider; default `{public URL}/connect/oauth/callback`.
    pub redirect_url: Option<Url>,
    /// Scopes requested on top of the connector's defaults.
    pub scopes: Vec<String>,
    /// Authorization endpoint replacing the connector's (e.g. a regional or test provider).
    pub authorize_url: Option<Url>,
    /// Token endpoint replacing the connector's.
    pub token_url: Option<Url>,
}

impl std::fmt::Debug for NewOAuthApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewOAuthApp")
            .field("platform", &self.platform)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

/// A registered OAuth app; the secret stays sealed until [`Vault::oauth_client_secret`].
#[derive(Debug, Clone)]
pub struct OAuthApp {
    /// Connector id.
    pub platform: String,
    /// Client id.
    pub client_id: String,
    /// Registered redirect URL, if the operator set one.
    pub redirect_url: Option<Url>,
    /// Extra scopes.
    pub scopes: Vec<String>,
    /// Authorization endpoint override.
    pub authorize_url: Option<Url>,
    /// Token endpoint override.
    pub token_url: Option<Url>,
    /// Creation time (Unix seconds).
    pub created_at: i64,
    /// Last change (Unix seconds).
    pub updated_at: i64,
    /// The client secret, sealed.
    pub(crate) sealed: Sealed,
}

#[cfg(test)]
impl OAuthApp {
    /// An app with no overrides, for unit tests elsewhere.
    pub(crate) fn for_tests(platform: &str, client_id: &str, scopes: Vec<String>) -> Self {
        Self {
            platform: platform.into(),
            client_id: client_id.into(),
            redirect_url: None,
            scopes,
            authorize_url: None,
            token_url: None,
            created_at: 0,
            updated_at: 0,
            sealed: Sealed {
                key_id: String::new(),
                nonce: Vec::new(),
                ciphertext: Vec::new(),
            },
        }
    }
}

/// Associated data binding the client secret to its row.
fn secret_context(platform: &str) -> String {
    format!("oauth_apps/{platform}/client_secret")
}

impl Vault {
    /// Register or replace the OAuth app of an integration.
    pub fn put_oauth_app(&self, app: &NewOAuthApp) -> anyhow::Result<OAuthApp> {
        let at = now();
        let sealed_app = OAuthApp {
            platform: app.platform.clone(),
            client_id: app.client_id.clone(),
            redirect_url: app.redirect_url.clone(),
            scopes: app.scopes.clone(),
            authorize_url: app.authorize_url.clone(),
            token_url: app.token_url.clone(),
            created_at: at,
            updated_at: at,
            sealed: self.seal(app.client_secret.as_bytes(), &secret_context(&app.platform))?,
        };
        self.write(|store| store.upsert_oauth_app(&sealed_app))?;
        // Read back: a replaced app keeps its original creation time.
        self.oauth_app(&app.platform)?
            .context("the OAuth app just written is missing")
    }

    /// The OAuth app of `platform`, if one is registered.
    pub fn oauth_app(&self, platform: &str) -> anyhow::Result<Option<OAuthApp>> {
        self.store.oauth_app(platform)
    }

    /// Every registered OAuth app.
    pub fn list_oauth_apps(&self) -> anyhow::Result<Vec<OAuthApp>> {
        self.store.list_oauth_apps()
    }

    /// Remove the OAuth app of `platform`; returns whether there was one.
    pub fn delete_oauth_app(&self, platform: &str) -> anyhow::Result<bool> {
        self.write(|store| store.delete_oauth_app(platform))
    }

    /// Decrypt an app's client secret.
    pub fn oauth_client_secret(&self, app: &OAuthApp) -> anyhow::Result<String> {
        let plaintext = self
            .open_sealed(&app.sealed, &secret_context(&app.platform))
            .with_context(|| format!("decrypting the client secret of the {} OAuth app", app.platform))?;
        String::from_utf8(plaintext).context("stored client secret is not UTF-8")
    }

    /// Re-encrypt every client secret not sealed by `new_primary`; returns how many.
    pub(super) fn reencrypt_oauth_apps(&self, new_primary: &MasterKey) -> anyhow::Result<usize> {
        let stale: Vec<OAuthApp> = self
            .list_oauth_apps()?
            .into_iter()
            .filter(|app| app.sealed.key_id != new_primary.id())
            .collect();
        for app in &stale {
            let context = secret_context(&app.platform);
            let resealed = new_primary.seal(&self.open_sealed(&app.sealed, &context)?, &context)?;
            self.write(|store| store.replace_oauth_app_secret(&app.platform, &app.sealed.key_id, &resealed))?;
        }
        Ok(stale.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vault::KeySource;

    #[test]
    fn client_secrets_are_sealed_replaced_and_survive_rotation() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let vault = Vault::open(&dir.path().join("v.db"), &KeySource::File(dir.path().join("key")))?;
        let mut app = NewOAuthApp {
            platform: "gmail".into(),
            client_id: "client-1".into(),
            client_secret: "very-secret-client-value".into(),
            scopes: vec!["extra".into()],
            ..NewOAuthApp::default()
        };
        vault.put_oauth_app(&app)?;
        app.client_id = "client-2".into();
        let stored = vault.put_oauth_app(&app)?;
        assert_eq!(stored.client_id, "client-2");
        assert_eq!(stored.scopes, vec!["extra".to_owned()]);
        assert_eq!(vault.list_oauth_apps()?.len(), 1);

        assert!(!String::from_utf8_lossy(&stored.sealed.ciphertext).contains("very-secret"));

        vault.rotate_key(None)?;
        let rotated = vault.oauth_app("gmail")?.context("app")?;
        assert_eq!(vault.oauth_client_secret(&rotated)?, "very-secret-client-value");
        assert!(vault.delete_oauth_app("gmail")?);
        assert!(!vault.delete_oauth_app("gmail")?);
        Ok(())
    }
}
