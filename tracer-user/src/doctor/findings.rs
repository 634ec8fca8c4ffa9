//! Judging a daemon's proxy set-up: each problem becomes a [`Finding`] with
//! a severity, a stable code, a sentence to act on, and the daemon,
//! variable and file:line it is about.
//!
//! Pure logic over the report and the configuration already read (plus a
//! stat of the files that hold credentials), so every rule has a unit test
//! with synthetic input.

use std::{net::IpAddr, path::Path};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::{
    netns::Vantage,
    reach::{ReachResult, Tunnel},
    sources::{host_file_info, Configured},
    DaemonReport, Drift, Privileges, Source, Variable,
};
use crate::{
    enrich::proxy_env::{ProxyEnv, ProxyVar},
    verdict::proxy::{parse_proxy_url, route, NoProxy, RequestScheme, Route, Rules},
};

/// Stable finding codes: scripts and `tracer diff` match on these.
pub mod codes {
    pub const PROXY_UNREACHABLE: &str = "proxy-unreachable";
    pub const PROXY_REFUSES_TUNNEL: &str = "proxy-refuses-tunnel";
    pub const PROXY_AUTH_REQUIRED: &str = "proxy-auth-required";
    pub const PROXY_AUTH_REJECTED: &str = "proxy-auth-rejected";
    pub const PROXY_UPSTREAM_FAILED: &str = "proxy-upstream-failed";
    pub const PROXY_BAD_REPLY: &str = "proxy-bad-reply";
    pub const PROBE_DIRECT_FAILED: &str = "probe-direct-failed";
    pub const DRIFT_CHANGED: &str = "drift-changed";
    pub const DRIFT_NOT_LIVE: &str = "drift-not-live";
    pub const DRIFT_NOT_CONFIGURED: &str = "drift-not-configured";
    pub const UNKNOWN_ORIGIN: &str = "unknown-origin";
    pub const LOOPBACK_PROXY_OTHER_NETNS: &str = "loopback-proxy-other-netns";
    pub const NO_PROXY_LOCALHOST: &str = "no-proxy-localhost";
    pub const NO_PROXY_NODE_ADDRESS: &str = "no-proxy-node-address";
    pub const NO_PROXY_CLUSTER_RANGE: &str = "no-proxy-cluster-range";
    pub const CASE_CONFLICT: &str = "case-conflict";
    pub const LOWER_CASE_ONLY: &str = "lower-case-only";
    pub const ALL_PROXY_IGNORED: &str = "all-proxy-ignored";
    pub const UNPARSABLE_PROXY: &str = "unparsable-proxy";
    pub const CREDENTIALS_WORLD_READABLE: &str = "credentials-world-readable";
    pub const RUNTIME_KUBELET_INCONSISTENT: &str = "runtime-kubelet-inconsistent";
    pub const ENVIRON_UNREADABLE: &str = "environ-unreadable";
    pub const NO_PRIVILEGES: &str = "no-privileges";
    pub const PROXY_INTERCEPTS_TLS: &str = "proxy-intercepts-tls";
    pub const PROXY_INTERCEPTS_TLS_TRUSTED: &str = "proxy-intercepts-tls-trusted";
    pub const TLS_CERTIFICATE_EXPIRED: &str = "tls-certificate-expired";
    pub const TLS_CERTIFICATE_WRONG_NAME: &str = "tls-certificate-wrong-name";
    pub const TLS_CERTIFICATE_UNKNOWN_AUTHORITY: &str = "tls-certificate-unknown-authority";
    pub const TLS_CERTIFICATE_INVALID: &str = "tls-certificate-invalid";
    pub const TLS_HANDSHAKE_FAILED: &str = "tls-handshake-failed";
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Breaks pulls or control-plane traffic now, or will at the next restart.
    Error,
    /// Likely to break something, or hides the truth.
    Warning,
    /// Worth knowing; does not make the node unhealthy.
    Info,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub severity: Severity,
    /// Stable code (see [`codes`]).
    pub code: String,
    /// One sentence to act on. Values are redacted.
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub daemon: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub variable: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub line: Option<u32>,
}

