//! Network drivers: what builds a network. A leaf of the model, shared by the state and the
//! cluster store's records.

use serde::{Deserialize, Serialize};

/// A network's driver: what builds it. Written as Docker names them (`bridge`, `overlay`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Driver {
    /// One host: a Linux bridge.
    Bridge,
    /// Every host of the cluster: a bridge per host joined by VXLAN.
    Overlay,
}

impl Driver {
    /// The driver Docker calls `name`; `None` for one the agent does not have.
    pub fn from_name(name: &str) -> Option<Driver> {
        match name {
            "bridge" => Some(Driver::Bridge),
            "overlay" => Some(Driver::Overlay),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Driver::Bridge => "bridge",
            Driver::Overlay => "overlay",
        }
    }
}

impl std::fmt::Display for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
