//! The load generator: one keep-alive HTTP/1.1 connection per worker (like `wrk`), or one
//! HTTP/2 connection all workers multiplex their requests over (like one `h2load` client).
//!
//! - Closed loop: each worker sends its next request when the previous one is answered.
//! - Fixed rate (open loop, like `wrk2`): each worker has its own schedule of intended send
//!   times at `rate / concurrency`; a request that could not be sent on time because the
//!   previous answer was late is timed from its *intended* time, so a stall counts against
//!   every request it delayed instead of silently lowering the offered load (coordinated
//!   omission). A request sent on time is timed from the moment it was sent (the tokio timer
//!   wakes up to a millisecond late; that lateness is the generator's, not the server's).
//!
//! A request fails when the connection or the exchange fails, when it takes longer than the
//! timeout, when the status is not 2xx, or when the body is not what the target promises.

use crate::stats::Summary;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// What to check in a successful answer.
#[derive(Debug, Clone, Copy)]
pub enum Expect {
    /// The raw upstream body: exactly this many bytes.
    Exact(usize),
    /// A gateway envelope `{"status":2xx,"data":…}` carrying at least this many bytes.
    Envelope(usize),
}

/// One endpoint under load.
#[derive(Debug, Clone)]
pub struct Target {
    /// D, P, W, …
    pub name: String,
    /// Where to connect.
    pub addr: SocketAddr,
    /// GET or POST.
    pub method: http::Method,
    /// Path and query.
    pub path: String,
    /// `Authorization` header value.
    pub authorization: Option<String>,
    /// Request body (POST only).
    pub body: Bytes,
    /// What a good answer looks like.
    pub expect: Expect,
}

/// How to drive it.
#[derive(Debug, Clone, Copy)]
pub struct RunSpec {
    /// Connections (workers).
    pub concurrency: usize,
    /// `None` for a closed loop, else the total offered rate in requests per second.
    pub rate: Option<f64>,
    /// Unrecorded time before measuring.
    pub warmup: Duration,
    /// Measured time.
    pub duration: Duration,
    /// A request slower than this is an error.
    pub timeout: Duration,
    /// All workers share one HTTP/2 connection (prior knowledge, no TLS) instead of each
    /// having its own HTTP/1.1 one.
    pub http2: bool,
}

/// Where a worker sends its requests.
enum Connection {
    /// The worker's own; opened on first use and after a failure.
    Http1(Option<http1::SendRequest<Full<Bytes>>>),
    /// One shared by every worker of the run; reopened by the first worker to find it closed.
    Http2(Arc<tokio::sync::Mutex<Option<http2::SendRequest<Full<Bytes>>>>>),
}

impl Connection {
    /// After a failed exchange: the next one opens a new connection (HTTP/1.1), or finds out
    /// whether the shared one is still open (HTTP/2).
    fn failed(&mut self) {
        if let Self::Http1(sender) = self {
            *sender = None;
        }
    }
}

/// Counts shared with an observer while a run is going on.
#[derive(Debug, Default)]
pub struct Live {
    /// Requests sent and not yet answered.
    pub in_flight: AtomicI64,
}

/// The outcome of one run.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// Latencies and counts.
    pub summary: Summary,
    /// The first error seen, for the report.
    pub first_error: Option<String>,
}

struct WorkerResult {
    latencies_us: Vec<u32>,
    errors: u64,
    first_error: Option<String>,
}

/// Drive `target` as `spec` says.
pub async fn run(target: &Target, spec: RunSpec, live: Arc<Live>) -> RunOutcome {
    let start = Instant::now();
    let measure_from = start + spec.warmup;
    let end = measure_from + spec.duration;
    let per_worker_interval = spec
        .rate
        .map(|rate| Duration::from_secs_f64(spec.concurrency as f64 / rate.max(1e-3)));
    let target = Arc::new(target.clone());
    let shared_http2 = Arc::new(tokio::sync::Mutex::new(None));
    let mut workers = Vec::with_capacity(spec.concurrency);
    for index in 0..spec.concurrency {
        let target = target.clone();
        let live = live.clone();
        let connection = match spec.http2 {
            true => Connection::Http2(shared_http2.clone()),
            false => Connection::Http1(None),
        };
        // Stagger the schedules so the workers' sends interleave evenly.
        let first = per_worker_interval
            .map(|interval| start + interval.mul_f64(index as f64 / spec.concurrency as f64));
        workers.push(tokio::spawn(async move {
            worker(
                &target,
                connection,
                first,
                per_worker_interval,
                measure_from,
                end,
                spec.timeout,
                &live,
            )
            .await
        }));
    }
    let mut latencies_us = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    for worker in workers {
        match worker.await {
            Ok(result) => {
                latencies_us.extend(result.latencies_us);
                errors += result.errors;
                if first_error.is_none() {
                    first_error = result.first_error;
                }
            }
            Err(e) => {
                errors += 1;
                first_error.get_or_insert_with(|| format!("load worker failed: {e}"));
            }
        }
    }
    RunOutcome {
        summary: Summary::from_latencies(latencies_us, errors, spec.duration.as_secs_f64()),
        first_error,
    }
}

