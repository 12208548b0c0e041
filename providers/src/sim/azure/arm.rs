//! ARM (`management.azure.com`) for the resources a failover agent touches: `Microsoft.Network`
//! NICs (+ their ipConfigurations, GET only), public IPs, NSGs, virtual networks and subnets,
//! `Microsoft.Compute` VMs (+ instance view), and the long-running operations behind NIC and
//! public-IP PUTs. Shapes follow the 2024-05-01+ specs; see `shared/clouds/azure.md` §3–§8.
//!
//! Every request needs a valid `Authorization: Bearer` token (401 with `WWW-Authenticate`
//! otherwise) and an `api-version` (any value). Paths and names compare case-insensitively, as
//! ARM's do. Writes: `If-Match` must equal the current `etag` (412), a resource with an
//! operation in progress is busy (409 `AnotherOperationInProgress`, or 429 with the option), a
//! PUT replaces the whole resource (omitted writable properties are reset), then answers 200
//! with `provisioningState: Updating`, `Azure-AsyncOperation` and `Retry-After`.

use std::sync::Arc;

use axum::extract::{Query, Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, HOST, RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use percent_encoding::percent_decode_str;
use serde_json::{json, Map, Value};

use super::login::TokenProblem;
use super::world::{
    new_etag, ArmError, IpConfig, Nic, OpStatus, OpTarget, Operation, ProvState, World,
};
use super::{lock, rfc3339_now, AzureSim};
use crate::sim::faults::{Door, OpOutcome};
use crate::sim::server::dropped;

/// Largest request body read; ARM's NIC bodies are a few kilobytes.
const MAX_BODY: usize = 4 << 20;

type Sim = State<Arc<AzureSim>>;

pub(crate) fn router(sim: Arc<AzureSim>) -> Router {
    Router::new()
        .route("/subscriptions", any(dispatch))
        .route("/subscriptions/{*rest}", any(dispatch))
        // The last layer runs first: faults act before authentication, as a broken front end
        // would.
        .layer(middleware::from_fn_with_state(sim.clone(), authenticate))
        .layer(middleware::from_fn_with_state(sim.clone(), front_door))
        .fallback(unknown_path)
        .with_state(sim)
}

async fn unknown_path(uri: Uri) -> Response {
    error(&ArmError::new(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!(
            "No HTTP resource was found that matches the request URI '{}' (simulated Azure: \
             ARM is under /subscriptions/, the authority under /{{tenant}}/oauth2/v2.0/token).",
            uri.path()
        ),
    ))
}

fn with_ids(mut r: Response) -> Response {
    let h = r.headers_mut();
    let id = uuid::Uuid::new_v4().to_string();
    h.insert(
        "x-ms-request-id",
        HeaderValue::from_str(&id).expect("a UUID is a header value"),
    );
    h.insert(
        "x-ms-correlation-request-id",
        HeaderValue::from_str(&id).expect("a UUID is a header value"),
    );
    r
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut r = (status, body.to_string()).into_response();
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    with_ids(r)
}

fn ok(body: Value) -> Response {
    json_response(StatusCode::OK, &body)
}

/// 200 with the resource and its `ETag` header (equal to the body's `etag`).
fn ok_etag(body: Value) -> Response {
    let etag = body["etag"].as_str().map(str::to_string);
    let mut r = ok(body);
    if let Some(e) = etag.and_then(|e| HeaderValue::from_str(&e).ok()) {
        r.headers_mut().insert("etag", e);
    }
    r
}

fn error(e: &ArmError) -> Response {
    json_response(e.status, &e.body())
}

fn retry_after(mut r: Response, secs: u64) -> Response {
    r.headers_mut().insert(RETRY_AFTER, HeaderValue::from(secs));
    r
}

fn host(headers: &HeaderMap) -> String {
    headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1")
        .to_string()
}

/// Injected faults that act before ARM sees the request.
async fn front_door(State(sim): Sim, req: Request, next: Next) -> Response {
    let is_mutation = req.method() != Method::GET && req.method() != Method::HEAD;
    let (delay, door) = lock(&sim.faults).door(is_mutation);
    if door == Door::Drop && delay.is_zero() {
        return dropped();
    }
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    match door {
        Door::Pass => next.run(req).await,
        Door::Drop => dropped(),
        Door::Unavailable => error(&ArmError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "The service is temporarily unavailable. Please try again later. (simulated)",
        )),
        Door::RateLimited { retry_after_secs } => {
            let sub = lock(&sim.world).ids.sub.clone();
            retry_after(
                error(&ArmError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "SubscriptionRequestsThrottled",
                    format!(
                        "Number of requests for subscription '{sub}' exceeded the limit. Please \
                         try again after '{retry_after_secs}' seconds. (simulated)"
                    ),
                )),
                retry_after_secs,
            )
        }
    }
}

