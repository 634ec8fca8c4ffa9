//! Command line.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::{probe::Mode, sink::Format};

pub mod manual;

#[derive(Debug, Parser)]
#[command(
    name = "tracer",
    version,
    about = "Trace every connect() on this node, with its outcome, the process behind it, and the proxy that redirected it"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Stream one record per connect attempt, written once its outcome is known.
    Trace(TraceArgs),
    /// Which proxy each runtime daemon really uses, who set it, and whether
    /// it works. No eBPF. Exit 0 unless an error is found (--strict: or a
    /// warning), 1 otherwise, 2 usage error.
    Doctor(DoctorArgs),
    /// Compare two `tracer doctor --format json` reports (bad node against
    /// good node). Exit 1 when a difference that matters is found.
    Diff(DiffArgs),
    /// Pull an image the way kubelet would (CRI, by the runtime daemon),
    /// trace the daemon's attempts meanwhile, and explain the outcome.
    /// Exit 0 pulled, 1 failed.
    Preflight(PreflightArgs),
    /// A full-screen live view: one row per unit or pod (or process,
    /// destination, proxy), failing rows first, with rates, the last
    /// error and the proxy verdict. `?` lists the keys.
    Top(TopArgs),
    /// Print a shell completion script on stdout, e.g.
    /// `tracer completions bash > /etc/bash_completion.d/tracer`.
    Completions(CompletionsArgs),
    /// Write the manual's generated parts (man pages, the option and
    /// metric references) into a folder; run by `cargo xtask docs`.
    #[command(hide = true)]
    Manual(ManualArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ManualArgs {
    /// Folder to write into: man/*.1, options.md, metrics.md (created).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

#[derive(Debug, Clone, clap::Args)]
pub struct TopArgs {
    /// Look at a recorded NDJSON file of `tracer trace` (`-`: stdin)
    /// instead of tracing live; paced by its timestamps.
    #[arg(long, value_name = "FILE")]
    pub from: Option<PathBuf>,
    /// Replay speed for --from (1: as recorded; + and - change it).
    #[arg(long, default_value = "1", value_parser = parse_speed)]
    pub speed: f64,
    /// Rows at start (Tab switches).
    #[arg(long, value_enum, default_value = "unit")]
    pub group: crate::top::model::Grouping,
    /// Only processes with this comm (repeatable), as with `trace`.
    #[arg(long, value_name = "NAME")]
    pub comm: Vec<String>,
    /// Only this process id (repeatable).
    #[arg(long, value_name = "PID")]
    pub pid: Vec<u32>,
    /// socket or syscall, as with `trace`.
    #[arg(long, value_enum, default_value = "socket")]
    pub mode: Mode,
    /// Root of the host's filesystem, for unit files.
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub host_root: PathBuf,
    /// Watch DNS too: the destination's domain in a column (see `trace --dns`).
    #[arg(long)]
    pub dns: bool,
    /// A proxy no environment names (repeatable), as with `trace --proxy`.
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_probe)]
    pub proxy: Vec<String>,
}

fn parse_speed(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (1.0 / 16.0..=1024.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a speed between 0.0625 and 1024")),
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct PreflightArgs {
    /// The image to pull, e.g. quay.io/calico/cni:v3.31.3.
    #[arg(long, value_name = "REF")]
    pub image: String,
    /// The runtime's CRI socket (a path or unix:// URL).
    #[arg(
        long,
        value_name = "ENDPOINT",
        default_value = "/run/containerd/containerd.sock"
    )]
    pub runtime_endpoint: String,
    /// Text for a person, or one JSON document (schema/preflight.schema.json).
    #[arg(long, value_enum, default_value = "text")]
    pub format: ReportFormat,
    /// Remove the image again after a successful pull.
    #[arg(long)]
    pub remove: bool,
    /// How long the pull may take.
    #[arg(long, value_name = "DURATION", default_value = "120s", value_parser = humantime::parse_duration)]
    pub timeout: std::time::Duration,
    /// Root of the host's filesystem, for unit files.
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub host_root: PathBuf,
}

