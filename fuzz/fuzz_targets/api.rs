//! The Engine API's request bodies: JSON → Docker's shapes → the agent's requests → the pure
//! checks every request passes before any work starts (`attach_agent::agent::request`).
//!
//! First input byte picks the body: 0 `POST /networks/create`, 1 `POST /networks/{id}/connect`,
//! 2 `POST /containers/create`. Checked: no panic; a refusal is a 4xx, never a 500 (bad input
//! is the client's fault and must say so); an accepted network's pools hand out distinct
//! addresses inside their subnet (and range), never the gateway; an accepted endpoint's
//! static addresses lie in the network's subnets.
#![no_main]

use std::collections::HashSet;
use std::net::IpAddr;

use attach_agent::agent::request::{check_endpoint, check_hostname, plan_network};
use attach_agent::engine::types as docker;
use attach_agent::engine::{container_networks, endpoint_request, json_body, network_create};
use attach_agent::error::AgentError;
use attach_agent::ipam::Pool;
use attach_agent::state::Network;
use ipnet::IpNet;
use libfuzzer_sys::fuzz_target;

fn refused(e: AgentError) {
    assert!(e.status() < 500, "bad input answered {}: {e}", e.status());
}

fn exercise(pool: &mut Pool) {
    let mut seen = HashSet::new();
    for _ in 0..64 {
        let Ok(ip) = pool.allocate("fuzz") else { break };
        assert!(pool.subnet.contains(&ip), "{ip} outside {}", pool.subnet);
        if let Some(r) = pool.ip_range {
            assert!(r.contains(&ip), "{ip} outside range {r}");
        }
        assert_ne!(ip, pool.gateway, "gateway handed out");
        assert!(seen.insert(ip), "{ip} handed out twice");
    }
}

fn network() -> Network {
    let subnet = |s: &str| s.parse::<IpNet>().unwrap();
    Network {
        id: attach_agent::ids::NetworkId::parse(&"f".repeat(64)).expect("an id"),
        name: "fuzz".into(),
        created: String::new(),
        driver: attach_agent::state::Driver::Bridge,
        internal: false,
        attachable: false,
        labels: Default::default(),
        options: Default::default(),
        bridge: "fuzzbr".into(),
        bridge_mac: [2, 0x42, 0, 0, 0, 1],
        v4: Some(Pool::new(subnet("10.9.0.0/16"), Some(subnet("10.9.1.0/24")), None).unwrap()),
        v6: Some(Pool::new(subnet("fd00:9::/64"), None, None).unwrap()),
        vni: None,
    }
}

fn check_endpoint_of(req: &attach_agent::agent::request::EndpointRequest, net: &Network) {
    match check_endpoint(req, net) {
        Ok(cfg) => {
            if let Some(v4) = cfg.v4 {
                assert!(net.v4.as_ref().unwrap().subnet.contains(&IpAddr::V4(v4)));
            }
            if let Some(v6) = cfg.v6 {
                assert!(net.v6.as_ref().unwrap().subnet.contains(&IpAddr::V6(v6)));
            }
        }
        Err(e) => refused(e),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&kind, body)) = data.split_first() else {
        return;
    };
    match kind % 3 {
        0 => {
            let Ok(req) = json_body::<docker::NetworkCreateRequest>(body) else {
                return;
            };
            let taken = ["172.17.0.0/16".parse::<IpNet>().unwrap()];
            match plan_network(&network_create(req), &taken) {
                Ok(plan) => {
                    for mut pool in plan.v4.into_iter().chain(plan.v6) {
                        assert!(!taken
                            .iter()
                            .any(|t| attach_agent::ipam::overlaps(t, &pool.subnet)));
                        assert!(pool.subnet.contains(&pool.gateway));
                        exercise(&mut pool);
                    }
                }
                Err(e) => refused(e),
            }
        }
        1 => {
            let Ok(req) = json_body::<docker::NetworkConnectRequest>(body) else {
                return;
            };
            check_endpoint_of(&endpoint_request(req.endpoint_config.as_ref()), &network());
        }
        _ => {
            let Ok(req) = json_body::<docker::ContainerCreateRequest>(body) else {
                return;
            };
            if !req.hostname.is_empty() {
                if let Err(e) = check_hostname(&req.hostname) {
                    refused(e);
                }
            }
            match container_networks(&req, body.len() % 2 == 0) {
                Ok(networks) => {
                    let net = network();
                    for (_, ereq) in &networks {
                        check_endpoint_of(ereq, &net);
                    }
                }
                Err(e) => assert!(e.0.as_u16() == 501, "{}: {}", e.0, e.1),
            }
        }
    }
});
