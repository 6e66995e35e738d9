//! Connections: one stored credential for one platform, environment and identity.

use super::api_keys::Environment;
use super::crypto::{self, Sealed};
use super::{Vault, now, now_micros};
use crate::runtime::Credential;
use crate::store::{ConnectionChanges, NewConnectionRow};
use anyhow::Context;
use url::Url;

/// Consecutive upstream 401s after which a connection is `failed` rather than `degraded`.
pub const FAILED_AFTER_AUTH_FAILURES: i64 = 3;

/// How an upstream's answer changed a connection's health, where an operator should hear of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthChange {
    /// Nothing worth a word (including degraded: one 401 may be a blip).
    None,
    /// It just turned `failed`: its credential no longer works until the user reconnects.
    Failed,
    /// A `failed` connection worked again (its credential was fixed upstream).
    Recovered,
}

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
    /// Kind of identity.
    pub identity_type: Option<String>,
    /// Display name.
    pub name: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Free-form tags.
    pub tags: Vec<String>,
    /// Base URL replacing the connector's default origin.
    pub base_url: Option<Url>,
    /// `operational`, `degraded`, `failed` or `unknown`.
    pub state: String,
    /// Whether calls may use it.
    pub active: bool,
    /// Upstream 401s in a row.
    pub consecutive_auth_failures: i64,
    /// When the stored OAuth access token expires (Unix seconds), if it is one that does.
    pub token_expires_at: Option<i64>,
    /// Creation time (Unix seconds).
    pub created_at: i64,
    /// Last change (Unix seconds).
    pub updated_at: i64,
    /// When its secret was last stored (Unix seconds): for OAuth, when its tokens were issued,
    /// which with their expiry says how long they live.
    pub secret_stored_at: i64,
    /// The secret, sealed.
    pub(crate) sealed: Sealed,
}

impl ConnectionRecord {
    /// Id of the master key that sealed the secret.
    pub fn key_id(&self) -> &str {
        &self.sealed.key_id
    }

    /// The public id used in the vault API.
    pub fn public_id(&self) -> String {
        format!("conn_{}", self.id)
    }
}

/// What a new connection holds.
#[derive(Debug, Clone, Default)]
pub struct NewConnection {
    /// Connector id.
    pub platform: String,
    /// Environment.
    pub environment: Option<Environment>,
    /// Owner identity.
    pub identity: Option<String>,
    /// Identity kind: user, team, organization or project.
    pub identity_type: Option<String>,
    /// Display name.
    pub name: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// Base URL override.
    pub base_url: Option<Url>,
    /// The secret (token, API key, `user:password`, or an OAuth [`TokenSet`] as JSON).
    pub secret: String,
    /// Expiry of an OAuth access token (Unix seconds).
    pub token_expires_at: Option<i64>,
}

/// What an OAuth connection stores as its secret: the tokens, sealed together as JSON.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TokenSet {
    /// The access token sent upstream.
    pub access_token: String,
    /// The refresh token, if the provider issued one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// Expiry of the access token (Unix seconds), if the provider said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    /// Scopes granted, as the provider reported them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Why the provider refused to refresh these tokens, once it has: their refresh token is
    /// then dropped (known bad, never sent again) and calls are told to reconnect until new
    /// tokens replace these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_refused: Option<String>,
}

impl std::fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSet")
            .field("has_refresh_token", &self.refresh_token.is_some())
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl TokenSet {
    /// Read an OAuth connection's secret. A secret that is not a token set (an access token
    /// stored by hand) is used as the access token, without refresh.
    pub fn from_secret(secret: &str) -> Self {
        serde_json::from_str(secret).unwrap_or_else(|_| Self {
            access_token: secret.to_owned(),
            refresh_token: None,
            expires_at: None,
            scope: None,
            refresh_refused: None,
        })
    }

    /// The secret to store.
    pub fn to_secret(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Changes to a connection; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct ConnectionPatch {
    /// New display name.
    pub name: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// New tags.
    pub tags: Option<Vec<String>>,
    /// Enable or disable.
    pub active: Option<bool>,
    /// New base URL (`Some(None)` clears it).
    pub base_url: Option<Option<Url>>,
    /// New secret; also resets the state to operational.
    pub secret: Option<String>,
}

/// Which connection a call asks for.
#[derive(Debug, Clone, Default)]
pub struct ConnectionSelector {
    /// An explicit connection key.
    pub connection_key: Option<String>,
    /// An identity whose connection to use.
    pub identity: Option<String>,
    /// The kind of owner `identity` names (`user`, `team`, …): with it, only a connection made
    /// for that kind matches, so user `42` and organization `42` are two tenants; without it,
    /// a connection of any kind (or none) does.
    pub identity_type: Option<String>,
}

/// Filters of the vault list API; all optional and combined with AND.
#[derive(Debug, Clone, Default)]
pub struct ConnectionFilter {
    /// Any of these connection keys (none: any key).
    pub keys: Vec<String>,
    /// Only connections of these connectors (`None`: any; the caller's scope).
    pub platforms_in_scope: Option<Vec<String>>,
    /// Any of these connector ids (none: any).
    pub platforms: Vec<String>,
    /// Owner identity.
    pub identity: Option<String>,
    /// Identity kind.
    pub identity_type: Option<String>,
    /// Active or not.
    pub active: Option<bool>,
    /// Every one of these tags must be present.
    pub tags: Vec<String>,
    /// Any of these row ids (none: any).
    pub ids: Vec<i64>,
    /// This name.
    pub name: Option<String>,
    /// This health state (`operational`, `degraded`, `failed`).
    pub state: Option<String>,
}

/// One page of connections.
#[derive(Debug)]
pub struct ConnectionPage {
    /// The rows on this page.
    pub rows: Vec<ConnectionRecord>,
    /// Rows matching the filter on all pages.
    pub total: i64,
}

/// The environment already holds as many connections as its plan allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the {environment} environment already has its limit of {limit} connection(s)")]
pub struct PlanLimitReached {
    /// The environment.
    pub environment: Environment,
    /// The limit.
    pub limit: u32,
}

/// `identity` as it appears in a connection key, where it only helps people read the key (its
/// random end makes it unique, and nothing parses it back): ASCII letters, digits and `-_.@`
/// are kept and every other character becomes `_`. The key travels in a header
/// (`x-sluice-connection-key`, where a client cannot always send UTF-8), in URL paths (where
/// `/`, `?`, `%` or a space would need encoding a client may not do) and in query strings
/// (where `+` reads as a space), and its `::` separators must be the only ones (`a::b` would
/// read as two segments). The identity itself is stored and shown unchanged.
fn key_segment(identity: &str) -> String {
    identity
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' | '.' | '@' => c,
            _ => '_',
        })
        .collect()
}

