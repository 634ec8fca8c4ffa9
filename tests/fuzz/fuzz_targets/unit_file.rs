//! Unit files and drop-ins (systemd.syntax(7): comments, line
//! continuation, sections, `Key=value`), and the word splitting and C
//! unescaping of `Environment=` values.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracer_user::enrich::systemd::fuzzing::parse_unit_file;

fuzz_target!(|data: &[u8]| {
    for section in ["Service", "Manager", "Unit"] {
        let (directives, _words, _warnings) = parse_unit_file(data, section);
        let lines = data.len() + 1;
        for (key, value, line) in &directives {
            // Invariants: keys are non-empty and trimmed, values trimmed,
            // line numbers within the file.
            assert!(!key.is_empty());
            assert_eq!(key.trim_matches([' ', '\t', '\n', '\r']), key);
            assert_eq!(value.trim_matches([' ', '\t', '\n', '\r']), value);
            assert!(*line >= 1 && (*line as usize) <= lines);
        }
    }
});
