//! `cargo xtask setup`: install what the build and tests need, idempotently,
//! one clear message per step, and at the end one line per tool with the
//! version found or installed.
//!
//! - Debian packages: LLVM 22 (for bpf-linker), bpftool, iproute2, ping and
//!   the rest of [`APT_PACKAGES`]; each is checked by its installed version.
//! - The pinned nightly (LLVM 22) with `rust-src`, for the eBPF crate,
//!   checked by the LLVM major it reports; rustfmt and clippy for stable.
//! - bpf-linker, cargo-fuzz and cargo-deb, pinned, in `target/tools/`
//!   (see [`crate::tools`]: a fresh clone installs them for real).
//! - medallion, prometheus_client and kubernetes-validate, pinned, in a
//!   virtualenv under `target/taxii-venv` (used by the tests).

use std::path::Path;

use anyhow::{Context as _, Result, bail};

use crate::{
    sh::{self, probe, step},
    tools::{self, BPF_LINKER_VERSION, LLVM_PREFIX},
};

/// Must match `EBPF_TOOLCHAIN` in blocklist-agent/build_ebpf.rs.
pub const EBPF_TOOLCHAIN: &str = "nightly-2026-06-25";
/// The LLVM major of [`EBPF_TOOLCHAIN`]; bpf-linker is built against the
/// same one, and a mismatch fails at link time ("Invalid record").
const EBPF_LLVM_MAJOR: &str = "22";

/// Python packages for the tests, installed into `target/taxii-venv`:
/// (distribution, version, why).
const PYTHON_PACKAGES: &[(&str, &str, &str)] = &[
    ("medallion", "3.0.0", "the TAXII 2.1 reference server"),
    (
        "prometheus_client",
        "0.26.0",
        "the reference parser the metrics test checks our output with",
    ),
    (
        "kubernetes-validate",
        "1.37.0",
        "offline Kubernetes schema validation for the manifests test",
    ),
    (
        "pymisp",
        "2.5.34.4",
        "MISP's own library: the MISP test regenerates its fixtures with it",
    ),
];

/// A Debian package, and the start of the version it must have (`None`:
/// any version of it will do).
struct AptPackage {
    name: &'static str,
    version: Option<&'static str>,
}

const fn apt(name: &'static str) -> AptPackage {
    AptPackage {
        name,
        version: None,
    }
}

/// LLVM 22 from bookworm's security updates: its epoch-1 versions.
const fn llvm22(name: &'static str) -> AptPackage {
    AptPackage {
        name,
        version: Some("1:22."),
    }
}

const APT_PACKAGES: &[AptPackage] = &[
    llvm22("llvm-22-dev"),
    llvm22("libpolly-22-dev"),
    apt("libzstd-dev"),
    apt("zlib1g-dev"),
    apt("bpftool"),
    apt("iproute2"),
    apt("iputils-ping"),
    // `man blocklist-agent` in the package test.
    apt("man-db"),
    // The package, least-privilege and TLS-fault tests.
    apt("systemd"),
    apt("util-linux"),
    apt("openssl"),
    // Baselines for `cargo xtask bench`.
    apt("ipset"),
    apt("nftables"),
    apt("iptables"),
    // xdp-filter, the XDP baseline of `bench live`; ethtool turns on the
    // receiving veth's GRO (its NAPI ring) there.
    apt("xdp-tools"),
    apt("ethtool"),
    // The Local API the CrowdSec bouncer test polls (run privately by the
    // test, never as the system service), and fail2ban for its action.
    apt("crowdsec"),
    apt("fail2ban"),
];

/// crowdsec's post-install step registers with CrowdSec's Central API and
/// fails without internet, unless this file exists and is non-empty before
/// the install; the tests never use the Central API.
const CROWDSEC_ONLINE_CREDENTIALS: &str = "/etc/crowdsec/online_api_credentials.yaml";

fn prepare_crowdsec_offline() -> Result<()> {
    let path = Path::new(CROWDSEC_ONLINE_CREDENTIALS);
    if std::fs::metadata(path).is_ok_and(|m| m.len() > 0) {
        return Ok(());
    }
    std::fs::create_dir_all("/etc/crowdsec").context("creating /etc/crowdsec")?;
    std::fs::write(
        path,
        "# Written by `cargo xtask setup`: no Central API (offline install for the tests).\n",
    )
    .with_context(|| format!("writing {CROWDSEC_ONLINE_CREDENTIALS}"))
}

