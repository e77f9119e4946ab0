//! The kernel/user ABI of xdp-blocklist.
//!
//! Everything the XDP program and the agent must agree on lives here, once:
//! map names, key and value layouts, counter records, the live configuration
//! and the drop-event record. The crate is `#![no_std]` and compiled for both
//! sides; with the `user` feature each type also implements [`aya::Pod`] so
//! the agent can read and write the pinned maps.
//!
//! # Maps
//!
//! | name          | type                 | key                  | value              |
//! |---------------|----------------------|----------------------|--------------------|
//! | `BLOCK_V4`    | LPM trie             | `Key<[u8; 8]>` (1)   | [`EntryValue`]     |
//! | `BLOCK_V6`    | LPM trie             | `Key<[u8; 16]>`      | [`EntryValue`]     |
//! | `EXACT_V4`    | hash                 | `[u8; 4]`            | [`EntryValue`]     |
//! | `EXACT_V6`    | hash                 | `[u8; 16]`           | [`EntryValue`]     |
//! | `ALLOW_V4`    | LPM trie             | `Key<[u8; 8]>` (1)   | [`EntryValue`]     |
//! | `ALLOW_V6`    | LPM trie             | `Key<[u8; 16]>`      | [`EntryValue`]     |
//! | `ADDR_HITS`   | per-CPU array (3)    | `u32` (slot)         | [`AddrHits`]       |
//! | `GLOBAL`      | per-CPU array (1)    | `u32` (0)            | [`GlobalCounters`] |
//! | `CONFIG`      | array (1)            | `u32` (0)            | [`Config`]         |
//! | `EVENTS`      | ring buffer          |                      | [`DropEvent`]      |
//! | `EVENT_RATE`  | LRU hash             | [`IpKey`]            | `u64` (ktime ns)   |
//! | `TABLE_V4`    | array, mmapable      | `u32` (top 16 bits)  | `u64` slot (2)     |
//! | `RANGES_V4`   | array, mmapable      | `u32` (record index) | `u64` range (2)    |
//! | `EMPTY_V4`    | array, mmapable      | `u32` (top 18 bits)  | `u64`: 64 /24 bits (2) |
//! | `EMPTY16_V4`  | array, mmapable      | `u32` (top 10 bits)  | `u64`: 64 /16 bits (2) |
//! | `EMPTY22_V4`  | array, mmapable      | `u32` (top 16 bits)  | `u64`: 64 /22 bits (2) |
//! | `TABLE_V6`    | array, mmapable      | `u32` (top 16 bits)  | `u64` slot (4)     |
//! | `RANGES_V6`   | array, mmapable      | `u32` (2 x record)   | `u64` start, result (4) |
//! | `TABLE_META`  | array (1)            | `u32` (0)            | [`TableMeta`]      |
//! | `ENTRY_COUNTERS` | array             | `u32` (entry id)     | [`EntryCounters`]  |
//! | `EVENT_BUDGET` | per-CPU array (1)   | `u32` (0)            | [`EventBudget`]    |
//! | `HIT_IDS`     | array, mmapable (5)  | `u32` (entry id / 8) | `u64`: 8 hit bytes |
//! | `HOOK_GLOBAL` | per-CPU array (6)    | `u32` (hook)         | [`GlobalCounters`] |
//!
//! LPM keys are a `u32` prefix length followed by the address in network
//! byte order, exactly as the kernel's `bpf_lpm_trie_key` expects. The
//! value carries the entry's own prefix length, so that the program can
//! name the prefix that matched (the kernel's lookup returns only the value),
//! and the entry's id: its hit counters are `ENTRY_COUNTERS[id]`, one
//! cache line per entry, found the same way whether the table or a trie
//! decided.
//!
//! (1) The IPv4 tries' key data is the address and four zero bytes
//! ([`v4_trie_data`]; prefix lengths stay 0..=32), a layout kept from when
//! the counters lived in the value and had to be 8-byte aligned.
//!
//! Block entries for single addresses (/32, /128) live in the `EXACT_*`
//! hash maps instead of the tries; the program looks there first. A trie
//! lookup walks about log2(n) nodes, each a cache miss once traffic comes
//! from many addresses, while a hash lookup costs one or two; most feed
//! entries are single addresses (Cilium's XDP prefilter splits the same way).
//! The agent keeps one block entry in exactly one of the two places.
//! It makes the exact maps small ([`EXACT_START_ENTRIES`]) and, when the
//! installed set outgrows one, loads the program with a larger copy and
//! swaps it in at every attachment (the agent's `datapath::grow`): the
//! kernel allocates a hash map's whole bucket array when it is made.
//!
//! (2) **The compiled IPv4 table** decides an IPv4 address with plain
//! array loads when `Config::lookup` is [`LOOKUP_TABLE`] (the default).
//! The agent compiles the installed IPv4 block and allow entries (block
//! minus allow, longest prefix wins) into it; the tries above stay the
//! record of what is installed and the lookup of [`LOOKUP_TRIE`] mode.
//! - `TABLE_V4` has one slot per /16, indexed by the address's top 16
//!   bits. A slot without [`SLOT_CHUNK`] holds the [result](RESULT_BLOCKED)
//!   for its whole /16 in its low 32 bits. A slot with it points at a chunk
//!   of `RANGES_V4`: bits 0..32 are the first record's index, bits 32..49
//!   the record count (1..=65,536).
//! - A `RANGES_V4` record is `(start << 32) | result`: the result holds
//!   for the low 16 bits from `start` up to the next record's start. A
//!   chunk is sorted by start and its first start is 0, so the program
//!   finds the record with a bounded binary search (at most 17 loads).
//! - `EMPTY_V4` holds a bit per /24, set when no block or allow entry
//!   overlaps that /24: word `addr >> 14`, bit `(addr >> 8) & 63`. The
//!   program reads it before a chunk's search, so an address in an empty
//!   /24 (most traffic, which no entry names) costs one word instead of
//!   the search's three to five cache lines. A clear bit only means
//!   "search": a map created empty is correct, and the agent clears a bit
//!   before a slot switch makes the /24 non-empty and sets it only after
//!   the switch, so no interleaving hides an entry.
//! - `EMPTY16_V4` holds a bit per /16, set when no entry overlaps the
//!   whole /16 (all four of its `EMPTY_V4` words are set): word
//!   `addr >> 22`, bit `(addr >> 16) & 63`, 8 KiB that stay in cache. The
//!   program reads it before the slot, so a miss in a /16 without entries
//!   (most misses on a small list) costs one hot word instead of the
//!   slot's line. The agent keeps its bits in the same order as
//!   `EMPTY_V4`'s, so a set bit always means result 0 whatever the slot
//!   holds.
//! - `EMPTY22_V4` holds a bit per /22, set when no entry overlaps it (its
//!   four `EMPTY_V4` bits are set): word `addr >> 16` (the /16's slot),
//!   bit `(addr >> 10) & 63`, 512 KiB. The program reads it after the /16
//!   bit and before the slot: on a large list nearly every /16 holds an
//!   entry, and `EMPTY_V4`'s 2 MiB then cost a miss about 50 ns where a
//!   word of an array this size costs about 15; at 1,000,000 mixed
//!   entries 49% of the /22s hold none. The agent keeps its bits in the
//!   same order as the others'.
//! - A result is 0 (no entry), [`RESULT_ALLOWED`] (a block entry covers
//!   the address and an allow entry overrides it), or [`RESULT_BLOCKED`]
//!   with the matching block entry's id and prefix length
//!   ([`blocked_result`]), and [`RESULT_MONITOR`] when that entry only
//!   monitors; the program counts in `ENTRY_COUNTERS[id]` and never walks
//!   a trie or probes a hash.
//! - Updates are copy on write: the agent writes a changed /16's new chunk
//!   into free records, then switches the slot with one aligned 64-bit
//!   store, so a packet sees the old or the new chunk, never half of one.
//!   `TABLE_META.dirty` is set while the tries and the table disagree (a
//!   sync in progress, or one killed mid-way); the next writer recompiles.
//!
//! (3) **Per-address counters** for hits on entries wider than one address
//! (a single-address entry's own counters already are per address): a
//! per-CPU, two-way set-associative array indexed by a hash of the
//! address and direction, [`ADDR_SLOTS_DEFAULT`] slots per CPU unless the
//! agent sized it at load (`ip_counters_max`). A hit on the address a slot
//! holds adds with plain stores and earns the slot a vote; a hit on
//! another address takes a vote from the weaker slot of the pair, and an
//! address takes over a slot with no votes left. Heavy hitters keep their
//! slots, a spoofed flood's one-off addresses do not insert anything
//! anywhere, and the per-packet cost is the same for both. An address that
//! loses its slot loses its per-address history (its entry's counters stay
//! exact).
//!
//! (4) **The compiled IPv6 table** works the same way on the upper 64
//! bits of an IPv6 address (the routing part; entries longer than /64 are
//! rare outside single addresses). Single addresses (/128) stay in
//! `EXACT_V6`, probed first as in trie mode; the table holds the entries of
//! /64 and wider.
//! - `TABLE_V6` has one slot per /16 (top 16 bits), in the `TABLE_V4` slot
//!   format; a chunk may hold up to [`CHUNK_V6_MAX_RECORDS`] records.
//! - A `RANGES_V6` record is two words: the start (bits 16..64 of the
//!   address, so 48 bits) at index `2k`, the result at `2k + 1`.
//! - The result [`RESULT_DEEP`] says "ask `BLOCK_V6` and `ALLOW_V6`": it
//!   covers every /64 that holds a block entry of /65../127 or an allow
//!   entry longer than /64, and every /16 whose chunk did not fit, so the
//!   table never needs to represent those and the verdict is the tries'.
//!
//! (5) **Which entries were ever hit**, so that a `/metrics` scrape reads
//! the counters of the few entries that were hit instead of walking a
//! million: byte `id % 8` of `HIT_IDS[id / 8]` is set to 1 by the program
//! on the first hit of entry `id` (when its `first_seen_ns` is still 0),
//! with a plain byte store, so two CPUs marking neighbouring ids never
//! lose each other's mark. Nobody clears a byte: an id given to a new
//! entry gets zeroed counters, whose first hit marks it again, and a stale
//! mark only costs the reader one counter read. Byte 0 (id 0, never an
//! entry) is [`HIT_IDS_SEEDED`] once the agent has marked the entries hit
//! before this map existed (a program upgraded in place); until then a
//! reader walks, as before.
//!
//! (6) **Counters per hook**: `HOOK_GLOBAL[hook]` holds the
//! [`GlobalCounters`] of every hook but XDP ([`HOOK_TC_INGRESS`],
//! [`HOOK_TC_EGRESS`], [`HOOK_CGROUP`]); the XDP program counts in
//! `GLOBAL`, as it always has, and its slot here stays zero. For the
//! cgroup hooks a "packet" is one `connect()` or `sendmsg()` call, with no
//! bytes.
//!
//! # Programs
//!
//! [`PROGRAM_NAME`] is the XDP program (ingress). [`TC_INGRESS_PROGRAM`]
//! makes the same decision as a TC classifier, for interfaces where XDP
//! is taken or missing, and [`TC_EGRESS_PROGRAM`] on frames leaving an
//! interface. The cgroup egress programs ([`EGRESS_PROGRAMS`],
//! `cgroup/connect4` etc.) refuse a connection or datagram from the host
//! to a blocked address with the same lookup. Egress hits (TC egress and
//! cgroup) count in the entry's counters with [`DIRECTION_EGRESS`]
//! (`EntryCounters::egress_packets`), and their events carry the hook
//! and, from a cgroup hook, the process.
//!
//! A zeroed [`Config`] is the default configuration (drop, match both,
//! events at the default rate), so a freshly created map is already correct.
#![no_std]

