//! Parse, look up, count, decide.
//!
//! Per packet: one `CONFIG` and one `GLOBAL` lookup, then per matched
//! address (source first, then destination) the verdict. For IPv4 in table
//! mode (the default) that is the compiled table: one `TABLE_V4` slot load
//! and, for a /16 that holds entries, a bounded binary search of its range
//! chunk, whose result already names the entry. IPv6 in table mode: a
//! probe of `EXACT_V6` (single addresses), and if that misses the IPv6
//! table over the upper 64 bits, which sends the rare /64s it does not
//! represent to the tries. Otherwise (trie mode) a probe of the exact map
//! of its family and, if that misses, a block-trie lookup; the allow trie
//! only after a block hit. A blocked
//! packet adds to its entry's counters, `ENTRY_COUNTERS[id]` (atomically;
//! one cache line per entry). A single-address
//! entry is its own per-address counter and event limiter; a hit on a wider
//! entry also counts per address (`ADDR_HITS`, per-CPU slots with no
//! inserts) and, for an event,
//! the shared limiter (`EVENT_RATE`). At most one ring-buffer event per
//! address per interval.
//!
//! Live traffic from many addresses is bound by cache misses, not by
//! instructions: every map touched per packet is a few more misses, which
//! is why the table is two small arrays, why a table hit needs no trie or
//! hash to find its counters, and why single addresses skip `ADDR_HITS`.

use core::ffi::c_void;

use aya_ebpf::{
    EbpfContext,
    bindings::__sk_buff,
    bindings::{BPF_ANY, xdp_action},
    helpers::{bpf_ktime_get_coarse_ns, bpf_map_lookup_elem},
    macros::{classifier, map, xdp},
    maps::{
        Array, HashMap, LruHashMap, PerCpuArray, RingBuf,
        lpm_trie::{Key, LpmTrie},
    },
    programs::{TcContext, XdpContext},
};
use blocklist_ebpf::{
    ACTION_DROP, ACTION_MONITOR, ALLOW_MAX_ENTRIES, BLOCK_V4_MAX_ENTRIES, BLOCK_V6_MAX_ENTRIES,
    CHUNK_SEARCH_STEPS, CHUNK_V6_SEARCH_STEPS, Config, DIRECTION_DST, DIRECTION_EGRESS,
    DIRECTION_SRC, DropEvent, EMPTY_V4_WORDS, EMPTY16_V4_WORDS, EMPTY22_V4_WORDS, ENTRIES_MAX,
    ENTRY_FLAG_MONITOR, EVENT_DEFAULT_INTERVAL_MS, EVENT_INTERVAL_OFF, EVENT_RATE_MAX_ENTRIES,
    EVENTS_RING_BYTES, EXACT_MAP_FLAGS, EXACT_V4_MAX_ENTRIES, EXACT_V6_MAX_ENTRIES, EntryCounters,
    EntryValue, FAMILY_V4, FAMILY_V6, GlobalCounters, HIT_IDS_WORDS, HOOK_CGROUP, HOOK_TC_EGRESS,
    HOOK_TC_INGRESS, HOOK_XDP, HOOKS, IpCounters, IpKey, LOOKUP_TRIE, MATCH_DST, MATCH_SRC,
    RANGES_V4_RECORDS, RANGES_V6_RECORDS, RESULT_ALLOWED, RESULT_BLOCKED, RESULT_DEEP,
    RESULT_ID_MASK, RESULT_LEN_MASK, RESULT_LEN_SHIFT, RESULT_MONITOR, SLOT_CHUNK, TABLE_V4_SLOTS,
    TABLE_V6_SLOTS, TableMeta, empty_v4_bit, empty16_v4_bit, empty22_v4_bit, v4_trie_data,
};
use blocklist_ebpf::{
    ADDR_SLOTS_DEFAULT, ADDR_VOTES_MAX, AddrHits, EVENT_BUDGET_DEFAULT, EventBudget,
};

/// The agent maps the table's arrays into its memory and updates them
/// with plain stores (one aligned store switches a slot).
const BPF_F_MMAPABLE: u32 = 1 << 10;
/// `bpf_ringbuf_submit` flag: do not wake the consumer for this record.
const BPF_RB_NO_WAKEUP: u64 = 1;

#[map]
static BLOCK_V4: LpmTrie<[u8; 8], EntryValue> = LpmTrie::pinned(BLOCK_V4_MAX_ENTRIES, 0);
#[map]
static BLOCK_V6: LpmTrie<[u8; 16], EntryValue> = LpmTrie::pinned(BLOCK_V6_MAX_ENTRIES, 0);
#[map]
static EXACT_V4: HashMap<[u8; 4], EntryValue> =
    HashMap::pinned(EXACT_V4_MAX_ENTRIES, EXACT_MAP_FLAGS);
#[map]
static EXACT_V6: HashMap<[u8; 16], EntryValue> =
    HashMap::pinned(EXACT_V6_MAX_ENTRIES, EXACT_MAP_FLAGS);
