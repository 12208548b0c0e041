//! Notify hooks in keepalived's spirit: commands run on state changes, off the agent's path.
//!
//! `Hooks::fire` only enqueues. Each address has its own bounded queue and worker task, so
//! events for one address run in order while a hung hook for one address never delays another,
//! and never the agent. Every hook runs in its own process group with stdin null, a scrubbed
//! environment (no API secret, no heartbeat key, nothing that looks like a password or token),
//! the event in `EXOIP_*` variables, its output logged line by line, and a timeout after which
//! the whole group is killed.
//!
//! The bounded child-process runner (`run_bounded`) lives here too; the health checks' scripts
//! use it, so both kinds of user command get the same isolation and limits.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::IpAddr;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use tracing::{debug, info, warn};

/// Default hook timeout: generous, since hooks reconfigure services, yet bounded so a hung hook
/// only delays later events of its own address by this much.
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(30);

/// Pending events kept per address. A hook that always hangs then costs at most this many
/// events of memory; on overflow the oldest pending event is dropped (the newest state is the
/// one that matters).
pub const QUEUE_LIMIT: usize = 64;

/// At most one "dropping events" warning per address in this period.
const DROP_WARN_EVERY: Duration = Duration::from_secs(10);

/// Output kept per stream and run: enough to diagnose, bounded so a chatty command cannot
/// flood the log. The rest is read and discarded (so the command never blocks on a full pipe).
const MAX_LINES: usize = 100;
const MAX_LINE_BYTES: usize = 1024;

/// After the command exits (or is killed), how long its remaining output may take to arrive: a
/// background process that inherited the pipes must not hold the runner.
const OUTPUT_GRACE: Duration = Duration::from_millis(200);

/// Variables that are never passed to a hook or a check script, whatever their name.
const SECRET_VARS: &[&str] = &[
    "EXOSCALE_API_SECRET",
    "IF_EXOSCALE_API_SECRET",
    "EXOIP_AUTH_KEY",
];

/// Parts of variable names (upper-cased) that mark a secret: the cloud credentials of every
/// provider (`OS_PASSWORD`, `AZURE_CLIENT_SECRET`, ...) and the heartbeat key in any spelling.
const SECRET_PARTS: &[&str] = &["SECRET", "PASSWORD", "TOKEN", "AUTH_KEY"];

/// The variables a hook receives (all removed first, so an inherited one never stands in for
/// an absent value).
const EVENT_VARS: &[&str] = &[
    "EXOIP_STATE",
    "EXOIP_PREVIOUS_STATE",
    "EXOIP_ADDRESS",
    "EXOIP_REASON",
    "EXOIP_PEER",
    "EXOIP_EPOCH",
    "EXOIP_PROVIDER",
    "EXOIP_INSTANCE",
    "EXOIP_REASSERT",
];

/// Whether an environment variable must not reach a child process.
pub fn is_secret_var(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    SECRET_VARS.contains(&upper.as_str()) || SECRET_PARTS.iter().any(|p| upper.contains(p))
}

/// One configured hook: the command as given (for logs) and what is executed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hook {
    pub raw: String,
    /// The program and its arguments: the words of `raw`, or `/bin/sh -c raw` in shell mode.
    pub argv: Vec<String>,
}

impl Hook {
    /// Parse a hook command. Without `shell`, `raw` is split into words like a shell would
    /// (quotes, backslashes) but nothing is expanded or interpreted.
    pub fn parse(raw: &str, shell: bool) -> Result<Hook, String> {
        if raw.trim().is_empty() {
            return Err("empty hook command".into());
        }
        let argv = if shell {
            vec!["/bin/sh".into(), "-c".into(), raw.to_string()]
        } else {
            split_command(raw)?
        };
        Ok(Hook {
            raw: raw.to_string(),
            argv,
        })
    }
}

