//! End to end: the real agent binary attaches the program to a veth in a
//! filtering namespace; real ICMP, UDP and TCP traffic from a client
//! namespace is blocked and unblocked by `block`/`unblock`; destination
//! matching is shown on traffic forwarded to a server namespace behind the
//! filter; counters match the packets sent; an agent restart keeps entries
//! and counters.

use std::time::Duration;

use blocklist_agent::datapath::pin::PinDir;
use blocklist_tests::{
    agent::{Agent, Run},
    bpffs::Bpffs,
    ingress::{ForeignXdp, Ingress, ingress_under_test, tc_attachment_under_test},
    lab::{Lab, addr::*},
    require_root,
    traffic::{Flood, ping, tcp_connects, udp},
};

/// A lab with the agent attached to the filter's client-facing interface:
/// by XDP in the mode asked for, or, when the suite runs on TC ingress
/// (`XDPBL_INGRESS=tc`), as a TC classifier beside a foreign XDP program
/// that holds the interface.
struct Setup {
    /// Before `lab`: unloaded while the namespace still exists.
    _foreign: Option<ForeignXdp>,
    agent: Agent,
    lab: Lab,
    _fs: Bpffs,
    _state: tempfile::TempDir,
}

impl Setup {
    fn new(mode: &str) -> Self {
        require_root();
        let lab = Lab::new();
        let fs = Bpffs::new();
        let state = tempfile::tempdir().unwrap();
        let agent = Agent::new(lab.filter.name(), fs.pin_dir(), state.path().to_owned());
        let (mode, foreign) = match ingress_under_test() {
            Ingress::Xdp => (mode, None),
            Ingress::Tc => {
                let foreign = ForeignXdp::attach(&lab.filter, &lab.filter_if, mode);
                let r = agent.try_run(&["attach", "--iface", &lab.filter_if, "--mode", "auto"]);
                assert_fails(&r, 1, "another XDP program is attached");
                assert!(r.stderr.contains("--mode tc"), "{}", r.stderr);
                ("tc", Some(foreign))
            }
        };
        let out = agent.run(&["attach", "--iface", &lab.filter_if, "--mode", mode]);
        assert!(
            out.stdout.contains(&format!("in {mode} mode")),
            "attach did not say which mode it got: {}",
            out.stdout
        );
        if mode == "tc" {
            let how = tc_attachment_under_test();
            assert!(
                out.stdout.contains(how),
                "not attached by {how}: {}",
                out.stdout
            );
        }
        if foreign.is_some() {
            let link = lab
                .filter
                .exec(&["ip", "link", "show", "dev", &lab.filter_if]);
            assert!(
                String::from_utf8_lossy(&link.stdout).contains("xdp"),
                "the foreign XDP program was displaced"
            );
        }
        Self {
            _foreign: foreign,
            agent,
            lab,
            _fs: fs,
            _state: state,
        }
    }

    fn check(&self, ip: &str) -> serde_json::Value {
        self.agent.run(&["check", ip, "--json"]).json()
    }

    fn status(&self) -> serde_json::Value {
        self.agent.run(&["status", "--json"]).json()
    }

    /// The id of the program the interface's pinned hook runs: the
    /// pinned link's program, or the pinned program itself (a TC
    /// classifier under clsact, `XDP_BLOCKLIST_TC=clsact`).
    fn link_prog_id(&self) -> u64 {
        blocklist_tests::bpftool::program_id(
            &PinDir::new(self._fs.pin_dir()).link(&self.lab.filter_if),
        )
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        // Detach explicitly so a failing test does not leave a link behind;
        // deleting the namespaces would remove it too.
        let _ = self
            .agent
            .try_run(&["detach", "--iface", &self.lab.filter_if]);
    }
}

