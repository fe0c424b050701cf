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

/// 500 TLS connections whose request headers never end (a byte every
/// second): all closed by the server within the header timeout (2 s here)
/// plus slack, while `sys/health` answers on a fresh connection. Before,
/// none was ever closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_are_closed_and_health_still_answers() {
    const N: usize = 500;
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
    health_within(&srv, Duration::from_secs(10)).await;
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
    health_within(&srv, Duration::from_secs(10)).await;
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
    health_within(&srv, Duration::from_secs(10)).await;
}

/// A TLS connection that offers only `alpn`.
async fn connect(ca: &std::path::Path, port: u16, alpn: &[u8]) -> TlsStream {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca).unwrap();
    for c in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![alpn.to_vec()];
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let s = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .unwrap();
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(alpn));
    s
}

type TlsStream = tokio_rustls::client::TlsStream<TcpStream>;

/// One HTTP/2 frame: length, type, flags, stream id, payload.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut f = vec![len[1], len[2], len[3], kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

const H2_HEADERS: u8 = 0x1;
const H2_SETTINGS: u8 = 0x4;
const H2_PING: u8 = 0x6;

/// What an HTTP/2 client does after its preface and SETTINGS.
#[derive(Clone, Copy, Debug, PartialEq)]
enum H2Client {
    /// Nothing but SETTINGS and PING acknowledgements.
    Quiet,
    /// A HEADERS frame announced at 64 bytes, sent a byte a second (no PING
    /// can be answered in the middle of a frame). One byte per CONTINUATION
    /// frame instead would meet h2's cap on CONTINUATION frames.
    Trickle,
    /// No request, but a PING of its own every second: bytes flow both ways.
    Chatty,
    /// One complete `GET /v1/sys/health`; once answered, quiet.
    OneRequest,
}

/// Drive one HTTP/2 connection as `mode` says, answering every PING, for at
/// most `bound`. Returns when the server closed it (None: still open).
async fn h2_client(s: TlsStream, mode: H2Client, bound: Duration) -> Option<Duration> {
    let start = Instant::now();
    let (mut rd, mut wr) = tokio::io::split(s);
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend(h2_frame(H2_SETTINGS, 0, 0, &[]));
    match mode {
        H2Client::Trickle => {
            // The frame header only: 64 bytes, END_STREAM | END_HEADERS, stream 1.
            hello.extend(&[0, 0, 64, H2_HEADERS, 0x5, 0, 0, 0, 1]);
        }
        H2Client::OneRequest => {
            // HPACK: :method GET, :scheme https, :path (literal), :authority (literal).
            let mut block = vec![0x82, 0x87, 0x04, 14];
            block.extend_from_slice(b"/v1/sys/health");
            block.extend_from_slice(&[0x01, 9]);
            block.extend_from_slice(b"localhost");
            hello.extend(h2_frame(H2_HEADERS, 0x5, 1, &block));
        }
        H2Client::Quiet | H2Client::Chatty => {}
    }
    wr.write_all(&hello).await.unwrap();
    let (frames_tx, mut frames_rx) = tokio::sync::mpsc::unbounded_channel();
    // The reader: frames until the server hangs up.
    tokio::spawn(async move {
        loop {
            let mut head = [0u8; 9];
            if rd.read_exact(&mut head).await.is_err() {
                return;
            }
            let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
            let mut payload = vec![0u8; len];
            if rd.read_exact(&mut payload).await.is_err() {
                return;
            }
            if frames_tx.send((head[3], head[4], payload)).is_err() {
                return;
            }
        }
    });
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut answered = false;
    loop {
        tokio::select! {
            f = frames_rx.recv() => {
                let Some((kind, flags, payload)) = f else {
                    return Some(start.elapsed());
                };
                if mode == H2Client::Trickle && kind != H2_HEADERS {
                    continue;
                }
                let reply = match (kind, flags & 1) {
                    (H2_SETTINGS, 0) => h2_frame(H2_SETTINGS, 1, 0, &[]),
                    (H2_PING, 0) => h2_frame(H2_PING, 1, 0, &payload),
                    (H2_HEADERS, _) => {
                        answered = true;
                        continue;
                    }
                    _ => continue,
                };
                if wr.write_all(&reply).await.is_err() {
                    return Some(start.elapsed());
                }
            }
            _ = tick.tick() => {
                if start.elapsed() > bound {
                    assert!(mode != H2Client::OneRequest || answered, "no answer to the request");
                    return None;
                }
                let more = match mode {
                    // One more byte of the header block (:method GET, again).
                    H2Client::Trickle => vec![0x82],
                    H2Client::Chatty => h2_frame(H2_PING, 0, 0, &[7; 8]),
                    H2Client::Quiet | H2Client::OneRequest => continue,
                };
                if wr.write_all(&more).await.is_err() {
                    return Some(start.elapsed());
                }
            }
        }
    }
}

