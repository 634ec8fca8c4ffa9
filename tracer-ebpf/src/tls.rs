//! TLS handshake facts, read in the kernel from the first records of a
//! tunnel through a proxy (`probes/proxy_payload.rs` calls these once per
//! direction, only on sockets marked proxied whose `CONNECT` was answered
//! 2xx).
//!
//! What is read, and nothing else:
//! - ClientHello (RFC 8446 4.1.2): legacy_version, the server_name
//!   extension's host name (RFC 6066 3), the supported_versions extension
//!   (RFC 8446 4.2.1).
//! - ServerHello: legacy_version and supported_versions (the version the
//!   server selected). For TLS 1.2 and older the Certificate message
//!   follows in clear (RFC 5246 7.4.2): the position of the leaf
//!   certificate's issuer Name (RFC 5280 4.1: Certificate -> tbsCertificate
//!   -> [0] version, serialNumber, signature, **issuer**).
//!
//! The functions only find offsets and versions (written into the
//! reserved record, see `Out`): the caller copies the host name or the
//! issuer Name's DER into the record, at most `LINE_MAX` bytes. Every read goes through `bpf_skb_load_bytes`, which fails
//! (instead of reading past the packet) when an offset plus size passes
//! `skb->len`; every length from the wire is checked against the end of
//! its own record before it is used; every loop has a fixed bound
//! (`MAX_EXTENSIONS`, `MAX_VERSIONS`), so the verifier sees a finite
//! program whatever the bytes say.
//!
//! Only what lies in this one segment is read: a ClientHello leaves in one
//! skb (egress sees the socket's write before segmentation), and the
//! issuer sits in the first few hundred bytes of the server's flight.
//! A ServerHello whose certificate starts in a later segment gives the
//! version without the issuer.

use aya_ebpf::programs::SkBuffContext;
use tracer_common::{exchange, ExchangeEvent};

/// Extensions looked at, at most. A ClientHello of OpenSSL 3 or Go carries
/// 10 to 15, Chrome's up to 18 with GREASE; a ServerHello fewer than 10.
/// Each one more costs the verifier a walk of the loop body.
const MAX_EXTENSIONS: u32 = 24;
/// supported_versions entries looked at, at most: clients list a handful
/// (GREASE, 1.3, 1.2, perhaps 1.1 and 1.0), highest first.
const MAX_VERSIONS: u32 = 8;

/// TLS record and handshake types (RFC 8446 5.1, 4).
const CONTENT_HANDSHAKE: u8 = 22;
const CLIENT_HELLO: u8 = 1;
const SERVER_HELLO: u8 = 2;
const CERTIFICATE: u8 = 11;
/// Extension types (RFC 6066 3, RFC 8446 4.2).
const EXT_SERVER_NAME: u16 = 0;
const EXT_SUPPORTED_VERSIONS: u16 = 43;
/// ASN.1 DER tags (X.690): SEQUENCE, INTEGER, context [0] constructed.
const DER_SEQUENCE: u8 = 0x30;
const DER_INTEGER: u8 = 0x02;
const DER_EXPLICIT_0: u8 = 0xa0;

/// Where the findings go: straight into the reserved ring record, not
/// into registers. The verifier does not track values in ring memory, so
/// the paths through the extension loops (a server_name found or not,
/// supported_versions found or not) reach each iteration with the same
/// state and are pruned; kept in registers, every combination was walked
/// again and the program passed the verifier's 1M-instruction limit.
/// Volatile, so LLVM does not carry the values in registers after all.
///
/// `flags` collects `exchange::*` bits and the version; the first words of
/// `line` are scratch (`NAME_OFF`, `NAME_LEN`, `AUX_OFF`, `AUX_LEN`) until
/// the caller reads them back and copies the name over them.
pub struct Out(pub *mut ExchangeEvent);

/// Scratch words of `line` (u32 index).
pub const NAME_OFF: usize = 0;
pub const NAME_LEN: usize = 1;
const AUX_OFF: usize = 2;
const AUX_LEN: usize = 3;

impl Out {
    #[inline(always)]
    fn flags(&self) -> *mut u32 {
        // SAFETY: the caller's reserved, exclusively owned record.
        unsafe { core::ptr::addr_of_mut!((*self.0).flags) }
    }

