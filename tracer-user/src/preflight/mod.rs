//! `tracer preflight --image REF`: pull an image the way kubelet would, and
//! explain the outcome.
//!
//! 1. Find the daemon that serves the runtime's CRI socket from the
//!    socket's peer credentials, not from its name.
//! 2. Attach the tracer's probes for that pid only (watch.rs), ask the
//!    daemon over CRI to pull (`ImageService/PullImage`, cri.rs), and keep
//!    draining while it works.
//! 3. Join three things into one verdict (explain.rs): the runtime's error
//!    text, the attempts it made (destination, outcome, via which proxy),
//!    and the configuration that sent them there, with file:line. When the
//!    proxy was reached but the pull failed, ask the proxy ourselves to
//!    tunnel to the registry and report its status line: containerd's own
//!    error is then just "Unable to connect" or "Proxy Authentication
//!    Required", with no word of a proxy.
//!
//! Exit 0 when the pull succeeded, 1 when it did not, so node bootstrap
//! scripts and CI can gate on it.

pub mod explain;
pub mod watch;

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use serde::Serialize;
use thiserror::Error;

use crate::{
    cli::{PreflightArgs, ReportFormat},
    cri::{self, CriError},
    doctor,
    enrich::{load_unit_of, proc::read_proc},
    redact::redact,
    trace::TraceError,
    verdict::proxy::{route, RequestScheme, Route, Rules},
};
use explain::{AttemptSummary, ProxyAnswer, RouteSummary};
use watch::Watch;

