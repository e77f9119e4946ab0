//! Attaching the loaded program to an interface (native XDP, falling back
//! to generic/skb mode, or the TC ingress classifier in its place) and
//! pinning the link so it outlives the agent.

use std::{ffi::CString, fmt, str::FromStr};

use aya::programs::{
    Xdp, XdpMode,
    links::{FdLink, PinnedLink},
    xdp::XdpLink,
};

use super::{DatapathError, loader::Loaded, pin::PinDir};

/// How the user asked to attach.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestedMode {
    /// Native if the driver supports it, else skb.
    #[default]
    Auto,
    /// Driver (native) mode only.
    Native,
    /// Generic (skb) mode only.
    Skb,
    /// The TC ingress classifier instead of XDP: for interfaces where
    /// another XDP program is attached, or whose driver has no XDP.
    Tc,
}

impl FromStr for RequestedMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "native" => Ok(Self::Native),
            "skb" => Ok(Self::Skb),
            "tc" => Ok(Self::Tc),
            _ => Err(format!(
                "unknown attach mode `{s}` (expected auto, native, skb or tc)"
            )),
        }
    }
}

/// The mode the kernel actually gave us.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachedMode {
    /// Driver (native) XDP.
    Native,
    /// Generic (skb) XDP.
    Skb,
    /// The TC ingress classifier (TCX).
    Tc,
}

impl AttachedMode {
    /// The hook that makes the ingress decision in this mode.
    pub fn hook(self) -> u8 {
        match self {
            Self::Native | Self::Skb => blocklist_ebpf::HOOK_XDP,
            Self::Tc => blocklist_ebpf::HOOK_TC_INGRESS,
        }
    }
}

impl fmt::Display for AttachedMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Native => "native",
            Self::Skb => "skb",
            Self::Tc => "tc",
        })
    }
}

/// The kernel index of `iface`, or an error naming it.
pub fn if_index(iface: &str) -> Result<u32, DatapathError> {
    let c = CString::new(iface).map_err(|_| DatapathError::NoSuchInterface(iface.to_owned()))?;
    // SAFETY: `c` is a valid NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        return Err(DatapathError::NoSuchInterface(iface.to_owned()));
    }
    Ok(idx)
}

/// Attaches the loaded program to `iface` and pins the link at
/// `pin.link(iface)`. With [`RequestedMode::Auto`] native mode is tried
/// first and skb mode used if the driver refuses; when another XDP
/// program holds the interface, it fails with [`DatapathError::XdpTaken`]
/// rather than fall back to TC on its own (the operator decides where
/// the blocklist runs relative to that program).
pub fn attach(
    loaded: &mut Loaded,
    pin: &PinDir,
    iface: &str,
    mode: RequestedMode,
) -> Result<AttachedMode, DatapathError> {
    if_index(iface)?;
    let link_path = pin.link(iface);
    if link_path.exists() {
        return Err(DatapathError::AlreadyAttached(iface.to_owned()));
    }
    if mode == RequestedMode::Tc {
        super::tc::attach(loaded, pin, iface, super::tc::Side::Ingress)?;
        return Ok(AttachedMode::Tc);
    }
    let prog = loaded.program()?;
    let (attached, id) = match mode {
        RequestedMode::Tc => unreachable!("handled above"),
        RequestedMode::Native => (
            AttachedMode::Native,
            try_attach(prog, iface, XdpMode::Driver)?,
        ),
        RequestedMode::Skb => (AttachedMode::Skb, try_attach(prog, iface, XdpMode::Skb)?),
        RequestedMode::Auto => match try_attach(prog, iface, XdpMode::Driver) {
            Ok(id) => (AttachedMode::Native, id),
            Err(native_err) if xdp_taken(&native_err) => {
                return Err(DatapathError::XdpTaken(iface.to_owned()));
            }
            Err(native_err) => {
                tracing::info!(%iface, error = %native_err, "native XDP refused, falling back to skb mode");
                match try_attach(prog, iface, XdpMode::Skb) {
                    Err(e) if xdp_taken(&e) => {
                        return Err(DatapathError::XdpTaken(iface.to_owned()));
                    }
                    r => (AttachedMode::Skb, r?),
                }
            }
        },
    };
    let link: XdpLink = prog
        .take_link(id)
        .map_err(|e| DatapathError::other("taking ownership of the XDP link", e))?;
    let fd_link: FdLink = link.try_into().map_err(|e| {
        DatapathError::other(
            format!(
                "the kernel attached {iface} without a BPF link (kernel < 5.9?); cannot pin it"
            ),
            e,
        )
    })?;
    fd_link.pin(&link_path).map_err(|e| {
        DatapathError::other(format!("pinning the link at {}", link_path.display()), e)
    })?;
    Ok(attached)
}

