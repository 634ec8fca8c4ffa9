//! NO_PROXY lists, matched with Go's, curl's or Python's rules.
//!
//! The three clients share a variable name and little else: Go has CIDRs,
//! ports and `*.` wildcards and never proxies loopback; curl has CIDRs but
//! no ports and stops at the first blank-separated word; `requests` does a
//! plain string suffix match on top of urllib's dot-suffix match. Each is
//! reproduced here, quirks included, because the point is to predict what
//! the traced client does, not what a NO_PROXY should mean.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::url::parse_ip_ignoring_zone;
use super::Rules;

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
    /// The network, IPv4-mapped networks folded to IPv4 the way
    /// `net.IPNet.Contains` treats them. Host bits are kept as written:
    /// `contains` ignores them, as `net.ParseCIDR` masks them.
    Cidr(IpNet),
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
                GoIpMatch::Cidr(net) => net.contains(&ip),
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
                    Some(net) => net.contains(&ip),
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
pub(super) fn is_always_direct(host: &str) -> bool {
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
    // Out-of-range prefixes are rejected by `IpNet::new`, as by Go.
    let net = match ip {
        IpAddr::V4(_) => IpNet::new(ip, bits),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            // An IPv4-mapped network is compared on its last 4 bytes with the
            // last 32 bits of the mask. A prefix over 128 is still an error.
            Some(v4) if bits <= 128 => IpNet::new(IpAddr::V4(v4), bits.saturating_sub(96)),
            _ => IpNet::new(ip, bits),
        },
    };
    net.ok().map(GoIpMatch::Cidr)
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
                1..=31 => Ipv4Net::new(n, bits as u8).is_ok_and(|net| net.contains(&a)),
                _ => false,
            }
        }
        IpAddr::V6(a) => {
            let Ok(n) = network.parse::<Ipv6Addr>() else {
                return false;
            };
            let bits = if bits == 0 { 128 } else { bits };
            Ipv6Net::new(n, bits as u8).is_ok_and(|net| net.contains(&a))
        }
    }
}

/// requests' `is_valid_cidr`: IPv4 only, prefix 1..=32.
fn python_cidr(entry: &str) -> Option<Ipv4Net> {
    let (net, mask) = entry.split_once('/')?;
    let mask: u8 = mask.parse().ok()?;
    if !(1..=32).contains(&mask) {
        return None;
    }
    Ipv4Net::new(net.parse().ok()?, mask).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::proxy::test_env::env;
    use crate::verdict::proxy::{proxy_for, RequestScheme};

    fn no_proxy_hit(value: &str, host: &str, port: u16) -> bool {
        NoProxy::parse(value).matches(host, port)
    }

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
}
