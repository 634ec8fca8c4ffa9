//! Files named by `EnvironmentFile=` (systemd.exec(5)): glob expansion of
//! the path under the host root and the env-file syntax of systemd's
//! env-file.c.
//!
//! systemd expands the path with glob(3) and no flags (sorted, no brace
//! expansion, backslash quoting, `[!...]` and `[^...]`, an unclosed `[`
//! matching itself, wildcards never matching a leading '.'); the matcher is
//! hand-written because neither crate gives exactly that: `glob` walks the
//! tracer's own file system (an absolute symlink would leave the host root)
//! and has no backslash quoting or `[^...]`, and `globset` adds `{a,b}` and
//! `**` and rejects an unclosed `[`.

use super::root::HostFs;
use super::syntax::is_ws;
use crate::nodefs::NodeFsError;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

#[derive(Debug)]
pub(super) struct EnvFileEntry {
    pub(super) key: Vec<u8>,
    pub(super) value: Vec<u8>,
    pub(super) line: u32,
}

/// parse_env_file_internal() from systemd's env-file.c, state for state:
///
/// * `#` / `;` start a comment only as the first non-blank of a line; an
///   inline `#` is part of the value (`A=b # c` sets `b # c`);
/// * a line without '=' is ignored;
/// * unquoted values lose trailing whitespace; a backslash keeps the next
///   character literally (`\n` is "n"), and backslash-newline continues;
/// * single quotes are literal; in double quotes `\"`, `\\`, `` \` `` and `\$`
///   are unescaped, other backslashes are kept, backslash-newline continues;
///   quoted and unquoted parts concatenate (`A="b"c` sets `bc`);
/// * no `${VAR}` expansion and no `export` keyword: `export A=b` yields the
///   name "export A", which the caller reports and drops like systemd.
pub(super) fn parse_env_file(content: &[u8]) -> Vec<EnvFileEntry> {
    enum St {
        PreKey,
        Key,
        PreValue,
        Value,
        ValueEscape,
        SingleQuote,
        DoubleQuote,
        DoubleQuoteEscape,
        Comment,
        CommentEscape,
    }
    let is_nl = |c: u8| c == b'\n' || c == b'\r';

    let mut out = Vec::new();
    let mut st = St::PreKey;
    let mut key: Vec<u8> = Vec::new();
    let mut value: Vec<u8> = Vec::new();
    let mut last_key_ws: Option<usize> = None;
    let mut last_value_ws: Option<usize> = None;
    let mut line: u32 = 1;
    let mut start_line: u32 = 1;

    let mut push = |key: &mut Vec<u8>, value: &mut Vec<u8>, key_ws: Option<usize>, start: u32| {
        let mut k = std::mem::take(key);
        if let Some(n) = key_ws {
            k.truncate(n);
        }
        out.push(EnvFileEntry {
            key: k,
            value: std::mem::take(value),
            line: start,
        });
    };

    for &c in content {
        match st {
            St::PreKey => {
                if c == b'#' || c == b';' {
                    st = St::Comment;
                } else if !is_ws(c) {
                    st = St::Key;
                    last_key_ws = None;
                    key.clear();
                    key.push(c);
                    start_line = line;
                }
            }
            St::Key => {
                if is_nl(c) {
                    st = St::PreKey;
                    key.clear();
                } else if c == b'=' {
                    st = St::PreValue;
                    last_value_ws = None;
                    value.clear();
                } else {
                    if !is_ws(c) {
                        last_key_ws = None;
                    } else if last_key_ws.is_none() {
                        last_key_ws = Some(key.len());
                    }
                    key.push(c);
                }
            }
            St::PreValue => {
                if is_nl(c) {
                    st = St::PreKey;
                    push(&mut key, &mut value, last_key_ws, start_line);
                } else if c == b'\'' {
                    st = St::SingleQuote;
                } else if c == b'"' {
                    st = St::DoubleQuote;
                } else if c == b'\\' {
                    st = St::ValueEscape;
                } else if !is_ws(c) {
                    st = St::Value;
                    value.push(c);
                }
            }
            St::Value => {
                if is_nl(c) {
                    st = St::PreKey;
                    if let Some(n) = last_value_ws {
                        value.truncate(n);
                    }
                    push(&mut key, &mut value, last_key_ws, start_line);
                } else if c == b'\\' {
                    st = St::ValueEscape;
                    last_value_ws = None;
                } else {
                    if !is_ws(c) {
                        last_value_ws = None;
                    } else if last_value_ws.is_none() {
                        last_value_ws = Some(value.len());
                    }
                    value.push(c);
                }
            }
            St::ValueEscape => {
                st = St::Value;
                if !is_nl(c) {
                    value.push(c);
                }
            }
            St::SingleQuote => {
                if c == b'\'' {
                    st = St::PreValue;
                } else {
                    value.push(c);
                }
            }
            St::DoubleQuote => {
                if c == b'"' {
                    st = St::PreValue;
                } else if c == b'\\' {
                    st = St::DoubleQuoteEscape;
                } else {
                    value.push(c);
                }
            }
            St::DoubleQuoteEscape => {
                st = St::DoubleQuote;
                if b"\"\\`$".contains(&c) {
                    value.push(c);
                } else if c != b'\n' {
                    value.extend_from_slice(&[b'\\', c]);
                }
            }
            St::Comment => {
                if c == b'\\' {
                    st = St::CommentEscape;
                } else if is_nl(c) {
                    st = St::PreKey;
                }
            }
            St::CommentEscape => {
                // Since systemd v254 a backslash does not continue a comment.
                st = if is_nl(c) { St::PreKey } else { St::Comment };
            }
        }
        if c == b'\n' {
            line = line.saturating_add(1);
        }
    }
    match st {
        St::Value => {
            if let Some(n) = last_value_ws {
                value.truncate(n);
            }
            push(&mut key, &mut value, last_key_ws, start_line);
        }
        St::PreValue
        | St::ValueEscape
        | St::SingleQuote
        | St::DoubleQuote
        | St::DoubleQuoteEscape => {
            push(&mut key, &mut value, last_key_ws, start_line);
        }
        St::PreKey | St::Key | St::Comment | St::CommentEscape => {}
    }
    out
}

