//! From feeds to the desired kernel state: merge every feed's entries and
//! the hand-made ones, keep what the guards allow, and protect what must
//! never be blocked.
//!
//! Protected ranges (configured `allow`, hand-made `allow`, and unless
//! disabled the host's own addresses, default gateways and DNS resolvers)
//! go to the allow tries, which win in the kernel, in both directions. A block entry that lies entirely inside
//! a protected range could never match anything and is left out.

use std::{
    collections::{BTreeSet, HashSet},
    net::IpAddr,
    sync::Arc,
    time::SystemTime,
};

use blocklist_ebpf::{ENTRY_FLAG_MANUAL, ENTRY_FLAG_MONITOR};

use crate::{config::Config, prefix::Prefix, state::manual::Manual};

/// What the tries should hold.
#[derive(Debug, Default)]
pub struct Desired {
    /// Block entries and their flags, sorted by prefix (a sorted vector
    /// is half a hash map's memory at a million entries, and the plan
    /// walks it beside the installed entries in one pass).
    pub block: Vec<(Prefix, u32)>,
    /// Allow entries.
    pub allow: BTreeSet<Prefix>,
    /// Entries refused by the minimum-prefix guard, with the feed.
    pub too_broad: Vec<(Prefix, String)>,
    /// Block entries left out because a protected range contains them.
    pub shadowed: usize,
}

impl Desired {
    /// The flags of block entry `p`, when it is desired.
    pub fn flags(&self, p: &Prefix) -> Option<u32> {
        flags_in(&self.block, p)
    }
}

fn flags_in(block: &[(Prefix, u32)], p: &Prefix) -> Option<u32> {
    block
        .binary_search_by_key(p, |(q, _)| *q)
        .ok()
        .map(|i| block[i].1)
}

/// The host's own interface addresses, its default gateways and its DNS
/// resolvers, as host prefixes.
pub fn host_protected() -> Vec<Prefix> {
    let mut out: Vec<Prefix> = nix::ifaddrs::getifaddrs()
        .into_iter()
        .flatten()
        .filter_map(|ifa| {
            let a = ifa.address?;
            if let Some(v4) = a.as_sockaddr_in() {
                Some(IpAddr::V4(v4.ip()))
            } else {
                a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
            }
        })
        .map(Prefix::host)
        .collect();
    out.extend(default_gateways().into_iter().map(Prefix::host));
    out.extend(resolvers().into_iter().map(Prefix::host));
    out.sort();
    out.dedup();
    out
}

/// Default gateways from /proc/net/route and /proc/net/ipv6_route.
pub fn default_gateways() -> Vec<IpAddr> {
    let mut gws = Vec::new();
    if let Ok(text) = std::fs::read_to_string("/proc/net/route") {
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // Iface Destination Gateway Flags ... ; destination 0 = default.
            if f.len() > 3
                && f[1] == "00000000"
                && let Ok(g) = u32::from_str_radix(f[2], 16)
                && g != 0
            {
                gws.push(IpAddr::from(g.to_le_bytes()));
            }
        }
    }
    if let Ok(text) = std::fs::read_to_string("/proc/net/ipv6_route") {
        for line in text.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            // dest dest_len src src_len next_hop ...
            if f.len() > 4
                && f[0].chars().all(|c| c == '0')
                && f[1] == "00"
                && let Ok(g) = u128::from_str_radix(f[4], 16)
                && g != 0
            {
                gws.push(IpAddr::from(g.to_be_bytes()));
            }
        }
    }
    gws
}

/// Where resolv.conf lives: the one programs read, and systemd-resolved's
/// list of its upstream servers (the first names only its stub,
/// 127.0.0.53, when it runs).
const RESOLV_CONFS: [&str; 2] = ["/etc/resolv.conf", "/run/systemd/resolve/resolv.conf"];

