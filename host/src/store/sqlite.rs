//! [`Store`] on one SQLite file.
//!
//! SQLite runs in WAL mode with `synchronous=FULL`, so an acknowledged credential write
//! survives a crash. Connections: one writer (SQLite allows one writer at a time anyway) taking
//! the write lock up front with `BEGIN IMMEDIATE`, a few readers (reads never wait for the
//! writer in WAL mode), one that only reads the credentials generation on the request path, and
//! one for the request log with `synchronous=NORMAL` (losing the last log rows on power loss is
//! acceptable; slowing every call down to an fsync is not), so that log batches never queue
//! behind credential writes. The schema is migrated by `PRAGMA user_version`; triggers bump the
//! credentials generation on every change to `api_keys` and `connections`.
//!
//! The impl below shows, method by method, whether a call is a read or a write transaction;
//! the SQL and the parsing of rows live in one module per table.

mod api_keys;
mod connect_sessions;
mod connections;
mod connector_hosts;
mod idempotent_calls;
mod oauth_apps;
mod request_logs;

use super::{Clock, ConnectionChanges, HeldKey, IdempotentRow, NewConnectionRow, Store, TakenOAuthState};
use crate::vault::api_keys::{ApiKey, Environment, KeyOptions};
use crate::vault::connect_sessions::{ConnectSession, NewSession};
use crate::vault::connections::{
    ConnectionFilter, ConnectionPage, ConnectionRecord, ConnectionSelector, PlanLimitReached,
};
use crate::vault::crypto::Sealed;
use crate::vault::logs::{LogFilter, RequestLog};
use crate::vault::oauth_apps::OAuthApp;
use anyhow::{Context, bail};
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// The schema version this binary writes (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = 16;

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
    // One counter that every change to keys or connections bumps, from any process: the
    // in-memory credential cache is valid while it stands still.
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
    // Replies to calls made with an `Idempotency-Key`, kept a day for retries; no triggers:
    // they are not credentials.
    r#"
    CREATE TABLE idempotent_calls (
        api_key_id       INTEGER NOT NULL,
        idempotency_key  TEXT NOT NULL,
        fingerprint      BLOB NOT NULL,
        claimed_at       INTEGER NOT NULL,
        claimed_until    INTEGER NOT NULL,
        http_status      INTEGER,
        key_id           TEXT,
        reply_nonce      BLOB,
        reply_ciphertext BLOB,
        PRIMARY KEY (api_key_id, idempotency_key)
    );
    CREATE INDEX idempotent_calls_claimed_at ON idempotent_calls (claimed_at);
"#,
    r#"
    ALTER TABLE connect_sessions ADD COLUMN return_url TEXT;
"#,
    // A kept reply's upstream status in the clear: what a retry is told when the reply cannot
    // be opened any more (sealed with a master key since rotated away).
    r#"
    ALTER TABLE idempotent_calls ADD COLUMN upstream_status INTEGER;
"#,
    r#"
    ALTER TABLE api_keys ADD COLUMN max_in_flight INTEGER;
    ALTER TABLE request_logs ADD COLUMN request_id TEXT;
"#,
    // The URL token of a session the gateway opened for an `action_url`, sealed, so that the
    // next call that needs the same link is given it again instead of a new session.
    r#"
    ALTER TABLE connect_sessions ADD COLUMN token_nonce BLOB;
    ALTER TABLE connect_sessions ADD COLUMN token_ciphertext BLOB;
    ALTER TABLE connect_sessions ADD COLUMN token_key_id TEXT;
    CREATE INDEX connect_sessions_by_owner ON connect_sessions (platform, identity);
"#,
    // Where the credential of an OAuth attempt was to be used when it started (the origin the
    // connect page named): the callback stores the tokens only if that has not changed.
    r#"
    ALTER TABLE connect_sessions ADD COLUMN oauth_destination TEXT;
"#,
    // Which gateway is refreshing a connection's OAuth tokens, until when: gateways sharing
    // the database refresh a connection one at a time (a provider that rotates refresh tokens
    // refuses, or revokes everything on, a second use of the same one). No triggers: a lease
    // changes no credential.
    r#"
    CREATE TABLE refresh_leases (
        connection_id INTEGER PRIMARY KEY REFERENCES connections(id) ON DELETE CASCADE,
        holder        TEXT NOT NULL,
        held_until    INTEGER NOT NULL
    );
"#,
    // Why a connect session failed, as a stable code an app can branch on (`error` is for
    // people). Sessions that failed before it have none.
    r#"
    ALTER TABLE connect_sessions ADD COLUMN error_code TEXT;
"#,
    // Whether a call counted against its key's quota, as it was decided when it ran (an
    // outcome such as `not_found` or `bad_request` can come before or after that): what a
    // restarted gateway counts again. Rows logged before it have NULL and are judged by outcome.
    r#"
    ALTER TABLE request_logs ADD COLUMN counted INTEGER;
"#,
    // Which calls a connection's health has heard of (microseconds since the epoch): the
    // newest success or new secret, and the newest 401 or refused refresh. An answer recorded
    // late (health is updated off the response path) does not overrule one to a later call.
    // And when its secret was stored.
    r#"
    ALTER TABLE connections ADD COLUMN health_cleared_at_us INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE connections ADD COLUMN health_failed_at_us INTEGER NOT NULL DEFAULT 0;
    -- When the secret (an OAuth token set) was stored, which says how long a token lives:
    -- `updated_at` also moves with renames and health changes.
    ALTER TABLE connections ADD COLUMN secret_stored_at INTEGER NOT NULL DEFAULT 0;
    UPDATE connections SET secret_stored_at = updated_at;
"#,
];

