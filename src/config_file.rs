//! The configuration file (`-c /etc/exoip/exoip.toml`, or `EXOIP_CONFIG`): TOML whose keys are
//! the agent's long flag names, under the command line and the environment.
//!
//! The keys are not a second list to maintain: they are the long names of the clap definitions
//! as the documentation presents them ([`crate::docgen::presented_command`]), so a new flag is a
//! key the day it is added. A value of the file applies where clap says the setting came
//! neither from the command line nor from a non-empty environment variable (flags, then the
//! environment, then the file); it is then handed to clap as a flag of a second, in-process
//! parse (it never shows in the process's argv), so clap's parsers and the one validation of
//! [`crate::config::Config::from_args`] apply to it as to a flag.
//!
//! Three things are the file's own: `[[address]]` tables (several addresses, each with its own
//! priority), secret references (`NAME-file`, `NAME-credential`, `NAME-env` for the secrets of
//! [`SECRETS`]; a secret itself in the file is refused), and the record of where every setting
//! came from ([`Sources`]), which `exoip -n` prints and which points configuration errors at the
//! file's line.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command, CommandFactory};
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use crate::cli::Cli;
use crate::config::{read_secret_file, ConfigError};

/// The variable that names the configuration file when `-c` is not given.
pub const CONFIG_ENV: &str = "EXOIP_CONFIG";

/// The key of the addresses: a string, a list of strings, or `[[address]]` tables.
pub const ADDRESS_KEY: &str = "address";

/// Argument ids of the modes: they belong on the command line of each invocation (`-n` of a
/// file meant for `-W`), never in the file.
const MODE_IDS: &[&str] = &["watchdog", "associate", "dissociate", "validate"];

/// Settings that exclude each other in [`crate::config::Config::from_args`] rather than in clap:
/// one given by a flag or the environment also overrides the file's value of the others.
const ALTERNATIVES: &[&[&str]] = &[&["peers", "peer_group"]];

/// A secret that the configuration file may refer to, never contain.
#[derive(Debug)]
pub struct SecretKind {
    /// The stem of the keys: `NAME-file`, `NAME-credential`, `NAME-env`.
    pub name: &'static str,
    /// What it is, for the documentation.
    pub what: &'static str,
    /// Environment variables that carry the secret itself: one that is set wins over the file.
    pub variables: &'static [&'static str],
}

/// The secrets the agent reads ([`crate::config`]): the file refers to them by file, systemd
/// credential or environment variable.
pub const SECRETS: &[SecretKind] = &[
    SecretKind {
        name: "api-secret",
        what: "the Exoscale API secret",
        variables: &["IF_EXOSCALE_API_SECRET", "EXOSCALE_API_SECRET"],
    },
    SecretKind {
        name: "auth-key",
        what: "the heartbeat key (at least 16 bytes)",
        variables: &["EXOIP_AUTH_KEY"],
    },
    SecretKind {
        name: "os-password",
        what: "the OpenStack password (an openrc's OS_PASSWORD)",
        variables: &["OS_PASSWORD"],
    },
    SecretKind {
        name: "os-application-credential-secret",
        what: "the OpenStack application credential secret",
        variables: &["OS_APPLICATION_CREDENTIAL_SECRET"],
    },
    SecretKind {
        name: "azure-client-secret",
        what: "the Azure service principal's client secret",
        variables: &["AZURE_CLIENT_SECRET", "ARM_CLIENT_SECRET"],
    },
];

/// The ways of referring to a secret, as key suffixes.
const REFERENCE_KINDS: [&str; 3] = ["file", "credential", "env"];

/// A position in the configuration file, 1-based.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

impl Location {
    /// The line and column of byte `offset` of `text` (columns count characters).
    pub fn of(text: &str, offset: usize) -> Location {
        let before = &text[..offset.min(text.len())];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Location {
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
        }
    }
}

/// How the configuration file refers to a secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretRef {
    /// The first line of a file that other users cannot read.
    File(PathBuf),
    /// `$CREDENTIALS_DIRECTORY/NAME`, from systemd's `LoadCredential=`.
    Credential(String),
    /// An environment variable (whose name marks it secret, so hooks do not inherit it).
    Env(String),
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::File(p) => write!(f, "file {}", p.display()),
            SecretRef::Credential(n) => write!(f, "credential {n}"),
            SecretRef::Env(v) => write!(f, "variable {v}"),
        }
    }
}

/// A secret reference of the configuration file.
#[derive(Clone, Debug)]
pub struct FileSecret {
    /// [`SecretKind::name`].
    pub secret: &'static str,
    pub reference: SecretRef,
    /// The key as written (`api-secret-credential`).
    pub key: String,
    pub at: Location,
    pub file: PathBuf,
}

impl FileSecret {
    /// `FILE:LINE: KEY`, the prefix of this reference's errors.
    pub fn label(&self) -> String {
        format!("{}:{}: {}", self.file.display(), self.at.line, self.key)
    }

    /// Reads the secret: a file or credential must not be accessible by other users.
    pub fn read(&self) -> Result<String, ConfigError> {
        let label = self.label();
        match &self.reference {
            SecretRef::File(path) => read_secret_file(&label, &path.to_string_lossy()),
            SecretRef::Credential(name) => read_credential(&label, name),
            SecretRef::Env(var) => std::env::var(var)
                .ok()
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .ok_or_else(|| ConfigError(format!("{label}: the variable {var} is not set"))),
        }
    }

    /// Where the secret came from, for `-n` (`credential api-secret, exoip.toml line 12`).
    pub fn describe(&self) -> String {
        format!(
            "{} ({} line {})",
            self.reference,
            self.file.display(),
            self.at.line
        )
    }
}

/// Where systemd put credential `name` (`LoadCredential=NAME:PATH`), if it did for this process.
pub fn credential_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("CREDENTIALS_DIRECTORY")
        .filter(|d| !d.is_empty())
        .map(|d| PathBuf::from(d).join(name))
}

