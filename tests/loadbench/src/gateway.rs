//! W: the real `sluice` release binary in a temporary data directory, with a key and a
//! connection created through its own CLI and every connection's base URL on the fake upstream.

use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::BufReader;
use tokio::process::{Child, Command};

/// What to start.
#[derive(Debug, Clone)]
pub struct GatewaySpec {
    /// The `sluice` binary.
    pub binary: PathBuf,
    /// Components to put in the plugins directory.
    pub components: Vec<PathBuf>,
    /// Integrations to add a connection for, each pointing at `upstream`.
    pub integrations: Vec<String>,
    /// The fake upstream's base URL.
    pub upstream: String,
    /// Extra `serve` flags.
    pub extra_args: Vec<String>,
    /// `SLUICE_LOG` for the process (its log goes to a file in the data directory).
    pub log_filter: String,
}

/// A running gateway; killed when dropped.
pub struct Gateway {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The API key created for the run.
    pub key: String,
    /// Process id, for reading its RSS.
    pub pid: u32,
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Gateway {
    /// Start `serve` on a new data directory, wait until it listens, and store the spec's
    /// connections with the test key it printed.
    pub async fn start(spec: &GatewaySpec) -> anyhow::Result<Self> {
        if !spec.binary.is_file() {
            bail!(
                "no sluice binary at {}: build it with `cargo build --release -p sluice` or pass --sluice PATH",
                spec.binary.display()
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("sluice-loadbench-")
            .tempdir()
            .context("creating a temporary data directory")?;
        let data = dir.path().join("data");
        let plugins = dir.path().join("plugins");
        std::fs::create_dir_all(&plugins)?;
        for component in &spec.components {
            let name = component
                .file_name()
                .with_context(|| format!("{} has no file name", component.display()))?;
            std::fs::copy(component, plugins.join(name)).with_context(|| {
                format!(
                    "copying {} (build the connectors with `cargo plugins`)",
                    component.display()
                )
            })?;
        }
        let log = dir.path().join("gateway.log");
        let log_file = std::fs::File::create(&log)?;
        let mut child = Command::new(&spec.binary)
            .arg("serve")
            .args([
                "--listen",
                "127.0.0.1:0",
                "--allow-private-upstreams",
                "--no-watch",
            ])
            .arg("--data-dir")
            .arg(&data)
            .arg("--plugins")
            .arg(&plugins)
            .args(&spec.extra_args)
            .env("SLUICE_LOG", &spec.log_filter)
            .env_remove("SLUICE_MASTER_KEY")
            .env_remove("SLUICE_ADMIN_KEY")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", spec.binary.display()))?;
        let pid = child.id().context("the gateway exited at once")?;
        let stdout = child.stdout.take().context("gateway stdout")?;
        // A new data directory: the gateway creates a test key and prints it (once) before it
        // announces where it listens. Taking it from there, and adding connections through the
        // vault API, works alike for every gateway version an A/B run compares.
        let printed_key = std::sync::Mutex::new(None::<String>);
        let announced = crate::announce::wait_for(BufReader::new(stdout), |line| {
            if line.trim().starts_with("sk_test_")
                && let Ok(mut key) = printed_key.lock()
            {
                *key = Some(line.trim().to_owned());
            }
            line.strip_prefix("sluice listening on ")
                .map(|url| url.trim().to_owned())
        })
        .await;
        let Ok(url) = announced else {
            let _ = child.start_kill();
            bail!(
                "the gateway did not start; its log ends with:\n{}",
                tail(&log, 30)
            );
        };
        let key = printed_key
            .into_inner()
            .ok()
            .flatten()
            .context("the gateway printed no test key on its first start")?;
        for integration in &spec.integrations {
            add_connection(&url, &key, integration, &spec.upstream).await?;
        }
        Ok(Self {
            url,
            key,
            pid,
            child,
            log,
            _dir: dir,
        })
    }

    /// Resident set size now, in KiB (`VmRSS` from `/proc/<pid>/status`).
    pub fn rss_kib(&self) -> Option<u64> {
        rss_kib(self.pid)
    }

    /// The last `lines` lines of the gateway's log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Stop the process (SIGKILL: nothing of its state is needed afterwards).
    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }
}

/// `VmRSS` of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_rss(&status)
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Run a `sluice` subcommand on `data`; its stdout, or an error with its stderr.
/// Store a connection to `upstream` for `integration` through the vault API.
async fn add_connection(url: &str, key: &str, integration: &str, upstream: &str) -> anyhow::Result<()> {
    let response = reqwest::Client::new()
        .post(format!("{url}/v1/vault/connections"))
        .bearer_auth(key)
        .json(&serde_json::json!({"platform": integration, "secret": "ghp_benchmark_token", "baseUrl": upstream}))
        .send()
        .await
        .context("adding a connection")?;
    let status = response.status();
    if !status.is_success() {
        bail!(
            "adding the {integration} connection failed ({status}): {}",
            response.text().await.unwrap_or_default()
        );
    }
    Ok(())
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `VmRSS` is read from the kernel's status text in KiB.
    #[test]
    fn reads_vm_rss() {
        let status = "Name:\tsluice\nVmPeak:\t  999 kB\nVmRSS:\t   48212 kB\nThreads:\t5\n";
        assert_eq!(parse_vm_rss(status), Some(48212));
        assert_eq!(parse_vm_rss("Name: x\n"), None);
        assert!(rss_kib(std::process::id()).is_some_and(|kib| kib > 0));
    }
}
