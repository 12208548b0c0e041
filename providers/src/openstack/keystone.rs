//! Keystone v3: the auth request, the token cache and the choice of the Neutron endpoint from
//! the token's catalog (shared/clouds/openstack.md §1).
//!
//! One token serves every caller. It is renewed ahead of `expires_at` and replaced when Neutron
//! says it is no longer valid; either way only one request goes to Keystone at a time, the other
//! callers wait for its answer instead of authenticating themselves.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use reqwest::header::HeaderMap;
use serde::Deserialize;
use serde_json::{json, Value};

use super::config::{ApplicationCredential, Credentials, Domain, Interface, Project, User};
use crate::http::{HttpClient, HttpResponse, Method, RequestSpec, Url};
use crate::{Error, Result, Secret};

/// keystoneauth renews a token when less than this remains (`MIN_TOKEN_LIFE_SECONDS`).
const RENEW_BEFORE: Duration = Duration::from_secs(120);

/// A Keystone token and what came with it.
pub(crate) struct Token {
    pub value: Secret,
    /// Counts the tokens obtained, so that a caller whose token was refused can ask for a
    /// newer one without discarding a replacement that another caller already fetched.
    pub generation: u64,
    /// Neutron's base URL, ending in `/v2.0`.
    pub network: Url,
    /// When to stop handing the token out and fetch a new one.
    renew_at: Instant,
    /// When Keystone stops accepting it (by the lifetime it announced, on our clock).
    expires_at: Instant,
}

pub(crate) struct Keystone {
    http: HttpClient,
    /// `{auth_url}/v3/auth/tokens`.
    tokens_url: Url,
    credentials: Credentials,
    interface: Interface,
    region: Option<String>,
    network_override: Option<Url>,
    /// For messages: where the credentials came from.
    source: String,
    /// The current token; the lock is held across a request to Keystone so that concurrent
    /// callers share its answer.
    current: tokio::sync::Mutex<Option<Arc<Token>>>,
    generations: AtomicU64,
}

impl Keystone {
    pub fn new(
        http: HttpClient,
        auth_url: &Url,
        credentials: Credentials,
        interface: Interface,
        region: Option<String>,
        network_override: Option<Url>,
        source: String,
    ) -> Self {
        let mut tokens_url = identity_v3(auth_url);
        tokens_url.set_path(&format!("{}/auth/tokens", tokens_url.path()));
        Keystone {
            http,
            tokens_url,
            credentials,
            interface,
            region,
            network_override,
            source,
            current: tokio::sync::Mutex::new(None),
            generations: AtomicU64::new(0),
        }
    }

