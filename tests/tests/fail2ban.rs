//! fail2ban end to end: Debian's fail2ban (installed by `cargo xtask
//! setup`) runs a jail of the test's own, with the action file the Debian
//! package ships (`deploy/fail2ban/xdp-blocklist.conf`), watching a log
//! file the test writes failed-login lines to. The banned client is
//! dropped by the XDP program within seconds, another client is not, and
//! the unban after `bantime` lets it through again.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use blocklist_tests::{
    agent::{Agent, binary},
    bpffs::Bpffs,
    lab::{Lab, addr::*},
    require_root,
    traffic::ping,
};

const BANTIME_S: u64 = 8;

struct Fail2ban {
    child: Child,
    dir: tempfile::TempDir,
}

impl Fail2ban {
    /// A private fail2ban-server in `netns` (where the agent's commands
    /// run), with one jail over `dir/auth.log`.
    fn start(netns: &str, agent: &Agent, config: &Path) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for sub in ["action.d", "filter.d", "jail.d"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        let shipped =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/fail2ban/xdp-blocklist.conf");
        std::fs::copy(&shipped, d.join("action.d/xdp-blocklist.conf"))
            .unwrap_or_else(|e| panic!("copying {}: {e}", shipped.display()));
        std::fs::write(
            d.join("fail2ban.conf"),
            format!(
                "[Definition]\nloglevel = INFO\nlogtarget = {d}/fail2ban.log\n\
                 socket = {d}/fail2ban.sock\npidfile = {d}/fail2ban.pid\ndbfile = :memory:\n",
                d = d.display()
            ),
        )
        .unwrap();
        std::fs::write(
            d.join("filter.d/xdpbl-test.conf"),
            "[Definition]\nfailregex = ^xdpbl-test: failed login for \\S+ from <HOST>\\s*$\n\
             ignoreregex =\ndatepattern = {NONE}\n",
        )
        .unwrap();
        let options = format!(
            "--pin-dir {} --state-dir {} --config {}",
            agent.pin_dir().display(),
            agent.state_dir().display(),
            config.display()
        );
        std::fs::write(d.join("auth.log"), "").unwrap();
        std::fs::write(
            d.join("jail.conf"),
            format!(
                "[DEFAULT]\nbackend = polling\n\n[xdpbl-test]\nenabled = true\nfilter = xdpbl-test\n\
                 logpath = {d}/auth.log\nmaxretry = 3\nfindtime = 60\nbantime = {BANTIME_S}\n\
                 action = xdp-blocklist[blocklist_agent=\"{bin}\", agent_options=\"{options}\"]\n",
                d = d.display(),
                bin = binary().display(),
            ),
        )
        .unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", netns, "fail2ban-server", "-f", "-x", "-c"])
            .arg(d)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("starting fail2ban-server ({e}); `cargo xtask setup` installs fail2ban")
            });
        let f = Self { child, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !f.log().contains("Jail 'xdpbl-test' started") {
            assert!(
                Instant::now() < deadline,
                "fail2ban did not start the jail within 30 s: {}",
                f.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        f
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("fail2ban.log")).unwrap_or_default()
    }

    fn failed_logins(&self, from: &str, n: usize) {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir.path().join("auth.log"))
            .unwrap();
        for i in 0..n {
            writeln!(f, "xdpbl-test: failed login for user{i} from {from}").unwrap();
        }
    }
}

impl Drop for Fail2ban {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for(what: &str, limit: Duration, f2b: &Fail2ban, f: impl Fn() -> bool) -> Duration {
    blocklist_tests::wait_for(what, limit, f, || format!("fail2ban log:\n{}", f2b.log()))
}

#[test]
fn a_fail2ban_ban_drops_the_address_until_the_unban() {
    require_root();
    let lab = Lab::new();
    let fs = Bpffs::new();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "lock_timeout = \"10s\"\n").unwrap();
    let agent = Agent::new(lab.filter.name(), fs.pin_dir(), dir.path().join("state"))
        .with_config(config.clone());
    agent.run(&["attach", "--iface", &lab.filter_if]);
    lab.wait_settled();
    let answered = |src: &str, dst: &str| ping(&lab.client, Some(src), dst, 3);
    assert_eq!(answered(CLIENT4, FILTER4), 3);

    let f2b = Fail2ban::start(lab.filter.name(), &agent, &config);
    f2b.failed_logins(CLIENT4, 3);
    let took = wait_for(
        "the ban to drop traffic",
        Duration::from_secs(30),
        &f2b,
        || answered(CLIENT4, FILTER4) == 0,
    );
    eprintln!("failed logins -> dropped: {took:?}");
    assert_eq!(answered(CLIENT4_B, FILTER4), 3, "only the banned address");
    let c = agent.run(&["check", CLIENT4, "--json"]).json();
    assert_eq!(c["block"]["manual"], true, "a hand-made entry: {c}");

    // An IPv6 offender too.
    f2b.failed_logins(CLIENT6, 3);
    wait_for("the IPv6 ban", Duration::from_secs(30), &f2b, || {
        answered(CLIENT6, FILTER6) == 0
    });

    // fail2ban's unban after bantime removes the entry.
    wait_for(
        "the unban after bantime",
        Duration::from_secs(BANTIME_S + 30),
        &f2b,
        || answered(CLIENT4, FILTER4) == 3,
    );
    wait_for(
        "the IPv6 unban",
        Duration::from_secs(BANTIME_S + 30),
        &f2b,
        || answered(CLIENT6, FILTER6) == 3,
    );
    let c = agent.run(&["check", CLIENT4, "--json"]).json();
    assert_eq!(c["blocked"], false, "{c}");
    drop(f2b);
    let _ = agent.try_run(&["detach", "--iface", &lab.filter_if]);
}
