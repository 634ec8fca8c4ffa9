//! Findings from synthetic daemons: each rule on the smallest input that
//! triggers it, and the inputs that must not.

use super::*;
use crate::doctor::{
    reach::Reach,
    sources::{variables, ConfiguredVar},
    Origin, ProbeResult, ProxyCheck, RouteKind,
};

fn env(pairs: &[(&str, &str)]) -> ProxyEnv {
    let mut raw = Vec::new();
    for (k, v) in pairs {
        raw.extend_from_slice(format!("{k}={v}\0").as_bytes());
    }
    ProxyEnv::from_environ(&raw)
}

fn configured(pairs: &[(&str, &str, u32)]) -> Configured {
    let mut c = Configured {
        managed: true,
        ..Default::default()
    };
    for (k, v, line) in pairs {
        c.vars.insert(
            k.to_string(),
            ConfiguredVar {
                value: v.to_string(),
                source: Source {
                    origin: Origin::Environment,
                    file: "/etc/systemd/system/containerd.service.d/http-proxy.conf".into(),
                    line: *line,
                    unit_file: None,
                    unit_line: None,
                    modified_after_start: None,
                },
            },
        );
    }
    c
}

fn daemon(env: &ProxyEnv, conf: &Configured) -> DaemonReport {
    DaemonReport {
        name: "containerd".into(),
        comm: "containerd".into(),
        pid: 42,
        identified_by: None,
        exe: None,
        unit: Some("containerd.service".into()),
        cgroup: None,
        parent: None,
        started: None,
        own_network_namespace: false,
        measured_from: crate::doctor::Vantage::Daemon,
        measured_from_error: None,
        environ_error: None,
        config_files: vec![],
        config_warnings: vec![],
        variables: variables(env, conf),
        selection: super::super::selection_of(env),
        proxies: vec![],
        probes: vec![],
        findings: vec![],
    }
}

fn judge(
    d: &DaemonReport,
    env: &ProxyEnv,
    conf: &Configured,
    expect: &[IpNet],
    addrs: &[String],
) -> Vec<Finding> {
    let ctx = Context {
        env: Some(env),
        configured: conf,
        node_addresses: addrs,
        expect,
        host_root: Path::new("/nonexistent-doctor-root"),
    };
    daemon_findings(d, &ctx)
}

fn codes_of(f: &[Finding]) -> Vec<&str> {
    f.iter().map(|f| f.code.as_str()).collect()
}

const NO_PROXY_OK: &str = "localhost,127.0.0.1,192.0.2.2";

#[test]
fn the_incident_names_daemon_variable_file_line_and_refused() {
    let e = env(&[
        ("HTTPS_PROXY", "http://127.0.0.1:7897"),
        ("NO_PROXY", NO_PROXY_OK),
    ]);
    let c = configured(&[
        ("HTTPS_PROXY", "http://127.0.0.1:7897", 3),
        ("NO_PROXY", NO_PROXY_OK, 4),
    ]);
    let mut d = daemon(&e, &c);
    d.proxies.push(ProxyCheck {
        url: "http://127.0.0.1:7897".into(),
        endpoint: "127.0.0.1:7897".into(),
        variables: vec!["HTTPS_PROXY".into()],
        tcp: Reach {
            result: ReachResult::Refused,
            address: Some("127.0.0.1:7897".into()),
            detail: Some("connection refused".into()),
        },
    });
    let f = judge(&d, &e, &c, &[], &["192.0.2.2".into()]);
    assert_eq!(codes_of(&f), [codes::PROXY_UNREACHABLE]);
    let f = &f[0];
    assert_eq!(f.severity, Severity::Error);
    assert_eq!(f.variable.as_deref(), Some("HTTPS_PROXY"));
    assert_eq!(f.line, Some(3));
    assert!(f.message.contains("refused"), "{}", f.message);
    assert!(f
        .message
        .contains("containerd (pid 42, containerd.service)"));
}

