//! Neutron v2.0: authenticated requests (one re-authentication after a 401), errors from the
//! `NeutronError` body, and the JSON shapes of ports, floating IPs and friends
//! (shared/clouds/openstack.md §3, §4).

use std::collections::HashSet;
use std::net::IpAddr;
use std::time::Instant;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::header::{HeaderMap, HeaderValue, IF_MATCH};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use super::keystone::{Keystone, Token};
use crate::http::{HttpClient, HttpResponse, Method, RequestSpec, Url};
use crate::{Error, Result};

/// Neutron's limit on a resource's `description`, in characters.
pub(crate) const MAX_DESCRIPTION: usize = 255;

/// Query values: everything but RFC 3986 unreserved characters is percent-encoded
/// (`fixed_ips=ip_address%3D192.0.2.10`).
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

pub(crate) struct Neutron {
    keystone: Keystone,
    http: HttpClient,
    /// Extension aliases (`GET /v2.0/extensions`), read once.
    extensions: tokio::sync::OnceCell<HashSet<String>>,
}

impl Neutron {
    pub fn new(keystone: Keystone, http: HttpClient) -> Self {
        Neutron {
            keystone,
            http,
            extensions: tokio::sync::OnceCell::new(),
        }
    }

    /// Sends one request with the current token; a 401 gets exactly one new token and one
    /// retry. Non-2xx answers become errors classified by their `NeutronError` type.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
        if_match: Option<u64>,
    ) -> Result<HttpResponse> {
        let deadline = Instant::now() + self.http.retry_policy().max_elapsed;
        let token = self.keystone.token(None).await?;
        let response = self
            .send(&token, &method, path, query, body, if_match, deadline)
            .await?;
        let response = if response.status.as_u16() == 401 {
            tracing::debug!(
                request = %response.what,
                generation = token.generation,
                "Neutron refused the token: authenticating again"
            );
            let token = self.keystone.token(Some(token.generation)).await?;
            // The retry gets its own full budget: the first answer may have used most of it.
            let deadline = deadline.max(Instant::now() + self.http.request_timeout());
            self.send(&token, &method, path, query, body, if_match, deadline)
                .await?
        } else {
            response
        };
        if response.status.is_success() {
            Ok(response)
        } else {
            Err(neutron_error(&response))
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn send(
        &self,
        token: &Token,
        method: &Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
        if_match: Option<u64>,
        deadline: Instant,
    ) -> Result<HttpResponse> {
        let url = url(&token.network, path, query);
        let spec = match body {
            Some(body) => RequestSpec::json(method.clone(), url, body)?,
            None => RequestSpec::new(method.clone(), url),
        };
        let authorize = |_: &RequestSpec| {
            let mut headers = HeaderMap::new();
            let mut value = HeaderValue::from_str(token.value.expose())
                .map_err(|_| Error::Invalid("the Keystone token is not a valid header".into()))?;
            value.set_sensitive(true);
            headers.insert("x-auth-token", value);
            headers.insert(
                reqwest::header::ACCEPT,
                HeaderValue::from_static("application/json"),
            );
            if let Some(revision) = if_match {
                headers.insert(
                    IF_MATCH,
                    HeaderValue::from_str(&format!("revision_number={revision}"))
                        .expect("digits are a valid header value"),
                );
            }
            Ok(headers)
        };
        self.http.send_until_final(&spec, authorize, deadline).await
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str, query: &[(&str, &str)]) -> Result<T> {
        self.request(Method::GET, path, query, None, None)
            .await?
            .json()
    }

    pub async fn put<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &Value,
        if_match: Option<u64>,
    ) -> Result<T> {
        self.request(Method::PUT, path, &[], Some(body), if_match)
            .await?
            .json()
    }

    /// Whether Neutron has the extension `alias` (the list is read once).
    pub async fn has_extension(&self, alias: &str) -> Result<bool> {
        let aliases = self
            .extensions
            .get_or_try_init(|| async {
                let list: ExtensionList = self.get("/extensions", &[]).await?;
                Ok::<_, Error>(
                    list.extensions
                        .into_iter()
                        .filter_map(|e| e.alias)
                        .collect::<HashSet<String>>(),
                )
            })
            .await?;
        Ok(aliases.contains(alias))
    }

    pub async fn port(&self, id: &str) -> Result<PortJson> {
        check_id("port", id)?;
        let one: PortOne = self.get(&format!("/ports/{id}"), &[]).await?;
        Ok(one.port)
    }

    pub async fn ports(&self, query: &[(&str, &str)]) -> Result<Vec<PortJson>> {
        let list: PortList = self.get("/ports", query).await?;
        Ok(list.ports)
    }

    /// The ports of a server (`device_id`), checked on our side too.
    pub async fn server_ports(&self, server: &str) -> Result<Vec<PortJson>> {
        check_id("server", server)?;
        let mut ports = self.ports(&[("device_id", server)]).await?;
        ports.retain(|p| p.device_id.as_deref() == Some(server));
        Ok(ports)
    }
}

