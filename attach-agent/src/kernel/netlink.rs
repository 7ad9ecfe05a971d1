//! Bridges, veths, VXLAN tunnels and their forwarding entries, addresses and routes, in the host and inside a namespace, over rtnetlink.
//! The only place that talks to the kernel about links (as in netavark).
//!
//! A [`Netlink`] is a handle on one namespace: [`Netlink::host`] for the agent's own, and
//! [`Netlink::inside`] for a container's, whose netlink socket is opened on a thread that has
//! entered that namespace (a socket stays in the namespace it was created in).

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;

use futures::TryStreamExt;
use ipnet::IpNet;
use netlink_packet_route::address::{AddressAttribute, AddressFlags};
use netlink_packet_route::link::{
    AfSpecInet6, AfSpecUnspec, In6AddrGenMode, InfoData, InfoKind, InfoVeth, LinkAttribute,
};
use netlink_packet_route::neighbour::{NeighbourFlags, NeighbourMessage, NeighbourState};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use rtnetlink::{
    Handle, LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVxlan, RouteMessageBuilder,
};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum NetlinkError {
    #[error("netlink: {what}: {source}")]
    Kernel {
        what: String,
        source: rtnetlink::Error,
    },
    #[error("netlink socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("no link named {0}")]
    NoLink(String),
}

impl NetlinkError {
    /// The kernel's error number, when the kernel refused the request.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Kernel {
                source: rtnetlink::Error::NetlinkError(m),
                ..
            } => Some(m.raw_code().abs()),
            _ => None,
        }
    }
}

type Result<T> = std::result::Result<T, NetlinkError>;

/// Whose a link is: the agent writes it into the `ifalias` of every link it makes, and the
/// start-up sweep deletes only links that carry its own. Names alone cannot say it: a second
/// agent with the same prefix, or anything else naming links alike, would lose its links to
/// the first agent's restart. (`ifalias` because the kernel keeps it for every kind of link
/// and `ip link` shows it.) The kernel ignores `ifalias` in the request that creates a link, so
/// it is set by a second request; the creating request carries the link's group
/// (`IFLA_GROUP`, which the kernel does take at creation) derived from the same id, so a link
/// left by a crash between the two requests is still known for this agent's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkMark {
    alias: String,
    group: u32,
}

impl LinkMark {
    /// The mark of the agent whose id is `id`.
    pub fn of(id: &crate::ids::InstanceId) -> LinkMark {
        // 31 bits of the id (iproute2 takes groups up to 2^31 - 1: `ip link show group N`
        // lists them), and never group 0, every link's default.
        let group = (u32::from_str_radix(&id[..8], 16).unwrap_or(0) & 0x7fff_ffff).max(1);
        LinkMark {
            alias: format!("attach-agent:{id}"),
            group,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.alias
    }

    pub fn group(&self) -> u32 {
        self.group
    }
}

/// A link as the sweep sees it.
#[derive(Debug, Clone)]
pub struct LinkInfo {
    pub name: String,
    /// Its `ifalias`, if it has one.
    pub alias: Option<String>,
    /// Its group (`IFLA_GROUP`; 0 by default).
    pub group: u32,
}

impl LinkInfo {
    /// Whether the agent with `mark` made it: its alias, or, without one (a crash just after
    /// the link was made), its group.
    pub fn is_marked(&self, mark: &LinkMark) -> bool {
        match self.alias.as_deref() {
            Some(a) => a == mark.as_str(),
            None => self.group == mark.group,
        }
    }
}

/// Have the kernel drop, before they are queued, every message of `socket`'s link group but
/// a link's deletion (`RTM_DELLINK`, family `AF_UNSPEC`): a socket filter (classic BPF).
///
/// Why: each connect makes the kernel announce its veth eight times or so (made, enslaved,
/// up, its alias, the bridge's own port messages), 0.4–2 KB each. Unfiltered, every one woke
/// the agent and was parsed whole on the CPU the connect itself needs (with no listener at
/// all, `compare --agent 200` connected 5–10 % faster over three alternating pairs; the
/// kernel still builds the announcements for a filtered listener, so not all of that is
/// won back). The kernel runs the filter on each announcement (one message an skb), so the
/// listener wakes only for the deletions it is there for (strace: none else arrive).
fn only_link_deletions(socket: &rtnetlink::sys::Socket) -> std::io::Result<()> {
    // Classic BPF loads halfwords big-endian; the header holds them in the host's order.
    let dellink = u32::from(u16::from_be_bytes(libc::RTM_DELLINK.to_ne_bytes()));
    let unspec = libc::AF_UNSPEC as u32;
    let op = |code: u32, jt: u8, jf: u8, k: u32| libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    };
    let program = [
        // nlmsghdr.nlmsg_type (offset 4) == RTM_DELLINK, else drop.
        op(libc::BPF_LD | libc::BPF_H | libc::BPF_ABS, 0, 0, 4),
        op(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K, 0, 3, dellink),
        // ifinfomsg.ifi_family (just after the 16-byte header) == AF_UNSPEC, else drop.
        op(libc::BPF_LD | libc::BPF_B | libc::BPF_ABS, 0, 0, 16),
        op(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K, 0, 1, unspec),
        op(libc::BPF_RET | libc::BPF_K, 0, 0, u32::MAX),
        op(libc::BPF_RET | libc::BPF_K, 0, 0, 0),
    ];
    let fprog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_ptr().cast_mut(),
    };
    // SAFETY: `fprog` points at `program`, both alive for the call; the kernel copies the
    // program and checks it before attaching it; the descriptor is the socket's own.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            std::ptr::addr_of!(fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// A link's name, from its message.
