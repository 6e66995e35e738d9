//! The connector developer's loop: `sluice dev` builds every connector crate under a sources
//! directory to a component, serves them with hot reload, and rebuilds a crate whenever one of
//! its files changes; `sluice new` scaffolds a connector from a template: a Rust crate, or a
//! JavaScript or Python directory with a `build.sh` (templates in `host/templates/`).
//!
//! Builds run `cargo build --release --target wasm32-wasip2` on the crate. Connectors in other
//! languages (Python, JavaScript, C, ...) are directories with a `build.sh` and no
//! `Cargo.toml`; they are built with `bash build.sh <components dir>`, the same entry point
//! `just plugins` and the test fixtures use. A failed build prints the compiler's errors and
//! leaves the last good component serving; the gateway also shows it in `GET /v1/plugins`
//! (`builds`) until the connector builds again, for an editor or agent that reads no terminal.

use anyhow::{Context, bail};
use notify::{RecursiveMode, Watcher};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::process::Command;
use tokio::sync::mpsc;

mod templates;

/// Most bytes of a failed build's output kept for `GET /v1/plugins` (its end: the errors).
const MAX_BUILD_OUTPUT: usize = 8 << 10;

/// A connector whose last build failed.
#[derive(Debug, Clone)]
pub struct BuildFailure {
    /// Its source directory's name.
    pub source: String,
    /// The end of the build's output.
    pub output: String,
    /// When (Unix seconds).
    pub at: i64,
}

/// The connectors whose last build failed, by source directory, and the components this
/// session published; shared with the gateway.
#[derive(Debug, Clone, Default)]
pub struct BuildFailures(std::sync::Arc<std::sync::Mutex<Builds>>);

#[derive(Debug, Default)]
struct Builds {
    failed: BTreeMap<PathBuf, BuildFailure>,
    published: std::collections::BTreeSet<PathBuf>,
}

impl BuildFailures {
    /// Note how building `dir` into `component` went.
    fn record(&self, dir: &Path, component: Option<PathBuf>, outcome: Result<(), String>) {
        let components = component.as_deref().and_then(Path::parent).map(Path::to_owned);
        let mut builds = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let failures = &mut builds.failed;
        match outcome {
            Ok(()) => {
                failures.remove(dir);
                builds.published.extend(component);
            }
            Err(output) => {
                let source = dir
                    .file_name()
                    .unwrap_or(dir.as_os_str())
                    .to_string_lossy()
                    .into_owned();
                // `GET /v1/plugins` takes no key: paths are named from the sources directory,
                // and from the components directory the gateway serves.
                let mut output = output;
                for root in [dir.parent(), components.as_deref()].into_iter().flatten() {
                    output = output.replace(&format!("{}/", root.display()), "");
                }
                let output = last_bytes(&output, MAX_BUILD_OUTPUT).to_owned();
                failures.insert(
                    dir.to_owned(),
                    BuildFailure {
                        source,
                        output,
                        at: crate::vault::now(),
                    },
                );
            }
        }
    }

    /// Forget the failures of source directories that are gone.
    fn forget_deleted_sources(&self) {
        let mut builds = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        builds.failed.retain(|dir, _| dir.exists());
    }

    /// The failures now, in source order.
    pub fn current(&self) -> Vec<BuildFailure> {
        let builds = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        builds.failed.values().cloned().collect()
    }

    /// Whether this session built and published `component` (not a file that was there).
    pub fn published(&self, component: &Path) -> bool {
        let builds = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        builds.published.contains(component)
    }
}

/// The last `limit` bytes of `text`, from a character boundary.
fn last_bytes(text: &str, limit: usize) -> &str {
    let mut start = text.len().saturating_sub(limit);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// A connector crate found under the sources directory.
#[derive(Debug, Clone)]
pub struct ConnectorCrate {
    /// Its directory.
    pub dir: PathBuf,
    /// The `cdylib` target's name (the component's file stem).
    pub lib_name: String,
    /// Where cargo puts the component.
    pub artifact: PathBuf,
}

/// Every directory directly under `sources` with a `Cargo.toml` and a `cdylib` target, and
/// those whose `Cargo.toml` cargo cannot read (with cargo's words).
pub async fn discover(sources: &Path) -> anyhow::Result<Vec<DevConnector>> {
    let mut crates = Vec::new();
    let mut entries = tokio::fs::read_dir(sources)
        .await
        .with_context(|| format!("reading connector sources in {}", sources.display()))?;
    let mut dirs = Vec::new();
    while let Some(entry) = entries.next_entry().await? {
        if entry.path().join("Cargo.toml").is_file() {
            dirs.push(entry.path());
        }
    }
    dirs.sort();
    for dir in dirs {
        match describe_crate(&dir).await {
            Ok(Described::Connector(found)) => crates.push(DevConnector::Crate(found)),
            Ok(Described::NotAConnector) => {}
            // Reported as a failed build (for an editor or agent that reads no terminal too);
            // a last good build keeps serving.
            Ok(Described::Unreadable(error)) => crates.push(DevConnector::Unbuildable {
                why: format!("cargo cannot read {}: {error}", dir.join("Cargo.toml").display()),
                dir,
            }),
            Err(error) => {
                tracing::warn!(dir = %dir.display(), error = %format!("{error:#}"), "skipping a crate cargo does not describe")
            }
        }
    }
    Ok(crates)
}

/// What cargo says of a directory with a `Cargo.toml`.
enum Described {
    /// A crate with a `cdylib` target: a connector.
    Connector(ConnectorCrate),
    /// A crate that builds no component.
    NotAConnector,
    /// A manifest cargo refuses to read, with its words.
    Unreadable(String),
}

/// Ask cargo for the crate's `cdylib` name and target directory. (Errors: cargo could not be
/// run, or describes no such crate, as for a workspace's own manifest.)
async fn describe_crate(dir: &Path) -> anyhow::Result<Described> {
    let output = Command::new(cargo())
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--manifest-path",
        ])
        .arg(dir.join("Cargo.toml"))
        .output()
        .await
        .context("running cargo metadata")?;
    if !output.status.success() {
        return Ok(Described::Unreadable(
            String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        ));
    }
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let manifest = dir.join("Cargo.toml").canonicalize()?;
    let package = metadata["packages"]
        .as_array()
        .and_then(|packages| {
            packages.iter().find(|p| {
                p["manifest_path"]
                    .as_str()
                    .and_then(|m| Path::new(m).canonicalize().ok())
                    .is_some_and(|m| m == manifest)
            })
        })
        .context("cargo metadata does not list the crate")?;
    let lib_name = package["targets"].as_array().and_then(|targets| {
        targets.iter().find_map(|t| {
            let is_cdylib = t["crate_types"]
                .as_array()
                .is_some_and(|types| types.iter().any(|k| k == "cdylib"));
            is_cdylib
                .then(|| t["name"].as_str().map(|n| n.replace('-', "_")))
                .flatten()
        })
    });
    let Some(lib_name) = lib_name else {
        // A crate using the SDK is meant to be a connector: say why it is not built.
        let uses_the_sdk = package["dependencies"]
            .as_array()
            .is_some_and(|dependencies| dependencies.iter().any(|d| d["name"] == "sluice-sdk"));
        if uses_the_sdk {
            tracing::warn!(
                dir = %dir.display(),
                "this crate uses sluice-sdk but builds no component: add `[lib] crate-type = [\"cdylib\"]` to its Cargo.toml"
            );
        }
        return Ok(Described::NotAConnector);
    };
    let target_dir = metadata["target_directory"]
        .as_str()
        .context("no target directory")?;
    let artifact = Path::new(target_dir)
        .join("wasm32-wasip2")
        .join("release")
        .join(format!("{lib_name}.wasm"));
    Ok(Described::Connector(ConnectorCrate {
        dir: dir.to_owned(),
        lib_name,
        artifact,
    }))
}

