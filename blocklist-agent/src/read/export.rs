//! Serving the vetted list onward: `[export] listen` serves the installed
//! block entries (merged from every feed and hand-made entry, guarded, with
//! allow ranges applied) as plain text, one CIDR per line, IPv4 and IPv6
//! separately, with an `ETag` so consumers poll for the cost of a 304.
//!
//! - `/v4.txt`, `/v6.txt`: one family each (pfSense/pfBlockerNG, Palo Alto
//!   EDLs, and other firewalls that read a URL want them apart);
//! - `/all.txt`: both;
//! - `/v4-aggregated.txt`, `/v6-aggregated.txt`: the same sets with
//!   adjacent and overlapping prefixes merged (as `iprange` and
//!   `aggregate` do), for devices with small rule tables;
//! - `/v4-hosts.txt`: only the single-address entries, as bare addresses,
//!   for devices that cannot mix addresses and networks.
//!
//! One agent can feed a fleet: the others list this URL as a plain feed,
//! so only one host talks to the upstream APIs and their rate limits.

use std::sync::{Arc, RwLock};

use axum::{
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use sha2::{Digest as _, Sha256};

use crate::{
    datapath::{
        DatapathError,
        maps::{Maps, TrieKind},
    },
    prefix::{Family, Prefix},
};

/// One rendered list and its validator.
#[derive(Debug, Default)]
pub struct List {
    /// One CIDR per line.
    pub body: String,
    /// Strong ETag of `body`.
    pub etag: String,
}

impl List {
    fn new(body: String) -> Self {
        let etag = format!(
            "\"{}\"",
            &hex::encode(Sha256::digest(body.as_bytes()))[..32]
        );
        Self { body, etag }
    }
}

/// The lists, replaced as a whole after each sync.
#[derive(Debug, Default)]
pub struct Lists {
    /// IPv4 entries.
    pub v4: List,
    /// IPv6 entries.
    pub v6: List,
    /// Both.
    pub all: List,
    /// IPv4 entries, aggregated.
    pub v4_aggregated: List,
    /// IPv6 entries, aggregated.
    pub v6_aggregated: List,
    /// IPv4 single addresses only.
    pub v4_hosts: List,
}

/// Shared between the sync loop and the endpoint.
pub type Shared = Arc<RwLock<Arc<Lists>>>;

/// Renders the lists from the installed block entries minus the allow
/// ranges, sorted: what this host drops, so that a consumer never blocks
/// an address this agent lets through (its own, its resolvers', or a
/// configured allow range inside a listed network).
pub fn render(maps: &Maps) -> Result<Lists, DatapathError> {
    let entries = |kind: TrieKind, family: Family| -> Result<Vec<Prefix>, DatapathError> {
        let mut entries = Vec::new();
        maps.visit(kind, family, |p, _| entries.push(p))?;
        Ok(entries)
    };
    let (block4, allow4) = (
        entries(TrieKind::Block, Family::V4)?,
        entries(TrieKind::Allow, Family::V4)?,
    );
    let (block6, allow6) = (
        entries(TrieKind::Block, Family::V6)?,
        entries(TrieKind::Allow, Family::V6)?,
    );
    let (e4, e6) = (subtract(&block4, &allow4), subtract(&block6, &allow6));
    let (v4, v6) = (lines(&e4, Prefix::to_string), lines(&e6, Prefix::to_string));
    let all = format!("{v4}{v6}");
    // The single-address entries an allow range leaves blocked, not the
    // /32 pieces of a network split around one.
    let hosts: Vec<Prefix> = block4
        .into_iter()
        .filter(|p| p.prefix_len() == 32)
        .collect();
    let hosts = subtract(&hosts, &allow4);
    Ok(Lists {
        v4_aggregated: List::new(lines(&aggregate(&e4), Prefix::to_string)),
        v6_aggregated: List::new(lines(&aggregate(&e6), Prefix::to_string)),
        v4_hosts: List::new(lines(&hosts, |p| p.addr().to_string())),
        v4: List::new(v4),
        v6: List::new(v6),
        all: List::new(all),
    })
}

fn lines(entries: &[Prefix], show: impl Fn(&Prefix) -> String) -> String {
    let mut s = String::with_capacity(entries.len() * 18);
    for p in entries {
        s.push_str(&show(p));
        s.push('\n');
    }
    s
}

/// The addresses of `block` that no `allow` prefix covers (the kernel's
/// verdict: an allow range wins over any block entry), sorted and without
/// duplicates. An entry that no allow range overlaps comes out as itself,
/// one inside an allow range not at all, and one that holds allow ranges
/// as the fewest prefixes that cover the rest of it.
pub fn subtract(block: &[Prefix], allow: &[Prefix]) -> Vec<Prefix> {
    let ranges = |family: Family| -> Vec<(u128, u128)> {
        let of: Vec<Prefix> = allow
            .iter()
            .copied()
            .filter(|p| p.family() == family)
            .collect();
        // Merged, so the ranges are disjoint and in address order.
        aggregate(&of).iter().map(range).collect()
    };
    let (allow4, allow6) = (ranges(Family::V4), ranges(Family::V6));
    let mut out = Vec::with_capacity(block.len());
    for p in block {
        let allowed = if p.is_v4() { &allow4 } else { &allow6 };
        let (start, end) = range(p);
        let mut i = allowed.partition_point(|r| r.1 < start);
        if allowed.get(i).is_none_or(|r| r.0 > end) {
            out.push(*p);
            continue;
        }
        let mut from = Some(start);
        while let (Some(at), Some(&(lo, hi))) = (from, allowed.get(i)) {
            if lo > end {
                break;
            }
            if lo > at {
                pieces(p.family(), at, lo - 1, &mut out);
            }
            from = hi.checked_add(1).filter(|next| *next <= end);
            i += 1;
        }
        if let Some(at) = from {
            pieces(p.family(), at, end, &mut out);
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// First and last address of `p`, as integers of its family.
fn range(p: &Prefix) -> (u128, u128) {
    match p.net() {
        ipnet::IpNet::V4(n) => (
            u32::from(n.network()) as u128,
            u32::from(n.broadcast()) as u128,
        ),
        ipnet::IpNet::V6(n) => (n.network().into(), n.broadcast().into()),
    }
}

/// The fewest prefixes covering exactly `first..=last`.
fn pieces(family: Family, first: u128, last: u128, out: &mut Vec<Prefix>) {
    if family.is_v4() {
        let (a, b) = (
            std::net::Ipv4Addr::from(first as u32),
            std::net::Ipv4Addr::from(last as u32),
        );
        out.extend(ipnet::Ipv4Subnets::new(a, b, 0).map(|n| Prefix::new(n.into())));
    } else {
        let (a, b) = (
            std::net::Ipv6Addr::from(first),
            std::net::Ipv6Addr::from(last),
        );
        out.extend(ipnet::Ipv6Subnets::new(a, b, 0).map(|n| Prefix::new(n.into())));
    }
}

/// Adjacent and overlapping prefixes merged into the fewest that cover
/// exactly the same addresses, sorted.
pub fn aggregate(entries: &[Prefix]) -> Vec<Prefix> {
    let nets: Vec<ipnet::IpNet> = entries.iter().map(Prefix::net).collect();
    let mut out: Vec<Prefix> = ipnet::IpNet::aggregate(&nets)
        .into_iter()
        .map(Prefix::new)
        .collect();
    out.sort_unstable();
    out
}

fn reply(list: &List, headers: &HeaderMap) -> Response {
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == list.etag));
    if matches {
        return (
            StatusCode::NOT_MODIFIED,
            [(header::ETAG, list.etag.clone())],
        )
            .into_response();
    }
    (
        StatusCode::OK,
        [
            (header::ETAG, list.etag.clone()),
            (header::CONTENT_TYPE, "text/plain; charset=utf-8".to_owned()),
        ],
        list.body.clone(),
    )
        .into_response()
}

/// The routes of the lists (see the module doc).
pub fn router(shared: Shared) -> axum::Router {
    fn current(s: &Shared) -> Arc<Lists> {
        s.read().map(|l| Arc::clone(&l)).unwrap_or_default()
    }
    axum::Router::new()
        .route(
            "/v4.txt",
            get(|State(s): State<Shared>, h: HeaderMap| async move { reply(&current(&s).v4, &h) }),
        )
        .route(
            "/v6.txt",
            get(|State(s): State<Shared>, h: HeaderMap| async move { reply(&current(&s).v6, &h) }),
        )
        .route(
            "/all.txt",
            get(|State(s): State<Shared>, h: HeaderMap| async move { reply(&current(&s).all, &h) }),
        )
        .route(
            "/v4-aggregated.txt",
            get(|State(s): State<Shared>, h: HeaderMap| async move {
                reply(&current(&s).v4_aggregated, &h)
            }),
        )
        .route(
            "/v6-aggregated.txt",
            get(|State(s): State<Shared>, h: HeaderMap| async move {
                reply(&current(&s).v6_aggregated, &h)
            }),
        )
        .route(
            "/v4-hosts.txt",
            get(|State(s): State<Shared>, h: HeaderMap| async move {
                reply(&current(&s).v4_hosts, &h)
            }),
        )
        .with_state(shared)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(list: &[&str]) -> Vec<Prefix> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn subtract_splits_around_allow_ranges_and_drops_covered_entries() {
        let got = subtract(
            &p(&[
                "198.51.100.0/25",
                "198.51.100.200/32",
                "192.0.2.0/24",
                "203.0.113.9/32",
                "2001:db8::/32",
            ]),
            &p(&[
                "198.51.100.7/32",
                "198.51.100.64/26",
                "203.0.113.0/24",
                "2001:db8:8000::/33",
            ]),
        );
        assert_eq!(
            got,
            p(&[
                "192.0.2.0/24",
                "198.51.100.0/30",
                "198.51.100.4/31",
                "198.51.100.6/32",
                "198.51.100.8/29",
                "198.51.100.16/28",
                "198.51.100.32/27",
                "198.51.100.200/32",
                "2001:db8::/33",
            ])
        );
    }

    proptest::proptest! {
        /// An address is in the result exactly when a block entry covers
        /// it and no allow entry does, and every piece lies inside a block
        /// entry.
        #[test]
        fn subtract_keeps_exactly_the_blocked_addresses(
            block in proptest::collection::vec((0u32..4096, 20u8..=32), 0..12),
            allow in proptest::collection::vec((0u32..4096, 20u8..=32), 0..6),
            probes in proptest::collection::vec(0u32..4096, 64),
        ) {
            let prefix = |(low, len): (u32, u8)| {
                let a = std::net::Ipv4Addr::from(0xc633_6000 | low);
                Prefix::new(ipnet::Ipv4Net::new(a, len).unwrap().into())
            };
            let block: Vec<Prefix> = block.into_iter().map(prefix).collect();
            let allow: Vec<Prefix> = allow.into_iter().map(prefix).collect();
            let got = subtract(&block, &allow);
            for g in &got {
                proptest::prop_assert!(block.iter().any(|b| b.covers(g)), "{} outside", g);
            }
            for low in probes {
                let a = std::net::IpAddr::from(std::net::Ipv4Addr::from(0xc633_6000 | low));
                let want = block.iter().any(|b| b.contains(a)) && !allow.iter().any(|w| w.contains(a));
                proptest::prop_assert_eq!(got.iter().any(|g| g.contains(a)), want, "{}", a);
            }
        }
    }

    #[test]
    fn aggregate_merges_adjacent_and_covered_prefixes() {
        let got = aggregate(&p(&[
            "192.0.2.0/25",
            "192.0.2.128/25",
            "192.0.2.7/32",
            "198.51.100.0/24",
            "198.51.100.64/26",
            "203.0.113.1/32",
            "203.0.113.3/32",
        ]));
        let got: Vec<String> = got.iter().map(Prefix::to_string).collect();
        assert_eq!(
            got,
            [
                "192.0.2.0/24",
                "198.51.100.0/24",
                "203.0.113.1/32",
                "203.0.113.3/32"
            ]
        );
        let v6 = aggregate(&p(&[
            "2001:db8::/33",
            "2001:db8:8000::/33",
            "2001:db8::1/128",
        ]));
        assert_eq!(v6, p(&["2001:db8::/32"]));
    }

    #[test]
    fn hosts_are_bare_addresses() {
        let e = p(&["192.0.2.7/32", "198.51.100.9/32"]);
        assert_eq!(
            lines(&e, |p| p.addr().to_string()),
            "192.0.2.7\n198.51.100.9\n"
        );
    }
}
