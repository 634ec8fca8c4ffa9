//! Values of `Environment=`-like settings: word splitting with quotes,
//! C escapes (systemd.syntax(7)) and `%` specifiers (systemd.unit(5)).

use super::syntax::is_ws;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// extract_first_word() with EXTRACT_UNQUOTE|EXTRACT_CUNESCAPE, applied until
/// the end: words are separated by whitespace; single or double quotes may
/// cover any part of a word and are removed; backslash escapes are decoded
/// inside and outside quotes. Returns the words before the first syntax error
/// and that error (systemd keeps the former, drops the rest).
pub(super) fn split_words(s: &str) -> (Vec<Vec<u8>>, Option<&'static str>) {
    let bytes = s.as_bytes();
    let mut words = Vec::new();
    let mut pos = 0;
    loop {
        while pos < bytes.len() && is_ws(bytes[pos]) {
            pos += 1;
        }
        if pos >= bytes.len() {
            return (words, None);
        }
        let mut word = Vec::new();
        let mut quote: Option<u8> = None;
        loop {
            let Some(&c) = bytes.get(pos) else {
                if quote.is_some() {
                    return (words, Some("unbalanced quote"));
                }
                break;
            };
            if c == b'\\' {
                pos += 1;
                if pos >= bytes.len() {
                    return (words, Some("trailing backslash"));
                }
                match cunescape_one(&bytes[pos..]) {
                    Some((decoded, used)) => {
                        word.extend_from_slice(&decoded);
                        pos += used;
                    }
                    None => return (words, Some("invalid escape sequence")),
                }
                continue;
            }
            pos += 1;
            match quote {
                Some(q) if c == q => quote = None,
                Some(_) => word.push(c),
                None if c == b'\'' || c == b'"' => quote = Some(c),
                None if is_ws(c) => break,
                None => word.push(c),
            }
        }
        words.push(word);
    }
}

/// cunescape_one() from systemd's escape.c. `s` starts after the backslash.
/// Returns the decoded bytes and how many input bytes were used. NUL is never
/// accepted (environment strings cannot hold it).
fn cunescape_one(s: &[u8]) -> Option<(Vec<u8>, usize)> {
    let simple = |b: u8| Some((vec![b], 1));
    let hex = |d: &[u8]| -> Option<u32> {
        d.iter().try_fold(0u32, |acc, &b| {
            char::from(b).to_digit(16).map(|v| (acc << 4) | v)
        })
    };
    match *s.first()? {
        b'a' => simple(0x07),
        b'b' => simple(0x08),
        b'f' => simple(0x0c),
        b'n' => simple(b'\n'),
        b'r' => simple(b'\r'),
        b't' => simple(b'\t'),
        b'v' => simple(0x0b),
        b'\\' => simple(b'\\'),
        b'"' => simple(b'"'),
        b'\'' => simple(b'\''),
        // An extension of the XDG syntax, systemd.syntax(7).
        b's' => simple(b' '),
        b'x' => {
            let v = u8::try_from(hex(s.get(1..3)?)?).ok()?;
            // Raw byte: "\xc3\xa9" is two bytes making one UTF-8 character.
            (v != 0).then(|| (vec![v], 3))
        }
        b'u' => {
            let v = hex(s.get(1..5)?)?;
            (v != 0).then(|| (encode_utf8_lenient(v), 5))
        }
        b'U' => {
            let v = hex(s.get(1..9)?)?;
            let c = char::from_u32(v).filter(|c| unichar_is_valid(*c))?;
            (v != 0).then(|| (c.to_string().into_bytes(), 9))
        }
        b'0'..=b'7' => {
            let d = s.get(0..3)?;
            let v = d.iter().try_fold(0u32, |acc, &b| {
                char::from(b).to_digit(8).map(|x| (acc << 3) | x)
            })?;
            if v == 0 || v > 255 {
                return None;
            }
            Some((vec![u8::try_from(v).ok()?], 3))
        }
        _ => None,
    }
}

/// systemd's unichar_is_valid(): no surrogates, no non-characters.
fn unichar_is_valid(c: char) -> bool {
    let v = u32::from(c);
    !((0xFDD0..=0xFDEF).contains(&v) || (v & 0xFFFE) == 0xFFFE)
}

