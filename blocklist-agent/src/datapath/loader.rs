//! Loading the embedded XDP object with its maps pinned by name.
//!
//! The object is built by `build.rs` and embedded in the binary. Loading it
//! with a pin directory makes aya reuse maps already pinned there (so
//! entries and counters survive reloads and upgrades) and pin the ones that
//! are not.

use aya::{
    Ebpf, EbpfLoader,
    programs::{ProgramError, Xdp},
};
use blocklist_ebpf::{FLOOR_PROGRAM_NAME, PROGRAM_NAME, map_names};

use super::{DatapathError, pin::PinDir};

/// The XDP object built from `blocklist-ebpf`.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/blocklist"));

/// A loaded (verified, not yet attached) program and its maps.
pub struct Loaded {
    ebpf: Ebpf,
}

/// Options for [`load`].
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Capacity of the per-address LRU (`IP_HITS`); only applies when the
    /// map is created, an existing pin keeps its size.
    pub ip_hits_entries: u32,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            ip_hits_entries: blocklist_ebpf::IP_HITS_DEFAULT_ENTRIES,
        }
    }
}

/// Loads the object, reusing or creating the pinned maps under `pin`, and
/// loads the main program into the kernel (running the verifier).
pub fn load(pin: &PinDir, opts: &LoadOptions) -> Result<Loaded, DatapathError> {
    pin.ensure()?;
    let mut loader = EbpfLoader::new();
    loader.default_map_pin_directory(pin.root());
    loader.map_max_entries(map_names::IP_HITS, opts.ip_hits_entries.max(1));
    let ebpf = loader.load(OBJECT).map_err(|e| {
        DatapathError::other(
            format!(
                "loading the XDP object with maps pinned in {}",
                pin.root().display()
            ),
            e,
        )
    })?;
    let mut loaded = Loaded { ebpf };
    loaded
        .xdp(PROGRAM_NAME)?
        .load()
        .map_err(|e| DatapathError::other("loading the XDP program (verifier)", e))?;
    Ok(loaded)
}

impl Loaded {
    /// The main program, loaded.
    pub fn program(&mut self) -> Result<&mut Xdp, DatapathError> {
        self.xdp(PROGRAM_NAME)
    }

    /// The empty `XDP_PASS` program, loaded on first use (benchmark floor).
    pub fn floor_program(&mut self) -> Result<&mut Xdp, DatapathError> {
        let p = self.xdp(FLOOR_PROGRAM_NAME)?;
        match p.fd() {
            Ok(_) => {}
            Err(ProgramError::NotLoaded) => p
                .load()
                .map_err(|e| DatapathError::other("loading the floor program", e))?,
            Err(e) => return Err(DatapathError::other("loading the floor program", e)),
        }
        Ok(p)
    }

    fn xdp(&mut self, name: &str) -> Result<&mut Xdp, DatapathError> {
        let prog = self
            .ebpf
            .program_mut(name)
            .ok_or_else(|| DatapathError::Other {
                what: format!("the embedded object has no program `{name}`"),
                source: "rebuild the agent".into(),
            })?;
        prog.try_into()
            .map_err(|e| DatapathError::other(format!("program `{name}` is not XDP"), e))
    }
}
