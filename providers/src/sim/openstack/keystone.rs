//! The Keystone v3 emulator under `/identity`: version discovery, `POST /v3/auth/tokens` for
//! password and application-credential authentication, token validation and revocation
//! (`GET`/`DELETE /v3/auth/tokens`), and the tokens Neutron checks.
//!
//! Shapes follow `api-ref/source/v3/authenticate-v3.inc`: 201 with the token in
//! `X-Subject-Token`, the body with `expires_at`/`issued_at` (microseconds, `Z`), `project`,
//! `roles` and a `catalog` whose URLs are built from the request's `Host` header. Errors are
//! `{"error":{"code","message","title"}}`; a 401 carries `WWW-Authenticate: Keystone uri=…`.
//! Only the `password` and `application_credential` methods exist, and only project scope.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::Engine;
use serde_json::{json, Value};
use subtle::ConstantTimeEq;

use super::seed::{OpenStackSeed, SeedAppCredential, SeedDomain, SeedProject, SeedRole, SeedUser};
use super::{base_url, parse_query, OsSim};
use crate::sim::exoscale::lock;

/// The version Keystone 2026.1 reports.
const VERSION: &str = "v3.14";
const VERSION_UPDATED: &str = "2020-04-07T00:00:00Z";
const UNAUTHORIZED: &str = "The request you have made requires authentication.";
const SCOPED_APP_CREDENTIAL: &str =
    "Error authenticating with application credential: Application credentials cannot request \
     a scope.";

pub(crate) const X_SUBJECT_TOKEN: HeaderName = HeaderName::from_static("x-subject-token");
pub(crate) const X_AUTH_TOKEN: HeaderName = HeaderName::from_static("x-auth-token");

/// The identity side of the seed, plus the catalog's ids (fixed for the simulator's life).
pub(crate) struct Identity {
    domains: Vec<SeedDomain>,
    projects: Vec<SeedProject>,
    roles: Vec<SeedRole>,
    users: Vec<SeedUser>,
    credentials: Vec<(SeedAppCredential, String, Vec<String>)>,
    region: String,
    /// identity service, network service, then 3 endpoints each
    catalog_ids: Vec<String>,
}

impl Identity {
    pub fn from_seed(seed: &OpenStackSeed) -> Identity {
        let credentials = seed
            .application_credentials
            .iter()
            .map(|c| {
                let user = seed
                    .users
                    .iter()
                    .find(|u| u.id == c.user)
                    .expect("validated");
                let project = c
                    .project
                    .clone()
                    .or_else(|| user.default_project.clone())
                    .expect("validated");
                let roles = c
                    .roles
                    .clone()
                    .unwrap_or_else(|| user.project_roles[&project].clone());
                (c.clone(), project, roles)
            })
            .collect();
        Identity {
            domains: seed.domains.clone(),
            projects: seed.projects.clone(),
            roles: seed.roles.clone(),
            users: seed.users.clone(),
            credentials,
            region: seed.region.clone(),
            catalog_ids: (0..8)
                .map(|_| uuid::Uuid::new_v4().simple().to_string())
                .collect(),
        }
    }

    fn domain(&self, id: &str) -> Option<&SeedDomain> {
        self.domains.iter().find(|d| d.id == id)
    }

    pub fn project(&self, id: &str) -> Option<&SeedProject> {
        self.projects.iter().find(|p| p.id == id)
    }

    pub fn user(&self, id: &str) -> Option<&SeedUser> {
        self.users.iter().find(|u| u.id == id)
    }

    fn role_id(&self, name: &str) -> String {
        self.roles
            .iter()
            .find(|r| r.name == name)
            .map(|r| r.id.clone())
            .unwrap_or_default()
    }

    fn domain_json(&self, id: &str) -> Value {
        let name = self.domain(id).map(|d| d.name.as_str()).unwrap_or("");
        json!({ "id": id, "name": name })
    }

