//! A DNS message as the kernel copies it (`--dns`: up to 1 KiB of a
//! port-53 payload, possibly cut) -> id, response code, question, addresses.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracer_user::enrich::dns::message::{parse, qtype_name, rcode_name};

fuzz_target!(|data: &[u8]| {
    match parse(data) {
        // Only a message shorter than the fixed header is unreadable.
        None => assert!(data.len() < 12),
        Some(m) => {
            // The id and the code come from the header, whatever follows.
            assert_eq!(m.id, u16::from_be_bytes([data[0], data[1]]));
            assert_eq!(m.rcode, data[3] & 0x0f);
            assert_eq!(m.is_response, data[2] & 0x80 != 0);
            assert!(!rcode_name(m.rcode).is_empty());
            if let Some((_, qtype)) = &m.question {
                assert!(!qtype_name(*qtype).is_empty());
            }
        }
    }
});
