//! Requests as users send them (strings, as typed) and the pure checks that turn them into
//! something the agent can act on. Nothing here touches the kernel, the filesystem or the
//! state: every rule that can refuse a request before any work starts lives here, so bad input
//! changes nothing, and the checks can be fuzzed on their own.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use ipnet::IpNet;
use resolver::Link;

use crate::error::{AgentError, Result};
use crate::ids::{EndpointId, NetworkId};
use crate::ipam::{self, Pool};
use crate::state::{Driver, Endpoint, Network};

/// What `network create` asks for.
#[derive(Debug, Clone, Default)]
pub struct NetworkCreate {
    pub name: String,
    pub driver: Option<String>,
    pub internal: bool,
    pub attachable: bool,
    pub enable_ipv6: bool,
    /// `--ipv4=false` (the Engine's `EnableIPv4: false`): an IPv6-only network.
    pub ipv4_disabled: bool,
    pub labels: BTreeMap<String, String>,
    pub options: BTreeMap<String, String>,
    /// (subnet, ip-range, gateway), as strings: validated here, with Docker's errors.
    pub ipam: Vec<IpamRequest>,
}

#[derive(Debug, Clone, Default)]
pub struct IpamRequest {
    pub subnet: Option<String>,
    pub ip_range: Option<String>,
    pub gateway: Option<String>,
}

/// What `network connect` (or `create --network`) asks for; strings as the user gave them.
#[derive(Debug, Clone, Default)]
pub struct EndpointRequest {
    pub aliases: Vec<String>,
    pub links: Vec<String>,
    pub ipv4: Option<String>,
    pub ipv6: Option<String>,
    pub link_local: Vec<String>,
    /// The MAC of the interface inside (`--mac-address`; the Engine API's per-endpoint
    /// `MacAddress`).
    pub mac: Option<String>,
    /// The interface name inside (the Engine's `com.docker.network.endpoint.ifname` driver
    /// option; a CNI runtime's `CNI_IFNAME`).
    pub ifname: Option<String>,
    /// `--gw-priority` (the Engine API's `GwPriority`, 1.48).
    pub gw_priority: i64,
}

/// What `container create` asks for.
#[derive(Debug, Clone, Default)]
pub struct ContainerCreate {
    pub name: Option<String>,
    pub hostname: Option<String>,
    pub image: String,
    pub netns: Option<PathBuf>,
    pub labels: BTreeMap<String, String>,
    /// Networks to attach at start, in order.
    pub networks: Vec<(String, EndpointRequest)>,
    /// `--dns`, `--dns-search`, `--dns-option`, `--add-host`, as typed.
    pub dns: ContainerDnsRequest,
}

/// A container's DNS settings as the user typed them (`HostConfig.Dns`, `DnsSearch`,
/// `DnsOptions`, `ExtraHosts`).
#[derive(Debug, Clone, Default)]
pub struct ContainerDnsRequest {
    pub servers: Vec<String>,
    pub search: Vec<String>,
    pub options: Vec<String>,
    pub extra_hosts: Vec<String>,
}

/// The network option naming DNS servers for every container on it that has none of its own
/// (Podman's `network create --dns`): IP addresses separated by commas.
pub const NETWORK_DNS_OPTION: &str = "attach-agent.dns_servers";

fn dns_server(s: &str) -> Result<IpAddr> {
    let ip: IpAddr = s.trim().parse().map_err(|_| {
        AgentError::Invalid(format!(
            "invalid DNS server address {s:?}: an IPv4 or IPv6 address"
        ))
    })?;
    if ip.is_unspecified() || ip.is_multicast() {
        return Err(AgentError::Invalid(format!(
            "invalid DNS server address {s:?}: not a host's address"
        )));
    }
    Ok(ip)
}

/// The DNS servers of a network's options (none when the option is absent).
pub fn network_dns_servers(options: &BTreeMap<String, String>) -> Result<Vec<IpAddr>> {
    match options.get(NETWORK_DNS_OPTION) {
        None => Ok(vec![]),
        Some(list) => list
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(dns_server)
            .collect(),
    }
}

