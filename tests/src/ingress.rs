//! Which ingress hook the end-to-end suite runs on, and the foreign XDP
//! program that makes TC the only place left.
//!
//! `XDPBL_INGRESS=tc` makes the e2e suite attach with `--mode tc` where it
//! would otherwise ask for `native` or `skb`, after proving that `auto`
//! refuses the interface because [`ForeignXdp`] holds it. `cargo xtask
//! test` runs the suite once per hook.

use std::{path::Path, process::Command};

use crate::{bpffs::Bpffs, lab::Netns};

/// The environment variable that picks the hook.
pub const INGRESS_ENV: &str = "XDPBL_INGRESS";

/// The ingress hook under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ingress {
    /// The XDP program, in the mode the test asks for.
    Xdp,
    /// The TC classifier, beside another XDP program.
    Tc,
}

/// `XDPBL_INGRESS` (`xdp` or `tc`), XDP when unset.
pub fn ingress_under_test() -> Ingress {
    match std::env::var(INGRESS_ENV).as_deref() {
        Ok("tc") => Ingress::Tc,
        Ok("xdp") | Err(_) => Ingress::Xdp,
        Ok(other) => panic!("{INGRESS_ENV}={other:?}: expected xdp or tc"),
    }
}

/// How the agent attaches its TC classifiers in this run: `clsact` when
/// the suite runs with `XDP_BLOCKLIST_TC=clsact` (the fallback for kernels
/// without TCX, forced), else `tcx`: the mode `status` and `attach` name.
pub fn tc_attachment_under_test() -> &'static str {
    match std::env::var(blocklist_agent::datapath::tc::TC_ENV).as_deref() {
        Ok("clsact") => "clsact",
        _ => "tcx",
    }
}

/// Another XDP program on an interface: xdp-filter from xdp-tools, loaded
/// through libxdp's dispatcher as a real deployment has it, with no rules
/// (it passes everything). Unloaded on drop.
pub struct ForeignXdp {
    ns: String,
    iface: String,
    fs: Bpffs,
}

impl ForeignXdp {
    /// Loads xdp-filter on `iface` inside `ns` in `mode` (`native`/`skb`).
    pub fn attach(ns: &Netns, iface: &str, mode: &str) -> Self {
        let fs = Bpffs::new();
        let this = Self {
            ns: ns.name().to_owned(),
            iface: iface.to_owned(),
            fs,
        };
        let out = this
            .xdp_filter(&["load", "-m", mode, "-f", "ipv4,ipv6", iface])
            .output()
            .expect("running xdp-filter (cargo xtask setup installs xdp-tools)");
        assert!(
            out.status.success(),
            "xdp-filter load on {iface}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        this
    }

    fn xdp_filter(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns, "env"])
            .arg(format!("LIBXDP_BPFFS={}", self.bpffs().display()))
            .arg("xdp-filter")
            .args(args);
        c
    }

    fn bpffs(&self) -> &Path {
        self.fs.path()
    }
}

impl Drop for ForeignXdp {
    fn drop(&mut self) {
        let _ = self.xdp_filter(&["unload", &self.iface]).output();
    }
}
