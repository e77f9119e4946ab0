#![no_main]

//! The first byte is `min_score`; the rest is the body.

use blocklist_agent::feed::scored;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&min, body)) = data.split_first() else {
        return;
    };
    blocklist_fuzz::check(&scored::parse(body, u32::from(min % 16)));
});
