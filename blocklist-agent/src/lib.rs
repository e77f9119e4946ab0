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
//! ([`write::policy`]) and written in the order that never unblocks a kept
//! address ([`write::sync`]). The state directory ([`state`]) keeps only what the
//! kernel cannot: each feed's last good list and validators, the
//! hand-made entries, the attachments.
//!
//! Modules, from the verbs down:
//! - [`agent`]: the operations the binary's verbs call: the long-running
//!   agent (`agent::daemon::Agent`, one `tick()` per pass, and
//!   `agent::serve`, the process around it), load, open the maps, record
//!   attachments, edit hand-made entries, command-line sources.
//! - [`write`](mod@write): the write side: [`write::manual`] (hand-made
//!   entries), [`write::policy`] (feeds, hand-made entries and protected
//!   ranges into the desired set) and
//!   [`write::sync`] (plan, apply, the delta path, the memo between syncs).
//! - [`read`]: the read side: counters, the feed index, hit rankings,
//!   `/metrics`, drop events, the export, the HTTP server.
//! - [`config`]: the TOML configuration.
//! - [`feed`]: fetching, one parser per format, detection, polling.
//! - [`reserved`]: the reserved-range guard (RFC 6890 special-purpose
//!   ranges refused or cut out of every feed).
//! - [`hooks`]: every hook as one set (XDP or TC ingress, TC egress, the
//!   cgroup socket hooks): status, the egress plan, upgrade, detach.
//! - [`datapath`]: load, attach, pin, typed map access, the compiled
//!   table, test runs; the one `bpf(2)` seam.
//! - [`state`]: the persisted state directory.
//! - [`access`]: sharing pins and state with an operator group.
//! - [`prefix`], [`record`], [`timestamp`]: the values everything above
//!   shares (a canonical prefix, a listed entry and a rejected line, RFC
//!   3339 times).

#![warn(missing_docs)]

pub mod access;
pub mod agent;
pub mod config;
pub mod datapath;
pub mod feed;
pub mod hooks;
pub mod prefix;
pub mod read;
pub mod record;
pub mod reserved;
pub mod state;
pub mod timestamp;
pub mod write;