/// Expand an `EnvironmentFile=` glob (systemd calls glob(3) with flags 0:
/// results sorted, wildcards do not match a leading '.'). A pattern without
/// wildcards yields itself; whether it exists is decided when reading.
pub(super) fn glob_host(host: &HostFs<'_>, pattern: &str) -> Result<Vec<PathBuf>, NodeFsError> {
    let components: Vec<&str> = pattern
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    if !components.iter().any(|c| has_glob_meta(c)) {
        return Ok(vec![PathBuf::from(pattern)]);
    }
    let mut current = vec![PathBuf::from("/")];
    for comp in components {
        let mut next = Vec::new();
        if has_glob_meta(comp) {
            for prefix in &current {
                let Some(entries) = host.list_dir(prefix)? else {
                    continue;
                };
                for entry in entries {
                    if fnmatch(comp.as_bytes(), entry.name.as_bytes()) {
                        next.push(prefix.join(&entry.name));
                    }
                }
            }
        } else {
            let literal = glob_unescape(comp);
            next = current.iter().map(|p| p.join(&literal)).collect();
        }
        current = next;
    }
    current.sort_by(|a, b| a.as_os_str().as_bytes().cmp(b.as_os_str().as_bytes()));
    Ok(current)
}

fn has_glob_meta(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'*' | b'?' | b'[' => return true,
            _ => i += 1,
        }
    }
    false
}

