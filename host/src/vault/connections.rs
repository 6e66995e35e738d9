//! Connections: one stored credential for one platform, environment and identity.

use super::api_keys::Environment;
use super::crypto::{self, Sealed};
use super::{Vault, now};
use crate::runtime::Credential;
use anyhow::Context;
use rusqlite::OptionalExtension;
use url::Url;

/// Consecutive upstream 401s after which a connection is `failed` rather than `degraded`.
const FAILED_AFTER_AUTH_FAILURES: i64 = 3;

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
    sealed: Sealed,
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
#[derive(Clone, serde::Serialize, serde::Deserialize)]
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
}

/// Filters of the vault list API; all optional and combined with AND.
#[derive(Debug, Clone, Default)]
pub struct ConnectionFilter {
    /// Any of these connection keys (none: any key).
    pub keys: Vec<String>,
    /// Only connections of these connectors (`None`: any; the caller's scope).
    pub platforms_in_scope: Option<Vec<String>>,
    /// Connector id.
    pub platform: Option<String>,
    /// Owner identity.
    pub identity: Option<String>,
    /// Identity kind.
    pub identity_type: Option<String>,
    /// Active or not.
    pub active: Option<bool>,
    /// Every one of these tags must be present.
    pub tags: Vec<String>,
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
#[error("the {environment} environment already has its limit of {limit} connections")]
pub struct PlanLimitReached {
    /// The environment.
    pub environment: Environment,
    /// The limit.
    pub limit: u32,
}

/// Associated data binding a ciphertext to its row and column.
fn secret_context(key: &str) -> String {
    format!("connections/{key}/secret")
}

const COLUMNS: &str = "id, key, platform, environment, identity, identity_type, name, description, tags, \
     base_url, state, active, consecutive_auth_failures, created_at, updated_at, secret_nonce, secret_ciphertext, key_id, \
     token_expires_at";

fn record_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawRecord> {
    Ok(RawRecord {
        id: row.get(0)?,
        key: row.get(1)?,
        platform: row.get(2)?,
        environment: row.get(3)?,
        identity: row.get(4)?,
        identity_type: row.get(5)?,
        name: row.get(6)?,
        description: row.get(7)?,
        tags: row.get(8)?,
        base_url: row.get(9)?,
        state: row.get(10)?,
        active: row.get(11)?,
        consecutive_auth_failures: row.get(12)?,
        created_at: row.get(13)?,
        updated_at: row.get(14)?,
        nonce: row.get(15)?,
        ciphertext: row.get(16)?,
        key_id: row.get(17)?,
        token_expires_at: row.get(18)?,
    })
}

/// A row as SQLite returns it, before text columns are parsed.
struct RawRecord {
    id: i64,
    key: String,
    platform: String,
    environment: String,
    identity: Option<String>,
    identity_type: Option<String>,
    name: Option<String>,
    description: Option<String>,
    tags: String,
    base_url: Option<String>,
    state: String,
    active: bool,
    consecutive_auth_failures: i64,
    created_at: i64,
    updated_at: i64,
    nonce: Vec<u8>,
    ciphertext: Vec<u8>,
    key_id: String,
    token_expires_at: Option<i64>,
}

impl RawRecord {
    fn parse(self) -> anyhow::Result<ConnectionRecord> {
        let base_url = self
            .base_url
            .map(|u| Url::parse(&u))
            .transpose()
            .with_context(|| format!("connection {} has an invalid base URL", self.key))?;
        Ok(ConnectionRecord {
            environment: self.environment.parse()?,
            tags: serde_json::from_str(&self.tags).unwrap_or_default(),
            id: self.id,
            key: self.key,
            platform: self.platform,
            identity: self.identity,
            identity_type: self.identity_type,
            name: self.name,
            description: self.description,
            base_url,
            state: self.state,
            active: self.active,
            consecutive_auth_failures: self.consecutive_auth_failures,
            token_expires_at: self.token_expires_at,
            created_at: self.created_at,
            updated_at: self.updated_at,
            sealed: Sealed {
                key_id: self.key_id,
                nonce: self.nonce,
                ciphertext: self.ciphertext,
            },
        })
    }
}

/// Parse a public id (`conn_42`) into a row id.
fn row_id(public_id: &str) -> Option<i64> {
    public_id.strip_prefix("conn_")?.parse().ok()
}

impl Vault {
    /// Store a new connection; the secret is encrypted before it reaches SQLite. With
    /// `limit`, the count check and the insert happen in one write transaction, so
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
            new.identity.as_deref().unwrap_or("default"),
            crypto::random_hex(16)
        );
        let sealed = self.seal(new.secret.as_bytes(), &secret_context(&key))?;
        let at = now();
        let tags = serde_json::to_string(&new.tags)?;
        let inserted = self.write(|tx| {
            if let Some(limit) = limit {
                let count: i64 = tx.query_row(
                    "SELECT COUNT(*) FROM connections WHERE environment = ?1",
                    [environment.as_str()],
                    |r| r.get(0),
                )?;
                if count >= i64::from(limit) {
                    return Ok(Err(PlanLimitReached { environment, limit }));
                }
            }
            tx.execute(
                "INSERT INTO connections (key, platform, environment, identity, identity_type, name, description,
                    tags, base_url, secret_nonce, secret_ciphertext, key_id, created_at, updated_at, token_expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?13, ?14)",
                rusqlite::params![
                    key,
                    new.platform,
                    environment.as_str(),
                    new.identity,
                    new.identity_type,
                    new.name,
                    new.description,
                    tags,
                    new.base_url.as_ref().map(Url::as_str),
                    sealed.nonce,
                    sealed.ciphertext,
                    sealed.key_id,
                    at,
                    new.token_expires_at
                ],
            )?;
            Ok(Ok(tx.last_insert_rowid()))
        })?;
        Ok(inserted.map(|id| ConnectionRecord {
            id,
            key,
            platform: new.platform.clone(),
            environment,
            identity: new.identity.clone(),
            identity_type: new.identity_type.clone(),
            name: new.name.clone(),
            description: new.description.clone(),
            tags: new.tags.clone(),
            base_url: new.base_url.clone(),
            state: "operational".into(),
            active: true,
            consecutive_auth_failures: 0,
            token_expires_at: new.token_expires_at,
            created_at: at,
            updated_at: at,
            sealed,
        }))
    }

    /// Active connections for `platform` in `environment` matching `selector`.
    pub fn find_connections(
        &self,
        platform: &str,
        environment: Environment,
        selector: &ConnectionSelector,
    ) -> anyhow::Result<Vec<ConnectionRecord>> {
        let conn = self.reader()?;
        let mut statement = conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM connections
             WHERE platform = ?1 AND environment = ?2 AND active = 1
               AND (?3 IS NULL OR key = ?3) AND (?4 IS NULL OR identity = ?4)
             ORDER BY id"
        ))?;
        let rows = statement.query_map(
            rusqlite::params![
                platform,
                environment.as_str(),
                selector.connection_key,
                selector.identity
            ],
            record_from_row,
        )?;
        rows.map(|row| row?.parse()).collect()
    }

    /// One page (1-based) of the environment's connections matching `filter`, newest first.
    pub fn list_connections(
        &self,
        environment: Environment,
        filter: &ConnectionFilter,
        page: u32,
        limit: u32,
    ) -> anyhow::Result<ConnectionPage> {
        let tags = serde_json::to_string(&filter.tags)?;
        let keys = (!filter.keys.is_empty())
            .then(|| serde_json::to_string(&filter.keys))
            .transpose()?;
        let in_scope = filter
            .platforms_in_scope
            .as_ref()
            .map(serde_json::to_string)
            .transpose()?;
        // Lists travel as JSON arrays. Tags are stored as one; every requested tag must be in it.
        // The scope is applied here, not to the page afterwards, so that totals and pages count
        // only what the caller may see.
        let condition = "environment = ?1
             AND (?2 IS NULL OR key IN (SELECT value FROM json_each(?2))) AND (?3 IS NULL OR platform = ?3)
             AND (?4 IS NULL OR identity = ?4) AND (?5 IS NULL OR identity_type = ?5)
             AND (?6 IS NULL OR active = ?6)
             AND NOT EXISTS (SELECT 1 FROM json_each(?7) AS wanted
                             WHERE wanted.value NOT IN (SELECT value FROM json_each(connections.tags)))
             AND (?8 IS NULL OR platform IN (SELECT value FROM json_each(?8)))";
        let params = rusqlite::params![
            environment.as_str(),
            keys,
            filter.platform,
            filter.identity,
            filter.identity_type,
            filter.active,
            tags,
            in_scope,
        ];
        let conn = self.reader()?;
        let total: i64 = conn.query_row(
            &format!("SELECT COUNT(*) FROM connections WHERE {condition}"),
            params,
            |r| r.get(0),
        )?;
        let offset = i64::from(page.saturating_sub(1)) * i64::from(limit);
        let mut statement = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM connections WHERE {condition} ORDER BY id DESC LIMIT {limit} OFFSET {offset}"
        ))?;
        let rows = statement
            .query_map(params, record_from_row)?
            .map(|row| row?.parse())
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(ConnectionPage { rows, total })
    }

    /// The connection with public id `conn_N` or key `id_or_key` in `environment`.
    pub fn get_connection(
        &self,
        environment: Environment,
        id_or_key: &str,
    ) -> anyhow::Result<Option<ConnectionRecord>> {
        let conn = self.reader()?;
        let row = conn
            .query_row(
                &format!(
                    "SELECT {COLUMNS} FROM connections WHERE environment = ?1 AND (id = ?2 OR key = ?3)"
                ),
                rusqlite::params![environment.as_str(), row_id(id_or_key).unwrap_or(-1), id_or_key],
                record_from_row,
            )
            .optional()?;
        row.map(RawRecord::parse).transpose()
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
        let sealed = match &patch.secret {
            Some(secret) => Some(self.seal(secret.as_bytes(), &secret_context(&current.key))?),
            None => None,
        };
        let tags = patch.tags.as_ref().map(serde_json::to_string).transpose()?;
        let base_url_given = patch.base_url.is_some();
        let base_url = patch.base_url.clone().flatten().map(|u| u.to_string());
        self.write(|tx| {
            tx.execute(
                "UPDATE connections SET
                    name = COALESCE(?2, name),
                    description = COALESCE(?3, description),
                    tags = COALESCE(?4, tags),
                    active = COALESCE(?5, active),
                    base_url = CASE WHEN ?6 THEN ?7 ELSE base_url END,
                    secret_nonce = COALESCE(?8, secret_nonce),
                    secret_ciphertext = COALESCE(?9, secret_ciphertext),
                    key_id = CASE WHEN ?8 IS NULL THEN key_id ELSE ?10 END,
                    state = CASE WHEN ?8 IS NULL THEN state ELSE 'operational' END,
                    consecutive_auth_failures = CASE WHEN ?8 IS NULL THEN consecutive_auth_failures ELSE 0 END,
                    updated_at = ?11
                 WHERE id = ?1",
                rusqlite::params![
                    current.id,
                    patch.name,
                    patch.description,
                    tags,
                    patch.active,
                    base_url_given,
                    base_url,
                    sealed.as_ref().map(|s| s.nonce.clone()),
                    sealed.as_ref().map(|s| s.ciphertext.clone()),
                    sealed.as_ref().map(|s| s.key_id.clone()),
                    now()
                ],
            )?;
            Ok(())
        })?;
        self.get_connection(environment, &current.public_id())
    }

    /// Delete a connection and its secret. Returns whether one was deleted.
    pub fn delete_connection(&self, environment: Environment, id_or_key: &str) -> anyhow::Result<bool> {
        self.write(|tx| {
            let deleted = tx.execute(
                "DELETE FROM connections WHERE environment = ?1 AND (id = ?2 OR key = ?3)",
                rusqlite::params![environment.as_str(), row_id(id_or_key).unwrap_or(-1), id_or_key],
            )?;
            Ok(deleted > 0)
        })
    }

    /// Record how the upstream answered a call made with this connection's credential:
    /// repeated 401s degrade and then fail it; a success makes it operational again.
    /// Writes only when something changes, so the hot path stays read-only.
    pub fn record_auth_outcome(&self, record: &ConnectionRecord, unauthorized: bool) -> anyhow::Result<()> {
        if !unauthorized && record.consecutive_auth_failures == 0 && record.state == "operational" {
            return Ok(());
        }
        self.write(|tx| {
            if unauthorized {
                tx.execute(
                    "UPDATE connections SET consecutive_auth_failures = consecutive_auth_failures + 1,
                        state = CASE WHEN consecutive_auth_failures + 1 >= ?2 THEN 'failed' ELSE 'degraded' END,
                        updated_at = ?3
                     WHERE id = ?1",
                    rusqlite::params![record.id, FAILED_AFTER_AUTH_FAILURES, now()],
                )?;
            } else {
                tx.execute(
                    "UPDATE connections SET consecutive_auth_failures = 0, state = 'operational', updated_at = ?2
                     WHERE id = ?1",
                    rusqlite::params![record.id, now()],
                )?;
            }
            Ok(())
        })
    }

    /// Re-encrypt every stored secret under `new_primary`, in small transactions so readers
    /// and writers are never blocked for long. The caller must already have made
    /// `new_primary` available to running gateways (the key file lists it first). Returns how
    /// many secrets were re-encrypted.
    pub fn reencrypt_all(&self, new_primary: &crypto::MasterKey) -> anyhow::Result<usize> {
        const BATCH: i64 = 100;
        let mut done = 0;
        loop {
            let batch: Vec<(i64, String, Sealed)> = {
                let conn = self.reader()?;
                let mut statement = conn.prepare(
                    "SELECT id, key, key_id, secret_nonce, secret_ciphertext FROM connections
                     WHERE key_id <> ?1 ORDER BY id LIMIT ?2",
                )?;
                statement
                    .query_map(rusqlite::params![new_primary.id(), BATCH], |r| {
                        Ok((
                            r.get(0)?,
                            r.get(1)?,
                            Sealed {
                                key_id: r.get(2)?,
                                nonce: r.get(3)?,
                                ciphertext: r.get(4)?,
                            },
                        ))
                    })?
                    .collect::<rusqlite::Result<_>>()?
            };
            if batch.is_empty() {
                return Ok(done);
            }
            let mut resealed = Vec::with_capacity(batch.len());
            for (id, key, sealed) in &batch {
                let context = secret_context(key);
                let plaintext = self.open_sealed(sealed, &context)?;
                resealed.push((
                    *id,
                    sealed.key_id.clone(),
                    new_primary.seal(&plaintext, &context)?,
                ));
            }
            self.write(|tx| {
                for (id, old_key_id, sealed) in &resealed {
                    // Skip rows changed meanwhile (e.g. a new secret written by a PATCH).
                    tx.execute(
                        "UPDATE connections SET secret_nonce = ?2, secret_ciphertext = ?3, key_id = ?4
                         WHERE id = ?1 AND key_id = ?5",
                        rusqlite::params![id, sealed.nonce, sealed.ciphertext, sealed.key_id, old_key_id],
                    )?;
                }
                tx.execute(
                    "INSERT INTO meta (name, value) VALUES ('master_key_id', ?1)
                     ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                    [new_primary.id()],
                )?;
                Ok(())
            })?;
            done += resealed.len();
        }
    }

    /// Replace an OAuth connection's tokens in one durable write (the database runs with
    /// `synchronous=FULL`), making it operational again; a rotated refresh token is on disk
    /// before anyone uses the new access token.
    pub fn store_tokens(&self, record: &ConnectionRecord, tokens: &TokenSet) -> anyhow::Result<()> {
        self.store_secret(record, &tokens.to_secret(), tokens.expires_at)
    }

    /// Replace a connection's secret (and token expiry) in one durable write, making it
    /// operational again: what a reconnect does.
    pub fn store_secret(
        &self,
        record: &ConnectionRecord,
        secret: &str,
        token_expires_at: Option<i64>,
    ) -> anyhow::Result<()> {
        let sealed = self.seal(secret.as_bytes(), &secret_context(&record.key))?;
        self.write(|tx| {
            tx.execute(
                "UPDATE connections SET secret_nonce = ?2, secret_ciphertext = ?3, key_id = ?4,
                    token_expires_at = ?5, state = 'operational', consecutive_auth_failures = 0, updated_at = ?6
                 WHERE id = ?1",
                rusqlite::params![
                    record.id,
                    sealed.nonce,
                    sealed.ciphertext,
                    sealed.key_id,
                    token_expires_at,
                    now()
                ],
            )?;
            Ok(())
        })
    }

    /// Mark a connection `failed`: its credential no longer works and the user must reconnect.
    pub fn mark_connection_failed(&self, record: &ConnectionRecord) -> anyhow::Result<()> {
        self.write(|tx| {
            tx.execute(
                "UPDATE connections SET state = 'failed', updated_at = ?2 WHERE id = ?1",
                rusqlite::params![record.id, now()],
            )?;
            Ok(())
        })
    }

    /// The connection with row id `id`, whatever its environment (for the token refresher).
    pub fn connection_by_id(&self, id: i64) -> anyhow::Result<Option<ConnectionRecord>> {
        let conn = self.reader()?;
        let row = conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM connections WHERE id = ?1"),
                [id],
                record_from_row,
            )
            .optional()?;
        row.map(RawRecord::parse).transpose()
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
        Ok(())
    }

    #[test]
    fn repeated_401s_fail_a_connection_and_success_restores_it() -> anyhow::Result<()> {
        let (_dir, vault) = vault()?;
        let record = add(&vault, &new_connection("github", Environment::Test, None))?;
        vault.record_auth_outcome(&record, true)?;
        let degraded = vault
            .get_connection(Environment::Test, &record.key)?
            .expect("exists");
        assert_eq!(degraded.state, "degraded");
        vault.record_auth_outcome(&degraded, true)?;
        vault.record_auth_outcome(&degraded, true)?;
        let failed = vault
            .get_connection(Environment::Test, &record.key)?
            .expect("exists");
        assert_eq!(failed.state, "failed");
        vault.record_auth_outcome(&failed, false)?;
        let restored = vault
            .get_connection(Environment::Test, &record.key)?
            .expect("exists");
        assert_eq!(
            (restored.state.as_str(), restored.consecutive_auth_failures),
            ("operational", 0)
        );
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
