//! The service protos this crate compiles (`proto/`) are a copy of the
//! repository's `protos/`, the files producers are pointed to. A change to
//! one without the other would serve a protocol nobody documented.

use std::path::{Path, PathBuf};

const SERVICE_PROTOS: [&str; 2] = ["hfx/v1/eventstash.proto", "hfx/v1/eventstore.proto"];

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()))
}

#[test]
fn vendored_service_protos_are_byte_identical_to_the_repository_protos() {
    for proto in SERVICE_PROTOS {
        let vendored = crate_dir().join("proto").join(proto);
        let published = crate_dir().join("../../protos").join(proto);
        assert!(
            read(&vendored) == read(&published),
            "{} differs from {}: copy the changed one over the other",
            vendored.display(),
            published.display()
        );
    }
}

#[test]
fn every_vendored_proto_is_a_service_proto() {
    let dir = crate_dir().join("proto/hfx/v1");
    let mut found: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| format!("hfx/v1/{}", entry.unwrap().file_name().to_string_lossy()))
        .collect();
    found.sort();
    assert_eq!(found, SERVICE_PROTOS);
}
