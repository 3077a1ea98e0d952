//! Compiles the service protos without protoc: protox parses them into
//! descriptors, which tonic turns into Rust code and the reflection service
//! serves as they are. The protos are the crate's own copy (`proto/`), so
//! the crate builds on its own; `tests/vendored_protos.rs` keeps it
//! byte-identical to the repository's `protos/`, the copy users read. `hfx.v1.EventStash` and `hfx.v1.EventStore` get a
//! descriptor set each, so reflection lists the event store only where it
//! is served.

use std::path::{Path, PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("proto");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let stash = "hfx/v1/eventstash.proto";
    let store = "hfx/v1/eventstore.proto";
    for service in [stash, store] {
        println!("cargo:rerun-if-changed={}", protos.join(service).display());
    }
    write_descriptor_set(&protos, &[stash], &out_dir.join("hfx_v1_descriptor.bin"))?;
    write_descriptor_set(&protos, &[store], &out_dir.join("hfx_v1_eventstore_descriptor.bin"))?;

    let mut compiler = protox::Compiler::new([&protos])?;
    compiler.include_imports(true).open_files([stash, store])?;
    tonic_prost_build::configure()
        // Payloads stay `Bytes` slices of the receive buffer: no copy per event.
        .bytes(".hfx.v1.StoreEventRequest.data")
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}

/// Encodes the descriptors of `files` and their imports to `path`.
fn write_descriptor_set(protos: &Path, files: &[&str], path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let mut compiler = protox::Compiler::new([protos])?;
    compiler.include_imports(true).open_files(files)?;
    std::fs::write(path, compiler.encode_file_descriptor_set())?;
    Ok(())
}