    #[inline(always)]
    fn set(&self, bits: u32) {
        // SAFETY: see `flags`.
        unsafe {
            self.flags()
                .write_volatile(self.flags().read_volatile() | bits)
        }
    }

    #[inline(always)]
    fn set_version(&self, v: u32) {
        let mask = 0xffff << exchange::VERSION_SHIFT;
        // SAFETY: see `flags`.
        unsafe {
            let f = self.flags().read_volatile();
            self.flags()
                .write_volatile((f & !mask) | ((v & 0xffff) << exchange::VERSION_SHIFT));
        }
    }

    #[inline(always)]
    fn malformed(&self) {
        self.set(exchange::MALFORMED);
    }

    #[inline(always)]
    pub fn put(&self, word: usize, v: u32) {
        // SAFETY: `line` holds LINE_MAX bytes; `word` < 4.
        unsafe {
            (*self.0)
                .line
                .as_mut_ptr()
                .cast::<u32>()
                .add(word & 3)
                .write_volatile(v)
        }
    }

    #[inline(always)]
    pub fn get(&self, word: usize) -> u32 {
        // SAFETY: as in `put`.
        unsafe {
            (*self.0)
                .line
                .as_ptr()
                .cast::<u32>()
                .add(word & 3)
                .read_volatile()
        }
    }
}

#[inline(always)]
fn be16(b: [u8; 2]) -> u32 {
    (u32::from(b[0]) << 8) | u32::from(b[1])
}

#[inline(always)]
fn u8_at(ctx: &SkBuffContext, off: u32) -> Option<u32> {
    ctx.load::<u8>(off as usize).ok().map(u32::from)
}

#[inline(always)]
fn u16_at(ctx: &SkBuffContext, off: u32) -> Option<u32> {
    ctx.load::<[u8; 2]>(off as usize).ok().map(be16)
}

#[inline(always)]
fn u24_at(ctx: &SkBuffContext, off: u32) -> Option<u32> {
    let b: [u8; 3] = ctx.load(off as usize).ok()?;
    Some((u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]))
}

/// The front of a handshake record at `p0`: record header (5 bytes),
/// handshake header (4) and legacy_version (2). Returns the end of the
/// handshake message (bounded by its record's end) and legacy_version, or
/// None when the bytes are not a handshake record carrying `msg`.
#[inline(always)]
fn hello_head(ctx: &SkBuffContext, p0: u32, msg: u8) -> Option<(u32, u32, u32)> {
    let h: [u8; 11] = ctx.load(p0 as usize).ok()?;
    if h[0] != CONTENT_HANDSHAKE || h[1] != 3 || h[5] != msg {
        return None;
    }
    let rec_end = p0 + 5 + be16([h[3], h[4]]);
    let hs_len = (u32::from(h[6]) << 16) | (u32::from(h[7]) << 8) | u32::from(h[8]);
    // A message longer than its record continues in the next one; only
    // this record's part is read.
    let hs_end = if hs_len > 0xffff {
        rec_end
    } else {
        (p0 + 9 + hs_len).min(rec_end)
    };
    Some((hs_end, rec_end, be16([h[9], h[10]])))
}

