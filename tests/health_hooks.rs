//! Health checks and notify hooks against real things on loopback: processes, scripts, TCP and
//! HTTP listeners, hook processes and their environment, ordering, timeouts and queue bounds.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use exoip::health::{self, CheckKind, CheckResult, CheckSpec};
use exoip::hooks::{HookConfig, HookEvent, Hooks, State, QUEUE_LIMIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// Log output captured from the current thread (tests run on a current-thread runtime, so the
/// hook workers log here too).
#[derive(Clone, Default)]
struct LogBuf(Arc<Mutex<Vec<u8>>>);

impl Write for LogBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogBuf {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

fn capture_logs() -> (LogBuf, tracing::subscriber::DefaultGuard) {
    let buf = LogBuf::default();
    let w = buf.clone();
    let sub = tracing_subscriber::fmt()
        .with_writer(move || w.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::DEBUG)
        .finish();
    (buf, tracing::subscriber::set_default(sub))
}

fn sh(script: &str) -> CheckKind {
    CheckKind::Script(vec!["/bin/sh".into(), "-c".into(), script.into()])
}

/// Alive means present and not a zombie (a killed grandchild may wait for init to reap it).
fn alive(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit_once(')')
                .map(|(_, r)| r.trim_start().chars().next());
            !matches!(state, Some(Some('Z' | 'X')))
        }
        Err(_) => false,
    }
}

async fn wait_for(what: &str, max: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < max, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn read_pids(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .split_whitespace()
        .map(String::from)
        .collect()
}

// ---- checks ----------------------------------------------------------------------------------

#[tokio::test]
async fn script_exit_status_decides() {
    let t = Duration::from_secs(5);
    assert_eq!(
        health::run_once(&CheckKind::Script(vec!["true".into()]), t).await,
        (true, None)
    );
    let (ok, detail) = health::run_once(&CheckKind::Script(vec!["false".into()]), t).await;
    assert!(!ok);
    assert_eq!(detail.as_deref(), Some("exit status: 1"));
    // The first line of stderr is the reason, even if stdout said something first.
    let (ok, detail) = health::run_once(
        &sh("echo fine; echo 'backend down' >&2; echo more >&2; exit 3"),
        t,
    )
    .await;
    assert!(!ok);
    assert_eq!(detail.as_deref(), Some("exit status: 3: backend down"));
    let (ok, detail) =
        health::run_once(&CheckKind::Script(vec!["/nonexistent/check".into()]), t).await;
    assert!(!ok);
    assert!(detail.unwrap().starts_with("cannot run /nonexistent/check"));
}

#[tokio::test]
async fn hung_script_is_killed_with_its_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().join("pids");
    let script = format!(
        "echo $$ > {p}; sleep 30 & echo $! >> {p}; wait",
        p = pids.display()
    );
    let start = Instant::now();
    let (ok, detail) = health::run_once(&sh(&script), Duration::from_millis(300)).await;
    let took = start.elapsed();
    assert!(!ok);
    assert_eq!(detail.as_deref(), Some("timed out after 300ms (killed)"));
    assert!(took < Duration::from_secs(3), "took {took:?}");
    let pids = read_pids(&pids);
    assert_eq!(pids.len(), 2, "{pids:?}");
    // The shell and the background sleep are both gone.
    wait_for(
        "the script's processes to die",
        Duration::from_secs(3),
        || !pids.iter().any(|p| alive(p)),
    )
    .await;
}

#[tokio::test]
async fn process_check_finds_running_processes_only() {
    let t = Duration::from_secs(2);
    let comm = std::fs::read_to_string("/proc/self/comm").unwrap();
    let comm = comm.trim_end().to_string();
    assert_eq!(
        health::run_once(&CheckKind::Process(comm), t).await,
        (true, None)
    );
    // The untruncated executable name matches too (comm keeps only 15 bytes).
    let exe = std::env::current_exe().unwrap();
    let base = exe.file_name().unwrap().to_str().unwrap().to_string();
    assert!(base.len() > 15, "{base}");
    assert_eq!(
        health::run_once(&CheckKind::Process(base), t).await,
        (true, None)
    );
    assert_eq!(
        health::run_once(&CheckKind::Process("exoip-no-such-proc".into()), t).await,
        (false, Some("no such process".into()))
    );
}

