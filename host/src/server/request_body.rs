//! The request body as the server hands it to the router: one wrapper that fails a body its
//! client stopped sending, and notes whether the body was read to its end.
//!
//! **Stalls.** While a handler reads a body its request is in flight, so the connection's idle
//! timer does not run; a client that sends its headers and then a byte now and then (slowloris
//! on the body) would otherwise hold a connection and a handler for as long as it likes. So a
//! body fails when the client sends nothing of it for the patience (the idle timeout), and also
//! when all its waits together pass the patience plus one second per [`MIN_BYTES_PER_SECOND`]
//! bytes it did send: a byte every 29 s never stalls, but it is far below any real client's
//! rate. The wait is timed only while the body is polled and has nothing: a body a slow upstream
//! reads slowly (passthrough) is not the client's delay.
//!
//! **Unread bodies.** A request refused before its handler reads the body — a bad API key, an
//! unknown route, a rate limit, a body over the limit — leaves that body unread. hyper then
//! reads what has already arrived and, if more is on its way, closes the connection after the
//! answer, but for HTTP/1.1 it does not say so. A client that pools connections would send its
//! next request down the closing connection, and a `POST` sent there fails without a retry. So
//! the answer says `Connection: close` (see [`BodyEnd`]). The lingering close, in the `linger`
//! module, keeps the answer itself from being lost. HTTP/2 needs none of this: an unread body
//! ends its own stream, not the connection.

use bytes::Buf;
use hyper::body::{Body, Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Sleep;

/// The slowest average rate a client may send a request body at, once its first patience is
/// used up (as Apache's `mod_reqtimeout` does; a phone on a poor network sends far faster).
pub const MIN_BYTES_PER_SECOND: u64 = 500;

/// The client sent its request body too slowly: none of it for the allowed time, or on average
/// slower than [`MIN_BYTES_PER_SECOND`].
#[derive(Debug, Clone, Copy, thiserror::Error)]
pub enum BodyStalled {
    /// Nothing arrived for this long.
    #[error("the client sent no part of its request body for {0:?}")]
    Silent(Duration),
    /// The client spent this long waiting to send this many bytes.
    #[error(
        "the client sent its request body too slowly ({bytes} bytes in {waited:?} of waiting; \
         at least {MIN_BYTES_PER_SECOND} bytes per second are expected)"
    )]
    TooSlow {
        /// Bytes received before the body was given up.
        bytes: u64,
        /// Time spent waiting for them.
        waited: Duration,
    },
}

impl BodyStalled {
    /// The stalled body behind `error`, if it or anything in its chain of sources is one.
    pub fn found_in(error: &(dyn std::error::Error + 'static)) -> Option<Self> {
        std::iter::successors(Some(error), |error| error.source())
            .find_map(|error| error.downcast_ref::<Self>().copied())
    }
}

/// Whether a request's body has been read to its end, seen from its answer.
pub(super) struct BodyEnd(Arc<AtomicBool>);

impl BodyEnd {
    /// Mark `response` as the connection's last unless the body was read to its end.
    pub(super) fn close_unless_read<B>(self, response: &mut http::Response<B>) {
        if !self.0.load(Ordering::Acquire) {
            response
                .headers_mut()
                .entry(http::header::CONNECTION)
                .or_insert(http::HeaderValue::from_static("close"));
        }
    }
}

/// A request body failing with [`BodyStalled`] when a poll finds no data for `patience` or the
/// client's waits add up to more than its rate allows, and noting when it has been read to its
/// end.
pub(super) struct GuardedBody<B> {
    inner: B,
    patience: Duration,
    /// Armed when a poll finds nothing, disarmed by the next frame; the common case (a body
    /// that arrived with the headers) never arms it.
    waiting: Option<Wait>,
    /// Time spent in finished waits.
    waited: Duration,
    /// Bytes received so far.
    received: u64,
    /// Set once the body has been read to its end; `None` when nobody asks.
    reached_end: Option<Arc<AtomicBool>>,
}

/// One wait for the client: when it began and when it runs out.
struct Wait {
    since: tokio::time::Instant,
    timer: Pin<Box<Sleep>>,
    /// Whether running out means silence (else the rate).
    silent: bool,
}

impl<B> GuardedBody<B> {
    /// What the client may still wait in total: the patience, plus a second per
    /// [`MIN_BYTES_PER_SECOND`] bytes it sent, less what it has waited already.
    fn allowance_left(&self) -> Duration {
        let earned = Duration::from_millis(self.received.saturating_mul(1000) / MIN_BYTES_PER_SECOND);
        (self.patience + earned).saturating_sub(self.waited)
    }