/// The bearer token of every ARM request must be one the simulator issued, still valid.
async fn authenticate(State(sim): Sim, req: Request, next: Next) -> Response {
    let tenant = lock(&sim.world).ids.tenant.clone();
    let authority = format!("http://{}/{tenant}", host(req.headers()));
    let refuse = |code: &str, message: String, description: &str| {
        let mut r = error(&ArmError::new(StatusCode::UNAUTHORIZED, code, message));
        let challenge = format!(
            "Bearer authorization_uri=\"{authority}\", error=\"invalid_token\", \
             error_description=\"{description}\""
        );
        if let Ok(v) = HeaderValue::from_str(&challenge) {
            r.headers_mut().insert(WWW_AUTHENTICATE, v);
        }
        r
    };
    let header = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|h| h.to_str().ok());
    let Some(header) = header else {
        return refuse(
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is missing.".into(),
            "The authentication failed because of missing 'Authorization' header.",
        );
    };
    let token = match header.split_once(' ') {
        Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") && !t.trim().is_empty() => {
            t.trim()
        }
        _ => {
            return refuse(
                "AuthenticationFailed",
                "Authentication failed. The 'Authorization' header is provided in an invalid \
                 format."
                    .into(),
                "The authentication failed because of invalid 'Authorization' header.",
            )
        }
    };
    match sim.tokens.check(token) {
        Ok(t) => {
            tracing::trace!("{} {} by {:?}", req.method(), req.uri().path(), t.holder);
            next.run(req).await
        }
        Err(TokenProblem::Unknown) => refuse(
            "InvalidAuthenticationToken",
            "The access token is invalid.".into(),
            "The access token is invalid.",
        ),
        Err(TokenProblem::Expired { expired_at }) => {
            let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(expired_at);
            refuse(
                "ExpiredAuthenticationToken",
                format!(
                    "The access token expiry UTC time '{}' is earlier than current UTC time \
                     '{}'.",
                    humantime::format_rfc3339_seconds(at),
                    humantime::format_rfc3339_seconds(std::time::SystemTime::now())
                ),
                "The access token has expired.",
            )
        }
    }
}

/// What one ARM request is about, parsed once.
struct Call<'a> {
    sim: &'a Arc<AzureSim>,
    method: Method,
    headers: HeaderMap,
    query: Vec<(String, String)>,
    api_version: String,
    /// `http://host`, for the absolute URLs ARM returns.
    base: String,
    path: String,
    body: axum::body::Bytes,
}

impl Call<'_> {
    fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn method_not_allowed(&self) -> Response {
        error(&ArmError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!(
                "The requested resource does not support http method '{}'.",
                self.method
            ),
        ))
    }

    /// A list answer, paged: `{"value":[…],"nextLink"?}`.
    fn page(&self, items: Vec<Value>) -> Response {
        let size = lock(&self.sim.options).page_size;
        let skip = match self.param("$skiptoken") {
            None => 0,
            Some(t) => match t.parse::<usize>() {
                Ok(n) => n,
                Err(_) => {
                    return error(&ArmError::bad_request(
                        "InvalidSkipToken",
                        format!("The skip token '{t}' is invalid."),
                    ))
                }
            },
        };
        let total = items.len();
        let value: Vec<Value> = items.into_iter().skip(skip).take(size).collect();
        let mut body = json!({ "value": value });
        if skip + size < total {
            body["nextLink"] = json!(format!(
                "{}{}?api-version={}&$skiptoken={}",
                self.base,
                self.path,
                self.api_version,
                skip + size
            ));
        }
        ok(body)
    }

    fn json_body(&self) -> Result<Value, ArmError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            ArmError::bad_request(
                "InvalidRequestContent",
                format!("The request content was invalid and could not be deserialized: '{e}'."),
            )
        })
    }
}

async fn dispatch(State(sim): Sim, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY).await else {
        return error(&ArmError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            "The request body is too large.",
        ));
    };
    let query = Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
        .map(|Query(q)| q)
        .unwrap_or_default();
    let Some(api_version) = query
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("api-version"))
        .map(|(_, v)| v.clone())
        .filter(|v| !v.is_empty())
    else {
        return error(&ArmError::bad_request(
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        ));
    };
    let call = Call {
        sim: &sim,
        method: parts.method.clone(),
        base: format!("http://{}", host(&parts.headers)),
        headers: parts.headers,
        query,
        api_version,
        path: parts.uri.path().to_string(),
        body,
    };
    route(&call)
}

