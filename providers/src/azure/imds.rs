//! The Azure Instance Metadata Service (shared/clouds/azure.md §1.2, §2): the VM's identity
//! (subscription, resource group, name, ARM id) and the transport for managed-identity tokens.
//!
//! IMDS is link-local and never goes through a proxy. Every request carries `Metadata: true`
//! (without it IMDS answers 400 `bad_request_102`), and 404/410 mean "IMDS is updating, back
//! soon", so they are retried here like the 429/5xx that the shared HTTP layer retries.

use std::net::IpAddr;
use std::time::Instant;

use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::Value;

use crate::http::{HttpClient, HttpResponse, Method, RequestSpec, Url};
use crate::{Error, Result};

/// The instance metadata API version: long deployed everywhere, and what azure.md §2 documents.
pub const INSTANCE_API_VERSION: &str = "2021-02-01";

/// IMDS over one HTTP client, with the retries IMDS asks for.
#[derive(Clone, Debug)]
pub(crate) struct Imds {
    http: HttpClient,
}

impl Imds {
    /// `http` must bypass proxies: IMDS is only reachable directly from the VM.
    pub fn new(http: HttpClient) -> Self {
        Imds { http }
    }

    /// GETs `url` with `Metadata: true`, retrying 404/410 (IMDS updating) within the client's
    /// retry policy. Any other final status comes back as a response for the caller to map.
    pub async fn get(&self, url: Url) -> Result<HttpResponse> {
        let policy = self.http.retry_policy().clone();
        let deadline = Instant::now() + policy.max_elapsed;
        let spec = RequestSpec::new(Method::GET, url);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let response = self
                .http
                .send_until_final(&spec, |_| Ok(metadata_header()), deadline)
                .await?;
            let updating = matches!(response.status.as_u16(), 404 | 410);
            if !updating || attempt >= policy.max_attempts.max(1) {
                return Ok(response);
            }
            let delay = policy.backoff(attempt);
            if Instant::now() + delay >= deadline {
                return Ok(response);
            }
            tracing::debug!(
                status = response.status.as_u16(),
                attempt,
                "IMDS is updating, retrying"
            );
            tokio::time::sleep(delay).await;
        }
    }

    /// `GET {base}/metadata/instance?api-version=2021-02-01`, parsed.
    pub async fn instance(&self, base: &Url) -> Result<InstanceMetadata> {
        let mut url = super::join(base, "/metadata/instance");
        url.query_pairs_mut()
            .append_pair("api-version", INSTANCE_API_VERSION);
        let response = self.get(url).await?;
        if !response.status.is_success() {
            return Err(imds_error(&response));
        }
        let value: Value = response.json()?;
        InstanceMetadata::parse(&value)
            .map_err(|m| Error::Invalid(format!("{}: {m}", response.what)))
    }
}

fn metadata_header() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("metadata", HeaderValue::from_static("true"));
    headers
}

/// Maps an IMDS error answer (`{"error","error_description"}` or text) onto the taxonomy.
pub(crate) fn imds_error(response: &HttpResponse) -> Error {
    let body: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
    let code = body.get("error").and_then(Value::as_str).unwrap_or("");
    let message = format!(
        "{}: HTTP {}: {}",
        response.what,
        response.status.as_u16(),
        oauth_style_message(&response.body)
    );
    match response.status.as_u16() {
        // Still updating after our retries.
        404 | 410 => Error::Retryable(message),
        400 if code == "bad_request_102" => Error::Invalid(message),
        401 | 403 => Error::Auth(message),
        _ => Error::Invalid(message),
    }
}

/// `error: error_description` of an OAuth-style error body, else the usual lenient message.
pub(crate) fn oauth_style_message(body: &[u8]) -> String {
    let value: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let code = value.get("error").and_then(Value::as_str);
    let description = value
        .get("error_description")
        .and_then(Value::as_str)
        // AADSTS descriptions carry trace ids and timestamps on further lines.
        .and_then(|d| d.lines().next())
        .map(str::trim)
        .filter(|d| !d.is_empty());
    let text = match (code, description) {
        (Some(code), Some(description)) => format!("{code}: {description}"),
        (Some(code), None) => code.to_string(),
        (None, Some(description)) => description.to_string(),
        (None, None) => return crate::http::error_message(body),
    };
    clip(&text)
}

fn clip(text: &str) -> String {
    const MAX: usize = 300;
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

/// What exoip needs from `/metadata/instance`. Every IMDS primitive is a string; a missing one
/// is `""`, kept here as `None`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InstanceMetadata {
    pub subscription_id: Option<String>,
    pub resource_group: Option<String>,
    pub name: Option<String>,
    pub resource_id: Option<String>,
    pub vm_id: Option<String>,
    pub location: Option<String>,
    /// The private IPv4 addresses of every interface (IMDS gives no NIC ARM ids).
    pub private_ips: Vec<IpAddr>,
    /// MAC addresses as IMDS writes them (`000D3AF806EC`), upper case.
    pub macs: Vec<String>,
}

