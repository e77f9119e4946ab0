//! Update cost for 100,000- and 1,000,000-prefix feeds: parse and
//! normalise, a full first sync, a 1% change, a no-change sync, and the
//! agent's peak RSS; the baselines load the same list in a throw-away
//! namespace, measured in the same run: `ipset restore` into a new set and
//! `ipset swap` (how a cron job replaces a live set), `nft -f` of an
//! interval set, and `iptables-restore` of one rule per entry. The
//! baselines have no incremental path: any change reloads the list.

use std::{path::Path, process::Command, time::Instant};

use anyhow::{Context as _, bail};
use blocklist_agent::{
    feed::{self, Format, FormatOptions},
    prefix::Prefix,
};
use blocklist_tests::{agent, bpffs::Bpffs, lab::Netns};
use rand::{SeedableRng, rngs::StdRng};

use super::{
    packets::{RUNS, prefixes, stats},
    scripts,
};

const SIZES: [usize; 2] = [100_000, 1_000_000];
const SYNC_RUNS: usize = 5;
/// A baseline that takes longer than this is reported as not finished.
const BASELINE_TIMEOUT_S: u64 = 300;

/// One `sync --once`: wall seconds, its JSON report, and its peak RSS in
/// KiB, from `wait4` in a small spawner process ([`spawn_measured`]): a
/// child of this process would report this process's own high-water
/// mark when that is the larger (Linux records the old address space's
/// peak at `exec`), as it is after the `packets` part.
fn sync(pin: &Path, state: &Path, feed: &Path) -> anyhow::Result<(f64, serde_json::Value, i64)> {
    let t = Instant::now();
    let mut child = Command::new(std::env::current_exe()?)
        .arg(SPAWN_MEASURED)
        .arg(agent::binary())
        .arg("--pin-dir")
        .arg(pin)
        .arg("--state-dir")
        .arg(state)
        .args(["sync", "--once", "--json", "--feed"])
        .arg(feed)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("running the agent")?;
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    std::io::Read::read_to_end(&mut child.stdout.take().context("stdout")?, &mut stdout)?;
    std::io::Read::read_to_end(&mut child.stderr.take().context("stderr")?, &mut stderr)?;
    let status = child.wait()?;
    let secs = t.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&stderr);
    if !status.success() {
        bail!("sync failed: {stderr}");
    }
    let maxrss = stderr
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix(MAXRSS_LINE))
        .and_then(|v| v.trim().parse().ok())
        .context("the spawner reported no peak RSS")?;
    Ok((secs, serde_json::from_slice(&stdout)?, maxrss))
}

/// The bench binary's spawner mode: `bench __spawn_measured PROGRAM ARGS`.
pub const SPAWN_MEASURED: &str = "__spawn_measured";
/// The spawner's last line on stderr: the child's peak RSS in KiB.
const MAXRSS_LINE: &str = "maxrss_kib ";

/// Runs `args` (program first) with this process's standard streams,
/// waits for it with `wait4`, writes its peak RSS to stderr as the last
/// line and exits with its status. This process is small, so the child's
/// `ru_maxrss` is its own.
pub fn spawn_measured(args: &[String]) -> anyhow::Result<()> {
    let (program, rest) = args.split_first().context("no program to run")?;
    let child = Command::new(program).args(rest).spawn()?;
    let mut status = 0;
    // SAFETY: wait4 writes into the zeroed rusage and the status we pass;
    // the child is ours and not yet reaped.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        if libc::wait4(child.id() as i32, &mut status, 0, &mut ru) < 0 {
            bail!("wait4: {}", std::io::Error::last_os_error());
        }
        ru
    };
    eprintln!("{MAXRSS_LINE}{}", ru.ru_maxrss);
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        1
    };
    std::process::exit(code)
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
    let out = Command::new("timeout")
        .arg(BASELINE_TIMEOUT_S.to_string())
        .args(["ip", "netns", "exec", ns.name()])
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
    let mut all = Vec::new();
    for n in SIZES {
        all.push(one_size(n)?);
    }
    Ok(serde_json::Value::Array(all))
}

