//! Integration-test harness for xdp-blocklist.
//!
//! Everything here uses the real kernel: network namespaces joined by veth
//! pairs, a bpffs mounted by the test itself (because `ip netns exec`
//! remounts /sys), the real `blocklist-agent` binary, and real ICMP, UDP
//! and TCP traffic. Every resource is removed on drop, so a failing test
//! cleans up too. Traffic only flows between the namespaces a test made,
//! on 10.77.0.0/16 and fd00:77::/32, bounded in count and time.

pub mod agent;
pub mod bpffs;
pub mod bpftool;
pub mod cgroup;
pub mod cpus;
pub mod crowdsec;
pub mod feed_server;
pub mod frames;
pub mod ingress;
pub mod kernel;
pub mod lab;
pub mod taxii_server;
pub mod tls_server;
pub mod traffic;

use std::sync::atomic::{AtomicU32, Ordering};

/// A short name unique to this process and call, for namespaces and
/// interfaces (interface names are limited to 15 bytes).
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{}{n}", std::process::id() % 100_000)
}

/// `n` distinct /32s in the benchmarking range 198.18.0.0/15, starting
/// at offset `start`, one per line (bulk feed bodies for the tests).
pub fn addresses(start: u32, n: u32) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(n as usize * 14);
    for i in start..start + n {
        let _ = writeln!(s, "{}", std::net::Ipv4Addr::from(0xc612_0000u32 + i));
    }
    s
}

/// Waits (bounded by `limit`, polling every 200 ms) until `done` holds and
/// returns how long it took; fails the test naming `what` and whatever
/// `context` says (logs, status) when it does not.
pub fn wait_for(
    what: &str,
    limit: std::time::Duration,
    done: impl Fn() -> bool,
    context: impl Fn() -> String,
) -> std::time::Duration {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if done() {
            return start.elapsed();
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    panic!(
        "timed out after {limit:?} waiting for {what}\n{}",
        context()
    );
}

/// Runs a shell command; returns success and stdout+stderr.
pub fn sh(cmd: &str) -> (bool, String) {
    let out = std::process::Command::new("sh")
        .args(["-c", cmd])
        .output()
        .expect("running sh");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The Python of the test virtualenv (medallion, prometheus_client),
/// installed by `cargo xtask setup`; `MEDALLION_PYTHON` overrides it.
pub fn venv_python() -> std::path::PathBuf {
    std::env::var_os("MEDALLION_PYTHON").map_or_else(
        || {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../target/taxii-venv/bin/python3")
        },
        std::path::PathBuf::from,
    )
}

/// Fails the test with a clear message unless running as root (CI runs the
/// suite as root; these tests are never skipped).
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the integration tests need root (real XDP, network namespaces); run `sudo cargo xtask test`"
    );
}