    /// A valid token: the cached one unless it is due for renewal or is generation `refused`
    /// (Neutron answered 401 to it), else a new one.
    pub async fn token(&self, refused: Option<u64>) -> Result<Arc<Token>> {
        let mut current = self.current.lock().await;
        let usable = |t: &Arc<Token>| Some(t.generation) != refused;
        if let Some(token) = current.as_ref() {
            if usable(token) && Instant::now() < token.renew_at {
                return Ok(token.clone());
            }
        }
        match self.authenticate().await {
            Ok(token) => {
                let token = Arc::new(token);
                *current = Some(token.clone());
                Ok(token)
            }
            // Renewing early failed: the old token is still good for a while.
            Err(e) if e.is_transient() => match current.as_ref() {
                Some(token) if usable(token) && Instant::now() < token.expires_at => {
                    tracing::warn!(error = %e, "cannot renew the Keystone token yet, using the current one until it expires");
                    Ok(token.clone())
                }
                _ => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    async fn authenticate(&self) -> Result<Token> {
        let body = auth_body(&self.credentials);
        let spec = RequestSpec::json(Method::POST, self.tokens_url.clone(), &body)?;
        let deadline = Instant::now() + self.http.retry_policy().max_elapsed;
        let response = self
            .http
            .send_until_final(&spec, |_| Ok(HeaderMap::new()), deadline)
            .await?;
        if !response.status.is_success() {
            return Err(self.keystone_error(&response));
        }
        let value = response
            .headers
            .get("x-subject-token")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "{}: HTTP {} without an X-Subject-Token header",
                    response.what,
                    response.status.as_u16()
                ))
            })?;
        let value = Secret::new(value);
        let received = Instant::now();
        let body: TokenBody = response.json()?;
        let token = body
            .token
            .ok_or_else(|| Error::Invalid(format!("{}: the answer has no token", response.what)))?;
        let expires = token
            .expires_at
            .as_deref()
            .and_then(parse_time)
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "{}: the token has no valid expires_at ({:?})",
                    response.what, token.expires_at
                ))
            })?;
        // Both times are Keystone's: their difference does not depend on our clock.
        let issued = token.issued_at.as_deref().and_then(parse_time);
        let lifetime = issued
            .and_then(|i| expires.duration_since(i).ok())
            .or_else(|| expires.duration_since(SystemTime::now()).ok())
            .unwrap_or(Duration::ZERO);
        if lifetime.is_zero() {
            return Err(Error::Invalid(format!(
                "{}: the new token has already expired (expires_at {:?}; is the clock right?)",
                response.what, token.expires_at
            )));
        }
        let network = match &self.network_override {
            Some(url) => url.clone(),
            None => select_network_endpoint(
                token.catalog.as_deref(),
                self.interface,
                self.region.as_deref(),
            )?,
        };
        let generation = self.generations.fetch_add(1, Ordering::SeqCst) + 1;
        tracing::debug!(
            generation,
            lifetime_s = lifetime.as_secs(),
            network = %network,
            "got a Keystone token"
        );
        Ok(Token {
            value,
            generation,
            network,
            renew_at: received + lifetime - RENEW_BEFORE.min(lifetime / 2),
            expires_at: received + lifetime,
        })
    }

    fn keystone_error(&self, response: &HttpResponse) -> Error {
        let message = format!(
            "{}: HTTP {}: {}",
            response.what,
            response.status.as_u16(),
            crate::http::error_message(&response.body)
        );
        match response.status.as_u16() {
            401 | 403 => Error::Auth(format!(
                "Keystone refused the credentials from {}: {message}",
                self.source
            )),
            404 => Error::Invalid(format!(
                "{message} (is the auth URL {} right?)",
                self.tokens_url.as_str().trim_end_matches("/auth/tokens")
            )),
            409 | 412 => Error::Conflict(message),
            _ => Error::Invalid(format!(
                "Keystone rejected the request for a token ({}): {message}",
                self.source
            )),
        }
    }
}

/// The identity v3 base: `auth_url` as is when it ends in `/v3`, else with `/v3` appended
/// (clouds.yaml files usually give the unversioned URL).
pub(crate) fn identity_v3(auth_url: &Url) -> Url {
    let mut url = auth_url.clone();
    let path = auth_url.path().trim_end_matches('/');
    if !path.ends_with("/v3") {
        url.set_path(&format!("{path}/v3"));
    } else {
        url.set_path(path);
    }
    url
}

/// The request body of `POST /v3/auth/tokens`. An application credential carries no scope:
/// Keystone refuses one.
pub(crate) fn auth_body(credentials: &Credentials) -> Value {
    match credentials {
        Credentials::Password {
            user,
            password,
            project,
        } => {
            let mut user = user_json(user);
            user["password"] = json!(password.expose());
            let project = match project {
                Project::Id(id) => json!({ "id": id }),
                Project::Name { name, domain } => {
                    json!({ "name": name, "domain": domain_json(domain) })
                }
            };
            json!({"auth": {
                "identity": {"methods": ["password"], "password": {"user": user}},
                "scope": {"project": project},
            }})
        }
        Credentials::ApplicationCredential { credential, secret } => {
            let credential = match credential {
                ApplicationCredential::Id(id) => json!({ "id": id, "secret": secret.expose() }),
                ApplicationCredential::Name { name, user } => {
                    json!({ "name": name, "secret": secret.expose(), "user": user_json(user) })
                }
            };
            json!({"auth": {"identity": {
                "methods": ["application_credential"],
                "application_credential": credential,
            }}})
        }
    }
}

