//! The Entra ID (Azure AD) v2 token endpoint for service principals, the OpenID discovery
//! document MSAL reads first, and the access-token store that ARM checks bearer tokens against
//! (IMDS issues into the same store).
//!
//! * `POST /{tenant}/oauth2/v2.0/token`, form body `grant_type=client_credentials&client_id=…&
//!   client_secret=…&scope=https://management.azure.com/.default` →
//!   `{"token_type":"Bearer","expires_in":3599,"ext_expires_in":3599,"access_token":"eyJ…"}`;
//!   errors `{"error","error_description":"AADSTS…","error_codes":[…],…}` (unknown tenant,
//!   missing parameter, unsupported grant, unknown client, bad secret → 401 `invalid_client`,
//!   scope without `/.default` → `invalid_scope`, unknown resource → `invalid_resource`).
//! * `GET /{tenant}/v2.0/.well-known/openid-configuration` → `token_endpoint` on this host.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{FromRequest, Path, Request, State};
use axum::http::header::{CONTENT_TYPE, HOST};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Form, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::RngCore;
use serde_json::{json, Value};
use subtle::ConstantTimeEq;

use super::{lock, AzureSim};
use std::sync::Arc;

/// The resources (App ID URIs) whose tokens ARM accepts, without trailing slash, lower case.
const ARM_AUDIENCES: &[&str] = &[
    "https://management.azure.com",
    "https://management.core.windows.net",
];

/// The canonical ARM audience of a resource or scope resource, or `None` for another resource.
pub(crate) fn arm_audience(resource: &str) -> Option<&'static str> {
    let r = resource.trim_end_matches('/').to_ascii_lowercase();
    ARM_AUDIENCES.iter().find(|a| **a == r).copied()
}

/// Who a token was issued to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Holder {
    ServicePrincipal { client_id: String },
    ManagedIdentity { vm: String, client_id: String },
}

#[derive(Clone, Debug)]
pub(crate) struct Token {
    pub holder: Holder,
    pub expires: Instant,
    pub expires_unix: u64,
}

/// Why ARM refuses a bearer token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum TokenProblem {
    Unknown,
    Expired { expired_at: u64 },
}

/// Issued access tokens. Expired ones are kept for a while so that ARM can say
/// `ExpiredAuthenticationToken` rather than "invalid".
#[derive(Default)]
pub(crate) struct Tokens(Mutex<HashMap<String, Token>>);

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Tokens {
    /// A new JWT-shaped (unsigned, opaque to clients) token for `holder`. Returns it with its
    /// expiry in Unix seconds.
    pub fn issue(
        &self,
        holder: Holder,
        audience: &str,
        tenant: &str,
        lifetime: Duration,
    ) -> (String, u64, u64) {
        let now = SystemTime::now();
        let iat = unix(now);
        let exp = iat + lifetime.as_secs();
        let (appid, oid) = match &holder {
            Holder::ServicePrincipal { client_id } => (client_id.clone(), client_id.clone()),
            Holder::ManagedIdentity { client_id, .. } => (client_id.clone(), client_id.clone()),
        };
        let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"RS256","kid":"sim"}"#);
        let payload = URL_SAFE_NO_PAD.encode(
            json!({
                "aud": format!("{audience}/"), "iss": format!("https://sts.windows.net/{tenant}/"),
                "iat": iat, "nbf": iat, "exp": exp, "appid": appid, "oid": oid, "sub": oid,
                "tid": tenant, "jti": uuid::Uuid::new_v4().to_string(),
            })
            .to_string(),
        );
        let mut sig = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut sig);
        let token = format!("{header}.{payload}.{}", URL_SAFE_NO_PAD.encode(sig));
        let mut map = lock(&self.0);
        // Forget tokens that expired over an hour ago: a long run must not grow without bound.
        let horizon = Instant::now().checked_sub(Duration::from_secs(3600));
        if let Some(h) = horizon {
            map.retain(|_, t| t.expires > h);
        }
        map.insert(
            token.clone(),
            Token {
                holder,
                expires: Instant::now() + lifetime,
                expires_unix: exp,
            },
        );
        (token, iat, exp)
    }

    pub fn check(&self, token: &str) -> Result<Token, TokenProblem> {
        let map = lock(&self.0);
        let t = map.get(token).ok_or(TokenProblem::Unknown)?;
        if Instant::now() >= t.expires {
            return Err(TokenProblem::Expired {
                expired_at: t.expires_unix,
            });
        }
        Ok(t.clone())
    }

    pub fn expire_all(&self) -> usize {
        let mut map = lock(&self.0);
        let now = Instant::now();
        let now_unix = unix(SystemTime::now());
        let mut n = 0;
        for t in map.values_mut() {
            if t.expires > now {
                t.expires = now;
                t.expires_unix = now_unix;
                n += 1;
            }
        }
        n
    }
}

