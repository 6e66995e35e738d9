//! Hot reload: the plugins directory is watched, file events are debounced (~200 ms) and
//! handled by one serialized task, which loads changed components off the request path and
//! swaps them in atomically. A component that fails to load never replaces a working one.

use crate::registry::{self, Loader, Registry};
use notify::{RecursiveMode, Watcher};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Quiet time after the last event before a batch is handled: lets a writer finish a file
/// written in several steps.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

/// Keeps the watcher alive; dropping it stops hot reload.
#[derive(Debug)]
pub struct WatchHandle {
    _watcher: notify::RecommendedWatcher,
}

/// Watch `dir` and keep `registry` in step with its `*.wasm` files.
pub fn watch(dir: &Path, loader: Loader, registry: Arc<Registry>) -> anyhow::Result<WatchHandle> {
    let (sender, receiver) = mpsc::unbounded_channel::<PathBuf>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
        Ok(event) => {
            for path in event.paths {
                if path.extension().is_some_and(|ext| ext == "wasm") {
                    let _ = sender.send(path);
                }
            }
        }
        Err(error) => tracing::warn!(%error, "plugins directory watch error"),
    })?;
    watcher.watch(dir, RecursiveMode::NonRecursive)?;
    tokio::spawn(reload_task(receiver, loader, registry));
    tracing::info!(dir = %dir.display(), "watching for connector changes");
    Ok(WatchHandle { _watcher: watcher })
}

/// The one task that applies changes, so two reloads never race each other.
async fn reload_task(mut events: mpsc::UnboundedReceiver<PathBuf>, loader: Loader, registry: Arc<Registry>) {
    while let Some(first) = events.recv().await {
        let started = Instant::now();
        let mut changed = BTreeSet::from([first]);
        loop {
            match tokio::time::timeout(DEBOUNCE, events.recv()).await {
                Ok(Some(path)) => {
                    changed.insert(path);
                }
                Ok(None) => return,
                Err(_) => break,
            }
        }
        for path in changed {
            apply(&loader, &registry, &path, started).await;
        }
    }
}

async fn apply(loader: &Loader, registry: &Registry, path: &Path, started: Instant) {
    if !path.exists() {
        registry.clear_failure(path);
        for id in registry.remove_source(path) {
            tracing::info!(%id, file = %path.display(), "connector removed");
        }
        return;
    }
    // Unchanged content (a touch, or an event for a write already handled) needs no work.
    if let (Some(current), Ok(bytes)) = (registry.from_source(path), tokio::fs::read(path).await)
        && current.content_hash == crate::vault::crypto::sha256_hex(&bytes)
    {
        return;
    }
    if registry::load_into(loader, registry, path).await {
        tracing::info!(
            file = %path.display(),
            millis = started.elapsed().as_millis() as u64,
            "hot reload applied (time from first file event to serving)"
        );
    }
}
