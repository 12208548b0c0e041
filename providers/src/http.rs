//! Shared HTTP plumbing for the cloud providers: one logical request, re-authorised and retried
//! with jittered backoff inside a deadline, its failure mapped onto [`crate::Error`].
//!
//! Providers describe a request once ([`RequestSpec`]) and pass an `authorize` closure that is
//! called again before every attempt, so signatures with an expiry (Exoscale) or short-lived
//! tokens are always fresh. Nothing in here ever formats request headers, so credentials cannot
//! leak into errors or logs from this layer.

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use rand::Rng;
use reqwest::header::{HeaderMap, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
pub use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::{Error, Result};

/// Longest piece of a response body quoted in an error message.
const MAX_MESSAGE_CHARS: usize = 200;

/// How often and how patiently a request is retried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in total, the first included (0 is treated as 1).
    pub max_attempts: u32,
    /// Backoff ceiling before the first retry; it doubles for each further retry.
    pub base_delay: Duration,
    /// Backoff never exceeds this (a server's `Retry-After` may).
    pub max_delay: Duration,
    /// Overall bound of one call, attempts and waits included.
    pub max_elapsed: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
            max_elapsed: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The backoff ceiling before retry number `retry` (1 = the first retry).
    pub fn ceiling(&self, retry: u32) -> Duration {
        let doublings = retry.saturating_sub(1).min(31);
        self.base_delay
            .saturating_mul(1u32 << doublings)
            .min(self.max_delay)
    }

    /// A jittered delay in `[ceiling/2, ceiling]`: the fixed half keeps retries from bunching up
    /// at zero, the random half keeps agents that failed together from retrying together.
    pub fn backoff(&self, retry: u32) -> Duration {
        let ceiling = self.ceiling(retry);
        let floor = ceiling / 2;
        let spread = u64::try_from((ceiling - floor).as_nanos()).unwrap_or(u64::MAX);
        floor + Duration::from_nanos(rand::thread_rng().gen_range(0..=spread))
    }
}

/// How to build an [`HttpClient`].
#[derive(Clone, Debug)]
pub struct HttpOptions {
    /// Bound of one attempt: connecting, sending and reading the whole response.
    pub request_timeout: Duration,
    /// Extra trusted CA certificates (PEM, one or more); the built-in roots stay trusted.
    pub ca_file: Option<PathBuf>,
    /// Accept any server certificate (OpenStack's `OS_INSECURE` / `verify: false`): for test
    /// clouds with self-signed certificates only, it gives up the protection of TLS.
    pub insecure: bool,
    pub retry: RetryPolicy,
    /// Honour `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY`. Off for link-local metadata services,
    /// which a proxy cannot reach.
    pub use_env_proxy: bool,
    pub user_agent: String,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            request_timeout: Duration::from_secs(10),
            ca_file: None,
            insecure: false,
            retry: RetryPolicy::default(),
            use_env_proxy: true,
            user_agent: concat!("exoip/", env!("CARGO_PKG_VERSION")).to_string(),
        }
    }
}

/// A request body and its media type. `Debug` shows neither content nor bytes: bodies may carry
/// credentials (passwords, client secrets).
#[derive(Clone)]
pub struct RequestBody {
    pub bytes: Vec<u8>,
    pub content_type: HeaderValue,
}

impl fmt::Debug for RequestBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "RequestBody({} bytes of {:?})",
            self.bytes.len(),
            self.content_type
        )
    }
}

/// Everything about a request except its authorisation, which is added per attempt.
#[derive(Clone, Debug)]
pub struct RequestSpec {
    pub method: Method,
    pub url: Url,
    pub body: Option<RequestBody>,
}

impl RequestSpec {
    pub fn new(method: Method, url: Url) -> Self {
        RequestSpec {
            method,
            url,
            body: None,
        }
    }

    /// A request with a JSON body, serialised once so that the bytes signed are the bytes sent.
    pub fn json<T: serde::Serialize + ?Sized>(method: Method, url: Url, value: &T) -> Result<Self> {
        let bytes = serde_json::to_vec(value)
            .map_err(|e| Error::Invalid(format!("cannot serialise request body: {e}")))?;
        Ok(RequestSpec {
            method,
            url,
            body: Some(RequestBody {
                bytes,
                content_type: HeaderValue::from_static("application/json"),
            }),
        })
    }