/// The IPv4 tries' key data for `addr` (see the note on the map table).
pub const fn v4_trie_data(addr: [u8; 4]) -> [u8; 8] {
    [addr[0], addr[1], addr[2], addr[3], 0, 0, 0, 0]
}

/// Pinned map names, shared by the program and the agent.
pub mod map_names {
    /// IPv4 block trie.
    pub const BLOCK_V4: &str = "BLOCK_V4";
    /// IPv6 block trie.
    pub const BLOCK_V6: &str = "BLOCK_V6";
    /// IPv4 single-address block entries (/32).
    pub const EXACT_V4: &str = "EXACT_V4";
    /// IPv6 single-address block entries (/128).
    pub const EXACT_V6: &str = "EXACT_V6";
    /// IPv4 allow trie (consulted only after a block hit).
    pub const ALLOW_V4: &str = "ALLOW_V4";
    /// IPv6 allow trie (consulted only after a block hit).
    pub const ALLOW_V6: &str = "ALLOW_V6";
    /// Per-address hit counters (per-CPU, two-way set-associative).
    pub const ADDR_HITS: &str = "ADDR_HITS";
    /// Global counters.
    pub const GLOBAL: &str = "GLOBAL";
    /// Live configuration.
    pub const CONFIG: &str = "CONFIG";
    /// Drop-event ring buffer.
    pub const EVENTS: &str = "EVENTS";
    /// Per-address event rate limiter.
    pub const EVENT_RATE: &str = "EVENT_RATE";
    /// The compiled IPv4 table's first level (one slot per /16).
    pub const TABLE_V4: &str = "TABLE_V4";
    /// The compiled IPv4 table's range records.
    pub const RANGES_V4: &str = "RANGES_V4";
    /// The IPv4 /24s no entry overlaps, a bit each.
    pub const EMPTY_V4: &str = "EMPTY_V4";
    /// The IPv4 /16s no entry overlaps, a bit each.
    pub const EMPTY16_V4: &str = "EMPTY16_V4";
    /// The IPv4 /22s no entry overlaps, a bit each.
    pub const EMPTY22_V4: &str = "EMPTY22_V4";
    /// The compiled IPv6 table's first level (one slot per /16).
    pub const TABLE_V6: &str = "TABLE_V6";
    /// The compiled IPv6 table's range records (two words each).
    pub const RANGES_V6: &str = "RANGES_V6";
    /// Whether the compiled table matches the tries.
    pub const TABLE_META: &str = "TABLE_META";
    /// Per-entry hit counters, by entry id.
    pub const ENTRY_COUNTERS: &str = "ENTRY_COUNTERS";
    /// Per-CPU drop-event budget.
    pub const EVENT_BUDGET: &str = "EVENT_BUDGET";
    /// Which entry ids were ever hit, a byte per id.
    pub const HIT_IDS: &str = "HIT_IDS";
    /// Global counters of the hooks other than XDP, one slot per hook.
    pub const HOOK_GLOBAL: &str = "HOOK_GLOBAL";

