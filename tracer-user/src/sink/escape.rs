//! JSON strings a terminal can show safely.
//!
//! serde_json escapes what JSON requires (`"`, `\` and C0 controls such as
//! ESC), but writes DEL and the C1 controls (U+0080..U+009F, among them
//! CSI U+009B, which some terminals obey) as they are. The strings of the
//! records are chosen by the node (`comm`, arguments, DNS names, paths),
//! and NDJSON files are read with `tail -f` too, so these are written as
//! `\u007f` / `\u009b` as well: the same JSON value, and no byte a
//! terminal acts on.

use std::io;

use serde::Serialize;

/// serde_json's compact format, with DEL and C1 escaped as well.
pub struct TerminalSafe;

impl serde_json::ser::Formatter for TerminalSafe {
    fn write_string_fragment<W>(&mut self, writer: &mut W, fragment: &str) -> io::Result<()>
    where
        W: ?Sized + io::Write,
    {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            if c == '\u{7f}' || ('\u{80}'..='\u{9f}').contains(&c) {
                writer.write_all(&fragment.as_bytes()[start..i])?;
                write!(writer, "\\u{:04x}", u32::from(c))?;
                start = i + c.len_utf8();
            }
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }
}

/// `value` as compact JSON into `out`.
pub fn to_writer<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) -> serde_json::Result<()> {
    let mut ser = serde_json::Serializer::with_formatter(out, TerminalSafe);
    value.serialize(&mut ser)
}

/// Bytes that make a string take the escaping path: what JSON escapes, DEL,
/// and 0xC2, the first byte of every C1 control in UTF-8 (and of other
/// Latin-1 characters, which merely take the slower path).
#[inline]
pub fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\' || b == 0x7f || b == 0xc2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_are_escaped_and_the_value_is_unchanged() {
        let s = "a\x1b[2J\u{7f}\u{9b}31m\u{85}é\"\\\n";
        let mut out = Vec::new();
        to_writer(&mut out, s).expect("json");
        let text = std::str::from_utf8(&out).expect("utf8");
        assert_eq!(text, r#""a\u001b[2J\u007f\u009b31m\u0085é\"\\\n""#);
        assert!(!text.chars().any(char::is_control), "{text}");
        let back: String = serde_json::from_str(text).expect("valid JSON");
        assert_eq!(back, s);
    }
}