/// Output of `doctor` and `diff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, clap::Args)]
pub struct DoctorArgs {
    /// Text for a person, or one JSON document (schema/doctor.schema.json).
    #[arg(long, value_enum, default_value = "text")]
    pub format: ReportFormat,
    /// Also examine processes with this comm (repeatable).
    #[arg(long, value_name = "NAME")]
    pub comm: Vec<String>,
    /// Examine only this process, whatever its name (repeatable).
    #[arg(long, value_name = "PID")]
    pub pid: Vec<u32>,
    /// Open an HTTP CONNECT to HOST:PORT through each daemon's proxy, e.g. a
    /// registry (repeatable).
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_probe)]
    pub probe: Vec<String>,
    /// A cluster range NO_PROXY must cover (repeatable); the kubelet's
    /// podCIDR and clusterDNS are added when its config file is found.
    #[arg(long, value_name = "CIDR", value_parser = parse_cidr)]
    pub no_proxy_expect: Vec<ipnet::IpNet>,
    /// Bound on each connect, name lookup and proxy reply.
    #[arg(long, value_name = "DURATION", default_value = "3s", value_parser = humantime::parse_duration)]
    pub timeout: std::time::Duration,
    /// Root of the host's filesystem, for unit files and /etc/default.
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub host_root: PathBuf,
    /// The host's /proc (for a container whose own /proc is not the host's).
    #[arg(long, value_name = "DIR", default_value = "/proc")]
    pub proc_root: PathBuf,
    /// Exit 1 on warnings too (by default only an error finding fails).
    #[arg(long)]
    pub strict: bool,
}

#[derive(Debug, Clone, clap::Args)]
pub struct DiffArgs {
    /// Report of the node that fails.
    pub a: PathBuf,
    /// Report of a node that works.
    pub b: PathBuf,
    #[arg(long, value_enum, default_value = "text")]
    pub format: ReportFormat,
}

fn parse_probe(s: &str) -> Result<String, String> {
    crate::doctor::reach::split_host_port(s)
        .map(|_| s.to_string())
        .ok_or_else(|| format!("{s:?} is not HOST:PORT"))
}

fn parse_cidr(s: &str) -> Result<ipnet::IpNet, String> {
    crate::doctor::sources::parse_net(s)
        .ok_or_else(|| format!("{s:?} is not a CIDR or an IP address"))
}