/// Associated data binding a ciphertext to its row and column.
fn secret_context(key: &str) -> String {
    format!("connections/{key}/secret")
}

/// Parse a public id (`conn_42`) into a row id.
pub(crate) fn row_id(public_id: &str) -> Option<i64> {
    public_id.strip_prefix("conn_")?.parse().ok()
}

impl Vault {
    /// Store a new connection; the secret is encrypted before it reaches the store. With
    /// `limit`, the count check and the insert are one atomic step of the store, so
    /// concurrent creations cannot overshoot it.
    pub fn add_connection(
        &self,
        new: &NewConnection,
        limit: Option<u32>,
    ) -> anyhow::Result<Result<ConnectionRecord, PlanLimitReached>> {
        let environment = new.environment.unwrap_or(Environment::Test);
        let key = format!(
            "{}::{}::{}::{}",
            environment,
            new.platform,
            new.identity
                .as_deref()
                .map_or_else(|| "default".to_owned(), key_segment),
            crypto::random_hex(16)
        );
        let row = NewConnectionRow {
            sealed: self.seal(new.secret.as_bytes(), &secret_context(&key))?,
            key,
            platform: new.platform.clone(),
            environment,
            identity: new.identity.clone(),
            identity_type: new.identity_type.clone(),
            name: new.name.clone(),
            description: new.description.clone(),
            tags: new.tags.clone(),
            base_url: new.base_url.clone(),
            token_expires_at: new.token_expires_at,
            created_at: now(),
        };
        let inserted = self.write(|store| store.insert_connection(&row, limit))?;
        Ok(inserted.map(|id| ConnectionRecord {
            id,
            key: row.key,
            platform: row.platform,
            environment,
            identity: row.identity,
            identity_type: row.identity_type,
            name: row.name,
            description: row.description,
            tags: row.tags,
            base_url: row.base_url,
            state: "operational".into(),
            active: true,
            consecutive_auth_failures: 0,
            token_expires_at: row.token_expires_at,
            created_at: row.created_at,
            updated_at: row.created_at,
            secret_stored_at: row.created_at,
            sealed: row.sealed,
        }))
    }

    /// Active connections for `platform` in `environment` matching `selector`.
    pub fn find_connections(
        &self,
        platform: &str,
        environment: Environment,
        selector: &ConnectionSelector,
    ) -> anyhow::Result<Vec<ConnectionRecord>> {
        self.store.find_connections(platform, environment, selector)
    }

    /// The active connections of `platform` in `environment` that `identity` owns (of
    /// `identity_type`, or of any type); with no identity, the key owner's own (made without
    /// one), which calls naming no identity use. More than one makes such calls ambiguous.
    pub fn owner_connections(
        &self,
        platform: &str,
        environment: Environment,
        identity: Option<&str>,
        identity_type: Option<&str>,
    ) -> anyhow::Result<Vec<ConnectionRecord>> {
        let selector = ConnectionSelector {
            connection_key: None,
            identity: identity.map(str::to_owned),
            identity_type: identity_type.map(str::to_owned),
        };
        let mut found = self.find_connections(platform, environment, &selector)?;
        // Without an identity the selector matches every identity.
        found.retain(|connection| connection.identity.as_deref() == identity);
        Ok(found)
    }

