//! Compiles the HFXEventStash service proto without protoc: protox parses it
//! into descriptors, which tonic turns into Rust code and the reflection
//! service serves as they are.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../protos");
    let service = "hfx/v1/eventstash.proto";
    println!("cargo:rerun-if-changed={}", protos.join(service).display());

    let mut compiler = protox::Compiler::new([&protos])?;
    compiler.include_imports(true).open_file(service)?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("hfx_v1_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;

    tonic_prost_build::configure()
        // Payloads stay `Bytes` slices of the receive buffer: no copy per event.
        .bytes(".hfx.v1.StoreEventRequest.data")
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
