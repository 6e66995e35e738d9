//! Caller API keys: `sk_test_…` / `sk_live_…`, stored only as a SHA-256 hash.

use super::{Vault, crypto, now};
use rusqlite::OptionalExtension;
use std::fmt;
use std::str::FromStr;

/// The environment a key or connection belongs to. A test key never reaches live data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Environment {
    /// `sk_test_…` keys and test connections.
    Test,
    /// `sk_live_…` keys and live connections.
    Live,
}

impl Environment {
    /// `test` or `live`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Test => "test",
            Self::Live => "live",
        }
    }
}

impl fmt::Display for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Environment {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "test" => Ok(Self::Test),
            "live" => Ok(Self::Live),
            other => anyhow::bail!("unknown environment `{other}` (expected test or live)"),
        }
    }
}

/// Which integrations a key may call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every integration.
    All,
    /// Only these integration ids.
    Only(Vec<String>),
}

impl Scope {
    /// Parse `*` or a comma-separated list of integration ids.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let text = text.trim();
        if text == "*" {
            return Ok(Self::All);
        }
        let ids: Vec<String> = text
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
        if ids.is_empty() {
            anyhow::bail!("a scope is `*` or a comma-separated list of integrations");
        }
        Ok(Self::Only(ids))
    }

    /// Whether `integration` is within this scope.
    pub fn allows(&self, integration: &str) -> bool {
        match self {
            Self::All => true,
            Self::Only(ids) => ids.iter().any(|id| id == integration),
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::All => f.write_str("*"),
            Self::Only(ids) => f.write_str(&ids.join(",")),
        }
    }
}

/// A stored key, as found by its hash.
#[derive(Debug, Clone)]
pub struct ApiKey {
    /// Row id.
    pub id: i64,
    /// The visible start of the key, e.g. `sk_test_3f9a`.
    pub prefix: String,
    /// Environment encoded in the key.
    pub environment: Environment,
    /// What it may call.
    pub scope: Scope,
    /// Revocation time, if revoked.
    pub revoked_at: Option<i64>,
    /// Expiry time, if any.
    pub expires_at: Option<i64>,
}

/// A freshly created key: the only time the full key is available.
#[derive(Debug)]
pub struct CreatedKey {
    /// The full key, to show once.
    pub key: String,
    /// What was stored.
    pub record: ApiKey,
}

impl Vault {
    /// Create a key for `environment` with `scope`.
    pub fn create_api_key(&self, environment: Environment, scope: &Scope) -> anyhow::Result<CreatedKey> {
        let key = format!("sk_{}_{}", environment, crypto::random_hex(24));
        let prefix = key[..12].to_owned();
        let conn = self.conn()?;
        conn.execute(
            "INSERT INTO api_keys (prefix, hash, environment, scopes, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            rusqlite::params![prefix, crypto::api_key_hash(&key), environment.as_str(), scope.to_string(), now()],
        )?;
        let id = conn.last_insert_rowid();
        Ok(CreatedKey {
            record: ApiKey {
                id,
                prefix,
                environment,
                scope: scope.clone(),
                revoked_at: None,
                expires_at: None,
            },
            key,
        })
    }

    /// Find the key whose hash matches `presented`. Comparing hashes through the index keeps
    /// the lookup's timing independent of how much of a guessed key is right.
    pub fn find_api_key(&self, presented: &str) -> anyhow::Result<Option<ApiKey>> {
        let conn = self.conn()?;
        let row = conn
            .query_row(
                "SELECT id, prefix, environment, scopes, revoked_at, expires_at FROM api_keys WHERE hash = ?1",
                [crypto::api_key_hash(presented)],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, Option<i64>>(4)?,
                        r.get::<_, Option<i64>>(5)?,
                    ))
                },
            )
            .optional()?;
        let Some((id, prefix, environment, scopes, revoked_at, expires_at)) = row else {
            return Ok(None);
        };
        Ok(Some(ApiKey {
            id,
            prefix,
            environment: environment.parse()?,
            scope: Scope::parse(&scopes)?,
            revoked_at,
            expires_at,
        }))
    }

    /// Revoke the key whose visible prefix is `prefix`. Returns whether one was revoked.
    pub fn revoke_api_key(&self, prefix: &str) -> anyhow::Result<bool> {
        let conn = self.conn()?;
        let changed = conn.execute(
            "UPDATE api_keys SET revoked_at = ?1 WHERE prefix = ?2 AND revoked_at IS NULL",
            rusqlite::params![now(), prefix],
        )?;
        Ok(changed > 0)
    }

    /// Number of keys ever created.
    pub fn count_api_keys(&self) -> anyhow::Result<i64> {
        Ok(self
            .conn()?
            .query_row("SELECT COUNT(*) FROM api_keys", [], |r| r.get(0))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vault::KeySource;

    fn vault() -> anyhow::Result<(tempfile::TempDir, Vault)> {
        let dir = tempfile::tempdir()?;
        let vault = Vault::open(&dir.path().join("db"), &KeySource::Explicit("ab".repeat(32)))?;
        Ok((dir, vault))
    }

    #[test]
    fn keys_are_found_by_their_hash_only() -> anyhow::Result<()> {
        let (_dir, vault) = vault()?;
        let created = vault.create_api_key(Environment::Live, &Scope::parse("github, slack")?)?;
        assert!(created.key.starts_with("sk_live_"));
        let found = vault.find_api_key(&created.key)?.expect("found");
        assert_eq!(found.environment, Environment::Live);
        assert!(found.scope.allows("slack") && !found.scope.allows("stripe"));
        assert!(vault.find_api_key(&format!("{}x", created.key))?.is_none());
        let stored: Vec<u8> = vault
            .conn()?
            .query_row("SELECT hash FROM api_keys", [], |r| r.get(0))?;
        assert!(
            !stored
                .windows(8)
                .any(|w| created.key.as_bytes().windows(8).any(|k| k == w))
        );
        Ok(())
    }

    #[test]
    fn revoked_keys_are_marked() -> anyhow::Result<()> {
        let (_dir, vault) = vault()?;
        let created = vault.create_api_key(Environment::Test, &Scope::All)?;
        assert!(vault.revoke_api_key(&created.record.prefix)?);
        assert!(
            vault
                .find_api_key(&created.key)?
                .expect("found")
                .revoked_at
                .is_some()
        );
        Ok(())
    }

    #[test]
    fn scope_parsing() {
        assert_eq!(Scope::parse("*").ok(), Some(Scope::All));
        assert!(Scope::parse(" , ").is_err());
    }
}
