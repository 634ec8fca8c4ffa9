//! Which proxy a traced process would use, decided from its environment.
//!
//! The rules implemented here are the ones in `docs/PROXY-RULES.md`:
//!
//! * [`Rules::Go`] follows `golang.org/x/net/http/httpproxy` (vendored into
//!   `net/http` as `ProxyFromEnvironment`), as of x/net after the
//!   "allow any scheme" change (Sep 2023) and the CVE-2025-22870 fix (zone ids
//!   no longer match domain entries). containerd, kubelet, dockerd and cri-o
//!   use it, so it is the default.
//! * [`Rules::Curl`] follows `lib/proxy.c` of curl (`proxy_detect_proxy`,
//!   `proxy_check_noproxy`) and the documented default proxy port.
//! * [`Rules::Python`] follows `urllib.request.getproxies_environment` plus the
//!   `requests` library on top of it (`should_bypass_proxies`,
//!   `select_proxy`), which is what pip and most Python clients use.
//!
//! Everything is pure logic: nothing here reads files, resolves names or
//! touches the network. Proxy values can carry credentials
//! (`http://user:pass@host:port`), so no `Display`, `Debug` or error string
//! produced here ever contains them; see [`redact`].

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Placeholder written where credentials were.
const REDACTED: &str = "REDACTED";

/// The longest variable name we look for is `REQUEST_METHOD` (14 bytes), so
/// the `=` of an interesting entry is never further in than this.
const MAX_KEY_LEN: usize = 14;

// ---------------------------------------------------------------------------
// Environment
// ---------------------------------------------------------------------------

/// One of the eight proxy variables, in exactly upper or exactly lower case.
///
/// Mixed-case spellings (`Http_Proxy`) are deliberately not kept: Go, curl and
/// glibc `getenv` are case-sensitive and only ever ask for these spellings.
/// (CPython's first pass also accepts mixed case, a corner we do not model.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProxyVar {
    /// `HTTP_PROXY`
    HttpUpper,
    /// `http_proxy`
    HttpLower,
    /// `HTTPS_PROXY`
    HttpsUpper,
    /// `https_proxy`
    HttpsLower,
    /// `NO_PROXY`
    NoUpper,
    /// `no_proxy`
    NoLower,
    /// `ALL_PROXY`
    AllUpper,
    /// `all_proxy`
    AllLower,
}

impl ProxyVar {
    /// All eight variables.
    pub const ALL: [ProxyVar; 8] = [
        ProxyVar::HttpUpper,
        ProxyVar::HttpLower,
        ProxyVar::HttpsUpper,
        ProxyVar::HttpsLower,
        ProxyVar::NoUpper,
        ProxyVar::NoLower,
        ProxyVar::AllUpper,
        ProxyVar::AllLower,
    ];

    /// The exact variable name.
    pub const fn name(self) -> &'static str {
        match self {
            ProxyVar::HttpUpper => "HTTP_PROXY",
            ProxyVar::HttpLower => "http_proxy",
            ProxyVar::HttpsUpper => "HTTPS_PROXY",
            ProxyVar::HttpsLower => "https_proxy",
            ProxyVar::NoUpper => "NO_PROXY",
            ProxyVar::NoLower => "no_proxy",
            ProxyVar::AllUpper => "ALL_PROXY",
            ProxyVar::AllLower => "all_proxy",
        }
    }

    /// The variable with exactly this name, if it is one of the eight.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::from_key(name.as_bytes())
    }

    fn from_key(key: &[u8]) -> Option<Self> {
        match key {
            b"HTTP_PROXY" => Some(ProxyVar::HttpUpper),
            b"http_proxy" => Some(ProxyVar::HttpLower),
            b"HTTPS_PROXY" => Some(ProxyVar::HttpsUpper),
            b"https_proxy" => Some(ProxyVar::HttpsLower),
            b"NO_PROXY" => Some(ProxyVar::NoUpper),
            b"no_proxy" => Some(ProxyVar::NoLower),
            b"ALL_PROXY" => Some(ProxyVar::AllUpper),
            b"all_proxy" => Some(ProxyVar::AllLower),
            _ => None,
        }
    }
}

impl fmt::Display for ProxyVar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The proxy-relevant part of one process environment.
///
/// Only the eight variables of [`ProxyVar`] are kept, plus two facts about
/// `REQUEST_METHOD` (its value is dropped). No other variable is ever stored,
/// because environments hold secrets. `Debug` redacts credentials in the
/// values; [`ProxyEnv::get`] and [`ProxyEnv::iter`] return them raw.
///
/// A variable that is present with an empty value is kept: Go and curl treat
/// it as unset, but for Python an empty lower-case variable removes the
/// upper-case one.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ProxyEnv {
    /// First occurrence of each variable, in environment order.
    vars: Vec<(ProxyVar, String)>,
    /// `REQUEST_METHOD` is set to a non-empty value. Go's CGI rule uses
    /// `os.Getenv("REQUEST_METHOD") != ""`.
    pub request_method_set: bool,
    /// `REQUEST_METHOD` is present at all, even empty. CPython's rule is
    /// `'REQUEST_METHOD' in os.environ`.
    pub request_method_present: bool,
    /// The raw environment did not end with a NUL, so its last entry may have
    /// been cut short (a capped read of `/proc/<pid>/environ`, or a process
    /// that rewrote its environment block).
    pub truncated: bool,
    /// When [`ProxyEnv::truncated`] is set and the unterminated last entry was a
    /// proxy variable, its name. Its value is kept as read and may be partial.
    pub truncated_var: Option<&'static str>,
}

impl ProxyEnv {
    /// Parses raw `/proc/<pid>/environ` bytes: NUL-separated `KEY=VALUE`
    /// entries, possibly not UTF-8 (values are converted lossily), possibly
    /// cut off at the end.
    ///
    /// Only the bytes of each entry's key are inspected, and only kept
    /// variables allocate, so a 500 KB environment costs one linear scan.
    /// When a name occurs twice the first one wins, as with glibc `getenv`,
    /// Go's `syscall.copyenv` and CPython's `os.environ` (built with
    /// `PyDict_SetDefault`). Never panics.
    pub fn from_environ(raw: &[u8]) -> Self {
        let mut env = ProxyEnv::default();
        let mut request_method_seen = false;
        let mut rest = raw;
        while !rest.is_empty() {
            let (entry, terminated) = match rest.iter().position(|&b| b == 0) {
                Some(nul) => {
                    let entry = &rest[..nul];
                    rest = &rest[nul + 1..];
                    (entry, true)
                }
                None => {
                    let entry = rest;
                    rest = &[];
                    (entry, false)
                }
            };
            if !terminated {
                env.truncated = true;
            }
            // Cheap pre-filter on the first byte: every interesting key starts
            // with one of these, and most environment entries do not.
            if !matches!(
                entry.first(),
                Some(b'H' | b'h' | b'N' | b'n' | b'A' | b'a' | b'R')
            ) {
                continue;
            }
            let Some(eq) = entry
                .iter()
                .take(MAX_KEY_LEN + 1)
                .position(|&b| b == b'=')
            else {
                continue;
            };
            let (key, value) = (&entry[..eq], &entry[eq + 1..]);
            if key == b"REQUEST_METHOD" {
                if !request_method_seen {
                    request_method_seen = true;
                    env.request_method_present = true;
                    env.request_method_set = !value.is_empty();
                }
                continue;
            }
            let Some(var) = ProxyVar::from_key(key) else {
                continue;
            };
            if env.get_var(var).is_none() {
                env.vars
                    .push((var, String::from_utf8_lossy(value).into_owned()));
                if !terminated {
                    env.truncated_var = Some(var.name());
                }
            }
        }
        env
    }

