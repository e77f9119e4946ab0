//! The TC classifiers: the ingress decision as a classifier where XDP is
//! taken or missing (`attach --mode tc`), and the egress classifier on
//! frames leaving an interface (`[egress] mode = "tc"` or `"both"`).
//!
//! Both attach through TCX links (Linux 6.6+), which run beside other TC
//! programs on the same hook (our classifiers return "next" for what they
//! pass) and are pinned like the XDP links: the ingress link at
//! `PIN/links/IF`, where an XDP link would be (an interface has one
//! ingress hook), the egress link at `PIN/tc-egress/IF`. A restart or an
//! upgrade swaps the program in place ([`replace`]); [`detach`] removes
//! the pin, which detaches the link.
//!
//! Where the kernel has no TCX (or [`TC_ENV`] says `clsact`), the
//! classifier goes in as a direct-action `cls_bpf` filter under the
//! `clsact` qdisc instead, at a fixed priority and handle of its own
//! ([`NL_PRIORITY`], [`NL_HANDLE`]), so that it can be found again without
//! any state. A filter is not a BPF link: the program itself is pinned at
//! the same path, which marks the attachment for `status`, and a replace
//! swaps the filter's program in place (a netlink change of the same
//! filter, atomic for packets). The qdisc stays when the filter goes:
//! other filters may use it.

use aya::programs::{
    LinkOrder, SchedClassifier, TcAttach, TcAttachType,
    links::{FdLink, Link as _, LinkType, PinnedLink},
    tc::{NlOptions, SchedClassifierLink, TcHandle, qdisc_add_clsact},
};

/// The environment variable that picks the TC attachment: `tcx` (fail
/// where the kernel has none) or `clsact` (always the qdisc filter);
/// unset, TCX with the `clsact` fallback.
pub const TC_ENV: &str = "XDP_BLOCKLIST_TC";

/// Priority of our `cls_bpf` filters under `clsact` (lower runs first;
/// the kernel's automatic priorities start at 49152, so ours runs before
/// filters added without one).
pub const NL_PRIORITY: u16 = 0x0b1c;

/// Handle of our `cls_bpf` filters under `clsact`.
pub const NL_HANDLE: TcHandle = TcHandle::new(0, 0xb1c);

/// How a classifier is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attachment {
    /// A TCX link (Linux 6.6+).
    Tcx,
    /// A `cls_bpf` filter under the `clsact` qdisc.
    Clsact,
}

impl Attachment {
    /// `tcx` or `clsact`, as `status` shows it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Tcx => "tcx",
            Self::Clsact => "clsact",
        }
    }
}

/// What is pinned at `path`: an XDP link (`None`), or a classifier and
/// how it is attached. `None` too when nothing is pinned there.
pub fn pinned(path: &std::path::Path) -> Option<Attachment> {
    use std::os::fd::AsRawFd as _;
    let fd = super::maps::obj_get(path, 0).ok()?;
    // The descriptor's inode says what kind of BPF object it is: object
    // info alone cannot, a program's info reads as a (bogus) link's.
    let kind = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()?;
    if kind.to_string_lossy().ends_with("bpf-prog") {
        return Some(Attachment::Clsact);
    }
    let link = PinnedLink::from_pin(path).ok().map(FdLink::from)?;
    match link.info().ok()?.link_type() {
        Ok(LinkType::Tcx) => Some(Attachment::Tcx),
        _ => None,
    }
}

/// The attachment [`TC_ENV`] asks for (`None`: TCX, falling back).
fn wanted() -> Result<Option<Attachment>, DatapathError> {
    match std::env::var(TC_ENV).as_deref() {
        Err(_) | Ok("") => Ok(None),
        Ok("tcx") => Ok(Some(Attachment::Tcx)),
        Ok("clsact") => Ok(Some(Attachment::Clsact)),
        Ok(other) => Err(DatapathError::Other {
            what: format!("{TC_ENV}=`{other}`"),
            source: "use tcx or clsact, or unset it".into(),
        }),
    }
}

use super::{DatapathError, attach::if_index, loader::Loaded, pin::PinDir};

/// Which side of an interface a classifier runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// Frames arriving (the ingress decision, in place of XDP).
    Ingress,
    /// Frames leaving.
    Egress,
}

