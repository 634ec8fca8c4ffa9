//! Complete lines pinned byte for byte: log pipelines parse them, and
//! schema/event.schema.json documents them. A change here is a change of
//! the output format.

use std::sync::Arc;

use super::fixtures::{attempt, pod_proc_info, proc_info};
use crate::exchange::{tls, Direction, Line, ProxyExchange};
use crate::{
    decode::{comm_of, Attempt, Peer, Transport, Verdict},
    enrich::{
        cgroup::parse_proc_cgroup,
        dns::{DomainHint, DomainSource, Lookup},
        proc::EnvState,
        proc::ProcInfo,
        proxy_env::ProxyEnv,
    },
    probe::Mode,
    sink::{dns, ndjson::AttemptWriter, text, words::Facts},
    verdict::{
        endpoints_of, judge,
        resolve::{LookupResult, Resolver, Root},
        ProxyVerdict,
    },
};

const WALL: i128 = 1_764_250_000_000_000_000;

/// The JSON line and the text line (plain and coloured) of one attempt.
fn lines(a: &Attempt, proc: ProcInfo, verdict: Option<&ProxyVerdict>, mode: Mode) -> [String; 3] {
    lines_full(a, proc, verdict, None, mode, None)
}

/// `lines`, for an attempt whose address was in a DNS answer (`--dns`).
fn named_lines(
    a: &Attempt,
    proc: ProcInfo,
    verdict: Option<&ProxyVerdict>,
    mode: Mode,
    domain: Option<DomainHint<'_>>,
) -> [String; 3] {
    lines_full(a, proc, verdict, None, mode, domain)
}

/// `lines`, for an attempt to a proxy with its exchange.
fn lines_with(
    a: &Attempt,
    proc: ProcInfo,
    verdict: Option<&ProxyVerdict>,
    exchange: Option<&ProxyExchange>,
    mode: Mode,
) -> [String; 3] {
    lines_full(a, proc, verdict, exchange, mode, None)
}

fn lines_full(
    a: &Attempt,
    proc: ProcInfo,
    verdict: Option<&ProxyVerdict>,
    exchange: Option<&ProxyExchange>,
    mode: Mode,
    domain: Option<DomainHint<'_>>,
) -> [String; 3] {
    let proc = Arc::new(proc);
    let facts = Facts {
        attempt: a,
        proc: &proc,
        verdict,
        exchange,
        mode,
        wall_offset_ns: WALL,
        domain,
    };
    let mut out = Vec::new();
    AttemptWriter::new().write(&mut out, &facts, &proc);
    let json = String::from_utf8(out).expect("utf8");
    [
        json,
        text::render(&facts, false),
        text::render(&facts, true),
    ]
}

fn proxy_verdict(a: &Attempt, proc: &ProcInfo) -> Option<ProxyVerdict> {
    verdict_with(
        a,
        proc,
        Resolver::new(std::path::Path::new("/nonexistent-root")),
    )
}

/// The pipeline's verdict on `a`, names resolved by `resolver`.
fn verdict_with(a: &Attempt, proc: &ProcInfo, mut resolver: Resolver) -> Option<ProxyVerdict> {
    proc.proxy_env().and_then(|env| {
        judge(
            a.destination.ip_port(),
            env,
            &endpoints_of(env),
            None,
            &mut resolver,
            Root::HOST,
        )
    })
}

