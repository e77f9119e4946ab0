//! Verdict tests: crafted frames through the loaded XDP program with
//! BPF_PROG_TEST_RUN, on the real kernel, including a property test against
//! a userspace reference LPM.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use blocklist_agent::datapath::test_run::{XDP_DROP, XDP_PASS};
use blocklist_agent::{config::Lookup, datapath::maps::TrieKind, prefix::Prefix};
use blocklist_ebpf::{
    ACTION_DROP, ACTION_MONITOR, ENTRY_FLAG_MONITOR, MATCH_BOTH, MATCH_DST, MATCH_SRC,
};
use blocklist_tests::{
    frames::{self, TPID_8021AD, TPID_8021Q},
    kernel::Kernel,
    require_root,
};
use proptest::prelude::*;

fn v4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}
fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn kernel() -> Kernel {
    require_root();
    Kernel::load()
}

#[test]
fn ipv4_source_and_destination_matches() {
    let mut k = kernel();
    let other = v4("10.9.9.9");
    let listed = v4("192.0.2.77");
    assert_eq!(
        k.verdict(&frames::ipv4(listed, other)),
        XDP_PASS,
        "nothing listed yet"
    );
    k.block("192.0.2.0/24");
    assert_eq!(
        k.verdict(&frames::ipv4(listed, other)),
        XDP_DROP,
        "source match"
    );
    assert_eq!(
        k.verdict(&frames::ipv4(other, listed)),
        XDP_DROP,
        "destination match"
    );
    assert_eq!(
        k.verdict(&frames::ipv4(other, v4("192.0.3.1"))),
        XDP_PASS,
        "outside the /24"
    );
    let g = k.global();
    assert_eq!(
        (g.seen_packets, g.dropped_v4_packets, g.passed_packets),
        (4, 2, 2)
    );
    let c = k
        .maps
        .prefix_counters("192.0.2.0/24".parse().unwrap())
        .unwrap();
    assert_eq!(c.packets, 2);
    assert_eq!(c.bytes, 2 * frames::ipv4(listed, other).len() as u64);
    assert!(c.first_seen_ns > 0 && c.last_seen_ns >= c.first_seen_ns);
}

#[test]
fn ipv6_source_and_destination_matches() {
    let mut k = kernel();
    let other = v6("fd00::9");
    let listed = v6("2001:db8:bad::1");
    assert_eq!(k.verdict(&frames::ipv6(listed, other)), XDP_PASS);
    k.block("2001:db8:bad::/48");
    assert_eq!(k.verdict(&frames::ipv6(listed, other)), XDP_DROP);
    assert_eq!(k.verdict(&frames::ipv6(other, listed)), XDP_DROP);
    assert_eq!(
        k.verdict(&frames::ipv6(other, v6("2001:db8:bae::1"))),
        XDP_PASS
    );
    assert_eq!(k.global().dropped_v6_packets, 2);
}

#[test]
fn vlan_tagged_frames_are_parsed() {
    let mut k = kernel();
    k.block("192.0.2.1/32");
    k.block("2001:db8::1/128");
    let f4 = frames::ipv4(v4("192.0.2.1"), v4("10.0.0.1"));
    let f6 = frames::ipv6(v6("2001:db8::1"), v6("fd00::1"));
    for tags in [
        &[TPID_8021Q][..],
        &[TPID_8021AD, TPID_8021Q],
        &[TPID_8021Q, TPID_8021Q],
    ] {
        assert_eq!(
            k.verdict(&frames::with_vlans(&f4, tags)),
            XDP_DROP,
            "IPv4 with {tags:x?}"
        );
        assert_eq!(
            k.verdict(&frames::with_vlans(&f6, tags)),
            XDP_DROP,
            "IPv6 with {tags:x?}"
        );
    }
    // A third tag is beyond what the program parses: the frame passes as non-IP.
    let three = frames::with_vlans(&f4, &[TPID_8021AD, TPID_8021Q, TPID_8021Q]);
    assert_eq!(k.verdict(&three), XDP_PASS);
}

#[test]
fn v4_mapped_ipv6_is_looked_up_in_the_ipv4_trie() {
    let mut k = kernel();
    k.block("198.51.100.0/24");
    let mapped = v6("::ffff:198.51.100.9");
    assert_eq!(
        k.verdict(&frames::ipv6(mapped, v6("fd00::1"))),
        XDP_DROP,
        "mapped source"
    );
    assert_eq!(
        k.verdict(&frames::ipv6(v6("fd00::1"), mapped)),
        XDP_DROP,
        "mapped destination"
    );
    assert_eq!(
        k.verdict(&frames::ipv6(v6("::ffff:198.51.101.9"), v6("fd00::1"))),
        XDP_PASS
    );
    // Counted against the IPv4 prefix.
    let c = k
        .maps
        .prefix_counters("198.51.100.0/24".parse().unwrap())
        .unwrap();
    assert_eq!(c.packets, 2);
}

