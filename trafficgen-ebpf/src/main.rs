//! The live-frames traffic generator used by `cargo xtask bench live`.
//!
//! Userspace runs this program with `BPF_PROG_RUN` and
//! `BPF_F_TEST_XDP_LIVE_FRAMES` on an IPv4/UDP template frame; the kernel
//! turns its `XDP_TX` into a transmit out of the sending veth, the way
//! `xdp-trafficgen` works. Each frame leaves with its source address drawn
//! at random from `SOURCES`, so the filter on the far side looks up many
//! different addresses instead of one that stays in cache.
//!
//! On the host this file compiles to an empty binary, so workspace-wide
//! `cargo check` and `clippy` stay green.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod program {
    use aya_ebpf::{
        bindings::xdp_action,
        helpers::bpf_get_prandom_u32,
        macros::{map, xdp},
        maps::Array,
        programs::XdpContext,
    };

    /// Source addresses in network byte order. Userspace sizes it with
    /// `set_max_entries` before loading and fills every slot.
    #[map]
    static SOURCES: Array<u32> = Array::with_max_entries(1, 0);

    /// Offsets in an untagged Ethernet + IPv4 frame.
    const IP_CSUM: usize = 14 + 10;
    const IP_SRC: usize = 14 + 12;

    #[xdp]
    pub fn trafficgen(ctx: XdpContext) -> u32 {
        let start = ctx.data();
        if start + IP_SRC + 4 > ctx.data_end() {
            return xdp_action::XDP_ABORTED;
        }
        let n = SOURCES_LEN.get(0).copied().unwrap_or(0);
        if n == 0 {
            return xdp_action::XDP_ABORTED;
        }
        // SAFETY: a helper without arguments or preconditions.
        let i = unsafe { bpf_get_prandom_u32() } % n;
        let Some(&new) = SOURCES.get(i) else {
            return xdp_action::XDP_ABORTED;
        };
        let src = (start + IP_SRC) as *mut u32;
        let csum = (start + IP_CSUM) as *mut u16;
        // SAFETY: both fields lie inside the bounds checked above.
        unsafe {
            let old = src.read_unaligned();
            src.write_unaligned(new);
            // RFC 1624 incremental update: HC' = ~(~HC + ~m + m'). The
            // one's-complement sum is byte-order independent, so the
            // big-endian fields can be summed as loaded.
            let mut sum = u32::from(!csum.read_unaligned())
                + u32::from(!(old as u16))
                + u32::from(!((old >> 16) as u16))
                + (new & 0xffff)
                + (new >> 16);
            sum = (sum & 0xffff) + (sum >> 16);
            sum = (sum & 0xffff) + (sum >> 16);
            csum.write_unaligned(!(sum as u16));
        }
        xdp_action::XDP_TX
    }

    /// How many `SOURCES` slots are filled.
    #[map]
    static SOURCES_LEN: Array<u32> = Array::with_max_entries(1, 0);

    #[unsafe(link_section = "license")]
    #[unsafe(no_mangle)]
    static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

    #[panic_handler]
    fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
        loop {}
    }
}

#[cfg(not(target_arch = "bpf"))]
fn main() {}
