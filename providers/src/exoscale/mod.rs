//! Exoscale API v2 provider: finds the elastic IP and its holders, moves it with signed
//! attach/detach calls and waits for the resulting operations (shared/clouds/exoscale.md §9).
//!
//! "The IP moves" on Exoscale means: attach the EIP to the survivor, then detach it from every
//! other holder (an EIP may be attached to several instances at once). The guest must hold the
//! address as a /32 (or /128) on loopback to answer for it.
//!
//! The claim record (`docs/arbiter.md`) lives in the EIP's labels `exoip-epoch` and
//! `exoip-holder`. API v2 has no version check on `PUT /elastic-ip/{id}`, so a claim is
//! write-then-verify ([`Arbiter::WriteThenVerify`]): write the labels, attach, read them back.

pub mod sign;

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::http::{HttpClient, HttpOptions, Method, RequestSpec, RetryPolicy, Url};
use crate::{
    AddressState, Arbiter, ClaimRecord, Error, Instance, InstanceId, Provider, Result, Secret,
};

pub const DEFAULT_ZONE: &str = "ch-gva-2";
pub const DEFAULT_METADATA_URL: &str = "http://169.254.169.254";

/// Operation polling: first look after 25 ms, doubling up to 1 s. A takeover is latency
/// critical and attach/detach usually completes within a second or two.
const POLL_FIRST: Duration = Duration::from_millis(25);
const POLL_MAX: Duration = Duration::from_secs(1);
/// As the official clients do: a flaky poll is not a failed operation, five in a row are.
const POLL_MAX_ERRORS: u32 = 5;

/// Query values: everything but RFC 3986 unreserved characters is percent-encoded, so `+`
/// can never be read back as a space by a form-style decoder.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The elastic IP labels that hold the claim record (`docs/arbiter.md`).
pub const EPOCH_LABEL: &str = "exoip-epoch";
pub const HOLDER_LABEL: &str = "exoip-holder";

/// The claim record of an elastic IP's labels. `None` when there is none, or when it is
/// incomplete or malformed (edited by hand): a claim then writes a well-formed one over it.
pub(crate) fn record_from_labels(epoch: Option<&str>, holder: Option<&str>) -> Option<ClaimRecord> {
    let epoch = epoch?.trim().parse::<u64>().ok()?;
    let holder = holder?.trim();
    check_id("holder", holder).ok()?;
    Some(ClaimRecord {
        epoch,
        holder: InstanceId(holder.to_string()),
    })
}

/// The API v2 base URL of a zone, e.g. `https://api-ch-gva-2.exoscale.com/v2`.
pub fn default_endpoint(zone: &str) -> String {
    format!("https://api-{zone}.exoscale.com/v2")
}

/// Everything the Exoscale provider needs.
#[derive(Clone)]
pub struct ExoscaleConfig {
    /// Full base URL including `/v2` (zone specific), e.g. `https://api-ch-gva-2.exoscale.com/v2`
    /// or `http://192.0.2.1:8080/v2`. A URL without a path gets `/v2`.
    pub endpoint: String,
    pub api_key: String,
    pub api_secret: Secret,
    /// This instance's id; when absent it is read from the metadata service.
    pub instance_id: Option<InstanceId>,
    /// Base URL of the metadata service.
    pub metadata_url: String,
    /// Bound of one HTTP attempt.
    pub request_timeout: Duration,
    /// Bound of one attach or detach, the request and the operation polling included.
    pub operation_timeout: Duration,
    /// Extra CA certificates (PEM) to trust, e.g. for a TLS-intercepting proxy.
    pub ca_file: Option<PathBuf>,
    pub retry: RetryPolicy,
}

impl ExoscaleConfig {
    /// Defaults for everything but the credentials: zone `ch-gva-2`, id from the metadata
    /// service, 10 s per request, 60 s per operation.
    pub fn new(api_key: impl Into<String>, api_secret: Secret) -> Self {
        ExoscaleConfig {
            endpoint: default_endpoint(DEFAULT_ZONE),
            api_key: api_key.into(),
            api_secret,
            instance_id: None,
            metadata_url: DEFAULT_METADATA_URL.to_string(),
            request_timeout: Duration::from_secs(10),
            operation_timeout: Duration::from_secs(60),
            ca_file: None,
            retry: RetryPolicy::default(),
        }
    }
}

impl fmt::Debug for ExoscaleConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExoscaleConfig")
            .field("endpoint", &self.endpoint)
            .field("api_key", &mask(&self.api_key))
            .field("api_secret", &self.api_secret)
            .field("instance_id", &self.instance_id)
            .field("metadata_url", &self.metadata_url)
            .field("request_timeout", &self.request_timeout)
            .field("operation_timeout", &self.operation_timeout)
            .field("ca_file", &self.ca_file)
            .field("retry", &self.retry)
            .finish()
    }
}

/// Enough of an API key to tell two apart in a log (`EXO…`), not enough to use it.
fn mask(key: &str) -> String {
    let prefix: String = key.chars().take(3).collect();
    format!("{prefix}…")
}

