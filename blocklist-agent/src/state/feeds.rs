//! Per-feed state: HTTP validators, history, the TAXII cursor, and the
//! last good entries that keep protecting when a feed fails.

use std::{
    collections::BTreeMap,
    fs,
    io::{BufRead as _, BufReader},
    path::PathBuf,
    time::SystemTime,
};

use anyhow::Context as _;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use super::{StateDir, list_file, write_atomic};
use crate::{
    prefix::Prefix,
    record::{Entry, Rejection},
};

/// What the agent remembers about one feed between syncs.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct FeedState {
    /// The source as configured, without credentials (a changed source
    /// invalidates the validators and the cursor).
    #[serde(default)]
    pub source: String,
    /// How the body was read (format and its options); a change
    /// invalidates the validators like a changed source. Empty in state
    /// written before it existed (then adopted as it is).
    #[serde(default)]
    pub reading: String,
    /// `ETag` of the last good body.
    pub etag: Option<String>,
    /// `Last-Modified` of the last good body.
    pub last_modified: Option<String>,
    /// SHA-256 of the last good body: an identical body is not parsed again.
    pub content_sha256: Option<String>,
    /// Last fetch attempt.
    #[serde(with = "crate::timestamp::option", default)]
    pub last_attempt: Option<SystemTime>,
    /// Last attempt that produced accepted entries.
    #[serde(with = "crate::timestamp::option", default)]
    pub last_success: Option<SystemTime>,
    /// Why the last attempt failed, if it did.
    pub last_error: Option<String>,
    /// Why the guard last refused the feed, if it did.
    pub last_refusal: Option<String>,
    /// Failed attempts so far.
    #[serde(default)]
    pub failures: u64,
    /// Guard refusals so far.
    #[serde(default)]
    pub refusals: u64,
    /// Entries in the last good set.
    #[serde(default)]
    pub entries: usize,
    /// Lines or objects rejected in the last good body.
    #[serde(default)]
    pub rejected: usize,
    /// Examples of those rejections.
    #[serde(default)]
    pub samples: Vec<Rejection>,
    /// Entries of the last good list the reserved-range guard refused or
    /// cut reserved ranges out of.
    #[serde(default)]
    pub reserved: usize,
    /// Examples of those, one line each.
    #[serde(default)]
    pub reserved_samples: Vec<String>,
    /// TAXII `added_after` cursor (`X-TAXII-Date-Added-Last`).
    pub taxii_cursor: Option<String>,
    /// CrowdSec: decisions received that cannot block (another type than
    /// `ban`, another scope than `Ip`/`Range`, already expired), so far.
    #[serde(default)]
    pub ignored: u64,
}

/// A TAXII indicator as last seen.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StoredIndicator {
    /// `modified` of the version we hold.
    pub modified: String,
    /// `valid_until` (seconds since the epoch), re-checked at every sync.
    pub valid_until: Option<i64>,
    /// Revoked indicators are kept so an older version cannot come back.
    pub revoked: bool,
    /// The prefixes its pattern names.
    pub prefixes: Vec<Prefix>,
}

fn state_file(name: &str) -> String {
    format!("feeds/{name}.json")
}

impl StateDir {
    fn entries_path(&self, name: &str) -> PathBuf {
        self.root().join("feeds").join(format!("{name}.entries"))
    }

    /// The remembered state of a feed.
    pub fn feed(&self, name: &str) -> anyhow::Result<FeedState> {
        self.read_json(&state_file(name))
    }

    /// Records the state of a feed.
    pub fn set_feed(&self, name: &str, s: &FeedState) -> anyhow::Result<()> {
        self.write_json(&state_file(name), s)
    }

