//! Typed map access against the real kernel: batched and single updates,
//! exact and longest-prefix lookups, counters that follow their prefix.

use blocklist_agent::{
    datapath::maps::TrieKind,
    prefix::{Family, Prefix},
};
use blocklist_tests::{frames, kernel::Kernel, require_root};

fn p(s: &str) -> Prefix {
    s.parse().unwrap()
}

#[test]
fn batched_inserts_and_deletes_are_exact() {
    require_root();
    let mut k = Kernel::load();
    // 20,000 IPv4 /32s and 3,000 IPv6 /64s: several batches each.
    let mut all: Vec<(Prefix, u32)> = (0..20_000u32)
        .map(|i| {
            (
                Prefix::host(std::net::Ipv4Addr::from(0x0a00_0000 | i).into()),
                0,
            )
        })
        .collect();
    all.extend((0..3_000u128).map(|i| {
        let a = std::net::Ipv6Addr::from((0xfd00u128 << 112) | (i << 64));
        (Prefix::new(ipnet::Ipv6Net::new(a, 64).unwrap().into()), 0)
    }));
    k.maps.insert_many(TrieKind::Block, &all).unwrap();
    assert_eq!(
        k.maps.fill(TrieKind::Block, Family::V4).unwrap().entries,
        20_000
    );
    assert_eq!(
        k.maps.fill(TrieKind::Block, Family::V6).unwrap().entries,
        3_000
    );
    // Inserting again overwrites, it does not duplicate.
    k.maps.insert_many(TrieKind::Block, &all[..100]).unwrap();
    assert_eq!(
        k.maps.fill(TrieKind::Block, Family::V4).unwrap().entries,
        20_000
    );

    // Delete every other one, plus entries that are not there at all.
    let mut gone: Vec<Prefix> = all.iter().step_by(2).map(|(p, _)| *p).collect();
    gone.insert(0, p("192.0.2.0/24"));
    gone.insert(500, p("198.51.100.0/24"));
    gone.push(p("2001:db8::/32"));
    k.maps.remove_many(TrieKind::Block, &gone).unwrap();
    let left4 = k.maps.fill(TrieKind::Block, Family::V4).unwrap().entries;
    let left6 = k.maps.fill(TrieKind::Block, Family::V6).unwrap().entries;
    assert_eq!((left4, left6), (10_000, 1_500));
    for (i, (prefix, _)) in all.iter().enumerate() {
        let present = k
            .maps
            .get_exact(TrieKind::Block, *prefix)
            .unwrap()
            .is_some();
        assert_eq!(present, i % 2 == 1, "{prefix}");
    }
}

