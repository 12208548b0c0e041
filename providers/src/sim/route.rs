//! The route hook (`--route-holders`): inside a "router" network namespace, the simulator points
//! the kernel route of each elastic IP at its holders' public IPs, so that traffic to the EIP
//! really reaches whoever the API says holds it, the way the cloud's own network does.
//!
//! It runs synchronously inside the state change, before the operation reports `success`:
//! "attached" in the API then implies "routed".

use std::net::IpAddr;
use std::process::Command;

/// Runs one `ip` command (the arguments after `ip`). Injectable so tests can record the command
/// lines instead of changing the host's routes.
pub trait RouteRunner: Send + Sync + 'static {
    fn run(&self, args: &[String]) -> Result<(), String>;
}

/// The real runner: `ip` from iproute2 as a subprocess.
#[derive(Clone, Copy, Debug, Default)]
pub struct IpCommand;

impl RouteRunner for IpCommand {
    fn run(&self, args: &[String]) -> Result<(), String> {
        let out = Command::new("ip")
            .args(args)
            .output()
            .map_err(|e| format!("cannot run ip: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "ip {} failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }
}

/// The `ip` arguments that route `eip` to `via` (the holders' public addresses, already of the
/// EIP's family): one next hop, an ECMP route over several (the cloud spreads traffic over all
/// attached instances), or `unreachable` when nobody holds it.
pub fn route_args(eip: IpAddr, via: &[IpAddr]) -> Vec<String> {
    let mut args: Vec<String> = Vec::new();
    let prefix = match eip {
        IpAddr::V4(_) => format!("{eip}/32"),
        IpAddr::V6(_) => {
            args.push("-6".into());
            format!("{eip}/128")
        }
    };
    args.extend(["route".into(), "replace".into()]);
    match via {
        [] => args.extend(["unreachable".into(), prefix]),
        [one] => args.extend([prefix, "via".into(), one.to_string()]),
        many => {
            args.push(prefix);
            for hop in many {
                args.extend(["nexthop".into(), "via".into(), hop.to_string()]);
            }
        }
    }
    args
}

/// Applies the route for `eip`, logging (never propagating) a failure: a broken route must show
/// up in the logs and in the data path test, not take the API down.
pub(crate) fn apply(runner: &dyn RouteRunner, eip: IpAddr, via: &[IpAddr]) {
    let args = route_args(eip, via);
    match runner.run(&args) {
        Ok(()) => tracing::debug!("route: ip {}", args.join(" ")),
        Err(e) => tracing::warn!("route hook for {eip}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(eip: &str, via: &[&str]) -> String {
        let via: Vec<IpAddr> = via.iter().map(|v| v.parse().unwrap()).collect();
        route_args(eip.parse().unwrap(), &via).join(" ")
    }

    #[test]
    fn command_lines() {
        assert_eq!(
            line("203.0.113.10", &["192.0.2.11"]),
            "route replace 203.0.113.10/32 via 192.0.2.11"
        );
        assert_eq!(
            line("203.0.113.10", &["192.0.2.11", "192.0.2.12"]),
            "route replace 203.0.113.10/32 nexthop via 192.0.2.11 nexthop via 192.0.2.12"
        );
        assert_eq!(
            line("203.0.113.10", &[]),
            "route replace unreachable 203.0.113.10/32"
        );
        assert_eq!(
            line("2001:db8::10", &["2001:db8:1::11"]),
            "-6 route replace 2001:db8::10/128 via 2001:db8:1::11"
        );
        assert_eq!(
            line("2001:db8::10", &[]),
            "-6 route replace unreachable 2001:db8::10/128"
        );
    }
}
