//! `cargo xtask setup`: install what the build and tests need, idempotently,
//! one clear message per step.
//!
//! - Debian packages: LLVM 22 (for bpf-linker), bpftool, iproute2, ping.
//! - The pinned nightly (LLVM 22) with `rust-src`, for the eBPF crate.
//! - bpf-linker 0.13.0 built against Debian's LLVM 22.
//! - rustfmt and clippy for the stable toolchain (lints in `test`).
//! - medallion 3.0.0, the TAXII 2.1 reference server, in a virtualenv
//!   under `target/taxii-venv` (used by the feed tests).

use std::path::Path;

use anyhow::{Context as _, Result, bail};

use crate::sh::{self, probe, step};

/// Must match `EBPF_TOOLCHAIN` in blocklist-agent/build_ebpf.rs.
pub const EBPF_TOOLCHAIN: &str = "nightly-2026-05-19";
const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
const MEDALLION_VERSION: &str = "3.0.0";
/// The reference parser the metrics test checks our output with.
const PROMETHEUS_CLIENT_VERSION: &str = "0.26.0";
/// Offline Kubernetes schema validation for the manifests test.
const KUBERNETES_VALIDATE_VERSION: &str = "1.37.0";

/// Debian packages and the command or file that shows each is installed.
const APT_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    "bpftool",
    "iproute2",
    "iputils-ping",
    // `man blocklist-agent` in the package test.
    "man-db",
    // The package, least-privilege and TLS-fault tests.
    "systemd",
    "util-linux",
    "openssl",
    // Baselines for `cargo xtask bench`.
    "ipset",
    "nftables",
    "iptables",
    // xdp-filter, the XDP baseline of `bench live`; ethtool turns on the
    // receiving veth's GRO (its NAPI ring) there.
    "xdp-tools",
    "ethtool",
];

pub fn run() -> Result<()> {
    if std::env::var_os("XTASK_SKIP_SETUP").is_some() {
        return Ok(());
    }
    if !Path::new("/etc/debian_version").exists() {
        bail!(
            "cargo xtask setup only knows Debian/Ubuntu. Install by hand: LLVM 22 development files \
             (llvm-config 22, libPolly), zstd and zlib headers, bpftool, iproute2 and ping; \
             `rustup toolchain install {EBPF_TOOLCHAIN} --component rust-src`; then \
             `LLVM_PREFIX=<llvm-22 prefix> cargo install bpf-linker --version {BPF_LINKER_VERSION} \
             --locked --no-default-features --features llvm-22`. \
             Set XTASK_SKIP_SETUP=1 to skip this check afterwards."
        );
    }
    apt()?;
    components()?;
    nightly()?;
    bpf_linker()?;
    medallion()?;
    Ok(())
}

/// The Python of the virtualenv holding medallion (the tests use it too).
pub fn medallion_python() -> std::path::PathBuf {
    crate::root().join("target/taxii-venv/bin/python3")
}

fn medallion() -> Result<()> {
    let py = medallion_python();
    if probe(sh::cmd(&py).args([
        "-c",
        "import medallion, prometheus_client, kubernetes_validate",
    ]))
    .is_some()
    {
        return Ok(());
    }
    step(&format!(
        "setup: installing medallion {MEDALLION_VERSION} (TAXII 2.1 reference server) and \
         prometheus_client {PROMETHEUS_CLIENT_VERSION} (metrics parser) and kubernetes-validate \
         {KUBERNETES_VALIDATE_VERSION} (manifest schemas) for the tests into target/taxii-venv"
    ));
    let venv = crate::root().join("target/taxii-venv");
    if !py.exists() {
        let made = sh::run(sh::cmd("python3").args(["-m", "venv"]).arg(&venv));
        if made.is_err() {
            // Debian's own python3 needs python3-venv for this.
            sh::run(
                sh::cmd("apt-get")
                    .args(["install", "-y", "-q", "python3", "python3-venv"])
                    .env("DEBIAN_FRONTEND", "noninteractive"),
            )?;
            sh::run(sh::cmd("python3").args(["-m", "venv"]).arg(&venv))?;
        }
    }
    sh::run(sh::cmd(&py).args([
        "-m",
        "pip",
        "install",
        "-q",
        "--disable-pip-version-check",
        &format!("medallion=={MEDALLION_VERSION}"),
        &format!("prometheus_client=={PROMETHEUS_CLIENT_VERSION}"),
        &format!("kubernetes-validate=={KUBERNETES_VALIDATE_VERSION}"),
    ]))
    .context("pip could not install medallion and prometheus_client; the tests need them")
}

fn dpkg_installed(pkg: &str) -> bool {
    probe(sh::cmd("dpkg-query").args(["-W", "-f=${Status}", pkg]))
        .is_some_and(|s| s.contains("install ok installed"))
}

fn apt() -> Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| !dpkg_installed(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    step(&format!(
        "setup: installing Debian packages {}",
        missing.join(" ")
    ));
    sh::require_root("installing Debian packages with apt-get")?;
    sh::run(sh::cmd("apt-get").args(["update", "-q"]))?;
    sh::run(
        sh::cmd("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
    .context("apt-get install failed; the packages above are needed for the eBPF build and tests")
}

fn components() -> Result<()> {
    let installed =
        probe(sh::cmd("rustup").args(["component", "list", "--installed"])).unwrap_or_default();
    let missing: Vec<&str> = ["rustfmt", "clippy"]
        .into_iter()
        .filter(|c| !installed.lines().any(|l| l.starts_with(c)))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    step(&format!(
        "setup: rustup component add {}",
        missing.join(" ")
    ));
    sh::run(sh::cmd("rustup").args(["component", "add"]).args(&missing))
}

fn nightly() -> Result<()> {
    let has_src = probe(sh::cmd("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        EBPF_TOOLCHAIN,
    ]))
    .is_some_and(|s| s.lines().any(|l| l.starts_with("rust-src")));
    if has_src {
        return Ok(());
    }
    step(&format!(
        "setup: installing Rust {EBPF_TOOLCHAIN} with rust-src (builds the XDP program)"
    ));
    sh::run(sh::cmd("rustup").args([
        "toolchain",
        "install",
        EBPF_TOOLCHAIN,
        "--profile",
        "minimal",
        "--component",
        "rust-src",
    ]))
}

fn bpf_linker() -> Result<()> {
    let version = probe(sh::cmd("bpf-linker").arg("--version")).unwrap_or_default();
    if version.contains(BPF_LINKER_VERSION) {
        return Ok(());
    }
    step(&format!(
        "setup: building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (about 2 minutes)"
    ));
    // bpf-linker's build script finds llvm-config on PATH; Debian's default
    // one is LLVM 14, so LLVM 22's bin directory must come first.
    let path = format!(
        "{LLVM_PREFIX}/bin:{}",
        std::env::var("PATH").unwrap_or_default()
    );
    sh::run(
        sh::cmd("cargo")
            .args([
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--locked",
                "--no-default-features",
                "--features",
                "llvm-22",
            ])
            .env("PATH", path)
            .env("LLVM_PREFIX", LLVM_PREFIX),
    )
}
