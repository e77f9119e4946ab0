//! The reliability suite: faults, crash safety, churn under load and
//! hostile input. Each test tries to make the agent lose protection and
//! checks, with the real kernel and real traffic, that it does not.

use std::{
    fmt::Write as _,
    net::IpAddr,
    path::{Path, PathBuf},
    process::Stdio,
    sync::Arc,
    time::{Duration, Instant},
};

use blocklist_agent::{
    config::Config,
    datapath::{
        maps::{Maps, TrieKind},
        pin::PinDir,
    },
    read::listing::FeedIndex,
    read::metrics::{self, Shared},
    state::StateDir,
};
use blocklist_tests::{
    agent::Agent,
    bpffs::Bpffs,
    bpftool,
    feed_server::{FeedServer, Reply},
    lab::{Lab, addr::*},
    require_root,
    tls_server::{TlsServer, Trust},
    traffic::{Flood, udp},
};
use serde_json::Value;

/// Fast failures so the fault cases finish quickly.
const FAST: &str = "lock_timeout = \"2s\"\n[fetch]\nconnect_timeout = \"1s\"\ntimeout = \"2s\"\nattempts = 2\nbackoff = \"100ms\"\nmax_retry_after = \"2s\"\n";

struct Env {
    agent: Agent,
    lab: Lab,
    fs: Bpffs,
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        Self::attached_with("")
    }

    /// An env whose `attach` (which creates the maps) reads `extra` too.
    fn attached_with(extra: &str) -> Self {
        require_root();
        let lab = Lab::new();
        let fs = Bpffs::new();
        let dir = tempfile::tempdir().unwrap();
        let agent = Agent::new(lab.filter.name(), fs.pin_dir(), dir.path().join("state"))
            .with_config(dir.path().join("config.toml"));
        std::fs::write(dir.path().join("config.toml"), format!("{FAST}{extra}")).unwrap();
        agent.run(&["attach", "--iface", &lab.filter_if]);
        lab.wait_settled();
        Self {
            agent,
            lab,
            fs,
            dir,
        }
    }

    fn config(&self, feed_url: &str, extra: &str) {
        std::fs::write(
            self.dir.path().join("config.toml"),
            format!("{FAST}\n[[feed]]\nname = \"f\"\nallow_reserved = true\nurl = \"{feed_url}\"\n{extra}"),
        )
        .unwrap();
    }

    /// A config whose limits never depend on how fast the machine is: a
    /// generous timeout, so only the limit a case is about can fire.
    fn patient_config(&self, feed_url: &str, extra: &str) {
        std::fs::write(
            self.dir.path().join("config.toml"),
            format!(
                "lock_timeout = \"30s\"\n[fetch]\ntimeout = \"300s\"\nattempts = 1\n\
                 [[feed]]\nname = \"f\"\nallow_reserved = true\nurl = \"{feed_url}\"\n{extra}"
            ),
        )
        .unwrap();
    }

    fn sync(&self) -> Value {
        self.agent.sync_once(&[])
    }

    fn entries_v4(&self) -> u64 {
        self.trie_entries("BLOCK_V4")
    }

    /// The entries `status` reports for the trie `name`.
    fn trie_entries(&self, name: &str) -> u64 {
        let st = self.agent.run(&["status", "--json"]).json();
        st["tries"]
            .as_array()
            .and_then(|t| t.iter().find(|t| t["name"] == name))
            .and_then(|t| t["entries"].as_u64())
            .unwrap_or_else(|| panic!("no {name} in status: {st}"))
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = self
            .agent
            .try_run(&["detach", "--iface", &self.lab.filter_if]);
    }
}

/// The kept client, then `n` distinct /32s from `start`.
fn list(start: u32, n: u32) -> String {
    format!("{CLIENT4}\n{}", blocklist_tests::addresses(start, n))
}

