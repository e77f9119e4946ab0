//! The pin directory: where maps and XDP links live on bpffs so that
//! protection and counters outlive any agent process.
//!
//! Layout under the pin directory (default `/sys/fs/bpf/xdp-blocklist`):
//! one file per map, named as in [`blocklist_ebpf::map_names`],
//! `links/<interface>` for each attached interface (its XDP link, or its
//! TC ingress link in TC mode), `tc-egress/<interface>` for each TC egress
//! classifier and `egress/<hook>` for the cgroup hooks.

use std::{
    fs,
    path::{Path, PathBuf},
};

use super::DatapathError;

/// Default pin directory.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/xdp-blocklist";
const BPF_FS_MAGIC: i64 = 0xcafe4a11;

/// A pin directory and the paths inside it.
#[derive(Clone, Debug)]
pub struct PinDir {
    root: PathBuf,
}

impl PinDir {
    /// Wraps a path without touching the file system.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where a map is pinned.
    pub fn map(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Directory of pinned links.
    pub fn links_dir(&self) -> PathBuf {
        self.root.join("links")
    }

    /// Where the XDP link of `iface` is pinned.
    pub fn link(&self, iface: &str) -> PathBuf {
        self.links_dir().join(iface)
    }

    /// Directory of the pinned TC egress links, one per interface.
    pub fn tc_egress_dir(&self) -> PathBuf {
        self.root.join("tc-egress")
    }

    /// Where the TC egress link of `iface` is pinned.
    pub fn tc_egress_link(&self, iface: &str) -> PathBuf {
        self.tc_egress_dir().join(iface)
    }

    /// Interfaces with a pinned TC egress link, sorted.
    pub fn tc_egress_interfaces(&self) -> Vec<String> {
        names_in(&self.tc_egress_dir())
    }

    /// Directory of the pinned cgroup egress links, one per hook.
    pub fn egress_dir(&self) -> PathBuf {
        self.root.join("egress")
    }

    /// Where the link of one cgroup egress hook (`connect4`, ...) is pinned.
    pub fn egress_link(&self, hook: &str) -> PathBuf {
        self.egress_dir().join(hook)
    }

    /// True when the maps are pinned here.
    pub fn has_maps(&self) -> bool {
        self.map(blocklist_ebpf::map_names::BLOCK_V4).exists()
    }

    /// Interfaces with a pinned link, sorted.
    pub fn linked_interfaces(&self) -> Vec<String> {
        names_in(&self.links_dir())
    }

    /// Makes sure the directory exists on a bpffs. When the nearest existing
    /// ancestor is `/sys/fs/bpf` and nothing is mounted there, mounts bpffs
    /// there (as systemd would at boot).
    pub fn ensure(&self) -> Result<(), DatapathError> {
        let mut existing = self.root.as_path();
        while !existing.exists() {
            existing = existing
                .parent()
                .ok_or_else(|| DatapathError::NotBpffs(self.root.clone()))?;
        }
        if !is_bpffs(existing) {
            let sys_bpf = Path::new("/sys/fs/bpf");
            if self.root.starts_with(sys_bpf) && existing.starts_with(sys_bpf) && !is_bpffs(sys_bpf)
            {
                mount_bpffs(sys_bpf)?;
            } else if existing != self.root || !is_bpffs(&self.root) {
                return Err(DatapathError::NotBpffs(self.root.clone()));
            }
        }
        fs::create_dir_all(self.links_dir()).map_err(|e| {
            DatapathError::other(format!("creating {}", self.links_dir().display()), e)
        })
    }

    /// Removes every map pin and the (empty) directories. Called when the
    /// last interface is detached.
    pub fn remove_all(&self) -> Result<(), DatapathError> {
        for name in blocklist_ebpf::map_names::ALL {
            let p = self.map(name);
            if p.exists() {
                fs::remove_file(&p)
                    .map_err(|e| DatapathError::other(format!("unpinning {}", p.display()), e))?;
            }
        }
        let _ = fs::remove_dir(self.links_dir());
        let _ = fs::remove_dir(self.egress_dir());
        let _ = fs::remove_dir(self.tc_egress_dir());
        let _ = fs::remove_dir(&self.root);
        Ok(())
    }
}

/// The names in a directory, sorted (none if it does not exist).
fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    v.sort();
    v
}

/// True when `path` lives on a BPF file system.
pub fn is_bpffs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type().0 == BPF_FS_MAGIC)
        .unwrap_or(false)
}

/// Mounts a bpffs at `path`.
pub fn mount_bpffs(path: &Path) -> Result<(), DatapathError> {
    nix::mount::mount(
        Some("bpf"),
        path,
        Some("bpf"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|e| DatapathError::other(format!("mounting bpffs at {}", path.display()), e))
}
