//! attach-agent: the per-host sidecar that does `docker network connect`'s work (bridges,
//! veths, addresses, routes) and keeps the embedded resolver's record table true.
//!
//! Control path: CLI → HTTP on the socket ([`api`]) → [`agent`] → [`ipam`] + [`netlink`] +
//! [`state`] → resolver table → reply.

pub mod agent;
pub mod api;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod config;
pub mod daemon;
pub mod docker;
pub mod error;
pub mod global;
pub mod ipam;
pub mod names;
pub mod netlink;
pub mod netns;
pub mod request;
pub mod state;
