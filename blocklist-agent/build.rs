//! Builds the XDP program (`blocklist-ebpf`, BPF target, pinned nightly) and
//! leaves the object in `OUT_DIR/blocklist` for `include_bytes_aligned!`.
//!
//! `cargo xtask setup` installs the toolchain this needs; without it the
//! error below says so instead of failing deep inside the nested build.

use std::path::PathBuf;

use anyhow::Context as _;
use aya_build::{Package, Toolchain};

/// The nightly whose LLVM (22) matches bpf-linker 0.13.0 built against
/// Debian's LLVM 22. Newer nightlies ship LLVM 23 and fail at link time.
const EBPF_TOOLCHAIN: &str = "nightly-2026-05-19";

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=BLOCKLIST_EBPF_TOOLCHAIN");
    let toolchain =
        std::env::var("BLOCKLIST_EBPF_TOOLCHAIN").unwrap_or_else(|_| EBPF_TOOLCHAIN.to_owned());
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let ebpf_dir = manifest_dir
        .parent()
        .context("blocklist-agent has no parent directory")?
        .join("blocklist-ebpf");
    let ebpf_dir = ebpf_dir
        .to_str()
        .context("the workspace path is not UTF-8")?
        .to_owned();
    let debug_log = std::env::var_os("CARGO_FEATURE_EBPF_DEBUG_LOG").is_some();
    let features: &[&str] = if debug_log { &["debug-log"] } else { &[] };
    aya_build::build_ebpf(
        [Package {
            name: "blocklist-ebpf",
            root_dir: &ebpf_dir,
            features,
            ..Default::default()
        }],
        Toolchain::Custom(&toolchain),
    )
    .with_context(|| {
        format!(
            "building the XDP program with toolchain {toolchain} failed; \
             run `cargo xtask setup` to install it, bpf-linker and LLVM 22"
        )
    })
}