    /// Builds an environment from `(name, value)` pairs, e.g. a unit's
    /// configured `Environment=`. Applies the same filter as
    /// [`ProxyEnv::from_environ`]; the first occurrence of a name wins.
    pub fn from_pairs<'a, I>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (&'a str, &'a str)>,
    {
        let mut env = ProxyEnv::default();
        let mut request_method_seen = false;
        for (name, value) in pairs {
            if name == "REQUEST_METHOD" {
                if !request_method_seen {
                    request_method_seen = true;
                    env.request_method_present = true;
                    env.request_method_set = !value.is_empty();
                }
            } else if let Some(var) = ProxyVar::from_name(name) {
                if env.get_var(var).is_none() {
                    env.vars.push((var, value.to_owned()));
                }
            }
        }
        env
    }

    /// The raw value of the variable with exactly this name (e.g.
    /// `"https_proxy"`), if present (possibly empty).
    pub fn get(&self, name: &str) -> Option<&str> {
        ProxyVar::from_name(name).and_then(|var| self.get_var(var))
    }

    /// The raw value of `var`, if present (possibly empty).
    pub fn get_var(&self, var: ProxyVar) -> Option<&str> {
        self.vars
            .iter()
            .find(|(v, _)| *v == var)
            .map(|(_, value)| value.as_str())
    }

    /// The value of `var` if present and non-empty: Go's `getEnvAny` and
    /// curl's `curl_getenv` both treat an empty value as unset.
    fn non_empty(&self, var: ProxyVar) -> Option<&str> {
        self.get_var(var).filter(|v| !v.is_empty())
    }

    /// No proxy variable is present at all (not even with an empty value).
    pub fn is_empty(&self) -> bool {
        self.vars.is_empty()
    }

    /// Every kept variable as `(exact name, raw value)`, in environment order.
    /// Values may contain credentials: pass them through [`redact`] before
    /// logging.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &str)> {
        self.vars.iter().map(|(var, value)| (var.name(), value.as_str()))
    }
}

impl fmt::Debug for ProxyEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Vars<'a>(&'a [(ProxyVar, String)]);
        impl fmt::Debug for Vars<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_map()
                    .entries(self.0.iter().map(|(k, v)| (k.name(), redact_value(v))))
                    .finish()
            }
        }
        f.debug_struct("ProxyEnv")
            .field("vars", &Vars(&self.vars))
            .field("request_method_set", &self.request_method_set)
            .field("request_method_present", &self.request_method_present)
            .field("truncated", &self.truncated)
            .field("truncated_var", &self.truncated_var)
            .finish()
    }
}

// ---------------------------------------------------------------------------
// Rules and schemes
// ---------------------------------------------------------------------------

/// Whose rules decide how the environment is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Rules {
    /// Go `net/http` (`golang.org/x/net/http/httpproxy`).
    #[default]
    Go,
    /// curl and libcurl.
    Curl,
    /// Python `requests` on top of `urllib.request`.
    Python,
}

impl Rules {
    /// Lower-case name, as serialised.
    pub const fn as_str(self) -> &'static str {
        match self {
            Rules::Go => "go",
            Rules::Curl => "curl",
            Rules::Python => "python",
        }
    }
}

impl fmt::Display for Rules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Scheme of the request being sent (not of the proxy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestScheme {
    /// `http://`
    Http,
    /// `https://`
    Https,
}

impl RequestScheme {
    /// `"http"` or `"https"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            RequestScheme::Http => "http",
            RequestScheme::Https => "https",
        }
    }

    /// 80 or 443.
    pub const fn default_port(self) -> u16 {
        match self {
            RequestScheme::Http => 80,
            RequestScheme::Https => 443,
        }
    }
}

impl fmt::Display for RequestScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// ---------------------------------------------------------------------------
// Proxy URLs
// ---------------------------------------------------------------------------

/// A parsed proxy URL. Credentials are never stored, only whether there were
/// any, so `Debug` is safe; [`ProxyUrl::redacted`] (also `Display`) shows
/// `REDACTED@` in their place.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProxyUrl {
    /// Lower-case scheme: `http`, `https`, `socks5`, `socks5h`, `socks4`, ...
    pub scheme: String,
    /// Host name (ASCII-lower-cased, since DNS and `/etc/hosts` ignore case)
    /// or IP literal, without brackets for IPv6. May carry an IPv6 zone
    /// (`fe80::1%eth0`).
    pub host: String,
    /// Explicit port, or the rules' default for the scheme.
    pub port: u16,
    /// The value had a `user[:password]@` part.
    pub has_credentials: bool,
}

impl ProxyUrl {
    /// `scheme://host:port`, with `REDACTED@` where credentials were.
    pub fn redacted(&self) -> String {
        format!(
            "{}://{}{}",
            self.scheme,
            if self.has_credentials { "REDACTED@" } else { "" },
            self.host_port()
        )
    }

    /// `host:port`, with brackets around an IPv6 host: what gets dialed.
    pub fn host_port(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The host as an IP address when it is a literal (an IPv6 zone is
    /// ignored), so no resolution is needed.
    pub fn ip(&self) -> Option<IpAddr> {
        parse_ip_ignoring_zone(&self.host)
    }
}

impl fmt::Display for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// Why a proxy value did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyUrlErrorKind {
    /// The value is empty.
    #[error("empty value")]
    Empty,
    /// Go's `url.Parse` rejects ASCII control characters anywhere.
    #[error("invalid control character in URL")]
    ControlCharacter,
    /// Go: a value starting with `:`.
    #[error("missing protocol scheme")]
    MissingScheme,
    /// Go: `host:port` without scheme fails like this (and is then retried
    /// with `http://`).
    #[error("first path segment in URL cannot contain colon")]
    ColonInFirstSegment,
    /// `[` without `]`.
    #[error("missing ']' in host")]
    MissingBracket,
    /// The port is not all digits.
    #[error("invalid port")]
    InvalidPort,
    /// The port does not fit in 16 bits (Go fails at dial time).
    #[error("port out of range")]
    PortOutOfRange,
    /// A character that may not appear in a host name.
    #[error("invalid character in host name")]
    InvalidHost,
    /// A malformed `%XX` escape.
    #[error("invalid URL escape")]
    InvalidEscape,
    /// Go's `net/url: invalid userinfo`.
    #[error("invalid userinfo")]
    InvalidUserinfo,
    /// No host at all (Go would dial the local machine).
    #[error("missing host")]
    MissingHost,
    /// curl ("Unsupported proxy scheme") and Python
    /// (`ProxySchemeUnknown`) reject unknown schemes.
    #[error("unsupported proxy scheme {0:?}")]
    UnsupportedScheme(String),
    /// Go accepts any scheme but only knows default ports for some; without
    /// an explicit port there is no endpoint to name.
    #[error("no port given and no default port for scheme {0:?}")]
    NoDefaultPort(String),
}

/// A proxy value that did not parse. The value is stored already redacted,
/// so `Display` and `Debug` never show credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid proxy URL {value:?}: {kind}")]
pub struct ProxyUrlError {
    /// What was wrong.
    pub kind: ProxyUrlErrorKind,
    /// The offending value with any credentials replaced by `REDACTED`.
    value: String,
}

impl ProxyUrlError {
    fn new(kind: ProxyUrlErrorKind, raw_value: &str) -> Self {
        ProxyUrlError {
            kind,
            value: redact_value(raw_value),
        }
    }

