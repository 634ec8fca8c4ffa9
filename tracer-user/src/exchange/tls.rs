//! The TLS facts of a tunnel through a proxy, as the kernel cut them
//! (tracer-ebpf `tls.rs`): from the ClientHello the SNI host name and the
//! offered versions, from the ServerHello the selected version and, for
//! TLS 1.2 and older, the leaf certificate's issuer Name (DER, at most
//! `LINE_MAX` bytes).
//!
//! Both names are chosen by whoever sent them (the client process, or
//! whatever answered through the proxy): they are bounded by the kernel's
//! copy, and every byte that is not printable is written as `\xNN` (and a
//! backslash as `\x5c`), so the text is unambiguous and safe on a
//! terminal.
//!
//! The issuer is read with a small DER walk rather than x509-parser: the
//! kernel sends the issuer Name alone, possibly cut at 256 bytes, and a
//! cut Name must still give its complete attributes (a strict parser
//! refuses it whole); only a handful of attribute types need a name.

use tracer_common::exchange;

/// What the client offered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHello {
    /// The SNI host name, escaped; None when the ClientHello has none.
    pub server_name: Option<String>,
    /// Versions offered, highest first: from supported_versions when
    /// present, else the legacy_version alone.
    pub offered: Vec<u16>,
    /// A length pointed past its record or the segment: fields after that
    /// point are missing.
    pub malformed: bool,
}

/// What the server answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerHello {
    /// The selected version (supported_versions, else legacy_version).
    pub version: Option<u16>,
    /// TLS 1.2 and older: the leaf certificate's issuer, e.g.
    /// `CN=Example CA, O=Example`, when it arrived with the ServerHello.
    pub issuer: Option<String>,
    pub malformed: bool,
}

/// One TLS record of a tunnel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hello {
    Client(ClientHello),
    Server(ServerHello),
    /// The tunnel's first payload is not TLS: nothing was parsed.
    NotTls,
}

/// The kernel's TLS record (`direction`, `flags`, the copied bytes) ->
/// `Hello`. None for a direction that is not a TLS one.
pub fn hello_of(direction: u32, flags: u32, bytes: &[u8]) -> Option<Hello> {
    if direction != exchange::TLS_CLIENT && direction != exchange::TLS_SERVER {
        return None;
    }
    if flags & exchange::NOT_TLS != 0 {
        return Some(Hello::NotTls);
    }
    let malformed = flags & exchange::MALFORMED != 0;
    let version = (flags >> exchange::VERSION_SHIFT) as u16;
    let name = (flags & exchange::HAS_NAME != 0).then_some(bytes);
    if direction == exchange::TLS_CLIENT {
        let offered = if flags & exchange::VERSIONS_EXT != 0 {
            let mask = (flags >> exchange::OFFERED_SHIFT) & 0xff;
            (0..=4u16)
                .rev()
                .filter(|minor| mask & (1 << minor) != 0)
                .map(|minor| 0x0300 | minor)
                .collect()
        } else if version != 0 {
            vec![version]
        } else {
            Vec::new()
        };
        let server_name = name
            .map(|n| &n[..n.len().min(exchange::TLS_NAME_MAX)])
            .filter(|n| !n.is_empty())
            .map(escape_bytes);
        Some(Hello::Client(ClientHello {
            server_name,
            offered,
            malformed,
        }))
    } else {
        Some(Hello::Server(ServerHello {
            version: (version != 0).then_some(version),
            issuer: name.and_then(issuer_of),
            malformed,
        }))
    }
}

/// `(tls.version_protocol, tls.version)` of a wire version, as ECS writes
/// them: ("tls", "1.2"), ("ssl", "3.0"). None for anything else (drafts,
/// GREASE, garbage).
pub fn version_words(v: u16) -> Option<(&'static str, &'static str)> {
    Some(match v {
        0x0300 => ("ssl", "3.0"),
        0x0301 => ("tls", "1.0"),
        0x0302 => ("tls", "1.1"),
        0x0303 => ("tls", "1.2"),
        0x0304 => ("tls", "1.3"),
        _ => return None,
    })
}

/// Printable ASCII kept; every other byte, and `\`, as `\xNN`.
fn escape_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_graphic() && b != b'\\' || b == b' ' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// Printable text of a DER string value: UTF-8 (or Latin-1 for the
/// legacy string types) with control characters and `\` escaped.
fn escape_text(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => {
            let mut out = String::with_capacity(s.len());
            for c in s.chars() {
                if c.is_control() || c == '\\' {
                    for b in c.to_string().bytes() {
                        out.push_str(&format!("\\x{b:02x}"));
                    }
                } else {
                    out.push(c);
                }
            }
            out
        }
        Err(_) => escape_bytes(bytes),
    }
}