    /// Every map the program pins, in a stable order.
    pub const ALL: [&str; 23] = [
        BLOCK_V4,
        BLOCK_V6,
        EXACT_V4,
        EXACT_V6,
        ALLOW_V4,
        ALLOW_V6,
        ADDR_HITS,
        GLOBAL,
        CONFIG,
        EVENTS,
        EVENT_RATE,
        TABLE_V4,
        RANGES_V4,
        EMPTY_V4,
        EMPTY16_V4,
        EMPTY22_V4,
        TABLE_V6,
        RANGES_V6,
        TABLE_META,
        ENTRY_COUNTERS,
        EVENT_BUDGET,
        HIT_IDS,
        HOOK_GLOBAL,
    ];
}

/// Name of the XDP program in the object file.
pub const PROGRAM_NAME: &str = "blocklist";

/// The cgroup egress programs in the object file, and the hook each one
/// attaches to (`connect4` etc., as the kernel names them).
pub const EGRESS_PROGRAMS: [(&str, &str); 4] = [
    ("egress_connect4", "connect4"),
    ("egress_connect6", "connect6"),
    ("egress_sendmsg4", "sendmsg4"),
    ("egress_sendmsg6", "sendmsg6"),
];
/// The TC classifier that makes the ingress decision where XDP cannot
/// (`attach --mode tc`).
pub const TC_INGRESS_PROGRAM: &str = "tc_ingress";
/// The TC classifier on an interface's egress.
pub const TC_EGRESS_PROGRAM: &str = "tc_egress";

