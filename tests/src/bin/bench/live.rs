//! Live drop rate over a veth pair, against iptables, ipset, nftables and
//! xdp-filter, in the same run, with both lookups of this program, beside
//! two floors: no filter, and an XDP program that drops everything (the
//! ceiling of this setup). For every case it also reports the receiver's
//! CPU time per frame (the NAPI thread's run time over the frames it
//! polled): what a host pays per packet, cold caches included, and the
//! only measure of misses, whose rate is bounded by the stack.
//!
//! ```text
//!  sender ns (CPU 0)                           receiver ns (CPU 1)
//!  trafficgen, BPF_PROG_RUN live frames        filter under test on `xblrx`
//!  xbltx 10.250.0.1  ----- veth ----->  xblrx 10.250.0.2  (UDP port 9, closed)
//! ```
//! A socket sender tops out near 0.3 Mpps here and would hide every
//! difference, so the sender is an XDP program run with
//! `BPF_F_TEST_XDP_LIVE_FRAMES` (the `xdp-trafficgen` technique). It
//! rewrites each frame's source to an address drawn at random from the
//! installed list, so the filter looks up many different keys. It is
//! attached to a spare veth so that it stays in the kernel's XDP
//! dispatcher: a test run of a program no interface runs pays two RCU
//! grace periods per call, during which the sender sends nothing.
//!
//! The receiving veth runs its NAPI poll in a kernel thread (`threaded`)
//! pinned to the other CPU, so the sender and the filter do not share one.
//! What it polls off the veth ring per second is the receiver's rate; what
//! reached UDP (`/proc/net/snmp`) got through, the rest was dropped by the
//! filter. Everything lives in two namespaces that are deleted at the end,
//! which also removes every rule, set and attached program.

use std::{
    net::Ipv4Addr,
    os::fd::{AsFd, BorrowedFd},
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use aya::{
    EbpfLoader,
    maps::{Array, Map, MapData, PerCpuHashMap, PerCpuValues},
    programs::Xdp,
};
use blocklist_agent::{config::Lookup, datapath::test_run, prefix::Prefix};
use blocklist_tests::{agent::Agent, bpffs::Bpffs, frames, lab::Netns};
use nix::{
    sched::{CpuSet, sched_setaffinity},
    unistd::Pid,
};
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::Serialize;

use super::{
    packets::{Coverage, inside, prefixes, singles, spoofed, stats},
    scripts,
};

/// Runs per case (median, min, max).
const RUNS: usize = 5;
/// How long one run sends.
const SECONDS: f64 = 1.0;
/// Upper bound of frames per run, whatever the rate.
const MAX_FRAMES: u64 = 40_000_000;
/// Frames per `BPF_PROG_RUN` call.
const CHUNK: u32 = 1 << 16;

const TX_IF: &str = "xbltx";
const RX_IF: &str = "xblrx";
/// Where the generator is attached so that it stays in the dispatcher.
const PARK_IF: &str = "xblpark0";
const TX_MAC: &str = "02:25:00:00:00:01";
const RX_MAC: [u8; 6] = [0x02, 0x25, 0, 0, 0, 0x02];
const TX_ADDR: &str = "10.250.0.1/24";
const RX_ADDR: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 2);

/// One measured case.
#[derive(Serialize)]
struct Row {
    filter: String,
    list: String,
    prefixes: usize,
    /// Frames the receiver handled and dropped, millions per second.
    drop_mpps: (f64, f64, f64),
    /// Frames the receiver polled off the veth, millions per second.
    rx_mpps: f64,
    /// Share of received frames that reached UDP instead of being dropped.
    leaked: f64,
    /// Frames the sender pushed, millions per second.
    tx_mpps: f64,
    /// Receiver CPU per polled frame, ns (median, min, max of the runs).
    rx_ns_per_frame: (f64, f64, f64),
    /// The same, per run in the order they ran: a case measured in rounds
    /// with others has its run `i` in round `i`.
    rx_ns_runs: Vec<f64>,
    /// Where the sources come from: the list, spoofed inside its wide
    /// entries, or its gaps.
    shape: &'static str,
}

/// The two namespaces and the veth between them.
struct Topology {
    tx: Netns,
    rx: Netns,
    tx_ifindex: u32,
    sender_cpu: usize,
    receiver_cpu: usize,
}

impl Topology {
    fn new() -> anyhow::Result<Self> {
        let tx = Netns::new("xblb-tx-");
        let rx = Netns::new("xblb-rx-");
        let rx_mac = RX_MAC.map(|b| format!("{b:02x}")).join(":");
        blocklist_tests::lab::ip(&[
            "link",
            "add",
            TX_IF,
            "netns",
            tx.name(),
            "address",
            TX_MAC,
            "type",
            "veth",
            "peer",
            "name",
            RX_IF,
            "netns",
            rx.name(),
            "address",
            &rx_mac,
        ]);
        tx.ip(&["addr", "add", TX_ADDR, "dev", TX_IF]);
        rx.ip(&["addr", "add", &format!("{RX_ADDR}/24"), "dev", RX_IF]);
        tx.ip(&["link", "set", TX_IF, "up"]);
        rx.ip(&["link", "set", RX_IF, "up"]);
        // A spare pair that only holds the generator (see Generator::load).
        tx.ip(&[
            "link", "add", PARK_IF, "type", "veth", "peer", "name", "xblpark1",
        ]);
        tx.ip(&["link", "set", PARK_IF, "up"]);
        tx.ip(&["link", "set", "xblpark1", "up"]);
        // GRO gives the receiving veth its NAPI ring without an XDP program,
        // so frames can be transmitted into it for every filter, including
        // none; `threaded` moves that poll to a kthread we can pin.
        run_in(&rx, &["ethtool", "-K", RX_IF, "gro", "on"])?;
        run_in(
            &rx,
            &[
                "sh",
                "-c",
                &format!("echo 1 > /sys/class/net/{RX_IF}/threaded"),
            ],
        )?;
        let tx_ifindex = tx.enter(|| nix::net::if_::if_nametoindex(TX_IF))?;
        let cpus = aya::util::nr_cpus()
            .map_err(|(what, e)| anyhow::anyhow!("{what}: {e}"))?
            .get() as usize;
        let receiver_cpu = if cpus > 1 { 1 } else { 0 };
        Ok(Self {
            tx,
            rx,
            tx_ifindex,
            sender_cpu: 0,
            receiver_cpu,
        })
    }

