//! Plain address lists: one address, CIDR or range per line.
//!
//! ```text
//! # bad hosts, updated hourly
//! 192.0.2.1
//! 198.51.100.0/24        ; seen scanning
//! 2001:db8::/32          // documentation prefix
//! 203.0.113.10-203.0.113.20
//! 192.0.2.77 2024-05-29 ssh-bruteforce
//! ```
//!
//! Comments start with `#`, `;` or `//`, on their own line or after an
//! entry. Only the first white-space separated token counts, because many
//! lists carry trailing columns (dates, reasons). A leading UTF-8 BOM and
//! CRLF line ends are accepted.
//!
//! The line splitting and token parsing here are shared by the Spamhaus,
//! FireHOL, CSV, JSON and STIX parsers so that every format rejects the same
//! things for the same reasons.

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Subnets, Ipv6Subnets};

use super::{Entry, MAX_LINE, Parsed};
use crate::prefix::Prefix;

/// A range may expand to at most this many CIDRs.
pub(crate) const MAX_RANGE_CIDRS: usize = 65_536;

/// Reason for a line over [`MAX_LINE`] bytes.
pub(crate) const TOO_LONG: &str = "line too long";
/// Reason for a line that is not valid UTF-8.
pub(crate) const NOT_UTF8: &str = "not UTF-8";
/// Reason for an IPv6 address with a zone id (`fe80::1%eth0`).
pub(crate) const ZONE_ID: &str = "zone id";
/// Reason for `010.001.002.003`-style addresses.
pub(crate) const LEADING_ZEROS: &str = "leading zeros are ambiguous (octal?)";
/// Reason for anything else that does not parse.
pub(crate) const GARBAGE: &str = "not an IP address or CIDR";

/// Parses a plain list. Never fails: bad lines are counted in
/// [`Parsed::rejected`] with their 1-based line numbers.
pub fn parse(bytes: &[u8]) -> Parsed {
    let mut out = Parsed::default();
    for (no, line) in lines(bytes) {
        match line {
            Ok(text) => parse_line(no, text, &mut out),
            Err(bad) => bad.reject(no, &mut out),
        }
    }
    out
}

/// Parses one already decoded line of a plain list into `out`.
pub(crate) fn parse_line(no: usize, text: &str, out: &mut Parsed) {
    let content = strip_comment(text);
    let mut tokens = content.split_whitespace();
    let Some(first) = tokens.next() else {
        return;
    };
    // `a - b` with spaces is a range too; anything else after the first
    // token is a trailing column.
    let result = match (tokens.next(), tokens.next()) {
        (Some("-"), Some(end)) if parse_prefix(end).is_ok() => {
            push_range(first, end, &mut out.entries)
        }
        _ => parse_item(first, &mut out.entries),
    };
    if let Err(reason) = result {
        out.reject(no, reason, text);
    }
}

/// A line that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BadLine {
    /// [`TOO_LONG`] or [`NOT_UTF8`].
    pub reason: &'static str,
    /// The start of the line, lossily decoded, for the rejection sample.
    pub text: String,
}

impl BadLine {
    /// Records this line as rejected.
    pub(crate) fn reject(&self, no: usize, out: &mut Parsed) {
        out.reject(no, self.reason, &self.text);
    }
}

/// Splits a body into decoded lines numbered from 1.
///
/// A leading BOM and trailing CRs are removed. Lines are decoded one by one
/// so that a single bad byte costs one line, not the whole feed.
pub(crate) fn lines(bytes: &[u8]) -> impl Iterator<Item = (usize, Result<&str, BadLine>)> {
    strip_bom(bytes)
        .split(|&b| b == b'\n')
        .enumerate()
        .map(|(i, raw)| (i + 1, decode_line(raw)))
}

fn decode_line(raw: &[u8]) -> Result<&str, BadLine> {
    let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
    let bad = |reason| BadLine {
        reason,
        text: lossy_head(raw),
    };
    if raw.len() > MAX_LINE {
        return Err(bad(TOO_LONG));
    }
    std::str::from_utf8(raw).map_err(|_| bad(NOT_UTF8))
}

/// The first bytes of `raw` as text, enough for an 80-character sample
/// without decoding a huge line.
pub(crate) fn lossy_head(raw: &[u8]) -> String {
    let head = raw.get(..raw.len().min(4 * 81)).unwrap_or(raw);
    String::from_utf8_lossy(head).into_owned()
}

/// Removes a leading UTF-8 byte order mark.
pub(crate) fn strip_bom(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes)
}

/// The part of a line before any `#`, `;` or `//` comment, trimmed.
///
/// None of these characters can occur in an address, so the first one
/// always starts a comment.
pub(crate) fn strip_comment(line: &str) -> &str {
    let end = [line.find('#'), line.find(';'), line.find("//")]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(line.len());
    line.get(..end).unwrap_or(line).trim()
}

