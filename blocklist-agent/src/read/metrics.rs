//! The Prometheus endpoint: `/metrics` (OpenMetrics text from the
//! `prometheus-client` crate) and `/healthz`, served by `run` with axum.
//!
//! Values come from the kernel counters, the pinned tries and the state
//! directory at scrape time; a fresh registry is filled per scrape, so
//! nothing is double-counted and a restarted agent reports the kernel's
//! totals. Label cardinality is bounded: per feed, per family, per trie,
//! and the top N addresses (N capped at [`MAX_TOP_N`]).

use std::{
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, SystemTime},
};

use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::{Registry, Unit},
};

use crate::{
    config::Config,
    datapath::{
        maps::{HitEntry, Maps, TrieKind},
        mirror::BlockSnapshot,
        pin::PinDir,
    },
    read::hits,
    read::listing::FeedIndex,
    state::StateDir,
};

/// The most addresses exported as `xdp_blocklist_top_address_packets`.
pub const MAX_TOP_N: usize = 100;

/// What `run` shares with the HTTP server.
pub struct Shared {
    /// Pins.
    pub pin: PinDir,
    /// State directory.
    pub state: StateDir,
    /// The running configuration.
    pub config: RwLock<Config>,
    /// Feed listings of the last sync (shared with the events writer).
    pub index: Arc<RwLock<Arc<FeedIndex>>>,
    /// Duration of the last sync, seconds.
    pub last_sync_seconds: RwLock<Option<f64>>,
    /// Top addresses exported.
    pub top_n: usize,
    /// The installed block entries as `run` last committed them, which a
    /// scrape names the hit entries by instead of walking the maps.
    pub blocks: RwLock<Option<BlockSnapshot>>,
    /// Set by a scrape that found `blocks` missing or stale (another
    /// process wrote the maps): `run` reads the maps again and publishes.
    pub blocks_wanted: AtomicBool,
}

impl Shared {
    /// What a scrape reads: the pins, the state directory, the running
    /// configuration and the feed listings `run` keeps current.
    pub fn new(
        pin: PinDir,
        state: StateDir,
        config: Config,
        index: Arc<RwLock<Arc<FeedIndex>>>,
    ) -> Self {
        Self {
            pin,
            state,
            top_n: config.metrics.top_n,
            config: RwLock::new(config),
            index,
            last_sync_seconds: RwLock::new(None),
            blocks: RwLock::new(None),
            blocks_wanted: AtomicBool::new(false),
        }
    }

    /// The hit block entries: through `HIT_IDS` and the published
    /// snapshot when they can be trusted, else one walk of the maps (and a
    /// request for a fresh snapshot).
    fn hit_block_entries(&self, maps: &Maps) -> anyhow::Result<Vec<HitEntry>> {
        let snapshot = self.blocks.read().ok().and_then(|s| s.clone());
        if let Some(s) = snapshot
            && let Some(hit) = maps.hit_block_entries_known(&s)?
        {
            return Ok(hit);
        }
        self.blocks_wanted.store(true, Ordering::Relaxed);
        Ok(maps.hit_block_entries()?)
    }
}

type Labels = Vec<(String, String)>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn unix_secs(t: Option<SystemTime>) -> Option<f64> {
    Some(
        t?.duration_since(SystemTime::UNIX_EPOCH)
            .ok()?
            .as_secs_f64(),
    )
}

