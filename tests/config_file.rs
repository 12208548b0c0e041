//! The configuration file (`-c FILE`, `EXOIP_CONFIG`), through the real binary and `-n`: the
//! precedence flags > environment > file, errors with the file's line and column, per-address
//! priorities, secrets only by reference (file, systemd credential, variable) with permission
//! checks, and no secret ever printed.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const API_SECRET: &str = "s3cr3t-api-value-never-printed-0123";
const AUTH_KEY: &str = "heartbeat-key-never-printed-0123456789";
const OS_SECRET: &str = "os-app-secret-never-printed-9876";

/// A directory with a configuration file and secret files, all mode 600 unless changed.
struct Dir {
    dir: tempfile::TempDir,
}

impl Dir {
    fn new() -> Dir {
        let dir = Dir {
            dir: tempfile::tempdir().unwrap(),
        };
        dir.write("api-secret", &format!("{API_SECRET}\n"));
        dir.write("auth-key", &format!("{AUTH_KEY}\n"));
        dir.write("os-secret", &format!("{OS_SECRET}\n"));
        dir
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, content: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, content).unwrap();
        chmod(&path, 0o600);
        path
    }

    /// Writes `exoip.toml` and returns its path as a string.
    fn config(&self, content: &str) -> String {
        self.write("exoip.toml", content)
            .to_string_lossy()
            .into_owned()
    }
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

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

fn assert_no_secret(out: &str, err: &str) {
    for secret in [API_SECRET, AUTH_KEY, OS_SECRET, "hunter2-literal"] {
        assert!(
            !out.contains(secret) && !err.contains(secret),
            "a secret was printed:\n{out}\n{err}"
        );
    }
}

/// `exoip -n ARGS`, which must validate; returns stdout.
fn validated(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut all = vec!["-n"];
    all.extend_from_slice(args);
    let o = exoip(&all, env);
    let (out, err) = text(&o);
    assert!(
        o.status.success(),
        "exoip {all:?}: status {}\n{out}\n{err}",
        o.status
    );
    assert!(out.contains("configuration OK"), "{out}");
    assert_no_secret(&out, &err);
    out
}

/// `exoip -n ARGS`, which must be refused as invalid (status 2, one line); returns the line.
fn refused(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut all = vec!["-n"];
    all.extend_from_slice(args);
    let o = exoip(&all, env);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "exoip {all:?}:\n{out}\n{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert_no_secret(&out, &err);
    err.trim_end().to_string()
}

/// The value column of `-n`'s line `label`.
fn line<'a>(out: &'a str, label: &str) -> &'a str {
    out.lines()
        .find(|l| l.starts_with(label) && l.as_bytes().get(19).is_some())
        .map(|l| l[19..].trim_end())
        .unwrap_or_else(|| panic!("no line '{label}' in:\n{out}"))
}

const KEY: (&str, &str) = ("EXOSCALE_API_KEY", "EXOkey123");

/// A minimal Exoscale file, with the API secret from a file of `dir`.
fn base(dir: &Dir) -> String {
    format!(
        "address = \"203.0.113.10\"\npeer = [\"192.0.2.11\"]\napi-secret-file = \"{}\"\n",
        dir.path("api-secret").display()
    )
}

