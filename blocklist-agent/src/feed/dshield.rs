//! DShield's recommended block list, `block.txt`
//! (`https://feeds.dshield.org/block.txt`): a comment block, a column
//! header, then one tab-separated netblock per line:
//!
//! ```text
//! #   DShield.org Recommended Block List
//! Start<TAB>End<TAB>Netblock<TAB>Attacks<TAB>Name<TAB>Country<TAB>email
//! 192.0.2.0<TAB>192.0.2.255<TAB>24<TAB>11574<TAB>EXAMPLE-NET<TAB>NL<TAB>abuse@example.net
//! ```
//!
//! The first two columns are the authoritative inclusive range; the
//! third is only the prefix length DShield reports for it. The range is
//! turned into the fewest prefixes that cover exactly it (`a.b.c.16` to
//! `a.b.c.95` is a /28, a /27 and a /28), so a block whose start is not
//! aligned to its length never blocks more than DShield listed. The
//! header line is skipped on purpose; any other line without a start and
//! an end address is rejected.

use super::{Parsed, plain};

/// Parses a DShield `block.txt`.
pub fn parse(bytes: &[u8]) -> Parsed {
    let mut out = Parsed::default();
    for (no, line) in plain::lines(bytes) {
        let text = match line {
            Ok(text) => text,
            Err(bad) => {
                bad.reject(no, &mut out);
                continue;
            }
        };
        let data = text.trim();
        if data.is_empty() || data.starts_with('#') {
            continue;
        }
        if is_header(data) {
            out.ignored += 1;
            continue;
        }
        // Names may hold spaces, so only tabs separate the columns; a
        // hand-copied list with spaces still has its addresses first.
        let mut fields = data.split(['\t', ' ']).filter(|f| !f.is_empty());
        let (Some(start), Some(end)) = (fields.next(), fields.next()) else {
            out.reject(no, "expected a start and an end address", text);
            continue;
        };
        if let Err(reason) = plain::push_range(start, end, &mut out.entries) {
            out.reject(no, reason, text);
        }
    }
    out
}

/// The column header, `Start<TAB>End<TAB>Netblock...`.
fn is_header(line: &str) -> bool {
    line.split_whitespace()
        .take(2)
        .map(str::to_ascii_lowercase)
        .eq(["start", "end"])
}

/// True when the body's first data line is DShield's column header (for
/// format detection).
pub fn sniff(head: &[u8]) -> bool {
    plain::lines(head)
        .filter_map(|(_, l)| l.ok())
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .is_some_and(is_header)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::{
        plain::GARBAGE_BYTES,
        test_util::{prefixes, reasons},
    };

    const BLOCK: &[u8] = include_bytes!("fixtures/dshield_block.txt");

    #[test]
    fn block_txt_fixture() {
        let p = parse(BLOCK);
        assert_eq!(
            prefixes(&p),
            [
                "192.0.2.0/24",
                "198.51.100.0/24",
                "203.0.113.0/24",
                "198.18.4.0/24",
                // 16..=95: not the /24 the third column claims.
                "198.18.7.16/28",
                "198.18.7.32/27",
                "198.18.7.64/27",
            ]
        );
        assert_eq!(p.ignored, 1, "the column header");
        assert_eq!(
            reasons(&p.samples),
            [
                (35, "range ends before it starts"),
                (36, "not an IP address or CIDR"),
                (37, "expected a start and an end address"),
            ]
        );
    }

    #[test]
    fn sniffs_the_header_only() {
        assert!(sniff(BLOCK));
        assert!(!sniff(b"# a list\n192.0.2.1\n"));
        assert!(!sniff(b"Start,End\n"), "a CSV header is not DShield's");
    }

    #[test]
    fn ipv6_ranges_and_spaces() {
        let p = parse(b"start end netblock\n2001:db8::  2001:db8::ffff 112\n");
        assert_eq!(prefixes(&p), ["2001:db8::/112"]);
        assert_eq!(p.ignored, 1);
    }

    #[test]
    fn garbage_bytes_do_not_panic() {
        let p = parse(GARBAGE_BYTES);
        assert!(p.entries.len() + p.rejected + p.ignored > 0);
    }
}
