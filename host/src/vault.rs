//! The credential vault: API keys and connections, secrets encrypted at rest.
//!
//! - [`crypto`] — AEAD sealing, the master key, hashing.
//! - [`api_keys`] — caller keys: creation, lookup by hash.
//! - [`connections`] — stored credentials per platform, environment and identity.
//! - [`checks`] — what a connection may be created with, checked alike by the API and the CLI.
//! - [`approvals`] — the outbound hosts an operator approved per connector.
//! - [`cache`] — API keys and connections in memory, valid while nothing changed them.
//! - [`generation`] — how often the request path reads the credentials generation.
//! - [`oauth_apps`] — the operator's OAuth client per integration (secret encrypted).
//! - [`connect_sessions`] — short-lived end-user connect flows (OAuth state, PKCE).
//! - [`logs`] — the request log, written in batches off the request path.
//!
//! The vault generates keys, hashes, seals and opens secrets, and keeps the credential cache;
//! it persists through a [`Store`] ([`SqliteStore`] unless [`Vault::with_store`] is given
//! another), which only ever sees sealed secrets and hashes. Calls are synchronous; async
//! callers go through [`Vault::run`], which moves the work off the executor.

pub mod api_keys;
pub mod approvals;
pub mod cache;
pub mod checks;
pub mod connect_sessions;
pub mod connections;
pub mod crypto;
pub mod generation;
pub mod idempotency;
pub mod logs;
pub mod oauth_apps;

use crate::store::{SqliteStore, Store};
use anyhow::{Context, bail};
use crypto::{Keyring, Sealed};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// Where the master key comes from.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// Given explicitly (from `SLUICE_MASTER_KEY`).
    Explicit(String),
    /// A key file, created on first start of an empty database.
    File(PathBuf),
}

/// Handle to the vault. Cheap to clone.
#[derive(Clone)]
pub struct Vault {
    store: Arc<dyn Store>,
    cache: Arc<cache::CredentialCache>,
    /// The generation last read by the request path.
    generation_memo: Arc<generation::GenerationMemo>,
    keyring: Arc<RwLock<Keyring>>,
    key_source: KeySource,
    /// Held by writes that decide from what is stored (see [`Vault::owner_writes`]).
    owner_writes: Arc<std::sync::Mutex<()>>,
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
    now_micros() / 1_000_000
}

/// Microseconds since the Unix epoch: when a connection's health is decided, which calls a
/// second apart (or less) must be told apart by.
pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

impl Vault {
    /// Open (creating and migrating as needed) the SQLite database at `path`.
    ///
    /// Refuses a database written by a newer binary, and a database that holds encrypted
    /// secrets when the master key is missing or different.
    pub fn open(path: &Path, key_source: &KeySource) -> anyhow::Result<Self> {
        // SQLite's own words ("file is not a database", "unable to open database file",
        // "database is locked") name neither the file nor what to look at.
        let store = SqliteStore::open(path).map_err(|error| {
            let hint = if crate::store::held_by_another_process(&error) {
                "another process held it for longer than 5 s: a backup, or another gateway \
                 upgrading it; try again"
            } else {
                "check that the file is a Sluice database, not damaged, and that its directory is \
                 writable by this user"
            };
            error.context(format!("opening the database {} ({hint})", path.display()))
        })?;
        Self::with_store(Arc::new(store), key_source)
    }

    /// A vault keeping its data in `store`. Refuses a store that holds secrets sealed with a
    /// master key the key source does not have.
    pub fn with_store(store: Arc<dyn Store>, key_source: &KeySource) -> anyhow::Result<Self> {
        let recorded_key_id = store.master_key_id()?;
        let keyring = load_keyring(key_source, recorded_key_id.is_none(), &store.location())?;
        for warning in key_setup_warnings(key_source, &keyring) {
            tracing::warn!("{warning}");
        }
        // Every key that sealed a stored secret must be present: refuse to start otherwise,
        // rather than fail on the first request that needs one.
        let sealing = store.sealing_key_ids()?;
        if let Some(missing) = sealing.iter().find(|id| keyring.find(id).is_none()) {
            bail!(
                "the master key does not match this database: it holds secrets sealed with key id {missing}, \
                 but the key given has id {} (set SLUICE_MASTER_KEY or restore the key file)",
                keyring.ids().join(", ")
            );
        }
        if let Some(recorded) = &recorded_key_id
            && keyring.find(recorded).is_none()
        {
            bail!(
                "the master key does not match this database: it was set up with key id {recorded}, \
                 but the key given has id {} (set SLUICE_MASTER_KEY or restore the key file)",
                keyring.ids().join(", ")
            );
        }
        // The database's key moves to the primary only once nothing is sealed with another
        // (a rotation records it itself): a command run with the keys in the other order
        // (`<old>,<new>` after a rotation to `<new>`) must not point the database back at the
        // old key, which gateways given only the new one would then be refused for.
        let primary = keyring.primary().id();
        if recorded_key_id.as_deref() != Some(primary) && sealing.iter().all(|id| id == primary) {
            store.set_master_key_id(primary)?;
        }
        Ok(Self {
            store,
            cache: Arc::default(),
            generation_memo: Arc::default(),
            keyring: Arc::new(RwLock::new(keyring)),
            key_source: key_source.clone(),
            owner_writes: Arc::default(),
        })
    }