#[test]
fn flags_win_over_the_environment_which_wins_over_the_file() {
    let dir = Dir::new();
    let config = dir.config(&format!(
        "{}priority = 20\ninterval = \"2s\"\nzone = \"de-fra-1\"\ngroup = \"from-file\"\ndead-ratio = 5\n",
        base(&dir)
    ));
    // The file alone.
    let out = validated(&["-c", &config], &[KEY]);
    assert_eq!(line(&out, "priority"), "20");
    assert_eq!(line(&out, "interval"), "2s");
    assert_eq!(line(&out, "dead ratio"), "5 (dead after 10s)");
    assert_eq!(
        line(&out, "api endpoint"),
        "https://api-de-fra-1.exoscale.com/v2"
    );
    assert_eq!(line(&out, "heartbeat group"), "from-file");
    assert_eq!(line(&out, "config file"), config);
    assert!(
        line(&out, "from the file").contains("priority (line 4)"),
        "{out}"
    );

    // The environment wins over the file; an empty variable (ifupdown) counts as unset.
    let env = [
        KEY,
        ("IF_HOST_PRIORITY", "7"),
        ("IF_ADVERTISEMENT_INTERVAL", "0.5"),
        ("EXOSCALE_ZONE", "at-vie-1"),
        ("IF_DEAD_RATIO", ""),
    ];
    let out = validated(&["-c", &config], &env);
    assert_eq!(line(&out, "priority"), "7");
    assert_eq!(line(&out, "interval"), "500ms");
    assert_eq!(line(&out, "dead ratio"), "5 (dead after 2s 500ms)");
    assert_eq!(
        line(&out, "api endpoint"),
        "https://api-at-vie-1.exoscale.com/v2"
    );
    assert_eq!(line(&out, "heartbeat group"), "from-file");
    let environment = line(&out, "environment");
    assert!(environment.contains("IF_HOST_PRIORITY (priority)"), "{out}");
    let overridden = line(&out, "overridden");
    assert!(
        overridden.contains("priority (line 4, by IF_HOST_PRIORITY)"),
        "{out}"
    );
    assert!(
        overridden.contains("zone (line 6, by EXOSCALE_ZONE)"),
        "{out}"
    );

    // Flags win over both.
    let out = validated(
        &["-c", &config, "-P", "3", "-t", "100ms", "--group", "cli"],
        &env,
    );
    assert_eq!(line(&out, "priority"), "3");
    assert_eq!(line(&out, "interval"), "100ms");
    assert_eq!(line(&out, "heartbeat group"), "cli");
    assert!(line(&out, "command line").contains("priority"), "{out}");
    assert!(
        line(&out, "overridden").contains("priority (line 4, by the command line)"),
        "{out}"
    );
}

#[test]
fn a_flag_replaces_the_file_s_alternatives_and_lists() {
    let dir = Dir::new();
    let config = dir.config(&format!(
        "address = [\"203.0.113.10\", \"203.0.113.11\"]\npeer-group = \"lbs\"\napi-secret-file = \"{}\"\ntrack-tcp = [\"127.0.0.1:443\"]\nno-alias = true\n",
        dir.path("api-secret").display()
    ));
    let out = validated(&["-c", &config], &[KEY]);
    assert!(
        line(&out, "peers").contains("security group 'lbs'"),
        "{out}"
    );
    assert_eq!(line(&out, "addresses"), "203.0.113.10, 203.0.113.11");
    assert!(line(&out, "address held").starts_with("nothing local"));
    // Static peers on the command line replace the file's group (they exclude each other), the
    // command line's addresses replace the file's list, --alias replaces no-alias.
    let out = validated(
        &[
            "-c",
            &config,
            "-p",
            "192.0.2.20",
            "-xi",
            "203.0.113.99",
            "--alias",
        ],
        &[KEY],
    );
    assert_eq!(line(&out, "peers"), "192.0.2.20:12345");
    assert_eq!(line(&out, "addresses"), "203.0.113.99");
    assert!(line(&out, "address held").starts_with("loopback"), "{out}");
    let overridden = line(&out, "overridden");
    for key in ["peer-group (line 2", "no-alias (line 5", "address (line 1"] {
        assert!(overridden.contains(key), "{key}: {out}");
    }
    // The environment too: IF_EXOSCALE_PEERS replaces the file's group.
    let out = validated(
        &["-c", &config],
        &[KEY, ("IF_EXOSCALE_PEERS", "192.0.2.30")],
    );
    assert_eq!(line(&out, "peers"), "192.0.2.30:12345");
}

#[test]
fn the_file_is_named_by_exoip_config_too() {
    let dir = Dir::new();
    let config = dir.config(&base(&dir));
    let out = validated(&["-W"], &[KEY, ("EXOIP_CONFIG", &config)]);
    assert_eq!(line(&out, "addresses"), "203.0.113.10");
    assert_eq!(line(&out, "config file"), config);
    // -c wins over the variable.
    let other = dir.write("other.toml", &format!("{}priority = 42\n", base(&dir)));
    let out = validated(
        &["-c", other.to_str().unwrap()],
        &[KEY, ("EXOIP_CONFIG", &config)],
    );
    assert_eq!(line(&out, "priority"), "42");
}