type Sim = State<Arc<AzureSim>>;

pub(crate) fn router(sim: Arc<AzureSim>) -> Router {
    Router::new()
        .route("/{tenant}/oauth2/v2.0/token", any(token))
        .route(
            "/{tenant}/v2.0/.well-known/openid-configuration",
            get(openid_configuration),
        )
        .with_state(sim)
}

fn json_reply(status: StatusCode, body: &Value) -> Response {
    let mut r = (status, body.to_string()).into_response();
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r.headers_mut().insert(
        "cache-control",
        HeaderValue::from_static("no-store, no-cache"),
    );
    r
}

/// An Entra error answer, with the trace lines the real one appends to the description.
fn aad_error(status: StatusCode, error: &str, code: u32, description: &str) -> Response {
    let trace = uuid::Uuid::new_v4().to_string();
    let correlation = uuid::Uuid::new_v4().to_string();
    let now = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let stamp = now.replace('T', " ");
    json_reply(
        status,
        &json!({
            "error": error,
            "error_description": format!(
                "AADSTS{code}: {description}\r\nTrace ID: {trace}\r\nCorrelation ID: \
                 {correlation}\r\nTimestamp: {stamp}"
            ),
            "error_codes": [code],
            "timestamp": stamp,
            "trace_id": trace,
            "correlation_id": correlation,
            "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
        }),
    )
}

fn host(headers: &HeaderMap) -> String {
    headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost")
        .to_string()
}

async fn openid_configuration(
    State(sim): Sim,
    Path(tenant): Path<String>,
    headers: HeaderMap,
) -> Response {
    let real = lock(&sim.world).ids.tenant.clone();
    if !tenant.eq_ignore_ascii_case(&real) {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_tenant",
            90002,
            &format!("Tenant '{tenant}' not found."),
        );
    }
    let base = format!("http://{}/{real}", host(&headers));
    json_reply(
        StatusCode::OK,
        &json!({
            "token_endpoint": format!("{base}/oauth2/v2.0/token"),
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt",
                                                      "client_secret_basic"],
            "jwks_uri": format!("{base}/discovery/v2.0/keys"),
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": format!("https://login.microsoftonline.com/{real}/v2.0"),
            "authorization_endpoint": format!("{base}/oauth2/v2.0/authorize"),
            "tenant_region_scope": "EU",
            "cloud_instance_name": "microsoftonline.com",
        }),
    )
}

