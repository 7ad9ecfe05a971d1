//! Micro-benchmarks of the query path: table lookup at 10 to 10^6 names, the whole request
//! path bytes-in → bytes-out in-process, and answer encoding.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use bench::{populated, query, CLIENT};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use resolver::respond::{Arrival, Responder};

/// Big tables on transparent huge pages (see `resolver::huge_pages`), as in the binaries.
#[global_allocator]
static ALLOC: resolver::huge_pages::HugePages = resolver::huge_pages::HugePages;

fn sizes() -> Vec<u32> {
    match std::env::var("BENCH_QUICK") {
        Ok(_) => vec![10, 1000],
        Err(_) => vec![10, 1000, 100_000, 1_000_000],
    }
}

fn lookup(c: &mut Criterion) {
    let mut g = c.benchmark_group("table_lookup");
    for n in sizes() {
        let t = populated(n);
        let key = t.network_key("benchnet").unwrap();
        let asker = t.asker(CLIENT, None, key);
        let name = format!("c{}", n / 2);
        let dotted = format!("c{}.bench", n / 2);
        g.bench_with_input(BenchmarkId::new("bare", n), &n, |b, _| {
            b.iter(|| black_box(t.lookup(&asker, black_box(name.as_bytes()))))
        });
        g.bench_with_input(BenchmarkId::new("name.network", n), &n, |b, _| {
            b.iter(|| black_box(t.lookup(&asker, black_box(dotted.as_bytes()))))
        });
        // A different name each time, strided over the whole table, as dnsperf asks them: at
        // 10^6 names every probe misses the CPU caches (the fixed name above never does).
        let spread: Vec<String> = (0..4096u32)
            .map(|i| format!("c{}", (i as u64 * 7_919 % n as u64)))
            .collect();
        let mut next = 0;
        g.bench_with_input(BenchmarkId::new("bare_spread", n), &n, |b, _| {
            b.iter(|| {
                next = (next + 1) % spread.len();
                black_box(t.lookup(&asker, black_box(spread[next].as_bytes())))
            })
        });
    }
    g.finish();
}

fn request_path(c: &mut Criterion) {
    let mut g = c.benchmark_group("request_path");
    for n in sizes() {
        let t = populated(n);
        let key = t.network_key("benchnet").unwrap();
        let responder = Responder::new(t, 600);
        let q = query(&format!("c{}", n / 2));
        let from = Arrival {
            src: CLIENT,
            ifindex: None,
            listener: key,
            fixed_limit: None,
        };
        let mut out = Vec::with_capacity(4096);
        g.bench_with_input(BenchmarkId::new("local_answer", n), &n, |b, _| {
            b.iter(|| black_box(responder.respond(black_box(&q), &from, &mut out)))
        });
    }
    g.finish();
}

fn encoding(c: &mut Criterion) {
    let q = query("pool.bench");
    let req = resolver::wire::parse(&q).unwrap();
    let mut out = Vec::with_capacity(4096);
    let mut g = c.benchmark_group("encode");
    for count in [1u32, 8] {
        let addrs: Vec<IpAddr> = (0..count)
            .map(|i| IpAddr::V4(Ipv4Addr::from(0x0a00_0002 + i)))
            .collect();
        g.bench_with_input(BenchmarkId::new("a_records", count), &count, |b, _| {
            b.iter(|| resolver::wire::write_addresses(&mut out, &req, black_box(&addrs), 600, 512))
        });
    }
    g.bench_function("parse_question", |b| {
        b.iter(|| black_box(resolver::wire::parse(black_box(&q)).is_ok()))
    });
    g.finish();
}

criterion_group!(benches, lookup, request_path, encoding);
criterion_main!(benches);