/// `{base}{path}?{query}`: names may repeat (`fields=id&fields=device_id`), values are strictly
/// percent-encoded.
pub(crate) fn url(base: &Url, path: &str, query: &[(&str, &str)]) -> Url {
    let mut url = base.clone();
    url.set_path(&format!("{}{path}", base.path().trim_end_matches('/')));
    let parts: Vec<String> = query
        .iter()
        .map(|(name, value)| format!("{name}={}", utf8_percent_encode(value, QUERY_VALUE)))
        .collect();
    url.set_query((!parts.is_empty()).then(|| parts.join("&")).as_deref());
    url
}

/// Ids end up in request paths: only what Neutron and Nova ids (UUIDs) are made of.
pub(crate) fn check_id(kind: &str, id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "{kind} id {id:?} is not a valid OpenStack id"
        )))
    }
}

/// Maps an error answer onto the taxonomy, by `NeutronError.type` first, then by status.
pub(crate) fn neutron_error(response: &HttpResponse) -> Error {
    let code = response.status.as_u16();
    let (kind, text) = parse_neutron_error(&response.body);
    let message = match &kind {
        Some(kind) => format!("{}: HTTP {code} {kind}: {text}", response.what),
        None => format!("{}: HTTP {code}: {text}", response.what),
    };
    match kind.as_deref() {
        Some("RevisionNumberConstraintFailed" | "FloatingIPPortAlreadyAssociated") => {
            return Error::Conflict(message)
        }
        // The port has no router path to the floating IP's network: the topology, not a
        // missing object, and asking again will not help.
        Some("ExternalGatewayForFloatingIPNotFound") => return Error::Invalid(message),
        Some("PolicyNotAuthorized") => return Error::Auth(message),
        Some(k) if k.ends_with("NotFound") => return Error::NotFound(message),
        _ => {}
    }
    match code {
        401 | 403 => Error::Auth(message),
        404 | 410 => Error::NotFound(message),
        409 | 412 => Error::Conflict(message),
        _ => Error::Invalid(message),
    }
}

/// `(type, message)` of `{"NeutronError": {"type", "message", "detail"}}`; other bodies give
/// no type and their message as [`crate::http::error_message`] finds it.
fn parse_neutron_error(body: &[u8]) -> (Option<String>, String) {
    let text = |v: Option<&Value>| {
        v.and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(clip)
    };
    if let Ok(value) = serde_json::from_slice::<Value>(body) {
        if let Some(error) = value.get("NeutronError") {
            let kind = text(error.get("type")).filter(|k| {
                k.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
            });
            let message = text(error.get("message"))
                .or_else(|| text(error.get("detail")))
                .or_else(|| text(Some(error)))
                .unwrap_or_else(|| "(no message)".to_string());
            return (kind, message);
        }
    }
    (None, crate::http::error_message(body))
}

