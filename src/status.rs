//! The local status and control socket: the status document (JSON), the one-line protocol
//! over a Unix stream socket (server side for the agent, client side for `exoip status`,
//! `release`, `resume`, `promote`) and the human-readable report.
//!
//! Protocol: the client connects, writes one line (`status`, `release`, `resume` or
//! `promote`, at most [`MAX_LINE`] bytes, within [`READ_TIMEOUT`]) and reads one JSON line
//! back, then the server closes the connection:
//!
//! ```text
//! {"ok":true,"status":{...StatusSnapshot...}}
//! {"ok":true,"message":"..."}
//! {"ok":false,"error":"..."}
//! ```
//!
//! The socket is the access control: its file is mode 0600 (root only, like the agent), so
//! nothing it tells or accepts needs a further check. Secrets never appear in a snapshot.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// Where the agent listens unless told otherwise (`--status-socket`).
pub const DEFAULT_SOCKET: &str = "/run/exoip/exoip.sock";

/// The version of the status document; bumped only on an incompatible change (fields are
/// only ever added, never renamed or removed, within one version).
pub const STATUS_VERSION: u32 = 1;

/// Every value [`IpInfo::state`] can take (the election's role names).
pub const IP_STATES: [&str; 7] = [
    "init", "backup", "claiming", "master", "leaving", "stopped", "fault",
];

/// The longest command line accepted, newline excluded.
pub const MAX_LINE: usize = 256;

/// A client must have sent its command within this time, or it is answered with an error
/// and disconnected (so a silent client holds nothing for long).
pub const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// How long the server waits for the agent's answer to a request.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the server tries to write its answer to a client that does not read.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections served at once; more are closed at once (only root can connect, so this only
/// guards against a runaway script).
const MAX_CONNECTIONS: usize = 16;

/// The most the client reads as an answer (a status document is a few kilobytes).
const MAX_RESPONSE: u64 = 4 << 20;

/// How long the client waits for the whole exchange.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(15);

/// The status document: what the agent knows, as `exoip status --json` prints it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StatusSnapshot {
    /// [`STATUS_VERSION`].
    pub version: u32,
    pub node: NodeInfo,
    /// When the agent started (seconds since the Unix epoch).
    pub started_unix: f64,
    /// One entry per watched address, in configuration order.
    pub ips: Vec<IpInfo>,
    /// Every peer heard from or configured.
    pub peers: Vec<PeerInfo>,
    /// The tracked health checks.
    pub health: Vec<HealthInfo>,
    /// The last cloud API calls, most recent first, at most 20.
    pub api_calls: Vec<ApiCallInfo>,
    pub heartbeats: HeartbeatCounters,
    /// The operator's standing command: `"released"` or `"promoted"`; null when none.
    pub admin: Option<String>,
}

/// This node.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeInfo {
    /// The cloud's instance id.
    pub id: String,
    /// The instance's name (may equal the id when the cloud has no names).
    pub name: String,
    /// The provider in use (`exoscale`, `openstack`, `azure`, ...).
    pub provider: String,
    /// `api`: the API says who holds each address; `local` (OpenStack vip): the node holds it
    /// on its NIC and the API's `holders` are the nodes *allowed* to hold it.
    pub claim: crate::election::ClaimMode,
}

/// One watched address as this node sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct IpInfo {
    pub ip: IpAddr,
    /// One of [`IP_STATES`].
    pub state: String,
    /// Why the state last changed.
    pub reason: String,
    /// When the state last changed (seconds since the Unix epoch).
    pub state_since_unix: f64,
    /// The configured priority value (lower wins).
    pub priority: u8,
    /// The value in effect: configured, adjusted by signals, health-check weights or `promote`.
    pub effective_priority: u8,
    /// The node that should hold the address now per the election, if any is eligible.
    pub winner: Option<String>,
    /// The holders per the last successful API read; null before the first read.
    pub holders: Option<Vec<String>>,
    /// When the holders were last read (seconds since the Unix epoch).
    pub holders_checked_unix: Option<f64>,
    /// Time to the next reconcile with the API; null while none is scheduled (e.g. a call is
    /// in flight).
    pub next_reconcile_in_ms: Option<u64>,
    /// The newest claim epoch this node knows of (its own claims and its peers' heartbeats).
    #[serde(default)]
    pub epoch: u64,
    /// The claim recorded on the cloud resource per the last read (the arbiter), if the
    /// provider keeps one.
    #[serde(default)]
    pub record: Option<crate::election::Record>,
}

impl Default for IpInfo {
    fn default() -> Self {
        IpInfo {
            ip: IpAddr::from([0, 0, 0, 0]),
            state: String::new(),
            reason: String::new(),
            state_since_unix: 0.0,
            priority: 0,
            effective_priority: 0,
            winner: None,
            holders: None,
            holders_checked_unix: None,
            next_reconcile_in_ms: None,
            epoch: 0,
            record: None,
        }
    }
}

/// One peer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PeerInfo {
    /// The peer's instance id.
    pub id: String,
    /// Where its heartbeats come from / go to (`IP:PORT`), if known.
    pub address: Option<String>,
    /// Time since its last valid heartbeat.
    pub last_heard_ago_ms: u64,
    /// Heard within the dead period.
    pub alive: bool,
    /// Its last heartbeat said it is handing over.
    pub leaving: bool,
    /// One-way delay of its last heartbeat: our receive time minus its send time, so it
    /// includes the clock offset between the two hosts (can be negative).
    pub delay_ms: Option<i64>,
    /// Round-trip time, when measured.
    pub rtt_ms: Option<f64>,
    /// What it said about each address.
    pub ips: Vec<PeerIpInfo>,
}

