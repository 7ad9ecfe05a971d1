//! How far the daemon's start has got: what `/ready` and `attach-agent info` report.
//!
//! Ready means everything a runtime or a container may ask for is served: the state loaded,
//! the kernel and the record table reconciled with it (every network's DNS listeners open),
//! and the API socket listening. Until then `/ready` answers 503 with what is missing, so a
//! service manager or an orchestrator can hold the containers back.

use std::sync::atomic::{AtomicBool, Ordering};

use resolver::observe::Check;

/// The start's milestones, set once each as they pass.
#[derive(Debug, Default)]
pub struct Startup {
    state_loaded: AtomicBool,
    reconciled: AtomicBool,
    api_listening: AtomicBool,
}

impl Startup {
    pub fn state_loaded(&self) {
        self.state_loaded.store(true, Ordering::SeqCst);
    }

    /// The kernel and the table match the state, and every network's listeners are open.
    pub fn reconciled(&self) {
        self.reconciled.store(true, Ordering::SeqCst);
    }

    pub fn api_listening(&self) {
        self.api_listening.store(true, Ordering::SeqCst);
    }

    /// Every milestone, passed or not.
    pub fn checks(&self) -> Vec<Check> {
        vec![
            Check {
                name: "state loaded",
                ok: self.state_loaded.load(Ordering::SeqCst),
            },
            Check {
                name: "reconciled with the kernel, DNS listeners open",
                ok: self.reconciled.load(Ordering::SeqCst),
            },
            Check {
                name: "API socket listening",
                ok: self.api_listening.load(Ordering::SeqCst),
            },
        ]
    }

    pub fn is_ready(&self) -> bool {
        self.checks().iter().all(|c| c.ok)
    }
}
