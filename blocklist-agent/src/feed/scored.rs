//! Scored lists: an address and how many sources list it, as IPsum ships
//! them (`https://raw.githubusercontent.com/stamparm/ipsum/master/ipsum.txt`):
//!
//! ```text
//! # IPsum Threat Intelligence Feed
//! # (https://github.com/stamparm/ipsum)
//! #
//! # IP    number of (black)lists
//! #
//! 192.0.2.10<TAB>10
//! 198.51.100.7<TAB>3
//! ```
//!
//! `min_score = N` keeps the addresses listed by at least N sources (IPsum
//! itself publishes `levels/N.txt` cut the same way); the rest are
//! skipped on purpose and counted as ignored, not rejected. A line whose
//! score is missing or not a number is rejected: the feed changed shape.

use super::{Parsed, plain};

/// Parses a scored list, keeping entries with a score of at least
/// `min_score` (every scored entry when 0).
pub fn parse(bytes: &[u8], min_score: u32) -> Parsed {
    let mut out = Parsed::default();
    for (no, line) in plain::lines(bytes) {
        let text = match line {
            Ok(text) => text,
            Err(bad) => {
                bad.reject(no, &mut out);
                continue;
            }
        };
        let data = plain::strip_comment(text);
        if data.is_empty() {
            continue;
        }
        let mut fields = data.split_whitespace();
        let (Some(addr), score, None) = (fields.next(), fields.next(), fields.next()) else {
            out.reject(no, "expected an address and a score", text);
            continue;
        };
        let Some(score) = score.and_then(|s| s.parse::<u32>().ok()) else {
            out.reject(no, "the score is missing or not a whole number", text);
            continue;
        };
        if score < min_score {
            out.ignored += 1;
            continue;
        }
        if let Err(reason) = plain::parse_item(addr, &mut out.entries) {
            out.reject(no, reason, text);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::{
        plain::GARBAGE_BYTES,
        test_util::{prefixes, reasons},
    };

    const IPSUM: &[u8] = include_bytes!("fixtures/ipsum.txt");

    #[test]
    fn ipsum_fixture_by_score() {
        let all = parse(IPSUM, 0);
        assert_eq!(all.entries.len(), 6);
        assert_eq!(all.ignored, 0);
        let three = parse(IPSUM, 3);
        assert_eq!(
            prefixes(&three),
            ["192.0.2.10/32", "192.0.2.11/32", "198.51.100.7/32"]
        );
        assert_eq!(three.ignored, 3);
        assert_eq!(three.rejected, 2);
        assert_eq!(
            reasons(&three.samples),
            [
                (13, "the score is missing or not a whole number"),
                (14, "expected an address and a score"),
            ]
        );
        let ten = parse(IPSUM, 10);
        assert_eq!(prefixes(&ten), ["192.0.2.10/32"]);
    }

    #[test]
    fn garbage_bytes_do_not_panic() {
        let p = parse(GARBAGE_BYTES, 1);
        assert!(p.entries.len() + p.rejected + p.ignored > 0);
    }
}
