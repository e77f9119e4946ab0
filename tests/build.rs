//! Builds the benchmark's live-frames traffic generator (`trafficgen-ebpf`,
//! BPF target, the same pinned nightly as the XDP program) into
//! `OUT_DIR/trafficgen` for `cargo xtask bench live`.

use std::path::PathBuf;

use anyhow::Context as _;
use aya_build::{Package, Toolchain};

/// Must match `EBPF_TOOLCHAIN` in `blocklist-agent/build.rs` (see there).
const EBPF_TOOLCHAIN: &str = "nightly-2026-05-19";

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=BLOCKLIST_EBPF_TOOLCHAIN");
    let toolchain =
        std::env::var("BLOCKLIST_EBPF_TOOLCHAIN").unwrap_or_else(|_| EBPF_TOOLCHAIN.to_owned());
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let dir = manifest_dir
        .parent()
        .context("the tests crate has no parent directory")?
        .join("trafficgen-ebpf");
    let dir = dir.to_str().context("the workspace path is not UTF-8")?;
    aya_build::build_ebpf(
        [Package {
            name: "trafficgen-ebpf",
            root_dir: dir,
            ..Default::default()
        }],
        Toolchain::Custom(&toolchain),
    )
    .with_context(|| {
        format!(
            "building the traffic generator with toolchain {toolchain} failed; \
             run `cargo xtask setup` to install it and bpf-linker"
        )
    })
}
