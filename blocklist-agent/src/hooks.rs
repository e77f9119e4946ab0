//! Every hook xdp-blocklist runs on, as one set: which are attached, the
//! egress hooks the configuration wants (put in place or taken away), and
//! detaching. (An upgrade swaps the program behind every pinned link with
//! `datapath::attach::replace` and `replace_egress`.)
//!
//! The hooks, by the `hook` label the counters carry:
//! - `xdp`: the XDP program on an interface's ingress (`PIN/links/IF`);
//! - `tc_ingress`: the same decision as a TC classifier, in its place
//!   (`attach --mode tc`; also `PIN/links/IF`);
//! - `tc_egress`: the TC classifier on an interface's egress
//!   (`PIN/tc-egress/IF`), for every frame leaving it;
//! - `cgroup`: the socket hooks on a cgroup v2 (`PIN/egress/HOOK`), which
//!   refuse `connect()` and `sendmsg()` to listed addresses and name the
//!   process.
//!
//! `[egress] mode` says which egress hooks are wanted; the environment
//! variable [`EGRESS_ENV`] overrides it (the test suites set it to `off`
//! so that nothing is ever attached to the host's root cgroup by
//! accident).

use std::{path::PathBuf, time::SystemTime};

use anyhow::Context as _;
use serde::Serialize;

use crate::{
    config::{Egress, EgressMode},
    datapath::{attach, cgroup, loader::Loaded, pin::PinDir, tc},
    state::{EgressRecord, StateDir},
};

/// The environment variable that overrides `[egress] mode`.
pub const EGRESS_ENV: &str = "XDP_BLOCKLIST_EGRESS";

/// `[egress] mode`, unless [`EGRESS_ENV`] says otherwise.
pub fn egress_mode(egress: &Egress) -> anyhow::Result<EgressMode> {
    match std::env::var(EGRESS_ENV) {
        Ok(v) if !v.is_empty() => {
            <EgressMode as clap::ValueEnum>::from_str(&v, true).map_err(|_| {
                anyhow::anyhow!(
                    "{EGRESS_ENV}=`{v}` is not an egress mode; use both, cgroup, tc or off"
                )
            })
        }
        _ => Ok(egress.mode),
    }
}

/// One attached hook, as `status` shows it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Hook {
    /// `xdp`, `tc_ingress`, `tc_egress` or `cgroup`.
    pub hook: &'static str,
    /// The interface, or the cgroup's path.
    pub target: String,
    /// `native`/`skb` for XDP, `tcx` for TC, the socket hooks for a cgroup.
    pub mode: String,
    /// When it was attached, where recorded.
    #[serde(with = "crate::timestamp::option")]
    pub since: Option<SystemTime>,
}

/// Every hook pinned under `pin`.
pub fn attached(pin: &PinDir, state: &StateDir) -> Vec<Hook> {
    let recorded = state.attachments().unwrap_or_default();
    let mut hooks = Vec::new();
    for iface in pin.linked_interfaces() {
        let rec = recorded.get(&iface);
        let tc = tc::is_tc_link(pin, &iface);
        hooks.push(Hook {
            hook: if tc { "tc_ingress" } else { "xdp" },
            mode: match (tc, rec) {
                (true, _) => tc_mode(&pin.link(&iface)),
                (false, Some(r)) => r.mode.to_string(),
                (false, None) => "unknown".to_owned(),
            },
            since: rec.map(|r| r.since),
            target: iface,
        });
    }
    for iface in pin.tc_egress_interfaces() {
        hooks.push(Hook {
            hook: "tc_egress",
            mode: tc_mode(&pin.tc_egress_link(&iface)),
            target: iface,
            since: None,
        });
    }
    let socket = cgroup::attached(pin);
    if !socket.is_empty() {
        let rec = state.egress();
        hooks.push(Hook {
            hook: "cgroup",
            target: rec
                .as_ref()
                .map(|r| r.cgroup.display().to_string())
                .unwrap_or_else(|| "unknown".to_owned()),
            mode: socket.join(","),
            since: rec.map(|r| r.since),
        });
    }
    hooks
}

