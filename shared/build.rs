//! Generates the gRPC code from `proto/` with protox, so no system protoc is needed.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../proto");
    let files = [
        proto_root.join("switchboard/v1/admin.proto"),
        proto_root.join("switchboard/v1/cluster.proto"),
        proto_root.join("switchboard/v1/routing.proto"),
        proto_root.join("switchboard/v1/limits.proto"),
    ];
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    let descriptors = protox::compile(&files, [&proto_root])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    // compile_fds takes descriptors as given, so the set for server reflection is written here.
    std::fs::write(
        out_dir.join("switchboard_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    tonic_prost_build::configure()
        // Shared, not copied, between streams and into the decoder.
        .bytes(".switchboard.v1.ConfigUpdate")
        .compile_fds(descriptors)?;
    Ok(())
}