/// The XDP program's hook ([`GLOBAL`](map_names::GLOBAL) holds its counters).
pub const HOOK_XDP: u8 = 0;
/// The TC ingress classifier.
pub const HOOK_TC_INGRESS: u8 = 1;
/// The TC egress classifier.
pub const HOOK_TC_EGRESS: u8 = 2;
/// The cgroup socket hooks.
pub const HOOK_CGROUP: u8 = 3;
/// Number of hooks (`HOOK_GLOBAL` slots).
pub const HOOKS: u32 = 4;
/// Each hook's name, indexed by hook: the `hook` label of the metrics.
pub const HOOK_NAMES: [&str; HOOKS as usize] = ["xdp", "tc_ingress", "tc_egress", "cgroup"];

/// Name of the empty `XDP_PASS` program shipped beside it, the cost floor
/// that benchmarks compare against.
pub const FLOOR_PROGRAM_NAME: &str = "xdp_pass_floor";
/// Name of the empty TC classifier shipped beside it, the cost floor of
/// the TC hooks.
pub const TC_FLOOR_PROGRAM_NAME: &str = "tc_pass_floor";
/// Name of the drop-everything program shipped beside it, the live
/// ceiling that benchmarks compare against.
pub const DROP_ALL_PROGRAM_NAME: &str = "xdp_drop_floor";

/// Capacity of `BLOCK_V4` (LPM tries allocate per entry, so this costs
/// nothing until used).
pub const BLOCK_V4_MAX_ENTRIES: u32 = 1 << 21;
/// Capacity of `BLOCK_V6`.
pub const BLOCK_V6_MAX_ENTRIES: u32 = 1 << 19;
/// Most entries `EXACT_V4` grows to. Entries are allocated on insert, but
/// the bucket array (16 B a bucket) is allocated whole when the map is
/// made: at this size, 16 MiB. So the agent makes it
/// [`EXACT_START_ENTRIES`] and makes it larger as the installed set grows.
pub const EXACT_V4_MAX_ENTRIES: u32 = 1 << 20;
/// Most entries `EXACT_V6` grows to (4 MiB of buckets).
pub const EXACT_V6_MAX_ENTRIES: u32 = 1 << 18;
/// Flags of `EXACT_V4` and `EXACT_V6`: `BPF_F_NO_PREALLOC`, entries are
/// allocated on insert (a preallocated map would pin its whole capacity
/// in kernel memory). The agent makes a grown map with them too.
pub const EXACT_MAP_FLAGS: u32 = 1;
/// Entries a fresh `EXACT_V4` or `EXACT_V6` is made with (1 MiB of
/// buckets), before the installed set asks for more.
pub const EXACT_START_ENTRIES: u32 = 1 << 16;
/// Capacity of each allow trie.
pub const ALLOW_MAX_ENTRIES: u32 = 1 << 16;
/// Default slots per CPU of `ADDR_HITS` (72 bytes each; the agent may size
/// it at load time, always a power of two).
pub const ADDR_SLOTS_DEFAULT: u32 = 8192;
/// Most votes a slot of `ADDR_HITS` collects: how many hits of other
/// addresses on its pair it takes to evict a busy address that went quiet.
pub const ADDR_VOTES_MAX: u32 = 64;
/// Capacity of `EVENT_RATE`.
pub const EVENT_RATE_MAX_ENTRIES: u32 = 16_384;
/// Size of the `EVENTS` ring buffer in bytes (a power of two pages).
pub const EVENTS_RING_BYTES: u32 = 1 << 18;

/// Slots of `TABLE_V4`: one per /16.
pub const TABLE_V4_SLOTS: u32 = 1 << 16;
/// Words of `EMPTY_V4` (2 MiB): four per /16, a bit per /24.
pub const EMPTY_V4_WORDS: u32 = TABLE_V4_SLOTS * 4;

/// Where the `EMPTY_V4` bit of an IPv4 address (host byte order) lives:
/// the word index and the bit in that word. Four words per /16, in /24
/// order, so the address's top 18 bits pick the word and the next 6 the
/// bit. The program, the agent's writer and its readers all use this one
/// definition.
///
/// ```
/// // 10.1.130.7: /16 slot 0x0a01, /24 number 130 = word 2, bit 2.
/// let (word, bit) = blocklist_ebpf::empty_v4_bit(0x0a01_8207);
/// assert_eq!((word, bit), (0x0a01 * 4 + 2, 2));
/// ```
#[inline(always)]
pub const fn empty_v4_bit(addr: u32) -> (u32, u32) {
    (addr >> 14, (addr >> 8) & 63)
}

/// Words of `EMPTY16_V4` (8 KiB): a bit per /16.
pub const EMPTY16_V4_WORDS: u32 = TABLE_V4_SLOTS / 64;

/// Where the `EMPTY16_V4` bit of an IPv4 address (host byte order) lives:
/// the word index and the bit in that word (the /16's slot is
/// `word * 64 + bit`).
///
/// ```
/// // 10.1.130.7: /16 slot 0x0a01 = word 40, bit 1.
/// let (word, bit) = blocklist_ebpf::empty16_v4_bit(0x0a01_8207);
/// assert_eq!((word, bit), (0x0a01 / 64, 0x0a01 % 64));
/// ```
#[inline(always)]
pub const fn empty16_v4_bit(addr: u32) -> (u32, u32) {
    (addr >> 22, (addr >> 16) & 63)
}

/// Words of `EMPTY22_V4` (512 KiB): a bit per /22, a word per /16.
pub const EMPTY22_V4_WORDS: u32 = TABLE_V4_SLOTS;

