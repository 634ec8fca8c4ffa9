//! The proxy exchange in the record: the fields it adds to `tracer.proxy`
//! and the words it adds to the message. Rare (attempts to a proxy only),
//! so serde_json does the escaping.

use std::fmt::Write;

use crate::{
    exchange::{
        tls::{version_words, ClientHello, ServerHello},
        ExchangeState, ProxyExchange, ANSWER_BOUND,
    },
    verdict::ProxyVerdict,
};

/// The exchange's fields inside the `tracer.proxy` object, each preceded by
/// a comma unless `first`.
pub fn write_fields(out: &mut Vec<u8>, x: &ProxyExchange, mut first: bool) {
    let mut sep = |out: &mut Vec<u8>| {
        if !first {
            out.push(b',');
        }
        first = false;
    };
    if x.listed {
        sep(out);
        out.extend_from_slice(br#""listed":true"#);
    }
    if let Some(state) = x.state {
        sep(out);
        out.extend_from_slice(br#""exchange":""#);
        out.extend_from_slice(state.as_str().as_bytes());
        out.push(b'"');
    }
    if let Some(r) = &x.request {
        sep(out);
        out.extend_from_slice(br#""request":{"method":"#);
        string(out, &r.method);
        out.extend_from_slice(br#","target":"#);
        string(out, &r.target);
        if let Some(v) = &r.version {
            out.extend_from_slice(br#","version":"#);
            string(out, v);
        }
        if r.truncated {
            out.extend_from_slice(br#","truncated":true"#);
        }
        out.push(b'}');
    }
    if let Some(s) = &x.response {
        sep(out);
        out.extend_from_slice(br#""response":{"version":"#);
        string(out, &s.version);
        out.extend_from_slice(br#","status_code":"#);
        out.extend_from_slice(itoa::Buffer::new().format(s.status_code).as_bytes());
        out.extend_from_slice(br#","reason":"#);
        string(out, &s.reason);
        out.push(b'}');
    }
    if x.unparsed {
        sep(out);
        out.extend_from_slice(br#""unparsed":true"#);
    }
}

fn string(out: &mut Vec<u8>, s: &str) {
    super::ndjson::push_str(out, s);
}

/// The tunnel's TLS facts as ECS's top-level `tls` object, preceded by a
/// comma: `tls.version`/`version_protocol` (what the server selected),
/// `tls.client.server_name`, `tls.client.supported_versions`, and
/// `tls.server.issuer` (TLS 1.2 and older only: 1.3 encrypts the
/// certificate). Nothing when no hello was seen.
pub fn write_tls(out: &mut Vec<u8>, x: &ProxyExchange) {
    let (c, s) = (x.client_hello.as_ref(), x.server_hello.as_ref());
    if c.is_none() && s.is_none() {
        return;
    }
    out.extend_from_slice(br#","tls":{"#);
    let mut first = true;
    let mut sep = |out: &mut Vec<u8>| {
        if !first {
            out.push(b',');
        }
        first = false;
    };
    if let Some((protocol, version)) = s.and_then(|s| s.version).and_then(version_words) {
        sep(out);
        out.extend_from_slice(br#""version":"#);
        string(out, version);
        out.extend_from_slice(br#","version_protocol":"#);
        string(out, protocol);
    }
    if let Some(c) = c.filter(|c| c.server_name.is_some() || !c.offered.is_empty()) {
        sep(out);
        out.extend_from_slice(br#""client":{"#);
        if let Some(name) = &c.server_name {
            out.extend_from_slice(br#""server_name":"#);
            string(out, name);
        }
        let offered: Vec<&str> = c
            .offered
            .iter()
            .filter_map(|v| version_words(*v))
            .map(|(_, v)| v)
            .collect();
        if !offered.is_empty() {
            if c.server_name.is_some() {
                out.push(b',');
            }
            out.extend_from_slice(br#""supported_versions":["#);
            for (i, v) in offered.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                string(out, v);
            }
            out.push(b']');
        }
        out.push(b'}');
    }
    if let Some(issuer) = s.and_then(|s| s.issuer.as_ref()) {
        sep(out);
        out.extend_from_slice(br#""server":{"issuer":"#);
        string(out, issuer);
        out.push(b'}');
    }
    out.push(b'}');
}

/// "TLS 1.3", "SSL 3.0".
fn version_text(v: u16) -> Option<String> {
    version_words(v).map(|(p, v)| format!("{} {v}", p.to_ascii_uppercase()))
}

/// "; through the tunnel it began TLS for registry.test offering TLS 1.3;
/// the server chose TLS 1.2 and presented a certificate issued by 'CN=..'"
fn write_tls_words(
    out: &mut String,
    c: Option<&ClientHello>,
    s: Option<&ServerHello>,
) -> std::fmt::Result {
    let Some(c) = c else {
        return Ok(());
    };
    out.push_str("; through the tunnel it began TLS");
    if let Some(name) = &c.server_name {
        write!(out, " for {name}")?;
    }
    if let Some(v) = c.offered.first().and_then(|v| version_text(*v)) {
        write!(out, " offering {v}")?;
    }
    if let Some(s) = s {
        if let Some(v) = s.version.and_then(version_text) {
            write!(out, "; the server chose {v}")?;
        }
        if let Some(issuer) = &s.issuer {
            write!(out, " and presented a certificate issued by '{issuer}'")?;
        }
    }
    Ok(())
}

/// The message of a connected attempt to a proxy, with its exchange:
/// "containerd (pid 1, containerd.service) reached its HTTPS proxy
/// 127.0.0.1:8888 (HTTPS_PROXY, /etc/...conf:3) and asked for CONNECT
/// 203.0.113.2:443; the proxy answered 500 Unable to connect".
/// `who` is "containerd (pid 1, containerd.service)".
pub fn message(
    out: &mut String,
    who: &str,
    v: Option<&ProxyVerdict>,
    x: &ProxyExchange,
    endpoint: &str,
) -> std::fmt::Result {
    out.push_str(who);
    match v.filter(|v| v.via == Some(true)) {
        Some(v) => {
            let label = crate::verdict::scheme_label(v.scheme);
            write!(
                out,
                " reached its {label} proxy {} ({}",
                v.endpoint, v.variable
            )?;
            match &v.source {
                Some(src) => write!(out, ", {}", src.location())?,
                None => out.push_str(", in its environment, not set by any unit file"),
            }
            out.push(')');
        }
        None => write!(out, " reached the proxy {endpoint} (listed with --proxy)")?,
    }
    if let Some(r) = &x.request {
        write!(out, " and asked for {} {}", r.method, r.target)?;
        if r.truncated {
            out.push_str("...");
        }
    } else if x.unparsed {
        out.push_str(" and sent something that is not an HTTP request line");
    }
    let bound = ANSWER_BOUND.as_secs_f64();
    match (x.state, &x.response) {
        (Some(ExchangeState::Answered), Some(s)) => {
            write!(out, "; the proxy answered {}", s.status_code)?;
            if !s.reason.is_empty() {
                write!(out, " {}", s.reason)?;
            }
            if s.status_code == 407 {
                if let Some(v) = v.filter(|v| v.via == Some(true)) {
                    if v.url.contains('@') {
                        write!(
                            out,
                            "; the proxy refused the credentials {} carries",
                            v.variable
                        )?;
                    } else {
                        write!(
                            out,
                            "; the proxy wants credentials and {} carries none",
                            v.variable
                        )?;
                    }
                } else {
                    out.push_str("; the proxy wants credentials");
                }
            }
        }
        (Some(ExchangeState::Answered), None) => {
            out.push_str("; the proxy answered with something that is not an HTTP status line")
        }
        (Some(ExchangeState::NoAnswer), _) => {
            write!(out, "; the proxy did not answer within {bound} s")?
        }
        (Some(ExchangeState::NotSeen), _) => {
            write!(out, "; no request was seen within {bound} s")?
        }
        (Some(ExchangeState::NotWatched), _) => out.push_str(
            "; its exchange is not watched (the process's cgroup carries no payload hooks yet, or it is the root cgroup)",
        ),
        (None, _) => {}
    }
    write_tls_words(out, x.client_hello.as_ref(), x.server_hello.as_ref())?;
    if let Some(d) = v.and_then(|v| v.drift.as_ref()) {
        if let Some(c) = &d.configured {
            write!(
                out,
                "; the unit's files now say {c} but the running process still has {} (restart it to apply)",
                d.live
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exchange::{RequestLine, StatusLine};

    fn answered(code: u16, reason: &str) -> ProxyExchange {
        let mut x = ProxyExchange::new(true, Some(ExchangeState::Answered));
        x.request = Some(RequestLine {
            method: "CONNECT".into(),
            target: "203.0.113.2:443".into(),
            version: Some("HTTP/1.1".into()),
            truncated: false,
        });
        x.response = Some(StatusLine {
            version: "HTTP/1.0".into(),
            status_code: code,
            reason: reason.into(),
        });
        x
    }

    #[test]
    fn fields_are_valid_json_inside_an_object() {
        let mut out = b"{".to_vec();
        write_fields(&mut out, &answered(500, "Unable \"to\" connect"), true);
        out.push(b'}');
        let v: serde_json::Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(v["listed"], true);
        assert_eq!(v["exchange"], "answered");
        assert_eq!(v["request"]["method"], "CONNECT");
        assert_eq!(v["response"]["status_code"], 500);
        assert_eq!(v["response"]["reason"], "Unable \"to\" connect");
    }

    fn tunnel() -> ProxyExchange {
        let mut x = answered(200, "Connection established");
        x.tunnel = true;
        x.client_hello = Some(ClientHello {
            server_name: Some("registry.test".into()),
            offered: vec![0x0304, 0x0303],
            malformed: false,
        });
        x.server_hello = Some(ServerHello {
            version: Some(0x0303),
            issuer: Some("CN=Tracer \"Test\" CA".into()),
            malformed: false,
        });
        x
    }

    #[test]
    fn tls_facts_are_an_ecs_tls_object() {
        let mut out = b"{\"a\":1".to_vec();
        write_tls(&mut out, &tunnel());
        out.push(b'}');
        let v: serde_json::Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(v["tls"]["version"], "1.2");
        assert_eq!(v["tls"]["version_protocol"], "tls");
        assert_eq!(v["tls"]["client"]["server_name"], "registry.test");
        assert_eq!(
            v["tls"]["client"]["supported_versions"],
            serde_json::json!(["1.3", "1.2"])
        );
        assert_eq!(v["tls"]["server"]["issuer"], "CN=Tracer \"Test\" CA");
        // No hello, no object.
        let mut out = Vec::new();
        write_tls(&mut out, &answered(200, "OK"));
        assert!(out.is_empty());
        let mut out = String::new();
        message(&mut out, "curl (pid 7)", None, &tunnel(), "127.0.0.1:8888").expect("fmt");
        assert!(
            out.ends_with("; the proxy answered 200 Connection established; through the tunnel it began TLS for registry.test offering TLS 1.3; the server chose TLS 1.2 and presented a certificate issued by 'CN=Tracer \"Test\" CA'"),
            "{out}"
        );
    }

    #[test]
    fn a_listed_proxy_message_names_the_flag() {
        let mut out = String::new();
        message(
            &mut out,
            "curl (pid 7)",
            None,
            &answered(407, "Proxy Authentication Required"),
            "127.0.0.1:8888",
        )
        .expect("fmt");
        assert_eq!(
            out,
            "curl (pid 7) reached the proxy 127.0.0.1:8888 (listed with --proxy) and asked for CONNECT 203.0.113.2:443; the proxy answered 407 Proxy Authentication Required; the proxy wants credentials"
        );
    }
}
