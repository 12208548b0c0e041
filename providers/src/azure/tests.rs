//! Unit tests of the Azure settings: the environment, validation, and that no secret shows.

use super::*;

const SECRET: &str = "s3cr3t~value.must-not-leak";
const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const APP: &str = "00000000-0000-4000-8000-0000000000a1";

fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let vars: Vec<(String, String)> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name: &str| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
}

fn from(vars: &[(&str, &str)]) -> Result<AzureSettings> {
    AzureSettings::from_env(&env_of(vars))
}

#[test]
fn a_service_principal_from_azure_variables() {
    let s = from(&[
        ("AZURE_TENANT_ID", TENANT),
        ("AZURE_CLIENT_ID", APP),
        ("AZURE_CLIENT_SECRET", SECRET),
        (
            "AZURE_SUBSCRIPTION_ID",
            "8d10da13-8125-4ba9-a717-bf7490507b3d",
        ),
    ])
    .unwrap();
    assert_eq!(
        s.credentials,
        AzureCredentials::ClientSecret {
            tenant_id: TENANT.into(),
            client_id: APP.into(),
            client_secret: Secret::new(SECRET),
        }
    );
    assert_eq!(
        s.subscription.as_deref(),
        Some("8d10da13-8125-4ba9-a717-bf7490507b3d")
    );
    assert_eq!(s.arm_endpoint, DEFAULT_ARM_ENDPOINT);
    assert_eq!(s.authority_host, DEFAULT_AUTHORITY_HOST);
    assert_eq!(s.metadata_url, DEFAULT_METADATA_URL);
    assert_eq!(s.api_version, "2024-05-01");
    assert_eq!(s.mode, AzureMode::PublicIp);
    assert_eq!(s.identity_url, None);
    assert_eq!(s.resource_group, None);
    let text = format!("{s:?}");
    assert!(!text.contains(SECRET), "{text}");
    let azure = Azure::new(s).unwrap();
    let text = format!("{azure:?}");
    assert!(!text.contains(SECRET), "{text}");
    assert!(text.contains(APP), "{text}");
}

#[test]
fn terraform_aliases_are_accepted_and_azure_names_win() {
    let s = from(&[
        ("ARM_TENANT_ID", TENANT),
        ("ARM_CLIENT_ID", APP),
        ("ARM_CLIENT_SECRET", SECRET),
        ("ARM_SUBSCRIPTION_ID", "sub-from-arm"),
    ])
    .unwrap();
    assert!(matches!(
        s.credentials,
        AzureCredentials::ClientSecret { ref tenant_id, ref client_id, .. }
            if tenant_id == TENANT && client_id == APP
    ));
    assert_eq!(s.subscription.as_deref(), Some("sub-from-arm"));

    let s = from(&[
        ("AZURE_TENANT_ID", TENANT),
        ("ARM_TENANT_ID", "other-tenant"),
        ("ARM_CLIENT_ID", APP),
        ("AZURE_CLIENT_SECRET", SECRET),
        ("ARM_CLIENT_SECRET", "other"),
        ("AZURE_SUBSCRIPTION_ID", "sub-azure"),
        ("ARM_SUBSCRIPTION_ID", "sub-arm"),
    ])
    .unwrap();
    assert_eq!(
        s.credentials,
        AzureCredentials::ClientSecret {
            tenant_id: TENANT.into(),
            client_id: APP.into(),
            client_secret: Secret::new(SECRET),
        }
    );
    assert_eq!(s.subscription.as_deref(), Some("sub-azure"));
}

#[test]
fn managed_identity_by_default_user_assigned_with_a_client_id() {
    let s = from(&[]).unwrap();
    assert_eq!(
        s.credentials,
        AzureCredentials::ManagedIdentity { client_id: None }
    );
    assert_eq!(s.subscription, None, "from IMDS");
    // Empty values count as unset.
    let s = from(&[("AZURE_CLIENT_SECRET", "  "), ("AZURE_TENANT_ID", "")]).unwrap();
    assert_eq!(
        s.credentials,
        AzureCredentials::ManagedIdentity { client_id: None }
    );

    let s = from(&[("AZURE_CLIENT_ID", APP)]).unwrap();
    assert_eq!(
        s.credentials,
        AzureCredentials::ManagedIdentity {
            client_id: Some(APP.into())
        }
    );
    // ARM_USE_MSI forces it even next to a service principal's variables.
    let s = from(&[
        ("ARM_USE_MSI", "true"),
        ("ARM_CLIENT_ID", APP),
        ("ARM_TENANT_ID", TENANT),
        ("ARM_CLIENT_SECRET", SECRET),
    ])
    .unwrap();
    assert_eq!(
        s.credentials,
        AzureCredentials::ManagedIdentity {
            client_id: Some(APP.into())
        }
    );
}

#[test]
fn workload_identity_from_a_federated_token_file() {
    let s = from(&[
        ("AZURE_TENANT_ID", TENANT),
        ("AZURE_CLIENT_ID", APP),
        (
            "AZURE_FEDERATED_TOKEN_FILE",
            "/var/run/secrets/azure/tokens/azure-identity-token",
        ),
    ])
    .unwrap();
    assert_eq!(
        s.credentials,
        AzureCredentials::WorkloadIdentity {
            tenant_id: TENANT.into(),
            client_id: APP.into(),
            token_file: "/var/run/secrets/azure/tokens/azure-identity-token".into(),
        }
    );
}

#[test]
fn a_secret_from_a_file_makes_a_service_principal() {
    let source = "the client secret file /etc/exoip/azure-secret";
    let env = env_of(&[
        ("AZURE_TENANT_ID", TENANT),
        ("AZURE_CLIENT_ID", APP),
        ("AZURE_CLIENT_SECRET", "from-the-environment"),
        ("ARM_USE_MSI", "true"),
    ]);
    let s = AzureSettings::from_env_with_secret(&env, Secret::new(SECRET), source).unwrap();
    assert_eq!(
        s.credentials,
        AzureCredentials::ClientSecret {
            tenant_id: TENANT.into(),
            client_id: APP.into(),
            client_secret: Secret::new(SECRET),
        },
        "the file wins over the environment and ARM_USE_MSI"
    );
    let e = AzureSettings::from_env_with_secret(
        &env_of(&[("AZURE_CLIENT_ID", APP)]),
        Secret::new(SECRET),
        source,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("the client secret file /etc/exoip/azure-secret is set but AZURE_TENANT_ID"),
        "{e}"
    );
    assert!(!e.contains(SECRET), "{e}");
    let e = AzureSettings::from_env_with_secret(&env, Secret::new(" \n"), source).unwrap_err();
    assert!(e.to_string().contains("is empty"), "{e}");
}

