#![no_main]

use blocklist_agent::feed::firehol;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    blocklist_fuzz::check(&firehol::parse(data));
});
