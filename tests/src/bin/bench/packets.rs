//! Per-packet cost of the XDP program, measured with BPF_PROG_TEST_RUN on
//! the real kernel, beside the empty `XDP_PASS` program measured in the
//! same run, for both lookups (`table` and `trie`) on the same lists.
//!
//! Lists: /32-only, and a realistic mix (about 60% /32, 25% /24, the rest
//! /16../23), 1,000 to 1,000,000 entries, deterministic per seed (sorted,
//! so "the first /32" is the same entry every run). Traffic shapes:
//! - one frame: one source, repeated (everything stays in cache);
//! - hits: 256 distinct sources drawn from the list;
//! - spoofed: 256 distinct sources uniformly inside the entries wider than
//!   /24 (the flood a blocked /16 sends with forged addresses);
//! - misses: 256 distinct sources uniformly over unicast space outside
//!   every entry (legitimate traffic; the gaps between listed prefixes);
//! - a flood from one entry on two CPUs at once (a thread pinned to each),
//!   beside two CPUs each hitting an entry of its own: what sharing one
//!   entry's counters across CPUs costs, at the largest mixed list.
//!
//! Each of the 256 frames runs `repeat / 256` times in a row, so these
//! figures are **cache-warm**: the cold cost is the live bench's receiver
//! ns per frame. `BENCH_QUICK=1` runs fewer and shorter repeats.

use std::{
    collections::{BTreeSet, HashSet},
    net::{Ipv4Addr, Ipv6Addr},
    os::fd::{AsFd as _, OwnedFd},
    sync::Barrier,
    time::Instant,
};

use anyhow::Context as _;
use blocklist_agent::{
    config::Lookup,
    datapath::{maps::TrieKind, test_run},
    prefix::Prefix,
    reserved,
};
use blocklist_tests::{cpus, frames, kernel::Kernel};
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::Serialize;

pub const RUNS: usize = 7;
const DISTINCT: usize = 256;
/// Frames of the cold cases. Each runs once per measurement, so at a large
/// list nothing its lookup touches is still cached from its last run: the
/// cost live traffic from many sources pays, without a sender beside it.
const COLD: usize = 16_384;

/// `BENCH_QUICK=1`: fewer and shorter runs (every part reads it).
pub fn quick() -> bool {
    std::env::var_os("BENCH_QUICK").is_some()
}

#[derive(Serialize)]
struct Row {
    case: String,
    lookup: &'static str,
    list: &'static str,
    prefixes: usize,
    median_ns: f64,
    min_ns: f64,
    max_ns: f64,
}