/// "\uD800" is accepted by cunescape_one() and encoded like any code point;
/// the result is not valid UTF-8, so the assignment is then rejected as a
/// whole, exactly as systemd's utf8 check does.
fn encode_utf8_lenient(v: u32) -> Vec<u8> {
    match char::from_u32(v) {
        Some(c) => c.to_string().into_bytes(),
        None => {
            // Surrogate: 3-byte encoding without validity checks. The
            // shifted-and-masked values fit in a byte by construction.
            let b = |x: u32| u8::try_from(x & 0xFF).unwrap_or(0);
            vec![
                b(0xE0 | (v >> 12)),
                b(0x80 | ((v >> 6) & 0x3F)),
                b(0x80 | (v & 0x3F)),
            ]
        }
    }
}

/// What `%x` may expand to.
#[derive(Clone, Copy)]
pub(super) enum Specifiers<'a> {
    /// unit_env_printf(): the full unit table (systemd.unit(5), "Specifiers").
    Unit(&'a UnitSpec),
    /// `DefaultEnvironment=`: system, tmp and credential specifiers only.
    Manager,
}

pub(super) struct UnitSpec {
    pub(super) id: String,
    pub(super) prefix: String,
    pub(super) instance: Option<String>,
    /// Host path of the fragment after symlinks (for %y / %Y).
    pub(super) fragment_real: Option<PathBuf>,
}

pub(super) struct Expanded {
    pub(super) bytes: Vec<u8>,
    /// Specifiers that depend on the running host (hostname, machine id, ...)
    /// and were kept literally.
    pub(super) unresolved: Vec<u8>,
}

#[derive(Debug)]
pub(super) enum SpecError {
    /// specifier_printf() returns -EBADSLT for an unknown letter or digit.
    Unknown(u8),
    Failed(u8, &'static str),
}

impl std::fmt::Display for SpecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SpecError::Unknown(c) => write!(
                f,
                "unknown specifier %{} (a literal '%' must be written %%)",
                char::from(*c)
            ),
            SpecError::Failed(c, why) => {
                write!(f, "specifier %{} cannot be resolved: {why}", char::from(*c))
            }
        }
    }
}

enum SpecValue {
    Value(Vec<u8>),
    HostDependent,
    NotASpecifier,
}

/// specifier_printf(): "%%" is '%'; a known specifier is replaced; an unknown
/// *alphanumeric* one is an error (the assignment is dropped, a classic trap
/// for percent-encoded proxy passwords like `p%40ss`); any other character
/// after '%' is kept with its '%'; a trailing '%' stays.
pub(super) fn expand_specifiers(
    input: &[u8],
    table: Specifiers<'_>,
) -> Result<Expanded, SpecError> {
    let mut out = Expanded {
        bytes: Vec::with_capacity(input.len()),
        unresolved: Vec::new(),
    };
    let mut iter = input.iter().copied();
    while let Some(b) = iter.next() {
        if b != b'%' {
            out.bytes.push(b);
            continue;
        }
        let Some(c) = iter.next() else {
            out.bytes.push(b'%');
            break;
        };
        if c == b'%' {
            out.bytes.push(b'%');
            continue;
        }
        match resolve_specifier(c, table)? {
            SpecValue::Value(v) => out.bytes.extend_from_slice(&v),
            SpecValue::HostDependent => {
                out.bytes.extend_from_slice(&[b'%', c]);
                if !out.unresolved.contains(&c) {
                    out.unresolved.push(c);
                }
            }
            SpecValue::NotASpecifier if c.is_ascii_alphanumeric() => {
                return Err(SpecError::Unknown(c))
            }
            SpecValue::NotASpecifier => out.bytes.extend_from_slice(&[b'%', c]),
        }
    }
    Ok(out)
}