#[tokio::test]
async fn tcp_check_connects_or_fails() {
    let t = Duration::from_secs(2);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    assert_eq!(
        health::run_once(&CheckKind::Tcp(addr.clone()), t).await,
        (true, None)
    );
    drop(listener);
    let (ok, detail) = health::run_once(&CheckKind::Tcp(addr), t).await;
    assert!(!ok);
    assert!(detail.unwrap().starts_with("cannot connect"));
}

/// A tiny HTTP responder: `/ok` 200, `/bad` 500, `/moved` 302, `/hang` never answers.
async fn http_server() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut n = 0;
                while !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf[n..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(m) => n += m,
                    }
                }
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                let path = req.split_whitespace().nth(1).unwrap_or("").to_string();
                let head = match path.as_str() {
                    "/ok" => "200 OK",
                    "/bad" => "500 Internal Server Error",
                    "/moved" => "302 Found\r\nLocation: /ok",
                    _ => {
                        tokio::time::sleep(Duration::from_secs(60)).await;
                        return;
                    }
                };
                let resp =
                    format!("HTTP/1.1 {head}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn http_check_wants_2xx_in_time() {
    let addr = http_server().await;
    // Generous for the answers (a loaded CI machine), short for the one that never comes.
    let t = Duration::from_secs(3);
    let url = |p: &str| CheckKind::Http(format!("http://{addr}{p}"));
    assert_eq!(health::run_once(&url("/ok"), t).await, (true, None));
    assert_eq!(
        health::run_once(&url("/bad"), t).await,
        (false, Some("HTTP 500 Internal Server Error".into()))
    );
    // Redirects are not followed: a check must hit the health endpoint itself.
    assert_eq!(
        health::run_once(&url("/moved"), t).await,
        (false, Some("HTTP 302 Found".into()))
    );
    let start = Instant::now();
    let (ok, detail) = health::run_once(&url("/hang"), Duration::from_millis(300)).await;
    assert!(!ok, "{detail:?}");
    assert!(start.elapsed() < Duration::from_secs(2));
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = closed.local_addr().unwrap();
    drop(closed);
    let (ok, detail) = health::run_once(&CheckKind::Http(format!("http://{dead}/")), t).await;
    assert!(!ok);
    assert!(detail.unwrap().contains("onnect"));
}

#[tokio::test]
async fn spawned_checks_repeat_and_never_overlap() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace");
    let mut spec = CheckSpec::new(sh(&format!(
        "echo start >> {t}; sleep 0.25; echo end >> {t}",
        t = trace.display()
    )));
    // The check takes longer than its interval.
    spec.interval = Duration::from_millis(100);
    spec.timeout = Duration::from_secs(5);
    let name = spec.name.clone();
    let (tx, mut rx) = mpsc::channel::<CheckResult>(16);
    let tasks = health::spawn(vec![spec], tx);
    let mut results = Vec::new();
    while results.len() < 4 {
        let r = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("a result in time")
            .expect("channel open");
        results.push(r);
    }
    for t in &tasks {
        t.abort();
    }
    assert!(results
        .iter()
        .all(|r| r.ok && r.name == name && r.at_unix > 1.0e9));
    let text = std::fs::read_to_string(&trace).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() >= 8, "{lines:?}");
    for pair in lines.chunks(2) {
        if pair.len() == 2 {
            assert_eq!(pair, ["start", "end"], "runs overlapped: {lines:?}");
        }
    }
}

#[tokio::test]
async fn checks_end_when_the_receiver_is_gone() {
    let (tx, rx) = mpsc::channel::<CheckResult>(1);
    let mut spec = CheckSpec::new(CheckKind::Script(vec!["true".into()]));
    spec.interval = Duration::from_millis(20);
    let tasks = health::spawn(vec![spec], tx);
    drop(rx);
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(5), t)
            .await
            .expect("the task ends")
            .unwrap();
    }
}

// ---- hooks -----------------------------------------------------------------------------------

fn event(address: &str, state: State, reason: &str) -> HookEvent {
    HookEvent {
        state,
        previous: Some(State::Backup),
        address: address.parse::<IpAddr>().unwrap(),
        reason: reason.into(),
        peer: Some("node-b".into()),
        epoch: None,
        provider: "exoscale".into(),
        instance: "i-self".into(),
        reassert: false,
    }
}

fn shell_hooks(notify: &str, master: Option<&str>, timeout: Duration) -> Hooks {
    Hooks::new(HookConfig::parse(Some(notify), master, None, None, true, timeout).unwrap())
}

