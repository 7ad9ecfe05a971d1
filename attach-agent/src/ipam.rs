//! Address management: subnets, ranges, gateways, static and dynamic allocation. Pure: no I/O.
//!
//! A [`Pool`] is one address family of one network. Only addresses of running endpoints are
//! allocated in it: a stopped container keeps its *requested* static address in its
//! configuration, not in the pool (Docker's semantics: a static address taken meanwhile makes
//! the next start fail with "Address already in use").

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum IpamError {
    #[error("invalid CIDR address: {0}")]
    BadCidr(String),
    #[error("Pool overlaps with other one on this address space")]
    Overlap,
    #[error("no configured subnet contains IP address {0}")]
    OutsideSubnet(IpAddr),
    #[error("Address already in use")]
    InUse,
    #[error("no available {family} addresses on this network's address pools: {network}")]
    Exhausted {
        family: &'static str,
        network: String,
    },
    #[error("ip-range {range} is not inside subnet {subnet}")]
    RangeOutside { range: IpNet, subnet: IpNet },
    #[error("gateway {gateway} is not a usable address of subnet {subnet}")]
    BadGateway { gateway: IpAddr, subnet: IpNet },
    #[error("subnet {0} is too small to hold a gateway and a container")]
    TooSmall(IpNet),
    #[error("could not find an available, non-overlapping IPv4 address pool among the defaults to assign to the network")]
    NoDefaultPool,
    /// An IPv4 address asked of an IPv6 pool, or the other way round.
    #[error("the {pool} pool {subnet} cannot hand out an {wanted} address")]
    WrongFamily {
        pool: &'static str,
        wanted: &'static str,
        subnet: IpNet,
    },
}

/// One address family of one network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool {
    pub subnet: IpNet,
    /// Dynamic addresses come only from here (the subnet when absent).
    pub ip_range: Option<IpNet>,
    pub gateway: IpAddr,
    /// Whether inspect shows the gateway: Docker shows it when it was given, or when the
    /// subnet was picked from the default pools, not when it was derived from a given subnet.
    #[serde(default)]
    pub show_gateway: bool,
    /// Addresses held by running endpoints. Not persisted: derived at load from the endpoints
    /// that are attached (when the state is loaded), so a connect writes only its
    /// container's file and the two can never disagree.
    #[serde(skip)]
    pub allocated: BTreeSet<IpAddr>,
}

/// Docker's MAC for an endpoint: 02:42 followed by the IPv4 address. Another host's endpoint
/// record must carry exactly this one (the tunnel's entries are keyed by it).
pub fn mac_for(v4: std::net::Ipv4Addr) -> [u8; 6] {
    let o = v4.octets();
    [0x02, 0x42, o[0], o[1], o[2], o[3]]
}

/// An endpoint's MAC: Docker's from its IPv4 address; on an IPv6-only network (nothing to
/// derive it from: the tail of an IPv6 address repeats across a /64) `02:42` followed by the
/// first four bytes of its random 256-bit endpoint id, as Docker 28 gives such endpoints a
/// random MAC, and the same after every restart.
pub fn mac_for_endpoint(
    v4: Option<std::net::Ipv4Addr>,
    endpoint: &crate::ids::EndpointId,
) -> [u8; 6] {
    match v4 {
        Some(v4) => mac_for(v4),
        None => {
            let hex = endpoint.as_str();
            let byte = |i: usize| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap_or(0);
            [0x02, 0x42, byte(0), byte(1), byte(2), byte(3)]
        }
    }
}

fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u32::from(a) as u128,
        IpAddr::V6(a) => u128::from(a),
    }
}

fn from_u128(v: u128, v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(v))
    } else {
        IpAddr::V4(Ipv4Addr::from(v as u32))
    }
}

