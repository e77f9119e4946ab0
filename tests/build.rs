//! Builds the benchmark's live-frames traffic generator (`trafficgen-ebpf`,
//! BPF target, the same pinned nightly as the XDP program) into
//! `OUT_DIR/trafficgen` for `cargo xtask bench live`.

#[path = "../blocklist-agent/build_ebpf.rs"]
mod build_ebpf;

fn main() -> anyhow::Result<()> {
    build_ebpf::build("trafficgen-ebpf", "trafficgen-ebpf", &[])
}