#[tokio::test]
async fn hook_environment_in_shell_mode() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let hooks = shell_hooks(
        &format!("env > {d}/notify.env"),
        Some(&format!("echo \"$EXOIP_STATE\" > {d}/master.ran")),
        Duration::from_secs(5),
    );
    let mut ev = event("192.0.2.10", State::Master, "peer node-b is dead");
    ev.epoch = Some(42);
    hooks.fire(ev);
    assert!(hooks.drain(Duration::from_secs(10)).await);
    let env = std::fs::read_to_string(dir.path().join("notify.env")).unwrap();
    for line in [
        "EXOIP_STATE=MASTER",
        "EXOIP_PREVIOUS_STATE=BACKUP",
        "EXOIP_ADDRESS=192.0.2.10",
        "EXOIP_REASON=peer node-b is dead",
        "EXOIP_PEER=node-b",
        "EXOIP_EPOCH=42",
        "EXOIP_PROVIDER=exoscale",
        "EXOIP_INSTANCE=i-self",
        "EXOIP_REASSERT=0",
    ] {
        assert!(env.lines().any(|l| l == line), "{line} missing in:\n{env}");
    }
    // The state's own hook ran as well.
    let master = std::fs::read_to_string(dir.path().join("master.ran")).unwrap();
    assert_eq!(master, "MASTER\n");
}

#[tokio::test]
async fn hook_output_goes_to_the_log_in_argv_mode() {
    let (logs, _guard) = capture_logs();
    let cfg = HookConfig::parse(
        Some("/usr/bin/env"),
        None,
        None,
        Some("/bin/sh -c 'echo \"went wrong: $EXOIP_REASON\" >&2; exit 3'"),
        false,
        Duration::from_secs(5),
    )
    .unwrap();
    let hooks = Hooks::new(cfg);
    let mut ev = event("2001:db8::7", State::Fault, "process:haproxy failed");
    ev.peer = None;
    ev.previous = None;
    hooks.fire(ev.clone());
    // A re-assert runs --notify only.
    ev.reassert = true;
    hooks.fire(ev);
    assert!(hooks.drain(Duration::from_secs(10)).await);
    let text = logs.text();
    let has = |level: &str, needle: &str| {
        text.lines()
            .any(|l| l.contains(level) && l.contains(needle))
    };
    assert!(
        has("INFO", "2001:db8::7: notify: EXOIP_STATE=FAULT"),
        "{text}"
    );
    assert!(has("INFO", "notify: EXOIP_REASSERT=0"), "{text}");
    assert!(has("INFO", "notify: EXOIP_REASSERT=1"), "{text}");
    // Absent values are not set at all.
    assert!(!text.contains("EXOIP_PEER="), "{text}");
    assert!(!text.contains("EXOIP_PREVIOUS_STATE="), "{text}");
    assert!(!text.contains("EXOIP_EPOCH="), "{text}");
    // stderr is a warning, and so is a non-zero exit.
    assert!(
        has("WARN", "notify-fault: went wrong: process:haproxy failed"),
        "{text}"
    );
    assert!(
        has("WARN", "notify-fault (FAULT) failed: exit status: 3"),
        "{text}"
    );
    assert_eq!(text.matches("went wrong").count(), 1, "{text}");
}

/// Runs only inside `secrets_never_reach_hooks_or_checks`, which starts this test binary again
/// with secrets in its environment: the environment is process-global, and changing it while
/// other tests spawn processes would race, so the secrets are given at exec time instead.
#[tokio::test]
#[ignore = "helper: run by secrets_never_reach_hooks_or_checks"]
async fn inner_scrub_child() {
    let Ok(out) = std::env::var("EXOIP_SCRUB_OUT") else {
        return;
    };
    let hooks = shell_hooks(
        &format!("env > {out}/hook.env"),
        None,
        Duration::from_secs(5),
    );
    hooks.fire(event("192.0.2.10", State::Backup, "test"));
    assert!(hooks.drain(Duration::from_secs(10)).await);
    let (ok, detail) = health::run_once(
        &sh(&format!("env > {out}/check.env")),
        Duration::from_secs(5),
    )
    .await;
    assert!(ok, "{detail:?}");
}

