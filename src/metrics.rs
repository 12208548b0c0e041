//! Prometheus metrics: the counters, gauges and histograms the agent updates, their
//! OpenMetrics text exposition, and the small HTTP endpoint that serves it on
//! `--metrics-listen` (`GET /metrics`).
//!
//! Label values must come from small fixed sets (operation names, error kinds, reason
//! classes, state names, configured addresses and checks): every distinct value is a series
//! kept for the life of the process.

use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::status::IP_STATES;

/// The Content-Type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE_OPENMETRICS: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds of the API latency histogram, in seconds: from a fast metadata read to a
/// slow asynchronous operation near the per-call timeout.
const API_BUCKETS: [f64; 13] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0,
];

/// Scrapes served at once; more connections are closed at once.
const MAX_CONNECTIONS: usize = 8;
/// A client must send its request headers within this time.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// No connection lives longer than this, keep-alive included (the scraper reconnects).
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiLabels {
    op: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabels {
    op: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransitionLabels {
    ip: String,
    to: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IpStateLabels {
    ip: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IpLabels {
    ip: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckLabels {
    check: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckResultLabels {
    check: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

#[derive(Debug)]
struct Inner {
    registry: Registry,
    heartbeats_sent: Counter,
    heartbeats_received: Counter,
    heartbeats_dropped: Family<ReasonLabels, Counter>,
    api_calls: Family<ApiLabels, Counter>,
    api_duration: HistogramFamily<OpLabels>,
    transitions: Family<TransitionLabels, Counter>,
    state: Family<IpStateLabels, Gauge>,
    priority: Family<IpLabels, Gauge>,
    health_up: Family<CheckLabels, Gauge>,
    health_results: Family<CheckResultLabels, Counter>,
}

/// The agent's metrics; clones share the same series.
#[derive(Clone, Debug)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every metric registered, `exoip_build_info` set.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("exoip");
        let heartbeats_sent = Counter::default();
        registry.register(
            "heartbeats_sent",
            "Heartbeat datagrams sent (one per peer per interval)",
            heartbeats_sent.clone(),
        );
        let heartbeats_received = Counter::default();
        registry.register(
            "heartbeats_received",
            "Valid heartbeats accepted",
            heartbeats_received.clone(),
        );
        let heartbeats_dropped = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "heartbeats_dropped",
            "Datagrams dropped on the heartbeat port, by reason",
            heartbeats_dropped.clone(),
        );
        let api_calls = Family::<ApiLabels, Counter>::default();
        registry.register(
            "api_calls",
            "Cloud API calls by operation and outcome (ok or the error kind)",
            api_calls.clone(),
        );
        let api_duration: HistogramFamily<OpLabels> =
            Family::new_with_constructor(|| Histogram::new(API_BUCKETS));
        registry.register_with_unit(
            "api_call_duration",
            "Cloud API call latency by operation, failures included",
            Unit::Seconds,
            api_duration.clone(),
        );
        let transitions = Family::<TransitionLabels, Counter>::default();
        registry.register(
            "transitions",
            "State changes per address, by new state and reason class",
            transitions.clone(),
        );
        let state = Family::<IpStateLabels, Gauge>::default();
        registry.register(
            "state",
            "1 for the current state of each address, 0 for the others",
            state.clone(),
        );
        let priority = Family::<IpLabels, Gauge>::default();
        registry.register(
            "effective_priority",
            "Priority value in effect per address (lower wins)",
            priority.clone(),
        );
        let health_up = Family::<CheckLabels, Gauge>::default();
        registry.register(
            "health_check_up",
            "1 if the last run of the health check passed, 0 if it failed",
            health_up.clone(),
        );
        let health_results = Family::<CheckResultLabels, Counter>::default();
        registry.register(
            "health_check_results",
            "Health check runs by result (ok or fail)",
            health_results.clone(),
        );
        let build = Family::<VersionLabels, Gauge>::default();
        build
            .get_or_create(&VersionLabels {
                version: env!("CARGO_PKG_VERSION").to_string(),
            })
            .set(1);
        registry.register("build_info", "Always 1; the version as a label", build);
        Metrics {
            inner: Arc::new(Inner {
                registry,
                heartbeats_sent,
                heartbeats_received,
                heartbeats_dropped,
                api_calls,
                api_duration,
                transitions,
                state,
                priority,
                health_up,
                health_results,
            }),
        }
    }

    /// `n` heartbeat datagrams went out.
    pub fn heartbeat_sent(&self, n: u64) {
        self.inner.heartbeats_sent.inc_by(n);
    }

    /// A valid heartbeat was accepted.
    pub fn heartbeat_received(&self) {
        self.inner.heartbeats_received.inc();
    }

    /// A datagram was dropped (`reason`: the wire drop label, e.g. `malformed`, `bad_mac`,
    /// `replayed`, `unknown_group`).
    pub fn heartbeat_dropped(&self, reason: &str) {
        self.inner
            .heartbeats_dropped
            .get_or_create(&ReasonLabels {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// A cloud API call finished: `outcome` is `ok` or the error kind (`retryable`, `auth`,
    /// `not_found`, ...).
    pub fn api_call(&self, op: &str, outcome: &str, latency: Duration) {
        self.inner
            .api_calls
            .get_or_create(&ApiLabels {
                op: op.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
        self.inner
            .api_duration
            .get_or_create(&OpLabels { op: op.to_string() })
            .observe(latency.as_secs_f64());
    }

    /// An address changed state; `reason_class` is a short fixed word (`startup`, `preempt`,
    /// `taken_over`, `health`, `admin`, ...), not the free-text reason.
    pub fn transition(&self, ip: IpAddr, to: &str, reason_class: &str) {
        self.inner
            .transitions
            .get_or_create(&TransitionLabels {
                ip: ip.to_string(),
                to: to.to_string(),
                reason: reason_class.to_string(),
            })
            .inc();
    }

    /// Sets the state gauges of `ip`: 1 for `state`, 0 for every other state of
    /// [`IP_STATES`] (all are present, so "was it ever master" queries see zeros).
    pub fn set_state(&self, ip: IpAddr, state: &str) {
        let ip = ip.to_string();
        let set = |s: &str, v: i64| {
            self.inner
                .state
                .get_or_create(&IpStateLabels {
                    ip: ip.clone(),
                    state: s.to_string(),
                })
                .set(v);
        };
        for s in IP_STATES {
            set(s, i64::from(s == state));
        }
        // A state outside the known set still shows rather than vanishing.
        if !IP_STATES.contains(&state) {
            set(state, 1);
        }
    }

    /// A health check ran.
    pub fn health(&self, check: &str, ok: bool) {
        self.inner
            .health_up
            .get_or_create(&CheckLabels {
                check: check.to_string(),
            })
            .set(i64::from(ok));
        self.inner
            .health_results
            .get_or_create(&CheckResultLabels {
                check: check.to_string(),
                result: if ok { "ok" } else { "fail" }.to_string(),
            })
            .inc();
    }

    /// The priority value in effect for `ip`.
    pub fn set_priority(&self, ip: IpAddr, effective: u8) {
        self.inner
            .priority
            .get_or_create(&IpLabels { ip: ip.to_string() })
            .set(i64::from(effective));
    }

    /// The exposition in the OpenMetrics text format ([`CONTENT_TYPE_OPENMETRICS`]).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail and every metric here has a text form; should the
        // encoder refuse anyway, a partial scrape plus a log line beats a dead endpoint.
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.inner.registry) {
            tracing::warn!(error = %e, "metrics: encoding failed");
        }
        out
    }
}

/// Serves `GET /metrics` on `listen` (404 elsewhere); returns the bound address (useful
/// with port 0) and the server task.
pub async fn serve(
    listen: SocketAddr,
    metrics: Metrics,
) -> io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(listen).await.map_err(|e| {
        io::Error::new(e.kind(), format!("metrics: cannot listen on {listen}: {e}"))
    })?;
    let local = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // E.g. out of file descriptors: pause instead of spinning.
                    tracing::warn!(error = %e, "metrics: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                continue;
            };
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let response = respond(&metrics, &req);
                    async move { Ok::<_, Infallible>(response) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service);
                let _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await;
                drop(permit);
            });
        }
    });
    Ok((local, task))
}

fn respond<B>(metrics: &Metrics, req: &Request<B>) -> Response<Full<Bytes>> {
    let text = |status: StatusCode, body: &'static str| {
        let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
        *r.status_mut() = status;
        r.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        r
    };
    if req.uri().path() != "/metrics" {
        return text(
            StatusCode::NOT_FOUND,
            "not found; metrics are on /metrics\n",
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let mut r = Response::new(Full::new(Bytes::from(metrics.encode())));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static(CONTENT_TYPE_OPENMETRICS),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::net::Ipv4Addr;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const IP: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 10));

    #[derive(Debug)]
    struct Sample {
        name: String,
        labels: BTreeMap<String, String>,
        value: f64,
    }

    /// A strict reader of the text exposition: `# ` comments (HELP, TYPE, UNIT, EOF) or
    /// `name{label="value",...} value`, with escapes in label values. Panics on anything else.
    fn parse(text: &str) -> Vec<Sample> {
        assert!(text.ends_with("# EOF\n"), "no EOF marker");
        let mut out = Vec::new();
        for line in text.lines() {
            if line.starts_with("# ") {
                let word = line.split_whitespace().nth(1).unwrap_or("");
                assert!(
                    ["HELP", "TYPE", "UNIT", "EOF"].contains(&word),
                    "bad comment {line:?}"
                );
                continue;
            }
            let name_end = line
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or_else(|| panic!("no value in {line:?}"));
            let name = &line[..name_end];
            assert!(!name.is_empty(), "no name in {line:?}");
            let mut rest = &line[name_end..];
            let mut labels = BTreeMap::new();
            if let Some(body) = rest.strip_prefix('{') {
                let mut chars = body.char_indices().peekable();
                let end = loop {
                    let (i, c) = chars
                        .next()
                        .unwrap_or_else(|| panic!("open {{ in {line:?}"));
                    if c == '}' {
                        break i;
                    }
                    let mut key = c.to_string();
                    for (_, c) in chars.by_ref() {
                        if c == '=' {
                            break;
                        }
                        key.push(c);
                    }
                    assert!(
                        key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                        "bad label name {key:?} in {line:?}"
                    );
                    assert_eq!(chars.next().map(|x| x.1), Some('"'), "{line:?}");
                    let mut value = String::new();
                    loop {
                        match chars.next().map(|x| x.1) {
                            Some('"') => break,
                            Some('\\') => match chars.next().map(|x| x.1) {
                                Some('n') => value.push('\n'),
                                Some(c @ ('"' | '\\')) => value.push(c),
                                other => panic!("bad escape {other:?} in {line:?}"),
                            },
                            Some(c) => value.push(c),
                            None => panic!("open quote in {line:?}"),
                        }
                    }
                    labels.insert(key, value);
                    if let Some((_, ',')) = chars.peek() {
                        chars.next();
                    }
                };
                rest = &body[end + 1..];
            }
            let value = rest
                .strip_prefix(' ')
                .unwrap_or_else(|| panic!("no space before the value in {line:?}"));
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v
                    .parse()
                    .unwrap_or_else(|_| panic!("bad value {v:?} in {line:?}")),
            };
            out.push(Sample {
                name: name.to_string(),
                labels,
                value,
            });
        }
        out
    }

    /// The value of the one sample named `name` carrying (at least) `labels`.
    fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let found: Vec<&Sample> = samples
            .iter()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect();
        assert!(
            found.len() <= 1,
            "{name} {labels:?} is ambiguous: {found:?}"
        );
        found.first().map(|s| s.value)
    }

    fn exercised() -> Metrics {
        let m = Metrics::new();
        m.heartbeat_sent(3);
        m.heartbeat_sent(2);
        m.heartbeat_received();
        m.heartbeat_dropped("bad_mac");
        m.heartbeat_dropped("bad_mac");
        m.heartbeat_dropped("replay");
        m.api_call("attach", "ok", Duration::from_millis(3));
        m.api_call("attach", "ok", Duration::from_millis(700));
        m.api_call("attach", "retryable", Duration::from_secs(40));
        m.api_call("holders", "auth", Duration::from_millis(20));
        m.transition(IP, "master", "peer_dead");
        m.transition(IP, "master", "peer_dead");
        m.transition(IP, "backup", "preempted");
        m.set_state(IP, "master");
        m.set_state(IP, "backup");
        m.health("tcp:127.0.0.1:80", true);
        m.health("tcp:127.0.0.1:80", false);
        m.set_priority(IP, 12);
        m
    }

    #[test]
    fn calls_show_up_with_their_labels() {
        let text = exercised().encode();
        let s = parse(&text);
        assert!(s.iter().all(|x| x.name.starts_with("exoip_")), "{text}");
        let ip = "203.0.113.10";
        assert_eq!(value(&s, "exoip_heartbeats_sent_total", &[]), Some(5.0));
        assert_eq!(value(&s, "exoip_heartbeats_received_total", &[]), Some(1.0));
        assert_eq!(
            value(
                &s,
                "exoip_heartbeats_dropped_total",
                &[("reason", "bad_mac")]
            ),
            Some(2.0)
        );
        assert_eq!(
            value(
                &s,
                "exoip_heartbeats_dropped_total",
                &[("reason", "replay")]
            ),
            Some(1.0)
        );
        assert_eq!(
            value(
                &s,
                "exoip_api_calls_total",
                &[("op", "attach"), ("outcome", "ok")]
            ),
            Some(2.0)
        );
        assert_eq!(
            value(
                &s,
                "exoip_api_calls_total",
                &[("op", "holders"), ("outcome", "auth")]
            ),
            Some(1.0)
        );
        let bucket = |le: &str| {
            value(
                &s,
                "exoip_api_call_duration_seconds_bucket",
                &[("op", "attach"), ("le", le)],
            )
        };
        // Buckets are cumulative: 3 ms, 700 ms, 40 s (beyond the last bound).
        assert_eq!(bucket("0.005"), Some(1.0));
        assert_eq!(bucket("0.5"), Some(1.0));
        assert_eq!(bucket("1.0"), Some(2.0));
        assert_eq!(bucket("30.0"), Some(2.0));
        assert_eq!(bucket("+Inf"), Some(3.0));
        assert_eq!(
            value(
                &s,
                "exoip_api_call_duration_seconds_count",
                &[("op", "attach")]
            ),
            Some(3.0)
        );
        let sum = value(
            &s,
            "exoip_api_call_duration_seconds_sum",
            &[("op", "attach")],
        )
        .unwrap();
        assert!((sum - 40.703).abs() < 1e-9, "{sum}");
        assert_eq!(
            value(
                &s,
                "exoip_transitions_total",
                &[("ip", ip), ("to", "master"), ("reason", "peer_dead")]
            ),
            Some(2.0)
        );
        assert_eq!(
            value(
                &s,
                "exoip_transitions_total",
                &[("ip", ip), ("to", "backup"), ("reason", "preempted")]
            ),
            Some(1.0)
        );
        // One state gauge per known state, only the current one at 1.
        for state in IP_STATES {
            let expected = if state == "backup" { 1.0 } else { 0.0 };
            assert_eq!(
                value(&s, "exoip_state", &[("ip", ip), ("state", state)]),
                Some(expected),
                "{state}"
            );
        }
        let check = "tcp:127.0.0.1:80";
        assert_eq!(
            value(&s, "exoip_health_check_up", &[("check", check)]),
            Some(0.0)
        );
        for result in ["ok", "fail"] {
            assert_eq!(
                value(
                    &s,
                    "exoip_health_check_results_total",
                    &[("check", check), ("result", result)]
                ),
                Some(1.0)
            );
        }
        assert_eq!(
            value(&s, "exoip_effective_priority", &[("ip", ip)]),
            Some(12.0)
        );
        assert_eq!(
            value(
                &s,
                "exoip_build_info",
                &[("version", env!("CARGO_PKG_VERSION"))]
            ),
            Some(1.0)
        );
        assert!(text.contains("# TYPE exoip_api_call_duration_seconds histogram"));
        assert!(text.contains("# UNIT exoip_api_call_duration_seconds seconds"));
    }

    #[test]
    fn hostile_label_values_stay_parseable() {
        let m = Metrics::new();
        m.heartbeat_dropped("quote\" back\\slash\nnewline");
        let s = parse(&m.encode());
        assert_eq!(
            value(
                &s,
                "exoip_heartbeats_dropped_total",
                &[("reason", "quote\" back\\slash\nnewline")]
            ),
            Some(1.0)
        );
    }

    #[test]
    fn unknown_state_is_shown_not_lost() {
        let m = Metrics::new();
        m.set_state(IP, "limbo");
        let s = parse(&m.encode());
        assert_eq!(value(&s, "exoip_state", &[("state", "limbo")]), Some(1.0));
        assert_eq!(value(&s, "exoip_state", &[("state", "master")]), Some(0.0));
    }

    #[test]
    fn clones_share_series() {
        let m = Metrics::new();
        m.clone().heartbeat_received();
        m.clone().heartbeat_received();
        let s = parse(&m.encode());
        assert_eq!(value(&s, "exoip_heartbeats_received_total", &[]), Some(2.0));
    }

    async fn http_get(addr: SocketAddr, request: &str) -> (String, String) {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut raw = String::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut raw))
            .await
            .expect("answer in time")
            .unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").expect("a header block");
        (head.to_string(), body.to_string())
    }

    #[tokio::test]
    async fn scrape_over_http() {
        let metrics = exercised();
        let (addr, task) = serve("127.0.0.1:0".parse().unwrap(), metrics.clone())
            .await
            .unwrap();
        assert_ne!(addr.port(), 0);
        metrics.heartbeat_received();

        let (head, body) = http_get(
            addr,
            "GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains(&format!("content-type: {CONTENT_TYPE_OPENMETRICS}")),
            "{head}"
        );
        let s = parse(&body);
        // The scrape sees the live values, including updates after serve started.
        assert_eq!(value(&s, "exoip_heartbeats_received_total", &[]), Some(2.0));
        assert!(value(&s, "exoip_build_info", &[]).is_some());

        let (head, _) = http_get(
            addr,
            "GET /other HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(head.starts_with("HTTP/1.1 404"), "{head}");
        let (head, _) = http_get(
            addr,
            "POST /metrics HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(head.starts_with("HTTP/1.1 405"), "{head}");
        // Garbage is answered (400) or dropped, and the server keeps serving.
        let mut junk = tokio::net::TcpStream::connect(addr).await.unwrap();
        junk.write_all(b"\x00\x01garbage\r\n\r\n").await.unwrap();
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), junk.read_to_end(&mut sink)).await;
        let (head, _) = http_get(
            addr,
            "GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        task.abort();
    }

    #[tokio::test]
    async fn listen_errors_name_the_address() {
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = taken.local_addr().unwrap();
        let err = serve(addr, Metrics::new()).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        assert!(err.to_string().contains(&addr.to_string()), "{err}");
    }
}
