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
    _watcher: Option<notify::RecommendedWatcher>,
    dir: PathBuf,
    changes: mpsc::UnboundedSender<(PathBuf, Reload)>,
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

impl Reloader {
    /// Look at every component file in the directory again, and at files that were loaded
    /// but are gone: as if each had changed.
    pub async fn rescan(&self, registry: &Registry, reload: Reload) -> anyhow::Result<()> {
        let mut paths: BTreeSet<PathBuf> = registry::component_files(&self.dir).await?.into_iter().collect();
        paths.extend(registry.snapshot().values().filter_map(|c| c.source.clone()));
        for path in paths {
            let _ = self.changes.send((path, reload));
        }
        Ok(())
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

/// Keep `registry` in step with the `*.wasm` files of `dir`: watch it unless `watch` is false,
/// and take [`Reloader::rescan`] requests either way.
pub fn start(dir: &Path, loader: Loader, registry: Arc<Registry>, watch: bool) -> anyhow::Result<Reloader> {
    let (sender, receiver) = mpsc::unbounded_channel::<(PathBuf, Reload)>();
    let watcher = if watch {
        let events = sender.clone();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
                Ok(event) if may_change_content(&event.kind) => {
                    for path in event.paths {
                        if path.extension().is_some_and(|ext| ext == "wasm") {
                            let _ = events.send((path, Reload::Changed));
                        }
                    }
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "plugins directory watch error"),
            })?;
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
        tracing::info!(dir = %dir.display(), "watching for connector changes");
        Some(watcher)
    } else {
        None
    };
    tokio::spawn(reload_task(receiver, loader, registry));
    Ok(Reloader {
        _watcher: watcher,
        dir: dir.to_owned(),
        changes: sender,
    })
}

/// The one task that applies changes, so two reloads never race each other.
async fn reload_task(
    mut events: mpsc::UnboundedReceiver<(PathBuf, Reload)>,
    loader: Loader,
    registry: Arc<Registry>,
) {
    while let Some((path, reload)) = events.recv().await {
        let started = Instant::now();
        let mut changed = BTreeMap::from([(path, reload)]);
        loop {
            match tokio::time::timeout(DEBOUNCE, events.recv()).await {
                Ok(Some((path, reload))) => {
                    let entry = changed.entry(path).or_insert(reload);
                    *entry = (*entry).max(reload);
                }
                Ok(None) => return,
                Err(_) => break,
            }
        }
        for (path, reload) in changed {
            apply(&loader, &registry, &path, reload, started).await;
        }
    }
}

async fn apply(loader: &Loader, registry: &Registry, path: &Path, reload: Reload, started: Instant) {
    if !path.exists() {
        registry.clear_failure(path);
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
        && let (Some(current), Ok(bytes)) = (registry.from_source(path), tokio::fs::read(path).await)
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
    if registry::load_into(loader, registry, path).await {
        tracing::info!(
            file = %path.display(),
            millis = started.elapsed().as_millis() as u64,
            "hot reload applied (time from first file event to serving)"
        );
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
    use notify::event::{CreateKind, DataChange, ModifyKind, RemoveKind};

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
