//! The local HTTP server defends itself: a declared body over the limit is refused before it
//! is sent, a client that sends part of a request and waits is cut off, and connections are
//! bounded. Real sockets against `serve_with` with small limits.

use std::sync::Arc;
use std::time::Duration;

use ikv_core::store::create_store;
use ikv_core::{Storage, StoreConfig};
use ikv_writer::WriterOptions;
use ikv_writer::service::auth::{Accounts, hash_passkey};
use ikv_writer::service::{MAX_BODY_BYTES, ServiceState, serve_with};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PASSKEY: &str = "server-tests-passkey-0123456789";

/// A server on 127.0.0.1 with `max_connections` and `idle` read timeout; its address.
async fn server(max_connections: usize, idle: Duration) -> std::net::SocketAddr {
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
    tokio::spawn(serve_with(
        listener,
        state,
        std::future::pending(),
        max_connections,
        idle,
    ));
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

#[tokio::test]
async fn connections_beyond_the_bound_wait_for_one_to_end() {
    let addr = server(2, Duration::from_secs(30)).await;
    let mut held: Vec<TcpStream> = Vec::new();
    for _ in 0..2 {
        held.push(TcpStream::connect(addr).await.unwrap());
    }
    let body = br#"{"operations":[{"op":"upsert_fields","document":{"id":{"string":"a"}}}]}"#;
    let mut third = TcpStream::connect(addr).await.unwrap();
    third.write_all(head(body.len()).as_bytes()).await.unwrap();
    third.write_all(body).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let early = tokio::time::timeout(Duration::from_millis(500), third.read(&mut buf)).await;
    assert!(early.is_err(), "served beyond the bound");
    drop(held.pop());
    let n = tokio::time::timeout(Duration::from_secs(20), third.read(&mut buf))
        .await
        .expect("served once a connection ended")
        .unwrap();
    let reply = String::from_utf8_lossy(&buf[..n]);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
}
