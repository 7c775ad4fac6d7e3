//! The local server's defences against clients that hold connections: a bound on open
//! connections, and a connection that stops sending in the middle of a request is closed (a
//! client that sends half its headers or half a body and waits). A keep-alive connection idle
//! between requests is left open (bounded by the connection limit): closing it would race
//! clients that reuse pooled connections, which then see their request cut off. The Lambda
//! face needs neither: API Gateway and Function URLs buffer requests before invoking.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;

/// Most connections open at once; more wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 256;
/// A connection that sends nothing for this long in the middle of a request is closed. Well
/// above any commit's time: while a request is being handled the server may also be waiting
/// to read, and a slow commit must not look like a slow client.
pub const IDLE_READ_TIMEOUT: Duration = Duration::from_secs(120);

/// A listener that holds a permit per open connection.
pub struct GuardedListener {
    inner: TcpListener,
    permits: Arc<Semaphore>,
    idle: Duration,
}

impl GuardedListener {
    pub fn new(inner: TcpListener, max_connections: usize, idle: Duration) -> GuardedListener {
        GuardedListener {
            inner,
            permits: Arc::new(Semaphore::new(max_connections)),
            idle,
        }
    }
}

impl axum::serve::Listener for GuardedListener {
    type Io = GuardedStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        // The semaphore is never closed, so acquiring only waits for a connection to end.
        let permit = loop {
            if let Ok(p) = self.permits.clone().acquire_owned().await {
                break p;
            }
        };
        let (io, addr) = axum::serve::Listener::accept(&mut self.inner).await;
        (
            GuardedStream {
                io,
                idle: self.idle,
                deadline: None,
                mid_request: false,
                _permit: permit,
            },
            addr,
        )
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A connection that fails a read left waiting longer than `idle` in the middle of a request,
/// and frees its permit when dropped.
pub struct GuardedStream {
    io: TcpStream,
    idle: Duration,
    deadline: Option<Pin<Box<Sleep>>>,
    /// Bytes of a request arrived and no response has been written since.
    mid_request: bool,
    _permit: OwnedSemaphorePermit,
}

impl AsyncRead for GuardedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(result) => {
                this.deadline = None;
                if buf.filled().len() > before {
                    this.mid_request = true;
                }
                Poll::Ready(result)
            }
            Poll::Pending if !this.mid_request => {
                this.deadline = None;
                Poll::Pending
            }
            Poll::Pending => {
                let idle = this.idle;
                let deadline = this
                    .deadline
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                match deadline.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client sent nothing for too long",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
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
            // A response is going out: the request was read whole.
            self.mid_request = false;
            self.deadline = None;
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
