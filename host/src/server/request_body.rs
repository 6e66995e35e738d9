//! The request body as the server hands it to the router: one wrapper that fails a body its
//! client stopped sending, and notes whether the body was read to its end.
//!
//! **Stalls.** While a handler reads a body its request is in flight, so the connection's idle
//! timer does not run; a client that sends its headers and then a byte now and then (slowloris
//! on the body) would otherwise hold a connection and a handler for as long as it likes. The
//! wait is timed only while the body is polled and has nothing: a body a slow upstream reads
//! slowly (passthrough) is not the client's delay.
//!
//! **Unread bodies.** A request refused before its handler reads the body — a bad API key, an
//! unknown route, a rate limit, a body over the limit — leaves that body unread. hyper then
//! reads what has already arrived and, if more is on its way, closes the connection after the
//! answer, but for HTTP/1.1 it does not say so. A client that pools connections would send its
//! next request down the closing connection, and a `POST` sent there fails without a retry. So
//! the answer says `Connection: close` (see [`BodyEnd`]). The lingering close, in the `linger`
//! module, keeps the answer itself from being lost. HTTP/2 needs none of this: an unread body
//! ends its own stream, not the connection.

use hyper::body::{Body, Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Sleep;

/// The client sent none of its request body for the allowed time.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the client sent no part of its request body for {0:?}")]
pub struct BodyStalled(pub Duration);

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

/// A request body failing with [`BodyStalled`] when a poll finds no data for `patience`, and
/// noting when it has been read to its end.
pub(super) struct GuardedBody<B> {
    inner: B,
    patience: Duration,
    /// Armed when a poll finds nothing, disarmed by the next frame; the common case (a body
    /// that arrived with the headers) never arms it.
    waiting: Option<Pin<Box<Sleep>>>,
    /// Set once the body has been read to its end; `None` when nobody asks.
    reached_end: Option<Arc<AtomicBool>>,
}

impl<B> GuardedBody<B> {
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
                this.waiting = None;
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
                let patience = this.patience;
                let waiting = this
                    .waiting
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(patience)));
                match waiting.as_mut().poll(context) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyStalled(patience))))),
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
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_secs(20)).await;
                sender.send(part(b"x")).await.expect("send");
            }
        });
        let whole = body
            .collect()
            .await
            .expect("every part came within 30 s of the last");
        assert_eq!(whole.to_bytes(), Bytes::from_static(b"xxx"));
        trickle.await.expect("sender");
    }

    fn answer_after(body_end: Option<BodyEnd>) -> Option<http::HeaderValue> {
        let mut response = http::Response::new(());
        if let Some(body_end) = body_end {
            body_end.close_unless_read(&mut response);
        }
        response.headers().get(http::header::CONNECTION).cloned()
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
