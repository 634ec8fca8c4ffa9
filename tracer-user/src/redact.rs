//! Credential redaction for anything that may hold a proxy URL, and
//! terminal safety for any node-chosen text shown to a person
//! ([`printable`]).
//!
//! Proxy values can carry credentials (`http://user:pass@host:port`), and so
//! can command lines (`curl -x http://user:pw@host`) and error messages
//! quoting either. Enrichment (command-line arguments), the verdict (proxy
//! URLs and errors) and the sinks (drift values) all pass such text through
//! here before it is stored or written, so this module sits at the crate
//! root and depends on no pipeline stage.

pub mod args;

/// Placeholder written where credentials were.
pub(crate) const REDACTED: &str = "REDACTED";

/// A request target (`http://h/p?access_token=x`, `/p?X-Amz-Signature=x`,
/// `h:443`) as it may be shown: URL credentials redacted, and its query
/// and fragment dropped, with `?REDACTED` (or `#REDACTED`) left as the
/// marker that one was there. Query strings carry tokens and signatures
/// (`access_token=`, presigned URLs' `X-Amz-Signature=`) far more often
/// than anything a reader of the event needs.
pub fn redact_target(target: &str) -> String {
    // Credentials first: a password may itself hold '?' or '#'.
    let mut out = redact(target);
    if let Some(i) = out.find(['?', '#']) {
        let marker = if out[i..].starts_with('?') { "?" } else { "#" };
        out.truncate(i);
        out.push_str(marker);
        out.push_str(REDACTED);
    }
    out
}

/// Text chosen by the node (a `comm`, a DNS name, a unix socket path, a
/// unit file's value) made safe for a terminal: every control character
/// (C0 such as ESC, DEL, C1 such as CSI U+009B) and the bidirectional
/// overrides that reorder what is displayed become visible escapes, `\x1b`
/// or `\u{9b}`. A process naming itself `\x1b]0;...` cannot retitle,
/// clear or recolour the reader's terminal, nor forge a line.
pub fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(unprintable) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        push_printable(&mut out, c);
    }
    std::borrow::Cow::Owned(out)
}

/// [`printable`] for a text of several lines (a report): line breaks stay.
pub fn printable_lines(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(|c| c != '\n' && unprintable(c)) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if c == '\n' {
            out.push(c);
        } else {
            push_printable(&mut out, c);
        }
    }
    std::borrow::Cow::Owned(out)
}

