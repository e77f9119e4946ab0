//! The promise at the heart of the sync: an address that the old and the
//! new list both block is never unblocked, not even for a moment, and one
//! that both allow is never blocked. Here the entry that covers the
//! address *changes* (a /24 narrowed to the /32 inside it, the reverse, an
//! allow entry narrowed the same way), so the agent has to delete the old
//! key and insert the new one; the order of those writes is what is
//! tested. The loaded program decides the address with BPF_PROG_TEST_RUN
//! in a tight loop for the whole sync, and thousands of other entries
//! change in the same sync on both sides of it in sort order, so a wrong
//! order leaves a window of many milliseconds.

use std::{
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use blocklist_agent::datapath::test_run::{XDP_DROP, XDP_PASS};
use blocklist_tests::{agent::Agent, frames, kernel::Kernel, lab::Netns, require_root};
use serde_json::Value;

/// Other entries changing in the same sync, on each side of the address.
const FILLER: u32 = 20_000;
const ADDRESS: &str = "192.0.2.7";

/// `n` host addresses from `base`, one per line.
fn hosts(base: u32, n: u32) -> Vec<String> {
    (base..base + n)
        .map(|a| Ipv4Addr::from(a).to_string())
        .collect()
}

/// Filler entries below 192.0.2.0 (in 45.0.0.0/8) and above it (in
/// 198.18.0.0/15); `generation` picks a disjoint set.
fn filler(generation: u32, n: u32) -> Vec<String> {
    let mut v = hosts(0x2d00_0000 + generation * n, n);
    v.extend(hosts(0xc612_0000 + generation * n, n));
    v
}

/// IPv6 filler: single addresses in 2001:db8:1::/48 (below the address's
/// /48) and 2001:db8:ff::/48 (above it).
fn filler6(generation: u32, n: u32) -> Vec<String> {
    let hosts6 = |base: u128| {
        (0..n as u128).map(move |i| {
            Ipv6Addr::from(base + ((generation as u128 * n as u128 + i) << 8)).to_string()
        })
    };
    let mut v: Vec<String> = hosts6(0x2001_0db8_0001u128 << 80).collect();
    v.extend(hosts6(0x2001_0db8_00ffu128 << 80));
    v
}

/// An address family's side of the test: the address, its filler, and
/// the key of the sync report's counts.
struct Side {
    address: &'static str,
    filler: fn(u32, u32) -> Vec<String>,
    report: &'static str,
}

const V4: Side = Side {
    address: ADDRESS,
    filler,
    report: "v4",
};

/// The IPv6 table holds /64 and wider, `EXACT_V6` the single addresses,
/// and the tries the /65../127: a change between two of them must not
/// open a window either.
const V6: Side = Side {
    address: "2001:db8:2::7",
    filler: filler6,
    report: "v6",
};

struct Env {
    kernel: Kernel,
    agent: Agent,
    dir: tempfile::TempDir,
    _ns: Netns,
}

impl Env {
    fn new() -> Self {
        require_root();
        let kernel = Kernel::load();
        let ns = Netns::new("xbk");
        let dir = tempfile::tempdir().unwrap();
        let agent = Agent::new(ns.name(), kernel.pin_dir(), dir.path().join("state"))
            .with_config(dir.path().join("config.toml"));
        Self {
            kernel,
            agent,
            dir,
            _ns: ns,
        }
    }

    /// Writes the feed and the config (with `allow` entries).
    fn lists(&self, block: &[String], allow: &[String]) {
        let feed = self.dir.path().join("feed.txt");
        let mut body = String::new();
        for b in block {
            let _ = writeln!(body, "{b}");
        }
        std::fs::write(&feed, body).unwrap();
        let allow: Vec<String> = allow.iter().map(|a| format!("\"{a}\"")).collect();
        std::fs::write(
            self.dir.path().join("config.toml"),
            format!(
                "[guard]\nmax_shrink = 1.0\n[[feed]]\nname = \"f\"\nallow_reserved = true\nurl = \"{}\"\n[allow]\ncidrs = [{}]\n",
                feed.display(),
                allow.join(", ")
            ),
        )
        .unwrap();
    }

    /// Runs a sync while the program decides `frame` in a tight loop;
    /// returns the report and how many runs gave each verdict.
    fn sync_under_probe(&mut self, frame: &[u8]) -> (Value, u64, u64) {
        let stop = AtomicBool::new(false);
        let kernel = &mut self.kernel;
        let agent = &self.agent;
        std::thread::scope(|s| {
            let probe = s.spawn(|| {
                let (mut drop, mut pass) = (0u64, 0u64);
                // Bounded: the sync ends well within a minute.
                let deadline = std::time::Instant::now() + Duration::from_secs(120);
                while !stop.load(Ordering::Relaxed) && std::time::Instant::now() < deadline {
                    match kernel.verdict(frame) {
                        XDP_DROP => drop += 1,
                        XDP_PASS => pass += 1,
                        other => panic!("unexpected XDP action {other}"),
                    }
                }
                (drop, pass)
            });
            // The loop is running before the first write and after the last.
            std::thread::sleep(Duration::from_millis(100));
            let report = agent.sync_once(&[]);
            std::thread::sleep(Duration::from_millis(100));
            stop.store(true, Ordering::Relaxed);
            let (drop, pass) = probe.join().unwrap();
            (report, drop, pass)
        })
    }
}

fn with(mut list: Vec<String>, entry: &str) -> Vec<String> {
    list.push(entry.to_owned());
    list
}

fn frame() -> Vec<u8> {
    frame_for(ADDRESS)
}

fn frame_for(address: &str) -> Vec<u8> {
    let a: IpAddr = address.parse().unwrap();
    let peer: IpAddr = if a.is_ipv4() {
        "10.9.9.9".parse().unwrap()
    } else {
        "fd00::9".parse().unwrap()
    };
    frames::ip(a, peer)
}

/// Old `old`, new `new`, both covering the address, with 4 x FILLER other
/// changes: not one run of the program may pass it.
fn block_entry_changes(side: &Side, old: &str, new: &str) {
    let mut env = Env::new();
    let frame = frame_for(side.address);
    let key = side.report;
    env.lists(&with((side.filler)(0, FILLER), old), &[]);
    let r = env.agent.sync_once(&[]);
    assert_eq!(r[key]["added"], 2 * FILLER as u64 + 1, "{r}");
    assert_eq!(env.kernel.verdict(&frame), XDP_DROP, "blocked by {old}");

    env.lists(&with((side.filler)(1, FILLER), new), &[]);
    let (r, dropped, passed) = env.sync_under_probe(&frame);
    assert_eq!(r["feeds"][0]["status"], "updated", "{r}");
    assert_eq!(r[key]["added"], 2 * FILLER as u64 + 1, "{r}");
    assert_eq!(r[key]["removed"], 2 * FILLER as u64 + 1, "{r}");
    assert!(
        dropped >= 1000,
        "the probe ran {dropped} times: too few to cover the sync"
    );
    assert_eq!(
        passed,
        0,
        "{} passed {passed} of {} runs while {old} became {new}",
        side.address,
        passed + dropped
    );
    assert_eq!(env.kernel.verdict(&frame), XDP_DROP, "blocked by {new}");
}

#[test]
fn a_block_entry_narrowed_to_the_address_never_lets_it_through() {
    block_entry_changes(&V4, "192.0.2.0/24", "192.0.2.7/32");
}

#[test]
fn a_block_entry_widened_around_the_address_never_lets_it_through() {
    block_entry_changes(&V4, "192.0.2.7/32", "192.0.2.0/24");
}

#[test]
fn an_ipv6_host_entry_widened_to_its_64_never_lets_it_through() {
    // EXACT_V6 to the table.
    block_entry_changes(&V6, "2001:db8:2::7/128", "2001:db8:2::/64");
}

#[test]
fn an_ipv6_64_narrowed_to_the_host_never_lets_it_through() {
    block_entry_changes(&V6, "2001:db8:2::/48", "2001:db8:2::7/128");
}

#[test]
fn an_ipv6_host_entry_widened_to_a_127_never_lets_it_through() {
    // EXACT_V6 to the tries (the table defers that /64).
    block_entry_changes(&V6, "2001:db8:2::7/128", "2001:db8:2::6/127");
}

#[test]
fn an_allow_entry_narrowed_to_the_address_never_blocks_it() {
    let mut env = Env::new();
    let block = vec!["192.0.0.0/16".to_owned()];
    let allow_filler = |g: u32| hosts(0xc612_0000 + g * 5_000, 5_000);
    let mut allow = allow_filler(0);
    allow.extend(hosts(0x2d00_0000, 5_000));
    env.lists(&block, &with(allow, "192.0.2.0/24"));
    let r = env.agent.sync_once(&[]);
    assert_eq!(r["v4"]["added"], 1, "{r}");
    assert_eq!(env.kernel.verdict(&frame()), XDP_PASS, "allowed by the /24");

    let mut allow = allow_filler(1);
    allow.extend(hosts(0x2d00_0000 + 5_000, 5_000));
    env.lists(&block, &with(allow, "192.0.2.7/32"));
    let (r, dropped, passed) = env.sync_under_probe(&frame());
    assert!(
        r["allow_added"].as_u64().unwrap() >= 10_001,
        "the allow entries changed: {r}"
    );
    assert!(r["allow_removed"].as_u64().unwrap() >= 10_001, "{r}");
    assert!(passed >= 1000, "the probe ran {passed} times");
    assert_eq!(
        dropped,
        0,
        "{ADDRESS} was dropped {dropped} of {} runs while its allow entry narrowed",
        passed + dropped
    );
    assert_eq!(env.kernel.verdict(&frame()), XDP_PASS, "allowed by the /32");
}
