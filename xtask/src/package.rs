//! `cargo xtask package`: the Debian package, built with cargo-deb (from
//! `target/tools/`, installed by `setup`) from the
//! release binary, the systemd unit, the example config, and a man page and
//! completions generated from the clap definitions.

use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};

use crate::sh::{self, step};

/// Builds the package; returns its path.
pub fn run() -> Result<PathBuf> {
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