    fn start_waiting(&self) -> Wait {
        let allowance = self.allowance_left();
        let silent = self.patience <= allowance;
        Wait {
            since: tokio::time::Instant::now(),
            timer: Box::pin(tokio::time::sleep(self.patience.min(allowance))),
            silent,
        }
    }

    fn mark_end(&mut self) {
        if let Some(reached_end) = self.reached_end.take() {
            reached_end.store(true, Ordering::Release);
        }
    }
}

/// `request` with its body guarded, and what its answer checks: `None` (and nothing
/// allocated) for an HTTP/2 request or one whose headers say it has no body, the usual `GET`.
pub(super) fn guard<B: Body>(
    request: http::Request<B>,
    patience: Duration,
) -> (http::Request<GuardedBody<B>>, Option<BodyEnd>) {
    let needs_watching = request.version() < http::Version::HTTP_2 && !request.body().is_end_stream();
    let reached_end = needs_watching.then(|| Arc::new(AtomicBool::new(false)));
    let body_end = reached_end.clone().map(BodyEnd);
    let request = request.map(|inner| GuardedBody {
        inner,
        patience,
        waiting: None,
        waited: Duration::ZERO,
        received: 0,
        reached_end,
    });
    (request, body_end)
}

impl<B> Body for GuardedBody<B>
where
    B: Body + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = B::Data;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(context) {
            Poll::Ready(frame) => {
                if let Some(wait) = this.waiting.take() {
                    this.waited += wait.since.elapsed();
                }
                if let Some(Ok(frame)) = &frame
                    && let Some(data) = frame.data_ref()
                {
                    this.received += data.remaining() as u64;
                }
                // At its end: no frame left, or a frame after which the body says it is done.
                let at_end = match &frame {
                    None => true,
                    Some(Ok(_)) => this.inner.is_end_stream(),
                    Some(Err(_)) => false,
                };
                if at_end {
                    this.mark_end();
                }
                Poll::Ready(frame.map(|frame| frame.map_err(Into::into)))
            }
            Poll::Pending => {
                if this.waiting.is_none() {
                    this.waiting = Some(this.start_waiting());
                }
                let wait = this.waiting.as_mut().expect("armed above");
                match wait.timer.as_mut().poll(context) {
                    Poll::Ready(()) => {
                        let stalled = if wait.silent {
                            BodyStalled::Silent(this.patience)
                        } else {
                            BodyStalled::TooSlow {
                                bytes: this.received,
                                waited: this.waited + wait.since.elapsed(),
                            }
                        };
                        Poll::Ready(Some(Err(Box::new(stalled))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
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
    use bytes::Bytes;
    use futures::SinkExt;
    use futures::channel::mpsc;
    use http_body_util::{BodyExt, Empty, Full, StreamBody};

    type Part = Result<Frame<Bytes>, std::io::Error>;
    type FedByHand = GuardedBody<StreamBody<mpsc::Receiver<Part>>>;

    const PATIENCE: Duration = Duration::from_secs(30);

    /// A body whose parts arrive when the test sends them.
    fn body_fed_by_hand() -> (mpsc::Sender<Part>, FedByHand) {
        let (sender, receiver) = mpsc::channel(1);
        (
            sender,
            guard(http::Request::new(StreamBody::new(receiver)), PATIENCE)
                .0
                .into_body(),
        )
    }

    fn part(bytes: &'static [u8]) -> Part {
        Ok(Frame::data(Bytes::from_static(bytes)))
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stops_arriving_fails_and_names_the_cause() {
        let (mut sender, mut body) = body_fed_by_hand();
        sender.send(part(b"{\"par")).await.expect("send");
        let first = body.frame().await.expect("a frame").expect("data");
        assert_eq!(first.into_data().expect("data"), Bytes::from_static(b"{\"par"));
        // Nothing more comes: after the patience runs out, the next read fails.
        let error = body.frame().await.expect("an outcome").expect_err("stalled");
        assert!(BodyStalled::found_in(error.as_ref()).is_some(), "{error}");
    }

    #[tokio::test(start_paused = true)]
    async fn data_arriving_in_time_resets_the_wait() {
        let (mut sender, body) = body_fed_by_hand();
        let trickle = tokio::spawn(async move {
            // 20 kB every 20 s: 1 kB/s, above the minimum rate.
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_secs(20)).await;
                sender.send(part(&[b'x'; 20_000])).await.expect("send");
            }
        });
        let whole = body
            .collect()
            .await
            .expect("every part came within 30 s of the last");
        assert_eq!(whole.to_bytes().len(), 60_000);
        trickle.await.expect("sender");
    }

    fn answer_after(body_end: Option<BodyEnd>) -> Option<http::HeaderValue> {
        let mut response = http::Response::new(());
        if let Some(body_end) = body_end {
            body_end.close_unless_read(&mut response);
        }
        response.headers().get(http::header::CONNECTION).cloned()
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_trickled_below_the_minimum_rate_fails_though_it_never_stalls() {
        let (mut sender, body) = body_fed_by_hand();
        let trickle = tokio::spawn(async move {
            // A byte every 20 s: each wait is within the patience, but 500 B/s it is not.
            for _ in 0..10 {
                if sender.send(part(b"x")).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_secs(20)).await;
            }
        });
        let started = tokio::time::Instant::now();
        let error = body.collect().await.expect_err("too slow");
        let stalled = BodyStalled::found_in(error.as_ref()).expect("a stalled body");
        assert!(
            matches!(stalled, BodyStalled::TooSlow { bytes: 2, .. }),
            "{stalled:?}"
        );
        // The patience (30 s) plus 2 ms per byte received, spent waiting.
        assert!(
            started.elapsed() < Duration::from_secs(31),
            "{:?}",
            started.elapsed()
        );
        trickle.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_body_that_keeps_the_minimum_rate_is_read() {
        let (mut sender, body) = body_fed_by_hand();
        let sent = tokio::spawn(async move {
            // 600 bytes a second for 100 s: slow, but above the minimum rate.
            for _ in 0..100 {
                tokio::time::sleep(Duration::from_secs(1)).await;
                sender.send(part(&[b'x'; 600])).await.expect("send");
            }
        });
        let whole = body.collect().await.expect("read at 600 B/s").to_bytes();
        assert_eq!(whole.len(), 60_000);
        sent.await.expect("sender");
    }

    #[tokio::test]
    async fn an_answer_to_a_body_read_to_its_end_keeps_the_connection() {
        let request = http::Request::new(Full::new(Bytes::from_static(b"{\"params\":{}}")));
        let (request, body_end) = guard(request, PATIENCE);
        let read = request.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(read, Bytes::from_static(b"{\"params\":{}}"));
        assert_eq!(answer_after(body_end), None);
    }

    #[tokio::test]
    async fn an_answer_to_an_unread_body_closes_the_connection() {
        let request = http::Request::new(Full::new(Bytes::from_static(b"{\"params\":{}}")));
        let (request, body_end) = guard(request, PATIENCE);
        drop(request);
        assert_eq!(
            answer_after(body_end),
            Some(http::HeaderValue::from_static("close"))
        );
    }

    #[test]
    fn requests_without_a_body_or_over_http2_are_not_watched() {
        let (_, body_end) = guard(http::Request::new(Empty::<Bytes>::new()), PATIENCE);
        assert!(body_end.is_none(), "a request without a body");
        let mut request = http::Request::new(Full::new(Bytes::from_static(b"x")));
        *request.version_mut() = http::Version::HTTP_2;
        let (_, body_end) = guard(request, PATIENCE);
        assert!(body_end.is_none(), "an HTTP/2 request");
    }
}