    /// The catalog, its URLs on the host the client used.
    fn catalog(&self, base: &str) -> Value {
        let ids = &self.catalog_ids;
        let endpoints = |url: String, first: usize| -> Vec<Value> {
            ["public", "internal", "admin"]
                .iter()
                .enumerate()
                .map(|(i, interface)| {
                    json!({
                        "id": ids.get(first + i).cloned().unwrap_or_default(),
                        "interface": interface,
                        "region_id": self.region,
                        "region": self.region,
                        "url": url,
                    })
                })
                .collect()
        };
        json!([
            {
                "id": ids[0], "type": "identity", "name": "keystone",
                "endpoints": endpoints(format!("{base}/identity"), 2),
            },
            {
                "id": ids[1], "type": "network", "name": "neutron",
                "endpoints": endpoints(format!("{base}/network"), 5),
            },
        ])
    }
}

/// An issued token.
#[derive(Clone, Debug)]
pub(crate) struct Token {
    pub user: String,
    pub project: Option<String>,
    pub roles: Vec<String>,
    pub method: &'static str,
    /// (id, name) of the application credential used.
    pub credential: Option<(String, String)>,
    pub issued_at: SystemTime,
    pub expires_at: SystemTime,
    pub audit_id: String,
}

/// Every token issued and not yet revoked (expired ones are pruned as new ones are issued).
pub(crate) struct Tokens {
    by_value: HashMap<String, Token>,
    pub lifetime: Duration,
}

impl Tokens {
    pub fn new(lifetime: Duration) -> Tokens {
        Tokens {
            by_value: HashMap::new(),
            lifetime,
        }
    }

    /// Stores a token; returns its value (Fernet-looking, opaque).
    fn issue(&mut self, token: Token, now: SystemTime) -> String {
        self.by_value.retain(|_, t| t.expires_at > now);
        let mut raw = [0u8; 120];
        for b in raw.iter_mut() {
            *b = rand::random();
        }
        let value = format!(
            "gAAAAAB{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
        );
        self.by_value.insert(value.clone(), token);
        value
    }

    /// The token if it exists, is not revoked and has not expired at `now`.
    pub fn valid(&self, value: &str, now: SystemTime) -> Option<&Token> {
        self.by_value.get(value).filter(|t| t.expires_at > now)
    }

    fn revoke(&mut self, value: &str) -> bool {
        self.by_value.remove(value).is_some()
    }

    pub fn revoke_all(&mut self) -> usize {
        let n = self.by_value.len();
        self.by_value.clear();
        n
    }

    pub fn count_valid(&self, now: SystemTime) -> usize {
        self.by_value
            .values()
            .filter(|t| t.expires_at > now)
            .count()
    }
}

/// Who a Neutron request comes from: a valid project-scoped token.
#[derive(Clone, Debug)]
pub(crate) struct Caller {
    pub user: String,
    pub project: String,
}

impl OsSim {
    /// The caller behind an `X-Auth-Token`, if the token is valid and project-scoped.
    pub fn caller(&self, value: &str) -> Option<Caller> {
        let now = self.now();
        let tokens = lock(&self.tokens);
        let t = tokens.valid(value, now)?;
        Some(Caller {
            user: t.user.clone(),
            project: t.project.clone()?,
        })
    }
}

/// A Keystone error answer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct KsError {
    status: StatusCode,
    message: String,
}

impl KsError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        KsError {
            status,
            message: message.into(),
        }
    }

    fn unauthorized() -> Self {
        KsError::new(StatusCode::UNAUTHORIZED, UNAUTHORIZED)
    }

    fn bad_request(message: impl Into<String>) -> Self {
        KsError::new(StatusCode::BAD_REQUEST, message)
    }
}

/// `{"error":{"code","message","title"}}`, with `WWW-Authenticate` on a 401.
pub(crate) fn error_response(status: StatusCode, message: &str, base: &str) -> Response {
    let mut r = super::neutron::json_response(
        status,
        &json!({"error": {
            "code": status.as_u16(),
            "message": message,
            "title": status.canonical_reason().unwrap_or(""),
        }}),
    );
    if status == StatusCode::UNAUTHORIZED {
        if let Ok(v) = HeaderValue::from_str(&format!("Keystone uri=\"{base}/identity\"")) {
            r.headers_mut()
                .insert(axum::http::header::WWW_AUTHENTICATE, v);
        }
    }
    r
}

