#![no_main]

//! Format detection plus the dispatcher, as for a feed with
//! `format = "auto"`.

use blocklist_agent::feed::{self, Format, FormatOptions, detect};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let detected = detect::detect(data);
    assert_ne!(detected, Format::Auto, "detect() must never return Auto");
    let parsed = feed::parse(
        data,
        &Format::Auto,
        &FormatOptions::default(),
        blocklist_fuzz::NOW,
    );
    blocklist_fuzz::check(&parsed);
});
