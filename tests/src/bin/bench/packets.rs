//! Per-packet cost of the XDP program, measured with BPF_PROG_TEST_RUN on
//! the real kernel, beside the empty `XDP_PASS` program measured in the
//! same run.
//!
//! Prefix sets are a realistic mix (about 60% /32, 25% /24, the rest
//! /16../23). "one frame" repeats a single frame (the trie path stays in
//! cache); "random keys" cycles through 256 distinct frames whose addresses
//! are drawn from the installed list (drop) or outside it (pass).

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    time::Instant,
};

use blocklist_agent::{datapath::maps::TrieKind, prefix::Prefix};
use blocklist_tests::{frames, kernel::Kernel};
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::Serialize;

pub const RUNS: usize = 7;
const REPEAT: u32 = 1_000_000;
const DISTINCT: usize = 256;

#[derive(Serialize)]
struct Row {
    case: String,
    prefixes: usize,
    median_ns: f64,
    min_ns: f64,
    max_ns: f64,
}

pub fn stats(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

/// A mixed prefix set of `n` entries, deterministic per seed. Addresses
/// avoid 10.0.0.0/8 so that 10.x peers never match.
pub fn prefixes(n: usize, rng: &mut StdRng) -> Vec<Prefix> {
    let mut set = std::collections::HashSet::with_capacity(n);
    while set.len() < n {
        let len = match rng.random_range(0..100) {
            0..60 => 32,
            60..85 => 24,
            _ => rng.random_range(16..=23),
        };
        let mut a: u32 = rng.random();
        if a >> 24 == 10 || a >> 24 == 0 {
            a ^= 0x4000_0000;
        }
        set.insert(Prefix::new(
            ipnet::Ipv4Net::new(Ipv4Addr::from(a), len).unwrap().into(),
        ));
    }
    set.into_iter().collect()
}

/// A mixed IPv6 set: about 60% /128, 25% /64, the rest /48../63, in
/// 2001:db8::/32 (documentation space, never a peer of the frames).
pub fn prefixes6(n: usize, rng: &mut StdRng) -> Vec<Prefix> {
    let mut set = std::collections::HashSet::with_capacity(n);
    while set.len() < n {
        let len = match rng.random_range(0..100) {
            0..60 => 128,
            60..85 => 64,
            _ => rng.random_range(48..=63),
        };
        let a: u128 = (0x2001_0db8u128 << 96) | (rng.random::<u128>() >> 32);
        set.insert(Prefix::new(
            ipnet::Ipv6Net::new(Ipv6Addr::from(a), len).unwrap().into(),
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

/// Runs the per-packet benchmark; prints its table and returns its JSON.
pub fn run() -> anyhow::Result<serde_json::Value> {
    let mut k = Kernel::load();
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let peer: Ipv4Addr = "10.0.0.1".parse()?;
    let miss_frame = frames::ipv4("10.9.9.9".parse()?, peer);
    let mut rows = Vec::new();
    let mut measure =
        |k: &mut Kernel, case: &str, n: usize, f: &mut dyn FnMut(&mut Kernel) -> f64| {
            let v: Vec<f64> = (0..RUNS).map(|_| f(k)).collect();
            let (median_ns, min_ns, max_ns) = stats(v);
            eprintln!("  {case:<34} {n:>9} prefixes: {median_ns:7.1} ns/packet");
            rows.push(Row {
                case: case.to_owned(),
                prefixes: n,
                median_ns,
                min_ns,
                max_ns,
            });
        };

    measure(&mut k, "floor: empty XDP_PASS program", 0, &mut |k| {
        k.floor_cost_ns(&miss_frame, REPEAT) as f64
    });

    let mut load_secs = Vec::new();
    for n in [1_000usize, 100_000, 1_000_000] {
        k.clear(TrieKind::Block);
        let set = prefixes(n, &mut rng);
        let entries: Vec<(Prefix, u32)> = set.iter().map(|p| (*p, 0)).collect();
        let t = Instant::now();
        k.maps.insert_many(TrieKind::Block, &entries)?;
        load_secs.push((n, t.elapsed().as_secs_f64()));
        let hit = inside(&set[0], &mut rng);
        let drop_src = frames::ipv4(hit, peer);
        let drop_dst = frames::ipv4(peer, hit);
        measure(&mut k, "pass (miss), one frame", n, &mut |k| {
            k.cost_ns(&miss_frame, REPEAT) as f64
        });
        measure(&mut k, "drop (source hit), one frame", n, &mut |k| {
            k.cost_ns(&drop_src, REPEAT) as f64
        });
        measure(&mut k, "drop (destination hit), one frame", n, &mut |k| {
            k.cost_ns(&drop_dst, REPEAT) as f64
        });
        let hits: Vec<Vec<u8>> = (0..DISTINCT)
            .map(|_| frames::ipv4(inside(&set[rng.random_range(0..set.len())], &mut rng), peer))
            .collect();
        let misses: Vec<Vec<u8>> = (0..DISTINCT)
            .map(|_| {
                frames::ipv4(
                    Ipv4Addr::from(0x0a00_0000 | (rng.random::<u32>() >> 8)),
                    peer,
                )
            })
            .collect();
        let per = REPEAT / DISTINCT as u32;
        measure(&mut k, "pass (miss), random keys", n, &mut |k| {
            misses.iter().map(|f| k.cost_ns(f, per) as f64).sum::<f64>() / DISTINCT as f64
        });
        measure(&mut k, "drop (source hit), random keys", n, &mut |k| {
            hits.iter().map(|f| k.cost_ns(f, per) as f64).sum::<f64>() / DISTINCT as f64
        });
    }

    // IPv6 (the trie holds up to 524,288 entries; the design sizes for 250,000).
    k.clear(TrieKind::Block);
    let peer6: Ipv6Addr = "fd00::1".parse()?;
    let miss6 = frames::ipv6("fd00::9".parse()?, peer6);
    for n in [1_000usize, 100_000, 250_000] {
        k.clear(TrieKind::Block);
        let set = prefixes6(n, &mut rng);
        let entries: Vec<(Prefix, u32)> = set.iter().map(|p| (*p, 0)).collect();
        k.maps.insert_many(TrieKind::Block, &entries)?;
        let hits: Vec<Vec<u8>> = (0..DISTINCT)
            .map(|_| {
                frames::ipv6(
                    inside6(&set[rng.random_range(0..set.len())], &mut rng),
                    peer6,
                )
            })
            .collect();
        let dst_hits: Vec<Vec<u8>> = (0..DISTINCT)
            .map(|_| {
                frames::ipv6(
                    peer6,
                    inside6(&set[rng.random_range(0..set.len())], &mut rng),
                )
            })
            .collect();
        let per = REPEAT / DISTINCT as u32;
        measure(&mut k, "IPv6 pass (miss), one frame", n, &mut |k| {
            k.cost_ns(&miss6, REPEAT) as f64
        });
        measure(&mut k, "IPv6 drop (source hit), random keys", n, &mut |k| {
            hits.iter().map(|f| k.cost_ns(f, per) as f64).sum::<f64>() / DISTINCT as f64
        });
        measure(
            &mut k,
            "IPv6 drop (destination hit), random keys",
            n,
            &mut |k| {
                dst_hits
                    .iter()
                    .map(|f| k.cost_ns(f, per) as f64)
                    .sum::<f64>()
                    / DISTINCT as f64
            },
        );
    }

    println!("| case | prefixes | median ns/pkt | min | max |");
    println!("|---|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {:.1} | {:.1} | {:.1} |",
            r.case, r.prefixes, r.median_ns, r.min_ns, r.max_ns
        );
    }
    println!();
    for (n, s) in &load_secs {
        println!("batch load of {n} prefixes into an empty trie: {s:.3} s");
    }
    Ok(serde_json::json!({
        "runs": RUNS,
        "repeat": REPEAT,
        "rows": rows,
        "load_seconds": load_secs,
    }))
}
