//! Update cost for a 1,000,000-prefix feed: parse and normalise, a full
//! first sync, a 1% change, a no-change sync, and the agent's peak RSS;
//! `ipset restore` of the same list in a throw-away namespace is the
//! baseline, measured in the same run.

use std::{fmt::Write as _, path::Path, process::Command, time::Instant};

use anyhow::{Context as _, bail};
use blocklist_agent::feed::{self, Format, FormatOptions};
use blocklist_tests::{agent, bpffs::Bpffs, lab::Netns};
use rand::{SeedableRng, rngs::StdRng};

use super::packets::{RUNS, prefixes, stats};

const N: usize = 1_000_000;
const CHANGE: usize = N / 100;
const SYNC_RUNS: usize = 3;

fn sync(pin: &Path, state: &Path, feed: &Path) -> anyhow::Result<(f64, serde_json::Value)> {
    let t = Instant::now();
    let out = Command::new(agent::binary())
        .arg("--pin-dir")
        .arg(pin)
        .arg("--state-dir")
        .arg(state)
        .args(["sync", "--once", "--json", "--feed"])
        .arg(feed)
        .output()
        .context("running the agent")?;
    let secs = t.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!("sync failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok((secs, serde_json::from_slice(&out.stdout)?))
}

fn children_max_rss_kib() -> i64 {
    // SAFETY: getrusage writes into the zeroed struct we pass.
    unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru);
        ru.ru_maxrss
    }
}

/// Kernel memory the benchmark can attribute to map or set entries:
/// Slab + Percpu + VmallocUsed from /proc/meminfo, in KiB. (memlock only
/// counts a fraction of what an LPM entry really takes.)
fn kernel_kib() -> i64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    text.lines()
        .filter(|l| {
            l.starts_with("Slab:") || l.starts_with("Percpu:") || l.starts_with("VmallocUsed:")
        })
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<i64>().ok())
        .sum()
}