    /// One page (1-based) of the environment's connections matching `filter`, newest first.
    pub fn list_connections(
        &self,
        environment: Environment,
        filter: &ConnectionFilter,
        page: u32,
        limit: u32,
    ) -> anyhow::Result<ConnectionPage> {
        self.store.list_connections(environment, filter, page, limit)
    }

    /// The connection with public id `conn_N` or key `id_or_key` in `environment`.
    pub fn get_connection(
        &self,
        environment: Environment,
        id_or_key: &str,
    ) -> anyhow::Result<Option<ConnectionRecord>> {
        self.store.get_connection(environment, id_or_key)
    }

    /// Apply `patch` to a connection; returns the updated record, or `None` if there is none.
    pub fn update_connection(
        &self,
        environment: Environment,
        id_or_key: &str,
        patch: &ConnectionPatch,
    ) -> anyhow::Result<Option<ConnectionRecord>> {
        let Some(current) = self.get_connection(environment, id_or_key)? else {
            return Ok(None);
        };
        let changes = ConnectionChanges {
            name: patch.name.clone(),
            description: patch.description.clone(),
            tags: patch.tags.clone(),
            active: patch.active,
            base_url: patch.base_url.clone(),
            sealed: match &patch.secret {
                Some(secret) => Some(self.seal(secret.as_bytes(), &secret_context(&current.key))?),
                None => None,
            },
        };
        self.write(|store| store.update_connection(current.id, &changes, now_micros))?;
        self.get_connection(environment, &current.public_id())
    }

    /// Delete a connection and its secret. Returns whether one was deleted.
    pub fn delete_connection(&self, environment: Environment, id_or_key: &str) -> anyhow::Result<bool> {
        self.write(|store| store.delete_connection(environment, id_or_key))
    }

    /// Record how the upstream answered a call made with this connection's credential, sent at
    /// `sent_at_us` (microseconds since the epoch): repeated 401s degrade and then fail it; a
    /// success makes it operational again. An answer recorded after one to a later call (or
    /// after a reconnect) changes nothing. Writes only when something changes, so the hot path
    /// stays read-only: a success on a connection that was healthy when the call began is not
    /// written, and a 401 recorded late after it still degrades the connection until the next
    /// success. Returns what changed that an operator should hear about.
    pub fn record_auth_outcome(
        &self,
        record: &ConnectionRecord,
        unauthorized: bool,
        sent_at_us: i64,
    ) -> anyhow::Result<HealthChange> {
        if unauthorized {
            let turned_failed = self.write(|store| {
                store.record_auth_failure(record.id, FAILED_AFTER_AUTH_FAILURES, sent_at_us, now_micros)
            })?;
            return Ok(if turned_failed {
                HealthChange::Failed
            } else {
                HealthChange::None
            });
        }
        if record.consecutive_auth_failures == 0 && record.state == "operational" {
            return Ok(HealthChange::None);
        }
        let was_failed = self.write(|store| store.record_auth_success(record.id, sent_at_us, now_micros))?;
        Ok(if was_failed {
            HealthChange::Recovered
        } else {
            HealthChange::None
        })
    }

    /// Re-encrypt every stored secret under `new_primary`, in small transactions so readers
    /// and writers are never blocked for long. The caller must already have made
    /// `new_primary` available to running gateways (the key file lists it first). Returns how
    /// many secrets were re-encrypted.
    pub fn reencrypt_all(&self, new_primary: &crypto::MasterKey) -> anyhow::Result<usize> {
        const BATCH: usize = 100;
        let mut done = 0;
        loop {
            let batch = self
                .store
                .connections_sealed_with_other_keys(new_primary.id(), BATCH)?;
            if batch.is_empty() {
                return Ok(done);
            }
            let mut resealed = Vec::with_capacity(batch.len());
            for (id, key, sealed) in batch {
                let context = secret_context(&key);
                let plaintext = self.open_sealed(&sealed, &context)?;
                resealed.push((id, sealed.key_id, new_primary.seal(&plaintext, &context)?));
            }
            self.write(|store| store.replace_sealed_secrets(&resealed, new_primary.id()))?;
            done += resealed.len();
        }
    }

    /// Replace an OAuth connection's refreshed tokens in one durable write (SQLite runs with
    /// `synchronous=FULL`), so that a rotated refresh token is on disk before anyone uses the
    /// new access token; unless its secret changed since `record` was read (a reconnect, maybe
    /// to another account, or another gateway's refresh), whose tokens are newer. Its health
    /// stays as it was: a refreshed token the upstream still refuses must not make a failing
    /// connection look operational. Returns whether they were stored. A secret only sealed
    /// anew meanwhile (`vault rotate-key`) holds the same tokens, and does not count as changed.
    pub fn store_tokens(&self, record: &ConnectionRecord, tokens: &TokenSet) -> anyhow::Result<bool> {
        let sealed = self.seal(tokens.to_secret().as_bytes(), &secret_context(&record.key))?;
        // Decrypted only if the first write finds the secret changed, which is rare.
        let mut refreshed_from = None;
        let mut expected = record.sealed.ciphertext.clone();
        // A key rotation re-seals each secret once: a second look suffices, a third is spare.
        for _ in 0..3 {
            let stored = self.write(|store| {
                store.store_refreshed_tokens(record.id, &expected, &sealed, tokens.expires_at, now())
            })?;
            if stored {
                return Ok(true);
            }
            let Some(now_stored) = self.connection_by_id(record.id)? else {
                return Ok(false);
            };
            let before = match &refreshed_from {
                Some(before) => before,
                None => refreshed_from.insert(self.credential(record)?),
            };
            if self.credential(&now_stored)?.secret() != before.secret() {
                return Ok(false);
            }
            expected = now_stored.sealed.ciphertext;
        }
        Ok(false)
    }