fn if_name(l: &netlink_packet_route::link::LinkMessage) -> Option<String> {
    l.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.clone()),
        _ => None,
    })
}

fn kernel(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetlinkError {
    let what = what.into();
    move |source| NetlinkError::Kernel { what, source }
}

/// A netlink handle on one network namespace. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Netlink {
    handle: Handle,
}

impl Netlink {
    /// The agent's own namespace.
    pub fn host() -> Result<Netlink> {
        let (conn, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    /// The namespace `ns`. Must be called inside a tokio runtime.
    pub fn inside(ns: &File) -> Result<Netlink> {
        let rt = tokio::runtime::Handle::current();
        let rt2 = rt.clone();
        let (conn, handle) = crate::kernel::netns::run_in(ns, move || {
            let _enter = rt2.enter();
            let (conn, handle, _) = rtnetlink::new_connection()?;
            Ok((conn, handle))
        })?;
        rt.spawn(conn);
        Ok(Netlink { handle })
    }

    /// The names of links deleted from the host's namespace from now on, as the kernel
    /// announces them (RTM_DELLINK on the link multicast group): how the agent learns, at once
    /// and without polling, that a container's namespace died and took its veth with it.
    /// Only real deletions: the bridge module also sends RTM_DELLINK (family `AF_BRIDGE`)
    /// for a port that merely left its bridge, as all of them do when the bridge is deleted.
    pub fn deleted_links() -> Result<futures::stream::BoxStream<'static, String>> {
        use futures::StreamExt;
        use rtnetlink::packet_core::NetlinkPayload;
        use rtnetlink::packet_route::RouteNetlinkMessage;
        use rtnetlink::sys::AsyncSocket;
        let (mut conn, _handle, messages) =
            rtnetlink::new_multicast_connection(&[rtnetlink::MulticastGroup::Link])?;
        only_link_deletions(conn.socket_mut().socket_ref())?;
        tokio::spawn(conn);
        Ok(messages
            .filter_map(|(msg, _)| async move {
                match msg.payload {
                    NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(l))
                        if l.header.interface_family
                            == netlink_packet_route::AddressFamily::Unspec =>
                    {
                        if_name(&l)
                    }
                    _ => None,
                }
            })
            .boxed())
    }

