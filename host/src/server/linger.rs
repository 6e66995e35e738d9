//! Closing a connection without losing its last answer: a lingering close, as nginx does it.
//!
//! A server that answers before it has read the whole request — `413` for a body over a limit,
//! `408` for a stalled one — leaves the rest of that body on its way. hyper then writes the
//! answer, shuts the write side down and drops the socket; closing a socket with unread bytes
//! in its receive buffer, or receiving more after the close, makes the kernel reset the
//! connection, and a reset discards what the client had not read yet. The client sees
//! "connection reset" or a broken pipe instead of the answer: nearly always if it sends its
//! whole body before it reads, often if it reads while it sends.
//!
//! So hyper only borrows the socket ([`Lent`]); when hyper drops it, it goes back to the
//! connection's task, which shuts the write side down (the client sees the answer end) and then
//! reads and throws away whatever the client still sends until the client closes too, within
//! [`LINGER_TIME`] in all and [`LINGER_TIMEOUT`] for each read. A client that closed first —
//! the usual end of a keep-alive connection — costs one read, which finds its end of stream. A
//! connection cut off for its client's slowness (the idle timeout, the header-read timeout) is
//! not handed to this at all: there is no answer to save.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

/// Longest a closing connection reads what its client still sends, in all (nginx's
/// `lingering_time`, and the same value). It is the time a client that sends its whole body
/// before it reads an answer has to finish sending: 30 s covers the largest body the gateway
/// accepts (64 MiB through passthrough by default) on a 20 Mbit/s uplink. A lingering
/// connection keeps its place in the connection limit and delays a graceful shutdown by at
/// most this; a client cannot hold it for longer by sending slowly than it could by sending a
/// slow request body.
pub(super) const LINGER_TIME: Duration = Duration::from_secs(30);

/// Longest a closing connection waits for the next bytes (nginx's `lingering_timeout`, and the
/// same value). A client still sending has data in flight all the time; one that sends nothing
/// for this long has read the answer or is gone. 5 s outlasts a segment lost twice (TCP's
/// retransmission timeout starts at 1 s and doubles).
pub(super) const LINGER_TIMEOUT: Duration = Duration::from_secs(5);

/// What a lingering connection reads into, allocated only for one that lingers: hyper's
/// buffers are gone by then, so a lingering connection holds less than a serving one.
const DISCARD_BUFFER: usize = 16 << 10;

/// `stream`, lent to hyper; the returned receiver gets it back when hyper drops it (not after
/// an upgrade, which keeps it).
pub(super) fn lend(stream: TcpStream) -> (Lent, oneshot::Receiver<TcpStream>) {
    let (owner, returned) = oneshot::channel();
    let lent = Lent {
        stream: Some(stream),
        owner: Some(owner),
    };
    (lent, returned)
}

/// A socket that goes back to its owner when dropped (see [`lend`]). Reads and writes go
/// straight to the socket.
pub(super) struct Lent {
    /// Taken only by `drop`.
    stream: Option<TcpStream>,
    owner: Option<oneshot::Sender<TcpStream>>,
}

impl Lent {
    fn stream(self: Pin<&mut Self>) -> io::Result<Pin<&mut TcpStream>> {
        match self.get_mut().stream.as_mut() {
            Some(stream) => Ok(Pin::new(stream)),
            None => Err(io::ErrorKind::NotConnected.into()),
        }
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        if let (Some(stream), Some(owner)) = (self.stream.take(), self.owner.take()) {
            // The owner's task has ended (only after an upgrade): the socket just closes.
            let _ = owner.send(stream);
        }
    }
}

impl AsyncRead for Lent {
    fn poll_read(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.stream() {
            Ok(stream) => stream.poll_read(context, buf),
            Err(error) => Poll::Ready(Err(error)),
        }
    }
}

