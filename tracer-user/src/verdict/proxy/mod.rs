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
//! produced here ever contains them; see [`crate::redact`].
//!
//! The parts: `url` parses a proxy value, `select` picks the variable a
//! request of each scheme reads, `no_proxy` matches NO_PROXY lists, and
//! [`route`] here puts them together. What the environment holds is read by
//! enrichment ([`crate::enrich::proxy_env`]); this module only judges it.

use std::fmt;

mod no_proxy;
mod select;
mod url;

pub use no_proxy::NoProxy;
pub use select::{proxy_endpoints, select_proxy, ProxyChoice, SelectError};
pub use url::{parse_proxy_url, ProxyUrl, ProxyUrlError, ProxyUrlErrorKind};

use crate::enrich::proxy_env::{ProxyEnv, ProxyVar};
use no_proxy::is_always_direct;
use select::first_non_empty;

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
}

impl fmt::Display for RequestScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
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

/// Environments for tests, shared by the tests of every part.
#[cfg(test)]
mod test_env {
    use super::{select_proxy, RequestScheme, Rules};
    use crate::enrich::proxy_env::ProxyEnv;

    /// An environment holding exactly `pairs`, built the way enrichment
    /// builds one: from the raw NUL-separated `/proc/<pid>/environ` bytes.
    pub(super) fn env(pairs: &[(&str, &str)]) -> ProxyEnv {
        let mut raw = Vec::new();
        for (name, value) in pairs {
            raw.extend_from_slice(name.as_bytes());
            raw.push(b'=');
            raw.extend_from_slice(value.as_bytes());
            raw.push(0);
        }
        ProxyEnv::from_environ(&raw)
    }

    pub(super) fn chosen(
        env: &ProxyEnv,
        scheme: RequestScheme,
        rules: Rules,
    ) -> Option<(&'static str, String)> {
        select_proxy(env, scheme, rules).map(|r| {
            let c = r.unwrap();
            (c.variable, c.url.redacted())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::test_env::{chosen, env};
    use super::*;
    use crate::redact::{redact, redact_value};

    // Test-only accessor.
    impl Route {
        /// The proxy, when the request goes through one.
        fn proxy(&self) -> Option<&ProxyChoice> {
            match self {
                Route::Proxy(choice) => Some(choice),
                _ => None,
            }
        }
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

    #[test]
    fn rules_serialise_lower_case() {
        assert_eq!(serde_json::to_string(&Rules::Go).unwrap(), "\"go\"");
        assert_eq!(serde_json::to_string(&Rules::Curl).unwrap(), "\"curl\"");
        assert_eq!(serde_json::to_string(&Rules::Python).unwrap(), "\"python\"");
        assert_eq!(Rules::default(), Rules::Go);
        assert_eq!(Rules::Python.to_string(), "python");
    }
}
