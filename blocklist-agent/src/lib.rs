//! # xdp-blocklist agent
//!
//! The userspace half of xdp-blocklist. The XDP program (crate
//! `blocklist-ebpf`) drops packets whose source or destination falls in an
//! LPM trie; this crate loads and attaches that program, keeps its maps
//! pinned under bpffs so protection outlives the agent, edits the tries and
//! reads the counters.
//!
//! Design in one paragraph: the kernel holds the truth. Every command opens
//! the pinned maps ([`datapath::maps::Maps`]) rather than keeping its own
//! copy, so the CLI works from any shell while the program runs, and a
//! restarted agent starts from what is installed. Prefixes are normalised
//! once, in [`prefix::Prefix`], before anything reaches a trie. The state
//! directory ([`state`]) keeps only what the kernel cannot: which mode each
//! interface got, and (later) feed history.
//!
//! Modules:
//! - [`prefix`]: parsing, canonical form and the min-prefix guard.
//! - [`reserved`]: the reserved-range guard (RFC 6890 special-purpose
//!   ranges refused or cut out of every feed).
//! - [`datapath`]: load, attach, pin, typed map access, test runs.
//! - [`hooks`]: every hook as one set (XDP or TC ingress, TC egress, the
//!   cgroup socket hooks): status, the egress plan, upgrade, detach.
//! - [`counters`]: summing per-CPU counters, kernel time to wall time.
//! - [`config`]: the TOML configuration.
//! - [`state`]: the persisted state directory.

pub mod access;
pub mod config;
pub mod counters;
pub mod datapath;
pub mod events;
pub mod export;
pub mod feed;
pub mod hits;
pub mod hooks;
pub mod http;
pub mod metrics;
pub mod policy;
pub mod prefix;
pub mod reserved;
pub mod state;
pub mod sync;
