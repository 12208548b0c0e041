//! OpenStack credentials and settings, found where OpenStack users keep them: the `OS_*`
//! variables of an openrc, or a cloud of clouds.yaml with secure.yaml beside it
//! (shared/clouds/openstack.md §2).
//!
//! Both sources are first flattened into openstacksdk's key names (`OS_REGION_NAME` and
//! clouds.yaml's `region_name` are both `region_name`), then resolved once, so that the two
//! spellings cannot drift apart. Every error names the variable or key to fix.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_yaml_ng::{Mapping, Value};

use crate::http::RetryPolicy;
use crate::{Error, InstanceId, Result, Secret};

/// Base URL of the Nova metadata service.
pub const DEFAULT_METADATA_URL: &str = "http://169.254.169.254";

/// The domain users and projects are in when nothing names one: python-openstackclient's
/// `--os-default-domain` default.
const FALLBACK_DOMAIN_ID: &str = "default";

/// How the address floats between the servers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OpenStackMode {
    /// Re-associate a Neutron floating IP with the new holder's port.
    #[default]
    FloatingIp,
    /// A private VIP in the `allowed_address_pairs` of the peers' ports; the agent holds it on
    /// the NIC itself (the keepalived/Octavia pattern).
    Vip,
}

/// A Keystone domain, by id or by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Domain {
    Id(String),
    Name(String),
}

/// A Keystone user: an id is unique, a name only within its domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum User {
    Id(String),
    Name { name: String, domain: Domain },
}

/// The project a password token is scoped to: an id, or a name within its domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Project {
    Id(String),
    Name { name: String, domain: Domain },
}

/// An application credential: an id is unique, a name only for its user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApplicationCredential {
    Id(String),
    Name { name: String, user: User },
}

/// What to authenticate with. `Debug` shows no secret ([`Secret`] redacts itself).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credentials {
    /// `auth_type: password`: a project-scoped token.
    Password {
        user: User,
        password: Secret,
        project: Project,
    },
    /// `auth_type: v3applicationcredential`: the token is scoped to the credential's project,
    /// and Keystone refuses a `scope` in the request.
    ApplicationCredential {
        credential: ApplicationCredential,
        secret: Secret,
    },
}

/// Which of a service's endpoints to use (`OS_INTERFACE`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Interface {
    #[default]
    Public,
    Internal,
    Admin,
}

impl Interface {
    pub fn as_str(self) -> &'static str {
        match self {
            Interface::Public => "public",
            Interface::Internal => "internal",
            Interface::Admin => "admin",
        }
    }

    /// `public`, `internal`, `admin`, or the legacy `publicURL`/`internalURL`/`adminURL`
    /// (keystoneauth strips `URL` the same way).
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        let text = text.strip_suffix("URL").unwrap_or(text);
        match text.to_ascii_lowercase().as_str() {
            "public" => Some(Interface::Public),
            "internal" => Some(Interface::Internal),
            "admin" => Some(Interface::Admin),
            _ => None,
        }
    }
}

impl fmt::Display for Interface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything the OpenStack provider needs. `Debug` shows no secret.
#[derive(Clone, Debug)]
pub struct OpenStackSettings {
    /// Keystone, with or without `/v3` (`https://keystone.example:5000`).
    pub auth_url: String,
    pub credentials: Credentials,
    /// `OS_REGION_NAME`: required when the catalog has network endpoints in several regions.
    pub region: Option<String>,
    pub interface: Interface,
    /// Extra CA certificates (PEM) to trust (`OS_CACERT`).
    pub cacert: Option<PathBuf>,
    /// Accept any TLS certificate (`OS_INSECURE`, clouds.yaml `verify: false`).
    pub insecure: bool,
    /// Neutron's URL instead of the catalog's (`OS_NETWORK_ENDPOINT_OVERRIDE`); `/v2.0` is
    /// appended unless already there.
    pub network_endpoint_override: Option<String>,
    /// This server's UUID (`-i`); when absent it is read from the metadata service.
    pub server_id: Option<InstanceId>,
    /// Base URL of the metadata service.
    pub metadata_url: String,
    /// This server's port (`--port`), when it has several.
    pub port: Option<String>,
    /// The port holding the VIP as its fixed IP (`--vip-port`, VIP mode).
    pub vip_port: Option<String>,
    pub mode: OpenStackMode,
    /// Bound of one HTTP attempt.
    pub request_timeout: Duration,
    pub retry: RetryPolicy,
    /// Where the credentials came from, for messages: `the OS_* variables` or
    /// `cloud "prod" in /etc/openstack/clouds.yaml`.
    pub source: String,
}

impl OpenStackSettings {
    /// Defaults for everything but Keystone and the credentials: public interface, no region,
    /// floating-IP mode, server id from the metadata service, 10 s per request.
    pub fn new(auth_url: impl Into<String>, credentials: Credentials) -> Self {
        OpenStackSettings {
            auth_url: auth_url.into(),
            credentials,
            region: None,
            interface: Interface::Public,
            cacert: None,
            insecure: false,
            network_endpoint_override: None,
            server_id: None,
            metadata_url: DEFAULT_METADATA_URL.to_string(),
            port: None,
            vip_port: None,
            mode: OpenStackMode::FloatingIp,
            request_timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
            source: "the settings".to_string(),
        }
    }

