//! cgroup v2 for the egress tests and the bench: a child cgroup of a test's
//! own (never the root), and running a client inside it and inside a
//! network namespace.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Duration,
};

use crate::unique;

/// A child cgroup, created on [`ChildCgroup::new`] and removed on drop.
pub struct ChildCgroup(pub PathBuf);

impl ChildCgroup {
    /// A new cgroup `<parent>/<prefix><unique>`.
    pub fn new(parent: &Path, prefix: &str) -> Self {
        let dir = parent.join(unique(prefix));
        std::fs::create_dir(&dir)
            .unwrap_or_else(|e| panic!("creating the cgroup {}: {e}", dir.display()));
        Self(dir)
    }

    /// A new child of the cgroup2 root this process sees.
    pub fn under_root(prefix: &str) -> Self {
        let root = blocklist_agent::datapath::cgroup::cgroup2_root().expect("a cgroup2 mount");
        Self::new(&root, prefix)
    }
}

impl Drop for ChildCgroup {
    fn drop(&mut self) {
        // Its processes have exited or are exiting; a cgroup with none can go.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.0).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("could not remove {}", self.0.display());
    }
}

/// Runs `cmd` to completion with its process moved into the network
/// namespace `netns` (by `setns`, so `/sys` stays as it is) and into
/// `cgroup` before it execs: nothing it opens is outside either.
pub fn output_inside(mut cmd: Command, cgroup: &Path, netns: &str) -> std::io::Result<Output> {
    use std::os::{fd::AsRawFd as _, unix::process::CommandExt as _};
    let ns = std::fs::File::open(format!("/run/netns/{netns}"))?;
    let procs = cgroup.join("cgroup.procs");
    let fd = ns.as_raw_fd();
    // SAFETY: between fork and exec the child only calls setns and opens
    // and writes the procs file; `ns` outlives the spawn below.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            std::fs::write(&procs, b"0")
        });
    }
    let out = cmd.output();
    drop(ns);
    out
}
