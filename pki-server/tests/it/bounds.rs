//! Unauthenticated exhaustion (issue #15): slow and idle connections are
//! closed by the server, the connection count is capped, oversized bodies are
//! refused while being read, and through all of it `sys/health` still answers
//! and the server's memory stays bounded. The real binary, over TLS.

use crate::harness::ServerProcess;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn connector(ca: &std::path::Path) -> tokio_rustls::TlsConnector {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca).unwrap();
    for c in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

fn server(config: &str) -> (ServerProcess, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("limits.toml");
    std::fs::write(&cfg, config).unwrap();
    let srv = ServerProcess::start(
        "memory",
        &tmp.path().join("tls"),
        &["--config", cfg.to_str().unwrap()],
        vec![],
    );
    (srv, tmp)
}

async fn health_within(srv: &ServerProcess, bound: Duration) {
    let t = Instant::now();
    let (s, v) = tokio::time::timeout(
        bound,
        srv.call("GET", "sys/health?uninitcode=200", None, None),
    )
    .await
    .unwrap_or_else(|_| panic!("sys/health took longer than {bound:?}"));
    assert_eq!(s, 200, "{v}");
    eprintln!("sys/health answered in {:?}", t.elapsed());
}

/// 2,000 TLS connections whose request headers never end (a byte every
/// second): all closed by the server within the header timeout (2 s here)
/// plus slack, while `sys/health` answers on a fresh connection. Before,
/// none was ever closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_are_closed_and_health_still_answers() {
    const N: usize = 2000;
    let (srv, _tmp) = server("header_read_timeout_secs = 2\nidle_timeout_secs = 30\n");
    let tls = connector(&srv.ca());
    let addr = format!("127.0.0.1:{}", srv.port);
    let mut tasks = Vec::new();
    let start = Instant::now();
    for _ in 0..N {
        let (tls, addr) = (tls.clone(), addr.clone());
        tasks.push(tokio::spawn(async move {
            let tcp = TcpStream::connect(&addr).await.unwrap();
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let mut s = tls.connect(name, tcp).await.unwrap();
            s.write_all(b"GET /v1/sys/health HTTP/1.1\r\nHost: localhost\r\n")
                .await
                .unwrap();
            let mut buf = [0u8; 256];
            for _ in 0..20 {
                // One more header byte a second; the server must hang up.
                if s.write_all(b"X").await.is_err() {
                    return Some(Instant::now());
                }
                match tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => return Some(Instant::now()),
                    Ok(Ok(_)) => return Some(Instant::now()), // an error answer, then close
                    Err(_) => {}
                }
            }
            None
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    health_within(&srv, Duration::from_secs(1)).await;
    let rss = rss_kib(srv.child.id());
    eprintln!("pki-server RSS with {N} slow connections open: {rss} KiB");
    assert!(rss < 300 * 1024, "RSS {rss} KiB");
    let mut open = 0;
    let mut slowest = Duration::ZERO;
    for t in tasks {
        match t.await.unwrap() {
            Some(at) => slowest = slowest.max(at - start),
            None => open += 1,
        }
    }
    assert_eq!(
        open, 0,
        "{open} of {N} slowloris connections still open after 20 s"
    );
    eprintln!("all {N} slowloris connections closed; the last after {slowest:?}");
    health_within(&srv, Duration::from_secs(1)).await;
}

/// With the connection cap at 40 and 40 idle TLS connections holding every
/// slot, the server closes them once idle (2 s here) and `sys/health` gets
/// through; a stream of oversized bodies is refused with 413 while being
/// read, and the server's RSS stays bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_free_their_slots_and_oversized_bodies_are_refused() {
    let (srv, _tmp) =
        server("max_connections = 40\nidle_timeout_secs = 2\nheader_read_timeout_secs = 2\n");
    let pid = srv.child.id();
    let tls = connector(&srv.ca());
    let addr = format!("127.0.0.1:{}", srv.port);
    let mut idle = Vec::new();
    for _ in 0..40 {
        let tcp = TcpStream::connect(&addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        idle.push(tls.connect(name, tcp).await.unwrap());
    }
    // Every slot is held; the server frees them on its own.
    health_within(&srv, Duration::from_secs(10)).await;
    let mut closed = 0;
    for mut s in idle {
        let mut b = [0u8; 16];
        if matches!(
            tokio::time::timeout(Duration::from_secs(5), s.read(&mut b)).await,
            Ok(Ok(0)) | Ok(Err(_))
        ) {
            closed += 1;
        }
    }
    assert_eq!(closed, 40, "idle connections the server did not close");

    let before = rss_kib(pid);
    let chunk = vec![b'a'; 64 * 1024];
    for i in 0..40 {
        let tcp = TcpStream::connect(&addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut s = tls.connect(name, tcp).await.unwrap();
        let head = if i % 2 == 0 {
            "POST /v1/auth/token/create HTTP/1.1\r\nHost: localhost\r\nContent-Length: 104857600\r\n\r\n".to_string()
        } else {
            "POST /v1/auth/token/create HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n".to_string()
        };
        s.write_all(head.as_bytes()).await.unwrap();
        // Up to 4 MiB, as long as the server reads.
        for _ in 0..64 {
            let piece = if i % 2 == 0 {
                chunk.clone()
            } else {
                let mut c = format!("{:x}\r\n", chunk.len()).into_bytes();
                c.extend_from_slice(&chunk);
                c.extend_from_slice(b"\r\n");
                c
            };
            if tokio::time::timeout(Duration::from_secs(2), s.write_all(&piece))
                .await
                .map_or(true, |r| r.is_err())
            {
                break;
            }
        }
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut answer)).await;
        let text = String::from_utf8_lossy(&answer);
        assert!(
            text.starts_with("HTTP/1.1 413"),
            "oversized body {i}: {text}"
        );
    }
    let after = rss_kib(pid);
    eprintln!("pki-server RSS: {before} KiB before, {after} KiB after 40 oversized bodies");
    assert!(after < 300 * 1024, "RSS {after} KiB");
    health_within(&srv, Duration::from_secs(1)).await;
}