impl AsyncWrite for Lent {
    fn poll_write(self: Pin<&mut Self>, context: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.stream() {
            Ok(stream) => stream.poll_write(context, buf),
            Err(error) => Poll::Ready(Err(error)),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.stream() {
            Ok(stream) => stream.poll_write_vectored(context, bufs),
            Err(error) => Poll::Ready(Err(error)),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.as_ref().is_some_and(TcpStream::is_write_vectored)
    }

    fn poll_flush(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.stream() {
            Ok(stream) => stream.poll_flush(context),
            Err(error) => Poll::Ready(Err(error)),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.stream() {
            Ok(stream) => stream.poll_shutdown(context),
            Err(error) => Poll::Ready(Err(error)),
        }
    }
}

/// Shut down the write side of `stream`, whose server is done with it, and read what its
/// client still sends until the client closes too or has had [`LINGER_TIME`] to do so; then
/// `stream` can close without a reset (see the module documentation).
pub(super) async fn drain(stream: &mut TcpStream) {
    // The usual end: the client closed first and its end of stream is already here.
    match stream.try_read(&mut [0; 1]) {
        Ok(0) => return,
        Err(error) if error.kind() != io::ErrorKind::WouldBlock => return,
        _ => {}
    }
    // hyper shuts the write side down when it ends a connection normally; after an error it
    // may not have, and the client must see where the answer ends either way.
    if stream.shutdown().await.is_err() {
        return;
    }
    let deadline = tokio::time::Instant::now() + LINGER_TIME;
    let mut discard = vec![0; DISCARD_BUFFER];
    loop {
        let wait_until = deadline.min(tokio::time::Instant::now() + LINGER_TIMEOUT);
        // While the client keeps sending, each read is ready at once and arms no timer.
        match tokio::time::timeout_at(wait_until, stream.read(&mut discard)).await {
            Ok(Ok(read)) if read > 0 => continue,
            // Closed, reset, silent for too long, or out of time.
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;
    use tokio::time::Instant;

    /// Both ends of a loopback connection: the server's and the client's.
    async fn connected() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        (server, client)
    }

    /// The usual end of a connection costs no waiting: the first read finds the end of stream.
    #[tokio::test(start_paused = true)]
    async fn a_client_that_closed_first_is_not_lingered_on() {
        let (mut server, client) = connected().await;
        drop(client);
        let started = Instant::now();
        drain(&mut server).await;
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    /// A client still sending sees the answer end (the write side is shut down), may go on
    /// sending, and the server closes as soon as the client does.
    #[tokio::test(start_paused = true)]
    async fn the_client_sees_the_answer_end_while_the_server_reads_the_rest() {
        let (mut server, mut client) = connected().await;
        server.write_all(b"answer").await.expect("write");
        let closing = tokio::spawn(async move { drain(&mut server).await });
        // The client, still sending, reads the answer and the end of it.
        client.write_all(&[b'x'; 100_000]).await.expect("write");
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.expect("read");
        assert_eq!(answer, b"answer");
        client.write_all(&[b'x'; 100_000]).await.expect("still accepted");
        drop(client);
        let started = Instant::now();
        closing.await.expect("closed");
        assert!(started.elapsed() < LINGER_TIMEOUT, "{:?}", started.elapsed());
    }

    /// A client that neither sends nor closes holds the connection for one read's timeout.
    #[tokio::test(start_paused = true)]
    async fn a_silent_client_is_given_the_linger_timeout() {
        let (mut server, _silent) = connected().await;
        let started = Instant::now();
        drain(&mut server).await;
        assert_eq!(started.elapsed(), LINGER_TIMEOUT);
    }

    /// A client that never stops sending holds the connection for the whole linger time, and
    /// not a moment longer.
    #[tokio::test(start_paused = true)]
    async fn a_client_that_keeps_sending_is_given_the_linger_time() {
        let (mut server, mut client) = connected().await;
        let trickle = tokio::spawn(async move {
            loop {
                if client.write_all(b"x").await.is_err() {
                    break;
                }
                tokio::time::sleep(LINGER_TIMEOUT / 2).await;
            }
        });
        let started = Instant::now();
        drain(&mut server).await;
        assert_eq!(started.elapsed(), LINGER_TIME);
        trickle.abort();
    }
}