/// Longest a statement waits for another connection's lock before failing as busy.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest a readiness check waits for another connection's write lock.
const PROBE_BUSY_TIMEOUT: Duration = Duration::from_millis(500);

/// Reader connections; reads never wait for the writer in WAL mode.
const READERS: usize = 4;

/// The vault's data in one SQLite file; see the module docs for its connections.
pub struct SqliteStore {
    path: PathBuf,
    /// The database file this store opened (device and inode): a file removed or replaced
    /// under the gateway leaves its connections on the old one, which still takes writes.
    opened_file: Option<(u64, u64)>,
    writer: Mutex<Connection>,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
    /// Reads only the credentials generation, on the request path.
    watcher: Mutex<Connection>,
    /// Writes request log batches, with `synchronous=NORMAL`.
    log_writer: Mutex<Connection>,
    /// Takes the write lock for readiness checks, waiting [`PROBE_BUSY_TIMEOUT`] at most: a
    /// probe must answer within its own timeout, and behind the writer's mutex and 5 s busy
    /// timeout it would not while another process held the database.
    probe: Mutex<Connection>,
    /// Why the last write on `writer` failed for want of storage (a full disk, an I/O error,
    /// a file made read-only), until a write there succeeds again: readiness reports it.
    storage_failure: StorageFailure,
    /// The same for `log_writer`, apart: a small write on one connection going through while
    /// the other's batches still fail must not make readiness flap.
    log_storage_failure: StorageFailure,
}

/// The last write's storage failure, if it had one. The flag keeps a healthy write from
/// taking the message's lock.
#[derive(Debug, Default)]
struct StorageFailure {
    failing: std::sync::atomic::AtomicBool,
    message: std::sync::Mutex<String>,
}

impl StorageFailure {
    /// Note how a write ended.
    fn note<T>(&self, outcome: &anyhow::Result<T>) {
        match outcome {
            Ok(_) if self.failing.load(Ordering::Relaxed) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("the database takes writes again");
                }
            }
            Ok(_) => {}
            Err(error) if is_storage_failure(error) => {
                *self
                    .message
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) = format!("{error:#}");
                self.failing.store(true, Ordering::Relaxed);
            }
            Err(_) => {}
        }
    }

    /// Why writes fail, while they do.
    fn current(&self) -> Option<String> {
        self.failing.load(Ordering::Relaxed).then(|| {
            self.message
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .clone()
        })
    }
}

/// The SQLite error code behind `error`, if it is one.
fn sqlite_code(error: &anyhow::Error) -> Option<rusqlite::ffi::ErrorCode> {
    error
        .chain()
        .find_map(|cause| match cause.downcast_ref::<rusqlite::Error>() {
            Some(rusqlite::Error::SqliteFailure(failure, _)) => Some(failure.code),
            _ => None,
        })
}

/// Whether `error` is the storage failing (rather than what was written being refused).
fn is_storage_failure(error: &anyhow::Error) -> bool {
    use rusqlite::ffi::ErrorCode;
    matches!(
        sqlite_code(error),
        Some(
            ErrorCode::DiskFull
                | ErrorCode::SystemIoFailure
                | ErrorCode::ReadOnly
                | ErrorCode::CannotOpen
                | ErrorCode::DatabaseCorrupt
                | ErrorCode::NotADatabase
        )
    )
}

/// Whether a write that failed with `error` may succeed if tried again unchanged: the storage
/// failing, or another process holding the database longer than the busy timeout. (What was
/// written being refused — a constraint, a value too big — would fail again.)
pub fn worth_retrying(error: &anyhow::Error) -> bool {
    is_storage_failure(error) || held_by_another_process(error)
}

