//! The reliability report: runs the fault, hostile-input, churn, crash and access tests (and,
//! when asked, the fuzzers), collects the figures they print, and writes `docs/reliability.md`.
//!
//! `cargo xtask reliability-report [--fuzz-seconds 600]`
//!
//! Needs root, as the tests do. Every number in the report comes from this run (fuzzing
//! figures from this run's `fuzz/run`, or, without `--fuzz-seconds`, from the last one's
//! `fuzz/target/summary.tsv`, said so in the report).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Run each fuzz target this long first (0: use the last run's summary, if any).
    #[arg(long, default_value_t = 0)]
    fuzz_seconds: u32,
    /// Where the report goes.
    #[arg(long, default_value = "docs/reliability.md")]
    out: PathBuf,
}

/// The test binaries the report draws on, by package.
const SUITES: &[(&str, &[&str])] = &[
    (
        "resolver",
        &["hostile", "forward", "forward_process", "wire", "names"],
    ),
    (
        "attach-agent",
        &[
            "churn",
            "crash",
            "security",
            "restart",
            "cluster_trust",
            "disk_full",
            "vanished",
            "connect",
            "cluster_faults",
        ],
    ),
];

/// Tests that prove one fault class each, with what the class is.
const FAULTS: &[(&str, &str)] = &[
    (
        "fails_over_from_dead_and_silent_upstreams",
        "dead and black-holed (timeout) upstreams: the next server is asked",
    ),
    (
        "servfail_and_refused_move_on_nxdomain_is_relayed",
        "SERVFAIL and REFUSED: the next server is asked; NXDOMAIN is relayed",
    ),
    (
        "no_upstream_answering_is_servfail",
        "no upstream answers: the asker gets SERVFAIL, not silence",
    ),
    (
        "garbage_and_wrong_source_replies_are_ignored_and_the_next_server_asked",
        "garbage and wrong-source replies: ignored",
    ),
    (
        "replies_with_the_wrong_id_are_ignored",
        "wrong-ID replies: ignored, the right one accepted",
    ),
    (
        "an_oversized_upstream_reply_reaches_a_udp_asker_truncated",
        "oversized replies: TC to a UDP asker, whole over TCP",
    ),
    (
        "truncated_upstream_reply_is_relayed_with_tc_and_tcp_gets_it_whole",
        "truncated upstream replies: relayed with TC to UDP askers, whole over TCP",
    ),
    (
        "tcp_askers_share_one_pipelined_upstream_connection",
        "TCP askers: one kept-open pipelined connection per upstream",
    ),
    (
        "queries_past_the_in_flight_cap_are_refused",
        "forwarding past the in-flight cap: REFUSED at once, logged",
    ),
    (
        "one_container_flooding_does_not_stop_another_from_being_answered",
        "one container flooding forwarded queries: REFUSED past its own cap, others answered",
    ),
    (
        "a_name_with_a_dot_inside_a_label_cannot_poison_the_cache",
        "a label holding a dot (`www2` + `bank.com`): cannot poison `www2.bank.com`",
    ),
    (
        "a_closed_upstream_port_fails_each_query_at_once",
        "a closed upstream port (ICMP unreachable): each query moves on at once, none times out",
    ),
    (
        "a_dead_first_upstream_costs_one_timeout",
        "a dead first upstream: one timeout, then demoted; later misses skip it",
    ),
    (
        "a_demoted_upstream_comes_back_into_use",
        "a demoted upstream answering again: back in use within seconds",
    ),
    (
        "upstream_state_changes_are_logged_when_they_happen",
        "demotion and return of an upstream: in the log when they happen",
    ),
    (
        "an_expired_answer_is_served_stale_when_every_upstream_fails",
        "every upstream black-holed: an expired answer served stale (TTL 30), not SERVFAIL",
    ),
    (
        "the_cache_stays_within_its_byte_budget_with_64k_answers",
        "the cache filled with 64 KiB answers: stays within its byte budget",
    ),
    (
        "a_tcp_client_pipelining_without_reading_holds_bounded_memory",
        "a TCP client pipelining 10,000 forwarded names without reading: bounded RSS",
    ),
    (
        "local_names_keep_answering_while_every_upstream_is_black_holed",
        "every upstream black-holed: local names still answer",
    ),
];

