#![no_main]

use std::path::Path;

use blocklist_agent::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = Config::parse(&text, Path::new("fuzz.toml"));
});
