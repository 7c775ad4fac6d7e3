//! The local server's defences against clients that hold connections open. The Lambda face
//! needs none: API Gateway and Function URLs buffer requests before invoking.
//!
//! A connection is always in one of three phases, each with its own deadline:
//! - **idle** (no request in progress: just accepted, or its last response written): closed
//!   quietly after `keep_alive_idle`, or after `keep_alive_idle_when_busy` while fewer than a
//!   quarter of the connection slots are free, so that sockets that send nothing cannot hold
//!   the server. (Pooled clients reuse a connection long before the first; under pressure a
//!   reused connection may be closed as it is reused, which HTTP clients retry.)
//! - **head** (the first byte of a request arrived, its blank line not yet): the whole head
//!   must arrive within `header_read_timeout` of its first byte, however it trickles.
//! - **body** (the head arrived, no response written yet): a read left waiting longer than
//!   `idle_read_timeout` fails. Well above any commit's time, because the server may be
//!   waiting to read while the request is handled; the body's own total deadline is the
//!   router's (`BODY_READ_TIMEOUT`).
//!
//! Connections beyond `max_connections` are answered `503` with `Retry-After` at once and
//! closed, never left hanging in the listen backlog.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// The server's limits; [`ServeLimits::default`] is what `ikv serve` uses.
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    /// Most connections open at once; more are answered 503.
    pub max_connections: usize,
    /// A read waiting longer than this while a request's body is read or handled fails.
    pub idle_read_timeout: Duration,
    /// A request's head must arrive whole within this from its first byte.
    pub header_read_timeout: Duration,
    /// A connection with no request in progress is closed after this.
    pub keep_alive_idle: Duration,
    /// ... or after this, while fewer than a quarter of the connection slots are free.
    pub keep_alive_idle_when_busy: Duration,
}

impl Default for ServeLimits {
    fn default() -> Self {
        ServeLimits {
            max_connections: 256,
            idle_read_timeout: Duration::from_secs(120),
            header_read_timeout: Duration::from_secs(10),
            keep_alive_idle: Duration::from_secs(60),
            keep_alive_idle_when_busy: Duration::from_secs(1),
        }
    }
}

/// Refusals (503) being written at once; connections beyond are closed without an answer.
const MAX_REFUSALS: usize = 64;
/// How long a refusal may take to be written and the client's request drained.
const REFUSAL_TIME: Duration = Duration::from_secs(1);
/// How often an idle connection looks again at how busy the server is.
const IDLE_TICK: Duration = Duration::from_millis(250);

/// The answer to a connection beyond the limit.
fn refusal() -> Vec<u8> {
    let body =
        r#"{"error":{"code":"overloaded","message":"too many open connections; retry shortly"}}"#;
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A listener that holds a permit per open connection.
pub struct GuardedListener {
    inner: TcpListener,
    permits: Arc<Semaphore>,
    refusals: Arc<Semaphore>,
    limits: ServeLimits,
}

impl GuardedListener {
    pub fn new(inner: TcpListener, limits: ServeLimits) -> GuardedListener {
        GuardedListener {
            inner,
            permits: Arc::new(Semaphore::new(limits.max_connections)),
            refusals: Arc::new(Semaphore::new(MAX_REFUSALS)),
            limits,
        }
    }

    /// Answers 503 on a connection there is no slot for, off the accept loop.
    fn refuse(&self, mut io: TcpStream) {
        let Ok(permit) = self.refusals.clone().try_acquire_owned() else {
            tracing::warn!("too many connections refused at once; closing one without an answer");
            return;
        };
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tokio::time::timeout(REFUSAL_TIME, async {
                io.write_all(&refusal()).await?;
                io.shutdown().await?;
                // Drain what the client sent, so that closing does not reset the connection
                // before it has read the answer.
                let mut sink = [0u8; 4096];
                while io.read(&mut sink).await? > 0 {}
                io::Result::Ok(())
            })
            .await;
        });
    }
}

