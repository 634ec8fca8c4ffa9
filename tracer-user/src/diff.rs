//! `tracer diff A.json B.json`: the incident review's "horizontal
//! comparison" (bad node against good node) done on two `tracer doctor
//! --format json` reports.
//!
//! Daemons are paired by name and unit, variables by exact name. What is
//! compared: each variable's value (already redacted in the reports), where
//! it is set (file:line), its drift, the reachability of the proxy it names,
//! each probe's route and result, and the findings' codes. Pids, start times
//! and the report's own time differ between any two runs and are left out.

use std::{collections::BTreeSet, fmt::Write, path::Path};

use serde::{Deserialize, Serialize};

use crate::doctor::{text::tunnel_word, DaemonReport, Report, RouteKind, Severity, SCHEMA_VERSION};

#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a tracer doctor JSON report (make it with `tracer doctor --format json`): {source}")]
    Parse {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "{path} has report schema version {found}; this tracer reads version {SCHEMA_VERSION}"
    )]
    Version { path: String, found: u32 },
}

/// Which node a side is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Side {
    pub file: String,
    pub hostname: String,
    pub kernel: String,
    pub time: String,
}

/// One thing that differs. `a`/`b` absent: not there on that side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Difference {
    /// `containerd (containerd.service)`.
    pub daemon: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub variable: Option<String>,
    /// `daemon`, `environ`, `value`, `source`, `drift`, `reachability`,
    /// `probe <target>`, `finding`.
    pub field: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub a: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub b: Option<String>,
    /// Counts for the exit status (everything but informational findings).
    pub matters: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Comparison {
    pub a: Side,
    pub b: Side,
    pub differences: Vec<Difference>,
    /// Some difference matters: exit status 1.
    pub differs: bool,
}

pub fn load(path: &Path) -> Result<Report, DiffError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| DiffError::Read {
        path: shown.clone(),
        source,
    })?;
    let report: Report = serde_json::from_str(&text).map_err(|source| DiffError::Parse {
        path: shown.clone(),
        source,
    })?;
    if report.schema_version != SCHEMA_VERSION {
        return Err(DiffError::Version {
            path: shown,
            found: report.schema_version,
        });
    }
    Ok(report)
}

fn side(file: &str, r: &Report) -> Side {
    Side {
        file: file.to_string(),
        hostname: r.node.hostname.clone(),
        kernel: r.node.kernel.clone(),
        time: r.node.time.clone(),
    }
}

fn key(d: &DaemonReport) -> String {
    match &d.unit {
        Some(unit) => format!("{} ({unit})", d.name),
        None => d.name.clone(),
    }
}

/// Compare report `a` (from `a_file`) with `b`.
pub fn compare(a_file: &str, a: &Report, b_file: &str, b: &Report) -> Comparison {
    let mut diffs = Vec::new();
    let mut keys: Vec<String> = Vec::new();
    for d in a.daemons.iter().chain(&b.daemons) {
        if !keys.contains(&key(d)) {
            keys.push(key(d));
        }
    }
    for k in &keys {
        let da = a.daemons.iter().find(|d| &key(d) == k);
        let db = b.daemons.iter().find(|d| &key(d) == k);
        match (da, db) {
            (Some(da), Some(db)) => daemon(k, da, db, &mut diffs),
            (da, db) => diffs.push(Difference {
                daemon: k.clone(),
                variable: None,
                field: "daemon".into(),
                a: da.map(|_| "running".to_string()),
                b: db.map(|_| "running".to_string()),
                matters: true,
            }),
        }
    }
    findings("node", &a.findings, &b.findings, &mut diffs);
    let differs = diffs.iter().any(|d| d.matters);
    Comparison {
        a: side(a_file, a),
        b: side(b_file, b),
        differences: diffs,
        differs,
    }
}

fn push(
    out: &mut Vec<Difference>,
    daemon: &str,
    var: Option<&str>,
    field: &str,
    a: Option<String>,
    b: Option<String>,
) {
    if a != b {
        out.push(Difference {
            daemon: daemon.to_string(),
            variable: var.map(str::to_string),
            field: field.to_string(),
            a,
            b,
            matters: true,
        });
    }
}

