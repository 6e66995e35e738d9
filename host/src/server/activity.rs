//! Whether a connection is in use, so that one nobody uses can be closed whatever its protocol.
//!
//! hyper's header-read timer covers an HTTP/1.1 client that trickles its headers or idles
//! between requests, but nothing of its own closes a connection still deciding its protocol
//! (a client that never sends a byte) or an HTTP/2 connection without streams. Counting the
//! requests in flight — from the moment the service is called until the response body is
//! dropped, so a long download or a slow upstream keeps the connection in use — covers all of
//! them with one rule.

use hyper::body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// Requests in flight on one connection and when the last one began or ended.
#[derive(Debug)]
pub(super) struct Activity {
    opened: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds after `opened` of the last request's start or end.
    last_change_ms: AtomicU64,
}

impl Activity {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Self {
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_change_ms: AtomicU64::new(0),
        })
    }

    /// A request has started; it counts as in flight until the returned guard is dropped.
    pub(super) fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.touch();
        InFlight(self.clone())
    }

    /// How long the connection has had no request in flight; `None` while one is.
    pub(super) fn idle_for(&self) -> Option<Duration> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let since_open = self.opened.elapsed();
        let last_change = Duration::from_millis(self.last_change_ms.load(Ordering::Acquire));
        Some(since_open.saturating_sub(last_change))
    }

    fn touch(&self) {
        let since_open = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_change_ms.store(since_open, Ordering::Release);
    }
}

/// One request in flight; dropping it ends the request.
#[derive(Debug)]
pub(super) struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        // Touch first: a check that sees the count at zero then sees this request's end.
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request in flight until hyper has sent it and drops it.
pub(super) struct TrackedBody {
    pub(super) inner: axum::body::Body,
    pub(super) _in_flight: InFlight,
}

impl Body for TrackedBody {
    type Data = <axum::body::Body as Body>::Data;
    type Error = <axum::body::Body as Body>::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(context)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_is_idle_only_while_no_request_is_in_flight() {
        let activity = Activity::new();
        assert!(activity.idle_for().is_some(), "a new connection is idle");
        let first = activity.begin();
        let second = activity.begin();
        assert_eq!(activity.idle_for(), None);
        drop(first);
        assert_eq!(activity.idle_for(), None, "one request is still in flight");
        std::thread::sleep(Duration::from_millis(20));
        drop(second);
        let idle = activity.idle_for().expect("idle once both ended");
        assert!(
            idle < Duration::from_millis(20),
            "idle counts from the last end: {idle:?}"
        );
    }
}
