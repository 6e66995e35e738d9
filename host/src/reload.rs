//! Hot reload: the plugins directory is watched, file events are debounced (~200 ms) and
//! handled by one serialized task, which loads changed components off the request path and
//! swaps them in atomically. A component that fails to load never replaces a working one.
//!
//! Only events that can change a file count: the gateway reads each component it loads, and a
//! read (an open, a close without writing) must not start another load, or every load would
//! start the next one. `SIGHUP` asks for every file to be looked at again (after `sluice
//! connectors approve`, or with `--no-watch`), and for every connector to be loaded again when
//! the policy changed.

use crate::registry::{self, Loader, Registry};
use notify::event::{AccessKind, AccessMode, EventKind};
use notify::{RecursiveMode, Watcher};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Quiet time after the last event before a batch is handled: lets a writer finish a file
/// written in several steps.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

/// Keeps hot reload going; dropping it stops watching.
#[derive(Debug)]
pub struct Reloader {
    /// The task holds it weakly: it goes with the reloader, and with it the last sender the
    /// task listens to.
    _watch: Arc<Watch>,
    changes: mpsc::UnboundedSender<Change>,
}

/// Which files a change loads again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reload {
    /// Only one whose content changed (a file event, a rescan).
    Changed,
    /// Even one whose content is the same: what a connector is loaded under (the policy)
    /// changed.
    Everything,
}

/// What the reload task is told.
#[derive(Debug)]
enum Change {
    /// A component file may have changed.
    File(PathBuf, Reload),
    /// Look at every file again, and watch the directory afresh first: it was replaced,
    /// removed or created (an atomic deploy renames a new directory over the old one, and a
    /// watch follows the old one wherever it goes), or `SIGHUP` asked.
    Everything(Reload),
}

/// The watch on the plugins directory, and on its parent for the directory itself coming and
/// going. Off under `--no-watch`.
#[derive(Debug)]
struct Watch {
    watcher: Option<std::sync::Mutex<notify::RecommendedWatcher>>,
}

impl Watch {
    /// Watch `dir` as it is now: drop a watch that followed a directory renamed away, and
    /// watch what is at the path (nothing while it is gone: its parent's watch tells when it
    /// is back).
    fn rearm(&self, dir: &Path) {
        let Some(watcher) = &self.watcher else {
            return;
        };
        let mut watcher = watcher.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let _ = watcher.unwatch(dir);
        match watcher.watch(dir, RecursiveMode::NonRecursive) {
            Ok(()) => tracing::info!(dir = %dir.display(), "watching the plugins directory afresh"),
            Err(error) => tracing::warn!(
                dir = %dir.display(),
                %error,
                "the plugins directory cannot be watched (gone?); it is watched again once it is back"
            ),
        }
    }
}

impl Reloader {
    /// Look at every component file in the directory again, and at files that were loaded
    /// but are gone: as if each had changed. The directory is watched afresh first.
    pub fn rescan(&self, reload: Reload) {
        let _ = self.changes.send(Change::Everything(reload));
    }
}

/// Whether a file event may mean the file's content changed (or it appeared or went). Reads
/// do not; a close after writing does (it ends a write).
fn may_change_content(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// `path` spelt under `dir` (the plugins directory as the operator named it), if it is an entry
/// of `dir`. Linux reports the spelling watched; macOS's FSEvents reports the resolved one
/// (`/private/tmp/…` for `/tmp/…`, a release's directory for the symlink naming it), which is
/// compared by where it resolves to.
fn respelt_in(path: &Path, dir: &Path) -> Option<PathBuf> {
    let parent = path.parent()?;
    if parent == dir {
        return Some(path.to_owned());
    }
    let resolved = std::fs::canonicalize(dir).ok()?;
    if parent != resolved && std::fs::canonicalize(parent).ok()? != resolved {
        return None;
    }
    Some(dir.join(path.file_name()?))
}

/// Whether the event path `path` names the entry `entry`, however it is spelt (see [`respelt_in`]).
fn same_entry(path: &Path, entry: &Path) -> bool {
    path == entry
        || entry
            .parent()
            .is_some_and(|parent| respelt_in(path, parent).as_deref() == Some(entry))
}

/// Where `dir` shows in its parent's events, and that parent: `None` for a directory with no
/// name of its own (`/`, `..`), which cannot be swapped for another.
fn as_seen_from_parent(dir: &Path) -> Option<(PathBuf, PathBuf)> {
    let name = dir.file_name()?;
    let parent = match dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    };
    Some((parent.join(name), parent))
}

