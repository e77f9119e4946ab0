//! Persisted agent state in the state directory.
//!
//! Files are written atomically (write a temporary file, fsync, rename) so
//! that a crash never leaves a half-written file behind. Layout:
//!
//! ```text
//! lock                      writer lock (see [`lock`])
//! attachments.json          interface -> XDP mode, since
//! egress.json               the cgroup the egress socket hooks are attached to
//! manual.json               hand-made block (with expiry) and allow entries
//! feeds/<name>.json         per-feed status: validators, last success/error, cursor
//! feeds/<name>.entries      the feed's last good entries, one `prefix [indicator-id]` a line
//! feeds/<name>.indicators.json  TAXII feeds: the indicators seen so far
//! ```

pub mod counts;
pub mod feeds;
pub mod list_file;
pub mod lock;
pub mod manual;

use std::{
    collections::BTreeMap,
    fs,
    io::Write,
    path::{Path, PathBuf},
    time::SystemTime,
};

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::datapath::attach::AttachedMode;

/// Default state directory.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/xdp-blocklist";

/// One attached interface.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Attachment {
    /// The mode the kernel gave us.
    pub mode: AttachedMode,
    /// Kernel interface index at attach time.
    pub ifindex: u32,
    /// When it was attached.
    #[serde(with = "crate::timestamp")]
    pub since: SystemTime,
}

/// Where the cgroup egress hooks are attached.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EgressRecord {
    /// The cgroup v2 directory.
    pub cgroup: PathBuf,
    /// When the hooks were attached.
    #[serde(with = "crate::timestamp")]
    pub since: SystemTime,
}

/// The state directory.
#[derive(Clone, Debug)]
pub struct StateDir {
    root: PathBuf,
}

const ATTACHMENTS: &str = "attachments.json";
const AGENT: &str = "agent.json";
const EGRESS: &str = "egress.json";

/// The running agent, as `run` records it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AgentRecord {
    /// Its process id.
    pub pid: u32,
    /// When it started.
    #[serde(with = "crate::timestamp")]
    pub since: SystemTime,
}

impl StateDir {
    /// Wraps a path without touching the file system.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Attached interfaces as recorded by `attach`.
    pub fn attachments(&self) -> anyhow::Result<BTreeMap<String, Attachment>> {
        self.read_json(ATTACHMENTS)
    }

    /// Records the attached interfaces.
    pub fn set_attachments(&self, a: &BTreeMap<String, Attachment>) -> anyhow::Result<()> {
        self.write_json(ATTACHMENTS, a)
    }

    /// Where the cgroup egress hooks were attached, if they were.
    pub fn egress(&self) -> Option<EgressRecord> {
        self.read_json::<Option<EgressRecord>>(EGRESS)
            .ok()
            .flatten()
    }

    /// Records where the cgroup egress hooks are (`None`: detached).
    pub fn set_egress(&self, e: Option<&EgressRecord>) -> anyhow::Result<()> {
        match e {
            Some(e) => self.write_json(EGRESS, e),
            None => {
                let _ = fs::remove_file(self.root.join(EGRESS));
                Ok(())
            }
        }
    }

    /// Records the running agent (`None` when it stops).
    pub fn set_agent(&self, a: Option<&AgentRecord>) -> anyhow::Result<()> {
        match a {
            Some(a) => self.write_json(AGENT, a),
            None => {
                let _ = fs::remove_file(self.root.join(AGENT));
                Ok(())
            }
        }
    }

    /// The running agent, if its process is still alive.
    pub fn agent(&self) -> Option<AgentRecord> {
        let a: AgentRecord = self.read_json::<Option<_>>(AGENT).ok()??;
        (a.pid != 0 && Path::new(&format!("/proc/{}", a.pid)).exists()).then_some(a)
    }

    /// Reads a JSON state file; a missing file is the default value.
    pub fn read_json<T: DeserializeOwned + Default>(&self, name: &str) -> anyhow::Result<T> {
        use anyhow::Context as _;
        let path = self.root.join(name);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "state file {} is corrupt; delete it and the agent rebuilds it from the pinned maps",
                    path.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
            Err(e) => Err(e).with_context(|| format!("reading state file {}", path.display())),
        }
    }

    /// Writes a JSON state file atomically.
    pub fn write_json<T: Serialize>(&self, name: &str, value: &T) -> anyhow::Result<()> {
        let bytes = serde_json::to_vec_pretty(value)?;
        write_atomic(&self.root.join(name), &bytes)
    }
}

/// Writes `bytes` to `path` atomically: temporary file, fsync, rename,
/// fsync of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    write_file(path, bytes, true)
}

/// [`write_atomic`] without the fsyncs, for files whose loss or staleness
/// after a power cut costs nothing (they are checked before use).
pub fn write_replaceable(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    write_file(path, bytes, false)
}

fn write_file(path: &Path, bytes: &[u8], durable: bool) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let dir = path.parent().context("state file has no directory")?;
    fs::create_dir_all(dir)
        .with_context(|| format!("creating state directory {}", dir.display()))?;
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        // Never world-readable: feed state may name private endpoints.
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o640)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(bytes)
            .with_context(|| format!("writing {}", tmp.display()))?;
        if durable {
            f.sync_all()
                .with_context(|| format!("syncing {}", tmp.display()))?;
        }
    }
    fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    if durable && let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attachments_round_trip_and_corruption_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateDir::new(dir.path());
        assert!(s.attachments().unwrap().is_empty());
        let mut m = BTreeMap::new();
        m.insert(
            "eth0".to_owned(),
            Attachment {
                mode: AttachedMode::Skb,
                ifindex: 2,
                since: crate::timestamp::parse("2026-01-01T00:00:00Z").unwrap(),
            },
        );
        s.set_attachments(&m).unwrap();
        assert_eq!(s.attachments().unwrap(), m);
        // The file keeps the text form the earlier versions wrote.
        let text = fs::read_to_string(dir.path().join(ATTACHMENTS)).unwrap();
        assert!(
            text.contains("\"since\": \"2026-01-01T00:00:00Z\""),
            "{text}"
        );
        fs::write(dir.path().join(ATTACHMENTS), b"{trunc").unwrap();
        let e = format!("{:#}", s.attachments().unwrap_err());
        assert!(e.contains("corrupt"), "{e}");
    }
}