/// At most 200 characters of a server's message, on one line.
fn clip(text: &str) -> String {
    const MAX: usize = 200;
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

/// An address from Neutron JSON, tolerating a prefix length (`192.0.2.1/32`).
pub(crate) fn parse_ip(text: &str) -> Option<IpAddr> {
    text.trim().split('/').next()?.trim().parse().ok()
}

/// Whether an allowed-address-pair entry is exactly `ip` (`a.b.c.d`, `a.b.c.d/32`, `…/128`).
pub(crate) fn pair_is(pair: &Value, ip: IpAddr) -> bool {
    let Some(text) = pair.get("ip_address").and_then(Value::as_str) else {
        return false;
    };
    let text = text.trim();
    let (addr, prefix) = match text.split_once('/') {
        Some((a, p)) => (a, Some(p.trim())),
        None => (text, None),
    };
    let Ok(addr) = addr.trim().parse::<IpAddr>() else {
        return false;
    };
    let host = match addr {
        IpAddr::V4(_) => "32",
        IpAddr::V6(_) => "128",
    };
    addr == ip && prefix.is_none_or(|p| p == host)
}

// Response shapes (neutron-lib api-ref). Lists are required, so a body without them is a clear
// `Invalid`; fields of their items are optional and unknown ones ignored.

#[derive(Deserialize, Debug, Clone)]
pub(crate) struct FixedIp {
    #[serde(default)]
    pub subnet_id: Option<String>,
    #[serde(default)]
    pub ip_address: Option<String>,
}

impl FixedIp {
    pub fn ip(&self) -> Option<IpAddr> {
        self.ip_address.as_deref().and_then(parse_ip)
    }
}

#[derive(Deserialize, Debug, Clone, Default)]
pub(crate) struct PortJson {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub network_id: Option<String>,
    #[serde(default)]
    pub device_id: Option<String>,
    #[serde(default)]
    pub device_owner: Option<String>,
    #[serde(default)]
    pub fixed_ips: Option<Vec<FixedIp>>,
    #[serde(default)]
    pub security_groups: Option<Vec<String>>,
    /// Kept as JSON so that a read-modify-write sends other entries back exactly as read.
    #[serde(default)]
    pub allowed_address_pairs: Option<Vec<Value>>,
    #[serde(default)]
    pub revision_number: Option<u64>,
    /// Free text (at most [`MAX_DESCRIPTION`] characters); on the VIP port, carries the claim
    /// record's token in VIP mode.
    #[serde(default)]
    pub description: Option<String>,
}

impl PortJson {
    pub fn require_id(&self) -> Result<&str> {
        let id = self
            .id
            .as_deref()
            .filter(|id| !id.is_empty())
            .ok_or_else(|| Error::Invalid("a port in a Neutron answer has no id".into()))?;
        check_id("port", id)?;
        Ok(id)
    }

    /// The server the port is plugged into, if any.
    pub fn device(&self) -> Option<&str> {
        self.device_id.as_deref().filter(|d| !d.is_empty())
    }

    pub fn ips(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.fixed_ips.iter().flatten().filter_map(FixedIp::ip)
    }

    pub fn has_ip(&self, ip: IpAddr) -> bool {
        self.ips().any(|a| a == ip)
    }
}

#[derive(Deserialize, Debug)]
pub(crate) struct PortList {
    pub ports: Vec<PortJson>,
}

#[derive(Deserialize, Debug)]
pub(crate) struct PortOne {
    pub port: PortJson,
}

#[derive(Deserialize, Debug, Clone)]
pub(crate) struct PortDetails {
    #[serde(default)]
    pub device_id: Option<String>,
}

#[derive(Deserialize, Debug, Clone)]
pub(crate) struct FloatingIpJson {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub floating_ip_address: Option<String>,
    #[serde(default)]
    pub floating_network_id: Option<String>,
    #[serde(default)]
    pub port_id: Option<String>,
    #[serde(default)]
    pub fixed_ip_address: Option<String>,
    #[serde(default)]
    pub revision_number: Option<u64>,
    /// Free text (at most 255 characters); carries the claim record's token.
    #[serde(default)]
    pub description: Option<String>,
    /// Extension `fip-port-details`; `null` when unassociated.
    #[serde(default)]
    pub port_details: Option<PortDetails>,
}

impl FloatingIpJson {
    pub fn port(&self) -> Option<&str> {
        self.port_id.as_deref().filter(|p| !p.is_empty())
    }
}

#[derive(Deserialize, Debug)]
pub(crate) struct FloatingIpList {
    pub floatingips: Vec<FloatingIpJson>,
}

#[derive(Deserialize, Debug)]
pub(crate) struct FloatingIpOne {
    pub floatingip: FloatingIpJson,
}

#[derive(Deserialize, Debug)]
pub(crate) struct SecurityGroupJson {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Deserialize, Debug)]
pub(crate) struct SecurityGroupList {
    pub security_groups: Vec<SecurityGroupJson>,
}