/// Whether `error` says another connection held the database longer than the busy timeout.
pub fn held_by_another_process(error: &anyhow::Error) -> bool {
    use rusqlite::ffi::ErrorCode;
    matches!(
        sqlite_code(error),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

/// Whether `error` is a failure of the database that passes without anyone changing the
/// gateway's files: storage full or failing, or another process holding the database. (A file
/// made read-only, missing or corrupt needs its operator.)
pub fn passes_by_itself(error: &anyhow::Error) -> bool {
    use rusqlite::ffi::ErrorCode;
    matches!(
        sqlite_code(error),
        Some(
            ErrorCode::DiskFull
                | ErrorCode::SystemIoFailure
                | ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
        )
    )
}

impl SqliteStore {
    /// Open (creating and migrating as needed) the database at `path`. Refuses a database
    /// written by a newer binary.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        create_private_file(path)?;
        let mut writer = open_connection(path)?;
        refuse_read_only(&writer, path)?;
        use_wal(&writer)?;
        // Credentials are written here: a commit is on disk before it is acknowledged.
        writer.pragma_update(None, "synchronous", "FULL")?;
        migrate(&mut writer, path)?;
        let readers = (0..READERS)
            .map(|_| Ok(Mutex::new(open_reader(path)?)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let log_writer = open_connection(path)?;
        log_writer.pragma_update(None, "synchronous", "NORMAL")?;
        let probe = open_connection(path)?;
        probe.busy_timeout(PROBE_BUSY_TIMEOUT)?;
        Ok(Self {
            path: path.to_owned(),
            opened_file: file_identity(path),
            writer: Mutex::new(writer),
            readers,
            next_reader: AtomicUsize::new(0),
            watcher: Mutex::new(open_reader(path)?),
            log_writer: Mutex::new(log_writer),
            probe: Mutex::new(probe),
            storage_failure: StorageFailure::default(),
            log_storage_failure: StorageFailure::default(),
        })
    }

    /// A reader connection, for queries.
    fn reader(&self) -> anyhow::Result<MutexGuard<'_, Connection>> {
        let start = self.next_reader.fetch_add(1, Ordering::Relaxed);
        // Take the first idle reader, else wait for the one in turn.
        for offset in 0..self.readers.len() {
            if let Ok(guard) = self.readers[(start + offset) % self.readers.len()].try_lock() {
                return Ok(guard);
            }
        }
        lock(&self.readers[start % self.readers.len()])
    }

    /// Run `f` on a reader connection.
    fn read<T>(&self, f: impl FnOnce(&Connection) -> anyhow::Result<T>) -> anyhow::Result<T> {
        let conn = self.reader()?;
        f(&conn)
    }

    /// Run `f` in one write transaction on the writer and commit it.
    fn write<T>(&self, f: impl FnOnce(&Transaction<'_>) -> anyhow::Result<T>) -> anyhow::Result<T> {
        let outcome = write_on(&self.writer, f);
        self.storage_failure.note(&outcome);
        outcome
    }
}

impl Store for SqliteStore {
    fn back_up(&self, destination: &Path) -> anyhow::Result<()> {
        // `VACUUM INTO` writes one transaction's snapshot, WAL included, into a fresh file
        // that must not exist yet (an empty one is allowed: it is made private first).
        new_private_file(destination).with_context(|| format!("creating {}", destination.display()))?;
        let written = destination
            .to_str()
            .ok_or_else(|| anyhow::anyhow!("{} is not a UTF-8 path", destination.display()))
            .and_then(|target| {
                // A connection of its own: the readers are read-only, which covers the file
                // written too, and the writer's lock would hold up the vault's writes while the
                // copy is made.
                open_connection(&self.path)?
                    .execute("VACUUM INTO ?1", [target])
                    .with_context(|| format!("writing the backup to {}", destination.display()))
            });
        if let Err(error) = written {
            // A backup that failed (a full disk) must not be left to look like one.
            let _ = std::fs::remove_file(destination);
            return Err(error);
        }
        Ok(())
    }

    fn location(&self) -> String {
        self.path.display().to_string()
    }

    fn check_writable(&self) -> anyhow::Result<()> {
        if file_identity(&self.path) != self.opened_file {
            return Err(crate::store::DatabaseFileReplaced {
                path: self.path.clone(),
            }
            .into());
        }
        // Taking the write lock writes nothing, so a full disk would pass it: after a write
        // failed for want of storage, only a write that commits shows the trouble is over.
        let probe = match self.storage_failure.current() {
            Some(_) => {
                "INSERT OR REPLACE INTO meta (name, value) VALUES ('write_probe', strftime('%s', 'now'))"
            }
            None => "UPDATE meta SET value = value WHERE 0",
        };
        let outcome = write_on(&self.probe, |tx| {
            tx.execute(probe, [])?;
            Ok(())
        });
        self.storage_failure.note(&outcome);
        outcome?;
        // The request log's writer tries its rows again every second while they fail.
        match self.log_storage_failure.current() {
            Some(failure) => bail!("writing the request log fails: {failure}"),
            None => Ok(()),
        }
    }

    fn master_key_id(&self) -> anyhow::Result<Option<String>> {
        self.read(|conn| {
            Ok(conn
                .query_row("SELECT value FROM meta WHERE name = 'master_key_id'", [], |r| {
                    r.get(0)
                })
                .optional()?)
        })
    }

    fn set_master_key_id(&self, key_id: &str) -> anyhow::Result<()> {
        self.write(|tx| record_master_key_id(tx, key_id))
    }

    fn sealing_key_ids(&self) -> anyhow::Result<Vec<String>> {
        self.read(|conn| {
            let mut statement =
                conn.prepare("SELECT key_id FROM connections UNION SELECT key_id FROM oauth_apps")?;
            let ids = statement
                .query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            Ok(ids)
        })
    }

    fn credentials_generation(&self) -> anyhow::Result<i64> {
        let conn = lock(&self.watcher)?;
        let mut statement = conn.prepare_cached("SELECT value FROM credentials_generation WHERE id = 1")?;
        Ok(statement.query_row([], |r| r.get(0))?)
    }

    fn insert_api_key(
        &self,
        prefix: &str,
        hash: &[u8],
        options: &KeyOptions,
        created_at: i64,
    ) -> anyhow::Result<i64> {
        self.write(|tx| api_keys::insert(tx, prefix, hash, options, created_at))
    }

    fn api_key_by_hash(&self, hash: &[u8]) -> anyhow::Result<Option<ApiKey>> {
        self.read(|conn| api_keys::by_hash(conn, hash))
    }

    fn list_api_keys(&self) -> anyhow::Result<Vec<ApiKey>> {
        self.read(api_keys::list)
    }

    fn revoke_api_key(&self, prefix_or_id: &str, at: i64) -> anyhow::Result<Vec<i64>> {
        self.write(|tx| api_keys::revoke(tx, prefix_or_id, at))
    }

    fn count_api_keys(&self) -> anyhow::Result<i64> {
        self.read(api_keys::count)
    }

    fn insert_connection(
        &self,
        row: &NewConnectionRow,
        limit: Option<u32>,
    ) -> anyhow::Result<Result<i64, PlanLimitReached>> {
        self.write(|tx| connections::insert_within_limit(tx, row, limit))
    }

    fn find_connections(
        &self,
        platform: &str,
        environment: Environment,
        selector: &ConnectionSelector,
    ) -> anyhow::Result<Vec<ConnectionRecord>> {
        self.read(|conn| connections::find(conn, platform, environment, selector))
    }

    fn list_connections(
        &self,
        environment: Environment,
        filter: &ConnectionFilter,
        page: u32,
        limit: u32,
    ) -> anyhow::Result<ConnectionPage> {
        self.read(|conn| connections::list(conn, environment, filter, page, limit))
    }

    fn get_connection(
        &self,
        environment: Environment,
        id_or_key: &str,
    ) -> anyhow::Result<Option<ConnectionRecord>> {
        self.read(|conn| connections::by_id_or_key(conn, environment, id_or_key))
    }

    fn connection_by_id(&self, id: i64) -> anyhow::Result<Option<ConnectionRecord>> {
        self.read(|conn| connections::by_id(conn, id))
    }

    fn update_connection(&self, id: i64, changes: &ConnectionChanges, clock: Clock) -> anyhow::Result<()> {
        self.write(|tx| connections::update(tx, id, changes, clock()))
    }

    fn delete_connection(&self, environment: Environment, id_or_key: &str) -> anyhow::Result<bool> {
        self.write(|tx| connections::delete(tx, environment, id_or_key))
    }

    fn record_auth_failure(
        &self,
        id: i64,
        failed_after: i64,
        sent_at_us: i64,
        clock: Clock,
    ) -> anyhow::Result<bool> {
        self.write(|tx| connections::record_auth_failure(tx, id, failed_after, sent_at_us, clock()))
    }

    fn record_auth_success(&self, id: i64, sent_at_us: i64, clock: Clock) -> anyhow::Result<bool> {
        self.write(|tx| connections::record_auth_success(tx, id, sent_at_us, clock()))
    }

    fn replace_connection_secret(
        &self,
        id: i64,
        sealed: &Sealed,
        token_expires_at: Option<i64>,
        base_url: Option<&url::Url>,
        clock: Clock,
    ) -> anyhow::Result<()> {
        self.write(|tx| connections::replace_secret(tx, id, sealed, token_expires_at, base_url, clock()))
    }

    fn store_refreshed_tokens(
        &self,
        id: i64,
        previous_ciphertext: &[u8],
        sealed: &Sealed,
        token_expires_at: Option<i64>,
        at: i64,
    ) -> anyhow::Result<bool> {
        self.write(|tx| {
            connections::store_refreshed_tokens(tx, id, previous_ciphertext, sealed, token_expires_at, at)
        })
    }

    fn fail_connection_with_secret(
        &self,
        id: i64,
        previous_ciphertext: &[u8],
        sealed: &Sealed,
        clock: Clock,
    ) -> anyhow::Result<bool> {
        self.write(|tx| connections::fail_with_secret(tx, id, previous_ciphertext, sealed, clock()))
    }

    fn mark_connection_failed(
        &self,
        id: i64,
        secret_ciphertext: &[u8],
        clock: Clock,
    ) -> anyhow::Result<bool> {
        self.write(|tx| connections::mark_failed(tx, id, secret_ciphertext, clock()))
    }

    fn take_refresh_lease(&self, id: i64, holder: &str, now: i64, until: i64) -> anyhow::Result<bool> {
        self.write(|tx| {
            let taken = tx.execute(
                "INSERT INTO refresh_leases (connection_id, holder, held_until) VALUES (?1, ?2, ?4)
                 ON CONFLICT (connection_id) DO UPDATE
                 SET holder = excluded.holder, held_until = excluded.held_until
                 WHERE refresh_leases.held_until <= ?3",
                rusqlite::params![id, holder, now, until],
            )?;
            Ok(taken == 1)
        })
    }

    fn release_refresh_lease(&self, id: i64, holder: &str) -> anyhow::Result<()> {
        self.write(|tx| {
            tx.execute(
                "DELETE FROM refresh_leases WHERE connection_id = ?1 AND holder = ?2",
                rusqlite::params![id, holder],
            )?;
            Ok(())
        })
    }

    fn connections_sealed_with_other_keys(
        &self,
        key_id: &str,
        limit: usize,
    ) -> anyhow::Result<Vec<(i64, String, Sealed)>> {
        self.read(|conn| connections::sealed_with_other_keys(conn, key_id, limit))
    }

    fn replace_sealed_secrets(
        &self,
        resealed: &[(i64, String, Sealed)],
        primary_key_id: &str,
    ) -> anyhow::Result<()> {
        self.write(|tx| {
            connections::replace_sealed_secrets(tx, resealed)?;
            record_master_key_id(tx, primary_key_id)
        })
    }

    fn upsert_oauth_app(&self, app: &OAuthApp) -> anyhow::Result<()> {
        self.write(|tx| oauth_apps::upsert(tx, app))
    }

    fn oauth_app(&self, platform: &str) -> anyhow::Result<Option<OAuthApp>> {
        self.read(|conn| oauth_apps::by_platform(conn, platform))
    }

    fn list_oauth_apps(&self) -> anyhow::Result<Vec<OAuthApp>> {
        self.read(oauth_apps::list)
    }

    fn delete_oauth_app(&self, platform: &str) -> anyhow::Result<bool> {
        self.write(|tx| oauth_apps::delete(tx, platform))
    }

    fn replace_oauth_app_secret(
        &self,
        platform: &str,
        previous_key_id: &str,
        sealed: &Sealed,
    ) -> anyhow::Result<()> {
        self.write(|tx| oauth_apps::replace_secret(tx, platform, previous_key_id, sealed))
    }

    fn insert_connect_session(
        &self,
        public_id: &str,
        token: (&[u8], Option<&Sealed>),
        new: &NewSession,
        lifetime: (i64, i64),
    ) -> anyhow::Result<()> {
        self.write(|tx| connect_sessions::insert(tx, public_id, token, new, lifetime))
    }

    fn reusable_connect_session(
        &self,
        new: &NewSession,
        expiring_after: i64,
    ) -> anyhow::Result<Option<(ConnectSession, Sealed)>> {
        self.read(|conn| connect_sessions::reusable(conn, new, expiring_after))
    }

    fn connect_session_by_token_hash(&self, token_hash: &[u8]) -> anyhow::Result<Option<ConnectSession>> {
        self.read(|conn| connect_sessions::by_token_hash(conn, token_hash))
    }

    fn connect_session(
        &self,
        environment: Environment,
        public_id: &str,
    ) -> anyhow::Result<Option<ConnectSession>> {
        self.read(|conn| connect_sessions::by_public_id(conn, environment, public_id))
    }

    fn begin_oauth(
        &self,
        session_id: i64,
        state_hash: &[u8],
        browser_hash: &[u8],
        verifier: &Sealed,
        destination: &str,
        now: i64,
    ) -> anyhow::Result<bool> {
        self.write(|tx| {
            let attempt = connect_sessions::NewAttempt {
                state_hash,
                browser_hash,
                verifier,
                destination,
            };
            connect_sessions::begin_oauth(tx, session_id, &attempt, now)
        })
    }

    fn take_oauth_state(&self, state_hash: &[u8], now: i64) -> anyhow::Result<Option<TakenOAuthState>> {
        self.write(|tx| connect_sessions::take_oauth_state(tx, state_hash, now))
    }

    fn complete_connect_session(&self, session_id: i64, connection_key: &str) -> anyhow::Result<bool> {
        self.write(|tx| connect_sessions::complete(tx, session_id, connection_key))
    }

    fn fail_connect_session(&self, session_id: i64, code: &str, reason: &str) -> anyhow::Result<bool> {
        self.write(|tx| connect_sessions::fail(tx, session_id, code, reason))
    }

    fn prune_connect_sessions(&self, cutoff: i64) -> anyhow::Result<usize> {
        self.write(|tx| connect_sessions::prune(tx, cutoff))
    }

    fn claim_idempotent_call(
        &self,
        api_key_id: i64,
        key: &str,
        fingerprint: &[u8],
        now: i64,
        claimed_until: i64,
        expired_before: i64,
    ) -> anyhow::Result<Option<HeldKey>> {
        let claim = idempotent_calls::Claim {
            api_key_id,
            key,
            fingerprint,
            now,
            claimed_until,
            expired_before,
        };
        self.write(|tx| idempotent_calls::claim(tx, &claim))
    }

    fn finish_idempotent_call(
        &self,
        api_key_id: i64,
        key: &str,
        fingerprint: &[u8],
        statuses: (u16, Option<u16>),
        reply: &Sealed,
    ) -> anyhow::Result<()> {
        self.write(|tx| idempotent_calls::finish(tx, api_key_id, key, fingerprint, statuses, reply))
    }

    fn release_idempotent_call(&self, api_key_id: i64, key: &str, fingerprint: &[u8]) -> anyhow::Result<()> {
        self.write(|tx| idempotent_calls::release(tx, api_key_id, key, fingerprint))
    }

    fn prune_idempotent_calls(&self, cutoff: i64) -> anyhow::Result<usize> {
        self.write(|tx| idempotent_calls::prune(tx, cutoff))
    }

    fn idempotent_replies_sealed_with_other_keys(
        &self,
        key_id: &str,
        limit: usize,
    ) -> anyhow::Result<Vec<IdempotentRow>> {
        self.read(|conn| idempotent_calls::sealed_with_other_keys(conn, key_id, limit))
    }

    fn replace_idempotent_replies(&self, resealed: &[(i64, Vec<u8>, Sealed)]) -> anyhow::Result<()> {
        self.write(|tx| idempotent_calls::replace_sealed(tx, resealed))
    }

    fn approved_hosts(&self, connector: &str) -> anyhow::Result<Option<Vec<String>>> {
        self.read(|conn| connector_hosts::approved(conn, connector))
    }

    fn approve_hosts(&self, connector: &str, hosts: &[String], at: i64) -> anyhow::Result<()> {
        self.write(|tx| connector_hosts::approve(tx, connector, hosts, at))
    }

    fn all_approved_hosts(&self) -> anyhow::Result<Vec<(String, Vec<String>)>> {
        self.read(connector_hosts::all)
    }

    fn insert_request_logs(&self, rows: &[RequestLog]) -> anyhow::Result<()> {
        let outcome = write_on(&self.log_writer, |tx| request_logs::insert(tx, rows));
        self.log_storage_failure.note(&outcome);
        outcome
    }

    fn list_request_logs(
        &self,
        filter: &LogFilter,
        page: u32,
        limit: u32,
    ) -> anyhow::Result<(Vec<RequestLog>, i64)> {
        self.read(|conn| request_logs::list(conn, filter, page, limit))
    }

    fn count_calls_since(&self, key_id: i64, since_ms: i64, not_counted: &[&str]) -> anyhow::Result<u64> {
        self.read(|conn| request_logs::count_since(conn, key_id, since_ms, not_counted))
    }

    fn prune_request_logs(&self, before_ms: i64) -> anyhow::Result<usize> {
        // In batches, each its own short transaction: days of rows deleted in one would hold
        // the database's write lock for seconds, and credential writes (and readiness checks)
        // would wait on it or fail.
        let mut pruned = 0;
        loop {
            let batch = self.write(|tx| request_logs::prune(tx, before_ms))?;
            pruned += batch;
            if batch < request_logs::PRUNE_BATCH {
                return Ok(pruned);
            }
        }
    }
}

/// A list filter as a query parameter: a JSON array for `json_each`, or NULL (no filter) when
/// empty.
fn json_list(values: &[String]) -> anyhow::Result<Option<String>> {
    Ok((!values.is_empty())
        .then(|| serde_json::to_string(values))
        .transpose()?)
}

fn record_master_key_id(conn: &Connection, key_id: &str) -> anyhow::Result<()> {
    conn.execute(
        "INSERT INTO meta (name, value) VALUES ('master_key_id', ?1)
         ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        [key_id],
    )?;
    Ok(())
}

/// Run `f` in a `BEGIN IMMEDIATE` transaction on `connection` and commit it: the write lock
/// is taken up front, so concurrent writers queue instead of failing mid-transaction.
fn write_on<T>(
    connection: &Mutex<Connection>,
    f: impl FnOnce(&Transaction<'_>) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let mut conn = lock(connection)?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let value = f(&tx)?;
    tx.commit()?;
    Ok(value)
}

fn lock(mutex: &Mutex<Connection>) -> anyhow::Result<MutexGuard<'_, Connection>> {
    mutex
        .lock()
        .map_err(|_| anyhow::anyhow!("a vault connection lock is poisoned"))
}

/// The device and inode of the file at `path`, if there is one.
#[cfg(unix)]
fn file_identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|file| (file.dev(), file.ino()))
}

/// Whether there is a file at `path` (elsewhere a replaced file is not told apart).
#[cfg(not(unix))]
fn file_identity(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|_| (0, 0))
}

