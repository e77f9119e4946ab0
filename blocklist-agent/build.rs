//! Builds the XDP program (`blocklist-ebpf`, BPF target, pinned nightly) and
//! leaves the object in `OUT_DIR/blocklist` for `include_bytes_aligned!`.

mod build_ebpf;

fn main() -> anyhow::Result<()> {
    let debug_log = std::env::var_os("CARGO_FEATURE_EBPF_DEBUG_LOG").is_some();
    let features: &[&str] = if debug_log { &["debug-log"] } else { &[] };
    build_ebpf::build("blocklist-ebpf", "blocklist-ebpf", features)
}