/// The Exoscale API v2 client.
pub struct Exoscale {
    /// Endpoint with its path (`/v2`) and without a trailing slash.
    base: Url,
    api_key: String,
    api_secret: Secret,
    http: HttpClient,
    /// One attempt per poll: the poll loop has its own schedule and error budget.
    poll: HttpClient,
    metadata: HttpClient,
    metadata_url: Url,
    instance_id: Option<InstanceId>,
    /// The id read from the metadata service, which cannot change while we run.
    metadata_id: Mutex<Option<InstanceId>>,
    /// Elastic IP address → EIP id, dropped when the API says that id no longer exists.
    eips: Mutex<HashMap<IpAddr, String>>,
    operation_timeout: Duration,
}

impl fmt::Debug for Exoscale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Exoscale")
            .field("endpoint", &self.base.as_str())
            .field("api_key", &mask(&self.api_key))
            .field("instance_id", &self.instance_id)
            .field("metadata_url", &self.metadata_url.as_str())
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Attach,
    Detach,
}

impl Action {
    fn verb(self) -> &'static str {
        match self {
            Action::Attach => "attach",
            Action::Detach => "detach",
        }
    }
}

/// Why waiting for an operation ended without success.
enum WaitError {
    /// The operation itself ended in `failure` or `timeout`.
    Terminal(Error),
    /// We could not find out (polling errors, our deadline, a malformed operation).
    Unknown(Error),
}

