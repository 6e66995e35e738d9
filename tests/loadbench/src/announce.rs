//! Waiting for a child process (the gateway, `wasmtime serve`) to say where it listens.

use std::time::Duration;
use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// How long a child may take to announce itself (the first start compiles components).
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(120);

/// Why no announcement came.
#[derive(Debug)]
pub enum NotAnnounced {
    /// The output ended first; the lines it held.
    Exited(Vec<String>),
    /// [`STARTUP_TIMEOUT`] passed.
    TimedOut,
}

/// Read `output` line by line until `announcement` recognises one, for at most
/// [`STARTUP_TIMEOUT`]. Once found, the rest of the output is drained in the background so the
/// child never blocks on a full pipe.
pub async fn wait_for<T, R>(output: R, announcement: impl Fn(&str) -> Option<T>) -> Result<T, NotAnnounced>
where
    R: AsyncBufRead + Unpin + Send + 'static,
{
    let mut lines = output.lines();
    let found = tokio::time::timeout(STARTUP_TIMEOUT, async {
        let mut seen = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(found) = announcement(&line) {
                return Ok(found);
            }
            seen.push(line);
        }
        Err(NotAnnounced::Exited(seen))
    })
    .await
    .unwrap_or(Err(NotAnnounced::TimedOut))?;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn finds_the_announcement_or_returns_what_was_seen() {
        let output: &[u8] = b"compiling\nlistening on 7\nmore\n";
        let port = wait_for(output, |line| {
            line.strip_prefix("listening on ").map(str::to_owned)
        })
        .await;
        assert_eq!(port.ok().as_deref(), Some("7"));
        let silent: &[u8] = b"compiling\nerror: no\n";
        match wait_for(silent, |_| None::<()>).await {
            Err(NotAnnounced::Exited(seen)) => assert_eq!(seen, ["compiling", "error: no"]),
            other => panic!("expected the seen lines, got {other:?}"),
        }
    }
}
