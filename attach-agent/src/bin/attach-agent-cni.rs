//! The CNI plugin binary: see `attach_agent::cni::plugin`.

fn main() -> std::process::ExitCode {
    attach_agent::cni::plugin::main()
}
