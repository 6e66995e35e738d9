//! The set of loaded connectors, readable without locks held across awaits and swapped
//! atomically as a whole.

use crate::runtime::{LoadError, LoadedConnector, Runtime};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// Loaded connectors by id.
#[derive(Debug, Default)]
pub struct Registry {
    current: RwLock<Arc<BTreeMap<String, Arc<LoadedConnector>>>>,
}

impl Registry {
    /// The connector with `id`, if loaded. In-flight requests keep the version they got.
    pub fn get(&self, id: &str) -> Option<Arc<LoadedConnector>> {
        self.snapshot().get(id).cloned()
    }

    /// Every loaded connector, by id.
    pub fn snapshot(&self) -> Arc<BTreeMap<String, Arc<LoadedConnector>>> {
        match self.current.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Add or replace one connector.
    pub fn insert(&self, connector: LoadedConnector) {
        let mut guard = match self.current.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut next = (**guard).clone();
        next.insert(connector.manifest.id.clone(), Arc::new(connector));
        *guard = Arc::new(next);
    }
}

/// A component file that failed to load, and why.
#[derive(Debug)]
pub struct LoadFailure {
    /// The file.
    pub path: PathBuf,
    /// What went wrong.
    pub error: String,
}

/// Load every `*.wasm` file in `dir` into `registry`; failures are returned, not fatal.
pub async fn load_directory(
    runtime: &Runtime,
    registry: &Registry,
    dir: &Path,
) -> anyhow::Result<Vec<LoadFailure>> {
    let mut paths = Vec::new();
    let mut entries = tokio::fs::read_dir(dir)
        .await
        .map_err(|e| anyhow::anyhow!("cannot read plugins directory {}: {e}", dir.display()))?;
    while let Some(entry) = entries.next_entry().await? {
        let path = entry.path();
        if path.extension().is_some_and(|ext| ext == "wasm") {
            paths.push(path);
        }
    }
    paths.sort();
    let mut failures = Vec::new();
    for path in paths {
        match load_file(runtime, &path).await {
            Ok(connector) => {
                tracing::info!(
                    id = %connector.manifest.id,
                    version = %connector.manifest.version,
                    hash = %&connector.content_hash[..12],
                    file = %path.display(),
                    "connector loaded"
                );
                if let Some(previous) = registry.get(&connector.manifest.id) {
                    tracing::warn!(id = %previous.manifest.id, file = %path.display(), "two files declare the same connector id; the later one wins");
                }
                registry.insert(connector);
            }
            Err(error) => {
                tracing::error!(file = %path.display(), %error, "connector failed to load");
                failures.push(LoadFailure {
                    path,
                    error: error.to_string(),
                });
            }
        }
    }
    Ok(failures)
}

async fn load_file(runtime: &Runtime, path: &Path) -> Result<LoadedConnector, LoadError> {
    let bytes = tokio::fs::read(path)
        .await
        .map_err(|e| LoadError::Component(format!("cannot read file: {e}")))?;
    runtime.load(bytes).await
}
