//! The build profiles: `release` stays quick to build (what a user's first `cargo run --release`
//! compiles), `dist` is the slow fat-LTO build, and everything that builds the image or runs the
//! benchmarks uses `dist` and its binaries in `target/dist/`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
        .to_path_buf()
}

fn read(relative: &str) -> String {
    let path = root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The `key = value` lines of `[profile.NAME]` in the workspace's Cargo.toml (values as written,
/// quotes removed, comments dropped).
fn profile(name: &str) -> Option<BTreeMap<String, String>> {
    let manifest = read("Cargo.toml");
    let header = format!("[profile.{name}]");
    let mut lines = manifest.lines().skip_while(|line| line.trim() != header);
    lines.next()?;
    let mut keys = BTreeMap::new();
    for line in lines {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.starts_with('[') {
            break;
        }
        if let Some((key, value)) = line.split_once('=') {
            keys.insert(
                key.trim().to_string(),
                value.trim().trim_matches('"').to_string(),
            );
        }
    }
    Some(keys)
}

#[test]
fn release_builds_quickly_and_dist_is_the_optimised_build() {
    let release = profile("release").expect("[profile.release] in Cargo.toml");
    let lto = release.get("lto").map(String::as_str).unwrap_or("false");
    assert!(
        matches!(lto, "false" | "off" | "thin"),
        "release must not be fat LTO (a cold `cargo run --release` takes ~11 min on 2 cores): lto = {lto}"
    );
    assert_ne!(
        release.get("codegen-units").map(String::as_str),
        Some("1"),
        "release must keep parallel codegen"
    );
    assert!(
        !release.contains_key("opt-level") || release["opt-level"] == "3",
        "release stays at opt-level 3"
    );
    assert!(!release.contains_key("panic"), "panic strategy unchanged");

    let dist = profile("dist").expect("[profile.dist] in Cargo.toml");
    assert_eq!(dist.get("inherits").map(String::as_str), Some("release"));
    assert_eq!(dist.get("lto").map(String::as_str), Some("fat"));
    assert_eq!(dist.get("codegen-units").map(String::as_str), Some("1"));
}

#[test]
fn the_image_and_the_benchmarks_build_the_dist_profile() {
    let dockerfile = read("Dockerfile");
    assert!(
        dockerfile.contains("cargo build --profile dist --locked -p hooker"),
        "{dockerfile}"
    );
    assert!(
        dockerfile.contains("target/dist/hooker /hooker"),
        "{dockerfile}"
    );
    let build_image = read("daemonset/build-image.sh");
    assert!(
        build_image.contains("bin=${1:-target/dist/hooker}"),
        "{build_image}"
    );
    let bench = read("bench/run.sh");
    assert!(
        bench.contains("cargo build --profile dist -p hooker -p hooker-bench"),
        "{bench}"
    );
    assert!(read("bench/run.py").contains(r#"/ "dist""#));
    // Nothing that builds the image or benchmarks still names the release profile.
    for file in [
        "Dockerfile",
        "daemonset/build-image.sh",
        "daemonset/rootfs.sh",
        "bench/run.sh",
        "bench/run.py",
        "BENCHMARKS.md",
    ] {
        let text = read(file);
        for stale in ["--release", "target/release", r#"/ "release""#] {
            assert!(!text.contains(stale), "{file} still says {stale}");
        }
    }
    // README: image and load-generator commands use dist; `cargo run --release` stays the quick
    // way to try the agent.
    let readme = read("README.md");
    for line in readme.lines().filter(|l| {
        l.contains("build-image.sh") || l.contains("hooker-bench") || l.contains("hooker-load")
    }) {
        assert!(
            !line.contains("release"),
            "README builds the image or benchmarks with release: {line}"
        );
    }
    assert!(readme.contains("cargo build --profile dist -p hooker-bench"));
}
