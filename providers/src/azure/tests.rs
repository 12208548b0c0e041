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