fn glob_unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// fnmatch(3) without flags but with glob's leading-period rule: `*`, `?`,
/// `[...]` (with `!`/`^` negation and ranges) and backslash quoting.
fn fnmatch(pat: &[u8], name: &[u8]) -> bool {
    if name.first() == Some(&b'.') && !(pat.starts_with(b".") || pat.starts_with(b"\\.")) {
        return false;
    }
    let (mut p, mut n) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        let step = match pat.get(p) {
            Some(b'*') => {
                star = Some((p, n));
                p += 1;
                continue;
            }
            Some(b'?') => Some(p + 1),
            Some(b'[') => match match_class(pat, p, name[n]) {
                Some((true, next)) => Some(next),
                Some((false, _)) => None,
                None => (name[n] == b'[').then_some(p + 1),
            },
            Some(b'\\') if p + 1 < pat.len() => (pat[p + 1] == name[n]).then_some(p + 2),
            Some(&c) => (c == name[n]).then_some(p + 1),
            None => None,
        };
        match step {
            Some(next) => {
                p = next;
                n += 1;
            }
            None => match star {
                Some((sp, sn)) => {
                    p = sp + 1;
                    n = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    pat[p.min(pat.len())..].iter().all(|&c| c == b'*')
}

/// Match one byte against the bracket expression starting at `pat[start]`
/// ('['). Returns (matched, index after ']'), or `None` if the bracket is
/// unterminated (then '[' is literal).
fn match_class(pat: &[u8], start: usize, c: u8) -> Option<(bool, usize)> {
    let mut i = start + 1;
    let negate = matches!(pat.get(i), Some(b'!' | b'^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let mut lo = *pat.get(i)?;
        if lo == b']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        if lo == b'\\' {
            i += 1;
            lo = *pat.get(i)?;
        }
        i += 1;
        if pat.get(i) == Some(&b'-') && pat.get(i + 1).is_some_and(|&b| b != b']') {
            let mut hi = *pat.get(i + 1)?;
            i += 2;
            if hi == b'\\' {
                hi = *pat.get(i)?;
                i += 1;
            }
            if lo <= c && c <= hi {
                matched = true;
            }
        } else if lo == c {
            matched = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enrich::systemd::test_support::{value, TempRoot};
    use crate::enrich::systemd::SourceKind;

    /// From the env_file fuzz target (tests/fuzz/corpus/env_file/
    /// leading_equals): like env-file.c, any non-blank starts a key, '='
    /// included, so "=A=b" sets "=A" (dropped later as an invalid name).
    #[test]
    fn fuzz_regression_line_starting_with_equals() {
        let entries = parse_env_file(b"=A=b\n=\"# x\"\nB=c");
        let got: Vec<_> = entries
            .iter()
            .map(|e| (e.key.as_slice(), e.value.as_slice(), e.line))
            .collect();
        assert_eq!(got, [(&b"=A"[..], &b"b"[..], 1), (&b"B"[..], &b"c"[..], 3)]);
    }

    #[test]
    fn environment_file_syntax() {
        let root = TempRoot::new("envfile-syntax");
        root.write(
            "/etc/systemd/system/app.service",
            "[Service]\nEnvironmentFile=/etc/app/env\nEnvironmentFile=-/etc/app/override\n",
        );
        root.write(
            "/etc/app/env",
            "# comment\n\
             ; also a comment\n\
             \n\
             PLAIN=value   \n\
             INLINE=a # not a comment\n\
             SINGLE='x \"y\" $z'\n\
             DOUBLE=\"a \\\"b\\\" \\$c \\n d\"\n\
             CONT=one\\\n\
             two\n\
             export EXPORTED=1\n\
             \x20 SPACED = v\n\
             NOEQUALS\n\
             EMPTY=\n\
             MULTI=\"line1\n\
             line2\"\n\
             AFTER=1\n\
             LATE=first\n",
        );
        root.write("/etc/app/override", "LATE=second\n");
        let env = root.load("app.service");
        assert_eq!(value(&env, "PLAIN"), Some("value"));
        assert_eq!(env.get("PLAIN").map(|v| v.line), Some(4));
        assert_eq!(value(&env, "INLINE"), Some("a # not a comment"));
        assert_eq!(value(&env, "SINGLE"), Some("x \"y\" $z"));
        assert_eq!(value(&env, "DOUBLE"), Some("a \"b\" $c \\n d"));
        assert_eq!(value(&env, "CONT"), Some("onetwo"));
        assert_eq!(env.get("CONT").map(|v| v.line), Some(8));
        assert_eq!(env.get("EXPORTED"), None);
        assert!(env
            .warnings
            .iter()
            .any(|w| w.contains("/etc/app/env:10") && w.contains("export")));
        assert_eq!(value(&env, "SPACED"), Some("v"));
        assert_eq!(env.get("SPACED").map(|v| v.line), Some(11));
        assert_eq!(env.get("NOEQUALS"), None);
        assert_eq!(value(&env, "EMPTY"), Some(""));
        assert_eq!(value(&env, "MULTI"), Some("line1\nline2"));
        assert_eq!(env.get("MULTI").map(|v| v.line), Some(14));
        assert_eq!(env.get("AFTER").map(|v| v.line), Some(16));
        let late = env.get("LATE").expect("LATE");
        assert_eq!(late.value, "second");
        assert_eq!(late.file, PathBuf::from("/etc/app/override"));
        assert_eq!(
            late.via,
            SourceKind::EnvironmentFile {
                unit_file: PathBuf::from("/etc/systemd/system/app.service"),
                unit_line: 3,
                optional: true,
            }
        );
    }

    #[test]
    fn environment_file_reset_glob_and_specifiers() {
        let root = TempRoot::new("envfile-glob");
        root.write(
            "/etc/systemd/system/worker@blue.service",
            "[Service]\n\
             EnvironmentFile=/etc/dropped\n\
             EnvironmentFile=\n\
             EnvironmentFile=/etc/worker/*.env\n\
             EnvironmentFile=-/etc/worker/%i.conf\n\
             EnvironmentFile=relative/path\n",
        );
        root.write("/etc/worker/b.env", "X=b\nFROM_B=1\n");
        root.write("/etc/worker/a.env", "X=a\nFROM_A=1\n");
        root.write("/etc/worker/.hidden.env", "HIDDEN=1\n");
        root.write("/etc/worker/blue.conf", "COLOR=blue\n");
        let env = root.load("worker@blue.service");
        assert_eq!(value(&env, "X"), Some("b"));
        assert_eq!(value(&env, "FROM_A"), Some("1"));
        assert_eq!(env.get("HIDDEN"), None);
        assert_eq!(value(&env, "COLOR"), Some("blue"));
        // The reset removed /etc/dropped, so it is not reported missing.
        assert!(!env.warnings.iter().any(|w| w.contains("/etc/dropped")));
        assert!(env.warnings.iter().any(|w| w.contains("not absolute")));
    }

    #[test]
    fn fnmatch_basics() {
        assert!(fnmatch(b"*.env", b"a.env"));
        assert!(!fnmatch(b"*.env", b".a.env"));
        assert!(fnmatch(b".*", b".hidden"));
        assert!(fnmatch(b"a?c", b"abc"));
        assert!(fnmatch(b"[a-c]x", b"bx"));
        assert!(!fnmatch(b"[!a-c]x", b"bx"));
        assert!(fnmatch(b"*a*b*", b"xxaYYbzz"));
        assert!(!fnmatch(b"*a*b", b"xxaYYbzz"));
        assert!(fnmatch(b"\\*", b"*"));
        assert!(fnmatch(b"[x", b"[x"));
    }
}
