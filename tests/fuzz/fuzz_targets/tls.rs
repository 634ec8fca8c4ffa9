//! The TLS facts of a tunnel as the kernel sends them (issue #19): flags
//! with versions, and at most 256 bytes of an SNI host name or an issuer
//! Name's DER, all chosen by whoever is at either end of the tunnel. The
//! decoding never panics, never reads past the bytes, and its text is
//! bounded and free of control characters.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracer_common::exchange;
use tracer_user::exchange::tls::{hello_of, issuer_of, Hello};

fuzz_target!(|data: &[u8]| {
    let Some((head, rest)) = data.split_first_chunk::<4>() else {
        return;
    };
    let flags = u32::from_le_bytes(*head);
    // What the kernel copies: at most LINE_MAX bytes, in its own
    // allocation so a read past the end hits the sanitizer's redzone.
    let bytes = rest[..rest.len().min(tracer_common::LINE_MAX)].to_vec();
    for direction in [exchange::TLS_CLIENT, exchange::TLS_SERVER] {
        match hello_of(direction, flags, &bytes) {
            Some(Hello::Client(c)) => {
                if let Some(name) = c.server_name {
                    // 255 bytes at most, each at most 4 once escaped.
                    assert!(name.len() <= 4 * exchange::TLS_NAME_MAX);
                    assert!(name.bytes().all(|b| b.is_ascii_graphic() || b == b' '));
                }
                assert!(c.offered.len() <= 5);
            }
            Some(Hello::Server(s)) => {
                if let Some(issuer) = s.issuer {
                    assert!(!issuer.chars().any(char::is_control), "{issuer:?}");
                }
            }
            Some(Hello::NotTls) => {}
            None => panic!("a TLS direction decodes"),
        }
    }
    if let Some(issuer) = issuer_of(&bytes) {
        assert!(!issuer.chars().any(char::is_control), "{issuer:?}");
    }
});