    /// Replace a connection's secret (and token expiry, and its base URL when one is given) in
    /// one durable write, making it operational again: what a reconnect does. One write, so
    /// that no call sends the new secret to the old base URL.
    pub fn store_secret(
        &self,
        record: &ConnectionRecord,
        secret: &str,
        token_expires_at: Option<i64>,
        base_url: Option<&Url>,
    ) -> anyhow::Result<()> {
        let sealed = self.seal(secret.as_bytes(), &secret_context(&record.key))?;
        self.write(|store| {
            store.replace_connection_secret(record.id, &sealed, token_expires_at, base_url, now_micros)
        })
    }

    /// Mark a connection `failed`: its credential, `record`'s, no longer works and the user
    /// must reconnect. Nothing happens if the secret was replaced since `record` was read (a
    /// reconnect). Returns whether it was not failed before and is now.
    pub fn mark_connection_failed(&self, record: &ConnectionRecord) -> anyhow::Result<bool> {
        self.write(|store| store.mark_connection_failed(record.id, &record.sealed.ciphertext, now_micros))
    }

    /// Record that the provider refused to refresh `tokens`, `record`'s: keep them without
    /// their refresh token and with the reason, and mark the connection `failed`, in one write
    /// that does nothing if the secret was replaced meanwhile (a reconnect during the refresh).
    /// Returns whether the connection was not failed before.
    pub fn refresh_refused(
        &self,
        record: &ConnectionRecord,
        tokens: &TokenSet,
        reason: &str,
    ) -> anyhow::Result<bool> {
        let kept = TokenSet {
            refresh_token: None,
            refresh_refused: Some(reason.to_owned()),
            ..tokens.clone()
        };
        let sealed = self.seal(kept.to_secret().as_bytes(), &secret_context(&record.key))?;
        self.write(|store| {
            store.fail_connection_with_secret(record.id, &record.sealed.ciphertext, &sealed, now_micros)
        })
    }

    /// Take the lease on refreshing `record`'s tokens for `seconds`, as `holder` (one refresh
    /// attempt), unless another holder's lasts; returns whether `holder` has it now.
    pub fn take_refresh_lease(
        &self,
        record: &ConnectionRecord,
        holder: &str,
        seconds: i64,
    ) -> anyhow::Result<bool> {
        // Not `write`: a lease changes no credential, so caches need not look again.
        let at = now();
        self.store.take_refresh_lease(record.id, holder, at, at + seconds)
    }

    /// Give up `holder`'s lease on refreshing `record`'s tokens (if it has not run out and gone
    /// to another holder meanwhile).
    pub fn release_refresh_lease(&self, record: &ConnectionRecord, holder: &str) -> anyhow::Result<()> {
        self.store.release_refresh_lease(record.id, holder)
    }

    /// The connection with row id `id`, whatever its environment (for the token refresher).
    pub fn connection_by_id(&self, id: i64) -> anyhow::Result<Option<ConnectionRecord>> {
        self.store.connection_by_id(id)
    }

    /// Decrypt an OAuth connection's tokens.
    pub fn tokens(&self, record: &ConnectionRecord) -> anyhow::Result<TokenSet> {
        let plaintext = self
            .open_sealed(&record.sealed, &secret_context(&record.key))
            .with_context(|| format!("decrypting the tokens of connection {}", record.key))?;
        Ok(TokenSet::from_secret(
            std::str::from_utf8(&plaintext).context("stored secret is not UTF-8")?,
        ))
    }

