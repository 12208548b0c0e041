//! ARM Microsoft.Network JSON (shared/clouds/azure.md §3–§8): reading NICs and public IPs,
//! editing a NIC for a whole-NIC PUT, resource ids, long-running operation states and error
//! bodies.
//!
//! NICs stay `serde_json::Value` from GET to PUT: a PUT resets whatever its body omits (F5 lost
//! NSGs that way), so the body is the GET minus exactly the read-only fields azure.md §3.2 names,
//! with only the intended change applied. Fields this code has never heard of survive untouched.

use std::net::IpAddr;
use std::time::SystemTime;

use reqwest::header::HeaderMap;
use serde_json::{json, Map, Value};

use crate::http::StatusCode;
use crate::Error;

/// Top-level NIC fields that are read-only (the Python SDK strips exactly these).
const READ_ONLY_TOP: [&str; 2] = ["etag", "type"];
/// Read-only fields of a NIC's `properties`.
const READ_ONLY_PROPERTIES: [&str; 5] = [
    "provisioningState",
    "macAddress",
    "virtualMachine",
    "resourceGuid",
    "primary",
];

// ----- resource ids -----------------------------------------------------------------------

/// The last path segment of an ARM id (`…/virtualMachines/vm-a` → `vm-a`).
pub fn last_segment(id: &str) -> &str {
    id.trim_end_matches('/').rsplit('/').next().unwrap_or("")
}

/// The NIC id of an ipConfiguration id (the path before `/ipConfigurations/`), if it is one.
pub fn nic_of_ip_config(id: &str) -> Option<&str> {
    let lower = id.to_ascii_lowercase();
    let at = lower.find("/providers/microsoft.network/networkinterfaces/")?;
    let cut = lower[at..].find("/ipconfigurations/")? + at;
    Some(&id[..cut])
}

/// ARM ids and names compare case-insensitively.
pub fn same_id(a: &str, b: &str) -> bool {
    a.trim_end_matches('/')
        .eq_ignore_ascii_case(b.trim_end_matches('/'))
}

/// Checks a name that goes into a request path as one segment.
pub fn check_name(kind: &str, name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 260
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c.is_control() || matches!(c, '/' | '\\' | '?' | '#' | '%'));
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "{kind} {name:?} is not a valid Azure name"
        )))
    }
}

/// Checks an ARM id read from a response before it becomes a request path: an absolute
/// `/subscriptions/…` path of plain segments, nothing that could change the URL's meaning.
pub fn check_id(id: &str) -> Result<(), Error> {
    let ok = id.len() <= 2048
        && id
            .get(..15)
            .is_some_and(|p| p.eq_ignore_ascii_case("/subscriptions/"))
        && id.trim_end_matches('/')[1..].split('/').count() >= 2
        && id.trim_end_matches('/')[1..]
            .split('/')
            .all(|s| check_name("segment", s).is_ok());
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "{id:?} is not a valid ARM resource id"
        )))
    }
}

// ----- reading ----------------------------------------------------------------------------

pub fn text<'a>(value: &'a Value, pointer: &str) -> Option<&'a str> {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

pub fn flag(value: &Value, pointer: &str) -> bool {
    value.pointer(pointer).and_then(Value::as_bool) == Some(true)
}

