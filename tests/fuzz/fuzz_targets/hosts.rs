//! /etc/hosts (hosts(5)).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracer_user::verdict::resolve::parse_hosts;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let map = parse_hosts(text);
    // Invariants: names are lower-case, non-empty, without blanks or '#';
    // each has at least one address and no duplicates.
    for (name, addrs) in &map {
        assert!(!name.is_empty());
        assert_eq!(&name.to_ascii_lowercase(), name);
        assert!(!name.contains('#') && !name.contains(|c: char| c.is_ascii_whitespace()));
        assert!(!addrs.is_empty());
        for (i, a) in addrs.iter().enumerate() {
            assert!(!addrs[..i].contains(a));
        }
    }
});
