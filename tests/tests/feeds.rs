//! Feeds and sync end to end: feeds served over real HTTP by the test
//! (status codes, 304, slow, truncated, 429 with Retry-After), a TAXII 2.1
//! collection served by medallion, the shrink guard, restarts, the `run`
//! daemon with SIGHUP and SIGTERM, the writer lock, and traffic that shows
//! a kept address stays dropped while 10,000 other entries change.

use std::{
    fmt::Write as _,
    path::PathBuf,
    time::{Duration, Instant},
};

use blocklist_tests::{
    addresses,
    agent::Agent,
    bpffs::Bpffs,
    feed_server::{FeedServer, Reply},
    lab::{Lab, addr::*},
    require_root,
    taxii_server::{self, TaxiiServer, indicator},
    tls_server::{TlsServer, Trust},
    traffic::{ping, udp},
};
use serde_json::{Value, json};

/// A lab, the agent attached to the filter, and a config file.
struct Env {
    agent: Agent,
    lab: Lab,
    _fs: Bpffs,
    dir: tempfile::TempDir,
}

impl Env {
    fn new(config: &str) -> Self {
        require_root();
        let lab = Lab::new();
        let fs = Bpffs::new();
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("config.toml");
        std::fs::write(&cfg, config).unwrap();
        let agent =
            Agent::new(lab.filter.name(), fs.pin_dir(), dir.path().join("state")).with_config(cfg);
        agent.run(&["attach", "--iface", &lab.filter_if]);
        lab.wait_settled();
        Self {
            agent,
            lab,
            _fs: fs,
            dir,
        }
    }

    fn rewrite_config(&self, config: &str) {
        std::fs::write(self.dir.path().join("config.toml"), config).unwrap();
    }

    fn sync(&self, extra: &[&str]) -> Value {
        self.agent.sync_once(extra)
    }

    fn blocked(&self, ip: &str) -> bool {
        self.agent.run(&["check", ip, "--json"]).json()["blocked"] == true
    }

    fn entries_v4(&self) -> u64 {
        self.agent.run(&["status", "--json"]).json()["tries"][0]["entries"]
            .as_u64()
            .unwrap()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = self
            .agent
            .try_run(&["detach", "--iface", &self.lab.filter_if]);
    }
}

/// Fast retries and timeouts so failure cases finish quickly.
const FAST_FETCH: &str = r#"
lock_timeout = "2s"
[fetch]
connect_timeout = "1s"
timeout = "2s"
attempts = 3
backoff = "100ms"
max_retry_after = "5s"
"#;

fn config_with_feed(url: &str) -> String {
    format!("{FAST_FETCH}\n[[feed]]\nname = \"list\"\nallow_reserved = true\nurl = \"{url}\"\n")
}

fn feed_status(report: &Value, name: &str) -> String {
    report["feeds"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == name)
        .map(|f| f["status"].as_str().unwrap().to_owned())
        .unwrap_or_default()
}

#[test]
fn http_feed_installs_then_costs_a_304() {
    let env = Env::new("");
    let server = FeedServer::start_in(&env.lab.filter);
    let body = format!(
        "# test feed\r\n{CLIENT4}  ; the client\r\n\u{feff}not-an-ip\r\n192.0.2.0/24 # docs\r\n2001:db8:bad::/48\r\n"
    );
    server.set("/list.txt", vec![Reply::tagged(body, "\"v1\"")]);
    env.rewrite_config(&config_with_feed(&server.url("/list.txt")));

    let r = env.sync(&[]);
    assert_eq!(feed_status(&r, "list"), "updated", "{r}");
    assert_eq!(r["feeds"][0]["entries"], 3);
    assert_eq!(r["feeds"][0]["rejected"], 1);
    assert_eq!(r["v4"]["added"], 2);
    assert_eq!(r["v6"]["added"], 1);
    assert!(env.blocked(CLIENT4));
    assert_eq!(
        ping(&env.lab.client, Some(CLIENT4), FILTER4, 3),
        0,
        "listed client dropped"
    );
    assert_eq!(
        ping(&env.lab.client, Some(CLIENT4_B), FILTER4, 3),
        3,
        "unlisted passes"
    );
    let check = env.agent.run(&["check", CLIENT4, "--json"]).json();
    assert_eq!(check["block"]["feeds"][0]["feed"], "list");

    // Unchanged: the agent sends the ETag, the server answers 304, nothing is written.
    let r = env.sync(&[]);
    assert_eq!(feed_status(&r, "list"), "unchanged", "{r}");
    assert_eq!(r["v4"], json!({"added": 0, "removed": 0, "unchanged": 2}));
    assert_eq!(r["apply_seconds"], 0.0, "{r}");
    let reqs = server.requests("/list.txt");
    assert_eq!(reqs.len(), 2);
    assert_eq!(
        reqs[1].headers.get("if-none-match").map(String::as_str),
        Some("\"v1\"")
    );
    assert_eq!(reqs[1].status, 304);

    // `list` names the feed for each entry.
    let list = env.agent.run(&["list", "--json"]).json();
    assert_eq!(list.as_array().unwrap().len(), 3);
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .all(|e| e["feeds"][0]["feed"] == "list")
    );
}

