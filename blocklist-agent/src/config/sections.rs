//! The sections of the configuration file other than feeds and guards
//! (which the feed layer owns, [`crate::feed::config`]): `[datapath]`,
//! `[egress]`, `[allow]`, `[metrics]`, `[export]` and `[events]`.

use std::{path::PathBuf, time::Duration};

use serde::Deserialize;

use super::Lookup;
use crate::{
    feed::config::{duration, yes},
    prefix::Prefix,
};

/// The `[datapath]` table.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Datapath {
    /// `lookup = "table"` (default) or `"trie"`; the environment variable
    /// `XDP_BLOCKLIST_LOOKUP` overrides it.
    pub lookup: Lookup,
    /// Most block entries, IPv4 and IPv6 together (1 to 1,048,575, the
    /// default). The per-entry counters, the exact maps and the table's
    /// range arrays are made this size when the maps are created, so a
    /// host with a small list pays for a small one (about 10 MiB of kernel
    /// memory for a 10,000-entry list instead of 118 MiB); a sync beyond it
    /// is refused whole. Existing pins keep their size until `detach
    /// --all`.
    pub max_entries: Option<u32>,
}

/// Which egress hooks `attach` and `run` put in place (`[egress] mode`).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum EgressMode {
    /// The cgroup socket hooks and the TC egress classifier on every
    /// attached interface: the `OUTPUT` (and outgoing `FORWARD`) chain of
    /// the job this replaces.
    #[default]
    Both,
    /// Only the cgroup socket hooks (refuse `connect`/`sendmsg`, name the
    /// process).
    Cgroup,
    /// Only the TC egress classifier (every frame leaving an interface).
    Tc,
    /// No egress blocking.
    Off,
}

impl EgressMode {
    /// The cgroup socket hooks are wanted.
    pub fn cgroup(self) -> bool {
        matches!(self, Self::Both | Self::Cgroup)
    }

    /// The TC egress classifier is wanted.
    pub fn tc(self) -> bool {
        matches!(self, Self::Both | Self::Tc)
    }
}

/// The `[egress]` table.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Egress {
    /// `both` (default), `cgroup`, `tc` or `off`.
    pub mode: EgressMode,
    /// The cgroup v2 directory the socket hooks attach to (they apply to
    /// it and every cgroup below it); default the root of the cgroup2
    /// hierarchy, found in `/proc/self/mountinfo`.
    pub cgroup: Option<PathBuf>,
}

/// The environment variable that overrides `[datapath] lookup`.
pub const LOOKUP_ENV: &str = "XDP_BLOCKLIST_LOOKUP";

/// `[allow]`: ranges that are never blocked.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Allow {
    /// Allowed prefixes (go to the allow tries).
    pub cidrs: Vec<Prefix>,
    /// Also protect the host's own addresses, default gateways and DNS
    /// resolvers (from resolv.conf; default true).
    #[serde(default = "yes")]
    pub protect_host: bool,
}

impl Default for Allow {
    fn default() -> Self {
        Self {
            cidrs: Vec::new(),
            protect_host: true,
        }
    }
}

/// `[metrics]`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Metrics {
    /// `host:port`, or `off`.
    pub listen: String,
    /// Busiest addresses exported as a labelled gauge (at most 100).
    pub top_n: usize,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9977".into(),
            top_n: 20,
        }
    }
}

/// `[export]`: serve the vetted list onward.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Export {
    /// `host:port`, or `off` (the default).
    pub listen: String,
}

impl Default for Export {
    fn default() -> Self {
        Self {
            listen: "off".into(),
        }
    }
}

/// `[events]`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Events {
    /// `stdout`, a file path, `syslog` or `off`.
    pub output: String,
    /// At most one event per address per this interval (kernel-side rate
    /// limit); `0s` disables events.
    #[serde(deserialize_with = "duration")]
    pub per_address_interval: Duration,
    /// The socket `output = "syslog"` writes to.
    pub syslog_socket: PathBuf,
}

impl Default for Events {
    fn default() -> Self {
        Self {
            output: "stdout".into(),
            per_address_interval: Duration::from_secs(1),
            syslog_socket: PathBuf::from("/dev/log"),
        }
    }
}

impl Events {
    /// The `CONFIG.event_interval_ms` value.
    pub fn abi_interval_ms(&self) -> u32 {
        let ms = self.per_address_interval.as_millis();
        if self.output == "off" || ms == 0 {
            blocklist_ebpf::EVENT_INTERVAL_OFF
        } else {
            ms.min(u32::MAX as u128 - 1) as u32
        }
    }
}
