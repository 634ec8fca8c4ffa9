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
            let Some(eq) = entry.iter().take(MAX_KEY_LEN + 1).position(|&b| b == b'=') else {
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
        self.vars
            .iter()
            .map(|(var, value)| (var.name(), value.as_str()))
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
    /// Go only: the value was written as `scheme://...` but did not parse
    /// (bad port, bad host character, ...), so Go re-read it as `http://` +
    /// value, which takes the value's own scheme as the host: `http://proxy:abc`
    /// becomes host `http`, port 80, and Go then dials that ("lookup http: no
    /// such host"). The same mechanism once turned `socks5h://` into a host
    /// named `socks5h` (golang/go#24135).
    pub misparsed: bool,
}

impl ProxyUrl {
    /// `scheme://host:port`, with `REDACTED@` where credentials were.
    pub fn redacted(&self) -> String {
        format!(
            "{}://{}{}",
            self.scheme,
            if self.has_credentials {
                "REDACTED@"
            } else {
                ""
            },
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
            self.port
                .parse::<u16>()
                .map_err(|_| Fault::PortOutOfRange)?
        };
        Ok(ProxyUrl {
            scheme: self.scheme,
            host: self.host.to_ascii_lowercase(),
            port,
            has_credentials: self.has_credentials,
            misparsed: false,
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
    let (parsed, retried) = match first {
        Ok(ref u) if !u.scheme.is_empty() && !u.host.is_empty() => (first, false),
        _ => match go_url_parse(&format!("http://{value}")) {
            Ok(u) => (Ok(u), true),
            Err(_) => (first, false),
        },
    };
    let parsed = parsed?;
    let (hostname, port) = go_split_host_port(&parsed.host);
    let mut url = Parts {
        scheme: parsed.scheme,
        has_credentials: parsed.has_credentials,
        host: hostname.to_owned(),
        port: port.to_owned(),
    }
    .finish(go_default_port)?;
    // A retry is normal for "host:port"; after an explicit "scheme://" it
    // means the real host was lost.
    url.misparsed = retried && value.find("://").is_some_and(|i| is_scheme(&value[..i]));
    Ok(url)
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
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
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
                    b':' | b'['
                        | b']'
                        | b'<'
                        | b'>'
                        | b'"'
                        | b'\\'
                        | b'{'
                        | b'}'
                        | b'|'
                        | b'^'
                        | b'`'
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
        (Rules::Curl, RequestScheme::Http) => {
            first_non_empty(env, &[HttpLower, AllLower, AllUpper])
        }
        (Rules::Curl, RequestScheme::Https) => {
            first_non_empty(env, &[HttpsLower, HttpsUpper, AllLower, AllUpper])
        }
        // requests' select_proxy: the scheme's entry, else "all".
        (Rules::Python, RequestScheme::Http) => {
            python_pick(env, HttpLower, HttpUpper).or_else(|| python_pick(env, AllLower, AllUpper))
        }
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
                None => {
                    !entry.is_empty() && (host.ends_with(&entry) || with_port.ends_with(&entry))
                }
            };
            // urllib.proxy_bypass_environment: leading dots stripped, exact or
            // dot-suffix match, case-insensitive.
            let name = token.trim_start_matches('.').to_lowercase();
            let urllib_match =
                !name.is_empty() && (host == name || host.ends_with(&format!(".{name}")));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> ProxyEnv {
        ProxyEnv::from_pairs(pairs.iter().copied())
    }

    fn url(value: &str, rules: Rules) -> ProxyUrl {
        parse_proxy_url(value, rules).unwrap()
    }

    fn chosen(
        env: &ProxyEnv,
        scheme: RequestScheme,
        rules: Rules,
    ) -> Option<(&'static str, String)> {
        select_proxy(env, scheme, rules).map(|r| {
            let c = r.unwrap();
            (c.variable, c.url.redacted())
        })
    }

    fn no_proxy_hit(value: &str, host: &str, port: u16) -> bool {
        NoProxy::parse(value).matches(host, port)
    }

    /// Deterministic xorshift so the garbage tests are reproducible.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn bytes(&mut self, n: usize, alphabet: &[u8]) -> Vec<u8> {
            (0..n)
                .map(|_| alphabet[(self.next() % alphabet.len() as u64) as usize])
                .collect()
        }
    }

    // --- environ parsing ---------------------------------------------------

    #[test]
    fn environ_keeps_only_proxy_variables() {
        let raw =
            b"PATH=/usr/bin\0HTTPS_PROXY=http://10.0.0.1:7897\0AWS_SECRET_ACCESS_KEY=hunter2\0\
no_proxy=localhost,.svc\0Http_Proxy=mixed\0REQUEST_METHOD=GET\0all_proxy=socks5://s:1080\0";
        let e = ProxyEnv::from_environ(raw);
        assert_eq!(e.get("HTTPS_PROXY"), Some("http://10.0.0.1:7897"));
        assert_eq!(e.get("no_proxy"), Some("localhost,.svc"));
        assert_eq!(e.get("all_proxy"), Some("socks5://s:1080"));
        assert_eq!(e.get("https_proxy"), None);
        assert_eq!(e.get("Http_Proxy"), None);
        assert_eq!(e.get("PATH"), None);
        assert_eq!(e.get("REQUEST_METHOD"), None, "its value is never kept");
        assert!(e.request_method_set && e.request_method_present);
        assert!(!e.truncated);
        let names: Vec<_> = e.iter().map(|(k, _)| k).collect();
        assert_eq!(names, ["HTTPS_PROXY", "no_proxy", "all_proxy"]);
        let dbg = format!("{e:?}");
        assert!(!dbg.contains("hunter2") && !dbg.contains("PATH") && !dbg.contains("/usr/bin"));
    }

    #[test]
    fn environ_first_duplicate_wins_and_empty_values_are_kept() {
        let e = ProxyEnv::from_environ(b"HTTP_PROXY=first\0HTTP_PROXY=second\0http_proxy=\0");
        assert_eq!(e.get("HTTP_PROXY"), Some("first"));
        assert_eq!(e.get("http_proxy"), Some(""));
        assert!(!e.is_empty());
        assert!(ProxyEnv::from_environ(b"PATH=/bin\0").is_empty());
    }

