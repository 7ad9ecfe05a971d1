//! What a long run is doing: a numbered line a step (`[3/9] dnsmasq with 100 names`), always;
//! and, on a terminal only, a bar for the long loops (the dnsperf runs of a server, connecting
//! a thousand containers) saying how far along they are; the kernel floor's and netavark's
//! loops print a line as they begin. indicatif draws nothing when
//! stderr is not a terminal, so CI's log keeps the step lines alone.

use indicatif::{ProgressBar, ProgressStyle};

/// The numbered steps of a run.
pub(crate) struct Steps {
    done: usize,
    total: usize,
    started: std::time::Instant,
}

impl Steps {
    pub(crate) fn new(total: usize) -> Steps {
        Steps {
            done: 0,
            total,
            started: std::time::Instant::now(),
        }
    }

    /// The next step begins.
    pub(crate) fn next(&mut self, what: &str) {
        self.done += 1;
        eprintln!(
            "[{}/{}, {:.0} s in] {what}",
            self.done,
            self.total.max(self.done),
            self.started.elapsed().as_secs_f64()
        );
    }
}

/// A bar of `len` items for a loop doing `what`.
pub(crate) fn bar(len: u64, what: &str) -> ProgressBar {
    let b = ProgressBar::new(len);
    b.set_style(
        ProgressStyle::with_template("  {msg} [{bar:30}] {pos}/{len} ({elapsed}, {eta} left)")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    b.set_message(what.to_string());
    b
}