/// Reads systemd credential `name` (`$CREDENTIALS_DIRECTORY/NAME`) like a secret file.
pub fn read_credential(flag: &str, name: &str) -> Result<String, ConfigError> {
    check_credential_name(name).map_err(|e| ConfigError(format!("{flag}: {e}")))?;
    let path = credential_path(name).ok_or_else(|| {
        ConfigError(format!(
            "{flag}: CREDENTIALS_DIRECTORY is not set: systemd sets it for a unit with LoadCredential={name}:/etc/exoip/{name}"
        ))
    })?;
    read_secret_file(flag, &path.to_string_lossy())
}

/// The value is not echoed: it may be the secret, given by mistake.
fn check_credential_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        return Err("not a credential name (the NAME of LoadCredential=NAME:PATH)".to_string());
    }
    Ok(())
}

/// A flag's value from the file.
#[derive(Clone, Debug)]
struct Setting {
    /// The key: the flag's long name.
    key: String,
    /// The clap argument id.
    id: String,
    /// `None`: a flag without value set to `true`.
    values: Option<Vec<String>>,
    at: Location,
}

/// One address of the file, with its own priority.
#[derive(Clone, Debug)]
struct FileAddress {
    ip: String,
    priority: Option<u8>,
    at: Location,
}

/// A configuration file, read and checked against the flags (but not yet merged).
#[derive(Clone, Debug)]
pub struct ConfigFile {
    pub path: PathBuf,
    settings: Vec<Setting>,
    addresses: Vec<FileAddress>,
    secrets: Vec<FileSecret>,
}

/// What a key of the file is.
enum Key<'a> {
    Flag(&'a Arg),
    Secret(&'static SecretKind, &'static str),
    Address,
}

impl ConfigFile {
    /// Reads `path`, which must belong to root (or to the user running exoip) and must not be
    /// accessible by other users: it names commands run as root (hooks, checks), which may
    /// carry tokens of their own.
    pub fn load(path: &Path) -> Result<ConfigFile, ConfigError> {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let shown = path.display();
        let cannot =
            |e: std::io::Error| ConfigError(format!("-c/--config: cannot read {shown}: {e}"));
        let meta = std::fs::metadata(path).map_err(cannot)?;
        if !meta.is_file() {
            return Err(ConfigError(format!("-c/--config: {shown} is not a file")));
        }
        let mode = meta.permissions().mode();
        if mode & 0o007 != 0 {
            return Err(ConfigError(format!(
                "-c/--config: {shown} is accessible by other users (mode {:o}); run: chmod 600 {shown}",
                mode & 0o777
            )));
        }
        if mode & 0o020 != 0 {
            return Err(ConfigError(format!(
                "-c/--config: {shown} is writable by its group (mode {:o}) and names commands run as root; run: chmod g-w {shown}",
                mode & 0o777
            )));
        }
        let me = nix::unistd::geteuid().as_raw();
        if meta.uid() != 0 && meta.uid() != me {
            return Err(ConfigError(format!(
                "-c/--config: {shown} belongs to uid {}, neither root nor the user running exoip; run: chown root: {shown}",
                meta.uid()
            )));
        }
        let text = std::fs::read_to_string(path).map_err(cannot)?;
        ConfigFile::parse(path, &text)
    }

    /// Checks `text`, the content of `path`: TOML, known keys, values of the right type that
    /// the flags' own parsers accept. Errors are one line, `PATH:LINE:COLUMN: KEY: what`.
    pub fn parse(path: &Path, text: &str) -> Result<ConfigFile, ConfigError> {
        let at_offset = |offset: usize| Location::of(text, offset);
        let fail = |offset: usize, msg: String| {
            let at = at_offset(offset);
            ConfigError(format!(
                "{}:{}:{}: {msg}",
                path.display(),
                at.line,
                at.column
            ))
        };
        let table = DeTable::parse(text).map_err(|e| {
            let offset = e.span().map_or(0, |s| s.start);
            fail(offset, format!("invalid TOML: {}", e.message().trim()))
        })?;
        let cmd = crate::docgen::presented_command();
        let mut entries: Vec<_> = table.get_ref().iter().collect();
        entries.sort_by_key(|(k, _)| k.span().start);

        let mut file = ConfigFile {
            path: path.to_path_buf(),
            settings: Vec::new(),
            addresses: Vec::new(),
            secrets: Vec::new(),
        };
        for (key, value) in entries {
            let name: &str = key.get_ref();
            let key_at = key.span().start;
            let kind =
                classify(&cmd, name).map_err(|msg| fail(key_at, format!("{name}: {msg}")))?;
            match kind {
                Key::Address => {
                    file.addresses = addresses(value, &fail, &at_offset)?;
                }
                Key::Secret(secret, reference) => {
                    let v = value
                        .get_ref()
                        .as_str()
                        .map(str::trim)
                        .filter(|v| !v.is_empty())
                        .ok_or_else(|| {
                            fail(
                                value.span().start,
                                format!(
                                    "{name}: expected a non-empty string, found {}",
                                    describe_type(value.get_ref())
                                ),
                            )
                        })?;
                    let reference = match reference {
                        "file" => SecretRef::File(PathBuf::from(v)),
                        "credential" => {
                            check_credential_name(v)
                                .map_err(|e| fail(value.span().start, format!("{name}: {e}")))?;
                            SecretRef::Credential(v.to_string())
                        }
                        _ => {
                            // The value is not echoed: it may be the secret, written by mistake.
                            if !v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                                return Err(fail(
                                    value.span().start,
                                    format!("{name}: not an environment variable name (letters, digits and _)"),
                                ));
                            }
                            if !crate::hooks::is_secret_var(v) {
                                return Err(fail(
                                    value.span().start,
                                    format!(
                                        "{name}: hooks and checks would inherit that variable: they only lose variables whose name contains SECRET, PASSWORD, TOKEN or AUTH_KEY; rename it (e.g. with _SECRET at the end)"
                                    ),
                                ));
                            }
                            SecretRef::Env(v.to_string())
                        }
                    };
                    if let Some(other) = file.secrets.iter().find(|s| s.secret == secret.name) {
                        return Err(fail(
                            key_at,
                            format!(
                                "{name} and {} (line {}) are exclusive: refer to {} once",
                                other.key, other.at.line, secret.what
                            ),
                        ));
                    }
                    file.secrets.push(FileSecret {
                        secret: secret.name,
                        reference,
                        key: name.to_string(),
                        at: at_offset(key_at),
                        file: path.to_path_buf(),
                    });
                }
                Key::Flag(arg) => {
                    let values = match flag_values(arg, value, &fail, name)? {
                        FlagValue::Unset => continue,
                        FlagValue::On => None,
                        FlagValue::Values(v) => Some(v),
                    };
                    file.settings.push(Setting {
                        key: name.to_string(),
                        id: arg.get_id().to_string(),
                        values,
                        at: at_offset(key_at),
                    });
                }
            }
        }
        // Two settings clap would refuse together, both from the file.
        for (i, s) in file.settings.iter().enumerate() {
            let arg = cmd.get_arguments().find(|a| a.get_id() == s.id.as_str());
            let Some(arg) = arg else { continue };
            for other in cmd.get_arg_conflicts_with(arg) {
                if let Some(o) = file.settings[..i]
                    .iter()
                    .find(|o| o.id == other.get_id().as_str())
                {
                    return Err(ConfigError(format!(
                        "{}:{}:{}: {} and {} (line {}) are exclusive",
                        path.display(),
                        s.at.line,
                        s.at.column,
                        s.key,
                        o.key,
                        o.at.line
                    )));
                }
            }
        }
        Ok(file)
    }
}