    /// The store behind this vault (e.g. for the request log writer).
    pub fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    /// Run `f` with the vault on a blocking thread.
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
        self.generation_memo.current(|| self.generation())
    }

    /// The credentials generation: it changes whenever any process changes an API key or a
    /// connection.
    pub fn generation(&self) -> anyhow::Result<i64> {
        self.store.credentials_generation()
    }

    /// The lock held by a write that decides from what is stored, until it has written: a
    /// connect flow from checking its session is pending until it is marked connected (a form
    /// posted twice, or a cancel as the user submits, then stores nothing twice or into an
    /// ended session); a cancel; a `replace` from finding the owner's connection until it is
    /// updated or made (two at once make one connection). Within this process: gateways
    /// sharing one database file can still race.
    pub fn owner_writes(&self) -> std::sync::MutexGuard<'_, ()> {
        // Nothing the lock guards can be left half done by a panic: the data is in the store.
        self.owner_writes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The in-memory cache of keys and connections.
    pub fn cache(&self) -> &cache::CredentialCache {
        &self.cache
    }

    /// Run one write on the store; once it succeeded, the next request reads the credentials
    /// generation again, so it sees this write at once.
    fn write<T>(&self, write: impl FnOnce(&dyn Store) -> anyhow::Result<T>) -> anyhow::Result<T> {
        let value = write(self.store.as_ref())?;
        self.generation_memo.local_write_committed();
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
        let reloaded = load_keyring(&self.key_source, false, "the database")?;
        let opened = reloaded
            .find(&sealed.key_id)
            .ok_or_else(|| anyhow::anyhow!("no master key with id {} is configured", sealed.key_id))?
            .open(sealed, context);
        self.set_keyring(reloaded);
        tracing::info!("master keys reloaded after a rotation");
        opened
    }

    /// Fail unless a write could be committed now (for readiness checks; see
    /// [`Store::check_writable`]).
    pub fn check_writable(&self) -> anyhow::Result<()> {
        self.write(|store| store.check_writable())
    }

    /// Write a consistent copy of the vault to the new file `destination` while gateways keep
    /// running; returns the id of the master key its secrets are sealed with (the backup is
    /// useless without that key).
    pub fn back_up(&self, destination: &Path) -> anyhow::Result<String> {
        self.store.back_up(destination)?;
        Ok(self.keyring().primary().id().to_owned())
    }

    /// Rotate the master key without stopping running gateways: with a key file, a new key is
    /// generated and written first in the file (old keys after it), every secret is
    /// re-encrypted under it, and the old keys are then moved from the file to
    /// [`retired_keys_file`] (backups made before need them; the database no longer does).
    /// Gateways that meet a secret sealed with a key they do not know reload the file. With
    /// `SLUICE_MASTER_KEY`, `new_key` must be given and already be configured (first) on the
    /// running gateways. Returns the new key id and how many secrets were re-encrypted.
    pub fn rotate_key(&self, new_key: Option<&str>) -> anyhow::Result<(String, usize)> {
        let current = self.keyring();
        let (new_primary, key_file) = match (&self.key_source, new_key) {
            (KeySource::File(path), None) => (crypto::MasterKey::generate(), Some(path.clone())),
            (KeySource::File(path), Some(text)) => (crypto::MasterKey::parse(text)?, Some(path.clone())),
            (KeySource::Explicit(_), Some(text)) => {
                let new_key = crypto::MasterKey::parse(text)?;
                // The gateways read their keys from the same variable, and could not read
                // what this re-encrypts unless it already holds the new key.
                if current.find(new_key.id()).is_none() {
                    bail!(
                        "the master key given (--master-key or SLUICE_MASTER_KEY) does not hold the new \
                         key (id {}): gateways configured like this could not read the secrets once \
                         re-encrypted. Configure them, and this command, with <new>,<old> first; then \
                         run it again",
                        new_key.id()
                    );
                }
                return self.reencrypt_under(new_key, None, current);
            }
            (KeySource::Explicit(_), None) => bail!(
                "with the master key given (--master-key or SLUICE_MASTER_KEY), pass --new-key and \
                 configure the gateways with <new>,<old> first"
            ),
        };
        if current.find(new_primary.id()).is_some() && current.primary().id() == new_primary.id() {
            bail!("the new key is already the primary key");
        }
        self.reencrypt_under(new_primary, key_file, current)
    }

    /// Re-encrypt every secret under `new_primary`, keeping `current`'s keys readable until
    /// done; with `key_file`, that file holds the new key then the old ones meanwhile, and only
    /// the new one after.
    fn reencrypt_under(
        &self,
        new_primary: crypto::MasterKey,
        key_file: Option<PathBuf>,
        current: Keyring,
    ) -> anyhow::Result<(String, usize)> {
        if let Some(path) = &key_file {
            let mut keys = vec![*new_primary.raw()];
            keys.extend(current.raw_keys());
            crypto::replace_key_file(path, &keys)?;
        }
        let mut extended = Keyring::single(new_primary.clone());
        extended.extend(&current);
        self.set_keyring(extended);
        let count = self.reencrypt_all(&new_primary)? + self.reencrypt_oauth_apps(&new_primary)?;
        // Kept replies are no secrets of the operator's, so they are not counted, but they are
        // sealed and must stay readable once the old keys are gone.
        self.reencrypt_idempotent_replies(&new_primary)?;
        if let Some(path) = &key_file {
            // Nothing in the database is sealed with the old keys now, but backups made before
            // are: keep them beside the key file rather than lose them with it.
            let retired = retired_keys_file(path, current.primary().id());
            crypto::replace_key_file(&retired, &current.raw_keys())?;
            crypto::replace_key_file(path, &[*new_primary.raw()])?;
        }
        self.set_keyring(Keyring::single(new_primary.clone()));
        Ok((new_primary.id().to_owned(), count))
    }

    /// The id of the master key that seals new secrets.
    pub fn primary_key_id(&self) -> String {
        self.keyring().primary().id().to_owned()
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

/// Where a rotation keeps the keys it replaced in `key_file`, the newest of them `old_id`:
/// `master.key.retired-<old_id>` beside it.
pub fn retired_keys_file(key_file: &Path, old_id: &str) -> PathBuf {
    let name = key_file
        .file_name()
        .map_or_else(|| "master.key".into(), |name| name.to_string_lossy().into_owned());
    key_file.with_file_name(format!("{name}.retired-{old_id}"))
}

impl KeySource {
    fn kind(&self) -> &'static str {
        match self {
            Self::Explicit(_) => "SLUICE_MASTER_KEY",
            Self::File(_) => "key file",
        }
    }
}

