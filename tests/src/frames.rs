//! Crafted Ethernet frames for `BPF_PROG_TEST_RUN` verdict tests.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
/// 802.1Q tag protocol id.
pub const TPID_8021Q: u16 = 0x8100;
/// 802.1ad (QinQ outer) tag protocol id.
pub const TPID_8021AD: u16 = 0x88a8;

fn ethernet(ethertype: u16) -> Vec<u8> {
    let mut f = Vec::with_capacity(128);
    f.extend_from_slice(&DST_MAC);
    f.extend_from_slice(&SRC_MAC);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32)
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn udp(payload: usize) -> Vec<u8> {
    let len = (8 + payload) as u16;
    let mut u = Vec::new();
    u.extend_from_slice(&40000u16.to_be_bytes());
    u.extend_from_slice(&53u16.to_be_bytes());
    u.extend_from_slice(&len.to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.resize(len as usize, 0xab);
    u
}

/// An IPv4/UDP frame.
pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    let l4 = udp(18);
    let mut h = vec![0x45, 0, 0, 0, 0, 1, 0, 0, 64, 17, 0, 0];
    h[2..4].copy_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    let c = checksum(&h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    let mut f = ethernet(0x0800);
    f.extend_from_slice(&h);
    f.extend_from_slice(&l4);
    f
}

/// An IPv6/UDP frame.
pub fn ipv6(src: Ipv6Addr, dst: Ipv6Addr) -> Vec<u8> {
    let l4 = udp(18);
    let mut h = vec![0x60, 0, 0, 0];
    h.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    h.extend_from_slice(&[17, 64]);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    let mut f = ethernet(0x86dd);
    f.extend_from_slice(&h);
    f.extend_from_slice(&l4);
    f
}

/// An IP frame of the family of `src` (both addresses must match).
pub fn ip(src: IpAddr, dst: IpAddr) -> Vec<u8> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => ipv4(s, d),
        (IpAddr::V6(s), IpAddr::V6(d)) => ipv6(s, d),
        _ => panic!("mixed families"),
    }
}

/// Inserts VLAN tags after the MAC addresses, outermost first.
pub fn with_vlans(frame: &[u8], tpids: &[u16]) -> Vec<u8> {
    let mut f = frame[..12].to_vec();
    for (i, tpid) in tpids.iter().enumerate() {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&(100 + i as u16).to_be_bytes());
    }
    f.extend_from_slice(&frame[12..]);
    f
}

/// An ARP request.
pub fn arp() -> Vec<u8> {
    let mut f = ethernet(0x0806);
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&SRC_MAC);
    f.extend_from_slice(&[10, 0, 0, 2]);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&[10, 0, 0, 1]);
    f
}

/// The first `len` bytes of `frame`.
pub fn truncated(frame: &[u8], len: usize) -> Vec<u8> {
    frame[..len.min(frame.len())].to_vec()
}