pub fn run() -> Result<()> {
    // The tools' directories go on PATH even when setup is skipped, so a
    // machine set up earlier still finds them.
    tools::put_on_path();
    if std::env::var_os("XTASK_SKIP_SETUP").is_some() {
        return Ok(());
    }
    if !Path::new("/etc/debian_version").exists() {
        bail!(
            "cargo xtask setup only knows Debian/Ubuntu. Install by hand: LLVM 22 development files \
             (llvm-config 22, libPolly), zstd and zlib headers, bpftool, iproute2 and ping; \
             `rustup toolchain install {EBPF_TOOLCHAIN} --component rust-src`; then \
             `LLVM_PREFIX=<llvm-22 prefix> cargo install bpf-linker --version {BPF_LINKER_VERSION} \
             --locked --no-default-features --features llvm-22 --root target/tools/bpf-linker-{BPF_LINKER_VERSION}`. \
             Set XTASK_SKIP_SETUP=1 to skip this check afterwards."
        );
    }
    let mut found = apt_packages()?;
    found.extend(rust_toolchains()?);
    for tool in tools::ALL {
        found.push(tool.ensure()?);
    }
    found.extend(python_packages()?);
    step("setup: tools");
    for line in found {
        eprintln!("    {line}");
    }
    Ok(())
}

/// The Python of the virtualenv holding medallion (the tests use it too).
pub fn medallion_python() -> std::path::PathBuf {
    crate::root().join("target/taxii-venv/bin/python3")
}

/// The installed version of each of [`PYTHON_PACKAGES`], `None` for the
/// ones that are missing.
fn python_versions(py: &Path) -> Vec<Option<String>> {
    let names: Vec<String> = PYTHON_PACKAGES
        .iter()
        .map(|(n, _, _)| format!("{n:?}"))
        .collect();
    let script = format!(
        "import importlib.metadata as m\n\
         for n in [{}]:\n\
         \x20   try: print(m.version(n))\n\
         \x20   except m.PackageNotFoundError: print('-')\n",
        names.join(",")
    );
    let out = probe(sh::cmd(py).args(["-c", &script])).unwrap_or_default();
    let mut lines = out.lines();
    PYTHON_PACKAGES
        .iter()
        .map(|_| lines.next().filter(|v| *v != "-").map(str::to_owned))
        .collect()
}