pub fn ip_configs(nic: &Value) -> &[Value] {
    nic.pointer("/properties/ipConfigurations")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// The name of the VM a NIC belongs to, from `properties.virtualMachine.id`.
pub fn nic_vm(nic: &Value) -> Option<&str> {
    text(nic, "/properties/virtualMachine/id")
        .map(last_segment)
        .filter(|s| !s.is_empty())
}

pub fn config_ip(config: &Value) -> Option<IpAddr> {
    text(config, "/properties/privateIPAddress").and_then(|s| s.parse().ok())
}

pub fn config_public_ip(config: &Value) -> Option<&str> {
    text(config, "/properties/publicIPAddress/id")
}

pub fn config_name(config: &Value) -> Option<&str> {
    text(config, "/name").or_else(|| text(config, "/id").map(last_segment))
}

/// The NIC's primary ipConfiguration: the one flagged `primary`, else the only one.
pub fn primary_config(nic: &Value) -> Option<&Value> {
    let configs = ip_configs(nic);
    configs
        .iter()
        .find(|c| flag(c, "/properties/primary"))
        .or(match configs {
            [only] => Some(only),
            _ => None,
        })
}

pub fn find_config<'a>(nic: &'a Value, name: &str) -> Option<&'a Value> {
    ip_configs(nic)
        .iter()
        .find(|c| config_name(c).is_some_and(|n| n.eq_ignore_ascii_case(name)))
}

/// The etag to send as `If-Match`: the `ETag` header, else the body's `etag`.
pub fn etag(headers: &HeaderMap, body: &Value) -> Option<String> {
    headers
        .get(reqwest::header::ETAG)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .or_else(|| text(body, "/etag"))
        .map(str::to_string)
}

// ----- building PUT bodies ----------------------------------------------------------------

/// The body of a PUT that changes nothing: the GET without its read-only fields.
pub fn put_body(nic: &Value) -> Result<Value, Error> {
    let mut body = nic.clone();
    let top = body
        .as_object_mut()
        .ok_or_else(|| Error::Invalid("a network interface is not a JSON object".into()))?;
    for key in READ_ONLY_TOP {
        top.remove(key);
    }
    let properties = top
        .get_mut("properties")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| Error::Invalid("a network interface has no properties".into()))?;
    for key in READ_ONLY_PROPERTIES {
        properties.remove(key);
    }
    Ok(body)
}

/// Read-only fields of a public IP's `properties` (the Python SDK's model marks them so).
const PIP_READ_ONLY_PROPERTIES: [&str; 3] =
    ["provisioningState", "resourceGuid", "ipConfiguration"];

/// The body of a public IP PUT that changes nothing: the GET without its read-only fields.
pub fn pip_put_body(pip: &Value) -> Result<Value, Error> {
    let mut body = pip.clone();
    let top = body
        .as_object_mut()
        .ok_or_else(|| Error::Invalid("a public IP is not a JSON object".into()))?;
    for key in READ_ONLY_TOP {
        top.remove(key);
    }
    if let Some(properties) = top.get_mut("properties").and_then(Value::as_object_mut) {
        for key in PIP_READ_ONLY_PROPERTIES {
            properties.remove(key);
        }
    }
    Ok(body)
}

/// A resource's tag, if it is a string.
pub fn tag<'a>(resource: &'a Value, key: &str) -> Option<&'a str> {
    resource.get("tags")?.get(key)?.as_str()
}

/// Sets tags on a PUT body, keeping every other tag.
pub fn set_tags(body: &mut Value, tags: &[(String, String)]) -> Result<(), Error> {
    let top = body
        .as_object_mut()
        .ok_or_else(|| Error::Invalid("a resource is not a JSON object".into()))?;
    let entry = top
        .entry("tags")
        .or_insert_with(|| Value::Object(Map::new()));
    if entry.is_null() {
        *entry = Value::Object(Map::new());
    }
    let map = entry
        .as_object_mut()
        .ok_or_else(|| Error::Invalid("a resource's tags are not a JSON object".into()))?;
    for (key, value) in tags {
        map.insert(key.clone(), Value::String(value.clone()));
    }
    Ok(())
}

fn configs_mut(body: &mut Value) -> Result<&mut Vec<Value>, Error> {
    body.pointer_mut("/properties/ipConfigurations")
        .and_then(Value::as_array_mut)
        .ok_or_else(|| Error::Invalid("a network interface has no ipConfigurations".into()))
}