#[test]
fn overrides_point_at_another_cloud_or_an_emulator() {
    let s = from(&[
        ("AZURE_AUTHORITY_HOST", "http://127.0.0.1:9001/login"),
        ("EXOIP_AZURE_ARM_ENDPOINT", "http://127.0.0.1:9001/arm/"),
        ("AZURE_POD_IDENTITY_AUTHORITY_HOST", "http://127.0.0.1:9002"),
    ])
    .unwrap();
    assert_eq!(s.authority_host, "http://127.0.0.1:9001/login");
    assert_eq!(s.arm_endpoint, "http://127.0.0.1:9001/arm/");
    assert_eq!(s.identity_url.as_deref(), Some("http://127.0.0.1:9002"));
    assert_eq!(s.arm_audience, None, "an emulator gets the public audience");
    assert_eq!(
        AzureCloud::audience_for(&s.arm_endpoint),
        "https://management.azure.com"
    );

    let s = from(&[("ARM_ENVIRONMENT", "usgovernment")]).unwrap();
    assert_eq!(s.authority_host, "https://login.microsoftonline.us");
    assert_eq!(s.arm_endpoint, "https://management.usgovcloudapi.net");
    assert_eq!(
        s.arm_audience.as_deref(),
        Some("https://management.core.usgovcloudapi.net")
    );
    let s = from(&[("ARM_ENVIRONMENT", "China")]).unwrap();
    assert_eq!(s.arm_endpoint, "https://management.chinacloudapi.cn");
    // A bare host name, as azure-identity accepts it.
    let s = from(&[("AZURE_AUTHORITY_HOST", "login.microsoftonline.us")]).unwrap();
    Azure::new(s).unwrap();
    assert_eq!(
        AzureCloud::audience_for("https://management.usgovcloudapi.net/"),
        "https://management.core.usgovcloudapi.net"
    );
}

#[test]
fn environment_errors_name_what_is_missing_or_wrong() {
    let message = |vars: &[(&str, &str)]| from(vars).unwrap_err().to_string();
    let m = message(&[("AZURE_CLIENT_SECRET", SECRET), ("AZURE_CLIENT_ID", APP)]);
    assert!(
        m.contains("AZURE_CLIENT_SECRET is set but AZURE_TENANT_ID"),
        "{m}"
    );
    assert!(!m.contains(SECRET), "{m}");
    let m = message(&[("ARM_CLIENT_SECRET", SECRET), ("ARM_TENANT_ID", TENANT)]);
    assert!(
        m.contains("ARM_CLIENT_SECRET is set but AZURE_CLIENT_ID"),
        "{m}"
    );
    assert!(!m.contains(SECRET), "{m}");
    let m = message(&[
        ("AZURE_FEDERATED_TOKEN_FILE", "/t"),
        ("AZURE_CLIENT_ID", APP),
    ]);
    assert!(
        m.contains("AZURE_FEDERATED_TOKEN_FILE is set but AZURE_TENANT_ID"),
        "{m}"
    );
    let m = message(&[("AZURE_CLIENT_CERTIFICATE_PATH", "/c.pem")]);
    assert!(
        m.contains("certificate credentials are not supported"),
        "{m}"
    );
    let m = message(&[("ARM_ENVIRONMENT", "german")]);
    assert!(m.contains("ARM_ENVIRONMENT"), "{m}");
    let m = message(&[("ARM_USE_MSI", "maybe")]);
    assert!(m.contains("ARM_USE_MSI"), "{m}");
    let m = message(&[("EXOIP_AZURE_ARM_ENDPOINT", "ftp://x")]);
    assert!(m.contains("EXOIP_AZURE_ARM_ENDPOINT"), "{m}");
    let m = message(&[("AZURE_POD_IDENTITY_AUTHORITY_HOST", "http://[::1")]);
    assert!(m.contains("AZURE_POD_IDENTITY_AUTHORITY_HOST"), "{m}");
    let m = message(&[("AZURE_SUBSCRIPTION_ID", "a/b")]);
    assert!(m.contains("AZURE_SUBSCRIPTION_ID"), "{m}");
    assert_eq!(m.lines().count(), 1, "one line: {m}");
}

#[test]
fn settings_are_validated() {
    let good = AzureSettings::new(AzureCredentials::ClientSecret {
        tenant_id: TENANT.into(),
        client_id: APP.into(),
        client_secret: Secret::new(SECRET),
    });
    Azure::new(good.clone()).unwrap();
    let bad = |f: &dyn Fn(&mut AzureSettings)| {
        let mut s = good.clone();
        f(&mut s);
        let e = Azure::new(s).unwrap_err();
        assert!(!e.to_string().contains(SECRET), "{e}");
        e.kind()
    };
    assert_eq!(bad(&|s| s.arm_endpoint = "ftp://x".into()), "invalid");
    assert_eq!(bad(&|s| s.arm_endpoint = "https://u:p@x".into()), "invalid");
    assert_eq!(bad(&|s| s.metadata_url = "http://x/?q".into()), "invalid");
    assert_eq!(bad(&|s| s.api_version = "2024-05-01&x=y".into()), "invalid");
    assert_eq!(bad(&|s| s.api_version = String::new()), "invalid");
    assert_eq!(bad(&|s| s.resource_group = Some("../rg".into())), "invalid");
    assert_eq!(bad(&|s| s.vm_name = Some("vm/a".into())), "invalid");
    assert_eq!(bad(&|s| s.public_ip_name = Some("p?x".into())), "invalid");
    assert_eq!(bad(&|s| s.ip_config = Some(String::new())), "invalid");
    assert_eq!(
        bad(&|s| s.peer_tag = Some((" ".into(), "v".into()))),
        "invalid"
    );
    assert_eq!(bad(&|s| s.operation_timeout = Duration::ZERO), "invalid");
    assert_eq!(
        bad(&|s| s.arm_audience = Some("not a url".into())),
        "invalid"
    );
    assert_eq!(
        bad(&|s| s.credentials = AzureCredentials::ClientSecret {
            tenant_id: "a/b".into(),
            client_id: APP.into(),
            client_secret: Secret::new(SECRET),
        }),
        "invalid"
    );
    assert_eq!(
        bad(&|s| s.credentials = AzureCredentials::ClientSecret {
            tenant_id: TENANT.into(),
            client_id: APP.into(),
            client_secret: Secret::new(""),
        }),
        "invalid"
    );
    assert_eq!(
        bad(&|s| s.credentials = AzureCredentials::ManagedIdentity {
            client_id: Some("a b".into())
        }),
        "invalid"
    );
}

