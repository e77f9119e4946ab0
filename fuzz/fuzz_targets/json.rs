#![no_main]

//! The first byte picks the `field` option; the rest is the body.

use blocklist_agent::feed::json;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let field = match selector % 3 {
        0 => None,
        1 => Some("ip_address"),
        _ => Some("ip"),
    };
    blocklist_fuzz::check(&json::parse(body, field));
});
