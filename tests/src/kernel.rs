//! The XDP program loaded into the real kernel, without an interface, for
//! verdict tests and per-packet cost: frames go in through
//! `BPF_PROG_TEST_RUN`.

use blocklist_agent::{
    config::{LOOKUP_ENV, Lookup},
    datapath::{
        loader::{self, LoadOptions, Loaded},
        maps::{Maps, TrieKind},
        test_run,
    },
    prefix::{Family, Prefix},
};
use blocklist_ebpf::{Config, GlobalCounters};

use crate::bpffs::Bpffs;

/// The lookup the suites run with: `XDP_BLOCKLIST_LOOKUP` (`table` or
/// `trie`), the table when unset. `cargo xtask test` runs the datapath
/// suites once with each.
pub fn lookup_under_test() -> Lookup {
    match std::env::var(LOOKUP_ENV).as_deref() {
        Ok("trie") => Lookup::Trie,
        Ok("table") | Err(_) => Lookup::Table,
        Ok(other) => panic!("{LOOKUP_ENV}={other:?}: expected table or trie"),
    }
}

/// A loaded program with its maps pinned on a private bpffs.
pub struct Kernel {
    /// Typed map access.
    pub maps: Maps,
    loaded: Loaded,
    _fs: Bpffs,
}

impl Kernel {
    /// Loads the program (runs the verifier) with fresh maps, deciding
    /// with the lookup that `XDP_BLOCKLIST_LOOKUP` names (the table when
    /// unset), as the agent would.
    pub fn load() -> Self {
        Self::load_on(Bpffs::new(), &Self::options())
    }

    /// The options [`Kernel::load`] loads with: the exact maps at their
    /// largest, because the suites write them directly (`insert_many`),
    /// past the writers that grow them, and keep this handle's program,
    /// which growing would leave on the old map.
    pub fn options() -> LoadOptions {
        LoadOptions {
            exact_entries: Some(u32::MAX),
            ..LoadOptions::default()
        }
    }

    /// [`Kernel::load`] on a bpffs that may hold maps pinned already, with
    /// the given options.
    pub fn load_on(fs: Bpffs, opts: &LoadOptions) -> Self {
        let pin = fs.pin();
        let loaded = loader::load(&pin, opts).expect("loading the XDP program");
        let maps = Maps::open(&pin).expect("opening the pinned maps");
        let mut k = Self {
            maps,
            loaded,
            _fs: fs,
        };
        k.set_lookup(lookup_under_test());
        k
    }

    /// Switches the program between the compiled table and the tries.
    pub fn set_lookup(&mut self, lookup: Lookup) {
        let mut c: Config = self.maps.config().expect("config");
        c.lookup = lookup.abi();
        self.maps.set_config(c).expect("writing config");
    }

    /// The pin directory of its maps, for agent commands that should act
    /// on this program's maps.
    pub fn pin_dir(&self) -> std::path::PathBuf {
        self._fs.pin_dir()
    }

    /// A descriptor of the loaded program of its own, for threads that run
    /// it while this handle writes the maps.
    pub fn program_fd(&mut self) -> std::os::fd::OwnedFd {
        use std::os::fd::AsFd as _;
        let prog = self.loaded.program().expect("program");
        prog.fd()
            .expect("program fd")
            .as_fd()
            .try_clone_to_owned()
            .expect("duplicating the program fd")
    }

    /// Attaches the program (and the floor program) in native mode to a
    /// veth pair in `ns`, for as long as `ns` lives. A program that some
    /// interface already runs is in the kernel's XDP dispatcher, so
    /// `BPF_PROG_TEST_RUN` no longer swaps it in and out, which costs two
    /// RCU grace periods (tens of milliseconds in a VM) per call.
    pub fn keep_in_dispatcher(&mut self, ns: &crate::lab::Netns) {
        ns.ip(&[
            "link", "add", "xbkd0", "type", "veth", "peer", "name", "xbkd1",
        ]);
        ns.ip(&["link", "set", "xbkd0", "up"]);
        ns.ip(&["link", "set", "xbkd1", "up"]);
        let attach = |prog: &mut aya::programs::Xdp, iface: &str| {
            ns.enter(|| {
                let idx = nix::net::if_::if_nametoindex(iface).expect("veth index");
                prog.attach(idx, aya::programs::XdpMode::Driver)
                    .expect("attaching to the veth");
            })
        };
        attach(self.loaded.program().expect("program"), "xbkd0");
        attach(self.loaded.floor_program().expect("floor program"), "xbkd1");
    }

