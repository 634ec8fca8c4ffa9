//! The proxy exchange, decoded: the request line a client sent to its proxy
//! and the status line the proxy answered, as the kernel cut them
//! (`tracer_common::ExchangeEvent`, tracer-ebpf `probes/proxy_payload.rs`).
//!
//! A stage beside `decode`: pure functions, no I/O, importing no later
//! stage. What the lines mean for an attempt is put together in
//! `trace::exchange` and written by the sink.

use tracer_common::{exchange, ExchangeEvent, LINE_MAX};

use crate::redact::redact_target;

pub mod tls;

/// How long, after a proxy's 2xx to a CONNECT, the attempt waits for the
/// tunnel's TLS hellos (the client sends its ClientHello at once; the
/// server answers within a round trip through the proxy). The held
/// attempt's deadline is pushed to at least this far after the 2xx.
pub const TLS_BOUND: std::time::Duration = std::time::Duration::from_millis(1000);

/// How long an attempt to a proxy waits for the proxy's status line before
/// it is written without one. A proxy answers a `CONNECT` once it has dialled
/// the origin; tinyproxy's refusal arrives within milliseconds, a dial to an
/// origin that drops SYNs takes its own timeout (tens of seconds), which no
/// event should wait for. 1.5 s covers a proxy that answers at all on a
/// loaded node, and bounds how late a proxy dial's event is.
pub const ANSWER_BOUND: std::time::Duration = std::time::Duration::from_millis(1500);

/// One line of an exchange, from the ring buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub pid: u32,
    /// The attempt's start (kernel ns): with `pid`, which attempt it is.
    pub start_ns: u64,
    pub direction: Direction,
    /// The bytes before the first CR/LF, at most `LINE_MAX`.
    pub text: String,
    /// No CR/LF within the copied bytes: `text` is a prefix of the line.
    pub truncated: bool,
    /// The tunnel's TLS hellos (`Direction::Tls`); `text` is then empty.
    pub tls: Option<tls::Hello>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Request,
    Response,
    /// A TLS hello of a tunnel (`exchange::TLS_CLIENT` / `TLS_SERVER`).
    Tls,
}

/// `ExchangeEvent` bytes -> `Line`. None when the record is too short or
/// names no known direction.
pub fn line_of(bytes: &[u8]) -> Option<Line> {
    let ev: ExchangeEvent = crate::decode::read_record(bytes).ok()?;
    let len = (ev.len as usize).min(LINE_MAX);
    let (direction, tls) = match ev.direction {
        exchange::REQUEST => (Direction::Request, None),
        exchange::RESPONSE => (Direction::Response, None),
        d => (
            Direction::Tls,
            Some(tls::hello_of(d, ev.flags, &ev.line[..len])?),
        ),
    };
    let text = if tls.is_some() {
        String::new()
    } else {
        String::from_utf8_lossy(&ev.line[..len]).into_owned()
    };
    Some(Line {
        pid: (ev.pid_tgid >> 32) as u32,
        start_ns: ev.start_ns,
        direction,
        text,
        truncated: ev.flags & exchange::TRUNCATED != 0,
        tls,
    })
}

/// `CONNECT 203.0.113.2:443 HTTP/1.1`, or the absolute form
/// `HEAD http://203.0.113.2:5000/v2/... HTTP/1.1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestLine {
    pub method: String,
    /// Credentials in an absolute-form URL are redacted, and a query or
    /// fragment is replaced by `?REDACTED` (`#REDACTED`).
    pub target: String,
    /// "HTTP/1.1"; None when the line was cut before it.
    pub version: Option<String>,
    pub truncated: bool,
}

/// `HTTP/1.1 500 Unable to connect`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusLine {
    pub version: String,
    pub status_code: u16,
    pub reason: String,
}