#[test]
fn healthy_configuration_has_no_findings() {
    let e = env(&[
        ("HTTPS_PROXY", "http://127.0.0.1:3128"),
        ("NO_PROXY", NO_PROXY_OK),
    ]);
    let c = configured(&[
        ("HTTPS_PROXY", "http://127.0.0.1:3128", 3),
        ("NO_PROXY", NO_PROXY_OK, 4),
    ]);
    let d = daemon(&e, &c);
    assert!(judge(&d, &e, &c, &[], &["192.0.2.2".into()]).is_empty());
}

#[test]
fn go_case_rules_upper_wins_and_conflicts_are_flagged() {
    let e = env(&[
        ("HTTPS_PROXY", "http://upper:1"),
        ("https_proxy", "http://lower:1"),
        ("http_proxy", "http://only-lower:1"),
        ("NO_PROXY", "*"),
    ]);
    let c = Configured::default();
    let d = daemon(&e, &c);
    let https = d.selection.iter().find(|s| s.scheme == "https").unwrap();
    assert_eq!(https.variable.as_deref(), Some("HTTPS_PROXY"));
    assert_eq!(https.ignored, ["https_proxy"]);
    let http = d.selection.iter().find(|s| s.scheme == "http").unwrap();
    assert_eq!(http.variable.as_deref(), Some("http_proxy"));
    let f = judge(&d, &e, &c, &[], &[]);
    let conflict = f.iter().find(|f| f.code == codes::CASE_CONFLICT).unwrap();
    assert_eq!(conflict.variable.as_deref(), Some("HTTPS_PROXY"));
    assert!(conflict.message.contains("Go uses HTTPS_PROXY"));
    assert!(f
        .iter()
        .any(|f| f.code == codes::LOWER_CASE_ONLY && f.severity == Severity::Info));
    // Same value in both cases: no conflict.
    let e = env(&[
        ("HTTPS_PROXY", "http://p:1"),
        ("https_proxy", "http://p:1"),
        ("NO_PROXY", "*"),
    ]);
    assert!(!codes_of(&judge(&daemon(&e, &c), &e, &c, &[], &[])).contains(&codes::CASE_CONFLICT));
}

#[test]
fn no_proxy_coverage_of_node_addresses_and_cluster_ranges() {
    let e = env(&[
        ("HTTPS_PROXY", "http://p:1"),
        ("NO_PROXY", "localhost,10.96.0.0/12"),
    ]);
    let c = Configured::default();
    let d = daemon(&e, &c);
    let expect = [
        "10.96.0.0/16".parse().unwrap(),
        "10.244.0.0/16".parse().unwrap(),
    ];
    let f = judge(&d, &e, &c, &expect, &["192.0.2.2".into()]);
    let node = f
        .iter()
        .find(|f| f.code == codes::NO_PROXY_NODE_ADDRESS)
        .unwrap();
    assert!(node.message.contains("192.0.2.2"));
    let range = f
        .iter()
        .find(|f| f.code == codes::NO_PROXY_CLUSTER_RANGE)
        .unwrap();
    assert!(range.message.contains("10.244.0.0/16") && !range.message.contains("10.96.0.0/16"));
    assert!(covers("a,*", &expect[1]));
    assert!(covers(" 10.0.0.0/8 ", &expect[1]));
    assert!(covers("10.96.0.10", &"10.96.0.10/32".parse().unwrap()));
    assert!(!covers("10.96.0.10", &expect[0]));
    // Without a proxy NO_PROXY does not matter.
    let e = env(&[("NO_PROXY", "x")]);
    let f = judge(&daemon(&e, &c), &e, &c, &expect, &["192.0.2.2".into()]);
    assert!(
        !codes_of(&f).iter().any(|c| c.starts_with("no-proxy")),
        "{f:?}"
    );
}

