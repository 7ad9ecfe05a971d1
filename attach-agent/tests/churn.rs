//! Churn under load: 1,000 connect/disconnect cycles of one container on a network while
//! probers in another container ask for it, and for names on that network and on another one,
//! as fast as the server answers.
//!
//! Judged per query, by when it was sent and answered against when each operation started and
//! returned: a query asked and answered wholly after a connect returned and before the next
//! disconnect started must get the container's address; one wholly after a disconnect returned
//! and before the next connect started must get no address (it is forwarded: NXDOMAIN or, with the test's dead upstream, SERVFAIL). Queries
//! that overlap an operation may get either. Names that do not churn must always answer, on
//! both networks: no listener gap, no timeout.

mod common;

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{report, Answer, Api, Asker, Env};
use serde_json::json;

const CYCLES: usize = 1000;

/// One probe: when it was sent, when its answer came, what it said.
struct Probe {
    sent: Instant,
    got: Instant,
    answer: Answer,
}

/// The churned container's state between operations.
struct Window {
    from: Instant,
    to: Instant,
    connected: bool,
}

fn gateway(env: &Env, third: u8) -> Ipv4Addr {
    env.ip(third, 1).parse().unwrap()
}

#[test]
fn connect_disconnect_churn_under_load_is_never_wrong() {
    let env = Env::new();
    let (p, c, d, e) = (env.name("p"), env.name("c"), env.name("d"), env.name("e"));
    env.ok(&["network", "create", "--subnet", &env.subnet(1), "n1"]);
    env.ok(&["network", "create", "--subnet", &env.subnet(2), "n2"]);
    env.ok(&["run", "--name", &p, "--network", "n1", "busybox"]);
    env.ok(&["network", "connect", "n2", &p]);
    env.ok(&["run", "--name", &d, "--network", "n1", "busybox"]);
    env.ok(&["run", "--name", &e, "--network", "n2", "busybox"]);
    env.ok(&["run", "--name", &c, "busybox"]);
    let d_ip: Ipv4Addr = env.ip_of(&d, "n1").parse().unwrap();
    let e_ip: Ipv4Addr = env.ip_of(&e, "n2").parse().unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    // The load: one prober asking for the churned name, one for the steady names on both
    // networks (alternating), each as fast as answers come.
    let churn_probe = {
        let (stop, c) = (stop.clone(), c.clone());
        let mut asker = Asker::new(&p, gateway(&env, 1), Duration::from_secs(1));
        std::thread::spawn(move || {
            let mut probes = Vec::with_capacity(1 << 20);
            while !stop.load(Ordering::Relaxed) {
                let sent = Instant::now();
                let answer = asker.ask(&c);
                probes.push(Probe {
                    sent,
                    got: Instant::now(),
                    answer,
                });
            }
            probes
        })
    };
    let steady_probe = {
        let (stop, d, e) = (stop.clone(), d.clone(), e.clone());
        let mut on_n1 = Asker::new(&p, gateway(&env, 1), Duration::from_secs(1));
        let mut on_n2 = Asker::new(&p, gateway(&env, 2), Duration::from_secs(1));
        std::thread::spawn(move || {
            // Every wrong answer counted; the first 20 kept to show.
            let (mut asked, mut bad, mut wrong) = (0u64, 0u64, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                for (asker, name, want) in [(&mut on_n1, &d, d_ip), (&mut on_n2, &e, e_ip)] {
                    let a = asker.ask(name);
                    asked += 1;
                    if a != Answer::Addrs(vec![want]) {
                        bad += 1;
                        if wrong.len() < 20 {
                            wrong.push(format!("{name}: {a:?}"));
                        }
                    }
                }
            }
            (asked, bad, wrong)
        })
    };

    let api = Api::new(&env.socket);
    let mut windows = Vec::with_capacity(2 * CYCLES);
    let mut addrs = std::collections::BTreeSet::new();
    let started = Instant::now();
    let mut last = Instant::now();
    for _ in 0..CYCLES {
        let t0 = Instant::now();
        windows.push(Window {
            from: last,
            to: t0,
            connected: false,
        });
        api.ok(
            "POST",
            "/networks/n1/connect",
            Some(json!({"Container": c})),
        );
        let t1 = Instant::now();
        let info = api.ok("GET", &format!("/containers/{c}/json"), None);
        let ip = info["NetworkSettings"]["Networks"]["n1"]["IPAddress"]
            .as_str()
            .unwrap()
            .parse::<Ipv4Addr>()
            .unwrap();
        addrs.insert(ip);
        std::thread::sleep(Duration::from_micros(500));
        let t2 = Instant::now();
        windows.push(Window {
            from: t1,
            to: t2,
            connected: true,
        });
        api.ok(
            "POST",
            "/networks/n1/disconnect",
            Some(json!({"Container": c})),
        );
        last = Instant::now();
        std::thread::sleep(Duration::from_micros(500));
    }
    let elapsed = started.elapsed();
    std::thread::sleep(Duration::from_millis(50));
    stop.store(true, Ordering::Relaxed);
    let probes = churn_probe.join().unwrap();
    let (steady_asked, steady_bad, steady_wrong) = steady_probe.join().unwrap();

    // Judge every churn probe that lies wholly inside one window.
    let (mut judged_up, mut judged_down, mut wrong) = (0u64, 0u64, Vec::new());
    let (mut wrong_up, mut wrong_down) = (0u64, 0u64);
    let mut w = windows.iter().peekable();
    for pr in &probes {
        while w.peek().is_some_and(|w| w.to < pr.sent) {
            w.next();
        }
        let Some(win) = w.peek() else { break };
        if pr.sent < win.from || pr.got > win.to {
            continue;
        }
        let ok = if win.connected {
            judged_up += 1;
            matches!(&pr.answer, Answer::Addrs(a) if a.len() == 1 && addrs.contains(&a[0]))
        } else {
            judged_down += 1;
            // Gone from every network, the name is no longer local: it is forwarded, and the
            // test's upstream (a closed port on loopback) makes that SERVFAIL. Never an address.
            matches!(pr.answer, Answer::NxDomain | Answer::Rcode(2))
        };
        if !ok {
            *if win.connected {
                &mut wrong_up
            } else {
                &mut wrong_down
            } += 1;
        }
        if !ok && wrong.len() < 20 {
            wrong.push(format!(
                "{} window, answer {:?}",
                if win.connected {
                    "connected"
                } else {
                    "disconnected"
                },
                pr.answer
            ));
        }
    }
    let timed_out: Vec<&Probe> = probes
        .iter()
        .filter(|p| p.answer == Answer::Timeout)
        .collect();
    let timeouts = timed_out.len();
    // Where each timeout was sent, to tell a local answer that never came from a forwarded
    // one (the disconnected name goes upstream) when this fails.
    let sent_in: Vec<String> = timed_out
        .iter()
        .map(|pr| {
            let win = windows
                .iter()
                .find(|w| w.from <= pr.sent && pr.sent <= w.to);
            format!(
                "sent {:.3} s in, {}",
                (pr.sent - started).as_secs_f64(),
                match win {
                    Some(w) if w.connected => "while connected",
                    Some(_) => "while disconnected",
                    None => "during a connect or disconnect call",
                }
            )
        })
        .collect();
    let total = probes.len() as u64 + steady_asked;
    report(json!({
        "test": "churn",
        "cycles": CYCLES,
        "seconds": elapsed.as_secs_f64(),
        "queries": total,
        "queries_per_second": total as f64 / elapsed.as_secs_f64(),
        "judged_connected": judged_up,
        "judged_disconnected": judged_down,
        "wrong_connected": wrong_up,
        "wrong_disconnected": wrong_down,
        "churn_queries": probes.len(),
        "timeouts": timeouts,
        "steady_queries": steady_asked,
        "steady_wrong": steady_bad,
    }));
    assert!(
        wrong.is_empty(),
        "wrong answers for the churned name: {wrong:#?}"
    );
    assert!(
        steady_wrong.is_empty(),
        "steady names failed during churn: {steady_wrong:#?}"
    );
    assert_eq!(timeouts, 0, "churned-name queries timed out: {sent_in:?}");
    // The judging must have had something to judge, on both sides.
    assert!(
        judged_up >= CYCLES as u64 / 4 && judged_down >= CYCLES as u64 / 4,
        "too few probes fell inside windows: {judged_up} connected, {judged_down} disconnected"
    );
    // Nothing left behind by 1,000 veths made and deleted (the last deletion runs after the
    // disconnect returned: give it a moment).
    let veths = || -> Vec<String> {
        env.links()
            .into_iter()
            .filter(|l| !l.contains('-'))
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while veths().len() > 4 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        veths().len(),
        4,
        "the veths of p (2), d and e only: {:?}",
        veths()
    );
    assert_eq!(
        env.links_in(&c),
        ["lo"],
        "no interface left in the churned container"
    );
}