/// The ClientHello at `p0` (the start of the tunnel's first client
/// payload): legacy_version, offered versions, where the SNI host name is.
#[inline(always)]
pub fn client_hello(ctx: &SkBuffContext, p0: u32, out: &Out) {
    let Some((end, _, legacy)) = hello_head(ctx, p0, CLIENT_HELLO) else {
        out.set(exchange::NOT_TLS);
        return;
    };
    out.set_version(legacy);
    // random (32 bytes) ends at 43; then session_id<0..32>.
    let Some(sid) = u8_at(ctx, p0 + 43) else {
        return out.malformed();
    };
    if sid > 32 {
        return out.malformed();
    }
    let mut off = p0 + 44 + sid;
    // cipher_suites<2..2^16-2>, compression_methods<1..2^8-1>.
    let Some(suites) = u16_at(ctx, off) else {
        return out.malformed();
    };
    off += 2 + suites;
    let Some(comp) = u8_at(ctx, off) else {
        return out.malformed();
    };
    off += 1 + comp;
    let Some(ext_len) = u16_at(ctx, off) else {
        return out.malformed();
    };
    off += 2;
    let ext_end = off + ext_len;
    if ext_end > end {
        return out.malformed();
    }
    let mut i = 0u32;
    while i < MAX_EXTENSIONS {
        if off + 4 > ext_end {
            break;
        }
        let Ok(h) = ctx.load::<[u8; 4]>(off as usize) else {
            return out.malformed();
        };
        let ty = be16([h[0], h[1]]);
        let len = be16([h[2], h[3]]);
        let data = off + 4;
        if data + len > ext_end {
            return out.malformed();
        }
        if ty == u32::from(EXT_SERVER_NAME) {
            out.put(NAME_OFF, data);
            out.put(NAME_LEN, len);
        } else if ty == u32::from(EXT_SUPPORTED_VERSIONS) {
            out.put(AUX_OFF, data);
            out.put(AUX_LEN, len);
        }
        off = data + len;
        i += 1;
    }
    // The extensions' contents, read after the loop (a loop in a loop
    // multiplies what the verifier walks).
    let len = out.get(NAME_LEN);
    if len > 0 {
        // ServerNameList<1..2^16-1>: name_type (0 = host_name),
        // HostName<1..2^16-1>. Only the first entry: RFC 6066 allows one
        // host_name.
        let data = out.get(NAME_OFF);
        let Ok(s) = ctx.load::<[u8; 5]>(data as usize) else {
            out.put(NAME_LEN, 0);
            return out.malformed();
        };
        let name_len = be16([s[3], s[4]]);
        if s[2] != 0 || name_len == 0 || 5 + name_len > len {
            out.put(NAME_LEN, 0);
            return out.malformed();
        }
        out.set(exchange::HAS_NAME);
        out.put(NAME_OFF, data + 5);
        out.put(NAME_LEN, name_len);
    }
    let versions_len = out.get(AUX_LEN);
    if versions_len > 0 {
        let versions = out.get(AUX_OFF);
        // ProtocolVersion versions<2..254>.
        let Some(list) = u8_at(ctx, versions) else {
            return out.malformed();
        };
        if 1 + list > versions_len {
            return out.malformed();
        }
        out.set(exchange::VERSIONS_EXT);
        let mut j = 0u32;
        while j < MAX_VERSIONS {
            if 2 * j + 2 > list {
                break;
            }
            let Some(v) = u16_at(ctx, versions + 1 + 2 * j) else {
                return out.malformed();
            };
            // 0x0300 (SSL 3.0) .. 0x0304 (TLS 1.3); GREASE (0x?a?a) and
            // unknown values are skipped.
            if v >> 8 == 3 && v & 0xff <= 4 {
                out.set(1 << (exchange::OFFERED_SHIFT + (v & 0xff)));
            }
            j += 1;
        }
    }
}

