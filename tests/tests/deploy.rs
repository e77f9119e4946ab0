//! Deployment: the systemd unit passes `systemd-analyze verify`, and `run`
//! speaks the `Type=notify` protocol (READY after the first sync, RELOADING
//! and READY around a SIGHUP, STOPPING on SIGTERM) on a NOTIFY_SOCKET the
//! test owns, as systemd would provide.

use std::{
    os::unix::net::UnixDatagram,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use blocklist_tests::{
    agent::{Agent, binary},
    bpffs::Bpffs,
    lab::{Lab, addr::*},
    require_root,
};
use nix::{sys::signal, unistd::Pid};

#[test]
fn systemd_unit_verifies() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/xdp-blocklist.service"
    ))
    .expect("deploy/xdp-blocklist.service");
    // verify checks that the binary exists: point it at the one just built.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("xdp-blocklist.service");
    std::fs::write(
        &path,
        unit.replace("/usr/bin/blocklist-agent", &binary().to_string_lossy()),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .expect("systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed: {stderr}"
    );
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("xdp-blocklist"))
        .collect();
    assert!(ours.is_empty(), "warnings about the unit: {ours:?}");
    for needed in [
        "Type=notify",
        "ExecStartPre=/usr/bin/blocklist-agent --config /etc/xdp-blocklist/config.toml run --check-config",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "CapabilityBoundingSet=CAP_BPF CAP_NET_ADMIN CAP_PERFMON CAP_SYS_ADMIN",
        "ProtectSystem=strict",
        "StateDirectory=xdp-blocklist",
        "ReadWritePaths=/sys/fs/bpf",
        "NoNewPrivileges=yes",
    ] {
        assert!(unit.contains(needed), "the unit lacks {needed}");
    }
}

fn recv_until(sock: &UnixDatagram, want: &str, timeout: Duration) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            let done = msg.lines().any(|l| l == want);
            seen.push(msg);
            if done {
                return seen;
            }
        }
    }
    panic!("no {want} within {timeout:?}; got {seen:?}");
}

#[test]
fn run_notifies_systemd_ready_reloading_and_stopping() {
    require_root();
    let lab = Lab::new();
    let fs = Bpffs::new();
    let dir = tempfile::tempdir().unwrap();
    let feed = dir.path().join("feed.txt");
    std::fs::write(&feed, format!("{CLIENT4}\n")).unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "interfaces = [\"{}\"]\n[[feed]]\nname = \"f\"\nallow_reserved = true\nurl = \"{}\"\n[metrics]\nlisten = \"off\"\n[events]\noutput = \"off\"\n",
            lab.filter_if,
            feed.display()
        ),
    )
    .unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let agent = Agent::new(lab.filter.name(), fs.pin_dir(), dir.path().join("state"))
        .with_config(config)
        .with_env("NOTIFY_SOCKET", &sock_path.to_string_lossy());
    let mut child = agent
        .command(&["run"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = Pid::from_raw(child.id() as i32);

    recv_until(&sock, "READY=1", Duration::from_secs(15));
    // READY means protecting: the first sync is installed.
    let c = agent.run(&["check", CLIENT4, "--json"]).json();
    assert_eq!(c["blocked"], true);

    signal::kill(pid, signal::Signal::SIGHUP).unwrap();
    let msgs = recv_until(&sock, "READY=1", Duration::from_secs(10));
    assert!(msgs.iter().any(|m| m.contains("RELOADING=1")), "{msgs:?}");

    signal::kill(pid, signal::Signal::SIGTERM).unwrap();
    recv_until(&sock, "STOPPING=1", Duration::from_secs(10));
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    let _ = agent.try_run(&["detach", "--iface", &lab.filter_if]);
}