/// What key `name` of the file is, or why it is not one.
fn classify<'a>(cmd: &'a Command, name: &str) -> Result<Key<'a>, String> {
    if name == ADDRESS_KEY {
        return Ok(Key::Address);
    }
    for secret in SECRETS {
        if name == secret.name {
            return Err(format!(
                "{} is not written in the configuration file (whoever reads the file would have it): use {n}-file = \"PATH\" (a file only root can read), {n}-credential = \"NAME\" (systemd LoadCredential=) or {n}-env = \"VARIABLE\"",
                secret.what,
                n = secret.name
            ));
        }
        if let Some(kind) = name
            .strip_prefix(secret.name)
            .and_then(|rest| rest.strip_prefix('-'))
            .and_then(|rest| REFERENCE_KINDS.iter().find(|k| **k == rest))
        {
            return Ok(Key::Secret(secret, kind));
        }
    }
    let arg = cmd
        .get_arguments()
        .find(|a| a.get_long() == Some(name) && !is_builtin(a));
    match arg {
        Some(a) if MODE_IDS.contains(&a.get_id().as_str()) => Err(
            "a mode is given on the command line (-W, -A, -D, -n), not in the configuration file"
                .to_string(),
        ),
        Some(a) if a.get_id() == "config" => {
            Err("the configuration file cannot name another one".to_string())
        }
        Some(a) => Ok(Key::Flag(a)),
        None => Err(unknown_key(cmd, name)),
    }
}

/// `unknown key`, with the key meant when clap knows one (a legacy name, a typo).
fn unknown_key(cmd: &Command, name: &str) -> String {
    // An alias (the Go exoip's `xi`): the key is the flag's presented long name.
    if let Some(a) = cmd
        .get_arguments()
        .find(|a| a.get_all_aliases().unwrap_or_default().contains(&name))
    {
        if let Some(long) = a.get_long() {
            return format!("unknown key (the key is '{long}')");
        }
    }
    // clap's suggestion for the flag `--NAME`, as on the command line.
    let probe = cmd
        .clone()
        .try_get_matches_from(["exoip".to_string(), format!("--{name}")]);
    if let Err(e) = probe {
        if let Some(clap::error::ContextValue::String(s)) =
            e.get(clap::error::ContextKind::SuggestedArg)
        {
            return format!(
                "unknown key (did you mean '{}'?)",
                s.trim_start_matches('-')
            );
        }
    }
    "unknown key (the keys are the long options of exoip(8); see exoip.toml(5))".to_string()
}

fn is_builtin(arg: &Arg) -> bool {
    matches!(arg.get_id().as_str(), "help" | "version")
}