/// True when an attach failed because another XDP program holds the
/// interface (`EBUSY` from a link, `EEXIST` across native and skb modes).
fn xdp_taken(e: &DatapathError) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>()
            && matches!(io.raw_os_error(), Some(libc::EBUSY) | Some(libc::EEXIST))
        {
            return true;
        }
        source = s.source();
    }
    false
}

fn try_attach(
    prog: &mut Xdp,
    iface: &str,
    mode: XdpMode,
) -> Result<aya::programs::xdp::XdpLinkId, DatapathError> {
    prog.attach(if_index(iface)?, mode)
        .map_err(|source| DatapathError::Attach {
            iface: iface.to_owned(),
            mode: if mode == XdpMode::Skb {
                "skb"
            } else {
                "native"
            },
            source,
        })
}

/// Atomically replaces the program behind the pinned link of `iface` with
/// the freshly loaded one (an upgrade or agent restart that never leaves the
/// interface unprotected). Maps are shared through the pins.
pub fn replace(loaded: &mut Loaded, pin: &PinDir, iface: &str) -> Result<(), DatapathError> {
    let link_path = pin.link(iface);
    if link_path.exists() && super::tc::is_tc_link(pin, iface) {
        return super::tc::replace(loaded, pin, iface, super::tc::Side::Ingress);
    }
    let pinned = open_link(&link_path, iface)?;
    let fd_link: FdLink = pinned.into();
    let link = XdpLink::try_from(fd_link).map_err(|e| {
        DatapathError::other(format!("{} is not an XDP link", link_path.display()), e)
    })?;
    // bpf_link_update swaps the program atomically. Our handle to the link
    // is closed when `loaded` drops; the pin keeps the link alive.
    loaded
        .program()?
        .attach_to_link(link)
        .map_err(|e| DatapathError::other(format!("replacing the program on {iface}"), e))?;
    Ok(())
}

/// Swaps the freshly loaded programs into every pinned egress link: the
/// TC egress classifiers and the cgroup hooks (an upgrade, restart or
/// map growth that never leaves a hook unguarded; the ingress links are
/// swapped per interface with [`replace`]). Returns what was swapped.
pub fn replace_egress(loaded: &mut Loaded, pin: &PinDir) -> Result<Vec<String>, DatapathError> {
    let mut done = Vec::new();
    for iface in pin.tc_egress_interfaces() {
        super::tc::replace(loaded, pin, &iface, super::tc::Side::Egress)?;
        done.push(format!("the TC egress classifier on {iface}"));
    }
    if !super::cgroup::attached(pin).is_empty() {
        super::cgroup::replace(loaded, pin)?;
        done.push("the cgroup egress hooks".to_owned());
    }
    Ok(done)
}

/// Opens the pinned XDP link of `iface`, or says it is not attached.
fn open_link(link_path: &std::path::Path, iface: &str) -> Result<PinnedLink, DatapathError> {
    if !link_path.exists() {
        return Err(DatapathError::NotAttached(
            iface.to_owned(),
            link_path.to_owned(),
        ));
    }
    PinnedLink::from_pin(link_path).map_err(|e| {
        DatapathError::other(
            format!("opening the pinned link {}", link_path.display()),
            e,
        )
    })
}

/// Removes the pinned link of `iface`, which detaches the program.
pub fn detach(pin: &PinDir, iface: &str) -> Result<(), DatapathError> {
    let link_path = pin.link(iface);
    if super::tc::pinned(&link_path) == Some(super::tc::Attachment::Clsact) {
        return super::tc::detach(pin, iface, super::tc::Side::Ingress);
    }
    let pinned = open_link(&link_path, iface)?;
    let fd_link = pinned
        .unpin()
        .map_err(|e| DatapathError::other(format!("unpinning {}", link_path.display()), e))?;
    // Closing the last reference to a BPF link detaches it.
    drop(fd_link);
    Ok(())
}
