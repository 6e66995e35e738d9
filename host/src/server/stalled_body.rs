//! A request body that fails once its client has sent nothing for too long.
//!
//! While a handler reads a body its request is in flight, so the connection's idle timer does
//! not run; a client that sends its headers and then a byte now and then (slowloris on the body)
//! would otherwise hold a connection and a handler for as long as it likes. The wait is timed
//! only while the body is polled and has nothing: a body a slow upstream reads slowly
//! (passthrough) is not the client's delay.

use hyper::body::{Body, Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
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

/// `inner`, failing with [`BodyStalled`] when a poll finds no data for `patience`.
pub(super) struct StalledBodyGuard<B> {
    inner: B,
    patience: Duration,
    /// Armed when a poll finds nothing, disarmed by the next frame; the common case (a body
    /// that arrived with the headers) never arms it.
    waiting: Option<Pin<Box<Sleep>>>,
}

impl<B> StalledBodyGuard<B> {
    pub(super) fn new(inner: B, patience: Duration) -> Self {
        Self {
            inner,
            patience,
            waiting: None,
        }
    }
}

impl<B> Body for StalledBodyGuard<B>
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
    use http_body_util::{BodyExt, StreamBody};

    type Part = Result<Frame<Bytes>, std::io::Error>;
    type FedByHand = StalledBodyGuard<StreamBody<mpsc::Receiver<Part>>>;

    /// A body whose parts arrive when the test sends them.
    fn body_fed_by_hand() -> (mpsc::Sender<Part>, FedByHand) {
        let (sender, receiver) = mpsc::channel(1);
        (
            sender,
            StalledBodyGuard::new(StreamBody::new(receiver), Duration::from_secs(30)),
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
}
