//! Shared checks for the fuzz targets.
//!
//! Beyond "does not panic", every feed parser's output must keep the
//! documented invariants of [`Parsed`]: at most [`MAX_SAMPLES`] samples,
//! never more samples than rejections, 1-based line numbers, sample text cut
//! to 80 characters (plus an ellipsis), and canonical prefixes (printing and
//! re-parsing a prefix gives it back unchanged).

use blocklist_agent::{
    feed::{MAX_SAMPLES, Parsed},
    prefix::Prefix,
};

/// A fixed "now" (2025-06-15T00:00:00Z) for STIX expiry decisions.
pub const NOW: i64 = 1_749_945_600;

/// Picks the `now` given to the STIX parser from the input length, so that
/// the same input always gets the same value (reproducible crashes) while
/// the extremes are also exercised.
pub fn now_for(data: &[u8]) -> i64 {
    match data.len() % 4 {
        0 => i64::MIN,
        1 => i64::MAX,
        2 => 0,
        _ => NOW,
    }
}

/// Asserts the invariants of a parser's output.
pub fn check(parsed: &Parsed) {
    assert!(
        parsed.samples.len() <= MAX_SAMPLES,
        "{} samples kept, more than MAX_SAMPLES = {MAX_SAMPLES}",
        parsed.samples.len()
    );
    assert!(
        parsed.samples.len() <= parsed.rejected,
        "{} samples but only {} rejections",
        parsed.samples.len(),
        parsed.rejected
    );
    for s in &parsed.samples {
        assert!(s.line >= 1, "sample line numbers are 1-based: {s:?}");
        assert!(
            s.text.chars().count() <= 81,
            "sample text not cut to 80 characters: {s:?}"
        );
    }
    for e in &parsed.entries {
        check_canonical(&e.prefix);
    }
}

/// Asserts that a prefix prints to a string that parses back to itself.
pub fn check_canonical(p: &Prefix) {
    let text = p.to_string();
    let back: Prefix = text
        .parse()
        .unwrap_or_else(|e| panic!("{p:?} prints as {text:?}, which does not parse: {e}"));
    assert_eq!(
        back, *p,
        "{p:?} prints as {text:?}, which parses to {back:?}"
    );
    assert_eq!(
        back.to_string(),
        text,
        "printing is not a fixed point for {p:?}"
    );
}
