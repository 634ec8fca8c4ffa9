//! Does a proxy answer, and will it tunnel? A TCP connect with a timeout,
//! and an HTTP CONNECT the way Go's net/http sends one.
//!
//! Outcomes use the tracer's words (`refused`, `timed_out`, `unreachable`,
//! from `decode::verdict_for_errno`) so `doctor` and `trace` describe the
//! same failure the same way. Credentials are sent (Basic) only when the
//! proxy URL has them, and never appear in any result.

use std::{
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs},
    sync::mpsc,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use crate::{
    decode::verdict_for_errno,
    redact::{redact, REDACTED},
    verdict::proxy::{parse_proxy_url, ProxyUrl, Rules},
};

/// Longest proxy reply header read: a status line fits in far less.
const MAX_REPLY: usize = 8 * 1024;

/// How a TCP connect ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReachResult {
    Connected,
    Refused,
    TimedOut,
    Unreachable,
    Failed,
    /// The host name has no address (or the lookup timed out).
    ResolutionFailed,
}

impl ReachResult {
    pub fn as_str(self) -> &'static str {
        match self {
            ReachResult::Connected => "connected",
            ReachResult::Refused => "refused",
            ReachResult::TimedOut => "timed_out",
            ReachResult::Unreachable => "unreachable",
            ReachResult::Failed => "failed",
            ReachResult::ResolutionFailed => "resolution_failed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reach {
    pub result: ReachResult,
    /// The address dialled (the last one tried).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub address: Option<String>,
    /// The error text, e.g. "connection refused".
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub detail: Option<String>,
}

/// What an HTTP CONNECT through a proxy gave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Tunnel {
    /// The proxy answered with this status line.
    Status { code: u16, reason: String },
    /// The proxy could not be reached.
    Unreached { reach: Reach },
    /// The proxy answered something that is not an HTTP status line, or
    /// nothing within the timeout.
    BadReply { detail: String },
    /// Not probed: a proxy scheme this probe does not speak (https, socks).
    Unsupported { detail: String },
}

/// `host:port` -> (host without brackets, port).
pub fn split_host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() || host.contains(['/', ' ', '@']) || port == 0 {
        return None;
    }
    Some((host.to_string(), port))
}

/// Resolve with a bound: getaddrinfo has no timeout of its own, so it runs
/// on a thread that is abandoned if it takes too long.
fn resolve(host: &str, port: u16, timeout: Duration) -> Result<Vec<SocketAddr>, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let (tx, rx) = mpsc::channel();
    let name = host.to_string();
    std::thread::spawn(move || {
        let _ = tx.send((name.as_str(), port).to_socket_addrs().map(Vec::from_iter));
    });
    match rx.recv_timeout(timeout) {
        Ok(Ok(addrs)) if !addrs.is_empty() => Ok(addrs),
        Ok(Ok(_)) => Err(format!("{host} has no address")),
        Ok(Err(e)) => Err(format!("lookup {host}: {e}")),
        Err(_) => Err(format!("lookup {host}: no answer within {timeout:?}")),
    }
}

fn outcome_of(e: &std::io::Error) -> ReachResult {
    if e.kind() == std::io::ErrorKind::TimedOut {
        return ReachResult::TimedOut;
    }
    match e.raw_os_error() {
        Some(errno) => match verdict_for_errno(errno).as_str() {
            "refused" => ReachResult::Refused,
            "timed_out" => ReachResult::TimedOut,
            "unreachable" => ReachResult::Unreachable,
            _ => ReachResult::Failed,
        },
        None => ReachResult::Failed,
    }
}

/// `host:port`, an IPv6 address in brackets.
pub fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Connect to `host:port`, trying its addresses in order as Go does.
pub fn dial(host: &str, port: u16, timeout: Duration) -> Result<TcpStream, Reach> {
    let addrs = resolve(host, port, timeout).map_err(|detail| Reach {
        result: ReachResult::ResolutionFailed,
        address: None,
        detail: Some(detail),
    })?;
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(stream) => return Ok(stream),
            Err(e) => {
                last = Some(Reach {
                    result: outcome_of(&e),
                    address: Some(addr.to_string()),
                    detail: Some(error_text(&e)),
                })
            }
        }
    }
    Err(last.unwrap_or(Reach {
        result: ReachResult::Failed,
        address: None,
        detail: None,
    }))
}

/// "connection refused" rather than "Connection refused (os error 111)".
fn error_text(e: &std::io::Error) -> String {
    let text = e.to_string();
    let text = text.split(" (os error").next().unwrap_or(&text);
    let mut chars = text.chars();
    chars
        .next()
        .map(|c| c.to_lowercase().chain(chars).collect())
        .unwrap_or_default()
}