type Sim = State<Arc<OsSim>>;

pub(crate) fn router(sim: Arc<OsSim>) -> Router {
    Router::new()
        .route("/identity", get(versions))
        .route("/identity/", get(versions))
        .route("/identity/v3", get(version))
        .route("/identity/v3/", get(version))
        .route(
            "/identity/v3/auth/tokens",
            get(validate_token).post(issue_token).delete(revoke_token),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            sim.clone(),
            super::neutron::front_door,
        ))
        .with_state(sim)
}

async fn not_found(State(sim): Sim, headers: HeaderMap) -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        "The resource could not be found.",
        &base_url(&sim, &headers),
    )
}

async fn method_not_allowed(State(sim): Sim, headers: HeaderMap) -> Response {
    error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        "The method is not allowed for the requested URL.",
        &base_url(&sim, &headers),
    )
}

fn version_json(base: &str) -> Value {
    json!({
        "id": VERSION,
        "status": "stable",
        "updated": VERSION_UPDATED,
        "links": [{"rel": "self", "href": format!("{base}/identity/v3/")}],
        "media-types": [{
            "base": "application/json",
            "type": "application/vnd.openstack.identity-v3+json",
        }],
    })
}

/// `GET /identity/`: 300 Multiple Choices, as Keystone answers on its root.
async fn versions(State(sim): Sim, headers: HeaderMap) -> Response {
    let base = base_url(&sim, &headers);
    super::neutron::json_response(
        StatusCode::MULTIPLE_CHOICES,
        &json!({"versions": {"values": [version_json(&base)]}}),
    )
}

async fn version(State(sim): Sim, headers: HeaderMap) -> Response {
    let base = base_url(&sim, &headers);
    super::neutron::json_response(StatusCode::OK, &json!({"version": version_json(&base)}))
}

/// What a successful authentication grants, before it becomes a token.
struct Grant {
    user: String,
    project: Option<String>,
    roles: Vec<String>,
    method: &'static str,
    credential: Option<(String, String)>,
}

fn object<'a>(v: &'a Value, key: &str, parent: &str) -> Result<&'a Value, KsError> {
    match v.get(key) {
        Some(o) if o.is_object() => Ok(o),
        Some(_) => Err(KsError::bad_request(format!(
            "Invalid input for field '{parent}': '{key}' is not an object"
        ))),
        None => Err(KsError::bad_request(format!(
            "Invalid input for field '{parent}': '{key}' is a required property"
        ))),
    }
}

fn string<'a>(v: &'a Value, key: &str) -> Result<Option<&'a str>, KsError> {
    match v.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(KsError::bad_request(format!(
            "Invalid input for field '{key}': expected a string"
        ))),
    }
}

/// Constant-time secret comparison: the simulator should not teach clients to rely on less.
fn secret_matches(given: &str, expected: &str) -> bool {
    given.as_bytes().ct_eq(expected.as_bytes()).into()
}

impl Identity {
    /// A domain given as `{"id"}` or `{"name"}` (Keystone's `domain` objects).
    fn find_domain(&self, d: &Value) -> Result<&SeedDomain, KsError> {
        if let Some(id) = string(d, "id")? {
            return self.domain(id).ok_or_else(KsError::unauthorized);
        }
        if let Some(name) = string(d, "name")? {
            return self
                .domains
                .iter()
                .find(|x| x.name == name)
                .ok_or_else(KsError::unauthorized);
        }
        Err(KsError::bad_request(
            "Expecting to find id or name in domain.",
        ))
    }

    /// `{"id"}`, or `{"name", "domain"}`.
    fn find_user(&self, u: &Value) -> Result<&SeedUser, KsError> {
        if let Some(id) = string(u, "id")? {
            return self.user(id).ok_or_else(KsError::unauthorized);
        }
        let Some(name) = string(u, "name")? else {
            return Err(KsError::bad_request(
                "Expecting to find id or name in user.",
            ));
        };
        let Some(d) = u.get("domain") else {
            return Err(KsError::bad_request("Expecting to find domain in user."));
        };
        let domain = self.find_domain(d)?;
        self.users
            .iter()
            .find(|x| x.name == name && x.domain == domain.id)
            .ok_or_else(KsError::unauthorized)
    }

