//! Counters, `top`, `check`, Prometheus `/metrics` (checked with the
//! reference `prometheus_client` parser), drop events as JSON lines with a
//! per-address rate limit, and `/healthz`, against the `run` daemon with
//! real traffic of known counts.

use std::{
    io::Write as _,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use blocklist_tests::{
    agent::Agent,
    bpffs::Bpffs,
    lab::{Lab, addr::*},
    require_root,
    traffic::udp,
    venv_python,
};
use serde_json::Value;

const PAYLOAD: usize = 100;
const FRAME: u64 = 14 + 20 + 8 + PAYLOAD as u64;

struct Daemon {
    child: Child,
    agent: Agent,
    lab: Lab,
    fs: Bpffs,
    dir: tempfile::TempDir,
    port: u16,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = self
            .agent
            .try_run(&["detach", "--iface", &self.lab.filter_if]);
    }
}

fn wait_for(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
}

fn start() -> Daemon {
    require_root();
    let lab = Lab::new();
    let fs = Bpffs::new();
    let dir = tempfile::tempdir().unwrap();
    let port = lab.filter.free_port();
    let feed = dir.path().join("feed.txt");
    // Both client addresses (.2, .3) and a documentation range.
    std::fs::write(&feed, "10.77.1.2/31\n192.0.2.0/24\n").unwrap();
    let events = dir.path().join("events.jsonl");
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "interfaces = [\"{}\"]\nsync_interval = \"1h\"\n[[feed]]\nname = \"clients\"\nurl = \"{}\"\n\
             [metrics]\nlisten = \"127.0.0.1:{port}\"\ntop_n = 5\n[events]\noutput = \"{}\"\n",
            lab.filter_if,
            feed.display(),
            events.display()
        ),
    )
    .unwrap();
    let agent =
        Agent::new(lab.filter.name(), fs.pin_dir(), dir.path().join("state")).with_config(config);
    let child = agent
        .command(&["run"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let d = Daemon {
        child,
        agent,
        lab,
        fs,
        dir,
        port,
    };
    wait_for("the first sync", || {
        d.agent
            .try_run(&["check", CLIENT4, "--json"])
            .stdout
            .contains("\"blocked\": true")
    });
    d.lab.wait_settled();
    d
}

impl Daemon {
    fn get(&self, path: &str) -> (u16, String) {
        let url = format!("http://127.0.0.1:{}{path}", self.port);
        self.lab.filter.enter(move || {
            let r = reqwest::blocking::get(&url).expect("GET");
            (r.status().as_u16(), r.text().unwrap_or_default())
        })
    }

    fn json(&self, args: &[&str]) -> Value {
        self.agent.run(args).json()
    }

    fn events(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.path().join("events.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("event line is not JSON ({e}): {l}"))
            })
            .collect()
    }
}

/// Parses OpenMetrics text with the reference parser; returns
/// `[[name, labels, value], ...]`.
fn parse_metrics(text: &str) -> Vec<Value> {
    let script = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = []
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        out.append([s.name, s.labels, s.value])
print(json.dumps(out))
"#;
    let mut child = Command::new(venv_python())
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running the prometheus_client parser (cargo xtask setup installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the reference parser rejected our metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Vec<Value>>(&out.stdout).unwrap()
}

fn sample(samples: &[Value], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| s[0] == name && labels.iter().all(|(k, v)| s[1][*k] == *v))
        .and_then(|s| s[2].as_f64())
}

