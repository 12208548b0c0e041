//! How exoip fits the host: the systemd units (the settings that matter, `systemd-analyze
//! verify` and `security` where systemd is installed, and their command lines accepted by the
//! real binary), the ifupdown and networkd-dispatcher hooks (run with a fake `systemctl`), the
//! cloud-init examples and the Debian package's asset list.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn example(rel: &str) -> PathBuf {
    root().join("examples").join(rel)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

// ---------------------------------------------------------------------------------------------
// Unit files

/// A unit file (or a unit with drop-ins appended) as systemd reads it: `[Section]`, `Key=Value`,
/// `#`/`;` comments, a trailing backslash continues the line, and an empty assignment resets
/// the list so far (as `ExecStart=` does in a drop-in).
struct Unit {
    values: BTreeMap<(String, String), Vec<String>>,
}

impl Unit {
    fn parse(text: &str) -> Unit {
        let mut values: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
        let mut section = String::new();
        let mut pending = String::new();
        for raw in text.lines() {
            let line = raw.trim();
            if pending.is_empty() && (line.starts_with('#') || line.starts_with(';')) {
                continue;
            }
            if let Some(cont) = line.strip_suffix('\\') {
                pending.push_str(cont);
                pending.push(' ');
                continue;
            }
            let line = format!("{pending}{line}");
            pending.clear();
            if line.is_empty() {
                continue;
            }
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name.to_string();
                continue;
            }
            let (key, value) = line.split_once('=').expect("Key=Value");
            let list = values
                .entry((section.clone(), key.trim().to_string()))
                .or_default();
            let value = value.trim();
            if value.is_empty() {
                list.clear();
            } else {
                list.push(value.to_string());
            }
        }
        Unit { values }
    }

    fn all(&self, section: &str, key: &str) -> Vec<&str> {
        self.values
            .get(&(section.to_string(), key.to_string()))
            .map(|v| v.iter().map(String::as_str).collect())
            .unwrap_or_default()
    }

    fn one(&self, section: &str, key: &str) -> &str {
        match self.all(section, key).as_slice() {
            [v] => v,
            other => panic!("[{section}] {key}: expected one value, got {other:?}"),
        }
    }

    /// Space-separated list settings, every assignment together.
    fn words(&self, section: &str, key: &str) -> Vec<&str> {
        self.all(section, key)
            .into_iter()
            .flat_map(str::split_whitespace)
            .collect()
    }

    /// `Environment=` assignments (`"KEY=value with spaces"` or `KEY=value`).
    fn environment(&self) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        for assignment in self.all("Service", "Environment") {
            for word in shell_words::split(assignment).expect("Environment= quoting") {
                let (k, v) = word.split_once('=').expect("KEY=VALUE");
                env.insert(k.to_string(), v.to_string());
            }
        }
        env
    }
}

fn unit(name: &str) -> Unit {
    Unit::parse(&read(&example(&format!("systemd/{name}"))))
}

fn seconds(value: &str) -> f64 {
    humantime::parse_duration(value)
        .or_else(|_| humantime::parse_duration(&format!("{value}s")))
        .unwrap_or_else(|e| panic!("duration {value:?}: {e}"))
        .as_secs_f64()
}