    /// The offending value, credentials redacted.
    pub fn redacted_value(&self) -> &str {
        &self.value
    }
}

/// Internal parse failure, turned into a [`ProxyUrlError`] with the redacted
/// value by [`parse_proxy_url`].
type Fault = ProxyUrlErrorKind;

/// Parses a proxy variable's value the way the client named by `rules` does.
///
/// * Go: a value that parses as `scheme://host...` is taken as is (any
///   scheme, since x/net's "allow any scheme" change); anything else, such as
///   `10.0.0.1:7897`, `proxy:3128` or `user:pw@proxy`, is retried as
///   `http://` + value. Default ports: http 80, https 443, socks5 and socks5h
///   1080.
/// * curl: no scheme means http; schemes http, https, socks, socks4, socks4a,
///   socks5, socks5h, others are an error. The default port is 1080 for
///   everything but https (443), as documented for `-x` and
///   `CURLOPT_PROXYPORT` (curl 8.21 code uses the scheme's own default
///   instead; the documented value is used here).
/// * Python: no scheme means http (`prepend_scheme_if_needed`); http, https
///   and the socks schemes are accepted; default ports follow urllib3 (80,
///   443, 1080 for socks).
///
/// Error messages contain the value with credentials redacted.
pub fn parse_proxy_url(value: &str, rules: Rules) -> Result<ProxyUrl, ProxyUrlError> {
    let result = match rules {
        Rules::Go => parse_go(value),
        Rules::Curl | Rules::Python => parse_lenient(value, rules),
    };
    result.map_err(|kind| ProxyUrlError::new(kind, value))
}

/// The pieces of a parsed URL that matter for dialing.
struct Parts {
    scheme: String,
    has_credentials: bool,
    /// Host without brackets, not yet lower-cased.
    host: String,
    /// Digits after the host's `:`; empty when absent.
    port: String,
}

impl Parts {
    fn finish(self, default_port: impl Fn(&str) -> Option<u16>) -> Result<ProxyUrl, Fault> {
        if self.host.is_empty() {
            return Err(Fault::MissingHost);
        }
        let port = if self.port.is_empty() {
            default_port(&self.scheme).ok_or_else(|| Fault::NoDefaultPort(self.scheme.clone()))?
        } else {
            self.port.parse::<u16>().map_err(|_| Fault::PortOutOfRange)?
        };
        Ok(ProxyUrl {
            scheme: self.scheme,
            host: self.host.to_ascii_lowercase(),
            port,
            has_credentials: self.has_credentials,
        })
    }
}

fn go_default_port(scheme: &str) -> Option<u16> {
    // net/http's portMap knows http, https and socks5; socks5h is treated
    // like socks5 by current net/http. Older Go (x/net before Sep 2023)
    // instead re-parsed "socks5h://h:p" as "http://socks5h://h:p" and dialed
    // a host called "socks5h" (golang/go#24135).
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        "socks5" | "socks5h" => Some(1080),
        _ => None,
    }
}

fn parse_go(value: &str) -> Result<ProxyUrl, Fault> {
    if value.is_empty() {
        return Err(Fault::Empty);
    }
    // httpproxy.parseProxy: keep url.Parse(value) only if it gave both a
    // scheme and a host; otherwise retry "http://"+value; if that fails too,
    // report the first error (or keep the first, host-less, result).
    let first = go_url_parse(value);
    let parsed = match first {
        Ok(ref u) if !u.scheme.is_empty() && !u.host.is_empty() => first,
        _ => match go_url_parse(&format!("http://{value}")) {
            Ok(u) => Ok(u),
            Err(_) => first,
        },
    }?;
    let (hostname, port) = go_split_host_port(&parsed.host);
    Parts {
        scheme: parsed.scheme,
        has_credentials: parsed.has_credentials,
        host: hostname.to_owned(),
        port: port.to_owned(),
    }
    .finish(go_default_port)
}

/// The fields of Go's `url.URL` we need: `Scheme`, whether `User` is set,
/// and `Host` (host plus optional `:port`, brackets kept, unescaped).
struct GoUrl {
    scheme: String,
    has_credentials: bool,
    host: String,
}

/// A port of the parts of Go's `net/url.Parse` that decide the host.
fn go_url_parse(raw: &str) -> Result<GoUrl, Fault> {
    if raw.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return Err(Fault::ControlCharacter);
    }
    let mut url = GoUrl {
        scheme: String::new(),
        has_credentials: false,
        host: String::new(),
    };
    // Parse cuts the fragment first.
    let raw = raw.split('#').next().unwrap_or_default();
    if raw.is_empty() || raw == "*" {
        return Ok(url);
    }
    let (scheme, rest) = go_get_scheme(raw)?;
    url.scheme = scheme.to_ascii_lowercase();
    let rest = if rest.ends_with('?') && rest.matches('?').count() == 1 {
        &rest[..rest.len() - 1]
    } else {
        rest.split('?').next().unwrap_or_default()
    };
    if !rest.starts_with('/') {
        if url.scheme.is_empty() {
            // "10.0.0.1:7897" and "[::1]:80" end up here.
            let segment = rest.split('/').next().unwrap_or_default();
            if segment.contains(':') {
                return Err(Fault::ColonInFirstSegment);
            }
        }
        // Otherwise an opaque URL ("proxy.corp:3128" has scheme
        // "proxy.corp") or a bare path: no host either way.
        return Ok(url);
    }
    if (!url.scheme.is_empty() || !rest.starts_with("///")) && rest.starts_with("//") {
        let after = &rest[2..];
        let authority = after.split('/').next().unwrap_or_default();
        let (userinfo, host) = match authority.rfind('@') {
            Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
            None => (None, authority),
        };
        url.host = go_parse_host(host)?;
        if let Some(userinfo) = userinfo {
            if !go_valid_userinfo(userinfo) {
                return Err(Fault::InvalidUserinfo);
            }
            go_unescape(userinfo, EscapeMode::UserPassword)?;
            url.has_credentials = true;
        }
    }
    Ok(url)
}

