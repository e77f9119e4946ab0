//! Summing per-CPU counters and turning kernel timestamps into wall time.

use std::time::{Duration, SystemTime};

use blocklist_ebpf::{GlobalCounters, IpCounters};

/// Sums the per-CPU copies of the global counters.
pub fn sum_global<'a>(per_cpu: impl Iterator<Item = &'a GlobalCounters>) -> GlobalCounters {
    per_cpu.fold(GlobalCounters::default(), |mut a, c| {
        a.seen_packets += c.seen_packets;
        a.seen_bytes += c.seen_bytes;
        a.passed_packets += c.passed_packets;
        a.passed_bytes += c.passed_bytes;
        a.dropped_v4_packets += c.dropped_v4_packets;
        a.dropped_v4_bytes += c.dropped_v4_bytes;
        a.dropped_v6_packets += c.dropped_v6_packets;
        a.dropped_v6_bytes += c.dropped_v6_bytes;
        a.monitored_packets += c.monitored_packets;
        a.monitored_bytes += c.monitored_bytes;
        a.allowlisted_packets += c.allowlisted_packets;
        a.not_ip_packets += c.not_ip_packets;
        a.malformed_packets += c.malformed_packets;
        a.events_sent += c.events_sent;
        a.events_lost += c.events_lost;
        a.events_suppressed += c.events_suppressed;
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

/// RFC 3339 rendering of a kernel timestamp, or `None` for never.
pub fn ktime_rfc3339(ktime_ns: u64) -> Option<String> {
    ktime_to_system(ktime_ns).map(|t| humantime::format_rfc3339_seconds(t).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_seen_has_no_time() {
        assert!(ktime_to_system(0).is_none());
        assert!(ktime_to_system(1).is_some());
    }
}