#[test]
fn modes_and_peer_tags_parse() {
    for mode in [
        AzureMode::PublicIp,
        AzureMode::SecondaryIp,
        AzureMode::LbProbe,
    ] {
        assert_eq!(mode.to_string().parse::<AzureMode>().unwrap(), mode);
    }
    assert_eq!(
        "Public-IP".parse::<AzureMode>().unwrap(),
        AzureMode::PublicIp
    );
    assert_eq!("dsr".parse::<AzureMode>().unwrap_err().kind(), "invalid");
    assert_eq!(
        parse_peer_tag("exoip-group=web").unwrap(),
        ("exoip-group".to_string(), "web".to_string())
    );
    assert_eq!(
        parse_peer_tag("k=a=b").unwrap(),
        ("k".to_string(), "a=b".to_string())
    );
    assert_eq!(
        parse_peer_tag("k=").unwrap(),
        ("k".to_string(), String::new())
    );
    assert!(parse_peer_tag("web").is_err());
    assert!(parse_peer_tag("=web").is_err());
}

#[test]
fn token_urls_follow_the_documented_shapes() {
    let mut s = AzureSettings::new(AzureCredentials::ManagedIdentity {
        client_id: Some(APP.into()),
    });
    s.identity_url = Some("http://127.0.0.1:9002/".into());
    let azure = Azure::new(s).unwrap();
    let TokenSource::ManagedIdentity { url, .. } = &azure.tokens.source_for_tests() else {
        panic!("managed identity expected");
    };
    assert_eq!(
        url.as_str(),
        format!(
            "http://127.0.0.1:9002/metadata/identity/oauth2/token?api-version=2018-02-01\
             &resource=https%3A%2F%2Fmanagement.azure.com%2F&client_id={APP}"
        )
    );

    let mut s = AzureSettings::new(AzureCredentials::ClientSecret {
        tenant_id: "contoso.onmicrosoft.com".into(),
        client_id: APP.into(),
        client_secret: Secret::new(SECRET),
    });
    s.authority_host = "https://login.microsoftonline.us/".into();
    s.arm_endpoint = "https://management.usgovcloudapi.net".into();
    let azure = Azure::new(s).unwrap();
    let TokenSource::ClientCredentials { url, scope, .. } = &azure.tokens.source_for_tests() else {
        panic!("client credentials expected");
    };
    assert_eq!(
        url.as_str(),
        "https://login.microsoftonline.us/contoso.onmicrosoft.com/oauth2/v2.0/token"
    );
    assert_eq!(scope, "https://management.core.usgovcloudapi.net/.default");
}

#[test]
fn links_from_arm_never_take_the_token_elsewhere() {
    let mut s = AzureSettings::new(AzureCredentials::ManagedIdentity { client_id: None });
    s.arm_endpoint = "http://127.0.0.1:9001/arm".into();
    let azure = Azure::new(s).unwrap();
    let same = azure
        .followed_url("http://127.0.0.1:9001/arm/subscriptions/s/providers/Microsoft.Network/locations/westeurope/operations/1?api-version=2024-05-01")
        .unwrap();
    assert_eq!(
        same.as_str(),
        "http://127.0.0.1:9001/arm/subscriptions/s/providers/Microsoft.Network/locations/westeurope/operations/1?api-version=2024-05-01"
    );
    let foreign = azure
        .followed_url("https://management.azure.com/subscriptions/s/providers/Microsoft.Network/locations/westeurope/operations/2?api-version=2024-05-01")
        .unwrap();
    assert_eq!(
        foreign.as_str(),
        "http://127.0.0.1:9001/arm/subscriptions/s/providers/Microsoft.Network/locations/westeurope/operations/2?api-version=2024-05-01"
    );
    let long = format!("http://127.0.0.1:9001/arm/op?token={}", "x".repeat(5000));
    assert_eq!(azure.followed_url(&long).unwrap().as_str(), long);
    assert!(azure.followed_url("file:///etc/passwd").is_err());
}

#[test]
fn claim_records_are_read_from_tags_and_written_next_to_the_others() {
    assert_eq!(
        secondary_record_tags("192.0.2.100".parse().unwrap()),
        (
            "exoip-epoch-192.0.2.100".to_string(),
            "exoip-holder-192.0.2.100".to_string()
        )
    );
    assert_eq!(
        secondary_record_tags("2001:db8::100".parse().unwrap()).0,
        "exoip-epoch-2001-db8--100"
    );
    let r = ClaimRecord {
        epoch: 7,
        holder: InstanceId("vm-a".into()),
    };
    assert_eq!(record_from_tags(Some(" 7 "), Some("vm-a")), Some(r.clone()));
    for (epoch, holder) in [
        (None, Some("vm-a")),
        (Some("7"), None),
        (Some("seven"), Some("vm-a")),
        (Some("-7"), Some("vm-a")),
        (Some("7"), Some("")),
        (Some("7"), Some("a/b")),
    ] {
        assert_eq!(
            record_from_tags(epoch, holder),
            None,
            "{epoch:?} {holder:?}"
        );
    }

    let pip = serde_json::json!({
        "name": "pip-vip", "id": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/publicIPAddresses/pip-vip",
        "etag": "W/\"1\"", "type": "Microsoft.Network/publicIPAddresses", "location": "westeurope",
        "sku": {"name": "Standard"}, "zones": ["1"], "tags": {"owner": "ops"},
        "properties": {"provisioningState": "Succeeded", "resourceGuid": "g", "ipAddress": "203.0.113.10",
            "publicIPAllocationMethod": "Static", "idleTimeoutInMinutes": 4,
            "ipConfiguration": {"id": "x"}, "dnsSettings": {"domainNameLabel": "keep"}}
    });
    assert_eq!(pip_record(&pip), None);
    let mut body = arm::pip_put_body(&pip).unwrap();
    arm::set_tags(
        &mut body,
        &record_tags((EPOCH_TAG.into(), HOLDER_TAG.into()), &r),
    )
    .unwrap();
    assert_eq!(
        body,
        serde_json::json!({
            "name": "pip-vip", "id": pip["id"], "location": "westeurope",
            "sku": {"name": "Standard"}, "zones": ["1"],
            "tags": {"owner": "ops", "exoip-epoch": "7", "exoip-holder": "vm-a"},
            "properties": {"ipAddress": "203.0.113.10", "publicIPAllocationMethod": "Static",
                "idleTimeoutInMinutes": 4, "dnsSettings": {"domainNameLabel": "keep"}}
        })
    );
    assert_eq!(pip_record(&body), Some(r.clone()));
    // No tags at all, or null: an object is made.
    let mut bare = serde_json::json!({"tags": null});
    arm::set_tags(&mut bare, &[("a".into(), "b".into())]).unwrap();
    assert_eq!(bare, serde_json::json!({"tags": {"a": "b"}}));
    assert!(arm::set_tags(&mut serde_json::json!({"tags": []}), &[]).is_err());

    let seen = |s| check_seen("203.0.113.10".parse().unwrap(), Some(&r), s);
    assert!(seen(Some(7)).is_ok());
    assert_eq!(seen(None).unwrap_err().kind(), "conflict");
    assert_eq!(seen(Some(6)).unwrap_err().kind(), "conflict");
    assert!(check_seen("203.0.113.10".parse().unwrap(), None, None).is_ok());
}