/// What both units must say: readiness and watchdog, a graceful stop with time to hand over,
/// restarts, the least privilege that still works, and the secret as a credential only.
fn check_service(u: &Unit, name: &str) {
    let s = "Service";
    assert_eq!(u.one(s, "Type"), "notify", "{name}");
    assert_eq!(
        u.one(s, "NotifyAccess"),
        "main",
        "{name}: hooks must not notify"
    );
    let watchdog = seconds(u.one(s, "WatchdogSec"));
    assert!((2.0..=60.0).contains(&watchdog), "{name}: WatchdogSec");

    assert_eq!(
        u.one(s, "KillSignal"),
        "SIGTERM",
        "{name}: SIGTERM hands over"
    );
    assert_eq!(
        u.one(s, "KillMode"),
        "mixed",
        "{name}: the agent alone gets SIGTERM"
    );
    // Two dead periods at the defaults (2 x 3 s) plus up to 10 s for pending hooks.
    assert!(seconds(u.one(s, "TimeoutStopSec")) >= 20.0, "{name}");
    assert!(
        ["always", "on-failure"].contains(&u.one(s, "Restart")),
        "{name}"
    );
    assert!(
        u.words(s, "RestartPreventExitStatus").contains(&"2"),
        "{name}: a configuration error (exit 2) is not retried"
    );

    for key in ["CapabilityBoundingSet", "AmbientCapabilities"] {
        let caps = u.words(s, key);
        assert!(caps.contains(&"CAP_NET_ADMIN"), "{name}: {key}");
        for cap in &caps {
            assert!(
                ["CAP_NET_ADMIN", "CAP_NET_RAW"].contains(cap),
                "{name}: {key} grants {cap}"
            );
        }
    }
    for (key, value) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictNamespaces", "yes"),
        ("LockPersonality", "yes"),
    ] {
        assert_eq!(u.one(s, key), value, "{name}: {key}");
    }
    // --track-process must see other users' processes.
    assert!(u.all(s, "ProtectProc").is_empty(), "{name}: ProtectProc");
    let families = u.words(s, "RestrictAddressFamilies");
    for family in ["AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"] {
        assert!(families.contains(&family), "{name}: {family} is needed");
    }
    assert!(u.words(s, "SystemCallFilter").contains(&"@system-service"));
    assert!(u.one(s, "RuntimeDirectory").starts_with("exoip"), "{name}");
    assert!(u.one(s, "StateDirectory").starts_with("exoip"), "{name}");

    // The secret: a credential, read from the credentials directory, never on the command line
    // or in the unit's environment.
    assert_eq!(
        u.one(s, "LoadCredential"),
        "api-secret:/etc/exoip/api-secret",
        "{name}"
    );
    let exec = u.one(s, "ExecStart");
    assert!(exec.starts_with("/usr/bin/exoip -W "), "{name}: {exec}");
    // Either on the command line from the credentials directory, or named by the configuration
    // file (the one the package installs refers to the same credential).
    assert!(
        exec.contains("--api-secret-file %d/api-secret")
            || (exec.contains(" -c /etc/exoip/")
                && read(&example("exoip.toml"))
                    .contains("\napi-secret-credential = \"api-secret\"")),
        "{name}: {exec}"
    );
    for secret_flag in ["-xs", "--xs", "--api-secret "] {
        assert!(
            !exec.contains(secret_flag),
            "{name}: {secret_flag} in ExecStart"
        );
    }
    for assignment in u.all(s, "Environment") {
        assert!(!assignment.contains("SECRET"), "{name}: {assignment}");
    }

    let after = u.words("Unit", "After");
    assert!(after.contains(&"network-online.target"), "{name}");
    assert!(u.words("Unit", "Wants").contains(&"network-online.target"));
    assert_eq!(u.one("Install", "WantedBy"), "multi-user.target", "{name}");
}

#[test]
fn exoip_service_declares_what_matters() {
    let u = unit("exoip.service");
    check_service(&u, "exoip.service");
    assert_eq!(u.one("Service", "RuntimeDirectory"), "exoip");
    assert_eq!(u.one("Service", "StateDirectory"), "exoip");
    assert!(u
        .one("Service", "ExecStart")
        .contains("-c /etc/exoip/exoip.toml"));
}

#[test]
fn template_unit_declares_what_matters() {
    let u = unit("exoip@.service");
    check_service(&u, "exoip@.service");
    let env = u.environment();
    assert_eq!(env["EXOIP_CONFIG_ARGS"], "-c /etc/exoip/%i.toml");
    let exec = u.one("Service", "ExecStart");
    // The configuration by default; the hooks' environment file empties the variable.
    assert!(exec.contains(" $EXOIP_CONFIG_ARGS "), "{exec}");
    let files = u.all("Service", "EnvironmentFile");
    assert!(files.contains(&"-/run/exoip/%i.env"), "{files:?}");
    // The hooks' file is read last, so that it wins.
    assert_eq!(files.last(), Some(&"-/run/exoip/%i.env"));
    // Instances must not share the status socket or the incarnation.
    assert_eq!(u.one("Service", "RuntimeDirectory"), "exoip/%i");
    assert_eq!(u.one("Service", "StateDirectory"), "exoip/%i");
    assert!(
        exec.contains("--status-socket %t/exoip/%i/exoip.sock"),
        "{exec}"
    );
    assert!(exec.contains("--state-dir %S/exoip/%i"), "{exec}");
}

#[test]
fn nic_announce_drop_in_adds_only_raw_sockets() {
    let drop_in = read(&example("systemd/exoip.service.d/nic-announce.conf"));
    let merged = Unit::parse(&format!(
        "{}\n{drop_in}",
        read(&example("systemd/exoip.service"))
    ));
    check_service(&merged, "exoip.service + nic-announce.conf");
    let caps = merged.words("Service", "CapabilityBoundingSet");
    assert!(caps.contains(&"CAP_NET_RAW"), "{caps:?}");
    assert!(merged
        .words("Service", "RestrictAddressFamilies")
        .contains(&"AF_PACKET"));
    assert!(!unit("exoip.service")
        .words("Service", "CapabilityBoundingSet")
        .contains(&"CAP_NET_RAW"));
}

