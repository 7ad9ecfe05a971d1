//! Runs in the foreground, which the agent cannot do: it runs no processes, so there is no
//! output to follow. Two clients' exact sequences, and only they, mark such a run, and it
//! fails with words that say why and leaves nothing behind (no started container holding the
//! network):
//! - `docker run` without `-d`: create, attach, wait, start. The attach is let through (held
//!   open, empty: the docker client shows no text of a refused attach); the start is refused
//!   with 501 and the container removed.
//! - the Python SDK's `containers.run` without `detach`: create, inspect, start, logs with
//!   `follow` of stdout alone (`stderr=0`, run's default), inspect. The logs are refused with
//!   501; the SDK then inspects the container (to learn whether it has a TTY) before it raises
//!   that error: that inspect is answered, and the container removed. (The SDK's own
//!   `create`, `start` and `logs(follow=True)` ask for stderr too, and keep their container;
//!   `containers.run(stderr=True)` in the foreground then keeps its container as well.)
//!
//! Any other request about the container in between (`docker start -a` inspects first;
//! `docker logs -f` inspects after the start) ends the watch, and a request for output then
//! gets a plain 501 that changes nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::ids::ContainerId;

/// Where a watched container is in a foreground run's sequence.
#[derive(Debug)]
enum Step {
    /// Created with its output attached (`AttachStdout`/`AttachStderr`).
    Created,
    /// Then inspected (the SDK reads the new container back).
    Inspected,
    /// Then started (the SDK's sequence).
    Started,
    /// The SDK's logs were refused: its next inspect ends the run.
    LogsRefused,
    /// Attached right after its create (`docker run`'s sequence): the held connection closes
    /// when this sender goes.
    Attached(#[allow(dead_code)] oneshot::Sender<()>),
}

/// What an inspect of a container is to do besides answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inspect {
    AsAlways,
    /// The SDK's run in the foreground is over: remove the container once answered.
    EndRun,
}

/// Containers created with their output attached, while a foreground run's sequence may still
/// be going on. A cheap-clone handle shared by the container handlers.
#[derive(Debug, Clone, Default)]
pub struct ForegroundRuns(Arc<Mutex<HashMap<ContainerId, Step>>>);

/// Containers created with attached output and never touched again (`docker create` alone)
/// stay watched; past this many, watching them is not worth the memory and all watches end.
const MAX_WATCHED: usize = 4096;