fn status_of(r: &Value) -> String {
    r["feeds"][0]["status"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Renders /metrics for the env's pins and state (the same code `run`
/// serves) and returns the value of one sample line.
fn metric(env: &Env, line_prefix: &str) -> Option<f64> {
    let text = std::fs::read_to_string(env.dir.path().join("config.toml")).unwrap();
    let config = Config::parse(&text, Path::new("config.toml")).unwrap();
    let shared = Shared::new(
        PinDir::new(env.fs.pin_dir()),
        StateDir::new(env.state()),
        config,
        Arc::new(std::sync::RwLock::new(Arc::new(FeedIndex::default()))),
    );
    let out = metrics::render(&shared).unwrap();
    out.lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn faults_never_shrink_the_installed_set() {
    let env = Env::new();
    let server = FeedServer::start_in(&env.lab.filter);
    let good = list(0, 200);
    server.set("/f", vec![Reply::body(good.clone())]);
    env.config(&server.url("/f"), "");
    assert_eq!(status_of(&env.sync()), "updated");
    assert_eq!(env.entries_v4(), 201);

    // A TAXII server whose `more` never ends and whose pages never change.
    let looping = r#"{"more": true, "next": "again", "objects": [{"type": "indicator", "spec_version": "2.1", "id": "indicator--00000000-0000-4000-8000-000000000001", "created": "2026-01-01T00:00:00Z", "modified": "2026-01-01T00:00:00Z", "pattern": "[ipv4-addr:value = '198.51.100.1']", "pattern_type": "stix", "valid_from": "2026-01-01T00:00:00Z"}]}"#;
    server.set("/taxii/collections/c/objects/", vec![Reply::body(looping)]);

    // A TLS server with a certificate nobody trusts.
    let tls = TlsServer::start(&env.lab.filter, &env.dir.path().join("tls"), Trust::Nobody);

    // (case, URL, replies, extra feed keys, what the reason must say)
    let cases: Vec<(&str, String, Vec<Reply>, &str, &str)> = vec![
        (
            "server down",
            "http://127.0.0.1:9/f".into(),
            vec![],
            "",
            "connection failed",
        ),
        (
            "HTTP 500 storm",
            server.url("/f"),
            vec![Reply::Status(500)],
            "",
            "HTTP 500",
        ),
        (
            "429 storm",
            server.url("/f"),
            vec![Reply::RetryAfter(429, 1)],
            "",
            "HTTP 429",
        ),
        (
            "timeout",
            server.url("/f"),
            vec![Reply::Slow {
                body: good.clone().into(),
                delay: Duration::from_secs(4),
            }],
            "",
            "timed out",
        ),
        (
            "truncated body",
            server.url("/f"),
            vec![Reply::Truncated {
                body: good.as_bytes()[..100].to_vec(),
                declared: good.len(),
            }],
            "",
            "body truncated",
        ),
        (
            "slow-loris body",
            server.url("/f"),
            vec![Reply::Trickle {
                body: good.clone().into(),
                every: Duration::from_millis(200),
            }],
            "",
            "timed out reading the body",
        ),
        (
            "TAXII paging loop",
            server.url("/taxii/collections/c/"),
            vec![],
            "format = \"taxii\"\n",
            "the same page twice",
        ),
        (
            "untrusted certificate",
            tls.url("f"),
            vec![],
            "",
            "certificate",
        ),
    ];
    for (i, (what, url, replies, extra, reason)) in cases.into_iter().enumerate() {
        if !replies.is_empty() {
            server.set("/f", replies);
        }
        env.config(&url, extra);
        let started = Instant::now();
        let r = env.sync();
        assert_eq!(status_of(&r), "failed", "{what}: {r}");
        let why = r["feeds"][0]["reason"].as_str().unwrap_or_default();
        assert!(
            why.contains(reason),
            "{what}: failed for another reason than {reason:?}: {why}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{what} took {:?}",
            started.elapsed()
        );
        assert_eq!(r["v4"]["removed"], 0, "{what}: {r}");
        assert_eq!(
            env.entries_v4(),
            201,
            "{what}: the installed set never shrinks"
        );
        let st = env.agent.run(&["status", "--json"]).json();
        let feed = &st["feeds"][0];
        assert!(
            feed["last_error"].is_string(),
            "{what}: status shows the error: {st}"
        );
        assert_eq!(feed["failures"], i as u64 + 1, "{what}: {st}");
        assert_eq!(
            metric(&env, "xdp_blocklist_feed_failures_total{feed=\"f\"}"),
            Some(i as f64 + 1.0),
            "{what}: metrics count the failure"
        );
        // Still dropping.
        assert_eq!(
            udp(&env.lab.client, CLIENT4, &env.lab.filter, FILTER4, 3, 16),
            0,
            "{what}"
        );
    }
    let st = env.agent.run(&["status", "--json"]).json();
    assert!(
        st["feeds"][0]["last_error"]
            .as_str()
            .unwrap()
            .contains("certificate"),
        "{st}"
    );
}

/// Continuous UDP from the kept client to the filter, for at most `max`.
fn flood(env: &Env, max: Duration) -> Flood {
    Flood::start(&env.lab.client, CLIENT4, &env.lab.filter, FILTER4, 16, max)
}

/// The `i`-th address of [`blocklist_tests::addresses`].
fn nth(i: u32) -> IpAddr {
    IpAddr::V4(std::net::Ipv4Addr::from(0xc612_0000u32 + i))
}

#[test]
fn kill_9_mid_sync_then_restart_converges_without_a_gap() {
    let env = Env::new();
    let feed = env.dir.path().join("big.txt");
    std::fs::write(&feed, list(0, 200_000)).unwrap();
    env.config(&feed.display().to_string(), "");
    assert_eq!(env.sync()["v4"]["added"], 200_001);
    std::fs::write(&feed, list(300_000, 200_000)).unwrap();
    // The new entries go in in sorted order, then the old ones go.
    let (first_new, last_new) = (nth(300_000), nth(499_999));
    let maps = Maps::open(&PinDir::new(env.fs.pin_dir())).unwrap();
    let present = |a: IpAddr| maps.lookup(TrieKind::Block, a).unwrap().is_some();
    assert!(!present(first_new) && !present(last_new));

    let traffic = flood(&env, Duration::from_secs(120));
    let mut child = env
        .agent
        .command(&["sync", "--once"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill the writer as soon as its kernel writes have started, long
    // before its 400,000 changes are done.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if present(first_new) && !present(last_new) {
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "the sync ended ({status}) before its kernel writes were seen in progress;                  the kill could not land mid-write"
            );
        }
        assert!(Instant::now() < deadline, "the sync never started writing");
        std::thread::sleep(Duration::from_micros(500));
    }
    child.kill().expect("killing the sync mid-write");
    let status = child.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL),
        "the sync died of the kill, not by finishing: {status}"
    );
    let partial = env.entries_v4();
    assert!(
        partial > 200_001 && partial < 400_001,
        "killed mid-write, the installed set is strictly partial (old and part of the new): {partial}"
    );
    assert!(
        present(nth(0)),
        "no old entry is deleted before every new one is in"
    );

    // The restarted agent converges.
    let r = env.sync();
    assert!(
        matches!(
            r["feeds"][0]["status"].as_str(),
            Some("updated" | "unchanged")
        ),
        "{r}"
    );
    let r = env
        .agent
        .run(&["sync", "--once", "--dry-run", "--json"])
        .json();
    assert_eq!(r["v4"]["added"], 0, "converged: {r}");
    assert_eq!(r["v4"]["removed"], 0, "converged: {r}");
    assert_eq!(r["v4"]["unchanged"], 200_001);
    let (sent, got) = traffic.stop();
    assert!(sent >= 1000, "traffic ran across the kill ({sent} sent)");
    assert_eq!(
        got, 0,
        "the pinned program kept dropping the kept address throughout ({sent} sent)"
    );
    assert_eq!(env.entries_v4(), 200_001);
    assert!(present(last_new) && !present(nth(0)));
}

