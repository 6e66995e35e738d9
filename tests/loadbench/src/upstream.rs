//! The fake upstream: a bare hyper HTTP/1.1 server with keep-alive that answers every request
//! with a canned JSON body, as fast as hyper can, on its own runtime.
//!
//! The body size comes from the last path segment when it names one (`/repos/bench/64k`),
//! otherwise from the run's default; an optional delay simulates a slow API.

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// Response body sizes the upstream serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum BodySize {
    /// 1 KiB.
    #[serde(rename = "1k")]
    K1,
    /// 64 KiB.
    #[serde(rename = "64k")]
    K64,
    /// 1 MiB.
    #[serde(rename = "1m")]
    M1,
}

impl BodySize {
    /// Every size, smallest first.
    pub const ALL: [BodySize; 3] = [BodySize::K1, BodySize::K64, BodySize::M1];

    /// Bytes in the body.
    pub fn bytes(self) -> usize {
        match self {
            BodySize::K1 => 1 << 10,
            BodySize::K64 => 64 << 10,
            BodySize::M1 => 1 << 20,
        }
    }

    /// The label used in paths, flags and reports.
    pub fn label(self) -> &'static str {
        match self {
            BodySize::K1 => "1k",
            BodySize::K64 => "64k",
            BodySize::M1 => "1m",
        }
    }

    fn index(self) -> usize {
        match self {
            BodySize::K1 => 0,
            BodySize::K64 => 1,
            BodySize::M1 => 2,
        }
    }
}

impl FromStr for BodySize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "1k" => Ok(BodySize::K1),
            "64k" => Ok(BodySize::K64),
            "1m" => Ok(BodySize::M1),
            other => Err(format!("unknown body size `{other}` (expected 1k, 64k or 1m)")),
        }
    }
}

impl std::fmt::Display for BodySize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// A GitHub-repository-shaped JSON object of exactly `size` bytes.
pub fn repo_body(size: usize) -> Bytes {
    let head = r#"{"id":1296269,"name":"webapp","full_name":"bench/webapp","private":false,"default_branch":"main","stargazers_count":80,"description":""#;
    let tail = r#""}"#;
    let fill = size.saturating_sub(head.len() + tail.len());
    let mut body = String::with_capacity(size);
    body.push_str(head);
    body.extend(std::iter::repeat_n('x', fill));
    body.push_str(tail);
    Bytes::from(body)
}

struct State {
    bodies: [Bytes; 3],
    default_size: AtomicUsize,
    delay_ms: AtomicU64,
    hits: AtomicU64,
}

/// A running fake upstream; stops when dropped.
pub struct FakeUpstream {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<State>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl FakeUpstream {
    /// Start on `127.0.0.1:0` on a runtime of its own (`threads` workers), so its work is not
    /// scheduled on the load generator's threads.
    pub fn start(threads: usize) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("fake-upstream")
            .enable_all()
            .build()?;
        let state = Arc::new(State {
            bodies: BodySize::ALL.map(|size| repo_body(size.bytes())),
            default_size: AtomicUsize::new(0),
            delay_ms: AtomicU64::new(0),
            hits: AtomicU64::new(0),
        });
        let listener = crate::listen(&runtime)?;
        let addr = listener.local_addr()?;
        let accept_state = state.clone();
        runtime.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    // Out of descriptors or similar: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let state = accept_state.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| answer(state.clone(), request));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Self {
            addr,
            state,
            runtime: Some(runtime),
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The size served when the path does not name one.
    pub fn set_default_size(&self, size: BodySize) {
        self.state.default_size.store(size.index(), Ordering::Relaxed);
    }

    /// Delay every answer by `delay` (zero for none).
    pub fn set_delay(&self, delay: Duration) {
        self.state
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::Relaxed);
    }

    /// Requests answered so far.
    pub fn hits(&self) -> u64 {
        self.state.hits.load(Ordering::Relaxed)
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

async fn answer(
    state: Arc<State>,
    request: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let delay = state.delay_ms.load(Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let index = request
        .uri()
        .path()
        .rsplit('/')
        .next()
        .and_then(|last| last.parse::<BodySize>().ok())
        .map(BodySize::index)
        .unwrap_or_else(|| state.default_size.load(Ordering::Relaxed));
    state.hits.fetch_add(1, Ordering::Relaxed);
    let mut response = Response::new(Full::new(state.bodies[index].clone()));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every canned body is valid JSON of exactly the advertised size.
    #[test]
    fn bodies_are_json_of_the_exact_size() {
        for size in BodySize::ALL {
            let body = repo_body(size.bytes());
            assert_eq!(body.len(), size.bytes(), "{size}");
            let value: serde_json::Value = serde_json::from_slice(&body).expect("valid JSON");
            assert_eq!(value["name"], "webapp");
        }
    }

    /// Sizes parse from their labels, case-insensitively, and nothing else.
    #[test]
    fn sizes_parse_from_labels() {
        assert_eq!("64K".parse::<BodySize>(), Ok(BodySize::K64));
        assert!("2k".parse::<BodySize>().is_err());
        for size in BodySize::ALL {
            assert_eq!(size.label().parse::<BodySize>(), Ok(size));
        }
    }
}