    /// `{"project": {"id"}}` or `{"project": {"name", "domain"}}`.
    fn find_project(&self, scope: &Value) -> Result<&SeedProject, KsError> {
        let Some(p) = scope.get("project") else {
            // Domain and system scopes exist in Keystone, but no seeded user has such roles.
            return Err(KsError::unauthorized());
        };
        if let Some(id) = string(p, "id")? {
            return self.project(id).ok_or_else(KsError::unauthorized);
        }
        let Some(name) = string(p, "name")? else {
            return Err(KsError::bad_request(
                "Expecting to find id or name in project.",
            ));
        };
        let Some(d) = p.get("domain") else {
            return Err(KsError::bad_request("Expecting to find domain in project."));
        };
        let domain = self.find_domain(d)?;
        self.projects
            .iter()
            .find(|x| x.name == name && x.domain == domain.id)
            .ok_or_else(KsError::unauthorized)
    }

    /// Checks an auth request body; `Ok` says what the token will carry.
    fn authenticate(&self, body: &Value) -> Result<Grant, KsError> {
        let auth = object(body, "auth", "auth")?;
        let identity = object(auth, "identity", "identity")?;
        let methods: Vec<&str> =
            match identity.get("methods") {
                Some(Value::Array(a)) if !a.is_empty() => a
                    .iter()
                    .map(|m| m.as_str())
                    .collect::<Option<Vec<&str>>>()
                    .ok_or_else(|| {
                        KsError::bad_request("Invalid input for field 'methods': not strings")
                    })?,
                _ => return Err(KsError::bad_request(
                    "Invalid input for field 'identity': 'methods' is a required non-empty list",
                )),
            };
        let scope = auth.get("scope").filter(|s| !s.is_null());
        match methods.as_slice() {
            ["password"] => {
                let section = object(identity, "password", "identity")?;
                let u = object(section, "user", "password")?;
                let user = self.find_user(u)?;
                let Some(password) = string(u, "password")? else {
                    return Err(KsError::unauthorized());
                };
                if !secret_matches(password, user.password.expose()) {
                    return Err(KsError::unauthorized());
                }
                let project = match scope {
                    Some(s) => Some(self.find_project(s)?.id.clone()),
                    None => user.default_project.clone(),
                };
                let roles = match &project {
                    Some(p) => user
                        .project_roles
                        .get(p)
                        .cloned()
                        .ok_or_else(KsError::unauthorized)?,
                    None => Vec::new(),
                };
                Ok(Grant {
                    user: user.id.clone(),
                    project,
                    roles,
                    method: "password",
                    credential: None,
                })
            }
            ["application_credential"] => {
                if scope.is_some() {
                    return Err(KsError::new(
                        StatusCode::UNAUTHORIZED,
                        SCOPED_APP_CREDENTIAL,
                    ));
                }
                let c = object(identity, "application_credential", "identity")?;
                let Some(secret) = string(c, "secret")? else {
                    return Err(KsError::bad_request(
                        "Invalid input for field 'application_credential': 'secret' is a \
                         required property",
                    ));
                };
                let found = if let Some(id) = string(c, "id")? {
                    self.credentials.iter().find(|(x, _, _)| x.id == id)
                } else if let Some(name) = string(c, "name")? {
                    let Some(u) = c.get("user") else {
                        return Err(KsError::bad_request(
                            "Expecting to find user in application_credential.",
                        ));
                    };
                    let user = self.find_user(u)?;
                    self.credentials
                        .iter()
                        .find(|(x, _, _)| x.name == name && x.user == user.id)
                } else {
                    return Err(KsError::bad_request(
                        "Expecting to find id or name in application_credential.",
                    ));
                };
                let Some((cred, project, roles)) = found else {
                    return Err(KsError::unauthorized());
                };
                if !secret_matches(secret, cred.secret.expose()) {
                    return Err(KsError::unauthorized());
                }
                Ok(Grant {
                    user: cred.user.clone(),
                    project: Some(project.clone()),
                    roles: roles.clone(),
                    method: "application_credential",
                    credential: Some((cred.id.clone(), cred.name.clone())),
                })
            }
            _ => Err(KsError::new(
                StatusCode::UNAUTHORIZED,
                "Attempted to authenticate with an unsupported method.",
            )),
        }
    }

