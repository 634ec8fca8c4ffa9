//! Which variable a client reads its proxy from, per request scheme.
//!
//! Go, curl and Python disagree on case (upper first, lower first, lower
//! only), on fallbacks (`ALL_PROXY` or not) and on the CGI guard against
//! httpoxy, so the choice is made per [`Rules`]. NO_PROXY and the
//! destination are not looked at here; see [`super::route`] for that.

use super::url::{parse_proxy_url, ProxyUrl, ProxyUrlError};
use super::{RequestScheme, Rules};
use crate::enrich::proxy_env::{ProxyEnv, ProxyVar};

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
    /// `url.redacted()` and `url.host_port()`, made once with the choice:
    /// every verdict of a proxied process carries them, and sharing them
    /// keeps the per-event path free of allocation.
    pub shown: Shown,
}

/// The proxy as events show it, shared by every verdict that names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shown {
    /// The URL, credentials redacted.
    pub url: std::sync::Arc<str>,
    /// host:port.
    pub endpoint: std::sync::Arc<str>,
}

impl Shown {
    pub fn of(url: &ProxyUrl) -> Self {
        Self {
            url: url.redacted().into(),
            endpoint: url.host_port().into(),
        }
    }
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
pub(super) fn first_non_empty(env: &ProxyEnv, order: &[ProxyVar]) -> Option<ProxyVar> {
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
                shown: Shown::of(&url),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::proxy::test_env::{chosen, env};

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
}
