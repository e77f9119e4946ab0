#![no_main]

use blocklist_agent::feed::crowdsec::{self, Decisions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let now = blocklist_fuzz::now_for(data);
    let Ok(stream) = crowdsec::parse_stream(data, now) else {
        return;
    };
    // Every kept ban expires after `now`: expired ones are ignored.
    for (_, d) in &stream.new {
        assert!(d.expires > now || now == i64::MAX, "a ban that already expired: {d:?}");
    }
    let mut held = Decisions::default();
    held.apply(stream.clone());
    held.expire(now);
    let mut replaced = Decisions::default();
    replaced.replace(stream.clone());
    for e in held.entries().iter().chain(replaced.entries().iter()) {
        blocklist_fuzz::check_canonical(&e.prefix);
    }
    blocklist_fuzz::check(&stream.into_parsed());
});