/// A peer's view of one address, from its last heartbeat.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeerIpInfo {
    pub ip: IpAddr,
    pub state: String,
    /// Its effective priority value.
    pub priority: u8,
}

/// One tracked health check.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HealthInfo {
    /// The check as configured (command, process name, `HOST:PORT`, URL).
    pub name: String,
    /// `script`, `process`, `tcp` or `http`.
    pub kind: String,
    /// Its current verdict (after the fall/rise counts).
    pub ok: bool,
    /// Added to the priority value while failing; null: failing puts the node in fault.
    pub weight: Option<u8>,
    pub consecutive_failures: u32,
    pub last_error: Option<String>,
    /// When it last ran (seconds since the Unix epoch).
    pub last_run_unix: Option<f64>,
}

/// One cloud API call.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ApiCallInfo {
    /// When it finished (seconds since the Unix epoch).
    pub at_unix: f64,
    /// The operation (`whoami`, `peers`, `holders`, `attach`, `detach`).
    pub op: String,
    pub ip: Option<IpAddr>,
    pub ok: bool,
    pub latency_ms: f64,
    pub error: Option<String>,
}

/// Heartbeat counters since start.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HeartbeatCounters {
    pub sent: u64,
    pub received: u64,
    /// Dropped datagrams by reason.
    pub dropped: BTreeMap<String, u64>,
}

/// Seconds since the Unix epoch now, the unit of every `*_unix` field.
pub fn unix_now() -> f64 {
    unix_seconds(SystemTime::now())
}

/// Seconds since the Unix epoch at `t` (negative before it).
pub fn unix_seconds(t: SystemTime) -> f64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

// ---------------------------------------------------------------------------------------------
// Protocol

/// An answer on the socket.
#[derive(Clone, Debug, PartialEq)]
pub enum Response {
    /// `{"ok":true,"status":{...}}`
    Status(Box<StatusSnapshot>),
    /// `{"ok":true,"message":"..."}`
    Message(String),
    /// `{"ok":false,"error":"..."}`
    Error(String),
}

#[derive(Serialize)]
struct WireOut<'a> {
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'a StatusSnapshot>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

#[derive(Deserialize)]
struct WireIn {
    ok: bool,
    #[serde(default)]
    status: Option<StatusSnapshot>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

impl Response {
    /// The answer as one JSON line, newline included.
    pub fn to_line(&self) -> String {
        let out = match self {
            Response::Status(s) => WireOut {
                ok: true,
                status: Some(s),
                message: None,
                error: None,
            },
            Response::Message(m) => WireOut {
                ok: true,
                status: None,
                message: Some(m),
                error: None,
            },
            Response::Error(e) => WireOut {
                ok: false,
                status: None,
                message: None,
                error: Some(e),
            },
        };
        // Serializing these plain types cannot fail (string keys, finite structure); the
        // fallback keeps the protocol answering rather than panicking if it ever did.
        let mut line = serde_json::to_string(&out)
            .unwrap_or_else(|_| r#"{"ok":false,"error":"cannot encode the answer"}"#.to_string());
        line.push('\n');
        line
    }

    /// Parses one answer line.
    pub fn from_line(line: &str) -> Result<Response, String> {
        let w: WireIn = serde_json::from_str(line.trim_end()).map_err(|e| e.to_string())?;
        match (w.ok, w.status, w.message, w.error) {
            (true, Some(s), _, _) => Ok(Response::Status(Box::new(s))),
            (true, None, Some(m), _) => Ok(Response::Message(m)),
            (true, None, None, _) => Err("\"ok\" answer without status or message".into()),
            (false, _, _, e) => Ok(Response::Error(
                e.unwrap_or_else(|| "unspecified error".into()),
            )),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Server

/// A request from the socket to the agent, answered through the enclosed channel.
#[derive(Debug)]
pub enum ControlRequest {
    /// `status`: the current snapshot.
    Status(oneshot::Sender<StatusSnapshot>),
    /// `release`: hand over now and stay backup until `resume`. `Ok` carries a message for
    /// the operator, `Err` why it was refused.
    Release(oneshot::Sender<Result<String, String>>),
    /// `resume`: undo `release` or `promote`.
    Resume(oneshot::Sender<Result<String, String>>),
    /// `promote`: take the addresses now (priority value 1) until `resume`.
    Promote(oneshot::Sender<Result<String, String>>),
}

/// The running socket server. Dropping it stops accepting and removes the socket file
/// (if it is still the one this server created).
#[derive(Debug)]
pub struct StatusServer {
    path: PathBuf,
    /// (device, inode) of the socket file we bound, so Drop never removes a successor's.
    ident: (u64, u64),
    task: JoinHandle<()>,
}

impl StatusServer {
    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for StatusServer {
    fn drop(&mut self) {
        self.task.abort();
        if let Ok(m) = std::fs::symlink_metadata(&self.path) {
            if m.file_type().is_socket() && (m.dev(), m.ino()) == self.ident {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

/// Binds the control socket at `path` and serves it, forwarding requests to `tx`.
///
/// Creates the parent directory (mode 0755) if missing; replaces a stale socket file left by
/// a dead agent, but refuses to start when a live one answers there, and never removes
/// anything that is not a socket. The file is mode 0600 before the socket accepts anything.
pub async fn serve(path: &Path, tx: mpsc::Sender<ControlRequest>) -> io::Result<StatusServer> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(parent)
                .map_err(|e| annotate(e, &format!("cannot create {}", parent.display())))?;
        }
    }
    remove_stale(path).await?;
    let listener = bind_private(path)?;
    let meta = std::fs::symlink_metadata(path)?;
    let ident = (meta.dev(), meta.ino());
    let task = tokio::spawn(accept_loop(listener, tx));
    Ok(StatusServer {
        path: path.to_path_buf(),
        ident,
        task,
    })
}

/// Removes a socket file nobody listens on; errors if a live agent answers or if the path is
/// something else than a socket.
async fn remove_stale(path: &Path) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(annotate(e, &format!("cannot inspect {}", path.display()))),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} exists and is not a socket; not replacing it",
                path.display()
            ),
        ));
    }
    match timeout(Duration::from_secs(1), UnixStream::connect(path)).await {
        Ok(Ok(_)) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("another exoip is already running on {}", path.display()),
        )),
        // Nobody listens: the file is left over from an agent that died.
        Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => std::fs::remove_file(path)
            .map_err(|e| annotate(e, &format!("cannot remove stale socket {}", path.display()))),
        Ok(Err(e)) => Err(annotate(
            e,
            &format!("cannot tell whether {} is in use", path.display()),
        )),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "{} is in use (a connection attempt hung); is another exoip running?",
                path.display()
            ),
        )),
    }
}

