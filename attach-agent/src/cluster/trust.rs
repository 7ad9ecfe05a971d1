//! What an agent believes from the cluster store: every record is checked like API input before
//! it reaches the state, the record table, the kernel or a file, because anything that can write
//! to the store (another host, a compromised one, an operator's typo) can write anything there.
//!
//! A record that fails is skipped with one warning naming its key; the agent goes on with the
//! rest. The checks that need only the store's contents live here ([`network`], [`endpoint`]);
//! those that need this host's own state (a local container's id, an address a local endpoint
//! holds, what the record table accepts) are made by the mirror before it applies a record.

use std::collections::BTreeMap;
use std::net::IpAddr;

use thiserror::Error;

use super::layout::{Claim, EndpointRecord, NetworkRecord};
use super::store::LeaseId;
use crate::driver::Driver;
use crate::ids::{EndpointId, NetworkId};
use crate::ipam::{mac_for, Pool};
use crate::names::{is_valid_hostname, is_valid_name};

/// The largest VXLAN network identifier (24 bits).
const MAX_VNI: u32 = (1 << 24) - 1;

/// Why a record from the store is not believed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Refused {
    #[error("does not decode: {0}")]
    Undecodable(String),
    #[error("its key does not name ids of the layout")]
    BadKey,
    #[error("its ids differ from its key's")]
    KeyMismatch,
    #[error("invalid {what} {name:?}")]
    BadName { what: &'static str, name: String },
    #[error("VXLAN id {0} is not in 1..=16777215")]
    BadVni(u32),
    #[error("driver {0} is not a global network's")]
    NotGlobal(String),
    #[error("pool {0}: {1}")]
    BadPool(String, &'static str),
    #[error("it would change a network already built (network records never change)")]
    NetworkChanged,
    #[error("VXLAN id {0} is another network's")]
    VniInUse(u32),
    #[error("its name or subnet is a local network's")]
    ClashesWithLocal,
    #[error("host address {0} is not a unicast address")]
    BadHost(IpAddr),
    #[error("address {0} is its network's gateway, network or broadcast address")]
    Reserved(IpAddr),
    #[error("its network is not in the store")]
    NoNetwork,
    #[error("address {0} is outside its network's subnets")]
    OutsideSubnet(IpAddr),
    #[error("MAC address does not match its IPv4 address")]
    WrongMac,
    #[error("not on the lease of its host {0}")]
    NotOnHostsLease(IpAddr),
    #[error("address {0} is not claimed by this endpoint of this host")]
    NotClaimed(IpAddr),
    #[error("its container id is a container of this host")]
    LocalContainerId,
    #[error("address {0} is held by another endpoint")]
    AddressInUse(IpAddr),
    #[error("container id {0} is another endpoint's on this network")]
    ContainerIdInUse(String),
    #[error("the record table refused it: {0}")]
    TableRefused(String),
}

/// A network definition: its key's id, a valid name, a VXLAN id no other network has, an
/// overlay driver, sane pools; and no change to one already believed.
pub fn network(
    known: &BTreeMap<NetworkId, NetworkRecord>,
    key: &NetworkId,
    rec: &NetworkRecord,
) -> Result<(), Refused> {
    if known.get(key).is_some_and(|old| old != rec) {
        return Err(Refused::NetworkChanged);
    }
    if known.values().any(|n| n.id != *key && n.vni == rec.vni) {
        return Err(Refused::VniInUse(rec.vni));
    }
    if rec.id != key {
        return Err(Refused::KeyMismatch);
    }
    if !is_valid_name(&rec.name) {
        return Err(Refused::BadName {
            what: "network name",
            name: rec.name.clone(),
        });
    }
    if rec.vni == 0 || rec.vni > MAX_VNI {
        return Err(Refused::BadVni(rec.vni));
    }
    if rec.driver != Driver::Overlay {
        return Err(Refused::NotGlobal(format!("{:?}", rec.driver)));
    }
    pool(&rec.v4, false)?;
    if let Some(p) = &rec.v6 {
        pool(p, true)?;
    }
    Ok(())
}

fn pool(p: &Pool, v6: bool) -> Result<(), Refused> {
    let bad = |why| Err(Refused::BadPool(p.subnet.to_string(), why));
    if p.subnet.addr().is_ipv6() != v6 {
        return bad("of the wrong family");
    }
    if !p.subnet.contains(&p.gateway) {
        return bad("its gateway is outside it");
    }
    if p.ip_range.is_some_and(|r| !p.subnet.contains(&r)) {
        return bad("its range is outside it");
    }
    Ok(())
}

/// A host's liveness record names a host by a unicast address.
pub fn host(addr: IpAddr) -> Result<(), Refused> {
    let unicast = match addr {
        IpAddr::V4(a) => !a.is_unspecified() && !a.is_multicast() && !a.is_broadcast(),
        IpAddr::V6(a) => !a.is_unspecified() && !a.is_multicast(),
    };
    if unicast {
        Ok(())
    } else {
        Err(Refused::BadHost(addr))
    }
}

/// What the store says besides the record, for [`endpoint`].
pub struct Context<'a> {
    pub networks: &'a BTreeMap<NetworkId, NetworkRecord>,
    pub claims: &'a BTreeMap<(NetworkId, IpAddr), Claim>,
    /// Each live host's lease (from its `hosts/` record).
    pub hosts: &'a BTreeMap<IpAddr, LeaseId>,
}

