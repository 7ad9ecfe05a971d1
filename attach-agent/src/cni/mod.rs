//! The CNI front: real runtimes (podman, containerd's ctr, anything that speaks CNI) hand the
//! agent their containers through the `attach-agent-cni` plugin.
//!
//! The plugin ([`plugin`]) is a thin client: it reads what the runtime passes (environment and
//! network config) and sends it to the daemon's socket, where [`front`] checks it and calls the
//! core (`Agent::runtime_*`), so one owner keeps IPAM, the kernel state, the records and the
//! files true. [`spec`] is the contract both share; [`setup`] writes the plugin and conflists
//! where runtimes look for them.

pub mod front;
pub mod plugin;
pub mod setup;
pub mod spec;
