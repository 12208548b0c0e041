//! The Azure provider against a small in-test Entra ID + IMDS + ARM server on loopback that
//! checks every request (token form body, `Metadata: true`, bearer tokens, `api-version`,
//! `If-Match`), models NIC PUTs as long-running operations with Azure's one-holder rule, and
//! injects faults.

// In a module named `azure` so that `cargo test --test azure_client --lib azure` runs them.
mod azure {
    use std::collections::HashMap;
    use std::net::IpAddr;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use axum::body::Body;
    use axum::extract::{Request, State};
    use axum::http::StatusCode;
    use axum::response::{IntoResponse, Response};
    use serde_json::{json, Value};

    use exoip_providers::azure::{Azure, AzureCredentials, AzureMode, AzureSettings};
    use exoip_providers::http::RetryPolicy;
    use exoip_providers::{Error, InstanceId, Provider, Secret};

    const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
    const APP: &str = "00000000-0000-4000-8000-0000000000a1";
    const SECRET: &str = "client~secret+with/odd=chars&more";
    const SUB: &str = "8d10da13-8125-4ba9-a717-bf7490507b3d";
    const RG: &str = "rg-ha";
    const API: &str = "2024-05-01";
    const VIP: &str = "203.0.113.50";
    const SECONDARY: &str = "192.0.2.100";
    const SCOPE: &str = "https://management.azure.com/.default";
    /// Panic message of an injected lost answer (the connection closes without one).
    const LOST: &str = "injected fault: answer lost";

    fn rg_id() -> String {
        format!("/subscriptions/{SUB}/resourceGroups/{RG}")
    }

    fn net_id(kind: &str, name: &str) -> String {
        format!("{}/providers/Microsoft.Network/{kind}/{name}", rg_id())
    }

    fn nic_id(name: &str) -> String {
        net_id("networkInterfaces", name)
    }

    fn vm_id(name: &str) -> String {
        format!(
            "{}/providers/Microsoft.Compute/virtualMachines/{name}",
            rg_id()
        )
    }

    fn subnet_id() -> String {
        net_id("virtualNetworks", "vnet/subnets/default")
    }

    /// A NIC as ARM's GET returns it, with the writable fields a careless PUT would drop and some
    /// this client has never heard of.
    fn nic(name: &str, vm: Option<&str>, nsg: &str, ip: &str, tags: Value) -> Value {
        let mut v = json!({
            "name": name,
            "id": nic_id(name),
            "etag": format!("W/\"{name}-1\""),
            "type": "Microsoft.Network/networkInterfaces",
            "location": "westeurope",
            "tags": tags,
            "futureTopLevel": {"x": [1, 2, 3]},
            "properties": {
                "provisioningState": "Succeeded",
                "resourceGuid": format!("guid-{name}"),
                "macAddress": "00-0D-3A-1B-C7-21",
                "primary": true,
                "networkSecurityGroup": {"id": net_id("networkSecurityGroups", nsg)},
                "dnsSettings": {"dnsServers": ["198.51.100.53"], "internalDnsNameLabel": name},
                "enableIPForwarding": false,
                "enableAcceleratedNetworking": true,
                "nicType": "Standard",
                "futureProperty": {"nested": {"keep": "me"}, "list": [null, true]},
                "ipConfigurations": [{
                    "name": "ipconfig1",
                    "id": format!("{}/ipConfigurations/ipconfig1", nic_id(name)),
                    "etag": format!("W/\"{name}-1\""),
                    "type": "Microsoft.Network/networkInterfaces/ipConfigurations",
                    "properties": {
                        "provisioningState": "Succeeded",
                        "primary": true,
                        "privateIPAddress": ip,
                        "privateIPAllocationMethod": "Static",
                        "privateIPAddressVersion": "IPv4",
                        "subnet": {"id": subnet_id()},
                        "loadBalancerBackendAddressPools": [{"id": format!("{}/backendAddressPools/pool", net_id("loadBalancers", "lb"))}],
                        "applicationSecurityGroups": [{"id": net_id("applicationSecurityGroups", "asg-web")}]
                    }
                }]
            }
        });
        if let Some(vm) = vm {
            v["properties"]["virtualMachine"] = json!({"id": vm_id(vm)});
        }
        v
    }

    fn pip(name: &str, address: &str) -> Value {
        json!({
            "name": name,
            "id": net_id("publicIPAddresses", name),
            "etag": format!("W/\"{name}\""),
            "location": "westeurope",
            "sku": {"name": "Standard", "tier": "Regional"},
            "properties": {"provisioningState": "Succeeded", "ipAddress": address,
                "publicIPAllocationMethod": "Static", "publicIPAddressVersion": "IPv4"}
        })
    }

    /// The documented read-only NIC fields, stripped independently of the client's code.
    fn without_read_only(nic: &Value) -> Value {
        let mut v = nic.clone();
        let o = v.as_object_mut().unwrap();
        o.remove("etag");
        o.remove("type");
        let p = o.get_mut("properties").unwrap().as_object_mut().unwrap();
        for k in [
            "provisioningState",
            "macAddress",
            "virtualMachine",
            "resourceGuid",
            "primary",
        ] {
            p.remove(k);
        }
        v
    }

    #[derive(Clone)]
    struct Fault {
        code: u16,
        headers: Vec<(&'static str, &'static str)>,
        body: &'static str,
    }

    #[derive(Clone, Debug)]
    struct Logged {
        line: String,
        if_match: Option<String>,
        authorization: Option<String>,
        metadata: Option<String>,
        content_type: Option<String>,
        body: Vec<u8>,
    }

    struct Op {
        nic: String,
        polls_left: u32,
        fail: Option<(&'static str, &'static str)>,
        done: Option<Value>,
        /// Private addresses this operation released: reserved until it completes.
        released: Vec<String>,
    }

    struct World {
        base: String,
        nics: Vec<Value>,
        pips: Vec<Value>,
        ops: HashMap<String, Op>,
        next: u32,
        /// InProgress answers before an operation completes.
        polls: u32,
        /// `Retry-After` on PUT and operation answers.
        retry_after: &'static str,
        /// The next operation ends `Failed` with this code and message.
        fail_next: Option<(&'static str, &'static str)>,
        tokens: Vec<(String, Instant)>,
        /// Tokens issued so far (they are named after this count).
        issued: usize,
        token_lifetime: u64,
        /// How many NICs per list page.
        page: usize,
        pip_list: bool,
        /// Bump this NIC's etag right after serving its GET: a concurrent writer.
        race_on: Option<String>,
        /// ARM refuses every token.
        reject_all: bool,
        /// The next PUT of this NIC is applied, then its answer lost.
        lose_response: Option<String>,
        /// ARM requests answered 401.
        refused: usize,
        faults: Vec<(String, Fault, usize)>,
        log: Vec<Logged>,
    }

