//! Connections: one stored credential for one platform, environment and identity.

use super::api_keys::Environment;
use super::crypto::{self, Sealed};
use super::{Vault, now};
use crate::runtime::Credential;
use anyhow::Context;
use url::Url;

/// A stored connection, without its secret.
#[derive(Debug, Clone)]
pub struct ConnectionRecord {
    /// Row id.
    pub id: i64,
    /// Public key, e.g. `test::github::default::3f9a…`.
    pub key: String,
    /// Connector id.
    pub platform: String,
    /// Environment.
    pub environment: Environment,
    /// Owner identity (user, team, …), if any.
    pub identity: Option<String>,
    /// Base URL replacing the connector's default origin.
    pub base_url: Option<Url>,
    sealed: Sealed,
}

/// What a new connection holds.
#[derive(Debug, Clone)]
pub struct NewConnection {
    /// Connector id.
    pub platform: String,
    /// Environment.
    pub environment: Environment,
    /// Owner identity.
    pub identity: Option<String>,
    /// Identity kind: user, team, organization or project.
    pub identity_type: Option<String>,
    /// Base URL override.
    pub base_url: Option<Url>,
    /// The secret (token, API key, `user:password`).
    pub secret: String,
}

/// Which connection a call asks for.
#[derive(Debug, Clone, Default)]
pub struct ConnectionSelector {
    /// An explicit connection key.
    pub connection_key: Option<String>,
    /// An identity whose connection to use.
    pub identity: Option<String>,
}

/// Associated data binding a ciphertext to its row and column.
fn secret_context(key: &str) -> String {
    format!("connections/{key}/secret")
}

impl Vault {
    /// Store a new connection; the secret is encrypted before it reaches SQLite.
    pub fn add_connection(&self, new: &NewConnection) -> anyhow::Result<ConnectionRecord> {
        let key = format!(
            "{}::{}::{}::{}",
            new.environment,
            new.platform,
            new.identity.as_deref().unwrap_or("default"),
            crypto::random_hex(16)
        );
        let sealed = self
            .master_key()
            .seal(new.secret.as_bytes(), &secret_context(&key))?;
        let conn = self.conn()?;
        let at = now();
        conn.execute(
            "INSERT INTO connections (key, platform, environment, identity, identity_type, base_url,
                secret_nonce, secret_ciphertext, key_id, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10)",
            rusqlite::params![
                key,
                new.platform,
                new.environment.as_str(),
                new.identity,
                new.identity_type,
                new.base_url.as_ref().map(Url::as_str),
                sealed.nonce,
                sealed.ciphertext,
                self.master_key().id(),
                at
            ],
        )?;
        Ok(ConnectionRecord {
            id: conn.last_insert_rowid(),
            key,
            platform: new.platform.clone(),
            environment: new.environment,
            identity: new.identity.clone(),
            base_url: new.base_url.clone(),
            sealed,
        })
    }

    /// Active connections for `platform` in `environment` matching `selector`.
    pub fn find_connections(
        &self,
        platform: &str,
        environment: Environment,
        selector: &ConnectionSelector,
    ) -> anyhow::Result<Vec<ConnectionRecord>> {
        let conn = self.conn()?;
        let mut statement = conn.prepare_cached(
            "SELECT id, key, identity, base_url, secret_nonce, secret_ciphertext FROM connections
             WHERE platform = ?1 AND environment = ?2 AND active = 1
               AND (?3 IS NULL OR key = ?3) AND (?4 IS NULL OR identity = ?4)
             ORDER BY id",
        )?;
        let rows = statement.query_map(
            rusqlite::params![
                platform,
                environment.as_str(),
                selector.connection_key,
                selector.identity
            ],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, Vec<u8>>(4)?,
                    r.get::<_, Vec<u8>>(5)?,
                ))
            },
        )?;
        let mut found = Vec::new();
        for row in rows {
            let (id, key, identity, base_url, nonce, ciphertext) = row?;
            let base_url = base_url
                .map(|u| Url::parse(&u))
                .transpose()
                .with_context(|| format!("connection {key} has an invalid base URL"))?;
            found.push(ConnectionRecord {
                id,
                key,
                platform: platform.to_owned(),
                environment,
                identity,
                base_url,
                sealed: Sealed { nonce, ciphertext },
            });
        }
        Ok(found)
    }

    /// Decrypt a connection's secret into a credential for the runtime.
    pub fn credential(&self, record: &ConnectionRecord) -> anyhow::Result<Credential> {
        let plaintext = self
            .master_key()
            .open(&record.sealed, &secret_context(&record.key))
            .with_context(|| format!("decrypting the secret of connection {}", record.key))?;
        let secret = String::from_utf8(plaintext).context("stored secret is not UTF-8")?;
        Ok(Credential::new(secret))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vault::KeySource;

    fn new_connection(platform: &str, environment: Environment, identity: Option<&str>) -> NewConnection {
        NewConnection {
            platform: platform.into(),
            environment,
            identity: identity.map(Into::into),
            identity_type: None,
            base_url: None,
            secret: "ghp_very_secret_token".into(),
        }
    }

    #[test]
    fn secrets_are_encrypted_and_bound_to_their_row() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let db = dir.path().join("db");
        let vault = Vault::open(&db, &KeySource::Explicit("ab".repeat(32)))?;
        let a = vault.add_connection(&new_connection("github", Environment::Test, None))?;
        let b = vault.add_connection(&new_connection("github", Environment::Test, Some("alice")))?;
        assert_eq!(vault.credential(&a)?.secret(), "ghp_very_secret_token");

        let raw = std::fs::read(&db)?;
        let wal = std::fs::read(dir.path().join("db-wal")).unwrap_or_default();
        let needle = b"ghp_very_secret_token";
        assert!(
            !raw.windows(needle.len()).any(|w| w == needle),
            "plain text in the database"
        );
        assert!(
            !wal.windows(needle.len()).any(|w| w == needle),
            "plain text in the WAL"
        );

        // Swapping ciphertexts between rows must not decrypt.
        let swapped = ConnectionRecord {
            sealed: b.sealed.clone(),
            ..a.clone()
        };
        assert!(vault.credential(&swapped).is_err());
        Ok(())
    }

    #[test]
    fn selection_by_environment_identity_and_key() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let vault = Vault::open(&dir.path().join("db"), &KeySource::Explicit("ab".repeat(32)))?;
        let test = vault.add_connection(&new_connection("github", Environment::Test, None))?;
        let alice = vault.add_connection(&new_connection("github", Environment::Test, Some("alice")))?;
        vault.add_connection(&new_connection("github", Environment::Live, None))?;

        let all_test = vault.find_connections("github", Environment::Test, &ConnectionSelector::default())?;
        assert_eq!(all_test.len(), 2);
        let by_identity = vault.find_connections(
            "github",
            Environment::Test,
            &ConnectionSelector {
                identity: Some("alice".into()),
                ..Default::default()
            },
        )?;
        assert_eq!(by_identity.len(), 1);
        assert_eq!(by_identity[0].key, alice.key);
        let by_key = vault.find_connections(
            "github",
            Environment::Live,
            &ConnectionSelector {
                connection_key: Some(test.key.clone()),
                ..Default::default()
            },
        )?;
        assert!(
            by_key.is_empty(),
            "a test connection is invisible to a live caller"
        );
        Ok(())
    }
}
