//! The compiled lookup table in the loaded program: random change
//! sequences keep it equal to a reference while a kept address is probed
//! without pause; per-entry counters are exact from two CPUs and survive
//! rebuilds that keep the entry; a spoofed flood's busiest addresses
//! still head `top`.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsFd as _, OwnedFd},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use blocklist_agent::{
    datapath::{
        maps::{Maps, TrieKind},
        pin::PinDir,
        test_run::{self, XDP_DROP, XDP_PASS},
    },
    prefix::Prefix,
};
use blocklist_ebpf::{RESULT_ALLOWED, RESULT_BLOCKED, RESULT_DEEP};
use blocklist_tests::{agent::Agent, cpus, frames, kernel::Kernel, lab::Netns, require_root};
use rand::{Rng, SeedableRng, rngs::StdRng};

fn p(s: &str) -> Prefix {
    s.parse().unwrap()
}

fn peer() -> Ipv4Addr {
    "10.9.9.9".parse().unwrap()
}

/// Reference: blocked when a block entry covers `a` and no allow entry
/// does; allowed when both do.
fn reference(block: &[Prefix], allow: &[Prefix], a: IpAddr) -> (bool, bool) {
    let blocked = block.iter().any(|p| p.contains(a));
    let allowed = allow.iter().any(|p| p.contains(a));
    (blocked && !allowed, blocked && allowed)
}

/// What the change-sequence test needs of an address family.
struct Family {
    /// The address that stays blocked through every step.
    kept: &'static str,
    /// Entries that cover it, in turn: the next step installs one and
    /// removes the previous one in the same batch.
    covers: [&'static str; 4],
    /// The frames' other address.
    peer: &'static str,
    /// Where the random entries and points live, and how long the entries
    /// are.
    base: u128,
    space_bits: u32,
    lens: std::ops::RangeInclusive<u8>,
    width: u32,
}

/// Four /16 slots of IPv4, /14 to /32.
const V4: Family = Family {
    kept: "192.0.2.7",
    covers: [
        "192.0.2.7/32",
        "192.0.2.0/24",
        "192.0.0.0/20",
        "192.0.2.6/31",
    ],
    peer: "10.9.9.9",
    base: 0xc000_0000,
    space_bits: 18,
    lens: 14..=32,
    width: 32,
};

/// Four /48s of one IPv6 /16, /46 to /128: table entries, single
/// addresses (`EXACT_V6`) and the /65../127 the table leaves to the tries.
/// The kept address's covers take each of those paths in turn.
const V6: Family = Family {
    kept: "2001:db8:2:0:0:0:0:7",
    covers: [
        "2001:db8:2::7/128",
        "2001:db8:2::/64",
        "2001:db8::/46",
        "2001:db8:2::6/127",
    ],
    peer: "fd00::9",
    base: 0x2001_0db8 << 96,
    space_bits: 82,
    lens: 46..=128,
    width: 128,
};

impl Family {
    fn addr(&self, v: u128) -> IpAddr {
        if self.width == 32 {
            IpAddr::V4(Ipv4Addr::from(v as u32))
        } else {
            IpAddr::V6(Ipv6Addr::from(v))
        }
    }

    fn value(&self, a: IpAddr) -> u128 {
        match a {
            IpAddr::V4(a) => u32::from(a) as u128,
            IpAddr::V6(a) => u128::from(a),
        }
    }

    /// A random point of the space. IPv6 points keep low host bits small
    /// so that they land on the single addresses too.
    fn point(&self, rng: &mut StdRng) -> IpAddr {
        let mut off = rng.random::<u128>() & ((1u128 << self.space_bits) - 1);
        if self.width == 128 && rng.random_range(0..2) == 0 {
            off &= !0xffff_ffff_ffff_fff0;
            off |= (rng.random::<u128>() & 0x3) << 64;
        }
        self.addr(self.base | off)
    }

