//! A private bpffs mounted in a temporary directory.

use std::path::{Path, PathBuf};

use blocklist_agent::datapath::pin::PinDir;

/// A bpffs mounted for one test, unmounted (dropping every pin) on drop.
pub struct Bpffs {
    dir: tempfile::TempDir,
}

impl Bpffs {
    /// Mounts a fresh bpffs.
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("xdpbl-bpffs-")
            .tempdir()
            .expect("creating a temporary directory");
        nix::mount::mount(
            Some("bpf"),
            dir.path(),
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .expect("mounting a bpffs (are we root?)");
        Self { dir }
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A pin directory inside it.
    pub fn pin_dir(&self) -> PathBuf {
        self.dir.path().join("xdp-blocklist")
    }

    /// The same as a [`PinDir`].
    pub fn pin(&self) -> PinDir {
        PinDir::new(self.pin_dir())
    }
}

impl Default for Bpffs {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        // Lazy unmount: a link or map fd still open elsewhere keeps the
        // objects alive, but the mount point must go.
        let _ = nix::mount::umount2(self.dir.path(), nix::mount::MntFlags::MNT_DETACH);
    }
}