/// A connector in another language: a directory with a `build.sh` that writes
/// `<out-dir>/<name>.wasm` (see `plugins/lib/toolchain.sh` for the contract).
#[derive(Debug, Clone)]
pub struct ScriptConnector {
    /// Its directory.
    pub dir: PathBuf,
}

impl ScriptConnector {
    /// The component its `build.sh` writes into `components`: named after its directory.
    pub fn component(&self, components: &Path) -> PathBuf {
        let name = self.dir.file_name().unwrap_or_default().to_string_lossy();
        components.join(format!("{name}.wasm"))
    }
}

impl ConnectorCrate {
    /// The component its build publishes into `components`: named after its library.
    pub fn component(&self, components: &Path) -> PathBuf {
        components.join(format!("{}.wasm", self.lib_name))
    }
}

/// What `build.sh` exits with when its language's toolchain is missing.
const SCRIPT_SKIPPED: i32 = 3;

/// Every directory directly under `sources` with a `build.sh` and no `Cargo.toml`.
pub async fn discover_scripts(sources: &Path) -> anyhow::Result<Vec<ScriptConnector>> {
    let mut found = Vec::new();
    let mut entries = tokio::fs::read_dir(sources)
        .await
        .with_context(|| format!("reading connector sources in {}", sources.display()))?;
    while let Some(entry) = entries.next_entry().await? {
        let dir = entry.path();
        if dir.join("build.sh").is_file() && !dir.join("Cargo.toml").exists() {
            found.push(ScriptConnector { dir });
        }
    }
    found.sort_by(|a, b| a.dir.cmp(&b.dir));
    Ok(found)
}

/// Longest a `build.sh` may run before it is stopped: the builds run one after another, and
/// a hung one would hold every other connector's rebuild. A first Python build, installing
/// its tools, takes a few minutes at most.
const SCRIPT_BUILD_TIMEOUT: Duration = Duration::from_secs(600);

/// Run the connector's `build.sh` into a staging directory of its own, then publish the one
/// component it must write, `<its directory's name>.wasm`, into `components` by rename. A
/// script that writes another name (a copied directory whose `build.sh` still names the
/// original) fails, rather than overwrite another connector's component. Returns the build's
/// output when it failed; a missing toolchain is reported loudly and counts as not built.
pub async fn build_script(connector: &ScriptConnector, components: &Path) -> Result<(), String> {
    let started = std::time::Instant::now();
    let component = connector.component(components);
    let name = component
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    // Inside `components`, so that publishing is a rename; a directory, which the gateway's
    // watch of `components` does not look into.
    let staging = components.join(format!(".build-{}", name.trim_end_matches(".wasm")));
    let _ = tokio::fs::remove_dir_all(&staging).await;
    if let Err(error) = tokio::fs::create_dir_all(&staging).await {
        let failure = format!("could not make {}: {error}", staging.display());
        eprintln!("sluice dev: {failure}");
        return Err(failure);
    }
    eprintln!("sluice dev: building {} …", connector.dir.display());
    let output = run_build_script(connector, &staging).await;
    let published = match &output {
        Ok(output) if output.status.success() => Some(publish_staged(&staging, &name, &component).await),
        _ => None,
    };
    let _ = tokio::fs::remove_dir_all(&staging).await;
    let output = output?;
    let log = String::from_utf8_lossy(&output.stderr);
    match output.status.code() {
        Some(0) => {
            if let Some(Err(failure)) = published {
                eprintln!(
                    "sluice dev: building {} failed: {failure}",
                    connector.dir.display()
                );
                return Err(failure);
            }
            eprintln!(
                "sluice dev: built {} in {} ms",
                connector.dir.display(),
                started.elapsed().as_millis()
            );
            Ok(())
        }
        Some(SCRIPT_SKIPPED) => {
            eprintln!(
                "sluice dev: SKIPPED {}: its toolchain is missing\n{log}",
                connector.dir.display()
            );
            Err(format!("its toolchain is missing\n{log}"))
        }
        _ => {
            let output = format!("{}{log}", String::from_utf8_lossy(&output.stdout));
            eprintln!(
                "sluice dev: building {} failed; {}\n{output}",
                connector.dir.display(),
                what_serves(&component),
            );
            Err(output)
        }
    }
}

