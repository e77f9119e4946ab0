//! `cargo xtask bench`: what this project costs, measured beside its
//! baselines in the same run on the same machine. Medians of several runs
//! with min and max; Markdown tables on stdout and JSON in
//! `target/bench/latest.json` (a partial run updates only its parts there).
//!
//! - `packets`: per-packet cost with BPF_PROG_TEST_RUN (see `packets.rs`).
//! - `sync`: parse, full load, 1% change and no-change sync of a
//!   1,000,000-prefix feed, agent peak RSS, and `ipset restore` of the same
//!   list (see `sync.rs`).
//!
//! - `footprint`: CPU and memory of `run` holding 1,000,000 entries, idle
//!   and syncing (see `footprint.rs`).
//! - `updates`: what a running agent with 1,000,000 entries pays for a
//!   no-change poll, a 1% change, a CrowdSec delta of 1,000 decisions, a
//!   `/metrics` scrape, and how soon a new CrowdSec ban blocks (see
//!   `updates.rs`).
//! - `hooks`: per-packet cost of the TC classifiers beside the XDP
//!   program's, and of a refused `connect()` beside an allowed one (see
//!   `hooks.rs`).
//! - `live`: drop rate over a veth pair with a live-frames sender, beside
//!   iptables, ipset, nftables and xdp-filter (see `live.rs`).
//!
//! `bench [PARTS [FILTER]]` runs the comma-separated parts (for `live`,
//! only the cases whose "filter list entries" contains FILTER); no argument
//! runs all.

mod cleanup;
mod footprint;
mod hooks;
mod live;
mod packets;
mod scripts;
mod sync;
mod updates;

use anyhow::Context as _;
use blocklist_tests::require_root;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("__connect") {
        return hooks::connect_child(&args[2..]);
    }
    if args.get(1).map(String::as_str) == Some(sync::SPAWN_MEASURED) {
        return sync::spawn_measured(&args[2..]);
    }
    require_root();
    cleanup::on_interrupt()?;
    let which = std::env::args().nth(1).unwrap_or_default();
    let wants = |part: &str| which.is_empty() || which.split(',').any(|w| w == part);
    if wants("live") {
        live::preflight().context("bench live cannot run here")?;
    }
    let mut out = serde_json::Map::new();
    if wants("packets") {
        out.insert("packets".into(), packets::run()?);
    }
    if wants("sync") {
        out.insert("sync".into(), sync::run()?);
    }
    if wants("hooks") {
        out.insert("hooks".into(), hooks::run()?);
    }
    if wants("footprint") {
        out.insert("footprint".into(), footprint::run()?);
    }
    if wants("updates") {
        out.insert("updates".into(), updates::run()?);
    }
    if wants("live") {
        out.insert(
            "live".into(),
            live::run(std::env::args().nth(2).as_deref())?,
        );
    }
    out.insert(
        "cpu".into(),
        std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|c| {
                c.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split(':').nth(1))
                    .map(|s| s.trim().to_owned())
            })
            .into(),
    );
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&dir)?;
    // Parts run now replace their own keys; the others keep the figures of
    // the run that last measured them.
    let path = dir.join("latest.json");
    let mut all: serde_json::Map<String, serde_json::Value> = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    all.extend(out);
    std::fs::write(&path, serde_json::to_vec_pretty(&all)?)?;
    Ok(())
}
