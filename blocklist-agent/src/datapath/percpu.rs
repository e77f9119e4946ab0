//! Summing the per-CPU copies the kernel keeps of a counter, as the maps
//! are read.

use blocklist_ebpf::{GlobalCounters, IpCounters};

/// Sums the per-CPU copies of the global counters.
pub fn sum_global<'a>(per_cpu: impl Iterator<Item = &'a GlobalCounters>) -> GlobalCounters {
    per_cpu.fold(GlobalCounters::default(), |mut a, c| {
        for ((_, sum), (_, v)) in a.named_mut().into_iter().zip(c.named()) {
            *sum += v;
        }
        a
    })
}

/// Sums per-CPU per-address counters.
pub fn sum_ip<'a>(per_cpu: impl Iterator<Item = &'a IpCounters>) -> IpCounters {
    per_cpu.fold(IpCounters::default(), |mut a, c| {
        add_ip(&mut a, c);
        a
    })
}

/// Adds one CPU's per-address counters to a running sum.
pub fn add_ip(a: &mut IpCounters, c: &IpCounters) {
    a.packets += c.packets;
    a.bytes += c.bytes;
    a.first_seen_ns = earliest(a.first_seen_ns, c.first_seen_ns);
    if c.last_seen_ns >= a.last_seen_ns {
        a.last_seen_ns = c.last_seen_ns;
        a.prefix_len = c.prefix_len;
    }
}

fn earliest(a: u64, b: u64) -> u64 {
    match (a, b) {
        (0, x) | (x, 0) => x,
        (x, y) => x.min(y),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_every_counter() {
        let mut a = GlobalCounters::default();
        for (i, (_, v)) in a.named_mut().into_iter().enumerate() {
            *v = i as u64;
        }
        let sum = sum_global([a, a].iter());
        for ((name, s), (_, v)) in sum.named().into_iter().zip(a.named()) {
            assert_eq!(s, 2 * v, "{name}");
        }
    }

    #[test]
    fn an_address_keeps_its_first_and_latest_sighting() {
        let cpu = |packets, first, last, len| IpCounters {
            packets,
            bytes: packets * 100,
            first_seen_ns: first,
            last_seen_ns: last,
            prefix_len: len,
            ..Default::default()
        };
        let sum = sum_ip([cpu(2, 50, 90, 24), cpu(0, 0, 0, 0), cpu(3, 40, 70, 16)].iter());
        assert_eq!((sum.packets, sum.bytes), (5, 500));
        assert_eq!((sum.first_seen_ns, sum.last_seen_ns), (40, 90));
        assert_eq!(sum.prefix_len, 24, "the length of the latest hit");
    }
}
