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
    traffic::{Flood, udp},
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
    start_with("", "")
}

/// A daemon whose feed section gets `feed_extra` and whose `[events]`
/// section gets `events_extra` (after `output = FILE`, which a later
/// `output` key cannot repeat: pass the whole section in `events_extra`
/// starting with `output` to replace it).
fn start_with(feed_extra: &str, events_extra: &str) -> Daemon {
    start_listing("10.77.1.2/31\n192.0.2.0/24\n", feed_extra, events_extra)
}

/// [`start_with`], the `clients` feed listing `body`; ready once the
/// program matches the client address (blocks or monitors it).
fn start_listing(body: &str, feed_extra: &str, events_extra: &str) -> Daemon {
    require_root();
    let lab = Lab::new();
    let fs = Bpffs::new();
    let dir = tempfile::tempdir().unwrap();
    let port = lab.filter.free_port();
    let feed = dir.path().join("feed.txt");
    // By default both client addresses (.2, .3) and a documentation range.
    std::fs::write(&feed, body).unwrap();
    let events = dir.path().join("events.jsonl");
    let config = dir.path().join("config.toml");
    let events_section = if events_extra.starts_with("output") {
        events_extra.to_owned()
    } else {
        format!("output = \"{}\"\n{events_extra}", events.display())
    };
    std::fs::write(
        &config,
        format!(
            "interfaces = [\"{}\"]\nsync_interval = \"1h\"\n[[feed]]\nname = \"clients\"\nallow_reserved = true\nurl = \"{}\"\n{feed_extra}\
             [metrics]\nlisten = \"127.0.0.1:{port}\"\ntop_n = 5\n[events]\n{events_section}",
            lab.filter_if,
            feed.display(),
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
        serde_json::from_str::<Value>(&d.agent.try_run(&["check", CLIENT4, "--json"]).stdout)
            .is_ok_and(|c| c["blocked"] == true || c["monitored"] == true)
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
    let max_v4 = d.json(&["status", "--json"])["tries"][0]["max_entries"]
        .as_f64()
        .unwrap();
    assert_eq!(
        sample(
            &samples,
            "xdp_blocklist_trie_fill_ratio",
            &[("trie", "BLOCK_V4")]
        ),
        Some(2.0 / max_v4),
        "{text}"
    );
    assert_eq!(
        sample(
            &samples,
            "xdp_blocklist_feed_guard_refusals_total",
            &[("feed", "clients")]
        ),
        Some(0.0)
    );
    let took = sample(&samples, "xdp_blocklist_last_sync_duration_seconds", &[])
        .expect("the last sync's duration is exported");
    assert!(took > 0.0 && took < 600.0, "{took}");
    assert_eq!(
        sample(
            &samples,
            "xdp_blocklist_drop_events_total",
            &[("outcome", "lost")]
        ),
        Some(0.0)
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
    for t in [&st["agent"]["since"], &st["feeds"][0]["last_success"]] {
        assert!(t.as_str().is_some_and(|t| t.ends_with('Z')), "{t}");
    }
    assert_eq!(st["counters"]["events_sent"], 2);
    let samples = parse_metrics(&d.get("/metrics").1);
    assert_eq!(
        sample(
            &samples,
            "xdp_blocklist_drop_events_total",
            &[("outcome", "sent")]
        ),
        Some(2.0)
    );
}

#[test]
fn event_rate_limit_holds_under_a_flood_and_healthz_flips() {
    // One hour between two events for one address: a limiter that lets a
    // second one through at any shorter interval fails this.
    // The flood lasts 5 s, so a limiter off by a factor (the unit, a
    // default that ignores the setting) shows as a second event.
    let d = start_with("", "per_address_interval = \"1h\"\n");
    let flood = Flood::start(
        &d.lab.client,
        CLIENT4,
        &d.lab.filter,
        FILTER4,
        32,
        Duration::from_secs(5),
    );
    std::thread::sleep(Duration::from_secs(6));
    let (sent, received) = flood.stop();
    assert_eq!(received, 0);
    wait_for("the drop event", || !d.events().is_empty());
    std::thread::sleep(Duration::from_millis(500));
    let mine = d
        .events()
        .into_iter()
        .filter(|e| e["src"] == CLIENT4)
        .count();
    assert_eq!(mine, 1, "exactly one event per address per hour");
    let c = d.json(&["check", CLIENT4, "--json"]);
    assert_eq!(
        c["block"]["packets"], sent,
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

#[test]
fn events_can_be_turned_off_in_the_kernel() {
    let d = start_with("", "per_address_interval = \"0s\"\n");
    assert_eq!(
        udp(&d.lab.client, CLIENT4, &d.lab.filter, FILTER4, 50, 32),
        0
    );
    std::thread::sleep(Duration::from_millis(500));
    let st = d.json(&["status", "--json"]);
    assert_eq!(st["counters"]["events_sent"], 0, "{st}");
    assert_eq!(st["counters"]["events_lost"], 0, "{st}");
    assert!(d.events().is_empty(), "no event written");
    assert_eq!(
        d.json(&["check", CLIENT4, "--json"])["block"]["packets"],
        50
    );
}

#[test]
fn events_file_is_reopened_on_sighup() {
    let d = start();
    assert_eq!(
        udp(&d.lab.client, CLIENT4, &d.lab.filter, FILTER4, 3, 32),
        0
    );
    wait_for("the first event", || d.events().len() == 1);
    // logrotate moves the file away, then signals the agent.
    let path = d.dir.path().join("events.jsonl");
    let rotated = d.dir.path().join("events.jsonl.1");
    std::fs::rename(&path, &rotated).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(d.child.id() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    // The reopen happens before the next event is written; a new address
    // makes the next event.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        udp(&d.lab.client, CLIENT4_B, &d.lab.filter, FILTER4, 3, 32),
        0
    );
    wait_for("an event in the new file", || d.events().len() == 1);
    let new = d.events();
    assert_eq!(new[0]["src"], CLIENT4_B, "{new:?}");
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert_eq!(
        old.lines().count(),
        1,
        "the old file kept only its event: {old}"
    );
    assert!(old.contains(CLIENT4), "{old}");
}

#[test]
fn events_go_to_a_syslog_socket_as_rfc_5424() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("log.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let d = start_with(
        "",
        &format!(
            "output = \"syslog\"\nsyslog_socket = \"{}\"\n",
            sock_path.display()
        ),
    );
    assert_eq!(
        udp(&d.lab.client, CLIENT4, &d.lab.filter, FILTER4, 3, 32),
        0
    );
    let mut buf = vec![0u8; 4096];
    let n = sock.recv(&mut buf).expect("a syslog datagram within 15 s");
    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
    // <PRI>VERSION TIMESTAMP HOST APP PROCID MSGID SD MSG
    assert!(msg.starts_with("<13>1 "), "{msg}");
    let fields: Vec<&str> = msg.splitn(8, ' ').collect();
    assert_eq!(fields[3], "xdp-blocklist", "{msg}");
    assert_eq!(fields[5], "drop", "{msg}");
    assert_eq!(fields[6], "-", "{msg}");
    let event: Value = serde_json::from_str(fields[7]).expect("the message is the JSON event");
    assert_eq!(event["src"], CLIENT4);
    assert_eq!(event["prefix"], "10.77.1.2/31");
}

#[test]
fn healthz_turns_503_when_a_feed_goes_stale_and_refusals_are_counted() {
    // The feed is fetched every second; an empty list is refused, so after
    // three intervals without a success the feed is stale.
    let d = start_with("interval = \"1s\"\n", "");
    let (code, body) = d.get("/healthz");
    assert_eq!(code, 200, "{body}");
    std::fs::write(d.dir.path().join("feed.txt"), "").unwrap();
    wait_for("a stale feed in /healthz", || {
        let (code, body) = d.get("/healthz");
        code == 503 && body.contains("feed clients has not synced successfully")
    });
    let refusals = || {
        d.json(&["status", "--json"])["feeds"][0]["refusals"]
            .as_u64()
            .unwrap()
    };
    let before = refusals();
    let samples = parse_metrics(&d.get("/metrics").1);
    let after = refusals();
    let metric = sample(
        &samples,
        "xdp_blocklist_feed_guard_refusals_total",
        &[("feed", "clients")],
    )
    .unwrap() as u64;
    assert!(before >= 2, "refused at every poll: {before}");
    assert!(
        before <= metric && metric <= after,
        "the metric ({metric}) is the refusal count ({before}..={after})"
    );
    // Protection kept.
    assert_eq!(
        udp(&d.lab.client, CLIENT4, &d.lab.filter, FILTER4, 3, 32),
        0
    );
}

/// `/metrics` as the agent would render it for the maps of `k`, parsed.
fn kernel_metrics(k: &blocklist_tests::kernel::Kernel) -> Vec<Value> {
    use blocklist_agent::{
        config::Config,
        datapath::pin::PinDir,
        read::listing::FeedIndex,
        read::metrics::{self, Shared},
        state::StateDir,
    };
    let state = tempfile::tempdir().unwrap();
    let shared = Shared::new(
        PinDir::new(k.pin_dir()),
        StateDir::new(state.path().to_owned()),
        Config::parse("[metrics]\ntop_n = 5\n", std::path::Path::new("c.toml")).unwrap(),
        std::sync::Arc::new(std::sync::RwLock::new(std::sync::Arc::new(
            FeedIndex::default(),
        ))),
    );
    parse_metrics(&metrics::render(&shared).unwrap())
}

/// A burst from many new addresses sends at most the per-CPU budget of
/// events in a second; the rest are counted as suppressed, never reach the
/// ring, and /metrics says so.
#[test]
fn events_over_the_per_cpu_budget_are_suppressed_and_counted() {
    require_root();
    let mut k = blocklist_tests::kernel::Kernel::load();
    k.block("198.18.0.0/16");
    let mut c = k.maps.config().unwrap();
    c.event_budget = 100;
    k.maps.set_config(c).unwrap();
    let n = 2_000u32;
    let started = Instant::now();
    for i in 0..n {
        let src = std::net::Ipv4Addr::from(0xc612_0000u32 + i);
        let f = blocklist_tests::frames::ipv4(src, "10.9.9.9".parse().unwrap());
        assert_eq!(k.verdict(&f), blocklist_agent::datapath::test_run::XDP_DROP);
    }
    // Every frame ran on this thread's CPU; a second's window may have
    // turned over once if the loop took longer than that.
    let windows = 1 + started.elapsed().as_secs();
    let g = k.global();
    assert_eq!(g.events_lost, 0, "{g:?}");
    // An event is due for each address that takes a per-address slot (a
    // few of the 2,000 collide with others in the 8,192 slots and do not).
    let due = g.events_sent + g.events_suppressed;
    assert!(
        due <= n as u64 && due >= n as u64 * 3 / 4,
        "each new address that took a slot had an event due, sent or suppressed: {g:?}"
    );
    assert!(g.events_suppressed > 0, "{g:?}");
    assert!(
        g.events_sent >= 100 && g.events_sent <= 100 * windows,
        "at most the budget of 100 per second: {g:?}"
    );
    let samples = kernel_metrics(&k);
    assert_eq!(
        sample(
            &samples,
            "xdp_blocklist_drop_events_total",
            &[("outcome", "suppressed")]
        ),
        Some(g.events_suppressed as f64)
    );
}

/// Drop events that do not fit in the ring buffer (nobody reads it here)
/// are counted as lost, and /metrics says so.
#[test]
fn events_lost_when_the_ring_is_full_are_counted() {
    require_root();
    let mut k = blocklist_tests::kernel::Kernel::load();
    k.block("198.18.0.0/16");
    // Lift the per-CPU budget so the ring is what overflows.
    let mut c = k.maps.config().unwrap();
    c.event_budget = 1_000_000;
    k.maps.set_config(c).unwrap();
    let n = 20_000u32;
    for i in 0..n {
        let src = std::net::Ipv4Addr::from(0xc612_0000u32 + i);
        let f = blocklist_tests::frames::ipv4(src, "10.9.9.9".parse().unwrap());
        assert_eq!(k.verdict(&f), blocklist_agent::datapath::test_run::XDP_DROP);
    }
    let g = k.global();
    assert!(
        g.events_lost > 0,
        "a {n}-event burst overflows the ring: {g:?}"
    );
    // An event is due for each new address that takes one of the 8,192
    // per-address slots; the ring holds a few thousand of them.
    let due = g.events_sent + g.events_lost;
    assert!(
        due <= n as u64 && due >= 4096,
        "the events due were sent or lost, none suppressed: {g:?}"
    );
    assert_eq!(g.events_suppressed, 0, "{g:?}");
    let samples = kernel_metrics(&k);
    assert_eq!(
        sample(
            &samples,
            "xdp_blocklist_drop_events_total",
            &[("outcome", "lost")]
        ),
        Some(g.events_lost as f64)
    );
    assert_eq!(
        sample(
            &samples,
            "xdp_blocklist_drop_events_total",
            &[("outcome", "sent")]
        ),
        Some(g.events_sent as f64)
    );
}

/// A feed tried with `action = "monitor"` beside a drop feed, through the
/// daemon with real traffic: an address only the monitor feed lists is
/// counted and passes (`check`, `top`, `/metrics`, events say
/// `monitor`); one both feeds list drops, as does one inside a wider
/// entry of the drop feed; when the drop feed stops listing an address
/// the delta sync turns its entry into a monitor entry, and back.
#[test]
fn a_monitor_feed_counts_and_passes_and_drop_wins() {
    let extra = tempfile::tempdir().unwrap();
    let enforce = extra.path().join("enforce.txt");
    std::fs::write(&enforce, format!("{CLIENT4_B}\n198.51.100.0/24\n")).unwrap();
    let d = start_listing(
        &format!("{CLIENT4}\n{CLIENT4_B}\n198.51.100.7\n"),
        &format!(
            "action = \"monitor\"\n\
             [[feed]]\nname = \"enforce\"\nallow_reserved = true\ninterval = \"1s\"\nurl = \"{}\"\n",
            enforce.display()
        ),
        "",
    );
    let (n1, n2) = (11u64, 7u64);
    let send = |src: &str, n: u64| {
        udp(
            &d.lab.client,
            src,
            &d.lab.filter,
            FILTER4,
            n as u32,
            PAYLOAD,
        )
    };
    assert_eq!(
        send(CLIENT4, n1),
        n1 as u32,
        "only a monitor feed lists it: it passes"
    );
    assert_eq!(send(CLIENT4_B, n2), 0, "a drop feed lists it too: it drops");

    let c = d.json(&["check", CLIENT4, "--json"]);
    assert_eq!(
        (&c["blocked"], &c["monitored"], &c["block"]["action"]),
        (
            &Value::from(false),
            &Value::from(true),
            &Value::from("monitor")
        ),
        "{c}"
    );
    assert_eq!(c["block"]["packets"], n1, "{c}");
    let c = d.json(&["check", CLIENT4_B, "--json"]);
    assert_eq!(
        (&c["blocked"], &c["block"]["action"]),
        (&Value::from(true), &Value::from("drop")),
        "{c}"
    );
    let c = d.json(&["check", "198.51.100.7", "--json"]);
    assert_eq!(
        c["blocked"], true,
        "inside the drop feed's /24, the monitor /32 drops: {c}"
    );
    let human = d.agent.run(&["check", CLIENT4]).stdout;
    assert!(human.contains("MONITORED"), "{human}");

    let top = d.json(&["top", "--json"]);
    let row = |ip: &str| {
        top.as_array()
            .unwrap()
            .iter()
            .find(|r| r["ip"] == ip)
            .cloned()
            .unwrap_or_else(|| panic!("{ip} not in {top}"))
    };
    assert_eq!(
        (&row(CLIENT4)["action"], &row(CLIENT4)["packets"]),
        (&Value::from("monitor"), &Value::from(n1))
    );
    assert_eq!(
        (&row(CLIENT4_B)["action"], &row(CLIENT4_B)["packets"]),
        (&Value::from("drop"), &Value::from(n2))
    );
    let human = d.agent.run(&["top"]).stdout;
    assert!(human.contains("[monitor]"), "{human}");

    let (_, text) = d.get("/metrics");
    let samples = parse_metrics(&text);
    assert_eq!(
        sample(
            &samples,
            "xdp_blocklist_feed_monitored_packets_total",
            &[("feed", "clients")]
        ),
        Some(n1 as f64),
        "{text}"
    );
    assert_eq!(
        sample(
            &samples,
            "xdp_blocklist_feed_blocked_packets_total",
            &[("feed", "enforce")]
        ),
        Some(n2 as f64),
        "{text}"
    );
    assert_eq!(
        sample(
            &samples,
            "xdp_blocklist_packets_total",
            &[("action", "monitored")]
        ),
        Some(n1 as f64),
        "{text}"
    );
    assert_eq!(
        sample(
            &samples,
            "xdp_blocklist_packets_total",
            &[("action", "dropped"), ("family", "ipv4")]
        ),
        Some(n2 as f64),
        "{text}"
    );

    wait_for("events for both clients", || {
        let ev = d.events();
        [CLIENT4, CLIENT4_B]
            .iter()
            .all(|ip| ev.iter().any(|e| e["src"] == *ip))
    });
    let ev = d.events();
    let action_of = |ip: &str| ev.iter().find(|e| e["src"] == ip).unwrap()["action"].clone();
    assert_eq!(action_of(CLIENT4), "monitor");
    assert_eq!(action_of(CLIENT4_B), "drop");

    let status = d.json(&["status", "--json"]);
    let feed = |name: &str| {
        status["feeds"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == name)
            .cloned()
            .unwrap()
    };
    assert_eq!(feed("clients")["action"], "monitor", "{status}");
    assert_eq!(feed("enforce")["action"], "drop", "{status}");

    // The drop feed lets go of CLIENT4_B: the next (delta) sync rewrites
    // its entry to monitor, and it passes; listed again, it drops again.
    let monitored = |ip: &str| d.json(&["check", ip, "--json"])["monitored"] == true;
    std::fs::write(&enforce, "198.51.100.0/24\n").unwrap();
    wait_for("the entry to turn into a monitor entry", || {
        monitored(CLIENT4_B)
    });
    assert_eq!(send(CLIENT4_B, 3), 3);
    std::fs::write(&enforce, format!("{CLIENT4_B}\n198.51.100.0/24\n")).unwrap();
    wait_for("the entry to drop again", || {
        d.json(&["check", CLIENT4_B, "--json"])["blocked"] == true
    });
    assert_eq!(send(CLIENT4_B, 3), 0);
    // The /24 goes: the monitor /32 inside it monitors again.
    std::fs::write(&enforce, format!("{CLIENT4_B}\n")).unwrap();
    wait_for("the /32 under the removed /24 to monitor", || {
        monitored("198.51.100.7")
    });
}
