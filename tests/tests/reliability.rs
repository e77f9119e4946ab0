//! The reliability suite: faults, crash safety, churn under load and
//! hostile input. Each test tries to make the agent lose protection and
//! checks, with the real kernel and real traffic, that it does not.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use blocklist_agent::{
    config::Config,
    datapath::pin::PinDir,
    metrics::{self, FeedIndex, Shared},
    state::StateDir,
};
use blocklist_tests::{
    agent::Agent,
    bpffs::Bpffs,
    feed_server::{FeedServer, Reply},
    lab::{Lab, addr::*},
    require_root,
    traffic::udp,
    venv_python,
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
        require_root();
        let lab = Lab::new();
        let fs = Bpffs::new();
        let dir = tempfile::tempdir().unwrap();
        let agent = Agent::new(lab.filter.name(), fs.pin_dir(), dir.path().join("state"))
            .with_config(dir.path().join("config.toml"));
        std::fs::write(dir.path().join("config.toml"), FAST).unwrap();
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
            format!("{FAST}\n[[feed]]\nname = \"f\"\nurl = \"{feed_url}\"\n{extra}"),
        )
        .unwrap();
    }

    fn sync(&self) -> Value {
        self.agent.run(&["sync", "--once", "--json"]).json()
    }

    fn entries_v4(&self) -> u64 {
        self.agent.run(&["status", "--json"]).json()["tries"][0]["entries"]
            .as_u64()
            .unwrap()
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
    let shared = Shared {
        pin: PinDir::new(env.fs.pin_dir()),
        state: StateDir::new(env.state()),
        config: std::sync::RwLock::new(config),
        index: Arc::new(std::sync::RwLock::new(Arc::new(FeedIndex::default()))),
        last_sync_seconds: std::sync::RwLock::new(None),
        top_n: 5,
    };
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
    let tls = TlsServer::start(&env.lab, env.dir.path());

    let cases: Vec<(&str, String, Vec<Reply>, &str)> = vec![
        ("server down", "http://127.0.0.1:9/f".into(), vec![], ""),
        (
            "HTTP 500 storm",
            server.url("/f"),
            vec![Reply::Status(500)],
            "",
        ),
        (
            "429 storm",
            server.url("/f"),
            vec![Reply::RetryAfter(429, 1)],
            "",
        ),
        (
            "timeout",
            server.url("/f"),
            vec![Reply::Slow {
                body: good.clone().into(),
                delay: Duration::from_secs(4),
            }],
            "",
        ),
        (
            "truncated body",
            server.url("/f"),
            vec![Reply::Truncated {
                body: good.as_bytes()[..100].to_vec(),
                declared: good.len(),
            }],
            "",
        ),
        (
            "slow-loris body",
            server.url("/f"),
            vec![Reply::Trickle {
                body: good.clone().into(),
                every: Duration::from_millis(200),
            }],
            "",
        ),
        (
            "TAXII paging loop",
            server.url("/taxii/collections/c/"),
            vec![],
            "format = \"taxii\"\n",
        ),
        ("untrusted certificate", tls.url(), vec![], ""),
    ];
    for (i, (what, url, replies, extra)) in cases.into_iter().enumerate() {
        if !replies.is_empty() {
            server.set("/f", replies);
        }
        env.config(&url, extra);
        let started = Instant::now();
        let r = env.sync();
        assert_eq!(status_of(&r), "failed", "{what}: {r}");
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
            .contains("certificate")
            || st.to_string().contains("certificate"),
        "{st}"
    );
}

/// A python HTTPS server with a fresh self-signed certificate.
struct TlsServer {
    child: std::process::Child,
    port: u16,
}

impl TlsServer {
    fn start(lab: &Lab, dir: &Path) -> Self {
        let (key, cert) = (dir.join("key.pem"), dir.join("cert.pem"));
        let ok = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=127.0.0.1",
                "-keyout",
            ])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stderr(Stdio::null())
            .status()
            .expect("openssl");
        assert!(ok.success());
        let port = lab.filter.enter(|| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        });
        let script = format!(
            "import http.server, ssl\n\
             s = http.server.HTTPServer(('127.0.0.1', {port}), http.server.SimpleHTTPRequestHandler)\n\
             c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); c.load_cert_chain('{}', '{}')\n\
             s.socket = c.wrap_socket(s.socket, server_side=True)\n\
             s.serve_forever()\n",
            cert.display(),
            key.display()
        );
        let child = Command::new("ip")
            .args(["netns", "exec", lab.filter.name()])
            .arg(venv_python())
            .args(["-c", &script])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if lab
                .filter
                .enter(|| std::net::TcpStream::connect(("127.0.0.1", port)).is_ok())
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Self { child, port }
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}/f", self.port)
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends UDP from the kept client until `stop`, returning (sent, received).
fn flood(env: &Env, stop: &AtomicBool) -> (u64, u64) {
    let (mut sent, mut got) = (0, 0);
    while !stop.load(Ordering::Relaxed) {
        got += udp(&env.lab.client, CLIENT4, &env.lab.filter, FILTER4, 200, 16) as u64;
        sent += 200;
        if sent > 400_000 {
            break;
        }
    }
    (sent, got)
}

