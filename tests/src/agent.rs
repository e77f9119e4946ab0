//! Running the real `blocklist-agent` binary inside a namespace.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use blocklist_agent::hooks::EGRESS_ENV;

/// The agent binary built next to the test executables
/// (`cargo xtask test` builds it first), or `BLOCKLIST_AGENT_BIN`.
pub fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("BLOCKLIST_AGENT_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test> -> target/<profile>/blocklist-agent
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps")
        .join("blocklist-agent");
    assert!(
        bin.exists(),
        "{} not found: build it first (`cargo build -p blocklist-agent`, which `cargo xtask test` does)",
        bin.display()
    );
    bin
}

/// Stops a background `run` with SIGTERM and returns how it exited;
/// fails the test when it is still running after `limit`.
pub fn terminate(
    child: &mut std::process::Child,
    limit: std::time::Duration,
) -> std::process::ExitStatus {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("sending SIGTERM");
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().expect("waiting for run") {
            return s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "run did not stop on SIGTERM"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// The agent as one namespace sees it, with its own pin and state dirs.
pub struct Agent {
    netns: String,
    pin_dir: PathBuf,
    state_dir: PathBuf,
    config: Option<PathBuf>,
    env: Vec<(String, String)>,
}

/// What one command printed and returned.
pub struct Run {
    /// Exit code.
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    /// Parses stdout as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", self.stdout, self.stderr))
    }
}

impl Agent {
    /// An agent running in `netns` with pins under `pin_dir`.
    pub fn new(netns: &str, pin_dir: PathBuf, state_dir: PathBuf) -> Self {
        Self {
            netns: netns.to_owned(),
            pin_dir,
            state_dir,
            config: None,
            // Never the host's root cgroup by accident: a suite that tests
            // the egress hooks says where they go (`with_egress`).
            env: vec![(EGRESS_ENV.to_owned(), "off".to_owned())],
        }
    }

    /// Lets `[egress]` of the config decide which egress hooks are
    /// attached (the default turns them off, see [`Agent::new`]).
    pub fn with_egress(mut self) -> Self {
        self.env.retain(|(k, _)| k != EGRESS_ENV);
        self
    }

    /// Uses this config file for every command.
    pub fn with_config(mut self, path: PathBuf) -> Self {
        self.config = Some(path);
        self
    }

    /// Sets an environment variable for every command (credentials).
    pub fn with_env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// The pin directory.
    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    /// The state directory.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// The command line for `args`, not started (for background runs).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.netns])
            .arg(binary())
            .arg("--pin-dir")
            .arg(&self.pin_dir)
            .arg("--state-dir")
            .arg(&self.state_dir);
        if let Some(cfg) = &self.config {
            c.arg("--config").arg(cfg);
        }
        c.args(args);
        c.env_remove(EGRESS_ENV);
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    /// Runs a command and returns whatever happened.
    pub fn try_run(&self, args: &[&str]) -> Run {
        let out: Output = self
            .command(args)
            .output()
            .expect("running blocklist-agent");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `sync --once --json EXTRA`, checking its exit code against its own
    /// report: 0 when no feed failed or was refused, 3 (the last line on
    /// stderr naming each such feed) when one kept its last good list.
    /// Returns the report.
    pub fn sync_once(&self, extra: &[&str]) -> serde_json::Value {
        let mut args = vec!["sync", "--once", "--json"];
        args.extend_from_slice(extra);
        let r = self.try_run(&args);
        let report = r.json();
        let kept: Vec<&str> = report["feeds"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|f| f["status"] == "failed" || f["status"] == "refused")
            .filter_map(|f| f["name"].as_str())
            .collect();
        let want = if kept.is_empty() { 0 } else { 3 };
        assert_eq!(
            r.code, want,
            "sync --once exit code (feeds kept at last good: {kept:?})\nstdout: {}\nstderr: {}",
            r.stdout, r.stderr
        );
        if want == 3 {
            // The log may say more above it; the last line is the summary.
            let line = r.stderr.trim().lines().last().unwrap_or_default();
            for name in &kept {
                assert!(
                    line.contains(&format!("`{name}`")),
                    "{name} not named: {line}"
                );
            }
        }
        report
    }

    /// Runs a command that must succeed.
    pub fn run(&self, args: &[&str]) -> Run {
        let r = self.try_run(args);
        assert_eq!(
            r.code, 0,
            "blocklist-agent {args:?} failed\nstdout: {}\nstderr: {}",
            r.stdout, r.stderr
        );
        r
    }

    /// Runs `attach --iface iface`, which must succeed; the guard detaches
    /// it again when dropped, also when the test fails.
    pub fn attach<'a>(&'a self, iface: &'a str) -> Attached<'a> {
        self.run(&["attach", "--iface", iface]);
        Attached { agent: self, iface }
    }
}

/// An interface [`Agent::attach`] attached; detached on drop.
pub struct Attached<'a> {
    agent: &'a Agent,
    iface: &'a str,
}

impl Drop for Attached<'_> {
    fn drop(&mut self) {
        let _ = self.agent.try_run(&["detach", "--iface", self.iface]);
    }
}