    /// Pins the receiving veth's NAPI kthread to `receiver_cpu`; returns
    /// its pid.
    fn pin_receiver(&self) -> anyhow::Result<i32> {
        let prefix = format!("napi/{RX_IF}-");
        for entry in std::fs::read_dir("/proc")? {
            let entry = entry?;
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            if comm.starts_with(&prefix) {
                let mut set = CpuSet::new();
                set.set(self.receiver_cpu)?;
                sched_setaffinity(Pid::from_raw(pid), &set)
                    .with_context(|| format!("pinning {}", comm.trim()))?;
                return Ok(pid);
            }
        }
        bail!("no NAPI thread named {prefix}* (threaded NAPI on veth needs Linux 5.12 or later)")
    }

    /// Frames polled off the receiving veth (XDP drops included).
    fn rx_packets(&self) -> anyhow::Result<u64> {
        let out = Command::new("ip")
            .args(["-n", self.rx.name(), "-s", "-j", "link", "show", RX_IF])
            .output()?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        v[0]["stats64"]["rx"]["packets"]
            .as_u64()
            .context("no rx packet count in `ip -s -j link`")
    }

    /// Datagrams that reached UDP in the receiver (delivered, to a closed
    /// port, or in error): the frames the filter let through.
    fn udp_seen(&self) -> anyhow::Result<u64> {
        let out = self.rx.exec(&["cat", "/proc/net/snmp"]);
        let text = String::from_utf8_lossy(&out.stdout);
        let mut udp = text.lines().filter(|l| l.starts_with("Udp:"));
        let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
            bail!("no Udp lines in /proc/net/snmp");
        };
        Ok(names
            .split_whitespace()
            .zip(values.split_whitespace())
            .filter(|(n, _)| matches!(*n, "InDatagrams" | "NoPorts" | "InErrors"))
            .filter_map(|(_, v)| v.parse::<u64>().ok())
            .sum())
    }
}