    /// The `{"token": …}` body.
    fn token_json(&self, t: &Token, base: &str, catalog: bool) -> Value {
        let user = self.user(&t.user);
        let mut v = json!({
            "methods": [t.method],
            "user": {
                "id": t.user,
                "name": user.map(|u| u.name.as_str()).unwrap_or(""),
                "domain": self.domain_json(user.map(|u| u.domain.as_str()).unwrap_or("")),
                "password_expires_at": null,
            },
            "audit_ids": [t.audit_id],
            "issued_at": humantime::format_rfc3339_micros(t.issued_at).to_string(),
            "expires_at": humantime::format_rfc3339_micros(t.expires_at).to_string(),
        });
        if let Some(p) = t.project.as_deref().and_then(|p| self.project(p)) {
            v["project"] = json!({
                "id": p.id, "name": p.name, "domain": self.domain_json(&p.domain),
            });
            v["is_domain"] = json!(false);
            v["roles"] = t
                .roles
                .iter()
                .map(|r| json!({"id": self.role_id(r), "name": r}))
                .collect();
            if catalog {
                v["catalog"] = self.catalog(base);
            }
        }
        if let Some((id, name)) = &t.credential {
            v["application_credential"] = json!({"id": id, "name": name, "restricted": true});
        }
        json!({ "token": v })
    }
}

fn with_subject(mut r: Response, token: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(token) {
        r.headers_mut().insert(X_SUBJECT_TOKEN, v);
    }
    r
}

/// `POST /identity/v3/auth/tokens` (`?nocatalog` leaves the catalog out).
async fn issue_token(
    State(sim): Sim,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    let base = base_url(&sim, &headers);
    let body: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                &format!("The request body is not valid JSON: {e}"),
                &base,
            )
        }
    };
    let grant = match sim.identity.authenticate(&body) {
        Ok(g) => g,
        Err(e) => {
            tracing::debug!("keystone: authentication refused: {}", e.message);
            return error_response(e.status, &e.message, &base);
        }
    };
    let nocatalog = parse_query(q.as_deref())
        .iter()
        .any(|(k, _)| k == "nocatalog");
    let now = sim.now();
    let (value, token) = {
        let mut tokens = lock(&sim.tokens);
        let token = Token {
            user: grant.user,
            project: grant.project,
            roles: grant.roles,
            method: grant.method,
            credential: grant.credential,
            issued_at: now,
            expires_at: now + tokens.lifetime,
            audit_id: base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(uuid::Uuid::new_v4().as_bytes()),
        };
        (tokens.issue(token.clone(), now), token)
    };
    tracing::info!(
        "keystone: token issued to user {} for project {} ({})",
        token.user,
        token.project.as_deref().unwrap_or("-"),
        token.method
    );
    let body = sim.identity.token_json(&token, &base, !nocatalog);
    with_subject(
        super::neutron::json_response(StatusCode::CREATED, &body),
        &value,
    )
}

/// The tokens in `X-Auth-Token` (must be valid) and `X-Subject-Token`.
fn subject(sim: &OsSim, headers: &HeaderMap) -> Result<Option<(String, Token)>, KsError> {
    let header = |name: &HeaderName| {
        headers
            .get(name)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string)
    };
    let now = sim.now();
    let tokens = lock(&sim.tokens);
    let auth = header(&X_AUTH_TOKEN).ok_or_else(KsError::unauthorized)?;
    tokens.valid(&auth, now).ok_or_else(KsError::unauthorized)?;
    let Some(subject) = header(&X_SUBJECT_TOKEN) else {
        return Err(KsError::bad_request("X-Subject-Token is required."));
    };
    Ok(tokens
        .valid(&subject, now)
        .cloned()
        .map(|t| (subject.clone(), t)))
}

