//! Kernel structure offsets from the running kernel's BTF.
//!
//! The probes follow a few kernel pointers (`sock->sk_err`,
//! `sock->sk_socket->file->f_flags`). Their offsets change between kernel
//! versions and configurations, and the Rust eBPF toolchain has no CO-RE
//! relocations, so userspace reads them from /sys/kernel/btf/vmlinux and
//! hands them to the probes as constants before load.
//!
//! Only the little that is needed is parsed: the header, the string
//! section, and the member lists of structs and unions
//! (Documentation/bpf/btf.rst, "BTF Type Encoding").

use std::path::Path;

use thiserror::Error;
use tracer_common::KernelOffsets;

#[derive(Debug, Error)]
pub enum BtfError {
    #[error(
        "cannot read kernel BTF at {path}: {source} (the kernel needs CONFIG_DEBUG_INFO_BTF=y)"
    )]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("kernel BTF at {path} is malformed: {what}")]
    Malformed { path: String, what: &'static str },
    #[error("kernel BTF has no member {member} in struct {strukt}")]
    MissingMember {
        strukt: &'static str,
        member: &'static str,
    },
}

const BTF_MAGIC: u16 = 0xeb9f;
const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

#[derive(Debug, Clone, Copy)]
struct Member {
    name_off: u32,
    type_id: u32,
    /// In bits.
    offset: u32,
}

#[derive(Debug, Clone)]
struct Type {
    name_off: u32,
    kind: u32,
    /// For typedef/const/volatile/...: the referenced type.
    referenced: u32,
    members: Vec<Member>,
}

/// A parsed BTF blob: enough to look up struct member offsets.
pub struct Btf {
    strings: Vec<u8>,
    /// Index 0 is `void`.
    types: Vec<Type>,
}

fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    let bytes = data.get(at..at + 4)?;
    Some(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

impl Btf {
    /// The running kernel's BTF.
    pub fn from_kernel() -> Result<Self, BtfError> {
        Self::from_file(Path::new("/sys/kernel/btf/vmlinux"))
    }

    pub fn from_file(path: &Path) -> Result<Self, BtfError> {
        let data = std::fs::read(path).map_err(|source| BtfError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&data).map_err(|what| BtfError::Malformed {
            path: path.display().to_string(),
            what,
        })
    }

    /// Parse a little-endian BTF blob (the only kind x86_64/arm64 produce).
    pub fn parse(data: &[u8]) -> Result<Self, &'static str> {
        let magic = data
            .get(0..2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .ok_or("too short")?;
        if magic != BTF_MAGIC {
            return Err("bad magic (not little-endian BTF)");
        }
        let field = |at| u32_at(data, at).ok_or("truncated header");
        let hdr_len = field(4)? as usize;
        let type_off = field(8)? as usize;
        let type_len = field(12)? as usize;
        let str_off = field(16)? as usize;
        let str_len = field(20)? as usize;
        let types_data = data
            .get(hdr_len + type_off..hdr_len + type_off + type_len)
            .ok_or("type section out of bounds")?;
        let strings = data
            .get(hdr_len + str_off..hdr_len + str_off + str_len)
            .ok_or("string section out of bounds")?
            .to_vec();

        let mut types = vec![Type {
            name_off: 0,
            kind: 0,
            referenced: 0,
            members: Vec::new(),
        }];
        let mut at = 0usize;
        while at < types_data.len() {
            let word = |i: usize| u32_at(types_data, at + i * 4).ok_or("truncated type");
            let name_off = word(0)?;
            let info = word(1)?;
            let size_or_type = word(2)?;
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            let kind_flag = info >> 31 == 1;
            at += 12;
            let mut members = Vec::new();
            let extra = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION => {
                    for i in 0..vlen {
                        let base = at + i * 12;
                        let m =
                            |j: usize| u32_at(types_data, base + j * 4).ok_or("truncated member");
                        let raw_offset = m(2)?;
                        members.push(Member {
                            name_off: m(0)?,
                            type_id: m(1)?,
                            // With kind_flag the top 8 bits are a bitfield size.
                            offset: if kind_flag {
                                raw_offset & 0x00ff_ffff
                            } else {
                                raw_offset
                            },
                        });
                    }
                    12 * vlen
                }
                KIND_ENUM => 8 * vlen,
                KIND_FUNC_PROTO => 8 * vlen,
                KIND_DATASEC | KIND_ENUM64 => 12 * vlen,
                _ => 0,
            };
            at += extra;
            types.push(Type {
                name_off,
                kind,
                referenced: size_or_type,
                members,
            });
        }
        Ok(Self { strings, types })
    }

    fn name(&self, off: u32) -> &[u8] {
        let rest = self.strings.get(off as usize..).unwrap_or(&[]);
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        &rest[..end]
    }

    /// Follow typedef/const/volatile/restrict/type_tag to the real type.
    fn resolve(&self, mut id: u32) -> Option<&Type> {
        for _ in 0..32 {
            let ty = self.types.get(id as usize)?;
            match ty.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = ty.referenced;
                }
                _ => return Some(ty),
            }
        }
        None
    }

    /// Byte offset of `member` in the struct named `strukt`, looking inside
    /// anonymous struct/union members (the kernel uses many).
    pub fn member_offset(
        &self,
        strukt: &'static str,
        member: &'static str,
    ) -> Result<u32, BtfError> {
        let missing = BtfError::MissingMember { strukt, member };
        self.types
            .iter()
            .filter(|t| t.kind == KIND_STRUCT && !t.members.is_empty())
            .filter(|t| self.name(t.name_off) == strukt.as_bytes())
            .find_map(|t| self.find_in(t, member.as_bytes(), 0))
            .map(|bits| bits / 8)
            .ok_or(missing)
    }

    fn find_in(&self, ty: &Type, member: &[u8], depth: u32) -> Option<u32> {
        if depth > 8 {
            return None;
        }
        for m in &ty.members {
            let name = self.name(m.name_off);
            if name == member {
                return Some(m.offset);
            }
            if name.is_empty() {
                let inner = self.resolve(m.type_id)?;
                if matches!(inner.kind, KIND_STRUCT | KIND_UNION) {
                    if let Some(off) = self.find_in(inner, member, depth + 1) {
                        return Some(m.offset + off);
                    }
                }
            }
        }
        None
    }

    /// The offsets the probes need.
    pub fn kernel_offsets(&self) -> Result<KernelOffsets, BtfError> {
        // `struct sock` embeds `struct sock_common` as `__sk_common`; the
        // skc_* fields sit inside anonymous unions there.
        let common = self.member_offset("sock", "__sk_common")?;
        let in_common = |member: &'static str| {
            Ok::<_, BtfError>(common + self.member_offset("sock_common", member)?)
        };
        Ok(KernelOffsets {
            sock_sk_err: self.member_offset("sock", "sk_err")?,
            sock_sk_socket: self.member_offset("sock", "sk_socket")?,
            socket_file: self.member_offset("socket", "file")?,
            file_f_flags: self.member_offset("file", "f_flags")?,
            inet_sport: self.member_offset("inet_sock", "inet_sport")?,
            inet_saddr: self.member_offset("inet_sock", "inet_saddr")?,
            sock_skc_v6_rcv_saddr: in_common("skc_v6_rcv_saddr")?,
            task_mm: self.member_offset("task_struct", "mm")?,
            mm_env_start: self.member_offset("mm_struct", "env_start")?,
            mm_env_end: self.member_offset("mm_struct", "env_end")?,
            task_signal: self.member_offset("task_struct", "signal")?,
            signal_live: self.member_offset("signal_struct", "live")?,
            task_nsproxy: self.member_offset("task_struct", "nsproxy")?,
            nsproxy_mnt_ns: self.member_offset("nsproxy", "mnt_ns")?,
            mnt_ns_inum: self.member_offset("mnt_namespace", "ns")?
                + self.member_offset("ns_common", "inum")?,
            task_real_parent: self.member_offset("task_struct", "real_parent")?,
            task_tgid: self.member_offset("task_struct", "tgid")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Build a tiny BTF blob: `struct s { int a; union { int b; int c; }; }`.
    fn sample() -> Vec<u8> {
        let strings = b"\0s\0a\0b\0c\0int\0".to_vec();
        let (s_s, s_a, s_b, s_c, s_int) = (1u32, 3u32, 5u32, 7u32, 9u32);
        let mut types = Vec::new();
        let mut push = |words: &[u32]| {
            for w in words {
                types.extend_from_slice(&w.to_le_bytes());
            }
        };
        // 1: int
        push(&[s_int, KIND_INT << 24, 4, 32]);
        // 2: anonymous union { b; c }
        push(&[0, (KIND_UNION << 24) | 2, 4, s_b, 1, 0, s_c, 1, 0]);
        // 3: struct s { a @0; <anon> @32 bits }
        push(&[s_s, (KIND_STRUCT << 24) | 2, 8, s_a, 1, 0, 0, 2, 32]);
        let mut blob = Vec::new();
        blob.extend_from_slice(&BTF_MAGIC.to_le_bytes());
        blob.extend_from_slice(&[1, 0]);
        for w in [
            24u32,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            blob.extend_from_slice(&w.to_le_bytes());
        }
        blob.extend_from_slice(&types);
        blob.extend_from_slice(&strings);
        blob
    }

    #[test]
    fn finds_direct_and_anonymous_members() {
        let btf = Btf::parse(&sample()).expect("parse");
        assert_eq!(btf.member_offset("s", "a").expect("a"), 0);
        assert_eq!(btf.member_offset("s", "c").expect("c"), 4);
        assert!(btf.member_offset("s", "zz").is_err());
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        assert!(Btf::parse(&[]).is_err());
        assert!(Btf::parse(&[0x9f, 0xeb, 1, 0, 24, 0, 0, 0]).is_err());
        let mut blob = sample();
        blob.truncate(40);
        assert!(Btf::parse(&blob).is_err());
    }

    #[test]
    fn running_kernel_has_the_offsets_we_need() {
        // This machine's kernel has BTF (PLATFORM.md); a kernel without it
        // would make the tracer refuse to start, loudly.
        let btf = Btf::from_kernel().expect("kernel BTF");
        let off = btf.kernel_offsets().expect("offsets");
        assert!(off.sock_sk_err > 0 && off.sock_sk_socket > 0 && off.file_f_flags > 0);
        // struct inet_sock starts with the struct sock it extends, so its
        // own fields come after sk_err and friends; sock_common's IPv6
        // address comes after its IPv4 address pair and port pair.
        assert!(off.inet_sport > off.sock_sk_err && off.inet_saddr > off.sock_sk_err);
        assert!(off.sock_skc_v6_rcv_saddr > 16);
        // env_end follows env_start (both unsigned long) in mm_struct.
        assert_eq!(off.mm_env_end, off.mm_env_start + 8);
        assert!(off.task_mm > 0 && off.task_signal > 0 && off.task_nsproxy > 0);
        // nsproxy starts with its count, then the uts namespace pointer.
        assert!(off.nsproxy_mnt_ns >= 16, "{}", off.nsproxy_mnt_ns);
        assert!(off.task_real_parent > off.task_tgid && off.task_tgid > 0);
    }
}
