//! The health-probe responder of Azure lb-probe mode: a TCP listener on the load balancer's
//! probe port that is open only while this node holds the address.
//!
//! A load balancer with Floating IP sends new flows only to backends whose probe answers
//! (azure.md §11), so answering the probe *is* holding the address. A TCP probe succeeds on the
//! handshake: the responder accepts and closes. An HTTP probe wants a 200: with a path, the
//! responder answers `200 OK` to `GET <path>` and `404` to anything else.
//!
//! Closing drops the listening socket before [`ProbeResponder::close`] returns, so the next
//! probe is refused at once (RST) instead of waiting for a timeout, and drops every connection
//! still open: a former holder must not look healthy for one more probe.

use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// HTTP probes served at once; more are closed unanswered (a probe retries, a flood waits).
const MAX_CONNECTIONS: usize = 32;
/// A probe sends its request at once; a connection that does not is not a probe.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens and closes the probe listener. Idempotent: opening an open responder or closing a
/// closed one changes nothing.
pub struct ProbeResponder {
    /// Where to listen; a port 0 becomes the port first bound (tests).
    bind: Mutex<SocketAddr>,
    /// `None`: a TCP probe (accept and close).
    path: Option<Arc<str>>,
    running: tokio::sync::Mutex<Option<Running>>,
}

struct Running {
    local: SocketAddr,
    /// Owns the listener and every open connection: they go when it is dropped.
    task: JoinHandle<()>,
}

impl ProbeResponder {
    /// A responder on `port` of every address: dual stack on `[::]`, or `0.0.0.0` when the
    /// host has no IPv6 (the load balancer probes the VM's primary private address).
    pub fn new(port: u16, path: Option<String>) -> Self {
        Self::with_bind(
            SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port),
            path,
        )
    }

    /// A responder on one address (e.g. `127.0.0.1:0` in tests).
    pub fn with_bind(bind: SocketAddr, path: Option<String>) -> Self {
        ProbeResponder {
            bind: Mutex::new(bind),
            path: path.map(Arc::from),
            running: tokio::sync::Mutex::new(None),
        }
    }

    /// The port probes are answered on.
    pub fn port(&self) -> u16 {
        lock(&self.bind).port()
    }

    /// "TCP port 61000" or "HTTP GET /health on port 61000", for logs.
    pub fn describe(&self) -> String {
        match &self.path {
            None => format!("TCP port {}", self.port()),
            Some(p) => format!("HTTP GET {p} on port {}", self.port()),
        }
    }

    /// Starts answering probes; true when it was closed. Fails when the port cannot be bound
    /// (in use by another program, or a privileged port without the capability).
    pub async fn open(&self) -> io::Result<bool> {
        let mut running = self.running.lock().await;
        if running.is_some() {
            return Ok(false);
        }
        let bind = *lock(&self.bind);
        let listener = listen(bind)?;
        let local = listener.local_addr()?;
        if bind.port() == 0 {
            lock(&self.bind).set_port(local.port());
        }
        let task = tokio::spawn(accept_loop(listener, self.path.clone()));
        *running = Some(Running { local, task });
        Ok(true)
    }

    /// Stops answering probes; true when it was open. When this returns the port is closed
    /// (new probes are refused) and every connection to it is gone.
    pub async fn close(&self) -> bool {
        let Some(running) = self.running.lock().await.take() else {
            return false;
        };
        running.task.abort();
        // Awaiting the aborted task is what makes the drop of the listener synchronous.
        let _ = running.task.await;
        true
    }

    pub async fn is_open(&self) -> bool {
        self.running.lock().await.is_some()
    }

    /// The address bound while open.
    pub async fn local_addr(&self) -> Option<SocketAddr> {
        self.running.lock().await.as_ref().map(|r| r.local)
    }
}