/// The command line of a unit as systemd would run it for `instance`: specifiers resolved,
/// `$VAR` words from `env` (split at spaces, nothing when empty), `${VAR}` inside words.
fn exec_start_words(
    u: &Unit,
    instance: &str,
    credentials: &Path,
    env: &BTreeMap<String, String>,
) -> Vec<String> {
    let resolve = |s: &str| {
        s.replace("%d", &credentials.display().to_string())
            .replace("%i", instance)
            .replace("%I", instance)
            .replace("%t", "/run")
            .replace("%S", "/var/lib")
    };
    let exec = resolve(u.one("Service", "ExecStart"));
    let mut words = Vec::new();
    for word in shell_words::split(&exec).expect("ExecStart quoting") {
        match word.strip_prefix('$') {
            Some(var) if !var.starts_with('{') => {
                let value = resolve(env.get(var).map_or("", String::as_str));
                words.extend(value.split_whitespace().map(str::to_string));
            }
            _ => words.push(word),
        }
    }
    words
}

/// Runs `exoip ARGS -n` (validate: parse the flags and the environment, print the effective
/// configuration, touch nothing) in a clean environment.
fn validate(words: &[String], env: &BTreeMap<String, String>) -> Output {
    assert_eq!(words[0], "/usr/bin/exoip");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_exoip"));
    cmd.args(&words[1..]).arg("-n").env_clear();
    cmd.env("PATH", std::env::var("PATH").unwrap_or_default());
    cmd.envs(env);
    cmd.output().unwrap()
}

fn credentials_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, value) in [
        ("api-secret", "s3cr3t-api-secret-never-printed"),
        ("auth-key", "0123456789abcdef0123456789abcdef"),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, format!("{value}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    dir
}

/// The template, started by the ifupdown hook for the stanza of examples/ifupdown: the real
/// binary accepts the command line and the variables, and takes the per-instance paths.
#[test]
fn template_command_line_is_accepted_for_a_hook_instance() {
    let u = unit("exoip@.service");
    let creds = credentials_dir();
    let mut env = u.environment();
    // What if-up.d/exoip writes for interfaces.hooks (see the hook tests).
    for (k, v) in [
        ("EXOIP_CONFIG_ARGS", ""),
        ("IF_ADDRESS", "198.51.100.50"),
        ("IF_EXOSCALE_PEER_GROUP", "loadbalancers"),
        ("IF_EXOSCALE_API_KEY", "EXOxxxxxxxxxxxxxxxxxxxxxxxx"),
        ("IF_HOST_PRIORITY", "10"),
    ] {
        env.insert(k.to_string(), v.to_string());
    }
    let words = exec_start_words(&u, "lo:1", creds.path(), &env);
    env.remove("EXOIP_CONFIG_ARGS");
    let out = validate(&words, &env);
    let report = text(&out);
    assert!(out.status.success(), "{words:?}\n{report}");
    assert!(report.contains("198.51.100.50"), "{report}");
    assert!(report.contains("/run/exoip/lo:1/exoip.sock"), "{report}");
    assert!(report.contains("/var/lib/exoip/lo:1"), "{report}");
    assert!(!report.contains("s3cr3t"), "{report}");
}

/// Both units with their configuration file (`-c`): the flags are the binary's.
#[test]
fn unit_command_lines_are_accepted_by_the_binary() {
    use clap::CommandFactory;
    let creds = credentials_dir();
    for (name, instance) in [("exoip.service", ""), ("exoip@.service", "lb-web")] {
        let u = unit(name);
        let words = exec_start_words(&u, instance, creds.path(), &u.environment());
        let args = exoip::cli::normalize_legacy_args(words.iter().map(std::ffi::OsString::from));
        if let Err(e) = exoip::cli::Cli::command().try_get_matches_from(args) {
            panic!("{name}: the binary does not accept {words:?}: {e}");
        }
    }
}

/// A copy of the units that `systemd-analyze` can check here: the binary at its real path.
fn units_for_systemd(dir: &Path) -> Vec<PathBuf> {
    let binary = env!("CARGO_BIN_EXE_exoip");
    let service = read(&example("systemd/exoip.service")).replace("/usr/bin/exoip", binary);
    let template = read(&example("systemd/exoip@.service")).replace("/usr/bin/exoip", binary);
    let nic = read(&example("systemd/exoip.service.d/nic-announce.conf"));
    let files = [
        ("exoip.service", service.clone()),
        ("exoip@.service", template.clone()),
        // An instance: the template itself is only checked as one.
        ("exoip@lb.service", template),
        ("exoip-nic.service", format!("{service}\n{nic}")),
    ];
    files
        .into_iter()
        .map(|(name, content)| {
            let path = dir.join(name);
            std::fs::write(&path, content).unwrap();
            path
        })
        .collect()
}

#[test]
fn systemd_analyze_verify_accepts_the_units() {
    if !have("systemd-analyze") {
        eprintln!("SKIP: systemd-analyze not installed (apt-get install systemd)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for path in units_for_systemd(dir.path()) {
        if path.file_name().unwrap() == "exoip@.service" {
            continue;
        }
        let out = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&path)
            .current_dir(dir.path())
            .output()
            .unwrap();
        // Unknown keys and bad values are only warnings: any output is a failure.
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "systemd-analyze verify {}: {}",
            path.display(),
            text(&out)
        );
    }
}

