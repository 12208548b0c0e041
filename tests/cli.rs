//! The command line, through the real binary: drop-in flags, `IF_*` variables, one-line errors
//! naming the offending flag, and no secret ever printed.

use std::process::{Command, Output};

const SECRET: &str = "s3cr3t-value-never-printed-0123456789";

fn exoip(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_exoip"));
    cmd.args(args);
    // A clean environment: the developer's or CI's variables must not leak into the checks.
    cmd.env_clear();
    cmd.env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run exoip")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

const CREDS: &[(&str, &str)] = &[
    ("EXOSCALE_API_KEY", "EXOkey123"),
    ("EXOSCALE_API_SECRET", SECRET),
];

/// Runs a configuration that must be rejected; returns the single stderr line.
fn rejected(args: &[&str], env: &[(&str, &str)]) -> String {
    let o = exoip(args, env);
    let (out, err) = text(&o);
    assert_eq!(
        o.status.code(),
        Some(2),
        "args {args:?}: stdout {out} stderr {err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "one line only: {err}");
    assert!(!err.contains(SECRET) && !out.contains(SECRET));
    err
}

#[test]
fn validate_prints_the_effective_configuration_without_secrets() {
    let o = exoip(
        &[
            "-n",
            "-W",
            "-xi",
            "203.0.113.10",
            "-p",
            "192.0.2.11,192.0.2.12:4000",
            "-P",
            "5",
            "-t",
            "100ms",
        ],
        CREDS,
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out} {err}");
    assert!(out.contains("203.0.113.10"));
    assert!(
        out.contains("192.0.2.11:12345") && out.contains("192.0.2.12:4000"),
        "{out}"
    );
    assert!(out.contains("priority           5"));
    assert!(out.contains("100ms"));
    assert!(out.contains("https://api-ch-gva-2.exoscale.com/v2"));
    assert!(out.contains("[redacted]"));
    assert!(!out.contains(SECRET) && !err.contains(SECRET));
}

#[test]
fn ifupdown_variables_configure_the_agent_and_flags_win() {
    let mut env = CREDS.to_vec();
    env.extend([
        ("IF_ADDRESS", "203.0.113.10"),
        ("IF_HOST_PRIORITY", "7"),
        ("IF_EXOSCALE_PEER_GROUP", "lbs"),
        ("IF_DEAD_RATIO", "4"),
        ("IF_ADVERTISEMENT_INTERVAL", "0.5"),
        ("IF_BIND_TO", ":5555"),
        (
            "IF_EXOSCALE_INSTANCE_ID",
            "2f6a9a43-1c51-4a4e-9e0a-6f5bd2a7c1d0",
        ),
    ]);
    let o = exoip(&["-n", "-W"], &env);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out} {err}");
    assert!(out.contains("priority           7"), "{out}");
    assert!(out.contains("security group 'lbs'"));
    assert!(
        out.contains("dead ratio         4 (dead after 2s)"),
        "{out}"
    );
    assert!(out.contains("bind               :5555"));
    assert!(out.contains("2f6a9a43-1c51-4a4e-9e0a-6f5bd2a7c1d0"));
    let o = exoip(&["-n", "-W", "-P", "3"], &env);
    assert!(
        text(&o).0.contains("priority           3"),
        "the flag wins over IF_HOST_PRIORITY"
    );
}

#[test]
fn legacy_go_flag_forms_are_accepted() {
    let o = exoip(
        &[
            "-W",
            "-n",
            "-xi=203.0.113.10",
            "-xk",
            "EXOother",
            "-P=12",
            "-p",
            "192.0.2.11",
            "-xe",
            "https://api.exoscale.com/compute",
        ],
        &[("EXOSCALE_API_SECRET", SECRET)],
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out} {err}");
    assert!(out.contains("EXOother"));
    assert!(out.contains("priority           12"));
    // The retired v1 endpoint of old stanzas maps to API v2, with a warning.
    assert!(
        out.contains("https://api-ch-gva-2.exoscale.com/v2"),
        "{out}"
    );
    // Logs (warnings included) go to stdout.
    assert!(out.contains("retired API v1"), "{out}");
}

#[test]
fn secret_on_the_command_line_works_but_warns() {
    let o = exoip(
        &[
            "-n",
            "-W",
            "-xi",
            "203.0.113.10",
            "-p",
            "192.0.2.11",
            "-xk",
            "EXOk",
            "-xs",
            SECRET,
        ],
        &[],
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out} {err}");
    assert!(out.contains("(ps)"), "warns that -xs is visible: {out}");
    assert!(!out.contains(SECRET) && !err.contains(SECRET));
}

#[test]
fn wrong_input_is_one_line_naming_the_flag() {
    let base = ["-xi", "203.0.113.10", "-p", "192.0.2.11"];
    let with = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        v.extend(base.iter().map(|s| s.to_string()));
        v
    };
    let cases: Vec<(Vec<String>, &str)> = vec![
        (with(&[]), "no mode"),
        (with(&["-W", "-A"]), "exclusive"),
        (with(&["-W", "-G", "lbs"]), "-G"),
        (with(&["-W", "-P", "0"]), "-P"),
        (with(&["-W", "-P", "300"]), "-P"),
        (with(&["-W", "-t", "0"]), "-t"),
        (with(&["-W", "-t", "fast"]), "-t"),
        (with(&["-W", "-r", "1"]), "-r"),
        (with(&["-W", "-l", "nowhere"]), "-l"),
        (
            vec![
                "-W".into(),
                "-xi".into(),
                "203.0.113.300".into(),
                "-p".into(),
                "192.0.2.11".into(),
            ],
            "-xi",
        ),
        (vec!["-W".into(), "-p".into(), "192.0.2.11".into()], "-xi"),
        (vec!["-W".into(), "-xi".into(), "203.0.113.10".into()], "-p"),
        (with(&["-W", "-p", "192.0.2.999"]), "-p"),
    ];
    for (args, needle) in cases {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let line = rejected(&refs, CREDS);
        assert!(
            line.contains(needle),
            "{args:?}: expected {needle:?} in {line:?}"
        );
    }
}