#[test]
fn every_covering_prefix_length_matches() {
    let mut k = kernel();
    let addr4 = v4("172.20.130.77");
    let peer4 = v4("10.1.1.1");
    for len in 8..=32u8 {
        let p = Prefix::new(ipnet::Ipv4Net::new(addr4, len).unwrap().into());
        k.block(&p.to_string());
        assert_eq!(
            k.verdict(&frames::ipv4(addr4, peer4)),
            XDP_DROP,
            "/{len} covers {addr4}"
        );
        // The address right after the prefix is outside it.
        let after = u32::from(addr4) | u32::MAX.checked_shr(len as u32).unwrap_or(0);
        if let Some(outside) = after.checked_add(1) {
            assert_eq!(
                k.verdict(&frames::ipv4(Ipv4Addr::from(outside), peer4)),
                XDP_PASS,
                "/{len}"
            );
        }
        k.clear(TrieKind::Block);
    }
    let addr6 = v6("2001:db8:1234:5678:9abc:def0:1234:5678");
    let peer6 = v6("fd00::1");
    for len in 16..=128u8 {
        let p = Prefix::new(ipnet::Ipv6Net::new(addr6, len).unwrap().into());
        k.block(&p.to_string());
        assert_eq!(
            k.verdict(&frames::ipv6(addr6, peer6)),
            XDP_DROP,
            "/{len} covers {addr6}"
        );
        let after = u128::from(addr6) | u128::MAX.checked_shr(len as u32).unwrap_or(0);
        if let Some(outside) = after.checked_add(1) {
            assert_eq!(
                k.verdict(&frames::ipv6(Ipv6Addr::from(outside), peer6)),
                XDP_PASS,
                "/{len}"
            );
        }
        k.clear(TrieKind::Block);
    }
}

#[test]
fn allow_entries_override_block_entries() {
    let mut k = kernel();
    k.block("203.0.113.0/24");
    k.allow("203.0.113.10/32");
    let peer = v4("10.0.0.1");
    assert_eq!(
        k.verdict(&frames::ipv4(v4("203.0.113.10"), peer)),
        XDP_PASS,
        "allowlisted"
    );
    assert_eq!(
        k.verdict(&frames::ipv4(v4("203.0.113.11"), peer)),
        XDP_DROP,
        "still blocked"
    );
    // An allowlisted source does not save a blocked destination.
    assert_eq!(
        k.verdict(&frames::ipv4(v4("203.0.113.10"), v4("203.0.113.12"))),
        XDP_DROP
    );
    let g = k.global();
    assert_eq!(g.allowlisted_packets, 1);
    k.block("2001:db8::/32");
    k.allow("2001:db8:1::/48");
    assert_eq!(
        k.verdict(&frames::ipv6(v6("2001:db8:1::5"), v6("fd00::1"))),
        XDP_PASS
    );
    assert_eq!(
        k.verdict(&frames::ipv6(v6("2001:db8:2::5"), v6("fd00::1"))),
        XDP_DROP
    );
}

#[test]
fn monitor_mode_counts_but_passes() {
    let mut k = kernel();
    k.block("192.0.2.0/24");
    let f = frames::ipv4(v4("192.0.2.5"), v4("10.0.0.1"));
    k.set_mode(ACTION_MONITOR, MATCH_BOTH);
    assert_eq!(k.verdict(&f), XDP_PASS);
    assert_eq!(k.verdict(&f), XDP_PASS);
    let g = k.global();
    assert_eq!((g.monitored_packets, g.dropped_v4_packets), (2, 0));
    assert_eq!(
        k.maps
            .prefix_counters("192.0.2.0/24".parse().unwrap())
            .unwrap()
            .packets,
        2
    );
    k.set_mode(ACTION_DROP, MATCH_BOTH);
    assert_eq!(k.verdict(&f), XDP_DROP);
}