/// The sandbox is real: systemd's own exposure score stays low (0 best, 10 worst).
#[test]
fn systemd_analyze_security_rates_the_units_well() {
    if !have("systemd-analyze") {
        eprintln!("SKIP: systemd-analyze not installed");
        return;
    }
    let help = Command::new("systemd-analyze")
        .arg("--help")
        .output()
        .unwrap();
    if !String::from_utf8_lossy(&help.stdout).contains("--offline") {
        eprintln!("SKIP: systemd-analyze too old for security --offline");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for path in units_for_systemd(dir.path()) {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name == "exoip@.service" {
            continue;
        }
        let out = Command::new("systemd-analyze")
            .args(["security", "--offline=yes", "--threshold=35", "--no-pager"])
            .arg(&path)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: exposure above 3.5\n{}",
            text(&out)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// ifupdown and networkd-dispatcher hooks

/// A directory with a fake `systemctl` and `logger` that record their arguments, and the hooks'
/// run and configuration directories.
struct HookBed {
    dir: tempfile::TempDir,
}

impl HookBed {
    fn new() -> HookBed {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        for (name, body) in [
            (
                "systemctl",
                "echo \"$*\" >>\"$FAKE_LOG\"\n\
                 if [ \"$1\" = is-active ]; then echo \"${FAKE_ACTIVE:-inactive}\"; [ \"${FAKE_ACTIVE:-}\" = active ]; fi\n",
            ),
            ("logger", "echo \"logger $*\" >>\"$FAKE_LOG\"\n"),
        ] {
            let path = bin.join(name);
            std::fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        HookBed { dir }
    }

    fn run_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    fn conf_dir(&self) -> PathBuf {
        self.dir.path().join("etc")
    }

    /// Runs a hook as ifupdown or networkd-dispatcher would: a clean environment with `vars`.
    fn run(&self, script: &str, vars: &[(&str, &str)], active: bool) -> (Output, Vec<String>) {
        let log = self.dir.path().join("log");
        let _ = std::fs::remove_file(&log);
        let path = example(script);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o111, 0o111, "{script} is not executable");
        let mut cmd = Command::new(&path);
        cmd.env_clear()
            .env(
                "PATH",
                format!(
                    "{}:/usr/sbin:/usr/bin:/sbin:/bin",
                    self.dir.path().join("bin").display()
                ),
            )
            .env("FAKE_LOG", &log)
            .env("EXOIP_RUN_DIR", self.run_dir())
            .env("EXOIP_CONF_DIR", self.conf_dir());
        if active {
            cmd.env("FAKE_ACTIVE", "active");
        }
        cmd.envs(vars.iter().copied());
        let out = cmd.output().unwrap();
        let calls = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect();
        (out, calls)
    }
}

fn have_systemd_escape() -> bool {
    if have("systemd-escape") {
        return true;
    }
    eprintln!("SKIP: systemd-escape not installed (the hooks run on systemd hosts only)");
    false
}

/// What ifupdown exports for the stanza of examples/ifupdown/interfaces.hooks, plus a secret
/// that must not travel and a new-style option.
const LO1_STANZA: &[(&str, &str)] = &[
    ("IFACE", "lo:1"),
    ("LOGICAL", "lo:1"),
    ("ADDRFAM", "inet"),
    ("METHOD", "manual"),
    ("MODE", "start"),
    ("PHASE", "post-up"),
    ("IF_ADDRESS", "198.51.100.50"),
    ("IF_EXOSCALE_PEER_GROUP", "loadbalancers"),
    ("IF_EXOSCALE_API_KEY", "EXOxxxxxxxxxxxxxxxxxxxxxxxx"),
    ("IF_EXOSCALE_API_SECRET", "s3cr3t-in-interfaces"),
    ("IF_HOST_PRIORITY", "10"),
    ("IF_EXOIP_GROUP", "lb-web"),
];

#[test]
fn ifupdown_up_hook_starts_the_instance_of_the_stanza() {
    if !have_systemd_escape() {
        return;
    }
    let bed = HookBed::new();
    let (out, calls) = bed.run("ifupdown/if-up.d/exoip", LO1_STANZA, false);
    assert!(out.status.success(), "{}", text(&out));
    let starts: Vec<&String> = calls.iter().filter(|c| !c.starts_with("logger")).collect();
    assert_eq!(starts, ["--no-block start exoip@lo:1.service"]);

    let env_file = bed.run_dir().join("lo:1.env");
    let mode = std::fs::metadata(&env_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let content = read(&env_file);
    let lines: Vec<&str> = content.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(
        lines,
        [
            "EXOIP_CONFIG_ARGS=",
            "IF_ADDRESS='198.51.100.50'",
            "IF_EXOIP_GROUP='lb-web'",
            "EXOIP_GROUP='lb-web'",
            "IF_EXOSCALE_API_KEY='EXOxxxxxxxxxxxxxxxxxxxxxxxx'",
            "IF_EXOSCALE_PEER_GROUP='loadbalancers'",
            "IF_HOST_PRIORITY='10'",
        ]
    );
    // The secret stays behind, with a warning that names the option, not the value.
    assert!(!content.contains("s3cr3t"));
    let all = format!("{}{calls:?}", text(&out));
    assert!(all.contains("EXOSCALE_API_SECRET"), "{all}");
    assert!(!all.contains("s3cr3t"), "{all}");
    // No temporary file is left.
    let left: Vec<_> = std::fs::read_dir(bed.run_dir()).unwrap().collect();
    assert_eq!(left.len(), 1);
}

#[test]
fn ifupdown_up_hook_leaves_other_stanzas_alone() {
    if !have_systemd_escape() {
        return;
    }
    let bed = HookBed::new();
    // A plain interface: no exoip option.
    let (out, calls) = bed.run(
        "ifupdown/if-up.d/exoip",
        &[("IFACE", "eth0"), ("IF_ADDRESS", "192.0.2.11")],
        false,
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(calls.is_empty(), "{calls:?}");
    // A stanza that still starts exoip itself says so.
    let mut vars = LO1_STANZA.to_vec();
    vars.push(("IF_EXOIP_UNIT", "no"));
    let (out, calls) = bed.run("ifupdown/if-up.d/exoip", &vars, false);
    assert!(out.status.success(), "{}", text(&out));
    assert!(calls.is_empty(), "{calls:?}");
    assert!(!bed.run_dir().exists());
}

#[test]
fn ifupdown_hooks_escape_the_interface_for_the_unit_name() {
    if !have_systemd_escape() {
        return;
    }
    let bed = HookBed::new();
    let vars = [
        ("IFACE", "br-lan"),
        ("IF_ADDRESS", "198.51.100.51"),
        ("IF_EXOSCALE_PEERS", "192.0.2.12,192.0.2.13"),
        // Not representable in the environment file: skipped, with a warning.
        ("IF_EXOIP_METADATA_URL", "http://x/'quoted'"),
    ];
    let (out, calls) = bed.run("ifupdown/if-up.d/exoip", &vars, false);
    assert!(out.status.success(), "{}", text(&out));
    assert!(calls.contains(&"--no-block start exoip@br\\x2dlan.service".to_string()));
    let content = read(&bed.run_dir().join("br\\x2dlan.env"));
    assert!(content.contains("IF_EXOSCALE_PEERS='192.0.2.12,192.0.2.13'"));
    assert!(!content.contains("METADATA_URL"), "{content}");
    assert!(
        calls.iter().any(|c| c.contains("EXOIP_METADATA_URL")),
        "{calls:?}"
    );
}

#[test]
fn ifupdown_down_hook_stops_only_that_instance() {
    if !have_systemd_escape() {
        return;
    }
    let bed = HookBed::new();
    let (out, _) = bed.run("ifupdown/if-up.d/exoip", LO1_STANZA, false);
    assert!(out.status.success(), "{}", text(&out));
    std::fs::write(
        bed.run_dir().join("lo:2.env"),
        "IF_ADDRESS='198.51.100.52'\n",
    )
    .unwrap();

    let (out, calls) = bed.run("ifupdown/if-down.d/exoip", LO1_STANZA, false);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(calls, ["stop exoip@lo:1.service"]);
    assert!(!bed.run_dir().join("lo:1.env").exists());
    assert!(bed.run_dir().join("lo:2.env").exists());

    // Down of an interface without exoip options does nothing.
    let (out, calls) = bed.run("ifupdown/if-down.d/exoip", &[("IFACE", "eth0")], false);
    assert!(out.status.success(), "{}", text(&out));
    assert!(calls.is_empty(), "{calls:?}");
}

#[test]
fn networkd_dispatcher_hooks_follow_configured_interfaces() {
    if !have_systemd_escape() {
        return;
    }
    let bed = HookBed::new();
    std::fs::write(bed.conf_dir().join("eth0.toml"), "").unwrap();
    std::fs::write(
        bed.conf_dir().join("eth1.env"),
        "IF_ADDRESS=198.51.100.50\n",
    )
    .unwrap();
    let routable = "networkd-dispatcher/routable.d/50-exoip";
    let off = "networkd-dispatcher/off.d/50-exoip";

    // A configuration file: the unit's own -c, no environment file.
    let (out, calls) = bed.run(routable, &[("IFACE", "eth0"), ("STATE", "routable")], false);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(calls, ["--no-block start exoip@eth0.service"]);
    assert!(!bed.run_dir().join("eth0.env").exists());

    // Variables only: the environment file drops -c.
    let (out, calls) = bed.run(routable, &[("IFACE", "eth1"), ("STATE", "routable")], false);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(calls, ["--no-block start exoip@eth1.service"]);
    let env_file = bed.run_dir().join("eth1.env");
    assert_eq!(read(&env_file), "EXOIP_CONFIG_ARGS=\n");
    let mode = std::fs::metadata(&env_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "{mode:o}");

    // Not an interface exoip follows.
    let (out, calls) = bed.run(routable, &[("IFACE", "eth2")], false);
    assert!(out.status.success(), "{}", text(&out));
    assert!(calls.is_empty(), "{calls:?}");

    // Off: stop a running instance, leave the others.
    let (out, calls) = bed.run(off, &[("IFACE", "eth1"), ("STATE", "off")], true);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        calls,
        [
            "is-active exoip@eth1.service",
            "--no-block stop exoip@eth1.service"
        ]
    );
    assert!(!env_file.exists());
    let (out, calls) = bed.run(off, &[("IFACE", "eth2"), ("STATE", "off")], false);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(calls, ["is-active exoip@eth2.service"]);
}

/// The scripts (hooks, installer, maintainer script) are POSIX sh (dash runs them on Debian)
/// and, where installed, shellcheck finds nothing.
#[test]
fn hook_scripts_are_posix_sh() {
    let scripts = [
        "examples/ifupdown/if-up.d/exoip",
        "examples/ifupdown/if-down.d/exoip",
        "examples/networkd-dispatcher/routable.d/50-exoip",
        "examples/networkd-dispatcher/off.d/50-exoip",
        "packaging/install.sh",
        "packaging/debian/postinst",
    ];
    for script in scripts {
        let path = root().join(script);
        assert!(read(&path).starts_with("#!/bin/sh\n"), "{script}");
        for shell in ["sh", "dash"] {
            if !have(shell) {
                continue;
            }
            let out = Command::new(shell).arg("-n").arg(&path).output().unwrap();
            assert!(out.status.success(), "{shell} -n {script}: {}", text(&out));
        }
    }
    if !have("shellcheck") {
        eprintln!("SKIP: shellcheck not installed (apt-get install shellcheck)");
        return;
    }
    let out = Command::new("shellcheck")
        .args(["--shell=sh", "--severity=style"])
        .args(scripts.iter().map(|s| root().join(s)))
        .output()
        .unwrap();
    assert!(out.status.success(), "shellcheck: {}", text(&out));
}

/// The Go exoip's stanza works unchanged: its options, as ifupdown exports them, and its
/// `up exoip -W` give a valid configuration.
#[test]
fn legacy_stanza_still_configures_the_agent() {
    let mut env = BTreeMap::new();
    let mut up = None;
    for line in read(&example("ifupdown/interfaces.legacy")).lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with("auto ") || line.starts_with("iface ") {
            continue;
        }
        let Some((option, value)) = line.split_once(' ') else {
            continue;
        };
        match option {
            "up" => up = Some(value.trim_end_matches('&').trim().to_string()),
            "down" => {}
            _ => {
                // ifupdown: IF_ + the option, upper case, '-' as '_'.
                let name = format!("IF_{}", option.to_uppercase().replace('-', "_"));
                env.insert(name, value.trim().to_string());
            }
        }
    }
    let up = up.expect("an up line");
    let words: Vec<String> = shell_words::split(&up).unwrap();
    assert_eq!(words[0], "exoip");
    let mut words = words;
    words[0] = "/usr/bin/exoip".into();
    let out = validate(&words, &env);
    assert!(out.status.success(), "{up}: {}", text(&out));
    let report = text(&out);
    assert!(report.contains("198.51.100.50"), "{report}");
    assert!(
        report.contains("security group 'loadbalancers'"),
        "{report}"
    );
}

// ---------------------------------------------------------------------------------------------
// cloud-init and packaging

/// The cloud-init user data as JSON (through python3's yaml), or None to skip.
fn cloud_config(name: &str) -> Option<serde_json::Value> {
    let path = example(&format!("cloud-init/{name}"));
    assert!(read(&path).starts_with("#cloud-config\n"), "{name}");
    let out = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
        ])
        .arg(&path)
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!("SKIP: python3 with yaml not available: {}", text(&out));
        return None;
    }
    Some(serde_json::from_slice(&out.stdout).unwrap())
}

