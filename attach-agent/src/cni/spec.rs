//! The CNI contract as the plugin and the daemon share it (CNI spec 1.1, configs of 0.4.0 to
//! 1.1.0): what a runtime passes (environment and network config), what the plugin sends the
//! daemon, the ADD result in the config's version, and CNI's error object with its codes.
//! Pure: parsing, checks and rendering only.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The versions whose configs the plugin accepts, oldest first; results use the config's.
pub const SUPPORTED_VERSIONS: [&str; 3] = ["0.4.0", "1.0.0", "1.1.0"];
/// The version the plugin answers VERSION with.
pub const PLUGIN_VERSION: &str = "1.1.0";
/// Largest network config read from stdin (runtimes send a few KiB).
pub const MAX_CONFIG_BYTES: usize = 1 << 20;

/// CNI's well-known error codes (spec §"Error"), and ours from 100 up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    IncompatibleVersion = 1,
    UnsupportedField = 2,
    UnknownContainer = 3,
    InvalidEnvironment = 4,
    Io = 5,
    Decode = 6,
    InvalidConfig = 7,
    TryAgainLater = 11,
    /// STATUS: the plugin cannot serve ADDs now.
    NotAvailable = 50,
    /// Ours: an address asked for is held by another container.
    AddressInUse = 100,
    /// Ours: the name asked for belongs to another container.
    NameInUse = 101,
}

/// A CNI error object: printed on stdout by the plugin, which then exits non-zero.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniError {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    pub code: u32,
    pub msg: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    pub fn new(code: Code, msg: impl Into<String>) -> CniError {
        CniError {
            cni_version: PLUGIN_VERSION.into(),
            code: code as u32,
            msg: msg.into(),
            details: String::new(),
        }
    }

    /// The same error, in the version the runtime speaks.
    pub fn in_version(mut self, version: &str) -> CniError {
        if SUPPORTED_VERSIONS.contains(&version) {
            self.cni_version = version.into();
        }
        self
    }
}

impl std::fmt::Display for CniError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (CNI error {})", self.msg, self.code)
    }
}

/// `CNI_COMMAND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Command {
    Add,
    Del,
    Check,
    Status,
    Gc,
    Version,
}

impl Command {
    pub fn parse(s: &str) -> Option<Command> {
        match s {
            "ADD" => Some(Command::Add),
            "DEL" => Some(Command::Del),
            "CHECK" => Some(Command::Check),
            "STATUS" => Some(Command::Status),
            "GC" => Some(Command::Gc),
            "VERSION" => Some(Command::Version),
            _ => None,
        }
    }
}

/// What the plugin sends the daemon: the runtime's environment and its network config as
/// they came (the daemon checks them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PluginCall {
    pub command: Command,
    #[serde(default)]
    pub container_id: String,
    #[serde(default)]
    pub netns: String,
    #[serde(default)]
    pub ifname: String,
    #[serde(default)]
    pub args: String,
    /// The network config from stdin.
    pub config: Value,
}

/// The plugin's entry of a network config (a conflist's plugin entry, with the runtime's
/// additions).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct NetConf {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    /// The agent's network name.
    pub name: String,
    #[serde(rename = "type", default)]
    pub plugin_type: String,
    /// The daemon's API socket (the plugin reads it; the daemon ignores it).
    #[serde(default)]
    pub socket: Option<PathBuf>,
    #[serde(rename = "runtimeConfig", default)]
    pub runtime_config: RuntimeConfig,
    /// GC (1.1): the attachments the runtime still has.
    #[serde(rename = "cni.dev/valid-attachments", default)]
    pub valid_attachments: Vec<Attachment>,
}

/// The capabilities the conflist declares, as the runtime fills them.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct RuntimeConfig {
    /// Network name → aliases (podman's `--network-alias`).
    #[serde(default)]
    pub aliases: BTreeMap<String, Vec<String>>,
    /// Static addresses (podman: two or more `--ip`), without prefix length.
    #[serde(default)]
    pub ips: Vec<String>,
    /// Accepted and recorded nowhere: the agent does not forward ports (README says so).
    #[serde(rename = "portMappings", default)]
    pub port_mappings: Vec<Value>,
    #[serde(default)]
    pub mac: Option<String>,
}

/// One attachment a runtime keeps (GC's valid list).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    #[serde(default)]
    pub ifname: String,
}

impl NetConf {
    /// Parse and check a config: a supported version and a network name.
    pub fn from_value(v: &Value) -> Result<NetConf, CniError> {
        let conf: NetConf = serde_json::from_value(v.clone()).map_err(|e| {
            CniError::new(
                Code::Decode,
                format!("cannot decode the network config: {e}"),
            )
        })?;
        if !SUPPORTED_VERSIONS.contains(&conf.cni_version.as_str()) {
            return Err(CniError::new(
                Code::IncompatibleVersion,
                format!(
                    "cniVersion {:?} is not supported; attach-agent-cni supports {}",
                    conf.cni_version,
                    SUPPORTED_VERSIONS.join(", ")
                ),
            ));
        }
        if conf.name.is_empty() {
            return Err(CniError::new(
                Code::InvalidConfig,
                "the network config has no name (the attach-agent network to attach to)",
            ));
        }
        Ok(conf)
    }
}