fn domain_json(domain: &Domain) -> Value {
    match domain {
        Domain::Id(id) => json!({ "id": id }),
        Domain::Name(name) => json!({ "name": name }),
    }
}

fn user_json(user: &User) -> Value {
    match user {
        User::Id(id) => json!({ "id": id }),
        User::Name { name, domain } => json!({ "name": name, "domain": domain_json(domain) }),
    }
}

/// Keystone's ISO-8601 UTC times: `2026-11-21T14:55:54.000000Z` (also without the `Z`, or
/// with `+00:00`).
pub(crate) fn parse_time(text: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(text.trim()).ok()
}

/// Neutron's `…/v2.0` URL from the catalog: the endpoints of services of type `network` (never
/// chosen by name) with the configured interface and, when one is configured, region.
pub(crate) fn select_network_endpoint(
    catalog: Option<&[CatalogEntry]>,
    interface: Interface,
    region: Option<&str>,
) -> Result<Url> {
    let catalog = catalog.unwrap_or_default();
    if catalog.is_empty() {
        return Err(Error::Invalid(
            "the Keystone token has no service catalog (is the project scope right?)".into(),
        ));
    }
    let endpoints: Vec<&EndpointJson> = catalog
        .iter()
        .filter(|e| e.kind.as_deref() == Some("network"))
        .flat_map(|e| e.endpoints.iter().flatten())
        .collect();
    if endpoints.is_empty() {
        return Err(Error::Invalid(
            "the service catalog has no network (Neutron) service".into(),
        ));
    }
    let region_of = |e: &EndpointJson| e.region_id.clone().or_else(|| e.region.clone());
    let matching: Vec<&EndpointJson> = endpoints
        .iter()
        .copied()
        .filter(|e| e.interface.as_deref().and_then(Interface::parse) == Some(interface))
        .filter(|e| region.is_none() || region_of(e).as_deref() == region)
        .collect();
    let mut urls: Vec<&str> = matching
        .iter()
        .filter_map(|e| e.url.as_deref().map(str::trim).filter(|u| !u.is_empty()))
        .collect();
    urls.sort_unstable();
    urls.dedup();
    let available = || {
        let mut list: Vec<String> = endpoints
            .iter()
            .map(|e| {
                format!(
                    "{} in {}",
                    e.interface.as_deref().unwrap_or("?"),
                    region_of(e).as_deref().unwrap_or("no region")
                )
            })
            .collect();
        list.sort();
        list.dedup();
        list.join(", ")
    };
    let wanted = match region {
        Some(r) => format!("interface {interface} in region {r}"),
        None => format!("interface {interface}"),
    };
    match urls.as_slice() {
        [] => Err(Error::Invalid(format!(
            "the service catalog has no network endpoint with {wanted} (it has: {})",
            available()
        ))),
        [url] => network_url(url, "network endpoint from the catalog"),
        _ => Err(Error::Invalid(format!(
            "the service catalog has several network endpoints with {wanted} ({}): set OS_REGION_NAME",
            available()
        ))),
    }
}

/// A Neutron URL with `/v2.0`: appended unless the URL already ends with it.
pub(crate) fn network_url(text: &str, what: &str) -> Result<Url> {
    let mut url = super::parse_base_url(text, what)?;
    let path = url.path().trim_end_matches('/').to_string();
    if path.ends_with("/v2.0") {
        url.set_path(&path);
    } else {
        url.set_path(&format!("{path}/v2.0"));
    }
    Ok(url)
}

// Keystone's token response (`api-ref/source/v3/authenticate-v3.inc`); every field optional,
// unknown ones ignored.

#[derive(Deserialize, Debug)]
struct TokenBody {
    #[serde(default)]
    token: Option<TokenJson>,
}

#[derive(Deserialize, Debug)]
struct TokenJson {
    #[serde(default)]
    expires_at: Option<String>,
    #[serde(default)]
    issued_at: Option<String>,
    #[serde(default)]
    catalog: Option<Vec<CatalogEntry>>,
}