/// bind, chmod 0600, then listen: a connection can only be made once the mode is set
/// (connecting to a bound socket that does not listen yet is refused), so there is no window
/// in which the umask's mode lets others in.
fn bind_private(path: &Path) -> io::Result<UnixListener> {
    use socket2::{Domain, SockAddr, Socket, Type};
    let ctx = |e: io::Error| annotate(e, &format!("cannot bind {}", path.display()));
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None).map_err(ctx)?;
    socket
        .bind(&SockAddr::unix(path).map_err(ctx)?)
        .map_err(ctx)?;
    let fail = |e: io::Error| {
        let _ = std::fs::remove_file(path);
        annotate(e, &format!("cannot set up {}", path.display()))
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(fail)?;
    socket.listen(64).map_err(fail)?;
    socket.set_nonblocking(true).map_err(fail)?;
    UnixListener::from_std(std::os::unix::net::UnixListener::from(socket)).map_err(fail)
}

async fn accept_loop(listener: UnixListener, tx: mpsc::Sender<ControlRequest>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                // Over the limit the stream is dropped, which closes it: the client sees EOF.
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    tracing::debug!("status socket: too many connections, closing one");
                    continue;
                };
                let tx = tx.clone();
                tokio::spawn(async move {
                    handle_connection(stream, tx).await;
                    drop(permit);
                });
            }
            Err(e) => {
                // E.g. out of file descriptors: pause instead of spinning.
                tracing::warn!(error = %e, "status socket: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

enum ReadError {
    TooLong,
    Io(io::Error),
}

/// Reads one line of at most [`MAX_LINE`] bytes (newline excluded); a last line without a
/// newline before EOF counts.
async fn read_command<R: AsyncRead + Unpin>(reader: R) -> Result<String, ReadError> {
    let mut buf = Vec::with_capacity(64);
    let mut limited = BufReader::new(reader).take(MAX_LINE as u64 + 1);
    limited
        .read_until(b'\n', &mut buf)
        .await
        .map_err(ReadError::Io)?;
    if buf.last() == Some(&b'\n') {
        buf.pop();
    } else if buf.len() > MAX_LINE {
        return Err(ReadError::TooLong);
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

async fn handle_connection(stream: UnixStream, tx: mpsc::Sender<ControlRequest>) {
    let (reader, mut writer) = stream.into_split();
    let response = match timeout(READ_TIMEOUT, read_command(reader)).await {
        Err(_) => Response::Error(format!("no command within {} s", READ_TIMEOUT.as_secs())),
        Ok(Err(ReadError::TooLong)) => {
            Response::Error(format!("command too long (more than {MAX_LINE} bytes)"))
        }
        Ok(Err(ReadError::Io(e))) => {
            tracing::debug!(error = %e, "status socket: read failed");
            return;
        }
        Ok(Ok(line)) => dispatch(line.trim(), &tx).await,
    };
    let line = response.to_line();
    let written = timeout(WRITE_TIMEOUT, async {
        writer.write_all(line.as_bytes()).await?;
        writer.shutdown().await
    })
    .await;
    if let Ok(Err(e)) = written {
        tracing::debug!(error = %e, "status socket: write failed");
    }
}

async fn dispatch(command: &str, tx: &mpsc::Sender<ControlRequest>) -> Response {
    let admin = |r: Result<Result<String, String>, String>| match r {
        Ok(Ok(m)) => Response::Message(m),
        Ok(Err(e)) | Err(e) => Response::Error(e),
    };
    match command {
        "status" => match ask(tx, ControlRequest::Status).await {
            Ok(s) => Response::Status(Box::new(s)),
            Err(e) => Response::Error(e),
        },
        "release" => admin(ask(tx, ControlRequest::Release).await),
        "resume" => admin(ask(tx, ControlRequest::Resume).await),
        "promote" => admin(ask(tx, ControlRequest::Promote).await),
        _ => Response::Error("unknown command".into()),
    }
}

/// Sends one request to the agent and waits for its answer, within [`REPLY_TIMEOUT`].
async fn ask<T>(
    tx: &mpsc::Sender<ControlRequest>,
    make: impl FnOnce(oneshot::Sender<T>) -> ControlRequest,
) -> Result<T, String> {
    let (reply, answer) = oneshot::channel();
    let exchange = async {
        tx.send(make(reply))
            .await
            .map_err(|_| "the agent is shutting down".to_string())?;
        answer
            .await
            .map_err(|_| "the agent dropped the request".to_string())
    };
    match timeout(REPLY_TIMEOUT, exchange).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "the agent did not answer within {} s",
            REPLY_TIMEOUT.as_secs()
        )),
    }
}

fn annotate(e: io::Error, context: &str) -> io::Error {
    io::Error::new(e.kind(), format!("{context}: {e}"))
}

// ---------------------------------------------------------------------------------------------
// Client

/// Why a request on the socket failed (the agent's own refusals are [`Response::Error`]).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {}: is exoip -W running? ({source})", .path.display())]
    Connect { path: PathBuf, source: io::Error },
    #[error(
        "cannot connect to {}: permission denied (the socket is mode 0600, for root; try sudo)",
        .path.display()
    )]
    PermissionDenied { path: PathBuf },
    #[error("no answer from the agent on {} within {} s", .path.display(), CLIENT_TIMEOUT.as_secs())]
    Timeout { path: PathBuf },
    #[error("lost the connection to the agent on {}: {source}", .path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("the agent on {} gave an answer that is not understood: {detail}", .path.display())]
    BadResponse { path: PathBuf, detail: String },
    #[error("invalid command {0:?} (one line of at most {MAX_LINE} bytes)")]
    InvalidCommand(String),
}