/// Where the `EMPTY22_V4` bit of an IPv4 address (host byte order) lives:
/// the word index (the /16's slot) and the bit in that word (the /22
/// within the /16).
///
/// ```
/// // 10.1.130.7: /16 slot 0x0a01; 130 >> 2 = /22 number 32 in it.
/// let (word, bit) = blocklist_ebpf::empty22_v4_bit(0x0a01_8207);
/// assert_eq!((word, bit), (0x0a01, 32));
/// ```
#[inline(always)]
pub const fn empty22_v4_bit(addr: u32) -> (u32, u32) {
    (addr >> 16, (addr >> 10) & 63)
}

/// Records of `RANGES_V4` (2,359,296: 18 MiB), the most any installable
/// set needs plus room for the largest chunk. A slot's chunk is a step
/// function with at most one record per boundary of an entry inside the
/// slot, plus its first record, so the table never needs more than
/// `TABLE_V4_SLOTS + 2 * (ENTRIES_MAX + ALLOW_MAX_ENTRIES)` records
/// (a million mixed entries compile to about two million). The
/// [`CHUNK_MAX_RECORDS`] beyond that let a copy-on-write update switch at
/// least one chunk even when the table is at that bound. A change of a few
/// percent fits at once; a rewrite of most of the table goes in rounds
/// (see the agent's table writer), each switching the chunks that fit and
/// freeing the old ones after a grace period. Maps pinned by older
/// versions keep their size.
pub const RANGES_V4_RECORDS: u32 = ranges_v4_records(ENTRIES_MAX);

/// The `RANGES_V4` records (see [`RANGES_V4_RECORDS`]) for an
/// `ENTRY_COUNTERS` of `entry_slots` slots: the agent sizes the map this
/// way when `[datapath] max_entries` is set.
///
/// ```
/// assert_eq!(blocklist_ebpf::ranges_v4_records(1 << 20), 2_359_296);
/// ```
pub const fn ranges_v4_records(entry_slots: u32) -> u32 {
    TABLE_V4_SLOTS + 2 * (entry_slots + ALLOW_MAX_ENTRIES) + CHUNK_MAX_RECORDS
}
/// Most records one chunk can have: one per low-16-bit value.
pub const CHUNK_MAX_RECORDS: u32 = 1 << 16;
/// Iterations of the program's binary search: enough for
/// [`CHUNK_MAX_RECORDS`] records.
pub const CHUNK_SEARCH_STEPS: u32 = 17;
/// Slots of `TABLE_V6`: one per /16.
pub const TABLE_V6_SLOTS: u32 = 1 << 16;
/// Records of `RANGES_V6` (two words each, 8 MiB). IPv6 lists are far
/// smaller than IPv4 ones, and most of their entries are single addresses,
/// which live in `EXACT_V6`; a /16 whose chunk does not fit is decided by
/// the tries ([`RESULT_DEEP`]), never wrongly.
pub const RANGES_V6_RECORDS: u32 = 1 << 19;
/// Most records one IPv6 chunk can have: half of `RANGES_V6`, so that a
/// rewrite of the largest chunk fits beside the old one.
pub const CHUNK_V6_MAX_RECORDS: u32 = RANGES_V6_RECORDS / 2;
/// Iterations of the program's IPv6 binary search: enough for
/// [`CHUNK_V6_MAX_RECORDS`] records.
pub const CHUNK_V6_SEARCH_STEPS: u32 = 19;
/// The record-count bits of a chunk slot (above bit 32).
pub const SLOT_COUNT_MASK: u64 = 0x7fff_ffff;
/// A `TABLE_V4`/`TABLE_V6` slot flag: the slot points at a chunk.
pub const SLOT_CHUNK: u64 = 1 << 63;
/// Result: a block entry matches and no allow entry overrides it. Bits
/// 0..22 are the entry's id ([`RESULT_ID_MASK`]), bits 22..29 its prefix
/// length ([`RESULT_LEN_SHIFT`]), bit 29 [`RESULT_MONITOR`].
pub const RESULT_BLOCKED: u32 = 1 << 31;
/// Result: a block entry matches but an allow entry overrides it.
pub const RESULT_ALLOWED: u32 = 1 << 30;
/// Result (IPv6 table only): both flags, "decide with the tries".
pub const RESULT_DEEP: u32 = RESULT_BLOCKED | RESULT_ALLOWED;
/// Result flag, with [`RESULT_BLOCKED`]: the entry only monitors
/// ([`ENTRY_FLAG_MONITOR`]): the hit is counted and reported, the packet
/// passes. The table carries it so the program learns it from the load it
/// already does.
pub const RESULT_MONITOR: u32 = 1 << 29;
/// The entry id bits of a blocked result (ids stay below [`ENTRIES_MAX`]).
pub const RESULT_ID_MASK: u32 = (1 << 22) - 1;
/// Where a blocked result keeps the prefix length (7 bits: the tables
/// hold IPv4 entries and IPv6 entries of /64 or wider).
pub const RESULT_LEN_SHIFT: u32 = 22;
/// The prefix length bits of a blocked result, after the shift.
pub const RESULT_LEN_MASK: u32 = 0x7f;

/// The result for an address blocked by the entry `id` of length `len`
/// (`len` at most 127). `id` may carry [`RESULT_MONITOR`], which is kept:
/// the table compiler takes an entry's id and its monitor flag as one word.
pub const fn blocked_result(id: u32, len: u8) -> u32 {
    RESULT_BLOCKED
        | ((len as u32 & RESULT_LEN_MASK) << RESULT_LEN_SHIFT)
        | (id & (RESULT_ID_MASK | RESULT_MONITOR))
}

/// `Config::lookup`: decide IPv4 with the compiled table (the default).
pub const LOOKUP_TABLE: u32 = 0;
/// `Config::lookup`: decide with the exact maps and the tries only.
pub const LOOKUP_TRIE: u32 = 1;