/// What the rules need besides the report itself.
pub struct Context<'a> {
    /// The live proxy environment, when it could be read.
    pub env: Option<&'a ProxyEnv>,
    pub configured: &'a Configured,
    pub node_addresses: &'a [String],
    pub expect: &'a [IpNet],
    pub host_root: &'a Path,
}

struct Out<'a> {
    daemon: &'a DaemonReport,
    findings: Vec<Finding>,
}

impl Out<'_> {
    fn push(&mut self, severity: Severity, code: &str, var: Option<&str>, message: String) {
        let source = var.and_then(|v| self.source(v));
        self.findings.push(Finding {
            severity,
            code: code.to_string(),
            message,
            daemon: Some(self.daemon.name.clone()),
            pid: Some(self.daemon.pid),
            variable: var.map(str::to_string),
            file: source.map(|s| s.file.clone()),
            line: source.map(|s| s.line),
        });
    }

    fn variable(&self, name: &str) -> Option<&Variable> {
        self.daemon.variables.iter().find(|v| v.name == name)
    }

    fn source(&self, name: &str) -> Option<&Source> {
        self.variable(name).and_then(|v| v.source.as_ref())
    }

    /// "HTTPS_PROXY is set in FILE:LINE" or "HTTPS_PROXY is not from any
    /// configuration found".
    fn set_clause(&self, name: &str) -> String {
        match self.source(name) {
            Some(s) => format!("{name} is set in {}", s.location()),
            None => format!("{name} is not from any configuration found"),
        }
    }

    /// "containerd (pid 1, containerd.service)"
    fn who(&self) -> String {
        let d = self.daemon;
        match &d.unit {
            Some(unit) => format!("{} (pid {}, {unit})", d.name, d.pid),
            None => format!("{} (pid {})", d.name, d.pid),
        }
    }

    /// Where its proxies were dialled from, for the findings' text.
    fn vantage(&self) -> String {
        match (self.daemon.measured_from, &self.daemon.measured_from_error) {
            (Vantage::Daemon, _) => "its network namespace".to_string(),
            (Vantage::Tracer, Some(why)) => {
                format!("the tracer's network namespace, not its own: {why}")
            }
            (Vantage::Tracer, None) => "the tracer's network namespace".to_string(),
        }
    }

    fn restart(&self) -> String {
        match &self.daemon.unit {
            Some(unit) => format!("systemctl daemon-reload && systemctl restart {unit}"),
            None => format!("restart {}", self.daemon.name),
        }
    }
}

/// Everything wrong with one daemon.
pub fn daemon_findings(daemon: &DaemonReport, ctx: &Context<'_>) -> Vec<Finding> {
    let mut out = Out {
        daemon,
        findings: Vec::new(),
    };
    if let Some(why) = &daemon.environ_error {
        out.push(
            Severity::Error,
            codes::ENVIRON_UNREADABLE,
            None,
            format!(
                "cannot read the live environment of {}: {why}; run as root or with CAP_SYS_PTRACE",
                out.who()
            ),
        );
        return out.findings;
    }
    let Some(env) = ctx.env else {
        return out.findings;
    };
    drift(&mut out);
    unparsable(&mut out);
    case_rules(&mut out, env);
    reachability(&mut out);
    probes(&mut out);
    tls_findings(&mut out);
    loopback_in_other_netns(&mut out, env);
    no_proxy_coverage(&mut out, env, ctx);
    world_readable_credentials(&mut out, ctx);
    out.findings
}

