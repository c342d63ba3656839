//! Sample events for unit tests: `tests/fixtures` in the repository, or the folder
//! `HOOKER_FIXTURES` names (a corpus with the same `postee/`, `tracee/`, `trivy/` layout).

use std::path::PathBuf;

/// The fixtures folder.
pub fn dir() -> PathBuf {
    std::env::var_os("HOOKER_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures"))
}

/// A fixture's text; panics with the path when it is missing.
pub fn text(relative: &str) -> String {
    let path = dir().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("fixture {}: {err}", path.display()))
}

/// A fixture parsed as JSON; panics with the path when it is missing or not JSON.
pub fn json(relative: &str) -> serde_json::Value {
    serde_json::from_str(&text(relative))
        .unwrap_or_else(|err| panic!("fixture {relative} is not JSON: {err}"))
}