/// The `TABLE_META` record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableMeta {
    /// Non-zero while the tries may hold entries the table does not
    /// reflect: set before a writer changes the tries, cleared after the
    /// table was brought in line with them.
    pub dirty: u64,
    /// Incremented by every table update (0: never compiled).
    pub generation: u64,
}

/// Address family tag used in keys and records.
pub const FAMILY_V4: u8 = 4;
/// Address family tag used in keys and records.
pub const FAMILY_V6: u8 = 6;

/// The address that matched was the packet's source.
pub const DIRECTION_SRC: u8 = 1;
/// The address that matched was the packet's destination.
pub const DIRECTION_DST: u8 = 2;
/// The address was on a frame leaving an interface (TC egress) or the
/// destination of a connection or datagram the host itself tried to send
/// (the cgroup hooks).
pub const DIRECTION_EGRESS: u8 = 3;

/// Value stored in the block and allow tries and the exact maps: what the
/// entry is. Its hit counters live in `ENTRY_COUNTERS` under its `id`, so
/// that the compiled table, which yields the id, finds them with one
/// array load and no trie walk.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EntryValue {
    /// Prefix length of the entry itself (the kernel returns only the value
    /// of the longest match, so the program learns the prefix from here).
    pub prefix_len: u32,
    /// Entry flags ([`ENTRY_FLAG_MANUAL`], ...).
    pub flags: u32,
    /// Index of the entry's counters in `ENTRY_COUNTERS`; 0 for allow
    /// entries, which have none. Stable for the entry's whole life: a sync
    /// that keeps the entry keeps its id, and so its counters.
    pub id: u32,
    /// Zero.
    pub _pad: u32,
}

impl EntryValue {
    /// A fresh entry.
    pub const fn new(prefix_len: u32, flags: u32, id: u32) -> Self {
        Self {
            prefix_len,
            flags,
            id,
            _pad: 0,
        }
    }
}

/// Hit counters of one block entry, in `ENTRY_COUNTERS[id]`: one cache
/// line, so two entries hit on different CPUs never share one.
///
/// The program adds to the sums atomically; the timestamps are plain
/// stores. The agent writes zeros when it gives the id to a new entry. For
/// a single-address entry these are that address's per-address counters
/// too (split by direction through `dst_*`), so its hits skip `ADDR_HITS`,
/// and `last_event_ns` rate-limits its drop events without `EVENT_RATE`.
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EntryCounters {
    /// Packets that matched this entry (dropped or monitored), ingress and
    /// egress.
    pub packets: u64,
    /// Bytes of the ingress ones (whole frame; egress hits add none).
    pub bytes: u64,
    /// Of `packets`, those whose destination matched.
    pub dst_packets: u64,
    /// Of `bytes`, those of packets whose destination matched.
    pub dst_bytes: u64,
    /// `bpf_ktime_get_coarse_ns()` of the first hit (0: never hit).
    pub first_seen_ns: u64,
    /// `bpf_ktime_get_coarse_ns()` of the last hit.
    pub last_seen_ns: u64,
    /// Of the last drop event for a single-address entry.
    pub last_event_ns: u64,
    /// Of `packets`, the egress hits: frames the TC egress classifier
    /// dropped and the connections and datagrams the cgroup hooks refused
    /// (no bytes are counted for those).
    pub egress_packets: u64,
}

impl EntryCounters {
    /// The prefix-level view of these counters.
    pub const fn counters(&self) -> PrefixCounters {
        PrefixCounters {
            packets: self.packets,
            bytes: self.bytes,
            first_seen_ns: self.first_seen_ns,
            last_seen_ns: self.last_seen_ns,
        }
    }
}

/// Slots of `ENTRY_COUNTERS` (64 MiB, preallocated): at most this many
/// block entries, IPv4 and IPv6 together, less one (id 0 means none).
pub const ENTRIES_MAX: u32 = 1 << 20;

/// Words of `HIT_IDS` (1 MiB): a byte per entry id.
pub const HIT_IDS_WORDS: u32 = ENTRIES_MAX / 8;

/// The value of `HIT_IDS` byte 0 once the agent has marked the entries
/// that were hit before the map existed.
pub const HIT_IDS_SEEDED: u8 = 1;

/// The entry was added by hand (`block`/`allow`), not by a feed.
pub const ENTRY_FLAG_MANUAL: u32 = 1;
/// Every source listing the entry is a monitor feed (`action =
/// "monitor"`): its hits are counted, reported (events say `monitor`) and
/// passed. An entry that any drop feed or a hand-made `block` lists has
/// no such flag: drop wins.
pub const ENTRY_FLAG_MONITOR: u32 = 2;

/// Per-prefix counters, as read from a block entry's [`EntryValue`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PrefixCounters {
    /// Packets that matched this prefix.
    pub packets: u64,
    /// Bytes of those packets (whole frame).
    pub bytes: u64,
    /// `bpf_ktime_get_coarse_ns()` of the first hit (0: never hit).
    pub first_seen_ns: u64,
    /// `bpf_ktime_get_coarse_ns()` of the last hit.
    pub last_seen_ns: u64,
}

/// Key of the per-address counters: the address that actually hit and
/// whether it was the packet's source or destination. 4-byte aligned, so
/// the program compares and hashes it a word at a time.
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct IpKey {
    /// Address, network byte order; IPv4 in the first four bytes.
    pub addr: [u8; 16],
    /// [`FAMILY_V4`] or [`FAMILY_V6`].
    pub family: u8,
    /// [`DIRECTION_SRC`] or [`DIRECTION_DST`].
    pub direction: u8,
    /// Zero.
    pub _pad: [u8; 2],
}