/// Shell-like word splitting without a shell; an empty command is an error.
pub(crate) fn split_command(cmd: &str) -> Result<Vec<String>, String> {
    let words =
        shell_words::split(cmd).map_err(|e| format!("cannot parse command {cmd:?}: {e}"))?;
    if words.is_empty() || words[0].is_empty() {
        return Err("empty command".into());
    }
    Ok(words)
}

/// Which hooks run, and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookConfig {
    /// `--notify`: every transition and every re-assert.
    pub notify: Option<Hook>,
    /// `--notify-master`, `--notify-backup`, `--notify-fault`: entering that state.
    pub master: Option<Hook>,
    pub backup: Option<Hook>,
    pub fault: Option<Hook>,
    /// `--hook-shell`: the commands were parsed for `/bin/sh -c` (kept for status output).
    pub shell: bool,
    pub timeout: Duration,
}

impl HookConfig {
    /// Build the configuration from the command-line strings.
    pub fn parse(
        notify: Option<&str>,
        master: Option<&str>,
        backup: Option<&str>,
        fault: Option<&str>,
        shell: bool,
        timeout: Duration,
    ) -> Result<HookConfig, String> {
        if timeout.is_zero() {
            return Err("--hook-timeout must be positive".into());
        }
        let one = |flag: &str, s: Option<&str>| {
            s.map(|s| Hook::parse(s, shell).map_err(|e| format!("--{flag}: {e}")))
                .transpose()
        };
        Ok(HookConfig {
            notify: one("notify", notify)?,
            master: one("notify-master", master)?,
            backup: one("notify-backup", backup)?,
            fault: one("notify-fault", fault)?,
            shell,
            timeout,
        })
    }

    fn is_empty(&self) -> bool {
        self.notify.is_none()
            && self.master.is_none()
            && self.backup.is_none()
            && self.fault.is_none()
    }

    /// The hooks an event runs, in order: `--notify` first, then the state's own hook. A
    /// re-assert runs `--notify` only: the state hooks mean "on becoming master/backup/fault",
    /// and one that restarts a service must not do so at every reconcile.
    fn for_event(&self, state: State, reassert: bool) -> Vec<(&'static str, &Hook)> {
        let specific = match state {
            _ if reassert => None,
            State::Master => self.master.as_ref().map(|h| ("notify-master", h)),
            State::Backup => self.backup.as_ref().map(|h| ("notify-backup", h)),
            State::Fault => self.fault.as_ref().map(|h| ("notify-fault", h)),
            State::Stop => None,
        };
        self.notify
            .as_ref()
            .map(|h| ("notify", h))
            .into_iter()
            .chain(specific)
            .collect()
    }
}

/// The state a hook is told about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    Master,
    Backup,
    Fault,
    /// The agent released the address because it is stopping.
    Stop,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Master => "MASTER",
            State::Backup => "BACKUP",
            State::Fault => "FAULT",
            State::Stop => "STOP",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One transition (or re-assert) of one address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookEvent {
    pub state: State,
    pub previous: Option<State>,
    pub address: IpAddr,
    pub reason: String,
    /// The peer involved (the new master, the one we took over from), if any.
    pub peer: Option<String>,
    pub epoch: Option<u64>,
    pub provider: String,
    /// This node's instance id.
    pub instance: String,
    /// The state did not change: a reconcile re-asserted it (runs `--notify` only).
    pub reassert: bool,
}

impl HookEvent {
    /// The variables the hook receives; absent optional values are not set at all.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("EXOIP_STATE", self.state.as_str().to_string()),
            ("EXOIP_ADDRESS", self.address.to_string()),
            ("EXOIP_REASON", self.reason.clone()),
            ("EXOIP_PROVIDER", self.provider.clone()),
            ("EXOIP_INSTANCE", self.instance.clone()),
            (
                "EXOIP_REASSERT",
                if self.reassert { "1" } else { "0" }.to_string(),
            ),
        ];
        if let Some(p) = self.previous {
            env.push(("EXOIP_PREVIOUS_STATE", p.as_str().to_string()));
        }
        if let Some(p) = &self.peer {
            env.push(("EXOIP_PEER", p.clone()));
        }
        if let Some(e) = self.epoch {
            env.push(("EXOIP_EPOCH", e.to_string()));
        }
        env
    }
}

