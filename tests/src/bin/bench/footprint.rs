//! The agent's own footprint: `blocklist-agent run` holding 1,000,000
//! entries, attached to a veth in a namespace of its own. CPU time and
//! resident memory during the first (full) sync, over an idle stretch,
//! and during a 1% change (triggered with SIGHUP, which reloads and syncs).
//! Sampled from `/proc/PID/stat` and `/proc/PID/status` every 50 ms.

use std::{
    io::Read as _,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use blocklist_tests::{agent::Agent, bpffs::Bpffs, lab::Netns};
use rand::{SeedableRng, rngs::StdRng};

use super::{packets::prefixes, scripts};

const N: usize = 1_000_000;
const CHANGE: usize = N / 100;
const IDLE: Duration = Duration::from_secs(10);
const SYNC_TIMEOUT: Duration = Duration::from_secs(180);

/// CPU seconds (user + system) and resident KiB of `pid`.
fn sample(pid: u32) -> anyhow::Result<(f64, u64)> {
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
    let (cpu0, mut rss) = sample(pid)?;
    let mut peak = rss;
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let (_, r) = sample(pid)?;
        rss = r;
        peak = peak.max(r);
        if done() {
            break;
        }
        if t.elapsed() > timeout {
            bail!("{phase}: not done after {timeout:?}");
        }
    }
    let (cpu1, _) = sample(pid)?;
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
    let ns = Netns::new("xbbf");
    ns.ip(&[
        "link", "add", "xblf0", "type", "veth", "peer", "name", "xblf1",
    ]);
    ns.ip(&["link", "set", "xblf0", "up"]);
    ns.ip(&["link", "set", "xblf1", "up"]);
    let fs = Bpffs::new();
    let dir = tempfile::tempdir()?;
    let mut rng = StdRng::seed_from_u64(0xf00d);
    let set = prefixes(N + CHANGE, &mut rng);
    let feed = dir.path().join("feed.txt");
    std::fs::write(&feed, scripts::feed(&set[..N]))?;
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "interfaces = [\"xblf0\"]\nsync_interval = \"1h\"\n[[feed]]\nname = \"bench\"\nurl = \"{}\"\n\
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
    let phases = result.with_context(|| {
        format!(
            "agent log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    })?;
    println!("\n### Agent footprint, `run` holding {N} IPv4 prefixes\n");
    println!("| phase | wall s | CPU s | CPU % | peak RSS MiB | RSS after MiB |");
    println!("|---|---:|---:|---:|---:|---:|");
    for p in &phases {
        println!(
            "| {} | {:.2} | {:.2} | {:.1} | {:.1} | {:.1} |",
            p.phase,
            p.wall_s,
            p.cpu_s,
            100.0 * p.cpu_s / p.wall_s,
            p.peak_rss_mib,
            p.end_rss_mib
        );
    }
    Ok(serde_json::json!({ "prefixes": N, "phases": phases }))
}
