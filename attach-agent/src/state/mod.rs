//! The persisted model: networks, containers, endpoints, addresses.
//!
//! One file per object, each replaced atomically (temp file and rename), and made durable by
//! the change's record in a write-ahead journal before it is acknowledged. A connect or disconnect rewrites one small file,
//! whatever the number of containers: the whole-state file this replaces grew with every
//! container, and so did the time of every connect. What can be derived is not stored: the
//! pools' allocations come from the attached endpoints at load, and endpoints of a network that
//! is gone are dropped then, so removing a network is the removal of one file.
//!
//! [`model`] is the data; [`disk`] its files; [`journal`] what makes them durable.

pub mod disk;
pub mod journal;
pub mod model;

pub use disk::{Changed, Saving, StateDir};
pub use model::{
    Attached, CniOwner, Container, ContainerDns, Driver, Endpoint, ExtraHost, Network, RunState,
    State, Undo,
};

/// A local network on `subnet` (and `v6`, if given) for unit tests of what reads networks.
#[cfg(test)]
pub(crate) fn test_network(name: &str, subnet: &str, v6: Option<&str>) -> Network {
    use crate::ids::NetworkId;
    use crate::ipam::Pool;
    let pool = |s: &str| Pool::new(s.parse().unwrap(), None, None).unwrap();
    Network {
        id: NetworkId::for_test(name),
        name: name.into(),
        created: String::new(),
        driver: Driver::Bridge,
        internal: false,
        attachable: false,
        labels: Default::default(),
        options: Default::default(),
        bridge: format!("br-{name}"),
        bridge_mac: [2, 0x42, 0, 0, 0, 1],
        v4: Some(pool(subnet)),
        v6: v6.map(pool),
        vni: None,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::net::Ipv4Addr;
    use std::path::PathBuf;

    use super::model::derive;
    use super::*;
    use crate::ids::{ContainerId, EndpointId, NetworkId};
    use crate::ipam::Pool;

    fn nid(tag: &str) -> NetworkId {
        NetworkId::for_test(tag)
    }

    fn cid(tag: &str) -> ContainerId {
        ContainerId::for_test(tag)
    }

    fn network(id: &str, subnet: &str) -> Network {
        Network {
            id: nid(id),
            name: format!("net-{id}"),
            created: String::new(),
            driver: Driver::Bridge,
            internal: false,
            attachable: false,
            labels: BTreeMap::new(),
            options: BTreeMap::new(),
            bridge: format!("br-{id}"),
            bridge_mac: [2, 0x42, 0, 0, 0, 1],
            vni: None,
            v4: Some(Pool::new(subnet.parse().unwrap(), None, None).unwrap()),
            v6: None,
        }
    }

    fn container(id: &str, eps: &[(&str, Option<[u8; 4]>)]) -> Container {
        Container {
            id: cid(id),
            name: format!("ctr-{id}"),
            hostname: id.into(),
            image: "busybox".into(),
            created: String::new(),
            netns: PathBuf::from(format!("/run/netns/ctr-{id}")),
            owns_netns: true,
            state: RunState::Running,
            state_since: String::new(),
            labels: BTreeMap::new(),
            cni: None,
            dns: Default::default(),
            endpoints: eps
                .iter()
                .map(|(net, v4)| Endpoint {
                    network_id: nid(net),
                    endpoint_id: EndpointId::for_test(&format!("ep-{id}-{net}")),
                    aliases: vec![],
                    links: vec![],
                    static_v4: None,
                    static_v6: None,
                    link_local: vec![],
                    ifname: None,
                    mac: None,
                    gw_priority: 0,
                    attached: v4.map(|a| Attached {
                        ifname: "eth0".into(),
                        host_veth: format!("v{id}"),
                        mac: [0; 6],
                        v4: Some(Ipv4Addr::from(a)),
                        v6: None,
                    }),
                })
                .collect(),
        }
    }

    fn ips(p: &Option<Pool>) -> Vec<String> {
        p.iter()
            .flat_map(|p| p.allocated.iter().map(ToString::to_string))
            .collect()
    }

    #[test]
    fn bad_state_files_are_set_aside_and_the_rest_loads() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateDir::new(dir.path()).unwrap();
        let mut state = State::default();
        state
            .networks
            .insert(nid("n1"), network("n1", "10.1.0.0/24"));
        state.containers.insert(
            cid("good"),
            container("good", &[("n1", Some([10, 1, 0, 2]))]),
        );
        // Names that would become paths, a namespace that is not the agent's for one it owns,
        // a bridge name that is no interface name.
        let mut evil = container("a", &[]);
        evil.name = "../../etc".into();
        evil.netns = "/run/netns/../../etc".into();
        state.containers.insert(cid("a"), evil);
        let mut other = container("b", &[]);
        other.netns = "/proc/1/ns/net".into();
        state.containers.insert(cid("b"), other);
        let mut n = network("n2", "10.2.0.0/24");
        n.bridge = "../../x".into();
        state.networks.insert(nid("n2"), n);
        store
            .persist(
                &state,
                &[
                    Changed::Network(&nid("n1")),
                    Changed::Network(&nid("n2")),
                    Changed::Container(&cid("good")),
                    Changed::Container(&cid("a")),
                    Changed::Container(&cid("b")),
                ],
            )
            .unwrap();
        // Not JSON; and a file named for another object than the one it holds.
        let junk = dir.path().join(format!("containers/{}.json", cid("junk")));
        std::fs::write(&junk, b"{\"half").unwrap();
        let good = dir.path().join(format!("containers/{}.json", cid("good")));
        let misnamed = dir.path().join(format!("containers/{}.json", cid("copy")));
        std::fs::copy(&good, &misnamed).unwrap();

        let (loaded, aside) = store.load_report().unwrap();
        assert_eq!(aside.len(), 5, "{aside:?}");
        assert_eq!(loaded.networks.keys().collect::<Vec<_>>(), vec![&nid("n1")]);
        assert_eq!(
            loaded.containers.keys().collect::<Vec<_>>(),
            vec![&cid("good")]
        );
        assert!(loaded.networks[&nid("n1")]
            .v4
            .as_ref()
            .unwrap()
            .allocated
            .contains(&"10.1.0.2".parse().unwrap()));
        for p in &aside {
            assert!(p.exists(), "{p:?}");
            assert!(p.to_string_lossy().contains(".json.corrupt-"), "{p:?}");
        }
        assert!(!junk.exists() && !misnamed.exists());
        // What was set aside stays aside: the next load is clean.
        let (again, aside) = store.load_report().unwrap();
        assert!(aside.is_empty());
        assert_eq!(again.containers.len(), 1);
    }

    #[test]
    fn one_file_per_object_with_allocations_derived_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateDir::new(dir.path()).unwrap();
        let mut state = State::default();
        state
            .networks
            .insert(nid("n1"), network("n1", "10.1.0.0/24"));
        state
            .containers
            .insert(cid("a"), container("a", &[("n1", Some([10, 1, 0, 2]))]));
        state
            .containers
            .insert(cid("b"), container("b", &[("n1", None)]));
        store
            .persist(
                &state,
                &[
                    Changed::Network(&nid("n1")),
                    Changed::Container(&cid("a")),
                    Changed::Container(&cid("b")),
                ],
            )
            .unwrap();
        assert!(dir
            .path()
            .join(format!("containers/{}.json", cid("a")))
            .exists());
        // A temp file of a write cut by a crash is ignored and removed.
        std::fs::write(dir.path().join("containers/.c.tmp"), b"{").unwrap();

        let loaded = store.load().unwrap();
        assert_eq!(
            ips(&loaded.networks[&nid("n1")].v4),
            ["10.1.0.2"],
            "only the attached one"
        );
        assert_eq!(loaded.containers.len(), 2);
        assert!(!dir.path().join("containers/.c.tmp").exists());

        // A removed container's file goes; a removed network takes its endpoints with it.
        state.containers.remove(&cid("b"));
        state.networks.remove(&nid("n1"));
        store
            .persist(
                &state,
                &[Changed::Container(&cid("b")), Changed::Network(&nid("n1"))],
            )
            .unwrap();
        let loaded = store.load().unwrap();
        assert!(loaded.networks.is_empty());
        assert_eq!(loaded.containers.len(), 1);
        assert!(loaded.containers[&cid("a")].endpoints.is_empty());
    }

    #[test]
    fn an_address_held_twice_stays_with_one_holder() {
        let mut state = State::default();
        state
            .networks
            .insert(nid("n1"), network("n1", "10.1.0.0/24"));
        state
            .containers
            .insert(cid("a"), container("a", &[("n1", Some([10, 1, 0, 2]))]));
        state
            .containers
            .insert(cid("b"), container("b", &[("n1", Some([10, 1, 0, 2]))]));
        derive(&mut state);
        let attached = state
            .containers
            .values()
            .filter(|c| c.endpoints[0].attached.is_some())
            .count();
        assert_eq!(attached, 1);
        assert_eq!(ips(&state.networks[&nid("n1")].v4), ["10.1.0.2"]);
    }

    #[test]
    fn the_single_state_file_of_earlier_versions_is_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = State::default();
        state
            .networks
            .insert(nid("n1"), network("n1", "10.1.0.0/24"));
        state
            .containers
            .insert(cid("a"), container("a", &[("n1", Some([10, 1, 0, 9]))]));
        std::fs::write(
            dir.path().join("state.json"),
            serde_json::to_vec(&state).unwrap(),
        )
        .unwrap();
        let store = StateDir::new(dir.path()).unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(ips(&loaded.networks[&nid("n1")].v4), ["10.1.0.9"]);
        assert!(!dir.path().join("state.json").exists());
        assert!(dir
            .path()
            .join(format!("networks/{}.json", nid("n1")))
            .exists());
        let again = store.load().unwrap();
        assert_eq!(again.containers[&cid("a")], loaded.containers[&cid("a")]);
    }

    #[test]
    fn the_instance_id_is_made_once_and_a_damaged_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateDir::new(dir.path()).unwrap();
        let id = store.instance_id().unwrap();
        assert_eq!(
            StateDir::new(dir.path()).unwrap().instance_id().unwrap(),
            id
        );
        std::fs::write(dir.path().join("instance-id"), "../../etc\n").unwrap();
        let e = store.instance_id().unwrap_err();
        assert!(
            e.to_string().contains("instance-id: invalid instance id"),
            "{e}"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("instance-id")).unwrap(),
            "../../etc\n",
            "never replaced"
        );
    }
}
