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

use aya::programs::{
    LinkOrder, SchedClassifier, TcAttach, TcAttachType,
    links::{FdLink, PinnedLink},
    tc::SchedClassifierLink,
};

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
}

/// Attaches the classifier of `side` to `iface` through a TCX link and
/// pins it.
pub fn attach(
    loaded: &mut Loaded,
    pin: &PinDir,
    iface: &str,
    side: Side,
) -> Result<(), DatapathError> {
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
    let id = prog
        .attach(
            ifindex,
            TcAttach::Tcx {
                attach_type: side.attach_type(),
                order: LinkOrder::default(),
            },
        )
        .map_err(|e| {
            DatapathError::other(
                format!(
                    "attaching the {} classifier to {iface} (TCX links need Linux 6.6 or \
                     newer; on older kernels use XDP and [egress] mode = \"cgroup\")",
                    side.name()
                ),
                e,
            )
        })?;
    let link = prog
        .take_link(id)
        .map_err(|e| DatapathError::other("taking ownership of the TCX link", e))?;
    let fd: FdLink = link
        .try_into()
        .map_err(|e| DatapathError::other("the TC attachment is not a BPF link", e))?;
    fd.pin(&path)
        .map_err(|e| DatapathError::other(format!("pinning the link at {}", path.display()), e))?;
    Ok(())
}

/// True when the pinned ingress link of `iface` is a TC (TCX) link, not
/// an XDP one.
pub fn is_tc_link(pin: &PinDir, iface: &str) -> bool {
    PinnedLink::from_pin(pin.link(iface))
        .ok()
        .map(FdLink::from)
        .and_then(|fd| fd.info().ok())
        .and_then(|i| i.link_type().ok())
        .is_some_and(|t| t == aya::programs::links::LinkType::Tcx)
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

/// Removes the pinned egress link of `iface`, if any, which detaches it.
pub fn detach_egress(pin: &PinDir, iface: &str) -> Result<(), DatapathError> {
    let path = pin.tc_egress_link(iface);
    if !path.exists() {
        return Ok(());
    }
    std::fs::remove_file(&path)
        .map_err(|e| DatapathError::other(format!("unpinning {}", path.display()), e))?;
    let _ = std::fs::remove_dir(pin.tc_egress_dir());
    Ok(())
}