/// A request line, when the bytes are one: a method of upper-case letters
/// and a target. Anything else (TLS straight to the proxy port, SOCKS) is
/// not an HTTP exchange, and its bytes are not reported.
pub fn parse_request(text: &str, truncated: bool) -> Option<RequestLine> {
    let mut parts = text.splitn(3, ' ');
    let method = parts.next()?;
    let target = parts.next()?;
    let version = parts.next();
    let method_ok = (1..=20).contains(&method.len())
        && method.bytes().all(|b| b.is_ascii_uppercase() || b == b'-');
    if !method_ok || target.is_empty() || target.bytes().any(|b| b.is_ascii_control()) {
        return None;
    }
    let version = match version {
        Some(v) if v.starts_with("HTTP/") && !truncated => Some(v.to_string()),
        Some(_) if truncated => None,
        Some(_) => return None,
        None if truncated => None,
        None => return None,
    };
    Some(RequestLine {
        method: method.to_string(),
        target: redact_target(target),
        version,
        truncated,
    })
}

/// A status line: `HTTP/x.y` SP 3-digit code [SP reason].
pub fn parse_status(text: &str) -> Option<StatusLine> {
    let mut parts = text.splitn(3, ' ');
    let version = parts.next()?;
    let code = parts.next()?;
    let reason = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/") || code.len() != 3 {
        return None;
    }
    let status_code = code.parse::<u16>().ok().filter(|c| *c >= 100)?;
    if reason.bytes().any(|b| b.is_ascii_control()) {
        return None;
    }
    Some(StatusLine {
        version: version.to_string(),
        status_code,
        reason: reason.to_string(),
    })
}

/// How the wait for the exchange of one attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeState {
    /// The proxy's status line arrived.
    Answered,
    /// The request went out; no status line within `ANSWER_BOUND`.
    NoAnswer,
    /// Not even a request line within `ANSWER_BOUND` (the client sent
    /// nothing, or not HTTP).
    NotSeen,
    /// The payload programs were not attached to the process's cgroup when
    /// the attempt was made (a process in the root cgroup, or one whose
    /// proxy became known only with this attempt): nothing was waited for.
    NotWatched,
}

impl ExchangeState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Answered => "answered",
            Self::NoAnswer => "no_answer",
            Self::NotSeen => "not_seen",
            Self::NotWatched => "not_watched",
        }
    }
}

/// What the tracer knows of one attempt's exchange with a proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyExchange {
    /// The destination is listed with `--proxy HOST:PORT`.
    pub listed: bool,
    /// None for attempts that never connected: no exchange to wait for.
    pub state: Option<ExchangeState>,
    pub request: Option<RequestLine>,
    pub response: Option<StatusLine>,
    /// A first line that was not HTTP (its bytes are not kept).
    pub unparsed: bool,
    /// The proxy answered a CONNECT with 2xx: the tunnel's TLS hellos are
    /// awaited (until the ServerHello, or bytes that are not TLS).
    pub tunnel: bool,
    /// The tunnel's ClientHello, when it was TLS.
    pub client_hello: Option<tls::ClientHello>,
    /// The tunnel's ServerHello.
    pub server_hello: Option<tls::ServerHello>,
}

impl ProxyExchange {
    pub fn new(listed: bool, state: Option<ExchangeState>) -> Self {
        Self {
            listed,
            state,
            request: None,
            response: None,
            unparsed: false,
            tunnel: false,
            client_hello: None,
            server_hello: None,
        }
    }

    /// Take one line; returns true once the exchange is complete: the
    /// status line is in, and for a tunnel (CONNECT answered 2xx) the
    /// ServerHello too, or the tunnel's first bytes were not TLS.
    pub fn take(&mut self, line: &Line) -> bool {
        match line.direction {
            Direction::Request => {
                match parse_request(&line.text, line.truncated) {
                    Some(r) => self.request = Some(r),
                    None => self.unparsed = true,
                }
                false
            }
            Direction::Response => {
                match parse_status(&line.text) {
                    Some(s) => self.response = Some(s),
                    None => self.unparsed = true,
                }
                self.state = Some(ExchangeState::Answered);
                // The kernel follows the same rule (proxy_payload.rs): a
                // CONNECT answered 2xx is a tunnel whose hellos follow.
                self.tunnel = self.request.as_ref().is_some_and(|r| r.method == "CONNECT")
                    && self
                        .response
                        .as_ref()
                        .is_some_and(|s| (200..300).contains(&s.status_code));
                !self.tunnel
            }
            Direction::Tls => match &line.tls {
                Some(tls::Hello::Client(c)) => {
                    self.client_hello = Some(c.clone());
                    false
                }
                Some(tls::Hello::Server(s)) => {
                    self.server_hello = Some(s.clone());
                    true
                }
                Some(tls::Hello::NotTls) | None => true,
            },
        }
    }

