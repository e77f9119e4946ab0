//! Blocklist prefixes: parsing, normalisation and the guards every entry
//! passes before it may reach a trie.
//!
//! A [`Prefix`] is always in canonical form: host bits cleared
//! (`10.1.2.3/24` is `10.1.2.0/24`) and IPv4-mapped IPv6 turned into IPv4
//! (`::ffff:10.0.0.0/104` is `10.0.0.0/8`), so two spellings of one network
//! are one entry.
//!
//! ```
//! use blocklist_agent::prefix::Prefix;
//! let p: Prefix = "10.1.2.3/24".parse().unwrap();
//! assert_eq!(p.to_string(), "10.1.2.0/24");
//! let m: Prefix = "::ffff:192.0.2.1".parse().unwrap();
//! assert_eq!(m.to_string(), "192.0.2.1/32");
//! ```

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    str::FromStr,
};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

/// Why a string is not an acceptable prefix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    /// Not an address or CIDR at all.
    #[error("`{0}` is not an IP address or CIDR (expected e.g. 192.0.2.0/24 or 2001:db8::/32)")]
    Invalid(String),
    /// Shorter than the configured minimum prefix length.
    #[error(
        "`{prefix}` is broader than the minimum /{min} allowed for IPv{family}; \
         refusing to block that much (lower guard.min_prefix_v{family} if you really mean it)"
    )]
    TooBroad {
        /// The offending prefix, normalised.
        prefix: String,
        /// The configured minimum.
        min: u8,
        /// 4 or 6.
        family: u8,
    },
}