#[test]
fn kill_9_mid_sync_then_restart_converges_without_a_gap() {
    let env = Env::new();
    let feed = env.dir.path().join("big.txt");
    std::fs::write(&feed, list(0, 200_000)).unwrap();
    env.config(&feed.display().to_string(), "");
    assert_eq!(env.sync()["v4"]["added"], 200_001);
    std::fs::write(&feed, list(300_000, 200_000)).unwrap();

    let stop = AtomicBool::new(false);
    let (sent, got) = std::thread::scope(|s| {
        let traffic = s.spawn(|| flood(&env, &stop));
        std::thread::sleep(Duration::from_millis(100));
        // Kill the writer part-way through applying 400,000 changes.
        let mut child = env
            .agent
            .command(&["sync", "--once"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(700));
        let _ = child.kill();
        let _ = child.wait();
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
        std::thread::sleep(Duration::from_millis(200));
        stop.store(true, Ordering::Relaxed);
        traffic.join().unwrap()
    });
    assert!(sent > 0);
    assert_eq!(
        got, 0,
        "the pinned program kept dropping the kept address throughout ({sent} sent)"
    );
    assert_eq!(env.entries_v4(), 200_001);
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
    std::fs::write(state.join("feeds/f.entries"), "198.18.0.").unwrap();
    std::fs::write(state.join("feeds/f.json"), "{\"etag\": ").unwrap();
    std::fs::write(state.join("manual.json"), [0xff, 0x00, 0x7b]).unwrap();
    std::fs::write(state.join("attachments.json"), "").unwrap();

    // The feed is down too: nothing may be removed.
    server.set("/f", vec![Reply::Status(503)]);
    let out = env.agent.run(&["sync", "--once", "--json"]);
    let r = out.json();
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
    std::fs::write(&feed, list(0, 100_000)).unwrap();
    env.config(&feed.display().to_string(), "");
    env.sync();
    let stop = AtomicBool::new(false);
    let (sent, got) = std::thread::scope(|s| {
        let traffic = s.spawn(|| flood(&env, &stop));
        for round in 1..=4u32 {
            // Alternate between two disjoint 100,000-entry lists around the
            // kept address: 200,000 kernel changes per round.
            std::fs::write(&feed, list((round % 2) * 150_000, 100_000)).unwrap();
            let r = env.sync();
            assert_eq!(r["v4"]["added"], 100_000, "round {round}: {r}");
            assert_eq!(r["v4"]["removed"], 100_000, "round {round}: {r}");
            assert_eq!(r["v4"]["unchanged"], 1, "round {round}: {r}");
        }
        stop.store(true, Ordering::Relaxed);
        traffic.join().unwrap()
    });
    assert!(sent >= 200, "traffic ran during the churn");
    assert_eq!(
        got, 0,
        "{got} of {sent} packets from the kept address got through"
    );
    let st = env.agent.run(&["status", "--json"]).json();
    assert_eq!(st["interfaces"][0]["link_pinned"], true, "still attached");
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
    env.config(&server.url("/f"), "");
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
    server.set(
        "/f",
        vec![Reply::Truncated {
            body: Vec::new(),
            declared: 1 << 30,
        }],
    );
    let r = env.sync();
    assert_eq!(r["feeds"][0]["status"], "failed", "{r}");
    assert!(r.to_string().contains("larger than"), "{r}");
    server.set(
        "/f",
        vec![Reply::Stream {
            bytes: 1 << 30,
            line: b"198.51.100.1\n".to_vec(),
        }],
    );
    let started = Instant::now();
    let r = env.sync();
    assert_eq!(r["feeds"][0]["status"], "failed", "{r}");
    assert!(r.to_string().contains("larger than"), "{r}");
    assert!(started.elapsed() < Duration::from_secs(60));

    // Deeply nested JSON must not overflow a stack.
    let deep = format!("{}{}", "[".repeat(1_000_000), "]".repeat(1_000_000));
    server.set("/f", vec![Reply::body(deep)]);
    env.config(&server.url("/f"), "format = \"json\"\n");
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
    env.config(&server.url("/f"), "format = \"stix\"\n");
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