pub fn stats(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

/// True for addresses no list entry may cover: 0/8, 10/8 (the peers), and
/// 224/3 (multicast and reserved).
fn reserved(a: u32) -> bool {
    matches!(a >> 24, 0 | 10) || a >> 29 == 0b111
}

/// A random unicast address outside [`reserved`].
fn unicast(rng: &mut StdRng) -> u32 {
    loop {
        let a: u32 = rng.random();
        if !reserved(a) {
            return a;
        }
    }
}

/// A mixed prefix set of `n` entries, sorted, deterministic per seed.
pub fn prefixes(n: usize, rng: &mut StdRng) -> Vec<Prefix> {
    let mut set = BTreeSet::new();
    while set.len() < n {
        let len = match rng.random_range(0..100) {
            0..60 => 32,
            60..85 => 24,
            _ => rng.random_range(16..=23),
        };
        let p = Prefix::new(
            ipnet::Ipv4Net::new(Ipv4Addr::from(unicast(rng)), len)
                .unwrap()
                .trunc()
                .into(),
        );
        // A feed of these goes through the agent's reserved-range guard
        // (the sync and updates parts): keep to what it installs whole.
        if reserved::touching(&p).is_none() {
            set.insert(p);
        }
    }
    set.into_iter().collect()
}

/// `n` distinct single addresses, sorted.
pub fn singles(n: usize, rng: &mut StdRng) -> Vec<Prefix> {
    let mut set = BTreeSet::new();
    while set.len() < n {
        let p = Prefix::from_v4(unicast(rng).to_be_bytes(), 32).unwrap();
        if reserved::touching(&p).is_none() {
            set.insert(p);
        }
    }
    set.into_iter().collect()
}

/// A mixed IPv6 set: about 60% /128, 25% /64, the rest /48../63, in
/// 2001:db8::/32 (documentation space, never a peer of the frames).
pub fn prefixes6(n: usize, rng: &mut StdRng) -> Vec<Prefix> {
    let mut set = BTreeSet::new();
    while set.len() < n {
        let len = match rng.random_range(0..100) {
            0..60 => 128,
            60..85 => 64,
            _ => rng.random_range(48..=63),
        };
        let a: u128 = (0x2001_0db8u128 << 96) | (rng.random::<u128>() >> 32);
        set.insert(Prefix::new(
            ipnet::Ipv6Net::new(Ipv6Addr::from(a), len)
                .unwrap()
                .trunc()
                .into(),
        ));
    }
    set.into_iter().collect()
}

/// An address inside an IPv6 prefix (random host bits).
fn inside6(p: &Prefix, rng: &mut StdRng) -> Ipv6Addr {
    let base = u128::from_be_bytes(p.v6_bytes().unwrap());
    let host = if p.prefix_len() == 128 {
        0
    } else {
        rng.random::<u128>() >> p.prefix_len()
    };
    Ipv6Addr::from(base | host)
}

/// An address inside `p` (random host bits).
pub fn inside(p: &Prefix, rng: &mut StdRng) -> Ipv4Addr {
    let base = u32::from_be_bytes(p.v4_bytes().unwrap());
    let host = if p.prefix_len() == 32 {
        0
    } else {
        rng.random::<u32>() >> p.prefix_len()
    };
    Ipv4Addr::from(base | host)
}

/// Which addresses a list covers, for drawing misses from its gaps.
pub struct Coverage {
    lens: Vec<u8>,
    nets: HashSet<(u32, u8)>,
}

impl Coverage {
    pub fn new(list: &[Prefix]) -> Self {
        let nets: HashSet<(u32, u8)> = list
            .iter()
            .map(|p| (u32::from_be_bytes(p.v4_bytes().unwrap()), p.prefix_len()))
            .collect();
        let mut lens: Vec<u8> = nets.iter().map(|n| n.1).collect();
        lens.sort_unstable();
        lens.dedup();
        Self { lens, nets }
    }

    pub fn covers(&self, a: u32) -> bool {
        self.lens
            .iter()
            .any(|&l| self.nets.contains(&(a & (u32::MAX << (32 - l as u32)), l)))
    }

    /// A random unicast address that no entry covers.
    pub fn miss(&self, rng: &mut StdRng) -> Ipv4Addr {
        loop {
            let a = unicast(rng);
            if !self.covers(a) {
                return Ipv4Addr::from(a);
            }
        }
    }
}

/// Which IPv6 addresses a list covers.
pub struct Coverage6 {
    lens: Vec<u8>,
    nets: HashSet<(u128, u8)>,
}

impl Coverage6 {
    pub fn new(list: &[Prefix]) -> Self {
        let nets: HashSet<(u128, u8)> = list
            .iter()
            .map(|p| (u128::from_be_bytes(p.v6_bytes().unwrap()), p.prefix_len()))
            .collect();
        let mut lens: Vec<u8> = nets.iter().map(|n| n.1).collect();
        lens.sort_unstable();
        lens.dedup();
        Self { lens, nets }
    }

    /// A random address of 2001:db8::/32 (the list's /32) that no entry
    /// covers: the table has to search the list's chunk to say so.
    pub fn miss(&self, rng: &mut StdRng) -> Ipv6Addr {
        loop {
            let a: u128 = (0x2001_0db8u128 << 96) | (rng.random::<u128>() >> 32);
            let covered = self.lens.iter().any(|&l| {
                let mask = u128::MAX.checked_shl(128 - l as u32).unwrap_or(0);
                self.nets.contains(&(a & mask, l))
            });
            if !covered {
                return Ipv6Addr::from(a);
            }
        }
    }
}

/// Sources uniformly inside the list's entries wider than /24 (none:
/// the list has no such entry).
pub fn spoofed(list: &[Prefix], n: usize, rng: &mut StdRng) -> Vec<Ipv4Addr> {
    let wide: Vec<&Prefix> = list.iter().filter(|p| p.prefix_len() < 24).collect();
    if wide.is_empty() {
        return Vec::new();
    }
    (0..n)
        .map(|_| inside(wide[rng.random_range(0..wide.len())], rng))
        .collect()
}

/// Mean ns per run of the program when `frames[i]` runs `repeat` times on
/// CPU `on[i]`, all at once (a thread pinned to each CPU, started together).
fn concurrent_ns(
    fd: &OwnedFd,
    on: [usize; 2],
    frames: [&[u8]; 2],
    repeat: u32,
) -> anyhow::Result<f64> {
    let start = Barrier::new(2);
    let each = std::thread::scope(|s| {
        let runs: Vec<_> = on
            .iter()
            .zip(frames)
            .map(|(&cpu, frame)| {
                let start = &start;
                s.spawn(move || -> anyhow::Result<f64> {
                    cpus::pin(cpu)
                        .with_context(|| format!("pinning a bench thread to CPU {cpu}"))?;
                    start.wait();
                    Ok(test_run::run_fd(fd.as_fd(), frame, repeat)?.duration_ns as f64)
                })
            })
            .collect();
        runs.into_iter()
            .map(|r| r.join().expect("bench thread panicked"))
            .collect::<anyhow::Result<Vec<f64>>>()
    })?;
    Ok(each.iter().sum::<f64>() / each.len() as f64)
}

/// Runs the per-packet benchmark; prints its table and returns its JSON.
pub fn run() -> anyhow::Result<serde_json::Value> {
    let (runs, repeat) = if quick() {
        (3, 200_000)
    } else {
        (RUNS, 1_000_000)
    };
    let per = repeat / DISTINCT as u32;
    let mut k = Kernel::load();
    let ns = blocklist_tests::lab::Netns::new("xbbp");
    k.keep_in_dispatcher(&ns);
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let peer: Ipv4Addr = "10.0.0.1".parse()?;
    let mut rows = Vec::new();
    let mut measure = |k: &mut Kernel,
                       lookup: Lookup,
                       list: &'static str,
                       case: &str,
                       n: usize,
                       f: &mut dyn FnMut(&mut Kernel) -> f64| {
        k.set_lookup(lookup);
        let v: Vec<f64> = (0..runs).map(|_| f(k)).collect();
        let (median_ns, min_ns, max_ns) = stats(v);
        eprintln!(
            "  {:<5} {list:<5} {n:>9} {case:<40} {median_ns:7.1} ns/packet",
            lookup.name()
        );
        rows.push(Row {
            case: case.to_owned(),
            lookup: lookup.name(),
            list,
            prefixes: n,
            median_ns,
            min_ns,
            max_ns,
        });
    };
    let distinct = |k: &mut Kernel, frames: &[Vec<u8>]| {
        frames.iter().map(|f| k.cost_ns(f, per) as f64).sum::<f64>() / frames.len() as f64
    };
    // One run per frame: the kernel's clock reads around a single run are
    // in it, which the cold floor row shows.
    let cold = |k: &mut Kernel, frames: &[Vec<u8>]| {
        frames.iter().map(|f| k.cost_ns(f, 1) as f64).sum::<f64>() / frames.len() as f64
    };

    let floor_frame = frames::ipv4("10.9.9.9".parse()?, peer);
    measure(
        &mut k,
        Lookup::Table,
        "-",
        "floor: empty XDP_PASS program",
        0,
        &mut |k| k.floor_cost_ns(&floor_frame, repeat) as f64,
    );
    measure(
        &mut k,
        Lookup::Table,
        "-",
        "floor, one run per call (the cold cases' clock overhead)",
        0,
        &mut |k| {
            (0..COLD)
                .map(|_| k.floor_cost_ns(&floor_frame, 1) as f64)
                .sum::<f64>()
                / COLD as f64
        },
    );

    let mut loads = Vec::new();
    let sizes: &[usize] = if quick() {
        &[1_000, 1_000_000]
    } else {
        &[1_000, 10_000, 100_000, 1_000_000]
    };
    for list_name in ["/32", "mixed"] {
        for &n in sizes {
            k.clear(TrieKind::Block);
            let set = if list_name == "/32" {
                singles(n, &mut rng)
            } else {
                prefixes(n, &mut rng)
            };
            let entries: Vec<(Prefix, u32)> = set.iter().map(|p| (*p, 0)).collect();
            let t = Instant::now();
            k.maps.insert_many(TrieKind::Block, &entries)?;
            loads.push((list_name, n, t.elapsed().as_secs_f64()));
            let coverage = Coverage::new(&set);
            let first32 = set.iter().find(|p| p.prefix_len() == 32);
            let first24 = set.iter().find(|p| p.prefix_len() == 24);
            let one32 = first32.map(|p| frames::ipv4(inside(p, &mut rng), peer));
            let one24 = first24.map(|p| frames::ipv4(inside(p, &mut rng), peer));
            let hits: Vec<Vec<u8>> = (0..DISTINCT)
                .map(|_| frames::ipv4(inside(&set[rng.random_range(0..set.len())], &mut rng), peer))
                .collect();
            let spoof: Vec<Vec<u8>> = spoofed(&set, DISTINCT, &mut rng)
                .into_iter()
                .map(|a| frames::ipv4(a, peer))
                .collect();
            let misses: Vec<Vec<u8>> = (0..DISTINCT)
                .map(|_| frames::ipv4(coverage.miss(&mut rng), peer))
                .collect();
            let cold_hits: Vec<Vec<u8>> = (0..COLD)
                .map(|_| frames::ipv4(inside(&set[rng.random_range(0..set.len())], &mut rng), peer))
                .collect();
            let cold_misses: Vec<Vec<u8>> = (0..COLD)
                .map(|_| frames::ipv4(coverage.miss(&mut rng), peer))
                .collect();
            // Two CPUs flooding one entry, against two CPUs each flooding
            // an entry of its own, and one CPU alone.
            let flood = (list_name == "mixed" && Some(&n) == sizes.last())
                .then(|| {
                    let mut hosts = set.iter().filter(|p| p.prefix_len() == 32);
                    let mut wide = set.iter().filter(|p| p.prefix_len() == 24);
                    let mut frame = |p: &Prefix| frames::ipv4(inside(p, &mut rng), peer);
                    Some((
                        [frame(hosts.next()?), frame(hosts.next()?)],
                        [frame(wide.next()?), frame(wide.next()?)],
                    ))
                })
                .flatten();
            let two = cpus::two();
            if flood.is_some() && two.is_none() {
                eprintln!("  (one CPU only: the two-CPU flood cases are left out)");
            }
            if let (Some((hosts, wide)), Some(two)) = (&flood, two) {
                let fd = k.program_fd();
                for (kind, pair) in [("/32", hosts), ("/24", wide)] {
                    let [a, b] = [pair[0].as_slice(), pair[1].as_slice()];
                    let both = |frames: [&[u8]; 2]| {
                        concurrent_ns(&fd, two, frames, repeat)
                            .expect("BPF_PROG_TEST_RUN on two CPUs")
                    };
                    measure(
                        &mut k,
                        Lookup::Table,
                        list_name,
                        &format!("flood, one {kind} entry, one CPU"),
                        n,
                        &mut |k| k.cost_ns(a, repeat) as f64,
                    );
                    measure(
                        &mut k,
                        Lookup::Table,
                        list_name,
                        &format!("flood, one {kind} entry, two CPUs at once"),
                        n,
                        &mut |_| both([a, a]),
                    );
                    measure(
                        &mut k,
                        Lookup::Table,
                        list_name,
                        &format!("flood, a {kind} entry per CPU, two CPUs at once"),
                        n,
                        &mut |_| both([a, b]),
                    );
                }
            }
            for lookup in [Lookup::Table, Lookup::Trie] {
                if let Some(f) = &one32 {
                    measure(
                        &mut k,
                        lookup,
                        list_name,
                        "hit, one frame, /32 entry",
                        n,
                        &mut |k| k.cost_ns(f, repeat) as f64,
                    );
                }
                if let Some(f) = &one24 {
                    measure(
                        &mut k,
                        lookup,
                        list_name,
                        "hit, one frame, /24 entry",
                        n,
                        &mut |k| k.cost_ns(f, repeat) as f64,
                    );
                }
                measure(
                    &mut k,
                    lookup,
                    list_name,
                    "hits, 256 distinct sources (cache-warm)",
                    n,
                    &mut |k| distinct(k, &hits),
                );
                if !spoof.is_empty() {
                    measure(
                        &mut k,
                        lookup,
                        list_name,
                        "spoofed, 256 distinct in wide entries",
                        n,
                        &mut |k| distinct(k, &spoof),
                    );
                }
                measure(
                    &mut k,
                    lookup,
                    list_name,
                    "misses, 256 distinct from the gaps",
                    n,
                    &mut |k| distinct(k, &misses),
                );
                measure(
                    &mut k,
                    lookup,
                    list_name,
                    "hits, 16,384 distinct sources, each once (cold)",
                    n,
                    &mut |k| cold(k, &cold_hits),
                );
                measure(
                    &mut k,
                    lookup,
                    list_name,
                    "misses, 16,384 distinct from the gaps, each once (cold)",
                    n,
                    &mut |k| cold(k, &cold_misses),
                );
            }
        }
    }

    // IPv6: single addresses in EXACT_V6 in both modes; the rest in the
    // IPv6 table (table mode) or the tries. The whole list sits in one
    // /32, 2001:db8::/32, so in table mode it is one chunk of one /16: the
    // hardest shape for the table, the usual one for real IPv6 lists.
    k.clear(TrieKind::Block);
    let peer6: Ipv6Addr = "fd00::1".parse()?;
    let miss6 = frames::ipv6("fd00::9".parse()?, peer6);
    let sizes6: &[usize] = if quick() {
        &[1_000, 250_000]
    } else {
        &[1_000, 100_000, 250_000]
    };
    for &n in sizes6 {
        k.clear(TrieKind::Block);
        let set = prefixes6(n, &mut rng);
        let entries: Vec<(Prefix, u32)> = set.iter().map(|p| (*p, 0)).collect();
        k.maps.insert_many(TrieKind::Block, &entries)?;
        let coverage = Coverage6::new(&set);
        let hit = |rng: &mut StdRng| {
            frames::ipv6(inside6(&set[rng.random_range(0..set.len())], rng), peer6)
        };
        let hits: Vec<Vec<u8>> = (0..DISTINCT).map(|_| hit(&mut rng)).collect();
        let misses: Vec<Vec<u8>> = (0..DISTINCT)
            .map(|_| frames::ipv6(coverage.miss(&mut rng), peer6))
            .collect();
        let cold_hits: Vec<Vec<u8>> = (0..COLD).map(|_| hit(&mut rng)).collect();
        let cold_misses: Vec<Vec<u8>> = (0..COLD)
            .map(|_| frames::ipv6(coverage.miss(&mut rng), peer6))
            .collect();
        for lookup in [Lookup::Table, Lookup::Trie] {
            measure(
                &mut k,
                lookup,
                "IPv6",
                "miss, one frame (outside the list's /32)",
                n,
                &mut |k| k.cost_ns(&miss6, repeat) as f64,
            );
            measure(
                &mut k,
                lookup,
                "IPv6",
                "hits, 256 distinct sources (cache-warm)",
                n,
                &mut |k| distinct(k, &hits),
            );
            measure(
                &mut k,
                lookup,
                "IPv6",
                "misses, 256 distinct from the gaps",
                n,
                &mut |k| distinct(k, &misses),
            );
            measure(
                &mut k,
                lookup,
                "IPv6",
                "hits, 16,384 distinct sources, each once (cold)",
                n,
                &mut |k| cold(k, &cold_hits),
            );
            measure(
                &mut k,
                lookup,
                "IPv6",
                "misses, 16,384 distinct from the gaps, each once (cold)",
                n,
                &mut |k| cold(k, &cold_misses),
            );
        }
    }
    k.set_lookup(Lookup::Table);

    println!("| lookup | list | entries | case | median ns/pkt | min | max |");
    println!("|---|---|---:|---|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {:.1} | {:.1} | {:.1} |",
            r.lookup, r.list, r.prefixes, r.case, r.median_ns, r.min_ns, r.max_ns
        );
    }
    println!();
    for (list, n, s) in &loads {
        println!("batch load of {n} {list} entries (tries, ids and table): {s:.3} s");
    }
    Ok(serde_json::json!({
        "runs": runs,
        "repeat": repeat,
        "rows": rows,
        "load_seconds": loads,
    }))
}
