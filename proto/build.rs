//! Compiles the `.proto` files with a pure-Rust compiler (protox), so no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/image/v1/manifest.proto",
        "proto/ferry/v1/common.proto",
        "proto/ferry/v1/agent.proto",
        "proto/ferry/v1/peer.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
