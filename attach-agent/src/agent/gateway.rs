//! Which of a container's endpoints gives it its default routes. Docker 28's rule (libnetwork's
//! `Endpoint.Less`), so a Docker user's `--gw-priority` means the same here: the highest
//! `GwPriority` first, then an endpoint with both gateways (IPv4 and IPv6) before one with a
//! single one, then the network name in byte order. The IPv4 and the IPv6 default route are
//! chosen apart: each goes to the first endpoint in that order with a gateway of its family, so
//! they may come from different networks. An `--internal` network never gives one (its bridge
//! forwards nowhere; Docker sets no gateway there either).
//!
//! Containers a CNI runtime attached keep the CNI rule (the first attachment's), since the
//! runtime was told so in each ADD's result.

use std::cmp::Ordering;

use crate::ids::NetworkId;
use crate::state::{Container, State};

/// One endpoint as the choice sees it.
#[derive(Debug, Clone)]
struct Candidate<'a> {
    network_id: &'a NetworkId,
    network_name: &'a str,
    priority: i64,
    v4: bool,
    v6: bool,
}

/// Docker's order: better default-gateway candidates first.
fn better(a: &Candidate, b: &Candidate) -> Ordering {
    b.priority
        .cmp(&a.priority)
        .then_with(|| (b.v4 && b.v6).cmp(&(a.v4 && a.v6)))
        .then_with(|| a.network_name.as_bytes().cmp(b.network_name.as_bytes()))
}

/// The networks whose gateways a container's default routes go through.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gateways {
    pub v4: Option<NetworkId>,
    pub v6: Option<NetworkId>,
}

impl Gateways {
    /// The gateways of container `c` with `joining` attached too (a connect in progress) and
    /// `leaving` not (a disconnect in progress): among its attached endpoints.
    pub fn of(
        c: &Container,
        state: &State,
        joining: Option<&NetworkId>,
        leaving: Option<&NetworkId>,
    ) -> Gateways {
        let counted = |id: &NetworkId| Some(id) != leaving;
        if c.cni.is_some() {
            // The CNI rule: the first attached endpoint's, in attach order.
            let first = c
                .endpoints
                .iter()
                .filter(|e| counted(&e.network_id))
                .find(|e| e.attached.is_some() || Some(&e.network_id) == joining)
                .and_then(|e| state.networks.get(&e.network_id));
            return Gateways {
                v4: first.filter(|n| n.v4.is_some()).map(|n| n.id.clone()),
                v6: first.filter(|n| n.v6.is_some()).map(|n| n.id.clone()),
            };
        }
        let mut candidates: Vec<Candidate> = c
            .endpoints
            .iter()
            .filter(|e| counted(&e.network_id))
            .filter(|e| e.attached.is_some() || Some(&e.network_id) == joining)
            .filter_map(|e| {
                let net = state.networks.get(&e.network_id)?;
                (!net.internal).then_some(Candidate {
                    network_id: &net.id,
                    network_name: &net.name,
                    priority: e.gw_priority,
                    v4: net.v4.is_some(),
                    v6: net.v6.is_some(),
                })
            })
            .collect();
        candidates.sort_by(better);
        Gateways {
            v4: candidates
                .iter()
                .find(|c| c.v4)
                .map(|c| c.network_id.clone()),
            v6: candidates
                .iter()
                .find(|c| c.v6)
                .map(|c| c.network_id.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand<'a>(id: &'a NetworkId, name: &'a str, priority: i64, v6: bool) -> Candidate<'a> {
        Candidate {
            network_id: id,
            network_name: name,
            priority,
            v4: true,
            v6,
        }
    }

    #[test]
    fn priority_then_dual_stack_then_name_decide() {
        let (a, b, c) = (
            NetworkId::for_test("a"),
            NetworkId::for_test("b"),
            NetworkId::for_test("c"),
        );
        let mut list = [
            cand(&c, "zeta", 0, false),
            cand(&b, "beta", 0, false),
            cand(&a, "alpha", 0, false),
        ];
        list.sort_by(better);
        assert_eq!(list[0].network_name, "alpha", "name order on a tie");
        let mut list = [cand(&a, "alpha", 0, false), cand(&b, "beta", 0, true)];
        list.sort_by(better);
        assert_eq!(list[0].network_name, "beta", "both gateways before one");
        let mut list = [
            cand(&a, "alpha", 0, true),
            cand(&c, "zeta", 5, false),
            cand(&b, "beta", -1, true),
        ];
        list.sort_by(better);
        let names: Vec<_> = list.iter().map(|c| c.network_name).collect();
        assert_eq!(
            names,
            ["zeta", "alpha", "beta"],
            "priority first, negative last"
        );
    }
}