#[derive(Deserialize, Debug, Clone)]
pub(crate) struct CatalogEntry {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    endpoints: Option<Vec<EndpointJson>>,
}

#[derive(Deserialize, Debug, Clone)]
pub(crate) struct EndpointJson {
    #[serde(default)]
    interface: Option<String>,
    #[serde(default)]
    region_id: Option<String>,
    /// Deprecated copy of `region_id`.
    #[serde(default)]
    region: Option<String>,
    #[serde(default)]
    url: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn catalog(json: Value) -> Vec<CatalogEntry> {
        serde_json::from_value(json).unwrap()
    }

    fn sample() -> Vec<CatalogEntry> {
        catalog(json!([
            {"type": "identity", "name": "keystone", "id": "k", "endpoints": [
                {"id": "1", "interface": "public", "region_id": "RegionOne", "region": "RegionOne", "url": "https://keystone.example/v3/"}]},
            // Named unlike Neutron on purpose: the type decides.
            {"type": "network", "name": "not-neutron", "id": "n", "endpoints": [
                {"id": "2", "interface": "public", "region_id": "RegionOne", "region": "RegionOne", "url": "https://neutron.example:9696"},
                {"id": "3", "interface": "internal", "region_id": "RegionOne", "region": "RegionOne", "url": "http://192.0.2.5:9696/"},
                {"id": "4", "interface": "admin", "region_id": "RegionOne", "url": "http://192.0.2.6:9696/v2.0/"},
                {"id": "5", "interface": "public", "region_id": "RegionTwo", "url": "https://neutron2.example/networking"},
                {"id": "6", "interface": "public", "region": "RegionThree", "url": "https://neutron3.example/"}]},
            {"type": "compute", "name": "neutron", "id": "c", "endpoints": [
                {"id": "7", "interface": "public", "region_id": "RegionOne", "url": "https://nova.example/v2.1"}]},
        ]))
    }

    #[test]
    fn the_endpoint_is_chosen_by_type_interface_and_region() {
        let c = sample();
        let pick = |i, r| select_network_endpoint(Some(&c), i, r).map(|u| u.to_string());
        assert_eq!(
            pick(Interface::Public, Some("RegionOne")).unwrap(),
            "https://neutron.example:9696/v2.0"
        );
        assert_eq!(
            pick(Interface::Internal, None).unwrap(),
            "http://192.0.2.5:9696/v2.0"
        );
        assert_eq!(
            pick(Interface::Admin, Some("RegionOne")).unwrap(),
            "http://192.0.2.6:9696/v2.0",
            "not doubled"
        );
        assert_eq!(
            pick(Interface::Public, Some("RegionTwo")).unwrap(),
            "https://neutron2.example/networking/v2.0"
        );
        assert_eq!(
            pick(Interface::Public, Some("RegionThree")).unwrap(),
            "https://neutron3.example/v2.0",
            "the deprecated region field when region_id is absent"
        );
        let e = pick(Interface::Public, None).unwrap_err();
        assert!(
            e.to_string().contains("several network endpoints")
                && e.to_string().contains("OS_REGION_NAME"),
            "{e}"
        );
        let e = pick(Interface::Internal, Some("RegionTwo")).unwrap_err();
        assert!(
            e.to_string()
                .contains("no network endpoint with interface internal in region RegionTwo"),
            "{e}"
        );
        assert!(e.to_string().contains("public in RegionTwo"), "{e}");
    }