#[map]
static ALLOW_V4: LpmTrie<[u8; 8], EntryValue> = LpmTrie::pinned(ALLOW_MAX_ENTRIES, 0);
#[map]
static ALLOW_V6: LpmTrie<[u8; 16], EntryValue> = LpmTrie::pinned(ALLOW_MAX_ENTRIES, 0);
#[map]
static ADDR_HITS: PerCpuArray<AddrHits> = PerCpuArray::pinned(ADDR_SLOTS_DEFAULT, 0);
#[map]
static GLOBAL: PerCpuArray<GlobalCounters> = PerCpuArray::pinned(1, 0);
#[map]
pub(crate) static CONFIG: Array<Config> = Array::pinned(1, 0);
#[map]
static EVENTS: RingBuf = RingBuf::pinned(EVENTS_RING_BYTES, 0);
#[map]
static EVENT_RATE: LruHashMap<IpKey, u64> = LruHashMap::pinned(EVENT_RATE_MAX_ENTRIES, 0);
#[map]
static TABLE_V4: Array<u64> = Array::pinned(TABLE_V4_SLOTS, BPF_F_MMAPABLE);
#[map]
static RANGES_V4: Array<u64> = Array::pinned(RANGES_V4_RECORDS, BPF_F_MMAPABLE);
#[map]
static EMPTY_V4: Array<u64> = Array::pinned(EMPTY_V4_WORDS, BPF_F_MMAPABLE);
#[map]
static EMPTY16_V4: Array<u64> = Array::pinned(EMPTY16_V4_WORDS, BPF_F_MMAPABLE);
#[map]
static EMPTY22_V4: Array<u64> = Array::pinned(EMPTY22_V4_WORDS, BPF_F_MMAPABLE);
#[map]
static TABLE_V6: Array<u64> = Array::pinned(TABLE_V6_SLOTS, BPF_F_MMAPABLE);
#[map]
static RANGES_V6: Array<u64> = Array::pinned(RANGES_V6_RECORDS * 2, BPF_F_MMAPABLE);
/// Only the agent reads and writes it; declared here so that it is created
/// and pinned with the others.
#[map]
static TABLE_META: Array<TableMeta> = Array::pinned(1, 0);
#[map]
static EVENT_BUDGET: PerCpuArray<EventBudget> = PerCpuArray::pinned(1, 0);
#[map]
static ENTRY_COUNTERS: Array<EntryCounters> = Array::pinned(ENTRIES_MAX, 0);
#[map]
static HIT_IDS: Array<u64> = Array::pinned(HIT_IDS_WORDS, BPF_F_MMAPABLE);
#[map]
pub(crate) static HOOK_GLOBAL: PerCpuArray<GlobalCounters> = PerCpuArray::pinned(HOOKS, 0);

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const VLAN_HLEN: usize = 4;
const IPV4_HLEN: usize = 20;
const IPV6_HLEN: usize = 40;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

/// The main program: drop (or count) packets whose source or destination is
/// blocked.
#[xdp]
pub fn blocklist(ctx: XdpContext) -> u32 {
    let Some(global) = GLOBAL.get_ptr_mut(0) else {
        return xdp_action::XDP_PASS;
    };
    // SAFETY: a per-CPU array slot is only touched by this CPU while the
    // program runs (XDP is not preempted by itself).
    if filter(&ctx, unsafe { &mut *global }, HOOK_XDP) {
        xdp_action::XDP_DROP
    } else {
        xdp_action::XDP_PASS
    }
}

/// `TC_ACT_SHOT`: drop the frame.
const TC_ACT_SHOT: i32 = 2;
/// `TC_ACT_UNSPEC` (`TCX_NEXT`): no verdict, the next program or filter
/// decides, so other programs on the hook keep working.
const TC_ACT_UNSPEC: i32 = -1;

/// The ingress decision as a TC classifier (`attach --mode tc`).
#[classifier]
pub fn tc_ingress(ctx: TcContext) -> i32 {
    classify(&ctx, HOOK_TC_INGRESS)
}

/// The egress decision on frames leaving an interface: raw sockets, ICMP,
/// forwarded traffic, processes outside the hooked cgroup.
#[classifier]
pub fn tc_egress(ctx: TcContext) -> i32 {
    classify(&ctx, HOOK_TC_EGRESS)
}

#[inline(always)]
fn classify(ctx: &TcContext, hook: u8) -> i32 {
    // The headers must be in the linear part for direct access; they
    // nearly always are, and pulling costs only when they are not.
    let want = ctx.len().min(PULL_BYTES);
    if ((ctx.data_end() - ctx.data()) as u32) < want && ctx.pull_data(want).is_err() {
        return TC_ACT_UNSPEC;
    }
    let Some(global) = HOOK_GLOBAL.get_ptr_mut(hook as u32) else {
        return TC_ACT_UNSPEC;
    };
    // SAFETY: per-CPU, as in the XDP program.
    if filter(ctx, unsafe { &mut *global }, hook) {
        TC_ACT_SHOT
    } else {
        TC_ACT_UNSPEC
    }
}

/// Bytes the TC classifiers want in the linear part of an skb: the longest
/// header chain `parse` reads (two VLAN tags, IPv6, ports).
const PULL_BYTES: u32 = 128;

/// Where a decision is made: what the counters and events need to know
/// beyond the packet.
pub(crate) trait Origin: EbpfContext {
    /// The interface the frame arrived on or leaves by (0: none).
    fn ifindex(&self) -> u32;
    /// Fills in the process that caused the event, where one is known.
    #[inline(always)]
    fn fill_task(&self, _e: *mut DropEvent) {}
}

/// A frame in memory, XDP's or TC's.
pub(crate) trait Frame: Origin {
    fn data(&self) -> usize;
    fn data_end(&self) -> usize;
}

impl Origin for XdpContext {
    #[inline(always)]
    fn ifindex(&self) -> u32 {
        self.ingress_ifindex() as u32
    }
}

impl Frame for XdpContext {
    #[inline(always)]
    fn data(&self) -> usize {
        XdpContext::data(self)
    }
    #[inline(always)]
    fn data_end(&self) -> usize {
        XdpContext::data_end(self)
    }
}

impl Origin for TcContext {
    #[inline(always)]
    fn ifindex(&self) -> u32 {
        // SAFETY: the context of a sched_cls program is its __sk_buff.
        unsafe { (*(self.as_ptr() as *const __sk_buff)).ifindex }
    }
}

impl Frame for TcContext {
    #[inline(always)]
    fn data(&self) -> usize {
        TcContext::data(self)
    }
    #[inline(always)]
    fn data_end(&self) -> usize {
        TcContext::data_end(self)
    }
}

/// Parses, decides and counts one frame; true: drop it.
#[inline(always)]
fn filter<F: Frame>(ctx: &F, global: &mut GlobalCounters, hook: u8) -> bool {
    let len = (ctx.data_end() - ctx.data()) as u64;
    let mut slot = core::mem::MaybeUninit::<Packet>::uninit();
    let pkt = Packet::zeroed_in(&mut slot);
    let outcome = match parse(ctx, pkt) {
        PARSED_IP => {
            let config = CONFIG.get(0).copied().unwrap_or_default();
            decide(ctx, pkt, len, global, &config, hook)
        }
        PARSED_NOT_IP => Outcome::NotIp,
        _ => Outcome::Malformed,
    };
    account(global, outcome, len)
}

