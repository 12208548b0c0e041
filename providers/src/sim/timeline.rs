//! The timeline: every change of an address's holders, and every new claim record written on it,
//! in order, in memory and optionally as JSON lines in a file, so tests, the demo and the chaos
//! suite can measure overlaps, gaps and epochs after the fact.

use std::fs::File;
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::InstanceId;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HolderEvent {
    Attach,
    Detach,
    /// A new claim record (`epoch`, and the claimant as `instance`) took effect on the address's
    /// resource; `holders` are unchanged by it (see `docs/arbiter.md`).
    Claim,
}

/// One holder change. On OpenStack, `zone` is the region, `eip_id` the floating IP's id (for a
/// VIP in `allowed_address_pairs`, the id of the port holding it as a fixed IP, or empty) and
/// `instance` the server id (the port id for a port without a device). On Azure, `zone` is the
/// location, `eip_id` the public IP's resource id (for a secondary private address, the id of
/// the ipConfiguration holding it) and `instance` and `holders` are VM names. E.g.
/// `{"t":1767225600.123456,"zone":"ch-gva-2","ip":"203.0.113.10","eip_id":"…","event":"attach",
/// "instance":"…","holders":["…","…"]}`; a claim adds its epoch:
/// `{…,"event":"claim","instance":"<claimant>","holders":[…],"epoch":7}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TimelineEvent {
    /// Wall-clock time of the change, unix seconds with microsecond precision.
    pub t: f64,
    pub zone: String,
    pub ip: IpAddr,
    pub eip_id: String,
    pub event: HolderEvent,
    pub instance: InstanceId,
    /// The holders right after the change, in attach order.
    pub holders: Vec<InstanceId>,
    /// Set when the control API forced the holders (another actor, split brain) rather than an
    /// API client. A forced change is atomic: its events share `t` and all carry the final
    /// holders.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forced: bool,
    /// The claim record's epoch: set on `claim` events only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
}

/// Unix time in seconds, rounded to the microsecond.
pub fn unix_now() -> f64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    d.as_micros() as f64 / 1e6
}

pub(crate) struct Timeline {
    events: Mutex<Vec<TimelineEvent>>,
    file: Option<Mutex<File>>,
}

impl Timeline {
    /// Keeps events in memory and, with a path, truncates that file and appends one line per
    /// event (a fresh run must not inherit the previous run's changes).
    pub fn open(path: Option<&Path>) -> io::Result<Timeline> {
        let file = match path {
            Some(p) => Some(Mutex::new(File::create(p)?)),
            None => None,
        };
        Ok(Timeline {
            events: Mutex::new(Vec::new()),
            file,
        })
    }

    pub fn record(&self, event: TimelineEvent) {
        if let Some(file) = &self.file {
            let mut line = serde_json::to_vec(&event).expect("timeline events serialise");
            line.push(b'\n');
            // One write per line, unbuffered: a reader tailing the file never sees half an
            // event, and a killed simulator loses nothing it reported as done.
            let mut f = file.lock().unwrap_or_else(|e| e.into_inner());
            if let Err(e) = f.write_all(&line) {
                tracing::warn!("cannot append to the timeline file: {e}");
            }
        }
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(event);
    }

    pub fn events(&self) -> Vec<TimelineEvent> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}
