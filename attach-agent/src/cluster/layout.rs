//! The key layout in the cluster store, version 1, and the records stored under it (JSON).
//!
//! ```text
//! /attach-agent/v1/networks/<network-id>             NetworkRecord   global network definitions
//! /attach-agent/v1/network-names/<name>              <network-id>    a name is taken once, cluster-wide
//! /attach-agent/v1/vnis/<vni>                        <network-id>    a VXLAN id is taken once
//! /attach-agent/v1/ipam/<network-id>/<address>       Claim           who holds an address (no lease)
//! /attach-agent/v1/endpoints/<network-id>/<ep-id>    EndpointRecord  on the lease of the host serving it
//! /attach-agent/v1/hosts/<advertise-addr>            HostRecord      on that host's lease: who is alive
//! ```
//!
//! Address claims carry no lease on purpose: a host that is gone for longer than its lease
//! still owns the addresses its containers use, so it cannot come back to find them handed
//! out twice. An incompatible change of any record gets a new version prefix (`v2`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use crate::driver::Driver;
use crate::ids::{ContainerId, EndpointId, NetworkId};
use crate::ipam::Pool;

pub const ROOT: &str = "/attach-agent/v1/";

pub fn network(id: &str) -> String {
    format!("{ROOT}networks/{id}")
}
pub fn network_name(name: &str) -> String {
    format!("{ROOT}network-names/{name}")
}
pub fn vni(vni: u32) -> String {
    format!("{ROOT}vnis/{vni}")
}
pub fn vnis() -> String {
    format!("{ROOT}vnis/")
}
pub fn claim(net: &str, ip: IpAddr) -> String {
    format!("{ROOT}ipam/{net}/{ip}")
}
pub fn claims_of(net: &str) -> String {
    format!("{ROOT}ipam/{net}/")
}
pub fn endpoint(net: &str, ep: &str) -> String {
    format!("{ROOT}endpoints/{net}/{ep}")
}
pub fn endpoints_of(net: &str) -> String {
    format!("{ROOT}endpoints/{net}/")
}
pub fn host(addr: IpAddr) -> String {
    host_key_of(&addr.to_string())
}
fn host_key_of(addr: &str) -> String {
    format!("{ROOT}hosts/{addr}")
}

/// What a key names. A key under one of the mirror's prefixes whose ids are not ids is
/// [`Key::Invalid`]: never used, and logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    Network(NetworkId),
    Endpoint {
        net: NetworkId,
        ep: EndpointId,
    },
    Claim {
        net: NetworkId,
        ip: IpAddr,
    },
    /// A host's liveness record, on that host's lease.
    Host(IpAddr),
    /// Under `networks/`, `endpoints/`, `ipam/` or `hosts/`, but not with ids of the layout.
    Invalid,
    /// Names, VNIs: bookkeeping the mirror does not need.
    Other,
}

impl Key {
    pub fn parse(key: &str) -> Key {
        let Some(rest) = key.strip_prefix(ROOT) else {
            return Key::Other;
        };
        let mut parts = rest.splitn(3, '/');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("networks"), Some(id), None) => match NetworkId::parse(id) {
                Ok(id) => Key::Network(id),
                Err(_) => Key::Invalid,
            },
            (Some("endpoints"), Some(net), Some(ep)) => {
                match (NetworkId::parse(net), EndpointId::parse(ep)) {
                    (Ok(net), Ok(ep)) => Key::Endpoint { net, ep },
                    _ => Key::Invalid,
                }
            }
            (Some("ipam"), Some(net), Some(ip)) => match (NetworkId::parse(net), ip.parse()) {
                (Ok(net), Ok(ip)) => Key::Claim { net, ip },
                _ => Key::Invalid,
            },
            (Some("hosts"), Some(addr), None) => match addr.parse() {
                Ok(addr) => Key::Host(addr),
                Err(_) => Key::Invalid,
            },
            (Some("networks" | "endpoints" | "ipam" | "hosts"), _, _) => Key::Invalid,
            _ => Key::Other,
        }
    }
}

/// A global network's definition: what every host needs to build its part of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRecord {
    pub id: NetworkId,
    pub name: String,
    pub created: String,
    pub driver: Driver,
    pub internal: bool,
    pub attachable: bool,
    pub labels: std::collections::BTreeMap<String, String>,
    pub options: std::collections::BTreeMap<String, String>,
    /// The VXLAN network identifier.
    pub vni: u32,
    pub v4: Pool,
    pub v6: Option<Pool>,
}

/// An endpoint as other hosts need it: names for DNS, addresses and MAC for the tunnel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRecord {
    pub network_id: NetworkId,
    pub endpoint_id: EndpointId,
    pub container_id: ContainerId,
    pub container_name: String,
    pub hostname: String,
    pub aliases: Vec<String>,
    pub v4: Ipv4Addr,
    pub v6: Option<Ipv6Addr>,
    pub mac: [u8; 6],
    /// The advertise address of the host serving it: the tunnel's far end.
    pub host: IpAddr,
}

/// Who holds an address. Compared byte for byte in transactions, so always encoded the same
/// way (serde_json of this struct).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    pub endpoint_id: EndpointId,
    pub host: IpAddr,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRecord {
    pub started: String,
}

pub fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    // The records are plain data (strings, numbers, addresses, maps with string keys), which
    // serde_json always serialises.
    serde_json::to_vec(v).expect("a record of plain data serialises")
}

pub fn decode<T: for<'de> Deserialize<'de>>(
    key: &str,
    bytes: &[u8],
) -> Result<T, super::store::StoreError> {
    serde_json::from_slice(bytes).map_err(|e| super::store::StoreError::Corrupt {
        key: key.into(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_back() {
        let ip: IpAddr = "10.0.0.2".parse().unwrap();
        let (n1, e1) = (NetworkId::random(), EndpointId::random());
        assert_eq!(Key::parse(&network(&n1)), Key::Network(n1.clone()));
        assert_eq!(
            Key::parse(&endpoint(&n1, &e1)),
            Key::Endpoint {
                net: n1.clone(),
                ep: e1.clone()
            }
        );
        assert_eq!(
            Key::parse(&claim(&n1, ip)),
            Key::Claim {
                net: n1.clone(),
                ip
            }
        );
        let v6: IpAddr = "fd00::5".parse().unwrap();
        assert_eq!(
            Key::parse(&claim(&n1, v6)),
            Key::Claim {
                net: n1.clone(),
                ip: v6
            }
        );
        assert_eq!(Key::parse(&vni(4096)), Key::Other);
        assert_eq!(Key::parse(&host(ip)), Key::Host(ip));
        assert_eq!(Key::parse("/elsewhere/networks/x"), Key::Other);
        // Ids that are not ids name nothing.
        assert_eq!(Key::parse(&network("n1")), Key::Invalid);
        assert_eq!(Key::parse(&network("../../../../etc/x")), Key::Invalid);
        assert_eq!(Key::parse(&network(&"é".repeat(32))), Key::Invalid);
        assert_eq!(Key::parse(&endpoint(&n1, "e1")), Key::Invalid);
        assert_eq!(Key::parse(&host_key_of("not-an-address")), Key::Invalid);
    }
}
