//! An interrupted benchmark leaves nothing behind: on SIGINT, SIGTERM or
//! SIGHUP the namespaces it created (which hold every veth, rule, set and
//! attached program) are deleted and the bpffs instances it mounted are
//! unmounted, then it exits. A normal run removes them as it goes (drop
//! guards).

use std::{collections::HashSet, process::Command};

use signal_hook::{
    consts::{SIGHUP, SIGINT, SIGTERM},
    iterator::Signals,
};

/// Namespace name prefixes the parts use (`Netns::new`), each followed by
/// this process's id.
const NETNS_PREFIXES: [&str; 3] = ["xblb-tx-", "xblb-rx-", "xbb"];

/// Starts the thread that cleans up on a signal.
pub fn on_interrupt() -> anyhow::Result<()> {
    let before = bpf_mounts();
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            eprintln!("bench: interrupted; removing its namespaces and bpffs mounts");
            sweep(&before);
            std::process::exit(128 + sig);
        }
    });
    Ok(())
}

fn sweep(mounts_before: &HashSet<String>) {
    let pid = (std::process::id() % 100_000).to_string();
    let list = Command::new("ip").args(["netns", "list"]).output();
    let list = list.map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    for name in list
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
    {
        let ours = NETNS_PREFIXES.iter().any(|p| {
            name.strip_prefix(p)
                .is_some_and(|rest| rest.starts_with(&pid))
        });
        if ours {
            let _ = Command::new("ip").args(["netns", "del", name]).output();
        }
    }
    for m in bpf_mounts().difference(mounts_before) {
        let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir(m);
    }
}

/// Mount points of bpf filesystems.
fn bpf_mounts() -> HashSet<String> {
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, at, kind) = (f.next()?, f.next()?, f.next()?);
            (kind == "bpf").then(|| at.to_owned())
        })
        .collect()
}
