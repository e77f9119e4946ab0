//! CSV feeds with a header row and an address column.
//!
//! abuse.ch Feodo Tracker's `ipblocklist.csv` is the awkward case this is
//! built for: a block of `#` comments whose last comma-separated line is the
//! header, then quoted data rows, then a trailing comment:
//!
//! ```text
//! # abuse.ch Feodo Tracker Botnet C2 IP Blocklist (CSV)
//! # first_seen_utc,dst_ip,dst_port,c2_status,last_online,malware
//! "2024-03-01 12:14:05","192.0.2.10","443","online","2024-05-29","QakBot"
//! # END 1 entries
//! ```
//!
//! An ordinary header row (`ip,port,reason`) works the same way. The column
//! is given by header name (case-insensitive) or 0-based number; by default
//! it is the first column whose header is a usual address name (`ip`,
//! `dst_ip`, `ip_address`...), else column 0. A file without a header is
//! recognised when its first row already holds an address in that column.
//!
//! Rows are read line by line (a quoted field cannot span lines), so a bad
//! byte or an over-long line costs one row, and rejections carry the body's
//! 1-based line numbers.

use super::{Parsed, plain};

/// Header names that hold an address, in no particular order: the first
/// column (left to right) carrying one of them is the default column.
pub(crate) const ADDRESS_HEADERS: &[&str] = &[
    "ip",
    "ip_address",
    "dst_ip",
    "ipaddress",
    "cidr",
    "network",
    "address",
    "indicator",
];

/// Parses a CSV body, reading addresses from `column` (a header name or a
/// 0-based number; see the module docs for the default).
pub fn parse(bytes: &[u8], column: Option<&str>) -> Parsed {
    let mut out = Parsed::default();
    let mut lines = plain::lines(bytes);
    let start = find_start(&mut lines, &mut out);
    let Some((first_no, first)) = start.first else {
        return out;
    };
    let first_fields = split_row(first);
    let (col, first_is_header) =
        match choose_column(&first_fields, start.comment_header.as_deref(), column) {
            Ok(choice) => choice,
            Err(reason) => {
                out.reject(first_no, reason, first);
                return out;
            }
        };
    if !first_is_header {
        parse_row(first_no, first, &first_fields, col, &mut out);
    }
    for (no, line) in lines {
        match line {
            Ok(text) if !is_comment_or_blank(text) => {
                parse_row(no, text, &split_row(text), col, &mut out);
            }
            Ok(_) => {}
            Err(bad) => bad.reject(no, &mut out),
        }
    }
    out
}

/// True when the start of a body looks like a CSV with an address column:
/// its first data line has commas and either it or the `#` header before it
/// names an address column, or its first field is an address.
pub(crate) fn sniff(bytes: &[u8]) -> bool {
    let mut scratch = Parsed::default();
    let start = find_start(&mut plain::lines(bytes), &mut scratch);
    let Some((_, first)) = start.first else {
        return false;
    };
    // Commas inside a plain list's trailing comment do not make it CSV.
    if !plain::strip_comment(first).contains(',') {
        return false;
    }
    let fields = split_row(first);
    default_column(&fields).is_some()
        || start
            .comment_header
            .as_deref()
            .is_some_and(|h| default_column(h).is_some())
        || fields.first().is_some_and(|f| is_address(f))
}

/// The top of a body: the header found in comments, and the first line
/// that is not a comment.
struct Start<'a> {
    comment_header: Option<Vec<String>>,
    first: Option<(usize, &'a str)>,
}

/// Reads up to the first non-comment line, remembering the last comment
/// line with commas as a possible header and rejecting undecodable lines.
fn find_start<'a>(
    lines: &mut impl Iterator<Item = (usize, Result<&'a str, plain::BadLine>)>,
    out: &mut Parsed,
) -> Start<'a> {
    let mut comment_header = None;
    for (no, line) in lines.by_ref() {
        let text = match line {
            Ok(text) => text,
            Err(bad) => {
                bad.reject(no, out);
                continue;
            }
        };
        let trimmed = text.trim();
        if let Some(comment) = trimmed.strip_prefix('#') {
            if comment.contains(',') {
                comment_header = Some(split_row(comment));
            }
        } else if !trimmed.is_empty() {
            return Start {
                comment_header,
                first: Some((no, text)),
            };
        }
    }
    Start {
        comment_header,
        first: None,
    }
}