impl Pool {
    /// A pool for `subnet` (normalised to its network address), with an optional range and
    /// gateway (default: the first usable address).
    pub fn new(
        subnet: IpNet,
        ip_range: Option<IpNet>,
        gateway: Option<IpAddr>,
    ) -> Result<Pool, IpamError> {
        let subnet = subnet.trunc();
        let ip_range = ip_range.map(|r| r.trunc());
        if let Some(r) = ip_range {
            if !subnet.contains(&r) {
                return Err(IpamError::RangeOutside { range: r, subnet });
            }
        }
        let (first, last) = Self::usable_bounds(subnet).ok_or(IpamError::TooSmall(subnet))?;
        if last <= first {
            return Err(IpamError::TooSmall(subnet));
        }
        let show_gateway = gateway.is_some();
        let gateway = gateway.unwrap_or(from_u128(first, subnet.addr().is_ipv6()));
        let g = to_u128(gateway);
        if gateway.is_ipv4() != subnet.addr().is_ipv4() || g < first || g > last {
            return Err(IpamError::BadGateway { gateway, subnet });
        }
        Ok(Pool {
            subnet,
            ip_range,
            gateway,
            show_gateway,
            allocated: BTreeSet::new(),
        })
    }

    /// First and last address that may be handed out: never the network address, nor the
    /// IPv4 broadcast address.
    fn usable_bounds(net: IpNet) -> Option<(u128, u128)> {
        let lo = to_u128(net.network());
        let hi = to_u128(net.broadcast());
        match net {
            IpNet::V4(_) => (hi >= lo + 2).then(|| (lo + 1, hi - 1)),
            IpNet::V6(_) => (hi > lo).then(|| (lo + 1, hi)),
        }
    }

    pub fn is_v6(&self) -> bool {
        self.subnet.addr().is_ipv6()
    }

    pub fn prefix_len(&self) -> u8 {
        self.subnet.prefix_len()
    }

    /// Whether `ip` may be given to a container: inside the subnet, not the network, broadcast
    /// or gateway address.
    fn check_usable(&self, ip: IpAddr) -> Result<(), IpamError> {
        if !self.subnet.contains(&ip) {
            return Err(IpamError::OutsideSubnet(ip));
        }
        let (first, last) = Self::usable_bounds(self.subnet).ok_or(IpamError::InUse)?;
        let v = to_u128(ip);
        if v < first || v > last || ip == self.gateway {
            return Err(IpamError::InUse);
        }
        Ok(())
    }

    /// Take a static address (anywhere in the subnet, also outside the ip-range).
    pub fn reserve(&mut self, ip: IpAddr) -> Result<(), IpamError> {
        self.check_usable(ip)?;
        if !self.allocated.insert(ip) {
            return Err(IpamError::InUse);
        }
        Ok(())
    }

    /// The lowest free address of the ip-range (or subnet).
    pub fn allocate(&mut self, network: &str) -> Result<IpAddr, IpamError> {
        let range = self.ip_range.unwrap_or(self.subnet);
        let (sf, sl) = Self::usable_bounds(self.subnet).ok_or(IpamError::TooSmall(self.subnet))?;
        // Like Docker, a range's own first address is not handed out (172.20.240.0/20 starts
        // at .240.1); the subnet's is never usable anyway.
        let first = (to_u128(range.network()) + 1).max(sf);
        let last = to_u128(range.broadcast()).min(sl);
        let v6 = self.is_v6();
        let gw = to_u128(self.gateway);
        // Walk the allocated addresses in order from `first`: the first gap is the answer.
        let mut candidate = first;
        for taken in self
            .allocated
            .range(from_u128(first, v6)..=from_u128(last, v6))
            .map(|a| to_u128(*a))
        {
            if candidate == gw {
                candidate += 1;
            }
            if taken > candidate {
                break;
            }
            candidate = candidate.max(taken + 1);
        }
        if candidate == gw {
            candidate += 1;
            while self.allocated.contains(&from_u128(candidate, v6)) && candidate <= last {
                candidate += 1;
            }
        }
        if candidate > last {
            return Err(IpamError::Exhausted {
                family: if v6 { "IPv6" } else { "IPv4" },
                network: network.to_string(),
            });
        }
        let ip = from_u128(candidate, v6);
        self.allocated.insert(ip);
        Ok(ip)
    }

