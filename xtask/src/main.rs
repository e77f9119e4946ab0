//! `cargo xtask`: setup, build, demo, test and bench for xdp-blocklist.
//!
//! Every command runs `setup` first, so the README's commands work on a
//! fresh Debian 12 machine. This crate deliberately depends on nothing of
//! the project: it must compile before the eBPF toolchain exists.

mod demo;
mod fuzz;
mod package;
mod setup;
mod sh;
mod tools;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "xdp-blocklist automation")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install missing prerequisites (idempotent).
    Setup,
    /// Build the agent (and the embedded XDP program) in release mode.
    Build,
    /// Run the agent with arguments, as built by `build`.
    Run {
        /// Arguments passed to blocklist-agent.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The main job on a built-in example, in throw-away namespaces.
    Demo,
    /// Fuzz every feed parser and the config parser (cargo-fuzz, nightly).
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
    /// Build the Debian package (binary, unit, example config, man page,
    /// completions) into target/debian.
    Package,
    /// Lints, unit tests, verdict tests and end-to-end tests (root).
    Test {
        /// Only tests whose name contains this.
        filter: Option<String>,
    },
    /// Per-packet cost, update cost, agent footprint and live drop rate,
    /// beside baselines.
    Bench {
        /// Comma-separated parts: `packets`, `sync`, `footprint`, `updates`, `live`;
        /// all when absent.
        part: Option<String>,
        /// With `live`: only the cases whose "filter list entries" contains
        /// this (e.g. "native mixed 100000").
        filter: Option<String>,
    },
}

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_owned()
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    setup::run()?;
    match cli.command {
        Cmd::Setup => Ok(()),
        Cmd::Build => build(),
        Cmd::Run { args } => {
            build()?;
            let bin = root().join("target/release/blocklist-agent");
            sh::run(sh::cmd(bin).args(args))
        }
        Cmd::Demo => {
            build()?;
            demo::run(&root().join("target/release/blocklist-agent"))
        }
        Cmd::Test { filter } => test(filter),
        Cmd::Package => package::run().map(|deb| println!("{}", deb.display())),
        Cmd::Fuzz { seconds } => fuzz::run(seconds),
        Cmd::Bench { part, filter } => {
            sh::require_root("benchmarks load XDP programs and create namespaces")?;
            sh::step("bench: building");
            sh::run(sh::cargo().args([
                "build",
                "--release",
                "-p",
                "blocklist-agent",
                "-p",
                "blocklist-tests",
                "--bins",
            ]))?;
            sh::run(
                sh::cmd(root().join("target/release/bench"))
                    .args(part)
                    .args(filter)
                    .env(
                        "BLOCKLIST_AGENT_BIN",
                        root().join("target/release/blocklist-agent"),
                    ),
            )
        }
    }
}

fn build() -> Result<()> {
    sh::step("build: cargo build --release -p blocklist-agent");
    sh::run(sh::cargo().args(["build", "--release", "-p", "blocklist-agent"]))
}

/// Suites run a second time in trie mode.
const TRIE_SUITES: [&str; 6] = ["kept", "table", "maps", "e2e", "reliability", "egress"];

/// The variable `tests/src/ingress.rs` reads to run the e2e suite on TC
/// ingress (xtask does not depend on the test harness).
const INGRESS_ENV: &str = "XDPBL_INGRESS";

/// The variable that makes the agent attach its TC classifiers under
/// clsact instead of TCX (`blocklist_agent::datapath::tc::TC_ENV`).
const TC_ENV: &str = "XDP_BLOCKLIST_TC";

/// Seconds each fuzz target runs in `cargo xtask test`.
const FUZZ_SECONDS_IN_TEST: u64 = 30;