/// A TOML value's type, for messages.
fn describe_type(v: &DeValue<'_>) -> &'static str {
    match v {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

/// A string or a number as the text a flag would carry (`10`, `0.5`, `1s`).
fn scalar_text(v: &DeValue<'_>) -> Option<String> {
    match v {
        DeValue::String(s) => Some(s.to_string()),
        DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix())
            .ok()
            .map(|n| n.to_string()),
        DeValue::Float(f) => f
            .as_str()
            .parse::<f64>()
            .ok()
            .filter(|x| x.is_finite())
            .map(|x| x.to_string()),
        _ => None,
    }
}

type Fail<'f> = &'f dyn Fn(usize, String) -> ConfigError;

/// What the file sets a flag to.
enum FlagValue {
    /// `false`, or an empty list: as if the key were not there.
    Unset,
    /// `true`, for a flag without value.
    On,
    Values(Vec<String>),
}

/// The value of flag `arg` from TOML value `value`, checked by the flag's own parser.
fn flag_values(
    arg: &Arg,
    value: &Spanned<DeValue<'_>>,
    fail: Fail<'_>,
    key: &str,
) -> Result<FlagValue, ConfigError> {
    let v = value.get_ref();
    let at = value.span().start;
    let wrong = |at: usize, expected: &str, v: &DeValue<'_>| {
        fail(
            at,
            format!("{key}: expected {expected}, found {}", describe_type(v)),
        )
    };
    let values = match arg.get_action() {
        ArgAction::SetTrue => {
            return match v.as_bool() {
                Some(true) => Ok(FlagValue::On),
                Some(false) => Ok(FlagValue::Unset),
                None => Err(wrong(at, "true or false", v)),
            };
        }
        ArgAction::Append => match v {
            DeValue::Array(items) => {
                let mut out = Vec::new();
                for item in items.iter() {
                    let text = scalar_text(item.get_ref()).ok_or_else(|| {
                        wrong(item.span().start, "a string or a number", item.get_ref())
                    })?;
                    check_value(arg, &text)
                        .map_err(|e| fail(item.span().start, format!("{key}: {e}")))?;
                    out.push(text);
                }
                if out.is_empty() {
                    return Ok(FlagValue::Unset);
                }
                return Ok(FlagValue::Values(out));
            }
            _ => vec![scalar_text(v)
                .ok_or_else(|| wrong(at, "a string, a number or an array of them", v))?],
        },
        _ => vec![scalar_text(v).ok_or_else(|| wrong(at, "a string or a number", v))?],
    };
    for text in &values {
        check_value(arg, text).map_err(|e| fail(at, format!("{key}: {e}")))?;
    }
    Ok(FlagValue::Values(values))
}

/// Runs `value` through the flag's own value parser (possible values, integer ranges).
fn check_value(arg: &Arg, value: &str) -> Result<(), String> {
    let Some(long) = arg.get_long() else {
        return Ok(());
    };
    let probe = Command::new("exoip").no_binary_name(true).arg(
        arg.clone()
            .env(None)
            .conflicts_with(clap::builder::Resettable::<clap::Id>::Reset)
            .required(false),
    );
    match probe.try_get_matches_from([format!("--{long}={value}")]) {
        Ok(_) => Ok(()),
        Err(e) => {
            let rendered = e.render().to_string();
            let mut lines = rendered.lines().map(str::trim).filter(|l| !l.is_empty());
            let first = lines
                .next()
                .unwrap_or("invalid value")
                .trim_start_matches("error: ")
                .to_string();
            match lines.find(|l| l.starts_with("[possible values")) {
                Some(p) => Err(format!("{first} {p}")),
                None => Err(first),
            }
        }
    }
}

/// The `address` key: a string, an array of strings and tables, or `[[address]]` tables.
fn addresses(
    value: &Spanned<DeValue<'_>>,
    fail: Fail<'_>,
    locate: &dyn Fn(usize) -> Location,
) -> Result<Vec<FileAddress>, ConfigError> {
    let items: Vec<&Spanned<DeValue<'_>>> = match value.get_ref() {
        DeValue::Array(items) => items.iter().collect(),
        _ => vec![value],
    };
    let mut out = Vec::new();
    for item in items {
        let at = item.span().start;
        let location = locate(at);
        match item.get_ref() {
            DeValue::Table(table) => {
                let mut ip = None;
                let mut priority = None;
                let mut fields: Vec<_> = table.iter().collect();
                fields.sort_by_key(|(k, _)| k.span().start);
                for (k, v) in fields {
                    let vat = v.span().start;
                    match k.get_ref().as_ref() {
                        "ip" => {
                            let s = v.get_ref().as_str().map(str::trim).ok_or_else(|| {
                                fail(vat, format!("address.ip: expected a string, found {}", describe_type(v.get_ref())))
                            })?;
                            if s.is_empty() || s.contains([',', ' ', '\t']) {
                                return Err(fail(vat, "address.ip: one IP address per table".to_string()));
                            }
                            ip = Some(s.to_string());
                        }
                        "priority" => {
                            let n = scalar_text(v.get_ref())
                                .and_then(|t| t.trim().parse::<u16>().ok())
                                .filter(|n| (1..=255).contains(n))
                                .ok_or_else(|| {
                                    fail(vat, "address.priority: must be an integer from 1 to 255".to_string())
                                })?;
                            priority = Some(n as u8);
                        }
                        other => {
                            return Err(fail(
                                k.span().start,
                                format!("address.{other}: unknown key (an address has ip and priority; the keys after [[address]] belong to it: put the other settings above the first [[address]])"),
                            ))
                        }
                    }
                }
                let ip = ip.ok_or_else(|| fail(at, "address: a table without ip".to_string()))?;
                out.push(FileAddress {
                    ip,
                    priority,
                    at: location,
                });
            }
            other => {
                let text = other
                    .as_str()
                    .ok_or_else(|| {
                        fail(
                            at,
                            format!(
                                "address: expected an IP address (a string) or a table, found {}",
                                describe_type(other)
                            ),
                        )
                    })?
                    .trim()
                    .to_string();
                if text.is_empty() {
                    return Err(fail(at, "address: empty".to_string()));
                }
                out.push(FileAddress {
                    ip: text,
                    priority: None,
                    at: location,
                });
            }
        }
    }
    Ok(out)
}

/// Where a setting came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    CommandLine,
    /// The variable clap read it from.
    Environment(String),
    File(Location),
}

impl Origin {
    fn describe(&self) -> String {
        match self {
            Origin::CommandLine => "the command line".to_string(),
            Origin::Environment(var) => var.clone(),
            Origin::File(at) => format!("line {}", at.line),
        }
    }
}

/// A value of the file that a flag or a variable replaced.
#[derive(Clone, Debug)]
struct Overridden {
    key: String,
    at: Location,
    by: String,
}