#[derive(Deserialize, Debug)]
pub(crate) struct SecurityGroupOne {
    pub security_group: SecurityGroupJson,
}

#[derive(Deserialize, Debug)]
pub(crate) struct GatewayInfo {
    #[serde(default)]
    pub network_id: Option<String>,
}

#[derive(Deserialize, Debug)]
pub(crate) struct RouterJson {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub external_gateway_info: Option<GatewayInfo>,
}

#[derive(Deserialize, Debug)]
pub(crate) struct RouterList {
    pub routers: Vec<RouterJson>,
}

#[derive(Deserialize, Debug)]
pub(crate) struct SubnetJson {
    #[serde(default)]
    pub network_id: Option<String>,
    #[serde(default)]
    pub cidr: Option<String>,
}

#[derive(Deserialize, Debug)]
pub(crate) struct SubnetList {
    pub subnets: Vec<SubnetJson>,
}

#[derive(Deserialize, Debug)]
struct ExtensionJson {
    #[serde(default)]
    alias: Option<String>,
}

#[derive(Deserialize, Debug)]
struct ExtensionList {
    extensions: Vec<ExtensionJson>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::StatusCode;
    use serde_json::json;

    fn response(code: u16, body: &str) -> HttpResponse {
        HttpResponse {
            what: "PUT /v2.0/floatingips/f1".into(),
            status: StatusCode::from_u16(code).unwrap(),
            headers: HeaderMap::new(),
            body: body.as_bytes().to_vec(),
        }
    }

    fn neutron(code: u16, kind: &str, message: &str) -> Error {
        let body = json!({"NeutronError": {"type": kind, "message": message, "detail": ""}});
        neutron_error(&response(code, &body.to_string()))
    }