#[test]
fn match_setting_selects_source_or_destination() {
    let mut k = kernel();
    k.block("192.0.2.0/24");
    let listed = v4("192.0.2.5");
    let other = v4("10.0.0.1");
    k.set_mode(ACTION_DROP, MATCH_SRC);
    assert_eq!(k.verdict(&frames::ipv4(listed, other)), XDP_DROP);
    assert_eq!(k.verdict(&frames::ipv4(other, listed)), XDP_PASS);
    k.set_mode(ACTION_DROP, MATCH_DST);
    assert_eq!(k.verdict(&frames::ipv4(listed, other)), XDP_PASS);
    assert_eq!(k.verdict(&frames::ipv4(other, listed)), XDP_DROP);
}

#[test]
fn truncated_and_non_ip_frames_pass_and_are_counted() {
    let mut k = kernel();
    k.block("192.0.2.0/24");
    k.block("2001:db8::/32");
    let f4 = frames::ipv4(v4("192.0.2.5"), v4("10.0.0.1"));
    let f6 = frames::ipv6(v6("2001:db8::5"), v6("fd00::1"));
    // Ethernet header plus part of the IP header.
    assert_eq!(k.verdict(&frames::truncated(&f4, 14 + 19)), XDP_PASS);
    assert_eq!(k.verdict(&frames::truncated(&f6, 14 + 39)), XDP_PASS);
    // A VLAN tag cut in the middle.
    assert_eq!(
        k.verdict(&frames::truncated(
            &frames::with_vlans(&f4, &[TPID_8021Q]),
            16
        )),
        XDP_PASS
    );
    assert_eq!(k.verdict(&frames::arp()), XDP_PASS);
    let g = k.global();
    assert_eq!(g.malformed_packets, 3);
    assert_eq!(g.not_ip_packets, 1);
    assert_eq!(g.dropped_v4_packets + g.dropped_v6_packets, 0);
    // The full frames still drop.
    assert_eq!(k.verdict(&f4), XDP_DROP);
    assert_eq!(k.verdict(&f6), XDP_DROP);
}

#[test]
fn per_address_counters_record_the_address_and_direction() {
    let mut k = kernel();
    k.block("192.0.2.0/24");
    let f = frames::ipv4(v4("10.0.0.1"), v4("192.0.2.99"));
    for _ in 0..3 {
        assert_eq!(k.verdict(&f), XDP_DROP);
    }
    let hits = k.maps.ip_counters().unwrap();
    assert_eq!(hits.len(), 1);
    let (key, c) = hits[0];
    assert_eq!(
        blocklist_agent::datapath::maps::ip_of(&key),
        v4("192.0.2.99")
    );
    assert_eq!(key.direction, blocklist_ebpf::DIRECTION_DST);
    assert_eq!(
        (c.packets, c.bytes, c.prefix_len),
        (3, 3 * f.len() as u64, 24)
    );
}

/// The reference lookup: the longest block entry containing the address,
/// unless an allow entry contains it too (then the address passes).
fn longest(block: &[Prefix], allow: &[Prefix], a: IpAddr) -> Option<Prefix> {
    let hit = block
        .iter()
        .filter(|p| p.contains(a))
        .max_by_key(|p| p.prefix_len())
        .copied()?;
    (!allow.iter().any(|p| p.contains(a))).then_some(hit)
}

/// The reference verdict and the entries that must be counted: the
/// source's longest blocked match, and unless that one drops, the
/// destination's too; a packet drops when a matching entry that is not
/// monitor-only (`monitor` holds those) does.
fn reference(
    block: &[Prefix],
    monitor: &std::collections::HashSet<Prefix>,
    allow: &[Prefix],
    src: IpAddr,
    dst: IpAddr,
) -> (u32, Vec<Prefix>) {
    let mut counted = Vec::new();
    let drops = |p: &Prefix| !monitor.contains(p);
    if let Some(p) = longest(block, allow, src) {
        counted.push(p);
        if drops(&p) {
            return (XDP_DROP, counted);
        }
    }
    if let Some(p) = longest(block, allow, dst) {
        if !counted.contains(&p) {
            counted.push(p);
        }
        if drops(&p) {
            counted.sort();
            return (XDP_DROP, counted);
        }
    }
    counted.sort();
    (XDP_PASS, counted)
}

/// Packets counted per entry, for every entry.
fn packets_by_entry(k: &Kernel) -> std::collections::HashMap<Prefix, u64> {
    k.maps
        .all_prefix_counters()
        .unwrap()
        .into_iter()
        .map(|(p, c)| (p, c.packets))
        .collect()
}

