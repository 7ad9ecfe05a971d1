//! The agent's configuration: `configs/agent.toml` documents every key; flags override it.

use std::path::{Path, PathBuf};

use resolver::ResolverConfig;
use serde::{Deserialize, Serialize};

/// Default API socket.
pub const DEFAULT_SOCKET: &str = "/run/attach-agent/attach-agent.sock";
/// Default state directory.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/attach-agent";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    /// Unix socket of the Engine API.
    pub socket: PathBuf,
    /// Where the state is persisted.
    pub state_dir: PathBuf,
    /// Group allowed on the socket besides root (mode 0660); none: root only.
    pub socket_group: Option<String>,
    /// Prefix of every bridge and veth the agent makes (at most 6 characters). Links with this
    /// prefix that the state does not know are removed at start.
    pub link_prefix: String,
    /// The DNS server.
    pub dns: ResolverConfig,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            socket: DEFAULT_SOCKET.into(),
            state_dir: DEFAULT_STATE_DIR.into(),
            socket_group: None,
            link_prefix: "aag".into(),
            dns: ResolverConfig::default(),
        }
    }
}

impl AgentConfig {
    /// Read a TOML file; missing keys keep their defaults.
    pub fn load(path: &Path) -> Result<AgentConfig, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let c: AgentConfig =
            toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        c.validate()?;
        Ok(c)
    }

    pub fn validate(&self) -> Result<(), String> {
        let p = &self.link_prefix;
        if p.is_empty() || p.len() > 6 || !p.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(format!(
                "link_prefix {p:?}: 1 to 6 letters or digits (interface names are at most 15)"
            ));
        }
        self.dns.validate().map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_example_is_the_default() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/agent.toml");
        assert_eq!(
            AgentConfig::load(Path::new(path)).unwrap(),
            AgentConfig::default()
        );
    }

    #[test]
    fn bad_prefix_is_rejected() {
        let c = AgentConfig {
            link_prefix: "much-too-long".into(),
            ..AgentConfig::default()
        };
        assert!(c.validate().is_err());
    }
}