/// Create the database file, readable and writable by this user only, if it does not exist:
/// SQLite would create it (and its `-wal` and `-shm` files, which take the database file's
/// permissions) with the process umask, world-readable in a directory the operator made. It
/// holds key hashes, identities and sealed secrets. An existing file keeps its permissions.
fn create_private_file(path: &Path) -> anyhow::Result<()> {
    // Looked at first: where the directory is not this user's to write, creating would fail
    // for that, and the error would talk of creating a file that is there.
    if path.exists() {
        return Ok(());
    }
    match new_private_file(path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(error) => Err(error).with_context(|| format!("creating database {}", path.display())),
    }
}

/// Create the file `path`, which must not exist, readable and writable by this user only.
fn new_private_file(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path).map(drop)
}

fn open_connection(path: &Path) -> anyhow::Result<Connection> {
    let conn = Connection::open(path).with_context(|| format!("opening database {}", path.display()))?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}

/// Refuse a database SQLite could open only for reading (a file not this user's to write):
/// the gateway would start, then fail every write — each connection made, each call logged.
fn refuse_read_only(conn: &Connection, path: &Path) -> anyhow::Result<()> {
    if conn.is_readonly(rusqlite::MAIN_DB)? {
        anyhow::bail!(
            "database {} is read-only for this user: the gateway stores connections and request logs in it, so it needs write access to the file and its directory",
            path.display()
        );
    }
    Ok(())
}

