//! Scoped container DNS.
//!
//! A concurrent record table ([`table`]) of networks and container endpoints, and a DNS server
//! ([`server`]) listening on every network's gateway that answers a container's questions about
//! the containers on its networks and forwards everything else upstream.
//!
//! The query path: [`listen`] (socket) → [`wire`] (question) → [`policy`] (scope, table lookup)
//! → answer bytes, or → [`forward`] → upstream → reply. The control path only calls the
//! table's writer API and [`Server::add_network`]/[`Server::remove_network`].

pub mod cache;
pub mod config;
pub mod forward;
pub mod huge_pages;
pub mod listen;
pub mod logging;
pub mod metrics;
pub mod observe;
pub mod policy;
pub mod records;
pub mod respond;
pub mod server;
pub mod table;
pub mod upstream;
pub mod wire;

pub use config::ResolverConfig;
pub use server::{Server, ServerError};
pub use table::{EndpointSpec, Link, NetworkSpec, Table, TableError};
