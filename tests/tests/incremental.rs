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
    let child = Running::start(&agent, &log);
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

impl Running {
    /// `run` with a JSON log at `log` (the sync reports the tests read).
    fn start(agent: &Agent, log: &std::path::Path) -> Self {
        Self(
            agent
                .command(&["--log-format", "json", "run"])
                .env("RUST_LOG", "info")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(log).unwrap())
                .spawn()
                .unwrap(),
        )
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A reload keeps what `run` knows of the feeds' lists but not what it
/// computed from the old configuration: a feed that turns into a monitor
/// feed while its list stays the same has its entries rewritten by the
/// sync that follows the SIGHUP, a full one.
#[test]
fn a_reload_rewrites_what_the_new_configuration_changes() {
    require_root();
    let ns = Netns::new("xbir");
    let fs = Bpffs::new();
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.txt"), dir.path().join("b.txt"));
    std::fs::write(&a, "10.99.0.1\n10.99.1.0/24\n").unwrap();
    std::fs::write(&b, "10.99.2.2\n").unwrap();
    let cfg = dir.path().join("config.toml");
    let write_config = |action: &str| {
        std::fs::write(
            &cfg,
            format!(
                "lock_timeout = \"10s\"\n\
                 [[feed]]\nname = \"a\"\nallow_reserved = true\nurl = \"{}\"\ninterval = \"1s\"\naction = \"{action}\"\n\
                 [[feed]]\nname = \"b\"\nallow_reserved = true\nurl = \"{}\"\ninterval = \"1s\"\n",
                a.display(),
                b.display()
            ),
        )
        .unwrap();
    };
    write_config("drop");
    let agent =
        Agent::new(ns.name(), fs.pin_dir(), dir.path().join("state")).with_config(cfg.clone());
    let log = dir.path().join("run.log");
    let child = Running::start(&agent, &log);
    // "none" until `run` has pinned its maps, or when nothing lists it.
    let action_of = |addr: &str| {
        let r = agent.try_run(&["check", addr, "--json"]);
        if r.code != 0 {
            return "none".to_owned();
        }
        r.json()["block"]["action"]
            .as_str()
            .unwrap_or("none")
            .to_owned()
    };
    let wait_for = |what: &str, f: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !f() {
            assert!(
                Instant::now() < deadline,
                "{what} within 30 s; run log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    wait_for("the first sync", &|| action_of("10.99.1.7") == "drop");
    let syncs = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("sync done"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    // At least one interval sync of the unchanged lists, so the memo holds
    // a base the reload could wrongly trust.
    wait_for("an interval sync", &|| syncs().len() >= 2);
    let before = syncs().len();
    write_config("monitor");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.0.id() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    wait_for("the reloaded action", &|| {
        action_of("10.99.0.1") == "monitor" && action_of("10.99.1.7") == "monitor"
    });
    assert_eq!(action_of("10.99.2.2"), "drop", "feed b is unchanged");
    let after = syncs();
    let first = after.get(before).expect("a sync after the reload");
    assert!(
        first.contains("Full"),
        "the sync after a reload takes the full path: {first}"
    );
    let r = agent.run(&["sync", "--once", "--dry-run", "--json"]).json();
    assert_eq!(
        (&r["v4"]["added"], &r["v4"]["removed"]),
        (&serde_json::Value::from(0), &serde_json::Value::from(0)),
        "the kernel is where a full merge puts it: {r}"
    );
}
