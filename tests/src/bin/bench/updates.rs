//! What updates cost a running agent with 1,000,000 entries installed:
//! `blocklist-agent run` polling a 1,000,000-prefix HTTP feed every 5 s
//! (with an ETag, so an unchanged feed costs a 304) and a real CrowdSec
//! Local API every 10 s (Debian's crowdsec, private, in the bench's
//! namespace). Measured, in one run:
//!
//! - idle: CPU over 60 s of no-change polls, and per no-change sync;
//! - a 1% change of the big feed (random prefixes out, random ones in):
//!   the sync's wall time beside the time to parse that body (the issue's
//!   target: parse + 0.3 s);
//! - a CrowdSec delta of 1,000 decisions (`cscli decisions import`, random
//!   addresses) and its deletion: the sync's wall time;
//! - a `/metrics` scrape;
//! - from `cscli decisions add` returning to `check` seeing the address
//!   blocked.
//!
//! Sync times come from `run`'s own log (`sync done`, `seconds`); CPU from
//! `/proc/PID/stat`.

use std::{
    io::Read as _,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use blocklist_agent::feed::{self, Format, FormatOptions};
use blocklist_tests::{
    agent::Agent,
    bpffs::Bpffs,
    crowdsec::Lapi,
    feed_server::{FeedServer, Reply},
    lab::Netns,
};
use rand::{SeedableRng, rngs::StdRng, seq::SliceRandom as _};

use super::{
    packets::{prefixes, singles, stats},
    scripts,
};

const N: usize = 1_000_000;
const CHANGE: usize = N / 100;
const IDLE: Duration = Duration::from_secs(60);
const REPEATS: usize = 3;
const DECISIONS: usize = 1_000;
const CROWDSEC_INTERVAL_S: u64 = 10;

/// CPU seconds (user + system) of `pid`.
fn cpu(pid: u32) -> anyhow::Result<f64> {
    Ok(super::footprint::sample(pid)?.0)
}

/// Every `sync done` line of the agent's JSON log, as its fields.
fn syncs(log: &std::path::Path) -> Vec<serde_json::Value> {
    let mut s = String::new();
    let _ = std::fs::File::open(log).and_then(|mut f| f.read_to_string(&mut s));
    s.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["fields"]["message"] == "sync done")
        .map(|v| v["fields"].clone())
        .collect()
}