#[test]
fn cloud_init_examples_write_private_files_and_valid_units() {
    let creds = credentials_dir();
    for (name, provider) in [
        ("exoscale.yaml", "exoscale"),
        ("openstack.yaml", "openstack"),
        ("azure.yaml", "azure"),
    ] {
        let Some(config) = cloud_config(name) else {
            return;
        };
        let files = config["write_files"].as_array().expect("write_files");
        let mut env = BTreeMap::new();
        let mut drop_in = None;
        for file in files {
            let path = file["path"].as_str().unwrap();
            let perms = file["permissions"].as_str().unwrap_or("");
            if path.starts_with("/etc/exoip/") {
                assert_eq!(perms, "0600", "{name}: {path}");
                assert_eq!(file["owner"], "root:root", "{name}: {path}");
            }
            let content = file["content"].as_str().unwrap();
            if path == "/etc/exoip/exoip.env" {
                for line in content.lines().filter(|l| !l.starts_with('#')) {
                    let (k, v) = line.split_once('=').unwrap();
                    env.insert(k.to_string(), v.to_string());
                }
            }
            if path.starts_with("/etc/systemd/system/exoip.service.d/") {
                drop_in = Some(content.to_string());
            }
        }
        let drop_in = drop_in.unwrap_or_else(|| panic!("{name}: no drop-in"));
        let merged = Unit::parse(&format!(
            "{}\n{drop_in}",
            read(&example("systemd/exoip.service"))
        ));
        check_service_without_secret_file(&merged, name);
        let words = exec_start_words(&merged, "", creds.path(), &env);
        assert!(
            words.iter().any(|w| w == "-xi"),
            "{name}: the EIP with -xi: {words:?}"
        );
        let out = validate(&words, &env);
        let report = text(&out);
        assert!(out.status.success(), "{name}: {words:?}\n{report}");
        assert!(
            report.contains(&format!("provider           {provider}")),
            "{report}"
        );
        let runcmd = config["runcmd"].to_string();
        assert!(
            runcmd.contains("enable") && runcmd.contains("exoip.service"),
            "{name}"
        );
    }
}

