//! FireHOL `.netset` and `.ipset` lists.
//!
//! A block of `#` comment lines describing the list, then one address
//! (`.ipset`) or CIDR (`.netset`) per line:
//!
//! ```text
//! #
//! # firehol_level1
//! #
//! # ipv4 hash:net ipset
//! # This File Date  : Wed May 29 14:19:04 UTC 2024
//! #
//! 192.0.2.0/24
//! 198.51.100.7
//! ```
//!
//! That is a plain list, so the plain rules apply unchanged; the format
//! has its own name so feed configs say what they expect.

use super::{Parsed, plain};

/// Parses a FireHOL list.
pub fn parse(bytes: &[u8]) -> Parsed {
    plain::parse(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::plain::GARBAGE_BYTES;

    const LEVEL1: &[u8] = include_bytes!("fixtures/firehol_level1.netset");

    #[test]
    fn netset_fixture() {
        let p = parse(LEVEL1);
        let got: Vec<String> = p.entries.iter().map(|e| e.prefix.to_string()).collect();
        // Bogons such as 0.0.0.0/8 are parsed here; whether they are too
        // broad to load is the guard's decision.
        assert_eq!(
            got,
            [
                "0.0.0.0/8",
                "192.0.2.0/24",
                "198.51.100.0/24",
                "198.51.100.7/32",
                "203.0.113.64/26",
                "224.0.0.0/3"
            ]
        );
        assert_eq!((p.rejected, p.ignored), (0, 0));
    }

    #[test]
    fn ipset_with_a_bad_line() {
        let p = parse(b"# ipset\n192.0.2.1\n192.0.2.256\n192.0.2.3\n");
        assert_eq!(p.entries.len(), 2);
        assert_eq!(p.rejected, 1);
        assert_eq!(p.samples[0].line, 3);
    }

    #[test]
    fn garbage_bytes_do_not_panic() {
        assert!(parse(GARBAGE_BYTES).rejected > 0);
    }
}
