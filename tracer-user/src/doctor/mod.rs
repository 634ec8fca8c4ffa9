//! `tracer doctor`: which proxy each runtime daemon on this node really
//! uses, which file set it (down to the line), whether the running process
//! still matches its configuration, and whether the proxy works.
//!
//! No eBPF: everything comes from /proc, the unit files under the host root,
//! and a few bounded TCP connects and HTTP CONNECTs. The parts:
//! `discover` finds the daemons, `sources` says where each variable is
//! configured, `reach` probes proxies, `findings` judges, `text` renders.
//! The report types here are the stable contract: `tracer diff` reads them
//! back, `schema/doctor.schema.json` documents them, and `tracer preflight`
//! calls [`run`] and [`examine`].

pub mod discover;
pub mod findings;
pub mod netns;
pub mod reach;
pub mod sources;
pub mod text;
pub mod tls;
pub mod trust;

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::{
    enrich::{
        proc::{read_proc, EnvState},
        proxy_env::{ProxyEnv, ProxyVar},
    },
    redact::redact,
    verdict::proxy::{parse_proxy_url, route, select_proxy, RequestScheme, Route, Rules},
};
pub use findings::{Finding, Severity};
pub use netns::Vantage;
pub use reach::{connect_through, Reach, ReachResult, Tunnel};

/// Version of the report's JSON layout; bumped on incompatible changes.
pub const SCHEMA_VERSION: u32 = 1;

/// The proxy variables, in the order reports list them: Go's reading order
/// within each kind (upper case first).
pub const PROXY_VARS: [ProxyVar; 8] = [
    ProxyVar::HttpsUpper,
    ProxyVar::HttpsLower,
    ProxyVar::HttpUpper,
    ProxyVar::HttpLower,
    ProxyVar::NoUpper,
    ProxyVar::NoLower,
    ProxyVar::AllUpper,
    ProxyVar::AllLower,
];

/// What to examine and how.
#[derive(Debug, Clone)]
pub struct DoctorOptions {
    /// Where the host's `/` is (unit files, /etc/default, kubelet config).
    pub host_root: PathBuf,
    /// Where the host's /proc is.
    pub proc_root: PathBuf,
    /// Process names examined besides the known runtimes (exact comm).
    pub extra_comms: Vec<String>,
    /// `host:port` targets to reach through each daemon's proxy (HTTP CONNECT).
    pub probes: Vec<String>,
    /// Ranges NO_PROXY must cover (cluster pod and service ranges).
    pub no_proxy_expect: Vec<IpNet>,
    /// Bound on each connect, name lookup and proxy reply.
    pub timeout: Duration,
}

impl Default for DoctorOptions {
    fn default() -> Self {
        Self {
            host_root: PathBuf::from("/"),
            proc_root: PathBuf::from("/proc"),
            extra_comms: Vec::new(),
            probes: Vec::new(),
            no_proxy_expect: Vec::new(),
            timeout: Duration::from_secs(3),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DoctorError {
    #[error("cannot list processes in {}: {source}", path.display())]
    ProcRoot {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("process {pid} not found in {}: it exited, or --proc-root is wrong", proc_root.display())]
    NoSuchProcess { pid: u32, proc_root: PathBuf },
    #[error("invalid probe {probe:?}: expected HOST:PORT (e.g. registry.example:443)")]
    BadProbe { probe: String },
}

impl DoctorError {
    /// A mistake in what was asked, rather than a failure to answer.
    pub fn is_usage(&self) -> bool {
        matches!(self, DoctorError::BadProbe { .. })
    }
}

/// One run of `tracer doctor`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub schema_version: u32,
    pub node: Node,
    pub privileges: Privileges,
    /// The `--probe` targets.
    pub probes: Vec<String>,
    /// Ranges NO_PROXY was checked against (flags plus kubelet config).
    pub no_proxy_expect: Vec<String>,
    pub daemons: Vec<DaemonReport>,
    /// Findings about the node as a whole (e.g. containerd and kubelet
    /// disagree); each daemon carries its own.
    pub findings: Vec<Finding>,
    pub summary: Summary,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub hostname: String,
    pub kernel: String,
    /// RFC 3339 UTC.
    pub time: String,
    /// The node's own global addresses (loopback and link-local left out).
    pub addresses: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Privileges {
    /// Running as root, or with CAP_SYS_PTRACE (other processes' environ).
    pub can_read_environ: bool,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub detail: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub healthy: bool,
    pub errors: usize,
    pub warnings: usize,
    pub infos: usize,
}

/// How a daemon was identified (never by its comm alone: see
/// [`discover`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentifiedBy {
    /// Its executable is a known install path of the runtime, the same file
    /// as that path under the host root (root's, writable by no one else),
    /// and it runs in a service of the host's system manager.
    Executable,
    /// `--comm`: its comm, and it runs in a service of the host's system
    /// manager.
    Comm,
    /// `--pid` (or `tracer preflight`, by the runtime socket's owner): the
    /// operator named the process; nothing more was verified.
    Pid,
}

impl IdentifiedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            IdentifiedBy::Executable => "executable",
            IdentifiedBy::Comm => "comm",
            IdentifiedBy::Pid => "pid",
        }
    }
}