impl Exoscale {
    pub fn new(cfg: ExoscaleConfig) -> Result<Self> {
        let mut base = parse_base_url(&cfg.endpoint, "endpoint")?;
        if base.path().is_empty() || base.path() == "/" {
            base.set_path("/v2");
        }
        let metadata_url = parse_base_url(&cfg.metadata_url, "metadata URL")?;
        if cfg.api_key.is_empty()
            || !cfg
                .api_key
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b',' && b != b'=')
        {
            return Err(Error::Invalid(
                "the Exoscale API key is empty or contains characters not allowed in it".into(),
            ));
        }
        if cfg.api_secret.expose().is_empty() {
            return Err(Error::Invalid("the Exoscale API secret is empty".into()));
        }
        if cfg.request_timeout.is_zero() || cfg.operation_timeout.is_zero() {
            return Err(Error::Invalid(
                "request and operation timeouts must be positive".into(),
            ));
        }
        if let Some(id) = &cfg.instance_id {
            check_id("instance", &id.0)?;
        }
        let http = HttpClient::new(&HttpOptions {
            request_timeout: cfg.request_timeout,
            ca_file: cfg.ca_file.clone(),
            retry: cfg.retry.clone(),
            ..HttpOptions::default()
        })?;
        let poll = http.with_policy(
            cfg.request_timeout,
            RetryPolicy {
                max_attempts: 1,
                max_elapsed: cfg.operation_timeout,
                ..cfg.retry.clone()
            },
        );
        // The metadata service is link-local and answers at once, or not at all (not on
        // Exoscale, private instance): short timeouts, few retries, never through a proxy.
        let metadata = HttpClient::new(&HttpOptions {
            request_timeout: cfg.request_timeout.min(Duration::from_secs(2)),
            ca_file: cfg.ca_file.clone(),
            retry: RetryPolicy {
                max_attempts: 3,
                base_delay: Duration::from_millis(100),
                max_delay: Duration::from_secs(1),
                max_elapsed: Duration::from_secs(10),
            },
            use_env_proxy: false,
            ..HttpOptions::default()
        })?;
        Ok(Exoscale {
            base,
            api_key: cfg.api_key,
            api_secret: cfg.api_secret,
            http,
            poll,
            metadata,
            metadata_url,
            instance_id: cfg.instance_id,
            metadata_id: Mutex::new(None),
            eips: Mutex::new(HashMap::new()),
            operation_timeout: cfg.operation_timeout,
        })
    }

    /// `{base}/v2{path}?{query}`; empty values are left out and names must not repeat, because
    /// the official signers disagree on both (exoscale.md 2.4).
    fn url(&self, path: &str, query: &[(&str, &str)]) -> Result<Url> {
        let mut url = join(&self.base, path);
        let mut parts = Vec::new();
        for (i, (name, value)) in query.iter().enumerate() {
            if value.is_empty() {
                continue;
            }
            if query[..i].iter().any(|(n, _)| n == name) {
                return Err(Error::Invalid(format!(
                    "query parameter {name} given twice"
                )));
            }
            parts.push(format!(
                "{name}={}",
                utf8_percent_encode(value, QUERY_VALUE)
            ));
        }
        url.set_query((!parts.is_empty()).then(|| parts.join("&")).as_deref());
        Ok(url)
    }

    /// Signs each attempt anew: `expires` moves with the clock, so retries never go stale.
    fn authorize(&self) -> impl Fn(&RequestSpec) -> Result<HeaderMap> + '_ {
        move |spec: &RequestSpec| {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_err(|_| Error::Invalid("the system clock is before 1970".into()))?;
            let expires = now.as_secs() + sign::VALIDITY_SECS;
            let header = sign::authorization(
                &self.api_key,
                self.api_secret.expose(),
                spec.method.as_str(),
                &spec.path_and_query(),
                spec.body_bytes(),
                expires,
            );
            let mut value = HeaderValue::from_str(&header).map_err(|_| {
                Error::Invalid("the API key cannot be sent in an HTTP header".into())
            })?;
            value.set_sensitive(true);
            let mut headers = HeaderMap::new();
            headers.insert(AUTHORIZATION, value);
            Ok(headers)
        }
    }

    async fn call<T: DeserializeOwned>(&self, spec: RequestSpec, deadline: Instant) -> Result<T> {
        self.http
            .send_until(&spec, self.authorize(), deadline)
            .await?
            .json()
    }

    async fn get<T: DeserializeOwned>(&self, path: &str, query: &[(&str, &str)]) -> Result<T> {
        let spec = RequestSpec::new(Method::GET, self.url(path, query)?);
        self.call(spec, Instant::now() + self.http.retry_policy().max_elapsed)
            .await
    }

    async fn get_instance(&self, id: &str, deadline: Instant) -> Result<InstanceJson> {
        check_id("instance", id)?;
        let spec = RequestSpec::new(Method::GET, self.url(&format!("/instance/{id}"), &[])?);
        self.call(spec, deadline).await
    }

    /// This instance's id: configured, else from the metadata service (once).
    async fn own_id(&self) -> Result<InstanceId> {
        if let Some(id) = &self.instance_id {
            return Ok(id.clone());
        }
        if let Some(id) = self.metadata_id.lock().expect("poisoned").clone() {
            return Ok(id);
        }
        let url = join(&self.metadata_url, "/latest/meta-data/instance-id");
        let response = self
            .metadata
            .send(&RequestSpec::new(Method::GET, url), |_| Ok(HeaderMap::new()))
            .await
            .map_err(|e| {
                with_context(
                    e,
                    "cannot read the instance id from the metadata service (set it in the configuration on private instances or outside Exoscale)",
                )
            })?;
        let id = response.text().trim().to_string();
        check_id("instance (from the metadata service)", &id)?;
        let id = InstanceId(id);
        *self.metadata_id.lock().expect("poisoned") = Some(id.clone());
        Ok(id)
    }

    /// The id of the EIP with address `ip`, from the cache or `GET /elastic-ip`.
    async fn eip_id(&self, ip: IpAddr) -> Result<String> {
        if let Some(id) = self.eips.lock().expect("poisoned").get(&ip) {
            return Ok(id.clone());
        }
        let list: ElasticIpList = self.get("/elastic-ip", &[]).await?;
        let mut found = None;
        let mut cache = self.eips.lock().expect("poisoned");
        for eip in list.elastic_ips.unwrap_or_default() {
            // Tolerate a prefix length on the address; compare parsed, so that equivalent
            // spellings of an IPv6 address match.
            let Some(addr) = eip.address() else {
                continue;
            };
            match eip.id.filter(|id| !id.is_empty()) {
                Some(id) => {
                    if addr == ip {
                        found = Some(id.clone());
                    }
                    cache.insert(addr, id);
                }
                None if addr == ip => {
                    return Err(Error::Invalid(format!(
                        "GET /elastic-ip: the elastic IP {ip} has no id"
                    )))
                }
                None => {}
            }
        }
        let id = found.ok_or_else(|| {
            Error::NotFound(format!(
                "no elastic IP with address {ip} in this zone ({})",
                self.base
            ))
        })?;
        check_id("elastic IP", &id)?;
        Ok(id)
    }

    fn forget_eip(&self, ip: IpAddr) {
        self.eips.lock().expect("poisoned").remove(&ip);
    }

    async fn mutate(
        &self,
        action: Action,
        ip: IpAddr,
        instance: &InstanceId,
        deadline: Instant,
    ) -> Result<()> {
        check_id("instance", &instance.0)?;
        let eip = self.eip_id(ip).await?;
        let verb = action.verb();
        let url = self.url(&format!("/elastic-ip/{eip}:{verb}"), &[])?;
        let body = serde_json::json!({ "instance": { "id": instance.0 } });
        let spec = RequestSpec::json(Method::PUT, url, &body)?;
        let started = Instant::now();
        let outcome = match self.call::<OperationJson>(spec, deadline).await {
            Ok(op) => self.wait(op, deadline).await,
            // A 4xx "conflict"/"incorrect" may just mean "already so".
            Err(e @ (Error::Conflict(_) | Error::Invalid(_))) => Err(WaitError::Terminal(e)),
            Err(e) => Err(WaitError::Unknown(e)),
        };
        let error = match outcome {
            Ok(()) => {
                tracing::debug!(%ip, instance = %instance, action = verb, elapsed_ms = started.elapsed().as_millis() as u64, "elastic IP operation succeeded");
                return Ok(());
            }
            Err(WaitError::Unknown(e)) => e,
            Err(WaitError::Terminal(e)) => {
                // Re-attaching or detaching what is not attached may fail instead of being a
                // no-op; what matters is whether the desired state holds. Give the re-read at
                // least one full attempt even when the operation used up the deadline.
                let reread = deadline.max(Instant::now() + self.http.request_timeout());
                match self.holds(instance, &eip, reread).await {
                    Ok(holds) if holds == (action == Action::Attach) => {
                        tracing::debug!(%ip, instance = %instance, action = verb, error = %e, "operation failed but the elastic IP is already in the desired state");
                        return Ok(());
                    }
                    Ok(_) => e,
                    Err(reread_error) => {
                        tracing::debug!(%ip, instance = %instance, error = %reread_error, "cannot re-read the instance after a failed operation");
                        e
                    }
                }
            }
        };
        if matches!(error, Error::NotFound(_)) {
            // Maybe the EIP was deleted (and recreated): look it up again next time.
            self.forget_eip(ip);
        }
        Err(error)
    }

    /// `GET /elastic-ip/{id}`: the EIP with its labels. The cached id is dropped when it no
    /// longer names the EIP of `ip` (deleted, or recreated with another address).
    async fn read_eip(&self, ip: IpAddr, eip: &str, deadline: Instant) -> Result<ElasticIpJson> {
        let spec = RequestSpec::new(Method::GET, self.url(&format!("/elastic-ip/{eip}"), &[])?);
        let json: ElasticIpJson = match self.call(spec, deadline).await {
            Ok(json) => json,
            Err(e @ Error::NotFound(_)) => {
                self.forget_eip(ip);
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        if json.address() != Some(ip) {
            self.forget_eip(ip);
            return Err(Error::Retryable(format!(
                "elastic IP {eip} no longer has the address {ip}: looking it up again"
            )));
        }
        Ok(json)
    }

    /// `PUT /elastic-ip/{id}` with the whole label map (the update replaces it; the
    /// description, left out, stays as it is), waiting for the operation.
    async fn update_labels(
        &self,
        eip: &str,
        labels: &serde_json::Map<String, serde_json::Value>,
        deadline: Instant,
    ) -> Result<()> {
        let url = self.url(&format!("/elastic-ip/{eip}"), &[])?;
        let body = serde_json::json!({ "labels": labels });
        let spec = RequestSpec::json(Method::PUT, url, &body)?;
        let op = self.call::<OperationJson>(spec, deadline).await?;
        match self.wait(op, deadline).await {
            Ok(()) => Ok(()),
            Err(WaitError::Terminal(e) | WaitError::Unknown(e)) => Err(e),
        }
    }

    /// Write-then-verify claim (docs/arbiter.md): check `seen` against the labels, write the
    /// new record keeping every other label, attach, read the labels back.
    async fn claim_eip(&self, ip: IpAddr, record: &ClaimRecord, seen: Option<u64>) -> Result<()> {
        check_id("instance", &record.holder.0)?;
        check_claim_epoch(ip, record, seen)?;
        let deadline = Instant::now() + self.operation_timeout;
        let eip = self.eip_id(ip).await?;
        let current = self.read_eip(ip, &eip, deadline).await?;
        let found = current.record();
        if found.as_ref().map(|r| r.epoch) != seen {
            return Err(Error::Conflict(format!(
                "the claim record of elastic IP {ip} is {}, not epoch {}: someone claimed it since",
                describe(found.as_ref()),
                seen.map_or("none".to_string(), |e| e.to_string()),
            )));
        }
        let mut labels = current.labels.clone().unwrap_or_default();
        labels.insert(EPOCH_LABEL.into(), record.epoch.to_string().into());
        labels.insert(HOLDER_LABEL.into(), record.holder.0.clone().into());
        self.update_labels(&eip, &labels, deadline)
            .await
            .map_err(|e| with_context(e, &format!("recording the claim on elastic IP {ip}")))?;
        self.mutate(Action::Attach, ip, &record.holder, deadline)
            .await?;
        // The read-back gets at least one full attempt even when the attach used up the time.
        let reread = deadline.max(Instant::now() + self.http.request_timeout());
        let after = self.read_eip(ip, &eip, reread).await?.record();
        if after.as_ref() == Some(record) {
            tracing::debug!(%ip, epoch = record.epoch, holder = %record.holder, "claim recorded and verified");
            return Ok(());
        }
        Err(Error::Conflict(format!(
            "after claiming elastic IP {ip} with epoch {} its claim record is {}: another claim won",
            record.epoch,
            describe(after.as_ref())
        )))
    }

    /// Whether `instance` currently lists the EIP (`GET /instance/{id}` → `elastic-ips`).
    async fn holds(&self, instance: &InstanceId, eip: &str, deadline: Instant) -> Result<bool> {
        let json = self.get_instance(&instance.0, deadline).await?;
        Ok(json.has_eip(eip))
    }

    /// Follows an operation to a terminal state, polling on the same endpoint.
    async fn wait(&self, mut op: OperationJson, deadline: Instant) -> Result<(), WaitError> {
        let mut id = op.id.clone().unwrap_or_default();
        let mut delay = POLL_FIRST;
        loop {
            match op.state.as_deref() {
                Some("success") => return Ok(()),
                Some("failure") => {
                    return Err(WaitError::Terminal(operation_error(
                        &id,
                        op.reason.as_deref(),
                        op.message.as_deref(),
                    )))
                }
                Some("timeout") => {
                    return Err(WaitError::Terminal(Error::Retryable(format!(
                        "operation {id} timed out{}",
                        op.message
                            .as_deref()
                            .map(|m| format!(": {m}"))
                            .unwrap_or_default()
                    ))))
                }
                Some("pending") => {}
                Some(other) => {
                    return Err(WaitError::Unknown(Error::Invalid(format!(
                        "operation {id} is in unknown state {other:?}"
                    ))))
                }
                None => {
                    return Err(WaitError::Unknown(Error::Invalid(format!(
                        "operation {id:?} has no state"
                    ))))
                }
            }
            if let Err(e) = check_id("operation", &id) {
                return Err(WaitError::Unknown(e));
            }
            let mut errors = 0;
            op = loop {
                if Instant::now() + delay >= deadline {
                    return Err(WaitError::Unknown(Error::Retryable(format!(
                        "operation {id} still pending after {:?}",
                        self.operation_timeout
                    ))));
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(POLL_MAX);
                let url = match self.url(&format!("/operation/{id}"), &[]) {
                    Ok(url) => url,
                    Err(e) => return Err(WaitError::Unknown(e)),
                };
                let spec = RequestSpec::new(Method::GET, url);
                let polled = self
                    .poll
                    .send_until(&spec, self.authorize(), deadline)
                    .await
                    .and_then(|r| r.json::<OperationJson>());
                match polled {
                    Ok(next) => break next,
                    Err(e @ Error::Auth(_)) => return Err(WaitError::Unknown(e)),
                    Err(e) => {
                        errors += 1;
                        tracing::debug!(operation = %id, errors, error = %e, "polling the operation failed");
                        if errors >= POLL_MAX_ERRORS {
                            return Err(WaitError::Unknown(with_context(
                                e,
                                &format!("gave up polling operation {id} after {errors} consecutive errors"),
                            )));
                        }
                        if let Error::RateLimited {
                            retry_after: Some(wait),
                            ..
                        } = e
                        {
                            delay = delay.max(wait);
                        }
                    }
                }
            };
            if let Some(next_id) = op.id.clone().filter(|i| !i.is_empty()) {
                id = next_id;
            }
        }
    }

    fn to_instance(&self, json: InstanceJson) -> Result<Instance> {
        let addresses = json.addresses();
        let id = json.require_id()?;
        Ok(Instance {
            id: InstanceId(id),
            name: json.name.unwrap_or_default(),
            addresses,
        })
    }
}

#[async_trait::async_trait]
impl Provider for Exoscale {
    fn name(&self) -> &'static str {
        "exoscale"
    }

    async fn whoami(&self) -> Result<Instance> {
        let id = self.own_id().await?;
        let deadline = Instant::now() + self.http.retry_policy().max_elapsed;
        let json = self
            .get_instance(&id.0, deadline)
            .await
            .map_err(|e| with_context(e, &format!("looking up this instance ({id})")))?;
        self.to_instance(json)
    }

    async fn peers(&self, group: &str, me: &InstanceId) -> Result<Vec<Instance>> {
        let groups: SecurityGroupList = self.get("/security-group", &[]).await?;
        let groups = groups.security_groups.unwrap_or_default();
        let group_id = match groups.iter().find(|g| g.id.as_deref() == Some(group)) {
            Some(g) => g.id.clone().unwrap_or_default(),
            None => {
                let named: Vec<&SecurityGroupJson> = groups
                    .iter()
                    .filter(|g| g.name.as_deref() == Some(group))
                    .collect();
                match named.as_slice() {
                    [] => {
                        return Err(Error::NotFound(format!(
                            "no security group named or with id {group:?}"
                        )))
                    }
                    [one] => one.id.clone().filter(|id| !id.is_empty()).ok_or_else(|| {
                        Error::Invalid(format!("security group {group:?} has no id"))
                    })?,
                    _ => {
                        return Err(Error::Invalid(format!(
                            "several security groups are named {group:?}: use its id"
                        )))
                    }
                }
            }
        };
        let list: InstanceList = self.get("/instance", &[]).await?;
        let mut peers = Vec::new();
        for item in list.instances.unwrap_or_default() {
            if !item.in_group(&group_id) {
                continue;
            }
            if item.state.as_deref() != Some("running") {
                tracing::debug!(instance = ?item.id, state = ?item.state, "peer not running, skipped");
                continue;
            }
            let instance = self.to_instance(item)?;
            if instance.id != *me {
                peers.push(instance);
            }
        }
        peers.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(peers)
    }

    async fn holders(&self, ip: IpAddr) -> Result<Vec<InstanceId>> {
        let eip = self.eip_id(ip).await?;
        let address = ip.to_string();
        let list: InstanceList = self.get("/instance", &[("ip-address", &address)]).await?;
        let deadline = Instant::now() + self.http.retry_policy().max_elapsed;
        let mut candidates = Vec::new();
        for candidate in list.instances.unwrap_or_default() {
            candidates.push(candidate.require_id()?);
        }
        // Whether we hold it ourselves must not depend on the filter's undocumented matching:
        // always ask our own instance (when we know who we are).
        let me = self
            .instance_id
            .clone()
            .or_else(|| self.metadata_id.lock().expect("poisoned").clone());
        if let Some(me) = me {
            if !candidates.contains(&me.0) {
                candidates.push(me.0);
            }
        }
        let mut holders = Vec::new();
        for id in candidates {
            // The filter's exact matching is undocumented (it may match a native IP too), and
            // list items carry no elastic-ips: confirm with the instance itself.
            match self.get_instance(&id, deadline).await {
                Ok(full) if full.has_eip(&eip) => holders.push(InstanceId(id)),
                Ok(_) => {
                    tracing::debug!(instance = %id, %ip, "matched by ip-address but does not hold the elastic IP");
                }
                // Destroyed between the two calls: it holds nothing.
                Err(Error::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        holders.sort();
        holders.dedup();
        Ok(holders)
    }

    async fn attach(&self, ip: IpAddr, to: &InstanceId) -> Result<()> {
        let deadline = Instant::now() + self.operation_timeout;
        self.mutate(Action::Attach, ip, to, deadline).await
    }

    async fn detach(&self, ip: IpAddr, from: &InstanceId) -> Result<()> {
        let deadline = Instant::now() + self.operation_timeout;
        self.mutate(Action::Detach, ip, from, deadline).await
    }

    /// No version check exists on the elastic IP's update: write, then verify.
    fn arbiter(&self) -> Arbiter {
        Arbiter::WriteThenVerify
    }

    async fn state(&self, ip: IpAddr) -> Result<AddressState> {
        let eip = self.eip_id(ip).await?;
        let deadline = Instant::now() + self.http.retry_policy().max_elapsed;
        let record = self.read_eip(ip, &eip, deadline).await?.record();
        let holders = self.holders(ip).await?;
        Ok(AddressState { holders, record })
    }

    async fn claim(&self, ip: IpAddr, record: &ClaimRecord, seen: Option<u64>) -> Result<()> {
        self.claim_eip(ip, record, seen).await
    }
}

/// A claim must come after the one it was based on (the epoch grows with every claim).
pub(crate) fn check_claim_epoch(ip: IpAddr, record: &ClaimRecord, seen: Option<u64>) -> Result<()> {
    match seen {
        Some(seen) if record.epoch <= seen => Err(Error::Invalid(format!(
            "a claim of {ip} with epoch {} cannot follow epoch {seen}",
            record.epoch
        ))),
        _ => Ok(()),
    }
}

/// A claim record for messages: `epoch 7 (holder …)` or `none`.
pub(crate) fn describe(record: Option<&ClaimRecord>) -> String {
    match record {
        Some(r) => format!("epoch {} (holder {})", r.epoch, r.holder),
        None => "none".to_string(),
    }
}

fn parse_base_url(text: &str, what: &str) -> Result<Url> {
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

/// `base` with `path` appended to its own path. (A URL's path is never empty: `/` stands for
/// none, so it is trimmed before appending.)
fn join(base: &Url, path: &str) -> Url {
    let mut url = base.clone();
    url.set_path(&format!("{}{path}", base.path().trim_end_matches('/')));
    url
}

/// Ids end up in request paths: only accept what Exoscale ids (UUIDs) are made of, so that a
/// strange id can neither change the path nor make the signed path differ from the sent one.
fn check_id(kind: &str, id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "{kind} id {id:?} is not a valid Exoscale id"
        )))
    }
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

/// Maps an operation's failure `reason` onto the taxonomy.
fn operation_error(id: &str, reason: Option<&str>, message: Option<&str>) -> Error {
    let text = format!(
        "operation {id} failed ({}){}",
        reason.unwrap_or("no reason given"),
        message.map(|m| format!(": {m}")).unwrap_or_default()
    );
    match reason {
        Some("busy" | "unavailable" | "interrupted" | "fault") => Error::Retryable(text),
        Some("conflict") => Error::Conflict(text),
        Some("forbidden") => Error::Auth(text),
        Some("not-found") => Error::NotFound(text),
        _ => Error::Invalid(text),
    }
}

// Response shapes (exoscale-openapi.json). Every field is optional so that a missing one yields
// a clear `Invalid` from the code that needs it, never a panic; unknown fields are ignored.

#[derive(Deserialize, Debug, Default)]
struct Ref {
    #[serde(default)]
    id: Option<String>,
}

#[derive(Deserialize, Debug, Default)]
struct InstanceJson {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default, rename = "public-ip")]
    public_ip: Option<String>,
    #[serde(default, rename = "ipv6-address")]
    ipv6_address: Option<String>,
    /// `{id}` refs in `GET /instance/{id}`, full objects in list items.
    #[serde(default, rename = "security-groups")]
    security_groups: Option<Vec<Ref>>,
    /// Only in `GET /instance/{id}`.
    #[serde(default, rename = "elastic-ips")]
    elastic_ips: Option<Vec<Ref>>,
}