/// Adds a frame's outcome to its hook's counters, the one place they are
/// counted (`seen` and `passed` included); true: drop.
#[inline(always)]
pub(crate) fn account(global: &mut GlobalCounters, outcome: Outcome, len: u64) -> bool {
    global.seen_packets += 1;
    global.seen_bytes += len;
    match outcome {
        Outcome::Dropped(family) => {
            if family == FAMILY_V4 {
                global.dropped_v4_packets += 1;
                global.dropped_v4_bytes += len;
            } else {
                global.dropped_v6_packets += 1;
                global.dropped_v6_bytes += len;
            }
            return true;
        }
        Outcome::Monitored => {
            global.monitored_packets += 1;
            global.monitored_bytes += len;
        }
        Outcome::Allowlisted => global.allowlisted_packets += 1,
        Outcome::NotIp => global.not_ip_packets += 1,
        Outcome::Malformed => global.malformed_packets += 1,
        Outcome::Passed => {}
    }
    global.passed_packets += 1;
    global.passed_bytes += len;
    false
}

/// The cost floor for benchmarks: passes everything, touches nothing.
#[xdp]
pub fn xdp_pass_floor(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// The TC cost floor for benchmarks: no verdict, touches nothing.
#[classifier]
pub fn tc_pass_floor(_ctx: TcContext) -> i32 {
    TC_ACT_UNSPEC
}

/// The live ceiling for benchmarks: drops everything at once, so the
/// bench can tell the cost of the filter from the cost of the setup.
#[xdp]
pub fn xdp_drop_floor(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_DROP
}

/// What became of a frame; every outcome but `Dropped` passes it.
pub(crate) enum Outcome {
    /// Nothing listed matched.
    Passed,
    /// Neither IPv4 nor IPv6.
    NotIp,
    /// Too short for the headers it announces.
    Malformed,
    /// A block entry matched, an allow entry overrode it.
    Allowlisted,
    /// A monitor-only entry matched, or the action is `monitor`.
    Monitored,
    /// Dropped; the family of the blocked address.
    Dropped(u8),
}

/// A blocked address and what the counters need to know about it.
struct Hit {
    key: IpKey,
    /// [`DIRECTION_SRC`] or [`DIRECTION_DST`]: which address matched (on
    /// egress `key.direction` is [`DIRECTION_EGRESS`] either way).
    address: u8,
    hook: u8,
    prefix_len: u32,
    len: u64,
    now: u64,
    /// Minimum gap between two events for one address; 0: events off.
    interval_ns: u64,
    /// The entry is a single address whose own limiter already decided.
    exact: bool,
    /// [`ACTION_DROP`] or [`ACTION_MONITOR`]: what happens to the packet.
    action: u8,
}

/// The parsed headers. Addresses are 16 bytes each, IPv4 (and the IPv4 of
/// a v4-mapped IPv6 address) in the first four, with the family beside:
/// a plain layout the verifier tracks easily, no enums over packet data.
#[repr(C, align(8))]
pub(crate) struct Packet {
    pub(crate) src: [u8; 16],
    pub(crate) dst: [u8; 16],
    /// Trie family of each address (v4-mapped IPv6 counts as IPv4).
    pub(crate) src_family: u8,
    pub(crate) dst_family: u8,
    /// Family of the IP header itself.
    pub(crate) family: u8,
    pub(crate) protocol: u8,
    pub(crate) src_port: u16,
    pub(crate) dst_port: u16,
}

impl Packet {
    /// Zeroes `slot` in place, in five 8-byte stores, and hands it out: a
    /// struct literal, or a zeroed value moved into place, compiles to a
    /// call of the byte-at-a-time `memset` (160 instructions a packet).
    #[inline(always)]
    pub(crate) fn zeroed_in(slot: &mut core::mem::MaybeUninit<Packet>) -> &mut Packet {
        let words = slot.as_mut_ptr().cast::<u64>();
        // SAFETY: Packet is 40 bytes, 8-byte aligned, and every field is
        // an integer (all zeros is a valid value); volatile keeps LLVM
        // from merging the stores back into a memset call.
        unsafe {
            for i in 0..size_of::<Packet>() / 8 {
                core::ptr::write_volatile(words.add(i), 0);
            }
            slot.assume_init_mut()
        }
    }
}

const _: () = assert!(size_of::<Packet>() == 40);

const PARSED_IP: u32 = 0;
const PARSED_NOT_IP: u32 = 1;
const PARSED_MALFORMED: u32 = 2;

#[inline(always)]
fn ptr_at<T, F: Frame>(ctx: &F, offset: usize) -> Option<*const T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *const T)
}

#[inline(always)]
fn read_be16<F: Frame>(ctx: &F, offset: usize) -> Option<u16> {
    let p = ptr_at::<u16, F>(ctx, offset)?;
    // SAFETY: bounds checked by ptr_at; x86's JIT and the verifier accept
    // the unaligned 16-bit load (frames are 2-byte aligned after Ethernet).
    Some(u16::from_be(unsafe { core::ptr::read(p) }))
}

/// The fixed IPv4 header, read with word loads (a byte array would be
/// read, and copied, a byte at a time).
#[repr(C)]
struct Ipv4Hdr {
    version_ihl: u8,
    _tos: u8,
    _total_len: u16,
    _id: u16,
    frag: u16,
    _ttl: u8,
    protocol: u8,
    _check: u16,
    src: u32,
    dst: u32,
}

/// The fixed IPv6 header, likewise.
#[repr(C)]
struct Ipv6Hdr {
    version_class_flow: u32,
    _payload_len: u16,
    next_header: u8,
    _hop_limit: u8,
    src: [u32; 4],
    dst: [u32; 4],
}

#[inline(always)]
fn parse<F: Frame>(ctx: &F, pkt: &mut Packet) -> u32 {
    let Some(mut ethertype) = read_be16(ctx, 12) else {
        return PARSED_MALFORMED;
    };
    let mut off = ETH_HLEN;
    // Up to two VLAN tags (802.1ad outer, 802.1Q inner, or two 802.1Q).
    for _ in 0..2 {
        if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
            let Some(inner) = read_be16(ctx, off + 2) else {
                return PARSED_MALFORMED;
            };
            ethertype = inner;
            off += VLAN_HLEN;
        }
    }
    match ethertype {
        ETH_P_IP => parse_v4(ctx, off, pkt),
        ETH_P_IPV6 => parse_v6(ctx, off, pkt),
        _ => PARSED_NOT_IP,
    }
}

