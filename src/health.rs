//! Tracked health checks: each runs on its own task and reports results; `HealthTracker` turns
//! the results into "faulty / priority penalty" with fall/rise hysteresis.
//!
//! Checks never run on the heartbeat path: `spawn` starts one task per check that sends a
//! `CheckResult` on a channel; the agent feeds it to `HealthTracker::apply` and hands the
//! summary to the core. A check is awaited before the next one starts (never two runs of the
//! same check at once) and is bounded by its timeout (a hung script is killed with its whole
//! process group).
//!
//! Defaults (keepalived-like, a little less twitchy than keepalived's fall 1 / rise 1): every
//! 2 s, a 1 s timeout for process/TCP/HTTP checks and 2 s (the interval) for scripts, which may
//! legitimately do more; 2 consecutive failures make a check fail, 2 consecutive successes make
//! it pass again. The first result decides at once (a node with a healthy service becomes
//! eligible after one run, a node with a dead one goes to FAULT at once); until then the check
//! counts as failing, so a node never wins on an unverified service.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::hooks::{run_bounded, split_command, Exit, Stream};

pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(2);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
pub const DEFAULT_SCRIPT_TIMEOUT: Duration = Duration::from_secs(2);
pub const DEFAULT_FALL: u32 = 2;
pub const DEFAULT_RISE: u32 = 2;

/// What a check looks at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckKind {
    /// A command (program and arguments, no shell): exit status 0 is healthy.
    Script(Vec<String>),
    /// A process name: healthy while such a process exists (like `pidof NAME`).
    Process(String),
    /// `host:port`: healthy when a TCP connection succeeds.
    Tcp(String),
    /// An http(s) URL: healthy on a 2xx answer (redirects are not followed).
    Http(String),
}

impl CheckKind {
    pub fn label(&self) -> &'static str {
        match self {
            CheckKind::Script(_) => "script",
            CheckKind::Process(_) => "process",
            CheckKind::Tcp(_) => "tcp",
            CheckKind::Http(_) => "http",
        }
    }

    /// The default timeout of this kind of check.
    pub fn default_timeout(&self) -> Duration {
        match self {
            CheckKind::Script(_) => DEFAULT_SCRIPT_TIMEOUT,
            _ => DEFAULT_TIMEOUT,
        }
    }
}

/// One configured check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckSpec {
    /// Unique; see `check_name`.
    pub name: String,
    pub kind: CheckKind,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive failures before a passing check fails.
    pub fall: u32,
    /// Consecutive successes before a failing check passes.
    pub rise: u32,
    /// None: failing puts the node in FAULT. Some(w): failing adds w to the priority value.
    pub weight: Option<u8>,
}

impl CheckSpec {
    /// A check with the default timing and no weight.
    pub fn new(kind: CheckKind) -> CheckSpec {
        CheckSpec {
            name: check_name(&kind),
            timeout: kind.default_timeout(),
            kind,
            interval: DEFAULT_INTERVAL,
            fall: DEFAULT_FALL,
            rise: DEFAULT_RISE,
            weight: None,
        }
    }
}

/// `--track-script`: split into words like a shell (quotes, backslashes), nothing expanded.
pub fn parse_script(cmd: &str) -> Result<Vec<String>, String> {
    split_command(cmd)
}

/// `--track-process`: a process name as in /proc/PID/comm or the basename of argv[0].
pub fn parse_process(name: &str) -> Result<String, String> {
    if name.is_empty() || name.contains('/') || name.contains('\0') {
        return Err(format!("invalid process name {name:?}"));
    }
    Ok(name.to_string())
}

/// `--track-tcp`: `host:port` (IPv6 as `[addr]:port`).
pub fn parse_tcp(target: &str) -> Result<String, String> {
    let bad = || format!("invalid TCP target {target:?} (expected HOST:PORT)");
    let (host, port) = target.rsplit_once(':').ok_or_else(bad)?;
    let host_ok = if let Some(inner) = host.strip_prefix('[') {
        inner
            .strip_suffix(']')
            .is_some_and(|a| a.parse::<std::net::Ipv6Addr>().is_ok())
    } else {
        !host.is_empty() && !host.contains(':')
    };
    match port.parse::<u16>() {
        Ok(p) if p > 0 && host_ok => Ok(target.to_string()),
        _ => Err(bad()),
    }
}