/// Parses one token: an address, a CIDR, or a range `a-b`, appending the
/// resulting entries to `out`. On error nothing is appended.
pub(crate) fn parse_item(token: &str, out: &mut Vec<Entry>) -> Result<(), &'static str> {
    let token = token.trim();
    // Zone ids may contain `-` (`%eth-0`), so look for them before ranges.
    if token.contains('%') {
        return Err(ZONE_ID);
    }
    match token.split_once('-') {
        Some((start, end)) => push_range(start, end, out),
        None => {
            out.push(Entry::new(parse_prefix(token)?));
            Ok(())
        }
    }
}

/// Parses a single address or CIDR, explaining refusals.
pub(crate) fn parse_prefix(token: &str) -> Result<Prefix, &'static str> {
    let token = token.trim();
    if token.contains('%') {
        return Err(ZONE_ID);
    }
    // Checked before parsing: whether a parser reads `010` as 8 or 10 (or
    // refuses it) differs between tools, so refuse it everywhere.
    if has_leading_zeros(token) {
        return Err(LEADING_ZEROS);
    }
    token.parse().map_err(|_| GARBAGE)
}

/// True when the dotted-quad part of `token` (IPv4, or the IPv4 tail of an
/// IPv6 address) has an octet such as `010`.
fn has_leading_zeros(token: &str) -> bool {
    let addr = token.split('/').next().unwrap_or(token);
    let quad = addr.rsplit(':').next().unwrap_or(addr);
    let mut count = 0;
    let mut zero_led = false;
    for octet in quad.split('.') {
        if octet.is_empty() || !octet.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
        count += 1;
        zero_led |= octet.len() > 1 && octet.starts_with('0');
    }
    count == 4 && zero_led
}

/// Expands the inclusive range `start`-`end` into covering CIDRs.
pub(crate) fn push_range(start: &str, end: &str, out: &mut Vec<Entry>) -> Result<(), &'static str> {
    let (start, end) = (range_end(start)?, range_end(end)?);
    let nets: Vec<IpNet> = match (start, end) {
        (IpAddr::V4(s), IpAddr::V4(e)) if s <= e => Ipv4Subnets::new(s, e, 0)
            .take(MAX_RANGE_CIDRS + 1)
            .map(IpNet::V4)
            .collect(),
        (IpAddr::V6(s), IpAddr::V6(e)) if s <= e => Ipv6Subnets::new(s, e, 0)
            .take(MAX_RANGE_CIDRS + 1)
            .map(IpNet::V6)
            .collect(),
        (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
            return Err("range ends before it starts");
        }
        _ => return Err("range mixes IPv4 and IPv6"),
    };
    // Unreachable with today's address widths (a range needs at most 62 or
    // 254 CIDRs) but keeps the promise if the expansion ever changes.
    if nets.len() > MAX_RANGE_CIDRS {
        return Err("range expands to too many CIDRs");
    }
    out.extend(nets.into_iter().map(|n| Entry::new(Prefix::new(n))));
    Ok(())
}

/// One end of a range: a bare address, with the same refusals as a prefix.
fn range_end(token: &str) -> Result<IpAddr, &'static str> {
    let prefix = parse_prefix(token)?;
    if token.contains('/') {
        return Err("range ends must be single addresses");
    }
    // Use the canonical form so a v4-mapped end pairs with an IPv4 one.
    Ok(prefix.addr())
}