fn route(c: &Call<'_>) -> Response {
    let segs: Vec<String> = c
        .path
        .split('/')
        .skip(1)
        .map(|s| percent_decode_str(s).decode_utf8_lossy().into_owned())
        .collect();
    let lower: Vec<String> = segs.iter().map(|s| s.to_ascii_lowercase()).collect();
    let l: Vec<&str> = lower.iter().map(String::as_str).collect();
    let ids = lock(&c.sim.world).ids.clone();

    if l.len() < 2 || l[1].is_empty() {
        return unknown_path_sync(&c.path);
    }
    if !segs[1].eq_ignore_ascii_case(&ids.sub) {
        return error(&ArmError::new(
            StatusCode::NOT_FOUND,
            "SubscriptionNotFound",
            format!("The subscription '{}' could not be found.", segs[1]),
        ));
    }
    match &l[2..] {
        [] => {
            if c.method != Method::GET {
                return c.method_not_allowed();
            }
            ok(json!({
                "id": format!("/subscriptions/{}", ids.sub),
                "subscriptionId": ids.sub,
                "tenantId": ids.tenant,
                "displayName": "exoip simulated subscription",
                "state": "Enabled",
            }))
        }
        ["providers", "microsoft.network", "locations", loc, "operations", _] => {
            if c.method != Method::GET {
                return c.method_not_allowed();
            }
            operation(c, loc, &segs[7])
        }
        ["providers", "microsoft.network", kind] => {
            if c.method != Method::GET {
                return c.method_not_allowed();
            }
            list(c, "microsoft.network", kind)
        }
        ["resourcegroups", _, rest @ ..] => {
            if !segs[3].eq_ignore_ascii_case(&ids.rg) {
                return error(&ArmError::new(
                    StatusCode::NOT_FOUND,
                    "ResourceGroupNotFound",
                    format!("Resource group '{}' could not be found.", segs[3]),
                ));
            }
            match rest {
                [] => {
                    if c.method != Method::GET {
                        return c.method_not_allowed();
                    }
                    ok(json!({
                        "id": ids.rg_id(), "name": ids.rg, "type": "Microsoft.Resources/resourceGroups",
                        "location": ids.location,
                        "properties": { "provisioningState": "Succeeded" },
                    }))
                }
                ["providers", ns, kind] => {
                    if c.method != Method::GET {
                        return c.method_not_allowed();
                    }
                    list(c, ns, kind)
                }
                ["providers", ns, kind, _, tail @ ..] => {
                    let name = &segs[7];
                    let tail_names = &segs[8..];
                    resource(c, ns, kind, name, tail, tail_names)
                }
                _ => unknown_path_sync(&c.path),
            }
        }
        _ => unknown_path_sync(&c.path),
    }
}

fn unknown_path_sync(path: &str) -> Response {
    error(&ArmError::new(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("No HTTP resource was found that matches the request URI '{path}'."),
    ))
}

fn invalid_type(c: &Call<'_>, ns: &str, kind: &str) -> Response {
    error(&ArmError::new(
        StatusCode::NOT_FOUND,
        "InvalidResourceType",
        format!(
            "The resource type '{kind}' could not be found in the namespace '{ns}' for api \
             version '{}'.",
            c.api_version
        ),
    ))
}

fn not_found(world: &World, kind: &str, name: &str) -> Response {
    error(&ArmError::new(
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        format!(
            "The Resource '{kind}/{name}' under resource group '{}' was not found. For more \
             details please go to https://aka.ms/ARMResourceNotFoundFix",
            world.ids.rg
        ),
    ))
}

fn list(c: &Call<'_>, ns: &str, kind: &str) -> Response {
    let world = lock(&c.sim.world);
    let items: Vec<Value> = match (ns, kind) {
        ("microsoft.network", "networkinterfaces") => {
            (0..world.nics.len()).map(|i| nic_json(&world, i)).collect()
        }
        ("microsoft.network", "publicipaddresses") => {
            (0..world.pips.len()).map(|i| pip_json(&world, i)).collect()
        }
        ("microsoft.network", "networksecuritygroups") => world
            .nsgs
            .iter()
            .map(|g| nsg_json(&world, &g.name))
            .collect(),
        ("microsoft.network", "virtualnetworks") => world
            .vnets
            .iter()
            .map(|v| vnet_json(&world, &v.name))
            .collect(),
        ("microsoft.compute", "virtualmachines") => {
            world.vms.iter().map(|v| vm_json(&world, &v.name)).collect()
        }
        _ => return invalid_type(c, ns, kind),
    };
    drop(world);
    c.page(items)
}

