#![no_main]

use blocklist_agent::feed::stix;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let now = blocklist_fuzz::now_for(data);
    let parsed = stix::parse(data, now);
    for ind in &parsed.indicators {
        // `active` is documented as "neither revoked nor past valid_until".
        let expected = !ind.revoked && ind.valid_until.is_none_or(|t| t > now);
        assert_eq!(
            ind.active, expected,
            "inconsistent `active` at now={now}: {ind:?}"
        );
        for p in &ind.prefixes {
            blocklist_fuzz::check_canonical(p);
        }
    }
    blocklist_fuzz::check(&parsed.into_parsed());
});