/// Where the settings came from: the command line, the environment, the configuration file;
/// and what of the file applies beyond flags (per-address priorities, secret references).
/// Carried from the parse to [`crate::config::Config`] (never holds a secret, only references).
#[derive(Clone, Debug, Default)]
pub struct Sources {
    file: Option<PathBuf>,
    /// Every setting not at its default, by key, in the order of the definitions (then the
    /// file's).
    settings: Vec<(String, Origin)>,
    overridden: Vec<Overridden>,
    /// The file's addresses, when they apply.
    addresses: Vec<FileAddress>,
    /// Whether their own priorities apply (not when a flag or variable gives the priority).
    address_priorities: bool,
    /// The file's secret references that apply.
    secrets: Vec<FileSecret>,
    /// Where each secret in use came from (filled in by [`crate::config::Config::from_args`]).
    used_secrets: Vec<(&'static str, String)>,
}

/// Why the command line and the configuration file could not be turned into settings.
#[derive(Debug)]
pub enum ArgsError {
    /// The command line itself (clap's message; help and version are "errors" too).
    Usage(clap::Error),
    /// The configuration file: one line with the file, line and column.
    Config(ConfigError),
}

/// Parses the command line (after [`crate::cli::normalize_legacy_args`]) and, for the agent
/// and `exoip check`, the configuration file of `-c` or `EXOIP_CONFIG`: the matches include
/// the file's values where neither a flag nor the environment gives one.
pub fn parse_args(args: Vec<OsString>) -> Result<(ArgMatches, Sources), ArgsError> {
    let first = Cli::command()
        .try_get_matches_from(args.iter())
        .map_err(ArgsError::Usage)?;
    let agent = match first.subcommand() {
        None => &first,
        Some(("check", m)) => m,
        Some(_) => return Ok((first, Sources::default())),
    };
    let presented = crate::docgen::presented_command();
    let mut sources = Sources::from_matches(&presented, agent);
    let path = agent
        .get_one::<String>("config")
        .map(|p| p.trim())
        .filter(|p| !p.is_empty());
    let Some(path) = path else {
        return Ok((first, sources));
    };
    let file = ConfigFile::load(Path::new(path)).map_err(ArgsError::Config)?;
    let words = sources.merge(&presented, agent, file);
    if words.is_empty() {
        return Ok((first, sources));
    }
    // The first parse succeeded, so no flag waits for its value: the file's come last (before
    // a `--`, after which clap takes nothing as a flag).
    let mut argv = args;
    let at = argv.iter().position(|a| a == "--").unwrap_or(argv.len());
    argv.splice(at..at, words);
    let matches = Cli::command()
        .try_get_matches_from(argv)
        .map_err(ArgsError::Usage)?;
    Ok((matches, sources))
}

/// Where clap found argument `arg`: the command line, or a variable that is set and not empty
/// (ifupdown passes empty options, which count as unset).
fn given(arg: &Arg, matches: &ArgMatches) -> Option<Origin> {
    match matches.value_source(arg.get_id().as_str())? {
        ValueSource::CommandLine => Some(Origin::CommandLine),
        ValueSource::EnvVariable => {
            let var = arg.get_env()?.to_string_lossy().into_owned();
            let value = std::env::var_os(&var)?;
            (!value.to_string_lossy().trim().is_empty()).then_some(Origin::Environment(var))
        }
        _ => None,
    }
}

/// The agent's settings: every argument but the modes, `-c` itself, help and version.
fn settings_args(cmd: &Command) -> impl Iterator<Item = &Arg> {
    cmd.get_arguments().filter(|a| {
        !is_builtin(a) && !MODE_IDS.contains(&a.get_id().as_str()) && a.get_id() != "config"
    })
}

impl Sources {
    fn from_matches(cmd: &Command, matches: &ArgMatches) -> Sources {
        let settings = settings_args(cmd)
            .filter_map(|a| Some((a.get_long()?.to_string(), given(a, matches)?)))
            .collect();
        Sources {
            settings,
            ..Sources::default()
        }
    }

    /// Takes the file's values that no flag or variable overrides; returns them as flags.
    fn merge(&mut self, cmd: &Command, matches: &ArgMatches, file: ConfigFile) -> Vec<OsString> {
        self.file = Some(file.path.clone());
        let find = |id: &str| cmd.get_arguments().find(|a| a.get_id() == id);
        // What, given by a flag or the environment, replaces the file's value of `id`: the
        // same setting, one clap refuses with it, or one of its alternatives.
        let overriding = |id: &str| -> Option<Origin> {
            let arg = find(id)?;
            if let Some(o) = given(arg, matches) {
                return Some(o);
            }
            if let Some(o) = cmd
                .get_arg_conflicts_with(arg)
                .into_iter()
                .find_map(|other| given(other, matches))
            {
                return Some(o);
            }
            ALTERNATIVES
                .iter()
                .filter(|group| group.contains(&id))
                .flat_map(|group| group.iter().filter(|other| **other != id))
                .find_map(|other| find(other).and_then(|a| given(a, matches)))
        };
        let mut words = Vec::new();
        for s in &file.settings {
            if let Some(by) = overriding(&s.id) {
                self.overridden.push(Overridden {
                    key: s.key.clone(),
                    at: s.at,
                    by: by.describe(),
                });
                continue;
            }
            self.settings.push((s.key.clone(), Origin::File(s.at)));
            match &s.values {
                None => words.push(OsString::from(format!("--{}", s.key))),
                Some(values) => words.extend(
                    values
                        .iter()
                        .map(|v| OsString::from(format!("--{}={v}", s.key))),
                ),
            }
        }
        if let Some(first) = file.addresses.first() {
            if let Some(by) = overriding("addresses") {
                self.overridden.push(Overridden {
                    key: ADDRESS_KEY.to_string(),
                    at: first.at,
                    by: by.describe(),
                });
            } else {
                self.settings
                    .push((ADDRESS_KEY.to_string(), Origin::File(first.at)));
                words.extend(
                    file.addresses
                        .iter()
                        .map(|a| OsString::from(format!("--{ADDRESS_KEY}={}", a.ip))),
                );
                let own = file.addresses.iter().find(|a| a.priority.is_some());
                match (own, overriding("priority")) {
                    (Some(a), Some(by)) => self.overridden.push(Overridden {
                        key: format!("{ADDRESS_KEY}.priority"),
                        at: a.at,
                        by: by.describe(),
                    }),
                    _ => self.address_priorities = true,
                }
                self.addresses = file.addresses.clone();
            }
        }
        for secret in file.secrets {
            let kind = SECRETS
                .iter()
                .find(|k| k.name == secret.secret)
                .expect("a secret of SECRETS");
            if let Some(by) = secret_given(cmd, matches, kind) {
                self.overridden.push(Overridden {
                    key: secret.key.clone(),
                    at: secret.at,
                    by,
                });
            } else {
                self.settings
                    .push((secret.key.clone(), Origin::File(secret.at)));
                self.secrets.push(secret);
            }
        }
        words
    }