#[test]
fn failing_feeds_keep_their_last_good_entries() {
    let env = Env::new("");
    let server = FeedServer::start_in(&env.lab.filter);
    let good = format!("{CLIENT4}\n192.0.2.1\n192.0.2.2\n192.0.2.3\n");
    server.set("/f.txt", vec![Reply::body(good.clone())]);
    env.rewrite_config(&config_with_feed(&server.url("/f.txt")));
    assert_eq!(feed_status(&env.sync(&[]), "list"), "updated");
    assert_eq!(env.entries_v4(), 4);

    // (case, replies, status, what the reason says)
    let cases: Vec<(&str, Vec<Reply>, &str, &str)> = vec![
        ("HTTP 500", vec![Reply::Status(500)], "failed", "HTTP 500"),
        ("HTTP 404", vec![Reply::Status(404)], "failed", "HTTP 404"),
        (
            "truncated body",
            vec![Reply::Truncated {
                body: b"192.0.2.9\n".to_vec(),
                declared: 5000,
            }],
            "failed",
            "body truncated",
        ),
        (
            "slower than the timeout",
            vec![Reply::Slow {
                body: b"192.0.2.9\n".to_vec(),
                delay: Duration::from_secs(3),
            }],
            "failed",
            "timed out",
        ),
        (
            "nothing parseable",
            vec![Reply::body("<html>maintenance</html>\n")],
            "refused",
            "no usable entry (1 rejected)",
        ),
        (
            "empty body",
            vec![Reply::body("")],
            "refused",
            "no usable entry (0 rejected)",
        ),
    ];
    for (what, replies, want, reason) in cases {
        server.set("/f.txt", replies);
        let r = env.sync(&[]);
        assert_eq!(feed_status(&r, "list"), want, "{what}: {r}");
        let why = r["feeds"][0]["reason"].as_str().unwrap_or_default();
        assert!(
            why.contains(reason),
            "{what}: reason {why:?} lacks {reason:?}"
        );
        assert_eq!(r["v4"]["removed"], 0, "{what}: nothing removed");
        assert_eq!(
            env.entries_v4(),
            4,
            "{what}: the last good list keeps protecting"
        );
        assert!(env.blocked(CLIENT4), "{what}");
    }
    let state: Value = serde_json::from_slice(
        &std::fs::read(env.agent.state_dir().join("feeds/list.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(state["failures"], 4, "{state}");
    assert!(
        state["last_error"].is_null(),
        "the last case was a refusal, not a failure"
    );
    assert_eq!(state["refusals"], 2, "{state}");
}

#[test]
fn retry_after_is_honoured_and_then_the_feed_succeeds() {
    let env = Env::new("");
    let server = FeedServer::start_in(&env.lab.filter);
    server.set(
        "/f.txt",
        vec![
            Reply::RetryAfter(429, 1),
            Reply::RetryAfter(503, 1),
            Reply::body(format!("{CLIENT4}\n")),
        ],
    );
    env.rewrite_config(&config_with_feed(&server.url("/f.txt")));
    let started = Instant::now();
    let r = env.sync(&[]);
    assert_eq!(feed_status(&r, "list"), "updated", "{r}");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "waited for Retry-After twice"
    );
    assert_eq!(server.requests("/f.txt").len(), 3);
    assert!(env.blocked(CLIENT4));
}

#[test]
fn the_guard_refuses_a_shrinking_or_empty_feed_until_forced() {
    let env = Env::new("");
    let server = FeedServer::start_in(&env.lab.filter);
    server.set("/f.txt", vec![Reply::body(addresses(0, 100))]);
    env.rewrite_config(&config_with_feed(&server.url("/f.txt")));
    env.sync(&[]);
    assert_eq!(env.entries_v4(), 100);

    // 100 -> 30 is a 70% shrink, over the default 50%.
    server.set("/f.txt", vec![Reply::body(addresses(0, 30))]);
    let r = env.sync(&[]);
    assert_eq!(feed_status(&r, "list"), "refused", "{r}");
    assert!(
        r["feeds"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("shrank from 100 to 30")
    );
    assert_eq!(env.entries_v4(), 100);
    let status = env.agent.run(&["status", "--json"]).json();
    assert!(
        status.to_string().contains("shrank"),
        "status shows the refusal: {status}"
    );

    // --force accepts it once.
    let r = env.sync(&["--force"]);
    assert_eq!(feed_status(&r, "list"), "updated", "{r}");
    assert_eq!(r["v4"]["removed"], 70);
    assert_eq!(env.entries_v4(), 30);

    // 30 -> 20 is within the limit.
    server.set("/f.txt", vec![Reply::body(addresses(0, 20))]);
    assert_eq!(feed_status(&env.sync(&[]), "list"), "updated");
    assert_eq!(env.entries_v4(), 20);
}

#[test]
fn a_restart_between_syncs_reapplies_nothing() {
    let env = Env::new("");
    let server = FeedServer::start_in(&env.lab.filter);
    server.set("/f.txt", vec![Reply::body(addresses(0, 500))]);
    env.rewrite_config(&config_with_feed(&server.url("/f.txt")));
    let r = env.sync(&[]);
    assert_eq!(r["v4"]["added"], 500);
    // A new process (every CLI call is one) reads what is installed.
    let r = env.sync(&[]);
    assert_eq!(r["v4"], json!({"added": 0, "removed": 0, "unchanged": 500}));
    // Even with the state directory's validators gone, the kernel is the truth.
    std::fs::remove_file(env.agent.state_dir().join("feeds/list.json")).unwrap();
    let r = env.sync(&[]);
    assert_eq!(r["v4"], json!({"added": 0, "removed": 0, "unchanged": 500}));
    // A dry run reports and changes nothing.
    server.set("/f.txt", vec![Reply::body(addresses(250, 500))]);
    let r = env.sync(&["--dry-run"]);
    assert_eq!(
        r["v4"],
        json!({"added": 250, "removed": 250, "unchanged": 250})
    );
    assert_eq!(r["dry_run"], true);
    let r = env.sync(&[]);
    assert_eq!(
        r["v4"],
        json!({"added": 250, "removed": 250, "unchanged": 250})
    );
}

#[test]
fn manual_entries_survive_syncs_and_allow_ranges_win() {
    let env = Env::new("");
    let server = FeedServer::start_in(&env.lab.filter);
    server.set(
        "/f.txt",
        vec![Reply::body(format!("192.0.2.0/24\n{CLIENT4_B}\n"))],
    );
    env.rewrite_config(&format!(
        "{}\n[allow]\ncidrs = [\"{CLIENT4_B}/32\"]\n",
        config_with_feed(&server.url("/f.txt"))
    ));
    env.agent.run(&["block", CLIENT4]);
    env.sync(&[]);
    assert!(env.blocked(CLIENT4), "manual entry kept by the sync");
    assert!(env.blocked("192.0.2.7"));
    assert!(!env.blocked(CLIENT4_B), "configured allow wins");
    // The filter's own address is protected by an allow entry.
    let c = env.agent.run(&["check", FILTER4, "--json"]).json();
    assert_eq!(c["allow"]["prefix"], format!("{FILTER4}/32"), "{c}");
    // Expiring manual entries.
    env.agent.run(&["block", "203.0.113.5", "--for", "1s"]);
    assert!(env.blocked("203.0.113.5"));
    std::thread::sleep(Duration::from_millis(1500));
    env.sync(&[]);
    assert!(!env.blocked("203.0.113.5"), "expired entry removed");
    assert!(env.blocked(CLIENT4));
}

#[test]
fn a_kept_address_stays_dropped_while_10000_entries_change() {
    let env = Env::new("");
    let dir = env.dir.path().to_owned();
    let feed = dir.join("feed.txt");
    let write = |start: u32| {
        std::fs::write(&feed, format!("{CLIENT4}\n{}", addresses(start, 10_000))).unwrap()
    };
    write(0);
    env.rewrite_config(&format!(
        "{FAST_FETCH}\n[[feed]]\nname = \"big\"\nallow_reserved = true\nurl = \"{}\"\n",
        feed.display()
    ));
    let r = env.sync(&[]);
    assert_eq!(r["v4"]["added"], 10_001);
    write(20_000);

    // Traffic from the kept address runs before, during and after a sync
    // that adds 10,000 entries and removes 10,000 others.
    let sent = 4000;
    let received = std::thread::scope(|s| {
        let traffic = s.spawn(|| udp(&env.lab.client, CLIENT4, &env.lab.filter, FILTER4, sent, 64));
        std::thread::sleep(Duration::from_millis(150));
        let r = env.sync(&[]);
        assert_eq!(r["v4"]["added"], 10_000, "{r}");
        assert_eq!(r["v4"]["removed"], 10_000);
        assert_eq!(r["v4"]["unchanged"], 1);
        traffic.join().unwrap()
    });
    assert_eq!(
        received, 0,
        "no packet from the kept address got through during the sync"
    );
    let c = env.agent.run(&["check", CLIENT4, "--json"]).json();
    assert_eq!(
        c["block"]["packets"], sent,
        "every datagram was counted as dropped"
    );
}

fn taxii_config(server: &TaxiiServer, url: &str) -> String {
    let _ = server;
    format!(
        "{FAST_FETCH}\n[[feed]]\nname = \"partner\"\nallow_reserved = true\nurl = \"{url}\"\nformat = \"taxii\"\nusername = \"{}\"\npassword_env = \"PARTNER_TAXII_PASSWORD\"\n",
        taxii_server::USER
    )
}

#[test]
fn taxii_collection_with_added_revoked_and_expired_indicators() {
    let env = Env::new("");
    let taxii = TaxiiServer::start_in(&env.lab.filter);
    let ns = &env.lab.filter;
    taxii.add(
        ns,
        vec![
            indicator("11111111-1111-4111-8111-111111111111", "2026-01-01T00:00:00.000Z", &format!("[ipv4-addr:value = '{CLIENT4}']"), json!({})),
            indicator("22222222-2222-4222-8222-222222222222", "2026-01-01T00:00:00.000Z", "[ipv4-addr:value ISSUBSET '192.0.2.0/24']", json!({})),
            indicator("33333333-3333-4333-8333-333333333333", "2026-01-01T00:00:00.000Z", "[ipv6-addr:value = '2001:db8::66'] OR [ipv4-addr:value = '198.51.100.66']", json!({})),
            indicator("44444444-4444-4444-8444-444444444444", "2026-01-01T00:00:00.000Z", "[domain-name:value = 'evil.example']", json!({})),
            json!({"type": "malware", "spec_version": "2.1", "id": "malware--55555555-5555-4555-8555-555555555555",
                   "created": "2026-01-01T00:00:00.000Z", "modified": "2026-01-01T00:00:00.000Z", "name": "x", "is_family": false}),
        ],
    );
    // Through discovery, so the API root and collection are found.
    env.rewrite_config(&taxii_config(&taxii, &taxii.discovery_url()));
    let agent = Agent::new(
        ns.name(),
        env._fs.pin_dir(),
        env.agent.state_dir().to_owned(),
    )
    .with_config(env.dir.path().join("config.toml"))
    .with_env("PARTNER_TAXII_PASSWORD", taxii_server::PASSWORD);
    let sync = || agent.sync_once(&[]);

    let r = sync();
    assert_eq!(
        feed_status(&r, "partner"),
        "updated",
        "{r}\n{}",
        taxii.log()
    );
    assert_eq!(r["v4"]["added"], 3, "{r}");
    assert_eq!(r["v6"]["added"], 1, "{r}");
    let c = agent.run(&["check", CLIENT4, "--json"]).json();
    assert_eq!(c["blocked"], true);
    assert_eq!(c["block"]["feeds"][0]["feed"], "partner");
    assert_eq!(
        c["block"]["feeds"][0]["id"],
        "indicator--11111111-1111-4111-8111-111111111111"
    );
    assert_eq!(ping(&env.lab.client, Some(CLIENT4), FILTER4, 3), 0);
    let state: Value = serde_json::from_slice(
        &std::fs::read(agent.state_dir().join("feeds/partner.json")).unwrap(),
    )
    .unwrap();
    assert!(state["taxii_cursor"].is_string(), "cursor kept: {state}");
    assert!(
        !state.to_string().contains(taxii_server::PASSWORD),
        "no credential in state"
    );

    // Nothing new: unchanged, and the poll asked only for objects added
    // after the cursor.
    assert_eq!(feed_status(&sync(), "partner"), "unchanged");
    assert!(
        taxii.log().contains("added_after="),
        "cursor sent: {}",
        taxii.log()
    );

    // A new indicator, a revocation (a later version), and one already expired.
    taxii.add(
        ns,
        vec![
            indicator(
                "66666666-6666-4666-8666-666666666666",
                "2026-02-01T00:00:00.000Z",
                "[ipv4-addr:value = '203.0.113.77']",
                json!({}),
            ),
            indicator(
                "22222222-2222-4222-8222-222222222222",
                "2026-02-01T00:00:00.000Z",
                "[ipv4-addr:value ISSUBSET '192.0.2.0/24']",
                json!({"revoked": true}),
            ),
            indicator(
                "77777777-7777-4777-8777-777777777777",
                "2026-02-01T00:00:00.000Z",
                "[ipv4-addr:value = '203.0.113.88']",
                json!({"valid_until": "2026-01-15T00:00:00Z"}),
            ),
        ],
    );
    let r = sync();
    assert_eq!(feed_status(&r, "partner"), "updated", "{r}");
    assert_eq!(r["v4"]["added"], 1, "{r}");
    assert_eq!(r["v4"]["removed"], 1, "{r}");
    let blocked = |ip: &str| agent.run(&["check", ip, "--json"]).json()["blocked"] == true;
    assert!(blocked("203.0.113.77"), "new indicator");
    assert!(!blocked("192.0.2.9"), "revoked indicator removed");
    assert!(
        !blocked("203.0.113.88"),
        "expired indicator never installed"
    );
    assert!(blocked(CLIENT4), "untouched indicator kept");
    assert!(blocked("2001:db8::66"));

    // Wrong credentials: the feed fails, nothing is lost.
    let bad = Agent::new(ns.name(), env._fs.pin_dir(), agent.state_dir().to_owned())
        .with_config(env.dir.path().join("config.toml"))
        .with_env("PARTNER_TAXII_PASSWORD", "wrong");
    let r = bad.sync_once(&[]);
    assert_eq!(feed_status(&r, "partner"), "failed", "{r}");
    assert!(
        !r.to_string().contains("wrong"),
        "credential not echoed: {r}"
    );
    assert!(blocked(CLIENT4));
}

#[test]
fn taxii_collection_url_works_directly() {
    let env = Env::new("");
    let taxii = TaxiiServer::start_in(&env.lab.filter);
    let ids: Vec<Value> = (0..5)
        .map(|i| {
            indicator(
                &format!("aaaaaaaa-aaaa-4aaa-8aaa-00000000000{i}"),
                "2026-01-01T00:00:00.000Z",
                &format!("[ipv4-addr:value = '198.51.100.{}']", 10 + i),
                json!({}),
            )
        })
        .collect();
    taxii.add(&env.lab.filter, ids);
    env.rewrite_config(&taxii_config(&taxii, &taxii.collection_url()));
    let agent = Agent::new(
        env.lab.filter.name(),
        env._fs.pin_dir(),
        env.agent.state_dir().to_owned(),
    )
    .with_config(env.dir.path().join("config.toml"))
    .with_env("PARTNER_TAXII_PASSWORD", taxii_server::PASSWORD);
    // Five objects over pages of two: paging by `next`.
    let r = agent.sync_once(&[]);
    assert_eq!(r["v4"]["added"], 5, "{r}\n{}", taxii.log());
}

#[test]
fn run_daemon_syncs_reloads_and_stops_cleanly() {
    let env = Env::new("");
    let feed = env.dir.path().join("feed.txt");
    std::fs::write(&feed, format!("{CLIENT4}\n")).unwrap();
    let second = env.dir.path().join("second.txt");
    std::fs::write(&second, "203.0.113.9\n").unwrap();
    let config = |feeds: &[(&str, &PathBuf)]| {
        let mut c = format!("sync_interval = \"1s\"\n{FAST_FETCH}\n");
        for (n, p) in feeds {
            let _ = write!(
                c,
                "[[feed]]\nname = \"{n}\"\nallow_reserved = true\nurl = \"{}\"\n",
                p.display()
            );
        }
        c
    };
    env.rewrite_config(&config(&[("one", &feed)]));
    let check = env.agent.try_run(&["run", "--check-config"]);
    assert_eq!(check.code, 0, "{}", check.stderr);
    assert!(check.stdout.contains("1 feed"), "{}", check.stdout);

    let mut child = env
        .agent
        .command(&["run"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let wait_for = |what: &str, f: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if f() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("timed out waiting for {what}");
    };
    wait_for("the first sync", &|| env.blocked(CLIENT4));
    // The feed changes; the next interval picks it up.
    std::fs::write(&feed, format!("{CLIENT4}\n192.0.2.44\n")).unwrap();
    wait_for("the interval sync", &|| env.blocked("192.0.2.44"));
    // Hand-made entries work while `run` runs (it holds the lock only
    // while it writes), and survive its syncs.
    env.agent.run(&["block", "198.51.100.200"]);
    assert!(env.blocked("198.51.100.200"));
    // A writer that cannot get the lock within lock_timeout fails clearly.
    {
        let _held =
            blocklist_agent::state::lock::acquire(env.agent.state_dir(), Duration::from_secs(5))
                .unwrap();
        let other = env.agent.try_run(&["sync", "--once"]);
        assert_eq!(other.code, 1);
        assert!(
            other.stderr.contains("another xdp-blocklist writer"),
            "{}",
            other.stderr
        );
    }
    // SIGHUP reloads the configuration: a second feed appears.
    env.rewrite_config(&config(&[("one", &feed), ("two", &second)]));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    wait_for("the reloaded feed", &|| env.blocked("203.0.113.9"));
    assert!(
        env.blocked("198.51.100.200"),
        "the hand-made entry survived the syncs"
    );
    assert!(
        env.blocked("198.51.100.200"),
        "the hand-made entry survived the syncs"
    );
    // SIGTERM stops it; the program keeps dropping.
    let status = blocklist_tests::agent::terminate(&mut child, Duration::from_secs(10));
    assert!(status.success(), "run exited with {status}");
    assert_eq!(
        ping(&env.lab.client, Some(CLIENT4), FILTER4, 3),
        0,
        "still protected after stop"
    );
}

#[test]
fn bad_config_is_reported_with_key_and_line() {
    let env = Env::new("");
    env.rewrite_config("sync_interval = \"1h\"\n[guard]\nmax_shrink = 0.5\nmin_prefx_v4 = 8\n");
    let r = env.agent.try_run(&["run", "--check-config"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("min_prefx_v4") && r.stderr.contains("line 4"),
        "{}",
        r.stderr
    );
    env.rewrite_config("[[feed]]\nname = \"x\"\nallow_reserved = true\nurl = \"https://x.example/\"\nusername = \"u\"\npassword_env = \"XDPBL_UNSET_VAR\"\n");
    let r = env.agent.try_run(&["run", "--check-config"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("XDPBL_UNSET_VAR"), "{}", r.stderr);
}

#[test]
fn sync_blocks_real_traffic_from_listed_sources() {
    let env = Env::new("");
    let feed = env.dir.path().join("spamhaus.txt");
    std::fs::write(
        &feed,
        format!("; Spamhaus DROP List\n; Last-Modified: x\n{CLIENT4}/32 ; SBL000001\nfd00:77:1::2/128 ; SBL000002\n"),
    )
    .unwrap();
    env.rewrite_config(&format!(
        "{FAST_FETCH}\n[[feed]]\nname = \"drop\"\nallow_reserved = true\nurl = \"{}\"\nformat = \"spamhaus\"\n",
        feed.display()
    ));
    let r = env.sync(&[]);
    assert_eq!(r["v4"]["added"], 1, "{r}");
    assert_eq!(r["v6"]["added"], 1, "{r}");
    assert_eq!(
        udp(&env.lab.client, CLIENT4, &env.lab.filter, FILTER4, 10, 32),
        0
    );
    assert_eq!(
        udp(&env.lab.client, CLIENT6, &env.lab.filter, FILTER6, 10, 32),
        0
    );
    assert_eq!(
        udp(&env.lab.client, CLIENT4_B, &env.lab.filter, FILTER4, 10, 32),
        10
    );
}

/// Every file under `dir` with its bytes, except the writer lock (which
/// names whichever process took it last).
fn snapshot(dir: &std::path::Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else if p.file_name().is_some_and(|n| n != "lock") {
                out.insert(
                    p.strip_prefix(dir).unwrap().to_owned(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    out
}

#[test]
fn a_dry_run_changes_neither_the_kernel_nor_the_state_directory() {
    let env = Env::new("");
    let ns = &env.lab.filter;
    let server = FeedServer::start_in(ns);
    let taxii = TaxiiServer::start_in(ns);
    server.set("/f.txt", vec![Reply::tagged(addresses(0, 100), "\"v1\"")]);
    taxii.add(
        ns,
        vec![indicator(
            "11111111-1111-4111-8111-111111111111",
            "2026-01-01T00:00:00.000Z",
            "[ipv4-addr:value = '203.0.113.1']",
            json!({}),
        )],
    );
    env.rewrite_config(&format!(
        "{}\n[[feed]]\nname = \"partner\"\nallow_reserved = true\nurl = \"{}\"\nformat = \"taxii\"\nusername = \"{}\"\npassword_env = \"PARTNER_TAXII_PASSWORD\"\n",
        config_with_feed(&server.url("/f.txt")),
        taxii.collection_url(),
        taxii_server::USER
    ));
    let agent = Agent::new(
        ns.name(),
        env._fs.pin_dir(),
        env.agent.state_dir().to_owned(),
    )
    .with_config(env.dir.path().join("config.toml"))
    .with_env("PARTNER_TAXII_PASSWORD", taxii_server::PASSWORD);
    let sync = |extra: &[&str]| agent.sync_once(extra);
    let r = sync(&[]);
    assert_eq!(feed_status(&r, "list"), "updated", "{r}");
    assert_eq!(feed_status(&r, "partner"), "updated", "{r}");
    assert_eq!(r["v4"]["added"], 101, "{r}");

    // Both feeds change: 50 addresses swapped, one indicator added.
    server.set("/f.txt", vec![Reply::tagged(addresses(50, 100), "\"v2\"")]);
    taxii.add(
        ns,
        vec![indicator(
            "22222222-2222-4222-8222-222222222222",
            "2026-02-01T00:00:00.000Z",
            "[ipv4-addr:value = '203.0.113.2']",
            json!({}),
        )],
    );
    let state_before = snapshot(agent.state_dir());
    let list_before = agent.run(&["list", "--json"]).stdout;
    let dry = sync(&["--dry-run"]);
    assert_eq!(dry["dry_run"], true);
    assert_eq!(feed_status(&dry, "list"), "updated", "{dry}");
    assert_eq!(feed_status(&dry, "partner"), "updated", "{dry}");
    assert_eq!(
        dry["v4"],
        json!({"added": 51, "removed": 50, "unchanged": 51}),
        "{dry}"
    );
    let state_after = snapshot(agent.state_dir());
    let changed: std::collections::BTreeSet<_> = state_before
        .keys()
        .chain(state_after.keys())
        .filter(|k| state_before.get(*k) != state_after.get(*k))
        .collect();
    assert!(
        changed.is_empty(),
        "the dry run wrote the state directory: {changed:?}"
    );
    assert_eq!(
        agent.run(&["list", "--json"]).stdout,
        list_before,
        "the dry run changed what is installed"
    );
    assert!(!env.blocked("203.0.113.2"));

    // The next real sync still sees both changes (the TAXII cursor did not
    // move, the HTTP validators and the list's hash were not stored).
    let r = sync(&[]);
    assert_eq!(feed_status(&r, "list"), "updated", "{r}");
    assert_eq!(feed_status(&r, "partner"), "updated", "{r}");
    assert_eq!(
        r["v4"], dry["v4"],
        "the real sync does what the dry run said"
    );
    assert!(env.blocked("203.0.113.2"), "the new indicator was not lost");
    assert!(!env.blocked(&std::net::Ipv4Addr::from(0xc612_0000u32).to_string()));
}

#[test]
fn https_with_a_private_ca_and_the_credentials_the_server_receives() {
    let env = Env::new("");
    let ns = &env.lab.filter;
    let tls_dir = env.dir.path().join("tls");
    let tls = TlsServer::start(ns, &tls_dir, Trust::TestCa);
    std::fs::write(tls_dir.join("list.txt"), format!("{CLIENT4}\n")).unwrap();
    let server = FeedServer::start_in(ns);
    server.set("/keyed", vec![Reply::body("192.0.2.1\n")]);
    server.set("/bearer", vec![Reply::body("192.0.2.2\n")]);
    std::fs::write(env.dir.path().join("token"), "Bearer file-token\n").unwrap();
    env.rewrite_config(&format!(
        "{FAST_FETCH}ca_file = \"{}\"\n\
         [[feed]]\nname = \"tls\"\nallow_reserved = true\nurl = \"{}\"\n\
         [[feed]]\nname = \"keyed\"\nallow_reserved = true\npreset = \"ismalicious-blocklist\"\nurl = \"{}\"\napi_key_env = \"XDPBL_KEY\"\napi_secret_env = \"XDPBL_SECRET\"\n\
         [[feed]]\nname = \"bearer\"\nallow_reserved = true\nurl = \"{}\"\nheaders = {{ Authorization = \"env:XDPBL_AUTH\", \"X-Extra\" = \"file:{}\" }}\n",
        tls.ca_file().display(),
        tls.url("list.txt"),
        server.url("/keyed"),
        server.url("/bearer"),
        env.dir.path().join("token").display(),
    ));
    let agent = Agent::new(
        ns.name(),
        env._fs.pin_dir(),
        env.agent.state_dir().to_owned(),
    )
    .with_config(env.dir.path().join("config.toml"))
    .with_env("XDPBL_KEY", "mykey")
    .with_env("XDPBL_SECRET", "mysecret")
    .with_env("XDPBL_AUTH", "Token env-token");
    let out = agent.run(&["sync", "--once", "--json"]);
    let r = out.json();
    for feed in ["tls", "keyed", "bearer"] {
        assert_eq!(feed_status(&r, feed), "updated", "{feed}: {r}");
    }
    assert!(env.blocked(CLIENT4), "fetched over HTTPS with the test CA");
    let keyed = server.requests("/keyed");
    assert_eq!(
        keyed[0].headers.get("x-api-key").map(String::as_str),
        // base64("mykey:mysecret")
        Some("bXlrZXk6bXlzZWNyZXQ="),
        "{:?}",
        keyed[0].headers
    );
    let bearer = server.requests("/bearer");
    assert_eq!(
        bearer[0].headers.get("authorization").map(String::as_str),
        Some("Token env-token")
    );
    assert_eq!(
        bearer[0].headers.get("x-extra").map(String::as_str),
        Some("Bearer file-token")
    );
    for secret in [
        "mysecret",
        "bXlrZXk6bXlzZWNyZXQ=",
        "env-token",
        "file-token",
    ] {
        assert!(
            !out.stdout.contains(secret) && !out.stderr.contains(secret),
            "a secret ({secret}) reached the output"
        );
        let state = snapshot(agent.state_dir());
        assert!(
            state
                .values()
                .all(|b| !String::from_utf8_lossy(b).contains(secret)),
            "a secret ({secret}) reached the state directory"
        );
    }
}

#[test]
fn validators_unchanged_bodies_and_the_retry_after_cap() {
    let env = Env::new("");
    let server = FeedServer::start_in(&env.lab.filter);
    let date = "Tue, 01 Dec 2026 10:00:00 GMT";
    server.set(
        "/dated",
        vec![Reply::Dated {
            body: format!("{CLIENT4}\n").into(),
            last_modified: date.to_owned(),
        }],
    );
    // No validators, and one line that does not parse: a parse counts it.
    server.set("/plain", vec![Reply::body("192.0.2.1\nnot-an-address\n")]);
    server.set("/limited", vec![Reply::RetryAfter(429, 60)]);
    env.rewrite_config(&format!(
        "{FAST_FETCH}\n[[feed]]\nname = \"dated\"\nallow_reserved = true\nurl = \"{}\"\n[[feed]]\nname = \"plain\"\nallow_reserved = true\nurl = \"{}\"\n",
        server.url("/dated"),
        server.url("/plain")
    ));
    let r = env.sync(&[]);
    assert_eq!(feed_status(&r, "dated"), "updated", "{r}");
    assert_eq!(feed_status(&r, "plain"), "updated", "{r}");
    let plain = |r: &Value| r["feeds"][1].clone();
    assert_eq!(plain(&r)["rejected"], 1, "the first fetch is parsed: {r}");

    let r = env.sync(&[]);
    // If-Modified-Since: the server answered 304.
    assert_eq!(feed_status(&r, "dated"), "unchanged", "{r}");
    let dated = server.requests("/dated");
    assert_eq!(
        dated[1]
            .headers
            .get("if-modified-since")
            .map(String::as_str),
        Some(date)
    );
    assert_eq!(dated[1].status, 304);
    // The same body again (200, no validators): its hash matches, so it
    // is not parsed again (a parse would count the bad line).
    assert_eq!(feed_status(&r, "plain"), "unchanged", "{r}");
    assert_eq!(server.requests("/plain")[1].status, 200);
    assert_eq!(plain(&r)["rejected"], 0, "not parsed again: {r}");
    assert_eq!(r["apply_seconds"], 0.0, "{r}");

    // Retry-After beyond [fetch] max_retry_after (5s): one request, then
    // the feed fails at once instead of sleeping a minute.
    env.rewrite_config(&format!(
        "{FAST_FETCH}\n[[feed]]\nname = \"limited\"\nallow_reserved = true\nurl = \"{}\"\n",
        server.url("/limited")
    ));
    let started = Instant::now();
    let r = env.sync(&[]);
    let took = started.elapsed();
    assert_eq!(feed_status(&r, "limited"), "failed", "{r}");
    assert!(
        r["feeds"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("HTTP 429"),
        "{r}"
    );
    assert_eq!(
        server.requests("/limited").len(),
        1,
        "no retry after a Retry-After over the cap"
    );
    assert!(
        took < Duration::from_secs(50),
        "waited {took:?}: the cap did not hold"
    );
}

/// `sync --once` tells cron what happened: 0 when the feed updated or was
/// unchanged, 3 with one line on stderr naming the feed and why when it
/// failed or its new list was refused (protection kept from its last good
/// list either way), 1 for a usage error.
#[test]
fn sync_once_exit_codes_tell_cron_when_a_feed_kept_its_last_good_list() {
    let env = Env::new("");
    let server = FeedServer::start_in(&env.lab.filter);
    server.set("/l", vec![Reply::tagged(addresses(0, 10), "\"v1\"")]);
    env.rewrite_config(&config_with_feed(&server.url("/l")));
    let sync = || env.agent.try_run(&["sync", "--once"]);

    let r = sync();
    assert_eq!(
        (r.code, r.stderr.as_str()),
        (0, ""),
        "updated: {}",
        r.stdout
    );
    let r = sync();
    assert_eq!(
        (r.code, r.stderr.as_str()),
        (0, ""),
        "unchanged: {}",
        r.stdout
    );

    server.set("/l", vec![Reply::Status(500)]);
    let r = sync();
    assert_eq!(r.code, 3, "failed: {}\n{}", r.stdout, r.stderr);
    // The log may say more above it; the last line is the summary.
    let line = r.stderr.trim().lines().last().unwrap_or_default();
    assert!(
        line.starts_with("warning: 1 of 1 feed(s)")
            && line.contains("`list`")
            && line.contains("500")
            && line.contains("last good"),
        "{}",
        r.stderr
    );
    assert!(r.stdout.contains("FAILED, kept last good"), "{}", r.stdout);
    assert_eq!(env.entries_v4(), 10, "protection kept");

    // 10 → 2 entries: the shrink guard refuses it.
    server.set("/l", vec![Reply::tagged(addresses(0, 2), "\"v2\"")]);
    let r = sync();
    assert_eq!(r.code, 3, "refused: {}\n{}", r.stdout, r.stderr);
    let line = r.stderr.trim().lines().last().unwrap_or_default();
    assert!(
        line.contains("`list`") && line.contains("shrink"),
        "{}",
        r.stderr
    );
    assert_eq!(env.entries_v4(), 10, "protection kept");
    let r = env.agent.try_run(&["sync", "--once", "--json"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert_eq!(feed_status(&r.json(), "list"), "refused");

    let r = env.agent.try_run(&["sync", "--once", "--force"]);
    assert_eq!(r.code, 0, "forced: {}\n{}", r.stdout, r.stderr);
    assert_eq!(env.entries_v4(), 2);

    assert_eq!(env.agent.try_run(&["sync"]).code, 1, "no --once");
}

/// Scored lists (IPsum) and ThreatFox's CSV served over HTTP: the cut at
/// `min_score` and `min_confidence` decides what is installed, ports come
/// off, other IOC types are skipped.
#[test]
fn scored_and_threatfox_feeds_are_cut_at_their_thresholds() {
    let env = Env::new("");
    let server = FeedServer::start_in(&env.lab.filter);
    server.set(
        "/ipsum.txt",
        vec![Reply::tagged(
            format!(
                "# IPsum\n# IP\tnumber of (black)lists\n{CLIENT4}\t7\n{CLIENT4_B}\t2\n\
                 192.0.2.50\t9\n192.0.2.51\t9\n"
            ),
            "\"i1\"",
        )],
    );
    server.set(
        "/threatfox.csv",
        vec![Reply::tagged(
            format!(
                "# \"first_seen_utc\",\"ioc_id\",\"ioc_value\",\"ioc_type\",\"confidence_level\"\n\
                 \"2026-11-30 21:05:12\", \"1\", \"{SERVER4}:443\", \"ip:port\", \"90\"\n\
                 \"2026-11-30 21:05:13\", \"2\", \"[{SERVER6}]:8443\", \"ip:port\", \"40\"\n\
                 \"2026-11-30 21:05:14\", \"3\", \"c2.example.net\", \"domain\", \"100\"\n"
            ),
            "\"t1\"",
        )],
    );
    env.rewrite_config(&format!(
        "{FAST_FETCH}\n[[feed]]\nname = \"ipsum\"\nallow_reserved = true\nurl = \"{}\"\nformat = \"scored\"\nmin_score = 3\n\
         [[feed]]\nname = \"threatfox\"\nallow_reserved = true\nurl = \"{}\"\nformat = \"threatfox\"\nmin_confidence = 75\n",
        server.url("/ipsum.txt"),
        server.url("/threatfox.csv")
    ));
    let r = env.sync(&[]);
    assert_eq!(feed_status(&r, "ipsum"), "updated", "{r}");
    assert_eq!(feed_status(&r, "threatfox"), "updated", "{r}");
    assert!(env.blocked(CLIENT4), "score 7 >= 3");
    assert!(!env.blocked(CLIENT4_B), "score 2 < 3");
    assert!(env.blocked(SERVER4), "confidence 90 >= 75");
    assert!(!env.blocked(SERVER6), "confidence 40 < 75");
    assert_eq!(
        udp(&env.lab.client, CLIENT4, &env.lab.filter, FILTER4, 5, 64),
        0,
        "the scored address is dropped"
    );

    // A stricter cut on the same body (the server would answer 304 to its
    // ETag): the list is read again, not kept from the cache.
    env.rewrite_config(&format!(
        "{FAST_FETCH}\n[[feed]]\nname = \"ipsum\"\nallow_reserved = true\nurl = \"{}\"\nformat = \"scored\"\nmin_score = 8\n\
         [[feed]]\nname = \"threatfox\"\nallow_reserved = true\nurl = \"{}\"\nformat = \"threatfox\"\nmin_confidence = 75\n",
        server.url("/ipsum.txt"),
        server.url("/threatfox.csv")
    ));
    let r = env.sync(&[]);
    assert_eq!(feed_status(&r, "ipsum"), "updated", "{r}");
    assert_eq!(feed_status(&r, "threatfox"), "unchanged", "{r}");
    assert!(!env.blocked(CLIENT4), "score 7 < 8");
    assert!(env.blocked("192.0.2.50"), "score 9 >= 8");
    assert!(env.blocked(SERVER4));
}

/// A MISP REST search answer written by PyMISP (the fixture in
/// `feed/fixtures/misp`), served over HTTP behind the API key MISP wants
/// in `Authorization`: the IDS-flagged IP attributes install, the rest
/// are skipped or rejected.
#[test]
fn misp_restsearch_with_the_key_in_authorization() {
    // The fixtures are PyMISP's own output: written again now, they match.
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../blocklist-agent/src/feed/fixtures/misp");
    let fresh = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(blocklist_tests::venv_python())
        .arg(fixtures.join("generate.py"))
        .arg(fresh.path())
        .output()
        .expect("running generate.py (cargo xtask setup installs pymisp)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events: Vec<String> = std::fs::read_dir(fixtures.join("feed"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|f| f != "manifest.json")
        .collect();
    assert_eq!(events.len(), 2);
    let mut generated = vec!["event.json".to_owned(), "restsearch.json".to_owned()];
    generated.push("feed/manifest.json".to_owned());
    generated.extend(events.iter().map(|e| format!("feed/{e}")));
    for f in &generated {
        assert_eq!(
            std::fs::read(fresh.path().join(f)).unwrap(),
            std::fs::read(fixtures.join(f)).unwrap(),
            "PyMISP writes {f} differently now; rerun generate.py"
        );
    }
    let env = Env::new("");
    let server = FeedServer::start_in(&env.lab.filter);
    let answer = std::fs::read(fixtures.join("restsearch.json")).unwrap();
    server.set(
        "/attributes/restSearch/returnFormat:json/to_ids:1",
        vec![Reply::body(answer)],
    );
    // And a MISP feed directory: the manifest, then one file per event.
    for f in generated.iter().filter_map(|f| f.strip_prefix("feed/")) {
        let body = std::fs::read(fixtures.join("feed").join(f)).unwrap();
        server.set(&format!("/misp-feed/{f}"), vec![Reply::body(body)]);
    }
    env.rewrite_config(&format!(
        "{FAST_FETCH}\n[[feed]]\nname = \"misp\"\nallow_reserved = true\nurl = \"{}\"\nformat = \"misp\"\n\
         headers = {{ Authorization = \"env:XDPBL_MISP_KEY\" }}\n\
         [[feed]]\nname = \"misp-feed\"\nallow_reserved = true\nurl = \"{}\"\nformat = \"misp\"\n",
        server.url("/attributes/restSearch/returnFormat:json/to_ids:1"),
        server.url("/misp-feed/manifest.json")
    ));
    let agent = Agent::new(
        env.lab.filter.name(),
        env._fs.pin_dir(),
        env.agent.state_dir().to_owned(),
    )
    .with_config(env.dir.path().join("config.toml"))
    .with_env("XDPBL_MISP_KEY", "misp-api-key-42");
    let r = agent.sync_once(&[]);
    assert_eq!(feed_status(&r, "misp"), "updated", "{r}");
    assert_eq!(r["feeds"][0]["entries"], 5, "{r}");
    assert_eq!(r["feeds"][0]["rejected"], 1, "{r}");
    for ip in [
        "192.0.2.10",
        "198.51.100.7",
        "203.0.113.5",
        "2001:db8::c2",
        "192.0.2.20",
    ] {
        assert!(env.blocked(ip), "{ip} from the MISP answer");
    }
    for ip in ["192.0.2.66", "192.0.2.67", "192.0.2.21"] {
        assert!(!env.blocked(ip), "{ip}: not for IDS or deleted");
    }
    let reqs = server.requests("/attributes/restSearch/returnFormat:json/to_ids:1");
    assert_eq!(
        reqs[0].headers.get("authorization").map(String::as_str),
        Some("misp-api-key-42")
    );

    // The feed directory: both events read (the second one's address
    // is only there), and an unchanged manifest fetches no event again.
    assert_eq!(feed_status(&r, "misp-feed"), "updated", "{r}");
    let feed = r["feeds"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "misp-feed")
        .unwrap();
    assert_eq!(feed["entries"], 6, "{feed}");
    assert!(env.blocked("192.0.2.30"), "the second event's address");
    let r = agent.sync_once(&[]);
    assert_eq!(feed_status(&r, "misp-feed"), "unchanged", "{r}");
    for e in &events {
        assert_eq!(
            server.requests(&format!("/misp-feed/{e}")).len(),
            1,
            "{e} fetched again"
        );
    }
}

/// A `firehol_level1`-shaped list, bogons included, through the real
/// agent with the default guard: the reserved ranges are refused (a /15
/// around 192.168.0.0/16 installs only its other half), reported by `sync`,
/// `status` and `/metrics` with the range's name, and the client in
/// 10.77.1.0/24 keeps talking; a second feed that says
/// `allow_reserved = true` blocks its 10.x address. DShield's block.txt
/// and `ipv6_prefix = 64` ride along.
#[test]
fn reserved_ranges_are_kept_out_of_feeds_unless_they_say_so() {
    let env = Env::new("");
    let server = FeedServer::start_in(&env.lab.filter);
    server.set(
        "/firehol_level1.netset",
        vec![Reply::tagged(
            "#\n# firehol_level1\n#\n# ipv4 hash:net ipset\n#\n\
             0.0.0.0/8\n1.10.16.0/20\n10.0.0.0/8\n192.168.0.0/15\n100.64.0.0/10\n127.0.0.0/8\n\
             169.254.0.0/16\n172.16.0.0/12\n192.0.2.0/24\n192.168.0.0/16\n223.254.0.0/16\n\
             224.0.0.0/3\nfe80::1\n",
            "\"f1\"",
        )],
    );
    server.set(
        "/lan.txt",
        vec![Reply::tagged(format!("{CLIENT4_B}\n{CLIENT6}\n"), "\"l1\"")],
    );
    server.set(
        "/block.txt",
        vec![Reply::tagged(
            "#   DShield.org Recommended Block List\n\
             Start\tEnd\tNetblock\tAttacks\tName\tCountry\temail\n\
             198.51.100.16\t198.51.100.95\t24\t12\tEXAMPLE\tDE\tnoc@example.com\n\
             192.168.7.0\t192.168.7.255\t24\t9\tPRIVATE\tXX\tx@example.com\n",
            "\"d1\"",
        )],
    );
    let port = 19_000 + std::process::id() % 1000;
    let config = format!(
        "sync_interval = \"1h\"\n{FAST_FETCH}\n\
         [[feed]]\nname = \"firehol_level1\"\nurl = \"{}\"\nformat = \"firehol\"\n\
         [[feed]]\nname = \"lan\"\nurl = \"{}\"\nallow_reserved = true\nipv6_prefix = 64\n\
         [[feed]]\nname = \"dshield\"\nurl = \"{}\"\n\
         [metrics]\nlisten = \"127.0.0.1:{port}\"\n[events]\noutput = \"off\"\n",
        server.url("/firehol_level1.netset"),
        server.url("/lan.txt"),
        server.url("/block.txt")
    );
    env.rewrite_config(&config);
    let r = env.sync(&[]);
    let feed = |name: &str| {
        r["feeds"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == name)
            .cloned()
            .unwrap()
    };
    let firehol = feed("firehol_level1");
    assert_eq!(firehol["status"], "updated", "{r}");
    // 0/8, 10/8, 100.64/10, 127/8, 169.254/16, 172.16/12, 192.168/16 and
    // fe80::1 refused; 192.168.0.0/15 cut down to 192.169.0.0/16.
    assert_eq!(firehol["reserved"], 9, "{r}");
    let samples: Vec<&str> = firehol["reserved_samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert!(
        samples.contains(&"10.0.0.0/8: refused, inside 10.0.0.0/8 (private-use, RFC 1918)"),
        "{samples:?}"
    );
    assert!(
        samples.iter().any(
            |s| s.starts_with("192.168.0.0/15: installed as 1 prefixes without 192.168.0.0/16")
        ),
        "{samples:?}"
    );
    assert_eq!(feed("lan")["reserved"], 0, "{r}");
    assert_eq!(feed("dshield")["reserved"], 1, "{r}");
    assert_eq!(
        r["too_broad"], 1,
        "224.0.0.0/3 is refused whole as too broad, not split: {r}"
    );
    assert!(!env.blocked("224.0.0.1"));

    for (addr, blocked) in [
        (CLIENT4, false),
        ("10.1.2.3", false),
        ("169.254.169.254", false),
        ("192.168.7.1", false),
        ("192.169.3.4", true),
        ("1.10.16.1", true),
        ("192.0.2.7", true),
        ("223.254.1.1", true),
        ("198.51.100.16", true),
        ("198.51.100.95", true),
        ("198.51.100.96", false),
        (CLIENT4_B, true),
        // The lan feed's /64, not only its address.
        ("fd00:77:1::abcd", true),
    ] {
        assert_eq!(env.blocked(addr), blocked, "{addr}");
    }
    assert_eq!(
        ping(&env.lab.client, Some(CLIENT4), FILTER4, 3),
        3,
        "the LAN client passes although firehol_level1 lists 10.0.0.0/8"
    );
    assert_eq!(
        ping(&env.lab.client, Some(CLIENT4_B), FILTER4, 3),
        0,
        "the lan feed said allow_reserved: its 10.x address drops"
    );

    let status = env.agent.run(&["status", "--json"]).json();
    let st = status["feeds"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "firehol_level1")
        .cloned()
        .unwrap();
    assert_eq!(st["reserved"], 9, "{status}");
    assert_eq!(st["reserved_samples"].as_array().unwrap().len(), 5);
    let text = env.agent.run(&["sync", "--once"]).stdout;
    assert!(text.contains("RESERVED"), "{text}");
    assert!(
        text.contains("firehol_level1 reserved range: 10.0.0.0/8: refused"),
        "{text}"
    );

    // `run` serves the same count on /metrics.
    let mut child = env
        .agent
        .command(&["run"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/metrics");
    let metrics = || {
        let url = url.clone();
        env.lab.filter.enter(move || {
            reqwest::blocking::get(&url)
                .and_then(|r| r.text())
                .unwrap_or_default()
        })
    };
    let mut line = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    while line.is_none() && Instant::now() < deadline {
        line = metrics()
            .lines()
            .find(|l| l.starts_with("xdp_blocklist_feed_reserved_entries{feed=\"firehol_level1\"}"))
            .map(str::to_owned);
        std::thread::sleep(Duration::from_millis(200));
    }
    let status = blocklist_tests::agent::terminate(&mut child, Duration::from_secs(10));
    assert!(status.success(), "run exited with {status}");
    assert_eq!(
        line.as_deref().and_then(|l| l.rsplit(' ').next()),
        Some("9"),
        "{line:?}"
    );
}

/// The loop `run` repeats, driven one tick at a time through the library:
/// a tick syncs what is due and nothing else, intervals run on the
/// caller's clock, an expired hand-made entry is removed at the next tick,
/// and a reload polls every feed of the new configuration at once.
#[test]
fn the_agent_syncs_what_is_due_one_tick_at_a_time() {
    use blocklist_agent::{
        agent::{
            self,
            daemon::{Agent, Tick},
        },
        config::Config,
        datapath::maps::TrieKind,
        feed::config::FeedConfig,
        prefix::Prefix,
        state::StateDir,
    };
    require_root();
    let fs = Bpffs::new();
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::new(dir.path().join("state"));
    let (first, second) = (dir.path().join("a.txt"), dir.path().join("b.txt"));
    std::fs::write(&first, "192.0.2.1\n198.51.100.0/24\n").unwrap();
    std::fs::write(&second, "203.0.113.9\n").unwrap();
    let feed = |name: &str, path: &PathBuf| {
        let mut f = FeedConfig::new(name, path.display().to_string());
        f.interval = Some(Duration::from_secs(60));
        f
    };
    let mut config = Config::default();
    config.guard.allow_reserved = true;
    // This host's own addresses and gateway are not what is tested here.
    config.allow.protect_host = false;
    config.feeds = vec![feed("a", &first)];
    let p = |s: &str| s.parse::<Prefix>().unwrap();

    let mut agent = Agent::start(fs.pin(), state.clone(), config.clone()).unwrap();
    let blocked = |agent: &mut Agent, s: &str| {
        agent
            .maps()
            .get_exact(TrieKind::Block, p(s))
            .unwrap()
            .is_some()
    };
    let t0 = Instant::now();
    let synced = |tick: Tick| match tick {
        Tick::Synced(r) => r,
        other => panic!("expected a sync pass, got {other:?}"),
    };
    let r = synced(agent.tick(t0));
    assert_eq!((r.v4.added, r.v4.removed), (2, 0), "{r:?}");
    assert!(blocked(&mut agent, "192.0.2.1/32"));
    // Nothing is due again until the feed's interval has passed, even when
    // its list changed.
    std::fs::write(&first, "192.0.2.1\n198.51.100.0/24\n192.0.2.7\n").unwrap();
    assert!(matches!(agent.tick(t0), Tick::Idle));
    assert!(matches!(
        agent.tick(t0 + Duration::from_secs(30)),
        Tick::Idle
    ));
    assert!(!blocked(&mut agent, "192.0.2.7/32"));
    let r = synced(agent.tick(t0 + Duration::from_secs(61)));
    assert_eq!((r.v4.added, r.v4.removed), (1, 0));
    assert!(blocked(&mut agent, "192.0.2.7/32"));
    assert_eq!(agent.passes(), 2);

    // A hand-made entry that runs out goes at the next tick that looks
    // (once a second), not at the feed's next interval.
    agent::edit_manual(
        &fs.pin(),
        &state,
        &config,
        TrieKind::Block,
        &[p("192.0.2.200/32")],
        true,
        Some(std::time::SystemTime::now() + Duration::from_millis(500)),
    )
    .unwrap();
    assert!(blocked(&mut agent, "192.0.2.200/32"));
    std::thread::sleep(Duration::from_millis(700));
    let r = synced(agent.tick(t0 + Duration::from_secs(63)));
    assert_eq!((r.v4.added, r.v4.removed), (0, 1));
    assert!(!blocked(&mut agent, "192.0.2.200/32"));
    assert!(blocked(&mut agent, "192.0.2.1/32"));

    // A reload polls every feed of the new configuration at the next tick.
    config.feeds.push(feed("b", &second));
    agent.reload(config).unwrap();
    let r = synced(agent.tick(t0 + Duration::from_secs(64)));
    assert_eq!(r.feeds.len(), 2, "{:?}", r.feeds);
    assert_eq!((r.v4.added, r.v4.removed), (1, 0));
    assert!(blocked(&mut agent, "203.0.113.9/32"));
    assert!(matches!(
        agent.tick(t0 + Duration::from_secs(65)),
        Tick::Idle
    ));
}