#[test]
fn auth_required_says_the_variable_has_no_credentials_and_where_it_is_set() {
    let e = env(&[
        ("HTTPS_PROXY", "http://127.0.0.1:3128"),
        ("NO_PROXY", NO_PROXY_OK),
    ]);
    let c = configured(&[
        ("HTTPS_PROXY", "http://127.0.0.1:3128", 3),
        ("NO_PROXY", NO_PROXY_OK, 4),
    ]);
    let mut d = daemon(&e, &c);
    let probe = |code, reason: &str, proxy: &str| ProbeResult {
        target: "198.51.100.2:443".into(),
        route: RouteKind::Proxy,
        reason: String::new(),
        variable: Some("HTTPS_PROXY".into()),
        proxy: Some(proxy.into()),
        tunnel: Some(Tunnel::Status {
            code,
            reason: reason.into(),
        }),
        direct: None,
        tls: None,
    };
    d.probes = vec![probe(
        407,
        "Proxy Authentication Required",
        "http://127.0.0.1:3128",
    )];
    let f = judge(&d, &e, &c, &[], &["192.0.2.2".into()]);
    assert_eq!(codes_of(&f), [codes::PROXY_AUTH_REQUIRED]);
    assert!(
        f[0].message.contains("HTTPS_PROXY has none"),
        "{}",
        f[0].message
    );
    assert!(f[0].message.contains("http-proxy.conf:3"));
    d.probes = vec![probe(407, "x", "http://REDACTED@127.0.0.1:3128")];
    assert_eq!(
        codes_of(&judge(&d, &e, &c, &[], &["192.0.2.2".into()])),
        [codes::PROXY_AUTH_REJECTED]
    );
    d.probes = vec![probe(403, "Forbidden", "http://127.0.0.1:3128")];
    assert_eq!(
        codes_of(&judge(&d, &e, &c, &[], &["192.0.2.2".into()])),
        [codes::PROXY_REFUSES_TUNNEL]
    );
    d.probes = vec![probe(500, "Unable to connect", "http://127.0.0.1:3128")];
    assert_eq!(
        codes_of(&judge(&d, &e, &c, &[], &["192.0.2.2".into()])),
        [codes::PROXY_UPSTREAM_FAILED]
    );
    d.probes = vec![probe(
        200,
        "Connection established",
        "http://127.0.0.1:3128",
    )];
    assert!(judge(&d, &e, &c, &[], &["192.0.2.2".into()]).is_empty());
}

#[test]
fn drift_findings_name_the_restart() {
    let e = env(&[("HTTPS_PROXY", "http://old:1"), ("NO_PROXY", "*")]);
    let c = configured(&[
        ("HTTPS_PROXY", "http://new:1", 3),
        ("NO_PROXY", "*", 4),
        ("HTTP_PROXY", "http://new:1", 2),
    ]);
    let f = judge(&daemon(&e, &c), &e, &c, &[], &[]);
    assert_eq!(codes_of(&f), [codes::DRIFT_CHANGED, codes::DRIFT_NOT_LIVE]);
    assert!(f
        .iter()
        .all(|f| f.message.contains("systemctl restart containerd.service")));
    let stale = Configured {
        managed: true,
        ..Default::default()
    };
    let f = judge(&daemon(&e, &stale), &e, &stale, &[], &[]);
    assert_eq!(
        codes_of(&f),
        [codes::DRIFT_NOT_CONFIGURED, codes::DRIFT_NOT_CONFIGURED]
    );
    let unmanaged = Configured::default();
    let f = judge(&daemon(&e, &unmanaged), &e, &unmanaged, &[], &[]);
    assert_eq!(codes_of(&f), [codes::UNKNOWN_ORIGIN, codes::UNKNOWN_ORIGIN]);
    assert!(f[0].message.contains("not from any configuration found"));
}

#[test]
fn loopback_proxy_in_its_own_network_namespace() {
    let e = env(&[("HTTPS_PROXY", "http://localhost:3128"), ("NO_PROXY", "*")]);
    let c = Configured::default();
    let mut d = daemon(&e, &c);
    d.own_network_namespace = true;
    let f = judge(&d, &e, &c, &[], &[]);
    assert!(codes_of(&f).contains(&codes::LOOPBACK_PROXY_OTHER_NETNS));
    assert!(
        f.iter()
            .any(|f| f.message.contains("measured from its network namespace")),
        "{f:?}"
    );
}