/// Stores a 4-byte address word at `dst[4 * i..]` (the packet struct is
/// 8-byte aligned, so these are aligned stores).
#[inline(always)]
fn put_word(dst: &mut [u8; 16], i: usize, w: u32) {
    // SAFETY: i < 4, so the 4 bytes are inside `dst`, which sits at an
    // 8-byte aligned offset of `Packet`.
    unsafe { core::ptr::write(dst.as_mut_ptr().add(4 * i).cast::<u32>(), w) }
}

#[inline(always)]
fn parse_v4<F: Frame>(ctx: &F, off: usize, pkt: &mut Packet) -> u32 {
    let Some(h) = ptr_at::<Ipv4Hdr, F>(ctx, off) else {
        return PARSED_MALFORMED;
    };
    // SAFETY: bounds checked by ptr_at; the fields are read with (possibly
    // unaligned) word loads, which x86's JIT and verifier accept.
    let h = unsafe { &*h };
    let ihl = (h.version_ihl & 0x0f) as usize * 4;
    if h.version_ihl >> 4 != 4 || ihl < IPV4_HLEN {
        return PARSED_MALFORMED;
    }
    put_word(&mut pkt.src, 0, h.src);
    put_word(&mut pkt.dst, 0, h.dst);
    pkt.src_family = FAMILY_V4;
    pkt.dst_family = FAMILY_V4;
    pkt.family = FAMILY_V4;
    pkt.protocol = h.protocol;
    if u16::from_be(h.frag) & 0x1fff == 0 {
        ports(ctx, off + ihl, pkt);
    }
    PARSED_IP
}

#[inline(always)]
fn parse_v6<F: Frame>(ctx: &F, off: usize, pkt: &mut Packet) -> u32 {
    let Some(h) = ptr_at::<Ipv6Hdr, F>(ctx, off) else {
        return PARSED_MALFORMED;
    };
    // SAFETY: as in parse_v4.
    let h = unsafe { &*h };
    if (h.version_class_flow.to_ne_bytes()[0]) >> 4 != 6 {
        return PARSED_MALFORMED;
    }
    pkt.family = FAMILY_V6;
    pkt.protocol = h.next_header;
    pkt.src_family = copy_v6(&h.src, &mut pkt.src);
    pkt.dst_family = copy_v6(&h.dst, &mut pkt.dst);
    ports(ctx, off + IPV6_HLEN, pkt);
    PARSED_IP
}

/// `::ffff:0:0/96` as the first three words of an address in memory.
const V4_MAPPED_WORD2: u32 = u32::from_ne_bytes([0, 0, 0xff, 0xff]);

/// Copies an IPv6 address; `::ffff:a.b.c.d` is an IPv4 address and is
/// looked up as IPv4, so it is stored as IPv4.
#[inline(always)]
fn copy_v6(src: &[u32; 4], dst: &mut [u8; 16]) -> u8 {
    if src[0] == 0 && src[1] == 0 && src[2] == V4_MAPPED_WORD2 {
        put_word(dst, 0, src[3]);
        FAMILY_V4
    } else {
        for (i, w) in src.iter().enumerate() {
            put_word(dst, i, *w);
        }
        FAMILY_V6
    }
}

#[inline(always)]
fn ports<F: Frame>(ctx: &F, l4: usize, pkt: &mut Packet) {
    if pkt.protocol != IPPROTO_TCP && pkt.protocol != IPPROTO_UDP {
        return;
    }
    // Bounded for the verifier: no header chain is this long.
    if l4 > 128 {
        return;
    }
    if let Some(p) = ptr_at::<[u16; 2], F>(ctx, l4) {
        // SAFETY: bounds checked by ptr_at.
        let p = unsafe { core::ptr::read(p) };
        pkt.src_port = u16::from_be(p[0]);
        pkt.dst_port = u16::from_be(p[1]);
    }
}