    #[test]
    fn errors_map_by_type_then_status() {
        let e = neutron(
            412,
            "RevisionNumberConstraintFailed",
            "Constrained to 1, but current revision is 2",
        );
        assert_eq!(
            e,
            Error::Conflict("PUT /v2.0/floatingips/f1: HTTP 412 RevisionNumberConstraintFailed: Constrained to 1, but current revision is 2".into())
        );
        assert_eq!(
            neutron(409, "FloatingIPPortAlreadyAssociated", "x").kind(),
            "conflict"
        );
        assert_eq!(neutron(404, "FloatingIPNotFound", "x").kind(), "not_found");
        assert_eq!(neutron(404, "PortNotFound", "x").kind(), "not_found");
        assert_eq!(
            neutron(404, "ExternalGatewayForFloatingIPNotFound", "x").kind(),
            "invalid"
        );
        assert_eq!(
            neutron(400, "BadRequest", "multiple fixed IPv4").kind(),
            "invalid"
        );
        assert_eq!(neutron(400, "HTTPBadRequest", "x").kind(), "invalid");
        assert_eq!(neutron(403, "PolicyNotAuthorized", "x").kind(), "auth");
        assert_eq!(neutron(401, "", "x").kind(), "auth");
        assert_eq!(neutron(409, "SomethingElse", "x").kind(), "conflict");
        let e = neutron_error(&response(404, "<html>Not Found</html>"));
        assert_eq!(
            e,
            Error::NotFound("PUT /v2.0/floatingips/f1: HTTP 404: <html>Not Found</html>".into())
        );
        let e = neutron_error(&response(400, r#"{"NeutronError": "plain text"}"#));
        assert_eq!(
            e,
            Error::Invalid("PUT /v2.0/floatingips/f1: HTTP 400: plain text".into())
        );
        let long = "x".repeat(1000);
        let e = neutron(400, "BadRequest", &long).to_string();
        assert!(e.len() < 400, "{e}");
    }

    #[test]
    fn queries_repeat_names_and_encode_values() {
        let base = Url::parse("http://192.0.2.1:9696/networking/v2.0").unwrap();
        let u = url(
            &base,
            "/ports",
            &[
                ("security_groups", "sg-1"),
                ("fields", "id"),
                ("fields", "device_id"),
                ("fields", "fixed_ips"),
            ],
        );
        assert_eq!(
            u.as_str(),
            "http://192.0.2.1:9696/networking/v2.0/ports?security_groups=sg-1&fields=id&fields=device_id&fields=fixed_ips"
        );
        let u = url(&base, "/ports", &[("fixed_ips", "ip_address=2001:db8::5")]);
        assert_eq!(u.query(), Some("fixed_ips=ip_address%3D2001%3Adb8%3A%3A5"));
        assert_eq!(url(&base, "/extensions", &[]).query(), None);
    }

    #[test]
    fn address_pairs_match_exactly() {
        let v4: IpAddr = "192.0.2.200".parse().unwrap();
        let v6: IpAddr = "2001:db8::200".parse().unwrap();
        let pair = |s: &str| json!({"ip_address": s, "mac_address": "fa:16:3e:00:00:01"});
        assert!(pair_is(&pair("192.0.2.200"), v4));
        assert!(pair_is(&pair("192.0.2.200/32"), v4));
        assert!(!pair_is(&pair("192.0.2.200/24"), v4));
        assert!(!pair_is(&pair("192.0.2.0/24"), v4));
        assert!(!pair_is(&pair("192.0.2.201"), v4));
        assert!(pair_is(&pair("2001:db8:0::200/128"), v6));
        assert!(!pair_is(&pair("2001:db8::200/64"), v6));
        assert!(!pair_is(&json!({"mac_address": "x"}), v4));
        assert!(!pair_is(&pair("junk"), v4));
    }

    #[test]
    fn json_shapes_are_read_leniently() {
        let p: PortJson = serde_json::from_value(json!({
            "id": "p1", "device_id": "", "fixed_ips": [{"subnet_id": "s", "ip_address": "192.0.2.5"}, {"ip_address": "junk"}],
            "allowed_address_pairs": [], "new_field": {"x": 1}})).unwrap();
        assert_eq!(p.device(), None);
        assert_eq!(
            p.ips().collect::<Vec<_>>(),
            vec!["192.0.2.5".parse::<IpAddr>().unwrap()]
        );
        let list: std::result::Result<PortList, _> = serde_json::from_value(json!({"port": []}));
        assert!(list.is_err());
        let bad: PortJson = serde_json::from_value(json!({"id": "../x"})).unwrap();
        assert_eq!(bad.require_id().unwrap_err().kind(), "invalid");
        let fip: FloatingIpJson = serde_json::from_value(json!({
            "id": "f", "port_id": null, "port_details": null, "revision_number": 3}))
        .unwrap();
        assert_eq!(fip.port(), None);
        assert!(fip.port_details.is_none());
    }
}