fn resource(
    c: &Call<'_>,
    ns: &str,
    kind: &str,
    name: &str,
    tail: &[&str],
    tail_names: &[String],
) -> Response {
    match (ns, kind) {
        ("microsoft.network", "networkinterfaces") => match tail {
            [] => match c.method {
                Method::GET => {
                    let world = lock(&c.sim.world);
                    match world.nic_index(name) {
                        Some(i) => ok_etag(nic_json(&world, i)),
                        None => not_found(&world, "Microsoft.Network/networkInterfaces", name),
                    }
                }
                Method::PUT => put_nic(c, name),
                Method::PATCH => patch_tags(c, Kind::Nic, name),
                Method::DELETE => not_supported(&format!("deleting network interface {name}")),
                _ => c.method_not_allowed(),
            },
            ["ipconfigurations", rest @ ..] => {
                if c.method != Method::GET {
                    return c.method_not_allowed();
                }
                let world = lock(&c.sim.world);
                let Some(i) = world.nic_index(name) else {
                    return not_found(&world, "Microsoft.Network/networkInterfaces", name);
                };
                let nic = &world.nics[i];
                match rest {
                    [] => {
                        let items = nic
                            .spec
                            .ip_configs
                            .iter()
                            .map(|cfg| ip_config_json(&world, nic, cfg))
                            .collect();
                        drop(world);
                        c.page(items)
                    }
                    [_] => {
                        let cfg_name = &tail_names[1];
                        match nic
                            .spec
                            .ip_configs
                            .iter()
                            .find(|x| x.name.eq_ignore_ascii_case(cfg_name))
                        {
                            Some(cfg) => ok_etag(ip_config_json(&world, nic, cfg)),
                            None => error(&ArmError::new(
                                StatusCode::NOT_FOUND,
                                "NotFound",
                                format!(
                                    "Resource {} not found.",
                                    world.ids.ip_config(&nic.name, cfg_name)
                                ),
                            )),
                        }
                    }
                    _ => unknown_path_sync(&c.path),
                }
            }
            _ => unknown_path_sync(&c.path),
        },
        ("microsoft.network", "publicipaddresses") => match tail {
            [] => match c.method {
                Method::GET => {
                    let world = lock(&c.sim.world);
                    match world.pip_index(name) {
                        Some(i) => ok_etag(pip_json(&world, i)),
                        None => not_found(&world, "Microsoft.Network/publicIPAddresses", name),
                    }
                }
                Method::PUT => put_pip(c, name),
                Method::PATCH => patch_tags(c, Kind::Pip, name),
                Method::DELETE => not_supported(&format!("deleting public IP address {name}")),
                _ => c.method_not_allowed(),
            },
            _ => unknown_path_sync(&c.path),
        },
        ("microsoft.network", "networksecuritygroups") => {
            if c.method != Method::GET {
                return c.method_not_allowed();
            }
            let world = lock(&c.sim.world);
            match (tail, world.nsg(name)) {
                ([], Some(g)) => ok_etag(nsg_json(&world, &g.name)),
                ([], None) => not_found(&world, "Microsoft.Network/networkSecurityGroups", name),
                _ => unknown_path_sync(&c.path),
            }
        }
        ("microsoft.network", "virtualnetworks") => {
            if c.method != Method::GET {
                return c.method_not_allowed();
            }
            let world = lock(&c.sim.world);
            let Some(vnet) = world.vnet(name) else {
                return not_found(&world, "Microsoft.Network/virtualNetworks", name);
            };
            match tail {
                [] => ok_etag(vnet_json(&world, &vnet.name)),
                ["subnets"] => {
                    let items = vnet
                        .subnets
                        .iter()
                        .map(|s| subnet_json(&world, &vnet.name, &s.name))
                        .collect();
                    drop(world);
                    c.page(items)
                }
                ["subnets", _] => {
                    let sn = &tail_names[1];
                    match vnet
                        .subnets
                        .iter()
                        .find(|s| s.name.eq_ignore_ascii_case(sn))
                    {
                        Some(s) => ok_etag(subnet_json(&world, &vnet.name, &s.name)),
                        None => error(&ArmError::new(
                            StatusCode::NOT_FOUND,
                            "NotFound",
                            format!("Resource {} not found.", world.ids.subnet(&vnet.name, sn)),
                        )),
                    }
                }
                _ => unknown_path_sync(&c.path),
            }
        }
        ("microsoft.compute", "virtualmachines") => {
            if c.method != Method::GET {
                return c.method_not_allowed();
            }
            let world = lock(&c.sim.world);
            let Some(vm) = world.vm(name) else {
                return not_found(&world, "Microsoft.Compute/virtualMachines", name);
            };
            match tail {
                [] => ok(vm_json(&world, &vm.name)),
                ["instanceview"] => ok(json!({
                    "computerName": vm.name,
                    "statuses": [
                        {"code": "ProvisioningState/succeeded", "level": "Info",
                         "displayStatus": "Provisioning succeeded"},
                        {"code": format!("PowerState/{}", vm.power_state), "level": "Info",
                         "displayStatus": format!("VM {}", vm.power_state)},
                    ],
                })),
                _ => unknown_path_sync(&c.path),
            }
        }
        _ => invalid_type(c, ns, kind),
    }
}

fn not_supported(what: &str) -> Response {
    error(&ArmError::bad_request(
        "NotSupportedBySimulator",
        format!("The simulated Azure does not support {what}."),
    ))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Nic,
    Pip,
}

/// `If-Match` / `If-None-Match` against the resource's current etag.
fn precondition(headers: &HeaderMap, etag: &str) -> Result<(), ArmError> {
    if let Some(want) = headers.get("if-match").and_then(|v| v.to_str().ok()) {
        let want = want.trim();
        if want != "*" && want != etag {
            let mut e = ArmError::new(
                StatusCode::PRECONDITION_FAILED,
                "PreconditionFailed",
                "Precondition failed.",
            );
            e.details.push((
                "PreconditionFailedEtagMismatch".into(),
                format!(
                    "Etag provided in if-match header {want} does not match etag {etag} of \
                     resource."
                ),
            ));
            return Err(e);
        }
    }
    if let Some(v) = headers.get("if-none-match").and_then(|v| v.to_str().ok()) {
        if v.trim() == "*" || v.trim() == etag {
            return Err(ArmError::new(
                StatusCode::PRECONDITION_FAILED,
                "PreconditionFailed",
                "Precondition failed: the resource exists (If-None-Match).",
            ));
        }
    }
    Ok(())
}