    /// The configuration file read, if any.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// Where setting `key` (a long flag name) came from; `None`: its default.
    pub fn origin(&self, key: &str) -> Option<&Origin> {
        self.settings.iter().find(|(k, _)| k == key).map(|(_, o)| o)
    }

    /// The file's own priority of `address` (as written), when the file's addresses and their
    /// priorities apply.
    pub fn address_priority(&self, address: &str) -> Option<u8> {
        if !self.address_priorities {
            return None;
        }
        self.addresses
            .iter()
            .find(|a| a.ip == address.trim())
            .and_then(|a| a.priority)
    }

    /// The file's reference to secret `name` ([`SecretKind::name`]), when no flag or variable
    /// gives that secret.
    pub fn file_secret(&self, name: &str) -> Option<&FileSecret> {
        self.secrets.iter().find(|s| s.secret == name)
    }

    /// The secret the file refers to for environment `variable` (`OS_PASSWORD`), read; `None`
    /// when the file has no reference for it (or the variable itself is set).
    pub fn read_secret_variable(&self, variable: &str) -> Result<Option<String>, ConfigError> {
        let Some(kind) = SECRETS.iter().find(|k| k.variables.contains(&variable)) else {
            return Ok(None);
        };
        self.file_secret(kind.name)
            .map(FileSecret::read)
            .transpose()
    }

    /// Records where secret `name` came from, for `-n` (never the secret).
    pub fn note_secret(&mut self, name: &'static str, from: impl Into<String>) {
        self.used_secrets.retain(|(n, _)| *n != name);
        self.used_secrets.push((name, from.into()));
    }

    /// Where secret `name` came from, as noted.
    pub fn secret_origin(&self, name: &str) -> Option<&str> {
        self.used_secrets
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, from)| from.as_str())
    }

    /// Nothing to tell: no file, no flag, no variable.
    pub fn is_empty(&self) -> bool {
        self.file.is_none() && self.settings.is_empty()
    }

    /// `error` of [`crate::config::Config::from_args`] with the line of the file that set the
    /// flag it names (`-P/--priority: ...` → `... (/etc/exoip/exoip.toml line 4)`).
    pub fn annotate(&self, error: ConfigError) -> ConfigError {
        let Some(path) = &self.file else {
            return error;
        };
        let Some((head, _)) = error.0.split_once(": ") else {
            return error;
        };
        if head.starts_with(&path.display().to_string()) {
            return error;
        }
        let cmd = crate::docgen::presented_command();
        let mut lines: Vec<usize> = Vec::new();
        for name in head.split(['/', ' ']).filter(|w| w.starts_with('-')) {
            let Some(key) = key_of_flag(&cmd, name) else {
                continue;
            };
            let matching = |k: &str| match key.strip_suffix('*') {
                Some(prefix) => k.starts_with(prefix),
                None => k == key,
            };
            for (k, origin) in &self.settings {
                let Origin::File(at) = origin else { continue };
                if !matching(k) {
                    continue;
                }
                let line = if k == ADDRESS_KEY {
                    // The address the message is about, else the first.
                    self.addresses
                        .iter()
                        .find(|a| {
                            error.0.contains(&format!("'{}'", a.ip))
                                || error.0.contains(&format!(" {} ", a.ip))
                        })
                        .map_or(at.line, |a| a.at.line)
                } else {
                    at.line
                };
                if !lines.contains(&line) {
                    lines.push(line);
                }
            }
        }
        if lines.is_empty() {
            return error;
        }
        let lines: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        ConfigError(format!(
            "{} ({} line {})",
            error.0,
            path.display(),
            lines.join(", ")
        ))
    }
}

/// The key of flag `name` as an error message writes it (`-P`, `--priority`, `-xi`, or
/// `--track-*` for a family, returned as `track-*`).
fn key_of_flag(cmd: &Command, name: &str) -> Option<String> {
    let name = name.trim_end_matches([',', ':', ')']);
    if let Some(long) = name.strip_prefix("--") {
        if long.ends_with('*') {
            return Some(long.to_string());
        }
        return cmd
            .get_arguments()
            .find(|a| {
                a.get_long() == Some(long)
                    || a.get_all_aliases().unwrap_or_default().contains(&long)
            })
            .and_then(|a| a.get_long())
            .map(str::to_string);
    }
    let short = name.strip_prefix('-')?;
    let mut chars = short.chars();
    let found = match (chars.next(), chars.next()) {
        (Some(c), None) => cmd.get_arguments().find(|a| a.get_short() == Some(c)),
        // The Go exoip's two-letter flags are aliases of the long ones.
        _ => cmd
            .get_arguments()
            .find(|a| a.get_all_aliases().unwrap_or_default().contains(&short)),
    };
    found.and_then(|a| a.get_long()).map(str::to_string)
}

/// What gives secret `kind` other than the file: its flags (`--api-secret`, `--api-secret-file`,
/// `--api-secret-credential`, where they exist) or one of its variables.
fn secret_given(cmd: &Command, matches: &ArgMatches, kind: &SecretKind) -> Option<String> {
    for suffix in ["", "-file", "-credential"] {
        let long = format!("{}{suffix}", kind.name);
        if let Some(arg) = cmd
            .get_arguments()
            .find(|a| a.get_long() == Some(long.as_str()))
        {
            match given(arg, matches) {
                Some(Origin::CommandLine) => return Some(format!("--{long}")),
                Some(o) => return Some(o.describe()),
                None => {}
            }
        }
    }
    kind.variables
        .iter()
        .find(|v| std::env::var(v).is_ok_and(|s| !s.trim().is_empty()))
        .map(|v| v.to_string())
}

