//! From what happened during a pull to one verdict an operator can act on:
//! the runtime's error text, the attempts the daemon made (traced), and the
//! configuration that sent them where they went.

use serde::Serialize;
use serde_json::Value;

use crate::{
    doctor::{
        findings::certificate_problem,
        tls::{TlsProbe, TlsVerdict},
    },
    redact::redact,
    verdict::proxy::{DirectReason, Route},
};

/// One connect attempt of the daemon during the pull, from the tracer's
/// event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttemptSummary {
    /// "127.0.0.1:8888"
    pub destination: String,
    /// `tracer.result`: connected, refused, timed_out, ...
    pub result: String,
    /// This attempt dialled the daemon's proxy.
    pub via_proxy: bool,
    /// The proxy variable behind it, when `via_proxy`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variable: Option<String>,
    /// Where that variable is set ("file:line"), when a file says so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

impl AttemptSummary {
    /// The attempts in a list of tracer events (connect events only).
    pub fn from_events(events: &[Value]) -> Vec<Self> {
        events
            .iter()
            .filter(|e| e["event"]["action"] == "connect")
            .map(|e| {
                let proxy = &e["tracer"]["proxy"];
                let via_proxy = proxy["via"] == true;
                let source = proxy["source"]["file"].as_str().map(|file| {
                    format!("{file}:{}", proxy["source"]["line"].as_u64().unwrap_or(0))
                });
                Self {
                    destination: e["destination"]["address"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    result: e["tracer"]["result"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    via_proxy,
                    variable: via_proxy
                        .then(|| proxy["variable"].as_str().map(str::to_string))
                        .flatten(),
                    source: via_proxy.then_some(source).flatten(),
                }
            })
            .collect()
    }
}

/// What the proxy answered when asked to tunnel to the registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProxyAnswer {
    /// "CONNECT 203.0.113.2:443"
    pub request: String,
    pub status_code: u16,
    pub reason: String,
}

/// Where the daemon's configuration sends a request for the registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteSummary {
    /// "proxy" or "direct" (or "refused" for Go's CGI rule, "invalid" for
    /// a proxy value that does not parse, which Go ignores).
    pub kind: &'static str,
    /// The proxy variable, or the NO_PROXY variable that sends it direct.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variable: Option<String>,
    /// The proxy URL, credentials redacted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy: Option<String>,
    /// host:port of the proxy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_endpoint: Option<String>,
    /// The proxy URL carries credentials.
    pub credentials: bool,
    /// Why it goes direct, in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The value of the variable that decided (redacted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Where that variable is set ("file:line").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

impl RouteSummary {
    /// `route` (Go's rules applied to the daemon's live environment) in
    /// words; `value_of` gives a variable's live value, `source_of` where
    /// it is set.
    pub fn of(
        route: &Route,
        value_of: impl Fn(&str) -> Option<String>,
        source_of: impl Fn(&str) -> Option<String>,
    ) -> Self {
        let none = Self {
            kind: "direct",
            variable: None,
            proxy: None,
            proxy_endpoint: None,
            credentials: false,
            reason: None,
            value: None,
            source: None,
        };
        let proxy_of = |kind, choice: &crate::verdict::proxy::ProxyChoice| Self {
            kind,
            variable: Some(choice.variable.to_string()),
            proxy: Some(choice.url.redacted()),
            proxy_endpoint: Some(choice.url.host_port()),
            credentials: choice.url.has_credentials,
            reason: None,
            value: None,
            source: source_of(choice.variable),
        };
        match route {
            Route::Proxy(choice) => proxy_of("proxy", choice),
            Route::CgiRefused(choice) => proxy_of("refused", choice),
            Route::InvalidProxy(e) => Self {
                kind: "invalid",
                reason: Some(format!(
                    "its proxy value does not parse ({e}); Go then connects directly"
                )),
                ..none
            },
            Route::Direct(DirectReason::NoProxyConfigured) => Self {
                reason: Some("no proxy variable applies to HTTPS".into()),
                ..none
            },
            Route::Direct(DirectReason::Loopback) => Self {
                reason: Some("Go never proxies localhost or loopback addresses".into()),
                ..none
            },
            Route::Direct(DirectReason::NoProxyMatch { variable }) => Self {
                variable: Some((*variable).to_string()),
                value: value_of(variable).map(|v| redact(&v)),
                source: source_of(variable),
                reason: Some(format!("{variable} covers the registry")),
                ..none
            },
        }
    }
}

/// The verdict: one sentence (or two) joining the runtime's error, the
/// attempts and the configuration.
pub fn verdict(
    daemon: &str,
    registry: &str,
    error: Option<&str>,
    seconds: f64,
    route: &RouteSummary,
    attempts: &[AttemptSummary],
    answer: Option<&ProxyAnswer>,
) -> String {
    let set_in = |source: &Option<String>| match source {
        Some(s) => format!("set in {s}"),
        None => "in its environment, not set by any configuration found".to_string(),
    };
    let proxy_name = || {
        format!(
            "{} {}",
            route.variable.as_deref().unwrap_or("proxy"),
            route.proxy_endpoint.as_deref().unwrap_or("?")
        )
    };
    let Some(error) = error else {
        return match route.kind {
            "proxy" => format!(
                "{daemon} pulled the image in {seconds:.1} s through its proxy {} ({})",
                proxy_name(),
                set_in(&route.source)
            ),
            _ => format!(
                "{daemon} pulled the image in {seconds:.1} s directly from {registry}{}",
                route
                    .reason
                    .as_ref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            ),
        };
    };
    let proxied: Vec<&AttemptSummary> = attempts.iter().filter(|a| a.via_proxy).collect();
    let direct: Vec<&AttemptSummary> = attempts.iter().filter(|a| !a.via_proxy).collect();
    if let Some(failed) = proxied.iter().find(|a| a.result != "connected") {
        return format!(
            "{daemon} could not reach its proxy {} ({}): {}; {} is {}. Fix or remove that setting and restart {daemon}",
            failed.destination,
            failed.variable.as_deref().unwrap_or("proxy"),
            result_words(&failed.result),
            failed.variable.as_deref().unwrap_or("the variable"),
            set_in(&failed.source),
        );
    }
    if !proxied.is_empty() || route.kind == "proxy" {
        let reached = if proxied.is_empty() {
            format!("{daemon}'s proxy is {}", proxy_name())
        } else {
            format!("{daemon} reached its proxy {}", proxy_name())
        };
        let variable = route.variable.as_deref().unwrap_or("the proxy variable");
        return match answer {
            Some(a) if a.status_code == 407 && !route.credentials => format!(
                "{reached}, which demands credentials ({} {}), and {variable} has none; it is {}",
                a.status_code,
                a.reason,
                set_in(&route.source)
            ),
            Some(a) if a.status_code == 407 => format!(
                "{reached}, which rejects the credentials in {variable} ({} {}); {variable} is {}",
                a.status_code,
                a.reason,
                set_in(&route.source)
            ),
            Some(a) if a.status_code >= 500 => format!(
                "{reached}, but the proxy could not connect to the registry {registry}: asked for {} it answered {} {}. The registry is down or unreachable from the proxy ({variable} {})",
                a.request,
                a.status_code,
                a.reason,
                set_in(&route.source)
            ),
            Some(a) if a.status_code == 200 => format!(
                "{reached}, and the proxy does tunnel to {registry} ({} answered {} {}): the failure is past the tunnel (TLS, authentication or the image itself): {error}",
                a.request, a.status_code, a.reason
            ),
            Some(a) => format!(
                "{reached}, but the proxy refuses to tunnel to {registry}: asked for {} it answered {} {} ({variable} {})",
                a.request,
                a.status_code,
                a.reason,
                set_in(&route.source)
            ),
            None => format!("{reached}; the pull failed: {error}"),
        };
    }
    let why = match (&route.reason, &route.variable, &route.value) {
        (Some(_), Some(var), Some(value)) => format!(
            " because {var}={value} covers {registry} ({})",
            set_in(&route.source)
        ),
        (Some(reason), _, _) => format!(" ({reason})"),
        _ => String::new(),
    };
    match direct.iter().find(|a| a.result != "connected") {
        Some(failed) => format!(
            "{daemon} went directly to {}{why}, and the direct connect was {}",
            failed.destination,
            result_words(&failed.result)
        ),
        None if direct.is_empty() => format!(
            "{daemon} made no connection for this pull{why} (a name that does not resolve, or an error before dialling): {error}"
        ),
        None => format!("{daemon} connected directly to {registry}{why}, and the pull failed: {error}"),
    }
}

/// The verdict once the tracer's own TLS handshake (doctor/tls.rs) is
/// known: an interception, or a certificate the daemon refuses, replaces
/// `verdict`; an interception the daemon trusts is added to it.
pub fn with_tls(
    verdict: String,
    daemon: &str,
    registry: &str,
    error: Option<&str>,
    route: &RouteSummary,
    attempts: &[AttemptSummary],
    tls: &TlsProbe,
) -> String {
    let set_in = match &route.source {
        Some(s) => format!("{}, {s}", route.variable.as_deref().unwrap_or("proxy")),
        None => format!(
            "{}, not set by any configuration found",
            route.variable.as_deref().unwrap_or("proxy")
        ),
    };
    let reached = if attempts.iter().any(|a| a.via_proxy) {
        "reached"
    } else {
        "has"
    };
    let proxy = route.proxy_endpoint.as_deref().unwrap_or("?");
    let issuer = tls.issuer_name();
    let own = tls
        .direct_issuer_name()
        .map(|i| format!(" (the registry's own is issued by '{i}')"))
        .unwrap_or_default();
    let trusts = tls.trust_words();
    let host = &tls.server_name;
    let failed = error
        .map(|e| format!(", so the pull failed: {e}"))
        .unwrap_or_default();
    match tls.verdict {
        TlsVerdict::Intercepted => format!(
            "{daemon} {reached} its proxy {proxy} ({set_in}), which intercepted TLS to {registry} and presented a certificate issued by '{issuer}'{own}; {daemon} trusts only {trusts} for that registry{failed}. Trust that CA for this registry, or put {host} in NO_PROXY"
        ),
        TlsVerdict::InterceptedTrusted => format!(
            "{verdict}. Its proxy {proxy} intercepts TLS to {registry}: it presents a certificate issued by '{issuer}'{own}, which {daemon} trusts ({trusts}), so TLS inspection happens at the proxy"
        ),
        TlsVerdict::CertificateProblem | TlsVerdict::NotCompared if error.is_some() => {
            let Some(problem) = tls.judgement.as_ref().and_then(|j| j.problem) else {
                return verdict;
            };
            let (_, what) = certificate_problem(problem, tls, issuer, &trusts);
            let path = match tls.verdict {
                TlsVerdict::NotCompared => format!(
                    " through its proxy {proxy} ({set_in}; {host} could not be reached directly to tell whether the proxy or the registry presented it)"
                ),
                _ if tls.path == "proxy" => format!(
                    " through its proxy {proxy} ({set_in}; the same certificate arrives directly, so the proxy does not intercept)"
                ),
                _ => " directly".to_string(),
            };
            format!(
                "{daemon} reached {registry}{path}, which presents a certificate that {what}{failed}"
            )
        }
        _ => verdict,
    }
}

fn result_words(result: &str) -> &str {
    match result {
        "refused" => "connection refused",
        "timed_out" => "timed out",
        "unreachable" => "unreachable",
        "aborted" => "abandoned before any answer",
        "pending" => "still unanswered",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(dest: &str, result: &str, via: bool) -> AttemptSummary {
        AttemptSummary {
            destination: dest.into(),
            result: result.into(),
            via_proxy: via,
            variable: via.then(|| "HTTPS_PROXY".to_string()),
            source: via
                .then(|| "/etc/systemd/system/containerd.service.d/http-proxy.conf:3".into()),
        }
    }

    fn proxy_route(credentials: bool) -> RouteSummary {
        RouteSummary {
            kind: "proxy",
            variable: Some("HTTPS_PROXY".into()),
            proxy: Some("http://127.0.0.1:8888".into()),
            proxy_endpoint: Some("127.0.0.1:8888".into()),
            credentials,
            reason: None,
            value: None,
            source: Some("/etc/systemd/system/containerd.service.d/http-proxy.conf:3".into()),
        }
    }

    #[test]
    fn a_refused_proxy_names_the_variable_and_its_file() {
        let v = verdict(
            "containerd",
            "203.0.113.2:443",
            Some("proxyconnect tcp: dial tcp 127.0.0.1:8888: connect: connection refused"),
            0.1,
            &proxy_route(false),
            &[attempt("127.0.0.1:8888", "refused", true)],
            None,
        );
        assert!(
            v.contains(
                "could not reach its proxy 127.0.0.1:8888 (HTTPS_PROXY): connection refused"
            ),
            "{v}"
        );
        assert!(v.contains("http-proxy.conf:3"), "{v}");
    }

    #[test]
    fn the_proxy_answer_explains_a_terse_runtime_error() {
        let answer = ProxyAnswer {
            request: "CONNECT 203.0.113.2:443".into(),
            status_code: 500,
            reason: "Unable to connect".into(),
        };
        let v = verdict(
            "containerd",
            "203.0.113.2:443",
            Some("Unable to connect"),
            0.1,
            &proxy_route(false),
            &[attempt("127.0.0.1:8888", "connected", true)],
            Some(&answer),
        );
        assert!(
            v.contains("reached its proxy HTTPS_PROXY 127.0.0.1:8888"),
            "{v}"
        );
        assert!(v.contains("500 Unable to connect"), "{v}");
        let auth = ProxyAnswer {
            status_code: 407,
            reason: "Proxy Authentication Required".into(),
            ..answer
        };
        let v = verdict(
            "containerd",
            "203.0.113.2:443",
            Some("Proxy Authentication Required"),
            0.1,
            &proxy_route(false),
            &[attempt("127.0.0.1:8888", "connected", true)],
            Some(&auth),
        );
        assert!(
            v.contains("demands credentials") && v.contains("HTTPS_PROXY has none"),
            "{v}"
        );
    }

    #[test]
    fn no_proxy_sends_it_direct_and_says_so() {
        let route = RouteSummary {
            kind: "direct",
            variable: Some("NO_PROXY".into()),
            value: Some("203.0.113.2".into()),
            reason: Some("NO_PROXY covers the registry".into()),
            source: Some("/etc/x.conf:4".into()),
            ..proxy_route(false)
        };
        let v = verdict(
            "containerd",
            "203.0.113.2:443",
            Some("dial tcp 203.0.113.2:443: connect: connection refused"),
            0.1,
            &route,
            &[attempt("203.0.113.2:443", "refused", false)],
            None,
        );
        assert!(
            v.contains("went directly to 203.0.113.2:443 because NO_PROXY=203.0.113.2 covers"),
            "{v}"
        );
        assert!(v.contains("connection refused"), "{v}");
    }

    #[test]
    fn success_says_which_path() {
        let v = verdict(
            "containerd",
            "203.0.113.2:443",
            None,
            1.25,
            &proxy_route(false),
            &[attempt("127.0.0.1:8888", "connected", true)],
            None,
        );
        assert!(
            v.contains("pulled the image in 1.2 s through its proxy HTTPS_PROXY 127.0.0.1:8888"),
            "{v}"
        );
    }

    #[test]
    fn an_interception_is_one_sentence_with_proxy_dropin_issuer_and_trust() {
        use crate::doctor::{
            tls::{TlsProbe, TlsVerdict},
            trust::Problem,
        };
        let tls = TlsProbe::sample(
            "203.0.113.2",
            TlsVerdict::Intercepted,
            Some(Problem::UnknownAuthority),
        );
        let v = with_tls(
            "earlier verdict".into(),
            "containerd",
            "203.0.113.2:443",
            Some("x509: certificate signed by unknown authority"),
            &proxy_route(false),
            &[attempt("127.0.0.1:8888", "connected", true)],
            &tls,
        );
        assert_eq!(
            v,
            "containerd reached its proxy 127.0.0.1:8888 (HTTPS_PROXY, /etc/systemd/system/containerd.service.d/http-proxy.conf:3), \
             which intercepted TLS to 203.0.113.2:443 and presented a certificate issued by 'mitmproxy' \
             (the registry's own is issued by 'registry.test'); containerd trusts only \
             /etc/containerd/certs/registry-ca.crt for that registry, so the pull failed: \
             x509: certificate signed by unknown authority. Trust that CA for this registry, \
             or put 203.0.113.2 in NO_PROXY"
        );
        let trusted = TlsProbe {
            verdict: TlsVerdict::InterceptedTrusted,
            ..tls.clone()
        };
        let v = with_tls(
            "containerd pulled the image".into(),
            "containerd",
            "203.0.113.2:443",
            None,
            &proxy_route(false),
            &[],
            &trusted,
        );
        assert!(
            v.starts_with("containerd pulled the image. Its proxy"),
            "{v}"
        );
        let mine = TlsProbe {
            verdict: TlsVerdict::NotIntercepted,
            ..tls
        };
        let v = with_tls(
            "kept".into(),
            "containerd",
            "r:443",
            None,
            &proxy_route(false),
            &[],
            &mine,
        );
        assert_eq!(v, "kept");
    }
}