/// HTTP/2 (by ALPN) connections that send no request, trickle one, chat
/// with PINGs, or go quiet after one request, are closed by the server even
/// though they answer its keep-alive PINGs: bytes that make no request are
/// no activity. Before a first request within the header timeout (2 s
/// here), after one within the idle timeout (3 s here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_connections_without_requests_are_closed() {
    let (srv, _tmp) = server("header_read_timeout_secs = 2\nidle_timeout_secs = 3\n");
    let bound = Duration::from_secs(20);
    let mut tasks = Vec::new();
    for i in 0..60 {
        let mode = [
            H2Client::Quiet,
            H2Client::Trickle,
            H2Client::Chatty,
            H2Client::OneRequest,
        ][i % 4];
        let s = connect(&srv.ca(), srv.port, b"h2").await;
        tasks.push((mode, tokio::spawn(h2_client(s, mode, bound))));
    }
    health_within(&srv, Duration::from_secs(10)).await;
    let mut open = Vec::new();
    let mut slowest = std::collections::BTreeMap::new();
    for (mode, t) in tasks {
        match t.await.unwrap() {
            Some(after) => {
                let s = slowest.entry(format!("{mode:?}")).or_insert(after);
                *s = after.max(*s);
            }
            None => open.push(mode),
        }
    }
    assert!(
        open.is_empty(),
        "HTTP/2 connections still open after {bound:?}: {open:?}"
    );
    eprintln!("all 60 HTTP/2 connections closed; the last of each kind after {slowest:?}");
    health_within(&srv, Duration::from_secs(10)).await;
}

/// A body whose Content-Length is over `max_request_bytes` is refused with
/// 413 at once, before any of it is sent; over HTTP/2 too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_oversized_body_is_refused_before_it_is_sent() {
    let (srv, _tmp) = server("max_request_bytes = 65536\n");
    for _ in 0..20 {
        let mut s = connect(&srv.ca(), srv.port, b"http/1.1").await;
        s.write_all(
            b"POST /v1/sys/unseal HTTP/1.1\r\nHost: localhost\r\nContent-Length: 65537\r\n\r\n",
        )
        .await
        .unwrap();
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut answer)).await;
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 413"), "{text}");
        assert!(
            text.contains("request body too large: the limit is 65536 bytes"),
            "{text}"
        );
    }
    // HTTP/2: HEADERS with content-length, no DATA; a 413 HEADERS comes back.
    let s = connect(&srv.ca(), srv.port, b"h2").await;
    let (mut rd, mut wr) = tokio::io::split(s);
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend(h2_frame(H2_SETTINGS, 0, 0, &[]));
    // :method POST, :scheme https, :path, :authority, content-length (static index 28).
    let mut block = vec![0x83, 0x87, 0x04, 14];
    block.extend_from_slice(b"/v1/sys/unseal");
    block.extend_from_slice(&[0x01, 9]);
    block.extend_from_slice(b"localhost");
    block.extend_from_slice(&[0x0f, 0x0d, 9]);
    block.extend_from_slice(b"104857600");
    hello.extend(h2_frame(H2_HEADERS, 0x4, 1, &block));
    wr.write_all(&hello).await.unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let mut head = [0u8; 9];
            rd.read_exact(&mut head).await.unwrap();
            let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
            let mut payload = vec![0u8; len];
            rd.read_exact(&mut payload).await.unwrap();
            if head[3] == H2_HEADERS {
                return payload;
            }
        }
    })
    .await
    .expect("no HTTP/2 answer within 10 s");
    // :status 413 is not in HPACK's static table: a literal value, which h2
    // always Huffman-codes: "413" is 3 bytes, 68 2c ff.
    assert!(
        status.windows(4).any(|w| w == [0x83, 0x68, 0x2c, 0xff]),
        "HTTP/2 answer is not 413: {status:02x?}"
    );
    health_within(&srv, Duration::from_secs(10)).await;
}

/// Connections still in the TLS handshake count against `max_connections`:
/// with all 20 slots held by connections that send nothing, a new client
/// waits in the listen backlog; as soon as some of them go away, it is
/// served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshakes_count_against_the_connection_cap() {
    let (srv, _tmp) = server("max_connections = 20\n");
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(TcpStream::connect(("127.0.0.1", srv.port)).await.unwrap());
    }
    let client = srv.client();
    let url = format!("{}/v1/sys/health?uninitcode=200", srv.addr());
    let health = tokio::spawn(async move { client.get(url).send().await.map(|r| r.status()) });
    // The handshake timeout (10 s) frees no slot before then.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !health.is_finished(),
        "sys/health answered while every slot was held"
    );
    held.truncate(15);
    let status = tokio::time::timeout(Duration::from_secs(8), health)
        .await
        .expect("sys/health still waiting after slots were freed")
        .unwrap()
        .unwrap();
    assert_eq!(status, 200);
    drop(held);
}