#[allow(clippy::too_many_arguments)] // one run's settings, passed once per worker
async fn worker(
    target: &Target,
    mut connection: Connection,
    first: Option<Instant>,
    interval: Option<Duration>,
    measure_from: Instant,
    end: Instant,
    timeout: Duration,
    live: &Live,
) -> WorkerResult {
    let mut result = WorkerResult {
        latencies_us: Vec::new(),
        errors: 0,
        first_error: None,
    };
    let mut intended = first;
    loop {
        let sent_at = match (intended, interval) {
            (Some(at), Some(interval)) => {
                if at >= end {
                    break;
                }
                intended = Some(at + interval);
                if Instant::now() < at {
                    // Ahead of schedule: the clock starts when the timer wakes us. Its
                    // millisecond granularity is the generator's lateness, not the server's.
                    tokio::time::sleep_until(at).await;
                    Instant::now()
                } else {
                    // Behind schedule because the previous answer came late: the clock
                    // started at the intended time (no coordinated omission).
                    at
                }
            }
            _ => {
                let now = Instant::now();
                if now >= end {
                    break;
                }
                now
            }
        };
        live.in_flight.fetch_add(1, Ordering::Relaxed);
        let outcome = tokio::time::timeout(timeout, exchange(target, &mut connection)).await;
        live.in_flight.fetch_sub(1, Ordering::Relaxed);
        let done = Instant::now();
        let failure = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(_) => Some(format!("no answer within {timeout:?}")),
        };
        // Open loop: a request belongs to the window its intended time falls in. Closed loop:
        // the window its answer falls in.
        let counted = match interval {
            Some(_) => sent_at >= measure_from,
            None => done >= measure_from && done <= end,
        };
        match failure {
            None if counted => {
                let micros = done.duration_since(sent_at).as_micros();
                result.latencies_us.push(micros.min(u32::MAX as u128) as u32);
            }
            None => {}
            Some(error) => {
                connection.failed();
                if counted {
                    result.errors += 1;
                    result.first_error.get_or_insert(error);
                }
                // A refused connection fails at once: do not spin on it.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
    result
}

/// One request on the worker's connection, opening it first if needed.
async fn exchange(target: &Target, connection: &mut Connection) -> Result<(), String> {
    let request = request_for(target)?;
    let response = match connection {
        Connection::Http1(sender) => {
            if sender.as_ref().is_none_or(|sender| sender.is_closed()) {
                *sender = Some(connect_http1(target.addr).await?);
            }
            let Some(sender) = sender.as_mut() else {
                return Err("no connection".into());
            };
            sender.ready().await.map_err(|e| format!("connection: {e}"))?;
            sender.send_request(request).await
        }
        Connection::Http2(shared) => {
            let mut sender = {
                let mut shared = shared.lock().await;
                if shared.as_ref().is_none_or(|sender| sender.is_closed()) {
                    *shared = Some(connect_http2(target.addr).await?);
                }
                shared.clone().ok_or("no connection")?
            };
            sender.ready().await.map_err(|e| format!("connection: {e}"))?;
            sender.send_request(request).await
        }
    };
    let response = response.map_err(|e| format!("exchange: {e}"))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("reading the body: {e}"))?
        .to_bytes();
    if !status.is_success() {
        let shown = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        return Err(format!("HTTP {status}: {shown}"));
    }
    check_body(target.expect, &body)
}

/// The request `target` sends.
fn request_for(target: &Target) -> Result<hyper::Request<Full<Bytes>>, String> {
    let mut request = hyper::Request::builder()
        .method(target.method.clone())
        .uri(&target.path)
        .header(http::header::HOST, target.addr.to_string());
    if let Some(authorization) = &target.authorization {
        request = request.header(http::header::AUTHORIZATION, authorization);
    }
    if target.method == http::Method::POST {
        request = request.header(http::header::CONTENT_TYPE, "application/json");
    }
    request
        .body(Full::new(target.body.clone()))
        .map_err(|e| format!("request: {e}"))
}

/// Whether `body` is what `expect` promises.
pub fn check_body(expect: Expect, body: &[u8]) -> Result<(), String> {
    match expect {
        Expect::Exact(len) if body.len() == len => Ok(()),
        Expect::Exact(len) => Err(format!("expected {len} bytes, got {}", body.len())),
        Expect::Envelope(min) => {
            if !body.starts_with(br#"{"status":2"#) {
                let shown = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
                return Err(format!("not a 2xx envelope: {shown}"));
            }
            if body.len() < min {
                return Err(format!(
                    "envelope of {} bytes, expected at least {min}",
                    body.len()
                ));
            }
            Ok(())
        }
    }
}

async fn tcp_connect(addr: SocketAddr) -> Result<TokioIo<tokio::net::TcpStream>, String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let _ = stream.set_nodelay(true);
    Ok(TokioIo::new(stream))
}

async fn connect_http1(addr: SocketAddr) -> Result<http1::SendRequest<Full<Bytes>>, String> {
    let (sender, connection) = http1::handshake(tcp_connect(addr).await?)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(connection);
    Ok(sender)
}

async fn connect_http2(addr: SocketAddr) -> Result<http2::SendRequest<Full<Bytes>>, String> {
    let (sender, connection) = http2::handshake(TokioExecutor::new(), tcp_connect(addr).await?)
        .await
        .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
    tokio::spawn(connection);
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Non-2xx envelopes, short envelopes and wrong-sized raw bodies are errors.
    #[test]
    fn bodies_are_checked() {
        assert!(check_body(Expect::Exact(3), b"abc").is_ok());
        assert!(check_body(Expect::Exact(4), b"abc").is_err());
        assert!(check_body(Expect::Envelope(10), br#"{"status":200,"data":{"a":1}}"#).is_ok());
        assert!(check_body(Expect::Envelope(10), br#"{"status":404,"data":{"a":1}}"#).is_err());
        assert!(check_body(Expect::Envelope(100), br#"{"status":200,"data":{}}"#).is_err());
        assert!(check_body(Expect::Envelope(1), br#"{"error":"bad_request"}"#).is_err());
    }
}