/// Two columns as `exoip -n` prints them.
const LABEL_WIDTH: usize = 19;

/// The sources of the settings, as `exoip -n` prints them after the configuration.
impl fmt::Display for Sources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rows: Vec<(&str, String)> = Vec::new();
        if let Some(p) = &self.file {
            rows.push(("config file", p.display().to_string()));
        }
        let mut in_file: Vec<(usize, &str)> = self
            .settings
            .iter()
            .filter_map(|(k, o)| match o {
                Origin::File(at) => Some((at.line, k.as_str())),
                _ => None,
            })
            .collect();
        in_file.sort();
        let from_file = in_file
            .iter()
            .map(|(line, k)| format!("{k} (line {line})"))
            .collect::<Vec<_>>()
            .join(", ");
        let from_cli = self
            .settings
            .iter()
            .filter(|(_, o)| *o == Origin::CommandLine)
            .map(|(k, _)| k.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let from_env: String = self
            .settings
            .iter()
            .filter_map(|(k, o)| match o {
                Origin::Environment(var) => Some(format!("{var} ({k})")),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join(", ");
        let overridden = self
            .overridden
            .iter()
            .map(|o| format!("{} (line {}, by {})", o.key, o.at.line, o.by))
            .collect::<Vec<_>>()
            .join(", ");
        for (label, list) in [
            ("from the file", from_file),
            ("command line", from_cli),
            ("environment", from_env),
            ("overridden", overridden),
        ] {
            if !list.is_empty() {
                rows.push((label, list));
            }
        }
        for (i, (label, value)) in rows.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{label:<LABEL_WIDTH$}{value}")?;
        }
        Ok(())
    }
}

/// Whether flag `long` is one of the secrets (the secret itself, or a reference to it): those
/// keys are documented and checked as [`SECRETS`], not as flags.
fn is_secret_flag(long: &str) -> bool {
    SECRETS.iter().any(|s| {
        long == s.name
            || REFERENCE_KINDS
                .iter()
                .any(|k| long.strip_prefix(s.name) == Some(&format!("-{k}")))
    })
}

/// Every key the file accepts, in the order of the documentation: the addresses, the flags,
/// the secret references.
pub fn keys() -> Vec<String> {
    let cmd = crate::docgen::presented_command();
    let mut keys = vec![ADDRESS_KEY.to_string()];
    for arg in settings_args(&cmd) {
        let Some(long) = arg.get_long() else { continue };
        if long != ADDRESS_KEY && !is_secret_flag(long) {
            keys.push(long.to_string());
        }
    }
    for secret in SECRETS {
        for kind in REFERENCE_KINDS {
            keys.push(format!("{}-{kind}", secret.name));
        }
    }
    keys
}

/// The marker lines of `man/exoip.toml.5` around the generated list of keys.
pub const MAN_KEYS_BEGIN: &str =
    r#".\" @BEGIN GENERATED KEYS@ (src/config_file.rs; EXOIP_BLESS=1 cargo test --test docs)"#;
pub const MAN_KEYS_END: &str = r#".\" @END GENERATED KEYS@"#;

/// The keys of the file as roff, one subsection per help heading of the flags, then the secret
/// references: what `man/exoip.toml.5` has between [`MAN_KEYS_BEGIN`] and [`MAN_KEYS_END`].
pub fn man_keys() -> String {
    let cmd = crate::docgen::documented_command();
    let mut headings: Vec<(String, Vec<&Arg>)> = Vec::new();
    for arg in settings_args(&cmd) {
        let Some(long) = arg.get_long() else { continue };
        if is_secret_flag(long) || arg.is_hide_set() {
            continue;
        }
        let heading = arg.get_help_heading().unwrap_or("General").to_string();
        match headings.iter_mut().find(|(h, _)| *h == heading) {
            Some((_, args)) => args.push(arg),
            None => headings.push((heading, vec![arg])),
        }
    }
    let mut out = String::new();
    for (heading, args) in headings {
        out.push_str(&format!(".SS \"{}\"\n", roff(&heading)));
        for arg in args {
            let long = arg.get_long().unwrap_or_default();
            let value = arg
                .get_value_names()
                .and_then(|v| v.first())
                .map_or("VALUE".to_string(), |v| v.to_string());
            let shape = match arg.get_action() {
                _ if long == ADDRESS_KEY => format!(
                    "\\fI{v}\\fR, [\\fI{v}\\fR, ...] or tables (see \\fBADDRESSES\\fR)",
                    v = roff(&value)
                ),
                ArgAction::SetTrue => "true".to_string(),
                ArgAction::Append => format!("[\\fI{}\\fR, ...]", roff(&value)),
                _ => format!("\\fI{}\\fR", roff(&value)),
            };
            out.push_str(&format!(".TP\n\\fB{}\\fR = {shape}\n", roff(long)));
            let help = arg
                .get_long_help()
                .or_else(|| arg.get_help())
                .map(|h| h.to_string())
                .unwrap_or_default();
            let mut help: Vec<String> = help
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect();
            // clap drops the final period of a one-sentence help; the notes follow it.
            if let Some(last) = help.last_mut() {
                if !last.ends_with(['.', '!', '?']) {
                    last.push('.');
                }
            }
            for line in &help {
                out.push_str(&roff_line(line));
            }
            let mut notes = Vec::new();
            let possible: Vec<String> = arg
                .get_possible_values()
                .iter()
                .map(|p| format!("\\fB{}\\fR", roff(p.get_name())))
                .collect();
            if !possible.is_empty() && !matches!(arg.get_action(), ArgAction::SetTrue) {
                notes.push(format!("One of {}.", possible.join(", ")));
            }
            if let Some(default) = arg.get_default_values().first() {
                notes.push(format!(
                    "Default: \\fB{}\\fR.",
                    roff(&default.to_string_lossy())
                ));
            }
            if let Some(env) = arg.get_env() {
                notes.push(format!(
                    "Environment: \\fB{}\\fR.",
                    roff(&env.to_string_lossy())
                ));
            }
            if !notes.is_empty() {
                out.push_str(&format!("{}\n", notes.join(" ")));
            }
        }
    }
    out.push_str(".SS \"Secrets\"\n");
    for secret in SECRETS {
        let n = roff(secret.name);
        out.push_str(&format!(
            ".TP\n\\fB{n}\\-file\\fR, \\fB{n}\\-credential\\fR, \\fB{n}\\-env\\fR = \\fISTRING\\fR\n"
        ));
        let what = roff(secret.what);
        let mut what_chars = what.chars();
        let what = match what_chars.next() {
            Some(c) => format!("{}{}", c.to_uppercase(), what_chars.as_str()),
            None => what,
        };
        out.push_str(&format!("{what}. Overridden by "));
        let vars: Vec<String> = secret
            .variables
            .iter()
            .map(|v| format!("\\fB{}\\fR", roff(v)))
            .collect();
        let flags: Vec<String> = ["", "-file", "-credential"]
            .iter()
            .map(|s| format!("{}{s}", secret.name))
            .filter(|long| {
                cmd.get_arguments()
                    .any(|a| a.get_long() == Some(long.as_str()))
            })
            .map(|long| format!("\\fB\\-\\-{}\\fR", roff(&long)))
            .collect();
        let mut by = flags;
        by.extend(vars);
        out.push_str(&format!("{}.\n", by.join(", ")));
    }
    out
}