/// (name, JSON line, text line, coloured text line) for each case.
fn cases() -> Vec<(&'static str, [String; 3])> {
    let base = attempt();
    let mut out = vec![(
        "refused_in_a_container",
        lines(&base, proc_info(), None, Mode::Socket),
    )];
    let mut connected = base.clone();
    connected.verdict = Verdict::Connected;
    connected.errno = None;
    connected.is_async = Some(false);
    out.push((
        "connected_syscall_mode",
        lines(&connected, proc_info(), None, Mode::Syscall),
    ));
    let mut unknown = base.clone();
    unknown.verdict = Verdict::Failed;
    unknown.errno = Some(9999);
    out.push((
        "unknown_errno",
        lines(&unknown, ProcInfo::default(), None, Mode::Syscall),
    ));
    let mut early = base.clone();
    early.verdict = Verdict::Failed;
    early.errno = None;
    early.is_async = None;
    out.push((
        "failed_before_syn",
        lines(&early, ProcInfo::default(), None, Mode::Socket),
    ));
    let mut v6 = base.clone();
    v6.verdict = Verdict::TimedOut;
    v6.errno = Some(libc::ETIMEDOUT);
    v6.destination = Peer::Ip {
        ip: "2001:db8::1".parse().expect("ip"),
        port: 443,
    };
    v6.source = Some(("::ffff:10.1.2.3".parse().expect("ip"), 1));
    out.push((
        "timed_out_ipv6",
        lines(&v6, ProcInfo::default(), None, Mode::Socket),
    ));
    let mut unix = base.clone();
    unix.verdict = Verdict::Pending;
    unix.errno = None;
    unix.transport = Some(Transport::Unix);
    unix.destination = Peer::Unix("/run/\"odd\"\\path\n.sock".into());
    unix.source = None;
    unix.is_async = None;
    unix.end_ns = 0;
    out.push((
        "pending_unix",
        lines(&unix, ProcInfo::default(), None, Mode::Socket),
    ));
    let mut udp = base.clone();
    udp.transport = Some(Transport::Udp);
    udp.verdict = Verdict::Aborted;
    udp.errno = None;
    udp.comm = comm_of(b"we\"ird\xff\\n");
    udp.start_ns = 999_999_999;
    out.push((
        "aborted_udp_in_a_unit",
        lines(
            &udp,
            ProcInfo {
                env: Some(EnvState::Unavailable("process exited".into())),
                cgroup: Some(parse_proc_cgroup("0::/system.slice/containerd.service\n")),
                ..ProcInfo::default()
            },
            None,
            Mode::Socket,
        ),
    ));
    // A user manager's service named like the host's containerd: the line
    // says whose it is.
    out.push((
        "refused_in_a_user_unit",
        lines(
            &base,
            ProcInfo {
                cgroup: Some(parse_proc_cgroup(
                    "0::/user.slice/user-1000.slice/user@1000.service/app.slice/containerd.service\n",
                )),
                ..ProcInfo::default()
            },
            None,
            Mode::Socket,
        ),
    ));
    let proc = proc_info();
    let verdict = proxy_verdict(&base, &proc);
    assert!(
        verdict.as_ref().is_some_and(|v| v.via == Some(true)),
        "{verdict:?}"
    );
    out.push((
        "refused_by_its_proxy",
        lines(&base, proc, verdict.as_ref(), Mode::Socket),
    ));
    let mut direct = connected.clone();
    direct.destination = Peer::Ip {
        ip: "192.168.7.200".parse().expect("ip"),
        port: 8080,
    };
    let proc = proc_info();
    let verdict = proxy_verdict(&direct, &proc);
    out.push((
        "connected_past_its_proxy",
        lines(&direct, proc, verdict.as_ref(), Mode::Syscall),
    ));
    // A proxy whose host name has no answer yet: via is null, and the
    // verdict says why.
    let env = ProxyEnv::from_environ(b"HTTPS_PROXY=http://proxy.corp.invalid:3128\0");
    let proc = ProcInfo {
        env: Some(EnvState::Read(env)),
        ..ProcInfo::default()
    };
    let mut to_a_name = base.clone();
    to_a_name.destination = Peer::Ip {
        ip: "10.0.0.9".parse().expect("ip"),
        port: 3128,
    };
    let verdict = unresolved_verdict(&to_a_name, &proc);
    assert!(
        verdict
            .as_ref()
            .is_some_and(|v| v.via.is_none() && v.unresolved.is_some()),
        "{verdict:?}"
    );
    out.push((
        "refused_while_its_proxy_is_unresolved",
        lines(&to_a_name, proc, verdict.as_ref(), Mode::Socket),
    ));
    // --dns: the address was in an answer the process received, and in one
    // another process received.
    for (case, source) in [
        ("connected_to_a_name_it_looked_up", DomainSource::Process),
        ("connected_to_a_name_the_node_looked_up", DomainSource::Node),
    ] {
        out.push((
            case,
            named_lines(
                &connected,
                proc_info(),
                None,
                Mode::Socket,
                Some(DomainHint {
                    name: "quay.io",
                    source,
                }),
            ),
        ));
    }
    // The proxy exchange: a connected dial to the proxy, and the proxy's
    // 500 to its CONNECT (issue #11).
    let mut reached = base.clone();
    reached.verdict = Verdict::Connected;
    reached.errno = None;
    let proc = proc_info();
    let verdict = proxy_verdict(&reached, &proc);
    let mut x = ProxyExchange::new(false, None);
    x.take(&line(
        Direction::Request,
        "CONNECT 203.0.113.2:443 HTTP/1.1",
    ));
    x.take(&line(Direction::Response, "HTTP/1.1 500 Unable to connect"));
    out.push((
        "its_proxy_answered_500",
        lines_with(&reached, proc, verdict.as_ref(), Some(&x), Mode::Socket),
    ));
    // A --proxy endpoint, no proxy variable, no answer within the bound.
    let mut x = ProxyExchange::new(true, None);
    x.take(&line(
        Direction::Request,
        "GET http://203.0.113.2:80/v2/ HTTP/1.1",
    ));
    x.expire();
    out.push((
        "a_listed_proxy_did_not_answer",
        lines_with(&reached, ProcInfo::default(), None, Some(&x), Mode::Socket),
    ));
    // A tunnel through the proxy carrying TLS 1.2 (issue #19): the SNI,
    // the offered and selected versions, the certificate's issuer.
    let proc = proc_info();
    let verdict = proxy_verdict(&reached, &proc);
    let mut x = ProxyExchange::new(false, None);
    x.take(&line(
        Direction::Request,
        "CONNECT 203.0.113.2:443 HTTP/1.1",
    ));
    x.take(&line(
        Direction::Response,
        "HTTP/1.1 200 Connection established",
    ));
    x.take(&Line {
        tls: Some(tls::Hello::Client(tls::ClientHello {
            server_name: Some("registry.test".into()),
            offered: vec![0x0304, 0x0303],
            malformed: false,
        })),
        ..line(Direction::Tls, "")
    });
    x.take(&Line {
        tls: Some(tls::Hello::Server(tls::ServerHello {
            version: Some(0x0303),
            issuer: Some("O=Example Corp, CN=Example Inspection CA".into()),
            malformed: false,
        })),
        ..line(Direction::Tls, "")
    });
    out.push((
        "tls_1_2_through_its_proxy",
        lines_with(&reached, proc, verdict.as_ref(), Some(&x), Mode::Socket),
    ));
    // A pod's container, named from its bundle: its proxy refused, and a
    // direct connect of a container whose image is referenced by digest.
    let proc = pod_proc_info("quay.io/calico/node:v3.31.3");
    let verdict = proxy_verdict(&base, &proc);
    out.push((
        "refused_by_its_proxy_in_a_pod",
        lines(&base, proc, verdict.as_ref(), Mode::Socket),
    ));
    let mut pod_direct = connected.clone();
    pod_direct.destination = Peer::Ip {
        ip: "10.96.0.1".parse().expect("ip"),
        port: 443,
    };
    let proc = ProcInfo {
        env: Some(EnvState::Read(ProxyEnv::from_environ(b""))),
        ..pod_proc_info("quay.io/calico/node@sha256:0123456789abcdef")
    };
    out.push((
        "connected_in_a_pod_with_an_image_by_digest",
        lines(&pod_direct, proc, None, Mode::Socket),
    ));
    out
}