fn test(filter: Option<String>) -> Result<()> {
    sh::require_root(
        "the verdict and end-to-end tests load XDP programs and create network namespaces",
    )?;
    sh::step("test: cargo fmt --check");
    sh::run(sh::cargo().args(["fmt", "--all", "--", "--check"]))?;
    sh::step("test: cargo clippy -D warnings");
    sh::run(sh::cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    sh::step("test: the ebpf-debug-log build compiles");
    sh::run(sh::cargo().args([
        "check",
        "-p",
        "blocklist-agent",
        "--features",
        "ebpf-debug-log",
    ]))?;
    // The end-to-end tests drive the real binary.
    sh::step("test: building the agent binary");
    sh::run(sh::cargo().args(["build", "-p", "blocklist-agent"]))?;
    sh::step("test: building the Debian package (its install is tested below)");
    let deb = package::run()?;
    let filter: Vec<String> = filter.into_iter().collect();
    let mut totals = sh::Totals::default();
    sh::step("test: unit tests");
    sh::run_tests(
        sh::cargo()
            .args(["test", "--workspace", "--exclude", "blocklist-tests", "--"])
            .args(&filter),
        &mut totals,
    )?;
    sh::step("test: verdict and end-to-end tests (real kernel, network namespaces)");
    // One at a time: traffic tests share two CPUs and their counts must be exact.
    sh::run_tests(
        sh::cargo()
            .args(["test", "-p", "blocklist-tests", "--", "--test-threads=1"])
            .args(&filter)
            .env("XDPBL_DEB", &deb),
        &mut totals,
    )?;
    // The datapath suites again with the tries deciding instead of the
    // compiled table: the fallback an operator can switch to must keep
    // every promise too (verdict.rs runs both lookups itself).
    sh::step("test: the datapath suites again with `[datapath] lookup = \"trie\"`");
    for suite in TRIE_SUITES {
        sh::run_tests(
            sh::cargo()
                .args(["test", "-p", "blocklist-tests", "--test", suite, "--"])
                .arg("--test-threads=1")
                .args(&filter)
                .env("XDP_BLOCKLIST_LOOKUP", "trie")
                .env("XDPBL_DEB", &deb),
            &mut totals,
        )?;
    }
    // The end-to-end suite once more with the decision as a TC ingress
    // classifier, beside a foreign XDP program that holds each interface:
    // through TCX links, then as clsact filters (the fallback for kernels
    // without TCX, forced here); the egress suite with clsact too.
    for (step, suite, env) in [
        (
            "test: the end-to-end suite again on TC ingress (`attach --mode tc`, TCX)",
            "e2e",
            &[(INGRESS_ENV, "tc")][..],
        ),
        (
            "test: the end-to-end suite again on TC ingress under clsact",
            "e2e",
            &[(INGRESS_ENV, "tc"), (TC_ENV, "clsact")][..],
        ),
        (
            "test: the egress suite again with its TC classifier under clsact",
            "egress",
            &[(TC_ENV, "clsact")][..],
        ),
    ] {
        sh::step(step);
        sh::run_tests(
            sh::cargo()
                .args(["test", "-p", "blocklist-tests", "--test", suite, "--"])
                .arg("--test-threads=1")
                .args(&filter)
                .envs(env.iter().copied())
                .env("XDPBL_DEB", &deb),
            &mut totals,
        )?;
    }
    // Bounded fuzzing of every parser (the corpus lives in fuzz/corpus).
    sh::step("test: fuzzing every parser for a bounded time");
    fuzz::run(FUZZ_SECONDS_IN_TEST)?;
    if totals.passed == 0 {
        anyhow::bail!("no test ran (filter {filter:?})");
    }
    // A skipped test is a promise nobody checked: the suite has none.
    if totals.ignored > 0 {
        anyhow::bail!(
            "{} test(s) were ignored; every test must run (remove the #[ignore] or the test)",
            totals.ignored
        );
    }
    sh::step("test: summary");
    println!(
        "{} passed, {} failed, {} skipped",
        totals.passed, totals.failed, totals.ignored
    );
    Ok(())
}