/// The text says where the proxy was dialled from: the daemon's own
/// network namespace, or the tracer's, and then why.
#[test]
fn unreachable_says_where_it_was_measured() {
    let e = env(&[("HTTPS_PROXY", "http://127.0.0.1:3128"), ("NO_PROXY", "*")]);
    let c = Configured::default();
    let mut d = daemon(&e, &c);
    d.proxies = vec![super::super::ProxyCheck {
        url: "http://127.0.0.1:3128".into(),
        endpoint: "127.0.0.1:3128".into(),
        variables: vec!["HTTPS_PROXY".into()],
        tcp: super::super::Reach {
            result: ReachResult::Refused,
            address: Some("127.0.0.1:3128".into()),
            detail: Some("connection refused".into()),
        },
    }];
    let f = judge(&d, &e, &c, &[], &[]);
    let unreachable = f
        .iter()
        .find(|f| f.code == codes::PROXY_UNREACHABLE)
        .expect("proxy-unreachable");
    assert!(
        unreachable
            .message
            .contains("(connection refused, measured from its network namespace)"),
        "{}",
        unreachable.message
    );
    d.measured_from = crate::doctor::Vantage::Tracer;
    d.measured_from_error = Some("cannot enter the net namespace of pid 42: EPERM".into());
    let f = judge(&d, &e, &c, &[], &[]);
    let unreachable = f
        .iter()
        .find(|f| f.code == codes::PROXY_UNREACHABLE)
        .expect("proxy-unreachable");
    assert!(
        unreachable
            .message
            .contains("measured from the tracer's network namespace, not its own: cannot enter"),
        "{}",
        unreachable.message
    );
}

#[test]
fn unparsable_values_and_secrets() {
    let e = env(&[
        ("HTTPS_PROXY", "http://u:s3cret@p:notaport"),
        ("NO_PROXY", "*"),
    ]);
    let c = Configured::default();
    let f = judge(&daemon(&e, &c), &e, &c, &[], &[]);
    assert!(codes_of(&f).contains(&codes::UNPARSABLE_PROXY));
    assert!(!format!("{f:?}").contains("s3cret"));
}

#[test]
fn unreadable_environment_is_one_finding() {
    let e = env(&[]);
    let c = Configured::default();
    let mut d = daemon(&e, &c);
    d.environ_error = Some("permission denied reading /proc/<pid>/environ".into());
    let f = judge(&d, &e, &c, &[], &[]);
    assert_eq!(codes_of(&f), [codes::ENVIRON_UNREADABLE]);
    assert!(f[0].message.contains("CAP_SYS_PTRACE"));
}

#[test]
fn containerd_and_kubelet_disagree() {
    let c = Configured::default();
    let a = daemon(&env(&[("HTTPS_PROXY", "http://p:1")]), &c);
    let mut b = daemon(&env(&[]), &c);
    b.name = "kubelet".into();
    let f = node_findings(&[a.clone(), b]);
    assert_eq!(codes_of(&f), [codes::RUNTIME_KUBELET_INCONSISTENT]);
    let mut same = a.clone();
    same.name = "kubelet".into();
    assert!(node_findings(&[a, same]).is_empty());
}

/// The schema lists exactly the codes this module emits: a new code goes
/// in both places.
#[test]
fn schema_lists_every_code() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schema/doctor.schema.json");
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut in_schema: Vec<&str> = schema["$defs"]["finding"]["properties"]["code"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    in_schema.sort_unstable();
    let source = include_str!("findings.rs");
    let mut in_code: Vec<&str> = source
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub const "))
        .filter_map(|l| l.split('"').nth(1))
        .collect();
    in_code.sort_unstable();
    assert_eq!(in_schema, in_code);
}

fn tls_probe(
    verdict: crate::doctor::tls::TlsVerdict,
    problem: Option<crate::doctor::trust::Problem>,
) -> crate::doctor::tls::TlsProbe {
    crate::doctor::tls::TlsProbe::sample("198.51.100.2", verdict, problem)
}

