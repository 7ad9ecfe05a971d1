//! How far the daemon's start has got: what `/ready` and `attach-agent info` report.
//!
//! Ready means everything a runtime or a container may ask for is served: the state loaded,
//! the kernel and the record table reconciled with it (every network's DNS listeners open),
//! and the API socket listening. Until then `/ready` answers 503 with what is missing, so a
//! service manager or an orchestrator can hold the containers back.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use resolver::observe::Check;

/// The start's milestones, set once each as they pass.
#[derive(Debug, Default)]
pub struct Startup {
    state_loaded: AtomicBool,
    reconciled: AtomicBool,
    /// Networks and endpoints that could not be brought back at start (each logged).
    networks_failed: AtomicUsize,
    endpoints_failed: AtomicUsize,
    api_listening: AtomicBool,
}

impl Startup {
    pub fn state_loaded(&self) {
        self.state_loaded.store(true, Ordering::SeqCst);
    }

    /// The kernel and the table were made to match the state, but for `networks_failed`
    /// networks (bridge or DNS listeners) and `endpoints_failed` endpoints.
    pub fn reconciled(&self, networks_failed: usize, endpoints_failed: usize) {
        self.networks_failed
            .store(networks_failed, Ordering::SeqCst);
        self.endpoints_failed
            .store(endpoints_failed, Ordering::SeqCst);
        self.reconciled.store(true, Ordering::SeqCst);
    }

    pub fn api_listening(&self) {
        self.api_listening.store(true, Ordering::SeqCst);
    }

    /// Every milestone, passed or not.
    pub fn checks(&self) -> Vec<Check> {
        vec![
            Check {
                name: "state loaded".into(),
                ok: self.state_loaded.load(Ordering::SeqCst),
            },
            Check {
                name: "reconciled with the kernel, DNS listeners open".into(),
                ok: self.reconciled.load(Ordering::SeqCst),
            },
            Check {
                name: match (
                    self.networks_failed.load(Ordering::SeqCst),
                    self.endpoints_failed.load(Ordering::SeqCst),
                ) {
                    (0, 0) => "every network and endpoint back".into(),
                    (n, e) => format!(
                        "every network and endpoint back ({n} networks, {e} endpoints failed at start: see the log)"
                    ),
                },
                // Known only once the reconcile has looked at every one.
                ok: self.reconciled.load(Ordering::SeqCst)
                    && self.networks_failed.load(Ordering::SeqCst) == 0
                    && self.endpoints_failed.load(Ordering::SeqCst) == 0,
            },
            Check {
                name: "API socket listening".into(),
                ok: self.api_listening.load(Ordering::SeqCst),
            },
        ]
    }

    pub fn is_ready(&self) -> bool {
        self.checks().iter().all(|c| c.ok)
    }
}
