//! Serving the API: one acceptor hands each connection to one of a fixed set of serving
//! threads, each running its own single-threaded tokio runtime (thread-per-core).
//!
//! A request then runs start to finish on one thread: the handler, the connector instance and
//! the upstream exchange — whose pooled connections belong to that thread's runtime too (see
//! [`crate::upstream`]). On a work-stealing runtime the same request hops between workers and
//! wakes idle ones along the way; on a busy gateway that cross-CPU traffic cost more than the
//! balancing it buys. Connections are dealt round-robin, so long-lived keep-alive clients spread
//! evenly; the streams of one HTTP/2 connection all run on the thread it was dealt to, so a
//! single HTTP/2 client uses one core (HTTP/1.1 clients with a connection pool use them all;
//! dealing streams to other threads cost each request a third more CPU: BENCHMARKS.md, twelfth
//! pass).
//! Nothing moves a busy thread's work elsewhere, so nothing may hold a thread: blocking
//! work goes to the blocking pool, and a connector computing for longer than an epoch tick
//! yields (see `Runtime::new_store`).

mod activity;
mod linger;
mod request_body;

use activity::{Activity, TrackedBody};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
pub use request_body::BodyStalled;
use std::convert::Infallible;
use std::future::Future;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};

/// Accepted connections waiting for a serving thread; past this the acceptor waits and the
/// kernel's backlog holds the rest.
const HANDOFF_QUEUE: usize = 256;

/// How the server treats its clients.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Serving threads; one per CPU when `None`.
    pub threads: Option<NonZeroUsize>,
    /// Connections open at once. Past this the acceptor waits (new clients queue in the
    /// kernel's backlog) instead of running the process out of file descriptors. A connection
    /// keeps its place while it lingers after an early answer (see the `linger` module).
    pub max_connections: usize,
    /// How long a connection is kept with no request in flight, whatever its protocol (a client
    /// that never sends a byte, an idle keep-alive or HTTP/2 connection), the time a client has
    /// to send a request's headers, and the longest pause allowed while it sends a body: a
    /// client trickling bytes (slowloris) or holding connections open without using them
    /// cannot keep them for longer.
    pub idle_timeout: Duration,
    /// Counts the connections open now (the gateway exports it as `sluice_open_connections`).
    pub open_connections: prometheus_client::metrics::gauge::Gauge,
    /// Work requests started on the serving threads that goes on without them (a call whose
    /// caller went away, an OAuth refresh). On shutdown the tracker is closed, and a thread
    /// stops only once all of it is done: stopping its runtime would drop its share.
    pub background: tokio_util::task::TaskTracker,
}

/// Default of [`ServeOptions::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Default of [`ServeOptions::idle_timeout`].
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            threads: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            open_connections: Default::default(),
            background: Default::default(),
        }
    }
}

/// An accepted connection and its place in the connection limit, held while it is open.
type Accepted = (std::net::TcpStream, OwnedSemaphorePermit);

/// Serve `router` on `listener` as `options` say until `shutdown` resolves, then let every
/// thread drain its in-flight requests and the work they left running (and finish its
/// lingering closes, at most `linger::LINGER_TIME`).
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let threads = options
        .threads
        .or_else(|| std::thread::available_parallelism().ok())
        .map_or(1, NonZeroUsize::get);
    let (stop, stopped) = watch::channel(false);
    let mut handoffs = Vec::new();
    let mut finished = Vec::new();
    for index in 0..threads {
        let (handoff, incoming) = mpsc::channel(HANDOFF_QUEUE);
        let (done, finished_serving) = oneshot::channel();
        let thread = ServingThread {
            incoming,
            router: router.clone(),
            idle_timeout: options.idle_timeout,
            open_connections: options.open_connections.clone(),
            stopped: stopped.clone(),
            background: options.background.clone(),
        };
        std::thread::Builder::new()
            .name(format!("sluice-http-{index}"))
            .spawn(move || {
                let _ = done.send(thread.run());
            })?;
        handoffs.push(handoff);
        finished.push(finished_serving);
    }

    let connection_slots = Arc::new(Semaphore::new(options.max_connections.max(1)));
    tokio::pin!(shutdown);
    let mut next = 0;
    loop {
        let accepted = tokio::select! {
            accepted = accept(&listener, &connection_slots) => accepted,
            () = &mut shutdown => break,
        };
        let Some(accepted) = accepted else {
            continue;
        };
        if handoffs[next].send(accepted).await.is_err() {
            // That thread has stopped; stop the others and report why it did.
            tracing::error!(thread = next, "a serving thread stopped; shutting down");
            break;
        }
        next = (next + 1) % handoffs.len();
    }
    // Stop listening at once: a client connecting now is refused (and tries another gateway)
    // rather than left in the backlog until the drain ends and then reset.
    drop(listener);

    options.background.close();
    let _ = stop.send(true);
    drop(handoffs);
    let mut outcome = Ok(());
    for finished_serving in finished {
        let result = finished_serving
            .await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("a serving thread panicked")));
        if outcome.is_ok() {
            outcome = result;
        }
    }
    outcome
}

