//! `/proc/<pid>/environ` bytes -> `ProxyEnv`, then everything the verdict
//! derives from an environment alone (proxy selection, routing).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracer_user::{
    enrich::proxy_env::ProxyEnv,
    verdict::{
        endpoints_of,
        proxy::{proxy_endpoints, route, RequestScheme, Rules},
    },
};

const NAMES: [&str; 8] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

fuzz_target!(|data: &[u8]| {
    let env = ProxyEnv::from_environ(data);
    // Invariant: a kept value is the first `NAME=` entry's value, so for
    // UTF-8 input `NAME=value` appears in the input, at the start of an entry.
    if let Ok(text) = std::str::from_utf8(data) {
        for name in NAMES {
            if let Some(value) = env.get(name) {
                let entry = format!("{name}={value}");
                assert!(
                    text.split('\0').any(|e| e.starts_with(&entry)),
                    "{name} not taken from the input"
                );
            }
        }
    }
    assert_eq!(env.truncated, !data.is_empty() && data.last() != Some(&0));
    let _ = endpoints_of(&env);
    for rules in [Rules::Go, Rules::Curl, Rules::Python] {
        let _ = proxy_endpoints(&env, rules);
        for scheme in [RequestScheme::Http, RequestScheme::Https] {
            let _ = route(&env, scheme, "registry.example.com", 443, rules);
            let _ = route(&env, scheme, "10.96.0.1", 443, rules);
        }
    }
});