/// The hook runner owned by the agent. Cheap to call; see the module documentation.
pub struct Hooks {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    cfg: HookConfig,
    queues: Mutex<HashMap<IpAddr, Arc<Queue>>>,
    runtime: tokio::runtime::Handle,
}

#[derive(Default)]
struct Queue {
    state: Mutex<QueueState>,
    wake: Notify,
}

#[derive(Default)]
struct QueueState {
    events: VecDeque<HookEvent>,
    /// An event's hooks are running now.
    busy: bool,
    dropped_total: u64,
    /// Dropped since the last warning.
    dropped_unreported: u64,
    last_warn: Option<Instant>,
}

/// Lock a mutex even if a panicking thread poisoned it: the data (queues, counters) stays
/// consistent under every operation we do, and hooks must keep working.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Hooks {
    /// Create the runner. Must be called inside a Tokio runtime (its workers are spawned there).
    pub fn new(cfg: HookConfig) -> Self {
        if cfg.is_empty() {
            return Hooks { inner: None };
        }
        Hooks {
            inner: Some(Arc::new(Inner {
                cfg,
                queues: Mutex::new(HashMap::new()),
                runtime: tokio::runtime::Handle::current(),
            })),
        }
    }

    /// Whether any hook is configured.
    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Queue an event; never blocks and never waits for a hook.
    pub fn fire(&self, ev: HookEvent) {
        let Some(inner) = &self.inner else { return };
        let queue = {
            let mut queues = lock(&inner.queues);
            match queues.get(&ev.address) {
                Some(q) => q.clone(),
                None => {
                    let q = Arc::new(Queue::default());
                    queues.insert(ev.address, q.clone());
                    inner.runtime.spawn(worker(inner.cfg.clone(), q.clone()));
                    q
                }
            }
        };
        let address = ev.address;
        {
            let mut st = lock(&queue.state);
            if st.events.len() >= QUEUE_LIMIT {
                st.events.pop_front();
                st.dropped_total += 1;
                st.dropped_unreported += 1;
                let now = Instant::now();
                let quiet = match st.last_warn {
                    Some(t) => now - t < DROP_WARN_EVERY,
                    None => false,
                };
                if !quiet {
                    warn!(
                        "{address}: hooks are falling behind: dropped {} oldest pending event(s) \
                         (at most {QUEUE_LIMIT} are kept)",
                        st.dropped_unreported
                    );
                    st.dropped_unreported = 0;
                    st.last_warn = Some(now);
                }
            }
            st.events.push_back(ev);
        }
        queue.wake.notify_one();
    }

    /// Events waiting for `address` (not counting the one running).
    pub fn pending(&self, address: IpAddr) -> usize {
        self.queue(address)
            .map(|q| lock(&q.state).events.len())
            .unwrap_or(0)
    }

    /// Events dropped for `address` because its queue was full, since the start.
    pub fn dropped(&self, address: IpAddr) -> u64 {
        self.queue(address)
            .map(|q| lock(&q.state).dropped_total)
            .unwrap_or(0)
    }

    /// Wait until every queued event has run, at most `max`; true if all are done. For a
    /// graceful stop, so the STOP hooks run before the process exits.
    pub async fn drain(&self, max: Duration) -> bool {
        let Some(inner) = &self.inner else {
            return true;
        };
        let deadline = Instant::now() + max;
        loop {
            let idle = lock(&inner.queues).values().all(|q| {
                let st = lock(&q.state);
                st.events.is_empty() && !st.busy
            });
            if idle {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            // Shutdown only: polling keeps the workers free of any extra signalling.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn queue(&self, address: IpAddr) -> Option<Arc<Queue>> {
        let inner = self.inner.as_ref()?;
        let queues = lock(&inner.queues);
        queues.get(&address).cloned()
    }
}

/// Runs the events of one address, one at a time, in order.
async fn worker(cfg: HookConfig, queue: Arc<Queue>) {
    loop {
        let next = {
            let mut st = lock(&queue.state);
            let ev = st.events.pop_front();
            st.busy = ev.is_some();
            ev
        };
        match next {
            Some(ev) => {
                run_event(&cfg, &ev).await;
                lock(&queue.state).busy = false;
            }
            // `notify_one` stores a permit when nobody waits, so an event queued between the
            // check above and this wait is not missed.
            None => queue.wake.notified().await,
        }
    }
}

async fn run_event(cfg: &HookConfig, ev: &HookEvent) {
    let env = ev.env();
    let ip = ev.address;
    for (name, hook) in cfg.for_event(ev.state, ev.reassert) {
        let started = Instant::now();
        let exit = run_bounded(&hook.argv, &env, cfg.timeout, |stream, line| match stream {
            Stream::Stdout => info!(hook = name, "{ip}: {name}: {line}"),
            Stream::Stderr => warn!(hook = name, "{ip}: {name}: {line}"),
        })
        .await;
        let took = started.elapsed();
        match exit {
            Exit::Status(s) if s.success() => {
                debug!(hook = name, "{ip}: {name} ({}) done in {took:?}", ev.state)
            }
            Exit::Status(s) => warn!(hook = name, "{ip}: {name} ({}) failed: {s}", ev.state),
            Exit::TimedOut => warn!(
                hook = name,
                "{ip}: {name} ({}) still running after {:?}: killed", ev.state, cfg.timeout
            ),
            Exit::SpawnFailed(e) => warn!(hook = name, "{ip}: {name} ({}): {e}", ev.state),
        }
    }
}

/// Where a line of a child's output came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stream {
    Stdout,
    Stderr,
}