/// The DNS resolvers the host uses: blocking one would cut off name
/// resolution for every process, so a feed that lists a public resolver
/// (they do: 8.8.8.8 shows up in scanner lists) must not.
pub fn resolvers() -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = RESOLV_CONFS
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .flat_map(|text| nameservers_in(&text))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The `nameserver` addresses of a resolv.conf (an IPv6 zone suffix such
/// as `%eth0` is dropped; anything unparsable is skipped).
pub fn nameservers_in(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            (f.next() == Some("nameserver")).then(|| f.next()).flatten()
        })
        .filter_map(|a| a.split('%').next()?.parse().ok())
        .collect()
}

/// The protected ranges: configured `allow`, hand-made `allow`, and unless
/// disabled the host's own addresses, gateways and resolvers (`host`).
pub fn allow_set(config: &Config, manual: &Manual, host: &[Prefix]) -> BTreeSet<Prefix> {
    let mut allow: BTreeSet<Prefix> = config.allow.cidrs.iter().copied().collect();
    allow.extend(manual.allow.iter().copied());
    if config.allow.protect_host {
        allow.extend(host.iter().copied());
    }
    allow
}

/// What the guards make of one block entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Guarded {
    /// It goes in.
    Block,
    /// Broader than the minimum prefix: refused.
    TooBroad,
    /// Inside a protected range: it could never match, left out.
    Shadowed,
}

/// The protected ranges, indexed for the one question the guard asks of
/// every entry: does a range cover it? One set lookup per prefix length in
/// use instead of a scan of every range (a million entries against an
/// allowlist of 10,000 was ten billion comparisons).
///
/// ```
/// use blocklist_agent::write::policy::Protected;
/// let p = |s: &str| s.parse().unwrap();
/// let protected = Protected::new(&[p("192.0.2.0/24"), p("2001:db8::/32")]);
/// assert!(protected.covers(&p("192.0.2.7/32")));
/// assert!(!protected.covers(&p("192.0.0.0/16")));
/// assert!(protected.covers(&p("2001:db8:1::/48")));
/// ```
#[derive(Clone, Debug, Default)]
pub struct Protected {
    /// The prefix lengths in use, IPv4 then IPv6, ascending.
    lengths: [Vec<u8>; 2],
    ranges: HashSet<Prefix>,
}

impl Protected {
    /// Indexes `ranges`.
    pub fn new<'a>(ranges: impl IntoIterator<Item = &'a Prefix>) -> Self {
        let mut out = Self::default();
        for r in ranges {
            out.lengths[usize::from(!r.is_v4())].push(r.prefix_len());
            out.ranges.insert(*r);
        }
        for l in &mut out.lengths {
            l.sort_unstable();
            l.dedup();
        }
        out
    }

    /// True when a protected range holds all of `p`.
    pub fn covers(&self, p: &Prefix) -> bool {
        self.lengths[usize::from(!p.is_v4())]
            .iter()
            .take_while(|len| **len <= p.prefix_len())
            .any(|len| self.ranges.contains(&p.supernet(*len)))
    }
}

/// The guards for one entry: the minimum prefix (`min` for IPv4, IPv6),
/// then the protected ranges.
pub fn guard(p: &Prefix, min: (u8, u8), protected: &Protected) -> Guarded {
    if p.check_min(min.0, min.1).is_err() {
        Guarded::TooBroad
    } else if protected.covers(p) {
        Guarded::Shadowed
    } else {
        Guarded::Block
    }
}

/// The flags of an entry two sources list with flags `a` and `b`: the
/// other flags add up, but it only monitors when both only monitor (a
/// drop feed or a hand-made block listing it makes it drop).
pub fn merge_flags(a: u32, b: u32) -> u32 {
    ((a | b) & !ENTRY_FLAG_MONITOR) | (a & b & ENTRY_FLAG_MONITOR)
}

/// The flags of the feed named `name` ([`crate::config::FeedConfig::entry_flags`]);
/// a feed no longer configured counts as a drop feed.
pub fn feed_flags(config: &Config, name: &str) -> u32 {
    config.feed(name).map_or(0, |f| f.entry_flags())
}