fn drift(out: &mut Out<'_>) {
    let who = out.who();
    let restart = out.restart();
    let vars: Vec<Variable> = out.daemon.variables.clone();
    for v in &vars {
        let live = v.live.as_deref().unwrap_or_default();
        let conf = v.configured.as_deref().unwrap_or_default();
        let at = v.source.as_ref().map(Source::location).unwrap_or_default();
        match v.drift {
            Some(Drift::Changed) => out.push(
                Severity::Error,
                codes::DRIFT_CHANGED,
                Some(&v.name),
                format!(
                    "{who} runs with {}={live}, but {at} now says {conf}: the file changed after it started; {restart}",
                    v.name
                ),
            ),
            Some(Drift::NotLive) => out.push(
                Severity::Error,
                codes::DRIFT_NOT_LIVE,
                Some(&v.name),
                format!(
                    "{} sets {}={conf} for {who}, but the running process does not have it: restart needed ({restart})",
                    at, v.name
                ),
            ),
            Some(Drift::NotConfigured) => out.push(
                Severity::Error,
                codes::DRIFT_NOT_CONFIGURED,
                Some(&v.name),
                format!(
                    "{who} runs with {}={live}, but no unit file, drop-in or environment file sets it any more (removed after the start?): the value is stale; {restart}",
                    v.name
                ),
            ),
            None => {
                if v.source.is_none() && v.live.as_deref().is_some_and(|l| !l.is_empty()) {
                    out.push(
                        Severity::Warning,
                        codes::UNKNOWN_ORIGIN,
                        Some(&v.name),
                        format!(
                            "{who} has {}={live}, not from any configuration found (inherited from the shell or process that started it?)",
                            v.name
                        ),
                    );
                }
            }
        }
    }
}

fn unparsable(out: &mut Out<'_>) {
    let who = out.who();
    let errors: Vec<(String, String)> = out
        .daemon
        .variables
        .iter()
        .filter_map(|v| v.error.clone().map(|e| (v.name.clone(), e)))
        .collect();
    for (name, error) in errors {
        let set = out.set_clause(&name);
        out.push(
            Severity::Error,
            codes::UNPARSABLE_PROXY,
            Some(&name),
            format!("{name} of {who} is not a usable proxy URL ({error}); {set}"),
        );
    }
}

/// Go reads the upper-case name first and takes the first non-empty value.
fn case_rules(out: &mut Out<'_>, env: &ProxyEnv) {
    let who = out.who();
    for (upper, lower) in [
        (ProxyVar::HttpsUpper, ProxyVar::HttpsLower),
        (ProxyVar::HttpUpper, ProxyVar::HttpLower),
        (ProxyVar::NoUpper, ProxyVar::NoLower),
    ] {
        match (env.non_empty(upper), env.non_empty(lower)) {
            (Some(u), Some(l)) if u != l => {
                let set = out.set_clause(lower.name());
                out.push(
                    Severity::Warning,
                    codes::CASE_CONFLICT,
                    Some(upper.name()),
                    format!(
                        "{who} has both {upper} and {lower} with different values: Go uses {upper}, curl and Python use {lower}; keep one ({set})"
                    ),
                )
            }
            (None, Some(_)) => out.push(
                Severity::Info,
                codes::LOWER_CASE_ONLY,
                Some(lower.name()),
                format!("{who} has only {lower}: Go uses it because {upper} is not set"),
            ),
            _ => {}
        }
    }
    for all in [ProxyVar::AllUpper, ProxyVar::AllLower] {
        if env.non_empty(all).is_some() {
            out.push(
                Severity::Info,
                codes::ALL_PROXY_IGNORED,
                Some(all.name()),
                format!(
                    "{who} has {all}, which Go's net/http ignores (only SOCKS dialers read it)"
                ),
            );
        }
    }
}