/// The answer to a write on a resource whose operation `op` still runs.
fn busy(c: &Call<'_>, world: &World, id: &str, op: &str) -> Response {
    let (status, retry) = {
        let o = lock(&c.sim.options);
        (o.busy_status, o.operation_retry_after_secs)
    };
    let url = op_url(c, world, op);
    let e = if status == 429 {
        ArmError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "RetryableErrorDueToAnotherOperation",
            format!(
                "Operation could not be completed because another operation on resource {id} \
                 is in progress. To retrieve status of the operation use uri: {url}"
            ),
        )
    } else {
        ArmError::new(
            StatusCode::CONFLICT,
            "AnotherOperationInProgress",
            format!(
                "Another operation on this or dependent resource is in progress. To retrieve \
                 status of the operation use uri: {url}"
            ),
        )
    };
    retry_after(error(&e), retry)
}

fn op_url(c: &Call<'_>, world: &World, op: &str) -> String {
    format!(
        "{}/subscriptions/{}/providers/Microsoft.Network/locations/{}/operations/{op}?api-version={}",
        c.base, world.ids.sub, world.ids.location, c.api_version
    )
}

/// Records a new operation on a resource and decides (from the faults) how it will end.
fn start_operation(c: &Call<'_>, world: &mut World, target: OpTarget) -> (String, OpOutcome) {
    let outcome = lock(&c.sim.faults).operation_outcome();
    let id = uuid::Uuid::new_v4().to_string();
    world.ops.insert(
        id.clone(),
        Operation {
            id: id.clone(),
            status: OpStatus::InProgress,
            error: None,
            target,
            outcome,
            start: rfc3339_now(),
            end: None,
        },
    );
    (id, outcome)
}

/// After a long-running PUT was accepted: runs the operation per the faults, then answers 200
/// with the body, `Azure-AsyncOperation` and `Retry-After` (or drops the connection when the
/// response is to be lost).
fn accepted(
    c: &Call<'_>,
    op: String,
    outcome: OpOutcome,
    render: impl Fn(&World) -> Value,
) -> Response {
    let (delay, immediate, lost) = {
        let mut f = lock(&c.sim.faults);
        let lost = f.response_lost();
        (f.faults.op_delay, f.faults.op_immediate, lost)
    };
    let (url, retry) = {
        let world = lock(&c.sim.world);
        (
            op_url(c, &world, &op),
            lock(&c.sim.options).operation_retry_after_secs,
        )
    };
    // Rendered before completing: even a zero-delay operation answers `Updating`, as ARM does,
    // unless operations are to look immediate.
    let mut body = render(&lock(&c.sim.world));
    if outcome != OpOutcome::Stuck {
        if immediate {
            c.sim.complete(&op);
            body = render(&lock(&c.sim.world));
        } else {
            c.sim.schedule(op.clone(), delay);
        }
    }
    if lost {
        return dropped();
    }
    let mut r = retry_after(ok_etag(body), retry);
    if let Ok(v) = HeaderValue::from_str(&url) {
        r.headers_mut().insert("azure-asyncoperation", v);
    }
    r.headers_mut().insert(
        "x-ms-ratelimit-remaining-subscription-writes",
        HeaderValue::from_static("199"),
    );
    r
}

fn put_nic(c: &Call<'_>, name: &str) -> Response {
    let body = match c.json_body() {
        Ok(b) => b,
        Err(e) => return error(&e),
    };
    let mut guard = lock(&c.sim.world);
    let world = &mut *guard;
    let Some(idx) = world.nic_index(name) else {
        if c.headers.contains_key("if-match") {
            return error(&ArmError::new(
                StatusCode::PRECONDITION_FAILED,
                "PreconditionFailed",
                "Precondition failed: the resource does not exist.",
            ));
        }
        return not_supported(&format!("creating network interface {name}"));
    };
    if let Err(e) = precondition(&c.headers, &world.nics[idx].etag) {
        return error(&e);
    }
    if let Some(op) = world.nics[idx].busy.clone() {
        let id = world.ids.nic(&world.nics[idx].name);
        return busy(c, world, &id, &op);
    }
    let spec = match world.nic_spec_from_body(idx, &body) {
        Ok(s) => s,
        Err(e) => return error(&e),
    };
    // A referenced public IP that is itself being updated is not usable yet.
    for cfg in &spec.ip_configs {
        if let Some(p) = cfg.public_ip.as_deref().and_then(|p| world.pip_index(p)) {
            if world.pips[p].busy.is_some() {
                let retry = lock(&c.sim.options).operation_retry_after_secs;
                let mut e = ArmError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "RetryableError",
                    "A retryable error occurred.",
                );
                e.details.push((
                    "ReferencedResourceNotProvisioned".into(),
                    format!(
                        "Cannot proceed with operation because resource {} used by resource {} \
                         is not in Succeeded state. Resource is in Updating state and the last \
                         operation that updated/is updating the resource is PutPublicIpAddress.",
                        world.ids.pip(&world.pips[p].name),
                        world.ids.nic(&world.nics[idx].name)
                    ),
                ));
                return retry_after(error(&e), retry);
            }
        }
    }
    let nic_name = world.nics[idx].name.clone();
    let (op, outcome) = start_operation(c, world, OpTarget::Nic(nic_name.clone()));
    let nic = &mut world.nics[idx];
    if nic.spec.nsg != spec.nsg || nic.spec.ip_configs != spec.ip_configs {
        tracing::debug!("NIC {nic_name}: PUT accepted, operation {op}");
    }
    nic.spec = spec;
    nic.state = ProvState::Updating;
    nic.etag = new_etag();
    nic.busy = Some(op.clone());
    drop(guard);
    accepted(c, op, outcome, |w| {
        w.nic_index(&nic_name)
            .map(|i| nic_json(w, i))
            .unwrap_or(Value::Null)
    })
}