/// `--track-http`: an absolute http or https URL.
pub fn parse_http(url: &str) -> Result<String, String> {
    let u = reqwest::Url::parse(url).map_err(|e| format!("invalid URL {url:?}: {e}"))?;
    if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
        return Err(format!(
            "invalid URL {url:?}: expected http://HOST/... or https://..."
        ));
    }
    Ok(url.to_string())
}

/// The check's name in logs, status and metrics: `process:haproxy`, `tcp:127.0.0.1:80`,
/// `http:http://127.0.0.1/health`, `script:/usr/local/bin/x --flag`. A password in a URL is
/// masked.
pub fn check_name(kind: &CheckKind) -> String {
    let what = match kind {
        CheckKind::Script(argv) => shell_words::join(argv),
        CheckKind::Process(n) | CheckKind::Tcp(n) => n.clone(),
        CheckKind::Http(url) => redact_url(url),
    };
    format!("{}:{what}", kind.label())
}

fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("xxxxx"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

/// Check the specs as a whole: unique names, sane timing.
pub fn validate(specs: &[CheckSpec]) -> Result<(), String> {
    for (i, s) in specs.iter().enumerate() {
        if specs[..i].iter().any(|o| o.name == s.name) {
            return Err(format!("health check {} given twice", s.name));
        }
        if s.interval.is_zero() || s.timeout.is_zero() {
            return Err(format!("{}: interval and timeout must be positive", s.name));
        }
        if s.fall == 0 || s.rise == 0 {
            return Err(format!("{}: fall and rise must be at least 1", s.name));
        }
        if s.weight == Some(0) {
            return Err(format!("{}: a weight must be at least 1", s.name));
        }
    }
    Ok(())
}

/// One run of one check.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckResult {
    pub name: String,
    pub ok: bool,
    /// Why it failed (or nothing).
    pub detail: Option<String>,
    /// When the run finished (seconds since the epoch, for status).
    pub at_unix: f64,
}

/// What the node's checks add up to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct HealthSummary {
    /// Some unweighted check is failing or has not run yet.
    pub fault: bool,
    /// Sum of the weights of the failing (or not yet run) weighted checks.
    pub penalty: u16,
    /// Every failing or unknown check, in configuration order: `process:haproxy failed: ...`.
    pub reasons: Vec<String>,
    /// The reasons of the unweighted ones, joined: what `election::Input::Health` wants as
    /// `fault` (Some exactly when `fault`).
    pub fault_reason: Option<String>,
}

/// A check changed state (ok/failing/unknown), with the summary after the change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthChange {
    pub name: String,
    /// None: not run yet.
    pub previous: Option<bool>,
    pub ok: bool,
    pub detail: Option<String>,
    pub summary: HealthSummary,
}

impl fmt::Display for HealthChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let word = |s: Option<bool>| match s {
            None => "unknown",
            Some(true) => "ok",
            Some(false) => "failing",
        };
        write!(
            f,
            "health check {}: {} -> {}",
            self.name,
            word(self.previous),
            word(Some(self.ok))
        )?;
        if let (false, Some(d)) = (self.ok, &self.detail) {
            write!(f, " ({d})")?;
        }
        Ok(())
    }
}

/// One check as status shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CheckStatus {
    pub name: String,
    pub kind: &'static str,
    /// None: not run yet.
    pub ok: Option<bool>,
    pub weight: Option<u8>,
    pub fall: u32,
    pub rise: u32,
    pub consecutive_failures: u32,
    pub consecutive_successes: u32,
    pub last_error: Option<String>,
    pub last_run_unix: Option<f64>,
    pub runs: u64,
}