    /// Names of every feed with state, sorted.
    pub fn feed_names(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.root().join("feeds"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let n = e.file_name().into_string().ok()?;
                n.strip_suffix(".json")
                    .filter(|s| !s.ends_with(".indicators") && !s.ends_with(".decisions"))
                    .map(str::to_owned)
            })
            .collect();
        v.sort();
        v
    }

    fn list_path(&self, name: &str) -> PathBuf {
        self.root().join("feeds").join(format!("{name}.list"))
    }

    /// The feed's last good entries (empty when it never had any), from
    /// its binary list file, or from the text form older versions wrote.
    pub fn feed_entries(&self, name: &str) -> anyhow::Result<Vec<Entry>> {
        let path = self.list_path(name);
        match fs::read(&path) {
            Ok(bytes) => {
                return list_file::decode(&bytes).with_context(|| {
                    format!(
                        "{} is corrupt; delete it and the next successful sync rewrites it",
                        path.display()
                    )
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        }
        self.feed_entries_text(name)
    }

    /// The text form (`PREFIX [ID]` per line) of versions before the
    /// binary list file.
    fn feed_entries_text(&self, name: &str) -> anyhow::Result<Vec<Entry>> {
        let path = self.entries_path(name);
        let file = match fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let mut out = Vec::new();
        for (i, line) in BufReader::new(file).lines().enumerate() {
            let line = line.with_context(|| format!("reading {}", path.display()))?;
            let mut parts = line.splitn(2, ' ');
            let prefix = parts.next().unwrap_or("").parse::<Prefix>().with_context(|| {
                format!(
                    "{} line {} is corrupt; delete the file and the next successful sync rewrites it",
                    path.display(),
                    i + 1
                )
            })?;
            out.push(Entry {
                prefix,
                id: parts.next().map(str::to_owned),
            });
        }
        Ok(out)
    }

    /// Replaces the feed's last good entries (atomically), in the binary
    /// form; the text form of older versions goes.
    pub fn set_feed_entries(&self, name: &str, entries: &[Entry]) -> anyhow::Result<()> {
        write_atomic(&self.list_path(name), &list_file::encode(entries))?;
        match fs::remove_file(self.entries_path(name)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("removing {}", self.entries_path(name).display()))
            }
            _ => Ok(()),
        }
    }

    /// Size and modification time of the feed's last good list (`None`
    /// when it has none): a cheap way to tell that the file is still the
    /// one this process wrote or read.
    pub fn feed_entries_signature(&self, name: &str) -> Option<(u64, SystemTime)> {
        let m = fs::metadata(self.list_path(name))
            .or_else(|_| fs::metadata(self.entries_path(name)))
            .ok()?;
        Some((m.len(), m.modified().ok()?))
    }

    fn decisions_file(name: &str) -> String {
        format!("feeds/{name}.decisions.json")
    }

    /// The CrowdSec decisions of a feed, as the bouncer stored them (the
    /// default when it never had any).
    pub fn feed_decisions<T: DeserializeOwned + Default>(&self, name: &str) -> anyhow::Result<T> {
        self.read_json(&Self::decisions_file(name))
    }

    /// Replaces the CrowdSec decisions of a feed (atomically).
    pub fn set_feed_decisions<T: Serialize>(&self, name: &str, d: &T) -> anyhow::Result<()> {
        // Compact: the community blocklist alone is tens of thousands.
        write_atomic(
            &self.root().join(Self::decisions_file(name)),
            &serde_json::to_vec(d)?,
        )
    }

    /// When the decisions file last changed (`None`: there is none).
    pub fn feed_decisions_mtime(&self, name: &str) -> Option<SystemTime> {
        fs::metadata(self.root().join(Self::decisions_file(name)))
            .and_then(|m| m.modified())
            .ok()
    }

    /// The TAXII indicators of a feed, by id.
    pub fn feed_indicators(&self, name: &str) -> anyhow::Result<BTreeMap<String, StoredIndicator>> {
        self.read_json(&format!("feeds/{name}.indicators.json"))
    }

    /// Replaces the TAXII indicators of a feed.
    pub fn set_feed_indicators(
        &self,
        name: &str,
        v: &BTreeMap<String, StoredIndicator>,
    ) -> anyhow::Result<()> {
        self.write_json(&format!("feeds/{name}.indicators.json"), v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_corruption_names_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateDir::new(dir.path());
        assert!(s.feed_entries("x").unwrap().is_empty());
        let entries = vec![
            Entry::new("192.0.2.0/24".parse().unwrap()),
            Entry {
                prefix: "2001:db8::/32".parse().unwrap(),
                id: Some("indicator--1".into()),
            },
        ];
        s.set_feed_entries("x", &entries).unwrap();
        assert_eq!(s.feed_entries("x").unwrap(), entries);
        let mut st = s.feed("x").unwrap();
        st.entries = 2;
        s.set_feed("x", &st).unwrap();
        assert_eq!(s.feed_names(), vec!["x".to_owned()]);
        assert!(dir.path().join("feeds/x.list").exists());
        // A damaged binary list is an error, not a shorter list.
        let bytes = fs::read(dir.path().join("feeds/x.list")).unwrap();
        fs::write(dir.path().join("feeds/x.list"), &bytes[..bytes.len() - 3]).unwrap();
        let e = format!("{:#}", s.feed_entries("x").unwrap_err());
        assert!(e.contains("x.list") && e.contains("corrupt"), "{e}");
        // The text form of older versions is still read, and replaced.
        fs::remove_file(dir.path().join("feeds/x.list")).unwrap();
        fs::write(
            dir.path().join("feeds/x.entries"),
            "192.0.2.0/24\n2001:db8::/32 indicator--1\n",
        )
        .unwrap();
        assert_eq!(s.feed_entries("x").unwrap(), entries);
        fs::write(
            dir.path().join("feeds/x.entries"),
            "192.0.2.0/24\ngarbage\n",
        )
        .unwrap();
        let e = format!("{:#}", s.feed_entries("x").unwrap_err());
        assert!(e.contains("line 2") && e.contains("corrupt"), "{e}");
        s.set_feed_entries("x", &entries).unwrap();
        assert!(!dir.path().join("feeds/x.entries").exists());
        assert_eq!(s.feed_entries("x").unwrap(), entries);
    }
}