    /// [`Pool::allocate`] of an IPv4 pool.
    pub fn allocate_v4(&mut self, network: &str) -> Result<Ipv4Addr, IpamError> {
        match self.family_check(false)?.allocate(network)? {
            IpAddr::V4(ip) => Ok(ip),
            IpAddr::V6(_) => Err(self.wrong_family(false)),
        }
    }

    /// [`Pool::allocate`] of an IPv6 pool.
    pub fn allocate_v6(&mut self, network: &str) -> Result<Ipv6Addr, IpamError> {
        match self.family_check(true)?.allocate(network)? {
            IpAddr::V6(ip) => Ok(ip),
            IpAddr::V4(_) => Err(self.wrong_family(true)),
        }
    }

    fn family_check(&mut self, v6: bool) -> Result<&mut Pool, IpamError> {
        if self.is_v6() == v6 {
            Ok(self)
        } else {
            Err(self.wrong_family(v6))
        }
    }

    fn wrong_family(&self, v6: bool) -> IpamError {
        let name = |v6| if v6 { "IPv6" } else { "IPv4" };
        IpamError::WrongFamily {
            pool: name(self.is_v6()),
            wanted: name(v6),
            subnet: self.subnet,
        }
    }

    /// Give an address back. Unknown addresses are ignored.
    pub fn release(&mut self, ip: IpAddr) {
        self.allocated.remove(&ip);
    }

    pub fn overlaps(&self, other: &IpNet) -> bool {
        overlaps(&self.subnet, other)
    }
}

pub fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// Docker's default local pools, minus 172.17.0.0/16 (docker0's): 172.18–31.0.0/16, then
/// 192.168.0.0/16 cut in /20s.
pub fn default_pools() -> impl Iterator<Item = IpNet> {
    let wide =
        (18..=31u8).map(|b| IpNet::V4(ipnet::Ipv4Net::new_assert(Ipv4Addr::new(172, b, 0, 0), 16)));
    let narrow = (0..16u8).map(|i| {
        IpNet::V4(ipnet::Ipv4Net::new_assert(
            Ipv4Addr::new(192, 168, i * 16, 0),
            20,
        ))
    });
    wide.chain(narrow)
}

/// The first default pool that overlaps nothing in `taken` (other networks' subnets and the
/// host's own routes, so a new bridge never shadows a network the host uses).
pub fn pick_default(taken: &[IpNet]) -> Result<IpNet, IpamError> {
    default_pools()
        .find(|p| !taken.iter().any(|t| overlaps(p, t)))
        .ok_or(IpamError::NoDefaultPool)
}

/// The first /24 of 10.0.0.0/8 that overlaps nothing in `taken`: the default for global
/// networks (as Docker's overlay driver), whose subnets must be free on every host.
pub fn pick_default_overlay(taken: &[IpNet]) -> Result<IpNet, IpamError> {
    (0..=u16::MAX)
        .map(|i| {
            let [hi, lo] = i.to_be_bytes();
            IpNet::V4(ipnet::Ipv4Net::new_assert(Ipv4Addr::new(10, hi, lo, 0), 24))
        })
        .find(|p| !taken.iter().any(|t| overlaps(p, t)))
        .ok_or(IpamError::NoDefaultPool)
}

