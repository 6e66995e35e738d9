//! The credential vault: API keys and connections in SQLite, secrets encrypted at rest.
//!
//! - [`crypto`] — AEAD sealing, the master key, hashing.
//! - [`api_keys`] — caller keys: creation, lookup by hash.
//! - [`connections`] — stored credentials per platform, environment and identity.
//! - [`approvals`] — the outbound hosts an operator approved per connector.
//! - [`cache`] — API keys and connections in memory, valid while nothing changed them.
//! - [`generation`] — how often the request path reads the credentials generation.
//! - [`oauth_apps`] — the operator's OAuth client per integration (secret encrypted).
//! - [`connect_sessions`] — short-lived end-user connect flows (OAuth state, PKCE).
//! - [`logs`] — the request log, written in batches off the request path.
//!
//! SQLite runs in WAL mode with `synchronous=FULL`, so an acknowledged credential write
//! survives a crash. Calls are synchronous; async callers go through [`Vault::run`], which
//! moves the work off the executor.

pub mod api_keys;
pub mod approvals;
pub mod cache;
pub mod connect_sessions;
pub mod connections;
pub mod crypto;
pub mod generation;
pub mod logs;
pub mod oauth_apps;

use anyhow::{Context, bail};
use crypto::{Keyring, Sealed};
use rusqlite::{Connection, OptionalExtension};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

/// The schema version this binary writes (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = 6;

/// Migrations, one per version step; index `i` upgrades from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    r#"
    CREATE TABLE meta (
        name  TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE api_keys (
        id          INTEGER PRIMARY KEY,
        prefix      TEXT NOT NULL,
        hash        BLOB NOT NULL UNIQUE,
        environment TEXT NOT NULL CHECK (environment IN ('test', 'live')),
        scopes      TEXT NOT NULL,
        created_at  INTEGER NOT NULL,
        revoked_at  INTEGER,
        expires_at  INTEGER
    );
    CREATE TABLE connections (
        id                INTEGER PRIMARY KEY,
        key               TEXT NOT NULL UNIQUE,
        platform          TEXT NOT NULL,
        environment       TEXT NOT NULL CHECK (environment IN ('test', 'live')),
        identity          TEXT,
        identity_type     TEXT,
        base_url          TEXT,
        secret_nonce      BLOB NOT NULL,
        secret_ciphertext BLOB NOT NULL,
        key_id            TEXT NOT NULL,
        state             TEXT NOT NULL DEFAULT 'operational',
        active            INTEGER NOT NULL DEFAULT 1,
        created_at        INTEGER NOT NULL,
        updated_at        INTEGER NOT NULL
    );
    CREATE INDEX connections_by_platform ON connections (platform, environment, active);
"#,
    r#"
    ALTER TABLE connections ADD COLUMN name TEXT;
    ALTER TABLE connections ADD COLUMN description TEXT;
    ALTER TABLE connections ADD COLUMN tags TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE connections ADD COLUMN consecutive_auth_failures INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE api_keys ADD COLUMN name TEXT;
    ALTER TABLE api_keys ADD COLUMN daily_quota INTEGER;
    ALTER TABLE api_keys ADD COLUMN per_minute_limit INTEGER;
    CREATE TABLE request_logs (
        id              INTEGER PRIMARY KEY,
        transaction_key TEXT NOT NULL,
        created_at_ms   INTEGER NOT NULL,
        key_id          INTEGER,
        key_prefix      TEXT,
        environment     TEXT,
        integration     TEXT,
        endpoint        TEXT,
        connection_key  TEXT,
        http_status     INTEGER NOT NULL,
        upstream_status INTEGER,
        outcome         TEXT NOT NULL,
        duration_us     INTEGER NOT NULL,
        request_bytes   INTEGER NOT NULL,
        response_bytes  INTEGER NOT NULL
    );
    CREATE INDEX request_logs_by_time ON request_logs (created_at_ms);
    CREATE INDEX request_logs_by_key ON request_logs (key_id, created_at_ms);
"#,
    r#"
    CREATE TABLE connector_hosts (
        connector   TEXT PRIMARY KEY,
        hosts       TEXT NOT NULL,
        approved_at INTEGER NOT NULL
    );
"#,
    r#"
    ALTER TABLE connections ADD COLUMN token_expires_at INTEGER;
    CREATE TABLE oauth_apps (
        platform          TEXT PRIMARY KEY,
        client_id         TEXT NOT NULL,
        secret_nonce      BLOB NOT NULL,
        secret_ciphertext BLOB NOT NULL,
        key_id            TEXT NOT NULL,
        redirect_url      TEXT,
        scopes            TEXT NOT NULL DEFAULT '[]',
        authorize_url     TEXT,
        token_url         TEXT,
        created_at        INTEGER NOT NULL,
        updated_at        INTEGER NOT NULL
    );
    CREATE TABLE connect_sessions (
        id                  INTEGER PRIMARY KEY,
        public_id           TEXT NOT NULL UNIQUE,
        token_hash          BLOB NOT NULL UNIQUE,
        environment         TEXT NOT NULL CHECK (environment IN ('test', 'live')),
        platform            TEXT NOT NULL,
        identity            TEXT,
        identity_type       TEXT,
        connection_key      TEXT,
        status              TEXT NOT NULL DEFAULT 'pending',
        error               TEXT,
        state_hash          BLOB UNIQUE,
        browser_hash        BLOB,
        verifier_nonce      BLOB,
        verifier_ciphertext BLOB,
        verifier_key_id     TEXT,
        created_at          INTEGER NOT NULL,
        expires_at          INTEGER NOT NULL
    );
"#,
    // One counter that every change to keys, connections or OAuth apps bumps, from any
    // process: the in-memory credential cache is valid while it stands still.
    r#"
    CREATE TABLE credentials_generation (
        id    INTEGER PRIMARY KEY CHECK (id = 1),
        value INTEGER NOT NULL
    );
    INSERT INTO credentials_generation (id, value) VALUES (1, 0);
    CREATE TRIGGER api_keys_inserted AFTER INSERT ON api_keys
        BEGIN UPDATE credentials_generation SET value = value + 1; END;
    CREATE TRIGGER api_keys_updated AFTER UPDATE ON api_keys
        BEGIN UPDATE credentials_generation SET value = value + 1; END;
    CREATE TRIGGER api_keys_deleted AFTER DELETE ON api_keys
        BEGIN UPDATE credentials_generation SET value = value + 1; END;
    CREATE TRIGGER connections_inserted AFTER INSERT ON connections
        BEGIN UPDATE credentials_generation SET value = value + 1; END;
    CREATE TRIGGER connections_updated AFTER UPDATE ON connections
        BEGIN UPDATE credentials_generation SET value = value + 1; END;
    CREATE TRIGGER connections_deleted AFTER DELETE ON connections
        BEGIN UPDATE credentials_generation SET value = value + 1; END;
"#,
    r#"
    ALTER TABLE connect_sessions ADD COLUMN base_url TEXT;
"#,
];

