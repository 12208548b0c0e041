//! Entra ID access tokens for ARM (shared/clouds/azure.md §1): a service principal's client
//! credentials (secret, or a federated workload-identity assertion), or the VM's managed identity
//! through IMDS; and the cache that hands one token to every caller.
//!
//! The token is renewed ahead of its expiry (5 minutes early, as azure-identity does, but at
//! most half its lifetime so that short-lived test tokens are still used) and replaced when ARM
//! answers 401. Only one token request is in flight at a time: the cache lock is held across
//! it, so concurrent callers share its answer instead of each asking Entra ID or IMDS.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::header::{HeaderMap, HeaderValue};
use serde::Deserialize;

use super::imds::{imds_error, oauth_style_message, Imds};
use crate::http::{HttpClient, HttpResponse, Method, RequestBody, RequestSpec, Url};
use crate::{Error, Result, Secret};

/// azure-identity's `DEFAULT_REFRESH_OFFSET`.
const RENEW_BEFORE: Duration = Duration::from_secs(300);

/// The managed-identity token API version (azure.md §1.2).
pub const IDENTITY_API_VERSION: &str = "2018-02-01";

/// `client_assertion_type` of a federated (workload identity) credential.
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// An ARM access token.
pub(crate) struct Token {
    pub value: Secret,
    /// Counts the tokens obtained, so that a caller whose token ARM refused can ask for a newer
    /// one without discarding a replacement another caller already fetched.
    pub generation: u64,
    /// When to stop handing it out and fetch a new one.
    renew_at: Instant,
    /// When Entra ID stops accepting it (by the lifetime it announced, on our clock).
    expires_at: Instant,
}

/// Where tokens come from.
pub(crate) enum TokenSource {
    /// `POST {authority}/{tenant}/oauth2/v2.0/token` with a client secret or assertion.
    ClientCredentials {
        url: Url,
        tenant: String,
        client_id: String,
        proof: Proof,
        /// `{audience}/.default`.
        scope: String,
    },
    /// `GET {imds}/metadata/identity/oauth2/token?api-version=…&resource=…[&client_id=…]`.
    ManagedIdentity { url: Url, imds: Imds },
}

/// How a service principal proves who it is.
pub(crate) enum Proof {
    Secret(Secret),
    /// A federated token (JWT) read afresh from this file for every request: it is rotated.
    AssertionFile(PathBuf),
}

impl TokenSource {
    /// For messages: which credentials are in use (never the secret).
    pub fn describe(&self) -> String {
        match self {
            TokenSource::ClientCredentials {
                tenant,
                client_id,
                proof: Proof::Secret(_),
                ..
            } => format!("service principal {client_id} in tenant {tenant}"),
            TokenSource::ClientCredentials {
                tenant,
                client_id,
                proof: Proof::AssertionFile(path),
                ..
            } => format!(
                "workload identity {client_id} in tenant {tenant} (token file {})",
                path.display()
            ),
            TokenSource::ManagedIdentity { url, .. } => {
                match url.query_pairs().find(|(k, _)| k == "client_id") {
                    Some((_, id)) => format!("user-assigned managed identity {id}"),
                    None => "the VM's managed identity".to_string(),
                }
            }
        }
    }
}

pub(crate) struct TokenCache {
    source: TokenSource,
    /// To Entra ID (through the environment's proxy when there is one).
    login: HttpClient,
    /// The current token; the lock is held across a token request so that concurrent callers
    /// share its answer.
    current: tokio::sync::Mutex<Option<Arc<Token>>>,
    generations: AtomicU64,
}

impl TokenCache {
    pub fn new(source: TokenSource, login: HttpClient) -> Self {
        TokenCache {
            source,
            login,
            current: tokio::sync::Mutex::new(None),
            generations: AtomicU64::new(0),
        }
    }

    pub fn describe(&self) -> String {
        self.source.describe()
    }

    #[cfg(test)]
    pub fn source_for_tests(&self) -> &TokenSource {
        &self.source
    }