fn python_packages() -> Result<Vec<String>> {
    let py = medallion_python();
    let wrong = |versions: &[Option<String>]| -> Vec<String> {
        PYTHON_PACKAGES
            .iter()
            .zip(versions)
            .filter(|((_, want, _), have)| have.as_deref() != Some(*want))
            .map(|((name, want, _), _)| format!("{name}=={want}"))
            .collect()
    };
    let missing = wrong(&python_versions(&py));
    if !missing.is_empty() {
        let why: Vec<String> = PYTHON_PACKAGES
            .iter()
            .map(|(n, v, why)| format!("{n} {v} ({why})"))
            .collect();
        step(&format!(
            "setup: installing {} into target/taxii-venv for the tests",
            why.join(", ")
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
        sh::run(
            sh::cmd(&py)
                .args(["-m", "pip", "install", "-q", "--disable-pip-version-check"])
                .args(&missing),
        )
        .with_context(|| {
            format!(
                "pip could not install {}; the tests need them",
                missing.join(" ")
            )
        })?;
    }
    let versions = python_versions(&py);
    let still = wrong(&versions);
    if !still.is_empty() {
        bail!(
            "target/taxii-venv still lacks {} after pip install; remove target/taxii-venv and \
             run `cargo xtask setup` again",
            still.join(" ")
        );
    }
    Ok(PYTHON_PACKAGES
        .iter()
        .zip(versions)
        .map(|((name, _, _), v)| {
            format!(
                "{name} {} (pip, target/taxii-venv{})",
                v.unwrap_or_default(),
                if missing.iter().any(|m| m.starts_with(name)) {
                    ", installed now"
                } else {
                    ""
                }
            )
        })
        .collect())
}

/// The installed version of a Debian package.
fn dpkg_version(pkg: &str) -> Option<String> {
    let out = probe(sh::cmd("dpkg-query").args(["-W", "-f=${Status}\t${Version}", pkg]))?;
    let (status, version) = out.split_once('\t')?;
    status
        .contains("install ok installed")
        .then(|| version.to_owned())
}

fn acceptable(p: &AptPackage, version: Option<&str>) -> bool {
    match (version, p.version) {
        (None, _) => false,
        (Some(_), None) => true,
        (Some(v), Some(want)) => v.starts_with(want),
    }
}

fn apt_packages() -> Result<Vec<String>> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .filter(|p| !acceptable(p, dpkg_version(p.name).as_deref()))
        .map(|p| p.name)
        .collect();
    if !missing.is_empty() {
        step(&format!(
            "setup: installing Debian packages {}",
            missing.join(" ")
        ));
        sh::require_root("installing Debian packages with apt-get")?;
        if missing.contains(&"crowdsec") {
            prepare_crowdsec_offline()?;
        }
        sh::run(sh::cmd("apt-get").args(["update", "-q"]))?;
        sh::run(
            sh::cmd("apt-get")
                .args(["install", "-y", "-q", "--no-install-recommends"])
                .args(&missing)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
        .context(
            "apt-get install failed; the packages above are needed for the eBPF build and tests",
        )?;
    }
    APT_PACKAGES
        .iter()
        .map(|p| {
            let v = dpkg_version(p.name);
            if !acceptable(p, v.as_deref()) {
                bail!(
                    "Debian package {} is at {} after apt-get install, but the build needs {}*; \
                     enable the repository that has it (bookworm-security for LLVM 22)",
                    p.name,
                    v.as_deref().unwrap_or("nothing"),
                    p.version.unwrap_or("any version")
                );
            }
            let now = if missing.contains(&p.name) {
                ", installed now"
            } else {
                ""
            };
            Ok(format!("{} {} (apt{now})", p.name, v.unwrap_or_default()))
        })
        .collect()
}

/// `rustc -vV` of a toolchain (`None`: the default one).
fn rustc_verbose(toolchain: Option<&str>) -> Option<String> {
    let mut c = sh::cmd("rustc");
    if let Some(t) = toolchain {
        c.arg(format!("+{t}"));
    }
    probe(c.arg("-vV"))
}

fn field<'a>(verbose: &'a str, name: &str) -> Option<&'a str> {
    verbose
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

fn installed_components(toolchain: Option<&str>) -> String {
    let mut c = sh::cmd("rustup");
    c.args(["component", "list", "--installed"]);
    if let Some(t) = toolchain {
        c.args(["--toolchain", t]);
    }
    probe(&mut c).unwrap_or_default()
}

fn rust_toolchains() -> Result<Vec<String>> {
    let mut lines = Vec::new();

    let installed = installed_components(None);
    let missing: Vec<&str> = ["rustfmt", "clippy"]
        .into_iter()
        .filter(|c| !installed.lines().any(|l| l.starts_with(c)))
        .collect();
    if !missing.is_empty() {
        step(&format!(
            "setup: rustup component add {}",
            missing.join(" ")
        ));
        sh::run(sh::cmd("rustup").args(["component", "add"]).args(&missing))?;
    }
    let stable = rustc_verbose(None).context("rustc does not run; install Rust with rustup")?;
    lines.push(format!(
        "rustc {} with rustfmt, clippy (rustup)",
        field(&stable, "release").unwrap_or("?")
    ));

    let nightly_ok = |v: &Option<String>| {
        v.as_deref()
            .and_then(|v| field(v, "LLVM version"))
            .is_some_and(|l| l.split('.').next() == Some(EBPF_LLVM_MAJOR))
            && installed_components(Some(EBPF_TOOLCHAIN))
                .lines()
                .any(|l| l.starts_with("rust-src"))
    };
    let mut nightly = rustc_verbose(Some(EBPF_TOOLCHAIN));
    if !nightly_ok(&nightly) {
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
        ]))?;
        nightly = rustc_verbose(Some(EBPF_TOOLCHAIN));
        if !nightly_ok(&nightly) {
            bail!(
                "{EBPF_TOOLCHAIN} does not report LLVM {EBPF_LLVM_MAJOR} with rust-src after \
                 rustup installed it; bpf-linker is built against LLVM {EBPF_LLVM_MAJOR} \
                 ({LLVM_PREFIX}), so the eBPF build needs a nightly with that LLVM"
            );
        }
    }
    let nightly = nightly.unwrap_or_default();
    lines.push(format!(
        "{EBPF_TOOLCHAIN}: rustc {}, LLVM {}, with rust-src (rustup)",
        field(&nightly, "release").unwrap_or("?"),
        field(&nightly, "LLVM version").unwrap_or("?")
    ));
    Ok(lines)
}