/// Renders every metric in the OpenMetrics text format.
pub fn render(shared: &Shared) -> anyhow::Result<String> {
    let maps = Maps::open(&shared.pin)?;
    let config = shared
        .config
        .read()
        .map_err(|_| anyhow::anyhow!("config lock poisoned"))?
        .clone();
    let index = shared
        .index
        .read()
        .map_err(|_| anyhow::anyhow!("index lock poisoned"))?
        .clone();
    let mut reg = <Registry>::with_prefix("xdp_blocklist");

    let g = maps.global()?;
    let packets = Family::<Labels, Counter>::default();
    let bytes = Family::<Labels, Counter>::default();
    for t in crate::read::counters::traffic(&g) {
        let l = labels(&[("action", t.outcome), ("family", t.family)]);
        packets.get_or_create(&l).inc_by(t.packets);
        if let Some(b) = t.bytes {
            bytes.get_or_create(&l).inc_by(b);
        }
    }
    reg.register(
        "packets",
        "Packets seen by the XDP program, by action and family",
        packets,
    );
    reg.register_with_unit(
        "traffic",
        "Bytes seen by the XDP program, by action and family",
        Unit::Bytes,
        bytes,
    );

    // Per hook: 4 hooks x 5 actions, bounded whatever the traffic.
    let hook_packets = Family::<Labels, Counter>::default();
    let hook_bytes = Family::<Labels, Counter>::default();
    for (hook, c) in blocklist_ebpf::HOOK_NAMES.iter().zip(maps.hook_counters()?) {
        // Both families add to one `dropped`; frames that are not IP or
        // are malformed are counted per program, not per hook.
        let per_hook = ["seen", "passed", "dropped", "monitored", "allowlisted"];
        for t in crate::read::counters::traffic(&c) {
            if per_hook.contains(&t.outcome) {
                let l = labels(&[("hook", hook), ("action", t.outcome)]);
                hook_packets.get_or_create(&l).inc_by(t.packets);
                hook_bytes.get_or_create(&l).inc_by(t.bytes.unwrap_or(0));
            }
        }
    }
    reg.register(
        "hook_packets",
        "Packets (for the cgroup hook: connect and sendmsg calls) by hook and action",
        hook_packets,
    );
    reg.register_with_unit(
        "hook_traffic",
        "Bytes by hook and action (the cgroup hook counts none)",
        Unit::Bytes,
        hook_bytes,
    );

    let events = Family::<Labels, Counter>::default();
    events
        .get_or_create(&labels(&[("outcome", "sent")]))
        .inc_by(g.events_sent);
    events
        .get_or_create(&labels(&[("outcome", "lost")]))
        .inc_by(g.events_lost);
    events
        .get_or_create(&labels(&[("outcome", "suppressed")]))
        .inc_by(g.events_suppressed);
    reg.register(
        "drop_events",
        "Drop events written to the ring buffer, lost because it was full, or suppressed by the per-CPU budget",
        events,
    );

    let trie_entries = Family::<Labels, Gauge>::default();
    let fill = Family::<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    let counts = shared.state.counts();
    for (name, kind, family) in TrieKind::ALL {
        let known = counts.map(|c| (c.generation, c.get(kind, family)));
        let f = maps.fill_known(kind, family, known)?;
        let l = labels(&[("trie", name)]);
        trie_entries.get_or_create(&l).set(f.entries as i64);
        fill.get_or_create(&l).set(f.ratio());
    }
    reg.register(
        "trie_entries",
        "Entries installed in each trie",
        trie_entries,
    );
    reg.register_with_unit(
        "trie_fill",
        "Entries over capacity of each trie",
        Unit::Other("ratio".into()),
        fill,
    );

    let feed_entries = Family::<Labels, Gauge>::default();
    for (feed, v4, v6) in index.counts() {
        feed_entries
            .get_or_create(&labels(&[("feed", &feed), ("family", "ipv4")]))
            .set(v4 as i64);
        feed_entries
            .get_or_create(&labels(&[("feed", &feed), ("family", "ipv6")]))
            .set(v6 as i64);
    }
    reg.register(
        "feed_entries",
        "Entries each feed contributes (last good list), by family",
        feed_entries,
    );

    let last_success = Family::<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    let failures = Family::<Labels, Counter>::default();
    let refusals = Family::<Labels, Counter>::default();
    let ignored = Family::<Labels, Counter>::default();
    let reserved = Family::<Labels, Gauge>::default();
    for f in &config.feeds {
        let st = shared.state.feed(&f.name).unwrap_or_default();
        let l = labels(&[("feed", &f.name)]);
        if let Some(t) = unix_secs(st.last_success) {
            last_success.get_or_create(&l).set(t);
        }
        failures.get_or_create(&l).inc_by(st.failures);
        refusals.get_or_create(&l).inc_by(st.refusals);
        reserved.get_or_create(&l).set(st.reserved as i64);
        if f.format == crate::feed::Format::Crowdsec {
            ignored.get_or_create(&l).inc_by(st.ignored);
        }
    }
    reg.register(
        "crowdsec_ignored_decisions",
        "CrowdSec decisions received that cannot block (not a ban, another scope, expired)",
        ignored,
    );
    reg.register_with_unit(
        "feed_last_success_timestamp",
        "When each feed last synced successfully (Unix time)",
        Unit::Seconds,
        last_success,
    );
    reg.register(
        "feed_failures",
        "Failed fetches or parses per feed",
        failures,
    );
    reg.register(
        "feed_reserved_entries",
        "Entries of each feed's last good list in reserved ranges (private, loopback, \
         link-local...): refused, or installed without the reserved part",
        reserved,
    );
    reg.register(
        "feed_guard_refusals",
        "Lists the shrink guard refused, per feed",
        refusals,
    );

    if let Some(secs) = *shared
        .last_sync_seconds
        .read()
        .map_err(|_| anyhow::anyhow!("lock poisoned"))?
    {
        let d = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        d.set(secs);
        reg.register_with_unit(
            "last_sync_duration",
            "Wall time of the last sync",
            Unit::Seconds,
            d,
        );
    }

    // Hits: per feed over every hit prefix, and the top addresses.
    // One walk of the maps for every view of the hits.
    let hit = shared.hit_block_entries(&maps)?;
    let by_prefix = hits::by_prefix_from(&hit, &index);
    let by_feed = Family::<Labels, Counter>::default();
    let monitored_by_feed = Family::<Labels, Counter>::default();
    for h in hits::by_feed(&by_prefix) {
        let l = labels(&[("feed", &h.feed)]);
        by_feed
            .get_or_create(&l)
            .inc_by(h.packets - h.monitored_packets);
        monitored_by_feed
            .get_or_create(&l)
            .inc_by(h.monitored_packets);
    }
    reg.register(
        "feed_blocked_packets",
        "Packets that matched an entry listed by each feed (entries a drop feed or a hand-made block lists)",
        by_feed,
    );
    reg.register(
        "feed_monitored_packets",
        "Packets that matched an entry only monitor feeds list (counted, passed), per feed",
        monitored_by_feed,
    );
    let by_origin = Family::<Labels, Counter>::default();
    let decisions = Family::<Labels, Gauge>::default();
    for (feed, origin, prefixes) in index.origins() {
        let l = labels(&[("feed", feed), ("origin", origin)]);
        decisions.get_or_create(&l).set(prefixes.len() as i64);
        let packets: u64 = by_prefix
            .iter()
            .filter(|h| prefixes.binary_search(&h.prefix).is_ok())
            .map(|h| h.packets)
            .sum();
        by_origin.get_or_create(&l).inc_by(packets);
    }
    reg.register(
        "crowdsec_blocked_packets",
        "Packets that matched a CrowdSec ban, per feed and decision origin",
        by_origin,
    );
    reg.register(
        "crowdsec_banned_prefixes",
        "Prefixes a CrowdSec feed bans, per decision origin",
        decisions,
    );

    let mut by_ip = hits::by_ip_from(&maps, &hit, &FeedIndex::default())?;
    by_ip.truncate(shared.top_n.min(MAX_TOP_N));
    let top = Family::<Labels, Gauge>::default();
    for h in by_ip {
        let dir = if h.direction == hits::Direction::Src {
            "src"
        } else {
            "dst"
        };
        top.get_or_create(&labels(&[
            ("address", &h.ip.to_string()),
            ("direction", dir),
            ("prefix", &h.prefix.to_string()),
            ("action", h.action.name()),
        ]))
        .set(h.packets as i64);
    }
    reg.register(
        "top_address_packets",
        "Packets of the busiest blocked addresses (top N only, bounded cardinality)",
        top,
    );

    let attached = Family::<Labels, Gauge>::default();
    let recorded = shared.state.attachments().unwrap_or_default();
    for iface in shared.pin.linked_interfaces() {
        let mode = recorded
            .get(&iface)
            .map_or("unknown".to_owned(), |a| a.mode.to_string());
        attached
            .get_or_create(&labels(&[("interface", &iface), ("mode", &mode)]))
            .set(1);
    }
    reg.register(
        "attached",
        "Interfaces the program is attached to (1 per interface)",
        attached,
    );
    let hooks = Family::<Labels, Gauge>::default();
    for h in crate::hooks::attached(&shared.pin, &shared.state) {
        hooks
            .get_or_create(&labels(&[
                ("hook", h.hook),
                ("target", &h.target),
                ("mode", &h.mode),
            ]))
            .set(1);
    }
    reg.register(
        "hook_attached",
        "Hooks in place (1 each): xdp or tc_ingress and tc_egress per interface, cgroup per cgroup",
        hooks,
    );

    let mut out = String::new();
    encode(&mut out, &reg).map_err(|e| anyhow::anyhow!("encoding metrics: {e}"))?;
    Ok(out)
}

