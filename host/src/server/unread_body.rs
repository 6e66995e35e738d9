//! Saying `Connection: close` on an answer given before the request's body was read.
//!
//! A request refused before its handler reads the body — a bad API key, an unknown route, a
//! rate limit, a body over the limit — leaves that body unread. hyper then reads what has
//! already arrived and, if more is on its way, closes the connection after the answer, but for
//! HTTP/1.1 it does not say so. A client that pools connections would send its next request down
//! the closing connection, and a `POST` sent there fails without a retry. So the answer says
//! it. (The lingering close, in the `linger` module, keeps the answer itself from being lost.)
//!
//! HTTP/2 needs none of this: an unread body ends its own stream, not the connection.

use hyper::body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

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

/// A request body that notes when it has been read to its end.
pub(super) struct WatchedBody<B> {
    inner: B,
    /// `None` when there is nothing to watch.
    reached_end: Option<Arc<AtomicBool>>,
}

impl<B> WatchedBody<B> {
    fn mark_end(&mut self) {
        if let Some(reached_end) = self.reached_end.take() {
            reached_end.store(true, Ordering::Release);
        }
    }
}

/// `request` with its body watched, and what its answer checks; `None` (and nothing allocated)
/// for an HTTP/2 request or one whose headers say it has no body, the usual `GET`.
pub(super) fn watch<B: Body>(request: http::Request<B>) -> (http::Request<WatchedBody<B>>, Option<BodyEnd>) {
    let needs_watching = request.version() < http::Version::HTTP_2 && !request.body().is_end_stream();
    let reached_end = needs_watching.then(|| Arc::new(AtomicBool::new(false)));
    let body_end = reached_end.clone().map(BodyEnd);
    let request = request.map(|inner| WatchedBody { inner, reached_end });
    (request, body_end)
}

impl<B: Body + Unpin> Body for WatchedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(context);
        match &polled {
            Poll::Ready(None) => this.mark_end(),
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.mark_end(),
            _ => {}
        }
        polled
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
    use http_body_util::{BodyExt, Empty, Full};

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
        let (request, body_end) = watch(request);
        let read = request.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(read, Bytes::from_static(b"{\"params\":{}}"));
        assert_eq!(answer_after(body_end), None);
    }

    #[tokio::test]
    async fn an_answer_to_an_unread_body_closes_the_connection() {
        let request = http::Request::new(Full::new(Bytes::from_static(b"{\"params\":{}}")));
        let (request, body_end) = watch(request);
        drop(request);
        assert_eq!(
            answer_after(body_end),
            Some(http::HeaderValue::from_static("close"))
        );
    }

    #[test]
    fn requests_without_a_body_or_over_http2_are_not_watched() {
        let (_, body_end) = watch(http::Request::new(Empty::<Bytes>::new()));
        assert!(body_end.is_none(), "a request without a body");
        let mut request = http::Request::new(Full::new(Bytes::from_static(b"x")));
        *request.version_mut() = http::Version::HTTP_2;
        let (_, body_end) = watch(request);
        assert!(body_end.is_none(), "an HTTP/2 request");
    }
}