    /// The escaped request target as it goes on the wire, e.g. `/v2/instance?ip-address=x`.
    pub fn path_and_query(&self) -> String {
        match self.url.query() {
            Some(q) => format!("{}?{q}", self.url.path()),
            None => self.url.path().to_string(),
        }
    }

    /// The body bytes as sent (empty when there is no body).
    pub fn body_bytes(&self) -> &[u8] {
        self.body
            .as_ref()
            .map(|b| b.bytes.as_slice())
            .unwrap_or(&[])
    }

    /// `METHOD /path`, for messages. The query is left out: it is noise, and URLs of some
    /// APIs carry tokens there.
    pub fn describe(&self) -> String {
        format!("{} {}", self.method, self.url.path())
    }
}

/// A response, fully read: a 2xx, or (from [`HttpClient::send_until_final`]) a final error.
#[derive(Clone, Debug)]
pub struct HttpResponse {
    /// `METHOD /path` of the request, for messages.
    pub what: String,
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// Decodes the body; a body that does not fit `T` is the server's fault, so `Invalid`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.body)
            .map_err(|e| Error::Invalid(format!("{}: malformed response: {e}", self.what)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A reqwest client plus the timeout and retry policy applied to every call made through it.
#[derive(Clone, Debug)]
pub struct HttpClient {
    inner: reqwest::Client,
    request_timeout: Duration,
    retry: RetryPolicy,
}

impl HttpClient {
    pub fn new(opts: &HttpOptions) -> Result<Self> {
        let mut builder = reqwest::Client::builder()
            // The APIs we call do not redirect; following one would carry credentials along.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(opts.user_agent.clone())
            .connect_timeout(opts.request_timeout);
        if !opts.use_env_proxy {
            builder = builder.no_proxy();
        }
        if opts.insecure {
            builder = builder.danger_accept_invalid_certs(true);
        }
        if let Some(path) = &opts.ca_file {
            let pem = std::fs::read(path).map_err(|e| {
                Error::Invalid(format!("cannot read CA file {}: {e}", path.display()))
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                Error::Invalid(format!("CA file {} is not valid PEM: {e}", path.display()))
            })?;
            if certs.is_empty() {
                return Err(Error::Invalid(format!(
                    "CA file {} contains no certificate",
                    path.display()
                )));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let inner = builder
            .build()
            .map_err(|e| Error::Invalid(format!("cannot build HTTP client: {}", chain(&e))))?;
        Ok(HttpClient {
            inner,
            request_timeout: opts.request_timeout,
            retry: opts.retry.clone(),
        })
    }

    /// The same connection pool with another timeout and retry policy.
    pub fn with_policy(&self, request_timeout: Duration, retry: RetryPolicy) -> Self {
        HttpClient {
            inner: self.inner.clone(),
            request_timeout,
            retry,
        }
    }

    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.retry
    }

    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// Sends `spec`, retrying transient failures, within the policy's `max_elapsed`.
    pub async fn send<A>(&self, spec: &RequestSpec, authorize: A) -> Result<HttpResponse>
    where
        A: Fn(&RequestSpec) -> Result<HeaderMap>,
    {
        self.send_until(spec, authorize, Instant::now() + self.retry.max_elapsed)
            .await
    }

    /// Like [`HttpClient::send`], but never past `deadline` (nor past `max_elapsed`).
    ///
    /// `authorize` is called before every attempt and returns the headers that authenticate it.
    pub async fn send_until<A>(
        &self,
        spec: &RequestSpec,
        authorize: A,
        deadline: Instant,
    ) -> Result<HttpResponse>
    where
        A: Fn(&RequestSpec) -> Result<HeaderMap>,
    {
        self.send_inner(spec, authorize, deadline, false).await
    }

    /// Like [`HttpClient::send_until`], but an error status that retrying cannot fix (4xx,
    /// 501) comes back as a response instead of an error, for APIs whose error bodies carry a
    /// type to act on (OpenStack's `NeutronError`) or whose 401 calls for a new token. Transient
    /// statuses (408, 429, 5xx) and network errors are still retried and mapped as usual.
    pub async fn send_until_final<A>(
        &self,
        spec: &RequestSpec,
        authorize: A,
        deadline: Instant,
    ) -> Result<HttpResponse>
    where
        A: Fn(&RequestSpec) -> Result<HeaderMap>,
    {
        self.send_inner(spec, authorize, deadline, true).await
    }

    async fn send_inner<A>(
        &self,
        spec: &RequestSpec,
        authorize: A,
        deadline: Instant,
        keep_final_errors: bool,
    ) -> Result<HttpResponse>
    where
        A: Fn(&RequestSpec) -> Result<HeaderMap>,
    {
        let deadline = deadline.min(Instant::now() + self.retry.max_elapsed);
        let what = spec.describe();
        let max_attempts = self.retry.max_attempts.max(1);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(Error::Retryable(format!(
                    "{what}: deadline reached before attempt {attempt}"
                )));
            }
            let timeout = self.request_timeout.min(remaining);
            let outcome = self
                .attempt(spec, &authorize, timeout, attempt, keep_final_errors)
                .await;
            let (error, hint) = match outcome {
                Outcome::Done(response) => return Ok(response),
                Outcome::Fatal(error) => return Err(error),
                Outcome::Transient { error, hint } => (error, hint),
            };
            if attempt >= max_attempts {
                return Err(give_up(error, &format!("after {attempt} attempts")));
            }
            let delay = hint.unwrap_or_else(|| self.retry.backoff(attempt));
            if Instant::now() + delay >= deadline {
                return Err(give_up(
                    error,
                    &format!("after {attempt} attempts, no time left to retry"),
                ));
            }
            tracing::debug!(
                request = %what,
                attempt,
                delay_ms = delay.as_millis() as u64,
                error = %error,
                "retrying"
            );
            tokio::time::sleep(delay).await;
        }
    }

    async fn attempt<A>(
        &self,
        spec: &RequestSpec,
        authorize: &A,
        timeout: Duration,
        attempt: u32,
        keep_final_errors: bool,
    ) -> Outcome
    where
        A: Fn(&RequestSpec) -> Result<HeaderMap>,
    {
        let what = spec.describe();
        let headers = match authorize(spec) {
            Ok(h) => h,
            Err(e) => return Outcome::Fatal(e),
        };
        let mut builder = self
            .inner
            .request(spec.method.clone(), spec.url.clone())
            .headers(headers)
            .timeout(timeout);
        if let Some(body) = &spec.body {
            builder = builder
                .header(CONTENT_TYPE, body.content_type.clone())
                .body(body.bytes.clone());
        }
        let started = Instant::now();
        // reqwest's own timeout covers the body too; the outer one is a guarantee, not a hope.
        let result = tokio::time::timeout(timeout, async {
            let response = builder.send().await?;
            let status = response.status();
            let headers = response.headers().clone();
            let body = response.bytes().await?;
            Ok::<_, reqwest::Error>((status, headers, body.to_vec()))
        })
        .await;
        let latency_ms = started.elapsed().as_millis() as u64;
        match result {
            Err(_elapsed) => {
                tracing::debug!(method = %spec.method, path = spec.url.path(), attempt, latency_ms, "http request timed out");
                Outcome::Transient {
                    error: Error::Retryable(format!("{what}: timed out after {timeout:?}")),
                    hint: None,
                }
            }
            Ok(Err(e)) => {
                let detail = chain(&e);
                tracing::debug!(method = %spec.method, path = spec.url.path(), attempt, latency_ms, error = %detail, "http request failed");
                if e.is_builder() || e.is_redirect() {
                    Outcome::Fatal(Error::Invalid(format!("{what}: {detail}")))
                } else {
                    Outcome::Transient {
                        error: Error::Retryable(format!("{what}: {detail}")),
                        hint: None,
                    }
                }
            }
            Ok(Ok((status, headers, body))) => {
                tracing::debug!(
                    method = %spec.method,
                    path = spec.url.path(),
                    status = status.as_u16(),
                    attempt,
                    latency_ms,
                    "http request"
                );
                if status.is_success() {
                    return Outcome::Done(HttpResponse {
                        what,
                        status,
                        headers,
                        body,
                    });
                }
                match classify(&what, status, &headers, &body, SystemTime::now()) {
                    Outcome::Fatal(_) if keep_final_errors => Outcome::Done(HttpResponse {
                        what,
                        status,
                        headers,
                        body,
                    }),
                    outcome => outcome,
                }
            }
        }
    }
}

/// What one attempt came to.
#[derive(Debug)]
enum Outcome {
    Done(HttpResponse),
    /// Retrying the same request cannot help.
    Fatal(Error),
    /// Retrying may help; `hint` is the server's requested wait, if any.
    Transient {
        error: Error,
        hint: Option<Duration>,
    },
}

fn give_up(error: Error, why: &str) -> Error {
    match error {
        Error::Retryable(m) => Error::Retryable(format!("{m} ({why})")),
        Error::RateLimited {
            retry_after,
            message,
        } => Error::RateLimited {
            retry_after,
            message: format!("{message} ({why})"),
        },
        other => other,
    }
}

/// Maps a non-2xx response onto the error taxonomy and decides whether it is worth a retry.
fn classify(
    what: &str,
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    now: SystemTime,
) -> Outcome {
    let message = format!("{what}: HTTP {}: {}", status.as_u16(), error_message(body));
    let code = status.as_u16();
    let fatal = |e: Error| Outcome::Fatal(e);
    match code {
        400 | 422 => fatal(Error::Invalid(message)),
        401 | 403 => fatal(Error::Auth(message)),
        404 | 410 => fatal(Error::NotFound(message)),
        409 | 412 => fatal(Error::Conflict(message)),
        429 => {
            let retry_after = retry_after(headers, body, now);
            Outcome::Transient {
                error: Error::RateLimited {
                    retry_after,
                    message,
                },
                hint: retry_after,
            }
        }
        408 => Outcome::Transient {
            error: Error::Retryable(message),
            hint: None,
        },
        // "Not implemented" will not change by asking again.
        501 => fatal(Error::Invalid(message)),
        500..=599 => Outcome::Transient {
            error: Error::Retryable(message),
            // Servers send Retry-After with 503 (maintenance, overload): honour it there too.
            hint: header_retry_after(headers, now),
        },
        _ => fatal(Error::Invalid(message)),
    }
}

/// The wait a 429 response asks for: the `Retry-After` header, else a `retry_after` body field.
pub fn retry_after(headers: &HeaderMap, body: &[u8], now: SystemTime) -> Option<Duration> {
    header_retry_after(headers, now).or_else(|| {
        let value: Value = serde_json::from_slice(body).ok()?;
        match value.get("retry_after")? {
            Value::Number(n) => Duration::try_from_secs_f64(n.as_f64()?).ok(),
            Value::String(s) => parse_retry_after(s, now),
            _ => None,
        }
    })
}

/// The wait a response's headers ask for: `Retry-After` (seconds or an HTTP-date), else
/// Azure's millisecond variants `retry-after-ms` / `x-ms-retry-after-ms`.
pub fn header_retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    if let Some(wait) = headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, now))
    {
        return Some(wait);
    }
    ["retry-after-ms", "x-ms-retry-after-ms"]
        .iter()
        .find_map(|name| {
            let value = headers.get(*name)?.to_str().ok()?.trim();
            if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            value.parse().ok().map(Duration::from_millis)
        })
}