/// Pure bookkeeping of check results: hysteresis per check, the node's summary.
#[derive(Clone, Debug)]
pub struct HealthTracker {
    checks: Vec<CheckStatus>,
}

impl HealthTracker {
    pub fn new(specs: &[CheckSpec]) -> HealthTracker {
        HealthTracker {
            checks: specs
                .iter()
                .map(|s| CheckStatus {
                    name: s.name.clone(),
                    kind: s.kind.label(),
                    ok: None,
                    weight: s.weight,
                    fall: s.fall.max(1),
                    rise: s.rise.max(1),
                    consecutive_failures: 0,
                    consecutive_successes: 0,
                    last_error: None,
                    last_run_unix: None,
                    runs: 0,
                })
                .collect(),
        }
    }

    /// Record a result from `spawn`'s channel (also keeps its time for status).
    pub fn apply(&mut self, r: &CheckResult) -> Option<HealthChange> {
        if let Some(c) = self.checks.iter_mut().find(|c| c.name == r.name) {
            c.last_run_unix = Some(r.at_unix);
        }
        self.record(&r.name, r.ok, r.detail.clone())
    }

    /// Record one result; returns the change if the check's state flipped. Unknown names are
    /// ignored.
    pub fn record(&mut self, name: &str, ok: bool, detail: Option<String>) -> Option<HealthChange> {
        let c = self.checks.iter_mut().find(|c| c.name == name)?;
        c.runs += 1;
        if ok {
            c.consecutive_successes = c.consecutive_successes.saturating_add(1);
            c.consecutive_failures = 0;
        } else {
            c.consecutive_failures = c.consecutive_failures.saturating_add(1);
            c.consecutive_successes = 0;
            c.last_error = Some(detail.clone().unwrap_or_else(|| "failed".into()));
        }
        let previous = c.ok;
        let next = match previous {
            None => Some(ok),
            Some(true) if c.consecutive_failures >= c.fall => Some(false),
            Some(false) if c.consecutive_successes >= c.rise => Some(true),
            same => same,
        };
        if next == previous {
            return None;
        }
        c.ok = next;
        Some(HealthChange {
            name: name.to_string(),
            previous,
            ok,
            detail: if ok { None } else { detail },
            summary: self.summary(),
        })
    }

    pub fn summary(&self) -> HealthSummary {
        let mut s = HealthSummary::default();
        let mut fault_reasons = Vec::new();
        for c in &self.checks {
            let reason = match c.ok {
                Some(true) => continue,
                None => format!("{} not checked yet", c.name),
                Some(false) => format!(
                    "{} failed: {}",
                    c.name,
                    c.last_error.as_deref().unwrap_or("failed")
                ),
            };
            match c.weight {
                Some(w) => s.penalty = s.penalty.saturating_add(u16::from(w)),
                None => {
                    s.fault = true;
                    fault_reasons.push(reason.clone());
                }
            }
            s.reasons.push(reason);
        }
        if s.fault {
            s.fault_reason = Some(fault_reasons.join("; "));
        }
        s
    }

    /// Every check, in configuration order.
    pub fn checks(&self) -> &[CheckStatus] {
        &self.checks
    }
}

/// Start one task per check, each sending its results to `tx` until the receiver is gone. The
/// first run starts at once.
pub fn spawn(specs: Vec<CheckSpec>, tx: mpsc::Sender<CheckResult>) -> Vec<JoinHandle<()>> {
    specs
        .into_iter()
        .map(|spec| tokio::spawn(check_task(spec, tx.clone())))
        .collect()
}

async fn check_task(spec: CheckSpec, tx: mpsc::Sender<CheckResult>) {
    let runner = Runner::new(&spec.kind, spec.timeout);
    let mut tick = tokio::time::interval(spec.interval);
    // A run longer than the interval delays the next one instead of causing a burst.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (ok, detail) = runner.run(&spec.kind, spec.timeout).await;
        let result = CheckResult {
            name: spec.name.clone(),
            ok,
            detail,
            at_unix: crate::unix_time().as_secs_f64(),
        };
        if tx.send(result).await.is_err() {
            return;
        }
    }
}

