//! The kernel's floor for a connect: the requests a connect needs and nothing else, sent by
//! one process over one netlink socket per namespace, already open — a veth created with its
//! peer directly in the container's namespace, a port of the bridge and up (one RTM_NEWLINK);
//! inside, the peer's index, the peer up, its address (no DAD) and the default route. The
//! agent's connect is printed beside it as a ratio, on the same bridge sizes.
//!
//! The requests are built here with rtnetlink, not through the agent's own `Netlink`, so that
//! a change in the agent (an extra request, say) shows as the agent's cost and never moves the
//! floor. Like netavark's run, everything lives in a namespace of its own ("bcf-host") that
//! plays the host: its bridge and veths die with it, nothing touches the machine's own links.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::time::Instant;

use futures::TryStreamExt;
use netlink_packet_route::address::{AddressAttribute, AddressFlags};
use netlink_packet_route::link::{InfoData, InfoKind, InfoVeth};
use rtnetlink::{Handle, LinkBridge, LinkMessageBuilder, LinkUnspec, RouteMessageBuilder};

use crate::netns::ip;

const HOST_NS: &str = "bcf-host";
/// Every namespace this module makes starts so.
const PREFIX: &str = "bcf-";
const BRIDGE: &str = "bcfbr0";

fn ns_name(i: u32) -> String {
    format!("bcf-c{i}")
}

/// Container `i`'s address on the bridge's 10.90.0.0/16 (inside "bcf-host" only).
fn address(i: u32) -> Ipv4Addr {
    let n = i + 2;
    Ipv4Addr::new(10, 90, (n / 256) as u8, (n % 256) as u8)
}

/// A netlink handle whose socket lives in `ns` (made on a thread that entered it; a socket
/// stays in the namespace it was made in).
fn handle_in(ns: &File, rt: &tokio::runtime::Handle) -> Handle {
    let (fd, rt2) = (ns.try_clone().unwrap(), rt.clone());
    let (conn, handle) = std::thread::spawn(move || {
        // SAFETY: setns with an fd this thread owns; the thread ends right after.
        let entered = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(entered, 0, "setns");
        let _enter = rt2.enter();
        let (conn, handle, _) = rtnetlink::new_connection().expect("netlink socket");
        (conn, handle)
    })
    .join()
    .unwrap();
    rt.spawn(conn);
    handle
}

async fn index_of(h: &Handle, name: &str) -> u32 {
    h.link()
        .get()
        .match_name(name.to_string())
        .execute()
        .try_next()
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no link {name}"))
        .header
        .index
}

/// Milliseconds of each of `n` connects' kernel work, one container at a time onto one bridge
/// (so container `i` meets `i` ports already there, as the agent's `i`-th connect does).
pub fn floor_times(n: u32) -> Vec<f64> {
    assert!(n <= 60000, "one /16 of addresses");
    let _cleanup = crate::netns::Sweep::new(PREFIX);
    assert!(ip(&["netns", "add", HOST_NS]), "ip netns add {HOST_NS}");
    for i in 0..n {
        assert!(ip(&["netns", "add", &ns_name(i)]), "ip netns add");
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let host_ns = File::open(format!("/run/netns/{HOST_NS}")).unwrap();
    let times = rt.block_on(async {
        let host = handle_in(&host_ns, rt.handle());
        host.link()
            .add(LinkBridge::new(BRIDGE).up().build())
            .execute()
            .await
            .expect("add bridge");
        let bridge = index_of(&host, BRIDGE).await;
        host.address()
            .add(bridge, IpAddr::V4(Ipv4Addr::new(10, 90, 0, 1)), 16)
            .execute()
            .await
            .expect("bridge address");
        let mut times = Vec::with_capacity(n as usize);
        for i in 0..n {
            // Outside the timed part: the namespace and a socket in it (the agent's own
            // costs for these are its, not the kernel's).
            let ns = File::open(format!("/run/netns/{}", ns_name(i))).unwrap();
            let inside = handle_in(&ns, rt.handle());
            let t = Instant::now();
            let peer = LinkMessageBuilder::<LinkUnspec>::new()
                .name("eth0".to_string())
                .setns_by_fd(ns.as_raw_fd())
                .build();
            let veth = LinkMessageBuilder::<LinkUnspec>::new_with_info_kind(InfoKind::Veth)
                .name(format!("bcfv{i}"))
                .controller(bridge)
                .up()
                .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
                .build();
            host.link().add(veth).execute().await.expect("add veth");
            let eth0 = index_of(&inside, "eth0").await;
            inside
                .link()
                .set(LinkUnspec::new_with_index(eth0).up().build())
                .execute()
                .await
                .expect("peer up");
            let mut add = inside.address().add(eth0, IpAddr::V4(address(i)), 16);
            add.message_mut()
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
            add.execute().await.expect("address");
            inside
                .route()
                .add(
                    RouteMessageBuilder::<Ipv4Addr>::new()
                        .gateway(Ipv4Addr::new(10, 90, 0, 1))
                        .build(),
                )
                .execute()
                .await
                .expect("default route");
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        times
    });
    // It did the work: the last container has its address.
    let out = std::process::Command::new("ip")
        .args(["-n", &ns_name(n - 1), "-o", "-4", "addr", "show", "eth0"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&address(n - 1).to_string()),
        "the floor's last container has no address"
    );
    drop(host_ns);
    times
}