#[derive(Debug, Clone, clap::Args)]
pub struct TraceArgs {
    /// Write to FILE (appending) instead of stdout.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Output format: ECS JSON lines, or one readable line per attempt.
    #[arg(long, value_enum, default_value = "json")]
    pub format: Format,
    /// Only processes with this comm (repeatable; cut to 15 bytes like the kernel).
    #[arg(long, value_name = "NAME")]
    pub comm: Vec<String>,
    /// Only this process id (repeatable).
    #[arg(long, value_name = "PID")]
    pub pid: Vec<u32>,
    /// Only processes in pods of this Kubernetes namespace (repeatable).
    #[arg(long, value_name = "NS")]
    pub namespace: Vec<String>,
    /// Only processes in pods of this name (repeatable; with --namespace,
    /// both must match).
    #[arg(long, value_name = "NAME")]
    pub pod: Vec<String>,
    /// A container runtime's state folder inside --host-root, where the
    /// OCI bundles that name each container's pod are (repeatable;
    /// default: /run/containerd, /run/k3s/containerd and CRI-O's
    /// /run/containers/storage).
    #[arg(long, value_name = "DIR")]
    pub runtime_state: Vec<PathBuf>,
    /// A runtime's CRI socket inside --host-root, asked (ContainerStatus)
    /// for the pod of a container without a readable bundle (repeatable;
    /// default: containerd's, k3s's and CRI-O's sockets, those present).
    #[arg(long, value_name = "SOCKET")]
    pub runtime_endpoint: Vec<String>,
    /// Only attempts that did not connect (filtered in the kernel).
    #[arg(long)]
    pub failed_only: bool,
    /// Only attempts that dial a proxy, or come from a process that has one.
    #[arg(long)]
    pub proxy_only: bool,
    /// socket: TCP via socket events only, no cost to other syscalls.
    /// syscall: also UDP, AF_UNIX and errors raised before the SYN, at the
    /// cost of a slower syscall path for every process.
    #[arg(long, value_enum, default_value = "socket")]
    pub mode: Mode,
    /// Root of the host's filesystem, for unit files and /etc/hosts (when
    /// running in a container with the host's / mounted there).
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub host_root: PathBuf,
    /// Print the eBPF programs' own diagnostics on stderr (at most 10 lines
    /// per CPU per second): unexpected TCP state transitions, failed map
    /// inserts, BTF offsets that look wrong. Off, they cost nothing.
    #[arg(long)]
    pub debug_ebpf: bool,
    /// Serve Prometheus metrics on ADDR (`/metrics`; `/healthz` is the
    /// readiness probe, `/livez` the liveness probe). A bare PORT or :PORT
    /// binds to 127.0.0.1. The only listening socket the tracer opens.
    #[arg(long, value_name = "ADDR", value_parser = parse_metrics_addr)]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// With --metrics-addr: `/livez` answers 503 once the run loop has not
    /// turned for this long (a drain stuck writing to a reader that stopped
    /// reading, or in a hung read). At least 2s: an idle loop turns every
    /// second.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_liveness_timeout)]
    pub liveness_timeout: std::time::Duration,
    /// all: an event per attempt. notable: only failed attempts and proxy
    /// dials; the rest are counted in the metrics only.
    #[arg(long, value_enum, default_value = "all")]
    pub events: Events,
    /// At most N connect events per process per second (N/s); the excess is
    /// dropped, counted, and reported in one "rate-limited" line per
    /// process and second.
    #[arg(long, value_name = "N/s", value_parser = parse_rate)]
    pub rate_limit: Option<u32>,
    /// With --metrics-addr: repeat `tracer doctor` this often and publish
    /// it as tracer_doctor_* metrics (0s: never).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = humantime::parse_duration)]
    pub doctor_interval: std::time::Duration,
    /// With --metrics-addr: the periodic doctor also examines processes
    /// with this comm (repeatable), like `tracer doctor --comm`.
    #[arg(long, value_name = "NAME")]
    pub doctor_comm: Vec<String>,
    /// Also watch DNS (UDP and TCP port 53): connect events get
    /// destination.domain from the answers processes received, and failed
    /// lookups (NXDOMAIN, SERVFAIL, no answer within 5 s) become
    /// `dns-query` events. Opt-in: it puts a program on every packet of
    /// the node (see Overhead and scale in the book, docs/src/overhead.md).
    #[arg(long)]
    pub dns: bool,
    /// A proxy that no environment names (a transparent setup, a proxy
    /// chosen by a config file): attempts to HOST:PORT count as proxy dials
    /// and their request and status lines are reported (repeatable; a
    /// host name is resolved once, at start).
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_probe)]
    pub proxy: Vec<String>,
    /// redacted: `process.args` with the values of secret-bearing arguments
    /// (passwords, tokens, secret headers, URL credentials) replaced by
    /// REDACTED. none: no `process.args` at all.
    #[arg(long = "args", value_enum, default_value = "redacted")]
    pub process_args: ProcessArgs,
}

/// What events say of a process's command line (`--args`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProcessArgs {
    /// Arguments with secrets redacted.
    Redacted,
    /// No arguments.
    None,
}

/// Which attempts become events (`--events`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Events {
    /// Every attempt.
    All,
    /// Failed attempts and proxy dials.
    Notable,
}

/// A duration of at least 2 s (`--liveness-timeout`).
pub fn parse_liveness_timeout(s: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e}"))?;
    if d < std::time::Duration::from_secs(2) {
        return Err(format!(
            "{s:?} is too short: the run loop turns once a second when idle, so less than 2s \
             would report a healthy tracer as stuck"
        ));
    }
    Ok(d)
}

/// `N/s` (or a bare `N`): events per process per second, N >= 1.
pub fn parse_rate(s: &str) -> Result<u32, String> {
    let n = s.strip_suffix("/s").unwrap_or(s);
    match n.trim().parse::<u32>() {
        Ok(0) => Err("the rate limit must be at least 1/s".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!(
            "{s:?} is not a rate: expected N/s, e.g. 100/s (events per process per second)"
        )),
    }
}

/// `HOST:PORT`, or `PORT` / `:PORT` on loopback.
pub fn parse_metrics_addr(s: &str) -> Result<std::net::SocketAddr, String> {
    let port = s.strip_prefix(':').unwrap_or(s);
    if let Ok(port) = port.parse::<u16>() {
        return Ok(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    }
    s.parse().map_err(|_| {
        format!(
            "{s:?} is not an address to listen on: expected IP:PORT (e.g. 127.0.0.1:9464) or PORT"
        )
    })
}
