//! The reserved-range guard: special-purpose ranges (RFC 6890) whose
//! blocking breaks a network instead of stopping an attacker.
//!
//! Public lists include them on purpose (FireHOL's `firehol_level1` lists
//! `10.0.0.0/8`, `169.254.0.0/16` and the rest as bogons, meant for a
//! border router's inbound filter). Installed on a cloud VM with a 10.x
//! address and `match = both`, they cut it off from every LAN peer, its
//! resolver and the metadata service. So every feed's list goes through
//! [`screen`] before anything else sees it, unless the feed (or
//! `[guard] allow_reserved`) says otherwise:
//!
//! - an entry inside a reserved range is refused;
//! - an entry that covers one (a /15 around `192.168.0.0/16`) is installed
//!   without it, as the fewest prefixes around it;
//! - either way it is counted and reported with the range's name.
//!
//! The documentation and benchmark ranges (`192.0.2.0/24`,
//! `198.51.100.0/24`, `203.0.113.0/24`, `198.18.0.0/15`, `2001:db8::/32`)
//! carry no real traffic, so blocking them harms nothing: they are not
//! guarded. Entries broader than the minimum prefix are passed through
//! unchanged so that the min-prefix guard refuses them whole (splitting a
//! /0 would install its pieces).
//!
//! ```
//! use blocklist_agent::{feed::Entry, reserved};
//! let entries = ["198.51.100.0/24", "10.1.0.0/16", "192.168.0.0/15"]
//!     .map(|p| Entry::new(p.parse().unwrap()));
//! let s = reserved::screen(entries.to_vec(), (8, 16));
//! let kept: Vec<String> = s.entries.iter().map(|e| e.prefix.to_string()).collect();
//! assert_eq!(kept, ["198.51.100.0/24", "192.169.0.0/16"]);
//! assert_eq!(s.refused, 1);
//! assert_eq!(s.split, 1);
//! ```

use crate::{feed::Entry, prefix::Prefix};

/// How many reserved-range examples a feed keeps for `sync` and `status`.
pub const MAX_SAMPLES: usize = 5;

/// The guarded ranges, with the name an operator reads in a report.
pub const RANGES: &[(&str, &str)] = &[
    ("0.0.0.0/8", "\"this network\", RFC 791"),
    ("10.0.0.0/8", "private-use, RFC 1918"),
    (
        "100.64.0.0/10",
        "shared address space (carrier NAT), RFC 6598",
    ),
    ("127.0.0.0/8", "loopback, RFC 1122"),
    ("169.254.0.0/16", "link-local (cloud metadata), RFC 3927"),
    ("172.16.0.0/12", "private-use, RFC 1918"),
    ("192.168.0.0/16", "private-use, RFC 1918"),
    ("224.0.0.0/4", "multicast, RFC 5771"),
    ("240.0.0.0/4", "reserved and broadcast, RFC 1112"),
    ("::/128", "unspecified address, RFC 4291"),
    ("::1/128", "loopback, RFC 4291"),
    ("64:ff9b::/96", "NAT64, RFC 6052"),
    ("fc00::/7", "unique local, RFC 4193"),
    ("fe80::/10", "link-local, RFC 4291"),
    ("ff00::/8", "multicast, RFC 4291"),
];

/// The guarded ranges, parsed.
pub fn ranges() -> impl Iterator<Item = (Prefix, &'static str)> {
    RANGES
        .iter()
        .map(|(p, why)| (p.parse().expect("the table holds valid prefixes"), *why))
}

/// The reserved range `p` lies inside, if any.
pub fn inside(p: &Prefix) -> Option<(Prefix, &'static str)> {
    ranges().find(|(r, _)| r.covers(p))
}

/// A reserved range `p` lies inside or covers, if any (for warnings on
/// hand-made entries, which are installed as asked).
pub fn touching(p: &Prefix) -> Option<(Prefix, &'static str)> {
    ranges().find(|(r, _)| overlaps(r, p))
}

/// What [`screen`] made of a list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Screened {
    /// What may be installed: the untouched entries in the input's order,
    /// then the pieces of split ones (with the entry's id).
    pub entries: Vec<Entry>,
    /// Entries refused because a reserved range contains them.
    pub refused: usize,
    /// Entries installed without the reserved ranges they covered.
    pub split: usize,
    /// The first [`MAX_SAMPLES`] of either, as one line each.
    pub samples: Vec<String>,
}

