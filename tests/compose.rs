//! docker-compose.yml and the Dockerfile, checked without a Docker engine
//! (none runs on the CI machines): see tests/python/check_compose.py.

mod support;

use std::process::Command;

use support::*;

#[test]
fn compose_file_and_dockerfile_are_consistent_with_the_repository() {
    let stdout = run_ok(Command::new(python()).arg(repo_root().join("tests/python/check_compose.py")));
    assert_eq!(stdout.trim(), "ok");
}
