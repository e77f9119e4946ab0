//! Socket-level egress on the real kernel: the cgroup hooks refuse a
//! connection or a datagram from a process in the hooked cgroup to a
//! blocked address, with `EPERM` and before any packet leaves, and let
//! everything else through. The hooks go on a cgroup the test creates
//! under the cgroup2 mount, never on the root; the client moves itself
//! into it (and into the filter namespace) before it opens a socket.

use std::{
    net::{TcpListener, UdpSocket},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use blocklist_agent::{
    datapath::{cgroup, maps::TrieKind, pin::PinDir},
    prefix::Prefix,
};
use blocklist_tests::{
    cgroup::{ChildCgroup, output_inside},
    kernel::Kernel,
    lab::{Lab, addr::*},
    require_root,
};

const CLIENT: &str = r#"
import errno, socket, sys
kind, fam, host, port = sys.argv[1:5]
s = socket.socket(socket.AF_INET6 if fam == "6" else socket.AF_INET,
                  socket.SOCK_STREAM if kind == "tcp" else socket.SOCK_DGRAM)
s.settimeout(3)
try:
    if kind == "tcp":
        s.connect((host, int(port)))
    else:
        s.sendto(b"x", (host, int(port)))
    print("ok")
except OSError as e:
    print(errno.errorcode.get(e.errno, "timeout") if e.errno else "timeout")
"#;

/// Runs one client call from inside `cgroup` and the namespace `netns`;
/// returns "ok", or the errno name it failed with.
fn call(cgroup: &Path, netns: &str, kind: &str, host: &str, port: u16) -> String {
    let fam = if host.contains(':') { "6" } else { "4" };
    let mut cmd = Command::new("python3");
    cmd.args(["-c", CLIENT, kind, fam, host, &port.to_string()]);
    let out = output_inside(cmd, cgroup, netns).expect("running the python3 client");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn p(s: &str) -> Prefix {
    s.parse().unwrap()
}

#[test]
fn connections_and_datagrams_to_listed_addresses_are_refused_with_eperm() {
    require_root();
    let lab = Lab::new();
    let cg = ChildCgroup::under_root("xbegress");
    let mut k = Kernel::load();
    k.attach_egress(&cg.0);
    let pin = PinDir::new(k.pin_dir());
    assert_eq!(cgroup::attached(&pin).len(), 4);

    let tcp4 = lab
        .server
        .enter(|| TcpListener::bind((SERVER4, 0)).unwrap());
    let tcp6 = lab
        .server
        .enter(|| TcpListener::bind((SERVER6, 0)).unwrap());
    let udp4 = lab.server.enter(|| UdpSocket::bind((SERVER4, 0)).unwrap());
    let udp6 = lab.server.enter(|| UdpSocket::bind((SERVER6, 0)).unwrap());
    let clean_tcp = lab
        .client
        .enter(|| TcpListener::bind((CLIENT4, 0)).unwrap());
    let clean_udp = lab.client.enter(|| UdpSocket::bind((CLIENT4, 0)).unwrap());
    let port = |l: &TcpListener| l.local_addr().unwrap().port();
    let uport = |u: &UdpSocket| u.local_addr().unwrap().port();
    for u in [&udp4, &udp6, &clean_udp] {
        u.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    }
    let f = lab.filter.name().to_owned();

    // Before anything is listed, everything goes through.
    assert_eq!(call(&cg.0, &f, "tcp", SERVER4, port(&tcp4)), "ok");
    assert_eq!(call(&cg.0, &f, "udp", SERVER4, uport(&udp4)), "ok");
    let mut buf = [0u8; 8];
    assert_eq!(udp4.recv(&mut buf).unwrap(), 1);

    k.maps
        .insert_many(
            TrieKind::Block,
            &[(p("10.77.2.0/24"), 0), (p(&format!("{SERVER6}/128")), 0)],
        )
        .unwrap();
    let mapped = format!("::ffff:{SERVER4}");
    assert_eq!(call(&cg.0, &f, "tcp", SERVER4, port(&tcp4)), "EPERM");
    assert_eq!(call(&cg.0, &f, "udp", SERVER4, uport(&udp4)), "EPERM");
    assert_eq!(call(&cg.0, &f, "tcp", SERVER6, port(&tcp6)), "EPERM");
    assert_eq!(call(&cg.0, &f, "udp", SERVER6, uport(&udp6)), "EPERM");
    assert_eq!(call(&cg.0, &f, "tcp", &mapped, port(&tcp4)), "EPERM");
    assert_eq!(call(&cg.0, &f, "udp", &mapped, uport(&udp4)), "EPERM");
    // Nothing reached the server: no datagram, and only the first
    // connection in the backlog.
    udp4.set_nonblocking(true).unwrap();
    assert!(udp4.recv(&mut buf).is_err(), "a refused datagram arrived");
    udp6.set_nonblocking(true).unwrap();
    assert!(udp6.recv(&mut buf).is_err(), "a refused datagram arrived");
    tcp4.set_nonblocking(true).unwrap();
    let first = tcp4.accept().expect("the connection made before the block");
    drop(first);
    assert!(
        tcp4.accept().is_err(),
        "a refused connection reached the server"
    );
    tcp6.set_nonblocking(true).unwrap();
    assert!(
        tcp6.accept().is_err(),
        "a refused connection reached the server"
    );

    // A clean address from the same process is untouched.
    assert_eq!(call(&cg.0, &f, "tcp", CLIENT4, port(&clean_tcp)), "ok");
    assert_eq!(call(&cg.0, &f, "udp", CLIENT4, uport(&clean_udp)), "ok");
    assert_eq!(clean_udp.recv(&mut buf).unwrap(), 1);

    // The refusals are counted on the entries, as egress.
    let c4 = k.maps.prefix_entry_counters(p("10.77.2.0/24")).unwrap();
    assert_eq!((c4.packets, c4.egress_packets), (4, 4), "{c4:?}");
    let c6 = k
        .maps
        .prefix_entry_counters(p(&format!("{SERVER6}/128")))
        .unwrap();
    assert_eq!((c6.packets, c6.egress_packets), (2, 2), "{c6:?}");

    // An allow entry overrides, in this direction too.
    k.maps
        .insert_many(TrieKind::Allow, &[(p(&format!("{SERVER4}/32")), 0)])
        .unwrap();
    assert_eq!(call(&cg.0, &f, "tcp", SERVER4, port(&tcp4)), "ok");

    // Detached: the hooks and their pins are gone.
    cgroup::detach(&pin).unwrap();
    assert!(cgroup::attached(&pin).is_empty());
    assert!(!pin.egress_dir().exists());
    assert_eq!(call(&cg.0, &f, "tcp", SERVER6, port(&tcp6)), "ok");
}

/// A child cgroup under a cgroup2 mount of its own, outside `/sys`: the
/// agent runs under `ip netns exec`, which remounts `/sys`, so a cgroup
/// under `/sys/fs/cgroup` would not be found there. Unmounted on drop.
struct MountedCgroup {
    /// Before `_mount`: removed while it is still mounted.
    child: ChildCgroup,
    _mount: Cgroup2Mount,
}

/// A cgroup2 mount on a temporary directory, unmounted on drop.
struct Cgroup2Mount(tempfile::TempDir);

impl Drop for Cgroup2Mount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(self.0.path(), nix::mount::MntFlags::MNT_DETACH);
    }
}