    #[test]
    fn catalog_oddities() {
        let none = select_network_endpoint(None, Interface::Public, None).unwrap_err();
        assert!(none.to_string().contains("no service catalog"), "{none}");
        let c = catalog(json!([{"type": "compute", "endpoints": []}]));
        let e = select_network_endpoint(Some(&c), Interface::Public, None).unwrap_err();
        assert!(e.to_string().contains("no network"), "{e}");
        // The same URL twice (two service entries) is not ambiguous; legacy interface names.
        let c = catalog(json!([
            {"type": "network", "endpoints": [{"interface": "publicURL", "region_id": "R", "url": "http://192.0.2.7:9696"}]},
            {"type": "network", "endpoints": [{"interface": "public", "region_id": "R", "url": "http://192.0.2.7:9696"},
                                               {"interface": "public", "url": null}]},
        ]));
        assert_eq!(
            select_network_endpoint(Some(&c), Interface::Public, None)
                .unwrap()
                .as_str(),
            "http://192.0.2.7:9696/v2.0"
        );
        let c = catalog(
            json!([{"type": "network", "endpoints": [{"interface": "public", "url": "ftp://x"}]}]),
        );
        assert_eq!(
            select_network_endpoint(Some(&c), Interface::Public, None)
                .unwrap_err()
                .kind(),
            "invalid"
        );
    }

    #[test]
    fn auth_urls_get_v3_once() {
        for (given, want) in [
            ("http://192.0.2.1:5000", "http://192.0.2.1:5000/v3"),
            ("http://192.0.2.1:5000/", "http://192.0.2.1:5000/v3"),
            ("http://192.0.2.1:5000/v3", "http://192.0.2.1:5000/v3"),
            ("http://192.0.2.1:5000/v3/", "http://192.0.2.1:5000/v3"),
            (
                "https://cloud.example/identity",
                "https://cloud.example/identity/v3",
            ),
        ] {
            let url = Url::parse(given).unwrap();
            assert_eq!(identity_v3(&url).as_str(), want, "{given}");
        }
    }

    #[test]
    fn auth_bodies() {
        let named = User::Name {
            name: "demo".into(),
            domain: Domain::Name("Default".into()),
        };
        let body = auth_body(&Credentials::Password {
            user: named.clone(),
            password: Secret::new("secret"),
            project: Project::Name {
                name: "demo".into(),
                domain: Domain::Id("default".into()),
            },
        });
        assert_eq!(
            body,
            json!({"auth": {
                "identity": {"methods": ["password"],
                    "password": {"user": {"name": "demo", "domain": {"name": "Default"}, "password": "secret"}}},
                "scope": {"project": {"name": "demo", "domain": {"id": "default"}}}}})
        );
        let body = auth_body(&Credentials::Password {
            user: User::Id("u1".into()),
            password: Secret::new("secret"),
            project: Project::Id("p1".into()),
        });
        assert_eq!(
            body,
            json!({"auth": {
                "identity": {"methods": ["password"], "password": {"user": {"id": "u1", "password": "secret"}}},
                "scope": {"project": {"id": "p1"}}}})
        );
        let body = auth_body(&Credentials::ApplicationCredential {
            credential: ApplicationCredential::Id("3e19".into()),
            secret: Secret::new("s"),
        });
        assert_eq!(
            body,
            json!({"auth": {"identity": {"methods": ["application_credential"],
                "application_credential": {"id": "3e19", "secret": "s"}}}})
        );
        let body = auth_body(&Credentials::ApplicationCredential {
            credential: ApplicationCredential::Name {
                name: "exoip".into(),
                user: named,
            },
            secret: Secret::new("s"),
        });
        assert_eq!(
            body,
            json!({"auth": {"identity": {"methods": ["application_credential"],
                "application_credential": {"name": "exoip", "secret": "s",
                    "user": {"name": "demo", "domain": {"name": "Default"}}}}}})
        );
        assert!(body["auth"].get("scope").is_none());
    }

    #[test]
    fn keystone_times() {
        let at = |s: &str| parse_time(s).map(|t| t.duration_since(UNIX_EPOCH).unwrap().as_micros());
        let want = Some(1_795_272_954_000_000 + 123_456);
        assert_eq!(at("2026-11-21T14:55:54.123456Z"), want);
        assert_eq!(at("2026-11-21T14:55:54.123456"), want);
        assert_eq!(at("2026-11-21T14:55:54.123456+00:00"), want);
        assert_eq!(at("2026-11-21T14:55:54Z"), Some(1_795_272_954_000_000));
        assert_eq!(at("yesterday"), None);
        assert_eq!(at(""), None);
    }
}
