//! The `attach-agent-cni` plugin: what a runtime executes. It reads the runtime's environment
//! and network config, answers VERSION itself, and sends everything else to the daemon named
//! by the config's `socket` (default: the daemon's default socket), printing the daemon's CNI
//! result or error. It keeps no state and touches nothing itself.

use std::io::{Read, Write};
use std::process::ExitCode;

use hyper::Method;
use serde_json::Value;

use super::spec::{
    version_result, CniError, Code, Command, PluginCall, MAX_CONFIG_BYTES, PLUGIN_VERSION,
};
use crate::cli::client::{Client, ClientError};
use crate::config::DEFAULT_SOCKET;

/// Run the plugin: CNI's protocol on stdin, stdout and the exit code.
pub fn main() -> ExitCode {
    let env = |k: &str| std::env::var(k).unwrap_or_default();
    let mut stdin = Vec::new();
    let read = std::io::stdin()
        .take(MAX_CONFIG_BYTES as u64 + 1)
        .read_to_end(&mut stdin);
    let outcome = match (Command::parse(&env("CNI_COMMAND")), read) {
        (None, _) => Err(CniError::new(
            Code::InvalidEnvironment,
            format!(
                "CNI_COMMAND {:?} is not one of ADD, DEL, CHECK, STATUS, GC, VERSION",
                env("CNI_COMMAND")
            ),
        )),
        (Some(Command::Version), _) => Ok(Some(version_result())),
        (Some(_), Err(e)) => Err(CniError::new(Code::Io, format!("reading stdin: {e}"))),
        (Some(_), Ok(_)) if stdin.len() > MAX_CONFIG_BYTES => Err(CniError::new(
            Code::Decode,
            format!("the network config is larger than {MAX_CONFIG_BYTES} bytes"),
        )),
        (Some(command), Ok(_)) => run(command, &stdin, &env),
    };
    let mut out = std::io::stdout().lock();
    match outcome {
        Ok(result) => {
            if let Some(v) = result {
                let _ = writeln!(out, "{v}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            let _ = writeln!(out, "{}", serde_json::to_string(&e).unwrap_or_default());
            ExitCode::FAILURE
        }
    }
}

fn run(
    command: Command,
    stdin: &[u8],
    env: &dyn Fn(&str) -> String,
) -> Result<Option<Value>, CniError> {
    let config: Value = serde_json::from_slice(stdin).map_err(|e| {
        CniError::new(
            Code::Decode,
            format!("cannot decode the network config: {e}"),
        )
    })?;
    let version = config
        .get("cniVersion")
        .and_then(Value::as_str)
        .unwrap_or(PLUGIN_VERSION)
        .to_string();
    let socket = config
        .get("socket")
        .and_then(Value::as_str)
        .unwrap_or(DEFAULT_SOCKET)
        .to_string();
    let call = PluginCall {
        command,
        container_id: env("CNI_CONTAINERID"),
        netns: env("CNI_NETNS"),
        ifname: env("CNI_IFNAME"),
        args: env("CNI_ARGS"),
        config,
    };
    let reply = ask_daemon(&socket, &call).map_err(|e| e.in_version(&version))?;
    Ok((command == Command::Add).then_some(reply))
}

/// One call to the daemon; its CNI error when it refused, ours when it could not be asked.
fn ask_daemon(socket: &str, call: &PluginCall) -> Result<Value, CniError> {
    let unreachable = |why: String| {
        let code = if call.command == Command::Status {
            Code::NotAvailable
        } else {
            Code::TryAgainLater
        };
        CniError::new(
            code,
            format!("is attach-agent daemon running on {socket}? ({why})"),
        )
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CniError::new(Code::Io, format!("starting the plugin's runtime: {e}")))?;
    let client = Client::new(socket).map_err(|e| unreachable(e.to_string()))?;
    let body = serde_json::to_vec(call).map_err(|e| CniError::new(Code::Io, e.to_string()))?;
    let (status, bytes) = runtime
        .block_on(client.raw(Method::POST, "/cni/v1/call", Some(body)))
        .map_err(|e| match e {
            ClientError::Connect { source, .. } => unreachable(source.to_string()),
            e => unreachable(e.to_string()),
        })?;
    if status.is_success() {
        return serde_json::from_slice(&bytes).map_err(|e| {
            CniError::new(
                Code::Decode,
                format!("unexpected reply from the daemon: {e}"),
            )
        });
    }
    // The daemon's CNI error; anything else (the socket's access check) as an I/O failure
    // with the daemon's words.
    if let Ok(e) = serde_json::from_slice::<CniError>(&bytes) {
        return Err(e);
    }
    let msg = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|v| v.get("message").and_then(Value::as_str).map(String::from))
        .unwrap_or_else(|| String::from_utf8_lossy(&bytes).trim().to_string());
    Err(CniError::new(
        Code::Io,
        format!("the daemon refused: {msg}"),
    ))
}
