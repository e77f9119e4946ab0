//! `cargo xtask demo`: the main job on a built-in example.
//!
//! Two throw-away network namespaces joined by a veth pair: `edge` runs the
//! XDP program and the agent, `net` holds a clean address and addresses
//! listed by the bundled sample feeds. A local HTTP server in `edge` serves
//! three feeds (a plain list, Spamhaus DROP, a STIX bundle); `run` syncs
//! them in the background; the demo shows dropped and passing pings, `top`,
//! `/metrics`, a drop event, the edge itself failing to reach a listed
//! address (the TC egress classifier), then changes a feed (one address removed, one
//! added) and shows the next sync pick it up. Everything is removed again,
//! also when a step fails.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::sh::{self, step};

const EDGE: &str = "xdpbl-demo-edge";
const NET: &str = "xdpbl-demo-net";
const EDGE_IF: &str = "demo-edge";
const NET_IF: &str = "demo-net";
const EDGE_ADDR: &str = "10.200.0.1";
/// Listed by the plain sample feed (and removed by the update).
const BAD_ADDR: &str = "10.200.0.66";
/// Listed by the STIX bundle.
const C2_ADDR: &str = "10.200.0.67";
/// Added to the plain feed by the update.
const NEW_ADDR: &str = "10.200.0.68";
/// Not listed (a revoked STIX indicator names it: it must pass).
const GOOD_ADDR: &str = "10.200.0.20";
const RUN_DIR: &str = "/run/xdp-blocklist-demo";
const FEED_PORT: u16 = 18080;
const METRICS: &str = "127.0.0.1:19977";

/// Everything the demo creates, removed on drop.
struct Lab {
    dir: PathBuf,
    children: Vec<Child>,
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
        for a in [GOOD_ADDR, BAD_ADDR, C2_ADDR, NEW_ADDR] {
            ip(&["-n", NET, "addr", "add", &format!("{a}/24"), "dev", NET_IF])?;
        }
        for (ns, dev) in [(EDGE, EDGE_IF), (NET, NET_IF), (EDGE, "lo"), (NET, "lo")] {
            ip(&["-n", ns, "link", "set", dev, "up"])?;
        }
        let dir = PathBuf::from(RUN_DIR);
        // `ip netns exec` remounts /sys, so pins live on a bpffs of our own.
        let bpffs = dir.join("bpffs");
        fs::create_dir_all(&bpffs).with_context(|| format!("creating {}", bpffs.display()))?;
        sh::run(sh::cmd("mount").args(["-t", "bpf", "bpf"]).arg(&bpffs))?;
        fs::create_dir_all(dir.join("feeds"))?;
        Ok(Self {
            dir,
            children: Vec::new(),
        })
    }

    fn teardown() {
        let bin = Path::new(RUN_DIR).join("bin-path");
        if let Ok(b) = fs::read_to_string(&bin) {
            let _ = Command::new("ip")
                .args(["netns", "exec", EDGE, b.trim()])
                .args(["--pin-dir", &format!("{RUN_DIR}/bpffs/xdp-blocklist")])
                .args([
                    "--state-dir",
                    &format!("{RUN_DIR}/state"),
                    "detach",
                    "--iface",
                    EDGE_IF,
                ])
                .output();
        }
        let _ = Command::new("ip").args(["netns", "del", EDGE]).output();
        let _ = Command::new("ip").args(["netns", "del", NET]).output();
        let _ = Command::new("umount")
            .arg(Path::new(RUN_DIR).join("bpffs"))
            .output();
        let _ = fs::remove_dir_all(RUN_DIR);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        step("demo: cleaning up the agent, namespaces and pins");
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        Self::teardown();
    }
}

/// The agent in the edge namespace.
struct Agent<'a> {
    bin: &'a Path,
    lab: &'a Lab,
}