/// Keep `registry` in step with the `*.wasm` files of `dir`: watch it unless `watch` is false,
/// and take [`Reloader::rescan`] requests either way.
pub fn start(dir: &Path, loader: Loader, registry: Arc<Registry>, watch: bool) -> anyhow::Result<Reloader> {
    let (sender, receiver) = mpsc::unbounded_channel::<Change>();
    let watcher = if watch {
        let events = sender.clone();
        let seen_from_parent = as_seen_from_parent(dir);
        let itself = seen_from_parent.as_ref().map(|(itself, _)| itself.clone());
        let watched = dir.to_owned();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
                Ok(event) if may_change_content(&event.kind) => {
                    for path in event.paths {
                        if itself.as_ref().is_some_and(|itself| same_entry(&path, itself)) {
                            let _ = events.send(Change::Everything(Reload::Changed));
                        } else if path.extension().is_some_and(|ext| ext == "wasm")
                            // Not a file beside the directory, which the parent's watch sees too.
                            && let Some(file) = respelt_in(&path, &watched)
                        {
                            let _ = events.send(Change::File(file, Reload::Changed));
                        }
                    }
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "plugins directory watch error"),
            })?;
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
        // Without it, reload would still work until the directory is replaced; so it is worth
        // a warning, not a refusal to start.
        if let Some((_, parent)) = &seen_from_parent
            && let Err(error) = watcher.watch(parent, RecursiveMode::NonRecursive)
        {
            tracing::warn!(
                parent = %parent.display(),
                %error,
                "cannot watch the plugins directory's parent: if the directory is replaced or removed, \
                 send SIGHUP to watch it again"
            );
        }
        tracing::info!(dir = %dir.display(), "watching for connector changes");
        Some(std::sync::Mutex::new(watcher))
    } else {
        None
    };
    let watch = Arc::new(Watch { watcher });
    tokio::spawn(retry_loads_that_may_pass(sender.downgrade(), registry.clone()));
    tokio::spawn(reload_task(
        receiver,
        dir.to_owned(),
        Arc::downgrade(&watch),
        loader,
        registry,
    ));
    Ok(Reloader {
        _watch: watch,
        changes: sender,
    })
}

/// Every [`registry::RETRY_LOADS_EVERY`], ask the reload task to load again the files whose
/// load failed for a cause that may pass (a full disk): once it has, they serve without
/// anyone touching them. Ends with the reloader.
async fn retry_loads_that_may_pass(changes: mpsc::WeakUnboundedSender<Change>, registry: Arc<Registry>) {
    let mut ticks = tokio::time::interval(registry::RETRY_LOADS_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        ticks.tick().await;
        let Some(changes) = changes.upgrade() else {
            return;
        };
        for failure in registry.failures().values().filter(|failure| failure.retry_later) {
            let _ = changes.send(Change::File(failure.path.clone(), Reload::Changed));
        }
    }
}

/// The one task that applies changes, so two reloads never race each other.
async fn reload_task(
    mut changes: mpsc::UnboundedReceiver<Change>,
    dir: PathBuf,
    watch: std::sync::Weak<Watch>,
    loader: Loader,
    registry: Arc<Registry>,
) {
    while let Some(first) = changes.recv().await {
        let started = Instant::now();
        let mut batch = Batch::default();
        batch.add(first);
        loop {
            match tokio::time::timeout(DEBOUNCE, changes.recv()).await {
                Ok(Some(change)) => batch.add(change),
                Ok(None) => return,
                Err(_) => break,
            }
        }
        if let Some(reload) = batch.everything {
            if let Some(watch) = watch.upgrade() {
                watch.rearm(&dir);
            }
            for path in every_file(&dir, &registry).await {
                batch.add(Change::File(path, reload));
            }
        }
        // Files that are there first: a connector's file renamed (`mv a.wasm b.wasm`) loads
        // under its new name and takes over from the old one, which is gone, before the old
        // name's removal is applied (it then removes nothing): the connector serves throughout
        // instead of being removed and loaded again.
        let (present, gone): (Vec<_>, Vec<_>) = batch.files.into_iter().partition(|(path, _)| path.exists());
        for (path, reload) in present.into_iter().chain(gone) {
            apply(&loader, &registry, &path, reload, started).await;
        }
    }
}

/// Changes gathered within one debounce window.
#[derive(Debug, Default)]
struct Batch {
    files: BTreeMap<PathBuf, Reload>,
    everything: Option<Reload>,
}

impl Batch {
    fn add(&mut self, change: Change) {
        match change {
            Change::File(path, reload) => {
                let entry = self.files.entry(path).or_insert(reload);
                *entry = (*entry).max(reload);
            }
            Change::Everything(reload) => self.everything = self.everything.max(Some(reload)),
        }
    }
}

/// The directory's component files, and the files loaded from it that are gone.
async fn every_file(dir: &Path, registry: &Registry) -> BTreeSet<PathBuf> {
    let mut paths: BTreeSet<PathBuf> = match registry::component_files(dir).await {
        Ok(files) => files.into_iter().collect(),
        Err(error) => {
            tracing::error!(error = %format!("{error:#}"), "reading the plugins directory failed");
            BTreeSet::new()
        }
    };
    paths.extend(registry.snapshot().values().filter_map(|c| c.source.clone()));
    paths
}

