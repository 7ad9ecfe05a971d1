//! Compiles the etcd v3 API subset in `proto/` into tonic clients.
//!
//! protox parses the `.proto` files in Rust, so building needs nothing but cargo: no `protoc`
//! binary and no `google/protobuf` include directory (a fresh machine has neither).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile(["rpc.proto", "kv.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_server(false)
        .compile_fds(descriptors)?;
    Ok(())
}