/// Run the connector's `build.sh` into `staging`, for [`SCRIPT_BUILD_TIMEOUT`] at most; what
/// it printed and how it ended, or why it could not run or finish.
async fn run_build_script(
    connector: &ScriptConnector,
    staging: &Path,
) -> Result<std::process::Output, String> {
    let output = Command::new("bash")
        .arg(connector.dir.join("build.sh"))
        .arg(staging)
        .current_dir(&connector.dir)
        .kill_on_drop(true)
        .output();
    let failure = match tokio::time::timeout(SCRIPT_BUILD_TIMEOUT, output).await {
        Ok(Ok(output)) => return Ok(output),
        Ok(Err(error)) => format!("could not run {}/build.sh: {error}", connector.dir.display()),
        Err(_) => format!(
            "{}/build.sh ran for {} s and was stopped: the other connectors' builds wait for it",
            connector.dir.display(),
            SCRIPT_BUILD_TIMEOUT.as_secs()
        ),
    };
    eprintln!("sluice dev: {failure}");
    Err(failure)
}

/// Move the component `name` a build wrote into `staging` to `component`; say what it wrote
/// instead when it is not there.
async fn publish_staged(staging: &Path, name: &str, component: &Path) -> Result<(), String> {
    let staged = staging.join(name);
    if staged.is_file() {
        return tokio::fs::rename(&staged, component)
            .await
            .map_err(|error| format!("could not publish {}: {error}", component.display()));
    }
    let mut written = Vec::new();
    if let Ok(mut entries) = tokio::fs::read_dir(staging).await {
        while let Ok(Some(entry)) = entries.next_entry().await {
            written.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    written.sort();
    let instead = match written.is_empty() {
        true => "nothing".to_owned(),
        false => written.join(", "),
    };
    Err(format!(
        "build.sh ended well but wrote {instead}, not {name}: a build.sh writes <out-dir>/<its directory's \
         name>.wasm (a copied build.sh may still name the connector it was copied from)"
    ))
}

/// Whether a changed path is a build by-product rather than a source edit: cargo's `target/`,
/// Python's bytecode caches, npm's `node_modules/`, and hidden files (editor swap files,
/// `.partial` outputs).
fn is_build_noise(path: &Path, connector_dir: &Path) -> bool {
    path.strip_prefix(connector_dir).is_ok_and(|relative| {
        relative.components().any(|part| {
            let part = part.as_os_str().to_string_lossy();
            part == "target" || part == "__pycache__" || part == "node_modules" || part.starts_with('.')
        })
    })
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// Build `krate` and publish its component into `components` (by rename, so the gateway's
/// watcher never sees a partial file). Returns the build's output when it failed.
pub async fn build(krate: &ConnectorCrate, components: &Path) -> Result<(), String> {
    let started = std::time::Instant::now();
    let output = Command::new(cargo())
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--manifest-path",
        ])
        .arg(krate.dir.join("Cargo.toml"))
        .output()
        .await;
    let output = match output {
        Ok(output) => output,
        Err(error) => {
            let failure = format!("could not run cargo for {}: {error}", krate.dir.display());
            eprintln!("sluice dev: {failure}");
            return Err(failure);
        }
    };
    if !output.status.success() {
        let errors = String::from_utf8_lossy(&output.stderr).into_owned();
        eprintln!(
            "sluice dev: building {} failed; {}\n{errors}",
            krate.dir.display(),
            what_serves(&krate.component(components)),
        );
        return Err(errors);
    }
    let target = krate.component(components);
    let temporary = components.join(format!(".{}.wasm.partial", krate.lib_name));
    let published = tokio::fs::copy(&krate.artifact, &temporary).await.is_ok()
        && tokio::fs::rename(&temporary, &target).await.is_ok();
    if !published {
        let failure = format!("could not publish {}", target.display());
        eprintln!("sluice dev: {failure}");
        return Err(failure);
    }
    eprintln!(
        "sluice dev: built {} in {} ms",
        krate.lib_name,
        started.elapsed().as_millis()
    );
    // A build that succeeds may still say something worth reading (an unused result, a
    // deprecated call): the author sees it as a plain `cargo build` would have shown it.
    let said = compiler_messages(&String::from_utf8_lossy(&output.stderr));
    if !said.is_empty() {
        eprintln!("{said}");
    }
    Ok(())
}

/// What a failed build leaves serving, given the component it would have replaced.
fn what_serves(component: &Path) -> &'static str {
    if component.is_file() {
        "the last good version keeps serving"
    } else {
        "nothing is served from it until it builds"
    }
}

/// Cargo's output without its progress lines (`   Compiling x`, `    Finished …`): what the
/// compiler said, warnings with their context, if anything.
fn compiler_messages(stderr: &str) -> String {
    let is_progress = |line: &str| {
        let trimmed = line.trim_start();
        line.len() > trimmed.len()
            && trimmed.split_once(' ').is_some_and(|(verb, _)| {
                verb.len() > 1
                    && verb.starts_with(|c: char| c.is_ascii_uppercase())
                    && verb[1..].chars().all(|c| c.is_ascii_lowercase())
            })
    };
    stderr
        .lines()
        .filter(|line| !is_progress(line))
        .collect::<Vec<_>>()
        .join("\n")
        .trim()
        .to_owned()
}

/// A connector `sluice dev` builds: a Rust crate or a directory with a `build.sh`.
#[derive(Debug, Clone)]
pub enum DevConnector {
    /// Built with cargo.
    Crate(ConnectorCrate),
    /// Built with its `build.sh`.
    Script(ScriptConnector),
    /// A connector that cannot be built until it is mended: cargo cannot read its
    /// `Cargo.toml` (a typo, a half-saved file), or it would publish the component another
    /// source does (a crate copied as a backup keeps its library name).
    Unbuildable {
        /// Its directory.
        dir: PathBuf,
        /// Why, for the author.
        why: String,
    },
}

impl DevConnector {
    /// The directory whose files the connector is built from.
    pub fn dir(&self) -> &Path {
        match self {
            Self::Crate(krate) => &krate.dir,
            Self::Script(script) => &script.dir,
            Self::Unbuildable { dir, .. } => dir,
        }
    }

    /// The component its build publishes into `components`: the crate's library name, or for
    /// a `build.sh` directory its own name (the contract's `<out-dir>/<name>.wasm`); none for
    /// one that cannot be built.
    pub fn component(&self, components: &Path) -> Option<PathBuf> {
        match self {
            Self::Crate(krate) => Some(krate.component(components)),
            Self::Script(script) => Some(script.component(components)),
            Self::Unbuildable { .. } => None,
        }
    }

