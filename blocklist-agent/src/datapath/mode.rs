//! The datapath's three live settings as the agent names them: what a
//! hit does ([`Action`]), which addresses are matched ([`MatchMode`]) and
//! how IPv4 is decided ([`Lookup`]), each with its `CONFIG` encoding.

use serde::Deserialize;

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

/// How the XDP program decides an IPv4 address.
#[derive(
    Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, clap::ValueEnum, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Lookup {
    /// The compiled table: flat cost at any list size (the default).
    #[default]
    Table,
    /// The exact maps and LPM tries: the fallback, and the comparison the
    /// bench makes.
    Trie,
}

impl Lookup {
    /// The `CONFIG.lookup` value.
    pub fn abi(self) -> u32 {
        match self {
            Self::Table => blocklist_ebpf::LOOKUP_TABLE,
            Self::Trie => blocklist_ebpf::LOOKUP_TRIE,
        }
    }

    /// From a `CONFIG.lookup` value.
    pub fn from_abi(v: u32) -> Self {
        if v == blocklist_ebpf::LOOKUP_TRIE {
            Self::Trie
        } else {
            Self::Table
        }
    }

    /// Lower-case name, as in the config file.
    pub fn name(self) -> &'static str {
        match self {
            Self::Table => "table",
            Self::Trie => "trie",
        }
    }
}
