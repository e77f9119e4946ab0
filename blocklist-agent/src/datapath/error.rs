//! Errors of the datapath layer, each with what to do about it.

use std::path::PathBuf;

/// What went wrong talking to the kernel.
#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    /// The process lacks the privileges for BPF.
    #[error(
        "{what}: permission denied; run as root (or with CAP_BPF, CAP_NET_ADMIN and CAP_SYS_ADMIN), \
         or, for status/top/check/list, as a member of the configured [access] group"
    )]
    PermissionDenied {
        /// What was being done.
        what: String,
    },
    /// The kernel has no BPF system call.
    #[error(
        "{what}: this kernel has no BPF support (bpf() returned ENOSYS); xdp-blocklist needs \
         Linux >= 5.15 built with CONFIG_BPF_SYSCALL and CONFIG_BPF_JIT"
    )]
    NoBpf {
        /// What was being done.
        what: String,
    },
    /// Nothing is pinned where we looked.
    #[error(
        "no xdp-blocklist maps under {0}; attach first with `blocklist-agent attach --iface IF` \
         (or pass the --pin-dir the agent uses)"
    )]
    NotPinned(PathBuf),
    /// The pin directory is not on a BPF filesystem and cannot be made one.
    #[error(
        "{0} is not on a BPF filesystem; mount one (`mount -t bpf bpf /sys/fs/bpf`) \
         or pass --pin-dir under an existing bpffs"
    )]
    NotBpffs(PathBuf),
    /// The interface does not exist.
    #[error("interface `{0}` does not exist; check the name with `ip link`")]
    NoSuchInterface(String),
    /// The interface already runs xdp-blocklist.
    #[error(
        "xdp-blocklist is already attached to {0}; run `blocklist-agent detach --iface {0}` first, \
         or `attach --replace` to load a new program on the same link"
    )]
    AlreadyAttached(String),
    /// The interface does not run xdp-blocklist.
    #[error("xdp-blocklist is not attached to {0} (no pinned link under {1})")]
    NotAttached(String, PathBuf),
    /// The kernel refused an attach mode.
    #[error(
        "attaching to {iface} in {mode} mode failed: {source}; try --mode skb, \
         or check that no other XDP program is attached (`ip link show {iface}`)"
    )]
    Attach {
        /// Interface.
        iface: String,
        /// Requested mode.
        mode: &'static str,
        /// Kernel error.
        source: aya::programs::ProgramError,
    },
    /// Another XDP program holds the interface.
    #[error(
        "another XDP program is attached to {0} (a libxdp dispatcher, Cilium, Katran...; \
         see `ip link show {0}`); run xdp-blocklist beside it as a TC classifier with \
         `attach --iface {0} --mode tc` (or xdp_mode = \"tc\"), or detach the other program"
    )]
    XdpTaken(String),
    /// A trie refused an insert because it is full.
    #[error(
        "the {map} map is full ({max} entries): {entry} was not added. Use fewer entries: \
         drop or narrow a feed, or merge adjacent entries into wider prefixes"
    )]
    Full {
        /// Map name.
        map: &'static str,
        /// Its capacity.
        max: u32,
        /// The entry that did not fit.
        entry: String,
    },
    /// Any other BPF or I/O failure.
    #[error("{what}: {source}")]
    Other {
        /// What was being done.
        what: String,
        /// The underlying error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl DatapathError {
    /// Wraps an error, recognising permission problems anywhere in its chain.
    pub fn other(
        what: impl Into<String>,
        e: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        let what = what.into();
        if has_errno(&e, libc::ENOSYS) {
            return DatapathError::NoBpf { what };
        }
        // Root with EPERM/EACCES is a verifier or kernel refusal, not a
        // privilege problem: keep the real error (and its verifier log).
        if !nix::unistd::geteuid().is_root() && is_permission_error(&e) {
            return DatapathError::PermissionDenied { what };
        }
        DatapathError::Other {
            what,
            source: Box::new(e),
        }
    }

    /// Whether the kernel answered `errno` somewhere in this error's
    /// chain (for callers that tell one refusal from another).
    ///
    /// ```
    /// use blocklist_agent::datapath::error::DatapathError;
    ///
    /// let io = std::io::Error::from_raw_os_error(libc::E2BIG);
    /// let e = DatapathError::other("BPF_PROG_TEST_RUN", io);
    /// assert!(e.has_errno(libc::E2BIG));
    /// assert!(!e.has_errno(libc::EINVAL));
    /// ```
    pub fn has_errno(&self, errno: i32) -> bool {
        has_errno(self, errno)
    }
}

fn has_errno(e: &(dyn std::error::Error + 'static), errno: i32) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && io.raw_os_error() == Some(errno)
        {
            return true;
        }
        cur = err.source();
    }
    false
}

fn is_permission_error(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && matches!(io.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES))
        {
            return true;
        }
        let text = err.to_string();
        if text.contains("Operation not permitted") || text.contains("Permission denied") {
            return true;
        }
        cur = err.source();
    }
    false
}