impl Agent<'_> {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = sh::cmd("ip");
        c.args(["netns", "exec", EDGE])
            .arg(self.bin)
            .arg("--pin-dir")
            .arg(self.lab.dir.join("bpffs/xdp-blocklist"))
            .arg("--state-dir")
            .arg(self.lab.dir.join("state"))
            .arg("--config")
            .arg(self.lab.dir.join("config.toml"))
            .args(args);
        c
    }

    fn show(&self, args: &[&str]) -> Result<()> {
        println!("$ blocklist-agent {}", args.join(" "));
        sh::run(&mut self.cmd(args))
    }

    fn hooked(&self, hook: &str) -> bool {
        self.cmd(&["status", "--json"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).contains(&format!("\"{hook}\"")))
            .unwrap_or(false)
    }

    fn blocked(&self, ip: &str) -> bool {
        self.cmd(&["check", ip, "--json"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).contains("\"blocked\": true"))
            .unwrap_or(false)
    }
}

/// Pings the edge from `src`; returns how many replies came back.
fn ping(src: &str, count: u32) -> Result<u32> {
    println!("$ ping -c {count} -I {src} {EDGE_ADDR}   (from the `net` namespace)");
    ping_in(NET, &["-I", src, EDGE_ADDR], count)
}

/// Pings `dst` from the edge itself (the host the agent protects).
fn ping_out(dst: &str, count: u32) -> Result<u32> {
    println!("$ ping -c {count} {dst}   (from the `edge` namespace)");
    ping_in(EDGE, &[dst], count)
}

fn ping_in(ns: &str, args: &[&str], count: u32) -> Result<u32> {
    let out = sh::cmd("ip")
        .args(["netns", "exec", ns, "ping", "-n", "-q", "-c"])
        .arg(count.to_string())
        .args(["-i", "0.2", "-W", "1"])
        .args(args)
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
    Ok(summary
        .split(',')
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0))
}