/// `CNI_ARGS`: `K=V;K=V`. A pair without `=` is invalid.
pub fn parse_args(args: &str) -> Result<BTreeMap<String, String>, CniError> {
    let mut out = BTreeMap::new();
    for pair in args.split(';').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').ok_or_else(|| {
            CniError::new(
                Code::InvalidEnvironment,
                format!("CNI_ARGS: {pair:?} is not KEY=VALUE"),
            )
        })?;
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

pub use crate::mac::{parse as parse_mac, text as mac_text};

/// One address of an ADD result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultIp {
    pub address: IpAddr,
    pub prefix_len: u8,
    pub gateway: IpAddr,
}

/// What an ADD made, to be rendered in the runtime's version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddResult {
    pub ifname: String,
    pub mac: [u8; 6],
    pub sandbox: String,
    pub ips: Vec<ResultIp>,
    /// Gateways of the default routes this attachment added (its container's first network).
    pub default_routes: Vec<IpAddr>,
    pub nameservers: Vec<IpAddr>,
}

impl AddResult {
    /// The result object of CNI `version`: 1.x, or 0.4.0 (whose ips carry `version`).
    pub fn render(&self, version: &str) -> Value {
        let old = version.starts_with("0.");
        let ips: Vec<Value> = self
            .ips
            .iter()
            .map(|ip| {
                let mut v = json!({
                    "address": format!("{}/{}", ip.address, ip.prefix_len),
                    "gateway": ip.gateway.to_string(),
                    "interface": 0,
                });
                if old {
                    v["version"] = json!(if ip.address.is_ipv4() { "4" } else { "6" });
                }
                v
            })
            .collect();
        let routes: Vec<Value> = self
            .default_routes
            .iter()
            .map(|gw| {
                let dst = if gw.is_ipv4() { "0.0.0.0/0" } else { "::/0" };
                json!({"dst": dst, "gw": gw.to_string()})
            })
            .collect();
        json!({
            "cniVersion": version,
            "interfaces": [{
                "name": self.ifname,
                "mac": mac_text(self.mac),
                "sandbox": self.sandbox,
            }],
            "ips": ips,
            "routes": routes,
            "dns": {
                "nameservers": self.nameservers.iter().map(ToString::to_string).collect::<Vec<_>>(),
            },
        })
    }
}

/// VERSION's answer.
pub fn version_result() -> Value {
    json!({"cniVersion": PLUGIN_VERSION, "supportedVersions": SUPPORTED_VERSIONS})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_of_supported_versions_parse_and_others_are_refused() {
        let conf = NetConf::from_value(&json!({
            "cniVersion": "1.0.0", "name": "demo", "type": "attach-agent-cni",
            "capabilities": {"aliases": true},
            "runtimeConfig": {"aliases": {"demo": ["web", "0123456789ab"]}, "ips": ["10.1.0.9"]}
        }))
        .unwrap();
        assert_eq!(conf.runtime_config.aliases["demo"], ["web", "0123456789ab"]);
        assert_eq!(conf.runtime_config.ips, ["10.1.0.9"]);
        for v in ["0.4.0", "1.1.0"] {
            assert!(NetConf::from_value(&json!({"cniVersion": v, "name": "n"})).is_ok());
        }
        let e = NetConf::from_value(&json!({"cniVersion": "0.3.1", "name": "n"})).unwrap_err();
        assert_eq!(e.code, Code::IncompatibleVersion as u32);
        let e = NetConf::from_value(&json!({"cniVersion": "1.0.0"})).unwrap_err();
        assert_eq!(e.code, Code::Decode as u32);
        let e = NetConf::from_value(&json!({"cniVersion": "1.0.0", "name": ""})).unwrap_err();
        assert_eq!(e.code, Code::InvalidConfig as u32);
    }

    #[test]
    fn args_and_macs_parse() {
        let a = parse_args("IgnoreUnknown=1;K8S_POD_NAME=web;IP=10.1.0.5").unwrap();
        assert_eq!(a["K8S_POD_NAME"], "web");
        assert_eq!(a["IP"], "10.1.0.5");
        assert!(parse_args("").unwrap().is_empty());
        assert!(parse_args("oops").is_err());
        assert_eq!(parse_mac("02:42:0a:01:00:05"), Some([2, 0x42, 10, 1, 0, 5]));
        for bad in [
            "",
            "02:42:0a:01:00",
            "zz:42:0a:01:00:05",
            "01:00:5e:00:00:01",
            "2:42:a:1:0:5",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
    }

    #[test]
    fn results_follow_the_configs_version() {
        let r = AddResult {
            ifname: "eth0".into(),
            mac: [2, 0x42, 10, 1, 0, 5],
            sandbox: "/run/netns/x".into(),
            ips: vec![ResultIp {
                address: "10.1.0.5".parse().unwrap(),
                prefix_len: 24,
                gateway: "10.1.0.1".parse().unwrap(),
            }],
            default_routes: vec!["10.1.0.1".parse().unwrap()],
            nameservers: vec!["10.1.0.1".parse().unwrap()],
        };
        let v1 = r.render("1.0.0");
        assert_eq!(v1["interfaces"][0]["mac"], "02:42:0a:01:00:05");
        assert_eq!(v1["ips"][0]["address"], "10.1.0.5/24");
        assert!(v1["ips"][0].get("version").is_none());
        assert_eq!(v1["routes"][0]["dst"], "0.0.0.0/0");
        assert_eq!(v1["dns"]["nameservers"][0], "10.1.0.1");
        let v04 = r.render("0.4.0");
        assert_eq!(v04["cniVersion"], "0.4.0");
        assert_eq!(v04["ips"][0]["version"], "4");
    }
}
