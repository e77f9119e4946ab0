//! Network namespaces and the test topology.
//!
//! ```text
//!  client ns                filter ns (XDP on `f0`)            server ns
//!  c0 10.77.1.2  <-veth->  f0 10.77.1.1 | f1 10.77.2.1  <-veth->  s0 10.77.2.2
//!     fd00:77:1::2             fd00:77:1::1 | fd00:77:2::1           fd00:77:2::2
//! ```
//! The filter namespace forwards between its two interfaces, so traffic
//! from client to server crosses the XDP program as a *destination* match,
//! and traffic from client to the filter itself as a *source* match.

use std::{fs::File, process::Command};

use nix::sched::{CloneFlags, setns};

use crate::unique;

/// A network namespace, deleted on drop.
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates a namespace with a unique name.
    pub fn new(prefix: &str) -> Self {
        let name = unique(prefix);
        ip(&["netns", "add", &name]);
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"]);
        // No duplicate address detection: addresses (link-local included)
        // are final as soon as the links are up, so the set of host
        // addresses the agent protects does not change under a test.
        for key in [
            "net.ipv6.conf.default.accept_dad=0",
            "net.ipv6.conf.all.accept_dad=0",
        ] {
            let out = ns.exec(&["sysctl", "-qw", key]);
            assert!(out.status.success(), "sysctl {key} failed");
        }
        ns
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n NAME args`.
    pub fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all);
    }

    /// Runs a command inside the namespace and returns its output.
    pub fn exec(&self, args: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .output()
            .expect("ip netns exec")
    }

    /// A TCP port free on 127.0.0.1 inside this namespace (for servers the
    /// test starts there).
    pub fn free_port(&self) -> u16 {
        self.enter(|| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .expect("picking a port")
        })
    }

    /// Runs `f` on a thread that has entered this namespace. Sockets made
    /// there stay in the namespace after the thread ends.
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        enter(&self.name, f)
    }
}

/// [`Netns::enter`] by the namespace's name (for helpers that keep only
/// the name).
pub fn enter<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> T {
    let path = format!("/run/netns/{name}");
    std::thread::scope(|s| {
        s.spawn(|| {
            let fd = File::open(&path).unwrap_or_else(|e| panic!("opening {path}: {e}"));
            setns(fd, CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .expect("namespace thread panicked")
    })
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Runs `ip args`, panicking with the command line on failure.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("running ip");
    assert!(
        out.status.success(),
        "ip {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Creates a veth pair with fixed MAC addresses, one end in each namespace.
fn veth(a: &str, a_ns: &Netns, a_mac: &str, b: &str, b_ns: &Netns, b_mac: &str) {
    ip(&[
        "link",
        "add",
        a,
        "netns",
        a_ns.name(),
        "address",
        a_mac,
        "type",
        "veth",
        "peer",
        "name",
        b,
        "netns",
        b_ns.name(),
        "address",
        b_mac,
    ]);
}

/// Addresses of the topology.
pub mod addr {
    /// Client, on the filter's link.
    pub const CLIENT4: &str = "10.77.1.2";
    /// A second client address (for several sources).
    pub const CLIENT4_B: &str = "10.77.1.3";
    /// Filter, client side (XDP runs here).
    pub const FILTER4: &str = "10.77.1.1";
    /// Filter, server side.
    pub const FILTER4_S: &str = "10.77.2.1";
    /// Server, behind the filter.
    pub const SERVER4: &str = "10.77.2.2";
    /// Client IPv6.
    pub const CLIENT6: &str = "fd00:77:1::2";
    /// Filter IPv6, client side.
    pub const FILTER6: &str = "fd00:77:1::1";
    /// Filter IPv6, server side.
    pub const FILTER6_S: &str = "fd00:77:2::1";
    /// Server IPv6.
    pub const SERVER6: &str = "fd00:77:2::2";
}

const MAC_C0: &str = "02:77:00:00:01:02";
const MAC_F0: &str = "02:77:00:00:01:01";
const MAC_F1: &str = "02:77:00:00:02:01";
const MAC_S0: &str = "02:77:00:00:02:02";

/// Three namespaces: client -> filter -> server.
pub struct Lab {
    /// Sends traffic.
    pub client: Netns,
    /// Runs the XDP program on [`Lab::filter_if`].
    pub filter: Netns,
    /// Behind the filter.
    pub server: Netns,
    /// The filter's client-facing interface (XDP attaches here).
    pub filter_if: String,
}

impl Lab {
    /// Builds the topology with addresses, routes and forwarding.
    pub fn new() -> Self {
        let client = Netns::new("xbc");
        let filter = Netns::new("xbf");
        let server = Netns::new("xbs");
        let (c0, f0) = (unique("c"), unique("f"));
        let (f1, s0) = (unique("g"), unique("s"));
        veth(&c0, &client, MAC_C0, &f0, &filter, MAC_F0);
        veth(&f1, &filter, MAC_F1, &s0, &server, MAC_S0);
        use addr::*;
        client.ip(&["addr", "add", &format!("{CLIENT4}/24"), "dev", &c0]);
        client.ip(&["addr", "add", &format!("{CLIENT4_B}/24"), "dev", &c0]);
        client.ip(&["addr", "add", &format!("{CLIENT6}/64"), "dev", &c0, "nodad"]);
        filter.ip(&["addr", "add", &format!("{FILTER4}/24"), "dev", &f0]);
        filter.ip(&["addr", "add", &format!("{FILTER6}/64"), "dev", &f0, "nodad"]);
        filter.ip(&["addr", "add", &format!("{FILTER4_S}/24"), "dev", &f1]);
        filter.ip(&[
            "addr",
            "add",
            &format!("{FILTER6_S}/64"),
            "dev",
            &f1,
            "nodad",
        ]);
        server.ip(&["addr", "add", &format!("{SERVER4}/24"), "dev", &s0]);
        server.ip(&["addr", "add", &format!("{SERVER6}/64"), "dev", &s0, "nodad"]);
        for (ns, dev) in [
            (&client, &c0),
            (&filter, &f0),
            (&filter, &f1),
            (&server, &s0),
        ] {
            ns.ip(&["link", "set", dev, "up"]);
        }
        client.ip(&["route", "add", "default", "via", FILTER4]);
        client.ip(&["-6", "route", "add", "default", "via", FILTER6]);
        server.ip(&["route", "add", "default", "via", FILTER4_S]);
        server.ip(&["-6", "route", "add", "default", "via", FILTER6_S]);
        // Static neighbours: a blocked address must not also break neighbour
        // discovery (its solicitations would be dropped too), or traffic
        // would never be sent and the counters would not match what a test
        // sends.
        for (ns, dev, peer_mac, peers) in [
            (&client, &c0, MAC_F0, [FILTER4, FILTER6]),
            (&filter, &f0, MAC_C0, [CLIENT4, CLIENT6]),
            (&filter, &f0, MAC_C0, [CLIENT4_B, CLIENT6]),
            (&filter, &f1, MAC_S0, [SERVER4, SERVER6]),
            (&server, &s0, MAC_F1, [FILTER4_S, FILTER6_S]),
        ] {
            for peer in peers {
                ns.ip(&[
                    "neigh",
                    "replace",
                    peer,
                    "lladdr",
                    peer_mac,
                    "dev",
                    dev,
                    "nud",
                    "permanent",
                ]);
            }
        }
        for key in ["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"] {
            let out = filter.exec(&["sysctl", "-qw", key]);
            assert!(out.status.success(), "sysctl {key} failed");
        }
        Self {
            client,
            filter,
            server,
            filter_if: f0,
        }
    }
}

impl Lab {
    /// Waits until the filter's interfaces are up with their link-local
    /// addresses again: attaching native XDP to a veth resets it, and the
    /// agent protects every host address it sees, so tests that count
    /// kernel writes must not race the link coming back. Fails the test
    /// after 60 s rather than letting it go on unsettled.
    pub fn wait_settled(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let out = self
                .filter
                .exec(&["ip", "-6", "-br", "addr", "show", "scope", "link"]);
            let text = String::from_utf8_lossy(&out.stdout);
            let ready = text.lines().filter(|l| l.contains("fe80::")).count() >= 2;
            if ready {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the filter's interfaces did not get their link-local addresses back within 60 s: {text}"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

impl Default for Lab {
    fn default() -> Self {
        Self::new()
    }
}
