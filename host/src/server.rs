//! Serving the API: one acceptor hands each connection to one of a fixed set of serving
//! threads, each running its own single-threaded tokio runtime (thread-per-core).
//!
//! A request then runs start to finish on one thread: the handler, the connector instance and
//! the upstream exchange — whose pooled connections belong to that thread's runtime too (see
//! [`crate::upstream`]). On a work-stealing runtime the same request hops between workers and
//! wakes idle ones along the way; on a busy gateway that cross-CPU traffic cost more than the
//! balancing it buys. Connections are dealt round-robin, so long-lived keep-alive clients spread
//! evenly; the streams of one HTTP/2 connection all run on the thread it was dealt to, so a
//! single HTTP/2 client uses one core (HTTP/1.1 clients with a connection pool use them all).
//! Nothing moves a busy thread's work elsewhere, so nothing may hold a thread: blocking
//! work goes to the blocking pool, and a connector computing for longer than an epoch tick
//! yields (see `Runtime::new_store`).

use axum::serve::Listener;
use std::future::Future;
use std::net::SocketAddr;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};

/// Accepted connections waiting for a serving thread; past this the acceptor waits and the
/// kernel's backlog holds the rest.
const HANDOFF_QUEUE: usize = 256;

/// Serve `router` on `listener` with `threads` serving threads until `shutdown` resolves, then
/// let every thread drain its in-flight requests.
pub async fn serve(
    mut listener: TcpListener,
    router: axum::Router,
    threads: usize,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let local_addr = listener.local_addr()?;
    let (stop, stopped) = watch::channel(false);
    let mut handoffs = Vec::new();
    let mut finished = Vec::new();
    for index in 0..threads.max(1) {
        let (handoff, incoming) = mpsc::channel(HANDOFF_QUEUE);
        let (done, finished_serving) = oneshot::channel();
        let thread = ServingThread {
            incoming,
            local_addr,
            router: router.clone(),
            stopped: stopped.clone(),
        };
        std::thread::Builder::new()
            .name(format!("sluice-http-{index}"))
            .spawn(move || {
                let _ = done.send(thread.run());
            })?;
        handoffs.push(handoff);
        finished.push(finished_serving);
    }

    tokio::pin!(shutdown);
    let mut next = 0;
    loop {
        let (connection, _peer) = tokio::select! {
            accepted = Listener::accept(&mut listener) => accepted,
            () = &mut shutdown => break,
        };
        // Replies go out as soon as they are written: an API answer is one small write, which
        // Nagle's algorithm could otherwise hold back until the caller acknowledges the last one.
        if let Err(error) = connection.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY");
        }
        // Leave this runtime's reactor; the serving thread registers it with its own.
        let connection = match connection.into_std() {
            Ok(connection) => connection,
            Err(error) => {
                tracing::warn!(%error, "could not hand over an accepted connection");
                continue;
            }
        };
        if handoffs[next].send(connection).await.is_err() {
            // That thread has stopped; stop the others and report why it did.
            tracing::error!(thread = next, "a serving thread stopped; shutting down");
            break;
        }
        next = (next + 1) % handoffs.len();
    }

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

/// One serving thread: its runtime, the connections dealt to it, and the stop signal.
struct ServingThread {
    incoming: mpsc::Receiver<std::net::TcpStream>,
    local_addr: SocketAddr,
    router: axum::Router,
    stopped: watch::Receiver<bool>,
}

impl ServingThread {
    fn run(self) -> anyhow::Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async move {
            let pacemaker = tokio::spawn(keep_the_timer_driver_scheduled());
            let mut stopped = self.stopped;
            let listener = HandedOver {
                incoming: self.incoming,
                local_addr: self.local_addr,
            };
            let served = axum::serve(listener, self.router)
                .with_graceful_shutdown(async move {
                    let _ = stopped.wait_for(|stop| *stop).await;
                })
                .await;
            pacemaker.abort();
            Ok(served?)
        })
    }
}

/// The connections the acceptor deals to one serving thread, as an axum listener.
struct HandedOver {
    incoming: mpsc::Receiver<std::net::TcpStream>,
    local_addr: SocketAddr,
}

impl Listener for HandedOver {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        loop {
            let Some(connection) = self.incoming.recv().await else {
                // The acceptor is gone: shutdown is under way and stops this loop.
                return std::future::pending().await;
            };
            let peer = connection.peer_addr();
            match (TcpStream::from_std(connection), peer) {
                (Ok(connection), Ok(peer)) => return (connection, peer),
                // The peer hung up before the hand-over completed.
                (Err(error), _) | (_, Err(error)) => {
                    tracing::debug!(%error, "dropped a connection during hand-over")
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local_addr)
    }
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
        let server = tokio::spawn(serve(listener, router, 3, async {
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
}