#[test]
fn missing_credentials_are_reported() {
    let args = ["-W", "-xi", "203.0.113.10", "-p", "192.0.2.11"];
    assert!(rejected(&args, &[("EXOSCALE_API_SECRET", SECRET)]).contains("API key"));
    assert!(rejected(&args, &[("EXOSCALE_API_KEY", "EXOk")]).contains("API secret"));
}

#[test]
fn secret_files_must_be_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secret");
    std::fs::write(&path, format!("{SECRET}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let p = path.to_str().unwrap();
    let args = [
        "-n",
        "-W",
        "-xi",
        "203.0.113.10",
        "-p",
        "192.0.2.11",
        "-xk",
        "EXOk",
        "--api-secret-file",
        p,
    ];
    assert!(rejected(&args, &[]).contains("chmod"));
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let o = exoip(&args, &[]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out} {err}");
    assert!(!out.contains(SECRET) && !err.contains(SECRET));
}

#[test]
fn help_and_version() {
    let o = exoip(&["--version"], &[]);
    assert!(o.status.success());
    assert!(text(&o).0.starts_with("exoip "));
    let o = exoip(&["--help"], &[]);
    let out = text(&o).0;
    for flag in [
        "--watchdog",
        "--associate",
        "--dissociate",
        "--priority",
        "--peer-group",
        "--dead-ratio",
        "--interval",
        "--api-secret-file",
        "--metadata-url",
        "--no-alias",
    ] {
        assert!(out.contains(flag), "{flag} in --help");
    }
}

#[test]
fn legacy_protocol_is_checked_and_shown() {
    let base = ["-W", "-p", "192.0.2.11"];
    let args = |extra: &[&'static str]| -> Vec<&'static str> {
        base.iter().chain(extra.iter()).copied().collect()
    };
    for (extra, needle) in [
        (
            &["-xi", "2001:db8::10", "--legacy-protocol"][..],
            "--legacy-protocol",
        ),
        (
            &[
                "-xi",
                "203.0.113.10",
                "--legacy-protocol",
                "--legacy-nic-id",
                "not-a-uuid",
            ][..],
            "--legacy-nic-id",
        ),
        (
            &[
                "-xi",
                "203.0.113.10",
                "--legacy-nic-id",
                "00112233-4455-6677-8899-aabbccddeeff",
            ][..],
            "--legacy-protocol",
        ),
    ] {
        let line = rejected(&args(extra), CREDS);
        assert!(line.contains(needle), "{extra:?}: {line}");
    }
    let line = rejected(
        &args(&[
            "-xi",
            "192.0.2.50",
            "--legacy-protocol",
            "--provider",
            "openstack",
        ]),
        &[
            ("OS_AUTH_URL", "http://192.0.2.1:5000/v3"),
            ("OS_USERNAME", "demo"),
            ("OS_PASSWORD", SECRET),
            ("OS_PROJECT_NAME", "demo"),
            ("OS_USER_DOMAIN_NAME", "Default"),
            ("OS_PROJECT_DOMAIN_NAME", "Default"),
            ("EXOIP_AUTH_KEY", "0123456789abcdef0123456789abcdef"),
        ],
    );
    assert!(line.contains("--legacy-protocol"), "{line}");
    let o = exoip(
        &args(&[
            "-n",
            "-xi",
            "203.0.113.10",
            "--legacy-protocol",
            "--legacy-nic-id",
            "00112233-4455-6677-8899-aabbccddeeff",
        ]),
        CREDS,
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out} {err}");
}
