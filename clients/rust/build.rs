//! Compiles the vendored service protos (`proto/`, copies of the
//! repository's `protos/`) without protoc: protox parses them, tonic turns
//! the descriptors into clients, and into servers with the `server` feature.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("proto");
    let files = ["hfx/v1/eventstash.proto", "hfx/v1/eventstore.proto"];
    for file in files {
        println!("cargo:rerun-if-changed={}", protos.join(file).display());
    }
    let mut compiler = protox::Compiler::new([&protos])?;
    compiler.include_imports(true).open_files(files)?;
    tonic_prost_build::configure()
        .build_server(std::env::var_os("CARGO_FEATURE_SERVER").is_some())
        // Payloads are `Bytes`: an event's data is shared, not copied, by a
        // retry or a batch.
        .bytes(".hfx.v1.StoreEventRequest.data")
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
