//! OpenStack provider: Keystone v3 for tokens, Neutron for ports and addresses
//! (shared/clouds/openstack.md §9), in one of two modes:
//!
//! * floating-IP mode: "the IP moves" means one `PUT /v2.0/floatingips/{id}` re-associating the
//!   floating IP with the new holder's port, fenced by `If-Match` on the revision read before;
//!   a claim writes its record into the floating IP's description in that same PUT, so claim
//!   and record are one compare-and-swap (`docs/arbiter.md`);
//! * VIP mode: the provider maintains which ports *may* carry a private VIP (their
//!   `allowed_address_pairs`); the agent puts the VIP on its NIC and announces it itself. The
//!   list of allowed ports is a permission, not a claim: a claim is recorded in the description
//!   of the VIP port (the port holding the VIP as a fixed IP), fenced by `If-Match` on its
//!   revision, before the claimant's port is allowed (`docs/arbiter.md`).
//!
//! Peers are the servers with a port in a Neutron security group; a server is known by its
//! Nova UUID, which is the `device_id` of its ports.

pub mod config;
mod floating;
mod keystone;
mod neutron;
mod vip;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use reqwest::header::HeaderMap;
use serde::Deserialize;

pub use config::{
    ApplicationCredential, Credentials, Domain, Interface, OpenStackMode, OpenStackSettings,
    Project, User, DEFAULT_METADATA_URL,
};
pub(crate) use floating::record_from_description;

use crate::http::{HttpClient, HttpOptions, Method, RequestSpec, RetryPolicy, Url};
use crate::{AddressState, Arbiter, ClaimRecord, Error, Instance, InstanceId, Provider, Result};
use keystone::Keystone;
use neutron::{check_id, Neutron, SecurityGroupList, SecurityGroupOne};

/// The OpenStack client.
pub struct OpenStack {
    neutron: Neutron,
    mode: OpenStackMode,
    auth_url: Url,
    source: String,
    server_id: Option<InstanceId>,
    metadata: HttpClient,
    metadata_url: Url,
    /// `meta_data.json`, read once: it cannot change while we run.
    meta: tokio::sync::OnceCell<MetaData>,
    /// This server's port (`--port`).
    port: Option<String>,
    /// The VIP's own port (`--vip-port`).
    vip_port: Option<String>,
    /// (server, floating network) → the port and fixed IP a floating IP goes to; dropped when
    /// Neutron refuses them.
    fip_targets: Mutex<HashMap<(String, String), floating::Target>>,
    /// VIP → its network, which does not change while we run.
    vip_networks: Mutex<HashMap<IpAddr, String>>,
    /// VIP → its VIP port (where its claim record lives); dropped when that port no longer
    /// holds the VIP.
    vip_ports: Mutex<HashMap<IpAddr, String>>,
    /// VIPs without a VIP port that were warned about (once per process).
    vip_unrecorded: Mutex<HashSet<IpAddr>>,
}

impl fmt::Debug for OpenStack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenStack")
            .field("auth_url", &self.auth_url.as_str())
            .field("source", &self.source)
            .field("mode", &self.mode)
            .field("server_id", &self.server_id)
            .field("metadata_url", &self.metadata_url.as_str())
            .field("port", &self.port)
            .field("vip_port", &self.vip_port)
            .finish_non_exhaustive()
    }
}

/// What the agent reads from `meta_data.json`.
#[derive(Clone, Debug)]
struct MetaData {
    uuid: InstanceId,
    name: Option<String>,
}