/// `GET /identity/v3/auth/tokens`: validates `X-Subject-Token`.
async fn validate_token(State(sim): Sim, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
    let base = base_url(&sim, &headers);
    match subject(&sim, &headers) {
        Err(e) => error_response(e.status, &e.message, &base),
        // The token is not echoed: it is a secret.
        Ok(None) => error_response(StatusCode::NOT_FOUND, "Could not find token.", &base),
        Ok(Some((value, token))) => {
            let nocatalog = parse_query(q.as_deref())
                .iter()
                .any(|(k, _)| k == "nocatalog");
            let body = sim.identity.token_json(&token, &base, !nocatalog);
            with_subject(super::neutron::json_response(StatusCode::OK, &body), &value)
        }
    }
}

/// `DELETE /identity/v3/auth/tokens`: revokes `X-Subject-Token`.
async fn revoke_token(State(sim): Sim, headers: HeaderMap) -> Response {
    let base = base_url(&sim, &headers);
    match subject(&sim, &headers) {
        Err(e) => error_response(e.status, &e.message, &base),
        Ok(None) => error_response(StatusCode::NOT_FOUND, "Could not find token.", &base),
        Ok(Some((value, _))) => {
            lock(&sim.tokens).revoke(&value);
            StatusCode::NO_CONTENT.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> Identity {
        Identity::from_seed(&OpenStackSeed::example())
    }

    #[test]
    fn password_and_credential_forms() {
        let id = identity();
        let ok = |body: Value| id.authenticate(&body).map(|g| g.method);
        let user_by_name = json!({"name": "demo", "domain": {"name": "Default"},
                                  "password": "sim-password-change-me"});
        assert_eq!(
            ok(json!({"auth": {"identity": {"methods": ["password"],
                "password": {"user": user_by_name.clone()}},
                "scope": {"project": {"name": "demo", "domain": {"id": "default"}}}}})),
            Ok("password")
        );
        let e = id
            .authenticate(&json!({"auth": {"identity": {"methods": ["password"],
                "password": {"user": {"name": "demo", "password": "x"}}}}}))
            .err()
            .unwrap();
        assert_eq!(
            e.status,
            StatusCode::BAD_REQUEST,
            "a user name needs a domain"
        );
        let e = id
            .authenticate(
                &json!({"auth": {"identity": {"methods": ["application_credential"],
                "application_credential": {"id": "3e19c0de5a7b4c2d9e8f1a0b2c3d4e5f",
                                           "secret": "sim-app-secret-change-me"}},
                "scope": {"project": {"id": "3f1e6a0c9d2b4e7f8a5c1d0e2b4f6a81"}}}}),
            )
            .err()
            .unwrap();
        assert_eq!(e.status, StatusCode::UNAUTHORIZED);
        assert!(e
            .message
            .contains("Application credentials cannot request a scope."));
        assert_eq!(
            ok(
                json!({"auth": {"identity": {"methods": ["application_credential"],
                "application_credential": {"name": "exoip", "secret": "sim-app-secret-change-me",
                    "user": {"name": "demo", "domain": {"name": "Default"}}}}}})
            ),
            Ok("application_credential")
        );
        assert!(ok(json!({"auth": {"identity": {"methods": ["token"], "token": {}}}})).is_err());
    }

    #[test]
    fn tokens_expire_and_are_revoked() {
        let mut t = Tokens::new(Duration::from_secs(10));
        let now = SystemTime::now();
        let token = Token {
            user: "u".into(),
            project: Some("p".into()),
            roles: vec![],
            method: "password",
            credential: None,
            issued_at: now,
            expires_at: now + Duration::from_secs(10),
            audit_id: "a".into(),
        };
        let v = t.issue(token, now);
        assert!(v.starts_with("gAAAAAB") && v.len() > 100);
        assert!(t.valid(&v, now).is_some());
        assert!(t.valid(&v, now + Duration::from_secs(10)).is_none());
        assert_eq!(t.revoke_all(), 1);
        assert!(t.valid(&v, now).is_none());
    }
}
