//! OAuth apps: the operator's OAuth client (id, encrypted secret, redirect URL, extra scopes,
//! optional endpoint overrides) for one integration.

use super::crypto::Sealed;
use super::{Vault, now};
use anyhow::Context;
use rusqlite::OptionalExtension;
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
    sealed: Sealed,
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

fn parse_url(text: Option<String>) -> Option<Url> {
    text.and_then(|t| Url::parse(&t).ok())
}

fn app_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<OAuthApp> {
    let scopes: String = row.get(5)?;
    Ok(OAuthApp {
        platform: row.get(0)?,
        client_id: row.get(1)?,
        sealed: Sealed {
            nonce: row.get(2)?,
            ciphertext: row.get(3)?,
            key_id: row.get(9)?,
        },
        redirect_url: parse_url(row.get(4)?),
        scopes: serde_json::from_str(&scopes).unwrap_or_default(),
        authorize_url: parse_url(row.get(6)?),
        token_url: parse_url(row.get(7)?),
        created_at: row.get(8)?,
        updated_at: row.get(10)?,
    })
}

const COLUMNS: &str = "platform, client_id, secret_nonce, secret_ciphertext, redirect_url, scopes, \
     authorize_url, token_url, created_at, key_id, updated_at";

impl Vault {
    /// Register or replace the OAuth app of an integration.
    pub fn put_oauth_app(&self, app: &NewOAuthApp) -> anyhow::Result<OAuthApp> {
        let sealed = self.seal(app.client_secret.as_bytes(), &secret_context(&app.platform))?;
        let scopes = serde_json::to_string(&app.scopes)?;
        let at = now();
        self.write(|tx| {
            tx.execute(
                "INSERT INTO oauth_apps (platform, client_id, secret_nonce, secret_ciphertext, key_id,
                    redirect_url, scopes, authorize_url, token_url, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10)
                 ON CONFLICT (platform) DO UPDATE SET client_id = excluded.client_id,
                    secret_nonce = excluded.secret_nonce, secret_ciphertext = excluded.secret_ciphertext,
                    key_id = excluded.key_id, redirect_url = excluded.redirect_url, scopes = excluded.scopes,
                    authorize_url = excluded.authorize_url, token_url = excluded.token_url,
                    updated_at = excluded.updated_at",
                rusqlite::params![
                    app.platform,
                    app.client_id,
                    sealed.nonce,
                    sealed.ciphertext,
                    sealed.key_id,
                    app.redirect_url.as_ref().map(Url::as_str),
                    scopes,
                    app.authorize_url.as_ref().map(Url::as_str),
                    app.token_url.as_ref().map(Url::as_str),
                    at
                ],
            )?;
            Ok(())
        })?;
        self.oauth_app(&app.platform)?
            .context("the OAuth app just written is missing")
    }

    /// The OAuth app of `platform`, if one is registered.
    pub fn oauth_app(&self, platform: &str) -> anyhow::Result<Option<OAuthApp>> {
        let conn = self.reader()?;
        let app = conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM oauth_apps WHERE platform = ?1"),
                [platform],
                app_from_row,
            )
            .optional()?;
        Ok(app)
    }

    /// Every registered OAuth app.
    pub fn list_oauth_apps(&self) -> anyhow::Result<Vec<OAuthApp>> {
        let conn = self.reader()?;
        let mut statement = conn.prepare(&format!("SELECT {COLUMNS} FROM oauth_apps ORDER BY platform"))?;
        let apps = statement
            .query_map([], app_from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(apps)
    }

    /// Remove the OAuth app of `platform`; returns whether there was one.
    pub fn delete_oauth_app(&self, platform: &str) -> anyhow::Result<bool> {
        self.write(|tx| Ok(tx.execute("DELETE FROM oauth_apps WHERE platform = ?1", [platform])? > 0))
    }

    /// Decrypt an app's client secret.
    pub fn oauth_client_secret(&self, app: &OAuthApp) -> anyhow::Result<String> {
        let plaintext = self
            .open_sealed(&app.sealed, &secret_context(&app.platform))
            .with_context(|| format!("decrypting the client secret of the {} OAuth app", app.platform))?;
        String::from_utf8(plaintext).context("stored client secret is not UTF-8")
    }

    /// Re-encrypt every client secret not sealed by `new_primary`; returns how many.
    pub(super) fn reencrypt_oauth_apps(
        &self,
        new_primary: &super::crypto::MasterKey,
    ) -> anyhow::Result<usize> {
        let stale: Vec<OAuthApp> = self
            .list_oauth_apps()?
            .into_iter()
            .filter(|app| app.sealed.key_id != new_primary.id())
            .collect();
        for app in &stale {
            let context = secret_context(&app.platform);
            let resealed = new_primary.seal(&self.open_sealed(&app.sealed, &context)?, &context)?;
            self.write(|tx| {
                tx.execute(
                    "UPDATE oauth_apps SET secret_nonce = ?2, secret_ciphertext = ?3, key_id = ?4
                     WHERE platform = ?1 AND key_id = ?5",
                    rusqlite::params![
                        app.platform,
                        resealed.nonce,
                        resealed.ciphertext,
                        resealed.key_id,
                        app.sealed.key_id
                    ],
                )?;
                Ok(())
            })?;
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

        let raw: Vec<u8> = vault.reader()?.query_row(
            "SELECT secret_ciphertext FROM oauth_apps WHERE platform = 'gmail'",
            [],
            |r| r.get(0),
        )?;
        assert!(!String::from_utf8_lossy(&raw).contains("very-secret"));

        vault.rotate_key(None)?;
        let rotated = vault.oauth_app("gmail")?.context("app")?;
        assert_eq!(vault.oauth_client_secret(&rotated)?, "very-secret-client-value");
        assert!(vault.delete_oauth_app("gmail")?);
        assert!(!vault.delete_oauth_app("gmail")?);
        Ok(())
    }
}