fn resolve_specifier(c: u8, table: Specifiers<'_>) -> Result<SpecValue, SpecError> {
    let s = |v: &str| Ok(SpecValue::Value(v.as_bytes().to_vec()));
    // Shared by both tables: COMMON_SYSTEM_SPECIFIERS (host facts),
    // COMMON_TMP_SPECIFIERS and COMMON_CREDS_SPECIFIERS for the system
    // manager, which runs as root.
    match c {
        b'a' | b'A' | b'b' | b'B' | b'H' | b'l' | b'm' | b'M' | b'o' | b'q' | b'v' | b'w'
        | b'W' => return Ok(SpecValue::HostDependent),
        b'T' => return s("/tmp"),
        b'V' => return s("/var/tmp"),
        b'u' | b'g' => return s("root"),
        b'U' | b'G' => return s("0"),
        b'h' => return s("/root"),
        b's' => return s("/bin/sh"),
        _ => {}
    }
    let Specifiers::Unit(u) = table else {
        return Ok(SpecValue::NotASpecifier);
    };
    let instance = u.instance.as_deref().unwrap_or("");
    let last_component = |p: &str| p.rsplit_once('-').map_or(p, |(_, last)| last).to_string();
    match c {
        b'n' => s(&u.id),
        b'N' => s(u
            .id
            .rsplit_once('.')
            .map_or(u.id.as_str(), |(stem, _)| stem)),
        b'p' => s(&u.prefix),
        b'P' => unit_name_unescape(u.prefix.as_bytes())
            .map(SpecValue::Value)
            .ok_or(SpecError::Failed(c, "bad escape in unit prefix")),
        b'i' => s(instance),
        b'I' => unit_name_unescape(instance.as_bytes())
            .map(SpecValue::Value)
            .ok_or(SpecError::Failed(c, "bad escape in instance")),
        b'j' => s(&last_component(&u.prefix)),
        b'J' => unit_name_unescape(last_component(&u.prefix).as_bytes())
            .map(SpecValue::Value)
            .ok_or(SpecError::Failed(c, "bad escape in prefix component")),
        b'f' => {
            let source = if instance.is_empty() {
                &u.prefix
            } else {
                instance
            };
            unit_name_path_unescape(source.as_bytes())
                .map(SpecValue::Value)
                .ok_or(SpecError::Failed(c, "name does not unescape to a path"))
        }
        b'y' | b'Y' => {
            let path = u
                .fragment_real
                .as_deref()
                .ok_or(SpecError::Failed(c, "the unit has no fragment"))?;
            let path = if c == b'Y' {
                path.parent().unwrap_or(path)
            } else {
                path
            };
            Ok(SpecValue::Value(path.as_os_str().as_bytes().to_vec()))
        }
        b'C' => s("/var/cache"),
        b'E' => s("/etc"),
        b'L' => s("/var/log"),
        b'S' => s("/var/lib"),
        b't' => s("/run"),
        // Credentials directory and the deprecated cgroup specifiers depend on
        // runtime state.
        b'd' | b'c' | b'r' | b'R' => Ok(SpecValue::HostDependent),
        _ => Ok(SpecValue::NotASpecifier),
    }
}

