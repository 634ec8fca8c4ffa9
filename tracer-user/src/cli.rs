//! Command line.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::{probe::Mode, sink::Format};

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
    /// it works. No eBPF. Exit 0 healthy, 1 problems found, 2 usage error.
    Doctor(DoctorArgs),
    /// Compare two `tracer doctor --format json` reports (bad node against
    /// good node). Exit 1 when a difference that matters is found.
    Diff(DiffArgs),
    /// Pull an image the way kubelet would (CRI, by the runtime daemon),
    /// trace the daemon's attempts meanwhile, and explain the outcome.
    /// Exit 0 pulled, 1 failed.
    Preflight(PreflightArgs),
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
    /// A proxy that no environment names (a transparent setup, a proxy
    /// chosen by a config file): attempts to HOST:PORT count as proxy dials
    /// and their request and status lines are reported (repeatable; a
    /// host name is resolved once, at start).
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_probe)]
    pub proxy: Vec<String>,
}