/// Waits for a sync after the first `after` that satisfies `want`.
fn wait_sync(
    log: &std::path::Path,
    after: usize,
    what: &str,
    want: impl Fn(&serde_json::Value) -> bool,
) -> anyhow::Result<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if let Some(s) = syncs(log).into_iter().skip(after).find(|s| want(s)) {
            return Ok(s);
        }
        if Instant::now() > deadline {
            bail!("{what}: no such sync within 180 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn num(v: &serde_json::Value, k: &str) -> f64 {
    v[k].as_f64().unwrap_or(0.0)
}

/// Runs the updates benchmark; prints its table and returns its JSON.
pub fn run() -> anyhow::Result<serde_json::Value> {
    let mut rng = StdRng::seed_from_u64(0x0bda7e);
    // Shuffled: a real feed's churn is spread over the address space, not
    // one run of neighbouring prefixes (which would flatter the table's
    // partial compile).
    let mut set = prefixes(N + CHANGE * REPEATS, &mut rng);
    set.shuffle(&mut rng);
    let listed: std::collections::HashSet<_> = set.iter().copied().collect();
    // CrowdSec bans: random single addresses, none of them a feed entry.
    let bans: Vec<String> = singles(DECISIONS * REPEATS * 2, &mut rng)
        .into_iter()
        .filter(|p| !listed.contains(p))
        .take(DECISIONS * REPEATS)
        .map(|p| p.addr().to_string())
        .collect();
    let mut bans = bans.chunks(DECISIONS);
    let bodies: Vec<String> = (0..=REPEATS)
        .map(|i| {
            // Round i drops the first i% and adds i% new ones.
            let mut v = set[CHANGE * i..N].to_vec();
            v.extend_from_slice(&set[N..N + CHANGE * i]);
            scripts::feed(&v)
        })
        .collect();
    let parse: Vec<f64> = (0..REPEATS)
        .map(|_| {
            let t = Instant::now();
            let p = feed::parse(
                bodies[1].as_bytes(),
                &Format::Auto,
                &FormatOptions::default(),
                0,
            );
            let mut v: Vec<_> = p.entries.into_iter().map(|e| e.prefix).collect();
            v.sort_unstable();
            v.dedup();
            t.elapsed().as_secs_f64()
        })
        .collect();

    let ns = Netns::new("xbbu");
    let fs = Bpffs::new();
    let dir = tempfile::tempdir()?;
    let server = FeedServer::start_in(&ns);
    server.set("/big", vec![Reply::tagged(bodies[0].clone(), "\"v0\"")]);
    let lapi = Lapi::start_in(&ns);
    let key = dir.path().join("bouncer.key");
    std::fs::write(&key, lapi.key())?;
    let metrics_port = ns.free_port();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n[events]\noutput = \"off\"\n\
             [[feed]]\nname = \"big\"\nallow_reserved = true\nurl = \"{}\"\ninterval = \"5s\"\n\
             [[feed]]\nname = \"crowdsec\"\nallow_reserved = true\nformat = \"crowdsec\"\nurl = \"{}\"\n\
             api_key_file = \"{}\"\ninterval = \"{CROWDSEC_INTERVAL_S}s\"\n",
            server.url("/big"),
            lapi.url(),
            key.display()
        ),
    )?;
    let log = dir.path().join("agent.log");
    let agent = Agent::new(ns.name(), fs.pin_dir(), dir.path().join("state"))
        .with_config(config)
        .with_env("RUST_LOG", "info");
    eprintln!("updates bench: `run` with {N} prefixes and a CrowdSec Local API");
    let mut child = agent
        .command(&["--log-format", "json", "run"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .context("starting blocklist-agent run")?;
    let pid = child.id();
    let result = (|| -> anyhow::Result<serde_json::Value> {
        wait_sync(&log, 0, "the first sync", |s| {
            num(s, "v4_added") >= N as f64
        })?;
        // Let the first CrowdSec poll and the table settle.
        std::thread::sleep(Duration::from_secs(CROWDSEC_INTERVAL_S + 1));

        eprintln!("updates bench: idle for {IDLE:?} (304s and empty CrowdSec deltas)");
        let (n0, c0, t0) = (syncs(&log).len(), cpu(pid)?, Instant::now());
        std::thread::sleep(IDLE);
        let (n1, c1, wall) = (syncs(&log).len(), cpu(pid)?, t0.elapsed().as_secs_f64());
        let idle_cpu = c1 - c0;
        let idle_syncs = (n1 - n0).max(1);
        let idle_sync_s: Vec<f64> = syncs(&log)[n0..n1]
            .iter()
            .map(|s| num(s, "seconds"))
            .collect();

        let mut change = Vec::new();
        let mut change_cpu = Vec::new();
        let mut change_path = Vec::new();
        let mut change_parts: Vec<(f64, f64, f64)> = Vec::new();
        for (i, body) in bodies.iter().enumerate().skip(1) {
            eprintln!("updates bench: 1% change {i}/{REPEATS}");
            let (n, c) = (syncs(&log).len(), cpu(pid)?);
            server.set(
                "/big",
                vec![Reply::tagged(body.clone(), &format!("\"v{i}\""))],
            );
            let s = wait_sync(&log, n, "the 1% change", |s| {
                num(s, "v4_added") >= CHANGE as f64
            })?;
            change.push(num(&s, "seconds"));
            change_parts.push((
                num(&s, "poll_seconds"),
                num(&s, "apply_seconds"),
                num(&s, "table_compile_seconds"),
            ));
            change_cpu.push(cpu(pid)? - c);
            change_path.push(s["path"].as_str().unwrap_or("").to_owned());
        }

        let mut delta_add = Vec::new();
        let mut delta_del = Vec::new();
        // Where a delta's time goes: polling, kernel writes, table compile.
        let mut delta_parts: Vec<(f64, f64, f64)> = Vec::new();
        for r in 0..REPEATS {
            eprintln!(
                "updates bench: CrowdSec delta of {DECISIONS} decisions {}/{REPEATS}",
                r + 1
            );
            let mut csv = String::from("duration,scope,value\n");
            for ip in bans.next().context("enough random bans")? {
                csv.push_str(&format!("4h,ip,{ip}\n"));
            }
            let file = dir.path().join("decisions.csv");
            std::fs::write(&file, csv)?;
            let n = syncs(&log).len();
            lapi.cscli(&[
                "decisions",
                "import",
                "-i",
                file.to_str().unwrap_or_default(),
            ]);
            let s = wait_sync(&log, n, "the CrowdSec delta", |s| {
                num(s, "v4_added") >= DECISIONS as f64
            })?;
            delta_add.push(num(&s, "seconds"));
            delta_parts.push((
                num(&s, "poll_seconds"),
                num(&s, "apply_seconds"),
                num(&s, "table_compile_seconds"),
            ));
            let n = syncs(&log).len();
            lapi.cscli(&["decisions", "delete", "--all"]);
            let s = wait_sync(&log, n, "the CrowdSec deletion", |s| {
                num(s, "v4_removed") >= DECISIONS as f64
            })?;
            delta_del.push(num(&s, "seconds"));
        }

        eprintln!("updates bench: /metrics scrapes");
        let url = format!("http://127.0.0.1:{metrics_port}/metrics");
        let scrapes: Vec<f64> = ns.enter(|| {
            let client = reqwest::blocking::Client::new();
            (0..10)
                .map(|_| {
                    let t = Instant::now();
                    let ok = client.get(&url).send().and_then(|r| r.text()).is_ok();
                    if ok {
                        t.elapsed().as_secs_f64()
                    } else {
                        f64::NAN
                    }
                })
                .collect()
        });

        let mut to_drop = Vec::new();
        for r in 0..REPEATS {
            eprintln!(
                "updates bench: cscli decisions add -> blocked {}/{REPEATS}",
                r + 1
            );
            let ip = format!("10.201.0.{}", r + 1);
            lapi.add(&ip, "1h", "ban");
            let t = Instant::now();
            loop {
                let c = agent.run(&["check", &ip, "--json"]).json();
                if c["blocked"] == true {
                    break;
                }
                if t.elapsed() > Duration::from_secs(60) {
                    bail!("{ip} not blocked within 60 s of cscli decisions add");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            to_drop.push(t.elapsed().as_secs_f64());
        }

        let (parse_m, _, _) = stats(parse.clone());
        let per_sync = idle_cpu / idle_syncs as f64;
        let idle_pct = 100.0 * idle_cpu / wall;
        let rows = [
            (
                "parse + normalise the changed body (baseline)",
                stats(parse),
            ),
            (
                "no-change sync, wall (304 + empty CrowdSec delta)",
                stats(idle_sync_s),
            ),
            ("1% change sync, wall", stats(change.clone())),
            (
                "  of which: poll (fetch, hash, parse, record)",
                stats(change_parts.iter().map(|p| p.0).collect()),
            ),
            (
                "  of which: kernel writes (tries and table)",
                stats(change_parts.iter().map(|p| p.1).collect()),
            ),
            (
                "  of which: table compile",
                stats(change_parts.iter().map(|p| p.2).collect()),
            ),
            ("1% change sync, agent CPU", stats(change_cpu)),
            (
                "CrowdSec delta: 1,000 decisions added, sync wall",
                stats(delta_add.clone()),
            ),
            (
                "CrowdSec delta: 1,000 decisions deleted, sync wall",
                stats(delta_del.clone()),
            ),
            (
                "  of which: poll (fetch, parse, record)",
                stats(delta_parts.iter().map(|p| p.0).collect()),
            ),
            (
                "  of which: kernel writes (tries and table)",
                stats(delta_parts.iter().map(|p| p.1).collect()),
            ),
            (
                "  of which: table compile",
                stats(delta_parts.iter().map(|p| p.2).collect()),
            ),
            ("/metrics scrape", stats(scrapes.clone())),
            (
                "cscli decisions add -> check sees it blocked",
                stats(to_drop.clone()),
            ),
        ];
        println!(
            "\n### Updates with {N} entries installed (`run`, one run; medians of the repeats)\n"
        );
        println!("| case | median s | min | max |");
        println!("|---|---:|---:|---:|");
        for (name, (m, lo, hi)) in &rows {
            println!("| {name} | {m:.4} | {lo:.4} | {hi:.4} |");
        }
        println!(
            "\nidle: {idle_cpu:.2} CPU s over {wall:.0} s = {idle_pct:.2}% of a core, {idle_syncs} syncs, \
             {per_sync:.4} CPU s per no-change sync; 1% change paths: {change_path:?}"
        );
        let (change_m, _, _) = stats(change);
        let (add_m, _, _) = stats(delta_add);
        let (scrape_m, _, _) = stats(scrapes);
        let (drop_m, _, _) = stats(to_drop);
        println!("\n| target | measured | target | met |");
        println!("|---|---:|---:|:-:|");
        let mut targets = Vec::new();
        for (name, got, want) in [
            ("no-change sync CPU, s", per_sync, 0.05),
            ("1% change sync minus parse, s", change_m - parse_m, 0.3),
            ("CrowdSec 1,000-decision delta, s", add_m, 0.1),
            (
                "idle CPU with a 10 s CrowdSec poll, % of a core",
                idle_pct,
                1.0,
            ),
            ("/metrics scrape, ms", scrape_m * 1000.0, 10.0),
            (
                "cscli add -> blocked, s",
                drop_m,
                CROWDSEC_INTERVAL_S as f64 + 1.0,
            ),
        ] {
            let met = got <= want;
            println!(
                "| {name} | {got:.3} | {want} | {} |",
                if met { "yes" } else { "no" }
            );
            targets.push(
                serde_json::json!({"target": name, "measured": got, "limit": want, "met": met}),
            );
        }
        Ok(serde_json::json!({
            "entries": N,
            "rows": rows.iter().map(|(n, (m, lo, hi))| serde_json::json!({"case": n, "median_s": m, "min_s": lo, "max_s": hi})).collect::<Vec<_>>(),
            "idle_cpu_percent": idle_pct,
            "cpu_per_nochange_sync_s": per_sync,
            "targets": targets,
        }))
    })();
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = child.wait();
    drop(lapi);
    result.with_context(|| {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(30).collect();
        format!(
            "agent log (last lines):\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )
    })
}