/// Per-address counters (one per CPU; the agent sums them).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IpCounters {
    /// Packets from or to this address that were dropped or monitored.
    pub packets: u64,
    /// Bytes of those packets.
    pub bytes: u64,
    /// `bpf_ktime_get_coarse_ns()` of the first hit on this CPU.
    pub first_seen_ns: u64,
    /// `bpf_ktime_get_coarse_ns()` of the last hit on this CPU.
    pub last_seen_ns: u64,
    /// Prefix length of the block entry that matched.
    pub prefix_len: u32,
    /// Zero.
    pub _pad: u32,
    /// `bpf_ktime_get_coarse_ns()` of the last drop event this CPU sent for this
    /// address: a per-CPU check in hand before the shared `EVENT_RATE`
    /// limiter is consulted, so most drops never touch that map.
    pub last_event_ns: u64,
}

/// One `ADDR_HITS` slot: the address it holds and its counters on this
/// CPU (`family` 0: empty).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AddrHits {
    /// The address and direction this slot counts.
    pub key: IpKey,
    /// Votes (see the map table note); at 0 another address may take it.
    pub votes: u32,
    /// Its counters, since it took the slot.
    pub counters: IpCounters,
}

/// Global counters (one per CPU; the agent sums them).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GlobalCounters {
    /// Every frame the program saw.
    pub seen_packets: u64,
    /// Bytes of every frame the program saw.
    pub seen_bytes: u64,
    /// Frames passed (including monitored, allowlisted, non-IP, malformed).
    pub passed_packets: u64,
    /// Bytes of passed frames.
    pub passed_bytes: u64,
    /// IPv4 frames dropped.
    pub dropped_v4_packets: u64,
    /// Bytes of dropped IPv4 frames.
    pub dropped_v4_bytes: u64,
    /// IPv6 frames dropped.
    pub dropped_v6_packets: u64,
    /// Bytes of dropped IPv6 frames.
    pub dropped_v6_bytes: u64,
    /// Frames that would have been dropped but the action is `monitor`.
    pub monitored_packets: u64,
    /// Bytes of monitored frames.
    pub monitored_bytes: u64,
    /// Block hits overridden by an allow entry.
    pub allowlisted_packets: u64,
    /// Frames that are neither IPv4 nor IPv6 (ARP, LLDP, ...).
    pub not_ip_packets: u64,
    /// Frames too short for the headers they announce.
    pub malformed_packets: u64,
    /// Drop events written to the ring buffer.
    pub events_sent: u64,
    /// Drop events lost because the ring buffer was full.
    pub events_lost: u64,
    /// Drop events not sent because this CPU's budget for the second was
    /// spent (`Config::event_budget`).
    pub events_suppressed: u64,
}

/// Lists every field of [`GlobalCounters`] once, for [`GlobalCounters::named`]
/// and [`GlobalCounters::named_mut`].
macro_rules! global_counter_names {
    ($($field:ident),* $(,)?) => {
        impl GlobalCounters {
            /// Number of counters.
            pub const COUNT: usize = [$(stringify!($field)),*].len();

            /// Every counter with its field name, in field order: the keys
            /// of `status --json`, what `/metrics` and the status table
            /// group by outcome (`<outcome>_packets` with
            /// `<outcome>_bytes`).
            pub fn named(&self) -> [(&'static str, u64); Self::COUNT] {
                [$((stringify!($field), self.$field)),*]
            }

            /// [`named`](Self::named) with each counter writable, for
            /// summing the per-CPU copies.
            pub fn named_mut(&mut self) -> [(&'static str, &mut u64); Self::COUNT] {
                [$((stringify!($field), &mut self.$field)),*]
            }
        }
    };
}

global_counter_names!(
    seen_packets,
    seen_bytes,
    passed_packets,
    passed_bytes,
    dropped_v4_packets,
    dropped_v4_bytes,
    dropped_v6_packets,
    dropped_v6_bytes,
    monitored_packets,
    monitored_bytes,
    allowlisted_packets,
    not_ip_packets,
    malformed_packets,
    events_sent,
    events_lost,
    events_suppressed,
);

/// Action on a blocked packet: drop it.
pub const ACTION_DROP: u32 = 0;
/// Action on a blocked packet: count it and let it pass.
pub const ACTION_MONITOR: u32 = 1;

/// Match both source and destination addresses.
pub const MATCH_BOTH: u32 = 0;
/// Match only source addresses.
pub const MATCH_SRC: u32 = 1;
/// Match only destination addresses.
pub const MATCH_DST: u32 = 2;

/// Default minimum interval between two drop events for one address.
pub const EVENT_DEFAULT_INTERVAL_MS: u32 = 1_000;
/// `Config::event_interval_ms` value that disables drop events.
pub const EVENT_INTERVAL_OFF: u32 = u32::MAX;

/// The live configuration, read by the program on every packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// [`ACTION_DROP`] or [`ACTION_MONITOR`].
    pub action: u32,
    /// [`MATCH_BOTH`], [`MATCH_SRC`] or [`MATCH_DST`].
    pub match_mode: u32,
    /// Minimum milliseconds between two events for one address; 0 means
    /// [`EVENT_DEFAULT_INTERVAL_MS`], [`EVENT_INTERVAL_OFF`] disables events.
    pub event_interval_ms: u32,
    /// [`LOOKUP_TABLE`] or [`LOOKUP_TRIE`].
    pub lookup: u32,
    /// `ADDR_HITS` slots per CPU minus one (a power of two minus one); 0
    /// means [`ADDR_SLOTS_DEFAULT`]. The agent writes it from the map's
    /// real size when it loads the program.
    pub addr_slots_mask: u32,
    /// Most drop events one CPU may send per second; 0 means
    /// [`EVENT_BUDGET_DEFAULT`]. Checked before any limiter map or the
    /// ring buffer is touched, so a flood from many addresses costs no
    /// more than one from a few.
    pub event_budget: u32,
}

/// Default of [`Config::event_budget`]: drop events per CPU per second.
pub const EVENT_BUDGET_DEFAULT: u32 = 1024;

/// Per-CPU `EVENT_BUDGET` record: this CPU's current one-second window.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventBudget {
    /// Coarse ktime the window started.
    pub window_start_ns: u64,
    /// Events allowed in it so far.
    pub sent: u64,
}

