//! Writing a plan within the maps' capacity.
//!
//! [`apply`](super::apply) inserts before it deletes, so at its peak the
//! maps hold what was installed plus what is new. A feed that replaces a
//! large part of a list near capacity (a million entries, a fifth of them
//! new) does not fit that way, although the new list itself does. Such a
//! plan goes in two batches: first the deletes that no new entry overlaps,
//! whose addresses the new set does not block unless a kept entry still
//! does (so no address that both sets block is unblocked), committed so
//! that their ids and places are free; then the plan's remaining writes in
//! the usual order. A plan that does not fit even then, or whose allow
//! entries do not fit their tries, is refused before anything is written:
//! the installed entries keep protecting. Before either, an exact map
//! that the peak overfills is grown ([`grow::make_room`]).

use anyhow::{Context as _, bail};

use super::{Plan, apply_with_deletes};
use crate::{
    datapath::{
        grow,
        maps::{Maps, TrieKind},
        table::TableReport,
    },
    prefix::Prefix,
};

/// The deletes in `dels` that no entry of `adds` overlaps (contains or is
/// contained in), in `dels`' order.
pub fn early_deletes(adds: &[(Prefix, u32)], dels: &[Prefix]) -> Vec<Prefix> {
    // The adds as disjoint covered ranges per family, sorted: a delete
    // overlaps an add exactly when it meets one of these ranges.
    let mut ranges: Vec<(bool, u128, u128)> = adds.iter().map(|(p, _)| span(p)).collect();
    ranges.sort_unstable();
    let mut merged: Vec<(bool, u128, u128)> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match merged.last_mut() {
            Some(last) if last.0 == r.0 && r.1 <= last.2 => last.2 = last.2.max(r.2),
            _ => merged.push(r),
        }
    }
    dels.iter()
        .filter(|d| {
            let (v6, start, end) = span(d);
            // The last range that starts at or before the delete's end.
            let i = merged.partition_point(|r| (r.0, r.1) <= (v6, end));
            i == 0 || {
                let r = merged[i - 1];
                r.0 != v6 || r.2 < start
            }
        })
        .copied()
        .collect()
}

/// A prefix's family (true for IPv6) and first and last address.
fn span(p: &Prefix) -> (bool, u128, u128) {
    let (addr, bits) = match p.net() {
        ipnet::IpNet::V4(n) => (u32::from(n.network()) as u128, 32),
        ipnet::IpNet::V6(n) => (u128::from(n.network()), 128),
    };
    let host = bits - p.prefix_len() as u32;
    let size_minus_one = if host == 128 {
        u128::MAX
    } else {
        (1u128 << host) - 1
    };
    (!p.is_v4(), addr, addr + size_minus_one)
}

/// `dels` without `early`.
pub(super) fn without(dels: &[Prefix], early: &[Prefix]) -> Vec<Prefix> {
    let mut early = early.to_vec();
    early.sort_unstable();
    dels.iter()
        .filter(|d| early.binary_search(d).is_err())
        .copied()
        .collect()
}