/// [`check_service`] for a cloud-init drop-in, which may replace the credential (OpenStack and
/// Azure use a heartbeat key, not an API secret).
fn check_service_without_secret_file(u: &Unit, name: &str) {
    let exec = u.one("Service", "ExecStart");
    assert!(exec.starts_with("/usr/bin/exoip -W "), "{name}: {exec}");
    for secret_flag in ["-xs", "--xs", "--api-secret "] {
        assert!(!exec.contains(secret_flag), "{name}: {secret_flag}");
    }
    for credential in u.all("Service", "LoadCredential") {
        let (id, source) = credential.split_once(':').unwrap();
        assert!(source.starts_with("/etc/exoip/"), "{name}: {credential}");
        if exec.contains(&format!("%d/{id}")) {
            continue;
        }
        assert_eq!(id, "api-secret", "{name}: credential {id} unused");
    }
    assert_eq!(u.one("Service", "Type"), "notify");
}

/// Every asset of `[package.metadata.deb]` exists (or is built), and the package installs the
/// binary where the units run it from.
#[test]
fn debian_assets_exist() {
    let cargo = read(&root().join("Cargo.toml"));
    let start = cargo
        .find("[package.metadata.deb]")
        .expect("[package.metadata.deb]");
    let section = &cargo[start..];
    let assets_start = section.find("assets = [").expect("assets");
    let assets_end = assets_start + section[assets_start..].find("\n]").expect("end of assets");
    let mut count = 0;
    for line in section[assets_start..assets_end].lines().skip(1) {
        let line = line.trim();
        if !line.starts_with('[') {
            continue;
        }
        let fields: Vec<&str> = line.split('"').skip(1).step_by(2).collect();
        let [source, target, mode] = fields[..] else {
            panic!("asset line {line:?}");
        };
        count += 1;
        assert!(["600", "644", "755"].contains(&mode), "{line}");
        if source.starts_with("target/") {
            assert_eq!((source, target), ("target/release/exoip", "usr/bin/"));
            continue;
        }
        let matches: Vec<_> = if source.contains('*') {
            glob_simple(&root(), source)
        } else {
            vec![root().join(source)]
        };
        assert!(!matches.is_empty(), "{source}: no file");
        for path in matches {
            assert!(path.is_file(), "{source}: {} missing", path.display());
            let executable = std::fs::metadata(&path).unwrap().permissions().mode() & 0o111 != 0;
            assert_eq!(executable, mode == "755", "{source}: mode {mode}");
        }
    }
    assert!(count >= 8, "{count} assets");
}