#[test]
fn secondary_records_come_from_the_holder_else_the_newest() {
    let ip: IpAddr = "192.0.2.100".parse().unwrap();
    let nic = |vm: &str, holds: bool, tags: serde_json::Value| {
        let mut configs = vec![serde_json::json!({"name": "ipconfig1",
            "properties": {"primary": true, "privateIPAddress": "192.0.2.11"}})];
        if holds {
            configs.push(serde_json::json!({"name": "vip",
                "properties": {"primary": false, "privateIPAddress": "192.0.2.100"}}));
        }
        serde_json::json!({"name": format!("nic-{vm}"), "tags": tags, "properties": {
            "virtualMachine": {"id": format!("/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/{vm}")},
            "ipConfigurations": configs}})
    };
    let tags = |epoch: &str, vm: &str| serde_json::json!({"exoip-epoch-192.0.2.100": epoch, "exoip-holder-192.0.2.100": vm, "x": "y"});
    let rec = |epoch, vm: &str| {
        Some(ClaimRecord {
            epoch,
            holder: InstanceId(vm.into()),
        })
    };
    // The holder's tags win over a newer stale record elsewhere.
    let nics = vec![
        nic("a", false, tags("9", "a")),
        nic("b", true, tags("4", "b")),
    ];
    assert_eq!(Azure::secondary_record(&nics, ip), rec(4, "b"));
    assert_eq!(
        Azure::secondary_vms(&nics, ip),
        vec![InstanceId("b".into())]
    );
    // A holder without tags: no record.
    let nics = vec![
        nic("a", false, tags("9", "a")),
        nic("b", true, serde_json::json!({})),
    ];
    assert_eq!(Azure::secondary_record(&nics, ip), None);
    // Nobody holds it: the newest record.
    let nics = vec![
        nic("a", false, tags("3", "a")),
        nic("b", false, tags("5", "b")),
        nic("c", false, serde_json::json!(null)),
    ];
    assert_eq!(Azure::secondary_record(&nics, ip), rec(5, "b"));
    assert!(Azure::secondary_vms(&nics, ip).is_empty());
}

#[test]
fn the_newest_nic_record_is_the_same_whatever_the_order() {
    let rec = |epoch, vm: &str| {
        Some(ClaimRecord {
            epoch,
            holder: InstanceId(vm.into()),
        })
    };
    let found = [
        (Some("lb1"), rec(4, "lb1")),
        (Some("lb3"), rec(5, "lb3")),
        (Some("LB2"), rec(5, "lb2")),
        // Copied onto another VM's NIC: no claim of lb0's.
        (Some("lb4"), rec(9, "lb0")),
        (None, rec(9, "lb0")),
        (Some("lb5"), None),
    ];
    // Every order of the NICs gives the same record: epoch 5, the smaller name.
    for start in 0..found.len() {
        for reversed in [false, true] {
            let mut order = found.to_vec();
            order.rotate_left(start);
            if reversed {
                order.reverse();
            }
            assert_eq!(
                newest_nic_record(order),
                rec(5, "lb2"),
                "start {start}, reversed {reversed}"
            );
        }
    }
    // Names equal but for case: the exact spelling decides, the same for everyone.
    for order in [
        [(Some("lb2"), rec(5, "lb2")), (Some("lb2"), rec(5, "LB2"))],
        [(Some("lb2"), rec(5, "LB2")), (Some("lb2"), rec(5, "lb2"))],
    ] {
        assert_eq!(newest_nic_record(order), rec(5, "LB2"));
    }
    assert_eq!(newest_nic_record(Vec::new()), None);
    assert_eq!(newest_nic_record([(Some("lb1"), rec(1, "lb2"))]), None);
}

/// lb-probe mode against the simulated Azure: the claim record in the claimants' NIC tags.
/// The simulator's ARM router is served behind a spy that logs every request (method, path,
/// `If-Match`, body) and can let another writer edit NIC tags (`PATCH`, UpdateTags) just
/// before a chosen request is served, to make the races deterministic.
mod lb_probe {
    use std::sync::Arc;

