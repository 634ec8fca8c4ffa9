//! Files named by `EnvironmentFile=` (systemd's env-file.c syntax).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracer_user::enrich::systemd::fuzzing::parse_env_file;

fuzz_target!(|data: &[u8]| {
    let entries = parse_env_file(data);
    let newlines = data.iter().filter(|&&b| b == b'\n').count();
    let mut last_line = 0;
    for (key, _value, line) in &entries {
        // Invariants: a key is never empty and never holds a line end; it
        // holds '=' only as its first byte (env-file.c starts a key at any
        // non-blank, '=' included: "=A=b" sets "=A", which the caller drops
        // as an invalid name); lines are in order and within the file.
        assert!(!key.is_empty());
        assert!(!key.contains(&b'\n') && !key.contains(&b'\r'));
        assert!(!key[1..].contains(&b'='));
        assert!(*line >= 1 && (*line as usize) <= newlines + 1);
        assert!(*line >= last_line);
        last_line = *line;
    }
});