/// Runs a script through `tool` (`nft -f` or `iptables-restore`) in `ns`.
fn restore(ns: &Netns, tool: &[&str], script: &Path) -> anyhow::Result<f64> {
    let t = Instant::now();
    let out = Command::new("ip")
        .args(["netns", "exec", ns.name()])
        .args(tool)
        .arg(script)
        .output()
        .with_context(|| format!("running {tool:?}"))?;
    let secs = t.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!("{tool:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(secs)
}

/// `ipset restore`, leaving the set in place (the caller measures memory
/// and destroys it).
fn ipset_restore_keep(ns: &Netns, script: &Path) -> anyhow::Result<f64> {
    restore(ns, &["ipset", "restore", "-file"], script)
}

pub fn run() -> anyhow::Result<serde_json::Value> {
    let mut rng = StdRng::seed_from_u64(0xfeed);
    let set = prefixes(N + CHANGE, &mut rng);
    let (base, extra) = set.split_at(N);
    let dir = tempfile::tempdir()?;
    let feed_path = dir.path().join("million.txt");
    let render = |list: &[blocklist_agent::prefix::Prefix]| {
        let mut s = String::with_capacity(list.len() * 18);
        for p in list {
            let _ = writeln!(s, "{p}");
        }
        s
    };
    let full = render(base);
    let mut changed_list: Vec<_> = base[CHANGE..].to_vec();
    changed_list.extend_from_slice(extra);
    let changed = render(&changed_list);

    eprintln!("sync bench: parsing {N} prefixes");
    let parse: Vec<f64> = (0..RUNS)
        .map(|_| {
            let t = Instant::now();
            let p = feed::parse(full.as_bytes(), &Format::Auto, &FormatOptions::default(), 0);
            let mut v: Vec<_> = p.entries.into_iter().map(|e| e.prefix).collect();
            v.sort();
            v.dedup();
            assert_eq!(v.len(), N);
            t.elapsed().as_secs_f64()
        })
        .collect();

    let (mut first, mut nochange, mut onepct) = (Vec::new(), Vec::new(), Vec::new());
    let (mut first_apply, mut onepct_apply) = (Vec::new(), Vec::new());
    let mut agent_bytes_per_entry = Vec::new();
    for run in 0..SYNC_RUNS {
        eprintln!("sync bench: agent run {}/{SYNC_RUNS}", run + 1);
        let fs = Bpffs::new();
        let state = tempfile::tempdir()?;
        std::fs::write(&feed_path, &full)?;
        // The previous run's maps are freed after an RCU grace period and
        // in a work queue: let that finish so it does not offset the delta.
        std::thread::sleep(std::time::Duration::from_secs(3));
        let before = kernel_kib();
        let (s, r) = sync(&fs.pin_dir(), state.path(), &feed_path)?;
        agent_bytes_per_entry.push((kernel_kib() - before) as f64 * 1024.0 / N as f64);
        assert_eq!(r["v4"]["added"], N as u64, "{r}");
        first.push(s);
        first_apply.push(r["apply_seconds"].as_f64().unwrap_or(0.0));
        let (s, r) = sync(&fs.pin_dir(), state.path(), &feed_path)?;
        assert_eq!(r["v4"]["added"], 0, "{r}");
        assert_eq!(
            r["apply_seconds"], 0.0,
            "no-change sync writes nothing: {r}"
        );
        nochange.push(s);
        std::fs::write(&feed_path, &changed)?;
        let (s, r) = sync(&fs.pin_dir(), state.path(), &feed_path)?;
        assert_eq!(r["v4"]["added"], CHANGE as u64, "{r}");
        assert_eq!(r["v4"]["removed"], CHANGE as u64, "{r}");
        onepct.push(s);
        onepct_apply.push(r["apply_seconds"].as_f64().unwrap_or(0.0));
    }
    let rss_mib = children_max_rss_kib() as f64 / 1024.0;

    eprintln!("sync bench: ipset restore baseline");
    let ns = Netns::new("xbb");
    let script = dir.path().join("ipset.restore");
    let mut text =
        String::from("create bl hash:net family inet hashsize 1048576 maxelem 2000000\n");
    for p in base {
        let _ = writeln!(text, "add bl {p}");
    }
    std::fs::write(&script, text)?;
    let mut ipset_bytes_per_entry = Vec::new();
    let ipset: Vec<f64> = (0..SYNC_RUNS)
        .map(|_| {
            let before = kernel_kib();
            let t = ipset_restore_keep(&ns, &script)?;
            ipset_bytes_per_entry.push((kernel_kib() - before) as f64 * 1024.0 / N as f64);
            let _ = Command::new("ip")
                .args(["netns", "exec", ns.name(), "ipset", "destroy"])
                .output();
            Ok(t)
        })
        .collect::<anyhow::Result<_>>()?;

    // nftables: an interval set in a netdev table, 100,000 entries (the
    // same mixed list's first 100,000), loaded with `nft -f`.
    eprintln!("sync bench: nft -f baseline (100,000 entries)");
    let nft_script = dir.path().join("nft.conf");
    let mut text = String::from(
        "table netdev blbench {\n set bl {\n  type ipv4_addr\n  flags interval\n  auto-merge\n  elements = { ",
    );
    for (i, p) in base[..100_000].iter().enumerate() {
        if i > 0 {
            text.push_str(", ");
        }
        let _ = write!(text, "{p}");
    }
    text.push_str(" }\n }\n}\n");
    std::fs::write(&nft_script, text)?;
    let nft: Vec<f64> = (0..SYNC_RUNS)
        .map(|_| {
            let t = restore(&ns, &["nft", "-f"], &nft_script);
            let _ = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    ns.name(),
                    "nft",
                    "delete",
                    "table",
                    "netdev",
                    "blbench",
                ])
                .output();
            t
        })
        .collect::<anyhow::Result<_>>()?;
    // iptables: one rule per address (the classic cron job), 10,000 rules.
    eprintln!("sync bench: iptables-restore baseline (10,000 rules)");
    let ipt_script = dir.path().join("iptables.rules");
    let mut text = String::from("*raw\n:PREROUTING ACCEPT [0:0]\n");
    for p in base.iter().take(10_000) {
        let _ = writeln!(text, "-A PREROUTING -s {p} -j DROP");
    }
    text.push_str("COMMIT\n");
    std::fs::write(&ipt_script, text)?;
    let ipt: Vec<f64> = (0..SYNC_RUNS)
        .map(|_| restore(&ns, &["iptables-restore"], &ipt_script))
        .collect::<anyhow::Result<_>>()?;

    let rows = [
        ("parse + normalise 1,000,000 prefixes", stats(parse)),
        ("agent: full first sync (process, wall)", stats(first)),
        (
            "agent: full first sync, kernel writes only",
            stats(first_apply),
        ),
        ("agent: 1% change sync (process, wall)", stats(onepct)),
        (
            "agent: 1% change sync, kernel writes only",
            stats(onepct_apply),
        ),
        ("agent: no-change sync (process, wall)", stats(nochange)),
        (
            "baseline: ipset restore (hash:net), same list",
            stats(ipset),
        ),
        (
            "baseline: nft -f interval set, first 100,000 only",
            stats(nft),
        ),
        (
            "baseline: iptables-restore, 10,000 one-address rules",
            stats(ipt),
        ),
    ];
    println!("\n| update, {N} IPv4 prefixes | median s | min | max |");
    println!("|---|---:|---:|---:|");
    for (name, (m, lo, hi)) in &rows {
        println!("| {name} | {m:.3} | {lo:.3} | {hi:.3} |");
    }
    println!("\nagent peak RSS over these syncs: {rss_mib:.1} MiB");
    let (agent_mem, _, _) = stats(agent_bytes_per_entry);
    let (ipset_mem, _, _) = stats(ipset_bytes_per_entry);
    println!(
        "kernel memory per entry (Slab + Percpu + VmallocUsed delta, median): agent LPM trie {agent_mem:.0} B, ipset hash:net {ipset_mem:.0} B"
    );
    Ok(serde_json::json!({
        "prefixes": N,
        "rows": rows.iter().map(|(n, (m, lo, hi))| serde_json::json!({"case": n, "median_s": m, "min_s": lo, "max_s": hi})).collect::<Vec<_>>(),
        "agent_peak_rss_mib": rss_mib,
        "kernel_bytes_per_entry": {"agent": agent_mem, "ipset": ipset_mem},
    }))
}