fn reachability(out: &mut Out<'_>) {
    let who = out.who();
    let checks = out.daemon.proxies.clone();
    for p in &checks {
        if p.tcp.result == ReachResult::Connected {
            continue;
        }
        let detail = p.tcp.detail.as_deref().unwrap_or(p.tcp.result.as_str());
        for var in &p.variables {
            // A proxy Go never uses (ignored lower case, ALL_PROXY) breaks
            // only other clients in the same environment.
            let used = out
                .daemon
                .selection
                .iter()
                .any(|s| s.variable.as_deref() == Some(var.as_str()));
            let severity = if used {
                Severity::Error
            } else {
                Severity::Warning
            };
            let set = out.set_clause(var);
            out.push(
                severity,
                codes::PROXY_UNREACHABLE,
                Some(var),
                format!(
                    "{who} cannot reach its proxy {}: {} ({detail}, measured from {}); {set}; start the proxy, or remove the setting and restart",
                    p.endpoint,
                    p.tcp.result.as_str(),
                    out.vantage()
                ),
            );
        }
    }
}

/// The TLS handshake of each probe, judged against the daemon's trust
/// (doctor/tls.rs, doctor/trust.rs).
fn tls_findings(out: &mut Out<'_>) {
    use super::tls::TlsVerdict;
    let who = out.who();
    let probes = out.daemon.probes.clone();
    for p in &probes {
        let Some(tls) = &p.tls else { continue };
        let var = p.variable.as_deref();
        let set = var
            .map(|v| format!("; {}", out.set_clause(v)))
            .unwrap_or_default();
        let proxy = p.proxy.as_deref().unwrap_or_default();
        let host = &tls.server_name;
        let trusts = tls.trust_words();
        let issuer = tls.issuer_name();
        let own = tls
            .direct_issuer_name()
            .map(|i| format!(", not the registry's own (issued by '{i}')"))
            .unwrap_or_default();
        let problem = tls
            .judgement
            .as_ref()
            .and_then(|j| Some((j.problem?, j.detail.clone().unwrap_or_default())));
        match tls.verdict {
            TlsVerdict::Intercepted => out.push(
                Severity::Error,
                codes::PROXY_INTERCEPTS_TLS,
                var,
                format!(
                    "the proxy {proxy} of {who} intercepts TLS to {}: it presented a certificate for {host} issued by '{issuer}'{own}, and {} trusts only {trusts} for {host}{set}; trust that CA for this registry (containerd: ca_file or certs.d/{host}/ca.crt), or put {host} in NO_PROXY",
                    p.target, out.daemon.name
                ),
            ),
            TlsVerdict::InterceptedTrusted => out.push(
                Severity::Info,
                codes::PROXY_INTERCEPTS_TLS_TRUSTED,
                var,
                format!(
                    "the proxy {proxy} of {who} intercepts TLS to {}: it presents a certificate issued by '{issuer}'{own}, which {} trusts ({trusts}); pulls work, and TLS inspection happens at the proxy",
                    p.target, out.daemon.name
                ),
            ),
            TlsVerdict::CertificateProblem | TlsVerdict::NotCompared => {
                let Some((problem, detail)) = problem else { continue };
                let through = match (tls.verdict, proxy.is_empty()) {
                    (TlsVerdict::NotCompared, _) => format!(
                        " (presented through the proxy {proxy}; {host} could not be reached directly to tell whether the proxy or the registry presented it)"
                    ),
                    (_, false) => format!(" (the same certificate arrives directly and through the proxy {proxy})"),
                    _ => String::new(),
                };
                let (code, what) = certificate_problem(problem, tls, issuer, &trusts);
                out.push(
                    Severity::Error,
                    code,
                    var,
                    format!("{} presents to {who} a certificate that {what}: {detail}{through}", p.target),
                );
            }
            TlsVerdict::NoHandshake => out.push(
                Severity::Warning,
                codes::TLS_HANDSHAKE_FAILED,
                var,
                format!(
                    "no TLS certificate came back from {}{}: {}",
                    p.target,
                    if proxy.is_empty() { String::new() } else { format!(" through the proxy {proxy}") },
                    tls.handshake.error.as_deref().unwrap_or("no reason given")
                ),
            ),
            TlsVerdict::Verified | TlsVerdict::NotIntercepted => {}
        }
    }
}

