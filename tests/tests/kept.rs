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
    net::Ipv4Addr,
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
                "[guard]\nmax_shrink = 1.0\n[[feed]]\nname = \"f\"\nurl = \"{}\"\n[allow]\ncidrs = [{}]\n",
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
            let report = agent.run(&["sync", "--once", "--json"]).json();
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
    frames::ipv4(ADDRESS.parse().unwrap(), "10.9.9.9".parse().unwrap())
}

/// Old `old`, new `new`, both covering the address, with 4 x FILLER other
/// changes: not one run of the program may pass it.
fn block_entry_changes(old: &str, new: &str) {
    let mut env = Env::new();
    env.lists(&with(filler(0, FILLER), old), &[]);
    let r = env.agent.run(&["sync", "--once", "--json"]).json();
    assert_eq!(r["v4"]["added"], 2 * FILLER as u64 + 1, "{r}");
    assert_eq!(env.kernel.verdict(&frame()), XDP_DROP, "blocked by {old}");

    env.lists(&with(filler(1, FILLER), new), &[]);
    let (r, dropped, passed) = env.sync_under_probe(&frame());
    assert_eq!(r["feeds"][0]["status"], "updated", "{r}");
    assert_eq!(r["v4"]["added"], 2 * FILLER as u64 + 1, "{r}");
    assert_eq!(r["v4"]["removed"], 2 * FILLER as u64 + 1, "{r}");
    assert!(
        dropped >= 1000,
        "the probe ran {dropped} times: too few to cover the sync"
    );
    assert_eq!(
        passed,
        0,
        "{ADDRESS} passed {passed} of {} runs while {old} became {new}",
        passed + dropped
    );
    assert_eq!(env.kernel.verdict(&frame()), XDP_DROP, "blocked by {new}");
}

#[test]
fn a_block_entry_narrowed_to_the_address_never_lets_it_through() {
    block_entry_changes("192.0.2.0/24", "192.0.2.7/32");
}

#[test]
fn a_block_entry_widened_around_the_address_never_lets_it_through() {
    block_entry_changes("192.0.2.7/32", "192.0.2.0/24");
}

#[test]
fn an_allow_entry_narrowed_to_the_address_never_blocks_it() {
    let mut env = Env::new();
    let block = vec!["192.0.0.0/16".to_owned()];
    let allow_filler = |g: u32| hosts(0xc612_0000 + g * 5_000, 5_000);
    let mut allow = allow_filler(0);
    allow.extend(hosts(0x2d00_0000, 5_000));
    env.lists(&block, &with(allow, "192.0.2.0/24"));
    let r = env.agent.run(&["sync", "--once", "--json"]).json();
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
