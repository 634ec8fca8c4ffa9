//! Command lines -> `process.args` (`redact::args`). Invariant: a planted
//! secret never survives redaction, whatever its characters and whatever
//! arguments follow it; and any command line is redacted without a panic,
//! one output argument per input argument.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracer_user::redact::args::{planted, redact_args};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // 1. The input as a command line, one argument per line.
    let argv: Vec<String> = text.split('\n').map(str::to_string).collect();
    assert_eq!(redact_args(&argv).len(), argv.len());

    // 2. The first line, after "Pw" (so it never starts with '-', never
    // is empty, and appears in no form's own text), is the secret; the
    // other lines are arguments that follow it. Characters that end a
    // word or a parameter (whitespace, quotes, '&', '=', ';', '?', '#')
    // split a secret in two by the program's own rules, so they are left
    // out.
    let (first, rest) = text.split_once('\n').unwrap_or((text, ""));
    if first.chars().any(|c| {
        c.is_whitespace()
            || c.is_control()
            || matches!(c, '\'' | '"' | '\\' | '`' | '&' | '=' | ';' | '?' | '#')
    }) {
        return;
    }
    let secret = format!("Pw{first}");
    let tail: Vec<String> = rest
        .split('\n')
        .filter(|a| !a.is_empty())
        .take(8)
        .map(str::to_string)
        .collect();
    if tail.iter().any(|a| a.contains(&secret)) {
        return;
    }
    for mut argv in planted(&secret) {
        argv.extend(tail.iter().cloned());
        let out = redact_args(&argv);
        assert_eq!(out.len(), argv.len());
        assert!(
            !out.iter().any(|a| a.contains(&secret)),
            "{argv:?} -> {out:?}"
        );
    }
});
