#![no_main]

//! The first byte picks the `column` option; the rest is the body.

use blocklist_agent::feed::csv;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let column = match selector % 3 {
        0 => None,
        1 => Some("1"),
        _ => Some("ip"),
    };
    blocklist_fuzz::check(&csv::parse(body, column));
});