fn open_reader(path: &Path) -> anyhow::Result<Connection> {
    let reader = open_connection(path)?;
    reader.pragma_update(None, "query_only", "ON")?;
    Ok(reader)
}

/// Put the database in WAL mode. Switching a new database's journal takes a lock SQLite does
/// not wait for (its busy handler is not called there): with several gateways starting on one
/// new file, all but one are refused for a moment, so this tries again for as long as a write
/// would wait.
fn use_wal(conn: &Connection) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    loop {
        let error = match conn.pragma_update(None, "journal_mode", "WAL") {
            Ok(()) => return Ok(()),
            Err(error) => anyhow::Error::from(error),
        };
        if !held_by_another_process(&error) || started.elapsed() >= BUSY_TIMEOUT {
            return Err(error);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn migrate(conn: &mut Connection, path: &Path) -> anyhow::Result<()> {
    // Several gateways may start on one database at once (a rolling upgrade): the version is
    // read and every migration applied in one write transaction, so that one of them upgrades
    // the schema, all or nothing, and the others find it done.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        bail!(
            "the database {} has schema version {version}, newer than this binary supports \
             ({SCHEMA_VERSION}); upgrade sluice",
            path.display()
        );
    }
    if version == SCHEMA_VERSION {
        return Ok(());
    }
    for (from, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        tx.execute_batch(sql)
            .with_context(|| format!("migrating the database from version {from}"))?;
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vault::api_keys::Scope;
    use crate::vault::connect_sessions::NewSession;
    use crate::vault::connections::{ConnectionPatch, NewConnection};
    use crate::vault::oauth_apps::NewOAuthApp;
    use crate::vault::{KeySource, Vault};
    use rusqlite::types::ValueRef;
    use std::sync::Arc;

    /// A database this user may only read is refused when opened (as it is for a user without
    /// write access; root may write any file, so the read-only open is asked for here).
    #[test]
    fn a_database_opened_read_only_is_refused() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("sluice.db");
        drop(SqliteStore::open(&path)?);
        let writable = open_connection(&path)?;
        refuse_read_only(&writable, &path)?;
        let read_only = Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        let refused = refuse_read_only(&read_only, &path).expect_err("a read-only database");
        assert!(
            refused.to_string().contains("is read-only for this user"),
            "{refused}"
        );
        Ok(())
    }

    /// Every text and blob value of every row of every table: what the database holds.
    fn every_stored_value(store: &SqliteStore) -> anyhow::Result<Vec<u8>> {
        let conn = store.reader()?;
        let tables: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        let mut values = Vec::new();
        for table in tables {
            let mut statement = conn.prepare(&format!("SELECT * FROM {table}"))?;
            let columns = statement.column_count();
            let mut rows = statement.query([])?;
            while let Some(row) = rows.next()? {
                for column in 0..columns {
                    if let ValueRef::Text(value) | ValueRef::Blob(value) = row.get_ref(column)? {
                        values.extend_from_slice(value);
                        values.push(0);
                    }
                }
            }
        }
        Ok(values)
    }

    fn holds(values: &[u8], text: &str) -> bool {
        values.windows(text.len()).any(|window| window == text.as_bytes())
    }

    /// The seam between vault and store: whichever way a secret travels (new connection,
    /// PATCH, reconnect, OAuth app, PKCE verifier), the store holds it only sealed, and keys,
    /// connect tokens and OAuth states only hashed; the vault still opens every secret.
    #[test]
    fn secrets_reach_the_store_only_sealed_or_hashed() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let store = Arc::new(SqliteStore::open(&dir.path().join("v.db"))?);
        let vault = Vault::with_store(store.clone(), &KeySource::Explicit("ab".repeat(32)))?;
        let connect = |secret: &str| {
            vault.add_connection(
                &NewConnection {
                    platform: "github".into(),
                    secret: secret.into(),
                    ..NewConnection::default()
                },
                None,
            )
        };
        let added = connect("ghp_added_plaintext")??;
        let patched = connect("ghp_before_patch")??;
        let patch = ConnectionPatch {
            secret: Some("ghp_patched_plaintext".into()),
            ..ConnectionPatch::default()
        };
        vault.update_connection(Environment::Test, &patched.key, &patch)?;
        let reconnected = connect("ghp_before_reconnect")??;
        vault.store_secret(&reconnected, "ghp_reconnected_plaintext", None, None)?;
        let app = vault.put_oauth_app(&NewOAuthApp {
            platform: "gmail".into(),
            client_id: "client-id-in-the-clear".into(),
            client_secret: "oauth_client_plaintext".into(),
            ..NewOAuthApp::default()
        })?;
        let (session, token) = vault.create_connect_session(&NewSession {
            environment: Environment::Test,
            platform: "gmail".into(),
            identity: None,
            identity_type: None,
            connection_key: None,
            base_url: None,
            return_url: None,
            ttl_seconds: 600,
        })?;
        assert!(vault.begin_oauth(
            &session,
            "oauth_state_plaintext",
            "browser_plaintext",
            "pkce_plaintext",
            "https://gmail.googleapis.com"
        )?);
        let api_key = vault.create_api_key(&KeyOptions::new(Environment::Test, Scope::All))?;

        let stored = every_stored_value(&store)?;
        for visible in [
            &added.key,
            &app.client_id,
            &api_key.record.prefix,
            &session.public_id,
        ] {
            assert!(
                holds(&stored, visible),
                "the dump reads the rows: {visible} is stored"
            );
        }
        for secret in [
            "ghp_added_plaintext",
            "ghp_patched_plaintext",
            "ghp_reconnected_plaintext",
            "oauth_client_plaintext",
            "pkce_plaintext",
            "oauth_state_plaintext",
            "browser_plaintext",
            &token,
            &api_key.key,
        ] {
            assert!(!holds(&stored, secret), "{secret} reached the store in the clear");
        }

        let reread = |record: &ConnectionRecord| -> anyhow::Result<String> {
            let stored = store.connection_by_id(record.id)?.context("stored")?;
            Ok(vault.credential(&stored)?.secret().to_owned())
        };
        assert_eq!(reread(&added)?, "ghp_added_plaintext");
        assert_eq!(reread(&patched)?, "ghp_patched_plaintext");
        assert_eq!(reread(&reconnected)?, "ghp_reconnected_plaintext");
        assert_eq!(vault.oauth_client_secret(&app)?, "oauth_client_plaintext");
        let attempt = vault
            .take_oauth_state("oauth_state_plaintext")?
            .context("attempt")?;
        assert_eq!(attempt.verifier, "pkce_plaintext");
        Ok(())
    }

    /// In a directory anyone may read, the database and its WAL files are still this user's.
    #[cfg(unix)]
    #[test]
    fn a_new_database_is_private_whatever_the_directory() -> anyhow::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir()?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        let db = dir.path().join("sluice.db");
        let store = SqliteStore::open(&db)?;
        store.prune_request_logs(i64::MAX)?;
        for file in ["sluice.db", "sluice.db-wal", "sluice.db-shm"] {
            let mode = std::fs::metadata(dir.path().join(file))?.permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{file}: {mode:o}");
        }
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
        let store = SqliteStore::open(&db)?;
        let version: i64 = store
            .reader()?
            .pragma_query_value(None, "user_version", |r| r.get(0))?;
        assert_eq!(version, SCHEMA_VERSION);
        assert_eq!(
            store.prune_request_logs(i64::MAX)?,
            0,
            "the request log table exists"
        );
        Ok(())
    }

    /// A write failing for want of storage (here a database held to its size, as a full disk
    /// would) makes readiness fail until a write succeeds; a write refused for what it holds
    /// does not.
    #[test]
    fn a_full_database_is_not_ready_until_writes_work_again() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let store = SqliteStore::open(&dir.path().join("sluice.db"))?;
        store.check_writable()?;
        let refused =
            store.write(|tx| Ok(tx.execute("INSERT INTO meta (name, value) VALUES ('x', NULL)", [])?));
        assert!(refused.is_err(), "NOT NULL");
        store.check_writable()?;

        let pages: i64 = lock(&store.writer)?.pragma_query_value(None, "page_count", |r| r.get(0))?;
        lock(&store.writer)?.pragma_update(None, "max_page_count", pages)?;
        let big = "x".repeat(64 << 10);
        let full =
            store.write(|tx| Ok(tx.execute("INSERT INTO meta (name, value) VALUES ('big', ?1)", [&big])?));
        let error = format!("{:#}", full.expect_err("no page left"));
        assert!(error.contains("full"), "{error}");
        assert_eq!(store.storage_failure.current().as_deref(), Some(error.as_str()));

        lock(&store.writer)?.pragma_update(None, "max_page_count", 1 << 30)?;
        store.check_writable()?;
        assert_eq!(store.storage_failure.current(), None, "a write went through");

        // The request log's writer failing keeps readiness failing, whatever small write the
        // other connection gets through, until its own rows go in.
        let pages: i64 = lock(&store.log_writer)?.pragma_query_value(None, "page_count", |r| r.get(0))?;
        lock(&store.log_writer)?.pragma_update(None, "max_page_count", pages)?;
        let rows: Vec<RequestLog> = (0..500)
            .map(|i| RequestLog {
                transaction_key: format!("txn_{i:0>64}"),
                ..RequestLog::default()
            })
            .collect();
        assert!(store.insert_request_logs(&rows).is_err(), "no page left");
        let not_ready = format!(
            "{:#}",
            store.check_writable().expect_err("the log cannot be written")
        );
        assert!(not_ready.contains("writing the request log fails"), "{not_ready}");
        lock(&store.log_writer)?.pragma_update(None, "max_page_count", 1 << 30)?;
        store.insert_request_logs(&rows)?;
        store.check_writable()?;
        Ok(())
    }

    /// A database file removed or replaced under a running gateway makes readiness fail: its
    /// connections would go on writing to the removed file, which no restart would see.
    #[test]
    fn a_removed_or_replaced_database_file_is_not_ready() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let db = dir.path().join("sluice.db");
        let store = SqliteStore::open(&db)?;
        store.check_writable()?;
        let moved = dir.path().join("moved.db");
        std::fs::rename(&db, &moved)?;
        let removed = format!("{:#}", store.check_writable().expect_err("removed"));
        assert!(removed.contains("removed or replaced"), "{removed}");
        std::fs::copy(&moved, &db)?;
        let replaced = format!("{:#}", store.check_writable().expect_err("a copy"));
        assert!(replaced.contains("removed or replaced"), "{replaced}");
        std::fs::remove_file(&db)?;
        std::fs::rename(&moved, &db)?;
        store.check_writable()?;
        Ok(())
    }

    /// While another process holds the database, a readiness check says so within its own
    /// short wait, not after the 5 s a write waits; once it lets go, the check passes.
    #[test]
    fn readiness_answers_quickly_while_another_process_holds_the_database() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let db = dir.path().join("sluice.db");
        let store = SqliteStore::open(&db)?;
        let mut other = Connection::open(&db)?;
        let holding = other.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let started = std::time::Instant::now();
        let error = store.check_writable().expect_err("held by another");
        assert!(held_by_another_process(&error), "{error:#}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        holding.commit()?;
        store.check_writable()?;
        Ok(())
    }

    /// Old request-log rows go in batches, all of them, and newer ones stay.
    #[test]
    fn request_logs_are_pruned_in_batches_to_the_last_old_row() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let store = SqliteStore::open(&dir.path().join("sluice.db"))?;
        let old = 2 * request_logs::PRUNE_BATCH + 7;
        store.write(|tx| {
            tx.execute(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1 + 3)
                 INSERT INTO request_logs (transaction_key, created_at_ms, http_status, outcome,
                     duration_us, request_bytes, response_bytes)
                 SELECT 'tx' || i, CASE WHEN i <= ?1 THEN 1000 ELSE 9000 END, 200, 'ok', 1, 0, 0 FROM n",
                [old as i64],
            )?;
            Ok(())
        })?;
        assert_eq!(store.prune_request_logs(5000)?, old);
        let left: i64 = store
            .reader()?
            .query_row("SELECT COUNT(*) FROM request_logs", [], |r| r.get(0))?;
        assert_eq!(left, 3);
        Ok(())
    }

    /// A backup that cannot be written leaves no file behind that would pass for one.
    #[test]
    fn a_failed_backup_leaves_no_file() -> anyhow::Result<()> {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir()?;
        let store = SqliteStore::open(&dir.path().join("sluice.db"))?;
        // SQLite takes only UTF-8 paths: the copy fails once the file is made.
        let destination = dir.path().join(std::ffi::OsStr::from_bytes(b"backup-\xff.db"));
        let error = store.back_up(&destination).expect_err("not UTF-8");
        assert!(error.to_string().contains("is not a UTF-8 path"), "{error}");
        assert!(!destination.exists(), "the failed backup's file is gone");
        store.back_up(&dir.path().join("backup.db"))?;
        assert!(dir.path().join("backup.db").metadata()?.len() > 0);
        Ok(())
    }

    /// Gateways starting together on one database (a rolling upgrade) upgrade it once between
    /// them; none fails on the work another has done.
    #[test]
    fn gateways_opening_one_database_at_once_migrate_it_once() -> anyhow::Result<()> {
        for _ in 0..5 {
            let dir = tempfile::tempdir()?;
            let db = dir.path().join("sluice.db");
            {
                let conn = Connection::open(&db)?;
                conn.execute_batch(MIGRATIONS[0])?;
                conn.pragma_update(None, "user_version", 1)?;
            }
            let start = std::sync::Barrier::new(4);
            std::thread::scope(|scope| {
                let opened: Vec<_> = (0..4)
                    .map(|_| {
                        scope.spawn(|| {
                            start.wait();
                            SqliteStore::open(&db).map(drop)
                        })
                    })
                    .collect();
                for open in opened {
                    open.join().expect("no panic")?;
                }
                anyhow::Ok(())
            })?;
            let version: i64 =
                Connection::open(&db)?.pragma_query_value(None, "user_version", |r| r.get(0))?;
            assert_eq!(version, SCHEMA_VERSION);
        }
        Ok(())
    }

    #[test]
    fn a_newer_schema_is_refused() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let db = dir.path().join("sluice.db");
        Connection::open(&db)?.pragma_update(None, "user_version", SCHEMA_VERSION + 1)?;
        let error = SqliteStore::open(&db).err().expect("must refuse");
        assert!(error.to_string().contains("newer than this binary"), "{error}");
        Ok(())
    }
}