/// A drop (or monitor) event, sampled per address into `EVENTS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropEvent {
    /// `bpf_ktime_get_coarse_ns()` at the drop.
    pub ktime_ns: u64,
    /// Source address, network byte order; IPv4 in the first four bytes.
    pub src: [u8; 16],
    /// Destination address, likewise.
    pub dst: [u8; 16],
    /// Interface index (ingress, or egress for [`HOOK_TC_EGRESS`]; 0 from
    /// a cgroup hook).
    pub ifindex: u32,
    /// Frame length in bytes.
    pub bytes: u32,
    /// Prefix length of the matching block entry.
    pub prefix_len: u32,
    /// Source port (TCP/UDP), host byte order, 0 otherwise.
    pub src_port: u16,
    /// Destination port, likewise.
    pub dst_port: u16,
    /// [`FAMILY_V4`] or [`FAMILY_V6`].
    pub family: u8,
    /// [`DIRECTION_SRC`] or [`DIRECTION_DST`]: which address matched on
    /// ingress; [`DIRECTION_EGRESS`] on egress, where `prefix_len` and the
    /// destination (or, failing that, the source) tell which.
    pub direction: u8,
    /// IP protocol number (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6, ...).
    pub protocol: u8,
    /// [`ACTION_DROP`] or [`ACTION_MONITOR`] as a byte: monitor when the
    /// configured action is, or the entry only monitors
    /// ([`ENTRY_FLAG_MONITOR`]).
    pub action: u8,
    /// Process id (tgid) from a cgroup hook, else 0. (Records before the
    /// egress hooks end here, at 64 bytes; a reader zero-fills the rest.)
    pub pid: u32,
    /// The process's command name, NUL-padded, from a cgroup hook.
    pub comm: [u8; 16],
    /// The process's cgroup v2 id, from a cgroup hook.
    pub cgroup_id: u64,
    /// The hook that decided ([`HOOK_XDP`] ...).
    pub hook: u8,
    /// [`DIRECTION_SRC`] or [`DIRECTION_DST`]: which address matched, on
    /// every hook (0 in records before the egress hooks: see `direction`).
    pub address: u8,
    /// Zero.
    pub _pad: [u8; 6],
}

/// Size of a drop event written before the egress hooks existed.
pub const DROP_EVENT_V1_BYTES: usize = 64;

#[cfg(feature = "user")]
mod pod {
    macro_rules! pod {
        ($($t:ty),* $(,)?) => {
            $(
                // SAFETY: every type listed is #[repr(C)], made only of
                // integers and byte arrays, with explicit padding fields,
                // so any bit pattern is valid.
                unsafe impl aya::Pod for $t {}
            )*
        };
    }

    pod!(
        super::EntryValue,
        super::PrefixCounters,
        super::IpKey,
        super::IpCounters,
        super::GlobalCounters,
        super::Config,
        super::DropEvent,
        super::TableMeta,
        super::EntryCounters,
        super::EventBudget,
        super::AddrHits,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<EntryValue>(), 16);
        assert_eq!(size_of::<EntryCounters>(), 64);
        assert_eq!(size_of::<IpKey>(), 20);
        assert_eq!(size_of::<PrefixCounters>(), 32);
        assert_eq!(size_of::<IpCounters>(), 48);
        assert_eq!(size_of::<GlobalCounters>(), 16 * 8);
        assert_eq!(size_of::<Config>(), 24);
        assert_eq!(size_of::<EventBudget>(), 16);
        assert_eq!(size_of::<AddrHits>(), 72);
        assert_eq!(size_of::<DropEvent>(), 96);
    }

    #[test]
    fn every_global_counter_is_named_once() {
        // A field left out of the list would make the struct bigger than
        // the names account for.
        assert_eq!(GlobalCounters::COUNT * 8, size_of::<GlobalCounters>());
        let mut g = GlobalCounters::default();
        for (i, (_, v)) in g.named_mut().into_iter().enumerate() {
            *v = i as u64 + 1;
        }
        let named = g.named();
        for (i, (name, v)) in named.iter().enumerate() {
            assert_eq!(*v, i as u64 + 1, "{name}");
            assert!(named[..i].iter().all(|(n, _)| n != name), "{name} twice");
        }
        assert_eq!(named[0], ("seen_packets", 1));
        assert_eq!(g.events_suppressed, GlobalCounters::COUNT as u64);
    }

    #[test]
    fn zeroed_config_is_the_default() {
        let c = Config::default();
        assert_eq!(c.action, ACTION_DROP);
        assert_eq!(c.match_mode, MATCH_BOTH);
        assert_eq!(c.event_interval_ms, 0);
        assert_eq!(c.lookup, LOOKUP_TABLE);
    }
}