#[derive(Deserialize)]
struct MetaDataJson {
    #[serde(default)]
    uuid: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

impl OpenStack {
    pub fn new(settings: OpenStackSettings) -> Result<Self> {
        let auth_url = parse_base_url(&settings.auth_url, "auth URL")?;
        if auth_url.path().ends_with("/v2.0") {
            return Err(Error::Invalid(format!(
                "auth URL {auth_url} is Keystone v2.0, which is gone: use the v3 URL"
            )));
        }
        let network_override = settings
            .network_endpoint_override
            .as_deref()
            .map(|u| keystone::network_url(u, "network endpoint override"))
            .transpose()?;
        let metadata_url = parse_base_url(&settings.metadata_url, "metadata URL")?;
        if let Some(id) = &settings.server_id {
            check_id("server", &id.0)?;
        }
        for (what, id) in [("port", &settings.port), ("VIP port", &settings.vip_port)] {
            if let Some(id) = id {
                check_id(what, id)?;
            }
        }
        if settings.request_timeout.is_zero() {
            return Err(Error::Invalid(
                "the request timeout must be positive".into(),
            ));
        }
        let http = HttpClient::new(&HttpOptions {
            request_timeout: settings.request_timeout,
            ca_file: settings.cacert.clone(),
            insecure: settings.insecure,
            retry: settings.retry.clone(),
            ..HttpOptions::default()
        })?;
        // The metadata service is link-local and answers at once, or not at all: short
        // timeouts, few retries, never through a proxy.
        let metadata = HttpClient::new(&HttpOptions {
            request_timeout: settings.request_timeout.min(Duration::from_secs(2)),
            retry: RetryPolicy {
                max_attempts: 3,
                base_delay: Duration::from_millis(100),
                max_delay: Duration::from_secs(1),
                max_elapsed: Duration::from_secs(10),
            },
            use_env_proxy: false,
            ..HttpOptions::default()
        })?;
        let keystone = Keystone::new(
            http.clone(),
            &auth_url,
            settings.credentials,
            settings.interface,
            settings.region,
            network_override,
            settings.source.clone(),
        );
        Ok(OpenStack {
            neutron: Neutron::new(keystone, http),
            mode: settings.mode,
            auth_url,
            source: settings.source,
            server_id: settings.server_id,
            metadata,
            metadata_url,
            meta: tokio::sync::OnceCell::new(),
            port: settings.port,
            vip_port: settings.vip_port,
            fip_targets: Mutex::new(HashMap::new()),
            vip_networks: Mutex::new(HashMap::new()),
            vip_ports: Mutex::new(HashMap::new()),
            vip_unrecorded: Mutex::new(HashSet::new()),
        })
    }

    pub fn mode(&self) -> OpenStackMode {
        self.mode
    }

    /// `meta_data.json` of the metadata service, read once.
    async fn meta_data(&self) -> Result<&MetaData> {
        self.meta
            .get_or_try_init(|| async {
                let mut url = self.metadata_url.clone();
                url.set_path(&format!(
                    "{}/openstack/latest/meta_data.json",
                    self.metadata_url.path().trim_end_matches('/')
                ));
                let response = self
                    .metadata
                    .send(&RequestSpec::new(Method::GET, url), |_| Ok(HeaderMap::new()))
                    .await
                    .map_err(|e| {
                        with_context(
                            e,
                            "cannot read this server's UUID from the metadata service (give it with -i)",
                        )
                    })?;
                let json: MetaDataJson = response.json()?;
                let uuid = json.uuid.map(|u| u.trim().to_string()).unwrap_or_default();
                check_id("server (meta_data.json uuid)", &uuid)?;
                Ok::<_, Error>(MetaData {
                    uuid: InstanceId(uuid),
                    name: json.name.filter(|n| !n.trim().is_empty()),
                })
            })
            .await
    }

    /// This server's UUID: configured, else from the metadata service.
    async fn own_id(&self) -> Result<InstanceId> {
        match &self.server_id {
            Some(id) => Ok(id.clone()),
            None => Ok(self.meta_data().await?.uuid.clone()),
        }
    }

    /// Whether `server` is this server, as far as known without asking anyone.
    fn is_self(&self, server: &InstanceId) -> bool {
        let known = self
            .server_id
            .as_ref()
            .or_else(|| self.meta.get().map(|m| &m.uuid));
        known == Some(server)
    }