/// The ServerHello at `p0` (the start of the tunnel's first server
/// payload): the selected version, and for TLS 1.2 and older where the
/// leaf certificate's issuer Name is, when it is in this segment.
#[inline(always)]
pub fn server_hello(ctx: &SkBuffContext, p0: u32, out: &Out) {
    let Some((end, rec_end, legacy)) = hello_head(ctx, p0, SERVER_HELLO) else {
        out.set(exchange::NOT_TLS);
        return;
    };
    out.set_version(legacy);
    let Some(sid) = u8_at(ctx, p0 + 43) else {
        return out.malformed();
    };
    if sid > 32 {
        return out.malformed();
    }
    // cipher_suite (2), compression_method (1), then extensions, which a
    // TLS 1.2 ServerHello may leave out altogether.
    let mut off = p0 + 47 + sid;
    if off + 2 <= end {
        let Some(ext_len) = u16_at(ctx, off) else {
            return out.malformed();
        };
        off += 2;
        let ext_end = off + ext_len;
        if ext_end > end {
            return out.malformed();
        }
        let mut i = 0u32;
        while i < MAX_EXTENSIONS {
            if off + 4 > ext_end {
                break;
            }
            let Ok(h) = ctx.load::<[u8; 4]>(off as usize) else {
                return out.malformed();
            };
            let ty = be16([h[0], h[1]]);
            let len = be16([h[2], h[3]]);
            if off + 4 + len > ext_end {
                return out.malformed();
            }
            if ty == u32::from(EXT_SUPPORTED_VERSIONS) && len == 2 {
                out.put(AUX_OFF, off + 4);
            }
            off += 4 + len;
            i += 1;
        }
    }
    let selected = out.get(AUX_OFF);
    let mut version = legacy;
    if selected > 0 {
        let Some(v) = u16_at(ctx, selected) else {
            return out.malformed();
        };
        version = v;
        out.set_version(v);
    }
    if version >= 0x0304 {
        // TLS 1.3: the certificate is encrypted.
        return;
    }
    // The next handshake message: in the same record, or the first of the
    // next record.
    let mut hs = end;
    if hs == rec_end {
        let Some(ty) = u8_at(ctx, hs) else {
            // The flight goes on in a later segment.
            return;
        };
        if ty != u32::from(CONTENT_HANDSHAKE) {
            return;
        }
        hs += 5;
    }
    let Some(ty) = u8_at(ctx, hs) else {
        return;
    };
    if ty != u32::from(CERTIFICATE) {
        // Resumption (no certificate), or not TLS as we know it.
        return;
    }
    // Certificate: handshake header (4), certificate_list length (3),
    // first entry's length (3): the leaf certificate's DER.
    let Some(leaf_len) = u24_at(ctx, hs + 7) else {
        return;
    };
    match issuer_at(ctx, hs + 10, leaf_len) {
        Some((off, len)) => {
            out.set(exchange::HAS_NAME);
            out.put(NAME_OFF, off);
            out.put(NAME_LEN, len);
        }
        None => out.malformed(),
    }
}

/// A DER tag and length at `off` (short form, or long form of 1 or 2
/// bytes: a certificate's fields are below 64 KiB): (tag, header length,
/// content length).
#[inline(always)]
fn der_at(ctx: &SkBuffContext, off: u32) -> Option<(u8, u32, u32)> {
    // Two bytes first: a short-form element may be the last of the skb.
    let h: [u8; 2] = ctx.load(off as usize).ok()?;
    match h[1] {
        l if l < 0x80 => Some((h[0], 2, u32::from(l))),
        0x81 => Some((h[0], 3, u8_at(ctx, off + 2)?)),
        0x82 => Some((h[0], 4, u16_at(ctx, off + 2)?)),
        _ => None,
    }
}

/// Where the issuer Name of the certificate at `cert` (`cert_len` bytes of
/// DER) lies: (offset, length of the whole Name element). Each element's
/// tag is checked, and each must end inside the one around it.
#[inline(always)]
fn issuer_at(ctx: &SkBuffContext, cert: u32, cert_len: u32) -> Option<(u32, u32)> {
    let (tag, hdr, len) = der_at(ctx, cert)?;
    if tag != DER_SEQUENCE || hdr + len > cert_len {
        return None;
    }
    let tbs = cert + hdr;
    let (tag, hdr, tbs_len) = der_at(ctx, tbs)?;
    if tag != DER_SEQUENCE || hdr + tbs_len > len {
        return None;
    }
    let tbs_end = tbs + hdr + tbs_len;
    let mut off = tbs + hdr;
    let (mut tag, mut hdr, mut len) = der_at(ctx, off)?;
    if tag == DER_EXPLICIT_0 {
        // version [0] EXPLICIT (absent means v1).
        off += hdr + len;
        (tag, hdr, len) = der_at(ctx, off)?;
    }
    if tag != DER_INTEGER {
        return None;
    }
    // serialNumber, then signature AlgorithmIdentifier.
    off += hdr + len;
    let (tag, hdr, len) = der_at(ctx, off)?;
    if tag != DER_SEQUENCE {
        return None;
    }
    off += hdr + len;
    let (tag, hdr, len) = der_at(ctx, off)?;
    if tag != DER_SEQUENCE || off + hdr + len > tbs_end {
        return None;
    }
    Some((off, hdr + len))
}