    fn random_entry(&self, rng: &mut StdRng) -> Prefix {
        let a = self.point(rng);
        let len = rng.random_range(self.lens.clone());
        Prefix::new(ipnet::IpNet::new(a, len).unwrap().trunc())
    }
}

#[test]
fn random_change_sequences_keep_the_table_equal_to_the_reference() {
    change_sequences(&V4);
}

#[test]
fn random_ipv6_change_sequences_keep_the_table_equal_to_the_reference() {
    change_sequences(&V6);
}

fn change_sequences(f: &Family) {
    require_root();
    let mut k = Kernel::load();
    let mut maps = Maps::open(&PinDir::new(k.pin_dir())).unwrap();
    let fd = k.program_fd();
    let mut rng = StdRng::seed_from_u64(0x7ab1e);
    let kept_addr: IpAddr = f.kept.parse().unwrap();
    let peer: IpAddr = f.peer.parse().unwrap();
    let mut block: Vec<Prefix> = vec![p(f.covers[0])];
    let mut allow: Vec<Prefix> = Vec::new();
    maps.insert_many(TrieKind::Block, &[(block[0], 0)]).unwrap();
    let kept = frames::ip(kept_addr, peer);
    let (mut probes, mut passed) = (0u64, 0u64);
    for step in 0..60 {
        // Change the kept address's own entry, a few hundred others in its
        // /16 and next to it, and (rarely) an allow entry that never
        // covers it.
        let old_cover = p(f.covers[step % f.covers.len()]);
        let new_cover = p(f.covers[(step + 1) % f.covers.len()]);
        let adds: Vec<Prefix> = (0..300)
            .map(|_| f.random_entry(&mut rng))
            .filter(|e| !block.contains(e) && !e.contains(kept_addr))
            .collect();
        let dels: Vec<Prefix> = block
            .iter()
            .filter(|e| **e != old_cover && rng.random_range(0..3) == 0)
            .copied()
            .collect();
        let allow_add: Vec<Prefix> = if step % 7 == 3 {
            vec![f.random_entry(&mut rng)]
                .into_iter()
                .filter(|a| !a.contains(kept_addr) && !allow.contains(a))
                .collect()
        } else {
            Vec::new()
        };
        let stop = AtomicBool::new(false);
        let (n, bad) = std::thread::scope(|s| {
            let probe = s.spawn(|| {
                let (mut n, mut bad) = (0u64, 0u64);
                let deadline = Instant::now() + Duration::from_secs(60);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    let r = test_run::run_fd(fd.as_fd(), &kept, 1).unwrap();
                    n += 1;
                    if r.action == XDP_PASS {
                        bad += 1;
                    }
                }
                (n, bad)
            });
            std::thread::sleep(Duration::from_millis(5));
            maps.batch(|m| -> anyhow::Result<()> {
                let allows: Vec<(Prefix, u32)> = allow_add.iter().map(|a| (*a, 0)).collect();
                m.insert_many(TrieKind::Allow, &allows)?;
                let mut ins: Vec<(Prefix, u32)> = adds.iter().map(|a| (*a, 0)).collect();
                if !block.contains(&new_cover) {
                    ins.push((new_cover, 0));
                }
                m.insert_many(TrieKind::Block, &ins)?;
                let mut gone = dels.clone();
                gone.push(old_cover);
                m.remove_many(TrieKind::Block, &gone)?;
                Ok(())
            })
            .unwrap();
            std::thread::sleep(Duration::from_millis(5));
            stop.store(true, Ordering::Relaxed);
            probe.join().unwrap()
        });
        probes += n;
        passed += bad;
        block.retain(|e| *e != old_cover && !dels.contains(e));
        block.extend(adds.iter().copied());
        if !block.contains(&new_cover) {
            block.push(new_cover);
        }
        block.sort();
        block.dedup();
        allow.extend(allow_add);

        // After the step: the kernel's table and the program's verdicts
        // equal the reference, at random points and at every entry's edges.
        let mut points: Vec<IpAddr> = (0..200).map(|_| f.point(&mut rng)).collect();
        for e in block.iter().chain(&allow) {
            let a = f.value(e.addr());
            let size = 1u128
                .checked_shl(f.width - e.prefix_len() as u32)
                .unwrap_or(0);
            let mask = if f.width == 32 {
                0xffff_ffff
            } else {
                u128::MAX
            };
            points.extend(
                [
                    a,
                    a.wrapping_sub(1),
                    a.wrapping_add(size).wrapping_sub(1),
                    a.wrapping_add(size),
                ]
                .map(|v| f.addr(v & mask)),
            );
        }
        for a in points {
            let (blocked, allowed) = reference(&block, &allow, a);
            let r = maps.table_result(a).unwrap();
            // IPv6 single addresses are probed in EXACT_V6 before the
            // table, and RESULT_DEEP hands the address to the tries: the
            // verdict below still has to be right.
            let exact = a.is_ipv6() && block.iter().any(|e| e.prefix_len() == 128 && e.contains(a));
            if r != RESULT_DEEP && !exact {
                assert_eq!(
                    (r & RESULT_BLOCKED != 0, r & RESULT_ALLOWED != 0),
                    (blocked, allowed),
                    "step {step}: table result {r:#x} for {a}"
                );
            }
            let v = k.verdict(&frames::ip(a, peer));
            assert_eq!(v == XDP_DROP, blocked, "step {step}: verdict for {a}");
        }
    }
    assert!(probes >= 600, "the probe ran only {probes} times");
    assert_eq!(
        passed, 0,
        "{} passed {passed} of {probes} runs while its entry changed form",
        f.kept
    );
}