impl MountedCgroup {
    fn new() -> Self {
        let mount = tempfile::Builder::new()
            .prefix("xdpbl-cgroup2-")
            .tempdir()
            .unwrap();
        nix::mount::mount(
            Some("none"),
            mount.path(),
            Some("cgroup2"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .expect("mounting cgroup2");
        let mount = Cgroup2Mount(mount);
        Self {
            child: ChildCgroup::new(mount.0.path(), "xbegress"),
            _mount: mount,
        }
    }
}

/// `Icmp6InEchos` of a namespace: echo requests that reached it.
fn echo_requests_in(ns: &blocklist_tests::lab::Netns) -> u64 {
    let out = ns.exec(&["cat", "/proc/net/snmp6"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("Icmp6InEchos")?.trim().parse().ok())
        .expect("Icmp6InEchos in /proc/net/snmp6")
}

/// Sends exactly one ICMPv6 echo request from a raw socket in `ns`
/// (outside any hooked cgroup); returns what `sendto` said (a TC drop may
/// surface as an error; `ping` would retry, and count twice).
fn echo(ns: &blocklist_tests::lab::Netns, to: &str) -> String {
    let script = r#"
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
try:
    s.sendto(bytes([128, 0, 0, 0, 0, 1, 0, 1]) + b"x" * 56, (sys.argv[1], 0))
    print("sent")
except OSError as e:
    print(e.strerror)
"#;
    let out = ns.exec(&["python3", "-c", script, to]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The agent's own egress hooks: `run` attaches the XDP program, the TC
/// egress classifier and the cgroup hooks from `[egress]`; a process in
/// the cgroup is refused with `EPERM` and named in the event; a raw ICMP
/// socket and forwarded traffic, which no cgroup hook sees, are dropped
/// by the TC classifier before they reach the peer; counters, `top`,
/// `/metrics` and `status` say which hook did what; a restart and an
/// `attach --replace` keep every hook, `detach` removes them all.
#[test]
fn the_agent_blocks_both_directions_and_reports_each_hook() {
    use blocklist_tests::{agent::Agent, bpffs::Bpffs, wait_for};
    use serde_json::Value;
    use std::process::Stdio;

    require_root();
    let lab = Lab::new();
    let fs = Bpffs::new();
    let cg = MountedCgroup::new();
    let dir = tempfile::tempdir().unwrap();
    let feed = dir.path().join("feed.txt");
    std::fs::write(&feed, format!("{CLIENT4_B}\n{CLIENT6}\n")).unwrap();
    let events = dir.path().join("events.jsonl");
    let port = lab.filter.free_port();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "interfaces = [\"{}\"]\nsync_interval = \"1h\"\n\
             [[feed]]\nname = \"c2\"\nallow_reserved = true\nurl = \"{}\"\n\
             [egress]\nmode = \"both\"\ncgroup = \"{}\"\n\
             [metrics]\nlisten = \"127.0.0.1:{port}\"\n[events]\noutput = \"{}\"\n",
            lab.filter_if,
            feed.display(),
            cg.child.0.display(),
            events.display()
        ),
    )
    .unwrap();
    let agent = Agent::new(lab.filter.name(), fs.pin_dir(), dir.path().join("state"))
        .with_config(config)
        .with_egress();
    let start = || {
        agent
            .command(&["run"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    struct Stop<'a>(std::process::Child, &'a Agent, &'a str);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
            let _ = self.1.try_run(&["detach", "--iface", self.2]);
        }
    }
    let mut run = Stop(start(), &agent, &lab.filter_if);
    let status = || agent.run(&["status", "--json"]).json();
    let hooks_of = |s: &Value| -> Vec<String> {
        s["hooks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| {
                format!(
                    "{} {}",
                    h["hook"].as_str().unwrap(),
                    h["target"].as_str().unwrap()
                )
            })
            .collect()
    };
    let want_hooks = vec![
        format!("xdp {}", lab.filter_if),
        format!("tc_egress {}", lab.filter_if),
        format!("cgroup {}", cg.child.0.display()),
    ];
    wait_for(
        "the first sync and every hook",
        Duration::from_secs(30),
        || {
            agent
                .try_run(&["check", CLIENT4_B, "--json"])
                .stdout
                .contains("\"blocked\": true")
                && agent
                    .try_run(&["status", "--json"])
                    .stdout
                    .contains("\"tc_egress\"")
        },
        || agent.try_run(&["status"]).stdout,
    );
    lab.wait_settled();
    assert_eq!(hooks_of(&status()), want_hooks);
    // `cargo xtask test` runs this suite once more with the classifier
    // forced under clsact, the fallback for kernels without TCX.
    let tc_mode = blocklist_tests::ingress::tc_attachment_under_test();
    assert_eq!(status()["hooks"][1]["mode"], tc_mode);
    if tc_mode == "clsact" {
        let filters = lab
            .filter
            .exec(&["tc", "filter", "show", "dev", &lab.filter_if, "egress"]);
        let filters = String::from_utf8_lossy(&filters.stdout).into_owned();
        assert!(filters.contains("tc_egress"), "no clsact filter: {filters}");
    }
    let f = lab.filter.name().to_owned();

    // A process in the cgroup: refused before anything leaves.
    let listener = lab
        .client
        .enter(|| TcpListener::bind((CLIENT4_B, 0)).unwrap());
    let lport = listener.local_addr().unwrap().port();
    assert_eq!(call(&cg.child.0, &f, "tcp", CLIENT4_B, lport), "EPERM");
    let clean = lab
        .client
        .enter(|| TcpListener::bind((CLIENT4, 0)).unwrap());
    assert_eq!(
        call(
            &cg.child.0,
            &f,
            "tcp",
            CLIENT4,
            clean.local_addr().unwrap().port()
        ),
        "ok"
    );

    // A raw ICMP socket outside the cgroup: dropped at TC egress, the
    // echo request never reaches the client namespace.
    let echoes = echo_requests_in(&lab.client);
    let sent = echo(&lab.filter, CLIENT6);
    assert_eq!(
        echo_requests_in(&lab.client),
        echoes,
        "the echo request left ({sent})"
    );
    let ok = lab.filter.exec(&["ping", "-c", "1", "-W", "2", CLIENT4]);
    assert!(ok.status.success(), "a ping to a clean address failed");

    // Forwarded traffic from the server toward a listed client: it enters
    // on the server side (no XDP there) and is dropped leaving toward the
    // client.
    let inbox = lab
        .client
        .enter(|| UdpSocket::bind((CLIENT4_B, 0)).unwrap());
    inbox
        .set_read_timeout(Some(Duration::from_millis(800)))
        .unwrap();
    let to = (CLIENT4_B, inbox.local_addr().unwrap().port());
    lab.server.enter(|| {
        UdpSocket::bind((SERVER4, 0))
            .unwrap()
            .send_to(b"beacon", to)
            .unwrap()
    });
    let mut buf = [0u8; 16];
    assert!(
        inbox.recv(&mut buf).is_err(),
        "a forwarded datagram to a listed address arrived"
    );

    // Counters: per entry as egress, per hook exactly.
    let s = status();
    let hc = &s["hook_counters"];
    assert_eq!(hc["cgroup"]["dropped_packets"], 1, "{hc}");
    assert_eq!(
        hc["tc_egress"]["dropped_packets"],
        2,
        "{hc}\n{}",
        std::fs::read_to_string(&events).unwrap_or_default()
    );
    assert_eq!(hc["tc_ingress"]["dropped_packets"], 0, "{hc}");
    let top = agent.run(&["top", "--json"]).json();
    let row = |ip: &str| {
        top.as_array()
            .unwrap()
            .iter()
            .find(|r| r["ip"] == ip && r["direction"] == "egress")
            .unwrap_or_else(|| panic!("no egress row for {ip} in {top}"))
            .clone()
    };
    assert_eq!(row(CLIENT4_B)["packets"], 2, "{top}");
    assert_eq!(row(CLIENT6)["packets"], 1, "{top}");
    let by_prefix = agent.run(&["top", "--by", "prefix", "--json"]).json();
    let b = by_prefix
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["prefix"] == format!("{CLIENT4_B}/32"))
        .unwrap();
    assert_eq!(
        (b["packets"].clone(), b["egress_packets"].clone()),
        (2.into(), 2.into())
    );
    let metrics = lab.filter.enter(move || {
        reqwest::blocking::get(format!("http://127.0.0.1:{port}/metrics"))
            .unwrap()
            .text()
            .unwrap()
    });
    for line in [
        "xdp_blocklist_hook_packets_total{hook=\"cgroup\",action=\"dropped\"} 1",
        "xdp_blocklist_hook_packets_total{hook=\"tc_egress\",action=\"dropped\"} 2",
        "xdp_blocklist_hook_packets_total{hook=\"xdp\",action=\"dropped\"} 0",
    ] {
        assert!(metrics.contains(line), "no `{line}` in\n{metrics}");
    }

    // Events: the refused connection names the process.
    let read_events = || -> Vec<Value> {
        std::fs::read_to_string(&events)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    // The forwarded datagram hits the same /32 as the refused connection
    // within the per-entry event interval, so it is counted but not sent.
    wait_for(
        "the egress events",
        Duration::from_secs(10),
        || {
            read_events()
                .iter()
                .filter(|e| e["direction"] == "egress")
                .count()
                >= 2
        },
        || format!("{:?}", read_events()),
    );
    let ev = read_events();
    let cgroup_event = ev
        .iter()
        .find(|e| e["hook"] == "cgroup")
        .expect("a cgroup event");
    assert_eq!(cgroup_event["dst"], CLIENT4_B, "{cgroup_event}");
    assert_eq!(cgroup_event["dst_port"], lport, "{cgroup_event}");
    assert_eq!(cgroup_event["comm"], "python3", "{cgroup_event}");
    assert!(cgroup_event["pid"].as_u64().unwrap() > 1, "{cgroup_event}");
    assert_eq!(cgroup_event["prefix"], format!("{CLIENT4_B}/32"));
    assert_eq!(cgroup_event["feeds"][0], "c2");
    let icmp = ev
        .iter()
        .find(|e| e["hook"] == "tc_egress" && e["protocol"] == "icmpv6")
        .expect("a TC egress event for the ping");
    assert_eq!(icmp["dst"], CLIENT6);
    assert_eq!(icmp["interface"], lab.filter_if.as_str());

    // A restart keeps every hook, and so does an upgrade in place.
    blocklist_tests::agent::terminate(&mut run.0, Duration::from_secs(20));
    assert_eq!(hooks_of(&status()), want_hooks);
    assert_eq!(call(&cg.child.0, &f, "tcp", CLIENT4_B, lport), "EPERM");
    run.0 = start();
    let replaced = agent.run(&["attach", "--iface", &lab.filter_if, "--replace"]);
    assert!(
        replaced.stdout.contains("TC egress classifier")
            && replaced.stdout.contains("cgroup egress hooks"),
        "{}",
        replaced.stdout
    );
    assert_eq!(hooks_of(&status()), want_hooks);
    assert_eq!(call(&cg.child.0, &f, "tcp", CLIENT4_B, lport), "EPERM");
    let echoes = echo_requests_in(&lab.client);
    echo(&lab.filter, CLIENT6);
    assert_eq!(
        echo_requests_in(&lab.client),
        echoes,
        "the echo request left"
    );

    // Detach takes every hook and pin away.
    blocklist_tests::agent::terminate(&mut run.0, Duration::from_secs(20));
    agent.run(&["detach", "--iface", &lab.filter_if]);
    assert!(!fs.pin_dir().exists(), "pins left behind");
    assert_eq!(call(&cg.child.0, &f, "tcp", CLIENT4_B, lport), "ok");
    let echoes = echo_requests_in(&lab.client);
    echo(&lab.filter, CLIENT6);
    assert_eq!(
        echo_requests_in(&lab.client),
        echoes + 1,
        "the TC egress classifier is still there after detach"
    );
    run.0 = Command::new("true").spawn().unwrap();
}

/// The TC classifiers decide as the XDP program does, on the same maps:
/// TC ingress like XDP (source and destination, allow entries win), TC
/// egress on the frame leaving; both count in their own hook's slot.
#[test]
fn tc_classifiers_decide_like_the_xdp_program() {
    use blocklist_agent::datapath::test_run::{XDP_DROP, XDP_PASS};
    use blocklist_ebpf::{TC_EGRESS_PROGRAM, TC_INGRESS_PROGRAM};
    use blocklist_tests::frames;
    const SHOT: i32 = 2;
    const NEXT: i32 = -1;

    require_root();
    let mut k = Kernel::load();
    k.block("10.77.9.0/24");
    k.block("fd00:77:9::/48");
    k.allow("10.77.9.7");
    let f = |s: &str, d: &str| frames::ip(s.parse().unwrap(), d.parse().unwrap());
    let cases = [
        (f("10.77.9.1", "10.77.0.1"), true),
        (f("10.77.0.1", "10.77.9.1"), true),
        (f("10.77.9.7", "10.77.0.1"), false),
        (f("10.77.0.2", "10.77.0.1"), false),
        (f("fd00:77:9::1", "fd00:77::1"), true),
        (f("fd00:77::1", "fd00:77:9::1"), true),
        (f("fd00:77::1", "fd00:77::2"), false),
    ];
    for (frame, blocked) in &cases {
        let xdp = k.verdict(frame);
        assert_eq!(xdp, if *blocked { XDP_DROP } else { XDP_PASS });
        for prog in [TC_INGRESS_PROGRAM, TC_EGRESS_PROGRAM] {
            let want = if *blocked { SHOT } else { NEXT };
            assert_eq!(k.tc_verdict(prog, frame), want, "{prog} on {frame:02x?}");
        }
    }
    let hooks = k.maps.hook_counters().unwrap();
    let drops: Vec<u64> = hooks
        .iter()
        .map(|h| h.dropped_v4_packets + h.dropped_v6_packets)
        .collect();
    assert_eq!(drops, vec![4, 4, 4, 0], "{hooks:?}");
}

/// `/etc/netns/NS/resolv.conf`, which `ip netns exec NS` binds over
/// `/etc/resolv.conf`; removed on drop.
struct NetnsResolvConf(PathBuf);

impl NetnsResolvConf {
    fn new(ns: &str, nameserver: &str) -> Self {
        let dir = Path::new("/etc/netns").join(ns);
        std::fs::create_dir_all(&dir).expect("creating /etc/netns/NS");
        std::fs::write(
            dir.join("resolv.conf"),
            format!("# test\nnameserver {nameserver}\n"),
        )
        .unwrap();
        Self(dir)
    }
}

impl Drop for NetnsResolvConf {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        // Only if nothing else uses it.
        let _ = std::fs::remove_dir("/etc/netns");
    }
}

/// Host protection holds in both directions: a feed that lists the
/// host's DNS resolver installs it as a protected address, so the host
/// still reaches it through the TC egress classifier and it still
/// reaches the host through XDP, while the feed's other address is
/// dropped both ways.
#[test]
fn the_hosts_resolver_is_never_refused_in_either_direction() {
    use blocklist_tests::{agent::Agent, bpffs::Bpffs, traffic::udp};

    require_root();
    let lab = Lab::new();
    let fs = Bpffs::new();
    let _resolv = NetnsResolvConf::new(lab.filter.name(), CLIENT4_B);
    let dir = tempfile::tempdir().unwrap();
    let feed = dir.path().join("feed.txt");
    std::fs::write(&feed, format!("{CLIENT4}\n{CLIENT4_B}\n")).unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "interfaces = [\"{}\"]\n[[feed]]\nname = \"scanners\"\nallow_reserved = true\nurl = \"{}\"\n\
             [egress]\nmode = \"tc\"\n",
            lab.filter_if,
            feed.display()
        ),
    )
    .unwrap();
    let agent = Agent::new(lab.filter.name(), fs.pin_dir(), dir.path().join("state"))
        .with_config(config)
        .with_egress();
    let _attached = agent.attach(&lab.filter_if);
    agent.run(&["sync", "--once"]);
    lab.wait_settled();

