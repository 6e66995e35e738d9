//! The compiled-artifact cache: precompiled components on disk, so a restart does not
//! recompile every connector.
//!
//! Entries are keyed by the component's SHA-256 and a fingerprint of the engine and its
//! configuration. A precompiled artifact is native code that wasmtime trusts, so an entry is
//! loaded only if it carries a valid MAC made with this installation's cache key: a corrupt
//! entry, or one this host did not write, is deleted and the component recompiled. The cache
//! directory is created private (0700), its entries 0600.
//!
//! Entries nobody has loaded for [`UNUSED_FOR`] are deleted once a starting gateway has loaded
//! its connectors ([`ArtifactCache::delete_unused`]): old versions of connectors, and entries of
//! an engine or cache key no longer in use (after an upgrade or a master-key rotation) would
//! otherwise pile up for good. A load refreshes its entry's modification time (at most daily),
//! which is what "used" is measured by, so the entries the gateway has just loaded stay however
//! long it ran before; entries another gateway sharing the directory loaded lately stay too.

use anyhow::Context;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

type HmacSha256 = Hmac<Sha256>;

/// Bytes of the MAC in front of every cache entry.
const MAC_LEN: usize = 32;

/// How long an entry may go unloaded before opening the cache deletes it.
const UNUSED_FOR: std::time::Duration = std::time::Duration::from_secs(14 * 24 * 3600);

/// How old a temporary file must be to count as a crashed write's leftover: a write takes
/// seconds at most, and another gateway on this directory may be writing one now.
const LEFTOVER_AFTER: std::time::Duration = std::time::Duration::from_secs(3600);

/// How stale an entry's modification time may get before a load refreshes it.
const TOUCH_AFTER: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// An on-disk cache of precompiled components.
#[derive(Debug, Clone)]
pub struct ArtifactCache {
    dir: PathBuf,
    mac_key: [u8; 32],
    /// A short fingerprint of `mac_key` in every entry's name: after a master-key rotation
    /// (which changes the cache key) the old entries are simply not found, rather than
    /// discarded as corrupt.
    key_tag: String,
}

/// Where a component came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Loaded from a valid cache entry.
    Cache,
    /// Compiled now (and written to the cache).
    Compiled,
}

impl ArtifactCache {
    /// A cache in `dir` (created 0700) whose entries are authenticated with `mac_key`.
    pub fn open(dir: &Path, mac_key: [u8; 32]) -> anyhow::Result<Self> {
        create_private_dir(dir)?;
        use sha2::Digest;
        let fingerprint = Sha256::new_with_prefix(b"sluice cache key tag\0")
            .chain_update(mac_key)
            .finalize();
        Ok(Self {
            dir: dir.to_owned(),
            mac_key,
            key_tag: hex::encode(&fingerprint[..4]),
        })
    }

    /// The compiled component for `bytes` (whose SHA-256 is `content_hash`), from the cache
    /// when a valid entry exists, else compiled and stored. Blocking: call off the executor.
    pub fn load_or_compile(
        &self,
        engine: &Engine,
        bytes: &[u8],
        content_hash: &str,
    ) -> anyhow::Result<(Component, Origin)> {
        let path = self.entry_path(engine, content_hash);
        match self.read_entry(engine, &path) {
            Ok(Some(component)) => return Ok((component, Origin::Cache)),
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(entry = %path.display(), error = %format!("{error:#}"), "discarding an unusable cache entry");
                let _ = std::fs::remove_file(&path);
            }
        }
        let component = Component::new(engine, bytes).map_err(|e| anyhow::anyhow!("{e:#}"))?;
        if let Err(error) = self.write_entry(&path, &component) {
            tracing::warn!(entry = %path.display(), error = %format!("{error:#}"), "could not write a cache entry");
        }
        Ok((component, Origin::Compiled))
    }

    /// Delete the entry of the component whose SHA-256 is `content_hash`, if there is one.
    pub fn forget(&self, engine: &Engine, content_hash: &str) {
        let _ = std::fs::remove_file(self.entry_path(engine, content_hash));
    }

    /// Delete the entries nobody loaded for [`UNUSED_FOR`]; call it after loading the
    /// connectors, whose loads mark their entries used. Returns how many.
    pub fn delete_unused(&self) -> usize {
        delete_unused_entries(&self.dir, std::time::SystemTime::now())
    }

    fn entry_path(&self, engine: &Engine, content_hash: &str) -> PathBuf {
        // Fixed-key SipHash: stable for a given binary, which is what the fingerprint must be.
        let mut hasher = std::hash::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        self.dir.join(format!(
            "{content_hash}-{:016x}-{}.cwasm",
            hasher.finish(),
            self.key_tag
        ))
    }

    fn mac(&self, path: &Path, artifact: &[u8]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.mac_key).expect("HMAC accepts any key length");
        // Bind the MAC to the entry's name too, so an entry cannot be renamed onto another key.
        mac.update(path.file_name().map(|n| n.as_encoded_bytes()).unwrap_or_default());
        mac.update(artifact);
        mac
    }

    fn read_entry(&self, engine: &Engine, path: &Path) -> anyhow::Result<Option<Component>> {
        let data = match std::fs::read(path) {
            Ok(data) => data,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).context("reading the cache entry"),
        };
        mark_used(path);
        if data.len() < MAC_LEN {
            anyhow::bail!("the entry is truncated");
        }
        let (tag, artifact) = data.split_at(MAC_LEN);
        self.mac(path, artifact).verify_slice(tag).map_err(|_| {
            anyhow::anyhow!("the entry's MAC does not verify (corrupt or not written by this host)")
        })?;
        Ok(Some(deserialize(engine, artifact)?))
    }

    fn write_entry(&self, path: &Path, component: &Component) -> anyhow::Result<()> {
        let artifact = component.serialize().map_err(|e| anyhow::anyhow!("{e:#}"))?;
        let tag = self.mac(path, &artifact).finalize().into_bytes();
        // Unique to this write: processes sharing the cache (containers, all pid 1) and two
        // compilations in one process never write into each other's file.
        let temporary = path.with_extension(format!(
            "tmp{}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        let mut data = Vec::with_capacity(MAC_LEN + artifact.len());
        data.extend_from_slice(&tag);
        data.extend_from_slice(&artifact);
        let written = write_private(&temporary, &data)
            .context("writing the cache entry")
            .and_then(|()| std::fs::rename(&temporary, path).context("publishing the cache entry"));
        if written.is_err() {
            // Half an entry on a full disk would take the space the database needs next.
            let _ = std::fs::remove_file(&temporary);
        }
        written
    }
}

/// Write `data` to a new file only its owner can read: the cache holds native code.
fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(data)
}