#[test]
fn corrupt_state_files_are_recovered_without_losing_protection() {
    let env = Env::new();
    let server = FeedServer::start_in(&env.lab.filter);
    server.set("/f", vec![Reply::body(list(0, 50))]);
    env.config(&server.url("/f"), "");
    env.agent.run(&["block", "203.0.113.7"]);
    env.sync();
    assert_eq!(env.entries_v4(), 52);
    let state = env.state();

    // Power cut: every state file truncated or garbled.
    std::fs::write(state.join("feeds/f.list"), "198.18.0.").unwrap();
    std::fs::write(state.join("feeds/f.json"), "{\"etag\": ").unwrap();
    std::fs::write(state.join("manual.json"), [0xff, 0x00, 0x7b]).unwrap();
    std::fs::write(state.join("attachments.json"), "").unwrap();

    // The feed is down too: nothing may be removed.
    server.set("/f", vec![Reply::Status(503)]);
    let r = env.agent.sync_once(&[]);
    assert_eq!(
        r["deletes_held"], true,
        "the feed's list is lost and the feed is down: {r}"
    );
    assert_eq!(env.entries_v4(), 52, "protection kept: {r}");
    assert_eq!(
        udp(&env.lab.client, CLIENT4, &env.lab.filter, FILTER4, 5, 16),
        0
    );
    let c = env.agent.run(&["check", "203.0.113.7", "--json"]).json();
    assert_eq!(
        c["blocked"], true,
        "hand-made entry recovered from the pinned maps"
    );

    // The feed is back: state is rewritten and everything converges.
    server.set("/f", vec![Reply::body(list(0, 50))]);
    let r = env.sync();
    assert_eq!(r["feeds"][0]["status"], "updated", "{r}");
    assert_eq!(env.entries_v4(), 52);
    let st = env.agent.run(&["status", "--json"]).json();
    assert_eq!(st["feeds"][0]["entries"], 51, "{st}");
    assert!(env.agent.run(&["check", "203.0.113.7", "--json"]).json()["block"]["manual"] == true);
}