impl Drop for ProbeResponder {
    fn drop(&mut self) {
        if let Some(running) = self.running.get_mut().take() {
            running.task.abort();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether the probe port can be listened on now (`exoip check`): binds as [`ProbeResponder`]
/// does and lets go at once; the address bound.
pub fn try_listen(port: u16) -> io::Result<SocketAddr> {
    listen(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port))?.local_addr()
}

/// A listening socket with `SO_REUSEADDR` (a port closed a moment ago still has probe
/// connections in TIME_WAIT), dual stack on `[::]` with a fallback to `0.0.0.0`.
fn listen(bind: SocketAddr) -> io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let attempt = |addr: SocketAddr| -> io::Result<TcpListener> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        if addr.is_ipv6() && addr.ip().is_unspecified() {
            socket.set_only_v6(false)?;
        }
        socket.set_reuse_address(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        socket.listen(128)?;
        TcpListener::from_std(socket.into())
    };
    let unspecified_v6 = bind.ip() == IpAddr::V6(Ipv6Addr::UNSPECIFIED);
    match attempt(bind) {
        Err(e) if unspecified_v6 && e.kind() != io::ErrorKind::AddrInUse => attempt(
            SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), bind.port()),
        ),
        r => r,
    }
    .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {bind}: {e}")))
}