/// Runs a command in `ns`, failing with its stderr.
fn run_in(ns: &Netns, args: &[&str]) -> anyhow::Result<String> {
    let out = ns.exec(args);
    if !out.status.success() {
        bail!(
            "`{}` in {} failed: {}",
            args.join(" "),
            ns.name(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Pipes `script` into `tool` inside `ns`.
fn restore_in(ns: &Netns, tool: &[&str], script: &Path) -> anyhow::Result<()> {
    let mut args = tool.to_vec();
    let path = script.to_str().context("temporary path is not UTF-8")?;
    args.push(path);
    run_in(ns, &args).map(drop)
}

/// A UDP frame from `src` to the receiver's address, MAC and port 9
/// (discard, closed there): what the generator sends and what the
/// per-packet comparison runs.
fn to_receiver(src: Ipv4Addr) -> Vec<u8> {
    let mut f = frames::ipv4(src, RX_ADDR);
    f[..6].copy_from_slice(&RX_MAC);
    f[14 + 20 + 2..14 + 20 + 4].copy_from_slice(&9u16.to_be_bytes());
    f
}

/// The loaded traffic generator.
struct Generator {
    ebpf: aya::Ebpf,
}

impl Generator {
    fn load(topo: &Topology, sources: &[Ipv4Addr]) -> anyhow::Result<Self> {
        let mut ebpf = EbpfLoader::new()
            .map_max_entries("SOURCES", sources.len() as u32)
            .load(aya::include_bytes_aligned!(concat!(
                env!("OUT_DIR"),
                "/trafficgen"
            )))
            .context("loading the traffic generator")?;
        let mut slots: Array<_, u32> =
            ebpf.map_mut("SOURCES").context("SOURCES map")?.try_into()?;
        for (i, a) in sources.iter().enumerate() {
            slots.set(i as u32, &u32::from_ne_bytes(a.octets()), 0)?;
        }
        let mut len: Array<_, u32> = ebpf
            .map_mut("SOURCES_LEN")
            .context("SOURCES_LEN map")?
            .try_into()?;
        len.set(0, &(sources.len() as u32), 0)?;
        let prog: &mut Xdp = ebpf
            .program_mut("trafficgen")
            .context("trafficgen program")?
            .try_into()?;
        prog.load().context("verifying the traffic generator")?;
        // Attached to an interface that receives nothing, the generator
        // stays in the kernel's XDP dispatcher. Otherwise every
        // BPF_PROG_TEST_RUN call swaps it in and out, two RCU grace periods
        // (about 28 ms here) during which nothing is sent: the sender
        // then idled two thirds of the time, and the drop rates measured
        // its duty cycle, not the receiver.
        topo.tx
            .enter(|| -> anyhow::Result<_> {
                let park = nix::net::if_::if_nametoindex(PARK_IF)?;
                Ok(prog.attach(park, aya::programs::XdpMode::Driver)?)
            })
            .context("parking the traffic generator on a spare veth")?;
        Ok(Self { ebpf })
    }

    /// Runs `f` in the sender namespace with the generator's descriptor
    /// and the frame it rewrites.
    fn in_sender<T: Send>(
        &self,
        topo: &Topology,
        f: impl FnOnce(BorrowedFd<'_>, &[u8]) -> anyhow::Result<T> + Send,
    ) -> anyhow::Result<T> {
        let prog: &Xdp = self
            .ebpf
            .program("trafficgen")
            .context("trafficgen program")?
            .try_into()?;
        let fd = prog.fd()?;
        let frame = to_receiver(Ipv4Addr::new(10, 250, 0, 1));
        topo.tx.enter(|| f(fd.as_fd(), &frame))
    }

    /// Sends for [`SECONDS`] (at most [`MAX_FRAMES`]) from the sender
    /// namespace on `topo.sender_cpu`; returns frames sent and seconds.
    fn send(&self, topo: &Topology) -> anyhow::Result<(u64, f64)> {
        self.in_sender(topo, |fd, frame| {
            let mut set = CpuSet::new();
            set.set(topo.sender_cpu)?;
            sched_setaffinity(Pid::from_raw(0), &set)?;
            let start = Instant::now();
            let mut sent = 0u64;
            while start.elapsed().as_secs_f64() < SECONDS && sent < MAX_FRAMES {
                test_run::run_live(fd, frame, topo.tx_ifindex, CHUNK, 256)
                    .context("live-frames run")?;
                sent += u64::from(CHUNK);
            }
            Ok((sent, start.elapsed().as_secs_f64()))
        })
    }
}

/// Sends one frame into a topology of its own, and fails with what to do
/// where the kernel refuses live frames to this process: `bench` runs
/// this before its other parts, which would otherwise take half an hour
/// and then fail at the first live case.
pub fn preflight() -> anyhow::Result<()> {
    let topo = Topology::new()?;
    let generator = Generator::load(&topo, &[Ipv4Addr::new(10, 250, 1, 1)])?;
    let sent = generator.in_sender(&topo, |fd, frame| {
        Ok(test_run::run_live(fd, frame, topo.tx_ifindex, 1, 1))
    })?;
    match sent {
        Ok(()) => Ok(()),
        Err(e) if e.has_errno(libc::EPERM) => bail!(
            "the kernel refused BPF_PROG_TEST_RUN with BPF_F_TEST_XDP_LIVE_FRAMES (EPERM), \
             which the live bench sends with. This process {}. \
             Run `cargo xtask bench` from a root shell that has every capability \
             (on the machines here, shells whose effective set lacked CAP_SYS_RESOURCE \
             were refused), or leave `live` out: \
             `cargo xtask bench packets,sync,hooks,footprint,updates`",
            capabilities_note()
        ),
        Err(e) => {
            Err(anyhow::Error::from(e).context("sending one live frame before the live bench"))
        }
    }
}

/// Which capabilities this process lacks that pid 1 has, by name where
/// they bear on BPF and networking.
fn capabilities_note() -> String {
    let eff = |pid: &str| -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
        u64::from_str_radix(hex.trim(), 16).ok()
    };
    let (Some(own), Some(init)) = (eff("self"), eff("1")) else {
        return "could not read its capabilities".into();
    };
    let names = [
        (12, "CAP_NET_ADMIN"),
        (21, "CAP_SYS_ADMIN"),
        (24, "CAP_SYS_RESOURCE"),
        (38, "CAP_PERFMON"),
        (39, "CAP_BPF"),
    ];
    let missing: Vec<String> = (0..64)
        .filter(|bit| init & !own & (1 << bit) != 0)
        .map(|bit| {
            names
                .iter()
                .find(|(b, _)| *b == bit)
                .map_or_else(|| format!("capability {bit}"), |(_, n)| (*n).to_owned())
        })
        .collect();
    if missing.is_empty() {
        format!("has every capability pid 1 has (CapEff {own:#x})")
    } else {
        format!(
            "lacks {} that pid 1 has (CapEff {own:#x}, pid 1 {init:#x})",
            missing.join(", ")
        )
    }
}

/// What the receiver runs.
#[derive(Clone, Copy, PartialEq)]
enum Filter {
    None,
    DropAll,
    /// The empty `XDP_PASS` program: what attaching any XDP program to the
    /// receiver costs a frame that goes on to the stack.
    PassAll,
    Iptables,
    Ipset,
    Nft,
    XdpFilterTool(&'static str),
    Agent(&'static str, Lookup),
}

impl Filter {
    fn name(self) -> String {
        match self {
            Filter::None => "no filter".into(),
            Filter::DropAll => "XDP drop-everything program (ceiling)".into(),
            Filter::PassAll => "XDP pass-everything program (floor of passed frames)".into(),
            Filter::Iptables => "iptables raw, one rule per entry".into(),
            Filter::Ipset => "iptables raw + ipset hash:net".into(),
            Filter::Nft => "nftables netdev ingress, interval set".into(),
            Filter::XdpFilterTool(m) => format!("xdp-filter {m}"),
            Filter::Agent(m, l) => format!("xdp-blocklist {m} {}", l.name()),
        }
    }
}

/// A filter installed in the receiver; removed on drop.
struct Installed<'a> {
    topo: &'a Topology,
    filter: Filter,
    fs: Option<Bpffs>,
    agent: Option<(Agent, tempfile::TempDir)>,
    /// The drop- or pass-everything program; detached when dropped.
    floor: Option<aya::Ebpf>,
}

impl Drop for Installed<'_> {
    fn drop(&mut self) {
        let rx = &self.topo.rx;
        match self.filter {
            Filter::None => {}
            Filter::DropAll | Filter::PassAll => drop(self.floor.take()),
            Filter::Iptables => drop(rx.exec(&["iptables", "-t", "raw", "-F", "PREROUTING"])),
            Filter::Ipset => {
                let _ = rx.exec(&["iptables", "-t", "raw", "-F", "PREROUTING"]);
                let _ = rx.exec(&["ipset", "destroy", "xblbench"]);
            }
            Filter::Nft => drop(rx.exec(&["nft", "delete", "table", "netdev", "xblbench"])),
            Filter::XdpFilterTool(_) => {
                if let Some(fs) = &self.fs {
                    let env = format!("LIBXDP_BPFFS={}", fs.path().display());
                    let _ = rx.exec(&["env", &env, "xdp-filter", "unload", "--all"]);
                }
            }
            Filter::Agent(..) => {
                if let Some((agent, _)) = &self.agent {
                    let _ = agent.try_run(&["detach", "--iface", RX_IF]);
                }
            }
        }
    }
}

fn install<'a>(
    topo: &'a Topology,
    filter: Filter,
    list: &[Prefix],
    dir: &Path,
) -> anyhow::Result<Installed<'a>> {
    let rx = &topo.rx;
    let mut inst = Installed {
        topo,
        filter,
        fs: None,
        agent: None,
        floor: None,
    };
    match filter {
        Filter::None => {}
        Filter::DropAll | Filter::PassAll => {
            let name = if matches!(filter, Filter::DropAll) {
                blocklist_ebpf::DROP_ALL_PROGRAM_NAME
            } else {
                blocklist_ebpf::FLOOR_PROGRAM_NAME
            };
            // The object's maps are pinned by name: give them a private
            // bpffs, gone with this case.
            let fs = Bpffs::new();
            let mut ebpf = EbpfLoader::new()
                .default_map_pin_directory(fs.path())
                .load(blocklist_agent::datapath::loader::OBJECT)
                .with_context(|| format!("loading the XDP object for {name}"))?;
            let prog: &mut Xdp = ebpf
                .program_mut(name)
                .with_context(|| format!("no program {name} in the object"))?
                .try_into()?;
            prog.load().with_context(|| format!("verifying {name}"))?;
            rx.enter(|| -> anyhow::Result<()> {
                let ifindex = nix::net::if_::if_nametoindex(RX_IF)?;
                prog.attach(ifindex, aya::programs::XdpMode::Driver)?;
                Ok(())
            })?;
            inst.floor = Some(ebpf);
            inst.fs = Some(fs);
        }
        Filter::Iptables => {
            let path = dir.join("iptables.rules");
            std::fs::write(&path, scripts::iptables(list))?;
            restore_in(rx, &["iptables-restore", "--noflush"], &path)?;
        }
        Filter::Ipset => {
            let path = dir.join("ipset.restore");
            std::fs::write(&path, scripts::ipset("xblbench", list, 65536))?;
            restore_in(rx, &["ipset", "restore", "-file"], &path)?;
            run_in(
                rx,
                &[
                    "iptables",
                    "-t",
                    "raw",
                    "-A",
                    "PREROUTING",
                    "-m",
                    "set",
                    "--match-set",
                    "xblbench",
                    "src",
                    "-j",
                    "DROP",
                ],
            )?;
        }
        Filter::Nft => {
            let path = dir.join("nft.conf");
            std::fs::write(&path, scripts::nft("xblbench", list, Some(RX_IF)))?;
            restore_in(rx, &["nft", "-f"], &path)?;
        }
        Filter::XdpFilterTool(mode) => {
            let fs = Bpffs::new();
            let env = format!("LIBXDP_BPFFS={}", fs.path().display());
            inst.fs = Some(fs);
            run_in(
                rx,
                &[
                    "env",
                    &env,
                    "xdp-filter",
                    "load",
                    "-m",
                    mode,
                    "-f",
                    "ipv4",
                    RX_IF,
                ],
            )?;
            let pin = inst
                .fs
                .as_ref()
                .map(|fs| fs.path().join("xdp-filter/filter_ipv4"))
                .context("bpffs")?;
            let map = Map::from_map_data(MapData::from_pin(&pin)?)?;
            let mut h: PerCpuHashMap<_, u32, u64> = map.try_into()?;
            let cpus = aya::util::nr_cpus()
                .map_err(|(what, e)| anyhow::anyhow!("{what}: {e}"))?
                .get() as usize;
            for p in list {
                ensure!(
                    p.prefix_len() == 32,
                    "xdp-filter holds single addresses only"
                );
                let key = u32::from_ne_bytes(p.v4_bytes().context("IPv4 only")?);
                // Low bit 1: match the source address (xdp-filter's
                // MAP_FLAG_SRC); the upper bits are its hit counter.
                h.insert(&key, PerCpuValues::try_from(vec![1u64; cpus])?, 0)
                    .with_context(|| format!("adding {p} to xdp-filter"))?;
            }
        }
        Filter::Agent(mode, lookup) => {
            let fs = Bpffs::new();
            let state = tempfile::tempdir()?;
            let agent = Agent::new(rx.name(), fs.pin_dir(), state.path().to_owned());
            inst.fs = Some(fs);
            let out = agent.run(&["attach", "--iface", RX_IF, "--mode", mode]);
            ensure!(
                out.stdout.contains(&format!("in {mode} mode")),
                "agent attached in another mode: {}",
                out.stdout
            );
            let feed = dir.join("feed.txt");
            std::fs::write(&feed, scripts::feed(list))?;
            let feed = feed.to_str().context("temporary path is not UTF-8")?;
            agent.run(&["sync", "--once", "--feed", feed]);
            agent.run(&["mode", "--lookup", lookup.name()]);
            inst.agent = Some((agent, state));
        }
    }
    Ok(inst)
}

/// What [`measure`] found: per-run figures and totals, so that the runs
/// of one case measured in several rounds add up.
#[derive(Default)]
struct Measured {
    drops: Vec<f64>,
    ns_per_frame: Vec<f64>,
    rx: u64,
    seen: u64,
    sent: u64,
    secs: f64,
}

impl Measured {
    fn add(&mut self, other: Measured) {
        self.drops.extend(other.drops);
        self.ns_per_frame.extend(other.ns_per_frame);
        self.rx += other.rx;
        self.seen += other.seen;
        self.sent += other.sent;
        self.secs += other.secs;
    }

    fn rx_mpps(&self) -> f64 {
        self.rx as f64 / self.secs / 1e6
    }

    fn tx_mpps(&self) -> f64 {
        self.sent as f64 / self.secs / 1e6
    }

    fn leaked(&self) -> f64 {
        self.seen as f64 / self.rx.max(1) as f64
    }
}

/// The NAPI thread's time on a CPU so far, ns (`schedstat`'s first field).
fn cpu_ns(pid: i32) -> anyhow::Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/schedstat"))?;
    s.split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .context("unreadable schedstat")
}

/// Runs `runs` sends against what is installed.
fn measure(topo: &Topology, generator: &Generator, runs: usize) -> anyhow::Result<Measured> {
    let napi = topo.pin_receiver()?;
    let mut m = Measured::default();
    for _ in 0..runs {
        let (rx0, seen0, cpu0) = (topo.rx_packets()?, topo.udp_seen()?, cpu_ns(napi)?);
        let (sent, secs) = generator.send(topo)?;
        // Let the receiver drain its ring before reading the counters.
        std::thread::sleep(Duration::from_millis(100));
        let (rx1, seen1, cpu1) = (topo.rx_packets()?, topo.udp_seen()?, cpu_ns(napi)?);
        let (rx, seen) = (rx1 - rx0, seen1.saturating_sub(seen0));
        m.drops.push(rx.saturating_sub(seen) as f64 / secs / 1e6);
        m.ns_per_frame.push((cpu1 - cpu0) as f64 / rx.max(1) as f64);
        m.rx += rx;
        m.seen += seen;
        m.sent += sent;
        m.secs += secs;
    }
    let cpu = std::fs::read_to_string(format!("/proc/{napi}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit(')')
                .next()?
                .split_whitespace()
                .nth(36)?
                .parse::<usize>()
                .ok()
        });
    ensure!(
        cpu == Some(topo.receiver_cpu),
        "the receiver's NAPI thread ran on CPU {cpu:?}, not {}",
        topo.receiver_cpu
    );
    Ok(m)
}

/// The XDP program a filter attaches, by the name it is loaded with.
fn program_of(filter: Filter) -> Option<&'static str> {
    match filter {
        Filter::Agent("native", _) => Some(blocklist_ebpf::PROGRAM_NAME),
        Filter::PassAll => Some(blocklist_ebpf::FLOOR_PROGRAM_NAME),
        Filter::XdpFilterTool("native") => Some("xdpfilt_"),
        _ => None,
    }
}