    impl World {
        fn new() -> Self {
            let web = json!({"exoip-group": "web"});
            let mut a = nic("nic-a", Some("vm-a"), "nsg-web", "192.0.2.4", web.clone());
            a["properties"]["ipConfigurations"][0]["properties"]["publicIPAddress"] =
                json!({"id": net_id("publicIPAddresses", "pip-vip")});
            // A secondary ipConfiguration (secondary-ip mode) with its own public IP.
            a["properties"]["ipConfigurations"]
            .as_array_mut()
            .unwrap()
            .push(json!({
                "name": "vip",
                "id": format!("{}/ipConfigurations/vip", nic_id("nic-a")),
                "etag": "W/\"nic-a-1\"",
                "properties": {"provisioningState": "Succeeded", "primary": false,
                    "privateIPAddress": SECONDARY, "privateIPAllocationMethod": "Static",
                    "privateIPAddressVersion": "IPv4", "subnet": {"id": subnet_id()},
                    "applicationSecurityGroups": [{"id": net_id("applicationSecurityGroups", "asg-vip")}],
                    "publicIPAddress": {"id": net_id("publicIPAddresses", "pip-secondary")}}
            }));
            let b = nic("nic-b", Some("vm-b"), "nsg-web", "192.0.2.5", web.clone());
            let c = nic(
                "nic-c",
                Some("vm-c"),
                "nsg-db",
                "192.0.2.6",
                json!({"exoip-group": "web"}),
            );
            let d = nic("nic-d", Some("vm-d"), "nsg-db", "192.0.2.7", json!({}));
            // A detached NIC in the group: no VM, no peer.
            let e = nic("nic-e", None, "nsg-web", "192.0.2.8", web);
            let mut w = World {
                base: String::new(),
                nics: vec![a, b, c, d, e],
                pips: vec![
                    pip("pip-other", "203.0.113.49"),
                    pip("pip-vip", VIP),
                    pip("pip-secondary", "203.0.113.51"),
                ],
                ops: HashMap::new(),
                next: 1,
                polls: 2,
                retry_after: "10",
                fail_next: None,
                tokens: Vec::new(),
                issued: 0,
                token_lifetime: 3599,
                page: 2,
                pip_list: true,
                race_on: None,
                reject_all: false,
                lose_response: None,
                refused: 0,
                faults: Vec::new(),
                log: Vec::new(),
            };
            w.recompute_back_references();
            w
        }

        fn fault(
            &mut self,
            prefix: &str,
            code: u16,
            headers: &[(&'static str, &'static str)],
            body: &'static str,
            times: usize,
        ) {
            self.faults.push((
                prefix.to_string(),
                Fault {
                    code,
                    headers: headers.to_vec(),
                    body,
                },
                times,
            ));
        }

        fn nic(&self, name: &str) -> &Value {
            self.nics.iter().find(|n| n["name"] == name).unwrap()
        }

        fn nic_mut(&mut self, name: &str) -> Option<&mut Value> {
            self.nics.iter_mut().find(|n| n["name"] == name)
        }

        fn pip(&self, name: &str) -> &Value {
            self.pips.iter().find(|p| p["name"] == name).unwrap()
        }

        /// A public IP's `properties.ipConfiguration` follows the NICs, once their operations end.
        fn recompute_back_references(&mut self) {
            let mut refs = HashMap::new();
            for nic in &self.nics {
                for c in nic["properties"]["ipConfigurations"].as_array().unwrap() {
                    if let Some(p) = c
                        .pointer("/properties/publicIPAddress/id")
                        .and_then(Value::as_str)
                    {
                        refs.insert(p.to_ascii_lowercase(), c["id"].clone());
                    }
                }
            }
            for pip in &mut self.pips {
                let id = pip["id"].as_str().unwrap().to_ascii_lowercase();
                let props = pip["properties"].as_object_mut().unwrap();
                match refs.get(&id) {
                    Some(cfg) => {
                        props.insert("ipConfiguration".into(), json!({"id": cfg}));
                    }
                    None => {
                        props.remove("ipConfiguration");
                    }
                }
            }
        }

        /// One look at operation `id`: `InProgress` for `polls` looks, then its end, which
        /// applies to the NIC and the public IPs' back-references.
        fn advance(&mut self, id: &str) -> Option<Value> {
            let mut op = self.ops.remove(id)?;
            let answer = if let Some(done) = &op.done {
                done.clone()
            } else if op.polls_left > 0 {
                op.polls_left -= 1;
                json!({"status": "InProgress"})
            } else {
                let state = if op.fail.is_some() {
                    "Failed"
                } else {
                    "Succeeded"
                };
                if let Some(n) = self.nic_mut(&op.nic) {
                    n["properties"]["provisioningState"] = json!(state);
                }
                self.recompute_back_references();
                op.released.clear();
                let done = match op.fail {
                    Some((code, message)) => {
                        json!({"status": "Failed", "error": {"code": code, "message": message}})
                    }
                    None => json!({"status": "Succeeded"}),
                };
                op.done = Some(done.clone());
                done
            };
            self.ops.insert(id.to_string(), op);
            Some(answer)
        }

        fn lines(&self) -> Vec<String> {
            self.log.iter().map(|l| l.line.clone()).collect()
        }

        fn count(&self, prefix: &str) -> usize {
            self.log
                .iter()
                .filter(|l| l.line.starts_with(prefix))
                .count()
        }

        fn puts(&self) -> Vec<&Logged> {
            self.log
                .iter()
                .filter(|l| l.line.starts_with("PUT "))
                .collect()
        }

        fn holder_vm(&self, pip_name: &str) -> Option<String> {
            let cfg = self
                .pip(pip_name)
                .pointer("/properties/ipConfiguration/id")?
                .as_str()?;
            let nic = cfg.split("/ipConfigurations/").next()?;
            let nic = self.nics.iter().find(|n| n["id"] == nic)?;
            Some(
                nic.pointer("/properties/virtualMachine/id")?
                    .as_str()?
                    .rsplit('/')
                    .next()?
                    .to_string(),
            )
        }
    }

    type Shared = Arc<Mutex<World>>;

    fn arm_error(code: u16, error: &str, message: &str) -> Response {
        (
            StatusCode::from_u16(code).unwrap(),
            axum::Json(json!({"error": {"code": error, "message": message}})),
        )
            .into_response()
    }

    fn query_pairs(query: &str) -> Vec<(String, String)> {
        form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect()
    }

    async fn handle(State(world): State<Shared>, request: Request) -> Response {
        let (parts, body) = request.into_parts();
        let body = axum::body::to_bytes(body, 1 << 20).await.unwrap().to_vec();
        let method = parts.method.as_str().to_string();
        let path = parts.uri.path().to_string();
        let query = parts.uri.query().unwrap_or("").to_string();
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let line = if query.is_empty() {
            format!("{method} {path}")
        } else {
            format!("{method} {path}?{query}")
        };
        let params = query_pairs(&query);
        let param = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };

        let mut w = world.lock().unwrap();
        w.log.push(Logged {
            line: line.clone(),
            if_match: header("if-match"),
            authorization: header("authorization"),
            metadata: header("metadata"),
            content_type: header("content-type"),
            body: body.clone(),
        });
        if let Some(slot) = w
            .faults
            .iter_mut()
            .find(|(prefix, _, times)| *times > 0 && line.starts_with(prefix.as_str()))
        {
            slot.2 -= 1;
            let fault = slot.1.clone();
            let mut response = Response::new(Body::from(fault.body));
            *response.status_mut() = StatusCode::from_u16(fault.code).unwrap();
            for (k, v) in fault.headers {
                response.headers_mut().insert(k, v.parse().unwrap());
            }
            return response;
        }