/// `dir/prefix*suffix`, files only (the patterns the asset list uses; cargo-deb's globs do not
/// descend into directories either).
fn glob_simple(root: &Path, pattern: &str) -> Vec<PathBuf> {
    let (dir, file) = pattern.rsplit_once('/').unwrap();
    let (prefix, suffix) = file.split_once('*').expect("dir/prefix*suffix");
    std::fs::read_dir(root.join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            p.is_file() && name.starts_with(prefix) && name.ends_with(suffix)
        })
        .collect()
}

/// `packaging/install.sh` (after `cargo install`) into a staging root: the units run the given
/// binary and still pass `systemd-analyze verify`; the configuration directory is root only.
#[test]
fn install_script_installs_units_man_page_and_completions() {
    let dest = tempfile::tempdir().unwrap();
    let binary = env!("CARGO_BIN_EXE_exoip");
    let out = Command::new(root().join("packaging/install.sh"))
        .arg(binary)
        .env("DESTDIR", dest.path())
        .env("PREFIX", "/usr/local")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let at = |rel: &str| dest.path().join(rel.trim_start_matches('/'));
    for (rel, from) in [
        ("usr/local/share/man/man8/exoip.8", "man/exoip.8"),
        (
            "usr/local/share/bash-completion/completions/exoip",
            "completions/exoip.bash",
        ),
        (
            "usr/local/share/zsh/site-functions/_exoip",
            "completions/_exoip",
        ),
        (
            "usr/local/share/fish/vendor_completions.d/exoip.fish",
            "completions/exoip.fish",
        ),
        ("etc/exoip/exoip.env", "examples/systemd/exoip.env"),
    ] {
        assert_eq!(read(&at(rel)), read(&root().join(from)), "{rel}");
    }
    let mode = |rel: &str| std::fs::metadata(at(rel)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode("etc/exoip"), 0o700);
    assert_eq!(mode("etc/exoip/exoip.env"), 0o600);
    for name in ["exoip.service", "exoip@.service"] {
        let installed = at(&format!("etc/systemd/system/{name}"));
        let u = Unit::parse(&read(&installed));
        assert!(
            u.one("Service", "ExecStart")
                .starts_with(&format!("{binary} -W ")),
            "{name}"
        );
    }
    if have("systemd-analyze") {
        let dir = at("etc/systemd/system");
        std::fs::copy(dir.join("exoip@.service"), dir.join("exoip@lb.service")).unwrap();
        let out = Command::new("systemd-analyze")
            .args(["verify", "--man=no", "exoip.service", "exoip@lb.service"])
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{}",
            text(&out)
        );
    }
    // A second run keeps the existing configuration.
    std::fs::write(at("etc/exoip/exoip.env"), "EXOSCALE_API_KEY=EXOmine\n").unwrap();
    let out = Command::new(root().join("packaging/install.sh"))
        .arg(binary)
        .env("DESTDIR", dest.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        read(&at("etc/exoip/exoip.env")),
        "EXOSCALE_API_KEY=EXOmine\n"
    );
}