/// The next connection, once one is free under the connection limit; `None` if accepting
/// failed (logged, after a pause when the process is out of file descriptors).
async fn accept(listener: &TcpListener, connection_slots: &Arc<Semaphore>) -> Option<Accepted> {
    let slot = connection_slots.clone().acquire_owned().await.ok()?;
    let connection = match listener.accept().await {
        Ok((connection, _peer)) => connection,
        Err(error) => {
            tracing::warn!(%error, "accepting a connection failed");
            // Out of descriptors or memory: give the open connections a moment to close.
            tokio::time::sleep(Duration::from_millis(50)).await;
            return None;
        }
    };
    // Replies go out as soon as they are written: an API answer is one small write, which
    // Nagle's algorithm could otherwise hold back until the caller acknowledges the last one.
    if let Err(error) = connection.set_nodelay(true) {
        tracing::debug!(%error, "could not set TCP_NODELAY");
    }
    // Leave this runtime's reactor; the serving thread registers it with its own.
    match connection.into_std() {
        Ok(connection) => Some((connection, slot)),
        Err(error) => {
            tracing::warn!(%error, "could not hand over an accepted connection");
            None
        }
    }
}

/// One serving thread: its runtime, the connections dealt to it, and the stop signal.
struct ServingThread {
    incoming: mpsc::Receiver<Accepted>,
    router: axum::Router,
    idle_timeout: Duration,
    open_connections: prometheus_client::metrics::gauge::Gauge,
    stopped: watch::Receiver<bool>,
    background: tokio_util::task::TaskTracker,
}

impl ServingThread {
    fn run(self) -> anyhow::Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async move {
            let pacemaker = tokio::spawn(keep_the_timer_driver_scheduled());
            let mut http = auto::Builder::new(TokioExecutor::new());
            http.http1()
                .timer(TokioTimer::new())
                .header_read_timeout(self.idle_timeout);
            // Every connection's task holds a clone; the channel closes when the last one ends.
            let (open, mut all_closed) = mpsc::channel::<()>(1);
            let (mut incoming, mut stopped) = (self.incoming, self.stopped);
            loop {
                let (connection, slot) = tokio::select! {
                    next = incoming.recv() => match next {
                        Some(accepted) => accepted,
                        None => break,
                    },
                    _ = stopped.wait_for(|stop| *stop) => break,
                };
                let connection = match TcpStream::from_std(connection) {
                    Ok(connection) => connection,
                    // The peer hung up before the hand-over completed.
                    Err(error) => {
                        tracing::debug!(%error, "dropped a connection during hand-over");
                        continue;
                    }
                };
                let activity = Activity::new();
                let service = tracked(self.router.clone(), activity.clone(), self.idle_timeout);
                let (connection, mut returned) = linger::lend(connection);
                let serving = http
                    .serve_connection_with_upgrades(TokioIo::new(connection), service)
                    .into_owned();
                let (idle_timeout, mut stopping, open) = (self.idle_timeout, stopped.clone(), open.clone());
                let open_connections = self.open_connections.clone();
                open_connections.inc();
                tokio::spawn(async move {
                    // Closed for the client's slowness (its requests' heads, or no requests at
                    // all): it gets no lingering close either.
                    let mut cut_off = false;
                    let outcome = {
                        tokio::pin!(serving);
                        // Checked twice per timeout: an unused connection closes within 1.5 of it.
                        let mut idle_check = tokio::time::interval((idle_timeout / 2).max(MIN_IDLE_CHECK));
                        let mut closing = false;
                        loop {
                            tokio::select! {
                                outcome = serving.as_mut() => break outcome,
                                _ = stopping.wait_for(|stop| *stop), if !closing => {
                                    serving.as_mut().graceful_shutdown();
                                    closing = true;
                                }
                                _ = idle_check.tick() => {
                                    if activity.idle_for().is_some_and(|idle| idle >= idle_timeout) {
                                        cut_off = true;
                                        // Asked to close and still unused: drop it.
                                        if closing {
                                            break Ok(());
                                        }
                                        serving.as_mut().graceful_shutdown();
                                        closing = true;
                                    }
                                }
                            }
                        }
                        // hyper is dropped here and hands the socket back.
                    };
                    if let Err(error) = &outcome {
                        cut_off |= error
                            .downcast_ref::<hyper::Error>()
                            .is_some_and(hyper::Error::is_timeout);
                        tracing::debug!(error = %error, "connection ended with an error");
                    }
                    // Not after an upgrade, which keeps the socket.
                    let mut connection = returned.try_recv().ok();
                    if let Some(connection) = connection.as_mut()
                        && !cut_off
                    {
                        linger::drain(connection).await;
                    }
                    // Counted as closed before the client can see it closed.
                    open_connections.dec();
                    drop((connection, slot, open));
                });
            }
            // In-flight requests finish; unused connections close. Then the work left running
            // (here or on another thread: the tracker is shared) finishes too.
            drop(open);
            all_closed.recv().await;
            self.background.wait().await;
            pacemaker.abort();
            Ok(())
        })
    }
}