        // ----- Entra ID ---------------------------------------------------------------------
        if path == format!("/{TENANT}/oauth2/v2.0/token") && method == "POST" {
            if header("content-type").as_deref() != Some("application/x-www-form-urlencoded") {
                return (
                    StatusCode::BAD_REQUEST,
                    axum::Json(json!({"error": "invalid_request"})),
                )
                    .into_response();
            }
            let form = query_pairs(std::str::from_utf8(&body).unwrap());
            let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
            if get("grant_type") != Some("client_credentials") || get("client_id") != Some(APP) {
                return (
                    StatusCode::BAD_REQUEST,
                    axum::Json(json!({"error": "invalid_request"})),
                )
                    .into_response();
            }
            if get("client_secret") != Some(SECRET) {
                return (
                StatusCode::UNAUTHORIZED,
                axum::Json(json!({"error": "invalid_client",
                    "error_description": "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value.\r\nTrace ID: 1\r\nCorrelation ID: 2",
                    "error_codes": [7000215]})),
            )
                .into_response();
            }
            if get("scope") != Some(SCOPE) {
                return (StatusCode::BAD_REQUEST, axum::Json(json!({"error": "invalid_scope",
                "error_description": "AADSTS70011: The provided request must include a 'scope' input parameter."}))).into_response();
            }
            w.issued += 1;
            let token = format!("entra-{}", w.issued);
            let lifetime = w.token_lifetime;
            w.tokens.push((
                token.clone(),
                Instant::now() + Duration::from_secs(lifetime),
            ));
            return axum::Json(json!({"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime, "access_token": token})).into_response();
        }

        // ----- IMDS -------------------------------------------------------------------------
        if path.starts_with("/metadata/") {
            if header("metadata").as_deref() != Some("true") {
                return (StatusCode::BAD_REQUEST, axum::Json(json!({"error": "bad_request_102", "error_description": "Required metadata header not specified"}))).into_response();
            }
            if header("authorization").is_some() {
                return (StatusCode::BAD_REQUEST, "IMDS takes no credentials").into_response();
            }
            if path == "/metadata/identity/oauth2/token" {
                if param("api-version").as_deref() != Some("2018-02-01")
                    || param("resource").as_deref() != Some("https://management.azure.com/")
                {
                    return (StatusCode::BAD_REQUEST, axum::Json(json!({"error": "invalid_request", "error_description": "bad api-version or resource"}))).into_response();
                }
                if let Some(id) = param("client_id") {
                    if id != APP {
                        return (StatusCode::BAD_REQUEST, axum::Json(json!({"error": "invalid_request", "error_description": "Identity not found"}))).into_response();
                    }
                }
                w.issued += 1;
                let token = format!("imds-{}", w.issued);
                let lifetime = w.token_lifetime;
                w.tokens.push((
                    token.clone(),
                    Instant::now() + Duration::from_secs(lifetime),
                ));
                return axum::Json(json!({"access_token": token, "refresh_token": "",
                "expires_in": lifetime.to_string(), "expires_on": "1506484173", "not_before": "1506480273",
                "resource": "https://management.azure.com/", "token_type": "Bearer"}))
            .into_response();
            }
            if path == "/metadata/instance" {
                if param("api-version").is_none() {
                    return (StatusCode::BAD_REQUEST, axum::Json(json!({"error": "Bad request. api-version was not specified in the request", "newest-versions": ["2023-07-01"]}))).into_response();
                }
                return axum::Json(json!({
                    "compute": {"name": "vm-a", "resourceGroupName": RG, "subscriptionId": SUB,
                        "vmId": "02aab8a4-74ef-476e-8182-f6d2ba4166a6", "resourceId": vm_id("vm-a"),
                        "location": "westeurope", "zone": "", "azEnvironment": "AzurePublicCloud",
                        "tagsList": [{"name": "exoip-group", "value": "web"}]},
                    "network": {"interface": [{"macAddress": "000D3A1BC721", "ipv4": {
                        "ipAddress": [{"privateIpAddress": "192.0.2.4", "publicIpAddress": ""}],
                        "subnet": [{"address": "192.0.2.0", "prefix": "24"}]}}]}
                }))
                .into_response();
            }
            return (StatusCode::NOT_FOUND, "no such metadata").into_response();
        }

        // ----- ARM --------------------------------------------------------------------------
        let now = Instant::now();
        let valid = header("authorization")
            .and_then(|a| a.strip_prefix("Bearer ").map(str::to_string))
            .is_some_and(|t| w.tokens.iter().any(|(v, until)| *v == t && *until > now));
        if !valid || w.reject_all {
            w.refused += 1;
            let mut r = arm_error(
                401,
                "InvalidAuthenticationToken",
                "The access token is invalid.",
            );
            r.headers_mut().insert(
                "www-authenticate",
                "Bearer authorization_uri=\"https://login.windows.net/\", error=\"invalid_token\""
                    .parse()
                    .unwrap(),
            );
            return r;
        }
        if param("api-version").as_deref() != Some(API) {
            return arm_error(
                400,
                "InvalidApiVersionParameter",
                "missing or unexpected api-version",
            );
        }
        let base = w.base.clone();
        let op_prefix = format!(
            "/subscriptions/{SUB}/providers/Microsoft.Network/locations/westeurope/operations/"
        );
        if let Some(id) = path.strip_prefix(&op_prefix) {
            let retry_after = w.retry_after;
            let Some(answer) = w.advance(id) else {
                return arm_error(404, "NotFound", "no such operation");
            };
            let mut r = axum::Json(answer).into_response();
            r.headers_mut()
                .insert("retry-after", retry_after.parse().unwrap());
            return r;
        }
        let nics_path = format!("{}/providers/Microsoft.Network/networkInterfaces", rg_id());
        let pips_path = format!("{}/providers/Microsoft.Network/publicIPAddresses", rg_id());
        if path == nics_path && method == "GET" {
            let skip: usize = param("$skiptoken")
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let page: Vec<Value> = w.nics.iter().skip(skip).take(w.page).cloned().collect();
            let mut answer = json!({"value": page});
            if skip + w.page < w.nics.len() {
                answer["nextLink"] = json!(format!(
                    "{base}{nics_path}?api-version={API}&$skiptoken={}",
                    skip + w.page
                ));
            }
            return axum::Json(answer).into_response();
        }
        if path == pips_path && method == "GET" {
            if !w.pip_list {
                return arm_error(404, "NotFound", "no such route");
            }
            return axum::Json(json!({"value": w.pips})).into_response();
        }
        if let Some(name) = path.strip_prefix(&format!("{pips_path}/")) {
            return match w.pips.iter().find(|p| p["name"] == name) {
                Some(p) => axum::Json(p.clone()).into_response(),
                None => arm_error(404, "ResourceNotFound", "The Resource was not found."),
            };
        }
        let Some(name) = path
            .strip_prefix(&format!("{nics_path}/"))
            .map(str::to_string)
        else {
            return arm_error(404, "NotFound", "no such route");
        };
        let Some(current) = w.nics.iter().find(|n| n["name"] == name.as_str()).cloned() else {
            return arm_error(404, "ResourceNotFound", "The Resource was not found.");
        };
        let etag = current["etag"].as_str().unwrap().to_string();
        match method.as_str() {
            "GET" => {
                // Time passes for whoever looks: reading a NIC advances its pending operations.
                let pending: Vec<String> = w
                    .ops
                    .iter()
                    .filter(|(_, o)| o.nic == name && o.done.is_none())
                    .map(|(id, _)| id.clone())
                    .collect();
                for op in pending {
                    w.advance(&op);
                }
                let current = w.nic(&name).clone();
                let etag = current["etag"].as_str().unwrap().to_string();
                if w.race_on.as_deref() == Some(name.as_str()) {
                    w.race_on = None;
                    w.nic_mut(&name).unwrap()["etag"] = json!(format!("W/\"{name}-raced\""));
                }
                let mut r = axum::Json(current).into_response();
                r.headers_mut().insert("etag", etag.parse().unwrap());
                r
            }
            "PUT" => {
                if header("if-match").is_some_and(|m| m != etag) {
                    return (StatusCode::PRECONDITION_FAILED, axum::Json(json!({"error": {"code": "PreconditionFailed", "message": "Precondition failed.",
                    "details": [{"code": "PreconditionFailedEtagMismatch", "message": format!("Etag provided in if-match header {} does not match etag {etag} of resource", header("if-match").unwrap())}]}}))).into_response();
                }
                if current["properties"]["provisioningState"] == "Updating" {
                    let mut r = arm_error(
                        429,
                        "RetryableErrorDueToAnotherOperation",
                        "Operation is being retried due to another operation in progress.",
                    );
                    r.headers_mut().insert("retry-after", "1".parse().unwrap());
                    return r;
                }
                let Ok(mut new) = serde_json::from_slice::<Value>(&body) else {
                    return arm_error(400, "InvalidRequestFormat", "cannot parse the body");
                };
                let configs = new["properties"]["ipConfigurations"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                if configs.is_empty() {
                    return arm_error(
                        400,
                        "InvalidIPConfigCount",
                        &format!(
                            "Network interface {name} must have one or more IP configurations."
                        ),
                    );
                }
                if configs
                    .iter()
                    .filter(|c| c["properties"]["primary"] == true)
                    .count()
                    > 1
                {
                    return arm_error(400, "MultiplePrimaryIpConfigs", "more than one primary");
                }
                let my_prefix = format!("{}/ipConfigurations/", nic_id(&name));
                for c in &configs {
                    let cfg_id = format!("{my_prefix}{}", c["name"].as_str().unwrap());
                    if let Some(p) = c
                        .pointer("/properties/publicIPAddress/id")
                        .and_then(Value::as_str)
                    {
                        let held = w
                            .pips
                            .iter()
                            .find(|x| x["id"].as_str().unwrap().eq_ignore_ascii_case(p))
                            .and_then(|x| x.pointer("/properties/ipConfiguration/id"))
                            .and_then(Value::as_str)
                            .map(str::to_string);
                        if let Some(held) = held.filter(|h| !h.eq_ignore_ascii_case(&cfg_id)) {
                            return arm_error(400, "PublicIPAddressInUse", &format!("Resource {cfg_id} is referencing public IP address {p} that is already allocated to resource {held}."));
                        }
                    }
                    if let Some(ip) = c
                        .pointer("/properties/privateIPAddress")
                        .and_then(Value::as_str)
                    {
                        let elsewhere =
                            w.nics
                                .iter()
                                .filter(|n| n["name"] != name.as_str())
                                .any(|n| {
                                    n["properties"]["ipConfigurations"]
                                        .as_array()
                                        .unwrap()
                                        .iter()
                                        .any(|x| x["properties"]["privateIPAddress"] == ip)
                                })
                                || w.ops
                                    .values()
                                    .any(|o| o.nic != name && o.released.iter().any(|r| r == ip));
                        if elsewhere {
                            return arm_error(400, "PrivateIPAddressInUse", &format!("IP configuration {cfg_id} is using the private IP address {ip} which is already allocated to another resource."));
                        }
                    }
                }
                let kept: Vec<&str> = configs
                    .iter()
                    .filter_map(|c| {
                        c.pointer("/properties/privateIPAddress")
                            .and_then(Value::as_str)
                    })
                    .collect();
                let released: Vec<String> = current["properties"]["ipConfigurations"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter_map(|c| c["properties"]["privateIPAddress"].as_str())
                    .filter(|ip| !kept.contains(ip))
                    .map(str::to_string)
                    .collect();
                // Store it with the read-only fields ARM maintains.
                let n = w.next;
                w.next += 1;
                let new_etag = format!("W/\"{name}-{}\"", n + 1);
                new["etag"] = json!(new_etag);
                new["type"] = current["type"].clone();
                for k in ["macAddress", "virtualMachine", "resourceGuid", "primary"] {
                    if let Some(v) = current["properties"].get(k) {
                        new["properties"][k] = v.clone();
                    }
                }
                new["properties"]["provisioningState"] = json!("Updating");
                for c in new["properties"]["ipConfigurations"]
                    .as_array_mut()
                    .unwrap()
                {
                    let id = format!("{my_prefix}{}", c["name"].as_str().unwrap());
                    c["id"] = json!(id);
                }
                *w.nic_mut(&name).unwrap() = new.clone();
                let op = format!("op-{n}");
                let polls = w.polls;
                let fail = w.fail_next.take();
                w.ops.insert(
                    op.clone(),
                    Op {
                        nic: name.clone(),
                        polls_left: polls,
                        fail,
                        done: None,
                        released,
                    },
                );
                let mut r = axum::Json(new).into_response();
                let h = r.headers_mut();
                h.insert(
                    "azure-asyncoperation",
                    format!("{base}{op_prefix}{op}?api-version={API}")
                        .parse()
                        .unwrap(),
                );
                h.insert("retry-after", w.retry_after.parse().unwrap());
                h.insert("etag", new_etag.parse().unwrap());
                if w.lose_response.as_deref() == Some(name.as_str()) {
                    w.lose_response = None;
                    drop(w);
                    panic!("{LOST}");
                }
                r
            }
            _ => arm_error(405, "MethodNotAllowed", "no"),
        }
    }

    /// Keeps the injected lost answers (handler panics) out of the test output.
    fn quiet_injected_panics() {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            let default = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                let injected = info
                    .payload()
                    .downcast_ref::<String>()
                    .is_some_and(|m| m.contains(LOST));
                if !injected {
                    default(info);
                }
            }));
        });
    }

    struct Server {
        base: String,
        world: Shared,
    }

    impl Server {
        async fn start(world: World) -> Server {
            quiet_injected_panics();
            let world = Arc::new(Mutex::new(world));
            let app = axum::Router::new()
                .fallback(handle)
                .with_state(world.clone());
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
            let base = format!("http://{addr}");
            world.lock().unwrap().base = base.clone();
            Server { base, world }
        }

        fn settings(&self, credentials: AzureCredentials) -> AzureSettings {
            let mut s = AzureSettings::new(credentials);
            s.arm_endpoint = self.base.clone();
            s.authority_host = self.base.clone();
            s.metadata_url = self.base.clone();
            s.request_timeout = Duration::from_secs(2);
            s.operation_timeout = Duration::from_secs(10);
            s.poll_first = Duration::from_millis(10);
            s.poll_max = Duration::from_millis(40);
            let fast = RetryPolicy {
                max_attempts: 4,
                base_delay: Duration::from_millis(10),
                max_delay: Duration::from_millis(50),
                max_elapsed: Duration::from_secs(5),
            };
            s.retry = fast.clone();
            s.metadata_retry = fast;
            s
        }

        /// A service principal, everything configured: no IMDS.
        fn sp(&self) -> AzureSettings {
            let mut s = self.settings(AzureCredentials::ClientSecret {
                tenant_id: TENANT.into(),
                client_id: APP.into(),
                client_secret: Secret::new(SECRET),
            });
            s.subscription = Some(SUB.into());
            s.resource_group = Some(RG.into());
            s.vm_name = Some("vm-b".into());
            s
        }

        fn client(&self, settings: AzureSettings) -> Azure {
            Azure::new(settings).unwrap()
        }

        fn world(&self) -> std::sync::MutexGuard<'_, World> {
            self.world.lock().unwrap()
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn id(s: &str) -> InstanceId {
        InstanceId::from(s)
    }

    fn json_of(l: &Logged) -> Value {
        serde_json::from_slice(&l.body).unwrap()
    }

    #[tokio::test]
    async fn managed_identity_and_imds_give_who_i_am() {
        let server = Server::start(World::new()).await;
        let client =
            server.client(server.settings(AzureCredentials::ManagedIdentity { client_id: None }));
        let me = client.whoami().await.unwrap();
        assert_eq!(me.id, id("vm-a"));
        assert_eq!(me.name, "vm-a");
        assert_eq!(
            me.addresses,
            vec![ip("192.0.2.4")],
            "the primary address only"
        );
        client.whoami().await.unwrap();

        let w = server.world();
        let lines = w.lines();
        assert_eq!(
            lines[0], "GET /metadata/instance?api-version=2021-02-01",
            "{lines:#?}"
        );
        assert_eq!(
        lines[1],
        "GET /metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fmanagement.azure.com%2F"
    );
        assert_eq!(
            w.count("GET /metadata/"),
            2,
            "IMDS once, one token: {lines:#?}"
        );
        for l in w.log.iter().filter(|l| l.line.contains("/metadata/")) {
            assert_eq!(l.metadata.as_deref(), Some("true"), "{}", l.line);
            assert_eq!(l.authorization, None);
        }
        let arm: Vec<&Logged> = w
            .log
            .iter()
            .filter(|l| l.line.contains("/subscriptions/"))
            .collect();
        // Two whoami calls, three pages each (5 NICs, 2 per page).
        assert_eq!(arm.len(), 6, "{lines:#?}");
        assert_eq!(
            arm[0].line,
            format!(
                "GET {}/providers/Microsoft.Network/networkInterfaces?api-version={API}",
                rg_id()
            )
        );
        assert!(arm[1].line.ends_with("&$skiptoken=2"), "{}", arm[1].line);
        for l in arm {
            assert_eq!(l.authorization.as_deref(), Some("Bearer imds-1"));
            assert_eq!(l.metadata, None);
        }
    }

    #[tokio::test]
    async fn a_service_principal_posts_the_documented_form() {
        let server = Server::start(World::new()).await;
        let client = server.client(server.sp());
        let me = client.whoami().await.unwrap();
        assert_eq!(me.id, id("vm-b"));
        assert_eq!(me.addresses, vec![ip("192.0.2.5")]);
        let w = server.world();
        let token = &w.log[0];
        assert_eq!(token.line, format!("POST /{TENANT}/oauth2/v2.0/token"));
        assert_eq!(
            token.content_type.as_deref(),
            Some("application/x-www-form-urlencoded")
        );
        assert_eq!(
            std::str::from_utf8(&token.body).unwrap(),
            format!(
                "grant_type=client_credentials&client_id={APP}\
             &client_secret=client%7Esecret%2Bwith%2Fodd%3Dchars%26more\
             &scope=https%3A%2F%2Fmanagement.azure.com%2F.default"
            )
        );
        assert_eq!(
            w.count("GET /metadata"),
            0,
            "everything configured: no IMDS"
        );
        assert!(w
            .log
            .iter()
            .skip(1)
            .all(|l| l.authorization.as_deref() == Some("Bearer entra-1")));
    }

    #[tokio::test]
    async fn a_refused_secret_is_an_auth_error_that_does_not_show_it() {
        let server = Server::start(World::new()).await;
        let mut s = server.sp();
        s.credentials = AzureCredentials::ClientSecret {
            tenant_id: TENANT.into(),
            client_id: APP.into(),
            client_secret: Secret::new("wrong~secret"),
        };
        let err = server.client(s).whoami().await.unwrap_err();
        let text = err.to_string();
        assert_eq!(err.kind(), "auth", "{text}");
        assert!(
            text.contains("invalid_client") && text.contains("AADSTS7000215"),
            "{text}"
        );
        assert!(
            !text.contains("wrong~secret") && !text.contains("Trace ID"),
            "{text}"
        );
        assert_eq!(server.world().count("POST"), 1, "not retried");
    }

    #[tokio::test]
    async fn a_user_assigned_identity_is_selected_by_client_id() {
        let server = Server::start(World::new()).await;
        let mut s = server.settings(AzureCredentials::ManagedIdentity {
            client_id: Some(APP.into()),
        });
        s.vm_name = Some("vm-c".into());
        let me = server.client(s).whoami().await.unwrap();
        assert_eq!(me.id, id("vm-c"), "the configured name wins over IMDS");
        {
            let w = server.world();
            assert_eq!(
            w.count(&format!(
                "GET /metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fmanagement.azure.com%2F&client_id={APP}"
            )),
            1,
            "{:#?}",
            w.lines()
        );
        }

        let mut s = server.settings(AzureCredentials::ManagedIdentity {
            client_id: Some("00000000-0000-4000-8000-00000000dead".into()),
        });
        s.subscription = Some(SUB.into());
        s.resource_group = Some(RG.into());
        s.vm_name = Some("vm-a".into());
        let err = server.client(s).whoami().await.unwrap_err();
        assert_eq!(err.kind(), "auth", "{err}");
        assert!(err.to_string().contains("Identity not found"), "{err}");
    }

    #[tokio::test]
    async fn imds_updating_is_waited_for() {
        let mut world = World::new();
        world.fault("GET /metadata/instance", 410, &[], "", 1);
        world.fault("GET /metadata/identity", 404, &[], "", 1);
        let server = Server::start(world).await;
        let client =
            server.client(server.settings(AzureCredentials::ManagedIdentity { client_id: None }));
        assert_eq!(client.whoami().await.unwrap().id, id("vm-a"));
        assert_eq!(server.world().count("GET /metadata/"), 4);
    }

    #[tokio::test]
    async fn peers_by_security_group_or_tag() {
        let server = Server::start(World::new()).await;
        let client = server.client(server.sp());
        let peers = client.peers("nsg-web", &id("vm-b")).await.unwrap();
        assert_eq!(peers.len(), 1, "{peers:?}");
        assert_eq!(peers[0].id, id("vm-a"));
        assert_eq!(
            peers[0].addresses,
            vec![ip("192.0.2.4")],
            "not the secondary address"
        );
        let peers = client.peers("NSG-DB", &id("vm-b")).await.unwrap();
        let ids: Vec<_> = peers.iter().map(|p| p.id.0.as_str()).collect();
        assert_eq!(ids, vec!["vm-c", "vm-d"]);
        let full = net_id("networkSecurityGroups", "nsg-db");
        assert_eq!(client.peers(&full, &id("vm-c")).await.unwrap().len(), 1);
        let err = client.peers("nsg-typo", &id("vm-b")).await.unwrap_err();
        assert_eq!(err.kind(), "not_found", "{err}");

        let mut s = server.sp();
        s.peer_tag = Some(("exoip-group".into(), "web".into()));
        let peers = server
            .client(s)
            .peers("ignored", &id("VM-B"))
            .await
            .unwrap();
        let ids: Vec<_> = peers.iter().map(|p| p.id.0.as_str()).collect();
        assert_eq!(ids, vec!["vm-a", "vm-c"], "me excluded whatever the case");
    }

    #[tokio::test]
    async fn holders_follow_the_public_ip_back_reference() {
        let server = Server::start(World::new()).await;
        let client = server.client(server.sp());
        assert_eq!(client.holders(ip(VIP)).await.unwrap(), vec![id("vm-a")]);
        assert_eq!(
            client.holders(ip("203.0.113.49")).await.unwrap(),
            Vec::<InstanceId>::new()
        );
        let err = client.holders(ip("203.0.113.77")).await.unwrap_err();
        assert_eq!(err.kind(), "not_found");
        assert!(err.to_string().contains("203.0.113.77"), "{err}");
        // The address → resource cache: one list, then GETs of the resource.
        client.holders(ip(VIP)).await.unwrap();
        let w = server.world();
        assert_eq!(
            w.count(&format!(
                "GET {}/providers/Microsoft.Network/publicIPAddresses?",
                rg_id()
            )),
            2,
            "the unknown address needed a second list: {:#?}",
            w.lines()
        );
        assert_eq!(
            w.count(&format!("GET {}?", net_id("publicIPAddresses", "pip-vip"))),
            1
        );
    }

    #[tokio::test]
    async fn without_a_public_ip_list_the_nics_references_are_searched() {
        let mut world = World::new();
        world.pip_list = false;
        let server = Server::start(world).await;
        let client = server.client(server.sp());
        assert_eq!(client.holders(ip(VIP)).await.unwrap(), vec![id("vm-a")]);
        let mut s = server.sp();
        s.public_ip_name = Some("pip-vip".into());
        let named = server.client(s);
        assert_eq!(named.holders(ip(VIP)).await.unwrap(), vec![id("vm-a")]);
        let err = named.holders(ip("203.0.113.49")).await.unwrap_err();
        assert_eq!(err.kind(), "invalid", "{err}");
    }

    /// The move of azure.md §4: the holder's NIC PUT back whole without the public IP, its
    /// operation polled to the end, then ours PUT with it; `If-Match` on both.
    #[tokio::test]
    async fn a_public_ip_moves_with_two_whole_nic_puts() {
        let server = Server::start(World::new()).await;
        let (before_a, before_b) = {
            let w = server.world();
            (w.nic("nic-a").clone(), w.nic("nic-b").clone())
        };
        let client = server.client(server.sp());
        let started = Instant::now();
        client.attach(ip(VIP), &id("vm-b")).await.unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "Retry-After: 10 is capped at poll_max"
        );

        check_public_ip_move(&server.world(), &before_a, &before_b);
        assert_eq!(client.holders(ip(VIP)).await.unwrap(), vec![id("vm-b")]);
    }

    fn check_public_ip_move(w: &World, before_a: &Value, before_b: &Value) {
        let lines = w.lines();
        let puts = w.puts();
        assert_eq!(puts.len(), 2, "{lines:#?}");
        assert_eq!(
            puts[0].line,
            format!("PUT {}?api-version={API}", nic_id("nic-a"))
        );
        assert_eq!(puts[0].if_match.as_deref(), Some("W/\"nic-a-1\""));
        assert_eq!(puts[0].content_type.as_deref(), Some("application/json"));
        let mut expected = without_read_only(before_a);
        expected["properties"]["ipConfigurations"][0]["properties"]
            .as_object_mut()
            .unwrap()
            .remove("publicIPAddress");
        assert_eq!(json_of(puts[0]), expected, "only the public IP is gone");

        assert_eq!(
            puts[1].line,
            format!("PUT {}?api-version={API}", nic_id("nic-b"))
        );
        assert_eq!(puts[1].if_match.as_deref(), Some("W/\"nic-b-1\""));
        let mut expected = without_read_only(before_b);
        expected["properties"]["ipConfigurations"][0]["properties"]["publicIPAddress"] =
            json!({"id": net_id("publicIPAddresses", "pip-vip")});
        assert_eq!(json_of(puts[1]), expected, "only the public IP is added");

        // The first operation was polled to Succeeded before nic-b was even read.
        let at = |needle: &str| lines.iter().position(|l| l.starts_with(needle)).unwrap();
        let put_a = at(&format!("PUT {}", nic_id("nic-a")));
        let get_b = at(&format!("GET {}", nic_id("nic-b")));
        let polls_a: Vec<&String> = lines[put_a..get_b]
            .iter()
            .filter(|l| l.contains("/operations/op-1?api-version="))
            .collect();
        assert_eq!(
            polls_a.len(),
            3,
            "InProgress, InProgress, Succeeded: {lines:#?}"
        );
        assert_eq!(
            w.count("GET /subscriptions/") - w.count(&format!("GET {}", rg_id())),
            6,
            "3 polls per operation"
        );
        assert_eq!(w.holder_vm("pip-vip").as_deref(), Some("vm-b"));
        // Verified with the public IP's back-reference at the end.
        assert!(lines
            .last()
            .unwrap()
            .starts_with(&format!("GET {}?", net_id("publicIPAddresses", "pip-vip"))));
    }

    #[tokio::test]
    async fn attaching_where_attached_and_detaching_elsewhere_change_nothing() {
        let server = Server::start(World::new()).await;
        let client = server.client(server.sp());
        client.attach(ip(VIP), &id("vm-a")).await.unwrap();
        client.attach(ip(VIP), &id("VM-A")).await.unwrap();
        client.detach(ip(VIP), &id("vm-b")).await.unwrap();
        assert_eq!(
            server.world().puts().len(),
            0,
            "{:#?}",
            server.world().lines()
        );

        client.detach(ip(VIP), &id("vm-a")).await.unwrap();
        {
            let w = server.world();
            assert_eq!(w.puts().len(), 1);
            assert_eq!(w.holder_vm("pip-vip"), None);
        }
        assert!(client.holders(ip(VIP)).await.unwrap().is_empty());
        // Nobody holds it: attaching is one PUT.
        client.attach(ip(VIP), &id("vm-b")).await.unwrap();
        let w = server.world();
        assert_eq!(w.puts().len(), 2);
        assert_eq!(w.holder_vm("pip-vip").as_deref(), Some("vm-b"));
    }

    #[tokio::test]
    async fn an_ip_config_can_be_chosen() {
        let server = Server::start(World::new()).await;
        let mut s = server.sp();
        s.ip_config = Some("missing".into());
        let err = server
            .client(s)
            .attach(ip(VIP), &id("vm-b"))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), "not_found", "{err}");
        assert_eq!(
            server.world().puts().len(),
            0,
            "nothing detached for nothing"
        );
        let mut s = server.sp();
        s.ip_config = Some("IPCONFIG1".into());
        server.client(s).attach(ip(VIP), &id("vm-b")).await.unwrap();
        assert_eq!(server.world().holder_vm("pip-vip").as_deref(), Some("vm-b"));
    }

    #[tokio::test]
    async fn a_stale_etag_is_a_conflict_and_a_fresh_read_fixes_it() {
        let mut world = World::new();
        world.race_on = Some("nic-a".into());
        let server = Server::start(world).await;
        let client = server.client(server.sp());
        let err = client.attach(ip(VIP), &id("vm-b")).await.unwrap_err();
        assert_eq!(err.kind(), "conflict", "{err}");
        assert!(
            err.to_string().contains("PreconditionFailedEtagMismatch"),
            "{err}"
        );
        assert_eq!(server.world().holder_vm("pip-vip").as_deref(), Some("vm-a"));
        client.attach(ip(VIP), &id("vm-b")).await.unwrap();
        let w = server.world();
        let puts = w.puts();
        assert_eq!(puts.len(), 3);
        assert_eq!(puts[1].if_match.as_deref(), Some("W/\"nic-a-raced\""));
        assert_eq!(w.holder_vm("pip-vip").as_deref(), Some("vm-b"));
    }

    #[tokio::test]
    async fn busy_and_throttled_puts_wait_as_told() {
        let mut world = World::new();
        let put_a = format!("PUT {}", nic_id("nic-a"));
        world.fault(
        &put_a,
        409,
        &[("retry-after-ms", "30")],
        r#"{"error":{"code":"AnotherOperationInProgress","message":"Another operation on this or dependent resource is in progress."}}"#,
        1,
    );
        world.fault(
            &format!("PUT {}", nic_id("nic-b")),
            429,
            &[("retry-after", "0")],
            r#"{"error":{"code":"RetryableErrorDueToAnotherOperation","message":"later"}}"#,
            1,
        );
        let server = Server::start(world).await;
        let client = server.client(server.sp());
        client.attach(ip(VIP), &id("vm-b")).await.unwrap();
        {
            let w = server.world();
            assert_eq!(w.puts().len(), 4, "{:#?}", w.lines());
            assert!(w.puts().iter().all(|p| p.if_match.is_some()));
            assert_eq!(w.holder_vm("pip-vip").as_deref(), Some("vm-b"));
        }

        // Busy for longer than the retries: RateLimited with the server's wait.
        server.world().fault(
            &put_a,
            409,
            &[("retry-after-ms", "20")],
            r#"{"error":{"code":"AnotherOperationInProgress","message":"busy"}}"#,
            10,
        );
        let err = client.attach(ip(VIP), &id("vm-a")).await.unwrap_err();
        match err {
            Error::RateLimited {
                retry_after,
                message,
            } => {
                assert!(message.contains("AnotherOperationInProgress"), "{message}");
                assert_eq!(retry_after, Some(Duration::from_millis(20)));
            }
            other => panic!("{other:?}"),
        }
    }

    /// The detaching PUT applied but its answer was lost: the retried PUT is refused (stale
    /// etag), and the next attempt waits for the change already under way instead of racing it.
    #[tokio::test]
    async fn a_lost_answer_is_a_conflict_then_the_change_under_way_is_awaited() {
        let mut world = World::new();
        world.lose_response = Some("nic-a".into());
        let server = Server::start(world).await;
        let client = server.client(server.sp());
        let err = client.attach(ip(VIP), &id("vm-b")).await.unwrap_err();
        assert_eq!(err.kind(), "conflict", "{err}");
        assert!(err.to_string().contains("PreconditionFailed"), "{err}");
        client.attach(ip(VIP), &id("vm-b")).await.unwrap();
        let w = server.world();
        let puts: Vec<&str> = w.puts().iter().map(|p| p.line.as_str()).collect();
        let (a, b) = (
            format!("PUT {}?api-version={API}", nic_id("nic-a")),
            format!("PUT {}?api-version={API}", nic_id("nic-b")),
        );
        assert_eq!(
            puts,
            vec![a.as_str(), a.as_str(), b.as_str()],
            "{:#?}",
            w.lines()
        );
        assert_eq!(w.holder_vm("pip-vip").as_deref(), Some("vm-b"));
    }

    #[tokio::test]
    async fn a_failed_operation_is_retryable_with_its_code() {
        let mut world = World::new();
        world.fail_next = Some(("InternalServerError", "An error occurred."));
        let server = Server::start(world).await;
        let client = server.client(server.sp());
        let err = client.attach(ip(VIP), &id("vm-b")).await.unwrap_err();
        assert_eq!(err.kind(), "retryable", "{err}");
        assert!(
            err.to_string()
                .contains("InternalServerError: An error occurred."),
            "{err}"
        );
        assert_eq!(
            server.world().puts().len(),
            1,
            "no attach after a failed detach"
        );
        // The next attempt reads the state afresh and goes on.
        client.attach(ip(VIP), &id("vm-b")).await.unwrap();
        assert_eq!(server.world().holder_vm("pip-vip").as_deref(), Some("vm-b"));
    }

    #[tokio::test]
    async fn a_slow_operation_is_bounded_by_the_operation_timeout() {
        let mut world = World::new();
        world.polls = 1_000_000;
        let server = Server::start(world).await;
        let mut s = server.sp();
        s.operation_timeout = Duration::from_millis(600);
        let started = Instant::now();
        let err = server
            .client(s)
            .attach(ip(VIP), &id("vm-b"))
            .await
            .unwrap_err();
        let took = started.elapsed();
        assert_eq!(err.kind(), "retryable", "{err}");
        assert!(
            err.to_string().contains("still running") && err.to_string().contains("InProgress"),
            "{err}"
        );
        assert!(took < Duration::from_millis(1500), "{took:?}");
    }

    #[tokio::test]
    async fn in_use_right_after_our_release_is_retried_but_not_otherwise() {
        let mut world = World::new();
        let put_b = format!("PUT {}", nic_id("nic-b"));
        world.fault(
        &put_b,
        400,
        &[],
        r#"{"error":{"code":"PublicIPAddressInUse","message":"Resource … is referencing public IP address … that is already allocated to resource …"}}"#,
        1,
    );
        let server = Server::start(world).await;
        let client = server.client(server.sp());
        client.attach(ip(VIP), &id("vm-b")).await.unwrap();
        assert_eq!(server.world().holder_vm("pip-vip").as_deref(), Some("vm-b"));

        // Now nobody but ARM thinks it is in use: not ours to wait for.
        client.detach(ip(VIP), &id("vm-b")).await.unwrap();
        server.world().fault(
            &put_b,
            400,
            &[],
            r#"{"error":{"code":"PublicIPAddressInUse","message":"in use"}}"#,
            1,
        );
        let err = client.attach(ip(VIP), &id("vm-b")).await.unwrap_err();
        assert_eq!(err.kind(), "conflict", "{err}");
    }

    #[tokio::test]
    async fn a_revoked_token_is_replaced_once() {
        let server = Server::start(World::new()).await;
        let client = server.client(server.sp());
        client.whoami().await.unwrap();
        server.world().tokens.clear(); // revoked: ARM answers 401
        client.holders(ip(VIP)).await.unwrap();
        {
            let w = server.world();
            assert_eq!(w.count("POST"), 2, "{:#?}", w.lines());
            let unauthorized = w
                .log
                .iter()
                .filter(|l| l.authorization.as_deref() == Some("Bearer entra-1"))
                .count();
            assert_eq!(unauthorized, 4, "3 pages, then one refused request");
        }
        // A token ARM keeps refusing is an auth error, after exactly one renewal.
        server.world().reject_all = true;
        let err = client.holders(ip(VIP)).await.unwrap_err();
        assert_eq!(err.kind(), "auth", "{err}");
        assert_eq!(server.world().count("POST"), 3);
    }

    #[tokio::test]
    async fn short_lived_tokens_are_renewed_early_and_fetched_once_at_a_time() {
        let mut world = World::new();
        world.token_lifetime = 2;
        let server = Server::start(world).await;
        let client = Arc::new(server.client(server.sp()));
        let calls: Vec<_> = (0..6)
            .map(|_| {
                let c = client.clone();
                tokio::spawn(async move { c.whoami().await })
            })
            .collect();
        for call in calls {
            call.await.unwrap().unwrap();
        }
        assert_eq!(
            server.world().count("POST"),
            1,
            "concurrent callers share one request"
        );
        client.whoami().await.unwrap();
        assert_eq!(server.world().count("POST"), 1);
        // Renewed at half its lifetime, before ARM would refuse it.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        client.whoami().await.unwrap();
        let w = server.world();
        assert_eq!(w.count("POST"), 2);
        assert_eq!(w.refused, 0, "no request went out with an expired token");
    }

    #[tokio::test]
    async fn a_secondary_ip_configuration_moves_whole() {
        let server = Server::start(World::new()).await;
        let (before_a, before_b) = {
            let w = server.world();
            (w.nic("nic-a").clone(), w.nic("nic-b").clone())
        };
        let mut s = server.sp();
        s.mode = AzureMode::SecondaryIp;
        let client = server.client(s);
        assert_eq!(
            client.holders(ip(SECONDARY)).await.unwrap(),
            vec![id("vm-a")]
        );
        client.attach(ip(SECONDARY), &id("vm-b")).await.unwrap();

        check_secondary_move(&server.world(), &before_a, &before_b);
        assert_eq!(
            client.holders(ip(SECONDARY)).await.unwrap(),
            vec![id("vm-b")]
        );
        check_secondary_round_trip(&server, &client).await;
    }

    fn check_secondary_move(w: &World, before_a: &Value, before_b: &Value) {
        let puts = w.puts();
        assert_eq!(puts.len(), 2, "{:#?}", w.lines());
        assert_eq!(
            puts[0].line,
            format!("PUT {}?api-version={API}", nic_id("nic-a"))
        );
        assert_eq!(puts[0].if_match.as_deref(), Some("W/\"nic-a-1\""));
        let mut expected = without_read_only(before_a);
        expected["properties"]["ipConfigurations"]
            .as_array_mut()
            .unwrap()
            .remove(1);
        assert_eq!(json_of(puts[0]), expected);

        assert_eq!(
            puts[1].line,
            format!("PUT {}?api-version={API}", nic_id("nic-b"))
        );
        assert_eq!(puts[1].if_match.as_deref(), Some("W/\"nic-b-1\""));
        let mut expected = without_read_only(before_b);
        expected["properties"]["ipConfigurations"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "vip", "properties": {
            "privateIPAddress": SECONDARY, "privateIPAllocationMethod": "Static",
            "privateIPAddressVersion": "IPv4", "primary": false,
            "subnet": {"id": subnet_id()},
            "applicationSecurityGroups": [{"id": net_id("applicationSecurityGroups", "asg-vip")}],
            "publicIPAddress": {"id": net_id("publicIPAddresses", "pip-secondary")}}}));
        assert_eq!(
            json_of(puts[1]),
            expected,
            "freshly built: no foreign id or etag"
        );
        assert_eq!(w.holder_vm("pip-secondary").as_deref(), Some("vm-b"));
    }

    async fn check_secondary_round_trip(server: &Server, client: &Azure) {
        // Detaching elsewhere is a no-op; from the holder, one PUT; then attach rebuilds it from
        // what was seen, and the primary address never moves.
        client.detach(ip(SECONDARY), &id("vm-a")).await.unwrap();
        assert_eq!(server.world().puts().len(), 2);
        client.detach(ip(SECONDARY), &id("vm-b")).await.unwrap();
        assert!(client.holders(ip(SECONDARY)).await.unwrap().is_empty());
        client.attach(ip(SECONDARY), &id("vm-a")).await.unwrap();
        {
            let w = server.world();
            assert_eq!(w.puts().len(), 4);
            let last = json_of(w.puts()[3]);
            assert_eq!(last["properties"]["ipConfigurations"][1]["name"], "vip");
            assert_eq!(w.holder_vm("pip-secondary").as_deref(), Some("vm-a"));
        }
        let err = client
            .attach(ip("192.0.2.5"), &id("vm-a"))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), "invalid", "{err}");
    }

    #[tokio::test]
    async fn a_private_address_still_releasing_is_waited_for() {
        let mut world = World::new();
        world.fault(
            &format!("PUT {}", nic_id("nic-b")),
            400,
            &[],
            r#"{"error":{"code":"PrivateIPAddressIsBeingCleanedUp","message":"later"}}"#,
            2,
        );
        let server = Server::start(world).await;
        let mut s = server.sp();
        s.mode = AzureMode::SecondaryIp;
        server
            .client(s)
            .attach(ip(SECONDARY), &id("vm-b"))
            .await
            .unwrap();
        assert_eq!(server.world().puts().len(), 4);
    }

    #[tokio::test]
    async fn lb_probe_mode_makes_no_arm_call_at_failover() {
        let server = Server::start(World::new()).await;
        let mut s = server.sp();
        s.mode = AzureMode::LbProbe;
        let client = server.client(s);
        assert_eq!(client.whoami().await.unwrap().id, id("vm-b"));
        assert_eq!(client.peers("nsg-web", &id("vm-b")).await.unwrap().len(), 1);
        let before = server.world().log.len();
        for err in [
            client.holders(ip(VIP)).await.unwrap_err(),
            client.attach(ip(VIP), &id("vm-b")).await.unwrap_err(),
            client.detach(ip(VIP), &id("vm-a")).await.unwrap_err(),
        ] {
            assert_eq!(err.kind(), "invalid");
            assert!(
                err.to_string()
                    .contains("not available in Azure lb-probe mode"),
                "{err}"
            );
        }
        assert_eq!(server.world().log.len(), before);
    }

    #[tokio::test]
    async fn malformed_answers_are_invalid_not_panics() {
        let mut world = World::new();
        let list = format!(
            "GET {}/providers/Microsoft.Network/networkInterfaces?",
            rg_id()
        );
        world.fault(
            &list,
            200,
            &[("content-type", "application/json")],
            "{not json",
            1,
        );
        world.fault(&list, 200, &[], r#"{"value": {"oops": 1}}"#, 1);
        world.fault(&list, 200, &[], r#"[1, 2]"#, 1);
        world.fault(
            "POST",
            200,
            &[],
            r#"{"token_type":"Bearer","expires_in":"soon","access_token":"tok"}"#,
            1,
        );
        let server = Server::start(world).await;
        let client = server.client(server.sp());
        let err = client.whoami().await.unwrap_err();
        assert_eq!(err.kind(), "invalid", "{err}");
        assert!(err.to_string().contains("expires"), "{err}");
        assert!(!err.to_string().contains("tok\""), "{err}");
        for _ in 0..3 {
            let err = client.whoami().await.unwrap_err();
            assert_eq!(err.kind(), "invalid", "{err}");
        }
        client.whoami().await.unwrap();
    }

    #[tokio::test]
    async fn arm_errors_are_classified() {
        let mut world = World::new();
        let list = format!(
            "GET {}/providers/Microsoft.Network/networkInterfaces?",
            rg_id()
        );
        world.fault(&list, 403, &[], r#"{"error":{"code":"AuthorizationFailed","message":"The client does not have authorization to perform action 'Microsoft.Network/networkInterfaces/read'."}}"#, 1);
        world.fault(&list, 404, &[], r#"{"error":{"code":"ResourceGroupNotFound","message":"Resource group 'rg-ha' could not be found."}}"#, 1);
        world.fault(&list, 503, &[], "", 10);
        let server = Server::start(world).await;
        let client = server.client(server.sp());
        let err = client.whoami().await.unwrap_err();
        assert_eq!(err.kind(), "auth", "{err}");
        assert!(
            err.to_string().contains("AuthorizationFailed") && err.to_string().contains(APP),
            "{err}"
        );
        let err = client.whoami().await.unwrap_err();
        assert_eq!(err.kind(), "not_found", "{err}");
        let err = client.whoami().await.unwrap_err();
        assert_eq!(err.kind(), "retryable", "{err}");
    }
}
