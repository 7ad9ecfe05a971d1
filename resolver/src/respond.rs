//! The local half of the query path: bytes in, reply bytes out, or "forward this".
//!
//! Runs on the listener's own thread, synchronously: parse the question, find the asker, ask the
//! policy, write the answer into the caller's buffer. Nothing here waits or allocates on the
//! local-answer path (answers of up to eight addresses live on the stack).

use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use crate::metrics::QueryOutcome;
use crate::policy::{self, Decision};
use crate::table::{NetKey, Table};
use crate::upstream::Servers;
use crate::wire::{self, Rcode};

/// What became of a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `out` holds the reply; the query ended so.
    Reply(QueryOutcome),
    /// Not a local name: hand the query to the forwarder, for these servers (the asker's or
    /// its network's) or, `None`, the host's upstreams.
    Forward(Option<Servers>),
    /// Send nothing (the query ended [`QueryOutcome::Dropped`]).
    Drop,
}

/// Where a query came from.
#[derive(Debug, Clone, Copy)]
pub struct Arrival {
    pub src: IpAddr,
    /// Interface index it arrived on, when the transport tells (UDP with IP_PKTINFO).
    pub ifindex: Option<u32>,
    /// The network whose gateway listener received it.
    pub listener: NetKey,
    /// The largest reply the transport takes before truncation: `None` means the asker's UDP
    /// limit (512 or its EDNS size), `Some(n)` a fixed one (TCP).
    pub fixed_limit: Option<usize>,
}

/// Answers local names from the table. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Responder {
    table: Table,
    ttl: Arc<AtomicU32>,
}

impl Responder {
    pub fn new(table: Table, ttl: u32) -> Self {
        Responder {
            table,
            ttl: Arc::new(AtomicU32::new(ttl)),
        }
    }

    pub fn table(&self) -> &Table {
        &self.table
    }

    /// Change the TTL of local answers (configuration reload).
    pub fn set_ttl(&self, ttl: u32) {
        self.ttl.store(ttl, Ordering::Relaxed);
    }

    /// Answer `bytes` into `out`, or say it must be forwarded or dropped.
    pub fn respond(&self, bytes: &[u8], from: &Arrival, out: &mut Vec<u8>) -> Outcome {
        let req = match wire::parse(bytes) {
            Ok(r) => r,
            Err(reject) => {
                let outcome = match reject {
                    wire::Reject::Drop => QueryOutcome::Dropped,
                    wire::Reject::FormErr => QueryOutcome::FormErr,
                    wire::Reject::NotImp => QueryOutcome::NotImp,
                    wire::Reject::BadVers => QueryOutcome::BadVers,
                };
                return match wire::write_reject(out, bytes, reject) {
                    Some(()) => Outcome::Reply(outcome),
                    None => Outcome::Drop,
                };
            }
        };
        let asker = self.table.asker(from.src, from.ifindex, from.listener);
        let limit = from.fixed_limit.unwrap_or_else(|| req.udp_limit());
        let ttl = self.ttl.load(Ordering::Relaxed);
        let outcome = match policy::decide(&self.table, &asker, &req) {
            Decision::Addresses(mut addrs) => {
                fastrand::shuffle(&mut addrs);
                wire::write_addresses(out, &req, &addrs, ttl, limit);
                QueryOutcome::Local
            }
            Decision::Ptr(target) => {
                wire::write_ptr(out, &req, &target, ttl, limit);
                QueryOutcome::Local
            }
            Decision::NoData => {
                wire::write_empty(out, &req, Rcode::NoError);
                QueryOutcome::NoData
            }
            Decision::NxDomain => {
                wire::write_empty(out, &req, Rcode::NxDomain);
                QueryOutcome::NxDomain
            }
            Decision::Forward => return Outcome::Forward(self.table.servers_for(&asker)),
        };
        Outcome::Reply(outcome)
    }
}