/// True when some source other than a monitor feed (a drop feed or a
/// hand-made block) lists `prefix`.
fn drop_listed(
    prefix: &Prefix,
    feeds: &[(String, Arc<Vec<Prefix>>)],
    manual: &Manual,
    config: &Config,
    now: SystemTime,
) -> bool {
    feeds.iter().any(|(name, list)| {
        feed_flags(config, name) & ENTRY_FLAG_MONITOR == 0 && list.binary_search(prefix).is_ok()
    }) || manual.block.get(prefix).is_some_and(|m| !m.expired(now))
}

/// True when any monitor feed is configured: only then can an entry be
/// monitor-only, and the coverage rule below cost anything.
pub fn any_monitor(config: &Config) -> bool {
    config
        .feeds
        .iter()
        .any(|f| f.entry_flags() & ENTRY_FLAG_MONITOR != 0)
}

/// The flags `prefix` must carry given every feed's list and the
/// hand-made entries, or `None` when nothing lists it (the guards aside):
/// the rule [`build`] applies, for one prefix. An entry only monitor
/// feeds list still drops when a wider entry a drop source lists holds it
/// (the longest match would otherwise let an address a drop feed lists
/// pass).
pub fn flags_of(
    prefix: &Prefix,
    feeds: &[(String, Arc<Vec<Prefix>>)],
    manual: &Manual,
    config: &Config,
    now: SystemTime,
) -> Option<u32> {
    let mut out: Option<u32> = None;
    let mut add = |f: u32| out = Some(out.map_or(f, |o| merge_flags(o, f)));
    for (name, list) in feeds {
        if list.binary_search(prefix).is_ok() {
            add(feed_flags(config, name));
        }
    }
    if manual.block.get(prefix).is_some_and(|m| !m.expired(now)) {
        add(ENTRY_FLAG_MANUAL);
    }
    let (min4, min6) = (config.guard.min_prefix_v4, config.guard.min_prefix_v6);
    if let Some(f) = &mut out
        && *f & ENTRY_FLAG_MONITOR != 0
        && (0..prefix.prefix_len()).any(|len| {
            let wider = prefix.supernet(len);
            wider.check_min(min4, min6).is_ok() && drop_listed(&wider, feeds, manual, config, now)
        })
    {
        *f &= !ENTRY_FLAG_MONITOR;
    }
    out
}

/// Clears the monitor flag of every entry a wider drop entry of `block`
/// holds ([`flags_of`]'s coverage rule, over the whole set).
fn drop_covers_monitor(block: &mut [(Prefix, u32)]) {
    let covered: Vec<usize> = (0..block.len())
        .filter(|&i| {
            let (p, f) = block[i];
            f & ENTRY_FLAG_MONITOR != 0
                && (0..p.prefix_len()).any(|len| {
                    flags_in(block, &p.supernet(len)).is_some_and(|f| f & ENTRY_FLAG_MONITOR == 0)
                })
        })
        .collect();
    for i in covered {
        block[i].1 &= !ENTRY_FLAG_MONITOR;
    }
}