    #[test]
    fn environ_request_method_empty_is_present_but_not_set() {
        let e = ProxyEnv::from_environ(b"REQUEST_METHOD=\0");
        assert!(e.request_method_present);
        assert!(!e.request_method_set);
        assert!(e.is_empty());
    }

    #[test]
    fn environ_non_utf8_values_are_converted_lossily() {
        let mut raw = b"X=\xff\xfe\0HTTPS_PROXY=http://pr\xf6xy:3128\0\xc3\x28=bad\0".to_vec();
        raw.extend_from_slice(b"https_proxy=http://ok:1\0");
        let e = ProxyEnv::from_environ(&raw);
        assert_eq!(e.get("HTTPS_PROXY"), Some("http://pr\u{fffd}xy:3128"));
        assert_eq!(e.get("https_proxy"), Some("http://ok:1"));
    }

    #[test]
    fn environ_huge_still_finds_variables() {
        let mut raw = Vec::with_capacity(600 * 1024);
        raw.extend_from_slice(b"http_proxy=http://first:1\0");
        let filler = b"SOME_LONG_VARIABLE_NAME_HERE="
            .iter()
            .chain([b'x'; 200].iter());
        let entry: Vec<u8> = filler.copied().chain([0u8]).collect();
        while raw.len() < 500 * 1024 {
            raw.extend_from_slice(&entry);
        }
        // A single huge value too, with '=' and NULs around it.
        raw.extend_from_slice(b"BLOB=");
        raw.extend(std::iter::repeat_n(b'=', 64 * 1024));
        raw.push(0);
        raw.extend_from_slice(b"HTTPS_PROXY=http://last:2\0NO_PROXY=.corp\0");
        assert!(raw.len() > 500 * 1024);
        let started = std::time::Instant::now();
        let e = ProxyEnv::from_environ(&raw);
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        assert_eq!(e.get("http_proxy"), Some("http://first:1"));
        assert_eq!(e.get("HTTPS_PROXY"), Some("http://last:2"));
        assert_eq!(e.get("NO_PROXY"), Some(".corp"));
        assert_eq!(e.iter().count(), 3);
    }

    #[test]
    fn environ_truncated_last_entry() {
        let e = ProxyEnv::from_environ(b"HTTP_PROXY=http://a:1\0HTTPS_PROXY=http://10.0.0");
        assert!(e.truncated);
        assert_eq!(e.truncated_var, Some("HTTPS_PROXY"));
        assert_eq!(e.get("HTTP_PROXY"), Some("http://a:1"));
        assert_eq!(e.get("HTTPS_PROXY"), Some("http://10.0.0"));

        // Cut inside the key: nothing is invented.
        let e = ProxyEnv::from_environ(b"HTTP_PROXY=http://a:1\0HTTPS_PRO");
        assert!(e.truncated);
        assert_eq!(e.truncated_var, None);
        assert_eq!(e.iter().count(), 1);

        // Cut after an unrelated variable.
        let e = ProxyEnv::from_environ(b"HTTP_PROXY=http://a:1\0PATH=/us");
        assert!(e.truncated && e.truncated_var.is_none());
    }

    #[test]
    fn environ_garbage_never_panics() {
        for raw in [
            &b""[..],
            b"\0",
            b"\0\0\0",
            b"=",
            b"==\0=\0",
            b"HTTP_PROXY",
            b"HTTP_PROXY\0",
            b"HTTP_PROXY=",
            b"REQUEST_METHOD",
            b"no equals sign at all\0still none",
            b"\xff\xff\xff\0\xfe=\xfe\0",
        ] {
            let e = ProxyEnv::from_environ(raw);
            let _ = format!("{e:?}");
        }
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let alphabet = b"\0=HTTPS_PROXYhttps_proxyNO_ALLREQUEST_METHOD:/@[]%\xff\xc3 ";
        for _ in 0..2000 {
            let n = (rng.next() % 300) as usize;
            let raw = rng.bytes(n, alphabet);
            let e = ProxyEnv::from_environ(&raw);
            for (_, v) in e.iter() {
                for rules in [Rules::Go, Rules::Curl, Rules::Python] {
                    let _ = parse_proxy_url(v, rules);
                    let _ = NoProxy::parse_for(v, rules).matches(v, 80);
                    let _ = route(&e, RequestScheme::Https, v, 443, rules);
                }
                let _ = redact(v);
            }
        }
        // Fully random bytes, as from a process that rewrote its environ.
        for _ in 0..500 {
            let n = (rng.next() % 1000) as usize;
            let raw: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            let _ = ProxyEnv::from_environ(&raw);
        }
    }

    #[test]
    fn garbage_strings_never_panic() {
        let mut rng = Rng(42);
        let alphabet = "ab:/@[]%25.*,;# \t\u{fc}\u{793a}0189xn--\u{0}\u{7f}?".as_bytes();
        for _ in 0..5000 {
            let n = (rng.next() % 40) as usize;
            let s = String::from_utf8_lossy(&rng.bytes(n, alphabet)).into_owned();
            for rules in [Rules::Go, Rules::Curl, Rules::Python] {
                if let Err(e) = parse_proxy_url(&s, rules) {
                    let _ = e.to_string();
                }
                let np = NoProxy::parse_for(&s, rules);
                let _ = np.matches(&s, 0);
                let _ = np.matches("example.com", 65535);
            }
            let _ = redact(&s);
            let _ = redact_value(&s);
        }
    }

    // --- proxy URLs --------------------------------------------------------