fn one_size(n: usize) -> anyhow::Result<serde_json::Value> {
    let change = n / 100;
    let mut rng = StdRng::seed_from_u64(0xfeed);
    let set = prefixes(n + change, &mut rng);
    // The change is spread over the list, as a feed's churn is (a sorted
    // list's first and last 1% would touch only the /16s at its ends):
    // every 101st prefix of the set is new in the changed list, and every
    // 100th of the others is gone from it.
    let (extra, base): (Vec<_>, Vec<_>) = set.iter().enumerate().partition(|(i, _)| i % 101 == 100);
    let base: Vec<Prefix> = base.into_iter().map(|(_, p)| *p).collect();
    assert_eq!((base.len(), extra.len()), (n, change));
    let dir = tempfile::tempdir()?;
    let feed_path = dir.path().join("feed.txt");
    let full = scripts::feed(&base);
    let mut changed_list: Vec<Prefix> = base
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 100 != 0)
        .map(|(_, p)| *p)
        .collect();
    changed_list.extend(extra.into_iter().map(|(_, p)| *p));
    let changed = scripts::feed(&changed_list);

    eprintln!("sync bench: parsing {n} prefixes");
    let parse: Vec<f64> = (0..RUNS)
        .map(|_| {
            let t = Instant::now();
            let p = feed::parse(full.as_bytes(), &Format::Auto, &FormatOptions::default(), 0);
            let mut v: Vec<_> = p.entries.into_iter().map(|e| e.prefix).collect();
            v.sort();
            v.dedup();
            assert_eq!(v.len(), n);
            t.elapsed().as_secs_f64()
        })
        .collect();

    let (mut first, mut nochange, mut onepct) = (Vec::new(), Vec::new(), Vec::new());
    let (mut first_apply, mut onepct_apply) = (Vec::new(), Vec::new());
    // The compiled table's share of the kernel writes: compile, write.
    let (mut first_table, mut onepct_table) = (Vec::new(), Vec::new());
    let table_of = |r: &serde_json::Value| {
        (
            r["table"]["compile_seconds"].as_f64().unwrap_or(0.0),
            r["table"]["write_seconds"].as_f64().unwrap_or(0.0),
        )
    };
    let mut agent_bytes_per_entry = Vec::new();
    let mut rss_kib = 0;
    for run in 0..SYNC_RUNS {
        eprintln!(
            "sync bench: {n} prefixes, agent run {}/{SYNC_RUNS}",
            run + 1
        );
        let fs = Bpffs::new();
        let state = tempfile::tempdir()?;
        std::fs::write(&feed_path, &full)?;
        // The previous run's maps are freed after an RCU grace period and
        // in a work queue: let that finish so it does not offset the delta.
        std::thread::sleep(std::time::Duration::from_secs(3));
        let before = kernel_kib();
        let (s, r, rss) = sync(&fs.pin_dir(), state.path(), &feed_path)?;
        rss_kib = rss_kib.max(rss);
        agent_bytes_per_entry.push((kernel_kib() - before) as f64 * 1024.0 / n as f64);
        assert_eq!(r["v4"]["added"], n as u64, "{r}");
        first.push(s);
        first_apply.push(r["apply_seconds"].as_f64().unwrap_or(0.0));
        first_table.push(table_of(&r));
        let (s, r, rss) = sync(&fs.pin_dir(), state.path(), &feed_path)?;
        rss_kib = rss_kib.max(rss);
        assert_eq!(r["v4"]["added"], 0, "{r}");
        assert_eq!(
            r["apply_seconds"], 0.0,
            "no-change sync writes nothing: {r}"
        );
        nochange.push(s);
        std::fs::write(&feed_path, &changed)?;
        let (s, r, rss) = sync(&fs.pin_dir(), state.path(), &feed_path)?;
        rss_kib = rss_kib.max(rss);
        assert_eq!(r["v4"]["added"], change as u64, "{r}");
        assert_eq!(r["v4"]["removed"], change as u64, "{r}");
        onepct.push(s);
        onepct_apply.push(r["apply_seconds"].as_f64().unwrap_or(0.0));
        onepct_table.push(table_of(&r));
    }
    let rss_mib = rss_kib as f64 / 1024.0;

    let ns = Netns::new("xbb");
    let in_ns = |args: &[&str]| {
        let _ = Command::new("ip")
            .args(["netns", "exec", ns.name()])
            .args(args)
            .output();
    };

    eprintln!("sync bench: {n} prefixes, ipset restore + swap baseline");
    let script = dir.path().join("ipset.restore");
    std::fs::write(
        &script,
        scripts::ipset("bl-new", &base, n.next_power_of_two()),
    )?;
    let mut ipset_bytes_per_entry = Vec::new();
    let ipset: Vec<f64> = (0..SYNC_RUNS)
        .map(|_| {
            in_ns(&["ipset", "create", "bl", "hash:net"]);
            let t = Instant::now();
            ipset_restore_keep(&ns, &script)?;
            in_ns(&["ipset", "swap", "bl-new", "bl"]);
            let t = t.elapsed().as_secs_f64();
            // ipset's own accounting ("Size in memory"): the meminfo delta
            // is lost in noise for sets allocated this way.
            let out = Command::new("ip")
                .args(["netns", "exec", ns.name(), "ipset", "list", "-t", "bl"])
                .output()?;
            let bytes = String::from_utf8_lossy(&out.stdout)
                .lines()
                .find_map(|l| l.strip_prefix("Size in memory:"))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .context("no \"Size in memory\" in `ipset list -t`")?;
            ipset_bytes_per_entry.push(bytes / n as f64);
            in_ns(&["ipset", "destroy", "bl-new"]);
            in_ns(&["ipset", "destroy", "bl"]);
            Ok(t)
        })
        .collect::<anyhow::Result<_>>()?;

    // nftables: an interval set in a netdev table, the whole list.
    eprintln!("sync bench: {n} prefixes, nft -f baseline");
    let nft_script = dir.path().join("nft.conf");
    std::fs::write(&nft_script, scripts::nft("blbench", &base, None))?;
    let nft: Vec<f64> = (0..SYNC_RUNS)
        .map(|_| {
            let t = restore(&ns, &["nft", "-f"], &nft_script);
            in_ns(&["nft", "delete", "table", "netdev", "blbench"]);
            t
        })
        .collect::<anyhow::Result<_>>()?;
    // iptables: one rule per entry (the classic cron job).
    eprintln!("sync bench: {n} prefixes, iptables-restore baseline");
    let ipt_script = dir.path().join("iptables.rules");
    std::fs::write(&ipt_script, scripts::iptables(&base))?;
    let ipt: Vec<f64> = (0..SYNC_RUNS)
        .map(|_| {
            let t = restore(&ns, &["iptables-restore"], &ipt_script);
            in_ns(&["iptables", "-t", "raw", "-F", "PREROUTING"]);
            t
        })
        .collect::<anyhow::Result<_>>()?;

    let rows = [
        ("parse + normalise", stats(parse)),
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
        (
            "agent: full first sync, table compile",
            stats(first_table.iter().map(|t| t.0).collect()),
        ),
        (
            "agent: full first sync, table write",
            stats(first_table.iter().map(|t| t.1).collect()),
        ),
        (
            "agent: 1% change sync, table compile",
            stats(onepct_table.iter().map(|t| t.0).collect()),
        ),
        (
            "agent: 1% change sync, table write",
            stats(onepct_table.iter().map(|t| t.1).collect()),
        ),
        ("agent: no-change sync (process, wall)", stats(nochange)),
        ("baseline: ipset restore + swap (hash:net)", stats(ipset)),
        ("baseline: nft -f interval set", stats(nft)),
        ("baseline: iptables-restore, one rule per entry", stats(ipt)),
    ];
    println!("\n| update, {n} IPv4 prefixes | median s | min | max |");
    println!("|---|---:|---:|---:|");
    for (name, (m, lo, hi)) in &rows {
        println!("| {name} | {m:.3} | {lo:.3} | {hi:.3} |");
    }
    println!("\nagent peak RSS over these syncs: {rss_mib:.1} MiB");
    let (agent_mem, _, _) = stats(agent_bytes_per_entry);
    let (ipset_mem, _, _) = stats(ipset_bytes_per_entry);
    println!(
        "kernel memory per entry (median): agent {agent_mem:.0} B (Slab + Percpu + VmallocUsed delta), ipset hash:net {ipset_mem:.0} B (its \"Size in memory\")"
    );
    Ok(serde_json::json!({
        "prefixes": n,
        "rows": rows.iter().map(|(n, (m, lo, hi))| serde_json::json!({"case": n, "median_s": m, "min_s": lo, "max_s": hi})).collect::<Vec<_>>(),
        "agent_peak_rss_mib": rss_mib,
        "kernel_bytes_per_entry": {"agent": agent_mem, "ipset": ipset_mem},
    }))
}
