//! What a guest writes to stdout and stderr: kept in memory, never the gateway's own stdio.
//!
//! Language runtimes print uncaught exceptions and panics there, and connector authors print
//! while debugging, so the output is worth keeping — but it is guest-controlled text. Each
//! instance gets one small buffer shared by both streams, bounded at [`MAX_OUTPUT_BYTES`];
//! writes past the bound are accepted and dropped (a stream that refused them would make most
//! runtimes' `print` fail, which is itself a crash). Once the invocation is over, the output
//! becomes the connector's log lines through the `log` capability's own path
//! ([`super::capability::CallState::log_line`]): the same per-invocation line budget,
//! credential scrubbing, control-character escaping and truncation.

use super::bindings::Level;
use super::capability::CallState;
use bytes::Bytes;
use std::borrow::Cow;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Bytes of stdout and stderr (together) kept per invocation; the rest is dropped.
const MAX_OUTPUT_BYTES: usize = 64 << 10;

/// Largest write a guest is invited to make at once. Writes past the bound are dropped, so this
/// only bounds what one call copies into the host (the default `write-zeroes` allocates it).
const WRITE_PERMIT: usize = 16 << 10;

/// Which stream a line came from; also its name in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
        }
    }
}

/// One instance's captured output. Cloned into the instance's WASI context as its stdout and
/// stderr; the clone kept in the store reads it back.
#[derive(Clone, Default)]
pub(crate) struct GuestOutput {
    buffers: Arc<Mutex<Buffers>>,
}

/// Empty until the guest writes: nothing is allocated for a guest that prints nothing.
#[derive(Default)]
struct Buffers {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    /// Bytes written past [`MAX_OUTPUT_BYTES`].
    dropped: u64,
}

impl Buffers {
    fn append(&mut self, stream: Stream, bytes: &[u8]) {
        let room = MAX_OUTPUT_BYTES.saturating_sub(self.stdout.len() + self.stderr.len());
        let kept = bytes.len().min(room);
        let buffer = match stream {
            Stream::Stdout => &mut self.stdout,
            Stream::Stderr => &mut self.stderr,
        };
        buffer.extend_from_slice(&bytes[..kept]);
        self.dropped += (bytes.len() - kept) as u64;
    }
}

impl GuestOutput {
    /// The instance's stdout, for its WASI context.
    pub(crate) fn stdout(&self) -> impl StdoutStream + 'static {
        Pipe {
            stream: Stream::Stdout,
            buffers: self.buffers.clone(),
        }
    }

    /// The instance's stderr, for its WASI context.
    pub(crate) fn stderr(&self) -> impl StdoutStream + 'static {
        Pipe {
            stream: Stream::Stderr,
            buffers: self.buffers.clone(),
        }
    }

    /// Hand what the guest wrote since the last call to `call`'s log: stdout at info level,
    /// stderr at warn, or at error when the invocation `failed` (a crash's message is usually
    /// the last thing on stderr, so then the end of stderr is kept if the budget is short).
    pub(crate) fn drain_into(&self, call: &mut CallState, failed: bool) {
        let Buffers {
            stdout,
            stderr,
            dropped,
        } = std::mem::take(&mut *lock(&self.buffers));
        if stdout.is_empty() && stderr.is_empty() {
            return;
        }
        emit(call, Stream::Stdout, &stdout, Level::Info, false);
        let level = if failed { Level::Error } else { Level::Warn };
        emit(call, Stream::Stderr, &stderr, level, failed);
        if dropped > 0 {
            call.note_dropped_output(dropped, MAX_OUTPUT_BYTES);
        }
    }
}

/// Log the non-blank lines of `bytes`. When the budget cannot take them all it keeps the first
/// ones, or with `keep_tail` the last ones.
fn emit(call: &mut CallState, stream: Stream, bytes: &[u8], level: Level, keep_tail: bool) {
    if bytes.is_empty() {
        return;
    }
    let text = String::from_utf8_lossy(bytes);
    let lines = text
        .split('\n')
        .map(|line| line.strip_suffix('\r').unwrap_or(line))
        .filter(|line| !line.trim().is_empty() && !is_backtrace_hint(line));
    let total = lines.clone().count();
    let kept = total.min(call.log_lines_left());
    let skip = if keep_tail { total - kept } else { 0 };
    for line in lines.skip(skip).take(kept) {
        call.log_line(level, Cow::Borrowed(line), Some(stream.name()));
    }
    call.over_log_budget(total - kept);
}

/// Rust's panic hook ends with advice to set `RUST_BACKTRACE`, which a guest (no environment)
/// cannot follow; the interpreters built in Rust (QuickJS, Python) write it too.
fn is_backtrace_hint(line: &str) -> bool {
    line.trim_start().starts_with("note: run with `RUST_BACKTRACE=")
}

fn lock(buffers: &Mutex<Buffers>) -> std::sync::MutexGuard<'_, Buffers> {
    buffers.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One of an instance's output streams. Always ready, never full, never closed: writes past the
/// bound succeed and are dropped.
#[derive(Clone)]
struct Pipe {
    stream: Stream,
    buffers: Arc<Mutex<Buffers>>,
}

impl Pipe {
    fn append(&self, bytes: &[u8]) {
        lock(&self.buffers).append(self.stream, bytes);
    }
}