    /// The bound passed without a status line.
    pub fn expire(&mut self) {
        if self.state != Some(ExchangeState::Answered) {
            self.state = Some(if self.request.is_some() || self.unparsed {
                ExchangeState::NoAnswer
            } else {
                ExchangeState::NotSeen
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_and_absolute_form_requests_parse() {
        let r = parse_request("CONNECT 203.0.113.2:443 HTTP/1.1", false).expect("connect");
        assert_eq!(r.method, "CONNECT");
        assert_eq!(r.target, "203.0.113.2:443");
        assert_eq!(r.version.as_deref(), Some("HTTP/1.1"));
        let r = parse_request(
            "HEAD http://203.0.113.2:5000/v2/acc/img/manifests/1 HTTP/1.1",
            false,
        )
        .expect("absolute form");
        assert_eq!(r.method, "HEAD");
        assert_eq!(r.target, "http://203.0.113.2:5000/v2/acc/img/manifests/1");
    }

    #[test]
    fn credentials_in_an_absolute_url_are_redacted() {
        let r =
            parse_request("GET http://bob:hunter2@example.test/ HTTP/1.1", false).expect("request");
        assert!(!r.target.contains("hunter2"), "{}", r.target);
    }

    #[test]
    fn query_strings_never_reach_the_target() {
        let r = parse_request(
            "GET http://203.0.113.2/o?access_token=tok123&X-Amz-Signature=sig456 HTTP/1.1",
            false,
        )
        .expect("request");
        assert_eq!(r.target, "http://203.0.113.2/o?REDACTED");
        // Also when the line was cut inside the query.
        let r = parse_request("GET /o?access_token=tok12", true).expect("cut");
        assert_eq!(r.target, "/o?REDACTED");
    }

    #[test]
    fn a_cut_line_keeps_method_and_target_prefix() {
        let r = parse_request("GET http://example.test/aaaa", true).expect("cut");
        assert!(r.truncated);
        assert_eq!(r.version, None);
    }

    #[test]
    fn non_http_bytes_are_not_a_request() {
        assert_eq!(parse_request("\u{16}\u{3}\u{1} hello", false), None);
        assert_eq!(parse_request("get / HTTP/1.1", false), None);
        assert_eq!(parse_request("CONNECT", false), None);
        assert_eq!(parse_request("", false), None);
    }

    #[test]
    fn status_lines_parse_including_http_1_0() {
        let s = parse_status("HTTP/1.1 500 Unable to connect").expect("500");
        assert_eq!(
            (s.status_code, s.reason.as_str()),
            (500, "Unable to connect")
        );
        let s = parse_status("HTTP/1.0 407 Proxy Authentication Required").expect("407");
        assert_eq!(s.version, "HTTP/1.0");
        assert_eq!(s.status_code, 407);
        let s = parse_status("HTTP/1.1 200").expect("no reason");
        assert_eq!(s.reason, "");
        assert_eq!(parse_status("HTTP/1.1 abc x"), None);
        assert_eq!(parse_status("SSH-2.0-OpenSSH"), None);
        assert_eq!(parse_status("HTTP/1.1 99 x"), None);
    }

    #[test]
    fn an_exchange_ends_answered_or_says_what_was_missing() {
        let line = |direction, text: &str| Line {
            pid: 1,
            start_ns: 2,
            direction,
            text: text.into(),
            truncated: false,
            tls: None,
        };
        let mut x = ProxyExchange::new(false, None);
        assert!(!x.take(&line(Direction::Request, "CONNECT a:443 HTTP/1.1")));
        x.expire();
        assert_eq!(x.state, Some(ExchangeState::NoAnswer));
        let mut x = ProxyExchange::new(false, None);
        x.expire();
        assert_eq!(x.state, Some(ExchangeState::NotSeen));
        let mut x = ProxyExchange::new(false, None);
        x.take(&line(Direction::Request, "CONNECT a:443 HTTP/1.1"));
        // A CONNECT answered 200 is a tunnel: its TLS hellos are awaited.
        assert!(!x.take(&line(
            Direction::Response,
            "HTTP/1.1 200 Connection established"
        )));
        assert!(x.tunnel);
        x.expire();
        assert_eq!(x.state, Some(ExchangeState::Answered));
        assert_eq!(x.response.map(|r| r.status_code), Some(200));
        // Any other answer ends the exchange at once.
        let mut x = ProxyExchange::new(false, None);
        x.take(&line(Direction::Request, "CONNECT a:443 HTTP/1.1"));
        assert!(x.take(&line(Direction::Response, "HTTP/1.1 403 Filtered")));
        assert!(!x.tunnel);
        let mut x = ProxyExchange::new(false, None);
        x.take(&line(Direction::Request, "GET http://a/ HTTP/1.1"));
        assert!(x.take(&line(Direction::Response, "HTTP/1.1 200 OK")));
    }

    #[test]
    fn a_tunnel_ends_with_its_server_hello_or_with_bytes_that_are_not_tls() {
        let line = |direction, text: &str, tls: Option<tls::Hello>| Line {
            pid: 1,
            start_ns: 2,
            direction,
            text: text.into(),
            truncated: false,
            tls,
        };
        let tunnel = || {
            let mut x = ProxyExchange::new(false, None);
            x.take(&line(Direction::Request, "CONNECT a:443 HTTP/1.1", None));
            x.take(&line(Direction::Response, "HTTP/1.1 200 OK", None));
            x
        };
        let mut x = tunnel();
        let client = tls::ClientHello {
            server_name: Some("a".into()),
            offered: vec![0x0304],
            malformed: false,
        };
        assert!(!x.take(&line(
            Direction::Tls,
            "",
            Some(tls::Hello::Client(client.clone()))
        )));
        let server = tls::ServerHello {
            version: Some(0x0304),
            issuer: None,
            malformed: false,
        };
        assert!(x.take(&line(Direction::Tls, "", Some(tls::Hello::Server(server)))));
        assert_eq!(x.client_hello, Some(client));
        let mut x = tunnel();
        assert!(x.take(&line(Direction::Tls, "", Some(tls::Hello::NotTls))));
        assert_eq!((x.client_hello, x.server_hello), (None, None));
    }

    #[test]
    fn kernel_tls_records_decode() {
        let mut ev = ExchangeEvent {
            kind: tracer_common::kind::EXCHANGE,
            direction: exchange::TLS_CLIENT,
            pid_tgid: 7 << 32,
            start_ns: 9,
            len: 13,
            flags: exchange::HAS_NAME | (0x0303 << exchange::VERSION_SHIFT),
            line: [0; LINE_MAX],
        };
        ev.line[..13].copy_from_slice(b"registry.test");
        // SAFETY: a repr(C) plain-old-data struct viewed as its bytes.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&raw const ev).cast::<u8>(),
                std::mem::size_of::<ExchangeEvent>(),
            )
        };
        let l = line_of(bytes).expect("tls line");
        assert_eq!(
            (l.pid, l.direction, l.text.as_str()),
            (7, Direction::Tls, "")
        );
        let Some(tls::Hello::Client(c)) = l.tls else {
            panic!("client hello: {:?}", l.tls);
        };
        assert_eq!(c.server_name.as_deref(), Some("registry.test"));
        assert_eq!(c.offered, vec![0x0303]);
        // A length past the line is bounded by it.
        ev.len = 10_000;
        ev.direction = 99;
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&raw const ev).cast::<u8>(),
                std::mem::size_of::<ExchangeEvent>(),
            )
        };
        assert_eq!(line_of(bytes), None);
    }

    #[test]
    fn short_records_are_refused() {
        assert_eq!(line_of(&[0u8; 16]), None);
    }
}