    /// Attaches the cgroup egress hooks to `cgroup` (pinned with the maps).
    pub fn attach_egress(&mut self, cgroup: &std::path::Path) {
        let pin = blocklist_agent::datapath::pin::PinDir::new(self.pin_dir());
        blocklist_agent::datapath::cgroup::attach(&mut self.loaded, &pin, cgroup)
            .expect("attaching the egress hooks");
    }

    /// Runs one frame through the program; returns the XDP action.
    pub fn verdict(&mut self, frame: &[u8]) -> u32 {
        let prog = self.loaded.program().expect("program");
        test_run::run(prog, frame, 1)
            .expect("BPF_PROG_TEST_RUN")
            .action
    }

    /// Mean ns per run of `frame`, repeated `repeat` times in the kernel.
    pub fn cost_ns(&mut self, frame: &[u8], repeat: u32) -> u32 {
        let prog = self.loaded.program().expect("program");
        test_run::run(prog, frame, repeat)
            .expect("BPF_PROG_TEST_RUN")
            .duration_ns
    }

    /// The same for the empty `XDP_PASS` program (the floor).
    pub fn floor_cost_ns(&mut self, frame: &[u8], repeat: u32) -> u32 {
        let prog = self.loaded.floor_program().expect("floor program");
        test_run::run(prog, frame, repeat)
            .expect("BPF_PROG_TEST_RUN")
            .duration_ns
    }

    /// Mean ns per run of `frame` through the TC classifier `name`
    /// (`tc_ingress`, `tc_egress` or the `tc_pass_floor`), as an skb.
    pub fn tc_cost_ns(&mut self, name: &str, frame: &[u8], repeat: u32) -> u32 {
        self.tc_run(name, frame, repeat).duration_ns
    }

    /// The TC classifier `name`'s verdict on `frame` (`TC_ACT_*`).
    pub fn tc_verdict(&mut self, name: &str, frame: &[u8]) -> i32 {
        self.tc_run(name, frame, 1).action as i32
    }

    fn tc_run(&mut self, name: &str, frame: &[u8], repeat: u32) -> test_run::RunResult {
        use std::os::fd::AsFd as _;
        let prog = self.loaded.tc_program(name).expect("TC program");
        let fd = prog.fd().expect("TC program fd");
        test_run::run_fd(fd.as_fd(), frame, repeat).expect("BPF_PROG_TEST_RUN")
    }

    /// Adds a block entry.
    pub fn block(&mut self, cidr: &str) {
        let p: Prefix = cidr.parse().expect("valid prefix");
        self.maps.insert(TrieKind::Block, p, 0).expect("inserting");
    }

    /// Adds an allow entry.
    pub fn allow(&mut self, cidr: &str) {
        let p: Prefix = cidr.parse().expect("valid prefix");
        self.maps.insert(TrieKind::Allow, p, 0).expect("inserting");
    }

    /// Removes every entry of `kind` (both families).
    pub fn clear(&mut self, kind: TrieKind) {
        for family in Family::ALL {
            let all: Vec<Prefix> = self
                .maps
                .entries(kind, family)
                .expect("listing")
                .into_iter()
                .map(|(p, _)| p)
                .collect();
            self.maps.remove_many(kind, &all).expect("removing");
        }
    }

    /// Sets the live action and match mode.
    pub fn set_mode(&mut self, action: u32, match_mode: u32) {
        let mut c: Config = self.maps.config().expect("config");
        c.action = action;
        c.match_mode = match_mode;
        self.maps.set_config(c).expect("writing config");
    }

    /// Global counters.
    pub fn global(&self) -> GlobalCounters {
        self.maps.global().expect("global counters")
    }
}
