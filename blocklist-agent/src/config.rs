//! The agent's TOML configuration (see DESIGN.md for the full file).
//!
//! Unknown keys are errors: a typo in a guard must not silently fall back
//! to a default. Every value here can be overridden on the command line.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::datapath::attach::RequestedMode;

/// Default config file location.
pub const DEFAULT_CONFIG: &str = "/etc/xdp-blocklist/config.toml";

/// Safety limits on what may be blocked.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Guard {
    /// A feed that shrinks by more than this fraction keeps its last good
    /// entries.
    pub max_shrink: f64,
    /// IPv4 prefixes shorter than this are refused.
    pub min_prefix_v4: u8,
    /// IPv6 prefixes shorter than this are refused.
    pub min_prefix_v6: u8,
}

impl Default for Guard {
    fn default() -> Self {
        Self {
            max_shrink: 0.5,
            min_prefix_v4: 8,
            min_prefix_v6: 16,
        }
    }
}

/// Action on a blocked packet.
#[derive(
    Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, clap::ValueEnum, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Drop it.
    #[default]
    Drop,
    /// Count it and let it pass.
    Monitor,
}

/// Which addresses of a packet are matched.
#[derive(
    Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, clap::ValueEnum, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum MatchMode {
    /// Source only.
    Src,
    /// Destination only.
    Dst,
    /// Both.
    #[default]
    Both,
}

impl Action {
    /// The `CONFIG.action` value.
    pub fn abi(self) -> u32 {
        match self {
            Self::Drop => blocklist_ebpf::ACTION_DROP,
            Self::Monitor => blocklist_ebpf::ACTION_MONITOR,
        }
    }

    /// From a `CONFIG.action` value.
    pub fn from_abi(v: u32) -> Self {
        if v == blocklist_ebpf::ACTION_MONITOR {
            Self::Monitor
        } else {
            Self::Drop
        }
    }

    /// Lower-case name, as in the config file.
    pub fn name(self) -> &'static str {
        match self {
            Self::Drop => "drop",
            Self::Monitor => "monitor",
        }
    }
}

impl MatchMode {
    /// The `CONFIG.match_mode` value.
    pub fn abi(self) -> u32 {
        match self {
            Self::Both => blocklist_ebpf::MATCH_BOTH,
            Self::Src => blocklist_ebpf::MATCH_SRC,
            Self::Dst => blocklist_ebpf::MATCH_DST,
        }
    }

    /// From a `CONFIG.match_mode` value.
    pub fn from_abi(v: u32) -> Self {
        match v {
            blocklist_ebpf::MATCH_SRC => Self::Src,
            blocklist_ebpf::MATCH_DST => Self::Dst,
            _ => Self::Both,
        }
    }

    /// Lower-case name, as in the config file.
    pub fn name(self) -> &'static str {
        match self {
            Self::Src => "src",
            Self::Dst => "dst",
            Self::Both => "both",
        }
    }
}

/// The configuration file.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Interfaces to attach to.
    pub interfaces: Vec<String>,
    /// XDP attach mode.
    pub xdp_mode: Option<RequestedMode>,
    /// Action on blocked packets.
    pub action: Action,
    /// Which addresses are matched.
    #[serde(rename = "match")]
    pub match_mode: MatchMode,
    /// Pin directory.
    pub pin_dir: Option<PathBuf>,
    /// State directory.
    pub state_dir: Option<PathBuf>,
    /// Guards.
    pub guard: Guard,
    /// Capacity of the per-address counter LRU.
    pub ip_counters_max: Option<u32>,
}

/// A config file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Could not read the file.
    #[error("reading config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not valid TOML or not the expected schema; the message names the key
    /// and line.
    #[error("config {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// toml's message, with line and column.
        message: String,
    },
}

impl Config {
    /// Parses a config from text; `path` only names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }

    /// Loads `path`; a missing file is the default configuration only when
    /// `path` is the default location (an explicit path must exist).
    pub fn load(path: &Path, explicit: bool) -> Result<Self, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => Ok(Self::default()),
            Err(source) => Err(ConfigError::Read {
                path: path.to_owned(),
                source,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_design() {
        let c = Config::parse("", Path::new("x.toml")).unwrap();
        assert_eq!(c.action, Action::Drop);
        assert_eq!(c.match_mode, MatchMode::Both);
        assert_eq!((c.guard.min_prefix_v4, c.guard.min_prefix_v6), (8, 16));
    }

    #[test]
    fn unknown_keys_name_the_key_and_line() {
        let e = Config::parse(
            "action = \"drop\"\n[guard]\nmin_prefix_v5 = 3\n",
            Path::new("c.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("min_prefix_v5") && e.contains("line 3"), "{e}");
    }

    #[test]
    fn bad_values_are_errors() {
        assert!(Config::parse("action = \"explode\"", Path::new("c.toml")).is_err());
        assert!(Config::parse("xdp_mode = \"turbo\"", Path::new("c.toml")).is_err());
        let c = Config::parse("match = \"src\"\nxdp_mode = \"skb\"", Path::new("c.toml")).unwrap();
        assert_eq!(c.match_mode, MatchMode::Src);
        assert_eq!(c.xdp_mode, Some(RequestedMode::Skb));
    }
}