impl InstanceJson {
    fn require_id(&self) -> Result<String> {
        self.id.clone().filter(|id| !id.is_empty()).ok_or_else(|| {
            Error::Invalid(format!(
                "instance {:?} in an API response has no id",
                self.name.as_deref().unwrap_or("(unnamed)")
            ))
        })
    }

    fn has_eip(&self, eip: &str) -> bool {
        self.elastic_ips
            .iter()
            .flatten()
            .any(|r| r.id.as_deref() == Some(eip))
    }

    fn in_group(&self, group: &str) -> bool {
        self.security_groups
            .iter()
            .flatten()
            .any(|r| r.id.as_deref() == Some(group))
    }

    /// Heartbeat addresses: the public IPv4, then the IPv6 address when the instance has one.
    fn addresses(&self) -> Vec<IpAddr> {
        let mut out = Vec::new();
        for text in [&self.public_ip, &self.ipv6_address].into_iter().flatten() {
            match text.trim().parse::<IpAddr>() {
                Ok(addr) if !out.contains(&addr) => out.push(addr),
                Ok(_) => {}
                Err(_) => {
                    tracing::warn!(instance = ?self.id, address = %text, "ignoring an unparsable instance address")
                }
            }
        }
        out
    }
}

#[derive(Deserialize, Debug)]
struct InstanceList {
    #[serde(default)]
    instances: Option<Vec<InstanceJson>>,
}