    use axum::body::Body;
    use axum::extract::{Request, State};
    use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, IF_MATCH};
    use axum::http::HeaderValue as AxumHeaderValue;
    use axum::middleware::{self, Next};
    use axum::response::Response;
    use serde_json::{json, Value};
    use tower::ServiceExt;

    use super::*;
    use crate::sim::azure::{lab, lock, AzureLabSeed, AzureSim};
    use crate::sim::{Faults, HolderEvent, Trigger};

    /// The load balancer's frontend address (it is on no NIC).
    const FRONTEND: &str = "203.0.113.20";
    const LAB_SECRET: &str = "lb-probe-test-secret";
    /// Bound of every test.
    const LIMIT: Duration = Duration::from_secs(30);

    /// A request as the simulated ARM received it.
    #[derive(Clone, Debug)]
    struct Seen {
        method: String,
        path: String,
        /// A list's next page (`$skiptoken`), not a new read.
        next_page: bool,
        if_match: Option<String>,
        body: Option<Value>,
    }

    /// Another writer's tag edits, each `(NIC, tags added to its current ones)`, made just
    /// before a request matching `method` and `path_suffix` is served: after `skip` matching
    /// requests, for the next `times` ones. A list's next pages do not count.
    struct Hook {
        method: &'static str,
        path_suffix: String,
        skip: usize,
        times: usize,
        edits: Vec<(String, Vec<(String, String)>)>,
    }

    #[derive(Default)]
    struct Spy {
        log: Mutex<Vec<Seen>>,
        hooks: Mutex<Vec<Hook>>,
        /// Edits that ARM refused: the test must fail.
        failures: Mutex<Vec<String>>,
    }

    struct Lab {
        sim: Arc<AzureSim>,
        spy: Arc<Spy>,
        url: String,
        server: tokio::task::JoinHandle<()>,
    }

    impl Drop for Lab {
        fn drop(&mut self) {
            self.server.abort();
            self.sim.shutdown();
        }
    }

    fn ip() -> IpAddr {
        FRONTEND.parse().unwrap()
    }

    fn vm(i: usize) -> String {
        lab::vm_name(i)
    }

    fn rec(epoch: u64, holder: &str) -> ClaimRecord {
        ClaimRecord {
            epoch,
            holder: InstanceId(holder.into()),
        }
    }

    fn keys() -> (String, String) {
        secondary_record_tags(ip())
    }

    /// `(NIC, tags)` of a record written by another writer.
    fn record_edit(nic: usize, epoch: &str, holder: &str) -> (String, Vec<(String, String)>) {
        let (e, h) = keys();
        (
            lab::nic_name(nic),
            vec![(e, epoch.into()), (h, holder.into())],
        )
    }

    fn pools() -> Value {
        json!([{"id": format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Network/loadBalancers/lb-exoip/backendAddressPools/backends",
            lab::SUBSCRIPTION_ID, lab::RESOURCE_GROUP
        )}])
    }

    fn nic_url(nic: &str) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Network/networkInterfaces/{nic}?api-version={DEFAULT_API_VERSION}",
            lab::SUBSCRIPTION_ID,
            lab::RESOURCE_GROUP
        )
    }

    /// Four VMs, every NIC in the load balancer's backend pool, no public IP or secondary
    /// address; `records`: `(NIC, epoch tag, holder tag)` already there.
    async fn start(records: &[(usize, &str, &str)], faults: Faults) -> Lab {
        let mut seed = AzureLabSeed {
            hosts: 4,
            public_ip_on: None,
            secondary_on: None,
            client_secret: Secret::new(LAB_SECRET),
            ..AzureLabSeed::default()
        }
        .build()
        .expect("valid seed");
        let (epoch_key, holder_key) = keys();
        for (i, epoch, holder) in records {
            let tags = &mut seed.vms[*i].nics[0].tags;
            tags.insert(epoch_key.clone(), epoch.to_string());
            tags.insert(holder_key.clone(), holder.to_string());
        }
        let sim = AzureSim::new(&seed, faults, None, None).expect("the simulator starts");
        {
            // Set up outside the agent, as the load balancer's backend pool.
            let mut world = lock(&sim.world);
            for nic in world.nics.iter_mut() {
                for spec in [&mut nic.spec, &mut nic.applied] {
                    spec.ip_configs[0]
                        .extra
                        .insert("loadBalancerBackendAddressPools".into(), pools());
                }
            }
        }
        let spy = Arc::new(Spy::default());
        let app = sim.router().layer(middleware::from_fn_with_state(
            (spy.clone(), sim.clone()),
            spy_on,
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Lab {
            sim,
            spy,
            url,
            server,
        }
    }

    async fn spy_on(
        State((spy, sim)): State<(Arc<Spy>, Arc<AzureSim>)>,
        request: Request,
        next: Next,
    ) -> Response {
        let (parts, body) = request.into_parts();
        let bytes = axum::body::to_bytes(body, 4 << 20)
            .await
            .unwrap_or_default();
        let method = parts.method.to_string();
        let path = parts.uri.path().to_string();
        let next_page = parts
            .uri
            .query()
            .is_some_and(|q| q.to_ascii_lowercase().contains("skiptoken"));
        let due: Vec<(String, Vec<(String, String)>)> = {
            let mut hooks = spy.hooks.lock().unwrap();
            let mut due = Vec::new();
            for hook in hooks.iter_mut().filter(|h| {
                !next_page
                    && h.method == method
                    && path
                        .to_ascii_lowercase()
                        .ends_with(&h.path_suffix.to_ascii_lowercase())
            }) {
                if hook.skip > 0 {
                    hook.skip -= 1;
                } else if hook.times > 0 {
                    hook.times -= 1;
                    due.extend(hook.edits.iter().cloned());
                }
            }
            due
        };
        let authorization = parts.headers.get(AUTHORIZATION).cloned();
        for (nic, tags) in due {
            if let Err(e) = edit_tags(&sim, authorization.clone(), &nic, &tags).await {
                spy.failures.lock().unwrap().push(e);
            }
        }
        spy.log.lock().unwrap().push(Seen {
            method,
            path,
            next_page,
            if_match: parts
                .headers
                .get(IF_MATCH)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            body: serde_json::from_slice(&bytes).ok(),
        });
        next.run(Request::from_parts(parts, Body::from(bytes)))
            .await
    }

    /// Another writer: `PATCH` of a NIC's tags (UpdateTags replaces them all: the current ones
    /// plus `add`), straight to the simulated ARM with the caller's token.
    async fn edit_tags(
        sim: &Arc<AzureSim>,
        authorization: Option<AxumHeaderValue>,
        nic: &str,
        add: &[(String, String)],
    ) -> std::result::Result<(), String> {
        let state = sim.state_json();
        let mut tags = state["nics"]
            .as_array()
            .and_then(|n| n.iter().find(|n| n["name"] == nic))
            .map(|n| n["tags"].clone())
            .ok_or_else(|| format!("no NIC {nic}"))?;
        for (k, v) in add {
            tags[k] = json!(v);
        }
        let mut request = Request::builder()
            .method("PATCH")
            .uri(nic_url(nic))
            .header(CONTENT_TYPE, "application/json");
        if let Some(a) = authorization {
            request = request.header(AUTHORIZATION, a);
        }
        let request = request
            .body(Body::from(json!({ "tags": tags }).to_string()))
            .map_err(|e| e.to_string())?;
        let response = match sim.router().oneshot(request).await {
            Ok(r) => r,
            Err(e) => match e {},
        };
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!("PATCH of {nic}: HTTP {}", response.status()))
        }
    }

    impl Lab {
        fn client(&self, i: usize) -> Azure {
            let mut s = AzureSettings::new(AzureCredentials::ClientSecret {
                tenant_id: lab::TENANT_ID.into(),
                client_id: lab::CLIENT_ID.into(),
                client_secret: Secret::new(LAB_SECRET),
            });
            s.subscription = Some(lab::SUBSCRIPTION_ID.into());
            s.resource_group = Some(lab::RESOURCE_GROUP.into());
            s.vm_name = Some(vm(i));
            s.arm_endpoint = self.url.clone();
            s.authority_host = self.url.clone();
            s.mode = AzureMode::LbProbe;
            s.request_timeout = Duration::from_secs(2);
            s.operation_timeout = Duration::from_secs(8);
            s.poll_first = Duration::from_millis(10);
            s.poll_max = Duration::from_millis(50);
            s.retry = RetryPolicy {
                max_attempts: 4,
                base_delay: Duration::from_millis(10),
                max_delay: Duration::from_millis(100),
                max_elapsed: Duration::from_secs(5),
            };
            Azure::new(s).expect("valid settings")
        }

        fn hook(&self, hook: Hook) {
            self.spy.hooks.lock().unwrap().push(hook);
        }

        /// The ARM requests logged since the last call (the token requests left out).
        fn requests(&self) -> Vec<Seen> {
            std::mem::take(&mut *self.spy.log.lock().unwrap())
                .into_iter()
                .filter(|s| s.path.starts_with("/subscriptions/"))
                .collect()
        }

        fn nic(&self, i: usize) -> Value {
            let state = self.sim.state_json();
            state["nics"]
                .as_array()
                .and_then(|n| n.iter().find(|n| n["name"] == lab::nic_name(i)))
                .cloned()
                .unwrap_or_else(|| panic!("no NIC {i} in {state}"))
        }

        fn etags(&self) -> Vec<Value> {
            (0..4).map(|i| self.nic(i)["etag"].clone()).collect()
        }

        /// The load balancer pools of NIC `i`'s primary ipConfiguration, as the simulator
        /// keeps them.
        fn pools_of(&self, i: usize) -> Option<Value> {
            lock(&self.sim.world).nics[i].applied.ip_configs[0]
                .extra
                .get("loadBalancerBackendAddressPools")
                .cloned()
        }

        /// The timeline's claim events of the frontend address: (epoch, claimant).
        fn claims(&self) -> Vec<(u64, String)> {
            self.sim
                .timeline()
                .iter()
                .filter(|e| e.ip == ip() && e.event == HolderEvent::Claim)
                .map(|e| (e.epoch.unwrap_or_default(), e.instance.0.clone()))
                .collect()
        }

        fn assert_no_failed_edit(&self) {
            let failures = self.spy.failures.lock().unwrap();
            assert!(failures.is_empty(), "{failures:?}");
        }
    }

    fn puts(requests: &[Seen]) -> Vec<&Seen> {
        requests.iter().filter(|s| s.method == "PUT").collect()
    }

    /// A list of the NICs, or one of its next pages.
    fn is_list(s: &Seen) -> bool {
        s.method == "GET" && s.path.to_ascii_lowercase().ends_with("/networkinterfaces")
    }

    /// Lists of the NICs (first pages only).
    fn reads(requests: &[Seen]) -> usize {
        requests
            .iter()
            .filter(|s| is_list(s) && !s.next_page)
            .count()
    }

    async fn bounded<F: std::future::Future>(test: F) -> F::Output {
        tokio::time::timeout(LIMIT, test)
            .await
            .expect("the test finished within its time limit")
    }

    #[tokio::test]
    async fn a_claim_tags_the_claimants_own_nic_and_state_reads_it() {
        bounded(async {
            let lab = start(&[], Faults::default()).await;
            let (epoch_key, holder_key) = keys();
            let lb2 = lab.client(1);
            assert_eq!(lb2.arbiter(), Arbiter::WriteThenVerify);
            assert_eq!(lb2.state(ip()).await.unwrap(), AddressState::default());
            let listed = lab.nic(1)["etag"].clone();
            lab.requests();

            lb2.claim(ip(), &rec(1, &vm(1)), None).await.expect("claim");
            let requests = lab.requests();
            // The list (check), the PUT of our NIC, its operation, the list again (verify).
            let put = puts(&requests);
            assert_eq!(put.len(), 1, "{requests:#?}");
            assert_eq!(reads(&requests), 2, "{requests:#?}");
            let at = requests.iter().position(|s| s.method == "PUT").unwrap();
            assert!(
                at > 0 && requests[..at].iter().all(is_list),
                "{requests:#?}"
            );
            let after = &requests[at + 1..];
            let polls = after.iter().take_while(|s| !is_list(s)).count();
            assert!(polls > 0, "{requests:#?}");
            assert!(
                after[..polls]
                    .iter()
                    .all(|s| s.method == "GET" && s.path.contains("/operations/")),
                "{requests:#?}"
            );
            assert!(
                !after[polls..].is_empty() && after[polls..].iter().all(is_list),
                "{requests:#?}"
            );
            assert!(put[0]
                .path
                .ends_with(&format!("/networkInterfaces/{}", lab::nic_name(1))));
            assert_eq!(
                put[0].if_match.as_ref(),
                listed.as_str().map(str::to_string).as_ref()
            );
            // The whole NIC as read, with the record's tags added: the NSG, the backend pool
            // membership and the other tags stay; the read-only fields go.
            let body = put[0].body.as_ref().expect("a JSON body");
            assert_eq!(
                body["tags"],
                json!({"exoip-group": "lab", epoch_key.as_str(): "1", holder_key.as_str(): vm(1)})
            );
            assert_eq!(
                last_segment(
                    body["properties"]["networkSecurityGroup"]["id"]
                        .as_str()
                        .unwrap()
                ),
                lab::NSG
            );
            assert_eq!(
                body["properties"]["ipConfigurations"][0]["properties"]
                    ["loadBalancerBackendAddressPools"],
                pools()
            );
            assert!(
                body.get("etag").is_none() && body["properties"].get("provisioningState").is_none()
            );
            assert_eq!(lab.pools_of(1), Some(pools()), "still in the backend pool");
            assert_eq!(lab.nic(1)["nsg"], lab::NSG);

            let state = lab.client(0).state(ip()).await.unwrap();
            assert_eq!(state.record, Some(rec(1, &vm(1))));
            assert_eq!(state.holders, vec![InstanceId(vm(1))]);

            // The next claimant writes its own NIC; ours keeps its outdated tags.
            let lb3 = lab.client(2);
            lb3.claim(ip(), &rec(2, &vm(2)), Some(1))
                .await
                .expect("second claim");
            let state = lb2.state(ip()).await.unwrap();
            assert_eq!(state.record, Some(rec(2, &vm(2))));
            assert_eq!(state.holders, vec![InstanceId(vm(2))]);
            assert_eq!(lab.nic(1)["tags"][&epoch_key], "1");
            // Claiming again over one's own record rewrites it.
            lb3.claim(ip(), &rec(3, &vm(2)), Some(2))
                .await
                .expect("re-claim");
            assert_eq!(lb2.state(ip()).await.unwrap().record, Some(rec(3, &vm(2))));
            assert_eq!(lab.claims(), vec![(1, vm(1)), (2, vm(2)), (3, vm(2))]);
            assert_eq!(lab.pools_of(2), Some(pools()));
        })
        .await;
    }

    #[tokio::test]
    async fn a_claim_on_a_stale_read_writes_nothing() {
        bounded(async {
            let lab = start(&[(0, "4", "lb1")], Faults::default()).await;
            let lb2 = lab.client(1);
            let etags = lab.etags();
            lab.requests();
            for seen in [None, Some(3)] {
                let e = lb2.claim(ip(), &rec(5, &vm(1)), seen).await.unwrap_err();
                assert_eq!(e.kind(), "conflict", "{e}");
                assert!(e.to_string().contains("epoch 4"), "{e}");
            }
            let requests = lab.requests();
            assert!(puts(&requests).is_empty(), "{requests:#?}");
            assert!(requests.iter().all(is_list), "{requests:#?}");
            assert_eq!(reads(&requests), 2, "one list per claim: {requests:#?}");
            assert_eq!(lab.etags(), etags, "no NIC was written");
            // Refused before any request: an epoch that does not grow, another VM's claim.
            let e = lb2.claim(ip(), &rec(4, &vm(1)), Some(4)).await.unwrap_err();
            assert_eq!(e.kind(), "invalid", "{e}");
            let e = lb2.claim(ip(), &rec(5, &vm(2)), Some(4)).await.unwrap_err();
            assert_eq!(e.kind(), "invalid", "{e}");
            assert!(lab.requests().is_empty());
            // The calls the agent never makes in this mode stay refused.
            for e in [
                lb2.holders(ip()).await.unwrap_err(),
                lb2.attach(ip(), &InstanceId(vm(1))).await.unwrap_err(),
                lb2.detach(ip(), &InstanceId(vm(1))).await.unwrap_err(),
            ] {
                assert_eq!(e.kind(), "invalid", "{e}");
                assert!(e.to_string().contains("lb-probe"), "{e}");
            }
            assert!(lab.requests().is_empty());
            lb2.claim(ip(), &rec(5, &vm(1)), Some(4))
                .await
                .expect("claim");
            assert_eq!(lb2.state(ip()).await.unwrap().record, Some(rec(5, &vm(1))));
        })
        .await;
    }

    #[tokio::test]
    async fn equal_epochs_go_to_the_smaller_holder_name_for_every_reader() {
        bounded(async {
            // Two claims of epoch 5 made at once (lb3's NIC comes after lb2's in the list), an
            // older one on lb1.
            let lab = start(
                &[(0, "4", "lb1"), (1, "5", "LB2"), (2, "5", "lb3")],
                Faults::default(),
            )
            .await;
            for i in 0..4 {
                let state = lab.client(i).state(ip()).await.unwrap();
                assert_eq!(state.record, Some(rec(5, "LB2")), "read by {}", vm(i));
                assert_eq!(state.holders, vec![InstanceId("LB2".into())]);
            }
            let lb4 = lab.client(3);
            lb4.claim(ip(), &rec(6, &vm(3)), Some(5))
                .await
                .expect("claim over the tie");
            assert_eq!(lb4.state(ip()).await.unwrap().record, Some(rec(6, &vm(3))));
            assert_eq!(lab.claims(), vec![(6, vm(3))]);
        })
        .await;
    }

    #[tokio::test]
    async fn records_on_another_vms_nic_and_malformed_ones_are_ignored() {
        bounded(async {
            let lab = start(
                &[
                    (0, "9", "lb3"),
                    (1, "7", ""),
                    (2, "2", "lb3"),
                    (3, "x", "lb4"),
                ],
                Faults::default(),
            )
            .await;
            let lb2 = lab.client(1);
            let state = lb2.state(ip()).await.unwrap();
            assert_eq!(
                state.record,
                Some(rec(2, "lb3")),
                "the copy on lb1's NIC is no claim"
            );
            assert_eq!(state.holders, vec![InstanceId("lb3".into())]);
            let e = lb2
                .claim(ip(), &rec(10, &vm(1)), Some(9))
                .await
                .unwrap_err();
            assert_eq!(e.kind(), "conflict", "{e}");
            // A claim writes a well-formed record over the malformed one on its own NIC.
            lb2.claim(ip(), &rec(3, &vm(1)), Some(2))
                .await
                .expect("claim");
            let (epoch_key, holder_key) = keys();
            assert_eq!(lab.nic(1)["tags"][&epoch_key], "3");
            assert_eq!(lab.nic(1)["tags"][&holder_key], vm(1));
            assert_eq!(lb2.state(ip()).await.unwrap().record, Some(rec(3, &vm(1))));
        })
        .await;
    }

    #[tokio::test]
    async fn a_nic_edited_between_the_read_and_the_write_is_read_again() {
        bounded(async {
            let lab = start(&[], Faults::default()).await;
            let (epoch_key, holder_key) = keys();
            let nic = lab::nic_name(1);
            lab.hook(Hook {
                method: "PUT",
                path_suffix: format!("/networkInterfaces/{nic}"),
                skip: 0,
                times: 1,
                edits: vec![(nic.clone(), vec![("owner".into(), "ops".into())])],
            });
            let lb2 = lab.client(1);
            let listed = lab.nic(1)["etag"].clone();
            lab.requests();
            lb2.claim(ip(), &rec(1, &vm(1)), None).await.expect("claim");
            lab.assert_no_failed_edit();
            let requests = lab.requests();
            let put = puts(&requests);
            assert_eq!(put.len(), 2, "{requests:#?}");
            assert_eq!(put[0].if_match.as_deref(), listed.as_str(), "the etag of the list");
            assert_ne!(put[1].if_match, put[0].if_match, "the etag of a fresh list");
            // The other writer's edit is kept: the second PUT starts from the fresh read.
            assert_eq!(
                lab.nic(1)["tags"],
                json!({"exoip-group": "lab", "owner": "ops", epoch_key.as_str(): "1", holder_key.as_str(): vm(1)})
            );
            assert_eq!(lab.pools_of(1), Some(pools()));
            assert_eq!(lb2.state(ip()).await.unwrap().record, Some(rec(1, &vm(1))));
        })
        .await;
    }

    #[tokio::test]
    async fn a_claim_made_while_ours_was_refused_is_a_conflict() {
        bounded(async {
            let lab = start(&[], Faults::default()).await;
            let nic = lab::nic_name(1);
            // lb3 records its claim and someone edits our NIC: our PUT meets a new etag, and
            // the fresh read finds lb3's record.
            lab.hook(Hook {
                method: "PUT",
                path_suffix: format!("/networkInterfaces/{nic}"),
                skip: 0,
                times: 1,
                edits: vec![
                    record_edit(2, "1", "lb3"),
                    (nic.clone(), vec![("owner".into(), "ops".into())]),
                ],
            });
            let lb2 = lab.client(1);
            let e = lb2.claim(ip(), &rec(1, &vm(1)), None).await.unwrap_err();
            lab.assert_no_failed_edit();
            assert_eq!(e.kind(), "conflict", "{e}");
            let requests = lab.requests();
            assert_eq!(puts(&requests).len(), 1, "{requests:#?}");
            assert!(
                lab.nic(1)["tags"].get(keys().0).is_none(),
                "nothing written"
            );
            let state = lb2.state(ip()).await.unwrap();
            assert_eq!(state.record, Some(rec(1, "lb3")));
        })
        .await;
    }

    #[tokio::test]
    async fn a_nic_that_keeps_changing_is_a_conflict_after_a_few_tries() {
        bounded(async {
            let lab = start(&[], Faults::default()).await;
            let nic = lab::nic_name(1);
            lab.hook(Hook {
                method: "PUT",
                path_suffix: format!("/networkInterfaces/{nic}"),
                skip: 0,
                times: 100,
                edits: vec![(nic.clone(), vec![("owner".into(), "ops".into())])],
            });
            let lb2 = lab.client(1);
            lab.requests();
            let e = lb2.claim(ip(), &rec(1, &vm(1)), None).await.unwrap_err();
            lab.assert_no_failed_edit();
            assert_eq!(e.kind(), "conflict", "{e}");
            assert!(e.to_string().contains("PreconditionFailed"), "{e}");
            let requests = lab.requests();
            assert_eq!(
                puts(&requests).len(),
                LB_PROBE_CLAIM_ATTEMPTS as usize,
                "{requests:#?}"
            );
            assert_eq!(lb2.state(ip()).await.unwrap().record, None);
        })
        .await;
    }

    #[tokio::test]
    async fn the_read_back_tells_a_lost_race() {
        bounded(async {
            // Before our verifying list (the second one), another claimant records a newer
            // claim, or one of the same epoch that wins the tie (lb1 < lb2), or one that
            // loses it (lb3).
            for (other, epoch, won) in [(2, "2", false), (0, "1", false), (2, "1", true)] {
                let lab = start(&[], Faults::default()).await;
                lab.hook(Hook {
                    method: "GET",
                    path_suffix: "/networkInterfaces".into(),
                    skip: 1,
                    times: 1,
                    edits: vec![record_edit(other, epoch, &vm(other))],
                });
                let lb2 = lab.client(1);
                let result = lb2.claim(ip(), &rec(1, &vm(1)), None).await;
                lab.assert_no_failed_edit();
                let state = lb2.state(ip()).await.unwrap();
                let (epoch_key, _) = keys();
                assert_eq!(lab.nic(1)["tags"][&epoch_key], "1", "our tags stay");
                if won {
                    result.expect("the tie goes to lb2");
                    assert_eq!(state.record, Some(rec(1, &vm(1))));
                } else {
                    let e = result.unwrap_err();
                    assert_eq!(e.kind(), "conflict", "{e}");
                    let theirs = rec(epoch.parse().unwrap(), &vm(other));
                    assert!(e.to_string().contains(&describe(Some(&theirs))), "{e}");
                    assert_eq!(state.record, Some(theirs.clone()));
                    assert_eq!(state.holders, vec![theirs.holder]);
                }
            }
        })
        .await;
    }

    #[tokio::test]
    async fn a_lost_answer_to_our_own_write_is_no_conflict() {
        bounded(async {
            // Our PUT is applied but its answer is lost: the retry meets the new etag (412),
            // and the fresh read shows our own record.
            let lab = start(
                &[],
                Faults {
                    response_lost: Trigger::count(1).mutations_only(),
                    ..Faults::default()
                },
            )
            .await;
            let lb2 = lab.client(1);
            lab.requests();
            lb2.claim(ip(), &rec(1, &vm(1)), None).await.expect("claim");
            let requests = lab.requests();
            assert_eq!(puts(&requests).len(), 2, "{requests:#?}");
            assert_eq!(lb2.state(ip()).await.unwrap().record, Some(rec(1, &vm(1))));
        })
        .await;
    }
}