fn put_pip(c: &Call<'_>, name: &str) -> Response {
    let body = match c.json_body() {
        Ok(b) => b,
        Err(e) => return error(&e),
    };
    let mut guard = lock(&c.sim.world);
    let world = &mut *guard;
    let Some(idx) = world.pip_index(name) else {
        if c.headers.contains_key("if-match") {
            return error(&ArmError::new(
                StatusCode::PRECONDITION_FAILED,
                "PreconditionFailed",
                "Precondition failed: the resource does not exist.",
            ));
        }
        return not_supported(&format!("creating public IP address {name}"));
    };
    if let Err(e) = precondition(&c.headers, &world.pips[idx].etag) {
        return error(&e);
    }
    if let Some(op) = world.pips[idx].busy.clone() {
        let id = world.ids.pip(&world.pips[idx].name);
        return busy(c, world, &id, &op);
    }
    let spec = match world.pip_spec_from_body(idx, &body) {
        Ok(s) => s,
        Err(e) => return error(&e),
    };
    let pip_name = world.pips[idx].name.clone();
    let (op, outcome) = start_operation(c, world, OpTarget::Pip(pip_name.clone()));
    let pip = &mut world.pips[idx];
    pip.spec = spec;
    pip.state = ProvState::Updating;
    pip.etag = new_etag();
    pip.busy = Some(op.clone());
    drop(guard);
    accepted(c, op, outcome, |w| {
        w.pip_index(&pip_name)
            .map(|i| pip_json(w, i))
            .unwrap_or(Value::Null)
    })
}

/// `PATCH` with `{"tags": {…}}` (`UpdateTags`): replaces the tags at once, no operation.
fn patch_tags(c: &Call<'_>, kind: Kind, name: &str) -> Response {
    let body = match c.json_body() {
        Ok(b) => b,
        Err(e) => return error(&e),
    };
    let tags: std::collections::BTreeMap<String, String> = match body.get("tags") {
        Some(Value::Object(m)) => {
            let mut out = std::collections::BTreeMap::new();
            for (k, v) in m {
                match v.as_str() {
                    Some(s) => {
                        out.insert(k.clone(), s.to_string());
                    }
                    None => {
                        return error(&ArmError::bad_request(
                            "InvalidRequestContent",
                            format!("The request content was invalid: tag {k:?} must be a string."),
                        ))
                    }
                }
            }
            out
        }
        _ => {
            return error(&ArmError::bad_request(
                "InvalidRequestContent",
                "The request content was invalid: PATCH takes {\"tags\": {…}} only.",
            ))
        }
    };
    let mut guard = lock(&c.sim.world);
    let world = &mut *guard;
    match kind {
        Kind::Nic => {
            let Some(idx) = world.nic_index(name) else {
                return not_found(world, "Microsoft.Network/networkInterfaces", name);
            };
            if let Err(e) = precondition(&c.headers, &world.nics[idx].etag) {
                return error(&e);
            }
            if let Some(op) = world.nics[idx].busy.clone() {
                let id = world.ids.nic(&world.nics[idx].name);
                return busy(c, world, &id, &op);
            }
            c.sim.commit(world, false, |w| {
                let nic = &mut w.nics[idx];
                nic.spec.tags = tags.clone();
                nic.applied.tags = tags;
                nic.etag = new_etag();
            });
            ok_etag(nic_json(world, idx))
        }
        Kind::Pip => {
            let Some(idx) = world.pip_index(name) else {
                return not_found(world, "Microsoft.Network/publicIPAddresses", name);
            };
            if let Err(e) = precondition(&c.headers, &world.pips[idx].etag) {
                return error(&e);
            }
            if let Some(op) = world.pips[idx].busy.clone() {
                let id = world.ids.pip(&world.pips[idx].name);
                return busy(c, world, &id, &op);
            }
            c.sim.commit(world, false, |w| {
                let pip = &mut w.pips[idx];
                pip.spec.tags = tags.clone();
                pip.applied.tags = tags;
                pip.etag = new_etag();
            });
            ok_etag(pip_json(world, idx))
        }
    }
}

