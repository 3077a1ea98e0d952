//! Generates the messages of `protos/examples/contact/addressbook.proto`
//! (HFXEventStash's example, `contact.AddressBook`) for the protobuf
//! payload, with protox: no protoc.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../protos");
    let file = "examples/contact/addressbook.proto";
    println!("cargo:rerun-if-changed={}", protos.join(file).display());
    let mut compiler = protox::Compiler::new([&protos])?;
    compiler.include_imports(true).open_files([file])?;
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(false)
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