fn line(direction: Direction, text: &str) -> Line {
    Line {
        pid: 1,
        start_ns: 1,
        direction,
        text: text.into(),
        truncated: false,
        tls: None,
    }
}

/// Failed lookups (`--dns`): (name, JSON line, text line).
fn dns_cases() -> Vec<(&'static str, String, String)> {
    let lookup = |rcode: Option<u8>| Lookup {
        start_ns: 1_000_000_123,
        end_ns: rcode.map(|_| 1_000_450_000),
        pid: 812,
        tid: 815,
        uid: 0,
        gid: 0,
        cgroup_id: 4242,
        comm: comm_of(b"containerd"),
        server: ("10.96.0.10".parse().expect("ip"), 53),
        transport: Transport::Udp,
        id: 4242,
        question: Some(("quay.io".into(), 1)),
        rcode,
        resolved: Vec::new(),
    };
    let unit = || ProcInfo {
        cgroup: Some(parse_proc_cgroup("0::/system.slice/containerd.service\n")),
        env: Some(EnvState::Read(ProxyEnv::from_environ(b""))),
        ..ProcInfo::default()
    };
    let mut cut = lookup(Some(2));
    cut.question = None;
    cut.transport = Transport::Tcp;
    cut.server = ("2001:db8::53".parse().expect("ip"), 53);
    cut.resolved = vec!["2001:db8::7".parse().expect("ip")];
    let cases = [
        ("nxdomain_in_a_unit", lookup(Some(3)), unit()),
        ("no_answer_in_a_container", lookup(None), proc_info()),
        (
            "servfail_without_a_question_over_tcp_ipv6",
            cut,
            ProcInfo::default(),
        ),
        (
            "nxdomain_in_a_pod",
            lookup(Some(3)),
            pod_proc_info("quay.io/calico/node:v3.31.3"),
        ),
    ];
    cases
        .into_iter()
        .map(|(name, l, p)| {
            let p = Arc::new(p);
            let mut out = Vec::new();
            dns::write(&mut out, &mut AttemptWriter::new(), &l, &p, WALL);
            (
                name,
                String::from_utf8(out).expect("utf8"),
                dns::render_text(&l, &p, WALL, false),
            )
        })
        .collect()
}

