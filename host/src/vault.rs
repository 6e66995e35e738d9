//! The credential vault: API keys and connections in SQLite, secrets encrypted at rest.
//!
//! - [`crypto`] — AEAD sealing, the master key, hashing.
//! - [`api_keys`] — caller keys: creation, lookup by hash.
//! - [`connections`] — stored credentials per platform, environment and identity.
//! - [`logs`] — the request log, written in batches off the request path.
//!
//! SQLite runs in WAL mode with `synchronous=FULL`, so an acknowledged credential write
//! survives a crash. Calls are synchronous; async callers go through [`Vault::run`], which
//! moves the work off the executor.

pub mod api_keys;
pub mod connections;
pub mod crypto;
pub mod logs;

use anyhow::{Context, bail};
use crypto::MasterKey;
use rusqlite::{Connection, OptionalExtension};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// The schema version this binary writes (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = 2;

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
}

/// Handle to the vault database. Cheap to clone.
#[derive(Clone)]
pub struct Vault {
    pool: Arc<Pool>,
    key: MasterKey,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault").field("key_id", &self.key.id()).finish()
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
        let key = match key_source {
            KeySource::Explicit(text) => MasterKey::parse(text).context("SLUICE_MASTER_KEY is invalid")?,
            KeySource::File(key_path) => {
                let may_create = recorded_key_id.is_none();
                crypto::load_or_create_key_file(key_path, may_create)?.ok_or_else(|| {
                    anyhow::anyhow!(
                        "the database {} holds encrypted secrets but its master key is missing: \
                         set SLUICE_MASTER_KEY or restore {}",
                        path.display(),
                        key_path.display()
                    )
                })?
            }
        };
        match recorded_key_id {
            Some(id) if id != key.id() => bail!(
                "the master key (id {}) does not match the one this database was encrypted with (id {id})",
                key.id()
            ),
            Some(_) => {}
            None => {
                conn.execute(
                    "INSERT INTO meta (name, value) VALUES ('master_key_id', ?1)",
                    [key.id()],
                )?;
            }
        }
        let readers = (0..READERS)
            .map(|_| {
                let reader = open_connection(path)?;
                reader.pragma_update(None, "query_only", "ON")?;
                Ok(Mutex::new(reader))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self {
            pool: Arc::new(Pool {
                writer: Mutex::new(conn),
                readers,
                next_reader: AtomicUsize::new(0),
            }),
            key,
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
        Ok(value)
    }

    pub(crate) fn master_key(&self) -> &MasterKey {
        &self.key
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