/// Go's `getScheme`.
fn go_get_scheme(raw: &str) -> Result<(&str, &str), Fault> {
    for (i, c) in raw.bytes().enumerate() {
        match c {
            b'a'..=b'z' | b'A'..=b'Z' => {}
            b'0'..=b'9' | b'+' | b'-' | b'.' => {
                if i == 0 {
                    return Ok(("", raw));
                }
            }
            b':' => {
                if i == 0 {
                    return Err(Fault::MissingScheme);
                }
                return Ok((&raw[..i], &raw[i + 1..]));
            }
            _ => return Ok(("", raw)),
        }
    }
    Ok(("", raw))
}

/// Go's `parseHost`: validates the optional port and unescapes the host.
fn go_parse_host(host: &str) -> Result<String, Fault> {
    if host.starts_with('[') {
        let close = host.rfind(']').ok_or(Fault::MissingBracket)?;
        if !go_valid_optional_port(&host[close + 1..]) {
            return Err(Fault::InvalidPort);
        }
        // Go 1.25.2+ (CVE-2025-47912) only allows an IPv6 literal in brackets.
        let inside = &host[1..close];
        let addr = inside.split('%').next().unwrap_or_default();
        if addr.parse::<Ipv6Addr>().is_err() {
            return Err(Fault::InvalidHost);
        }
        if let Some(zone) = host[..close].find("%25") {
            let mut out = go_unescape(&host[..zone], EscapeMode::Host)?;
            out.push_str(&go_unescape(&host[zone..close], EscapeMode::Zone)?);
            out.push_str(&go_unescape(&host[close..], EscapeMode::Host)?);
            return Ok(out);
        }
    } else if let Some(colon) = host.rfind(':') {
        if !go_valid_optional_port(&host[colon..]) {
            return Err(Fault::InvalidPort);
        }
    }
    go_unescape(host, EscapeMode::Host)
}

/// Go's `validOptionalPort`: empty, or `:` followed by digits only.
fn go_valid_optional_port(port: &str) -> bool {
    match port.strip_prefix(':') {
        None => port.is_empty(),
        Some(digits) => digits.bytes().all(|b| b.is_ascii_digit()),
    }
}

/// Go's `net/url` `splitHostPort` (used by `Hostname()` and `Port()`).
fn go_split_host_port(host_port: &str) -> (&str, &str) {
    let (mut host, mut port) = (host_port, "");
    if let Some(colon) = host.rfind(':') {
        if go_valid_optional_port(&host[colon..]) {
            port = &host[colon + 1..];
            host = &host[..colon];
        }
    }
    if host.len() >= 2 && host.starts_with('[') && host.ends_with(']') {
        host = &host[1..host.len() - 1];
    }
    (host, port)
}

/// Go's `validUserinfo`.
fn go_valid_userinfo(s: &str) -> bool {
    s.bytes().all(|c| {
        c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'-' | b'.'
                    | b'_'
                    | b':'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b'%'
                    | b'@'
            )
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum EscapeMode {
    Host,
    Zone,
    UserPassword,
}

/// Go's `shouldEscape(c, encodeHost)` for ASCII `c`: characters that may
/// not appear literally in a host.
fn go_host_should_escape(c: u8) -> bool {
    !(c.is_ascii_alphanumeric()
        || matches!(
            c,
            b'-' | b'_'
                | b'.'
                | b'~'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'['
                | b']'
                | b'<'
                | b'>'
                | b'"'
        ))
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Go's `unescape` for the host, zone and userinfo modes.
fn go_unescape(s: &str, mode: EscapeMode) -> Result<String, Fault> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'%' {
            let (Some(&h), Some(&l)) = (b.get(i + 1), b.get(i + 2)) else {
                return Err(Fault::InvalidEscape);
            };
            let (Some(hv), Some(lv)) = (hex_val(h), hex_val(l)) else {
                return Err(Fault::InvalidEscape);
            };
            let is_pct25 = &b[i..i + 3] == b"%25";
            let v = (hv << 4) | lv;
            // Host: only escapes of non-ASCII bytes (IDNs) and %25 are
            // allowed. Zone: anything a host could hold, plus space.
            if mode == EscapeMode::Host && hv < 8 && !is_pct25 {
                return Err(Fault::InvalidEscape);
            }
            if mode == EscapeMode::Zone
                && !is_pct25
                && v != b' '
                && v < 0x80
                && go_host_should_escape(v)
            {
                return Err(Fault::InvalidEscape);
            }
            out.push(v);
            i += 3;
        } else {
            if mode != EscapeMode::UserPassword && c < 0x80 && go_host_should_escape(c) {
                return Err(Fault::InvalidHost);
            }
            out.push(c);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| Fault::InvalidHost)
}

/// curl's and Python's parsing, which only differ in the accepted schemes
/// and default ports: a scheme is recognised only before `://`; without one
/// the proxy is http.
fn parse_lenient(value: &str, rules: Rules) -> Result<ProxyUrl, Fault> {
    if value.is_empty() {
        return Err(Fault::Empty);
    }
    if value.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return Err(Fault::ControlCharacter);
    }
    let (scheme, rest) = match value.find("://") {
        Some(i) if is_scheme(&value[..i]) => (value[..i].to_ascii_lowercase(), &value[i + 3..]),
        _ => ("http".to_owned(), value),
    };
    let default_port: fn(&str) -> Option<u16> = match rules {
        Rules::Curl => |s| match s {
            "https" => Some(443),
            "http" | "socks" | "socks4" | "socks4a" | "socks5" | "socks5h" => Some(1080),
            _ => None,
        },
        Rules::Python | Rules::Go => |s| match s {
            "http" => Some(80),
            "https" => Some(443),
            "socks4" | "socks4a" | "socks5" | "socks5h" => Some(1080),
            _ => None,
        },
    };
    if default_port(&scheme).is_none() {
        return Err(Fault::UnsupportedScheme(scheme));
    }
    let authority = rest
        .split(['/', '?', '#'])
        .next()
        .unwrap_or_default();
    let (has_credentials, host_port) = match authority.rfind('@') {
        Some(at) => (true, &authority[at + 1..]),
        None => (false, authority),
    };
    let bracketed = host_port.starts_with('[');
    let (host, port) = if let Some(inner) = host_port.strip_prefix('[') {
        let close = inner.find(']').ok_or(Fault::MissingBracket)?;
        let after = &inner[close + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => p,
            None if after.is_empty() => "",
            None => return Err(Fault::InvalidPort),
        };
        if parse_ip_ignoring_zone(&inner[..close]).is_none() {
            return Err(Fault::InvalidHost);
        }
        (&inner[..close], port)
    } else {
        match host_port.rfind(':') {
            Some(colon) => (&host_port[..colon], &host_port[colon + 1..]),
            None => (host_port, ""),
        }
    };
    if !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Fault::InvalidPort);
    }
    // A bracketed host was checked as an IP literal above. Elsewhere reject
    // what no resolver accepts: blanks, a second colon (an unbracketed IPv6
    // address) and URL delimiters.
    if !bracketed
        && host.bytes().any(|b| {
            b.is_ascii_whitespace()
                || matches!(
                    b,
                    b':' | b'[' | b']' | b'<' | b'>' | b'"' | b'\\' | b'{' | b'}' | b'|' | b'^' | b'`'
                )
        })
    {
        return Err(Fault::InvalidHost);
    }
    Parts {
        scheme,
        has_credentials,
        host: host.to_owned(),
        port: port.to_owned(),
    }
    .finish(default_port)
}