#[test]
fn unknown_keys_are_errors_with_their_line_and_column() {
    let dir = Dir::new();
    let config = dir.config(&format!("{}\n  prioirty = 3\n", base(&dir)));
    let err = refused(&["-c", &config], &[KEY]);
    assert!(
        err.contains(&format!("{config}:5:3: prioirty: unknown key")),
        "{err}"
    );
    assert!(err.contains("did you mean 'priority'"), "{err}");
    // The Go exoip's names are flags, not keys.
    let config = dir.config("xi = \"203.0.113.10\"\n");
    let err = refused(&["-c", &config], &[KEY]);
    assert!(
        err.contains(":1:1: xi: unknown key (the key is 'address')"),
        "{err}"
    );
    // A key of an [[address]] table; and a key placed after one (it belongs to the table).
    let config = dir.config("[[address]]\nip = \"203.0.113.10\"\npeer-group = \"lbs\"\n");
    let err = refused(&["-c", &config], &[KEY]);
    assert!(
        err.contains(":3:1: address.peer-group: unknown key"),
        "{err}"
    );
    assert!(err.contains("above the first [[address]]"), "{err}");
    // Modes and -c itself are not keys.
    let config = dir.config(&format!("{}watchdog = true\n", base(&dir)));
    let err = refused(&["-c", &config], &[KEY]);
    assert!(
        err.contains(":4:1: watchdog: a mode is given on the command line"),
        "{err}"
    );
    let config = dir.config("config = \"/etc/exoip/other.toml\"\n");
    let err = refused(&["-c", &config], &[KEY]);
    assert!(err.contains(":1:1: config: "), "{err}");
    // Not TOML at all.
    let config = dir.config("address = 203.0.113.10\n");
    let err = refused(&["-c", &config], &[KEY]);
    assert!(err.contains(":1:") && err.contains("invalid TOML"), "{err}");
}

#[test]
fn wrong_types_and_values_name_the_key_and_line() {
    let dir = Dir::new();
    for (extra, want) in [
        (
            "priority = [3]",
            "5:12: priority: expected a string or a number, found an array",
        ),
        (
            "no-alias = \"yes\"",
            "5:12: no-alias: expected true or false, found a string",
        ),
        (
            "group = true",
            "5:9: group: expected a string or a number, found a boolean",
        ),
        (
            "track-tcp = [\"127.0.0.1:80\", false]",
            "5:30: track-tcp: expected a string or a number, found a boolean",
        ),
        (
            "track-fall = \"often\"",
            "5:14: track-fall: invalid value 'often'",
        ),
        ("provider = \"aws\"", "5:12: provider: invalid value 'aws'"),
        ("track-weight = 0", "5:16: track-weight: invalid value '0'"),
        (
            "[interval]",
            "5:1: interval: expected a string or a number, found a table",
        ),
    ] {
        let config = dir.config(&format!("{}\n{extra}\n", base(&dir)));
        let err = refused(&["-c", &config], &[KEY]);
        assert!(err.contains(&format!("{config}:{want}")), "{extra}: {err}");
    }
    // Values the configuration checks (not clap) point at the file's line.
    let config = dir.config(&format!("{}priority = 300\n", base(&dir)));
    let err = refused(&["-c", &config], &[KEY]);
    assert!(
        err.contains("-P/--priority: must be an integer from 1 to 255, got '300'")
            && err.ends_with(&format!("({config} line 4)")),
        "{err}"
    );
    let config = dir.config(&format!(
        "address = [\"203.0.113.10\", \"bad\"]\npeer = [\"192.0.2.11\"]\napi-secret-file = \"{}\"\n",
        dir.path("api-secret").display()
    ));
    let err = refused(&["-c", &config], &[KEY]);
    assert!(err.contains("'bad' is not an IP address"), "{err}");
    assert!(err.ends_with(&format!("({config} line 1)")), "{err}");
    // Numbers may be written as numbers: seconds for durations.
    let config = dir.config(&format!("{}interval = 0.25\ndead-ratio = 4\n", base(&dir)));
    let out = validated(&["-c", &config], &[KEY]);
    assert_eq!(line(&out, "interval"), "250ms");
    assert_eq!(line(&out, "dead ratio"), "4 (dead after 1s)");
}