    /// Build it into `components`; returns the build's output when it failed.
    pub async fn build(&self, components: &Path) -> Result<(), String> {
        match self {
            Self::Crate(krate) => build(krate, components).await,
            Self::Script(script) => build_script(script, components).await,
            Self::Unbuildable { dir, why } => {
                eprintln!("sluice dev: cannot build {}: {why}", dir.display());
                Err(why.clone())
            }
        }
    }
}

/// Every connector under `sources`, crates first.
pub async fn discover_all(sources: &Path) -> anyhow::Result<Vec<DevConnector>> {
    let crates = discover(sources).await?.into_iter();
    let scripts = discover_scripts(sources)
        .await?
        .into_iter()
        .map(DevConnector::Script);
    Ok(one_publisher_per_component(crates.chain(scripts)))
}

/// `connectors`, where two or more would publish one component (a crate copied as a backup
/// keeps its library name) none of them built, each saying why: which is the original cannot
/// be told, and whichever built last would otherwise serve. The component already published
/// keeps serving until the author renames or removes one.
fn one_publisher_per_component(connectors: impl Iterator<Item = DevConnector>) -> Vec<DevConnector> {
    let connectors: Vec<DevConnector> = connectors.collect();
    let mut publishers: BTreeMap<PathBuf, Vec<PathBuf>> = BTreeMap::new();
    for connector in &connectors {
        if let Some(component) = connector.component(Path::new("")) {
            publishers
                .entry(component)
                .or_default()
                .push(connector.dir().to_owned());
        }
    }
    connectors
        .into_iter()
        .map(|connector| {
            let Some(component) = connector.component(Path::new("")) else {
                return connector;
            };
            let dir = connector.dir().to_owned();
            let others: Vec<String> = publishers[&component]
                .iter()
                .filter(|other| **other != dir)
                .map(|other| other.display().to_string())
                .collect();
            if others.is_empty() {
                return connector;
            }
            DevConnector::Unbuildable {
                why: format!(
                    "it would publish {} as {} does; give one of them another library name (`[lib] name` \
                     in Cargo.toml) or directory",
                    component.display(),
                    others.join(" and ")
                ),
                dir,
            }
        })
        .collect()
}

/// Build every connector once, then rebuild a connector whenever a file under it changes,
/// noting failed builds in `failures`. The returned watcher must be kept alive.
pub async fn start(
    sources: &Path,
    components: &Path,
    failures: BuildFailures,
) -> anyhow::Result<notify::RecommendedWatcher> {
    // The watcher reports absolute paths; connectors are found under the same absolute
    // directory, or no event would ever match one (`--sources plugins`, the default).
    let sources = &tokio::fs::canonicalize(sources)
        .await
        .with_context(|| format!("--sources {}", sources.display()))?;
    tokio::fs::create_dir_all(components).await?;
    // Each `build.sh` runs in its connector's directory: a relative output directory (the
    // default, `target/sluice-dev/connectors`) would land inside it.
    let components = &tokio::fs::canonicalize(components)
        .await
        .with_context(|| format!("--plugins {}", components.display()))?;
    // Watched before the first builds, which may take minutes (a Python connector's): a save
    // made meanwhile waits in the channel and is built next, not missed.
    let (sender, receiver) = mpsc::unbounded_channel::<PathBuf>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event
            && !matches!(event.kind, notify::EventKind::Access(_))
        {
            for path in event.paths {
                let _ = sender.send(path);
            }
        }
    })?;
    watcher.watch(sources, RecursiveMode::Recursive)?;
    let connectors = discover_all(sources).await?;
    if connectors.is_empty() {
        eprintln!("sluice dev: no connectors under {}", sources.display());
    }
    for connector in &connectors {
        let outcome = connector.build(components).await;
        failures.record(connector.dir(), connector.component(components), outcome);
    }
    // What this session built, by source directory: a directory deleted later takes its
    // component with it (only ones built here: `--plugins` may hold other files).
    let built: BTreeMap<PathBuf, PathBuf> = connectors
        .iter()
        .filter_map(|c| Some((c.dir().to_owned(), c.component(components)?)))
        .collect();
    tokio::spawn(rebuild_task(
        receiver,
        sources.to_owned(),
        components.to_owned(),
        built,
        failures,
    ));
    Ok(watcher)
}

async fn rebuild_task(
    mut events: mpsc::UnboundedReceiver<PathBuf>,
    sources: PathBuf,
    components: PathBuf,
    mut built: BTreeMap<PathBuf, PathBuf>,
    failures: BuildFailures,
) {
    while let Some(first) = events.recv().await {
        let mut changed = BTreeSet::from([first]);
        while let Ok(Some(path)) = tokio::time::timeout(Duration::from_millis(300), events.recv()).await {
            changed.insert(path);
        }
        // Build outputs (target/) change during builds: ignore them.
        let connectors = match discover_all(&sources).await {
            Ok(connectors) => connectors,
            Err(error) => {
                tracing::warn!(error = %format!("{error:#}"), "rediscovering connectors failed");
                continue;
            }
        };
        remove_components_of_deleted_sources(&mut built, &connectors, &components).await;
        failures.forget_deleted_sources();
        for connector in connectors {
            let dir = connector.dir();
            let touched = changed
                .iter()
                .any(|path| path.starts_with(dir) && !is_build_noise(path, dir));
            if touched {
                let outcome = connector.build(&components).await;
                let component = connector.component(&components);
                failures.record(dir, component.clone(), outcome);
                if let Some(component) = component {
                    built.insert(dir.to_owned(), component);
                }
            }
        }
        // Events that came during the builds are handled next: a save made while a build ran
        // needs a build of its own; what builds write themselves is build noise, skipped above.
    }
}