/// Outcome of looking one address up.
pub(crate) enum Lookup {
    Miss,
    Allowed,
    /// Prefix length, for a single-address entry whether its own limiter
    /// says an event is due, and whether the entry only monitors.
    Blocked(u32, Exact, bool),
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exact {
    /// A trie entry: per-address counting and event limits go through
    /// `IP_HITS` and `EVENT_RATE`.
    No,
    /// A single-address entry, already counted; no event due.
    Quiet,
    /// A single-address entry, already counted; an event is due.
    Event,
}

const LOOKUP_MISS: u64 = 0;
const LOOKUP_ALLOWED: u64 = 1;
const LOOKUP_BLOCKED: u64 = 2;
/// Flag: the entry is a single address (from an exact map).
const LOOKUP_EXACT: u64 = 1 << 8;
/// Flag: ... and its own limiter says an event is due.
const LOOKUP_EVENT: u64 = 1 << 9;
/// Flag: the entry only monitors ([`ENTRY_FLAG_MONITOR`]).
const LOOKUP_MONITOR: u64 = 1 << 10;

/// What a lookup needs to count a hit in the entry it finds, and the time
/// of that hit, which it hands back so the rest of the drop path need not
/// read the clock again.
pub(crate) struct Probe {
    /// Frame length.
    pub(crate) len: u64,
    /// Minimum gap between two events for one address; 0: events off.
    pub(crate) interval_ns: u64,
    /// `bpf_ktime_get_coarse_ns()` of the hit (set by a blocking lookup).
    pub(crate) now: u64,
    /// [`DIRECTION_SRC`] or [`DIRECTION_DST`]: which address is looked up.
    pub(crate) direction: u8,
    /// Decide IPv4 with the compiled table.
    pub(crate) table: bool,
    /// The entry this packet was already counted in (0: none), so that a
    /// destination in the same monitor-only entry as the source does not
    /// count the packet twice.
    pub(crate) counted: u32,
}

#[inline(always)]
pub(crate) fn lookup(addr: &[u8; 16], family: u8, probe: &mut Probe) -> Lookup {
    let r = lookup_raw(addr, family, probe);
    let exact = match r & (LOOKUP_EXACT | LOOKUP_EVENT) {
        0 => Exact::No,
        LOOKUP_EXACT => Exact::Quiet,
        _ => Exact::Event,
    };
    match r & 0xff {
        LOOKUP_BLOCKED => Lookup::Blocked((r >> 32) as u32, exact, r & LOOKUP_MONITOR != 0),
        LOOKUP_ALLOWED => Lookup::Allowed,
        _ => Lookup::Miss,
    }
}

/// The trie lookups, in a frame of their own (the keys are 20 bytes each).
/// A blocked address is counted in the matching entry here, while its
/// value is at hand. Returns a scalar so the result travels in a register:
/// the kind in the low byte, `LOOKUP_EXACT`/`LOOKUP_EVENT` above it, the
/// matching prefix length in the high half.
#[inline(never)]
fn lookup_raw(addr: &[u8; 16], family: u8, probe: &mut Probe) -> u64 {
    // The exact maps first: single addresses are most entries, and a hash
    // probe costs far fewer cache misses than a trie walk.
    let (id, prefix_len) = if family == FAMILY_V4 && probe.table {
        // SAFETY: `addr` is 4-byte aligned inside `Packet`.
        let word = unsafe { core::ptr::read(addr.as_ptr().cast::<u32>()) };
        match table_verdict(table_v4(u32::from_be(word))) {
            Ok(hit) => hit,
            Err(r) => return r,
        }
    } else {
        let (value, allowed) = if family == FAMILY_V4 {
            let bytes = [addr[0], addr[1], addr[2], addr[3]];
            let key = Key::new(32, v4_trie_data(bytes));
            let v = match EXACT_V4.get_ptr(&bytes) {
                Some(v) => v,
                None => match lookup_ptr(&BLOCK_V4, &key) {
                    Some(v) => v,
                    None => return LOOKUP_MISS,
                },
            };
            (v, ALLOW_V4.get(&key).is_some())
        } else {
            let key = Key::new(128, *addr);
            let v = match EXACT_V6.get_ptr(addr) {
                Some(v) => v,
                None => {
                    // The table holds every entry but the single addresses
                    // just probed; it sends what it cannot represent to the
                    // tries.
                    if probe.table {
                        let r = table_v6(upper64(addr));
                        if r != RESULT_DEEP {
                            match table_verdict(r) {
                                Ok((id, len)) => return count_hit(id, len, 128, probe),
                                Err(r) => return r,
                            }
                        }
                    }
                    match lookup_ptr(&BLOCK_V6, &key) {
                        Some(v) => v,
                        None => return LOOKUP_MISS,
                    }
                }
            };
            (v, ALLOW_V6.get(&key).is_some())
        };
        if allowed {
            return LOOKUP_ALLOWED;
        }
        // SAFETY: `value` came from a successful map lookup and stays valid
        // for this program run (RCU).
        let (id, flags, len) = unsafe { ((*value).id, (*value).flags, (*value).prefix_len) };
        // The table's encoding: the monitor flag rides with the id.
        let monitor = if flags & ENTRY_FLAG_MONITOR != 0 {
            RESULT_MONITOR
        } else {
            0
        };
        (id | monitor, len)
    };
    let host = if family == FAMILY_V4 { 32 } else { 128 };
    count_hit(id, prefix_len, host, probe)
}

/// A table result as a blocked entry's id (with [`RESULT_MONITOR`] when
/// the entry only monitors) and prefix length, or the lookup's answer when
/// nothing is blocked. The table already applied the allow entries, and
/// names the entry: nothing else to look up.
#[inline(always)]
fn table_verdict(r: u32) -> Result<(u32, u32), u64> {
    if r & RESULT_BLOCKED == 0 {
        return Err(if r & RESULT_ALLOWED != 0 {
            LOOKUP_ALLOWED
        } else {
            LOOKUP_MISS
        });
    }
    Ok((
        r & (RESULT_ID_MASK | RESULT_MONITOR),
        (r >> RESULT_LEN_SHIFT) & RESULT_LEN_MASK,
    ))
}

/// The upper 64 bits of an IPv6 address, host byte order.
#[inline(always)]
fn upper64(addr: &[u8; 16]) -> u64 {
    // SAFETY: `addr` is 4-byte aligned inside `Packet`; two u32 reads.
    let (hi, lo) = unsafe {
        (
            core::ptr::read(addr.as_ptr().cast::<u32>()),
            core::ptr::read(addr.as_ptr().add(4).cast::<u32>()),
        )
    };
    ((u32::from_be(hi) as u64) << 32) | u32::from_be(lo) as u64
}

/// Counts a hit on entry `id` (prefix length `prefix_len`, `host` the
/// family's full length; `id` may carry [`RESULT_MONITOR`]) and returns
/// the lookup's answer.
#[inline(always)]
fn count_hit(tagged: u32, prefix_len: u32, host: u32, probe: &mut Probe) -> u64 {
    let exact = prefix_len == host;
    let id = tagged & RESULT_ID_MASK;
    let monitor = if tagged & RESULT_MONITOR != 0 {
        LOOKUP_MONITOR
    } else {
        0
    };
    let blocked = LOOKUP_BLOCKED | monitor | ((prefix_len as u64) << 32);
    // Id 0, or one past the counters: an entry without counters (a table
    // written by a newer agent, say). Still blocked; nothing to count in,
    // and no event.
    let Some(counters) = (if id == 0 {
        None
    } else {
        ENTRY_COUNTERS.get_ptr_mut(id)
    }) else {
        return blocked | LOOKUP_EXACT;
    };
    // Both addresses of a packet in one monitor-only entry: counted once.
    if id == probe.counted {
        return blocked | if exact { LOOKUP_EXACT } else { 0 };
    }
    probe.counted = id;
    // SAFETY: bpf_ktime_get_coarse_ns has no preconditions; the coarse
    // clock is a memory read, not a clock-source read (kvm-clock in a VM).
    probe.now = unsafe { bpf_ktime_get_coarse_ns() };
    let event_due = count_entry(id, counters, probe, exact);
    let flags = match (exact, event_due) {
        (false, _) => 0,
        (true, false) => LOOKUP_EXACT,
        (true, true) => LOOKUP_EXACT | LOOKUP_EVENT,
    };
    blocked | flags
}

/// A chunk's binary search, unrolled to one step per token after the `;`:
/// finds the last record of `n` from `base` for which `probe(mid)` (the
/// record at `mid` starts at or before the address) is `Some(true)`, and
/// returns `miss` from the caller when a probe is out of the map. Only
/// `base`, `n`, the key and `mid` stay live across each lookup: BPF has
/// four callee-saved registers, and a loop counter or the half step kept
/// too are spilled and reloaded on every step (about a quarter of a
/// step's instructions).
macro_rules! chunk_search {
    ($base:ident, $n:ident, $miss:expr, |$mid:ident| $probe:expr; $($step:tt)*) => {
        $(
            let _ = $step;
            if $n > 1 {
                let $mid = $base + ($n >> 1);
                let Some(at_or_before) = $probe else {
                    return $miss;
                };
                if at_or_before {
                    $base = $mid;
                }
                // n - n / 2, from `n` alone (unread after the last step).
                #[allow(unused_assignments)]
                {
                    $n = ($n + 1) >> 1;
                }
            }
        )*
    };
}

/// The compiled table's result for an IPv4 address (host byte order):
/// 0 if the /16's `EMPTY16_V4` bit or the /22's `EMPTY22_V4` bit is set,
/// else the /16's slot, then, if it points at a chunk, the /24's
/// `EMPTY_V4` bit and a branch-free binary search for the last record
/// whose start is at most the low 16 bits.
#[inline(always)]
fn table_v4(addr: u32) -> u32 {
    // An address in a /16 that no entry overlaps is decided by a bit of
    // 8 KiB that stays in cache, without the slot's line: on a small list
    // that is most traffic. (Reading the /24 bit before the slot as well
    // saved a large list's misses that line, but cost hits more.)
    let (word, bit) = empty16_v4_bit(addr);
    if let Some(empty) = EMPTY16_V4.get(word) {
        if (*empty >> bit) & 1 != 0 {
            return 0;
        }
    }
    // On a large list nearly every /16 holds an entry, but most /22s
    // still hold none: a word of 512 KiB answers most misses there, where
    // the /24 bit's 2 MiB cost about 50 ns more.
    let (word, bit) = empty22_v4_bit(addr);
    if let Some(empty) = EMPTY22_V4.get(word) {
        if (*empty >> bit) & 1 != 0 {
            return 0;
        }
    }
    let Some(slot) = TABLE_V4.get_ptr(addr >> 16) else {
        return 0;
    };
    // One load: the record index and count must come from the same slot
    // value while the agent may switch it.
    // SAFETY: an array value, valid for the program run.
    let slot = unsafe { core::ptr::read_volatile(slot) };
    if slot & SLOT_CHUNK == 0 {
        return slot as u32;
    }
    // An address in a /24 that no entry overlaps needs no search.
    let (word, bit) = empty_v4_bit(addr);
    if let Some(empty) = EMPTY_V4.get(word) {
        if (*empty >> bit) & 1 != 0 {
            return 0;
        }
    }
    // 64-bit arithmetic throughout (BPF zero-extends every 32-bit result
    // again), and the record compared whole: a start at most `low` is a
    // record at most `low << 32 | u32::MAX`.
    let mut base = slot & 0xffff_ffff;
    let mut n = (slot >> 32) & 0x1_ffff;
    let key = (((addr & 0xffff) as u64) << 32) | 0xffff_ffff;
    const _: () = assert!(CHUNK_SEARCH_STEPS == 17);
    chunk_search!(
        base, n, 0, |mid| RANGES_V4.get(mid as u32).map(|r| *r <= key);
        1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17
    );
    match RANGES_V4.get(base as u32) {
        Some(r) => *r as u32,
        None => 0,
    }
}

/// The compiled IPv6 table's result for the upper 64 bits of an address
/// (host byte order), searched like [`table_v4`] over two-word records.
#[inline(always)]
fn table_v6(hi: u64) -> u32 {
    let Some(slot) = TABLE_V6.get_ptr((hi >> 48) as u32) else {
        return RESULT_DEEP;
    };
    // SAFETY: an array value, valid for the program run.
    let slot = unsafe { core::ptr::read_volatile(slot) };
    if slot & SLOT_CHUNK == 0 {
        return slot as u32;
    }
    let mut base = slot & 0xffff_ffff;
    let mut n = (slot >> 32) & 0x7_ffff;
    let low = hi & 0xffff_ffff_ffff;
    const _: () = assert!(CHUNK_V6_SEARCH_STEPS == 19);
    chunk_search!(
        base, n, RESULT_DEEP, |mid| RANGES_V6.get((mid * 2) as u32).map(|s| *s <= low);
        1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19
    );
    match RANGES_V6.get((base * 2 + 1) as u32) {
        Some(r) => *r as u32,
        None => RESULT_DEEP,
    }
}

/// `bpf_map_lookup_elem` on a trie, as a raw pointer (aya's
/// `LpmTrie::get` hands out a reference tied to the map).
#[inline(always)]
fn lookup_ptr<K>(trie: &LpmTrie<K, EntryValue>, key: &Key<K>) -> Option<*const EntryValue> {
    // SAFETY: `LpmTrie` is `repr(transparent)` over its map definition, the
    // pointer the helper expects; the key outlives the call.
    let p = unsafe {
        bpf_map_lookup_elem(
            trie as *const LpmTrie<K, EntryValue> as *mut c_void,
            key as *const Key<K> as *const c_void,
        )
    };
    if p.is_null() {
        None
    } else {
        Some(p as *const EntryValue)
    }
}

/// Adds one hit to a block entry's counters. Several CPUs may hit the same
/// entry, so the sums are atomic adds; the timestamps are plain stores (a
/// racing CPU can only make them a few nanoseconds off, or let one extra
/// event through). For a single-address entry, returns whether a drop
/// event is due (`probe.interval_ns` 0: events are off).
#[inline(always)]
fn count_entry(id: u32, v: *mut EntryCounters, probe: &Probe, exact: bool) -> bool {
    use core::intrinsics::{AtomicOrdering::Relaxed, atomic_xadd};
    let Probe {
        len,
        interval_ns,
        now,
        direction,
        ..
    } = *probe;
    // SAFETY: `v` points at an ENTRY_COUNTERS value, which the map owns
    // for as long as it exists; programs may write map values, and the
    // counters are only ever written here (atomically) or by the agent
    // when it gives the id to a new entry.
    unsafe {
        atomic_xadd::<u64, u64, { Relaxed }>(&raw mut (*v).packets, 1);
        // Egress hits add no bytes: a cgroup hook has none, and `bytes`
        // minus `dst_bytes` must stay the bytes from the source.
        if direction == DIRECTION_EGRESS {
            atomic_xadd::<u64, u64, { Relaxed }>(&raw mut (*v).egress_packets, 1);
        } else {
            atomic_xadd::<u64, u64, { Relaxed }>(&raw mut (*v).bytes, len);
            if direction == DIRECTION_DST {
                atomic_xadd::<u64, u64, { Relaxed }>(&raw mut (*v).dst_packets, 1);
                atomic_xadd::<u64, u64, { Relaxed }>(&raw mut (*v).dst_bytes, len);
            }
        }
        if (*v).first_seen_ns == 0 {
            (*v).first_seen_ns = now;
            mark_hit(id);
        }
        (*v).last_seen_ns = now;
        if !exact || interval_ns == 0 || now.wrapping_sub((*v).last_event_ns) < interval_ns {
            return false;
        }
        (*v).last_event_ns = now;
        true
    }
}

/// Marks entry `id` as hit in `HIT_IDS` (see the ABI note): one byte
/// store, only on the entry's first hit.
#[inline(always)]
fn mark_hit(id: u32) {
    if let Some(word) = HIT_IDS.get_ptr_mut(id >> 3) {
        // SAFETY: a byte inside an 8-byte array value, valid for the
        // program run; a byte store cannot tear a neighbour's mark.
        unsafe { core::ptr::write_volatile(word.cast::<u8>().add((id & 7) as usize), 1) };
    }
}

/// Looks the packet's addresses up (as `config.match_mode` says), counts
/// and reports a hit, and returns the outcome. On an egress hook every hit
/// counts as [`DIRECTION_EGRESS`].
#[inline(always)]
pub(crate) fn decide<O: Origin>(
    origin: &O,
    pkt: &Packet,
    len: u64,
    global: &mut GlobalCounters,
    config: &Config,
    hook: u8,
) -> Outcome {
    let interval_ns = match config.event_interval_ms {
        EVENT_INTERVAL_OFF => 0,
        0 => EVENT_DEFAULT_INTERVAL_MS as u64 * 1_000_000,
        ms => ms as u64 * 1_000_000,
    };
    let egress = hook == HOOK_TC_EGRESS || hook == HOOK_CGROUP;
    let (src_direction, dst_direction) = if egress {
        (DIRECTION_EGRESS, DIRECTION_EGRESS)
    } else {
        (DIRECTION_SRC, DIRECTION_DST)
    };
    let mut probe = Probe {
        len,
        interval_ns,
        now: 0,
        direction: src_direction,
        table: config.lookup != LOOKUP_TRIE,
        counted: 0,
    };
    let mut allowlisted = false;
    // (address, prefix_len, exact) of the first address a drop entry
    // blocks, and of the first a monitor-only entry matches: a monitored
    // source does not stop the destination from being looked up, since a
    // drop there must still drop.
    let mut hit = None;
    let mut watched = None;
    if config.match_mode != MATCH_DST {
        match lookup(&pkt.src, pkt.src_family, &mut probe) {
            Lookup::Blocked(plen, exact, false) => hit = Some((DIRECTION_SRC, plen, exact)),
            Lookup::Blocked(plen, exact, true) => watched = Some((DIRECTION_SRC, plen, exact)),
            Lookup::Allowed => allowlisted = true,
            Lookup::Miss => {}
        }
    }
    if hit.is_none() && config.match_mode != MATCH_SRC {
        probe.direction = dst_direction;
        match lookup(&pkt.dst, pkt.dst_family, &mut probe) {
            Lookup::Blocked(plen, exact, false) => hit = Some((DIRECTION_DST, plen, exact)),
            Lookup::Blocked(plen, exact, true) if watched.is_none() => {
                watched = Some((DIRECTION_DST, plen, exact))
            }
            Lookup::Allowed => allowlisted = true,
            Lookup::Blocked(..) | Lookup::Miss => {}
        }
    }
    let (monitor_entry, (address, prefix_len, exact)) = match (hit, watched) {
        (Some(h), _) => (false, h),
        (None, Some(w)) => (true, w),
        (None, None) if allowlisted => return Outcome::Allowlisted,
        (None, None) => return Outcome::Passed,
    };
    let monitor = monitor_entry || config.action == ACTION_MONITOR;

    let family = if address == DIRECTION_SRC {
        pkt.src_family
    } else {
        pkt.dst_family
    };
    // A single-address entry was counted, per address too, in the lookup
    // and keeps its own event limiter: with no event due there is nothing
    // left to do, and the `Hit` is not even built (copying the key costs
    // more than the rest of a quiet hit).
    if exact != Exact::Quiet {
        let (addr, direction) = if address == DIRECTION_SRC {
            (pkt.src, src_direction)
        } else {
            (pkt.dst, dst_direction)
        };
        let hit = Hit {
            key: IpKey {
                addr,
                family,
                direction,
                _pad: [0; 2],
            },
            address,
            hook,
            prefix_len,
            len,
            now: probe.now,
            interval_ns,
            exact: exact != Exact::No,
            action: if monitor {
                ACTION_MONITOR as u8
            } else {
                ACTION_DROP as u8
            },
        };
        #[cfg(feature = "debug-log")]
        aya_log_ebpf::debug!(
            origin,
            "blocklist: hit hook {} family {} direction {} prefix_len {} len {}",
            hook,
            family,
            direction,
            prefix_len,
            len
        );
        // Separate (not inlined) functions: each gets its own 512-byte
        // frame and they are siblings, so their stacks never add up. Only
        // trie and wide table hits need `ADDR_HITS`.
        let event = exact == Exact::Event || count_ip(&hit, config.addr_slots_mask);
        if event && within_budget(&hit, config, global) {
            emit_event(origin, pkt, &hit, global);
        }
    }

    if monitor {
        Outcome::Monitored
    } else {
        Outcome::Dropped(family)
    }
}

/// The `ADDR_HITS` set (a pair of slots, `index` and `index ^ 1`) of an
/// address and direction.
#[inline(always)]
fn addr_set(key: &IpKey, mask: u32) -> u32 {
    let w = key_words(key);
    let mut h = w[0]
        ^ w[1].rotate_left(7)
        ^ w[2].rotate_left(13)
        ^ w[3].rotate_left(19)
        ^ key.direction as u32;
    // murmur3's finaliser: every input bit reaches the low bits the mask
    // keeps, so neighbouring addresses do not share a set.
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h & mask
}

/// A key as its five 4-byte words: compared and hashed with word loads,
/// where its bytes would take twenty loads each.
#[inline(always)]
fn key_words(key: &IpKey) -> &[u32; 5] {
    // SAFETY: IpKey is repr(C, align(4)), 20 bytes of plain integers.
    unsafe { &*(key as *const IpKey).cast::<[u32; 5]>() }
}

/// Equality of two keys, word by word (BPF has no `memcmp`).
#[inline(always)]
fn same_key(a: &IpKey, b: &IpKey) -> bool {
    let (a, b) = (key_words(a), key_words(b));
    ((a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3]) | (a[4] ^ b[4])) == 0
}