async fn token(State(sim): Sim, Path(tenant): Path<String>, req: Request) -> Response {
    let real_tenant = lock(&sim.world).ids.tenant.clone();
    if !tenant.eq_ignore_ascii_case(&real_tenant) {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90002,
            &format!(
                "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID \
                 and are signing into the correct cloud."
            ),
        );
    }
    if req.method() != Method::POST {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900561,
            "The endpoint only accepts POST, OPTIONS requests. Received a GET request.",
        );
    }
    // A body that is not a form reads as a form without parameters, as Entra treats it.
    let params: Vec<(String, String)> =
        match Form::<Vec<(String, String)>>::from_request(req, &()).await {
            Ok(Form(p)) => p,
            Err(_) => Vec::new(),
        };
    let param = |name: &str| {
        params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let Some(grant) = param("grant_type") else {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'grant_type'.",
        );
    };
    if grant != "client_credentials" {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            &format!("The app requested an unsupported grant type '{grant}'."),
        );
    }
    let Some(client_id) = param("client_id") else {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'client_id'.",
        );
    };
    let Some(scope) = param("scope") else {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'scope'.",
        );
    };
    let Some(principal) = sim
        .principals
        .iter()
        .find(|p| p.client_id.eq_ignore_ascii_case(client_id))
    else {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            &format!(
                "Application with identifier '{client_id}' was not found in the directory \
                 '{real_tenant}'. This can happen if the application has not been installed by \
                 the administrator of the tenant."
            ),
        );
    };
    if param("client_assertion").is_some() {
        return aad_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            700027,
            "Client assertion failed signature validation (the simulator accepts client secrets \
             only).",
        );
    }
    let Some(secret) = param("client_secret") else {
        return aad_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or \
             'client_secret'.",
        );
    };
    let matches: bool = secret
        .as_bytes()
        .ct_eq(principal.secret.expose().as_bytes())
        .into();
    if !matches {
        tracing::debug!("token request for client {client_id}: wrong client secret");
        return aad_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000215,
            &format!(
                "Invalid client secret provided. Ensure the secret being sent in the request is \
                 the client secret value, not the client secret ID, for a secret added to app \
                 '{client_id}'."
            ),
        );
    }
    // One resource per request, as `<App ID URI>/.default`.
    let scopes: Vec<&str> = scope.split(' ').filter(|s| !s.is_empty()).collect();
    let resource = match scopes.as_slice() {
        [one] => one.strip_suffix("/.default"),
        _ => None,
    };
    let Some(resource) = resource else {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            70011,
            &format!(
                "The provided request must include a 'scope' input parameter. The provided value \
                 for the input parameter 'scope' is not valid. The scope {scope} is not valid. \
                 Client credential flows must have a scope value with /.default suffixed to the \
                 resource identifier (application ID URI)."
            ),
        );
    };
    let Some(audience) = arm_audience(resource) else {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_resource",
            500011,
            &format!(
                "The resource principal named {resource} was not found in the tenant named \
                 {real_tenant}. This can happen if the application has not been installed by the \
                 administrator of the tenant or consented to by any user in the tenant."
            ),
        );
    };
    let lifetime = lock(&sim.options).token_lifetime;
    let (access_token, _, _) = sim.tokens.issue(
        Holder::ServicePrincipal {
            client_id: principal.client_id.clone(),
        },
        audience,
        &real_tenant,
        lifetime,
    );
    tracing::debug!(
        "issued an ARM token to service principal {} for {}s",
        principal.client_id,
        lifetime.as_secs()
    );
    json_reply(
        StatusCode::OK,
        &json!({
            "token_type": "Bearer",
            "expires_in": lifetime.as_secs(),
            "ext_expires_in": lifetime.as_secs(),
            "access_token": access_token,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audiences_ignore_the_trailing_slash_and_case() {
        assert_eq!(
            arm_audience("https://management.azure.com/"),
            Some("https://management.azure.com")
        );
        assert_eq!(
            arm_audience("https://Management.Core.Windows.Net"),
            Some("https://management.core.windows.net")
        );
        assert_eq!(arm_audience("https://vault.azure.net"), None);
    }

    #[test]
    fn tokens_expire_and_unknown_ones_are_refused() {
        let tokens = Tokens::default();
        let holder = Holder::ServicePrincipal {
            client_id: "c".into(),
        };
        let (t, iat, exp) = tokens.issue(
            holder.clone(),
            "https://management.azure.com",
            "t",
            Duration::from_secs(60),
        );
        assert_eq!(exp - iat, 60);
        assert_eq!(t.split('.').count(), 3, "JWT-shaped");
        assert_eq!(tokens.check(&t).unwrap().holder, holder);
        assert_eq!(tokens.check("nope").unwrap_err(), TokenProblem::Unknown);
        assert_eq!(tokens.expire_all(), 1);
        assert!(matches!(
            tokens.check(&t),
            Err(TokenProblem::Expired { .. })
        ));
    }
}