#[derive(Deserialize, Debug)]
struct ElasticIpJson {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    ip: Option<String>,
    /// Kept as JSON so that a read-modify-write sends every other label back as read.
    #[serde(default)]
    labels: Option<serde_json::Map<String, serde_json::Value>>,
}

impl ElasticIpJson {
    /// The address, tolerating a prefix length and any spelling of an IPv6 address.
    fn address(&self) -> Option<IpAddr> {
        self.ip
            .as_deref()
            .and_then(|s| s.split('/').next())
            .and_then(|s| s.trim().parse().ok())
    }

    fn record(&self) -> Option<ClaimRecord> {
        let label = |name: &str| {
            self.labels
                .as_ref()
                .and_then(|l| l.get(name))
                .and_then(serde_json::Value::as_str)
        };
        record_from_labels(label(EPOCH_LABEL), label(HOLDER_LABEL))
    }
}

#[derive(Deserialize, Debug)]
struct ElasticIpList {
    #[serde(default, rename = "elastic-ips")]
    elastic_ips: Option<Vec<ElasticIpJson>>,
}

#[derive(Deserialize, Debug)]
struct SecurityGroupJson {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize, Debug)]
struct SecurityGroupList {
    #[serde(default, rename = "security-groups")]
    security_groups: Option<Vec<SecurityGroupJson>>,
}