/// One TCP connect to `host:port`, closed at once.
/// `reach` as it may be shown: when the host and port dialled are a piece
/// of the credentials (`ProxyUrl::host_from_credentials`), neither the
/// error text nor the address names them.
pub fn shown(mut reach: Reach, url: &ProxyUrl) -> Reach {
    if url.host_from_credentials {
        reach.detail = reach.detail.map(|d| {
            d.replace(&url.host, REDACTED)
                .replace(&url.port.to_string(), REDACTED)
        });
        reach.address = reach.address.map(|_| REDACTED.to_owned());
    }
    reach
}

pub fn tcp_connect(host: &str, port: u16, timeout: Duration) -> Reach {
    match dial(host, port, timeout) {
        Ok(stream) => Reach {
            result: ReachResult::Connected,
            address: stream.peer_addr().ok().map(|a| a.to_string()),
            detail: None,
        },
        Err(reach) => reach,
    }
}

/// Ask the proxy `proxy_url` (the raw variable value; it may hold
/// credentials) to open a tunnel to `target` (`host:port`), and return its
/// status line, or why there is none. Each step is bounded by `timeout`.
pub fn connect_through(proxy_url: &str, target: &str, timeout: Duration) -> Tunnel {
    tunnel(proxy_url, target, timeout).0
}

/// The same CONNECT, and the open tunnel when the proxy answered 2xx (its
/// reply header read to the end, nothing of the tunnel's data).
pub fn open_tunnel(proxy_url: &str, target: &str, timeout: Duration) -> Result<TcpStream, Tunnel> {
    match tunnel(proxy_url, target, timeout) {
        (Tunnel::Status { code, .. }, Some(stream)) if (200..300).contains(&code) => Ok(stream),
        (answer, _) => Err(answer),
    }
}

fn tunnel(proxy_url: &str, target: &str, timeout: Duration) -> (Tunnel, Option<TcpStream>) {
    let url = match parse_proxy_url(proxy_url, Rules::Go) {
        Ok(url) => url,
        Err(e) => {
            return (
                Tunnel::BadReply {
                    detail: format!("the proxy URL does not parse: {}", redact(&e.to_string())),
                },
                None,
            )
        }
    };
    if url.scheme != "http" {
        return (
            Tunnel::Unsupported {
                detail: format!(
                    "{} proxies are only dialled, not asked to tunnel",
                    url.scheme
                ),
            },
            None,
        );
    }
    let mut stream = match dial(&url.host, url.port, timeout) {
        Ok(s) => s,
        Err(reach) => {
            return (
                Tunnel::Unreached {
                    reach: shown(reach, &url),
                },
                None,
            )
        }
    };
    let mut request =
        format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nUser-Agent: tracer-doctor\r\n");
    if let Some(credentials) = basic_credentials(proxy_url) {
        request.push_str("Proxy-Authorization: Basic ");
        request.push_str(&credentials);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    let deadline = Instant::now() + timeout;
    let _ = stream.set_write_timeout(Some(timeout));
    if let Err(e) = stream.write_all(request.as_bytes()) {
        return (
            Tunnel::BadReply {
                detail: format!("sending CONNECT: {}", error_text(&e)),
            },
            None,
        );
    }
    // Read the whole reply header, byte by byte once the status line is in:
    // whatever follows the blank line belongs to the tunnel (the TLS
    // handshake), and must not be swallowed here.
    let mut reply = Vec::new();
    let mut buf = [0u8; 1024];
    while !reply.ends_with(b"\r\n\r\n") && !reply.ends_with(b"\n\n") && reply.len() < MAX_REPLY {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            if reply.contains(&b'\n') {
                break;
            }
            return (
                Tunnel::BadReply {
                    detail: format!("no reply within {timeout:?}"),
                },
                None,
            );
        }
        let _ = stream.set_read_timeout(Some(left));
        let want = if reply.contains(&b'\n') { 1 } else { buf.len() };
        match stream.read(&mut buf[..want]) {
            Ok(0) => break,
            Ok(n) => reply.extend_from_slice(&buf[..n]),
            Err(e) if reply.contains(&b'\n') && is_timeout(&e) => break,
            Err(e) => {
                return (
                    Tunnel::BadReply {
                        detail: format!("reading the reply: {}", error_text(&e)),
                    },
                    None,
                )
            }
        }
    }
    let complete = reply.ends_with(b"\r\n\r\n") || reply.ends_with(b"\n\n");
    (parse_status_line(&reply), complete.then_some(stream))
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// `HTTP/1.x CODE REASON` (tinyproxy answers 407 in HTTP/1.0).
fn parse_status_line(reply: &[u8]) -> Tunnel {
    let line = reply.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line).trim_end().to_string();
    let mut parts = line.splitn(3, ' ');
    let (version, code) = (parts.next().unwrap_or_default(), parts.next());
    match (
        version.starts_with("HTTP/"),
        code.and_then(|c| c.parse::<u16>().ok()),
    ) {
        (true, Some(code)) => Tunnel::Status {
            code,
            reason: parts.next().unwrap_or_default().to_string(),
        },
        _ if line.is_empty() => Tunnel::BadReply {
            detail: "the proxy closed the connection without a reply".to_string(),
        },
        _ => Tunnel::BadReply {
            detail: format!(
                "not an HTTP status line: {:?}",
                redact(&line.chars().take(80).collect::<String>())
            ),
        },
    }
}

