//! Network namespaces and the processes inside them: unique names, `ip` invocations, sockets
//! created inside a namespace, children that die with us, and removal of crashed runs' leftovers.
//!
//! Every namespace this module names is `exoip-<pid>-<counter>-<role>`: the pid tells a later run
//! whether the owner is still alive, the counter keeps labs of one process apart.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Prefix of every namespace and temporary directory a lab creates.
pub const PREFIX: &str = "exoip-";

const NETNS_DIR: &str = "/run/netns";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Lab ids of this process that are alive, so that cleaning leftovers never touches them even
/// when a crashed earlier run had the same pid as we have now.
static LIVE: Mutex<Option<HashSet<String>>> = Mutex::new(None);

/// Reserves a new lab id `exoip-<pid>-<n>`; release it with [`release_id`] once its namespaces
/// are gone.
pub fn allocate_id() -> String {
    let id = format!(
        "{PREFIX}{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    LIVE.lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(HashSet::new)
        .insert(id.clone());
    id
}

pub fn release_id(id: &str) {
    if let Some(set) = LIVE.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
        set.remove(id);
    }
}

fn is_live_here(name: &str) -> bool {
    LIVE.lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .is_some_and(|set| set.iter().any(|id| owned_by(name, id)))
}

/// `exoip-12-3-r` and `exoip-12-3` (a temp dir) belong to lab `exoip-12-3`, `exoip-12-30-r` does not.
fn owned_by(name: &str, id: &str) -> bool {
    name == id
        || name
            .strip_prefix(id)
            .is_some_and(|rest| rest.starts_with('-'))
}

/// The pid in `exoip-<pid>-...`, if the name follows our scheme.
fn owner_pid(name: &str) -> Option<i32> {
    let rest = name.strip_prefix(PREFIX)?;
    let (pid, tail) = rest.split_once('-').unwrap_or((rest, ""));
    let pid: i32 = pid.parse().ok()?;
    let (counter, _) = tail.split_once('-').unwrap_or((tail, ""));
    counter.parse::<u32>().ok()?;
    Some(pid)
}

fn is_leftover(name: &str) -> bool {
    let Some(pid) = owner_pid(name) else {
        return false;
    };
    if pid as u32 == std::process::id() {
        // Our pid, but not one of our labs: a crashed run whose pid was recycled into us.
        return !is_live_here(name);
    }
    !Path::new(&format!("/proc/{pid}")).exists()
}

/// Namespaces currently present (`/run/netns`).
pub fn list_namespaces() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(NETNS_DIR) else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect()
}

/// Removes namespaces and temporary directories of earlier runs whose process is gone, killing
/// whatever still runs inside them. Returns the names removed.
pub fn cleanup_leftovers() -> Vec<String> {
    let mut removed = Vec::new();
    for ns in list_namespaces() {
        if ns.starts_with(PREFIX) && is_leftover(&ns) {
            delete_namespace(&ns);
            removed.push(ns);
        }
    }
    if let Ok(dir) = std::fs::read_dir(std::env::temp_dir()) {
        for entry in dir.flatten() {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let path = entry.path();
            // Only directories a lab marked as its own, and never those a user asked to keep.
            if name.starts_with(PREFIX)
                && path.join(LAB_MARKER).exists()
                && !path.join(KEEP_MARKER).exists()
                && is_leftover(&name)
                && std::fs::remove_dir_all(&path).is_ok()
            {
                removed.push(path.display().to_string());
            }
        }
    }
    removed
}

/// Marks a temporary directory as created by a lab (and so removable once its owner is gone).
pub const LAB_MARKER: &str = ".exoip-lab";
/// Marks a lab directory the user asked to keep.
pub const KEEP_MARKER: &str = ".exoip-lab-keep";

