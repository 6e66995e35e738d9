//! API keys and selected connections (with their decrypted credentials) kept in memory, so
//! the request path does not go to SQLite for them on every call.
//!
//! Validity rests on the credentials generation ([`super::Vault::generation`]): SQLite triggers
//! bump it on every change to `api_keys` or `connections`, whichever process makes it (this
//! gateway, the CLI, another gateway on the same file). The request path reads it through
//! [`super::Vault::current_generation`]; an entry is used only while the generation it was
//! loaded under is still current, so a key revoked or a connection deleted through this
//! gateway stops working on the very next request, and one changed by another process within
//! [`super::generation::CROSS_PROCESS_STALENESS`] (10 ms). Unknown keys are never cached, so
//! guessing keys cannot fill memory, and the maps are bounded.

use super::api_keys::{ApiKey, Environment};
use super::connections::ConnectionRecord;
use crate::runtime::Credential;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

/// Most entries per map; past it the map starts over.
const MAX_ENTRIES: usize = 10_000;

/// Which connection a call selected: integration, environment, connection key, identity,
/// identity type.
pub type SelectionKey = (
    String,
    Environment,
    Option<String>,
    Option<String>,
    Option<String>,
);

#[derive(Default)]
struct Entries {
    /// Generation the entries were loaded under.
    generation: i64,
    /// API keys by the SHA-256 of the presented key.
    keys: HashMap<Vec<u8>, ApiKey>,
    /// Selected connections and their stored credentials.
    connections: HashMap<SelectionKey, (ConnectionRecord, Credential)>,
}

/// The cache; see the module docs for when entries are valid.
#[derive(Default)]
pub struct CredentialCache {
    entries: Mutex<Entries>,
}

impl std::fmt::Debug for CredentialCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialCache").finish_non_exhaustive()
    }
}

impl CredentialCache {
    /// The entries, emptied first if `generation` moved on since they were loaded.
    fn at(&self, generation: i64) -> MutexGuard<'_, Entries> {
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if entries.generation != generation {
            entries.keys.clear();
            entries.connections.clear();
            entries.generation = generation;
        }
        entries
    }

    /// The API key with this hash, if cached under `generation`.
    pub fn api_key(&self, generation: i64, hash: &[u8]) -> Option<ApiKey> {
        self.at(generation).keys.get(hash).cloned()
    }

    /// Remember an API key loaded under `generation`.
    pub fn remember_api_key(&self, generation: i64, hash: Vec<u8>, key: ApiKey) {
        let mut entries = self.at(generation);
        if entries.keys.len() >= MAX_ENTRIES {
            entries.keys.clear();
        }
        entries.keys.insert(hash, key);
    }

    /// The connection a selection resolved to, if cached under `generation`.
    pub fn connection(
        &self,
        generation: i64,
        selection: &SelectionKey,
    ) -> Option<(ConnectionRecord, Credential)> {
        self.at(generation).connections.get(selection).cloned()
    }

    /// Remember what a selection resolved to under `generation`.
    pub fn remember_connection(
        &self,
        generation: i64,
        selection: SelectionKey,
        found: (ConnectionRecord, Credential),
    ) {
        let mut entries = self.at(generation);
        if entries.connections.len() >= MAX_ENTRIES {
            entries.connections.clear();
        }
        entries.connections.insert(selection, found);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vault::api_keys::{KeyOptions, Scope};
    use crate::vault::{KeySource, Vault};

    #[test]
    fn every_change_from_any_connection_moves_the_generation_on() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("v.db");
        let source = KeySource::File(dir.path().join("key"));
        let vault = Vault::open(&path, &source)?;
        let start = vault.generation()?;
        let created = vault.create_api_key(&KeyOptions::new(Environment::Test, Scope::All))?;
        let after_create = vault.generation()?;
        assert!(after_create > start);

        // Another process (here: another handle on the same file) revokes the key.
        let other = Vault::open(&path, &source)?;
        assert_eq!(
            other.revoke_api_key(&created.record.prefix)?,
            crate::vault::api_keys::Revocation::Revoked(created.record.id)
        );
        assert!(
            vault.generation()? > after_create,
            "a change by another process is seen"
        );

        // Request-log rows do not touch the credentials generation.
        let before_log = vault.generation()?;
        vault.count_calls_since(created.record.id, 0)?;
        assert_eq!(vault.generation()?, before_log);
        Ok(())
    }

    #[test]
    fn entries_live_only_as_long_as_their_generation() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let vault = Vault::open(&dir.path().join("v.db"), &KeySource::File(dir.path().join("key")))?;
        let created = vault.create_api_key(&KeyOptions::new(Environment::Test, Scope::All))?;
        let cache = CredentialCache::default();
        cache.remember_api_key(7, b"hash".to_vec(), created.record.clone());
        assert_eq!(cache.api_key(7, b"hash").map(|k| k.id), Some(created.record.id));
        assert!(
            cache.api_key(8, b"hash").is_none(),
            "a new generation empties the cache"
        );
        assert!(
            cache.api_key(7, b"hash").is_none(),
            "and nothing comes back afterwards"
        );
        Ok(())
    }
}