#[test]
fn churn_under_load_never_lets_a_kept_address_through() {
    let env = Env::new();
    let feed = env.dir.path().join("churn.txt");
    // The kept client's entry changes form every round (its own /32, then
    // the /31 it shares with the second client address), so its key is
    // deleted and another inserted in every sync.
    let kept = |round: u32| {
        if round.is_multiple_of(2) {
            format!("{CLIENT4}/32")
        } else {
            "10.77.1.2/31".to_owned()
        }
    };
    let churn = |round: u32| {
        format!(
            "{}\n{}",
            kept(round),
            blocklist_tests::addresses((round % 2) * 150_000, 100_000)
        )
    };
    std::fs::write(&feed, churn(0)).unwrap();
    env.config(&feed.display().to_string(), "");
    env.sync();
    let traffic = flood(&env, Duration::from_secs(300));
    for round in 1..=4u32 {
        // Alternate between two disjoint 100,000-entry lists around the
        // kept address: 200,002 kernel changes per round.
        std::fs::write(&feed, churn(round)).unwrap();
        let r = env.sync();
        assert_eq!(r["v4"]["added"], 100_001, "round {round}: {r}");
        assert_eq!(r["v4"]["removed"], 100_001, "round {round}: {r}");
        assert_eq!(r["v4"]["unchanged"], 0, "round {round}: {r}");
    }
    let (sent, got) = traffic.stop();
    assert!(sent >= 1000, "traffic ran during the churn ({sent} sent)");
    assert_eq!(
        got, 0,
        "{got} of {sent} packets from the kept address got through"
    );
    let st = env.agent.run(&["status", "--json"]).json();
    assert_eq!(st["interfaces"][0]["link_pinned"], true, "still attached");
}

/// A list near capacity replaced by one that is half new: what is
/// installed plus what is new exceeds the entry ids (1,048,575), so the
/// sync first removes the dropped entries that no new one overlaps. The
/// kept client's entry changes form (its /32, then the /31 it shares with
/// the second client address), so its old entry overlaps a new one and
/// must wait for it: the client stays blocked throughout. A list one
/// entry over the ids is refused whole, with nothing written.
#[test]
fn a_list_near_capacity_is_replaced_by_a_half_new_one_without_a_gap() {
    const N: u32 = 1_000_000;
    let env = Env::new();
    let feed = env.dir.path().join("capacity.txt");
    let listed = |kept: &str, start: u32, n: u32| {
        format!("{kept}\n{}", blocklist_tests::addresses(start, n))
    };
    std::fs::write(&feed, listed(&format!("{CLIENT4}/32"), 0, N)).unwrap();
    env.patient_config(&feed.display().to_string(), "");
    let r = env.sync();
    assert_eq!(r["v4"]["added"], N + 1, "{r}");
    let traffic = flood(&env, Duration::from_secs(300));
    std::fs::write(&feed, listed("10.77.1.2/31", N / 2, N)).unwrap();
    let r = env.sync();
    let (sent, got) = traffic.stop();
    assert_eq!(
        (&r["v4"]["added"], &r["v4"]["removed"]),
        (&Value::from(N / 2 + 1), &Value::from(N / 2 + 1)),
        "{r}"
    );
    assert!(sent >= 100, "traffic ran during the sync ({sent} sent)");
    assert_eq!(
        got, 0,
        "{got} of {sent} packets from the kept address got through"
    );
    let blocked =
        |a: IpAddr| env.agent.run(&["check", &a.to_string(), "--json"]).json()["blocked"] == true;
    assert!(
        !blocked(nth(0)) && !blocked(nth(N / 2 - 1)),
        "dropped entries are gone"
    );
    assert!(
        blocked(nth(N / 2)) && blocked(nth(N + N / 2 - 1)),
        "kept and new entries are in"
    );

    // 1,000,001 installed and 48,575 new: one more than the ids.
    std::fs::write(&feed, listed("10.77.1.2/31", N / 2, N + 48_575)).unwrap();
    let over = env.agent.try_run(&["sync", "--once", "--json"]);
    assert_ne!(over.code, 0, "{}", over.stdout);
    assert!(
        over.stderr.contains("ENTRY_COUNTERS") && over.stderr.contains("nothing was changed"),
        "{}",
        over.stderr
    );
    assert!(
        !blocked(nth(N + N / 2)),
        "nothing of the refused list was written"
    );
    assert_eq!(
        env.entries_v4(),
        u64::from(N + 1),
        "the installed list is as it was"
    );
}

