//! The kernel's floor for a connect: the requests a connect needs and nothing else, sent by
//! one process over one netlink socket per namespace, already open — a veth created with its
//! peer directly in the container's namespace, a port of the bridge and up (one RTM_NEWLINK);
//! inside, the peer's index, no IPv6 link-local address for it (addrgenmode none: the
//! container has IPv4 only, and the agent, as Docker, then gives its interface no IPv6), the
//! peer up, its address (no DAD) and the default route. The agent's connect is printed beside
//! it as a ratio, on the same bridge sizes.
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
use netlink_packet_route::link::{
    AfSpecInet6, AfSpecUnspec, In6AddrGenMode, InfoData, InfoKind, InfoVeth, LinkAttribute,
};
use rtnetlink::{Handle, LinkBridge, LinkMessageBuilder, LinkUnspec, RouteMessageBuilder};

use crate::netns::ip;

const HOST_NS: &str = "bcf-host";
/// Every namespace this module makes starts so.
const PREFIX: &str = "bcf-";
/// Bridge `b` of the floor's host namespace.
fn bridge_name(b: u32) -> String {
    format!("bcfbr{b}")
}

fn ns_name(i: u32) -> String {
    format!("bcf-c{i}")
}

/// Bridge `b`'s gateway: 10.(90+b).0.1/16 (inside "bcf-host" only).
fn gateway(b: u32) -> Ipv4Addr {
    Ipv4Addr::new(10, 90 + b as u8, 0, 1)
}

/// The address of the `k`-th container on bridge `b`.
fn address(b: u32, k: u32) -> Ipv4Addr {
    let n = k + 2;
    Ipv4Addr::new(10, 90 + b as u8, (n / 256) as u8, (n % 256) as u8)
}

/// Run `f` on this thread with its CPU affinity (and that of threads it starts) set to `cpu`
/// alone, as the agent runs under `taskset`; the old affinity is put back after.
fn on_cpu<T>(cpu: usize, f: impl FnOnce() -> T) -> T {
    // SAFETY: cpu_set_t is plain data; sched_{get,set}affinity on this thread (pid 0) with
    // its size.
    unsafe {
        let mut old: libc::cpu_set_t = std::mem::zeroed();
        let size = std::mem::size_of::<libc::cpu_set_t>();
        assert_eq!(libc::sched_getaffinity(0, size, &mut old), 0);
        let mut one: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut one);
        assert_eq!(
            libc::sched_setaffinity(0, size, &one),
            0,
            "pin to CPU {cpu}"
        );
        let out = f();
        libc::sched_setaffinity(0, size, &old);
        out
    }
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

/// Milliseconds of each of `n` connects' kernel work, one container at a time, container `i`
/// onto bridge `i mod bridges` (so it meets as many ports already there as the agent's `i`-th
/// connect does), on CPU `cpu` alone (the agent's).
pub fn floor_times(n: u32, bridges: u32, cpu: usize) -> Vec<f64> {
    assert!(n <= 60000, "one /16 of addresses");
    assert!((1..=100).contains(&bridges), "10.90/16 to 10.189/16");
    on_cpu(cpu, || floor_times_here(n, bridges))
}

fn floor_times_here(n: u32, bridges: u32) -> Vec<f64> {
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
        let mut indexes = Vec::new();
        for b in 0..bridges {
            host.link()
                .add(LinkBridge::new(&bridge_name(b)).up().build())
                .execute()
                .await
                .expect("add bridge");
            let bridge = index_of(&host, &bridge_name(b)).await;
            host.address()
                .add(bridge, IpAddr::V4(gateway(b)), 16)
                .execute()
                .await
                .expect("bridge address");
            indexes.push(bridge);
        }
        let mut times = Vec::with_capacity(n as usize);
        for i in 0..n {
            // Outside the timed part: the namespace and a socket in it (the agent's own
            // costs for these are its, not the kernel's).
            let ns = File::open(format!("/run/netns/{}", ns_name(i))).unwrap();
            let inside = handle_in(&ns, rt.handle());
            let (b, k) = (i % bridges, i / bridges);
            let bridge = indexes[b as usize];
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
            let no_link_local = LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(vec![
                AfSpecInet6::AddrGenMode(In6AddrGenMode::None),
            ])]);
            inside
                .link()
                .set(
                    LinkUnspec::new_with_index(eth0)
                        .append_extra_attribute(no_link_local)
                        .build(),
                )
                .execute()
                .await
                .expect("addrgenmode none");
            inside
                .link()
                .set(LinkUnspec::new_with_index(eth0).up().build())
                .execute()
                .await
                .expect("peer up");
            let mut add = inside.address().add(eth0, IpAddr::V4(address(b, k)), 16);
            add.message_mut()
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
            add.execute().await.expect("address");
            inside
                .route()
                .add(
                    RouteMessageBuilder::<Ipv4Addr>::new()
                        .gateway(gateway(b))
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
        String::from_utf8_lossy(&out.stdout)
            .contains(&address((n - 1) % bridges, (n - 1) / bridges).to_string()),
        "the floor's last container has no address"
    );
    let out = std::process::Command::new("ip")
        .args(["-n", &ns_name(n - 1), "-o", "-6", "addr", "show", "eth0"])
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty(),
        "the floor's last container has IPv6: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    drop(host_ns);
    times
}