impl IsTerminal for Pipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Pipe {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for Pipe {
    async fn ready(&mut self) {}
}

impl OutputStream for Pipe {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.append(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_PERMIT)
    }
}

impl AsyncWrite for Pipe {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.append(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::super::capability::tests::call_state;
    use super::super::manifest::AuthScheme;
    use super::*;

    /// What `drain_into` logs, as the gateway's plain-text log would show it.
    fn logged(output: &GuestOutput, failed: bool) -> String {
        #[derive(Clone, Default)]
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl io::Write for Sink {
            fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
                self.0.lock().expect("sink").extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let sink = Sink::default();
        let writer = sink.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let mut call = call_state(AuthScheme::Bearer);
        tracing::subscriber::with_default(subscriber, || output.drain_into(&mut call, failed));
        let text = sink.0.lock().expect("sink").clone();
        String::from_utf8(text).expect("utf-8")
    }

    fn print(output: &GuestOutput, stdout: bool, text: &str) {
        let mut pipe = if stdout {
            output.stdout().p2_stream()
        } else {
            output.stderr().p2_stream()
        };
        pipe.write(Bytes::copy_from_slice(text.as_bytes()))
            .expect("accepted");
    }

    #[test]
    fn output_becomes_scrubbed_log_lines_of_the_call() {
        let output = GuestOutput::default();
        print(&output, true, "fetched\r\n\n   \ntoken is s3cret-token\npartial");
        print(&output, false, "careful\n");
        let log = logged(&output, false);
        let lines: Vec<&str> = log.lines().collect();
        assert_eq!(lines.len(), 4, "blank lines are skipped: {log}");
        assert!(
            lines[0].contains(" INFO ")
                && lines[0].contains("fetched")
                && lines[0].contains("stream=\"stdout\"")
        );
        assert!(
            lines[1].contains("token is [REDACTED]") && !log.contains("s3cret-token"),
            "{log}"
        );
        assert!(
            lines[2].contains("partial"),
            "a last line without a newline is kept"
        );
        assert!(
            lines[3].contains(" WARN ")
                && lines[3].contains("careful")
                && lines[3].contains("stream=\"stderr\"")
        );
        assert!(lines.iter().all(|line| line.contains("tx=\"txn_test\"")), "{log}");
        assert_eq!(logged(&output, false), "", "drained once");
    }

    #[test]
    fn the_line_budget_keeps_the_first_lines_or_after_a_crash_the_end_of_stderr() {
        let numbered = |n: usize| (0..n).map(|i| format!("line-{i:03}\n")).collect::<String>();
        let output = GuestOutput::default();
        print(&output, true, &numbered(150));
        let log = logged(&output, false);
        assert!(log.contains("line-000") && log.contains("line-099") && !log.contains("line-100"));
        assert!(log.contains("log budget exhausted"));

        print(&output, false, &numbered(150));
        let log = logged(&output, true);
        assert!(!log.contains("line-049") && log.contains("line-050") && log.contains("line-149"));
        assert!(
            log.lines().filter(|line| line.contains(" ERROR ")).count() == 100,
            "{log}"
        );
        assert!(log.contains("log budget exhausted"));
    }

    #[test]
    fn output_past_the_bound_is_reported_not_kept() {
        let output = GuestOutput::default();
        let line = format!("{}\n", "x".repeat(1000));
        for _ in 0..100 {
            print(&output, true, &line);
        }
        let log = logged(&output, false);
        assert!(
            log.contains("the rest was dropped") && log.contains("dropped_bytes=34564"),
            "{log}"
        );
    }

    fn written(output: &GuestOutput) -> (Vec<u8>, Vec<u8>, u64) {
        let buffers = lock(&output.buffers);
        (buffers.stdout.clone(), buffers.stderr.clone(), buffers.dropped)
    }

    #[test]
    fn both_streams_share_one_bound_and_writes_past_it_succeed() {
        let output = GuestOutput::default();
        let mut stdout = output.stdout().p2_stream();
        let mut stderr = output.stderr().p2_stream();
        let chunk = Bytes::from(vec![b'o'; WRITE_PERMIT]);
        for _ in 0..(MAX_OUTPUT_BYTES / WRITE_PERMIT) {
            assert_eq!(stdout.check_write().expect("ready"), WRITE_PERMIT);
            stdout.write(chunk.clone()).expect("accepted");
        }
        // Full: still ready, still accepted, nothing kept.
        assert_eq!(stderr.check_write().expect("still ready"), WRITE_PERMIT);
        stderr.write(Bytes::from_static(b"lost\n")).expect("accepted");
        stdout.flush().expect("flushed");
        let (out, err, dropped) = written(&output);
        assert_eq!((out.len(), err.len(), dropped), (MAX_OUTPUT_BYTES, 0, 5));
    }

    #[test]
    fn a_write_straddling_the_bound_keeps_what_fits() {
        let output = GuestOutput::default();
        let mut stderr = output.stderr().p2_stream();
        stderr
            .write(Bytes::from(vec![b'e'; MAX_OUTPUT_BYTES - 3]))
            .expect("accepted");
        stderr.write(Bytes::from_static(b"abcdef")).expect("accepted");
        let (_, err, dropped) = written(&output);
        assert!(err.ends_with(b"abc"));
        assert_eq!((err.len(), dropped), (MAX_OUTPUT_BYTES, 3));
    }
}