/// Run a check once (for `exoip check` and the tests): (healthy, why not).
pub async fn run_once(kind: &CheckKind, timeout: Duration) -> (bool, Option<String>) {
    Runner::new(kind, timeout).run(kind, timeout).await
}

/// Per-check state kept across runs.
struct Runner {
    /// HTTP checks: one client, built once (or why it could not be).
    http: Option<Result<reqwest::Client, String>>,
    /// Process checks: a /proc scan still running after its timeout (a read of a process in
    /// uninterruptible sleep can block); no second scan is started meanwhile, so a stuck
    /// /proc cannot pile up blocking threads.
    scan: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Runner {
    fn new(kind: &CheckKind, timeout: Duration) -> Runner {
        let http = matches!(kind, CheckKind::Http(_)).then(|| {
            reqwest::Client::builder()
                .timeout(timeout)
                .connect_timeout(timeout)
                .redirect(reqwest::redirect::Policy::none())
                // A local service is checked directly, whatever HTTP_PROXY says.
                .no_proxy()
                // A fresh connection each time: a stale pooled one must not fail a check.
                .pool_max_idle_per_host(0)
                .build()
                .map_err(|e| format!("cannot build an HTTP client: {e}"))
        });
        Runner {
            http,
            scan: Default::default(),
        }
    }

    async fn run(&self, kind: &CheckKind, timeout: Duration) -> (bool, Option<String>) {
        match kind {
            CheckKind::Script(argv) => run_script(argv, timeout).await,
            CheckKind::Process(name) => self.run_process(name, timeout).await,
            CheckKind::Tcp(target) => run_tcp(target, timeout).await,
            CheckKind::Http(url) => match &self.http {
                Some(Ok(client)) => run_http(client, url, timeout).await,
                Some(Err(e)) => (false, Some(e.clone())),
                None => (false, Some("no HTTP client".into())),
            },
        }
    }

    async fn run_process(&self, name: &str, timeout: Duration) -> (bool, Option<String>) {
        use std::sync::atomic::Ordering;
        if self.scan.swap(true, Ordering::AcqRel) {
            return (
                false,
                Some("the previous scan of /proc is still running".into()),
            );
        }
        let flag = self.scan.clone();
        let owned = name.to_string();
        let scan = tokio::task::spawn_blocking(move || {
            let found = process_exists(Path::new("/proc"), &owned);
            flag.store(false, Ordering::Release);
            found
        });
        match tokio::time::timeout(timeout, scan).await {
            Ok(Ok(Ok(true))) => (true, None),
            Ok(Ok(Ok(false))) => (false, Some("no such process".into())),
            Ok(Ok(Err(e))) => (false, Some(format!("cannot read /proc: {e}"))),
            Ok(Err(e)) => (false, Some(format!("process scan failed: {e}"))),
            Err(_) => (false, Some(format!("scanning /proc took over {timeout:?}"))),
        }
    }
}

async fn run_script(argv: &[String], timeout: Duration) -> (bool, Option<String>) {
    let mut first_err = None;
    let mut first_out = None;
    let exit = run_bounded(argv, &[], timeout, |stream, line| {
        let slot = match stream {
            Stream::Stderr => &mut first_err,
            Stream::Stdout => &mut first_out,
        };
        if slot.is_none() && !line.trim().is_empty() {
            *slot = Some(line);
        }
    })
    .await;
    let said = first_err.or(first_out);
    match exit {
        Exit::Status(s) if s.success() => (true, None),
        Exit::Status(s) => (
            false,
            Some(match said {
                Some(line) => format!("{s}: {line}"),
                None => s.to_string(),
            }),
        ),
        Exit::TimedOut => (false, Some(format!("timed out after {timeout:?} (killed)"))),
        Exit::SpawnFailed(e) => (false, Some(e)),
    }
}

async fn run_tcp(target: &str, timeout: Duration) -> (bool, Option<String>) {
    // Name resolution is inside the timeout too.
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(target)).await {
        Ok(Ok(_)) => (true, None),
        Ok(Err(e)) => (false, Some(format!("cannot connect: {e}"))),
        Err(_) => (false, Some(format!("no connection within {timeout:?}"))),
    }
}