/// An endpoint record put on `lease` under the key of (`net`, `ep`): its key's ids, valid
/// names, addresses in its network's subnets (not its gateway, network or broadcast address)
/// and claimed for it by its host, Docker's MAC for its address, and on the lease of the host
/// it names. The lease proves little against a hostile writer (any writer can read a lease id
/// and put a key on it); it keeps out what is stale or misplaced (a host's records on another's
/// lease), and a forgery naming a live host is withdrawn by that host, which serves no such
/// endpoint. What no forgery gets is the rest of these checks and the mirror's.
pub fn endpoint(
    cx: &Context<'_>,
    (net, ep): (&NetworkId, &EndpointId),
    rec: &EndpointRecord,
    lease: LeaseId,
) -> Result<(), Refused> {
    if rec.network_id != net || rec.endpoint_id != ep {
        return Err(Refused::KeyMismatch);
    }
    if !is_valid_name(&rec.container_name) {
        return Err(Refused::BadName {
            what: "container name",
            name: rec.container_name.clone(),
        });
    }
    for (what, name) in
        std::iter::once(("hostname", &rec.hostname)).chain(rec.aliases.iter().map(|a| ("alias", a)))
    {
        if !is_valid_hostname(name) {
            return Err(Refused::BadName {
                what,
                name: name.clone(),
            });
        }
    }
    let network = cx.networks.get(net).ok_or(Refused::NoNetwork)?;
    let addrs = std::iter::once(IpAddr::V4(rec.v4)).chain(rec.v6.map(IpAddr::V6));
    for ip in addrs.clone() {
        let pool = if ip.is_ipv4() {
            Some(&network.v4)
        } else {
            network.v6.as_ref()
        };
        let Some(pool) = pool.filter(|p| p.subnet.contains(&ip)) else {
            return Err(Refused::OutsideSubnet(ip));
        };
        if ip == pool.gateway || ip == pool.subnet.network() || ip == pool.subnet.broadcast() {
            return Err(Refused::Reserved(ip));
        }
    }
    if rec.mac != mac_for(rec.v4) {
        return Err(Refused::WrongMac);
    }
    if lease == 0 || cx.hosts.get(&rec.host) != Some(&lease) {
        return Err(Refused::NotOnHostsLease(rec.host));
    }
    for ip in addrs {
        let ours = cx
            .claims
            .get(&(net.clone(), ip))
            .is_some_and(|c| c.endpoint_id == ep && c.host == rec.host);
        if !ours {
            return Err(Refused::NotClaimed(ip));
        }
    }
    Ok(())
}
