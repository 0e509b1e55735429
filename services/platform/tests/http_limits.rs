//! Hostile connections cannot hold the server: half-sent heads and idle
//! keep-alive connections are closed, a stalled body fails, and past the
//! connection limit a client gets a problem+json 503 instead of a hang.

use std::time::{Duration, Instant};

use axum::{routing::post, Router};
use promo_platform::http::server::{self, Limits};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_util::sync::CancellationToken;

async fn start(limits: Limits) -> (std::net::SocketAddr, CancellationToken) {
    let app = Router::new().route("/echo", post(|body: String| async move { body }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(server::serve_with(listener, app, stop.clone(), limits));
    (addr, stop)
}

fn limits() -> Limits {
    Limits {
        max_connections: 3,
        idle_timeout: Duration::from_millis(300),
        body_timeout: Duration::from_millis(300),
    }
}

/// Reads until the server closes; returns what it sent and how long it took.
async fn read_to_close(s: &mut TcpStream) -> (String, Duration) {
    let started = Instant::now();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    (
        String::from_utf8_lossy(&out).into_owned(),
        started.elapsed(),
    )
}

#[tokio::test]
async fn a_half_sent_head_is_cut_off() {
    let (addr, _stop) = start(limits()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let (_, took) = read_to_close(&mut s).await;
    assert!(took < Duration::from_secs(2), "closed after {took:?}");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let (addr, _stop) = start(limits()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\nhi")
        .await
        .unwrap();
    let (answer, took) = read_to_close(&mut s).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("hi"), "{answer}");
    assert!(
        took < Duration::from_secs(2),
        "idle connection kept {took:?}"
    );
}

#[tokio::test]
async fn a_stalled_body_fails() {
    let (addr, _stop) = start(limits()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\nonly a part")
        .await
        .unwrap();
    let (answer, took) = read_to_close(&mut s).await;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 4"),
        "{answer}"
    );
    assert!(took < Duration::from_secs(2), "stalled body kept {took:?}");
}

#[tokio::test]
async fn past_the_connection_limit_a_client_gets_503_not_a_hang() {
    let (addr, _stop) = start(Limits {
        idle_timeout: Duration::from_secs(30),
        ..limits()
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut extra = TcpStream::connect(addr).await.unwrap();
    let (answer, took) = read_to_close(&mut extra).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(body).expect("a JSON body");
    assert_eq!(v["code"], "too_many_connections");
    assert!(took < Duration::from_secs(2));

    // A slot freed is a slot for the next client.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut next = TcpStream::connect(addr).await.unwrap();
    next.write_all(
        b"POST /echo HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok",
    )
    .await
    .unwrap();
    let (answer, _) = read_to_close(&mut next).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}
