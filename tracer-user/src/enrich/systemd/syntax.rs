//! Unit file syntax (systemd.syntax(7)): lines, comments, line
//! continuation, sections and `Key=value` assignments.

use std::path::Path;

/// A file and line, printed as `file:line` in warnings like systemd's
/// log_syntax().
#[derive(Clone, Copy)]
pub(super) struct Location<'a> {
    pub(super) file: &'a Path,
    pub(super) line: u32,
}

impl std::fmt::Display for Location<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

#[derive(Debug, PartialEq, Eq)]
pub(super) struct Directive {
    pub(super) key: String,
    pub(super) value: String,
    /// Line where the (possibly continued) assignment starts.
    pub(super) line: u32,
}

/// Split like systemd's read_line(): "\n", "\r", "\r\n" and NUL end a line.
fn split_lines(bytes: &[u8]) -> Vec<&[u8]> {
    let mut lines = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\n' | b'\0' => {
                lines.push(&bytes[start..i]);
                i += 1;
                start = i;
            }
            b'\r' => {
                lines.push(&bytes[start..i]);
                i += if bytes.get(i + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                start = i;
            }
            _ => i += 1,
        }
    }
    if start < bytes.len() {
        lines.push(&bytes[start..]);
    }
    lines
}

pub(super) fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

fn trim_ws(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if !is_ws(*first) {
            break;
        }
        s = rest;
    }
    while let [rest @ .., last] = s {
        if !is_ws(*last) {
            break;
        }
        s = rest;
    }
    s
}

/// Return the assignments of `wanted` section, following config_parse():
///
/// * a line whose first non-blank character is '#' or ';' is a comment, even
///   in the middle of a continuation (it is dropped, the continuation goes on);
/// * a line ending in an unescaped backslash continues on the next line, the
///   backslash becoming a space;
/// * `[Section]` headers; keys and sections are case-sensitive; keys and values
///   are stripped of surrounding whitespace.
pub(super) fn parse_unit_file(
    content: &[u8],
    wanted: &str,
    file: &Path,
    warnings: &mut Vec<String>,
) -> Vec<Directive> {
    let mut out = Vec::new();
    let mut section: Option<String> = None;
    let mut continuation: Option<(Vec<u8>, u32)> = None;

    for (idx, raw) in split_lines(content).into_iter().enumerate() {
        let lineno = u32::try_from(idx + 1).unwrap_or(u32::MAX);
        let first_non_blank = raw.iter().copied().find(|b| !is_ws(*b));
        if matches!(first_non_blank, Some(b'#' | b';')) {
            continue;
        }
        let raw = if idx == 0 {
            raw.strip_prefix(b"\xEF\xBB\xBF".as_slice()).unwrap_or(raw)
        } else {
            raw
        };
        let (mut buf, start) = match continuation.take() {
            Some((mut buf, start)) => {
                buf.extend_from_slice(raw);
                (buf, start)
            }
            None => (raw.to_vec(), lineno),
        };
        if ends_with_unescaped_backslash(&buf) {
            if let Some(last) = buf.last_mut() {
                *last = b' ';
            }
            continuation = Some((buf, start));
            continue;
        }
        parse_line(&buf, start, wanted, file, &mut section, &mut out, warnings);
    }
    if let Some((buf, start)) = continuation {
        parse_line(&buf, start, wanted, file, &mut section, &mut out, warnings);
    }
    out
}

fn ends_with_unescaped_backslash(buf: &[u8]) -> bool {
    let mut escaped = false;
    for &b in buf {
        if escaped {
            escaped = false;
        } else if b == b'\\' {
            escaped = true;
        }
    }
    escaped
}

