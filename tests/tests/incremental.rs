//! `run`'s delta syncs checked against the full merge: two overlapping
//! feeds change at random (prefixes both list, a prefix one drops while
//! the other keeps it, too-broad entries, entries inside an allow range,
//! a hand-made entry a feed also lists, IPv4 and IPv6), and after every
//! change the kernel must end where a full merge puts it: a `sync --once
//! --dry-run` (which always takes the full path) finds nothing to change.
//! The log shows that `run` really took the delta path.

use std::{
    fmt::Write as _,
    process::Stdio,
    time::{Duration, Instant},
};

use blocklist_tests::{agent::Agent, bpffs::Bpffs, lab::Netns, require_root};
use rand::{Rng, SeedableRng, rngs::StdRng};

const ROUNDS: usize = 12;

fn universe() -> Vec<String> {
    let mut u = Vec::new();
    for third in 0..12u32 {
        for host in 0..20u32 {
            u.push(format!("10.99.{third}.{host}"));
        }
        u.push(format!("10.99.{third}.128/25"));
    }
    for i in 0..40u32 {
        u.push(format!("fd00:99::{i:x}"));
    }
    u.push("fd00:99:1::/48".into());
    // Broader than the minimum /8: always refused.
    u.push("10.0.0.0/7".into());
    u
}

#[test]
fn delta_syncs_end_where_a_full_merge_does() {
    require_root();
    let ns = Netns::new("xbi");
    let fs = Bpffs::new();
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.txt"), dir.path().join("b.txt"));
    let cfg = dir.path().join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "lock_timeout = \"10s\"\n[allow]\ncidrs = [\"10.99.8.0/24\", \"fd00:99::10/124\"]\n\
             [[feed]]\nname = \"a\"\nallow_reserved = true\nurl = \"{}\"\ninterval = \"1s\"\n\
             [[feed]]\nname = \"b\"\nallow_reserved = true\nurl = \"{}\"\ninterval = \"1s\"\n",
            a.display(),
            b.display()
        ),
    )
    .unwrap();
    let agent = Agent::new(ns.name(), fs.pin_dir(), dir.path().join("state")).with_config(cfg);
    let u = universe();
    let mut rng = StdRng::seed_from_u64(0xde17a);
    let pick = |rng: &mut StdRng| -> String {
        let mut s = String::new();
        for p in &u {
            if rng.random_bool(0.5) {
                let _ = writeln!(s, "{p}");
            }
        }
        s
    };
    std::fs::write(&a, pick(&mut rng)).unwrap();
    std::fs::write(&b, pick(&mut rng)).unwrap();
    // A hand-made entry that the feeds list now and then: it must stay.
    agent.run(&["block", "10.99.3.3"]);

    let log = dir.path().join("run.log");
    let child = Running(
        agent
            .command(&["--log-format", "json", "run"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let converged = |what: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let r = agent.run(&["sync", "--once", "--dry-run", "--json"]).json();
            let zero = |f: &str| r[f]["added"] == 0 && r[f]["removed"] == 0;
            if zero("v4") && zero("v6") && r["allow_added"] == 0 && r["allow_removed"] == 0 {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "{what}: the kernel did not reach the full merge's state within 30 s: {r}\nrun log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    converged("the first sync");
    for round in 0..ROUNDS {
        // Change one feed or both.
        let which = rng.random_range(0..3);
        if which != 1 {
            std::fs::write(&a, pick(&mut rng)).unwrap();
        }
        if which != 0 {
            std::fs::write(&b, pick(&mut rng)).unwrap();
        }
        converged(&format!("round {round}"));
        let c = agent.run(&["check", "10.99.3.3", "--json"]).json();
        assert_eq!(c["block"]["manual"], true, "round {round}: {c}");
    }
    drop(child);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let deltas = text
        .lines()
        .filter(|l| l.contains("sync done") && l.contains("Delta"))
        .count();
    assert!(
        deltas >= ROUNDS / 2,
        "run took the delta path {deltas} times in {ROUNDS} rounds:\n{text}"
    );
}

/// `run`, killed when the test ends (or fails).
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