    /// A valid token: the cached one unless it is due for renewal or is generation `refused`
    /// (ARM answered 401 to it), else a new one.
    pub async fn token(&self, refused: Option<u64>) -> Result<Arc<Token>> {
        let mut current = self.current.lock().await;
        let usable = |t: &Arc<Token>| Some(t.generation) != refused;
        if let Some(token) = current.as_ref() {
            if usable(token) && Instant::now() < token.renew_at {
                return Ok(token.clone());
            }
        }
        match self.fetch().await {
            Ok(token) => {
                let token = Arc::new(token);
                *current = Some(token.clone());
                Ok(token)
            }
            // Renewing early failed: the old token is still good for a while.
            Err(e) if e.is_transient() => match current.as_ref() {
                Some(token) if usable(token) && Instant::now() < token.expires_at => {
                    tracing::warn!(error = %e, "cannot renew the Azure token yet, using the current one until it expires");
                    Ok(token.clone())
                }
                _ => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    async fn fetch(&self) -> Result<Token> {
        let response = match &self.source {
            TokenSource::ClientCredentials {
                url,
                client_id,
                proof,
                scope,
                ..
            } => {
                let body = form_body(client_id, proof, scope)?;
                let spec = RequestSpec {
                    method: Method::POST,
                    url: url.clone(),
                    body: Some(RequestBody {
                        bytes: body.expose().as_bytes().to_vec(),
                        content_type: HeaderValue::from_static("application/x-www-form-urlencoded"),
                    }),
                };
                let deadline = Instant::now() + self.login.retry_policy().max_elapsed;
                self.login
                    .send_until_final(&spec, |_| Ok(HeaderMap::new()), deadline)
                    .await
                    .map_err(|e| self.scrub(e))?
            }
            TokenSource::ManagedIdentity { url, imds } => imds.get(url.clone()).await?,
        };
        if !response.status.is_success() {
            return Err(self.token_error(&response));
        }
        let received = Instant::now();
        let parsed = parse_token(&response.body, SystemTime::now())
            .map_err(|m| Error::Invalid(format!("{}: {m}", response.what)))?;
        let generation = self.generations.fetch_add(1, Ordering::SeqCst) + 1;
        tracing::debug!(
            generation,
            lifetime_s = parsed.lifetime.as_secs(),
            credentials = %self.describe(),
            "got an Azure access token"
        );
        Ok(Token {
            value: parsed.value,
            generation,
            renew_at: received + parsed.lifetime - RENEW_BEFORE.min(parsed.lifetime / 2),
            expires_at: received + parsed.lifetime,
        })
    }

    fn token_error(&self, response: &HttpResponse) -> Error {
        match &self.source {
            TokenSource::ManagedIdentity { .. } => {
                let error = imds_error(response);
                match error {
                    // "Identity not found": no (such) managed identity on this VM.
                    Error::Invalid(m)
                        if response.status.as_u16() == 400 && !m.contains("bad_request_102") =>
                    {
                        Error::Auth(format!("IMDS refused a token for {}: {m}", self.describe()))
                    }
                    Error::Auth(m) => {
                        Error::Auth(format!("IMDS refused a token for {}: {m}", self.describe()))
                    }
                    other => other,
                }
            }
            TokenSource::ClientCredentials { .. } => {
                let body: serde_json::Value =
                    serde_json::from_slice(&response.body).unwrap_or_default();
                let code = body
                    .get("error")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or("");
                let message = format!(
                    "{}: HTTP {}: {}",
                    response.what,
                    response.status.as_u16(),
                    oauth_style_message(&response.body)
                );
                let status = response.status.as_u16();
                let error = if status == 401
                    || status == 403
                    || matches!(
                        code,
                        "invalid_client"
                            | "unauthorized_client"
                            | "invalid_grant"
                            | "access_denied"
                    ) {
                    Error::Auth(format!(
                        "Entra ID refused the credentials of {}: {message}",
                        self.describe()
                    ))
                } else if status == 404 {
                    Error::Invalid(format!(
                        "{message} (are the authority host and tenant right?)"
                    ))
                } else {
                    Error::Invalid(format!(
                        "Entra ID rejected the token request for {}: {message}",
                        self.describe()
                    ))
                };
                self.scrub(error)
            }
        }
    }

    /// Belt and braces: Entra ID does not echo the secret, but nothing we report may contain it.
    fn scrub(&self, error: Error) -> Error {
        let TokenSource::ClientCredentials {
            proof: Proof::Secret(secret),
            ..
        } = &self.source
        else {
            return error;
        };
        let secret = secret.expose();
        if secret.is_empty() {
            return error;
        }
        let clean = |m: String| m.replace(secret, "[redacted]");
        match error {
            Error::Retryable(m) => Error::Retryable(clean(m)),
            Error::RateLimited {
                retry_after,
                message,
            } => Error::RateLimited {
                retry_after,
                message: clean(message),
            },
            Error::Conflict(m) => Error::Conflict(clean(m)),
            Error::NotFound(m) => Error::NotFound(clean(m)),
            Error::Auth(m) => Error::Auth(clean(m)),
            Error::Invalid(m) => Error::Invalid(clean(m)),
        }
    }
}

/// The client-credentials form body (azure.md §1.1), itself a secret.
pub(crate) fn form_body(client_id: &str, proof: &Proof, scope: &str) -> Result<Secret> {
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("grant_type", "client_credentials");
    form.append_pair("client_id", client_id);
    match proof {
        Proof::Secret(secret) => {
            form.append_pair("client_secret", secret.expose());
        }
        Proof::AssertionFile(path) => {
            let assertion = std::fs::read_to_string(path).map_err(|e| {
                Error::Auth(format!(
                    "cannot read the federated token file {}: {e}",
                    path.display()
                ))
            })?;
            let assertion = assertion.trim();
            if assertion.is_empty() {
                return Err(Error::Auth(format!(
                    "the federated token file {} is empty",
                    path.display()
                )));
            }
            form.append_pair("client_assertion_type", JWT_BEARER);
            form.append_pair("client_assertion", assertion);
        }
    }
    form.append_pair("scope", scope);
    Ok(Secret::new(form.finish()))
}

/// A token answer, parsed.
pub(crate) struct ParsedToken {
    pub value: Secret,
    pub lifetime: Duration,
}

/// `expires_in` and friends: a number from Entra ID, a string from IMDS (azure.md §12).
#[derive(Deserialize)]
#[serde(untagged)]
enum NumberOrString {
    Number(serde_json::Number),
    String(String),
}

impl NumberOrString {
    fn seconds(&self) -> Option<u64> {
        match self {
            NumberOrString::Number(n) => n
                .as_u64()
                .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64)),
            NumberOrString::String(s) => s.trim().parse().ok(),
        }
    }
}

#[derive(Deserialize)]
struct TokenJson {
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    token_type: Option<String>,
    #[serde(default)]
    expires_in: Option<NumberOrString>,
    #[serde(default)]
    expires_on: Option<NumberOrString>,
}

/// Reads a token answer of Entra ID or IMDS. The lifetime is `expires_in` when given, else
/// `expires_on` (Unix seconds) against `now`.
pub(crate) fn parse_token(
    body: &[u8],
    now: SystemTime,
) -> std::result::Result<ParsedToken, String> {
    // Never quote the body: it holds the token.
    let json: TokenJson =
        serde_json::from_slice(body).map_err(|e| format!("malformed token answer ({e})"))?;
    let value = json
        .access_token
        .filter(|t| !t.trim().is_empty())
        .ok_or("the answer has no access_token")?;
    if let Some(kind) = &json.token_type {
        if !kind.eq_ignore_ascii_case("bearer") {
            return Err(format!("unexpected token_type {kind:?} (expected Bearer)"));
        }
    }
    if value.bytes().any(|b| !b.is_ascii_graphic()) {
        return Err("the access_token contains characters not allowed in a header".into());
    }
    let lifetime = match json.expires_in.as_ref().and_then(NumberOrString::seconds) {
        Some(secs) => Duration::from_secs(secs),
        None => {
            let on = json
                .expires_on
                .as_ref()
                .and_then(NumberOrString::seconds)
                .ok_or("the answer has neither a valid expires_in nor expires_on")?;
            let now = now
                .duration_since(UNIX_EPOCH)
                .map_err(|_| "the system clock is before 1970")?
                .as_secs();
            Duration::from_secs(on.saturating_sub(now))
        }
    };
    if lifetime.is_zero() {
        return Err("the new token has already expired (is the clock right?)".into());
    }
    Ok(ParsedToken {
        value: Secret::new(value),
        lifetime,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_506_480_273;

    fn parse(body: &str) -> std::result::Result<ParsedToken, String> {
        parse_token(body.as_bytes(), UNIX_EPOCH + Duration::from_secs(NOW))
    }

    #[test]
    fn entra_tokens_have_numeric_lifetimes() {
        let t = parse(
            r#"{"token_type":"Bearer","expires_in":3599,"ext_expires_in":3599,"access_token":"eyJ0eXAi.x.y"}"#,
        )
        .unwrap();
        assert_eq!(t.value.expose(), "eyJ0eXAi.x.y");
        assert_eq!(t.lifetime, Duration::from_secs(3599));
    }

    #[test]
    fn imds_tokens_have_string_lifetimes() {
        let t = parse(
            r#"{"access_token":"eyJ.a.b","refresh_token":"","expires_in":"3599","expires_on":"1506484173",
                "not_before":"1506480273","resource":"https://management.azure.com/","token_type":"Bearer"}"#,
        )
        .unwrap();
        assert_eq!(t.lifetime, Duration::from_secs(3599));
        // Only expires_on: against the clock.
        let t =
            parse(r#"{"access_token":"eyJ.a.b","expires_on":"1506484173","token_type":"Bearer"}"#)
                .unwrap();
        assert_eq!(t.lifetime, Duration::from_secs(3900));
        let t = parse(r#"{"access_token":"eyJ.a.b","expires_in":"junk","expires_on":1506480283}"#)
            .unwrap();
        assert_eq!(t.lifetime, Duration::from_secs(10));
    }

    #[test]
    fn bad_token_answers_are_refused_without_quoting_them() {
        for (body, needle) in [
            (
                r#"{"token_type":"Bearer","expires_in":3599}"#,
                "no access_token",
            ),
            (
                r#"{"access_token":"secret-tok","expires_in":"x"}"#,
                "neither",
            ),
            (r#"{"access_token":"secret-tok","expires_in":0}"#, "expired"),
            (
                r#"{"access_token":"secret-tok","expires_on":"1"}"#,
                "expired",
            ),
            (
                r#"{"access_token":"secret-tok","token_type":"pop","expires_in":5}"#,
                "token_type",
            ),
            (r#"{"access_token":"secret tok","expires_in":5}"#, "header"),
            ("not json secret-tok", "malformed"),
        ] {
            let e = parse(body).err().unwrap();
            assert!(e.contains(needle), "{body}: {e}");
            assert!(!e.contains("secret-tok"), "{e}");
        }
    }

    #[test]
    fn the_form_body_encodes_everything() {
        let body = form_body(
            "00000000-0000-4000-8000-000000000001",
            &Proof::Secret(Secret::new("a+b/c=d&e f")),
            "https://management.azure.com/.default",
        )
        .unwrap();
        assert_eq!(
            body.expose(),
            "grant_type=client_credentials&client_id=00000000-0000-4000-8000-000000000001\
             &client_secret=a%2Bb%2Fc%3Dd%26e+f&scope=https%3A%2F%2Fmanagement.azure.com%2F.default"
        );
        assert_eq!(format!("{body:?}"), "[redacted]");

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "eyJhbGciOi.jwt.sig\n").unwrap();
        let body = form_body("app", &Proof::AssertionFile(file.clone()), "s/.default").unwrap();
        assert_eq!(
            body.expose(),
            "grant_type=client_credentials&client_id=app\
             &client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer\
             &client_assertion=eyJhbGciOi.jwt.sig&scope=s%2F.default"
        );
        std::fs::write(&file, "  \n").unwrap();
        let e = form_body("app", &Proof::AssertionFile(file), "s").unwrap_err();
        assert_eq!(e.kind(), "auth");
        let e =
            form_body("app", &Proof::AssertionFile(dir.path().join("absent")), "s").unwrap_err();
        assert_eq!(e.kind(), "auth");
    }
}