impl Screened {
    /// Refused plus split: how many listed entries the guard changed.
    pub fn touched(&self) -> usize {
        self.refused + self.split
    }

    fn note(&mut self, line: String) {
        if self.samples.len() < MAX_SAMPLES {
            self.samples.push(line);
        }
    }
}

/// Screens a feed's entries: see the module doc. `min` is the minimum
/// prefix (IPv4, IPv6); broader entries pass unchanged.
pub fn screen(mut entries: Vec<Entry>, min: (u8, u8)) -> Screened {
    let ranges: Vec<(Prefix, &str)> = ranges().collect();
    let mut out = Screened::default();
    // In place: a second vector of a million entries would be the sync's
    // peak memory, and the pieces of split entries are few.
    let mut pieces_of_split = Vec::new();
    entries.retain(|e| {
        let p = e.prefix;
        if p.check_min(min.0, min.1).is_err() || !ranges.iter().any(|(r, _)| overlaps(r, &p)) {
            return true;
        }
        if let Some((r, why)) = ranges.iter().find(|(r, _)| r.covers(&p)) {
            out.refused += 1;
            out.note(format!("{p}: refused, inside {r} ({why})"));
            return false;
        }
        let mut pieces = Vec::new();
        subtract(p, &ranges, &mut pieces);
        let around: Vec<String> = ranges
            .iter()
            .filter(|(r, _)| p.covers(r))
            .map(|(r, why)| format!("{r} ({why})"))
            .collect();
        out.split += 1;
        out.note(format!(
            "{p}: installed as {} prefixes without {}",
            pieces.len(),
            around.join(", ")
        ));
        pieces_of_split.extend(pieces.into_iter().map(|prefix| Entry {
            prefix,
            id: e.id.clone(),
        }));
        false
    });
    entries.append(&mut pieces_of_split);
    out.entries = entries;
    out
}

/// The parts of `p` outside every range, as the fewest prefixes: halve
/// until each half is clear of or inside the ranges (at most one level
/// per bit, so at most 128 pieces per range).
fn subtract(p: Prefix, ranges: &[(Prefix, &str)], out: &mut Vec<Prefix>) {
    if ranges.iter().any(|(r, _)| r.covers(&p)) {
        return;
    }
    if !ranges.iter().any(|(r, _)| overlaps(r, &p)) {
        out.push(p);
        return;
    }
    // Never a single address here: one that overlaps a range lies in it.
    let halves = p.net().subnets(p.prefix_len() + 1).into_iter().flatten();
    for half in halves {
        subtract(Prefix::new(half), ranges, out);
    }
}