/// Counts the hit per address in this CPU's `ADDR_HITS`. Returns true when
/// this CPU has sent no event for the address within `hit.interval_ns`
/// (0: events are off); the shared limiter in `emit_event` then has the
/// last word. An address that holds neither slot of its pair only takes a
/// vote from the weaker one (or its place, at no votes), so a flood of
/// one-off addresses inserts nothing and evicts nobody busy.
#[inline(never)]
fn count_ip(hit: &Hit, mask: u32) -> bool {
    let mask = if mask == 0 {
        ADDR_SLOTS_DEFAULT - 1
    } else {
        mask
    };
    let first = addr_set(&hit.key, mask) & !1;
    let (Some(a), Some(b)) = (
        ADDR_HITS.get_ptr_mut(first),
        ADDR_HITS.get_ptr_mut(first | 1),
    ) else {
        return false;
    };
    // SAFETY: per-CPU values, only this CPU writes them while it runs.
    let (a, b) = unsafe { (&mut *a, &mut *b) };
    let interval_ns = hit.interval_ns;
    let slot = if same_key(&a.key, &hit.key) {
        a
    } else if same_key(&b.key, &hit.key) {
        b
    } else {
        let weaker = if a.votes <= b.votes { a } else { b };
        if weaker.votes > 0 {
            weaker.votes -= 1;
            return false;
        }
        weaker.key = hit.key;
        weaker.votes = 1;
        weaker.counters = IpCounters {
            packets: 1,
            bytes: hit.len,
            first_seen_ns: hit.now,
            last_seen_ns: hit.now,
            prefix_len: hit.prefix_len,
            _pad: 0,
            last_event_ns: hit.now,
        };
        return interval_ns != 0;
    };
    if slot.votes < ADDR_VOTES_MAX {
        slot.votes += 1;
    }
    let c = &mut slot.counters;
    c.packets += 1;
    c.bytes += hit.len;
    c.last_seen_ns = hit.now;
    c.prefix_len = hit.prefix_len;
    if interval_ns == 0 || hit.now.wrapping_sub(c.last_event_ns) < interval_ns {
        return false;
    }
    c.last_event_ns = hit.now;
    true
}

