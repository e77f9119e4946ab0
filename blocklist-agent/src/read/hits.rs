//! Who hit the blocklist: per-address, per-prefix and per-feed rankings
//! built from the kernel counters and the feeds' listings. Shared by `top`
//! and the Prometheus endpoint.

use std::{collections::HashMap, net::IpAddr};

use blocklist_ebpf::{EntryCounters, EntryValue};

use serde::Serialize;

use super::counters::serialize_ktime;

use crate::{
    config::Action,
    datapath::{
        DatapathError,
        maps::{Maps, ip_of},
    },
    prefix::Prefix,
    read::listing::FeedIndex,
};

/// Which address of the packet matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// The source.
    Src,
    /// The destination.
    Dst,
    /// An address the host itself sent to (TC egress or a cgroup hook).
    Egress,
}

/// One address that hit a block entry.
#[derive(Clone, Debug, Serialize)]
pub struct IpHit {
    /// The address.
    pub ip: IpAddr,
    /// Source or destination.
    pub direction: Direction,
    /// The block entry it matched.
    pub prefix: Prefix,
    /// Feeds listing that entry (`manual` for hand-made ones).
    pub feeds: Vec<String>,
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
    /// Last hit, kernel monotonic ns (0: never).
    #[serde(rename = "last_seen", serialize_with = "serialize_ktime")]
    pub last_seen_ns: u64,
    /// What the entry does: `monitor` when only monitor feeds list it.
    pub action: Action,
}

/// One block entry that was hit.
#[derive(Clone, Debug, Serialize)]
pub struct PrefixHit {
    /// The entry.
    pub prefix: Prefix,
    /// Feeds listing it.
    pub feeds: Vec<String>,
    /// Packets (ingress and egress).
    pub packets: u64,
    /// Of those, egress: sent by the host (TC egress, cgroup hooks).
    pub egress_packets: u64,
    /// Bytes (ingress and TC egress; a cgroup hook counts none).
    pub bytes: u64,
    /// Last hit, kernel monotonic ns.
    #[serde(rename = "last_seen", serialize_with = "serialize_ktime")]
    pub last_seen_ns: u64,
    /// What the entry does: `monitor` when only monitor feeds list it.
    pub action: Action,
}

/// One feed, summed over its hit entries.
#[derive(Clone, Debug, Serialize)]
pub struct FeedHit {
    /// Feed name (`manual` for hand-made entries).
    pub feed: String,
    /// Entries of the feed that were hit.
    pub prefixes: u64,
    /// Packets.
    pub packets: u64,
    /// Of those, packets on entries only monitor feeds list (they passed).
    #[serde(skip)]
    pub monitored_packets: u64,
    /// Bytes.
    pub bytes: u64,
    /// Last hit, kernel monotonic ns.
    #[serde(rename = "last_seen", serialize_with = "serialize_ktime")]
    pub last_seen_ns: u64,
}

fn feeds_of(listing: &FeedIndex, prefix: &Prefix, manual: bool) -> Vec<String> {
    let mut v: Vec<String> = listing
        .feeds_of(prefix)
        .into_iter()
        .map(|l| l.feed)
        .collect();
    if manual {
        v.insert(0, "manual".into());
    }
    v.dedup();
    v
}

/// Every per-address counter, busiest first: the `IP_HITS` LRU for
/// addresses inside wider entries, and the single-address entries' own
/// counters (split by direction) for the rest.
pub fn by_ip(maps: &Maps, listing: &FeedIndex) -> Result<Vec<IpHit>, DatapathError> {
    let single: Vec<(Prefix, u32, EntryCounters)> = maps.single_address_hits()?;
    by_ip_of(maps, single, listing)
}

/// [`by_ip`] from the hit block entries one walk read
/// ([`Maps::hit_block_entries`]): the single-address ones among them.
pub fn by_ip_from(
    maps: &Maps,
    hit: &[(Prefix, EntryValue, EntryCounters)],
    listing: &FeedIndex,
) -> Result<Vec<IpHit>, DatapathError> {
    let single = hit
        .iter()
        .filter(|(p, _, _)| p.prefix_len() == if p.is_v4() { 32 } else { 128 })
        .map(|(p, v, c)| (*p, v.flags, *c))
        .collect();
    by_ip_of(maps, single, listing)
}