/// Remove the components built from source directories that are gone, so the gateway unloads
/// them (they would otherwise be served until removed by hand, restarts included).
async fn remove_components_of_deleted_sources(
    built: &mut BTreeMap<PathBuf, PathBuf>,
    found: &[DevConnector],
    components: &Path,
) {
    // Gone, not merely unreadable: a crate cargo cannot read for a moment (a half-saved
    // Cargo.toml) is still found, as a failed build, and its last good build keeps serving.
    let gone: Vec<PathBuf> = built
        .keys()
        .filter(|dir| !dir.exists() && found.iter().all(|c| c.dir() != dir.as_path()))
        .cloned()
        .collect();
    for dir in gone {
        let Some(component) = built.remove(&dir) else {
            continue;
        };
        // A source still here publishes it (the directory was renamed): its next build
        // replaces it, and until then it keeps serving.
        if found
            .iter()
            .any(|c| c.component(components).as_ref() == Some(&component))
        {
            continue;
        }
        match tokio::fs::remove_file(&component).await {
            Ok(()) => eprintln!(
                "sluice dev: {} is gone; removed {} (the gateway unloads it)",
                dir.display(),
                component.display()
            ),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => eprintln!("sluice dev: could not remove {}: {error}", component.display()),
        }
    }
}

/// The lines of `[section]` in a Cargo.toml, trimmed, without blanks and comments. A line scan
/// rather than a TOML parser: enough for the two questions [`scaffold`] asks, for files written
/// the usual way, without a dependency.
fn toml_section_lines<'a>(text: &'a str, section: &str) -> Vec<&'a str> {
    let mut inside = false;
    let mut lines = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            inside = line.trim_matches(['[', ']']).trim() == section;
        } else if inside && !line.is_empty() && !line.starts_with('#') {
            lines.push(line);
        }
    }
    lines
}

/// The key of a `key = value` line.
fn toml_key(line: &str) -> &str {
    line.split('=').next().unwrap_or_default().trim()
}

/// The cargo workspace a directory under `sources` would belong to: the nearest `Cargo.toml`
/// above with a `[workspace]`, as cargo looks for it, with its directory.
fn enclosing_workspace(sources: &Path) -> anyhow::Result<Option<(PathBuf, String)>> {
    let sources = std::path::absolute(sources)?;
    for dir in sources.ancestors() {
        let Ok(text) = std::fs::read_to_string(dir.join("Cargo.toml")) else {
            continue;
        };
        if text.lines().any(|line| line.trim() == "[workspace]") {
            return Ok(Some((dir.to_owned(), text)));
        }
    }
    Ok(None)
}

/// A new crate inside a cargo workspace that does not provide the SDK (a project of the
/// author's own) belongs to it as cargo sees it, and cargo refuses to build a crate a workspace
/// does not list: say what to add, rather than let the first build fail.
fn foreign_workspace_note(sources: &Path, krate: &Path) -> anyhow::Result<Option<String>> {
    if workspace_provides_sdk(sources)? {
        return Ok(None);
    }
    let Some((workspace, text)) = enclosing_workspace(sources)? else {
        return Ok(None);
    };
    let name = krate.file_name().unwrap_or_default().to_string_lossy();
    let listed = toml_section_lines(&text, "workspace")
        .iter()
        .any(|line| line.contains(&*name) || line.contains('*'));
    if listed {
        return Ok(None);
    }
    Ok(Some(format!(
        "{} is inside the cargo workspace of {}, which does not list it: add it to that \
         workspace's `members` (or `exclude`), or cargo refuses to build it",
        krate.display(),
        workspace.join("Cargo.toml").display()
    )))
}

/// Whether the workspace a new crate under `sources` would belong to provides `sluice-sdk` (as
/// the Sluice repository's does), so that `sluice-sdk = { workspace = true }` builds.
fn workspace_provides_sdk(sources: &Path) -> anyhow::Result<bool> {
    let Some((_, text)) = enclosing_workspace(sources)? else {
        return Ok(false);
    };
    Ok(toml_section_lines(&text, "workspace.dependencies")
        .iter()
        .any(|line| toml_key(line) == "sluice-sdk")
        || text
            .lines()
            .any(|line| line.trim() == "[workspace.dependencies.sluice-sdk]"))
}

/// The `sluice-sdk` crate at `--sdk path` (relative to the current directory), as an absolute
/// path; refused unless its Cargo.toml is that crate's.
fn sdk_crate(path: &Path) -> anyhow::Result<PathBuf> {
    let usage = "give the directory of the `sluice-sdk` crate (`sdk-guest` in the Sluice repository)";
    let text = std::fs::read_to_string(path.join("Cargo.toml"))
        .map_err(|_| anyhow::anyhow!("--sdk {}: there is no Cargo.toml there; {usage}", path.display()))?;
    let is_sdk = toml_section_lines(&text, "package")
        .iter()
        .any(|line| toml_key(line) == "name" && line.contains("\"sluice-sdk\""));
    if !is_sdk {
        bail!(
            "--sdk {}: its Cargo.toml is not the `sluice-sdk` crate's; {usage}",
            path.display()
        );
    }
    Ok(path.canonicalize()?)
}

/// `to` as a path relative to the directory `from` (both absolute and canonical).
fn relative_path(from: &Path, to: &Path) -> PathBuf {
    let from: Vec<_> = from.components().collect();
    let to: Vec<_> = to.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut relative = PathBuf::new();
    for _ in common..from.len() {
        relative.push("..");
    }
    relative.extend(&to[common..]);
    relative
}