const PAYLOAD: usize = 100;
/// Ethernet + IPv4 + UDP headers around the payload.
const UDP4_FRAME: u64 = 14 + 20 + 8 + PAYLOAD as u64;
/// Ethernet + IPv6 + UDP headers around the payload.
const UDP6_FRAME: u64 = 14 + 40 + 8 + PAYLOAD as u64;

fn block_and_unblock_all_protocols(mode: &str) {
    let s = Setup::new(mode);
    let l = &s.lab;
    // Everything flows before anything is blocked.
    assert_eq!(
        ping(&l.client, Some(CLIENT4), FILTER4, 5),
        5,
        "IPv4 ping before blocking"
    );
    assert_eq!(
        ping(&l.client, Some(CLIENT6), FILTER6, 5),
        5,
        "IPv6 ping before blocking"
    );
    assert_eq!(udp(&l.client, CLIENT4, &l.filter, FILTER4, 20, PAYLOAD), 20);
    assert_eq!(udp(&l.client, CLIENT6, &l.filter, FILTER6, 20, PAYLOAD), 20);
    assert!(tcp_connects(&l.client, CLIENT4, &l.filter, FILTER4));
    assert!(tcp_connects(&l.client, CLIENT6, &l.filter, FILTER6));

    s.agent
        .run(&["block", &format!("{CLIENT4}/32"), &format!("{CLIENT6}/128")]);

    assert_eq!(
        ping(&l.client, Some(CLIENT4), FILTER4, 5),
        0,
        "IPv4 ping from a blocked source"
    );
    assert_eq!(
        udp(&l.client, CLIENT4, &l.filter, FILTER4, 30, PAYLOAD),
        0,
        "IPv4 UDP"
    );
    assert!(
        !tcp_connects(&l.client, CLIENT4, &l.filter, FILTER4),
        "IPv4 TCP"
    );
    // The other client address is not listed and still gets through.
    assert_eq!(
        ping(&l.client, Some(CLIENT4_B), FILTER4, 5),
        5,
        "unlisted source"
    );
    assert_eq!(
        ping(&l.client, Some(CLIENT6), FILTER6, 5),
        0,
        "IPv6 ping from a blocked source"
    );
    assert_eq!(
        udp(&l.client, CLIENT6, &l.filter, FILTER6, 30, PAYLOAD),
        0,
        "IPv6 UDP"
    );
    assert!(
        !tcp_connects(&l.client, CLIENT6, &l.filter, FILTER6),
        "IPv6 TCP"
    );

    let c4 = s.check(CLIENT4);
    assert_eq!(c4["blocked"], true);
    assert_eq!(c4["block"]["prefix"], format!("{CLIENT4}/32"));
    // 5 echo requests + 30 datagrams + at least one SYN (retransmits vary).
    let packets = c4["block"]["packets"].as_u64().unwrap();
    assert!(packets >= 36, "IPv4 prefix counted {packets} packets");
    let st = s.status();
    assert!(st["counters"]["dropped_v4_packets"].as_u64().unwrap() >= 36);
    assert!(st["counters"]["dropped_v6_packets"].as_u64().unwrap() >= 36);
    let (mode, hook) = match ingress_under_test() {
        Ingress::Xdp => (mode, "xdp"),
        Ingress::Tc => ("tc", "tc_ingress"),
    };
    assert_eq!(st["interfaces"][0]["mode"], mode);
    assert_eq!(st["hooks"][0]["hook"], hook, "{}", st["hooks"]);
    // Timestamps are RFC 3339 text, to the second.
    for since in [&st["interfaces"][0]["since"], &st["hooks"][0]["since"]] {
        let text = since.as_str().unwrap_or_else(|| panic!("since: {since}"));
        assert!(text.len() == 20 && text.ends_with('Z'), "{text}");
    }
    let by_hook = st["hook_counters"][hook]["dropped_packets"]
        .as_u64()
        .unwrap();
    assert!(by_hook >= 72, "{hook} counted {by_hook} drops");
    // The suite runs once per lookup (XDP_BLOCKLIST_LOOKUP), and the
    // agent must really be deciding with the one under test.
    assert_eq!(
        st["lookup"],
        blocklist_tests::kernel::lookup_under_test().name()
    );
    assert_eq!(st["table"]["dirty"], false);

    s.agent.run(&[
        "unblock",
        &format!("{CLIENT4}/32"),
        &format!("{CLIENT6}/128"),
    ]);
    assert_eq!(
        ping(&l.client, Some(CLIENT4), FILTER4, 5),
        5,
        "IPv4 after unblock"
    );
    assert_eq!(
        ping(&l.client, Some(CLIENT6), FILTER6, 5),
        5,
        "IPv6 after unblock"
    );
    assert_eq!(udp(&l.client, CLIENT4, &l.filter, FILTER4, 20, PAYLOAD), 20);
    assert!(tcp_connects(&l.client, CLIENT4, &l.filter, FILTER4));
    assert_eq!(s.check(CLIENT4)["blocked"], false);
}