async fn run_http(
    client: &reqwest::Client,
    url: &str,
    timeout: Duration,
) -> (bool, Option<String>) {
    // The client has the same timeout; this one also covers anything it does not.
    match tokio::time::timeout(timeout, client.get(url).send()).await {
        Ok(Ok(resp)) if resp.status().is_success() => (true, None),
        Ok(Ok(resp)) => (false, Some(format!("HTTP {}", resp.status()))),
        // Without the URL: it is already in the check's name, and may hold a password.
        Ok(Err(e)) => (false, Some(error_chain(&e.without_url()))),
        Err(_) => (false, Some(format!("no answer within {timeout:?}"))),
    }
}

/// An error with its causes ("error sending request: connection refused"), since reqwest's
/// top-level message alone rarely says what went wrong.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

/// Whether a live (not zombie) process named `name` exists under `proc_root`: its `comm` equals
/// the name (truncated to the kernel's 15 characters like `comm` itself), or the basename of its
/// argv[0] does, as `pidof` matches.
fn process_exists(proc_root: &Path, name: &str) -> std::io::Result<bool> {
    // The kernel keeps at most 15 bytes of the name in comm.
    let comm_name = truncate_bytes(name, 15);
    for entry in std::fs::read_dir(proc_root)? {
        let Ok(entry) = entry else { continue };
        let file_name = entry.file_name();
        let Some(pid) = file_name.to_str() else {
            continue;
        };
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let dir = entry.path();
        // Processes vanish while we look: any read error just means "not this one".
        let comm_matches = std::fs::read(dir.join("comm"))
            .map(|c| trim_newline(&c) == comm_name.as_bytes())
            .unwrap_or(false);
        let matches = comm_matches
            || std::fs::read(dir.join("cmdline"))
                .map(|c| argv0_basename(&c) == name.as_bytes())
                .unwrap_or(false);
        if matches && !is_zombie(&dir) {
            return Ok(true);
        }
    }
    Ok(false)
}