/// Picks the address column and says whether the first non-comment row is
/// a header (`true`) or already data.
fn choose_column(
    first: &[String],
    comment_header: Option<&[String]>,
    column: Option<&str>,
) -> Result<(usize, bool), String> {
    let looks_like_data = |col: usize| first.get(col).is_some_and(|f| is_address(f));
    match column.map(|c| (c, c.trim().parse::<usize>())) {
        Some((_, Ok(n))) => Ok((n, !looks_like_data(n))),
        Some((name, Err(_))) => {
            if let Some(i) = find_header(first, name) {
                Ok((i, true))
            } else if let Some(i) = comment_header.and_then(|h| find_header(h, name)) {
                Ok((i, false))
            } else {
                Err(format!("no column named `{}` in the header", name.trim()))
            }
        }
        None => {
            if let Some(i) = default_column(first) {
                Ok((i, true))
            } else if let Some(i) = comment_header.and_then(default_column) {
                Ok((i, false))
            } else {
                Ok((0, !looks_like_data(0)))
            }
        }
    }
}

/// The first column whose header is a usual address name.
fn default_column(header: &[String]) -> Option<usize> {
    header
        .iter()
        .position(|h| ADDRESS_HEADERS.contains(&normalize(h).as_str()))
}

pub(crate) fn find_header(header: &[String], name: &str) -> Option<usize> {
    let name = normalize(name);
    header.iter().position(|h| normalize(h) == name)
}