#[test]
fn each_address_may_have_its_own_priority() {
    let dir = Dir::new();
    let config = dir.config(&format!(
        "peer = [\"192.0.2.11\"]\npriority = 30\napi-secret-file = \"{}\"\n\n\
         [[address]]\nip = \"203.0.113.10\"\npriority = 10\n\n\
         [[address]]\nip = \"203.0.113.11\"\n\n\
         [[address]]\nip = \"2001:db8::10\"\npriority = 250\n",
        dir.path("api-secret").display()
    ));
    let out = validated(&["-c", &config], &[KEY]);
    assert_eq!(
        line(&out, "addresses"),
        "203.0.113.10 (priority 10), 203.0.113.11, 2001:db8::10 (priority 250)"
    );
    assert_eq!(line(&out, "priority"), "30");
    // A priority from a flag (or a variable) applies to every address.
    let out = validated(&["-c", &config, "-P", "5"], &[KEY]);
    assert_eq!(
        line(&out, "addresses"),
        "203.0.113.10, 203.0.113.11, 2001:db8::10"
    );
    assert!(
        line(&out, "overridden").contains("address.priority (line 5, by the command line)"),
        "{out}"
    );
    // Strings and inline tables mix in one list.
    let config = dir.config(&format!(
        "address = [\"203.0.113.10\", {{ ip = \"203.0.113.11\", priority = 99 }}]\npeer = [\"192.0.2.11\"]\napi-secret-file = \"{}\"\n",
        dir.path("api-secret").display()
    ));
    let out = validated(&["-c", &config], &[KEY]);
    assert_eq!(
        line(&out, "addresses"),
        "203.0.113.10, 203.0.113.11 (priority 99)"
    );
    // Bad per-address settings.
    for (table, want) in [
        (
            "ip = \"203.0.113.10\"\npriority = 0",
            "3:12: address.priority: must be an integer from 1 to 255",
        ),
        (
            "ip = \"203.0.113.10\"\nweight = 3",
            "3:1: address.weight: unknown key",
        ),
        ("priority = 3", "1:1: address: a table without ip"),
        (
            "ip = \"203.0.113.10,203.0.113.11\"",
            "2:6: address.ip: one IP address per table",
        ),
    ] {
        let config = dir.config(&format!("[[address]]\n{table}\n"));
        let err = refused(&["-c", &config], &[KEY]);
        assert!(err.contains(&format!("{config}:{want}")), "{table}: {err}");
    }
    // The same address twice: the configuration's check, at the second one's line.
    let config = dir.config(&format!(
        "peer = [\"192.0.2.11\"]\napi-secret-file = \"{}\"\n[[address]]\nip = \"203.0.113.10\"\n[[address]]\nip = \"203.0.113.10\"\n",
        dir.path("api-secret").display()
    ));
    let err = refused(&["-c", &config], &[KEY]);
    assert!(err.contains("203.0.113.10 is given twice"), "{err}");
}

#[test]
fn secrets_are_read_from_files_credentials_or_variables() {
    let dir = Dir::new();
    let head = "address = \"203.0.113.10\"\npeer = [\"192.0.2.11\"]\n";
    let creds = dir.dir.path().to_str().unwrap();
    // A file.
    let config = dir.config(&format!(
        "{head}api-secret-file = \"{}\"\nauth-key-file = \"{}\"\n",
        dir.path("api-secret").display(),
        dir.path("auth-key").display()
    ));
    let out = validated(&["-c", &config], &[KEY]);
    assert!(
        line(&out, "api secret").starts_with("[redacted] from file "),
        "{out}"
    );
    assert!(
        line(&out, "heartbeat key").contains("(")
            && line(&out, "heartbeat key").contains("line 4)"),
        "{out}"
    );
    // A systemd credential.
    let config = dir.config(&format!(
        "{head}api-secret-credential = \"api-secret\"\nauth-key-credential = \"auth-key\"\n"
    ));
    let out = validated(&["-c", &config], &[KEY, ("CREDENTIALS_DIRECTORY", creds)]);
    assert!(
        line(&out, "api secret").starts_with(&format!(
            "[redacted] from credential api-secret ({config} line 3)"
        )),
        "{out}"
    );
    let err = refused(&["-c", &config], &[KEY]);
    assert!(
        err.contains(&format!(
            "{config}:3: api-secret-credential: CREDENTIALS_DIRECTORY is not set"
        )),
        "{err}"
    );
    // A variable, whose name must mark it secret (hooks lose such variables).
    let config = dir.config(&format!("{head}api-secret-env = \"MY_EXOSCALE_SECRET\"\n"));
    let out = validated(&["-c", &config], &[KEY, ("MY_EXOSCALE_SECRET", API_SECRET)]);
    assert!(
        line(&out, "api secret").contains("variable MY_EXOSCALE_SECRET"),
        "{out}"
    );
    let err = refused(&["-c", &config], &[KEY]);
    assert!(
        err.contains("the variable MY_EXOSCALE_SECRET is not set"),
        "{err}"
    );
    let config = dir.config(&format!("{head}api-secret-env = \"MY_KEY\"\n"));
    let err = refused(&["-c", &config], &[KEY]);
    assert!(
        err.contains(":3:18: api-secret-env: hooks and checks would inherit that variable"),
        "{err}"
    );
    // The environment's secret wins over the file's reference, a flag over both.
    let config = dir.config(&format!(
        "{head}api-secret-file = \"/nonexistent/secret\"\n"
    ));
    let out = validated(
        &["-c", &config],
        &[KEY, ("EXOSCALE_API_SECRET", API_SECRET)],
    );
    assert_eq!(
        line(&out, "api secret"),
        "[redacted] from EXOSCALE_API_SECRET"
    );
    assert!(
        line(&out, "overridden").contains("api-secret-file (line 3, by EXOSCALE_API_SECRET)"),
        "{out}"
    );
    let out = validated(
        &["-c", &config, "--api-secret-credential", "api-secret"],
        &[
            KEY,
            ("EXOSCALE_API_SECRET", API_SECRET),
            ("CREDENTIALS_DIRECTORY", creds),
        ],
    );
    assert_eq!(
        line(&out, "api secret"),
        "[redacted] from credential api-secret"
    );
    // Two references to one secret.
    let config = dir.config(&format!(
        "{head}api-secret-file = \"/x\"\napi-secret-credential = \"api-secret\"\n"
    ));
    let err = refused(&["-c", &config], &[KEY]);
    assert!(
        err.contains(":4:1: api-secret-credential and api-secret-file (line 3) are exclusive"),
        "{err}"
    );
}

