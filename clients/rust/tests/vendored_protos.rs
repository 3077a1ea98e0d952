//! The protos this crate compiles (`proto/`) are copies of the repository's
//! `protos/`, so that the crate builds on its own; this keeps them equal.

use std::path::PathBuf;

#[test]
fn vendored_protos_are_the_repositorys() {
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let repository = crate_dir.join("../../protos");
    // Built from a published package there is no repository to compare with.
    if !repository.is_dir() {
        return;
    }
    for file in ["hfx/v1/eventstash.proto", "hfx/v1/eventstore.proto"] {
        let vendored = std::fs::read(crate_dir.join("proto").join(file)).unwrap();
        let original = std::fs::read(repository.join(file)).unwrap();
        assert!(
            vendored == original,
            "clients/rust/proto/{file} differs from protos/{file}: copy it over"
        );
    }
}
