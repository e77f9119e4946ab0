//! From feeds to the desired kernel state: merge every feed's entries and
//! the hand-made ones, keep what the guards allow, and protect what must
//! never be blocked.
//!
//! Protected ranges (configured `allow`, hand-made `allow`, and unless
//! disabled the host's own addresses, default gateways and DNS resolvers)
//! go to the allow tries, which win in the kernel, in both directions. A block entry that lies entirely inside
//! a protected range could never match anything and is left out.

use std::{
    collections::{BTreeSet, HashMap},
    net::IpAddr,
    sync::Arc,
    time::SystemTime,
};

use blocklist_ebpf::ENTRY_FLAG_MANUAL;

use crate::{config::Config, prefix::Prefix, state::manual::Manual};

/// What the tries should hold.
#[derive(Debug, Default)]
pub struct Desired {
    /// Block entries and their flags.
    pub block: HashMap<Prefix, u32>,
    /// Allow entries.
    pub allow: BTreeSet<Prefix>,
    /// Entries refused by the minimum-prefix guard, with the feed.
    pub too_broad: Vec<(Prefix, String)>,
    /// Block entries left out because a protected range contains them.
    pub shadowed: usize,
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

/// The guards for one entry: the minimum prefix (`min` for IPv4, IPv6),
/// then the protected ranges `allow`.
pub fn guard(p: &Prefix, min: (u8, u8), allow: &[Prefix]) -> Guarded {
    if p.check_min(min.0, min.1).is_err() {
        Guarded::TooBroad
    } else if allow.iter().any(|a| covers(a, p)) {
        Guarded::Shadowed
    } else {
        Guarded::Block
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
    let add = |p: Prefix, flags: u32, from: &str, d: &mut Desired| match p.check_min(min4, min6) {
        Ok(p) => *d.block.entry(p).or_insert(0) |= flags,
        Err(_) => d.too_broad.push((p, from.to_owned())),
    };
    for (name, list) in feeds {
        for p in list.iter() {
            add(*p, 0, name, &mut d);
        }
    }
    for (p, m) in &manual.block {
        if !m.expired(now) {
            add(*p, ENTRY_FLAG_MANUAL, "manual", &mut d);
        }
    }
    let allow: Vec<Prefix> = d.allow.iter().copied().collect();
    let before = d.block.len();
    // The same rule the delta path applies to each prefix it changes.
    d.block
        .retain(|p, _| guard(p, (min4, min6), &allow) != Guarded::Shadowed);
    d.shadowed = before - d.block.len();
    for (p, from) in &d.too_broad {
        tracing::warn!(prefix = %p, feed = %from, "refusing an entry broader than the minimum prefix");
    }
    d
}

/// True when `outer` contains all of `inner`.
fn covers(outer: &Prefix, inner: &Prefix) -> bool {
    outer.is_v4() == inner.is_v4()
        && outer.prefix_len() <= inner.prefix_len()
        && outer.contains(inner.addr())
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
                expires: Some(
                    humantime::format_rfc3339_seconds(SystemTime::now() - Duration::from_secs(1))
                        .to_string(),
                ),
            },
        );
        let feeds = [
            outcome("a", &["198.51.100.0/24", "192.0.2.5/32", "0.0.0.0/0"]),
            outcome("b", &["198.51.100.0/24", "10.0.0.0/7", "2001:db8::/32"]),
        ];
        let host = [p("198.51.100.1/32")];
        let allow = allow_set(&config, &manual, &host);
        let d = build(&feeds, &manual, &config, &allow, SystemTime::now());
        for p in d.block.keys() {
            assert_eq!(
                guard(p, (8, 16), &allow.iter().copied().collect::<Vec<_>>()),
                Guarded::Block
            );
        }
        let allow_v: Vec<Prefix> = allow.iter().copied().collect();
        assert_eq!(
            guard(&p("192.0.2.5/32"), (8, 16), &allow_v),
            Guarded::Shadowed
        );
        assert_eq!(guard(&p("0.0.0.0/0"), (8, 16), &allow_v), Guarded::TooBroad);
        let mut block: Vec<String> = d.block.keys().map(ToString::to_string).collect();
        block.sort();
        assert_eq!(
            block,
            ["198.51.100.0/24", "2001:db8::/32", "203.0.113.9/32"]
        );
        assert_eq!(d.block[&p("203.0.113.9/32")], ENTRY_FLAG_MANUAL);
        assert_eq!(d.shadowed, 1, "192.0.2.5 lies inside the allow range");
        assert_eq!(d.too_broad.len(), 2);
        // The host address is allowlisted, so the /24 never blocks it.
        assert!(d.allow.contains(&p("198.51.100.1/32")));
        assert!(d.allow.contains(&p("192.0.2.0/28")));
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
}
