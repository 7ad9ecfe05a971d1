//! Settings of the DNS server, shared by the standalone binary and the agent (which embeds them
//! as its `[dns]` table).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::cache::CacheLimits;
use crate::forward::ForwardSettings;

/// Every knob of the DNS server. Defaults follow Docker where Docker has a value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResolverConfig {
    /// Port of every listener (UDP and TCP). 0 picks a free port (tests).
    pub port: u16,
    /// TTL of local answers, seconds (Docker: 600).
    pub ttl: u32,
    /// Upstream servers, `IP` or `IP:PORT` (`[IPv6]:PORT`). Empty: the nameservers of
    /// `resolv_conf`, re-read when that file changes.
    pub upstreams: Vec<String>,
    /// Where to read upstreams from when `upstreams` is empty.
    pub resolv_conf: PathBuf,
    /// How long to wait for one upstream before trying the next, milliseconds
    /// (Docker: a fixed 4 s).
    pub forward_timeout_ms: u64,
    /// Forwarded queries in flight at once on the host; past it the asker gets REFUSED.
    pub max_inflight: usize,
    /// Forwarded queries in flight at once per asking address (container); past it that
    /// asker gets REFUSED, so one container cannot take the host's budget.
    pub max_inflight_per_client: usize,
    /// Forwarded queries in flight per TCP connection; past it the connection is not read
    /// until one is answered.
    pub max_inflight_per_tcp: usize,
    /// Try upstreams in the configured order (like dnsmasq's `strict-order`), not fastest
    /// first. Either way a server that stops answering is demoted until it answers again.
    pub strict_order: bool,
    /// Upstream answers kept in the cache, at most (0 disables caching).
    pub cache_entries: usize,
    /// Bytes the cache may hold, replies, keys and bookkeeping together (0 disables caching).
    pub cache_bytes: usize,
    /// Larger replies are relayed but not cached, bytes.
    pub cache_max_reply: usize,
    /// Longest an answer is cached, whatever its TTL, seconds.
    pub cache_max_ttl: u32,
    /// How long past expiry a cached answer may be given (TTL 30 s) when no upstream
    /// answers, seconds (RFC 8767 serve-stale; 0 turns it off).
    pub serve_stale_secs: u32,
    /// A TCP connection with no complete query for this long is closed, milliseconds.
    pub tcp_idle_timeout_ms: u64,
    /// Open TCP connections per listener; more are closed at once.
    pub max_tcp_connections: usize,
    /// Answer `host.docker.internal` and `host.containers.internal` on every network (the
    /// names Docker and Podman put only in /etc/hosts), with `host_address` or else the
    /// network's gateway addresses, so programs with their own DNS client find the host too.
    pub host_names: bool,
    /// The host's address(es) those names answer; empty: each network's gateways (the host's
    /// own addresses on that network's bridge).
    pub host_address: Vec<IpAddr>,
}

impl Default for ResolverConfig {
    fn default() -> Self {
        ResolverConfig {
            port: 53,
            ttl: 600,
            upstreams: Vec::new(),
            resolv_conf: PathBuf::from("/etc/resolv.conf"),
            forward_timeout_ms: 2000,
            max_inflight: 1024,
            max_inflight_per_client: 256,
            max_inflight_per_tcp: 32,
            strict_order: false,
            cache_entries: 100_000,
            cache_bytes: 32 << 20,
            cache_max_reply: 16 << 10,
            cache_max_ttl: 86_400,
            serve_stale_secs: 86_400,
            tcp_idle_timeout_ms: 10_000,
            max_tcp_connections: 256,
            host_names: true,
            host_address: Vec::new(),
        }
    }
}

/// A setting that cannot be used.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("invalid upstream {0:?}: expected IP or IP:PORT")]
    BadUpstream(String),
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
    #[error("{0} must be at most {1}")]
    TooLarge(&'static str, u64),
}

impl ResolverConfig {
    /// What `host.docker.internal` answers on a network whose gateways (listen addresses)
    /// are `gateways`: nothing when the names are off.
    pub fn host_addresses(&self, gateways: &[IpAddr]) -> Vec<IpAddr> {
        match (self.host_names, self.host_address.is_empty()) {
            (false, _) => Vec::new(),
            (true, true) => gateways.to_vec(),
            (true, false) => self.host_address.clone(),
        }
    }

    /// Check every value; the server refuses to start on an error.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.fixed_upstreams()?;
        if self.forward_timeout_ms == 0 {
            return Err(ConfigError::Zero("forward_timeout_ms"));
        }
        if self.forward_timeout_ms > 60_000 {
            return Err(ConfigError::TooLarge("forward_timeout_ms", 60_000));
        }
        if self.cache_max_ttl == 0 {
            return Err(ConfigError::Zero("cache_max_ttl"));
        }
        if self.tcp_idle_timeout_ms == 0 {
            return Err(ConfigError::Zero("tcp_idle_timeout_ms"));
        }
        if self.max_inflight == 0 {
            return Err(ConfigError::Zero("max_inflight"));
        }
        if self.max_inflight_per_client == 0 {
            return Err(ConfigError::Zero("max_inflight_per_client"));
        }
        if self.max_inflight_per_tcp == 0 {
            return Err(ConfigError::Zero("max_inflight_per_tcp"));
        }
        if self.max_tcp_connections == 0 {
            return Err(ConfigError::Zero("max_tcp_connections"));
        }
        Ok(())
    }

    /// The configured upstreams, parsed. Empty means "use resolv.conf".
    pub fn fixed_upstreams(&self) -> Result<Vec<SocketAddr>, ConfigError> {
        self.upstreams.iter().map(|s| parse_upstream(s)).collect()
    }

    pub fn forward_timeout(&self) -> Duration {
        Duration::from_millis(self.forward_timeout_ms)
    }

    /// What the forwarder needs of this.
    pub fn forward_settings(&self) -> ForwardSettings {
        ForwardSettings {
            timeout: self.forward_timeout(),
            host_cap: self.max_inflight,
            asker_cap: self.max_inflight_per_client,
            strict_order: self.strict_order,
            cache: CacheLimits {
                max_bytes: self.cache_bytes,
                max_entries: self.cache_entries,
                max_reply: self.cache_max_reply,
                max_ttl: self.cache_max_ttl,
                stale_for: self.serve_stale_secs,
            },
        }
    }

    pub fn tcp_idle_timeout(&self) -> Duration {
        Duration::from_millis(self.tcp_idle_timeout_ms)
    }
}

/// `IP`, `IP:PORT` or `[IPv6]:PORT`; port 53 when none is given.
pub fn parse_upstream(s: &str) -> Result<SocketAddr, ConfigError> {
    let s = s.trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, 53));
    }
    s.parse::<SocketAddr>()
        .map_err(|_| ConfigError::BadUpstream(s.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_forms() {
        assert_eq!(
            parse_upstream("127.0.0.1").unwrap(),
            "127.0.0.1:53".parse().unwrap()
        );
        assert_eq!(
            parse_upstream("127.0.0.1:5353").unwrap(),
            "127.0.0.1:5353".parse().unwrap()
        );
        assert_eq!(parse_upstream("::1").unwrap(), "[::1]:53".parse().unwrap());
        assert!(parse_upstream("nope").is_err());
    }

    #[test]
    fn toml_defaults_and_unknown_keys() {
        let c: ResolverConfig = toml::from_str("ttl = 30").unwrap();
        assert_eq!(c.ttl, 30);
        assert_eq!(c.port, 53);
        assert!(toml::from_str::<ResolverConfig>("tll = 30").is_err());
    }
}