/// Check a container's DNS settings: addresses, domains and options that go into its
/// resolv.conf and hosts file must not be able to forge a line there (no spaces, newlines or
/// comment characters), with Docker's forms (`NAME:IP` or `NAME=IP`, `host-gateway`).
pub fn check_container_dns(req: &ContainerDnsRequest) -> Result<crate::state::ContainerDns> {
    let servers = req
        .servers
        .iter()
        .map(|s| dns_server(s))
        .collect::<Result<Vec<_>>>()?;
    let mut search = Vec::new();
    for d in req.search.iter().map(|d| d.trim()) {
        // "." alone: no search domains (resolv.conf's way of saying so).
        if d != "." && !crate::names::is_valid_hostname(d.trim_end_matches('.')) {
            return Err(AgentError::Invalid(format!(
                "invalid DNS search domain {d:?}: a domain name of letters, digits, '-' and dots"
            )));
        }
        search.push(d.to_string());
    }
    let mut options = Vec::new();
    for o in req.options.iter().map(|o| o.trim()) {
        let (key, value) = o.split_once(':').unwrap_or((o, ""));
        let key_ok = !key.is_empty()
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        let value_ok =
            !o.contains(':') || (!value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()));
        if !key_ok || !value_ok {
            return Err(AgentError::Invalid(format!(
                "invalid DNS option {o:?}: NAME or NAME:NUMBER, as ndots:2 or edns0"
            )));
        }
        options.push(o.to_string());
    }
    let mut extra_hosts = Vec::new();
    for h in &req.extra_hosts {
        // NAME:IP or NAME=IP; an IPv6 address has colons, a name none.
        let split = h.split_once('=').or_else(|| h.split_once(':'));
        let Some((name, addr)) = split else {
            return Err(AgentError::Invalid(format!(
                "bad format for add-host: {h:?} (NAME:IP, NAME=IP or NAME:host-gateway)"
            )));
        };
        let (name, addr) = (name.trim(), addr.trim());
        if !crate::names::is_valid_hostname(name) {
            return Err(AgentError::Invalid(format!(
                "invalid host name {name:?} in add-host: letters, digits, '-' and dots"
            )));
        }
        let addr = addr.trim_start_matches('[').trim_end_matches(']');
        let ip = if addr == "host-gateway" {
            None
        } else {
            Some(addr.parse::<IpAddr>().map_err(|_| {
                AgentError::Invalid(format!("invalid IP address in add-host: {addr:?}"))
            })?)
        };
        extra_hosts.push(crate::state::ExtraHost {
            name: name.to_string(),
            ip,
        });
    }
    Ok(crate::state::ContainerDns {
        servers,
        search,
        options,
        extra_hosts,
    })
}

/// A container or network name: DNS label rules, no `/` or `..`, short enough for a file name
/// under /run/netns. Checked before anything touches the filesystem or the table.
pub fn check_name(name: &str) -> Result<()> {
    if crate::names::is_valid_name(name) {
        Ok(())
    } else {
        Err(AgentError::BadName(
            name.to_string(),
            crate::names::NAME_MAX,
        ))
    }
}

/// A checked endpoint request.
#[derive(Debug)]
pub struct EndpointConfig {
    pub aliases: Vec<String>,
    pub links: Vec<Link>,
    pub v4: Option<Ipv4Addr>,
    pub v6: Option<Ipv6Addr>,
    pub link_local: Vec<IpAddr>,
    pub mac: Option<[u8; 6]>,
    pub ifname: Option<String>,
    pub gw_priority: i64,
}

impl EndpointConfig {
    /// The endpoint on network `network_id` this configures (a fresh endpoint id, not
    /// attached).
    pub fn into_endpoint(self, network_id: NetworkId) -> Endpoint {
        Endpoint {
            network_id,
            endpoint_id: EndpointId::random(),
            aliases: self.aliases,
            links: self.links,
            static_v4: self.v4,
            static_v6: self.v6,
            link_local: self.link_local,
            ifname: self.ifname,
            mac: self.mac,
            gw_priority: self.gw_priority,
            attached: None,
        }
    }
}

