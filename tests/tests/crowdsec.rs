//! CrowdSec end to end: the agent's `run` as a bouncer of a real Local API
//! (Debian's crowdsec, started by the test on the filter's loopback with
//! its own database), decisions added and deleted with the real `cscli`,
//! and real traffic from the client namespace showing each change: single
//! addresses and ranges, IPv4 and IPv6, two decisions on one address, a
//! non-ban type, a short ban that expires while the Local API is down, an
//! agent restart that keeps the bans, and the outage in `status` and
//! `/metrics`.

use std::{
    process::{Child, Stdio},
    time::Duration,
};

use blocklist_tests::{
    agent::{Agent, terminate},
    bpffs::Bpffs,
    crowdsec::Lapi,
    lab::{Lab, addr::*},
    require_root,
    traffic::ping,
};

/// The lab, the Local API in the filter namespace, and `run` polling it.
struct Env {
    lapi: Lapi,
    agent: Agent,
    lab: Lab,
    metrics_port: u16,
    child: Option<Child>,
    _fs: Bpffs,
    _dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        require_root();
        let lab = Lab::new();
        let fs = Bpffs::new();
        let dir = tempfile::tempdir().unwrap();
        let lapi = Lapi::start_in(&lab.filter);
        let key = dir.path().join("bouncer.key");
        std::fs::write(&key, format!("{}\n", lapi.key())).unwrap();
        let metrics_port = lab.filter.free_port();
        let cfg = dir.path().join("config.toml");
        std::fs::write(
            &cfg,
            format!(
                "lock_timeout = \"2s\"\n\
                 [fetch]\nconnect_timeout = \"1s\"\ntimeout = \"2s\"\nattempts = 1\n\
                 [metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n\
                 [[feed]]\nname = \"crowdsec\"\nallow_reserved = true\nformat = \"crowdsec\"\nurl = \"{}\"\n\
                 api_key_file = \"{}\"\ninterval = \"1s\"\n",
                lapi.url(),
                key.display()
            ),
        )
        .unwrap();
        let agent =
            Agent::new(lab.filter.name(), fs.pin_dir(), dir.path().join("state")).with_config(cfg);
        agent.run(&["attach", "--iface", &lab.filter_if]);
        lab.wait_settled();
        let mut env = Self {
            lapi,
            agent,
            lab,
            metrics_port,
            child: None,
            _fs: fs,
            _dir: dir,
        };
        env.start_agent();
        env
    }

    fn start_agent(&mut self) {
        let child = self
            .agent
            .command(&["run"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    fn stop_agent(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let status = terminate(&mut child, Duration::from_secs(15));
        assert!(status.success(), "run exited with {status}");
    }

    /// True when pings from `src` to the filter all go unanswered.
    fn dropped(&self, src: &str) -> bool {
        let dst = if src.contains(':') { FILTER6 } else { FILTER4 };
        ping(&self.lab.client, Some(src), dst, 3) == 0
    }

    /// True when pings from `src` to the filter all come back.
    fn passes(&self, src: &str) -> bool {
        let dst = if src.contains(':') { FILTER6 } else { FILTER4 };
        ping(&self.lab.client, Some(src), dst, 3) == 3
    }

    /// Waits (bounded) until `f` holds, returning how long it took.
    fn wait_for(&self, what: &str, limit: Duration, f: impl Fn() -> bool) -> Duration {
        blocklist_tests::wait_for(what, limit, f, || {
            format!(
                "status: {}\nLocal API log: {}",
                self.agent.try_run(&["status", "--json"]).stdout,
                self.lapi.log()
            )
        })
    }

    fn metrics(&self) -> String {
        let url = format!("http://127.0.0.1:{}/metrics", self.metrics_port);
        self.lab.filter.enter(move || {
            reqwest::blocking::get(&url)
                .and_then(|r| r.text())
                .unwrap_or_default()
        })
    }

    fn metric(&self, line_prefix: &str) -> Option<f64> {
        self.metrics()
            .lines()
            .find(|l| l.starts_with(line_prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    fn feed_status(&self) -> serde_json::Value {
        let st = self.agent.run(&["status", "--json"]).json();
        st["feeds"]
            .as_array()
            .and_then(|f| f.iter().find(|f| f["name"] == "crowdsec").cloned())
            .unwrap_or_else(|| panic!("no crowdsec feed in status: {st}"))
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = self
            .agent
            .try_run(&["detach", "--iface", &self.lab.filter_if]);
    }
}

const POLL: Duration = Duration::from_secs(20);

#[test]
fn decisions_block_and_unblock_through_the_local_api() {
    let mut env = Env::new();
    assert!(env.passes(CLIENT4) && env.passes(CLIENT4_B) && env.passes(CLIENT6));

    // A single IPv4 address.
    env.lapi.add(CLIENT4, "1h", "ban");
    let took = env.wait_for("the first ban to drop traffic", POLL, || {
        env.dropped(CLIENT4)
    });
    eprintln!("cscli decisions add -> dropped: {took:?}");
    assert!(env.passes(CLIENT4_B), "only the banned address is dropped");

    // Two decisions on one address: it stays blocked until both are gone.
    env.lapi.add(CLIENT4, "2h", "ban");
    let ids = env.lapi.ids(CLIENT4);
    assert_eq!(ids.len(), 2, "two decisions on {CLIENT4}: {ids:?}");
    env.lapi.delete_id(ids[1]);
    // A non-ban decision and an IPv6 range, together: once the range is
    // dropped, the poll that carried it has seen the captcha (and the
    // deletion before it) too.
    env.lapi.add(CLIENT4_B, "1h", "captcha");
    env.lapi.add(&format!("{CLIENT6}/127"), "1h", "ban");
    env.wait_for("the IPv6 range ban", POLL, || env.dropped(CLIENT6));
    assert!(
        env.dropped(CLIENT4),
        "one of two decisions deleted: still blocked"
    );
    assert!(env.passes(CLIENT4_B), "a captcha decision does not block");
    let ignored = env.feed_status()["ignored"].as_u64().unwrap_or(0);
    assert!(
        ignored >= 1,
        "the captcha is counted as ignored: {}",
        env.feed_status()
    );
    env.lapi.delete_id(ids[0]);
    env.wait_for("the last decision's deletion", POLL, || env.passes(CLIENT4));

    // An IPv4 range with a short ban, expiring while the Local API is down:
    // the agent enforces the expiry itself and keeps everything else.
    env.lapi.add("10.77.1.2/31", "10s", "ban");
    env.wait_for("the IPv4 range ban", POLL, || {
        env.dropped(CLIENT4) && env.dropped(CLIENT4_B)
    });
    let c = env.agent.run(&["check", CLIENT4_B, "--json"]).json();
    assert_eq!(c["blocked"], true, "{c}");
    assert!(
        c.to_string().contains("crowdsec") && c.to_string().contains("cscli"),
        "check names the feed and the decision's origin: {c}\nstate: {:?}",
        std::fs::read_dir(env.agent.state_dir().join("feeds")).map(|d| d
            .flatten()
            .map(|e| (
                e.file_name(),
                std::fs::read_to_string(e.path()).unwrap_or_default()
            ))
            .collect::<Vec<_>>())
    );
    env.lapi.stop();
    env.wait_for(
        "the short ban to expire without the Local API",
        Duration::from_secs(30),
        || env.passes(CLIENT4) && env.passes(CLIENT4_B),
    );
    assert!(
        env.dropped(CLIENT6),
        "the Local API is down: the 1h ban stays"
    );
    env.wait_for("the outage in status", POLL, || {
        env.feed_status()["last_error"].is_string()
    });
    let failures = env
        .metric("xdp_blocklist_feed_failures_total{feed=\"crowdsec\"}")
        .unwrap_or(0.0);
    assert!(
        failures >= 1.0,
        "feed_failures in /metrics: {}",
        env.metrics()
    );
    let dropped_cscli = env
        .metric("xdp_blocklist_crowdsec_blocked_packets_total{feed=\"crowdsec\",origin=\"cscli\"}")
        .unwrap_or(0.0);
    assert!(
        dropped_cscli >= 3.0,
        "drops counted per origin: {}",
        env.metrics()
    );

    // An agent restart with the Local API still down keeps the bans.
    env.stop_agent();
    env.start_agent();
    std::thread::sleep(Duration::from_secs(3));
    assert!(env.dropped(CLIENT6), "the ban survived the restart");
    let c = env.agent.run(&["check", CLIENT6, "--json"]).json();
    assert_eq!(c["blocked"], true, "{c}");

    // The Local API comes back: new decisions flow again.
    env.lapi.resume();
    env.lapi.add(CLIENT4_B, "1h", "ban");
    env.wait_for("a ban after the Local API came back", POLL, || {
        env.dropped(CLIENT4_B)
    });
    assert!(env.dropped(CLIENT6));
    assert!(env.passes(CLIENT4));
    env.wait_for("the recovery in status", POLL, || {
        env.feed_status()["last_error"].is_null()
    });
    env.stop_agent();
    assert!(
        env.dropped(CLIENT4_B),
        "stopping the agent leaves the decisions installed"
    );
}