/// Writes `plan` into `maps`, in one batch when its peak fits and in two
/// when only the early deletes make it fit (see the module doc); refuses
/// it, unwritten, when it does not fit either way. With `release`, the
/// plan's block writes are freed before the last table compile (the
/// caller needs only their counts). The table report sums both batches.
pub fn write(
    maps: &mut Maps,
    plan: &mut Plan,
    release: bool,
) -> anyhow::Result<Option<TableReport>> {
    let (mut peak, new) = maps.room_with(&plan.block_add, &plan.allow_add)?;
    // The exact maps start small and grow with the installed set.
    let capacity = grow::make_room(maps, &peak)
        .context("growing an exact map for this sync; nothing was changed")?;
    let mut first = None;
    let mut early = Vec::new();
    if let Some(o) = peak.over(&capacity) {
        if o.allow {
            // Removing an allow entry early could block, for a moment, an
            // address neither list blocks; and allow lists are small.
            bail!(
                "this sync needs {} allow entries in {}, which holds {}; nothing was changed, \
                 the installed entries keep protecting. Use fewer allow entries: merge \
                 adjacent ones into wider prefixes",
                o.needed,
                o.map,
                o.capacity,
            );
        }
        early = early_deletes(&plan.block_add, &plan.block_del);
        for d in &early {
            peak.remove(d);
        }
        if let Some(o) = peak.over(&capacity) {
            bail!(
                "this sync needs {} entries in {}, which holds {}, although {} of its {} removals \
                 go before its {} new entries are in (the others overlap new entries); nothing \
                 was changed, the installed entries keep protecting. Use fewer entries: drop or \
                 narrow a feed",
                o.needed,
                o.map,
                o.capacity,
                early.len(),
                plan.block_del.len(),
                new,
            );
        }
        tracing::info!(
            early = early.len(),
            rest = plan.block_del.len() - early.len(),
            "the installed and the new entries together exceed the maps' capacity: removing \
             first the entries that no new one overlaps"
        );
        first = maps.batch(|m| m.remove_many(TrieKind::Block, &early))?.1;
    }
    let rest = (!early.is_empty()).then(|| without(&plan.block_del, &early));
    drop(early);
    let second = maps
        .batch(|m| {
            let dels = rest.as_deref().unwrap_or(&plan.block_del);
            apply_with_deletes(m, plan, dels)?;
            if release {
                plan.block_add = Vec::new();
                plan.block_del = Vec::new();
            }
            anyhow::Ok(())
        })?
        .1;
    Ok(sum(first, second))
}

/// The reports of two table updates as one.
fn sum(a: Option<TableReport>, b: Option<TableReport>) -> Option<TableReport> {
    match (a, b) {
        (Some(a), Some(b)) => Some(TableReport {
            compile_seconds: a.compile_seconds + b.compile_seconds,
            write_seconds: a.write_seconds + b.write_seconds,
            written: crate::datapath::table::writer::WriteReport {
                slots: a.written.slots + b.written.slots,
                records: a.written.records + b.written.records,
                rounds: a.written.rounds + b.written.rounds,
            },
            ..b
        }),
        (a, b) => b.or(a),
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use proptest::prelude::*;

    use super::*;

    fn v4(host: u32, len: u8) -> Prefix {
        let a = Ipv4Addr::from(0x0a00_0000 | host);
        Prefix::new(ipnet::Ipv4Net::new(a, len).unwrap().trunc().into())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// A delete goes early exactly when no add contains it or lies
        /// inside it.
        #[test]
        fn early_deletes_are_those_no_add_overlaps(
            adds in proptest::collection::vec((0u32..4096, 18u8..=32), 0..16),
            dels in proptest::collection::btree_set((0u32..4096, 18u8..=32), 0..16),
            v6 in any::<bool>(),
        ) {
            let adds: Vec<(Prefix, u32)> = adds.into_iter().map(|(h, l)| (v4(h, l), 0)).collect();
            let mut dels: Vec<Prefix> = dels.into_iter().map(|(h, l)| v4(h, l)).collect();
            if v6 {
                // A delete of the other family never overlaps.
                dels.push("2001:db8::/32".parse().unwrap());
            }
            dels.sort_unstable();
            dels.dedup();
            let want: Vec<Prefix> = dels
                .iter()
                .filter(|d| !adds.iter().any(|(a, _)| a.covers(d) || d.covers(a)))
                .copied()
                .collect();
            let early = early_deletes(&adds, &dels);
            prop_assert_eq!(&early, &want);
            let rest = without(&dels, &early);
            prop_assert_eq!(rest.len() + early.len(), dels.len());
            prop_assert!(rest.iter().all(|d| !early.contains(d)));
        }
    }

    #[test]
    fn a_zero_length_prefix_spans_its_whole_family() {
        let all: Prefix = "::/0".parse().unwrap();
        assert_eq!(span(&all), (true, 0, u128::MAX));
        let adds = [("2001:db8::1/128".parse().unwrap(), 0)];
        assert!(early_deletes(&adds, &[all]).is_empty());
        assert_eq!(
            early_deletes(&adds, &["0.0.0.0/0".parse().unwrap()]).len(),
            1
        );
    }
}
