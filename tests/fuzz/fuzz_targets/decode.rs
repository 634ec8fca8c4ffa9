//! Ring-buffer records from arbitrary bytes. `decode` reads with
//! `read_unaligned` after a length check; this checks it never panics and
//! never reads past the slice (the address sanitizer would catch it).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracer_user::{
    decode::{decode, Record},
    enrich::proxy_env::ProxyEnv,
};

fuzz_target!(|data: &[u8]| {
    // A copy in its own allocation, so a read past the end hits the
    // sanitizer's redzone rather than libFuzzer's larger buffer.
    let bytes = data.to_vec();
    match decode(&bytes) {
        Ok(Record::Attempt(attempt)) => {
            let _ = format!("{attempt:?}");
        }
        Ok(Record::Process { env, .. }) => {
            let _ = env.shortfall();
            let _ = env.is_complete();
            // What the tracer does with the kernel's capture.
            let _ = ProxyEnv::from_environ(&env.entries);
        }
        Ok(Record::Exit { pid }) => {
            let _ = pid;
        }
        Ok(Record::Dns(packet)) => {
            // The message as --dns reads it.
            let _ = tracer_user::enrich::dns::message::parse(&packet.message);
        }
        Ok(Record::Exchange(line)) => {
            // The line as the proxy exchange reads it.
            let _ = tracer_user::exchange::parse_request(&line.text, line.truncated);
            let _ = tracer_user::exchange::parse_status(&line.text);
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