/// `[datapath] max_entries` sizes the maps that grow with the list when
/// `attach` creates them, and the capacity it sets is the one a sync
/// keeps: a list that fits is installed and blocks (its hits counted), a
/// half-new one goes in two batches without letting the kept client
/// through, one entry more is refused whole.
#[test]
fn max_entries_sizes_the_maps_and_bounds_the_list() {
    use blocklist_agent::datapath::loader::{self, entry_sized_maps};
    use blocklist_ebpf::map_names;

    const N: u32 = 1_000;
    let env = Env::attached_with(&format!("[datapath]\nmax_entries = {N}\n"));
    let pin = PinDir::new(env.fs.pin_dir());
    let size = |name: &str| loader::pinned_entries(&pin, name).expect("a pinned map");
    for (name, want) in entry_sized_maps(Some(N)) {
        assert_eq!(size(name), want, "{name}");
    }
    assert_eq!(size(map_names::ENTRY_COUNTERS), N + 1);
    assert_eq!(size(map_names::EXACT_V4), N);

    let feed = env.dir.path().join("small.txt");
    let listed = |kept: &str, start: u32, n: u32| {
        format!("{kept}\n{}", blocklist_tests::addresses(start, n))
    };
    std::fs::write(&feed, listed(&format!("{CLIENT4}/32"), 0, N - 1)).unwrap();
    env.config(&feed.display().to_string(), "");
    assert_eq!(env.sync()["v4"]["added"], N, "a list of max_entries fits");
    let traffic = flood(&env, Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(500));
    // Half new, and the kept client's entry changes form, as in the test
    // above: 1,500 at the peak of one batch; in two, the 500 removals
    // that overlap nothing go first and the peak is exactly 1,000.
    std::fs::write(&feed, listed("10.77.1.2/31", N / 2, N - 2)).unwrap();
    let r = env.sync();
    assert_eq!(
        (&r["v4"]["added"], &r["v4"]["removed"]),
        (&Value::from(N / 2), &Value::from(N / 2 + 1)),
        "{r}"
    );
    std::thread::sleep(Duration::from_millis(500));
    let (sent, got) = traffic.stop();
    assert!(sent >= 100, "traffic ran ({sent} sent)");
    assert_eq!(
        got, 0,
        "{got} of {sent} packets from the kept address got through"
    );
    let c = env.agent.run(&["check", CLIENT4, "--json"]).json();
    assert!(
        c["block"]["packets"].as_u64().unwrap_or(0) > 0,
        "hits counted: {c}"
    );

    // 999 installed and two new.
    std::fs::write(&feed, listed("10.77.1.2/31", N / 2, N)).unwrap();
    let over = env.agent.try_run(&["sync", "--once", "--json"]);
    assert_ne!(over.code, 0, "{}", over.stdout);
    assert!(
        over.stderr.contains(&format!(
            "needs 1001 entries in ENTRY_COUNTERS, which holds {N}"
        )) && over.stderr.contains("nothing was changed"),
        "{}",
        over.stderr
    );
    assert_eq!(
        env.entries_v4(),
        u64::from(N - 1),
        "the installed list is as it was"
    );
}

