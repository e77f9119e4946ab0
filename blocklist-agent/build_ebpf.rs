//! Building one of this workspace's eBPF crates for the BPF target with the
//! pinned nightly, through aya-build. Shared by the build scripts of
//! `blocklist-agent` (the XDP program) and `tests` (the benchmark's traffic
//! generator), which include this file with `#[path]`, so the toolchain pin
//! lives in one place.

use std::path::PathBuf;

use anyhow::Context as _;
use aya_build::{Package, Toolchain};

/// The nightly whose LLVM (22) matches bpf-linker 0.13.0 built against
/// Debian's LLVM 22. Newer nightlies ship LLVM 23 and fail at link time.
/// `BLOCKLIST_EBPF_TOOLCHAIN` overrides it.
const EBPF_TOOLCHAIN: &str = "nightly-2026-06-25";

/// The bpf-linker `cargo xtask setup` installs into
/// `target/tools/bpf-linker-<version>/bin`; must match xtask/src/tools.rs.
const BPF_LINKER_VERSION: &str = "0.13.0";

/// Puts the bpf-linker that `cargo xtask setup` installed first on `PATH`
/// for the nested build, so that a plain `cargo build` finds it as
/// `cargo xtask` does. A bpf-linker installed elsewhere on `PATH` (as in the
/// Containerfile) still works when that directory does not exist.
fn linker_on_path(workspace: &std::path::Path) {
    let dir = workspace.join(format!("target/tools/bpf-linker-{BPF_LINKER_VERSION}/bin"));
    println!("cargo:rerun-if-changed={}", dir.display());
    if !dir.is_dir() {
        return;
    }
    let mut dirs = vec![dir];
    dirs.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    if let Ok(path) = std::env::join_paths(dirs) {
        // SAFETY: build scripts are single-threaded.
        unsafe { std::env::set_var("PATH", path) };
    }
}

/// Builds package `name` from the workspace directory `dir` with
/// `features`; its binaries land in `OUT_DIR` for `include_bytes_aligned!`.
/// `cargo xtask setup` installs the toolchain this needs; without it the
/// error says so instead of failing deep inside the nested build.
pub fn build(name: &str, dir: &str, features: &[&str]) -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=BLOCKLIST_EBPF_TOOLCHAIN");
    let toolchain =
        std::env::var("BLOCKLIST_EBPF_TOOLCHAIN").unwrap_or_else(|_| EBPF_TOOLCHAIN.to_owned());
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let workspace = manifest_dir
        .parent()
        .context("the crate has no parent (workspace) directory")?;
    linker_on_path(workspace);
    let root_dir = workspace.join(dir);
    let root_dir = root_dir
        .to_str()
        .context("the workspace path is not UTF-8")?;
    aya_build::build_ebpf(
        [Package {
            name,
            root_dir,
            features,
            ..Default::default()
        }],
        Toolchain::Custom(&toolchain),
    )
    .with_context(|| {
        format!(
            "building {name} with toolchain {toolchain} failed; \
             run `cargo xtask setup` to install it, bpf-linker and LLVM 22"
        )
    })
}
