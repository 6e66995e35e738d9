//! S: `wasmtime serve` running a wasi:http hello-world component (no upstream, no database) —
//! the general-purpose WebAssembly HTTP host the gateway is compared with. Optional: it runs
//! only when asked for (`--targets …,S`) and needs a `wasmtime` binary (`cargo install --locked
//! wasmtime-cli --version 48.0.8`) and the component (`cargo build --profile guest --target
//! wasm32-wasip2 -p sluice-guest-hello-http --target-dir target/hello-http`: a directory of its
//! own, so the gateway's plugins directory never sees a component that is not a connector).

use crate::announce::{NotAnnounced, STARTUP_TIMEOUT};
use anyhow::{Context, bail};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use tokio::io::BufReader;
use tokio::process::{Child, Command};

/// A running `wasmtime serve`; killed when dropped.
pub struct WasmtimeServe {
    /// Where it listens.
    pub addr: SocketAddr,
    _child: Child,
}

impl WasmtimeServe {
    /// Start `wasmtime serve` on an ephemeral loopback port with `component` and wait until it
    /// says where it listens.
    pub async fn start(wasmtime: &Path, component: &Path) -> anyhow::Result<Self> {
        if !component.is_file() {
            bail!(
                "no hello-world component at {}: build it with `cargo build --profile guest --target wasm32-wasip2 -p sluice-guest-hello-http --target-dir target/hello-http`",
                component.display()
            );
        }
        // `-Scli`: Rust's std for wasm32-wasip2 imports wasi:cli even in a wasi:http component.
        let mut child = Command::new(wasmtime)
            .args(["serve", "-Scli", "--addr", "127.0.0.1:0"])
            .arg(component)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| {
                format!(
                    "starting {} (install it with `cargo install --locked wasmtime-cli --version 48.0.8`)",
                    wasmtime.display()
                )
            })?;
        let stderr = child.stderr.take().context("wasmtime stderr")?;
        let addr = match crate::announce::wait_for(BufReader::new(stderr), listening_address).await {
            Ok(addr) => addr,
            Err(NotAnnounced::Exited(seen)) => {
                bail!("`wasmtime serve` exited without listening:\n{}", seen.join("\n"))
            }
            Err(NotAnnounced::TimedOut) => bail!(
                "`wasmtime serve` did not start listening within {} s",
                STARTUP_TIMEOUT.as_secs()
            ),
        };
        Ok(Self { addr, _child: child })
    }
}

/// The address in `wasmtime serve`'s `Serving HTTP on http://ADDR/` line.
fn listening_address(line: &str) -> Option<SocketAddr> {
    line.trim()
        .strip_prefix("Serving HTTP on http://")?
        .trim_end_matches('/')
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_announced_address() {
        assert_eq!(
            listening_address("Serving HTTP on http://127.0.0.1:40123/"),
            Some(SocketAddr::from(([127, 0, 0, 1], 40123)))
        );
        assert_eq!(listening_address("Compiling component…"), None);
    }
}
