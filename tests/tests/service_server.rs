//! The local HTTP server defends itself: a declared body over the limit is refused before it
//! is sent, a client that sends part of a request and waits is cut off, a head that trickles
//! is cut off, idle connections cannot hold it, and connections beyond the bound are answered
//! 503 at once. Real sockets against `serve_with` with small limits, and `serve` as shipped.
#![allow(clippy::disallowed_methods)] // tests and benches run real processes, sockets and timings on the wall clock

use std::sync::Arc;
use std::time::Duration;

use ikv_core::bucket::create_store;
use ikv_core::{Storage, StoreConfig};
use ikv_writer::WriterOptions;
use ikv_writer::service::auth::{Accounts, hash_passkey};
use ikv_writer::service::{MAX_BODY_BYTES, ServeLimits, ServiceState, serve_with};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PASSKEY: &str = "server-tests-passkey-0123456789";

/// A server on 127.0.0.1 with `max_connections` and `idle` read timeout; its address.
async fn server(max_connections: usize, idle: Duration) -> std::net::SocketAddr {
    server_with(ServeLimits {
        max_connections,
        idle_read_timeout: idle,
        header_read_timeout: idle,
        ..ServeLimits::default()
    })
    .await
}

/// A server on 127.0.0.1 within `limits`; its address.
async fn server_with(limits: ServeLimits) -> std::net::SocketAddr {
    let storage = Storage::memory();
    create_store(&storage, &StoreConfig::new("users", "id", None, 1).unwrap())
        .await
        .unwrap();
    let accounts = Accounts::from_json(&format!(
        r#"{{"accounts":[{{"account_id":"me","passkey_hash":"{}","stores":["*"]}}]}}"#,
        hash_passkey(PASSKEY).unwrap()
    ))
    .unwrap();
    let state = Arc::new(ServiceState::new(
        storage,
        accounts,
        WriterOptions::default(),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve_with(listener, state, std::future::pending(), limits));
    addr
}

fn head(content_length: usize) -> String {
    format!(
        "POST /v1/stores/users/operations HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nx-ikv-account-id: me\r\nx-ikv-account-passkey: {PASSKEY}\r\ncontent-length: {content_length}\r\n\r\n"
    )
}

/// Everything the server sends until it closes the connection (bounded by a generous
/// deadline so that a server that never answers fails the test instead of hanging it).
async fn read_all(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the server kept the connection open");
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn a_declared_body_over_the_limit_is_refused_before_it_is_sent() {
    let addr = server(8, Duration::from_secs(30)).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(head(MAX_BODY_BYTES + 1).as_bytes())
        .await
        .unwrap();
    // Not a byte of the body: the answer must come anyway.
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(20), stream.read(&mut buf))
        .await
        .expect("answered without the body")
        .unwrap();
    let reply = String::from_utf8_lossy(&buf[..n]);
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    assert!(reply.contains("body_too_large"), "{reply}");
}

#[tokio::test]
async fn a_client_that_sends_half_a_request_and_waits_is_cut_off() {
    let addr = server(8, Duration::from_millis(300)).await;
    // Half a body.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(head(100).as_bytes()).await.unwrap();
    stream.write_all(b"{\"operations\":").await.unwrap();
    // Cut off: the body ends early (400 bad_body) or its deadline passes (408); either way
    // the server answers and closes instead of waiting.
    let reply = read_all(&mut stream).await;
    assert!(
        reply.is_empty()
            || reply.starts_with("HTTP/1.1 408")
            || (reply.starts_with("HTTP/1.1 400") && reply.contains("bad_body")),
        "{reply}"
    );
    // Half the headers.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"POST /v1/stores/users/operations HTTP/1.1\r\nhost:")
        .await
        .unwrap();
    assert_eq!(read_all(&mut stream).await, "", "closed without an answer");
}

const BODY: &[u8] = br#"{"operations":[{"op":"upsert_fields","document":{"id":{"string":"a"}}}]}"#;

/// The status line of the answer to one write on a new connection, or `None` when the
/// connection was closed without one.
async fn one_write(addr: std::net::SocketAddr) -> Option<String> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(head(BODY.len()).as_bytes()).await.ok()?;
    stream.write_all(BODY).await.ok()?;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(20), stream.read(&mut buf))
        .await
        .expect("answered, not left hanging")
        .ok()?;
    let reply = String::from_utf8_lossy(&buf[..n]).into_owned();
    reply.lines().next().map(str::to_owned)
}