/// A byte soup for every parser's no-panic test: NULs, invalid UTF-8, a
/// stray BOM, unbalanced brackets and quotes, half addresses.
#[cfg(test)]
pub(crate) const GARBAGE_BYTES: &[u8] = b"\x00\x00\xff\xfe{[\"\\\x00\n\r\r\n\xef\xbb\xbf\
    \xc3\x28-\x01/99\n1.2.3.4-\xff\n\x00,\x00,\"\"\"\n[[[[{{{{'\\'\n%%%\n::/\n\
    ipv4-addr:value = '\n#,ip,\n1.2.3.4/33\n\x7f\x80\x81";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::test_util::{prefixes, reasons};

    #[test]
    fn addresses_cidrs_and_comments() {
        let body = b"# header\n\n192.0.2.1\n198.51.100.7/24 ; note\n2001:db8::1 // v6\n\
                     ; semicolon comment\n// slash comment\n203.0.113.5#tight\n";
        let p = parse(body);
        assert_eq!(
            prefixes(&p),
            [
                "192.0.2.1/32",
                "198.51.100.0/24",
                "2001:db8::1/128",
                "203.0.113.5/32"
            ]
        );
        assert_eq!(p.rejected, 0);
        assert_eq!(p.ignored, 0);
    }

    #[test]
    fn first_token_wins_over_trailing_columns() {
        let p = parse(b"192.0.2.9 2024-05-29 ssh-bruteforce\n192.0.2.10\tfoo bar\n");
        assert_eq!(prefixes(&p), ["192.0.2.9/32", "192.0.2.10/32"]);
        assert_eq!(p.rejected, 0);
    }

    #[test]
    fn bom_crlf_and_blank_lines() {
        let p = parse(b"\xEF\xBB\xBF192.0.2.1\r\n\r\n   \r\n2001:db8::/48\r\n");
        assert_eq!(prefixes(&p), ["192.0.2.1/32", "2001:db8::/48"]);
        assert_eq!(p.rejected, 0);
    }

    #[test]
    fn empty_body() {
        assert_eq!(parse(b""), Parsed::default());
        assert_eq!(parse(b"\n\n# only comments\n"), Parsed::default());
    }

    #[test]
    fn ranges_become_covering_cidrs() {
        let p =
            parse(b"192.0.2.0-192.0.2.255\n198.51.100.1 - 198.51.100.2\n2001:db8::-2001:db8::3\n");
        assert_eq!(
            prefixes(&p),
            [
                "192.0.2.0/24",
                "198.51.100.1/32",
                "198.51.100.2/32",
                "2001:db8::/126"
            ]
        );
        let odd = parse(b"10.0.0.1-10.0.0.6");
        assert_eq!(
            prefixes(&odd),
            ["10.0.0.1/32", "10.0.0.2/31", "10.0.0.4/31", "10.0.0.6/32"]
        );
    }

    #[test]
    fn whole_address_space_range_is_one_cidr() {
        // Breadth is the guard's business, not the parser's.
        let p = parse(b"0.0.0.0-255.255.255.255\n::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff\n");
        assert_eq!(prefixes(&p), ["0.0.0.0/0", "::/0"]);
    }

    #[test]
    fn worst_case_range_stays_small() {
        let p = parse(b"0.0.0.1-255.255.255.254\n::1-ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe\n");
        assert_eq!(p.rejected, 0);
        assert_eq!(p.entries.len(), 62 + 254);
    }

    #[test]
    fn bad_ranges_are_rejected() {
        let p = parse(
            b"192.0.2.9-192.0.2.1\n192.0.2.1-2001:db8::1\n192.0.2.0/24-192.0.3.0/24\n\
              192.0.2.1-\n-192.0.2.1\n010.0.0.1-10.0.0.2\n",
        );
        assert!(p.entries.is_empty());
        assert_eq!(
            reasons(&p.samples),
            [
                (1, "range ends before it starts"),
                (2, "range mixes IPv4 and IPv6"),
                (3, "range ends must be single addresses"),
                (4, GARBAGE),
                (5, GARBAGE),
            ]
        );
        assert_eq!(p.rejected, 6);
    }

    #[test]
    fn v4_mapped_range_pairs_with_v4() {
        let p = parse(b"::ffff:192.0.2.0-192.0.2.3\n");
        assert_eq!(prefixes(&p), ["192.0.2.0/30"]);
    }

    #[test]
    fn refusals_have_reasons_and_line_numbers() {
        let mut body = b"192.0.2.1\nfe80::1%eth0\n010.001.002.003\nhello\n".to_vec();
        body.extend_from_slice(b"192.0.2.\xff\n");
        body.extend(std::iter::repeat_n(b'1', MAX_LINE + 1));
        body.extend_from_slice(b"\n::ffff:010.1.2.3\n192.0.2.2\n");
        let p = parse(&body);
        assert_eq!(prefixes(&p), ["192.0.2.1/32", "192.0.2.2/32"]);
        assert_eq!(
            reasons(&p.samples),
            [
                (2, ZONE_ID),
                (3, LEADING_ZEROS),
                (4, GARBAGE),
                (5, NOT_UTF8),
                (6, TOO_LONG),
            ]
        );
        assert_eq!(
            p.rejected, 6,
            "the seventh (mapped leading zeros) counts too"
        );
        assert_eq!(p.samples[0].text, "fe80::1%eth0");
        assert!(p.samples[3].text.starts_with("192.0.2."));
        assert_eq!(
            p.samples[4].text.chars().count(),
            81,
            "80 chars and an ellipsis"
        );
    }

    #[test]
    fn a_line_of_exactly_max_line_bytes_is_parsed() {
        let mut line = b"192.0.2.1".to_vec();
        line.resize(MAX_LINE, b' ');
        let p = parse(&line);
        assert_eq!(prefixes(&p), ["192.0.2.1/32"]);
    }

    #[test]
    fn zero_octets_are_not_leading_zeros() {
        let p = parse(b"0.0.0.0/8\n10.0.0.0/8\n192.0.2.0\n");
        assert_eq!(p.rejected, 0);
        assert!(has_leading_zeros("1.2.3.04/32"));
        assert!(!has_leading_zeros("2001:db8::10"));
    }

    #[test]
    fn rejection_samples_are_bounded() {
        let body = "x\n".repeat(100);
        let p = parse(body.as_bytes());
        assert_eq!(p.rejected, 100);
        assert_eq!(p.samples.len(), super::super::MAX_SAMPLES);
    }

    #[test]
    fn garbage_bytes_do_not_panic() {
        let p = parse(GARBAGE_BYTES);
        assert!(p.entries.len() <= 2);
        assert!(p.rejected > 0);
    }
}
