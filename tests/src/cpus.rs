//! CPUs for the tests and benches that run the program from two CPUs at
//! once: which two this process may use, and pinning a thread to one.

use nix::{
    sched::{CpuSet, sched_getaffinity, sched_setaffinity},
    unistd::Pid,
};

/// The first two CPUs this process may run on, if it may run on two.
pub fn two() -> Option<[usize; 2]> {
    let allowed = sched_getaffinity(Pid::from_raw(0)).ok()?;
    let mut cpus = (0..CpuSet::count()).filter(|c| allowed.is_set(*c).unwrap_or(false));
    Some([cpus.next()?, cpus.next()?])
}

/// Pins the calling thread to `cpu`.
pub fn pin(cpu: usize) -> nix::Result<()> {
    let mut set = CpuSet::new();
    set.set(cpu)?;
    sched_setaffinity(Pid::from_raw(0), &set)
}
