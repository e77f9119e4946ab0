//! Fuzzing the feed parsers, the config parser and prefix parsing with
//! cargo-fuzz (libFuzzer), time-bounded, with the corpus kept in the repo
//! under `fuzz/corpus/<target>`.
//!
//! The fuzz crate (`fuzz/`) is its own workspace and needs nightly; it uses
//! the pinned nightly of the eBPF build and cargo-fuzz from
//! `target/tools/`, both installed by `setup`.

use anyhow::{Context as _, Result, bail};

use crate::{
    setup::EBPF_TOOLCHAIN,
    sh::{self, step},
};

/// Every fuzz target in `fuzz/fuzz_targets/`, in the order they are run.
pub const TARGETS: &[&str] = &[
    "plain",
    "spamhaus_text",
    "spamhaus_json",
    "firehol",
    "csv",
    "json",
    "scored",
    "threatfox",
    "dshield",
    "misp",
    "stix",
    "crowdsec",
    "detect_and_parse",
    "config",
    "prefix",
];

/// `cargo +<pinned nightly> ...`, run from the workspace root. Goes through
/// rustup's `cargo` proxy (not `$CARGO`, which is the stable cargo running
/// xtask) and drops the variables that would pin the child to that stable
/// toolchain.
fn nightly_cargo() -> std::process::Command {
    let mut c = sh::cmd("cargo");
    c.arg(format!("+{EBPF_TOOLCHAIN}"));
    for var in ["CARGO", "RUSTC", "RUSTDOC", "RUSTUP_TOOLCHAIN"] {
        c.env_remove(var);
    }
    c
}

/// Runs every target in [`TARGETS`] for `seconds_per_target` seconds, one
/// after the other, starting from its corpus in `fuzz/corpus/<target>`.
/// New inputs libFuzzer finds go to `fuzz/target/corpus/<target>` (kept
/// between runs, ignored by git) so that the checked-in corpus stays small;
/// `fuzz/README.md` says how to fold good ones back. Fails, naming the
/// targets, when any of them crashes; libFuzzer leaves the crashing input
/// in `fuzz/artifacts/<target>/`.
pub fn run(seconds_per_target: u64) -> Result<()> {
    if seconds_per_target == 0 {
        bail!("the fuzzing time per target must be at least 1 second");
    }
    let fuzz_dir = crate::root().join("fuzz");

    // Build everything first so that compiling does not eat into the time
    // budget of the first target.
    step(&format!(
        "fuzz: building {} targets with {EBPF_TOOLCHAIN}",
        TARGETS.len()
    ));
    sh::run(
        nightly_cargo()
            .arg("fuzz")
            .arg("build")
            .arg("--fuzz-dir")
            .arg(&fuzz_dir),
    )
    .context("building the fuzz targets failed")?;

    let mut failed = Vec::new();
    for target in TARGETS {
        step(&format!("fuzz: {target} for {seconds_per_target}s"));
        // libFuzzer writes new inputs to the first corpus directory and
        // only reads the others.
        let scratch = fuzz_dir.join("target").join("corpus").join(target);
        let corpus = fuzz_dir.join("corpus").join(target);
        for dir in [&scratch, &corpus] {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating the corpus directory {}", dir.display()))?;
        }
        let result = sh::run(
            nightly_cargo()
                .args(["fuzz", "run", target])
                .arg("--fuzz-dir")
                .arg(&fuzz_dir)
                .arg(&scratch)
                .arg(&corpus)
                .arg("--")
                .arg(format!("-max_total_time={seconds_per_target}"))
                .args(["-rss_limit_mb=2048", "-max_len=65536"]),
        );
        if let Err(e) = result {
            eprintln!("fuzz target `{target}` failed: {e:#}");
            failed.push(*target);
        }
    }
    if !failed.is_empty() {
        let artifacts = fuzz_dir.join("artifacts");
        bail!(
            "fuzz target(s) {} found a crash (or failed to run); the crashing inputs are in \
             {}/<target>/; reproduce one with `cargo +{EBPF_TOOLCHAIN} fuzz run <target> \
             <input> --fuzz-dir fuzz` from the workspace root",
            failed
                .iter()
                .map(|t| format!("`{t}`"))
                .collect::<Vec<_>>()
                .join(", "),
            artifacts.display(),
        );
    }
    step(&format!(
        "fuzz: all {} targets ran {seconds_per_target}s without a crash",
        TARGETS.len()
    ));
    Ok(())
}