impl axum::serve::Listener for GuardedListener {
    type Io = GuardedStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (io, addr) = axum::serve::Listener::accept(&mut self.inner).await;
            match self.permits.clone().try_acquire_owned() {
                Ok(permit) => {
                    return (
                        GuardedStream::new(io, permit, self.permits.clone(), self.limits),
                        addr,
                    );
                }
                Err(_) => {
                    tracing::warn!(%addr, "connection limit reached; answering 503");
                    self.refuse(io);
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// Where a connection is in its request cycle (see the module's documentation).
#[derive(Debug, Clone, Copy)]
enum Phase {
    Idle {
        since: Instant,
    },
    /// `matched` bytes of the blank line (`\r\n\r\n`) ending the head have been seen.
    Head {
        started: Instant,
        matched: u8,
    },
    Body {
        last_read: Instant,
    },
}

/// A connection with its phase's deadline; frees its permit when dropped.
pub struct GuardedStream {
    io: TcpStream,
    phase: Phase,
    timer: Pin<Box<Sleep>>,
    /// The task waiting to read, woken when a written response changes the phase (and so
    /// the deadline its pending read was timed by).
    reader: Option<std::task::Waker>,
    limits: ServeLimits,
    slots: Arc<Semaphore>,
    _permit: OwnedSemaphorePermit,
}

impl GuardedStream {
    fn new(
        io: TcpStream,
        permit: OwnedSemaphorePermit,
        slots: Arc<Semaphore>,
        limits: ServeLimits,
    ) -> GuardedStream {
        let now = Instant::now();
        GuardedStream {
            io,
            phase: Phase::Idle { since: now },
            timer: Box::pin(tokio::time::sleep_until(now)),
            reader: None,
            limits,
            slots,
            _permit: permit,
        }
    }

    fn busy(&self) -> bool {
        self.slots.available_permits() * 4 < self.limits.max_connections
    }

    /// When the current phase's wait ends the connection, and when to look again before that
    /// (an idle connection re-checks how busy the server is).
    fn deadline(&self, now: Instant) -> (Instant, Instant) {
        match self.phase {
            Phase::Idle { since } => {
                let limit = if self.busy() {
                    self.limits.keep_alive_idle_when_busy
                } else {
                    self.limits.keep_alive_idle
                };
                let end = since + limit;
                (end, end.min(now + IDLE_TICK))
            }
            Phase::Head { started, .. } => {
                let end = started + self.limits.header_read_timeout;
                (end, end)
            }
            Phase::Body { last_read } => {
                let end = last_read + self.limits.idle_read_timeout;
                (end, end)
            }
        }
    }

    /// Moves the phase along with bytes that arrived.
    fn received(&mut self, bytes: &[u8], now: Instant) {
        const BLANK_LINE: &[u8; 4] = b"\r\n\r\n";
        if let Phase::Idle { .. } = self.phase {
            self.phase = Phase::Head {
                started: now,
                matched: 0,
            };
        }
        match &mut self.phase {
            Phase::Head { matched, .. } => {
                for b in bytes {
                    *matched = if *b == BLANK_LINE[*matched as usize] {
                        *matched + 1
                    } else if *b == b'\r' {
                        1
                    } else {
                        0
                    };
                    if *matched == 4 {
                        self.phase = Phase::Body { last_read: now };
                        // The rest of this read is body.
                        return;
                    }
                }
            }
            Phase::Body { last_read } => *last_read = now,
            Phase::Idle { .. } => {}
        }
    }
}

impl AsyncRead for GuardedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        if let Poll::Ready(result) = Pin::new(&mut this.io).poll_read(cx, buf) {
            let now = Instant::now();
            let filled = &buf.filled()[before..];
            if !filled.is_empty() {
                this.received(filled, now);
            }
            return Poll::Ready(result);
        }
        loop {
            let now = Instant::now();
            let (end, look) = this.deadline(now);
            if now >= end {
                return match this.phase {
                    // A quiet close: the end of the stream, as a client closing would be.
                    Phase::Idle { .. } => Poll::Ready(Ok(())),
                    Phase::Head { .. } => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the request's head did not arrive in time",
                    ))),
                    Phase::Body { .. } => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client sent nothing for too long",
                    ))),
                };
            }
            if this.timer.deadline() != look {
                this.timer.as_mut().reset(look);
            }
            match this.timer.as_mut().poll(cx) {
                Poll::Pending => {
                    if !this
                        .reader
                        .as_ref()
                        .is_some_and(|w| w.will_wake(cx.waker()))
                    {
                        this.reader = Some(cx.waker().clone());
                    }
                    return Poll::Pending;
                }
                Poll::Ready(()) => continue,
            }
        }
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.io).poll_write(cx, buf);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            // A response is going out: the request was read whole; the connection is idle
            // until the next one starts.
            if !matches!(self.phase, Phase::Idle { .. }) {
                self.phase = Phase::Idle {
                    since: Instant::now(),
                };
                if let Some(reader) = self.reader.take() {
                    reader.wake();
                }
            }
        }
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_head_ends_at_the_first_blank_line_however_it_is_split() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = TcpStream::connect(addr).await.unwrap();
        let (io, _) = listener.accept().await.unwrap();
        let slots = Arc::new(Semaphore::new(4));
        let permit = slots.clone().try_acquire_owned().unwrap();
        let mut stream = GuardedStream::new(io, permit, slots, ServeLimits::default());
        let now = Instant::now();
        for chunk in [&b"GET / HTTP/1.1\r\nhost: x\r"[..], b"\n\r", b"\nbody"] {
            assert!(!matches!(stream.phase, Phase::Body { .. }));
            stream.received(chunk, now);
        }
        assert!(matches!(stream.phase, Phase::Body { .. }));
        // A lone CR LF inside the head does not end it.
        stream.phase = Phase::Idle { since: now };
        stream.received(b"GET / HTTP/1.1\r\nhost: x\r\n\rX\r\n", now);
        assert!(matches!(stream.phase, Phase::Head { .. }));
    }
}