/// Pids of the processes whose network namespace is `ns`.
pub fn namespace_pids(ns: &str) -> Vec<i32> {
    match std::process::Command::new("ip")
        .args(["netns", "pids", ns])
        .stderr(std::process::Stdio::null())
        .output()
    {
        Ok(out) => String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Kills everything inside `ns`, then deletes it (its interfaces go with it). Synchronous, so
/// it also works from `Drop` and outside any runtime. Best effort: errors are not actionable here.
pub fn delete_namespace(ns: &str) {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let pids = namespace_pids(ns);
        if pids.is_empty() || Instant::now() > deadline {
            break;
        }
        for pid in pids {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = std::process::Command::new("ip")
        .args(["netns", "del", ns])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
}

/// Runs `ip ARGS...` and returns its stdout; a failure carries the command and ip's message.
pub async fn ip<I, S>(args: I) -> Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let shown = || {
        args.iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    };
    let out = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::process::Command::new("ip")
            .args(&args)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .with_context(|| format!("`ip {}` timed out", shown()))?
    .with_context(|| format!("cannot run `ip {}`", shown()))?;
    if !out.status.success() {
        bail!(
            "`ip {}` failed: {}",
            shown(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `f` on a fresh thread that has entered network namespace `ns`. Sockets created by `f`
/// stay in `ns` for their whole life, wherever they are used afterwards, so the lab can talk to
/// the simulated cloud or forge datagrams without spawning processes. `f` must not block long.
pub fn in_netns<T, F>(ns: &str, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> io::Result<T> + Send + 'static,
{
    let path = format!("{NETNS_DIR}/{ns}");
    let file = File::open(&path).with_context(|| format!("cannot open {path}"))?;
    std::thread::spawn(move || -> io::Result<T> {
        // Only this short-lived thread switches namespace; the rest of the process stays put.
        nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(io::Error::from)?;
        f()
    })
    .join()
    .map_err(|_| anyhow::anyhow!("thread inside namespace {ns} panicked"))?
    .with_context(|| format!("inside namespace {ns}"))
}

/// A command that runs `program` inside `ns` (via `ip netns exec`, which execs, so the child's
/// pid is the program's), with a clean environment plus `env`, its own process group (a Ctrl-C
/// meant for the lab does not reach it) and SIGKILL when the lab process dies, however it dies.
///
/// The kernel sends that SIGKILL when the *thread* that spawned the child exits: spawn from
/// async code (runtime threads live as long as the runtime), not from `spawn_blocking`, whose
/// idle threads go away after a while.
pub fn ns_command(
    ns: &str,
    program: &Path,
    args: &[String],
    env: &[(&str, &str)],
) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("ip");
    cmd.arg("netns").arg("exec").arg(ns).arg(program).args(args);
    cmd.env_clear();
    cmd.env(
        "PATH",
        std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into()),
    );
    for var in ["RUST_LOG", "RUST_BACKTRACE"] {
        if let Some(v) = std::env::var_os(var) {
            cmd.env(var, v);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(std::process::Stdio::null());
    cmd.process_group(0);
    cmd.kill_on_drop(true);
    let parent = std::process::id();
    // SAFETY: between fork and exec only async-signal-safe calls (prctl, getppid, _exit).
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(io::Error::from)?;
            // The parent may have died before prctl took effect: then nobody would kill us.
            if nix::unistd::getppid().as_raw() as u32 != parent {
                nix::libc::_exit(1);
            }
            Ok(())
        });
    }
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_pid_parses_only_our_scheme() {
        assert_eq!(owner_pid("exoip-123-4-r"), Some(123));
        assert_eq!(owner_pid("exoip-123-4"), Some(123));
        assert_eq!(owner_pid("exoip-123-4-h10"), Some(123));
        assert_eq!(owner_pid("exoip-alias-test"), None);
        assert_eq!(owner_pid("exoip-123-x-r"), None);
        assert_eq!(owner_pid("other-123-4"), None);
    }

    #[test]
    fn ownership_does_not_confuse_counters() {
        assert!(owned_by("exoip-12-3-r", "exoip-12-3"));
        assert!(owned_by("exoip-12-3", "exoip-12-3"));
        assert!(!owned_by("exoip-12-30-r", "exoip-12-3"));
    }

    #[test]
    fn ids_are_unique_and_protected_while_live() {
        let a = allocate_id();
        let b = allocate_id();
        assert_ne!(a, b);
        assert!(!is_leftover(&format!("{a}-r")));
        release_id(&a);
        // Same pid as ours but no longer live here: a recycled-pid leftover.
        assert!(is_leftover(&format!("{a}-r")));
        assert!(!is_leftover(&format!("{b}-h1")));
        release_id(&b);
    }
}
