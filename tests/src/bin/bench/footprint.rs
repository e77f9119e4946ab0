//! The agent's own footprint: `blocklist-agent run` holding 1,000,000
//! entries, attached to a veth in a namespace of its own. CPU time and
//! resident memory during the first (full) sync, over an idle stretch,
//! and during a 1% change (triggered with SIGHUP, which reloads and syncs).
//! The peak of each phase is the kernel's own high-water mark (`VmHWM`,
//! reset at the start of the phase through `/proc/PID/clear_refs`), so no
//! spike between two samples is missed; 5 runs, medians.

use std::{
    io::Read as _,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use blocklist_tests::{agent::Agent, bpffs::Bpffs, lab::Netns};
use rand::{SeedableRng, rngs::StdRng, seq::SliceRandom as _};

use super::{packets::prefixes, scripts};

const N: usize = 1_000_000;
const CHANGE: usize = N / 100;
const IDLE: Duration = Duration::from_secs(10);
const SYNC_TIMEOUT: Duration = Duration::from_secs(180);
const RUNS: usize = 5;

/// Resets `pid`'s peak resident size, so `VmHWM` measures from now.
fn reset_peak(pid: u32) -> anyhow::Result<()> {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
        .with_context(|| format!("resetting the peak RSS of {pid}"))
}

/// `pid`'s peak resident KiB since the last reset.
fn peak_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .context("no VmHWM in /proc/PID/status")
}

/// CPU seconds (user + system) and resident KiB of `pid`.
pub(super) fn sample(pid: u32) -> anyhow::Result<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .context("odd /proc/PID/stat")?
        .split_whitespace()
        .collect();
    // After the command name: state is field 3, utime 14, stime 15.
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0);
    Ok((ticks as f64 / hz, rss))
}

/// What one phase cost.
#[derive(serde::Serialize)]
struct Phase {
    phase: &'static str,
    wall_s: f64,
    cpu_s: f64,
    peak_rss_mib: f64,
    end_rss_mib: f64,
}

/// Samples `pid` until `done` holds (or the timeout passes).
fn watch(
    pid: u32,
    phase: &'static str,
    timeout: Duration,
    mut done: impl FnMut() -> bool,
) -> anyhow::Result<Phase> {
    let t = Instant::now();
    reset_peak(pid)?;
    let (cpu0, _) = sample(pid)?;
    loop {
        std::thread::sleep(Duration::from_millis(50));
        if done() {
            break;
        }
        if t.elapsed() > timeout {
            bail!("{phase}: not done after {timeout:?}");
        }
    }
    let (cpu1, rss) = sample(pid)?;
    let peak = peak_kib(pid)?;
    Ok(Phase {
        phase,
        wall_s: t.elapsed().as_secs_f64(),
        cpu_s: cpu1 - cpu0,
        peak_rss_mib: peak as f64 / 1024.0,
        end_rss_mib: rss as f64 / 1024.0,
    })
}

/// Runs the footprint benchmark; prints its table and returns its JSON.
pub fn run() -> anyhow::Result<serde_json::Value> {
    let mut rng = StdRng::seed_from_u64(0xf00d);
    // Shuffled, so the 1% change is spread over the address space.
    let mut set = prefixes(N + CHANGE, &mut rng);
    set.shuffle(&mut rng);
    let mut runs = Vec::new();
    for r in 0..RUNS {
        eprintln!("footprint bench: run {}/{RUNS}", r + 1);
        runs.push(one_run(&set)?);
    }
    let median = |i: usize, f: fn(&Phase) -> f64| {
        super::packets::stats(runs.iter().map(|r| f(&r[i])).collect()).0
    };
    println!("\n### Agent footprint, `run` holding {N} IPv4 prefixes (median of {RUNS} runs)\n");
    println!("| phase | wall s | CPU s | CPU % | peak RSS MiB (VmHWM) | RSS after MiB |");
    println!("|---|---:|---:|---:|---:|---:|");
    let mut phases = Vec::new();
    for (i, p) in runs[0].iter().enumerate() {
        let (wall, cpu) = (median(i, |p| p.wall_s), median(i, |p| p.cpu_s));
        let (peak, end) = (median(i, |p| p.peak_rss_mib), median(i, |p| p.end_rss_mib));
        println!(
            "| {} | {wall:.2} | {cpu:.2} | {:.1} | {peak:.1} | {end:.1} |",
            p.phase,
            100.0 * cpu / wall,
        );
        phases.push(serde_json::json!({
            "phase": p.phase, "wall_s": wall, "cpu_s": cpu,
            "peak_rss_mib": peak, "end_rss_mib": end,
        }));
    }
    Ok(serde_json::json!({ "prefixes": N, "runs": RUNS, "phases": phases }))
}

/// One run: a fresh namespace, bpffs and agent.
fn one_run(set: &[blocklist_agent::prefix::Prefix]) -> anyhow::Result<Vec<Phase>> {
    let ns = Netns::new("xbbf");
    ns.ip(&[
        "link", "add", "xblf0", "type", "veth", "peer", "name", "xblf1",
    ]);
    ns.ip(&["link", "set", "xblf0", "up"]);
    ns.ip(&["link", "set", "xblf1", "up"]);
    let fs = Bpffs::new();
    let dir = tempfile::tempdir()?;
    let feed = dir.path().join("feed.txt");
    std::fs::write(&feed, scripts::feed(&set[..N]))?;
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "interfaces = [\"xblf0\"]\nsync_interval = \"1h\"\n[[feed]]\nname = \"bench\"\nallow_reserved = true\nurl = \"{}\"\n\
             [metrics]\nlisten = \"off\"\n[events]\noutput = \"off\"\n",
            feed.display()
        ),
    )?;
    let log = dir.path().join("agent.log");
    // "sync done" is logged at info.
    let agent = Agent::new(ns.name(), fs.pin_dir(), dir.path().join("state"))
        .with_config(config)
        .with_env("RUST_LOG", "info");
    eprintln!("footprint bench: `run` with {N} prefixes");
    let mut child = agent
        .command(&["run"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .context("starting blocklist-agent run")?;
    // `ip netns exec` execs the agent, so the child's pid is the agent's.
    let pid = child.id();
    let syncs_done = || {
        let mut s = String::new();
        let _ = std::fs::File::open(&log).and_then(|mut f| f.read_to_string(&mut s));
        s.matches("sync done").count()
    };
    let result = (|| -> anyhow::Result<Vec<Phase>> {
        let full = watch(pid, "start + full sync of 1,000,000", SYNC_TIMEOUT, || {
            syncs_done() >= 1
        })?;
        let started = Instant::now();
        let idle = watch(pid, "idle, 10 s", IDLE * 2, || started.elapsed() >= IDLE)?;
        let mut changed = set[CHANGE..N].to_vec();
        changed.extend_from_slice(&set[N..]);
        std::fs::write(&feed, scripts::feed(&changed))?;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGHUP,
        )?;
        let change = watch(pid, "1% change sync (SIGHUP)", SYNC_TIMEOUT, || {
            syncs_done() >= 2
        })?;
        Ok(vec![full, idle, change])
    })();
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = child.wait();
    result.with_context(|| {
        format!(
            "agent log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    })
}