/// Runs `frame` `n` times on CPU `cpu` (one run of the program each).
fn run_on(cpu: usize, fd: &OwnedFd, frame: &[u8], n: u32) {
    cpus::pin(cpu).unwrap();
    // A few calls, so that the scheduler cannot fold them onto one CPU.
    for _ in 0..10 {
        let r = test_run::run_fd(fd.as_fd(), frame, n / 10).unwrap();
        assert_eq!(r.action, XDP_DROP);
    }
}

#[test]
fn counters_from_two_cpus_are_exact_and_survive_rebuilds() {
    require_root();
    let both = cpus::two().expect("this test needs two CPUs");
    let mut k = Kernel::load();
    let ns = Netns::new("xbt");
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::new(ns.name(), k.pin_dir(), dir.path().join("state"));
    agent.run(&["block", "192.0.2.9/32", "198.51.100.0/24"]);
    let fd = k.program_fd();
    let host = frames::ipv4("192.0.2.9".parse().unwrap(), peer());
    let wide = frames::ipv4("198.51.100.77".parse().unwrap(), peer());
    const N: u32 = 100_000;
    let flood = |fd: &OwnedFd| {
        let (host, wide) = (&host, &wide);
        std::thread::scope(|s| {
            for &cpu in &both {
                s.spawn(move || {
                    run_on(cpu, fd, host, N);
                    run_on(cpu, fd, wide, N);
                });
            }
        })
    };
    flood(&fd);
    let check = |ip: &str| agent.run(&["check", ip, "--json"]).json();
    assert_eq!(check("192.0.2.9")["block"]["packets"], 2 * N as u64);
    assert_eq!(check("198.51.100.77")["block"]["packets"], 2 * N as u64);
    assert_eq!(
        check("198.51.100.77")["block"]["bytes"],
        2 * N as u64 * wide.len() as u64
    );
    let top = agent.run(&["top", "--json"]).json();
    let row = |ip: &str| {
        top.as_array()
            .unwrap()
            .iter()
            .find(|r| r["ip"] == ip)
            .cloned()
            .unwrap_or_else(|| panic!("{ip} not in top: {top}"))
    };
    assert_eq!(row("192.0.2.9")["packets"], 2 * N as u64, "{top}");
    assert_eq!(row("198.51.100.77")["packets"], 2 * N as u64, "{top}");

    // Rebuilds that keep both entries: a thousand entries around them come
    // and go, rewriting their /16s' chunks; the counters stay.
    let mut maps = Maps::open(&PinDir::new(k.pin_dir())).unwrap();
    let others: Vec<(Prefix, u32)> = (0..1000u32)
        .map(|i| {
            (
                Prefix::from_v4((0xc000_0300u32 + i * 4).to_be_bytes(), 31).unwrap(),
                0,
            )
        })
        .chain((0..1000u32).filter(|i| *i != 100).map(|i| {
            (
                Prefix::from_v4((0xc633_0000u32 + i * 256).to_be_bytes(), 24).unwrap(),
                0,
            )
        }))
        .collect();
    let (_, report) = maps
        .batch(|m| m.insert_many(TrieKind::Block, &others))
        .unwrap();
    assert!(
        report.unwrap().written.slots >= 2,
        "the kept entries' slots were rewritten"
    );
    let gone: Vec<Prefix> = others.iter().map(|(p, _)| *p).collect();
    maps.batch(|m| m.remove_many(TrieKind::Block, &gone))
        .unwrap();
    assert_eq!(check("192.0.2.9")["block"]["packets"], 2 * N as u64);
    assert_eq!(check("198.51.100.77")["block"]["packets"], 2 * N as u64);
    // And they keep counting, exactly.
    flood(&fd);
    assert_eq!(check("192.0.2.9")["block"]["packets"], 4 * N as u64);
    assert_eq!(check("198.51.100.77")["block"]["packets"], 4 * N as u64);
    // An entry removed and added again starts from zero.
    agent.run(&["unblock", "192.0.2.9/32"]);
    agent.run(&["block", "192.0.2.9/32"]);
    assert_eq!(check("192.0.2.9")["block"]["packets"], 0);
}