#[derive(Deserialize, Debug)]
struct OperationJson {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(endpoint: &str) -> Exoscale {
        let mut cfg = ExoscaleConfig::new("EXOkey", Secret::new("s3cr3t-value"));
        cfg.endpoint = endpoint.to_string();
        Exoscale::new(cfg).unwrap()
    }

    #[test]
    fn operation_reasons_map_onto_the_taxonomy() {
        let kind = |r: &str| operation_error("op", Some(r), Some("m")).kind();
        for r in ["busy", "unavailable", "interrupted", "fault"] {
            assert_eq!(kind(r), "retryable", "{r}");
        }
        assert_eq!(kind("conflict"), "conflict");
        assert_eq!(kind("forbidden"), "auth");
        assert_eq!(kind("not-found"), "not_found");
        for r in [
            "incorrect",
            "unsupported",
            "partial",
            "unknown",
            "brand-new",
        ] {
            assert_eq!(kind(r), "invalid", "{r}");
        }
        assert_eq!(
            operation_error("op1", Some("partial"), Some("half done")).to_string(),
            "invalid: operation op1 failed (partial): half done"
        );
        assert_eq!(operation_error("op", None, None).kind(), "invalid");
    }

    #[test]
    fn urls_keep_the_base_path_and_encode_queries_strictly() {
        let c = client("http://192.0.2.1:8080/v2/");
        let u = c.url("/elastic-ip/abc:attach", &[]).unwrap();
        assert_eq!(u.as_str(), "http://192.0.2.1:8080/v2/elastic-ip/abc:attach");
        let u = c
            .url(
                "/instance",
                &[("ip-address", "2001:db8::1"), ("labels", "")],
            )
            .unwrap();
        assert_eq!(u.path(), "/v2/instance");
        assert_eq!(u.query(), Some("ip-address=2001%3Adb8%3A%3A1"));
        let u = c.url("/instance", &[("labels", "a+b c")]).unwrap();
        assert_eq!(u.query(), Some("labels=a%2Bb%20c"));
        assert!(c.url("/instance", &[("a", "1"), ("a", "2")]).is_err());
        let u = client("https://api.example/v2")
            .url("/instance", &[])
            .unwrap();
        assert_eq!(u.query(), None);
        for base in ["http://169.254.169.254", "http://169.254.169.254/"] {
            let u = join(
                &parse_base_url(base, "m").unwrap(),
                "/latest/meta-data/instance-id",
            );
            assert_eq!(
                u.as_str(),
                "http://169.254.169.254/latest/meta-data/instance-id"
            );
        }
        let u = join(
            &parse_base_url("http://192.0.2.9/meta/", "m").unwrap(),
            "/latest",
        );
        assert_eq!(u.as_str(), "http://192.0.2.9/meta/latest");
        // No path at all: API v2 lives under /v2.
        let u = client("http://192.0.2.1:8080").url("/zone", &[]).unwrap();
        assert_eq!(u.path(), "/v2/zone");
    }

