//! An I/O wrapper that closes plain HTTP connections that stay silent: the first request must
//! start within `--handshake-timeout`, and a keep-alive connection may sit idle between
//! requests for at most `--http-idle-timeout`. Once the connection is upgraded to a WebSocket
//! the wrapper steps aside (the connection task has its own keepalive and idle timeout).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Set by the `/connect` handler when it answers 101: from then on the connection is exempt.
#[derive(Debug, Clone, Default)]
pub(crate) struct Upgraded(Arc<AtomicBool>);

impl Upgraded {
    /// Marks the connection as upgraded.
    pub(crate) fn mark(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Fails reads with `TimedOut` when nothing arrives for too long, unless upgraded.
pub(crate) struct IdleGuard<IO> {
    io: IO,
    idle: Duration,
    /// Dropped at the first read after the upgrade: a registered timer holds the waker of the
    /// HTTP task that last polled it, and with it that finished task's memory (5.8 KiB per
    /// connection, measured with massif) until the timer fires.
    deadline: Option<Pin<Box<Sleep>>>,
    upgraded: Upgraded,
    /// Bytes already read from `io`, returned by the next reads.
    replay: Bytes,
}

impl<IO> IdleGuard<IO> {
    /// Wraps `io`: the first byte must arrive within `first`, later silences last at most
    /// `idle`.
    pub(crate) fn new(io: IO, first: Duration, idle: Duration, upgraded: Upgraded) -> Self {
        IdleGuard {
            io,
            idle,
            deadline: Some(Box::pin(tokio::time::sleep(first))),
            upgraded,
            replay: Bytes::new(),
        }
    }

    /// Makes the next reads return `bytes` (read from the connection earlier) first.
    pub(crate) fn replay(&mut self, bytes: Bytes) {
        self.replay = bytes;
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for IdleGuard<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.replay.is_empty() {
            let n = this.replay.len().min(buf.remaining());
            buf.put_slice(&this.replay[..n]);
            this.replay.advance(n);
            if this.replay.is_empty() {
                // Lets go of the read buffer the bytes were in.
                this.replay = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        if this.deadline.is_some() && this.upgraded.is_set() {
            this.deadline = None;
        }
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if let Some(deadline) = this.deadline.as_mut() {
                    deadline.as_mut().reset(Instant::now() + this.idle);
                }
                Poll::Ready(result)
            }
            Poll::Pending => {
                if let Some(deadline) = this.deadline.as_mut()
                    && deadline.as_mut().poll(cx).is_ready()
                {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "HTTP connection idle for too long",
                    )));
                }
                Poll::Pending
            }
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for IdleGuard<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn replays_earlier_bytes_then_reads_on() {
        let (mut near, far) = tokio::io::duplex(64);
        near.write_all(b" world").await.unwrap();
        drop(near);
        let second = Duration::from_secs(1);
        let mut io = IdleGuard::new(far, second, second, Upgraded::default());
        io.replay(Bytes::from_static(b"hello"));
        let mut small = [0u8; 3];
        io.read_exact(&mut small).await.unwrap();
        assert_eq!(&small, b"hel");
        let mut rest = String::new();
        io.read_to_string(&mut rest).await.unwrap();
        assert_eq!(rest, "lo world");
    }
}