#[test]
fn block_and_unblock_native_mode() {
    block_and_unblock_all_protocols("native");
}

#[test]
fn block_and_unblock_skb_mode() {
    block_and_unblock_all_protocols("skb");
}

#[test]
fn counters_match_the_packets_sent() {
    let s = Setup::new("native");
    let l = &s.lab;
    s.agent.run(&["block", "10.77.1.0/24", "fd00:77:1::/64"]);
    let (n4, n6) = (37u64, 23u64);
    assert_eq!(
        udp(&l.client, CLIENT4, &l.filter, FILTER4, n4 as u32, PAYLOAD),
        0
    );
    assert_eq!(
        udp(&l.client, CLIENT6, &l.filter, FILTER6, n6 as u32, PAYLOAD),
        0
    );
    let c4 = s.check(CLIENT4);
    assert_eq!(c4["block"]["prefix"], "10.77.1.0/24");
    assert_eq!(c4["block"]["packets"], n4, "IPv4 packets");
    assert_eq!(c4["block"]["bytes"], n4 * UDP4_FRAME, "IPv4 bytes");
    assert!(c4["block"]["last_seen"].is_string());
    let c6 = s.check(CLIENT6);
    assert_eq!(c6["block"]["prefix"], "fd00:77:1::/64");
    assert_eq!(c6["block"]["packets"], n6, "IPv6 packets");
    assert_eq!(c6["block"]["bytes"], n6 * UDP6_FRAME, "IPv6 bytes");
    let st = s.status();
    assert_eq!(st["counters"]["dropped_v4_packets"], n4);
    assert_eq!(st["counters"]["dropped_v4_bytes"], n4 * UDP4_FRAME);
    assert_eq!(st["counters"]["dropped_v6_packets"], n6);
    assert_eq!(st["counters"]["dropped_v6_bytes"], n6 * UDP6_FRAME);
}

#[test]
fn destination_match_on_forwarded_traffic() {
    let s = Setup::new("native");
    let l = &s.lab;
    assert_eq!(
        ping(&l.client, None, SERVER4, 3),
        3,
        "forwarding works before blocking"
    );
    assert_eq!(
        ping(&l.client, None, SERVER6, 3),
        3,
        "IPv6 forwarding works"
    );
    s.agent.run(&["block", SERVER4, SERVER6]);
    assert_eq!(
        udp(&l.client, CLIENT4, &l.server, SERVER4, 10, PAYLOAD),
        0,
        "dst match, IPv4"
    );
    assert_eq!(
        udp(&l.client, CLIENT6, &l.server, SERVER6, 10, PAYLOAD),
        0,
        "dst match, IPv6"
    );
    assert!(!tcp_connects(&l.client, CLIENT4, &l.server, SERVER4));
    let ip_hits = s.check(SERVER4)["block"]["packets"].as_u64().unwrap();
    assert!(ip_hits >= 11, "destination prefix counted {ip_hits}");

    // Matching sources only: the destination entry no longer applies.
    s.agent.run(&["mode", "--match", "src"]);
    assert_eq!(udp(&l.client, CLIENT4, &l.server, SERVER4, 10, PAYLOAD), 10);
    s.agent.run(&["mode", "--match", "dst"]);
    assert_eq!(udp(&l.client, CLIENT4, &l.server, SERVER4, 10, PAYLOAD), 0);
    // Monitor: counted, passed.
    s.agent
        .run(&["mode", "--match", "both", "--action", "monitor"]);
    let before = s.status()["counters"]["monitored_packets"]
        .as_u64()
        .unwrap();
    assert_eq!(udp(&l.client, CLIENT4, &l.server, SERVER4, 10, PAYLOAD), 10);
    let after = s.status()["counters"]["monitored_packets"]
        .as_u64()
        .unwrap();
    assert_eq!(after - before, 10);
    assert_eq!(s.status()["action"], "monitor");
}

