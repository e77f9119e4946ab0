//! # xdp-blocklist agent
//!
//! The userspace half of xdp-blocklist. The XDP program (crate
//! `blocklist-ebpf`) drops packets whose source or destination is listed;
//! this crate loads and attaches that program, keeps its maps pinned under
//! bpffs so protection outlives the agent, keeps the lists in sync with
//! threat feeds and reads the counters.
//!
//! Design in one paragraph: the kernel holds the truth. Every command opens
//! the pinned maps ([`datapath::maps::Maps`]) rather than keeping its own
//! copy, so the CLI works from any shell while the program runs, and a
//! restarted agent starts from what is installed. Prefixes are normalised
//! once, in [`prefix::Prefix`], before anything reaches a trie. Feeds are
//! polled one by one ([`feed::poll`]), guarded ([`reserved`], the shrink
//! guard), merged with the hand-made entries into a desired set
//! ([`policy`]) and written in the order that never unblocks a kept
//! address ([`sync`]). The state directory ([`state`]) keeps only what the
//! kernel cannot: each feed's last good list and validators, the
//! hand-made entries, the attachments.
//!
//! Modules, write side first:
//! - [`agent`]: the operations the binary's verbs call: the long-running
//!   agent (`agent::daemon::Agent`, one `tick()` per pass, and
//!   `agent::serve`, the process around it), load, open the maps, record
//!   attachments, hand-made entries, command-line sources.
//! - [`config`]: the TOML configuration.
//! - [`feed`]: fetching, one parser per format, detection, polling.
//! - [`reserved`]: the reserved-range guard (RFC 6890 special-purpose
//!   ranges refused or cut out of every feed).
//! - [`prefix`]: parsing, canonical form and the min-prefix guard.
//! - [`record`]: what feeds produce and the state keeps (a listed entry,
//!   a rejected line), below both.
//! - [`policy`]: feeds, hand-made entries and protected ranges into the
//!   desired set (drop wins over monitor).
//! - [`sync`]: plan, apply, the delta path, the memo between syncs.
//! - [`datapath`]: load, attach, pin, typed map access, the compiled
//!   table, test runs.
//! - [`hooks`]: every hook as one set (XDP or TC ingress, TC egress, the
//!   cgroup socket hooks): status, the egress plan, upgrade, detach.
//! - [`state`]: the persisted state directory.
//! - [`timestamp`]: wall-clock times as RFC 3339 in files and outputs.
//! - [`access`]: sharing pins and state with an operator group.
//!
//! The read side:
//! - [`counters`]: summing per-CPU counters, kernel time to wall time.
//! - [`listing`]: which feeds list which prefixes (the one index every
//!   view names feeds by).
//! - [`hits`]: per-address, per-prefix and per-feed rankings.
//! - [`metrics`]: the Prometheus endpoint's families.
//! - [`events`]: drop events from the ring buffer as JSON lines or syslog.
//! - [`export`]: the installed set served to other agents and devices.
//! - [`http`]: the HTTP server behind `/metrics`, `/healthz` and the export.

#![warn(missing_docs)]

pub mod access;
pub mod agent;
pub mod config;
pub mod counters;
pub mod datapath;
pub mod events;
pub mod export;
pub mod feed;
pub mod hits;
pub mod hooks;
pub mod http;
pub mod listing;
pub mod metrics;
pub mod policy;
pub mod prefix;
pub mod record;
pub mod reserved;
pub mod state;
pub mod sync;
pub mod timestamp;
