//! Opening the pinned maps, and the error helpers every map call uses.

use super::*;

pub(super) const BPF_F_RDONLY: u32 = 1 << 3;

/// `BPF_OBJ_GET` with `file_flags`; aya's `from_pin` always asks for
/// read-write, which needs write permission on the pin.
pub(crate) fn obj_get(
    path: &std::path::Path,
    file_flags: u32,
) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::{fd::FromRawFd as _, unix::ffi::OsStrExt as _};
    #[repr(C)]
    struct ObjAttr {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
        path_fd: i32,
        _pad: u32,
    }
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let mut attr = ObjAttr {
        pathname: c.as_ptr() as u64,
        bpf_fd: 0,
        file_flags,
        path_fd: 0,
        _pad: 0,
    };
    // SAFETY: `ObjAttr` is the `obj` member BPF_OBJ_GET reads, and `c`
    // outlives the call.
    let fd =
        unsafe { crate::datapath::sys::bpf(crate::datapath::sys::Command::ObjGet, &mut attr) }?;
    // SAFETY: BPF_OBJ_GET returned a new descriptor that we now own.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) })
}

pub(super) fn open_map(pin: &PinDir, name: &str, access: Access) -> Result<Map, DatapathError> {
    let path = pin.map(name);
    match std::fs::metadata(&path) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Err(DatapathError::PermissionDenied {
                what: format!("reading {}", path.display()),
            });
        }
        Err(_) => return Err(DatapathError::NotPinned(pin.root().to_owned())),
    }
    let what = || format!("opening pinned map {}", path.display());
    let data = match access {
        Access::ReadWrite => {
            MapData::from_pin(&path).map_err(|e| DatapathError::other(what(), e))?
        }
        Access::ReadOnly => {
            let fd = obj_get(&path, BPF_F_RDONLY).map_err(|e| DatapathError::other(what(), e))?;
            MapData::from_fd(fd).map_err(|e| DatapathError::other(what(), e))?
        }
    };
    Map::from_map_data(data)
        .map_err(|e| DatapathError::other(format!("reading map {}", path.display()), e))
}

pub(super) fn typed<T>(pin: &PinDir, name: &str, access: Access) -> Result<T, DatapathError>
where
    T: TryFrom<Map, Error = MapError>,
{
    T::try_from(open_map(pin, name, access)?).map_err(|e| {
        DatapathError::other(
            format!(
                "map {name} under {} does not have the layout this agent expects \
                 (pinned by another version?); detach all interfaces and attach again",
                pin.root().display()
            ),
            e,
        )
    })
}

/// The map pinned as `name`, or `None` when the pins have none (made by
/// an older program).
pub(super) fn optional<T>(
    pin: &PinDir,
    name: &str,
    access: Access,
) -> Result<Option<T>, DatapathError>
where
    T: TryFrom<Map, Error = MapError>,
{
    pin.map(name)
        .exists()
        .then(|| typed(pin, name, access))
        .transpose()
}

pub(super) fn map_err(what: impl Into<String>) -> impl FnOnce(MapError) -> DatapathError {
    let what = what.into();
    move |e| DatapathError::other(what, e)
}

pub(super) fn is_enoent(e: &MapError) -> bool {
    match e {
        MapError::KeyNotFound | MapError::ElementNotFound => true,
        MapError::SyscallError(s) => s.io_error.raw_os_error() == Some(libc::ENOENT),
        _ => false,
    }
}

pub(super) fn is_full(e: &MapError) -> bool {
    matches!(e, MapError::SyscallError(s)
        if matches!(s.io_error.raw_os_error(), Some(libc::ENOSPC) | Some(libc::E2BIG)))
}

impl Maps {
    /// Opens every pinned map under `pin` for writing, or says that
    /// nothing is attached.
    pub fn open(pin: &PinDir) -> Result<Self, DatapathError> {
        Self::open_with(pin, Access::ReadWrite)
    }

    /// Opens every pinned map under `pin` for reading only.
    pub fn open_read_only(pin: &PinDir) -> Result<Self, DatapathError> {
        Self::open_with(pin, Access::ReadOnly)
    }

    pub(super) fn open_with(pin: &PinDir, a: Access) -> Result<Self, DatapathError> {
        Ok(Self {
            pin: pin.clone(),
            block_v4: typed(pin, map_names::BLOCK_V4, a)?,
            block_v6: typed(pin, map_names::BLOCK_V6, a)?,
            exact_v4: typed(pin, map_names::EXACT_V4, a)?,
            exact_v6: typed(pin, map_names::EXACT_V6, a)?,
            allow_v4: typed(pin, map_names::ALLOW_V4, a)?,
            allow_v6: typed(pin, map_names::ALLOW_V6, a)?,
            config: typed(pin, map_names::CONFIG, a)?,
            global: typed(pin, map_names::GLOBAL, a)?,
            hook_global: optional(pin, map_names::HOOK_GLOBAL, a)?,
            addr_hits: typed(pin, map_names::ADDR_HITS, a)?,
            table_meta: typed(pin, map_names::TABLE_META, a)?,
            table_slots: typed(pin, map_names::TABLE_V4, a)?,
            table_ranges: typed(pin, map_names::RANGES_V4, a)?,
            table_empty: optional(pin, map_names::EMPTY_V4, a)?,
            table_empty16: optional(pin, map_names::EMPTY16_V4, a)?,
            table_empty22: optional(pin, map_names::EMPTY22_V4, a)?,
            table_slots_v6: typed(pin, map_names::TABLE_V6, a)?,
            table_ranges_v6: typed(pin, map_names::RANGES_V6, a)?,
            entry_counters: typed(pin, map_names::ENTRY_COUNTERS, a)?,
            mirror: None,
            table: None,
            batching: false,
            deferred_v6: Vec::new(),
            marked: false,
        })
    }

    /// The pin directory these maps came from.
    pub fn pin(&self) -> &PinDir {
        &self.pin
    }

    /// Runs a write; if it fails, forgets the mirror, which may then be
    /// behind the kernel (part of a batch may have been written).
    pub(super) fn guarded<R>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<R, DatapathError>,
    ) -> Result<R, DatapathError> {
        let r = f(self);
        if r.is_err() {
            self.mirror = None;
        }
        r
    }

    /// The live configuration.
    pub fn config(&self) -> Result<Config, DatapathError> {
        self.config.get(&0, 0).map_err(map_err("reading CONFIG"))
    }

    /// Replaces the live configuration; the program sees it on the next packet.
    pub fn set_config(&mut self, config: Config) -> Result<(), DatapathError> {
        self.config
            .set(0, &config, 0)
            .map_err(map_err("writing CONFIG"))
    }
}