/// This CPU's drop-event budget for the current second: checked before the
/// shared limiter and the ring buffer, so a spoofed flood's many new
/// addresses cost a per-CPU counter, not a map insert and a ring record
/// each.
#[inline(always)]
fn within_budget(hit: &Hit, config: &Config, global: &mut GlobalCounters) -> bool {
    let Some(b) = EVENT_BUDGET.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: per-CPU value, only this CPU writes it.
    let b = unsafe { &mut *b };
    if hit.now.wrapping_sub(b.window_start_ns) >= 1_000_000_000 {
        b.window_start_ns = hit.now;
        b.sent = 0;
    }
    let budget = match config.event_budget {
        0 => EVENT_BUDGET_DEFAULT,
        n => n,
    };
    if b.sent >= budget as u64 {
        global.events_suppressed += 1;
        return false;
    }
    b.sent += 1;
    true
}

#[inline(never)]
fn emit_event<O: Origin>(origin: &O, pkt: &Packet, hit: &Hit, global: &mut GlobalCounters) {
    if !hit.exact {
        // SAFETY: the value is a plain u64; a concurrent writer can only make
        // this check slightly stale, which the rate limit tolerates.
        if let Some(last) = unsafe { EVENT_RATE.get(&hit.key) } {
            if hit.now.wrapping_sub(*last) < hit.interval_ns {
                return;
            }
        }
        let _ = EVENT_RATE.insert(&hit.key, &hit.now, BPF_ANY as u64);
    }
    let Some(mut entry) = EVENTS.reserve::<DropEvent>(0) else {
        global.events_lost += 1;
        return;
    };
    // Fill the reserved record in place: building it on the stack first
    // would cost 80 bytes of a 512-byte frame.
    let e = entry.as_mut_ptr();
    // SAFETY: `e` points at a reserved, writable DropEvent in the ring.
    unsafe {
        (*e).ktime_ns = hit.now;
        (*e).src = as_in_header(&pkt.src, pkt.src_family, pkt.family);
        (*e).dst = as_in_header(&pkt.dst, pkt.dst_family, pkt.family);
        (*e).ifindex = origin.ifindex();
        (*e).bytes = hit.len as u32;
        (*e).prefix_len = hit.prefix_len;
        (*e).src_port = pkt.src_port;
        (*e).dst_port = pkt.dst_port;
        (*e).family = pkt.family;
        (*e).direction = hit.key.direction;
        (*e).protocol = pkt.protocol;
        (*e).action = hit.action;
        (*e).pid = 0;
        (*e).comm = [0; 16];
        (*e).cgroup_id = 0;
        (*e).hook = hit.hook;
        (*e).address = hit.address;
        (*e)._pad = [0; 6];
    }
    origin.fill_task(e);
    // No wakeup per record: the agent's reader polls the ring every 50 ms.
    entry.submit(BPF_RB_NO_WAKEUP);
    global.events_sent += 1;
}

/// The address as it appeared in the header: `::ffff:a.b.c.d` again for
/// an IPv4 address carried in an IPv6 header.
#[inline(always)]
fn as_in_header(a: &[u8; 16], family: u8, header_family: u8) -> [u8; 16] {
    if family == FAMILY_V4 && header_family == FAMILY_V6 {
        [
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a[0], a[1], a[2], a[3],
        ]
    } else {
        *a
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