#[test]
fn exact_lookup_is_not_fooled_by_a_covering_prefix() {
    require_root();
    let mut k = Kernel::load();
    k.block("10.0.0.0/8");
    assert!(
        k.maps
            .get_exact(TrieKind::Block, p("10.0.0.0/8"))
            .unwrap()
            .is_some()
    );
    assert!(
        k.maps
            .get_exact(TrieKind::Block, p("10.1.0.0/16"))
            .unwrap()
            .is_none()
    );
    let m = k
        .maps
        .lookup(TrieKind::Block, "10.1.2.3".parse().unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(m.prefix, p("10.0.0.0/8"));
    // A single removal of a missing entry is not an error.
    assert!(!k.maps.remove(TrieKind::Block, p("10.1.0.0/16")).unwrap());
}

#[test]
fn counters_follow_their_prefix_and_go_with_it() {
    require_root();
    let mut k = Kernel::load();
    k.block("192.0.2.0/24");
    k.block("198.51.100.0/24");
    let f = frames::ipv4("192.0.2.9".parse().unwrap(), "10.0.0.1".parse().unwrap());
    k.verdict(&f);
    k.verdict(&f);
    // Adding and removing other entries leaves these counters alone.
    k.maps
        .remove_many(TrieKind::Block, &[p("198.51.100.0/24")])
        .unwrap();
    k.block("203.0.113.0/24");
    assert_eq!(
        k.maps.prefix_counters(p("192.0.2.0/24")).unwrap().packets,
        2
    );
    // Removing the prefix removes its counters: a later re-add starts at 0.
    k.maps
        .remove_many(TrieKind::Block, &[p("192.0.2.0/24")])
        .unwrap();
    k.block("192.0.2.0/24");
    assert_eq!(
        k.maps.prefix_counters(p("192.0.2.0/24")).unwrap().packets,
        0
    );
}

/// A handle keeps what it wrote in memory between writes; a write by
/// another handle (another process, in production) must make it read the
/// maps again, or it would give an id twice and compile a table without
/// the other writer's entries.
#[test]
fn a_write_by_another_handle_is_seen_by_the_next_write() {
    use blocklist_agent::datapath::{maps::Maps, pin::PinDir};
    require_root();
    let mut k = Kernel::load();
    let pin = PinDir::new(k.pin_dir());
    let (x, y, z) = (p("192.0.2.1/32"), p("198.51.100.0/24"), p("203.0.113.9/32"));
    k.maps.insert_many(TrieKind::Block, &[(x, 0)]).unwrap();
    let mut other = Maps::open(&pin).unwrap();
    other.insert_many(TrieKind::Block, &[(y, 0)]).unwrap();
    k.maps.insert_many(TrieKind::Block, &[(z, 0)]).unwrap();

    let (installed, _) = k.maps.installed().unwrap();
    let names: Vec<Prefix> = installed.iter().map(|(q, _)| *q).collect();
    assert_eq!(names, vec![x, y, z]);
    let mut ids: Vec<u32> = installed.iter().map(|(_, v)| v.id).collect();
    ids.dedup();
    assert_eq!(ids.len(), 3, "an id was given twice: {installed:?}");
    // The table this handle compiled last holds the other writer's entry.
    for a in ["198.51.100.7", "192.0.2.1", "203.0.113.9"] {
        let r = k.maps.table_result(a.parse().unwrap()).unwrap();
        assert_ne!(r & blocklist_ebpf::RESULT_BLOCKED, 0, "{a}: {r:#x}");
    }
    // And after the other handle removes one, this one does not bring it
    // back or keep counting it.
    other.remove_many(TrieKind::Block, &[x]).unwrap();
    k.maps
        .insert_many(TrieKind::Block, &[(p("192.0.2.2/32"), 0)])
        .unwrap();
    assert_eq!(
        k.maps.table_result("192.0.2.1".parse().unwrap()).unwrap(),
        0
    );
    assert_eq!(
        k.maps
            .installed_fill(TrieKind::Block, Family::V4)
            .unwrap()
            .entries,
        3
    );
}

/// `/metrics` names the hit entries through `HIT_IDS` and a writer's
/// snapshot instead of a walk: it must find exactly what the walk finds,
/// with ids that were freed and given again, with entries hit before the
/// map's marks were complete (a program upgraded in place), and it must
/// refuse a snapshot that another writer made stale.
#[test]
fn hit_entries_through_hit_ids_equal_the_walk() {
    use blocklist_agent::datapath::{maps::Maps, pin::PinDir};
    require_root();
    let mut k = Kernel::load();
    let pin = PinDir::new(k.pin_dir());
    let entries = [
        "192.0.2.7/32",
        "198.51.100.0/24",
        "203.0.113.0/28",
        "10.9.0.0/16",
        "2001:db8::1/128",
        "2001:db8:1::/48",
        "2001:db8:2::/64",
    ];
    let mut all: Vec<(Prefix, u32)> = entries.iter().map(|e| (p(e), 0)).collect();
    // Enough others that the walk reads its counters in batched runs, in
    // trie order rather than id order.
    all.extend((0..300u32).map(|i| {
        (
            Prefix::host(std::net::Ipv4Addr::from(0xc612_0000 | (i * 7919 % 65_536)).into()),
            0,
        )
    }));
    k.maps.insert_many(TrieKind::Block, &all).unwrap();
    k.maps
        .insert_manual(TrieKind::Block, p("10.8.0.0/16"))
        .unwrap();
    let hit = |k: &mut Kernel, src: &str, n: usize| {
        let src: std::net::IpAddr = src.parse().unwrap();
        let dst = if src.is_ipv4() { "10.0.0.1" } else { "fd00::1" };
        let f = frames::ip(src, dst.parse().unwrap());
        for _ in 0..n {
            k.verdict(&f);
        }
    };
    hit(&mut k, "192.0.2.7", 3);
    hit(&mut k, "198.51.100.77", 2);
    hit(&mut k, "10.8.1.1", 1);
    hit(&mut k, "2001:db8::1", 4);
    hit(&mut k, "2001:db8:2::9", 5);
    let sorted = |mut v: Vec<blocklist_agent::datapath::maps::HitEntry>| {
        v.sort_by_key(|(p, _, _)| *p);
        v
    };
    let check = |k: &mut Kernel| {
        k.maps.installed().unwrap();
        let snap = k.maps.block_snapshot().expect("a committed mirror");
        let known = k
            .maps
            .hit_block_entries_known(&snap)
            .unwrap()
            .expect("a current snapshot is used");
        let walked = k.maps.hit_block_entries().unwrap();
        assert_eq!(sorted(known.clone()), sorted(walked));
        known
    };
    let known = check(&mut k);
    assert_eq!(known.len(), 5, "{known:?}");

    // Freed and given again: the removed entry's counters and mark stay
    // behind; its successor must not inherit them.
    k.maps
        .remove_many(TrieKind::Block, &[p("192.0.2.7/32"), p("198.51.100.0/24")])
        .unwrap();
    k.maps
        .insert_many(
            TrieKind::Block,
            &[(p("192.0.2.8/32"), 0), (p("198.51.101.0/24"), 0)],
        )
        .unwrap();
    hit(&mut k, "198.51.101.3", 1);
    let known = check(&mut k);
    assert!(
        known.iter().all(|(q, _, _)| *q != p("192.0.2.8/32")),
        "{known:?}"
    );

    // Marks wiped (what a program upgraded in place starts with): the
    // first reader seeds them from the counters.
    let words: aya::maps::Array<aya::maps::MapData, u64> =
        aya::maps::Array::try_from(aya::maps::Map::Array(
            aya::maps::MapData::from_pin(pin.map(blocklist_ebpf::map_names::HIT_IDS)).unwrap(),
        ))
        .unwrap();
    let mut words = words;
    for i in 0..blocklist_ebpf::HIT_IDS_WORDS {
        if words.get(&i, 0).unwrap() != 0 {
            words.set(i, &0, 0).unwrap();
        }
    }
    check(&mut k);

    // Another writer: the snapshot no longer matches the maps.
    let snap = k.maps.block_snapshot().unwrap();
    let mut other = Maps::open(&pin).unwrap();
    other
        .insert_many(TrieKind::Block, &[(p("100.64.0.0/24"), 0)])
        .unwrap();
    assert!(k.maps.hit_block_entries_known(&snap).unwrap().is_none());
    check(&mut k);
}

/// `list | head` and `top --json | head`: a reader that stops early ends
/// the command quietly (SIGPIPE, as for `ls`), with no panic on stderr.
#[test]
fn list_and_top_end_quietly_when_the_reader_stops() {
    use std::io::{BufRead as _, BufReader};
    use std::process::{Command, Stdio};
    require_root();
    let mut k = Kernel::load();
    let entries: Vec<(Prefix, u32)> = (0..20_000u32)
        .map(|i| {
            (
                Prefix::host(std::net::Ipv4Addr::from(0xc633_0000 | i).into()),
                0,
            )
        })
        .collect();
    k.maps.insert_many(TrieKind::Block, &entries).unwrap();
    // Hits, so that `top` has rows too.
    for i in 0..50u32 {
        let src = std::net::Ipv4Addr::from(0xc633_0000 | i);
        k.verdict(&frames::ipv4(src, "10.0.0.1".parse().unwrap()));
    }
    let state = tempfile::tempdir().unwrap();
    std::fs::write(state.path().join("none.toml"), "").unwrap();
    for args in [
        &["list"][..],
        &["list", "--json"],
        &["top", "--json", "--limit", "50"],
    ] {
        let mut child = Command::new(blocklist_tests::agent::binary())
            .arg("--pin-dir")
            .arg(k.pin_dir())
            .arg("--state-dir")
            .arg(state.path())
            .arg("--config")
            .arg(state.path().join("none.toml"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        assert!(!first.is_empty(), "{args:?} printed nothing");
        // The reader is gone: the next write fails.
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(
            out.status.success()
                || std::os::unix::process::ExitStatusExt::signal(&out.status) == Some(13),
            "{args:?} ended with {}: {stderr}",
            out.status
        );
    }
}

/// A handle opened on a committed table logs its writes from its first
/// read, so its first commit compiles only the /16s they touch: that is
/// what makes a 1% change in a fresh `sync --once` cost about 1% of a full
/// load. The partial table must still decide every address as the tries
/// do, wide entries spanning many /16s and allow entries included.
#[test]
fn a_fresh_handle_compiles_only_what_it_touches_and_agrees_with_the_tries() {
    use blocklist_agent::{
        config::Lookup,
        datapath::{DatapathError, maps::Maps, pin::PinDir},
    };
    use rand::{Rng as _, SeedableRng as _, rngs::StdRng};
    use std::net::Ipv4Addr;
    require_root();
    let mut k = Kernel::load();
    let pin = PinDir::new(k.pin_dir());
    let mut rng = StdRng::seed_from_u64(0x1e55);
    // Inside 10.0.0.0/8: 256 /16s, most of them holding entries.
    let prefix = |rng: &mut StdRng| {
        let len = [32u8, 32, 32, 28, 24, 24, 20, 18, 13, 10][rng.random_range(0..10)];
        let a = 0x0a00_0000 | rng.random_range(0..1u32 << 24);
        Prefix::from_v4(a.to_be_bytes(), len).expect("a valid IPv4 prefix")
    };
    let before: Vec<(Prefix, u32)> = (0..3_000).map(|_| (prefix(&mut rng), 0)).collect();
    let allow_before: Vec<(Prefix, u32)> = (0..20).map(|_| (prefix(&mut rng), 0)).collect();
    k.maps.insert_many(TrieKind::Block, &before).unwrap();
    k.maps.insert_many(TrieKind::Allow, &allow_before).unwrap();

    let mut other = Maps::open(&pin).unwrap();
    // The change keeps the wide entries and touches only some /16s, so a
    // partial compile must bring in the wide entries that cover them.
    let narrow = |p: &Prefix| p.prefix_len() >= 16;
    let gone: Vec<Prefix> = before
        .iter()
        .map(|(p, _)| *p)
        .filter(narrow)
        .step_by(40)
        .collect();
    let added: Vec<(Prefix, u32)> = (0..200)
        .map(|_| prefix(&mut rng))
        .filter(narrow)
        .take(60)
        .map(|p| (p, 0))
        .collect();
    let allow_added: Vec<(Prefix, u32)> = (0..5).map(|_| (prefix(&mut rng), 0)).collect();
    let allow_gone: Vec<Prefix> = allow_before.iter().take(5).map(|(p, _)| *p).collect();
    let ((), report) = other
        .batch(|m| {
            m.remove_many(TrieKind::Block, &gone)?;
            m.insert_many(TrieKind::Block, &added)?;
            m.remove_many(TrieKind::Allow, &allow_gone)?;
            m.insert_many(TrieKind::Allow, &allow_added)?;
            Ok::<_, DatapathError>(())
        })
        .unwrap();
    let report = report.expect("the batch wrote, so the table was compiled");
    assert!(
        report.partial,
        "a handle opened on a committed table compiled the whole table: {report:?}"
    );

    // Every entry's own edges and random addresses, through the program in
    // both lookups.
    let mut probes: Vec<Ipv4Addr> = (0..3_000)
        .map(|_| Ipv4Addr::from(0x0a00_0000 | rng.random_range(0..1u32 << 24)))
        .collect();
    for (p, _) in before
        .iter()
        .chain(&added)
        .chain(&allow_before)
        .chain(&allow_added)
    {
        let net: ipnet::Ipv4Net = match p.net() {
            ipnet::IpNet::V4(n) => n,
            ipnet::IpNet::V6(_) => unreachable!("IPv4 only"),
        };
        let (lo, hi) = (u32::from(net.network()), u32::from(net.broadcast()));
        probes.extend([lo, hi, lo.wrapping_sub(1), hi.wrapping_add(1)].map(Ipv4Addr::from));
    }
    let peer = Ipv4Addr::new(172, 16, 0, 1);
    let mut verdicts = Vec::new();
    for lookup in [Lookup::Trie, Lookup::Table] {
        k.set_lookup(lookup);
        verdicts.push(
            probes
                .iter()
                .map(|a| k.verdict(&frames::ipv4(*a, peer)))
                .collect::<Vec<_>>(),
        );
    }
    for (i, a) in probes.iter().enumerate() {
        assert_eq!(
            verdicts[1][i], verdicts[0][i],
            "{a}: the partially compiled table and the tries disagree"
        );
    }
}

/// `table_result` (what `check` reports as the table's answer) reads the
/// kernel table in the program's order, the empty-/16 and empty-/22 bits
/// first: a bit left set where an entry lies (as a writer that does not
/// know the bit would leave it) lets the address pass, and the result
/// says so too, rather than the blocked answer the slot behind it holds.
#[test]
fn the_table_result_reads_the_empty_bits_as_the_program_does() {
    use aya::maps::{Array, MapData};
    use blocklist_agent::datapath::{pin::PinDir, test_run::XDP_DROP};
    use blocklist_ebpf::{RESULT_BLOCKED, empty16_v4_bit, empty22_v4_bit, map_names};
    require_root();
    let mut k = Kernel::load();
    // The trie lookup never reads the table.
    k.set_lookup(blocklist_agent::config::Lookup::Table);
    k.block("198.51.100.0/24");
    let addr: std::net::Ipv4Addr = "198.51.100.7".parse().unwrap();
    let frame = frames::ipv4(addr, "10.0.0.1".parse().unwrap());
    assert_eq!(k.verdict(&frame), XDP_DROP);
    let r = k.maps.table_result(addr.into()).unwrap();
    assert_ne!(r & RESULT_BLOCKED, 0, "{r:#x}");

    let pin = PinDir::new(k.pin_dir());
    for (name, (word, bit)) in [
        (map_names::EMPTY22_V4, empty22_v4_bit(addr.into())),
        (map_names::EMPTY16_V4, empty16_v4_bit(addr.into())),
    ] {
        let mut m: Array<MapData, u64> = Array::try_from(aya::maps::Map::Array(
            MapData::from_pin(pin.map(name)).unwrap(),
        ))
        .unwrap();
        let was = m.get(&word, 0).unwrap();
        m.set(word, &(was | 1 << bit), 0).unwrap();
        assert_ne!(k.verdict(&frame), XDP_DROP, "{name}: the program passes");
        assert_eq!(
            k.maps.table_result(addr.into()).unwrap(),
            0,
            "{name}: the table's answer is the program's miss"
        );
        m.set(word, &was, 0).unwrap();
        assert_eq!(k.verdict(&frame), XDP_DROP);
    }
}