fn daemon(k: &str, a: &DaemonReport, b: &DaemonReport, out: &mut Vec<Difference>) {
    push(
        out,
        k,
        None,
        "environ",
        a.environ_error.clone(),
        b.environ_error.clone(),
    );
    let mut names: Vec<&str> = Vec::new();
    for v in a.variables.iter().chain(&b.variables) {
        if !names.contains(&v.name.as_str()) {
            names.push(&v.name);
        }
    }
    for name in names {
        let va = a.variables.iter().find(|v| v.name == name);
        let vb = b.variables.iter().find(|v| v.name == name);
        let value = |v: Option<&crate::doctor::Variable>| v.and_then(|v| v.live.clone());
        let source = |v: Option<&crate::doctor::Variable>| {
            v.and_then(|v| v.source.as_ref()).map(|s| s.location())
        };
        let drift = |v: Option<&crate::doctor::Variable>| {
            v.and_then(|v| v.drift)
                .and_then(|d| serde_json::to_value(d).ok())
                .and_then(|d| d.as_str().map(str::to_string))
        };
        let reach = |d: &DaemonReport| {
            d.proxies
                .iter()
                .find(|p| p.variables.iter().any(|v| v == name))
                .map(|p| p.tcp.result.as_str().to_string())
        };
        push(out, k, Some(name), "value", value(va), value(vb));
        push(out, k, Some(name), "source", source(va), source(vb));
        push(out, k, Some(name), "drift", drift(va), drift(vb));
        push(out, k, Some(name), "reachability", reach(a), reach(b));
    }
    let mut targets: Vec<&str> = Vec::new();
    for p in a.probes.iter().chain(&b.probes) {
        if !targets.contains(&p.target.as_str()) {
            targets.push(&p.target);
        }
    }
    for t in targets {
        let probe = |d: &DaemonReport| {
            d.probes.iter().find(|p| p.target == t).map(|p| {
                match (&p.route, &p.tunnel, &p.direct) {
                    (RouteKind::Proxy, Some(tun), _) => format!(
                        "through {}: {}",
                        p.proxy.as_deref().unwrap_or(""),
                        tunnel_word(tun)
                    ),
                    (_, _, Some(r)) => format!("direct: {}", r.result.as_str()),
                    _ => p.reason.clone(),
                }
            })
        };
        push(out, k, None, &format!("probe {t}"), probe(a), probe(b));
    }
    findings(k, &a.findings, &b.findings, out);
}

/// Findings present on one side only, by code and variable.
fn findings(
    k: &str,
    a: &[crate::doctor::Finding],
    b: &[crate::doctor::Finding],
    out: &mut Vec<Difference>,
) {
    let set = |fs: &[crate::doctor::Finding]| -> BTreeSet<(String, Option<String>, Severity)> {
        fs.iter()
            .map(|f| (f.code.clone(), f.variable.clone(), f.severity))
            .collect()
    };
    let (sa, sb) = (set(a), set(b));
    for (code, var, sev) in sa.symmetric_difference(&sb) {
        let here = |s: &BTreeSet<_>| {
            s.contains(&(code.clone(), var.clone(), *sev))
                .then(|| code.clone())
        };
        out.push(Difference {
            daemon: k.to_string(),
            variable: var.clone(),
            field: "finding".into(),
            a: here(&sa),
            b: here(&sb),
            matters: *sev != Severity::Info,
        });
    }
}

/// `tracer diff`: print the comparison; the exit status (0 same, 1 a
/// difference that matters, 2 a report that cannot be read).
pub fn command(args: &crate::cli::DiffArgs) -> u8 {
    let (a, b) = match (load(&args.a), load(&args.b)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("tracer diff: error: {e}");
            return 2;
        }
    };
    let c = compare(
        &args.a.display().to_string(),
        &a,
        &args.b.display().to_string(),
        &b,
    );
    match args.format {
        crate::cli::ReportFormat::Text => print!("{}", crate::redact::printable_lines(&render(&c))),
        crate::cli::ReportFormat::Json => match serde_json::to_string_pretty(&c) {
            Ok(json) => println!("{json}"),
            Err(e) => {
                eprintln!("tracer diff: error: {e}");
                return 2;
            }
        },
    }
    u8::from(c.differs)
}