/// A Rust name for connector `id`, which may hold `-` and start with a digit: the library's
/// name (`snake`) or the connector type's. Names Rust or cargo would refuse, and names the
/// template uses itself, get a prefix or suffix.
fn rust_name(id: &str, snake: bool) -> String {
    const KEYWORDS: &[&str] = &[
        "abstract", "as", "async", "await", "become", "box", "break", "const", "continue", "crate", "do",
        "dyn", "else", "enum", "extern", "false", "final", "fn", "for", "gen", "if", "impl", "in", "let",
        "loop", "macro", "match", "mod", "move", "mut", "override", "priv", "pub", "ref", "return", "self",
        "static", "struct", "super", "trait", "true", "try", "type", "typeof", "unsafe", "unsized", "use",
        "virtual", "where", "while", "yield",
    ];
    // What the template imports, defines or uses from the prelude: a connector type of the
    // same name would clash with it. And the crates it builds on: a library of the same name
    // would clash with them.
    const TAKEN_TYPES: &[&str] = &[
        "Auth",
        "Connector",
        "Endpoint",
        "Error",
        "Manifest",
        "Output",
        "Params",
        "GetItem",
        "Result",
        "String",
        "Option",
        "Vec",
        "Box",
        "Ok",
        "Err",
        "Some",
        "None",
        "Self",
    ];
    const TAKEN_LIBRARIES: &[&str] = &[
        "sluice_sdk",
        "serde",
        "serde_json",
        "std",
        "core",
        "alloc",
        "test",
        "proc_macro",
    ];
    let name: String = if snake {
        id.replace('-', "_")
    } else {
        id.split(['_', '-'])
            .map(|part| {
                let mut chars = part.chars();
                chars
                    .next()
                    .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                    .unwrap_or_default()
            })
            .collect()
    };
    let taken = match snake {
        true => TAKEN_LIBRARIES,
        false => TAKEN_TYPES,
    };
    let starts_well = name.starts_with(|c: char| c.is_ascii_alphabetic());
    let usable = starts_well && !KEYWORDS.contains(&name.as_str()) && !taken.contains(&name.as_str());
    match (usable, snake) {
        (true, _) => name,
        (false, true) => format!("connector_{name}"),
        // `Connector` itself is taken: `GetItemConnector`, `UnnamedConnector` (`_`).
        (false, false) if starts_well => format!("{name}Connector"),
        (false, false) if name.is_empty() => "UnnamedConnector".into(),
        (false, false) => format!("Connector{name}"),
    }
}

/// The language of the connector `sluice new` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Language {
    /// A crate on `sluice-sdk`, built with cargo.
    Rust,
    /// An ES module built with componentize-qjs (QuickJS).
    #[value(alias = "js")]
    Javascript,
    /// A module built with componentize-py.
    #[value(alias = "py")]
    Python,
}

impl Language {
    /// How people write its name.
    fn name(self) -> &'static str {
        match self {
            Self::Rust => "Rust",
            Self::Javascript => "JavaScript",
            Self::Python => "Python",
        }
    }
}

/// What `sluice new` wrote.
#[derive(Debug)]
pub struct Scaffolded {
    /// The new connector's directory.
    pub dir: PathBuf,
    /// What the author should know next (files written beside it, a workspace to adjust).
    pub notes: Vec<String>,
}

/// Create `<sources>/<name>/` from the template of `language`, a connector with example
/// actions ready to edit. `name` is the connector's id, checked as the gateway checks it at
/// load. Nothing that exists is overwritten.
pub fn scaffold(
    sources: &Path,
    name: &str,
    language: Language,
    sdk_path: Option<&Path>,
) -> anyhow::Result<Scaffolded> {
    crate::runtime::manifest::check_connector_id(name)
        .map_err(|reason| anyhow::anyhow!("`{name}` cannot be a connector id: {reason}"))?;
    let dir = sources.join(name);
    if dir.exists() {
        bail!("{} already exists", dir.display());
    }
    if language == Language::Rust {
        let dir = scaffold_crate(sources, name, sdk_path)?;
        let notes = foreign_workspace_note(sources, &dir)?.into_iter().collect();
        return Ok(Scaffolded { dir, notes });
    }
    if sdk_path.is_some() {
        bail!(
            "--sdk is for Rust connectors: a {} connector does not use `sluice-sdk`",
            language.name()
        );
    }
    templates::write_script_connector(sources, name, language)
}