fn truncate_bytes(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn trim_newline(b: &[u8]) -> &[u8] {
    b.strip_suffix(b"\n").unwrap_or(b)
}

fn argv0_basename(cmdline: &[u8]) -> &[u8] {
    let argv0 = cmdline.split(|&b| b == 0).next().unwrap_or(&[]);
    argv0.rsplit(|&b| b == b'/').next().unwrap_or(argv0)
}

/// A dead process not yet reaped is not running (`pidof` skips those too).
fn is_zombie(dir: &Path) -> bool {
    // Format: "pid (comm) S ...", where comm may itself contain ") ".
    std::fs::read(dir.join("stat"))
        .ok()
        .and_then(|s| {
            let close = s.iter().rposition(|&b| b == b')')?;
            s.get(close + 2).copied()
        })
        .is_some_and(|state| state == b'Z' || state == b'X')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, weight: Option<u8>, fall: u32, rise: u32) -> CheckSpec {
        CheckSpec {
            name: name.into(),
            kind: CheckKind::Process(name.into()),
            interval: DEFAULT_INTERVAL,
            timeout: DEFAULT_TIMEOUT,
            fall,
            rise,
            weight,
        }
    }

    #[test]
    fn unknown_counts_as_failing_and_the_first_result_decides() {
        let mut t = HealthTracker::new(&[spec("a", None, 3, 3), spec("b", Some(20), 3, 3)]);
        let s = t.summary();
        assert!(s.fault);
        assert_eq!(s.penalty, 20);
        assert_eq!(s.fault_reason.as_deref(), Some("a not checked yet"));
        assert_eq!(s.reasons, ["a not checked yet", "b not checked yet"]);

        // One success is enough the first time, despite rise 3.
        let ch = t.record("a", true, None).unwrap();
        assert_eq!((ch.previous, ch.ok), (None, true));
        assert!(!ch.summary.fault);
        assert_eq!(ch.summary.fault_reason, None);
        assert_eq!(ch.summary.penalty, 20);
        // And one failure, despite fall 3.
        let ch = t.record("b", false, Some("refused".into())).unwrap();
        assert_eq!((ch.previous, ch.ok), (None, false));
        assert_eq!(ch.summary.penalty, 20);
        assert_eq!(ch.summary.reasons, ["b failed: refused"]);
        assert_eq!(
            ch.to_string(),
            "health check b: unknown -> failing (refused)"
        );
    }

    #[test]
    fn fall_and_rise_hysteresis() {
        let mut t = HealthTracker::new(&[spec("a", None, 2, 3)]);
        assert!(t.record("a", true, None).is_some());
        // One failure is not enough (fall 2), and a success in between resets the count.
        assert_eq!(t.record("a", false, Some("x".into())), None);
        assert_eq!(t.record("a", true, None), None);
        assert_eq!(t.record("a", false, Some("x".into())), None);
        let ch = t.record("a", false, Some("gone".into())).unwrap();
        assert_eq!((ch.previous, ch.ok), (Some(true), false));
        assert_eq!(ch.summary.fault_reason.as_deref(), Some("a failed: gone"));
        // Three successes to come back (rise 3), a failure in between restarts the count.
        assert_eq!(t.record("a", true, None), None);
        assert_eq!(t.record("a", true, None), None);
        assert_eq!(t.record("a", false, Some("again".into())), None);
        assert_eq!(t.record("a", true, None), None);
        assert_eq!(t.record("a", true, None), None);
        let ch = t.record("a", true, None).unwrap();
        assert_eq!((ch.previous, ch.ok), (Some(false), true));
        assert_eq!(ch.summary, HealthSummary::default());
        let c = &t.checks()[0];
        assert_eq!(c.runs, 11);
        assert_eq!(c.consecutive_successes, 3);
        // The last error stays visible in status after recovery.
        assert_eq!(c.last_error.as_deref(), Some("again"));
    }

    #[test]
    fn weights_add_up_and_only_unweighted_checks_fault() {
        let mut t = HealthTracker::new(&[
            spec("w1", Some(10), 1, 1),
            spec("w2", Some(250), 1, 1),
            spec("w3", Some(100), 1, 1),
            spec("f", None, 1, 1),
        ]);
        t.record("f", true, None);
        t.record("w1", false, None);
        t.record("w2", false, None);
        let ch = t.record("w3", true, None).unwrap();
        assert!(!ch.summary.fault);
        assert_eq!(ch.summary.penalty, 260);
        assert_eq!(
            ch.summary.reasons,
            ["w1 failed: failed", "w2 failed: failed"]
        );
        let ch = t.record("f", false, Some("dead".into())).unwrap();
        assert!(ch.summary.fault);
        assert_eq!(ch.summary.penalty, 260);
        assert_eq!(ch.summary.fault_reason.as_deref(), Some("f failed: dead"));
        let ch = t.record("w2", true, None).unwrap();
        assert_eq!(ch.summary.penalty, 10);
        assert!(t.record("nope", false, None).is_none());
    }

    #[test]
    fn apply_keeps_the_time() {
        let mut t = HealthTracker::new(&[spec("a", None, 1, 1)]);
        let r = CheckResult {
            name: "a".into(),
            ok: false,
            detail: None,
            at_unix: 1234.5,
        };
        assert!(t.apply(&r).is_some());
        assert_eq!(t.checks()[0].last_run_unix, Some(1234.5));
        assert_eq!(t.checks()[0].last_error.as_deref(), Some("failed"));
    }

    #[test]
    fn names_and_parsing() {
        assert_eq!(
            parse_script("/usr/local/bin/check --name 'my svc'").unwrap(),
            ["/usr/local/bin/check", "--name", "my svc"]
        );
        assert!(parse_script("").is_err());
        assert!(parse_script("''").is_err());
        assert!(parse_script("a 'b").is_err());
        assert_eq!(
            check_name(&CheckKind::Script(vec!["/usr/local/bin/x".into()])),
            "script:/usr/local/bin/x"
        );
        assert_eq!(
            check_name(&CheckKind::Script(vec!["/bin/x".into(), "a b".into()])),
            "script:/bin/x 'a b'"
        );
        assert_eq!(
            check_name(&CheckKind::Process("haproxy".into())),
            "process:haproxy"
        );
        assert_eq!(
            check_name(&CheckKind::Tcp("127.0.0.1:80".into())),
            "tcp:127.0.0.1:80"
        );
        assert_eq!(
            check_name(&CheckKind::Http("http://127.0.0.1/health".into())),
            "http:http://127.0.0.1/health"
        );
        let n = check_name(&CheckKind::Http("http://u:hunter2@127.0.0.1/h".into()));
        assert!(!n.contains("hunter2"), "{n}");
        assert!(parse_tcp("127.0.0.1:80").is_ok());
        assert!(parse_tcp("[2001:db8::1]:443").is_ok());
        assert!(parse_tcp("db.example:5432").is_ok());
        for bad in [
            "127.0.0.1",
            "127.0.0.1:0",
            ":80",
            "2001:db8::1:80",
            "h:99999",
            "[x]:1",
        ] {
            assert!(parse_tcp(bad).is_err(), "{bad}");
        }
        assert!(parse_http("http://127.0.0.1:8080/health").is_ok());
        assert!(parse_http("ftp://x/").is_err());
        assert!(parse_http("127.0.0.1/health").is_err());
        assert!(parse_process("haproxy").is_ok());
        assert!(parse_process("/usr/sbin/haproxy").is_err());
        assert!(parse_process("").is_err());
        let s = CheckSpec::new(CheckKind::Script(vec!["/bin/true".into()]));
        assert_eq!(s.timeout, DEFAULT_SCRIPT_TIMEOUT);
        assert_eq!(
            (s.fall, s.rise, s.weight),
            (DEFAULT_FALL, DEFAULT_RISE, None)
        );
        assert!(validate(&[s.clone(), s.clone()]).is_err());
        assert!(validate(&[CheckSpec {
            fall: 0,
            ..s.clone()
        }])
        .is_err());
        assert!(validate(&[s]).is_ok());
    }

    #[test]
    fn proc_matching_on_a_fake_proc() {
        let root = tempfile::tempdir().unwrap();
        let mk = |pid: &str, comm: &str, cmdline: &[u8], state: &str| {
            let d = root.path().join(pid);
            std::fs::create_dir(&d).unwrap();
            std::fs::write(d.join("comm"), format!("{comm}\n")).unwrap();
            std::fs::write(d.join("cmdline"), cmdline).unwrap();
            std::fs::write(d.join("stat"), format!("{pid} ({comm}) {state} 1 2 3")).unwrap();
        };
        mk(
            "10",
            "haproxy",
            b"/usr/sbin/haproxy\0-f\0/etc/haproxy.cfg\0",
            "S",
        );
        mk(
            "11",
            "a-very-long-dae",
            b"/opt/a-very-long-daemon-name\0",
            "S",
        );
        mk("12", "python3", b"/usr/bin/python3\0app.py\0", "S");
        mk("13", "deadone", b"", "Z");
        mk("14", "x) Z (y", b"", "R");
        std::fs::create_dir(root.path().join("self")).unwrap();
        let found = |n| process_exists(root.path(), n).unwrap();
        assert!(found("haproxy"));
        assert!(found("a-very-long-daemon-name"));
        assert!(found("python3"));
        assert!(!found("app.py"));
        assert!(!found("deadone"));
        assert!(found("x) Z (y"));
        assert!(!found("nginx"));
    }
}