/// Text as roff: hyphens and backslashes escaped, non-ASCII as `\[uXXXX]`.
fn roff(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\e"),
            '-' => out.push_str("\\-"),
            c if c.is_ascii() => out.push(c),
            c => out.push_str(&format!("\\[u{:04X}]", u32::from(c))),
        }
    }
    out
}

/// One line of text as roff, protected from being read as a request.
fn roff_line(text: &str) -> String {
    let escaped = roff(text);
    if escaped.starts_with('.') || escaped.starts_with('\'') {
        format!("\\&{escaped}\n")
    } else {
        format!("{escaped}\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_are_lines_and_character_columns_from_one() {
        let text = "a = 1\nbé = \"x\"\n";
        assert_eq!(Location::of(text, 0), Location { line: 1, column: 1 });
        assert_eq!(
            Location::of(text, text.rfind('=').unwrap()),
            Location { line: 2, column: 4 }
        );
        assert_eq!(Location::of(text, 999).line, 3);
    }

    #[test]
    fn every_key_is_accepted_and_secrets_are_refused() {
        let cmd = crate::docgen::presented_command();
        for key in keys() {
            assert!(classify(&cmd, &key).is_ok(), "{key}");
        }
        for secret in SECRETS {
            let e = classify(&cmd, secret.name).err().expect("refused");
            assert!(e.contains(&format!("{}-credential", secret.name)), "{e}");
        }
        assert!(classify(&cmd, "validate").is_err());
        assert!(classify(&cmd, "help").is_err());
    }

    #[test]
    fn flags_named_by_errors_map_to_keys() {
        let cmd = crate::docgen::presented_command();
        for (flag, key) in [
            ("-P", Some("priority")),
            ("--priority", Some("priority")),
            ("-xi", Some("address")),
            ("--address", Some("address")),
            ("--xi", Some("address")),
            ("--track-*", Some("track-*")),
            ("--nope", None),
        ] {
            assert_eq!(key_of_flag(&cmd, flag).as_deref(), key, "{flag}");
        }
    }

    /// A file with one of every kind of value, parsed and merged with no flag and no variable:
    /// the flags clap receives, and errors pointing at the lines.
    #[test]
    fn the_file_becomes_flags_and_errors_point_at_it() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exoip.toml");
        std::fs::write(
            &path,
            "interval = 0.5\nno-alias = true\nalias = false\ntrack-tcp = [\"127.0.0.1:1\", \"127.0.0.1:2\"]\n\
             [[address]]\nip = \"203.0.113.10\"\npriority = 3\n",
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let file = ConfigFile::load(&path).unwrap();
        let cmd = crate::docgen::presented_command();
        let matches = Cli::command().try_get_matches_from(["exoip"]).unwrap();
        let mut sources = Sources::default();
        let words = sources.merge(&cmd, &matches, file);
        assert_eq!(
            words,
            [
                "--interval=0.5",
                "--no-alias",
                "--track-tcp=127.0.0.1:1",
                "--track-tcp=127.0.0.1:2",
                "--address=203.0.113.10"
            ]
            .map(OsString::from)
        );
        assert_eq!(sources.address_priority("203.0.113.10"), Some(3));
        assert_eq!(sources.address_priority("203.0.113.11"), None);
        assert_eq!(
            sources.origin("no-alias"),
            Some(&Origin::File(Location { line: 2, column: 1 }))
        );
        let shown = path.display();
        let e = sources.annotate(ConfigError("-t/--interval: too short".into()));
        assert_eq!(e.0, format!("-t/--interval: too short ({shown} line 1)"));
        let e = sources.annotate(ConfigError(
            "-xi/--address: 203.0.113.10 is given twice".into(),
        ));
        assert!(e.0.ends_with(&format!("({shown} line 5)")), "{e}");
        let e = sources.annotate(ConfigError("--track-*: no".into()));
        assert!(e.0.ends_with("line 4)"), "{e}");
        // Not from the file: unchanged.
        let e = sources.annotate(ConfigError("-P/--priority: bad".into()));
        assert_eq!(e.0, "-P/--priority: bad");
    }
}
