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
}
