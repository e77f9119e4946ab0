//! `cargo xtask demo`: the main job on a built-in example.
//!
//! Two throw-away network namespaces joined by a veth pair: `edge` runs the
//! XDP program, `net` holds a clean address and one listed in the bundled
//! sample feed. The demo attaches, syncs the feed (twice: the second sync
//! writes nothing), shows a ping that is dropped and one that passes,
//! prints `status` and `check`, and removes everything again (also when a
//! step fails).

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::sh::{self, step};

const EDGE: &str = "xdpbl-demo-edge";
const NET: &str = "xdpbl-demo-net";
const EDGE_IF: &str = "demo-edge";
const NET_IF: &str = "demo-net";
const EDGE_ADDR: &str = "10.200.0.1";
const BAD_ADDR: &str = "10.200.0.66";
const GOOD_ADDR: &str = "10.200.0.20";
const RUN_DIR: &str = "/run/xdp-blocklist-demo";

/// Everything the demo creates, removed on drop.
struct Lab {
    bpffs: PathBuf,
}

impl Lab {
    fn create() -> Result<Self> {
        // A previous demo killed half-way may have left its namespaces.
        Self::teardown();
        let ip = |args: &[&str]| sh::run(sh::cmd("ip").args(args));
        ip(&["netns", "add", EDGE])?;
        ip(&["netns", "add", NET])?;
        ip(&[
            "link", "add", EDGE_IF, "netns", EDGE, "type", "veth", "peer", "name", NET_IF, "netns",
            NET,
        ])?;
        ip(&[
            "-n",
            EDGE,
            "addr",
            "add",
            &format!("{EDGE_ADDR}/24"),
            "dev",
            EDGE_IF,
        ])?;
        ip(&[
            "-n",
            NET,
            "addr",
            "add",
            &format!("{GOOD_ADDR}/24"),
            "dev",
            NET_IF,
        ])?;
        ip(&[
            "-n",
            NET,
            "addr",
            "add",
            &format!("{BAD_ADDR}/24"),
            "dev",
            NET_IF,
        ])?;
        for (ns, dev) in [(EDGE, EDGE_IF), (NET, NET_IF), (EDGE, "lo"), (NET, "lo")] {
            ip(&["-n", ns, "link", "set", dev, "up"])?;
        }
        // `ip netns exec` remounts /sys, so pins live on a bpffs of our own.
        let bpffs = PathBuf::from(RUN_DIR).join("bpffs");
        fs::create_dir_all(&bpffs).with_context(|| format!("creating {}", bpffs.display()))?;
        sh::run(sh::cmd("mount").args(["-t", "bpf", "bpf"]).arg(&bpffs))?;
        Ok(Self { bpffs })
    }

    fn teardown() {
        let _ = Command::new("ip").args(["netns", "del", EDGE]).output();
        let _ = Command::new("ip").args(["netns", "del", NET]).output();
        let bpffs = Path::new(RUN_DIR).join("bpffs");
        let _ = Command::new("umount").arg(&bpffs).output();
        let _ = fs::remove_dir_all(RUN_DIR);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        step("demo: cleaning up namespaces and pins");
        Self::teardown();
    }
}

fn agent(bin: &Path, lab: &Lab, args: &[&str]) -> Result<()> {
    println!("$ blocklist-agent {}", args.join(" "));
    sh::run(
        sh::cmd("ip")
            .args(["netns", "exec", EDGE])
            .arg(bin)
            .arg("--pin-dir")
            .arg(lab.bpffs.join("xdp-blocklist"))
            .arg("--state-dir")
            .arg(Path::new(RUN_DIR).join("state"))
            .args(args),
    )
}

/// Pings the edge from `src`; returns how many replies came back.
fn ping(src: &str, count: u32) -> Result<u32> {
    println!("$ ping -c {count} -I {src} {EDGE_ADDR}   (from the `net` namespace)");
    let out = sh::cmd("ip")
        .args([
            "netns",
            "exec",
            NET,
            "ping",
            "-n",
            "-q",
            "-c",
            &count.to_string(),
            "-i",
            "0.2",
            "-W",
            "1",
            "-I",
            src,
            EDGE_ADDR,
        ])
        .output()
        .context("running ping")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let summary = text
        .lines()
        .find(|l| l.contains("transmitted"))
        .unwrap_or("")
        .trim()
        .to_owned();
    println!("  {summary}");
    let received = summary
        .split(',')
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    Ok(received)
}

pub fn run(bin: &Path) -> Result<()> {
    sh::require_root("the demo creates network namespaces and loads an XDP program")?;
    step("demo: creating namespaces `edge` and `net` joined by a veth pair");
    let lab = Lab::create()?;

    step("demo: before blocking, both addresses reach the edge");
    let before = ping(BAD_ADDR, 2)?;

    step("demo: attaching the XDP program to the edge's interface");
    agent(bin, &lab, &["attach", "--iface", EDGE_IF])?;

    let feed = crate::root().join("deploy/examples/sample-feed.txt");
    step(&format!("demo: syncing the sample feed {}", feed.display()));
    let feed_arg = feed.to_string_lossy().into_owned();
    agent(bin, &lab, &["sync", "--once", "--feed", &feed_arg])?;
    step("demo: a second sync changes nothing (only differences touch the kernel)");
    agent(bin, &lab, &["sync", "--once", "--feed", &feed_arg])?;

    step(&format!(
        "demo: {BAD_ADDR} is listed: its pings are dropped at XDP"
    ));
    let bad = ping(BAD_ADDR, 3)?;
    step(&format!("demo: {GOOD_ADDR} is not listed: its pings pass"));
    let good = ping(GOOD_ADDR, 3)?;

    step("demo: status");
    agent(bin, &lab, &["status"])?;
    step(&format!("demo: check {BAD_ADDR}"));
    agent(bin, &lab, &["check", BAD_ADDR])?;

    if before == 0 || bad != 0 || good == 0 {
        bail!(
            "the demo did not behave as expected: before blocking {before} replies, \
             listed address {bad} replies (want 0), clean address {good} replies (want > 0)"
        );
    }
    step("demo: done; the listed address was dropped, the clean one passed");
    Ok(())
}