fn tc_mode(path: &std::path::Path) -> String {
    tc::pinned(path)
        .map_or("unknown", tc::Attachment::name)
        .to_owned()
}

/// What has to change for the egress hooks to match the configuration.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct EgressPlan {
    /// Attach the socket hooks to this cgroup.
    pub attach_cgroup: Option<PathBuf>,
    /// Detach the socket hooks.
    pub detach_cgroup: bool,
    /// Attach the TC egress classifier to these interfaces.
    pub attach_tc: Vec<String>,
    /// Detach it from these.
    pub detach_tc: Vec<String>,
}

impl EgressPlan {
    /// The egress hooks the configuration wants on the interfaces that
    /// are attached now (TC egress goes with an interface's ingress hook).
    pub fn new(pin: &PinDir, egress: &Egress) -> anyhow::Result<Self> {
        let mode = egress_mode(egress)?;
        let linked = pin.linked_interfaces();
        let tc_now = pin.tc_egress_interfaces();
        let cgroup_now = !cgroup::attached(pin).is_empty();
        let mut plan = Self::default();
        if mode.cgroup() && !cgroup_now && !linked.is_empty() {
            plan.attach_cgroup = Some(match &egress.cgroup {
                Some(p) => p.clone(),
                None => cgroup::cgroup2_root()?,
            });
        }
        plan.detach_cgroup = cgroup_now && (!mode.cgroup() || linked.is_empty());
        for iface in &linked {
            if mode.tc() && !tc_now.contains(iface) {
                plan.attach_tc.push(iface.clone());
            }
        }
        for iface in &tc_now {
            if !mode.tc() || !linked.contains(iface) {
                plan.detach_tc.push(iface.clone());
            }
        }
        Ok(plan)
    }

    /// Nothing to do (then no program needs loading).
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Carries the plan out; returns a line for each change.
    pub fn apply(
        self,
        loaded: &mut Loaded,
        pin: &PinDir,
        state: &StateDir,
    ) -> anyhow::Result<Vec<String>> {
        let mut done = Vec::new();
        for iface in &self.detach_tc {
            tc::detach_egress(pin, iface)?;
            done.push(format!("detached the TC egress classifier from {iface}"));
        }
        if self.detach_cgroup {
            cgroup::detach(pin)?;
            state.set_egress(None)?;
            done.push("detached the cgroup egress hooks".to_owned());
        }
        for iface in &self.attach_tc {
            let how = tc::attach(loaded, pin, iface, tc::Side::Egress)?;
            done.push(format!(
                "attached the TC egress classifier to {iface} ({})",
                how.name()
            ));
        }
        if let Some(path) = &self.attach_cgroup {
            cgroup::attach(loaded, pin, path)?;
            state
                .set_egress(Some(&EgressRecord {
                    cgroup: path.clone(),
                    since: SystemTime::now(),
                }))
                .with_context(|| {
                    format!("recording the egress hooks in {}", state.root().display())
                })?;
            done.push(format!(
                "attached the egress socket hooks (connect4/6, sendmsg4/6) to the cgroup {}",
                path.display()
            ));
        }
        Ok(done)
    }
}

/// Detaches `iface`: its ingress hook and its TC egress classifier.
pub fn detach_interface(pin: &PinDir, iface: &str) -> anyhow::Result<()> {
    attach::detach(pin, iface)?;
    tc::detach_egress(pin, iface)?;
    Ok(())
}

/// After the last interface is detached: the cgroup hooks go too, and
/// every pin. Returns whether that happened.
pub fn detach_when_unused(pin: &PinDir, state: &StateDir) -> anyhow::Result<bool> {
    if !pin.linked_interfaces().is_empty() {
        return Ok(false);
    }
    for iface in pin.tc_egress_interfaces() {
        tc::detach_egress(pin, &iface)?;
    }
    cgroup::detach(pin)?;
    state.set_egress(None)?;
    pin.remove_all()?;
    Ok(true)
}