    /// Credentials and options the way OpenStack users have them: the `OS_*` variables of an
    /// openrc (looked up through `env`), or the cloud `cloud` (`--os-cloud`, else `OS_CLOUD`)
    /// of clouds.yaml.
    ///
    /// clouds.yaml is `OS_CLIENT_CONFIG_FILE`, else the first `clouds.yaml` (or `.yml`) in
    /// `search_dirs`; secure.yaml (`OS_CLIENT_SECURE_FILE`, else the first in `search_dirs`)
    /// overrides its values. A cloud without a password or application-credential secret takes
    /// it from `OS_PASSWORD` / `OS_APPLICATION_CREDENTIAL_SECRET` (Horizon's clouds.yaml leaves
    /// the password out); no other variable mixes into a cloud. Empty values count as unset.
    /// Errors are one line naming the missing or invalid variable or key.
    pub fn from_env(
        env: &dyn Fn(&str) -> Option<String>,
        cloud: Option<&str>,
        search_dirs: &[PathBuf],
    ) -> Result<Self> {
        let var = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let cloud = cloud
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .or_else(|| var("OS_CLOUD").map(|c| c.trim().to_string()));
        let values = match cloud {
            Some(name) => {
                let mut values = Values::from_cloud(&name, &var, search_dirs)?;
                for key in ["password", "application_credential_secret"] {
                    if values.get(key).is_none() {
                        if let Some(v) = var(&env_name(key)) {
                            values.set_from_env(key, v);
                        }
                    }
                }
                values
            }
            None => {
                if var("OS_AUTH_URL").is_none() {
                    return Err(Error::Invalid(
                        "no OpenStack credentials: set --os-cloud/OS_CLOUD (a cloud of clouds.yaml) or the OS_* variables of an openrc (OS_AUTH_URL is not set)".into(),
                    ));
                }
                Values::from_env(&var)
            }
        };
        values.resolve()
    }