/// What identified a daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identification {
    pub by: IdentifiedBy,
    /// With `executable`: the path of the host's file it runs.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub executable: Option<String>,
    /// With `executable` and `comm`: the host system manager's service it
    /// runs in.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub unit: Option<String>,
}

impl Identification {
    fn by_pid() -> Self {
        Identification {
            by: IdentifiedBy::Pid,
            executable: None,
            unit: None,
        }
    }

    /// One phrase for the text report.
    pub fn describe(&self) -> String {
        let unit = self.unit.as_deref().unwrap_or("?");
        match self.by {
            IdentifiedBy::Executable => format!(
                "executable {} (the host's file) in the host's system service {unit}",
                self.executable.as_deref().unwrap_or("?")
            ),
            IdentifiedBy::Comm => format!("--comm, in the host's system service {unit}"),
            IdentifiedBy::Pid => "--pid (named by the operator, not verified)".to_string(),
        }
    }
}

/// One daemon, as it runs and as it is configured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DaemonReport {
    /// The runtime it was identified as (`containerd`, `kubelet`, ...), or
    /// its comm.
    pub name: String,
    pub comm: String,
    pub pid: u32,
    /// How it was identified. Absent only in reports of older versions.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub identified_by: Option<Identification>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub exe: Option<String>,
    /// Its systemd unit, from its cgroup.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub unit: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cgroup: Option<String>,
    /// The comm of its parent when that matters (k3s's embedded containerd).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub parent: Option<String>,
    /// RFC 3339 UTC, when known.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub started: Option<String>,
    /// Runs in a network namespace other than the node's.
    pub own_network_namespace: bool,
    /// Where its proxies and probe targets were dialled from: its own
    /// network namespace, or the tracer's when that could not be entered.
    #[serde(default)]
    pub measured_from: Vantage,
    /// Why its network namespace could not be entered.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub measured_from_error: Option<String>,
    /// Why /proc/<pid>/environ could not be read; absent when it was.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub environ_error: Option<String>,
    /// The unit files, drop-ins and other files the configuration came from.
    pub config_files: Vec<String>,
    pub config_warnings: Vec<String>,
    /// Every proxy variable that is live or configured.
    pub variables: Vec<Variable>,
    /// The proxy Go's net/http picks per request scheme.
    pub selection: Vec<Selection>,
    /// Every proxy named by a live variable, and whether it answers.
    pub proxies: Vec<ProxyCheck>,
    /// Each `--probe` target: direct or through the proxy, and the result.
    pub probes: Vec<ProbeResult>,
    pub findings: Vec<Finding>,
}

/// Where a configured value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// `Environment=` in a unit file or drop-in.
    Environment,
    /// A file named by `EnvironmentFile=`.
    EnvironmentFile,
    /// `DefaultEnvironment=` in system.conf.
    DefaultEnvironment,
    /// `/etc/default/<name>` (or /etc/sysconfig) read as k3s and rke2 do.
    EtcDefault,
    /// k3s/rke2 `CONTAINERD_<NAME>`, passed to the embedded containerd
    /// with the prefix removed.
    ContainerdPrefix,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Source {
    pub origin: Origin,
    pub file: String,
    pub line: u32,
    /// For EnvironmentFile=: the unit file and line naming the file.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub unit_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub unit_line: Option<u32>,
    /// The file was modified after the daemon started.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub modified_after_start: Option<bool>,
}

impl Source {
    /// `file:line`.
    pub fn location(&self) -> String {
        format!("{}:{}", self.file, self.line)
    }
}

