//! Hand-made entries (`block`, `allow`) kept as their own source, so a
//! sync never removes them; `block --for` entries carry an expiry.

use std::{collections::BTreeMap, time::SystemTime};

use serde::{Deserialize, Serialize};

use super::StateDir;
use crate::prefix::Prefix;

const FILE: &str = "manual.json";

/// One hand-made block entry.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ManualBlock {
    /// When it stops being blocked, or never.
    #[serde(with = "crate::timestamp::option", default)]
    pub expires: Option<SystemTime>,
}

impl ManualBlock {
    /// True once the expiry has passed.
    pub fn expired(&self, now: SystemTime) -> bool {
        self.expires.is_some_and(|t| t <= now)
    }
}

/// All hand-made entries.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Manual {
    /// Block entries.
    #[serde(default)]
    pub block: BTreeMap<Prefix, ManualBlock>,
    /// Allow entries.
    #[serde(default)]
    pub allow: Vec<Prefix>,
}

impl StateDir {
    /// The hand-made entries.
    pub fn manual(&self) -> anyhow::Result<Manual> {
        self.read_json(FILE)
    }

    /// Replaces the hand-made entries.
    pub fn set_manual(&self, m: &Manual) -> anyhow::Result<()> {
        self.write_json(FILE, m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn expiry_is_honoured() {
        let now = SystemTime::now();
        let later = now + Duration::from_secs(60);
        let earlier = now - Duration::from_secs(60);
        assert!(
            !ManualBlock {
                expires: Some(later)
            }
            .expired(now)
        );
        assert!(
            ManualBlock {
                expires: Some(earlier)
            }
            .expired(now)
        );
        assert!(!ManualBlock { expires: None }.expired(now));
    }

    #[test]
    fn round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateDir::new(dir.path());
        let mut m = s.manual().unwrap();
        m.block
            .insert("192.0.2.0/24".parse().unwrap(), ManualBlock::default());
        m.allow.push("198.51.100.1".parse().unwrap());
        s.set_manual(&m).unwrap();
        assert_eq!(s.manual().unwrap(), m);
    }
}
