//! Socket-level egress on the real kernel: the cgroup hooks refuse a
//! connection or a datagram from a process in the hooked cgroup to a
//! blocked address, with `EPERM` and before any packet leaves, and let
//! everything else through. The hooks go on a cgroup the test creates
//! under the cgroup2 mount, never on the root; the client moves itself
//! into it (and into the filter namespace) before it opens a socket.

use std::{
    net::{TcpListener, UdpSocket},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use blocklist_agent::{
    datapath::{cgroup, maps::TrieKind, pin::PinDir},
    prefix::Prefix,
};
use blocklist_tests::{
    kernel::Kernel,
    lab::{Lab, addr::*},
    require_root, unique,
};

/// A child cgroup of the cgroup2 root, removed when dropped.
struct TestCgroup(PathBuf);

impl TestCgroup {
    fn new() -> Self {
        let root = cgroup::cgroup2_root().expect("a cgroup2 mount");
        let dir = root.join(unique("xbegress"));
        std::fs::create_dir(&dir).expect("creating the test cgroup");
        Self(dir)
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // Its processes have exited; a cgroup with none can go.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.0).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("could not remove {}", self.0.display());
    }
}

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
    let ns = std::fs::File::open(format!("/run/netns/{netns}")).expect("netns handle");
    let procs = cgroup.join("cgroup.procs");
    let mut cmd = Command::new("python3");
    cmd.args(["-c", CLIENT, kind, fam, host, &port.to_string()]);
    // SAFETY: only async-signal-safe calls between fork and exec: setns,
    // and open/write of the cgroup's procs file.
    unsafe {
        use std::os::fd::AsRawFd as _;
        let fd = ns.as_raw_fd();
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            std::fs::write(&procs, b"0")
        });
    }
    let out = cmd.output().expect("running the python3 client");
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
    let cg = TestCgroup::new();
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
    assert_eq!((c4.packets, c4.egress_packets), (3, 3), "{c4:?}");
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