/// How long outcomes may still arrive after the pull answered (a refused
/// proxy is known at once; this covers the ring's batching).
const SETTLE: Duration = Duration::from_millis(300);
/// Timeout of the CONNECT probe through the daemon's proxy.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Error)]
pub enum PreflightError {
    #[error("nothing answers on the runtime socket {socket}: {source} (is the runtime running? give its socket with --runtime-endpoint)")]
    NoRuntime {
        socket: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Trace(#[from] TraceError),
    #[error(transparent)]
    Cri(#[from] CriError),
    #[error("cannot write the report: {0}")]
    Json(#[from] serde_json::Error),
}

/// The daemon that did the pull.
#[derive(Debug, Clone, Serialize)]
pub struct Runtime {
    pub endpoint: String,
    pub pid: u32,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

/// The whole answer (`--format json` prints it; schema/preflight.schema.json).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub schema_version: u32,
    pub image: String,
    /// host:port the image is pulled from.
    pub registry: String,
    pub runtime: Runtime,
    /// "pulled" or "failed".
    pub outcome: &'static str,
    pub duration_ms: u64,
    /// The runtime's error, verbatim but for credentials.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime_error: Option<String>,
    /// Where the daemon's environment sends a request for the registry.
    pub route: RouteSummary,
    /// The daemon's connect attempts during the pull, as traced.
    pub attempts: Vec<AttemptSummary>,
    /// What the proxy answered when asked to tunnel to the registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_answer: Option<ProxyAnswer>,
    /// The tracer's own TLS handshake with the registry along the daemon's
    /// path, judged against the daemon's trust: whenever the pull went
    /// through a proxy, and when a direct pull failed on a certificate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<doctor::tls::TlsProbe>,
    /// One paragraph to act on.
    pub verdict: String,
    /// The doctor's view of the daemon (variables, sources, findings).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub doctor: Option<doctor::DaemonReport>,
    /// `--remove`: whether the pulled image was removed again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub removed: Option<bool>,
}

impl Report {
    pub fn healthy(&self) -> bool {
        self.outcome == "pulled"
    }
}

/// How often the progress line is redrawn.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// One line on stderr, redrawn in place while the pull runs: what is being
/// waited on and the attempts seen so far. Only for a person at a
/// terminal: never with --format json, never into a file or a pipe.
struct Progress {
    prefix: Option<String>,
    drawn: bool,
}

impl Progress {
    fn new(format: ReportFormat, image: &str, daemon: &str, pid: u32) -> Self {
        let on =
            format == ReportFormat::Text && std::io::IsTerminal::is_terminal(&std::io::stderr());
        Self {
            prefix: on.then(|| format!("pulling {} by {daemon} (pid {pid})", redact(image))),
            drawn: false,
        }
    }

    fn show(&mut self, waiting: &str, started: Instant, (attempts, failed): (usize, usize)) {
        let Some(prefix) = &self.prefix else { return };
        let line = format!(
            "{prefix}: {waiting}, {:.0} s, {attempts} connect attempts seen ({failed} failed)",
            started.elapsed().as_secs_f64()
        );
        // \r and erase-line: the same line, redrawn.
        eprint!("\r\x1b[2K{line}");
        self.drawn = true;
    }

    fn clear(&mut self) {
        if self.drawn {
            eprint!("\r\x1b[2K");
            self.drawn = false;
        }
    }
}

/// `unix:///run/x.sock` or a plain path.
fn socket_path(endpoint: &str) -> PathBuf {
    PathBuf::from(endpoint.strip_prefix("unix://").unwrap_or(endpoint))
}

/// Run the preflight and return its report.
pub async fn run(args: &PreflightArgs) -> Result<Report, PreflightError> {
    let socket = socket_path(&args.runtime_endpoint);
    let pid = cri::socket_owner(&socket).map_err(|source| PreflightError::NoRuntime {
        socket: socket.display().to_string(),
        source,
    })?;
    let proc = read_proc(Path::new("/proc"), pid, None);
    let name = procfs::process::Process::new(pid as i32)
        .and_then(|p| p.stat())
        .map(|s| s.comm)
        .unwrap_or_else(|_| format!("pid {pid}"));
    let unit = proc.cgroup.as_ref().and_then(|c| c.unit.clone());
    let env = proc.proxy_env().cloned().unwrap_or_default();
    let (host, port) = cri::registry_of(&args.image);
    let registry = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    // The unit's files come from its own manager (a user's or a
    // container's systemd is not the host's).
    let unit_env = proc
        .cgroup
        .as_ref()
        .filter(|c| c.unit.as_deref().is_some_and(|u| u.ends_with(".service")))
        .and_then(|c| load_unit_of(&args.host_root, Path::new("/proc"), pid, c))
        .and_then(Result::ok);
    let source_of = |variable: &str| {
        unit_env
            .as_ref()
            .and_then(|u| u.get(variable))
            .map(|s| format!("{}:{}", s.file.display(), s.line))
    };
    let path = route(&env, RequestScheme::Https, &host, port, Rules::Go);
    let route_summary = RouteSummary::of(&path, |v| env.get(v).map(str::to_string), source_of);

    // Watch first, then pull: every attempt of the pull is seen.
    let mut watch = Watch::start(pid, &args.host_root)?;
    let client = cri::Client::connect(&socket).await?;
    let started = Instant::now();
    let mut progress = Progress::new(args.format, &args.image, &name, pid);
    let result = {
        let pull = client.pull(&args.image, args.timeout);
        tokio::pin!(pull);
        let mut tick = tokio::time::interval(PROGRESS_EVERY);
        loop {
            tokio::select! {
                r = &mut pull => break r,
                r = watch.pump() => r?,
                _ = tick.tick() => progress.show("waiting for the pull", started, watch.seen()),
            }
        }
    };
    let elapsed = started.elapsed();
    let settle = tokio::time::sleep(SETTLE);
    tokio::pin!(settle);
    progress.show("collecting the last outcomes", started, watch.seen());
    loop {
        tokio::select! {
            _ = &mut settle => break,
            r = watch.pump() => r?,
        }
    }
    progress.clear();
    let events = watch.finish()?;
    let attempts = AttemptSummary::from_events(&events);
    let runtime_error = match &result {
        Ok(_) => None,
        Err(CriError::Status { message, .. }) => Some(redact(message)),
        Err(e) => Some(redact(&e.to_string())),
    };

    // The proxy was (or would be) used and the pull failed: ask it
    // ourselves to tunnel to the registry.
    let proxy_answer = match (&runtime_error, &path) {
        (Some(_), Route::Proxy(choice))
            if !attempts
                .iter()
                .any(|a| a.via_proxy && a.result != "connected") =>
        {
            let value = env.get(choice.variable).unwrap_or_default().to_string();
            ask_proxy(&value, &registry).await
        }
        _ => None,
    };
    let doctor = doctor::examine(pid, &doctor_options(&args.host_root)).ok();
    let proxy_value = match &path {
        Route::Proxy(choice) => Some(env.get(choice.variable).unwrap_or_default().to_string()),
        _ => None,
    };
    let proxy_down = attempts
        .iter()
        .any(|a| a.via_proxy && a.result != "connected");
    let certificate_error = runtime_error
        .as_deref()
        .is_some_and(|e| e.contains("x509:") || e.contains("tls:"));
    let tls = if (proxy_value.is_some() && !proxy_down) || certificate_error {
        let daemon = doctor
            .as_ref()
            .map_or_else(|| name.clone(), |d| d.name.clone());
        inspect_tls(pid, daemon, &args.host_root, proxy_value, &host, port).await
    } else {
        None
    };

    let seconds = elapsed.as_secs_f64();
    let mut verdict = explain::verdict(
        &name,
        &registry,
        runtime_error.as_deref(),
        seconds,
        &route_summary,
        &attempts,
        proxy_answer.as_ref(),
    );
    if let Some(tls) = &tls {
        verdict = explain::with_tls(
            verdict,
            &name,
            &registry,
            runtime_error.as_deref(),
            &route_summary,
            &attempts,
            tls,
        );
    }
    let removed = if args.remove && result.is_ok() {
        Some(client.remove(&args.image).await.is_ok())
    } else {
        None
    };
    Ok(Report {
        schema_version: 1,
        image: args.image.clone(),
        registry,
        runtime: Runtime {
            endpoint: socket.display().to_string(),
            pid,
            name,
            unit,
        },
        outcome: if result.is_ok() { "pulled" } else { "failed" },
        duration_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
        runtime_error,
        route: route_summary,
        attempts,
        proxy_answer,
        tls,
        verdict,
        doctor,
        removed,
    })
}

/// The proxy's status line for `CONNECT registry`, through the doctor's
/// probe (on a blocking thread: it is plain socket I/O with timeouts).
async fn ask_proxy(value: &str, registry: &str) -> Option<ProxyAnswer> {
    let value = value.to_string();
    let target = registry.to_string();
    let answer = tokio::task::spawn_blocking(move || {
        doctor::reach::connect_through(&value, &target, PROBE_TIMEOUT)
    })
    .await
    .ok()?;
    match answer {
        doctor::reach::Tunnel::Status { code, reason } => Some(ProxyAnswer {
            request: format!("CONNECT {registry}"),
            status_code: code,
            reason,
        }),
        _ => None,
    }
}

/// The tracer's own TLS handshake with the registry along the daemon's
/// path (its proxy's tunnel, or direct), from the daemon's network
/// namespace (the tracer's when that cannot be entered), judged against
/// what the daemon trusts for the registry.
async fn inspect_tls(
    pid: u32,
    daemon: String,
    host_root: &Path,
    proxy: Option<String>,
    host: &str,
    port: u16,
) -> Option<doctor::tls::TlsProbe> {
    let host_root = host_root.to_path_buf();
    let host = host.to_string();
    tokio::task::spawn_blocking(move || {
        let proc_root = Path::new("/proc");
        let trust = doctor::trust::for_daemon(&host_root, proc_root, pid, &daemon, &host, port);
        let probe = || doctor::tls::probe(proxy.as_deref(), &host, port, &trust, PROBE_TIMEOUT);
        doctor::netns::within(proc_root, pid, &[doctor::netns::NET], probe)
            .unwrap_or_else(|_| probe())
    })
    .await
    .ok()
    .flatten()
}

fn doctor_options(host_root: &Path) -> doctor::DoctorOptions {
    doctor::DoctorOptions {
        host_root: host_root.to_path_buf(),
        ..doctor::DoctorOptions::default()
    }
}

/// The report for a person.
pub fn render_text(report: &Report) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let unit = report
        .runtime
        .unit
        .as_deref()
        .map(|u| format!(", {u}"))
        .unwrap_or_default();
    let took = if report.duration_ms < 1000 {
        format!("{} ms", report.duration_ms)
    } else {
        format!("{:.1} s", report.duration_ms as f64 / 1000.0)
    };
    let _ = writeln!(
        out,
        "preflight: {} {} by {} (pid {}{unit}) in {took}",
        if report.healthy() { "PULLED" } else { "FAILED" },
        report.image,
        report.runtime.name,
        report.runtime.pid,
    );
    if let Some(error) = &report.runtime_error {
        let _ = writeln!(out, "runtime said: {error}");
    }
    let _ = writeln!(out, "attempts ({}):", report.attempts.len());
    for a in &report.attempts {
        let via = match (&a.variable, &a.source) {
            (Some(var), Some(src)) => format!("  via {var} (set in {src})"),
            (Some(var), None) => format!("  via {var}"),
            _ => "  direct".to_string(),
        };
        let _ = writeln!(out, "  {:<24} {:<10}{via}", a.destination, a.result);
    }
    if let Some(a) = &report.proxy_answer {
        let _ = writeln!(
            out,
            "proxy answered: {} -> {} {}",
            a.request, a.status_code, a.reason
        );
    }
    if let Some(tls) = &report.tls {
        let _ = writeln!(out, "tls: {}", doctor::text::tls_line(tls));
    }
    let _ = writeln!(out, "verdict: {}", report.verdict);
    out
}

/// Print the report; true when the pull succeeded.
pub fn print(report: &Report, format: ReportFormat) -> Result<bool, PreflightError> {
    match format {
        ReportFormat::Text => print!("{}", crate::redact::printable_lines(&render_text(report))),
        ReportFormat::Json => println!("{}", serde_json::to_string_pretty(report)?),
    }
    Ok(report.healthy())
}
