//! One DNS message, read with `simple-dns`: the parts the tracer uses.
//!
//! The kernel copies at most `DNS_PAYLOAD_MAX` bytes of a message. A
//! longer answer cannot be parsed whole, but its fixed 12-byte header
//! (RFC 1035 section 4.1.1) and usually its question still can: the id and
//! response code are read by hand, so a cut answer still ends its query
//! with the right code.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use simple_dns::{rdata::RData, Packet, QTYPE, TYPE};

/// What the tracer needs of a query or an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub id: u16,
    /// QR bit: an answer (response), else a query.
    pub is_response: bool,
    /// RCODE (0 NOERROR, 2 SERVFAIL, 3 NXDOMAIN, ...).
    pub rcode: u8,
    /// The first question, if it could be read: name (no trailing dot),
    /// and QTYPE.
    pub question: Option<(String, u16)>,
    /// A and AAAA records of the answer section, with their TTL in seconds.
    pub addresses: Vec<(IpAddr, u32)>,
}

/// Read a message; None when even the header is missing.
pub fn parse(bytes: &[u8]) -> Option<Message> {
    let header = bytes.get(..12)?;
    let id = u16::from_be_bytes([header[0], header[1]]);
    let is_response = header[2] & 0x80 != 0;
    let rcode = header[3] & 0x0f;
    let mut msg = Message {
        id,
        is_response,
        rcode,
        question: None,
        addresses: Vec::new(),
    };
    // A cut or odd message keeps what the header says.
    if let Ok(packet) = Packet::parse(bytes) {
        msg.question = packet
            .questions
            .first()
            .map(|q| (q.qname.to_string(), u16::from(q.qtype)));
        for rr in &packet.answers {
            match &rr.rdata {
                RData::A(a) => msg
                    .addresses
                    .push((IpAddr::V4(Ipv4Addr::from(a.address)), rr.ttl)),
                RData::AAAA(a) => msg
                    .addresses
                    .push((IpAddr::V6(Ipv6Addr::from(a.address)), rr.ttl)),
                _ => {}
            }
        }
    }
    Some(msg)
}

/// The mnemonic of a QTYPE (ECS `dns.question.type`), e.g. "A", "AAAA";
/// "TYPE65" style (RFC 3597) for the rest.
pub fn qtype_name(qtype: u16) -> String {
    let known = match QTYPE::try_from(qtype) {
        Ok(QTYPE::TYPE(t)) => match t {
            TYPE::A => Some("A"),
            TYPE::AAAA => Some("AAAA"),
            TYPE::CNAME => Some("CNAME"),
            TYPE::MX => Some("MX"),
            TYPE::NS => Some("NS"),
            TYPE::PTR => Some("PTR"),
            TYPE::SOA => Some("SOA"),
            TYPE::SRV => Some("SRV"),
            TYPE::TXT => Some("TXT"),
            TYPE::HTTPS => Some("HTTPS"),
            TYPE::SVCB => Some("SVCB"),
            _ => None,
        },
        Ok(QTYPE::ANY) => Some("ANY"),
        _ => None,
    };
    known.map_or_else(|| format!("TYPE{qtype}"), str::to_string)
}

/// The mnemonic of an RCODE (ECS `dns.response_code`), RFC 1035/6895.
pub fn rcode_name(rcode: u8) -> &'static str {
    match rcode {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        6 => "YXDOMAIN",
        7 => "YXRRSET",
        8 => "NXRRSET",
        9 => "NOTAUTH",
        10 => "NOTZONE",
        _ => "RESERVED",
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use simple_dns::{rdata, Name, Question, ResourceRecord, CLASS, QCLASS};

    pub(crate) fn query(id: u16, name: &str, qtype: TYPE) -> Vec<u8> {
        let mut p = Packet::new_query(id);
        p.questions.push(Question::new(
            Name::new_unchecked(name),
            QTYPE::TYPE(qtype),
            QCLASS::CLASS(CLASS::IN),
            false,
        ));
        p.build_bytes_vec().expect("build query")
    }

    /// An answer to `name` with these IPv4 addresses (TTL `ttl`) and `rcode`.
    pub(crate) fn answer(id: u16, name: &str, rcode: u8, ips: &[Ipv4Addr], ttl: u32) -> Vec<u8> {
        let mut p = Packet::new_reply(id);
        *p.rcode_mut() = simple_dns::RCODE::from(u16::from(rcode));
        p.questions.push(Question::new(
            Name::new_unchecked(name),
            QTYPE::TYPE(TYPE::A),
            QCLASS::CLASS(CLASS::IN),
            false,
        ));
        for ip in ips {
            p.answers.push(ResourceRecord::new(
                Name::new_unchecked(name),
                CLASS::IN,
                ttl,
                RData::A(rdata::A::from(*ip)),
            ));
        }
        p.build_bytes_vec().expect("build answer")
    }

    #[test]
    fn reads_a_query_and_its_answer() {
        let q = parse(&query(7, "registry.example", TYPE::A)).expect("query");
        assert_eq!(q.id, 7);
        assert!(!q.is_response);
        assert_eq!(q.question, Some(("registry.example".into(), 1)));
        let ip = Ipv4Addr::new(198, 51, 100, 2);
        let a = parse(&answer(7, "registry.example", 0, &[ip], 30)).expect("answer");
        assert!(a.is_response);
        assert_eq!(a.rcode, 0);
        assert_eq!(a.addresses, vec![(IpAddr::V4(ip), 30)]);
    }

    #[test]
    fn a_cut_answer_keeps_its_header() {
        let full = answer(9, "x.example", 3, &[], 0);
        let cut = parse(&full[..14]).expect("header");
        assert_eq!((cut.id, cut.rcode, cut.is_response), (9, 3, true));
        assert_eq!(cut.question, None);
        assert_eq!(parse(&full[..11]), None, "shorter than a header");
    }

    #[test]
    fn garbage_is_no_panic() {
        for len in 0..64 {
            let junk: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let _ = parse(&junk);
        }
    }

    #[test]
    fn names_of_types_and_codes() {
        assert_eq!(qtype_name(1), "A");
        assert_eq!(qtype_name(28), "AAAA");
        assert_eq!(qtype_name(65), "HTTPS");
        assert_eq!(qtype_name(64_000), "TYPE64000");
        assert_eq!(rcode_name(3), "NXDOMAIN");
        assert_eq!(rcode_name(2), "SERVFAIL");
    }
}