/// An address family: where the datapath keeps an entry, which table
/// decides it, and how long a host prefix is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// IPv4 (v4-mapped IPv6 addresses included, see [`Prefix::new`]).
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// Both families, IPv4 first (the order `status` and the metrics list
    /// them in).
    pub const ALL: [Family; 2] = [Family::V4, Family::V6];

    /// The family of an address as the datapath sees it (v4-mapped is
    /// IPv4).
    ///
    /// ```
    /// use blocklist_agent::prefix::Family;
    /// assert_eq!(Family::of("::ffff:192.0.2.1".parse().unwrap()), Family::V4);
    /// assert_eq!(Family::of("2001:db8::1".parse().unwrap()), Family::V6);
    /// ```
    pub fn of(addr: IpAddr) -> Self {
        match canonical_addr(addr) {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// The length of a single-address prefix: 32 or 128.
    pub const fn host_len(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }

    /// The family's tag in keys and files: 4 or 6
    /// ([`blocklist_ebpf::FAMILY_V4`], [`blocklist_ebpf::FAMILY_V6`]).
    pub const fn tag(self) -> u8 {
        match self {
            Family::V4 => blocklist_ebpf::FAMILY_V4,
            Family::V6 => blocklist_ebpf::FAMILY_V6,
        }
    }

    /// True for IPv4.
    pub const fn is_v4(self) -> bool {
        matches!(self, Family::V4)
    }
}

/// A canonical IPv4 or IPv6 network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Prefix(IpNet);

impl Prefix {
    /// Builds a canonical prefix from any network (host bits cleared,
    /// v4-mapped turned into IPv4).
    pub fn new(net: IpNet) -> Self {
        let net = match net {
            IpNet::V6(v6) => match v6.addr().to_ipv4_mapped() {
                Some(v4) if v6.prefix_len() >= 96 => IpNet::V4(
                    Ipv4Net::new(v4, v6.prefix_len() - 96).expect("96..=128 minus 96 is valid"),
                ),
                _ => IpNet::V6(v6),
            },
            v4 => v4,
        };
        Prefix(net.trunc())
    }

    /// A single address as a host prefix (/32 or /128).
    pub fn host(addr: IpAddr) -> Self {
        Self::new(IpNet::from(addr))
    }

    /// The underlying network.
    pub fn net(&self) -> IpNet {
        self.0
    }

    /// The network address.
    pub fn addr(&self) -> IpAddr {
        self.0.addr()
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.0.prefix_len()
    }

    /// True for IPv4.
    pub fn is_v4(&self) -> bool {
        matches!(self.0, IpNet::V4(_))
    }

    /// The address family.
    pub fn family(&self) -> Family {
        if self.is_v4() { Family::V4 } else { Family::V6 }
    }

    /// True for a single address (/32, /128).
    pub fn is_host(&self) -> bool {
        self.prefix_len() == self.family().host_len()
    }

    /// Refuses prefixes shorter than the minimum of their family; `/0`
    /// always counts as too broad, whatever the minimum.
    pub fn check_min(self, min_v4: u8, min_v6: u8) -> Result<Self, PrefixError> {
        let (min, family) = if self.is_v4() {
            (min_v4.max(1), 4)
        } else {
            (min_v6.max(1), 6)
        };
        if self.prefix_len() < min {
            return Err(PrefixError::TooBroad {
                prefix: self.to_string(),
                min,
                family,
            });
        }
        Ok(self)
    }

    /// An IPv6 prefix longer than `len` widened to its enclosing `/len`
    /// (one host holds a whole /64, so blocking its /128 is easy to
    /// dodge); IPv4 and IPv6 prefixes of `len` or shorter are unchanged.
    ///
    /// ```
    /// # use blocklist_agent::prefix::Prefix;
    /// let p: Prefix = "2001:db8:1:2:3::4".parse().unwrap();
    /// assert_eq!(p.widen_v6(64).to_string(), "2001:db8:1:2::/64");
    /// let v4: Prefix = "192.0.2.1".parse().unwrap();
    /// assert_eq!(v4.widen_v6(64), v4);
    /// ```
    pub fn widen_v6(self, len: u8) -> Self {
        if self.is_v4() {
            self
        } else {
            self.supernet(len)
        }
    }

    /// The prefix of length `len` that holds this one (itself when `len`
    /// is not shorter).
    pub fn supernet(self, len: u8) -> Self {
        if len >= self.prefix_len() {
            return self;
        }
        IpNet::new(self.addr(), len).map_or(self, Self::new)
    }

    /// True when this prefix holds all of `inner` (same family, no longer
    /// than it, and its address inside).
    ///
    /// ```
    /// # use blocklist_agent::prefix::Prefix;
    /// let p = |s: &str| s.parse::<Prefix>().unwrap();
    /// assert!(p("10.0.0.0/8").covers(&p("10.1.0.0/16")));
    /// assert!(!p("10.1.0.0/16").covers(&p("10.0.0.0/8")));
    /// ```
    pub fn covers(&self, inner: &Prefix) -> bool {
        self.0.contains(&inner.0)
    }

    /// True when `addr` falls in this prefix (v4-mapped addresses count as
    /// IPv4).
    pub fn contains(&self, addr: IpAddr) -> bool {
        self.0.contains(&canonical_addr(addr))
    }

    /// The kernel trie key bytes for IPv4 (network order), or `None`.
    pub fn v4_bytes(&self) -> Option<[u8; 4]> {
        match self.0 {
            IpNet::V4(n) => Some(n.addr().octets()),
            IpNet::V6(_) => None,
        }
    }

    /// The kernel trie key bytes for IPv6 (network order), or `None`.
    pub fn v6_bytes(&self) -> Option<[u8; 16]> {
        match self.0 {
            IpNet::V6(n) => Some(n.addr().octets()),
            IpNet::V4(_) => None,
        }
    }

    /// Rebuilds a prefix from trie key bytes.
    pub fn from_v4(bytes: [u8; 4], len: u8) -> Option<Self> {
        Ipv4Net::new(Ipv4Addr::from(bytes), len)
            .ok()
            .map(|n| Self::new(n.into()))
    }

    /// Rebuilds a prefix from trie key bytes.
    pub fn from_v6(bytes: [u8; 16], len: u8) -> Option<Self> {
        Ipv6Net::new(Ipv6Addr::from(bytes), len)
            .ok()
            .map(|n| Self::new(n.into()))
    }
}

/// An address as the datapath sees it: v4-mapped IPv6 is IPv4.
pub fn canonical_addr(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

impl FromStr for Prefix {
    type Err = PrefixError;

    /// Accepts `a.b.c.d`, `a.b.c.d/n`, IPv6 with or without `/n`, and
    /// surrounding white space. IPv6 zone ids (`fe80::1%eth0`) are refused:
    /// a zone has no meaning in a blocklist.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let invalid = || PrefixError::Invalid(t.to_owned());
        if t.is_empty() || t.contains('%') {
            return Err(invalid());
        }
        if let Ok(net) = t.parse::<IpNet>() {
            return Ok(Self::new(net));
        }
        t.parse::<IpAddr>().map(Self::host).map_err(|_| invalid())
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.0.addr(), self.0.prefix_len())
    }
}

