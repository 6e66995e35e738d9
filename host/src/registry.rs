//! The set of loaded connectors, swapped atomically as a whole, and the [`Loader`] that turns
//! component files into connectors: compile, describe, apply the operator's policy, and
//! check the outbound hosts against those approved.

use crate::policy::LivePolicy;
use crate::runtime::{LoadedConnector, Runtime};
use crate::vault::Vault;
use crate::vault::approvals::{CREDENTIAL_ENTRY, HostCheck, PLACEMENT_ENTRY};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// Loaded connectors by id, the files that failed to load, and the files another file with the
/// same connector id replaced.
#[derive(Debug)]
pub struct Registry {
    current: RwLock<Arc<BTreeMap<String, Arc<LoadedConnector>>>>,
    failures: RwLock<BTreeMap<PathBuf, LoadFailure>>,
    shadowed: RwLock<BTreeMap<PathBuf, Shadowed>>,
    /// Marked changed with every swap, for whoever follows the catalog (MCP's `listChanged`).
    changes: tokio::sync::watch::Sender<()>,
    /// The plugins directory is being loaded for the first time: what it holds is not known yet.
    starting: std::sync::atomic::AtomicBool,
}

impl Default for Registry {
    fn default() -> Self {
        Self {
            current: RwLock::default(),
            failures: RwLock::default(),
            shadowed: RwLock::default(),
            changes: tokio::sync::watch::Sender::new(()),
            starting: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

impl Registry {
    /// Mark the first load of the plugins directory begun (`true`) or done (`false`).
    pub fn set_starting(&self, starting: bool) {
        self.starting
            .store(starting, std::sync::atomic::Ordering::Release);
    }

    /// Whether the first load of the plugins directory is under way.
    pub fn is_starting(&self) -> bool {
        self.starting.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// A component file that failed to load, and why.
#[derive(Debug, Clone)]
pub struct LoadFailure {
    /// The file.
    pub path: PathBuf,
    /// What went wrong.
    pub error: String,
    /// The connector id the file declares, when the failure came after the gateway read it
    /// (hosts awaiting approval): calls to that id are told it did not load, not that it does
    /// not exist.
    pub id: Option<String>,
    /// When (Unix seconds).
    pub at: i64,
    /// SHA-256 of the bytes that failed, when they could be read: a file put back as the
    /// version serving clears a failure of other bytes, not one of these very bytes (a load
    /// under a changed policy that failed).
    pub content_hash: Option<String>,
    /// See [`FailedLoad::retry_later`].
    pub retry_later: bool,
}

/// A component file that loaded but serves nothing: a file written later declared the same connector
/// id. It takes over again if that file is removed.
#[derive(Debug, Clone)]
pub struct Shadowed {
    /// The file.
    pub path: PathBuf,
    /// The connector id both files declare.
    pub id: String,
    /// When it was replaced (Unix seconds).
    pub at: i64,
}

fn read<T: Clone>(lock: &RwLock<T>) -> T {
    match lock.read() {
        Ok(guard) => guard.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    }
}

fn update<T, R>(lock: &RwLock<T>, change: impl FnOnce(&mut T) -> R) -> R {
    match lock.write() {
        Ok(mut guard) => change(&mut guard),
        Err(poisoned) => change(&mut poisoned.into_inner()),
    }
}

impl Registry {
    /// The connector with `id`, if loaded. In-flight requests keep the version they got.
    pub fn get(&self, id: &str) -> Option<Arc<LoadedConnector>> {
        self.snapshot().get(id).cloned()
    }

    /// Wakes whenever a connector is added, replaced or removed.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<()> {
        self.changes.subscribe()
    }

    /// Every loaded connector, by id.
    pub fn snapshot(&self) -> Arc<BTreeMap<String, Arc<LoadedConnector>>> {
        read(&self.current)
    }

    /// Add or replace one connector, atomically for readers: a request that already holds
    /// the previous version finishes on it. If the same file used to provide another id, that
    /// one is removed in the same swap; returns the ids removed so.
    pub fn insert(&self, connector: LoadedConnector) -> Vec<String> {
        let id = connector.manifest.id.clone();
        let source = connector.source.clone();
        let mut removed = Vec::new();
        let replaced = update(&self.current, |current| {
            let mut next = (**current).clone();
            if let Some(source) = &source {
                next.retain(|other, c| {
                    let keep = other == &id || c.source.as_ref() != Some(source);
                    if !keep {
                        removed.push(other.clone());
                    }
                    keep
                });
            }
            let previous = next.insert(id.clone(), Arc::new(connector));
            (std::mem::replace(current, Arc::new(next)), previous)
        });
        let displaced = replaced.1.as_ref().and_then(|previous| previous.source.clone());
        update(&self.shadowed, |shadowed| {
            if let Some(source) = &source {
                shadowed.remove(source);
            }
            if let Some(displaced) = displaced.filter(|displaced| Some(displaced) != source.as_ref()) {
                let at = crate::vault::now();
                shadowed.insert(
                    displaced.clone(),
                    Shadowed {
                        path: displaced,
                        id,
                        at,
                    },
                );
            }
        });
        self.changes.send_replace(());
        // Outside the lock: the last reference to a replaced connector tears down its compiled
        // code and spare instances, and requests looking connectors up need not wait for that.
        drop(replaced);
        removed
    }

    /// Drop spare instances no request has taken for `idle_for`, over every connector; how
    /// many were dropped.
    pub fn drop_idle_spares(&self, idle_for: std::time::Duration) -> usize {
        self.snapshot()
            .values()
            .map(|connector| connector.drop_idle_spares(idle_for))
            .sum()
    }

    /// Remove whatever was loaded from `path`; returns the removed ids.
    pub fn remove_source(&self, path: &Path) -> Vec<String> {
        update(&self.shadowed, |shadowed| {
            shadowed.remove(path);
        });
        let mut removed = Vec::new();
        let replaced = update(&self.current, |current| {
            let mut next = (**current).clone();
            next.retain(|id, c| {
                let keep = c.source.as_deref() != Some(path);
                if !keep {
                    removed.push(id.clone());
                }
                keep
            });
            std::mem::replace(current, Arc::new(next))
        });
        if !removed.is_empty() {
            self.changes.send_replace(());
        }
        // Outside the lock, as in `insert`.
        drop(replaced);
        removed
    }

    /// Action ids of `connector` that another loaded connector's actions also have (ids join
    /// two names that may hold `-`: `my-app` + `x` and `my` + `app_x`), with that connector.
    pub fn shared_action_keys(&self, connector: &LoadedConnector) -> Vec<(String, String)> {
        let snapshot = self.snapshot();
        let others = snapshot
            .values()
            .filter(|c| c.manifest.id != connector.manifest.id);
        others
            .flat_map(|other| other.manifest.endpoints.iter().map(move |e| (other, e)))
            .filter(|(_, theirs)| {
                connector
                    .manifest
                    .endpoints
                    .iter()
                    .any(|ours| ours.action_key == theirs.action_key)
            })
            .map(|(other, theirs)| (theirs.action_key.clone(), other.manifest.id.clone()))
            .collect()
    }

    /// The connector loaded from `path`, if any.
    pub fn from_source(&self, path: &Path) -> Option<Arc<LoadedConnector>> {
        self.snapshot()
            .values()
            .find(|c| c.source.as_deref() == Some(path))
            .cloned()
    }

    /// Whether connector `id` is not loaded because a file declaring it failed to load.
    pub fn failed_to_load(&self, id: &str) -> bool {
        read(&self.failures)
            .values()
            .any(|failure| failure.id.as_deref() == Some(id))
            && self.get(id).is_none()
    }

    /// Record that `path` failed to load (replacing an earlier failure of the same file).
    pub fn record_failure(&self, path: &Path, failed: FailedLoad, content_hash: Option<String>) {
        // What it held before no longer matters: it could not take over now.
        update(&self.shadowed, |shadowed| {
            shadowed.remove(path);
        });
        update(&self.failures, |failures| {
            failures.insert(
                path.to_owned(),
                LoadFailure {
                    path: path.to_owned(),
                    error: failed.error,
                    id: failed.id,
                    at: crate::vault::now(),
                    content_hash,
                    retry_later: failed.retry_later,
                },
            );
        });
    }

    /// Forget an earlier failure of `path` (it loaded, or it is gone).
    pub fn clear_failure(&self, path: &Path) {
        update(&self.failures, |failures| {
            failures.remove(path);
        });
    }

    /// Files that failed to load, by path.
    pub fn failures(&self) -> BTreeMap<PathBuf, LoadFailure> {
        read(&self.failures)
    }

    /// Files that loaded but serve nothing, because a file written later declares the same id.
    pub fn shadowed(&self) -> BTreeMap<PathBuf, Shadowed> {
        read(&self.shadowed)
    }

    /// Record that `path` loaded as `id` but serves nothing: a file written later declares the
    /// same id. Whatever `path` served before is removed; returns those ids.
    pub fn shadow(&self, path: &Path, id: String) -> Vec<String> {
        let removed = self.remove_source(path);
        update(&self.shadowed, |shadowed| {
            let at = crate::vault::now();
            shadowed.insert(
                path.to_owned(),
                Shadowed {
                    path: path.to_owned(),
                    id,
                    at,
                },
            );
        });
        removed
    }

    /// Shadowed files whose connector id nothing serves any more: the file that shadowed each
    /// was removed, or now declares another id.
    /// The files waiting behind a connector that `path` serves: loaded before `path` goes, one
    /// takes the connector over with no moment in which calls find it missing.
    pub fn shadowed_behind(&self, path: &Path) -> Vec<PathBuf> {
        let serving = self.snapshot();
        self.shadowed()
            .into_values()
            .filter(|shadowed| {
                serving
                    .get(&shadowed.id)
                    .is_some_and(|connector| connector.source.as_deref() == Some(path))
            })
            .map(|shadowed| shadowed.path)
            .collect()
    }

    pub fn orphaned_shadows(&self) -> Vec<PathBuf> {
        let serving = self.snapshot();
        self.shadowed()
            .into_values()
            .filter(|shadowed| !serving.contains_key(&shadowed.id))
            .map(|shadowed| shadowed.path)
            .collect()
    }
}

/// Turns component files into connectors under the operator's policy and host approvals.
#[derive(Debug, Clone)]
pub struct Loader {
    /// The runtime that compiles and describes components.
    pub runtime: Arc<Runtime>,
    /// The operator's policy.
    pub policy: Arc<LivePolicy>,
    /// Where approved hosts are kept.
    pub vault: Vault,
    /// Where loads are counted.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The command that approves a connector's hosts for this gateway, without the id (its
    /// `--plugins` and `--data-dir`), for load errors to quote.
    pub approve_command: String,
    /// Under `sluice dev`, its builds: the outbound hosts a new version of a component it
    /// built asks for are approved instead of refused (the author's own connector). Other
    /// files in the directory, and a file taking over another connector's id, still wait.
    pub dev_builds: Option<crate::dev::BuildFailures>,
}

/// Largest component file loaded (a Python connector is about 19 MiB), so that a stray file in
/// the plugins directory is not read into memory whole.
const MAX_COMPONENT_BYTES: u64 = 128 << 20;

/// Why a component file did not load, and the connector id it declares when that is known.
#[derive(Debug, Default)]
pub struct FailedLoad {
    /// What went wrong, as `GET /v1/plugins` shows it (a route without a key: no paths).
    pub error: String,
    /// The id, when the failure came after the gateway read it.
    pub id: Option<String>,
    /// What to do about it, with this machine's paths: for the log only.
    pub log_hint: Option<String>,
    /// The cause lies outside the file and may pass (the database could not be read or
    /// written: a full disk): the load is tried again, see [`RETRY_LOADS_EVERY`].
    pub retry_later: bool,
}

/// How often loads that failed for a passing cause ([`FailedLoad::retry_later`]) are tried
/// again.
pub const RETRY_LOADS_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

impl FailedLoad {
    /// A load that failed because the database failed `doing` something: tried again later.
    fn storage(doing: &str, error: anyhow::Error) -> Self {
        Self {
            error: format!(
                "{doing}: {error:#} (tried again every {} s)",
                RETRY_LOADS_EVERY.as_secs()
            ),
            retry_later: true,
            ..Self::default()
        }
    }
}

impl From<String> for FailedLoad {
    fn from(error: String) -> Self {
        Self {
            error,
            ..Self::default()
        }
    }
}

impl std::fmt::Display for FailedLoad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.error)
    }
}

impl Loader {
    /// Whether this `sluice dev` session built and published the component at `path`.
    fn built_by_this_dev_session(&self, path: &Path) -> bool {
        self.dev_builds
            .as_ref()
            .is_some_and(|builds| builds.published(path))
    }