/// RFC 3986 scheme syntax: a letter, then letters, digits, `+`, `-`, `.`.
fn is_scheme(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(c) if c.is_ascii_alphabetic())
        && bytes.all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.'))
}

/// Parses an IP literal, ignoring an IPv6 zone (`fe80::1%eth0`) the way Go's
/// `netip.ParseAddr` + `AsSlice` does.
fn parse_ip_ignoring_zone(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    let (addr, zone) = s.split_once('%')?;
    if zone.is_empty() {
        return None;
    }
    addr.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
}

// ---------------------------------------------------------------------------
// Redaction
// ---------------------------------------------------------------------------

/// Redacts the credentials of a string known to be one proxy value: all of
/// it between `://` (or the start) and the last `@`.
///
/// The last `@` is used because Go, curl and Python all split the authority
/// at the last `@`, and a password may itself contain `@`, `/` or `#`.
fn redact_value(value: &str) -> String {
    let Some(at) = value.rfind('@') else {
        return value.to_owned();
    };
    let start = match value.find("://") {
        Some(i) if i + 3 <= at => i + 3,
        _ => 0,
    };
    format!("{}{REDACTED}{}", &value[..start], &value[at..])
}

/// Redacts credentials from any text that may contain URLs, such as an error
/// message about to be logged.
///
/// Per line: after each `://`, everything up to the last `@` before the next
/// `://` (or the end of the line) becomes `REDACTED`; in the text before the
/// first `://`, each whitespace-separated word holding an `@` (a scheme-less
/// `user:pass@host:port`) is redacted up to its last `@`. This errs towards
/// hiding too much: an e-mail address becomes `REDACTED@example.com`, and a
/// URL followed later on the same line by an unrelated `@` loses the text in
/// between. A password containing unescaped whitespace in a scheme-less value
/// is the one case that can leak a fragment.
pub fn redact(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for line in s.split_inclusive('\n') {
        let Some(first) = line.find("://") else {
            redact_words(line, &mut out);
            continue;
        };
        redact_words(&line[..first], &mut out);
        let mut pos = first;
        while let Some(rel) = line[pos..].find("://") {
            let start = pos + rel + 3;
            out.push_str(&line[pos..start]);
            let end = line[start..]
                .find("://")
                .map_or(line.len(), |next| start + next);
            let region = &line[start..end];
            match region.rfind('@') {
                Some(at) => {
                    out.push_str(REDACTED);
                    out.push_str(&region[at..]);
                }
                None => out.push_str(region),
            }
            pos = end;
        }
        out.push_str(&line[pos..]);
    }
    out
}

/// The scheme-less half of [`redact`].
fn redact_words(text: &str, out: &mut String) {
    let mut rest = text;
    while !rest.is_empty() {
        let word_start = rest
            .find(|c: char| !c.is_whitespace())
            .unwrap_or(rest.len());
        out.push_str(&rest[..word_start]);
        rest = &rest[word_start..];
        let word_end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let word = &rest[..word_end];
        match word.rfind('@') {
            Some(at) => {
                // Keep opening quotes/brackets so the message stays readable.
                let keep = word
                    .find(|c: char| !matches!(c, '"' | '\'' | '(' | '[' | '<' | '{' | '`'))
                    .unwrap_or(word.len())
                    .min(at);
                out.push_str(&word[..keep]);
                out.push_str(REDACTED);
                out.push_str(&word[at..]);
            }
            None => out.push_str(word),
        }
        rest = &rest[word_end..];
    }
}

// ---------------------------------------------------------------------------
// Choosing the proxy variable
// ---------------------------------------------------------------------------

/// The proxy a request would be sent through, and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyChoice {
    /// Exact name of the variable the value was taken from, e.g.
    /// `"HTTPS_PROXY"`.
    pub variable: &'static str,
    /// The parsed proxy.
    pub url: ProxyUrl,
    /// The request scheme this choice is for.
    pub for_scheme: RequestScheme,
    /// Whose rules made the choice.
    pub rules: Rules,
    /// Go's CGI rule: `REQUEST_METHOD` is set and this is the http proxy, so
    /// `net/http` fails the request ("refusing to use HTTP_PROXY value in CGI
    /// environment; see golang.org/s/cgihttpproxy") and dials nothing. Applies
    /// whichever case of the variable was used. Only ever set for
    /// [`Rules::Go`]; Python instead ignores upper-case `HTTP_PROXY`.
    pub cgi_refused: bool,
}

/// The chosen variable held a value that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}: {source}")]
pub struct SelectError {
    /// Exact name of the variable.
    pub variable: &'static str,
    /// The parse failure (value redacted).
    #[source]
    pub source: ProxyUrlError,
}

/// Python's view of one proxy kind after `getproxies_environment`: a
/// non-empty upper-case value, unless the lower-case variable is present, in
/// which case it wins if non-empty and removes the entry if empty. In a CGI
/// environment (`REQUEST_METHOD` present) upper-case `HTTP_PROXY` is dropped.
fn python_pick(env: &ProxyEnv, lower: ProxyVar, upper: ProxyVar) -> Option<ProxyVar> {
    match env.get_var(lower) {
        Some("") => None,
        Some(_) => Some(lower),
        None => {
            if upper == ProxyVar::HttpUpper && env.request_method_present {
                None
            } else {
                env.non_empty(upper).map(|_| upper)
            }
        }
    }
}

/// First variable in `order` with a non-empty value.
fn first_non_empty(env: &ProxyEnv, order: &[ProxyVar]) -> Option<ProxyVar> {
    order.iter().copied().find(|&v| env.non_empty(v).is_some())
}