/// The URL's `user:password`, percent-decoded and base64-encoded, when it
/// has any. The authority is split at its last `@` as Go's net/url does.
fn basic_credentials(value: &str) -> Option<String> {
    let rest = value.split_once("://").map_or(value, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let (userinfo, _) = authority.rsplit_once('@')?;
    let (user, pass) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    let plain = format!("{}:{}", percent_decode(user), percent_decode(pass));
    Some(base64(plain.as_bytes()))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Standard base64 with padding (RFC 4648), for one header value.
fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn base64_and_credentials() {
        assert_eq!(base64(b"user:pass"), "dXNlcjpwYXNz");
        assert_eq!(base64(b"a"), "YQ==");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(basic_credentials("http://127.0.0.1:3128"), None);
        assert_eq!(
            basic_credentials("http://us%40r:p@ss@h:1"),
            Some(base64(b"us@r:p@ss"))
        );
        assert_eq!(basic_credentials("u:p@h:1"), Some(base64(b"u:p")));
    }

    #[test]
    fn host_port_split() {
        assert_eq!(
            split_host_port("registry:443"),
            Some(("registry".into(), 443))
        );
        assert_eq!(
            split_host_port("[2001:db8::2]:443"),
            Some(("2001:db8::2".into(), 443))
        );
        assert_eq!(split_host_port("registry"), None);
        assert_eq!(split_host_port("http://x:1"), None);
    }

    #[test]
    fn status_lines() {
        assert_eq!(
            parse_status_line(b"HTTP/1.0 407 Proxy Authentication Required\r\n"),
            Tunnel::Status {
                code: 407,
                reason: "Proxy Authentication Required".into()
            }
        );
        assert!(matches!(parse_status_line(b""), Tunnel::BadReply { .. }));
        assert!(matches!(
            parse_status_line(b"SSH-2.0-x\r\n"),
            Tunnel::BadReply { .. }
        ));
    }

    #[test]
    fn refused_on_a_closed_loopback_port() {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let r = tcp_connect("127.0.0.1", port, Duration::from_secs(1));
        assert_eq!(r.result, ReachResult::Refused);
        assert_eq!(r.detail.as_deref(), Some("connection refused"));
        let t = connect_through(
            &format!("http://u:s3cret@127.0.0.1:{port}"),
            "x:443",
            Duration::from_secs(1),
        );
        assert!(
            matches!(t, Tunnel::Unreached { ref reach } if reach.result == ReachResult::Refused)
        );
        assert!(!format!("{t:?}").contains("s3cret"));
    }

    #[test]
    fn connect_sends_credentials_only_when_present() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for _ in 0..2 {
                let (mut s, _) = listener.accept().unwrap();
                let mut buf = [0u8; 1024];
                let n = s.read(&mut buf).unwrap();
                let req = String::from_utf8_lossy(&buf[..n]).into_owned();
                let reply = if req.contains("Proxy-Authorization: Basic dTpw") {
                    "HTTP/1.1 200 Connection established\r\n\r\n"
                } else {
                    "HTTP/1.0 407 Proxy Authentication Required\r\n\r\n"
                };
                s.write_all(reply.as_bytes()).unwrap();
                seen.push(req);
            }
            seen
        });
        let timeout = Duration::from_secs(2);
        let without = connect_through(&format!("http://127.0.0.1:{port}"), "r:443", timeout);
        let with = connect_through(&format!("http://u:p@127.0.0.1:{port}"), "r:443", timeout);
        assert_eq!(
            without,
            Tunnel::Status {
                code: 407,
                reason: "Proxy Authentication Required".into()
            }
        );
        assert_eq!(
            with,
            Tunnel::Status {
                code: 200,
                reason: "Connection established".into()
            }
        );
        let seen = server.join().unwrap();
        assert!(seen[0].starts_with("CONNECT r:443 HTTP/1.1\r\n"));
        assert!(!seen[0].contains("Proxy-Authorization"));
    }
}