/// An allow list larger than its trie is refused before anything is
/// written (it used to fail part-way with the trie's `Full`, some allow
/// entries in), and the next sync that fits goes in.
#[test]
fn an_allow_list_over_its_trie_is_refused_with_nothing_changed() {
    let env = Env::new();
    let feed = env.dir.path().join("list.txt");
    std::fs::write(&feed, list(0, 10)).unwrap();
    let allows = |n: u32| {
        let cidrs: Vec<String> = (0..n)
            .map(|i| format!("\"{}/32\"", std::net::Ipv4Addr::from(0xcb00_0000u32 + i)))
            .collect();
        format!("[allow]\ncidrs = [{}]\n", cidrs.join(", "))
    };
    env.config(&feed.display().to_string(), &allows(10));
    env.sync();
    let allowed_v4 = || env.trie_entries("ALLOW_V4");
    let before = allowed_v4();
    assert!(before >= 10, "the ten allow entries are in ({before})");

    // The host's own addresses are allowed too: this is over by at least
    // one.
    env.config(
        &feed.display().to_string(),
        &allows(blocklist_ebpf::ALLOW_MAX_ENTRIES),
    );
    let over = env.agent.try_run(&["sync", "--once", "--json"]);
    assert_ne!(over.code, 0, "{}", over.stdout);
    assert!(
        over.stderr.contains(&format!(
            "allow entries in ALLOW_V4, which holds {}",
            blocklist_ebpf::ALLOW_MAX_ENTRIES
        )) && over.stderr.contains("nothing was changed"),
        "{}",
        over.stderr
    );
    assert_eq!(allowed_v4(), before, "no allow entry was written");
    assert_eq!(env.entries_v4(), 11, "the block list is as it was");
    let c = env.agent.run(&["check", CLIENT4, "--json"]).json();
    assert_eq!(c["blocked"], true, "{c}");

    env.config(&feed.display().to_string(), &allows(100));
    env.sync();
    assert_eq!(allowed_v4(), before + 90, "a list that fits goes in");
}

#[test]
fn hostile_feeds_are_refused_and_the_agent_keeps_running() {
    let env = Env::new();
    // The filter gets a default gateway, which must be protected too.
    env.lab
        .filter
        .ip(&["route", "add", "default", "via", SERVER4]);
    let server = FeedServer::start_in(&env.lab.filter);
    server.set("/f", vec![Reply::body(list(0, 10))]);
    env.patient_config(&server.url("/f"), "");
    env.sync();
    assert_eq!(env.entries_v4(), 11);

    // Over-broad, the host itself, its gateway, invalid UTF-8, a zone id.
    let mut nasty = list(0, 10).into_bytes();
    nasty.extend_from_slice(
        format!("0.0.0.0/0\n::/0\n1.0.0.0/7\n{FILTER4}\n{SERVER4}\n").as_bytes(),
    );
    nasty.extend_from_slice(b"\xff\xfe\xfd\nfe80::1%eth0\n");
    server.set("/f", vec![Reply::body(nasty)]);
    let r = env.sync();
    assert_eq!(r["too_broad"], 3, "{r}");
    assert_eq!(r["shadowed"], 2, "host address and gateway left out: {r}");
    assert_eq!(env.entries_v4(), 11);
    for protected in [FILTER4, SERVER4] {
        let c = env.agent.run(&["check", protected, "--json"]).json();
        assert_eq!(c["blocked"], false, "{protected}: {c}");
    }

    // 10 million lines (a few distinct addresses, many duplicates and comments).
    let mut big = String::with_capacity(150 << 20);
    for i in 0..10_000_000u32 {
        if i % 10 == 0 {
            big.push_str("# comment\n");
        } else {
            let a = 0xc612_0000u32 + (i % 20_000);
            let _ = writeln!(
                big,
                "{}.{}.{}.{}",
                a >> 24,
                (a >> 16) & 255,
                (a >> 8) & 255,
                a & 255
            );
        }
    }
    server.set("/f", vec![Reply::body(big)]);
    let before = children_max_rss_kib();
    let r = env.sync();
    assert_eq!(r["feeds"][0]["status"], "updated", "{r}");
    // Addresses i % 20,000 for i not a multiple of 10: 18,000 distinct.
    assert_eq!(r["feeds"][0]["entries"], 18_000, "{r}");
    let rss_mib = children_max_rss_kib().max(before) / 1024;
    assert!(
        rss_mib < 1024,
        "the agent used {rss_mib} MiB for 10 million lines"
    );

    // 1 GB announced, and an endless body: both cut at the body limit.
    // A small per-feed limit, so the limit fires long before any timeout.
    let limited = "max_bytes = 1048576\n";
    let over = "larger than the 1048576-byte limit";
    env.patient_config(&server.url("/f"), limited);
    server.set(
        "/f",
        vec![Reply::Truncated {
            body: Vec::new(),
            declared: 1 << 30,
        }],
    );
    let r = env.sync();
    assert_eq!(r["feeds"][0]["status"], "failed", "{r}");
    assert!(
        r["feeds"][0]["reason"].as_str().unwrap().contains(over),
        "{r}"
    );
    server.set(
        "/f",
        vec![Reply::Stream {
            bytes: 1 << 30,
            line: b"198.51.100.1\n".to_vec(),
        }],
    );
    let r = env.sync();
    assert_eq!(r["feeds"][0]["status"], "failed", "{r}");
    assert!(
        r["feeds"][0]["reason"].as_str().unwrap().contains(over),
        "{r}"
    );

    // Deeply nested JSON must not overflow a stack.
    let deep = format!("{}{}", "[".repeat(1_000_000), "]".repeat(1_000_000));
    server.set("/f", vec![Reply::body(deep)]);
    env.patient_config(&server.url("/f"), "format = \"json\"\n");
    let r = env.sync();
    assert!(
        matches!(r["feeds"][0]["status"].as_str(), Some("refused" | "failed")),
        "{r}"
    );
    let deep_stix = format!(
        "{{\"type\":\"bundle\",\"objects\":[{}{}]}}",
        "{\"a\":".repeat(100_000),
        "}".repeat(100_000)
    );
    server.set("/f", vec![Reply::body(deep_stix)]);
    env.patient_config(&server.url("/f"), "format = \"stix\"\n");
    let r = env.sync();
    assert!(
        matches!(r["feeds"][0]["status"].as_str(), Some("refused" | "failed")),
        "{r}"
    );
    assert_eq!(
        env.entries_v4(),
        18_000,
        "every refusal kept the last good list"
    );
    assert_eq!(
        udp(&env.lab.client, CLIENT4, &env.lab.filter, FILTER4, 3, 16),
        3,
        "unlisted client passes"
    );
}

