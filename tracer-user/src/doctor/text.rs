//! The report for a person at a terminal: per daemon, each variable with
//! where it is set, Go's pick, every proxy's reachability and each probe;
//! then the findings, worst first. Values are already redacted.

use std::fmt::Write;

use super::{reach::Tunnel, DaemonReport, Drift, Report, RouteKind};

pub fn render(report: &Report) -> String {
    let mut s = String::new();
    let n = &report.node;
    let _ = writeln!(
        s,
        "tracer doctor on {} (kernel {}, {})",
        n.hostname, n.kernel, n.time
    );
    if !report.privileges.can_read_environ {
        if let Some(d) = &report.privileges.detail {
            let _ = writeln!(s, "  warning: {d}");
        }
    }
    if report.daemons.is_empty() {
        let _ = writeln!(s, "\nno runtime daemon found (containerd, dockerd, crio, kubelet, buildkitd, cri-dockerd, podman system service, k3s, rke2, each by its executable under the host root in a service of the host's system manager; --comm adds others run by such a service, --pid names any process)");
    }
    for d in &report.daemons {
        s.push('\n');
        daemon(&mut s, d);
    }
    let findings: Vec<_> = {
        let mut all: Vec<_> = report
            .daemons
            .iter()
            .flat_map(|d| d.findings.iter())
            .chain(&report.findings)
            .collect();
        all.sort_by_key(|f| f.severity);
        all
    };
    if !findings.is_empty() {
        let _ = writeln!(s, "\nfindings:");
        for f in findings {
            let at = match (&f.file, f.line) {
                (Some(file), Some(line)) => format!(" [{file}:{line}]"),
                _ => String::new(),
            };
            let _ = writeln!(
                s,
                "  {:<7} {}{at}: {}",
                f.severity.as_str().to_uppercase(),
                f.code,
                f.message
            );
        }
    }
    let sum = &report.summary;
    let _ = writeln!(
        s,
        "\n{}: {} error(s), {} warning(s), {} note(s)",
        if sum.healthy {
            "healthy"
        } else {
            "problems found"
        },
        sum.errors,
        sum.warnings,
        sum.infos
    );
    s
}

/// One daemon's block.
pub fn daemon(s: &mut String, d: &DaemonReport) {
    let mut head = format!("{} (pid {}", d.name, d.pid);
    if let Some(unit) = &d.unit {
        head.push_str(&format!(", {unit}"));
    }
    if let Some(parent) = &d.parent {
        head.push_str(&format!(", started by {parent}"));
    }
    if d.own_network_namespace {
        head.push_str(", own network namespace");
    }
    let _ = writeln!(s, "{head})");
    if let Some(how) = &d.identified_by {
        let _ = writeln!(s, "  identified by: {}", how.describe());
    }
    if let Some(e) = &d.environ_error {
        let _ = writeln!(s, "  environment: {e}");
        return;
    }
    if d.variables.is_empty() {
        let _ = writeln!(s, "  no proxy variable, live or configured");
    }
    for v in &d.variables {
        let live = v.live.as_deref().unwrap_or("(not set)");
        let from = match &v.source {
            Some(src) => {
                let mut t = format!("from {} ({})", src.location(), origin_word(src.origin));
                if let (Some(f), Some(l)) = (&src.unit_file, src.unit_line) {
                    t.push_str(&format!(" via {f}:{l}"));
                }
                t
            }
            None if v.live.is_some() => "not from any configuration found".to_string(),
            None => String::new(),
        };
        let drift = match v.drift {
            Some(Drift::Changed) => format!(
                "; DRIFT: configured now {}",
                v.configured.as_deref().unwrap_or("")
            ),
            Some(Drift::NotLive) => "; DRIFT: configured but not live (restart needed)".to_string(),
            Some(Drift::NotConfigured) => "; DRIFT: no configuration sets it any more".to_string(),
            None => String::new(),
        };
        let _ = writeln!(s, "  {:<11} = {live}  {from}{drift}", v.name);
        if let Some(e) = &v.error {
            let _ = writeln!(s, "  {:<11}   does not parse: {e}", "");
        }
    }
    for sel in &d.selection {
        if let Some(var) = &sel.variable {
            let mut line = format!(
                "  Go uses for {}: {var} {}",
                sel.scheme,
                sel.url.as_deref().unwrap_or("(unparsable: goes direct)")
            );
            if !sel.ignored.is_empty() {
                line.push_str(&format!(" (ignores {})", sel.ignored.join(", ")));
            }
            let _ = writeln!(s, "{line}");
        }
    }
    if let (Some(why), false) = (&d.measured_from_error, d.proxies.is_empty()) {
        let _ = writeln!(s, "  dialled from the tracer's network namespace: {why}");
    }
    for p in &d.proxies {
        let detail = p
            .tcp
            .detail
            .as_deref()
            .map(|t| format!(" ({t})"))
            .unwrap_or_default();
        let _ = writeln!(
            s,
            "  proxy {} [{}]: {}{detail}",
            p.endpoint,
            p.variables.join(", "),
            p.tcp.result.as_str()
        );
    }
    for p in &d.probes {
        let result = match (&p.route, &p.tunnel, &p.direct) {
            (RouteKind::Proxy, Some(t), _) => format!(
                "through {}: {}",
                p.proxy.as_deref().unwrap_or(""),
                tunnel_word(t)
            ),
            (_, _, Some(r)) => format!("direct ({}): {}", p.reason, r.result.as_str()),
            _ => p.reason.clone(),
        };
        let _ = writeln!(s, "  probe {}: {result}", p.target);
        if let Some(tls) = &p.tls {
            let _ = writeln!(s, "    tls: {}", tls_line(tls));
        }
    }
}

/// "intercepted: leaf CN=203.0.113.66 issued by 'mitmproxy' (TLS 1.3),
/// registry's own issued by 'registry.test'"
pub fn tls_line(tls: &super::tls::TlsProbe) -> String {
    let mut line = tls.verdict.as_str().replace('_', " ");
    if let Some(leaf) = tls.leaf() {
        line.push_str(&format!(
            ": certificate {} issued by '{}', valid {} to {}",
            leaf.subject, leaf.issuer_name, leaf.not_before, leaf.not_after
        ));
    }
    if let Some(v) = &tls.handshake.version {
        line.push_str(&format!(" (TLS {v})"));
    }
    if let Some(p) = tls.judgement.as_ref().and_then(|j| j.problem) {
        line.push_str(&format!("; {}", p.as_str().replace('_', " ")));
    }
    if let Some(own) = tls.direct.as_ref().and_then(|d| d.leaf.as_ref()) {
        line.push_str(&format!("; directly: issued by '{}'", own.issuer_name));
    }
    if let Some(e) = &tls.handshake.error {
        line.push_str(&format!("; {e}"));
    }
    line
}

fn origin_word(o: super::Origin) -> &'static str {
    match o {
        super::Origin::Environment => "Environment=",
        super::Origin::EnvironmentFile => "EnvironmentFile=",
        super::Origin::DefaultEnvironment => "DefaultEnvironment=",
        super::Origin::EtcDefault => "/etc/default",
        super::Origin::ContainerdPrefix => "CONTAINERD_ prefix",
    }
}

pub fn tunnel_word(t: &Tunnel) -> String {
    match t {
        Tunnel::Status { code, reason } => format!("CONNECT {code} {reason}"),
        Tunnel::Unreached { reach } => reach.result.as_str().to_string(),
        Tunnel::BadReply { detail } => format!("bad reply: {detail}"),
        Tunnel::Unsupported { detail } => format!("not probed: {detail}"),
    }
}