/// True when the two share any address (for prefixes: one covers the other).
fn overlaps(a: &Prefix, b: &Prefix) -> bool {
    a.covers(b) || b.covers(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(list: &[&str]) -> Vec<Entry> {
        list.iter()
            .map(|p| Entry::new(p.parse().unwrap()))
            .collect()
    }

    fn kept(s: &Screened) -> Vec<String> {
        s.entries.iter().map(|e| e.prefix.to_string()).collect()
    }

    #[test]
    fn firehol_level1_bogons_are_refused_the_rest_installs() {
        // The head of firehol_level1 as FireHOL ships it: its bogons, the
        // documentation ranges, and attackers.
        let list = "0.0.0.0/8\n1.10.16.0/20\n10.0.0.0/8\n100.64.0.0/10\n127.0.0.0/8\n\
                    169.254.0.0/16\n172.16.0.0/12\n192.0.0.0/24\n192.0.2.0/24\n\
                    192.168.0.0/16\n198.18.0.0/15\n198.51.100.0/24\n203.0.113.0/24\n\
                    223.254.0.0/16\n224.0.0.0/3\n";
        let parsed = crate::feed::firehol::parse(list.as_bytes());
        let s = screen(parsed.entries, (8, 16));
        assert_eq!(
            kept(&s),
            [
                "1.10.16.0/20",
                "192.0.0.0/24",
                "192.0.2.0/24",
                "198.18.0.0/15",
                "198.51.100.0/24",
                "203.0.113.0/24",
                "223.254.0.0/16",
                // Broader than /8: the min-prefix guard refuses it whole.
                "224.0.0.0/3",
            ]
        );
        assert_eq!((s.refused, s.split), (7, 0));
        assert!(s.samples[0].starts_with("0.0.0.0/8: refused, inside 0.0.0.0/8"));
    }

    #[test]
    fn inside_is_refused_covering_is_split_documentation_passes() {
        let s = screen(
            entries(&[
                "192.168.1.7",
                "169.254.169.254",
                "192.0.2.0/24",
                "198.18.0.0/15",
                "2001:db8::/32",
                "fd00:77::1",
                "fe80::1",
                "::1",
                "8.8.0.0/16",
                "100.0.0.0/8",
                "::/126",
            ]),
            (8, 16),
        );
        assert_eq!(
            kept(&s),
            [
                "192.0.2.0/24",
                "198.18.0.0/15",
                "2001:db8::/32",
                "8.8.0.0/16",
                // 100.0.0.0/8 without 100.64.0.0/10.
                "100.0.0.0/10",
                "100.128.0.0/9",
                // ::/126 without :: and ::1.
                "::2/127",
            ]
        );
        assert_eq!((s.refused, s.split), (5, 2));
        assert_eq!(
            s.samples,
            [
                "192.168.1.7/32: refused, inside 192.168.0.0/16 (private-use, RFC 1918)",
                "169.254.169.254/32: refused, inside 169.254.0.0/16 (link-local (cloud metadata), RFC 3927)",
                "fd00:77::1/128: refused, inside fc00::/7 (unique local, RFC 4193)",
                "fe80::1/128: refused, inside fe80::/10 (link-local, RFC 4291)",
                "::1/128: refused, inside ::1/128 (loopback, RFC 4291)",
            ]
        );
    }

    #[test]
    fn a_cover_of_several_ranges_loses_each() {
        // 0.0.0.0/4 is broader than /8: left whole for the min-prefix guard.
        let s = screen(entries(&["0.0.0.0/4"]), (8, 16));
        assert_eq!(kept(&s), ["0.0.0.0/4"]);
        let s = screen(entries(&["0.0.0.0/4"]), (1, 1));
        assert_eq!(
            kept(&s),
            [
                "1.0.0.0/8",
                "2.0.0.0/7",
                "4.0.0.0/6",
                "8.0.0.0/7",
                "11.0.0.0/8",
                "12.0.0.0/6"
            ]
        );
        assert_eq!(s.split, 1);
        assert!(
            s.samples[0].contains("without 0.0.0.0/8"),
            "{:?}",
            s.samples
        );
        assert!(s.samples[0].contains("10.0.0.0/8"), "{:?}", s.samples);
    }

    #[test]
    fn ids_follow_the_pieces() {
        let mut e = entries(&["172.0.0.0/8"]);
        e[0].id = Some("indicator--1".into());
        let s = screen(e, (8, 16));
        assert!(s.entries.len() > 1);
        assert!(
            s.entries
                .iter()
                .all(|e| e.id.as_deref() == Some("indicator--1"))
        );
    }

    proptest::proptest! {
        /// The pieces cover exactly the entry minus the reserved ranges.
        #[test]
        fn split_pieces_cover_exactly_what_is_left(
            a in proptest::prelude::any::<u32>(),
            len in 8u8..=16,
            probes in proptest::collection::vec(proptest::prelude::any::<u32>(), 64),
        ) {
            let p = Prefix::from_v4(a.to_be_bytes(), len).unwrap();
            let s = screen(vec![Entry::new(p)], (8, 16));
            let base = u32::from_be_bytes(p.v4_bytes().unwrap());
            for probe in probes {
                let host = base | (probe >> len);
                let addr = std::net::IpAddr::from(host.to_be_bytes());
                let reserved = ranges().any(|(r, _)| r.contains(addr));
                let blocked = s.entries.iter().any(|e| e.prefix.contains(addr));
                proptest::prop_assert_eq!(blocked, !reserved, "{} in {}", addr, p);
            }
        }
    }
}