    /// Whether a file is recorded as serving connector `id`.
    async fn served_by_a_file(&self, id: &str) -> Result<bool, FailedLoad> {
        let id = id.to_owned();
        self.vault
            .run(move |vault| vault.served_by_a_file(&id))
            .await
            .map_err(|e| FailedLoad::storage("checking approved hosts", e))
    }

    /// Approve `hosts` for connector `id` and record it as served from `file`: for the
    /// author's own builds under `sluice dev`.
    async fn approve_dev_build(&self, id: &str, file: &str, hosts: Vec<String>) -> Result<(), FailedLoad> {
        let (id, file) = (id.to_owned(), file.to_owned());
        self.vault
            .run(move |vault| {
                vault.approve_hosts(&id, &hosts)?;
                vault.approve_file(&id, &file)
            })
            .await
            .map_err(|e| FailedLoad::storage("approving new hosts", e))
    }

    /// Load one component file.
    pub async fn load_file(&self, path: &Path) -> Result<LoadedConnector, FailedLoad> {
        let bytes = read_component(path).await?;
        let mut connector = self
            .runtime
            .load(bytes, &self.policy.current())
            .await
            .map_err(|error| FailedLoad {
                error: error.to_string(),
                // Known once describe() ran: calls to it are told it did not load.
                id: match &error {
                    crate::runtime::LoadError::Policy { id, .. } => Some(id.clone()),
                    _ => None,
                },
                ..FailedLoad::default()
            })?;
        connector.source = Some(path.to_owned());
        let id = connector.manifest.id.clone();
        // Here, where a connector is loaded to serve, not in the runtime: the CLI reads
        // manifests too (to add a connection, approve hosts), which sends no credential.
        if self.runtime.limits().address_policy == crate::egress::AddressPolicy::PublicOnly
            && let Err(error) = connector.manifest.check_credentials_travel_encrypted()
        {
            return Err(FailedLoad {
                error: error.to_string(),
                id: Some(id),
                ..FailedLoad::default()
            });
        }
        let declared = hosts_for_approval(&connector);
        let file = file_name(path);
        let check = {
            let (id, file, path) = (id.clone(), file.clone(), path.to_owned());
            let present = move |name: &str| path.with_file_name(name).exists();
            self.vault
                .run(move |vault| vault.check_connector_file(&id, &declared, &file, present))
                .await
                .map_err(|e| FailedLoad::storage("checking approved hosts", e))?
        };
        match check {
            HostCheck::FirstSeen => {
                // Joined, not a debug list: one readable value in text and JSON logs alike.
                let hosts = hosts_for_approval(&connector).join(", ");
                tracing::info!(connector = %id, %hosts, "outbound hosts approved on first load");
                Ok(connector)
            }
            HostCheck::Approved => Ok(connector),
            HostCheck::NeedsApproval(added) if self.built_by_this_dev_session(path) => {
                let added = format!("+{}", added.join(", +"));
                let hosts = hosts_for_approval(&connector);
                self.approve_dev_build(&id, &file, hosts.clone()).await?;
                // A warning: the author should see their connector reach somewhere new, and
                // that a gateway serving it will ask its operator to approve it.
                tracing::warn!(
                    connector = %id,
                    %added,
                    hosts = %hosts.join(", "),
                    "sluice dev approved the new outbound hosts of a connector it serves (`sluice serve` \
                     waits for `sluice connectors approve`)"
                );
                Ok(connector)
            }
            // The author's own build going back to an id it had (a rename undone), or to one no
            // file serves any more: under `sluice dev` that is no takeover. A connector another
            // file serves is still not taken over, not even by the author's build.
            HostCheck::FileOfAnother(other)
                if self.built_by_this_dev_session(path) && !self.served_by_a_file(&id).await? =>
            {
                self.approve_dev_build(&id, &file, hosts_for_approval(&connector))
                    .await?;
                tracing::warn!(
                    connector = %id,
                    %file,
                    was = %other,
                    "sluice dev let its own build serve a connector no other file serves (`sluice serve` \
                     waits for `sluice connectors approve --file`)"
                );
                Ok(connector)
            }
            HostCheck::FileOfAnother(other) => Err(FailedLoad {
                error: format!(
                    "{file} was approved as connector `{other}` and now declares `{id}`, another connector \
                     this gateway knows (its connections' credentials would go to this file's code): \
                     approve it with `sluice connectors approve {id} --file {file}` (the gateway's log has \
                     the whole command)"
                ),
                log_hint: Some(format!(
                    "approve it with `{} {id} --file {file}`",
                    self.approve_command
                )),
                id: Some(id),
                ..FailedLoad::default()
            }),
            HostCheck::SecondFile(serving) => Err(FailedLoad {
                error: format!(
                    "{file} declares connector `{id}`, which {serving} serves (its connections' credentials \
                     would go to this file's code): if this file is meant to serve it, approve it with \
                     `sluice connectors approve {id} --file {file}` (the gateway's log has the whole command)"
                ),
                log_hint: Some(format!(
                    "approve it with `{} {id} --file {file}`",
                    self.approve_command
                )),
                id: Some(id),
                ..FailedLoad::default()
            }),
            HostCheck::NeedsApproval(added) => Err(FailedLoad {
                error: format!(
                    "{id} {} asks for outbound hosts that were never approved: +{}; approve them with \
                     `sluice connectors approve {id}` (the gateway's log has the whole command)",
                    connector.manifest.version,
                    added.join(", +"),
                ),
                log_hint: Some(format!("approve them with `{} {id}`", self.approve_command)),
                id: Some(id),
                ..FailedLoad::default()
            }),
        }
    }
}

/// How approvals name a component file: by its name in the plugins directory, so that a
/// directory moved or mounted elsewhere keeps them.
pub fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Every origin the host will talk to for a connector: its declared hosts and, for OAuth, the
/// provider's authorize and token endpoints — the token endpoint receives the operator's client
/// secret and users' refresh tokens, so a new version that moves it needs approval too — and
/// where the credential goes (its base URL's origin) and how (a header, the query): a new
/// version that sends users' credentials to another of its allowed hosts, or puts them in the
/// URL where upstream logs keep them, needs approval as well.
pub fn hosts_for_approval(connector: &LoadedConnector) -> Vec<String> {
    let manifest = &connector.manifest;
    let oauth = match &manifest.auth {
        crate::runtime::manifest::AuthScheme::OAuth2(config) => {
            vec![config.authorize_url.as_str(), config.token_url.as_str()]
        }
        _ => Vec::new(),
    };
    let mut hosts = approval_set(connector.declared_hosts.iter().map(ToString::to_string), &oauth);
    if let Some(placement) = manifest.auth.placement() {
        hosts.push(format!(
            "{CREDENTIAL_ENTRY}{}",
            manifest.base_url.origin().ascii_serialization()
        ));
        hosts.push(format!("{PLACEMENT_ENTRY}{placement}"));
    }
    hosts
}

fn approval_set(declared: impl Iterator<Item = String>, oauth_endpoints: &[&str]) -> Vec<String> {
    let mut hosts: Vec<String> = declared.collect();
    for endpoint in oauth_endpoints {
        let origin = url::Url::parse(endpoint)
            .map(|url| url.origin().ascii_serialization())
            .unwrap_or_else(|_| (*endpoint).to_owned());
        let entry = format!("oauth {origin}");
        if !hosts.contains(&entry) {
            hosts.push(entry);
        }
    }
    hosts
}

/// Load every `*.wasm` file in `dir` into `registry`; failures are recorded, not fatal.
pub async fn load_directory(loader: &Loader, registry: &Registry, dir: &Path) -> anyhow::Result<()> {
    for path in component_files(dir).await? {
        load_into(loader, registry, &path).await;
    }
    Ok(())
}

/// Load `path` and swap it in; on failure record it and keep whatever version was serving.
/// Returns whether a new version is now serving.
pub async fn load_into(loader: &Loader, registry: &Registry, path: &Path) -> bool {
    let loaded = loader.load_file(path).await;
    let ok = loaded.is_ok();
    let serving = swap_in(loader, registry, path, loaded).await;
    // Counted once the registry shows the outcome: whoever reads the count finds it there.
    loader.metrics.record_load(ok);
    serving
}

/// The actions `new` adds (`+name`) and drops (`-name`) against `old`, if any.
fn changed_actions(old: &LoadedConnector, new: &LoadedConnector) -> Option<String> {
    let names = |connector: &LoadedConnector| -> Vec<String> {
        connector
            .manifest
            .endpoints
            .iter()
            .map(|e| e.name.clone())
            .collect()
    };
    action_changes(&names(old), &names(new))
}

/// `+name` for each action in `after` only, `-name` for each in `before` only.
fn action_changes(before: &[String], after: &[String]) -> Option<String> {
    let before: std::collections::BTreeSet<&String> = before.iter().collect();
    let after: std::collections::BTreeSet<&String> = after.iter().collect();
    let added = after.difference(&before).map(|name| format!("+{name}"));
    let dropped = before.difference(&after).map(|name| format!("-{name}"));
    let changes: Vec<String> = added.chain(dropped).collect();
    (!changes.is_empty()).then(|| changes.join(", "))
}

/// Put a loaded connector in the registry (unless an older file of the same id keeps serving),
/// or record why `path` failed; returns whether a new version is now serving.
async fn swap_in(
    loader: &Loader,
    registry: &Registry,
    path: &Path,
    loaded: Result<LoadedConnector, FailedLoad>,
) -> bool {
    match loaded {
        Ok(connector) => {
            tracing::info!(
                id = %connector.manifest.id,
                version = %connector.manifest.version,
                hash = %&connector.content_hash[..12],
                file = %path.display(),
                "connector loaded"
            );
            let id = connector.manifest.id.clone();
            if connector.manifest.endpoints.is_empty() {
                tracing::warn!(%id, "the connector declares no actions: nothing can call it");
            }
            for endpoint in &connector.manifest.endpoints {
                for at in crate::runtime::manifest::nullable_keywords(&endpoint.params_schema) {
                    tracing::warn!(
                        %id,
                        action = %endpoint.name,
                        %at,
                        "the params schema says `nullable`, OpenAPI 3.0's keyword, which JSON Schema \
                         ignores: null is refused there; allow it with `\"type\": [\"…\", \"null\"]`"
                    );
                }
            }
            let previous = registry.get(&id);
            if let Some(changed) = previous
                .as_ref()
                .and_then(|previous| changed_actions(previous, &connector))
            {
                // A caller of a renamed action gets a 404: the author should see the rename.
                tracing::info!(%id, actions = %changed, "the new version's actions differ");
            }
            // Two files with one id, unless the other is gone: a file renamed, whose new name
            // simply takes over.
            if let Some(previous) = previous
                && let Some(previous_file) = previous.source.as_deref().filter(|file| *file != path)
                && previous_file.exists()
            {
                let serves = written_after(path, previous_file).await;
                let (serving, shadowed) = if serves {
                    (path, previous_file)
                } else {
                    (previous_file, path)
                };
                tracing::warn!(
                    %id,
                    serving = %serving.display(),
                    shadowed = %shadowed.display(),
                    "two files declare the same connector id; the one written last serves it, the other takes over if it is removed"
                );
                if !serves {
                    registry.clear_failure(path);
                    log_removed(registry.shadow(path, id.clone()), path, &id);
                    return false;
                }
            }
            for (action_key, other) in registry.shared_action_keys(&connector) {
                tracing::warn!(id = %connector.manifest.id, %other, %action_key, "two connectors' actions share an action id; the catalog asks callers to name them by route");
            }
            loader.metrics.start_connector_series(&connector.manifest);
            registry.clear_failure(path);
            log_removed(registry.insert(connector), path, &id);
            true
        }
        Err(error) => {
            // `hint` only when there is one: an empty field on every other line reads as a
            // hint that went missing.
            let serving = registry.from_source(path).is_some();
            let message = match serving {
                true => "connector failed to load; the previous version keeps serving",
                false => "connector failed to load",
            };
            match error.log_hint.as_deref() {
                Some(hint) => tracing::error!(file = %path.display(), %error, hint, "{message}"),
                None => tracing::error!(file = %path.display(), %error, "{message}"),
            }
            registry.record_failure(path, error, content_hash_of(path).await);
            false
        }
    }
}

/// Log the ids `path` no longer provides now that it declares `now`.
fn log_removed(removed: Vec<String>, path: &Path, now: &str) {
    for id in removed {
        tracing::info!(%id, file = %path.display(), %now, "connector removed: its file now declares another connector");
    }
}

/// Whether `candidate` was written after `serving`, two files declaring one connector id: the
/// one written last serves, so the same file serves whether they were written while the
/// gateway ran or before it started, and whatever order a rescan meets them in. Equal times go
/// to the later name; a serving file that is gone (its removal on its way) loses.
async fn written_after(candidate: &Path, serving: &Path) -> bool {
    let modified = |path: &Path| {
        let path = path.to_owned();
        async move { tokio::fs::metadata(path).await.and_then(|m| m.modified()).ok() }
    };
    match (modified(candidate).await, modified(serving).await) {
        (Some(candidate_at), Some(serving_at)) => (candidate_at, candidate) > (serving_at, serving),
        (_, None) => true,
        (None, Some(_)) => false,
    }
}

/// SHA-256 of the file at `path`, if it can be read as a component.
async fn content_hash_of(path: &Path) -> Option<String> {
    let bytes = read_component(path).await.ok()?;
    Some(crate::vault::crypto::sha256_hex(&bytes))
}

/// The bytes of the component file at `path`, at most [`MAX_COMPONENT_BYTES`] of them. Only a
/// regular file (or a link to one): a FIFO would block the reload task at `open`, and a device
/// such as `/dev/zero` (whose size reads as 0) would never end.
pub(crate) async fn read_component(path: &Path) -> Result<Vec<u8>, String> {
    use tokio::io::AsyncReadExt;
    let too_large = |size: u64| {
        format!(
            "the file is {} MiB; a component may be at most {} MiB",
            size >> 20,
            MAX_COMPONENT_BYTES >> 20
        )
    };
    let metadata = tokio::fs::metadata(path)
        .await
        .map_err(|e| format!("cannot read file: {e}"))?;
    if !metadata.is_file() {
        return Err("it is not a regular file".into());
    }
    if metadata.len() > MAX_COMPONENT_BYTES {
        return Err(too_large(metadata.len()));
    }
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| format!("cannot read file: {e}"))?;
    // Bounded however the file grows meanwhile.
    let mut bytes = Vec::with_capacity(metadata.len() as usize);
    file.take(MAX_COMPONENT_BYTES + 1)
        .read_to_end(&mut bytes)
        .await
        .map_err(|e| format!("cannot read file: {e}"))?;
    if bytes.len() as u64 > MAX_COMPONENT_BYTES {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

/// The `*.wasm` files directly in `dir`, sorted.
pub async fn component_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
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
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_versions_renamed_actions_are_named() {
        let names = |list: &[&str]| list.iter().map(|name| name.to_string()).collect::<Vec<_>>();
        assert_eq!(
            action_changes(&names(&["forecast", "today"]), &names(&["get_forecast", "today"])).as_deref(),
            Some("+get_forecast, -forecast")
        );
        assert_eq!(action_changes(&names(&["today"]), &names(&["today"])), None);
    }

    /// A FIFO or a link to a device named `*.wasm` is refused at once: reading it would block
    /// the reload task, or never end.
    #[tokio::test]
    async fn only_regular_files_are_read_as_components() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let fifo = dir.path().join("fifo.wasm");
        anyhow::ensure!(
            std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()?
                .success(),
            "mkfifo"
        );
        let zeros = dir.path().join("zeros.wasm");
        std::os::unix::fs::symlink("/dev/zero", &zeros)?;
        let regular = dir.path().join("regular.wasm");
        std::fs::write(&regular, b"\0asm")?;
        for special in [&fifo, &zeros] {
            let read =
                tokio::time::timeout(std::time::Duration::from_secs(5), read_component(special)).await?;
            assert_eq!(
                read,
                Err("it is not a regular file".to_owned()),
                "{}",
                special.display()
            );
        }
        assert_eq!(read_component(&regular).await.as_deref(), Ok(&b"\0asm"[..]));
        Ok(())
    }

    #[test]
    fn oauth_endpoints_join_the_hosts_to_approve() {
        let hosts = approval_set(
            ["https://gmail.googleapis.com".to_owned()].into_iter(),
            &[
                "https://accounts.google.com/o/oauth2/v2/auth",
                "https://oauth2.googleapis.com/token",
                "https://oauth2.googleapis.com/other",
            ],
        );
        assert_eq!(
            hosts,
            [
                "https://gmail.googleapis.com",
                "oauth https://accounts.google.com",
                "oauth https://oauth2.googleapis.com"
            ]
        );
    }
}