/// The variable a client reads its proxy from for a request of `scheme`.
fn pick_variable(env: &ProxyEnv, scheme: RequestScheme, rules: Rules) -> Option<ProxyVar> {
    use ProxyVar::*;
    match (rules, scheme) {
        // getEnvAny("HTTPS_PROXY", "https_proxy"): first non-empty; no
        // fallback to HTTP_PROXY and no ALL_PROXY in net/http.
        (Rules::Go, RequestScheme::Https) => first_non_empty(env, &[HttpsUpper, HttpsLower]),
        (Rules::Go, RequestScheme::Http) => first_non_empty(env, &[HttpUpper, HttpLower]),
        // proxy_detect_proxy: http_proxy in lower case only (httpoxy
        // guard), https lower then upper, then all_proxy, ALL_PROXY.
        (Rules::Curl, RequestScheme::Http) => first_non_empty(env, &[HttpLower, AllLower, AllUpper]),
        (Rules::Curl, RequestScheme::Https) => {
            first_non_empty(env, &[HttpsLower, HttpsUpper, AllLower, AllUpper])
        }
        // requests' select_proxy: the scheme's entry, else "all".
        (Rules::Python, RequestScheme::Http) => python_pick(env, HttpLower, HttpUpper)
            .or_else(|| python_pick(env, AllLower, AllUpper)),
        (Rules::Python, RequestScheme::Https) => python_pick(env, HttpsLower, HttpsUpper)
            .or_else(|| python_pick(env, AllLower, AllUpper)),
    }
}

/// The proxy a client with `env` would use for requests of `scheme`,
/// ignoring NO_PROXY and the destination. `None` when no variable applies;
/// `Some(Err)` when the chosen variable does not parse (Go then sends
/// requests directly; curl and Python fail them).
pub fn select_proxy(
    env: &ProxyEnv,
    scheme: RequestScheme,
    rules: Rules,
) -> Option<Result<ProxyChoice, SelectError>> {
    let var = pick_variable(env, scheme, rules)?;
    let value = env.get_var(var)?;
    Some(
        parse_proxy_url(value, rules)
            .map(|url| ProxyChoice {
                variable: var.name(),
                url,
                for_scheme: scheme,
                rules,
                cgi_refused: rules == Rules::Go
                    && scheme == RequestScheme::Http
                    && env.request_method_set,
            })
            .map_err(|source| SelectError {
                variable: var.name(),
                source,
            }),
    )
}