#[test]
fn allow_entries_win_end_to_end() {
    let s = Setup::new("skb");
    let l = &s.lab;
    // Both client addresses (.2 and .3), not the filter's own (.1).
    s.agent.run(&["block", "10.77.1.2/31"]);
    s.agent.run(&["allow", CLIENT4_B]);
    assert_eq!(ping(&l.client, Some(CLIENT4), FILTER4, 3), 0);
    assert_eq!(ping(&l.client, Some(CLIENT4_B), FILTER4, 3), 3);
    let c = s.check(CLIENT4_B);
    assert_eq!(c["blocked"], false);
    assert_eq!(c["allow"]["prefix"], format!("{CLIENT4_B}/32"));
    assert!(
        s.status()["counters"]["allowlisted_packets"]
            .as_u64()
            .unwrap()
            >= 3
    );
    s.agent.run(&["unallow", CLIENT4_B]);
    assert_eq!(ping(&l.client, Some(CLIENT4_B), FILTER4, 3), 0);
}

#[test]
fn restart_keeps_entries_and_counters() {
    let s = Setup::new("native");
    let l = &s.lab;
    s.agent.run(&["block", CLIENT4, "fd00:77:1::/64"]);
    assert_eq!(udp(&l.client, CLIENT4, &l.filter, FILTER4, 12, PAYLOAD), 0);
    assert_eq!(s.check(CLIENT4)["block"]["packets"], 12);

    // No agent process runs between commands: the pinned link and maps
    // keep protecting. A restart loads a new program onto the same link,
    // atomically: a flood from the blocked address runs across the swap,
    // and every datagram is counted and none arrives.
    let old_prog = s.link_prog_id();
    let flood = Flood::start(
        &l.client,
        CLIENT4,
        &l.filter,
        FILTER4,
        PAYLOAD,
        Duration::from_secs(60),
    );
    std::thread::sleep(Duration::from_millis(300));
    let out = s
        .agent
        .run(&["attach", "--iface", &l.filter_if, "--replace"]);
    std::thread::sleep(Duration::from_millis(300));
    let (sent, received) = flood.stop();
    assert!(out.stdout.contains("replaced"), "{}", out.stdout);
    let new_prog = s.link_prog_id();
    assert_ne!(
        old_prog, new_prog,
        "the pinned link runs a new program after --replace"
    );
    assert!(sent >= 100, "the flood ran across the swap ({sent} sent)");
    assert_eq!(
        received, 0,
        "{received} of {sent} got through during the swap"
    );
    let c = s.check(CLIENT4);
    assert_eq!(c["blocked"], true, "entries survive the restart");
    assert_eq!(
        c["block"]["packets"],
        12 + sent,
        "counters survive the restart, and every datagram of the flood was counted by the old or the new program"
    );
    assert_eq!(s.check(CLIENT6)["blocked"], true);

    assert_eq!(
        udp(&l.client, CLIENT4, &l.filter, FILTER4, 8, PAYLOAD),
        0,
        "still dropping"
    );
    assert_eq!(
        s.check(CLIENT4)["block"]["packets"],
        20 + sent,
        "counting continues"
    );
    assert_eq!(
        ping(&l.client, Some(CLIENT4_B), FILTER4, 3),
        3,
        "others still pass"
    );
}

