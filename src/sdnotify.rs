//! systemd's readiness protocol (sd_notify(3)) for `Type=notify` units: `READY=1` once the agent
//! knows its first state, `STATUS=` on role changes (shown by `systemctl status`), `STOPPING=1`
//! on a graceful stop, and `WATCHDOG=1` from the event loop, so that a stuck loop gets the
//! service restarted (`WatchdogSec=`).
//!
//! A thin wrapper over the `sd-notify` crate. Outside systemd (no `NOTIFY_SOCKET`) every call is
//! a no-op, so the agent calls it unconditionally. A failed notification is logged, never fatal:
//! systemd's own timeouts (`TimeoutStartSec=`, `WatchdogSec=`) deal with a manager we cannot
//! reach.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;
use tracing::{debug, warn};

/// Sends notifications to the service manager, if there is one.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    /// `NOTIFY_SOCKET` was set when the notifier was created.
    enabled: bool,
    /// `WatchdogSec=` of the unit, when it is set and meant for this process.
    watchdog: Option<Duration>,
    /// A failure was logged as a warning already: the next ones go to debug, so a watchdog
    /// ping every few seconds does not flood the log.
    warned: Arc<AtomicBool>,
}

impl Notifier {
    /// The notifier systemd asked for: `NOTIFY_SOCKET` (absent: no-op) and, for the watchdog,
    /// `WATCHDOG_USEC` when `WATCHDOG_PID` is absent or this process.
    pub fn from_env() -> Self {
        let enabled = std::env::var_os("NOTIFY_SOCKET").is_some_and(|s| !s.is_empty());
        // Without a socket there is nobody to ping; WATCHDOG_USEC=0 means no watchdog.
        let watchdog = sd_notify::watchdog_enabled().filter(|d| enabled && !d.is_zero());
        Notifier {
            enabled,
            watchdog,
            warned: Arc::default(),
        }
    }

    /// A notifier that sends nothing (tests, modes other than `-W`).
    pub fn disabled() -> Self {
        Notifier::default()
    }

    /// Whether a service manager listens.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// Startup is finished: `READY=1` with a first status line.
    pub fn ready(&self, status: &str) {
        let status = one_line(status);
        self.log_failure(
            "READY",
            self.send(&[NotifyState::Ready, NotifyState::Status(&status)]),
        );
    }

    /// A free-form status line for `systemctl status`, e.g. `203.0.113.10: master`.
    pub fn status(&self, text: &str) {
        let text = one_line(text);
        self.log_failure("STATUS", self.send(&[NotifyState::Status(&text)]));
    }

    /// The service is stopping (a graceful stop, handing over).
    pub fn stopping(&self) {
        self.log_failure("STOPPING", self.send(&[NotifyState::Stopping]));
    }

    /// Keep-alive for `WatchdogSec=`: `WATCHDOG=1`. Send it from the loop that must not get
    /// stuck, every [`Notifier::ping_interval`].
    pub fn watchdog(&self) {
        self.log_failure("WATCHDOG", self.send(&[NotifyState::Watchdog]));
    }

    /// The unit's watchdog timeout (`WatchdogSec=`), if it has one for this process: without a
    /// ping within it systemd kills the service (and restarts it, per `Restart=`).
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog
    }

    /// How often to ping: half the watchdog timeout, as sd_watchdog_enabled(3) recommends.
    pub fn ping_interval(&self) -> Option<Duration> {
        self.watchdog.map(|d| d / 2)
    }

    /// Sends these states in one datagram; `Ok` without doing anything outside systemd.
    pub fn send(&self, states: &[NotifyState<'_>]) -> io::Result<()> {
        if !self.enabled {
            return Ok(());
        }
        sd_notify::notify(states)
    }

    fn log_failure(&self, what: &str, result: io::Result<()>) {
        if let Err(e) = result {
            if self.warned.swap(true, Ordering::Relaxed) {
                debug!("cannot notify systemd ({what}): {e}");
            } else {
                warn!("cannot notify systemd ({what}): {e}; further failures are logged at debug level");
            }
        }
    }
}