#[test]
fn a_spoofed_flood_shows_its_busiest_addresses_in_top() {
    require_root();
    let mut k = Kernel::load();
    let ns = Netns::new("xbt");
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::new(ns.name(), k.pin_dir(), dir.path().join("state"));
    agent.run(&["block", "198.18.0.0/15"]);
    let fd = k.program_fd();
    let heavy = ["198.18.7.7", "198.19.200.1", "198.18.99.42"];
    let heavy_frames: Vec<Vec<u8>> = heavy
        .iter()
        .map(|a| frames::ipv4(a.parse().unwrap(), peer()))
        .collect();
    let mut rng = StdRng::seed_from_u64(0x5900f);
    const SPOOFED: u32 = 60_000;
    const EVERY: u32 = 20;
    let heavy_addrs: Vec<u32> = heavy
        .iter()
        .map(|a| u32::from(a.parse::<Ipv4Addr>().unwrap()))
        .collect();
    for i in 0..SPOOFED {
        let a = loop {
            let a = 0xc612_0000u32 | (rng.random::<u32>() & 0x1_ffff);
            if !heavy_addrs.contains(&a) {
                break a;
            }
        };
        let f = frames::ipv4(Ipv4Addr::from(a), peer());
        assert_eq!(
            test_run::run_fd(fd.as_fd(), &f, 1).unwrap().action,
            XDP_DROP
        );
        if i % EVERY == 0 {
            for f in &heavy_frames {
                test_run::run_fd(fd.as_fd(), f, 1).unwrap();
            }
        }
    }
    let per_heavy = (SPOOFED / EVERY) as u64;
    // The prefix's own counter is exact whatever the per-address slots did.
    let c = agent.run(&["check", "198.18.7.7", "--json"]).json();
    assert_eq!(c["block"]["packets"], SPOOFED as u64 + 3 * per_heavy, "{c}");
    let top = agent.run(&["top", "--limit", "3", "--json"]).json();
    let rows = top.as_array().unwrap();
    let mut ips: Vec<&str> = rows.iter().map(|r| r["ip"].as_str().unwrap()).collect();
    ips.sort();
    let mut want = heavy.to_vec();
    want.sort();
    assert_eq!(ips, want, "the three busiest addresses head top: {top}");
    for r in rows {
        let n = r["packets"].as_u64().unwrap();
        // A heavy address may lose its first few hits to a slot's votes.
        assert!(
            n <= per_heavy && n + 10 >= per_heavy,
            "{} counted {n} of {per_heavy}: {top}",
            r["ip"]
        );
    }
}

/// A pin keeps the size it was made with: a `RANGES_V4` pinned by an
/// older version (4,194,304 records, this one makes 2,359,296) and an
/// `ADDR_HITS` made with another `ip_counters_max` are reused, not
/// refused, and the program decides with them.
#[test]
fn the_program_loads_over_pins_of_other_sizes() {
    use aya::maps::{Array, MapData, PerCpuArray};
    use blocklist_agent::datapath::loader::{self, LoadOptions};
    use blocklist_ebpf::{AddrHits, RANGES_V4_RECORDS, map_names};
    use blocklist_tests::bpffs::Bpffs;

    require_root();
    const BPF_F_MMAPABLE: u32 = 1 << 10;
    let fs = Bpffs::new();
    let pin = fs.pin();
    pin.ensure().unwrap();
    let older = 4u32 << 20;
    assert_ne!(older, RANGES_V4_RECORDS);
    Array::<MapData, u64>::create(older, BPF_F_MMAPABLE)
        .unwrap()
        .pin(pin.map(map_names::RANGES_V4))
        .unwrap();
    PerCpuArray::<MapData, AddrHits>::create(1024, 0)
        .unwrap()
        .pin(pin.map(map_names::ADDR_HITS))
        .unwrap();
    let size = |name: &str| loader::pinned_entries(&pin, name).expect("a pinned map");
    let mut k = Kernel::load_on(
        fs,
        &LoadOptions {
            addr_slots: 1 << 16,
            ..Kernel::options()
        },
    );
    assert_eq!(size(map_names::RANGES_V4), older);
    assert_eq!(size(map_names::ADDR_HITS), 1024);
    assert_eq!(k.maps.config().unwrap().addr_slots_mask, 1023);
    k.block("10.1.2.0/24");
    let hit = frames::ipv4("10.1.2.3".parse().unwrap(), peer());
    let miss = frames::ipv4("10.1.3.3".parse().unwrap(), peer());
    assert_eq!(k.verdict(&hit), XDP_DROP);
    assert_eq!(k.verdict(&miss), XDP_PASS);
}