fn operation(c: &Call<'_>, location: &str, id: &str) -> Response {
    let world = lock(&c.sim.world);
    let op = world
        .ops
        .get(id)
        .filter(|_| location.eq_ignore_ascii_case(&world.ids.location));
    let Some(op) = op else {
        return error(&ArmError::new(
            StatusCode::NOT_FOUND,
            "OperationNotFound",
            format!("The operation '{id}' could not be found."),
        ));
    };
    let r = ok(op.to_json());
    if op.status == OpStatus::InProgress {
        let retry = lock(&c.sim.options).operation_retry_after_secs;
        return retry_after(r, retry);
    }
    r
}

// ---------------------------------------------------------------------------------------------
// Resource shapes

fn tags_into(v: &mut Value, tags: &std::collections::BTreeMap<String, String>) {
    if !tags.is_empty() {
        v["tags"] = json!(tags);
    }
}

/// Merges the modelled properties over the echoed extra ones.
fn props(extra: &Map<String, Value>, modelled: Value) -> Value {
    let mut m = extra.clone();
    if let Value::Object(o) = modelled {
        m.extend(o);
    }
    Value::Object(m)
}

fn ip_config_json(world: &World, nic: &Nic, c: &IpConfig) -> Value {
    let mut p = json!({
        "provisioningState": nic.state.as_str(),
        "privateIPAddress": c.private_ip.to_string(),
        "privateIPAllocationMethod": c.allocation.as_str(),
        "subnet": { "id": world.ids.subnet(&c.vnet, &c.subnet) },
        "primary": c.primary,
        "privateIPAddressVersion": "IPv4",
    });
    if let Some(pip) = &c.public_ip {
        p["publicIPAddress"] = json!({ "id": world.ids.pip(pip) });
    }
    json!({
        "name": c.name,
        "id": world.ids.ip_config(&nic.name, &c.name),
        // ipConfigurations share their NIC's etag.
        "etag": nic.etag,
        "type": "Microsoft.Network/networkInterfaces/ipConfigurations",
        "properties": props(&c.extra, p),
    })
}

/// A NIC as GET shows it: its desired state (the last accepted PUT).
pub(crate) fn nic_json(world: &World, idx: usize) -> Value {
    let nic = &world.nics[idx];
    let s = &nic.spec;
    let mut dns = s.dns.clone();
    dns.insert("appliedDnsServers".into(), json!([]));
    dns.insert(
        "internalDomainNameSuffix".into(),
        json!("sim.internal.cloudapp.net"),
    );
    let mut defaults = Map::new();
    defaults.insert("nicType".into(), json!("Standard"));
    defaults.insert("auxiliaryMode".into(), json!("None"));
    defaults.insert("disableTcpStateTracking".into(), json!(false));
    for (k, v) in &s.extra {
        defaults.insert(k.clone(), v.clone());
    }
    let mut p = json!({
        "provisioningState": nic.state.as_str(),
        "resourceGuid": nic.guid,
        "ipConfigurations": s.ip_configs.iter().map(|c| ip_config_json(world, nic, c))
            .collect::<Vec<_>>(),
        "dnsSettings": dns,
        "macAddress": nic.mac,
        "enableAcceleratedNetworking": s.accelerated,
        "vnetEncryptionSupported": false,
        "enableIPForwarding": s.ip_forwarding,
        "primary": world.nic_is_primary(nic),
        "virtualMachine": { "id": world.ids.vm(&nic.vm) },
        "hostedWorkloads": [],
        "tapConfigurations": [],
    });
    if let Some(g) = &s.nsg {
        p["networkSecurityGroup"] = json!({ "id": world.ids.nsg(g) });
    }
    let mut v = json!({
        "name": nic.name,
        "id": world.ids.nic(&nic.name),
        "etag": nic.etag,
        "type": "Microsoft.Network/networkInterfaces",
        "location": world.ids.location,
        "properties": props(&defaults, p),
    });
    tags_into(&mut v, &s.tags);
    v
}

pub(crate) fn pip_json(world: &World, idx: usize) -> Value {
    let pip = &world.pips[idx];
    let s = &pip.spec;
    let mut extra = Map::new();
    extra.insert(
        "ddosSettings".into(),
        json!({ "protectionMode": "VirtualNetworkInherited" }),
    );
    for (k, v) in &s.extra {
        extra.insert(k.clone(), v.clone());
    }
    let mut p = json!({
        "provisioningState": pip.state.as_str(),
        "resourceGuid": pip.guid,
        "ipAddress": pip.ip.to_string(),
        "publicIPAddressVersion": "IPv4",
        "publicIPAllocationMethod": "Static",
        "idleTimeoutInMinutes": s.idle_timeout,
        "ipTags": s.ip_tags,
    });
    if let Some(d) = &s.dns {
        p["dnsSettings"] = d.clone();
    }
    // The read-only back-reference follows the network (completed operations), not pending PUTs.
    if let Some((nic, cfg)) = world.pip_holder(&pip.name) {
        p["ipConfiguration"] = json!({ "id": world.ids.ip_config(&nic.name, &cfg.name) });
    }
    let mut v = json!({
        "name": pip.name,
        "id": world.ids.pip(&pip.name),
        "etag": pip.etag,
        "location": world.ids.location,
        "type": "Microsoft.Network/publicIPAddresses",
        "sku": { "name": "Standard", "tier": "Regional" },
        "properties": props(&extra, p),
    });
    if !pip.zones.is_empty() {
        v["zones"] = json!(pip.zones);
    }
    tags_into(&mut v, &s.tags);
    v
}

