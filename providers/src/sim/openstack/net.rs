//! The two address formats Neutron validates that the standard library does not parse: CIDRs
//! (`192.0.2.0/24`, also a bare address meaning a host route) and MAC addresses.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An address with a prefix length; a bare address has the full length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    fn max_prefix(addr: IpAddr) -> u8 {
        match addr {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        }
    }

    fn mask(&self) -> u128 {
        let bits = Self::max_prefix(self.addr) as u32;
        if self.prefix == 0 {
            0
        } else {
            (!0u128 << (bits - self.prefix as u32)) & (!0u128 >> (128 - bits))
        }
    }

    fn bits(addr: IpAddr) -> u128 {
        match addr {
            IpAddr::V4(a) => u32::from(a) as u128,
            IpAddr::V6(a) => u128::from(a),
        }
    }

    fn from_bits(like: IpAddr, bits: u128) -> IpAddr {
        match like {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(bits as u32)),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(bits)),
        }
    }

    /// The address with the host bits cleared.
    pub fn network(&self) -> IpAddr {
        Self::from_bits(self.addr, Self::bits(self.addr) & self.mask())
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.addr.is_ipv4()
            && Self::bits(ip) & self.mask() == Self::bits(self.addr) & self.mask()
    }

    pub fn overlaps(&self, other: &Cidr) -> bool {
        self.contains(other.network()) || other.contains(self.network())
    }

    /// Whether it names exactly one address.
    pub fn is_host(&self) -> bool {
        self.prefix == Self::max_prefix(self.addr)
    }

    /// The first usable address (Neutron's default gateway).
    pub fn first_host(&self) -> Option<IpAddr> {
        if self.is_host() {
            return Some(self.addr);
        }
        let first = Self::bits(self.network()) + 1;
        let ip = Self::from_bits(self.addr, first);
        self.contains(ip).then_some(ip)
    }

    /// The last address of the range (IPv4: the broadcast address).
    pub fn last(&self) -> IpAddr {
        let bits = Self::max_prefix(self.addr) as u32;
        let all = !0u128 >> (128 - bits);
        Self::from_bits(
            self.addr,
            (Self::bits(self.addr) & self.mask()) | (all & !self.mask()),
        )
    }

    /// Neutron's default allocation pool: the range without the network address, the last
    /// address (IPv4 broadcast) and the gateway when it sits at the start.
    pub fn default_pool(&self, gateway: Option<IpAddr>) -> Option<(IpAddr, IpAddr)> {
        let first = Self::bits(self.network()) + 1;
        let last = Self::bits(self.last()).checked_sub(1)?;
        let first = if gateway.map(Self::bits) == Some(first) {
            first + 1
        } else {
            first
        };
        (first <= last && self.prefix + 1 < Self::max_prefix(self.addr)).then(|| {
            (
                Self::from_bits(self.addr, first),
                Self::from_bits(self.addr, last),
            )
        })
    }

    /// The IPv4 netmask, e.g. `255.255.255.0`.
    pub fn netmask_v4(&self) -> Option<Ipv4Addr> {
        match self.addr {
            IpAddr::V4(_) => Some(Ipv4Addr::from(self.mask() as u32)),
            IpAddr::V6(_) => None,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("'{s}' is neither a valid IP address, nor is it a valid IP subnet");
        let (addr, prefix) = match s.split_once('/') {
            None => {
                let addr: IpAddr = s.parse().map_err(|_| bad())?;
                (addr, Cidr::max_prefix(addr))
            }
            Some((a, p)) => {
                let addr: IpAddr = a.parse().map_err(|_| bad())?;
                if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                let prefix: u8 = p.parse().map_err(|_| bad())?;
                if prefix > Cidr::max_prefix(addr) {
                    return Err(bad());
                }
                (addr, prefix)
            }
        };
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// A MAC address, written lower-case with colons.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Mac(pub [u8; 6]);

impl FromStr for Mac {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("'{s}' is not a valid MAC address");
        let parts: Vec<&str> = s.split([':', '-']).collect();
        if parts.len() != 6 {
            return Err(bad());
        }
        let mut out = [0u8; 6];
        for (o, p) in out.iter_mut().zip(&parts) {
            if p.len() != 2 {
                return Err(bad());
            }
            *o = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        // Neutron refuses multicast and all-zero addresses for ports.
        if out[0] & 1 == 1 || out == [0; 6] {
            return Err(bad());
        }
        Ok(Mac(out))
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidrs() {
        let c = cidr("192.0.2.0/24");
        assert!(c.contains(ip("192.0.2.255")));
        assert!(!c.contains(ip("192.0.3.0")));
        assert!(!c.contains(ip("2001:db8::1")));
        assert_eq!(c.first_host(), Some(ip("192.0.2.1")));
        assert_eq!(c.netmask_v4(), Some("255.255.255.0".parse().unwrap()));
        assert_eq!(cidr("192.0.2.7/24").network(), ip("192.0.2.0"));
        assert!(cidr("192.0.2.100").is_host());
        assert!(cidr("192.0.2.100/32").is_host());
        assert!(cidr("0.0.0.0/0").contains(ip("203.0.113.1")));
        assert!(cidr("2001:db8::/32").contains(ip("2001:db8:1::1")));
        assert_eq!(cidr("192.0.2.0/24").last(), ip("192.0.2.255"));
        assert_eq!(
            cidr("192.0.2.0/24").default_pool(Some(ip("192.0.2.1"))),
            Some((ip("192.0.2.2"), ip("192.0.2.254")))
        );
        assert_eq!(cidr("192.0.2.7/32").default_pool(None), None);
        assert!(cidr("10.0.0.0/8").overlaps(&cidr("10.1.0.0/16")));
        assert!(!cidr("10.0.0.0/16").overlaps(&cidr("10.1.0.0/16")));
        for bad in [
            "",
            "x",
            "192.0.2.0/33",
            "192.0.2.0/",
            "192.0.2.0/+1",
            "1.2.3/8",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn macs() {
        let m: Mac = "FA:16:3E:00:00:0B".parse().unwrap();
        assert_eq!(m.to_string(), "fa:16:3e:00:00:0b");
        for bad in [
            "",
            "fa:16:3e:00:00",
            "fa:16:3e:00:00:zz",
            "01:00:5e:00:00:01",
            "00:00:00:00:00:00",
        ] {
            assert!(bad.parse::<Mac>().is_err(), "{bad}");
        }
    }
}