pub(crate) fn nonempty(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// Parse and check an endpoint request against the network it is for.
pub fn check_endpoint(req: &EndpointRequest, net: &Network) -> Result<EndpointConfig> {
    let v4 = match nonempty(&req.ipv4) {
        Some(s) => {
            let ip: Ipv4Addr = s.parse().map_err(|_| AgentError::BadIpv4(s.to_string()))?;
            if !net
                .v4
                .as_ref()
                .is_some_and(|p| p.subnet.contains(&IpAddr::V4(ip)))
            {
                return Err(ipam::IpamError::OutsideSubnet(IpAddr::V4(ip)).into());
            }
            Some(ip)
        }
        None => None,
    };
    let v6 = match nonempty(&req.ipv6) {
        Some(s) => {
            let ip: Ipv6Addr = s.parse().map_err(|_| AgentError::BadIpv6(s.to_string()))?;
            if !net
                .v6
                .as_ref()
                .is_some_and(|p| p.subnet.contains(&IpAddr::V6(ip)))
            {
                return Err(ipam::IpamError::OutsideSubnet(IpAddr::V6(ip)).into());
            }
            Some(ip)
        }
        None => None,
    };
    let mut link_local = Vec::new();
    for s in &req.link_local {
        let ip: IpAddr = s
            .trim()
            .parse()
            .map_err(|_| AgentError::BadLinkLocal(s.to_string()))?;
        let ok = match ip {
            IpAddr::V4(a) => a.is_link_local(),
            IpAddr::V6(a) => a.is_unicast_link_local(),
        };
        if !ok {
            return Err(AgentError::BadLinkLocal(s.to_string()));
        }
        link_local.push(ip);
    }
    let links = req
        .links
        .iter()
        .map(|l| {
            l.parse::<Link>()
                .map_err(|_| AgentError::BadLink(l.clone()))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut aliases = Vec::new();
    for a in req
        .aliases
        .iter()
        .map(|a| a.trim())
        .filter(|a| !a.is_empty())
    {
        // Served as a name and shipped to other hosts, where the same rule is checked.
        if !crate::names::is_valid_hostname(a) {
            return Err(AgentError::Invalid(format!(
                "invalid alias {a:?}: use DNS labels of letters, digits and '-', separated by dots"
            )));
        }
        if !aliases.iter().any(|x: &String| x == a) {
            aliases.push(a.to_string());
        }
    }
    let mac = match nonempty(&req.mac) {
        Some(s) => Some(crate::mac::parse(s).ok_or_else(|| {
            AgentError::Invalid(format!(
                "invalid MAC address {s:?}: six two-digit hex octets such as 02:42:ac:11:00:02, unicast and not zero"
            ))
        })?),
        None => None,
    };
    let ifname = match nonempty(&req.ifname) {
        Some(name) => {
            check_ifname(name)?;
            Some(name.to_string())
        }
        None => None,
    };
    Ok(EndpointConfig {
        aliases,
        links,
        v4,
        v6,
        link_local,
        mac,
        ifname,
        gw_priority: req.gw_priority,
    })
}

/// An interface name inside a namespace (`CNI_IFNAME`): what the kernel accepts (1 to 15
/// bytes, no `/`, no whitespace, not `.` or `..`), so it reaches netlink only when valid.
pub fn check_ifname(name: &str) -> Result<()> {
    if crate::names::is_valid_ifname(name) {
        Ok(())
    } else {
        Err(AgentError::Invalid(format!(
            "invalid interface name {name:?}: 1 to 15 characters, no '/', ':' or spaces"
        )))
    }
}

/// A hostname (`--hostname`): a DNS name, since it is served and written to /etc/hosts; a
/// newline or a space would forge extra lines there.
pub fn check_hostname(name: &str) -> Result<()> {
    let ok = crate::names::is_valid_hostname(name);
    if ok {
        Ok(())
    } else {
        Err(AgentError::Invalid(format!(
            "invalid hostname {name:?}: use DNS labels of letters, digits and '-', separated by dots"
        )))
    }
}

/// What a checked `network create` will build.
#[derive(Debug)]
pub struct NetworkPlan {
    pub driver: Driver,
    /// `None`: no IPv4 subnet was given; the agent picks a free default pool.
    pub v4: Option<Pool>,
    pub v6: Option<Pool>,
}

/// Check a `network create` against the subnets already taken, with Docker's errors.
pub fn plan_network(req: &NetworkCreate, taken: &[IpNet]) -> Result<NetworkPlan> {
    check_name(&req.name)?;
    network_dns_servers(&req.options)?;
    let driver = match req.driver.as_deref().filter(|d| !d.is_empty()) {
        None => Driver::Bridge,
        Some(name) => {
            Driver::from_name(name).ok_or_else(|| AgentError::NoSuchDriver(name.to_string()))?
        }
    };
    let (mut v4, mut v6) = (None, None);
    for r in &req.ipam {
        let parse = |s: &Option<String>| -> Result<Option<IpNet>> {
            nonempty(s)
                .map(ipam::parse_cidr)
                .transpose()
                .map_err(Into::into)
        };
        let subnet = parse(&r.subnet)?;
        let range = parse(&r.ip_range)?;
        let gateway = match nonempty(&r.gateway) {
            Some(g) => Some(
                g.parse::<IpAddr>()
                    .map_err(|_| AgentError::Invalid(format!("invalid gateway address: {g}")))?,
            ),
            None => None,
        };
        let Some(subnet) = subnet else {
            if range.is_some() || gateway.is_some() {
                return Err(AgentError::Invalid(
                    "ip-range and gateway need a --subnet".into(),
                ));
            }
            continue;
        };
        if taken.iter().any(|t| ipam::overlaps(t, &subnet)) {
            return Err(ipam::IpamError::Overlap.into());
        }
        let pool = Pool::new(subnet, range, gateway)?;
        let slot = if pool.is_v6() { &mut v6 } else { &mut v4 };
        if slot.is_some() {
            return Err(AgentError::Invalid(
                "one IPv4 and one IPv6 subnet per network are supported".into(),
            ));
        }
        *slot = Some(pool);
    }
    if req.ipv4_disabled {
        if v4.is_some() {
            return Err(AgentError::Invalid(
                "an IPv4 subnet cannot be given when IPv4 is disabled (--ipv4=false)".into(),
            ));
        }
        if !req.enable_ipv6 {
            return Err(AgentError::Invalid(
                "a network needs IPv4 or IPv6: --ipv4=false needs --ipv6".into(),
            ));
        }
        if driver == Driver::Overlay {
            return Err(AgentError::Invalid(
                "a global (overlay) network needs IPv4: its tunnels and the other hosts' records are keyed by IPv4 addresses".into(),
            ));
        }
    }
    if v6.is_some() && !req.enable_ipv6 {
        return Err(AgentError::Invalid(
            "an IPv6 subnet needs --ipv6 (EnableIPv6)".into(),
        ));
    }
    if req.enable_ipv6 && v6.is_none() {
        return Err(AgentError::Invalid(
            "--ipv6 needs an IPv6 --subnet: there is no default IPv6 pool".into(),
        ));
    }
    Ok(NetworkPlan { driver, v4, v6 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::test_network;

    fn req(f: impl FnOnce(&mut EndpointRequest)) -> EndpointRequest {
        let mut r = EndpointRequest::default();
        f(&mut r);
        r
    }

    #[test]
    fn endpoint_requests_are_checked_with_docker_errors() {
        let net = test_network("front", "10.5.0.0/24", Some("fd00:5::/64"));
        let ok = check_endpoint(
            &req(|r| {
                r.ipv4 = Some(" 10.5.0.7 ".into());
                r.ipv6 = Some("fd00:5::7".into());
                r.aliases = vec!["db".into(), " db ".into(), "".into(), "sql".into()];
                r.links = vec!["web:w".into(), "cache".into()];
                r.link_local = vec!["169.254.1.1".into(), "fe80::1".into()];
            }),
            &net,
        )
        .unwrap();
        assert_eq!(ok.v4, Some(Ipv4Addr::new(10, 5, 0, 7)));
        assert_eq!(
            ok.aliases,
            ["db", "sql"],
            "trimmed, empty and repeated dropped"
        );
        assert_eq!(ok.links[1].alias, "cache");
        assert_eq!(ok.link_local.len(), 2);

        let err = |r: EndpointRequest| check_endpoint(&r, &net).unwrap_err().to_string();
        assert_eq!(
            err(req(|r| r.ipv4 = Some("10.5.0".into()))),
            "invalid IPv4 address: 10.5.0"
        );
        assert_eq!(
            err(req(|r| r.ipv4 = Some("10.6.0.1".into()))),
            "no configured subnet contains IP address 10.6.0.1"
        );
        assert_eq!(
            err(req(|r| r.ipv6 = Some("fd00:5::zz".into()))),
            "invalid IPv6 address: fd00:5::zz"
        );
        assert_eq!(
            err(req(|r| r.ipv6 = Some("fd00:6::1".into()))),
            "no configured subnet contains IP address fd00:6::1"
        );
        assert_eq!(
            err(req(|r| r.link_local = vec!["10.5.0.9".into()])),
            "invalid link-local IP address: 10.5.0.9"
        );
        assert_eq!(
            err(req(|r| r.links = vec!["a:b:c".into()])),
            "bad format for links: a:b:c"
        );
        // A network without IPv6 refuses every IPv6 address.
        let v4_only = test_network("back", "10.6.0.0/24", None);
        assert!(check_endpoint(&req(|r| r.ipv6 = Some("fd00:6::1".into())), &v4_only).is_err());
    }

    #[test]
    fn container_dns_settings_cannot_forge_a_line() {
        let req = |f: fn(&mut ContainerDnsRequest)| {
            let mut r = ContainerDnsRequest::default();
            f(&mut r);
            check_container_dns(&r)
        };
        let ok = req(|r| {
            r.servers = vec!["10.0.0.53".into(), "fd00::53".into()];
            r.search = vec!["example.test".into(), ".".into()];
            r.options = vec!["ndots:2".into(), "edns0".into(), "use-vc".into()];
            r.extra_hosts = vec![
                "db:10.1.2.3".into(),
                "gw=host-gateway".into(),
                "v6:[fd00::1]".into(),
                "v6b:fd00::2".into(),
            ];
        })
        .unwrap();
        assert_eq!(ok.extra_hosts[1].ip, None);
        assert_eq!(ok.extra_hosts[2].ip, Some("fd00::1".parse().unwrap()));
        assert_eq!(ok.extra_hosts[3].ip, Some("fd00::2".parse().unwrap()));
        for bad in [
            req(|r| r.servers = vec!["nope".into()]),
            req(|r| r.servers = vec!["0.0.0.0".into()]),
            req(|r| r.search = vec!["a\nnameserver 6.6.6.6".into()]),
            req(|r| r.search = vec!["a b".into()]),
            req(|r| r.options = vec!["ndots:2\nnameserver 6.6.6.6".into()]),
            req(|r| r.options = vec!["ndots:".into()]),
            req(|r| r.options = vec!["nd ots".into()]),
            req(|r| r.extra_hosts = vec!["x\n10.0.0.1 evil:10.0.0.1".into()]),
            req(|r| r.extra_hosts = vec!["nohost".into()]),
        ] {
            assert!(bad.is_err(), "{bad:?}");
        }
        let mut opts = BTreeMap::new();
        opts.insert(
            NETWORK_DNS_OPTION.to_string(),
            "10.0.0.1, fd00::1".to_string(),
        );
        assert_eq!(network_dns_servers(&opts).unwrap().len(), 2);
        opts.insert(NETWORK_DNS_OPTION.to_string(), "10.0.0.1,bad".to_string());
        assert!(network_dns_servers(&opts).is_err());
    }

    #[test]
    fn names_and_hostnames_cannot_reach_a_path_or_a_hosts_line() {
        assert!(check_name("web-1.example_x").is_ok());
        for bad in ["", "../x", "a/b", "-a", &"a".repeat(65), "a b"] {
            assert!(
                matches!(check_name(bad), Err(AgentError::BadName(..))),
                "{bad:?}"
            );
        }
        assert!(check_hostname("db.internal").is_ok());
        for bad in ["", "a..b", "-a", "a b", "a\nb", &"a".repeat(64)] {
            assert!(check_hostname(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn network_plans_pick_drivers_and_refuse_overlaps() {
        let create = |driver: Option<&str>, subnet: Option<&str>| NetworkCreate {
            name: "n".into(),
            driver: driver.map(String::from),
            ipam: subnet
                .map(|s| IpamRequest {
                    subnet: Some(s.into()),
                    ..Default::default()
                })
                .into_iter()
                .collect(),
            ..Default::default()
        };
        let plan = plan_network(&create(None, Some("10.7.0.0/24")), &[]).unwrap();
        assert_eq!(plan.driver, Driver::Bridge);
        assert!(plan.v4.is_some() && plan.v6.is_none());
        assert_eq!(
            plan_network(&create(Some("overlay"), None), &[])
                .unwrap()
                .driver,
            Driver::Overlay
        );
        assert_eq!(
            plan_network(&create(Some("macvlan"), None), &[])
                .unwrap_err()
                .to_string(),
            "plugin \"macvlan\" not found"
        );
        let taken = ["10.7.0.0/16".parse().unwrap()];
        assert!(matches!(
            plan_network(&create(None, Some("10.7.1.0/24")), &taken),
            Err(AgentError::Ipam(ipam::IpamError::Overlap))
        ));
    }
}