/// Parses a `Retry-After` value: delay-seconds or an HTTP-date (a date in the past means now).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return value.parse().ok().map(Duration::from_secs);
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The human part of an error body, parsed leniently: `message`, `detail`, `title`,
/// `errors[0].message`, `error` (string or `{message}`), else the raw text; always short.
pub fn error_message(body: &[u8]) -> String {
    if let Ok(value) = serde_json::from_slice::<Value>(body) {
        let text = |v: Option<&Value>| {
            v.and_then(Value::as_str)
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        let found = text(value.get("message"))
            .or_else(|| text(value.get("detail")))
            .or_else(|| text(value.get("title")))
            .or_else(|| text(value.pointer("/errors/0/message")))
            .or_else(|| text(value.get("error")))
            .or_else(|| text(value.pointer("/error/message")));
        if let Some(found) = found {
            return clip(&found);
        }
    }
    let raw = String::from_utf8_lossy(body);
    let raw = raw.trim();
    if raw.is_empty() {
        "(empty body)".to_string()
    } else {
        clip(raw)
    }
}

fn clip(text: &str) -> String {
    let mut out: String = text
        .chars()
        .take(MAX_MESSAGE_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().nth(MAX_MESSAGE_CHARS).is_some() {
        out.push('…');
    }
    out
}

/// An error and its causes on one line ("cannot connect: ...: Connection refused").
///
/// reqwest's own text names the URL; the caller names the request itself, and some URLs carry
/// credentials, so the top level is rebuilt from the error's kind instead.
fn chain(error: &reqwest::Error) -> String {
    let mut out = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "cannot connect"
    } else if error.is_body() || error.is_decode() {
        "error reading response"
    } else if error.is_redirect() {
        "unexpected redirect"
    } else if error.is_builder() {
        "cannot build request"
    } else {
        "error sending request"
    }
    .to_string();
    let mut source = std::error::Error::source(error);
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    fn outcome(code: u16, headers: &[(&str, &str)], body: &str) -> Outcome {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.insert(
                reqwest::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        classify(
            "GET /v2/x",
            StatusCode::from_u16(code).unwrap(),
            &map,
            body.as_bytes(),
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        )
    }

    fn fatal(code: u16) -> Error {
        match outcome(code, &[], r#"{"message":"nope"}"#) {
            Outcome::Fatal(e) => e,
            other => panic!("{code}: expected fatal, got {other:?}"),
        }
    }

    #[test]
    fn statuses_map_onto_the_taxonomy() {
        for code in [400, 422, 405, 413, 501, 302] {
            assert!(matches!(fatal(code), Error::Invalid(_)), "{code}");
        }
        for code in [401, 403] {
            assert!(matches!(fatal(code), Error::Auth(_)), "{code}");
        }
        for code in [404, 410] {
            assert!(matches!(fatal(code), Error::NotFound(_)), "{code}");
        }
        for code in [409, 412] {
            assert!(matches!(fatal(code), Error::Conflict(_)), "{code}");
        }
        for code in [500, 502, 503, 504, 408] {
            match outcome(code, &[], "") {
                Outcome::Transient {
                    error: Error::Retryable(m),
                    hint: None,
                } => assert!(m.contains(&code.to_string()), "{m}"),
                other => panic!("{code}: {other:?}"),
            }
        }
        let e = fatal(404);
        assert_eq!(e.to_string(), "not found: GET /v2/x: HTTP 404: nope");
    }

    #[test]
    fn rate_limit_carries_the_requested_wait() {
        match outcome(429, &[("retry-after", "7")], r#"{"retry_after":99}"#) {
            Outcome::Transient {
                error: Error::RateLimited { retry_after, .. },
                hint,
            } => {
                assert_eq!(retry_after, Some(Duration::from_secs(7)), "header wins");
                assert_eq!(hint, retry_after);
            }
            other => panic!("{other:?}"),
        }
        match outcome(429, &[], r#"{"error":"slow down","retry_after":2.5}"#) {
            Outcome::Transient {
                error:
                    Error::RateLimited {
                        retry_after,
                        message,
                    },
                ..
            } => {
                assert_eq!(retry_after, Some(Duration::from_millis(2500)));
                assert!(message.contains("slow down"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        match outcome(429, &[], "busy") {
            Outcome::Transient {
                error: Error::RateLimited { retry_after, .. },
                hint,
            } => {
                assert_eq!(retry_after, None);
                assert_eq!(hint, None);
            }
            other => panic!("{other:?}"),
        }
        match outcome(503, &[("retry-after", "3")], "") {
            Outcome::Transient { hint, .. } => assert_eq!(hint, Some(Duration::from_secs(3))),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn retry_after_values() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:47 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:40:00 GMT", now),
            Some(Duration::ZERO),
            "a date in the past means now"
        );
        for bad in ["", "-1", "1.5", "soon", "99999999999999999999999"] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
        }
        let mut azure = HeaderMap::new();
        azure.insert("x-ms-retry-after-ms", HeaderValue::from_static("1500"));
        assert_eq!(
            header_retry_after(&azure, now),
            Some(Duration::from_millis(1500))
        );
        azure.insert("retry-after-ms", HeaderValue::from_static("250"));
        assert_eq!(
            header_retry_after(&azure, now),
            Some(Duration::from_millis(250))
        );
        azure.insert(RETRY_AFTER, HeaderValue::from_static("2"));
        assert_eq!(
            header_retry_after(&azure, now),
            Some(Duration::from_secs(2)),
            "Retry-After first"
        );
        let empty = HeaderMap::new();
        assert_eq!(
            retry_after(&empty, br#"{"retry_after":"4"}"#, now),
            Some(Duration::from_secs(4))
        );
        assert_eq!(retry_after(&empty, br#"{"retry_after":-1}"#, now), None);
        assert_eq!(retry_after(&empty, b"not json", now), None);
    }

    #[test]
    fn error_messages_are_found_leniently_and_kept_short() {
        let m = |b: &str| error_message(b.as_bytes());
        assert_eq!(m(r#"{"message":"a","detail":"b","title":"c"}"#), "a");
        assert_eq!(m(r#"{"message":"","detail":"b","title":"c"}"#), "b");
        assert_eq!(m(r#"{"title":"c","type":"about:blank","status":400}"#), "c");
        assert_eq!(m(r#"{"errors":[{"message":"d"},{"message":"e"}]}"#), "d");
        assert_eq!(m(r#"{"error":"f","retry_after":1}"#), "f");
        assert_eq!(m(r#"{"error":{"code":"X","message":"g"}}"#), "g");
        assert_eq!(m(r#"{"unrelated":1}"#), r#"{"unrelated":1}"#);
        assert_eq!(
            m("  <html>\nBad gateway</html> "),
            "<html> Bad gateway</html>"
        );
        assert_eq!(m(""), "(empty body)");
        let long = "é".repeat(500);
        let clipped = m(&long);
        assert_eq!(clipped.chars().count(), MAX_MESSAGE_CHARS + 1);
        assert!(clipped.ends_with('…'));
        let long_json = format!(r#"{{"message":"{}"}}"#, "x".repeat(1000));
        assert_eq!(m(&long_json).chars().count(), MAX_MESSAGE_CHARS + 1);
    }

    #[test]
    fn backoff_doubles_within_bounds() {
        let p = RetryPolicy::default();
        assert_eq!(p.ceiling(1), Duration::from_millis(100));
        assert_eq!(p.ceiling(2), Duration::from_millis(200));
        assert_eq!(p.ceiling(3), Duration::from_millis(400));
        assert_eq!(p.ceiling(7), Duration::from_secs(5), "capped");
        assert_eq!(p.ceiling(u32::MAX), Duration::from_secs(5), "no overflow");
        for retry in 1..12 {
            let ceiling = p.ceiling(retry);
            let mut seen = std::collections::HashSet::new();
            for _ in 0..200 {
                let d = p.backoff(retry);
                assert!(d >= ceiling / 2 && d <= ceiling, "{retry}: {d:?}");
                seen.insert(d);
            }
            assert!(seen.len() > 1, "jittered");
        }
    }

    #[test]
    fn body_debug_hides_content() {
        let url = Url::parse("http://127.0.0.1/v2/x").unwrap();
        let spec = RequestSpec::json(
            Method::POST,
            url,
            &serde_json::json!({"password": "hunter2"}),
        )
        .unwrap();
        let text = format!("{spec:?}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("bytes"), "{text}");
    }

    #[test]
    fn bad_ca_files_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let missing = HttpOptions {
            ca_file: Some(dir.path().join("absent.pem")),
            ..HttpOptions::default()
        };
        assert!(matches!(HttpClient::new(&missing), Err(Error::Invalid(_))));
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let junk = HttpOptions {
            ca_file: Some(junk),
            ..HttpOptions::default()
        };
        assert!(matches!(HttpClient::new(&junk), Err(Error::Invalid(_))));
    }

    /// A loopback server whose handler answers with `respond(n)` for the n-th request (from 1).
    async fn serve(
        respond: impl Fn(u32) -> (u16, Option<Duration>) + Clone + Send + Sync + 'static,
    ) -> (Url, Arc<AtomicU32>) {
        let hits = Arc::new(AtomicU32::new(0));
        let counter = hits.clone();
        let app = axum::Router::new().fallback(move || {
            let respond = respond.clone();
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                let (code, delay) = respond(n);
                if let Some(d) = delay {
                    tokio::time::sleep(d).await;
                }
                (
                    axum::http::StatusCode::from_u16(code).unwrap(),
                    format!(r#"{{"message":"answer {n}"}}"#),
                )
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (Url::parse(&format!("http://{addr}/v2/x")).unwrap(), hits)
    }

    fn client(request_timeout: Duration, max_elapsed: Duration) -> HttpClient {
        HttpClient::new(&HttpOptions {
            request_timeout,
            use_env_proxy: false,
            retry: RetryPolicy {
                max_attempts: 4,
                base_delay: Duration::from_millis(5),
                max_delay: Duration::from_millis(20),
                max_elapsed,
            },
            ..HttpOptions::default()
        })
        .unwrap()
    }

    #[tokio::test]
    async fn every_attempt_is_authorized_afresh() {
        let (url, hits) = serve(|n| (if n < 3 { 502 } else { 200 }, None)).await;
        let c = client(Duration::from_secs(2), Duration::from_secs(5));
        let calls = AtomicU32::new(0);
        let spec = RequestSpec::new(Method::GET, url);
        let response = c
            .send(&spec, |_| {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                let mut h = HeaderMap::new();
                h.insert("x-attempt", HeaderValue::from(n));
                Ok(h)
            })
            .await
            .unwrap();
        assert_eq!(response.text(), r#"{"message":"answer 3"}"#);
        assert_eq!(hits.load(Ordering::SeqCst), 3);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn non_retryable_statuses_are_not_retried() {
        let (url, hits) = serve(|_| (409, None)).await;
        let c = client(Duration::from_secs(2), Duration::from_secs(5));
        let err = c
            .send(
                &RequestSpec::new(Method::PUT, url),
                |_| Ok(HeaderMap::new()),
            )
            .await
            .unwrap_err();
        assert_eq!(
            err,
            Error::Conflict("PUT /v2/x: HTTP 409: answer 1".to_string())
        );
        assert_eq!(hits.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn final_error_statuses_can_be_returned_as_responses() {
        // 502 twice (retried as usual), then a 412 handed back with its body.
        let (url, hits) = serve(|n| (if n < 3 { 502 } else { 412 }, None)).await;
        let c = client(Duration::from_secs(2), Duration::from_secs(5));
        let spec = RequestSpec::new(Method::PUT, url);
        let deadline = Instant::now() + Duration::from_secs(5);
        let response = c
            .send_until_final(&spec, |_| Ok(HeaderMap::new()), deadline)
            .await
            .unwrap();
        assert_eq!(response.status, StatusCode::PRECONDITION_FAILED);
        assert_eq!(response.text(), r#"{"message":"answer 3"}"#);
        assert_eq!(hits.load(Ordering::SeqCst), 3);
        // Transient statuses are still errors once the attempts run out.
        let (url, _) = serve(|_| (503, None)).await;
        let err = c
            .send_until_final(
                &RequestSpec::new(Method::GET, url),
                |_| Ok(HeaderMap::new()),
                deadline,
            )
            .await
            .unwrap_err();
        assert_eq!(err.kind(), "retryable", "{err}");
    }

    #[test]
    fn insecure_clients_build() {
        let opts = HttpOptions {
            insecure: true,
            ..HttpOptions::default()
        };
        assert!(HttpClient::new(&opts).is_ok());
        assert!(!HttpOptions::default().insecure);
    }

    #[tokio::test]
    async fn slow_attempts_time_out_and_the_deadline_holds() {
        // Every answer takes longer than the per-attempt timeout.
        let (url, hits) = serve(|_| (200, Some(Duration::from_secs(5)))).await;
        let c = client(Duration::from_millis(150), Duration::from_millis(400));
        let started = Instant::now();
        let err = c
            .send(
                &RequestSpec::new(Method::GET, url),
                |_| Ok(HeaderMap::new()),
            )
            .await
            .unwrap_err();
        let took = started.elapsed();
        assert!(
            matches!(err, Error::Retryable(ref m) if m.contains("timed out")),
            "{err}"
        );
        assert!(took < Duration::from_millis(900), "{took:?}");
        let n = hits.load(Ordering::SeqCst);
        assert!((2..=3).contains(&n), "{n} attempts");
    }

    #[tokio::test]
    async fn authorization_failures_are_fatal_and_not_sent() {
        let (url, hits) = serve(|_| (200, None)).await;
        let c = client(Duration::from_secs(1), Duration::from_secs(1));
        let err = c
            .send(&RequestSpec::new(Method::GET, url), |_| {
                Err(Error::Auth("no token".into()))
            })
            .await
            .unwrap_err();
        assert_eq!(err, Error::Auth("no token".into()));
        assert_eq!(hits.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn connection_refused_is_retryable() {
        // Bind then drop to get a loopback port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = Url::parse(&format!("http://127.0.0.1:{port}/v2/x")).unwrap();
        let c = client(Duration::from_secs(1), Duration::from_secs(2));
        let err = c
            .send(
                &RequestSpec::new(Method::GET, url),
                |_| Ok(HeaderMap::new()),
            )
            .await
            .unwrap_err();
        match err {
            Error::Retryable(m) => {
                assert!(m.starts_with("GET /v2/x: cannot connect"), "{m}");
                assert!(m.contains("after 4 attempts"), "{m}");
            }
            other => panic!("{other:?}"),
        }
    }
}