/// The finding code and the clause for a certificate the daemon refuses.
pub fn certificate_problem(
    problem: super::trust::Problem,
    tls: &super::tls::TlsProbe,
    issuer: &str,
    trusts: &str,
) -> (&'static str, String) {
    use super::trust::Problem;
    let leaf = tls.leaf();
    match problem {
        Problem::Expired => (
            codes::TLS_CERTIFICATE_EXPIRED,
            format!("expired on {}", leaf.map_or("?", |l| l.not_after.as_str())),
        ),
        Problem::NotYetValid => (
            codes::TLS_CERTIFICATE_INVALID,
            format!(
                "is not valid before {}",
                leaf.map_or("?", |l| l.not_before.as_str())
            ),
        ),
        Problem::WrongName => (
            codes::TLS_CERTIFICATE_WRONG_NAME,
            format!(
                "is not for {} (it names {})",
                tls.server_name,
                leaf.map(|l| if l.sans.is_empty() {
                    l.subject.clone()
                } else {
                    l.sans.join(", ")
                })
                .unwrap_or_default()
            ),
        ),
        Problem::UnknownAuthority => (
            codes::TLS_CERTIFICATE_UNKNOWN_AUTHORITY,
            format!("is issued by '{issuer}', which it does not trust (it trusts {trusts})"),
        ),
        Problem::Invalid => (codes::TLS_CERTIFICATE_INVALID, "it refuses".to_string()),
    }
}

fn probes(out: &mut Out<'_>) {
    let who = out.who();
    let probes = out.daemon.probes.clone();
    for p in &probes {
        let var = p.variable.as_deref();
        let set = var
            .map(|v| format!("; {}", out.set_clause(v)))
            .unwrap_or_default();
        let proxy = p.proxy.as_deref().unwrap_or_default();
        let has_credentials = proxy.contains("REDACTED@");
        match &p.tunnel {
            Some(Tunnel::Status { code, reason }) => {
                let status = format!("{code} {reason}");
                let (code_str, message) = match code {
                    200..=299 => continue,
                    407 if !has_credentials => (
                        codes::PROXY_AUTH_REQUIRED,
                        format!(
                            "the proxy {proxy} of {who} demands credentials ({status}) for {}, but {} has none{set}; put user:password in the URL",
                            p.target,
                            var.unwrap_or("the variable")
                        ),
                    ),
                    407 => (
                        codes::PROXY_AUTH_REJECTED,
                        format!(
                            "the proxy {proxy} of {who} rejects the credentials in {} ({status}){set}",
                            var.unwrap_or("the variable")
                        ),
                    ),
                    500..=599 => (
                        codes::PROXY_UPSTREAM_FAILED,
                        format!(
                            "the proxy {proxy} of {who} could not open {} ({status}): the proxy is up but cannot reach the target",
                            p.target
                        ),
                    ),
                    _ => (
                        codes::PROXY_REFUSES_TUNNEL,
                        format!(
                            "the proxy {proxy} of {who} refuses to tunnel to {} ({status}); check its ACL and ConnectPort",
                            p.target
                        ),
                    ),
                };
                out.push(Severity::Error, code_str, var, message);
            }
            // Reported once per proxy by reachability().
            Some(Tunnel::Unreached { .. }) | None => {}
            Some(Tunnel::BadReply { detail }) => out.push(
                Severity::Error,
                codes::PROXY_BAD_REPLY,
                var,
                format!(
                    "the proxy {proxy} of {who} gave no usable answer to CONNECT {}: {detail}",
                    p.target
                ),
            ),
            Some(Tunnel::Unsupported { .. }) => {}
        }
        if let Some(direct) = &p.direct {
            if direct.result != ReachResult::Connected {
                out.push(
                    Severity::Warning,
                    codes::PROBE_DIRECT_FAILED,
                    None,
                    format!(
                        "{who} would reach {} directly ({}), and that fails: {}",
                        p.target,
                        p.reason,
                        direct.result.as_str()
                    ),
                );
            }
        }
    }
}

fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn loopback_in_other_netns(out: &mut Out<'_>, env: &ProxyEnv) {
    if !out.daemon.own_network_namespace {
        return;
    }
    let who = out.who();
    for var in [
        ProxyVar::HttpsUpper,
        ProxyVar::HttpsLower,
        ProxyVar::HttpUpper,
        ProxyVar::HttpLower,
    ] {
        let Some(url) = env
            .non_empty(var)
            .and_then(|v| parse_proxy_url(v, Rules::Go).ok())
        else {
            continue;
        };
        if is_loopback_host(&url.host) {
            let set = out.set_clause(var.name());
            out.push(
                Severity::Error,
                codes::LOOPBACK_PROXY_OTHER_NETNS,
                Some(var.name()),
                format!(
                    "{who} runs in its own network namespace, so its proxy {} is its own loopback, not the node's (reachability was measured from {}); {set}",
                    url.redacted(),
                    out.vantage()
                ),
            );
        }
    }
}

/// The NO_PROXY variable Go reads, and its value.
fn no_proxy_in_effect(env: &ProxyEnv) -> (&'static str, &str) {
    for var in [ProxyVar::NoUpper, ProxyVar::NoLower] {
        if let Some(v) = env.non_empty(var) {
            return (var.name(), v);
        }
    }
    ("NO_PROXY", "")
}

/// A NO_PROXY list covers `net` when an entry is `*`, a CIDR containing it,
/// or (for one address) that address. Go matches CIDRs only against literal
/// IPs, which is what cluster traffic uses.
pub fn covers(no_proxy: &str, net: &IpNet) -> bool {
    no_proxy.split(',').map(str::trim).any(|entry| {
        entry == "*"
            || entry.parse::<IpNet>().is_ok_and(|e| e.contains(net))
            || entry
                .parse::<IpAddr>()
                .is_ok_and(|ip| net.prefix_len() == net.max_prefix_len() && ip == net.addr())
    })
}

fn no_proxy_coverage(out: &mut Out<'_>, env: &ProxyEnv, ctx: &Context<'_>) {
    let has_proxy = [RequestScheme::Https, RequestScheme::Http].iter().any(|s| {
        matches!(
            crate::verdict::proxy::select_proxy(env, *s, Rules::Go),
            Some(Ok(_))
        )
    });
    if !has_proxy {
        return;
    }
    let who = out.who();
    let (var, value) = no_proxy_in_effect(env);
    if !NoProxy::parse_for(value, Rules::Go).matches_list("localhost", 443) {
        out.push(
            Severity::Info,
            codes::NO_PROXY_LOCALHOST,
            Some(var),
            format!("{var} of {who} does not list localhost: Go never proxies it anyway, but curl and Python in the same environment would"),
        );
    }
    let uncovered: Vec<&str> = ctx
        .node_addresses
        .iter()
        .filter(|addr| {
            matches!(
                route(env, RequestScheme::Https, addr, 443, Rules::Go),
                Route::Proxy(_) | Route::CgiRefused(_)
            )
        })
        .map(String::as_str)
        .collect();
    if !uncovered.is_empty() {
        out.push(
            Severity::Warning,
            codes::NO_PROXY_NODE_ADDRESS,
            Some(var),
            format!(
                "{var} of {who} does not cover the node's own address(es) {}: requests to this node go through the proxy",
                uncovered.join(", ")
            ),
        );
    }
    let missing: Vec<String> = ctx
        .expect
        .iter()
        .filter(|net| !covers(value, net))
        .map(ToString::to_string)
        .collect();
    if !missing.is_empty() {
        out.push(
            Severity::Warning,
            codes::NO_PROXY_CLUSTER_RANGE,
            Some(var),
            format!(
                "{var} of {who} does not cover the cluster range(s) {}: pod and service traffic goes through the proxy",
                missing.join(", ")
            ),
        );
    }
}