    /// Decrypt a connection's secret into a credential for the runtime.
    pub fn credential(&self, record: &ConnectionRecord) -> anyhow::Result<Credential> {
        let plaintext = self
            .open_sealed(&record.sealed, &secret_context(&record.key))
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
            environment: Some(environment),
            identity: identity.map(Into::into),
            secret: "ghp_very_secret_token".into(),
            ..NewConnection::default()
        }
    }

    fn vault() -> anyhow::Result<(tempfile::TempDir, Vault)> {
        let dir = tempfile::tempdir()?;
        let vault = Vault::open(&dir.path().join("db"), &KeySource::Explicit("ab".repeat(32)))?;
        Ok((dir, vault))
    }

    fn add(vault: &Vault, new: &NewConnection) -> anyhow::Result<ConnectionRecord> {
        Ok(vault.add_connection(new, None)??)
    }

    /// The state and consecutive auth failures of test connection `key`, as stored now.
    fn health(vault: &Vault, key: &str) -> anyhow::Result<(String, i64)> {
        let now = vault.get_connection(Environment::Test, key)?.expect("exists");
        Ok((now.state, now.consecutive_auth_failures))
    }

    #[test]
    fn keys_spell_identities_in_plain_ascii_and_identities_are_kept_as_they_are() -> anyhow::Result<()> {
        let (_dir, vault) = vault()?;
        for (identity, segment) in [
            ("alice@example.com", "alice@example.com"),
            ("alice+work@example.com", "alice_work@example.com"),
            ("ünï cödé", "_n__c_d_"),
            ("a::b", "a__b"),
            ("team/42?x=1%", "team_42_x_1_"),
        ] {
            let record = add(
                &vault,
                &new_connection("github", Environment::Test, Some(identity)),
            )?;
            let prefix = format!("test::github::{segment}::");
            assert!(record.key.starts_with(&prefix), "{identity}: {}", record.key);
            assert_eq!(record.key.matches("::").count(), 3, "{}", record.key);
            assert!(record.key.is_ascii(), "{}", record.key);
            assert_eq!(record.identity.as_deref(), Some(identity));
            let found = vault
                .get_connection(Environment::Test, &record.key)?
                .expect("found by key");
            assert_eq!(found.identity.as_deref(), Some(identity));
        }
        Ok(())
    }

    #[test]
    fn secrets_are_encrypted_and_bound_to_their_row() -> anyhow::Result<()> {
        let (dir, vault) = vault()?;
        let a = add(&vault, &new_connection("github", Environment::Test, None))?;
        let b = add(
            &vault,
            &new_connection("github", Environment::Test, Some("alice")),
        )?;
        assert_eq!(vault.credential(&a)?.secret(), "ghp_very_secret_token");

        let raw = std::fs::read(dir.path().join("db"))?;
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

    /// A secret given through a patch (the vault API, `connections add --replace`) replaces
    /// an OAuth token set too: the old token's expiry goes with it, or the first call would try
    /// to refresh a token that has no refresh token, and fail the connection.
    #[test]
    fn a_patched_secret_forgets_the_old_tokens_expiry() -> anyhow::Result<()> {
        let (_dir, vault) = vault()?;
        let oauth = NewConnection {
            token_expires_at: Some(now() + 60),
            ..new_connection("gmail", Environment::Test, Some("ann"))
        };
        let record = add(&vault, &oauth)?;
        assert!(record.token_expires_at.is_some());
        let renamed = ConnectionPatch {
            name: Some("Ann's".into()),
            ..ConnectionPatch::default()
        };
        let kept = vault.update_connection(Environment::Test, &record.key, &renamed)?;
        assert_eq!(
            kept.context("connection")?.token_expires_at,
            record.token_expires_at
        );
        let new_secret = ConnectionPatch {
            secret: Some("ya29.a_plain_token".into()),
            ..ConnectionPatch::default()
        };
        let replaced = vault
            .update_connection(Environment::Test, &record.key, &new_secret)?
            .context("connection")?;
        assert_eq!(replaced.token_expires_at, None);
        assert_eq!(vault.credential(&replaced)?.secret(), "ya29.a_plain_token");
        Ok(())
    }

    /// Refreshed tokens go in only over the secret they were refreshed from (a reconnect
    /// meanwhile wins), and leave the connection's health as it was.
    #[test]
    fn refreshed_tokens_replace_only_the_tokens_they_came_from() -> anyhow::Result<()> {
        let (_dir, vault) = vault()?;
        let record = add(&vault, &new_connection("gmail", Environment::Test, Some("ann")))?;
        vault.record_auth_outcome(&record, true, now_micros())?;
        let tokens = |access: &str| TokenSet {
            access_token: access.into(),
            refresh_token: Some("rt-1".into()),
            expires_at: Some(now() + 3600),
            scope: None,
            refresh_refused: None,
        };
        assert!(vault.store_tokens(&record, &tokens("at-refreshed"))?);
        let refreshed = vault
            .get_connection(Environment::Test, &record.key)?
            .context("connection")?;
        assert_eq!(
            (refreshed.state.as_str(), refreshed.consecutive_auth_failures),
            ("degraded", 1),
            "a refreshed token has not shown it works yet"
        );
        assert_eq!(
            TokenSet::from_secret(vault.credential(&refreshed)?.secret()).access_token,
            "at-refreshed"
        );
        // `record` is stale now: a refresh that started from it stores nothing.
        assert!(!vault.store_tokens(&record, &tokens("at-late"))?);
        let kept = vault
            .get_connection(Environment::Test, &record.key)?
            .context("connection")?;
        assert_eq!(
            TokenSet::from_secret(vault.credential(&kept)?.secret()).access_token,
            "at-refreshed"
        );
        // Sealed anew (a key rotation) is not changed: the refresh from it is stored.
        let current = vault
            .get_connection(Environment::Test, &record.key)?
            .context("connection")?;
        let resealed = vault.seal(
            vault.credential(&current)?.secret().as_bytes(),
            &secret_context(&current.key),
        )?;
        let key_id = current.sealed.key_id.clone();
        vault.write(|store| {
            store.replace_sealed_secrets(&[(current.id, key_id.clone(), resealed)], &key_id)
        })?;
        assert!(vault.store_tokens(&current, &tokens("at-after-rotation"))?);
        Ok(())
    }

    /// A reconnect to another base URL moves the secret and the URL in one write; one without
    /// a URL keeps the connection's.
    #[test]
    fn a_reconnect_stores_its_base_url_with_the_secret() -> anyhow::Result<()> {
        let (_dir, vault) = vault()?;
        let old_origin = Url::parse("https://ghe.old.example/api/v3")?;
        let record = add(
            &vault,
            &NewConnection {
                base_url: Some(old_origin.clone()),
                ..new_connection("github", Environment::Test, Some("ann"))
            },
        )?;
        let reread = |vault: &Vault| -> anyhow::Result<ConnectionRecord> {
            vault
                .get_connection(Environment::Test, &record.key)?
                .context("connection")
        };
        vault.store_secret(&record, "ghp_same_origin_1", None, None)?;
        let kept = reread(&vault)?;
        assert_eq!(kept.base_url.as_ref(), Some(&old_origin));
        assert_eq!(vault.credential(&kept)?.secret(), "ghp_same_origin_1");

        let new_origin = Url::parse("https://ghe.new.example/api/v3")?;
        vault.store_secret(&record, "ghp_new_origin_2", None, Some(&new_origin))?;
        let moved = reread(&vault)?;
        assert_eq!(moved.base_url.as_ref(), Some(&new_origin));
        assert_eq!(vault.credential(&moved)?.secret(), "ghp_new_origin_2");
        Ok(())
    }

    #[test]
    fn selection_by_environment_identity_and_key() -> anyhow::Result<()> {
        let (_dir, vault) = vault()?;
        let test = add(&vault, &new_connection("github", Environment::Test, None))?;
        let alice = add(
            &vault,
            &new_connection("github", Environment::Test, Some("alice")),
        )?;
        add(&vault, &new_connection("github", Environment::Live, None))?;

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

    #[test]
    fn an_identity_type_tells_owners_of_one_identity_apart() -> anyhow::Result<()> {
        let (_dir, vault) = vault()?;
        let of_type = |kind: Option<&str>| NewConnection {
            identity_type: kind.map(Into::into),
            ..new_connection("slack", Environment::Test, Some("42"))
        };
        let organization = add(&vault, &of_type(Some("organization")))?;
        let user = add(&vault, &of_type(Some("user")))?;
        let untyped = add(&vault, &of_type(None))?;
        let select = |kind: Option<&str>| {
            let selector = ConnectionSelector {
                identity: Some("42".into()),
                identity_type: kind.map(Into::into),
                ..Default::default()
            };
            let found = vault.find_connections("slack", Environment::Test, &selector)?;
            anyhow::Ok(found.into_iter().map(|c| c.key).collect::<Vec<_>>())
        };
        assert_eq!(select(Some("user"))?, std::slice::from_ref(&user.key));
        assert_eq!(
            select(Some("organization"))?,
            std::slice::from_ref(&organization.key)
        );
        assert!(select(Some("team"))?.is_empty());
        // Without a type, every connection of the identity matches, whatever its kind.
        assert_eq!(select(None)?, [organization.key, user.key, untyped.key]);
        Ok(())
    }

    #[test]
    fn list_filters_by_tags_and_paginates() -> anyhow::Result<()> {
        let (_dir, vault) = vault()?;
        for i in 0..5 {
            let mut new = new_connection("github", Environment::Test, Some(&format!("user{i}")));
            new.tags = if i % 2 == 0 {
                vec!["crm".into(), "eu".into()]
            } else {
                vec!["eu".into()]
            };
            add(&vault, &new)?;
        }
        let both = ConnectionFilter {
            tags: vec!["crm".into(), "eu".into()],
            ..Default::default()
        };
        assert_eq!(vault.list_connections(Environment::Test, &both, 1, 20)?.total, 3);
        let page = vault.list_connections(Environment::Test, &ConnectionFilter::default(), 2, 2)?;
        assert_eq!(page.total, 5);
        assert_eq!(page.rows.len(), 2);
        assert_eq!(page.rows[0].identity.as_deref(), Some("user2"), "newest first");
        Ok(())
    }

    #[test]
    fn list_counts_only_the_scope_and_takes_several_keys() -> anyhow::Result<()> {
        let (_dir, vault) = vault()?;
        let stripe = add(&vault, &new_connection("stripe", Environment::Test, Some("s")))?;
        let mut github = Vec::new();
        for i in 0..4 {
            let identity = format!("user{i}");
            github.push(add(
                &vault,
                &new_connection("github", Environment::Test, Some(&identity)),
            )?);
        }
        let stripe_only = ConnectionFilter {
            platforms_in_scope: Some(vec!["stripe".into()]),
            ..Default::default()
        };
        let page = vault.list_connections(Environment::Test, &stripe_only, 1, 2)?;
        assert_eq!(page.total, 1, "connections out of scope are not counted");
        assert_eq!(page.rows.len(), 1);
        assert_eq!(page.rows[0].key, stripe.key);

        let two_keys = ConnectionFilter {
            keys: vec![github[0].key.clone(), stripe.key.clone()],
            ..Default::default()
        };
        let page = vault.list_connections(Environment::Test, &two_keys, 1, 20)?;
        let mut keys: Vec<_> = page.rows.iter().map(|r| r.key.clone()).collect();
        keys.sort();
        let mut expected = vec![github[0].key.clone(), stripe.key.clone()];
        expected.sort();
        assert_eq!(keys, expected);

        // Pica's `_id` and `name` filters.
        let by_ids = ConnectionFilter {
            ids: vec![github[1].id, github[3].id],
            ..Default::default()
        };
        let page = vault.list_connections(Environment::Test, &by_ids, 1, 20)?;
        let ids: Vec<i64> = page.rows.iter().map(|r| r.id).collect();
        assert_eq!(ids, vec![github[3].id, github[1].id]);
        vault.update_connection(
            Environment::Test,
            &github[2].key,
            &ConnectionPatch {
                name: Some("Work".into()),
                ..Default::default()
            },
        )?;
        let by_name = ConnectionFilter {
            name: Some("Work".into()),
            ..Default::default()
        };
        let page = vault.list_connections(Environment::Test, &by_name, 1, 20)?;
        assert_eq!(
            page.rows.iter().map(|r| r.id).collect::<Vec<_>>(),
            vec![github[2].id]
        );
        Ok(())
    }

    #[test]
    fn patch_and_delete() -> anyhow::Result<()> {
        let (_dir, vault) = vault()?;
        let record = add(&vault, &new_connection("github", Environment::Test, None))?;
        let patched = vault
            .update_connection(
                Environment::Test,
                &record.public_id(),
                &ConnectionPatch {
                    name: Some("Work".into()),
                    active: Some(false),
                    secret: Some("ghp_rotated_secret".into()),
                    ..Default::default()
                },
            )?
            .expect("exists");
        assert_eq!(patched.name.as_deref(), Some("Work"));
        assert!(!patched.active);
        assert_eq!(vault.credential(&patched)?.secret(), "ghp_rotated_secret");
        assert!(
            vault
                .update_connection(Environment::Live, &record.key, &ConnectionPatch::default())?
                .is_none()
        );
        assert!(vault.delete_connection(Environment::Test, &record.key)?);
        assert!(
            vault
                .get_connection(Environment::Test, &record.public_id())?
                .is_none()
        );
        // The id of a deleted connection (here the newest, which SQLite would give again) is
        // never anyone else's: an app that kept it finds nothing.
        let next = add(&vault, &new_connection("github", Environment::Test, Some("dave")))?;
        assert_ne!(next.public_id(), record.public_id());
        assert!(
            vault
                .get_connection(Environment::Test, &record.public_id())?
                .is_none()
        );
        Ok(())
    }

    #[test]
    fn repeated_401s_fail_a_connection_and_success_restores_it() -> anyhow::Result<()> {
        let (_dir, vault) = vault()?;
        let record = add(&vault, &new_connection("github", Environment::Test, None))?;
        assert_eq!(
            vault.record_auth_outcome(&record, true, now_micros())?,
            HealthChange::None
        );
        let degraded = vault
            .get_connection(Environment::Test, &record.key)?
            .expect("exists");
        assert_eq!(degraded.state, "degraded");
        assert_eq!(
            vault.record_auth_outcome(&degraded, true, now_micros())?,
            HealthChange::None
        );
        // The third in a row fails it; a fourth changes nothing more.
        assert_eq!(
            vault.record_auth_outcome(&degraded, true, now_micros())?,
            HealthChange::Failed
        );
        assert_eq!(
            vault.record_auth_outcome(&degraded, true, now_micros())?,
            HealthChange::None
        );
        let failed = vault
            .get_connection(Environment::Test, &record.key)?
            .expect("exists");
        assert_eq!(failed.state, "failed");
        assert_eq!(
            vault.record_auth_outcome(&failed, false, now_micros())?,
            HealthChange::Recovered
        );
        // A refused refresh fails it once; 401s after that do not fail it again.
        assert!(vault.mark_connection_failed(&record)?);
        assert!(!vault.mark_connection_failed(&record)?, "it was failed already");
        for _ in 0..3 {
            assert_eq!(
                vault.record_auth_outcome(&record, true, now_micros())?,
                HealthChange::None
            );
        }
        let failed_again = vault
            .get_connection(Environment::Test, &record.key)?
            .expect("exists");
        assert_eq!(
            vault.record_auth_outcome(&failed_again, false, now_micros())?,
            HealthChange::Recovered
        );
        // A second success seen with the same (stale) record does not report it again.
        assert_eq!(
            vault.record_auth_outcome(&failed_again, false, now_micros())?,
            HealthChange::None
        );
        assert_eq!(health(&vault, &record.key)?, ("operational".into(), 0));
        Ok(())
    }

    /// Health is updated off the response path, so answers may be recorded out of order: the
    /// newest call's answer holds, and a reconnect is not undone by the old secret's 401s.
    #[test]
    fn an_answer_recorded_late_does_not_overrule_a_newer_one() -> anyhow::Result<()> {
        let (_dir, vault) = vault()?;
        let record = add(&vault, &new_connection("github", Environment::Test, None))?;
        let state = || -> anyhow::Result<(String, i64)> {
            let now = vault
                .get_connection(Environment::Test, &record.key)?
                .expect("exists");
            Ok((now.state, now.consecutive_auth_failures))
        };
        let (earlier, later) = (now_micros() - 1_000, now_micros());
        vault.record_auth_outcome(&record, true, later)?;
        let degraded = vault
            .get_connection(Environment::Test, &record.key)?
            .expect("exists");
        // A success of a call sent before that 401 says nothing of the credential now.
        vault.record_auth_outcome(&degraded, false, earlier)?;
        assert_eq!(state()?, ("degraded".into(), 1));
        // A success sent after it clears it; the 401 of an earlier call, recorded later, does
        // not count again.
        vault.record_auth_outcome(&degraded, false, later + 1)?;
        vault.record_auth_outcome(&degraded, true, later)?;
        assert_eq!(state()?, ("operational".into(), 0));
        // A reconnect clears it, and the old secret's 401s of calls sent before it do not
        // count against the new one.
        let sent_before_the_reconnect = now_micros() - 1;
        vault.record_auth_outcome(&record, true, sent_before_the_reconnect)?;
        vault.store_secret(&record, "ghp_reconnected", None, None)?;
        vault.record_auth_outcome(&record, true, sent_before_the_reconnect)?;
        assert_eq!(state()?, ("operational".into(), 0));
        // A refused refresh on a connection that 401s failed already still counts: a success
        // of a call sent before it does not make the connection operational.
        for _ in 0..3 {
            vault.record_auth_outcome(&record, true, now_micros())?;
        }
        let sent_before_the_refusal = now_micros() - 1;
        let reconnected = vault
            .get_connection(Environment::Test, &record.key)?
            .expect("exists");
        assert!(!vault.mark_connection_failed(&reconnected)?, "failed already");
        let failed = vault
            .get_connection(Environment::Test, &record.key)?
            .expect("exists");
        vault.record_auth_outcome(&failed, false, sent_before_the_refusal)?;
        assert_eq!(state()?.0, "failed");
        Ok(())
    }

    /// Marking a connection failed from a record read before a reconnect does nothing: the
    /// new secret is not the one that stopped working.
    #[test]
    fn a_reconnect_is_not_marked_failed_for_the_old_secret() -> anyhow::Result<()> {
        let (_dir, vault) = vault()?;
        let stale = add(&vault, &new_connection("github", Environment::Test, None))?;
        vault.store_secret(&stale, "ghp_reconnected", None, None)?;
        assert!(!vault.mark_connection_failed(&stale)?);
        let now = vault
            .get_connection(Environment::Test, &stale.key)?
            .expect("exists");
        assert_eq!(now.state, "operational");
        assert!(vault.mark_connection_failed(&now)?, "the current secret can be");
        Ok(())
    }

    /// A reconnect that waits for the write lock (another gateway, or a backup, holds it) is
    /// dated when it writes, not when it began: a call that read the old secret meanwhile and
    /// got a 401 does not degrade the new secret.
    #[test]
    fn a_reconnect_waiting_for_the_write_lock_is_dated_when_it_writes() -> anyhow::Result<()> {
        let (dir, vault) = vault()?;
        let record = add(&vault, &new_connection("github", Environment::Test, None))?;
        let mut other = rusqlite::Connection::open(dir.path().join("db"))?;
        let holding = other.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let sent_while_it_waited = std::thread::scope(|scope| -> anyhow::Result<i64> {
            let reconnect = scope.spawn(|| vault.store_secret(&record, "ghp_reconnected", None, None));
            std::thread::sleep(std::time::Duration::from_millis(300));
            let sent = now_micros();
            std::thread::sleep(std::time::Duration::from_millis(5));
            holding.commit()?;
            reconnect.join().expect("the reconnect did not panic")?;
            Ok(sent)
        })?;
        vault.record_auth_outcome(&record, true, sent_while_it_waited)?;
        assert_eq!(health(&vault, &record.key)?, ("operational".into(), 0));
        Ok(())
    }

    #[test]
    fn plan_limit_is_exact() -> anyhow::Result<()> {
        let (_dir, vault) = vault()?;
        let new = new_connection("github", Environment::Test, None);
        assert!(vault.add_connection(&new, Some(2))?.is_ok());
        assert!(vault.add_connection(&new, Some(2))?.is_ok());
        assert_eq!(
            vault
                .add_connection(&new, Some(2))?
                .expect_err("third is over the limit")
                .limit,
            2
        );
        Ok(())
    }
}