    /// A security group's id, given its id or its (unique) name.
    async fn security_group(&self, group: &str) -> Result<String> {
        let group = group.trim();
        if uuid::Uuid::parse_str(group).is_ok() {
            let path = format!("/security-groups/{group}");
            match self.neutron.get::<SecurityGroupOne>(&path, &[]).await {
                Ok(one) if one.security_group.id.as_deref() == Some(group) => {
                    return Ok(group.to_string())
                }
                Ok(_) => {
                    return Err(Error::Invalid(format!(
                        "GET {path}: the answer is another security group"
                    )))
                }
                // Perhaps a name that looks like an id.
                Err(Error::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        let list: SecurityGroupList = self
            .neutron
            .get("/security-groups", &[("name", group)])
            .await?;
        let named: Vec<_> = list
            .security_groups
            .into_iter()
            .filter(|g| g.name.as_deref() == Some(group))
            .collect();
        match named.as_slice() {
            [] => Err(Error::NotFound(format!(
                "no security group named or with id {group:?}"
            ))),
            [one] => {
                let id = one.id.clone().unwrap_or_default();
                check_id("security group", &id)?;
                Ok(id)
            }
            _ => Err(Error::Invalid(format!(
                "several security groups are named {group:?}: use its id"
            ))),
        }
    }
}

#[async_trait::async_trait]
impl Provider for OpenStack {
    fn name(&self) -> &'static str {
        "openstack"
    }

    async fn whoami(&self) -> Result<Instance> {
        let id = self.own_id().await?;
        let ports =
            self.neutron.server_ports(&id.0).await.map_err(|e| {
                with_context(e, &format!("looking up the ports of this server ({id})"))
            })?;
        if ports.is_empty() {
            return Err(Error::NotFound(format!(
                "no Neutron port has device_id {id}: is that this server's UUID, in this project and region?"
            )));
        }
        let meta_name = self
            .meta
            .get()
            .filter(|m| m.uuid == id)
            .and_then(|m| m.name.clone());
        let name = meta_name
            .or_else(|| {
                ports
                    .iter()
                    .filter_map(|p| p.name.clone())
                    .find(|n| !n.trim().is_empty())
            })
            .unwrap_or_else(|| id.0.clone());
        let mut addresses = Vec::new();
        for addr in ports.iter().flat_map(|p| p.ips()) {
            if !addresses.contains(&addr) {
                addresses.push(addr);
            }
        }
        Ok(Instance {
            id,
            name,
            addresses,
        })
    }

    async fn peers(&self, group: &str, me: &InstanceId) -> Result<Vec<Instance>> {
        let group_id = self.security_group(group).await?;
        let ports = if self
            .neutron
            .has_extension("port-security-groups-filtering")
            .await?
        {
            self.neutron
                .ports(&[
                    ("security_groups", &group_id),
                    ("fields", "id"),
                    ("fields", "device_id"),
                    ("fields", "fixed_ips"),
                ])
                .await?
        } else {
            // As Octavia does without the extension: every port we can see, filtered here.
            let mut all = self
                .neutron
                .ports(&[
                    ("fields", "id"),
                    ("fields", "device_id"),
                    ("fields", "fixed_ips"),
                    ("fields", "security_groups"),
                ])
                .await?;
            all.retain(|p| p.security_groups.iter().flatten().any(|g| *g == group_id));
            all
        };
        let mut servers: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
        for port in &ports {
            let Some(device) = port.device() else {
                continue;
            };
            if device == me.0 {
                continue;
            }
            let addresses = servers.entry(device.to_string()).or_default();
            for addr in port.ips() {
                if !addresses.contains(&addr) {
                    addresses.push(addr);
                }
            }
        }
        Ok(servers
            .into_iter()
            .map(|(id, addresses)| Instance {
                id: InstanceId(id.clone()),
                name: id,
                addresses,
            })
            .collect())
    }

    async fn holders(&self, ip: IpAddr) -> Result<Vec<InstanceId>> {
        match self.mode {
            OpenStackMode::FloatingIp => self.fip_holders(ip).await,
            OpenStackMode::Vip => self.vip_holders(ip).await,
        }
    }

    async fn attach(&self, ip: IpAddr, to: &InstanceId) -> Result<()> {
        check_id("server", &to.0)?;
        match self.mode {
            OpenStackMode::FloatingIp => self.fip_attach(ip, to).await,
            OpenStackMode::Vip => self.vip_attach(ip, to).await,
        }
    }

    async fn detach(&self, ip: IpAddr, from: &InstanceId) -> Result<()> {
        check_id("server", &from.0)?;
        match self.mode {
            OpenStackMode::FloatingIp => self.fip_detach(ip, from).await,
            OpenStackMode::Vip => self.vip_detach(ip, from).await,
        }
    }

    /// Compare-and-swap in both modes. Floating-IP mode: the record rides in the fenced PUT
    /// that moves the address. VIP mode: every live peer's port is allowed the VIP at once (a
    /// permission; who serves it is decided on the wire), so the record goes in the VIP port's
    /// description, in a PUT fenced by its revision, before the claimant's port is allowed.
    /// Without a VIP port there is no record: `state()` shows none and a claim only allows the
    /// port.
    fn arbiter(&self) -> Arbiter {
        Arbiter::CompareAndSwap
    }

    async fn state(&self, ip: IpAddr) -> Result<AddressState> {
        match self.mode {
            OpenStackMode::FloatingIp => self.fip_state(ip).await,
            OpenStackMode::Vip => self.vip_state(ip).await,
        }
    }

    async fn claim(&self, ip: IpAddr, record: &ClaimRecord, seen: Option<u64>) -> Result<()> {
        check_id("server", &record.holder.0)?;
        match self.mode {
            OpenStackMode::FloatingIp => self.fip_claim(ip, record, seen).await,
            OpenStackMode::Vip => self.vip_claim(ip, record, seen).await,
        }
    }
}

/// An http(s) URL without query, fragment or credentials, its path without a trailing `/`.
pub(crate) fn parse_base_url(text: &str, what: &str) -> Result<Url> {
    let mut url =
        Url::parse(text.trim()).map_err(|e| Error::Invalid(format!("{what} {text:?}: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(Error::Invalid(format!(
            "{what} {text:?} must be an http:// or https:// URL"
        )));
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err(Error::Invalid(format!(
            "{what} must not carry a query, fragment or credentials"
        )));
    }
    let path = url.path().trim_end_matches('/').to_string();
    url.set_path(&path);
    Ok(url)
}

fn with_context(error: Error, context: &str) -> Error {
    let wrap = |m: String| format!("{context}: {m}");
    match error {
        Error::Retryable(m) => Error::Retryable(wrap(m)),
        Error::RateLimited {
            retry_after,
            message,
        } => Error::RateLimited {
            retry_after,
            message: wrap(message),
        },
        Error::Conflict(m) => Error::Conflict(wrap(m)),
        Error::NotFound(m) => Error::NotFound(wrap(m)),
        Error::Auth(m) => Error::Auth(wrap(m)),
        Error::Invalid(m) => Error::Invalid(wrap(m)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Secret;

    fn settings() -> OpenStackSettings {
        OpenStackSettings::new(
            "http://192.0.2.1:5000",
            Credentials::Password {
                user: User::Id("u".into()),
                password: Secret::new("pa55word-never-shown"),
                project: Project::Id("p".into()),
            },
        )
    }

    #[test]
    fn settings_are_validated_and_never_show_secrets() {
        let s = settings();
        let text = format!("{s:?}");
        assert!(!text.contains("pa55word"), "{text}");
        let provider = OpenStack::new(s.clone()).unwrap();
        let text = format!("{provider:?}");
        assert!(!text.contains("pa55word"), "{text}");
        assert_eq!(provider.name(), "openstack");
        assert_eq!(provider.mode(), OpenStackMode::FloatingIp);

        let bad = |f: &dyn Fn(&mut OpenStackSettings)| {
            let mut s = settings();
            f(&mut s);
            OpenStack::new(s).unwrap_err()
        };
        assert_eq!(bad(&|s| s.auth_url = "ftp://x".into()).kind(), "invalid");
        assert_eq!(bad(&|s| s.auth_url = "not a url".into()).kind(), "invalid");
        let e = bad(&|s| s.auth_url = "http://192.0.2.1:5000/v2.0".into());
        assert!(e.to_string().contains("v2.0"), "{e}");
        assert_eq!(
            bad(&|s| s.network_endpoint_override = Some("http://u:p@192.0.2.2".into())).kind(),
            "invalid"
        );
        assert_eq!(
            bad(&|s| s.server_id = Some(InstanceId("../etc".into()))).kind(),
            "invalid"
        );
        assert_eq!(bad(&|s| s.port = Some("a/b".into())).kind(), "invalid");
        assert_eq!(bad(&|s| s.vip_port = Some("".into())).kind(), "invalid");
        assert_eq!(
            bad(&|s| s.request_timeout = Duration::ZERO).kind(),
            "invalid"
        );
        assert_eq!(
            bad(&|s| s.cacert = Some("/nonexistent/ca.pem".into())).kind(),
            "invalid"
        );
        let mut s = settings();
        s.insecure = true;
        s.network_endpoint_override = Some("https://neutron.example:9696/".into());
        OpenStack::new(s).unwrap();
    }
}
