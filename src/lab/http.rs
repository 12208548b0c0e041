//! Just enough HTTP for the lab's data path and for talking to the simulator: an HTTP/1.0 server
//! that answers every request with one fixed body, a one-shot GET and a client loop printing one
//! JSON line per request. Plain tokio TCP keeps the agent's dependency tree free of a client.

use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

use super::unix_now;

/// Bound on anything we read: the lab only ever exchanges small documents.
const MAX_RESPONSE: usize = 16 << 20;
const MAX_REQUEST_HEAD: usize = 16 << 10;

/// `http://HOST[:PORT][/PATH]`, the only form the lab needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl Url {
    pub fn parse(url: &str) -> Result<Url> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| anyhow!("only http:// URLs are supported: {url}"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, p) = v6
                .split_once(']')
                .ok_or_else(|| anyhow!("bad IPv6 authority in {url}"))?;
            (h, p.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            bail!("no host in {url}");
        }
        let port = match port {
            Some(p) => p.parse().with_context(|| format!("bad port in {url}"))?,
            None => 80,
        };
        Ok(Url {
            host: host.to_string(),
            port,
            path: path.to_string(),
        })
    }

    fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == 80 {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    pub async fn socket_addr(&self) -> Result<SocketAddr> {
        tokio::net::lookup_host((self.host.as_str(), self.port))
            .await?
            .next()
            .ok_or_else(|| anyhow!("{} does not resolve", self.host))
    }
}

/// A response: status code and body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// GET `url` from the current network namespace, all of it within `timeout`.
pub async fn get(url: &str, timeout: Duration) -> Result<Response> {
    let url = Url::parse(url)?;
    tokio::time::timeout(timeout, async {
        let addr = url.socket_addr().await?;
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connect {addr}"))?;
        request(stream, &url).await
    })
    .await
    .map_err(|_| anyhow!("timed out after {timeout:?}"))?
}

/// GET `url` over a socket created beforehand (possibly in another network namespace).
pub async fn get_with_socket(socket: TcpSocket, url: &Url, timeout: Duration) -> Result<Response> {
    send_with_socket(socket, "GET", url, None, timeout).await
}

/// PUT a JSON document to `url` over a socket created beforehand (the simulator's control
/// API, from inside the router namespace).
pub async fn put_json_with_socket(
    socket: TcpSocket,
    url: &Url,
    body: &serde_json::Value,
    timeout: Duration,
) -> Result<Response> {
    let body = serde_json::to_vec(body)?;
    send_with_socket(socket, "PUT", url, Some(&body), timeout).await
}

async fn send_with_socket(
    socket: TcpSocket,
    method: &str,
    url: &Url,
    json: Option<&[u8]>,
    timeout: Duration,
) -> Result<Response> {
    tokio::time::timeout(timeout, async {
        let addr = url.socket_addr().await?;
        let stream = socket
            .connect(addr)
            .await
            .with_context(|| format!("connect {addr}"))?;
        send(stream, method, url, json).await
    })
    .await
    .map_err(|_| anyhow!("timed out after {timeout:?}"))?
}

async fn request(stream: TcpStream, url: &Url) -> Result<Response> {
    send(stream, "GET", url, None).await
}

async fn send(
    mut stream: TcpStream,
    method: &str,
    url: &Url,
    json: Option<&[u8]>,
) -> Result<Response> {
    // HTTP/1.0: the server closes after the response, so no keep-alive or chunking to expect
    // (chunked responses are still decoded, in case a server uses them anyway).
    let mut req = format!(
        "{method} {} HTTP/1.0\r\nHost: {}\r\nUser-Agent: exoip-lab\r\nAccept: */*\r\n",
        url.path,
        url.host_header()
    )
    .into_bytes();
    match json {
        Some(body) => {
            req.extend_from_slice(
                format!(
                    "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                )
                .as_bytes(),
            );
            req.extend_from_slice(body);
        }
        None => req.extend_from_slice(b"\r\n"),
    }
    stream.write_all(&req).await?;
    let mut raw = Vec::new();
    (&mut stream)
        .take(MAX_RESPONSE as u64 + 1)
        .read_to_end(&mut raw)
        .await?;
    if raw.len() > MAX_RESPONSE {
        bail!("response larger than {MAX_RESPONSE} bytes");
    }
    parse_response(&raw)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

pub fn parse_response(raw: &[u8]) -> Result<Response> {
    let head_end = find(raw, b"\r\n\r\n").ok_or_else(|| anyhow!("incomplete response head"))?;
    let head = std::str::from_utf8(&raw[..head_end]).context("response head is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/") {
        bail!("not an HTTP response: {status_line:?}");
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad status line {status_line:?}"))?;
    let mut content_length = None;
    let mut chunked = false;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                content_length = Some(value.parse::<usize>().context("bad Content-Length")?);
            } else if name.eq_ignore_ascii_case("transfer-encoding")
                && value.eq_ignore_ascii_case("chunked")
            {
                chunked = true;
            }
        }
    }
    let body = &raw[head_end + 4..];
    let body = if chunked {
        decode_chunked(body)?
    } else if let Some(len) = content_length {
        if body.len() < len {
            bail!("body truncated: {} of {len} bytes", body.len());
        }
        body[..len].to_vec()
    } else {
        body.to_vec()
    };
    Ok(Response { status, body })
}

