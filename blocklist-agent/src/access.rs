//! Least privilege: who may read what the agent writes.
//!
//! With `[access] group = "NAME"` (or a numeric gid), writers leave the pin
//! directory and the state directory readable by that group (directories
//! 2750 with the group inherited, files 0640), so its members can run
//! `status`, `top`, `check` and `list` without root: inspection opens the
//! pinned maps read-only. Nothing is ever world-writable, and the agent
//! refuses to start from a world-writable config or state directory,
//! which would let anyone rewrite what it blocks.

use std::{
    fs,
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::Path,
};

use anyhow::{Context as _, bail};
use nix::unistd::{Gid, Group, chown};

use crate::{datapath::pin::PinDir, state::StateDir};

/// `[access]`.
#[derive(Clone, Debug, Default, serde::Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AccessConfig {
    /// Group (name or gid) allowed to inspect; none by default.
    pub group: Option<String>,
}

/// Resolves a group name or number.
pub fn resolve_group(name: &str) -> anyhow::Result<Gid> {
    if let Ok(n) = name.parse::<u32>() {
        return Ok(Gid::from_raw(n));
    }
    Group::from_name(name)
        .with_context(|| format!("looking up group {name}"))?
        .map(|g| g.gid)
        .with_context(|| {
            format!(
                "[access] group = {name:?} does not exist; create it (groupadd {name}) or use a gid"
            )
        })
}

fn share_path(path: &Path, gid: Gid, dir_mode: u32, file_mode: u32) -> anyhow::Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    chown(path, None, Some(gid))
        .with_context(|| format!("changing the group of {}", path.display()))?;
    let mode = if meta.is_dir() { dir_mode } else { file_mode };
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", path.display()))?;
    if meta.is_dir() {
        for entry in fs::read_dir(path).with_context(|| format!("listing {}", path.display()))? {
            share_path(&entry?.path(), gid, dir_mode, file_mode)?;
        }
    }
    Ok(())
}

/// Makes the pins and the state directory readable by `group`.
pub fn share(pin: &PinDir, state: &StateDir, group: &str) -> anyhow::Result<()> {
    let gid = resolve_group(group)?;
    // Lock and temporary files stay private; everything else is readable.
    share_path(pin.root(), gid, 0o2750, 0o640)?;
    share_path(state.root(), gid, 0o2750, 0o640)?;
    Ok(())
}

/// Refuses a world-writable file or directory (and says how to fix it).
pub fn refuse_world_writable(path: &Path, what: &str) -> anyhow::Result<()> {
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(_) => return Ok(()),
    };
    let mode = meta.mode();
    // A sticky world-writable directory (like /tmp) is still unsafe here:
    // anyone could create files the agent trusts.
    if mode & 0o002 != 0 {
        bail!(
            "refusing to start: the {what} {} is world-writable (mode {:o}), so anyone could change \
             what the agent blocks; run `chmod o-w {}`",
            path.display(),
            mode & 0o7777,
            path.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn world_writable_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("config.toml");
        fs::write(&f, "").unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(0o666)).unwrap();
        let e = refuse_world_writable(&f, "config file")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("world-writable") && e.contains("chmod o-w"),
            "{e}"
        );
        fs::set_permissions(&f, fs::Permissions::from_mode(0o640)).unwrap();
        refuse_world_writable(&f, "config file").unwrap();
        refuse_world_writable(&dir.path().join("missing"), "x").unwrap();
    }

    #[test]
    fn groups_resolve_by_name_or_number() {
        assert_eq!(resolve_group("0").unwrap(), Gid::from_raw(0));
        assert_eq!(resolve_group("root").unwrap(), Gid::from_raw(0));
        assert!(resolve_group("surely-no-such-group-xdpbl").is_err());
    }
}