/// The newest loaded program whose name starts with `name`.
fn loaded(name: &str) -> anyhow::Result<aya::programs::ProgramInfo> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| p.name_as_str().is_some_and(|n| n.starts_with(name)))
        .max_by_key(|p| p.id())
        .with_context(|| format!("no loaded program named {name}*"))
}

/// The time the attached program `name` itself ran per frame during one
/// run (the kernel's `bpf_stats`, on only for this run: its two clock
/// reads per frame are in the figure, the same for every program).
fn program_ns(topo: &Topology, generator: &Generator, name: &str) -> anyhow::Result<f64> {
    let before = loaded(name)?;
    let stats = aya::sys::enable_stats(aya::sys::Stats::RunTime)
        .context("enabling bpf_stats (BPF_ENABLE_STATS)")?;
    measure(topo, generator, 1)?;
    drop(stats);
    let after = loaded(name)?;
    ensure!(
        after.id() == before.id(),
        "{name} was replaced during the run"
    );
    let runs = after.run_count() - before.run_count();
    ensure!(runs > 0, "{name} did not run");
    Ok((after.run_time() - before.run_time()).as_nanos() as f64 / runs as f64)
}

/// Per-packet cost (ns, median of [`RUNS`]) of the loaded XDP program whose
/// name starts with `name`, on one repeated hit frame and on 256 distinct
/// hit frames, through BPF_PROG_TEST_RUN: the same method for this program
/// and for xdp-filter, on the same list.
fn per_packet(name: &str, list: &[Prefix], rng: &mut StdRng) -> anyhow::Result<(f64, f64)> {
    const REPEAT: u32 = 1_000_000;
    const DISTINCT: usize = 256;
    let fd = loaded(name)?.fd()?;
    let one = to_receiver(inside(&list[0], rng));
    let many: Vec<Vec<u8>> = (0..DISTINCT)
        .map(|_| to_receiver(inside(&list[rng.random_range(0..list.len())], rng)))
        .collect();
    let run = |f: &[u8], repeat: u32| -> anyhow::Result<f64> {
        let r = test_run::run_fd(fd.as_fd(), f, repeat)?;
        ensure!(
            r.action == test_run::XDP_DROP,
            "{name}* did not drop a listed source (action {})",
            r.action
        );
        Ok(f64::from(r.duration_ns))
    };
    let mut ones = Vec::new();
    let mut randoms = Vec::new();
    for _ in 0..RUNS {
        ones.push(run(&one, REPEAT)?);
        let per = REPEAT / DISTINCT as u32;
        let mut sum = 0.0;
        for f in &many {
            sum += run(f, per)?;
        }
        randoms.push(sum / DISTINCT as f64);
    }
    Ok((stats(ones).0, stats(randoms).0))
}