fn children_max_rss_kib() -> i64 {
    // SAFETY: getrusage writes into the zeroed struct we pass.
    unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru);
        ru.ru_maxrss
    }
}

/// The ids of the maps that the program behind the filter's pinned XDP
/// link uses.
fn linked_map_ids(env: &Env) -> Vec<u64> {
    bpftool::program_maps(&PinDir::new(env.fs.pin_dir()).link(&env.lab.filter_if))
}

/// The id of the map pinned as `name`.
fn pinned_map_id(env: &Env, name: &str) -> u64 {
    bpftool::map(&PinDir::new(env.fs.pin_dir()).map(name)).0
}

/// The exact maps start small and grow with the list: a sync of more
/// single addresses than a fresh `EXACT_V4` holds grows it, the attached
/// program is swapped for one that uses the larger map, and the kept
/// client is dropped throughout. The trie lookup makes that visible: it
/// probes `EXACT_V4` for every IPv4 packet, so a program left on a map
/// without the client's entry lets the client through. A writer killed
/// after swapping the program in but before the larger map's pin took
/// the old one's place leaves exactly such a program (here on an empty
/// map, the worst case); the next writer finishes the growth.
#[test]
fn the_exact_maps_grow_with_the_list_and_a_killed_growth_is_mended() {
    use blocklist_agent::datapath::{attach, grow, loader};
    use blocklist_ebpf::{EXACT_START_ENTRIES, EXACT_V4_MAX_ENTRIES, map_names::EXACT_V4};

    let env = Env::attached_with("[datapath]\nlookup = \"trie\"\n");
    let pin = PinDir::new(env.fs.pin_dir());
    let size = || loader::pinned_entries(&pin, EXACT_V4).expect("a pinned EXACT_V4");
    let growing = pin.map(&format!("growing-{EXACT_V4}"));
    assert_eq!(size(), EXACT_START_ENTRIES, "a fresh EXACT_V4 starts small");
    let feed = env.dir.path().join("hosts.txt");
    let listed = |n: u32| format!("{CLIENT4}/32\n{}", blocklist_tests::addresses(0, n));
    std::fs::write(&feed, listed(1_000)).unwrap();
    env.config(&feed.display().to_string(), "");
    assert_eq!(env.sync()["v4"]["added"], 1_001);

    const N: u32 = 100_000;
    let traffic = flood(&env, Duration::from_secs(120));
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(&feed, listed(N)).unwrap();
    assert_eq!(env.sync()["v4"]["added"], N - 1_000);
    std::thread::sleep(Duration::from_millis(300));
    let (sent, got) = traffic.stop();
    assert!(sent >= 100, "traffic ran ({sent} sent)");
    assert_eq!(
        got, 0,
        "{got} of {sent} packets from the kept address got through while EXACT_V4 grew"
    );
    assert_eq!(
        size(),
        grow::grown_size(u64::from(N) + 1, EXACT_V4_MAX_ENTRIES),
        "EXACT_V4 grew to fit the list"
    );
    assert!(!growing.exists(), "the larger map took the old one's pin");
    let exact = pinned_map_id(&env, EXACT_V4);
    assert!(
        linked_map_ids(&env).contains(&exact),
        "the attached program uses the pinned EXACT_V4 ({exact})"
    );

    // The state a writer killed between the swap and the rename leaves.
    let mut loaded = loader::load_growing(&pin, &[(EXACT_V4, 1 << 18, growing.clone())]).unwrap();
    attach::replace(&mut loaded, &pin, &env.lab.filter_if).unwrap();
    drop(loaded);
    assert!(!linked_map_ids(&env).contains(&exact));
    let through = udp(&env.lab.client, CLIENT4, &env.lab.filter, FILTER4, 20, 64);
    assert!(
        through > 0,
        "a program on a map without the client's entry lets it through (what the next writer \
         must mend)"
    );
    // The next writer: a sync with nothing to change.
    env.sync();
    assert!(!growing.exists(), "the half-made map's pin is gone");
    assert!(
        linked_map_ids(&env).contains(&pinned_map_id(&env, EXACT_V4)),
        "the attached program uses the pinned EXACT_V4 again"
    );
    let through = udp(&env.lab.client, CLIENT4, &env.lab.filter, FILTER4, 20, 64);
    assert_eq!(through, 0, "the kept client is dropped again");
    assert_eq!(env.entries_v4(), u64::from(N) + 1);
    let maps = Maps::open(&pin).unwrap();
    for a in [CLIENT4.parse().unwrap(), nth(0), nth(N - 1)] {
        assert!(
            maps.lookup(TrieKind::Block, a).unwrap().is_some(),
            "{a} is in the grown map"
        );
    }
}

