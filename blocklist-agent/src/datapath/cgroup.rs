//! The socket-level egress hooks on a cgroup v2: `connect4`, `connect6`,
//! `sendmsg4` and `sendmsg6` programs (see `blocklist-ebpf/src/egress.rs`)
//! that refuse connections and datagrams from processes in the cgroup (and
//! every cgroup below it) to blocked addresses.
//!
//! Each hook's link is pinned under `PIN/egress/HOOK`, like the XDP links,
//! so the hooks outlive the agent, survive a restart, are swapped in place
//! by an upgrade ([`replace`]) and go away with [`detach`].

use std::path::{Path, PathBuf};

use aya::programs::{
    CgroupAttachMode,
    cgroup_sock_addr::CgroupSockAddrLink,
    links::{FdLink, PinnedLink},
};
use blocklist_ebpf::EGRESS_PROGRAMS;

use super::{DatapathError, loader::Loaded, pin::PinDir};

/// Where the cgroup v2 hierarchy is mounted, from `/proc/self/mountinfo`
/// (`/sys/fs/cgroup` on current distributions, `/sys/fs/cgroup/unified` on
/// hybrid layouts): the default cgroup of the egress hooks.
pub fn cgroup2_root() -> Result<PathBuf, DatapathError> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| DatapathError::other("reading /proc/self/mountinfo", e))?;
    cgroup2_in(&info).ok_or_else(|| DatapathError::Other {
        what: "finding the cgroup v2 hierarchy".into(),
        source: "no cgroup2 file system is mounted (see /proc/self/mountinfo); mount one \
                 (`mount -t cgroup2 none /sys/fs/cgroup`) or set [egress] mode = \"off\""
            .into(),
    })
}

/// The first cgroup2 mount point in a mountinfo text.
fn cgroup2_in(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        // Field 5 is the mount point, with spaces escaped as \040.
        let point = left.split_whitespace().nth(4)?;
        Some(PathBuf::from(point.replace("\\040", " ")))
    })
}

/// The hooks pinned under `pin`, in `EGRESS_PROGRAMS` order.
pub fn attached(pin: &PinDir) -> Vec<&'static str> {
    EGRESS_PROGRAMS
        .iter()
        .map(|(_, hook)| *hook)
        .filter(|hook| pin.egress_link(hook).exists())
        .collect()
}

/// Attaches every egress hook to the cgroup at `cgroup` and pins the
/// links. Other programs on the same cgroup keep running (the hooks are
/// attached alongside them, and all must allow a connection).
pub fn attach(loaded: &mut Loaded, pin: &PinDir, cgroup: &Path) -> Result<(), DatapathError> {
    let dir = std::fs::File::open(cgroup).map_err(|e| {
        DatapathError::other(
            format!(
                "opening the cgroup {} for the egress hooks (is it a cgroup v2 directory? \
                 set [egress] cgroup)",
                cgroup.display()
            ),
            e,
        )
    })?;
    std::fs::create_dir_all(pin.egress_dir())
        .map_err(|e| DatapathError::other(format!("creating {}", pin.egress_dir().display()), e))?;
    for (name, hook) in EGRESS_PROGRAMS {
        let path = pin.egress_link(hook);
        if path.exists() {
            return Err(DatapathError::AlreadyAttached(format!("egress {hook}")));
        }
        let prog = loaded.egress_program(name)?;
        // A BPF link takes no attach flags (`Single` is 0) and always runs
        // alongside the cgroup's other programs.
        let id = prog.attach(&dir, CgroupAttachMode::Single).map_err(|e| {
            DatapathError::other(
                format!("attaching the {hook} hook to {}", cgroup.display()),
                e,
            )
        })?;
        let link: CgroupSockAddrLink = prog
            .take_link(id)
            .map_err(|e| DatapathError::other(format!("taking the {hook} link"), e))?;
        let fd: FdLink = link.try_into().map_err(|e| {
            DatapathError::other(
                format!("the kernel attached {hook} without a BPF link (kernel < 5.7?)"),
                e,
            )
        })?;
        fd.pin(&path).map_err(|e| {
            DatapathError::other(format!("pinning the link at {}", path.display()), e)
        })?;
    }
    Ok(())
}

/// Swaps the freshly loaded egress programs into the pinned links, in
/// place (an upgrade that never leaves the host unguarded).
pub fn replace(loaded: &mut Loaded, pin: &PinDir) -> Result<(), DatapathError> {
    for (name, hook) in EGRESS_PROGRAMS {
        let path = pin.egress_link(hook);
        if !path.exists() {
            continue;
        }
        let fd: FdLink = open(&path)?.into();
        let link = CgroupSockAddrLink::try_from(fd).map_err(|e| {
            DatapathError::other(format!("{} is not a cgroup link", path.display()), e)
        })?;
        loaded
            .egress_program(name)?
            .attach_to_link(link)
            .map_err(|e| DatapathError::other(format!("replacing the {hook} program"), e))?;
    }
    Ok(())
}

/// Removes every pinned egress link, which detaches the hooks.
pub fn detach(pin: &PinDir) -> Result<(), DatapathError> {
    for (_, hook) in EGRESS_PROGRAMS {
        let path = pin.egress_link(hook);
        if !path.exists() {
            continue;
        }
        let fd = open(&path)?
            .unpin()
            .map_err(|e| DatapathError::other(format!("unpinning {}", path.display()), e))?;
        drop(fd);
    }
    let _ = std::fs::remove_dir(pin.egress_dir());
    Ok(())
}

fn open(path: &Path) -> Result<PinnedLink, DatapathError> {
    PinnedLink::from_pin(path)
        .map_err(|e| DatapathError::other(format!("opening the pinned link {}", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cgroup2_in_a_hybrid_layout() {
        let info = "\
25 30 0:23 / /sys rw,nosuid - sysfs sysfs rw
31 25 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
32 31 0:27 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw
33 31 0:28 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd
";
        assert_eq!(
            cgroup2_in(info),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(
            cgroup2_in("1 0 0:1 / /a\\040b rw - cgroup2 none rw\n"),
            Some(PathBuf::from("/a b"))
        );
        assert_eq!(cgroup2_in("25 30 0:23 / /sys rw - sysfs sysfs rw\n"), None);
    }
}