/// [`scaffold`] for Rust: a crate whose `Connector` has one action, `get_item`.
fn scaffold_crate(sources: &Path, name: &str, sdk_path: Option<&Path>) -> anyhow::Result<PathBuf> {
    let dir = sources.join(name);
    let sdk_path = match sdk_path {
        Some(path) => Some(sdk_crate(path)?),
        None if workspace_provides_sdk(sources)? => None,
        None => bail!(
            "{} is not inside the Sluice workspace, so the new crate cannot take `sluice-sdk` from it: \
             pass --sdk <path>, the directory of the `sluice-sdk` crate (`sdk-guest` in the Sluice \
             repository)",
            sources.display()
        ),
    };
    std::fs::create_dir_all(dir.join("src"))?;
    let type_name = rust_name(name, false);
    let lib_name = rust_name(name, true);
    let sdk = match sdk_path {
        Some(path) => {
            // Relative to the new crate, where cargo resolves it, so that the two can move
            // together (as in a repository of one's own connectors).
            let relative = relative_path(&dir.canonicalize()?, &path);
            let relative = relative
                .to_str()
                .with_context(|| format!("--sdk {} is not valid UTF-8", path.display()))?;
            // A JSON string is a valid TOML basic string.
            format!("{{ path = {} }}", serde_json::to_string(relative)?)
        }
        None => "{ workspace = true }".to_owned(),
    };
    let manifest = format!(
        r#"[package]
name = "sluice-connector-{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
name = "{lib_name}"
crate-type = ["cdylib", "rlib"]

[dependencies]
sluice-sdk = {sdk}
serde = {{ version = "1", features = ["derive"] }}
serde_json = "1"
"#
    );
    let source = format!(
        r#"//! The {name} connector.

use sluice_sdk::{{Auth, Connector, Endpoint, Error, Manifest, Output, Params, export_connector, http, json}};

struct {type_name};

/// What `get_item` takes; the gateway has checked params against its schema already.
#[derive(serde::Deserialize)]
struct GetItem {{
    id: String,
}}

impl Connector for {type_name} {{
    fn describe() -> Manifest {{
        Manifest::new("{name}", "{type_name}", env!("CARGO_PKG_VERSION"))
            .description("Describe what this connector talks to")
            .base_url("https://api.example.com")
            .auth(Auth::Bearer)
            .endpoint(
                Endpoint::new("get_item", "GET", "/items/{{id}}")
                    .title("Get an item")
                    .params_schema(json!({{"type": "object", "required": ["id"], "properties": {{"id": {{"type": "string", "minLength": 1}}}}}}))
                    .example("Item 42", json!({{"id": "42"}})),
            )
    }}

    fn invoke(endpoint: &str, params: Params) -> Result<Output, Error> {{
        match endpoint {{
            "get_item" => {{
                let GetItem {{ id }} = params.parse()?;
                Ok(http::get(format!("/items/{{}}", http::segment(&id))).send()?.into())
            }}
            other => Err(Error::unknown_endpoint(other)),
        }}
    }}
}}

export_connector!({type_name});

/// Run natively with `cargo test`: `sluice_sdk::testing` answers in place of the upstream.
#[cfg(test)]
mod tests {{
    use super::*;
    use sluice_sdk::testing;

    #[test]
    fn get_item_asks_for_the_item_and_hands_back_the_answer() {{
        let run = testing::run::<{type_name}>("get_item", json!({{"id": "a/42"}}), |_| {{
            testing::Reply::json(200, json!({{"id": "a/42", "name": "Widget"}}))
        }});
        assert_eq!(run.sent[0].path(), "/items/a%2F42");
        assert_eq!((run.status(), run.data()["name"].as_str()), (200, Some("Widget")));
    }}
}}
"#
    );
    std::fs::write(dir.join("Cargo.toml"), manifest)?;
    std::fs::write(dir.join("src").join("lib.rs"), source)?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Sluice workspace's `sluice-sdk` crate.
    fn sdk() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk-guest")
    }

    /// Two sources that would publish one component: neither is built, each says why.
    #[test]
    fn a_component_has_one_publisher() {
        let krate = |dir: &str, lib: &str| {
            DevConnector::Crate(ConnectorCrate {
                dir: PathBuf::from(dir),
                lib_name: lib.into(),
                artifact: PathBuf::from(format!("/target/{lib}.wasm")),
            })
        };
        let script = |dir: &str| {
            DevConnector::Script(ScriptConnector {
                dir: PathBuf::from(dir),
            })
        };
        let found = one_publisher_per_component(
            [
                krate("/src/weather", "weather"),
                krate("/src/weather-old", "weather"),
                krate("/src/other", "other"),
                script("/src/tool"),
            ]
            .into_iter(),
        );
        let published: Vec<Option<PathBuf>> = found.iter().map(|c| c.component(Path::new("/out"))).collect();
        assert_eq!(
            published,
            [
                None,
                None,
                Some(PathBuf::from("/out/other.wasm")),
                Some(PathBuf::from("/out/tool.wasm"))
            ]
        );
        let DevConnector::Unbuildable { dir, why } = &found[1] else {
            panic!("{:?}", found[1].dir())
        };
        assert_eq!(dir, Path::new("/src/weather-old"));
        assert!(why.contains("weather.wasm as /src/weather does"), "{why}");
        let DevConnector::Unbuildable { why, .. } = &found[0] else {
            panic!("{:?}", found[0].dir())
        };
        assert!(why.contains("weather.wasm as /src/weather-old does"), "{why}");
    }

    #[test]
    fn a_failed_build_says_whether_a_last_good_version_serves() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let component = dir.path().join("weather.wasm");
        assert_eq!(
            what_serves(&component),
            "nothing is served from it until it builds"
        );
        std::fs::write(&component, b"\0asm")?;
        assert_eq!(what_serves(&component), "the last good version keeps serving");
        Ok(())
    }

    /// `GET /v1/plugins` takes no key: a failed build's output names no directory of this
    /// machine, neither the sources' nor the served components'.
    #[test]
    fn a_failed_builds_output_names_no_paths_of_the_machine() {
        let failures = BuildFailures::default();
        let output = "error at /home/me/src/todo/connector.js:3\nOutput: /srv/plugins/.build-todo/todo.wasm";
        failures.record(
            Path::new("/home/me/src/todo"),
            Some(PathBuf::from("/srv/plugins/todo.wasm")),
            Err(output.into()),
        );
        let shown = &failures.current()[0];
        assert_eq!(
            (shown.source.as_str(), shown.output.as_str()),
            (
                "todo",
                "error at todo/connector.js:3\nOutput: .build-todo/todo.wasm"
            )
        );
    }

    #[test]
    fn scaffold_writes_a_crate_and_refuses_bad_names() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let created = scaffold(dir.path(), "acme_crm", Language::Rust, Some(&sdk()))?.dir;
        let source = std::fs::read_to_string(created.join("src/lib.rs"))?;
        assert!(source.contains("struct AcmeCrm;") && source.contains(r#"Manifest::new("acme_crm""#));
        let manifest = std::fs::read_to_string(created.join("Cargo.toml"))?;
        assert!(manifest.contains(r#"name = "acme_crm""#));
        assert!(
            scaffold(dir.path(), "acme_crm", Language::Rust, Some(&sdk())).is_err(),
            "no overwrite"
        );
        let long = "a".repeat(65);
        for bad in ["", "Acme", "a b", "../x", "vault", "plugins", long.as_str()] {
            let error = scaffold(dir.path(), bad, Language::Rust, Some(&sdk()))
                .expect_err(bad)
                .to_string();
            assert!(error.contains("cannot be a connector id"), "{bad}: {error}");
        }
        Ok(())
    }

    #[test]
    fn scaffold_takes_every_id_the_loader_takes() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let longest = "a".repeat(64);
        for (id, lib, type_name) in [
            ("acme-crm", "acme_crm", "AcmeCrm"),
            ("9lives", "connector_9lives", "Connector9lives"),
            ("self", "connector_self", "SelfConnector"),
            ("-", "connector__", "UnnamedConnector"),
            ("connector", "connector", "ConnectorConnector"),
            ("get-item", "get_item", "GetItemConnector"),
            ("result", "result", "ResultConnector"),
            ("ok", "ok", "OkConnector"),
            ("serde", "connector_serde", "Serde"),
            ("sluice-sdk", "connector_sluice_sdk", "SluiceSdk"),
            (
                longest.as_str(),
                longest.as_str(),
                &format!("A{}", "a".repeat(63)),
            ),
        ] {
            let created = scaffold(dir.path(), id, Language::Rust, Some(&sdk()))?.dir;
            let source = std::fs::read_to_string(created.join("src/lib.rs"))?;
            assert!(
                source.contains(&format!("struct {type_name};"))
                    && source.contains(&format!(r#"Manifest::new("{id}""#)),
                "{id}: {source}"
            );
            let manifest = std::fs::read_to_string(created.join("Cargo.toml"))?;
            assert!(
                manifest.contains(&format!("[lib]\nname = \"{lib}\"")),
                "{id}: {manifest}"
            );
        }
        Ok(())
    }

    #[test]
    fn outside_the_workspace_the_sdk_must_be_given_and_be_the_sdk() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let error = scaffold(dir.path(), "weather", Language::Rust, None)
            .expect_err("no sdk")
            .to_string();
        assert!(error.contains("pass --sdk <path>"), "{error}");
        assert!(!dir.path().join("weather").exists(), "nothing is created");

        let error =
            scaffold(dir.path(), "weather", Language::Rust, Some(dir.path())).expect_err("no Cargo.toml");
        assert!(
            error.to_string().contains("there is no Cargo.toml there"),
            "{error}"
        );
        let error = scaffold(
            dir.path(),
            "weather",
            Language::Rust,
            Some(Path::new(env!("CARGO_MANIFEST_DIR"))),
        );
        assert!(
            error
                .expect_err("the host crate")
                .to_string()
                .contains("not the `sluice-sdk` crate's"),
            "the host crate is not the SDK"
        );

        // The path is written relative to the new crate, which may be anywhere.
        let created = scaffold(
            &dir.path().join("deep/er"),
            "weather",
            Language::Rust,
            Some(&sdk()),
        )?
        .dir;
        let manifest = std::fs::read_to_string(created.join("Cargo.toml"))?;
        let line = manifest
            .lines()
            .find(|line| line.starts_with("sluice-sdk"))
            .expect("sdk line");
        let written = line.split('"').nth(1).expect("a quoted path");
        assert!(Path::new(written).is_relative(), "{line}");
        assert_eq!(created.join(written).canonicalize()?, sdk().canonicalize()?);
        Ok(())
    }

    #[test]
    fn a_crate_made_inside_a_workspace_of_ones_own_says_to_list_it() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        std::fs::write(
            dir.path().join("Cargo.toml"),
            "[workspace]\nmembers = [\"app\"]\n",
        )?;
        let scaffolded = scaffold(
            &dir.path().join("connectors"),
            "weather",
            Language::Rust,
            Some(&sdk()),
        )?;
        assert!(
            scaffolded.notes.len() == 1 && scaffolded.notes[0].contains("which does not list it"),
            "{:?}",
            scaffolded.notes
        );
        // A workspace whose members take it in needs nothing.
        let other = tempfile::tempdir()?;
        std::fs::write(
            other.path().join("Cargo.toml"),
            "[workspace]\nmembers = [\"connectors/*\"]\n",
        )?;
        let scaffolded = scaffold(
            &other.path().join("connectors"),
            "weather",
            Language::Rust,
            Some(&sdk()),
        )?;
        assert!(scaffolded.notes.is_empty(), "{:?}", scaffolded.notes);
        Ok(())
    }

    #[test]
    fn inside_a_workspace_with_the_sdk_it_is_taken_from_there() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        std::fs::write(
            dir.path().join("Cargo.toml"),
            "[workspace]\nmembers = [\"plugins/*\"]\n\n\
             [workspace.dependencies]\nserde = \"1\"\nsluice-sdk = { path = \"sdk\" }\n",
        )?;
        let created = scaffold(&dir.path().join("plugins"), "weather", Language::Rust, None)?.dir;
        let manifest = std::fs::read_to_string(created.join("Cargo.toml"))?;
        assert!(
            manifest.contains("sluice-sdk = { workspace = true }"),
            "{manifest}"
        );

        // A workspace without the SDK (a project of one's own) does not count.
        let other = tempfile::tempdir()?;
        std::fs::write(
            other.path().join("Cargo.toml"),
            "[workspace]\nmembers = [\"*\"]\n\n[workspace.dependencies]\nserde = \"1\"\n",
        )?;
        assert!(scaffold(other.path(), "weather", Language::Rust, None).is_err());
        // This repository's workspace provides it.
        assert!(workspace_provides_sdk(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins")
        )?);
        Ok(())
    }

    #[tokio::test]
    async fn build_scripts_are_found_beside_crates() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        std::fs::create_dir_all(dir.path().join("slack"))?;
        std::fs::write(dir.path().join("slack/build.sh"), "exit 0")?;
        std::fs::create_dir_all(dir.path().join("notes"))?;
        let found = discover_scripts(dir.path()).await?;
        assert_eq!(found.len(), 1);
        assert!(found[0].dir.ends_with("slack"));
        Ok(())
    }

    #[test]
    fn a_successful_builds_warnings_are_kept_and_its_progress_lines_dropped() {
        let stderr = "   Compiling sluice-sdk v0.1.0 (/sdk)\n   Compiling weather v0.1.0 (/w)\n\
                      warning: unused variable: `x`\n --> src/lib.rs:3:9\n  |\n3 |     let x = 1;\n  \
                      |         ^ help: if this is intentional, prefix it with an underscore: `_x`\n\n\
                      warning: `weather` (lib) generated 1 warning\n    \
                      Finished `release` profile [optimized] target(s) in 1.2s\n";
        let said = compiler_messages(stderr);
        assert!(said.starts_with("warning: unused variable: `x`"), "{said}");
        assert!(
            said.contains("--> src/lib.rs:3:9") && said.contains("generated 1 warning"),
            "{said}"
        );
        assert!(
            !said.contains("Compiling") && !said.contains("Finished"),
            "{said}"
        );
        let quiet = "   Compiling weather v0.1.0 (/w)\n    Finished `release` profile in 0.4s\n";
        assert_eq!(compiler_messages(quiet), "");
    }

    #[test]
    fn build_outputs_do_not_trigger_rebuilds() {
        let dir = Path::new("/src/slack");
        assert!(!is_build_noise(Path::new("/src/slack/app.py"), dir));
        assert!(!is_build_noise(Path::new("/src/slack/lib/util.py"), dir));
        for noise in [
            "/src/slack/__pycache__/app.cpython-312.pyc",
            "/src/slack/target/debug/x",
            "/src/slack/node_modules/a/index.js",
            "/src/slack/.app.py.swp",
        ] {
            assert!(is_build_noise(Path::new(noise), dir), "{noise}");
        }
    }
}