pub fn render(c: &Comparison) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "A: {} ({}, kernel {}, {})",
        c.a.file, c.a.hostname, c.a.kernel, c.a.time
    );
    let _ = writeln!(
        s,
        "B: {} ({}, kernel {}, {})",
        c.b.file, c.b.hostname, c.b.kernel, c.b.time
    );
    if c.differences.is_empty() {
        let _ = writeln!(s, "\nno differences");
        return s;
    }
    s.push('\n');
    for d in &c.differences {
        let what = match &d.variable {
            Some(v) => format!("{} {v} {}", d.daemon, d.field),
            None => format!("{} {}", d.daemon, d.field),
        };
        let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "(none)".into());
        let _ = writeln!(s, "{what}:\n  A: {}\n  B: {}", show(&d.a), show(&d.b));
    }
    let n = c.differences.iter().filter(|d| d.matters).count();
    let _ = writeln!(s, "\n{n} difference(s) that matter");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::{
        reach::{Reach, ReachResult},
        Node, Origin, Privileges, ProxyCheck, Source, Summary, Variable,
    };

    fn report(pid: u32, with_proxy: bool) -> Report {
        let mut d = DaemonReport {
            name: "containerd".into(),
            comm: "containerd".into(),
            pid,
            identified_by: None,
            exe: None,
            unit: Some("containerd.service".into()),
            cgroup: None,
            parent: None,
            started: Some(format!("2026-01-01T00:00:{:02}Z", pid % 60)),
            own_network_namespace: false,
            measured_from: crate::doctor::Vantage::Daemon,
            measured_from_error: None,
            environ_error: None,
            config_files: vec![],
            config_warnings: vec![],
            variables: vec![],
            selection: vec![],
            proxies: vec![],
            probes: vec![],
            findings: vec![],
        };
        if with_proxy {
            d.variables.push(Variable {
                name: "HTTPS_PROXY".into(),
                live: Some("http://127.0.0.1:9".into()),
                configured: Some("http://127.0.0.1:9".into()),
                source: Some(Source {
                    origin: Origin::Environment,
                    file: "/etc/systemd/system/containerd.service.d/http-proxy.conf".into(),
                    line: 3,
                    unit_file: None,
                    unit_line: None,
                    modified_after_start: None,
                }),
                drift: None,
                error: None,
            });
            d.proxies.push(ProxyCheck {
                url: "http://127.0.0.1:9".into(),
                endpoint: "127.0.0.1:9".into(),
                variables: vec!["HTTPS_PROXY".into()],
                tcp: Reach {
                    result: ReachResult::Refused,
                    address: None,
                    detail: None,
                },
            });
        }
        Report {
            schema_version: SCHEMA_VERSION,
            node: Node {
                hostname: format!("node{pid}"),
                kernel: "6.18".into(),
                time: format!("t{pid}"),
                addresses: vec![],
            },
            privileges: Privileges {
                can_read_environ: true,
                detail: None,
            },
            probes: vec![],
            no_proxy_expect: vec![],
            daemons: vec![d],
            findings: vec![],
            summary: Summary {
                healthy: true,
                errors: 0,
                warnings: 0,
                infos: 0,
            },
        }
    }

    #[test]
    fn bad_node_against_good_node() {
        let c = compare("a", &report(1, true), "b", &report(2, false));
        assert!(c.differs);
        let fields: Vec<_> = c
            .differences
            .iter()
            .map(|d| (d.variable.as_deref(), d.field.as_str()))
            .collect();
        assert_eq!(
            fields,
            [
                (Some("HTTPS_PROXY"), "value"),
                (Some("HTTPS_PROXY"), "source"),
                (Some("HTTPS_PROXY"), "reachability")
            ]
        );
        assert_eq!(
            c.differences[1].a.as_deref(),
            Some("/etc/systemd/system/containerd.service.d/http-proxy.conf:3")
        );
        let text = render(&c);
        assert!(
            text.contains("containerd (containerd.service) HTTPS_PROXY source"),
            "{text}"
        );
    }

    #[test]
    fn pids_and_times_do_not_count() {
        let c = compare("a", &report(1, true), "b", &report(7, true));
        assert!(!c.differs, "{:?}", c.differences);
        assert!(c.differences.is_empty());
    }

    #[test]
    fn a_daemon_on_one_side_only() {
        let mut b = report(2, false);
        b.daemons.clear();
        let c = compare("a", &report(1, false), "b", &b);
        assert!(c.differs);
        assert_eq!(c.differences[0].field, "daemon");
        assert_eq!(c.differences[0].b, None);
    }
}
