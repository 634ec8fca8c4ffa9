//! Proxy URLs under Go, curl and Python rules, and the redaction of
//! credentials in everything printed about them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracer_user::{
    redact::{redact, redact_value},
    verdict::proxy::{parse_proxy_url, Rules},
};

const RULES: [Rules; 3] = [Rules::Go, Rules::Curl, Rules::Python];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // 1. The input as a proxy value.
    for rules in RULES {
        match parse_proxy_url(text, rules) {
            Ok(url) => {
                let _ = (url.redacted(), url.host_port(), url.ip(), url.to_string());
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
    // 2. Invariant: a password never gets through. The first line, after
    // "Pw" (which no message or field name contains, unlike a password
    // "proxy"), is the password; the rest goes after `user:<password>@`.
    // Passwords with '/', '@' or whitespace end the authority or the word
    // (documented limits of `redact`), so they are not checked.
    let (first, rest) = text.split_once('\n').unwrap_or((text, ""));
    let pw = &format!("Pw{first}");
    if first.is_empty()
        || first
            .chars()
            .any(|c| c == '/' || c == '@' || c.is_whitespace() || c.is_control())
    {
        return;
    }
    for value in [
        format!("http://user:{pw}@{rest}"),
        format!("user:{pw}@{rest}"),
        format!("socks5h://{pw}@{rest}"),
    ] {
        if value.matches(pw).count() != 1 {
            continue; // the password also appears as something else
        }
        assert!(!redact_value(&value).contains(pw), "redact_value leaks");
        if !rest.contains(char::is_whitespace) || value.contains("://") {
            assert!(!redact(&value).contains(pw), "redact leaks");
        }
        for rules in RULES {
            let shown = match parse_proxy_url(&value, rules) {
                Ok(url) => format!("{url} {url:?} {}", url.host),
                Err(e) => format!("{e} {e:?}"),
            };
            assert!(!shown.contains(pw), "{rules:?} parse output leaks");
        }
    }
});