#[test]
fn tls_interception_names_the_issuer_the_trust_and_the_dropin() {
    use crate::doctor::{tls::TlsVerdict, trust::Problem};
    let e = env(&[
        ("HTTPS_PROXY", "http://127.0.0.1:3128"),
        ("NO_PROXY", NO_PROXY_OK),
    ]);
    let c = configured(&[
        ("HTTPS_PROXY", "http://127.0.0.1:3128", 3),
        ("NO_PROXY", NO_PROXY_OK, 4),
    ]);
    let mut d = daemon(&e, &c);
    let probe = |tls| ProbeResult {
        target: "198.51.100.2:443".into(),
        route: RouteKind::Proxy,
        reason: String::new(),
        variable: Some("HTTPS_PROXY".into()),
        proxy: Some("http://127.0.0.1:3128".into()),
        tunnel: Some(Tunnel::Status {
            code: 200,
            reason: "Connection established".into(),
        }),
        direct: None,
        tls: Some(tls),
    };
    d.probes = vec![probe(tls_probe(
        TlsVerdict::Intercepted,
        Some(Problem::UnknownAuthority),
    ))];
    let f = judge(&d, &e, &c, &[], &["192.0.2.2".into()]);
    assert_eq!(codes_of(&f), [codes::PROXY_INTERCEPTS_TLS]);
    assert_eq!(f[0].severity, Severity::Error);
    assert_eq!(f[0].line, Some(3));
    for needle in [
        "issued by 'mitmproxy'",
        "not the registry's own (issued by 'registry.test')",
        "trusts only /etc/containerd/certs/registry-ca.crt",
        "put 198.51.100.2 in NO_PROXY",
    ] {
        assert!(f[0].message.contains(needle), "{needle}: {}", f[0].message);
    }

    d.probes = vec![probe(tls_probe(TlsVerdict::InterceptedTrusted, None))];
    let f = judge(&d, &e, &c, &[], &["192.0.2.2".into()]);
    assert_eq!(codes_of(&f), [codes::PROXY_INTERCEPTS_TLS_TRUSTED]);
    assert_eq!(f[0].severity, Severity::Info);

    d.probes = vec![probe(tls_probe(TlsVerdict::NotIntercepted, None))];
    assert!(judge(&d, &e, &c, &[], &["192.0.2.2".into()]).is_empty());

    // The registry's own certificate, the same through the proxy.
    d.probes = vec![probe(tls_probe(
        TlsVerdict::CertificateProblem,
        Some(Problem::Expired),
    ))];
    let f = judge(&d, &e, &c, &[], &["192.0.2.2".into()]);
    assert_eq!(codes_of(&f), [codes::TLS_CERTIFICATE_EXPIRED]);
    assert!(
        f[0].message.contains("expired on 2020-01-02T00:00:00Z"),
        "{}",
        f[0].message
    );
    // Not compared: the message says what was not measured.
    d.probes = vec![probe(tls_probe(
        TlsVerdict::NotCompared,
        Some(Problem::UnknownAuthority),
    ))];
    let f = judge(&d, &e, &c, &[], &["192.0.2.2".into()]);
    assert_eq!(codes_of(&f), [codes::TLS_CERTIFICATE_UNKNOWN_AUTHORITY]);
    assert!(
        f[0].message.contains("could not be reached directly"),
        "{}",
        f[0].message
    );
}

#[test]
fn exit_status_fails_on_errors_and_on_warnings_only_when_strict() {
    use crate::doctor::{exit_status, Summary};
    let s = |errors, warnings, infos| Summary {
        healthy: errors + warnings == 0,
        errors,
        warnings,
        infos,
    };
    assert_eq!(exit_status(&s(0, 0, 3), false), 0);
    assert_eq!(exit_status(&s(0, 2, 0), false), 0);
    assert_eq!(exit_status(&s(0, 2, 0), true), 1);
    assert_eq!(exit_status(&s(1, 0, 0), false), 1);
}
