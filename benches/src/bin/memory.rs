//! Resident memory of the record table per name, at a given size: the `memory <= 300 bytes per
//! name at 10^6 names` target of the benchmark issue, measured alone (the comparison measures
//! the whole standalone resolver; this isolates the table).
//!
//! `cargo run --release -p bench --bin memory -- [N ...]` (default 1000000). Containers like
//! the comparison's: a 64-hex id, a name `cI`, one IPv4 address; each answers to two names
//! (its name and its short id).

use resolver::{EndpointSpec, NetworkSpec, Table};

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

fn main() {
    let sizes: Vec<u32> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("a number of containers"))
        .collect();
    let sizes = if sizes.is_empty() {
        vec![1_000_000]
    } else {
        sizes
    };
    println!("| containers | names | table RSS MiB | bytes per name |");
    println!("|---|---|---|---|");
    for n in sizes {
        let before = rss_bytes();
        let t = Table::new();
        t.add_network(&NetworkSpec {
            id: "benchnet".into(),
            name: "bench".into(),
            internal: false,
            bridge_ifindex: None,
        })
        .unwrap();
        for i in 0..n {
            t.upsert_endpoint(&EndpointSpec {
                network_id: "benchnet".into(),
                container_id: resolver::records::derived_id("container", &format!("c{i}")),
                container_name: format!("c{i}"),
                hostname: None,
                aliases: vec![],
                links: vec![],
                ipv4: Some(bench::addr(i)),
                ipv6: None,
            })
            .unwrap();
        }
        let used = rss_bytes().saturating_sub(before);
        let names = 2 * n as u64;
        println!(
            "| {n} | {names} | {:.1} | {:.0} |",
            used as f64 / (1 << 20) as f64,
            used as f64 / names as f64
        );
        drop(t);
        // Give the freed pages back, so the next size starts from a clean slate.
        unsafe { libc::malloc_trim(0) };
    }
}
