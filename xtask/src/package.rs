//! `cargo xtask package`: the Debian package, built with cargo-deb from the
//! release binary, the systemd unit, the example config, and a man page and
//! completions generated from the clap definitions.

use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};

use crate::sh::{self, probe, step};

const CARGO_DEB_VERSION: &str = "3.8.0";

fn ensure_cargo_deb() -> Result<()> {
    if probe(sh::cmd("cargo").args(["deb", "--version"])).is_some() {
        return Ok(());
    }
    step(&format!(
        "package: installing cargo-deb {CARGO_DEB_VERSION}"
    ));
    sh::run(sh::cmd("cargo").args([
        "install",
        "cargo-deb",
        "--locked",
        "--version",
        CARGO_DEB_VERSION,
    ]))
}

/// Builds the package; returns its path.
pub fn run() -> Result<PathBuf> {
    ensure_cargo_deb()?;
    step("package: cargo build --release -p blocklist-agent");
    sh::run(sh::cargo().args(["build", "--release", "-p", "blocklist-agent"]))?;
    let root = crate::root();
    let assets = root.join("target/release/assets");
    step("package: generating the man page and shell completions");
    sh::run(
        sh::cmd(root.join("target/release/blocklist-agent"))
            .arg("generate")
            .arg(&assets),
    )?;
    let out_dir = root.join("target/debian");
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    step("package: cargo deb");
    let out = sh::cmd("cargo")
        .args([
            "deb",
            "-p",
            "blocklist-agent",
            "--no-build",
            "--no-strip",
            "--output",
        ])
        .arg(&out_dir)
        .output()
        .context("running cargo deb")?;
    if !out.status.success() {
        bail!("cargo deb failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let deb = String::from_utf8_lossy(&out.stdout)
        .lines()
        .rev()
        .find(|l| l.trim_end().ends_with(".deb"))
        .map(|l| PathBuf::from(l.trim()))
        .context("cargo deb did not say where the package is")?;
    Ok(deb)
}