#[test]
fn counts_top_check_metrics_and_events_agree() {
    let d = start();
    let (n1, n2) = (13u64, 29u64);
    assert_eq!(
        udp(
            &d.lab.client,
            CLIENT4,
            &d.lab.filter,
            FILTER4,
            n1 as u32,
            PAYLOAD
        ),
        0
    );
    assert_eq!(
        udp(
            &d.lab.client,
            CLIENT4_B,
            &d.lab.filter,
            FILTER4,
            n2 as u32,
            PAYLOAD
        ),
        0
    );

    // top by address: exact packets and bytes, the prefix and its feed.
    let top = d.json(&["top", "--json"]);
    let rows = top.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{top}");
    assert_eq!(rows[0]["ip"], CLIENT4_B, "busiest first: {top}");
    assert_eq!(rows[0]["packets"], n2);
    assert_eq!(rows[0]["bytes"], n2 * FRAME);
    assert_eq!(rows[0]["direction"], "src");
    assert_eq!(rows[0]["prefix"], "10.77.1.2/31");
    assert_eq!(rows[0]["feeds"][0], "clients");
    assert_eq!(rows[1]["ip"], CLIENT4);
    assert_eq!(rows[1]["packets"], n1);
    assert!(rows[1]["last_seen"].is_string());
    let by_prefix = d.json(&["top", "--by", "prefix", "--json"]);
    assert_eq!(by_prefix[0]["prefix"], "10.77.1.2/31");
    assert_eq!(by_prefix[0]["packets"], n1 + n2);
    assert_eq!(by_prefix[0]["bytes"], (n1 + n2) * FRAME);
    let by_feed = d.json(&["top", "--by", "feed", "--json"]);
    assert_eq!(by_feed[0]["feed"], "clients");
    assert_eq!(by_feed[0]["packets"], n1 + n2);
    let limited = d.json(&["top", "--limit", "1", "--json"]);
    assert_eq!(limited.as_array().unwrap().len(), 1);
    let human = d.agent.run(&["top"]).stdout;
    assert!(human.lines().all(|l| l.chars().count() <= 80), "{human}");

    // check agrees.
    let c = d.json(&["check", CLIENT4, "--json"]);
    assert_eq!(
        c["block"]["packets"],
        n1 + n2,
        "per-prefix counter covers both addresses"
    );
    assert_eq!(c["block"]["feeds"][0]["feed"], "clients");

    // /metrics parses with the reference parser and has the same numbers.
    let (code, text) = d.get("/metrics");
    assert_eq!(code, 200);
    let samples = parse_metrics(&text);
    let dropped = sample(
        &samples,
        "xdp_blocklist_packets_total",
        &[("action", "dropped"), ("family", "ipv4")],
    );
    assert_eq!(dropped, Some((n1 + n2) as f64), "{text}");
    let dropped_bytes = sample(
        &samples,
        "xdp_blocklist_traffic_bytes_total",
        &[("action", "dropped"), ("family", "ipv4")],
    );
    assert_eq!(dropped_bytes, Some(((n1 + n2) * FRAME) as f64), "{text}");
    assert_eq!(
        sample(
            &samples,
            "xdp_blocklist_feed_blocked_packets_total",
            &[("feed", "clients")]
        ),
        Some((n1 + n2) as f64)
    );
    assert_eq!(
        sample(
            &samples,
            "xdp_blocklist_top_address_packets",
            &[("address", CLIENT4), ("direction", "src")]
        ),
        Some(n1 as f64)
    );
    assert_eq!(
        sample(
            &samples,
            "xdp_blocklist_feed_entries",
            &[("feed", "clients"), ("family", "ipv4")]
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &samples,
            "xdp_blocklist_trie_entries",
            &[("trie", "BLOCK_V4")]
        ),
        Some(2.0)
    );
    assert!(
        sample(
            &samples,
            "xdp_blocklist_feed_last_success_timestamp_seconds",
            &[("feed", "clients")]
        )
        .is_some()
    );
    assert_eq!(
        sample(&samples, "xdp_blocklist_attached", &[("mode", "native")]),
        Some(1.0)
    );
    assert!(
        text.contains("# HELP xdp_blocklist_packets "),
        "HELP text present"
    );

    // One drop event per address (the flood of each lasted well under a second).
    wait_for("drop events", || d.events().len() >= 2);
    std::thread::sleep(Duration::from_millis(300));
    let events = d.events();
    assert_eq!(
        events.len(),
        2,
        "one event per address per second: {events:?}"
    );
    let e = events
        .iter()
        .find(|e| e["src"] == CLIENT4)
        .expect("an event for the first client");
    assert_eq!(e["dst"], FILTER4);
    assert_eq!(e["protocol"], "udp");
    assert!(e["dst_port"].as_u64().is_some());
    assert_eq!(e["direction"], "src");
    assert_eq!(e["prefix"], "10.77.1.2/31");
    assert_eq!(e["feeds"][0], "clients");
    assert_eq!(e["action"], "drop");
    assert_eq!(e["interface"], d.lab.filter_if.as_str());
    assert_eq!(e["bytes"], FRAME);
    assert!(e["timestamp"].as_str().unwrap().ends_with('Z'));

    // status reports the agent and the feed.
    let st = d.json(&["status", "--json"]);
    assert_eq!(st["agent"]["running"], true);
    assert_eq!(st["feeds"][0]["name"], "clients");
    assert_eq!(st["counters"]["events_sent"], 2);
}

#[test]
fn event_rate_limit_holds_under_a_flood_and_healthz_flips() {
    let d = start();
    let sent = 3000;
    let t = Instant::now();
    assert_eq!(
        udp(&d.lab.client, CLIENT4, &d.lab.filter, FILTER4, sent, 32),
        0
    );
    let secs = t.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(500));
    let mine = d
        .events()
        .into_iter()
        .filter(|e| e["src"] == CLIENT4)
        .count() as f64;
    // At most one event per started second of flooding (plus the first).
    assert!(
        mine >= 1.0 && mine <= secs.ceil() + 1.0,
        "{mine} events in {secs:.2} s"
    );
    let c = d.json(&["check", CLIENT4, "--json"]);
    assert_eq!(
        c["block"]["packets"], sent as u64,
        "every packet counted, however few events"
    );

    let (code, body) = d.get("/healthz");
    assert_eq!(code, 200, "{body}");
    d.agent.run(&["detach", "--iface", &d.lab.filter_if]);
    let (code, body) = d.get("/healthz");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("not attached"), "{body}");
    let _ = &d.fs;
}