#[test]
fn secret_files_and_the_configuration_file_must_be_private() {
    let dir = Dir::new();
    let config = dir.config(&base(&dir));
    chmod(&dir.path("api-secret"), 0o644);
    let err = refused(&["-c", &config], &[KEY]);
    assert!(
        err.contains(&format!("{config}:3: api-secret-file: "))
            && err.contains("is accessible by other users (mode 644)"),
        "{err}"
    );
    chmod(&dir.path("api-secret"), 0o600);
    // Credentials are checked the same way.
    chmod(&dir.path("auth-key"), 0o604);
    let err = refused(
        &["-c", &config, "--auth-key-credential", "auth-key"],
        &[
            KEY,
            ("CREDENTIALS_DIRECTORY", dir.dir.path().to_str().unwrap()),
        ],
    );
    assert!(
        err.contains("--auth-key-credential: ") && err.contains("accessible by other users"),
        "{err}"
    );
    // The file itself names commands run as root.
    chmod(Path::new(&config), 0o644);
    let err = refused(&["-c", &config], &[KEY]);
    assert!(
        err.contains(&format!(
            "-c/--config: {config} is accessible by other users (mode 644); run: chmod 600"
        )),
        "{err}"
    );
    chmod(Path::new(&config), 0o620);
    let err = refused(&["-c", &config], &[KEY]);
    assert!(err.contains("is writable by its group"), "{err}");
    chmod(Path::new(&config), 0o640);
    validated(&["-c", &config], &[KEY]);
    let err = refused(&["-c", "/nonexistent/exoip.toml"], &[KEY]);
    assert!(
        err.contains("-c/--config: cannot read /nonexistent/exoip.toml"),
        "{err}"
    );
}

#[test]
fn a_secret_written_in_the_file_is_refused_without_being_echoed() {
    let dir = Dir::new();
    for key in [
        "api-secret",
        "auth-key",
        "os-password",
        "azure-client-secret",
    ] {
        let config = dir.config(&format!(
            "address = \"203.0.113.10\"\n{key} = \"hunter2-literal\"\n"
        ));
        let err = refused(&["-c", &config], &[KEY]);
        assert!(err.contains(&format!(":2:1: {key}: ")), "{err}");
        assert!(
            err.contains(&format!("{key}-file"))
                && err.contains(&format!("{key}-credential"))
                && err.contains(&format!("{key}-env")),
            "the alternatives: {err}"
        );
    }
}

#[test]
fn validate_prints_the_sources_and_no_secret() {
    let dir = Dir::new();
    let config = dir.config(&format!(
        "{}auth-key-file = \"{}\"\nnotify = \"/usr/local/bin/notify\"\n",
        base(&dir),
        dir.path("auth-key").display()
    ));
    let out = validated(
        &["-c", &config, "-v"],
        &[KEY, ("EXOIP_AUTH_KEY", "ignored-env-key-because-the-flag")],
    );
    assert_eq!(line(&out, "config file"), config);
    let from_file = line(&out, "from the file");
    assert!(
        from_file.starts_with("address (line 1), peer (line 2), api-secret-file (line 3)"),
        "{out}"
    );
    assert!(from_file.contains("notify (line 5)"), "{out}");
    // EXOIP_AUTH_KEY is set, so the file's auth-key-file is overridden.
    assert!(
        line(&out, "overridden").contains("auth-key-file (line 4, by EXOIP_AUTH_KEY)"),
        "{out}"
    );
    assert_eq!(
        line(&out, "heartbeat key"),
        "[redacted] from EXOIP_AUTH_KEY"
    );
    assert_eq!(line(&out, "command line"), "verbose");
    assert!(!out.contains("ignored-env-key"), "{out}");
}