/// The verdict on the first attempt of a process whose proxy is a host
/// name: the lookup has only been queued (and never answers here).
fn unresolved_verdict(a: &Attempt, proc: &ProcInfo) -> Option<ProxyVerdict> {
    let resolver = Resolver::with_lookup(
        std::path::Path::new("/nonexistent-root"),
        Arc::new(|_: &str| LookupResult::Temporary),
    );
    verdict_with(a, proc, resolver)
}

/// Prints the lines of every case, to pin a new one:
/// `cargo test --release -p tracer-user --lib print_golden_lines -- --ignored --nocapture`
#[test]
#[ignore = "a generator, not a check"]
fn print_golden_lines() {
    for (name, [json, text, color]) in cases() {
        println!("{json}");
        println!(
            "{}",
            serde_json::to_string(&[name, text.as_str(), color.as_str()]).expect("json")
        );
    }
    for (name, json, text) in dns_cases() {
        println!("{json}");
        println!(
            "{}",
            serde_json::to_string(&[name, text.as_str()]).expect("json")
        );
    }
}

/// The dns-query lines, JSON then `[name, text line]`, per case of
/// `dns_cases`.
const DNS: &str = include_str!("golden_dns.ndjson");

#[test]
fn dns_query_lines_are_pinned() {
    let cases = dns_cases();
    let pinned: Vec<&str> = DNS.lines().collect();
    assert_eq!(pinned.len(), cases.len() * 2);
    for ((name, json, text), want) in cases.iter().zip(pinned.chunks(2)) {
        assert_eq!(json, want[0], "{name}");
        let [want_name, want_text]: [String; 2] =
            serde_json::from_str(want[1]).expect("[name, text]");
        assert_eq!(name, &want_name);
        assert_eq!(text, &want_text, "{name}");
    }
}

/// The JSON lines, one per case, in the order of `cases`.
const JSON: &str = include_str!("golden.ndjson");
/// `[name, text line, coloured text line]` per case.
const TEXT: &str = include_str!("golden_text.json");

#[test]
fn json_lines_are_pinned() {
    let cases = cases();
    let pinned: Vec<&str> = JSON.lines().collect();
    assert_eq!(pinned.len(), cases.len());
    for ((name, [json, _, _]), want) in cases.iter().zip(pinned) {
        assert_eq!(json, want, "{name}");
    }
}

#[test]
fn text_lines_are_pinned() {
    let cases = cases();
    let pinned: Vec<[String; 3]> = serde_json::from_str(TEXT).expect("golden_text.json");
    assert_eq!(pinned.len(), cases.len());
    for ((name, [_, text, color]), [want_name, want_text, want_color]) in cases.iter().zip(&pinned)
    {
        assert_eq!(name, want_name);
        assert_eq!(text, want_text, "{name}");
        assert_eq!(color, want_color, "{name} (coloured)");
    }
}

#[test]
fn the_cases_reach_every_optional_part_of_the_line() {
    for part in [
        r#""container":{"id":"0123456789abcdef"#,
        r#""pod_uid":"12345678-1234"#,
        r#""unit":"containerd.service""#,
        r#""unit_manager":"system""#,
        r#""unit_manager":"user","unit_manager_uid":1000"#,
        r#""error":{"code":"E9999""#,
        r#""error":{"message":"#,
        r#""address":"/run/\"odd\"\\path\n.sock""#,
        r#""ip":"2001:db8::1""#,
        r#""proxy_env":"unavailable: process exited""#,
        r#""async":true"#,
        r#""async":false"#,
        r#""end":"#,
        r#""proxy":{"#,
        r#""via":null,"unresolved":"#,
        r#""domain":"quay.io"},"#,
        r#""domain_from":"process""#,
        r#""domain_from":"node""#,
        r#""exchange":"answered","request":{"method":"CONNECT""#,
        r#""response":{"version":"HTTP/1.1","status_code":500"#,
        r#""proxy":{"listed":true,"exchange":"no_answer""#,
        r#""tls":{"version":"1.2","version_protocol":"tls","client":{"server_name":"registry.test","supported_versions":["1.3","1.2"]},"server":{"issuer":"O=Example Corp, CN=Example Inspection CA"}}"#,
        r#""name":"calico-node","image":{"name":"quay.io/calico/node","tag":"v3.31.3"}},"orchestrator":{"type":"kubernetes","namespace":"kube-system","resource":{"type":"pod","name":"calico-node-x7k2p"}}"#,
        r#""image":{"name":"quay.io/calico/node","hash":{"all":["sha256:0123456789abcdef"]}}"#,
        "(pid 812, kube-system/calico-node-x7k2p (container calico-node))",
    ] {
        assert!(JSON.lines().any(|l| l.contains(part)), "no line has {part}");
    }
    for line in JSON.lines() {
        serde_json::from_str::<serde_json::Value>(line).expect("valid JSON");
    }
}