fn nsg_json(world: &World, name: &str) -> Value {
    let g = world.nsg(name).expect("caller checked");
    let nics: Vec<Value> = world
        .nics
        .iter()
        .filter(|n| {
            n.applied
                .nsg
                .as_deref()
                .is_some_and(|x| x.eq_ignore_ascii_case(&g.name))
        })
        .map(|n| json!({ "id": world.ids.nic(&n.name) }))
        .collect();
    let mut v = json!({
        "name": g.name,
        "id": world.ids.nsg(&g.name),
        "etag": g.etag,
        "type": "Microsoft.Network/networkSecurityGroups",
        "location": world.ids.location,
        "properties": {
            "provisioningState": "Succeeded",
            "resourceGuid": g.guid,
            "securityRules": [],
            "defaultSecurityRules": [],
            "networkInterfaces": nics,
        },
    });
    tags_into(&mut v, &g.tags);
    v
}

fn subnet_json(world: &World, vnet: &str, subnet: &str) -> Value {
    let v = world.vnet(vnet).expect("caller checked");
    let s = v
        .subnets
        .iter()
        .find(|s| s.name.eq_ignore_ascii_case(subnet))
        .expect("caller checked");
    let configs: Vec<Value> = world
        .nics
        .iter()
        .flat_map(|n| {
            n.applied
                .ip_configs
                .iter()
                .filter(|c| {
                    c.vnet.eq_ignore_ascii_case(&v.name) && c.subnet.eq_ignore_ascii_case(&s.name)
                })
                .map(|c| json!({ "id": world.ids.ip_config(&n.name, &c.name) }))
        })
        .collect();
    json!({
        "name": s.name,
        "id": world.ids.subnet(&v.name, &s.name),
        "etag": v.etag,
        "type": "Microsoft.Network/virtualNetworks/subnets",
        "properties": {
            "provisioningState": "Succeeded",
            "addressPrefix": s.prefix.to_string(),
            "ipConfigurations": configs,
            "privateEndpointNetworkPolicies": "Disabled",
            "privateLinkServiceNetworkPolicies": "Enabled",
        },
    })
}

fn vnet_json(world: &World, name: &str) -> Value {
    let v = world.vnet(name).expect("caller checked");
    json!({
        "name": v.name,
        "id": world.ids.vnet(&v.name),
        "etag": v.etag,
        "type": "Microsoft.Network/virtualNetworks",
        "location": world.ids.location,
        "properties": {
            "provisioningState": "Succeeded",
            "resourceGuid": v.guid,
            "addressSpace": {
                "addressPrefixes": v.prefixes.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
            },
            "subnets": v.subnets.iter().map(|s| subnet_json(world, &v.name, &s.name))
                .collect::<Vec<_>>(),
            "virtualNetworkPeerings": [],
            "enableDdosProtection": false,
        },
    })
}

fn vm_json(world: &World, name: &str) -> Value {
    let vm = world.vm(name).expect("caller checked");
    let nics: Vec<Value> = vm
        .nics
        .iter()
        .enumerate()
        .map(|(i, n)| json!({ "id": world.ids.nic(n), "properties": { "primary": i == 0 } }))
        .collect();
    let mut v = json!({
        "name": vm.name,
        "id": world.ids.vm(&vm.name),
        "type": "Microsoft.Compute/virtualMachines",
        "location": world.ids.location,
        "properties": {
            "vmId": vm.vm_id,
            "hardwareProfile": { "vmSize": vm.size },
            "provisioningState": "Succeeded",
            "storageProfile": { "osDisk": { "osType": "Linux", "name": format!("{}-osdisk", vm.name) } },
            "osProfile": { "computerName": vm.name, "adminUsername": "azureuser" },
            "networkProfile": { "networkInterfaces": nics },
        },
    });
    if !vm.zone.is_empty() {
        v["zones"] = json!([vm.zone]);
    }
    let users: Map<String, Value> = vm
        .user_identities
        .iter()
        .filter_map(|u| world.identities.iter().find(|i| &i.name == u))
        .map(|i| {
            (
                world.ids.identity(&i.name),
                json!({ "principalId": i.principal_id, "clientId": i.client_id }),
            )
        })
        .collect();
    let kind = match (&vm.system_identity, users.is_empty()) {
        (Some(_), false) => Some("SystemAssigned, UserAssigned"),
        (Some(_), true) => Some("SystemAssigned"),
        (None, false) => Some("UserAssigned"),
        (None, true) => None,
    };
    if let Some(kind) = kind {
        let mut id = json!({ "type": kind });
        if let Some(s) = &vm.system_identity {
            id["principalId"] = json!(s.principal_id);
            id["tenantId"] = json!(world.ids.tenant);
        }
        if !users.is_empty() {
            id["userAssignedIdentities"] = Value::Object(users);
        }
        v["identity"] = id;
    }
    tags_into(&mut v, &vm.tags);
    v
}
