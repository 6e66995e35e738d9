//! Caller API keys: `sk_test_…` / `sk_live_…`, stored only as a SHA-256 hash.

use super::{Vault, crypto, now};
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
    /// Every environment.
    pub const ALL: [Self; 2] = [Self::Test, Self::Live];

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

    /// Parse a scope given for a new key: as [`Self::parse`], and every entry must be a
    /// connector id as connectors spell them (`GitHub` would match nothing, ever). Stored
    /// scopes are read with `parse`, so keys made before this check keep working.
    pub fn parse_for_new_key(text: &str) -> anyhow::Result<Self> {
        let scope = Self::parse(text)?;
        for id in scope.integrations().unwrap_or_default() {
            if let Err(rule) = crate::runtime::manifest::check_connector_id(id) {
                anyhow::bail!("`{id}` is not an integration id: it {rule}");
            }
        }
        Ok(scope)
    }

    /// The integrations this scope is limited to (`None`: every one).
    pub fn integrations(&self) -> Option<&[String]> {
        match self {
            Self::All => None,
            Self::Only(ids) => Some(ids),
        }
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

/// Longest key name, in characters: a label for a list, not a document.
pub const MAX_KEY_NAME_CHARS: usize = 200;

/// A key's name as given for a new key: a blank one is no name; a longer one than
/// [`MAX_KEY_NAME_CHARS`], or one with control characters (it is printed in `keys list`), is
/// refused.
pub fn key_name(name: Option<String>) -> Result<Option<String>, String> {
    let Some(name) = name.filter(|name| !name.trim().is_empty()) else {
        return Ok(None);
    };
    if name.chars().count() > MAX_KEY_NAME_CHARS {
        return Err(format!(
            "a key name may be at most {MAX_KEY_NAME_CHARS} characters"
        ));
    }
    if name.chars().any(char::is_control) {
        return Err("a key name may not contain control characters".into());
    }
    Ok(Some(name))
}

/// `ids` as `3, 7`, for messages.
pub fn join_ids(ids: &[i64]) -> String {
    ids.iter().map(i64::to_string).collect::<Vec<_>>().join(", ")
}

/// What revoking a key by prefix or id did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revocation {
    /// The one active key that matched (its id) is revoked.
    Revoked(i64),
    /// No active key matched.
    NoActiveKey,
    /// Several active keys share the prefix (their ids); none was revoked.
    Ambiguous(Vec<i64>),
}

/// A stored key, as found by its hash.
#[derive(Debug, Clone)]
pub struct ApiKey {
    /// Row id.
    pub id: i64,
    /// The visible start of the key, e.g. `sk_test_3f9a`.
    pub prefix: String,
    /// Optional label.
    pub name: Option<String>,
    /// Environment encoded in the key.
    pub environment: Environment,
    /// What it may call.
    pub scope: Scope,
    /// Creation time (Unix seconds).
    pub created_at: i64,
    /// Revocation time, if revoked.
    pub revoked_at: Option<i64>,
    /// Expiry time, if any.
    pub expires_at: Option<i64>,
    /// Calls allowed per UTC day, if limited.
    pub daily_quota: Option<u32>,
    /// Calls allowed per minute, if limited.
    pub per_minute_limit: Option<u32>,
    /// Calls allowed in flight at once, if the key has a cap of its own (else the gateway's
    /// `--max-in-flight-per-key`, if any).
    pub max_in_flight: Option<u32>,
}

impl ApiKey {
    /// `active`, `revoked` or `expired` at time `now`.
    pub fn status(&self, now: i64) -> &'static str {
        if self.revoked_at.is_some() {
            "revoked"
        } else if self.expires_at.is_some_and(|at| at <= now) {
            "expired"
        } else {
            "active"
        }
    }
}

/// What a new key looks like.
#[derive(Debug, Clone)]
pub struct KeyOptions {
    /// Environment.
    pub environment: Environment,
    /// Scope.
    pub scope: Scope,
    /// Optional label.
    pub name: Option<String>,
    /// Optional expiry (Unix seconds).
    pub expires_at: Option<i64>,
    /// Calls per UTC day.
    pub daily_quota: Option<u32>,
    /// Calls per minute.
    pub per_minute_limit: Option<u32>,
    /// Calls in flight at once.
    pub max_in_flight: Option<u32>,
}