    let resolver = agent.run(&["check", CLIENT4_B, "--json"]).json();
    assert_eq!(resolver["blocked"], false, "{resolver}");
    assert_eq!(resolver["allow"]["prefix"], format!("{CLIENT4_B}/32"));
    assert_eq!(
        agent.run(&["check", CLIENT4, "--json"]).json()["blocked"],
        true
    );

    // Out through TC egress, in through XDP.
    assert_eq!(udp(&lab.filter, FILTER4, &lab.client, CLIENT4_B, 5, 64), 5);
    assert_eq!(udp(&lab.client, CLIENT4_B, &lab.filter, FILTER4, 5, 64), 5);
    assert_eq!(udp(&lab.filter, FILTER4, &lab.client, CLIENT4, 5, 64), 0);
    assert_eq!(udp(&lab.client, CLIENT4, &lab.filter, FILTER4, 5, 64), 0);
}

/// An egress hook that cannot go in (here: a cgroup path that does not
/// exist) is logged with what to do, and `run` keeps filtering and
/// syncing: the ingress hook and the lists protect regardless.
#[test]
fn a_missing_cgroup_does_not_stop_the_agent() {
    use blocklist_tests::{agent::Agent, bpffs::Bpffs, wait_for};
    use std::process::Stdio;

    require_root();
    let lab = Lab::new();
    let fs = Bpffs::new();
    let dir = tempfile::tempdir().unwrap();
    let feed = dir.path().join("feed.txt");
    std::fs::write(&feed, format!("{CLIENT4}\n")).unwrap();
    let config = dir.path().join("config.toml");
    let gone = dir.path().join("no-such-cgroup");
    std::fs::write(
        &config,
        format!(
            "interfaces = [\"{}\"]\nsync_interval = \"1h\"\n[[feed]]\nname = \"f\"\nallow_reserved = true\nurl = \"{}\"\n\
             [egress]\nmode = \"cgroup\"\ncgroup = \"{}\"\n[metrics]\nlisten = \"off\"\n",
            lab.filter_if,
            feed.display(),
            gone.display()
        ),
    )
    .unwrap();
    let agent = Agent::new(lab.filter.name(), fs.pin_dir(), dir.path().join("state"))
        .with_config(config)
        .with_egress();
    let log = dir.path().join("run.log");
    struct Stop<'a>(std::process::Child, &'a Agent, &'a str);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            blocklist_tests::agent::terminate(&mut self.0, Duration::from_secs(20));
            let _ = self.1.try_run(&["detach", "--iface", self.2]);
        }
    }
    let mut run = Stop(
        agent
            .command(&["run"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
        &agent,
        &lab.filter_if,
    );
    wait_for(
        "the first sync",
        Duration::from_secs(30),
        || {
            agent
                .try_run(&["check", CLIENT4, "--json"])
                .stdout
                .contains("\"blocked\": true")
        },
        || std::fs::read_to_string(&log).unwrap_or_default(),
    );
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(run.0.try_wait().unwrap().is_none(), "run exited: {text}");
    assert!(
        text.contains("egress hooks") && text.contains("no-such-cgroup"),
        "the log does not say what failed: {text}"
    );
}

/// Growing `EXACT_V4` swaps the program at every hook, not only the XDP
/// link: a sync that outgrows the fresh map and lists a new address is
/// followed by the TC egress classifier and the cgroup hooks refusing it.
/// The trie lookup probes `EXACT_V4` on every hook, so a hook left with
/// the old map (which never got the new address) would let it through.
#[test]
fn growing_an_exact_map_swaps_the_program_at_every_hook() {
    use blocklist_agent::datapath::loader;
    use blocklist_ebpf::{EXACT_START_ENTRIES, map_names::EXACT_V4};
    use blocklist_tests::{agent::Agent, bpffs::Bpffs, bpftool};

    require_root();
    let lab = Lab::new();
    let fs = Bpffs::new();
    let cg = MountedCgroup::new();
    let dir = tempfile::tempdir().unwrap();
    let feed = dir.path().join("feed.txt");
    std::fs::write(&feed, blocklist_tests::addresses(0, 1_000)).unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[[feed]]\nname = \"f\"\nallow_reserved = true\nurl = \"{}\"\n\
             [egress]\nmode = \"both\"\ncgroup = \"{}\"\n[datapath]\nlookup = \"trie\"\n",
            feed.display(),
            cg.child.0.display(),
        ),
    )
    .unwrap();
    let agent = Agent::new(lab.filter.name(), fs.pin_dir(), dir.path().join("state"))
        .with_config(config)
        .with_egress();
    let _attached = agent.attach(&lab.filter_if);
    lab.wait_settled();
    let pin = PinDir::new(fs.pin_dir());
    let hooks: Vec<PathBuf> = [pin.link(&lab.filter_if), pin.tc_egress_link(&lab.filter_if)]
        .into_iter()
        .chain(cgroup::attached(&pin).iter().map(|h| pin.egress_link(h)))
        .collect();
    assert_eq!(hooks.len(), 6, "XDP, TC egress and four cgroup hooks");
    agent.sync_once(&[]);
    assert_eq!(
        loader::pinned_entries(&pin, EXACT_V4),
        Some(EXACT_START_ENTRIES)
    );
    let f = lab.filter.name().to_owned();
    let listener = lab
        .client
        .enter(|| TcpListener::bind((CLIENT4_B, 0)).unwrap());
    let lport = listener.local_addr().unwrap().port();
    assert_eq!(call(&cg.child.0, &f, "tcp", CLIENT4_B, lport), "ok");

    // More single addresses than the fresh map holds, and the client.
    std::fs::write(
        &feed,
        format!("{CLIENT4_B}\n{}", blocklist_tests::addresses(0, 100_000)),
    )
    .unwrap();
    agent.sync_once(&[]);
    assert!(loader::pinned_entries(&pin, EXACT_V4) > Some(EXACT_START_ENTRIES));
    let (exact_id, _) = bpftool::map(&pin.map(EXACT_V4));
    for hook in &hooks {
        let maps = bpftool::program_maps(hook);
        assert!(
            maps.contains(&exact_id),
            "the program at {} does not use the grown EXACT_V4 ({exact_id}): {maps:?}",
            hook.display()
        );
    }
    // The cgroup hooks refuse the new address; TC egress drops a ping to it
    // from outside the cgroup.
    assert_eq!(call(&cg.child.0, &f, "tcp", CLIENT4_B, lport), "EPERM");
    let ping = lab.filter.exec(&["ping", "-c", "1", "-W", "1", CLIENT4_B]);
    assert!(
        !ping.status.success(),
        "a ping to the listed address got an answer"
    );
    let ok = lab.filter.exec(&["ping", "-c", "1", "-W", "2", CLIENT4]);
    assert!(ok.status.success(), "a ping to a clean address failed");
}