fn config_mut<'a>(body: &'a mut Value, name: &str) -> Result<&'a mut Map<String, Value>, Error> {
    configs_mut(body)?
        .iter_mut()
        .find(|c| config_name(c).is_some_and(|n| n.eq_ignore_ascii_case(name)))
        .and_then(|c| c.get_mut("properties"))
        .and_then(Value::as_object_mut)
        .ok_or_else(|| Error::NotFound(format!("no ipConfiguration {name:?} with properties")))
}

/// Removes `publicIPAddress` from ipConfiguration `name`; false when it had none.
pub fn remove_public_ip(body: &mut Value, name: &str) -> Result<bool, Error> {
    Ok(config_mut(body, name)?.remove("publicIPAddress").is_some())
}

/// Puts `publicIPAddress: {id}` on ipConfiguration `name`, which must not carry another one.
pub fn set_public_ip(body: &mut Value, name: &str, pip_id: &str) -> Result<(), Error> {
    let config = config_mut(body, name)?;
    if let Some(other) = config
        .get("publicIPAddress")
        .and_then(|p| p.get("id"))
        .and_then(Value::as_str)
    {
        if !same_id(other, pip_id) {
            return Err(Error::Invalid(format!(
                "ipConfiguration {name:?} already has the public IP {other}; choose another ipConfiguration"
            )));
        }
    }
    config.insert("publicIPAddress".into(), json!({ "id": pip_id }));
    Ok(())
}

/// Removes the ipConfiguration whose private address is `ip` and returns it. The primary
/// configuration never moves, and a NIC keeps at least one (`InvalidIPConfigCount`).
pub fn remove_config_with_ip(body: &mut Value, ip: IpAddr) -> Result<Option<Value>, Error> {
    let configs = configs_mut(body)?;
    let Some(at) = configs.iter().position(|c| config_ip(c) == Some(ip)) else {
        return Ok(None);
    };
    if flag(&configs[at], "/properties/primary") || configs.len() < 2 {
        return Err(Error::Invalid(format!(
            "{ip} is the primary ipConfiguration of its network interface, which cannot move"
        )));
    }
    Ok(Some(configs.remove(at)))
}

pub fn add_config(body: &mut Value, config: Value) -> Result<(), Error> {
    configs_mut(body)?.push(config);
    Ok(())
}

/// What a moving secondary ipConfiguration keeps (azure.md §5): its name, address, public IP
/// and application security groups. Never its `id`/`etag`, which name the other NIC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecondaryTemplate {
    pub name: String,
    pub ip: IpAddr,
    pub public_ip: Option<String>,
    pub application_security_groups: Option<Value>,
}

impl SecondaryTemplate {
    pub fn from_config(config: &Value, ip: IpAddr) -> Option<Self> {
        Some(SecondaryTemplate {
            name: config_name(config)?.to_string(),
            ip,
            public_ip: config_public_ip(config).map(str::to_string),
            application_security_groups: config
                .pointer("/properties/applicationSecurityGroups")
                .filter(|v| v.as_array().is_some_and(|a| !a.is_empty()))
                .cloned(),
        })
    }

    /// A freshly built ipConfiguration in `subnet_id` (the new NIC's primary subnet).
    pub fn build(&self, subnet_id: &str) -> Value {
        let mut properties = json!({
            "privateIPAddress": self.ip.to_string(),
            "privateIPAllocationMethod": "Static",
            "privateIPAddressVersion": if self.ip.is_ipv4() { "IPv4" } else { "IPv6" },
            "primary": false,
            "subnet": { "id": subnet_id },
        });
        if let Some(asgs) = &self.application_security_groups {
            properties["applicationSecurityGroups"] = asgs.clone();
        }
        if let Some(pip) = &self.public_ip {
            properties["publicIPAddress"] = json!({ "id": pip });
        }
        json!({ "name": self.name, "properties": properties })
    }
}

// ----- long-running operations ------------------------------------------------------------