/// Refresh an entry's modification time, so that [`delete_unused_entries`] keeps it; once a
/// day at most, as loads are many. Failing to is harmless (it is recompiled if deleted).
fn mark_used(path: &Path) {
    let now = std::time::SystemTime::now();
    let Ok(metadata) = std::fs::metadata(path) else {
        return;
    };
    let stale = metadata
        .modified()
        .ok()
        .and_then(|modified| now.duration_since(modified).ok())
        .is_some_and(|age| age > TOUCH_AFTER);
    if stale && let Ok(file) = std::fs::File::options().append(true).open(path) {
        let _ = file.set_modified(now);
    }
}

/// Delete the entries in `dir` not used for [`UNUSED_FOR`] before `now`, and temporary files
/// older than [`LEFTOVER_AFTER`]; returns how many. Best effort: the cache works without it.
fn delete_unused_entries(dir: &Path, now: std::time::SystemTime) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut deleted = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let kept_for = if name.contains(".tmp") {
            LEFTOVER_AFTER
        } else if name.ends_with(".cwasm") {
            UNUSED_FOR
        } else {
            continue;
        };
        let unused = entry
            .metadata()
            .and_then(|metadata| metadata.modified())
            .ok()
            .and_then(|modified| now.duration_since(modified).ok())
            .is_some_and(|age| age > kept_for);
        if unused && std::fs::remove_file(entry.path()).is_ok() {
            deleted += 1;
        }
    }
    if deleted > 0 {
        tracing::info!(deleted, dir = %dir.display(), "deleted compiled artifacts unused for 14 days and leftovers of interrupted writes");
    }
    deleted
}

