#![no_main]

//! `str::parse::<Prefix>`, the minimum-length guard, and the print/parse
//! round trip, which must be a fixed point.

use blocklist_agent::prefix::Prefix;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(p) = text.parse::<Prefix>() else {
        return;
    };
    blocklist_fuzz::check_canonical(&p);
    for (v4, v6) in [(0, 0), (8, 16), (32, 128), (255, 255)] {
        match p.check_min(v4, v6) {
            Ok(q) => assert_eq!(q, p),
            Err(e) => {
                assert!(p.prefix_len() < if p.is_v4() { v4.max(1) } else { v6.max(1) });
                let _ = e.to_string();
            }
        }
    }
});