impl Side {
    fn program(self) -> &'static str {
        match self {
            Self::Ingress => blocklist_ebpf::TC_INGRESS_PROGRAM,
            Self::Egress => blocklist_ebpf::TC_EGRESS_PROGRAM,
        }
    }

    fn attach_type(self) -> TcAttachType {
        match self {
            Self::Ingress => TcAttachType::Ingress,
            Self::Egress => TcAttachType::Egress,
        }
    }

    fn pin(self, pin: &PinDir, iface: &str) -> std::path::PathBuf {
        match self {
            Self::Ingress => pin.link(iface),
            Self::Egress => pin.tc_egress_link(iface),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Ingress => "TC ingress",
            Self::Egress => "TC egress",
        }
    }

    /// The word `tc filter show dev IF WORD` takes.
    fn tc_word(self) -> &'static str {
        match self {
            Self::Ingress => "ingress",
            Self::Egress => "egress",
        }
    }
}

/// Attaches the classifier of `side` to `iface` through a TCX link (or,
/// without TCX, a clsact filter) and pins it; returns which.
pub fn attach(
    loaded: &mut Loaded,
    pin: &PinDir,
    iface: &str,
    side: Side,
) -> Result<Attachment, DatapathError> {
    let ifindex = if_index(iface)?;
    let path = side.pin(pin, iface);
    if path.exists() {
        return Err(DatapathError::AlreadyAttached(match side {
            Side::Ingress => iface.to_owned(),
            Side::Egress => format!("{iface} (egress)"),
        }));
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| DatapathError::other(format!("creating {}", dir.display()), e))?;
    }
    let prog = loaded.tc_program(side.program())?;
    let want = wanted()?;
    if want == Some(Attachment::Clsact) {
        return attach_clsact(prog, ifindex, iface, side, &path).map(|()| Attachment::Clsact);
    }
    let tcx = prog.attach(
        ifindex,
        TcAttach::Tcx {
            attach_type: side.attach_type(),
            order: LinkOrder::default(),
        },
    );
    let id = match tcx {
        Ok(id) => id,
        Err(e) if want.is_none() && !has_tcx() => {
            tracing::info!(%iface, error = %e, "no TCX on this kernel; attaching under clsact");
            return attach_clsact(prog, ifindex, iface, side, &path).map(|()| Attachment::Clsact);
        }
        Err(e) => {
            return Err(DatapathError::other(
                format!("attaching the {} classifier to {iface} (TCX)", side.name()),
                e,
            ));
        }
    };
    let link = prog
        .take_link(id)
        .map_err(|e| DatapathError::other("taking ownership of the TCX link", e))?;
    let fd: FdLink = link
        .try_into()
        .map_err(|e| DatapathError::other("the TC attachment is not a BPF link", e))?;
    fd.pin(&path)
        .map_err(|e| DatapathError::other(format!("pinning the link at {}", path.display()), e))?;
    Ok(Attachment::Tcx)
}

/// TCX arrived in Linux 6.6; an unknown version is taken to have it (the
/// TCX error is then the one worth reporting).
fn has_tcx() -> bool {
    use aya::util::KernelVersion;
    KernelVersion::current().map_or(true, |v| v >= KernelVersion::new(6, 6, 0))
}

/// The classifier of `side` as a `cls_bpf` filter under `clsact`, its
/// program pinned at `path`.
fn attach_clsact(
    prog: &mut SchedClassifier,
    ifindex: u32,
    iface: &str,
    side: Side,
    path: &std::path::Path,
) -> Result<(), DatapathError> {
    // Already there (another tool's filters, or ours) is fine; any other
    // failure shows in the filter's attach below.
    let _ = qdisc_add_clsact(ifindex);
    let id = prog
        .attach(
            ifindex,
            TcAttach::Netlink {
                parent: side.attach_type().into(),
                options: nl_options(),
            },
        )
        .map_err(|e| {
            DatapathError::other(
                format!(
                    "attaching the {} classifier to {iface} under clsact (priority {NL_PRIORITY}; \
                     `tc filter show dev {iface} {}` lists what is there)",
                    side.name(),
                    side.tc_word()
                ),
                e,
            )
        })?;
    keep_filter(prog, id)?;
    prog.pin(path).map_err(|e| {
        DatapathError::other(format!("pinning the classifier at {}", path.display()), e)
    })
}

fn nl_options() -> NlOptions {
    NlOptions {
        priority: NL_PRIORITY,
        handle: NL_HANDLE,
        classid: None,
    }
}