#[test]
fn openstack_secrets_by_reference() {
    let dir = Dir::new();
    let config = dir.config(
        "provider = \"openstack\"\naddress = \"203.0.113.10\"\npeer-group = \"exoip\"\n\
         os-application-credential-secret-credential = \"os-secret\"\nauth-key-credential = \"auth-key\"\n",
    );
    let env = [
        ("OS_AUTH_URL", "http://192.0.2.1:5000/v3"),
        ("OS_APPLICATION_CREDENTIAL_ID", "3e19c26e"),
        ("CREDENTIALS_DIRECTORY", dir.dir.path().to_str().unwrap()),
    ];
    let out = validated(&["-c", &config], &env);
    assert_eq!(line(&out, "provider"), "openstack");
    assert!(
        line(&out, "heartbeat key").contains("credential auth-key"),
        "{out}"
    );
    // Without it, the OpenStack credentials miss their secret.
    let config = dir.config(
        "provider = \"openstack\"\naddress = \"203.0.113.10\"\npeer-group = \"exoip\"\nauth-key-credential = \"auth-key\"\n",
    );
    let err = refused(&["-c", &config], &env);
    assert!(err.contains("OS_APPLICATION_CREDENTIAL_SECRET"), "{err}");
    // An Exoscale secret in an OpenStack file is a mistake.
    let config = dir.config(&format!(
        "provider = \"openstack\"\naddress = \"203.0.113.10\"\npeer-group = \"exoip\"\nauth-key-credential = \"auth-key\"\nos-application-credential-secret-file = \"{}\"\napi-secret-file = \"{}\"\n",
        dir.path("os-secret").display(),
        dir.path("api-secret").display()
    ));
    let err = refused(&["-c", &config], &env);
    assert!(
        err.contains(":6: api-secret-file: an Exoscale option"),
        "{err}"
    );
}

/// The examples validate as they are (given their credentials), and every key they show,
/// commented out or not, is a key.
#[test]
fn examples_validate() {
    let dir = Dir::new();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples");
    let creds = dir.dir.path().to_str().unwrap().to_string();
    for (name, env) in [
        (
            "exoip.toml",
            vec![("CREDENTIALS_DIRECTORY", creds.as_str())],
        ),
        (
            "exoip-openstack.toml",
            vec![
                ("CREDENTIALS_DIRECTORY", creds.as_str()),
                ("OS_AUTH_URL", "http://192.0.2.1:5000/v3"),
                ("OS_APPLICATION_CREDENTIAL_ID", "3e19c26e"),
            ],
        ),
        (
            "exoip-azure.toml",
            vec![("CREDENTIALS_DIRECTORY", creds.as_str())],
        ),
    ] {
        let text = std::fs::read_to_string(root.join(name)).unwrap();
        let config = dir.config(&text);
        let out = validated(&["-c", &config], &env);
        assert_eq!(line(&out, "config file"), config, "{name}");
        let keys = exoip::config_file::keys();
        for l in text.lines() {
            let l = l.trim_start_matches('#').trim();
            let Some((key, _)) = l.split_once(" = ") else {
                continue;
            };
            if key.contains(' ') {
                continue;
            }
            assert!(
                keys.iter().any(|k| k == key) || ["ip", "priority"].contains(&key),
                "{name}: '{key}' is not a key"
            );
        }
    }
}

/// `exoip check -c FILE` reads the file too (only its configuration line is looked at: the
/// rest would contact the cloud, which the test avoids by an invalid file).
#[test]
fn check_reads_the_file() {
    let dir = Dir::new();
    let config = dir.config("address = \"203.0.113.10\"\nprioirty = 3\n");
    let o = exoip(&["check", "-c", &config], &[KEY]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}\n{err}");
    assert!(
        err.contains(&format!("{config}:2:1: prioirty: unknown key")),
        "{err}"
    );
}