/// What is wrong with how the master key is kept, short of refusing it (a gateway that ran
/// with it must still start): a key that looks made up, a key file others can read.
fn key_setup_warnings(source: &KeySource, keyring: &Keyring) -> Vec<String> {
    let mut warnings = Vec::new();
    if keyring.primary().looks_made_up() {
        warnings.push(
            "the master key looks made up (all one byte, or a short repeated pattern): whoever guesses \
             it reads every stored credential; rotate to a random one (`openssl rand -hex 32`, then \
             `sluice vault rotate-key`)"
                .to_owned(),
        );
    }
    #[cfg(unix)]
    if let KeySource::File(path) = source
        && let Ok(metadata) = std::fs::metadata(path)
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            warnings.push(format!(
                "the master key file {} can be read by other users of this machine (mode {mode:o}): \
                 `chmod 600` it",
                path.display()
            ));
        }
    }
    #[cfg(not(unix))]
    let _ = source;
    warnings
}

/// Read the keyring from its source; a missing key file is created only when `may_create`.
fn load_keyring(source: &KeySource, may_create: bool, database: &str) -> anyhow::Result<Keyring> {
    match source {
        // It comes from `--master-key` or the variable behind it: name both.
        KeySource::Explicit(text) => {
            Keyring::parse(text).context("the master key (--master-key or SLUICE_MASTER_KEY) is invalid")
        }
        KeySource::File(key_path) => {
            crypto::load_or_create_key_file(key_path, may_create)?.ok_or_else(|| {
                anyhow::anyhow!(
                    "{} holds encrypted secrets but its master key is missing: \
                 set SLUICE_MASTER_KEY or restore {}",
                    database,
                    key_path.display()
                )
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A vault on a new database and key file in a temporary directory (kept while the
    /// directory lives).
    pub(super) fn temp_vault() -> anyhow::Result<(Vault, tempfile::TempDir)> {
        let dir = tempfile::tempdir()?;
        let vault = Vault::open(
            &dir.path().join("sluice.db"),
            &KeySource::File(dir.path().join("master.key")),
        )?;
        Ok((vault, dir))
    }

    #[test]
    fn a_made_up_key_and_a_key_file_others_read_are_warned_of() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let key_path = dir.path().join("master.key");
        let source = KeySource::File(key_path.clone());
        let created = load_keyring(&source, true, "db")?;
        assert!(
            key_setup_warnings(&source, &created).is_empty(),
            "a key file the gateway made is private and random"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o644))?;
            let warnings = key_setup_warnings(&source, &created);
            assert!(
                warnings.len() == 1 && warnings[0].contains("mode 644"),
                "{warnings:?}"
            );
        }
        for made_up in ["00".repeat(32), "ab".repeat(32), "deadbeef".repeat(8)] {
            let explicit = KeySource::Explicit(made_up.clone());
            let keyring = load_keyring(&explicit, false, "db")?;
            let warnings = key_setup_warnings(&explicit, &keyring);
            assert!(
                warnings.len() == 1 && warnings[0].contains("looks made up"),
                "{made_up}: {warnings:?}"
            );
        }
        Ok(())
    }

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

    /// A test-environment GitHub connection whose secret is `ghp_rotate_me_please`.
    fn add_github_connection(vault: &Vault) -> anyhow::Result<connections::ConnectionRecord> {
        let new = connections::NewConnection {
            platform: "github".into(),
            environment: Some(api_keys::Environment::Test),
            secret: "ghp_rotate_me_please".into(),
            ..connections::NewConnection::default()
        };
        Ok(vault.add_connection(&new, None)??)
    }

    /// With keys from `SLUICE_MASTER_KEY`, a rotation to a key that variable does not hold is
    /// refused before anything changes: gateways configured the same way could not read what it
    /// re-encrypted (every credentialed call failed). Holding both, it goes ahead.
    #[test]
    fn a_rotation_to_a_key_the_environment_lacks_is_refused() -> anyhow::Result<()> {
        use crate::vault::api_keys::Environment;
        let dir = tempfile::tempdir()?;
        let db = dir.path().join("sluice.db");
        let (old, new) = ("ab".repeat(32), "cd".repeat(32));
        let vault = Vault::open(&db, &KeySource::Explicit(old.clone()))?;
        let record = add_github_connection(&vault)?;
        let error = vault.rotate_key(Some(&new)).expect_err("refused").to_string();
        assert!(error.contains("does not hold the new key"), "{error}");
        let untouched = Vault::open(&db, &KeySource::Explicit(old.clone()))?;
        let stored = untouched
            .get_connection(Environment::Test, &record.key)?
            .expect("exists");
        assert_eq!(untouched.credential(&stored)?.secret(), "ghp_rotate_me_please");

        let both = Vault::open(&db, &KeySource::Explicit(format!("{new},{old}")))?;
        let (_, count) = both.rotate_key(Some(&new))?;
        assert_eq!(count, 1);
        // A command run afterwards with the keys the other way round does not point the
        // database back at the old key.
        drop(Vault::open(&db, &KeySource::Explicit(format!("{old},{new}")))?);
        let rotated = Vault::open(&db, &KeySource::Explicit(new))?;
        let stored = rotated
            .get_connection(Environment::Test, &record.key)?
            .expect("exists");
        assert_eq!(rotated.credential(&stored)?.secret(), "ghp_rotate_me_please");
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
        let dir = tempfile::tempdir()?;
        let db = dir.path().join("sluice.db");
        let key_path = dir.path().join("master.key");
        let source = KeySource::File(key_path.clone());
        let vault = Vault::open(&db, &source)?;
        let record = add_github_connection(&vault)?;
        // A second handle stands for a gateway that keeps running during the rotation.
        let running = Vault::open(&db, &source)?;
        let old_file = std::fs::read_to_string(&key_path)?;
        let old_id = vault.back_up(&dir.path().join("before.db"))?;
        let (new_id, count) = vault.rotate_key(None)?;
        assert_eq!(count, 1);
        let new_file = std::fs::read_to_string(&key_path)?;
        assert_ne!(old_file, new_file);
        assert_eq!(
            new_file.lines().count(),
            1,
            "old keys are dropped after re-encryption"
        );
        // ...into a file of their own, with which a backup made before still opens.
        let retired = retired_keys_file(&key_path, &old_id);
        assert_eq!(std::fs::read_to_string(&retired)?, old_file);
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&retired)?.permissions().mode() & 0o777, 0o600);
        }
        let restored = Vault::open(&dir.path().join("before.db"), &KeySource::File(retired))?;
        let stored = restored
            .get_connection(Environment::Test, &record.key)?
            .expect("exists");
        assert_eq!(restored.credential(&stored)?.secret(), "ghp_rotate_me_please");
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
}
