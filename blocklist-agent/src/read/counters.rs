//! The global counters by outcome, and kernel timestamps as wall time.

use std::time::{Duration, SystemTime};

use blocklist_ebpf::GlobalCounters;

/// One outcome's frames, as `/metrics` and the status table show them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Traffic {
    /// `seen`, `passed`, `dropped`, `monitored`, `allowlisted`, `not_ip`,
    /// `malformed`.
    pub outcome: &'static str,
    /// `ipv4` or `ipv6` where the outcome is counted per family, else `any`.
    pub family: &'static str,
    /// Frames.
    pub packets: u64,
    /// Their bytes, where the program counts them.
    pub bytes: Option<u64>,
}

/// One hook's totals as `status`, `top --by hook` and the JSON show them:
/// drops summed over both families.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct HookTotals {
    /// Frames (for the cgroup hook: calls) the hook saw.
    pub seen_packets: u64,
    /// Of those, dropped (refused).
    pub dropped_packets: u64,
    /// Their bytes.
    pub dropped_bytes: u64,
    /// Matched by a monitor entry or under the `monitor` action; passed.
    pub monitored_packets: u64,
    /// Block hits an allow entry overrode.
    pub allowlisted_packets: u64,
}

impl HookTotals {
    /// The totals of one hook's summed counters.
    pub fn of(c: &GlobalCounters) -> Self {
        let (mut dropped_packets, mut dropped_bytes) = (0, 0);
        for t in traffic(c).iter().filter(|t| t.outcome == "dropped") {
            dropped_packets += t.packets;
            dropped_bytes += t.bytes.unwrap_or(0);
        }
        Self {
            seen_packets: c.seen_packets,
            dropped_packets,
            dropped_bytes,
            monitored_packets: c.monitored_packets,
            allowlisted_packets: c.allowlisted_packets,
        }
    }

    /// What `top --by hook` ranks by: frames an entry matched (dropped or
    /// monitored).
    pub fn matched(&self) -> u64 {
        self.dropped_packets + self.monitored_packets
    }
}

/// The frame counters of `g` (every `<outcome>_packets` of
/// [`GlobalCounters::named`], with its `<outcome>_bytes`), in field order.
pub fn traffic(g: &GlobalCounters) -> Vec<Traffic> {
    let named = g.named();
    named
        .iter()
        .filter_map(|&(name, packets)| {
            let stem = name.strip_suffix("_packets")?;
            let bytes = named
                .iter()
                .find(|(n, _)| n.strip_suffix("_bytes") == Some(stem))
                .map(|&(_, b)| b);
            let (outcome, family) = match (stem.strip_suffix("_v4"), stem.strip_suffix("_v6")) {
                (Some(o), _) => (o, "ipv4"),
                (_, Some(o)) => (o, "ipv6"),
                _ => (stem, "any"),
            };
            Some(Traffic {
                outcome,
                family,
                packets,
                bytes,
            })
        })
        .collect()
}

/// Converts a kernel timestamp (`bpf_ktime_get_coarse_ns()` or
/// `bpf_ktime_get_ns()`, both CLOCK_MONOTONIC) to wall time;
/// `None` for 0 (never).
pub fn ktime_to_system(ktime_ns: u64) -> Option<SystemTime> {
    if ktime_ns == 0 {
        return None;
    }
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    let now_mono = ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64;
    let ago = Duration::from_nanos(now_mono.saturating_sub(ktime_ns));
    Some(SystemTime::now() - ago)
}

/// Serializes a kernel timestamp as RFC 3339 wall time (`null` for never),
/// for `#[serde(serialize_with)]`.
pub fn serialize_ktime<S: serde::Serializer>(ktime_ns: &u64, s: S) -> Result<S::Ok, S::Error> {
    crate::timestamp::option::serialize(&ktime_to_system(*ktime_ns), s)
}

/// RFC 3339 rendering of a kernel timestamp, or `None` for never.
pub fn ktime_rfc3339(ktime_ns: u64) -> Option<String> {
    ktime_to_system(ktime_ns).map(crate::timestamp::format)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traffic_pairs_packets_with_bytes_per_outcome_and_family() {
        let g = GlobalCounters {
            seen_packets: 10,
            seen_bytes: 1000,
            dropped_v6_packets: 2,
            dropped_v6_bytes: 200,
            not_ip_packets: 3,
            events_sent: 7,
            ..Default::default()
        };
        let rows = traffic(&g);
        let names: Vec<_> = rows.iter().map(|t| (t.outcome, t.family)).collect();
        assert_eq!(
            names,
            [
                ("seen", "any"),
                ("passed", "any"),
                ("dropped", "ipv4"),
                ("dropped", "ipv6"),
                ("monitored", "any"),
                ("allowlisted", "any"),
                ("not_ip", "any"),
                ("malformed", "any"),
            ]
        );
        assert_eq!((rows[0].packets, rows[0].bytes), (10, Some(1000)));
        assert_eq!((rows[3].packets, rows[3].bytes), (2, Some(200)));
        assert_eq!((rows[6].packets, rows[6].bytes), (3, None));
    }

    #[test]
    fn a_hook_sums_its_drops_over_both_families() {
        let g = GlobalCounters {
            seen_packets: 9,
            dropped_v4_packets: 2,
            dropped_v4_bytes: 120,
            dropped_v6_packets: 3,
            dropped_v6_bytes: 300,
            monitored_packets: 1,
            ..Default::default()
        };
        let t = HookTotals::of(&g);
        assert_eq!((t.dropped_packets, t.dropped_bytes), (5, 420));
        assert_eq!((t.seen_packets, t.matched()), (9, 6));
    }

    #[test]
    fn never_seen_has_no_time() {
        assert!(ktime_to_system(0).is_none());
        assert!(ktime_to_system(1).is_some());
    }
}