/// Accepts probes until aborted. Connections are futures of this task, not tasks of their
/// own, so aborting it closes them too.
async fn accept_loop(listener: TcpListener, path: Option<Arc<str>>) {
    let mut connections = FuturesUnordered::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => match &path {
                    // The handshake was the probe's success: close.
                    None => drop(stream),
                    Some(p) if connections.len() < MAX_CONNECTIONS => {
                        connections.push(serve_http(stream, p.clone()))
                    }
                    Some(_) => drop(stream),
                },
                Err(e) => {
                    // E.g. out of file descriptors: pause instead of spinning.
                    tracing::warn!(error = %e, "probe responder: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(()) = connections.next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve_http(stream: TcpStream, path: Arc<str>) {
    let service = hyper::service::service_fn(move |req| {
        let response = respond(&path, &req);
        async move { Ok::<_, Infallible>(response) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        // One probe per connection: nothing stays open between probes.
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), service);
    let _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await;
}

/// `200 OK` to `GET <path>` (the path compared with the query when the configured one has
/// one), `404` to anything else.
fn respond<B>(path: &str, req: &Request<B>) -> Response<Full<Bytes>> {
    let asked = if path.contains('?') {
        req.uri().path_and_query().map_or("/", |p| p.as_str())
    } else {
        req.uri().path()
    };
    let (status, body) = if req.method() == Method::GET && asked == path {
        (StatusCode::OK, "OK\n")
    } else {
        (StatusCode::NOT_FOUND, "not found\n")
    };
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const LOCAL: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
    const LIMIT: Duration = Duration::from_secs(5);

    async fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
        tokio::time::timeout(LIMIT, TcpStream::connect(addr))
            .await
            .expect("a local connect answers at once")
    }

    /// Everything the server sends until it closes.
    async fn read_all(stream: &mut TcpStream) -> io::Result<String> {
        let mut out = Vec::new();
        tokio::time::timeout(LIMIT, stream.read_to_end(&mut out))
            .await
            .expect("the responder closes the connection")?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    async fn get(addr: SocketAddr, request: &str) -> String {
        let mut s = connect(addr).await.expect("open responder");
        s.write_all(request.as_bytes()).await.unwrap();
        read_all(&mut s).await.unwrap()
    }

    #[tokio::test]
    async fn tcp_probe_is_accepted_while_open_and_refused_once_closed() {
        let r = ProbeResponder::with_bind(LOCAL, None);
        assert!(!r.is_open().await);
        assert!(r.open().await.unwrap(), "it was closed");
        assert!(!r.open().await.unwrap(), "opening twice changes nothing");
        let addr = r.local_addr().await.unwrap();
        assert_eq!(r.port(), addr.port());
        assert_eq!(r.describe(), format!("TCP port {}", addr.port()));

        // Accepted, then closed by the responder: the probe sees a clean end of stream.
        let mut s = connect(addr).await.unwrap();
        assert_eq!(read_all(&mut s).await.unwrap(), "");

        assert!(r.close().await, "it was open");
        assert!(!r.close().await, "closing twice changes nothing");
        assert!(r.local_addr().await.is_none());
        let refused = connect(addr).await.unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);

        // Reopened on the same port (SO_REUSEADDR despite the probe's TIME_WAIT).
        assert!(r.open().await.unwrap());
        assert_eq!(r.local_addr().await, Some(addr));
        let mut s = connect(addr).await.unwrap();
        assert_eq!(read_all(&mut s).await.unwrap(), "");
    }

    #[tokio::test]
    async fn http_probe_gets_200_on_its_path_and_404_elsewhere() {
        let r = ProbeResponder::with_bind(LOCAL, Some("/health".into()));
        r.open().await.unwrap();
        let addr = r.local_addr().await.unwrap();
        assert!(r.describe().starts_with("HTTP GET /health on port "));

        let ok = get(addr, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.ends_with("OK\n"), "{ok}");
        let ok = get(addr, "GET /health?from=lb HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        for request in [
            "GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
            "POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        ] {
            let answer = get(addr, request).await;
            assert!(
                answer.starts_with("HTTP/1.1 404 Not Found\r\n"),
                "{request:?}: {answer}"
            );
        }
        // Not HTTP at all: an error status or a close, never a 200.
        let garbage = get(addr, "\x16\x03\x01 hello\r\n\r\n").await;
        assert!(!garbage.contains(" 200 "), "{garbage}");
    }

    #[tokio::test]
    async fn a_path_with_a_query_must_match_with_it() {
        let r = ProbeResponder::with_bind(LOCAL, Some("/probe?node=a".into()));
        r.open().await.unwrap();
        let addr = r.local_addr().await.unwrap();
        let ok = get(addr, "GET /probe?node=a HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(ok.starts_with("HTTP/1.1 200 "), "{ok}");
        let other = get(addr, "GET /probe?node=b HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(other.starts_with("HTTP/1.1 404 "), "{other}");
    }

    #[tokio::test]
    async fn closing_drops_open_connections_and_refuses_new_ones() {
        let r = ProbeResponder::with_bind(LOCAL, Some("/health".into()));
        r.open().await.unwrap();
        let addr = r.local_addr().await.unwrap();
        // A probe that connected but has not sent its request yet.
        let mut pending = connect(addr).await.unwrap();
        // Let the responder accept it.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(r.close().await);
        // Closed under it: end of stream or a reset, at once and without an answer.
        let mut buf = [0u8; 64];
        match tokio::time::timeout(Duration::from_secs(1), pending.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {}
            Ok(Ok(n)) => panic!(
                "a closed responder answered: {:?}",
                String::from_utf8_lossy(&buf[..n])
            ),
            Err(_) => panic!("the connection stayed open after close"),
        }
        let refused = connect(addr).await.unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
    }

    #[tokio::test]
    async fn a_port_in_use_is_an_error_naming_it() {
        let taken = std::net::TcpListener::bind(LOCAL).unwrap();
        let addr = taken.local_addr().unwrap();
        let r = ProbeResponder::with_bind(addr, None);
        let e = r.open().await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
        assert!(e.to_string().contains(&addr.to_string()), "{e}");
        assert!(!r.is_open().await);
    }

    #[tokio::test]
    async fn all_addresses_by_default() {
        // Port 0: any free port, on every address (dual stack or IPv4 only).
        let r = ProbeResponder::new(0, None);
        r.open().await.unwrap();
        let port = r.port();
        assert_ne!(port, 0);
        let mut s = connect(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port))
            .await
            .unwrap();
        assert_eq!(read_all(&mut s).await.unwrap(), "");
        r.close().await;
    }
}