/// (program, list, entries, one frame ns, 256 distinct ns).
type PerPacket = (String, String, usize, f64, f64);

/// (filter, list, entries, sources, the program's own ns per frame).
type ProgramTime = (String, String, usize, &'static str, f64);

/// The issue's targets as ratios from this run; a missing case (a
/// filtered run) leaves its line out.
fn print_targets(rows: &[Row], costs: &[PerPacket], program_times: &[ProgramTime]) {
    let row = |filter: &str, list: &str, n: usize, shape: &str| {
        rows.iter()
            .find(|r| r.filter == filter && r.list == list && r.prefixes == n && r.shape == shape)
    };
    let drop = |filter: &str, list: &str, n: usize, shape: &str| {
        row(filter, list, n, shape).map(|r| r.drop_mpps.0)
    };
    // The median over rounds of `a`'s run minus `b`'s run in the same
    // round: both ran within seconds of each other, on the same sources.
    let ns_above = |a: &str, b: &str, list: &str, n: usize, shape: &str| {
        let (a, b) = (row(a, list, n, shape)?, row(b, list, n, shape)?);
        (a.rx_ns_runs.len() == b.rx_ns_runs.len()).then(|| {
            let d = a.rx_ns_runs.iter().zip(&b.rx_ns_runs);
            stats(d.map(|(x, y)| x - y).collect()).0
        })
    };
    let cost = |filter: &str, list: &str, n: usize| {
        costs
            .iter()
            .find(|c| c.0 == filter && c.1 == list && c.2 == n)
            .map(|c| c.4)
    };
    let table = "xdp-blocklist native table";
    let line = |what: &str, v: Option<f64>, target: &str, met: fn(f64) -> bool| {
        if let Some(v) = v {
            println!(
                "| {what} | {v:.2} | {target} | {} |",
                if met(v) { "met" } else { "**missed**" }
            );
        }
    };
    let t1m = drop(table, "mixed", 1_000_000, "list");
    let ratio = |a: Option<f64>, b: Option<f64>| Some(a? / b?);
    println!("\n### Targets (ratios from this run)\n");
    println!("| target | value | wanted | |");
    println!("|---|---:|---|---|");
    line(
        "live drop, table 1M mixed / xdp-filter native 10k /32",
        ratio(t1m, drop("xdp-filter native", "/32", 10_000, "list")),
        ">= 1.0",
        |v| v >= 1.0,
    );
    line(
        "live drop, table 1M mixed / drop-everything ceiling",
        ratio(
            t1m,
            drop("XDP drop-everything program (ceiling)", "-", 0, "-"),
        ),
        ">= 0.75",
        |v| v >= 0.75,
    );
    line(
        "live drop, table 1M mixed / ipset hash:net 1M mixed",
        ratio(
            t1m,
            drop("iptables raw + ipset hash:net", "mixed", 1_000_000, "list"),
        ),
        ">= 4",
        |v| v >= 4.0,
    );
    line(
        "per packet, table 1M mixed / xdp-filter 10k /32 (256 distinct)",
        ratio(
            cost(table, "mixed", 1_000_000),
            cost("xdp-filter native", "/32", 10_000),
        ),
        "<= 1.0",
        |v| v <= 1.0,
    );
    line(
        "per packet, table 1M / 1k mixed (256 distinct)",
        ratio(cost(table, "mixed", 1_000_000), cost(table, "mixed", 1_000)),
        "<= 1.2",
        |v| v <= 1.2,
    );
    line(
        "live drop, table 1M mixed: spoofed / from the list",
        ratio(drop(table, "mixed", 1_000_000, "spoofed"), t1m),
        ">= 0.8",
        |v| v >= 0.8,
    );
    let none = "no filter";
    let pass = "XDP pass-everything program (floor of passed frames)";
    let miss = ns_above(table, none, "mixed", 1_000_000, "misses");
    line(
        "receiver ns/frame, table 1M mixed misses minus no filter (median over rounds of the same misses)",
        miss,
        "<= 100",
        |v| v <= 100.0,
    );
    // Not a target: how much of that any XDP program on the receiver
    // costs, and how much the lookup adds.
    let floor = ns_above(pass, none, "mixed", 1_000_000, "misses");
    let lookup = ns_above(table, pass, "mixed", 1_000_000, "misses");
    if let (Some(m), Some(f), Some(l)) = (miss, floor, lookup) {
        println!(
            "\nOf the misses' {m:.0} ns per frame above no filter, the empty XDP_PASS program \
             accounts for {f:.0} and the lookup for {l:.0} (each a median of per-round \
             differences, so they need not add up)."
        );
    }
    let own = |filter: &str| {
        program_times
            .iter()
            .find(|t| t.0 == filter && t.1 == "mixed" && t.2 == 1_000_000 && t.3 == "misses")
            .map(|t| t.4)
    };
    if let (Some(t), Some(p)) = (own(table), own(pass)) {
        println!(
            "The table program itself ran {t:.0} ns per miss frame and the empty program {p:.0} \
             (bpf_stats): {:.0} ns of the lookup is time spent in the program.",
            t - p
        );
    }
}

/// Runs the live benchmark; prints its table and returns its JSON.
/// `only`: run just the cases whose "filter list entries" line contains it
/// (and the no-filter baseline), for a quick look at one case, e.g.
/// `xdp-blocklist native mixed 10000`.
pub fn run(only: Option<&str>) -> anyhow::Result<serde_json::Value> {
    let topo = Topology::new()?;
    let dir = tempfile::tempdir()?;
    let mut rng = StdRng::seed_from_u64(0x11fe);
    let mut source_rng = StdRng::seed_from_u64(0x5e4d);
    let mut frame_rng = StdRng::seed_from_u64(0xf4a3);
    let mut rows = Vec::new();
    let mut costs: Vec<PerPacket> = Vec::new();
    let mut program_times: Vec<ProgramTime> = Vec::new();
    let iptables = Command::new("iptables").arg("-V").output()?;
    let iptables = String::from_utf8_lossy(&iptables.stdout).trim().to_owned();
    eprintln!(
        "live bench: sender on CPU {}, receiver NAPI thread on CPU {}; {iptables}",
        topo.sender_cpu, topo.receiver_cpu
    );

    // One filter: installed once, its runs back to back. Several (a
    // shape's floors and lookups): installed in turn for one run each,
    // [`RUNS`] rounds, on the same sources, so that the host's drift
    // (by half within minutes) falls on all of them alike instead of
    // on whichever ran last.
    let mut record = |filters: &[Filter],
                      list_name: &str,
                      list: &[Prefix],
                      shape: &'static str|
     -> anyhow::Result<()> {
        let sources: Vec<Ipv4Addr> = match (filters[0], shape) {
            // The floors of a traffic shape see its sources; the global
            // floors a fixed range.
            (Filter::None | Filter::DropAll | Filter::PassAll, "-") => (0..65536u32)
                .map(|i| Ipv4Addr::from(0xc633_0000 | i))
                .collect(),
            (_, "spoofed") => spoofed(list, 65_536, &mut source_rng),
            (_, "misses") => {
                let c = Coverage::new(list);
                (0..65_536).map(|_| c.miss(&mut source_rng)).collect()
            }
            _ => list.iter().map(|p| inside(p, &mut source_rng)).collect(),
        };
        let generator = Generator::load(&topo, &sources)?;
        let mut measured: Vec<Measured> = filters.iter().map(|_| Measured::default()).collect();
        if let [filter] = filters {
            let _installed = install(&topo, *filter, list, dir.path())
                .with_context(|| format!("installing {}", filter.name()))?;
            measured[0] = measure(&topo, &generator, RUNS)?;
            // Per-packet cost beside xdp-filter, on the list it can hold,
            // and of the table at the smallest and largest mixed lists.
            let program = program_of(*filter).filter(|_| !matches!(filter, Filter::PassAll));
            let per_packet_case = matches!(
                (list_name, list.len(), shape),
                ("/32", 10_000, "list") | ("mixed", 1_000, "list") | ("mixed", 1_000_000, "list")
            );
            if let (Some(program), true) = (program, per_packet_case) {
                let (one, random) = per_packet(program, list, &mut frame_rng)?;
                costs.push((filter.name(), list_name.to_owned(), list.len(), one, random));
            }
        } else {
            for _ in 0..RUNS {
                for (filter, m) in filters.iter().zip(&mut measured) {
                    let _installed = install(&topo, *filter, list, dir.path())
                        .with_context(|| format!("installing {}", filter.name()))?;
                    m.add(measure(&topo, &generator, 1)?);
                }
            }
            // Then one more run of each program with bpf_stats on, apart
            // from the rounds (the stats' clock reads slow every frame):
            // how much of a filter's cost is the program's own time.
            for filter in filters {
                if let Some(name) = program_of(*filter) {
                    let _installed = install(&topo, *filter, list, dir.path())
                        .with_context(|| format!("installing {}", filter.name()))?;
                    let ns = program_ns(&topo, &generator, name)?;
                    eprintln!(
                        "  {:<40} program time {ns:.0} ns/frame (bpf_stats)",
                        filter.name()
                    );
                    program_times.push((
                        filter.name(),
                        list_name.to_owned(),
                        list.len(),
                        shape,
                        ns,
                    ));
                }
            }
        }
        for (filter, m) in filters.iter().zip(measured) {
            let (rx_mpps, leaked, tx_mpps) = (m.rx_mpps(), m.leaked(), m.tx_mpps());
            let drop_mpps = stats(m.drops);
            let rx_ns_runs = m.ns_per_frame;
            let ns = stats(rx_ns_runs.clone());
            eprintln!(
                "  {:<40} {list_name:>6} {:>7} {shape:<7}: drop {:6.3} Mpps, {:6.0} ns/frame ({:.0}–{:.0}) (receiver {rx_mpps:.3}, leaked {:.1}%, sender {tx_mpps:.2})",
                filter.name(),
                list.len(),
                drop_mpps.0,
                ns.0,
                ns.1,
                ns.2,
                leaked * 100.0,
            );
            rows.push(Row {
                filter: filter.name(),
                list: list_name.to_owned(),
                prefixes: list.len(),
                drop_mpps,
                rx_mpps,
                leaked,
                tx_mpps,
                rx_ns_per_frame: ns,
                rx_ns_runs,
                shape,
            });
        }
        Ok(())
    };

    record(&[Filter::None], "-", &[], "-")?;
    record(&[Filter::DropAll], "-", &[], "-")?;
    let table = Filter::Agent("native", Lookup::Table);
    let trie = Filter::Agent("native", Lookup::Trie);
    for (list_name, n) in [
        ("/32", 1_000),
        ("/32", 10_000),
        ("/32", 100_000),
        ("mixed", 1_000),
        ("mixed", 10_000),
        ("mixed", 100_000),
        ("mixed", 1_000_000),
    ] {
        let list = if list_name == "/32" {
            singles(n, &mut rng)
        } else {
            prefixes(n, &mut rng)
        };
        let mut cases: Vec<(Vec<Filter>, &str)> = vec![(vec![table], "list"), (vec![trie], "list")];
        if list_name == "mixed" && (n == 10_000 || n == 1_000_000) {
            cases.extend([(vec![table], "spoofed"), (vec![trie], "spoofed")]);
            // The misses' floors (no filter, an empty program) and both
            // lookups in rounds: the host's speed drifts by half within
            // minutes, and the target is a difference of a few percent.
            cases.push((vec![Filter::None, Filter::PassAll, table, trie], "misses"));
        }
        if list_name == "/32" && n <= 10_000 {
            cases.push((vec![Filter::XdpFilterTool("native")], "list"));
        }
        cases.extend([(vec![Filter::Ipset], "list"), (vec![Filter::Nft], "list")]);
        if n <= 10_000 {
            cases.push((vec![Filter::Iptables], "list"));
        }
        for (filters, shape) in cases {
            let selected = |f: Filter| {
                only.is_none_or(|o| format!("{} {list_name} {n} {shape}", f.name()).contains(o))
            };
            let lookups: Vec<Filter> = filters
                .iter()
                .copied()
                .filter(|f| !matches!(f, Filter::None | Filter::PassAll) && selected(*f))
                .collect();
            // A shape's floors run whenever one of its lookups does.
            let run: Vec<Filter> = filters
                .iter()
                .copied()
                .filter(|f| matches!(f, Filter::None | Filter::PassAll) || lookups.contains(f))
                .collect();
            if !lookups.is_empty() {
                record(&run, list_name, &list, shape)?;
            }
        }
    }

    println!(
        "\n### Live drop rate over veth (Mpps, median of {RUNS} runs of {SECONDS} s, min–max)\n"
    );
    println!(
        "Sender: live-frames XDP generator on CPU {}; receiver: NAPI thread on CPU {}. Sources: from the list, spoofed (uniform inside its entries wider than /24) or misses (uniform over unicast space outside every entry). A frame that reaches UDP leaked. ns/frame: the receiver's CPU time per frame it polled. {iptables}.\n",
        topo.sender_cpu, topo.receiver_cpu
    );
    println!(
        "| filter | list | entries | sources | dropped Mpps | receiver ns/frame | received Mpps | leaked |"
    );
    println!("|---|---|---:|---|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {:.3} ({:.3}–{:.3}) | {:.0} ({:.0}–{:.0}) | {:.3} | {:.1}% |",
            r.filter,
            r.list,
            r.prefixes,
            r.shape,
            r.drop_mpps.0,
            r.drop_mpps.1,
            r.drop_mpps.2,
            r.rx_ns_per_frame.0,
            r.rx_ns_per_frame.1,
            r.rx_ns_per_frame.2,
            r.rx_mpps,
            r.leaked * 100.0
        );
    }
    println!(
        "\n### Per-packet cost of the attached programs (BPF_PROG_TEST_RUN, ns, median of {RUNS}; 256 distinct sources are cache-warm)\n"
    );
    println!("| program | list | entries | drop, one frame | drop, 256 distinct sources |");
    println!("|---|---|---:|---:|---:|");
    for (name, list, n, one, random) in &costs {
        println!("| {name} | {list} | {n} | {one:.1} | {random:.1} |");
    }
    println!(
        "\n### The programs' own time per frame (bpf_stats, one run each after the rounds; the stats' two clock reads per frame are in every figure)\n"
    );
    println!("| program | list | entries | sources | ns per frame |");
    println!("|---|---|---:|---|---:|");
    for (name, list, n, shape, ns) in &program_times {
        println!("| {name} | {list} | {n} | {shape} | {ns:.0} |");
    }
    print_targets(&rows, &costs, &program_times);
    Ok(serde_json::json!({
        "program_time": program_times.iter().map(|(f, l, n, shape, ns)| serde_json::json!({"filter": f, "list": l, "entries": n, "sources": shape, "ns_per_frame": ns})).collect::<Vec<_>>(),
        "per_packet": costs.iter().map(|(f, l, n, one, random)| serde_json::json!({"filter": f, "list": l, "entries": n, "one_frame_ns": one, "distinct_ns": random})).collect::<Vec<_>>(),
        "sender_cpu": topo.sender_cpu,
        "receiver_cpu": topo.receiver_cpu,
        "iptables": iptables,
        "rows": rows,
    }))
}