fn assert_fails(r: &Run, code: i32, needle: &str) {
    assert_eq!(r.code, code, "stdout: {}\nstderr: {}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains(needle),
        "stderr lacks {needle:?}: {}",
        r.stderr
    );
    assert_eq!(
        r.stderr.trim().lines().count(),
        1,
        "one-line error: {}",
        r.stderr
    );
}

#[test]
fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let s = Setup::new("skb");
    let l = &s.lab;
    // Attaching twice.
    let r = s.agent.try_run(&["attach", "--iface", &l.filter_if]);
    assert_fails(&r, 1, "already attached");
    // A missing interface.
    let r = s.agent.try_run(&["attach", "--iface", "nosuchif0"]);
    assert_fails(&r, 1, "does not exist");
    // Over-broad prefixes, with a valid one beside them: nothing is added.
    for broad in ["0.0.0.0/0", "::/0", "10.0.0.0/7", "2001::/15"] {
        let r = s.agent.try_run(&["block", "192.0.2.1", broad]);
        assert_fails(&r, 1, "broader than the minimum");
    }
    let r = s.agent.try_run(&["block", "192.0.2.1", "not-an-ip"]);
    assert_fails(&r, 1, "not an IP address");
    let st = s.status();
    assert_eq!(st["tries"][0]["entries"], 0, "nothing was added: {st}");
    assert_eq!(st["tries"][1]["entries"], 0);
    // Host bits are masked.
    let out = s.agent.run(&["block", "10.1.2.3/24"]);
    assert!(out.stdout.contains("10.1.2.0/24"), "{}", out.stdout);
    // Usage errors exit 2.
    let r = s.agent.try_run(&["block"]);
    assert_eq!(r.code, 2);
    let r = s.agent.try_run(&["mode", "--action", "explode"]);
    assert_eq!(r.code, 2);
    // check of a non-address.
    let r = s.agent.try_run(&["check", "10.0.0.300"]);
    assert_fails(&r, 1, "not an IP address");
}

#[test]
fn detach_removes_the_link_and_then_the_pins() {
    let s = Setup::new("native");
    let (lab, agent) = (&s.lab, &s.agent);
    agent.run(&["block", CLIENT4]);
    assert_eq!(ping(&lab.client, Some(CLIENT4), FILTER4, 3), 0);
    let out = agent.run(&["detach", "--iface", &lab.filter_if]);
    assert!(out.stdout.contains("removed the pins"), "{}", out.stdout);
    assert_eq!(
        ping(&lab.client, Some(CLIENT4), FILTER4, 3),
        3,
        "traffic flows after detach"
    );
    assert!(!s._fs.pin_dir().join("BLOCK_V4").exists());
    let r = agent.try_run(&["status"]);
    assert_fails(&r, 1, "attach first");
    let r = agent.try_run(&["detach", "--iface", &lab.filter_if]);
    assert_fails(&r, 1, "not attached");
}

#[test]
fn inspection_needs_no_running_agent_and_errors_without_root_are_clear() {
    let s = Setup::new("native");
    s.agent.run(&["block", CLIENT4]);
    // `status` and `check` are separate processes reading the pins.
    assert_eq!(s.status()["tries"][0]["entries"], 1);
    // Without privileges the error says what to do.
    let out = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            s.lab.filter.name(),
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ])
        .arg(blocklist_tests::agent::binary())
        .arg("--pin-dir")
        .arg(s._fs.pin_dir())
        .args([
            "--state-dir",
            "/nonexistent",
            "attach",
            "--iface",
            &s.lab.filter_if,
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("run as root"), "{err}");
}