    #[test]
    fn signatures_cover_the_v2_prefix_and_the_exact_body() {
        let c = client("http://192.0.2.1:8080/v2");
        let url = c.url("/elastic-ip/e1:attach", &[]).unwrap();
        let spec = RequestSpec::json(
            Method::PUT,
            url,
            &serde_json::json!({"instance":{"id":"i1"}}),
        )
        .unwrap();
        assert_eq!(spec.body_bytes(), br#"{"instance":{"id":"i1"}}"#);
        let headers = c.authorize()(&spec).unwrap();
        let value = headers.get(AUTHORIZATION).unwrap();
        assert!(value.is_sensitive());
        let secret = |k: &str| (k == "EXOkey").then(|| "s3cr3t-value".to_string());
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let ok = sign::verify(
            value.to_str().unwrap(),
            "PUT",
            "/v2/elastic-ip/e1:attach",
            "",
            spec.body_bytes(),
            secret,
            now,
        );
        assert_eq!(ok, Ok("EXOkey".to_string()));
        let parsed = sign::parse_header(value.to_str().unwrap()).unwrap();
        assert!(parsed.expires >= now + sign::VALIDITY_SECS - 1);
    }

    #[test]
    fn configuration_is_validated_and_never_shows_the_secret() {
        let good = ExoscaleConfig::new("EXOkey", Secret::new("s3cr3t-value"));
        let text = format!("{good:?}");
        assert!(
            !text.contains("s3cr3t-value") && !text.contains("EXOkey"),
            "{text}"
        );
        let provider = Exoscale::new(good.clone()).unwrap();
        let text = format!("{provider:?}");
        assert!(
            !text.contains("s3cr3t-value") && !text.contains("EXOkey"),
            "{text}"
        );

        let bad = |f: &dyn Fn(&mut ExoscaleConfig)| {
            let mut cfg = good.clone();
            f(&mut cfg);
            Exoscale::new(cfg).unwrap_err()
        };
        assert_eq!(bad(&|c| c.endpoint = "ftp://x/v2".into()).kind(), "invalid");
        assert_eq!(bad(&|c| c.endpoint = "not a url".into()).kind(), "invalid");
        assert_eq!(
            bad(&|c| c.endpoint = "https://u:p@api.example/v2".into()).kind(),
            "invalid"
        );
        assert_eq!(bad(&|c| c.api_key = String::new()).kind(), "invalid");
        assert_eq!(bad(&|c| c.api_key = "a,b".into()).kind(), "invalid");
        assert_eq!(bad(&|c| c.api_secret = Secret::new("")).kind(), "invalid");
        assert_eq!(
            bad(&|c| c.instance_id = Some(InstanceId("../x".into()))).kind(),
            "invalid"
        );
        assert_eq!(
            bad(&|c| c.operation_timeout = Duration::ZERO).kind(),
            "invalid"
        );
        assert_eq!(
            default_endpoint(DEFAULT_ZONE),
            "https://api-ch-gva-2.exoscale.com/v2"
        );
    }

    #[test]
    fn claim_records_are_read_from_the_labels() {
        let record = |epoch, holder: &str| {
            Some(ClaimRecord {
                epoch,
                holder: InstanceId(holder.into()),
            })
        };
        let id = "2f6a9a43-1c51-4a4e-9e0a-6f5bd2a7c1d0";
        assert_eq!(record_from_labels(Some("7"), Some(id)), record(7, id));
        assert_eq!(record_from_labels(Some(" 7\n"), Some(id)), record(7, id));
        for (epoch, holder) in [
            (None, Some(id)),
            (Some("7"), None),
            (Some("x"), Some(id)),
            (Some("-1"), Some(id)),
            (Some("7"), Some("")),
            (Some("7"), Some("../x")),
        ] {
            assert_eq!(
                record_from_labels(epoch, holder),
                None,
                "{epoch:?} {holder:?}"
            );
        }
        let eip: ElasticIpJson = serde_json::from_str(&format!(
            r#"{{"id":"e1","ip":"203.0.113.10/32","labels":{{"role":"lb","exoip-epoch":"3","exoip-holder":"{id}"}}}}"#
        ))
        .unwrap();
        assert_eq!(eip.address(), Some("203.0.113.10".parse().unwrap()));
        assert_eq!(eip.record(), record(3, id));
        let bare: ElasticIpJson = serde_json::from_str(r#"{"labels":{"exoip-epoch":3}}"#).unwrap();
        assert_eq!(bare.record(), None);
        assert_eq!(bare.address(), None);

        let ip: IpAddr = "203.0.113.10".parse().unwrap();
        let r = ClaimRecord {
            epoch: 3,
            holder: InstanceId(id.into()),
        };
        assert!(check_claim_epoch(ip, &r, None).is_ok());
        assert!(check_claim_epoch(ip, &r, Some(2)).is_ok());
        assert_eq!(
            check_claim_epoch(ip, &r, Some(3)).unwrap_err().kind(),
            "invalid"
        );
        assert_eq!(describe(Some(&r)), format!("epoch 3 (holder {id})"));
        assert_eq!(describe(None), "none");
        assert_eq!(
            client("http://192.0.2.1/v2").arbiter(),
            Arbiter::WriteThenVerify
        );
    }

    #[test]
    fn instance_json_is_read_leniently() {
        let json: InstanceJson = serde_json::from_str(
            r#"{"id":"i1","name":"lb1","state":"running","public-ip":"203.0.113.10",
                "ipv6-address":"2001:db8::10","future-field":{"x":1},
                "security-groups":[{"id":"g1","name":"web","rules":[]}],
                "elastic-ips":[{"id":"e1"}]}"#,
        )
        .unwrap();
        assert!(json.has_eip("e1") && !json.has_eip("e2"));
        assert!(json.in_group("g1") && !json.in_group("web"));
        assert_eq!(
            json.addresses(),
            vec![
                "203.0.113.10".parse::<IpAddr>().unwrap(),
                "2001:db8::10".parse().unwrap()
            ]
        );
        let bare: InstanceJson =
            serde_json::from_str(r#"{"name":"x","elastic-ips":null,"public-ip":"junk"}"#).unwrap();
        assert!(!bare.has_eip("e1"));
        assert!(bare.addresses().is_empty());
        let e = bare.require_id().unwrap_err();
        assert_eq!(e.kind(), "invalid");
        assert!(e.to_string().contains("no id"), "{e}");
    }
}