/// Parse a CIDR, with Docker's error text.
pub fn parse_cidr(s: &str) -> Result<IpNet, IpamError> {
    s.parse::<IpNet>()
        .map_err(|_| IpamError::BadCidr(s.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pool_hands_out_its_own_family_only() {
        let mut v4 = Pool::new("10.9.0.0/24".parse().unwrap(), None, None).unwrap();
        assert_eq!(v4.allocate_v4("n").unwrap(), Ipv4Addr::new(10, 9, 0, 2));
        assert!(matches!(
            v4.allocate_v6("n"),
            Err(IpamError::WrongFamily { wanted: "IPv6", .. })
        ));
        let mut v6 = Pool::new("fd00:9::/64".parse().unwrap(), None, None).unwrap();
        assert_eq!(
            v6.allocate_v6("n").unwrap(),
            "fd00:9::2".parse::<Ipv6Addr>().unwrap()
        );
        assert!(v6.allocate_v4("n").is_err());
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn lowest_free_skips_gateway_and_reuses_gaps() {
        let mut p = Pool::new(net("10.1.0.0/24"), None, None).unwrap();
        assert_eq!(p.gateway, ip("10.1.0.1"));
        assert_eq!(p.allocate("n").unwrap(), ip("10.1.0.2"));
        assert_eq!(p.allocate("n").unwrap(), ip("10.1.0.3"));
        p.release(ip("10.1.0.2"));
        assert_eq!(p.allocate("n").unwrap(), ip("10.1.0.2"));
        p.reserve(ip("10.1.0.4")).unwrap();
        assert_eq!(p.allocate("n").unwrap(), ip("10.1.0.5"));
    }

    #[test]
    fn gateway_in_the_middle() {
        let mut p = Pool::new(net("10.1.0.0/29"), None, Some(ip("10.1.0.2"))).unwrap();
        let got: Vec<_> = (0..5).map(|_| p.allocate("n").unwrap()).collect();
        assert_eq!(
            got,
            ["10.1.0.1", "10.1.0.3", "10.1.0.4", "10.1.0.5", "10.1.0.6"].map(ip)
        );
        assert!(matches!(p.allocate("n"), Err(IpamError::Exhausted { .. })));
    }

    #[test]
    fn ip_range_and_static_outside_it() {
        let mut p = Pool::new(net("172.20.0.0/16"), Some(net("172.20.240.0/20")), None).unwrap();
        assert_eq!(p.allocate("n").unwrap(), ip("172.20.240.1"));
        p.reserve(ip("172.20.128.2")).unwrap();
        assert_eq!(p.reserve(ip("172.20.128.2")), Err(IpamError::InUse));
        assert_eq!(
            p.reserve(ip("172.20.0.1")),
            Err(IpamError::InUse),
            "gateway"
        );
        assert_eq!(
            p.reserve(ip("172.20.255.255")),
            Err(IpamError::InUse),
            "broadcast"
        );
        assert_eq!(
            p.reserve(ip("10.0.0.1")),
            Err(IpamError::OutsideSubnet(ip("10.0.0.1")))
        );
    }

    #[test]
    fn small_range_like_docker() {
        // Docker 20.10 hands out .65, .66, .67 from 10.98.0.64/30, then reports exhaustion.
        let mut p = Pool::new(net("10.98.0.0/24"), Some(net("10.98.0.64/30")), None).unwrap();
        let got: Vec<_> = (0..3).map(|_| p.allocate("n").unwrap()).collect();
        assert_eq!(got, ["10.98.0.65", "10.98.0.66", "10.98.0.67"].map(ip));
        assert!(p.allocate("n").is_err());
    }

    #[test]
    fn v6_pools() {
        let mut p = Pool::new(net("fd00:1::/64"), None, None).unwrap();
        assert_eq!(p.gateway, ip("fd00:1::1"));
        assert_eq!(p.allocate("n").unwrap(), ip("fd00:1::2"));
    }

    #[test]
    fn bad_definitions() {
        assert!(matches!(
            Pool::new(net("10.0.0.0/24"), Some(net("10.1.0.0/24")), None),
            Err(IpamError::RangeOutside { .. })
        ));
        assert!(matches!(
            Pool::new(net("10.0.0.0/24"), None, Some(ip("10.0.1.1"))),
            Err(IpamError::BadGateway { .. })
        ));
        assert!(matches!(
            Pool::new(net("10.0.0.0/31"), None, None),
            Err(IpamError::TooSmall(_))
        ));
    }

    #[test]
    fn default_pool_avoids_taken() {
        let taken = [net("172.18.0.0/16"), net("172.19.5.0/24")];
        assert_eq!(pick_default(&taken).unwrap(), net("172.20.0.0/16"));
    }
}