/// One DER element at the front of `b`: (tag, content, rest). None when
/// the length form is not DER's definite one or the content is cut.
fn der(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = b.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = match first {
        l if l < 0x80 => (usize::from(l), rest),
        0x81 => {
            let (&l, rest) = rest.split_first()?;
            (usize::from(l), rest)
        }
        0x82 => {
            let (l, rest) = rest.split_at_checked(2)?;
            (usize::from(u16::from_be_bytes([l[0], l[1]])), rest)
        }
        _ => return None,
    };
    let (content, rest) = rest.split_at_checked(len)?;
    Some((tag, content, rest))
}

/// The short names of the attribute types a CA's Name carries (RFC 4514
/// 3, RFC 5280 A.1), by DER-encoded OID; others are written dotted.
fn attribute_name(oid: &[u8]) -> Option<&'static str> {
    Some(match oid {
        [0x55, 0x04, 0x03] => "CN",
        [0x55, 0x04, 0x06] => "C",
        [0x55, 0x04, 0x07] => "L",
        [0x55, 0x04, 0x08] => "ST",
        [0x55, 0x04, 0x0a] => "O",
        [0x55, 0x04, 0x0b] => "OU",
        [0x55, 0x04, 0x05] => "serialNumber",
        [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01] => "emailAddress",
        [0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x19] => "DC",
        _ => return None,
    })
}

/// A DER OID's dotted form (for attribute types without a short name).
fn dotted(oid: &[u8]) -> String {
    let mut parts: Vec<u64> = Vec::new();
    let mut acc = 0u64;
    for &b in oid {
        if acc > u64::MAX >> 7 {
            // A sub-identifier longer than any real one: stop there.
            break;
        }
        acc = (acc << 7) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            if parts.is_empty() {
                // The first sub-identifier holds the first two arcs.
                let first = (acc / 40).min(2);
                parts.push(first);
                parts.push(acc - first * 40);
            } else {
                parts.push(acc);
            }
            acc = 0;
        }
    }
    parts
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(".")
}

