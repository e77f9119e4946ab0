//! Aligned, borderless tables for human output (80 columns).

use comfy_table::{ContentArrangement, Table, presets};

/// A table with a header row, no borders, aligned columns.
pub fn new(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_width(80)
        .set_header(header.iter().map(|h| h.to_uppercase()));
    t
}

/// Keeps column `col` at least `width` characters wide, so its cells
/// (addresses, prefixes) are not broken across lines.
pub fn keep_whole(t: &mut Table, col: usize, width: u16) {
    if let Some(c) = t.column_mut(col) {
        c.set_constraint(comfy_table::ColumnConstraint::Boundaries {
            lower: comfy_table::Width::Fixed(width + 2),
            upper: comfy_table::Width::Fixed(60),
        });
    }
}

/// Key/value pairs as a two-column table.
pub fn pairs<'a>(rows: impl IntoIterator<Item = (&'a str, String)>) -> Table {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_width(80);
    for (k, v) in rows {
        t.add_row(vec![k.to_owned(), v]);
    }
    t
}

/// A count, shortened past five digits (123.5k, 4.2M).
pub fn count(n: u64) -> String {
    match n {
        0..100_000 => n.to_string(),
        100_000..1_000_000 => format!("{:.1}k", n as f64 / 1e3),
        _ => format!("{:.1}M", n as f64 / 1e6),
    }
}

/// Human-readable byte count.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_humane() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 * 1024 * 1024), "3.0 MiB");
    }

    #[test]
    fn tables_fit_80_columns() {
        let mut t = new(&["prefix", "packets", "bytes"]);
        t.add_row(vec![
            "2001:db8:ffff:ffff:ffff:ffff:ffff:0/112".to_owned(),
            "1".into(),
            "2".into(),
        ]);
        for line in t.to_string().lines() {
            assert!(line.chars().count() <= 80, "{line}");
        }
    }
}