fn decode_chunked(mut data: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = find(data, b"\r\n").ok_or_else(|| anyhow!("truncated chunk size"))?;
        let size_str = std::str::from_utf8(&data[..line_end])?;
        let size_str = size_str.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_str, 16).context("bad chunk size")?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            bail!("truncated chunk");
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// Answers every request on `listen` with `body` (plus a newline) until killed.
pub async fn serve(listen: SocketAddr, body: String) -> Result<()> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let response: std::sync::Arc<[u8]> = format!(
        "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}\n",
        body.len() + 1
    )
    .into_bytes()
    .into();
    loop {
        let (mut stream, _) = match listener.accept().await {
            Ok(c) => c,
            // Out of file descriptors and the like: back off instead of spinning.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let response = response.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(5), async {
                let mut head = Vec::with_capacity(512);
                let mut buf = [0u8; 1024];
                while find(&head, b"\r\n\r\n").is_none() && head.len() < MAX_REQUEST_HEAD {
                    let n = stream.read(&mut buf).await?;
                    if n == 0 {
                        return Ok(());
                    }
                    head.extend_from_slice(&buf[..n]);
                }
                stream.write_all(&response).await?;
                stream.shutdown().await
            })
            .await;
        });
    }
}

/// One line of `fetch-loop` output.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct FetchRecord {
    /// Unix time (seconds) when the request started.
    pub t: f64,
    pub ok: bool,
    /// How long it took, in milliseconds.
    pub ms: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// GETs `url` every `interval` (each attempt bounded by `timeout`) for `duration` (forever when
/// `None`), printing one [`FetchRecord`] JSON line per attempt. Stops quietly when stdout closes.
pub async fn fetch_loop(
    url: &str,
    interval: Duration,
    timeout: Duration,
    duration: Option<Duration>,
) -> Result<()> {
    Url::parse(url)?;
    let started = Instant::now();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if duration.is_some_and(|d| started.elapsed() >= d) {
            return Ok(());
        }
        let t = unix_now();
        let begin = Instant::now();
        let result = get(url, timeout).await;
        let ms = begin.elapsed().as_secs_f64() * 1000.0;
        let record = match result {
            Ok(r) if (200..300).contains(&r.status) => FetchRecord {
                t,
                ok: true,
                ms,
                body: Some(r.text().trim_end().to_string()),
                error: None,
            },
            Ok(r) => FetchRecord {
                t,
                ok: false,
                ms,
                body: None,
                error: Some(format!("status {}", r.status)),
            },
            Err(e) => FetchRecord {
                t,
                ok: false,
                ms,
                body: None,
                error: Some(format!("{e:#}")),
            },
        };
        let line = serde_json::to_string(&record)?;
        let mut out = std::io::stdout().lock();
        if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lab_urls() {
        assert_eq!(
            Url::parse("http://192.0.2.1:8080/_sim/state").unwrap(),
            Url {
                host: "192.0.2.1".into(),
                port: 8080,
                path: "/_sim/state".into()
            }
        );
        let u = Url::parse("http://203.0.113.10").unwrap();
        assert_eq!((u.port, u.path.as_str()), (80, "/"));
        let u = Url::parse("http://[2001:db8::1]:81/x").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("2001:db8::1", 81));
        assert_eq!(u.host_header(), "[2001:db8::1]:81");
        assert!(Url::parse("https://x/").is_err());
        assert!(Url::parse("http://:80/").is_err());
    }

    #[test]
    fn parses_responses() {
        let r = parse_response(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nlb1\nextra").unwrap();
        assert_eq!((r.status, r.text().as_str()), (200, "lb1"));
        let r = parse_response(
            b"HTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((r.status, r.text().as_str()), (404, "abcde"));
        assert!(parse_response(b"HTTP/1.0 200 OK\r\nContent-Length: 9\r\n\r\nabc").is_err());
        assert!(parse_response(b"SSH-2.0-x\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.0 200 OK\r\n").is_err());
    }

    #[tokio::test]
    async fn server_and_client_talk() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let server = tokio::spawn(serve(addr, "lb2".into()));
        let mut last = Err(anyhow!("not tried"));
        for _ in 0..50 {
            last = get(&format!("http://{addr}/"), Duration::from_secs(2)).await;
            if last.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let r = last.unwrap();
        assert_eq!((r.status, r.text().as_str()), (200, "lb2\n"));
        server.abort();
    }
}