fn by_ip_of(
    maps: &Maps,
    single: Vec<(Prefix, u32, EntryCounters)>,
    listing: &FeedIndex,
) -> Result<Vec<IpHit>, DatapathError> {
    let mut out = Vec::new();
    for (prefix, flags, v) in single {
        let feeds = feeds_of(
            listing,
            &prefix,
            flags & blocklist_ebpf::ENTRY_FLAG_MANUAL != 0,
        );
        // Egress hits add packets but no bytes (a cgroup hook has none).
        let src = (
            v.packets - v.dst_packets - v.egress_packets,
            v.bytes - v.dst_bytes,
        );
        let dst = (v.dst_packets, v.dst_bytes);
        let egress = (v.egress_packets, 0);
        for (direction, (packets, bytes)) in [
            (Direction::Src, src),
            (Direction::Dst, dst),
            (Direction::Egress, egress),
        ] {
            if packets > 0 {
                out.push(IpHit {
                    ip: prefix.addr(),
                    direction,
                    prefix,
                    feeds: feeds.clone(),
                    packets,
                    bytes,
                    last_seen_ns: v.last_seen_ns,
                    action: action_of(flags),
                });
            }
        }
    }
    for (key, c) in maps.ip_counters()? {
        let ip = ip_of(&key);
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let Ok(net) = ipnet::IpNet::new(ip, (c.prefix_len as u8).min(max)) else {
            continue;
        };
        let prefix = Prefix::new(net);
        let flags = maps.block_flags(prefix)?;
        let manual = flags & blocklist_ebpf::ENTRY_FLAG_MANUAL != 0;
        out.push(IpHit {
            ip,
            direction: match key.direction {
                blocklist_ebpf::DIRECTION_DST => Direction::Dst,
                blocklist_ebpf::DIRECTION_EGRESS => Direction::Egress,
                _ => Direction::Src,
            },
            prefix,
            feeds: feeds_of(listing, &prefix, manual),
            packets: c.packets,
            bytes: c.bytes,
            last_seen_ns: c.last_seen_ns,
            action: action_of(flags),
        });
    }
    out.sort_by(|a, b| {
        b.packets
            .cmp(&a.packets)
            .then(b.bytes.cmp(&a.bytes))
            .then(a.ip.cmp(&b.ip))
    });
    Ok(out)
}

/// What an entry with `flags` does to its packets (the configured
/// `action = "monitor"` aside, which applies to every entry).
pub fn action_of(flags: u32) -> Action {
    if flags & blocklist_ebpf::ENTRY_FLAG_MONITOR != 0 {
        Action::Monitor
    } else {
        Action::Drop
    }
}

/// Every hit block entry, busiest first.
pub fn by_prefix(maps: &Maps, listing: &FeedIndex) -> Result<Vec<PrefixHit>, DatapathError> {
    Ok(by_prefix_from(&maps.hit_block_entries()?, listing))
}

/// [`by_prefix`] from the hit block entries one walk read.
pub fn by_prefix_from(
    hit: &[(Prefix, EntryValue, EntryCounters)],
    listing: &FeedIndex,
) -> Vec<PrefixHit> {
    let mut out = Vec::new();
    for (prefix, v, c) in hit {
        let manual = v.flags & blocklist_ebpf::ENTRY_FLAG_MANUAL != 0;
        let egress_packets = c.egress_packets;
        let c = c.counters();
        out.push(PrefixHit {
            prefix: *prefix,
            feeds: feeds_of(listing, prefix, manual),
            packets: c.packets,
            egress_packets,
            bytes: c.bytes,
            last_seen_ns: c.last_seen_ns,
            action: action_of(v.flags),
        });
    }
    out.sort_by(|a, b| {
        b.packets
            .cmp(&a.packets)
            .then(b.bytes.cmp(&a.bytes))
            .then(a.prefix.cmp(&b.prefix))
    });
    out
}

/// Hits summed per feed (an entry listed by two feeds counts for both).
pub fn by_feed(prefixes: &[PrefixHit]) -> Vec<FeedHit> {
    let mut m: HashMap<&str, FeedHit> = HashMap::new();
    for p in prefixes {
        for f in &p.feeds {
            let e = m.entry(f).or_insert_with(|| FeedHit {
                feed: f.clone(),
                prefixes: 0,
                packets: 0,
                monitored_packets: 0,
                bytes: 0,
                last_seen_ns: 0,
            });
            e.prefixes += 1;
            e.packets += p.packets;
            if p.action == Action::Monitor {
                e.monitored_packets += p.packets;
            }
            e.bytes += p.bytes;
            e.last_seen_ns = e.last_seen_ns.max(p.last_seen_ns);
        }
    }
    let mut v: Vec<FeedHit> = m.into_values().collect();
    v.sort_by(|a, b| b.packets.cmp(&a.packets).then(a.feed.cmp(&b.feed)));
    v
}