/// Every proxy the process could dial, for https and then http requests,
/// each with the variable that set it, so a connect to any of them can be
/// recognised. The same endpoint appears twice when two variables name it
/// (e.g. `HTTP_PROXY` and `HTTPS_PROXY` equal); an entry is dropped only when
/// both variable and URL repeat (curl/Python `ALL_PROXY` serving both
/// schemes). Values that do not parse are left out (see [`select_proxy`]).
/// Under Go's CGI rule the http entry is kept with `cgi_refused` set.
pub fn proxy_endpoints(env: &ProxyEnv, rules: Rules) -> Vec<ProxyChoice> {
    let mut out: Vec<ProxyChoice> = Vec::new();
    for scheme in [RequestScheme::Https, RequestScheme::Http] {
        if let Some(Ok(choice)) = select_proxy(env, scheme, rules) {
            if !out
                .iter()
                .any(|c| c.variable == choice.variable && c.url == choice.url)
            {
                out.push(choice);
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------
// NO_PROXY
// ---------------------------------------------------------------------------

/// A parsed NO_PROXY list.
///
/// [`NoProxy::parse`] gives Go semantics (`httpproxy` `config.init` and
/// `useProxy`); [`NoProxy::parse_for`] also knows curl's
/// (`proxy_check_noproxy`) and Python's (`requests.should_bypass_proxies` +
/// `urllib.proxy_bypass_environment`). Parsing never fails: like all three
/// clients, malformed entries are ignored or simply never match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoProxy {
    rules: Rules,
    /// `*`: never proxy.
    all: bool,
    go_ips: Vec<GoIpMatch>,
    go_domains: Vec<GoDomainMatch>,
    /// curl / Python: the raw entries, interpreted at match time.
    tokens: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum GoIpMatch {
    /// Network address (masked) and prefix length, IPv4-mapped networks
    /// folded to IPv4 the way `net.IPNet.Contains` treats them.
    Cidr(IpAddr, u8),
    /// Address plus the literal port string (empty: any port).
    Ip(IpAddr, String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct GoDomainMatch {
    /// Always starts with `.`.
    suffix: String,
    port: String,
    /// The entry had no leading `.`/`*.`, so the bare domain matches too.
    match_host: bool,
}

impl NoProxy {
    /// Parses a NO_PROXY value with Go semantics: comma-separated, each entry
    /// trimmed and lower-cased, empty entries ignored; `*` alone means never
    /// proxy; CIDRs (v4 and v6) match literal IP hosts only; an IP may carry
    /// a port (`1.2.3.4:80`, `[::1]:80`); `foo.com` matches itself and its
    /// subdomains, `.foo.com` and `*.foo.com` only subdomains; `:port`
    /// restricts a domain; non-ASCII names are converted to punycode.
    pub fn parse(value: &str) -> Self {
        Self::parse_for(value, Rules::Go)
    }

    /// Parses a NO_PROXY value as the client named by `rules` would.
    pub fn parse_for(value: &str, rules: Rules) -> Self {
        let mut np = NoProxy {
            rules,
            all: false,
            go_ips: Vec::new(),
            go_domains: Vec::new(),
            tokens: Vec::new(),
        };
        match rules {
            Rules::Go => np.init_go(value),
            Rules::Curl => {
                // proxy_check_noproxy: "*" only when it is the whole value.
                np.all = value == "*";
                np.tokens = curl_tokens(value);
            }
            Rules::Python => {
                // proxy_bypass_environment: `no_proxy == '*'`.
                np.all = value == "*";
                np.tokens = value
                    .split(',')
                    .map(|t| t.trim().to_owned())
                    .filter(|t| !t.is_empty())
                    .collect();
            }
        }
        np
    }

    /// Go's `config.init` NO_PROXY loop.
    fn init_go(&mut self, value: &str) {
        for entry in value.split(',') {
            let p = entry.trim().to_lowercase();
            if p.is_empty() {
                continue;
            }
            if p == "*" {
                self.all = true;
                return;
            }
            if let Some(cidr) = go_parse_cidr(&p) {
                self.go_ips.push(cidr);
                continue;
            }
            let (phost, pport) = match go_net_split_host_port(&p) {
                Some((h, port)) => {
                    if h.is_empty() {
                        continue;
                    }
                    (h.to_owned(), port.to_owned())
                }
                None => (p.clone(), String::new()),
            };
            // net.ParseIP: no zone allowed.
            if let Ok(ip) = phost.parse::<IpAddr>() {
                self.go_ips.push(GoIpMatch::Ip(unmap(ip), pport));
                continue;
            }
            let mut phost = phost.as_str();
            if phost.starts_with("*.") {
                phost = &phost[1..];
            }
            let (match_host, bare) = match phost.strip_prefix('.') {
                Some(rest) => (false, rest),
                None => (true, phost),
            };
            // idnaASCII on the entry; on error Go keeps the original.
            let suffix = format!(".{}", idna_ascii(bare).unwrap_or_else(|| bare.to_owned()));
            self.go_domains.push(GoDomainMatch {
                suffix,
                port: pport,
                match_host,
            });
        }
    }

    /// Whether a request to `host:port` bypasses the proxy. Under Go rules
    /// this includes Go's fixed rule that `localhost` and loopback addresses
    /// are never proxied (`useProxy` returns false), whatever NO_PROXY says;
    /// curl and Python have no such rule. `host` may be bracketed (`[::1]`)
    /// and non-ASCII.
    pub fn matches(&self, host: &str, port: u16) -> bool {
        (self.rules == Rules::Go && is_always_direct(host)) || self.matches_list(host, port)
    }

    /// Whether the NO_PROXY entries themselves exclude `host:port`, without
    /// Go's localhost/loopback rule.
    pub fn matches_list(&self, host: &str, port: u16) -> bool {
        if self.all {
            return true;
        }
        match self.rules {
            Rules::Go => self.matches_go(host, port),
            Rules::Curl => self.matches_curl(host),
            Rules::Python => self.matches_python(host, port),
        }
    }

    /// True when no entry was parsed (nothing can match).
    pub fn is_empty(&self) -> bool {
        !self.all && self.go_ips.is_empty() && self.go_domains.is_empty() && self.tokens.is_empty()
    }

    fn matches_go(&self, host: &str, port: u16) -> bool {
        let host = go_request_host(host);
        let ip = parse_ip_ignoring_zone(&host).map(unmap);
        let addr = host.trim().to_lowercase();
        let port = port.to_string();
        if let Some(ip) = ip {
            return self.go_ips.iter().any(|m| match m {
                GoIpMatch::Cidr(net, prefix) => in_network(ip, *net, *prefix),
                GoIpMatch::Ip(want, want_port) => {
                    *want == ip && (want_port.is_empty() || *want_port == port)
                }
            });
        }
        // Domain entries never match an IP host (CVE-2025-22870 fix).
        self.go_domains.iter().any(|m| {
            (addr.ends_with(&m.suffix) || (m.match_host && addr == m.suffix[1..]))
                && (m.port.is_empty() || m.port == port)
        })
    }

    fn matches_curl(&self, host: &str) -> bool {
        let name = strip_brackets(host);
        if name.is_empty() {
            return false;
        }
        let ip = name.parse::<IpAddr>().ok();
        let name = match ip {
            Some(_) => name,
            // Trailing dots in the host name are ignored.
            None => name.strip_suffix('.').unwrap_or(name),
        };
        self.tokens.iter().any(|token| match ip {
            None => curl_match_host(token, name),
            Some(ip) => curl_match_ip(token, ip),
        })
    }

    fn matches_python(&self, host: &str, port: u16) -> bool {
        // urlparse(...).hostname is lower-cased and unbracketed.
        let host = strip_brackets(host).to_lowercase();
        // requests only appends a port that was written in the URL; we take a
        // scheme-default port as not written.
        let with_port = if port == 80 || port == 443 {
            host.clone()
        } else {
            format!("{host}:{port}")
        };
        let v4 = host.parse::<Ipv4Addr>().ok();
        self.tokens.iter().any(|token| {
            // requests: entries with all spaces removed.
            let entry: String = token.chars().filter(|c| *c != ' ').collect();
            let requests_match = match v4 {
                Some(ip) => match python_cidr(&entry) {
                    Some((net, prefix)) => in_network(IpAddr::V4(ip), IpAddr::V4(net), prefix),
                    None => host == entry,
                },
                // Plain string suffix, so "example.com" also matches
                // "badexample.com" (a known requests quirk).
                None => !entry.is_empty() && (host.ends_with(&entry) || with_port.ends_with(&entry)),
            };
            // urllib.proxy_bypass_environment: leading dots stripped, exact or
            // dot-suffix match, case-insensitive.
            let name = token.trim_start_matches('.').to_lowercase();
            let urllib_match = !name.is_empty()
                && (host == name || host.ends_with(&format!(".{name}")));
            requests_match || urllib_match
        })
    }
}

/// Go's fixed rule: `localhost` (exactly, after IDNA) and loopback IP
/// literals are never proxied.
fn is_always_direct(host: &str) -> bool {
    let host = go_request_host(host);
    host == "localhost" || parse_ip_ignoring_zone(&host).is_some_and(|ip| unmap(ip).is_loopback())
}

/// The host as Go's `canonicalAddr` sees it: brackets removed, punycode if
/// non-ASCII (on error the original is kept).
fn go_request_host(host: &str) -> String {
    let host = strip_brackets(host);
    idna_ascii(host).unwrap_or_else(|| host.to_owned())
}

fn strip_brackets(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// Go's `idnaASCII`: ASCII passes unchanged; otherwise `idna.Lookup.ToASCII`
/// (UTS #46 non-transitional, STD3 rules, hyphen checks, no DNS length
/// check). `None` on failure.
fn idna_ascii(s: &str) -> Option<String> {
    if s.is_ascii() {
        return Some(s.to_owned());
    }
    idna::uts46::Uts46::new()
        .to_ascii(
            s.as_bytes(),
            idna::uts46::AsciiDenyList::STD3,
            idna::uts46::Hyphens::Check,
            idna::uts46::DnsLength::Ignore,
        )
        .ok()
        .map(|cow| cow.into_owned())
}

/// IPv4-mapped IPv6 addresses compare as IPv4, as with Go's `net.IP`.
fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// `ip` is inside `net/prefix` (same family only).
fn in_network(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// Go's `net.ParseCIDR` as `IPNet.Contains` later sees it.
fn go_parse_cidr(s: &str) -> Option<GoIpMatch> {
    let (addr, bits) = s.split_once('/')?;
    // netip.ParseAddr, zones rejected.
    let ip = addr.parse::<IpAddr>().ok()?;
    // Go's dtoi: decimal digits only (leading zeros allowed).
    if bits.is_empty() || !bits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let bits = u8::try_from(bits.parse::<u32>().ok()?).ok()?;
    match ip {
        IpAddr::V4(_) if bits > 32 => None,
        IpAddr::V6(_) if bits > 128 => None,
        IpAddr::V4(_) => Some(GoIpMatch::Cidr(ip, bits)),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            // An IPv4-mapped network is compared on its last 4 bytes with the
            // last 32 bits of the mask.
            Some(v4) => Some(GoIpMatch::Cidr(IpAddr::V4(v4), bits.saturating_sub(96))),
            None => Some(GoIpMatch::Cidr(ip, bits)),
        },
    }
}

/// Go's `net.SplitHostPort`; `None` where Go returns an error.
fn go_net_split_host_port(hostport: &str) -> Option<(&str, &str)> {
    let i = hostport.rfind(':')?;
    let (host, j, k) = if hostport.starts_with('[') {
        let end = hostport.find(']')?;
        if end + 1 != i {
            // "missing port" or "too many colons".
            return None;
        }
        (&hostport[1..end], 1, end + 1)
    } else {
        let host = &hostport[..i];
        if host.contains(':') {
            return None;
        }
        (host, 0, 0)
    };
    if hostport[j..].contains('[') || hostport[k..].contains(']') {
        return None;
    }
    Some((host, &hostport[i + 1..]))
}

/// curl's tokenizer: blanks and commas separate; a token followed by blanks
/// and then anything but a comma ends the list.
fn curl_tokens(value: &str) -> Vec<String> {
    let is_blank = |c: char| c == ' ' || c == '\t';
    let mut out = Vec::new();
    let mut rest = value;
    loop {
        rest = rest.trim_start_matches(is_blank);
        let end = rest
            .find(|c: char| is_blank(c) || c == ',')
            .unwrap_or(rest.len());
        if end > 0 {
            out.push(rest[..end].to_owned());
        }
        rest = rest[end..].trim_start_matches(is_blank);
        if !rest.starts_with(',') {
            break;
        }
        rest = rest.trim_start_matches(',');
    }
    out
}

/// curl's `match_host`: one trailing and one leading dot of the token are
/// ignored; exact or `.`-bounded tail match, case-insensitive.
fn curl_match_host(token: &str, name: &str) -> bool {
    let token = token.strip_suffix('.').unwrap_or(token);
    let token = token.strip_prefix('.').unwrap_or(token);
    let (t, n) = (token.as_bytes(), name.as_bytes());
    if t.len() == n.len() {
        t.eq_ignore_ascii_case(n)
    } else if t.len() < n.len() {
        let cut = n.len() - t.len();
        n[cut - 1] == b'.' && t.eq_ignore_ascii_case(&n[cut..])
    } else {
        false
    }
}

/// curl's `match_ip` with `cidr4_match` / `cidr6_match`, quirks included:
/// an IPv4 entry with `/0` (or no prefix) is an exact match, an IPv6 `/0`
/// means `/128`.
fn curl_match_ip(token: &str, ip: IpAddr) -> bool {
    if token.len() >= 128 {
        return false;
    }
    let (network, bits) = match token.split_once('/') {
        Some((net, bits)) => match bits.parse::<u32>() {
            Ok(b) if b <= 128 && bits.bytes().all(|c| c.is_ascii_digit()) => (net, b),
            _ => return false,
        },
        None => (token, 0),
    };
    match ip {
        IpAddr::V4(a) => {
            let Ok(n) = network.parse::<Ipv4Addr>() else {
                return false;
            };
            match bits {
                0 | 32 => a == n,
                1..=31 => in_network(IpAddr::V4(a), IpAddr::V4(n), bits as u8),
                _ => false,
            }
        }
        IpAddr::V6(a) => {
            let Ok(n) = network.parse::<Ipv6Addr>() else {
                return false;
            };
            let bits = if bits == 0 { 128 } else { bits };
            in_network(IpAddr::V6(a), IpAddr::V6(n), bits as u8)
        }
    }
}

/// requests' `is_valid_cidr`: IPv4 only, prefix 1..=32.
fn python_cidr(entry: &str) -> Option<(Ipv4Addr, u8)> {
    let (net, mask) = entry.split_once('/')?;
    let mask: u8 = mask.parse().ok()?;
    if !(1..=32).contains(&mask) {
        return None;
    }
    Some((net.parse().ok()?, mask))
}

// ---------------------------------------------------------------------------
// Putting it together
// ---------------------------------------------------------------------------

/// Why a request goes out directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirectReason {
    /// No proxy variable applies to the request's scheme.
    NoProxyConfigured,
    /// Go never proxies `localhost` or loopback addresses.
    Loopback,
    /// The named NO_PROXY variable excludes the destination.
    NoProxyMatch {
        /// Exact variable name, e.g. `"NO_PROXY"`.
        variable: &'static str,
    },
}

/// What a client does with a request, given its environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Connects to the destination itself.
    Direct(DirectReason),
    /// Connects to this proxy.
    Proxy(ProxyChoice),
    /// Go's CGI rule: the request fails before any connection.
    CgiRefused(ProxyChoice),
    /// The chosen proxy value does not parse. Go's `net/http` ignores it and
    /// connects directly; curl and Python fail the request.
    InvalidProxy(SelectError),
}

impl Route {
    /// The proxy, when the request goes through one.
    pub fn proxy(&self) -> Option<&ProxyChoice> {
        match self {
            Route::Proxy(choice) => Some(choice),
            _ => None,
        }
    }
}

/// The NO_PROXY variable in effect and its value.
fn no_proxy_variable(env: &ProxyEnv, rules: Rules) -> Option<(ProxyVar, &str)> {
    use ProxyVar::{NoLower, NoUpper};
    let order: &[ProxyVar] = match rules {
        // getEnvAny("NO_PROXY", "no_proxy").
        Rules::Go => &[NoUpper, NoLower],
        // curl: no_proxy then NO_PROXY; requests: os.environ.get("no_proxy")
        // or os.environ.get("NO_PROXY").
        Rules::Curl | Rules::Python => &[NoLower, NoUpper],
    };
    let var = first_non_empty(env, order)?;
    env.get_var(var).map(|value| (var, value))
}

/// What a client with `env` does with a request for `scheme://host:port`.
///
/// Go (`proxyForURL`): pick the scheme's proxy; an unparsable value means
/// direct; the CGI refusal comes next (before NO_PROXY, so it hits even
/// `localhost`); then `localhost`/loopback, then NO_PROXY. curl and Python
/// consult NO_PROXY before looking at the proxy value.
pub fn route(env: &ProxyEnv, scheme: RequestScheme, host: &str, port: u16, rules: Rules) -> Route {
    let Some(selected) = select_proxy(env, scheme, rules) else {
        return Route::Direct(DirectReason::NoProxyConfigured);
    };
    let no_proxy_hit = || {
        let (var, value) = no_proxy_variable(env, rules)?;
        NoProxy::parse_for(value, rules)
            .matches_list(host, port)
            .then_some(DirectReason::NoProxyMatch {
                variable: var.name(),
            })
    };
    if rules != Rules::Go {
        if let Some(reason) = no_proxy_hit() {
            return Route::Direct(reason);
        }
    }
    let choice = match selected {
        Ok(choice) => choice,
        Err(e) => return Route::InvalidProxy(e),
    };
    if choice.cgi_refused {
        return Route::CgiRefused(choice);
    }
    if rules == Rules::Go {
        if is_always_direct(host) {
            return Route::Direct(DirectReason::Loopback);
        }
        if let Some(reason) = no_proxy_hit() {
            return Route::Direct(reason);
        }
    }
    Route::Proxy(choice)
}

/// The proxy a client with `env` sends a request for `scheme://host:port`
/// through, or `None` when it connects directly or never sends it (see
/// [`route`] for the reason).
pub fn proxy_for(
    env: &ProxyEnv,
    scheme: RequestScheme,
    host: &str,
    port: u16,
    rules: Rules,
) -> Option<ProxyChoice> {
    match route(env, scheme, host, port, rules) {
        Route::Proxy(choice) => Some(choice),
        _ => None,
    }
}