/// Where an operation's outcome is read (azure.md §6).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Poll {
    /// `Azure-AsyncOperation`: `{"status": …}`.
    AsyncOperation(String),
    /// `Location` (only without `Azure-AsyncOperation`): 202 while running, 200/204 when done.
    Location(String),
}

impl Poll {
    pub fn from_headers(headers: &HeaderMap) -> Option<Poll> {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        header("azure-asyncoperation")
            .map(Poll::AsyncOperation)
            .or_else(|| header("location").map(Poll::Location))
    }

    pub fn url(&self) -> &str {
        match self {
            Poll::AsyncOperation(u) | Poll::Location(u) => u,
        }
    }
}

/// A provisioning or operation state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    Succeeded,
    /// `Failed` or `Canceled`, with the error's code and message when given.
    Failed(String),
    /// Anything else (`InProgress`, `Updating`, …): not terminal.
    Running(String),
}

pub fn parse_state(status: &str, error: Option<&Value>) -> State {
    match status.to_ascii_lowercase().as_str() {
        "succeeded" => State::Succeeded,
        "failed" | "canceled" | "cancelled" => {
            let detail = error.map(describe_error).unwrap_or_default();
            State::Failed(if detail.is_empty() {
                status.to_string()
            } else {
                format!("{status}: {detail}")
            })
        }
        _ => State::Running(status.to_string()),
    }
}

/// The state of an `Azure-AsyncOperation` answer.
pub fn operation_state(body: &Value) -> Result<State, String> {
    let status = text(body, "/status").ok_or("the operation has no status")?;
    Ok(parse_state(status, body.get("error")))
}

/// A resource's `properties.provisioningState`; none at all means finished and succeeded.
pub fn provisioning_state(resource: &Value) -> State {
    match text(resource, "/properties/provisioningState") {
        None => State::Succeeded,
        Some(s) => parse_state(s, None),
    }
}

// ----- errors -----------------------------------------------------------------------------

/// `code: message` of an ARM error object (`{"code","message","details"}`), with the first
/// detail's code when it says more (`PreconditionFailedEtagMismatch`).
fn describe_error(error: &Value) -> String {
    let code = text(error, "/code");
    let message = text(error, "/message").map(clip);
    let detail = text(error, "/details/0/code").filter(|d| Some(*d) != code);
    let mut out = match (code, message) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c.to_string(),
        (None, Some(m)) => m,
        (None, None) => String::new(),
    };
    if let Some(d) = detail {
        out.push_str(&format!(" ({d})"));
    }
    out
}

fn clip(text: &str) -> String {
    const MAX: usize = 400;
    let mut out: String = text
        .chars()
        .take(MAX)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().nth(MAX).is_some() {
        out.push('…');
    }
    out
}

/// The `error.code` of an ARM error body (also accepts a bare `{"code"}`).
pub fn error_code(body: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    text(&value, "/error/code")
        .or_else(|| text(&value, "/code"))
        .map(str::to_string)
}

/// Codes that mean "the address is still held elsewhere": wait for the release, re-decide.
pub fn is_in_use(code: &str) -> bool {
    matches!(
        code,
        "PublicIPAddressInUse" | "PrivateIPAddressInUse" | "PrivateIPAddressIsBeingCleanedUp"
    )
}

