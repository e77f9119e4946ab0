#![no_main]

use blocklist_agent::feed::spamhaus;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    blocklist_fuzz::check(&spamhaus::parse_text(data));
});