impl ForegroundRuns {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<ContainerId, Step>) -> T) -> T {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut map)
    }

    /// Whether any container is watched (so other handlers can skip resolving names).
    pub fn any(&self) -> bool {
        self.with(|m| !m.is_empty())
    }

    /// A container was created; `attached`: with its output attached.
    pub fn created(&self, id: &ContainerId, attached: bool) {
        if attached {
            self.with(|m| {
                if m.len() >= MAX_WATCHED {
                    // A held attach stays: its run's start is still to come.
                    m.retain(|_, step| matches!(step, Step::Attached(_)));
                }
                m.insert(id.clone(), Step::Created);
            });
        }
    }

    /// The container was inspected: part of the SDK's sequence before the start, its end
    /// after the refused logs, and the end of the watch after the start (`docker logs -f`
    /// inspects first).
    pub fn inspected(&self, id: &ContainerId) -> Inspect {
        self.with(|m| match m.remove(id) {
            Some(Step::Created | Step::Inspected) => {
                m.insert(id.clone(), Step::Inspected);
                Inspect::AsAlways
            }
            Some(held @ Step::Attached(_)) => {
                m.insert(id.clone(), held);
                Inspect::AsAlways
            }
            Some(Step::LogsRefused) => Inspect::EndRun,
            Some(Step::Started) | None => Inspect::AsAlways,
        })
    }

    /// A client waits for the container: `docker run` does between its attach and its start.
    pub fn waited(&self, id: &ContainerId) {
        self.with(|m| {
            if !matches!(m.get(id), Some(Step::Attached(_))) {
                m.remove(id);
            }
        });
    }

    /// The container is to be started: whether this is `docker run`'s start after its attach,
    /// to be refused (the watch ends then; the SDK's goes on to its logs).
    pub fn starts_foreground_run(&self, id: &ContainerId) -> bool {
        self.with(|m| match m.remove(id) {
            Some(Step::Inspected) => {
                m.insert(id.clone(), Step::Started);
                false
            }
            Some(Step::Attached(_)) => true,
            _ => false,
        })
    }

    /// Anything else was asked about the container (or it was removed): no longer watched.
    pub fn touched(&self, id: &ContainerId) {
        self.with(|m| {
            m.remove(id);
        });
    }

    /// A client attaches to the container's output. Right after its create (`docker run`):
    /// a receiver that resolves when the attach should close; else `None` (answer 501).
    pub fn attach(&self, id: &ContainerId) -> Option<oneshot::Receiver<()>> {
        self.with(|m| match m.remove(id) {
            Some(Step::Created) => {
                let (tx, rx) = oneshot::channel();
                m.insert(id.clone(), Step::Attached(tx));
                Some(rx)
            }
            _ => None,
        })
    }

    /// A client follows the container's logs: whether this is the SDK's run in the
    /// foreground (create, inspect, start, logs), which its next inspect then ends.
    pub fn follows_logs(&self, id: &ContainerId) -> bool {
        self.with(|m| match m.remove(id) {
            Some(Step::Started) => {
                m.insert(id.clone(), Step::LogsRefused);
                true
            }
            _ => false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(tag: u8) -> ContainerId {
        ContainerId::for_test(&format!("c{tag}"))
    }

    #[test]
    fn only_the_two_foreground_sequences_are_runs() {
        let runs = ForegroundRuns::default();
        // docker run (no -d): create, attach, wait, start.
        runs.created(&id(1), true);
        let mut held = runs.attach(&id(1)).expect("held open");
        runs.waited(&id(1));
        assert_eq!(runs.inspected(&id(1)), Inspect::AsAlways);
        assert!(held.try_recv().is_err(), "still held");
        assert!(runs.starts_foreground_run(&id(1)));
        assert!(held
            .try_recv()
            .is_err_and(|e| e == oneshot::error::TryRecvError::Closed));
        // The SDK's run: create, inspect, start, logs, inspect.
        runs.created(&id(2), true);
        assert_eq!(runs.inspected(&id(2)), Inspect::AsAlways);
        assert!(!runs.starts_foreground_run(&id(2)));
        assert!(runs.follows_logs(&id(2)));
        assert_eq!(runs.inspected(&id(2)), Inspect::EndRun);
        assert_eq!(runs.inspected(&id(2)), Inspect::AsAlways);
        // docker start -a: inspect, then attach.
        runs.created(&id(3), true);
        runs.inspected(&id(3));
        assert!(runs.attach(&id(3)).is_none());
        // docker create; docker start; docker logs -f (inspects after the start).
        runs.created(&id(4), true);
        assert!(!runs.starts_foreground_run(&id(4)));
        runs.inspected(&id(4));
        assert!(!runs.follows_logs(&id(4)));
        runs.created(&id(5), true);
        runs.inspected(&id(5));
        assert!(!runs.starts_foreground_run(&id(5)));
        runs.inspected(&id(5));
        assert!(!runs.follows_logs(&id(5)));
        // Detached creates are never watched; a connect in between ends the watch.
        runs.created(&id(6), false);
        assert!(runs.attach(&id(6)).is_none());
        runs.created(&id(7), true);
        runs.touched(&id(7));
        assert!(runs.attach(&id(7)).is_none());
        // An attach, then something else: the held attach closes, the start goes ahead.
        runs.created(&id(8), true);
        let mut held = runs.attach(&id(8)).unwrap();
        runs.touched(&id(8));
        assert!(held
            .try_recv()
            .is_err_and(|e| e == oneshot::error::TryRecvError::Closed));
        assert!(!runs.starts_foreground_run(&id(8)));
        assert!(!runs.any());
    }
}