fn unprintable(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn push_printable(out: &mut String, c: char) {
    use std::fmt::Write;
    if !unprintable(c) {
        out.push(c);
    } else if c.is_ascii() {
        // Writing into a String cannot fail.
        let _ = write!(out, "\\x{:02x}", u32::from(c));
    } else {
        let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
    }
}

/// Redacts the credentials of a string known to be one proxy value: all of
/// it between `://` (or the start) and the last `@`.
///
/// The last `@` is used because Go, curl and Python all split the authority
/// at the last `@`, and a password may itself contain `@`, `/` or `#`. A
/// `://` counts as the scheme's only before the first `@`: one after it
/// belongs to a scheme-less value's host or path (`u:pw@h/?x=http://a@b`),
/// and the credentials then start at the beginning.
pub fn redact_value(value: &str) -> String {
    let Some(at) = value.rfind('@') else {
        return value.to_owned();
    };
    let first_at = value.find('@').unwrap_or(at);
    let start = match value.find("://") {
        // "://" has no '@', so it also ends before `at`.
        Some(i) if i < first_at => i + 3,
        _ => 0,
    };
    format!("{}{REDACTED}{}", &value[..start], &value[at..])
}

/// Redacts credentials from any text that may contain URLs, such as an error
/// message about to be logged.
///
/// Per line: after each `://`, everything up to the last `@` before the next
/// `://` (or the end of the line) becomes `REDACTED`; in the text before the
/// first `://`, each whitespace-separated word holding an `@` (a scheme-less
/// `user:pass@host:port`) is redacted up to its last `@`. This errs towards
/// hiding too much: an e-mail address becomes `REDACTED@example.com`, and a
/// URL followed later on the same line by an unrelated `@` loses the text in
/// between. A password containing unescaped whitespace in a scheme-less value
/// is the one case that can leak a fragment.
pub fn redact(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for line in s.split_inclusive('\n') {
        let Some(first) = line.find("://") else {
            redact_words(line, &mut out);
            continue;
        };
        redact_words(&line[..first], &mut out);
        let mut pos = first;
        while let Some(rel) = line[pos..].find("://") {
            let start = pos + rel + 3;
            out.push_str(&line[pos..start]);
            let end = line[start..]
                .find("://")
                .map_or(line.len(), |next| start + next);
            let region = &line[start..end];
            match region.rfind('@') {
                Some(at) => {
                    out.push_str(REDACTED);
                    out.push_str(&region[at..]);
                }
                None => out.push_str(region),
            }
            pos = end;
        }
        out.push_str(&line[pos..]);
    }
    out
}

/// The scheme-less half of [`redact`].
fn redact_words(text: &str, out: &mut String) {
    let mut rest = text;
    while !rest.is_empty() {
        let word_start = rest
            .find(|c: char| !c.is_whitespace())
            .unwrap_or(rest.len());
        out.push_str(&rest[..word_start]);
        rest = &rest[word_start..];
        let word_end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let word = &rest[..word_end];
        match word.rfind('@') {
            Some(at) => {
                // Keep opening quotes/brackets so the message stays readable.
                let keep = word
                    .find(|c: char| !matches!(c, '"' | '\'' | '(' | '[' | '<' | '{' | '`'))
                    .unwrap_or(word.len())
                    .min(at);
                out.push_str(&word[..keep]);
                out.push_str(REDACTED);
                out.push_str(&word[at..]);
            }
            None => out.push_str(word),
        }
        rest = &rest[word_end..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_free_text() {
        assert_eq!(
            redact("invalid proxy address \"http://u:p@h:1\": bad port"),
            "invalid proxy address \"http://REDACTED@h:1\": bad port"
        );
        assert_eq!(
            redact("a http://u:p@h1:1 b https://x:y@h2:2\nc u:p@h3:3"),
            "a http://REDACTED@h1:1 b https://REDACTED@h2:2\nc REDACTED@h3:3"
        );
        assert_eq!(
            redact("no credentials http://h:1/x"),
            "no credentials http://h:1/x"
        );
        assert_eq!(redact("'u:p@h'"), "'REDACTED@h'");
        assert_eq!(redact(""), "");
    }

    #[test]
    fn control_characters_become_visible() {
        assert_eq!(printable("curl"), "curl");
        assert!(matches!(printable("curl"), std::borrow::Cow::Borrowed(_)));
        assert_eq!(printable("\x1b[31mred\x07"), "\\x1b[31mred\\x07");
        assert_eq!(printable("a\nb\rc\td\x7f"), "a\\x0ab\\x0dc\\x09d\\x7f");
        assert_eq!(printable("\u{9b}2J"), "\\u{9b}2J");
        assert_eq!(printable("a\u{202e}b"), "a\\u{202e}b");
        assert_eq!(printable("é ü 名"), "é ü 名");
        assert_eq!(printable_lines("a\x1b\nb\n"), "a\\x1b\nb\n");
    }

    #[test]
    fn request_targets_lose_query_and_fragment() {
        assert_eq!(
            redact_target("http://h:80/a/b?access_token=x&y=1"),
            "http://h:80/a/b?REDACTED"
        );
        assert_eq!(redact_target("/o?X-Amz-Signature=abc#frag"), "/o?REDACTED");
        assert_eq!(redact_target("http://h/p#frag"), "http://h/p#REDACTED");
        assert_eq!(redact_target("203.0.113.2:443"), "203.0.113.2:443");
        assert_eq!(redact_target("http://h/p"), "http://h/p");
        // A '?' in a password is not where the query starts.
        let t = redact_target("http://u:p?ss@h/x?q=1");
        assert_eq!(t, "http://REDACTED@h/x?REDACTED");
    }

    #[test]
    fn redact_proxy_values() {
        assert_eq!(redact_value("http://u:p@h:1"), "http://REDACTED@h:1");
        assert_eq!(redact_value("http://u:p@s@h:1"), "http://REDACTED@h:1");
        assert_eq!(redact_value("http://u:a://b@h:1"), "http://REDACTED@h:1");
        assert_eq!(redact_value("u:p@h:1"), "REDACTED@h:1");
        assert_eq!(redact_value("http://h:1"), "http://h:1");
    }

    /// From the proxy_url fuzz target (tests/fuzz/corpus/proxy_url/
    /// scheme_after_password): a scheme-less value with a `://` after its
    /// credentials kept the password, since only the text after that `://`
    /// was redacted.
    #[test]
    fn fuzz_regression_scheme_separator_after_credentials() {
        assert_eq!(
            redact_value("user:Pwys:5ht!@prox://2RE:/;p28/h]:@>108h"),
            "REDACTED@>108h"
        );
        assert_eq!(
            redact_value("u:secret@proxy:3128/?next=http://a@b"),
            "REDACTED@b"
        );
    }
}
