//! The xdp-blocklist XDP program (BPF target only; see `lib.rs` for the ABI).
//!
//! Built by `aya-build` from `blocklist-agent/build.rs` for `bpfel-unknown-none`
//! and embedded in the agent. On the host this file compiles to an empty
//! binary so that workspace-wide `cargo check`/`clippy` stay green.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
// `AtomicU64::fetch_add` is not available on the BPF target (it has no
// compare-and-swap in every ISA version); the intrinsic lowers to BPF's
// atomic add, which every version has.
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]
#![cfg_attr(target_arch = "bpf", allow(internal_features))]

#[cfg(target_arch = "bpf")]
mod egress;
#[cfg(target_arch = "bpf")]
mod program;

#[cfg(not(target_arch = "bpf"))]
fn main() {}
