//! Resident memory of the record table per name, at a given size: the `memory <= 300 bytes per
//! name at 10^6 names` target of the benchmark issue, measured alone (the comparison measures
//! the whole standalone resolver; this isolates the table).
//!
//! `cargo run --release -p bench --bin memory -- [N ...]` (default 1000000). Containers like
//! the comparison's (`bench::populated`): a 64-hex id, a name `cI`, one IPv4 address; each
//! answers to two names (its name, which is also its hostname, and its short id).

/// Big tables on transparent huge pages (see `resolver::huge_pages`), as in the binaries.
#[global_allocator]
static ALLOC: resolver::huge_pages::HugePages = resolver::huge_pages::HugePages;

/// A `Key:  N kB` line of a /proc/self file, in bytes (0 when absent).
fn proc_kib(file: &str, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/self/{file}"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

fn rss_bytes() -> u64 {
    proc_kib("status", "VmRSS:")
}

/// Resident memory on transparent huge pages, the whole process.
fn huge_bytes() -> u64 {
    proc_kib("smaps_rollup", "AnonHugePages:")
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
    println!("| containers | names | table RSS MiB | bytes per name | on huge pages MiB |");
    println!("|---|---|---|---|---|");
    for n in sizes {
        let before = rss_bytes();
        let t = bench::populated(n);
        let used = rss_bytes().saturating_sub(before);
        let names = 2 * n as u64;
        println!(
            "| {n} | {names} | {:.1} | {:.0} | {:.1} |",
            used as f64 / (1 << 20) as f64,
            used as f64 / names as f64,
            huge_bytes() as f64 / (1 << 20) as f64
        );
        drop(t);
        // Give the freed pages back, so the next size starts from a clean slate.
        // SAFETY: malloc_trim only returns free heap pages to the kernel.
        unsafe { libc::malloc_trim(0) };
    }
}
