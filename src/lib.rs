//! exoip: failover agent for cloud elastic IPs.
//!
//! `election` decides (no I/O, no clock), `agent` drives it (sockets, timers, provider calls,
//! alias, signals), `wire` is the heartbeat format, `legacy` bridges to the old Go exoip's,
//! `alias` puts the address on loopback, `cli`/`config` turn flags and environment into one
//! validated configuration, `lab` builds network-namespace test beds for the demo, the
//! end-to-end tests and the benchmarks.

pub mod agent;
pub mod alias;
pub mod announce;
pub mod check;
pub mod cli;
pub mod config;
pub mod config_file;
pub mod docgen;
pub mod election;
pub mod health;
pub mod holding;
pub mod hooks;
pub mod lab;
pub mod legacy;
pub mod metrics;
pub mod probe;
pub mod sdnotify;
pub mod status;
pub mod wire;

/// Wall-clock time since the Unix epoch (zero if the clock is set before it): the one clock of
/// heartbeat timestamps, the incarnation, check results and lab measurements.
pub fn unix_time() -> std::time::Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}