/// Builds the desired state from every feed's distinct prefixes, the
/// hand-made entries and the protected ranges ([`allow_set`]).
pub fn build(
    feeds: &[(String, Arc<Vec<Prefix>>)],
    manual: &Manual,
    config: &Config,
    allow: &BTreeSet<Prefix>,
    now: SystemTime,
) -> Desired {
    let mut d = Desired {
        allow: allow.clone(),
        ..Desired::default()
    };
    let (min4, min6) = (config.guard.min_prefix_v4, config.guard.min_prefix_v6);
    let mut block: Vec<(Prefix, u32)> =
        Vec::with_capacity(feeds.iter().map(|(_, l)| l.len()).sum::<usize>() + manual.block.len());
    let mut add = |p: Prefix, flags: u32, from: &str| match p.check_min(min4, min6) {
        Ok(p) => block.push((p, flags)),
        Err(_) => d.too_broad.push((p, from.to_owned())),
    };
    for (name, list) in feeds {
        let flags = feed_flags(config, name);
        for p in list.iter() {
            add(*p, flags, name);
        }
    }
    for (p, m) in &manual.block {
        if !m.expired(now) {
            add(*p, ENTRY_FLAG_MANUAL, "manual");
        }
    }
    // Each source's list is sorted, so this stable sort merges sorted
    // runs; a prefix several sources list is kept once, flags merged.
    block.sort_by_key(|(p, _)| *p);
    block.dedup_by(|later, kept| {
        let same = later.0 == kept.0;
        if same {
            kept.1 = merge_flags(kept.1, later.1);
        }
        same
    });
    d.block = block;
    let protected = Protected::new(&d.allow);
    let before = d.block.len();
    // The same rule the delta path applies to each prefix it changes.
    d.block
        .retain(|(p, _)| guard(p, (min4, min6), &protected) != Guarded::Shadowed);
    d.shadowed = before - d.block.len();
    if any_monitor(config) {
        drop_covers_monitor(&mut d.block);
    }
    for (p, from) in &d.too_broad {
        tracing::warn!(prefix = %p, feed = %from, "refusing an entry broader than the minimum prefix");
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::manual::ManualBlock;
    use std::time::Duration;

    fn outcome(name: &str, prefixes: &[&str]) -> (String, Arc<Vec<Prefix>>) {
        let mut v: Vec<Prefix> = prefixes.iter().map(|p| p.parse().unwrap()).collect();
        v.sort();
        v.dedup();
        (name.into(), Arc::new(v))
    }

    fn p(s: &str) -> Prefix {
        s.parse().unwrap()
    }

    #[test]
    fn merges_guards_and_protects() {
        let mut config = Config::default();
        config.allow.cidrs = vec![p("192.0.2.0/28")];
        let mut manual = Manual::default();
        manual
            .block
            .insert(p("203.0.113.9/32"), ManualBlock::default());
        manual.block.insert(
            p("203.0.113.10/32"),
            ManualBlock {
                expires: Some(SystemTime::now() - Duration::from_secs(1)),
            },
        );
        let feeds = [
            outcome("a", &["198.51.100.0/24", "192.0.2.5/32", "0.0.0.0/0"]),
            outcome("b", &["198.51.100.0/24", "10.0.0.0/7", "2001:db8::/32"]),
        ];
        let host = [p("198.51.100.1/32")];
        let allow = allow_set(&config, &manual, &host);
        let d = build(&feeds, &manual, &config, &allow, SystemTime::now());
        let allow_v = Protected::new(&allow);
        for (p, _) in &d.block {
            assert_eq!(guard(p, (8, 16), &allow_v), Guarded::Block);
        }
        assert_eq!(
            guard(&p("192.0.2.5/32"), (8, 16), &allow_v),
            Guarded::Shadowed
        );
        assert_eq!(guard(&p("0.0.0.0/0"), (8, 16), &allow_v), Guarded::TooBroad);
        let mut block: Vec<String> = d.block.iter().map(|(p, _)| p.to_string()).collect();
        block.sort();
        assert_eq!(
            block,
            ["198.51.100.0/24", "2001:db8::/32", "203.0.113.9/32"]
        );
        assert_eq!(d.flags(&p("203.0.113.9/32")).unwrap(), ENTRY_FLAG_MANUAL);
        assert_eq!(d.shadowed, 1, "192.0.2.5 lies inside the allow range");
        assert_eq!(d.too_broad.len(), 2);
        // The host address is allowlisted, so the /24 never blocks it.
        assert!(d.allow.contains(&p("198.51.100.1/32")));
        assert!(d.allow.contains(&p("192.0.2.0/28")));
    }

    #[test]
    fn drop_wins_over_monitor() {
        let mut config = Config::default();
        let mut watch = crate::config::FeedConfig::new("watch", "/w");
        watch.action = crate::config::Action::Monitor;
        config.feeds = vec![crate::config::FeedConfig::new("enforce", "/e"), watch];
        let mut manual = Manual::default();
        manual
            .block
            .insert(p("203.0.113.9/32"), ManualBlock::default());
        let feeds = [
            outcome("enforce", &["198.51.100.0/24", "203.0.113.0/24"]),
            outcome(
                "watch",
                &[
                    "198.51.100.0/24",
                    "192.0.2.0/24",
                    "203.0.113.9/32",
                    "203.0.113.10/32",
                    "192.0.2.7/32",
                ],
            ),
        ];
        let allow = BTreeSet::new();
        let now = SystemTime::now();
        let d = build(&feeds, &manual, &config, &allow, now);
        assert_eq!(
            d.flags(&p("198.51.100.0/24")).unwrap(),
            0,
            "a drop feed lists it too"
        );
        assert_eq!(d.flags(&p("192.0.2.0/24")).unwrap(), ENTRY_FLAG_MONITOR);
        assert_eq!(d.flags(&p("203.0.113.9/32")).unwrap(), ENTRY_FLAG_MANUAL);
        assert_eq!(
            d.flags(&p("192.0.2.7/32")).unwrap(),
            ENTRY_FLAG_MONITOR,
            "inside a monitor /24"
        );
        assert_eq!(
            d.flags(&p("203.0.113.10/32")).unwrap(),
            0,
            "inside a drop /24: the longest match must not let it pass"
        );
        for (prefix, flags) in &d.block {
            assert_eq!(
                flags_of(prefix, &feeds, &manual, &config, now),
                Some(*flags)
            );
        }
        assert_eq!(
            flags_of(&p("192.0.2.1/32"), &feeds, &manual, &config, now),
            None
        );
        assert_eq!(
            merge_flags(ENTRY_FLAG_MONITOR, ENTRY_FLAG_MONITOR),
            ENTRY_FLAG_MONITOR
        );
        assert_eq!(
            merge_flags(ENTRY_FLAG_MONITOR, ENTRY_FLAG_MANUAL),
            ENTRY_FLAG_MANUAL
        );
    }

    #[test]
    fn nameservers_parse_from_resolv_conf() {
        let text = "# generated\nsearch example.net\nnameserver 192.0.2.53\n\
                    nameserver   2001:db8::53\nnameserver fe80::1%eth0\n\
                    nameserver not-an-address\noptions edns0\n;nameserver 192.0.2.99\n";
        let got: Vec<String> = nameservers_in(text).iter().map(|a| a.to_string()).collect();
        assert_eq!(got, ["192.0.2.53", "2001:db8::53", "fe80::1"]);
    }

    #[test]
    fn gateways_parse_from_proc() {
        // Whatever this machine has, parsing must not panic and yield no 0.0.0.0.
        assert!(default_gateways().iter().all(|g| !g.is_unspecified()));
        assert!(!host_protected().is_empty());
    }

    fn arb_prefix() -> impl proptest::strategy::Strategy<Value = Prefix> {
        use proptest::prelude::*;
        // A small space, so that ranges and entries nest often.
        prop_oneof![
            (0u32..1 << 12, 4u8..=32).prop_map(|(a, len)| {
                Prefix::from_v4((0x0a00_0000 | a << 12).to_be_bytes(), len).unwrap()
            }),
            (0u128..1 << 12, 20u8..=128).prop_map(|(a, len)| {
                Prefix::from_v6(((0xfd00u128 << 112) | a << 100).to_be_bytes(), len).unwrap()
            }),
        ]
    }

    proptest::proptest! {
        /// The index answers what a scan of every range answers.
        #[test]
        fn protected_covers_as_a_scan_does(
            ranges in proptest::collection::vec(arb_prefix(), 0..12),
            entries in proptest::collection::vec(arb_prefix(), 1..40),
        ) {
            let protected = Protected::new(&ranges);
            for e in &entries {
                let scan = ranges.iter().any(|r| r.covers(e));
                proptest::prop_assert_eq!(protected.covers(e), scan, "{} in {:?}", e, ranges);
            }
        }
    }
}