/// The filter outlives this process: dropping aya's handle would delete
/// it, so the handle is forgotten (it holds no descriptor, only the
/// interface, priority and handle, which are constants here).
fn keep_filter(
    prog: &mut SchedClassifier,
    id: aya::programs::tc::SchedClassifierLinkId,
) -> Result<(), DatapathError> {
    let link = prog
        .take_link(id)
        .map_err(|e| DatapathError::other("taking ownership of the clsact filter", e))?;
    std::mem::forget(link);
    Ok(())
}

/// Our `clsact` filter of `side` on `iface`, as aya's handle.
fn clsact_filter(iface: &str, side: Side) -> Result<SchedClassifierLink, DatapathError> {
    SchedClassifierLink::attached(
        if_index(iface)?,
        side.attach_type().into(),
        NL_PRIORITY,
        NL_HANDLE,
        None,
    )
    .map_err(|e| DatapathError::other(format!("finding the clsact filter on {iface}"), e))
}

/// True when the pinned ingress hook of `iface` is a TC classifier (TCX
/// link or clsact filter), not an XDP link.
pub fn is_tc_link(pin: &PinDir, iface: &str) -> bool {
    pinned(&pin.link(iface)).is_some()
}

/// Swaps the freshly loaded classifier of `side` into the pinned link of
/// `iface`, in place.
pub fn replace(
    loaded: &mut Loaded,
    pin: &PinDir,
    iface: &str,
    side: Side,
) -> Result<(), DatapathError> {
    let path = side.pin(pin, iface);
    if pinned(&path) == Some(Attachment::Clsact) {
        let prog: &mut SchedClassifier = loaded.tc_program(side.program())?;
        let id = prog
            .attach_to_link(clsact_filter(iface, side)?)
            .map_err(|e| {
                DatapathError::other(
                    format!("replacing the {} program on {iface} (clsact)", side.name()),
                    e,
                )
            })?;
        keep_filter(prog, id)?;
        // The new program's pin takes the old one's place in one rename;
        // it is staged in the pin root, where no interface is listed
        // (bpffs refuses names with a dot).
        let fresh = pin
            .root()
            .join(format!("replacing-{}-{iface}", side.tc_word()));
        let _ = std::fs::remove_file(&fresh);
        prog.pin(&fresh).map_err(|e| {
            DatapathError::other(format!("pinning the classifier at {}", fresh.display()), e)
        })?;
        return std::fs::rename(&fresh, &path)
            .map_err(|e| DatapathError::other(format!("renaming {}", fresh.display()), e));
    }
    let pinned = PinnedLink::from_pin(&path).map_err(|e| {
        DatapathError::other(format!("opening the pinned link {}", path.display()), e)
    })?;
    let link = SchedClassifierLink::try_from(FdLink::from(pinned))
        .map_err(|e| DatapathError::other(format!("{} is not a TCX link", path.display()), e))?;
    let prog: &mut SchedClassifier = loaded.tc_program(side.program())?;
    prog.attach_to_link(link).map_err(|e| {
        DatapathError::other(
            format!("replacing the {} program on {iface}", side.name()),
            e,
        )
    })?;
    Ok(())
}

/// Detaches the classifier of `side` from `iface`, if one is pinned:
/// removing a TCX link's pin detaches it; a clsact filter is deleted
/// first (unless its interface is gone, and the filter with it).
pub fn detach(pin: &PinDir, iface: &str, side: Side) -> Result<(), DatapathError> {
    let path = side.pin(pin, iface);
    if !path.exists() {
        return Ok(());
    }
    if pinned(&path) == Some(Attachment::Clsact) && if_index(iface).is_ok() {
        clsact_filter(iface, side)?.detach().map_err(|e| {
            DatapathError::other(
                format!("deleting the {} clsact filter on {iface}", side.name()),
                e,
            )
        })?;
    }
    std::fs::remove_file(&path)
        .map_err(|e| DatapathError::other(format!("unpinning {}", path.display()), e))?;
    Ok(())
}

/// Removes the egress classifier of `iface`, if any.
pub fn detach_egress(pin: &PinDir, iface: &str) -> Result<(), DatapathError> {
    detach(pin, iface, Side::Egress)?;
    let _ = std::fs::remove_dir(pin.tc_egress_dir());
    Ok(())
}