/// Sends `command` to the agent listening on `path` and returns its answer.
pub async fn request(path: &Path, command: &str) -> Result<Response, ClientError> {
    if command.contains(['\n', '\r']) || command.len() > MAX_LINE {
        return Err(ClientError::InvalidCommand(command.to_string()));
    }
    match timeout(CLIENT_TIMEOUT, exchange(path, command)).await {
        Ok(r) => r,
        Err(_) => Err(ClientError::Timeout {
            path: path.to_path_buf(),
        }),
    }
}

async fn exchange(path: &Path, command: &str) -> Result<Response, ClientError> {
    let mut stream = UnixStream::connect(path).await.map_err(|source| {
        if source.kind() == io::ErrorKind::PermissionDenied {
            ClientError::PermissionDenied {
                path: path.to_path_buf(),
            }
        } else {
            ClientError::Connect {
                path: path.to_path_buf(),
                source,
            }
        }
    })?;
    let io_err = |source| ClientError::Io {
        path: path.to_path_buf(),
        source,
    };
    stream
        .write_all(format!("{command}\n").as_bytes())
        .await
        .map_err(io_err)?;
    let mut buf = Vec::new();
    BufReader::new(stream)
        .take(MAX_RESPONSE)
        .read_until(b'\n', &mut buf)
        .await
        .map_err(io_err)?;
    let bad = |detail: String| ClientError::BadResponse {
        path: path.to_path_buf(),
        detail,
    };
    if buf.is_empty() {
        return Err(bad("the connection closed without an answer".into()));
    }
    let line = std::str::from_utf8(&buf).map_err(|e| bad(e.to_string()))?;
    Response::from_line(line).map_err(bad)
}

/// `exoip status [--json] [--socket PATH]`.
#[derive(clap::Args, Debug, Clone)]
pub struct StatusArgs {
    /// Print the status document as JSON instead of the report.
    #[arg(long)]
    pub json: bool,
    /// The agent's status socket.
    #[arg(
        long,
        value_name = "PATH",
        env = "EXOIP_STATUS_SOCKET",
        default_value = DEFAULT_SOCKET
    )]
    pub socket: PathBuf,
}

/// `exoip release|resume|promote [--socket PATH]`.
#[derive(clap::Args, Debug, Clone)]
pub struct ControlArgs {
    /// The agent's status socket.
    #[arg(
        long,
        value_name = "PATH",
        env = "EXOIP_STATUS_SOCKET",
        default_value = DEFAULT_SOCKET
    )]
    pub socket: PathBuf,
}

/// Prints the running agent's status (the report, or the JSON document with `--json`).
pub async fn run_status(args: StatusArgs) -> anyhow::Result<()> {
    match request(&args.socket, "status").await? {
        Response::Status(s) if args.json => println!("{}", serde_json::to_string_pretty(&s)?),
        Response::Status(s) => print!("{}", render_human(&s)),
        Response::Error(e) => anyhow::bail!("the agent refused: {e}"),
        Response::Message(m) => anyhow::bail!("unexpected answer from the agent: {m}"),
    }
    Ok(())
}