/// unit_name_unescape(): '-' means '/', "\xNN" a byte.
fn unit_name_unescape(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'-' => {
                out.push(b'/');
                i += 1;
            }
            b'\\' => {
                if s.get(i + 1) != Some(&b'x') {
                    return None;
                }
                let hi = char::from(*s.get(i + 2)?).to_digit(16)?;
                let lo = char::from(*s.get(i + 3)?).to_digit(16)?;
                out.push(u8::try_from((hi << 4) | lo).ok()?);
                i += 4;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Some(out)
}

/// unit_name_path_unescape(): "-" is "/", else unescape and prefix '/'.
fn unit_name_path_unescape(s: &[u8]) -> Option<Vec<u8>> {
    if s.is_empty() {
        return None;
    }
    if s == b"-" {
        return Some(b"/".to_vec());
    }
    let w = unit_name_unescape(s)?;
    if w.starts_with(b"/") || w.ends_with(b"/") {
        return None;
    }
    let mut out = b"/".to_vec();
    out.extend_from_slice(&w);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enrich::systemd::test_support::{value, TempRoot};

    #[test]
    fn quoting_of_whole_and_partial_assignments() {
        let root = TempRoot::new("quoting");
        root.write(
            "/etc/systemd/system/q.service",
            "[Service]\n\
             Environment=\"A=b c\" D=e\n\
             Environment='F=g h'   I=\"j k\"l\n\
             Environment=M=\"n 'o'\"\n",
        );
        let env = root.load("q.service");
        assert_eq!(value(&env, "A"), Some("b c"));
        assert_eq!(value(&env, "D"), Some("e"));
        assert_eq!(value(&env, "F"), Some("g h"));
        assert_eq!(value(&env, "I"), Some("j kl"));
        assert_eq!(value(&env, "M"), Some("n 'o'"));
        assert_eq!(env.get("D").map(|v| v.line), Some(2));
        assert_eq!(env.get("I").map(|v| v.line), Some(3));
        assert!(env.warnings.is_empty(), "{:?}", env.warnings);
    }

    #[test]
    fn escapes_and_specifiers() {
        let root = TempRoot::new("escapes");
        root.write(
            "/etc/systemd/system/esc.service",
            "[Service]\n\
             Environment=\"TAB=a\\tb\" HEX=\\x41\\x42 OCT=\\101 SP=a\\sb\n\
             Environment=\"QUOTE=say \\\"hi\\\"\" BS=a\\\\b UNI=caf\\u00e9 UTF=\\xc3\\xa9\n\
             Environment=PCT=100%% NAME=%n PREFIX=%p TMP=%T\n\
             Environment=GOOD=1 BAD=\\q AFTER=never\n\
             Environment=PASS=http://u:p%40ss@proxy:3128 OK=yes\n",
        );
        let env = root.load("esc.service");
        assert_eq!(value(&env, "TAB"), Some("a\tb"));
        assert_eq!(value(&env, "HEX"), Some("AB"));
        assert_eq!(value(&env, "OCT"), Some("A"));
        assert_eq!(value(&env, "SP"), Some("a b"));
        assert_eq!(value(&env, "QUOTE"), Some("say \"hi\""));
        assert_eq!(value(&env, "BS"), Some("a\\b"));
        assert_eq!(value(&env, "UNI"), Some("café"));
        assert_eq!(value(&env, "UTF"), Some("é"));
        assert_eq!(value(&env, "PCT"), Some("100%"));
        assert_eq!(value(&env, "NAME"), Some("esc.service"));
        assert_eq!(value(&env, "PREFIX"), Some("esc"));
        assert_eq!(value(&env, "TMP"), Some("/tmp"));
        // An invalid escape drops the rest of the line; earlier words stay.
        assert_eq!(value(&env, "GOOD"), Some("1"));
        assert_eq!(env.get("BAD"), None);
        assert_eq!(env.get("AFTER"), None);
        assert!(env
            .warnings
            .iter()
            .any(|w| w.contains("esc.service:5") && w.contains("invalid escape")));
        // "%4" is an unknown specifier: that one assignment is dropped.
        assert_eq!(env.get("PASS"), None);
        assert_eq!(value(&env, "OK"), Some("yes"));
        assert!(
            env.warnings.iter().any(|w| w.contains("%4")),
            "{:?}",
            env.warnings
        );
    }

    #[test]
    fn split_words_matches_extract_first_word() {
        let w = |s: &str| {
            let (words, err) = split_words(s);
            (
                words
                    .into_iter()
                    .map(|w| String::from_utf8_lossy(&w).into_owned())
                    .collect::<Vec<_>>(),
                err,
            )
        };
        assert_eq!(
            w("  a  b\t c "),
            (vec!["a".into(), "b".into(), "c".into()], None)
        );
        assert_eq!(w("\"a b\"c 'd'"), (vec!["a bc".into(), "d".into()], None));
        assert_eq!(w("\"\""), (vec![String::new()], None));
        assert_eq!(w("a \"b"), (vec!["a".into()], Some("unbalanced quote")));
        assert_eq!(w("a b\\"), (vec!["a".into()], Some("trailing backslash")));
        assert_eq!(w("'a\\tb'"), (vec!["a\tb".into()], None));
        assert_eq!(w("\\x00"), (vec![], Some("invalid escape sequence")));
    }
}