/// Addresses from a small space so random prefixes and addresses collide.
fn arb_v4() -> impl Strategy<Value = Ipv4Addr> {
    (0u8..4, any::<u8>(), any::<u8>()).prop_map(|(b, c, d)| Ipv4Addr::new(10, b, c, d))
}
fn arb_v6() -> impl Strategy<Value = Ipv6Addr> {
    (0u16..4, any::<u16>(), any::<u64>()).prop_map(|(a, b, c)| {
        Ipv6Addr::from((0xfd00_0000u128 | a as u128) << 96 | (b as u128) << 64 | c as u128)
    })
}
fn arb_prefix() -> impl Strategy<Value = Prefix> {
    prop_oneof![
        (arb_v4(), 8u8..=32)
            .prop_map(|(a, l)| Prefix::new(ipnet::Ipv4Net::new(a, l).unwrap().into())),
        (arb_v6(), 30u8..=128)
            .prop_map(|(a, l)| Prefix::new(ipnet::Ipv6Net::new(a, l).unwrap().into())),
    ]
}
fn arb_pair() -> impl Strategy<Value = (IpAddr, IpAddr)> {
    prop_oneof![
        (arb_v4(), arb_v4()).prop_map(|(a, b)| (IpAddr::V4(a), IpAddr::V4(b))),
        (arb_v6(), arb_v6()).prop_map(|(a, b)| (IpAddr::V6(a), IpAddr::V6(b))),
        // An IPv4 address carried v4-mapped in an IPv6 header is decided
        // as IPv4.
        (arb_v4(), arb_v6()).prop_map(|(a, b)| (IpAddr::V6(a.to_ipv6_mapped()), IpAddr::V6(b))),
    ]
}

#[test]
fn verdicts_match_a_reference_lpm() {
    // proptest's closure is `Fn`; the kernel fixture is mutated through a cell.
    let k = std::cell::RefCell::new(kernel());
    let config = ProptestConfig {
        cases: 48,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(
        entries in proptest::collection::vec((arb_prefix(), proptest::bool::weighted(0.3)), 1..40),
        allow in proptest::collection::vec(arb_prefix(), 0..6),
        pairs in proptest::collection::vec(arb_pair(), 1..40),
    )| {
        let mut k = k.borrow_mut();
        k.clear(TrieKind::Block);
        k.clear(TrieKind::Allow);
        // Some entries only monitor (a monitor feed's): they count and
        // pass, and the destination is still looked up.
        let mut monitor = std::collections::HashSet::new();
        for (p, watch) in &entries {
            let flags = if *watch { ENTRY_FLAG_MONITOR } else { 0 };
            k.maps.insert(TrieKind::Block, *p, flags).unwrap();
            // The last write of a prefix wins, as in the kernel.
            if *watch {
                monitor.insert(*p);
            } else {
                monitor.remove(p);
            }
        }
        let block: Vec<Prefix> = entries.iter().map(|(p, _)| *p).collect();
        for p in &allow {
            k.maps.insert(TrieKind::Allow, *p, 0).unwrap();
        }
        // Probe the prefixes' own addresses too, so hits are common.
        let mut probes = pairs.clone();
        for p in &block {
            let peer = if p.is_v4() { IpAddr::V4(v4("10.200.0.1")) } else { IpAddr::V6(v6("fd00:ffff::1")) };
            probes.push((p.addr(), peer));
            probes.push((peer, p.addr()));
        }
        // Both lookups decide every probe: the compiled table and the tries
        // must agree with the reference, and so with each other.
        for ((src, dst), lookup) in probes.into_iter().flat_map(|p| [(p, Lookup::Table), (p, Lookup::Trie)]) {
            k.set_lookup(lookup);
            let (want, counted) = reference(&block, &monitor, &allow, src, dst);
            let before = packets_by_entry(&k);
            let got = k.verdict(&frames::ip(src, dst));
            prop_assert_eq!(got, want, "{:?}: src {} dst {} block {:?} allow {:?}", lookup, src, dst, block, allow);
            // Exactly the longest matching entries counted the packet.
            let after = packets_by_entry(&k);
            let mut grew: Vec<Prefix> = after
                .iter()
                .filter(|(p, n)| before.get(*p).copied().unwrap_or(0) != **n)
                .map(|(p, _)| *p)
                .collect();
            grew.sort();
            prop_assert_eq!(&grew, &counted, "{:?}: counted entries for src {} dst {} block {:?} monitor {:?} allow {:?}", lookup, src, dst, block, monitor, allow);
            for e in &counted {
                prop_assert_eq!(after[e], before.get(e).copied().unwrap_or(0) + 1);
            }
        }
    });
}