    /// Where clouds.yaml and secure.yaml are looked for, in order: the current directory,
    /// `~/.config/openstack` (`$XDG_CONFIG_HOME/openstack` when set), `/etc/openstack`.
    pub fn default_search_dirs() -> Vec<PathBuf> {
        let mut dirs = vec![std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."))];
        let non_empty = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        if let Some(xdg) = non_empty("XDG_CONFIG_HOME") {
            dirs.push(PathBuf::from(xdg).join("openstack"));
        }
        if let Some(home) = non_empty("HOME") {
            let dir = PathBuf::from(home).join(".config").join("openstack");
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
        dirs.push(PathBuf::from("/etc/openstack"));
        dirs
    }
}

/// Every setting read, by openstacksdk name (`region_name`, `username`, ...).
const KEYS: &[&str] = &[
    "auth_url",
    "auth_type",
    "identity_api_version",
    "username",
    "user_id",
    "password",
    "project_id",
    "project_name",
    "tenant_id",
    "tenant_name",
    "user_domain_id",
    "user_domain_name",
    "project_domain_id",
    "project_domain_name",
    "domain_id",
    "domain_name",
    "default_domain",
    "default_domain_id",
    "default_domain_name",
    "application_credential_id",
    "application_credential_name",
    "application_credential_secret",
    "region_name",
    "interface",
    "endpoint_type",
    "cacert",
    "insecure",
    "verify",
    "network_endpoint_override",
];

/// Keys that live in a cloud's `auth:` section (openstacksdk also finds them one level up).
const AUTH_KEYS: &[&str] = &[
    "auth_url",
    "username",
    "user_id",
    "password",
    "project_id",
    "project_name",
    "tenant_id",
    "tenant_name",
    "user_domain_id",
    "user_domain_name",
    "project_domain_id",
    "project_domain_name",
    "domain_id",
    "domain_name",
    "default_domain",
    "default_domain_id",
    "default_domain_name",
    "application_credential_id",
    "application_credential_name",
    "application_credential_secret",
];

/// `OS_` and the upper-cased key: the openrc spelling of an openstacksdk key.
fn env_name(key: &str) -> String {
    format!("OS_{}", key.to_ascii_uppercase())
}

/// The settings of one source, flattened, each with the name the user knows it by.
struct Values {
    /// key → (value, label in messages).
    entries: BTreeMap<&'static str, (String, String)>,
    /// `the OS_* variables` or `cloud "x" in /path/clouds.yaml`.
    source: String,
    /// The cloud's name, or `None` for the environment (labels are spelled differently).
    cloud: Option<String>,
}

impl Values {
    fn from_env(var: &dyn Fn(&str) -> Option<String>) -> Self {
        let mut entries = BTreeMap::new();
        for &key in KEYS {
            let name = env_name(key);
            if let Some(value) = var(&name) {
                entries.insert(key, (value.trim().to_string(), name));
            }
        }
        Values {
            entries,
            source: "the OS_* variables".to_string(),
            cloud: None,
        }
    }

    fn from_cloud(
        name: &str,
        var: &dyn Fn(&str) -> Option<String>,
        search_dirs: &[PathBuf],
    ) -> Result<Self> {
        let clouds_file = find_file(
            var("OS_CLIENT_CONFIG_FILE"),
            "OS_CLIENT_CONFIG_FILE",
            &["clouds.yaml", "clouds.yml"],
            search_dirs,
        )?
        .ok_or_else(|| {
            Error::Invalid(format!(
                "OpenStack cloud {name:?} requested, but no clouds.yaml in {}",
                search_dirs
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
        let clouds = read_yaml(&clouds_file)?;
        let available = cloud_names(&clouds);
        let mut cloud = cloud_entry(&clouds, name).cloned().ok_or_else(|| {
            Error::Invalid(format!(
                "no cloud {name:?} in {} (clouds: {})",
                clouds_file.display(),
                if available.is_empty() {
                    "none".to_string()
                } else {
                    available.join(", ")
                }
            ))
        })?;
        let mut source = format!("cloud {name:?} in {}", clouds_file.display());
        let secure_file = find_file(
            var("OS_CLIENT_SECURE_FILE"),
            "OS_CLIENT_SECURE_FILE",
            &["secure.yaml", "secure.yml"],
            search_dirs,
        )?;
        if let Some(secure_file) = secure_file {
            let secure = read_yaml(&secure_file)?;
            if let Some(over) = cloud_entry(&secure, name) {
                merge(&mut cloud, over);
                source.push_str(&format!(" and {}", secure_file.display()));
            }
        }
        let Value::Mapping(cloud) = cloud else {
            return Err(Error::Invalid(format!(
                "{source}: the cloud is not a mapping of settings"
            )));
        };
        let auth = match cloud.get("auth") {
            None | Some(Value::Null) => Mapping::new(),
            Some(Value::Mapping(m)) => m.clone(),
            Some(_) => return Err(Error::Invalid(format!("{source}: auth is not a mapping"))),
        };
        let mut entries = BTreeMap::new();
        for &key in KEYS {
            let in_auth = AUTH_KEYS.contains(&key);
            let found = in_auth
                .then(|| auth.get(key).map(|v| (v, format!("auth.{key}"))))
                .flatten()
                .or_else(|| cloud.get(key).map(|v| (v, key.to_string())));
            let Some((value, label)) = found else {
                continue;
            };
            match scalar(value) {
                Some(text) if !text.is_empty() => {
                    entries.insert(key, (text, label));
                }
                Some(_) => {}
                None => {
                    return Err(Error::Invalid(format!(
                        "{source}: {label} must be a single value"
                    )))
                }
            }
        }
        // `regions: [RegionOne, {name: RegionTwo, ...}]` stands for the first region when
        // `region_name` is not given, as in openstacksdk.
        if !entries.contains_key("region_name") {
            if let Some(Value::Sequence(regions)) = cloud.get("regions") {
                let first = regions.first().and_then(|r| match r {
                    Value::Mapping(m) => m.get("name").and_then(scalar),
                    other => scalar(other),
                });
                if let Some(region) = first.filter(|r| !r.is_empty()) {
                    entries.insert("region_name", (region, "regions".to_string()));
                }
            }
        }
        Ok(Values {
            entries,
            source,
            cloud: Some(name.to_string()),
        })
    }

    fn set_from_env(&mut self, key: &'static str, value: String) {
        self.entries
            .insert(key, (value.trim().to_string(), env_name(key)));
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.entries.get(key).map(|(v, _)| v.as_str())
    }

    /// How the user spells `key` in this source: `OS_USERNAME` or `auth.username`.
    fn label(&self, key: &str) -> String {
        if let Some((_, label)) = self.entries.get(key) {
            return label.clone();
        }
        match &self.cloud {
            None => env_name(key),
            Some(_) if AUTH_KEYS.contains(&key) => format!("auth.{key}"),
            Some(_) => key.to_string(),
        }
    }

    fn invalid(&self, message: String) -> Error {
        Error::Invalid(format!(
            "OpenStack credentials from {}: {message}",
            self.source
        ))
    }

    fn missing(&self, keys: &[&str], why: &str) -> Error {
        let names: Vec<String> = keys.iter().map(|k| self.label(k)).collect();
        let what = match names.as_slice() {
            [one] => format!("{one} is not set"),
            [a, b] => format!("{a} or {b} is not set"),
            _ => format!("none of {} is set", names.join(", ")),
        };
        self.invalid(format!("{what}{why}"))
    }

    fn resolve(self) -> Result<OpenStackSettings> {
        let auth_url = self
            .get("auth_url")
            .ok_or_else(|| self.missing(&["auth_url"], ""))?
            .to_string();
        if let Some(version) = self.get("identity_api_version") {
            if !matches!(version.trim_start_matches(['v', 'V']), "3" | "3.0") {
                return Err(self.invalid(format!(
                    "{}={version}: only Keystone v3 is supported",
                    self.label("identity_api_version")
                )));
            }
        }
        let app_cred_given = [
            "application_credential_id",
            "application_credential_name",
            "application_credential_secret",
        ]
        .iter()
        .any(|k| self.get(k).is_some());
        let app_cred = match self
            .get("auth_type")
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None => app_cred_given,
            Some("password" | "v3password") => false,
            Some("v3applicationcredential" | "applicationcredential") => true,
            Some(other) => {
                return Err(self.invalid(format!(
                    "{}={other} is not supported (password, v3applicationcredential)",
                    self.label("auth_type")
                )))
            }
        };
        let credentials = if app_cred {
            self.application_credential()?
        } else {
            self.password()?
        };
        let interface = match ["interface", "endpoint_type"]
            .into_iter()
            .find_map(|k| self.get(k).map(|v| (k, v)))
        {
            None => Interface::Public,
            Some((key, text)) => Interface::parse(text).ok_or_else(|| {
                self.invalid(format!(
                    "{}={text} is not public, internal or admin",
                    self.label(key)
                ))
            })?,
        };
        let mut insecure = match self.get("insecure") {
            None => false,
            Some(text) => self.boolean("insecure", text)?,
        };
        if let Some(text) = self.get("verify") {
            insecure |= !self.boolean("verify", text)?;
        }
        Ok(OpenStackSettings {
            auth_url,
            credentials,
            region: self.get("region_name").map(str::to_string),
            interface,
            cacert: self.get("cacert").map(PathBuf::from),
            insecure,
            network_endpoint_override: self.get("network_endpoint_override").map(str::to_string),
            server_id: None,
            metadata_url: DEFAULT_METADATA_URL.to_string(),
            port: None,
            vip_port: None,
            mode: OpenStackMode::FloatingIp,
            request_timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
            source: self.source.clone(),
        })
    }

    fn boolean(&self, key: &str, text: &str) -> Result<bool> {
        match text.to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(true),
            "0" | "false" | "no" | "off" => Ok(false),
            _ => Err(self.invalid(format!("{}={text} is not true or false", self.label(key)))),
        }
    }

    /// The first of `keys` that is set, as an id (`*_id` keys) or a name.
    fn domain(&self, keys: &[&str]) -> Domain {
        for key in keys {
            if let Some(v) = self.get(key) {
                return if key.ends_with("_name") {
                    Domain::Name(v.to_string())
                } else {
                    Domain::Id(v.to_string())
                };
            }
        }
        Domain::Id(FALLBACK_DOMAIN_ID.to_string())
    }

    /// The user by id, else by name in `OS_USER_DOMAIN_*`, `OS_DOMAIN_*` (openstacksdk's "same
    /// domain for both"), `OS_DEFAULT_DOMAIN*`, else the `default` domain.
    fn user(&self) -> Option<User> {
        if let Some(id) = self.get("user_id") {
            return Some(User::Id(id.to_string()));
        }
        let name = self.get("username")?;
        Some(User::Name {
            name: name.to_string(),
            domain: self.domain(&[
                "user_domain_id",
                "user_domain_name",
                "domain_id",
                "domain_name",
                "default_domain_id",
                "default_domain_name",
                "default_domain",
            ]),
        })
    }

    fn password(&self) -> Result<Credentials> {
        let user = self
            .user()
            .ok_or_else(|| self.missing(&["username", "user_id"], ""))?;
        let password = self.get("password").ok_or_else(|| {
            let hint = match &self.cloud {
                Some(_) => " (put it in secure.yaml, or set OS_PASSWORD)",
                None => "",
            };
            self.missing(&["password"], hint)
        })?;
        // Keystone v2's tenant is v3's project; old openrc files still say tenant.
        let project = if let Some(id) = self.get("project_id").or(self.get("tenant_id")) {
            Project::Id(id.to_string())
        } else if let Some(name) = self.get("project_name").or(self.get("tenant_name")) {
            Project::Name {
                name: name.to_string(),
                domain: self.domain(&[
                    "project_domain_id",
                    "project_domain_name",
                    "domain_id",
                    "domain_name",
                    "default_domain_id",
                    "default_domain_name",
                    "default_domain",
                ]),
            }
        } else {
            return Err(self.missing(
                &["project_name", "project_id"],
                " (Neutron needs a project-scoped token)",
            ));
        };
        Ok(Credentials::Password {
            user,
            password: Secret::new(password),
            project,
        })
    }

    fn application_credential(&self) -> Result<Credentials> {
        let secret = self.get("application_credential_secret").ok_or_else(|| {
            self.missing(
                &["application_credential_secret"],
                " (application credential)",
            )
        })?;
        let credential = if let Some(id) = self.get("application_credential_id") {
            ApplicationCredential::Id(id.to_string())
        } else if let Some(name) = self.get("application_credential_name") {
            let user = self.user().ok_or_else(|| {
                self.missing(
                    &["username", "user_id"],
                    &format!(
                        " (an application credential by name, {}, belongs to a user)",
                        self.label("application_credential_name")
                    ),
                )
            })?;
            ApplicationCredential::Name {
                name: name.to_string(),
                user,
            }
        } else {
            return Err(self.missing(
                &["application_credential_id", "application_credential_name"],
                "",
            ));
        };
        Ok(Credentials::ApplicationCredential {
            credential,
            secret: Secret::new(secret),
        })
    }
}

/// The explicit file when given (it must exist), else the first of `names` in `dirs`.
fn find_file(
    explicit: Option<String>,
    variable: &str,
    names: &[&str],
    dirs: &[PathBuf],
) -> Result<Option<PathBuf>> {
    if let Some(path) = explicit {
        let path = PathBuf::from(path.trim());
        if !path.is_file() {
            return Err(Error::Invalid(format!(
                "{variable}={}: no such file",
                path.display()
            )));
        }
        return Ok(Some(path));
    }
    Ok(dirs
        .iter()
        .flat_map(|dir| names.iter().map(move |name| dir.join(name)))
        .find(|path| path.is_file()))
}

fn read_yaml(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Invalid(format!("cannot read {}: {e}", path.display())))?;
    let mut value: Value = serde_yaml_ng::from_str(&text).map_err(|e| {
        let e = e.to_string().replace(['\n', '\r'], " ");
        Error::Invalid(format!("{} is not valid YAML: {e}", path.display()))
    })?;
    // `<<: *anchor` merge keys, which clouds.yaml files use to share settings between clouds.
    value
        .apply_merge()
        .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
    Ok(value)
}

fn cloud_entry<'a>(file: &'a Value, name: &str) -> Option<&'a Value> {
    file.get("clouds")?.get(name)
}

fn cloud_names(file: &Value) -> Vec<String> {
    match file.get("clouds") {
        Some(Value::Mapping(m)) => m.keys().filter_map(scalar).collect(),
        _ => Vec::new(),
    }
}

/// secure.yaml over clouds.yaml: mappings merge key by key, anything else is replaced.
fn merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Mapping(base), Value::Mapping(over)) => {
            for (key, value) in over {
                match base.get_mut(key) {
                    Some(existing) => merge(existing, value),
                    None => {
                        base.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (base, over) => *base = over.clone(),
    }
}

/// A YAML scalar as text (`verify: false` → `false`, `project_id: 123` → `123`).
fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.trim().to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::Null => Some(String::new()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    fn from(pairs: &[(&str, &str)]) -> Result<OpenStackSettings> {
        OpenStackSettings::from_env(&env_of(pairs), None, &[])
    }

    fn err(pairs: &[(&str, &str)]) -> String {
        match from(pairs) {
            Ok(s) => panic!("expected an error, got {s:?}"),
            Err(e) => {
                assert_eq!(e.kind(), "invalid", "{e}");
                e.to_string()
            }
        }
    }

    /// Horizon's password openrc (api_access/openrc.sh.template).
    const HORIZON: &[(&str, &str)] = &[
        ("OS_AUTH_URL", "https://keystone.example:5000/v3"),
        ("OS_PROJECT_ID", "7e00aa"),
        ("OS_PROJECT_NAME", "demo"),
        ("OS_USER_DOMAIN_NAME", "Default"),
        ("OS_PROJECT_DOMAIN_ID", "default"),
        ("OS_USERNAME", "demo"),
        ("OS_PASSWORD", "hunter2"),
        ("OS_REGION_NAME", "RegionOne"),
        ("OS_INTERFACE", "public"),
        ("OS_IDENTITY_API_VERSION", "3"),
    ];

    #[test]
    fn horizon_password_openrc() {
        let s = from(HORIZON).unwrap();
        assert_eq!(s.auth_url, "https://keystone.example:5000/v3");
        assert_eq!(
            s.credentials,
            Credentials::Password {
                user: User::Name {
                    name: "demo".into(),
                    domain: Domain::Name("Default".into())
                },
                password: Secret::new("hunter2"),
                project: Project::Id("7e00aa".into()),
            }
        );
        assert_eq!(s.region.as_deref(), Some("RegionOne"));
        assert_eq!(s.interface, Interface::Public);
        assert_eq!(s.source, "the OS_* variables");
        assert!(!s.insecure);
        let text = format!("{s:?}");
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[test]
    fn names_ids_and_domain_fallbacks() {
        let s = from(&[
            ("OS_AUTH_URL", "http://192.0.2.1:5000"),
            ("OS_USER_ID", "u1"),
            ("OS_USERNAME", "ignored-when-the-id-is-given"),
            ("OS_PASSWORD", "p"),
            ("OS_PROJECT_NAME", "demo"),
            ("OS_PROJECT_DOMAIN_NAME", "Users"),
            ("OS_REGION_NAME", ""),
        ])
        .unwrap();
        assert_eq!(
            s.credentials,
            Credentials::Password {
                user: User::Id("u1".into()),
                password: Secret::new("p"),
                project: Project::Name {
                    name: "demo".into(),
                    domain: Domain::Name("Users".into())
                },
            }
        );
        assert_eq!(s.region, None, "empty counts as unset");

        let domains = |extra: &[(&str, &str)]| {
            let mut env = vec![
                ("OS_AUTH_URL", "http://192.0.2.1:5000"),
                ("OS_USERNAME", "demo"),
                ("OS_PASSWORD", "p"),
                ("OS_PROJECT_NAME", "demo"),
            ];
            env.extend_from_slice(extra);
            match from(&env).unwrap().credentials {
                Credentials::Password {
                    user: User::Name { domain: u, .. },
                    project: Project::Name { domain: p, .. },
                    ..
                } => (u, p),
                other => panic!("{other:?}"),
            }
        };
        let id = |s: &str| Domain::Id(s.into());
        let name = |s: &str| Domain::Name(s.into());
        assert_eq!(domains(&[]), (id("default"), id("default")));
        assert_eq!(
            domains(&[("OS_DEFAULT_DOMAIN", "d0")]),
            (id("d0"), id("d0"))
        );
        assert_eq!(
            domains(&[("OS_DOMAIN_NAME", "Both"), ("OS_DEFAULT_DOMAIN", "d0")]),
            (name("Both"), name("Both"))
        );
        assert_eq!(
            domains(&[
                ("OS_USER_DOMAIN_ID", "ud"),
                ("OS_PROJECT_DOMAIN_NAME", "Pd"),
                ("OS_DEFAULT_DOMAIN", "d0")
            ]),
            (id("ud"), name("Pd"))
        );
        // Keystone v2 leftovers still name the project.
        let s = from(&[
            ("OS_AUTH_URL", "http://192.0.2.1:5000"),
            ("OS_USERNAME", "demo"),
            ("OS_PASSWORD", "p"),
            ("OS_TENANT_NAME", "old"),
        ])
        .unwrap();
        assert!(matches!(
            s.credentials,
            Credentials::Password { project: Project::Name { ref name, .. }, .. } if name == "old"
        ));
    }

    #[test]
    fn application_credentials() {
        // Horizon's application-credential openrc.
        let s = from(&[
            ("OS_AUTH_TYPE", "v3applicationcredential"),
            ("OS_AUTH_URL", "https://keystone.example:5000/v3"),
            ("OS_IDENTITY_API_VERSION", "3"),
            ("OS_REGION_NAME", "RegionOne"),
            ("OS_INTERFACE", "public"),
            ("OS_APPLICATION_CREDENTIAL_ID", "3e19c26e"),
            ("OS_APPLICATION_CREDENTIAL_SECRET", "app-secret"),
            // A project left over in the environment is no scope for an application credential.
            ("OS_PROJECT_NAME", "demo"),
        ])
        .unwrap();
        assert_eq!(
            s.credentials,
            Credentials::ApplicationCredential {
                credential: ApplicationCredential::Id("3e19c26e".into()),
                secret: Secret::new("app-secret"),
            }
        );
        assert!(!format!("{s:?}").contains("app-secret"));
        // Inferred from the values, by name with its user.
        let s = from(&[
            ("OS_AUTH_URL", "http://192.0.2.1:5000"),
            ("OS_APPLICATION_CREDENTIAL_NAME", "exoip"),
            ("OS_APPLICATION_CREDENTIAL_SECRET", "s"),
            ("OS_USERNAME", "demo"),
            ("OS_USER_DOMAIN_ID", "default"),
            ("OS_PASSWORD", "unused"),
        ])
        .unwrap();
        assert_eq!(
            s.credentials,
            Credentials::ApplicationCredential {
                credential: ApplicationCredential::Name {
                    name: "exoip".into(),
                    user: User::Name {
                        name: "demo".into(),
                        domain: Domain::Id("default".into())
                    },
                },
                secret: Secret::new("s"),
            }
        );
        // An explicit auth type wins over the inference.
        let s = from(&[
            ("OS_AUTH_TYPE", "password"),
            ("OS_AUTH_URL", "http://192.0.2.1:5000"),
            ("OS_APPLICATION_CREDENTIAL_ID", "x"),
            ("OS_USERNAME", "demo"),
            ("OS_PASSWORD", "p"),
            ("OS_PROJECT_ID", "pid"),
        ])
        .unwrap();
        assert!(matches!(s.credentials, Credentials::Password { .. }));
    }

    #[test]
    fn interfaces_and_transport_options() {
        let mut env = HORIZON.to_vec();
        env.retain(|(k, _)| *k != "OS_INTERFACE");
        env.push(("OS_ENDPOINT_TYPE", "internalURL"));
        env.push(("OS_CACERT", "/etc/ssl/cloud.pem"));
        env.push(("OS_INSECURE", "True"));
        env.push((
            "OS_NETWORK_ENDPOINT_OVERRIDE",
            "https://neutron.example:9696",
        ));
        let s = from(&env).unwrap();
        assert_eq!(s.interface, Interface::Internal);
        assert_eq!(s.cacert, Some(PathBuf::from("/etc/ssl/cloud.pem")));
        assert!(s.insecure);
        assert_eq!(
            s.network_endpoint_override.as_deref(),
            Some("https://neutron.example:9696")
        );
        // OS_INTERFACE wins over the legacy spelling.
        env.push(("OS_INTERFACE", "adminURL"));
        assert_eq!(from(&env).unwrap().interface, Interface::Admin);
        for (text, want) in [
            ("public", Some(Interface::Public)),
            ("publicURL", Some(Interface::Public)),
            ("Internal", Some(Interface::Internal)),
            ("admin", Some(Interface::Admin)),
            ("private", None),
            ("URL", None),
        ] {
            assert_eq!(Interface::parse(text), want, "{text}");
        }
    }

    #[test]
    fn errors_name_the_variable() {
        let without = |name: &str| {
            let env: Vec<_> = HORIZON
                .iter()
                .copied()
                .filter(|(k, _)| *k != name)
                .collect();
            env
        };
        assert!(err(&without("OS_AUTH_URL")).contains("OS_AUTH_URL is not set"));
        assert!(err(&without("OS_PASSWORD")).contains("OS_PASSWORD is not set"));
        let mut env = without("OS_USERNAME");
        assert!(err(&env).contains("OS_USERNAME or OS_USER_ID is not set"));
        env.push(("OS_USERNAME", "  "));
        assert!(err(&env).contains("OS_USERNAME or OS_USER_ID is not set"));
        let env: Vec<_> = HORIZON
            .iter()
            .copied()
            .filter(|(k, _)| !k.starts_with("OS_PROJECT_"))
            .collect();
        assert!(err(&env).contains("OS_PROJECT_NAME or OS_PROJECT_ID is not set"));
        let mut env = HORIZON.to_vec();
        env.push(("OS_INTERFACE", "private"));
        env.retain(|(k, v)| *k != "OS_INTERFACE" || *v == "private");
        assert!(err(&env).contains("OS_INTERFACE=private"));
        let mut env = HORIZON.to_vec();
        env.retain(|(k, _)| *k != "OS_IDENTITY_API_VERSION");
        env.push(("OS_IDENTITY_API_VERSION", "2"));
        assert!(err(&env).contains("OS_IDENTITY_API_VERSION=2"));
        let mut env = HORIZON.to_vec();
        env.push(("OS_AUTH_TYPE", "v3oidcpassword"));
        assert!(err(&env).contains("OS_AUTH_TYPE=v3oidcpassword is not supported"));
        let mut env = HORIZON.to_vec();
        env.push(("OS_INSECURE", "maybe"));
        assert!(err(&env).contains("OS_INSECURE=maybe"));
        let e = err(&[
            ("OS_AUTH_URL", "http://192.0.2.1:5000"),
            ("OS_APPLICATION_CREDENTIAL_NAME", "exoip"),
            ("OS_APPLICATION_CREDENTIAL_SECRET", "s3cr3t"),
        ]);
        assert!(e.contains("OS_USERNAME or OS_USER_ID is not set"), "{e}");
        assert!(!e.contains("s3cr3t"), "{e}");
        let e = err(&[
            ("OS_AUTH_URL", "http://192.0.2.1:5000"),
            ("OS_APPLICATION_CREDENTIAL_ID", "id"),
        ]);
        assert!(
            e.contains("OS_APPLICATION_CREDENTIAL_SECRET is not set"),
            "{e}"
        );
        let e = err(&[]);
        assert!(e.contains("OS_CLOUD") && e.contains("OS_AUTH_URL"), "{e}");
        assert!(!e.contains('\n'), "one line: {e}");
    }

    const CLOUDS: &str = r#"
clouds:
  prod:
    auth:
      auth_url: https://keystone.example:5000
      username: demo
      project_id: 7e00aa
      project_name: demo
      user_domain_name: Default
    region_name: RegionOne
    interface: internal
    identity_api_version: 3
    verify: false
  appcred:
    auth_type: "v3applicationcredential"
    auth:
      auth_url: https://keystone.example:5000/v3
      application_credential_id: 3e19c26e
      application_credential_secret: from-clouds-yaml
    regions:
      - name: RegionTwo
      - RegionThree
"#;

    #[test]
    fn clouds_yaml_with_secure_yaml_and_env_secrets() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("clouds.yaml"), CLOUDS).unwrap();
        let dirs = vec![dir.path().to_path_buf()];
        // Horizon's clouds.yaml has no password: OS_PASSWORD supplies it, OS_* values that the
        // cloud has do not override them.
        let env = env_of(&[
            ("OS_PASSWORD", "env-password"),
            ("OS_REGION_NAME", "Elsewhere"),
        ]);
        let s = OpenStackSettings::from_env(&env, Some("prod"), &dirs).unwrap();
        assert_eq!(s.auth_url, "https://keystone.example:5000");
        assert_eq!(
            s.credentials,
            Credentials::Password {
                user: User::Name {
                    name: "demo".into(),
                    domain: Domain::Name("Default".into())
                },
                password: Secret::new("env-password"),
                project: Project::Id("7e00aa".into()),
            }
        );
        assert_eq!(s.region.as_deref(), Some("RegionOne"));
        assert_eq!(s.interface, Interface::Internal);
        assert!(s.insecure, "verify: false");
        assert!(s.source.contains("cloud \"prod\" in"), "{}", s.source);

        // Without any password: the message names the key and where to put it.
        let e = OpenStackSettings::from_env(&env_of(&[]), Some("prod"), &dirs).unwrap_err();
        assert!(e.to_string().contains("auth.password is not set"), "{e}");
        assert!(e.to_string().contains("secure.yaml"), "{e}");

        // secure.yaml beside it overrides and adds, key by key.
        std::fs::write(
            dir.path().join("secure.yaml"),
            "clouds:\n  prod:\n    auth:\n      password: from-secure-yaml\n    region_name: RegionSecure\n",
        )
        .unwrap();
        let s = OpenStackSettings::from_env(&env, Some("prod"), &dirs).unwrap();
        assert!(matches!(
            s.credentials,
            Credentials::Password { ref password, project: Project::Id(_), .. }
                if password.expose() == "from-secure-yaml"
        ));
        assert_eq!(s.region.as_deref(), Some("RegionSecure"));
        assert!(s.source.contains("secure.yaml"), "{}", s.source);

        // OS_CLOUD selects when --os-cloud is not given; the first region of `regions`.
        let s =
            OpenStackSettings::from_env(&env_of(&[("OS_CLOUD", "appcred")]), None, &dirs).unwrap();
        assert_eq!(
            s.credentials,
            Credentials::ApplicationCredential {
                credential: ApplicationCredential::Id("3e19c26e".into()),
                secret: Secret::new("from-clouds-yaml"),
            }
        );
        assert_eq!(s.region.as_deref(), Some("RegionTwo"));
        assert_eq!(s.interface, Interface::Public);

        let e = OpenStackSettings::from_env(&env_of(&[]), Some("nope"), &dirs).unwrap_err();
        assert!(
            e.to_string().contains("no cloud \"nope\"") && e.to_string().contains("prod, appcred"),
            "{e}"
        );
    }

    #[test]
    fn search_order_and_explicit_files() {
        let first = tempfile::tempdir().unwrap();
        let second = tempfile::tempdir().unwrap();
        let cloud = |url: &str| {
            format!("clouds:\n  c:\n    auth:\n      auth_url: {url}\n      application_credential_id: i\n      application_credential_secret: s\n")
        };
        std::fs::write(second.path().join("clouds.yaml"), cloud("http://192.0.2.2")).unwrap();
        let dirs = vec![first.path().to_path_buf(), second.path().to_path_buf()];
        let url = |env: &[(&str, &str)]| {
            OpenStackSettings::from_env(&env_of(env), Some("c"), &dirs)
                .map(|s| s.auth_url)
                .map_err(|e| e.to_string())
        };
        assert_eq!(url(&[]).unwrap(), "http://192.0.2.2");
        std::fs::write(first.path().join("clouds.yml"), cloud("http://192.0.2.1")).unwrap();
        assert_eq!(
            url(&[]).unwrap(),
            "http://192.0.2.1",
            "the first file found wins"
        );
        let explicit = second.path().join("other.yaml");
        std::fs::write(&explicit, cloud("http://192.0.2.3")).unwrap();
        let explicit = explicit.to_str().unwrap();
        assert_eq!(
            url(&[("OS_CLIENT_CONFIG_FILE", explicit)]).unwrap(),
            "http://192.0.2.3"
        );
        let e = url(&[("OS_CLIENT_CONFIG_FILE", "/nonexistent/clouds.yaml")]).unwrap_err();
        assert!(
            e.contains("OS_CLIENT_CONFIG_FILE=/nonexistent/clouds.yaml"),
            "{e}"
        );
        // An explicit secure file, with YAML merge keys.
        let secure = second.path().join("s.yaml");
        std::fs::write(
            &secure,
            "base: &b\n  auth:\n    auth_url: http://192.0.2.4\nclouds:\n  c:\n    <<: *b\n",
        )
        .unwrap();
        assert_eq!(
            url(&[("OS_CLIENT_SECURE_FILE", secure.to_str().unwrap())]).unwrap(),
            "http://192.0.2.4"
        );
        let empty = tempfile::tempdir().unwrap();
        let e = OpenStackSettings::from_env(&env_of(&[]), Some("c"), &[empty.path().into()])
            .unwrap_err();
        assert!(e.to_string().contains("no clouds.yaml in"), "{e}");
        std::fs::write(empty.path().join("clouds.yaml"), "clouds: [unclosed").unwrap();
        let e = OpenStackSettings::from_env(&env_of(&[]), Some("c"), &[empty.path().into()])
            .unwrap_err();
        assert!(e.to_string().contains("not valid YAML"), "{e}");
        assert!(!e.to_string().contains('\n'), "{e}");
    }

    #[test]
    fn default_search_dirs_end_in_etc() {
        let dirs = OpenStackSettings::default_search_dirs();
        assert_eq!(dirs.last(), Some(&PathBuf::from("/etc/openstack")));
        assert!(dirs.len() >= 2);
    }
}
