#![no_main]

use blocklist_agent::feed::dshield;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    blocklist_fuzz::check(&dshield::parse(data));
});