/// GETs a URL from inside the edge namespace (python3's urllib: no curl
/// needed on the machine).
fn http_get(url: &str) -> Result<String> {
    let out = sh::cmd("ip")
        .args(["netns", "exec", EDGE, "python3", "-c"])
        .arg("import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1]).read().decode())")
        .arg(url)
        .output()
        .context("running python3 for an HTTP GET")?;
    if !out.status.success() {
        bail!("GET {url} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn wait_for(what: &str, timeout: Duration, f: impl Fn() -> bool) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    bail!("timed out waiting for {what}")
}

fn plain_feed(with_new: bool) -> String {
    let sample = fs::read_to_string(crate::root().join("deploy/examples/sample-feed.txt"))
        .unwrap_or_default();
    if with_new {
        // The update: the attacker is delisted, a new one appears.
        let mut s: String = sample
            .lines()
            .filter(|l| !l.starts_with(BAD_ADDR))
            .map(|l| format!("{l}\n"))
            .collect();
        s.push_str(&format!("{NEW_ADDR}            # newly listed\n"));
        s
    } else {
        sample
    }
}

pub fn run(bin: &Path) -> Result<()> {
    sh::require_root("the demo creates network namespaces and loads an XDP program")?;
    step("demo: creating namespaces `edge` (agent, XDP) and `net` (clients) joined by a veth pair");
    let mut lab = Lab::create()?;
    fs::write(lab.dir.join("bin-path"), bin.to_string_lossy().as_bytes())?;

    step(
        "demo: serving three sample feeds over HTTP inside `edge` (plain, Spamhaus DROP, STIX 2.1)",
    );
    let feeds = lab.dir.join("feeds");
    fs::write(feeds.join("sample-feed.txt"), plain_feed(false))?;
    for f in ["spamhaus-drop.txt", "stix-bundle.json"] {
        fs::copy(crate::root().join("deploy/examples").join(f), feeds.join(f))?;
    }
    let server = sh::cmd("ip")
        .args([
            "netns",
            "exec",
            EDGE,
            "python3",
            "-m",
            "http.server",
            &FEED_PORT.to_string(),
        ])
        .args(["--bind", "127.0.0.1", "--directory"])
        .arg(&feeds)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting python3 -m http.server")?;
    lab.children.push(server);
    let base = format!("http://127.0.0.1:{FEED_PORT}");
    let config = format!(
        "interfaces = [\"{EDGE_IF}\"]\nsync_interval = \"2s\"\n\
         # The demo's attackers live in 10.0.0.0/8, a reserved (private)\n\
         # range: feeds install entries there only when they say so.\n\
         [[feed]]\nname = \"sample\"\nurl = \"{base}/sample-feed.txt\"\nallow_reserved = true\n\
         [[feed]]\nname = \"spamhaus-drop\"\nurl = \"{base}/spamhaus-drop.txt\"\nformat = \"spamhaus\"\n\
         [[feed]]\nname = \"stix\"\nurl = \"{base}/stix-bundle.json\"\nformat = \"stix\"\nallow_reserved = true\n\
         # The demo's host is a namespace; on a real host the default\n\
         # \"both\" also hooks connect()/sendmsg() on the cgroup2 root.\n\
         [egress]\nmode = \"tc\"\n\
         [metrics]\nlisten = \"{METRICS}\"\n[events]\noutput = \"{}\"\n",
        lab.dir.join("events.jsonl").display()
    );
    fs::write(lab.dir.join("config.toml"), &config)?;
    println!("{config}");

    step("demo: before the agent runs, every address reaches the edge");
    let before = ping(BAD_ADDR, 2)?;

    step("demo: starting `blocklist-agent run` in the background (attaches, syncs every 2 s)");
    let agent = Agent { bin, lab: &lab };
    let run = agent
        .cmd(&["run"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    lab.children.push(run);
    let agent = Agent { bin, lab: &lab };
    wait_for("the first sync", Duration::from_secs(30), || {
        agent.blocked(BAD_ADDR) && agent.blocked(C2_ADDR) && agent.hooked("tc_egress")
    })?;

    step(&format!(
        "demo: {BAD_ADDR} (plain feed) and {C2_ADDR} (STIX) are dropped at XDP"
    ));
    let bad = ping(BAD_ADDR, 3)?;
    let c2 = ping(C2_ADDR, 3)?;
    step(&format!(
        "demo: {GOOD_ADDR} is not listed (its STIX indicator is revoked): it passes"
    ));
    let good = ping(GOOD_ADDR, 3)?;
    step(&format!(
        "demo: the other direction: the edge itself cannot reach {C2_ADDR} (TC egress), but reaches {GOOD_ADDR}"
    ));
    let out_c2 = ping_out(C2_ADDR, 2)?;
    let out_good = ping_out(GOOD_ADDR, 2)?;

    step("demo: the busiest blocked addresses");
    agent.show(&["top"])?;
    step("demo: which feed and indicator block the C2 address");
    agent.show(&["check", C2_ADDR])?;
    step(&format!(
        "demo: Prometheus metrics at http://{METRICS}/metrics (excerpt)"
    ));
    let metrics = http_get(&format!("http://{METRICS}/metrics"))?;
    for line in metrics.lines().filter(|l| {
        l.starts_with("xdp_blocklist_packets_total{action=\"dropped\"")
            || l.starts_with("xdp_blocklist_feed_entries")
            || l.starts_with("xdp_blocklist_feed_blocked_packets_total")
            || (l.starts_with("xdp_blocklist_hook_packets_total") && l.contains("dropped"))
    }) {
        println!("  {line}");
    }
    step("demo: a drop event, as a SIEM receives it");
    let events = fs::read_to_string(lab.dir.join("events.jsonl")).unwrap_or_default();
    if let Some(first) = events.lines().next() {
        println!("  {first}");
    }

    step(&format!(
        "demo: the feed changes: {BAD_ADDR} delisted, {NEW_ADDR} added; the next sync applies only that"
    ));
    fs::write(feeds.join("sample-feed.txt"), plain_feed(true))?;
    wait_for("the update", Duration::from_secs(30), || {
        agent.blocked(NEW_ADDR) && !agent.blocked(BAD_ADDR)
    })?;
    let after_bad = ping(BAD_ADDR, 3)?;
    let after_new = ping(NEW_ADDR, 3)?;

    step("demo: status");
    agent.show(&["status"])?;

    if before == 0
        || bad != 0
        || c2 != 0
        || good == 0
        || out_c2 != 0
        || out_good == 0
        || after_bad == 0
        || after_new != 0
    {
        bail!(
            "the demo did not behave as expected: before {before} replies; listed {bad} and {c2} (want 0); \
             clean {good} (want > 0); from the edge, listed {out_c2} (want 0) and clean {out_good} (want > 0); \
             after the update, delisted {after_bad} (want > 0), newly listed {after_new} (want 0)"
        );
    }
    step(
        "demo: done; listed addresses were dropped, clean ones passed, and the update took effect",
    );
    Ok(())
}
