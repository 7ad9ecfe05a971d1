//! Where runtimes look for plugins and networks: the plugin copied into a CNI bin directory
//! and one conflist per agent network in a config directory, both written atomically.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::agent::request::check_name;
use crate::durable::{self, Flush};

/// The plugin's name, as runtimes find it in their CNI bin directory.
pub const PLUGIN: &str = "attach-agent-cni";
/// Where runtimes look by default.
pub const DEFAULT_BIN_DIR: &str = "/opt/cni/bin";
pub const DEFAULT_CONF_DIR: &str = "/etc/cni/net.d";

/// The conflist of agent network `network`, served by the daemon on `socket`. The capabilities
/// make podman pass `--network-alias` and `--ip`s (without them it sends no runtimeConfig).
pub fn conflist(network: &str, socket: &Path) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": network,
        "plugins": [{
            "type": PLUGIN,
            "socket": socket.display().to_string(),
            "capabilities": {"aliases": true, "ips": true, "portMappings": true},
        }],
    })
}

/// The file name of a network's conflist: first among the directory's files, as ctr reads only
/// the first.
pub fn conflist_file(network: &str) -> String {
    format!("10-attach-agent-{network}.conflist")
}

/// Put `plugin` (the built plugin binary) into `bin_dir` and a conflist for each of
/// `networks` into `conf_dir`. The paths written.
pub fn install(
    plugin: &Path,
    bin_dir: &Path,
    conf_dir: &Path,
    networks: &[String],
    socket: &Path,
) -> Result<Vec<PathBuf>, String> {
    for n in networks {
        check_name(n).map_err(|e| e.to_string())?;
    }
    let io = |what: &Path, e: std::io::Error| format!("{}: {e}", what.display());
    std::fs::create_dir_all(bin_dir).map_err(|e| io(bin_dir, e))?;
    std::fs::create_dir_all(conf_dir).map_err(|e| io(conf_dir, e))?;
    let mut written = Vec::new();
    let bin = std::fs::read(plugin).map_err(|e| io(plugin, e))?;
    let target = bin_dir.join(PLUGIN);
    durable::replace(&target, &bin, Flush::FileAndDir).map_err(|e| io(&target, e))?;
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| io(&target, e))?;
    written.push(target);
    for n in networks {
        let path = conf_dir.join(conflist_file(n));
        let text = serde_json::to_string_pretty(&conflist(n, socket)).unwrap_or_default() + "\n";
        durable::replace(&path, text.as_bytes(), Flush::FileAndDir).map_err(|e| io(&path, e))?;
        written.push(path);
    }
    Ok(written)
}
