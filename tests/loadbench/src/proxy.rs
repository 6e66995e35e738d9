//! P: a plain reverse proxy on the gateway's own stack (axum + reqwest, no WebAssembly, no
//! database) — the floor for any gateway built on it.
//!
//! It takes the gateway's request shape (`POST /v1/{integration}/{endpoint}` with
//! `{"params": {"owner", "repo"}}` and a bearer key), checks the key against one in memory,
//! sends `GET {upstream}/repos/{owner}/{repo}` with a bearer token, and answers
//! `{"status": N, "data": <upstream body>}` by splicing the bytes (no re-parsing).

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use std::net::SocketAddr;
use std::sync::Arc;

/// The key P accepts.
pub const PROXY_KEY: &str = "sk_test_plain_proxy_benchmark";

struct ProxyState {
    clients: Clients,
    upstream: String,
    expected_auth: String,
}

/// How P is laid out over threads.
#[derive(Debug, Clone, Copy)]
pub enum Layout {
    /// axum's default: one work-stealing runtime with this many workers and one shared client.
    WorkStealing(usize),
    /// The gateway's layout (`sluice::server`): this many single-threaded runtimes fed by one
    /// acceptor, each thread with its own client and connection pool.
    ThreadPerCore(usize),
}

/// P's reqwest client(s).
enum Clients {
    Shared(reqwest::Client),
    PerThread(Box<thread_local::ThreadLocal<reqwest::Client>>),
}

impl Clients {
    fn get(&self) -> &reqwest::Client {
        match self {
            Self::Shared(client) => client,
            // Building a client with only `no_proxy` set does not fail.
            Self::PerThread(clients) => clients.get_or(|| plain_client().expect("a plain reqwest client")),
        }
    }
}

fn plain_client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder().no_proxy().build()
}

/// A running plain proxy; stops when dropped.
pub struct PlainProxy {
    /// Where it listens.
    pub addr: SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
}

impl PlainProxy {
    /// Start on `127.0.0.1:0` with `layout`, forwarding to `upstream` (`http://host:port`).
    pub fn start(upstream: String, layout: Layout) -> anyhow::Result<Self> {
        let (threads, clients) = match layout {
            // The acceptor alone runs here; the serving threads are the server's own.
            Layout::ThreadPerCore(_) => (1, Clients::PerThread(Box::default())),
            Layout::WorkStealing(threads) => (threads, Clients::Shared(plain_client()?)),
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("plain-proxy")
            .enable_all()
            .build()?;
        let state = Arc::new(ProxyState {
            clients,
            upstream,
            expected_auth: format!("Bearer {PROXY_KEY}"),
        });
        let app = axum::Router::new()
            .route("/v1/{integration}/{endpoint}", axum::routing::post(forward))
            .with_state(state);
        let listener = crate::listen(&runtime)?;
        let addr = listener.local_addr()?;
        match layout {
            Layout::WorkStealing(_) => {
                runtime.spawn(async move { axum::serve(listener, app).await });
            }
            // Runs until the runtime is dropped, which stops the acceptor and lets the
            // serving threads drain.
            Layout::ThreadPerCore(threads) => {
                let options = sluice::server::ServeOptions {
                    threads: std::num::NonZeroUsize::new(threads),
                    ..sluice::server::ServeOptions::default()
                };
                runtime.spawn(sluice::server::serve(
                    listener,
                    app,
                    options,
                    std::future::pending(),
                ));
            }
        }
        Ok(Self {
            addr,
            runtime: Some(runtime),
        })
    }
}

/// What a P run by [`serve_for_parent`] prints, followed by its address, once it listens.
const ANNOUNCEMENT: &str = "plain proxy listening on ";

/// P in a process of its own (target Px). P proper shares the bench's process with the load
/// generator and the fake upstream, while the gateway is a process of its own; on a VM,
/// switching between processes and waking a halted virtual CPU for another process cost more
/// than switching between threads of one. Px pays what the gateway pays for that.
pub struct SeparateProxy {
    /// Where it listens.
    pub addr: SocketAddr,
    _child: tokio::process::Child,
}

impl SeparateProxy {
    /// Run this binary with `--serve-proxy` and wait until it says where it listens.
    pub async fn start(upstream: &str, threads: usize) -> anyhow::Result<Self> {
        use anyhow::Context;
        let mut child = tokio::process::Command::new(std::env::current_exe()?)
            .args([
                "--serve-proxy",
                upstream,
                "--server-threads",
                &threads.to_string(),
            ])
            // The child serves until its stdin closes: it cannot outlive the bench.
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting Px")?;
        let stdout = child.stdout.take().context("Px stdout")?;
        let announced = crate::announce::wait_for(tokio::io::BufReader::new(stdout), announced_address).await;
        match announced {
            Ok(addr) => Ok(Self { addr, _child: child }),
            Err(not_announced) => anyhow::bail!("Px did not start: {not_announced:?}"),
        }
    }
}

/// The address in a separately run P's announcement.
fn announced_address(line: &str) -> Option<SocketAddr> {
    line.strip_prefix(ANNOUNCEMENT)?.parse().ok()
}

/// Serve P for a parent bench (`--serve-proxy`): announce the address on stdout, then serve
/// until stdin closes.
pub fn serve_for_parent(upstream: String, threads: usize) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let proxy = PlainProxy::start(upstream, Layout::WorkStealing(threads))?;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "{ANNOUNCEMENT}{}", proxy.addr)?;
    stdout.flush()?;
    std::io::stdin().read_to_end(&mut Vec::new())?;
    Ok(())
}

impl Drop for PlainProxy {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

#[derive(serde::Deserialize)]
struct Call {
    params: RepoParams,
}

#[derive(serde::Deserialize)]
struct RepoParams {
    owner: String,
    repo: String,
}

async fn forward(
    State(state): State<Arc<ProxyState>>,
    Path((_integration, _endpoint)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let authorized = headers
        .get(header::AUTHORIZATION)
        .is_some_and(|value| value.as_bytes() == state.expected_auth.as_bytes());
    if !authorized {
        return (StatusCode::UNAUTHORIZED, "bad key").into_response();
    }
    let Ok(call) = serde_json::from_slice::<Call>(&body) else {
        return (StatusCode::BAD_REQUEST, "bad params").into_response();
    };
    let url = format!(
        "{}/repos/{}/{}",
        state.upstream, call.params.owner, call.params.repo
    );
    let sent = state
        .clients
        .get()
        .get(url)
        .bearer_auth("ghp_benchmark_token")
        .header(header::ACCEPT, "application/vnd.github+json")
        .send()
        .await;
    let (status, data) = match sent {
        Ok(response) => {
            let status = response.status().as_u16();
            match response.bytes().await {
                Ok(data) => (status, data),
                Err(_) => return (StatusCode::BAD_GATEWAY, "upstream body").into_response(),
            }
        }
        Err(_) => return (StatusCode::BAD_GATEWAY, "upstream").into_response(),
    };
    let mut envelope = BytesMut::with_capacity(data.len() + 32);
    envelope.put_slice(format!("{{\"status\":{status},\"data\":").as_bytes());
    envelope.put_slice(&data);
    envelope.put_u8(b'}');
    ([(header::CONTENT_TYPE, "application/json")], envelope.freeze()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_address_a_separate_proxy_announces() {
        let line = format!("{ANNOUNCEMENT}127.0.0.1:40123");
        assert_eq!(
            announced_address(&line),
            Some(SocketAddr::from(([127, 0, 0, 1], 40123)))
        );
        assert_eq!(announced_address("error: no upstream"), None);
    }
}