/// With nothing attached there is no program to swap: growing only makes
/// the larger map (no program load), and that map is the one a later
/// `attach` takes. A list staged before the first attach is enforced,
/// by the trie lookup too, which probes the grown `EXACT_V4`.
#[test]
fn an_exact_map_grown_before_the_first_attach_is_the_one_attach_takes() {
    use blocklist_agent::datapath::{grow, loader};
    use blocklist_ebpf::{EXACT_V4_MAX_ENTRIES, map_names::EXACT_V4};

    require_root();
    let lab = Lab::new();
    let fs = Bpffs::new();
    let dir = tempfile::tempdir().unwrap();
    let feed = dir.path().join("hosts.txt");
    const N: u32 = 100_000;
    std::fs::write(
        &feed,
        format!("{CLIENT4}/32\n{}", blocklist_tests::addresses(0, N)),
    )
    .unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "{FAST}[datapath]\nlookup = \"trie\"\n[[feed]]\nname = \"f\"\nallow_reserved = true\n\
             url = \"{}\"\n",
            feed.display()
        ),
    )
    .unwrap();
    let agent =
        Agent::new(lab.filter.name(), fs.pin_dir(), dir.path().join("state")).with_config(config);
    assert_eq!(agent.sync_once(&[])["v4"]["added"], N + 1);
    let pin = PinDir::new(fs.pin_dir());
    assert_eq!(
        loader::pinned_entries(&pin, EXACT_V4),
        Some(grow::grown_size(u64::from(N) + 1, EXACT_V4_MAX_ENTRIES)),
        "the staged list grew EXACT_V4"
    );
    let (exact, name) = bpftool::map(&pin.map(EXACT_V4));
    assert_eq!(name, EXACT_V4, "the grown map keeps its name");

    let _attached = agent.attach(&lab.filter_if);
    lab.wait_settled();
    let maps = bpftool::program_maps(&pin.link(&lab.filter_if));
    assert!(
        maps.contains(&exact),
        "the attached program uses the grown EXACT_V4 ({exact}): {maps:?}"
    );
    let through = udp(&lab.client, CLIENT4, &lab.filter, FILTER4, 20, 64);
    assert_eq!(through, 0, "the staged client's packets are dropped");
    let clean = udp(&lab.client, CLIENT4_B, &lab.filter, FILTER4, 20, 64);
    assert!(clean > 0, "an unlisted client gets through");
}