/// Shortest interval between a connection's idle checks (for very short timeouts in tests).
const MIN_IDLE_CHECK: Duration = Duration::from_millis(10);

/// The hyper service for one connection: `router`, with each request counted in `activity`
/// from the call until hyper drops its response body, its body failing with [`BodyStalled`]
/// when the client sends none of it for `idle_timeout`, and its answer saying
/// `Connection: close` when it comes before the body was read (see the `request_body` module).
fn tracked(
    router: axum::Router,
    activity: Arc<Activity>,
    idle_timeout: Duration,
) -> impl hyper::service::Service<
    hyper::Request<hyper::body::Incoming>,
    Response = hyper::Response<TrackedBody>,
    Error = Infallible,
    Future: Send,
> + Clone {
    hyper::service::service_fn(move |request| {
        let in_flight = activity.begin();
        let (request, body_end) = request_body::guard(request, idle_timeout);
        let call = tower::ServiceExt::oneshot(router.clone(), request);
        async move {
            let mut response = call.await?;
            if let Some(body_end) = body_end {
                body_end.close_unless_read(&mut response);
            }
            Ok(response.map(|inner| TrackedBody {
                inner,
                _in_flight: in_flight,
            }))
        }
    })
}

/// Keep a near timer in tokio's timer wheel for as long as the server runs.
///
/// Every request arms timers (the invocation deadline, the upstream timeout). A timer due
/// sooner than any other makes tokio unpark its driver to shorten the next sleep (a wake-up
/// write even when the thread is awake, and a spurious return from the next park) — on every
/// request of an otherwise idle thread. With this timer always due within a second, the
/// requests' later deadlines never come first.
async fn keep_the_timer_driver_scheduled() {
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::net::SocketAddr;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// One HTTP/1.1 request on a fresh connection; returns the body.
    async fn get_on_new_connection(addr: SocketAddr) -> String {
        let mut connection = tokio::net::TcpStream::connect(addr).await.expect("connect");
        connection
            .write_all(b"GET /thread HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut reply = String::new();
        connection.read_to_string(&mut reply).await.expect("read");
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        reply.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned()
    }

    #[tokio::test]
    async fn connections_are_dealt_to_every_serving_thread_and_shutdown_returns() {
        let router = axum::Router::new().route(
            "/thread",
            axum::routing::get(|| async { std::thread::current().name().unwrap_or("?").to_owned() }),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let options = ServeOptions {
            threads: NonZeroUsize::new(3),
            ..ServeOptions::default()
        };
        let server = tokio::spawn(serve(listener, router, options, async {
            let _ = stopped.await;
        }));

        let mut threads = BTreeSet::new();
        for _ in 0..6 {
            threads.insert(get_on_new_connection(addr).await);
        }
        let expected: BTreeSet<String> = (0..3).map(|i| format!("sluice-http-{i}")).collect();
        assert_eq!(threads, expected);

        stop.send(()).expect("server still running");
        let finished = tokio::time::timeout(std::time::Duration::from_secs(5), server)
            .await
            .expect("serve returns after shutdown")
            .expect("serve did not panic");
        assert!(finished.is_ok(), "{finished:?}");
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "the listener is closed after shutdown"
        );
    }

    /// A server with `options` answering `GET /` with `ok`, `GET /slow` with `ok` after a
    /// second, `POST /refuse` with `413 too large` without reading the body and `POST /length`
    /// with the length of the body it read; its address and its stop switch.
    async fn start(options: ServeOptions) -> (SocketAddr, oneshot::Sender<()>) {
        let router = axum::Router::new()
            .route("/", axum::routing::get(|| async { "ok" }))
            .route(
                "/length",
                axum::routing::post(|body: axum::body::Bytes| async move { body.len().to_string() }),
            )
            .route(
                "/refuse",
                axum::routing::post(|| async { (http::StatusCode::PAYLOAD_TOO_LARGE, "too large") }),
            )
            .route(
                "/slow",
                axum::routing::get(|| async {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    "ok"
                }),
            );
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(serve(listener, router, options, async {
            let _ = stopped.await;
        }));
        (addr, stop)
    }

    /// Send a whole request on `connection` and read the status line of the answer.
    async fn status_line(connection: &mut tokio::net::TcpStream) -> String {
        connection
            .write_all(b"GET / HTTP/1.1\r\nhost: test\r\n\r\n")
            .await
            .expect("write");
        let mut reply = vec![0; 1024];
        let read = connection.read(&mut reply).await.expect("read");
        String::from_utf8_lossy(&reply[..read])
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned()
    }

    /// A client trickling its request's head is cut off, and not given a lingering close on top.
    #[tokio::test]
    async fn a_client_trickling_its_headers_is_cut_off() {
        let open_connections = prometheus_client::metrics::gauge::Gauge::default();
        let (addr, _stop) = start(ServeOptions {
            idle_timeout: Duration::from_millis(300),
            open_connections: open_connections.clone(),
            ..ServeOptions::default()
        })
        .await;
        let mut slow = tokio::net::TcpStream::connect(addr).await.expect("connect");
        slow.write_all(b"GET / HTTP/1.1\r\nhost: te")
            .await
            .expect("write");
        assert!(closed_by_the_server(&mut slow).await, "open after 10 s");
        assert!(
            all_closed_soon(&open_connections).await,
            "still open, and the client has not closed"
        );

        // A client that sends its request in time is served.
        let mut prompt = tokio::net::TcpStream::connect(addr).await.expect("connect");
        assert_eq!(status_line(&mut prompt).await, "HTTP/1.1 200 OK");
    }

    /// Whether `open_connections` falls to 0 within a second: much sooner than a lingering
    /// close would end for a client that does not close ([`linger::LINGER_TIMEOUT`]).
    async fn all_closed_soon(open_connections: &prometheus_client::metrics::gauge::Gauge) -> bool {
        for _ in 0..100 {
            if open_connections.get() == 0 {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    /// A keep-alive connection its client closes is closed at once: the lingering close finds
    /// the client's end of stream on its first read.
    #[tokio::test]
    async fn a_connection_its_client_closed_is_not_lingered_on() {
        let open_connections = prometheus_client::metrics::gauge::Gauge::default();
        let (addr, _stop) = start(ServeOptions {
            open_connections: open_connections.clone(),
            ..ServeOptions::default()
        })
        .await;
        let mut connection = tokio::net::TcpStream::connect(addr).await.expect("connect");
        assert_eq!(status_line(&mut connection).await, "HTTP/1.1 200 OK");
        assert_eq!(status_line(&mut connection).await, "HTTP/1.1 200 OK");
        assert_eq!(open_connections.get(), 1);
        drop(connection);
        assert!(all_closed_soon(&open_connections).await, "still open");
    }

    /// Read until the server closes `connection`; whether it did within 10 s.
    async fn closed_by_the_server(connection: &mut tokio::net::TcpStream) -> bool {
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), connection.read_to_end(&mut rest))
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn a_client_that_never_sends_a_byte_is_cut_off() {
        let open_connections = prometheus_client::metrics::gauge::Gauge::default();
        let (addr, _stop) = start(ServeOptions {
            idle_timeout: Duration::from_millis(300),
            open_connections: open_connections.clone(),
            ..ServeOptions::default()
        })
        .await;
        let mut silent = tokio::net::TcpStream::connect(addr).await.expect("connect");
        assert!(closed_by_the_server(&mut silent).await, "open after 10 s");
        assert_eq!(
            open_connections.get(),
            0,
            "counted as closed before the socket closes"
        );
        // Half an HTTP/2 preface, then nothing: still deciding the protocol, still cut off.
        let mut undecided = tokio::net::TcpStream::connect(addr).await.expect("connect");
        undecided.write_all(b"PRI * HTTP/2").await.expect("write");
        assert!(closed_by_the_server(&mut undecided).await, "open after 10 s");
    }

    #[tokio::test]
    async fn a_request_in_flight_keeps_its_connection_past_the_idle_timeout() {
        let (addr, _stop) = start(ServeOptions {
            idle_timeout: Duration::from_millis(200),
            ..ServeOptions::default()
        })
        .await;
        let mut connection = tokio::net::TcpStream::connect(addr).await.expect("connect");
        connection
            .write_all(b"GET /slow HTTP/1.1\r\nhost: test\r\n\r\n")
            .await
            .expect("write");
        let mut reply = vec![0; 1024];
        let read = connection.read(&mut reply).await.expect("read");
        let reply = String::from_utf8_lossy(&reply[..read]);
        assert!(reply.starts_with("HTTP/1.1 200 OK"), "{reply}");
        // Unused once answered: closed like any other.
        assert!(closed_by_the_server(&mut connection).await, "open after 10 s");
    }

    #[tokio::test]
    async fn an_idle_http2_connection_is_closed() {
        let (addr, _stop) = start(ServeOptions {
            idle_timeout: Duration::from_millis(300),
            ..ServeOptions::default()
        })
        .await;
        let mut idle = tokio::net::TcpStream::connect(addr).await.expect("connect");
        // The client preface and an empty SETTINGS frame: a complete HTTP/2 handshake, no streams.
        idle.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
            .await
            .expect("write");
        assert!(closed_by_the_server(&mut idle).await, "open after 10 s");
    }

    #[tokio::test]
    async fn connections_past_the_limit_wait_until_one_closes() {
        let open_connections = prometheus_client::metrics::gauge::Gauge::default();
        let (addr, _stop) = start(ServeOptions {
            max_connections: 2,
            open_connections: open_connections.clone(),
            ..ServeOptions::default()
        })
        .await;
        let mut first = tokio::net::TcpStream::connect(addr).await.expect("connect");
        assert_eq!(status_line(&mut first).await, "HTTP/1.1 200 OK");
        let mut second = tokio::net::TcpStream::connect(addr).await.expect("connect");
        assert_eq!(status_line(&mut second).await, "HTTP/1.1 200 OK");
        assert_eq!(open_connections.get(), 2);

        // The kernel accepts the third, but the server does not take it up yet.
        let mut third = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let waiting = tokio::time::timeout(Duration::from_millis(300), status_line(&mut third)).await;
        assert!(waiting.is_err(), "a third connection was served over the limit");
        drop(first);
        let served = tokio::time::timeout(Duration::from_secs(10), async {
            let mut reply = vec![0; 1024];
            let read = third.read(&mut reply).await.expect("read");
            String::from_utf8_lossy(&reply[..read]).into_owned()
        })
        .await
        .expect("served once a connection closed");
        assert!(served.starts_with("HTTP/1.1 200 OK"), "{served}");
    }

    /// POST `length` bytes to `/refuse`, framed with a `content-length` or chunked, all of it
    /// before reading anything (as a simple client does), then read the reply to the end.
    async fn upload_then_read(addr: SocketAddr, length: usize, chunked: bool) -> std::io::Result<String> {
        const CHUNK: usize = 64 << 10;
        let mut connection = tokio::net::TcpStream::connect(addr).await?;
        let framing = if chunked {
            "transfer-encoding: chunked".to_owned()
        } else {
            format!("content-length: {length}")
        };
        let head = format!("POST /refuse HTTP/1.1\r\nhost: test\r\n{framing}\r\n\r\n");
        connection.write_all(head.as_bytes()).await?;
        let chunk = vec![b'x'; CHUNK];
        for _ in 0..length / CHUNK {
            if chunked {
                connection.write_all(format!("{CHUNK:x}\r\n").as_bytes()).await?;
            }
            connection.write_all(&chunk).await?;
            if chunked {
                connection.write_all(b"\r\n").await?;
            }
        }
        if chunked {
            connection.write_all(b"0\r\n\r\n").await?;
        }
        let mut reply = Vec::new();
        connection.read_to_end(&mut reply).await?;
        Ok(String::from_utf8_lossy(&reply).into_owned())
    }

    /// A client that sends its whole body before reading gets the answer the server gave
    /// without reading that body: the server drains the rest before it closes instead of
    /// resetting the connection under the unread bytes (which fails the client's writes).
    #[tokio::test]
    async fn an_answer_given_before_the_body_was_read_reaches_a_client_still_sending_it() {
        let (addr, _stop) = start(ServeOptions::default()).await;
        for chunked in [false, true] {
            let reply =
                tokio::time::timeout(Duration::from_secs(10), upload_then_read(addr, 16 << 20, chunked))
                    .await
                    .expect("answered within 10 s")
                    .unwrap_or_else(|error| panic!("chunked: {chunked}: {error}"));
            assert!(reply.starts_with("HTTP/1.1 413 "), "{reply}");
            assert!(reply.contains("\r\nconnection: close\r\n"), "{reply}");
            assert!(reply.ends_with("\r\n\r\ntoo large"), "{reply}");
        }
    }

    /// Only an answer that leaves its body unread ends the connection: one whose body was read
    /// keeps it for the next request.
    #[tokio::test]
    async fn an_answer_says_the_connection_closes_only_when_the_body_was_left_unread() {
        let (addr, _stop) = start(ServeOptions::default()).await;
        let mut connection = tokio::net::TcpStream::connect(addr).await.expect("connect");
        for round in 0..2 {
            connection
                .write_all(b"POST /length HTTP/1.1\r\nhost: test\r\ncontent-length: 5\r\n\r\nhello")
                .await
                .expect("write");
            let mut reply = vec![0; 1024];
            let read = connection.read(&mut reply).await.expect("read");
            let reply = String::from_utf8_lossy(&reply[..read]).into_owned();
            assert!(reply.starts_with("HTTP/1.1 200 "), "round {round}: {reply}");
            assert!(!reply.contains("connection: close"), "round {round}: {reply}");
            assert!(reply.ends_with("\r\n\r\n5"), "round {round}: {reply}");
        }
        // The same small body refused unread: the answer says the connection ends, and it does.
        connection
            .write_all(b"POST /refuse HTTP/1.1\r\nhost: test\r\ncontent-length: 5\r\n\r\nhello")
            .await
            .expect("write");
        let mut reply = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), connection.read_to_end(&mut reply))
            .await
            .expect("closed within 10 s")
            .expect("read");
        let reply = String::from_utf8_lossy(&reply);
        assert!(reply.starts_with("HTTP/1.1 413 "), "{reply}");
        assert!(reply.contains("\r\nconnection: close\r\n"), "{reply}");
    }

    /// A client that reads while it sends (reqwest, browsers) gets the early answer every time
    /// too: without a lingering close the reset fails its writes or overtakes the answer, a race
    /// that the first attempt may win but later ones lose.
    #[tokio::test]
    async fn an_early_answer_reaches_a_client_reading_while_it_sends_every_time() {
        let (addr, _stop) = start(ServeOptions::default()).await;
        // A new connection each time: the server closes each one after its early answer.
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .expect("client");
        for attempt in 0..10 {
            let sent = client
                .post(format!("http://{addr}/refuse"))
                .body(vec![b'x'; 16 << 20])
                .send();
            let response = tokio::time::timeout(Duration::from_secs(10), sent)
                .await
                .expect("answered within 10 s")
                .unwrap_or_else(|error| panic!("attempt {attempt}: {error:?}"));
            assert_eq!(response.status(), 413);
            let body = tokio::time::timeout(Duration::from_secs(10), response.text())
                .await
                .expect("body within 10 s")
                .unwrap_or_else(|error| panic!("attempt {attempt}: {error:?}"));
            assert_eq!(body, "too large");
        }
    }
}