/// The agent's own faults (issue 18), a test each.
const AGENT_FAULTS: &[(&str, &str)] = &[
    (
        "a_full_disk_changes_nothing_and_freed_space_heals",
        "a full disk: every operation that must write fails naming the file, and changes nothing",
    ),
    (
        "a_bad_state_file_is_set_aside_and_the_rest_starts",
        "a torn or hostile state file: set aside, the rest loads and serves",
    ),
    (
        "a_network_that_cannot_be_served_does_not_stop_the_others",
        "a network that cannot be brought up at start: reported, the others served",
    ),
    (
        "two_agents_with_one_prefix_leave_each_others_links_alone",
        "two agents with one link prefix: each restart sweeps only its own marked links",
    ),
    (
        "links_deleted_behind_the_agents_back_are_made_again",
        "a bridge or veth deleted behind the agent's back: made again at once, pings and DNS back",
    ),
    (
        "an_address_is_free_only_once_its_veth_is_gone",
        "a connect racing a disconnect never gets the departing address",
    ),
    (
        "an_agent_starts_with_every_member_down_and_catches_up",
        "every etcd member down at start: the agent starts, serves, and catches up",
    ),
    (
        "claims_of_a_host_gone_longer_than_the_grace_are_released",
        "a host gone for good: its address claims released after lease TTL + claim grace",
    ),
];

const ACCESS: &[(&str, &str)] = &[
    (
        "the_api_refuses_other_users_by_peer_credentials",
        "API socket mode 0660 root-owned; other UIDs refused by SO_PEERCRED",
    ),
    (
        "dns_listens_on_the_gateways_only_never_a_wildcard",
        "DNS sockets only on gateway addresses, never a wildcard (from /proc)",
    ),
    (
        "a_source_on_the_wrong_interface_gets_no_container_names",
        "a source address arriving on another bridge gets no container names",
    ),
    (
        "names_are_checked_before_they_touch_the_file_system_or_the_table",
        "names and hostnames validated before the filesystem or the table; the host's namespace \
         and a /run/netns/NAME (or symlink) the agent did not make refused",
    ),
    (
        "dns_answers_only_queries_that_arrive_on_the_networks_bridge",
        "a namespace routed over its own veth: no reply (UDP), refused (TCP); a container's \
         link-local source gets nothing from another network's gateway",
    ),
    (
        "a_hostile_store_is_ignored_and_logged",
        "a hostile etcd: traversal, multibyte and non-UTF-8 keys, bad MAC, another's address, \
         another host's lease, a local container's id — ignored, logged, tunnels unchanged",
    ),
    (
        "tls_and_credential_mistakes_fail_at_start_naming_the_setting",
        "etcd over mutual TLS and RBAC: wrong CA, no/expired/foreign certificate, wrong \
         password, read-only role — each fails at start naming the setting",
    ),
    (
        "stalled_tcp_clients_delay_nobody",
        "a stalled TCP client delays nobody (CVE-2024-8418's shape)",
    ),
    (
        "idle_tcp_connections_are_closed",
        "idle TCP connections are closed",
    ),
    (
        "listeners_come_and_go_without_disturbing_other_networks",
        "listeners opened/closed per network without a gap on others",
    ),
    (
        "sigkill_and_restart_lose_nothing",
        "SIGKILL + restart: state, DNS at once, orphan veth swept",
    ),
];

pub fn run(args: Args) -> std::process::ExitCode {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let figures_path = root.join("target/reliability.jsonl");
    let _ = std::fs::remove_file(&figures_path);

    if args.fuzz_seconds > 0 {
        let st = Command::new(root.join("fuzz/run"))
            .arg(args.fuzz_seconds.to_string())
            .status()
            .expect("fuzz/run");
        if !st.success() {
            eprintln!("the fuzzers found something: see fuzz/artifacts");
        }
    }

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut results: BTreeMap<String, bool> = BTreeMap::new();
    let mut all_ok = true;
    for (package, tests) in SUITES {
        let mut cmd = Command::new(&cargo);
        cmd.current_dir(&root)
            .args(["test", "--release", "-p", package])
            .env("RELIABILITY_OUT", &figures_path);
        for t in *tests {
            cmd.args(["--test", t]);
        }
        let out = cmd.output().expect("cargo test");
        all_ok &= out.status.success();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Some(rest) = line.strip_prefix("test ") else {
                continue;
            };
            if let Some((name, verdict)) = rest.split_once(" ... ") {
                results.insert(name.trim().to_string(), verdict.trim() == "ok");
            }
        }
        if !out.status.success() {
            eprintln!("{}", String::from_utf8_lossy(&out.stdout));
            eprintln!("{}", String::from_utf8_lossy(&out.stderr));
        }
    }
    let figures: BTreeMap<String, Value> = std::fs::read_to_string(&figures_path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l.strip_prefix("RELIABILITY ")?).ok())
        .filter_map(|v| Some((v["test"].as_str()?.to_string(), v)))
        .collect();
    let fuzz = std::fs::read_to_string(root.join("fuzz/target/summary.tsv")).unwrap_or_default();

    let report = render(&results, &figures, &fuzz, args.fuzz_seconds);
    let out = root.join(&args.out);
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    std::fs::write(&out, report).unwrap();
    println!("wrote {}", out.display());
    if all_ok {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}