/// An issuer Name (DER `SEQUENCE OF SET OF AttributeTypeAndValue`) as
/// `CN=Example CA, O=Example`, in the certificate's order. A Name cut by
/// the kernel's copy gives the attributes that arrived whole; None when
/// not even one did.
pub fn issuer_of(der_bytes: &[u8]) -> Option<String> {
    let (&tag, _) = der_bytes.split_first()?;
    if tag != 0x30 {
        return None;
    }
    // The outer length may run past a cut copy: walk what is there.
    let inner = match der(der_bytes) {
        Some((_, content, _)) => content,
        None => {
            let skip = match der_bytes.get(1)? {
                l if *l < 0x80 => 2,
                0x81 => 3,
                0x82 => 4,
                _ => return None,
            };
            der_bytes.get(skip..)?
        }
    };
    let mut parts = Vec::new();
    let mut rest = inner;
    // Bounded by the input: each step consumes at least two bytes.
    while !rest.is_empty() {
        let Some((0x31, set, next)) = der(rest) else {
            break;
        };
        rest = next;
        let mut attrs = set;
        while !attrs.is_empty() {
            let Some((0x30, atv, next)) = der(attrs) else {
                break;
            };
            attrs = next;
            let Some((0x06, oid, value)) = der(atv) else {
                continue;
            };
            let Some((vtag, text, _)) = der(value) else {
                continue;
            };
            let text = match vtag {
                // UTF8String, PrintableString, IA5String, T61String,
                // VisibleString.
                0x0c | 0x13 | 0x16 | 0x14 | 0x1a => escape_text(text),
                // BMPString (UTF-16BE).
                0x1e => {
                    let units: Vec<u16> = text
                        .chunks_exact(2)
                        .map(|c| u16::from_be_bytes([c[0], c[1]]))
                        .collect();
                    escape_text(String::from_utf16_lossy(&units).as_bytes())
                }
                _ => escape_bytes(text),
            };
            let key = attribute_name(oid).map_or_else(|| dotted(oid), str::to_string);
            parts.push(format!("{key}={text}"));
        }
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// DER of a Name with the given (OID bytes, tag, value) attributes.
    fn name(attrs: &[(&[u8], u8, &[u8])]) -> Vec<u8> {
        let tlv = |tag: u8, content: &[u8]| {
            let mut v = vec![tag];
            if content.len() < 0x80 {
                v.push(content.len() as u8);
            } else {
                v.push(0x82);
                v.extend_from_slice(&(content.len() as u16).to_be_bytes());
            }
            v.extend_from_slice(content);
            v
        };
        let mut seq = Vec::new();
        for (oid, tag, value) in attrs {
            let mut atv = tlv(0x06, oid);
            atv.extend(tlv(*tag, value));
            seq.extend(tlv(0x31, &tlv(0x30, &atv)));
        }
        tlv(0x30, &seq)
    }

    const CN: &[u8] = &[0x55, 0x04, 0x03];
    const O: &[u8] = &[0x55, 0x04, 0x0a];

    #[test]
    fn an_issuer_name_reads_in_certificate_order() {
        let der = name(&[
            (&[0x55, 0x04, 0x06], 0x13, b"US"),
            (O, 0x0c, b"Example Corp"),
            (CN, 0x0c, b"Example Intercept CA"),
        ]);
        assert_eq!(
            issuer_of(&der).as_deref(),
            Some("C=US, O=Example Corp, CN=Example Intercept CA")
        );
    }

    #[test]
    fn a_cut_issuer_gives_its_whole_attributes_only() {
        let der = name(&[(O, 0x0c, b"Example Corp"), (CN, 0x0c, &[b'x'; 300])]);
        // The kernel copies at most 256 bytes.
        let cut = &der[..256];
        assert_eq!(issuer_of(cut).as_deref(), Some("O=Example Corp"));
        assert_eq!(issuer_of(&der[..10]), None);
        assert_eq!(issuer_of(&[]), None);
        assert_eq!(issuer_of(&[0x30]), None);
        assert_eq!(issuer_of(&[0x30, 0x84, 1, 2, 3, 4]), None);
    }

    #[test]
    fn issuer_text_is_escaped_and_unknown_types_are_dotted() {
        let der = name(&[
            (CN, 0x0c, "evil\x1b[2J\\ca é".as_bytes()),
            (&[0x2b, 0x06, 0x01, 0x04, 0x01, 0x82, 0x37], 0x13, b"v"),
        ]);
        let text = issuer_of(&der).expect("issuer");
        assert_eq!(text, "CN=evil\\x1b[2J\\x5cca é, 1.3.6.1.4.1.311=v");
        assert!(!text.chars().any(char::is_control));
    }

    #[test]
    fn a_client_hello_gives_name_and_offered_versions() {
        let flags = exchange::HAS_NAME
            | exchange::VERSIONS_EXT
            | (0b11000 << exchange::OFFERED_SHIFT)
            | (0x0303 << exchange::VERSION_SHIFT);
        let h = hello_of(exchange::TLS_CLIENT, flags, b"registry.test").expect("tls");
        assert_eq!(
            h,
            Hello::Client(ClientHello {
                server_name: Some("registry.test".into()),
                offered: vec![0x0304, 0x0303],
                malformed: false,
            })
        );
        // No supported_versions: the legacy version is what is offered.
        let flags = (0x0301 << exchange::VERSION_SHIFT) | exchange::MALFORMED;
        let Some(Hello::Client(c)) = hello_of(exchange::TLS_CLIENT, flags, &[]) else {
            panic!("client hello");
        };
        assert_eq!(
            (c.offered, c.server_name, c.malformed),
            (vec![0x0301], None, true)
        );
    }

    #[test]
    fn a_hostile_server_name_is_bounded_and_printable() {
        let long = [b'a'; 300];
        let Some(Hello::Client(c)) = hello_of(exchange::TLS_CLIENT, exchange::HAS_NAME, &long)
        else {
            panic!("client hello");
        };
        assert_eq!(c.server_name.map(|n| n.len()), Some(255));
        let Some(Hello::Client(c)) = hello_of(
            exchange::TLS_CLIENT,
            exchange::HAS_NAME,
            b"a\x1b]0;pwn\x07\\b\xff\x9b",
        ) else {
            panic!("client hello");
        };
        assert_eq!(
            c.server_name.as_deref(),
            Some("a\\x1b]0;pwn\\x07\\x5cb\\xff\\x9b")
        );
    }

    #[test]
    fn not_tls_and_other_directions() {
        assert_eq!(
            hello_of(exchange::TLS_CLIENT, exchange::NOT_TLS, b"hello"),
            Some(Hello::NotTls)
        );
        assert_eq!(hello_of(exchange::REQUEST, 0, b"GET"), None);
    }

    #[test]
    fn a_server_hello_gives_version_and_issuer() {
        let der = name(&[(CN, 0x0c, b"Tracer Test CA")]);
        let flags = exchange::HAS_NAME | (0x0303 << exchange::VERSION_SHIFT);
        let Some(Hello::Server(s)) = hello_of(exchange::TLS_SERVER, flags, &der) else {
            panic!("server hello");
        };
        assert_eq!(s.version, Some(0x0303));
        assert_eq!(s.issuer.as_deref(), Some("CN=Tracer Test CA"));
        assert_eq!(version_words(0x0303), Some(("tls", "1.2")));
        assert_eq!(version_words(0x7f1c), None);
    }
}