/// How a bounded child run ended.
#[derive(Debug)]
pub(crate) enum Exit {
    Status(ExitStatus),
    /// Killed (with its process group) at the timeout.
    TimedOut,
    /// Could not be started (or waited for); the message names the program, not its arguments.
    SpawnFailed(String),
}

/// Kills a child's whole process group unless disarmed: on timeout, and if the run is
/// abandoned (its task aborted), so nothing it started keeps running.
struct GroupGuard(Option<i32>);

impl GroupGuard {
    fn kill(&mut self) {
        if let Some(pgid) = self.0.take() {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pgid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Run `argv` (no shell) in a new process group with stdin null, the secrets scrubbed from the
/// environment and `env` set, passing each output line to `on_line`, and kill the group if it
/// is still running after `timeout`.
pub(crate) async fn run_bounded(
    argv: &[String],
    env: &[(&'static str, String)],
    timeout: Duration,
    mut on_line: impl FnMut(Stream, String),
) -> Exit {
    let Some(program) = argv.first() else {
        return Exit::SpawnFailed("empty command".into());
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    for (name, _) in std::env::vars_os() {
        if is_secret_var(&name.to_string_lossy()) {
            cmd.env_remove(&name);
        }
    }
    for name in EVENT_VARS {
        cmd.env_remove(name);
    }
    for (name, value) in env {
        // A NUL byte cannot be in the environment (the spawn would fail): never lose the hook
        // over an odd reason string.
        cmd.env(name, value.replace('\0', " "));
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return Exit::SpawnFailed(format!("cannot run {program}: {e}")),
    };
    let mut group = GroupGuard(child.id().and_then(|p| i32::try_from(p).ok()));
    let (tx, mut lines) = mpsc::channel(16);
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        readers.push(tokio::spawn(read_lines(out, Stream::Stdout, tx.clone())));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(tokio::spawn(read_lines(err, Stream::Stderr, tx.clone())));
    }
    drop(tx);

    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut open = true;
    let exit = loop {
        tokio::select! {
            line = lines.recv(), if open => match line {
                Some((s, l)) => on_line(s, l),
                None => open = false,
            },
            status = child.wait() => break match status {
                Ok(s) => Exit::Status(s),
                Err(e) => Exit::SpawnFailed(format!("cannot wait for {program}: {e}")),
            },
            _ = &mut deadline => {
                group.kill();
                let _ = child.kill().await;
                break Exit::TimedOut;
            }
        }
    };
    // Exited normally: what it left in the background is the user's business (like keepalived).
    group.0 = None;

    let grace = tokio::time::sleep(OUTPUT_GRACE);
    tokio::pin!(grace);
    while open {
        tokio::select! {
            line = lines.recv() => match line {
                Some((s, l)) => on_line(s, l),
                None => open = false,
            },
            _ = &mut grace => break,
        }
    }
    for r in readers {
        r.abort();
    }
    exit
}

/// Read `r` to the end, sending at most `MAX_LINES` lines of at most `MAX_LINE_BYTES` each (then
/// one marker line) and discarding the rest, so the writer never blocks on a full pipe.
async fn read_lines<R: AsyncRead + Unpin>(
    mut r: R,
    stream: Stream,
    tx: mpsc::Sender<(Stream, String)>,
) {
    let mut chunk = [0u8; 4096];
    let mut line = Vec::new();
    let mut count = 0usize;
    loop {
        let n = match r.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for &b in &chunk[..n] {
            if b == b'\n' {
                send_line(&tx, stream, &mut line, &mut count).await;
            } else if line.len() < MAX_LINE_BYTES {
                line.push(b);
            }
        }
    }
    if !line.is_empty() {
        send_line(&tx, stream, &mut line, &mut count).await;
    }
}

async fn send_line(
    tx: &mpsc::Sender<(Stream, String)>,
    stream: Stream,
    line: &mut Vec<u8>,
    count: &mut usize,
) {
    *count += 1;
    let text = if *count <= MAX_LINES {
        String::from_utf8_lossy(line)
            .trim_end_matches('\r')
            .to_string()
    } else if *count == MAX_LINES + 1 {
        "(further output dropped)".to_string()
    } else {
        line.clear();
        return;
    };
    line.clear();
    // The receiver may be gone (the run is over): the caller keeps draining regardless.
    let _ = tx.send((stream, text)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names() {
        for n in [
            "EXOSCALE_API_SECRET",
            "IF_EXOSCALE_API_SECRET",
            "EXOIP_AUTH_KEY",
            "IF_EXOIP_AUTH_KEY",
            "OS_PASSWORD",
            "AZURE_CLIENT_SECRET",
            "github_token",
        ] {
            assert!(is_secret_var(n), "{n}");
        }
        for n in [
            "PATH",
            "HOME",
            "EXOSCALE_API_KEY",
            "EXOIP_STATE",
            "IF_ADDRESS",
        ] {
            assert!(!is_secret_var(n), "{n}");
        }
    }

    #[test]
    fn hook_parsing() {
        let h = Hook::parse("/usr/bin/logger -t exoip 'a b'", false).unwrap();
        assert_eq!(h.argv, ["/usr/bin/logger", "-t", "exoip", "a b"]);
        let h = Hook::parse("echo $EXOIP_STATE >> /tmp/x", true).unwrap();
        assert_eq!(h.argv, ["/bin/sh", "-c", "echo $EXOIP_STATE >> /tmp/x"]);
        assert!(Hook::parse("  ", false).is_err());
        assert!(Hook::parse("", true).is_err());
        assert!(Hook::parse("echo 'unterminated", false).is_err());
        let e = HookConfig::parse(None, Some("x '"), None, None, false, DEFAULT_HOOK_TIMEOUT)
            .unwrap_err();
        assert!(e.starts_with("--notify-master:"), "{e}");
        assert!(HookConfig::parse(None, None, None, None, false, Duration::ZERO).is_err());
    }

    #[test]
    fn notify_runs_first_then_the_state_hook() {
        let cfg = HookConfig::parse(
            Some("n"),
            Some("m"),
            None,
            Some("f"),
            false,
            DEFAULT_HOOK_TIMEOUT,
        )
        .unwrap();
        let names = |s, r| {
            cfg.for_event(s, r)
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
        };
        assert_eq!(names(State::Master, false), ["notify", "notify-master"]);
        assert_eq!(names(State::Backup, false), ["notify"]);
        assert_eq!(names(State::Fault, false), ["notify", "notify-fault"]);
        assert_eq!(names(State::Stop, false), ["notify"]);
        assert_eq!(names(State::Master, true), ["notify"]);
        assert_eq!(names(State::Fault, true), ["notify"]);
    }

    #[test]
    fn event_environment_omits_absent_values() {
        let mut ev = HookEvent {
            state: State::Master,
            previous: None,
            address: "192.0.2.10".parse().unwrap(),
            reason: "peer dead".into(),
            peer: None,
            epoch: None,
            provider: "exoscale".into(),
            instance: "i-1".into(),
            reassert: false,
        };
        let names = |ev: &HookEvent| ev.env().iter().map(|(k, _)| *k).collect::<Vec<_>>();
        let n = names(&ev);
        assert!(!n.contains(&"EXOIP_PEER") && !n.contains(&"EXOIP_EPOCH"));
        assert!(!n.contains(&"EXOIP_PREVIOUS_STATE"));
        ev.previous = Some(State::Backup);
        ev.peer = Some("node-b".into());
        ev.epoch = Some(7);
        ev.reassert = true;
        let env: HashMap<_, _> = ev.env().into_iter().collect();
        assert_eq!(env["EXOIP_PREVIOUS_STATE"], "BACKUP");
        assert_eq!(env["EXOIP_EPOCH"], "7");
        assert_eq!(env["EXOIP_REASSERT"], "1");
        assert_eq!(env["EXOIP_STATE"], "MASTER");
        // Every variable a hook can get is removed from the inherited environment first.
        for k in env.keys() {
            assert!(EVENT_VARS.contains(k), "{k}");
        }
    }

    #[tokio::test]
    async fn output_is_bounded_per_line_and_count() {
        let argv: Vec<String> = [
            "/bin/sh",
            "-c",
            "i=0; while [ $i -lt 300 ]; do echo line$i; i=$((i+1)); done; \
             head -c 5000 /dev/zero | tr '\\0' x >&2; echo >&2",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut out = Vec::new();
        let mut err = Vec::new();
        let exit = run_bounded(&argv, &[], Duration::from_secs(10), |s, l| match s {
            Stream::Stdout => out.push(l),
            Stream::Stderr => err.push(l),
        })
        .await;
        assert!(matches!(exit, Exit::Status(s) if s.success()), "{exit:?}");
        assert_eq!(out.len(), MAX_LINES + 1);
        assert_eq!(out[0], "line0");
        assert_eq!(out[MAX_LINES - 1], format!("line{}", MAX_LINES - 1));
        assert_eq!(out[MAX_LINES], "(further output dropped)");
        assert_eq!(err, ["x".repeat(MAX_LINE_BYTES)]);
    }

    #[tokio::test]
    async fn missing_program_is_reported_without_arguments() {
        let argv = vec!["/nonexistent/exoip-hook".to_string(), "--key=s3cr3t".into()];
        let exit = run_bounded(&argv, &[], Duration::from_secs(1), |_, _| {}).await;
        match exit {
            Exit::SpawnFailed(e) => {
                assert!(e.contains("/nonexistent/exoip-hook"), "{e}");
                assert!(!e.contains("s3cr3t"), "{e}");
            }
            other => panic!("{other:?}"),
        }
    }
}
