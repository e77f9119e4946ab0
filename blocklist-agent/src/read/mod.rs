//! The read side: what the kernel counted and what the state says, turned
//! into the views operators use. Nothing here writes a map entry.
//!
//! - [`counters`]: summing per-CPU counters, kernel time to wall time.
//! - [`listing`]: which feeds list which prefixes (the one index every
//!   view names feeds by).
//! - [`hits`]: per-address, per-prefix and per-feed rankings.
//! - [`metrics`]: the Prometheus endpoint's families and `/healthz`.
//! - [`events`]: drop events from the ring buffer as JSON lines or syslog.
//! - [`export`]: the installed set served to other agents and devices.
//! - [`http`]: the HTTP server behind `/metrics`, `/healthz` and the export.

pub mod counters;
pub mod events;
pub mod export;
pub mod hits;
pub mod http;
pub mod listing;
pub mod metrics;