fn verdict(results: &BTreeMap<String, bool>, test: &str) -> &'static str {
    match results.get(test) {
        Some(true) => "passed",
        Some(false) => "**FAILED**",
        None => "not run",
    }
}

fn num(v: &Value, k: &str) -> String {
    match &v[k] {
        Value::Number(n) => match n.as_f64() {
            Some(f) if f.fract() != 0.0 => format!("{f:.1}"),
            _ => n.to_string(),
        },
        Value::Null => "?".into(),
        other => other.to_string(),
    }
}

fn render(
    results: &BTreeMap<String, bool>,
    figures: &BTreeMap<String, Value>,
    fuzz: &str,
    fuzz_seconds: u32,
) -> String {
    let mut r = String::new();
    let null = Value::Null;
    let fig = |k: &str| figures.get(k).unwrap_or(&null);
    let command = if fuzz_seconds > 0 {
        format!("cargo xtask reliability-report --fuzz-seconds {fuzz_seconds}")
    } else {
        "cargo xtask reliability-report".to_string()
    };
    let _ = writeln!(
        r,
        "# Reliability and security report\n\n\
         Generated by `{command}` (as root; the tests make namespaces, bridges and veths). \
         Every figure below is from that run, counted by the test named beside it.\n"
    );

    let h = fig("hostile");
    let _ = writeln!(
        r,
        "## Hostile input while a prober asks from another container\n\n\
         `resolver/tests/hostile.rs` ({}). The prober asked every 5 ms throughout: {} answered, \
         {} failed, worst {} ms. CPU one second after the attack: {} ticks/s (idle). What came \
         back for every input was read and counted (UDP: the reply's rcode, or dropped when none \
         came; TCP: the reply, or the server closing the connection), with the TCP connection \
         cap ({}) not yet reached except where the row says so; idle connections were closed \
         {} ms after they opened (idle timeout {} ms).\n\n\
         | input | tried | what came back |\n|---|---:|---|",
        verdict(results, "hostile_input_never_stops_answers"),
        num(h, "prober_answered"),
        num(h, "prober_failed"),
        num(h, "prober_worst_ms"),
        num(h, "idle_cpu_ticks_per_s"),
        num(h, "tcp_cap"),
        num(h, "idle_closed_after_ms"),
        num(h, "tcp_idle_ms"),
    );
    if let Some(classes) = h["classes"].as_object() {
        for (class, c) in classes {
            let outcomes = c["outcomes"]
                .as_object()
                .map(|o| {
                    o.iter()
                        .map(|(what, n)| format!("{what}: {n}"))
                        .collect::<Vec<_>>()
                        .join("; ")
                })
                .unwrap_or_default();
            let _ = writeln!(r, "| {class} | {} | {outcomes} |", num(c, "tried"));
        }
    }

    let b = fig("blackhole");
    let _ = writeln!(
        r,
        "\n## Upstream faults\n\n`resolver/tests/forward.rs`, `forward_process.rs`. Forwarded \
         queries leave on long-lived connected sockets (kernel-chosen ports, rotated) with IDs \
         from a CSPRNG, and only a reply matching ID, question and server is taken.\n\n\
         | fault | result |\n|---|---|"
    );
    for (test, what) in FAULTS {
        let _ = writeln!(r, "| {what} | {} |", verdict(results, test));
    }
    let _ = writeln!(
        r,
        "\nWith every upstream black-holed, one container sent {} external questions: it got \
         back {} (counted at the asker; the server counted {} refused at the asker's in-flight \
         cap) and {} hung upstream; meanwhile a prober asking for a local name got {} answers, \
         {} failed, worst {} ms.",
        num(b, "sent"),
        b["replies_by_rcode"]
            .as_object()
            .map(|o| {
                o.iter()
                    .map(|(code, n)| format!("{n} {}", code.to_uppercase()))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default(),
        num(b, "refused_asker_cap"),
        num(b, "hanging"),
        num(b, "prober_answered"),
        num(b, "prober_failed"),
        num(b, "prober_worst_ms"),
    );
    let t = fig("tcp_pipelining_rss");
    let _ = writeln!(
        r,
        "\nA TCP client pipelining {} forwarded names without reading a reply: the resolver \
         process's RSS went from {} KiB to at most {} KiB (+{} KiB) while another container \
         was answered (the per-connection cap stops reading the connection; the upstream saw \
         {} queries; the rest stayed unread in the socket).",
        num(t, "pipelined_queries"),
        num(t, "rss_before_kib"),
        num(t, "rss_peak_kib"),
        num(t, "rss_growth_kib"),
        num(t, "upstream_queries_seen"),
    );

    let c = fig("churn");
    let _ = writeln!(
        r,
        "\n## Churn under load\n\n`attach-agent/tests/churn.rs` ({}): {} connect/disconnect \
         cycles of one container in {} s while probers in another container asked {} queries \
         ({} q/s). Each probe sent and answered wholly inside one state was judged.\n\n\
         | check | probes judged | wrong |\n|---|---:|---:|\n\
         | connected (connect returned, disconnect not started): its address, never NXDOMAIN | {} | {} |\n\
         | disconnected (disconnect returned): never its address | {} | {} |\n\
         | steady names on the same and another network: always answered (a timeout is wrong) | {} | {} |\n\
         | the churned name's probes that timed out | {} | {} |",
        verdict(results, "connect_disconnect_churn_under_load_is_never_wrong"),
        num(c, "cycles"),
        num(c, "seconds"),
        num(c, "queries"),
        num(c, "queries_per_second"),
        num(c, "judged_connected"),
        num(c, "wrong_connected"),
        num(c, "judged_disconnected"),
        num(c, "wrong_disconnected"),
        num(c, "steady_queries"),
        num(c, "steady_wrong"),
        num(c, "churn_queries"),
        num(c, "timeouts"),
    );

    let k = fig("crash");
    let _ = writeln!(
        r,
        "\n## Crash consistency\n\n`attach-agent/tests/crash.rs` ({}): the daemon SIGKILLed {} \
         times at random moments of a three-client connect/disconnect storm. After each restart \
         (median {} ms, worst {} ms to an answering API): every acknowledged change present, no \
         address held twice, one bridge per network and one veth per endpoint (orphans swept), \
         and DNS naming exactly what is attached.\n\n\
         | acknowledged changes | lost | calls cut by the kill | of those, kept |\n|---:|---:|---:|---:|\n\
         | {} | {} | {} | {} |",
        verdict(results, "sigkill_during_a_connect_storm_loses_nothing"),
        num(k, "kills"),
        num(k, "restart_ms_median"),
        num(k, "restart_ms_max"),
        num(k, "acknowledged"),
        num(k, "lost"),
        num(k, "cut_by_kill"),
        num(k, "cut_kept"),
    );

    let d = fig("disk_full");
    let n = fig("no_reuse_before_teardown");
    let o = fig("store_down_at_start");
    let g = fig("claim_grace");
    let _ = writeln!(
        r,
        "\n## The agent's own faults\n\n| fault | result |\n|---|---|"
    );
    for (test, what) in AGENT_FAULTS {
        let _ = writeln!(r, "| {what} | {} |", verdict(results, test));
    }
    let _ = writeln!(
        r,
        "\nOn the full disk {} of {} operations failed and changed nothing ({} state files \
         compared byte for byte, with both inspects, the links and DNS). In {} rounds of a \
         connect sent while a disconnect was in flight, the departing address was given {} \
         times. With every etcd member down the agent's API answered {} s after its start and it \
         had caught up {} s after its start (the members were started again once it answered); a \
         dead host's claim was released {} s after its death and {} s after its host record \
         went with its lease (lease TTL {} s, claim grace {} s).",
        num(d, "failed_and_changed_nothing"),
        num(d, "operations_tried"),
        num(d, "state_files"),
        num(n, "rounds"),
        num(n, "departing_address_given"),
        num(o, "api_answering_after_s"),
        num(o, "caught_up_after_s"),
        num(g, "released_after_death_s"),
        num(g, "released_after_record_gone_s"),
        num(g, "lease_ttl_s"),
        num(g, "grace_s"),
    );

    let _ = writeln!(r, "\n## Who gets in\n\n| property | result |\n|---|---|");
    for (test, what) in ACCESS {
        let _ = writeln!(r, "| {what} | {} |", verdict(results, test));
    }

    let _ = writeln!(
        r,
        "\n## Fuzzing\n\n`fuzz/run SECONDS` (cargo-fuzz, libFuzzer with AddressSanitizer; seeds in \
         `fuzz/seeds`). {}\n\n| target | seconds | executions | coverage (edges) | crashes |\n|---|---:|---:|---:|---:|",
        if fuzz_seconds > 0 {
            "Run as part of this report."
        } else if fuzz.trim().is_empty() {
            "Not run by this report, and no earlier `fuzz/run` left figures on this machine \
             (`cargo xtask reliability-report --fuzz-seconds N` runs them): no rows."
        } else {
            "Figures from the last `fuzz/run` on this machine (not rerun by this report)."
        }
    );
    for line in fuzz.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() == 5 {
            let _ = writeln!(
                r,
                "| {} | {} | {} | {} | {} |",
                f[0], f[1], f[2], f[3], f[4]
            );
        }
    }
    r
}