    #[test]
    fn scheme_less_value_is_http() {
        for rules in [Rules::Go, Rules::Curl, Rules::Python] {
            let u = url("10.0.0.1:7897", rules);
            assert_eq!(u.redacted(), "http://10.0.0.1:7897", "{rules}");
            assert_eq!(u.ip(), Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))));
            assert_eq!(
                url("proxy.corp:3128", rules).redacted(),
                "http://proxy.corp:3128"
            );
        }
        // Single-label names are a "scheme" to url.Parse; Go retries them.
        assert_eq!(
            url("localhost", Rules::Go).redacted(),
            "http://localhost:80"
        );
        let u = url("user:pw@proxy.corp:3128", Rules::Go);
        assert!(u.has_credentials);
        assert_eq!(u.redacted(), "http://REDACTED@proxy.corp:3128");
    }

    #[test]
    fn default_ports() {
        assert_eq!(url("http://p", Rules::Go).port, 80);
        assert_eq!(url("https://p", Rules::Go).port, 443);
        assert_eq!(url("socks5://p", Rules::Go).port, 1080);
        assert_eq!(url("socks5h://p", Rules::Go).port, 1080);
        assert_eq!(url("p", Rules::Go).port, 80);
        // curl documents 1080 for every proxy but https.
        assert_eq!(url("http://p", Rules::Curl).port, 1080);
        assert_eq!(url("p", Rules::Curl).port, 1080);
        assert_eq!(url("https://p", Rules::Curl).port, 443);
        assert_eq!(url("socks5h://p", Rules::Curl).port, 1080);
        assert_eq!(url("http://p", Rules::Python).port, 80);
        assert_eq!(url("https://p", Rules::Python).port, 443);
        assert_eq!(url("socks5://p", Rules::Python).port, 1080);
        // An explicit port always wins; "host:" means default.
        assert_eq!(url("http://p:3128/", Rules::Go).port, 3128);
        assert_eq!(url("http://p:", Rules::Go).port, 80);
    }

    #[test]
    fn go_scheme_handling() {
        let u = url("HTTPS://Proxy.Corp:8443/path?q#f", Rules::Go);
        assert_eq!(
            (u.scheme.as_str(), u.host.as_str(), u.port),
            ("https", "proxy.corp", 8443)
        );
        // Any scheme is kept (x/net "allow any scheme"); without a known
        // default port there is no endpoint.
        assert_eq!(url("foo://host:9", Rules::Go).scheme, "foo");
        assert_eq!(
            parse_proxy_url("foo://host", Rules::Go).unwrap_err().kind,
            ProxyUrlErrorKind::NoDefaultPort("foo".into())
        );
        // A broken "scheme://" value is retried as "http://"+value, whose
        // host is then the old scheme: Go dials "http:80".
        for value in [
            "http://u:p@host:abc",
            "http://pro xy:1",
            "http://[proxy.corp]:1",
        ] {
            let u = url(value, Rules::Go);
            assert_eq!(
                (u.host.as_str(), u.port, u.misparsed),
                ("http", 80, true),
                "{value}"
            );
            assert!(!u.has_credentials);
            assert_eq!(
                parse_proxy_url(value, Rules::Curl).unwrap_err().kind,
                match value {
                    "http://u:p@host:abc" => ProxyUrlErrorKind::InvalidPort,
                    _ => ProxyUrlErrorKind::InvalidHost,
                },
                "{value}"
            );
        }
        assert_eq!(url("https://h:x", Rules::Go).host, "https");
        assert!(!url("10.0.0.1:7897", Rules::Go).misparsed);
        assert!(!url("http://h:1", Rules::Go).misparsed);
        let err = parse_proxy_url("http://host:99999", Rules::Go).unwrap_err();
        assert_eq!(err.kind, ProxyUrlErrorKind::PortOutOfRange);
        let err = parse_proxy_url("http://proxy\n:1", Rules::Go).unwrap_err();
        assert_eq!(err.kind, ProxyUrlErrorKind::ControlCharacter);
        let err = parse_proxy_url("", Rules::Go).unwrap_err();
        assert_eq!(err.kind, ProxyUrlErrorKind::Empty);
        let err = parse_proxy_url("http://:3128", Rules::Go).unwrap_err();
        assert_eq!(err.kind, ProxyUrlErrorKind::MissingHost);
        // Percent-escaped non-ASCII host (an IDN) is decoded.
        assert_eq!(
            url("http://b%C3%BCcher.example:1", Rules::Go).host,
            "b\u{fc}cher.example"
        );
    }

    #[test]
    fn curl_and_python_reject_unknown_schemes() {
        for rules in [Rules::Curl, Rules::Python] {
            let err = parse_proxy_url("foo://host:1", rules).unwrap_err();
            assert_eq!(err.kind, ProxyUrlErrorKind::UnsupportedScheme("foo".into()));
            assert_eq!(url("SOCKS5H://h:1", rules).scheme, "socks5h");
        }
        assert_eq!(url("socks://h", Rules::Curl).scheme, "socks");
        assert!(parse_proxy_url("socks://h", Rules::Python).is_err());
    }

    #[test]
    fn ipv6_proxy_hosts() {
        for rules in [Rules::Go, Rules::Curl, Rules::Python] {
            let u = url("http://[fd00::1]:3128", rules);
            assert_eq!(u.host, "fd00::1");
            assert_eq!(u.host_port(), "[fd00::1]:3128");
            assert_eq!(u.redacted(), "http://[fd00::1]:3128");
            assert_eq!(u.ip(), Some("fd00::1".parse().unwrap()));
            assert_eq!(url("[fd00::1]:3128", rules).host, "fd00::1");
        }
        let u = url("http://[fe80::1%25eth0]:3128", Rules::Go);
        assert_eq!(u.host, "fe80::1%eth0");
        assert_eq!(u.ip(), Some("fe80::1".parse().unwrap()));
        // Go 1.25.2+: only IPv6 literals in brackets (so this one is
        // misparsed, see go_scheme_handling); curl and Python refuse it.
        assert!(url("http://[proxy.corp]:1", Rules::Go).misparsed);
        assert!(parse_proxy_url("http://[proxy.corp]:1", Rules::Curl).is_err());
    }

    // --- credentials -------------------------------------------------------

    const SECRET_VALUES: &[&str] = &[
        "http://alice:s3cret@10.0.0.1:7897",
        "http://alice:s3cret@10.0.0.1:notaport",
        "http://alice:s3cret@pro xy:1",
        "alice:s3cret@10.0.0.1:7897",
        "https://alice:s3c@ret@proxy.corp",
        "http://alice:s3c/ret@proxy.corp:1",
        "http://alice:s3c#ret@proxy.corp:1",
        "http://alice:s3c ret@proxy.corp:1",
        "foo://alice:s3cret@proxy.corp",
        "socks5://alice:s3cret@[fd00::1]:1080",
        "http://alice:s3cret@:1",
        "http://alice:s3cret@[fd00::1",
    ];

    fn assert_clean(text: &str) {
        for secret in ["s3cret", "s3c", "ret@", "alice"] {
            assert!(!text.contains(secret), "{secret:?} leaked in {text:?}");
        }
    }

    #[test]
    fn credentials_never_in_redacted_display_debug_or_errors() {
        for rules in [Rules::Go, Rules::Curl, Rules::Python] {
            for value in SECRET_VALUES {
                match parse_proxy_url(value, rules) {
                    Ok(u) => {
                        assert!(u.has_credentials || u.misparsed, "{value}");
                        assert_clean(&u.redacted());
                        assert_clean(&u.to_string());
                        assert_clean(&format!("{u:?}"));
                    }
                    Err(e) => {
                        assert_clean(&e.to_string());
                        assert_clean(&format!("{e:?}"));
                        assert_clean(e.redacted_value());
                    }
                }
                let e = env(&[("HTTPS_PROXY", value), ("https_proxy", value)]);
                assert_clean(&format!("{e:?}"));
                match select_proxy(&e, RequestScheme::Https, rules) {
                    Some(Ok(c)) => assert_clean(&format!("{c:?}")),
                    Some(Err(err)) => {
                        assert_clean(&err.to_string());
                        assert_clean(&format!("{err:?}"));
                    }
                    None => panic!("no choice for {value}"),
                }
                let r = route(&e, RequestScheme::Https, "example.com", 443, rules);
                assert_clean(&format!("{r:?}"));
                assert_clean(&redact(value));
                assert_clean(&redact(&format!(
                    "proxyconnect tcp: dial {value:?}: refused"
                )));
            }
        }
    }

    #[test]
    fn redact_free_text() {
        assert_eq!(
            redact("invalid proxy address \"http://u:p@h:1\": bad port"),
            "invalid proxy address \"http://REDACTED@h:1\": bad port"
        );
        assert_eq!(
            redact("a http://u:p@h1:1 b https://x:y@h2:2\nc u:p@h3:3"),
            "a http://REDACTED@h1:1 b https://REDACTED@h2:2\nc REDACTED@h3:3"
        );
        assert_eq!(
            redact("no credentials http://h:1/x"),
            "no credentials http://h:1/x"
        );
        assert_eq!(redact("'u:p@h'"), "'REDACTED@h'");
        assert_eq!(redact(""), "");
    }

    // --- precedence --------------------------------------------------------

    #[test]
    fn go_upper_case_first_and_empty_upper_falls_through() {
        let e = env(&[
            ("HTTPS_PROXY", "http://upper:1"),
            ("https_proxy", "http://lower:2"),
        ]);
        assert_eq!(
            chosen(&e, RequestScheme::Https, Rules::Go),
            Some(("HTTPS_PROXY", "http://upper:1".into()))
        );
        let e = env(&[("HTTPS_PROXY", ""), ("https_proxy", "http://lower:2")]);
        assert_eq!(
            chosen(&e, RequestScheme::Https, Rules::Go),
            Some(("https_proxy", "http://lower:2".into()))
        );
        let e = env(&[
            ("http_proxy", "http://lower:2"),
            ("HTTP_PROXY", "http://upper:1"),
        ]);
        assert_eq!(
            chosen(&e, RequestScheme::Http, Rules::Go),
            Some(("HTTP_PROXY", "http://upper:1".into()))
        );
    }

    #[test]
    fn go_https_uses_only_https_proxy_and_ignores_all_proxy() {
        let e = env(&[
            ("HTTP_PROXY", "http://h:1"),
            ("ALL_PROXY", "socks5://s:2"),
            ("all_proxy", "socks5://s:3"),
        ]);
        assert_eq!(chosen(&e, RequestScheme::Https, Rules::Go), None);
        assert_eq!(
            chosen(&e, RequestScheme::Http, Rules::Go),
            Some(("HTTP_PROXY", "http://h:1".into()))
        );
        let e = env(&[("ALL_PROXY", "socks5://s:2")]);
        assert_eq!(chosen(&e, RequestScheme::Http, Rules::Go), None);
        assert!(proxy_endpoints(&e, Rules::Go).is_empty());
    }

    #[test]
    fn go_no_proxy_upper_first_empty_upper_falls_through() {
        let base = [("HTTPS_PROXY", "http://p:1")];
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut v = base.to_vec();
            v.extend_from_slice(extra);
            env(&v)
        };
        let e = with(&[("NO_PROXY", "a.corp"), ("no_proxy", "b.corp")]);
        assert!(proxy_for(&e, RequestScheme::Https, "a.corp", 443, Rules::Go).is_none());
        assert!(proxy_for(&e, RequestScheme::Https, "b.corp", 443, Rules::Go).is_some());
        let e = with(&[("NO_PROXY", ""), ("no_proxy", "b.corp")]);
        assert_eq!(
            route(&e, RequestScheme::Https, "b.corp", 443, Rules::Go),
            Route::Direct(DirectReason::NoProxyMatch {
                variable: "no_proxy"
            })
        );
    }

    #[test]
    fn curl_http_uses_only_lower_case_http_proxy() {
        let e = env(&[("HTTP_PROXY", "http://upper:1")]);
        assert_eq!(chosen(&e, RequestScheme::Http, Rules::Curl), None);
        let e = env(&[
            ("HTTP_PROXY", "http://upper:1"),
            ("http_proxy", "http://lower:2"),
        ]);
        assert_eq!(
            chosen(&e, RequestScheme::Http, Rules::Curl),
            Some(("http_proxy", "http://lower:2".into()))
        );
        // Falls back to all_proxy, then ALL_PROXY.
        let e = env(&[
            ("HTTP_PROXY", "http://upper:1"),
            ("ALL_PROXY", "socks5h://s:1"),
        ]);
        assert_eq!(
            chosen(&e, RequestScheme::Http, Rules::Curl),
            Some(("ALL_PROXY", "socks5h://s:1".into()))
        );
        let e = env(&[
            ("ALL_PROXY", "socks5h://S:1"),
            ("all_proxy", "socks5h://s:2"),
        ]);
        assert_eq!(
            chosen(&e, RequestScheme::Http, Rules::Curl),
            Some(("all_proxy", "socks5h://s:2".into()))
        );
    }

    #[test]
    fn curl_https_lower_first_then_upper() {
        let e = env(&[
            ("HTTPS_PROXY", "http://upper:1"),
            ("https_proxy", "http://lower:2"),
        ]);
        assert_eq!(
            chosen(&e, RequestScheme::Https, Rules::Curl),
            Some(("https_proxy", "http://lower:2".into()))
        );
        let e = env(&[("HTTPS_PROXY", "http://upper:1"), ("https_proxy", "")]);
        assert_eq!(
            chosen(&e, RequestScheme::Https, Rules::Curl),
            Some(("HTTPS_PROXY", "http://upper:1".into()))
        );
        // no_proxy before NO_PROXY.
        let e = env(&[
            ("https_proxy", "http://p:1"),
            ("NO_PROXY", "a.corp"),
            ("no_proxy", "b.corp"),
        ]);
        assert!(proxy_for(&e, RequestScheme::Https, "b.corp", 443, Rules::Curl).is_none());
        assert!(proxy_for(&e, RequestScheme::Https, "a.corp", 443, Rules::Curl).is_some());
    }

    #[test]
    fn python_lower_case_wins() {
        let e = env(&[
            ("HTTPS_PROXY", "http://upper:1"),
            ("https_proxy", "http://lower:2"),
        ]);
        assert_eq!(
            chosen(&e, RequestScheme::Https, Rules::Python),
            Some(("https_proxy", "http://lower:2".into()))
        );
        let e = env(&[("HTTP_PROXY", "http://upper:1")]);
        assert_eq!(
            chosen(&e, RequestScheme::Http, Rules::Python),
            Some(("HTTP_PROXY", "http://upper:1".into()))
        );
        // A present but empty lower-case variable removes the upper-case one.
        let e = env(&[("HTTPS_PROXY", "http://upper:1"), ("https_proxy", "")]);
        assert_eq!(chosen(&e, RequestScheme::Https, Rules::Python), None);
        // requests falls back to all_proxy.
        let e = env(&[("ALL_PROXY", "socks5://s:1"), ("all_proxy", "socks5://s:2")]);
        assert_eq!(
            chosen(&e, RequestScheme::Https, Rules::Python),
            Some(("all_proxy", "socks5://s:2".into()))
        );
    }

    #[test]
    fn python_cgi_ignores_upper_case_http_proxy() {
        let e = env(&[("HTTP_PROXY", "http://upper:1"), ("REQUEST_METHOD", "")]);
        assert!(e.request_method_present);
        assert_eq!(chosen(&e, RequestScheme::Http, Rules::Python), None);
        let e = env(&[
            ("HTTP_PROXY", "http://upper:1"),
            ("http_proxy", "http://lower:2"),
            ("REQUEST_METHOD", "GET"),
        ]);
        assert_eq!(
            chosen(&e, RequestScheme::Http, Rules::Python),
            Some(("http_proxy", "http://lower:2".into()))
        );
        let e = env(&[("HTTPS_PROXY", "http://upper:1"), ("REQUEST_METHOD", "GET")]);
        assert!(chosen(&e, RequestScheme::Https, Rules::Python).is_some());
    }

    #[test]
    fn go_cgi_rule_refuses_http_proxy() {
        let e = env(&[
            ("HTTP_PROXY", "http://10.1.2.3:8080"),
            ("HTTPS_PROXY", "http://10.1.2.4:8080"),
            ("REQUEST_METHOD", "GET"),
            ("NO_PROXY", "example.com"),
        ]);
        let r = route(&e, RequestScheme::Http, "other.com", 80, Rules::Go);
        let Route::CgiRefused(choice) = r else {
            panic!("expected refusal, got {r:?}");
        };
        assert_eq!(choice.variable, "HTTP_PROXY");
        assert!(choice.cgi_refused);
        // Refused before NO_PROXY and localhost are even looked at.
        assert!(matches!(
            route(&e, RequestScheme::Http, "localhost", 80, Rules::Go),
            Route::CgiRefused(_)
        ));
        assert!(proxy_for(&e, RequestScheme::Http, "other.com", 80, Rules::Go).is_none());
        // https is still proxied.
        assert!(proxy_for(&e, RequestScheme::Https, "other.com", 443, Rules::Go).is_some());
        // The lower-case variable is refused too.
        let e = env(&[
            ("http_proxy", "http://10.1.2.3:8080"),
            ("REQUEST_METHOD", "POST"),
        ]);
        assert!(matches!(
            route(&e, RequestScheme::Http, "other.com", 80, Rules::Go),
            Route::CgiRefused(_)
        ));
        // An empty REQUEST_METHOD is not CGI for Go.
        let e = env(&[
            ("HTTP_PROXY", "http://10.1.2.3:8080"),
            ("REQUEST_METHOD", ""),
        ]);
        assert!(proxy_for(&e, RequestScheme::Http, "other.com", 80, Rules::Go).is_some());
        // curl is not affected by this rule (it never reads HTTP_PROXY).
        let e = env(&[
            ("http_proxy", "http://10.1.2.3:8080"),
            ("REQUEST_METHOD", "GET"),
        ]);
        assert!(proxy_for(&e, RequestScheme::Http, "other.com", 80, Rules::Curl).is_some());
    }

    #[test]
    fn invalid_proxy_value() {
        let e = env(&[
            ("HTTPS_PROXY", "http://u:pw@proxy\t:1"),
            ("https_proxy", "http://good:1"),
        ]);
        // Go picks the first non-empty variable before parsing, then ignores
        // the bad value and goes direct.
        let r = route(&e, RequestScheme::Https, "example.com", 443, Rules::Go);
        let Route::InvalidProxy(err) = &r else {
            panic!("{r:?}")
        };
        assert_eq!(err.variable, "HTTPS_PROXY");
        assert_eq!(err.source.kind, ProxyUrlErrorKind::ControlCharacter);
        assert!(!err.to_string().contains("pw"));
        assert!(proxy_for(&e, RequestScheme::Https, "example.com", 443, Rules::Go).is_none());
        assert!(proxy_endpoints(&e, Rules::Go).is_empty());
        // curl takes the lower-case one.
        assert!(proxy_for(&e, RequestScheme::Https, "example.com", 443, Rules::Curl).is_some());
    }

    #[test]
    fn endpoints_cover_both_schemes() {
        let e = env(&[
            ("HTTPS_PROXY", "http://10.0.0.1:7897"),
            ("http_proxy", "10.0.0.1:7897"),
            ("ALL_PROXY", "socks5://10.0.0.9:1080"),
        ]);
        let eps = proxy_endpoints(&e, Rules::Go);
        let got: Vec<_> = eps
            .iter()
            .map(|c| (c.variable, c.url.host_port()))
            .collect();
        assert_eq!(
            got,
            [
                ("HTTPS_PROXY", "10.0.0.1:7897".to_string()),
                ("http_proxy", "10.0.0.1:7897".to_string())
            ]
        );
        // curl: ALL_PROXY serves https? no: HTTPS_PROXY does; http_proxy for
        // http. Python: the same here.
        let eps = proxy_endpoints(&e, Rules::Curl);
        assert_eq!(eps.len(), 2);
        // ALL_PROXY alone serves both schemes once.
        let e = env(&[("ALL_PROXY", "socks5://10.0.0.9:1080")]);
        let eps = proxy_endpoints(&e, Rules::Curl);
        assert_eq!(eps.len(), 1);
        assert_eq!(eps[0].variable, "ALL_PROXY");
        assert_eq!(eps[0].url.redacted(), "socks5://10.0.0.9:1080");
        // CGI: the http endpoint is reported, flagged.
        let e = env(&[
            ("HTTP_PROXY", "http://10.0.0.1:3128"),
            ("REQUEST_METHOD", "GET"),
        ]);
        let eps = proxy_endpoints(&e, Rules::Go);
        assert_eq!(eps.len(), 1);
        assert!(eps[0].cgi_refused);
    }

    // --- NO_PROXY, Go ------------------------------------------------------

    /// The `UseProxyTests` table of x/net's `proxy_test.go`; `true` = proxied.
    #[test]
    fn go_use_proxy_table() {
        let no_proxy = "foobar.com, .barbaz.net, *.wildcard.io, 192.168.1.1, 192.168.1.2:81, \
192.168.1.3:80, 10.0.0.0/30, 2001:db8::52:0:1, [2001:db8::52:0:2]:443, [2001:db8::52:0:3]:80, \
2002:db8:a::45/64";
        let np = NoProxy::parse(no_proxy);
        let table: &[(&str, bool)] = &[
            ("localhost", false),
            ("127.0.0.1", false),
            ("127.0.0.2", false),
            ("[::1]", false),
            ("[::2]", true),
            ("192.168.1.1", false),
            ("192.168.1.2", true),
            ("192.168.1.3", false),
            ("192.168.1.4", true),
            ("10.0.0.2", false),
            ("[2001:db8::52:0:1]", false),
            ("[2001:db8::52:0:2]", true),
            ("[2001:db8::52:0:3]", false),
            ("[2002:db8:a::123]", false),
            ("[fe80::424b:c8be:1643:a1b6]", true),
            ("barbaz.net", true),
            ("www.barbaz.net", false),
            ("foobar.com", false),
            ("www.foobar.com", false),
            ("foofoobar.com", true),
            ("baz.com", true),
            ("localhost.net", true),
            ("local.localhost", true),
            ("barbarbaz.net", true),
            ("wildcard.io", true),
            ("nested.wildcard.io", false),
            ("awildcard.io", true),
        ];
        for (host, proxied) in table {
            assert_eq!(!np.matches(host, 80), *proxied, "{host}");
        }
        let all = NoProxy::parse("*");
        for (host, _) in table {
            assert!(all.matches(host, 80), "{host}");
        }
        // x/net TestInvalidNoProxy.
        assert!(!NoProxy::parse(":1").matches("example.com", 80));
    }

    #[test]
    fn go_cidr_v4() {
        assert!(no_proxy_hit("10.0.0.0/8", "10.1.2.3", 443));
        assert!(no_proxy_hit("10.0.0.0/8", "10.255.255.255", 1));
        assert!(!no_proxy_hit("10.0.0.0/8", "11.0.0.1", 443));
        // Host bits in the entry are ignored, as by net.ParseCIDR.
        assert!(no_proxy_hit("192.168.1.77/24", "192.168.1.1", 80));
        // IPv4-mapped IPv6 hosts compare as IPv4.
        assert!(no_proxy_hit("10.0.0.0/8", "::ffff:10.9.9.9", 80));
        assert!(no_proxy_hit("::ffff:10.0.0.0/104", "10.9.9.9", 80));
    }

    #[test]
    fn go_cidr_v6() {
        assert!(no_proxy_hit("fd00::/8", "fd12:3456::1", 443));
        assert!(no_proxy_hit("fd00::/8", "[fd12::1]", 443));
        assert!(!no_proxy_hit("fd00::/8", "fe80::1", 443));
        assert!(!no_proxy_hit("fd00::/8", "10.0.0.1", 443));
        assert!(no_proxy_hit("::/0", "2001:db8::1", 443));
        assert!(!no_proxy_hit("::/0", "10.0.0.1", 443));
    }

    #[test]
    fn go_cidr_never_matches_a_host_name() {
        assert!(!no_proxy_hit("10.0.0.0/8", "proxy.corp", 80));
        assert!(!no_proxy_hit("0.0.0.0/0", "example.com", 80));
        assert!(!no_proxy_hit("::/0", "example.com", 80));
    }

    #[test]
    fn go_ip_with_and_without_port() {
        assert!(no_proxy_hit("1.2.3.4", "1.2.3.4", 80));
        assert!(no_proxy_hit("1.2.3.4", "1.2.3.4", 8443));
        assert!(no_proxy_hit("1.2.3.4:80", "1.2.3.4", 80));
        assert!(!no_proxy_hit("1.2.3.4:80", "1.2.3.4", 443));
        assert!(!no_proxy_hit("1.2.3.4", "1.2.3.5", 80));
        assert!(no_proxy_hit("2001:db8::1", "2001:db8::1", 80));
        // Domain entries never match an IP host, even as a suffix string.
        assert!(!no_proxy_hit("2.3.4", "1.2.3.4", 80));
    }

    #[test]
    fn go_bracketed_ipv6_with_port() {
        let np = NoProxy::parse("[::1]:80, [2001:db8::7]:8080");
        assert!(np.matches_list("::1", 80));
        assert!(np.matches_list("[::1]", 80));
        assert!(!np.matches_list("::1", 81));
        assert!(np.matches("2001:db8::7", 8080));
        assert!(!np.matches("2001:db8::7", 80));
        // Without a port the bracketed form is not an IP entry in Go.
        assert!(!NoProxy::parse("[2001:db8::7]").matches("2001:db8::7", 80));
    }

    #[test]
    fn go_domain_suffix() {
        assert!(no_proxy_hit("foo.com", "foo.com", 80));
        assert!(no_proxy_hit("foo.com", "bar.foo.com", 80));
        assert!(no_proxy_hit("foo.com", "a.b.foo.com", 443));
        assert!(!no_proxy_hit("foo.com", "barfoo.com", 80));
        assert!(!no_proxy_hit("foo.com", "foo.com.evil", 80));
        // Entries and hosts are compared case-insensitively, entries trimmed.
        assert!(no_proxy_hit("  FOO.com  ,", "Bar.Foo.COM", 80));
    }

    #[test]
    fn go_leading_dot_matches_subdomains_only() {
        assert!(no_proxy_hit(".foo.com", "bar.foo.com", 80));
        assert!(!no_proxy_hit(".foo.com", "foo.com", 80));
    }

    #[test]
    fn go_star_dot_matches_subdomains_only() {
        assert!(no_proxy_hit("*.foo.com", "bar.foo.com", 80));
        assert!(!no_proxy_hit("*.foo.com", "foo.com", 80));
        assert!(!no_proxy_hit("*.foo.com", "barfoo.com", 80));
    }

    #[test]
    fn go_star_alone_means_never_proxy() {
        for value in ["*", " * ", "a.com,*", "*,b.com"] {
            let np = NoProxy::parse(value);
            assert!(np.matches("anything.example", 1), "{value}");
            assert!(np.matches("8.8.8.8", 53), "{value}");
        }
        // Not a wildcard when part of a longer entry.
        assert!(!no_proxy_hit("*foo", "bar.com", 80));
    }

    #[test]
    fn go_port_restriction() {
        assert!(no_proxy_hit("foo.com:8080", "foo.com", 8080));
        assert!(no_proxy_hit("foo.com:8080", "x.foo.com", 8080));
        assert!(!no_proxy_hit("foo.com:8080", "foo.com", 80));
        assert!(no_proxy_hit(".foo.com:443", "x.foo.com", 443));
        assert!(!no_proxy_hit(".foo.com:443", "x.foo.com", 80));
        assert!(no_proxy_hit("*.foo.com:443", "x.foo.com", 443));
    }

    #[test]
    fn go_idna() {
        assert!(no_proxy_hit(
            "b\u{fc}cher.example",
            "xn--bcher-kva.example",
            80
        ));
        assert!(no_proxy_hit(
            "b\u{fc}cher.example",
            "www.xn--bcher-kva.example",
            80
        ));
        assert!(no_proxy_hit(
            "xn--bcher-kva.example",
            "b\u{fc}cher.example",
            80
        ));
        assert!(no_proxy_hit(
            "B\u{dc}CHER.example",
            "b\u{fc}cher.example",
            80
        ));
        assert!(no_proxy_hit(
            ".\u{793a}\u{4f8b}.com",
            "www.\u{793a}\u{4f8b}.com",
            80
        ));
        assert!(no_proxy_hit(
            "xn--fsq092h.com",
            "www.\u{793a}\u{4f8b}.com",
            80
        ));
        assert!(no_proxy_hit(
            "\u{793a}\u{4f8b}.com",
            "www.xn--fsq092h.com",
            80
        ));
        assert!(!no_proxy_hit("b\u{fc}cher.example", "bucher.example", 80));
    }

    #[test]
    fn go_zone_id_does_not_match_domain() {
        // CVE-2025-22870: "[1000::%25.example.com]" is an IP, not a name.
        assert!(!no_proxy_hit("example.com", "[1000::%.example.com]", 123));
    }

    #[test]
    fn go_loopback_and_localhost_never_proxied() {
        let e = env(&[
            ("HTTP_PROXY", "http://10.0.0.1:3128"),
            ("HTTPS_PROXY", "http://10.0.0.1:3128"),
        ]);
        for host in [
            "localhost",
            "127.0.0.1",
            "127.5.6.7",
            "::1",
            "[::1]",
            "::ffff:127.0.0.1",
        ] {
            for scheme in [RequestScheme::Http, RequestScheme::Https] {
                assert_eq!(
                    route(&e, scheme, host, 8080, Rules::Go),
                    Route::Direct(DirectReason::Loopback),
                    "{host}"
                );
                assert!(proxy_for(&e, scheme, host, 8080, Rules::Go).is_none());
            }
            assert!(NoProxy::parse("").matches(host, 80), "{host}");
            assert!(!NoProxy::parse("").matches_list(host, 80), "{host}");
        }
        // Only these: other names and addresses are proxied.
        for host in ["localhost.localdomain", "10.0.0.5", "::2", "example.com"] {
            assert!(
                proxy_for(&e, RequestScheme::Https, host, 443, Rules::Go).is_some(),
                "{host}"
            );
        }
        // curl and Python have no such rule: NO_PROXY must list localhost.
        let e = env(&[
            ("http_proxy", "http://10.0.0.1:3128"),
            ("https_proxy", "http://10.0.0.1:3128"),
        ]);
        assert!(proxy_for(&e, RequestScheme::Https, "localhost", 443, Rules::Curl).is_some());
        assert!(proxy_for(&e, RequestScheme::Https, "127.0.0.1", 443, Rules::Python).is_some());
    }

    #[test]
    fn proxy_for_end_to_end() {
        let e = ProxyEnv::from_environ(
            b"HTTPS_PROXY=http://10.0.0.1:7897\0NO_PROXY=10.96.0.0/12,.svc,.cluster.local,registry.corp:5000\0",
        );
        let c = proxy_for(
            &e,
            RequestScheme::Https,
            "registry-1.docker.io",
            443,
            Rules::Go,
        )
        .unwrap();
        assert_eq!(c.variable, "HTTPS_PROXY");
        assert_eq!(c.url.redacted(), "http://10.0.0.1:7897");
        assert_eq!(c.for_scheme, RequestScheme::Https);
        assert_eq!(c.rules, Rules::Go);
        assert!(!c.cgi_refused);
        for (host, port) in [
            ("10.96.0.1", 443),
            ("kube-dns.kube-system.svc", 53),
            ("registry.corp", 5000),
        ] {
            assert!(
                matches!(
                    route(&e, RequestScheme::Https, host, port, Rules::Go),
                    Route::Direct(DirectReason::NoProxyMatch {
                        variable: "NO_PROXY"
                    })
                ),
                "{host}"
            );
        }
        assert!(proxy_for(&e, RequestScheme::Https, "registry.corp", 443, Rules::Go).is_some());
        assert_eq!(
            route(&e, RequestScheme::Http, "example.com", 80, Rules::Go),
            Route::Direct(DirectReason::NoProxyConfigured)
        );
        assert!(
            route(&e, RequestScheme::Https, "example.com", 443, Rules::Go)
                .proxy()
                .is_some()
        );
    }

    // --- NO_PROXY, curl and Python -----------------------------------------

    #[test]
    fn curl_no_proxy_rules() {
        let np = |v: &str| NoProxy::parse_for(v, Rules::Curl);
        // Leading dot ignored: ".foo.com" matches foo.com too.
        assert!(np(".foo.com").matches("foo.com", 80));
        assert!(np("foo.com").matches("a.foo.com", 80));
        assert!(!np("foo.com").matches("afoo.com", 80));
        assert!(np("foo.com.").matches("foo.com.", 80));
        // "*" only as the whole value; no "*." wildcard; no ports.
        assert!(np("*").matches("x", 1));
        assert!(!np("a.com,*").matches("x.com", 1));
        assert!(!np("*.foo.com").matches("a.foo.com", 80));
        assert!(!np("foo.com:80").matches("foo.com", 80));
        // Blank-separated; a blank then a non-comma ends the list.
        assert!(np("a.com b.com").matches("a.com", 80));
        assert!(!np("a.com b.com").matches("b.com", 80));
        assert!(np(" a.com , b.com ").matches("b.com", 80));
        // IPs and CIDR (curl 7.86+).
        assert!(np("10.0.0.0/8").matches("10.2.3.4", 80));
        assert!(!np("10.0.0.0/8").matches("proxy.corp", 80));
        assert!(np("192.168.0.1").matches("192.168.0.1", 80));
        assert!(np("fd00::/8").matches("[fd00::1]", 80));
        // curl quirk: IPv4 "/0" is an exact match.
        assert!(!np("0.0.0.0/0").matches("10.0.0.1", 80));
    }

    #[test]
    fn python_no_proxy_rules() {
        let np = |v: &str| NoProxy::parse_for(v, Rules::Python);
        assert!(np("*").matches("anything", 1));
        assert!(
            np(".foo.com").matches("foo.com", 443),
            "urllib strips the dot"
        );
        assert!(np("foo.com").matches("a.foo.com", 443));
        assert!(np("Foo.com").matches("a.foo.com", 443));
        assert!(np("10.0.0.0/8").matches("10.1.1.1", 443));
        assert!(np("10.1.1.1").matches("10.1.1.1", 443));
        assert!(np("foo.com:8080").matches("foo.com", 8080));
        assert!(!np("foo.com:8080").matches("bar.com", 8080));
        // Python has no loopback rule.
        assert!(!np("").matches("localhost", 80));
        let e = env(&[
            ("https_proxy", "http://p:1"),
            ("NO_PROXY", ".corp"),
            ("no_proxy", ""),
        ]);
        assert!(proxy_for(&e, RequestScheme::Https, "a.corp", 443, Rules::Python).is_none());
    }

    #[test]
    fn rules_serialise_lower_case() {
        assert_eq!(serde_json::to_string(&Rules::Go).unwrap(), "\"go\"");
        assert_eq!(serde_json::to_string(&Rules::Curl).unwrap(), "\"curl\"");
        assert_eq!(serde_json::to_string(&Rules::Python).unwrap(), "\"python\"");
        assert_eq!(Rules::default(), Rules::Go);
        assert_eq!(Rules::Python.to_string(), "python");
    }

    #[test]
    fn proxy_var_names_round_trip() {
        for var in ProxyVar::ALL {
            assert_eq!(ProxyVar::from_name(var.name()), Some(var));
        }
        assert_eq!(ProxyVar::from_name("Http_Proxy"), None);
    }
}