impl InstanceMetadata {
    pub fn parse(value: &Value) -> std::result::Result<Self, String> {
        let compute = value
            .get("compute")
            .filter(|c| c.is_object())
            .ok_or("the answer has no compute object")?;
        let text = |v: &Value, key: &str| {
            v.get(key)
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        let mut private_ips = Vec::new();
        let mut macs = Vec::new();
        let interfaces = value
            .pointer("/network/interface")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for interface in interfaces {
            if let Some(mac) = text(interface, "macAddress") {
                macs.push(normalise_mac(&mac));
            }
            let addresses = interface
                .pointer("/ipv4/ipAddress")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default();
            for address in addresses {
                if let Some(ip) =
                    text(address, "privateIpAddress").and_then(|s| s.parse::<IpAddr>().ok())
                {
                    if !private_ips.contains(&ip) {
                        private_ips.push(ip);
                    }
                }
            }
        }
        Ok(InstanceMetadata {
            subscription_id: text(compute, "subscriptionId"),
            resource_group: text(compute, "resourceGroupName"),
            name: text(compute, "name"),
            resource_id: text(compute, "resourceId"),
            vm_id: text(compute, "vmId"),
            location: text(compute, "location"),
            private_ips,
            macs,
        })
    }
}

/// `00-0D-3A-1B-C7-21` (ARM) and `000d3a1bc721` (IMDS) both become `000D3A1BC721`.
pub fn normalise_mac(mac: &str) -> String {
    mac.chars()
        .filter(char::is_ascii_hexdigit)
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn instance_metadata_is_read_from_strings() {
        let value = json!({"compute": {"name": "vm-b", "resourceGroupName": "rg-ha",
            "subscriptionId": "8d10da13-8125-4ba9-a717-bf7490507b3d", "vmId": "02aab8a4-74ef-476e-8182-f6d2ba4166a6",
            "resourceId": "/subscriptions/8d10da13-8125-4ba9-a717-bf7490507b3d/resourceGroups/rg-ha/providers/Microsoft.Compute/virtualMachines/vm-b",
            "location": "westeurope", "zone": "", "tagsList": [{"name": "exoip-group", "value": "web"}]},
          "network": {"interface": [{"macAddress": "000d3af806ec", "ipv4": {
            "ipAddress": [{"privateIpAddress": "10.1.0.4", "publicIpAddress": ""},
                          {"privateIpAddress": "10.1.0.5", "publicIpAddress": ""}],
            "subnet": [{"address": "10.1.0.0", "prefix": "24"}]}}]}});
        let m = InstanceMetadata::parse(&value).unwrap();
        assert_eq!(m.name.as_deref(), Some("vm-b"));
        assert_eq!(m.resource_group.as_deref(), Some("rg-ha"));
        assert_eq!(
            m.subscription_id.as_deref(),
            Some("8d10da13-8125-4ba9-a717-bf7490507b3d")
        );
        assert!(m.resource_id.unwrap().ends_with("/virtualMachines/vm-b"));
        assert_eq!(
            m.private_ips,
            vec![
                "10.1.0.4".parse::<IpAddr>().unwrap(),
                "10.1.0.5".parse().unwrap()
            ]
        );
        assert_eq!(m.macs, vec!["000D3AF806EC".to_string()]);

        // Missing values are "" in IMDS: absent here.
        let sparse =
            InstanceMetadata::parse(&json!({"compute": {"name": "", "zone": ""}})).unwrap();
        assert_eq!(sparse, InstanceMetadata::default());
        assert!(InstanceMetadata::parse(&json!({"newest-versions": ["2023-07-01"]})).is_err());
        assert!(InstanceMetadata::parse(&json!("junk")).is_err());
    }

    #[test]
    fn macs_are_normalised() {
        assert_eq!(normalise_mac("00-0D-3A-1B-C7-21"), "000D3A1BC721");
        assert_eq!(normalise_mac("000d3a1bc721"), "000D3A1BC721");
    }

    #[test]
    fn oauth_messages_keep_the_code_and_the_first_line() {
        let body = br#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided.\r\nTrace ID: 1\r\nTimestamp: x","error_codes":[7000215]}"#;
        assert_eq!(
            oauth_style_message(body),
            "invalid_client: AADSTS7000215: Invalid client secret provided."
        );
        assert_eq!(
            oauth_style_message(br#"{"error":"bad_request_102"}"#),
            "bad_request_102"
        );
        assert_eq!(oauth_style_message(b"plain text"), "plain text");
    }
}