async fn apply(loader: &Loader, registry: &Registry, path: &Path, reload: Reload, started: Instant) {
    if !path.exists() {
        registry.clear_failure(path);
        // A file that waited behind this one takes over first (a file written later than one
        // that is gone wins), rather than once the connector has gone.
        for waiting in registry.shadowed_behind(path) {
            registry::load_into(loader, registry, &waiting).await;
        }
        let removed = registry.remove_source(path);
        for id in &removed {
            tracing::info!(%id, file = %path.display(), "connector removed");
        }
        load_orphaned_shadows(loader, registry).await;
        return;
    }
    // Unchanged content (a touch, or an event for a write already handled) needs no work,
    // unless what connectors load under changed. A file put back as the version still serving
    // after a failed write is no longer stale.
    if reload == Reload::Changed
        && let (Some(current), Ok(bytes)) = (registry.from_source(path), registry::read_component(path).await)
        && current.content_hash == crate::vault::crypto::sha256_hex(&bytes)
    {
        let failed_on_other_bytes = registry
            .failures()
            .get(path)
            .is_some_and(|failure| failure.content_hash.as_ref() != Some(&current.content_hash));
        if failed_on_other_bytes {
            registry.clear_failure(path);
            tracing::info!(file = %path.display(), "the file is the version serving again; its failed load is forgotten");
        }
        return;
    }
    let replaced = registry.from_source(path).map(|c| c.content_hash.clone());
    if registry::load_into(loader, registry, path).await {
        tracing::info!(
            file = %path.display(),
            millis = started.elapsed().as_millis() as u64,
            "hot reload applied (time from first file event to serving)"
        );
        // Under `sluice dev` every save is a new version, and some toolchains never build the
        // same bytes twice: the compiled version a save replaced goes, rather than fill the
        // cache for days.
        if loader.dev_builds.is_some()
            && let Some(replaced) = replaced
            && registry
                .from_source(path)
                .is_some_and(|serving| serving.content_hash != replaced)
        {
            loader.runtime.forget_compiled(&replaced);
        }
    }
    // It may have stopped declaring an id another file was shadowed for (whether it now
    // serves or is shadowed itself).
    load_orphaned_shadows(loader, registry).await;
}

/// Load the shadowed files whose connector id nothing serves any more: the file declaring the
/// same id that had shadowed one was removed or now declares another id, and the connector
/// should not go away while a file still provides it.
async fn load_orphaned_shadows(loader: &Loader, registry: &Registry) {
    for file in registry.orphaned_shadows() {
        registry::load_into(loader, registry, &file).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Event paths spelt as the directory resolves (macOS reports them so) count as entries of
    /// the directory as named; paths elsewhere do not.
    #[test]
    fn resolved_spellings_are_entries_of_the_directory_as_named() -> anyhow::Result<()> {
        let root = tempfile::tempdir()?;
        let real = root.path().join("releases").join("v1");
        std::fs::create_dir_all(&real)?;
        let named = root.path().join("current");
        std::os::unix::fs::symlink(&real, &named)?;
        assert_eq!(
            respelt_in(&named.join("a.wasm"), &named),
            Some(named.join("a.wasm"))
        );
        assert_eq!(
            respelt_in(&real.join("a.wasm"), &named),
            Some(named.join("a.wasm"))
        );
        assert_eq!(respelt_in(&root.path().join("a.wasm"), &named), None);
        let resolved_root = std::fs::canonicalize(root.path())?;
        assert!(same_entry(&resolved_root.join("current"), &named));
        assert!(!same_entry(&resolved_root.join("other"), &named));
        Ok(())
    }
    use notify::event::{CreateKind, DataChange, ModifyKind, RemoveKind};

    #[test]
    fn the_directory_is_looked_for_in_its_parents_events() {
        let seen = |dir: &str| {
            as_seen_from_parent(Path::new(dir))
                .map(|(itself, parent)| (itself.display().to_string(), parent.display().to_string()))
        };
        assert_eq!(
            seen("/srv/sluice/plugins"),
            Some(("/srv/sluice/plugins".into(), "/srv/sluice".into()))
        );
        assert_eq!(seen("plugins"), Some(("./plugins".into(), ".".into())));
        assert_eq!(seen("plugins/"), Some(("./plugins".into(), ".".into())));
        assert_eq!(seen("/"), None);
        assert_eq!(seen(".."), None);
    }

    #[test]
    fn reads_are_not_changes() {
        assert!(!may_change_content(&EventKind::Access(AccessKind::Open(
            AccessMode::Any
        ))));
        assert!(!may_change_content(&EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(!may_change_content(&EventKind::Access(AccessKind::Read)));
        assert!(may_change_content(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(may_change_content(&EventKind::Modify(ModifyKind::Data(
            DataChange::Any
        ))));
        assert!(may_change_content(&EventKind::Create(CreateKind::File)));
        assert!(may_change_content(&EventKind::Remove(RemoveKind::File)));
    }
}