/// A status line with its line breaks replaced: a newline would start a new assignment in the
/// datagram (text like "x\nREADY=1" must not make systemd think we are ready).
fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;
    use std::process::Command;

    /// The name of the test below, which the other tests run in a child process: the
    /// notifier reads the environment, and setting variables in this multi-threaded test
    /// process would race with the other tests.
    const CHILD: &str = "sdnotify::tests::child";

    /// Runs in a child with the environment under test (EXOIP_SDNOTIFY_CHILD says what to do).
    #[test]
    #[ignore = "run by the other sdnotify tests in a child process"]
    fn child() {
        let n = Notifier::from_env();
        match std::env::var("EXOIP_SDNOTIFY_CHILD").as_deref() {
            Ok("send") => {
                let wd = n
                    .watchdog_interval()
                    .map_or("none".to_string(), |d| d.as_micros().to_string());
                n.status(&format!("watchdog {wd}"));
                n.ready("203.0.113.10: backup");
                n.status("203.0.113.10: master\nREADY=1");
                n.watchdog();
                n.stopping();
            }
            Ok("disabled") => {
                assert!(!n.is_enabled());
                assert_eq!(n.watchdog_interval(), None);
                n.send(&[NotifyState::Ready]).expect("a no-op");
                n.ready("x");
                n.watchdog();
            }
            Ok("gone") => {
                assert!(n.is_enabled());
                assert!(n.send(&[NotifyState::Ready]).is_err());
                // Logged, not fatal.
                n.ready("x");
                n.watchdog();
                assert!(n.warned.load(Ordering::Relaxed));
            }
            other => panic!("EXOIP_SDNOTIFY_CHILD={other:?}"),
        }
    }

    /// Runs [`child`] through `sh`, so that `WATCHDOG_PID=self` can be its own pid (`exec`
    /// keeps the pid), and asserts it passed.
    fn run_child(mode: &str, notify_socket: Option<&std::path::Path>, watchdog_pid: &str) {
        let exe = std::env::current_exe().unwrap();
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(r#"if [ "$WD_PID" = self ]; then export WATCHDOG_PID=$$; elif [ -n "$WD_PID" ]; then export WATCHDOG_PID="$WD_PID"; fi; exec "$@""#)
            .arg("sh")
            .arg(exe)
            .args([CHILD, "--exact", "--ignored", "--test-threads=1", "--quiet"])
            .env("EXOIP_SDNOTIFY_CHILD", mode)
            .env("WD_PID", watchdog_pid)
            .env("WATCHDOG_USEC", "10000000")
            .env_remove("WATCHDOG_PID")
            .env_remove("NOTIFY_SOCKET");
        if let Some(path) = notify_socket {
            cmd.env("NOTIFY_SOCKET", path);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "child failed: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A socket standing in for systemd's, and everything the child sends to it.
    fn datagrams_of_child(watchdog_pid: &str) -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        run_child("send", Some(&path), watchdog_pid);
        // The child has exited: everything it sent is queued. Non-blocking reads until empty.
        sock.set_nonblocking(true).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = sock.recv(&mut buf) {
            got.push(String::from_utf8(buf[..n].to_vec()).unwrap());
        }
        got
    }

    #[test]
    fn sends_the_exact_datagrams() {
        assert_eq!(
            datagrams_of_child(""),
            [
                "STATUS=watchdog 10000000\n",
                "READY=1\nSTATUS=203.0.113.10: backup\n",
                // The newline is not a second assignment.
                "STATUS=203.0.113.10: master READY=1\n",
                "WATCHDOG=1\n",
                "STOPPING=1\n",
            ]
        );
    }

    #[test]
    fn watchdog_is_for_the_process_named_by_watchdog_pid() {
        let first = |pid| datagrams_of_child(pid).into_iter().next().unwrap();
        assert_eq!(first("self"), "STATUS=watchdog 10000000\n");
        // Meant for another process (e.g. a parent that forked us): not ours to feed.
        assert_eq!(first("1"), "STATUS=watchdog none\n");
    }

    #[test]
    fn without_notify_socket_everything_is_a_no_op() {
        run_child("disabled", None, "");
    }

    #[test]
    fn pings_at_half_the_watchdog_timeout() {
        let n = Notifier {
            enabled: true,
            watchdog: Some(Duration::from_secs(10)),
            warned: Arc::default(),
        };
        assert_eq!(n.ping_interval(), Some(Duration::from_secs(5)));
        assert_eq!(Notifier::disabled().ping_interval(), None);
        assert!(!Notifier::disabled().is_enabled());
    }

    #[test]
    fn a_manager_that_went_away_is_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        run_child("gone", Some(&dir.path().join("no-such.sock")), "");
    }
}