/// Where the master key comes from.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// Given explicitly (from `SLUICE_MASTER_KEY`).
    Explicit(String),
    /// A key file, created on first start of an empty database.
    File(PathBuf),
}

/// Reader connections; reads never wait for the writer in WAL mode.
const READERS: usize = 4;

/// One writer connection (SQLite allows one writer at a time anyway) and a few readers.
struct Pool {
    writer: Mutex<Connection>,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
    /// Reads only the credentials generation, on the request path.
    watcher: Mutex<Connection>,
    /// The generation last read by the request path.
    generation_memo: generation::GenerationMemo,
}

/// Handle to the vault database. Cheap to clone.
#[derive(Clone)]
pub struct Vault {
    pool: Arc<Pool>,
    cache: Arc<cache::CredentialCache>,
    keyring: Arc<RwLock<Keyring>>,
    key_source: KeySource,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("key_source", &self.key_source.kind())
            .finish()
    }
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Vault {
    /// Open (creating and migrating as needed) the database at `path`.
    ///
    /// Refuses a database written by a newer binary, and a database that holds encrypted
    /// secrets when the master key is missing or different.
    pub fn open(path: &Path, key_source: &KeySource) -> anyhow::Result<Self> {
        let mut conn = open_connection(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // Credentials are written here: a commit is on disk before it is acknowledged.
        conn.pragma_update(None, "synchronous", "FULL")?;
        migrate(&mut conn, path)?;

        let recorded_key_id: Option<String> = conn
            .query_row("SELECT value FROM meta WHERE name = 'master_key_id'", [], |r| {
                r.get(0)
            })
            .optional()?;
        let keyring = load_keyring(key_source, recorded_key_id.is_none(), path)?;
        // Every key that sealed a stored secret must be present: refuse to start otherwise,
        // rather than fail on the first request that needs one.
        let mut needed: Vec<String> = conn
            .prepare("SELECT key_id FROM connections UNION SELECT key_id FROM oauth_apps")?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        needed.extend(recorded_key_id.clone());
        if let Some(missing) = needed.iter().find(|id| keyring.find(id).is_none()) {
            bail!(
                "the master key does not match this database: it holds secrets sealed with key id {missing}, \
                 but the key given has id {} (set SLUICE_MASTER_KEY or restore the key file)",
                keyring.ids().join(", ")
            );
        }
        if recorded_key_id.as_deref() != Some(keyring.primary().id()) {
            conn.execute(
                "INSERT INTO meta (name, value) VALUES ('master_key_id', ?1)
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                [keyring.primary().id()],
            )?;
        }
        let readers = (0..READERS)
            .map(|_| {
                let reader = open_connection(path)?;
                reader.pragma_update(None, "query_only", "ON")?;
                Ok(Mutex::new(reader))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let watcher = open_connection(path)?;
        watcher.pragma_update(None, "query_only", "ON")?;
        Ok(Self {
            pool: Arc::new(Pool {
                writer: Mutex::new(conn),
                readers,
                next_reader: AtomicUsize::new(0),
                watcher: Mutex::new(watcher),
                generation_memo: generation::GenerationMemo::default(),
            }),
            cache: Arc::default(),
            keyring: Arc::new(RwLock::new(keyring)),
            key_source: key_source.clone(),
        })
    }

    /// Run `f` with the connection on a blocking thread.
    pub async fn run<T, F>(&self, f: F) -> anyhow::Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Vault) -> anyhow::Result<T> + Send + 'static,
    {
        let vault = self.clone();
        tokio::task::spawn_blocking(move || f(&vault))
            .await
            .context("vault task failed")?
    }

    /// The credentials generation as of now, for the request path: changes made through this
    /// vault are seen at once, changes by other processes within
    /// [`generation::CROSS_PROCESS_STALENESS`].
    pub fn current_generation(&self) -> anyhow::Result<i64> {
        self.pool.generation_memo.current(|| self.generation())
    }

    /// The credentials generation: it changes whenever any process changes an API key or a
    /// connection. One indexed read of one row.
    pub fn generation(&self) -> anyhow::Result<i64> {
        let conn = lock(&self.pool.watcher)?;
        let mut statement = conn.prepare_cached("SELECT value FROM credentials_generation WHERE id = 1")?;
        Ok(statement.query_row([], |r| r.get(0))?)
    }

    /// The in-memory cache of keys and connections.
    pub fn cache(&self) -> &cache::CredentialCache {
        &self.cache
    }

    /// A reader connection, for queries. Blocks: call from a blocking thread ([`Vault::run`]).
    fn reader(&self) -> anyhow::Result<MutexGuard<'_, Connection>> {
        let readers = &self.pool.readers;
        let start = self.pool.next_reader.fetch_add(1, Ordering::Relaxed);
        // Take the first idle reader, else wait for the one in turn.
        for offset in 0..readers.len() {
            if let Ok(guard) = readers[(start + offset) % readers.len()].try_lock() {
                return Ok(guard);
            }
        }
        lock(&readers[start % readers.len()])
    }

    /// Run `f` in a `BEGIN IMMEDIATE` transaction on the writer and commit it: the write lock
    /// is taken up front, so concurrent writers queue instead of failing mid-transaction.
    fn write<T>(&self, f: impl FnOnce(&rusqlite::Transaction<'_>) -> anyhow::Result<T>) -> anyhow::Result<T> {
        let mut conn = lock(&self.pool.writer)?;
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let value = f(&tx)?;
        tx.commit()?;
        self.pool.generation_memo.local_write_committed();
        Ok(value)
    }

    /// Seal `plaintext` with the primary key, bound to `context`.
    pub(crate) fn seal(&self, plaintext: &[u8], context: &str) -> anyhow::Result<Sealed> {
        self.keyring().primary().seal(plaintext, context)
    }

    /// Open a sealed secret with the key that sealed it. A key id this process does not know
    /// means the keys were rotated meanwhile: reload them from their source once and retry.
    pub(crate) fn open_sealed(&self, sealed: &Sealed, context: &str) -> anyhow::Result<Vec<u8>> {
        if let Some(key) = self.keyring().find(&sealed.key_id) {
            return key.open(sealed, context);
        }
        let reloaded = load_keyring(&self.key_source, false, Path::new("the database"))?;
        let opened = reloaded
            .find(&sealed.key_id)
            .ok_or_else(|| anyhow::anyhow!("no master key with id {} is configured", sealed.key_id))?
            .open(sealed, context);
        self.set_keyring(reloaded);
        tracing::info!("master keys reloaded after a rotation");
        opened
    }

    /// Fail unless a write transaction can be taken (for readiness checks); writes nothing.
    pub fn check_writable(&self) -> anyhow::Result<()> {
        self.write(|tx| {
            tx.execute("UPDATE meta SET value = value WHERE 0", [])?;
            Ok(())
        })
    }

    /// Rotate the master key without stopping running gateways: with a key file, a new key is
    /// generated and written first in the file (old keys after it), every secret is
    /// re-encrypted under it, and the old keys are then dropped from the file. Gateways that
    /// meet a secret sealed with a key they do not know reload the file. With
    /// `SLUICE_MASTER_KEY`, `new_key` must be given and already be configured (first) on the
    /// running gateways. Returns the new key id and how many secrets were re-encrypted.
    pub fn rotate_key(&self, new_key: Option<&str>) -> anyhow::Result<(String, usize)> {
        let current = self.keyring();
        let (new_primary, key_file) = match (&self.key_source, new_key) {
            (KeySource::File(path), None) => (crypto::MasterKey::generate(), Some(path.clone())),
            (KeySource::File(path), Some(text)) => (crypto::MasterKey::parse(text)?, Some(path.clone())),
            (KeySource::Explicit(_), Some(text)) => (crypto::MasterKey::parse(text)?, None),
            (KeySource::Explicit(_), None) => bail!(
                "with SLUICE_MASTER_KEY, pass --new-key and configure the gateways with \
                 SLUICE_MASTER_KEY=<new>,<old> first"
            ),
        };
        if current.find(new_primary.id()).is_some() && current.primary().id() == new_primary.id() {
            bail!("the new key is already the primary key");
        }
        if let Some(path) = &key_file {
            let mut keys = vec![*new_primary.raw()];
            keys.extend(current.raw_keys());
            crypto::replace_key_file(path, &keys)?;
        }
        let mut extended = Keyring::single(new_primary.clone());
        extended.extend(&current);
        self.set_keyring(extended);
        let count = self.reencrypt_all(&new_primary)? + self.reencrypt_oauth_apps(&new_primary)?;
        if let Some(path) = &key_file {
            crypto::replace_key_file(path, &[*new_primary.raw()])?;
        }
        self.set_keyring(Keyring::single(new_primary.clone()));
        Ok((new_primary.id().to_owned(), count))
    }

    /// A 32-byte key for `purpose`, derived from the primary master key (e.g. to authenticate
    /// the compiled-artifact cache).
    pub fn derive_key(&self, purpose: &str) -> [u8; 32] {
        use sha2::Digest;
        let mut hasher = sha2::Sha256::new();
        hasher.update(b"sluice derived key\0");
        hasher.update(purpose.as_bytes());
        hasher.update([0]);
        hasher.update(self.keyring().primary().raw());
        hasher.finalize().into()
    }

    fn set_keyring(&self, keyring: Keyring) {
        match self.keyring.write() {
            Ok(mut current) => *current = keyring,
            Err(poisoned) => *poisoned.into_inner() = keyring,
        }
    }

    fn keyring(&self) -> Keyring {
        match self.keyring.read() {
            Ok(keyring) => keyring.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

impl KeySource {
    fn kind(&self) -> &'static str {
        match self {
            Self::Explicit(_) => "SLUICE_MASTER_KEY",
            Self::File(_) => "key file",
        }
    }
}

/// Read the keyring from its source; a missing key file is created only when `may_create`.
fn load_keyring(source: &KeySource, may_create: bool, database: &Path) -> anyhow::Result<Keyring> {
    match source {
        KeySource::Explicit(text) => Keyring::parse(text).context("SLUICE_MASTER_KEY is invalid"),
        KeySource::File(key_path) => {
            crypto::load_or_create_key_file(key_path, may_create)?.ok_or_else(|| {
                anyhow::anyhow!(
                    "{} holds encrypted secrets but its master key is missing: \
                 set SLUICE_MASTER_KEY or restore {}",
                    database.display(),
                    key_path.display()
                )
            })
        }
    }
}

fn lock(mutex: &Mutex<Connection>) -> anyhow::Result<MutexGuard<'_, Connection>> {
    mutex
        .lock()
        .map_err(|_| anyhow::anyhow!("a vault connection lock is poisoned"))
}

fn open_connection(path: &Path) -> anyhow::Result<Connection> {
    let conn = Connection::open(path).with_context(|| format!("opening database {}", path.display()))?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}

fn migrate(conn: &mut Connection, path: &Path) -> anyhow::Result<()> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        bail!(
            "the database {} has schema version {version}, newer than this binary supports \
             ({SCHEMA_VERSION}); upgrade sluice",
            path.display()
        );
    }
    for (from, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute_batch(sql)
            .with_context(|| format!("migrating the database from version {from}"))?;
        tx.pragma_update(None, "user_version", from as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reopening_with_the_same_key_file_works() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let db = dir.path().join("sluice.db");
        let key = KeySource::File(dir.path().join("master.key"));
        drop(Vault::open(&db, &key)?);
        Vault::open(&db, &key)?;
        Ok(())
    }

    #[test]
    fn missing_key_file_for_an_existing_database_is_refused() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let db = dir.path().join("sluice.db");
        let key_path = dir.path().join("master.key");
        drop(Vault::open(&db, &KeySource::File(key_path.clone()))?);
        std::fs::remove_file(&key_path)?;
        let error = Vault::open(&db, &KeySource::File(key_path.clone())).expect_err("must refuse");
        assert!(error.to_string().contains("master key is missing"), "{error}");
        assert!(
            !key_path.exists(),
            "no new key may be made up for an existing database"
        );
        Ok(())
    }

    #[test]
    fn a_different_key_is_refused() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let db = dir.path().join("sluice.db");
        drop(Vault::open(&db, &KeySource::Explicit("11".repeat(32)))?);
        let error = Vault::open(&db, &KeySource::Explicit("22".repeat(32))).expect_err("must refuse");
        assert!(error.to_string().contains("does not match"), "{error}");
        // With the old key present as a secondary key, the database opens again.
        Vault::open(
            &db,
            &KeySource::Explicit(format!("{},{}", "22".repeat(32), "11".repeat(32))),
        )?;
        Ok(())
    }

    #[test]
    fn rotation_reencrypts_every_secret_and_replaces_the_key_file() -> anyhow::Result<()> {
        use crate::vault::api_keys::Environment;
        use crate::vault::connections::NewConnection;
        let dir = tempfile::tempdir()?;
        let db = dir.path().join("sluice.db");
        let key_path = dir.path().join("master.key");
        let source = KeySource::File(key_path.clone());
        let vault = Vault::open(&db, &source)?;
        let record = vault.add_connection(
            &NewConnection {
                platform: "github".into(),
                environment: Some(Environment::Test),
                secret: "ghp_rotate_me_please".into(),
                ..NewConnection::default()
            },
            None,
        )??;
        // A second handle stands for a gateway that keeps running during the rotation.
        let running = Vault::open(&db, &source)?;
        let old_file = std::fs::read_to_string(&key_path)?;
        let (new_id, count) = vault.rotate_key(None)?;
        assert_eq!(count, 1);
        let new_file = std::fs::read_to_string(&key_path)?;
        assert_ne!(old_file, new_file);
        assert_eq!(
            new_file.lines().count(),
            1,
            "old keys are dropped after re-encryption"
        );
        let reread = running
            .get_connection(Environment::Test, &record.key)?
            .expect("exists");
        assert_eq!(reread.key_id(), new_id);
        assert_eq!(
            running.credential(&reread)?.secret(),
            "ghp_rotate_me_please",
            "the running handle reloads"
        );
        drop((vault, running));
        let reopened = Vault::open(&db, &source)?;
        let record = reopened
            .get_connection(Environment::Test, &record.key)?
            .expect("exists");
        assert_eq!(reopened.credential(&record)?.secret(), "ghp_rotate_me_please");
        Ok(())
    }

    #[test]
    fn an_older_schema_is_migrated_in_place() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let db = dir.path().join("sluice.db");
        {
            let conn = Connection::open(&db)?;
            conn.execute_batch(MIGRATIONS[0])?;
            conn.pragma_update(None, "user_version", 1)?;
        }
        let vault = Vault::open(&db, &KeySource::Explicit("11".repeat(32)))?;
        let version: i64 = vault
            .reader()?
            .pragma_query_value(None, "user_version", |r| r.get(0))?;
        assert_eq!(version, SCHEMA_VERSION);
        assert_eq!(vault.prune_logs(i64::MAX)?, 0, "the request log table exists");
        Ok(())
    }

    #[test]
    fn a_newer_schema_is_refused() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let db = dir.path().join("sluice.db");
        Connection::open(&db)?.pragma_update(None, "user_version", SCHEMA_VERSION + 1)?;
        let error = Vault::open(&db, &KeySource::Explicit("11".repeat(32))).expect_err("must refuse");
        assert!(error.to_string().contains("newer than this binary"), "{error}");
        Ok(())
    }
}
