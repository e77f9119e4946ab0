//! Socket-level egress: the cgroup `connect4`/`connect6` and
//! `sendmsg4`/`sendmsg6` hooks refuse a connection, or an unconnected
//! datagram, to a blocked address before any packet leaves the host
//! (`connect()` and `sendto()` fail with `EPERM`).
//!
//! They decide with the XDP program's own lookup (the compiled table and
//! its allow semantics, or the tries in trie mode), so both directions
//! always agree, and count in the same per-entry counters, as
//! `egress_packets`. A v4-mapped IPv6 destination is looked up as the IPv4
//! address it is.

use aya_ebpf::{macros::cgroup_sock_addr, programs::SockAddrContext};
use blocklist_ebpf::{ACTION_MONITOR, DIRECTION_EGRESS, FAMILY_V4, FAMILY_V6, LOOKUP_TRIE};

use crate::program::{CONFIG, Lookup, Probe, lookup};

/// The verdicts a `cgroup/sock_addr` program returns.
const ALLOW: i32 = 1;
const REFUSE: i32 = 0;

/// The lookup reads the address as words, as it does inside a parsed frame.
#[repr(C, align(4))]
struct Addr([u8; 16]);

#[cgroup_sock_addr(connect4)]
pub fn egress_connect4(ctx: SockAddrContext) -> i32 {
    decide_v4(&ctx)
}

#[cgroup_sock_addr(sendmsg4)]
pub fn egress_sendmsg4(ctx: SockAddrContext) -> i32 {
    decide_v4(&ctx)
}

#[cgroup_sock_addr(connect6)]
pub fn egress_connect6(ctx: SockAddrContext) -> i32 {
    decide_v6(&ctx)
}

#[cgroup_sock_addr(sendmsg6)]
pub fn egress_sendmsg6(ctx: SockAddrContext) -> i32 {
    decide_v6(&ctx)
}

#[inline(always)]
fn decide_v4(ctx: &SockAddrContext) -> i32 {
    // SAFETY: the kernel's context for this hook; `user_ip4` is readable
    // in connect4 and sendmsg4 (network byte order, as in a frame).
    let ip = unsafe { (*ctx.sock_addr).user_ip4 };
    let mut a = Addr([0; 16]);
    a.0[..4].copy_from_slice(&ip.to_ne_bytes());
    decide(&a, FAMILY_V4)
}

#[inline(always)]
fn decide_v6(ctx: &SockAddrContext) -> i32 {
    // SAFETY: as above; `user_ip6` is read a 32-bit word at a time, the
    // access the verifier allows.
    let w = unsafe {
        let s = ctx.sock_addr;
        [
            (*s).user_ip6[0],
            (*s).user_ip6[1],
            (*s).user_ip6[2],
            (*s).user_ip6[3],
        ]
    };
    let mut a = Addr([0; 16]);
    if w[0] == 0 && w[1] == 0 && w[2].to_ne_bytes() == [0, 0, 0xff, 0xff] {
        a.0[..4].copy_from_slice(&w[3].to_ne_bytes());
        return decide(&a, FAMILY_V4);
    }
    for (i, word) in w.iter().enumerate() {
        a.0[i * 4..i * 4 + 4].copy_from_slice(&word.to_ne_bytes());
    }
    decide(&a, FAMILY_V6)
}

#[inline(always)]
fn decide(addr: &Addr, family: u8) -> i32 {
    let config = CONFIG.get(0).copied().unwrap_or_default();
    let mut probe = Probe {
        len: 0,
        interval_ns: 0,
        now: 0,
        direction: DIRECTION_EGRESS,
        table: config.lookup != LOOKUP_TRIE,
    };
    match lookup(&addr.0, family, &mut probe) {
        Lookup::Blocked(..) if config.action != ACTION_MONITOR => REFUSE,
        _ => ALLOW,
    }
}