fn parse_line(
    raw: &[u8],
    line: u32,
    wanted: &str,
    file: &Path,
    section: &mut Option<String>,
    out: &mut Vec<Directive>,
    warnings: &mut Vec<String>,
) {
    let at = Location { file, line };
    let trimmed = trim_ws(raw);
    if trimmed.is_empty() {
        return;
    }
    let Ok(text) = std::str::from_utf8(trimmed) else {
        warnings.push(format!("{at}: line is not valid UTF-8; ignored by systemd"));
        return;
    };
    if let Some(rest) = text.strip_prefix('[') {
        match rest.strip_suffix(']') {
            Some(name) => *section = Some(name.to_string()),
            None => {
                // config_parse() fails the whole file on this.
                warnings.push(format!(
                    "{at}: invalid section header {text:?}; systemd refuses to load this file"
                ));
                *section = None;
            }
        }
        return;
    }
    let Some(current) = section.as_deref() else {
        warnings.push(format!(
            "{at}: assignment outside of any section; ignored by systemd"
        ));
        return;
    };
    if current != wanted {
        return;
    }
    match text.split_once('=') {
        None => warnings.push(format!("{at}: missing '='; line ignored by systemd")),
        Some((key, _)) if key.trim_matches(is_ws_char).is_empty() => warnings.push(format!(
            "{at}: missing key name before '='; line ignored by systemd"
        )),
        Some((key, value)) => out.push(Directive {
            key: key.trim_matches(is_ws_char).to_string(),
            value: value.trim_matches(is_ws_char).to_string(),
            line,
        }),
    }
}

fn is_ws_char(c: char) -> bool {
    u8::try_from(c).is_ok_and(is_ws)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enrich::systemd::envfile::parse_env_file;
    use crate::enrich::systemd::test_support::{value, TempRoot};

    #[test]
    fn line_continuation_reports_the_starting_line() {
        let root = TempRoot::new("continuation");
        root.write(
            "/etc/systemd/system/cont.service",
            "[Service]\n\
             Environment=A=1 \\\n\
             \x20   B=2 \\\n\
             # a comment inside the continuation is dropped\n\
             \x20   C=3\n\
             Environment=D=ends\\\\\n\
             Environment=E=5\n",
        );
        let env = root.load("cont.service");
        for (name, val) in [("A", "1"), ("B", "2"), ("C", "3")] {
            let src = env.get(name).expect(name);
            assert_eq!(src.value, val);
            assert_eq!(src.line, 2);
        }
        // An escaped backslash at the end is not a continuation.
        assert_eq!(value(&env, "D"), Some("ends\\"));
        assert_eq!(env.get("E").map(|v| v.line), Some(7));
    }

    #[test]
    fn other_sections_and_case_are_ignored() {
        let root = TempRoot::new("sections");
        root.write(
            "/etc/systemd/system/s.service",
            "Environment=OUTSIDE=1\n\
             [Unit]\n\
             Environment=UNIT=1\n\
             [Service]\n\
             environment=LOWER=1\n\
             Environment=SERVICE=1\n\
             [Install]\n\
             Environment=INSTALL=1\n\
             [X-Custom]\n\
             Environment=CUSTOM=1\n",
        );
        let env = root.load("s.service");
        let names: Vec<&str> = env.vars.iter().map(|v| v.variable.as_str()).collect();
        assert_eq!(names, ["SERVICE"]);
        assert!(env.warnings.iter().any(|w| w.contains("case-sensitive")));
        assert!(env
            .warnings
            .iter()
            .any(|w| w.contains("outside of any section")));
    }

    #[test]
    fn unit_file_parser_never_panics_on_garbage() {
        let mut warnings = Vec::new();
        for input in [
            &b""[..],
            b"\\",
            b"[",
            b"[Service",
            b"[Service]\n=x\n\\\n",
            b"\xff\xfe[Service]\nEnvironment=\xff\n",
            b"[Service]\nEnvironment=\"unterminated\n",
            b"\r\r\n\0[Service]\0Environment=A=1",
        ] {
            let _ = parse_unit_file(input, "Service", Path::new("/x"), &mut warnings);
            let _ = parse_env_file(input);
        }
        let d = parse_unit_file(
            b"\r\r\n\0[Service]\0Environment=A=1",
            "Service",
            Path::new("/x"),
            &mut warnings,
        );
        assert_eq!(
            d,
            vec![Directive {
                key: "Environment".into(),
                value: "A=1".into(),
                line: 5
            }]
        );
    }
}
