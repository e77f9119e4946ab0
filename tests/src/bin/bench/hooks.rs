//! What the hooks beside XDP cost, measured in the same run as their
//! baselines.
//!
//! - Per packet: the TC classifiers (`tc_ingress`, `tc_egress`) with
//!   BPF_PROG_TEST_RUN on the loaded programs, beside the XDP program and
//!   both empty floor programs, on one mixed list of 100,000 entries
//!   (256 distinct hits, 256 distinct misses, cache-warm as in
//!   `packets.rs`). A TC run builds an skb, so compare each program with
//!   its own floor.
//! - Per `connect()`: a process in a child cgroup (never the root) of a
//!   throw-away namespace calls `connect()` in a loop: UDP (no packet
//!   leaves, so the hook's cost shows plainly) and TCP to a listener in
//!   the same namespace, with no hooks, with the hooks and a clean
//!   destination, and with the hooks refusing a listed one (`EPERM`).
//!   The loop runs in a child process of this binary (`__connect`), which
//!   moves itself into the cgroup and the namespace before it starts.

use std::{
    net::{Ipv4Addr, SocketAddr, TcpListener},
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use blocklist_agent::{
    datapath::{cgroup, maps::TrieKind, pin::PinDir},
    prefix::Prefix,
};
use blocklist_ebpf::{TC_EGRESS_PROGRAM, TC_FLOOR_PROGRAM_NAME, TC_INGRESS_PROGRAM};
use blocklist_tests::{
    cgroup::{ChildCgroup, output_inside},
    frames,
    kernel::Kernel,
    lab::Netns,
};
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::Serialize;
use socket2::{Domain, Socket, Type};

use crate::packets::{Coverage, RUNS, inside, prefixes, quick, stats};

const LIST: usize = 100_000;
const DISTINCT: usize = 256;
/// The namespace's own address (the TCP listener's).
const LOCAL: &str = "10.0.0.1";
/// A clean destination on its link.
const CLEAN: &str = "10.0.0.2";
/// A listed one.
const LISTED: &str = "10.0.0.3";

#[derive(Serialize)]
struct Row {
    case: String,
    program: &'static str,
    median_ns: f64,
    min_ns: f64,
    max_ns: f64,
    /// Median over the baseline's median, same run.
    vs_baseline: f64,
    baseline: &'static str,
    /// The median less its own floor program's (per-packet rows): what
    /// the filter itself costs on that hook.
    over_floor_ns: Option<f64>,
}

pub fn run() -> anyhow::Result<serde_json::Value> {
    let (runs, repeat) = if quick() {
        (3, 200_000)
    } else {
        (RUNS, 1_000_000)
    };
    let per = repeat / DISTINCT as u32;
    let mut k = Kernel::load();
    let ns = Netns::new("xbhk");
    k.keep_in_dispatcher(&ns);
    let mut rng = StdRng::seed_from_u64(0x5eed_0014);
    let set = prefixes(LIST, &mut rng);
    let entries: Vec<(Prefix, u32)> = set.iter().map(|p| (*p, 0)).collect();
    k.maps.insert_many(TrieKind::Block, &entries)?;
    k.block(&format!("{LISTED}/32"));

    let peer: Ipv4Addr = "10.0.0.9".parse()?;
    let coverage = Coverage::new(&set);
    let hits: Vec<Vec<u8>> = (0..DISTINCT)
        .map(|_| frames::ipv4(inside(&set[rng.random_range(0..set.len())], &mut rng), peer))
        .collect();
    let misses: Vec<Vec<u8>> = (0..DISTINCT)
        .map(|_| frames::ipv4(coverage.miss(&mut rng), peer))
        .collect();

    let mut rows = Vec::new();
    type Prog = (&'static str, &'static str);
    // (program, the baseline its ratio is against)
    let progs: [Prog; 5] = [
        ("xdp_pass_floor", "xdp_pass_floor"),
        (TC_FLOOR_PROGRAM_NAME, TC_FLOOR_PROGRAM_NAME),
        ("xdp", "xdp_pass_floor"),
        (TC_INGRESS_PROGRAM, "xdp"),
        (TC_EGRESS_PROGRAM, "xdp"),
    ];
    let floor_of = |prog: &str| {
        if prog.starts_with("xdp") {
            "xdp_pass_floor"
        } else {
            TC_FLOOR_PROGRAM_NAME
        }
    };
    for (case, frames) in [
        ("hits, 256 distinct (cache-warm)", &hits),
        ("misses, 256 distinct (cache-warm)", &misses),
    ] {
        let mut medians: Vec<(&str, f64)> = Vec::new();
        for (prog, baseline) in progs {
            let v: Vec<f64> = (0..runs)
                .map(|_| {
                    frames
                        .iter()
                        .map(|f| match prog {
                            "xdp" => k.cost_ns(f, per),
                            "xdp_pass_floor" => k.floor_cost_ns(f, per),
                            tc => k.tc_cost_ns(tc, f, per),
                        } as f64)
                        .sum::<f64>()
                        / frames.len() as f64
                })
                .collect();
            let (median_ns, min_ns, max_ns) = stats(v);
            let median_of = |name: &str| {
                medians
                    .iter()
                    .find(|(p, _)| *p == name)
                    .map_or(median_ns, |(_, m)| *m)
            };
            let base = median_of(baseline);
            let floor = median_of(floor_of(prog));
            medians.push((prog, median_ns));
            eprintln!("  {prog:<16} {case:<36} {median_ns:7.1} ns/packet");
            rows.push(Row {
                case: format!("{case}, {LIST} mixed entries"),
                program: prog,
                median_ns,
                min_ns,
                max_ns,
                vs_baseline: median_ns / base,
                baseline,
                over_floor_ns: Some(median_ns - floor),
            });
        }
    }

    let calls = connect_costs(&mut k, &ns, runs)?;
    println!("| case | program | median ns | min | max | vs baseline | over its floor |");
    println!("|---|---|---:|---:|---:|---|---:|");
    for r in rows.iter().chain(&calls) {
        println!(
            "| {} | {} | {:.1} | {:.1} | {:.1} | {:.2}x {} | {} |",
            r.case,
            r.program,
            r.median_ns,
            r.min_ns,
            r.max_ns,
            r.vs_baseline,
            r.baseline,
            r.over_floor_ns
                .map_or("-".to_owned(), |n| format!("{n:.1}"))
        );
    }
    Ok(serde_json::json!({ "runs": runs, "repeat": repeat, "packets": rows, "connect": calls }))
}

fn connect_costs(k: &mut Kernel, ns: &Netns, runs: usize) -> anyhow::Result<Vec<Row>> {
    let (udp_n, tcp_n) = if quick() {
        (5_000, 500)
    } else {
        (20_000, 2_000)
    };
    ns.ip(&[
        "link", "add", "xbcn0", "type", "veth", "peer", "name", "xbcn1",
    ]);
    ns.ip(&["addr", "add", &format!("{LOCAL}/24"), "dev", "xbcn0"]);
    ns.ip(&["link", "set", "xbcn0", "up"]);
    ns.ip(&["link", "set", "xbcn1", "up"]);
    let cg = ChildCgroup::under_root("xbbench");

    // (case, hooked, args). Every run measures each case once, the hooks
    // attached for the hooked ones and detached again, so a baseline and
    // the case it is compared with always share the run's conditions.
    let (udp, tcp) = (udp_n.to_string(), tcp_n.to_string());
    let cases: [(&str, bool, [&str; 4]); 6] = [
        ("UDP connect(), clean", false, ["udp", CLEAN, "ok", &udp]),
        (
            "TCP connect() + accept, clean",
            false,
            ["tcp", LOCAL, "ok", &tcp],
        ),
        ("UDP connect(), clean", true, ["udp", CLEAN, "ok", &udp]),
        (
            "UDP connect(), listed: EPERM",
            true,
            ["udp", LISTED, "EPERM", &udp],
        ),
        (
            "TCP connect() + accept, clean",
            true,
            ["tcp", LOCAL, "ok", &tcp],
        ),
        (
            "TCP connect(), listed: EPERM",
            true,
            ["tcp", LISTED, "EPERM", &tcp],
        ),
    ];
    let pin = PinDir::new(k.pin_dir());
    let mut samples = vec![Vec::new(); cases.len()];
    for _ in 0..runs {
        for (i, (_, hooked, args)) in cases.iter().enumerate() {
            if *hooked && cgroup::attached(&pin).is_empty() {
                k.attach_egress(&cg.0);
            }
            let r = connect_loop(&cg.0, ns.name(), *args);
            if r.is_err() {
                cgroup::detach(&pin)?;
            }
            samples[i].push(r?);
        }
        cgroup::detach(&pin)?;
    }
    let mut rows = Vec::new();
    let mut base = [0.0; 2];
    for ((case, hooked, args), v) in cases.iter().zip(samples) {
        let (median_ns, min_ns, max_ns) = stats(v);
        let b = usize::from(args[0] == "tcp");
        if !hooked {
            base[b] = median_ns;
        }
        let program = if *hooked { "connect4" } else { "no hook" };
        eprintln!("  {program:<16} {case:<44} {median_ns:9.1} ns/call");
        rows.push(Row {
            case: (*case).to_owned(),
            program,
            median_ns,
            min_ns,
            max_ns,
            vs_baseline: median_ns / base[b],
            baseline: "no hook",
            over_floor_ns: None,
        });
    }
    Ok(rows)
}

/// Runs `__connect KIND ADDR EXPECT N` in `cgroup` and `netns`; returns
/// its ns per call.
fn connect_loop(cgroup: &Path, netns: &str, args: [&str; 4]) -> anyhow::Result<f64> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("__connect").args(args);
    let out = output_inside(cmd, cgroup, netns).context("running the connect loop")?;
    ensure!(
        out.status.success(),
        "the connect loop {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
}

/// The child side: `KIND ADDR EXPECT N`; prints mean ns per call. A TCP
/// run that expects success listens on ADDR itself and accepts on a
/// thread; every socket closes with linger 0, so no TIME_WAIT piles up.
pub fn connect_child(args: &[String]) -> anyhow::Result<()> {
    let [kind, addr, expect, n] = args else {
        bail!("usage: __connect KIND ADDR EXPECT N");
    };
    let n: u32 = n.parse()?;
    let ip: Ipv4Addr = addr.parse()?;
    let tcp = kind == "tcp";
    let target: SocketAddr = if tcp && expect == "ok" {
        // A deep backlog: a full accept queue drops SYNs, and one retried
        // after a second would dwarf the run.
        let l = Socket::new(Domain::IPV4, Type::STREAM, None)?;
        l.bind(&SocketAddr::from((ip, 0)).into())?;
        l.listen(4096)?;
        let l: TcpListener = l.into();
        let a = l.local_addr()?;
        std::thread::spawn(move || {
            for s in l.incoming() {
                drop(s);
            }
        });
        a
    } else {
        (ip, 9).into()
    };
    let ty = if tcp { Type::STREAM } else { Type::DGRAM };
    let start = Instant::now();
    for _ in 0..n {
        let s = Socket::new(Domain::IPV4, ty, None)?;
        if tcp {
            s.set_linger(Some(Duration::ZERO))?;
        }
        let r = s.connect(&target.into());
        match (expect.as_str(), r) {
            ("ok", Ok(())) => {}
            ("EPERM", Err(e)) if e.raw_os_error() == Some(libc::EPERM) => {}
            (want, got) => bail!("connect to {target}: wanted {want}, got {got:?}"),
        }
    }
    println!("{}", start.elapsed().as_nanos() as f64 / f64::from(n));
    Ok(())
}