    /// Index of the link named `name`, if there is one.
    pub async fn index_of(&self, name: &str) -> Result<Option<u32>> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match links.try_next().await {
            Ok(Some(l)) => Ok(Some(l.header.index)),
            Ok(None) => Ok(None),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code().abs() == libc::ENODEV => {
                Ok(None)
            }
            Err(e) => Err(kernel(format!("get link {name}"))(e)),
        }
    }

    /// Names of every link in this namespace.
    pub async fn link_names(&self) -> Result<Vec<String>> {
        Ok(self.links().await?.into_iter().map(|l| l.name).collect())
    }

    /// Every link in this namespace, with its mark.
    pub async fn links(&self) -> Result<Vec<LinkInfo>> {
        let links: Vec<_> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(kernel("list links"))?;
        Ok(links
            .iter()
            .filter_map(|l| {
                let alias = l.attributes.iter().find_map(|a| match a {
                    LinkAttribute::IfAlias(s) => Some(s.clone()),
                    _ => None,
                });
                let group = l
                    .attributes
                    .iter()
                    .find_map(|a| match a {
                        LinkAttribute::Group(g) => Some(*g),
                        _ => None,
                    })
                    .unwrap_or(0);
                Some(LinkInfo {
                    name: if_name(l)?,
                    alias,
                    group,
                })
            })
            .collect())
    }

    /// Put `mark` on link `name` (one made just now, or adopted at start).
    pub async fn set_mark(&self, name: &str, mark: &LinkMark) -> Result<()> {
        self.handle
            .link()
            .set(
                LinkUnspec::new_with_name(name)
                    .alias(mark.as_str().to_string())
                    .build(),
            )
            .execute()
            .await
            .map_err(kernel(format!("mark link {name}")))
    }

    /// Make sure bridge `name` exists with MAC `mac`, carries `addrs` (no DAD), `mark` and
    /// is up. An existing bridge is adopted (agent restart). Returns its index.
    pub async fn ensure_bridge(
        &self,
        name: &str,
        mac: [u8; 6],
        addrs: &[(IpAddr, u8)],
        mark: &LinkMark,
    ) -> Result<u32> {
        // A fixed MAC: otherwise the bridge takes the lowest of its ports' MACs and changes as
        // containers come and go, which flushes every neighbour's ARP entry for it.
        let index = self
            .add_or_adopt(name, || {
                LinkBridge::new(name)
                    .address(mac.to_vec())
                    .append_extra_attribute(LinkAttribute::Group(mark.group()))
                    .build()
            })
            .await?;
        self.handle
            .link()
            .set(
                LinkUnspec::new_with_index(index)
                    .address(mac.to_vec())
                    .alias(mark.as_str().to_string())
                    .up()
                    .build(),
            )
            .execute()
            .await
            .map_err(kernel(format!("set bridge {name} up")))?;
        for &(ip, prefix) in addrs {
            self.add_address(index, ip, prefix).await?;
        }
        Ok(index)
    }

    /// The index of link `name`, made from `msg` first when it does not exist (one that
    /// appeared meanwhile is adopted).
    async fn add_or_adopt(
        &self,
        name: &str,
        msg: impl FnOnce() -> netlink_packet_route::link::LinkMessage,
    ) -> Result<u32> {
        if self.index_of(name).await?.is_none() {
            if let Err(e) = self.handle.link().add(msg()).execute().await {
                let e = kernel(format!("add link {name}"))(e);
                if e.errno() != Some(libc::EEXIST) {
                    return Err(e);
                }
            }
        }
        self.index_of(name)
            .await?
            .ok_or_else(|| NetlinkError::NoLink(name.into()))
    }

    /// Add an address without duplicate address detection (replacing an identical one).
    pub async fn add_address(&self, index: u32, ip: IpAddr, prefix: u8) -> Result<()> {
        let mut req = self.handle.address().add(index, ip, prefix).replace();
        req.message_mut()
            .attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
        req.execute()
            .await
            .map_err(kernel(format!("add address {ip}/{prefix}")))
    }

    /// Delete link `name` (a veth takes its peer with it). A missing link is not an error.
    pub async fn delete_link(&self, name: &str) -> Result<()> {
        let Some(index) = self.index_of(name).await? else {
            return Ok(());
        };
        match self.handle.link().del(index).execute().await {
            Ok(()) => Ok(()),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code().abs() == libc::ENODEV => Ok(()),
            Err(e) => Err(kernel(format!("delete link {name}"))(e)),
        }
    }

    /// Create a veth pair: `host_name` here, a port of `bridge` and up; its peer created
    /// directly inside `ns` as `peer_name` with MAC `peer_mac` (never visible in the host).
    /// `mtu`: both ends (an overlay's tunnel header needs room); `None`: the kernel's default.
    /// The host end carries `mark`'s group; its alias is the caller's to set
    /// ([`Netlink::set_mark`]), when it suits it (the kernel takes no alias at creation).
    #[allow(clippy::too_many_arguments)]
    pub async fn add_veth(
        &self,
        host_name: &str,
        bridge: u32,
        ns: &File,
        peer_name: &str,
        peer_mac: [u8; 6],
        mtu: Option<u32>,
        mark: &LinkMark,
    ) -> Result<()> {
        let mut peer = LinkMessageBuilder::<LinkUnspec>::new()
            .name(peer_name.to_string())
            .address(peer_mac.to_vec())
            .setns_by_fd(ns.as_raw_fd());
        let mut msg = LinkMessageBuilder::<LinkUnspec>::new_with_info_kind(InfoKind::Veth)
            .name(host_name.to_string())
            .controller(bridge)
            .append_extra_attribute(LinkAttribute::Group(mark.group()))
            .up();
        if let Some(m) = mtu {
            peer = peer.mtu(m);
            msg = msg.mtu(m);
        }
        let msg = msg
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer.build())))
            .build();
        self.handle
            .link()
            .add(msg)
            .execute()
            .await
            .map_err(kernel(format!("add veth {host_name}")))
    }

    /// Make link `name` a port of `bridge`, up (a veth whose bridge was made again).
    pub async fn enslave(&self, name: &str, bridge: u32) -> Result<()> {
        self.handle
            .link()
            .set(
                LinkUnspec::new_with_name(name)
                    .controller(bridge)
                    .up()
                    .build(),
            )
            .execute()
            .await
            .map_err(kernel(format!("add {name} to its bridge")))
    }

    /// Keep link `index` from making itself an IPv6 link-local address (addrgenmode none),
    /// before it goes up: an interface given no IPv6 address then sends no IPv6 of its own.
    ///
    /// Why: with a link-local address, every interface coming up sends duplicate address
    /// detection, MLD reports and a router solicitation, which a bridge with no multicast
    /// querier floods to every port, so each connect costs more the more containers share the
    /// bridge (README, issue 19: 3.3x over 1,000 ports; flat without). Addresses given
    /// explicitly, fe80 ones too, are still taken. IPv6 itself stays on (a router
    /// advertisement could still give the interface an address, as before): Docker since
    /// 26.0.2 sets disable_ipv6, a sysctl, which would need a thread inside the namespace on
    /// every connect; this is one request on the socket already there.
    ///
    /// A kernel without IPv6 (`ipv6.disable=1`), or an interface IPv6 cannot run on (MTU
    /// below 1280), refuses the request (EAFNOSUPPORT): there is no link-local address to
    /// keep away, so that is success.
    pub async fn without_ipv6_link_local(&self, index: u32) -> Result<()> {
        let af_spec =
            LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(vec![AfSpecInet6::AddrGenMode(
                In6AddrGenMode::None,
            )])]);
        let done = self
            .handle
            .link()
            .set(
                LinkUnspec::new_with_index(index)
                    .append_extra_attribute(af_spec)
                    .build(),
            )
            .execute()
            .await
            .map_err(kernel("set addrgenmode none"));
        match done {
            Err(e) if e.errno() == Some(libc::EAFNOSUPPORT) => Ok(()),
            done => done,
        }
    }

    /// Bring a link up.
    pub async fn set_up(&self, index: u32) -> Result<()> {
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(kernel("set link up"))
    }

    /// Make the default route of `gateway`'s family go via `gateway`, replacing one via
    /// another (the container's default gateway moved to another network).
    pub async fn replace_default_route(&self, gateway: IpAddr) -> Result<()> {
        let msg = match gateway {
            IpAddr::V4(g) => RouteMessageBuilder::<Ipv4Addr>::new().gateway(g).build(),
            IpAddr::V6(g) => RouteMessageBuilder::<Ipv6Addr>::new().gateway(g).build(),
        };
        self.handle
            .route()
            .add(msg)
            .replace()
            .execute()
            .await
            .map_err(kernel(format!("replace the default route via {gateway}")))
    }

    /// Add a default route via `gateway`; one already there (another plugin's, in a
    /// runtime's namespace) is kept.
    pub async fn add_default_route(&self, gateway: IpAddr) -> Result<()> {
        let msg = match gateway {
            IpAddr::V4(g) => RouteMessageBuilder::<Ipv4Addr>::new().gateway(g).build(),
            IpAddr::V6(g) => RouteMessageBuilder::<Ipv6Addr>::new().gateway(g).build(),
        };
        match self.handle.route().add(msg).execute().await {
            Ok(()) => Ok(()),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code().abs() == libc::EEXIST => Ok(()),
            Err(e) => Err(kernel(format!("add default route via {gateway}"))(e)),
        }
    }

    /// The gateway of this namespace's default route of that family (main table), if any.
    pub async fn default_gateway(&self, v6: bool) -> Result<Option<IpAddr>> {
        Ok(self
            .routes(v6)
            .await?
            .iter()
            .filter(|r| r.header.destination_prefix_length == 0)
            .find_map(|r| {
                r.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Gateway(RouteAddress::Inet(ip)) => Some(IpAddr::V4(*ip)),
                    RouteAttribute::Gateway(RouteAddress::Inet6(ip)) => Some(IpAddr::V6(*ip)),
                    _ => None,
                })
            }))
    }

    /// Every route of one family in this namespace (one dump).
    async fn routes(&self, v6: bool) -> Result<Vec<RouteMessage>> {
        let request = if v6 {
            self.handle
                .route()
                .get(RouteMessageBuilder::<Ipv6Addr>::new().build())
        } else {
            self.handle
                .route()
                .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        };
        request
            .execute()
            .try_collect()
            .await
            .map_err(kernel("list routes"))
    }

    /// Point the default route of `gateway`'s family at `gateway` only if it now goes via
    /// one of `ours` (the gateways of the agent's own endpoints) or there is none: a route
    /// another plugin set in a runtime's namespace is never taken over.
    pub async fn move_default_route(&self, gateway: IpAddr, ours: &[IpAddr]) -> Result<()> {
        match self.default_gateway(gateway.is_ipv6()).await? {
            Some(current) if !ours.contains(&current) => Ok(()),
            _ => self.replace_default_route(gateway).await,
        }
    }

    /// The IPv4 destinations routed in this namespace (not the default route): a default
    /// address pool must not overlap any of them.
    pub async fn ipv4_routes(&self) -> Result<Vec<IpNet>> {
        Ok(self
            .routes(false)
            .await?
            .iter()
            .filter(|r| r.header.destination_prefix_length > 0)
            .filter_map(|r| {
                r.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Destination(RouteAddress::Inet(ip)) => {
                        IpNet::new(IpAddr::V4(*ip), r.header.destination_prefix_length).ok()
                    }
                    _ => None,
                })
            })
            .filter(|n| !n.addr().is_loopback())
            .collect())
    }

    /// Make sure VXLAN device `name` exists: id `vni`, from `local` on UDP `port`, no
    /// learning (remote MACs come only from [`Netlink::add_remote`]) and ARP answered from its
    /// neighbour entries (`proxy`), so nothing is flooded across the tunnel: ARP for the
    /// gateway, which every host's bridge carries, stays on the local bridge. A port of
    /// `bridge`, up, carrying `mark`. Returns its index.
    pub async fn ensure_vxlan(
        &self,
        name: &str,
        vni: u32,
        local: IpAddr,
        port: u16,
        bridge: u32,
        mark: &LinkMark,
    ) -> Result<u32> {
        let index = self
            .add_or_adopt(name, || {
                let b = LinkVxlan::new(name, vni)
                    .port(port)
                    .learning(false)
                    .proxy(true)
                    .l2miss(false)
                    .l3miss(false);
                let b = match local {
                    IpAddr::V4(a) => b.local(a),
                    IpAddr::V6(a) => b.local6(a),
                };
                b.controller(bridge)
                    .append_extra_attribute(LinkAttribute::Group(mark.group()))
                    .up()
                    .build()
            })
            .await?;
        self.handle
            .link()
            .set(
                LinkUnspec::new_with_index(index)
                    .controller(bridge)
                    .alias(mark.as_str().to_string())
                    .up()
                    .build(),
            )
            .execute()
            .await
            .map_err(kernel(format!("set vxlan {name} up")))?;
        Ok(index)
    }

    /// The two entries one remote endpoint needs on a VXLAN device: its MAC is behind
    /// `host` (forwarding entry), and its address has that MAC (neighbour entry, for the
    /// device's ARP proxy). Replaces what was there.
    pub async fn add_remote(
        &self,
        vxlan: u32,
        ip: IpAddr,
        mac: [u8; 6],
        host: IpAddr,
    ) -> Result<()> {
        self.handle
            .neighbours()
            .add_bridge(vxlan, &mac)
            .flags(NeighbourFlags::Own)
            .destination(host)
            .replace()
            .execute()
            .await
            .map_err(kernel(format!("add forwarding entry for {ip}")))?;
        self.handle
            .neighbours()
            .add(vxlan, ip)
            .link_layer_address(&mac)
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await
            .map_err(kernel(format!("add neighbour entry for {ip}")))
    }

    /// Remove what [`Netlink::add_remote`] added; entries already gone are not an error.
    pub async fn remove_remote(
        &self,
        vxlan: u32,
        ip: IpAddr,
        mac: [u8; 6],
        host: IpAddr,
    ) -> Result<()> {
        let mut fdb = self
            .handle
            .neighbours()
            .add_bridge(vxlan, &mac)
            .flags(NeighbourFlags::Own)
            .destination(host);
        let mut neigh = self
            .handle
            .neighbours()
            .add(vxlan, ip)
            .link_layer_address(&mac);
        let msgs: [NeighbourMessage; 2] = [fdb.message_mut().clone(), neigh.message_mut().clone()];
        for m in msgs {
            match self.handle.neighbours().del(m).execute().await {
                Ok(()) => {}
                Err(rtnetlink::Error::NetlinkError(e))
                    if [libc::ENOENT, libc::ENODEV].contains(&e.raw_code().abs()) => {}
                Err(e) => return Err(kernel(format!("remove entries for {ip}"))(e)),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A namespace of its own for one test (`ip netns`, named `aanlt-TEST-PID`; removed on
    /// drop, also on failure, and its test's leftovers swept first).
    struct TestNs(String);

    impl TestNs {
        fn new(name: &str) -> TestNs {
            assert_eq!(
                // SAFETY: geteuid has no preconditions.
                unsafe { libc::geteuid() },
                0,
                "this test makes a network namespace: run it as root"
            );
            // Leftovers of an earlier run that died before its guard ran.
            let prefix = format!("aanlt-{name}-");
            for old in std::fs::read_dir("/run/netns")
                .into_iter()
                .flatten()
                .flatten()
            {
                let old = old.file_name().to_string_lossy().to_string();
                if old.starts_with(&prefix) {
                    let _ = ip(&["netns", "del", &old]);
                }
            }
            let ns = TestNs(format!("{prefix}{}", std::process::id()));
            assert!(ip(&["netns", "add", &ns.0]), "ip netns add {}", ns.0);
            ns
        }

        fn ip(&self, args: &[&str]) -> bool {
            let mut all = vec!["-n", self.0.as_str()];
            all.extend_from_slice(args);
            ip(&all)
        }
    }

    impl Drop for TestNs {
        fn drop(&mut self) {
            let _ = ip(&["netns", "del", &self.0]);
        }
    }

    fn ip(args: &[&str]) -> bool {
        std::process::Command::new("ip")
            .args(args)
            .status()
            .is_ok_and(|s| s.success())
    }

    /// An interface IPv6 runs on takes addrgenmode none; one it cannot run on (MTU below
    /// IPv6's 1280: the kernel refuses, as a kernel without IPv6 does) is left as it is,
    /// without an error, since it has no link-local address to keep away.
    #[tokio::test]
    async fn addrgenmode_none_is_set_and_an_interface_without_ipv6_is_no_error() {
        let ns = TestNs::new("agm");
        assert!(ns.ip(&["link", "add", "six", "type", "veth", "peer", "name", "sixp"]));
        assert!(ns.ip(&[
            "link", "add", "small", "mtu", "1000", "type", "veth", "peer", "name", "smallp", "mtu",
            "1000",
        ]));
        let file = File::open(format!("/run/netns/{}", ns.0)).unwrap();
        let inside = Netlink::inside(&file).unwrap();
        let six = inside.index_of("six").await.unwrap().unwrap();
        let small = inside.index_of("small").await.unwrap().unwrap();
        inside.without_ipv6_link_local(six).await.unwrap();
        inside.without_ipv6_link_local(small).await.unwrap();
        let shown = std::process::Command::new("ip")
            .args(["-n", &ns.0, "-d", "link", "show", "six"])
            .output()
            .unwrap();
        let shown = String::from_utf8_lossy(&shown.stdout).to_string();
        assert!(shown.contains("addrgenmode none"), "{shown}");
        // The kernel really refuses the request for the small one (what the test is about).
        let refused = std::process::Command::new("ip")
            .args(["-n", &ns.0, "link", "set", "small", "addrgenmode", "none"])
            .output()
            .unwrap();
        let why = String::from_utf8_lossy(&refused.stderr).to_string();
        assert!(!refused.status.success(), "the kernel took it: {why}");
        assert!(why.contains("Address family not supported"), "{why}");
    }
}