/// `Ok` when the program is attached to every configured interface (or to
/// at least one when none is configured) and every enabled feed synced
/// successfully within three of its intervals; otherwise why not.
pub fn health(shared: &Shared) -> Result<(), String> {
    let config = shared
        .config
        .read()
        .map_err(|_| "config lock poisoned".to_owned())?
        .clone();
    let linked = shared.pin.linked_interfaces();
    if linked.is_empty() {
        return Err("the XDP program is not attached to any interface".into());
    }
    for iface in &config.interfaces {
        if !linked.contains(iface) {
            return Err(format!("the XDP program is not attached to {iface}"));
        }
    }
    let now = SystemTime::now();
    for f in config.feeds.iter().filter(|f| f.enabled) {
        let st = shared.state.feed(&f.name).unwrap_or_default();
        let limit = config.interval_of(f) * 3;
        let fresh = st
            .last_success
            .is_some_and(|t| now.duration_since(t).unwrap_or(Duration::ZERO) <= limit);
        if !fresh {
            return Err(format!(
                "feed {} has not synced successfully within {} (3 intervals)",
                f.name,
                humantime::format_duration(limit)
            ));
        }
    }
    Ok(())
}

/// The `/metrics` and `/healthz` routes.
pub fn router(shared: Arc<Shared>) -> axum::Router {
    use axum::{http::StatusCode, http::header, response::IntoResponse, routing::get};
    let metrics_state = Arc::clone(&shared);
    axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let s = Arc::clone(&metrics_state);
                async move {
                    match tokio::task::spawn_blocking(move || render(&s)).await {
                        Ok(Ok(body)) => (
                            StatusCode::OK,
                            [(
                                header::CONTENT_TYPE,
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            )],
                            body,
                        )
                            .into_response(),
                        Ok(Err(e)) => {
                            (StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}\n")).into_response()
                        }
                        Err(e) => {
                            (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response()
                        }
                    }
                }
            }),
        )
        .route(
            "/healthz",
            get(move || {
                let s = Arc::clone(&shared);
                async move {
                    match tokio::task::spawn_blocking(move || health(&s)).await {
                        Ok(Ok(())) => (StatusCode::OK, "ok\n".to_owned()),
                        Ok(Err(why)) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
                        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
                    }
                }
            }),
        )
}