impl KeyOptions {
    /// An unlimited key for `environment` with `scope`.
    pub fn new(environment: Environment, scope: Scope) -> Self {
        Self {
            environment,
            scope,
            name: None,
            expires_at: None,
            daily_quota: None,
            per_minute_limit: None,
            max_in_flight: None,
        }
    }
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
    /// Create a key.
    pub fn create_api_key(&self, options: &KeyOptions) -> anyhow::Result<CreatedKey> {
        let key = format!("sk_{}_{}", options.environment, crypto::random_hex(24));
        let prefix = key[..12].to_owned();
        let created_at = now();
        let id = self
            .write(|store| store.insert_api_key(&prefix, &crypto::api_key_hash(&key), options, created_at))?;
        Ok(CreatedKey {
            record: ApiKey {
                id,
                prefix,
                name: options.name.clone(),
                environment: options.environment,
                scope: options.scope.clone(),
                created_at,
                revoked_at: None,
                expires_at: options.expires_at,
                daily_quota: options.daily_quota,
                per_minute_limit: options.per_minute_limit,
                max_in_flight: options.max_in_flight,
            },
            key,
        })
    }

    /// Find the key whose hash matches `presented`. Comparing hashes through the index keeps
    /// the lookup's timing independent of how much of a guessed key is right.
    pub fn find_api_key(&self, presented: &str) -> anyhow::Result<Option<ApiKey>> {
        self.store.api_key_by_hash(&crypto::api_key_hash(presented))
    }

    /// Every key, newest first.
    pub fn list_api_keys(&self) -> anyhow::Result<Vec<ApiKey>> {
        self.store.list_api_keys()
    }

    /// Revoke the active key whose visible prefix or id is `prefix_or_id`, if exactly one is.
    pub fn revoke_api_key(&self, prefix_or_id: &str) -> anyhow::Result<Revocation> {
        let matching = self.write(|store| store.revoke_api_key(prefix_or_id, now()))?;
        Ok(match matching.as_slice() {
            [] => Revocation::NoActiveKey,
            [only] => Revocation::Revoked(*only),
            _ => Revocation::Ambiguous(matching),
        })
    }

    /// Number of keys ever created.
    pub fn count_api_keys(&self) -> anyhow::Result<i64> {
        self.store.count_api_keys()
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
        let created = vault.create_api_key(&KeyOptions::new(
            Environment::Live,
            Scope::parse("github, slack")?,
        ))?;
        assert!(created.key.starts_with("sk_live_"));
        let found = vault.find_api_key(&created.key)?.expect("found");
        assert_eq!(found.environment, Environment::Live);
        assert!(found.scope.allows("slack") && !found.scope.allows("stripe"));
        assert!(vault.find_api_key(&format!("{}x", created.key))?.is_none());
        Ok(())
    }

    #[test]
    fn a_prefix_two_active_keys_share_revokes_neither() -> anyhow::Result<()> {
        let (dir, vault) = vault()?;
        let first = vault.create_api_key(&KeyOptions::new(Environment::Test, Scope::All))?;
        let second = vault.create_api_key(&KeyOptions::new(Environment::Test, Scope::All))?;
        // Four hex digits of prefix: two keys share one at about 300 keys.
        rusqlite::Connection::open(dir.path().join("db"))?.execute(
            "UPDATE api_keys SET prefix = ?1 WHERE id = ?2",
            rusqlite::params![first.record.prefix, second.record.id],
        )?;
        assert_eq!(
            vault.revoke_api_key(&first.record.prefix)?,
            Revocation::Ambiguous(vec![first.record.id, second.record.id])
        );
        for key in [&first.key, &second.key] {
            assert_eq!(
                vault.find_api_key(key)?.expect("found").revoked_at,
                None,
                "nothing revoked"
            );
        }
        assert_eq!(
            vault.revoke_api_key(&second.record.id.to_string())?,
            Revocation::Revoked(second.record.id),
            "by id"
        );
        assert_eq!(
            vault.revoke_api_key(&first.record.prefix)?,
            Revocation::Revoked(first.record.id),
            "the prefix names one active key again"
        );
        Ok(())
    }

    #[test]
    fn revoked_keys_are_marked() -> anyhow::Result<()> {
        let (_dir, vault) = vault()?;
        let created = vault.create_api_key(&KeyOptions::new(Environment::Test, Scope::All))?;
        assert_eq!(
            vault.revoke_api_key(&created.record.prefix)?,
            Revocation::Revoked(created.record.id)
        );
        assert_eq!(
            vault.revoke_api_key(&created.record.prefix)?,
            Revocation::NoActiveKey,
            "already revoked"
        );
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
        assert!(Scope::parse_for_new_key("github, hubspot").is_ok());
        let error = Scope::parse_for_new_key("github,GitHub")
            .expect_err("capitals")
            .to_string();
        assert!(
            error.contains("`GitHub` is not an integration id: it must be"),
            "{error}"
        );
        assert!(Scope::parse_for_new_key("Git Hub!!").is_err());
    }
}
