//! `cni install` and `cni conflist`: the files a runtime needs to use the agent's networks.

use hyper::Method;

use super::client::{encode, Client, ClientError};
use super::CniCmd;
use crate::cni::setup;

pub(super) async fn run(client: &Client, cmd: CniCmd) -> Result<i32, ClientError> {
    match cmd {
        CniCmd::Conflist { network } => {
            must_exist(client, &network).await?;
            let text = serde_json::to_string_pretty(&setup::conflist(&network, client.socket()))
                .map_err(|e| ClientError::Decode(e.to_string()))?;
            println!("{text}");
            Ok(0)
        }
        CniCmd::Install {
            bin_dir,
            conf_dir,
            networks,
        } => {
            for n in &networks {
                must_exist(client, n).await?;
            }
            let plugin = std::env::current_exe()
                .map_err(|e| ClientError::Usage(format!("cannot find this program: {e}")))?
                .with_file_name(setup::PLUGIN);
            if !plugin.exists() {
                return Err(ClientError::Usage(format!(
                    "{} not found beside this program: build it (cargo build --release) first",
                    plugin.display()
                )));
            }
            let written = setup::install(&plugin, &bin_dir, &conf_dir, &networks, client.socket())
                .map_err(ClientError::Usage)?;
            for p in written {
                println!("{}", p.display());
            }
            Ok(0)
        }
    }
}

/// A network the conflist names must be one of the daemon's.
async fn must_exist(client: &Client, network: &str) -> Result<(), ClientError> {
    client
        .call(
            Method::GET,
            &format!("/networks/{}", encode(network)),
            None::<&()>,
        )
        .await
        .map(|_| ())
}