/// Maps a final ARM error answer onto the taxonomy (azure.md §8).
pub fn arm_error(what: &str, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Error {
    let value: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let error = value
        .get("error")
        .filter(|e| e.is_object())
        .unwrap_or(&value);
    let described = describe_error(error);
    let code = text(error, "/code").unwrap_or("");
    let message = format!(
        "{what}: HTTP {}: {}",
        status.as_u16(),
        if described.is_empty() {
            crate::http::error_message(body)
        } else {
            described
        }
    );
    let retry_after = || crate::http::header_retry_after(headers, SystemTime::now());
    match (status.as_u16(), code) {
        (_, "PublicIPAddressInUse" | "PrivateIPAddressInUse") => Error::Conflict(message),
        (_, "PrivateIPAddressIsBeingCleanedUp") => Error::Retryable(message),
        (
            _,
            "AnotherOperationInProgress" | "RetryableError" | "RetryableErrorDueToAnotherOperation",
        )
        | (429, _) => Error::RateLimited {
            retry_after: retry_after(),
            message,
        },
        (401 | 403, _) => Error::Auth(message),
        (404 | 410, _) => Error::NotFound(message),
        (409 | 412, _) => Error::Conflict(message),
        (408 | 500..=599, _) if status.as_u16() != 501 => Error::Retryable(message),
        _ => Error::Invalid(message),
    }
}

/// Whether an ARM answer asks us to send the same request again later: 409
/// `AnotherOperationInProgress` and friends (429 is already retried by the HTTP layer).
pub fn is_busy(status: StatusCode, body: &[u8]) -> bool {
    status.is_client_error()
        && error_code(body).is_some_and(|code| {
            matches!(
                code.as_str(),
                "AnotherOperationInProgress"
                    | "RetryableError"
                    | "RetryableErrorDueToAnotherOperation"
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;
    use std::time::Duration;

    const SUB: &str = "/subscriptions/8d10da13-8125-4ba9-a717-bf7490507b3d/resourceGroups/rg-ha";

    /// A NIC as GET returns it, with writable fields an emulator might forget and fields this
    /// code has never heard of.
    fn nic() -> Value {
        json!({
            "name": "nic-a",
            "id": format!("{SUB}/providers/Microsoft.Network/networkInterfaces/nic-a"),
            "etag": "W/\"80b1\"",
            "type": "Microsoft.Network/networkInterfaces",
            "location": "westeurope",
            "tags": {"exoip-group": "web", "owner": "ops"},
            "extendedLocation": {"name": "future", "type": "EdgeZone"},
            "properties": {
                "provisioningState": "Succeeded",
                "resourceGuid": "7a5c-…",
                "macAddress": "00-0D-3A-1B-C7-21",
                "primary": true,
                "virtualMachine": {"id": format!("{SUB}/providers/Microsoft.Compute/virtualMachines/vm-a")},
                "networkSecurityGroup": {"id": format!("{SUB}/providers/Microsoft.Network/networkSecurityGroups/nsg")},
                "dnsSettings": {"dnsServers": ["198.51.100.53"], "appliedDnsServers": []},
                "enableIPForwarding": true,
                "enableAcceleratedNetworking": true,
                "auxiliaryMode": "None",
                "someFutureSetting": {"nested": [1, 2, {"x": null}]},
                "ipConfigurations": [
                    {"name": "ipconfig1",
                     "id": format!("{SUB}/providers/Microsoft.Network/networkInterfaces/nic-a/ipConfigurations/ipconfig1"),
                     "etag": "W/\"80b1\"",
                     "type": "Microsoft.Network/networkInterfaces/ipConfigurations",
                     "properties": {"provisioningState": "Succeeded", "primary": true,
                        "privateIPAddress": "10.0.0.4", "privateIPAllocationMethod": "Static",
                        "privateIPAddressVersion": "IPv4",
                        "subnet": {"id": format!("{SUB}/providers/Microsoft.Network/virtualNetworks/vnet/subnets/default")},
                        "publicIPAddress": {"id": format!("{SUB}/providers/Microsoft.Network/publicIPAddresses/pip-vip")},
                        "loadBalancerBackendAddressPools": [{"id": "/subscriptions/x/lb/pool"}],
                        "applicationSecurityGroups": [{"id": "/subscriptions/x/asg-x"}]}},
                    {"name": "vip",
                     "id": format!("{SUB}/providers/Microsoft.Network/networkInterfaces/nic-a/ipConfigurations/vip"),
                     "etag": "W/\"80b1\"",
                     "properties": {"provisioningState": "Succeeded", "primary": false,
                        "privateIPAddress": "10.0.0.100", "privateIPAllocationMethod": "Static",
                        "subnet": {"id": format!("{SUB}/providers/Microsoft.Network/virtualNetworks/vnet/subnets/default")},
                        "applicationSecurityGroups": [{"id": "/subscriptions/x/asg-y"}],
                        "publicIPAddress": {"id": format!("{SUB}/providers/Microsoft.Network/publicIPAddresses/pip-2")}}}
                ]
            }
        })
    }

    /// The GET without the documented read-only fields: what every PUT must start from.
    fn baseline() -> Value {
        let mut v = nic();
        let o = v.as_object_mut().unwrap();
        o.remove("etag");
        o.remove("type");
        let p = o.get_mut("properties").unwrap().as_object_mut().unwrap();
        for k in [
            "provisioningState",
            "resourceGuid",
            "macAddress",
            "primary",
            "virtualMachine",
        ] {
            p.remove(k);
        }
        v
    }

    #[test]
    fn an_unchanged_put_body_is_the_get_minus_read_only_fields() {
        let body = put_body(&nic()).unwrap();
        assert_eq!(body, baseline());
        // Nested read-only-looking fields of ipConfigurations are left as read.
        assert_eq!(
            body["properties"]["ipConfigurations"],
            nic()["properties"]["ipConfigurations"]
        );
        assert!(put_body(&json!([1])).is_err());
        assert!(put_body(&json!({"name": "x"})).is_err());
    }

    #[test]
    fn removing_a_public_ip_changes_only_that() {
        let mut body = put_body(&nic()).unwrap();
        assert!(remove_public_ip(&mut body, "IPCONFIG1").unwrap());
        let mut expected = baseline();
        expected["properties"]["ipConfigurations"][0]["properties"]
            .as_object_mut()
            .unwrap()
            .remove("publicIPAddress");
        assert_eq!(body, expected);
        assert!(
            !remove_public_ip(&mut body, "ipconfig1").unwrap(),
            "already gone"
        );
        assert_eq!(
            remove_public_ip(&mut body, "nope").unwrap_err().kind(),
            "not_found"
        );
    }

    #[test]
    fn setting_a_public_ip_changes_only_that() {
        let pip = format!("{SUB}/providers/Microsoft.Network/publicIPAddresses/pip-vip");
        let mut body = put_body(&nic()).unwrap();
        remove_public_ip(&mut body, "ipconfig1").unwrap();
        set_public_ip(&mut body, "ipconfig1", &pip).unwrap();
        assert_eq!(body, baseline());
        // The same address again is fine, another one would silently detach it: refused.
        set_public_ip(&mut body, "ipconfig1", &pip.to_uppercase()).unwrap();
        let e = set_public_ip(&mut body, "vip", &pip).unwrap_err();
        assert!(e.to_string().contains("pip-2"), "{e}");
    }

    #[test]
    fn moving_a_secondary_config_removes_and_rebuilds_only_it() {
        let ip: IpAddr = "10.0.0.100".parse().unwrap();
        let mut body = put_body(&nic()).unwrap();
        let removed = remove_config_with_ip(&mut body, ip).unwrap().unwrap();
        let mut expected = baseline();
        expected["properties"]["ipConfigurations"]
            .as_array_mut()
            .unwrap()
            .remove(1);
        assert_eq!(body, expected);
        assert_eq!(remove_config_with_ip(&mut body, ip).unwrap(), None);
        let e = remove_config_with_ip(&mut body, "10.0.0.4".parse().unwrap()).unwrap_err();
        assert_eq!(e.kind(), "invalid");

        let template = SecondaryTemplate::from_config(&removed, ip).unwrap();
        assert_eq!(template.name, "vip");
        let fresh = template.build("/subscriptions/s/subnets/other");
        assert_eq!(
            fresh,
            json!({"name": "vip", "properties": {
                "privateIPAddress": "10.0.0.100", "privateIPAllocationMethod": "Static",
                "privateIPAddressVersion": "IPv4", "primary": false,
                "subnet": {"id": "/subscriptions/s/subnets/other"},
                "applicationSecurityGroups": [{"id": "/subscriptions/x/asg-y"}],
                "publicIPAddress": {"id": format!("{SUB}/providers/Microsoft.Network/publicIPAddresses/pip-2")}}})
        );
        add_config(&mut body, fresh.clone()).unwrap();
        let mut expected = baseline();
        expected["properties"]["ipConfigurations"][1] = fresh;
        assert_eq!(body, expected);
    }

    #[test]
    fn ids() {
        let cfg = format!(
            "{SUB}/providers/Microsoft.Network/networkInterfaces/nic-a/ipConfigurations/ipconfig1"
        );
        assert_eq!(
            nic_of_ip_config(&cfg),
            Some(format!("{SUB}/providers/Microsoft.Network/networkInterfaces/nic-a").as_str())
        );
        let lower = cfg.to_ascii_lowercase().replace("rg-ha", "RG-HA");
        assert!(nic_of_ip_config(&lower).unwrap().ends_with("/nic-a"));
        assert_eq!(
            nic_of_ip_config("/subscriptions/s/resourceGroups/r/providers/Microsoft.Network/loadBalancers/lb/frontendIPConfigurations/f"),
            None
        );
        assert_eq!(last_segment("/a/b/vm-a"), "vm-a");
        assert_eq!(nic_vm(&nic()), Some("vm-a"));
        assert!(same_id("/Subscriptions/X/a/", "/subscriptions/x/A"));
        check_id(&cfg).unwrap();
        for bad in [
            "",
            "/subscriptions/",
            "subscriptions/x",
            "/subscriptions/x/../y",
            "/subscriptions/x?y",
            "/subscriptions/x#y",
            "/subscriptions/x//y",
            "/subscriptions/x/%2e",
            "https://evil.example/subscriptions/x",
        ] {
            assert!(check_id(bad).is_err(), "{bad}");
        }
        check_name("vm", "vm-a_1.b(c)").unwrap();
        for bad in ["", "a/b", "..", "a?b", "a%2f", "a\nb"] {
            assert!(check_name("vm", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn reading_nics() {
        let n = nic();
        assert_eq!(config_name(primary_config(&n).unwrap()), Some("ipconfig1"));
        assert_eq!(
            config_ip(find_config(&n, "VIP").unwrap()),
            Some("10.0.0.100".parse().unwrap())
        );
        let mut headers = HeaderMap::new();
        assert_eq!(etag(&headers, &n).as_deref(), Some("W/\"80b1\""));
        headers.insert("etag", HeaderValue::from_static("W/\"hdr\""));
        assert_eq!(etag(&headers, &n).as_deref(), Some("W/\"hdr\""));
        // Without a primary flag only a single configuration is primary.
        let two = json!({"properties": {"ipConfigurations": [{"name": "a", "properties": {}}, {"name": "b", "properties": {}}]}});
        assert!(primary_config(&two).is_none());
        let one = json!({"properties": {"ipConfigurations": [{"name": "a", "properties": {}}]}});
        assert_eq!(config_name(primary_config(&one).unwrap()), Some("a"));
    }

    #[test]
    fn operation_states() {
        assert_eq!(
            operation_state(&json!({"status": "InProgress"})),
            Ok(State::Running("InProgress".into()))
        );
        assert_eq!(
            operation_state(&json!({"status": "Succeeded"})),
            Ok(State::Succeeded)
        );
        assert_eq!(
            operation_state(
                &json!({"status": "Failed", "error": {"code": "InternalServerError", "message": "boom"}})
            ),
            Ok(State::Failed("Failed: InternalServerError: boom".into()))
        );
        assert_eq!(
            operation_state(&json!({"status": "Canceled"})),
            Ok(State::Failed("Canceled".into()))
        );
        assert!(operation_state(&json!({"error": {}})).is_err());
        assert_eq!(
            provisioning_state(&json!({"properties": {}})),
            State::Succeeded
        );
        assert_eq!(
            provisioning_state(&json!({"properties": {"provisioningState": "Updating"}})),
            State::Running("Updating".into())
        );

        let mut h = HeaderMap::new();
        assert_eq!(Poll::from_headers(&h), None);
        h.insert("location", HeaderValue::from_static("https://m/loc"));
        assert_eq!(
            Poll::from_headers(&h),
            Some(Poll::Location("https://m/loc".into()))
        );
        h.insert(
            "azure-asyncoperation",
            HeaderValue::from_static("https://m/op"),
        );
        assert_eq!(
            Poll::from_headers(&h),
            Some(Poll::AsyncOperation("https://m/op".into()))
        );
    }

    #[test]
    fn errors_map_onto_the_taxonomy() {
        let kind = |status: u16, body: &str| {
            let mut h = HeaderMap::new();
            h.insert("retry-after", HeaderValue::from_static("7"));
            arm_error(
                "PUT /nic",
                StatusCode::from_u16(status).unwrap(),
                &h,
                body.as_bytes(),
            )
        };
        let e = kind(
            400,
            r#"{"error":{"code":"PublicIPAddressInUse","message":"Resource … is referencing public IP address … that is already allocated"}}"#,
        );
        assert_eq!(e.kind(), "conflict");
        assert!(e.to_string().contains("PublicIPAddressInUse"), "{e}");
        assert_eq!(
            kind(
                400,
                r#"{"error":{"code":"InvalidIPConfigCount","message":"m"}}"#
            )
            .kind(),
            "invalid"
        );
        assert_eq!(
            kind(
                400,
                r#"{"error":{"code":"PrivateIPAddressIsBeingCleanedUp"}}"#
            )
            .kind(),
            "retryable"
        );
        let e = kind(
            412,
            r#"{"error":{"code":"PreconditionFailed","message":"Precondition failed.","details":[{"code":"PreconditionFailedEtagMismatch","message":"…"}]}}"#,
        );
        assert_eq!(e.kind(), "conflict");
        assert!(
            e.to_string().contains("PreconditionFailedEtagMismatch"),
            "{e}"
        );
        assert_eq!(
            kind(
                409,
                r#"{"error":{"code":"AnotherOperationInProgress","message":"busy"}}"#
            ),
            Error::RateLimited {
                retry_after: Some(Duration::from_secs(7)),
                message: "PUT /nic: HTTP 409: AnotherOperationInProgress: busy".into()
            }
        );
        assert_eq!(
            kind(409, r#"{"error":{"code":"Conflict"}}"#).kind(),
            "conflict"
        );
        assert_eq!(kind(429, "").kind(), "rate_limited");
        assert_eq!(kind(401, "").kind(), "auth");
        assert_eq!(
            kind(403, r#"{"error":{"code":"AuthorizationFailed"}}"#).kind(),
            "auth"
        );
        assert_eq!(
            kind(404, r#"{"error":{"code":"ResourceNotFound"}}"#).kind(),
            "not_found"
        );
        assert_eq!(kind(503, "").kind(), "retryable");
        assert_eq!(kind(501, "").kind(), "invalid");
        assert_eq!(
            kind(400, "<html>").to_string(),
            "invalid: PUT /nic: HTTP 400: <html>"
        );
        assert!(is_busy(
            StatusCode::CONFLICT,
            br#"{"error":{"code":"AnotherOperationInProgress"}}"#
        ));
        assert!(!is_busy(
            StatusCode::CONFLICT,
            br#"{"error":{"code":"Conflict"}}"#
        ));
        assert!(is_in_use("PublicIPAddressInUse") && !is_in_use("InvalidIPConfigCount"));
    }
}
