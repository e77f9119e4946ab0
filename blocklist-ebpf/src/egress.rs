//! Socket-level egress: the cgroup `connect4`/`connect6` and
//! `sendmsg4`/`sendmsg6` hooks refuse a connection, or an unconnected
//! datagram, to a blocked address before any packet leaves the host
//! (`connect()` and `sendto()` fail with `EPERM`).
//!
//! They decide with the XDP program's own `decide` on the destination
//! alone (the compiled table and its allow semantics, or the tries in
//! trie mode), so both directions always agree; they count in the same
//! per-entry counters, as `egress_packets`, in `HOOK_GLOBAL[HOOK_CGROUP]`
//! (one "packet" per call, no bytes), and their drop events name the
//! process. A v4-mapped IPv6 destination is looked up as the IPv4
//! address it is.

use aya_ebpf::{
    helpers::{bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid},
    macros::cgroup_sock_addr,
    programs::SockAddrContext,
};
use blocklist_ebpf::{DropEvent, FAMILY_V4, FAMILY_V6, HOOK_CGROUP, MATCH_DST};

use crate::program::{CONFIG, HOOK_GLOBAL, Origin, Packet, account, decide};

/// The verdicts a `cgroup/sock_addr` program returns.
const ALLOW: i32 = 1;
const REFUSE: i32 = 0;

impl Origin for SockAddrContext {
    #[inline(always)]
    fn ifindex(&self) -> u32 {
        0
    }

    #[inline(always)]
    fn fill_task(&self, e: *mut DropEvent) {
        // SAFETY: `e` is the reserved record `emit_event` is filling; the
        // helpers are available to cgroup sock_addr programs and describe
        // the task making the call.
        unsafe {
            (*e).pid = (bpf_get_current_pid_tgid() >> 32) as u32;
            (*e).comm = bpf_get_current_comm().unwrap_or([0; 16]);
            (*e).cgroup_id = bpf_get_current_cgroup_id();
        }
    }
}

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
    let mut slot = core::mem::MaybeUninit::<Packet>::uninit();
    let pkt = Packet::zeroed_in(&mut slot);
    // SAFETY: the kernel's context for this hook; `user_ip4` and
    // `user_port` are readable in connect4 and sendmsg4 (network byte
    // order, as in a frame).
    let (ip, port, protocol) = unsafe {
        let s = ctx.sock_addr;
        ((*s).user_ip4, (*s).user_port, (*s).protocol)
    };
    pkt.dst[..4].copy_from_slice(&ip.to_ne_bytes());
    pkt.dst_family = FAMILY_V4;
    pkt.family = FAMILY_V4;
    finish(ctx, pkt, port, protocol)
}

#[inline(always)]
fn decide_v6(ctx: &SockAddrContext) -> i32 {
    let mut slot = core::mem::MaybeUninit::<Packet>::uninit();
    let pkt = Packet::zeroed_in(&mut slot);
    // SAFETY: as above; `user_ip6` is read a 32-bit word at a time, the
    // access the verifier allows.
    let (w, port, protocol) = unsafe {
        let s = ctx.sock_addr;
        (
            [
                (*s).user_ip6[0],
                (*s).user_ip6[1],
                (*s).user_ip6[2],
                (*s).user_ip6[3],
            ],
            (*s).user_port,
            (*s).protocol,
        )
    };
    pkt.family = FAMILY_V6;
    if w[0] == 0 && w[1] == 0 && w[2].to_ne_bytes() == [0, 0, 0xff, 0xff] {
        pkt.dst[..4].copy_from_slice(&w[3].to_ne_bytes());
        pkt.dst_family = FAMILY_V4;
    } else {
        for (i, word) in w.iter().enumerate() {
            pkt.dst[i * 4..i * 4 + 4].copy_from_slice(&word.to_ne_bytes());
        }
        pkt.dst_family = FAMILY_V6;
    }
    finish(ctx, pkt, port, protocol)
}

#[inline(always)]
fn finish(ctx: &SockAddrContext, pkt: &mut Packet, port: u32, protocol: u32) -> i32 {
    // `user_port` holds the port in network byte order in its low half.
    pkt.dst_port = u16::from_be(port as u16);
    pkt.protocol = protocol as u8;
    let Some(global) = HOOK_GLOBAL.get_ptr_mut(HOOK_CGROUP as u32) else {
        return ALLOW;
    };
    // SAFETY: a per-CPU slot; a cgroup program runs with migration
    // disabled, so only this CPU touches it meanwhile.
    let global = unsafe { &mut *global };
    // Only the destination is the host's choice; the source is its own.
    let mut config = CONFIG.get(0).copied().unwrap_or_default();
    config.match_mode = MATCH_DST;
    let outcome = decide(ctx, pkt, 0, global, &config, HOOK_CGROUP);
    if account(global, outcome, 0) {
        REFUSE
    } else {
        ALLOW
    }
}