/// Sends `release`, `resume` or `promote` and prints the agent's answer.
pub async fn run_control(command: &str, args: ControlArgs) -> anyhow::Result<()> {
    if !matches!(command, "release" | "resume" | "promote") {
        anyhow::bail!("unknown control command {command:?}");
    }
    match request(&args.socket, command).await? {
        Response::Message(m) => println!("{m}"),
        Response::Error(e) => anyhow::bail!("the agent refused {command}: {e}"),
        Response::Status(_) => anyhow::bail!("unexpected answer from the agent to {command}"),
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Human-readable report

/// The report `exoip status` prints: per address, then peers, checks, API calls, heartbeats.
pub fn render_human(s: &StatusSnapshot) -> String {
    render_human_at(s, unix_now())
}

/// [`render_human`] with "now" given, so ages are reproducible in tests.
fn render_human_at(s: &StatusSnapshot, now: f64) -> String {
    let mut out = String::new();
    let node = if s.node.name.is_empty() || s.node.name == s.node.id {
        clean(&s.node.id)
    } else {
        format!("{} ({})", clean(&s.node.name), clean(&s.node.id))
    };
    let _ = writeln!(
        out,
        "exoip on {node}, provider {}, up {}",
        clean(&s.node.provider),
        age(now - s.started_unix)
    );
    match s.admin.as_deref() {
        Some("released") => {
            let _ = writeln!(
                out,
                "ADMIN: released by the operator: staying backup until `exoip resume`"
            );
        }
        Some("promoted") => {
            let _ = writeln!(
                out,
                "ADMIN: promoted by the operator: priority value 1 until `exoip resume`"
            );
        }
        Some(other) => {
            let _ = writeln!(out, "ADMIN: {}", clean(other));
        }
        None => {}
    }

    if s.ips.is_empty() {
        let _ = writeln!(out, "\nno address watched");
    }
    for ip in &s.ips {
        let _ = writeln!(
            out,
            "\n{}: {} since {} ({} ago): {}",
            ip.ip,
            clean(&ip.state).to_uppercase(),
            timestamp(ip.state_since_unix),
            age(now - ip.state_since_unix),
            clean(&ip.reason)
        );
        let priority = if ip.effective_priority == ip.priority {
            format!("priority {}", ip.priority)
        } else {
            format!(
                "priority {} (effective {})",
                ip.priority, ip.effective_priority
            )
        };
        let winner = ip
            .winner
            .as_deref()
            .map_or("none eligible".to_string(), clean);
        let _ = writeln!(out, "  {priority}; election winner: {winner}");
        let holders = match &ip.holders {
            None => "not read yet".to_string(),
            Some(h) if h.is_empty() => "nobody".to_string(),
            Some(h) => h.iter().map(|x| clean(x)).collect::<Vec<_>>().join(", "),
        };
        let checked = ip.holders_checked_unix.map_or(String::new(), |t| {
            format!(" (checked {} ago)", age(now - t))
        });
        let next = ip
            .next_reconcile_in_ms
            .map_or("not scheduled".to_string(), |ms| {
                format!("in {}", age(ms as f64 / 1000.0))
            });
        let what = match s.node.claim {
            crate::election::ClaimMode::Api => "holders per the API",
            crate::election::ClaimMode::Local => "allowed to hold per the API",
            crate::election::ClaimMode::LocalOnly => "API not used for this address",
        };
        let _ = writeln!(out, "  {what}: {holders}{checked}; next reconcile {next}");
        let record = ip.record.as_ref().map_or("none".to_string(), |r| {
            format!("epoch {} by {}", r.epoch, clean(&r.holder))
        });
        let _ = writeln!(
            out,
            "  claim epoch known: {}; recorded on the cloud: {record}",
            ip.epoch
        );
    }

    let _ = writeln!(out, "\nPeers:");
    if s.peers.is_empty() {
        let _ = writeln!(out, "  none heard from");
    } else {
        let mut rows = vec![row(&[
            "PEER",
            "ADDRESS",
            "LAST HEARD",
            "ALIVE",
            "DELAY",
            "RTT",
            "ADDRESSES (state/priority)",
        ])];
        for p in &s.peers {
            let alive = match (p.alive, p.leaving) {
                (true, true) => "leaving",
                (true, false) => "yes",
                (false, _) => "no",
            };
            let ips = p
                .ips
                .iter()
                .map(|e| format!("{} {}/{}", e.ip, clean(&e.state), e.priority))
                .collect::<Vec<_>>()
                .join(", ");
            rows.push(vec![
                clean(&p.id),
                p.address.as_deref().map_or("-".into(), clean),
                format!("{} ago", age(p.last_heard_ago_ms as f64 / 1000.0)),
                alive.into(),
                p.delay_ms.map_or("-".into(), |d| format!("{d}ms")),
                p.rtt_ms.map_or("-".into(), |r| format!("{r:.1}ms")),
                if ips.is_empty() { "-".into() } else { ips },
            ]);
        }
        table(&mut out, &rows);
    }

    let _ = writeln!(out, "\nHealth checks:");
    if s.health.is_empty() {
        let _ = writeln!(out, "  none configured");
    } else {
        let mut rows = vec![row(&[
            "CHECK",
            "KIND",
            "STATE",
            "ON FAILURE",
            "FAILURES",
            "LAST RUN",
            "LAST ERROR",
        ])];
        for h in &s.health {
            rows.push(vec![
                clean(&h.name),
                clean(&h.kind),
                if h.ok { "ok" } else { "FAILING" }.into(),
                h.weight
                    .map_or("fault".into(), |w| format!("priority +{w}")),
                h.consecutive_failures.to_string(),
                h.last_run_unix
                    .map_or("never".into(), |t| format!("{} ago", age(now - t))),
                h.last_error.as_deref().map_or("-".into(), clean),
            ]);
        }
        table(&mut out, &rows);
    }

    let _ = writeln!(out, "\nLast API calls (most recent first):");
    if s.api_calls.is_empty() {
        let _ = writeln!(out, "  none yet");
    } else {
        let mut rows = vec![row(&[
            "WHEN",
            "OPERATION",
            "ADDRESS",
            "RESULT",
            "LATENCY",
            "ERROR",
        ])];
        for c in &s.api_calls {
            rows.push(vec![
                format!("{} ago", age(now - c.at_unix)),
                clean(&c.op),
                c.ip.map_or("-".into(), |ip| ip.to_string()),
                if c.ok { "ok" } else { "FAILED" }.into(),
                format!("{:.1}ms", c.latency_ms),
                c.error.as_deref().map_or("-".into(), clean),
            ]);
        }
        table(&mut out, &rows);
    }

    let dropped: u64 = s.heartbeats.dropped.values().sum();
    let detail = if s.heartbeats.dropped.is_empty() {
        String::new()
    } else {
        let parts = s
            .heartbeats
            .dropped
            .iter()
            .map(|(k, v)| format!("{} {v}", clean(k)))
            .collect::<Vec<_>>()
            .join(", ");
        format!(" ({parts})")
    };
    let _ = writeln!(
        out,
        "\nHeartbeats: sent {}, received {}, dropped {dropped}{detail}",
        s.heartbeats.sent, s.heartbeats.received
    );
    out
}

fn row(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|c| c.to_string()).collect()
}

/// Writes rows as left-aligned columns, indented by two spaces.
fn table(out: &mut String, rows: &[Vec<String>]) {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in rows {
        let mut line = String::from(" ");
        for (i, cell) in r.iter().enumerate() {
            let pad = widths[i].saturating_sub(cell.chars().count());
            line.push(' ');
            line.push_str(cell);
            if i + 1 < r.len() {
                line.push_str(&" ".repeat(pad + 1));
            }
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
}

/// Strings from the network or the cloud may hold control characters: escape them so the
/// report cannot move the cursor or rewrite the terminal.
fn clean(s: &str) -> String {
    if s.chars().any(char::is_control) {
        s.chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect()
    } else {
        s.to_string()
    }
}

/// A Unix time as RFC 3339 (UTC, seconds), or `-` when unset or out of range.
fn timestamp(unix: f64) -> String {
    if !unix.is_finite() || unix <= 0.0 || unix > 1e11 {
        return "-".into();
    }
    let t = UNIX_EPOCH + Duration::from_secs_f64(unix);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// A duration in seconds, short and rounded for reading (`850ms`, `4.2s`, `3m 02s`,
/// `5h 07m`, `2d 03h`); negative ones (clock skew) read as `0ms`.
fn age(seconds: f64) -> String {
    if !seconds.is_finite() || seconds <= 0.0 {
        return "0ms".into();
    }
    if seconds < 1.0 {
        return format!("{}ms", (seconds * 1000.0).round() as u64);
    }
    if seconds < 60.0 {
        return format!("{seconds:.1}s");
    }
    let s = seconds as u64;
    match s {
        0..=3599 => format!("{}m {:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const IP: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 10));
    const NOW: f64 = 1_700_000_000.0;

    fn sample() -> StatusSnapshot {
        StatusSnapshot {
            version: STATUS_VERSION,
            node: NodeInfo {
                id: "i-0001".into(),
                name: "web-1".into(),
                provider: "exoscale".into(),
                claim: Default::default(),
            },
            started_unix: NOW - 7_384.0,
            ips: vec![IpInfo {
                ip: IP,
                state: "master".into(),
                reason: "attached".into(),
                state_since_unix: NOW - 182.0,
                priority: 10,
                effective_priority: 12,
                winner: Some("i-0001".into()),
                holders: Some(vec!["i-0001".into()]),
                holders_checked_unix: Some(NOW - 12.0),
                next_reconcile_in_ms: Some(48_000),
                epoch: 7,
                record: Some(crate::election::Record {
                    epoch: 7,
                    holder: "i-0001".into(),
                }),
            }],
            peers: vec![PeerInfo {
                id: "i-0002".into(),
                address: Some("192.0.2.2:12345".into()),
                last_heard_ago_ms: 400,
                alive: true,
                leaving: false,
                delay_ms: Some(-3),
                rtt_ms: Some(0.84),
                ips: vec![PeerIpInfo {
                    ip: IP,
                    state: "backup".into(),
                    priority: 20,
                }],
            }],
            health: vec![HealthInfo {
                name: "nginx".into(),
                kind: "process".into(),
                ok: false,
                weight: Some(2),
                consecutive_failures: 3,
                last_error: Some("no process named nginx".into()),
                last_run_unix: Some(NOW - 2.0),
            }],
            api_calls: vec![ApiCallInfo {
                at_unix: NOW - 12.0,
                op: "holders".into(),
                ip: Some(IP),
                ok: false,
                latency_ms: 45.25,
                error: Some("HTTP 503: unavailable".into()),
            }],
            heartbeats: HeartbeatCounters {
                sent: 1234,
                received: 1200,
                dropped: BTreeMap::from([("bad_mac".into(), 2), ("replay".into(), 1)]),
            },
            admin: Some("released".into()),
        }
    }

    #[test]
    fn snapshot_round_trips_through_json() {
        let s = sample();
        let json = serde_json::to_string(&s).unwrap();
        let back: StatusSnapshot = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
        let line = Response::Status(Box::new(s.clone())).to_line();
        assert!(line.ends_with('\n') && !line[..line.len() - 1].contains('\n'));
        assert_eq!(
            Response::from_line(&line).unwrap(),
            Response::Status(Box::new(s))
        );
    }

    /// The schema is an interface (scripts parse `exoip status --json`): renaming a field
    /// must fail here.
    #[test]
    fn json_field_names_are_pinned() {
        let v = serde_json::to_value(sample()).unwrap();
        let keys = |v: &serde_json::Value| -> Vec<String> {
            let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            k.sort();
            k
        };
        assert_eq!(
            keys(&v),
            [
                "admin",
                "api_calls",
                "health",
                "heartbeats",
                "ips",
                "node",
                "peers",
                "started_unix",
                "version"
            ]
        );
        assert_eq!(keys(&v["node"]), ["claim", "id", "name", "provider"]);
        assert_eq!(
            keys(&v["ips"][0]),
            [
                "effective_priority",
                "epoch",
                "holders",
                "holders_checked_unix",
                "ip",
                "next_reconcile_in_ms",
                "priority",
                "reason",
                "record",
                "state",
                "state_since_unix",
                "winner"
            ]
        );
        assert_eq!(
            keys(&v["peers"][0]),
            [
                "address",
                "alive",
                "delay_ms",
                "id",
                "ips",
                "last_heard_ago_ms",
                "leaving",
                "rtt_ms"
            ]
        );
        assert_eq!(keys(&v["peers"][0]["ips"][0]), ["ip", "priority", "state"]);
        assert_eq!(
            keys(&v["health"][0]),
            [
                "consecutive_failures",
                "kind",
                "last_error",
                "last_run_unix",
                "name",
                "ok",
                "weight"
            ]
        );
        assert_eq!(
            keys(&v["api_calls"][0]),
            ["at_unix", "error", "ip", "latency_ms", "ok", "op"]
        );
        assert_eq!(keys(&v["heartbeats"]), ["dropped", "received", "sent"]);
        // Values keep their JSON types: addresses as strings, absent options as null.
        assert_eq!(v["ips"][0]["ip"], "203.0.113.10");
        assert_eq!(v["heartbeats"]["dropped"]["bad_mac"], 2);
        let mut bare = sample();
        bare.admin = None;
        bare.ips[0].winner = None;
        let v = serde_json::to_value(bare).unwrap();
        assert!(v["admin"].is_null() && v["ips"][0]["winner"].is_null());
    }

    #[test]
    fn wire_answers_have_the_documented_shape() {
        assert_eq!(
            Response::Message("releasing".into()).to_line(),
            "{\"ok\":true,\"message\":\"releasing\"}\n"
        );
        assert_eq!(
            Response::Error("unknown command".into()).to_line(),
            "{\"ok\":false,\"error\":\"unknown command\"}\n"
        );
        assert!(Response::from_line("{\"ok\":true}").is_err());
        assert!(Response::from_line("not json").is_err());
        // A newer agent may add fields: an older client still reads the answer.
        let newer = "{\"ok\":true,\"status\":{\"version\":1,\"future\":[1,2]},\"extra\":0}";
        match Response::from_line(newer).unwrap() {
            Response::Status(s) => assert_eq!(s.version, 1),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn state_names_match_the_election_roles() {
        use crate::election::Role;
        for role in [
            Role::Init,
            Role::Backup,
            Role::Claiming,
            Role::Master,
            Role::Leaving,
            Role::Fault,
            Role::Stopped,
        ] {
            assert!(IP_STATES.contains(&role.name()), "{}", role.name());
        }
    }

    #[test]
    fn report_contains_the_key_facts() {
        let text = render_human_at(&sample(), NOW);
        for fact in [
            "exoip on web-1 (i-0001), provider exoscale, up 2h 03m",
            "ADMIN: released",
            "203.0.113.10: MASTER since 2023-11-14T22:10:18Z (3m 02s ago): attached",
            "priority 10 (effective 12); election winner: i-0001",
            "holders per the API: i-0001 (checked 12.0s ago); next reconcile in 48.0s",
            "i-0002",
            "192.0.2.2:12345",
            "400ms ago",
            "-3ms",
            "0.8ms",
            "203.0.113.10 backup/20",
            "nginx",
            "FAILING",
            "priority +2",
            "no process named nginx",
            "holders",
            "45.2ms",
            "HTTP 503: unavailable",
            "Heartbeats: sent 1234, received 1200, dropped 3 (bad_mac 2, replay 1)",
        ] {
            assert!(text.contains(fact), "missing {fact:?} in:\n{text}");
        }
    }

    #[test]
    fn report_handles_empty_and_hostile_values() {
        let mut s = StatusSnapshot {
            version: STATUS_VERSION,
            started_unix: NOW,
            ..Default::default()
        };
        let text = render_human_at(&s, NOW);
        assert!(text.contains("no address watched"));
        assert!(text.contains("none heard from"));
        assert!(text.contains("none configured"));
        s.ips.push(IpInfo {
            ip: IP,
            state: "backup".into(),
            reason: "peer says \x1b[2Jhi".into(),
            priority: 10,
            effective_priority: 10,
            holders: Some(vec![]),
            ..Default::default()
        });
        let text = render_human_at(&s, NOW);
        assert!(!text.contains('\x1b'), "{text}");
        assert!(text.contains("\\u{1b}[2Jhi"));
        assert!(text.contains("holders per the API: nobody"));
        assert!(text.contains("election winner: none eligible"));
        assert!(text.contains("next reconcile not scheduled"));
    }

    #[test]
    fn ages_read_well() {
        assert_eq!(age(-5.0), "0ms");
        assert_eq!(age(0.0123), "12ms");
        assert_eq!(age(4.25), "4.2s");
        assert_eq!(age(182.0), "3m 02s");
        assert_eq!(age(7_384.0), "2h 03m");
        assert_eq!(age(2.0 * 86_400.0 + 3.0 * 3600.0), "2d 03h");
        assert_eq!(timestamp(0.0), "-");
        assert_eq!(timestamp(NOW), "2023-11-14T22:13:20Z");
    }

    // --- socket ---------------------------------------------------------------------------

    /// A stand-in for the agent: answers every request, remembers the admin state.
    fn fake_agent() -> mpsc::Sender<ControlRequest> {
        let (tx, mut rx) = mpsc::channel::<ControlRequest>(8);
        tokio::spawn(async move {
            let mut admin: Option<&str> = None;
            while let Some(req) = rx.recv().await {
                match req {
                    ControlRequest::Status(r) => {
                        let mut s = sample();
                        s.admin = admin.map(str::to_string);
                        let _ = r.send(s);
                    }
                    ControlRequest::Release(r) => {
                        admin = Some("released");
                        let _ = r.send(Ok("released: handing over".into()));
                    }
                    ControlRequest::Resume(r) => {
                        let was = admin.take();
                        let _ = r.send(match was {
                            Some(_) => Ok("resumed".into()),
                            None => Err("nothing to resume".into()),
                        });
                    }
                    ControlRequest::Promote(r) => {
                        admin = Some("promoted");
                        let _ = r.send(Ok("promoted".into()));
                    }
                }
            }
        });
        tx
    }

    async fn raw(path: &Path, bytes: &[u8]) -> String {
        let mut s = UnixStream::connect(path).await.unwrap();
        s.write_all(bytes).await.unwrap();
        // End of the command even without a newline; the server must answer anyway.
        s.shutdown().await.unwrap();
        // One line, not to EOF: after an over-long line the server closes with our surplus
        // unread, which Linux reports to us as a reset after the answer.
        let mut out = String::new();
        timeout(
            Duration::from_secs(5),
            BufReader::new(s).read_line(&mut out),
        )
        .await
        .expect("server answered in time")
        .unwrap();
        out
    }

    #[tokio::test]
    async fn commands_round_trip_through_the_agent() {
        let dir = tempfile::tempdir().unwrap();
        // The parent directory does not exist yet: serve creates it.
        let path = dir.path().join("run/exoip/exoip.sock");
        let server = serve(&path, fake_agent()).await.unwrap();
        assert_eq!(server.path(), path);
        let parent_mode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(parent_mode & 0o022, 0, "{parent_mode:o}");

        match request(&path, "status").await.unwrap() {
            Response::Status(s) => {
                assert_eq!(s.node.name, "web-1");
                assert_eq!(s.admin, None);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            request(&path, "release").await.unwrap(),
            Response::Message("released: handing over".into())
        );
        match request(&path, "status").await.unwrap() {
            Response::Status(s) => assert_eq!(s.admin.as_deref(), Some("released")),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            request(&path, "resume").await.unwrap(),
            Response::Message("resumed".into())
        );
        assert_eq!(
            request(&path, "resume").await.unwrap(),
            Response::Error("nothing to resume".into())
        );
        assert_eq!(
            request(&path, "promote").await.unwrap(),
            Response::Message("promoted".into())
        );
        // A last line without newline counts; surrounding blanks are ignored.
        let answer = raw(&path, b"  resume \r").await;
        assert_eq!(answer, "{\"ok\":true,\"message\":\"resumed\"}\n");

        drop(server);
        assert!(!path.exists(), "the socket file is removed on drop");
    }

    #[tokio::test]
    async fn garbage_and_long_lines_are_refused_without_harm() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exoip.sock");
        let _server = serve(&path, fake_agent()).await.unwrap();
        let unknown = "{\"ok\":false,\"error\":\"unknown command\"}\n";
        assert_eq!(raw(&path, b"statu\n").await, unknown);
        assert_eq!(raw(&path, b"\n").await, unknown);
        assert_eq!(raw(&path, b"\xff\xfe\x00status\n").await, unknown);
        assert_eq!(raw(&path, b"STATUS\n").await, unknown);
        let long = vec![b'a'; 10_000];
        let answer = raw(&path, &long).await;
        assert!(
            answer.contains("\"ok\":false") && answer.contains("too long"),
            "{answer}"
        );
        // Exactly at the limit is a (unknown) command, not an overflow.
        let mut at_limit = vec![b'x'; MAX_LINE];
        at_limit.push(b'\n');
        assert_eq!(raw(&path, &at_limit).await, unknown);
        assert!(matches!(
            request(&path, "status\nrelease").await,
            Err(ClientError::InvalidCommand(_))
        ));
        // Still serving.
        assert!(matches!(
            request(&path, "status").await,
            Ok(Response::Status(_))
        ));
    }

    #[tokio::test]
    async fn a_silent_client_blocks_nobody_and_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exoip.sock");
        let _server = serve(&path, fake_agent()).await.unwrap();
        let mut silent = UnixStream::connect(&path).await.unwrap();
        let started = std::time::Instant::now();
        for _ in 0..3 {
            assert!(matches!(
                request(&path, "status").await,
                Ok(Response::Status(_))
            ));
        }
        assert!(started.elapsed() < Duration::from_secs(1));
        // The silent one is told off after READ_TIMEOUT and disconnected.
        let mut out = String::new();
        timeout(READ_TIMEOUT * 3, silent.read_to_string(&mut out))
            .await
            .expect("silent client disconnected")
            .unwrap();
        assert!(out.contains("no command within"), "{out}");
    }

    #[tokio::test]
    async fn socket_file_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exoip.sock");
        let _server = serve(&path, fake_agent()).await.unwrap();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    }

    #[tokio::test]
    async fn stale_socket_is_replaced_live_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exoip.sock");
        // A socket file nobody listens on, as a killed agent leaves it.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let server = serve(&path, fake_agent()).await.unwrap();
        assert!(matches!(
            request(&path, "status").await,
            Ok(Response::Status(_))
        ));

        let err = serve(&path, fake_agent()).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        assert_eq!(
            err.to_string(),
            format!("another exoip is already running on {}", path.display())
        );
        // The refused second agent left the first one's socket alone.
        assert!(matches!(
            request(&path, "status").await,
            Ok(Response::Status(_))
        ));
        drop(server);

        // Something that is not a socket is never removed.
        std::fs::write(&path, "keep me").unwrap();
        let err = serve(&path, fake_agent()).await.unwrap_err();
        assert!(err.to_string().contains("not a socket"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "keep me");
    }

    #[tokio::test]
    async fn drop_leaves_a_successors_socket_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exoip.sock");
        let first = serve(&path, fake_agent()).await.unwrap();
        // Someone removed our file and a new agent bound the path.
        std::fs::remove_file(&path).unwrap();
        let second = serve(&path, fake_agent()).await.unwrap();
        drop(first);
        assert!(path.exists());
        assert!(matches!(
            request(&path, "status").await,
            Ok(Response::Status(_))
        ));
        drop(second);
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn client_errors_say_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.sock");
        let err = request(&path, "status").await.unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with(&format!(
                "cannot connect to {}: is exoip -W running? (",
                path.display()
            )),
            "{text}"
        );
        // An agent that is going away (its request channel closed) answers with an error.
        let (tx, rx) = mpsc::channel(1);
        drop(rx);
        let _server = serve(&path, tx).await.unwrap();
        assert_eq!(
            request(&path, "status").await.unwrap(),
            Response::Error("the agent is shutting down".into())
        );
        let err = run_status(StatusArgs {
            json: false,
            socket: path.clone(),
        })
        .await
        .unwrap_err();
        assert!(err.to_string().contains("shutting down"), "{err}");
        assert!(run_control("reboot", ControlArgs { socket: path })
            .await
            .is_err());
    }
}