#[test]
fn secrets_never_reach_hooks_or_checks() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = [
        ("EXOSCALE_API_SECRET", "sekrit-api-1"),
        ("IF_EXOSCALE_API_SECRET", "sekrit-api-2"),
        ("EXOIP_AUTH_KEY", "sekrit-hb-key"),
        ("EXOIP_TEST_DB_PASSWORD", "sekrit-pw"),
        ("EXOIP_TEST_Token", "sekrit-token"),
    ];
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["inner_scrub_child", "--exact", "--ignored", "--nocapture"])
        .envs(secrets)
        .env("EXOIP_TEST_VISIBLE", "plain-value")
        // An inherited event variable must not stand in for an absent one.
        .env("EXOIP_EPOCH", "999")
        .env("EXOIP_SCRUB_OUT", dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("1 passed"), "{stdout}");
    for file in ["hook.env", "check.env"] {
        let env = std::fs::read_to_string(dir.path().join(file)).unwrap();
        assert!(
            env.contains("EXOIP_TEST_VISIBLE=plain-value"),
            "{file}: {env}"
        );
        assert!(!env.contains("EXOIP_EPOCH"), "{file}: {env}");
        for (name, value) in secrets {
            assert!(
                !env.contains(name) && !env.contains(value),
                "{file} has {name}"
            );
        }
    }
}

#[tokio::test]
async fn events_run_in_order_per_address_and_addresses_do_not_wait_for_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let hooks = shell_hooks(
        &format!(
            "if [ \"$EXOIP_REASON\" = hang ]; then sleep 30; fi; \
             sleep 0.02; echo \"$EXOIP_REASON\" >> {d}/$EXOIP_ADDRESS"
        ),
        None,
        Duration::from_secs(20),
    );
    let start = Instant::now();
    hooks.fire(event("192.0.2.1", State::Fault, "hang"));
    for i in 0..10 {
        hooks.fire(event("192.0.2.2", State::Master, &format!("r{i}")));
    }
    assert!(start.elapsed() < Duration::from_millis(100));
    let b = dir.path().join("192.0.2.2");
    wait_for(
        "the second address's hooks",
        Duration::from_secs(10),
        || std::fs::read_to_string(&b).is_ok_and(|s| s.lines().count() == 10),
    )
    .await;
    let expected: Vec<String> = (0..10).map(|i| format!("r{i}")).collect();
    assert_eq!(
        std::fs::read_to_string(&b)
            .unwrap()
            .lines()
            .collect::<Vec<_>>(),
        expected
    );
    // The first address is still stuck in its hook, and nobody waited for it.
    assert!(!dir.path().join("192.0.2.1").exists());
    assert!(!hooks.drain(Duration::from_millis(50)).await);
}

#[tokio::test]
async fn hung_hook_is_killed_and_the_queue_stays_bounded() {
    let (logs, _guard) = capture_logs();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let hooks = shell_hooks(
        &format!(
            "echo \"$EXOIP_REASON\" >> {d}/ran; \
             if [ \"$EXOIP_REASON\" = block ]; then sleep 30 & echo $$ $! > {d}/pids; wait; fi"
        ),
        None,
        Duration::from_secs(1),
    );
    let ip: IpAddr = "192.0.2.9".parse().unwrap();
    hooks.fire(event("192.0.2.9", State::Master, "block"));
    let pids_file = dir.path().join("pids");
    wait_for("the blocking hook", Duration::from_secs(5), || {
        read_pids(&pids_file).len() == 2
    })
    .await;
    let start = Instant::now();
    for i in 0..100 {
        hooks.fire(event("192.0.2.9", State::Backup, &format!("e{i}")));
    }
    assert!(
        start.elapsed() < Duration::from_millis(100),
        "fire() waited"
    );
    assert_eq!(hooks.pending(ip), QUEUE_LIMIT);
    assert_eq!(hooks.dropped(ip), 100 - QUEUE_LIMIT as u64);
    assert!(hooks.drain(Duration::from_secs(20)).await);
    let ran = std::fs::read_to_string(dir.path().join("ran")).unwrap();
    let mut expected = vec!["block".to_string()];
    expected.extend((100 - QUEUE_LIMIT..100).map(|i| format!("e{i}")));
    assert_eq!(ran.lines().collect::<Vec<_>>(), expected);
    let pids = read_pids(&pids_file);
    wait_for(
        "the hook's processes to die",
        Duration::from_secs(3),
        || !pids.iter().any(|p| alive(p)),
    )
    .await;
    let text = logs.text();
    assert!(
        text.contains("192.0.2.9: notify (MASTER) still running after 1s: killed"),
        "{text}"
    );
    // One warning for the whole burst of drops (rate-limited).
    assert_eq!(
        text.matches("hooks are falling behind").count(),
        1,
        "{text}"
    );
}