/// How the live value and the configuration disagree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Drift {
    /// Both exist and differ: the configuration changed since the start.
    Changed,
    /// Configured but not in the process: it needs a restart.
    NotLive,
    /// Live, but no configuration sets it any more (e.g. a deleted drop-in).
    NotConfigured,
}

/// One proxy variable of one daemon. Values are redacted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Variable {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub live: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub configured: Option<String>,
    /// Where the configured value is set; absent: "not from any
    /// configuration found" (inherited from a shell, or set by hand).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub source: Option<Source>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub drift: Option<Drift>,
    /// The live value does not parse as a proxy URL (Go then goes direct).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
}

/// Go's choice for one request scheme.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Selection {
    /// `https` or `http`.
    pub scheme: String,
    /// The variable Go reads, absent when none is set.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub variable: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub url: Option<String>,
    /// Other variables of this kind that are set but lose.
    pub ignored: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProxyCheck {
    /// Redacted URL.
    pub url: String,
    /// `host:port` dialled.
    pub endpoint: String,
    /// The live variables that name it.
    pub variables: Vec<String>,
    pub tcp: Reach,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteKind {
    Proxy,
    Direct,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeResult {
    /// `host:port` as given.
    pub target: String,
    pub route: RouteKind,
    /// Why it goes direct, or the variable that sends it through the proxy.
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub variable: Option<String>,
    /// Redacted proxy URL when routed through one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub proxy: Option<String>,
    /// The CONNECT through the proxy.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub tunnel: Option<Tunnel>,
    /// The TCP connect when the daemon would go direct.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub direct: Option<Reach>,
    /// The tracer's TLS handshake along the same path, judged against the
    /// daemon's trust; absent when the tunnel or connect did not open.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub tls: Option<tls::TlsProbe>,
}

/// Examine every runtime daemon on the node.
pub fn run(opts: &DoctorOptions) -> Result<Report, DoctorError> {
    check_probes(opts)?;
    let found = discover::find_daemons(&opts.proc_root, &opts.host_root, &opts.extra_comms)?;
    report_for(
        found
            .into_iter()
            .map(|(pid, name, how)| (pid, Some((name, how))))
            .collect(),
        opts,
    )
}

/// Examine the given processes (`tracer doctor --pid`), as one report.
pub fn run_pids(pids: &[u32], opts: &DoctorOptions) -> Result<Report, DoctorError> {
    check_probes(opts)?;
    for &pid in pids {
        if discover::comm_of(&opts.proc_root, pid).is_none() {
            return Err(DoctorError::NoSuchProcess {
                pid,
                proc_root: opts.proc_root.clone(),
            });
        }
    }
    report_for(pids.iter().map(|&pid| (pid, None)).collect(), opts)
}

fn report_for(
    targets: Vec<(u32, Option<(String, Identification)>)>,
    opts: &DoctorOptions,
) -> Result<Report, DoctorError> {
    let mut opts = opts.clone();
    let privileges = privileges();
    // A pid named by the operator is still reported under its runtime's
    // name when it is identified as one.
    let targets: Vec<_> = targets
        .into_iter()
        .map(|(pid, known)| {
            let known = known.or_else(|| discover::identify(&opts.proc_root, &opts.host_root, pid));
            (pid, known)
        })
        .collect();
    // The kubelet's own configuration names the cluster's ranges: only an
    // identified kubelet's (a process merely named kubelet chooses what
    // its --config names).
    for (pid, known) in &targets {
        if known
            .as_ref()
            .is_some_and(|(name, how)| name == "kubelet" && how.by == IdentifiedBy::Executable)
        {
            for net in sources::kubelet_ranges(&opts.host_root, &opts.proc_root, *pid) {
                if !opts.no_proxy_expect.contains(&net) {
                    opts.no_proxy_expect.push(net);
                }
            }
        }
    }
    let node = node_info(&opts.proc_root);
    let mut daemons = Vec::new();
    for (pid, known) in targets {
        match examine_as(pid, known, &opts, &node) {
            Ok(d) => daemons.push(d),
            // Exited between the scan and now: nothing to report.
            Err(DoctorError::NoSuchProcess { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    let mut report_findings = findings::node_findings(&daemons);
    if !privileges.can_read_environ {
        report_findings.push(findings::no_privileges(&privileges));
    }
    let summary = summarize(&daemons, &report_findings);
    Ok(Report {
        schema_version: SCHEMA_VERSION,
        node,
        privileges,
        probes: opts.probes.clone(),
        no_proxy_expect: opts
            .no_proxy_expect
            .iter()
            .map(ToString::to_string)
            .collect(),
        daemons,
        findings: report_findings,
        summary,
    })
}

/// `tracer doctor`: print the report; the exit status (0 no error found,
/// 1 an error finding, or a warning with `--strict`, or no answer;
/// 2 usage error). Warnings and notes alone never fail a working node.
pub fn command(args: &crate::cli::DoctorArgs) -> u8 {
    let opts = DoctorOptions {
        host_root: args.host_root.clone(),
        proc_root: args.proc_root.clone(),
        extra_comms: args.comm.clone(),
        probes: args.probe.clone(),
        no_proxy_expect: args.no_proxy_expect.clone(),
        timeout: args.timeout,
    };
    let result = if args.pid.is_empty() {
        run(&opts)
    } else {
        run_pids(&args.pid, &opts)
    };
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tracer doctor: error: {e}");
            return if e.is_usage() { 2 } else { 1 };
        }
    };
    match args.format {
        crate::cli::ReportFormat::Text => {
            print!("{}", crate::redact::printable_lines(&text::render(&report)))
        }
        crate::cli::ReportFormat::Json => match serde_json::to_string_pretty(&report) {
            Ok(json) => println!("{json}"),
            Err(e) => {
                eprintln!("tracer doctor: error: cannot write the report: {e}");
                return 1;
            }
        },
    }
    exit_status(&report.summary, args.strict)
}

/// 1 when an error was found, or with `strict` a warning; else 0.
pub fn exit_status(summary: &Summary, strict: bool) -> u8 {
    u8::from(summary.errors > 0 || (strict && summary.warnings > 0))
}

/// Examine one process by pid, whatever its name.
pub fn examine(pid: u32, opts: &DoctorOptions) -> Result<DaemonReport, DoctorError> {
    check_probes(opts)?;
    let node = node_info(&opts.proc_root);
    let known = discover::identify(&opts.proc_root, &opts.host_root, pid);
    examine_as(pid, known, opts, &node)
}

fn check_probes(opts: &DoctorOptions) -> Result<(), DoctorError> {
    for probe in &opts.probes {
        if reach::split_host_port(probe).is_none() {
            return Err(DoctorError::BadProbe {
                probe: probe.clone(),
            });
        }
    }
    Ok(())
}

fn examine_as(
    pid: u32,
    known: Option<(String, Identification)>,
    opts: &DoctorOptions,
    node: &Node,
) -> Result<DaemonReport, DoctorError> {
    let dir = opts.proc_root.join(pid.to_string());
    let comm = std::fs::read_to_string(dir.join("comm"))
        .map(|c| c.trim_end().to_string())
        .map_err(|_| DoctorError::NoSuchProcess {
            pid,
            proc_root: opts.proc_root.clone(),
        })?;
    let info = read_proc(&opts.proc_root, pid, None);
    // k3s's embedded containerd: its parent is an identified k3s or rke2
    // (reported by the parent's comm, `k3s-server`, ...).
    let parent = info
        .ppid
        .filter(|&ppid| {
            discover::identify(&opts.proc_root, &opts.host_root, ppid)
                .is_some_and(|(name, _)| name == "k3s" || name == "rke2")
        })
        .and_then(|ppid| discover::comm_of(&opts.proc_root, ppid));
    let (name, identified_by) = match known {
        Some((name, how)) => (name, how),
        None => (comm.clone(), Identification::by_pid()),
    };
    let unit = info.cgroup.as_ref().and_then(|c| c.unit.clone());
    let started = info.start_time.and_then(sources::start_time);
    let (env, environ_error) = match &info.env {
        Some(EnvState::Read(env)) => (Some(env.clone()), None),
        Some(EnvState::Unavailable(why)) => (None, Some(why.clone())),
        None => (None, Some("not read".to_string())),
    };
    let configured = sources::configured_for(
        &opts.host_root,
        &opts.proc_root,
        pid,
        info.cgroup.as_ref(),
        &name,
        parent.as_deref(),
        started,
    );
    let variables = env
        .as_ref()
        .map(|env| sources::variables(env, &configured))
        .unwrap_or_default();
    let selection = env.as_ref().map(selection_of).unwrap_or_default();
    let own_netns = discover::own_network_namespace(&opts.proc_root, pid);
    // What it trusts for each probe target, read through the host root.
    let trust_of = |host: &str, port: u16| {
        trust::for_daemon(&opts.host_root, &opts.proc_root, pid, &name, host, port)
    };
    // Dialled from where the daemon dials: its network namespace.
    let dial = || {
        env.as_ref()
            .map(|env| {
                (
                    check_proxies(env, opts.timeout),
                    run_probes(env, &opts.probes, opts.timeout, &trust_of),
                )
            })
            .unwrap_or_default()
    };
    let ((proxies, probes), measured_from, measured_from_error) =
        match netns::within(&opts.proc_root, pid, &[netns::NET], dial) {
            Ok(dialled) => (dialled, Vantage::Daemon, None),
            Err(why) => (dial(), Vantage::Tracer, Some(why)),
        };
    let mut daemon = DaemonReport {
        name,
        comm,
        pid,
        identified_by: Some(identified_by),
        exe: info.exe.clone(),
        unit,
        cgroup: info.cgroup.as_ref().map(|c| c.path.clone()),
        parent,
        started: started.map(|t| humantime::format_rfc3339_seconds(t).to_string()),
        own_network_namespace: own_netns,
        measured_from,
        measured_from_error,
        environ_error,
        config_files: configured.files.clone(),
        config_warnings: configured.warnings.iter().map(|w| redact(w)).collect(),
        variables,
        selection,
        proxies,
        probes,
        findings: Vec::new(),
    };
    let ctx = findings::Context {
        env: env.as_ref(),
        configured: &configured,
        node_addresses: &node.addresses,
        expect: &opts.no_proxy_expect,
        host_root: &opts.host_root,
    };
    daemon.findings = findings::daemon_findings(&daemon, &ctx);
    Ok(daemon)
}

/// Go's pick for https and http requests, with the losers named.
fn selection_of(env: &ProxyEnv) -> Vec<Selection> {
    [
        (
            RequestScheme::Https,
            [ProxyVar::HttpsUpper, ProxyVar::HttpsLower],
        ),
        (
            RequestScheme::Http,
            [ProxyVar::HttpUpper, ProxyVar::HttpLower],
        ),
    ]
    .into_iter()
    .map(|(scheme, vars)| {
        let picked = select_proxy(env, scheme, Rules::Go);
        let variable = picked.as_ref().map(|p| match p {
            Ok(c) => c.variable,
            Err(e) => e.variable,
        });
        let url = picked
            .as_ref()
            .and_then(|p| p.as_ref().ok())
            .map(|c| c.url.redacted());
        let ignored = vars
            .iter()
            .filter(|v| Some(v.name()) != variable && env.non_empty(**v).is_some())
            .map(|v| v.name().to_string())
            .collect();
        Selection {
            scheme: scheme.as_str().to_string(),
            variable: variable.map(str::to_string),
            url,
            ignored,
        }
    })
    .collect()
}

/// Every distinct proxy a live variable names, with one TCP connect each.
fn check_proxies(env: &ProxyEnv, timeout: Duration) -> Vec<ProxyCheck> {
    let mut out: Vec<ProxyCheck> = Vec::new();
    for var in [
        ProxyVar::HttpsUpper,
        ProxyVar::HttpsLower,
        ProxyVar::HttpUpper,
        ProxyVar::HttpLower,
        ProxyVar::AllUpper,
        ProxyVar::AllLower,
    ] {
        let Some(value) = env.non_empty(var) else {
            continue;
        };
        let Ok(url) = parse_proxy_url(value, Rules::Go) else {
            continue;
        };
        let endpoint = url.host_port();
        if let Some(existing) = out.iter_mut().find(|p| p.endpoint == endpoint) {
            existing.variables.push(var.name().to_string());
            continue;
        }
        let tcp = reach::shown(reach::tcp_connect(&url.host, url.port, timeout), &url);
        out.push(ProxyCheck {
            url: url.redacted(),
            endpoint,
            variables: vec![var.name().to_string()],
            tcp,
        });
    }
    out
}

/// Each probe target, routed as the daemon's Go client would route an
/// https request to it, then a TLS handshake along that path.
fn run_probes(
    env: &ProxyEnv,
    probes: &[String],
    timeout: Duration,
    trust_of: &dyn Fn(&str, u16) -> trust::Trust,
) -> Vec<ProbeResult> {
    let mut out = Vec::new();
    for target in probes {
        let Some((host, port)) = reach::split_host_port(target) else {
            continue;
        };
        let result = match route(env, RequestScheme::Https, &host, port, Rules::Go) {
            Route::Proxy(choice) | Route::CgiRefused(choice) => {
                let raw = env.get(choice.variable).unwrap_or_default();
                let tunnel = connect_through(raw, target, timeout);
                let opened = matches!(
                    tunnel,
                    Tunnel::Status {
                        code: 200..=299,
                        ..
                    }
                );
                ProbeResult {
                    target: target.clone(),
                    route: RouteKind::Proxy,
                    reason: format!("{} applies and NO_PROXY does not match", choice.variable),
                    variable: Some(choice.variable.to_string()),
                    proxy: Some(choice.url.redacted()),
                    tunnel: Some(tunnel),
                    direct: None,
                    tls: opened
                        .then(|| {
                            tls::probe(Some(raw), &host, port, &trust_of(&host, port), timeout)
                        })
                        .flatten(),
                }
            }
            other => {
                let reason = match other {
                    Route::Direct(crate::verdict::proxy::DirectReason::NoProxyConfigured) => {
                        "no HTTPS proxy is set".to_string()
                    }
                    Route::Direct(crate::verdict::proxy::DirectReason::Loopback) => {
                        "Go never proxies localhost or loopback".to_string()
                    }
                    Route::Direct(crate::verdict::proxy::DirectReason::NoProxyMatch {
                        variable,
                    }) => format!("{variable} matches"),
                    Route::InvalidProxy(e) => {
                        format!(
                            "{} does not parse, so Go ignores it: {}",
                            e.variable,
                            redact(&e.source.to_string())
                        )
                    }
                    Route::Proxy(_) | Route::CgiRefused(_) => String::new(),
                };
                let direct = reach::tcp_connect(&host, port, timeout);
                let tls = (direct.result == ReachResult::Connected)
                    .then(|| tls::probe(None, &host, port, &trust_of(&host, port), timeout))
                    .flatten();
                ProbeResult {
                    target: target.clone(),
                    route: RouteKind::Direct,
                    reason,
                    variable: None,
                    proxy: None,
                    tunnel: None,
                    direct: Some(direct),
                    tls,
                }
            }
        };
        out.push(result);
    }
    out
}

fn summarize(daemons: &[DaemonReport], node: &[Finding]) -> Summary {
    let all = daemons.iter().flat_map(|d| d.findings.iter()).chain(node);
    let (mut errors, mut warnings, mut infos) = (0, 0, 0);
    for f in all {
        match f.severity {
            Severity::Error => errors += 1,
            Severity::Warning => warnings += 1,
            Severity::Info => infos += 1,
        }
    }
    Summary {
        healthy: errors == 0 && warnings == 0,
        errors,
        warnings,
        infos,
    }
}

/// capability(7) number of CAP_SYS_PTRACE (not exported by the libc crate).
const CAP_SYS_PTRACE: u32 = 19;

/// Root, or CAP_SYS_PTRACE, reads any process's environ.
fn privileges() -> Privileges {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return Privileges {
            can_read_environ: true,
            detail: None,
        };
    }
    let has_ptrace = procfs::process::Process::myself()
        .and_then(|p| p.status())
        .ok()
        .map(|s| s.capeff)
        .is_some_and(|cap| cap & (1u64 << CAP_SYS_PTRACE) != 0);
    Privileges {
        can_read_environ: has_ptrace,
        detail: (!has_ptrace).then(|| {
            "not root and no CAP_SYS_PTRACE: other users' /proc/<pid>/environ cannot be read"
                .to_string()
        }),
    }
}

/// The node's host name and addresses, read in the node's UTS and network
/// namespaces (a pod has its own of both); the tracer's own when those
/// cannot be entered, with a warning.
fn node_info(proc_root: &Path) -> Node {
    let read = |p: &str| {
        std::fs::read_to_string(proc_root.join(p))
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    // /proc/sys/kernel/hostname answers for the reader's UTS namespace,
    // getifaddrs(3) for the caller's network namespace: the thread's.
    let facts = || {
        (
            read("sys/kernel/hostname"),
            discover::node_addresses()
                .into_iter()
                .map(|a: IpAddr| a.to_string())
                .collect::<Vec<_>>(),
        )
    };
    let node = netns::node_pid(proc_root);
    let (hostname, addresses) = netns::within(proc_root, node, &[netns::NET, netns::UTS], facts)
        .unwrap_or_else(|why| {
            log::warn!("the node's host name and addresses are this process's own: {why}");
            facts()
        });
    Node {
        hostname,
        kernel: read("sys/kernel/osrelease"),
        time: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        addresses,
    }
}