/// Header names compare case-insensitively, with `IP Address`,
/// `ip-address` and `ip_address` the same.
fn normalize(name: &str) -> String {
    name.trim()
        .chars()
        .map(|c| match c {
            ' ' | '-' => '_',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

fn is_address(field: &str) -> bool {
    plain::parse_item(field, &mut Vec::new()).is_ok()
}

fn parse_row(no: usize, text: &str, fields: &[String], col: usize, out: &mut Parsed) {
    let result = match fields.get(col) {
        Some(field) => plain::parse_item(field, &mut out.entries).map_err(String::from),
        None => Err(format!("row has no column {col}")),
    };
    if let Err(reason) = result {
        out.reject(no, reason, text);
    }
}

/// Splits one line into trimmed fields, honouring quotes, also where a
/// space follows the comma (`"a", "b"`: the csv crate reads a quote only
/// at the very start of a field, so those quotes are removed here).
pub(crate) fn split_row(line: &str) -> Vec<String> {
    let mut reader = ::csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(::csv::Trim::All)
        .from_reader(line.as_bytes());
    let mut record = ::csv::StringRecord::new();
    // A line is valid UTF-8 already, and csv only fails on invalid UTF-8 or
    // I/O, so an error here means "no fields".
    match reader.read_record(&mut record) {
        Ok(true) => record
            .iter()
            .map(|f| {
                f.strip_prefix('"')
                    .and_then(|f| f.strip_suffix('"'))
                    .unwrap_or(f)
                    .to_owned()
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn is_comment_or_blank(text: &str) -> bool {
    let t = text.trim_start();
    t.is_empty() || t.starts_with('#')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::MAX_LINE;
    use crate::feed::plain::{GARBAGE, GARBAGE_BYTES, NOT_UTF8, TOO_LONG, ZONE_ID};
    use crate::feed::test_util::{prefixes, reasons};

    const FEODO: &[u8] = include_bytes!("fixtures/feodo_ipblocklist.csv");

    #[test]
    fn feodo_fixture_uses_the_commented_header() {
        let p = parse(FEODO, None);
        assert_eq!(
            prefixes(&p),
            [
                "192.0.2.10/32",
                "198.51.100.23/32",
                "203.0.113.77/32",
                "2001:db8:feed::25/128"
            ]
        );
        assert_eq!(reasons(&p.samples), [(13, GARBAGE)]);
        assert_eq!(p.rejected, 1);
        assert!(p.samples[0].text.contains("192.0.2.300"));
        assert!(sniff(FEODO));
    }

    #[test]
    fn feodo_fixture_by_name_and_number() {
        let expected = prefixes(&parse(FEODO, None));
        assert_eq!(prefixes(&parse(FEODO, Some("DST_IP"))), expected);
        assert_eq!(prefixes(&parse(FEODO, Some("1"))), expected);
        let p = parse(FEODO, Some("nope"));
        assert!(p.entries.is_empty());
        assert_eq!(
            reasons(&p.samples),
            [(10, "no column named `nope` in the header")]
        );
    }

    #[test]
    fn quoted_comment_header() {
        let body =
            b"# \"first_seen_utc\",\"dst_ip\",\"dst_port\"\n\"2024-01-01\",\"192.0.2.1\",\"443\"\n";
        assert_eq!(prefixes(&parse(body, None)), ["192.0.2.1/32"]);
    }

    #[test]
    fn ordinary_header_row() {
        let body = b"Reason,IP Address,Port\r\nscan,192.0.2.1,22\r\n\"a, quoted reason\",\"2001:db8::1\",443\r\n";
        let p = parse(body, None);
        assert_eq!(prefixes(&p), ["192.0.2.1/32", "2001:db8::1/128"]);
        assert_eq!(p.rejected, 0);
        assert_eq!(prefixes(&parse(body, Some("ip address"))), prefixes(&p));
        assert_eq!(prefixes(&parse(body, Some("1"))), prefixes(&p));
    }

    #[test]
    fn first_matching_column_wins_left_to_right() {
        let body = b"network,ip\n10.0.0.0/8,192.0.2.1\n";
        assert_eq!(prefixes(&parse(body, None)), ["10.0.0.0/8"]);
    }

    #[test]
    fn real_header_beats_commented_header() {
        let body = b"# generated by x, y and z\nip,port\n192.0.2.1,80\n";
        let p = parse(body, None);
        assert_eq!(prefixes(&p), ["192.0.2.1/32"]);
        assert_eq!(p.rejected, 0);
    }

    #[test]
    fn unknown_header_defaults_to_column_zero() {
        let body = b"host,seen\n192.0.2.1,2024\n";
        let p = parse(body, None);
        assert_eq!(prefixes(&p), ["192.0.2.1/32"]);
        assert_eq!(p.rejected, 0);
    }

    #[test]
    fn headerless_body() {
        let body = b"192.0.2.1,scanner\n198.51.100.0/24,spam\n";
        let p = parse(body, None);
        assert_eq!(prefixes(&p), ["192.0.2.1/32", "198.51.100.0/24"]);
        let by_number = parse(b"x,192.0.2.1\ny,192.0.2.2\n", Some("1"));
        assert_eq!(prefixes(&by_number), ["192.0.2.1/32", "192.0.2.2/32"]);
    }

    #[test]
    fn bad_rows_are_rejected_with_line_numbers() {
        let mut body =
            b"\xEF\xBB\xBFip,note\r\n192.0.2.1,ok\r\n\r\n# mid comment\r\nfe80::1%eth0,zone\r\n"
                .to_vec();
        body.extend_from_slice(b"192.0.2.\xff,bad utf8\r\n");
        body.extend(std::iter::repeat_n(b'x', MAX_LINE + 1));
        body.extend_from_slice(b"\r\n\r\n,empty\r\n192.0.2.9\r\n");
        // By `note`, no row holds an address: all six data rows are refused.
        let p = parse(&body, Some("note"));
        assert_eq!(p.rejected, 6);
        let p = parse(&body, None);
        assert_eq!(prefixes(&p), ["192.0.2.1/32", "192.0.2.9/32"]);
        assert_eq!(
            reasons(&p.samples),
            [(5, ZONE_ID), (6, NOT_UTF8), (7, TOO_LONG), (9, GARBAGE)]
        );
    }

    #[test]
    fn short_rows() {
        let p = parse(b"a,b,ip\n1,2\n1,2,192.0.2.1\n", None);
        assert_eq!(prefixes(&p), ["192.0.2.1/32"]);
        assert_eq!(reasons(&p.samples), [(2, "row has no column 2")]);
    }

    #[test]
    fn bad_lines_before_the_header_are_rejected() {
        let p = parse(b"# c\n\xff\xfe\nip\n192.0.2.1\n", None);
        assert_eq!(prefixes(&p), ["192.0.2.1/32"]);
        assert_eq!(reasons(&p.samples), [(2, NOT_UTF8)]);
    }

    #[test]
    fn empty_and_comment_only_bodies() {
        assert_eq!(parse(b"", None), Parsed::default());
        assert_eq!(parse(b"# a,b\n#\n", None), Parsed::default());
        assert_eq!(parse(b"ip,port\n", None), Parsed::default());
    }

    #[test]
    fn sniffing() {
        assert!(sniff(b"ip,port\n192.0.2.1,80\n"));
        assert!(sniff(b"192.0.2.1,80\n"));
        assert!(!sniff(b"192.0.2.1\n"));
        assert!(!sniff(b"# ip, port\n192.0.2.1\n"));
        assert!(!sniff(b"name,colour\nx,y\n"));
        assert!(!sniff(b""));
    }

    #[test]
    fn garbage_bytes_do_not_panic() {
        let p = parse(GARBAGE_BYTES, None);
        assert!(p.entries.is_empty());
        let _ = parse(GARBAGE_BYTES, Some("7"));
        let _ = sniff(GARBAGE_BYTES);
    }
}
