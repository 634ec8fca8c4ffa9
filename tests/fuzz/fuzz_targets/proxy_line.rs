//! The first line a proxied socket sent or received, as the kernel cut it
//! (at most 256 bytes before CR/LF) -> request line or status line.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracer_user::exchange::{parse_request, parse_status};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for truncated in [false, true] {
        if let Some(r) = parse_request(text, truncated) {
            assert!(!r.method.is_empty());
            assert!(r
                .method
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b == b'-'));
            assert!(!r.target.bytes().any(|b| b.is_ascii_control()));
            assert!(r.version.as_deref().is_none_or(|v| v.starts_with("HTTP/")));
        }
    }
    if let Some(s) = parse_status(text) {
        assert!((100..1000).contains(&s.status_code));
        assert!(s.version.starts_with("HTTP/"));
    }
    // Credentials in an absolute-form target never survive: the fuzz input
    // as a password.
    let secret: String = text
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(32)
        .collect();
    if secret.len() >= 4 {
        let line = format!("GET http://ops:{secret}@proxy.test:3128/v2/ HTTP/1.1");
        let r = parse_request(&line, false).expect("a well-formed request line");
        assert!(!r.target.contains(&format!(":{secret}@")), "{}", r.target);
    }
});
