//! The route hook (`--route-holders`): inside a "router" network namespace, the simulator makes
//! traffic to each floating address really reach whoever the API says holds it, the way the
//! cloud's own network does.
//!
//! * Exoscale: the kernel route of each elastic IP points at its holders' public IPs
//!   ([`route_args`], run with `ip`).
//! * OpenStack: Neutron's router NATs a floating IP to the fixed IP of the port it is associated
//!   with. The simulator does the same with nftables, in a table of its own ([`NAT_TABLE`]):
//!   [`nat_script`] rewrites the whole table in one atomic `nft -f -` transaction on every
//!   change, [`nat_teardown_script`] deletes it at exit.
//! * Azure: the kernel route of each public IP points at its holder VM's private IP (the
//!   primary address of the NIC whose ipConfiguration has it; [`route_args`], run with `ip`);
//!   secondary private addresses are the guest's business and get no route.
//!
//! It runs synchronously inside the state change, before the API reports success: "attached"
//! in the API then implies "routed".

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::process::{Command, Stdio};

/// Runs the commands of the route hook. Injectable so tests can record the command lines
/// instead of changing the host's routes and rules.
pub trait RouteRunner: Send + Sync + 'static {
    /// Runs one `ip` command (the arguments after `ip`).
    fn run(&self, args: &[String]) -> Result<(), String>;

    /// Applies one nftables script (what `nft -f -` reads), atomically. Only the OpenStack
    /// simulator calls it; the default refuses, so that a runner written for `ip` alone never
    /// touches the host's firewall by accident.
    fn nft(&self, script: &str) -> Result<(), String> {
        let _ = script;
        Err("this route runner does not run nft".into())
    }
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

    /// `nft -f -` from the `nftables` package, the script on its standard input.
    fn nft(&self, script: &str) -> Result<(), String> {
        run_nft(Command::new("nft").args(["-f", "-"]), script)
    }
}

/// Runs an `nft -f -`-like command with `script` on its standard input (also used by tests to
/// run nft inside a network namespace through `ip netns exec`).
pub fn run_nft(cmd: &mut Command, script: &str) -> Result<(), String> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run nft: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| format!("cannot write the nft script: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("cannot run nft: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "nft failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The nftables table (family `ip`) the OpenStack simulator owns in the router namespace.
pub const NAT_TABLE: &str = "exoip_sim";

/// One floating IP's NAT: traffic to `floating` goes to `fixed`, and `fixed`'s traffic to the
/// outside leaves as `floating`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NatMapping {
    pub floating: Ipv4Addr,
    pub fixed: Ipv4Addr,
}

/// The script that (re)creates [`NAT_TABLE`] with exactly these mappings, in one transaction
/// (a table left by a killed run is replaced, never merged).
///
/// The NAT is stateless (`notrack`, addresses rewritten packet by packet in the `raw`
/// prerouting hook): a move takes effect on the next packet, as the Exoscale route hook's
/// does, and no connection-tracking entry keeps sending traffic to a former holder. Replies
/// need no state either: the second rule rewrites the holder's source address back to the
/// floating IP for every destination outside `internal` (the router's own subnets, between
/// which Neutron does not NAT).
pub fn nat_script(mappings: &[NatMapping], internal: &[String]) -> String {
    let mut s = String::new();
    let t = NAT_TABLE;
    // `add` then `delete` then define: works whether or not the table exists.
    let _ = writeln!(s, "add table ip {t}");
    let _ = writeln!(s, "delete table ip {t}");
    let _ = writeln!(s, "table ip {t} {{");
    let _ = writeln!(s, "\tchain prerouting {{");
    let _ = writeln!(
        s,
        "\t\ttype filter hook prerouting priority raw; policy accept;"
    );
    let outside = if internal.is_empty() {
        String::new()
    } else {
        format!("ip daddr != {{ {} }} ", internal.join(", "))
    };
    for m in mappings {
        let (fip, fixed) = (m.floating, m.fixed);
        let _ = writeln!(s, "\t\tip daddr {fip} ip daddr set {fixed} notrack");
        let _ = writeln!(
            s,
            "\t\tip saddr {fixed} {outside}ip saddr set {fip} notrack"
        );
    }
    let _ = writeln!(s, "\t}}");
    let _ = writeln!(s, "}}");
    s
}

/// The script that removes [`NAT_TABLE`] (whether or not it exists).
pub fn nat_teardown_script() -> String {
    format!("add table ip {0}\ndelete table ip {0}\n", NAT_TABLE)
}

/// Applies a NAT script, logging (never propagating) a failure, as [`apply`] does for routes.
pub(crate) fn apply_nat(runner: &dyn RouteRunner, script: &str) -> bool {
    match runner.nft(script) {
        Ok(()) => {
            tracing::debug!("nat: {}", script.replace('\n', "; "));
            true
        }
        Err(e) => {
            tracing::warn!("route hook (nft): {e}");
            false
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

    #[test]
    fn nat_scripts() {
        let m = NatMapping {
            floating: "203.0.113.10".parse().unwrap(),
            fixed: "192.0.2.11".parse().unwrap(),
        };
        let s = nat_script(&[m], &["192.0.2.0/24".into(), "10.0.0.0/8".into()]);
        assert_eq!(
            s,
            "add table ip exoip_sim\ndelete table ip exoip_sim\ntable ip exoip_sim {\n\
             \tchain prerouting {\n\
             \t\ttype filter hook prerouting priority raw; policy accept;\n\
             \t\tip daddr 203.0.113.10 ip daddr set 192.0.2.11 notrack\n\
             \t\tip saddr 192.0.2.11 ip daddr != { 192.0.2.0/24, 10.0.0.0/8 } \
             ip saddr set 203.0.113.10 notrack\n\
             \t}\n}\n"
        );
        let empty = nat_script(&[], &[]);
        assert!(empty.contains("chain prerouting"), "{empty}");
        assert!(!empty.contains("daddr"), "{empty}");
        assert_eq!(
            nat_teardown_script(),
            "add table ip exoip_sim\ndelete table ip exoip_sim\n"
        );
    }
}
