//! NO_PROXY lists under each rule set, matched against hosts taken from
//! the input. Input: the NO_PROXY value, then one `host[:port]` per line.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracer_user::verdict::proxy::{NoProxy, Rules};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let value = lines.next().unwrap_or_default();
    let hosts: Vec<&str> = lines.take(16).collect();
    for rules in [Rules::Go, Rules::Curl, Rules::Python] {
        let np = NoProxy::parse_for(value, rules);
        let star = NoProxy::parse_for("*", rules);
        for line in hosts
            .iter()
            .copied()
            .chain(["localhost", "10.0.0.1", "[::1]"])
        {
            let (host, port) = match line.rsplit_once(':') {
                Some((h, p)) if !h.ends_with(':') => (h, p.parse().unwrap_or(443)),
                _ => (line, 443),
            };
            let listed = np.matches_list(host, port);
            // Invariants: `matches` only adds Go's loopback rule to the list;
            // `*` alone bypasses everything; an empty list matches nothing.
            if listed {
                assert!(np.matches(host, port));
            }
            if rules != Rules::Go {
                assert_eq!(np.matches(host, port), listed);
            }
            assert!(star.matches(host, port));
            if np.is_empty() {
                assert!(!listed);
            }
        }
    }
});
