//! The tools `setup` builds with `cargo install`, each pinned to one
//! version and installed into a directory of the project's own,
//! `target/tools/<name>-<version>/`, never into `~/.cargo/bin`.
//!
//! Why a directory of our own: a fresh clone does not have it, so CI (which
//! always starts from a fresh clone) runs every install command for real,
//! and a broken install line fails CI instead of hiding behind a tool that
//! somebody once installed by hand. xtask puts each tool's `bin` on `PATH`
//! for its own children ([`put_on_path`]); `blocklist-agent/build_ebpf.rs`
//! finds bpf-linker in the same place, so a plain `cargo build` works after
//! `cargo xtask setup` too.

use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};

use crate::sh::{self, probe, step};

/// Where Debian's LLVM 22 lives; bpf-linker builds against it.
pub const LLVM_PREFIX: &str = "/usr/lib/llvm-22";

/// One `cargo install`ed tool.
pub struct CargoTool {
    /// The crate (and binary) name.
    pub name: &'static str,
    pub version: &'static str,
    /// Extra `cargo install` arguments.
    pub args: &'static [&'static str],
    /// Build against Debian's LLVM 22 (its `bin` first on `PATH`).
    pub llvm: bool,
    /// What it is for, in the install message.
    pub why: &'static str,
}

/// Must match `BPF_LINKER_VERSION` in blocklist-agent/build_ebpf.rs and the
/// Containerfile (tests/tests/kubernetes.rs checks both).
pub const BPF_LINKER_VERSION: &str = "0.13.0";

pub const BPF_LINKER: CargoTool = CargoTool {
    name: "bpf-linker",
    version: BPF_LINKER_VERSION,
    args: &["--no-default-features", "--features", "llvm-22"],
    llvm: true,
    why: "links the XDP program; built against LLVM 22, about 2 minutes",
};

pub const CARGO_FUZZ: CargoTool = CargoTool {
    name: "cargo-fuzz",
    version: "0.13.2",
    args: &[],
    llvm: false,
    why: "runs the parsers' fuzz targets in `test` and `fuzz`",
};

pub const CARGO_DEB: CargoTool = CargoTool {
    name: "cargo-deb",
    version: "3.8.0",
    args: &[],
    llvm: false,
    why: "builds the Debian package in `test` and `package`",
};

/// Every `cargo install`ed tool, in install order.
pub const ALL: &[&CargoTool] = &[&BPF_LINKER, &CARGO_FUZZ, &CARGO_DEB];

impl CargoTool {
    /// `target/tools/<name>-<version>`, the `--root` of its install.
    pub fn root(&self) -> PathBuf {
        crate::root()
            .join("target/tools")
            .join(format!("{}-{}", self.name, self.version))
    }

    pub fn bin_dir(&self) -> PathBuf {
        self.root().join("bin")
    }

    /// The version the installed binary reports, when it reports ours.
    fn installed(&self) -> Option<String> {
        let out = probe(sh::cmd(self.bin_dir().join(self.name)).arg("--version"))?;
        // `bpf-linker 0.13.0`, `cargo-fuzz 0.13.2`, `3.8.0`: the version is
        // one whitespace-separated word.
        out.split_whitespace()
            .any(|w| w == self.version)
            .then(|| out.trim().to_owned())
    }

    /// Installs the tool unless its pinned version is there already;
    /// returns the line `setup` prints for it.
    pub fn ensure(&self) -> Result<String> {
        let root = self.root();
        let shown = root
            .strip_prefix(crate::root())
            .unwrap_or(&root)
            .display()
            .to_string();
        if self.installed().is_some() {
            return Ok(format!("{} {} (found in {shown})", self.name, self.version));
        }
        step(&format!(
            "setup: installing {} {} into {shown} ({})",
            self.name, self.version, self.why
        ));
        let mut c = sh::cmd("cargo");
        c.args(["install", self.name, "--version"])
            .arg(format!("={}", self.version))
            .arg("--locked")
            .arg("--root")
            .arg(&root)
            .args(self.args)
            // Rebuild over a half-finished earlier attempt.
            .arg("--force");
        // The stable cargo running xtask, not a toolchain file's choice.
        for var in ["RUSTUP_TOOLCHAIN", "CARGO_TARGET_DIR"] {
            c.env_remove(var);
        }
        if self.llvm {
            // bpf-linker's build script finds llvm-config on PATH; Debian's
            // default one is LLVM 14, so LLVM 22's bin directory goes first.
            let path = format!(
                "{LLVM_PREFIX}/bin:{}",
                std::env::var("PATH").unwrap_or_default()
            );
            c.env("PATH", path).env("LLVM_PREFIX", LLVM_PREFIX);
        }
        sh::run(&mut c).with_context(|| {
            format!(
                "installing {} {} failed; it {}",
                self.name, self.version, self.why
            )
        })?;
        match self.installed() {
            Some(_) => Ok(format!(
                "{} {} (installed now in {shown})",
                self.name, self.version
            )),
            None => bail!(
                "{} was installed into {shown} but `{} --version` does not report {}; \
                 remove {shown} and run `cargo xtask setup` again",
                self.name,
                self.name,
                self.version
            ),
        }
    }
}

/// Puts every tool's `bin` directory first on this process's `PATH`, so
/// every command xtask runs (cargo, its build scripts, `cargo fuzz`,
/// `cargo deb`) finds the pinned versions.
pub fn put_on_path() {
    let mut dirs: Vec<PathBuf> = ALL.iter().map(|t| t.bin_dir()).collect();
    dirs.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    let path = std::env::join_paths(dirs).expect("tool paths contain no ':'");
    // SAFETY: called at the start of main, before xtask starts any thread.
    unsafe { std::env::set_var("PATH", path) };
}