/// Load a precompiled artifact.
///
/// This is the one place the host runs native code it did not compile in this process. It
/// is sound because the bytes were produced by `Component::serialize` of this same engine
/// configuration (the file name carries its fingerprint, and wasmtime re-checks it) and are
/// authenticated by a MAC only this installation can make; anything else was rejected above.
#[allow(unsafe_code)]
fn deserialize(engine: &Engine, artifact: &[u8]) -> anyhow::Result<Component> {
    // SAFETY: see above — only MAC-verified artifacts this host serialized reach this call.
    unsafe { Component::deserialize(engine, artifact) }.map_err(|e| anyhow::anyhow!("{e:#}"))
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating cache directory {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("making {} private", dir.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest valid component: no imports, no exports.
    const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";

    fn engine() -> Engine {
        Engine::default()
    }

    #[test]
    fn second_load_comes_from_the_cache() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let cache = ArtifactCache::open(&dir.path().join("cache"), [7; 32])?;
        let engine = engine();
        let (_, first) = cache.load_or_compile(&engine, EMPTY_COMPONENT, "abc")?;
        let (_, second) = cache.load_or_compile(&engine, EMPTY_COMPONENT, "abc")?;
        assert_eq!((first, second), (Origin::Compiled, Origin::Cache));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("cache"))?.permissions().mode();
            assert_eq!(mode & 0o777, 0o700);
            let entry = cache.entry_path(&engine, "abc");
            let mode = std::fs::metadata(entry)?.permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "native code only its owner reads");
        }
        Ok(())
    }

    #[test]
    fn corrupt_or_foreign_entries_are_recompiled() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let cache = ArtifactCache::open(&dir.path().join("cache"), [7; 32])?;
        let engine = engine();
        cache.load_or_compile(&engine, EMPTY_COMPONENT, "abc")?;
        let entry = std::fs::read_dir(dir.path().join("cache"))?
            .next()
            .expect("one entry")?
            .path();

        let mut corrupt = std::fs::read(&entry)?;
        let last = corrupt.len() - 1;
        corrupt[last] ^= 0xff;
        std::fs::write(&entry, &corrupt)?;
        let (_, origin) = cache.load_or_compile(&engine, EMPTY_COMPONENT, "abc")?;
        assert_eq!(origin, Origin::Compiled, "a corrupt entry is not executed");

        // An entry written with another installation's key, put where this one looks, is
        // foreign.
        let other = ArtifactCache::open(&dir.path().join("cache"), [8; 32])?;
        std::fs::copy(cache.entry_path(&engine, "abc"), other.entry_path(&engine, "abc"))?;
        let (_, origin) = other.load_or_compile(&engine, EMPTY_COMPONENT, "abc")?;
        assert_eq!(origin, Origin::Compiled, "a foreign entry is not executed");
        Ok(())
    }

    #[test]
    fn entries_unused_for_two_weeks_are_deleted_and_loads_keep_theirs() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let engine = engine();
        let cache = ArtifactCache::open(&dir.path().join("cache"), [7; 32])?;
        cache.load_or_compile(&engine, EMPTY_COMPONENT, "old")?;
        cache.load_or_compile(&engine, EMPTY_COMPONENT, "used")?;
        let long_ago = std::time::SystemTime::now() - UNUSED_FOR - std::time::Duration::from_secs(3600);
        for name in ["old", "used"] {
            std::fs::File::options()
                .append(true)
                .open(cache.entry_path(&engine, name))?
                .set_modified(long_ago)?;
        }
        // A load marks its entry used again.
        let (_, origin) = cache.load_or_compile(&engine, EMPTY_COMPONENT, "used")?;
        assert_eq!(origin, Origin::Cache);
        let reopened = ArtifactCache::open(&dir.path().join("cache"), [7; 32])?;
        assert_eq!(reopened.delete_unused(), 1);
        assert!(!reopened.entry_path(&engine, "old").exists(), "unused: deleted");
        let (_, origin) = reopened.load_or_compile(&engine, EMPTY_COMPONENT, "used")?;
        assert_eq!(origin, Origin::Cache, "used lately: kept");
        Ok(())
    }

    /// A write that fails leaves no temporary file behind (on a full disk it would hold the
    /// space the database needs), and leftovers of writes a crash cut off go within the hour.
    #[test]
    fn failed_or_interrupted_writes_leave_nothing_behind() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let engine = engine();
        let cache = ArtifactCache::open(&dir.path().join("cache"), [7; 32])?;
        // The entry's place taken by a directory that is not empty: publishing fails.
        let blocked = cache.entry_path(&engine, "blocked");
        std::fs::create_dir(&blocked)?;
        std::fs::write(blocked.join("x"), b"x")?;
        let (_, origin) = cache.load_or_compile(&engine, EMPTY_COMPONENT, "blocked")?;
        assert_eq!(origin, Origin::Compiled, "the load does not depend on the cache");
        let temporaries = |dir: &Path| -> anyhow::Result<Vec<String>> {
            Ok(std::fs::read_dir(dir)?
                .map(|entry| Ok(entry?.file_name().to_string_lossy().into_owned()))
                .collect::<std::io::Result<Vec<_>>>()?
                .into_iter()
                .filter(|name| name.contains(".tmp"))
                .collect())
        };
        assert_eq!(temporaries(&dir.path().join("cache"))?, Vec::<String>::new());

        let leftover = dir.path().join("cache").join("entry.tmp4242");
        let writing_now = dir.path().join("cache").join("entry.tmp4343");
        std::fs::write(&leftover, b"half")?;
        std::fs::write(&writing_now, b"half")?;
        std::fs::File::options()
            .append(true)
            .open(&leftover)?
            .set_modified(std::time::SystemTime::now() - 2 * LEFTOVER_AFTER)?;
        assert_eq!(cache.delete_unused(), 1);
        assert_eq!(temporaries(&dir.path().join("cache"))?, ["entry.tmp4343"]);
        Ok(())
    }

    #[test]
    fn a_new_cache_key_leaves_the_old_keys_entries_alone() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let engine = engine();
        let before = ArtifactCache::open(&dir.path().join("cache"), [7; 32])?;
        before.load_or_compile(&engine, EMPTY_COMPONENT, "abc")?;
        // The master key was rotated: the cache key changed. Nothing to find, nothing corrupt.
        let after = ArtifactCache::open(&dir.path().join("cache"), [9; 32])?;
        let (_, origin) = after.load_or_compile(&engine, EMPTY_COMPONENT, "abc")?;
        assert_eq!(origin, Origin::Compiled);
        let (_, origin) = before.load_or_compile(&engine, EMPTY_COMPONENT, "abc")?;
        assert_eq!(origin, Origin::Cache, "the other key's entry was not discarded");
        Ok(())
    }
}