impl From<Prefix> for String {
    fn from(p: Prefix) -> String {
        p.to_string()
    }
}

impl TryFrom<String> for Prefix {
    type Error = PrefixError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(s: &str) -> Prefix {
        s.parse().unwrap()
    }

    #[test]
    fn host_bits_are_masked() {
        assert_eq!(p("10.1.2.3/24").to_string(), "10.1.2.0/24");
        assert_eq!(p("2001:db8::1/32").to_string(), "2001:db8::/32");
        assert_eq!(p("10.1.2.3").to_string(), "10.1.2.3/32");
        assert_eq!(p("2001:db8::1").to_string(), "2001:db8::1/128");
    }

    #[test]
    fn v4_mapped_becomes_v4() {
        assert_eq!(p("::ffff:10.0.0.1").to_string(), "10.0.0.1/32");
        assert_eq!(p("::ffff:10.0.0.0/104").to_string(), "10.0.0.0/8");
        // Shorter than /96 is not a mapped network: it stays IPv6.
        assert!(!p("::ffff:0.0.0.0/80").is_v4());
    }

    #[test]
    fn garbage_and_zones_are_refused() {
        for bad in [
            "",
            "  ",
            "10.0.0",
            "10.0.0.1/33",
            "::/129",
            "fe80::1%eth0",
            "host",
            "1.2.3.4/",
        ] {
            assert!(bad.parse::<Prefix>().is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn too_broad_is_refused_even_with_zero_minimum() {
        assert!(p("0.0.0.0/0").check_min(0, 0).is_err());
        assert!(p("::/0").check_min(0, 0).is_err());
        assert!(p("10.0.0.0/7").check_min(8, 16).is_err());
        assert!(p("10.0.0.0/8").check_min(8, 16).is_ok());
        assert!(p("2001::/15").check_min(8, 16).is_err());
        assert!(p("2001::/16").check_min(8, 16).is_ok());
        let msg = p("0.0.0.0/0").check_min(8, 16).unwrap_err().to_string();
        assert!(msg.contains("0.0.0.0/0") && msg.contains("/8"), "{msg}");
    }

    #[test]
    fn key_bytes_round_trip() {
        let v4 = p("192.0.2.0/24");
        assert_eq!(v4.v4_bytes(), Some([192, 0, 2, 0]));
        assert_eq!(Prefix::from_v4([192, 0, 2, 0], 24), Some(v4));
        let v6 = p("2001:db8::/32");
        assert_eq!(Prefix::from_v6(v6.v6_bytes().unwrap(), 32), Some(v6));
    }

    proptest! {
        #[test]
        fn canonical_form_is_a_fixed_point(a in any::<u32>(), len in 0u8..=32) {
            let first = Prefix::new(Ipv4Net::new(Ipv4Addr::from(a), len).unwrap().into());
            let again: Prefix = first.to_string().parse().unwrap();
            prop_assert_eq!(first, again);
            prop_assert!(first.contains(IpAddr::V4(Ipv4Addr::from(a))));
        }

        #[test]
        fn v6_canonical_form_contains_its_source(a in any::<u128>(), len in 0u8..=128) {
            let net = Ipv6Net::new(Ipv6Addr::from(a), len).unwrap();
            let first = Prefix::new(net.into());
            prop_assert!(first.contains(IpAddr::V6(Ipv6Addr::from(a))));
        }
    }
}