#[tokio::test]
async fn connections_beyond_the_bound_are_answered_503_at_once() {
    let addr = server(2, Duration::from_secs(30)).await;
    let mut held: Vec<TcpStream> = Vec::new();
    for _ in 0..2 {
        held.push(TcpStream::connect(addr).await.unwrap());
    }
    let mut third = TcpStream::connect(addr).await.unwrap();
    third.write_all(head(BODY.len()).as_bytes()).await.unwrap();
    third.write_all(BODY).await.unwrap();
    let reply = read_all(&mut third).await;
    assert!(reply.starts_with("HTTP/1.1 503"), "{reply}");
    assert!(reply.contains("retry-after: 1"), "{reply}");
    assert!(reply.contains("overloaded"), "{reply}");
    drop(held.pop());
    // The slot frees as the held connection ends.
    let mut served = None;
    for _ in 0..50 {
        served = one_write(addr).await;
        if served.as_deref() == Some("HTTP/1.1 200 OK") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(served.as_deref(), Some("HTTP/1.1 200 OK"));
}

/// Sockets that connect and send nothing fill every slot of `ikv serve` as shipped (256):
/// a new client is answered at once (503, never a hang), and the idle sockets are closed
/// within a few seconds, after which it is served.
#[tokio::test]
async fn sockets_that_send_nothing_cannot_hold_the_server() {
    let limits = ServeLimits::default();
    let addr = server_with(limits).await;
    let mut idle = Vec::new();
    for _ in 0..limits.max_connections {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    let mut answers = Vec::new();
    for _ in 0..40 {
        let answer = one_write(addr).await;
        answers.push(answer.clone());
        if answer.as_deref() == Some("HTTP/1.1 200 OK") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        answers.last().cloned().flatten().as_deref(),
        Some("HTTP/1.1 200 OK"),
        "{answers:?}"
    );
    assert!(
        answers.iter().all(|a| matches!(
            a.as_deref(),
            Some("HTTP/1.1 200 OK" | "HTTP/1.1 503 Service Unavailable")
        )),
        "{answers:?}"
    );
    // The server closed idle sockets until it was no longer short of slots (a quarter free);
    // the rest keep the ordinary keep-alive.
    let closed = futures::future::join_all(idle.into_iter().map(|mut s| async move {
        let mut buf = [0u8; 16];
        matches!(
            tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await,
            Ok(Ok(0) | Err(_))
        )
    }))
    .await
    .into_iter()
    .filter(|c| *c)
    .count();
    assert!(
        (limits.max_connections / 4..=limits.max_connections).contains(&closed),
        "{closed} idle sockets closed"
    );
}

/// A keep-alive connection left idle after its response is closed after `keep_alive_idle`.
#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let addr = server_with(ServeLimits {
        keep_alive_idle: Duration::from_millis(300),
        ..ServeLimits::default()
    })
    .await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(head(BODY.len()).as_bytes()).await.unwrap();
    stream.write_all(BODY).await.unwrap();
    let reply = read_all(&mut stream).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
}

/// A head sent one byte at a time, slower than any real client, is cut off once its time is
/// up, however steadily the bytes keep coming: a bounded number of bytes gets through.
#[tokio::test]
async fn a_trickling_head_is_cut_off() {
    let addr = server_with(ServeLimits {
        header_read_timeout: Duration::from_millis(500),
        ..ServeLimits::default()
    })
    .await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = head(BODY.len());
    let mut sent = 0;
    let mut closed = false;
    for b in request.as_bytes() {
        if stream.write_all(&[*b]).await.is_err() {
            closed = true;
            break;
        }
        sent += 1;
        let mut buf = [0u8; 64];
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_millis(50), stream.read(&mut buf)).await
        {
            closed = true;
            break;
        }
    }
    assert!(closed, "the server waited for all {sent} bytes of the head");
    assert!(sent < request.len(), "{sent}");
}