fn world_readable_credentials(out: &mut Out<'_>, ctx: &Context<'_>) {
    let who = out.who();
    let mut seen = Vec::new();
    for (name, var) in &ctx.configured.vars {
        let has_credentials =
            parse_proxy_url(&var.value, Rules::Go).is_ok_and(|u| u.has_credentials);
        if !has_credentials || seen.contains(&var.source.file) {
            continue;
        }
        let Some(info) = host_file_info(ctx.host_root, Path::new(&var.source.file)) else {
            continue;
        };
        if info.mode & 0o004 != 0 {
            seen.push(var.source.file.clone());
            out.push(
                Severity::Warning,
                codes::CREDENTIALS_WORLD_READABLE,
                Some(name),
                format!(
                    "{} holds proxy credentials for {who} ({name}) and is world-readable (mode {:o}); chmod 600 it, or move the credentials to an EnvironmentFile= only root can read",
                    var.source.location(),
                    info.mode
                ),
            );
        }
    }
}

/// Findings about the node as a whole.
pub fn node_findings(daemons: &[DaemonReport]) -> Vec<Finding> {
    let mut out = Vec::new();
    let runtime = daemons.iter().find(|d| {
        matches!(d.name.as_str(), "containerd" | "crio" | "dockerd") && d.environ_error.is_none()
    });
    let kubelet = daemons
        .iter()
        .find(|d| d.name == "kubelet" && d.environ_error.is_none());
    if let (Some(rt), Some(kl)) = (runtime, kubelet) {
        let view = |d: &DaemonReport| {
            let mut v: Vec<(String, Option<String>)> = d
                .selection
                .iter()
                .map(|s| (s.scheme.clone(), s.url.clone()))
                .collect();
            let no = d
                .variables
                .iter()
                .find(|v| v.name == "NO_PROXY" && v.live.as_deref().is_some_and(|l| !l.is_empty()))
                .or_else(|| d.variables.iter().find(|v| v.name == "no_proxy"))
                .and_then(|v| v.live.clone());
            v.push(("no_proxy".into(), no));
            v
        };
        let (a, b) = (view(rt), view(kl));
        let differing: Vec<String> = a
            .iter()
            .zip(&b)
            .filter(|(x, y)| x != y)
            .map(|((what, x), (_, y))| {
                let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "(none)".into());
                format!(
                    "{what}: {} has {}, kubelet has {}",
                    rt.name,
                    show(x),
                    show(y)
                )
            })
            .collect();
        if !differing.is_empty() {
            out.push(Finding {
                severity: Severity::Warning,
                code: codes::RUNTIME_KUBELET_INCONSISTENT.to_string(),
                message: format!(
                    "{} and kubelet are configured differently ({}): pulls and API calls take different paths",
                    rt.name,
                    differing.join("; ")
                ),
                daemon: Some(rt.name.clone()),
                pid: Some(rt.pid),
                variable: None,
                file: None,
                line: None,
            });
        }
    }
    out
}

pub fn no_privileges(p: &Privileges) -> Finding {
    Finding {
        severity: Severity::Error,
        code: codes::NO_PRIVILEGES.to_string(),
        message: format!(
            "{}; run tracer doctor as root (sudo) or grant it CAP_SYS_PTRACE",
            p.detail
                .as_deref()
                .unwrap_or("cannot read other processes' environments")
        ),
        daemon: None,
        pid: None,
        variable: None,
        file: None,
        line: None,
    }
}

#[cfg(test)]
#[path = "findings_tests.rs"]
mod tests;
